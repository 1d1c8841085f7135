/* http server: libmicrohttpd in thread-pool mode with GnuTLS mutual TLS, a route table,
 * bounded bodies, built-in health and metrics endpoints, one log line and two metrics
 * per request, and a graceful shutdown. The request lifecycle is the one of
 * libmicrohttpd's access handler: the first call sees the headers (routing, role and
 * Content-Length checks can answer at once), later calls bring body chunks, the last
 * call (no data) runs the handler. */
#include <arpa/inet.h>
#include <errno.h>
#include <gnutls/gnutls.h>
#include <gnutls/x509.h>
#include <microhttpd.h>
#include <netdb.h>
#include <pthread.h>
#include <signal.h>
#include <sodium.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#include "attestpeer/attestpeer.h"
#include "buf/buf.h"
#include "err/err.h"
#include "http/http.h"
#include "http/http_int.h"
#include "log/log.h"
#include "metrics/metrics.h"

#define MAX_HEADERS HTTP_REPLY_HEADERS
#define DISCARD_CAP ((size_t)64 << 20) /* past this, an oversize body closes the link */

struct http_req {
	struct http_server *srv;
	struct MHD_Connection *conn;
	const char *method;
	const char *path;
	const struct http_route *route;
	const char *route_label;
	struct http_params params;
	char id[65];
	struct buf body; /* bounded by the route's limit */
	size_t discarded;
	bool too_large;
	bool replied;
	bool streamed;
	bool later_out;            /* the later handle's answer is being queued */
	struct http_later *later;  /* set by http_reply_later, until the connection ends */
	unsigned status;
	size_t resp_bytes;
	const struct ident *peer;
	struct timespec start;
	size_t nhdr;
	char hdr_name[MAX_HEADERS][HTTP_HEADER_NAME_MAX];
	char hdr_value[MAX_HEADERS][HTTP_HEADER_VALUE_MAX];
};

/* Per connection: the handshake's verdict on the client certificate and the peer
 * identity, parsed once (in the handshake when the server has a peer verifier, else
 * at the first request). */
struct conn_ctx {
	struct http_server *srv;
	bool hello;          /* a ClientHello arrived (else: a bare TCP probe) */
	bool optional;       /* the server lets clients without a certificate in */
	bool anonymous;      /* ... and this one presented none */
	bool verified;       /* the certificate verification ran */
	unsigned vstatus;    /* its gnutls_certificate_status_t bits (0: accepted) */
	bool loaded;
	int rc;
	unsigned requests;
	struct ident peer;
	/* With a peer verifier (tls.crl, tls.mode): the CRL generation the certificate was
	 * last checked against, and the refusal, for the log line and the reply. */
	uint64_t crl_gen;
	const char *rule;    /* the verdict's reason when refused, else NULL */
	char why[256];
};

static const gnutls_typed_vdata_st client_purpose = {
	.type = GNUTLS_DT_KEY_PURPOSE_OID,
	.data = (unsigned char *)GNUTLS_KP_TLS_WWW_CLIENT,
};

static double elapsed_s(const struct timespec *t0)
{
	struct timespec t;
	clock_gettime(CLOCK_MONOTONIC, &t);
	return (double)(t.tv_sec - t0->tv_sec) + (double)(t.tv_nsec - t0->tv_nsec) / 1e9;
}

static char *read_pem(const char *path, int *rc)
{
	FILE *f = fopen(path, "rb");
	if (!f) {
		LOG_ERROR("http.tls_file", LOG_S("path", path), LOG_S("error", strerror(errno)),
			  LOG_S("hint", "check the tls.* paths in the service configuration"));
		*rc = ERR_CONFIG;
		return NULL;
	}
	char *buf = sodium_malloc(64 * 1024);
	size_t n = buf ? fread(buf, 1, 64 * 1024 - 1, f) : 0;
	bool more = buf && fgetc(f) != EOF;
	fclose(f);
	if (!buf || n == 0 || more) {
		LOG_ERROR("http.tls_file", LOG_S("path", path),
			  LOG_S("error", !buf ? "out of memory" : n == 0 ? "empty" : "larger than 64 KiB"));
		sodium_free(buf);
		*rc = buf ? ERR_CONFIG : ERR_NOMEM;
		return NULL;
	}
	buf[n] = '\0';
	return buf;
}

/* libmicrohttpd's fatal errors (MHD_PANIC) end the process; this says where and why
 * in the service's log first, which its default handler does only on a stderr that a
 * supervisor may not keep. */
static void mhd_panic(void *cls, const char *file, unsigned int line, const char *reason)
{
	(void)cls;
	LOG_ERROR("http.mhd_panic", LOG_S("file", file ? file : ""), LOG_I("line", line),
		  LOG_S("reason", reason ? reason : ""));
	abort();
}

__attribute__((format(printf, 2, 0))) static void mhd_logger(void *cls, const char *fmt, va_list ap)
{
	(void)cls;
	char msg[512];
	vsnprintf(msg, sizeof msg, fmt, ap);
	size_t l = strlen(msg);
	while (l && (msg[l - 1] == '\n' || msg[l - 1] == ' '))
		msg[--l] = '\0';
	LOG_WARN("http.mhd", LOG_S("msg", msg));
}

static void remote_addr(struct MHD_Connection *c, char *buf, size_t cap)
{
	const union MHD_ConnectionInfo *ci = MHD_get_connection_info(c, MHD_CONNECTION_INFO_CLIENT_ADDRESS);
	snprintf(buf, cap, "?");
	if (!ci || !ci->client_addr)
		return;
	const struct sockaddr *sa = ci->client_addr;
	char host[INET6_ADDRSTRLEN];
	if (sa->sa_family == AF_INET) {
		const struct sockaddr_in *s4 = (const void *)sa;
		inet_ntop(AF_INET, &s4->sin_addr, host, sizeof host);
		snprintf(buf, cap, "%s:%u", host, ntohs(s4->sin_port));
	} else if (sa->sa_family == AF_INET6) {
		const struct sockaddr_in6 *s6 = (const void *)sa;
		inet_ntop(AF_INET6, &s6->sin6_addr, host, sizeof host);
		snprintf(buf, cap, "[%s]:%u", host, ntohs(s6->sin6_port));
	}
}

