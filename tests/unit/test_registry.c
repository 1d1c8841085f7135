/* registry: schema migrations (fresh, upgrade keeping data, a failing one leaving
 * nothing, a newer database refused, foreign files refused), the session state
 * machine in code and in the database's triggers, API keys (layout, keyed hash with a
 * known answer, scoping, revocation, expiry, never stored in clear), the audit chain
 * (known-answer hash, tampering through a separate SQLite connection detected, the
 * anchor catching truncation and rewrites), the busy-retry runner, and the clear
 * errors of a full disk and a read-only database with the data intact afterwards. */
#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <linux/capability.h>
#include <pthread.h>
#include <signal.h>
#include <sqlite3.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <time.h>
#include <unistd.h>

#include <sodium.h>

#include "err/err.h"
#include "log/log.h"
#include "registry/registry.h"
#include "testutil.h"

static char dir[256], db_path[320];
static uint8_t secret[REG_SECRET_LEN];
static const struct reg_actor who = {"admin:test", "req-1"};
static int64_t fake_now = 1700000000000;

static int64_t fake_clock(void *arg)
{
	(void)arg;
	return fake_now;
}

static void setup(void)
{
	ck_assert_int_ge(sodium_init(), 0);
	log_set_level(LOG_LEVEL_WARN);
	tu_tmpdir(dir, sizeof dir);
	ck_assert_str_ne(dir, "");
	snprintf(db_path, sizeof db_path, "%s/reg.db", dir);
	for (int i = 0; i < REG_SECRET_LEN; i++)
		secret[i] = (uint8_t)i;
	fake_now = 1700000000000;
}

static void teardown(void)
{
	chmod(dir, 0700);
	tu_rmrf(dir);
}

static struct reg *open_with(const struct reg_opts *extra)
{
	struct reg_opts o = extra ? *extra : (struct reg_opts){0};
	o.path = db_path;
	o.secret = secret;
	o.clock_ms = fake_clock;
	struct reg *r;
	int rc = reg_open(&r, &o);
	ck_assert_msg(rc == 0, "reg_open: %d %s", rc, reg_last_error()->detail);
	return r;
}

static struct reg *open_reg(void)
{
	return open_with(NULL);
}

/* A separate connection, as someone with the file would use. */
static int raw_sql(const char *sql, char *err, size_t cap)
{
	sqlite3 *db;
	ck_assert_int_eq(sqlite3_open(db_path, &db), SQLITE_OK);
	char *msg = NULL;
	int rc = sqlite3_exec(db, sql, NULL, NULL, &msg);
	if (err)
		snprintf(err, cap, "%s", msg ? msg : "");
	sqlite3_free(msg);
	sqlite3_close(db);
	return rc;
}

static int64_t raw_int(const char *sql)
{
	sqlite3 *db;
	sqlite3_stmt *st;
	ck_assert_int_eq(sqlite3_open_v2(db_path, &db, SQLITE_OPEN_READONLY, NULL), SQLITE_OK);
	ck_assert_int_eq(sqlite3_prepare_v2(db, sql, -1, &st, NULL), SQLITE_OK);
	ck_assert_int_eq(sqlite3_step(st), SQLITE_ROW);
	int64_t v = sqlite3_column_int64(st, 0);
	sqlite3_finalize(st);
	sqlite3_close(db);
	return v;
}

static void make_model(struct reg *r, const char *name, size_t n_shares, struct reg_model *m)
{
	uint8_t shares[REG_MAX_SHARES][REG_HASH_LEN];
	randombytes_buf(shares, sizeof shares);
	struct reg_model_spec s = {
		.name = name,
		.dims = {64, 172, 5, 8, 4, 512, 512},
		.n_shares = n_shares,
		.shares = (const uint8_t(*)[REG_HASH_LEN])shares,
	};
	int rc = reg_model_create(r, &who, &s, m);
	ck_assert_msg(rc == 0, "model: %s", reg_last_error()->detail);
}

static void make_party(struct reg *r, const char *identity, struct reg_party *p)
{
	uint8_t pk[32], sk[32];
	crypto_box_keypair(pk, sk);
	struct reg_party_spec s = {.identity = identity, .sealing_key = pk,
				   .endpoint = "https://localhost:9000"};
	int rc = reg_party_create(r, &who, &s, p);
	ck_assert_msg(rc == 0, "party: %s", reg_last_error()->detail);
}

/* A model with 3 shares, parties party0..party2, and a session over them. */
static void make_session(struct reg *r, struct reg_session *s, int64_t ttl_s)
{
	struct reg_model m;
	struct reg_party p;
	char name[32];
	snprintf(name, sizeof name, "m-%lld", (long long)randombytes_random());
	make_model(r, name, 3, &m);
	for (int i = 0; i < 3; i++) {
		char id[24];
		snprintf(id, sizeof id, "party%d", i);
		struct reg_party *items;
		size_t n;
		int64_t next;
		/* Parties are created once per database. */
		ck_assert_int_eq(reg_party_list(r, -1, 0, REG_PAGE_MAX, &items, &n, &next), 0);
		bool have = false;
		for (size_t j = 0; j < n; j++)
			have = have || strcmp(items[j].identity, id) == 0;
		free(items);
		if (!have)
			make_party(r, id, &p);
	}
	struct reg_session_spec ss = {.model_id = m.id, .ttl_s = ttl_s};
	int rc = reg_session_create(r, &who, &ss, s);
	ck_assert_msg(rc == 0, "session: %s", reg_last_error()->detail);
}

static void expect_fail(int rc, int code, const char *field)
{
	const struct reg_error *e = reg_last_error();
	ck_assert_msg(rc == code, "rc %d, want %d (%s)", rc, code, e->detail);
	ck_assert_int_eq(e->code, code);
	ck_assert_msg(e->detail[0], "no detail");
	if (field)
		ck_assert_str_eq(e->field, field);
}

/* ---- migrations ---- */

START_TEST(test_migrations_fresh_and_reopen)
{
	struct reg *r = open_reg();
	size_t n;
	reg_migrations(&n);
	ck_assert_int_ge(n, 1);
	ck_assert_int_eq(reg_schema_version(r), (int)n);
	reg_close(r);
	ck_assert_int_eq(raw_int("SELECT count(*) FROM schema_version"), (int64_t)n);
	ck_assert_int_eq(raw_int("PRAGMA application_id"), 0x4D494D52);
	ck_assert_int_eq(raw_int("SELECT count(*) FROM sqlite_schema WHERE name = 'audit'"), 1);
	/* WAL is a property of the file. */
	sqlite3 *db;
	sqlite3_stmt *st;
	ck_assert_int_eq(sqlite3_open(db_path, &db), SQLITE_OK);
	ck_assert_int_eq(sqlite3_prepare_v2(db, "PRAGMA journal_mode", -1, &st, NULL), SQLITE_OK);
	ck_assert_int_eq(sqlite3_step(st), SQLITE_ROW);
	ck_assert_str_eq((const char *)sqlite3_column_text(st, 0), "wal");
	sqlite3_finalize(st);
	sqlite3_close(db);
	/* Reopening applies nothing again. */
	r = open_reg();
	reg_close(r);
	ck_assert_int_eq(raw_int("SELECT count(*) FROM schema_version"), (int64_t)n);
}
END_TEST

START_TEST(test_migration_upgrade_keeps_data)
{
	size_t n;
	const struct reg_migration *b = reg_migrations(&n);
	struct reg_opts o = {.migrations = b, .n_migrations = n};
	struct reg *r = open_with(&o);
	struct reg_model m, got;
	make_model(r, "before-upgrade", 2, &m);
	reg_close(r);
	struct reg_migration *more = calloc(n + 1, sizeof *more);
	memcpy(more, b, n * sizeof *more);
	more[n] = (struct reg_migration){(int)n + 1, "model licence",
					 "ALTER TABLE models ADD COLUMN licence TEXT NOT NULL DEFAULT 'none';"};
	o.migrations = more;
	o.n_migrations = n + 1;
	r = open_with(&o);
	ck_assert_int_eq(reg_schema_version(r), (int)n + 1);
	ck_assert_int_eq(reg_model_get(r, m.id, &got), 0);
	ck_assert_str_eq(got.name, "before-upgrade");
	ck_assert_int_eq(got.n_shares, 2);
	ck_assert_mem_eq(got.shares, m.shares, 2 * REG_HASH_LEN);
	reg_close(r);
	ck_assert_int_eq(raw_int("SELECT count(*) FROM models WHERE licence = 'none'"), 1);
	/* This build (without the new migration) now refuses the newer database. */
	struct reg_opts plain = {.path = db_path, .secret = secret};
	ck_assert_int_eq(reg_open(&r, &plain), ERR_UNSUPPORTED);
	ck_assert_ptr_null(r);
	ck_assert_ptr_nonnull(strstr(reg_last_error()->detail, "newer"));
	free(more);
}
END_TEST

