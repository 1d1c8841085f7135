/* attestc client: the exchange with the attest service. The requester has no Mimir
 * certificate yet, so it talks to attest over TLS without one (attest serves its
 * challenge and attestation routes to such clients) and trusts attest's server
 * certificate through the CA it was given. The key to certify travels as a CSR signed
 * with it, so the service sees proof of possession; the answer is checked before it is
 * handed back (the certificate is for our key and signed by the CA that came with it). */
#define _GNU_SOURCE
#include <openssl/bio.h>
#include <openssl/err.h>
#include <openssl/evp.h>
#include <openssl/pem.h>
#include <openssl/x509.h>
#include <sodium.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "attestc/attestc.h"
#include "err/err.h"
#include "httpc/httpc.h"
#include "jspec/jspec.h"

__attribute__((format(printf, 3, 4))) static int fail(struct attestc_error *e, int code, const char *fmt, ...)
{
	if (e) {
		memset(e, 0, sizeof *e);
		e->code = code;
		va_list ap;
		va_start(ap, fmt);
		vsnprintf(e->detail, sizeof e->detail, fmt, ap);
		va_end(ap);
	}
	return code;
}

static int code_of_status(long status)
{
	switch (status) {
	case 400: return ERR_INVALID;
	case 401: return ERR_UNAUTHENTICATED;
	case 403: return ERR_ATTESTATION;
	case 404: return ERR_NOT_FOUND;
	case 413: return ERR_TOO_LARGE;
	case 429: return ERR_RATE_LIMITED;
	case 503: return ERR_UNAVAILABLE;
	default: return ERR_UPSTREAM;
	}
}

/* A refusal from the service: its status and the problem's members, when any. */
static int refused(const struct httpc_resp *r, const char *what, struct attestc_error *e)
{
	int code = code_of_status(r->status);
	json_t *j = json_loadb(r->body ? r->body : "", r->len, 0, NULL);
	const char *detail = json_string_value(json_object_get(j, "detail"));
	fail(e, code, "%s refused (HTTP %ld): %s", what, r->status, detail ? detail : "no detail");
	if (e) {
		e->status = r->status;
		const char *s;
		if ((s = json_string_value(json_object_get(j, "check"))))
			snprintf(e->check, sizeof e->check, "%s", s);
		if ((s = json_string_value(json_object_get(j, "reason"))))
			snprintf(e->reason, sizeof e->reason, "%s", s);
		if ((s = json_string_value(json_object_get(j, "field"))))
			snprintf(e->field, sizeof e->field, "%s", s);
	}
	json_decref(j);
	return code;
}

static int client_new(const struct attestc_opts *o, struct httpc **c, struct attestc_error *err)
{
	if (!o || !o->url || !o->ca_file)
		return fail(err, ERR_INVALID, "the attest service's URL and CA file are required");
	/* No client certificate: this is how a peer gets its first one. POSTs are retried
	 * only when the connection could not be made. */
	struct httpc_opts ho = {.base_url = o->url, .ca_file = o->ca_file, .expect_role = IDENT_ROLE_NONE,
				.timeout_ms = o->timeout_ms ? o->timeout_ms : 30000, .retries = 2};
	int rc = httpc_new(c, &ho);
	return rc ? fail(err, rc, "cannot set up a client for %s", o->url) : 0;
}

int attestc_binding(EVP_PKEY *tls_key, const uint8_t x25519_pub[32], const uint8_t *nonce, size_t nonce_len,
		    uint8_t out[ATTEST_REPORT_DATA_LEN])
{
	unsigned char *spki = NULL;
	int n = tls_key ? i2d_PUBKEY(tls_key, &spki) : -1;
	if (n <= 0)
		return ERR_INVALID;
	int rc = attest_binding(spki, (size_t)n, x25519_pub, nonce, nonce_len, out);
	OPENSSL_free(spki);
	return rc;
}

