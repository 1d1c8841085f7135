/* mimir-gateway upstream: the session service behind the gateway, over mutual TLS
 * with the gateway's own certificate, refusing any server that does not carry the
 * session role (and, when configured, the pinned certificate). An httpc is not shared
 * between threads, so the worker threads borrow clients from a small pool; each keeps
 * its connection open, so a request to the session service costs no handshake in the
 * steady state. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include <sodium.h>

#include "err/err.h"
#include "gateway.h"
#include "log/log.h"
#include "metrics/metrics.h"

#define POOL_MAX 256

struct gw_upstream {
	struct httpc_opts o;
	uint8_t pin[32];
	pthread_mutex_t mu;
	struct httpc *idle[POOL_MAX];
	size_t n_idle, keep;
	/* Readiness: its own client and a one-second memory. */
	pthread_mutex_t ready_mu;
	struct httpc *probe;
	int64_t ready_ms;
	bool ready_ok;
	char ready_why[600];
	char url[256];
	struct metric *outcomes;
};

int64_t gw_now_ms(void)
{
	struct timespec ts;
	clock_gettime(CLOCK_REALTIME, &ts);
	return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

int gw_upstream_new(struct gw_upstream **out, const struct gw_settings *s, struct metric *outcomes)
{
	struct gw_upstream *u = calloc(1, sizeof *u);
	if (!u)
		return ERR_NOMEM;
	u->outcomes = outcomes;
	snprintf(u->url, sizeof u->url, "%s", s->session_url);
	u->o = (struct httpc_opts){
		.base_url = u->url,
		.ca_file = s->session_ca,
		.cert_file = s->session_cert,
		.key_file = s->session_key,
		.expect_role = IDENT_ROLE_SESSION,
		.connect_timeout_ms = s->session_connect_timeout_ms,
		.timeout_ms = s->session_timeout_ms,
		.retries = (unsigned)s->session_retries,
		.backoff_ms = 50,
		.max_response = 4u << 20,
	};
	if (s->session_pin) {
		size_t bin = 0;
		if (strlen(s->session_pin) != 64 ||
		    sodium_hex2bin(u->pin, sizeof u->pin, s->session_pin, 64, NULL, &bin, NULL) != 0 ||
		    bin != sizeof u->pin) {
			LOG_ERROR("gateway.bad_config", LOG_S("key", "session.pin"),
				  LOG_S("detail", "must be 64 hex digits, the SHA-256 of the session "
						  "service's certificate"));
			free(u);
			return ERR_CONFIG;
		}
		u->o.expect_fingerprint = u->pin;
	}
	u->keep = s->session_pool > POOL_MAX ? POOL_MAX : (size_t)s->session_pool;
	pthread_mutex_init(&u->mu, NULL);
	pthread_mutex_init(&u->ready_mu, NULL);
	struct httpc_opts po = u->o;
	po.retries = 0;
	po.timeout_ms = 2000;
	int rc = httpc_new(&u->probe, &po);
	if (rc != 0) {
		gw_upstream_free(u);
		return rc;
	}
	*out = u;
	return 0;
}

void gw_upstream_free(struct gw_upstream *u)
{
	if (!u)
		return;
	for (size_t i = 0; i < u->n_idle; i++)
		httpc_free(u->idle[i]);
	httpc_free(u->probe);
	pthread_mutex_destroy(&u->mu);
	pthread_mutex_destroy(&u->ready_mu);
	sodium_memzero(u->pin, sizeof u->pin);
	free(u);
}

static struct httpc *borrow(struct gw_upstream *u)
{
	struct httpc *c = NULL;
	pthread_mutex_lock(&u->mu);
	if (u->n_idle)
		c = u->idle[--u->n_idle];
	pthread_mutex_unlock(&u->mu);
	if (!c && httpc_new(&c, &u->o) != 0)
		c = NULL;
	return c;
}

static void give_back(struct gw_upstream *u, struct httpc *c, bool healthy)
{
	pthread_mutex_lock(&u->mu);
	if (healthy && u->n_idle < u->keep) {
		u->idle[u->n_idle++] = c;
		c = NULL;
	}
	pthread_mutex_unlock(&u->mu);
	httpc_free(c); /* a client that failed may hold a dead connection: start afresh */
}

int gw_upstream_call(struct gw_upstream *u, struct http_req *r, const char *method,
		     const char *path, const char *actor, const void *body, size_t len,
		     struct httpc_resp *resp)
{
	/* httpc sends body from the caller's buffer and keeps no copy, so a caller with a
	 * secret in it (an API key) wipes that one buffer. */
	char rid[96], who[GW_ACTOR_MAX + 32];
	const char *hdrs[3] = {NULL};
	size_t n = 0;
	snprintf(rid, sizeof rid, "X-Request-Id: %s", http_req_id(r));
	hdrs[n++] = rid;
	if (actor) {
		snprintf(who, sizeof who, "X-Mimir-Actor: %s", actor);
		hdrs[n++] = who;
	}
	memset(resp, 0, sizeof *resp);
	struct httpc *c = borrow(u);
	if (!c) {
		snprintf(resp->error, sizeof resp->error, "out of memory for a client");
		return ERR_NOMEM;
	}
	int rc = httpc_request(c, method, path, hdrs, body ? "application/json" : NULL, body, len, resp);
	give_back(u, c, rc == 0);
	const char *outcome = rc == ERR_TIMEOUT ? "timeout"
			      : rc == ERR_TLS   ? "tls"
			      : rc != 0		? "unreachable"
			      : resp->status < 300 ? "2xx"
			      : resp->status < 500 ? "4xx"
						   : "5xx";
	metric_inc(metric_series(u->outcomes, METRIC_LABELS(outcome)));
	return rc;
}

bool gw_upstream_ready(struct gw_upstream *u, char *why, size_t cap)
{
	int64_t now = gw_now_ms();
	pthread_mutex_lock(&u->ready_mu);
	if (now - u->ready_ms >= 1000 || now < u->ready_ms) {
		struct httpc_resp resp;
		int rc = httpc_request(u->probe, "GET", "/healthz", NULL, NULL, NULL, 0, &resp);
		u->ready_ok = rc == 0 && resp.status == 200;
		if (rc != 0)
			snprintf(u->ready_why, sizeof u->ready_why,
				 "the session service at %.200s is unreachable: %.255s", u->url, resp.error);
		else if (resp.status != 200)
			snprintf(u->ready_why, sizeof u->ready_why,
				 "the session service at %.200s answered /healthz with %ld", u->url, resp.status);
		httpc_resp_free(&resp);
		u->ready_ms = now;
	}
	bool ok = u->ready_ok;
	if (!ok)
		snprintf(why, cap, "%s", u->ready_why);
	pthread_mutex_unlock(&u->ready_mu);
	return ok;
}
