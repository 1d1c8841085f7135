/* registry parties: the organisations that hold shares. A party is known by the CN of
 * its certificates (identity); it publishes an X25519 sealing key clients seal their
 * masks to, optionally pins one certificate by fingerprint, and carries the summary of
 * its last attestation as a JSON object. Keys are checked for being real points of
 * large order, so a client never seals to a key that leaks everything. */
#include "registry/reg_int.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <sodium.h>

#include "err/err.h"

static int check_sealing_key(const uint8_t *pk)
{
	static const uint8_t zero[32];
	if (!pk || sodium_memcmp(pk, zero, 32) == 0)
		return reg_fail(ERR_INVALID, "sealing_key", "sealing_key is not an X25519 public key");
	/* A point of small order gives an all-zero shared secret, which libsodium refuses:
	 * such a key would let anyone open what clients seal to it. */
	uint8_t sk[32], q[32];
	randombytes_buf(sk, sizeof sk);
	int bad = crypto_scalarmult(q, sk, pk);
	sodium_memzero(sk, sizeof sk);
	sodium_memzero(q, sizeof q);
	if (bad != 0)
		return reg_fail(ERR_INVALID, "sealing_key",
				"sealing_key is a point of small order, not a usable public key");
	return 0;
}

static int check_endpoint(const char *e)
{
	if (!e || !*e)
		return 0;
	size_t n = strlen(e);
	const char *host = !strncmp(e, "https://", 8) ? e + 8 : !strncmp(e, "http://", 7) ? e + 7 : NULL;
	if (!host || n > REG_ENDPOINT_MAX || !*host || *host == '/')
		return reg_fail(ERR_INVALID, "endpoint",
				"endpoint must be an http(s):// URL of at most %d bytes", REG_ENDPOINT_MAX);
	for (size_t i = 0; i < n; i++)
		if ((unsigned char)e[i] <= 0x20 || e[i] == 0x7f)
			return reg_fail(ERR_INVALID, "endpoint", "endpoint contains spaces or control characters");
	return 0;
}

/* Normalises a JSON object text to compact form with sorted keys, into out. */
static int normalise_attestation(const char *text, char out[REG_ATTEST_MAX + 1])
{
	if (!text) {
		snprintf(out, REG_ATTEST_MAX + 1, "{}");
		return 0;
	}
	json_error_t je;
	json_t *j = json_loads(text, JSON_REJECT_DUPLICATES, &je);
	if (!j || !json_is_object(j)) {
		json_decref(j);
		return reg_fail(ERR_INVALID, "attestation", "attestation must be a JSON object");
	}
	char *s = json_dumps(j, JSON_COMPACT | JSON_SORT_KEYS);
	json_decref(j);
	if (!s)
		return reg_fail(ERR_NOMEM, NULL, "out of memory");
	int rc = 0;
	if (strlen(s) > REG_ATTEST_MAX)
		rc = reg_fail(ERR_TOO_LARGE, "attestation", "attestation is larger than %d bytes",
			      REG_ATTEST_MAX);
	else
		snprintf(out, REG_ATTEST_MAX + 1, "%s", s);
	free(s);
	return rc;
}

int reg_party_read(struct reg_conn *c, sqlite3_stmt *st, void *item, int64_t *rid, void *extra)
{
	(void)c;
	(void)extra;
	struct reg_party *p = item;
	memset(p, 0, sizeof *p);
	if (rid)
		*rid = sqlite3_column_int64(st, 0);
	char buf[16];
	reg_col_text(st, 1, p->id, sizeof p->id);
	reg_col_text(st, 2, p->identity, sizeof p->identity);
	reg_col_text(st, 3, buf, sizeof buf);
	if (reg_party_role_parse(buf, &p->role) != 0)
		p->role = REG_PARTY_ROLE_PARTY;
	reg_col_text(st, 4, buf, sizeof buf);
	if (reg_party_status_parse(buf, &p->status) != 0)
		p->status = REG_PARTY_SUSPENDED;
	reg_col_blob(st, 5, p->sealing_key, 32);
	p->has_fingerprint = reg_col_blob(st, 6, p->fingerprint, 32);
	reg_col_text(st, 7, p->endpoint, sizeof p->endpoint);
	reg_col_text(st, 8, p->attestation, sizeof p->attestation);
	p->created_ms = sqlite3_column_int64(st, 9);
	p->updated_ms = sqlite3_column_int64(st, 10);
	return 0;
}

static const struct reg_entity party_entity = {
	.prefix = "pty_", .not_found = "no party with this id",
	.by_id = S_PARTY_BY_ID, .list = S_PARTY_LIST,
	.read = reg_party_read, .size = sizeof(struct reg_party),
};

/* Binds what create and update both write, in this order from ?first on: the sealing
 * key, the certificate pin (NULL when none), the endpoint and the attestation. */
