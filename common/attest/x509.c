/* attest x509: the certificate and signature plumbing every verifier shares. Chains
 * are built by OpenSSL against a store that holds exactly one trusted certificate, the
 * vendor root for the evidence at hand, at the caller's verification time, with the
 * root's own signature checked (a root file that was tampered with fails). Raw
 * (r, s) signatures, as the vendors' formats carry them, are re-encoded as DER
 * ECDSA-Sig-Value for EVP_DigestVerify; out-of-range r or s is a bad signature, not an
 * error. */
#include <openssl/core_names.h>
#include <openssl/ec.h>
#include <openssl/err.h>
#include <openssl/evp.h>
#include <openssl/x509.h>
#include <openssl/x509_vfy.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "attest_int.h"
#include "err/err.h"

void attest_error_clear(struct attest_error *e)
{
	if (e)
		memset(e, 0, sizeof *e);
}

int attest_fail(struct attest_error *e, int code, enum attest_check check, const char *field,
		const char *fmt, ...)
{
	if (!e)
		return code;
	e->code = code;
	e->check = check;
	snprintf(e->field, sizeof e->field, "%s", field ? field : "");
	va_list ap;
	va_start(ap, fmt);
	vsnprintf(e->reason, sizeof e->reason, fmt, ap);
	va_end(ap);
	return code;
}

void attest_hex(char *buf, const uint8_t *p, size_t n)
{
	static const char hx[] = "0123456789abcdef";
	for (size_t i = 0; i < n; i++) {
		buf[2 * i] = hx[p[i] >> 4];
		buf[2 * i + 1] = hx[p[i] & 15];
	}
	buf[2 * n] = '\0';
}

static bool only_padding(const uint8_t *p, size_t n)
{
	for (size_t i = 0; i < n; i++)
		if (p[i] != 0 && p[i] != '\r' && p[i] != '\n')
			return false;
	return true;
}

static const char pem_begin[] = "-----BEGIN CERTIFICATE-----";
static const char pem_end[] = "-----END CERTIFICATE-----";

static const uint8_t *find_bytes(const uint8_t *p, size_t n, const char *needle)
{
	size_t k = strlen(needle);
	for (size_t i = 0; k <= n && i <= n - k; i++)
		if (p[i] == (uint8_t)needle[0] && memcmp(p + i, needle, k) == 0)
			return p + i;
	return NULL;
}

static int der_one(const uint8_t *p, size_t n, X509 **out);

static bool b64_char(uint8_t c)
{
	return (c >= 'A' && c <= 'Z') || (c >= 'a' && c <= 'z') || (c >= '0' && c <= '9') ||
	       c == '+' || c == '/' || c == '=';
}

/* One PEM certificate block, begin marker to end marker. Stricter than OpenSSL's PEM
 * reader on purpose: the body is base64 and line breaks only, in canonical form (it
 * re-encodes to itself), so that no byte of a block can change without changing the
 * certificate, and a damaged marker cannot make two blocks read as one. */
static int pem_one(const uint8_t *p, size_t n, X509 **out)
{
	size_t hb = strlen(pem_begin), he = strlen(pem_end);
	if (n < hb + he + 2)
		return ERR_PARSE;
	size_t i = hb;
	if (p[i] == '\r')
		i++;
	if (p[i] != '\n')
		return ERR_PARSE;
	size_t body_end = n - he;
	if (p[body_end - 1] != '\n')
		return ERR_PARSE;
	size_t cap = body_end - i;
	uint8_t *b64 = malloc(cap + 1), *der = malloc(cap + 1), *again = malloc(cap + 4);
	int rc = ERR_PARSE;
	if (!b64 || !der || !again) {
		rc = ERR_NOMEM;
		goto out;
	}
	size_t k = 0;
	for (; i < body_end; i++) {
		if (p[i] == '\n' || p[i] == '\r')
			continue;
		if (!b64_char(p[i]))
			goto out;
		b64[k++] = p[i];
	}
	if (k == 0 || k % 4 != 0 || k > INT32_MAX)
		goto out;
	int dlen = EVP_DecodeBlock(der, b64, (int)k);
	if (dlen < 0)
		goto out;
	size_t pad = (b64[k - 1] == '=') + (b64[k - 2] == '=');
	if ((size_t)dlen < pad)
		goto out;
	dlen -= (int)pad;
	int elen = EVP_EncodeBlock(again, der, dlen);
	if (elen < 0 || (size_t)elen != k || memcmp(again, b64, k) != 0)
		goto out;
	rc = der_one(der, (size_t)dlen, out);
out:
	free(b64);
	free(der);
	free(again);
	return rc;
}

