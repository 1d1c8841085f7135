/* registry sessions: one inference service agreement between a model and its parties,
 * with the parameters every party must share (fixed-point bits, context, padding
 * bucket) and a state machine:
 *
 *   created --(all parties report ready)--> ready --(first use)--> active
 *      \________________________\______________________\____> closed | failed
 *
 * The edges are checked here, with a precise error, and again by a trigger in the
 * database. A party reporting a failed initialisation fails the session; expiry
 * closes it (reg_session_expire). Every change of state is one audit entry
 * "session.transition" carrying from, to and the reason. */
#include "registry/reg_int.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <sodium.h>

#include "err/err.h"

bool reg_state_legal(enum reg_state from, enum reg_state to)
{
	switch (from) {
	case REG_STATE_CREATED:
		return to == REG_STATE_READY || to == REG_STATE_CLOSED || to == REG_STATE_FAILED;
	case REG_STATE_READY:
		return to == REG_STATE_ACTIVE || to == REG_STATE_CLOSED || to == REG_STATE_FAILED;
	case REG_STATE_ACTIVE:
		return to == REG_STATE_CLOSED || to == REG_STATE_FAILED;
	default:
		return false;
	}
}

bool reg_state_terminal(enum reg_state s)
{
	return s == REG_STATE_CLOSED || s == REG_STATE_FAILED;
}

/* extra: when set, REG_MAX_PARTIES entries that receive the parties' rids. */
static int read_session(struct reg_conn *c, sqlite3_stmt *st, void *item, int64_t *rid, void *extra)
{
	struct reg_session *s = item;
	int64_t *party_rids = extra;
	memset(s, 0, sizeof *s);
	int64_t r = sqlite3_column_int64(st, 0);
	if (rid)
		*rid = r;
	char state[16];
	reg_col_text(st, 1, s->id, sizeof s->id);
	reg_col_text(st, 2, s->model_id, sizeof s->model_id);
	reg_col_text(st, 3, state, sizeof state);
	if (reg_state_parse(state, &s->state) != 0)
		return reg_fail(ERR_DB, NULL, "session %s has an unknown state", s->id);
	s->fixed_point_bits = (uint32_t)sqlite3_column_int64(st, 4);
	s->max_context = (uint32_t)sqlite3_column_int64(st, 5);
	s->pad_bucket = (uint32_t)sqlite3_column_int64(st, 6);
	reg_col_text(st, 7, s->reason, sizeof s->reason);
	s->created_ms = sqlite3_column_int64(st, 8);
	s->updated_ms = sqlite3_column_int64(st, 9);
	s->expires_ms = sqlite3_column_int64(st, 10);
	sqlite3_stmt *ps = reg_stmt(c, S_SESSION_PARTIES);
	if (!ps)
		return reg_step(c, ps);
	sqlite3_bind_int64(ps, 1, r);
	int rc;
	while ((rc = reg_step(c, ps)) == SQLITE_ROW && s->n_parties < REG_MAX_PARTIES) {
		struct reg_session_party *p = &s->parties[s->n_parties];
		reg_col_text(ps, 0, p->party_id, sizeof p->party_id);
		p->init_ms = sqlite3_column_type(ps, 1) == SQLITE_NULL ? 0 : sqlite3_column_int64(ps, 1);
		if (party_rids)
			party_rids[s->n_parties] = sqlite3_column_int64(ps, 2);
		s->n_parties++;
	}
	sqlite3_reset(ps);
	return rc == SQLITE_ROW || rc == SQLITE_DONE ? 0 : rc;
}

static const struct reg_entity session_entity = {
	.prefix = "ses_", .not_found = "no session with this id",
	.by_id = S_SESSION_BY_ID, .list = S_SESSION_LIST,
	.read = read_session, .size = sizeof(struct reg_session),
};

int reg_session_rid(struct reg_conn *c, const char *id, int64_t *rid, struct reg_session *out)
{
	return reg_find(c, &session_entity, id, out, rid, NULL);
}

