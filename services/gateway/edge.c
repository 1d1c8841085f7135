/* mimir-gateway edge helpers: what the client sees when the session service cannot
 * answer (503 unreachable, 504 too slow, 502 refused or nonsensical: each a
 * problem+json that says which), and the relay of its answers, which passes JSON and
 * problem+json through unchanged but never lets the session service's refusal of the
 * gateway itself look like a refusal of the caller. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "err/err.h"
#include "gateway.h"
#include "log/log.h"
#include "metrics/metrics.h"

bool gw_id_ok(const char *s, const char *prefix)
{
	size_t pl = strlen(prefix);
	if (!s || strlen(s) != pl + 16 || strncmp(s, prefix, pl) != 0)
		return false;
	for (size_t i = pl; i < pl + 16; i++)
		if (!((s[i] >= '0' && s[i] <= '9') || (s[i] >= 'a' && s[i] <= 'f')))
			return false;
	return true;
}

static void count(struct gw_ctx *c, const char *kind)
{
	metric_inc(metric_series(c->m_upstream_fault, METRIC_LABELS(kind)));
}

int gw_upstream_fail(struct http_req *r, struct gw_ctx *c, int rc, const struct httpc_resp *resp)
{
	char detail[400];
	if (rc == 0) {
		count(c, "bad_answer");
		snprintf(detail, sizeof detail,
			 "the session service gave an answer the gateway cannot use (status %ld)",
			 resp->status);
		http_reply_problem(r, ERR_UPSTREAM, detail, NULL);
		return ERR_UPSTREAM;
	}
	if (rc == ERR_TIMEOUT) {
		snprintf(detail, sizeof detail, "the session service did not answer within %lld ms",
			 (long long)c->set.session_timeout_ms);
		http_reply_problem(r, ERR_TIMEOUT, detail, NULL);
		return ERR_TIMEOUT;
	}
	if (rc == ERR_TLS) {
		snprintf(detail, sizeof detail,
			 "the TLS link to the session service failed (a certificate was refused): %s",
			 resp->error);
		http_reply_problem(r, ERR_UPSTREAM, detail, NULL);
		return ERR_UPSTREAM;
	}
	LOG_WARN("gateway.upstream_unreachable", LOG_S("url", c->set.session_url),
		 LOG_S("error", resp->error), LOG_S("hint", "is mimir-session running and is session.url right?"));
	snprintf(detail, sizeof detail, "the session service is unreachable (%s); try again shortly",
		 resp->error);
	http_reply_header(r, "Retry-After", "1");
	http_reply_problem(r, ERR_UNAVAILABLE, detail, NULL);
	return ERR_UNAVAILABLE;
}

static bool ctype_is(const char *ct, const char *want)
{
	size_t l = strlen(want);
	return strncmp(ct, want, l) == 0 && (ct[l] == '\0' || ct[l] == ';');
}

int gw_relay(struct http_req *r, struct gw_ctx *c, const struct httpc_resp *resp, bool secret)
{
	long st = resp->status;
	if (st == 204)
		return http_reply_data(r, 204, NULL, "", 0);
	bool problem = ctype_is(resp->content_type, "application/problem+json");
	bool json = problem || ctype_is(resp->content_type, "application/json");
	json_t *doc = json ? json_loadb(resp->body, resp->len, JSON_REJECT_DUPLICATES, NULL) : NULL;
	bool ok = st >= 200 && st < 600 && json_is_object(doc) && (st < 400 || problem);
	json_decref(doc);
	if (!ok)
		return gw_upstream_fail(r, c, 0, resp);
	if (st == 401 || st == 403) {
		/* The session service refused the gateway, not the caller: a deployment
		 * fault (the gateway's certificate lacks the gateway role). */
		count(c, "refused");
		LOG_ERROR("gateway.upstream_refused", LOG_I("status", st),
			  LOG_S("hint", "the gateway's client certificate (session.cert) must carry "
					"the gateway role"));
		http_reply_problem(r, ERR_UPSTREAM, "the session service refused the gateway's credentials",
				   NULL);
		return ERR_UPSTREAM;
	}
	return (secret ? http_reply_secret : http_reply_data)(
		r, (unsigned)st, problem ? "application/problem+json" : "application/json", resp->body,
		resp->len);
}
