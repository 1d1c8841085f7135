/* gclient: one generation through a gateway, the client's side (see gclient.h). The
 * first error decides the outcome and its message; later ones (the cancel that follows
 * a refusal) do not overwrite it. */
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include <sodium.h>

#include "clientio/clientio.h"
#include "err/err.h"
#include "gclient/gclient.h"
#include "httpc/httpc.h"
#include "model/model.h"
#include "model/tok.h"
#include "registry/registry.h"
#include "sse/sse.h"

#define RESUMES 5

struct run {
	const struct gcl_config *cfg;
	const struct gcl_request *req;
	const struct gcl_callbacks *cb;
	struct gcl_result *res;
	struct httpc *h;  /* requests */
	struct httpc *hs; /* the event stream (h stays free for INPUT and cancel meanwhile) */
	char auth[GCL_KEY_LEN + 32];
	struct tok *tok;
	int vocab;
	unsigned n;
	uint8_t pk[MPC_MAX_PARTIES][CIO_KEY_BYTES];
	char psid[REG_PARTY_SESSION_HEX + 1];
	char gen_path[160];
	int *ids;
	size_t np;
	uint32_t slots, n_in;
	uint8_t csk[CIO_KEY_BYTES];
	struct cio_client *cl;
	struct sse_parser *p;
	bool input_sent, cancelled;
	bool finished; /* the outcome is decided */
	uint64_t *out;
	int prev;
	double t0;
};

static double now_s(void)
{
	struct timespec ts;
	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (double)ts.tv_sec + (double)ts.tv_nsec * 1e-9;
}

/* Records why (the first reason only) and returns status. */
static enum gcl_status fail(struct run *u, enum gcl_status status, const char *fmt, ...)
	__attribute__((format(printf, 3, 4)));
static enum gcl_status fail(struct run *u, enum gcl_status status, const char *fmt, ...)
{
	if (!u->res->error[0]) {
		va_list ap;
		va_start(ap, fmt);
		vsnprintf(u->res->error, sizeof u->res->error, fmt, ap);
		va_end(ap);
	}
	return status;
}

/* The outcome, once. */
static void end(struct run *u, enum gcl_status status, const char *finish)
{
	if (!u->finished) {
		u->finished = true;
		u->res->status = status;
		u->res->finish = finish;
	}
}

enum gcl_status gcl_config_check(const struct gcl_config *c, char *why, size_t cap)
{
	const char *m = NULL;
	if (!c->gateway || (strncmp(c->gateway, "https://", 8) && strncmp(c->gateway, "http://", 7)))
		m = "the gateway must be an http(s):// URL";
	else if (!strncmp(c->gateway, "https://", 8) && !c->ca)
		m = "a CA certificate is required for https: the deployment's CA";
	else if (!c->session || !reg_id_ok(c->session, "ses_"))
		m = "a session id is ses_ and 16 hex digits";
	else if (!c->key || strlen(c->key) != GCL_KEY_LEN || strncmp(c->key, GCL_KEY_PREFIX, sizeof GCL_KEY_PREFIX - 1))
		m = "the API key is not a Mimir API key (mimir_sk_..., 69 characters)";
	else if (!c->tokenizer)
		m = "no tokenizer";
	if (m)
		snprintf(why, cap, "%s", m);
	return m ? GCL_USAGE : GCL_OK;
}

/* ---- talking to the gateway ---- */

static enum gcl_status status_of(long status)
{
	switch (status) {
	case 400: case 413: case 415: return GCL_INVALID;
	case 401: case 403: return GCL_AUTH;
	case 404: return GCL_NOT_FOUND;
	case 409: return GCL_CONFLICT;
	case 429: return GCL_LIMITED;
	default: return status >= 500 ? GCL_SERVER : GCL_FAIL;
	}
}

