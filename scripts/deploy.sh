# scripts/deploy.sh: a whole Mimir deployment on this machine, for the demo and the
# benchmarks (sourced, not run). Needs B (the binaries), S (../shared), work (a
# scratch directory) and jq. deploy_up starts the attest service (the development
# policy: simulated evidence accepted for parties and the dealer, each acceptance
# logged as a warning), a dealer and three parties whose certificates it issues on
# that evidence, each party's bound to the X25519 key of its sealed share
# (mimir-cluster --attest), the session service provisioning them and the gateway;
# registers the model and the parties as an administrator; opens a session and waits
# until every party has loaded its share; makes an API key. It sets C (the cluster
# directory), P (its dev PKI), T (the CAs to trust: the dev CA and the attestation
# CA), aurl, gurl, sid, key, and the functions admin (curl with the admin
# certificate) and deploy_down. Progress goes through say_step (default: nothing).
# Every failure exits non-zero with the service's last log lines.

type say_step >/dev/null 2>&1 || say_step() { :; }

R=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd) # the repository (attest/roots)

admin() { curl -sS --cacert "$T" --cert "$P/admin.crt" --key "$P/admin.key" -H 'Content-Type: application/json' "$@"; }

deploy_start() { # name binary json
  echo "$3" > "$work/$1.json"
  "$B/$2" --config "$work/$1.json" --port-file "$work/$1.port" 2>"$work/$1.log" &
  deploy_pids+=($!)
  for _ in $(seq 200); do [ -s "$work/$1.port" ] && return 0; sleep 0.05; done
  echo "   $1 did not start:" >&2; tail -5 "$work/$1.log" >&2; exit 1
}

deploy_down() {
  [ -n "${C:-}" ] && "$B/mimir-cluster" down --dir "$C" >/dev/null 2>&1 || true
  for p in "${deploy_pids[@]}"; do kill "$p" 2>/dev/null || true; done
  deploy_pids=()
}

deploy_up() { # [pad bucket]
  deploy_pids=()
  C=$work/cluster
  P=$C/pki
  T=$P/ca.crt
  say_step attest
  mkdir -p "$C"
  "$B/mimir-pki" dev --out "$P" >/dev/null
  "$B/mimir-pki" ca --out "$C/aca" --cn "Mimir Attestation CA" >/dev/null
  echo '{"version": 1, "roles": {"party": {"simulated": {}}, "dealer": {"simulated": {}}}}' > "$work/attest-policy.json"
  deploy_start attest mimir-attest "{\"http\": {\"port\": 0}, \"log\": {\"level\": \"warn\"},
   \"tls\": {\"cert\": \"$P/attest.crt\", \"key\": \"$P/attest.key\", \"ca\": \"$P/ca.crt\"},
   \"ca\": {\"cert\": \"$C/aca/ca.crt\", \"key\": \"$C/aca/ca.key\"}, \"policy\": {\"file\": \"$work/attest-policy.json\"},
   \"roots\": {\"dir\": \"$R/attest/roots\"}, \"revocations\": {\"file\": \"$work/attest.revoked\"}}"
  aurl="https://localhost:$(cat "$work/attest.port")"
  echo "   attest service $aurl (development policy: simulated evidence for parties and the dealer)"
  say_step cluster
  "$B/mimir-cluster" up --dir "$C" --model "$S/models/stories260K.bin" --attest "$aurl" | sed 's/^/   /'
  T=$C/trust.pem
  echo "   attested: $(grep -c 'event=attest.simulated_accepted' "$work/attest.log") certificates on simulated evidence (logged as warnings by the attest service)"
  local dealer_url surl model pids=() i body pid state
  dealer_url=$(jq -r .dealer.url "$C/cluster.json")
  say_step services
  deploy_start session mimir-session "{\"http\": {\"port\": 0}, \"log\": {\"level\": \"warn\"},
   \"tls\": {\"cert\": \"$P/session.crt\", \"key\": \"$P/session.key\", \"ca\": \"$P/ca.crt\"},
   \"db\": {\"path\": \"$work/registry.db\"}, \"keys\": {\"secret_file\": \"$work/registry.secret\"},
   \"dealer\": {\"url\": \"$dealer_url\", \"ca\": \"$T\", \"cert\": \"$P/session.crt\", \"key\": \"$P/session.key\"}}"
  surl="https://localhost:$(cat "$work/session.port")"
  deploy_start gateway mimir-gateway "{\"http\": {\"port\": 0, \"threads\": 8}, \"log\": {\"level\": \"warn\"},
   \"tls\": {\"cert\": \"$P/gateway.crt\", \"key\": \"$P/gateway.key\", \"ca\": \"$P/ca.crt\"},
   \"session\": {\"url\": \"$surl\", \"ca\": \"$P/ca.crt\", \"cert\": \"$P/gateway.crt\", \"key\": \"$P/gateway.key\"},
   \"parties\": {\"ca\": \"$T\"}}"
  gurl="https://localhost:$(cat "$work/gateway.port")"
  echo "   session service $surl, gateway $gurl"

  say_step register
  local shares
  shares=$(for i in 0 1 2; do sha256sum "$C/shares/model.party$i.mshare" | cut -d' ' -f1; done | jq -R . | jq -sc .)
  model=$(admin -X POST "$gurl/admin/v1/models" -d "{\"name\": \"stories260K\", \"dims\": {\"dim\": 64,
    \"hidden_dim\": 172, \"n_layers\": 5, \"n_heads\": 8, \"n_kv_heads\": 4, \"vocab_size\": 512,
    \"seq_len\": 512}, \"shares\": $shares}" | jq -r .id)
  echo "   model $model"
  for i in 0 1 2; do
    body=$(jq -c --arg i "$i" '.parties[$i|tonumber] | {identity: ("party" + $i), sealing_key, cert_fingerprint: .fingerprint, endpoint: .url} + (if .attestation then {attestation} else {} end)' "$C/cluster.json")
    pid=$(admin -X POST "$gurl/admin/v1/parties" -d "$body" | jq -r .id)
    pids+=("\"$pid\"")
    echo "   party$i $pid"
  done

  say_step session
  sid=$(admin -X POST "$gurl/admin/v1/sessions" -d "{\"model\": \"$model\", \"parties\": [$(IFS=,; echo "${pids[*]}")], \"pad_bucket\": ${1:-8}}" | jq -r .id)
  for _ in $(seq 300); do
    state=$(admin "$gurl/admin/v1/sessions/$sid" | jq -r .state)
    [ "$state" = created ] || break; sleep 0.2
  done
  echo "   $sid: $state"
  [ "$state" = ready ] || { admin "$gurl/admin/v1/sessions/$sid" | jq .reason >&2; exit 1; }
  key=$(admin -X POST "$gurl/admin/v1/keys" -d "{\"sessions\": [\"$sid\"], \"name\": \"client\"}" | jq -r .key)
  echo "   an API key for the client (shown once): ${key:0:16}..."
}
