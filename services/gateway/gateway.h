/* mimir-gateway: the only public edge of a Mimir deployment. Two APIs share it: the
 * administrator's (/admin/v1/..., its own credential: a client certificate with role
 * admin, or an admin bearer token the gateway stores only hashed), forwarded to the
 * session service over mutual TLS with the administrator named in X-Mimir-Actor; and
 * the client's (/v1/...), authenticated by an API key the session service verifies:
 * reading a session, and generations relayed between the client and the parties.
 * Around both: per-credential token-bucket rate limits, body limits, CORS for browser
 * clients, problem+json for every refusal.
 *
 * This header is shared by the service's files: settings, context, the edge helpers
 * every handler goes through (CORS, credentials, limits, the upstream pool) and the
 * handlers of the route table. The client's generations are relayed between the client
 * and the session's parties by relay.c (one reader thread per party event stream, the
 * parties' sealed parts combined per token into one event of the client's stream, kept
 * for resumption in a per-generation replay log, common/sse's sse_log); stream.c holds
 * their handlers. */
#ifndef MIMIR_GATEWAY_H
#define MIMIR_GATEWAY_H

#include <pthread.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "clientio/clientio.h"
#include "http/http.h"
#include "httpc/httpc.h"
#include "mpc/mpc.h"
#include "registry/registry.h"

struct metric;
struct metric_series;
struct metrics;
struct oai;

#define GW_ADMIN_PREFIX "/admin/v1"
#define GW_NAME_MAX 48         /* an administrator's name (token name or certificate CN) */
#define GW_ACTOR_MAX 64        /* what X-Mimir-Actor carries: "<kind>:<name>" */
#define GW_ADMIN_TOKENS_MAX 64 /* entries of admin.tokens_file */
#define GW_ORIGINS_MAX 16      /* entries of cors.origins */
#define GW_ORIGIN_MAX 200
/* Admin tokens: "mimir_at_" + 43 base64url characters (256 random bits). */
#define GW_TOKEN_PREFIX "mimir_at_"
#define GW_TOKEN_LEN 52
/* API keys, as the session service issues them: "mimir_sk_" + 16 hex + "_" + 43 base64url. */
#define GW_KEY_PREFIX "mimir_sk_"
#define GW_KEY_LEN 69
/* Generations: ids are 32 lowercase hex digits (16 random bytes, the clientio
 * generation id); the largest INPUT message a generation can have (every party's tag,
 * CIO_MAX_VALUES values). */
#define GW_GEN_HEX 32
#define GW_INPUT_MAX (CIO_HDR_BYTES + 8 * (size_t)CIO_MAX_VALUES + CIO_SEED_BYTES + \
		      MPC_MAX_PARTIES * CIO_TAG_BYTES)

struct gw_settings {
	/* The session service. */
	const char *session_url;
	const char *session_ca, *session_cert, *session_key;
	const char *session_pin; /* hex SHA-256 of its certificate, or NULL */
	int64_t session_timeout_ms, session_connect_timeout_ms, session_retries, session_pool;
	/* Administrators. */
	bool admin_cert;               /* a client certificate with role admin is a credential */
	const char *admin_tokens_file; /* "<name> <hex hash>" lines, or NULL: no tokens */
	/* API keys. */
	int64_t key_cache_ms; /* how long a positive verification is reused (0: never) */
	/* Rate limits: sustained requests per second and burst, per credential (0: off). */
	double key_rate, admin_rate;
	int64_t key_burst, admin_burst;
	int64_t limit_buckets;
	/* CORS. */
	const char *cors_origins; /* comma-separated origins, "*" for any, "" for none */
	bool cors_admin;          /* CORS on the admin API too */
	int64_t cors_max_age_s;
	/* The parties, for generations: mutual TLS with the gateway's certificate (default:
	 * the session.* files), each party pinned to the fingerprint the registry has. */
	const char *parties_ca, *parties_cert, *parties_key;
	int64_t parties_timeout_ms, parties_connect_timeout_ms;
	int64_t parties_stream_retries; /* reconnections to a party's event stream */
	/* The client's event streams. */
	int64_t stream_heartbeat_ms;
	int64_t stream_abandon_ms;      /* no client attached this long: cancel at the parties */
	int64_t stream_max_generations; /* unfinished generations at once */
	int64_t stream_buffer_bytes;    /* replay buffer per generation, and how far a client may lag */
	int64_t stream_keep_ms;         /* a finished generation stays this long for resumption */
	/* Plaintext mode (openai.c): the OpenAI API for these sessions, off when empty. */
	const char *openai_sessions;  /* comma-separated session ids */
	const char *openai_tokenizer; /* the llama2.c tokenizer file */
	const char *openai_url;       /* the gateway's own client API (default: localhost, its port) */
	const char *openai_ca;        /* the CA of that URL (default session.ca) */
	int64_t openai_max_tokens, openai_concurrency;
};

