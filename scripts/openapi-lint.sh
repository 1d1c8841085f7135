#!/usr/bin/env bash
# Lints the OpenAPI contract of the edge (openapi/mimir.yaml) with Redocly CLI's
# recommended-strict rules, then checks it against the OpenAPI 3.1 meta-schema with
# the validator the integration tests use (scripts/openapi-validate.mjs). The npm
# tools are installed at pinned versions into a folder under build/ (ignored by git),
# once: a later run with the same pins asks no registry.
#
#   scripts/openapi-lint.sh                 install if needed, lint, check
#   scripts/openapi-lint.sh --install-only  install if needed (what the tests call)
#
# MIMIR_TOOLS overrides the tools folder (default build/tools/openapi). Needs Node.js
# 20.19 or later with npm (Debian 12's own nodejs 18 is too old for Redocly CLI 2).
set -euo pipefail
cd "$(dirname "$0")/.."
tools=${MIMIR_TOOLS:-$PWD/build/tools/openapi}
pins=(@redocly/cli@2.77.0 @hyperjump/json-schema@1.18.0 yaml@2.9.1)

for t in node npm; do
  command -v "$t" >/dev/null || { echo "openapi-lint: $t is not installed (Node.js 20.19+ with npm)" >&2; exit 1; }
done
if ! node -e 'const [a,b]=process.versions.node.split(".").map(Number); process.exit(a>20||(a==20&&b>=19)?0:1)'; then
  echo "openapi-lint: Node.js $(node --version) is too old; @redocly/cli needs 20.19 or later" >&2
  exit 1
fi

if [ "$(cat "$tools/.pins" 2>/dev/null)" != "${pins[*]}" ]; then
  echo "openapi-lint: installing ${pins[*]} into $tools" >&2
  mkdir -p "$tools"
  [ -f "$tools/package.json" ] || echo '{"name": "mimir-openapi-tools", "private": true}' > "$tools/package.json"
  npm install --prefix "$tools" --no-audit --no-fund --save-exact --loglevel=error "${pins[@]}" >&2
  echo "${pins[*]}" > "$tools/.pins"
fi
[ "${1:-}" = "--install-only" ] && exit 0

export REDOCLY_TELEMETRY=off REDOCLY_SUPPRESS_UPDATE_NOTICE=true
"$tools/node_modules/.bin/redocly" lint --extends recommended-strict openapi/mimir.yaml
node scripts/openapi-validate.mjs --tools "$tools" openapi/mimir.yaml --document