/* A refusal of the gateway (problem+json): its status, with title and detail as why. */
static enum gcl_status refused(struct run *u, const char *what, const struct httpc_resp *r)
{
	json_t *p = json_loadb(r->body, r->len, 0, NULL);
	const char *title = json_string_value(json_object_get(p, "title"));
	const char *detail = json_string_value(json_object_get(p, "detail"));
	const char *field = json_string_value(json_object_get(p, "field"));
	u->res->http_status = r->status;
	const char *hint = r->status == 401   ? " (give a valid API key)"
			   : r->status == 403 ? " (the API key is not valid for this session)"
					      : "";
	fail(u, status_of(r->status), "%s: %ld %s: %s%s%s%s%s%s%s", what, r->status, title ? title : "error",
	     detail ? detail : "(no detail)", field ? " [field: " : "", field ? field : "", field ? "]" : "",
	     r->request_id[0] ? " (request " : "", r->request_id, r->request_id[0] ? ")" : "");
	if (*hint) {
		size_t l = strlen(u->res->error);
		snprintf(u->res->error + l, sizeof u->res->error - l, "%s", hint);
	}
	json_decref(p);
	return status_of(r->status);
}

static enum gcl_status call(struct run *u, const char *what, const char *method, const char *path,
			    const char *ctype, const void *body, size_t len, long want, struct httpc_resp *resp)
{
	const char *hdrs[] = {u->auth, "Accept: application/json", NULL};
	int rc = httpc_request(u->h, method, path, hdrs, ctype, body, len, resp);
	if (rc != 0)
		return fail(u, GCL_UNREACHABLE, "%s: no answer from the gateway at %s: %s%s", what, u->cfg->gateway,
			    resp->error, rc == ERR_TLS ? " (the gateway's certificate must chain to the CA given)" : "");
	if (resp->status != want)
		return refused(u, what, resp);
	return GCL_OK;
}

static int open_clients(struct run *u)
{
	struct httpc_opts ho = {
		.base_url = u->cfg->gateway,
		.ca_file = !strncmp(u->cfg->gateway, "https://", 8) ? u->cfg->ca : NULL,
		.expect_role = IDENT_ROLE_GATEWAY,
		.timeout_ms = (u->cfg->timeout_s > 0 ? u->cfg->timeout_s : 30) * 1000,
		.retries = 1,
		.max_response = 4u << 20,
	};
	snprintf(u->auth, sizeof u->auth, "Authorization: Bearer %s", u->cfg->key);
	if (httpc_new(&u->h, &ho) != 0 || httpc_new(&u->hs, &ho) != 0)
		return fail(u, GCL_FAIL, "cannot set up an HTTP client for %s", u->cfg->gateway);
	return GCL_OK;
}

static enum gcl_status get_session(struct run *u, json_t **out)
{
	char path[64];
	struct httpc_resp r;
	snprintf(path, sizeof path, "/v1/sessions/%s", u->cfg->session);
	enum gcl_status st = call(u, "reading the session", "GET", path, NULL, NULL, 0, 200, &r);
	*out = st == GCL_OK ? json_loadb(r.body, r.len, 0, NULL) : NULL;
	httpc_resp_free(&r);
	if (st == GCL_OK && !*out)
		st = fail(u, GCL_FAIL, "the gateway's description of the session is not JSON");
	return st;
}

/* ---- the session ---- */

