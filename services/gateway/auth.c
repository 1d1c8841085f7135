/* mimir-gateway credentials.
 *
 * Administrators: a client certificate of the deployment's CA with role admin (the
 * TLS layer has verified it; its CN names the administrator), or an admin bearer
 * token. Tokens are 256 random bits ("mimir_at_" + 43 base64url characters) made by
 * `mimirctl token new`; the gateway keeps only BLAKE2b-256 hashes of them, in
 * admin.tokens_file, and compares a presented token's hash with every entry in
 * constant time. A fast hash is enough because a token has full entropy: there is
 * nothing to guess offline from a leaked file.
 *
 * Clients: an API key of the session service ("mimir_sk_..."), checked for shape
 * here (so garbage never costs an upstream call) and verified by the session service
 * for the session asked for. A positive verdict is remembered for key_cache_ms under
 * a keyed hash of key and session, never the key itself: a revoked key stops working
 * within that time.
 *
 * Both kinds pass their credential's rate limit before anything else is spent. */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/stat.h>

#include <sodium.h>

#include "err/err.h"
#include "gateway.h"
#include "log/log.h"
#include "metrics/metrics.h"

#define TOKEN_DOMAIN "mimir-admin-token-v1"
#define CACHE_SLOTS 4096

static bool b64url_char(char ch)
{
	return (ch >= 'A' && ch <= 'Z') || (ch >= 'a' && ch <= 'z') || (ch >= '0' && ch <= '9') ||
	       ch == '-' || ch == '_';
}

static bool hex_char(char ch)
{
	return (ch >= '0' && ch <= '9') || (ch >= 'a' && ch <= 'f');
}

/* The credential of "Authorization: Bearer <credential>", or NULL. */
static const char *bearer(struct http_req *r)
{
	const char *h = http_req_header(r, "Authorization");
	if (!h || strncasecmp(h, "Bearer ", 7) != 0)
		return NULL;
	h += 7;
	while (*h == ' ')
		h++;
	return *h ? h : NULL;
}

static void fail_count(struct gw_ctx *c, const char *api, const char *reason)
{
	metric_inc(metric_series(c->m_auth_fail, METRIC_LABELS(api, reason)));
}

static int unauthorized(struct http_req *r, const char *realm, bool presented, const char *detail)
{
	char h[128];
	snprintf(h, sizeof h, "Bearer realm=\"%s\"%s", realm, presented ? ", error=\"invalid_token\"" : "");
	http_reply_header(r, "WWW-Authenticate", h);
	http_reply_problem(r, ERR_UNAUTHENTICATED, detail, NULL);
	return ERR_UNAUTHENTICATED;
}

static int limited(struct http_req *r, struct gw_ctx *c, const char *scope, const char *who,
		   double rate, unsigned retry)
{
	char ra[16], detail[200];
	metric_inc(metric_series(c->m_limited, METRIC_LABELS(scope)));
	snprintf(ra, sizeof ra, "%u", retry);
	snprintf(detail, sizeof detail, "more than %g requests per second for %s; retry after %u s",
		 rate, who, retry);
	http_reply_header(r, "Retry-After", ra);
	http_reply_problem(r, ERR_RATE_LIMITED, detail, NULL);
	return ERR_RATE_LIMITED;
}

/* ---- administrators ---- */

void gw_token_hash(const char *token, uint8_t out[32])
{
	crypto_generichash_state st;
	crypto_generichash_init(&st, NULL, 0, 32);
	crypto_generichash_update(&st, (const unsigned char *)TOKEN_DOMAIN, sizeof TOKEN_DOMAIN);
	crypto_generichash_update(&st, (const unsigned char *)token, strlen(token));
	crypto_generichash_final(&st, out, 32);
	sodium_memzero(&st, sizeof st);
}

static bool token_shape_ok(const char *t)
{
	if (strnlen(t, GW_TOKEN_LEN + 1) != GW_TOKEN_LEN ||
	    strncmp(t, GW_TOKEN_PREFIX, sizeof GW_TOKEN_PREFIX - 1) != 0)
		return false;
	for (size_t i = sizeof GW_TOKEN_PREFIX - 1; i < GW_TOKEN_LEN; i++)
		if (!b64url_char(t[i]))
			return false;
	return true;
}

