/* mimir-gateway client API, generations: a client with an API key starts a generation
 * in its session, reads the event stream (the parties' sealed parts, combined per
 * message by relay.c), posts its INPUT, and may cancel or reattach with Last-Event-ID.
 *
 * Starting checks what the gateway can before any party computes: the key, the body,
 * the session in the registry (ready or active, not expired; every party with an https
 * endpoint and a pinned certificate), the shape against the session (slots a multiple
 * of pad_bucket, slots + max_tokens within max_context, the INPUT within the clientio
 * bound). The registry's session moves ready -> active at its first generation. The
 * answer is the event stream itself, or, with Accept: application/json, 201 with the
 * generation and its events URL (for clients that cannot stream a POST). A generation
 * belongs to the API key that started it: the other routes answer 404 to any other
 * key, even one of the same session. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include <sodium.h>

#include "err/err.h"
#include "gateway.h"
#include "log/log.h"
#include "metrics/metrics.h"
#include "model/model.h"
#include "sse/sse.h"

static int reply_fail(struct http_req *r, const struct gw_fail *f)
{
	if (f->status == 503)
		http_reply_header(r, "Retry-After", "1");
	return http_reply_problem_status(r, f->code, f->status, f->detail, f->field[0] ? f->field : NULL);
}

static bool media_is(const char *ct, const char *want)
{
	size_t wl = strlen(want), l = ct ? strcspn(ct, ";") : 0;
	while (l && ct[l - 1] == ' ')
		l--;
	return ct && l == wl && strncasecmp(ct, want, wl) == 0;
}

static bool gen_id_ok(const char *s)
{
	if (!s || strlen(s) != GW_GEN_HEX)
		return false;
	for (size_t i = 0; i < GW_GEN_HEX; i++)
		if (!((s[i] >= '0' && s[i] <= '9') || (s[i] >= 'a' && s[i] <= 'f')))
			return false;
	return true;
}

/* The common start of every generation route: CORS, no caching (an event stream says
 * no-cache itself), the session id, the API key for it. Returns 0 or the error after
 * replying. */
static int begin(struct http_req *r, struct gw_ctx *c, struct gw_client *who, bool may_stream)
{
	gw_cors_headers(r, c, GW_API_CLIENT);
	if (!may_stream)
		http_reply_header(r, "Cache-Control", "no-store");
	const char *id = http_req_param(r, "id");
	if (!gw_id_ok(id, "ses_"))
		return http_reply_problem_status(r, ERR_NOT_FOUND, 404, "no session has this id", "id"), ERR_NOT_FOUND;
	return gw_client_auth(r, c, id, who);
}

/* The generation of the path, with a reference, or NULL after a 404. */
static struct gw_gen *path_gen(struct http_req *r, struct gw_ctx *c, const struct gw_client *who)
{
	const char *gid = http_req_param(r, "g");
	struct gw_gen *g = gen_id_ok(gid) ? gw_gen_find(c->relay, http_req_param(r, "id"), gid, who->key_id) : NULL;
	if (!g)
		http_reply_problem_status(r, ERR_NOT_FOUND, 404,
					  "no generation with this id for this API key (finished ones are kept "
					  "only for stream.keep_ms)",
					  "g");
	return g;
}

/* ---- the registry's session, checked for a generation ---- */

static int bad_registry(struct http_req *r, const char *detail)
{
	LOG_WARN("gateway.session_unusable", LOG_S("detail", detail));
	return http_reply_problem(r, ERR_UPSTREAM, detail, NULL), ERR_UPSTREAM;
}