static void bind_published(sqlite3_stmt *st, int first, const struct reg_party *p)
{
	sqlite3_bind_blob(st, first, p->sealing_key, 32, SQLITE_TRANSIENT);
	if (p->has_fingerprint)
		sqlite3_bind_blob(st, first + 1, p->fingerprint, 32, SQLITE_TRANSIENT);
	else
		sqlite3_bind_null(st, first + 1);
	sqlite3_bind_text(st, first + 2, p->endpoint, -1, SQLITE_TRANSIENT);
	sqlite3_bind_text(st, first + 3, p->attestation, -1, SQLITE_TRANSIENT);
}

struct create_args {
	const struct reg_actor *who;
	const struct reg_party_spec *s;
	const char *attestation; /* normalised */
	struct reg_party *out;
};

static int create_tx(struct reg_conn *c, void *arg)
{
	struct create_args *a = arg;
	const struct reg_party_spec *s = a->s;
	int rc = reg_unique(c, S_PARTY_BY_IDENTITY, s->identity, "identity",
			    "a party with this identity exists already");
	if (rc != 0)
		return rc;
	struct reg_party *p = a->out;
	memset(p, 0, sizeof *p);
	reg_new_id(p->id, "pty_");
	snprintf(p->identity, sizeof p->identity, "%s", s->identity);
	p->role = s->role;
	p->status = REG_PARTY_ACTIVE;
	memcpy(p->sealing_key, s->sealing_key, 32);
	if ((p->has_fingerprint = s->fingerprint != NULL))
		memcpy(p->fingerprint, s->fingerprint, 32);
	snprintf(p->endpoint, sizeof p->endpoint, "%s", s->endpoint ? s->endpoint : "");
	snprintf(p->attestation, sizeof p->attestation, "%s", a->attestation);
	p->created_ms = p->updated_ms = reg_now(c->reg);
	sqlite3_stmt *st = reg_stmt(c, S_PARTY_INSERT);
	if (!st)
		return reg_step(c, st);
	sqlite3_bind_text(st, 1, p->id, -1, SQLITE_TRANSIENT);
	sqlite3_bind_text(st, 2, p->identity, -1, SQLITE_TRANSIENT);
	sqlite3_bind_text(st, 3, reg_party_role_name(p->role), -1, SQLITE_STATIC);
	bind_published(st, 4, p);
	sqlite3_bind_int64(st, 8, p->created_ms);
	if ((rc = reg_exec(c, st)) != 0)
		return rc;
	char key_hex[65];
	sodium_bin2hex(key_hex, sizeof key_hex, p->sealing_key, 32);
	return reg_audit_append(c, a->who, "party.create", "party", p->id,
				json_pack("{s:s, s:s, s:s, s:b, s:s}", "identity", p->identity, "role",
					  reg_party_role_name(p->role), "sealing_key", key_hex,
					  "pinned", p->has_fingerprint, "endpoint", p->endpoint));
}

int reg_party_create(struct reg *r, const struct reg_actor *who, const struct reg_party_spec *s,
		     struct reg_party *out)
{
	int rc = reg_write_args(r, s && out, who);
	if (rc != 0)
		return rc;
	if (!reg_text_ok(s->identity, REG_NAME_MAX, false))
		return reg_fail(ERR_INVALID, "identity",
				"identity must be the certificate CN: 1-%d bytes, no control characters",
				REG_NAME_MAX);
	if ((unsigned)s->role > REG_PARTY_ROLE_DEALER)
		return reg_fail(ERR_INVALID, "role", "role must be party or dealer");
	char *att = malloc(REG_ATTEST_MAX + 1);
	if (!att)
		return reg_fail(ERR_NOMEM, NULL, "out of memory");
	if ((rc = check_sealing_key(s->sealing_key)) == 0 && (rc = check_endpoint(s->endpoint)) == 0 &&
	    (rc = normalise_attestation(s->attestation, att)) == 0) {
		struct create_args a = {who, s, att, out};
		rc = reg_tx(r, REG_TX_WRITE, create_tx, &a);
	}
	free(att);
	return rc;
}

int reg_party_get(struct reg *r, const char *id, struct reg_party *out)
{
	return reg_get(r, &party_entity, id, out);
}

int reg_party_list(struct reg *r, int status_filter, int64_t after, size_t limit,
		   struct reg_party **items, size_t *n, int64_t *next)
{
	struct reg_list_query q = {
		.after = after,
		.limit = limit,
		.filter = {status_filter < 0 ? NULL
			   : reg_party_status_name((enum reg_party_status)status_filter)},
		.n_filter = 1,
		.bad_filter = status_filter > REG_PARTY_RETIRED ? "status" : NULL,
		.bad_detail = "unknown party status",
	};
	void *page;
	int rc = reg_list(r, &party_entity, &q, &page, n, next);
	*items = page;
	return rc;
}

