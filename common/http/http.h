/* http: the HTTP(S) server every Mimir service runs, over libmicrohttpd.
 *
 * A service declares a sentinel-terminated route table (method, path pattern with
 * {params}, handler, roles allowed, body limit). The server reads the whole body within
 * its limit (413 past it), matches the route (404, or 405 with Allow), checks the peer's
 * role (403), and calls the handler in one of its pool threads. Handlers answer with
 * exactly one http_reply_*() call, or defers the answer to another thread with
 * http_reply_later(); a handler that returns an error code without replying gets a
 * problem+json answer for that code.
 *
 * TLS is mandatory mutual TLS: libmicrohttpd's GnuTLS engine does the handshake and
 * refuses, inside the handshake, a client with no certificate or one that does not
 * chain to the Mimir CA (or is expired, or lacks clientAuth). The one exception is a
 * server configured with client_cert_optional (see below). A server given a peer
 * verifier (common/attestpeer: tls.crl, tls.mode) also refuses there a revoked
 * certificate and, in production mode, one that is not an attested identity. The
 * verified peer certificate is read with OpenSSL into a struct ident (role, names,
 * measurement) that handlers see through http_req_peer().
 *
 * Every server also answers GET /healthz, /readyz and /metrics, logs one line per
 * request, counts requests and durations, and on http_server_shutdown() stops
 * accepting, lets in-flight requests finish (up to a drain timeout), then stops. */
#ifndef MIMIR_HTTP_H
#define MIMIR_HTTP_H

#include <jansson.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "ident/ident.h"
#include "jspec/jspec.h"

struct attestpeer;
struct metrics;
struct sockaddr;
struct http_server;
struct http_req;    /* one request; valid from handler entry until its reply is sent */
struct http_stream; /* a streamed response body (server-sent events and the like) */

typedef int (*http_handler_fn)(struct http_req *req, void *svc_ctx);

/* Bit (1u << role) for each enum ident_role allowed; 0 means any authenticated peer. */
#define HTTP_ROLE(r) (1u << (r))

/* Route flags. */
#define HTTP_ROUTE_QUIET 1u /* per-request access log at debug level (high-rate routes
			       such as MPC rounds); failures are still logged */
#define HTTP_ROUTE_SECRET 2u /* the request body carries secrets: wiped when released */
#define HTTP_ROUTE_PUBLIC 4u /* callable without a client certificate, on a server whose
				client_cert_optional is set (no effect otherwise) */

struct http_route {
	const char *method;  /* "GET", "POST", ... ; NULL ends the table */
	const char *pattern; /* "/v1/sessions/{id}/tokens": {name} matches one segment */
	http_handler_fn fn;
	unsigned roles;      /* HTTP_ROLE() mask of peer roles allowed; 0 = any */
	size_t max_body;     /* 0 = the server's default */
	unsigned flags;      /* HTTP_ROUTE_* */
};

struct http_server_config {
	const char *service;       /* name for logs and metrics labels */
	const char *bind;          /* numeric address, "127.0.0.1" or "::" (default 127.0.0.1) */
	uint16_t port;             /* 0 = an ephemeral port (see http_server_port) */
	unsigned threads;          /* worker threads (default 4) */
	size_t max_body;           /* default request body limit (default 1 MiB) */
	unsigned idle_timeout_s;   /* close connections idle this long (default 30) */
	unsigned drain_timeout_ms; /* graceful shutdown wait for in-flight work (default 10000) */
	unsigned max_connections;  /* default 1024 */
	/* TLS: all three PEM paths set -> HTTPS with mandatory client certificates; all
	 * NULL -> plain HTTP, for development only, and logged as a warning. */
	const char *tls_cert;
	const char *tls_key;
	const char *tls_ca;
	/* Readiness probe for /readyz (NULL = always ready); true when ready, else
	 * fills why (a short reason). */
	bool (*ready)(void *svc_ctx, char *why, size_t cap);
	/* TLS only. Default false: every client must present a certificate. When true the
	 * server asks for one but lets a client without any finish the handshake; such a
	 * client reaches only HTTP_ROUTE_PUBLIC routes and gets 401 everywhere else (the
	 * built-in endpoints included). A certificate that is presented is verified
	 * inside the handshake exactly as in the default mode. For the one service that
	 * must serve peers before they have a certificate (attest). */
	bool client_cert_optional;
	/* TLS only. NULL: the chain decides alone. Else the server takes a reference and
	 * applies it in the handshake (CRLs of tls.crl, the production rule of tls.mode);
	 * a CRL reloaded later applies to open connections from their next request on
	 * (403 problem+json, then the connection closes). */
	struct attestpeer *peers;
	/* Plain HTTP by design on a loopback bind (a local proxy): logged at info, not as a
	 * development-only warning. The caller checks that bind is a loopback address. */
	bool plain_loopback;
};

