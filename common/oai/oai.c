/* oai: the OpenAI-compatible API (see oai.h). A handler checks the request, answers
 * later and hands the work to a detached worker thread: the model listing reads each
 * offered session through the gateway with the caller's key; a completion runs one
 * generation and writes it out, as one JSON answer or as OpenAI's stream of
 * "data: {chunk}" lines ending with "data: [DONE]". Text goes out as whole UTF-8
 * characters only, and in a stream the bytes that might begin a stop sequence are held
 * until they cannot. */
#define _GNU_SOURCE /* memmem */
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <time.h>

#include <sodium.h>

#include "err/err.h"
#include "gclient/gclient.h"
#include "http/http.h"
#include "log/log.h"
#include "model/model.h"
#include "oai/oai.h"
#include "registry/registry.h"
#include "sse/sse.h"

#define STREAM_BUFFER (1u << 20)

struct oai {
	pthread_mutex_t mu;
	pthread_cond_t cv;
	unsigned running;
	bool stopping;
	char *gateway, *ca, *tokenizer, *key;
	char **sessions;
	size_t n_sessions;
	long timeout_s, default_max_tokens;
	unsigned max_running, heartbeat_ms;
};

/* ---- the request ---- */

static int bad(char *why, size_t cap, const char **field, const char *f, const char *msg)
{
	snprintf(why, cap, "%s", msg);
	*field = f;
	return ERR_INVALID;
}

/* A number field: absent or null keeps *out. */
static bool number(json_t *b, const char *name, double lo, double hi, double *out)
{
	json_t *v = json_object_get(b, name);
	if (!v || json_is_null(v))
		return true;
	if (!json_is_number(v))
		return false;
	double d = json_number_value(v);
	if (!(d >= lo && d <= hi))
		return false;
	*out = d;
	return true;
}

static bool integer(json_t *b, const char *name, long lo, long hi, long *out, bool *present)
{
	json_t *v = json_object_get(b, name);
	if (!v || json_is_null(v))
		return true;
	if (!json_is_integer(v) || json_integer_value(v) < lo || json_integer_value(v) > hi)
		return false;
	*out = (long)json_integer_value(v);
	if (present)
		*present = true;
	return true;
}

/* True when the field is absent, null, or equal to the value that means "off". */
static bool off(json_t *b, const char *name, double dflt)
{
	json_t *v = json_object_get(b, name);
	if (!v || json_is_null(v))
		return true;
	if (json_is_number(v))
		return json_number_value(v) == dflt;
	if (json_is_false(v))
		return true;
	if (json_is_object(v) || json_is_array(v))
		return json_is_object(v) ? json_object_size(v) == 0 : json_array_size(v) == 0;
	return false;
}

