/* registry keys: API keys for clients of the gateway. A key is shown once, when it is
 * created; the database keeps only BLAKE2b(key = server secret, domain tag || key
 * text), so a copy of the database alone neither reveals keys nor lets anyone check
 * guesses offline. The key text carries its id, so verification is one lookup and one
 * constant-time comparison. A key is scoped to one or more sessions, may expire, and
 * once revoked stays revoked (the database refuses to undo it). */
#include "registry/reg_int.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <sodium.h>

#include "err/err.h"

#define KEY_ID_HEX 16
#define KEY_SECRET_B64 43
#define KEY_PREFIX_LEN (sizeof REG_KEY_PREFIX - 1)

_Static_assert(KEY_PREFIX_LEN + KEY_ID_HEX + 1 + KEY_SECRET_B64 == REG_KEY_TEXT_LEN,
	       "the key text layout and its length disagree");

static void key_hash(const struct reg *r, const char *text, uint8_t out[REG_HASH_LEN])
{
	static const char tag[] = "mimir-api-key-v1";
	crypto_generichash_state st;
	crypto_generichash_init(&st, r->secret, REG_SECRET_LEN, REG_HASH_LEN);
	crypto_generichash_update(&st, (const uint8_t *)tag, sizeof tag);
	crypto_generichash_update(&st, (const uint8_t *)text, strlen(text));
	crypto_generichash_final(&st, out, REG_HASH_LEN);
	sodium_memzero(&st, sizeof st);
}

static bool b64url_char(char ch)
{
	return (ch >= 'A' && ch <= 'Z') || (ch >= 'a' && ch <= 'z') || (ch >= '0' && ch <= '9') ||
	       ch == '-' || ch == '_';
}

/* Whether text has the layout of a key; fills the id it names. */
static bool key_parse(const char *text, char id[REG_ID_SIZE])
{
	if (!text || strnlen(text, REG_KEY_TEXT_LEN + 1) != REG_KEY_TEXT_LEN ||
	    strncmp(text, REG_KEY_PREFIX, KEY_PREFIX_LEN) != 0 ||
	    text[KEY_PREFIX_LEN + KEY_ID_HEX] != '_')
		return false;
	for (size_t i = KEY_PREFIX_LEN + KEY_ID_HEX + 1; i < REG_KEY_TEXT_LEN; i++)
		if (!b64url_char(text[i]))
			return false;
	snprintf(id, REG_ID_SIZE, "key_%.*s", KEY_ID_HEX, text + KEY_PREFIX_LEN);
	return reg_id_ok(id, "key_");
}

/* extra: when set, REG_HASH_LEN bytes that receive the stored hash. */
static int read_key(struct reg_conn *c, sqlite3_stmt *st, void *item, int64_t *rid, void *extra)
{
	struct reg_key *k = item;
	uint8_t *hash = extra;
	memset(k, 0, sizeof *k);
	int64_t r = sqlite3_column_int64(st, 0);
	if (rid)
		*rid = r;
	reg_col_text(st, 1, k->id, sizeof k->id);
	reg_col_text(st, 2, k->name, sizeof k->name);
	if (hash && !reg_col_blob(st, 3, hash, REG_HASH_LEN))
		return reg_fail(ERR_DB, NULL, "key %s has no valid hash", k->id);
	k->created_ms = sqlite3_column_int64(st, 4);
	k->expires_ms = sqlite3_column_type(st, 5) == SQLITE_NULL ? 0 : sqlite3_column_int64(st, 5);
	k->revoked_ms = sqlite3_column_type(st, 6) == SQLITE_NULL ? 0 : sqlite3_column_int64(st, 6);
	sqlite3_stmt *sc = reg_stmt(c, S_KEY_SCOPES);
	if (!sc)
		return reg_step(c, sc);
	sqlite3_bind_int64(sc, 1, r);
	int rc;
	while ((rc = reg_step(c, sc)) == SQLITE_ROW && k->n_sessions < REG_KEY_MAX_SESSIONS)
		reg_col_text(sc, 0, k->sessions[k->n_sessions++], REG_ID_SIZE);
	sqlite3_reset(sc);
	return rc == SQLITE_ROW || rc == SQLITE_DONE ? 0 : rc;
}

static const struct reg_entity key_entity = {
	.prefix = "key_", .not_found = "no API key with this id",
	.by_id = S_KEY_BY_ID, .list = S_KEY_LIST,
	.read = read_key, .size = sizeof(struct reg_key),
};

/* ---- create ---- */

struct create_args {
	const struct reg_actor *who;
	const struct reg_key_spec *s;
	struct reg_key *out;
	char *text;
};