/* The parties of the registry's session s into sp (share order). Replies on failure. */
static int parties_of(struct http_req *r, json_t *s, struct gw_gen_spec *sp)
{
	json_t *ps = json_object_get(s, "parties");
	size_t n = json_array_size(ps);
	char d[400];
	if (n < 2 || n > MPC_MAX_PARTIES)
		return bad_registry(r, "the registry's session does not list 2 to 16 parties");
	for (size_t i = 0; i < n; i++) {
		json_t *p = json_array_get(ps, i);
		const char *identity = json_string_value(json_object_get(p, "identity"));
		const char *url = json_string_value(json_object_get(p, "endpoint"));
		const char *fp = json_string_value(json_object_get(p, "cert_fingerprint"));
		const char *status = json_string_value(json_object_get(p, "status"));
		json_t *ix = json_object_get(p, "index");
		struct gw_party_ep *e = &sp->ep[i];
		size_t got = 0;
		if (!identity || !json_is_integer(ix) || json_integer_value(ix) != (json_int_t)i)
			return bad_registry(r, "the registry's session lists its parties out of share order");
		snprintf(e->identity, sizeof e->identity, "%s", identity);
		e->index = (unsigned)i;
		if (status && strcmp(status, "active") != 0) {
			snprintf(d, sizeof d, "party %zu (%.64s) is %.16s: the session cannot run until an administrator "
				 "reactivates it", i, identity, status);
			return http_reply_problem(r, ERR_CONFLICT, d, NULL), ERR_CONFLICT;
		}
		if (!url || strncmp(url, "https://", 8) != 0 || strlen(url) >= sizeof e->url) {
			snprintf(d, sizeof d, "party %zu (%.64s) has no https endpoint in the registry", i, identity);
			return bad_registry(r, d);
		}
		if (!fp || strlen(fp) != 64 ||
		    sodium_hex2bin(e->fp, sizeof e->fp, fp, 64, NULL, &got, NULL) != 0 || got != 32) {
			snprintf(d, sizeof d,
				 "party %zu (%.64s) has no pinned certificate in the registry; the gateway talks only to "
				 "pinned parties (an administrator sets cert_fingerprint)",
				 i, identity);
			return bad_registry(r, d);
		}
		snprintf(e->url, sizeof e->url, "%s", url);
	}
	sp->nparties = (unsigned)n;
	return 0;
}

/* The registry's session id, checked: usable for a generation of the requested shape.
 * Fills sp (parties, n_in); *was_ready says it still has to become active. */
static int check_session(struct http_req *r, struct gw_ctx *c, const char *id, struct gw_gen_spec *sp,
			 bool *was_ready)
{
	char path[64], d[400];
	snprintf(path, sizeof path, "/v1/sessions/%s", id);
	struct httpc_resp resp;
	int rc = gw_upstream_call(c->up, r, "GET", path, NULL, NULL, 0, &resp);
	if (rc != 0 || resp.status != 200) {
		if (rc != 0)
			gw_upstream_fail(r, c, rc, &resp);
		else
			gw_relay(r, c, &resp, false);
		httpc_resp_free(&resp);
		return rc ? rc : ERR_UPSTREAM;
	}
	json_t *s = json_loadb(resp.body, resp.len, 0, NULL);
	httpc_resp_free(&resp);
	const char *state = json_string_value(json_object_get(s, "state"));
	const char *reason = json_string_value(json_object_get(s, "reason"));
	const char *mid = json_string_value(json_object_get(s, "model"));
	json_int_t max_ctx = json_integer_value(json_object_get(s, "max_context"));
	json_int_t pad = json_integer_value(json_object_get(s, "pad_bucket"));
	json_t *m = NULL;
	rc = 0;
	if (!state || !mid || !gw_id_ok(mid, "mdl_") || max_ctx < 1 || pad < 1) {
		rc = bad_registry(r, "the session service's answer lacks the session's state, model or shape");
		goto out;
	}
	if (json_is_true(json_object_get(s, "expired")) || (strcmp(state, "ready") && strcmp(state, "active"))) {
		bool expired = json_is_true(json_object_get(s, "expired"));
		snprintf(d, sizeof d, "the session is %s%s%.200s%s", expired ? "expired" : state,
			 reason && reason[0] ? " (" : "", reason ? reason : "", reason && reason[0] ? ")" : "");
		if (!expired && !strcmp(state, "created"))
			snprintf(d, sizeof d, "the session is not ready: its parties have not all initialised it yet");
		http_reply_problem(r, ERR_CONFLICT, d, NULL);
		rc = ERR_CONFLICT;
		goto out;
	}
	*was_ready = !strcmp(state, "ready");
	if (!(m = gw_model_facts(r, c, mid))) {
		rc = ERR_UPSTREAM;
		goto out;
	}
	json_int_t vocab = json_integer_value(json_object_get(json_object_get(m, "dims"), "vocab_size"));
	if (vocab < 1 || vocab > MODEL_MAX_VOCAB) {
		rc = bad_registry(r, "the registry's model has no usable vocabulary size");
		goto out;
	}
	const char *field = NULL;
	uint64_t n_in = (uint64_t)sp->slots * (uint64_t)vocab + sp->slots;
	if (sp->slots % (uint64_t)pad) {
		field = "slots";
		snprintf(d, sizeof d, "slots: the session pads prompts to multiples of %lld positions (pad_bucket)",
			 (long long)pad);
	} else if ((uint64_t)sp->slots + sp->max_tokens > (uint64_t)max_ctx) {
		field = "max_tokens";
		snprintf(d, sizeof d, "max_tokens: slots + max_tokens must be at most the session's max_context, %lld",
			 (long long)max_ctx);
	} else if (n_in + sp->max_tokens > CIO_MAX_VALUES) {
		field = "slots";
		snprintf(d, sizeof d,
			 "slots: the prompt enters as slots x %lld one-hot values and slots validity bits, plus "
			 "max_tokens outputs: at most %u values",
			 (long long)vocab, CIO_MAX_VALUES);
	}
	if (field) {
		http_reply_problem(r, ERR_RANGE, d, field);
		rc = ERR_RANGE;
		goto out;
	}
	sp->n_in = (uint32_t)n_in;
	rc = parties_of(r, s, sp);
out:
	json_decref(m);
	json_decref(s);
	return rc;
}