static gnutls_session_t tls_session(struct MHD_Connection *c)
{
	const union MHD_ConnectionInfo *ci = MHD_get_connection_info(c, MHD_CONNECTION_INFO_GNUTLS_SESSION);
	return ci ? (gnutls_session_t)ci->tls_session : NULL;
}

/* The peer verifier's decision (revocation, production rule) on the connection's
 * certificate; fills cc's identity when accepted. In development mode a certificate
 * ident cannot read is left to the first request (401), as without a verifier. */
static int check_peer(struct http_server *s, gnutls_session_t ts, struct conn_ctx *cc)
{
	unsigned n = 0;
	const gnutls_datum_t *certs = gnutls_certificate_get_peers(ts, &n);
	struct attestpeer_verdict v;
	cc->crl_gen = attestpeer_poll(s->peers);
	int rc = certs && n ? attestpeer_check_der(s->peers, certs[0].data, certs[0].size, &cc->peer, &v)
			    : ERR_UNAUTHENTICATED;
	if (rc == 0) {
		cc->loaded = true;
		cc->rc = 0;
		if (v.simulated)
			LOG_WARN("tls.simulated_peer", LOG_S("cn", cc->peer.cn),
				 LOG_S("role", ident_role_name(cc->peer.role)),
				 LOG_S("detail", "peer accepted on simulated attestation (tls.allow_simulated): "
						 "development only, never with real shares"));
		return 0;
	}
	if (rc == ERR_PARSE && attestpeer_mode(s->peers) == ATTESTPEER_DEVELOPMENT)
		return 0;
	cc->loaded = true;
	cc->rc = rc == ERR_PARSE ? ERR_UNAUTHENTICATED : ERR_FORBIDDEN;
	cc->rule = rc == ERR_UNAUTHENTICATED ? "unreadable" : v.reason;
	snprintf(cc->why, sizeof cc->why, "%s", rc == ERR_UNAUTHENTICATED ? "no certificate" : v.detail);
	return rc;
}

/* Runs inside the handshake once the client's certificate chain has arrived: chain to
 * the Mimir CA, validity period, clientAuth purpose, then the peer verifier when the
 * server has one. A non-zero return aborts the handshake; the verdict is kept for the
 * log line written when the connection ends. */
static int verify_client(gnutls_session_t ts)
{
	struct conn_ctx *cc = gnutls_session_get_ptr(ts);
	unsigned status = 0, n = 0;
	if (!cc)
		return GNUTLS_E_CERTIFICATE_VERIFICATION_ERROR; /* no memory to hold a verdict */
	if (cc->optional && (!gnutls_certificate_get_peers(ts, &n) || n == 0)) {
		/* No certificate at all: allowed through to the public routes only. One
		 * that is presented is verified below like everywhere else. */
		cc->anonymous = true;
		return 0;
	}
	int rc = gnutls_certificate_verify_peers(ts, (gnutls_typed_vdata_st *)&client_purpose, 1, &status);
	if (rc < 0)
		status |= GNUTLS_CERT_INVALID;
	cc->verified = true;
	cc->vstatus = status;
	if (status != 0)
		return GNUTLS_E_CERTIFICATE_VERIFICATION_ERROR;
	if (cc->srv->peers && check_peer(cc->srv, ts, cc) != 0)
		return GNUTLS_E_CERTIFICATE_VERIFICATION_ERROR;
	return 0;
}

static int on_client_hello(gnutls_session_t ts, unsigned htype, unsigned when, unsigned incoming,
			   const gnutls_datum_t *msg)
{
	(void)htype, (void)when, (void)incoming, (void)msg;
	struct conn_ctx *cc = gnutls_session_get_ptr(ts);
	if (cc)
		cc->hello = true;
	return 0;
}

/* Why a TLS connection ended before any request, or NULL when it was not a refusal
 * (a probe that connected and left before saying hello). */
static const char *tls_refusal(const struct conn_ctx *cc, char *buf, size_t cap)
{
	if (cc->anonymous)
		return NULL;
	if (!cc->verified)
		return cc->hello ? "no client certificate presented" : NULL;
	if (cc->rule)
		return cc->why;
	if (cc->vstatus == 0)
		return NULL;
	gnutls_datum_t out = {0};
	if (gnutls_certificate_verification_status_print(cc->vstatus, GNUTLS_CRT_X509, &out, 0) == 0) {
		snprintf(buf, cap, "%s", (const char *)out.data);
		gnutls_free(out.data);
		for (size_t l = strlen(buf); l && buf[l - 1] == ' '; l--)
			buf[l - 1] = '\0';
	} else {
		snprintf(buf, cap, "certificate rejected (status 0x%x)", cc->vstatus);
	}
	return buf;
}