START_TEST(test_migration_failure_leaves_nothing)
{
	size_t n;
	const struct reg_migration *b = reg_migrations(&n);
	struct reg *r = open_reg();
	reg_close(r);
	struct reg_migration *bad = calloc(n + 1, sizeof *bad);
	memcpy(bad, b, n * sizeof *bad);
	bad[n] = (struct reg_migration){(int)n + 1, "half done",
					"CREATE TABLE half (a INTEGER); INSERT INTO no_such_table VALUES (1);"};
	struct reg_opts o = {.path = db_path, .secret = secret, .migrations = bad, .n_migrations = n + 1};
	ck_assert_int_eq(reg_open(&r, &o), ERR_DB);
	ck_assert_ptr_nonnull(strstr(reg_last_error()->detail, "half done"));
	/* All of the migration or nothing of it. */
	ck_assert_int_eq(raw_int("SELECT count(*) FROM sqlite_schema WHERE name = 'half'"), 0);
	ck_assert_int_eq(raw_int("SELECT max(version) FROM schema_version"), (int64_t)n);
	free(bad);
	/* And the database still opens with this build's schema. */
	r = open_reg();
	reg_close(r);
}
END_TEST

START_TEST(test_foreign_files_refused)
{
	struct reg *r;
	struct reg_opts o = {.path = db_path, .secret = secret};
	/* Another application's SQLite database is left alone. */
	ck_assert_int_eq(raw_sql("CREATE TABLE invoices (id INTEGER)", NULL, 0), SQLITE_OK);
	ck_assert_int_eq(reg_open(&r, &o), ERR_UNSUPPORTED);
	ck_assert_int_eq(raw_int("SELECT count(*) FROM sqlite_schema"), 1);
	/* A file that is not SQLite at all. */
	char junk[320];
	snprintf(junk, sizeof junk, "%s/junk.db", dir);
	char garbage[4096];
	memset(garbage, 'x', sizeof garbage);
	ck_assert_int_eq(tu_write_file(junk, garbage, sizeof garbage), 0);
	o.path = junk;
	ck_assert_int_eq(reg_open(&r, &o), ERR_DB);
	ck_assert_ptr_nonnull(strstr(reg_last_error()->detail, "not a database"));
	/* A directory that does not exist. */
	o.path = "/nonexistent-dir/reg.db";
	ck_assert_int_eq(reg_open(&r, &o), ERR_IO);
	ck_assert_ptr_nonnull(strstr(reg_last_error()->detail, "/nonexistent-dir/reg.db"));
}
END_TEST

START_TEST(test_wrong_secret_refused)
{
	struct reg *r = open_reg();
	reg_close(r);
	uint8_t other[REG_SECRET_LEN];
	memset(other, 7, sizeof other);
	struct reg_opts o = {.path = db_path, .secret = other};
	ck_assert_int_eq(reg_open(&r, &o), ERR_CONFIG);
	ck_assert_ptr_nonnull(strstr(reg_last_error()->detail, "secret"));
	o.secret = secret;
	ck_assert_int_eq(reg_open(&r, &o), 0);
	reg_close(r);
}
END_TEST

START_TEST(test_secret_file)
{
	char path[320];
	uint8_t a[REG_SECRET_LEN], b[REG_SECRET_LEN];
	snprintf(path, sizeof path, "%s/secret", dir);
	ck_assert_int_eq(reg_secret_load(path, false, a), ERR_IO);
	ck_assert_int_eq(reg_secret_load(path, true, a), 0);
	struct stat st;
	ck_assert_int_eq(stat(path, &st), 0);
	ck_assert_int_eq(st.st_mode & 0777, 0600);
	size_t len;
	char *text = tu_read_file(path, &len);
	ck_assert_int_eq(len, 65);
	ck_assert_int_eq(text[64], '\n');
	free(text);
	ck_assert_int_eq(reg_secret_load(path, true, b), 0); /* not regenerated */
	ck_assert_mem_eq(a, b, sizeof a);
	chmod(path, 0644);
	ck_assert_int_eq(reg_secret_load(path, false, b), ERR_FORBIDDEN);
	ck_assert_ptr_nonnull(strstr(reg_last_error()->detail, "chmod 600"));
	ck_assert_str_eq(reg_last_error()->field, "keys.secret_file");
	chmod(path, 0600);
	ck_assert_int_eq(tu_write_file(path, "abcd\n", 5), 0);
	ck_assert_int_eq(reg_secret_load(path, false, b), ERR_PARSE);
	static const uint8_t zero[REG_SECRET_LEN];
	ck_assert_mem_eq(b, zero, sizeof b); /* wiped on failure */
}
END_TEST

/* ---- models, parties, pagination ---- */

START_TEST(test_model_validation_and_pages)
{
	struct reg *r = open_reg();
	uint8_t shares[3][REG_HASH_LEN];
	randombytes_buf(shares, sizeof shares);
	struct reg_model m;
	struct reg_model_spec s = {.name = "ok", .dims = {64, 172, 5, 8, 4, 512, 512}, .n_shares = 3,
				   .shares = (const uint8_t(*)[REG_HASH_LEN])shares};
	s.name = "bad name";
	expect_fail(reg_model_create(r, &who, &s, &m), ERR_INVALID, "name");
	s.name = "ok";
	s.dims.n_heads = 7;
	expect_fail(reg_model_create(r, &who, &s, &m), ERR_INVALID, "dims.n_heads");
	s.dims.n_heads = 8;
	s.dims.seq_len = 0;
	expect_fail(reg_model_create(r, &who, &s, &m), ERR_RANGE, "dims.seq_len");
	s.dims.seq_len = 512;
	memcpy(shares[2], shares[0], REG_HASH_LEN);
	expect_fail(reg_model_create(r, &who, &s, &m), ERR_INVALID, "shares[2]");
	randombytes_buf(shares[2], REG_HASH_LEN);
	s.n_shares = 1;
	expect_fail(reg_model_create(r, &who, &s, &m), ERR_RANGE, "shares");
	s.n_shares = 3;
	ck_assert_int_eq(reg_model_create(r, &who, &s, &m), 0);
	expect_fail(reg_model_create(r, &who, &s, &m), ERR_CONFLICT, "name");
	/* Refused inputs wrote nothing, the good one wrote one audit entry. */
	struct reg_audit_head h;
	ck_assert_int_eq(reg_audit_head(r, &h), 0);
	ck_assert_int_eq(h.seq, 1);
	for (int i = 0; i < 4; i++) {
		char name[16];
		snprintf(name, sizeof name, "m%d", i);
		make_model(r, name, 2, &m);
	}
	/* 5 models in pages of 2: 2, 2, 1, each once, in creation order. */
	int64_t after = 0, next;
	size_t n, total = 0;
	char seen[5][REG_ID_SIZE];
	int pages = 0;
	do {
		struct reg_model *items;
		ck_assert_int_eq(reg_model_list(r, after, 2, &items, &n, &next), 0);
		for (size_t i = 0; i < n; i++) {
			for (size_t j = 0; j < total; j++)
				ck_assert_str_ne(seen[j], items[i].id);
			snprintf(seen[total++], REG_ID_SIZE, "%s", items[i].id);
		}
		free(items);
		after = next;
		pages++;
	} while (next);
	ck_assert_int_eq(total, 5);
	ck_assert_int_eq(pages, 3);
	ck_assert_int_eq(n, 1);
	struct reg_model *items;
	expect_fail(reg_model_list(r, 0, 0, &items, &n, &next), ERR_RANGE, "limit");
	expect_fail(reg_model_list(r, 0, REG_PAGE_MAX + 1, &items, &n, &next), ERR_RANGE, "limit");
	expect_fail(reg_model_get(r, "mdl_0000000000000000", &m), ERR_NOT_FOUND, "id");
	expect_fail(reg_model_get(r, "nonsense", &m), ERR_NOT_FOUND, "id");
	ck_assert_int_eq(reg_model_delete(r, &who, seen[4]), 0);
	expect_fail(reg_model_get(r, seen[4], &m), ERR_NOT_FOUND, "id");
	reg_close(r);
}
END_TEST

