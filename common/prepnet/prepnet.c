/* prepnet: fetching dealer payloads over mTLS for one party (see prepnet.h). The one
 * subtle part is the time bound: httpc's timeout is fixed when it is made, so after a
 * failed connection the client is made again with what is left of the call's budget,
 * which keeps a whole call, retries included, within timeout_ms. The persistent
 * connection is lost only when it was lost anyway. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include <jansson.h>
#include <sodium.h>

#include "err/err.h"
#include "httpc/httpc.h"
#include "log/log.h"
#include "prepnet/prepnet.h"

#define PREPNET_ID_MAX 64
#define CONNECT_TIMEOUT_MAX_MS 3000
#define BACKOFF_FIRST_MS 50
#define BACKOFF_MAX_MS 1000
#define RETRY_MIN_MS 10

struct prepnet {
	char *url, *ca, *cert, *key;
	char session[PREPNET_ID_MAX + 1];
	uint8_t pin[32];
	bool pinned;
	unsigned party;
	unsigned timeout_ms;
	size_t max_payload;
	struct httpc *hc;
	long hc_timeout_ms; /* the timeout hc was made with */
	char err[512];
	struct prepnet_stats st; /* updated atomically */
};

static int64_t now_ms(void)
{
	struct timespec ts;
	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

static bool id_ok(const char *s)
{
	size_t n = s ? strlen(s) : 0;
	if (n == 0 || n > PREPNET_ID_MAX)
		return false;
	for (size_t i = 0; i < n; i++) {
		char ch = s[i];
		if (!((ch >= 'a' && ch <= 'z') || (ch >= 'A' && ch <= 'Z') || (ch >= '0' && ch <= '9') ||
		      ch == '.' || ch == '_' || ch == '-'))
			return false;
	}
	return true;
}

int prepnet_new(const struct prepnet_opts *o, struct prepnet **out)
{
	*out = NULL;
	if (!o || !o->url || !o->ca_file || !o->cert_file || !o->key_file || !id_ok(o->session) ||
	    o->party >= MPC_MAX_PARTIES)
		return ERR_INVALID;
	struct prepnet *pn = calloc(1, sizeof *pn);
	if (!pn)
		return ERR_NOMEM;
	pn->url = strdup(o->url);
	pn->ca = strdup(o->ca_file);
	pn->cert = strdup(o->cert_file);
	pn->key = strdup(o->key_file);
	if (!pn->url || !pn->ca || !pn->cert || !pn->key) {
		prepnet_free(pn);
		return ERR_NOMEM;
	}
	snprintf(pn->session, sizeof pn->session, "%s", o->session);
	if (o->dealer_fingerprint) {
		memcpy(pn->pin, o->dealer_fingerprint, sizeof pn->pin);
		pn->pinned = true;
	}
	pn->party = o->party;
	pn->timeout_ms = o->timeout_ms ? o->timeout_ms : PREPNET_DEFAULT_TIMEOUT_MS;
	pn->max_payload = o->max_payload ? o->max_payload : PREPNET_DEFAULT_MAX_PAYLOAD;
	*out = pn;
	return 0;
}

void prepnet_free(struct prepnet *pn)
{
	if (!pn)
		return;
	httpc_free(pn->hc);
	free(pn->url);
	free(pn->ca);
	free(pn->cert);
	free(pn->key);
	sodium_memzero(pn, sizeof *pn);
	free(pn);
}

const char *prepnet_last_error(const struct prepnet *pn)
{
	return pn ? pn->err : "";
}

void prepnet_get_stats(const struct prepnet *pn, struct prepnet_stats *st)
{
	st->fetches = __atomic_load_n(&pn->st.fetches, __ATOMIC_RELAXED);
	st->bytes = __atomic_load_n(&pn->st.bytes, __ATOMIC_RELAXED);
	st->retries = __atomic_load_n(&pn->st.retries, __ATOMIC_RELAXED);
	st->wait_ms = __atomic_load_n(&pn->st.wait_ms, __ATOMIC_RELAXED);
	st->max_wait_ms = __atomic_load_n(&pn->st.max_wait_ms, __ATOMIC_RELAXED);
}

/* A client whose whole-request timeout is timeout_ms (made again when it differs). */
static int client(struct prepnet *pn, long timeout_ms)
{
	if (pn->hc && pn->hc_timeout_ms == timeout_ms)
		return 0;
	httpc_free(pn->hc);
	pn->hc = NULL;
	struct httpc_opts o = {
		.base_url = pn->url,
		.ca_file = pn->ca,
		.cert_file = pn->cert,
		.key_file = pn->key,
		.expect_role = IDENT_ROLE_DEALER,
		.expect_fingerprint = pn->pinned ? pn->pin : NULL,
		.connect_timeout_ms = timeout_ms < CONNECT_TIMEOUT_MAX_MS ? timeout_ms : CONNECT_TIMEOUT_MAX_MS,
		.timeout_ms = timeout_ms,
		.retries = 0, /* the retries are ours, within the call's budget */
		.max_response = pn->max_payload,
		.wipe_responses = true, /* seeds and dealer payloads are secrets */
	};
	int rc = httpc_new(&pn->hc, &o);
	if (rc == 0)
		pn->hc_timeout_ms = timeout_ms;
	return rc;
}

static void stat_wait(struct prepnet *pn, int64_t waited)
{
	uint64_t w = waited > 0 ? (uint64_t)waited : 0;
	__atomic_fetch_add(&pn->st.wait_ms, w, __ATOMIC_RELAXED);
	uint64_t cur = __atomic_load_n(&pn->st.max_wait_ms, __ATOMIC_RELAXED);
	while (w > cur && !__atomic_compare_exchange_n(&pn->st.max_wait_ms, &cur, w, false, __ATOMIC_RELAXED,
						       __ATOMIC_RELAXED))
		;
}

/* The problem detail of a refusal, else the status line. */
static void refusal_text(struct prepnet *pn, const struct httpc_resp *r, const char *what)
{
	json_t *doc = r->body && r->len ? json_loadb(r->body, r->len, 0, NULL) : NULL;
	const char *detail = json_string_value(json_object_get(doc, "detail"));
	const char *type = json_string_value(json_object_get(doc, "type"));
	snprintf(pn->err, sizeof pn->err, "the dealer at %s refused %s (HTTP %ld%s%s): %s", pn->url, what,
		 r->status, type ? ", " : "", type ? type : "", detail ? detail : "no detail given");
	json_decref(doc);
}

static int status_code(long status)
{
	switch (status) {
	case 400:
		return ERR_INVALID;
	case 403:
		return ERR_FORBIDDEN;
	case 404:
		return ERR_NOT_FOUND;
	case 409:
		return ERR_CONFLICT;
	case 413:
		return ERR_TOO_LARGE;
	case 503:
		return ERR_UNAVAILABLE;
	default:
		return ERR_UPSTREAM;
	}
}

/* One call to the dealer within the time bound. Returns 0 with resp holding a 200
 * response, or an error with pn->err saying why (resp freed). */
static int call(struct prepnet *pn, const char *method, const char *path, const char *body, size_t blen,
		const char *want_type, const char *what, struct httpc_resp *resp)
{
	int64_t start = now_ms(), deadline = start + pn->timeout_ms;
	long backoff = BACKOFF_FIRST_MS;
	int rc;
	pn->err[0] = '\0';
	/* A fresh call gets the whole budget (after a failure the client had less). */
	if ((rc = client(pn, (long)pn->timeout_ms)) != 0)
		goto fail_local;
	bool tls_retried = false;
	for (;;) {
		rc = httpc_request(pn->hc, method, path, NULL, body ? "application/json" : NULL, body, blen, resp);
		/* A dealer dying during a handshake looks like a TLS failure: one more try
		 * tells it from a real one (wrong certificate), which fails the same way. */
		if (rc == ERR_TLS && !tls_retried)
			tls_retried = true;
		else if (rc != ERR_IO)
			break;
		/* Not reached, or the connection dropped: try again while the budget lasts
		 * (the last attempt gets what is left of it, at least RETRY_MIN_MS). */
		int64_t left = deadline - now_ms();
		if (left < 2 * RETRY_MIN_MS)
			break;
		long wait = backoff < left / 2 ? backoff : (long)(left / 2);
		usleep((useconds_t)wait * 1000);
		backoff = backoff * 2 < BACKOFF_MAX_MS ? backoff * 2 : BACKOFF_MAX_MS;
		__atomic_fetch_add(&pn->st.retries, 1, __ATOMIC_RELAXED);
		httpc_resp_free(resp);
		left = deadline - now_ms();
		if ((rc = client(pn, (long)(left > RETRY_MIN_MS ? left : RETRY_MIN_MS))) != 0)
			goto fail_local;
	}
	int64_t waited = now_ms() - start;
	stat_wait(pn, waited);
	if (rc == 0 && resp->status == 200 &&
	    (!want_type || strncmp(resp->content_type, want_type, strlen(want_type)) == 0))
		return 0;
	if (rc == 0 && resp->status == 200) {
		rc = ERR_PROTOCOL;
		snprintf(pn->err, sizeof pn->err, "the dealer at %s answered %s with Content-Type '%s', not %s",
			 pn->url, what, resp->content_type, want_type);
	} else if (rc == 0) {
		rc = status_code(resp->status);
		refusal_text(pn, resp, what);
	} else if (rc == ERR_IO) {
		rc = ERR_UNAVAILABLE;
		snprintf(pn->err, sizeof pn->err, "the dealer at %s could not be reached for %lld ms (%s): %s", pn->url,
			 (long long)waited, what, resp->error);
	} else if (rc == ERR_TIMEOUT) {
		snprintf(pn->err, sizeof pn->err, "the dealer at %s did not answer %s within %u ms: %s", pn->url, what,
			 pn->timeout_ms, resp->error);
	} else if (rc == ERR_TOO_LARGE) {
		snprintf(pn->err, sizeof pn->err, "the dealer at %s sent more than %zu bytes for %s", pn->url,
			 pn->max_payload, what);
	} else if (rc == ERR_TLS) {
		snprintf(pn->err, sizeof pn->err,
			 "TLS with the dealer at %s failed (not the dealer's certificate, role or CA, or ours "
			 "was refused) for %s: %s",
			 pn->url, what, resp->error);
	} else {
		snprintf(pn->err, sizeof pn->err, "calling the dealer at %s for %s failed: %s", pn->url, what,
			 resp->error[0] ? resp->error : err_title(rc));
	}
	if (resp->body)
		sodium_memzero(resp->body, resp->len);
	httpc_resp_free(resp);
	return rc;
fail_local:
	snprintf(pn->err, sizeof pn->err, "could not set up the client for the dealer at %s: %s", pn->url,
		 err_title(rc));
	return rc;
}

static void log_failure(const struct prepnet *pn, int rc, const char *what)
{
	LOG_WARN("prepnet.failed", LOG_S("dealer", pn->url), LOG_S("dealer_session", pn->session),
		 LOG_I("party", pn->party), LOG_S("call", what), LOG_S("error", err_slug(rc)),
		 LOG_S("detail", pn->err));
}

int prepnet_seed(struct prepnet *pn, uint8_t seed[MPC_SEED_BYTES])
{
	char path[160];
	struct httpc_resp r;
	snprintf(path, sizeof path, "/v1/sessions/%s/seed?party=%u", pn->session, pn->party);
	int rc = call(pn, "GET", path, NULL, 0, "application/octet-stream", "the seed", &r);
	if (rc != 0) {
		log_failure(pn, rc, "seed");
		return rc;
	}
	if (r.len != MPC_SEED_BYTES) {
		rc = ERR_PROTOCOL;
		snprintf(pn->err, sizeof pn->err, "the dealer at %s sent a seed of %zu bytes, not %d", pn->url, r.len,
			 MPC_SEED_BYTES);
		log_failure(pn, rc, "seed");
	} else {
		memcpy(seed, r.body, MPC_SEED_BYTES);
	}
	sodium_memzero(r.body, r.len);
	httpc_resp_free(&r);
	return rc;
}

static int fetch(void *ctx, unsigned party, const struct mpc_prep_req *req, uint8_t **payload, size_t *len)
{
	struct prepnet *pn = ctx;
	char path[160], body[256], what[96];
	struct httpc_resp r;
	*payload = NULL;
	*len = 0;
	if (party != pn->party) {
		snprintf(pn->err, sizeof pn->err, "asked for party %u's payload on party %u's connection", party,
			 pn->party);
		return ERR_INVALID;
	}
	snprintf(path, sizeof path, "/v1/sessions/%s/prep", pn->session);
	int bl = snprintf(body, sizeof body,
			  "{\"party\":%u,\"kind\":%u,\"param\":%u,\"n\":%u,\"batch\":%llu,\"rows\":%u,\"cols\":%u}",
			  party, (unsigned)req->kind, req->param, req->n, (unsigned long long)req->batch, req->rows,
			  req->cols);
	snprintf(what, sizeof what, "batch %llu of kind %u", (unsigned long long)req->batch, (unsigned)req->kind);
	int rc = call(pn, "POST", path, body, (size_t)bl, "application/octet-stream", what, &r);
	if (rc != 0) {
		log_failure(pn, rc, "prep");
		return rc;
	}
	uint8_t *p = malloc(r.len ? r.len : 1);
	if (!p) {
		rc = ERR_NOMEM;
		snprintf(pn->err, sizeof pn->err, "out of memory for a payload of %zu bytes", r.len);
	} else {
		memcpy(p, r.body, r.len);
		*payload = p;
		*len = r.len;
		__atomic_fetch_add(&pn->st.fetches, 1, __ATOMIC_RELAXED);
		__atomic_fetch_add(&pn->st.bytes, r.len, __ATOMIC_RELAXED);
	}
	sodium_memzero(r.body, r.len);
	httpc_resp_free(&r);
	return rc;
}

struct mpc_prep_source prepnet_source(struct prepnet *pn)
{
	return (struct mpc_prep_source){.fetch = fetch, .ctx = pn};
}

int prepnet_report(struct prepnet *pn, const char *check)
{
	char path[160];
	struct httpc_resp r;
	json_t *doc = json_pack("{s:I, s:s}", "party", (json_int_t)pn->party, "check", check ? check : "unknown");
	char *body = doc ? json_dumps(doc, JSON_COMPACT) : NULL;
	json_decref(doc);
	if (!body)
		return ERR_NOMEM;
	snprintf(path, sizeof path, "/v1/sessions/%s/report", pn->session);
	int rc = call(pn, "POST", path, body, strlen(body), "application/json", "the abort report", &r);
	free(body);
	if (rc != 0) {
		log_failure(pn, rc, "report");
		return rc;
	}
	httpc_resp_free(&r);
	return 0;
}
