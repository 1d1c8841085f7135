/* registry: the session registry's data layer over SQLite, so the session service is a
 * thin main over it. It holds models (dimensions, share file digests), parties
 * (identity, sealing key, certificate pin, attestation summary, status), sessions
 * (model, parties, fixed-point bits, context, length-padding bucket, state machine,
 * expiry), API keys (a keyed hash, never the key, scoped to sessions, revocable) and
 * an append-only audit log whose entries are hash-chained.
 *
 * Durability: WAL mode with synchronous=FULL, so a write this library has returned 0
 * for is on disk and survives kill -9 or power loss. Every write runs in one
 * transaction (BEGIN IMMEDIATE) that also appends its audit entry, so a row and its
 * audit entry exist together or not at all. SQLITE_BUSY is absorbed first by SQLite's
 * busy timeout, then by the transaction runner, which retries the whole transaction
 * with bounded, jittered exponential backoff and then gives up with ERR_UNAVAILABLE.
 * The schema is versioned (table schema_version, migrations applied in order, each in
 * one transaction); a database written by a newer build is refused. SQL is static text
 * prepared once per connection with bound parameters; no SQL is built from strings.
 *
 * Integrity the database itself enforces (triggers), whoever writes to the file: the
 * audit log refuses UPDATE and DELETE; a session changes state only along the legal
 * edges (created -> ready -> active, and any live state -> closed or failed); a key's
 * hash never changes and a revocation is never undone.
 *
 * Thread-safe: a struct reg holds a small pool of connections, one per concurrent
 * caller. Functions return 0 or a negative ERR_* code; on failure reg_last_error()
 * says, for the calling thread, which input was at fault and what went wrong, in words
 * fit for a problem+json detail. Entity structs are plain data with fixed bounds: no
 * ownership beyond the arrays the list functions allocate (free() them). */
#ifndef MIMIR_REGISTRY_H
#define MIMIR_REGISTRY_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

/* Identifiers: a type prefix and 16 lowercase hex digits ("ses_0123456789abcdef"). */
#define REG_ID_LEN 20
#define REG_ID_SIZE (REG_ID_LEN + 1)
#define REG_NAME_MAX 64         /* model names, key names, party identities (a CN) */
#define REG_DESC_MAX 256        /* model description, session reason, failure detail */
#define REG_ENDPOINT_MAX 256    /* a party's base URL */
#define REG_ATTEST_MAX 4096     /* a party's attestation summary, compact JSON text */
#define REG_MAX_SHARES 64       /* parties per model (share files) and per session */
#define REG_MAX_PARTIES REG_MAX_SHARES
#define REG_KEY_MAX_SESSIONS 16 /* sessions one API key is scoped to */
#define REG_SECRET_LEN 32       /* the server secret that keys the API key hashes */
#define REG_HASH_LEN 32
#define REG_PAGE_MAX 500        /* largest page a list function returns */
#define REG_ACTOR_MAX 192
#define REG_ACTION_MAX 40
#define REG_REQUEST_ID_MAX 64
#define REG_DETAIL_MAX 2048     /* audit detail, compact JSON text */
#define REG_TTL_MAX_S (10LL * 365 * 86400) /* longest lifetime of a session or key */

/* An API key as shown once to its holder: "mimir_sk_" + the 16 hex digits of its id +
 * "_" + 43 base64url characters (256 random bits). */
#define REG_KEY_PREFIX "mimir_sk_"
#define REG_KEY_TEXT_LEN 69
#define REG_KEY_TEXT_SIZE (REG_KEY_TEXT_LEN + 1)

struct reg;

/* ---- errors ---- */

struct reg_error {
	int code;         /* the ERR_* last returned on this thread, 0 after a success */
	char field[64];   /* the input at fault ("model", "parties[1]"), "" when none */
	char detail[256]; /* what went wrong, for humans; never quotes a secret */
};
/* The calling thread's last failure (valid until its next reg_ call). */
const struct reg_error *reg_last_error(void);

/* ---- opening ---- */

struct reg_migration {
	int version;      /* 1, 2, 3, ... in order, no gaps */
	const char *name; /* recorded in schema_version */
	const char *sql;  /* one or more statements, run in the migration's transaction */
};
/* The built-in migrations (the schema of this build). */
const struct reg_migration *reg_migrations(size_t *n);

