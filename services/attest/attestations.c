/* mimir-attest attestations: POST /v1/attestations, the one endpoint that turns
 * evidence into a certificate. Cheap checks come first (the body, the names, the key),
 * then the nonce is taken (single use, whatever follows), then the evidence is verified
 * at the verification time, then the policy for the role and platform decides, with
 * report_data required to be attest_binding(the key to certify, the X25519 key, the
 * nonce): evidence made for another key or another nonce is refused as "binding".
 * Every refusal is a problem+json body naming the check ("check") and a short machine
 * reason ("reason", also the metrics label); every outcome is one log line. */
#include <arpa/inet.h>
#include <openssl/bio.h>
#include <openssl/err.h>
#include <openssl/evp.h>
#include <openssl/pem.h>
#include <openssl/x509.h>
#include <sodium.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "attestd.h"
#include "err/err.h"
#include "log/log.h"
#include "metrics/metrics.h"

#define KEY_PEM_MAX 16384
#define CERTS_MAX 4
#define CERT_FILE_MAX (16 * 1024)
#define COLLATERAL_MAX 8
#define COLLATERAL_FILE_MAX (256 * 1024)

/* The platforms and roles a requester may name; the policy then decides. Humans'
 * roles (client, admin) and attest's own are never handed out for evidence. */
static const char *const platform_names[] = {"simulated", "sev-snp", "tdx", "nitro", NULL};
static const char *const role_names[] = {"party", "dealer", "gateway", "session", NULL};

struct request {
	enum ident_platform platform;
	enum ident_role role;
	const char *name;
	const char *dns[IDENT_MAX_DNS];
	size_t n_dns;
	const char *ip[IDENT_MAX_IP];
	size_t n_ip;
	struct jspec_bytes nonce, x25519, evidence;
	struct attest_blob certs[CERTS_MAX], coll[COLLATERAL_MAX];
	size_t n_certs, n_coll;
	EVP_PKEY *key;
	uint8_t *spki;
	int spki_len;
};

static void request_free(struct request *q)
{
	jspec_bytes_free(&q->nonce);
	jspec_bytes_free(&q->x25519);
	jspec_bytes_free(&q->evidence);
	for (size_t i = 0; i < q->n_certs; i++)
		free((void *)q->certs[i].data);
	for (size_t i = 0; i < q->n_coll; i++)
		free((void *)q->coll[i].data);
	EVP_PKEY_free(q->key);
	OPENSSL_free(q->spki);
}

static void count(struct attestd_ctx *c, enum ident_platform p, const char *result, const char *reason)
{
	const char *pl = p == IDENT_PLATFORM_NONE ? "unknown" : ident_platform_name(p);
	metric_inc(metric_series(c->m_attest, METRIC_LABELS(pl, result, reason)));
}

/* A refusal: problem+json from e, with the machine reason; counted and logged. */
static int refuse(struct http_req *r, struct attestd_ctx *c, const struct request *q,
		  const struct attest_error *e, const char *reason)
{
	count(c, q->platform, "rejected", reason);
	LOG_WARN("attest.rejected", LOG_S("platform", q->platform ? ident_platform_name(q->platform) : ""),
		 LOG_S("role", q->role ? ident_role_name(q->role) : ""), LOG_S("check", attest_check_name(e->check)),
		 LOG_S("reason", reason), LOG_S("field", e->field), LOG_S("detail", e->reason));
	json_t *p = attest_problem(e, http_req_id(r));
	if (!p || json_object_set_new(p, "reason", json_string(reason)) != 0) {
		json_decref(p);
		return http_reply_problem(r, ERR_NOMEM, NULL, NULL);
	}
	unsigned status = (unsigned)json_integer_value(json_object_get(p, "status"));
	char *text = json_dumps(p, JSON_COMPACT);
	json_decref(p);
	if (!text)
		return http_reply_problem(r, ERR_NOMEM, NULL, NULL);
	int rc = http_reply_data(r, status ? status : 403, "application/problem+json", text, strlen(text));
	free(text);
	return rc;
}