static int set_state(struct reg_conn *c, const struct reg_actor *who, int64_t rid,
		     struct reg_session *s, enum reg_state to, const char *reason, json_t *extra)
{
	enum reg_state from = s->state;
	s->state = to;
	snprintf(s->reason, sizeof s->reason, "%s", reason ? reason : "");
	s->updated_ms = reg_now(c->reg);
	sqlite3_stmt *st = reg_stmt(c, S_SESSION_SET_STATE);
	if (!st) {
		json_decref(extra);
		return reg_step(c, st);
	}
	sqlite3_bind_int64(st, 1, rid);
	sqlite3_bind_text(st, 2, reg_state_name(to), -1, SQLITE_STATIC);
	sqlite3_bind_text(st, 3, s->reason, -1, SQLITE_TRANSIENT);
	sqlite3_bind_int64(st, 4, s->updated_ms);
	int rc = reg_exec(c, st);
	if (rc != 0) {
		json_decref(extra);
		return rc;
	}
	json_t *d = json_pack("{s:s, s:s, s:s}", "from", reg_state_name(from), "to", reg_state_name(to),
			      "reason", s->reason);
	if (d && extra)
		json_object_update(d, extra);
	json_decref(extra);
	return reg_audit_append(c, who, "session.transition", "session", s->id, d);
}

/* ---- create ---- */

struct create_args {
	const struct reg_actor *who;
	const struct reg_session_spec *s;
	struct reg_session *out;
};

static int resolve_parties(struct reg_conn *c, const struct reg_session_spec *spec, size_t need,
			   struct reg_session *s, int64_t *rids)
{
	int rc;
	if (spec->n_parties == 0) {
		sqlite3_stmt *st = reg_stmt(c, S_PARTY_ALLOCATE);
		if (!st)
			return reg_step(c, st);
		sqlite3_bind_int64(st, 1, (int64_t)need);
		while ((rc = reg_step(c, st)) == SQLITE_ROW && s->n_parties < need) {
			reg_col_text(st, 0, s->parties[s->n_parties].party_id, REG_ID_SIZE);
			rids[s->n_parties++] = sqlite3_column_int64(st, 1);
		}
		sqlite3_reset(st);
		if (rc != SQLITE_ROW && rc != SQLITE_DONE)
			return rc;
		if (s->n_parties < need)
			return reg_fail(ERR_CONFLICT, "parties",
					"the model has %zu shares and needs as many active parties; "
					"only %zu are registered", need, s->n_parties);
		return 0;
	}
	if (spec->n_parties != need)
		return reg_fail(ERR_INVALID, "parties",
				"the model has %zu shares: a session needs exactly %zu parties, in share "
				"order", need, need);
	for (size_t i = 0; i < spec->n_parties; i++) {
		char field[32];
		snprintf(field, sizeof field, "parties[%zu]", i);
		struct reg_party p;
		sqlite3_stmt *st = reg_stmt(c, S_PARTY_BY_ID);
		if (!st)
			return reg_step(c, st);
		sqlite3_bind_text(st, 1, spec->party_ids[i], -1, SQLITE_TRANSIENT);
		if ((rc = reg_step(c, st)) == SQLITE_DONE)
			return reg_fail(ERR_INVALID, field, "%s: no party with this id", field);
		if (rc != SQLITE_ROW)
			return rc;
		reg_party_read(c, st, &p, &rids[i], NULL);
		sqlite3_reset(st);
		if (p.role != REG_PARTY_ROLE_PARTY)
			return reg_fail(ERR_INVALID, field, "%s is a %s, not a party", field,
					reg_party_role_name(p.role));
		if (p.status != REG_PARTY_ACTIVE)
			return reg_fail(ERR_CONFLICT, field, "%s is %s", field, reg_party_status_name(p.status));
		snprintf(s->parties[i].party_id, REG_ID_SIZE, "%s", p.id);
		s->n_parties++;
	}
	return 0;
}