int attestc_challenge(const struct attestc_opts *o, uint8_t nonce[32], struct attestc_error *err)
{
	struct httpc *c = NULL;
	struct httpc_resp r = {0};
	json_t *doc = NULL;
	int rc = client_new(o, &c, err);
	if (rc != 0)
		return rc;
	rc = httpc_request(c, "POST", "/v1/challenge", NULL, "application/json", "{}", 2, &r);
	if (rc != 0) {
		rc = fail(err, rc, "cannot reach %s: %s", o->url, r.error);
		goto out;
	}
	if (r.status != 201) {
		rc = refused(&r, "the challenge", err);
		goto out;
	}
	struct jspec_bytes nb = {0};
	const struct jspec_field spec[] = {JSPEC_HEXBYTES("nonce", true, 32, 32, &nb), JSPEC_END_F};
	struct jspec_error je;
	if (jspec_parse_body(r.body, r.len, spec, JSPEC_ALLOW_UNKNOWN, &doc, &je) != 0) {
		rc = fail(err, ERR_PROTOCOL, "the challenge answer is malformed: %s", je.detail);
		goto out;
	}
	memcpy(nonce, nb.data, 32);
	jspec_bytes_free(&nb);
	rc = 0;
out:
	json_decref(doc);
	httpc_resp_free(&r);
	httpc_free(c);
	return rc;
}

/* A CSR for key (subject CN only: the service takes names from the request body). */
static char *csr_pem(EVP_PKEY *key, const char *cn)
{
	X509_REQ *req = X509_REQ_new();
	X509_NAME *name = X509_NAME_new();
	BIO *b = BIO_new(BIO_s_mem());
	char *out = NULL, *p = NULL;
	long n;
	if (req && name && b && X509_REQ_set_version(req, X509_REQ_VERSION_1) == 1 &&
	    X509_NAME_add_entry_by_txt(name, "CN", MBSTRING_UTF8, (const unsigned char *)cn, -1, -1, 0) == 1 &&
	    X509_REQ_set_subject_name(req, name) == 1 && X509_REQ_set_pubkey(req, key) == 1 &&
	    X509_REQ_sign(req, key, EVP_sha256()) > 0 && PEM_write_bio_X509_REQ(b, req) == 1 &&
	    (n = BIO_get_mem_data(b, &p)) > 0 && (out = malloc((size_t)n + 1))) {
		memcpy(out, p, (size_t)n);
		out[n] = '\0';
	}
	ERR_clear_error();
	BIO_free(b);
	X509_NAME_free(name);
	X509_REQ_free(req);
	return out;
}

static json_t *b64_string(const uint8_t *data, size_t len)
{
	size_t cap = sodium_base64_ENCODED_LEN(len, sodium_base64_VARIANT_ORIGINAL);
	char *s = malloc(cap);
	if (!s)
		return NULL;
	sodium_bin2base64(s, cap, data, len, sodium_base64_VARIANT_ORIGINAL);
	json_t *j = json_string(s);
	free(s);
	return j;
}

static json_t *b64_array(const struct attest_blob *a, size_t n, const struct attest_blob *b, size_t m)
{
	json_t *arr = json_array();
	for (size_t i = 0; arr && i < n + m; i++) {
		const struct attest_blob *x = i < n ? &a[i] : &b[i - n];
		if (json_array_append_new(arr, b64_string(x->data, x->len)) != 0) {
			json_decref(arr);
			arr = NULL;
		}
	}
	return arr;
}

static json_t *str_array(const char *const *s, size_t n)
{
	json_t *arr = json_array();
	for (size_t i = 0; arr && i < n; i++)
		if (json_array_append_new(arr, json_string(s[i])) != 0) {
			json_decref(arr);
			arr = NULL;
		}
	return arr;
}

static int rfc3339(const char *s, int64_t *out)
{
	struct tm tm = {0};
	const char *end = s ? strptime(s, "%Y-%m-%dT%H:%M:%SZ", &tm) : NULL;
	if (!end || *end)
		return ERR_PARSE;
	*out = (int64_t)timegm(&tm);
	return 0;
}