int oai_parse_completion(json_t *b, long default_max_tokens, struct oai_completion *o, char *why,
			 size_t cap, const char **field)
{
	memset(o, 0, sizeof *o);
	*field = "";
	if (!json_is_object(b))
		return bad(why, cap, field, "", "the body must be a JSON object");
	o->model = json_string_value(json_object_get(b, "model"));
	if (!o->model)
		return bad(why, cap, field, "model", "model is required: a session id (see GET /v1/models)");
	json_t *p = json_object_get(b, "prompt");
	if (json_is_array(p)) {
		if (json_array_size(p) != 1 || !json_is_string(json_array_get(p, 0)))
			return bad(why, cap, field, "prompt", "prompt must be a string or a list of one string");
		p = json_array_get(p, 0);
	}
	if (!json_is_string(p))
		return bad(why, cap, field, "prompt", "prompt is required: a string (token arrays are not accepted)");
	o->prompt = json_string_value(p);
	o->prompt_len = json_string_length(p);
	if (o->prompt_len > OAI_PROMPT_MAX)
		return bad(why, cap, field, "prompt", "prompt longer than 65536 bytes");
	if (memchr(o->prompt, '\0', o->prompt_len))
		return bad(why, cap, field, "prompt", "prompt contains a NUL character");
	o->max_tokens = default_max_tokens;
	o->temperature = 1;
	o->top_p = 1;
	if (!integer(b, "max_tokens", 1, MODEL_MAX_SEQ, &o->max_tokens, NULL))
		return bad(why, cap, field, "max_tokens", "max_tokens must be an integer from 1 to the model's context");
	if (!number(b, "temperature", 0, 2, &o->temperature))
		return bad(why, cap, field, "temperature", "temperature must be a number from 0 to 2");
	if (!number(b, "top_p", 0, 1, &o->top_p) || o->top_p == 0)
		return bad(why, cap, field, "top_p", "top_p must be a number in (0, 1]");
	if (!integer(b, "top_k", 0, MODEL_MAX_VOCAB, &o->top_k, NULL))
		return bad(why, cap, field, "top_k", "top_k must be an integer from 0 (all) to the vocabulary's size");
	if (o->top_p < 1 && o->top_k == 0)
		return bad(why, cap, field, "top_p",
			   "top_p below 1 needs top_k: the parties sample the nucleus among the k most likely tokens");
	long seed = 0;
	if (!integer(b, "seed", 0, INT64_MAX, &seed, &o->has_seed))
		return bad(why, cap, field, "seed", "seed must be a non-negative integer");
	o->seed = (uint64_t)seed;
	json_t *v = json_object_get(b, "stream");
	if (v && !json_is_null(v) && !json_is_boolean(v))
		return bad(why, cap, field, "stream", "stream must be true or false");
	o->stream = json_is_true(v);
	v = json_object_get(b, "echo");
	if (v && !json_is_null(v) && !json_is_boolean(v))
		return bad(why, cap, field, "echo", "echo must be true or false");
	o->echo = json_is_true(v);
	v = json_object_get(b, "stream_options");
	if (v && !json_is_null(v)) {
		json_t *u = json_object_get(v, "include_usage");
		if (!json_is_object(v) || (u && !json_is_null(u) && !json_is_boolean(u)))
			return bad(why, cap, field, "stream_options", "stream_options must be {\"include_usage\": bool}");
		o->include_usage = json_is_true(u);
	}
	v = json_object_get(b, "stop");
	if (v && !json_is_null(v)) {
		json_t *one[1] = {v};
		size_t n = json_is_array(v) ? json_array_size(v) : 1;
		if (n > OAI_MAX_STOPS)
			return bad(why, cap, field, "stop", "at most 4 stop sequences");
		for (size_t i = 0; i < n; i++) {
			json_t *s = json_is_array(v) ? json_array_get(v, i) : one[0];
			size_t l = json_string_length(s);
			if (!json_is_string(s) || l == 0 || l > OAI_STOP_MAX || memchr(json_string_value(s), '\0', l))
				return bad(why, cap, field, "stop", "stop must be a string or a list of up to 4 strings of "
								    "1 to 64 bytes");
			o->stop[o->n_stops] = json_string_value(s);
			o->stop_len[o->n_stops++] = l;
		}
	}
	long n = 1;
	if (!integer(b, "n", 1, 1, &n, NULL))
		return bad(why, cap, field, "n", "n must be 1: one completion per request");
	if (!integer(b, "best_of", 1, 1, &n, NULL))
		return bad(why, cap, field, "best_of", "best_of must be 1");
	static const char *const unsupported[] = {"logprobs", "suffix", "presence_penalty", "frequency_penalty",
						  "logit_bias", NULL};
	for (size_t i = 0; unsupported[i]; i++)
		if (!off(b, unsupported[i], 0)) {
			snprintf(why, cap, "%s is not supported: the parties release only the chosen tokens",
				 unsupported[i]);
			*field = unsupported[i];
			return ERR_INVALID;
		}
	return 0;
}

/* ---- text ---- */

/* Length of the UTF-8 sequence that starts with byte c (0: not a lead byte). */
static size_t seq_len(unsigned char c)
{
	return c < 0x80 ? 1 : (c & 0xe0) == 0xc0 && c >= 0xc2 ? 2 : (c & 0xf0) == 0xe0 ? 3
	       : (c & 0xf8) == 0xf0 && c <= 0xf4                 ? 4
									 : 0;
}

/* Whether s[0..n) is a valid complete sequence (no overlong, no surrogate, <= U+10FFFF). */
static bool seq_ok(const unsigned char *s, size_t n)
{
	for (size_t i = 1; i < n; i++)
		if ((s[i] & 0xc0) != 0x80)
			return false;
	if (n == 3 && ((s[0] == 0xe0 && s[1] < 0xa0) || (s[0] == 0xed && s[1] >= 0xa0)))
		return false;
	if (n == 4 && ((s[0] == 0xf0 && s[1] < 0x90) || (s[0] == 0xf4 && s[1] >= 0x90)))
		return false;
	return true;
}

