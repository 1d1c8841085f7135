/* mimir-dealer pools: batches of the declared request shapes generated ahead of use by
 * background workers, and the fetch path that serves a party from them.
 *
 * The library numbers the batches of a kind 0, 1, 2, ... and generates batch b only
 * once (when the first party asks for it), so a pool is exactly "the library's answers
 * for batches next_gen, next_gen + 1, ... of one shape, asked for early": a worker calls
 * mpc_dealer_fetch for every party that receives a payload and keeps the payloads until
 * the parties come. Nothing is guessed that could go wrong silently: if the program
 * asks for another shape of a pooled kind, the library refuses that request (its batch
 * was generated for the pool's shape) and the party gets a clear 409.
 *
 * Refill policy: a pool whose ready items fall below min_items is filled up to
 * max_items, one batch at a time, while the pool stays under pool.max_pool_bytes and
 * all pools together under pool.max_bytes (back-pressure: the worker moves on and
 * comes back when a fetch frees memory). A fetch that finds its batch not generated yet
 * generates it on the spot (a miss), so a slow pool costs latency, never correctness. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include <sodium.h>

#include "dealer.h"
#include "err/err.h"
#include "log/log.h"
#include "metrics/metrics.h"

static void entry_free(struct dentry *e)
{
	if (!e)
		return;
	for (unsigned p = 0; p < MPC_MAX_PARTIES; p++)
		if (e->payload[p]) {
			sodium_memzero(e->payload[p], e->len[p]);
			free(e->payload[p]);
		}
	free(e);
}

void dealer_pool_clear_locked(struct dealer_ctx *c, struct dpool *p)
{
	while (p->head) {
		struct dentry *e = p->head;
		p->head = e->next;
		c->pool_bytes -= e->bytes;
		entry_free(e);
	}
	p->tail = NULL;
	metric_add(p->m_items, -(double)p->items);
	p->items = 0;
	p->bytes = 0;
	metric_set(c->m_pool_bytes, (double)c->pool_bytes);
}

static const char *lib_reason(int rc)
{
	switch (rc) {
	case ERR_INVALID:
		return "the dealer library refuses this shape (kind unknown, or param, n, rows or cols out of "
		       "range for the kind)";
	case ERR_PROTOCOL:
		return "the library refused the batch: another request of this kind took its place in the "
		       "kind's sequence";
	case ERR_NOMEM:
		return "out of memory";
	default:
		return err_title(rc);
	}
}

/* Batch `batch` of the pool's shape from the library: the payload of every party that
 * receives one. Runs under s->gen_mu (or before the session is visible). */
static int generate(struct dsession *s, const struct dpool *p, uint64_t batch, struct dentry **out)
{
	struct mpc_prep_req req = p->shape;
	req.batch = batch;
	struct dentry *e = calloc(1, sizeof *e);
	int rc = 0;
	*out = NULL;
	if (!e)
		return ERR_NOMEM;
	e->batch = batch;
	for (unsigned i = 0; i < s->n; i++) {
		if (!mpc_prep_needs_payload(i, &req))
			continue;
		if ((rc = mpc_dealer_fetch(s->d, i, &req, &e->payload[i], &e->len[i])) != 0)
			break;
		e->left++;
		e->bytes += e->len[i];
	}
	if (rc != 0) {
		entry_free(e);
		return rc;
	}
	*out = e;
	return 0;
}

static double seconds_since(const struct timespec *t0)
{
	struct timespec t1;
	clock_gettime(CLOCK_MONOTONIC, &t1);
	return (double)(t1.tv_sec - t0->tv_sec) + (double)(t1.tv_nsec - t0->tv_nsec) / 1e9;
}

static void kind_label(const struct dpool *p, char *buf, size_t cap)
{
	snprintf(buf, cap, "%u", (unsigned)p->shape.kind);
}

