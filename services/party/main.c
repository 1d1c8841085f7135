/* mimir-party: configuration, route table, metrics and lifecycle. The stream listener
 * of mnet starts before the HTTP server (peers may connect as soon as a session is
 * announced) and stops after it; the janitor thread closes idle sessions and aborts the
 * transports of closed ones; fini ends every session and waits for the workers. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include <sodium.h>

#include "err/err.h"
#include "log/log.h"
#include "metrics/metrics.h"
#include "party.h"
#include "svc/svc.h"

struct party_settings party_settings = {
	.stream_bind = "127.0.0.1",
	.stream_port = 8445,
	.stream_max = 256,
	.max_sessions = 16,
	.max_generations = 4,
	.idle_expiry_s = 900,
	.input_timeout_ms = 60000,
	.round_ms = 8000,
	.dealer_ms = 4000,
	.check_every = (int64_t)1 << 22,
	.heartbeat_ms = 15000,
	.mode = 0,
};

static const char *const mode_names[] = {"stream", "request", NULL};

static const struct jspec_field config_spec[] = {
	JSPEC_STR("mtls.cert", true, 1, 4096, &party_settings.mtls_cert),
	JSPEC_STR("mtls.key", true, 1, 4096, &party_settings.mtls_key),
	JSPEC_STR("mtls.ca", true, 1, 4096, &party_settings.mtls_ca),
	JSPEC_STR("stream.bind", false, 1, 64, &party_settings.stream_bind),
	JSPEC_I64("stream.port", false, 0, 65535, &party_settings.stream_port),
	JSPEC_I64("stream.max_streams", false, 4, 100000, &party_settings.stream_max),
	JSPEC_STR("model.share", true, 1, 4096, &party_settings.model_share),
	JSPEC_STR("model.key", true, 1, 4096, &party_settings.model_key),
	JSPEC_I64("limits.max_sessions", false, 1, 4096, &party_settings.max_sessions),
	JSPEC_I64("limits.max_generations", false, 1, 1024, &party_settings.max_generations),
	JSPEC_I64("limits.idle_expiry_s", false, 0, 30 * 86400, &party_settings.idle_expiry_s),
	JSPEC_I64("limits.input_timeout_ms", false, 100, 3600000, &party_settings.input_timeout_ms),
	JSPEC_I64("timeouts.round_ms", false, 100, 600000, &party_settings.round_ms),
	JSPEC_I64("timeouts.dealer_ms", false, 100, 600000, &party_settings.dealer_ms),
	JSPEC_CHOICE("mpc.mode", false, mode_names, &party_settings.mode),
	JSPEC_I64("mpc.check_every", false, 1024, (int64_t)1 << 28, &party_settings.check_every),
	JSPEC_I64("sse.heartbeat_ms", false, 100, 600000, &party_settings.heartbeat_ms),
	JSPEC_END_F,
};

/* The INPUT of the largest generation (CIO_MAX_VALUES values, MPC_MAX_PARTIES tags). */
#define INPUT_BODY_MAX (8u * CIO_MAX_VALUES + 96u + 32u * MPC_MAX_PARTIES)

#define SES "/v1/sessions/{id}"
#define GEN SES "/generations/{g}"
static const struct http_route routes[] = {
	{"GET", "/v1/identity", party_identity_get, 0, 0, 0},
	{"POST", "/v1/sessions", party_session_create, PARTY_CONTROL, 64 * 1024, 0},
	{"GET", "/v1/sessions", party_session_list, PARTY_CONTROL, 0, 0},
	{"GET", SES, party_session_get, PARTY_CONTROL, 0, 0},
	{"DELETE", SES, party_session_delete, PARTY_CONTROL, 0, 0},
	{"POST", SES "/generations", party_gen_create, PARTY_RELAY, 16 * 1024, 0},
	{"GET", GEN, party_gen_get, PARTY_RELAY, 0, 0},
	{"POST", GEN "/input", party_gen_input, PARTY_RELAY, INPUT_BODY_MAX, 0},
	{"GET", GEN "/events", party_gen_events, PARTY_RELAY, 0, 0},
	{"POST", GEN "/cancel", party_gen_cancel, PARTY_RELAY, 1024, 0},
	{"POST", MNET_ROUTE, party_mpc_round, HTTP_ROLE(IDENT_ROLE_PARTY), MNET_HDR_LEN + MNET_MAX_DATA,
	 HTTP_ROUTE_QUIET | HTTP_ROUTE_SECRET},
	{NULL, NULL, NULL, 0, 0, 0},
};

