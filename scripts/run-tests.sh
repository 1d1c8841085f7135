#!/usr/bin/env bash
# Runs each Check suite binary given on the command line, lets Check print its own
# summary line, and closes with one line "N passed, N failed" over the suites. Exits
# non-zero when any suite fails. Suites run from the repository root with MIMIR_BUILD
# and MIMIR_SHARED exported by the Makefile.
set -u
passed=0; failed=0; failed_names=()
for t in "$@"; do
  name=$(basename "$t")
  echo "== $name"
  start=$(date +%s.%N)
  if CK_DEFAULT_TIMEOUT=${CK_DEFAULT_TIMEOUT:-120} "$t"; then
    passed=$((passed + 1))
  else
    failed=$((failed + 1)); failed_names+=("$name")
  fi
  printf '   (%s: %.1f s)\n' "$name" "$(echo "$(date +%s.%N) - $start" | bc 2>/dev/null || echo 0)"
done
echo
[ $failed -gt 0 ] && echo "failed suites: ${failed_names[*]}"
echo "suites: $passed passed, $failed failed"
[ $failed -eq 0 ]