/* Appends a generated batch. Caller holds c->mu. */
static void append_locked(struct dealer_ctx *c, struct dpool *p, struct dentry *e, double secs)
{
	if (p->tail)
		p->tail->next = e;
	else
		p->head = e;
	p->tail = e;
	p->next_gen = e->batch + 1;
	p->items += p->shape.n;
	p->bytes += e->bytes;
	p->batch_bytes = e->bytes;
	c->pool_bytes += e->bytes;
	metric_add(p->m_items, (double)p->shape.n);
	metric_set(c->m_pool_bytes, (double)c->pool_bytes);
	char kl[8];
	kind_label(p, kl, sizeof kl);
	metric_add_u64(metric_series(c->m_generated, METRIC_LABELS(kl)), p->shape.n);
	metric_add(c->m_gen_seconds_total, secs);
	metric_observe(c->m_gen_hist, secs);
}

/* Takes party's payload of entry e out of the pool. Caller holds c->mu. */
static void take_locked(struct dealer_ctx *c, struct dpool *p, struct dentry *e, unsigned party,
			uint8_t **payload, size_t *len)
{
	*payload = e->payload[party];
	*len = e->len[party];
	e->payload[party] = NULL;
	e->len[party] = 0;
	e->left--;
	e->bytes -= *len;
	p->bytes -= *len;
	c->pool_bytes -= *len;
	p->pnext[party] = e->batch + 1;
	if (e->left == 0) {
		struct dentry **pp = &p->head, *prev = NULL;
		while (*pp != e) {
			prev = *pp;
			pp = &(*pp)->next;
		}
		*pp = e->next;
		if (p->tail == e)
			p->tail = prev;
		p->items -= p->shape.n;
		metric_add(p->m_items, -(double)p->shape.n);
		entry_free(e);
	}
	metric_set(c->m_pool_bytes, (double)c->pool_bytes);
	pthread_cond_broadcast(&c->wake); /* the pool may want a refill, memory was freed */
}

static struct dentry *find_entry(const struct dpool *p, uint64_t batch)
{
	for (struct dentry *e = p->head; e; e = e->next)
		if (e->batch == batch)
			return e;
	return NULL;
}

int dealer_pools_prime(struct dealer_ctx *c, struct dsession *s, char *field, size_t fcap, char *detail,
		       size_t dcap)
{
	for (size_t i = 0; i < s->npools; i++) {
		struct dpool *p = &s->pools[i];
		struct dentry *e;
		struct timespec t0;
		if (p->learning)
			continue;
		clock_gettime(CLOCK_MONOTONIC, &t0);
		int rc = generate(s, p, 0, &e);
		if (rc != 0) {
			snprintf(field, fcap, "pools[%zu]", i);
			snprintf(detail, dcap, "pools[%zu]: kind %u param %u n %u rows %u cols %u: %s", i,
				 (unsigned)p->shape.kind, p->shape.param, p->shape.n, p->shape.rows,
				 p->shape.cols, lib_reason(rc));
			return rc;
		}
		pthread_mutex_lock(&c->mu);
		append_locked(c, p, e, seconds_since(&t0));
		pthread_mutex_unlock(&c->mu);
	}
	return 0;
}

/* ---- the fetch path ---- */

static bool same_shape(const struct mpc_prep_req *a, const struct mpc_prep_req *b)
{
	return a->kind == b->kind && a->param == b->param && a->n == b->n && a->rows == b->rows &&
	       a->cols == b->cols;
}

static void served_locked(struct dealer_ctx *c, struct dsession *s, const struct mpc_prep_req *req, size_t len)
{
	char kl[8];
	snprintf(kl, sizeof kl, "%u", (unsigned)req->kind);
	s->bytes_served += len;
	s->fetches++;
	metric_add_u64(metric_series(c->m_served, METRIC_LABELS(kl)), len);
}