/* Creates and starts the server. routes is borrowed (usually a static table) and must
 * outlive the server; svc_ctx is passed to every handler; metrics is borrowed (NULL:
 * the server makes its own registry). Returns 0 or ERR_*; on error *out is NULL and a
 * log line says why. */
int http_server_start(struct http_server **out, const struct http_server_config *cfg,
		      const struct http_route *routes, void *svc_ctx, struct metrics *metrics);
/* The bound port (useful with port 0). */
uint16_t http_server_port(const struct http_server *s);
struct metrics *http_server_metrics(struct http_server *s);
/* Stops accepting connections, waits for in-flight requests and open streams up to
 * the drain timeout (streams are closed first), then stops. Idempotent. */
void http_server_shutdown(struct http_server *s);
/* Shuts down if still running and frees. Accepts NULL. Streams the service still holds
 * stay valid (writes return ERR_CANCELLED) until it closes them. */
void http_server_free(struct http_server *s);

/* Signals: call http_signals_block() first thing in main (before any thread starts)
 * so that SIGTERM/SIGINT/SIGHUP are delivered only to http_signals_wait(), which
 * returns the signal number that arrived. SIGPIPE is ignored. */
void http_signals_block(void);
int http_signals_wait(void);

/* ---- requests ---- */
const char *http_req_method(const struct http_req *r);
const char *http_req_path(const struct http_req *r);
const char *http_req_route(const struct http_req *r); /* the matched pattern */
/* Path parameter by name ("id" for {id}), NULL if absent. */
const char *http_req_param(const struct http_req *r, const char *name);
const char *http_req_query(const struct http_req *r, const char *key);
const char *http_req_header(const struct http_req *r, const char *name);
const void *http_req_body(const struct http_req *r, size_t *len);
/* Verified TLS peer, NULL on plain HTTP. */
const struct ident *http_req_peer(const struct http_req *r);
/* Whether the server serves TLS (https) or plain HTTP. */
bool http_req_tls(const struct http_req *r);
/* The client's address (struct sockaddr_in or sockaddr_in6), for per-address limits;
 * NULL when unknown. Valid until the reply is sent. */
const struct sockaddr *http_req_remote_addr(const struct http_req *r);
/* The request id: the caller's X-Request-Id when well formed, else a fresh one. It is
 * in every log line of the handler's thread and in the X-Request-Id response header. */
const char *http_req_id(const struct http_req *r);
/* The server's port the request arrived on (http_server_port of its server). */
uint16_t http_req_local_port(const struct http_req *r);

/* Parses the body as a JSON object against spec (see jspec.h). On failure it replies
 * 400 problem+json naming the field and returns the error; the handler then just
 * returns that code. On success *root owns the document (decref it when done). */
int http_req_json(struct http_req *r, const struct jspec_field *spec, unsigned flags,
		  json_t **root);

/* ---- replies: exactly one per request ---- */
/* Adds a response header to the reply about to be made (bounded: 16 headers). */
int http_reply_header(struct http_req *r, const char *name, const char *value);
/* body is stolen (decref'd by the call). */
int http_reply_json(struct http_req *r, unsigned status, json_t *body);
int http_reply_data(struct http_req *r, unsigned status, const char *content_type,
		    const void *data, size_t len);
/* Like http_reply_data for secret bytes (seeds, shares): the server's copy is wiped
 * when the response is released. */
int http_reply_secret(struct http_req *r, unsigned status, const char *content_type,
		      const void *data, size_t len);
/* problem+json (RFC 9457) for code, with the code's status. field may be NULL. */
int http_reply_problem(struct http_req *r, int code, const char *detail, const char *field);
int http_reply_problem_status(struct http_req *r, int code, unsigned status,
			      const char *detail, const char *field);