size_t oai_utf8_clean(const char *p, size_t len, bool final, char *out, size_t *keep)
{
	static const char repl[] = "\xef\xbf\xbd";
	const unsigned char *s = (const unsigned char *)p;
	size_t i = 0, w = 0;
	*keep = 0;
	while (i < len) {
		size_t n = seq_len(s[i]);
		if (n && i + n > len) {
			/* Possibly a character cut by the piece's end: hold it if what is there fits. */
			bool prefix = true;
			for (size_t k = i + 1; k < len; k++)
				prefix = prefix && (s[k] & 0xc0) == 0x80;
			if (prefix && !final) {
				*keep = len - i;
				break;
			}
		}
		if (n && i + n <= len && seq_ok(s + i, n)) {
			memcpy(out + w, s + i, n);
			w += n, i += n;
		} else {
			memcpy(out + w, repl, 3);
			w += 3, i++;
		}
	}
	return w;
}

/* ---- the shared pieces of the handlers ---- */

static const char *error_type(unsigned status)
{
	return status == 401 || status == 403 ? "authentication_error"
	       : status == 429		      ? "rate_limit_error"
	       : status >= 500		      ? "server_error"
					      : "invalid_request_error";
}

/* problem+json with OpenAI's error object as an extension member. */
static json_t *error_body(int code, unsigned status, const char *detail, const char *field, const char *slug,
			  const char *request_id)
{
	json_t *p = err_problem_status(code, (int)status, detail, field && *field ? field : NULL, request_id);
	json_t *e = json_pack("{s:s, s:s, s:s?, s:s?}", "message", detail ? detail : err_title(code), "type",
			      error_type(status), "param", field && *field ? field : NULL, "code", slug);
	if (p && e)
		json_object_set_new(p, "error", e);
	else
		json_decref(e);
	return p;
}

int oai_reply_error(struct http_req *r, int code, unsigned status, const char *detail, const char *field,
		    const char *slug)
{
	json_t *p = error_body(code, status, detail, field, slug, http_req_id(r));
	char *t = p ? json_dumps(p, JSON_COMPACT) : NULL;
	json_decref(p);
	if (!t)
		return ERR_NOMEM;
	int rc = http_reply_data(r, status, "application/problem+json", t, strlen(t));
	free(t);
	return rc;
}

static int later_error(struct http_later *l, int code, unsigned status, const char *detail, const char *slug)
{
	json_t *p = error_body(code, status, detail, NULL, slug, http_later_request_id(l));
	char *t = p ? json_dumps(p, JSON_COMPACT) : NULL;
	json_decref(p);
	if (!t)
		return http_later_problem(l, ERR_NOMEM, 0, NULL, NULL);
	int rc = http_later_data(l, status, "application/problem+json", t, strlen(t));
	free(t);
	return rc;
}

/* A generation's failure as an HTTP answer: the gateway's own 4xx is passed on (the
 * key, the session, the limits are the caller's business); anything else is 502,
 * except a local failure (500). */
static void status_of(const struct gcl_result *res, int *code, unsigned *status)
{
	switch (res->status) {
	case GCL_USAGE: case GCL_INVALID: *code = ERR_INVALID, *status = 400; break;
	case GCL_AUTH: *code = res->http_status == 403 ? ERR_FORBIDDEN : ERR_UNAUTHENTICATED;
		*status = res->http_status == 403 ? 403 : 401; break;
	case GCL_NOT_FOUND: *code = ERR_NOT_FOUND, *status = 404; break;
	case GCL_CONFLICT: *code = ERR_CONFLICT, *status = 409; break;
	case GCL_LIMITED: *code = ERR_RATE_LIMITED, *status = 429; break;
	case GCL_FAIL: *code = ERR_INTERNAL, *status = 500; break;
	case GCL_INTEGRITY: *code = ERR_MAC_CHECK, *status = 502; break;
	default: *code = ERR_UPSTREAM, *status = 502; break;
	}
	if (res->http_status == 400 || res->http_status == 413)
		*status = (unsigned)res->http_status;
}