static int create_tx(struct reg_conn *c, void *arg)
{
	struct create_args *a = arg;
	const struct reg_key_spec *s = a->s;
	struct reg_key *k = a->out;
	memset(k, 0, sizeof *k);
	int64_t session_rids[REG_KEY_MAX_SESSIONS];
	struct reg_session *ses = malloc(sizeof *ses);
	if (!ses)
		return reg_fail(ERR_NOMEM, NULL, "out of memory");
	int rc = 0;
	for (size_t i = 0; rc == 0 && i < s->n_sessions; i++) {
		char field[32];
		snprintf(field, sizeof field, "sessions[%zu]", i);
		rc = reg_session_rid(c, s->session_ids[i], &session_rids[i], ses);
		if (rc == ERR_NOT_FOUND)
			rc = reg_fail(ERR_INVALID, field, "%s: no session with this id", field);
		else if (rc == 0 && reg_state_terminal(ses->state))
			rc = reg_fail(ERR_CONFLICT, field, "%s is %s", field, reg_state_name(ses->state));
		if (rc == 0)
			snprintf(k->sessions[k->n_sessions++], REG_ID_SIZE, "%s", ses->id);
	}
	free(ses);
	if (rc != 0)
		return rc;
	reg_new_id(k->id, "key_");
	snprintf(k->name, sizeof k->name, "%s", s->name ? s->name : "");
	k->created_ms = reg_now(c->reg);
	k->expires_ms = s->ttl_s ? k->created_ms + s->ttl_s * 1000 : 0;
	uint8_t secret[32], hash[REG_HASH_LEN];
	char b64[sodium_base64_ENCODED_LEN(32, sodium_base64_VARIANT_URLSAFE_NO_PADDING)];
	randombytes_buf(secret, sizeof secret);
	sodium_bin2base64(b64, sizeof b64, secret, sizeof secret, sodium_base64_VARIANT_URLSAFE_NO_PADDING);
	snprintf(a->text, REG_KEY_TEXT_SIZE, "%s%s_%s", REG_KEY_PREFIX, k->id + 4, b64);
	sodium_memzero(secret, sizeof secret);
	sodium_memzero(b64, sizeof b64);
	key_hash(c->reg, a->text, hash);
	sqlite3_stmt *st = reg_stmt(c, S_KEY_INSERT);
	if (!st)
		return reg_step(c, st);
	sqlite3_bind_text(st, 1, k->id, -1, SQLITE_TRANSIENT);
	sqlite3_bind_text(st, 2, k->name, -1, SQLITE_TRANSIENT);
	sqlite3_bind_blob(st, 3, hash, REG_HASH_LEN, SQLITE_TRANSIENT);
	sqlite3_bind_int64(st, 4, k->created_ms);
	if (k->expires_ms)
		sqlite3_bind_int64(st, 5, k->expires_ms);
	else
		sqlite3_bind_null(st, 5);
	if ((rc = reg_exec(c, st)) != 0)
		return rc;
	int64_t rid = sqlite3_last_insert_rowid(c->db);
	json_t *ids = json_array();
	for (size_t i = 0; i < k->n_sessions; i++) {
		if (!(st = reg_stmt(c, S_KEY_SCOPE_INSERT))) {
			json_decref(ids);
			return reg_step(c, st);
		}
		sqlite3_bind_int64(st, 1, rid);
		sqlite3_bind_int64(st, 2, session_rids[i]);
		if ((rc = reg_exec(c, st)) != 0) {
			json_decref(ids);
			return rc;
		}
		json_array_append_new(ids, json_string(k->sessions[i]));
	}
	return reg_audit_append(c, a->who, "key.create", "key", k->id,
				json_pack("{s:s, s:o, s:I}", "name", k->name, "sessions", ids,
					  "expires_ms", (json_int_t)k->expires_ms));
}

int reg_key_create(struct reg *r, const struct reg_actor *who, const struct reg_key_spec *s,
		   struct reg_key *out, char text[REG_KEY_TEXT_SIZE])
{
	int rc = reg_write_args(r, s && out && text, who);
	if (rc != 0)
		return rc;
	if (s->name && !reg_text_ok(s->name, REG_NAME_MAX, true))
		return reg_fail(ERR_INVALID, "name", "name must be at most %d bytes without control "
				"characters", REG_NAME_MAX);
	if (s->n_sessions < 1 || s->n_sessions > REG_KEY_MAX_SESSIONS || !s->session_ids)
		return reg_fail(ERR_RANGE, "sessions", "a key is scoped to 1-%d sessions",
				REG_KEY_MAX_SESSIONS);
	if (s->ttl_s < 0 || s->ttl_s > REG_TTL_MAX_S)
		return reg_fail(ERR_RANGE, "ttl_s", "ttl_s must be between 0 (no expiry) and %lld",
				REG_TTL_MAX_S);
	for (size_t i = 0; i < s->n_sessions; i++) {
		char field[32];
		snprintf(field, sizeof field, "sessions[%zu]", i);
		if (!reg_id_ok(s->session_ids[i], "ses_"))
			return reg_fail(ERR_INVALID, field, "%s: no session with this id", field);
		for (size_t j = 0; j < i; j++)
			if (strcmp(s->session_ids[i], s->session_ids[j]) == 0)
				return reg_fail(ERR_INVALID, field, "%s repeats sessions[%zu]", field, j);
	}
	struct create_args a = {who, s, out, text};
	rc = reg_tx(r, REG_TX_WRITE, create_tx, &a);
	if (rc != 0)
		sodium_memzero(text, REG_KEY_TEXT_SIZE);
	return rc;
}

