#!/usr/bin/env bash
# Installs the Debian packages Mimir builds, tests and demos with. Idempotent: when every
# package is already present it touches nothing and asks no registry, so every top-level
# make target can run it first at no cost. Needs root (or sudo) only when something is
# missing.
set -euo pipefail

pkgs=(
  make gcc clang pkg-config            # toolchain (clang for `make CC=clang` and libFuzzer)
  libclang-rt-14-dev                   # sanitizer and libFuzzer runtimes for clang
  libmicrohttpd-dev libgnutls28-dev    # HTTP server and its TLS engine
  libcurl4-openssl-dev                 # HTTP client
  libjansson-dev                       # JSON
  libssl-dev openssl                   # X.509, TLS client, DRBG
  libsodium-dev                        # sealing, hashing, wiping
  libsqlite3-dev                       # session registry
  check                                # unit-test framework
  prometheus                           # promtool, to validate /metrics
  curl ca-certificates jq              # integration tests and the demo
  iproute2 procps                      # network namespaces, process control in tests
  wrk                                  # HTTP load generator (gateway figures in make bench)
  bsdutils                             # script(1): terminal progress-bar tests
)

# Node.js with npm runs the OpenAPI linter and validator (npm packages, installed by
# scripts/openapi-lint.sh into build/tools). Machines of this project ship Node.js 20
# with npm; only when there is none at all fall back to Debian's (which may be too old
# for the linter: openapi-lint.sh then says so).
command -v npm >/dev/null 2>&1 || pkgs+=(nodejs npm)

missing=()
for p in "${pkgs[@]}"; do
  if ! dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q 'install ok installed'; then
    missing+=("$p")
  fi
done
[ ${#missing[@]} -eq 0 ] && exit 0

echo "deps: installing ${missing[*]}" >&2
sudo=""
if [ "$(id -u)" -ne 0 ]; then
  command -v sudo >/dev/null || { echo "deps: need root to install ${missing[*]}" >&2; exit 1; }
  sudo="sudo"
fi
export DEBIAN_FRONTEND=noninteractive
$sudo apt-get update -qq
$sudo apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
echo "deps: done" >&2