static const char *slug_of(enum gcl_status s)
{
	switch (s) {
	case GCL_AUTH: return "invalid_api_key";
	case GCL_NOT_FOUND: return "model_not_found";
	case GCL_CONFLICT: return "session_busy";
	case GCL_LIMITED: return "rate_limit_exceeded";
	case GCL_INTEGRITY: return "integrity_check_failed";
	case GCL_GENERATION: return "generation_failed";
	case GCL_UNREACHABLE: return "gateway_unreachable";
	default: return NULL;
	}
}

/* The API key of the request: the fixed one, or its bearer token. */
static const char *key_of(struct oai *o, struct http_req *r)
{
	if (o->key)
		return o->key;
	const char *h = http_req_header(r, "Authorization");
	if (!h || strncasecmp(h, "Bearer ", 7))
		return NULL;
	h += 7;
	while (*h == ' ')
		h++;
	return strlen(h) == GCL_KEY_LEN && !strncmp(h, GCL_KEY_PREFIX, sizeof GCL_KEY_PREFIX - 1) ? h : NULL;
}

static bool offered(const struct oai *o, const char *model)
{
	for (size_t i = 0; i < o->n_sessions; i++)
		if (!strcmp(o->sessions[i], model))
			return true;
	return false;
}

/* A job: what a worker thread needs, copied out of the request. */
struct job {
	struct oai *o;
	struct http_later *l;
	char key[GCL_KEY_LEN + 1];
	json_t *body; /* a completion's document (c points into it) */
	struct oai_completion c;
	/* the output */
	struct http_stream *st;
	bool gone; /* the client left: stop */
	char id[48], model[REG_ID_SIZE];
	time_t created;
	char *acc;     /* the completion's text so far, whole UTF-8 */
	size_t acc_len, acc_cap, sent;
	char carry[4]; /* an incomplete UTF-8 tail */
	size_t carry_len;
	const char *finish;
};

static void job_free(struct job *j)
{
	if (!j)
		return;
	json_decref(j->body);
	if (j->acc)
		sodium_memzero(j->acc, j->acc_cap);
	free(j->acc);
	sodium_memzero(j->key, sizeof j->key);
	free(j);
}

static struct gcl_config backend(const struct oai *o, const struct job *j, const char *session)
{
	return (struct gcl_config){.gateway = o->gateway, .ca = o->ca, .session = session, .key = j->key,
				   .tokenizer = o->tokenizer, .timeout_s = o->timeout_s};
}

static void job_done(struct oai *o)
{
	pthread_mutex_lock(&o->mu);
	o->running--;
	pthread_cond_broadcast(&o->cv);
	pthread_mutex_unlock(&o->mu);
}

/* Takes the request's API key into the job and starts fn(job) in a detached thread,
 * within max_running. Replies itself (and frees the job) on failure. */
static int spawn(struct http_req *r, struct oai *o, struct job *j, void *(*fn)(void *))
{
	const char *k = key_of(o, r);
	if (!k) {
		job_free(j);
		http_reply_header(r, "WWW-Authenticate", "Bearer");
		return oai_reply_error(r, ERR_UNAUTHENTICATED, 401,
				   "give a Mimir API key as the bearer token (Authorization: Bearer mimir_sk_...)", NULL,
				   "invalid_api_key");
	}
	snprintf(j->key, sizeof j->key, "%s", k);
	pthread_mutex_lock(&o->mu);
	const char *busy = NULL;
	int code = ERR_UNAVAILABLE;
	if (o->stopping)
		busy = "shutting down";
	else if (!o->gateway)
		busy = "the gateway's address is not known yet";
	else if (o->running >= o->max_running)
		busy = "too many completions at once; retry later", code = ERR_RATE_LIMITED;
	else
		o->running++;
	pthread_mutex_unlock(&o->mu);
	if (busy) {
		job_free(j);
		http_reply_header(r, "Retry-After", "1");
		return oai_reply_error(r, code, (unsigned)err_http_status(code), busy, NULL,
				       code == ERR_RATE_LIMITED ? "rate_limit_exceeded" : NULL);
	}
	int rc = http_reply_later(r, &j->l);
	pthread_t t;
	pthread_attr_t a;
	pthread_attr_init(&a);
	pthread_attr_setdetachstate(&a, PTHREAD_CREATE_DETACHED);
	if (rc == 0 && pthread_create(&t, &a, fn, j) != 0) {
		later_error(j->l, ERR_NOMEM, 503, "cannot start a worker", NULL);
		rc = ERR_NOMEM;
	}
	pthread_attr_destroy(&a);
	if (rc != 0) {
		if (!j->l && rc == ERR_NOMEM) /* (shutting down: http_reply_later answered 503) */
			oai_reply_error(r, rc, (unsigned)err_http_status(rc), NULL, NULL, NULL);
		job_free(j);
		job_done(o);
	}
	return 0;
}