START_TEST(test_party_validation_and_update)
{
	struct reg *r = open_reg();
	struct reg_party p, q;
	uint8_t pk[32], sk[32], small[32] = {1};
	crypto_box_keypair(pk, sk);
	struct reg_party_spec s = {.identity = "party0", .sealing_key = small};
	expect_fail(reg_party_create(r, &who, &s, &p), ERR_INVALID, "sealing_key");
	s.sealing_key = pk;
	s.endpoint = "ftp://x";
	expect_fail(reg_party_create(r, &who, &s, &p), ERR_INVALID, "endpoint");
	s.endpoint = NULL;
	s.attestation = "[1, 2]";
	expect_fail(reg_party_create(r, &who, &s, &p), ERR_INVALID, "attestation");
	s.attestation = "{\"platform\": \"simulated\", \"measurement\": \"ab\"}";
	s.identity = "bad\nname";
	expect_fail(reg_party_create(r, &who, &s, &p), ERR_INVALID, "identity");
	s.identity = "party0";
	ck_assert_int_eq(reg_party_create(r, &who, &s, &p), 0);
	ck_assert_str_eq(p.attestation, "{\"measurement\":\"ab\",\"platform\":\"simulated\"}");
	ck_assert_int_eq(p.status, REG_PARTY_ACTIVE);
	ck_assert(!p.has_fingerprint);
	expect_fail(reg_party_create(r, &who, &s, &q), ERR_CONFLICT, "identity");
	struct reg_audit_head h0, h1;
	ck_assert_int_eq(reg_audit_head(r, &h0), 0);
	/* An update that changes nothing writes nothing. */
	struct reg_party_update u = {.set_status = true, .status = REG_PARTY_ACTIVE};
	ck_assert_int_eq(reg_party_update(r, &who, p.id, &u, &q), 0);
	ck_assert_int_eq(reg_audit_head(r, &h1), 0);
	ck_assert_int_eq(h1.seq, h0.seq);
	uint8_t fp[32];
	randombytes_buf(fp, sizeof fp);
	u = (struct reg_party_update){.set_status = true, .status = REG_PARTY_SUSPENDED,
				      .set_fingerprint = true, .fingerprint = fp, .endpoint = "https://p0:1"};
	ck_assert_int_eq(reg_party_update(r, &who, p.id, &u, &q), 0);
	ck_assert_int_eq(reg_party_get(r, p.id, &q), 0);
	ck_assert_int_eq(q.status, REG_PARTY_SUSPENDED);
	ck_assert(q.has_fingerprint);
	ck_assert_mem_eq(q.fingerprint, fp, 32);
	ck_assert_str_eq(q.endpoint, "https://p0:1");
	ck_assert_int_eq(reg_audit_head(r, &h1), 0);
	ck_assert_int_eq(h1.seq, h0.seq + 1);
	u = (struct reg_party_update){.set_fingerprint = true, .fingerprint = NULL};
	ck_assert_int_eq(reg_party_update(r, &who, p.id, &u, &q), 0);
	ck_assert(!q.has_fingerprint);
	expect_fail(reg_party_update(r, &who, "pty_0000000000000000", &u, &q), ERR_NOT_FOUND, "id");
	reg_close(r);
}
END_TEST

/* ---- the state machine ---- */

START_TEST(test_state_table)
{
	/* The whole table, edge by edge. */
	static const bool legal[REG_STATE_COUNT][REG_STATE_COUNT] = {
		/*              created ready  active closed failed */
		[REG_STATE_CREATED] = {false, true, false, true, true},
		[REG_STATE_READY] = {false, false, true, true, true},
		[REG_STATE_ACTIVE] = {false, false, false, true, true},
		[REG_STATE_CLOSED] = {false, false, false, false, false},
		[REG_STATE_FAILED] = {false, false, false, false, false},
	};
	for (int f = 0; f < REG_STATE_COUNT; f++)
		for (int t = 0; t < REG_STATE_COUNT; t++)
			ck_assert_msg(reg_state_legal(f, t) == legal[f][t], "%s -> %s",
				      reg_state_name(f), reg_state_name(t));
	enum reg_state s;
	ck_assert_int_eq(reg_state_parse("active", &s), 0);
	ck_assert_int_eq(s, REG_STATE_ACTIVE);
	ck_assert_int_eq(reg_state_parse("Active", &s), ERR_INVALID);
}
END_TEST

START_TEST(test_session_lifecycle)
{
	struct reg *r = open_reg();
	struct reg_session s, t;
	make_session(r, &s, 3600);
	ck_assert_int_eq(s.state, REG_STATE_CREATED);
	ck_assert_int_eq(s.n_parties, 3);
	ck_assert_int_eq(s.fixed_point_bits, 16);
	ck_assert_int_eq(s.max_context, 512);
	ck_assert_int_eq(s.pad_bucket, 16);
	ck_assert_int_eq(s.expires_ms, fake_now + 3600 * 1000);
	/* Ready comes only from the parties. */
	expect_fail(reg_session_transition(r, &who, s.id, REG_STATE_ANY, REG_STATE_READY, NULL, &t),
		    ERR_CONFLICT, "to");
	expect_fail(reg_session_transition(r, &who, s.id, REG_STATE_ANY, REG_STATE_ACTIVE, NULL, &t),
		    ERR_CONFLICT, "to");
	const struct reg_actor pw = {"party:party0", "r"};
	expect_fail(reg_session_report_init(r, &pw, s.id, "stranger", NULL, true, NULL, &t),
		    ERR_FORBIDDEN, NULL);
	for (int i = 0; i < 3; i++) {
		char id[24];
		snprintf(id, sizeof id, "party%d", i);
		ck_assert_int_eq(reg_session_report_init(r, &pw, s.id, id, NULL, true, NULL, &t), 0);
		ck_assert_int_eq(t.state, i < 2 ? REG_STATE_CREATED : REG_STATE_READY);
		/* Saying it twice changes nothing. */
		ck_assert_int_eq(reg_session_report_init(r, &pw, s.id, id, NULL, true, NULL, &t), 0);
	}
	ck_assert_int_eq(t.state, REG_STATE_READY);
	for (size_t i = 0; i < 3; i++)
		ck_assert_int_eq(t.parties[i].init_ms, fake_now);
	/* A guarded move whose guard fails. */
	expect_fail(reg_session_transition(r, &who, s.id, REG_STATE_CREATED, REG_STATE_ACTIVE, NULL, &t),
		    ERR_CONFLICT, "from");
	ck_assert_int_eq(reg_session_transition(r, &who, s.id, REG_STATE_READY, REG_STATE_ACTIVE, NULL, &t), 0);
	ck_assert_int_eq(t.state, REG_STATE_ACTIVE);
	/* To the current state: a no-op, no audit entry. */
	struct reg_audit_head h0, h1;
	ck_assert_int_eq(reg_audit_head(r, &h0), 0);
	ck_assert_int_eq(reg_session_transition(r, &who, s.id, REG_STATE_ANY, REG_STATE_ACTIVE, NULL, &t), 0);
	ck_assert_int_eq(reg_audit_head(r, &h1), 0);
	ck_assert_int_eq(h1.seq, h0.seq);
	ck_assert_int_eq(reg_session_transition(r, &who, s.id, REG_STATE_ANY, REG_STATE_CLOSED, "done", &t), 0);
	ck_assert_str_eq(t.reason, "done");
	/* Closed is final. */
	expect_fail(reg_session_transition(r, &who, s.id, REG_STATE_ANY, REG_STATE_ACTIVE, NULL, &t),
		    ERR_CONFLICT, "to");
	expect_fail(reg_session_transition(r, &who, s.id, REG_STATE_ANY, REG_STATE_FAILED, NULL, &t),
		    ERR_CONFLICT, "to");
	expect_fail(reg_session_report_init(r, &pw, s.id, "party0", NULL, false, "x", &t), ERR_CONFLICT, NULL);
	ck_assert_int_eq(reg_session_get(r, s.id, &t), 0);
	ck_assert_int_eq(t.state, REG_STATE_CLOSED);
	/* The database refuses an illegal edge even from a connection of its own. */
	char err[256], sql[256];
	snprintf(sql, sizeof sql, "UPDATE sessions SET state = 'active' WHERE id = '%s'", s.id);
	ck_assert_int_ne(raw_sql(sql, err, sizeof err), SQLITE_OK);
	ck_assert_ptr_nonnull(strstr(err, "illegal session state transition"));
	ck_assert_int_ne(raw_sql("INSERT INTO sessions (id, model_rid, state, fixed_point_bits, "
				 "max_context, pad_bucket, created_ms, updated_ms, expires_ms) "
				 "VALUES ('x', 1, 'active', 16, 8, 8, 0, 0, 0)", err, sizeof err), SQLITE_OK);
	expect_fail(reg_session_get(r, "ses_0000000000000000", &t), ERR_NOT_FOUND, "id");
	reg_close(r);
}
END_TEST

