/* mimir-session: configuration, route table and lifecycle (open the registry, sweep
 * expired sessions, answer readiness with a real write); handlers live beside it. */
#include <signal.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include <sodium.h>

#include "err/err.h"
#include "log/log.h"
#include "metrics/metrics.h"
#include "session.h"
#include "svc/svc.h"

struct session_settings session_settings = {
	.db_path = "mimir-session.db",
	.db_connections = 4,
	.db_busy_timeout_ms = 2000,
	.db_busy_retries = 5,
	.secret_file = "mimir-session.secret",
	.secret_create = true,
	.session_default_ttl_s = 86400,
	.session_max_ttl_s = 30 * 86400,
	.session_fixed_point_bits = 16,
	.sweep_interval_s = 30,
	.key_default_ttl_s = 0,
	.key_max_ttl_s = REG_TTL_MAX_S,
	.dealer_timeout_ms = 5000,
	.parties_provision = true,
	.parties_timeout_ms = 5000,
	.parties_init_timeout_ms = 120000,
};

static const struct jspec_field config_spec[] = {
	JSPEC_STR("db.path", false, 1, 4096, &session_settings.db_path),
	JSPEC_I64("db.connections", false, 1, 64, &session_settings.db_connections),
	JSPEC_I64("db.busy_timeout_ms", false, 1, 60000, &session_settings.db_busy_timeout_ms),
	JSPEC_I64("db.busy_retries", false, 1, 50, &session_settings.db_busy_retries),
	JSPEC_STR("keys.secret_file", false, 1, 4096, &session_settings.secret_file),
	JSPEC_BOOLEAN("keys.create_secret", false, &session_settings.secret_create),
	JSPEC_I64("keys.default_ttl_s", false, 0, REG_TTL_MAX_S, &session_settings.key_default_ttl_s),
	JSPEC_I64("keys.max_ttl_s", false, 1, REG_TTL_MAX_S, &session_settings.key_max_ttl_s),
	JSPEC_I64("sessions.default_ttl_s", false, 1, REG_TTL_MAX_S, &session_settings.session_default_ttl_s),
	JSPEC_I64("sessions.max_ttl_s", false, 1, REG_TTL_MAX_S, &session_settings.session_max_ttl_s),
	JSPEC_I64("sessions.fixed_point_bits", false, 8, 32, &session_settings.session_fixed_point_bits),
	JSPEC_I64("sessions.sweep_interval_s", false, 0, 86400, &session_settings.sweep_interval_s),
	JSPEC_STR("dealer.url", false, 1, 1024, &session_settings.dealer_url),
	JSPEC_STR("dealer.ca", false, 1, 4096, &session_settings.dealer_ca),
	JSPEC_STR("dealer.cert", false, 1, 4096, &session_settings.dealer_cert),
	JSPEC_STR("dealer.key", false, 1, 4096, &session_settings.dealer_key),
	JSPEC_STR("dealer.pin", false, 64, 64, &session_settings.dealer_pin),
	JSPEC_I64("dealer.timeout_ms", false, 100, 600000, &session_settings.dealer_timeout_ms),
	JSPEC_BOOLEAN("parties.provision", false, &session_settings.parties_provision),
	JSPEC_STR("parties.ca", false, 1, 4096, &session_settings.parties_ca),
	JSPEC_STR("parties.cert", false, 1, 4096, &session_settings.parties_cert),
	JSPEC_STR("parties.key", false, 1, 4096, &session_settings.parties_key),
	JSPEC_STR("parties.dealer_url", false, 9, 255, &session_settings.parties_dealer_url),
	JSPEC_I64("parties.timeout_ms", false, 100, 600000, &session_settings.parties_timeout_ms),
	JSPEC_I64("parties.init_timeout_ms", false, 1000, 86400000,
		  &session_settings.parties_init_timeout_ms),
	JSPEC_END_F,
};