/* The answer: fields read, then the certificate checked against our key and its CA. */
static int read_result(const struct httpc_resp *r, EVP_PKEY *key, struct attestc_result *out,
		       struct attestc_error *err)
{
	const char *cert = NULL, *ca = NULL, *serial = NULL, *plat = NULL, *role = NULL, *nb = NULL,
		   *na = NULL, *renew = NULL;
	struct jspec_bytes ev = {0}, meas = {0};
	const struct jspec_field spec[] = {
		JSPEC_STR("certificate", true, 1, 65536, &cert),
		JSPEC_STR("ca_certificate", true, 1, 65536, &ca),
		JSPEC_STR("serial", true, 1, 40, &serial),
		JSPEC_STR("platform", true, 1, 15, &plat),
		JSPEC_STR("role", true, 1, 15, &role),
		JSPEC_STR("not_before", true, 1, 32, &nb),
		JSPEC_STR("not_after", true, 1, 32, &na),
		JSPEC_STR("renew_after", true, 1, 32, &renew),
		JSPEC_HEXBYTES("evidence_sha256", true, 32, 32, &ev),
		JSPEC_HEXBYTES("measurement", true, 0, ATTEST_MEASUREMENT_MAX, &meas),
		JSPEC_END_F,
	};
	json_t *doc = NULL;
	struct jspec_error je;
	X509 *x = NULL, *cax = NULL;
	BIO *b = NULL;
	int rc;
	if (jspec_parse_body(r->body, r->len, spec, JSPEC_ALLOW_UNKNOWN, &doc, &je) != 0)
		return fail(err, ERR_PROTOCOL, "the attestation answer is malformed: %s", je.detail);
	rc = ERR_PROTOCOL;
	if (rfc3339(nb, &out->not_before) != 0 || rfc3339(na, &out->not_after) != 0 ||
	    rfc3339(renew, &out->renew_after) != 0) {
		fail(err, rc, "the attestation answer has a malformed time");
		goto out;
	}
	b = BIO_new_mem_buf(cert, -1);
	x = b ? PEM_read_bio_X509(b, NULL, NULL, NULL) : NULL;
	BIO_free(b);
	b = BIO_new_mem_buf(ca, -1);
	cax = b ? PEM_read_bio_X509(b, NULL, NULL, NULL) : NULL;
	if (!x || !cax || EVP_PKEY_eq(X509_get0_pubkey(x), key) != 1 || X509_verify(x, X509_get0_pubkey(cax)) != 1) {
		fail(err, rc, "the issued certificate is not for our key or not signed by the CA sent with it");
		goto out;
	}
	rc = ERR_NOMEM;
	if (!(out->cert_pem = strdup(cert)) || !(out->ca_pem = strdup(ca))) {
		fail(err, rc, "out of memory");
		goto out;
	}
	snprintf(out->serial, sizeof out->serial, "%s", serial);
	snprintf(out->platform, sizeof out->platform, "%s", plat);
	snprintf(out->role, sizeof out->role, "%s", role);
	memcpy(out->evidence_sha256, ev.data, 32);
	memcpy(out->measurement, meas.data, meas.len);
	out->measurement_len = meas.len;
	rc = 0;
out:
	ERR_clear_error();
	BIO_free(b);
	X509_free(x);
	X509_free(cax);
	jspec_bytes_free(&ev);
	jspec_bytes_free(&meas);
	json_decref(doc);
	return rc;
}

