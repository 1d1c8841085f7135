/* mimir-gateway: configuration, route table and lifecycle (the upstream pool, the
 * administrators' token hashes, the CORS origins, the rate-limit table, the relay of
 * generations to the parties, readiness from the session service); handlers live
 * beside it. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <sodium.h>

#include "err/err.h"
#include "gateway.h"
#include "log/log.h"
#include "metrics/metrics.h"
#include "oai/oai.h"
#include "svc/svc.h"

struct gw_settings gw_settings = {
	.session_url = "https://localhost:8442",
	.session_timeout_ms = 5000,
	.session_connect_timeout_ms = 1000,
	.session_retries = 1,
	.session_pool = 32,
	.admin_cert = true,
	.key_cache_ms = 1000,
	.key_rate = 20,
	.key_burst = 40,
	.admin_rate = 50,
	.admin_burst = 100,
	.limit_buckets = 65536,
	.cors_origins = "",
	.cors_max_age_s = 600,
	.parties_timeout_ms = 5000,
	.parties_connect_timeout_ms = 1000,
	.parties_stream_retries = 3,
	.stream_heartbeat_ms = 15000,
	.stream_abandon_ms = 10000,
	.stream_max_generations = 64,
	.stream_buffer_bytes = 4 << 20,
	.stream_keep_ms = 120000,
	.openai_max_tokens = 16,
	.openai_concurrency = 4,
};

static const struct jspec_field config_spec[] = {
	JSPEC_STR("session.url", false, 8, 200, &gw_settings.session_url),
	JSPEC_STR("session.ca", false, 1, 4096, &gw_settings.session_ca),
	JSPEC_STR("session.cert", false, 1, 4096, &gw_settings.session_cert),
	JSPEC_STR("session.key", false, 1, 4096, &gw_settings.session_key),
	JSPEC_STR("session.pin", false, 64, 64, &gw_settings.session_pin),
	JSPEC_I64("session.timeout_ms", false, 100, 600000, &gw_settings.session_timeout_ms),
	JSPEC_I64("session.connect_timeout_ms", false, 50, 60000, &gw_settings.session_connect_timeout_ms),
	JSPEC_I64("session.retries", false, 0, 5, &gw_settings.session_retries),
	JSPEC_I64("session.pool", false, 1, 256, &gw_settings.session_pool),
	JSPEC_BOOLEAN("admin.cert", false, &gw_settings.admin_cert),
	JSPEC_STR("admin.tokens_file", false, 1, 4096, &gw_settings.admin_tokens_file),
	JSPEC_I64("keys.cache_ms", false, 0, 600000, &gw_settings.key_cache_ms),
	JSPEC_DBL("limits.key_rate", false, 0, 1e6, &gw_settings.key_rate),
	JSPEC_I64("limits.key_burst", false, 1, 1000000, &gw_settings.key_burst),
	JSPEC_DBL("limits.admin_rate", false, 0, 1e6, &gw_settings.admin_rate),
	JSPEC_I64("limits.admin_burst", false, 1, 1000000, &gw_settings.admin_burst),
	JSPEC_I64("limits.buckets", false, 64, 1 << 24, &gw_settings.limit_buckets),
	JSPEC_STR("cors.origins", false, 0, 4096, &gw_settings.cors_origins),
	JSPEC_BOOLEAN("cors.admin", false, &gw_settings.cors_admin),
	JSPEC_I64("cors.max_age_s", false, 0, 86400, &gw_settings.cors_max_age_s),
	JSPEC_STR("parties.ca", false, 1, 4096, &gw_settings.parties_ca),
	JSPEC_STR("parties.cert", false, 1, 4096, &gw_settings.parties_cert),
	JSPEC_STR("parties.key", false, 1, 4096, &gw_settings.parties_key),
	JSPEC_I64("parties.timeout_ms", false, 100, 600000, &gw_settings.parties_timeout_ms),
	JSPEC_I64("parties.connect_timeout_ms", false, 50, 60000, &gw_settings.parties_connect_timeout_ms),
	JSPEC_I64("parties.stream_retries", false, 0, 10, &gw_settings.parties_stream_retries),
	JSPEC_I64("stream.heartbeat_ms", false, 100, 600000, &gw_settings.stream_heartbeat_ms),
	JSPEC_I64("stream.abandon_ms", false, 100, 3600000, &gw_settings.stream_abandon_ms),
	JSPEC_I64("stream.max_generations", false, 1, 100000, &gw_settings.stream_max_generations),
	JSPEC_I64("stream.buffer_bytes", false, 64 << 10, 1LL << 30, &gw_settings.stream_buffer_bytes),
	JSPEC_I64("stream.keep_ms", false, 0, 86400000, &gw_settings.stream_keep_ms),
	JSPEC_STR("openai.sessions", false, 0, 4096, &gw_settings.openai_sessions),
	JSPEC_STR("openai.tokenizer", false, 1, 4096, &gw_settings.openai_tokenizer),
	JSPEC_STR("openai.url", false, 8, 200, &gw_settings.openai_url),
	JSPEC_STR("openai.ca", false, 1, 4096, &gw_settings.openai_ca),
	JSPEC_I64("openai.max_tokens", false, 1, 4096, &gw_settings.openai_max_tokens),
	JSPEC_I64("openai.concurrency", false, 1, 256, &gw_settings.openai_concurrency),
	JSPEC_END_F,
};

/* Every path answers OPTIONS (CORS preflights); bodies are bounded per operation, at
 * the registry's own limits. */