/* ---- GET /v1/models ---- */

static void *models_worker(void *arg)
{
	struct job *j = arg;
	struct oai *o = j->o;
	json_t *data = json_array();
	struct gcl_result res = {0};
	int code = 0;
	unsigned status = 200;
	for (size_t i = 0; data && i < o->n_sessions; i++) {
		struct gcl_config cfg = backend(o, j, o->sessions[i]);
		json_t *s = NULL;
		enum gcl_status st = gcl_session(&cfg, &s, &res);
		if (st == GCL_OK) {
			json_t *m = json_pack("{s:s, s:s, s:I, s:s, s:{s:O?, s:O?, s:I}}", "id", o->sessions[i], "object",
					      "model", "created", (json_int_t)time(NULL), "owned_by", "mimir", "mimir", "model",
					      json_object_get(json_object_get(s, "model"), "name"), "state",
					      json_object_get(s, "state"), "parties",
					      (json_int_t)json_array_size(json_object_get(s, "parties")));
			if (m)
				json_array_append_new(data, m);
		} else if (st != GCL_AUTH && st != GCL_NOT_FOUND) {
			status_of(&res, &code, &status); /* the gateway or the link failed: say so */
			break;
		} else if (st == GCL_AUTH && res.http_status == 401) {
			status_of(&res, &code, &status); /* a key the gateway does not know at all */
			break;
		}
		json_decref(s);
	}
	if (status != 200)
		later_error(j->l, code, status, res.error, slug_of(res.status));
	else if (!data)
		http_later_problem(j->l, ERR_NOMEM, 0, NULL, NULL);
	else
		http_later_json(j->l, 200, json_pack("{s:s, s:O}", "object", "list", "data", data));
	json_decref(data);
	job_free(j);
	job_done(o);
	return NULL;
}

int oai_models(struct http_req *r, struct oai *o)
{
	struct job *j = calloc(1, sizeof *j);
	if (!j)
		return ERR_NOMEM;
	j->o = o;
	return spawn(r, o, j, models_worker);
}

/* ---- POST /v1/completions ---- */

static bool grow(struct job *j, size_t more)
{
	if (j->acc_len + more + 1 <= j->acc_cap)
		return true;
	size_t cap = (j->acc_len + more + 1) * 2;
	char *n = malloc(cap);
	if (!n)
		return false;
	if (j->acc) {
		memcpy(n, j->acc, j->acc_len);
		sodium_memzero(j->acc, j->acc_cap);
		free(j->acc);
	}
	j->acc = n;
	j->acc_cap = cap;
	return true;
}

static bool append(struct job *j, const char *p, size_t len, bool final)
{
	size_t keep = 0, n = j->carry_len + len;
	char *in = malloc(n + 1);
	if (!in || !grow(j, 3 * n)) {
		free(in);
		return false;
	}
	memcpy(in, j->carry, j->carry_len);
	memcpy(in + j->carry_len, p, len);
	j->acc_len += oai_utf8_clean(in, n, final, j->acc + j->acc_len, &keep);
	memcpy(j->carry, in + n - keep, keep);
	j->carry_len = keep;
	j->acc[j->acc_len] = '\0';
	sodium_memzero(in, n);
	free(in);
	return true;
}

/* One chunk of OpenAI's stream: the text, the finish reason (NULL while going on), the
 * usage (or none). */
