/* mimir-party generations: the relay's side of one generation (docs/PARTY.md). A
 * generation is queued to its session's worker, which makes the client's masks with
 * the peers; everything this party sends the client (MASKS, RECEIPT, one OUTPUT per
 * token, then the end) is an event of the generation's event stream, sealed to the
 * client's key, so the relay only forwards bytes; the client's INPUT comes back
 * through POST .../input. Handlers only record and wake: the MPC runs in the worker. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <sodium.h>

#include "err/err.h"
#include "log/log.h"
#include "metrics/metrics.h"
#include "party.h"
#include "sse/sse.h"

static const char *const gen_state_names[] = {"masking", "awaiting_input", "running",
					      "done",    "failed",         "cancelled"};

const char *party_gen_state_name(enum pgen_state s)
{
	return (unsigned)s < sizeof gen_state_names / sizeof gen_state_names[0] ? gen_state_names[s] : "unknown";
}

bool party_gen_finished(const struct pgen *g)
{
	return g->state == PG_DONE || g->state == PG_FAILED || g->state == PG_CANCELLED;
}

void party_gen_free(struct pgen *g)
{
	if (!g)
		return;
	sse_log_free(g->log); /* closes the streams still attached */
	if (g->input) {
		sodium_memzero(g->input, g->input_len);
		free(g->input);
	}
	sodium_memzero(g, sizeof *g);
	free(g);
}

int party_gen_event(struct pgen *g, const char *event, json_t *data)
{
	char *text = data ? json_dumps(data, JSON_COMPACT) : NULL;
	json_decref(data);
	if (!text)
		return ERR_NOMEM;
	int rc = sse_log_append(g->log, event, text, strlen(text), NULL);
	free(text);
	return rc;
}

/* The generation called gid in s (running or among the finished ones kept), or NULL.
 * Caller holds s->mu. */
static struct pgen *find_gen_locked(struct psession *s, const char *gid)
{
	if (s->gen && strcmp(s->gen->id, gid) == 0)
		return s->gen;
	for (size_t i = 0; i < PARTY_KEEP_FINISHED; i++)
		if (s->finished[i] && strcmp(s->finished[i]->id, gid) == 0)
			return s->finished[i];
	return NULL;
}

static json_t *gen_json(const struct psession *s, const struct pgen *g)
{
	char events[128];
	snprintf(events, sizeof events, "/v1/sessions/%s/generations/%s/events", s->id, g->id);
	return json_pack("{s:s, s:s, s:s?, s:i, s:i, s:i, s:i, s:i, s:I, s:s}", "id", g->id, "state",
			 party_gen_state_name(g->state), "detail", g->detail[0] ? g->detail : NULL, "slots",
			 (int)g->slots, "max_tokens", (int)g->max_tokens, "n_in", (int)g->n_in, "n_out",
			 (int)g->n_out, "tokens", (int)g->tokens, "last_event_id", (json_int_t)sse_log_last_id(g->log),
			 "events", events);
}

/* Replies 404 when the path names no generation of s. Caller holds s->mu. */
static struct pgen *path_gen_locked(struct psession *s, struct http_req *r)
{
	const char *gid = http_req_param(r, "g");
	struct pgen *g = party_hex_id_ok(gid) ? find_gen_locked(s, gid) : NULL;
	if (!g)
		http_reply_problem_status(r, ERR_NOT_FOUND, 404,
					  "no such generation in this session (finished ones are kept only briefly)",
					  "g");
	return g;
}

/* ---- create ---- */

static int refuse(struct http_req *r, int code, unsigned status, const char *field, const char *detail)
{
	LOG_WARN("party.generation_refused", LOG_S("reason", err_slug(code)), LOG_I("status", status),
		 LOG_S("detail", detail), LOG_S("field", field ? field : ""));
	http_reply_problem_status(r, code, status, detail, field);
	return code;
}

