/* registry db: opening, configuring and migrating the SQLite database, the connection
 * pool, the transaction runner that absorbs SQLITE_BUSY, the statement table, the
 * mapping of SQLite results to ERR_* codes with a detail fit for a client, and the
 * small helpers (identifiers, names, the server secret) the entity files share. */
#define _GNU_SOURCE
#include "registry/reg_int.h"

#include <errno.h>
#include <fcntl.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include <sodium.h>

#include "err/err.h"
#include "log/log.h"

/* ---- errors ---- */

static __thread struct reg_error tl_err;

const struct reg_error *reg_last_error(void)
{
	return &tl_err;
}

void reg_error_clear(void)
{
	tl_err.code = 0;
	tl_err.field[0] = '\0';
	tl_err.detail[0] = '\0';
}

int reg_fail(int code, const char *field, const char *fmt, ...)
{
	tl_err.code = code;
	snprintf(tl_err.field, sizeof tl_err.field, "%s", field ? field : "");
	va_list ap;
	va_start(ap, fmt);
	vsnprintf(tl_err.detail, sizeof tl_err.detail, fmt, ap);
	va_end(ap);
	return code;
}

int reg_db_error(struct reg_conn *c, int rc, const char *what)
{
	/* SQLite does not always keep the errno of a failed write (a write cut short by
	 * RLIMIT_FSIZE reports 0), but errno itself still holds it: callers come here
	 * straight from the failing call. */
	int last_errno = errno;
	const char *msg = c && c->db ? sqlite3_errmsg(c->db) : sqlite3_errstr(rc);
	int sys = c && c->db ? sqlite3_system_errno(c->db) : 0;
	if (sys == 0 && (rc & 0xff) == SQLITE_IOERR)
		sys = last_errno;
	char pre[64] = "";
	if (what)
		snprintf(pre, sizeof pre, "%s: ", what);
	switch (rc & 0xff) {
	case SQLITE_BUSY:
	case SQLITE_LOCKED:
		reg_fail(ERR_UNAVAILABLE, NULL, "%sthe database is busy (%s)", pre, msg);
		return REG_EBUSY;
	case SQLITE_READONLY:
		return reg_fail(ERR_UNAVAILABLE, NULL,
				"%sthe database is read-only (%s); check the permissions and the file "
				"system of the database file and its directory", pre, msg);
	case SQLITE_FULL:
		return reg_fail(ERR_UNAVAILABLE, NULL, "%sthe disk is full (%s)", pre, msg);
	case SQLITE_IOERR:
		if (sys == ENOSPC || sys == EFBIG || sys == EDQUOT)
			return reg_fail(ERR_UNAVAILABLE, NULL, "%sthe disk is full (%s: %s)", pre, msg,
					strerror(sys));
		if (sys == EROFS || sys == EACCES || sys == EPERM)
			return reg_fail(ERR_UNAVAILABLE, NULL, "%sthe database is read-only (%s: %s)", pre,
					msg, strerror(sys));
		return reg_fail(ERR_IO, NULL, "%sdatabase I/O error (%s%s%s)", pre, msg, sys ? ": " : "",
				sys ? strerror(sys) : "");
	case SQLITE_CONSTRAINT:
		return reg_fail(ERR_CONFLICT, NULL, "%srefused by the database (%s)", pre, msg);
	case SQLITE_NOMEM:
		return reg_fail(ERR_NOMEM, NULL, "%sout of memory", pre);
	case SQLITE_CANTOPEN:
		return reg_fail(ERR_IO, NULL, "%scannot open the database file (%s%s%s)", pre, msg,
				sys ? ": " : "", sys ? strerror(sys) : "");
	case SQLITE_CORRUPT:
	case SQLITE_NOTADB:
		return reg_fail(ERR_DB, NULL, "%sthe database file is corrupt or not a database (%s)",
				pre, msg);
	default:
		return reg_fail(ERR_DB, NULL, "%sdatabase error (%s)", pre, msg);
	}
}

/* ---- statements ---- */

#define MODEL_COLS                                                                         \
	"rid, id, name, description, dim, hidden_dim, n_layers, n_heads, n_kv_heads, "      \
	"vocab_size, seq_len, n_shares, created_ms"
#define PARTY_COLS                                                                         \
	"rid, id, identity, role, status, sealing_key, cert_fingerprint, endpoint, "        \
	"attestation, created_ms, updated_ms"
#define SESSION_COLS                                                                       \
	"s.rid, s.id, m.id, s.state, s.fixed_point_bits, s.max_context, s.pad_bucket, "     \
	"s.reason, s.created_ms, s.updated_ms, s.expires_ms"
#define KEY_COLS "rid, id, name, hash, created_ms, expires_ms, revoked_ms"
#define AUDIT_COLS                                                                         \
	"seq, ts_ms, actor, action, object_type, object_id, detail, request_id, prev_hash, hash"

