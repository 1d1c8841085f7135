/* registry audit: the append-only, hash-chained log every write adds to inside its own
 * transaction. Entry n's hash covers entry n-1's hash and every field of entry n, so
 * changing, removing or reordering any entry breaks every later link; exporting the
 * head (sequence number and hash) and keeping it elsewhere also catches a rewrite of
 * the whole chain or a truncation, which a chain alone cannot. Verification hashes the
 * bytes stored in the database, not a copy bounded by our structs. */
#include "registry/reg_int.h"

#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <sodium.h>

#include "err/err.h"

static const char audit_tag[] = "mimir-audit-v1";

enum { F_ACTOR, F_ACTION, F_OTYPE, F_OID, F_DETAIL, F_REQID, F_COUNT };

static void put_be64(uint8_t *p, uint64_t v)
{
	for (int i = 7; i >= 0; i--, v >>= 8)
		p[i] = (uint8_t)v;
}

static void hash_parts(const uint8_t prev[REG_HASH_LEN], int64_t seq, int64_t ts_ms,
		       const char *const f[F_COUNT], const size_t len[F_COUNT],
		       uint8_t out[REG_HASH_LEN])
{
	crypto_hash_sha256_state s;
	uint8_t b[8];
	crypto_hash_sha256_init(&s);
	crypto_hash_sha256_update(&s, (const uint8_t *)audit_tag, sizeof audit_tag - 1);
	crypto_hash_sha256_update(&s, prev, REG_HASH_LEN);
	put_be64(b, (uint64_t)seq);
	crypto_hash_sha256_update(&s, b, 8);
	put_be64(b, (uint64_t)ts_ms);
	crypto_hash_sha256_update(&s, b, 8);
	for (int i = 0; i < F_COUNT; i++) {
		uint32_t n = (uint32_t)len[i];
		uint8_t l[4] = {(uint8_t)(n >> 24), (uint8_t)(n >> 16), (uint8_t)(n >> 8), (uint8_t)n};
		crypto_hash_sha256_update(&s, l, 4);
		crypto_hash_sha256_update(&s, (const uint8_t *)f[i], n);
	}
	crypto_hash_sha256_final(&s, out);
}

void reg_audit_hash(const struct reg_audit_entry *e, uint8_t out[REG_HASH_LEN])
{
	const char *f[F_COUNT] = {e->actor, e->action, e->object_type, e->object_id, e->detail,
				  e->request_id};
	size_t len[F_COUNT];
	for (int i = 0; i < F_COUNT; i++)
		len[i] = strlen(f[i]);
	hash_parts(e->prev_hash, e->seq, e->ts_ms, f, len, out);
}

int reg_actor_check(const struct reg_actor *who)
{
	if (!who || !reg_text_ok(who->actor, REG_ACTOR_MAX, false))
		return reg_fail(ERR_INVALID, "actor", "the actor must be 1-%d printable bytes", REG_ACTOR_MAX);
	if (who->request_id && !reg_text_ok(who->request_id, REG_REQUEST_ID_MAX, true))
		return reg_fail(ERR_INVALID, "request_id", "the request id must be at most %d printable bytes",
				REG_REQUEST_ID_MAX);
	return 0;
}

int reg_write_args(const struct reg *r, bool args_ok, const struct reg_actor *who)
{
	reg_error_clear();
	if (!r || !args_ok)
		return reg_fail(ERR_INVALID, NULL, "missing argument");
	return reg_actor_check(who);
}

