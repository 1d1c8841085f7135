#!/usr/bin/env bash
# bench/sse.sh: how many concurrent event streams one gateway holds, and what each
# costs in memory. The deployment of scripts/deploy.sh (dealer, 3 parties with sealed
# shares of stories260K, session service, gateway), plus a second gateway started here
# on the same session service with the settings a stream bench needs (more connections,
# 1 s heartbeats, no per-key rate limit, long abandon and key-cache times). One
# generation is started on it and left waiting for the client's INPUT, which never
# comes, so its stream stays open with heartbeats; bench/sse_clients then attaches
# K = 250, 500, 1000, 2000 streams to it (cumulative; BENCH_SSE_STREAMS sets the
# largest), each its own TLS connection, and at each K the gateway's resident memory
# (VmRSS) is read once every stream has had the masks event and has been held
# BENCH_SSE_HOLD seconds (default 3) with its heartbeats watched. Prints one row per K:
# time to open, streams with their data, streams with a heartbeat within two intervals,
# the gateway's RSS, RSS per stream over the K = 0 baseline, and the gateway's own
# stream gauge; then the per-stream bound the design implies. BENCH_SSE_SLOTS (default
# 8, the session's pad_bucket too) sets the prompt slots, which size the masks event
# every stream is sent. The parties wait limits.input_timeout_ms (60 s by default) for
# the INPUT: every K must be done by then.
set -euo pipefail
B=${MIMIR_BUILD:-build}/bin
S=${MIMIR_SHARED:-../shared}
client=${MIMIR_BUILD:-build}/bench/sse_clients
kmax=${BENCH_SSE_STREAMS:-2000}
hold=${BENCH_SSE_HOLD:-3}
slots=${BENCH_SSE_SLOTS:-8} # the session's pad_bucket too: the masks event grows with it
hb_ms=1000
threads=4
die() { echo "bench/sse.sh: $*" >&2; exit 1; }
command -v jq >/dev/null || die "jq is not installed (scripts/deps.sh installs it)"
[ -x "$client" ] || die "$client is missing (make build-all builds bench/sse_clients.c)"
[[ $kmax =~ ^[0-9]+$ ]] && [ "$kmax" -ge 1 ] || die "BENCH_SSE_STREAMS must be a positive count"

# Every stream is a descriptor in the gateway and one in the client (separate
# processes, each with this limit), plus what the services hold besides.
want=$((kmax + 512))
if [ "$(ulimit -n)" != unlimited ] && [ "$(ulimit -n)" -lt "$want" ]; then
  hard=$(ulimit -Hn)
  [ "$hard" = unlimited ] || [ "$hard" -ge "$want" ] && ulimit -n "$want" 2>/dev/null || ulimit -n "$hard" 2>/dev/null || true
  if [ "$(ulimit -n)" -lt "$want" ]; then
    kmax=$(($(ulimit -n) - 512))
    [ "$kmax" -ge 1 ] || die "the file-descriptor limit ($(ulimit -n)) leaves no room for streams"
    echo "bench/sse.sh: file-descriptor limit $(ulimit -n) (hard $hard): stopping at $kmax streams" >&2
  fi
fi
stages=""
for k in 250 500 1000 2000; do [ "$k" -lt "$kmax" ] && stages="$stages$k,"; done
stages="$stages$kmax"

work=$(mktemp -d)
. "$(dirname "$0")/../scripts/deploy.sh"
trap 'deploy_down; rm -rf "$work"' EXIT
deploy_up "$slots" > "$work/deploy.out"

surl="https://localhost:$(cat "$work/session.port")"
deploy_start ssegw mimir-gateway "{\"http\": {\"port\": 0, \"threads\": $threads, \"max_connections\": $((kmax + 256))},
 \"log\": {\"level\": \"warn\"},
 \"tls\": {\"cert\": \"$P/gateway.crt\", \"key\": \"$P/gateway.key\", \"ca\": \"$P/ca.crt\"},
 \"session\": {\"url\": \"$surl\", \"ca\": \"$P/ca.crt\", \"cert\": \"$P/gateway.crt\", \"key\": \"$P/gateway.key\"}, \"parties\": {\"ca\": \"$T\"},
 \"keys\": {\"cache_ms\": 600000}, \"limits\": {\"key_rate\": 1000000, \"key_burst\": 1000000},
 \"stream\": {\"heartbeat_ms\": $hb_ms, \"abandon_ms\": 120000}}"
gw_pid=${deploy_pids[-1]}
g2="https://localhost:$(cat "$work/ssegw.port")"
printf 'Authorization: Bearer %s\n' "$key" > "$work/auth"
chmod 600 "$work/auth"
as_client() { curl -sS --cacert "$P/ca.crt" -H @"$work/auth" "$@"; }
rss_kb() { awk '/^VmRSS/ {print $2}' "/proc/$gw_pid/status"; }
gauge() { # the gateway's own count of open streams
  curl -sS --cacert "$P/ca.crt" --cert "$P/admin.crt" --key "$P/admin.key" "$g2/metrics" |
    awk '$1 == "mimir_http_streams_open" {print $2}'
}

# One generation, answered as JSON (no stream of its own), left waiting for its INPUT.
ck=$(head -c 32 /dev/urandom | od -An -tx1 | tr -d ' \n')
gen=$(as_client -X POST -H 'Content-Type: application/json' -H 'Accept: application/json' \
  -d "{\"client_key\": \"$ck\", \"slots\": $slots, \"max_tokens\": 8}" "$g2/v1/sessions/$sid/generations")