/* ---- streamed replies ----
 * http_reply_stream() answers 200 with the given content type and returns a stream the
 * service writes to from any thread, after the handler has returned. The stream holds
 * two references, the connection's and the caller's; http_stream_close() drops the
 * caller's (and ends the body once written). Writes after the client has gone return
 * ERR_CANCELLED, so producers learn of a disconnect on their next write. When nothing
 * was written for heartbeat_ms (0 = never), the server writes heartbeat bytes (for SSE
 * a comment line) so idle streams stay open and dead clients are found. A client that
 * falls more than max_buffer bytes behind is dropped (ERR_TOO_LARGE). */
int http_reply_stream(struct http_req *r, const char *content_type, unsigned heartbeat_ms,
		      const char *heartbeat, size_t max_buffer, struct http_stream **out);
int http_stream_write(struct http_stream *s, const void *data, size_t len);
bool http_stream_alive(struct http_stream *s);
void http_stream_close(struct http_stream *s);

/* ---- replies made later ----
 * A handler that cannot answer at once (the answer waits on long work in another
 * thread) calls http_reply_later() and returns; the connection is suspended (it costs
 * no thread) until the other thread answers through the handle with exactly one of
 * http_later_json / http_later_data / http_later_problem / http_later_stream, each of
 * which consumes the handle whatever it returns. Headers given to the request before
 * http_reply_later (and through http_later_header) go with the answer. On server
 * shutdown a pending request is answered 503 problem+json at once and the later call
 * returns ERR_CANCELLED. While suspended, a client that hangs up is not noticed until
 * the answer is made.
 *
 * The handle gives no access to the request: the handler copies what the work needs
 * (body, parameters, peer) before it returns, because the request is freed as soon as
 * the answer is sent, possibly before the other thread's call returns. Once
 * http_reply_later succeeded the handler's return code is ignored and no other
 * http_reply_* may be made for the request. http_reply_later returns ERR_UNAVAILABLE
 * (having answered 503) when the server is shutting down; the handler then returns that
 * code. The answering calls return 0 when the answer was handed to the connection, or
 * ERR_CANCELLED when nobody is left to take it (shutdown, or the connection ended);
 * ERR_INVALID / ERR_NOMEM mean the call was refused and a 500 / 503 problem answered
 * instead. The pending count is the mimir_http_requests_deferred gauge (those requests
 * are in mimir_http_requests_in_flight as well). */
struct http_later;
int http_reply_later(struct http_req *r, struct http_later **out);
/* Bounded with the request's own headers (16 in all); ERR_CANCELLED once answered. */
int http_later_header(struct http_later *l, const char *name, const char *value);
const char *http_later_request_id(const struct http_later *l); /* for problem bodies and logs */
int http_later_json(struct http_later *l, unsigned status, json_t *body);          /* body stolen */
/* Like http_reply_data: data is copied. */
int http_later_data(struct http_later *l, unsigned status, const char *content_type,
		    const void *data, size_t len);
int http_later_problem(struct http_later *l, int code, unsigned status /* 0: the code's */,
		       const char *detail, const char *field);
/* Begins a streamed 200 answer (as http_reply_stream): *out is usable at once (writes
 * are buffered until the connection resumes and the body starts). *out is set only on
 * success; the caller then owns it and ends it with http_stream_close. */
int http_later_stream(struct http_later *l, const char *content_type, unsigned heartbeat_ms,
		      const char *heartbeat, size_t max_buffer, struct http_stream **out);

/* ---- routing, exposed for tests ---- */
#define HTTP_MAX_PARAMS 8
struct http_params {
	size_t n;
	char name[HTTP_MAX_PARAMS][32];
	char value[HTTP_MAX_PARAMS][256];
};
/* True when path matches pattern; fills params. */
bool http_path_match(const char *pattern, const char *path, struct http_params *p);
/* Finds the route for (method, path). Returns the route, or NULL with *allow filled
 * with the comma-separated methods that do match the path ("" when none: 404). */
const struct http_route *http_route_find(const struct http_route *routes, const char *method,
					 const char *path, struct http_params *p, char *allow,
					 size_t allow_cap);

#endif
