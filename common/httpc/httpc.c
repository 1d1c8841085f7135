/* httpc: libcurl easy handle per client (its connection cache gives persistent
 * connections), OpenSSL hooks for the Mimir-only trust store and the server checks
 * (role, pin, the peer verifier's CRLs and production rule), bounded response buffers,
 * and the retry policy. Revocation is checked by the peer verifier in the verify
 * callback rather than with CURLOPT_CRLFILE: curl reads only PEM CRLs there, into the
 * store the SSL_CTX hook replaces, and OpenSSL's own CRL check would refuse every
 * server once a CRL is past its nextUpdate, where the server side (GnuTLS) keeps
 * honouring it; one implementation on both ends decides alike. */
#include "httpc/httpc.h"

#include <curl/curl.h>
#include <openssl/ssl.h>
#include <openssl/x509.h>
#include <pthread.h>
#include <sodium.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <time.h>
#include <unistd.h>

#include "attestpeer/attestpeer.h"
#include "buf/buf.h"
#include "err/err.h"
#include "log/log.h"

struct httpc {
	CURL *curl;
	struct httpc_opts o;
	bool pin;
	uint8_t fingerprint[32];
	char *base_url, *ca_file, *cert_file, *key_file;
	struct attestpeer *peers; /* a reference, or NULL */
	uint64_t crl_gen;         /* the verifier's generation at the last request */
};

static pthread_once_t global_once = PTHREAD_ONCE_INIT;
static int ssl_ctx_idx = -1;

static void global_init(void)
{
	curl_global_init(CURL_GLOBAL_DEFAULT);
	ssl_ctx_idx = SSL_CTX_get_ex_new_index(0, NULL, NULL, NULL, NULL);
}

static char *dup_or_null(const char *s) { return s ? strdup(s) : NULL; }

int httpc_new(struct httpc **out, const struct httpc_opts *o)
{
	pthread_once(&global_once, global_init);
	*out = NULL;
	if (!o || !o->base_url || (!!o->cert_file != !!o->key_file))
		return ERR_INVALID;
	struct httpc *c = calloc(1, sizeof *c);
	if (!c)
		return ERR_NOMEM;
	c->o = *o;
	c->o.expect_fingerprint = NULL;
	c->peers = o->peers ? attestpeer_ref(o->peers) : attestpeer_default();
	c->o.peers = NULL; /* c->peers holds the reference */
	c->crl_gen = attestpeer_poll(c->peers);
	if (o->expect_fingerprint) {
		c->pin = true;
		memcpy(c->fingerprint, o->expect_fingerprint, sizeof c->fingerprint);
	}
	c->base_url = strdup(o->base_url);
	c->ca_file = dup_or_null(o->ca_file);
	c->cert_file = dup_or_null(o->cert_file);
	c->key_file = dup_or_null(o->key_file);
	c->curl = curl_easy_init();
	if (!c->base_url || !c->curl || (o->ca_file && !c->ca_file) ||
	    (o->cert_file && (!c->cert_file || !c->key_file))) {
		httpc_free(c);
		return ERR_NOMEM;
	}
	size_t bl = strlen(c->base_url);
	while (bl && c->base_url[bl - 1] == '/')
		c->base_url[--bl] = '\0';
	if (!c->o.connect_timeout_ms)
		c->o.connect_timeout_ms = 3000;
	if (!c->o.timeout_ms)
		c->o.timeout_ms = 30000;
	if (!c->o.backoff_ms)
		c->o.backoff_ms = 100;
	if (!c->o.max_response)
		c->o.max_response = 16u << 20;
	*out = c;
	return 0;
}

void httpc_free(struct httpc *c)
{
	if (!c)
		return;
	if (c->curl)
		curl_easy_cleanup(c->curl);
	attestpeer_free(c->peers);
	free(c->base_url);
	free(c->ca_file);
	free(c->cert_file);
	free(c->key_file);
	free(c);
}

void httpc_resp_free(struct httpc_resp *r)
{
	if (!r)
		return;
	if (r->body)
		sodium_memzero(r->body, r->len);
	free(r->body);
	r->body = NULL;
	r->len = 0;
}

/* ---- TLS hooks ---- */

/* The peer verifier on the server's certificate: false when refused (the store's
 * error is set), else *prc is what ident made of the certificate (0, or in development
 * mode its parse error, left to the role check). */
