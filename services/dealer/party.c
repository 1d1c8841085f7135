/* mimir-dealer party endpoints: a party's seed (once), its payloads (only its own
 * index: the TLS certificate must be the one registered for that index), and its
 * report of an abort (sacrifice failures are counted here: the check itself runs among
 * the parties, where the dealer cannot see it). */
#include <errno.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <sodium.h>

#include "dealer.h"
#include "err/err.h"
#include "log/log.h"
#include "metrics/metrics.h"

/* The session of the path, for `party` as the peer's certificate: a reference, or NULL
 * after the refusal (404 no session, 400 no such index, 403 not this party's
 * certificate, 409 a failed session when refuse_failed). */
static struct dsession *party_session(struct dealer_ctx *c, struct http_req *r, unsigned party,
				      bool refuse_failed, int *rc)
{
	const char *id = http_req_param(r, "id");
	const struct ident *peer = http_req_peer(r);
	char detail[DEALER_REASON_MAX + 80];
	struct dsession *s = NULL;
	pthread_mutex_lock(&c->mu);
	if (dealer_id_ok(id))
		s = dealer_session_get_locked(c, id);
	if (!s) {
		pthread_mutex_unlock(&c->mu);
		*rc = dealer_refuse(c, r, ERR_NOT_FOUND, 404, "no such session", "id");
		return NULL;
	}
	log_ctx_set(http_req_id(r), s->id);
	int code = 0;
	unsigned status = 0;
	const char *field = NULL;
	if (party >= s->n) {
		code = ERR_RANGE, status = 400, field = "party";
		snprintf(detail, sizeof detail, "party: the session has parties 0 to %u", s->n - 1);
	} else if (!peer || sodium_memcmp(peer->fingerprint, s->fp[party], 32) != 0) {
		code = ERR_FORBIDDEN, status = 403, field = "party";
		snprintf(detail, sizeof detail,
			 "this certificate is not the one registered for party %u of this session", party);
	} else if (refuse_failed && s->failed[0]) {
		code = ERR_CONFLICT, status = 409;
		snprintf(detail, sizeof detail, "the session failed (%s): delete it and start a new one", s->failed);
	}
	if (code) {
		dealer_session_put_locked(c, s);
		pthread_mutex_unlock(&c->mu);
		*rc = dealer_refuse(c, r, code, status, detail, field);
		return NULL;
	}
	s->used_ms = dealer_now_ms();
	pthread_mutex_unlock(&c->mu);
	return s;
}

static void session_put(struct dealer_ctx *c, struct dsession *s)
{
	pthread_mutex_lock(&c->mu);
	dealer_session_put_locked(c, s);
	pthread_mutex_unlock(&c->mu);
}

/* GET /v1/sessions/{id}/seed?party=i */
int dealer_seed(struct http_req *r, void *ctx)
{
	struct dealer_ctx *c = ctx;
	const char *q = http_req_query(r, "party");
	char *end = NULL;
	errno = 0;
	unsigned long party = q && *q >= '0' && *q <= '9' ? strtoul(q, &end, 10) : ULONG_MAX;
	if (!q || errno || !end || *end || party >= MPC_MAX_PARTIES)
		return dealer_refuse(c, r, ERR_INVALID, 400,
				     "party: the query parameter ?party=<index> (a whole number) is required", "party");
	int rc = 0;
	struct dsession *s = party_session(c, r, (unsigned)party, true, &rc);
	if (!s)
		return rc;
	pthread_mutex_lock(&c->mu);
	bool again = s->seed_sent[party];
	s->seed_sent[party] = true;
	pthread_mutex_unlock(&c->mu);
	if (again) {
		session_put(c, s);
		return dealer_refuse(c, r, ERR_CONFLICT, 409,
				     "this party's seed was delivered already: a seed is handed out once per session",
				     "party");
	}
	uint8_t seed[MPC_SEED_BYTES];
	rc = mpc_dealer_party_seed(s->d, (unsigned)party, seed);
	session_put(c, s);
	if (rc != 0) {
		sodium_memzero(seed, sizeof seed);
		return http_reply_problem(r, ERR_INTERNAL, "the session's dealer has no seed for this party", NULL);
	}
	metric_inc(c->m_seeds);
	const struct ident *peer = http_req_peer(r);
	LOG_INFO("dealer.seed_delivered", LOG_I("party", party), LOG_S("cn", peer->cn));
	http_reply_header(r, "Cache-Control", "no-store");
	rc = http_reply_secret(r, 200, "application/octet-stream", seed, sizeof seed);
	sodium_memzero(seed, sizeof seed);
	return rc;
}