static void on_connection(void *cls, struct MHD_Connection *c, void **socket_ctx,
			  enum MHD_ConnectionNotificationCode code)
{
	struct http_server *s = cls;
	if (code == MHD_CONNECTION_NOTIFY_STARTED) {
		struct conn_ctx *cc = calloc(1, sizeof *cc);
		*socket_ctx = cc;
		if (cc)
			cc->srv = s;
		gnutls_session_t ts = s->tls ? tls_session(c) : NULL;
		if (ts) {
			/* Refuse inside the handshake: a certificate is required (unless
			 * the server lets anonymous clients reach its public routes), and
			 * it must chain to the Mimir CA, be valid now and allow clientAuth. */
			if (cc)
				cc->optional = s->cfg.client_cert_optional;
			gnutls_certificate_server_set_request(
				ts, s->cfg.client_cert_optional ? GNUTLS_CERT_REQUEST : GNUTLS_CERT_REQUIRE);
			gnutls_session_set_ptr(ts, cc);
			gnutls_session_set_verify_function(ts, verify_client);
			gnutls_handshake_set_hook_function(ts, GNUTLS_HANDSHAKE_CLIENT_HELLO,
							   GNUTLS_HOOK_POST, on_client_hello);
		}
		return;
	}
	struct conn_ctx *cc = *socket_ctx;
	if (code == MHD_CONNECTION_NOTIFY_CLOSED && cc) {
		gnutls_session_t ts = s->tls ? tls_session(c) : NULL;
		char why[256];
		const char *reason = (ts && cc->requests == 0) ? tls_refusal(cc, why, sizeof why) : NULL;
		if (reason) {
			char peer[64];
			remote_addr(c, peer, sizeof peer);
			const char *hint = !cc->rule ? "the client needs a certificate issued by this deployment's CA"
					   : !strcmp(cc->rule, "revoked")
						   ? "the certificate is revoked (tls.crl): the peer needs a new one"
						   : "production mode (tls.mode): the peer needs a certificate from attest, "
						     "issued after a successful attestation";
			LOG_WARN("tls.refused", LOG_S("remote", peer), LOG_S("reason", reason),
				 LOG_S("check", cc->rule ? cc->rule : "chain"), LOG_S("hint", hint));
			metric_inc(s->m_tls_refused_s);
		}
		sodium_memzero(cc, sizeof *cc);
		free(cc);
		*socket_ctx = NULL;
	}
}

/* The verified peer, or NULL: then *anonymous says whether the client presented no
 * certificate at all (possible only with client_cert_optional), and *refusal, when
 * set, why a certificate that was accepted no longer is (revoked since the handshake:
 * a reloaded CRL applies to open connections from their next request on). */
static const struct ident *conn_peer(struct http_server *s, struct MHD_Connection *c, bool *anonymous,
				     const char **refusal)
{
	*anonymous = false;
	*refusal = NULL;
	if (!s->tls)
		return NULL;
	const union MHD_ConnectionInfo *ci = MHD_get_connection_info(c, MHD_CONNECTION_INFO_SOCKET_CONTEXT);
	struct conn_ctx *cc = ci ? ci->socket_context : NULL;
	if (!cc)
		return NULL;
	cc->requests++;
	if (cc->anonymous) {
		*anonymous = true;
		return NULL;
	}
	if (!cc->loaded) {
		cc->loaded = true;
		cc->rc = ERR_UNAUTHENTICATED;
		gnutls_session_t ts = tls_session(c);
		unsigned n = 0;
		const gnutls_datum_t *certs = ts ? gnutls_certificate_get_peers(ts, &n) : NULL;
		if (certs && n > 0)
			cc->rc = ident_from_der(certs[0].data, certs[0].size, &cc->peer);
	}
	if (cc->rc == 0 && s->peers && attestpeer_poll(s->peers) != cc->crl_gen) {
		gnutls_session_t ts = tls_session(c);
		if (ts && check_peer(s, ts, cc) != 0)
			LOG_WARN("tls.peer_revoked", LOG_S("cn", cc->peer.cn), LOG_S("reason", cc->why),
				 LOG_S("detail", "a reloaded CRL refuses an open connection's certificate"));
	}
	if (cc->rc == ERR_FORBIDDEN)
		*refusal = cc->why;
	return cc->rc == 0 ? &cc->peer : NULL;
}

static void gen_request_id(struct http_req *r)
{
	const char *h = MHD_lookup_connection_value(r->conn, MHD_HEADER_KIND, "X-Request-Id");
	size_t l = h ? strlen(h) : 0;
	bool ok = l >= 1 && l <= 64;
	for (size_t i = 0; ok && i < l; i++)
		ok = (h[i] >= 'a' && h[i] <= 'z') || (h[i] >= 'A' && h[i] <= 'Z') ||
		     (h[i] >= '0' && h[i] <= '9') || h[i] == '-' || h[i] == '_' || h[i] == '.';
	if (ok) {
		memcpy(r->id, h, l + 1);
		return;
	}
	unsigned char rnd[8];
	randombytes_buf(rnd, sizeof rnd);
	sodium_bin2hex(r->id, sizeof r->id, rnd, sizeof rnd);
}

/* ---- replies ---- */

int http_reply_header(struct http_req *r, const char *name, const char *value)
{
	if (r->nhdr >= MAX_HEADERS || strlen(name) >= sizeof r->hdr_name[0] ||
	    strlen(value) >= sizeof r->hdr_value[0] || strpbrk(value, "\r\n"))
		return ERR_INVALID;
	snprintf(r->hdr_name[r->nhdr], sizeof r->hdr_name[0], "%s", name);
	snprintf(r->hdr_value[r->nhdr], sizeof r->hdr_value[0], "%s", value);
	r->nhdr++;
	return 0;
}

static int queue(struct http_req *r, unsigned status, const char *ctype, struct MHD_Response *resp)
{
	if (!resp)
		return ERR_NOMEM;
	if (r->replied || (r->later && !r->later_out)) {
		MHD_destroy_response(resp);
		LOG_ERROR("http.double_reply", LOG_S("route", r->route_label),
			  LOG_S("detail", r->replied ? "already answered" : "the answer was deferred (http_reply_later)"));
		return ERR_INTERNAL;
	}
	MHD_add_response_header(resp, "X-Request-Id", r->id);
	if (ctype)
		MHD_add_response_header(resp, MHD_HTTP_HEADER_CONTENT_TYPE, ctype);
	for (size_t i = 0; i < r->nhdr; i++)
		MHD_add_response_header(resp, r->hdr_name[i], r->hdr_value[i]);
	enum MHD_Result q = MHD_queue_response(r->conn, status, resp);
	MHD_destroy_response(resp);
	r->replied = true;
	r->status = status;
	return q == MHD_YES ? 0 : ERR_IO;
}