struct update_args {
	const struct reg_actor *who;
	const char *id;
	const struct reg_party_update *u;
	const char *attestation; /* normalised, or NULL */
	struct reg_party *out;
};

static int update_tx(struct reg_conn *c, void *arg)
{
	struct update_args *a = arg;
	const struct reg_party_update *u = a->u;
	struct reg_party *p = a->out;
	int64_t rid;
	int rc = reg_find(c, &party_entity, a->id, p, &rid, NULL);
	if (rc != 0)
		return rc;
	json_t *changed = json_array();
	json_t *detail = json_pack("{s:o}", "changed", changed);
	if (!changed || !detail) {
		json_decref(detail);
		return reg_fail(ERR_NOMEM, NULL, "out of memory");
	}
	if (u->set_status && u->status != p->status) {
		json_object_set_new(detail, "status_from", json_string(reg_party_status_name(p->status)));
		json_object_set_new(detail, "status", json_string(reg_party_status_name(u->status)));
		json_array_append_new(changed, json_string("status"));
		p->status = u->status;
	}
	if (u->sealing_key && memcmp(u->sealing_key, p->sealing_key, 32) != 0) {
		char key_hex[65];
		sodium_bin2hex(key_hex, sizeof key_hex, u->sealing_key, 32);
		json_object_set_new(detail, "sealing_key", json_string(key_hex));
		json_array_append_new(changed, json_string("sealing_key"));
		memcpy(p->sealing_key, u->sealing_key, 32);
	}
	if (u->set_fingerprint) {
		bool had = p->has_fingerprint;
		if ((p->has_fingerprint = u->fingerprint != NULL))
			memcpy(p->fingerprint, u->fingerprint, 32);
		json_object_set_new(detail, "pinned", json_boolean(p->has_fingerprint));
		if (had || p->has_fingerprint)
			json_array_append_new(changed, json_string("cert_fingerprint"));
	}
	if (u->endpoint && strcmp(u->endpoint, p->endpoint) != 0) {
		snprintf(p->endpoint, sizeof p->endpoint, "%s", u->endpoint);
		json_object_set_new(detail, "endpoint", json_string(p->endpoint));
		json_array_append_new(changed, json_string("endpoint"));
	}
	if (a->attestation && strcmp(a->attestation, p->attestation) != 0) {
		snprintf(p->attestation, sizeof p->attestation, "%s", a->attestation);
		uint8_t h[32];
		char hex[65];
		crypto_hash_sha256(h, (const uint8_t *)p->attestation, strlen(p->attestation));
		sodium_bin2hex(hex, sizeof hex, h, sizeof h);
		json_object_set_new(detail, "attestation_sha256", json_string(hex));
		json_array_append_new(changed, json_string("attestation"));
	}
	if (json_array_size(changed) == 0) {
		json_decref(detail);
		return 0; /* nothing to write, nothing to audit */
	}
	p->updated_ms = reg_now(c->reg);
	sqlite3_stmt *st = reg_stmt(c, S_PARTY_UPDATE);
	if (!st) {
		json_decref(detail);
		return reg_step(c, st);
	}
	sqlite3_bind_int64(st, 1, rid);
	sqlite3_bind_text(st, 2, reg_party_status_name(p->status), -1, SQLITE_STATIC);
	bind_published(st, 3, p);
	sqlite3_bind_int64(st, 7, p->updated_ms);
	if ((rc = reg_exec(c, st)) != 0) {
		json_decref(detail);
		return rc;
	}
	return reg_audit_append(c, a->who, "party.update", "party", p->id, detail);
}

int reg_party_update(struct reg *r, const struct reg_actor *who, const char *id,
		     const struct reg_party_update *u, struct reg_party *out)
{
	int rc = reg_write_args(r, u && out, who);
	if (rc != 0)
		return rc;
	if (u->set_status && (unsigned)u->status > REG_PARTY_RETIRED)
		return reg_fail(ERR_INVALID, "status", "status must be active, suspended or retired");
	if (u->sealing_key && (rc = check_sealing_key(u->sealing_key)) != 0)
		return rc;
	if (u->endpoint && (rc = check_endpoint(u->endpoint)) != 0)
		return rc;
	char *att = NULL;
	if (u->attestation) {
		if (!(att = malloc(REG_ATTEST_MAX + 1)))
			return reg_fail(ERR_NOMEM, NULL, "out of memory");
		if ((rc = normalise_attestation(u->attestation, att)) != 0) {
			free(att);
			return rc;
		}
	}
	struct update_args a = {who, id, u, att, out};
	rc = reg_tx(r, REG_TX_WRITE, update_tx, &a);
	free(att);
	return rc;
}
