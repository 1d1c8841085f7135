/* mimir-dealer: configuration, route table, metrics and lifecycle (the generation
 * workers start before the server and stop after it); handlers live beside it. */
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include <sodium.h>

#include "dealer.h"
#include "err/err.h"
#include "log/log.h"
#include "metrics/metrics.h"
#include "svc/svc.h"

struct dealer_settings dealer_settings = {
	.pool_min_items = 16384,
	.pool_max_items = 65536,
	.pool_max_bytes = 1ll << 30,
	.pool_max_pool_bytes = 128ll << 20,
	.workers = 2,
	.sessions_max = 1024,
	.idle_timeout_s = 3600,
	.fault_injection = false,
};

static const struct jspec_field config_spec[] = {
	JSPEC_I64("triple_pool.min_size", false, 0, 1ll << 32, &dealer_settings.pool_min_items),
	JSPEC_I64("triple_pool.max_size", false, 1, 1ll << 34, &dealer_settings.pool_max_items),
	JSPEC_I64("pool.max_bytes", false, 0, 1ll << 40, &dealer_settings.pool_max_bytes),
	JSPEC_I64("pool.max_pool_bytes", false, 0, 1ll << 40, &dealer_settings.pool_max_pool_bytes),
	JSPEC_I64("pool.workers", false, 0, 64, &dealer_settings.workers),
	JSPEC_I64("sessions.max", false, 1, 1000000, &dealer_settings.sessions_max),
	JSPEC_I64("sessions.idle_timeout_s", false, 0, 30 * 86400, &dealer_settings.idle_timeout_s),
	JSPEC_BOOLEAN("testing.fault_injection", false, &dealer_settings.fault_injection),
	JSPEC_END_F,
};

#define SES "/v1/sessions/{id}"
static const struct http_route routes[] = {
	{"POST", "/v1/sessions", dealer_session_create, DEALER_ADMIN, 16 * 1024, 0},
	{"GET", "/v1/sessions", dealer_session_list, DEALER_ADMIN, 0, 0},
	{"GET", SES, dealer_session_get, DEALER_ADMIN, 0, 0},
	{"DELETE", SES, dealer_session_delete, DEALER_ADMIN, 0, 0},
	{"GET", SES "/seed", dealer_seed, DEALER_PARTY, 0, 0},
	{"POST", SES "/prep", dealer_prep, DEALER_PARTY, 1024, HTTP_ROUTE_QUIET},
	{"POST", SES "/report", dealer_report, DEALER_PARTY, 1024, 0},
	{NULL, NULL, NULL, 0, 0, 0},
};

static void fini(void *ctx)
{
	struct dealer_ctx *c = ctx;
	if (!c)
		return;
	dealer_workers_stop(c);
	pthread_mutex_lock(&c->mu);
	while (c->nsessions)
		dealer_session_remove_locked(c, c->sessions[c->nsessions - 1]);
	pthread_mutex_unlock(&c->mu);
	free(c->sessions);
	pthread_cond_destroy(&c->wake);
	pthread_mutex_destroy(&c->mu);
	free(c);
}

static const double gen_bounds[] = {0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025,
				    0.05,   0.1,   0.25,   0.5,   1,    2.5};