static int create_tx(struct reg_conn *c, void *arg)
{
	struct create_args *a = arg;
	const struct reg_session_spec *spec = a->s;
	struct reg_session *s = a->out;
	memset(s, 0, sizeof *s);
	sqlite3_stmt *st = reg_stmt(c, S_MODEL_BY_ID);
	if (!st)
		return reg_step(c, st);
	sqlite3_bind_text(st, 1, spec->model_id, -1, SQLITE_TRANSIENT);
	int rc = reg_step(c, st);
	if (rc == SQLITE_DONE)
		return reg_fail(ERR_INVALID, "model", "no model with this id");
	if (rc != SQLITE_ROW)
		return rc;
	int64_t model_rid = sqlite3_column_int64(st, 0);
	uint32_t seq_len = (uint32_t)sqlite3_column_int64(st, 10);
	size_t n_shares = (size_t)sqlite3_column_int64(st, 11);
	sqlite3_reset(st);
	s->max_context = spec->max_context ? spec->max_context : seq_len;
	if (s->max_context > seq_len)
		return reg_fail(ERR_RANGE, "max_context",
				"max_context must be at most the model's seq_len (%u)", seq_len);
	s->pad_bucket = spec->pad_bucket ? spec->pad_bucket : (s->max_context < 16 ? s->max_context : 16);
	if (s->pad_bucket > s->max_context)
		return reg_fail(ERR_RANGE, "pad_bucket", "pad_bucket must be at most max_context (%u)",
				s->max_context);
	s->fixed_point_bits = spec->fixed_point_bits ? spec->fixed_point_bits : 16;
	if (n_shares < 2 || n_shares > REG_MAX_PARTIES)
		return reg_fail(ERR_DB, NULL, "the model has an impossible share count");
	int64_t rids[REG_MAX_PARTIES];
	if ((rc = resolve_parties(c, spec, n_shares, s, rids)) != 0)
		return rc;
	reg_new_id(s->id, "ses_");
	snprintf(s->model_id, sizeof s->model_id, "%s", spec->model_id);
	s->state = REG_STATE_CREATED;
	s->created_ms = s->updated_ms = reg_now(c->reg);
	s->expires_ms = s->created_ms + spec->ttl_s * 1000;
	if (!(st = reg_stmt(c, S_SESSION_INSERT)))
		return reg_step(c, st);
	sqlite3_bind_text(st, 1, s->id, -1, SQLITE_TRANSIENT);
	sqlite3_bind_int64(st, 2, model_rid);
	sqlite3_bind_int64(st, 3, s->fixed_point_bits);
	sqlite3_bind_int64(st, 4, s->max_context);
	sqlite3_bind_int64(st, 5, s->pad_bucket);
	sqlite3_bind_int64(st, 6, s->created_ms);
	sqlite3_bind_int64(st, 7, s->expires_ms);
	if ((rc = reg_exec(c, st)) != 0)
		return rc;
	int64_t rid = sqlite3_last_insert_rowid(c->db);
	json_t *ids = json_array();
	for (size_t i = 0; i < s->n_parties; i++) {
		if (!(st = reg_stmt(c, S_SESSION_PARTY_INSERT))) {
			json_decref(ids);
			return reg_step(c, st);
		}
		sqlite3_bind_int64(st, 1, rid);
		sqlite3_bind_int64(st, 2, (int64_t)i);
		sqlite3_bind_int64(st, 3, rids[i]);
		if ((rc = reg_exec(c, st)) != 0) {
			json_decref(ids);
			return rc;
		}
		json_array_append_new(ids, json_string(s->parties[i].party_id));
	}
	return reg_audit_append(c, a->who, "session.create", "session", s->id,
				json_pack("{s:s, s:o, s:i, s:i, s:i, s:I}", "model", s->model_id,
					  "parties", ids, "fixed_point_bits", (int)s->fixed_point_bits,
					  "max_context", (int)s->max_context, "pad_bucket",
					  (int)s->pad_bucket, "expires_ms", (json_int_t)s->expires_ms));
}

int reg_session_create(struct reg *r, const struct reg_actor *who,
		       const struct reg_session_spec *s, struct reg_session *out)
{
	int rc = reg_write_args(r, s && out, who);
	if (rc != 0)
		return rc;
	if (!reg_id_ok(s->model_id, "mdl_"))
		return reg_fail(ERR_INVALID, "model", "no model with this id");
	if (s->fixed_point_bits && (s->fixed_point_bits < 8 || s->fixed_point_bits > 32))
		return reg_fail(ERR_RANGE, "fixed_point_bits", "fixed_point_bits must be between 8 and 32");
	if (s->ttl_s < 1 || s->ttl_s > REG_TTL_MAX_S)
		return reg_fail(ERR_RANGE, "ttl_s", "ttl_s must be between 1 and %lld", REG_TTL_MAX_S);
	if (s->n_parties > REG_MAX_PARTIES || (s->n_parties && !s->party_ids))
		return reg_fail(ERR_RANGE, "parties", "at most %d parties", REG_MAX_PARTIES);
	for (size_t i = 0; i < s->n_parties; i++) {
		char field[32];
		snprintf(field, sizeof field, "parties[%zu]", i);
		if (!reg_id_ok(s->party_ids[i], "pty_"))
			return reg_fail(ERR_INVALID, field, "%s: no party with this id", field);
		for (size_t j = 0; j < i; j++)
			if (strcmp(s->party_ids[i], s->party_ids[j]) == 0)
				return reg_fail(ERR_INVALID, field, "%s repeats parties[%zu]", field, j);
	}
	struct create_args a = {who, s, out};
	return reg_tx(r, REG_TX_WRITE, create_tx, &a);
}

