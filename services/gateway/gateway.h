/* mimir-gateway: the only public edge of a Mimir deployment. Two APIs share it: the
 * administrator's (/admin/v1/..., its own credential: a client certificate with role
 * admin, or an admin bearer token the gateway stores only hashed), forwarded to the
 * session service over mutual TLS with the administrator named in X-Mimir-Actor; and
 * the client's (/v1/...), authenticated by an API key the session service verifies.
 * Around both: per-credential token-bucket rate limits, body limits, CORS for browser
 * clients, problem+json for every refusal.
 *
 * This header is shared by the service's files: settings, context, the edge helpers
 * every handler goes through (CORS, credentials, limits, the upstream pool) and the
 * handlers of the route table. The client's token stream (generations relayed from
 * the parties as server-sent events) is not built yet; it slots in as one more file of
 * handlers that starts with gw_client_auth(), like gw_client_session_get(), and keeps
 * its per-generation sse_log in the context (see docs/GATEWAY.md). */
#ifndef MIMIR_GATEWAY_H
#define MIMIR_GATEWAY_H

#include <pthread.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "http/http.h"
#include "httpc/httpc.h"

struct metric;
struct metric_series;
struct metrics;

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
/* Whether s is an object id of the registry ("ses_" + 16 lowercase hex digits). */
bool gw_id_ok(const char *s, const char *prefix);
int64_t gw_now_ms(void);

/* ---- handlers ---- */
int gw_admin_forward(struct http_req *r, void *ctx); /* every /admin/v1 route of the registry */
int gw_admin_whoami(struct http_req *r, void *ctx);
int gw_client_session_get(struct http_req *r, void *ctx);

#endif