/* A 400 for the body's shape (not the evidence), counted as reason "request". */
static int bad_request(struct http_req *r, struct attestd_ctx *c, const struct request *q, int code,
		       const char *field, const char *detail)
{
	count(c, q->platform, "rejected", "request");
	return http_reply_problem(r, code, detail, field);
}

/* Each element a base64 string of at most max decoded bytes. */
static int decode_list(json_t *arr, size_t max, struct attest_blob *out, size_t *n, const char *name,
		       char *field, size_t fcap)
{
	size_t i;
	json_t *v;
	*n = 0;
	json_array_foreach(arr, i, v)
	{
		snprintf(field, fcap, "%s[%zu]", name, i);
		const char *s = json_string_value(v);
		size_t sl = s ? strlen(s) : 0;
		if (!s || sl == 0 || sl > (max + 2) / 3 * 4)
			return s ? ERR_RANGE : ERR_TYPE;
		uint8_t *buf = malloc(sl);
		size_t bl = 0;
		if (!buf)
			return ERR_NOMEM;
		if (sodium_base642bin(buf, sl, s, sl, NULL, &bl, NULL, sodium_base64_VARIANT_ORIGINAL) != 0 ||
		    bl == 0 || bl > max) {
			free(buf);
			return ERR_PARSE;
		}
		out[(*n)++] = (struct attest_blob){buf, bl};
	}
	return 0;
}

static bool is_p256(EVP_PKEY *k)
{
	char group[32];
	return k && EVP_PKEY_is_a(k, "EC") &&
	       EVP_PKEY_get_utf8_string_param(k, "group", group, sizeof group, NULL) &&
	       strcmp(group, "prime256v1") == 0;
}

/* The key to certify, from a CSR (whose signature proves possession; its subject and
 * extensions are not used) or a bare public key. Returns the field at fault or NULL. */
static const char *read_key(struct request *q, const char *csr, const char *pub, const char **why)
{
	const char *field = csr ? "csr" : "public_key";
	const char *pem = csr ? csr : pub;
	BIO *b = BIO_new_mem_buf(pem, (int)strlen(pem));
	*why = "not a PEM encoded key";
	if (csr) {
		X509_REQ *req = b ? PEM_read_bio_X509_REQ(b, NULL, NULL, NULL) : NULL;
		EVP_PKEY *k = req ? X509_REQ_get0_pubkey(req) : NULL;
		if (!req)
			*why = "not a PEM certificate request";
		else if (!k || X509_REQ_verify(req, k) != 1)
			*why = "the request's signature does not verify with its key";
		else if (EVP_PKEY_up_ref(k) == 1)
			q->key = k;
		X509_REQ_free(req);
	} else {
		q->key = b ? PEM_read_bio_PUBKEY(b, NULL, NULL, NULL) : NULL;
	}
	BIO_free(b);
	ERR_clear_error();
	if (!q->key)
		return field;
	if (!is_p256(q->key)) {
		*why = "the key must be ECDSA P-256 (the Mimir certificate profile)";
		return field;
	}
	q->spki_len = i2d_PUBKEY(q->key, &q->spki);
	if (q->spki_len <= 0) {
		q->spki = NULL;
		*why = "the key cannot be encoded";
		return field;
	}
	return NULL;
}

/* Names for the certificate, checked as ident will check them. */
static const char *read_names(struct request *q, json_t *dns, json_t *ip, char *field, size_t fcap)
{
	size_t i;
	json_t *v;
	if (q->name && !ident_cn_ok(q->name)) {
		snprintf(field, fcap, "name");
		return "must be 1 to 64 printable characters";
	}
	json_array_foreach(dns, i, v)
	{
		snprintf(field, fcap, "dns[%zu]", i);
		const char *s = json_string_value(v);
		if (!s || !ident_dns_name_ok(s))
			return "must be a host name (letters, digits, hyphens, dots)";
		q->dns[q->n_dns++] = s;
	}
	json_array_foreach(ip, i, v)
	{
		snprintf(field, fcap, "ip[%zu]", i);
		const char *s = json_string_value(v);
		uint8_t a[16];
		if (!s || (inet_pton(AF_INET, s, a) != 1 && inet_pton(AF_INET6, s, a) != 1))
			return "must be a textual IPv4 or IPv6 address";
		q->ip[q->n_ip++] = s;
	}
	return NULL;
}