int reg_audit_append(struct reg_conn *c, const struct reg_actor *who, const char *action,
		     const char *object_type, const char *object_id, json_t *detail)
{
	int rc = reg_actor_check(who);
	char *text = NULL;
	struct reg_audit_entry *e = NULL;
	if (rc != 0)
		goto out;
	text = detail ? json_dumps(detail, JSON_COMPACT | JSON_SORT_KEYS) : strdup("{}");
	e = calloc(1, sizeof *e);
	if (!text || !e) {
		rc = reg_fail(ERR_NOMEM, NULL, "out of memory");
		goto out;
	}
	if (strlen(text) > REG_DETAIL_MAX || strlen(action) > REG_ACTION_MAX ||
	    strlen(object_type) >= sizeof e->object_type || strlen(object_id) >= sizeof e->object_id) {
		rc = reg_fail(ERR_INTERNAL, NULL, "audit entry for %s exceeds its bounds", action);
		goto out;
	}
	sqlite3_stmt *st = reg_stmt(c, S_AUDIT_LAST);
	if ((rc = reg_step(c, st)) == SQLITE_ROW) {
		e->seq = sqlite3_column_int64(st, 0) + 1;
		reg_col_blob(st, 1, e->prev_hash, REG_HASH_LEN);
		sqlite3_reset(st);
	} else if (rc == SQLITE_DONE) {
		e->seq = 1;
	} else {
		goto out;
	}
	e->ts_ms = reg_now(c->reg);
	snprintf(e->actor, sizeof e->actor, "%s", who->actor);
	snprintf(e->action, sizeof e->action, "%s", action);
	snprintf(e->object_type, sizeof e->object_type, "%s", object_type);
	snprintf(e->object_id, sizeof e->object_id, "%s", object_id);
	snprintf(e->detail, sizeof e->detail, "%s", text);
	snprintf(e->request_id, sizeof e->request_id, "%s", who->request_id ? who->request_id : "");
	reg_audit_hash(e, e->hash);
	st = reg_stmt(c, S_AUDIT_INSERT);
	if (!st) {
		rc = reg_step(c, st);
		goto out;
	}
	sqlite3_bind_int64(st, 1, e->seq);
	sqlite3_bind_int64(st, 2, e->ts_ms);
	sqlite3_bind_text(st, 3, e->actor, -1, SQLITE_STATIC);
	sqlite3_bind_text(st, 4, e->action, -1, SQLITE_STATIC);
	sqlite3_bind_text(st, 5, e->object_type, -1, SQLITE_STATIC);
	sqlite3_bind_text(st, 6, e->object_id, -1, SQLITE_STATIC);
	sqlite3_bind_text(st, 7, e->detail, -1, SQLITE_STATIC);
	sqlite3_bind_text(st, 8, e->request_id, -1, SQLITE_STATIC);
	sqlite3_bind_blob(st, 9, e->prev_hash, REG_HASH_LEN, SQLITE_STATIC);
	sqlite3_bind_blob(st, 10, e->hash, REG_HASH_LEN, SQLITE_STATIC);
	rc = reg_exec(c, st);
	sqlite3_clear_bindings(st); /* the bound buffers die with e */
	if (rc != 0)
		goto out;
	if (c->n_pending < REG_PENDING_MAX) {
		typeof(c->pending[0]) *p = &c->pending[c->n_pending++];
		p->seq = e->seq;
		snprintf(p->action, sizeof p->action, "%s", e->action);
		snprintf(p->object_id, sizeof p->object_id, "%s", e->object_id);
		sodium_bin2hex(p->hash, sizeof p->hash, e->hash, REG_HASH_LEN);
	} else {
		c->n_pending_dropped++;
	}
out:
	json_decref(detail);
	free(text);
	free(e);
	return rc;
}

/* The sequence number is the page cursor. */
static int read_entry(struct reg_conn *c, sqlite3_stmt *st, void *item, int64_t *seq, void *extra)
{
	(void)c;
	(void)extra;
	struct reg_audit_entry *e = item;
	e->seq = sqlite3_column_int64(st, 0);
	if (seq)
		*seq = e->seq;
	e->ts_ms = sqlite3_column_int64(st, 1);
	reg_col_text(st, 2, e->actor, sizeof e->actor);
	reg_col_text(st, 3, e->action, sizeof e->action);
	reg_col_text(st, 4, e->object_type, sizeof e->object_type);
	reg_col_text(st, 5, e->object_id, sizeof e->object_id);
	reg_col_text(st, 6, e->detail, sizeof e->detail);
	reg_col_text(st, 7, e->request_id, sizeof e->request_id);
	reg_col_blob(st, 8, e->prev_hash, REG_HASH_LEN);
	reg_col_blob(st, 9, e->hash, REG_HASH_LEN);
	return 0;
}

/* Entries have no public id: the log is only listed, never looked up one by one. */
static const struct reg_entity audit_entity = {
	.list = S_AUDIT_LIST, .read = read_entry, .size = sizeof(struct reg_audit_entry),
	.one_range_error = true,
};

int reg_audit_list(struct reg *r, int64_t after_seq, size_t limit, struct reg_audit_entry **items,
		   size_t *n, int64_t *next)
{
	struct reg_list_query q = {.after = after_seq, .limit = limit};
	void *page;
	int rc = reg_list(r, &audit_entity, &q, &page, n, next);
	*items = page;
	return rc;
}

static int head_read(struct reg_conn *c, struct reg_audit_head *h)
{
	memset(h, 0, sizeof *h);
	sqlite3_stmt *st = reg_stmt(c, S_AUDIT_LAST);
	int rc = reg_step(c, st);
	if (rc == SQLITE_ROW) {
		h->seq = sqlite3_column_int64(st, 0);
		reg_col_blob(st, 1, h->hash, REG_HASH_LEN);
		h->ts_ms = sqlite3_column_int64(st, 2);
		sqlite3_reset(st);
		return 0;
	}
	return rc == SQLITE_DONE ? 0 : rc;
}

static int head_tx(struct reg_conn *c, void *arg)
{
	return head_read(c, arg);
}

int reg_audit_head(struct reg *r, struct reg_audit_head *out)
{
	return reg_tx(r, REG_TX_READ, head_tx, out);
}

struct verify_args {
	const struct reg_audit_head *anchor;
	struct reg_audit_report *rep;
};

/* Records the first failure; returns false so callers can write chain_ok = bad(...). */
static bool __attribute__((format(printf, 3, 4)))
bad(struct reg_audit_report *rep, int64_t seq, const char *fmt, ...)
{
	if (rep->first_bad_seq == 0) {
		rep->first_bad_seq = seq;
		va_list ap;
		va_start(ap, fmt);
		vsnprintf(rep->reason, sizeof rep->reason, fmt, ap);
		va_end(ap);
	}
	return false;
}

