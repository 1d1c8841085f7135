/* mimir-gateway relay: the client's generations, carried between the client and the
 * session's parties without the gateway ever opening anything.
 *
 * A generation is started at every party (POST .../generations, the same body at
 * each, mutual TLS with the gateway's certificate, each party pinned to the
 * fingerprint the registry has for it). Then one reader thread per party follows the
 * party's event stream (httpc_stream, resumed with Last-Event-ID when it breaks) and
 * the readers together write the client's stream: one `masks` event once every party's
 * MASKS is in, one `receipt` once every RECEIPT is, one `token` event per token once
 * every party's OUTPUT part for it is, and `done` when every party is done. The first
 * `error` of any party, a party whose stream cannot be followed, or a party that sends
 * something malformed ends the client's stream with an `error` event (problem+json) and
 * the generation is cancelled at every party. The gateway checks only the shape and
 * size of what it relays (every message is sealed to the client, which verifies it).
 *
 * The client's stream is a per-generation event log (events.c): a client that lost
 * its connection reattaches with Last-Event-ID. A janitor thread cancels at the parties
 * a generation that has had no client attached for stream.abandon_ms (a client that
 * went away), sends the cancels the readers ask for, and forgets finished generations
 * after stream.keep_ms.
 *
 * Threads never block a request handler for long: handlers make the short control
 * calls (start, INPUT, cancel, all parties at once with httpc_multi) and return; the
 * readers and the janitor are the relay's own threads. A reader touches only its
 * generation and the relay (never the service context), so a reader stuck on a frozen
 * party cannot outlive what it uses: gw_relay_free leaves the relay allocated when a
 * reader is still blocked at exit.
 *
 * Locking: rl->mu guards the table, every generation's refs, rl->live and rl->readers;
 * g->mu guards a generation's mutable state; g->ctl_mu serialises its control calls.
 * Order: g->mu before rl->mu; ctl_mu is never held with either. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include <sodium.h>

#include "err/err.h"
#include "gateway.h"
#include "log/log.h"
#include "metrics/metrics.h"
#include "sse/sse.h"

#define JANITOR_TICK_MS 200
#define GW_DETAIL_MAX 480
#define READER_STACK (512u << 10)
#define FREE_WAIT_MS 3000

enum gstate { GS_MASKING, GS_AWAITING_INPUT, GS_RUNNING, GS_DONE, GS_FAILED, GS_CANCELLED };
static const char *const state_names[] = {"masking", "awaiting_input", "running",
					  "done",    "failed",         "cancelled"};

struct tok {
	char *b64;
	struct tok *next;
};

struct gw_gen {
	struct gw_relay *rl;
	/* fixed at creation */
	char id[GW_GEN_HEX + 1], session[REG_ID_SIZE], psid[REG_PARTY_SESSION_HEX + 1];
	char key_id[24], request_id[72];
	unsigned n;
	struct gw_party_ep ep[MPC_MAX_PARTIES];
	uint32_t slots, max_tokens, n_in;
	size_t b64_masks, b64_receipt, b64_token, input_bytes, max_event, log_bytes;
	int64_t created_ms;
	unsigned refs;      /* rl->mu */
	int64_t ended_ms;   /* rl->mu: when it finished (0: it runs), for the table */

	pthread_mutex_t mu;
	enum gstate state;
	bool finished, stop, input_posted, want_cancel, cancel_sent, abandoned, counted;
	struct sse_log *log;
	char *masks[MPC_MAX_PARTIES], *receipts[MPC_MAX_PARTIES];
	unsigned n_masks, n_receipts, n_done;
	struct tok *head[MPC_MAX_PARTIES], *tail[MPC_MAX_PARTIES];
	uint32_t got[MPC_MAX_PARTIES]; /* token events received from each party */
	uint32_t tokens;               /* token events sent to the client */
	char reason[32];
	char detail[GW_DETAIL_MAX];
	int64_t finished_ms, lonely_ms;

	pthread_mutex_t ctl_mu;
	struct httpc_multi *multi;
	struct httpc *ctl[MPC_MAX_PARTIES];
};

struct gw_relay {
	struct gw_settings set;
	struct gw_relay_metrics m;
	pthread_mutex_t mu;
	pthread_cond_t cv;
	struct gw_gen **gens;
	size_t n, cap;
	unsigned live;    /* unfinished generations */
	unsigned readers; /* reader threads alive */
	bool stop;
	pthread_t janitor;
	bool janitor_started;
};

