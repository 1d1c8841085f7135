#!/usr/bin/env bash
# Source hygiene that the compiler cannot enforce: the banned functions of the house
# style (unbounded or error-swallowing C library calls) never appear in our code.
set -u
cd "$(dirname "$0")/.."
banned='\b(sprintf|vsprintf|strcpy|strcat|strtok|atoi|atol|atof|gets|strncpy)[[:space:]]*\('
# Comment lines (" * ...", "/* ...", "// ...") are prose: "gets (a reply)" is not a call.
hits=$(grep -rnE "$banned" --include='*.c' --include='*.h' common services cli tests bench fuzz 2>/dev/null |
  grep -vE '^[^:]+:[0-9]+:[[:space:]]*(\*|/\*|//)')
if [ -n "$hits" ]; then
  echo "lint: banned functions (use snprintf, memcpy with bounds, strtol/strtoul with checks):"
  echo "$hits"
  exit 1
fi
echo "lint: no banned functions"