extern struct gw_settings gw_settings;

/* ---- rate limits (limit.c): token buckets by credential ---- */
struct gw_limits;
int gw_limits_new(struct gw_limits **out, size_t buckets);
void gw_limits_free(struct gw_limits *l);
/* Takes one token from the bucket of key (rate per second, burst at most). Returns
 * true when allowed; otherwise false with *retry_after_s the whole seconds until a
 * token is back (>= 1). rate <= 0 always allows. */
bool gw_limits_take(struct gw_limits *l, const char *key, double rate, double burst,
		    int64_t now_ms, unsigned *retry_after_s);

/* ---- the session service (upstream.c): a pool of mTLS clients ---- */
struct gw_upstream;
/* outcomes: a counter family labelled "outcome" (2xx, 4xx, 5xx, unreachable, timeout,
 * tls), borrowed. */
int gw_upstream_new(struct gw_upstream **out, const struct gw_settings *s, struct metric *outcomes);
void gw_upstream_free(struct gw_upstream *u);
/* One request to the session service: extra headers as for httpc_request. The
 * X-Request-Id of the edge request goes along, so both services log the same id.
 * Returns 0 when an HTTP answer came (check resp->status), or the transport error. */
int gw_upstream_call(struct gw_upstream *u, struct http_req *r, const char *method,
		     const char *path, const char *actor, const void *body, size_t len,
		     struct httpc_resp *resp);
/* Whether /healthz of the session service answers, cached for a second; why says why
 * not. */
bool gw_upstream_ready(struct gw_upstream *u, char *why, size_t cap);

/* ---- generations relayed to the parties (relay.c) ---- */
struct gw_relay; /* the table of generations, the janitor thread */
struct gw_gen;   /* one generation: refcounted, see gw_gen_put */

struct gw_party_ep {
	unsigned index;
	char identity[REG_NAME_MAX + 1];
	char url[REG_ENDPOINT_MAX + 1];
	uint8_t fp[32]; /* SHA-256 of the party's certificate, pinned */
};

/* What starts a generation: checked by the handler against the registry. */
struct gw_gen_spec {
	const char *session;    /* ses_... */
	const char *key_id;     /* the API key that starts it; only it may use it */
	const char *request_id; /* of the starting request, carried into error events */
	unsigned nparties;
	struct gw_party_ep ep[MPC_MAX_PARTIES];
	uint8_t client_pk[CIO_KEY_BYTES];
	uint32_t slots, max_tokens, n_in;
	json_t *sampling; /* borrowed: the parties' sampling object */
};

/* Why an operation was refused: the problem to answer with. */
struct gw_fail {
	int code;
	unsigned status;
	char detail[480];
	char field[48]; /* "" when no field is at fault */
};

struct gw_relay_metrics {
	struct metric *outcomes;             /* generations ended, by outcome */
	struct metric_series *running;       /* gauge: unfinished generations */
	struct metric_series *tokens;        /* token events relayed */
	struct metric_series *resumes;       /* clients reattached with Last-Event-ID */
	struct metric_series *abandoned;     /* generations cancelled for want of a client */
};

int gw_relay_new(struct gw_relay **out, const struct gw_settings *s, const struct gw_relay_metrics *m);
/* Cancels the unfinished generations at their parties, waits briefly for the reader
 * threads and frees what no thread holds any more. Accepts NULL. */
void gw_relay_free(struct gw_relay *rl);

/* Starts a generation at every party of the spec and its reader threads. On success
 * *out holds a reference (gw_gen_put); on failure f says what to answer. */
int gw_gen_start(struct gw_relay *rl, const struct gw_gen_spec *sp, struct gw_gen **out, struct gw_fail *f);
/* The generation gid of session, started with key_id, with a reference; NULL when
 * there is none (or it belongs to another key). */
struct gw_gen *gw_gen_find(struct gw_relay *rl, const char *session, const char *gid, const char *key_id);
void gw_gen_put(struct gw_gen *g);
const char *gw_gen_id(const struct gw_gen *g);
/* Its public view (the Generation schema). */
json_t *gw_gen_json(struct gw_gen *g);
uint64_t gw_gen_last_event(struct gw_gen *g);
/* How far a client's stream may fall behind: the whole replay buffer, and more. */
size_t gw_gen_stream_buffer(const struct gw_gen *g);
/* Attaches a client stream (see gw_evlog_attach). */
int gw_gen_attach(struct gw_gen *g, struct http_stream *st, uint64_t after);
/* Relays the client's INPUT message to every party unchanged. */
int gw_gen_input(struct gw_gen *g, const void *msg, size_t len, struct gw_fail *f);
/* Asks every party to stop at the next token boundary. */
int gw_gen_cancel(struct gw_gen *g, struct gw_fail *f);

/* ---- the service context ---- */
struct gw_token {
	char name[GW_NAME_MAX + 1];
	uint8_t hash[32];
};