/* ready -> active at the first generation, through the session service. A failure is
 * logged, not the client's: the generation runs already. */
static void activate(struct http_req *r, struct gw_ctx *c, const char *id, const struct gw_client *who)
{
	char path[96], actor[40];
	static const char body[] = "{\"to\": \"active\", \"from\": \"ready\"}";
	snprintf(path, sizeof path, "/v1/sessions/%s/transition", id);
	snprintf(actor, sizeof actor, "apikey:%s", who->key_id);
	struct httpc_resp resp;
	int rc = gw_upstream_call(c->up, r, "POST", path, actor, body, sizeof body - 1, &resp);
	if (rc != 0 || (resp.status != 200 && resp.status != 409)) /* 409: someone was first */
		LOG_WARN("gateway.activate_failed", LOG_S("session", id), LOG_I("status", resp.status),
			 LOG_S("error", rc ? resp.error : resp.body));
	httpc_resp_free(&resp);
}

/* ---- POST /v1/sessions/{id}/generations ---- */

static bool wants_json(struct http_req *r)
{
	const char *a = http_req_header(r, "Accept");
	return a && strstr(a, "application/json") && !strstr(a, "text/event-stream");
}

int gw_gen_create(struct http_req *r, void *ctx)
{
	struct gw_ctx *c = ctx;
	struct gw_client who;
	int rc = begin(r, c, &who, true);
	if (rc != 0)
		return rc;
	const char *id = http_req_param(r, "id");
	if (!media_is(http_req_header(r, "Content-Type"), "application/json"))
		return http_reply_problem(r, ERR_UNSUPPORTED, "the body must be application/json", "Content-Type");
	const char *ck = NULL;
	uint64_t slots = 0, max_tokens = 0, seed = 0;
	double temperature = 0, top_p = 0;
	int64_t top_k = 0;
	json_t *doc = NULL;
	const struct jspec_field spec[] = {
		JSPEC_STR("client_key", true, 2 * CIO_KEY_BYTES, 2 * CIO_KEY_BYTES, &ck),
		JSPEC_U64("slots", true, 1, CIO_MAX_VALUES, &slots),
		JSPEC_U64("max_tokens", true, 1, CIO_MAX_VALUES, &max_tokens),
		JSPEC_DBL("sampling.temperature", false, 0, 1e6, &temperature),
		JSPEC_I64("sampling.top_k", false, 0, MODEL_MAX_VOCAB, &top_k),
		JSPEC_DBL("sampling.top_p", false, 0, 1, &top_p),
		JSPEC_U64("sampling.seed", false, 0, 0, &seed),
		JSPEC_END_F,
	};
	if ((rc = http_req_json(r, spec, 0, &doc)) != 0)
		return rc;
	struct gw_gen_spec sp = {.session = id, .key_id = who.key_id, .request_id = http_req_id(r),
				 .slots = (uint32_t)slots, .max_tokens = (uint32_t)max_tokens,
				 .sampling = json_object_get(doc, "sampling")};
	size_t got = 0;
	struct gw_gen *g = NULL;
	bool was_ready = false;
	if (sodium_hex2bin(sp.client_pk, sizeof sp.client_pk, ck, strlen(ck), NULL, &got, NULL) != 0 ||
	    got != CIO_KEY_BYTES) {
		rc = http_reply_problem(r, ERR_PARSE, "client_key: the client's ephemeral X25519 public key, 64 hex digits",
					"client_key");
		goto out;
	}
	if ((rc = check_session(r, c, id, &sp, &was_ready)) != 0)
		goto out;
	struct gw_fail f;
	if ((rc = gw_gen_start(c->relay, &sp, &g, &f)) != 0) {
		reply_fail(r, &f);
		goto out;
	}
	if (was_ready)
		activate(r, c, id, &who);
	char loc[160];
	snprintf(loc, sizeof loc, "/v1/sessions/%s/generations/%s", id, gw_gen_id(g));
	http_reply_header(r, "Location", loc);
	if (wants_json(r)) {
		http_reply_header(r, "Cache-Control", "no-store");
		rc = http_reply_json(r, 201, gw_gen_json(g));
		goto out;
	}
	struct http_stream *st = NULL;
	rc = http_reply_stream(r, SSE_CONTENT_TYPE, (unsigned)c->set.stream_heartbeat_ms, SSE_HEARTBEAT,
			       gw_gen_stream_buffer(g), &st);
	if (rc == 0 && (rc = gw_gen_attach(g, st, 0)) != 0)
		http_stream_close(st);
	if (rc != 0) /* nobody will read it */
		gw_gen_cancel(g, &f);
out:
	gw_gen_put(g);
	json_decref(doc);
	return rc;
}