static enum gcl_status read_session(struct run *u)
{
	json_t *s = NULL;
	enum gcl_status st = get_session(u, &s);
	if (st != GCL_OK)
		return st;
	const char *state = json_string_value(json_object_get(s, "state"));
	json_t *dims = json_object_get(json_object_get(s, "model"), "dims");
	json_int_t vocab = json_integer_value(json_object_get(dims, "vocab_size"));
	json_int_t ctx = json_integer_value(json_object_get(s, "max_context"));
	json_int_t pad = json_integer_value(json_object_get(s, "pad_bucket"));
	json_t *ps = json_object_get(s, "parties");
	size_t n = json_array_size(ps);
	const long tokens = u->req->tokens;
	if (!state || vocab < TOK_MIN_VOCAB || vocab > MODEL_MAX_VOCAB || ctx < 2 || pad < 1 || n < 2 ||
	    n > MPC_MAX_PARTIES) {
		st = fail(u, GCL_FAIL, "the gateway's description of the session is incomplete");
		goto out;
	}
	if (strcmp(state, "ready") && strcmp(state, "active")) {
		const char *reason = json_string_value(json_object_get(s, "reason"));
		st = fail(u, GCL_CONFLICT, "the session is %s%s%s", state, reason && *reason ? ": " : "",
			  reason ? reason : "");
		goto out;
	}
	for (size_t i = 0; i < n; i++) {
		json_t *p = json_array_get(ps, i);
		const char *hex = json_string_value(json_object_get(p, "sealing_key"));
		size_t got = 0;
		if (json_integer_value(json_object_get(p, "index")) != (json_int_t)i || !hex || strlen(hex) != 64 ||
		    sodium_hex2bin(u->pk[i], CIO_KEY_BYTES, hex, 64, NULL, &got, NULL) != 0 || got != CIO_KEY_BYTES) {
			st = fail(u, GCL_FAIL, "the session's party %zu has no usable sealing key", i);
			goto out;
		}
	}
	u->n = u->res->nparties = (unsigned)n;
	u->vocab = (int)vocab;
	char err[256];
	if (tok_load(u->cfg->tokenizer, u->vocab, &u->tok, err, sizeof err) != 0) {
		st = fail(u, GCL_FAIL, "%s (the session's model has a vocabulary of %d)", err, u->vocab);
		goto out;
	}
	size_t plen = u->req->prompt_len;
	if (!(u->ids = malloc(tok_encode_max(plen) * sizeof *u->ids))) {
		st = fail(u, GCL_FAIL, "out of memory");
		goto out;
	}
	if (tok_encode(u->tok, u->req->prompt, plen, true, false, u->ids, tok_encode_max(plen), &u->np) != 0) {
		st = fail(u, GCL_INVALID, "the prompt cannot be tokenized");
		goto out;
	}
	u->res->prompt_tokens = u->np;
	/* Length hiding: the parties see the prompt's bucket, not its length. */
	uint64_t slots = (u->np + (uint64_t)pad - 1) / (uint64_t)pad * (uint64_t)pad;
	if (slots + (uint64_t)tokens > (uint64_t)ctx) {
		st = fail(u, GCL_INVALID,
			  "the prompt (%zu tokens with BOS, %llu positions padded to the session's bucket of %lld) "
			  "plus %ld new tokens exceeds the session's context of %lld",
			  u->np, (unsigned long long)slots, (long long)pad, tokens, (long long)ctx);
		goto out;
	}
	if (slots * (uint64_t)(vocab + 1) + (uint64_t)tokens > CIO_MAX_VALUES) {
		st = fail(u, GCL_INVALID, "the prompt is too long for one generation: %llu positions of %lld one-hot values",
			  (unsigned long long)slots, (long long)vocab);
		goto out;
	}
	u->slots = u->res->slots = (uint32_t)slots;
	u->n_in = (uint32_t)(slots * (uint64_t)vocab + slots);
	if (reg_party_session_id(u->cfg->session, u->psid) != 0)
		st = fail(u, GCL_USAGE, "not a session id: %s", u->cfg->session);
out:
	json_decref(s);
	return st;
}

/* ---- the generation ---- */