static int write_chunk(struct job *j, const char *text, size_t len, const char *finish, json_t *usage)
{
	json_t *c = json_pack("{s:s, s:s, s:I, s:s, s:[{s:s%, s:i, s:n, s:s?}]}", "id", j->id, "object",
			      "text_completion", "created", (json_int_t)j->created, "model", j->model, "choices", "text", text,
			      len, "index", 0, "logprobs", "finish_reason", finish);
	if (c && usage) {
		json_object_set_new(c, "usage", usage);
		if (!len && !finish)
			json_array_clear(json_object_get(c, "choices")); /* the usage chunk has no choice */
	} else {
		json_decref(usage);
	}
	char *t = c ? json_dumps(c, JSON_COMPACT) : NULL;
	json_decref(c);
	char *ev = NULL;
	size_t evl = 0;
	int rc = t ? sse_encode(0, NULL, t, strlen(t), &ev, &evl) : ERR_NOMEM;
	free(t);
	if (rc == 0)
		rc = http_stream_write(j->st, ev, evl);
	free(ev);
	return rc;
}

/* Cuts the text at the first stop sequence; true when one was found. Only a stop that
 * ends in the bytes after `before` (the text's length before the last token) can be
 * new, so the search starts a stop's length short of it, not at the beginning. */
static bool cut_at_stop(struct job *j, size_t before)
{
	size_t best = SIZE_MAX;
	for (size_t i = 0; i < j->c.n_stops; i++) {
		size_t from = before >= j->c.stop_len[i] ? before - j->c.stop_len[i] + 1 : 0;
		char *at = memmem(j->acc + from, j->acc_len - from, j->c.stop[i], j->c.stop_len[i]);
		if (at && (size_t)(at - j->acc) < best)
			best = (size_t)(at - j->acc);
	}
	if (best == SIZE_MAX)
		return false;
	j->acc_len = best;
	j->acc[best] = '\0';
	return true;
}

/* In a stream, what may go out now: all of it, or (with stop sequences) all but the
 * bytes that could begin one, backed off to a character boundary. */
static int flush(struct job *j, bool all)
{
	size_t upto = j->acc_len;
	if (!all && j->c.n_stops) {
		size_t hold = 0;
		for (size_t i = 0; i < j->c.n_stops; i++)
			hold = j->c.stop_len[i] - 1 > hold ? j->c.stop_len[i] - 1 : hold;
		upto = upto > hold ? upto - hold : 0;
		while (upto > j->sent && ((unsigned char)j->acc[upto] & 0xc0) == 0x80)
			upto--;
	}
	if (upto <= j->sent)
		return 0;
	int rc = write_chunk(j, j->acc + j->sent, upto - j->sent, NULL, NULL);
	j->sent = upto;
	return rc;
}

static int on_started(void *arg, const char *generation, size_t prompt_tokens)
{
	(void)prompt_tokens;
	struct job *j = arg;
	snprintf(j->id, sizeof j->id, "cmpl-%s", generation);
	if (!j->c.stream)
		return 0;
	if (http_later_stream(j->l, SSE_CONTENT_TYPE, j->o->heartbeat_ms, SSE_HEARTBEAT, STREAM_BUFFER, &j->st) != 0) {
		j->l = NULL;
		j->gone = true;
		return 1;
	}
	j->l = NULL;
	if (j->c.echo && write_chunk(j, j->c.prompt, j->c.prompt_len, NULL, NULL) != 0)
		j->gone = true;
	return j->gone;
}

static int on_token(void *arg, int id, const char *piece, size_t len)
{
	(void)id;
	struct job *j = arg;
	size_t before = j->acc_len;
	if (!append(j, piece, len, false)) {
		j->gone = true;
		return 1;
	}
	if (cut_at_stop(j, before)) {
		j->finish = "stop";
		return 1;
	}
	if (j->st && flush(j, false) != 0)
		j->gone = true; /* the client hung up: the generation is cancelled */
	return j->gone;
}

static int should_stop(void *arg)
{
	struct job *j = arg;
	pthread_mutex_lock(&j->o->mu);
	bool stop = j->o->stopping;
	pthread_mutex_unlock(&j->o->mu);
	return stop || j->gone || (j->st && !http_stream_alive(j->st));
}

static json_t *usage(const struct gcl_result *res)
{
	return json_pack("{s:I, s:I, s:I}", "prompt_tokens", (json_int_t)res->prompt_tokens, "completion_tokens",
			 (json_int_t)res->made, "total_tokens", (json_int_t)(res->prompt_tokens + res->made));
}