static bool name_ok(const char *s, size_t n)
{
	if (n == 0 || n > GW_NAME_MAX)
		return false;
	for (size_t i = 0; i < n; i++)
		if (!((s[i] >= 'a' && s[i] <= 'z') || (s[i] >= 'A' && s[i] <= 'Z') ||
		      (s[i] >= '0' && s[i] <= '9') || strchr("._@-", s[i])))
			return false;
	return true;
}

int gw_tokens_load(struct gw_ctx *c, const char *path)
{
	struct stat sb;
	FILE *f = fopen(path, "r");
	if (!f || fstat(fileno(f), &sb) != 0) {
		LOG_ERROR("gateway.tokens_file", LOG_S("path", path), LOG_S("error", strerror(errno)),
			  LOG_S("hint", "admin.tokens_file must name a readable file (mimirctl token new)"));
		if (f)
			fclose(f);
		return ERR_CONFIG;
	}
	if (!S_ISREG(sb.st_mode) || (sb.st_mode & 022)) {
		LOG_ERROR("gateway.tokens_file", LOG_S("path", path),
			  LOG_S("error", "not a regular file, or writable by group or others"),
			  LOG_S("hint", "chmod go-w: whoever can write this file can add an administrator"));
		fclose(f);
		return ERR_CONFIG;
	}
	char line[512];
	int rc = 0, lineno = 0;
	c->n_tokens = 0;
	while (rc == 0 && fgets(line, sizeof line, f)) {
		lineno++;
		size_t l = strlen(line);
		while (l && (line[l - 1] == '\n' || line[l - 1] == '\r' || line[l - 1] == ' '))
			line[--l] = '\0';
		char *p = line;
		while (*p == ' ' || *p == '\t')
			p++;
		if (!*p || *p == '#')
			continue;
		size_t nl = strcspn(p, " \t");
		char *h = p + nl;
		while (*h == ' ' || *h == '\t')
			h++;
		size_t bin = 0;
		struct gw_token *t = &c->tokens[c->n_tokens];
		const char *why = NULL;
		if (c->n_tokens == GW_ADMIN_TOKENS_MAX)
			why = "too many tokens (at most 64)";
		else if (!name_ok(p, nl))
			why = "the name must be 1-48 of [A-Za-z0-9._@-]";
		else if (strlen(h) != 64 || sodium_hex2bin(t->hash, 32, h, 64, NULL, &bin, NULL) != 0 ||
			 bin != 32)
			why = "expected '<name> <64 hex digits>' (the hash mimirctl token new prints)";
		if (why) {
			LOG_ERROR("gateway.tokens_file", LOG_S("path", path), LOG_I("line", lineno),
				  LOG_S("error", why));
			rc = ERR_CONFIG;
			break;
		}
		snprintf(t->name, sizeof t->name, "%.*s", (int)nl, p);
		for (size_t i = 0; i < c->n_tokens; i++)
			if (!strcmp(c->tokens[i].name, t->name)) {
				LOG_ERROR("gateway.tokens_file", LOG_S("path", path), LOG_I("line", lineno),
					  LOG_S("error", "a name appears twice"));
				rc = ERR_CONFIG;
			}
		c->n_tokens++;
	}
	fclose(f);
	if (rc == 0)
		LOG_INFO("gateway.admin_tokens", LOG_S("path", path), LOG_I("tokens", (long long)c->n_tokens));
	return rc;
}

/* "cert:<CN>" with anything the session service would not accept in an actor name
 * (spaces, control and non-ASCII bytes) replaced, so the audit log always names who. */
static void cert_actor(const char *cn, char *out, size_t cap)
{
	int n = snprintf(out, cap, "cert:%s", cn && *cn ? cn : "-");
	for (size_t i = 5; n > 0 && i < (size_t)n && i < cap; i++)
		if ((unsigned char)out[i] <= 0x20 || (unsigned char)out[i] >= 0x7f)
			out[i] = '_';
}