static enum gcl_status start(struct run *u, uint8_t cpk[CIO_KEY_BYTES])
{
	char ck[2 * CIO_KEY_BYTES + 1], path[96];
	sodium_bin2hex(ck, sizeof ck, cpk, CIO_KEY_BYTES);
	json_t *smp = json_pack("{s:f, s:i, s:f}", "temperature", u->req->temperature, "top_k", (int)u->req->top_k,
				"top_p", u->req->top_p);
	if (smp && u->req->has_seed)
		json_object_set_new(smp, "seed", json_integer((json_int_t)u->req->seed));
	json_t *b = json_pack("{s:s, s:i, s:i, s:o}", "client_key", ck, "slots", (int)u->slots, "max_tokens",
			      (int)u->req->tokens, "sampling", smp);
	char *body = b ? json_dumps(b, JSON_COMPACT) : NULL;
	json_decref(b);
	if (!body)
		return fail(u, GCL_FAIL, "out of memory");
	snprintf(path, sizeof path, "/v1/sessions/%s/generations", u->cfg->session);
	struct httpc_resp r;
	enum gcl_status st =
		call(u, "starting the generation", "POST", path, "application/json", body, strlen(body), 201, &r);
	free(body);
	json_t *g = st == GCL_OK ? json_loadb(r.body, r.len, 0, NULL) : NULL;
	httpc_resp_free(&r);
	if (st != GCL_OK)
		return st;
	const char *gid = json_string_value(json_object_get(g, "id"));
	size_t got = 0;
	struct cio_client_params cp = {.nparties = u->n, .party_pk = (const uint8_t(*)[CIO_KEY_BYTES])u->pk,
				       .n_in = u->n_in, .n_out = (uint32_t)u->req->tokens};
	if (!gid || strlen(gid) != 2 * CIO_ID_BYTES ||
	    sodium_hex2bin(cp.generation, CIO_ID_BYTES, gid, strlen(gid), NULL, &got, NULL) != 0 || got != CIO_ID_BYTES) {
		json_decref(g);
		return fail(u, GCL_FAIL, "the gateway started a generation without a usable id");
	}
	snprintf(u->res->generation, sizeof u->res->generation, "%s", gid);
	json_decref(g);
	snprintf(u->gen_path, sizeof u->gen_path, "/v1/sessions/%s/generations/%s", u->cfg->session,
		 u->res->generation);
	sodium_hex2bin(cp.session, CIO_ID_BYTES, u->psid, REG_PARTY_SESSION_HEX, NULL, &got, NULL);
	memcpy(cp.client_sk, u->csk, CIO_KEY_BYTES);
	int rc = cio_client_new(&cp, &u->cl);
	sodium_memzero(&cp, sizeof cp);
	if (rc != 0)
		return fail(u, GCL_FAIL, "cannot set up the client protocol: %s", err_title(rc));
	return GCL_OK;
}

static void cancel(struct run *u)
{
	if (u->cancelled || !u->gen_path[0])
		return;
	u->cancelled = true;
	char path[200];
	struct httpc_resp r;
	snprintf(path, sizeof path, "%s/cancel", u->gen_path);
	const char *hdrs[] = {u->auth, NULL};
	httpc_request(u->h, "POST", path, hdrs, NULL, NULL, 0, &r); /* best effort: the rest is unwanted */
	httpc_resp_free(&r);
}

/* Feeds every party's part of a masks, receipt or token event to the client protocol. */
static bool feed_parts(struct run *u, json_t *ev, const char *what, size_t want_len)
{
	json_t *parts = json_object_get(ev, "parts");
	if (json_array_size(parts) != u->n) {
		end(u, fail(u, GCL_FAIL, "a %s event without one part per party", what), "error");
		return false;
	}
	uint8_t *bin = malloc(want_len + 1);
	bool ok = bin != NULL, seen[MPC_MAX_PARTIES] = {false};
	for (size_t i = 0; ok && i < u->n; i++) {
		json_t *p = json_array_get(parts, i);
		json_int_t k = json_integer_value(json_object_get(p, "party"));
		const char *m = json_string_value(json_object_get(p, "message"));
		size_t len = 0;
		if (k < 0 || k >= (json_int_t)u->n || seen[k] || !m ||
		    sodium_base642bin(bin, want_len + 1, m, strlen(m), NULL, &len, NULL, sodium_base64_VARIANT_ORIGINAL) !=
			    0 ||
		    len != want_len) {
			end(u, fail(u, GCL_FAIL, "a malformed part in a %s event", what), "error");
			ok = false;
			break;
		}
		seen[k] = true;
		int rc = cio_client_feed(u->cl, bin, len);
		if (rc != 0) {
			if (!strcmp(what, "masks"))
				fail(u, GCL_INTEGRITY,
				     "party %lld's MASKS do not verify (%s): it does not seal with the key the session "
				     "lists for it, or the message was altered",
				     (long long)k, cio_client_why(u->cl));
			else
				fail(u, GCL_INTEGRITY, "party %lld's %s was refused (%s)%s", (long long)k, what,
				     cio_client_why(u->cl),
				     rc == ERR_MAC_CHECK ? ": a party lied about its part; nothing unverified was given" : "");
			end(u, GCL_INTEGRITY, "error");
			ok = false;
		}
	}
	free(bin);
	if (!bin)
		end(u, fail(u, GCL_FAIL, "out of memory"), "error");
	return ok;
}

