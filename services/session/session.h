/* mimir-session: the session registry service. A thin REST layer (JSON in, JSON or
 * problem+json out) over common/registry: models, parties, sessions, API keys and the
 * audit log, for the administrator and the gateway; parties report their own
 * initialisation. This header is shared by the service's files: its settings, its
 * context, the handlers of the route table, and the helpers that turn peers into
 * audit actors, registry errors into problems and entities into JSON. */
#ifndef MIMIR_SESSION_H
#define MIMIR_SESSION_H

#include <pthread.h>
#include <stdbool.h>

#include "http/http.h"
#include "registry/registry.h"

struct metric;
struct metric_series;

/* Who may call what: administrators, and the gateway that forwards their requests
 * and checks clients' keys; parties (and the dealer) read the sessions they serve. */
#define SESSION_ADMIN (HTTP_ROLE(IDENT_ROLE_ADMIN) | HTTP_ROLE(IDENT_ROLE_GATEWAY))
#define SESSION_READERS (SESSION_ADMIN | HTTP_ROLE(IDENT_ROLE_PARTY) | HTTP_ROLE(IDENT_ROLE_DEALER))
#define SESSION_PARTY HTTP_ROLE(IDENT_ROLE_PARTY)

/* The header a gateway sets to name the administrator it forwards for; recorded in the
 * audit actor, and ignored from any other peer. */
#define SESSION_ACTOR_HEADER "X-Mimir-Actor"

#define SESSION_PAGE_DEFAULT 50

struct session_settings {
	const char *db_path;
	int64_t db_connections;
	int64_t db_busy_timeout_ms;
	int64_t db_busy_retries;
	const char *secret_file;
	bool secret_create;
	int64_t session_default_ttl_s;
	int64_t session_max_ttl_s;
	int64_t session_fixed_point_bits;
	int64_t sweep_interval_s;
	int64_t key_default_ttl_s;
	int64_t key_max_ttl_s;
	/* The dealer the provisioner tells about sessions (provision.c); NULL: none. */
	const char *dealer_url, *dealer_ca, *dealer_cert, *dealer_key, *dealer_pin;
	int64_t dealer_timeout_ms;
	/* The parties it opens sessions at (provision_parties.c): client CA, certificate
	 * and key (NULL: the dealer.* ones), the dealer URL handed to the parties (NULL:
	 * dealer.url), request and initialisation bounds. */
	bool parties_provision;
	const char *parties_ca, *parties_cert, *parties_key, *parties_dealer_url;
	int64_t parties_timeout_ms, parties_init_timeout_ms;
};

extern struct session_settings session_settings;

struct session_ctx {
	struct session_settings set;
	struct reg *reg;
	/* /readyz probes the database with a real write, at most once a second. */
	pthread_mutex_t ready_mu;
	int64_t ready_checked_ms;
	bool ready_ok;
	char ready_why[256];
	/* The sweeper closes expired sessions and refreshes the gauges. */
	pthread_t sweeper;
	bool sweeper_running;
	bool stop;
	pthread_mutex_t stop_mu;
	pthread_cond_t stop_cv;
	struct session_prov *prov; /* NULL without a dealer */
	struct metric *m_sessions;
	struct metric_series *m_audit_head;
	struct metric *m_verify;
};

/* ---- the provisioner (provision.c) ---- */

struct metrics;
struct session_prov;
/* Starts the thread that posts CREATED sessions to the dealer, then opens them at their
 * parties and follows them to ready (or failed), and deletes closed and failed ones at
 * the dealer and the parties; *out stays NULL (and 0 is returned) when dealer.url is
 * not set. ERR_CONFIG for an incomplete configuration (logged). */
int session_prov_start(struct session_ctx *c, struct metrics *m, struct session_prov **out);
/* Wakes it now (a session was created or closed). NULL: no-op. */
void session_prov_kick(struct session_prov *p);
void session_prov_stop(struct session_prov *p); /* accepts NULL */

/* ---- helpers (util.c) ---- */

/* The audit actor of a request: "<role>:<cn>", and for a gateway that names the
 * administrator it forwards for, "gateway:<cn> for <name>". */
struct session_actor {
	char text[REG_ACTOR_MAX + 1];
	struct reg_actor actor;
};
void session_actor(struct http_req *r, struct session_actor *out);

/* Replies with the problem for a registry failure rc (the thread's reg_last_error()
 * detail and field when they belong to rc). Returns rc. */
int session_fail(struct http_req *r, int rc);
/* ?after=<cursor>&limit=<n>: replies 400 naming the parameter and returns an error
 * when one is malformed. */
int session_page(struct http_req *r, int64_t *after, size_t *limit);
/* {"items": items (stolen), "next": "<cursor>" | null}. */
int session_reply_page(struct http_req *r, json_t *items, int64_t next);
/* Whether the request has a body at all (an empty body counts as {}). */
bool session_has_body(struct http_req *r);
/* A JSON array of strings, each 1..max bytes: otherwise replies 400 naming
 * "<field>[i]" and returns an error. */
int session_string_array(struct http_req *r, json_t *arr, const char *field, size_t max,
			 const char **out, size_t cap, size_t *n);

json_t *session_time_json(int64_t ms); /* RFC 3339 UTC with milliseconds; null for 0 */
json_t *session_hex_json(const uint8_t *b, size_t n);
json_t *session_model_json(const struct reg_model *m);
json_t *session_party_json(const struct reg_party *p);
/* parties: the session's parties in detail, or NULL for ids and progress only. */
json_t *session_session_json(const struct reg_session *s, const struct reg_party *parties,
			     int64_t now_ms);
json_t *session_key_json(const struct reg_key *k, int64_t now_ms);
json_t *session_audit_json(const struct reg_audit_entry *e);
json_t *session_head_json(const struct reg_audit_head *h);
int64_t session_now_ms(void);

/* ---- handlers, one file per group ---- */
int session_model_create(struct http_req *r, void *ctx);
int session_model_list(struct http_req *r, void *ctx);
int session_model_get(struct http_req *r, void *ctx);
int session_model_delete(struct http_req *r, void *ctx);

int session_party_create(struct http_req *r, void *ctx);
int session_party_list(struct http_req *r, void *ctx);
int session_party_get(struct http_req *r, void *ctx);
int session_party_update(struct http_req *r, void *ctx);

int session_session_create(struct http_req *r, void *ctx);
int session_session_list(struct http_req *r, void *ctx);
int session_session_get(struct http_req *r, void *ctx);
int session_session_transition(struct http_req *r, void *ctx);
int session_session_close(struct http_req *r, void *ctx);
int session_session_init(struct http_req *r, void *ctx);

int session_key_create(struct http_req *r, void *ctx);
int session_key_list(struct http_req *r, void *ctx);
int session_key_get(struct http_req *r, void *ctx);
int session_key_revoke(struct http_req *r, void *ctx);
int session_key_verify(struct http_req *r, void *ctx);

int session_audit_list(struct http_req *r, void *ctx);
int session_audit_head(struct http_req *r, void *ctx);
int session_audit_verify(struct http_req *r, void *ctx);

#endif
