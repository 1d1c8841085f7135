/* mimir-dealer sessions: the table of sessions (reference counted, so a worker or a
 * request in flight keeps a deleted session alive until it lets go), idle expiry, and
 * the administrative endpoints: create (with the parties' certificate fingerprints
 * and the pools to generate ahead), list, show, delete (which wipes). */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include <sodium.h>

#include "dealer.h"
#include "err/err.h"
#include "log/log.h"
#include "metrics/metrics.h"

int64_t dealer_now_ms(void)
{
	struct timespec ts;
	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

bool dealer_id_ok(const char *s)
{
	size_t n = s ? strlen(s) : 0;
	if (n == 0 || n > DEALER_ID_MAX)
		return false;
	for (size_t i = 0; i < n; i++) {
		char ch = s[i];
		if (!((ch >= 'a' && ch <= 'z') || (ch >= 'A' && ch <= 'Z') || (ch >= '0' && ch <= '9') ||
		      ch == '.' || ch == '_' || ch == '-'))
			return false;
	}
	return true;
}

int dealer_refuse(struct dealer_ctx *c, struct http_req *r, int code, unsigned status,
		  const char *detail, const char *field)
{
	metric_inc(metric_series(c->m_refused, METRIC_LABELS(err_slug(code))));
	LOG_WARN("dealer.refused", LOG_S("reason", err_slug(code)), LOG_I("status", status),
		 LOG_S("detail", detail ? detail : err_title(code)), LOG_S("field", field ? field : ""));
	http_reply_problem_status(r, code, status, detail, field);
	return code;
}

struct dsession *dealer_session_get_locked(struct dealer_ctx *c, const char *id)
{
	for (size_t i = 0; i < c->nsessions; i++)
		if (strcmp(c->sessions[i]->id, id) == 0) {
			c->sessions[i]->refs++;
			return c->sessions[i];
		}
	return NULL;
}

void dealer_session_put_locked(struct dealer_ctx *c, struct dsession *s)
{
	if (!s || --s->refs > 0)
		return;
	for (size_t i = 0; i < s->npools; i++)
		dealer_pool_clear_locked(c, &s->pools[i]);
	mpc_dealer_free(s->d); /* wipes the seeds and the MAC key */
	pthread_mutex_destroy(&s->gen_mu);
	sodium_memzero(s, sizeof *s);
	free(s);
}

void dealer_session_remove_locked(struct dealer_ctx *c, struct dsession *s)
{
	for (size_t i = 0; i < c->nsessions; i++) {
		if (c->sessions[i] != s)
			continue;
		c->sessions[i] = c->sessions[--c->nsessions];
		s->gone = true;
		for (size_t j = 0; j < s->npools; j++)
			dealer_pool_clear_locked(c, &s->pools[j]);
		metric_set(c->m_sessions, (double)c->nsessions);
		dealer_session_put_locked(c, s); /* the table's reference */
		return;
	}
}

void dealer_sweep_locked(struct dealer_ctx *c, int64_t now)
{
	if (c->set.idle_timeout_s <= 0)
		return;
	for (size_t i = c->nsessions; i-- > 0;) {
		struct dsession *s = c->sessions[i];
		int64_t idle = now - s->used_ms;
		if (idle <= c->set.idle_timeout_s * 1000)
			continue;
		log_ctx_set(NULL, s->id);
		LOG_INFO("dealer.session_expired", LOG_I("idle_s", idle / 1000),
			 LOG_S("detail", "idle past sessions.idle_timeout_s: wiped"));
		log_ctx_set(NULL, NULL);
		dealer_session_remove_locked(c, s);
	}
}

/* ---- JSON views ---- */

static json_t *hex_json(const uint8_t *b, size_t n)
{
	char h[2 * 64 + 1];
	sodium_bin2hex(h, sizeof h, b, n);
	return json_string(h);
}

/* Caller holds c->mu. */
static json_t *session_json(const struct dsession *s, int64_t now)
{
	json_t *fps = json_array(), *seeds = json_array(), *pools = json_array();
	for (unsigned i = 0; i < s->n; i++) {
		json_array_append_new(fps, hex_json(s->fp[i], 32));
		json_array_append_new(seeds, json_boolean(s->seed_sent[i]));
	}
	for (size_t i = 0; i < s->npools; i++) {
		const struct dpool *p = &s->pools[i];
		json_array_append_new(
		    pools,
		    json_pack("{s:i, s:I, s:I, s:I, s:I, s:b, s:I, s:I, s:I, s:I, s:I, s:I, s:I, s:I, s:s?}", "kind",
			      (int)p->shape.kind, "param", (json_int_t)p->shape.param, "n", (json_int_t)p->shape.n,
			      "rows", (json_int_t)p->shape.rows, "cols", (json_int_t)p->shape.cols, "learning",
			      p->learning, "min_items", (json_int_t)p->min_items, "max_items",
			      (json_int_t)p->max_items, "items", (json_int_t)p->items, "bytes", (json_int_t)p->bytes,
			      "start_batch", (json_int_t)p->start, "next_batch", (json_int_t)p->next_gen, "hits",
			      (json_int_t)p->hits, "misses", (json_int_t)p->misses, "failed",
			      p->failed ? p->why : NULL));
	}
	return json_pack("{s:s, s:i, s:o, s:o, s:o, s:I, s:I, s:s?, s:I}", "id", s->id, "nparties", (int)s->n,
			 "fingerprints", fps, "seeds_delivered", seeds, "pools", pools, "bytes_served",
			 (json_int_t)s->bytes_served, "fetches", (json_int_t)s->fetches, "failed",
			 s->failed[0] ? s->failed : NULL, "idle_ms", (json_int_t)(now - s->used_ms));
}

/* ---- create ---- */

static const char *const fault_names[] = {"triple-value", "triple-mac", NULL};

/* Parses "fingerprints" (nparties hex SHA-256 values, distinct). */
static int parse_fingerprints(struct dealer_ctx *c, struct http_req *r, const json_t *arr, unsigned n,
			      struct dsession *s)
{
	char field[32], detail[160];
	if (json_array_size(arr) != n) {
		snprintf(detail, sizeof detail, "fingerprints: must have nparties (%u) entries, one per party index", n);
		return dealer_refuse(c, r, ERR_INVALID, 400, detail, "fingerprints");
	}
	for (unsigned i = 0; i < n; i++) {
		const char *h = json_string_value(json_array_get(arr, i));
		size_t got = 0;
		snprintf(field, sizeof field, "fingerprints[%u]", i);
		if (!h || strlen(h) != 64 || sodium_hex2bin(s->fp[i], 32, h, 64, NULL, &got, NULL) != 0 || got != 32) {
			snprintf(detail, sizeof detail,
				 "%s: must be the SHA-256 of the party's certificate (DER) as 64 hex digits", field);
			return dealer_refuse(c, r, ERR_INVALID, 400, detail, field);
		}
		for (unsigned j = 0; j < i; j++)
			if (sodium_memcmp(s->fp[i], s->fp[j], 32) == 0) {
				snprintf(detail, sizeof detail,
					 "%s: the same certificate as fingerprints[%u]: each index needs its own party",
					 field, j);
				return dealer_refuse(c, r, ERR_INVALID, 400, detail, field);
			}
	}
	return 0;
}

/* Parses "pools": request shapes to generate ahead, one per kind. */
static int parse_pools(struct dealer_ctx *c, struct http_req *r, const json_t *arr, struct dsession *s)
{
	char field[JSPEC_NAME_MAX + 32], detail[JSPEC_NAME_MAX + 300];
	for (size_t i = 0; i < json_array_size(arr); i++) {
		uint64_t kind = 0, param = 0, n = 0, rows = 0, cols = 0;
		uint64_t min_items = (uint64_t)c->set.pool_min_items, max_items = (uint64_t)c->set.pool_max_items;
		bool has_min = false;
		const struct jspec_field spec[] = {
			JSPEC_U64("kind", true, 1, 65535, &kind),
			JSPEC_U64("param", false, 0, UINT32_MAX, &param),
			JSPEC_U64("n", false, 1, UINT32_MAX, &n),
			JSPEC_U64("rows", false, 0, UINT32_MAX, &rows),
			JSPEC_U64("cols", false, 0, UINT32_MAX, &cols),
			JSPEC_U64("min_items", false, 0, (double)c->set.pool_max_items, &min_items,
				  .present = &has_min),
			JSPEC_U64("max_items", false, 1, (double)c->set.pool_max_items, &max_items),
			JSPEC_END_F,
		};
		const json_t *el = json_array_get(arr, i);
		struct jspec_error e;
		if (!json_is_object(el)) {
			snprintf(field, sizeof field, "pools[%zu]", i);
			snprintf(detail, sizeof detail, "%s: must be an object {kind, param, n, rows, cols}", field);
			return dealer_refuse(c, r, ERR_TYPE, 400, detail, field);
		}
		if (jspec_parse(el, spec, 0, &e) != 0) {
			snprintf(field, sizeof field, "pools[%zu].%s", i, e.field);
			snprintf(detail, sizeof detail, "pools[%zu].%s", i, e.detail);
			return dealer_refuse(c, r, e.code, 400, detail, field);
		}
		if (!has_min && min_items > max_items)
			min_items = max_items; /* a smaller pool asked for: the default threshold follows */
		if (min_items > max_items) {
			snprintf(field, sizeof field, "pools[%zu].min_items", i);
			snprintf(detail, sizeof detail, "%s: must not exceed max_items", field);
			return dealer_refuse(c, r, ERR_RANGE, 400, detail, field);
		}
		if (!n && (param || rows || cols)) {
			snprintf(field, sizeof field, "pools[%zu].n", i);
			snprintf(detail, sizeof detail,
				 "%s: required with param, rows or cols (without n the pool learns the whole shape "
				 "from the first request of its kind)",
				 field);
			return dealer_refuse(c, r, ERR_MISSING, 400, detail, field);
		}
		for (size_t j = 0; j < i; j++)
			if (s->pools[j].shape.kind == kind) {
				snprintf(field, sizeof field, "pools[%zu].kind", i);
				snprintf(detail, sizeof detail,
					 "%s: kind %u is pooled already by pools[%zu]: a kind's batches are numbered "
					 "in one sequence, so a session pools at most one shape per kind",
					 field, (unsigned)kind, j);
				return dealer_refuse(c, r, ERR_CONFLICT, 400, detail, field);
			}
		struct dpool *p = &s->pools[s->npools++];
		p->shape = (struct mpc_prep_req){.kind = (uint16_t)kind, .param = (uint32_t)param, .n = (uint32_t)n,
						 .rows = (uint32_t)rows, .cols = (uint32_t)cols};
		p->learning = n == 0;
		p->min_items = min_items;
		p->max_items = max_items;
		p->filling = true;
		char kl[8];
		snprintf(kl, sizeof kl, "%u", (unsigned)kind);
		p->m_items = metric_series(c->m_items, METRIC_LABELS(kl));
	}
	return 0;
}

int dealer_session_create(struct http_req *r, void *ctx)
{
	struct dealer_ctx *c = ctx;
	const char *id = NULL;
	uint64_t n = 0, fault_item = 0, fault_bit = 0;
	int fault_kind = 0;
	bool has_fault = false;
	json_t *fps = NULL, *pools = NULL, *doc = NULL;
	const struct jspec_field spec[] = {
		JSPEC_STR("id", true, 1, DEALER_ID_MAX, &id),
		JSPEC_U64("nparties", true, 2, MPC_MAX_PARTIES, &n),
		JSPEC_ARR("fingerprints", true, 2, MPC_MAX_PARTIES, &fps),
		JSPEC_ARR("pools", false, 0, DEALER_POOLS_MAX, &pools),
		JSPEC_CHOICE("fault.kind", false, fault_names, &fault_kind, .present = &has_fault),
		JSPEC_U64("fault.item", false, 0, 0, &fault_item), /* any (jspec caps at INT64_MAX) */
		JSPEC_U64("fault.bit", false, 0, 191, &fault_bit),
		JSPEC_END_F,
	};
	int rc = http_req_json(r, spec, 0, &doc);
	if (rc != 0) {
		metric_inc(metric_series(c->m_refused, METRIC_LABELS(err_slug(rc))));
		return rc;
	}
	struct dsession *s = calloc(1, sizeof *s);
	char field[64] = "", detail[400] = "";
	if (!s) {
		rc = http_reply_problem(r, ERR_NOMEM, NULL, NULL);
		goto out;
	}
	s->refs = 1; /* ours until the table takes it */
	pthread_mutex_init(&s->gen_mu, NULL);
	if (!dealer_id_ok(id)) {
		rc = dealer_refuse(c, r, ERR_INVALID, 400, "id: 1 to 64 of the characters A-Z a-z 0-9 . _ -", "id");
		goto out;
	}
	if (has_fault && !c->set.fault_injection) {
		rc = dealer_refuse(c, r, ERR_INVALID, 400,
				   "fault: fault injection is switched off (testing.fault_injection)", "fault");
		goto out;
	}
	snprintf(s->id, sizeof s->id, "%s", id);
	s->n = (unsigned)n;
	if ((rc = parse_fingerprints(c, r, fps, s->n, s)) != 0 || (rc = parse_pools(c, r, pools, s)) != 0)
		goto out;
	log_ctx_set(http_req_id(r), s->id);
	pthread_mutex_lock(&c->mu);
	dealer_sweep_locked(c, dealer_now_ms());
	struct dsession *dup = dealer_session_get_locked(c, s->id);
	dealer_session_put_locked(c, dup);
	pthread_mutex_unlock(&c->mu);
	if (dup) {
		rc = dealer_refuse(c, r, ERR_CONFLICT, 409, "a session with this id exists", "id");
		goto out;
	}
	if ((rc = mpc_dealer_new(s->n, &s->d)) != 0) {
		rc = http_reply_problem(r, rc, "could not create the session's dealer", NULL);
		goto out;
	}
	if (has_fault)
		mpc_dealer_inject(s->d,
				  fault_kind == 0 ? MPC_DEALER_FAULT_TRIPLE_VALUE : MPC_DEALER_FAULT_TRIPLE_MAC,
				  fault_item, (unsigned)fault_bit);
	if ((rc = dealer_pools_prime(c, s, field, sizeof field, detail, sizeof detail)) != 0) {
		unsigned st = rc == ERR_NOMEM ? 503 : 400;
		rc = dealer_refuse(c, r, rc == ERR_NOMEM ? ERR_NOMEM : ERR_INVALID, st, detail, field);
		goto out;
	}
	int64_t now = dealer_now_ms();
	s->created_ms = s->used_ms = now;
	pthread_mutex_lock(&c->mu);
	dup = dealer_session_get_locked(c, s->id);
	if (dup || c->nsessions >= (size_t)c->set.sessions_max) {
		dealer_session_put_locked(c, dup);
		pthread_mutex_unlock(&c->mu);
		rc = dup ? dealer_refuse(c, r, ERR_CONFLICT, 409, "a session with this id exists", "id")
			 : dealer_refuse(c, r, ERR_UNAVAILABLE, 503,
					 "the dealer holds sessions.max sessions: delete one or retry later", NULL);
		goto out;
	}
	struct dsession **ns = realloc(c->sessions, (c->nsessions + 1) * sizeof *ns);
	if (!ns) {
		pthread_mutex_unlock(&c->mu);
		rc = http_reply_problem(r, ERR_NOMEM, NULL, NULL);
		goto out;
	}
	c->sessions = ns;
	c->sessions[c->nsessions++] = s;
	s->refs++; /* the table's */
	metric_set(c->m_sessions, (double)c->nsessions);
	json_t *body = session_json(s, now);
	pthread_cond_broadcast(&c->wake);
	pthread_mutex_unlock(&c->mu);
	const struct ident *peer = http_req_peer(r);
	LOG_INFO("dealer.session_created", LOG_I("nparties", s->n), LOG_I("pools", s->npools),
		 LOG_S("by", peer ? peer->cn : "-"));
	rc = http_reply_json(r, 201, body);
out:
	if (s) {
		pthread_mutex_lock(&c->mu);
		dealer_session_put_locked(c, s);
		pthread_mutex_unlock(&c->mu);
	}
	json_decref(doc);
	return rc;
}

/* ---- list, show, delete ---- */

int dealer_session_list(struct http_req *r, void *ctx)
{
	struct dealer_ctx *c = ctx;
	json_t *ids = json_array();
	pthread_mutex_lock(&c->mu);
	for (size_t i = 0; i < c->nsessions; i++)
		json_array_append_new(ids, json_string(c->sessions[i]->id));
	size_t bytes = c->pool_bytes;
	pthread_mutex_unlock(&c->mu);
	return http_reply_json(r, 200, json_pack("{s:o, s:I}", "sessions", ids, "pool_bytes", (json_int_t)bytes));
}

/* The session named by the path, with a reference, or NULL after a 404 reply. */
static struct dsession *path_session(struct dealer_ctx *c, struct http_req *r)
{
	const char *id = http_req_param(r, "id");
	struct dsession *s = NULL;
	if (dealer_id_ok(id)) {
		pthread_mutex_lock(&c->mu);
		s = dealer_session_get_locked(c, id);
		pthread_mutex_unlock(&c->mu);
	}
	if (!s)
		dealer_refuse(c, r, ERR_NOT_FOUND, 404, "no such session", "id");
	else
		log_ctx_set(http_req_id(r), s->id);
	return s;
}

int dealer_session_get(struct http_req *r, void *ctx)
{
	struct dealer_ctx *c = ctx;
	struct dsession *s = path_session(c, r);
	if (!s)
		return ERR_NOT_FOUND;
	pthread_mutex_lock(&c->mu);
	json_t *body = session_json(s, dealer_now_ms());
	dealer_session_put_locked(c, s);
	pthread_mutex_unlock(&c->mu);
	return http_reply_json(r, 200, body);
}

int dealer_session_delete(struct http_req *r, void *ctx)
{
	struct dealer_ctx *c = ctx;
	struct dsession *s = path_session(c, r);
	if (!s)
		return ERR_NOT_FOUND;
	pthread_mutex_lock(&c->mu);
	uint64_t served = s->bytes_served;
	if (!s->gone)
		dealer_session_remove_locked(c, s);
	dealer_session_put_locked(c, s);
	pthread_mutex_unlock(&c->mu);
	const struct ident *peer = http_req_peer(r);
	LOG_INFO("dealer.session_deleted", LOG_I("bytes_served", served), LOG_S("by", peer ? peer->cn : "-"),
		 LOG_S("detail", "pools and seeds wiped"));
	return http_reply_data(r, 204, NULL, "", 0);
}