static const char *const stmt_sql[S_COUNT] = {
	[S_META_GET] = "SELECT value FROM meta WHERE key = ?1",
	[S_META_PUT] = "INSERT INTO meta (key, value) VALUES (?1, ?2) "
		       "ON CONFLICT (key) DO UPDATE SET value = excluded.value",
	[S_AUDIT_LAST] = "SELECT seq, hash, ts_ms FROM audit ORDER BY seq DESC LIMIT 1",
	[S_AUDIT_INSERT] = "INSERT INTO audit (" AUDIT_COLS ") "
			   "VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10)",
	[S_AUDIT_LIST] = "SELECT " AUDIT_COLS " FROM audit WHERE seq > ?1 ORDER BY seq LIMIT ?2",
	[S_AUDIT_ALL] = "SELECT " AUDIT_COLS " FROM audit ORDER BY seq",
	[S_AUDIT_TRIGGER] = "SELECT sql FROM sqlite_schema "
			    "WHERE type = 'trigger' AND name = ?1 AND tbl_name = 'audit'",
	[S_MODEL_INSERT] = "INSERT INTO models (id, name, description, dim, hidden_dim, n_layers, "
			   "n_heads, n_kv_heads, vocab_size, seq_len, n_shares, created_ms) "
			   "VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12)",
	[S_MODEL_SHARE_INSERT] = "INSERT INTO model_shares (model_rid, idx, digest) VALUES (?1, ?2, ?3)",
	[S_MODEL_BY_ID] = "SELECT " MODEL_COLS " FROM models WHERE id = ?1",
	[S_MODEL_BY_NAME] = "SELECT rid FROM models WHERE name = ?1",
	[S_MODEL_SHARES] = "SELECT digest FROM model_shares WHERE model_rid = ?1 ORDER BY idx",
	[S_MODEL_LIST] = "SELECT " MODEL_COLS " FROM models WHERE rid > ?1 ORDER BY rid LIMIT ?2",
	[S_MODEL_USES] = "SELECT count(*) FROM sessions WHERE model_rid = ?1",
	[S_MODEL_DELETE] = "DELETE FROM models WHERE rid = ?1",
	[S_PARTY_INSERT] = "INSERT INTO parties (id, identity, role, status, sealing_key, "
			   "cert_fingerprint, endpoint, attestation, created_ms, updated_ms) "
			   "VALUES (?1, ?2, ?3, 'active', ?4, ?5, ?6, ?7, ?8, ?8)",
	[S_PARTY_BY_ID] = "SELECT " PARTY_COLS " FROM parties WHERE id = ?1",
	[S_PARTY_BY_RID] = "SELECT " PARTY_COLS " FROM parties WHERE rid = ?1",
	[S_PARTY_BY_IDENTITY] = "SELECT rid FROM parties WHERE identity = ?1",
	[S_PARTY_LIST] = "SELECT " PARTY_COLS " FROM parties "
			 "WHERE rid > ?1 AND (?3 IS NULL OR status = ?3) ORDER BY rid LIMIT ?2",
	[S_PARTY_UPDATE] = "UPDATE parties SET status = ?2, sealing_key = ?3, cert_fingerprint = ?4, "
			   "endpoint = ?5, attestation = ?6, updated_ms = ?7 WHERE rid = ?1",
	/* Least loaded first: the number of live sessions a party is in, then age. */
	[S_PARTY_ALLOCATE] = "SELECT p.id, p.rid FROM parties p "
			     "WHERE p.status = 'active' AND p.role = 'party' "
			     "ORDER BY (SELECT count(*) FROM session_parties sp "
			     "  JOIN sessions s ON s.rid = sp.session_rid "
			     "  WHERE sp.party_rid = p.rid AND s.state IN ('created', 'ready', 'active')), "
			     "p.rid LIMIT ?1",
	[S_SESSION_INSERT] = "INSERT INTO sessions (id, model_rid, state, fixed_point_bits, "
			     "max_context, pad_bucket, reason, created_ms, updated_ms, expires_ms) "
			     "VALUES (?1, ?2, 'created', ?3, ?4, ?5, '', ?6, ?6, ?7)",
	[S_SESSION_PARTY_INSERT] = "INSERT INTO session_parties (session_rid, idx, party_rid) "
				   "VALUES (?1, ?2, ?3)",
	[S_SESSION_BY_ID] = "SELECT " SESSION_COLS " FROM sessions s "
			    "JOIN models m ON m.rid = s.model_rid WHERE s.id = ?1",
	[S_SESSION_PARTIES] = "SELECT p.id, sp.init_ms, p.rid FROM session_parties sp "
			      "JOIN parties p ON p.rid = sp.party_rid "
			      "WHERE sp.session_rid = ?1 ORDER BY sp.idx",
	[S_SESSION_LIST] = "SELECT " SESSION_COLS " FROM sessions s "
			   "JOIN models m ON m.rid = s.model_rid "
			   "WHERE s.rid > ?1 AND (?3 IS NULL OR s.state = ?3) "
			   "AND (?4 IS NULL OR m.id = ?4) ORDER BY s.rid LIMIT ?2",
	[S_SESSION_SET_STATE] = "UPDATE sessions SET state = ?2, reason = ?3, updated_ms = ?4 "
				"WHERE rid = ?1",
	[S_SESSION_PARTY_INIT] = "UPDATE session_parties SET init_ms = ?3 "
				 "WHERE session_rid = ?1 AND party_rid = ?2 AND init_ms IS NULL",
	[S_SESSION_EXPIRED] = "SELECT id FROM sessions WHERE state IN ('created', 'ready', 'active') "
			      "AND expires_ms <= ?1 ORDER BY expires_ms LIMIT ?2",
	[S_SESSION_COUNTS] = "SELECT state, count(*) FROM sessions GROUP BY state",
	[S_KEY_INSERT] = "INSERT INTO api_keys (id, name, hash, created_ms, expires_ms) "
			 "VALUES (?1, ?2, ?3, ?4, ?5)",
	[S_KEY_SCOPE_INSERT] = "INSERT INTO api_key_scopes (key_rid, session_rid) VALUES (?1, ?2)",
	[S_KEY_BY_ID] = "SELECT " KEY_COLS " FROM api_keys WHERE id = ?1",
	[S_KEY_SCOPES] = "SELECT s.id FROM api_key_scopes k JOIN sessions s ON s.rid = k.session_rid "
			 "WHERE k.key_rid = ?1 ORDER BY s.rid",
	[S_KEY_LIST] = "SELECT " KEY_COLS " FROM api_keys WHERE rid > ?1 AND (?3 IS NULL OR rid IN "
		       "(SELECT k.key_rid FROM api_key_scopes k JOIN sessions s ON s.rid = k.session_rid "
		       " WHERE s.id = ?3)) ORDER BY rid LIMIT ?2",
	[S_KEY_REVOKE] = "UPDATE api_keys SET revoked_ms = ?2 WHERE rid = ?1 AND revoked_ms IS NULL",
	[S_KEY_SCOPE_HAS] = "SELECT 1 FROM api_key_scopes k JOIN sessions s ON s.rid = k.session_rid "
			    "WHERE k.key_rid = ?1 AND s.id = ?2",
};

