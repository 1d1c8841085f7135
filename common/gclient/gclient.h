/* gclient: the client side of one generation through a Mimir gateway, everything that
 * must stay on the client's machine done here. `mimir generate` prints what it yields;
 * `mimir proxy` and the gateway's plaintext mode (common/oai) serve it as the OpenAI
 * API.
 *
 * It reads the session from the gateway (its parties in share order with the X25519
 * keys they seal to, the model's vocabulary, the context and the padding bucket),
 * tokenizes the prompt with the public tokenizer, makes an ephemeral key pair, starts
 * the generation and follows its event stream: every party's MASKS must open and
 * authenticate under the sealing key the session lists for that party; the prompt then
 * leaves as the INPUT message (one-hot rows minus the masks, uniform to anyone else);
 * every RECEIPT must match the masks; every token must be the same in all parties'
 * OUTPUT parts. Only then is it handed to the caller, decoded. A broken event stream is
 * resumed with Last-Event-ID. Generation stops after the tokens asked for, at BOS (the
 * model starts a new text), or when the caller's callback says so (the generation is
 * then cancelled at the parties). One call runs one generation and blocks; calls in
 * different threads are independent. */
#ifndef MIMIR_GCLIENT_H
#define MIMIR_GCLIENT_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include <jansson.h>

/* Outcomes, one per kind a caller may want to tell apart; `mimir` uses them as exit
 * statuses. */
enum gcl_status {
	GCL_OK = 0,
	GCL_FAIL = 1,        /* anything else: a local error, an answer that makes no sense */
	GCL_USAGE = 2,       /* a bad argument (session id, key, URL, sampling) */
	GCL_UNREACHABLE = 3, /* no answer from the gateway: connection, TLS, timeout */
	GCL_AUTH = 4,        /* 401 / 403: the API key was refused (or is for another session) */
	GCL_NOT_FOUND = 5,   /* 404 */
	GCL_CONFLICT = 6,    /* 409: the session is not ready, or runs another generation */
	GCL_INVALID = 7,     /* 400, 413, 415: refused as input (a prompt too long) */
	GCL_LIMITED = 8,     /* 429 */
	GCL_SERVER = 9,      /* 5xx from the gateway: it or a party could not serve it */
	GCL_GENERATION = 10, /* the generation ended with an error event (a party failed, it
				was cancelled, the parties' MAC check failed) */
	GCL_INTEGRITY = 11,  /* a party's message did not verify: a wrong sealing key, a lying
				party caught by the client's checks; nothing unverified was given */
};

#define GCL_KEY_PREFIX "mimir_sk_"
#define GCL_KEY_LEN 69

struct gcl_config {
	const char *gateway;   /* http(s)://host:port */
	const char *ca;        /* the deployment's CA (required for https) */
	const char *session;   /* ses_... */
	const char *key;       /* the API key (mimir_sk_...) */
	const char *tokenizer; /* the llama2.c tokenizer file */
	long timeout_s;        /* bound on each request, not on the stream (0: 30) */
};

struct gcl_request {
	const char *prompt;
	size_t prompt_len;
	long tokens;        /* new tokens, >= 1 */
	double temperature; /* 0 = greedy */
	long top_k;         /* 0 = all */
	double top_p;       /* 0 = off; needs top_k */
	bool has_seed;
	uint64_t seed;      /* public sampling seed (else the parties toss one) */
};

/* What the caller learns as the generation goes. Every callback may be NULL; a
 * non-zero return from started or token stops the generation (cancelled at the
 * parties; the outcome is GCL_OK with finish "cancelled"). */
struct gcl_callbacks {
	void *arg;
	/* The gateway accepted the generation (session read, prompt tokenized). */
	int (*started)(void *arg, const char *generation, size_t prompt_tokens);
	/* One verified token: its id and its decoded text (raw bytes, possibly a part of a
	 * UTF-8 sequence; prev is the token before it). */
	int (*token)(void *arg, int id, const char *piece, size_t len);
	/* Something worth telling a person (the event stream broke and is resumed). */
	void (*notice)(void *arg, const char *message);
	/* Polled as events arrive (heartbeats included) and before a resumption: non-zero
	 * stops the generation as a token callback's non-zero does. */
	int (*stop)(void *arg);
};

struct gcl_result {
	enum gcl_status status;
	char error[512];          /* why, when status is not GCL_OK */
	long http_status;         /* the gateway's status when it refused a request, else 0 */
	const char *finish;       /* "length", "stop" (BOS), "cancelled", "error" */
	char generation[33];      /* its id, "" if none was started */
	size_t prompt_tokens;     /* with BOS */
	uint32_t slots;           /* positions the parties saw (the prompt padded) */
	size_t made;              /* verified tokens handed out */
	unsigned nparties;
	double seconds;           /* from the start of the generation to its end */
	double first_token_s;     /* to the first verified token (0 if none) */
};

/* Checks cfg (URL, CA for https, session id, key shape); GCL_OK or GCL_USAGE with why. */
enum gcl_status gcl_config_check(const struct gcl_config *cfg, char *why, size_t cap);
/* Runs one generation; fills *res and returns res->status. */
enum gcl_status gcl_generate(const struct gcl_config *cfg, const struct gcl_request *req,
			     const struct gcl_callbacks *cb, struct gcl_result *res);
/* Reads the session (GET /v1/sessions/{id}) and returns its JSON description in *out
 * (caller decrefs), for listings; GCL_* as gcl_generate, why in res->error. */
enum gcl_status gcl_session(const struct gcl_config *cfg, json_t **out, struct gcl_result *res);

#endif