/* ---- reads ---- */

struct detail_args {
	const char *id;
	struct reg_session *out;
	struct reg_party *parties;
};

static int detail_tx(struct reg_conn *c, void *arg)
{
	struct detail_args *a = arg;
	int64_t rids[REG_MAX_PARTIES];
	int rc = reg_find(c, &session_entity, a->id, a->out, NULL, rids);
	for (size_t i = 0; rc == 0 && i < a->out->n_parties; i++) {
		sqlite3_stmt *st = reg_stmt(c, S_PARTY_BY_RID);
		if (!st)
			return reg_step(c, st);
		sqlite3_bind_int64(st, 1, rids[i]);
		if ((rc = reg_step(c, st)) == SQLITE_ROW) {
			reg_party_read(c, st, &a->parties[i], NULL, NULL);
			sqlite3_reset(st);
			rc = 0;
		} else if (rc == SQLITE_DONE) {
			rc = reg_fail(ERR_DB, NULL, "session %s refers to a missing party", a->id);
		}
	}
	return rc;
}

int reg_session_get(struct reg *r, const char *id, struct reg_session *out)
{
	return reg_get(r, &session_entity, id, out);
}

int reg_session_get_detail(struct reg *r, const char *id, struct reg_session *out,
			   struct reg_party *parties)
{
	reg_error_clear();
	if (!r || !out || !parties)
		return reg_fail(ERR_INVALID, NULL, "missing argument");
	struct detail_args a = {id, out, parties};
	return reg_tx(r, REG_TX_READ, detail_tx, &a);
}

int reg_session_list(struct reg *r, int state, const char *model_id, int64_t after,
		     size_t limit, struct reg_session **items, size_t *n, int64_t *next)
{
	struct reg_list_query q = {
		.after = after,
		.limit = limit,
		.filter = {state < 0 ? NULL : reg_state_name((enum reg_state)state), model_id},
		.n_filter = 2,
		.bad_filter = state >= REG_STATE_COUNT ? "state" : NULL,
		.bad_detail = "unknown session state",
	};
	void *page;
	int rc = reg_list(r, &session_entity, &q, &page, n, next);
	*items = page;
	return rc;
}

static int counts_tx(struct reg_conn *c, void *arg)
{
	uint64_t *counts = arg;
	memset(counts, 0, REG_STATE_COUNT * sizeof *counts);
	sqlite3_stmt *st = reg_stmt(c, S_SESSION_COUNTS);
	if (!st)
		return reg_step(c, st);
	int rc;
	while ((rc = reg_step(c, st)) == SQLITE_ROW) {
		enum reg_state s;
		if (reg_state_parse((const char *)sqlite3_column_text(st, 0), &s) == 0)
			counts[s] = (uint64_t)sqlite3_column_int64(st, 1);
	}
	return rc == SQLITE_DONE ? 0 : rc;
}

int reg_session_counts(struct reg *r, uint64_t *counts)
{
	reg_error_clear();
	if (!r || !counts)
		return reg_fail(ERR_INVALID, NULL, "missing argument");
	return reg_tx(r, REG_TX_READ, counts_tx, counts);
}

/* ---- transitions ---- */

struct transition_args {
	const struct reg_actor *who;
	const char *id;
	int expect;
	enum reg_state to;
	const char *reason;
	struct reg_session *out;
};