static bool verify_peers(const struct httpc *c, X509_STORE_CTX *st, struct ident *id, int *prc)
{
	struct attestpeer_verdict v;
	int rc = attestpeer_check_x509(c->peers, X509_STORE_CTX_get_current_cert(st), id, &v);
	*prc = rc;
	if (rc == 0) {
		if (v.simulated)
			LOG_WARN("httpc.simulated_peer", LOG_S("url", c->base_url), LOG_S("cn", id->cn),
				 LOG_S("role", ident_role_name(id->role)),
				 LOG_S("detail", "server accepted on simulated attestation (tls.allow_simulated): "
						 "development only, never with real shares"));
		return true;
	}
	if (rc == ERR_PARSE && attestpeer_mode(c->peers) == ATTESTPEER_DEVELOPMENT)
		return true;
	LOG_WARN("httpc.peer_refused", LOG_S("url", c->base_url), LOG_S("check", v.reason),
		 LOG_S("reason", v.detail),
		 LOG_S("hint", !strcmp(v.reason, "revoked") ? "the server's certificate is revoked (tls.crl)"
							    : "production mode (tls.mode): the server needs a "
							      "certificate from attest after a successful attestation"));
	X509_STORE_CTX_set_error(st, X509_V_ERR_APPLICATION_VERIFICATION);
	return false;
}

static int verify_role(int ok, X509_STORE_CTX *st)
{
	if (!ok || X509_STORE_CTX_get_error_depth(st) != 0)
		return ok;
	SSL *ssl = X509_STORE_CTX_get_ex_data(st, SSL_get_ex_data_X509_STORE_CTX_idx());
	const struct httpc *c = ssl ? SSL_CTX_get_ex_data(SSL_get_SSL_CTX(ssl), ssl_ctx_idx) : NULL;
	if (!c || (c->o.expect_role == IDENT_ROLE_NONE && !c->pin && !c->peers))
		return ok;
	struct ident id;
	int prc;
	if (c->peers) {
		if (!verify_peers(c, st, &id, &prc))
			return 0;
		if (c->o.expect_role == IDENT_ROLE_NONE && !c->pin)
			return ok;
	} else {
		prc = ident_from_x509(X509_STORE_CTX_get_current_cert(st), &id);
	}
	if (prc == 0 && c->pin && sodium_memcmp(id.fingerprint, c->fingerprint, sizeof c->fingerprint) != 0) {
		LOG_WARN("httpc.wrong_peer", LOG_S("url", c->base_url),
			 LOG_S("error", "the server's certificate is not the one pinned for this peer"));
		X509_STORE_CTX_set_error(st, X509_V_ERR_APPLICATION_VERIFICATION);
		return 0;
	}
	if (prc != 0 || (c->o.expect_role != IDENT_ROLE_NONE && id.role != c->o.expect_role)) {
		LOG_WARN("httpc.wrong_role", LOG_S("url", c->base_url),
			 LOG_S("expected", ident_role_name(c->o.expect_role)),
			 LOG_S("got", id.has_extension ? ident_role_name(id.role) : "(none)"));
		X509_STORE_CTX_set_error(st, X509_V_ERR_APPLICATION_VERIFICATION);
		return 0;
	}
	return ok;
}

static CURLcode ssl_ctx_hook(CURL *curl, void *sslctx, void *arg)
{
	(void)curl;
	struct httpc *c = arg;
	SSL_CTX *ctx = sslctx;
	/* Trust the Mimir CA and nothing else: a fresh store replaces curl's. */
	X509_STORE *store = X509_STORE_new();
	if (!store || X509_STORE_load_file(store, c->ca_file) != 1) {
		X509_STORE_free(store);
		return CURLE_SSL_CACERT_BADFILE;
	}
	SSL_CTX_set_cert_store(ctx, store);
	SSL_CTX_set_ex_data(ctx, ssl_ctx_idx, c);
	SSL_CTX_set_verify(ctx, SSL_VERIFY_PEER, verify_role);
	SSL_CTX_set_min_proto_version(ctx, TLS1_2_VERSION);
	return CURLE_OK;
}

/* ---- transfer callbacks ---- */

struct xfer {
	struct httpc_resp *resp;
	struct buf body;
	bool too_large;
	httpc_chunk_fn chunk_fn;
	void *chunk_arg;
	bool stopped;
	char errbuf[CURL_ERROR_SIZE];
	struct curl_slist *hdrs;
};