START_TEST(test_session_failure_pin_expiry)
{
	struct reg *r = open_reg();
	struct reg_session s, t;
	make_session(r, &s, 60);
	/* A party reporting failure fails the session, with its reason. */
	const struct reg_actor pw = {"party:party1", "r"};
	ck_assert_int_eq(reg_session_report_init(r, &pw, s.id, "party1", NULL, false, "out of memory", &t), 0);
	ck_assert_int_eq(t.state, REG_STATE_FAILED);
	ck_assert_ptr_nonnull(strstr(t.reason, "party1"));
	ck_assert_ptr_nonnull(strstr(t.reason, "out of memory"));
	/* A pinned party must present the pinned certificate. */
	make_session(r, &s, 60);
	struct reg_party p;
	ck_assert_int_eq(reg_party_get(r, s.parties[0].party_id, &p), 0);
	uint8_t fp[32], other[32];
	randombytes_buf(fp, 32);
	randombytes_buf(other, 32);
	struct reg_party_update u = {.set_fingerprint = true, .fingerprint = fp};
	ck_assert_int_eq(reg_party_update(r, &who, p.id, &u, &p), 0);
	expect_fail(reg_session_report_init(r, &pw, s.id, p.identity, NULL, true, NULL, &t), ERR_FORBIDDEN, NULL);
	expect_fail(reg_session_report_init(r, &pw, s.id, p.identity, other, true, NULL, &t), ERR_FORBIDDEN, NULL);
	ck_assert_int_eq(reg_session_report_init(r, &pw, s.id, p.identity, fp, true, NULL, &t), 0);
	/* Past its expiry: no more initialisation, no activation; the sweep closes it. */
	fake_now += 61 * 1000;
	expect_fail(reg_session_report_init(r, &pw, s.id, "party1", NULL, true, NULL, &t), ERR_CONFLICT, NULL);
	const struct reg_actor sys = {"system:session", ""};
	size_t n;
	ck_assert_int_eq(reg_session_expire(r, &sys, &n), 0);
	ck_assert_int_eq(n, 1); /* the failed one is not touched */
	ck_assert_int_eq(reg_session_get(r, s.id, &t), 0);
	ck_assert_int_eq(t.state, REG_STATE_CLOSED);
	ck_assert_str_eq(t.reason, "expired");
	ck_assert_int_eq(reg_session_expire(r, &sys, &n), 0);
	ck_assert_int_eq(n, 0);
	uint64_t counts[REG_STATE_COUNT];
	ck_assert_int_eq(reg_session_counts(r, counts), 0);
	ck_assert_int_eq(counts[REG_STATE_CLOSED], 1);
	ck_assert_int_eq(counts[REG_STATE_FAILED], 1);
	/* The expiry is in the audit log as the system's doing. */
	struct reg_audit_entry *e;
	int64_t next;
	ck_assert_int_eq(reg_audit_list(r, 0, REG_PAGE_MAX, &e, &n, &next), 0);
	ck_assert_str_eq(e[n - 1].actor, "system:session");
	ck_assert_str_eq(e[n - 1].action, "session.transition");
	ck_assert_ptr_nonnull(strstr(e[n - 1].detail, "\"reason\":\"expired\""));
	free(e);
	reg_close(r);
}
END_TEST

START_TEST(test_session_party_allocation)
{
	struct reg *r = open_reg();
	struct reg_model m;
	struct reg_party p[4];
	struct reg_session s;
	make_model(r, "m", 3, &m);
	make_party(r, "a", &p[0]);
	make_party(r, "b", &p[1]);
	struct reg_session_spec ss = {.model_id = m.id, .ttl_s = 60};
	expect_fail(reg_session_create(r, &who, &ss, &s), ERR_CONFLICT, "parties");
	make_party(r, "c", &p[2]);
	make_party(r, "d", &p[3]);
	/* Explicit parties: exactly one per share, each once, each a known active party. */
	const char *two[] = {p[0].id, p[1].id};
	ss.party_ids = two;
	ss.n_parties = 2;
	expect_fail(reg_session_create(r, &who, &ss, &s), ERR_INVALID, "parties");
	const char *dup[] = {p[0].id, p[1].id, p[0].id};
	ss.party_ids = dup;
	ss.n_parties = 3;
	expect_fail(reg_session_create(r, &who, &ss, &s), ERR_INVALID, "parties[2]");
	const char *ghost[] = {p[0].id, "pty_0000000000000000", p[2].id};
	ss.party_ids = ghost;
	expect_fail(reg_session_create(r, &who, &ss, &s), ERR_INVALID, "parties[1]");
	ss.n_parties = 0;
	ss.model_id = "mdl_0000000000000000";
	expect_fail(reg_session_create(r, &who, &ss, &s), ERR_INVALID, "model");
	ss.model_id = m.id;
	ss.max_context = 513;
	expect_fail(reg_session_create(r, &who, &ss, &s), ERR_RANGE, "max_context");
	ss.max_context = 8;
	ss.pad_bucket = 9;
	expect_fail(reg_session_create(r, &who, &ss, &s), ERR_RANGE, "pad_bucket");
	ss.pad_bucket = 0;
	ss.fixed_point_bits = 40;
	expect_fail(reg_session_create(r, &who, &ss, &s), ERR_RANGE, "fixed_point_bits");
	ss.fixed_point_bits = 0;
	/* Allocation: the least loaded active parties first. */
	ck_assert_int_eq(reg_session_create(r, &who, &ss, &s), 0);
	ck_assert_int_eq(s.pad_bucket, 8);
	ck_assert_str_eq(s.parties[0].party_id, p[0].id);
	ck_assert_str_eq(s.parties[2].party_id, p[2].id);
	ck_assert_int_eq(reg_session_create(r, &who, &ss, &s), 0);
	ck_assert_str_eq(s.parties[0].party_id, p[3].id); /* d was idle */
	struct reg_party_update u = {.set_status = true, .status = REG_PARTY_SUSPENDED};
	ck_assert_int_eq(reg_party_update(r, &who, p[1].id, &u, &p[1]), 0);
	const char *susp[] = {p[0].id, p[1].id, p[2].id};
	ss.party_ids = susp;
	ss.n_parties = 3;
	expect_fail(reg_session_create(r, &who, &ss, &s), ERR_CONFLICT, "parties[1]");
	/* A dealer is not a party. */
	uint8_t pk[32], sk[32];
	crypto_box_keypair(pk, sk);
	struct reg_party dealer;
	struct reg_party_spec ds = {.identity = "dealer", .role = REG_PARTY_ROLE_DEALER, .sealing_key = pk};
	ck_assert_int_eq(reg_party_create(r, &who, &ds, &dealer), 0);
	const char *with_dealer[] = {p[0].id, dealer.id, p[2].id};
	ss.party_ids = with_dealer;
	expect_fail(reg_session_create(r, &who, &ss, &s), ERR_INVALID, "parties[1]");
	reg_close(r);
}
END_TEST

/* ---- API keys ---- */