static void *completion_worker(void *arg)
{
	struct job *j = arg;
	struct oai *o = j->o;
	struct gcl_config cfg = backend(o, j, j->model);
	struct gcl_request q = {.prompt = j->c.prompt, .prompt_len = j->c.prompt_len, .tokens = j->c.max_tokens,
				.temperature = j->c.temperature, .top_k = j->c.top_k,
				.top_p = j->c.top_p < 1 ? j->c.top_p : 0, .has_seed = j->c.has_seed, .seed = j->c.seed};
	struct gcl_callbacks cb = {.arg = j, .started = on_started, .token = on_token, .stop = should_stop};
	struct gcl_result res;
	enum gcl_status st = gcl_generate(&cfg, &q, &cb, &res);
	if (st == GCL_OK)
		append(j, "", 0, true);
	const char *finish = j->finish ? j->finish : !strcmp(res.finish, "stop") ? "stop" : "length";
	int code;
	unsigned status;
	if (j->l && st != GCL_OK) {
		/* Refused before anything was written: a plain HTTP error. */
		status_of(&res, &code, &status);
		later_error(j->l, code, status, res.error, slug_of(st));
	} else if (j->l) {
		json_t *text = json_stringn("", 0);
		if (j->c.echo) {
			json_decref(text);
			char *both = malloc(j->c.prompt_len + j->acc_len + 1);
			if (both) {
				memcpy(both, j->c.prompt, j->c.prompt_len);
				memcpy(both + j->c.prompt_len, j->acc ? j->acc : "", j->acc_len);
				text = json_stringn(both, j->c.prompt_len + j->acc_len);
				sodium_memzero(both, j->c.prompt_len + j->acc_len);
				free(both);
			} else {
				text = NULL;
			}
		} else if (j->acc_len) {
			json_decref(text);
			text = json_stringn(j->acc, j->acc_len);
		}
		json_t *body = json_pack("{s:s, s:s, s:I, s:s, s:[{s:o, s:i, s:n, s:s}], s:o}", "id", j->id, "object",
					 "text_completion", "created", (json_int_t)j->created, "model", j->model, "choices", "text",
					 text, "index", 0, "logprobs", "finish_reason", finish, "usage", usage(&res));
		http_later_json(j->l, 200, body);
	} else if (j->st && !j->gone) {
		/* The stream: what is held back, the finish, the usage, then [DONE]; or the
		 * error as OpenAI streams it. */
		if (st != GCL_OK) {
			status_of(&res, &code, &status);
			json_t *e = json_pack("{s:{s:s, s:s, s:n, s:s?}}", "error", "message", res.error, "type",
					      error_type(status), "param", "code", slug_of(st));
			char *t = e ? json_dumps(e, JSON_COMPACT) : NULL;
			char *ev = NULL;
			size_t evl = 0;
			if (t && sse_encode(0, NULL, t, strlen(t), &ev, &evl) == 0)
				http_stream_write(j->st, ev, evl);
			free(ev);
			free(t);
			json_decref(e);
		} else if (flush(j, true) == 0 && write_chunk(j, "", 0, finish, NULL) == 0 &&
			   (!j->c.include_usage || write_chunk(j, "", 0, NULL, usage(&res)) == 0)) {
			static const char done[] = "data: [DONE]\n\n";
			http_stream_write(j->st, done, sizeof done - 1);
		}
	}
	http_stream_close(j->st);
	LOG_INFO("oai.completion", LOG_S("model", j->model), LOG_S("generation", res.generation),
		 LOG_B("stream", j->c.stream), LOG_I("prompt_tokens", (long long)res.prompt_tokens),
		 LOG_I("tokens", (long long)res.made), LOG_S("finish", st == GCL_OK ? finish : "error"),
		 LOG_I("outcome", (long long)st), LOG_B("client_gone", j->gone), LOG_D("s", res.seconds));
	sodium_memzero(&res, sizeof res);
	job_free(j);
	job_done(o);
	return NULL;
}