int http_reply_data(struct http_req *r, unsigned status, const char *content_type,
		    const void *data, size_t len)
{
	r->resp_bytes = len;
	return queue(r, status, content_type,
		     MHD_create_response_from_buffer(len, (void *)data, MHD_RESPMEM_MUST_COPY));
}

/* A secret response body: its length lives just before the bytes, so the free callback
 * (which gets only the pointer) can wipe all of it. */
struct secret_body {
	size_t len;
	max_align_t align[];
};

static void secret_free(void *p)
{
	struct secret_body *b = (struct secret_body *)((char *)p - offsetof(struct secret_body, align));
	sodium_memzero(p, b->len);
	free(b);
}

int http_reply_secret(struct http_req *r, unsigned status, const char *content_type,
		      const void *data, size_t len)
{
	struct secret_body *b = malloc(sizeof *b + (len ? len : 1));
	if (!b)
		return http_reply_problem(r, ERR_NOMEM, NULL, NULL);
	b->len = len;
	memcpy(b->align, data, len);
	struct MHD_Response *resp = MHD_create_response_from_buffer_with_free_callback(len, b->align, secret_free);
	if (!resp) {
		secret_free(b->align);
		return ERR_NOMEM;
	}
	r->resp_bytes = len;
	return queue(r, status, content_type, resp);
}

static int reply_json_ctype(struct http_req *r, unsigned status, json_t *body, const char *ctype)
{
	if (!body)
		return http_reply_problem(r, ERR_NOMEM, NULL, NULL);
	char *text = json_dumps(body, JSON_COMPACT);
	json_decref(body);
	if (!text)
		return http_reply_problem(r, ERR_NOMEM, NULL, NULL);
	size_t len = strlen(text);
	r->resp_bytes = len;
	return queue(r, status, ctype,
		     MHD_create_response_from_buffer(len, text, MHD_RESPMEM_MUST_FREE));
}

int http_reply_json(struct http_req *r, unsigned status, json_t *body)
{
	return reply_json_ctype(r, status, body, "application/json");
}

int http_reply_problem_status(struct http_req *r, int code, unsigned status, const char *detail,
			      const char *field)
{
	json_t *p = err_problem_status(code, (int)status, detail, field, r->id);
	if (!p) {
		static const char oom[] = "{\"title\":\"Out of memory\",\"status\":503}";
		return queue(r, 503, "application/problem+json",
			     MHD_create_response_from_buffer(sizeof oom - 1, (void *)oom, MHD_RESPMEM_PERSISTENT));
	}
	int level = status >= 500 ? LOG_LEVEL_ERROR : LOG_LEVEL_WARN;
	LOG_AT(level, "http.problem", LOG_S("route", r->route_label), LOG_I("status", status),
	       LOG_S("type", err_slug(code)), LOG_S("detail", detail ? detail : err_title(code)),
	       LOG_S("field", field ? field : ""));
	return reply_json_ctype(r, status, p, "application/problem+json");
}

int http_reply_problem(struct http_req *r, int code, const char *detail, const char *field)
{
	return http_reply_problem_status(r, code, (unsigned)err_http_status(code), detail, field);
}

/* ---- request accessors ---- */

const char *http_req_method(const struct http_req *r) { return r->method; }
const char *http_req_path(const struct http_req *r) { return r->path; }
const char *http_req_route(const struct http_req *r) { return r->route_label; }
const struct ident *http_req_peer(const struct http_req *r) { return r->peer; }
const char *http_req_id(const struct http_req *r) { return r->id; }
uint16_t http_req_local_port(const struct http_req *r) { return r->srv->port; }
bool http_req_tls(const struct http_req *r) { return r->srv->tls; }

const char *http_req_param(const struct http_req *r, const char *name)
{
	for (size_t i = 0; i < r->params.n; i++)
		if (strcmp(r->params.name[i], name) == 0)
			return r->params.value[i];
	return NULL;
}

const char *http_req_query(const struct http_req *r, const char *key)
{
	return MHD_lookup_connection_value(r->conn, MHD_GET_ARGUMENT_KIND, key);
}

const char *http_req_header(const struct http_req *r, const char *name)
{
	return MHD_lookup_connection_value(r->conn, MHD_HEADER_KIND, name);
}

const void *http_req_body(const struct http_req *r, size_t *len)
{
	if (len)
		*len = r->body.len;
	return r->body.data ? r->body.data : "";
}

int http_req_json(struct http_req *r, const struct jspec_field *spec, unsigned flags, json_t **root)
{
	struct jspec_error e;
	*root = NULL;
	int rc = jspec_parse_body(r->body.data ? r->body.data : "", r->body.len, spec, flags, root, &e);
	if (rc != 0) {
		http_reply_problem(r, e.code, e.detail, e.field[0] ? e.field : NULL);
		return rc;
	}
	return 0;
}

/* ---- built-in endpoints ---- */

static int h_healthz(struct http_req *r, void *ctx)
{
	(void)ctx;
	return http_reply_json(r, 200, json_pack("{s:s, s:s}", "status", "ok", "service", r->srv->service));
}

static int h_readyz(struct http_req *r, void *ctx)
{
	char why[256] = "not ready";
	if (r->srv->stopping)
		return http_reply_problem(r, ERR_UNAVAILABLE, "shutting down", NULL);
	if (r->srv->cfg.ready && !r->srv->cfg.ready(ctx, why, sizeof why))
		return http_reply_problem(r, ERR_UNAVAILABLE, why, NULL);
	return http_reply_json(r, 200, json_pack("{s:s}", "status", "ready"));
}