static int der_one(const uint8_t *p, size_t n, X509 **out)
{
	if (n > INT32_MAX)
		return ERR_PARSE;
	const unsigned char *q = p;
	X509 *x = d2i_X509(NULL, &q, (long)n);
	ERR_clear_error();
	if (!x)
		return ERR_PARSE;
	if ((size_t)(q - p) != n) {
		X509_free(x);
		return ERR_PARSE;
	}
	*out = x;
	return 0;
}

int attest_certs_load(const uint8_t *data, size_t len, STACK_OF(X509) *out, int max)
{
	if (!data || !out || len == 0 || len > ATTEST_EVIDENCE_MAX)
		return ERR_PARSE;
	const uint8_t *b = find_bytes(data, len, pem_begin);
	if (!b) {
		X509 *x = NULL;
		int rc = der_one(data, len, &x);
		if (rc != 0)
			return rc;
		if (sk_X509_num(out) >= max || !sk_X509_push(out, x)) {
			X509_free(x);
			return ERR_PARSE;
		}
		return 0;
	}
	const uint8_t *p = data, *end = data + len;
	while (p < end) {
		b = find_bytes(p, (size_t)(end - p), pem_begin);
		if (!b)
			return only_padding(p, (size_t)(end - p)) ? 0 : ERR_PARSE;
		if (!only_padding(p, (size_t)(b - p)))
			return ERR_PARSE;
		const uint8_t *e = find_bytes(b, (size_t)(end - b), pem_end);
		if (!e)
			return ERR_PARSE;
		e += strlen(pem_end);
		X509 *x = NULL;
		int rc = pem_one(b, (size_t)(e - b), &x);
		if (rc != 0)
			return rc;
		if (sk_X509_num(out) >= max || !sk_X509_push(out, x)) {
			X509_free(x);
			return ERR_PARSE;
		}
		p = e;
	}
	return 0;
}

static const char *subject_cn(X509 *x, char *buf, size_t cap)
{
	buf[0] = '\0';
	X509_NAME *n = x ? X509_get_subject_name(x) : NULL;
	if (n && X509_NAME_get_text_by_NID(n, NID_commonName, buf, (int)cap) < 0)
		buf[0] = '\0';
	ERR_clear_error();
	return buf;
}

/* After the chain is built: each CRL whose issuer is in the chain must be signed by
 * that issuer, current at time at, and must not list the issuer's child. CRLs of other
 * issuers are not about this chain and are skipped. */