/* Every masks message arrived: the prompt leaves as the INPUT message. */
static void send_input(struct run *u)
{
	const size_t V = (size_t)u->vocab, pad = u->slots - u->np;
	uint64_t *x = calloc(u->n_in, sizeof *x);
	uint8_t *msg = NULL;
	size_t len = 0;
	if (!x) {
		end(u, fail(u, GCL_FAIL, "out of memory"), "error");
		return;
	}
	/* One one-hot row per position, left-padded with BOS rows, then the validity bits. */
	for (size_t i = 0; i < u->slots; i++) {
		int t = i < pad ? TOK_BOS : u->ids[i - pad];
		x[i * V + (size_t)t] = 1;
		x[(size_t)u->slots * V + i] = i >= pad;
	}
	int rc = cio_client_input(u->cl, x, u->n_in, &msg, &len);
	sodium_memzero(x, (size_t)u->n_in * sizeof *x);
	free(x);
	if (rc != 0) {
		end(u, fail(u, GCL_FAIL, "cannot make the INPUT message: %s", cio_client_why(u->cl)), "error");
		return;
	}
	char path[200];
	struct httpc_resp r;
	snprintf(path, sizeof path, "%s/input", u->gen_path);
	enum gcl_status st = call(u, "sending the prompt", "POST", path, "application/octet-stream", msg, len, 202, &r);
	httpc_resp_free(&r);
	free(msg);
	if (st != GCL_OK)
		end(u, st, "error");
	u->input_sent = true;
}

/* The tokens the client protocol has verified, handed out as they come. */
static void take_tokens(struct run *u)
{
	size_t n = 0, cap = (size_t)u->req->tokens - u->res->made;
	if (cio_client_take(u->cl, u->out + u->res->made, cap, &n) != 0)
		return;
	for (size_t i = 0; i < n && !u->finished; i++) {
		uint64_t v = u->out[u->res->made];
		if (v >= (uint64_t)u->vocab) {
			end(u, fail(u, GCL_INTEGRITY, "the parties agreed on token %llu, outside the vocabulary",
				    (unsigned long long)v),
			    "error");
			return;
		}
		if (!u->res->made)
			u->res->first_token_s = now_s() - u->t0;
		if (v == TOK_BOS) { /* BOS starts a new text: this one is finished */
			end(u, GCL_OK, "stop");
			return;
		}
		u->res->made++;
		const char *p = "";
		size_t l = 0;
		if (tok_decode(u->tok, u->prev, (int)v, &p, &l) != 0)
			p = "", l = 0;
		u->prev = (int)v;
		if (u->cb->token && u->cb->token(u->cb->arg, (int)v, p, l)) {
			end(u, GCL_OK, "cancelled");
			return;
		}
	}
}