int64_t party_now_ms(void)
{
	struct timespec ts;
	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

int party_mpc_round(struct http_req *r, void *ctx)
{
	struct party_ctx *c = ctx;
	return mnet_hub_deliver(c->hub, r);
}

/* ---- aborts and the janitor ---- */

void party_abort_net(struct psession *s)
{
	pthread_mutex_lock(&s->mu);
	struct mpc_net *n = s->net;
	if (n)
		s->net_users++;
	pthread_mutex_unlock(&s->mu);
	if (!n)
		return;
	mpc_net_abort(n); /* thread-safe; tells the peers */
	pthread_mutex_lock(&s->mu);
	s->net_users--;
	pthread_cond_broadcast(&s->cv);
	pthread_mutex_unlock(&s->mu);
}

void party_abort_later_locked(struct party_ctx *c, struct psession *s)
{
	if (c->nabort == c->cabort) {
		size_t nc = c->cabort ? 2 * c->cabort : 8;
		struct psession **q = realloc(c->abortq, nc * sizeof *q);
		if (!q)
			return; /* the worker still ends at its next round's timeout */
		c->abortq = q;
		c->cabort = nc;
	}
	s->refs++;
	c->abortq[c->nabort++] = s;
	pthread_cond_broadcast(&c->cv);
}

static void sweep_locked(struct party_ctx *c, int64_t now)
{
	if (c->set.idle_expiry_s <= 0)
		return;
	for (size_t i = c->nsessions; i-- > 0;) {
		struct psession *s = c->sessions[i];
		pthread_mutex_lock(&s->mu);
		bool busy = s->gen != NULL || s->state == PS_INITIALISING || s->state == PS_CREATED;
		int64_t idle = now - s->used_ms;
		pthread_mutex_unlock(&s->mu);
		if (busy || idle <= c->set.idle_expiry_s * 1000)
			continue;
		log_ctx_set(NULL, s->id);
		LOG_INFO("party.session_expired", LOG_I("idle_s", idle / 1000),
			 LOG_S("detail", "idle past limits.idle_expiry_s: closed and wiped"));
		log_ctx_set(NULL, NULL);
		party_session_close_locked(c, s, "closed after limits.idle_expiry_s without activity");
	}
}

static void *janitor_main(void *arg)
{
	struct party_ctx *c = arg;
	pthread_mutex_lock(&c->mu);
	while (!c->stop) {
		while (c->nabort) {
			struct psession *s = c->abortq[--c->nabort];
			pthread_mutex_unlock(&c->mu);
			party_abort_net(s);
			pthread_mutex_lock(&c->mu);
			party_session_put_locked(c, s);
		}
		sweep_locked(c, party_now_ms());
		struct timespec dl;
		clock_gettime(CLOCK_MONOTONIC, &dl);
		dl.tv_sec += 1;
		if (!c->nabort && !c->stop)
			pthread_cond_timedwait(&c->cv, &c->mu, &dl);
	}
	pthread_mutex_unlock(&c->mu);
	return NULL;
}

/* ---- lifecycle ---- */

static void fini(void *ctx)
{
	struct party_ctx *c = ctx;
	if (!c)
		return;
	pthread_mutex_lock(&c->mu);
	c->stop = true;
	pthread_cond_broadcast(&c->cv);
	pthread_mutex_unlock(&c->mu);
	if (c->janitor_started)
		pthread_join(c->janitor, NULL);
	/* Every session ends: the queued aborts first, then each open session (a worker
	 * in a round returns at once; one waiting for the dealer within its bound). */
	pthread_mutex_lock(&c->mu);
	while (c->nsessions)
		party_session_close_locked(c, c->sessions[c->nsessions - 1], "the party is shutting down");
	while (c->nabort) {
		struct psession *s = c->abortq[--c->nabort];
		pthread_mutex_unlock(&c->mu);
		party_abort_net(s);
		pthread_mutex_lock(&c->mu);
		party_session_put_locked(c, s);
	}
	while (c->workers)
		pthread_cond_wait(&c->cv, &c->mu);
	pthread_mutex_unlock(&c->mu);
	mnet_hub_free(c->hub);
	free(c->abortq);
	free(c->sessions);
	pthread_cond_destroy(&c->cv);
	pthread_mutex_destroy(&c->mu);
	sodium_memzero(c->sk, sizeof c->sk);
	sodium_memzero(c, sizeof *c);
	free(c);
}

static const double init_bounds[] = {0.1, 0.25, 0.5, 1, 2.5, 5, 10, 25, 60};
static const double token_bounds[] = {0.05, 0.1, 0.25, 0.5, 1, 2, 4, 8, 16, 32};

static void register_metrics(struct party_ctx *c, struct metrics *m)
{
	c->m_sessions = metric_series(metrics_gauge(m, "mimir_party_sessions", "Sessions open at this party", NULL),
				      NULL);
	c->m_running = metric_series(
	    metrics_gauge(m, "mimir_party_generations_running",
			  "Generations holding a slot of limits.max_generations (masking, waiting for input or running)",
			  NULL),
	    NULL);
	c->m_sessions_total = metrics_counter(m, "mimir_party_sessions_total",
					      "Sessions by how their initialisation ended: ready or failed",
					      (const char *const[]){"outcome", NULL});
	c->m_generations_total = metrics_counter(m, "mimir_party_generations_total",
						 "Generations by outcome: done, cancelled (at a token boundary, "
						 "the session goes on), timeout (no INPUT), failed (the session ends)",
						 (const char *const[]){"outcome", NULL});
	c->m_tokens = metric_series(metrics_counter(m, "mimir_party_tokens_total",
						    "Tokens released to clients (one OUTPUT message each)", NULL),
				    NULL);
	c->m_rounds = metric_series(metrics_counter(m, "mimir_party_mpc_rounds_total",
						    "MPC rounds run with the peers (engine counters)", NULL),
				    NULL);
	c->m_bytes_sent = metric_series(metrics_counter(m, "mimir_party_mpc_sent_bytes_total",
							"Bytes sent to peers, summed over peers", NULL),
					NULL);
	c->m_bytes_recv = metric_series(metrics_counter(m, "mimir_party_mpc_received_bytes_total",
							"Bytes received from peers", NULL),
					NULL);
	c->m_checks = metric_series(metrics_counter(m, "mimir_party_mac_checks_total",
						    "Batched MAC checks run (each before anything is released)", NULL),
				    NULL);
	c->m_sacrificed = metric_series(metrics_counter(m, "mimir_party_triples_sacrificed_total",
							"Beaver triples checked by sacrifice", NULL),
					NULL);
	c->m_prep_bytes = metric_series(metrics_counter(m, "mimir_party_dealer_bytes_total",
							"Dealer payload bytes received", NULL),
					NULL);
	c->m_aborts = metrics_counter(m, "mimir_party_aborts_total",
				      "Engine aborts by the check that failed (mpc_failed_check)",
				      (const char *const[]){"check", NULL});
	c->m_init_seconds = metric_series(metrics_histogram(m, "mimir_party_session_init_seconds",
							    "Time from a session's creation to ready (dealer seed, "
							    "transport, weights)",
							    NULL, init_bounds,
							    sizeof init_bounds / sizeof init_bounds[0]),
					  NULL);
	c->m_token_seconds = metric_series(metrics_histogram(m, "mimir_party_token_seconds",
							     "Time per released token (forward pass, choice, "
							     "output protocol)",
							     NULL, token_bounds,
							     sizeof token_bounds / sizeof token_bounds[0]),
					   NULL);
	/* Labelled families appear once they have a series: the outcomes and the checks
	 * that matter most start at zero so dashboards see them. */
	static const char *const outcomes[] = {"done", "cancelled", "timeout", "failed", NULL};
	for (size_t i = 0; outcomes[i]; i++)
		metric_add_u64(metric_series(c->m_generations_total, METRIC_LABELS(outcomes[i])), 0);
	metric_add_u64(metric_series(c->m_sessions_total, METRIC_LABELS("ready")), 0);
	metric_add_u64(metric_series(c->m_sessions_total, METRIC_LABELS("failed")), 0);
	static const char *const checks[] = {"mac-check", "triple-sacrifice", "transport", "preprocessing", NULL};
	for (size_t i = 0; checks[i]; i++)
		metric_add_u64(metric_series(c->m_aborts, METRIC_LABELS(checks[i])), 0);
}

static int init(void **out, struct metrics *m)
{
	struct party_ctx *c = calloc(1, sizeof *c);
	if (!c)
		return ERR_NOMEM;
	c->set = party_settings;
	pthread_mutex_init(&c->mu, NULL);
	pthread_condattr_t ca;
	pthread_condattr_init(&ca);
	pthread_condattr_setclock(&ca, CLOCK_MONOTONIC); /* the janitor's timed wait */
	pthread_cond_init(&c->cv, &ca);
	pthread_condattr_destroy(&ca);
	int rc = sodium_init() < 0 ? ERR_CRYPTO : 0;
	if (rc == 0 && c->set.dealer_ms >= c->set.round_ms)
		LOG_WARN("party.config", LOG_S("field", "timeouts.dealer_ms"),
			 LOG_S("detail", "timeouts.dealer_ms should be below timeouts.round_ms, so that a dealer "
					 "failure, not a peer's timeout, is what every party reports"));
	if (rc == 0)
		rc = party_identity_load(c);
	if (rc == 0)
		rc = mnet_hub_new(0, &c->hub);
	if (rc == 0) {
		struct mnet_listen_opts lo = {.bind = c->set.stream_bind, .port = (uint16_t)c->set.stream_port,
					      .ca_file = c->set.mtls_ca, .cert_file = c->set.mtls_cert,
					      .key_file = c->set.mtls_key, .max_streams = (unsigned)c->set.stream_max};
		if ((rc = mnet_hub_listen(c->hub, &lo)) != 0)
			LOG_ERROR("party.stream_listener",
				  LOG_S("detail", "could not start the MPC stream listener: check stream.bind, "
						  "stream.port and the mtls.* files"),
				  LOG_S("error", err_title(rc)));
	}
	if (rc == 0) {
		register_metrics(c, m);
		if (pthread_create(&c->janitor, NULL, janitor_main, c) != 0)
			rc = ERR_NOMEM;
		else
			c->janitor_started = true;
	}
	if (rc != 0) {
		fini(c);
		return rc;
	}
	char mid[2 * MSHARE_ID_BYTES + 1];
	LOG_INFO("party.started", LOG_S("cn", c->cn), LOG_I("party", c->share.party),
		 LOG_I("nparties", c->share.nparties), LOG_I("frac_bits", c->share.frac_bits),
		 LOG_S("model_id", mshare_hex(c->share.model_id, MSHARE_ID_BYTES, mid, sizeof mid)),
		 LOG_I("stream_port", mnet_hub_stream_port(c->hub)), LOG_S("mode", mode_names[c->set.mode]),
		 LOG_I("round_ms", c->set.round_ms), LOG_I("dealer_ms", c->set.dealer_ms));
	*out = c;
	return 0;
}

static bool ready(void *ctx, char *why, size_t cap)
{
	struct party_ctx *c = ctx;
	pthread_mutex_lock(&c->mu);
	bool ok = !c->stop && c->janitor_started;
	pthread_mutex_unlock(&c->mu);
	if (!ok)
		snprintf(why, cap, "the party is stopping");
	return ok;
}

static const struct svc_def def = {
	.name = "party",
	.summary = "A Mimir party: holds one share of the model and runs secure generation with its peers.",
	.default_port = 8446,
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