/* POST /v1/sessions/{id}/prep {party, kind, param, n, batch, rows, cols} */
int dealer_prep(struct http_req *r, void *ctx)
{
	struct dealer_ctx *c = ctx;
	uint64_t party = 0, kind = 0, param = 0, n = 0, batch = 0, rows = 0, cols = 0;
	const struct jspec_field spec[] = {
		JSPEC_U64("party", true, 0, MPC_MAX_PARTIES - 1, &party),
		JSPEC_U64("kind", true, 1, 65535, &kind),
		JSPEC_U64("param", false, 0, UINT32_MAX, &param),
		JSPEC_U64("n", true, 1, UINT32_MAX, &n),
		JSPEC_U64("batch", true, 0, 0, &batch), /* any (jspec caps at INT64_MAX) */
		JSPEC_U64("rows", false, 0, UINT32_MAX, &rows),
		JSPEC_U64("cols", false, 0, UINT32_MAX, &cols),
		JSPEC_END_F,
	};
	json_t *doc;
	int rc = http_req_json(r, spec, 0, &doc);
	if (rc != 0) {
		metric_inc(metric_series(c->m_refused, METRIC_LABELS(err_slug(rc))));
		return rc;
	}
	json_decref(doc);
	struct mpc_prep_req req = {.kind = (uint16_t)kind, .param = (uint32_t)param, .n = (uint32_t)n,
				   .batch = batch, .rows = (uint32_t)rows, .cols = (uint32_t)cols};
	struct dsession *s = party_session(c, r, (unsigned)party, true, &rc);
	if (!s)
		return rc;
	if (!mpc_prep_needs_payload((unsigned)party, &req)) {
		session_put(c, s);
		char detail[160];
		snprintf(detail, sizeof detail,
			 "party: party %u expands this request from its seed alone: the dealer has no payload for it",
			 (unsigned)party);
		return dealer_refuse(c, r, ERR_INVALID, 400, detail, "party");
	}
	uint8_t *payload = NULL;
	size_t len = 0;
	unsigned status = 0;
	char detail[512];
	rc = dealer_fetch(c, s, (unsigned)party, &req, &payload, &len, &status, detail, sizeof detail);
	session_put(c, s);
	if (rc != 0)
		return dealer_refuse(c, r, rc, status, detail, NULL);
	rc = http_reply_secret(r, 200, "application/octet-stream", payload, len);
	sodium_memzero(payload, len);
	free(payload);
	return rc;
}

/* The engine's names of its checks (mpc_failed_check); anything else is "other", so
 * a party cannot mint metric series. */
static const char *const checks[] = {"mac-check",     "commitment",       "broadcast-consistency",
				     "triple-sacrifice", "transport",     "preprocessing",
				     "joint-randomness", "memory",        NULL};

/* POST /v1/sessions/{id}/report {party, check}: the party's engine aborted. */
int dealer_report(struct http_req *r, void *ctx)
{
	struct dealer_ctx *c = ctx;
	uint64_t party = 0;
	const char *check = NULL;
	const struct jspec_field spec[] = {
		JSPEC_U64("party", true, 0, MPC_MAX_PARTIES - 1, &party),
		JSPEC_STR("check", true, 1, 64, &check),
		JSPEC_END_F,
	};
	json_t *doc;
	int rc = http_req_json(r, spec, 0, &doc);
	if (rc != 0) {
		metric_inc(metric_series(c->m_refused, METRIC_LABELS(err_slug(rc))));
		return rc;
	}
	const char *label = "other";
	for (size_t i = 0; checks[i]; i++)
		if (strcmp(check, checks[i]) == 0)
			label = checks[i];
	json_decref(doc);
	struct dsession *s = party_session(c, r, (unsigned)party, false, &rc);
	if (!s)
		return rc;
	metric_inc(metric_series(c->m_aborts, METRIC_LABELS(label)));
	pthread_mutex_lock(&c->mu);
	/* Every party sees a failed sacrifice (the check is opened to all): one event. */
	if (strcmp(label, "triple-sacrifice") == 0 && !s->sacrifice_failed) {
		s->sacrifice_failed = true;
		metric_inc(c->m_sacrifice);
	}
	bool first = !s->failed[0];
	if (first)
		snprintf(s->failed, sizeof s->failed, "party %u reported an abort (%s)", (unsigned)party, label);
	for (size_t i = 0; i < s->npools; i++)
		dealer_pool_clear_locked(c, &s->pools[i]);
	json_t *body = json_pack("{s:s, s:s}", "id", s->id, "failed", s->failed);
	dealer_session_put_locked(c, s);
	pthread_mutex_unlock(&c->mu);
	LOG_WARN("dealer.party_abort", LOG_I("party", party), LOG_S("check", label), LOG_B("first", first),
		 LOG_S("detail", "the session serves no more payloads; pools wiped"));
	return http_reply_json(r, 200, body);
}