#define ID "/{id}"
static const struct http_route routes[] = {
	{"POST", "/v1/models", session_model_create, SESSION_ADMIN, 64 * 1024, 0},
	{"GET", "/v1/models", session_model_list, SESSION_ADMIN, 0, 0},
	{"GET", "/v1/models" ID, session_model_get, SESSION_READERS, 0, 0},
	{"DELETE", "/v1/models" ID, session_model_delete, SESSION_ADMIN, 0, 0},
	{"POST", "/v1/parties", session_party_create, SESSION_ADMIN, 16 * 1024, 0},
	{"GET", "/v1/parties", session_party_list, SESSION_ADMIN, 0, 0},
	{"GET", "/v1/parties" ID, session_party_get, SESSION_ADMIN, 0, 0},
	{"PATCH", "/v1/parties" ID, session_party_update, SESSION_ADMIN, 16 * 1024, 0},
	{"POST", "/v1/sessions", session_session_create, SESSION_ADMIN, 16 * 1024, 0},
	{"GET", "/v1/sessions", session_session_list, SESSION_ADMIN | HTTP_ROLE(IDENT_ROLE_DEALER), 0, 0},
	{"GET", "/v1/sessions" ID, session_session_get, SESSION_READERS, 0, 0},
	{"POST", "/v1/sessions" ID "/transition", session_session_transition, SESSION_ADMIN, 4096, 0},
	{"POST", "/v1/sessions" ID "/close", session_session_close, SESSION_ADMIN, 4096, 0},
	{"POST", "/v1/sessions" ID "/init", session_session_init, SESSION_PARTY, 4096, 0},
	{"POST", "/v1/keys", session_key_create, SESSION_ADMIN, 4096, 0},
	{"GET", "/v1/keys", session_key_list, SESSION_ADMIN, 0, 0},
	{"POST", "/v1/keys/verify", session_key_verify, SESSION_ADMIN, 4096, 0},
	{"GET", "/v1/keys" ID, session_key_get, SESSION_ADMIN, 0, 0},
	{"POST", "/v1/keys" ID "/revoke", session_key_revoke, SESSION_ADMIN, 0, 0},
	{"GET", "/v1/audit", session_audit_list, SESSION_ADMIN, 0, 0},
	{"GET", "/v1/audit/head", session_audit_head, SESSION_ADMIN, 0, 0},
	{"GET", "/v1/audit/verify", session_audit_verify, SESSION_ADMIN, 0, 0},
	{NULL, NULL, NULL, 0, 0, 0},
};

static double stat_of(void *arg, size_t off)
{
	struct reg_stats st;
	reg_stats(((struct session_ctx *)arg)->reg, &st);
	uint64_t v;
	memcpy(&v, (const char *)&st + off, sizeof v);
	return (double)v;
}
static double stat_commits(void *a) { return stat_of(a, offsetof(struct reg_stats, commits)); }
static double stat_failures(void *a) { return stat_of(a, offsetof(struct reg_stats, failures)); }
static double stat_retries(void *a) { return stat_of(a, offsetof(struct reg_stats, busy_retries)); }
static double stat_giveups(void *a) { return stat_of(a, offsetof(struct reg_stats, busy_giveups)); }

static void refresh_gauges(struct session_ctx *c)
{
	uint64_t counts[REG_STATE_COUNT];
	if (reg_session_counts(c->reg, counts) == 0)
		for (int s = 0; s < REG_STATE_COUNT; s++)
			metric_set(metric_series(c->m_sessions, METRIC_LABELS(reg_state_name((enum reg_state)s))),
				   (double)counts[s]);
	struct reg_audit_head h;
	if (reg_audit_head(c->reg, &h) == 0)
		metric_set(c->m_audit_head, (double)h.seq);
}

/* Every GAUGE_PERIOD_S the sweeper refreshes the gauges; every sweep_interval_s it
 * also closes the sessions past their expiry. */
#define GAUGE_PERIOD_S 5

static void *sweeper(void *arg)
{
	struct session_ctx *c = arg;
	const struct reg_actor system = {.actor = "system:session", .request_id = ""};
	int64_t next_sweep = 0;
	log_ctx_set("sweeper", NULL);
	pthread_mutex_lock(&c->stop_mu);
	while (!c->stop) {
		pthread_mutex_unlock(&c->stop_mu);
		int64_t now = session_now_ms();
		if (c->set.sweep_interval_s > 0 && now >= next_sweep && !reg_read_only(c->reg)) {
			size_t n = 0;
			if (reg_session_expire(c->reg, &system, &n) != 0)
				LOG_WARN("session.sweep_failed", LOG_S("detail", reg_last_error()->detail));
			else if (n)
				LOG_INFO("session.expired", LOG_I("sessions", (long long)n));
			next_sweep = now + c->set.sweep_interval_s * 1000;
		}
		refresh_gauges(c);
		int64_t period = GAUGE_PERIOD_S;
		if (c->set.sweep_interval_s > 0 && c->set.sweep_interval_s < period)
			period = c->set.sweep_interval_s;
		struct timespec until;
		clock_gettime(CLOCK_REALTIME, &until);
		until.tv_sec += period;
		pthread_mutex_lock(&c->stop_mu);
		while (!c->stop && pthread_cond_timedwait(&c->stop_cv, &c->stop_mu, &until) == 0)
			;
	}
	pthread_mutex_unlock(&c->stop_mu);
	return NULL;
}