START_TEST(test_keys)
{
	struct reg *r = open_reg();
	struct reg_session s1, s2;
	make_session(r, &s1, 3600);
	make_session(r, &s2, 3600);
	struct reg_key k, k2;
	char text[REG_KEY_TEXT_SIZE], id[REG_ID_SIZE];
	const char *scope[] = {s1.id};
	struct reg_key_spec ks = {.name = "alice", .session_ids = scope, .n_sessions = 1, .ttl_s = 600};
	ck_assert_int_eq(reg_key_create(r, &who, &ks, &k, text), 0);
	ck_assert_int_eq(strlen(text), REG_KEY_TEXT_LEN);
	ck_assert_int_eq(strncmp(text, REG_KEY_PREFIX, strlen(REG_KEY_PREFIX)), 0);
	ck_assert_int_eq(strncmp(text + strlen(REG_KEY_PREFIX), k.id + 4, 16), 0);
	ck_assert_int_eq(k.expires_ms, fake_now + 600 * 1000);
	enum reg_key_verdict v;
	ck_assert_int_eq(reg_key_verify(r, text, s1.id, &v, id), 0);
	ck_assert_int_eq(v, REG_KEY_VALID);
	ck_assert_str_eq(id, k.id);
	ck_assert_int_eq(reg_key_verify(r, text, NULL, &v, id), 0);
	ck_assert_int_eq(v, REG_KEY_VALID);
	ck_assert_int_eq(reg_key_verify(r, text, s2.id, &v, id), 0);
	ck_assert_int_eq(v, REG_KEY_WRONG_SESSION);
	/* One character of the secret part changed: unknown, and the id is not echoed. */
	char forged[REG_KEY_TEXT_SIZE];
	memcpy(forged, text, sizeof forged);
	forged[REG_KEY_TEXT_LEN - 1] = forged[REG_KEY_TEXT_LEN - 1] == 'A' ? 'B' : 'A';
	ck_assert_int_eq(reg_key_verify(r, forged, s1.id, &v, id), 0);
	ck_assert_int_eq(v, REG_KEY_UNKNOWN);
	ck_assert_str_eq(id, "");
	static const char *const malformed[] = {"", "mimir_sk_", "Bearer x", "mimir_sk_0123456789abcdef_short",
						"mimir_sk_0123456789ABCDEF_AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA"};
	for (size_t i = 0; i < sizeof malformed / sizeof *malformed; i++) {
		ck_assert_int_eq(reg_key_verify(r, malformed[i], s1.id, &v, id), 0);
		ck_assert_msg(v == REG_KEY_MALFORMED, "%s: %s", malformed[i], reg_key_verdict_name(v));
	}
	ck_assert_int_eq(reg_key_verify(r, NULL, s1.id, &v, id), 0);
	ck_assert_int_eq(v, REG_KEY_MALFORMED);
	/* Neither the key nor its secret part is anywhere in the database files. */
	reg_close(r);
	const char *files[] = {"reg.db", "reg.db-wal"};
	for (size_t i = 0; i < 2; i++) {
		char path[400];
		size_t len;
		snprintf(path, sizeof path, "%s/%s", dir, files[i]);
		char *data = tu_read_file(path, &len);
		if (!data)
			continue;
		ck_assert_ptr_null(memmem(data, len, text + 26, 43));
		free(data);
	}
	r = open_reg();
	/* Expiry by the clock, then revocation, which is final. */
	fake_now += 601 * 1000;
	ck_assert_int_eq(reg_key_verify(r, text, s1.id, &v, id), 0);
	ck_assert_int_eq(v, REG_KEY_EXPIRED);
	ck_assert_int_eq(reg_key_revoke(r, &who, k.id, &k2), 0);
	ck_assert_int_eq(k2.revoked_ms, fake_now);
	ck_assert_int_eq(reg_key_verify(r, text, s1.id, &v, id), 0);
	ck_assert_int_eq(v, REG_KEY_REVOKED);
	struct reg_audit_head h0, h1;
	ck_assert_int_eq(reg_audit_head(r, &h0), 0);
	ck_assert_int_eq(reg_key_revoke(r, &who, k.id, &k2), 0);
	ck_assert_int_eq(reg_audit_head(r, &h1), 0);
	ck_assert_int_eq(h1.seq, h0.seq);
	char err[256], sql[256];
	snprintf(sql, sizeof sql, "UPDATE api_keys SET revoked_ms = NULL WHERE id = '%s'", k.id);
	ck_assert_int_ne(raw_sql(sql, err, sizeof err), SQLITE_OK);
	ck_assert_ptr_nonnull(strstr(err, "stays revoked"));
	snprintf(sql, sizeof sql, "UPDATE api_keys SET hash = zeroblob(32) WHERE id = '%s'", k.id);
	ck_assert_int_ne(raw_sql(sql, err, sizeof err), SQLITE_OK);
	/* Scope rules. */
	const char *two[] = {s1.id, s2.id};
	ks = (struct reg_key_spec){.session_ids = two, .n_sessions = 2};
	ck_assert_int_eq(reg_key_create(r, &who, &ks, &k, text), 0);
	ck_assert_int_eq(k.expires_ms, 0);
	ck_assert_int_eq(reg_key_verify(r, text, s2.id, &v, id), 0);
	ck_assert_int_eq(v, REG_KEY_VALID);
	const char *dup[] = {s1.id, s1.id};
	ks.session_ids = dup;
	expect_fail(reg_key_create(r, &who, &ks, &k, text), ERR_INVALID, "sessions[1]");
	const char *ghost[] = {"ses_0000000000000000"};
	ks = (struct reg_key_spec){.session_ids = ghost, .n_sessions = 1};
	expect_fail(reg_key_create(r, &who, &ks, &k, text), ERR_INVALID, "sessions[0]");
	struct reg_session t;
	ck_assert_int_eq(reg_session_transition(r, &who, s2.id, REG_STATE_ANY, REG_STATE_CLOSED, NULL, &t), 0);
	const char *closed[] = {s2.id};
	ks.session_ids = closed;
	expect_fail(reg_key_create(r, &who, &ks, &k, text), ERR_CONFLICT, "sessions[0]");
	ks.n_sessions = 0;
	expect_fail(reg_key_create(r, &who, &ks, &k, text), ERR_RANGE, "sessions");
	/* Listing by session. */
	struct reg_key *items;
	size_t n;
	int64_t next;
	ck_assert_int_eq(reg_key_list(r, s2.id, 0, 10, &items, &n, &next), 0);
	ck_assert_int_eq(n, 1);
	ck_assert_int_eq(items[0].n_sessions, 2);
	free(items);
	ck_assert_int_eq(reg_key_list(r, NULL, 0, 10, &items, &n, &next), 0);
	ck_assert_int_eq(n, 2);
	free(items);
	reg_close(r);
}
END_TEST

START_TEST(test_key_hash_known_answer)
{
	/* The stored hash is BLAKE2b-256 keyed with the secret over "mimir-api-key-v1\0"
	 * and the key text; the expected value was computed with Python's hashlib. */
	struct reg *r = open_reg();
	struct reg_session s;
	make_session(r, &s, 3600);
	reg_close(r);
	char sql[1024];
	snprintf(sql, sizeof sql,
		 "INSERT INTO api_keys (id, name, hash, created_ms) VALUES ('key_0123456789abcdef', 'kat', "
		 "x'723fc8e7c1b1cc785778c7863d3677ebec41c35c3cab5b5b121278bec724613a', 0);"
		 "INSERT INTO api_key_scopes (key_rid, session_rid) SELECT k.rid, s.rid FROM api_keys k, "
		 "sessions s WHERE k.id = 'key_0123456789abcdef' AND s.id = '%s';", s.id);
	ck_assert_int_eq(raw_sql(sql, NULL, 0), SQLITE_OK);
	r = open_reg();
	enum reg_key_verdict v;
	char id[REG_ID_SIZE];
	ck_assert_int_eq(reg_key_verify(r, "mimir_sk_0123456789abcdef_AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA",
					s.id, &v, id), 0);
	ck_assert_int_eq(v, REG_KEY_VALID);
	ck_assert_str_eq(id, "key_0123456789abcdef");
	reg_close(r);
}
END_TEST

/* ---- the audit chain ---- */