sqlite3_stmt *reg_stmt(struct reg_conn *c, enum reg_stmt s)
{
	if (!c->st[s]) {
		int rc = sqlite3_prepare_v3(c->db, stmt_sql[s], -1, SQLITE_PREPARE_PERSISTENT,
					    &c->st[s], NULL);
		if (rc != SQLITE_OK) {
			/* Our bug (or a schema someone altered): the caller's step on NULL
			 * reports it. */
			LOG_ERROR("reg.prepare_failed", LOG_I("stmt", s), LOG_S("error", sqlite3_errmsg(c->db)));
			c->st[s] = NULL;
			return NULL;
		}
	} else {
		sqlite3_reset(c->st[s]);
		sqlite3_clear_bindings(c->st[s]);
	}
	return c->st[s];
}

int reg_step(struct reg_conn *c, sqlite3_stmt *st)
{
	if (!st)
		return reg_fail(ERR_DB, NULL, "a statement could not be prepared (is the schema intact?)");
	int rc = sqlite3_step(st);
	if (rc == SQLITE_ROW || rc == SQLITE_DONE)
		return rc;
	rc = reg_db_error(c, sqlite3_extended_errcode(c->db), NULL);
	sqlite3_reset(st);
	return rc;
}

int reg_exec(struct reg_conn *c, sqlite3_stmt *st)
{
	int rc = reg_step(c, st);
	if (rc == SQLITE_DONE)
		return 0;
	if (rc == SQLITE_ROW)
		return reg_fail(ERR_INTERNAL, NULL, "a write statement returned a row");
	return rc;
}

int reg_bind_text(sqlite3_stmt *st, int i, const char *s)
{
	return s ? sqlite3_bind_text(st, i, s, -1, SQLITE_TRANSIENT) : sqlite3_bind_null(st, i);
}

void reg_col_text(sqlite3_stmt *st, int i, char *buf, size_t cap)
{
	const unsigned char *t = sqlite3_column_text(st, i);
	snprintf(buf, cap, "%s", t ? (const char *)t : "");
}

bool reg_col_blob(sqlite3_stmt *st, int i, uint8_t *out, size_t len)
{
	const void *b = sqlite3_column_blob(st, i);
	if (!b || (size_t)sqlite3_column_bytes(st, i) != len) {
		memset(out, 0, len);
		return false;
	}
	memcpy(out, b, len);
	return true;
}

/* ---- small helpers ---- */

