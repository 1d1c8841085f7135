#!/usr/bin/env bash
# make demo: the main job, end to end on this machine with embedded defaults. Until the
# secure generation services land, it shows the platform every service stands on: a
# development PKI, a service over mutual TLS, the identity a handler sees, refusals,
# problem+json errors, an event stream resumed with Last-Event-ID, metrics and a
# graceful stop; the plaintext model run (mimir-ref), and the same generation on
# secret shares by three parties in process (mimir-sim), token for token.
set -euo pipefail
B=${MIMIR_BUILD:-build}/bin
S=${MIMIR_SHARED:-../shared}
work=$(mktemp -d)
trap 'kill $svc 2>/dev/null || true; rm -rf "$work"' EXIT
say() { printf '\n\033[1m== %s\033[0m\n' "$*"; }

say "1. A development PKI (mimir-pki dev): CA and one certificate per service role"
"$B/mimir-pki" dev --out "$work/pki" >/dev/null
"$B/mimir-pki" issue --ca "$work/pki" --role gateway --name demo-svc --dns localhost --ip 127.0.0.1 \
  --out "$work/pki" >/dev/null
ls "$work/pki" | sed 's/^/   /' | paste -sd' ' -
"$B/mimir-pki" show "$work/pki/party0.crt" | sed 's/^/   /'

say "2. A service over mutual TLS on a loopback port (mimir-example)"
cat > "$work/demo.json" <<JSON
{"http": {"port": 0}, "log": {"level": "warn"},
 "tls": {"cert": "$work/pki/demo-svc.crt", "key": "$work/pki/demo-svc.key", "ca": "$work/pki/ca.crt"}}
JSON
"$B/mimir-example" --config "$work/demo.json" --port-file "$work/port" 2>"$work/svc.log" &
svc=$!
for _ in $(seq 100); do [ -s "$work/port" ] && break; sleep 0.05; done
url="https://localhost:$(cat "$work/port")"
echo "   listening at $url"
as() { local who=$1; shift; curl -sS --cacert "$work/pki/ca.crt" --cert "$work/pki/$who.crt" --key "$work/pki/$who.key" "$@"; }

say "3. The handler sees the verified peer: party0 asks who it is"
as party0 "$url/v1/whoami"; echo

say "4. No client certificate: refused inside the TLS handshake"
curl -sS --cacert "$work/pki/ca.crt" "$url/v1/whoami" 2>&1 | sed 's/^/   /' || true
for _ in $(seq 40); do grep -q 'event=tls.refused' "$work/svc.log" && break; sleep 0.05; done
{ grep -o 'event=tls.refused.*reason="[^"]*"' "$work/svc.log" || true; } | tail -1 | sed 's/^/   log: /'

say "5. Bad input: problem+json naming the field"
as client -X POST "$url/v1/echo" -H 'Content-Type: application/json' -d '{"message": "hi", "repeat": 99}'; echo
as client -X DELETE -i "$url/v1/echo" 2>/dev/null | grep -iE '^(HTTP|allow)' | sed 's/^/   /'

say "6. An event stream, then resumption after event 2 with Last-Event-ID"
for t in one two three; do
  as client -X POST "$url/v1/feeds/demo/events" -H 'Content-Type: application/json' \
    -d "{\"event\": \"token\", \"data\": \"$t\"}" >/dev/null
done
as client -X POST "$url/v1/feeds/demo/finish" -H 'Content-Type: application/json' -d '{}' >/dev/null
as client -N "$url/v1/feeds/demo" -H 'Last-Event-ID: 2' | sed 's/^/   /'

say "7. /metrics, checked by promtool"
as client "$url/metrics" > "$work/metrics.txt"
grep -E '^mimir_(http_requests_total|tls_handshakes_refused_total)' "$work/metrics.txt" | head -6 | sed 's/^/   /'
promtool check metrics < "$work/metrics.txt" && echo "   promtool: ok"

say "8. Graceful stop on SIGTERM"
kill -TERM "$svc"; wait "$svc" && echo "   exited 0"
svc=

if [ -x "$B/mimir-ref" ] && [ -f "$S/models/stories260K.bin" ]; then
  say "9. The model the parties will run, in plaintext (mimir-ref, stories260K, greedy)"
  "$B/mimir-ref" --model "$S/models/stories260K.bin" --tokenizer "$S/models/tok512.bin" \
    --prompt "Once upon a time" --tokens 48
  echo
  if [ -x "$B/mimir-sim" ]; then
    n=${DEMO_SECURE_TOKENS:-12}
    say "10. The same model on secret shares: 3 parties, weights and prompt shared, every token chosen by secure argmax (mimir-sim, in process)"
    echo "   (about 1.5 s per token on 2 cores: every layer runs on MAC-checked shares)"
    printf '   '
    "$B/mimir-sim" --model "$S/models/stories260K.bin" --tokenizer "$S/models/tok512.bin" \
      --prompt "Once upon a time" --tokens "$n" --parties 3 2> "$work/sim.err" | tee "$work/sim.txt"
    echo
    sed 's/^/   /' "$work/sim.err"
    "$B/mimir-ref" --model "$S/models/stories260K.bin" --tokenizer "$S/models/tok512.bin" \
      --prompt "Once upon a time" --tokens "$n" > "$work/ref.txt" 2>/dev/null
    if cmp -s "$work/sim.txt" "$work/ref.txt"; then
      echo "   the secure generation printed exactly what the plaintext model prints ($n tokens)"
    else
      echo "   MISMATCH between mimir-sim and mimir-ref"; exit 1
    fi
  fi
fi
say "done"