static int h_metrics(struct http_req *r, void *ctx)
{
	(void)ctx;
	char *text = NULL;
	size_t len = 0;
	pthread_mutex_lock(&r->srv->mu);
	metric_set(r->srv->m_inflight_s, r->srv->inflight);
	metric_set(r->srv->m_streams_s, r->srv->nstreams);
	metric_set(r->srv->m_deferred_s, r->srv->nlaters);
	pthread_mutex_unlock(&r->srv->mu);
	int rc = metrics_render(r->srv->metrics, &text, &len);
	if (rc != 0)
		return rc;
	r->resp_bytes = len;
	return queue(r, 200, "text/plain; version=0.0.4; charset=utf-8",
		     MHD_create_response_from_buffer(len, text, MHD_RESPMEM_MUST_FREE));
}

static const struct http_route builtin_routes[] = {
	{"GET", "/healthz", h_healthz, 0, 0},
	{"GET", "/readyz", h_readyz, 0, 0},
	{"GET", "/metrics", h_metrics, 0, 0},
	{NULL, NULL, NULL, 0, 0},
};

/* ---- the request lifecycle ---- */

static void first_call(struct http_server *s, struct http_req *r)
{
	char allow[128];
	bool anonymous;
	const char *refusal;
	r->peer = conn_peer(s, r->conn, &anonymous, &refusal);
	if (refusal) {
		http_reply_header(r, "Connection", "close");
		http_reply_problem(r, ERR_FORBIDDEN, refusal, NULL);
		return;
	}
	if (s->tls && !r->peer && !anonymous) {
		/* The handshake verified the chain, so this is a certificate we cannot
		 * read (a malformed Mimir extension): refuse rather than guess. */
		http_reply_problem(r, ERR_UNAUTHENTICATED, "client certificate identity unreadable", NULL);
		return;
	}
	r->route = http_route_find(builtin_routes, r->method, r->path, &r->params, allow, sizeof allow);
	if (!r->route) {
		char allow2[128];
		r->route = http_route_find(s->routes, r->method, r->path, &r->params, allow2, sizeof allow2);
		/* Built-in paths are reserved, so at most one table knows the path. */
		if (!r->route && allow2[0])
			memcpy(allow, allow2, sizeof allow);
	}
	if (!r->route) {
		r->route_label = "unmatched";
		if (allow[0]) {
			http_reply_header(r, "Allow", allow);
			char detail[192];
			snprintf(detail, sizeof detail, "%s is not allowed here; allowed: %s", r->method, allow);
			http_reply_problem(r, ERR_METHOD, detail, NULL);
		} else {
			http_reply_problem_status(r, ERR_NOT_FOUND, 404, "no such endpoint", NULL);
		}
		return;
	}
	r->route_label = r->route->pattern;
	if (anonymous && !(r->route->flags & HTTP_ROUTE_PUBLIC)) {
		http_reply_problem(r, ERR_UNAUTHENTICATED,
				   "this endpoint requires a client certificate issued by this deployment's CA", NULL);
		return;
	}
	if (r->route->roles && (!r->peer || !(r->route->roles & HTTP_ROLE(r->peer->role)))) {
		char detail[128];
		snprintf(detail, sizeof detail, "role %s may not call this endpoint",
			 r->peer ? ident_role_name(r->peer->role) : "(none)");
		http_reply_problem(r, ERR_FORBIDDEN, detail, NULL);
		return;
	}
	buf_init(&r->body, r->route->max_body ? r->route->max_body : s->cfg.max_body,
		 (r->route->flags & HTTP_ROUTE_SECRET) != 0);
	const char *cl = MHD_lookup_connection_value(r->conn, MHD_HEADER_KIND, MHD_HTTP_HEADER_CONTENT_LENGTH);
	if (cl) {
		char *end;
		errno = 0;
		unsigned long long v = strtoull(cl, &end, 10);
		if (errno || end == cl || *end || v > r->body.max) {
			char detail[128];
			snprintf(detail, sizeof detail, "request body larger than %zu bytes", r->body.max);
			http_reply_problem(r, ERR_TOO_LARGE, detail, NULL);
		}
	}
}

/* Keeps the body within its bound; past it, counts and discards (up to DISCARD_CAP,
 * then the connection is dropped) so the 413 can be sent once the upload ends. */
static bool append_body(struct http_req *r, const char *data, size_t n)
{
	if (!r->too_large) {
		int rc = buf_append(&r->body, data, n);
		if (rc == 0)
			return true;
		if (rc != ERR_TOO_LARGE)
			return false;
		r->too_large = true;
	}
	r->discarded += n;
	return r->discarded <= DISCARD_CAP;
}

static enum MHD_Result on_request(void *cls, struct MHD_Connection *conn, const char *url,
				  const char *method, const char *version, const char *upload_data,
				  size_t *upload_data_size, void **req_cls)
{
	(void)version;
	struct http_server *s = cls;
	struct http_req *r = *req_cls;
	if (!r) {
		r = calloc(1, sizeof *r);
		if (!r)
			return MHD_NO;
		r->srv = s;
		r->conn = conn;
		r->method = method;
		r->path = url;
		r->route_label = "unmatched";
		clock_gettime(CLOCK_MONOTONIC, &r->start);
		gen_request_id(r);
		*req_cls = r;
		pthread_mutex_lock(&s->mu);
		s->inflight++;
		pthread_mutex_unlock(&s->mu);
		log_ctx_set(r->id, NULL);
		first_call(s, r);
		log_ctx_clear();
		return MHD_YES;
	}
	if (*upload_data_size) {
		bool ok = r->replied || append_body(r, upload_data, *upload_data_size);
		*upload_data_size = 0;
		return ok ? MHD_YES : MHD_NO;
	}
	if (r->later && !r->replied) {
		/* Called again for a deferred answer: after a resume, or spuriously. */
		log_ctx_set(r->id, NULL);
		bool ok = http_later_resume(r);
		log_ctx_clear();
		return ok ? MHD_YES : MHD_NO;
	}
	if (r->replied)
		return MHD_YES;
	log_ctx_set(r->id, NULL);
	bool ok = true;
	if (r->too_large) {
		char detail[128];
		snprintf(detail, sizeof detail, "request body larger than %zu bytes", r->body.max);
		http_reply_problem(r, ERR_TOO_LARGE, detail, NULL);
	} else {
		int rc = r->route->fn(r, s->svc_ctx);
		if (r->later && !r->replied)
			ok = http_later_resume(r); /* suspends until the answer is made */
		else if (!r->replied)
			http_reply_problem(r, rc < 0 ? rc : ERR_INTERNAL,
					   rc < 0 ? NULL : "the handler returned without a reply", NULL);
	}
	log_ctx_clear();
	return ok ? MHD_YES : MHD_NO;
}