static int check_crls(STACK_OF(X509) *chain, STACK_OF(X509_CRL) *crls, int64_t at,
		      const char *what, int *used, struct attest_error *e)
{
	time_t t = (time_t)at;
	for (int i = 0; i < sk_X509_CRL_num(crls); i++) {
		X509_CRL *crl = sk_X509_CRL_value(crls, i);
		for (int k = 1; k < sk_X509_num(chain); k++) {
			X509 *issuer = sk_X509_value(chain, k), *child = sk_X509_value(chain, k - 1);
			if (X509_NAME_cmp(X509_CRL_get_issuer(crl), X509_get_subject_name(issuer)) != 0)
				continue;
			char cn[96];
			subject_cn(issuer, cn, sizeof cn);
			EVP_PKEY *pk = X509_get0_pubkey(issuer);
			if (!pk || X509_CRL_verify(crl, pk) != 1) {
				ERR_clear_error();
				return attest_fail(e, ERR_ATTESTATION, ATTEST_CHECK_COLLATERAL, "crl",
						   "%s chain: the CRL of %s is not signed by it", what,
						   cn);
			}
			const ASN1_TIME *tu = X509_CRL_get0_lastUpdate(crl);
			const ASN1_TIME *nu = X509_CRL_get0_nextUpdate(crl);
			if (!tu || X509_cmp_time(tu, &t) > 0 || !nu || X509_cmp_time(nu, &t) < 0) {
				ERR_clear_error();
				return attest_fail(e, ERR_ATTESTATION, ATTEST_CHECK_FRESHNESS, "crl",
						   "%s chain: the CRL of %s is not current at the "
						   "verification time",
						   what, cn);
			}
			X509_REVOKED *rev = NULL;
			if (X509_CRL_get0_by_cert(crl, &rev, child) == 1) {
				char ccn[96];
				subject_cn(child, ccn, sizeof ccn);
				return attest_fail(e, ERR_ATTESTATION, ATTEST_CHECK_CHAIN, "crl",
						   "%s chain: certificate CN=%s is revoked by %s", what,
						   ccn, cn);
			}
			(*used)++;
		}
	}
	ERR_clear_error();
	return 0;
}

int attest_chain_verify(X509 *leaf, STACK_OF(X509) *untrusted, X509 *anchor,
			STACK_OF(X509_CRL) *crls, int64_t at, const char *what, int *crls_used,
			struct attest_error *e)
{
	int used = 0;
	if (crls_used)
		*crls_used = 0;
	if (!anchor)
		return attest_fail(e, ERR_ATTESTATION, ATTEST_CHECK_CHAIN, NULL,
				   "%s chain: no trust anchor loaded for it", what);
	int rc = ERR_NOMEM;
	X509_STORE *st = X509_STORE_new();
	X509_STORE_CTX *ctx = X509_STORE_CTX_new();
	if (!st || !ctx || !X509_STORE_add_cert(st, anchor))
		goto out;
	if (!X509_STORE_CTX_init(ctx, st, leaf, untrusted))
		goto out;
	X509_VERIFY_PARAM *vp = X509_STORE_CTX_get0_param(ctx);
	X509_VERIFY_PARAM_set_flags(vp, X509_V_FLAG_CHECK_SS_SIGNATURE | X509_V_FLAG_USE_CHECK_TIME);
	X509_VERIFY_PARAM_set_time(vp, (time_t)at);
	X509_VERIFY_PARAM_set_depth(vp, 8);
	if (X509_verify_cert(ctx) == 1) {
		rc = crls ? check_crls(X509_STORE_CTX_get0_chain(ctx), crls, at, what, &used, e) : 0;
		if (rc == 0 && crls_used)
			*crls_used = used;
		goto out;
	}
	int verr = X509_STORE_CTX_get_error(ctx);
	int depth = X509_STORE_CTX_get_error_depth(ctx);
	char cn[96];
	subject_cn(X509_STORE_CTX_get_current_cert(ctx), cn, sizeof cn);
	rc = attest_fail(e, ERR_ATTESTATION, ATTEST_CHECK_CHAIN, NULL,
			 "%s chain: %s (depth %d, CN=%s)", what, X509_verify_cert_error_string(verr),
			 depth, cn);
out:
	ERR_clear_error();
	X509_STORE_CTX_free(ctx);
	X509_STORE_free(st);
	return rc;
}