struct reg_opts {
	const char *path;                    /* the database file (created when missing) */
	const uint8_t *secret;               /* REG_SECRET_LEN bytes, copied and wiped on close */
	unsigned connections;                /* pool size, default 4 */
	unsigned busy_timeout_ms;            /* SQLite's busy wait per statement, default 2000 */
	unsigned busy_retries;               /* transaction retries after SQLITE_BUSY (0: 5) */
	unsigned backoff_ms;                 /* first retry delay, doubled each time, default 10 */
	unsigned backoff_max_ms;             /* cap on one delay, default 500 */
	/* Tests: another schema (NULL = reg_migrations()) and another clock. */
	const struct reg_migration *migrations;
	size_t n_migrations;
	int64_t (*clock_ms)(void *arg);      /* unix milliseconds; NULL = the real clock */
	void *clock_arg;
};

/* Opens (creating if needed) and migrates the database, and checks that the secret is
 * the one the database was created with (it stores a fingerprint of it, never the
 * secret), so a wrong secret file cannot silently invalidate every key. Errors:
 * ERR_IO (cannot open or create the file), ERR_DB (not a database, or corrupt, or a
 * migration failed: nothing of it is left), ERR_UNSUPPORTED (schema newer than this
 * build, or not a Mimir database), ERR_CONFIG (wrong secret), ERR_UNAVAILABLE (the
 * database needs a write, to create or migrate it, and is read-only or the disk is
 * full), ERR_INVALID. A database that is up to date but read-only opens: reads work,
 * writes fail with ERR_UNAVAILABLE and reg_read_only() is true. */
int reg_open(struct reg **out, const struct reg_opts *o);
/* Waits for no caller, so call it once no other thread uses r. Accepts NULL. */
void reg_close(struct reg *r);
bool reg_read_only(const struct reg *r);
/* The schema version of the open database. */
int reg_schema_version(const struct reg *r);

/* Loads the server secret from path: 64 hex digits and an optional newline, in a
 * regular file that group and others cannot access. When create is set and the file
 * does not exist, writes a fresh random secret there first (mode 0600, fsync'd).
 * ERR_IO, ERR_PARSE (not 64 hex digits), ERR_FORBIDDEN (group/other permissions; the
 * detail says chmod 600), ERR_INVALID. out is wiped on failure. */
int reg_secret_load(const char *path, bool create, uint8_t out[REG_SECRET_LEN]);

/* ---- who writes ----
 * Every write names its actor ("admin:alice", "party:party0", "system:session") and
 * the request it serves; both go into the audit entry the write appends. */
struct reg_actor {
	const char *actor;      /* 1..REG_ACTOR_MAX bytes */
	const char *request_id; /* may be NULL or "" */
};

/* ---- models ---- */

struct reg_dims {
	uint32_t dim, hidden_dim, n_layers, n_heads, n_kv_heads, vocab_size, seq_len;
};

struct reg_model {
	char id[REG_ID_SIZE];
	char name[REG_NAME_MAX + 1];
	char description[REG_DESC_MAX + 1];
	struct reg_dims dims;
	size_t n_shares;
	uint8_t shares[REG_MAX_SHARES][REG_HASH_LEN]; /* SHA-256 of each party's share file */
	int64_t created_ms;
};

struct reg_model_spec {
	const char *name;        /* 1..64 of [A-Za-z0-9._-], unique */
	const char *description; /* may be NULL */
	struct reg_dims dims;    /* all > 0, dim % n_heads == 0, n_heads % n_kv_heads == 0 */
	size_t n_shares;         /* 2..REG_MAX_SHARES */
	const uint8_t (*shares)[REG_HASH_LEN];
};

/* ERR_INVALID/ERR_RANGE (field named), ERR_CONFLICT (name taken). */
int reg_model_create(struct reg *r, const struct reg_actor *who, const struct reg_model_spec *s,
		     struct reg_model *out);
int reg_model_get(struct reg *r, const char *id, struct reg_model *out);
/* A page of models after the cursor (0 = from the start), at most limit (1..REG_PAGE_MAX).
 * *items is malloc'd (free() it; NULL when *n is 0); *next is the cursor of the next
 * page, 0 when this was the last. The same shape for every list function. */
int reg_model_list(struct reg *r, int64_t after, size_t limit, struct reg_model **items,
		   size_t *n, int64_t *next);
/* ERR_CONFLICT while any session refers to the model. */
int reg_model_delete(struct reg *r, const struct reg_actor *who, const char *id);

