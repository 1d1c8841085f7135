/* httpc: the HTTP(S) client services and tools use to call each other, over libcurl.
 *
 * One httpc talks to one base URL and keeps its connection open between requests
 * (TLS session and TCP connection reused). With TLS it presents a client certificate
 * and verifies the server against the Mimir CA only (never the system store); it can
 * also require the server's certificate to carry a given Mimir role, checked inside the
 * handshake so nothing is sent to an impostor. A peer verifier (common/attestpeer, by
 * default the process's, which svc_main sets from tls.crl and tls.mode) refuses there
 * a revoked server certificate and, in production mode, one that is no attested
 * identity; after the verifier reloads its CRLs the next request opens a new
 * connection, so an open one to a revoked server is not reused. Idempotent requests are retried with
 * exponential backoff and jitter on transport errors and 502/503/504; a POST is retried
 * only when the connection could not be made (so it was certainly not sent).
 *
 * An httpc is not shared between threads (use one per thread; they are cheap). */
#ifndef MIMIR_HTTPC_H
#define MIMIR_HTTPC_H

#include <jansson.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "ident/ident.h"

struct attestpeer;
struct httpc;

struct httpc_opts {
	const char *base_url;        /* "https://127.0.0.1:8443" (no trailing slash needed) */
	const char *ca_file;         /* PEM CA that must have issued the server's certificate */
	const char *cert_file;       /* client certificate (PEM) or NULL */
	const char *key_file;        /* its key */
	enum ident_role expect_role; /* IDENT_ROLE_NONE: any role */
	const uint8_t *expect_fingerprint; /* SHA-256 of the server's certificate (32 bytes,
					      copied), or NULL: any certificate of the CA */
	long connect_timeout_ms;     /* default 3000 */
	long timeout_ms;             /* whole request, default 30000 (streams: 0 = none) */
	unsigned retries;            /* extra attempts for retryable failures, default 2 */
	long backoff_ms;             /* first backoff, doubled each retry, default 100 */
	size_t max_response;         /* bytes, default 16 MiB */
	bool wipe_responses;         /* responses carry secrets: wipe every copy (growth, free) */
	/* TLS with ca_file: the peer verifier applied to the server's certificate (a
	 * reference is taken), or NULL: the process default (attestpeer_default()), if
	 * any. */
	struct attestpeer *peers;
};

struct httpc_resp {
	long status;            /* 0 when no HTTP response arrived */
	char *body;             /* NUL-terminated, owned */
	size_t len;
	char content_type[128];
	char request_id[65];
	char allow[128];        /* the Allow header of a 405 */
	char error[256];        /* transport error text when status == 0 */
	unsigned attempts;
};

int httpc_new(struct httpc **out, const struct httpc_opts *o);
void httpc_free(struct httpc *c);

/* One request. extra_headers: NULL-terminated "Name: value" strings, or NULL. Returns 0
 * when an HTTP response arrived (whatever its status), ERR_TLS / ERR_IO / ERR_TIMEOUT /
 * ERR_TOO_LARGE when none did (resp->error says why). */
int httpc_request(struct httpc *c, const char *method, const char *path,
		  const char *const *extra_headers, const char *content_type, const void *body,
		  size_t len, struct httpc_resp *resp);
/* JSON in, JSON out: body may be NULL; *out is the parsed response document or NULL
 * when the body was not JSON. */
int httpc_json(struct httpc *c, const char *method, const char *path, const json_t *body,
	       struct httpc_resp *resp, json_t **out);
void httpc_resp_free(struct httpc_resp *r);

/* Streams a response body to fn as it arrives (for event streams); fn returns non-zero
 * to stop. Not retried. On return resp has status and headers (body stays empty). */
typedef int (*httpc_chunk_fn)(const char *data, size_t len, void *arg);
int httpc_stream(struct httpc *c, const char *method, const char *path,
		 const char *const *extra_headers, httpc_chunk_fn fn, void *arg,
		 struct httpc_resp *resp);

/* ---- several requests at once ----
 * A multi handle runs requests to different servers concurrently (one round of a
 * protocol sends to every peer at once). Connections are cached by the multi handle,
 * so keep one for the lifetime of the httpc objects it drives, and do not run the same
 * httpc in two calls at once. No retries. */
struct httpc_multi;
struct httpc_call {
	struct httpc *c;
	const char *method, *path, *content_type;
	const void *body;
	size_t len;
	struct httpc_resp resp; /* out: free with httpc_resp_free */
	int rc;                 /* out: 0 when an HTTP response arrived */
};
int httpc_multi_new(struct httpc_multi **out);
void httpc_multi_free(struct httpc_multi *m);
/* Returns 0 when every call got an HTTP response (check each resp.status), else the
 * first call's error. */
int httpc_multi_run(struct httpc_multi *m, struct httpc_call *calls, size_t n);

#endif