static int direct(struct dealer_ctx *c, struct dsession *s, const struct mpc_prep_req *pooled, unsigned party,
		  const struct mpc_prep_req *req, uint8_t **payload, size_t *len, unsigned *status, char *detail,
		  size_t dcap)
{
	int rc = mpc_dealer_fetch(s->d, party, req, payload, len);
	if (rc == 0) {
		pthread_mutex_lock(&c->mu);
		served_locked(c, s, req, *len);
		pthread_mutex_unlock(&c->mu);
		metric_inc(c->m_direct);
		return 0;
	}
	if (rc == ERR_INVALID) {
		*status = 400;
		snprintf(detail, dcap, "%s", lib_reason(rc));
		return ERR_INVALID;
	}
	if (rc != ERR_PROTOCOL) {
		*status = 503;
		snprintf(detail, dcap, "the dealer could not generate batch %llu: %s",
			 (unsigned long long)req->batch, lib_reason(rc));
		return rc == ERR_NOMEM ? ERR_NOMEM : ERR_UNAVAILABLE;
	}
	*status = 409;
	int n = snprintf(detail, dcap,
			 "batch %llu of kind %u refused: asked out of order or twice, or not the request "
			 "another party made for that batch",
			 (unsigned long long)req->batch, (unsigned)req->kind);
	if (pooled && n > 0 && (size_t)n < dcap)
		snprintf(detail + n, dcap - (size_t)n,
			 "; kind %u is pooled for this session as param %u n %u rows %u cols %u, so the "
			 "pool declaration does not match the program",
			 (unsigned)req->kind, pooled->param, pooled->n, pooled->rows, pooled->cols);
	return ERR_CONFLICT;
}

/* Caller holds c->mu. 0 with the payload, or a refusal. */
static int pooled_locked(struct dealer_ctx *c, struct dsession *s, struct dpool *p, unsigned party,
			 const struct mpc_prep_req *req, uint8_t **payload, size_t *len, unsigned *status,
			 char *detail, size_t dcap, bool *need_gen)
{
	*need_gen = false;
	if (s->gone || s->failed[0]) {
		*status = s->gone ? 404 : 409;
		snprintf(detail, dcap, "%s", s->gone ? "the session was deleted" : s->failed);
		return s->gone ? ERR_NOT_FOUND : ERR_CONFLICT;
	}
	if (p->failed) {
		*status = 409;
		snprintf(detail, dcap, "the pool of kind %u failed: %s", (unsigned)p->shape.kind, p->why);
		return ERR_CONFLICT;
	}
	if (req->batch != p->pnext[party]) {
		*status = 409;
		snprintf(detail, dcap, "batch %llu of kind %u %s: party %u takes batch %llu next",
			 (unsigned long long)req->batch, (unsigned)req->kind,
			 req->batch < p->pnext[party] ? "was delivered already" : "asked out of order", party,
			 (unsigned long long)p->pnext[party]);
		return ERR_CONFLICT;
	}
	struct dentry *e = find_entry(p, req->batch);
	if (!e) {
		*need_gen = true; /* pnext <= next_gen, so this is batch next_gen */
		return 0;
	}
	take_locked(c, p, e, party, payload, len);
	served_locked(c, s, req, *len);
	return 0;
}

/* The first request of a learning pool's kind, served: the pool takes its shape and
 * generates from the next batch on. Caller holds c->mu. */
static void adopt_locked(struct dealer_ctx *c, struct dsession *s, struct dpool *p, const struct mpc_prep_req *req,
			 size_t len)
{
	if (!p->learning || s->gone || s->failed[0])
		return;
	p->learning = false;
	p->shape = *req;
	p->shape.batch = 0;
	p->start = p->next_gen = req->batch + 1;
	for (unsigned i = 0; i < MPC_MAX_PARTIES; i++)
		p->pnext[i] = p->start;
	p->batch_bytes = len; /* an estimate until the first batch is made */
	p->filling = true;
	pthread_cond_broadcast(&c->wake);
}

