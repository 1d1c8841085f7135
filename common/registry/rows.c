/* registry rows: the lookups and listings every entity shares. Each entity file
 * (models, parties, sessions, keys, audit) describes its statements and its row reader
 * once, in a struct reg_entity; reg_find, reg_get and reg_list then give all of them
 * the same not-found error, the same page validation and the same cursor rule, so
 * paging behaves, and is fixed, in one place. reg_unique is the one uniqueness check
 * the inserts make before they write. */
#include "registry/reg_int.h"

#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>

#include "err/err.h"

int reg_find(struct reg_conn *c, const struct reg_entity *e, const char *id, void *item,
	     int64_t *rid, void *extra)
{
	if (!reg_id_ok(id, e->prefix))
		return reg_fail(ERR_NOT_FOUND, "id", "%s", e->not_found);
	sqlite3_stmt *st = reg_stmt(c, e->by_id);
	if (!st)
		return reg_step(c, st);
	sqlite3_bind_text(st, 1, id, -1, SQLITE_TRANSIENT);
	int rc = reg_step(c, st);
	if (rc == SQLITE_DONE)
		return reg_fail(ERR_NOT_FOUND, "id", "%s", e->not_found);
	if (rc != SQLITE_ROW)
		return rc;
	rc = e->read(c, st, item, rid, extra);
	sqlite3_reset(st);
	return rc;
}

struct get_args {
	const struct reg_entity *e;
	const char *id;
	void *out;
};

static int get_tx(struct reg_conn *c, void *arg)
{
	struct get_args *a = arg;
	return reg_find(c, a->e, a->id, a->out, NULL, NULL);
}

int reg_get(struct reg *r, const struct reg_entity *e, const char *id, void *out)
{
	reg_error_clear();
	if (!r || !out)
		return reg_fail(ERR_INVALID, NULL, "missing argument");
	struct get_args a = {e, id, out};
	return reg_tx(r, REG_TX_READ, get_tx, &a);
}

struct list_args {
	const struct reg_entity *e;
	const struct reg_list_query *q;
	char *items; /* q->limit entries of e->size bytes */
	size_t n;
	int64_t next;
};

static int list_tx(struct reg_conn *c, void *arg)
{
	struct list_args *a = arg;
	const struct reg_list_query *q = a->q;
	a->n = 0;
	a->next = 0;
	sqlite3_stmt *st = reg_stmt(c, a->e->list);
	if (!st)
		return reg_step(c, st);
	sqlite3_bind_int64(st, 1, q->after);
	/* One row more than the page: whether it comes decides if there is a next page. */
	sqlite3_bind_int64(st, 2, (int64_t)q->limit + 1);
	for (size_t i = 0; i < q->n_filter; i++)
		reg_bind_text(st, 3 + (int)i, q->filter[i]);
	int rc;
	int64_t last = 0;
	while ((rc = reg_step(c, st)) == SQLITE_ROW) {
		if (a->n == q->limit) {
			a->next = last;
			break;
		}
		if ((rc = a->e->read(c, st, a->items + a->n++ * a->e->size, &last, NULL)) != 0)
			break;
	}
	sqlite3_reset(st);
	return rc == SQLITE_ROW || rc == SQLITE_DONE ? 0 : rc;
}

int reg_list(struct reg *r, const struct reg_entity *e, const struct reg_list_query *q,
	     void **items, size_t *n, int64_t *next)
{
	*items = NULL;
	*n = 0;
	*next = 0;
	reg_error_clear();
	bool bad_limit = q->limit < 1 || q->limit > REG_PAGE_MAX;
	if (e->one_range_error && (bad_limit || q->after < 0))
		return reg_fail(ERR_RANGE, bad_limit ? "limit" : "after",
				"limit must be 1-%d and the cursor non-negative", REG_PAGE_MAX);
	if (bad_limit)
		return reg_fail(ERR_RANGE, "limit", "limit must be between 1 and %d", REG_PAGE_MAX);
	if (q->after < 0)
		return reg_fail(ERR_RANGE, "after", "the cursor is not valid");
	if (q->bad_filter)
		return reg_fail(ERR_INVALID, q->bad_filter, "%s", q->bad_detail);
	struct list_args a = {.e = e, .q = q, .items = calloc(q->limit, e->size)};
	if (!a.items)
		return reg_fail(ERR_NOMEM, NULL, "out of memory");
	int rc = reg_tx(r, REG_TX_READ, list_tx, &a);
	if (rc != 0 || a.n == 0) {
		free(a.items);
		return rc;
	}
	*items = a.items;
	*n = a.n;
	*next = a.next;
	return 0;
}

int reg_unique(struct reg_conn *c, enum reg_stmt s, const char *key, const char *field,
	       const char *fmt, ...)
{
	sqlite3_stmt *st = reg_stmt(c, s);
	if (!st)
		return reg_step(c, st);
	sqlite3_bind_text(st, 1, key, -1, SQLITE_TRANSIENT);
	int rc = reg_step(c, st);
	sqlite3_reset(st);
	if (rc == SQLITE_ROW) {
		char detail[sizeof reg_last_error()->detail];
		va_list ap;
		va_start(ap, fmt);
		vsnprintf(detail, sizeof detail, fmt, ap);
		va_end(ap);
		return reg_fail(ERR_CONFLICT, field, "%s", detail);
	}
	return rc == SQLITE_DONE ? 0 : rc;
}
