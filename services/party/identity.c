/* mimir-party identity: what the party is, checked once at start-up, and published on
 * GET /v1/identity. The certificate of mtls.cert must carry the party role (its
 * fingerprint is what peers and the dealer pin); model.key is the party's X25519 key,
 * which both opens its share file and seals every clientio message to a client, so the
 * public half published beside the certificate is the key a client checks against the
 * attested party; the share file is opened and verified to its end once here (a wrong
 * key or a damaged file stops the service now rather than at the first session), then
 * wiped: the weights are decrypted again only while a session loads them. */
#include <stdio.h>
#include <string.h>

#include <openssl/pem.h>
#include <openssl/x509.h>
#include <sodium.h>

#include "err/err.h"
#include "log/log.h"
#include "party.h"

static int bad_setting(const char *field, const char *detail, int rc)
{
	LOG_ERROR("party.config", LOG_S("field", field), LOG_S("detail", detail));
	return rc;
}

static int load_certificate(struct party_ctx *c)
{
	FILE *f = fopen(c->set.mtls_cert, "r");
	X509 *x = f ? PEM_read_X509(f, NULL, NULL, NULL) : NULL;
	if (f)
		fclose(f);
	struct ident id;
	int rc = x ? ident_from_x509(x, &id) : ERR_IO;
	X509_free(x);
	if (rc != 0)
		return bad_setting("mtls.cert", "cannot read the certificate (a PEM X.509 certificate is expected)",
				   ERR_CONFIG);
	if (id.role != IDENT_ROLE_PARTY) {
		char d[160];
		snprintf(d, sizeof d,
			 "the certificate carries the role %s: peers and the dealer accept only the party role",
			 ident_role_name(id.role));
		return bad_setting("mtls.cert", d, ERR_CONFIG);
	}
	memcpy(c->cert_fp, id.fingerprint, sizeof c->cert_fp);
	snprintf(c->cn, sizeof c->cn, "%s", id.cn);
	return 0;
}

int party_identity_load(struct party_ctx *c)
{
	char err[512];
	int rc = load_certificate(c);
	if (rc != 0)
		return rc;
	if ((rc = mshare_key_read(c->set.model_key, true, c->sk, err, sizeof err)) != 0)
		return bad_setting("model.key", err, ERR_CONFIG);
	if ((rc = mshare_public_from_secret(c->sk, c->pk)) != 0)
		return bad_setting("model.key", "the key is not a usable X25519 secret key", ERR_CONFIG);
	struct mshare_shares *sh = NULL;
	if ((rc = mshare_load(c->set.model_share, c->sk, &sh, err, sizeof err)) != 0)
		return bad_setting("model.share", err, ERR_CONFIG);
	c->share = *mshare_shares_info(sh);
	mshare_shares_free(sh); /* wipes: the weights stay sealed until a session needs them */
	if (c->share.nparties > MPC_MAX_PARTIES)
		return bad_setting("model.share", "more parties than the engine supports", ERR_CONFIG);
	return 0;
}

static json_t *hex_json(const uint8_t *b, size_t n)
{
	char h[2 * 64 + 1];
	sodium_bin2hex(h, sizeof h, b, n);
	return json_string(h);
}

int party_identity_get(struct http_req *r, void *ctx)
{
	struct party_ctx *c = ctx;
	const struct model_config *m = &c->share.config;
	json_t *model = json_pack("{s:o, s:i, s:i, s:i, s:i, s:i, s:i, s:i, s:i}", "id",
				  hex_json(c->share.model_id, MSHARE_ID_BYTES), "frac_bits", (int)c->share.frac_bits,
				  "dim", m->dim, "hidden_dim", m->hidden_dim, "n_layers", m->n_layers, "n_heads",
				  m->n_heads, "n_kv_heads", m->n_kv_heads, "vocab_size", m->vocab_size, "seq_len",
				  m->seq_len);
	json_t *body = json_pack("{s:s, s:s, s:o, s:o, s:i, s:i, s:o, s:i, s:s}", "role", "party", "cn", c->cn,
				 "certificate_fingerprint", hex_json(c->cert_fp, 32), "sealing_key",
				 hex_json(c->pk, MSHARE_PK_BYTES), "index", (int)c->share.party, "nparties",
				 (int)c->share.nparties, "model", model, "stream_port",
				 (int)mnet_hub_stream_port(c->hub), "mpc_mode", c->set.mode ? "request" : "stream");
	if (!body)
		return http_reply_problem(r, ERR_NOMEM, NULL, NULL);
	return http_reply_json(r, 200, body);
}