#define A GW_ADMIN_PREFIX
#define G "/v1/sessions/{id}/generations"
#define NOBODY 1024
const struct http_route gw_routes[] = {
	{"GET", A "/whoami", gw_admin_whoami, 0, NOBODY, HTTP_ROUTE_PUBLIC},
	{"POST", A "/models", gw_admin_forward, 0, 64 * 1024, HTTP_ROUTE_PUBLIC},
	{"GET", A "/models", gw_admin_forward, 0, NOBODY, HTTP_ROUTE_PUBLIC},
	{"GET", A "/models/{id}", gw_admin_forward, 0, NOBODY, HTTP_ROUTE_PUBLIC},
	{"DELETE", A "/models/{id}", gw_admin_forward, 0, NOBODY, HTTP_ROUTE_PUBLIC},
	{"POST", A "/parties", gw_admin_forward, 0, 16 * 1024, HTTP_ROUTE_PUBLIC},
	{"GET", A "/parties", gw_admin_forward, 0, NOBODY, HTTP_ROUTE_PUBLIC},
	{"GET", A "/parties/{id}", gw_admin_forward, 0, NOBODY, HTTP_ROUTE_PUBLIC},
	{"PATCH", A "/parties/{id}", gw_admin_forward, 0, 16 * 1024, HTTP_ROUTE_PUBLIC},
	{"POST", A "/sessions", gw_admin_forward, 0, 16 * 1024, HTTP_ROUTE_PUBLIC},
	{"GET", A "/sessions", gw_admin_forward, 0, NOBODY, HTTP_ROUTE_PUBLIC},
	{"GET", A "/sessions/{id}", gw_admin_forward, 0, NOBODY, HTTP_ROUTE_PUBLIC},
	{"POST", A "/sessions/{id}/transition", gw_admin_forward, 0, 4096, HTTP_ROUTE_PUBLIC},
	{"POST", A "/sessions/{id}/close", gw_admin_forward, 0, 4096, HTTP_ROUTE_PUBLIC},
	{"POST", A "/keys", gw_admin_forward, 0, 4096, HTTP_ROUTE_PUBLIC},
	{"GET", A "/keys", gw_admin_forward, 0, NOBODY, HTTP_ROUTE_PUBLIC},
	{"GET", A "/keys/{id}", gw_admin_forward, 0, NOBODY, HTTP_ROUTE_PUBLIC},
	{"POST", A "/keys/{id}/revoke", gw_admin_forward, 0, NOBODY, HTTP_ROUTE_PUBLIC},
	{"GET", A "/audit", gw_admin_forward, 0, NOBODY, HTTP_ROUTE_PUBLIC},
	{"GET", A "/audit/head", gw_admin_forward, 0, NOBODY, HTTP_ROUTE_PUBLIC},
	{"GET", A "/audit/verify", gw_admin_forward, 0, NOBODY, HTTP_ROUTE_PUBLIC},
	{"GET", "/v1/sessions/{id}", gw_client_session_get, 0, NOBODY, HTTP_ROUTE_PUBLIC},
	{"POST", G, gw_gen_create, 0, 16 * 1024, HTTP_ROUTE_PUBLIC},
	{"GET", G "/{g}", gw_gen_get, 0, NOBODY, HTTP_ROUTE_PUBLIC},
	{"GET", G "/{g}/events", gw_gen_events, 0, NOBODY, HTTP_ROUTE_PUBLIC},
	{"POST", G "/{g}/input", gw_gen_post_input, 0, GW_INPUT_MAX, HTTP_ROUTE_PUBLIC},
	{"POST", G "/{g}/cancel", gw_gen_post_cancel, 0, NOBODY, HTTP_ROUTE_PUBLIC},
	{"GET", "/v1/models", gw_oai_models, 0, NOBODY, HTTP_ROUTE_PUBLIC},
	{"POST", "/v1/completions", gw_oai_completions, 0, OAI_PROMPT_MAX + 16384,
	 HTTP_ROUTE_PUBLIC | HTTP_ROUTE_SECRET},
	{"OPTIONS", A "/whoami", gw_preflight, 0, NOBODY, HTTP_ROUTE_PUBLIC},
	{"OPTIONS", A "/models", gw_preflight, 0, NOBODY, HTTP_ROUTE_PUBLIC},
	{"OPTIONS", A "/models/{id}", gw_preflight, 0, NOBODY, HTTP_ROUTE_PUBLIC},
	{"OPTIONS", A "/parties", gw_preflight, 0, NOBODY, HTTP_ROUTE_PUBLIC},
	{"OPTIONS", A "/parties/{id}", gw_preflight, 0, NOBODY, HTTP_ROUTE_PUBLIC},
	{"OPTIONS", A "/sessions", gw_preflight, 0, NOBODY, HTTP_ROUTE_PUBLIC},
	{"OPTIONS", A "/sessions/{id}", gw_preflight, 0, NOBODY, HTTP_ROUTE_PUBLIC},
	{"OPTIONS", A "/sessions/{id}/transition", gw_preflight, 0, NOBODY, HTTP_ROUTE_PUBLIC},
	{"OPTIONS", A "/sessions/{id}/close", gw_preflight, 0, NOBODY, HTTP_ROUTE_PUBLIC},
	{"OPTIONS", A "/keys", gw_preflight, 0, NOBODY, HTTP_ROUTE_PUBLIC},
	{"OPTIONS", A "/keys/{id}", gw_preflight, 0, NOBODY, HTTP_ROUTE_PUBLIC},
	{"OPTIONS", A "/keys/{id}/revoke", gw_preflight, 0, NOBODY, HTTP_ROUTE_PUBLIC},
	{"OPTIONS", A "/audit", gw_preflight, 0, NOBODY, HTTP_ROUTE_PUBLIC},
	{"OPTIONS", A "/audit/head", gw_preflight, 0, NOBODY, HTTP_ROUTE_PUBLIC},
	{"OPTIONS", A "/audit/verify", gw_preflight, 0, NOBODY, HTTP_ROUTE_PUBLIC},
	{"OPTIONS", "/v1/sessions/{id}", gw_preflight, 0, NOBODY, HTTP_ROUTE_PUBLIC},
	{"OPTIONS", G, gw_preflight, 0, NOBODY, HTTP_ROUTE_PUBLIC},
	{"OPTIONS", G "/{g}", gw_preflight, 0, NOBODY, HTTP_ROUTE_PUBLIC},
	{"OPTIONS", G "/{g}/events", gw_preflight, 0, NOBODY, HTTP_ROUTE_PUBLIC},
	{"OPTIONS", G "/{g}/input", gw_preflight, 0, NOBODY, HTTP_ROUTE_PUBLIC},
	{"OPTIONS", G "/{g}/cancel", gw_preflight, 0, NOBODY, HTTP_ROUTE_PUBLIC},
	{"OPTIONS", "/v1/models", gw_preflight, 0, NOBODY, HTTP_ROUTE_PUBLIC},
	{"OPTIONS", "/v1/completions", gw_preflight, 0, NOBODY, HTTP_ROUTE_PUBLIC},
	{NULL, NULL, NULL, 0, 0, 0},
};
#undef A
#undef G