/* ---- parties ---- */

enum reg_party_role { REG_PARTY_ROLE_PARTY = 0, REG_PARTY_ROLE_DEALER };
enum reg_party_status { REG_PARTY_ACTIVE = 0, REG_PARTY_SUSPENDED, REG_PARTY_RETIRED };

struct reg_party {
	char id[REG_ID_SIZE];
	char identity[REG_NAME_MAX + 1]; /* the CN of its certificates */
	enum reg_party_role role;
	enum reg_party_status status;
	uint8_t sealing_key[32];         /* X25519 public key clients seal to */
	bool has_fingerprint;            /* when set, only this certificate may act for it */
	uint8_t fingerprint[32];         /* SHA-256 of the certificate's DER */
	char endpoint[REG_ENDPOINT_MAX + 1];
	char attestation[REG_ATTEST_MAX + 1]; /* compact JSON object text, "{}" when none */
	int64_t created_ms, updated_ms;
};

struct reg_party_spec {
	const char *identity;            /* a certificate CN, unique */
	enum reg_party_role role;
	const uint8_t *sealing_key;      /* 32 bytes, a valid X25519 point of large order */
	const uint8_t *fingerprint;      /* 32 bytes or NULL */
	const char *endpoint;            /* "https://..." or "http://...", or NULL */
	const char *attestation;         /* JSON object text or NULL */
};

/* Only the non-NULL / set members change. */
struct reg_party_update {
	bool set_status;
	enum reg_party_status status;
	const uint8_t *sealing_key;
	bool set_fingerprint;
	const uint8_t *fingerprint; /* NULL with set_fingerprint: remove the pin */
	const char *endpoint;       /* "" clears */
	const char *attestation;
};

int reg_party_create(struct reg *r, const struct reg_actor *who, const struct reg_party_spec *s,
		     struct reg_party *out);
int reg_party_get(struct reg *r, const char *id, struct reg_party *out);
/* status_filter: -1 = all. */
int reg_party_list(struct reg *r, int status_filter, int64_t after, size_t limit,
		   struct reg_party **items, size_t *n, int64_t *next);
int reg_party_update(struct reg *r, const struct reg_actor *who, const char *id,
		     const struct reg_party_update *u, struct reg_party *out);

/* ---- sessions ---- */

enum reg_state {
	REG_STATE_CREATED = 0,
	REG_STATE_READY,
	REG_STATE_ACTIVE,
	REG_STATE_CLOSED,
	REG_STATE_FAILED,
	REG_STATE_COUNT
};
#define REG_STATE_ANY (-1)

/* Whether from -> to is an edge of the state machine. */
bool reg_state_legal(enum reg_state from, enum reg_state to);
bool reg_state_terminal(enum reg_state s);

struct reg_session_party {
	char party_id[REG_ID_SIZE];
	int64_t init_ms; /* when it reported its initialisation, 0 before */
};

struct reg_session {
	char id[REG_ID_SIZE];
	char model_id[REG_ID_SIZE];
	enum reg_state state;
	uint32_t fixed_point_bits, max_context, pad_bucket;
	char reason[REG_DESC_MAX + 1]; /* why it closed or failed */
	int64_t created_ms, updated_ms, expires_ms;
	size_t n_parties;
	struct reg_session_party parties[REG_MAX_PARTIES]; /* in share order */
};

struct reg_session_spec {
	const char *model_id;
	/* The parties in share order, or n_parties 0 to let the registry allocate the
	 * least loaded active parties. Their number must equal the model's shares. */
	const char *const *party_ids;
	size_t n_parties;
	uint32_t fixed_point_bits; /* 8..32; 0 = 16 */
	uint32_t max_context;      /* 1..model seq_len; 0 = seq_len */
	uint32_t pad_bucket;       /* 1..max_context; 0 = min(16, max_context) */
	int64_t ttl_s;             /* lifetime in seconds, 1..REG_TTL_MAX_S */
};

int reg_session_create(struct reg *r, const struct reg_actor *who,
		       const struct reg_session_spec *s, struct reg_session *out);
int reg_session_get(struct reg *r, const char *id, struct reg_session *out);
/* The session and its parties (REG_MAX_PARTIES entries of room), from one snapshot. */
int reg_session_get_detail(struct reg *r, const char *id, struct reg_session *out,
			   struct reg_party *parties);