static size_t on_body(char *p, size_t sz, size_t n, void *arg)
{
	struct xfer *x = arg;
	size_t len = sz * n;
	if (x->chunk_fn) {
		if (x->chunk_fn(p, len, x->chunk_arg) != 0) {
			x->stopped = true;
			return 0;
		}
		return len;
	}
	int rc = buf_append(&x->body, p, len);
	x->too_large = rc == ERR_TOO_LARGE;
	return rc == 0 ? len : 0; /* 0 makes curl stop with CURLE_WRITE_ERROR */
}

static void header_value(const char *line, size_t n, const char *name, char *dst, size_t cap)
{
	size_t nl = strlen(name);
	if (n <= nl + 1 || strncasecmp(line, name, nl) != 0 || line[nl] != ':')
		return;
	const char *v = line + nl + 1;
	const char *end = line + n;
	while (v < end && (*v == ' ' || *v == '\t'))
		v++;
	while (end > v && (end[-1] == '\r' || end[-1] == '\n' || end[-1] == ' '))
		end--;
	size_t l = (size_t)(end - v) < cap - 1 ? (size_t)(end - v) : cap - 1;
	memcpy(dst, v, l);
	dst[l] = '\0';
}

static size_t on_header(char *p, size_t sz, size_t n, void *arg)
{
	struct httpc_resp *r = ((struct xfer *)arg)->resp;
	size_t len = sz * n;
	header_value(p, len, "Content-Type", r->content_type, sizeof r->content_type);
	header_value(p, len, "X-Request-Id", r->request_id, sizeof r->request_id);
	header_value(p, len, "Allow", r->allow, sizeof r->allow);
	return len;
}

/* ---- requests ---- */

static bool idempotent(const char *m)
{
	return !strcmp(m, "GET") || !strcmp(m, "HEAD") || !strcmp(m, "PUT") ||
	       !strcmp(m, "DELETE") || !strcmp(m, "OPTIONS");
}

/* Configures c's easy handle for one request; the transfer state lives in x. */
static int xfer_setup(struct httpc *c, const char *method, const char *path,
		      const char *const *extra_headers, const char *content_type, const void *body,
		      size_t len, struct xfer *x)
{
	CURL *h = c->curl;
	char url[2048];
	x->errbuf[0] = '\0';
	x->hdrs = NULL;
	if (snprintf(url, sizeof url, "%s%s", c->base_url, path) >= (int)sizeof url)
		return ERR_INVALID;
	curl_easy_reset(h); /* options only: the connection cache survives */
	curl_easy_setopt(h, CURLOPT_URL, url);
	curl_easy_setopt(h, CURLOPT_NOSIGNAL, 1L);
	curl_easy_setopt(h, CURLOPT_ERRORBUFFER, x->errbuf);
	curl_easy_setopt(h, CURLOPT_CONNECTTIMEOUT_MS, c->o.connect_timeout_ms);
	if (!x->chunk_fn)
		curl_easy_setopt(h, CURLOPT_TIMEOUT_MS, c->o.timeout_ms);
	curl_easy_setopt(h, CURLOPT_WRITEFUNCTION, on_body);
	curl_easy_setopt(h, CURLOPT_WRITEDATA, x);
	curl_easy_setopt(h, CURLOPT_HEADERFUNCTION, on_header);
	curl_easy_setopt(h, CURLOPT_HEADERDATA, x);
	curl_easy_setopt(h, CURLOPT_PRIVATE, x);
	curl_easy_setopt(h, CURLOPT_PROTOCOLS_STR, "http,https");
	curl_easy_setopt(h, CURLOPT_TCP_KEEPALIVE, 1L);
	curl_easy_setopt(h, CURLOPT_TCP_NODELAY, 1L);
	if (c->ca_file) {
		curl_easy_setopt(h, CURLOPT_CAINFO, c->ca_file);
		curl_easy_setopt(h, CURLOPT_SSL_CTX_FUNCTION, ssl_ctx_hook);
		curl_easy_setopt(h, CURLOPT_SSL_CTX_DATA, c);
	}
	if (c->peers) {
		/* A resumed TLS session would skip the verifier; after a CRL reload, a
		 * kept connection would too. */
		curl_easy_setopt(h, CURLOPT_SSL_SESSIONID_CACHE, 0L);
		uint64_t gen = attestpeer_poll(c->peers);
		if (gen != c->crl_gen) {
			curl_easy_setopt(h, CURLOPT_FRESH_CONNECT, 1L);
			c->crl_gen = gen;
		}
	}
	if (c->cert_file) {
		curl_easy_setopt(h, CURLOPT_SSLCERT, c->cert_file);
		curl_easy_setopt(h, CURLOPT_SSLKEY, c->key_file);
	}
	for (const char *const *e = extra_headers; e && *e; e++)
		x->hdrs = curl_slist_append(x->hdrs, *e);
	if (content_type) {
		char ct[160];
		snprintf(ct, sizeof ct, "Content-Type: %s", content_type);
		x->hdrs = curl_slist_append(x->hdrs, ct);
	}
	x->hdrs = curl_slist_append(x->hdrs, "Expect:"); /* no 100-continue round trip */
	curl_easy_setopt(h, CURLOPT_HTTPHEADER, x->hdrs);
	if (!strcmp(method, "HEAD")) {
		curl_easy_setopt(h, CURLOPT_NOBODY, 1L);
	} else if (strcmp(method, "GET") != 0) {
		curl_easy_setopt(h, CURLOPT_CUSTOMREQUEST, method);
		if (body || !strcmp(method, "POST") || !strcmp(method, "PUT") || !strcmp(method, "PATCH")) {
			curl_easy_setopt(h, CURLOPT_POSTFIELDSIZE_LARGE, (curl_off_t)len);
			curl_easy_setopt(h, CURLOPT_POSTFIELDS, body ? body : "");
		}
	}
	return 0;
}