int party_gen_create(struct http_req *r, void *ctx)
{
	struct party_ctx *c = ctx;
	const char *id = NULL, *ck = NULL;
	uint64_t slots = 0, max_tokens = 0, seed = 0;
	double temp = 0, top_p = 0;
	int64_t top_k = 0;
	bool has_seed = false;
	json_t *doc = NULL;
	const struct jspec_field spec[] = {
		JSPEC_STR("id", true, PARTY_ID_HEX, PARTY_ID_HEX, &id),
		JSPEC_STR("client_key", true, 2 * CIO_KEY_BYTES, 2 * CIO_KEY_BYTES, &ck),
		JSPEC_U64("slots", true, 1, MODEL_MAX_SEQ, &slots),
		JSPEC_U64("max_tokens", true, 1, MODEL_MAX_SEQ, &max_tokens),
		JSPEC_DBL("sampling.temperature", false, 0, 1e6, &temp),
		JSPEC_DBL("sampling.top_p", false, 0, 1, &top_p),
		JSPEC_I64("sampling.top_k", false, 0, MODEL_MAX_VOCAB, &top_k),
		JSPEC_U64("sampling.seed", false, 0, 0, &seed, .present = &has_seed),
		JSPEC_END_F,
	};
	struct psession *s = party_path_session(c, r);
	if (!s)
		return ERR_NOT_FOUND;
	struct pgen *g = NULL;
	int rc = http_req_json(r, spec, 0, &doc);
	if (rc != 0)
		goto out;
	char detail[PARTY_DETAIL_MAX + 96];
	const int V = c->share.config.vocab_size;
	g = calloc(1, sizeof *g);
	if (!g) {
		rc = http_reply_problem(r, ERR_NOMEM, NULL, NULL);
		goto out;
	}
	size_t got = 0;
	if (!party_hex_id_ok(id)) {
		rc = refuse(r, ERR_INVALID, 400, "id", "id: 32 lowercase hex digits, fresh for every generation");
		goto out;
	}
	if (sodium_hex2bin(g->client_pk, sizeof g->client_pk, ck, strlen(ck), NULL, &got, NULL) != 0 ||
	    got != CIO_KEY_BYTES) {
		rc = refuse(r, ERR_PARSE, 400, "client_key", "client_key: the client's X25519 public key, 64 hex digits");
		goto out;
	}
	uint8_t shared[crypto_scalarmult_BYTES];
	int low = crypto_scalarmult(shared, c->sk, g->client_pk);
	sodium_memzero(shared, sizeof shared);
	if (low != 0) {
		rc = refuse(r, ERR_INVALID, 400, "client_key", "client_key: a key of low order cannot be sealed to");
		goto out;
	}
	if (temp != 0 && temp < 1e-3) {
		rc = refuse(r, ERR_RANGE, 400, "sampling.temperature",
			    "sampling.temperature: 0 (greedy) or 0.001 to 1000000");
		goto out;
	}
	if (top_k >= V)
		top_k = 0; /* keeps everything: the same as off */
	if (temp > 0 && top_p > 0 && top_p < 1 && top_k == 0) {
		rc = refuse(r, ERR_UNSUPPORTED, 400, "sampling.top_p",
			    "sampling.top_p: needs sampling.top_k (the nucleus of the whole vocabulary would need "
			    "a secure sort); give top_k, or top_p 1");
		goto out;
	}
	snprintf(g->id, sizeof g->id, "%s", id);
	sodium_hex2bin(g->gid, sizeof g->gid, id, PARTY_ID_HEX, NULL, &got, NULL);
	g->slots = (uint32_t)slots;
	g->max_tokens = (uint32_t)max_tokens;
	g->sampling = (struct sampling_req){.temperature = temp, .top_p = top_p, .top_k = top_k,
					    .has_seed = has_seed, .seed = seed};

	pthread_mutex_lock(&c->mu);
	pthread_mutex_lock(&s->mu);
	int code = 0;
	unsigned status = 0;
	const char *field = NULL;
	uint64_t n_in = slots * (uint64_t)V + (s->pad ? slots : 0);
	if (s->state != PS_READY) {
		code = ERR_CONFLICT, status = 409;
		snprintf(detail, sizeof detail, "the session is %s%s%s", party_session_state_name(s->state),
			 s->detail[0] ? ": " : "", s->detail);
	} else if (s->gen) {
		code = ERR_CONFLICT, status = 409;
		snprintf(detail, sizeof detail,
			 "generation %s is still running: a session runs one generation at a time (open more "
			 "sessions for parallel generations)",
			 s->gen->id);
	} else if (find_gen_locked(s, id)) {
		code = ERR_CONFLICT, status = 409, field = "id";
		snprintf(detail, sizeof detail, "id: this generation id was used already; pick a fresh one");
	} else if (s->pad && slots % s->pad) {
		code = ERR_INVALID, status = 400, field = "slots";
		snprintf(detail, sizeof detail, "slots: the session pads prompts to multiples of %u positions",
			 s->pad);
	} else if (slots + max_tokens > (uint64_t)s->n_ctx) {
		code = ERR_RANGE, status = 400, field = "max_tokens";
		snprintf(detail, sizeof detail, "max_tokens: slots + max_tokens must be at most the session's n_ctx, %d",
			 s->n_ctx);
	} else if (n_in + max_tokens > CIO_MAX_VALUES) {
		code = ERR_TOO_LARGE, status = 400, field = "slots";
		snprintf(detail, sizeof detail,
			 "slots: the prompt enters as slots x %d one-hot values%s, plus max_tokens outputs, at "
			 "most %u values",
			 V, s->pad ? " plus slots validity bits" : "", CIO_MAX_VALUES);
	} else if (c->running >= (unsigned)c->set.max_generations || c->stop) {
		code = ERR_UNAVAILABLE, status = 503;
		snprintf(detail, sizeof detail,
			 "this party runs limits.max_generations (%lld) generations: retry later",
			 (long long)c->set.max_generations);
	}
	if (code == 0) {
		g->n_in = (uint32_t)n_in;
		g->n_out = g->max_tokens;
		g->created_ms = party_now_ms();
		g->log = sse_log_new(g->n_out + 16, PARTY_EVENT_BYTES);
		if (!g->log)
			code = ERR_NOMEM, status = 503, snprintf(detail, sizeof detail, "out of memory");
	}
	if (code != 0) {
		pthread_mutex_unlock(&s->mu);
		pthread_mutex_unlock(&c->mu);
		rc = refuse(r, code, status, field, detail);
		goto out;
	}
	c->running++;
	metric_set(c->m_running, (double)c->running);
	g->counted = true;
	g->state = PG_MASKING;
	s->gen = g;
	s->generations++;
	json_t *body = gen_json(s, g);
	g = NULL; /* the session's now */
	pthread_cond_broadcast(&s->cv);
	pthread_mutex_unlock(&s->mu);
	pthread_mutex_unlock(&c->mu);
	LOG_INFO("party.generation_created", LOG_S("generation", id), LOG_I("slots", (long long)slots),
		 LOG_I("max_tokens", (long long)max_tokens), LOG_D("temperature", temp));
	rc = http_reply_json(r, 202, body);
out:
	party_gen_free(g);
	json_decref(doc);
	party_session_put(c, s);
	return rc;
}