/* Filters: state -1 = any, model_id NULL = any. */
int reg_session_list(struct reg *r, int state, const char *model_id, int64_t after,
		     size_t limit, struct reg_session **items, size_t *n, int64_t *next);
/* Moves the session to `to` (ACTIVE, CLOSED or FAILED: READY is reached only through
 * the parties' reports), optionally only if it is in `expect` (REG_STATE_ANY: any).
 * A move to the current state is a no-op that succeeds (and writes nothing).
 * ERR_NOT_FOUND, ERR_CONFLICT (illegal edge, `expect` not met, expired session
 * activated), ERR_INVALID. */
int reg_session_transition(struct reg *r, const struct reg_actor *who, const char *id,
			   int expect, enum reg_state to, const char *reason,
			   struct reg_session *out);
/* A party reports its initialisation for the session: identity is the CN of its
 * certificate and fingerprint (may be NULL) its SHA-256, checked against the party's
 * pin when it has one. ok: the party is ready, and the session becomes READY when all
 * its parties are; !ok: the session FAILS with detail as the reason. Reporting ok
 * twice is harmless. ERR_NOT_FOUND (session), ERR_FORBIDDEN (not one of its parties,
 * pin mismatch, party not active), ERR_CONFLICT (session no longer CREATED, expired). */
int reg_session_report_init(struct reg *r, const struct reg_actor *who, const char *id,
			    const char *identity, const uint8_t *fingerprint, bool ok,
			    const char *detail, struct reg_session *out);
/* Closes every live session past its expiry (reason "expired"), each audited as
 * `who`; *n counts them. */
int reg_session_expire(struct reg *r, const struct reg_actor *who, size_t *n);
/* Sessions per state (counts[REG_STATE_COUNT]). */
int reg_session_counts(struct reg *r, uint64_t *counts);

/* ---- API keys ---- */

struct reg_key {
	char id[REG_ID_SIZE];
	char name[REG_NAME_MAX + 1];
	int64_t created_ms, expires_ms, revoked_ms; /* 0: no expiry / not revoked */
	size_t n_sessions;
	char sessions[REG_KEY_MAX_SESSIONS][REG_ID_SIZE];
};

struct reg_key_spec {
	const char *name; /* may be NULL */
	const char *const *session_ids;
	size_t n_sessions; /* 1..REG_KEY_MAX_SESSIONS, each a live session */
	int64_t ttl_s;     /* lifetime in seconds, 0 = no expiry, at most REG_TTL_MAX_S */
};

/* Creates a key: *text receives the key itself, the only time it exists outside its
 * holder (the database keeps a keyed BLAKE2b hash). Wipe it once shown. */
int reg_key_create(struct reg *r, const struct reg_actor *who, const struct reg_key_spec *s,
		   struct reg_key *out, char text[REG_KEY_TEXT_SIZE]);
int reg_key_get(struct reg *r, const char *id, struct reg_key *out);
/* session_id NULL = all keys. */
int reg_key_list(struct reg *r, const char *session_id, int64_t after, size_t limit,
		 struct reg_key **items, size_t *n, int64_t *next);
/* Revokes for good; revoking a revoked key is a no-op that succeeds. */
int reg_key_revoke(struct reg *r, const struct reg_actor *who, const char *id,
		   struct reg_key *out);

enum reg_key_verdict {
	REG_KEY_VALID = 0,
	REG_KEY_MALFORMED,     /* not a Mimir key at all */
	REG_KEY_UNKNOWN,       /* no such key, or a wrong secret part: not told apart */
	REG_KEY_REVOKED,
	REG_KEY_EXPIRED,
	REG_KEY_WRONG_SESSION, /* a good key, not scoped to this session */
};
/* Checks a presented key for use with session_id (NULL: any of its sessions). Returns
 * 0 with the verdict (and *key_id filled when the key was recognised), or an error
 * when the check could not run. The hash comparison is constant-time. */
int reg_key_verify(struct reg *r, const char *text, const char *session_id,
		   enum reg_key_verdict *verdict, char key_id[REG_ID_SIZE])
	__attribute__((warn_unused_result));
const char *reg_key_verdict_name(enum reg_key_verdict v);

/* ---- audit log ---- */

