/* registry internals shared by the module's files; not part of the public API. */
#ifndef MIMIR_REG_INT_H
#define MIMIR_REG_INT_H

#include <jansson.h>
#include <pthread.h>
#include <sqlite3.h>
#include <stdatomic.h>

#include "registry/registry.h"

/* PRAGMA application_id of a registry database: "MIMR". */
#define REG_APPLICATION_ID 0x4D494D52

/* The append-only triggers, exactly as the schema creates them and as
 * reg_audit_verify() expects to find them in sqlite_schema. */
#define REG_AUDIT_TRIGGER_UPDATE                                                           \
	"CREATE TRIGGER audit_no_update BEFORE UPDATE ON audit\n"                          \
	"BEGIN SELECT RAISE(ABORT, 'the audit log is append-only'); END"
#define REG_AUDIT_TRIGGER_DELETE                                                           \
	"CREATE TRIGGER audit_no_delete BEFORE DELETE ON audit\n"                          \
	"BEGIN SELECT RAISE(ABORT, 'the audit log is append-only'); END"

/* Internal result of a statement that met SQLITE_BUSY/LOCKED: the transaction runner
 * retries on it and never lets it out of the module. */
#define REG_EBUSY (-1000)

/* Every statement the registry runs, prepared once per connection. */
enum reg_stmt {
	S_META_GET,
	S_META_PUT,
	S_AUDIT_LAST,
	S_AUDIT_INSERT,
	S_AUDIT_LIST,
	S_AUDIT_ALL,
	S_AUDIT_TRIGGER,
	S_MODEL_INSERT,
	S_MODEL_SHARE_INSERT,
	S_MODEL_BY_ID,
	S_MODEL_BY_NAME,
	S_MODEL_SHARES,
	S_MODEL_LIST,
	S_MODEL_USES,
	S_MODEL_DELETE,
	S_PARTY_INSERT,
	S_PARTY_BY_ID,
	S_PARTY_BY_RID,
	S_PARTY_BY_IDENTITY,
	S_PARTY_LIST,
	S_PARTY_UPDATE,
	S_PARTY_ALLOCATE,
	S_SESSION_INSERT,
	S_SESSION_PARTY_INSERT,
	S_SESSION_BY_ID,
	S_SESSION_PARTIES,
	S_SESSION_LIST,
	S_SESSION_SET_STATE,
	S_SESSION_PARTY_INIT,
	S_SESSION_EXPIRED,
	S_SESSION_COUNTS,
	S_KEY_INSERT,
	S_KEY_SCOPE_INSERT,
	S_KEY_BY_ID,
	S_KEY_SCOPES,
	S_KEY_LIST,
	S_KEY_REVOKE,
	S_KEY_SCOPE_HAS,
	S_COUNT
};

#define REG_PENDING_MAX 8

/* One pooled connection; used by one thread at a time. */
struct reg_conn {
	struct reg *reg;
	sqlite3 *db;
	sqlite3_stmt *st[S_COUNT];
	bool in_use;
	/* Audit entries appended by the running transaction, logged once it commits. */
	size_t n_pending;
	size_t n_pending_dropped;
	struct {
		int64_t seq;
		char action[REG_ACTION_MAX + 1];
		char object_id[REG_ID_SIZE];
		char hash[2 * REG_HASH_LEN + 1];
	} pending[REG_PENDING_MAX];
};

struct reg {
	struct reg_opts o;
	char *path;
	uint8_t secret[REG_SECRET_LEN];
	pthread_mutex_t mu;
	pthread_cond_t cv;
	struct reg_conn *conns;
	size_t n_conns;
	bool read_only;
	int schema_version;
	_Atomic uint64_t commits, failures, busy_retries, busy_giveups;
};

enum reg_tx_kind { REG_TX_READ, REG_TX_WRITE };
typedef int (*reg_tx_fn)(struct reg_conn *c, void *arg);

/* Runs fn inside one transaction on a pooled connection (BEGIN IMMEDIATE for writes),
 * commits when it returns 0, rolls back otherwise, and runs the whole transaction
 * again after SQLITE_BUSY (bounded, jittered exponential backoff). fn must therefore
 * only touch the database and its own output, and reset the output on entry. */
int reg_tx(struct reg *r, enum reg_tx_kind kind, reg_tx_fn fn, void *arg);

/* The statement, reset and unbound, ready for binding. */
sqlite3_stmt *reg_stmt(struct reg_conn *c, enum reg_stmt s);
/* sqlite3_step, mapped: SQLITE_ROW and SQLITE_DONE are returned as they are, any other
 * result becomes an ERR_* (or REG_EBUSY) with the thread's error set. */
int reg_step(struct reg_conn *c, sqlite3_stmt *st);
/* Steps a statement that returns no row (INSERT/UPDATE/DELETE): 0 or an error. */
int reg_exec(struct reg_conn *c, sqlite3_stmt *st);
/* Maps an SQLite result to an error (and sets the thread's error with what). */
int reg_db_error(struct reg_conn *c, int rc, const char *what);