/* ---- show ---- */

int party_gen_get(struct http_req *r, void *ctx)
{
	struct party_ctx *c = ctx;
	struct psession *s = party_path_session(c, r);
	if (!s)
		return ERR_NOT_FOUND;
	pthread_mutex_lock(&s->mu);
	struct pgen *g = path_gen_locked(s, r);
	json_t *body = g ? gen_json(s, g) : NULL;
	pthread_mutex_unlock(&s->mu);
	party_session_put(c, s);
	return body ? http_reply_json(r, 200, body) : ERR_NOT_FOUND;
}

/* ---- the client's INPUT ---- */

int party_gen_input(struct http_req *r, void *ctx)
{
	struct party_ctx *c = ctx;
	struct psession *s = party_path_session(c, r);
	if (!s)
		return ERR_NOT_FOUND;
	size_t len = 0;
	const void *body = http_req_body(r, &len);
	const char *ct = http_req_header(r, "Content-Type");
	char detail[PARTY_DETAIL_MAX];
	int rc = ERR_NOT_FOUND;
	uint8_t *copy = NULL;
	pthread_mutex_lock(&s->mu);
	struct pgen *g = path_gen_locked(s, r);
	if (!g)
		goto out;
	if (!ct || strncmp(ct, "application/octet-stream", 24) != 0) {
		rc = http_reply_problem_status(r, ERR_UNSUPPORTED, 415,
					       "the INPUT message is binary: Content-Type application/octet-stream",
					       NULL);
		goto out;
	}
	if (g != s->gen || party_gen_finished(g) || g->input || g->state == PG_RUNNING) {
		snprintf(detail, sizeof detail, "the generation is %s%s", party_gen_state_name(g->state),
			 g->input ? " and has its INPUT already" : "");
		rc = http_reply_problem_status(r, ERR_CONFLICT, 409, detail, NULL);
		goto out;
	}
	size_t want = cio_input_bytes(s->nparties, g->n_in);
	if (len != want) {
		snprintf(detail, sizeof detail,
			 "the INPUT message of this generation is %zu bytes (%u parties, %u input values), got %zu", want,
			 s->nparties, g->n_in, len);
		rc = http_reply_problem_status(r, ERR_INVALID, 400, detail, NULL);
		goto out;
	}
	if (!(copy = malloc(len))) {
		rc = http_reply_problem(r, ERR_NOMEM, NULL, NULL);
		goto out;
	}
	memcpy(copy, body, len);
	g->input = copy;
	g->input_len = len;
	copy = NULL;
	pthread_cond_broadcast(&s->cv);
	rc = http_reply_json(r, 202, json_pack("{s:s, s:s}", "id", g->id, "state", party_gen_state_name(g->state)));
out:
	pthread_mutex_unlock(&s->mu);
	free(copy);
	party_session_put(c, s);
	return rc;
}