struct reg_audit_entry {
	int64_t seq; /* 1, 2, 3, ... */
	int64_t ts_ms;
	char actor[REG_ACTOR_MAX + 1];
	char action[REG_ACTION_MAX + 1];     /* "session.create", "key.revoke", ... */
	char object_type[16];                /* "model", "party", "session", "key" */
	char object_id[REG_ID_SIZE];
	char detail[REG_DETAIL_MAX + 1];     /* compact JSON object text */
	char request_id[REG_REQUEST_ID_MAX + 1];
	uint8_t prev_hash[REG_HASH_LEN];
	uint8_t hash[REG_HASH_LEN];
};

/* The chain head: what to export and keep elsewhere, to later prove the log was
 * neither rewritten nor truncated (seq 0 and a zero hash for an empty log). */
struct reg_audit_head {
	int64_t seq;
	int64_t ts_ms;
	uint8_t hash[REG_HASH_LEN];
};

/* The hash of an entry (docs/SESSION.md gives the byte layout, so anyone can check a
 * chain with nothing but the entries): SHA-256 of a domain tag, prev_hash, seq, ts_ms
 * and the length-prefixed text fields. */
void reg_audit_hash(const struct reg_audit_entry *e, uint8_t out[REG_HASH_LEN]);

int reg_audit_list(struct reg *r, int64_t after_seq, size_t limit, struct reg_audit_entry **items,
		   size_t *n, int64_t *next);
int reg_audit_head(struct reg *r, struct reg_audit_head *out);

struct reg_audit_report {
	bool ok;               /* all of the below hold */
	int64_t entries;       /* entries checked */
	int64_t first_bad_seq; /* first entry that fails, 0 when none */
	bool triggers_ok;      /* the append-only triggers are in place */
	bool anchor_ok;        /* the anchor given matches (true when none given) */
	char reason[160];      /* what failed first, "" when ok */
	struct reg_audit_head head;
};
/* Recomputes the whole chain in one snapshot: each entry's sequence number, its link
 * to the previous hash, its own hash; that the triggers are present; and, when anchor
 * is given (a head exported earlier), that the entry at anchor->seq still has that
 * hash, which catches a rewrite of the whole chain or its truncation. Returns 0 when
 * the check ran (the verdict is in *rep), an error when it could not. */
int reg_audit_verify(struct reg *r, const struct reg_audit_head *anchor,
		     struct reg_audit_report *rep) __attribute__((warn_unused_result));

/* ---- operations ---- */

/* A small durable write (outside the audit log, in table meta): 0 when the database
 * accepts writes now, else the reason in reg_last_error(). For readiness probes. */
int reg_probe(struct reg *r);

struct reg_stats {
	uint64_t commits;      /* write transactions committed */
	uint64_t failures;     /* transactions that failed on our side (5xx: I/O, busy, ...) */
	uint64_t busy_retries; /* transactions run again after SQLITE_BUSY */
	uint64_t busy_giveups; /* transactions that stayed busy past the retries */
};
void reg_stats(const struct reg *r, struct reg_stats *out);

/* Names of enum values, and their parsers (ERR_INVALID for anything else). */
const char *reg_state_name(enum reg_state s);
int reg_state_parse(const char *s, enum reg_state *out);
const char *reg_party_role_name(enum reg_party_role r);
int reg_party_role_parse(const char *s, enum reg_party_role *out);
const char *reg_party_status_name(enum reg_party_status s);
int reg_party_status_parse(const char *s, enum reg_party_status *out);
/* Whether s is an identifier of the given prefix ("ses_", "mdl_", "pty_", "key_"). */
bool reg_id_ok(const char *s, const char *prefix);

/* ---- the parties' name of a session ----
 * The parties name a session with 32 lowercase hex digits (16 bytes, also the session
 * id every clientio message is bound to); the registry names it "ses_" + 16 hex. This
 * is the one mapping between the two, used by whoever opens a session at the parties
 * (the session service), whoever relays to them (the gateway) and the client, which
 * computes it itself:
 *
 *   hex(first 16 bytes of SHA-256("mimir.party-session.v1" || ses_id))
 *
 * (the domain string without its NUL, then the 20 bytes of the id). Deterministic, so
 * nobody stores it; domain-separated, so it is no other use of a hash of the id.
 * ERR_INVALID when ses_id is not a session id. */
#define REG_PARTY_SESSION_HEX 32
int reg_party_session_id(const char *ses_id, char out[REG_PARTY_SESSION_HEX + 1]);

#endif