int64_t reg_now(const struct reg *r)
{
	if (r->o.clock_ms)
		return r->o.clock_ms(r->o.clock_arg);
	struct timespec ts;
	clock_gettime(CLOCK_REALTIME, &ts);
	return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

void reg_new_id(char out[REG_ID_SIZE], const char *prefix)
{
	uint8_t b[8];
	randombytes_buf(b, sizeof b);
	memcpy(out, prefix, 4);
	sodium_bin2hex(out + 4, REG_ID_SIZE - 4, b, sizeof b);
}

bool reg_id_ok(const char *s, const char *prefix)
{
	if (!s || !prefix || strlen(s) != REG_ID_LEN || strncmp(s, prefix, 4) != 0)
		return false;
	for (size_t i = 4; i < REG_ID_LEN; i++)
		if (!((s[i] >= '0' && s[i] <= '9') || (s[i] >= 'a' && s[i] <= 'f')))
			return false;
	return true;
}

bool reg_text_ok(const char *s, size_t max, bool allow_empty)
{
	if (!s)
		return false;
	size_t n = strlen(s);
	if (n > max || (n == 0 && !allow_empty))
		return false;
	for (size_t i = 0; i < n; i++)
		if ((unsigned char)s[i] < 0x20 || s[i] == 0x7f)
			return false;
	return true;
}

static const char *const state_names[REG_STATE_COUNT] = {"created", "ready", "active", "closed", "failed"};
static const char *const role_names[] = {"party", "dealer"};
static const char *const status_names[] = {"active", "suspended", "retired"};

/* The index of s in names[0..n), or -1 (also for NULL). */
static int name_index(const char *const *names, int n, const char *s)
{
	for (int i = 0; s && i < n; i++)
		if (strcmp(s, names[i]) == 0)
			return i;
	return -1;
}

const char *reg_state_name(enum reg_state s)
{
	return (unsigned)s < REG_STATE_COUNT ? state_names[s] : "unknown";
}

int reg_state_parse(const char *s, enum reg_state *out)
{
	int i = name_index(state_names, REG_STATE_COUNT, s);
	if (i >= 0)
		*out = (enum reg_state)i;
	return i >= 0 ? 0 : ERR_INVALID;
}

const char *reg_party_role_name(enum reg_party_role r)
{
	return (unsigned)r < 2 ? role_names[r] : "unknown";
}

int reg_party_role_parse(const char *s, enum reg_party_role *out)
{
	int i = name_index(role_names, 2, s);
	if (i >= 0)
		*out = (enum reg_party_role)i;
	return i >= 0 ? 0 : ERR_INVALID;
}

const char *reg_party_status_name(enum reg_party_status s)
{
	return (unsigned)s < 3 ? status_names[s] : "unknown";
}

int reg_party_status_parse(const char *s, enum reg_party_status *out)
{
	int i = name_index(status_names, 3, s);
	if (i >= 0)
		*out = (enum reg_party_status)i;
	return i >= 0 ? 0 : ERR_INVALID;
}

/* ---- the connection pool and the transaction runner ---- */

static struct reg_conn *pool_take(struct reg *r)
{
	pthread_mutex_lock(&r->mu);
	struct reg_conn *c = NULL;
	for (;;) {
		for (size_t i = 0; i < r->n_conns && !c; i++)
			if (!r->conns[i].in_use)
				c = &r->conns[i];
		if (c)
			break;
		pthread_cond_wait(&r->cv, &r->mu);
	}
	c->in_use = true;
	pthread_mutex_unlock(&r->mu);
	return c;
}

static void pool_give(struct reg *r, struct reg_conn *c)
{
	pthread_mutex_lock(&r->mu);
	c->in_use = false;
	pthread_cond_signal(&r->cv);
	pthread_mutex_unlock(&r->mu);
}

static int exec_sql(struct reg_conn *c, const char *sql, const char *what)
{
	int rc = sqlite3_exec(c->db, sql, NULL, NULL, NULL);
	return rc == SQLITE_OK ? 0 : reg_db_error(c, sqlite3_extended_errcode(c->db), what);
}

static void backoff_sleep(const struct reg *r, unsigned attempt)
{
	uint64_t ms = r->o.backoff_ms;
	for (unsigned i = 0; i < attempt && ms < r->o.backoff_max_ms; i++)
		ms *= 2;
	if (ms > r->o.backoff_max_ms)
		ms = r->o.backoff_max_ms;
	/* Full jitter between half and all of the delay, so retrying writers spread out. */
	ms = ms / 2 + randombytes_uniform((uint32_t)(ms / 2 + 1));
	struct timespec ts = {.tv_sec = (time_t)(ms / 1000), .tv_nsec = (long)(ms % 1000) * 1000000L};
	while (nanosleep(&ts, &ts) != 0 && errno == EINTR)
		;
}

int reg_tx(struct reg *r, enum reg_tx_kind kind, reg_tx_fn fn, void *arg)
{
	struct reg_conn *c = pool_take(r);
	int rc;
	for (unsigned attempt = 0;; attempt++) {
		reg_error_clear();
		c->n_pending = c->n_pending_dropped = 0;
		rc = exec_sql(c, kind == REG_TX_WRITE ? "BEGIN IMMEDIATE" : "BEGIN", "begin");
		if (rc == 0)
			rc = fn(c, arg);
		if (rc == 0)
			rc = exec_sql(c, "COMMIT", "commit");
		if (rc != 0 && !sqlite3_get_autocommit(c->db)) {
			/* Keep fn's error, not the rollback's. */
			struct reg_error saved = tl_err;
			sqlite3_exec(c->db, "ROLLBACK", NULL, NULL, NULL);
			tl_err = saved;
		}
		if (rc != REG_EBUSY || attempt >= r->o.busy_retries)
			break;
		atomic_fetch_add(&r->busy_retries, 1);
		backoff_sleep(r, attempt);
	}
	if (rc == REG_EBUSY) {
		atomic_fetch_add(&r->busy_giveups, 1);
		rc = reg_fail(ERR_UNAVAILABLE, NULL,
			      "the database stayed busy through %u retries; try again", r->o.busy_retries);
	}
	if (rc == 0 && kind == REG_TX_WRITE) {
		atomic_fetch_add(&r->commits, 1);
		/* Audit heads go to the log only once durable: the log is an outside copy
		 * of the chain to check the database against. */
		for (size_t i = 0; i < c->n_pending; i++)
			LOG_INFO("reg.audit", LOG_I("seq", c->pending[i].seq),
				 LOG_S("action", c->pending[i].action),
				 LOG_S("object", c->pending[i].object_id),
				 LOG_S("hash", c->pending[i].hash));
		if (c->n_pending_dropped)
			LOG_INFO("reg.audit_more", LOG_I("entries", c->n_pending_dropped));
	} else if (rc != 0 && err_http_status(rc) >= 500) {
		/* Our side failed (not a caller's bad input or a missing row). */
		atomic_fetch_add(&r->failures, 1);
		LOG_ERROR("reg.tx_failed", LOG_S("error", err_slug(rc)), LOG_S("detail", tl_err.detail));
	}
	pool_give(r, c);
	return rc;
}

/* ---- opening ---- */

static int conn_configure(struct reg *r, struct reg_conn *c)
{
	int rc;
	sqlite3_extended_result_codes(c->db, 1);
	sqlite3_busy_timeout(c->db, (int)r->o.busy_timeout_ms);
	/* Refuse the schema-editing back doors (writable_schema and friends). */
	sqlite3_db_config(c->db, SQLITE_DBCONFIG_DEFENSIVE, 1, NULL);
	sqlite3_db_config(c->db, SQLITE_DBCONFIG_TRUSTED_SCHEMA, 0, NULL);
	sqlite3_stmt *st = NULL;
	rc = sqlite3_prepare_v2(c->db, "PRAGMA journal_mode = WAL", -1, &st, NULL);
	if (rc == SQLITE_OK)
		rc = sqlite3_step(st);
	if (rc != SQLITE_ROW) {
		rc = reg_db_error(c, sqlite3_extended_errcode(c->db), "enabling WAL mode");
		sqlite3_finalize(st);
		return rc == REG_EBUSY ? ERR_UNAVAILABLE : rc;
	}
	const char *mode = (const char *)sqlite3_column_text(st, 0);
	bool wal = mode && strcmp(mode, "wal") == 0;
	sqlite3_finalize(st);
	if (!wal)
		return reg_fail(ERR_UNAVAILABLE, NULL,
				"the database could not be switched to WAL mode (is it read-only?)");
	if ((rc = exec_sql(c, "PRAGMA synchronous = FULL; PRAGMA foreign_keys = ON;", "pragmas")) != 0)
		return rc == REG_EBUSY ? ERR_UNAVAILABLE : rc;
	return 0;
}

static int conn_open(struct reg *r, struct reg_conn *c)
{
	c->reg = r;
	int rc = sqlite3_open_v2(r->path, &c->db,
				 SQLITE_OPEN_READWRITE | SQLITE_OPEN_CREATE | SQLITE_OPEN_NOMUTEX, NULL);
	if (rc != SQLITE_OK) {
		int e = reg_db_error(c, rc, "opening the database");
		if ((rc & 0xff) == SQLITE_CANTOPEN)
			e = reg_fail(ERR_IO, NULL, "cannot open the database %s (%s); does its directory "
				     "exist and is it writable?", r->path,
				     c->db ? sqlite3_errmsg(c->db) : sqlite3_errstr(rc));
		sqlite3_close(c->db);
		c->db = NULL;
		return e == REG_EBUSY ? ERR_UNAVAILABLE : e;
	}
	return conn_configure(r, c);
}

static void conn_close(struct reg_conn *c)
{
	for (size_t i = 0; i < S_COUNT; i++)
		sqlite3_finalize(c->st[i]);
	memset(c->st, 0, sizeof c->st);
	if (c->db)
		sqlite3_close(c->db);
	c->db = NULL;
}

/* One integer from a static query (migration bookkeeping). */
static int query_int(struct reg_conn *c, const char *sql, int64_t *out, const char *what)
{
	sqlite3_stmt *st = NULL;
	int rc = sqlite3_prepare_v2(c->db, sql, -1, &st, NULL);
	if (rc == SQLITE_OK)
		rc = sqlite3_step(st);
	if (rc != SQLITE_ROW) {
		rc = reg_db_error(c, sqlite3_extended_errcode(c->db), what);
		sqlite3_finalize(st);
		return rc == REG_EBUSY ? ERR_UNAVAILABLE : rc;
	}
	*out = sqlite3_column_int64(st, 0);
	sqlite3_finalize(st);
	return 0;
}

static int apply_migration(struct reg *r, struct reg_conn *c, const struct reg_migration *m)
{
	int rc = exec_sql(c, "BEGIN IMMEDIATE", "migration");
	if (rc == 0 && m->version == 1) {
		char sql[128];
		snprintf(sql, sizeof sql, "PRAGMA application_id = %d", REG_APPLICATION_ID);
		rc = exec_sql(c, sql, "setting the application id");
		if (rc == 0)
			rc = exec_sql(c, "CREATE TABLE IF NOT EXISTS schema_version ("
					 "version INTEGER PRIMARY KEY, name TEXT NOT NULL, "
					 "applied_ms INTEGER NOT NULL) STRICT",
				      "creating schema_version");
	}
	if (rc == 0 && sqlite3_exec(c->db, m->sql, NULL, NULL, NULL) != SQLITE_OK) {
		rc = reg_db_error(c, sqlite3_extended_errcode(c->db), "migration");
		if (rc != ERR_UNAVAILABLE && rc != REG_EBUSY)
			rc = reg_fail(ERR_DB, NULL, "migration %d (%s) failed: %s", m->version, m->name,
				      sqlite3_errmsg(c->db));
	}
	if (rc == 0) {
		sqlite3_stmt *st = NULL;
		rc = sqlite3_prepare_v2(c->db, "INSERT INTO schema_version (version, name, applied_ms) "
					       "VALUES (?1, ?2, ?3)", -1, &st, NULL);
		if (rc == SQLITE_OK) {
			sqlite3_bind_int(st, 1, m->version);
			sqlite3_bind_text(st, 2, m->name, -1, SQLITE_STATIC);
			sqlite3_bind_int64(st, 3, reg_now(r));
			rc = sqlite3_step(st) == SQLITE_DONE ? 0 : -1;
		}
		if (rc != 0)
			rc = reg_db_error(c, sqlite3_extended_errcode(c->db), "recording the migration");
		sqlite3_finalize(st);
	}
	if (rc == 0)
		rc = exec_sql(c, "COMMIT", "committing the migration");
	if (rc != 0 && !sqlite3_get_autocommit(c->db)) {
		struct reg_error saved = tl_err;
		sqlite3_exec(c->db, "ROLLBACK", NULL, NULL, NULL);
		tl_err = saved;
	}
	if (rc == REG_EBUSY)
		rc = ERR_UNAVAILABLE;
	if (rc == 0)
		LOG_INFO("reg.migrated", LOG_I("version", m->version), LOG_S("name", m->name));
	return rc;
}

static int migrate(struct reg *r, struct reg_conn *c)
{
	const struct reg_migration *ms = r->o.migrations;
	size_t n = r->o.n_migrations;
	if (!ms)
		ms = reg_migrations(&n);
	for (size_t i = 0; i < n; i++)
		if (ms[i].version != (int)i + 1 || !ms[i].sql || !ms[i].name)
			return reg_fail(ERR_INVALID, NULL, "migration %zu is out of order or incomplete", i);
	int64_t app_id, has_version, n_objects, version = 0;
	int rc;
	if ((rc = query_int(c, "PRAGMA application_id", &app_id, "reading the application id")) != 0 ||
	    (rc = query_int(c, "SELECT count(*) FROM sqlite_schema WHERE type = 'table' AND "
			       "name = 'schema_version'", &has_version, "reading the schema")) != 0 ||
	    (rc = query_int(c, "SELECT count(*) FROM sqlite_schema", &n_objects, "reading the schema")) != 0)
		return rc;
	if ((app_id != 0 && app_id != REG_APPLICATION_ID) || (n_objects > 0 && !has_version))
		return reg_fail(ERR_UNSUPPORTED, NULL,
				"%s is a SQLite database but not a Mimir session registry; refusing to "
				"touch it", r->path);
	if (has_version &&
	    (rc = query_int(c, "SELECT coalesce(max(version), 0) FROM schema_version", &version,
			    "reading the schema version")) != 0)
		return rc;
	if (version > (int64_t)n)
		return reg_fail(ERR_UNSUPPORTED, NULL,
				"the database has schema version %lld, newer than this build knows "
				"(%zu); run a newer mimir-session, or restore a backup", (long long)version, n);
	for (size_t i = (size_t)version; i < n; i++)
		if ((rc = apply_migration(r, c, &ms[i])) != 0)
			return rc;
	r->schema_version = (int)n;
	return 0;
}

/* The database remembers a fingerprint of the secret it was created with. */
struct secret_check {
	char fp[2 * REG_HASH_LEN + 1];
	bool mismatch;
};

static int secret_check_tx(struct reg_conn *c, void *arg)
{
	struct secret_check *s = arg;
	s->mismatch = false;
	sqlite3_stmt *st = reg_stmt(c, S_META_GET);
	if (!st)
		return reg_step(c, st);
	sqlite3_bind_text(st, 1, "secret_id", -1, SQLITE_STATIC);
	int rc = reg_step(c, st);
	if (rc == SQLITE_ROW) {
		const char *have = (const char *)sqlite3_column_text(st, 0);
		s->mismatch = !have || strlen(have) != strlen(s->fp) ||
			      sodium_memcmp(have, s->fp, strlen(s->fp)) != 0;
		sqlite3_reset(st);
		return 0;
	}
	if (rc != SQLITE_DONE)
		return rc;
	if (c->reg->read_only)
		return reg_fail(ERR_UNAVAILABLE, NULL, "the database is read-only and has no secret "
				"fingerprint yet; open it writable once");
	st = reg_stmt(c, S_META_PUT);
	if (!st)
		return reg_step(c, st);
	sqlite3_bind_text(st, 1, "secret_id", -1, SQLITE_STATIC);
	sqlite3_bind_text(st, 2, s->fp, -1, SQLITE_TRANSIENT);
	return reg_exec(c, st);
}

int reg_open(struct reg **out, const struct reg_opts *o)
{
	*out = NULL;
	reg_error_clear();
	if (!o || !o->path || !*o->path || !o->secret)
		return reg_fail(ERR_INVALID, NULL, "reg_open needs a path and a secret");
	if (sodium_init() < 0)
		return reg_fail(ERR_CRYPTO, NULL, "libsodium failed to initialise");
	struct reg *r = calloc(1, sizeof *r);
	if (!r)
		return reg_fail(ERR_NOMEM, NULL, "out of memory");
	r->o = *o;
	r->o.secret = NULL;
	if (!r->o.connections)
		r->o.connections = 4;
	if (r->o.connections > 64)
		r->o.connections = 64;
	if (!r->o.busy_timeout_ms)
		r->o.busy_timeout_ms = 2000;
	if (!r->o.busy_retries)
		r->o.busy_retries = 5;
	if (!r->o.backoff_ms)
		r->o.backoff_ms = 10;
	if (!r->o.backoff_max_ms)
		r->o.backoff_max_ms = 500;
	memcpy(r->secret, o->secret, REG_SECRET_LEN);
	pthread_mutex_init(&r->mu, NULL);
	pthread_cond_init(&r->cv, NULL);
	int rc = ERR_NOMEM;
	if (!(r->path = strdup(o->path)) ||
	    !(r->conns = calloc(r->o.connections, sizeof *r->conns))) {
		reg_fail(rc, NULL, "out of memory");
		goto fail;
	}
	/* The first connection migrates; the others open an up-to-date schema. */
	r->n_conns = 1;
	if ((rc = conn_open(r, &r->conns[0])) != 0 || (rc = migrate(r, &r->conns[0])) != 0)
		goto fail;
	r->read_only = sqlite3_db_readonly(r->conns[0].db, "main") == 1;
	for (size_t i = 1; i < r->o.connections; i++, r->n_conns++)
		if ((rc = conn_open(r, &r->conns[i])) != 0)
			goto fail;
	struct secret_check sc;
	uint8_t fp[REG_HASH_LEN];
	static const char tag[] = "mimir-registry-secret-id-v1";
	crypto_generichash(fp, sizeof fp, (const uint8_t *)tag, sizeof tag - 1, r->secret, REG_SECRET_LEN);
	sodium_bin2hex(sc.fp, sizeof sc.fp, fp, sizeof fp);
	if ((rc = reg_tx(r, r->read_only ? REG_TX_READ : REG_TX_WRITE, secret_check_tx, &sc)) != 0)
		goto fail;
	if (sc.mismatch) {
		rc = reg_fail(ERR_CONFIG, NULL,
			      "the key-hashing secret is not the one %s was created with: every API "
			      "key would fail; configure the original secret file", r->path);
		goto fail;
	}
	if (r->read_only)
		LOG_WARN("reg.read_only", LOG_S("path", r->path),
			 LOG_S("detail", "the database is read-only: reads work, every write will fail"));
	LOG_INFO("reg.open", LOG_S("path", r->path), LOG_I("schema_version", r->schema_version),
		 LOG_I("connections", (long long)r->n_conns));
	*out = r;
	return 0;
fail:;
	struct reg_error saved = tl_err;
	reg_close(r);
	tl_err = saved;
	return rc;
}

void reg_close(struct reg *r)
{
	if (!r)
		return;
	for (size_t i = 0; i < r->n_conns; i++)
		conn_close(&r->conns[i]);
	free(r->conns);
	free(r->path);
	pthread_mutex_destroy(&r->mu);
	pthread_cond_destroy(&r->cv);
	sodium_memzero(r->secret, sizeof r->secret);
	free(r);
}

bool reg_read_only(const struct reg *r)
{
	return r && r->read_only;
}

int reg_schema_version(const struct reg *r)
{
	return r ? r->schema_version : 0;
}

/* ---- operations ---- */

static int probe_tx(struct reg_conn *c, void *arg)
{
	(void)arg;
	sqlite3_stmt *st = reg_stmt(c, S_META_PUT);
	if (!st)
		return reg_step(c, st);
	char v[32];
	snprintf(v, sizeof v, "%lld", (long long)reg_now(c->reg));
	sqlite3_bind_text(st, 1, "probe", -1, SQLITE_STATIC);
	sqlite3_bind_text(st, 2, v, -1, SQLITE_TRANSIENT);
	return reg_exec(c, st);
}

int reg_probe(struct reg *r)
{
	if (!r)
		return reg_fail(ERR_INVALID, NULL, "no registry");
	return reg_tx(r, REG_TX_WRITE, probe_tx, NULL);
}

void reg_stats(const struct reg *r, struct reg_stats *out)
{
	memset(out, 0, sizeof *out);
	if (!r)
		return;
	out->commits = atomic_load(&r->commits);
	out->failures = atomic_load(&r->failures);
	out->busy_retries = atomic_load(&r->busy_retries);
	out->busy_giveups = atomic_load(&r->busy_giveups);
}

/* ---- the server secret ---- */

static int secret_create(const char *path)
{
	uint8_t key[REG_SECRET_LEN];
	char hex[2 * REG_SECRET_LEN + 2];
	randombytes_buf(key, sizeof key);
	sodium_bin2hex(hex, sizeof hex, key, sizeof key);
	sodium_memzero(key, sizeof key);
	size_t n = strlen(hex);
	hex[n++] = '\n';
	int rc = 0;
	int fd = open(path, O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, 0600);
	if (fd < 0) {
		rc = errno == EEXIST ? 0 : reg_fail(ERR_IO, "keys.secret_file",
						     "cannot create the secret file %s: %s", path, strerror(errno));
		goto out;
	}
	if (write(fd, hex, n) != (ssize_t)n || fsync(fd) != 0)
		rc = reg_fail(ERR_IO, "keys.secret_file", "cannot write the secret file %s: %s", path,
			      strerror(errno));
	close(fd);
	if (rc != 0) {
		unlink(path);
		goto out;
	}
	/* The new name must be durable too, or a crash loses the secret of live keys. */
	char dir[4096];
	snprintf(dir, sizeof dir, "%s", path);
	char *slash = strrchr(dir, '/');
	if (slash)
		*(slash == dir ? slash + 1 : slash) = '\0';
	int dfd = open(slash ? dir : ".", O_RDONLY | O_DIRECTORY | O_CLOEXEC);
	if (dfd >= 0) {
		fsync(dfd);
		close(dfd);
	}
	LOG_WARN("reg.secret_created", LOG_S("path", path),
		 LOG_S("detail", "a new key-hashing secret was generated; back it up with the database"));
out:
	sodium_memzero(hex, sizeof hex);
	return rc;
}

int reg_secret_load(const char *path, bool create, uint8_t out[REG_SECRET_LEN])
{
	reg_error_clear();
	if (!path || !*path || !out)
		return reg_fail(ERR_INVALID, "keys.secret_file", "no secret file configured");
	int rc;
	if (create && access(path, F_OK) != 0 && errno == ENOENT && (rc = secret_create(path)) != 0)
		return rc;
	char buf[2 * REG_SECRET_LEN + 4];
	ssize_t n = -1;
	int fd = open(path, O_RDONLY | O_CLOEXEC); /* symlinks allowed: Kubernetes mounts secrets so */
	if (fd < 0)
		return reg_fail(ERR_IO, "keys.secret_file", "cannot open the secret file %s: %s", path,
				strerror(errno));
	struct stat st;
	if (fstat(fd, &st) != 0 || !S_ISREG(st.st_mode)) {
		rc = reg_fail(ERR_IO, "keys.secret_file", "the secret file %s is not a regular file", path);
		goto out;
	}
	if (st.st_mode & 077) {
		rc = reg_fail(ERR_FORBIDDEN, "keys.secret_file",
			      "the secret file %s is accessible by group or others (mode %03o); "
			      "run chmod 600 on it", path, (unsigned)(st.st_mode & 0777));
		goto out;
	}
	n = read(fd, buf, sizeof buf);
	if (n < 0) {
		rc = reg_fail(ERR_IO, "keys.secret_file", "cannot read the secret file %s: %s", path,
			      strerror(errno));
		goto out;
	}
	size_t len = (size_t)n;
	if (len > 0 && buf[len - 1] == '\n')
		len--;
	size_t bin_len = 0;
	if (len != 2 * REG_SECRET_LEN ||
	    sodium_hex2bin(out, REG_SECRET_LEN, buf, len, NULL, &bin_len, NULL) != 0 ||
	    bin_len != REG_SECRET_LEN) {
		rc = reg_fail(ERR_PARSE, "keys.secret_file",
			      "the secret file %s must hold exactly 64 hex digits (32 bytes)", path);
		goto out;
	}
	rc = 0;
out:
	close(fd);
	sodium_memzero(buf, sizeof buf);
	if (rc != 0)
		sodium_memzero(out, REG_SECRET_LEN);
	return rc;
}