static int trigger_ok(struct reg_conn *c, const char *name, const char *expect, bool *ok)
{
	sqlite3_stmt *st = reg_stmt(c, S_AUDIT_TRIGGER);
	if (!st)
		return reg_step(c, st);
	sqlite3_bind_text(st, 1, name, -1, SQLITE_STATIC);
	int rc = reg_step(c, st);
	if (rc == SQLITE_ROW) {
		const char *sql = (const char *)sqlite3_column_text(st, 0);
		*ok = *ok && sql && strcmp(sql, expect) == 0;
		sqlite3_reset(st);
		return 0;
	}
	if (rc == SQLITE_DONE) {
		*ok = false;
		return 0;
	}
	return rc;
}

static int verify_tx(struct reg_conn *c, void *arg)
{
	struct verify_args *a = arg;
	struct reg_audit_report *rep = a->rep;
	memset(rep, 0, sizeof *rep);
	rep->triggers_ok = true;
	int rc;
	if ((rc = trigger_ok(c, "audit_no_update", REG_AUDIT_TRIGGER_UPDATE, &rep->triggers_ok)) != 0 ||
	    (rc = trigger_ok(c, "audit_no_delete", REG_AUDIT_TRIGGER_DELETE, &rep->triggers_ok)) != 0)
		return rc;
	sqlite3_stmt *st = reg_stmt(c, S_AUDIT_ALL);
	if (!st)
		return reg_step(c, st);
	uint8_t prev[REG_HASH_LEN] = {0}, h[REG_HASH_LEN], stored[REG_HASH_LEN];
	int64_t expect_seq = 1;
	bool chain_ok = true, anchor_seen = false;
	rep->anchor_ok = true;
	while (chain_ok && (rc = reg_step(c, st)) == SQLITE_ROW) {
		int64_t seq = sqlite3_column_int64(st, 0), ts = sqlite3_column_int64(st, 1);
		const char *f[F_COUNT];
		size_t len[F_COUNT];
		for (int i = 0; i < F_COUNT; i++) {
			f[i] = (const char *)sqlite3_column_text(st, 2 + i);
			len[i] = (size_t)sqlite3_column_bytes(st, 2 + i);
			if (!f[i])
				f[i] = "";
		}
		uint8_t stored_prev[REG_HASH_LEN];
		bool blobs = reg_col_blob(st, 8, stored_prev, REG_HASH_LEN) &&
			     reg_col_blob(st, 9, stored, REG_HASH_LEN);
		rep->entries++;
		if (seq != expect_seq)
			chain_ok = bad(rep, expect_seq, "entry %lld is missing (the next one is %lld)",
				       (long long)expect_seq, (long long)seq);
		else if (!blobs || sodium_memcmp(stored_prev, prev, REG_HASH_LEN) != 0)
			chain_ok = bad(rep, seq, "entry %lld does not link to entry %lld", (long long)seq,
				       (long long)seq - 1);
		else {
			hash_parts(prev, seq, ts, f, len, h);
			if (sodium_memcmp(h, stored, REG_HASH_LEN) != 0)
				chain_ok = bad(rep, seq, "entry %lld was altered after it was written",
					       (long long)seq);
		}
		if (!chain_ok)
			break;
		if (a->anchor && a->anchor->seq == seq) {
			anchor_seen = true;
			rep->anchor_ok = sodium_memcmp(stored, a->anchor->hash, REG_HASH_LEN) == 0;
		}
		memcpy(prev, stored, REG_HASH_LEN);
		rep->head.seq = seq;
		rep->head.ts_ms = ts;
		memcpy(rep->head.hash, stored, REG_HASH_LEN);
		expect_seq++;
	}
	sqlite3_reset(st);
	if (rc != SQLITE_ROW && rc != SQLITE_DONE)
		return rc;
	if (chain_ok && a->anchor && a->anchor->seq > 0 && !anchor_seen) {
		rep->anchor_ok = false;
		if (!rep->reason[0])
			snprintf(rep->reason, sizeof rep->reason,
				 "the log ends at entry %lld, before the anchor's entry %lld: it was truncated",
				 (long long)rep->head.seq, (long long)a->anchor->seq);
	} else if (chain_ok && !rep->anchor_ok && !rep->reason[0]) {
		snprintf(rep->reason, sizeof rep->reason,
			 "entry %lld no longer has the anchor's hash: the chain was rewritten",
			 (long long)a->anchor->seq);
	}
	if (chain_ok && !rep->triggers_ok && !rep->reason[0])
		snprintf(rep->reason, sizeof rep->reason,
			 "the append-only triggers of the audit table are missing or altered");
	rep->ok = chain_ok && rep->anchor_ok && rep->triggers_ok;
	return 0;
}

int reg_audit_verify(struct reg *r, const struct reg_audit_head *anchor, struct reg_audit_report *rep)
{
	if (!r || !rep)
		return reg_fail(ERR_INVALID, NULL, "no registry or report");
	struct verify_args a = {.anchor = anchor, .rep = rep};
	return reg_tx(r, REG_TX_READ, verify_tx, &a);
}