/* Sets the calling thread's error and returns code. field may be NULL. */
int reg_fail(int code, const char *field, const char *fmt, ...)
	__attribute__((format(printf, 3, 4)));
void reg_error_clear(void);

int64_t reg_now(const struct reg *r);
/* A fresh identifier "<prefix><16 hex>" (prefix is 4 characters). */
void reg_new_id(char out[REG_ID_SIZE], const char *prefix);
/* Copies a text column into buf (truncated to cap - 1; "" for NULL). */
void reg_col_text(sqlite3_stmt *st, int i, char *buf, size_t cap);
/* Copies a blob column of exactly len bytes; false when it is not that size. */
bool reg_col_blob(sqlite3_stmt *st, int i, uint8_t *out, size_t len);
/* Printable text without control characters, 1..max bytes (0 allowed when allow_empty). */
bool reg_text_ok(const char *s, size_t max, bool allow_empty);
/* Binds a text or NULL. */
int reg_bind_text(sqlite3_stmt *st, int i, const char *s);

/* Appends an audit entry inside the running write transaction. detail is stolen
 * (NULL: "{}"). */
int reg_audit_append(struct reg_conn *c, const struct reg_actor *who, const char *action,
		     const char *object_type, const char *object_id, json_t *detail);
/* Validates who (before any write). */
int reg_actor_check(const struct reg_actor *who);
/* What every public write checks first, so they all refuse alike: clears the thread's
 * error, then ERR_INVALID "missing argument" when r is NULL or !args_ok, then who. */
int reg_write_args(const struct reg *r, bool args_ok, const struct reg_actor *who);

/* ---- rows: the lookups and listings every entity shares (rows.c) ---- */

/* Reads the current row of one of an entity's SELECTs (its *_COLS in db.c) into item,
 * the entity's struct, and the row's rid (its page cursor) into *rid when rid is set.
 * extra carries what only some callers want (a key's stored hash, a session's party
 * rids) and is NULL otherwise. Returns 0 or an error. */
typedef int (*reg_row_fn)(struct reg_conn *c, sqlite3_stmt *st, void *item, int64_t *rid,
			  void *extra);

/* An entity as reg_find, reg_get and reg_list see it. */
struct reg_entity {
	const char *prefix;    /* of its public ids ("mdl_"); NULL when it has none */
	const char *not_found; /* detail of ERR_NOT_FOUND: "no model with this id" */
	enum reg_stmt by_id;   /* its columns WHERE id = ?1 */
	enum reg_stmt list;    /* its columns WHERE rid > ?1 [AND filters on ?3, ?4]
				* ORDER BY rid LIMIT ?2 */
	reg_row_fn read;
	size_t size;           /* of the struct read fills */
	/* The audit log has always refused a bad page in one message; the others name
	 * the limit and the cursor apart. Kept, since clients see the wording. */
	bool one_range_error;
};

/* One page request of reg_list. */
struct reg_list_query {
	int64_t after;          /* cursor: 0, or the next of the previous page */
	size_t limit;           /* 1..REG_PAGE_MAX */
	const char *filter[2];  /* bound to ?3, ?4 of the list statement; NULL: no filter */
	size_t n_filter;
	const char *bad_filter; /* set when a filter is out of range: ERR_INVALID naming it, */
	const char *bad_detail; /* with this detail, after the limit and cursor checks */
};

/* Inside a transaction: the row with public id `id` (ERR_NOT_FOUND naming "id" when
 * the id is malformed or absent), read by e->read with rid and extra. */
int reg_find(struct reg_conn *c, const struct reg_entity *e, const char *id, void *item,
	     int64_t *rid, void *extra);
/* The public get of every entity: reg_find in its own read transaction. */
int reg_get(struct reg *r, const struct reg_entity *e, const char *id, void *out);
/* The public list of every entity (registry.h gives the contract): validates q, reads
 * up to q->limit rows after q->after in one snapshot into a malloc'd array (*items,
 * NULL when *n is 0) and sets *next to the last row's rid when more rows follow. */
int reg_list(struct reg *r, const struct reg_entity *e, const struct reg_list_query *q,
	     void **items, size_t *n, int64_t *next);

/* Looked up inside a transaction by public id, with the row's rid. */
int reg_session_rid(struct reg_conn *c, const char *id, int64_t *rid, struct reg_session *out);
/* A reg_row_fn for struct reg_party (extra unused), for the other files' party queries. */
int reg_party_read(struct reg_conn *c, sqlite3_stmt *st, void *item, int64_t *rid, void *extra);
/* A uniqueness check before an insert: ERR_CONFLICT naming field, with the detail
 * fmt gives, when statement s with key bound as ?1 returns a row; else 0. */
int reg_unique(struct reg_conn *c, enum reg_stmt s, const char *key, const char *field,
	       const char *fmt, ...) __attribute__((format(printf, 5, 6)));

#endif