static int transition_tx(struct reg_conn *c, void *arg)
{
	struct transition_args *a = arg;
	struct reg_session *s = a->out;
	int64_t rid;
	int rc = reg_find(c, &session_entity, a->id, s, &rid, NULL);
	if (rc != 0)
		return rc;
	if (a->expect != REG_STATE_ANY && s->state != (enum reg_state)a->expect)
		return reg_fail(ERR_CONFLICT, "from", "the session is %s, not %s", reg_state_name(s->state),
				reg_state_name((enum reg_state)a->expect));
	if (s->state == a->to)
		return 0;
	if (!reg_state_legal(s->state, a->to))
		return reg_fail(ERR_CONFLICT, "to", "a session cannot go from %s to %s",
				reg_state_name(s->state), reg_state_name(a->to));
	if (a->to == REG_STATE_ACTIVE && s->expires_ms <= reg_now(c->reg))
		return reg_fail(ERR_CONFLICT, "to", "the session has expired");
	return set_state(c, a->who, rid, s, a->to, a->reason, NULL);
}

int reg_session_transition(struct reg *r, const struct reg_actor *who, const char *id,
			   int expect, enum reg_state to, const char *reason,
			   struct reg_session *out)
{
	int rc = reg_write_args(r, out != NULL, who);
	if (rc != 0)
		return rc;
	if (to == REG_STATE_READY)
		return reg_fail(ERR_CONFLICT, "to", "a session becomes ready only when all its parties "
				"have reported their initialisation");
	if (to != REG_STATE_ACTIVE && to != REG_STATE_CLOSED && to != REG_STATE_FAILED)
		return reg_fail(ERR_INVALID, "to", "to must be active, closed or failed");
	if (expect != REG_STATE_ANY && (expect < 0 || expect >= REG_STATE_COUNT))
		return reg_fail(ERR_INVALID, "from", "unknown session state");
	if (reason && !reg_text_ok(reason, REG_DESC_MAX, true))
		return reg_fail(ERR_INVALID, "reason", "reason must be at most %d bytes without control "
				"characters", REG_DESC_MAX);
	struct transition_args a = {who, id, expect, to, reason, out};
	return reg_tx(r, REG_TX_WRITE, transition_tx, &a);
}

struct init_args {
	const struct reg_actor *who;
	const char *id;
	const char *identity;
	const uint8_t *fingerprint;
	bool ok;
	const char *detail;
	struct reg_session *out;
};

static int init_tx(struct reg_conn *c, void *arg)
{
	struct init_args *a = arg;
	struct reg_session *s = a->out;
	int64_t rid, rids[REG_MAX_PARTIES];
	int rc = reg_find(c, &session_entity, a->id, s, &rid, rids);
	if (rc != 0)
		return rc;
	size_t me = s->n_parties;
	struct reg_party p = {0};
	for (size_t i = 0; i < s->n_parties && me == s->n_parties; i++) {
		sqlite3_stmt *st = reg_stmt(c, S_PARTY_BY_RID);
		if (!st)
			return reg_step(c, st);
		sqlite3_bind_int64(st, 1, rids[i]);
		if ((rc = reg_step(c, st)) != SQLITE_ROW)
			return rc == SQLITE_DONE ? reg_fail(ERR_DB, NULL, "missing party row") : rc;
		reg_party_read(c, st, &p, NULL, NULL);
		sqlite3_reset(st);
		if (strcmp(p.identity, a->identity) == 0)
			me = i;
	}
	if (me == s->n_parties)
		return reg_fail(ERR_FORBIDDEN, NULL, "%s is not a party of this session", a->identity);
	if (p.status != REG_PARTY_ACTIVE)
		return reg_fail(ERR_FORBIDDEN, NULL, "party %s is %s", p.id, reg_party_status_name(p.status));
	if (p.has_fingerprint &&
	    (!a->fingerprint || sodium_memcmp(p.fingerprint, a->fingerprint, 32) != 0))
		return reg_fail(ERR_FORBIDDEN, NULL, "the certificate is not the one pinned for party %s",
				p.id);
	if (s->state != REG_STATE_CREATED) {
		if (a->ok && s->parties[me].init_ms &&
		    (s->state == REG_STATE_READY || s->state == REG_STATE_ACTIVE))
			return 0; /* a repeated report after the fact */
		return reg_fail(ERR_CONFLICT, NULL, "the session is %s: initialisation reports are taken "
				"while it is created", reg_state_name(s->state));
	}
	if (s->expires_ms <= reg_now(c->reg))
		return reg_fail(ERR_CONFLICT, NULL, "the session has expired");
	if (!a->ok) {
		char reason[REG_DESC_MAX + 1];
		snprintf(reason, sizeof reason, "party %s failed to initialise: %s", p.identity,
			 a->detail && *a->detail ? a->detail : "no detail given");
		return set_state(c, a->who, rid, s, REG_STATE_FAILED, reason,
				 json_pack("{s:s}", "party", p.id));
	}
	if (s->parties[me].init_ms)
		return 0;
	s->parties[me].init_ms = reg_now(c->reg);
	sqlite3_stmt *st = reg_stmt(c, S_SESSION_PARTY_INIT);
	if (!st)
		return reg_step(c, st);
	sqlite3_bind_int64(st, 1, rid);
	sqlite3_bind_int64(st, 2, rids[me]);
	sqlite3_bind_int64(st, 3, s->parties[me].init_ms);
	if ((rc = reg_exec(c, st)) != 0)
		return rc;
	if ((rc = reg_audit_append(c, a->who, "session.party_ready", "session", s->id,
				   json_pack("{s:s, s:i}", "party", p.id, "index", (int)me))) != 0)
		return rc;
	for (size_t i = 0; i < s->n_parties; i++)
		if (!s->parties[i].init_ms)
			return 0;
	return set_state(c, a->who, rid, s, REG_STATE_READY, "all parties initialised", NULL);
}

