/* oai: the OpenAI-compatible API over Mimir (GET /v1/models, POST /v1/completions,
 * streamed and not), so an OpenAI SDK or curl gets text from a secret-shared model
 * without changes. Each completion is one generation run by common/gclient against a
 * gateway's client API: the prompt is tokenized and masked where this code runs, and
 * each token is checked against every party's part before it is written out.
 *
 * Two deployments share it. `mimir proxy` runs it on the client's own machine (loopback,
 * plain HTTP), so the text never leaves that machine in clear. The gateway runs it in
 * plaintext mode (off unless configured, for the sessions listed), for clients that
 * cannot run the protocol: the gateway then sees prompt and text, the parties still
 * see neither, and the gateway is its own client over loopback, so every plaintext
 * request passes the same key checks, rate limits and relay as any other.
 *
 * A model id is a session id: /v1/models lists the sessions offered that the caller's
 * key may read. The API key is the request's bearer token (a Mimir API key), or a
 * fixed one (the proxy's own). Errors are problem+json (RFC 9457) carrying, as an
 * extension member, the OpenAI error object ("error": {message, type, param, code}) the
 * SDKs read; in a stream that has started, an error is a data line with that object.
 *
 * Handlers answer later (common/http's deferred replies): the generation runs in a
 * worker thread per completion, at most max_running at once (429 past it). */
#ifndef MIMIR_OAI_H
#define MIMIR_OAI_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include <jansson.h>

struct http_req;

#define OAI_MAX_SESSIONS 32
#define OAI_MAX_STOPS 4
#define OAI_STOP_MAX 64 /* bytes of one stop sequence */
#define OAI_PROMPT_MAX (64 * 1024)

struct oai_config {
	const char *gateway;   /* the gateway's client API (http(s)://host:port) */
	const char *ca;        /* its CA, for https */
	const char *tokenizer; /* the llama2.c tokenizer */
	long timeout_s;        /* per request to the gateway (0: 30) */
	/* The sessions offered as models (ses_...); at least one. */
	const char *const *sessions;
	size_t n_sessions;
	const char *key;          /* NULL: the request's bearer token is the API key */
	long default_max_tokens;  /* when the request gives none (0: 16, OpenAI's) */
	unsigned max_running;     /* completions at once (0: 4) */
	unsigned heartbeat_ms;    /* comment lines into idle streams (0: 15000) */
};

/* One parsed POST /v1/completions body. Strings point into the JSON document. */
struct oai_completion {
	const char *model;
	const char *prompt;
	size_t prompt_len;
	long max_tokens;
	double temperature, top_p;
	long top_k;
	bool has_seed;
	uint64_t seed;
	bool stream, include_usage, echo;
	size_t n_stops;
	const char *stop[OAI_MAX_STOPS];
	size_t stop_len[OAI_MAX_STOPS];
};

/* Checks a completion request against what Mimir serves: OpenAI's fields with their
 * defaults (temperature 1, top_p 1, max_tokens default_max_tokens), plus top_k; a value
 * Mimir cannot honour (n > 1, logprobs, suffix, penalties, logit_bias, best_of > 1, a
 * list of several prompts) is refused, not ignored. Unknown fields are ignored, as
 * OpenAI's clients send extras. Returns 0, or ERR_* with why and the offending field
 * ("" when none). */
int oai_parse_completion(json_t *body, long default_max_tokens, struct oai_completion *out,
			 char *why, size_t cap, const char **field);

/* UTF-8 for JSON: the longest prefix of (p, len) that is whole, valid UTF-8 goes to
 * out with invalid bytes replaced by U+FFFD; *keep is how many trailing bytes form an
 * incomplete sequence (hold them for the next piece; at the end pass final to replace
 * them too). Returns bytes written (out has room for 3 * len). */
size_t oai_utf8_clean(const char *p, size_t len, bool final, char *out, size_t *keep);

struct oai;
int oai_new(const struct oai_config *cfg, struct oai **out);
/* Stops the completions still running (cancelled at the parties) and waits for their
 * threads. Call after the HTTP server has shut down. Accepts NULL. */
void oai_free(struct oai *o);
/* Sets the gateway when it was not known at oai_new (the gateway's own port); the
 * first call wins. Until then completions get 503. */
int oai_set_gateway(struct oai *o, const char *url);

/* A refusal in this API's shape (problem+json with OpenAI's error object), for callers
 * that answer on its paths themselves (a gateway with the API off). slug: OpenAI's
 * error code, or NULL. */
int oai_reply_error(struct http_req *r, int code, unsigned status, const char *detail, const char *field,
		    const char *slug);

/* The handlers, for a route table. */
int oai_models(struct http_req *r, struct oai *o);
int oai_completions(struct http_req *r, struct oai *o);

#endif