START_TEST(test_audit_hash_known_answer)
{
	/* Layout from docs/SESSION.md; expected value computed with Python's hashlib. */
	struct reg_audit_entry e = {.seq = 1, .ts_ms = 1700000000000};
	for (int i = 0; i < REG_HASH_LEN; i++)
		e.prev_hash[i] = (uint8_t)i;
	snprintf(e.actor, sizeof e.actor, "admin:alice");
	snprintf(e.action, sizeof e.action, "model.create");
	snprintf(e.object_type, sizeof e.object_type, "model");
	snprintf(e.object_id, sizeof e.object_id, "mdl_0123456789abcdef");
	snprintf(e.detail, sizeof e.detail, "{\"name\":\"m\"}");
	snprintf(e.request_id, sizeof e.request_id, "req-1");
	uint8_t h[REG_HASH_LEN], want[REG_HASH_LEN];
	reg_audit_hash(&e, h);
	ck_assert_int_eq(sodium_hex2bin(want, sizeof want,
					"7f76176c84dbfa7e17a474d7be903f19fde220f3409e421e68f3e27178bd2a38",
					64, NULL, NULL, NULL), 0);
	ck_assert_mem_eq(h, want, REG_HASH_LEN);
}
END_TEST

/* Some writes of every kind; returns the head. */
static void audited_writes(struct reg *r, struct reg_audit_head *head)
{
	struct reg_session s, t;
	make_session(r, &s, 3600); /* model, 3 parties, session: 5 entries */
	ck_assert_int_eq(reg_session_transition(r, &who, s.id, REG_STATE_ANY, REG_STATE_CLOSED, "x", &t), 0);
	ck_assert_int_eq(reg_audit_head(r, head), 0);
	ck_assert_int_eq(head->seq, 6);
}

START_TEST(test_audit_chain_intact)
{
	struct reg *r = open_reg();
	struct reg_audit_head head;
	audited_writes(r, &head);
	struct reg_audit_report rep;
	ck_assert_int_eq(reg_audit_verify(r, NULL, &rep), 0);
	ck_assert_msg(rep.ok, "%s", rep.reason);
	ck_assert_int_eq(rep.entries, 6);
	ck_assert_int_eq(rep.head.seq, 6);
	ck_assert_mem_eq(rep.head.hash, head.hash, REG_HASH_LEN);
	ck_assert_int_eq(reg_audit_verify(r, &head, &rep), 0);
	ck_assert(rep.ok && rep.anchor_ok);
	/* Each entry links to the one before and hashes to what is stored. */
	struct reg_audit_entry *e;
	size_t n;
	int64_t next;
	ck_assert_int_eq(reg_audit_list(r, 0, 4, &e, &n, &next), 0);
	ck_assert_int_eq(n, 4);
	ck_assert_int_eq(next, 4);
	static const uint8_t zero[REG_HASH_LEN];
	ck_assert_mem_eq(e[0].prev_hash, zero, REG_HASH_LEN);
	for (size_t i = 0; i < n; i++) {
		uint8_t h[REG_HASH_LEN];
		reg_audit_hash(&e[i], h);
		ck_assert_mem_eq(h, e[i].hash, REG_HASH_LEN);
		if (i)
			ck_assert_mem_eq(e[i].prev_hash, e[i - 1].hash, REG_HASH_LEN);
		ck_assert_str_eq(e[i].actor, "admin:test");
		ck_assert_str_eq(e[i].request_id, "req-1");
	}
	ck_assert_str_eq(e[0].action, "model.create");
	ck_assert_str_eq(e[1].action, "party.create");
	free(e);
	ck_assert_int_eq(reg_audit_list(r, 4, 4, &e, &n, &next), 0);
	ck_assert_int_eq(n, 2);
	ck_assert_int_eq(next, 0);
	ck_assert_str_eq(e[1].action, "session.transition");
	free(e);
	reg_close(r);
}
END_TEST

START_TEST(test_audit_tamper_edit_detected)
{
	struct reg *r = open_reg();
	struct reg_audit_head head;
	audited_writes(r, &head);
	reg_close(r);
	char err[256];
	/* The database refuses edits and deletions... */
	ck_assert_int_ne(raw_sql("UPDATE audit SET actor = 'admin:mallory' WHERE seq = 3", err, sizeof err),
			 SQLITE_OK);
	ck_assert_ptr_nonnull(strstr(err, "append-only"));
	ck_assert_int_ne(raw_sql("DELETE FROM audit WHERE seq = 6", err, sizeof err), SQLITE_OK);
	/* ...until someone drops the trigger: then verification names the entry. */
	ck_assert_int_eq(raw_sql("DROP TRIGGER audit_no_update;"
				 "UPDATE audit SET actor = 'admin:mallory' WHERE seq = 3", err, sizeof err),
			 SQLITE_OK);
	r = open_reg();
	struct reg_audit_report rep;
	ck_assert_int_eq(reg_audit_verify(r, NULL, &rep), 0);
	ck_assert(!rep.ok);
	ck_assert_int_eq(rep.first_bad_seq, 3);
	ck_assert(!rep.triggers_ok);
	ck_assert_ptr_nonnull(strstr(rep.reason, "entry 3"));
	reg_close(r);
}
END_TEST

START_TEST(test_audit_tamper_delete_detected)
{
	struct reg *r = open_reg();
	struct reg_audit_head head;
	audited_writes(r, &head);
	reg_close(r);
	ck_assert_int_eq(raw_sql("DROP TRIGGER audit_no_delete; DELETE FROM audit WHERE seq = 4;"
				 "CREATE TRIGGER audit_no_delete BEFORE DELETE ON audit\n"
				 "BEGIN SELECT RAISE(ABORT, 'the audit log is append-only'); END;", NULL, 0),
			 SQLITE_OK);
	r = open_reg();
	struct reg_audit_report rep;
	ck_assert_int_eq(reg_audit_verify(r, NULL, &rep), 0);
	ck_assert(!rep.ok);
	ck_assert(rep.triggers_ok); /* put back exactly: only the chain tells */
	ck_assert_int_eq(rep.first_bad_seq, 4);
	ck_assert_ptr_nonnull(strstr(rep.reason, "missing"));
	reg_close(r);
}
END_TEST