static void register_metrics(struct dealer_ctx *c, struct metrics *m)
{
	static const char *const kind[] = {"kind", NULL};
	c->m_sessions = metric_series(metrics_gauge(m, "mimir_dealer_sessions", "Open dealer sessions", NULL), NULL);
	c->m_pool_bytes = metric_series(
	    metrics_gauge(m, "mimir_dealer_pool_bytes", "Payload bytes held in pools, all sessions", NULL), NULL);
	c->m_items = metrics_gauge(m, "mimir_dealer_pool_items",
				   "Items generated ahead and not yet fetched, by preprocessing kind", kind);
	c->m_generated = metrics_counter(m, "mimir_dealer_items_generated_total",
					 "Items generated for pools, by preprocessing kind (rate() is the generation rate)",
					 kind);
	c->m_gen_seconds_total = metric_series(
	    metrics_counter(m, "mimir_dealer_generation_seconds_total", "Time spent generating pool batches", NULL),
	    NULL);
	c->m_gen_hist = metric_series(metrics_histogram(m, "mimir_dealer_batch_generation_seconds",
							"Time to generate one pool batch", NULL, gen_bounds,
							sizeof gen_bounds / sizeof gen_bounds[0]),
				      NULL);
	c->m_served = metrics_counter(m, "mimir_dealer_bytes_served_total",
				      "Payload bytes handed to parties, by preprocessing kind", kind);
	struct metric *f = metrics_counter(m, "mimir_dealer_fetches_total",
					   "Payload fetches by source: hit (ready in a pool), miss (pool behind, "
					   "generated on demand), direct (no pool for the shape)",
					   (const char *const[]){"source", NULL});
	c->m_hit = metric_series(f, METRIC_LABELS("hit"));
	c->m_miss = metric_series(f, METRIC_LABELS("miss"));
	c->m_direct = metric_series(f, METRIC_LABELS("direct"));
	c->m_seeds = metric_series(metrics_counter(m, "mimir_dealer_seeds_delivered_total",
						   "Party seeds delivered (once per party and session)", NULL),
				   NULL);
	c->m_refused = metrics_counter(m, "mimir_dealer_requests_refused_total",
				       "Requests the dealer refused, by reason (the problem type slug)",
				       (const char *const[]){"reason", NULL});
	c->m_backpressure = metric_series(
	    metrics_counter(m, "mimir_dealer_pool_backpressure_total",
			    "Pool refills deferred because a memory bound was reached", NULL),
	    NULL);
	c->m_sacrifice = metric_series(metrics_counter(m, "mimir_dealer_sacrifice_failures_total",
						       "Triple sacrifice failures reported by parties", NULL),
				       NULL);
	c->m_aborts = metrics_counter(m, "mimir_dealer_party_aborts_total",
				      "Aborts reported by parties, by the engine's failed check",
				      (const char *const[]){"check", NULL});
	/* Families with labels render once they have a series; the refusal reasons that
	 * matter most are there from the start so dashboards see zeros. */
	static const char *const reasons[] = {"forbidden", "not-found", "conflict", "invalid-argument", NULL};
	for (size_t i = 0; reasons[i]; i++)
		metric_add_u64(metric_series(c->m_refused, METRIC_LABELS(reasons[i])), 0);
	metric_add_u64(metric_series(c->m_aborts, METRIC_LABELS("triple-sacrifice")), 0);
	metric_add_u64(metric_series(c->m_aborts, METRIC_LABELS("mac-check")), 0);
}

static int init(void **out, struct metrics *m)
{
	struct dealer_ctx *c = calloc(1, sizeof *c);
	if (!c)
		return ERR_NOMEM;
	c->set = dealer_settings;
	if (c->set.pool_max_items < c->set.pool_min_items) {
		LOG_ERROR("dealer.bad_config", LOG_S("field", "triple_pool.max_size"),
			  LOG_S("detail", "triple_pool.max_size must be at least triple_pool.min_size"));
		free(c);
		return ERR_CONFIG;
	}
	if (sodium_init() < 0) {
		free(c);
		return ERR_CRYPTO;
	}
	pthread_mutex_init(&c->mu, NULL);
	pthread_condattr_t ca;
	pthread_condattr_init(&ca);
	pthread_condattr_setclock(&ca, CLOCK_MONOTONIC); /* the workers' timed waits */
	pthread_cond_init(&c->wake, &ca);
	pthread_condattr_destroy(&ca);
	register_metrics(c, m);
	if (c->set.fault_injection)
		LOG_WARN("dealer.fault_injection_enabled",
			 LOG_S("detail", "testing.fault_injection is on: sessions may be created with faulty "
					 "triples; never enable this in production"));
	int rc = dealer_workers_start(c);
	if (rc != 0) {
		fini(c);
		return rc;
	}
	LOG_INFO("dealer.started", LOG_I("workers", c->set.workers), LOG_I("pool_min_items", c->set.pool_min_items),
		 LOG_I("pool_max_items", c->set.pool_max_items), LOG_I("pool_max_bytes", c->set.pool_max_bytes));
	*out = c;
	return 0;
}

static bool ready(void *ctx, char *why, size_t cap)
{
	struct dealer_ctx *c = ctx;
	pthread_mutex_lock(&c->mu);
	bool ok = !c->stop && c->nworkers == (size_t)c->set.workers;
	pthread_mutex_unlock(&c->mu);
	if (!ok)
		snprintf(why, cap, "the pool workers are not running");
	return ok;
}

static const struct svc_def def = {
	.name = "dealer",
	.summary = "The Mimir dealer: correlated randomness for MPC sessions, pooled ahead of use.",
	.default_port = 8444,
	.routes = routes,
	.config_spec = config_spec,
	.init = init,
	.fini = fini,
	.ready = ready,
};

int main(int argc, char **argv)
{
	return svc_main(argc, argv, &def);
}