static void fini(void *ctx)
{
	struct session_ctx *c = ctx;
	if (!c)
		return;
	session_prov_stop(c->prov);
	c->prov = NULL;
	if (c->sweeper_running) {
		pthread_mutex_lock(&c->stop_mu);
		c->stop = true;
		pthread_cond_signal(&c->stop_cv);
		pthread_mutex_unlock(&c->stop_mu);
		pthread_join(c->sweeper, NULL);
	}
	reg_close(c->reg);
	pthread_mutex_destroy(&c->ready_mu);
	pthread_mutex_destroy(&c->stop_mu);
	pthread_cond_destroy(&c->stop_cv);
	free(c);
}

static int init(void **out, struct metrics *m)
{
	/* A file size limit must fail a write (EFBIG, a clear error), not kill us. */
	signal(SIGXFSZ, SIG_IGN);
	struct session_ctx *c = calloc(1, sizeof *c);
	if (!c)
		return ERR_NOMEM;
	c->set = session_settings;
	if (c->set.session_default_ttl_s > c->set.session_max_ttl_s ||
	    c->set.key_default_ttl_s > c->set.key_max_ttl_s) {
		LOG_ERROR("session.bad_config",
			  LOG_S("detail", c->set.session_default_ttl_s > c->set.session_max_ttl_s
						  ? "sessions.default_ttl_s is larger than sessions.max_ttl_s"
						  : "keys.default_ttl_s is larger than keys.max_ttl_s"));
		free(c);
		return ERR_CONFIG;
	}
	pthread_mutex_init(&c->ready_mu, NULL);
	pthread_mutex_init(&c->stop_mu, NULL);
	pthread_cond_init(&c->stop_cv, NULL);
	uint8_t secret[REG_SECRET_LEN];
	int rc = reg_secret_load(c->set.secret_file, c->set.secret_create, secret);
	if (rc == 0) {
		struct reg_opts o = {
			.path = c->set.db_path,
			.secret = secret,
			.connections = (unsigned)c->set.db_connections,
			.busy_timeout_ms = (unsigned)c->set.db_busy_timeout_ms,
			.busy_retries = (unsigned)c->set.db_busy_retries,
		};
		rc = reg_open(&c->reg, &o);
	}
	sodium_memzero(secret, sizeof secret);
	if (rc != 0) {
		const struct reg_error *e = reg_last_error();
		LOG_ERROR("session.open_failed", LOG_S("error", err_slug(rc)), LOG_S("field", e->field),
			  LOG_S("detail", e->detail));
		fini(c);
		return rc;
	}
	metrics_counter_fn(m, "mimir_registry_commits_total", "Registry write transactions committed",
			   stat_commits, c);
	metrics_counter_fn(m, "mimir_registry_tx_failures_total",
			   "Registry transactions that failed on the server side (I/O, busy, full, read-only)",
			   stat_failures, c);
	metrics_counter_fn(m, "mimir_registry_busy_retries_total",
			   "Registry transactions run again after SQLITE_BUSY", stat_retries, c);
	metrics_counter_fn(m, "mimir_registry_busy_giveups_total",
			   "Registry transactions still busy after every retry", stat_giveups, c);
	c->m_sessions = metrics_gauge(m, "mimir_session_sessions", "Sessions by state",
				      (const char *const[]){"state", NULL});
	c->m_audit_head = metric_series(metrics_gauge(m, "mimir_session_audit_head_seq",
						      "Sequence number of the audit chain head", NULL),
					NULL);
	c->m_verify = metrics_counter(m, "mimir_session_key_verifications_total",
				      "API key verifications by verdict",
				      (const char *const[]){"verdict", NULL});
	refresh_gauges(c);
	if ((rc = session_prov_start(c, m, &c->prov)) != 0) {
		fini(c);
		return rc;
	}
	if (pthread_create(&c->sweeper, NULL, sweeper, c) != 0) {
		LOG_ERROR("session.sweeper_failed");
		fini(c);
		return ERR_NOMEM;
	}
	c->sweeper_running = true;
	*out = c;
	return 0;
}

static bool ready(void *ctx, char *why, size_t cap)
{
	struct session_ctx *c = ctx;
	int64_t now = session_now_ms();
	pthread_mutex_lock(&c->ready_mu);
	if (now - c->ready_checked_ms >= 1000 || now < c->ready_checked_ms) {
		int rc = reg_probe(c->reg);
		c->ready_ok = rc == 0;
		/* The registry's detail already says what and why ("... read-only ..."). */
		snprintf(c->ready_why, sizeof c->ready_why, "%s", rc ? reg_last_error()->detail : "");
		c->ready_checked_ms = now;
	}
	bool ok = c->ready_ok;
	if (!ok)
		snprintf(why, cap, "%s", c->ready_why);
	pthread_mutex_unlock(&c->ready_mu);
	return ok;
}

static const struct svc_def def = {
	.name = "session",
	.summary = "The Mimir session registry: models, parties, sessions, API keys and the audit log.",
	.default_port = 8442,
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