int attestc_post(const struct attestc_opts *o, const uint8_t nonce[32], EVP_PKEY *tls_key,
		 const uint8_t x25519_pub[32], const struct attestc_evidence *ev, struct attestc_result *out,
		 struct attestc_error *err)
{
	struct httpc *c = NULL;
	struct httpc_resp r = {0};
	json_t *body = NULL;
	char *csr = NULL, *text = NULL;
	char nhex[65], xhex[65];
	int rc;
	if (!nonce || !tls_key || !x25519_pub || !ev || !out)
		return fail(err, ERR_INVALID, "missing argument");
	memset(out, 0, sizeof *out);
	const char *plat = ident_platform_name(o ? o->platform : IDENT_PLATFORM_NONE);
	const char *role = ident_role_name(o ? o->role : IDENT_ROLE_NONE);
	if ((rc = client_new(o, &c, err)) != 0)
		return rc;
	if (!(csr = csr_pem(tls_key, o->name ? o->name : role))) {
		rc = fail(err, ERR_INVALID, "cannot make a certificate request: the TLS key must be ECDSA P-256");
		goto out;
	}
	sodium_bin2hex(nhex, sizeof nhex, nonce, 32);
	sodium_bin2hex(xhex, sizeof xhex, x25519_pub, 32);
	body = json_pack("{s:s, s:s, s:s, s:o, s:o, s:s, s:s}", "nonce", nhex, "platform", plat, "role", role,
			 "evidence", b64_string(ev->data, ev->len), "certificates",
			 b64_array(ev->certs, ev->n_certs, o->certs, o->n_certs), "csr", csr,
			 "x25519_public_key", xhex);
	if (body && o->n_collateral)
		json_object_set_new(body, "collateral", b64_array(o->collateral, o->n_collateral, NULL, 0));
	if (body && o->name)
		json_object_set_new(body, "name", json_string(o->name));
	if (body && o->n_dns)
		json_object_set_new(body, "dns", str_array(o->dns, o->n_dns));
	if (body && o->n_ip)
		json_object_set_new(body, "ip", str_array(o->ip, o->n_ip));
	if (!body || !(text = json_dumps(body, JSON_COMPACT))) {
		rc = fail(err, ERR_NOMEM, "out of memory");
		goto out;
	}
	rc = httpc_request(c, "POST", "/v1/attestations", NULL, "application/json", text, strlen(text), &r);
	if (rc != 0) {
		rc = fail(err, rc, "cannot reach %s: %s", o->url, r.error);
		goto out;
	}
	if (r.status != 201) {
		rc = refused(&r, "the attestation", err);
		goto out;
	}
	if ((rc = read_result(&r, tls_key, out, err)) != 0)
		goto out;
	memcpy(out->nonce, nonce, 32);
out:
	if (rc != 0)
		attestc_result_free(out);
	free(text);
	free(csr);
	json_decref(body);
	httpc_resp_free(&r);
	httpc_free(c);
	return rc;
}

int attestc_request(const struct attestc_opts *o, EVP_PKEY *tls_key, const uint8_t x25519_pub[32],
		    struct attestc_result *out, struct attestc_error *err)
{
	uint8_t nonce[32], rd[ATTEST_REPORT_DATA_LEN];
	struct attestc_evidence ev = {0};
	if (!o || !tls_key || !x25519_pub || !out)
		return fail(err, ERR_INVALID, "missing argument");
	memset(out, 0, sizeof *out);
	int rc = attestc_challenge(o, nonce, err);
	if (rc != 0)
		return rc;
	const struct attestc_evidence *use = o->evidence_override;
	if (!use) {
		if ((rc = attestc_binding(tls_key, x25519_pub, nonce, sizeof nonce, rd)) != 0)
			return fail(err, rc, "the TLS key cannot be encoded");
		struct attestc_collect_opts co = o->collect;
		if (o->platform == IDENT_PLATFORM_NITRO && !co.nitro_nonce) {
			co.nitro_nonce = nonce;
			co.nitro_nonce_len = sizeof nonce;
		}
		if ((rc = attestc_collect(o->platform, rd, &co, &ev, err)) != 0)
			return rc;
		use = &ev;
	}
	rc = attestc_post(o, nonce, tls_key, x25519_pub, use, out, err);
	attestc_evidence_free(&ev);
	return rc;
}

void attestc_result_free(struct attestc_result *r)
{
	if (!r)
		return;
	free(r->cert_pem);
	free(r->ca_pem);
	memset(r, 0, sizeof *r);
}

bool attestc_renew_due(const struct attestc_result *r, int64_t now)
{
	return !r || now >= r->renew_after || now >= r->not_after;
}