/* ---- the event stream ---- */

int party_gen_events(struct http_req *r, void *ctx)
{
	struct party_ctx *c = ctx;
	struct psession *s = party_path_session(c, r);
	if (!s)
		return ERR_NOT_FOUND;
	uint64_t after = 0;
	int rc = ERR_NOT_FOUND;
	const char *last = http_req_header(r, "Last-Event-ID");
	pthread_mutex_lock(&s->mu);
	struct pgen *g = path_gen_locked(s, r);
	if (!g)
		goto out;
	if (last && sse_parse_last_id(last, &after) != 0) {
		rc = http_reply_problem(r, ERR_PARSE, "Last-Event-ID must be a decimal event id", "Last-Event-ID");
		goto out;
	}
	if (after > sse_log_last_id(g->log)) {
		rc = http_reply_problem(r, ERR_RANGE, "Last-Event-ID is beyond the last event", "Last-Event-ID");
		goto out;
	}
	struct http_stream *st;
	if ((rc = sse_reply(r, (unsigned)c->set.heartbeat_ms, &st)) != 0)
		goto out;
	/* The log is the generation's; it lives while s->mu is held, and after attaching
	 * the stream belongs to it. */
	rc = sse_log_attach(g->log, st, after);
	if (rc == ERR_RANGE) {
		json_t *p = err_problem_status(ERR_RANGE, 410, "the events after Last-Event-ID are no longer buffered",
					       "Last-Event-ID", http_req_id(r));
		char *text = p ? json_dumps(p, JSON_COMPACT) : NULL, *ev = NULL;
		size_t n = 0;
		if (text && sse_encode(0, "error", text, strlen(text), &ev, &n) == 0)
			http_stream_write(st, ev, n);
		free(ev);
		free(text);
		json_decref(p);
		http_stream_close(st);
	}
	rc = 0;
out:
	pthread_mutex_unlock(&s->mu);
	party_session_put(c, s);
	return rc;
}

/* ---- cancel ---- */

int party_gen_cancel(struct http_req *r, void *ctx)
{
	struct party_ctx *c = ctx;
	struct psession *s = party_path_session(c, r);
	if (!s)
		return ERR_NOT_FOUND;
	int rc = ERR_NOT_FOUND;
	char detail[PARTY_DETAIL_MAX];
	pthread_mutex_lock(&s->mu);
	struct pgen *g = path_gen_locked(s, r);
	if (!g)
		goto out;
	if (party_gen_finished(g)) {
		snprintf(detail, sizeof detail, "the generation is %s already", party_gen_state_name(g->state));
		rc = http_reply_problem_status(r, ERR_CONFLICT, 409, detail, NULL);
		goto out;
	}
	g->cancel = true;
	pthread_cond_broadcast(&s->cv);
	const struct ident *peer = http_req_peer(r);
	LOG_INFO("party.generation_cancel", LOG_S("generation", g->id), LOG_S("by", peer ? peer->cn : "-"),
		 LOG_S("detail", "ends at the next token boundary at every party"));
	rc = http_reply_json(r, 202, json_pack("{s:s, s:s}", "id", g->id, "state", party_gen_state_name(g->state)));
out:
	pthread_mutex_unlock(&s->mu);
	party_session_put(c, s);
	return rc;
}
