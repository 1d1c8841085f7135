/* registry models: a model as the registry knows it, its llama2.c dimensions and the
 * SHA-256 digest of each party's share file (share i belongs to the session's party
 * i). Field names in errors are the API's ("dims.n_heads", "shares[2]"). */
#include "registry/reg_int.h"

#include <stddef.h>
#include <stdio.h>
#include <string.h>

#include <sodium.h>

#include "err/err.h"

static bool name_ok(const char *s)
{
	size_t n = s ? strlen(s) : 0;
	if (n == 0 || n > REG_NAME_MAX)
		return false;
	for (size_t i = 0; i < n; i++)
		if (!((s[i] >= 'a' && s[i] <= 'z') || (s[i] >= 'A' && s[i] <= 'Z') ||
		      (s[i] >= '0' && s[i] <= '9') || s[i] == '.' || s[i] == '_' || s[i] == '-'))
			return false;
	return true;
}

static int check_spec(const struct reg_model_spec *s)
{
	if (!name_ok(s->name))
		return reg_fail(ERR_INVALID, "name", "name must be 1-%d of [A-Za-z0-9._-]", REG_NAME_MAX);
	if (s->description && !reg_text_ok(s->description, REG_DESC_MAX, true))
		return reg_fail(ERR_INVALID, "description",
				"description must be at most %d bytes without control characters",
				REG_DESC_MAX);
	static const struct {
		const char *field;
		size_t off;
		uint32_t max;
	} dims[] = {
		{"dims.dim", offsetof(struct reg_dims, dim), 1u << 16},
		{"dims.hidden_dim", offsetof(struct reg_dims, hidden_dim), 1u << 18},
		{"dims.n_layers", offsetof(struct reg_dims, n_layers), 1024},
		{"dims.n_heads", offsetof(struct reg_dims, n_heads), 1024},
		{"dims.n_kv_heads", offsetof(struct reg_dims, n_kv_heads), 1024},
		{"dims.vocab_size", offsetof(struct reg_dims, vocab_size), 1u << 22},
		{"dims.seq_len", offsetof(struct reg_dims, seq_len), 1u << 20},
	};
	for (size_t i = 0; i < sizeof dims / sizeof dims[0]; i++) {
		uint32_t v;
		memcpy(&v, (const char *)&s->dims + dims[i].off, sizeof v);
		if (v < 1 || v > dims[i].max)
			return reg_fail(ERR_RANGE, dims[i].field, "%s must be between 1 and %u",
					dims[i].field, dims[i].max);
	}
	if (s->dims.dim % s->dims.n_heads != 0)
		return reg_fail(ERR_INVALID, "dims.n_heads", "dims.n_heads must divide dims.dim");
	if (s->dims.n_kv_heads > s->dims.n_heads || s->dims.n_heads % s->dims.n_kv_heads != 0)
		return reg_fail(ERR_INVALID, "dims.n_kv_heads", "dims.n_kv_heads must divide dims.n_heads");
	if (s->n_shares < 2 || s->n_shares > REG_MAX_SHARES || !s->shares)
		return reg_fail(ERR_RANGE, "shares", "shares must list 2-%d digests, one per party",
				REG_MAX_SHARES);
	static const uint8_t zero[REG_HASH_LEN];
	for (size_t i = 0; i < s->n_shares; i++) {
		char field[32];
		snprintf(field, sizeof field, "shares[%zu]", i);
		if (sodium_memcmp(s->shares[i], zero, REG_HASH_LEN) == 0)
			return reg_fail(ERR_INVALID, field, "%s is all zero, not a digest", field);
		for (size_t j = 0; j < i; j++)
			if (memcmp(s->shares[i], s->shares[j], REG_HASH_LEN) == 0)
				return reg_fail(ERR_INVALID, field,
						"%s repeats shares[%zu]: each party has its own share file",
						field, j);
	}
	return 0;
}

static int read_model(struct reg_conn *c, sqlite3_stmt *st, void *item, int64_t *rid, void *extra)
{
	(void)extra;
	/* Filled aside, so that a failed read of the shares leaves item as it was. */
	struct reg_model tmp, *m = &tmp;
	memset(m, 0, sizeof *m);
	int64_t r = sqlite3_column_int64(st, 0);
	if (rid)
		*rid = r;
	reg_col_text(st, 1, m->id, sizeof m->id);
	reg_col_text(st, 2, m->name, sizeof m->name);
	reg_col_text(st, 3, m->description, sizeof m->description);
	uint32_t *d[] = {&m->dims.dim, &m->dims.hidden_dim, &m->dims.n_layers, &m->dims.n_heads,
			 &m->dims.n_kv_heads, &m->dims.vocab_size, &m->dims.seq_len};
	for (int i = 0; i < 7; i++)
		*d[i] = (uint32_t)sqlite3_column_int64(st, 4 + i);
	m->created_ms = sqlite3_column_int64(st, 12);
	sqlite3_stmt *sh = reg_stmt(c, S_MODEL_SHARES);
	if (!sh)
		return reg_step(c, sh);
	sqlite3_bind_int64(sh, 1, r);
	int rc;
	while ((rc = reg_step(c, sh)) == SQLITE_ROW && m->n_shares < REG_MAX_SHARES)
		reg_col_blob(sh, 0, m->shares[m->n_shares++], REG_HASH_LEN);
	sqlite3_reset(sh);
	if (rc != SQLITE_ROW && rc != SQLITE_DONE)
		return rc;
	memcpy(item, m, sizeof *m);
	return 0;
}