static void on_completed(void *cls, struct MHD_Connection *conn, void **req_cls,
			 enum MHD_RequestTerminationCode toe)
{
	(void)conn;
	struct http_server *s = cls;
	struct http_req *r = *req_cls;
	if (!r)
		return;
	double secs = elapsed_s(&r->start);
	static const char *const toe_names[] = {"ok", "error", "timeout", "shutdown", "read_error", "client_abort"};
	const char *end = (unsigned)toe < 6 ? toe_names[toe] : "other";
	char status[8];
	snprintf(status, sizeof status, "%u", r->replied ? r->status : 0);
	log_ctx_set(r->id, NULL);
	bool quiet = r->route && (r->route->flags & HTTP_ROUTE_QUIET) && r->status < 400;
	int lvl = toe != MHD_REQUEST_TERMINATED_COMPLETED_OK ? LOG_LEVEL_WARN
		  : quiet ? LOG_LEVEL_DEBUG : LOG_LEVEL_INFO;
	if (log_enabled(lvl))
		LOG_AT(lvl, "http.request", LOG_S("method", r->method), LOG_S("path", r->path),
		       LOG_S("route", r->route_label), LOG_I("status", r->replied ? r->status : 0),
		       LOG_I("bytes_in", r->body.len + r->discarded), LOG_I("bytes_out", r->resp_bytes),
		       LOG_D("ms", secs * 1e3), LOG_S("end", end),
		       LOG_S("peer", r->peer ? r->peer->cn : ""),
		       LOG_S("role", r->peer ? ident_role_name(r->peer->role) : ""));
	log_ctx_clear();
	const char *lv[] = {r->route_label, r->method, status, NULL};
	metric_inc(metric_series(s->m_requests, lv));
	const char *dv[] = {r->route_label, NULL};
	metric_observe(metric_series(s->m_duration, dv), secs);
	http_later_detach(r);
	buf_free(&r->body);
	free(r);
	*req_cls = NULL;
	pthread_mutex_lock(&s->mu);
	s->inflight--;
	pthread_cond_broadcast(&s->cv);
	pthread_mutex_unlock(&s->mu);
}

/* ---- lifecycle ---- */

static int bind_addr(const struct http_server_config *cfg, struct sockaddr_storage *ss)
{
	struct addrinfo hints = {.ai_flags = AI_NUMERICHOST | AI_PASSIVE, .ai_socktype = SOCK_STREAM};
	struct addrinfo *res = NULL;
	char port[8];
	snprintf(port, sizeof port, "%u", cfg->port);
	const char *host = cfg->bind && *cfg->bind ? cfg->bind : "127.0.0.1";
	if (getaddrinfo(host, port, &hints, &res) != 0 || !res) {
		LOG_ERROR("http.bind", LOG_S("bind", host), LOG_S("error", "not a numeric IPv4 or IPv6 address"));
		return ERR_CONFIG;
	}
	memcpy(ss, res->ai_addr, res->ai_addrlen);
	freeaddrinfo(res);
	return 0;
}