/* Reads the outcome of a finished transfer into x->resp and maps curl's code. */
static int xfer_finish(struct httpc *c, struct xfer *x, CURLcode cc)
{
	int rc = 0;
	curl_easy_getinfo(c->curl, CURLINFO_RESPONSE_CODE, &x->resp->status);
	if (cc != CURLE_OK && !(x->stopped && cc == CURLE_WRITE_ERROR)) {
		snprintf(x->resp->error, sizeof x->resp->error, "%s", x->errbuf[0] ? x->errbuf : curl_easy_strerror(cc));
		if (x->too_large)
			rc = ERR_TOO_LARGE;
		else if (cc == CURLE_OPERATION_TIMEDOUT)
			rc = ERR_TIMEOUT;
		else if (cc == CURLE_SSL_CONNECT_ERROR || cc == CURLE_PEER_FAILED_VERIFICATION ||
			 cc == CURLE_SSL_CERTPROBLEM || cc == CURLE_SSL_CACERT_BADFILE ||
			 strstr(x->resp->error, "alert"))
			rc = ERR_TLS;
		else
			rc = ERR_IO;
		x->resp->status = x->too_large ? x->resp->status : 0;
	}
	curl_slist_free_all(x->hdrs);
	x->hdrs = NULL;
	curl_easy_setopt(c->curl, CURLOPT_ERRORBUFFER, NULL);
	return rc;
}

static int perform(struct httpc *c, const char *method, const char *path,
		   const char *const *extra_headers, const char *content_type, const void *body,
		   size_t len, struct xfer *x, CURLcode *cc)
{
	int rc = xfer_setup(c, method, path, extra_headers, content_type, body, len, x);
	if (rc != 0) {
		*cc = CURLE_OK;
		return rc;
	}
	*cc = curl_easy_perform(c->curl);
	return xfer_finish(c, x, *cc);
}

static bool retryable(const char *method, int rc, CURLcode cc, long status)
{
	if (rc == 0)
		return idempotent(method) && (status == 502 || status == 503 || status == 504);
	if (rc == ERR_TLS || rc == ERR_TOO_LARGE || rc == ERR_INVALID)
		return false;
	/* Not connected means not sent: safe to repeat whatever the method. */
	if (cc == CURLE_COULDNT_CONNECT || cc == CURLE_COULDNT_RESOLVE_HOST)
		return true;
	return idempotent(method);
}

int httpc_request(struct httpc *c, const char *method, const char *path,
		  const char *const *extra_headers, const char *content_type, const void *body,
		  size_t len, struct httpc_resp *resp)
{
	int rc = ERR_IO;
	memset(resp, 0, sizeof *resp);
	for (unsigned attempt = 0; attempt <= c->o.retries; attempt++) {
		if (attempt > 0) {
			long wait = c->o.backoff_ms << (attempt - 1);
			wait += (long)randombytes_uniform((uint32_t)(wait / 2 + 1)); /* jitter */
			usleep((useconds_t)wait * 1000);
		}
		httpc_resp_free(resp);
		memset(resp, 0, sizeof *resp);
		struct xfer x = {.resp = resp};
		buf_init(&x.body, c->o.max_response, c->o.wipe_responses);
		CURLcode cc = CURLE_OK;
		rc = perform(c, method, path, extra_headers, content_type, body, len, &x, &cc);
		resp->body = buf_steal(&x.body, &resp->len);
		resp->attempts = attempt + 1;
		if (!retryable(method, rc, cc, resp->status) || attempt == c->o.retries)
			break;
		LOG_DEBUG("httpc.retry", LOG_S("method", method), LOG_S("path", path),
			  LOG_I("attempt", attempt + 1), LOG_I("status", resp->status),
			  LOG_S("error", resp->error));
	}
	if (!resp->body) {
		resp->body = calloc(1, 1);
		if (!resp->body)
			return ERR_NOMEM;
	}
	return rc;
}

