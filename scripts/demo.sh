#!/usr/bin/env bash
# make demo: the main job, end to end on this machine with embedded defaults. First the
# platform every service stands on (a development PKI, mutual TLS, refusals,
# problem+json, a resumable event stream, metrics, a graceful stop) and the plaintext
# model; then the product: a dealer and three parties holding sealed shares of
# stories260K, the session registry provisioning them, the gateway, and a client that
# generates text through it that no service ever sees in clear, checked token for
# token against the plaintext model, and the same through the OpenAI-compatible API of
# `mimir proxy`. DEMO_PROMPT (default "Once upon a time") and DEMO_TOKENS (default 64)
# set the story; `make demo PROMPT="..." TOKENS=N` passes them.
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
fi

if [ -x "$B/mimir-party" ] && [ -x "$B/mimir" ] && [ -f "$S/models/stories260K.bin" ]; then
  n=${DEMO_TOKENS:-64}
  prompt=${DEMO_PROMPT:-Once upon a time}
  case $n in ''|*[!0-9]*) echo "make demo: TOKENS must be a number, not '$n'" >&2; exit 2 ;; esac
  say_step() {
    case $1 in
      attest) say "10. The attest service: it issues the certificates of the dealer and the parties on their evidence (simulated here, which the development policy allows and logs loudly)" ;;
      cluster) say "11. A deployment on this machine: a dealer and three parties with attested certificates, each party holding only its sealed share of the weights, its sealing key bound in its certificate (mimir-cluster --attest)" ;;
      services) say "12. The session registry (SQLite) that provisions the dealer and the parties, and the gateway, the only public edge" ;;
      register) say "13. The administrator registers the model (the digest of each share file) and the parties (sealing key, pinned certificate, attestation, endpoint)" ;;
      session) say "14. A session: the registry posts it to the dealer, opens it at every party, and it becomes ready when all three have loaded their shares" ;;
    esac
  }
  . "$(dirname "$0")/deploy.sh"
  trap 'deploy_down; rm -rf "$work"' EXIT
  deploy_up

  say "15. The client (mimir generate): tokenizes here, sends the prompt only masked, reconstructs each token from the parties' sealed parts"
  echo "   ($n tokens, about 0.5-1.5 s each on 2 cores: five layers on MAC-checked shares, over mutual TLS between processes; the text appears as it is made)"
  printf '   '
  MIMIR_API_KEY=$key "$B/mimir" generate --gateway "$gurl" --session "$sid" --ca "$P/ca.crt" \
    --tokenizer "$S/models/tok512.bin" --tokens "$n" "$prompt" 2>"$work/gen.err" | tee "$work/gen.txt"
  echo
  sed 's/^/   /' "$work/gen.err"
  "$B/mimir-ref" --model "$S/models/stories260K.bin" --tokenizer "$S/models/tok512.bin" \
    --prompt "$prompt" --tokens "$n" > "$work/ref.txt" 2>/dev/null
  if cmp -s "$work/gen.txt" "$work/ref.txt"; then
    echo "   the parties produced exactly what the plaintext model produces ($n tokens); none of them saw the prompt or the text"
  else
    echo "   MISMATCH between the secure generation and mimir-ref"; exit 1
  fi

  say "16. The same through the OpenAI API: mimir proxy on the client's machine, curl as the SDK (8 tokens, streamed)"
  MIMIR_API_KEY=$key "$B/mimir" proxy --gateway "$gurl" --session "$sid" --ca "$P/ca.crt" \
    --tokenizer "$S/models/tok512.bin" --listen 127.0.0.1:0 --port-file "$work/proxy.port" 2>"$work/proxy.log" &
  proxy=$!
  for _ in $(seq 100); do [ -s "$work/proxy.port" ] && break; sleep 0.05; done
  purl="http://127.0.0.1:$(cat "$work/proxy.port")"
  echo "   $ curl $purl/v1/completions -d '{\"model\": \"$sid\", \"prompt\": \"$prompt\", \"max_tokens\": 8, \"temperature\": 0, \"stream\": true}'"
  jq -nc --arg m "$sid" --arg p "$prompt" '{model: $m, prompt: $p, max_tokens: 8, temperature: 0, stream: true}' |
    curl -sSN "$purl/v1/completions" -H 'Content-Type: application/json' -d @- | tee "$work/oai.txt" |
    sed -un 's/^data: //p' | jq --unbuffered -Rrc '(fromjson? | .choices[0] | "{..., \"choices\": [{\"text\": \(.text | tojson), \"finish_reason\": \(.finish_reason | tojson)}]}") // .' |
    sed 's/^/   data: /'
  text=$(sed -n 's/^data: \({.*\)/\1/p' "$work/oai.txt" | jq -rj '.choices[0].text // empty')
  echo "   text: $prompt$text"
  kill "$proxy" 2>/dev/null; wait "$proxy" 2>/dev/null || true

  say "17. What each party saw: masked openings and counters, never text; the audit chain of every administrative act"
  for i in 0 1 2; do
    url=$(jq -r ".parties[$i].url" "$C/cluster.json")
    admin "$url/metrics" | grep -E '^mimir_party_(tokens_total|mpc_rounds_total|triples_sacrificed_total) ' | sed "s/^/   party$i: /"
  done
  admin "$gurl/admin/v1/audit/verify" | jq -c '{audit_chain_intact: .ok, entries: .entries}' | sed 's/^/   /'
  deploy_down
  echo "   stopped: attest, dealer, parties, session service, gateway"
fi
say "done"