int http_server_start(struct http_server **out, const struct http_server_config *cfg,
		      const struct http_route *routes, void *svc_ctx, struct metrics *metrics)
{
	int rc = 0;
	struct http_server *s = NULL;
	*out = NULL;
	if (sodium_init() < 0)
		return ERR_CRYPTO;
	MHD_set_panic_func(mhd_panic, NULL);
	s = calloc(1, sizeof *s);
	if (!s)
		return ERR_NOMEM;
	s->cfg = *cfg;
	snprintf(s->service, sizeof s->service, "%s", cfg->service ? cfg->service : "mimir");
	if (!s->cfg.threads)
		s->cfg.threads = 4;
	if (!s->cfg.max_body)
		s->cfg.max_body = 1 << 20;
	if (!s->cfg.idle_timeout_s)
		s->cfg.idle_timeout_s = 30;
	if (!s->cfg.drain_timeout_ms)
		s->cfg.drain_timeout_ms = 10000;
	if (!s->cfg.max_connections)
		s->cfg.max_connections = 1024;
	s->routes = routes;
	s->svc_ctx = svc_ctx;
	pthread_mutex_init(&s->mu, NULL);
	pthread_cond_init(&s->cv, NULL);
	s->metrics = metrics;
	if (!s->metrics) {
		s->metrics = s->own_metrics = metrics_new();
		if (!s->metrics) {
			rc = ERR_NOMEM;
			goto out;
		}
		metrics_add_process(s->metrics);
	}
	if ((rc = http_metrics_init(s)) != 0)
		goto out;

	int ntls = !!cfg->tls_cert + !!cfg->tls_key + !!cfg->tls_ca;
	if (ntls != 0 && ntls != 3) {
		LOG_ERROR("http.config", LOG_S("error", "tls.cert, tls.key and tls.ca must be set together"));
		rc = ERR_CONFIG;
		goto out;
	}
	s->tls = ntls == 3;
	if (s->tls && (!(s->cert_pem = read_pem(cfg->tls_cert, &rc)) ||
		       !(s->key_pem = read_pem(cfg->tls_key, &rc)) ||
		       !(s->ca_pem = read_pem(cfg->tls_ca, &rc))))
		goto out;
	if (cfg->peers && !s->tls) {
		LOG_ERROR("http.config", LOG_S("error", "tls.crl and tls.mode need TLS (tls.enabled)"));
		rc = ERR_CONFIG;
		goto out;
	}
	s->peers = attestpeer_ref(cfg->peers);
	s->cfg.peers = NULL; /* s->peers holds the server's reference */
	if (!s->tls && cfg->plain_loopback)
		LOG_INFO("http.plaintext", LOG_S("detail", "plain HTTP on a loopback address: this machine only"));
	else if (!s->tls)
		LOG_WARN("http.plaintext",
			 LOG_S("warning", "serving plain HTTP without client authentication: development only"));

	struct sockaddr_storage ss;
	if ((rc = bind_addr(cfg, &ss)) != 0)
		goto out;
	unsigned flags = MHD_USE_INTERNAL_POLLING_THREAD | MHD_USE_EPOLL | MHD_ALLOW_SUSPEND_RESUME |
			 MHD_USE_ERROR_LOG | MHD_USE_ITC;
	if (ss.ss_family == AF_INET6)
		flags |= MHD_USE_IPv6;
	if (s->tls)
		flags |= MHD_USE_TLS;
	struct MHD_OptionItem tls_opts[] = {
		{MHD_OPTION_HTTPS_MEM_CERT, 0, s->cert_pem},
		{MHD_OPTION_HTTPS_MEM_KEY, 0, s->key_pem},
		{MHD_OPTION_HTTPS_MEM_TRUST, 0, s->ca_pem},
		{MHD_OPTION_HTTPS_PRIORITIES, 0, (void *)"NORMAL:-VERS-ALL:+VERS-TLS1.3:+VERS-TLS1.2"},
		{MHD_OPTION_END, 0, NULL},
	};
	s->d = MHD_start_daemon(
		flags, 0, NULL, NULL, on_request, s,
		MHD_OPTION_EXTERNAL_LOGGER, mhd_logger, s,
		MHD_OPTION_SOCK_ADDR, (struct sockaddr *)&ss,
		MHD_OPTION_THREAD_POOL_SIZE, s->cfg.threads,
		MHD_OPTION_CONNECTION_TIMEOUT, s->cfg.idle_timeout_s,
		MHD_OPTION_CONNECTION_LIMIT, s->cfg.max_connections,
		MHD_OPTION_NOTIFY_COMPLETED, on_completed, s,
		MHD_OPTION_NOTIFY_CONNECTION, on_connection, s,
		MHD_OPTION_ARRAY, s->tls ? tls_opts : tls_opts + 4,
		MHD_OPTION_END);
	if (!s->d) {
		LOG_ERROR("http.start", LOG_S("bind", cfg->bind ? cfg->bind : "127.0.0.1"),
			  LOG_I("port", cfg->port),
			  LOG_S("error", "libmicrohttpd could not start (port in use, bad address or bad TLS material)"));
		rc = ERR_IO;
		goto out;
	}
	const union MHD_DaemonInfo *di = MHD_get_daemon_info(s->d, MHD_DAEMON_INFO_BIND_PORT);
	s->port = di ? di->port : cfg->port;
	if ((rc = http_streams_start(s)) != 0)
		goto out;
	LOG_INFO("http.listening",
		 LOG_S("bind", cfg->bind ? cfg->bind : "127.0.0.1"), LOG_I("port", s->port),
		 LOG_B("tls", s->tls), LOG_I("threads", s->cfg.threads),
		 LOG_S("tls_mode", s->peers ? attestpeer_mode_name(attestpeer_mode(s->peers)) : "development"));
	*out = s;
	return 0;
out:
	http_server_free(s);
	return rc;
}

uint16_t http_server_port(const struct http_server *s) { return s->port; }
struct metrics *http_server_metrics(struct http_server *s) { return s->metrics; }

/* Waits until no request is in flight, or (but_streams) none but open streams. */
static bool wait_inflight(struct http_server *s, bool but_streams, unsigned ms)
{
	struct timespec dl;
	clock_gettime(CLOCK_REALTIME, &dl);
	dl.tv_sec += ms / 1000;
	dl.tv_nsec += (long)(ms % 1000) * 1000000L;
	if (dl.tv_nsec >= 1000000000L)
		dl.tv_sec++, dl.tv_nsec -= 1000000000L;
	pthread_mutex_lock(&s->mu);
	while (s->inflight > (but_streams ? s->nstreams : 0))
		if (pthread_cond_timedwait(&s->cv, &s->mu, &dl) == ETIMEDOUT)
			break;
	bool done = s->inflight <= (but_streams ? s->nstreams : 0);
	pthread_mutex_unlock(&s->mu);
	return done;
}