int gw_admin_auth(struct http_req *r, struct gw_ctx *c, struct gw_admin *out)
{
	const struct ident *peer = http_req_peer(r);
	const char *tok = bearer(r);
	if (c->set.admin_cert && peer && peer->role == IDENT_ROLE_ADMIN) {
		cert_actor(peer->cn, out->actor, sizeof out->actor);
		out->credential = "certificate";
	} else if (tok) {
		if (!token_shape_ok(tok)) {
			fail_count(c, "admin", "malformed");
			return unauthorized(r, "mimir-admin", true, "the bearer credential is not an admin token");
		}
		uint8_t h[32];
		gw_token_hash(tok, h);
		int found = -1;
		for (size_t i = 0; i < c->n_tokens; i++) /* no early exit: constant time */
			if (sodium_memcmp(h, c->tokens[i].hash, 32) == 0)
				found = (int)i;
		sodium_memzero(h, sizeof h);
		if (found < 0) {
			fail_count(c, "admin", "unknown");
			return unauthorized(r, "mimir-admin", true, "unknown admin token");
		}
		snprintf(out->actor, sizeof out->actor, "token:%s", c->tokens[found].name);
		out->credential = "token";
	} else {
		fail_count(c, "admin", "missing");
		return unauthorized(r, "mimir-admin", false,
				    c->set.admin_cert
					    ? "the admin API needs a client certificate with role admin or "
					      "an admin token (Authorization: Bearer mimir_at_...)"
					    : "the admin API needs an admin token (Authorization: Bearer mimir_at_...)");
	}
	unsigned retry = 0;
	char key[GW_ACTOR_MAX + 4];
	snprintf(key, sizeof key, "a:%s", out->actor);
	if (!gw_limits_take(c->limits, key, c->set.admin_rate, (double)c->set.admin_burst, gw_now_ms(),
			    &retry))
		return limited(r, c, "admin", "this administrator", c->set.admin_rate, retry);
	return 0;
}

/* ---- the verification cache ---- */

struct gw_key_cache {
	pthread_mutex_t mu;
	uint8_t hkey[crypto_generichash_KEYBYTES];
	struct slot {
		uint8_t h[32];
		char key_id[24];
		int64_t until_ms;
	} s[CACHE_SLOTS];
};

int gw_key_cache_new(struct gw_key_cache **out)
{
	struct gw_key_cache *k = calloc(1, sizeof *k);
	if (!k)
		return ERR_NOMEM;
	randombytes_buf(k->hkey, sizeof k->hkey);
	pthread_mutex_init(&k->mu, NULL);
	*out = k;
	return 0;
}

void gw_key_cache_free(struct gw_key_cache *k)
{
	if (!k)
		return;
	pthread_mutex_destroy(&k->mu);
	sodium_memzero(k, sizeof *k);
	free(k);
}

static void cache_hash(const struct gw_key_cache *k, const char *key, const char *session, uint8_t h[32])
{
	crypto_generichash_state st;
	crypto_generichash_init(&st, k->hkey, sizeof k->hkey, 32);
	crypto_generichash_update(&st, (const unsigned char *)key, strlen(key) + 1);
	crypto_generichash_update(&st, (const unsigned char *)session, strlen(session));
	crypto_generichash_final(&st, h, 32);
	sodium_memzero(&st, sizeof st);
}

static size_t slot_of(const uint8_t h[32])
{
	uint64_t v;
	memcpy(&v, h, sizeof v);
	return (size_t)(v % CACHE_SLOTS);
}

static bool cache_get(struct gw_key_cache *k, const uint8_t h[32], int64_t now, char key_id[24])
{
	pthread_mutex_lock(&k->mu);
	struct slot *s = &k->s[slot_of(h)];
	bool hit = s->until_ms > now && sodium_memcmp(s->h, h, 32) == 0;
	if (hit)
		memcpy(key_id, s->key_id, 24);
	pthread_mutex_unlock(&k->mu);
	return hit;
}

static void cache_put(struct gw_key_cache *k, const uint8_t h[32], int64_t until, const char *key_id)
{
	pthread_mutex_lock(&k->mu);
	struct slot *s = &k->s[slot_of(h)];
	memcpy(s->h, h, 32);
	snprintf(s->key_id, sizeof s->key_id, "%s", key_id);
	s->until_ms = until;
	pthread_mutex_unlock(&k->mu);
}

/* ---- clients ---- */

