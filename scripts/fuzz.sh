#!/usr/bin/env bash
# Runs each libFuzzer harness for FUZZ_SECONDS over its seed corpus: the checked-in
# seeds in fuzz/corpus/<name>/ plus any seed directory the harness names in
# fuzz/corpus/<name>.extra (one path per line, relative to MIMIR_SHARED; used for the
# real vectors in ../shared, which are never copied). Fails on the first crash.
set -eu
dir=$1; shift
secs=${FUZZ_SECONDS:-20}
for src in "$@"; do
  n=$(basename "$src" .c)
  work=$(mktemp -d)
  seeds=("$work")
  [ -d "fuzz/corpus/$n" ] && seeds+=("fuzz/corpus/$n")
  if [ -f "fuzz/corpus/$n.extra" ]; then
    while read -r p; do
      [ -n "$p" ] || continue
      if [ -d "$MIMIR_SHARED/$p" ]; then
        seeds+=("$MIMIR_SHARED/$p")
      elif [ -f "$MIMIR_SHARED/$p" ]; then
        # libFuzzer takes directories only: a single file joins the work corpus
        cp "$MIMIR_SHARED/$p" "$work/$(echo "$p" | tr / _)"
      fi
    done < "fuzz/corpus/$n.extra"
  fi
  echo "fuzz: $n for ${secs}s over ${seeds[*]:1}"
  "$dir/$n" -max_total_time="$secs" -rss_limit_mb=2048 -print_final_stats=1 \
      -artifact_prefix="$dir/$n-" "${seeds[@]}" 2>"$dir/$n.log" || {
    echo "fuzz: $n FAILED; see $dir/$n.log"; tail -40 "$dir/$n.log"; exit 1; }
  grep -E 'stat::number_of_executed_units' "$dir/$n.log" | sed "s/^/fuzz: $n /"
  rm -rf "$work"
done
