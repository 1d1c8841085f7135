#!/usr/bin/env bash
# bench/gateway.sh: the gateway under load, measured with wrk (Debian's). A real
# session service and a real gateway on loopback with a development PKI; a session and
# an API key made through the admin API; then wrk reads the session through the
# client API (API key check with its cache, the upstream call to the session service
# over mutual TLS, the JSON reply) and prints requests per second and the latency
# percentiles. Run by `make bench`; BENCH_SECONDS (default 5) and BENCH_CONNECTIONS
# (default 32) tune it.
set -euo pipefail
B=${MIMIR_BUILD:-build}/bin
secs=${BENCH_SECONDS:-5}
conns=${BENCH_CONNECTIONS:-32}
command -v wrk >/dev/null || { echo "bench/gateway.sh: wrk is not installed (scripts/deps.sh installs it)" >&2; exit 1; }
work=$(mktemp -d)
. "$(dirname "$0")/../scripts/deploy.sh" # deploy_start, deploy_down
deploy_pids=()
trap 'deploy_down; wait 2>/dev/null || true; rm -rf "$work"' EXIT

"$B/mimir-pki" dev --out "$work/pki" >/dev/null
P=$work/pki
deploy_start session mimir-session "{\"http\": {\"port\": 0, \"threads\": 4}, \"log\": {\"level\": \"warn\"},
 \"tls\": {\"cert\": \"$P/session.crt\", \"key\": \"$P/session.key\", \"ca\": \"$P/ca.crt\"},
 \"db\": {\"path\": \"$work/session.db\"}, \"keys\": {\"secret_file\": \"$work/session.secret\"}}"
surl="https://localhost:$(cat "$work/session.port")"
deploy_start gateway mimir-gateway "{\"http\": {\"port\": 0, \"threads\": 8}, \"log\": {\"level\": \"warn\"},
 \"tls\": {\"cert\": \"$P/gateway.crt\", \"key\": \"$P/gateway.key\", \"ca\": \"$P/ca.crt\"},
 \"session\": {\"url\": \"$surl\", \"ca\": \"$P/ca.crt\", \"cert\": \"$P/gateway.crt\", \"key\": \"$P/gateway.key\", \"pool\": 16},
 \"admin\": {\"cert\": true}, \"limits\": {\"key_rate\": 1000000, \"key_burst\": 1000000}}"
gurl="https://localhost:$(cat "$work/gateway.port")"
admin() { curl -sS --cacert "$P/ca.crt" --cert "$P/admin.crt" --key "$P/admin.key" \
  -H 'Content-Type: application/json' "$@"; }
field() { grep -o "\"$1\": *\"[^\"]*\"" | head -1 | sed 's/.*: *"\(.*\)"/\1/'; }

shares='"'$(printf '%064x' 1)'","'$(printf '%064x' 2)'","'$(printf '%064x' 3)'"'
model=$(admin -X POST "$gurl/admin/v1/models" -d "{\"name\": \"stories260K\", \"dims\": {\"dim\": 64,
 \"hidden_dim\": 172, \"n_layers\": 5, \"n_heads\": 8, \"n_kv_heads\": 4, \"vocab_size\": 512,
 \"seq_len\": 512}, \"shares\": [$shares]}" | field id)
for i in 0 1 2; do
  pk=$(head -c 32 /dev/urandom | od -An -tx1 | tr -d ' \n')
  admin -X POST "$gurl/admin/v1/parties" -d "{\"identity\": \"party$i\", \"sealing_key\": \"$pk\"}" >/dev/null
done
sid=$(admin -X POST "$gurl/admin/v1/sessions" -d "{\"model\": \"$model\"}" | field id)
key=$(admin -X POST "$gurl/admin/v1/keys" -d "{\"sessions\": [\"$sid\"], \"name\": \"bench\"}" | field key)
[ -n "$sid" ] && [ -n "$key" ] || { echo "bench/gateway.sh: could not set up a session and a key" >&2; exit 1; }

echo "gateway: GET /v1/sessions/{id} with an API key, $conns connections, 2 threads, ${secs} s (wrk, TLS, loopback; gateway and session service on this machine's 2 cores)"
wrk -t2 -c"$conns" -d"${secs}s" --latency -H "Authorization: Bearer $key" "$gurl/v1/sessions/$sid" > "$work/wrk.txt"
rps=$(awk '/^Requests\/sec/ {print $2}' "$work/wrk.txt")
p50=$(awk '$1 == "50%" {print $2}' "$work/wrk.txt")
p99=$(awk '$1 == "99%" {print $2}' "$work/wrk.txt")
errs=$(awk '/Non-2xx or 3xx responses/ {print $NF}' "$work/wrk.txt")
total=$(awk '/requests in/ {print $1}' "$work/wrk.txt")
printf '  requests/s %s   p50 %s   p99 %s   requests %s   non-2xx %s\n' "$rps" "$p50" "$p99" "$total" "${errs:-0}"
[ -z "$errs" ] || { echo "bench/gateway.sh: the gateway answered errors under load:" >&2; cat "$work/wrk.txt" >&2; exit 1; }
rss=$(awk '/^VmRSS/ {print $2, $3}' "/proc/${deploy_pids[1]}/status")
echo "  gateway resident memory after the run: $rss"