static bool key_shape_ok(const char *k, char key_id[24])
{
	const size_t pl = sizeof GW_KEY_PREFIX - 1;
	if (strnlen(k, GW_KEY_LEN + 1) != GW_KEY_LEN || strncmp(k, GW_KEY_PREFIX, pl) != 0 ||
	    k[pl + 16] != '_')
		return false;
	for (size_t i = pl; i < pl + 16; i++)
		if (!hex_char(k[i]))
			return false;
	for (size_t i = pl + 17; i < GW_KEY_LEN; i++)
		if (!b64url_char(k[i]))
			return false;
	snprintf(key_id, 24, "key_%.16s", k + pl);
	return true;
}

int gw_client_auth(struct http_req *r, struct gw_ctx *c, const char *session_id, struct gw_client *out)
{
	const char *key = bearer(r);
	if (!key) {
		fail_count(c, "client", "missing");
		return unauthorized(r, "mimir", false, "an API key is required (Authorization: Bearer mimir_sk_...)");
	}
	if (!key_shape_ok(key, out->key_id)) {
		fail_count(c, "client", "malformed");
		return unauthorized(r, "mimir", true, "the bearer credential is not a Mimir API key");
	}
	unsigned retry = 0;
	char lk[32];
	snprintf(lk, sizeof lk, "k:%s", out->key_id);
	int64_t now = gw_now_ms();
	if (!gw_limits_take(c->limits, lk, c->set.key_rate, (double)c->set.key_burst, now, &retry))
		return limited(r, c, "key", "this API key", c->set.key_rate, retry);
	uint8_t h[32] = {0};
	char cached_id[24];
	if (c->set.key_cache_ms > 0) {
		cache_hash(c->keys, key, session_id, h);
		if (cache_get(c->keys, h, now, cached_id)) {
			metric_inc(c->m_cache_hit);
			return 0;
		}
		metric_inc(c->m_cache_miss);
	}
	/* The key travels in this one buffer, wiped as soon as it is sent. */
	json_t *q = json_pack("{s:s, s:s}", "key", key, "session", session_id);
	char *body = q ? json_dumps(q, JSON_COMPACT) : NULL;
	json_decref(q);
	if (!body) {
		http_reply_problem(r, ERR_NOMEM, NULL, NULL);
		return ERR_NOMEM;
	}
	struct httpc_resp resp;
	size_t blen = strlen(body);
	int rc = gw_upstream_call(c->up, r, "POST", "/v1/keys/verify", NULL, body, blen, &resp);
	sodium_memzero(body, blen);
	free(body);
	if (rc != 0) {
		gw_upstream_fail(r, c, rc, &resp);
		goto out;
	}
	if (resp.status != 200) {
		/* A busy or read-only registry explains itself; anything else is ours. */
		if (resp.status >= 500)
			gw_relay(r, c, &resp, false);
		else
			gw_upstream_fail(r, c, 0, &resp);
		rc = ERR_UPSTREAM;
		goto out;
	}
	json_t *v = json_loadb(resp.body, resp.len, 0, NULL);
	const char *reason = json_string_value(json_object_get(v, "reason"));
	if (!reason) {
		json_decref(v);
		rc = gw_upstream_fail(r, c, 0, &resp);
		goto out;
	}
	if (json_is_true(json_object_get(v, "valid"))) {
		if (c->set.key_cache_ms > 0)
			cache_put(c->keys, h, now + c->set.key_cache_ms, out->key_id);
		rc = 0;
	} else if (!strcmp(reason, "wrong-session")) {
		fail_count(c, "client", "wrong-session");
		http_reply_problem(r, ERR_FORBIDDEN, "this API key is not valid for this session", NULL);
		rc = ERR_FORBIDDEN;
	} else {
		static const char *const known[] = {"revoked", "expired", "unknown", "malformed"};
		const char *label = "unknown";
		for (size_t i = 0; i < 4; i++)
			if (!strcmp(reason, known[i]))
				label = known[i];
		fail_count(c, "client", label);
		unauthorized(r, "mimir", true,
			     !strcmp(label, "revoked")   ? "the API key has been revoked"
			     : !strcmp(label, "expired") ? "the API key has expired"
							 : "the API key is not known");
		rc = ERR_UNAUTHENTICATED;
	}
	json_decref(v);
out:
	httpc_resp_free(&resp);
	sodium_memzero(h, sizeof h);
	return rc;
}