int oai_completions(struct http_req *r, struct oai *o)
{
	size_t len = 0;
	const char *b = http_req_body(r, &len);
	const char *ct = http_req_header(r, "Content-Type");
	if (!ct || strncasecmp(ct, "application/json", 16))
		return oai_reply_error(r, ERR_UNSUPPORTED, 415, "the body must be application/json", NULL, NULL);
	struct job *j = calloc(1, sizeof *j);
	if (!j)
		return ERR_NOMEM;
	j->o = o;
	j->created = time(NULL);
	json_error_t je;
	j->body = json_loadb(b, len, JSON_REJECT_DUPLICATES, &je);
	char why[256];
	const char *field = "";
	int rc = j->body ? oai_parse_completion(j->body, o->default_max_tokens, &j->c, why, sizeof why, &field)
			 : ERR_PARSE;
	if (!j->body)
		snprintf(why, sizeof why, "the body is not JSON: %s (line %d)", je.text, je.line);
	if (rc != 0) {
		job_free(j);
		return oai_reply_error(r, rc, 400, why, field, NULL);
	}
	if (!offered(o, j->c.model)) {
		job_free(j);
		return oai_reply_error(r, ERR_NOT_FOUND, 404,
				   "no such model here: a model is a session offered by this server (GET /v1/models)",
				   "model", "model_not_found");
	}
	snprintf(j->model, sizeof j->model, "%s", j->c.model);
	return spawn(r, o, j, completion_worker);
}

/* ---- lifecycle ---- */

static char *dup_or_null(const char *s, bool *ok)
{
	if (!s)
		return NULL;
	char *d = strdup(s);
	*ok = *ok && d;
	return d;
}

int oai_new(const struct oai_config *cfg, struct oai **out)
{
	*out = NULL;
	if (!cfg->tokenizer || !cfg->n_sessions || cfg->n_sessions > OAI_MAX_SESSIONS)
		return ERR_INVALID;
	for (size_t i = 0; i < cfg->n_sessions; i++)
		if (!cfg->sessions[i] || !reg_id_ok(cfg->sessions[i], "ses_"))
			return ERR_INVALID;
	if (cfg->key && (strlen(cfg->key) != GCL_KEY_LEN || strncmp(cfg->key, GCL_KEY_PREFIX, sizeof GCL_KEY_PREFIX - 1)))
		return ERR_INVALID;
	struct oai *o = calloc(1, sizeof *o);
	if (!o)
		return ERR_NOMEM;
	pthread_mutex_init(&o->mu, NULL);
	pthread_cond_init(&o->cv, NULL);
	bool ok = true;
	o->gateway = dup_or_null(cfg->gateway, &ok);
	o->ca = dup_or_null(cfg->ca, &ok);
	o->tokenizer = dup_or_null(cfg->tokenizer, &ok);
	o->key = dup_or_null(cfg->key, &ok);
	o->sessions = calloc(cfg->n_sessions, sizeof *o->sessions);
	ok = ok && o->sessions;
	for (size_t i = 0; ok && i < cfg->n_sessions; i++, o->n_sessions++)
		ok = (o->sessions[i] = strdup(cfg->sessions[i])) != NULL;
	o->timeout_s = cfg->timeout_s > 0 ? cfg->timeout_s : 30;
	o->default_max_tokens = cfg->default_max_tokens > 0 ? cfg->default_max_tokens : 16;
	o->max_running = cfg->max_running ? cfg->max_running : 4;
	o->heartbeat_ms = cfg->heartbeat_ms ? cfg->heartbeat_ms : 15000;
	if (!ok) {
		oai_free(o);
		return ERR_NOMEM;
	}
	*out = o;
	return 0;
}

int oai_set_gateway(struct oai *o, const char *url)
{
	char *d = strdup(url);
	if (!d)
		return ERR_NOMEM;
	pthread_mutex_lock(&o->mu);
	char *old = o->gateway;
	bool set = old == NULL;
	if (set)
		o->gateway = d;
	pthread_mutex_unlock(&o->mu);
	if (!set)
		free(d);
	return 0;
}

void oai_free(struct oai *o)
{
	if (!o)
		return;
	pthread_mutex_lock(&o->mu);
	o->stopping = true;
	while (o->running)
		pthread_cond_wait(&o->cv, &o->mu);
	pthread_mutex_unlock(&o->mu);
	pthread_cond_destroy(&o->cv);
	pthread_mutex_destroy(&o->mu);
	free(o->gateway);
	free(o->ca);
	free(o->tokenizer);
	if (o->key)
		sodium_memzero(o->key, strlen(o->key));
	free(o->key);
	for (size_t i = 0; i < o->n_sessions; i++)
		free(o->sessions[i]);
	free(o->sessions);
	free(o);
}