int dealer_fetch(struct dealer_ctx *c, struct dsession *s, unsigned party, const struct mpc_prep_req *req,
		 uint8_t **payload, size_t *len, unsigned *status, char *detail, size_t dcap)
{
	*payload = NULL;
	*len = 0;
	pthread_mutex_lock(&c->mu);
	struct dpool *p = NULL;
	for (size_t i = 0; i < s->npools; i++)
		if (s->pools[i].shape.kind == req->kind)
			p = &s->pools[i];
	if (s->failed[0]) {
		*status = 409;
		snprintf(detail, dcap, "%s", s->failed);
		pthread_mutex_unlock(&c->mu);
		return ERR_CONFLICT;
	}
	if (!p || p->learning || !same_shape(&p->shape, req) || req->batch < p->start) {
		/* Not the pool's: the library decides (and a learning pool learns). */
		bool learn = p && p->learning, other = p && !learn && !same_shape(&p->shape, req);
		struct mpc_prep_req pooled = other ? p->shape : (struct mpc_prep_req){0};
		pthread_mutex_unlock(&c->mu);
		int rc = direct(c, s, other ? &pooled : NULL, party, req, payload, len, status, detail, dcap);
		if (rc == 0 && learn) {
			pthread_mutex_lock(&c->mu);
			adopt_locked(c, s, p, req, *len);
			pthread_mutex_unlock(&c->mu);
		}
		return rc;
	}
	bool need_gen;
	int rc = pooled_locked(c, s, p, party, req, payload, len, status, detail, dcap, &need_gen);
	bool hit = rc == 0 && !need_gen;
	if (hit)
		p->hits++;
	pthread_mutex_unlock(&c->mu);
	if (hit)
		metric_inc(c->m_hit);
	if (rc != 0 || hit)
		return rc;
	/* The pool is behind: generate the batch now, in the session's order. A worker may
	 * have made it while this waited for gen_mu; pooled_locked checks again. */
	pthread_mutex_lock(&s->gen_mu);
	pthread_mutex_lock(&c->mu);
	rc = pooled_locked(c, s, p, party, req, payload, len, status, detail, dcap, &need_gen);
	if (rc == 0 && need_gen) {
		uint64_t batch = p->next_gen;
		pthread_mutex_unlock(&c->mu);
		struct dentry *e = NULL;
		struct timespec t0;
		clock_gettime(CLOCK_MONOTONIC, &t0);
		int grc = generate(s, p, batch, &e);
		double secs = seconds_since(&t0);
		pthread_mutex_lock(&c->mu);
		if (grc != 0) {
			p->failed = true;
			snprintf(p->why, sizeof p->why, "batch %llu: %s", (unsigned long long)batch, lib_reason(grc));
			*status = grc == ERR_NOMEM ? 503 : 409;
			snprintf(detail, dcap, "the pool of kind %u failed: %s", (unsigned)p->shape.kind, p->why);
			rc = grc == ERR_NOMEM ? ERR_NOMEM : ERR_CONFLICT;
		} else if (s->gone) {
			entry_free(e);
			*status = 404;
			snprintf(detail, dcap, "the session was deleted");
			rc = ERR_NOT_FOUND;
		} else {
			append_locked(c, p, e, secs);
			rc = pooled_locked(c, s, p, party, req, payload, len, status, detail, dcap, &need_gen);
		}
	}
	if (rc == 0)
		p->misses++;
	pthread_mutex_unlock(&c->mu);
	pthread_mutex_unlock(&s->gen_mu);
	if (rc == 0)
		metric_inc(c->m_miss);
	return rc;
}

/* ---- workers ---- */

/* Picks a pool to refill (marking it busy and taking a session reference), or
 * returns false. Caller holds c->mu. */
static bool pick_locked(struct dealer_ctx *c, struct dsession **ps, struct dpool **pp)
{
	size_t ns = c->nsessions;
	for (size_t k = 0; k < ns; k++) {
		struct dsession *s = c->sessions[(c->rr + k) % ns];
		if (s->gone || s->failed[0])
			continue;
		for (size_t i = 0; i < s->npools; i++) {
			struct dpool *p = &s->pools[i];
			if (p->busy || p->failed || p->learning)
				continue;
			if (p->items < p->min_items)
				p->filling = true;
			if (p->items >= p->max_items)
				p->filling = false;
			if (!p->filling)
				continue;
			size_t est = p->batch_bytes;
			if (c->pool_bytes + c->reserved + est > (size_t)c->set.pool_max_bytes ||
			    p->bytes + est > (size_t)c->set.pool_max_pool_bytes) {
				if (!p->stalled)
					metric_inc(c->m_backpressure);
				p->stalled = true;
				continue;
			}
			p->stalled = false;
			p->busy = true;
			p->reserved = est; /* other workers see it taken until the batch lands */
			c->reserved += est;
			s->refs++;
			c->rr = (c->rr + k + 1) % ns;
			*ps = s;
			*pp = p;
			return true;
		}
	}
	return false;
}