struct gw_key_cache; /* auth.c: positive API key verifications, briefly */

struct gw_ctx {
	struct gw_settings set;
	struct gw_upstream *up;
	struct gw_limits *limits;
	struct gw_key_cache *keys;
	struct gw_token tokens[GW_ADMIN_TOKENS_MAX];
	size_t n_tokens;
	char origins[GW_ORIGINS_MAX][GW_ORIGIN_MAX + 1];
	size_t n_origins;
	bool any_origin;
	/* Model facts are immutable once registered: the client view caches them. */
	pthread_mutex_t models_mu;
	struct gw_model_fact {
		char id[24];
		json_t *facts; /* {id, name, dims} */
	} models[64];
	size_t n_models;
	struct metric *m_auth_fail, *m_limited, *m_upstream, *m_upstream_fault, *m_preflight;
	struct metric_series *m_upstream_s, *m_cache_hit, *m_cache_miss;
	struct gw_relay *relay;
	struct gw_relay_metrics rm;
	struct oai *oai; /* plaintext mode, or NULL */
};

/* ---- the edge (edge.c, cors.c, auth.c) ---- */
enum gw_api { GW_API_ADMIN, GW_API_CLIENT };

/* Adds the CORS response headers a request from an allowed Origin gets (none when the
 * request has no Origin, the origin is not allowed, or CORS is off for api). */
void gw_cors_headers(struct http_req *r, struct gw_ctx *c, enum gw_api api);
/* OPTIONS on any route: a CORS preflight (204 with the allowed methods and headers,
 * or 403 for an origin or a method that is not allowed), or a plain OPTIONS (204 with
 * Allow). */
int gw_preflight(struct http_req *r, void *ctx);

/* The administrator behind a request. */
struct gw_admin {
	char actor[GW_ACTOR_MAX + 1]; /* "cert:<CN>" or "token:<name>", for X-Mimir-Actor */
	const char *credential;       /* "certificate" or "token" */
};
/* Finds the admin credential (certificate first, then bearer token) and applies the
 * administrator's rate limit. On refusal it has replied (401, 429) and returns the
 * error; 0 when the request may go on. */
int gw_admin_auth(struct http_req *r, struct gw_ctx *c, struct gw_admin *out);

/* A client's API key, verified for one session. */
struct gw_client {
	char key_id[24];
};
/* Reads the bearer API key, applies its rate limit and has the session service verify
 * it for session_id (a positive answer is reused for key_cache_ms). On refusal it has
 * replied (401, 403, 429, 503) and returns the error. */
int gw_client_auth(struct http_req *r, struct gw_ctx *c, const char *session_id,
		   struct gw_client *out);
/* Creates and frees the verification cache. */
int gw_key_cache_new(struct gw_key_cache **out);
void gw_key_cache_free(struct gw_key_cache *k);
/* Reads admin.tokens_file into c->tokens. */
int gw_tokens_load(struct gw_ctx *c, const char *path);
/* The hash the tokens file holds for a token. */
void gw_token_hash(const char *token, uint8_t out[32]);

/* Replies with a problem for a failed upstream call (transport error rc, or an
 * answer that is not what the session service promises). Returns the error code. */
int gw_upstream_fail(struct http_req *r, struct gw_ctx *c, int rc, const struct httpc_resp *resp);
/* Relays an upstream answer (JSON or problem+json) as it is; secret: the body carries
 * a secret (a new API key), so the server's copy is wiped once sent. */
int gw_relay(struct http_req *r, struct gw_ctx *c, const struct httpc_resp *resp, bool secret);
/* The model's facts {id, name, dims} (cached: they never change): a new reference, or
 * NULL after replying with the problem. */
json_t *gw_model_facts(struct http_req *r, struct gw_ctx *c, const char *id);
/* Whether s is an object id of the registry ("ses_" + 16 lowercase hex digits). */
bool gw_id_ok(const char *s, const char *prefix);
int64_t gw_now_ms(void);

/* ---- handlers ---- */
int gw_admin_forward(struct http_req *r, void *ctx); /* every /admin/v1 route of the registry */
int gw_admin_whoami(struct http_req *r, void *ctx);
int gw_client_session_get(struct http_req *r, void *ctx);
/* stream.c: the client's generations */
int gw_gen_create(struct http_req *r, void *ctx);
int gw_gen_get(struct http_req *r, void *ctx);
int gw_gen_events(struct http_req *r, void *ctx);
int gw_gen_post_input(struct http_req *r, void *ctx);
int gw_gen_post_cancel(struct http_req *r, void *ctx);

/* ---- plaintext mode (openai.c) ---- */
/* Reads openai.*; leaves c->oai NULL when openai.sessions is empty. */
int gw_oai_init(struct gw_ctx *c);
int gw_oai_models(struct http_req *r, void *ctx);
int gw_oai_completions(struct http_req *r, void *ctx);

#endif