static const struct reg_entity model_entity = {
	.prefix = "mdl_", .not_found = "no model with this id",
	.by_id = S_MODEL_BY_ID, .list = S_MODEL_LIST,
	.read = read_model, .size = sizeof(struct reg_model),
};

struct create_args {
	const struct reg_actor *who;
	const struct reg_model_spec *s;
	struct reg_model *out;
};

static int create_tx(struct reg_conn *c, void *arg)
{
	struct create_args *a = arg;
	const struct reg_model_spec *s = a->s;
	int rc = reg_unique(c, S_MODEL_BY_NAME, s->name, "name", "a model named %s exists already",
			    s->name);
	if (rc != 0)
		return rc;
	struct reg_model *m = a->out;
	memset(m, 0, sizeof *m);
	reg_new_id(m->id, "mdl_");
	snprintf(m->name, sizeof m->name, "%s", s->name);
	snprintf(m->description, sizeof m->description, "%s", s->description ? s->description : "");
	m->dims = s->dims;
	m->n_shares = s->n_shares;
	memcpy(m->shares, s->shares, s->n_shares * REG_HASH_LEN);
	m->created_ms = reg_now(c->reg);
	sqlite3_stmt *st = reg_stmt(c, S_MODEL_INSERT);
	if (!st)
		return reg_step(c, st);
	sqlite3_bind_text(st, 1, m->id, -1, SQLITE_TRANSIENT);
	sqlite3_bind_text(st, 2, m->name, -1, SQLITE_TRANSIENT);
	sqlite3_bind_text(st, 3, m->description, -1, SQLITE_TRANSIENT);
	const uint32_t d[] = {m->dims.dim, m->dims.hidden_dim, m->dims.n_layers, m->dims.n_heads,
			      m->dims.n_kv_heads, m->dims.vocab_size, m->dims.seq_len};
	for (int i = 0; i < 7; i++)
		sqlite3_bind_int64(st, 4 + i, d[i]);
	sqlite3_bind_int64(st, 11, (int64_t)m->n_shares);
	sqlite3_bind_int64(st, 12, m->created_ms);
	if ((rc = reg_exec(c, st)) != 0)
		return rc;
	int64_t rid = sqlite3_last_insert_rowid(c->db);
	for (size_t i = 0; i < m->n_shares; i++) {
		if (!(st = reg_stmt(c, S_MODEL_SHARE_INSERT)))
			return reg_step(c, st);
		sqlite3_bind_int64(st, 1, rid);
		sqlite3_bind_int64(st, 2, (int64_t)i);
		sqlite3_bind_blob(st, 3, m->shares[i], REG_HASH_LEN, SQLITE_TRANSIENT);
		if ((rc = reg_exec(c, st)) != 0)
			return rc;
	}
	return reg_audit_append(c, a->who, "model.create", "model", m->id,
				json_pack("{s:s, s:i, s:i}", "name", m->name, "shares", (int)m->n_shares,
					  "seq_len", (int)m->dims.seq_len));
}

int reg_model_create(struct reg *r, const struct reg_actor *who, const struct reg_model_spec *s,
		     struct reg_model *out)
{
	int rc;
	if ((rc = reg_write_args(r, s && out, who)) != 0 || (rc = check_spec(s)) != 0)
		return rc;
	struct create_args a = {who, s, out};
	return reg_tx(r, REG_TX_WRITE, create_tx, &a);
}

int reg_model_get(struct reg *r, const char *id, struct reg_model *out)
{
	return reg_get(r, &model_entity, id, out);
}

int reg_model_list(struct reg *r, int64_t after, size_t limit, struct reg_model **items,
		   size_t *n, int64_t *next)
{
	struct reg_list_query q = {.after = after, .limit = limit};
	void *page;
	int rc = reg_list(r, &model_entity, &q, &page, n, next);
	*items = page;
	return rc;
}

struct delete_args {
	const struct reg_actor *who;
	const char *id;
};

static int delete_tx(struct reg_conn *c, void *arg)
{
	struct delete_args *a = arg;
	int64_t rid;
	struct reg_model m;
	int rc = reg_find(c, &model_entity, a->id, &m, &rid, NULL);
	if (rc != 0)
		return rc;
	sqlite3_stmt *st = reg_stmt(c, S_MODEL_USES);
	if (!st)
		return reg_step(c, st);
	sqlite3_bind_int64(st, 1, rid);
	if ((rc = reg_step(c, st)) != SQLITE_ROW)
		return rc == SQLITE_DONE ? reg_fail(ERR_DB, NULL, "count returned no row") : rc;
	int64_t uses = sqlite3_column_int64(st, 0);
	sqlite3_reset(st);
	if (uses > 0)
		return reg_fail(ERR_CONFLICT, "id", "model %s is used by %lld session(s) and stays for "
				"their record", m.id, (long long)uses);
	if (!(st = reg_stmt(c, S_MODEL_DELETE)))
		return reg_step(c, st);
	sqlite3_bind_int64(st, 1, rid);
	if ((rc = reg_exec(c, st)) != 0)
		return rc;
	return reg_audit_append(c, a->who, "model.delete", "model", m.id,
				json_pack("{s:s}", "name", m.name));
}

int reg_model_delete(struct reg *r, const struct reg_actor *who, const char *id)
{
	int rc = reg_write_args(r, true, who);
	if (rc != 0)
		return rc;
	struct delete_args a = {who, id};
	return reg_tx(r, REG_TX_WRITE, delete_tx, &a);
}