gpath=$(jq -r '.events // empty' <<<"$gen" | sed 's,/events$,,')
[ -n "$gpath" ] || die "the gateway did not start a generation: $gen"
state=
for _ in $(seq 300); do
  state=$(as_client "$g2$gpath" | jq -r .state)
  [ "$state" = masking ] || break; sleep 0.1
done
[ "$state" = awaiting_input ] || die "the generation is $state, not awaiting_input"
t_masks=$(date +%s.%N)
sleep 0.5
base=$(rss_kb)

echo "sse: open event streams on one gateway (stories260K, $slots slots, one generation awaiting INPUT;"
echo "     TLS on loopback, gateway $threads threads, heartbeat ${hb_ms} ms, each K held ${hold} s;"
echo "     client and services on this machine's $(nproc) cores)"
printf '  %6s %7s %7s %7s %7s %7s %9s %9s %9s %7s\n' K open_s masks open hb_ok gap_ms rss_MiB delta_MiB KiB/strm gauge
printf '  %6s %7s %7s %7s %7s %7s %9.1f %9s %9s %7s\n' 0 - - - - - "$(awk -v r="$base" 'BEGIN {print r / 1024}')" - - "$(gauge)"

coproc CL { MIMIR_API_KEY=$key exec "$client" "$g2$gpath/events" "$P/ca.crt" "$stages" "$hold" "$hb_ms" 2>"$work/clients.err"; }
cpid=$CL_PID
exec {cl_in}<&"${CL[0]}" {cl_out}>&"${CL[1]}"
last_k=0 per=0 bytes=0 ok=true
while IFS= read -r -u "$cl_in" line; do
  case $line in
  limit*) echo "  (the client's file-descriptor limit: ${line#*=} streams at most)" ;;
  stage*)
    rss=$(rss_kb) g=$(gauge)
    declare -A f=()
    for kv in ${line#stage }; do f[${kv%%=*}]=${kv#*=}; done
    k=${f[k]} bytes=${f[median_bytes]}
    per=$(awk -v r="$rss" -v b="$base" -v k="$k" 'BEGIN {printf "%.1f", (r - b) / k}')
    printf '  %6s %7s %7s %7s %7s %7s %9.1f %9.1f %9s %7s\n' "$k" "${f[open_s]}" "${f[with_data]}" "${f[open]}" \
      "${f[heartbeat_ok]}" "${f[max_gap_ms]}" "$(awk -v r="$rss" 'BEGIN {print r / 1024}')" \
      "$(awk -v r="$rss" -v b="$base" 'BEGIN {print (r - b) / 1024}')" "$per" "$g"
    [ "${f[with_data]}" = "$k" ] && [ "${f[open]}" = "$k" ] && [ "${f[heartbeat_ok]}" = "$k" ] || ok=false
    last_k=$k
    # (a client that has gone must not take this shell down with SIGPIPE: the trap
    # would not run and the deployment would outlive the bench)
    (trap '' PIPE; echo next >&"$cl_out") 2>/dev/null || true
    ;;
  esac
done
crc=0; wait "$cpid" || crc=$?
t_end=$(date +%s.%N)
as_client -X POST "$g2$gpath/cancel" >/dev/null || true
if [ "$crc" != 0 ] || [ "$last_k" != "$kmax" ] || [ "$ok" != true ]; then
  echo "bench/sse.sh: not every stream opened, got its masks and its heartbeats (client exit $crc):" >&2
  tail -5 "$work/clients.err" >&2
  tail -5 "$work/ssegw.log" >&2 || true
  exit 1
fi
drops=$(curl -sS --cacert "$P/ca.crt" --cert "$P/admin.crt" --key "$P/admin.key" "$g2/metrics" |
  awk '$1 == "mimir_http_stream_drops_total" {print $2}')
echo "  (open_s: to open this row's new streams until each had its masks event; open: still open after"
echo "   the hold; hb_ok: with a heartbeat and no silence over 2 intervals; gap_ms: longest silence seen)"
waited=$(awk -v a="$t_masks" -v z="$t_end" 'BEGIN {printf "%.0f", z - a}')
awk -v b="$bytes" -v per="$per" -v d="${drops:-0}" -v s="$waited" 'BEGIN {
  printf "  each stream received %.1f KiB: the generation and masks events, replayed into its own\n", b / 1024
  printf "    output buffer at attach (the replay log itself is one per generation), then heartbeats.\n"
  printf "  bound per stream: the TLS connection, plus its output buffer, capped at the replay log size\n"
  printf "    (stream.buffer_bytes, or three masks parts if larger) + 64 KiB (4 MiB + 64 KiB by default;\n"
  printf "    a client that falls further behind is dropped). A drained buffer is given back, so a\n"
  printf "    client that keeps up costs its connection (TLS state, the socket, libmicrohttpd):\n"
  printf "    %.1f KiB per stream measured, after %.1f KiB sent to each.\n", per, b / 1024
  printf "  streams dropped as too slow: %s; the generation waited %s s for its INPUT\n", d, s
  printf "    (the parties give up after limits.input_timeout_ms, 60 s by default)\n"
}'
echo "  bench time ${SECONDS} s, the deployment included"
