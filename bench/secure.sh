#!/usr/bin/env bash
# bench/secure.sh: secure generation across processes against in process. The whole
# deployment of scripts/deploy.sh (dealer, 3 parties with sealed shares, session
# service, gateway; every link mutual TLS on loopback) generates BENCH_TOKENS (default
# 32) greedy tokens of "Once upon a time, there was" through `mimir generate`; then
# mimir-sim generates the same tokens with 3 parties in one process (the in-process
# transport). Prints tokens per second after the first token for both, their ratio,
# and the transport's per-round latency from bench_mnet (3 parties, mTLS stream).
set -euo pipefail
B=${MIMIR_BUILD:-build}/bin
S=${MIMIR_SHARED:-../shared}
n=${BENCH_TOKENS:-32}
prompt="Once upon a time, there was"
command -v jq >/dev/null || { echo "bench/secure.sh: jq is not installed (scripts/deps.sh installs it)" >&2; exit 1; }
work=$(mktemp -d)
. "$(dirname "$0")/../scripts/deploy.sh"
trap 'deploy_down; rm -rf "$work"' EXIT
deploy_up 16 > "$work/deploy.out"

MIMIR_API_KEY=$key "$B/mimir" generate --gateway "$gurl" --session "$sid" --ca "$P/ca.crt" \
  --tokenizer "$S/models/tok512.bin" --tokens "$n" --ids "$prompt" > "$work/mtls.ids" 2> "$work/mtls.err"
# "mimir generate: prompt .. , N tokens in T s (R tok/s), first token after F s, ..."
read -r total first < <(sed -n 's/.* tokens in \([0-9.]*\) s .*first token after \([0-9.]*\) s.*/\1 \2/p' "$work/mtls.err")
deploy_down

"$B/mimir-sim" --model "$S/models/stories260K.bin" --tokenizer "$S/models/tok512.bin" --prompt "$prompt" \
  --tokens "$n" --ids --parties 3 > "$work/sim.ids" 2> "$work/sim.err"
# "mimir-sim: per later token: R rounds, K KB per party (max ..), M ms (N tokens)"
sim_ms=$(sed -n 's/.*per later token: .*, \([0-9.]*\) ms (.*/\1/p' "$work/sim.err")
cmp -s "$work/mtls.ids" "$work/sim.ids" || { echo "bench/secure.sh: the two runs chose different tokens" >&2; exit 1; }

mtls_rate=$(awk -v t="$total" -v f="$first" -v n="$n" 'BEGIN { printf "%.2f", (n - 1) / (t - f) }')
sim_rate=$(awk -v m="$sim_ms" 'BEGIN { printf "%.2f", 1000 / m }')
ratio=$(awk -v a="$mtls_rate" -v b="$sim_rate" 'BEGIN { printf "%.2f", a / b }')
echo "secure generation, stories260K, 3 parties, \"$prompt\", $n greedy tokens (the same ids in both runs):"
printf '  over mTLS (separate processes, loopback, through the gateway): %s tokens/s after the first token (first token %s s)\n' "$mtls_rate" "$first"
printf '  in process (mimir-sim):                                        %s tokens/s (%s ms per token)\n' "$sim_rate" "$sim_ms"
printf '  ratio mTLS / in process: %s (goal: at least 0.5)\n' "$ratio"
if [ -x "${MIMIR_BUILD:-build}/bench/bench_mnet" ]; then
  MIMIR_BUILD=${MIMIR_BUILD:-build} "${MIMIR_BUILD:-build}/bench/bench_mnet" 2>/dev/null | awk 'NR == 1 || /^bytes|^8 |^1024 /' | sed 's/^/  round latency: /'
fi
