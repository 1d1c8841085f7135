/* mimir-session provisioner: carries every new session to the dealer and its parties,
 * and forgets ended ones there. A session the registry creates needs its correlated
 * randomness before its parties initialise, so the provisioner first posts every
 * CREATED session to the dealer (its id, its number of parties and each party's pinned
 * certificate, the only certificates the dealer will hand a seed to); once the dealer
 * has it, provision_parties.c opens it at every party and follows them until the
 * registry has each party's report and the session is ready (or failed). Once the
 * session is closed or failed, it is deleted at the dealer (seeds and pools wiped) and
 * at the parties (engines, weights and KV caches wiped).
 *
 * It works from the registry's state, not from the request that created the session:
 * a background thread lists the CREATED sessions every tick (and at once when a
 * handler signals a new one), so a session service restarted, or a dealer that was
 * down for a while, only delays provisioning. The dealer answers 409 for a session it
 * already has, which makes the post idempotent. A refusal that will not change (a
 * party without a pinned certificate, the dealer's 400 or 403) fails the session with
 * the reason; a dealer that cannot be reached is tried again each tick, with one
 * warning per session, until the session expires. At start-up the live sessions past
 * CREATED are taken as provisioned, and those that ended in the last CLOSE_WINDOW_MS
 * are deleted at the dealer and the parties again (a 404 there is fine), in case the
 * previous process stopped between the registry's write and the deletion. Without
 * dealer.url the provisioner does not run. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include <jansson.h>
#include <sodium.h>

#include "err/err.h"
#include "httpc/httpc.h"
#include "log/log.h"
#include "metrics/metrics.h"
#include "prov.h"

#define TICK_MS 1000
#define BUSY_TICK_MS 200 /* while a session is being opened or followed at its parties */
#define LIST_PAGE 200
#define CLOSE_WINDOW_MS (15LL * 60 * 1000)

struct session_prov {
	struct session_ctx *c;
	struct httpc *hc;
	uint8_t pin[32];
	pthread_t thread;
	bool running, stop, kick;
	pthread_mutex_t mu;
	pthread_cond_t cv;
	struct prov_known *k;
	size_t nk, capk;
	struct metric *outcomes;
	struct prov_parties *parties; /* NULL: parties.provision is off */
	/* Room for one session in detail (its parties are large), reused by every step. */
	struct reg_session *s;
	struct reg_party *sp;
};

static const struct reg_actor prov_actor = {.actor = "system:provisioner", .request_id = ""};

static struct prov_known *find(struct session_prov *p, const char *id)
{
	for (size_t i = 0; i < p->nk; i++)
		if (strcmp(p->k[i].id, id) == 0)
			return &p->k[i];
	return NULL;
}

static struct prov_known *add(struct session_prov *p, const char *id)
{
	struct prov_known *k = find(p, id);
	if (k)
		return k;
	if (p->nk == p->capk) {
		size_t cap = p->capk ? 2 * p->capk : 64;
		struct prov_known *nk = realloc(p->k, cap * sizeof *nk);
		if (!nk)
			return NULL;
		p->k = nk;
		p->capk = cap;
	}
	k = &p->k[p->nk++];
	memset(k, 0, sizeof *k);
	snprintf(k->id, sizeof k->id, "%s", id);
	return k;
}

static void drop(struct session_prov *p, struct prov_known *k)
{
	*k = p->k[--p->nk];
}

static void count(struct session_prov *p, const char *op, const char *outcome)
{
	metric_inc(metric_series(p->outcomes, METRIC_LABELS(op, outcome)));
}