START_TEST(test_audit_truncation_and_rewrite_need_anchor)
{
	struct reg *r = open_reg();
	struct reg_audit_head head;
	audited_writes(r, &head);
	struct reg_audit_entry *e;
	size_t n;
	int64_t next;
	ck_assert_int_eq(reg_audit_list(r, 0, 10, &e, &n, &next), 0);
	reg_close(r);
	/* Truncation: drop the last two entries, triggers restored exactly. */
	ck_assert_int_eq(raw_sql("DROP TRIGGER audit_no_delete; DELETE FROM audit WHERE seq > 4;"
				 "CREATE TRIGGER audit_no_delete BEFORE DELETE ON audit\n"
				 "BEGIN SELECT RAISE(ABORT, 'the audit log is append-only'); END;", NULL, 0),
			 SQLITE_OK);
	r = open_reg();
	struct reg_audit_report rep;
	ck_assert_int_eq(reg_audit_verify(r, NULL, &rep), 0);
	ck_assert(rep.ok); /* a shorter chain is still a chain... */
	ck_assert_int_eq(reg_audit_verify(r, &head, &rep), 0);
	ck_assert(!rep.ok); /* ...which the exported head exposes */
	ck_assert(!rep.anchor_ok);
	ck_assert_ptr_nonnull(strstr(rep.reason, "truncated"));
	reg_close(r);
	/* Rewrite: change entry 2 and recompute every hash after it. */
	ck_assert_int_eq(raw_sql("DROP TRIGGER audit_no_update; DROP TRIGGER audit_no_delete;"
				 "DELETE FROM audit WHERE seq > 1", NULL, 0), SQLITE_OK);
	uint8_t prev[REG_HASH_LEN];
	memcpy(prev, e[0].hash, REG_HASH_LEN);
	snprintf(e[1].actor, sizeof e[1].actor, "admin:mallory");
	for (size_t i = 1; i < n; i++) {
		memcpy(e[i].prev_hash, prev, REG_HASH_LEN);
		reg_audit_hash(&e[i], e[i].hash);
		memcpy(prev, e[i].hash, REG_HASH_LEN);
		sqlite3 *db;
		sqlite3_stmt *st;
		ck_assert_int_eq(sqlite3_open(db_path, &db), SQLITE_OK);
		ck_assert_int_eq(sqlite3_prepare_v2(db, "INSERT INTO audit VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, "
						    "?8, ?9, ?10)", -1, &st, NULL), SQLITE_OK);
		sqlite3_bind_int64(st, 1, e[i].seq);
		sqlite3_bind_int64(st, 2, e[i].ts_ms);
		sqlite3_bind_text(st, 3, e[i].actor, -1, SQLITE_STATIC);
		sqlite3_bind_text(st, 4, e[i].action, -1, SQLITE_STATIC);
		sqlite3_bind_text(st, 5, e[i].object_type, -1, SQLITE_STATIC);
		sqlite3_bind_text(st, 6, e[i].object_id, -1, SQLITE_STATIC);
		sqlite3_bind_text(st, 7, e[i].detail, -1, SQLITE_STATIC);
		sqlite3_bind_text(st, 8, e[i].request_id, -1, SQLITE_STATIC);
		sqlite3_bind_blob(st, 9, e[i].prev_hash, REG_HASH_LEN, SQLITE_STATIC);
		sqlite3_bind_blob(st, 10, e[i].hash, REG_HASH_LEN, SQLITE_STATIC);
		ck_assert_int_eq(sqlite3_step(st), SQLITE_DONE);
		sqlite3_finalize(st);
		sqlite3_close(db);
	}
	free(e);
	ck_assert_int_eq(raw_sql("CREATE TRIGGER audit_no_update BEFORE UPDATE ON audit\n"
				 "BEGIN SELECT RAISE(ABORT, 'the audit log is append-only'); END;"
				 "CREATE TRIGGER audit_no_delete BEFORE DELETE ON audit\n"
				 "BEGIN SELECT RAISE(ABORT, 'the audit log is append-only'); END;", NULL, 0),
			 SQLITE_OK);
	r = open_reg();
	ck_assert_int_eq(reg_audit_verify(r, NULL, &rep), 0);
	ck_assert(rep.ok); /* a consistent forgery, invisible without an outside copy */
	ck_assert_int_eq(reg_audit_verify(r, &head, &rep), 0);
	ck_assert(!rep.ok);
	ck_assert(!rep.anchor_ok);
	ck_assert_ptr_nonnull(strstr(rep.reason, "rewritten"));
	reg_close(r);
}
END_TEST

/* ---- concurrency and busy handling ---- */

struct writer {
	struct reg *r;
	int id, n, ok;
};

static void *write_models(void *arg)
{
	struct writer *w = arg;
	for (int i = 0; i < w->n; i++) {
		uint8_t shares[2][REG_HASH_LEN];
		randombytes_buf(shares, sizeof shares);
		char name[32];
		snprintf(name, sizeof name, "w%d-%d", w->id, i);
		struct reg_model_spec s = {.name = name, .dims = {64, 172, 5, 8, 4, 512, 512}, .n_shares = 2,
					   .shares = (const uint8_t(*)[REG_HASH_LEN])shares};
		struct reg_model m;
		w->ok += reg_model_create(w->r, &who, &s, &m) == 0;
	}
	return NULL;
}

START_TEST(test_concurrent_writers_one_chain)
{
	struct reg_opts o = {.connections = 4};
	struct reg *r = open_with(&o);
	pthread_t th[6];
	struct writer w[6];
	for (int i = 0; i < 6; i++) {
		w[i] = (struct writer){r, i, 25, 0};
		pthread_create(&th[i], NULL, write_models, &w[i]);
	}
	for (int i = 0; i < 6; i++) {
		pthread_join(th[i], NULL);
		ck_assert_int_eq(w[i].ok, 25);
	}
	struct reg_audit_report rep;
	ck_assert_int_eq(reg_audit_verify(r, NULL, &rep), 0);
	ck_assert_msg(rep.ok, "%s", rep.reason);
	ck_assert_int_eq(rep.entries, 150);
	struct reg_stats st;
	reg_stats(r, &st);
	ck_assert_int_ge(st.commits, 150);
	reg_close(r);
	ck_assert_int_eq(raw_int("SELECT count(*) FROM models"), 150);
}
END_TEST

struct holder {
	int hold_ms;
	volatile int locked;
};

static void *hold_write_lock(void *arg)
{
	struct holder *h = arg;
	sqlite3 *db;
	ck_assert_int_eq(sqlite3_open(db_path, &db), SQLITE_OK);
	ck_assert_int_eq(sqlite3_exec(db, "BEGIN IMMEDIATE", NULL, NULL, NULL), SQLITE_OK);
	h->locked = 1;
	usleep((useconds_t)h->hold_ms * 1000);
	sqlite3_exec(db, "COMMIT", NULL, NULL, NULL);
	sqlite3_close(db);
	return NULL;
}

static double ms_since(const struct timespec *t0)
{
	struct timespec t1;
	clock_gettime(CLOCK_MONOTONIC, &t1);
	return (double)(t1.tv_sec - t0->tv_sec) * 1e3 + (double)(t1.tv_nsec - t0->tv_nsec) / 1e6;
}

START_TEST(test_busy_retried_then_bounded)
{
	/* SQLite's own wait is 1 ms here, so the runner's retries carry the load. */
	struct reg_opts o = {.busy_timeout_ms = 1, .busy_retries = 6, .backoff_ms = 20, .backoff_max_ms = 200};
	struct reg *r = open_with(&o);
	struct holder h = {.hold_ms = 150};
	pthread_t th;
	pthread_create(&th, NULL, hold_write_lock, &h);
	while (!h.locked)
		usleep(1000);
	struct reg_model m;
	struct timespec t0;
	clock_gettime(CLOCK_MONOTONIC, &t0);
	make_model(r, "patient", 2, &m);
	double waited = ms_since(&t0);
	pthread_join(th, NULL);
	struct reg_stats st;
	reg_stats(r, &st);
	ck_assert_msg(st.busy_retries >= 1, "no retry counted");
	ck_assert_int_eq(st.busy_giveups, 0);
	ck_assert_msg(waited >= 100, "returned after %.0f ms, before the lock was released", waited);
	/* Held for longer than all the retries: a bounded wait, then a clear error. */
	h = (struct holder){.hold_ms = 3000};
	pthread_create(&th, NULL, hold_write_lock, &h);
	while (!h.locked)
		usleep(1000);
	clock_gettime(CLOCK_MONOTONIC, &t0);
	uint8_t shares[2][REG_HASH_LEN];
	randombytes_buf(shares, sizeof shares);
	struct reg_model_spec s = {.name = "impatient", .dims = {64, 172, 5, 8, 4, 512, 512}, .n_shares = 2,
				   .shares = (const uint8_t(*)[REG_HASH_LEN])shares};
	expect_fail(reg_model_create(r, &who, &s, &m), ERR_UNAVAILABLE, NULL);
	waited = ms_since(&t0);
	ck_assert_ptr_nonnull(strstr(reg_last_error()->detail, "busy"));
	/* 6 retries at 20, 40, 80, 160, 200, 200 ms at most (jitter halves some). */
	ck_assert_msg(waited < 1500, "gave up only after %.0f ms", waited);
	reg_stats(r, &st);
	ck_assert_int_eq(st.busy_giveups, 1);
	/* Reads are not blocked by a writer (WAL). */
	ck_assert_int_eq(reg_model_get(r, m.id, &m), 0);
	pthread_join(th, NULL);
	reg_close(r);
}
END_TEST

/* ---- full disk, read-only database ---- */