static void refill_one(struct dealer_ctx *c, struct dsession *s, struct dpool *p)
{
	pthread_mutex_lock(&s->gen_mu);
	pthread_mutex_lock(&c->mu);
	bool skip = s->gone || s->failed[0] || p->failed;
	uint64_t batch = p->next_gen;
	pthread_mutex_unlock(&c->mu);
	if (!skip) {
		struct dentry *e = NULL;
		struct timespec t0;
		clock_gettime(CLOCK_MONOTONIC, &t0);
		int rc = generate(s, p, batch, &e);
		double secs = seconds_since(&t0);
		pthread_mutex_lock(&c->mu);
		if (rc != 0) {
			p->failed = true;
			snprintf(p->why, sizeof p->why, "batch %llu: %s", (unsigned long long)batch, lib_reason(rc));
			log_ctx_set(NULL, s->id);
			LOG_WARN("dealer.pool_failed", LOG_I("kind", p->shape.kind), LOG_I("batch", batch),
				 LOG_S("error", err_slug(rc)), LOG_S("detail", p->why));
			log_ctx_set(NULL, NULL);
		} else if (s->gone || s->failed[0]) {
			entry_free(e);
		} else {
			append_locked(c, p, e, secs);
		}
		pthread_mutex_unlock(&c->mu);
	}
	pthread_mutex_unlock(&s->gen_mu);
}

static void *worker(void *arg)
{
	struct dealer_ctx *c = arg;
	pthread_mutex_lock(&c->mu);
	while (!c->stop) {
		int64_t now = dealer_now_ms();
		if (now >= c->next_sweep_ms) {
			dealer_sweep_locked(c, now);
			c->next_sweep_ms = now + 1000;
		}
		struct dsession *s;
		struct dpool *p;
		if (!pick_locked(c, &s, &p)) {
			struct timespec until;
			clock_gettime(CLOCK_MONOTONIC, &until);
			until.tv_sec += 1;
			pthread_cond_timedwait(&c->wake, &c->mu, &until);
			continue;
		}
		pthread_mutex_unlock(&c->mu);
		refill_one(c, s, p);
		pthread_mutex_lock(&c->mu);
		p->busy = false;
		c->reserved -= p->reserved;
		p->reserved = 0;
		dealer_session_put_locked(c, s);
	}
	pthread_mutex_unlock(&c->mu);
	return NULL;
}

int dealer_workers_start(struct dealer_ctx *c)
{
	size_t n = (size_t)c->set.workers;
	if (n == 0)
		return 0;
	c->workers = calloc(n, sizeof *c->workers);
	if (!c->workers)
		return ERR_NOMEM;
	for (size_t i = 0; i < n; i++) {
		if (pthread_create(&c->workers[i], NULL, worker, c) != 0) {
			LOG_ERROR("dealer.worker_failed", LOG_S("detail", "could not start a pool worker thread"));
			return ERR_NOMEM;
		}
		pthread_mutex_lock(&c->mu);
		c->nworkers++;
		pthread_mutex_unlock(&c->mu);
	}
	return 0;
}

void dealer_workers_stop(struct dealer_ctx *c)
{
	pthread_mutex_lock(&c->mu);
	c->stop = true;
	pthread_cond_broadcast(&c->wake);
	size_t n = c->nworkers;
	pthread_mutex_unlock(&c->mu);
	for (size_t i = 0; i < n; i++)
		pthread_join(c->workers[i], NULL);
	pthread_mutex_lock(&c->mu);
	c->nworkers = 0;
	pthread_mutex_unlock(&c->mu);
	free(c->workers);
	c->workers = NULL;
}