/* ---- GET /v1/sessions/{id}/generations/{g} ---- */

int gw_gen_get(struct http_req *r, void *ctx)
{
	struct gw_ctx *c = ctx;
	struct gw_client who;
	int rc = begin(r, c, &who, false);
	if (rc != 0)
		return rc;
	struct gw_gen *g = path_gen(r, c, &who);
	if (!g)
		return ERR_NOT_FOUND;
	rc = http_reply_json(r, 200, gw_gen_json(g));
	gw_gen_put(g);
	return rc;
}

/* ---- GET .../events ---- */

int gw_gen_events(struct http_req *r, void *ctx)
{
	struct gw_ctx *c = ctx;
	struct gw_client who;
	int rc = begin(r, c, &who, true);
	if (rc != 0)
		return rc;
	uint64_t after = 0;
	const char *last = http_req_header(r, "Last-Event-ID");
	if (last && sse_parse_last_id(last, &after) != 0)
		return http_reply_problem(r, ERR_PARSE, "Last-Event-ID must be a decimal event id", "Last-Event-ID");
	struct gw_gen *g = path_gen(r, c, &who);
	if (!g)
		return ERR_NOT_FOUND;
	if (after > gw_gen_last_event(g)) {
		rc = http_reply_problem(r, ERR_RANGE, "Last-Event-ID is beyond the last event of this generation",
					"Last-Event-ID");
		goto out;
	}
	struct http_stream *st = NULL;
	if ((rc = http_reply_stream(r, SSE_CONTENT_TYPE, (unsigned)c->set.stream_heartbeat_ms, SSE_HEARTBEAT,
				    gw_gen_stream_buffer(g), &st)) != 0)
		goto out;
	if (last)
		metric_inc(c->rm.resumes);
	rc = gw_gen_attach(g, st, after);
	if (rc == ERR_NOMEM) {
		http_stream_close(st);
	} else if (rc != 0) {
		/* What the client missed has left the buffer: it must start again. */
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
	gw_gen_put(g);
	return rc;
}

/* ---- POST .../input ---- */

int gw_gen_post_input(struct http_req *r, void *ctx)
{
	struct gw_ctx *c = ctx;
	struct gw_client who;
	int rc = begin(r, c, &who, false);
	if (rc != 0)
		return rc;
	if (!media_is(http_req_header(r, "Content-Type"), "application/octet-stream"))
		return http_reply_problem(r, ERR_UNSUPPORTED,
					  "the INPUT message is binary: Content-Type application/octet-stream",
					  "Content-Type");
	struct gw_gen *g = path_gen(r, c, &who);
	if (!g)
		return ERR_NOT_FOUND;
	size_t len = 0;
	const void *body = http_req_body(r, &len);
	struct gw_fail f;
	if ((rc = gw_gen_input(g, body, len, &f)) != 0)
		reply_fail(r, &f);
	else
		rc = http_reply_json(r, 202, gw_gen_json(g));
	gw_gen_put(g);
	return rc;
}

/* ---- POST .../cancel ---- */

int gw_gen_post_cancel(struct http_req *r, void *ctx)
{
	struct gw_ctx *c = ctx;
	struct gw_client who;
	int rc = begin(r, c, &who, false);
	if (rc != 0)
		return rc;
	struct gw_gen *g = path_gen(r, c, &who);
	if (!g)
		return ERR_NOT_FOUND;
	struct gw_fail f;
	if ((rc = gw_gen_cancel(g, &f)) != 0)
		reply_fail(r, &f);
	else
		rc = http_reply_json(r, 202, gw_gen_json(g));
	gw_gen_put(g);
	return rc;
}