int httpc_json(struct httpc *c, const char *method, const char *path, const json_t *body,
	       struct httpc_resp *resp, json_t **out)
{
	char *text = NULL;
	*out = NULL;
	if (body && !(text = json_dumps(body, JSON_COMPACT)))
		return ERR_NOMEM;
	int rc = httpc_request(c, method, path, NULL, text ? "application/json" : NULL, text,
			       text ? strlen(text) : 0, resp);
	free(text);
	if (rc == 0 && resp->len)
		*out = json_loadb(resp->body, resp->len, JSON_REJECT_DUPLICATES, NULL);
	return rc;
}

int httpc_stream(struct httpc *c, const char *method, const char *path,
		 const char *const *extra_headers, httpc_chunk_fn fn, void *arg,
		 struct httpc_resp *resp)
{
	memset(resp, 0, sizeof *resp);
	struct xfer x = {.resp = resp, .chunk_fn = fn, .chunk_arg = arg};
	CURLcode cc;
	int rc = perform(c, method, path, extra_headers, NULL, NULL, 0, &x, &cc);
	resp->attempts = 1;
	if (!resp->body)
		resp->body = calloc(1, 1);
	return rc;
}

/* ---- several requests at once ---- */

struct httpc_multi {
	CURLM *m;
};

int httpc_multi_new(struct httpc_multi **out)
{
	pthread_once(&global_once, global_init);
	struct httpc_multi *hm = calloc(1, sizeof *hm);
	if (!hm || !(hm->m = curl_multi_init())) {
		free(hm);
		return ERR_NOMEM;
	}
	*out = hm;
	return 0;
}

void httpc_multi_free(struct httpc_multi *hm)
{
	if (!hm)
		return;
	curl_multi_cleanup(hm->m);
	free(hm);
}

int httpc_multi_run(struct httpc_multi *hm, struct httpc_call *calls, size_t n)
{
	struct xfer *xs = calloc(n ? n : 1, sizeof *xs);
	int rc = 0;
	if (!xs)
		return ERR_NOMEM;
	for (size_t i = 0; i < n; i++) {
		struct httpc_call *k = &calls[i];
		memset(&k->resp, 0, sizeof k->resp);
		xs[i].resp = &k->resp;
		buf_init(&xs[i].body, k->c->o.max_response, k->c->o.wipe_responses);
		k->rc = xfer_setup(k->c, k->method, k->path, NULL, k->content_type, k->body, k->len, &xs[i]);
		if (k->rc == 0 && curl_multi_add_handle(hm->m, k->c->curl) != CURLM_OK)
			k->rc = ERR_IO;
		k->resp.attempts = 1;
	}
	int running = 1;
	while (running) {
		if (curl_multi_perform(hm->m, &running) != CURLM_OK)
			break;
		if (running && curl_multi_poll(hm->m, NULL, 0, 1000, NULL) != CURLM_OK)
			break;
	}
	CURLMsg *msg;
	int left;
	while ((msg = curl_multi_info_read(hm->m, &left))) {
		if (msg->msg != CURLMSG_DONE)
			continue;
		for (size_t i = 0; i < n; i++)
			if (calls[i].c->curl == msg->easy_handle && calls[i].rc == 0)
				calls[i].rc = xfer_finish(calls[i].c, &xs[i], msg->data.result) ? : 1;
	}
	for (size_t i = 0; i < n; i++) {
		struct httpc_call *k = &calls[i];
		curl_multi_remove_handle(hm->m, k->c->curl);
		if (k->rc == 1)
			k->rc = 0; /* finished with a response */
		else if (k->rc == 0)
			k->rc = ERR_IO; /* never finished */
		k->resp.body = buf_steal(&xs[i].body, &k->resp.len);
		curl_slist_free_all(xs[i].hdrs);
		if (k->rc != 0 && rc == 0)
			rc = k->rc;
	}
	free(xs);
	return rc;
}