static int reply_issued(struct http_req *r, struct attestd_ctx *c, const struct request *q,
			const struct attest_claims *cl, X509 *x)
{
	struct ident id;
	BIO *b = BIO_new(BIO_s_mem());
	char *pem = NULL;
	long plen = 0;
	if (ident_from_x509(x, &id) != 0 || !b || PEM_write_bio_X509(b, x) != 1 ||
	    (plen = BIO_get_mem_data(b, &pem)) <= 0) {
		BIO_free(b);
		return http_reply_problem(r, ERR_INTERNAL, "the issued certificate cannot be encoded", NULL);
	}
	attestd_issued_note(c->revs, id.serial, id.not_after);
	char meas[2 * ATTEST_MEASUREMENT_MAX + 1], ev[65], xk[65], fp[65], nb[32], na[32], renew[32];
	sodium_bin2hex(meas, sizeof meas, cl->measurement, cl->measurement_len);
	sodium_bin2hex(ev, sizeof ev, cl->evidence_sha256, 32);
	sodium_bin2hex(xk, sizeof xk, q->x25519.data, 32);
	sodium_bin2hex(fp, sizeof fp, id.fingerprint, 32);
	attestd_rfc3339(id.not_before, nb, sizeof nb);
	attestd_rfc3339(id.not_after, na, sizeof na);
	/* Renewal is re-attestation; a third of the lifetime is left for retries. */
	int64_t issued = attestd_now_ms() / 1000;
	attestd_rfc3339(issued + (id.not_after - issued) * 2 / 3, renew, sizeof renew);
	const char *role = ident_role_name(q->role), *plat = ident_platform_name(q->platform);
	count(c, q->platform, "accepted", "none");
	metric_inc(metric_series(c->m_issued, METRIC_LABELS(role, plat)));
	/* The record that ties the certificate to its evidence and sealing key. Simulated
	 * evidence is loud every time. */
	LOG_AT(q->platform == IDENT_PLATFORM_SIMULATED ? LOG_LEVEL_WARN : LOG_LEVEL_INFO, "attest.issued",
	       LOG_S("serial", id.serial), LOG_S("cn", id.cn), LOG_S("role", role), LOG_S("platform", plat),
	       LOG_S("measurement", meas), LOG_S("evidence_sha256", ev), LOG_S("x25519_public_key", xk),
	       LOG_S("fingerprint", fp), LOG_S("not_after", na), LOG_B("debug", cl->debug),
	       LOG_S("detail", q->platform == IDENT_PLATFORM_SIMULATED
				       ? "simulated evidence: development only, no hardware protects this key"
				       : "attested"));
	json_t *out = json_pack("{s:s%, s:s, s:s, s:s, s:s, s:s, s:s, s:s, s:s, s:s, s:s, s:s, s:b}",
				"certificate", pem, (size_t)plen, "ca_certificate", attestd_ca_pem(c->ca),
				"serial", id.serial, "fingerprint_sha256", fp, "not_before", nb, "not_after", na,
				"renew_after", renew, "role", role, "platform", plat, "measurement", meas,
				"evidence_sha256", ev, "x25519_public_key", xk, "debug", cl->debug);
	BIO_free(b);
	http_reply_header(r, "Cache-Control", "no-store");
	return http_reply_json(r, 201, out);
}