int reg_session_report_init(struct reg *r, const struct reg_actor *who, const char *id,
			    const char *identity, const uint8_t *fingerprint, bool ok,
			    const char *detail, struct reg_session *out)
{
	int rc = reg_write_args(r, out && identity, who);
	if (rc != 0)
		return rc;
	if (detail && !reg_text_ok(detail, 200, true))
		return reg_fail(ERR_INVALID, "detail", "detail must be at most 200 bytes without control "
				"characters");
	struct init_args a = {who, id, identity, fingerprint, ok, detail, out};
	return reg_tx(r, REG_TX_WRITE, init_tx, &a);
}

/* ---- expiry ---- */

#define EXPIRE_BATCH 100

struct expire_args {
	const struct reg_actor *who;
	size_t n;
};

static int expire_tx(struct reg_conn *c, void *arg)
{
	struct expire_args *a = arg;
	a->n = 0;
	char (*ids)[REG_ID_SIZE] = calloc(EXPIRE_BATCH, REG_ID_SIZE);
	if (!ids)
		return reg_fail(ERR_NOMEM, NULL, "out of memory");
	size_t n = 0;
	int rc;
	sqlite3_stmt *st = reg_stmt(c, S_SESSION_EXPIRED);
	if (!st) {
		free(ids);
		return reg_step(c, st);
	}
	sqlite3_bind_int64(st, 1, reg_now(c->reg));
	sqlite3_bind_int64(st, 2, EXPIRE_BATCH);
	while ((rc = reg_step(c, st)) == SQLITE_ROW && n < EXPIRE_BATCH)
		reg_col_text(st, 0, ids[n++], REG_ID_SIZE);
	sqlite3_reset(st);
	if (rc == SQLITE_ROW || rc == SQLITE_DONE)
		rc = 0;
	struct reg_session *s = malloc(sizeof *s);
	if (!s && rc == 0)
		rc = reg_fail(ERR_NOMEM, NULL, "out of memory");
	for (size_t i = 0; rc == 0 && i < n; i++) {
		int64_t rid;
		if ((rc = reg_find(c, &session_entity, ids[i], s, &rid, NULL)) == 0 &&
		    (rc = set_state(c, a->who, rid, s, REG_STATE_CLOSED, "expired", NULL)) == 0)
			a->n++;
	}
	free(s);
	free(ids);
	return rc;
}

int reg_session_expire(struct reg *r, const struct reg_actor *who, size_t *n)
{
	*n = 0;
	int rc = reg_write_args(r, true, who);
	if (rc != 0)
		return rc;
	/* Batches keep each transaction, and the write lock, short. */
	for (;;) {
		struct expire_args a = {who, 0};
		if ((rc = reg_tx(r, REG_TX_WRITE, expire_tx, &a)) != 0)
			return rc;
		*n += a.n;
		if (a.n < EXPIRE_BATCH)
			return 0;
	}
}