int attest_ecdsa_verify(EVP_PKEY *key, const EVP_MD *md, const uint8_t *msg, size_t len,
			const uint8_t *r, const uint8_t *s, size_t n, const char *what,
			struct attest_error *e)
{
	int rc = ERR_NOMEM;
	unsigned char *der = NULL;
	ECDSA_SIG *sig = ECDSA_SIG_new();
	BIGNUM *br = BN_bin2bn(r, (int)n, NULL), *bs = BN_bin2bn(s, (int)n, NULL);
	EVP_MD_CTX *mc = EVP_MD_CTX_new();
	if (!sig || !br || !bs || !mc)
		goto out;
	if (!ECDSA_SIG_set0(sig, br, bs))
		goto out;
	br = bs = NULL; /* owned by sig */
	int dlen = i2d_ECDSA_SIG(sig, &der);
	if (dlen <= 0)
		goto out;
	if (EVP_PKEY_base_id(key) != EVP_PKEY_EC) {
		rc = attest_fail(e, ERR_ATTESTATION, ATTEST_CHECK_SIGNATURE, NULL,
				 "%s: the signing key is not an EC key", what);
		goto out;
	}
	if (EVP_DigestVerifyInit(mc, NULL, md, NULL, key) != 1) {
		rc = attest_fail(e, ERR_ATTESTATION, ATTEST_CHECK_SIGNATURE, NULL,
				 "%s: the key cannot verify this signature type", what);
		goto out;
	}
	if (EVP_DigestVerify(mc, der, (size_t)dlen, msg, len) != 1) {
		rc = attest_fail(e, ERR_ATTESTATION, ATTEST_CHECK_SIGNATURE, NULL,
				 "%s: ECDSA signature does not verify", what);
		goto out;
	}
	rc = 0;
out:
	ERR_clear_error();
	EVP_MD_CTX_free(mc);
	OPENSSL_free(der);
	BN_free(br);
	BN_free(bs);
	ECDSA_SIG_free(sig);
	return rc;
}

int attest_p256_key(const uint8_t xy[64], EVP_PKEY **out)
{
	uint8_t pt[65];
	pt[0] = 0x04;
	memcpy(pt + 1, xy, 64);
	int rc = ERR_ATTESTATION;
	EVP_PKEY_CTX *pc = EVP_PKEY_CTX_new_from_name(NULL, "EC", NULL);
	OSSL_PARAM params[] = {
		OSSL_PARAM_construct_utf8_string(OSSL_PKEY_PARAM_GROUP_NAME, (char *)"P-256", 0),
		OSSL_PARAM_construct_octet_string(OSSL_PKEY_PARAM_PUB_KEY, pt, sizeof pt),
		OSSL_PARAM_construct_end(),
	};
	*out = NULL;
	if (!pc) {
		rc = ERR_NOMEM;
		goto out;
	}
	/* fromdata checks that the point is on the curve. */
	if (EVP_PKEY_fromdata_init(pc) == 1 &&
	    EVP_PKEY_fromdata(pc, out, EVP_PKEY_PUBLIC_KEY, params) == 1)
		rc = 0;
out:
	ERR_clear_error();
	EVP_PKEY_CTX_free(pc);
	return rc;
}

int attest_parse_rfc3339(const char *s, int64_t *out)
{
	int y, mo, d, h, mi, sec, n = 0;
	if (!s || sscanf(s, "%4d-%2d-%2dT%2d:%2d:%2d%n", &y, &mo, &d, &h, &mi, &sec, &n) != 6 ||
	    n != 19)
		return ERR_PARSE;
	const char *p = s + n;
	if (*p == '.') {
		p++;
		if (*p < '0' || *p > '9')
			return ERR_PARSE;
		while (*p >= '0' && *p <= '9')
			p++;
	}
	if (p[0] != 'Z' || p[1] != '\0')
		return ERR_PARSE;
	if (y < 1970 || mo < 1 || mo > 12 || d < 1 || d > 31 || h > 23 || mi > 59 || sec > 60)
		return ERR_PARSE;
	struct tm tm = {.tm_year = y - 1900, .tm_mon = mo - 1, .tm_mday = d, .tm_hour = h,
			.tm_min = mi, .tm_sec = sec};
	*out = (int64_t)timegm(&tm);
	return 0;
}