static int on_event(const struct sse_event *ev, void *arg)
{
	struct run *u = arg;
	json_t *j = json_loadb(ev->data, ev->data_len, 0, NULL);
	const char *name = ev->event;
	if (!j) {
		end(u, fail(u, GCL_FAIL, "the gateway sent a %s event that is not JSON", name), "error");
	} else if (!strcmp(name, "masks")) {
		if (feed_parts(u, j, "masks", cio_masks_bytes(u->n_in, (uint32_t)u->req->tokens)) && !u->input_sent)
			send_input(u);
	} else if (!strcmp(name, "receipt")) {
		feed_parts(u, j, "receipt", cio_receipt_bytes());
	} else if (!strcmp(name, "token")) {
		if (feed_parts(u, j, "token", cio_output_bytes(1)))
			take_tokens(u);
	} else if (!strcmp(name, "done")) {
		take_tokens(u);
		if (!u->finished && u->res->made != (size_t)u->req->tokens)
			end(u,
			    fail(u, GCL_FAIL, "the generation ended after %zu verified tokens of %ld", u->res->made,
				 u->req->tokens),
			    "error");
		end(u, GCL_OK, "length");
	} else if (!strcmp(name, "error")) {
		const char *detail = json_string_value(json_object_get(j, "detail"));
		const char *title = json_string_value(json_object_get(j, "title"));
		json_t *party = json_object_get(j, "party");
		const char *why = detail ? detail : title ? title : "an error";
		char who[40] = "";
		if (json_is_integer(party) && strncmp(why, "party ", 6) != 0)
			snprintf(who, sizeof who, " (party %lld)", (long long)json_integer_value(party));
		fail(u, GCL_GENERATION, "the generation ended after %zu token%s: %s%s", u->res->made,
		     u->res->made == 1 ? "" : "s", why, who);
		end(u, GCL_GENERATION, "error");
	} /* generation and later kinds of events: nothing to do */
	json_decref(j);
	return u->finished;
}

static int on_chunk(const char *data, size_t len, void *arg)
{
	struct run *u = arg;
	int rc = sse_parser_feed(u->p, data, len, on_event, u);
	if (rc < 0)
		end(u, fail(u, GCL_FAIL, "the gateway's event stream is malformed (%s)", err_title(rc)), "error");
	if (!u->finished && u->cb->stop && u->cb->stop(u->cb->arg))
		end(u, GCL_OK, "cancelled");
	return u->finished;
}