/* ---- reads ---- */

int reg_key_get(struct reg *r, const char *id, struct reg_key *out)
{
	return reg_get(r, &key_entity, id, out);
}

int reg_key_list(struct reg *r, const char *session_id, int64_t after, size_t limit,
		 struct reg_key **items, size_t *n, int64_t *next)
{
	struct reg_list_query q = {.after = after, .limit = limit, .filter = {session_id}, .n_filter = 1};
	void *page;
	int rc = reg_list(r, &key_entity, &q, &page, n, next);
	*items = page;
	return rc;
}

/* ---- revoke ---- */

struct revoke_args {
	const struct reg_actor *who;
	const char *id;
	struct reg_key *out;
};

static int revoke_tx(struct reg_conn *c, void *arg)
{
	struct revoke_args *a = arg;
	int64_t rid;
	int rc = reg_find(c, &key_entity, a->id, a->out, &rid, NULL);
	if (rc != 0 || a->out->revoked_ms)
		return rc;
	a->out->revoked_ms = reg_now(c->reg);
	sqlite3_stmt *st = reg_stmt(c, S_KEY_REVOKE);
	if (!st)
		return reg_step(c, st);
	sqlite3_bind_int64(st, 1, rid);
	sqlite3_bind_int64(st, 2, a->out->revoked_ms);
	if ((rc = reg_exec(c, st)) != 0)
		return rc;
	return reg_audit_append(c, a->who, "key.revoke", "key", a->out->id,
				json_pack("{s:s}", "name", a->out->name));
}

int reg_key_revoke(struct reg *r, const struct reg_actor *who, const char *id,
		   struct reg_key *out)
{
	int rc = reg_write_args(r, out != NULL, who);
	if (rc != 0)
		return rc;
	struct revoke_args a = {who, id, out};
	return reg_tx(r, REG_TX_WRITE, revoke_tx, &a);
}

/* ---- verify ---- */

struct verify_args {
	const char *id;
	const uint8_t *hash;
	const char *session_id;
	enum reg_key_verdict verdict;
	bool matched;
};

static int verify_tx(struct reg_conn *c, void *arg)
{
	struct verify_args *a = arg;
	a->matched = false;
	uint8_t stored[REG_HASH_LEN];
	int64_t rid;
	struct reg_key k;
	int rc = reg_find(c, &key_entity, a->id, &k, &rid, stored);
	if (rc == ERR_NOT_FOUND) {
		reg_error_clear();
		a->verdict = REG_KEY_UNKNOWN;
		return 0;
	}
	if (rc != 0)
		return rc;
	if (sodium_memcmp(stored, a->hash, REG_HASH_LEN) != 0) {
		a->verdict = REG_KEY_UNKNOWN;
		return 0;
	}
	a->matched = true;
	if (k.revoked_ms) {
		a->verdict = REG_KEY_REVOKED;
		return 0;
	}
	if (k.expires_ms && k.expires_ms <= reg_now(c->reg)) {
		a->verdict = REG_KEY_EXPIRED;
		return 0;
	}
	a->verdict = REG_KEY_VALID;
	if (!a->session_id)
		return 0;
	sqlite3_stmt *st = reg_stmt(c, S_KEY_SCOPE_HAS);
	if (!st)
		return reg_step(c, st);
	sqlite3_bind_int64(st, 1, rid);
	sqlite3_bind_text(st, 2, a->session_id, -1, SQLITE_TRANSIENT);
	rc = reg_step(c, st);
	sqlite3_reset(st);
	if (rc == SQLITE_DONE)
		a->verdict = REG_KEY_WRONG_SESSION;
	return rc == SQLITE_ROW || rc == SQLITE_DONE ? 0 : rc;
}

int reg_key_verify(struct reg *r, const char *text, const char *session_id,
		   enum reg_key_verdict *verdict, char key_id[REG_ID_SIZE])
{
	reg_error_clear();
	if (!r || !verdict || !key_id)
		return reg_fail(ERR_INVALID, NULL, "missing argument");
	*verdict = REG_KEY_MALFORMED;
	key_id[0] = '\0';
	char id[REG_ID_SIZE];
	if (!key_parse(text, id))
		return 0;
	uint8_t hash[REG_HASH_LEN];
	key_hash(r, text, hash);
	struct verify_args a = {.id = id, .hash = hash, .session_id = session_id};
	int rc = reg_tx(r, REG_TX_READ, verify_tx, &a);
	sodium_memzero(hash, sizeof hash);
	if (rc != 0)
		return rc;
	*verdict = a.verdict;
	if (a.matched)
		snprintf(key_id, REG_ID_SIZE, "%s", id);
	return 0;
}

const char *reg_key_verdict_name(enum reg_key_verdict v)
{
	static const char *const names[] = {"valid", "malformed", "unknown", "revoked", "expired",
					    "wrong-session"};
	return (unsigned)v < sizeof names / sizeof names[0] ? names[v] : "unknown";
}