int64_t prov_now_ms(void)
{
	struct timespec ts;
	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

void prov_fail_session(struct session_ctx *c, const char *id, const char *reason)
{
	struct reg_session s;
	if (reg_session_transition(c->reg, &prov_actor, id, REG_STATE_CREATED, REG_STATE_FAILED,
				   reason, &s) != 0)
		LOG_WARN("session.provision_fail_failed", LOG_S("session", id),
			 LOG_S("detail", reg_last_error()->detail));
	else
		LOG_WARN("session.provision_refused", LOG_S("session", id), LOG_S("detail", reason));
}

/* The dealer's problem detail, or the status line. */
static void problem_detail(const struct httpc_resp *r, char *buf, size_t cap)
{
	json_t *doc = r->body ? json_loadb(r->body, r->len, 0, NULL) : NULL;
	const char *d = json_string_value(json_object_get(doc, "detail"));
	if (d)
		snprintf(buf, cap, "dealer refused the session (HTTP %ld): %s", r->status, d);
	else
		snprintf(buf, cap, "dealer refused the session (HTTP %ld)", r->status);
	json_decref(doc);
}

/* Posts the CREATED session s to the dealer; k->posted once the dealer has it. A
 * refused session is failed here and forgotten by reap(). */
static void post_dealer(struct session_prov *p, struct prov_known *k, const struct reg_session *s,
			const struct reg_party *parties)
{
	json_t *body = NULL, *reply = NULL;
	struct httpc_resp r = {0};
	char reason[REG_DESC_MAX + 1];
	json_t *fps = json_array();
	body = json_pack("{s:s, s:I, s:o}", "id", s->id, "nparties", (json_int_t)s->n_parties,
			 "fingerprints", fps);
	if (!body)
		goto out;
	for (size_t i = 0; i < s->n_parties; i++) {
		if (!parties[i].has_fingerprint) {
			snprintf(reason, sizeof reason,
				 "party %s has no pinned certificate; the dealer hands a party's "
				 "seed only to a pinned certificate (set its cert_fingerprint)",
				 parties[i].identity);
			prov_fail_session(p->c, s->id, reason);
			count(p, "create", "refused");
			goto out;
		}
		char hex[65];
		sodium_bin2hex(hex, sizeof hex, parties[i].fingerprint, 32);
		json_array_append_new(fps, json_string(hex));
	}
	int rc = httpc_json(p->hc, "POST", "/v1/sessions", body, &r, &reply);
	if (rc == 0 && (r.status == 201 || r.status == 409)) {
		/* 409: the dealer has it already (we were restarted, or posted twice) */
		k->posted = true;
		count(p, "create", "ok");
		LOG_INFO("session.provisioned", LOG_S("session", s->id),
			 LOG_I("parties", (long long)s->n_parties),
			 LOG_S("dealer", r.status == 201 ? "created" : "had it"));
	} else if (rc == 0 && (r.status == 400 || r.status == 403)) {
		problem_detail(&r, reason, sizeof reason);
		prov_fail_session(p->c, s->id, reason);
		count(p, "create", "refused");
	} else {
		count(p, "create", "unavailable");
		if (!k->warned)
			LOG_WARN("session.provision_retry", LOG_S("session", s->id),
				 LOG_I("status", r.status),
				 LOG_S("detail", rc ? r.error : "dealer unavailable; trying again"));
		k->warned = true;
	}
out:
	httpc_resp_free(&r);
	json_decref(reply);
	json_decref(body);
}

/* One tick's work for one CREATED session: the dealer first, then its parties. */
static void step_one(struct session_prov *p, const struct reg_session *s0)
{
	struct prov_known *k = add(p, s0->id);
	if (!k || (k->posted && !p->parties))
		return;
	struct reg_session *s = p->s;
	struct reg_party *parties = p->sp;
	if (reg_session_get_detail(p->c->reg, s0->id, s, parties) != 0 || s->state != REG_STATE_CREATED)
		return;
	if (!k->posted)
		post_dealer(p, k, s, parties);
	if (k->posted && p->parties)
		prov_parties_step(p->parties, k, s, parties);
}

/* Deletes the session of k at the dealer; true when the dealer no longer has it. */
static bool unprovision_dealer(struct session_prov *p, struct prov_known *k)
{
	char path[96];
	snprintf(path, sizeof path, "/v1/sessions/%s", k->id);
	struct httpc_resp r = {0};
	int rc = httpc_request(p->hc, "DELETE", path, NULL, NULL, NULL, 0, &r);
	bool done = rc == 0 && (r.status == 204 || r.status == 404);
	if (done) {
		if (r.status == 204)
			LOG_INFO("session.unprovisioned", LOG_S("session", k->id));
		count(p, "delete", "ok");
	} else {
		count(p, "delete", "unavailable");
	}
	httpc_resp_free(&r);
	return done;
}

/* Forgets, at the dealer and the parties, the sessions that are no longer live. */
static void reap(struct session_prov *p)
{
	struct reg_session *s = p->s;
	struct reg_party *parties = p->sp;
	for (size_t i = 0; i < p->nk;) {
		struct prov_known *k = &p->k[i];
		int rc = k->touched ? reg_session_get_detail(p->c->reg, k->id, s, parties)
				    : reg_session_get(p->c->reg, k->id, s);
		bool gone = rc == ERR_NOT_FOUND || (rc == 0 && reg_state_terminal(s->state));
		if (!gone) {
			i++;
			continue;
		}
		if (k->posted && unprovision_dealer(p, k))
			k->posted = false;
		if (k->touched && (!p->parties ||
				   prov_parties_close(p->parties, k, rc == 0 ? s : NULL,
						      rc == 0 ? parties : NULL)))
			k->touched = false;
		if (!k->posted && !k->touched)
			drop(p, k);
		else
			i++;
	}
}

/* Pages through the sessions in state st; fn for each. */
static void each_session(struct session_prov *p, enum reg_state st,
			 void (*fn)(struct session_prov *, const struct reg_session *))
{
	int64_t after = 0, next = 0;
	do {
		struct reg_session *items = NULL;
		size_t n = 0;
		if (reg_session_list(p->c->reg, (int)st, NULL, after, LIST_PAGE, &items, &n, &next) != 0)
			return;
		for (size_t i = 0; i < n; i++)
			fn(p, &items[i]);
		free(items);
		after = next;
	} while (next > 0);
}

/* At start-up: the live sessions past CREATED were provisioned (at the dealer and the
 * parties) before a restart. */
static void adopt(struct session_prov *p, const struct reg_session *s)
{
	struct prov_known *k = add(p, s->id);
	if (k) {
		k->posted = true;
		k->touched = p->parties != NULL;
	}
}

/* At start-up: a session that ended shortly before may still be at the dealer and the
 * parties, if the previous process stopped before deleting it there. */
static void adopt_ended(struct session_prov *p, const struct reg_session *s)
{
	if (s->updated_ms >= session_now_ms() - CLOSE_WINDOW_MS)
		adopt(p, s);
}

static bool any_busy(const struct session_prov *p)
{
	for (size_t i = 0; i < p->nk; i++)
		if (p->k[i].busy)
			return true;
	return false;
}

static void *run(void *arg)
{
	struct session_prov *p = arg;
	log_ctx_set("provisioner", NULL);
	each_session(p, REG_STATE_READY, adopt);
	each_session(p, REG_STATE_ACTIVE, adopt);
	each_session(p, REG_STATE_CLOSED, adopt_ended);
	each_session(p, REG_STATE_FAILED, adopt_ended);
	pthread_mutex_lock(&p->mu);
	while (!p->stop) {
		pthread_mutex_unlock(&p->mu);
		if (!reg_read_only(p->c->reg)) {
			for (size_t i = 0; i < p->nk; i++)
				p->k[i].busy = false; /* step_one says which still are */
			each_session(p, REG_STATE_CREATED, step_one);
			reap(p);
		}
		long tick = any_busy(p) ? BUSY_TICK_MS : TICK_MS;
		struct timespec until;
		clock_gettime(CLOCK_REALTIME, &until);
		until.tv_nsec += tick * 1000000L;
		until.tv_sec += until.tv_nsec / 1000000000L;
		until.tv_nsec %= 1000000000L;
		pthread_mutex_lock(&p->mu);
		while (!p->stop && !p->kick &&
		       pthread_cond_timedwait(&p->cv, &p->mu, &until) == 0)
			;
		p->kick = false;
	}
	pthread_mutex_unlock(&p->mu);
	return NULL;
}

int session_prov_start(struct session_ctx *c, struct metrics *m, struct session_prov **out)
{
	*out = NULL;
	const struct session_settings *s = &c->set;
	if (!s->dealer_url)
		return 0;
	struct session_prov *p = calloc(1, sizeof *p);
	if (!p)
		return ERR_NOMEM;
	p->c = c;
	pthread_mutex_init(&p->mu, NULL);
	pthread_cond_init(&p->cv, NULL);
	int rc = ERR_NOMEM;
	p->s = malloc(sizeof *p->s);
	p->sp = calloc(REG_MAX_PARTIES, sizeof *p->sp);
	if (!p->s || !p->sp)
		goto fail;
	struct httpc_opts o = {
		.base_url = s->dealer_url,
		.ca_file = s->dealer_ca,
		.cert_file = s->dealer_cert,
		.key_file = s->dealer_key,
		.expect_role = IDENT_ROLE_DEALER,
		.connect_timeout_ms = 2000,
		.timeout_ms = s->dealer_timeout_ms,
		.retries = 0, /* the next tick is the retry */
		.max_response = 1u << 20,
	};
	rc = ERR_CONFIG;
	if (s->dealer_pin) {
		size_t bin = 0;
		if (strlen(s->dealer_pin) != 64 ||
		    sodium_hex2bin(p->pin, sizeof p->pin, s->dealer_pin, 64, NULL, &bin, NULL) != 0 ||
		    bin != sizeof p->pin) {
			LOG_ERROR("session.bad_config", LOG_S("key", "dealer.pin"),
				  LOG_S("detail", "must be 64 hex digits, the SHA-256 of the dealer's "
						  "certificate"));
			goto fail;
		}
		o.expect_fingerprint = p->pin;
	}
	if (!s->dealer_ca || !s->dealer_cert || !s->dealer_key) {
		LOG_ERROR("session.bad_config", LOG_S("key", "dealer.ca"),
			  LOG_S("detail", "dealer.url needs dealer.ca, dealer.cert and dealer.key (the "
					  "Mimir CA and this service's certificate and key)"));
		goto fail;
	}
	if ((rc = httpc_new(&p->hc, &o)) != 0) {
		LOG_ERROR("session.bad_config", LOG_S("key", "dealer.url"), LOG_S("error", err_slug(rc)),
			  LOG_S("detail", "cannot set up the dealer client (check dealer.ca, dealer.cert, "
					  "dealer.key)"));
		rc = rc == ERR_NOMEM ? rc : ERR_CONFIG;
		goto fail;
	}
	p->outcomes = metrics_counter(m, "mimir_session_dealer_requests_total",
				      "Requests of the provisioner to the dealer by operation and outcome",
				      (const char *const[]){"op", "outcome", NULL});
	if ((rc = prov_parties_new(c, m, &p->parties)) != 0)
		goto fail;
	if (pthread_create(&p->thread, NULL, run, p) != 0) {
		rc = ERR_NOMEM;
		goto fail;
	}
	p->running = true;
	*out = p;
	return 0;
fail:
	session_prov_stop(p);
	return rc;
}

void session_prov_kick(struct session_prov *p)
{
	if (!p)
		return;
	pthread_mutex_lock(&p->mu);
	p->kick = true;
	pthread_cond_signal(&p->cv);
	pthread_mutex_unlock(&p->mu);
}

void session_prov_stop(struct session_prov *p)
{
	if (!p)
		return;
	if (p->running) {
		pthread_mutex_lock(&p->mu);
		p->stop = true;
		pthread_cond_signal(&p->cv);
		pthread_mutex_unlock(&p->mu);
		pthread_join(p->thread, NULL);
	}
	prov_parties_free(p->parties);
	httpc_free(p->hc);
	pthread_mutex_destroy(&p->mu);
	pthread_cond_destroy(&p->cv);
	free(p->k);
	free(p->s);
	free(p->sp);
	free(p);
}