static void notice(struct run *u, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
static void notice(struct run *u, const char *fmt, ...)
{
	if (!u->cb->notice)
		return;
	char m[512];
	va_list ap;
	va_start(ap, fmt);
	vsnprintf(m, sizeof m, fmt, ap);
	va_end(ap);
	u->cb->notice(u->cb->arg, m);
}

/* Follows the event stream to the end, resuming it with Last-Event-ID when it breaks. */
static void follow(struct run *u)
{
	char path[200], last[64] = "";
	snprintf(path, sizeof path, "%s/events", u->gen_path);
	size_t max_event =
		(size_t)u->n * (cio_masks_bytes(u->n_in, (uint32_t)u->req->tokens) / 3 * 4 + 256) + 65536;
	for (int attempt = 0; !u->finished; attempt++) {
		const char *id = u->p ? sse_parser_last_id(u->p) : "";
		if (id[0])
			snprintf(last, sizeof last, "Last-Event-ID: %s", id);
		const char *hdrs[] = {u->auth, "Accept: text/event-stream", last[0] ? last : NULL, NULL};
		sse_parser_free(u->p); /* a partial event is not carried over */
		if (!(u->p = sse_parser_new(max_event))) {
			end(u, fail(u, GCL_FAIL, "out of memory"), "error");
			return;
		}
		struct httpc_resp r;
		int rc = httpc_stream(u->hs, "GET", path, hdrs, on_chunk, u, &r);
		if (!u->finished && rc == 0 && r.status != 200) {
			end(u, refused(u, "reading the event stream", &r), "error");
		} else if (!u->finished) {
			if (attempt >= RESUMES) {
				end(u,
				    fail(u, GCL_UNREACHABLE, "the event stream broke %d times (last: %s)", RESUMES + 1,
					 rc ? r.error : "it ended early"),
				    "error");
			} else if (u->cb->stop && u->cb->stop(u->cb->arg)) {
				end(u, GCL_OK, "cancelled");
			} else {
				notice(u, "the event stream broke (%s); resuming%s%s", rc ? r.error : "it ended early",
				       last[0] ? " after event " : "", last[0] ? last + 15 : "");
				sleep(1);
			}
		}
		httpc_resp_free(&r);
	}
}

enum gcl_status gcl_session(const struct gcl_config *cfg, json_t **out, struct gcl_result *res)
{
	static const struct gcl_request none = {.prompt = "", .tokens = 1};
	static const struct gcl_callbacks nocb = {0};
	memset(res, 0, sizeof *res);
	res->finish = "error";
	*out = NULL;
	struct run u = {.cfg = cfg, .req = &none, .cb = &nocb, .res = res};
	enum gcl_status st = gcl_config_check(cfg, res->error, sizeof res->error);
	if (st == GCL_OK)
		st = open_clients(&u);
	if (st == GCL_OK)
		st = get_session(&u, out);
	httpc_free(u.h);
	httpc_free(u.hs);
	sodium_memzero(u.auth, sizeof u.auth);
	res->status = st;
	return st;
}

enum gcl_status gcl_generate(const struct gcl_config *cfg, const struct gcl_request *req,
			     const struct gcl_callbacks *cb, struct gcl_result *res)
{
	static const struct gcl_callbacks nocb = {0};
	memset(res, 0, sizeof *res);
	res->finish = "error";
	struct run u = {.cfg = cfg, .req = req, .cb = cb ? cb : &nocb, .res = res};
	uint8_t cpk[CIO_KEY_BYTES];
	enum gcl_status st = gcl_config_check(cfg, res->error, sizeof res->error);
	if (st != GCL_OK)
		goto out;
	if (req->tokens < 1 || req->tokens > MODEL_MAX_SEQ || req->top_k < 0 || req->top_k > MODEL_MAX_VOCAB ||
	    !(req->temperature >= 0) || !(req->top_p >= 0 && req->top_p <= 1) || (!req->prompt && req->prompt_len)) {
		st = fail(&u, GCL_USAGE, "bad generation parameters");
		goto out;
	}
	if (req->top_p > 0 && req->top_p < 1 && !req->top_k) {
		st = fail(&u, GCL_USAGE, "top_p needs top_k (the parties sample the nucleus among the top k)");
		goto out;
	}
	if ((st = open_clients(&u)) != GCL_OK || (st = read_session(&u)) != GCL_OK)
		goto out;
	if (!(u.out = calloc((size_t)req->tokens, sizeof *u.out))) {
		st = fail(&u, GCL_FAIL, "out of memory");
		goto out;
	}
	if (cio_keypair(cpk, u.csk) != 0) {
		st = fail(&u, GCL_FAIL, "cannot make a key pair");
		goto out;
	}
	u.t0 = now_s();
	if ((st = start(&u, cpk)) != GCL_OK)
		goto out;
	u.prev = u.ids[u.np - 1];
	if (cb && cb->started && cb->started(cb->arg, res->generation, u.np))
		end(&u, GCL_OK, "cancelled");
	else
		follow(&u);
	st = res->status;
	if (strcmp(res->finish, "length") && st != GCL_GENERATION)
		cancel(&u); /* what is left would be computed for nobody */
	res->seconds = now_s() - u.t0;
out:
	res->status = st;
	if (st == GCL_OK && !u.finished)
		res->finish = "length";
	cio_client_free(u.cl);
	sse_parser_free(u.p);
	tok_free(u.tok);
	httpc_free(u.h);
	httpc_free(u.hs);
	if (u.out)
		sodium_memzero(u.out, (size_t)req->tokens * sizeof *u.out);
	free(u.out);
	if (u.ids)
		sodium_memzero(u.ids, u.np * sizeof *u.ids);
	free(u.ids);
	sodium_memzero(u.csk, sizeof u.csk);
	sodium_memzero(u.auth, sizeof u.auth);
	return st;
}