static int bad_config(const char *key, const char *detail)
{
	LOG_ERROR("gateway.bad_config", LOG_S("key", key), LOG_S("detail", detail));
	return ERR_CONFIG;
}

/* "scheme://host[:port]" with scheme http or https, nothing after. */
static bool origin_ok(const char *o, size_t n)
{
	size_t s = n >= 8 && !strncmp(o, "https://", 8) ? 8 : n >= 7 && !strncmp(o, "http://", 7) ? 7 : 0;
	if (!s || n == s || n > GW_ORIGIN_MAX)
		return false;
	for (size_t i = s; i < n; i++)
		if (!((o[i] >= 'a' && o[i] <= 'z') || (o[i] >= 'A' && o[i] <= 'Z') ||
		      (o[i] >= '0' && o[i] <= '9') || strchr(".-:[]", o[i])))
			return false;
	return true;
}

static int parse_origins(struct gw_ctx *c, const char *list)
{
	for (const char *p = list; *p;) {
		while (*p == ' ' || *p == ',')
			p++;
		size_t l = strcspn(p, ",");
		while (l && p[l - 1] == ' ')
			l--;
		if (l == 1 && *p == '*') {
			c->any_origin = true;
		} else if (l) {
			if (!origin_ok(p, l))
				return bad_config("cors.origins", "each origin must be scheme://host[:port] "
								  "(http or https, no path), or * alone");
			if (c->n_origins == GW_ORIGINS_MAX)
				return bad_config("cors.origins", "at most 16 origins");
			snprintf(c->origins[c->n_origins++], GW_ORIGIN_MAX + 1, "%.*s", (int)l, p);
		}
		p += strcspn(p, ",");
	}
	if (c->any_origin && c->n_origins)
		return bad_config("cors.origins", "* allows every origin: list no others beside it");
	return 0;
}