START_TEST(test_full_disk_clear_error_no_corruption)
{
	struct reg *r = open_reg();
	struct reg_session s;
	make_session(r, &s, 3600);
	struct rlimit old;
	ck_assert_int_eq(getrlimit(RLIMIT_FSIZE, &old), 0);
	signal(SIGXFSZ, SIG_IGN);
	/* Room for a little more than the database holds now. */
	struct stat st;
	char wal[400];
	snprintf(wal, sizeof wal, "%s-wal", db_path);
	off_t biggest = 0;
	if (stat(db_path, &st) == 0)
		biggest = st.st_size;
	if (stat(wal, &st) == 0 && st.st_size > biggest)
		biggest = st.st_size;
	struct rlimit lim = {.rlim_cur = (rlim_t)biggest + 64 * 1024, .rlim_max = old.rlim_max};
	ck_assert_int_eq(setrlimit(RLIMIT_FSIZE, &lim), 0);
	char big[REG_ATTEST_MAX - 64];
	memset(big, 'a', sizeof big);
	memcpy(big, "{\"x\":\"", 6);
	memcpy(big + sizeof big - 3, "\"}", 3);
	int ok = 0, rc = 0;
	char names[400][16];
	for (int i = 0; i < 400; i++) {
		uint8_t pk[32], sk[32];
		crypto_box_keypair(pk, sk);
		snprintf(names[i], sizeof names[i], "fill%d", i);
		struct reg_party_spec ps = {.identity = names[i], .sealing_key = pk, .attestation = big};
		struct reg_party p;
		if ((rc = reg_party_create(r, &who, &ps, &p)) != 0)
			break;
		ok++;
	}
	ck_assert_msg(rc == ERR_UNAVAILABLE, "rc %d after %d writes: %s", rc, ok, reg_last_error()->detail);
	ck_assert_msg(strstr(reg_last_error()->detail, "disk is full"), "%s", reg_last_error()->detail);
	/* Still full: the next large write fails the same way, nothing half-written. */
	uint8_t pk[32], sk[32];
	crypto_box_keypair(pk, sk);
	struct reg_party_spec again = {.identity = "again", .sealing_key = pk, .attestation = big};
	struct reg_party p;
	ck_assert_int_eq(reg_party_create(r, &who, &again, &p), ERR_UNAVAILABLE);
	/* Space again: every acknowledged write is there, the chain is whole, writes work. */
	ck_assert_int_eq(setrlimit(RLIMIT_FSIZE, &old), 0);
	reg_close(r);
	r = open_reg();
	struct reg_party *items;
	size_t n;
	int64_t next;
	ck_assert_int_eq(reg_party_list(r, -1, 0, REG_PAGE_MAX, &items, &n, &next), 0);
	ck_assert_int_eq(n, (size_t)ok + 3);
	free(items);
	struct reg_audit_report rep;
	ck_assert_int_eq(reg_audit_verify(r, NULL, &rep), 0);
	ck_assert_msg(rep.ok, "%s", rep.reason);
	ck_assert_int_eq(reg_probe(r), 0);
	struct reg_model m;
	make_model(r, "after", 2, &m);
	reg_close(r);
	sqlite3 *db;
	sqlite3_stmt *q;
	ck_assert_int_eq(sqlite3_open(db_path, &db), SQLITE_OK);
	ck_assert_int_eq(sqlite3_prepare_v2(db, "PRAGMA integrity_check", -1, &q, NULL), SQLITE_OK);
	ck_assert_int_eq(sqlite3_step(q), SQLITE_ROW);
	ck_assert_str_eq((const char *)sqlite3_column_text(q, 0), "ok");
	sqlite3_finalize(q);
	sqlite3_close(db);
}
END_TEST

/* Root passes file permission checks; drop the capabilities that let it, for this
 * (forked) test process only. */
static void lose_dac_override(void)
{
	if (geteuid() != 0)
		return;
	struct __user_cap_header_struct hdr = {.version = _LINUX_CAPABILITY_VERSION_3, .pid = 0};
	struct __user_cap_data_struct data[2];
	ck_assert_int_eq(syscall(SYS_capget, &hdr, data), 0);
	unsigned drop = (1u << CAP_DAC_OVERRIDE) | (1u << CAP_DAC_READ_SEARCH);
	data[0].effective &= ~drop;
	data[0].permitted &= ~drop;
	ck_assert_int_eq(syscall(SYS_capset, &hdr, data), 0);
}

START_TEST(test_read_only_database)
{
	struct reg *r = open_reg();
	struct reg_session s;
	make_session(r, &s, 3600);
	struct reg_audit_head head;
	ck_assert_int_eq(reg_audit_head(r, &head), 0);
	reg_close(r);
	lose_dac_override();
	ck_assert_int_eq(chmod(db_path, 0444), 0);
	/* Reads work, writes fail saying why, readiness fails. */
	struct reg_opts o = {.path = db_path, .secret = secret};
	int rc = reg_open(&r, &o);
	ck_assert_msg(rc == 0, "%s", reg_last_error()->detail);
	ck_assert(reg_read_only(r));
	struct reg_session t;
	ck_assert_int_eq(reg_session_get(r, s.id, &t), 0);
	ck_assert_int_eq(t.n_parties, 3);
	expect_fail(reg_session_transition(r, &who, s.id, REG_STATE_ANY, REG_STATE_CLOSED, NULL, &t),
		    ERR_UNAVAILABLE, NULL);
	ck_assert_ptr_nonnull(strstr(reg_last_error()->detail, "read-only"));
	ck_assert_int_eq(reg_probe(r), ERR_UNAVAILABLE);
	struct reg_audit_report rep;
	ck_assert_int_eq(reg_audit_verify(r, &head, &rep), 0);
	ck_assert(rep.ok);
	reg_close(r);
	/* A new database where nothing may be written: a clear error at open. */
	char ro_dir[320], path[400];
	snprintf(ro_dir, sizeof ro_dir, "%s/ro", dir);
	ck_assert_int_eq(mkdir(ro_dir, 0500), 0);
	snprintf(path, sizeof path, "%s/new.db", ro_dir);
	o.path = path;
	rc = reg_open(&r, &o);
	ck_assert_msg(rc == ERR_IO || rc == ERR_UNAVAILABLE, "rc %d", rc);
	ck_assert_ptr_nonnull(strstr(reg_last_error()->detail, "new.db"));
	/* The file we could not write is unchanged (same head, integrity ok). */
	chmod(db_path, 0644);
	sqlite3 *db;
	sqlite3_stmt *q;
	ck_assert_int_eq(sqlite3_open_v2(db_path, &db, SQLITE_OPEN_READONLY, NULL), SQLITE_OK);
	ck_assert_int_eq(sqlite3_prepare_v2(db, "PRAGMA integrity_check", -1, &q, NULL), SQLITE_OK);
	ck_assert_int_eq(sqlite3_step(q), SQLITE_ROW);
	ck_assert_str_eq((const char *)sqlite3_column_text(q, 0), "ok");
	sqlite3_finalize(q);
	sqlite3_close(db);
	ck_assert_int_eq(raw_int("SELECT max(seq) FROM audit"), head.seq);
}
END_TEST

Suite *suite(void)
{
	Suite *s = suite_create("registry");
	TCase *tc = tcase_create("registry");
	tcase_add_checked_fixture(tc, setup, teardown);
	tcase_set_timeout(tc, 60);
	tcase_add_test(tc, test_migrations_fresh_and_reopen);
	tcase_add_test(tc, test_migration_upgrade_keeps_data);
	tcase_add_test(tc, test_migration_failure_leaves_nothing);
	tcase_add_test(tc, test_foreign_files_refused);
	tcase_add_test(tc, test_wrong_secret_refused);
	tcase_add_test(tc, test_secret_file);
	tcase_add_test(tc, test_model_validation_and_pages);
	tcase_add_test(tc, test_party_validation_and_update);
	tcase_add_test(tc, test_state_table);
	tcase_add_test(tc, test_session_lifecycle);
	tcase_add_test(tc, test_session_failure_pin_expiry);
	tcase_add_test(tc, test_session_party_allocation);
	tcase_add_test(tc, test_keys);
	tcase_add_test(tc, test_key_hash_known_answer);
	tcase_add_test(tc, test_audit_hash_known_answer);
	tcase_add_test(tc, test_audit_chain_intact);
	tcase_add_test(tc, test_audit_tamper_edit_detected);
	tcase_add_test(tc, test_audit_tamper_delete_detected);
	tcase_add_test(tc, test_audit_truncation_and_rewrite_need_anchor);
	tcase_add_test(tc, test_concurrent_writers_one_chain);
	tcase_add_test(tc, test_busy_retried_then_bounded);
	tcase_add_test(tc, test_full_disk_clear_error_no_corruption);
	tcase_add_test(tc, test_read_only_database);
	suite_add_tcase(s, tc);
	return s;
}