void http_server_shutdown(struct http_server *s)
{
	if (!s || !s->d || s->stopped)
		return;
	s->stopping = true;
	/* New connections are refused from now on: the listening socket stops listening
	 * (shutdown) but its descriptor stays ours until the daemon has stopped, so no
	 * worker thread that saw it ready a moment ago can accept on a number that
	 * meanwhile names another socket. */
	MHD_socket fd = MHD_quiesce_daemon(s->d);
	if (fd != MHD_INVALID_SOCKET)
		shutdown(fd, SHUT_RDWR);
	pthread_mutex_lock(&s->mu);
	unsigned before = s->inflight;
	pthread_mutex_unlock(&s->mu);
	LOG_INFO("http.draining", LOG_I("in_flight", before),
		 LOG_I("timeout_ms", s->cfg.drain_timeout_ms));
	/* Deferred answers first: their work may take longer than any drain, so they are
	 * answered 503 now and their connections resumed (the daemon must not stop with a
	 * suspended connection). Then ordinary requests: wait until only streams remain
	 * (the target follows a deferred answer that became a stream), then end the
	 * streams (their producers see ERR_CANCELLED) and give them a moment to flush. */
	http_laters_cancel(s);
	bool drained = wait_inflight(s, true, s->cfg.drain_timeout_ms);
	http_streams_stop(s);
	drained = wait_inflight(s, false, 2000) && drained;
	pthread_mutex_lock(&s->mu);
	unsigned left = s->inflight;
	pthread_mutex_unlock(&s->mu);
	if (!drained)
		LOG_WARN("http.drain_timeout", LOG_I("abandoned", left));
	MHD_stop_daemon(s->d);
	if (fd != MHD_INVALID_SOCKET)
		close(fd);
	s->d = NULL;
	s->stopped = true;
	LOG_INFO("http.stopped");
}

void http_server_free(struct http_server *s)
{
	if (!s)
		return;
	http_server_shutdown(s);
	http_streams_stop(s);
	http_streams_orphan(s); /* producers may still hold streams: detach, never dangle */
	if (s->key_pem)
		sodium_free(s->key_pem); /* sodium_free wipes */
	sodium_free(s->cert_pem);
	sodium_free(s->ca_pem);
	metrics_free(s->own_metrics);
	attestpeer_free(s->peers);
	pthread_mutex_destroy(&s->mu);
	pthread_cond_destroy(&s->cv);
	free(s);
}

/* ---- signals ---- */

static sigset_t service_signals(void)
{
	sigset_t set;
	sigemptyset(&set);
	sigaddset(&set, SIGTERM);
	sigaddset(&set, SIGINT);
	sigaddset(&set, SIGHUP);
	return set;
}

void http_signals_block(void)
{
	sigset_t set = service_signals();
	pthread_sigmask(SIG_BLOCK, &set, NULL);
	signal(SIGPIPE, SIG_IGN);
}

int http_signals_wait(void)
{
	sigset_t set = service_signals();
	int sig = 0;
	while (sigwait(&set, &sig) != 0)
		;
	return sig;
}

const struct sockaddr *http_req_remote_addr(const struct http_req *r)
{
	const union MHD_ConnectionInfo *ci = MHD_get_connection_info(r->conn, MHD_CONNECTION_INFO_CLIENT_ADDRESS);
	return ci ? ci->client_addr : NULL;
}

/* ---- internal accessors for stream.c ---- */
struct MHD_Connection *http_req_conn(struct http_req *r) { return r->conn; }
void http_req_mark_stream(struct http_req *r, unsigned status)
{
	r->replied = true;
	r->streamed = true;
	r->status = status;
}
const char *http_req_id_int(struct http_req *r) { return r->id; }
void http_req_hdrs(struct http_req *r, struct MHD_Response *resp)
{
	MHD_add_response_header(resp, "X-Request-Id", r->id);
	for (size_t i = 0; i < r->nhdr; i++)
		MHD_add_response_header(resp, r->hdr_name[i], r->hdr_value[i]);
}
struct http_server *http_req_server(struct http_req *r) { return r->srv; }
bool http_req_replied(const struct http_req *r) { return r->replied; }
size_t http_req_nhdr(const struct http_req *r) { return r->nhdr; }
struct http_later *http_req_later(const struct http_req *r) { return r->later; }
void http_req_set_later(struct http_req *r, struct http_later *l) { r->later = l; }
bool http_req_deferred(const struct http_req *r) { return r->later && !r->later_out; }
int http_req_queue_later(struct http_req *r, unsigned status, const char *ctype,
			 struct MHD_Response *resp, size_t len)
{
	r->later_out = true;
	r->resp_bytes = len;
	return queue(r, status, ctype, resp);
}

int http_metrics_init(struct http_server *s)
{
	static const char *const req_labels[] = {"route", "method", "status", NULL};
	static const char *const route_label[] = {"route", NULL};
	static const double bounds[] = {0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30};
	struct metrics *m = s->metrics;
	s->m_requests = metrics_counter(m, "mimir_http_requests_total",
					"HTTP requests answered, by route pattern, method and status.", req_labels);
	s->m_duration = metrics_histogram(m, "mimir_http_request_duration_seconds",
					  "Time from request headers to completion, by route pattern.",
					  route_label, bounds, sizeof bounds / sizeof bounds[0]);
	s->m_tls_refused_s = metric_series(
		metrics_counter(m, "mimir_tls_handshakes_refused_total",
				"TLS connections refused for a missing or invalid client certificate.", NULL),
		NULL);
	s->m_inflight_s = metric_series(
		metrics_gauge(m, "mimir_http_requests_in_flight", "Requests being processed now.", NULL), NULL);
	s->m_streams_s = metric_series(
		metrics_gauge(m, "mimir_http_streams_open", "Streamed responses (SSE) open now.", NULL), NULL);
	s->m_stream_drops_s = metric_series(
		metrics_counter(m, "mimir_http_stream_drops_total",
				"Streams dropped because the client fell too far behind.", NULL),
		NULL);
	s->m_deferred_s = metric_series(
		metrics_gauge(m, "mimir_http_requests_deferred",
			      "Requests whose answer another thread makes later (also in flight).", NULL),
		NULL);
	if (!s->m_requests || !s->m_duration || !s->m_tls_refused_s || !s->m_inflight_s ||
	    !s->m_streams_s || !s->m_stream_drops_s || !s->m_deferred_s)
		return ERR_NOMEM;
	return 0;
}