static int64_t mono_ms(void)
{
	struct timespec ts;
	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

static size_t b64_len(size_t n)
{
	return (n + 2) / 3 * 4;
}

/* ---- generations: life ---- */

static void free_pending_locked(struct gw_gen *g)
{
	for (unsigned k = 0; k < g->n; k++) {
		free(g->masks[k]);
		free(g->receipts[k]);
		g->masks[k] = g->receipts[k] = NULL;
		for (struct tok *t = g->head[k], *nx; t; t = nx) {
			nx = t->next;
			free(t->b64);
			free(t);
		}
		g->head[k] = g->tail[k] = NULL;
	}
}

static void gen_free(struct gw_gen *g)
{
	free_pending_locked(g);
	sse_log_free(g->log);
	for (unsigned k = 0; k < g->n; k++)
		httpc_free(g->ctl[k]);
	httpc_multi_free(g->multi);
	pthread_mutex_destroy(&g->mu);
	pthread_mutex_destroy(&g->ctl_mu);
	free(g);
}

void gw_gen_put(struct gw_gen *g)
{
	if (!g)
		return;
	struct gw_relay *rl = g->rl;
	pthread_mutex_lock(&rl->mu);
	bool last = --g->refs == 0;
	pthread_mutex_unlock(&rl->mu);
	if (last)
		gen_free(g);
}

const char *gw_gen_id(const struct gw_gen *g)
{
	return g->id;
}

/* Ends the generation (state is final); a generation that did not finish normally is
 * cancelled at every party by the janitor. Caller holds g->mu. */
static void finish_locked(struct gw_gen *g, enum gstate st, const char *detail)
{
	if (g->finished)
		return;
	g->finished = g->stop = true;
	g->state = st;
	g->finished_ms = mono_ms();
	snprintf(g->detail, sizeof g->detail, "%s", detail ? detail : "");
	if (st != GS_DONE)
		g->want_cancel = true;
	sse_log_finish(g->log);
	free_pending_locked(g);
	pthread_mutex_lock(&g->rl->mu);
	g->rl->live--;
	g->ended_ms = g->finished_ms;
	pthread_cond_broadcast(&g->rl->cv);
	pthread_mutex_unlock(&g->rl->mu);
}

static void append_json_locked(struct gw_gen *g, const char *event, json_t *data)
{
	char *text = data ? json_dumps(data, JSON_COMPACT) : NULL;
	json_decref(data);
	if (!text || sse_log_append(g->log, event, text, strlen(text), NULL) != 0)
		LOG_ERROR("gateway.event_lost", LOG_S("generation", g->id), LOG_S("event", event),
			  LOG_S("detail", "out of memory: the client's stream misses an event"));
	free(text);
}

/* The client gets an error event (problem+json with the party at fault, when one is,
 * and the tokens it has had) and the generation ends. Caller holds g->mu. */
static void fail_locked(struct gw_gen *g, int code, unsigned status, int party, const char *detail)
{
	if (g->finished)
		return;
	json_t *p = err_problem_status(code, status, detail, NULL, g->request_id);
	if (p) {
		if (party >= 0)
			json_object_set_new(p, "party", json_integer(party));
		json_object_set_new(p, "tokens", json_integer(g->tokens));
	}
	append_json_locked(g, "error", p);
	LOG_WARN("gateway.generation_failed", LOG_S("generation", g->id), LOG_S("session", g->session),
		 LOG_I("party", party), LOG_I("tokens", g->tokens), LOG_S("error", err_slug(code)),
		 LOG_S("detail", detail));
	finish_locked(g, code == ERR_CANCELLED ? GS_CANCELLED : GS_FAILED, detail);
}

static bool stopped(struct gw_gen *g)
{
	pthread_mutex_lock(&g->mu);
	bool s = g->stop;
	pthread_mutex_unlock(&g->mu);
	return s;
}

/* ---- control calls to every party at once ---- */

struct ctl_res {
	int rc;
	long status;
	char detail[300];
	char field[48];
};

static void ctl_all(struct gw_gen *g, const char *path, const char *ctype, const void *body, size_t len,
		    struct ctl_res *res)
{
	struct httpc_call calls[MPC_MAX_PARTIES];
	memset(calls, 0, sizeof calls);
	pthread_mutex_lock(&g->ctl_mu);
	for (unsigned k = 0; k < g->n; k++)
		calls[k] = (struct httpc_call){.c = g->ctl[k], .method = "POST", .path = path,
					       .content_type = ctype, .body = body, .len = len};
	httpc_multi_run(g->multi, calls, g->n);
	for (unsigned k = 0; k < g->n; k++) {
		struct ctl_res *r = &res[k];
		memset(r, 0, sizeof *r);
		r->rc = calls[k].rc;
		r->status = calls[k].resp.status;
		if (r->rc != 0) {
			snprintf(r->detail, sizeof r->detail, "%s", calls[k].resp.error);
		} else {
			json_t *p = json_loadb(calls[k].resp.body, calls[k].resp.len, 0, NULL);
			const char *d = json_string_value(json_object_get(p, "detail"));
			const char *f = json_string_value(json_object_get(p, "field"));
			snprintf(r->detail, sizeof r->detail, "%s", d ? d : "");
			snprintf(r->field, sizeof r->field, "%s", f ? f : "");
			json_decref(p);
		}
		httpc_resp_free(&calls[k].resp);
	}
	pthread_mutex_unlock(&g->ctl_mu);
}

static void gen_path(const struct gw_gen *g, const char *what, char *out, size_t cap)
{
	snprintf(out, cap, "/v1/sessions/%s/generations/%s%s%s", g->psid, g->id, what ? "/" : "", what ? what : "");
}

/* Cancels at every party; true when each took it or had ended already. */
static bool cancel_all(struct gw_gen *g, struct gw_fail *f)
{
	char path[160];
	struct ctl_res res[MPC_MAX_PARTIES];
	gen_path(g, "cancel", path, sizeof path);
	ctl_all(g, path, NULL, NULL, 0, res);
	for (unsigned k = 0; k < g->n; k++) {
		if (res[k].rc == 0 && (res[k].status == 202 || res[k].status == 409 || res[k].status == 404))
			continue;
		LOG_WARN("gateway.cancel_failed", LOG_S("generation", g->id), LOG_I("party", k),
			 LOG_I("status", res[k].status), LOG_S("detail", res[k].detail));
		if (f) {
			f->code = ERR_UPSTREAM, f->status = 502;
			snprintf(f->detail, sizeof f->detail, "party %u (%s) did not take the cancel: %s%s", k,
				 g->ep[k].identity, res[k].rc ? "" : "answered ", res[k].detail);
		}
		return false;
	}
	return true;
}

/* ---- the parties' events ---- */

struct reader {
	struct gw_gen *g;
	unsigned k;
	struct sse_parser *p;
	char last_id[24];
	bool ended; /* this party's stream ended the generation (done, error) or it is over */
};

static void protocol_locked(struct gw_gen *g, unsigned k, const char *what)
{
	char d[GW_DETAIL_MAX];
	snprintf(d, sizeof d, "party %u (%s) sent a malformed %s event; the generation is stopped at every party",
		 k, g->ep[k].identity, what);
	fail_locked(g, ERR_PROTOCOL, 502, (int)k, d);
}

/* {"parts": [{"party": i, "message": ...}, ...]} from the held messages (freed). */
static json_t *parts_json(struct gw_gen *g, char **held)
{
	json_t *a = json_array();
	for (unsigned k = 0; k < g->n && a; k++) {
		json_array_append_new(a, json_pack("{s:i, s:s}", "party", (int)k, "message", held[k]));
		free(held[k]);
		held[k] = NULL;
	}
	return a ? json_pack("{s:o}", "parts", a) : NULL;
}

/* The party's message of a masks or receipt event, checked; NULL when malformed. */
static const char *message_of(json_t *j, const char *index_key, long long want_index, size_t want_len)
{
	json_t *ix = json_object_get(j, index_key);
	const char *m = json_string_value(json_object_get(j, "message"));
	if (!json_is_integer(ix) || json_integer_value(ix) != want_index || !m || strlen(m) != want_len)
		return NULL;
	return m;
}

static void on_masks_locked(struct gw_gen *g, unsigned k, json_t *j)
{
	const char *m = message_of(j, "party", k, g->b64_masks);
	if (!m || g->masks[k] || g->state != GS_MASKING)
		return protocol_locked(g, k, "masks");
	if (!(g->masks[k] = strdup(m)))
		return fail_locked(g, ERR_NOMEM, 503, -1, "the gateway ran out of memory");
	if (++g->n_masks < g->n)
		return;
	append_json_locked(g, "masks", parts_json(g, g->masks));
	g->state = GS_AWAITING_INPUT;
}

static void on_receipt_locked(struct gw_gen *g, unsigned k, json_t *j)
{
	const char *m = message_of(j, "party", k, g->b64_receipt);
	if (!m || g->receipts[k] || g->state != GS_AWAITING_INPUT || !g->input_posted)
		return protocol_locked(g, k, "receipt");
	if (!(g->receipts[k] = strdup(m)))
		return fail_locked(g, ERR_NOMEM, 503, -1, "the gateway ran out of memory");
	if (++g->n_receipts < g->n)
		return;
	append_json_locked(g, "receipt", parts_json(g, g->receipts));
	g->state = GS_RUNNING;
}

static void on_token_locked(struct gw_gen *g, unsigned k, json_t *j)
{
	/* A party's tokens follow its receipt; the parties move in lockstep, but one
	 * party's stream may reach the gateway later than the others'. */
	bool receipt_in = g->state == GS_RUNNING || g->receipts[k];
	const char *m = message_of(j, "index", g->got[k], g->b64_token);
	struct tok *t = NULL;
	if (!m || !receipt_in || g->got[k] >= g->max_tokens)
		return protocol_locked(g, k, "token");
	if (!(t = calloc(1, sizeof *t)) || !(t->b64 = strdup(m))) {
		free(t);
		return fail_locked(g, ERR_NOMEM, 503, -1, "the gateway ran out of memory");
	}
	g->got[k]++;
	if (g->tail[k])
		g->tail[k]->next = t;
	else
		g->head[k] = t;
	g->tail[k] = t;
	for (;;) {
		char *held[MPC_MAX_PARTIES];
		for (unsigned i = 0; i < g->n; i++)
			if (!g->head[i])
				return;
		for (unsigned i = 0; i < g->n; i++) {
			struct tok *h = g->head[i];
			held[i] = h->b64;
			if (!(g->head[i] = h->next))
				g->tail[i] = NULL;
			free(h);
		}
		json_t *ev = parts_json(g, held);
		if (ev)
			json_object_set_new(ev, "index", json_integer(g->tokens));
		append_json_locked(g, "token", ev);
		g->tokens++;
	}
}

static void on_done_locked(struct gw_gen *g, unsigned k, json_t *j)
{
	json_t *n = json_object_get(j, "tokens");
	const char *reason = json_string_value(json_object_get(j, "reason"));
	if (!json_is_integer(n) || json_integer_value(n) != g->got[k] || !reason || !reason[0] ||
	    strlen(reason) >= sizeof g->reason || g->state != GS_RUNNING)
		return protocol_locked(g, k, "done");
	if (k == 0)
		snprintf(g->reason, sizeof g->reason, "%s", reason);
	if (++g->n_done < g->n)
		return;
	if (!g->reason[0])
		snprintf(g->reason, sizeof g->reason, "%s", reason);
	append_json_locked(g, "done",
			   json_pack("{s:s, s:i, s:{s:i, s:i}}", "reason", g->reason, "tokens", (int)g->tokens,
				     "usage", "prompt_slots", (int)g->slots, "completion_tokens", (int)g->tokens));
	LOG_INFO("gateway.generation_done", LOG_S("generation", g->id), LOG_S("session", g->session),
		 LOG_I("tokens", g->tokens), LOG_S("reason", g->reason),
		 LOG_I("ms", mono_ms() - g->created_ms));
	finish_locked(g, GS_DONE, NULL);
}

static bool type_ok(const char *t)
{
	static const char pre[] = "urn:mimir:problem:";
	size_t n = t ? strlen(t) : 0;
	if (n <= sizeof pre - 1 || n > 80 || strncmp(t, pre, sizeof pre - 1) != 0)
		return false;
	for (size_t i = sizeof pre - 1; i < n; i++)
		if (!((t[i] >= 'a' && t[i] <= 'z') || t[i] == '-'))
			return false;
	return true;
}

/* A party's error event: relayed to the client as the generation's end, naming the
 * party (the first party to end it is the one the client hears about). */
static void on_error_locked(struct gw_gen *g, unsigned k, json_t *j)
{
	const char *type = json_string_value(json_object_get(j, "type"));
	const char *title = json_string_value(json_object_get(j, "title"));
	const char *detail = json_string_value(json_object_get(j, "detail"));
	const char *check = json_string_value(json_object_get(j, "check"));
	json_t *st = json_object_get(j, "status");
	long long status = json_integer_value(st);
	if (!type_ok(type) || !title || !json_is_integer(st) || status < 400 || status > 599)
		return protocol_locked(g, k, "error");
	char d[GW_DETAIL_MAX];
	snprintf(d, sizeof d, "party %u (%s): %.360s", k, g->ep[k].identity, detail ? detail : title);
	json_t *p = json_pack("{s:s, s:s, s:I, s:s, s:s, s:i, s:i}", "type", type, "title", title, "status",
			      (json_int_t)status, "detail", d, "request_id", g->request_id, "party", (int)k,
			      "tokens", (int)g->tokens);
	if (p && check && strlen(check) <= 32)
		json_object_set_new(p, "check", json_string(check));
	append_json_locked(g, "error", p);
	bool cancelled = !strcmp(type, "urn:mimir:problem:cancelled") || !strcmp(type, "urn:mimir:problem:timeout");
	LOG_AT(cancelled ? LOG_LEVEL_INFO : LOG_LEVEL_WARN, "gateway.generation_ended", LOG_S("generation", g->id),
	       LOG_S("session", g->session), LOG_I("party", k), LOG_I("tokens", g->tokens), LOG_S("type", type),
	       LOG_S("detail", d));
	finish_locked(g, cancelled ? GS_CANCELLED : GS_FAILED, d);
}

static int on_event(const struct sse_event *ev, void *arg)
{
	struct reader *r = arg;
	struct gw_gen *g = r->g;
	if (ev->id && strlen(ev->id) < sizeof r->last_id)
		snprintf(r->last_id, sizeof r->last_id, "%s", ev->id);
	json_t *j = json_loadb(ev->data, ev->data_len, JSON_REJECT_DUPLICATES, NULL);
	pthread_mutex_lock(&g->mu);
	if (g->finished) {
		r->ended = true;
	} else if (!json_is_object(j)) {
		protocol_locked(g, r->k, "non-JSON");
	} else if (!strcmp(ev->event, "masks")) {
		on_masks_locked(g, r->k, j);
	} else if (!strcmp(ev->event, "receipt")) {
		on_receipt_locked(g, r->k, j);
	} else if (!strcmp(ev->event, "token")) {
		on_token_locked(g, r->k, j);
	} else if (!strcmp(ev->event, "done")) {
		on_done_locked(g, r->k, j);
		r->ended = true; /* this party is through, whatever the others do */
	} else if (!strcmp(ev->event, "error")) {
		on_error_locked(g, r->k, j);
		r->ended = true;
	} /* other events: for a later version of the party; not the client's business */
	r->ended = r->ended || g->finished;
	pthread_mutex_unlock(&g->mu);
	json_decref(j);
	return r->ended;
}

static int on_chunk(const char *data, size_t len, void *arg)
{
	struct reader *r = arg;
	if (stopped(r->g))
		return 1;
	int rc = sse_parser_feed(r->p, data, len, on_event, r);
	if (rc < 0) {
		pthread_mutex_lock(&r->g->mu);
		protocol_locked(r->g, r->k, rc == ERR_TOO_LARGE ? "oversized" : "unparsable");
		pthread_mutex_unlock(&r->g->mu);
		r->ended = true;
	}
	return rc != 0;
}

static struct httpc *party_client(const struct gw_relay *rl, const struct gw_party_ep *ep, bool stream)
{
	struct httpc_opts o = {
		.base_url = ep->url,
		.ca_file = rl->set.parties_ca,
		.cert_file = rl->set.parties_cert,
		.key_file = rl->set.parties_key,
		.expect_role = IDENT_ROLE_PARTY,
		.expect_fingerprint = ep->fp,
		.connect_timeout_ms = rl->set.parties_connect_timeout_ms,
		.timeout_ms = stream ? 0 : rl->set.parties_timeout_ms,
		.retries = 0,
		.max_response = 1u << 20,
	};
	struct httpc *c = NULL;
	return httpc_new(&c, &o) == 0 ? c : NULL;
}

static void *reader_main(void *arg)
{
	struct reader *r = arg;
	struct gw_gen *g = r->g;
	struct gw_relay *rl = g->rl;
	char path[160], why[300] = "";
	gen_path(g, "events", path, sizeof path);
	log_ctx_set(g->request_id, g->session);
	struct httpc *c = party_client(rl, &g->ep[r->k], true);
	unsigned attempt = 0;
	while (c && !r->ended && !stopped(g)) {
		char last[64];
		const char *hdrs[3] = {"Accept: text/event-stream", NULL, NULL};
		if (r->last_id[0]) {
			snprintf(last, sizeof last, "Last-Event-ID: %s", r->last_id);
			hdrs[1] = last;
		}
		sse_parser_free(r->p); /* a partial event of a broken stream is not carried over */
		if (!(r->p = sse_parser_new(g->max_event))) {
			snprintf(why, sizeof why, "out of memory");
			break;
		}
		struct httpc_resp resp;
		int rc = httpc_stream(c, "GET", path, hdrs, on_chunk, r, &resp);
		long st = resp.status;
		if (rc != 0)
			snprintf(why, sizeof why, "%s", resp.error);
		else if (st != 200)
			snprintf(why, sizeof why, "it answered %ld", st);
		else
			snprintf(why, sizeof why, "it ended before the generation did");
		httpc_resp_free(&resp);
		if (r->ended || stopped(g))
			break;
		/* A 4xx will not change (the party lost the generation: restarted). */
		if ((rc == 0 && st >= 400 && st < 500) || attempt >= (unsigned)rl->set.parties_stream_retries)
			break;
		LOG_WARN("gateway.party_stream_retry", LOG_S("generation", g->id), LOG_I("party", r->k),
			 LOG_S("url", g->ep[r->k].url), LOG_S("error", why), LOG_S("last_event_id", r->last_id));
		for (int64_t t = 0; t < (200LL << attempt) && !stopped(g); t += 50)
			usleep(50 * 1000);
		attempt++;
	}
	pthread_mutex_lock(&g->mu);
	if (!g->finished && !r->ended) {
		char d[GW_DETAIL_MAX];
		snprintf(d, sizeof d, "the event stream of party %u (%s at %s) failed: %s", r->k, g->ep[r->k].identity,
			 g->ep[r->k].url, c ? why : "cannot set up a client");
		fail_locked(g, ERR_UPSTREAM, 502, (int)r->k, d);
	}
	pthread_mutex_unlock(&g->mu);
	sse_parser_free(r->p);
	httpc_free(c);
	free(r);
	log_ctx_clear();
	pthread_mutex_lock(&rl->mu);
	rl->readers--;
	pthread_cond_broadcast(&rl->cv);
	pthread_mutex_unlock(&rl->mu);
	gw_gen_put(g);
	return NULL;
}

static int start_reader(struct gw_gen *g, unsigned k)
{
	struct reader *r = calloc(1, sizeof *r);
	if (!r)
		return ERR_NOMEM;
	r->g = g;
	r->k = k;
	struct gw_relay *rl = g->rl;
	pthread_mutex_lock(&rl->mu);
	g->refs++;
	rl->readers++;
	pthread_mutex_unlock(&rl->mu);
	pthread_attr_t a;
	pthread_t th;
	pthread_attr_init(&a);
	pthread_attr_setdetachstate(&a, PTHREAD_CREATE_DETACHED);
	pthread_attr_setstacksize(&a, READER_STACK);
	int rc = pthread_create(&th, &a, reader_main, r);
	pthread_attr_destroy(&a);
	if (rc != 0) {
		free(r);
		pthread_mutex_lock(&rl->mu);
		g->refs--; /* the caller holds another */
		rl->readers--;
		pthread_mutex_unlock(&rl->mu);
		return ERR_NOMEM;
	}
	return 0;
}

/* ---- the public view ---- */

static json_t *view_locked(struct gw_gen *g)
{
	char events[160];
	snprintf(events, sizeof events, "/v1/sessions/%s/generations/%s/events", g->session, g->id);
	json_t *v = json_pack("{s:s, s:s, s:s, s:i, s:i, s:i, s:i, s:I, s:s}", "id", g->id, "session", g->session,
			      "state", state_names[g->state], "parties", (int)g->n, "slots", (int)g->slots,
			      "max_tokens", (int)g->max_tokens, "tokens", (int)g->tokens, "last_event_id",
			      (json_int_t)sse_log_last_id(g->log), "events", events);
	if (v && g->finished && g->detail[0])
		json_object_set_new(v, "detail", json_string(g->detail));
	return v;
}

json_t *gw_gen_json(struct gw_gen *g)
{
	pthread_mutex_lock(&g->mu);
	json_t *v = view_locked(g);
	pthread_mutex_unlock(&g->mu);
	return v;
}

/* ---- starting ---- */

/* What a party's refusal of the start means for the client. */
static void start_refused(const struct gw_gen *g, unsigned k, const struct ctl_res *r, struct gw_fail *f)
{
	const char *who = g->ep[k].identity;
	if (r->rc != 0) {
		f->code = r->rc == ERR_TLS ? ERR_UPSTREAM : ERR_UNAVAILABLE;
		f->status = r->rc == ERR_TLS ? 502 : 503;
		snprintf(f->detail, sizeof f->detail, "party %u (%s at %s) %s: %s", k, who, g->ep[k].url,
			 r->rc == ERR_TLS ? "failed the TLS handshake (not the certificate the registry pins, or "
					    "not a party)"
					  : "cannot be reached",
			 r->detail);
		return;
	}
	switch (r->status) {
	case 400:
		f->code = ERR_INVALID, f->status = 400;
		snprintf(f->field, sizeof f->field, "%s", r->field);
		break;
	case 409:
		f->code = ERR_CONFLICT, f->status = 409;
		break;
	case 503:
		f->code = ERR_UNAVAILABLE, f->status = 503;
		break;
	case 404:
		f->code = ERR_UPSTREAM, f->status = 502;
		snprintf(f->detail, sizeof f->detail,
			 "the session is not open at party %u (%s): the parties were not provisioned for it, or one "
			 "restarted",
			 k, who);
		return;
	default:
		f->code = ERR_UPSTREAM, f->status = 502;
		break;
	}
	snprintf(f->detail, sizeof f->detail, "party %u (%s) answered %ld: %s", k, who, r->status,
		 r->detail[0] ? r->detail : "no detail");
}

/* Adds g to the table. The table holds at most stream.max_generations unfinished
 * generations (rl->live) and as many finished ones: past that the oldest finished one
 * is forgotten early, so memory stays bounded under any load. */
static bool table_add_locked(struct gw_relay *rl, struct gw_gen *g)
{
	while (rl->n >= rl->cap) {
		size_t old = rl->n;
		for (size_t i = 0; i < rl->n; i++)
			if (rl->gens[i]->ended_ms && (old == rl->n || rl->gens[i]->ended_ms < rl->gens[old]->ended_ms))
				old = i;
		if (old == rl->n) /* (cannot be: at most cap / 2 of them run) */
			return false;
		struct gw_gen *o = rl->gens[old];
		rl->gens[old] = rl->gens[--rl->n];
		if (--o->refs == 0) {
			pthread_mutex_unlock(&rl->mu);
			gen_free(o);
			pthread_mutex_lock(&rl->mu);
		}
	}
	rl->gens[rl->n++] = g;
	g->refs++;
	return true;
}

int gw_gen_start(struct gw_relay *rl, const struct gw_gen_spec *sp, struct gw_gen **out, struct gw_fail *f)
{
	*out = NULL;
	memset(f, 0, sizeof *f);
	pthread_mutex_lock(&rl->mu);
	bool full = rl->stop || rl->live >= (unsigned)rl->set.stream_max_generations;
	if (!full)
		rl->live++;
	pthread_mutex_unlock(&rl->mu);
	if (full) {
		f->code = ERR_UNAVAILABLE, f->status = 503;
		snprintf(f->detail, sizeof f->detail,
			 "the gateway relays stream.max_generations (%lld) generations at once; retry shortly",
			 (long long)rl->set.stream_max_generations);
		return ERR_UNAVAILABLE;
	}
	struct gw_gen *g = calloc(1, sizeof *g);
	char *body = NULL;
	int rc = 0;
	bool started = false;
	if (!g) {
		rc = ERR_NOMEM;
		goto out;
	}
	g->rl = rl;
	g->refs = 1;
	pthread_mutex_init(&g->mu, NULL);
	pthread_mutex_init(&g->ctl_mu, NULL);
	uint8_t gid[GW_GEN_HEX / 2];
	randombytes_buf(gid, sizeof gid);
	sodium_bin2hex(g->id, sizeof g->id, gid, sizeof gid);
	snprintf(g->session, sizeof g->session, "%s", sp->session);
	snprintf(g->key_id, sizeof g->key_id, "%s", sp->key_id);
	snprintf(g->request_id, sizeof g->request_id, "%s", sp->request_id ? sp->request_id : "");
	g->n = sp->nparties;
	memcpy(g->ep, sp->ep, sizeof g->ep);
	g->slots = sp->slots;
	g->max_tokens = sp->max_tokens;
	g->n_in = sp->n_in;
	g->b64_masks = b64_len(cio_masks_bytes(sp->n_in, sp->max_tokens));
	g->b64_receipt = b64_len(cio_receipt_bytes());
	g->b64_token = b64_len(cio_output_bytes(1));
	g->input_bytes = cio_input_bytes(sp->nparties, sp->n_in);
	g->max_event = g->b64_masks + 4096;
	g->created_ms = mono_ms();
	if ((rc = reg_party_session_id(sp->session, g->psid)) != 0)
		goto out;
	/* A masks event holds every party's part; the log must hold at least that. */
	size_t cap = (size_t)rl->set.stream_buffer_bytes;
	if (cap < g->n * (g->b64_masks + 256) + 65536)
		cap = g->n * (g->b64_masks + 256) + 65536;
	g->log_bytes = cap;
	if (!(g->log = sse_log_new((size_t)g->max_tokens + 16, cap)) || httpc_multi_new(&g->multi) != 0) {
		rc = ERR_NOMEM;
		goto out;
	}
	for (unsigned k = 0; k < g->n; k++)
		if (!(g->ctl[k] = party_client(rl, &g->ep[k], false))) {
			rc = ERR_NOMEM;
			goto out;
		}
	char ck[2 * CIO_KEY_BYTES + 1];
	sodium_bin2hex(ck, sizeof ck, sp->client_pk, CIO_KEY_BYTES);
	json_t *b = json_pack("{s:s, s:s, s:i, s:i}", "id", g->id, "client_key", ck, "slots", (int)g->slots,
			      "max_tokens", (int)g->max_tokens);
	if (b && sp->sampling)
		json_object_set(b, "sampling", sp->sampling);
	body = b ? json_dumps(b, JSON_COMPACT) : NULL;
	json_decref(b);
	if (!body) {
		rc = ERR_NOMEM;
		goto out;
	}
	char path[128];
	struct ctl_res res[MPC_MAX_PARTIES];
	snprintf(path, sizeof path, "/v1/sessions/%s/generations", g->psid);
	ctl_all(g, path, "application/json", body, strlen(body), res);
	started = true;
	for (unsigned k = 0; k < g->n && rc == 0; k++)
		if (res[k].rc != 0 || res[k].status != 202) {
			start_refused(g, k, &res[k], f);
			rc = f->code;
		}
	if (rc != 0) {
		LOG_WARN("gateway.generation_refused", LOG_S("generation", g->id), LOG_S("session", g->session),
			 LOG_I("status", f->status), LOG_S("detail", f->detail));
		goto out;
	}
	pthread_mutex_lock(&g->mu);
	append_json_locked(g, "generation", view_locked(g));
	pthread_mutex_unlock(&g->mu);
	pthread_mutex_lock(&rl->mu);
	bool added = table_add_locked(rl, g);
	pthread_mutex_unlock(&rl->mu);
	if (!added) {
		rc = ERR_INTERNAL;
		goto out;
	}
	for (unsigned k = 0; k < g->n; k++)
		if (start_reader(g, k) != 0) {
			pthread_mutex_lock(&g->mu);
			fail_locked(g, ERR_NOMEM, 503, -1, "the gateway cannot start its relay threads");
			pthread_mutex_unlock(&g->mu);
			break;
		}
	LOG_INFO("gateway.generation_started", LOG_S("generation", g->id), LOG_S("session", g->session),
		 LOG_S("party_session", g->psid), LOG_I("parties", g->n), LOG_I("slots", g->slots),
		 LOG_I("max_tokens", g->max_tokens), LOG_S("key", g->key_id));
	*out = g;
	free(body);
	return 0;
out:
	if (rc != 0 && !f->status) {
		f->code = rc, f->status = (unsigned)err_http_status(rc);
		snprintf(f->detail, sizeof f->detail, "the gateway could not start the generation: %s", err_title(rc));
	}
	if (started) /* whoever took it lets it go */
		cancel_all(g, NULL);
	free(body);
	pthread_mutex_lock(&rl->mu);
	rl->live--;
	pthread_mutex_unlock(&rl->mu);
	if (g)
		gen_free(g);
	return rc;
}

/* ---- what handlers do with a generation ---- */

struct gw_gen *gw_gen_find(struct gw_relay *rl, const char *session, const char *gid, const char *key_id)
{
	struct gw_gen *g = NULL;
	pthread_mutex_lock(&rl->mu);
	for (size_t i = 0; i < rl->n && !g; i++) {
		struct gw_gen *x = rl->gens[i];
		/* A generation belongs to the key that started it: another key of the same
		 * session learns nothing about it, not even that it exists. */
		if (!strcmp(x->id, gid) && !strcmp(x->session, session) && !strcmp(x->key_id, key_id)) {
			g = x;
			g->refs++;
		}
	}
	pthread_mutex_unlock(&rl->mu);
	return g;
}

uint64_t gw_gen_last_event(struct gw_gen *g)
{
	return sse_log_last_id(g->log);
}

size_t gw_gen_stream_buffer(const struct gw_gen *g)
{
	return g->log_bytes + (64u << 10);
}

int gw_gen_attach(struct gw_gen *g, struct http_stream *st, uint64_t after)
{
	pthread_mutex_lock(&g->mu);
	int rc = sse_log_attach(g->log, st, after);
	if (rc == 0)
		g->lonely_ms = 0;
	pthread_mutex_unlock(&g->mu);
	return rc;
}

int gw_gen_input(struct gw_gen *g, const void *msg, size_t len, struct gw_fail *f)
{
	memset(f, 0, sizeof *f);
	if (len != g->input_bytes) {
		f->code = ERR_INVALID, f->status = 400;
		snprintf(f->detail, sizeof f->detail,
			 "the INPUT message of this generation is %zu bytes (%u parties, %u input values), got %zu",
			 g->input_bytes, g->n, g->n_in, len);
		return f->code;
	}
	pthread_mutex_lock(&g->mu);
	const char *why = g->finished		       ? "the generation has ended"
			  : g->input_posted	       ? "the generation has its INPUT already"
			  : g->state == GS_MASKING ? "the parties' masks are not all out yet (wait for the masks event)"
						   : NULL;
	if (why) {
		f->code = ERR_CONFLICT, f->status = 409;
		snprintf(f->detail, sizeof f->detail, "%s (%s)", why, state_names[g->state]);
	} else {
		g->input_posted = true;
	}
	pthread_mutex_unlock(&g->mu);
	if (why)
		return f->code;
	char path[160];
	struct ctl_res res[MPC_MAX_PARTIES];
	gen_path(g, "input", path, sizeof path);
	ctl_all(g, path, "application/octet-stream", msg, len, res);
	for (unsigned k = 0; k < g->n; k++) {
		if (res[k].rc == 0 && res[k].status == 202)
			continue;
		f->code = ERR_UPSTREAM, f->status = 502;
		snprintf(f->detail, sizeof f->detail, "party %u (%s) %s the client's INPUT: %s%s", k, g->ep[k].identity,
			 res[k].rc ? "could not be given" : "refused", res[k].detail,
			 res[k].rc ? "" : "; the generation is stopped at every party");
		pthread_mutex_lock(&g->mu);
		fail_locked(g, ERR_UPSTREAM, 502, (int)k, f->detail);
		pthread_mutex_unlock(&g->mu);
		return f->code;
	}
	LOG_INFO("gateway.input_relayed", LOG_S("generation", g->id), LOG_I("bytes", (long long)len));
	return 0;
}

int gw_gen_cancel(struct gw_gen *g, struct gw_fail *f)
{
	memset(f, 0, sizeof *f);
	pthread_mutex_lock(&g->mu);
	bool over = g->finished;
	if (over) {
		f->code = ERR_CONFLICT, f->status = 409;
		snprintf(f->detail, sizeof f->detail, "the generation is %s already", state_names[g->state]);
	}
	g->cancel_sent = true; /* the janitor need not */
	pthread_mutex_unlock(&g->mu);
	if (over)
		return f->code;
	LOG_INFO("gateway.generation_cancel", LOG_S("generation", g->id), LOG_S("by", g->key_id));
	return cancel_all(g, f) ? 0 : f->code;
}

/* ---- the janitor ---- */

/* One generation's upkeep; true when it can be forgotten. */
static bool tend(struct gw_relay *rl, struct gw_gen *g, int64_t now)
{
	bool cancel = false, reap = false, count = false;
	const char *outcome = NULL;
	pthread_mutex_lock(&g->mu);
	if (!g->finished) {
		if (sse_log_clients(g->log) > 0) {
			g->lonely_ms = 0;
		} else if (!g->lonely_ms) {
			g->lonely_ms = now;
		} else if (now - g->lonely_ms >= rl->set.stream_abandon_ms && !g->want_cancel) {
			/* The client went away and did not come back: the parties stop at the
			 * next token boundary, the error they send ends the generation. */
			g->want_cancel = g->abandoned = true;
			LOG_WARN("gateway.generation_abandoned", LOG_S("generation", g->id), LOG_S("session", g->session),
				 LOG_I("tokens", g->tokens), LOG_I("ms", now - g->lonely_ms),
				 LOG_S("detail", "no client attached for stream.abandon_ms: cancelled at every party"));
		}
	}
	if (g->want_cancel && !g->cancel_sent)
		cancel = g->cancel_sent = true;
	if (g->finished && !g->counted) {
		count = g->counted = true;
		outcome = g->abandoned ? "abandoned" : state_names[g->state];
	}
	reap = g->finished && now - g->finished_ms >= rl->set.stream_keep_ms;
	uint32_t tokens = g->tokens;
	pthread_mutex_unlock(&g->mu);
	if (cancel)
		cancel_all(g, NULL);
	if (count) {
		metric_inc(metric_series(rl->m.outcomes, METRIC_LABELS(outcome)));
		metric_add(rl->m.tokens, (double)tokens);
		if (!strcmp(outcome, "abandoned"))
			metric_inc(rl->m.abandoned);
	}
	return reap;
}

static void *janitor_main(void *arg)
{
	struct gw_relay *rl = arg;
	pthread_mutex_lock(&rl->mu);
	while (!rl->stop) {
		struct timespec dl;
		clock_gettime(CLOCK_REALTIME, &dl);
		dl.tv_nsec += JANITOR_TICK_MS * 1000000L;
		if (dl.tv_nsec >= 1000000000L)
			dl.tv_sec++, dl.tv_nsec -= 1000000000L;
		pthread_cond_timedwait(&rl->cv, &rl->mu, &dl);
		if (rl->stop)
			break;
		size_t n = rl->n;
		struct gw_gen **snap = n ? calloc(n, sizeof *snap) : NULL;
		if (n && !snap)
			continue;
		for (size_t i = 0; i < n; i++) {
			snap[i] = rl->gens[i];
			snap[i]->refs++;
		}
		metric_set(rl->m.running, rl->live);
		pthread_mutex_unlock(&rl->mu);
		int64_t now = mono_ms();
		bool *reap = calloc(n ? n : 1, sizeof *reap);
		for (size_t i = 0; i < n; i++)
			if (tend(rl, snap[i], now) && reap)
				reap[i] = true;
		pthread_mutex_lock(&rl->mu);
		for (size_t i = 0; i < n; i++) {
			struct gw_gen *g = snap[i];
			if (reap && reap[i])
				for (size_t j = 0; j < rl->n; j++)
					if (rl->gens[j] == g) {
						rl->gens[j] = rl->gens[--rl->n];
						g->refs--; /* the table's */
						break;
					}
			if (--g->refs == 0) {
				pthread_mutex_unlock(&rl->mu);
				gen_free(g);
				pthread_mutex_lock(&rl->mu);
			}
		}
		free(reap);
		free(snap);
	}
	pthread_mutex_unlock(&rl->mu);
	return NULL;
}

int gw_relay_new(struct gw_relay **out, const struct gw_settings *s, const struct gw_relay_metrics *m)
{
	*out = NULL;
	struct gw_relay *rl = calloc(1, sizeof *rl);
	if (!rl)
		return ERR_NOMEM;
	rl->set = *s;
	rl->m = *m;
	rl->cap = 2 * (size_t)s->stream_max_generations;
	if (!(rl->gens = calloc(rl->cap, sizeof *rl->gens))) {
		free(rl);
		return ERR_NOMEM;
	}
	pthread_mutex_init(&rl->mu, NULL);
	pthread_cond_init(&rl->cv, NULL);
	if (pthread_create(&rl->janitor, NULL, janitor_main, rl) != 0) {
		gw_relay_free(rl);
		return ERR_NOMEM;
	}
	rl->janitor_started = true;
	*out = rl;
	return 0;
}

void gw_relay_free(struct gw_relay *rl)
{
	if (!rl)
		return;
	pthread_mutex_lock(&rl->mu);
	rl->stop = true;
	pthread_cond_broadcast(&rl->cv);
	pthread_mutex_unlock(&rl->mu);
	if (rl->janitor_started)
		pthread_join(rl->janitor, NULL);
	/* The clients' streams are gone with the server: nobody will read what is still
	 * running, so the parties stop it now. */
	pthread_mutex_lock(&rl->mu);
	size_t n = rl->n;
	struct gw_gen **snap = n ? calloc(n, sizeof *snap) : NULL;
	for (size_t i = 0; i < n && snap; i++) {
		snap[i] = rl->gens[i];
		snap[i]->refs++;
	}
	pthread_mutex_unlock(&rl->mu);
	for (size_t i = 0; i < n && snap; i++) {
		struct gw_gen *g = snap[i];
		pthread_mutex_lock(&g->mu);
		fail_locked(g, ERR_UNAVAILABLE, 503, -1, "the gateway is shutting down");
		bool cancel = g->want_cancel && !g->cancel_sent;
		g->cancel_sent = true;
		pthread_mutex_unlock(&g->mu);
		if (cancel)
			cancel_all(g, NULL);
		gw_gen_put(g);
	}
	free(snap);
	/* Readers end once their party's stream does (the cancels end them); one stuck on
	 * a frozen party is left behind, with the relay it uses. */
	struct timespec dl;
	clock_gettime(CLOCK_REALTIME, &dl);
	dl.tv_sec += FREE_WAIT_MS / 1000;
	pthread_mutex_lock(&rl->mu);
	while (rl->readers && pthread_cond_timedwait(&rl->cv, &rl->mu, &dl) == 0)
		;
	unsigned left = rl->readers;
	for (size_t i = 0; i < rl->n; i++) {
		struct gw_gen *g = rl->gens[i];
		if (--g->refs == 0) {
			pthread_mutex_unlock(&rl->mu);
			gen_free(g);
			pthread_mutex_lock(&rl->mu);
		}
	}
	rl->n = 0;
	pthread_mutex_unlock(&rl->mu);
	if (left) {
		LOG_WARN("gateway.relay_threads_left", LOG_I("threads", left),
			 LOG_S("detail", "reader threads still wait on a party that does not answer; left to the exit"));
		return;
	}
	pthread_cond_destroy(&rl->cv);
	pthread_mutex_destroy(&rl->mu);
	free(rl->gens);
	free(rl);
}