static void fini(void *ctx)
{
	struct gw_ctx *c = ctx;
	if (!c)
		return;
	oai_free(c->oai); /* its completions end (the server has stopped under them) */
	gw_relay_free(c->relay); /* it cancels what still runs at the parties */
	gw_upstream_free(c->up);
	gw_limits_free(c->limits);
	gw_key_cache_free(c->keys);
	for (size_t i = 0; i < c->n_models; i++)
		json_decref(c->models[i].facts);
	pthread_mutex_destroy(&c->models_mu);
	sodium_memzero(c->tokens, sizeof c->tokens);
	free(c);
}

static int init(void **out, struct metrics *m)
{
	struct gw_ctx *c = calloc(1, sizeof *c);
	if (!c)
		return ERR_NOMEM;
	c->set = gw_settings;
	pthread_mutex_init(&c->models_mu, NULL);
	int rc = 0;
	const struct gw_settings *s = &c->set;
	bool tls = strncmp(s->session_url, "https://", 8) == 0;
	if (!tls && strncmp(s->session_url, "http://", 7) != 0)
		rc = bad_config("session.url", "must start with https:// (or http:// for development)");
	else if (tls && (!s->session_ca || !s->session_cert || !s->session_key))
		rc = bad_config(!s->session_ca ? "session.ca" : !s->session_cert ? "session.cert" : "session.key",
				"the gateway talks to the session service over mutual TLS: set session.ca, "
				"session.cert and session.key (a certificate with role gateway)");
	else if (!s->admin_cert && !s->admin_tokens_file)
		LOG_WARN("gateway.no_admin", LOG_S("detail", "admin.cert is false and admin.tokens_file is "
							     "unset: the admin API refuses everyone"));
	if (rc == 0 && !tls)
		LOG_WARN("gateway.plaintext_upstream",
			 LOG_S("warning", "talking to the session service without TLS: development only"));
	if (rc == 0)
		rc = parse_origins(c, s->cors_origins);
	if (rc == 0 && s->admin_tokens_file)
		rc = gw_tokens_load(c, s->admin_tokens_file);
	c->m_auth_fail = metrics_counter(m, "mimir_gateway_auth_failures_total",
					 "Requests refused for a missing or bad credential, by API and reason",
					 (const char *const[]){"api", "reason", NULL});
	c->m_limited = metrics_counter(m, "mimir_gateway_rate_limited_total",
				       "Requests refused by a rate limit, by credential kind",
				       (const char *const[]){"scope", NULL});
	c->m_upstream = metrics_counter(m, "mimir_gateway_upstream_requests_total",
					"Requests to the session service, by outcome",
					(const char *const[]){"outcome", NULL});
	c->m_upstream_fault = metrics_counter(m, "mimir_gateway_upstream_faults_total",
					      "Answers of the session service the gateway could not use",
					      (const char *const[]){"kind", NULL});
	c->m_preflight = metrics_counter(m, "mimir_gateway_cors_preflights_total",
					 "CORS preflight requests, by outcome",
					 (const char *const[]){"outcome", NULL});
	struct metric *cache = metrics_counter(m, "mimir_gateway_key_cache_total",
					       "API key verifications answered from the cache (hit) or "
					       "by the session service (miss)",
					       (const char *const[]){"result", NULL});
	c->m_cache_hit = metric_series(cache, METRIC_LABELS("hit"));
	c->m_cache_miss = metric_series(cache, METRIC_LABELS("miss"));
	if (rc == 0)
		rc = gw_limits_new(&c->limits, (size_t)s->limit_buckets);
	if (rc == 0)
		rc = gw_key_cache_new(&c->keys);
	if (rc == 0)
		rc = gw_upstream_new(&c->up, s, c->m_upstream);
	/* The parties trust the gateway's own certificate: by default the one it shows
	 * the session service. */
	c->set.parties_ca = s->parties_ca ? s->parties_ca : s->session_ca;
	c->set.parties_cert = s->parties_cert ? s->parties_cert : s->session_cert;
	c->set.parties_key = s->parties_key ? s->parties_key : s->session_key;
	if (rc == 0 && (!c->set.parties_ca || !c->set.parties_cert || !c->set.parties_key))
		LOG_WARN("gateway.no_party_tls",
			 LOG_S("detail", "parties.ca, parties.cert and parties.key (or session.*) are unset: "
					 "generations cannot reach the parties, whose API is mutual TLS only"));
	struct metric *gens = metrics_counter(m, "mimir_gateway_generations_total",
					      "Generations relayed, by how they ended",
					      (const char *const[]){"outcome", NULL});
	c->rm = (struct gw_relay_metrics){
		.outcomes = gens,
		.running = metric_series(metrics_gauge(m, "mimir_gateway_generations_running",
						       "Generations being relayed now", NULL),
					 NULL),
		.tokens = metric_series(metrics_counter(m, "mimir_gateway_tokens_total",
							"Token events relayed to clients", NULL),
					NULL),
		.resumes = metric_series(metrics_counter(m, "mimir_gateway_stream_resumes_total",
							 "Clients reattached to a generation with Last-Event-ID",
							 NULL),
					 NULL),
		.abandoned = metric_series(metrics_counter(m, "mimir_gateway_generations_abandoned_total",
							   "Generations cancelled at the parties because no "
							   "client was attached for stream.abandon_ms",
							   NULL),
					   NULL),
	};
	if (rc == 0)
		rc = gw_relay_new(&c->relay, &c->set, &c->rm);
	if (rc == 0)
		rc = gw_oai_init(c);
	if (rc != 0) {
		fini(c);
		return rc;
	}
	LOG_INFO("gateway.ready_to_serve", LOG_S("session", s->session_url),
		 LOG_B("admin_cert", s->admin_cert), LOG_I("admin_tokens", (long long)c->n_tokens),
		 LOG_I("cors_origins", c->any_origin ? -1 : (long long)c->n_origins),
		 LOG_D("key_rate", s->key_rate), LOG_I("key_cache_ms", s->key_cache_ms));
	*out = c;
	return 0;
}

static bool ready(void *ctx, char *why, size_t cap)
{
	return gw_upstream_ready(((struct gw_ctx *)ctx)->up, why, cap);
}

static const struct svc_def def = {
	.name = "gateway",
	.summary = "The public edge of Mimir: the admin API forwarded to the session service, "
		   "the client API with generations relayed to the parties, rate limits and CORS.",
	.default_port = 8443,
	.routes = gw_routes,
	.config_spec = config_spec,
	.init = init,
	.fini = fini,
	.ready = ready,
	/* The public edge: clients and browsers hold API keys, not certificates of the
	 * deployment's CA. Every route of the table is public at the TLS layer and
	 * authenticates in its handler (API key, admin token or admin certificate); the
	 * platform's /healthz, /readyz and /metrics still need a certificate. */
	.tls_client_cert_optional = true,
};

int main(int argc, char **argv)
{
	return svc_main(argc, argv, &def);
}