int attestd_attestation(struct http_req *r, void *ctx)
{
	struct attestd_ctx *c = ctx;
	struct request q = {0};
	struct attest_claims *cl = NULL;
	X509 *x = NULL;
	int plat_idx = -1, role_idx = -1, rc;
	const char *csr = NULL, *pub = NULL;
	json_t *certs = NULL, *coll = NULL, *dns = NULL, *ip = NULL, *doc = NULL;
	char field[JSPEC_NAME_MAX];
	const char *why;
	const struct jspec_field spec[] = {
		JSPEC_HEXBYTES("nonce", true, ATTESTD_NONCE_LEN, ATTESTD_NONCE_LEN, &q.nonce),
		JSPEC_CHOICE("platform", true, platform_names, &plat_idx),
		JSPEC_CHOICE("role", true, role_names, &role_idx),
		JSPEC_B64BYTES("evidence", true, 1, ATTEST_EVIDENCE_MAX, &q.evidence),
		JSPEC_ARR("certificates", false, 0, CERTS_MAX, &certs),
		JSPEC_ARR("collateral", false, 0, COLLATERAL_MAX, &coll),
		JSPEC_STR("csr", false, 1, KEY_PEM_MAX, &csr),
		JSPEC_STR("public_key", false, 1, KEY_PEM_MAX, &pub),
		JSPEC_HEXBYTES("x25519_public_key", true, 32, 32, &q.x25519),
		JSPEC_STR("name", false, 1, IDENT_CN_MAX, &q.name),
		JSPEC_ARR("dns", false, 0, IDENT_MAX_DNS, &dns),
		JSPEC_ARR("ip", false, 0, IDENT_MAX_IP, &ip),
		JSPEC_END_F,
	};
	if ((rc = http_req_json(r, spec, 0, &doc)) != 0) {
		count(c, IDENT_PLATFORM_NONE, "rejected", "request");
		return rc;
	}
	ident_platform_parse(platform_names[plat_idx], &q.platform);
	ident_role_parse(role_names[role_idx], &q.role);

	/* ---- the request itself ---- */
	if (!csr == !pub) {
		rc = bad_request(r, c, &q, csr ? ERR_INVALID : ERR_MISSING, csr ? "public_key" : "csr",
				 csr ? "public_key: give either csr or public_key, not both"
				     : "csr: required (or public_key): the key to certify");
		goto out;
	}
	if (sodium_is_zero(q.x25519.data, 32)) {
		rc = bad_request(r, c, &q, ERR_RANGE, "x25519_public_key", "x25519_public_key: must not be zero");
		goto out;
	}
	if ((why = read_names(&q, dns, ip, field, sizeof field)) != NULL) {
		char detail[JSPEC_NAME_MAX + 96];
		snprintf(detail, sizeof detail, "%s: %s", field, why);
		rc = bad_request(r, c, &q, ERR_RANGE, field, detail);
		goto out;
	}
	const char *kf = read_key(&q, csr, pub, &why);
	if (kf) {
		char detail[JSPEC_NAME_MAX + 96];
		snprintf(detail, sizeof detail, "%s: %s", kf, why);
		count(c, q.platform, "rejected", "key");
		rc = http_reply_problem(r, ERR_PARSE, detail, kf);
		goto out;
	}
	if ((rc = decode_list(certs, CERT_FILE_MAX, q.certs, &q.n_certs, "certificates", field, sizeof field)) != 0 ||
	    (rc = decode_list(coll, COLLATERAL_FILE_MAX, q.coll, &q.n_coll, "collateral", field, sizeof field)) != 0) {
		char detail[JSPEC_NAME_MAX + 96];
		snprintf(detail, sizeof detail, "%s: must be a base64 string of at most %d bytes", field,
			 strncmp(field, "cert", 4) == 0 ? CERT_FILE_MAX : COLLATERAL_FILE_MAX);
		rc = bad_request(r, c, &q, rc, field, detail);
		goto out;
	}

	/* ---- freshness: the nonce is spent from here on, whatever the outcome ---- */
	int64_t now_ms = attestd_now_ms(), issued_ms = 0;
	enum attestd_nonce_verdict nv = attestd_nonce_take(c->nonces, q.nonce.data, q.nonce.len, now_ms, &issued_ms);
	if (nv != ATTESTD_NONCE_OK) {
		static const char *const reasons[] = {"", "nonce_unknown", "nonce_reused", "nonce_expired"};
		static const char *const details[] = {
			"", "the nonce was not issued by this service (or long ago): ask POST /v1/challenge for one",
			"the nonce was already used: every attestation needs a fresh one",
			"the nonce expired: ask for a fresh one and attest within its lifetime"};
		struct attest_error e = {.code = ERR_ATTESTATION, .check = ATTEST_CHECK_FRESHNESS, .field = "nonce"};
		snprintf(e.reason, sizeof e.reason, "%s", details[nv]);
		rc = refuse(r, c, &q, &e, reasons[nv]);
		goto out;
	}

	/* ---- the evidence ---- */
	if (!(cl = calloc(1, sizeof *cl))) {
		rc = http_reply_problem(r, ERR_NOMEM, NULL, NULL);
		goto out;
	}
	struct attest_evidence ev = {.platform = q.platform, .data = q.evidence.data, .len = q.evidence.len,
				     .certs = q.certs, .n_certs = q.n_certs, .collateral = q.coll,
				     .n_collateral = q.n_coll};
	struct attest_error e;
	int64_t at = attestd_verify_time(c);
	struct timespec t0, t1;
	clock_gettime(CLOCK_MONOTONIC, &t0);
	rc = attest_verify(c->roots, &ev, at, cl, &e);
	clock_gettime(CLOCK_MONOTONIC, &t1);
	metric_observe(metric_series(c->m_verify, METRIC_LABELS(ident_platform_name(q.platform))),
		       (double)(t1.tv_sec - t0.tv_sec) + (double)(t1.tv_nsec - t0.tv_nsec) / 1e9);
	if (rc != 0) {
		rc = refuse(r, c, &q, &e, attest_check_name(e.check));
		goto out;
	}
	if (cl->platform != q.platform) {
		struct attest_error pe = {.code = ERR_ATTESTATION, .check = ATTEST_CHECK_FORMAT, .field = "platform"};
		snprintf(pe.reason, sizeof pe.reason, "the evidence is not %s evidence",
			 ident_platform_name(q.platform));
		rc = refuse(r, c, &q, &pe, "format");
		goto out;
	}
	/* SNP reports, TDX quotes and simulated documents carry no time: the evidence is no
	 * older than the nonce it binds, so that is its time (on the verification clock). */
	if (!cl->has_time) {
		cl->has_time = true;
		cl->time = at - (now_ms - issued_ms) / 1000;
	}
	uint8_t expected[ATTEST_REPORT_DATA_LEN];
	if (attest_binding(q.spki, (size_t)q.spki_len, q.x25519.data, q.nonce.data, q.nonce.len, expected) != 0) {
		rc = http_reply_problem(r, ERR_INTERNAL, "binding could not be computed", NULL);
		goto out;
	}
	if ((rc = attest_policy_check(c->policy, q.role, cl, at, expected, &e)) != 0) {
		rc = refuse(r, c, &q, &e, attest_check_name(e.check));
		goto out;
	}

	/* ---- the certificate ---- */
	char cn[IDENT_CN_MAX + 1];
	if (q.name) {
		snprintf(cn, sizeof cn, "%s", q.name);
	} else {
		uint8_t h[32];
		char hx[17];
		crypto_hash_sha256(h, q.spki, (unsigned long long)q.spki_len);
		sodium_bin2hex(hx, sizeof hx, h, 8);
		snprintf(cn, sizeof cn, "%s-%s", ident_role_name(q.role), hx);
	}
	struct ident_ext ext = {.role = q.role, .platform = q.platform, .has_evidence_hash = true};
	memcpy(ext.measurement, cl->measurement, cl->measurement_len);
	ext.measurement_len = cl->measurement_len;
	memcpy(ext.evidence_hash, cl->evidence_sha256, 32);
	int64_t now = now_ms / 1000;
	struct ident_leaf_spec ls = {.cn = cn, .dns = q.dns, .n_dns = q.n_dns, .ip = q.ip, .n_ip = q.n_ip,
				     .not_before = now - c->set.cert_backdate_s,
				     .not_after = now + c->set.cert_lifetime_s, .ext = &ext};
	if ((rc = attestd_ca_issue(c->ca, &ls, q.key, &x)) != 0) {
		LOG_ERROR("attest.issue_failed", LOG_S("error", err_title(rc)));
		count(c, q.platform, "rejected", "internal");
		rc = http_reply_problem(r, rc == ERR_UNAVAILABLE ? ERR_UNAVAILABLE : ERR_INTERNAL,
					rc == ERR_UNAVAILABLE ? "the issuing CA has expired" : "the certificate could not be issued",
					NULL);
		goto out;
	}
	rc = reply_issued(r, c, &q, cl, x);
out:
	X509_free(x);
	free(cl);
	request_free(&q);
	json_decref(doc);
	return rc;
}
