/* attest nitro: the AWS Nitro Enclaves verifier. The Nitro Secure Module returns an
 * attestation document: a COSE_Sign1 (RFC 9052, section 4.2) whose protected header
 * names ES384 and whose payload is a CBOR map (module_id, digest, timestamp, pcrs,
 * certificate, cabundle, public_key, user_data, nonce; AWS "Nitro Enclaves attestation
 * document" specification). The signature is made by the key of the document's own
 * certificate, which chains through cabundle to the AWS Nitro root. Every field is
 * read strictly: a key we do not know, a key twice, a PCR of the wrong size or a byte
 * after the structure is malformed, because anything we silently skipped would be
 * signed data no check looked at. The certificates in a document live for three hours,
 * so recorded documents verify at their own time. */
#include <openssl/err.h>
#include <openssl/evp.h>
#include <openssl/x509.h>
#include <string.h>

#include "attest_int.h"
#include "err/err.h"

#define NITRO_MAX_CABUNDLE 8
#define NITRO_SIG_LEN 96 /* r || s, 48 bytes each (ES384) */
/* How far in the future of the verification time a document may claim to be. */
#define NITRO_CLOCK_SKEW 300

struct nitro_raw {
	const uint8_t *protected_hdr, *payload, *sig, *cert;
	size_t protected_len, payload_len, cert_len;
	const uint8_t *ca[NITRO_MAX_CABUNDLE];
	size_t ca_len[NITRO_MAX_CABUNDLE];
	size_t n_ca;
};

static int bad(struct attest_error *e, const char *field, const char *what)
{
	return attest_fail(e, ERR_PARSE, ATTEST_CHECK_FORMAT, field, "Nitro document: %s", what);
}

static bool text_is(const struct cbor_item *it, const char *s)
{
	size_t n = strlen(s);
	return it->type == CBOR_TEXT && it->val == n && memcmp(it->str, s, n) == 0;
}

/* bstr or null (absent). */
static int opt_bytes(struct cbor *c, uint8_t *dst, size_t *len, bool *has, const char *field,
		     struct attest_error *e)
{
	struct cbor_item it;
	if (cbor_read(c, &it) != 0)
		return bad(e, field, "truncated value");
	if (it.type == CBOR_SIMPLE && it.val == 22) {
		*has = false;
		*len = 0;
		return 0;
	}
	if (it.type != CBOR_BYTES)
		return bad(e, field, "value is neither a byte string nor null");
	if (it.val > ATTEST_NITRO_DATA_MAX)
		return attest_fail(e, ERR_PARSE, ATTEST_CHECK_FORMAT, field,
				   "Nitro document: %s is longer than %d bytes", field,
				   ATTEST_NITRO_DATA_MAX);
	memcpy(dst, it.str, (size_t)it.val);
	*len = (size_t)it.val;
	*has = true;
	return 0;
}

static int parse_pcrs(struct cbor *c, struct attest_nitro *n, struct attest_error *e)
{
	struct cbor_item it;
	if (cbor_expect(c, CBOR_MAP, &it) != 0 || it.val == 0 || it.val > ATTEST_NITRO_PCRS)
		return bad(e, "pcrs", "pcrs is not a map of 1 to 32 entries");
	uint64_t count = it.val;
	for (uint64_t i = 0; i < count; i++) {
		struct cbor_item k, v;
		if (cbor_expect(c, CBOR_UINT, &k) != 0 || k.val >= ATTEST_NITRO_PCRS)
			return bad(e, "pcrs", "a PCR index is not an integer below 32");
		if (n->pcr_present & (1u << k.val))
			return bad(e, "pcrs", "a PCR index appears twice");
		if (cbor_expect(c, CBOR_BYTES, &v) != 0 || v.val != ATTEST_NITRO_PCR_LEN)
			return bad(e, "pcrs", "a PCR value is not 48 bytes (SHA-384)");
		n->pcr_present |= 1u << k.val;
		memcpy(n->pcr[k.val], v.str, ATTEST_NITRO_PCR_LEN);
	}
	/* PCR0-2 (image, kernel, application) are what an enclave is; without them the
	 * document says nothing a policy can check. */
	if ((n->pcr_present & 7u) != 7u)
		return bad(e, "pcrs", "PCR0, PCR1 and PCR2 must be present");
	return 0;
}

static int parse_payload(const uint8_t *p, size_t len, struct attest_nitro *n,
			 struct nitro_raw *raw, struct attest_error *e)
{
	struct cbor c;
	struct cbor_item it;
	cbor_init(&c, p, len);
	if (cbor_expect(&c, CBOR_MAP, &it) != 0 || it.val > 16)
		return bad(e, "payload", "the payload is not a CBOR map");
	uint64_t count = it.val;
	enum { K_MODULE, K_DIGEST, K_TIME, K_PCRS, K_CERT, K_CAB, K_PUB, K_USER, K_NONCE, K_N };
	static const char *const keys[K_N] = {"module_id",   "digest",	 "timestamp",
					      "pcrs",	     "certificate", "cabundle",
					      "public_key",  "user_data",   "nonce"};
	unsigned seen = 0;
	for (uint64_t i = 0; i < count; i++) {
		struct cbor_item k;
		if (cbor_expect(&c, CBOR_TEXT, &k) != 0)
			return bad(e, "payload", "a payload key is not a text string");
		int which = -1;
		for (int j = 0; j < K_N; j++)
			if (text_is(&k, keys[j]))
				which = j;
		if (which < 0)
			return bad(e, "payload", "unknown payload key");
		if (seen & (1u << which))
			return attest_fail(e, ERR_PARSE, ATTEST_CHECK_FORMAT, keys[which],
					   "Nitro document: %s appears twice", keys[which]);
		seen |= 1u << which;
		struct cbor_item v;
		int rc = 0;
		switch (which) {
		case K_MODULE:
			if (cbor_expect(&c, CBOR_TEXT, &v) != 0 || v.val == 0 ||
			    v.val > ATTEST_NITRO_MODULE_ID_MAX)
				return bad(e, "module_id", "module_id is not a text of 1 to 128 bytes");
			for (size_t j = 0; j < v.val; j++)
				if (v.str[j] < 0x21 || v.str[j] > 0x7e)
					return bad(e, "module_id", "module_id is not printable ASCII");
			memcpy(n->module_id, v.str, (size_t)v.val);
			n->module_id[v.val] = '\0';
			break;
		case K_DIGEST:
			if (cbor_expect(&c, CBOR_TEXT, &v) != 0 || !text_is(&v, "SHA384"))
				return bad(e, "digest", "digest is not \"SHA384\"");
			memcpy(n->digest, "SHA384", 7);
			break;
		case K_TIME:
			if (cbor_expect(&c, CBOR_UINT, &v) != 0 || v.val == 0 ||
			    v.val > (uint64_t)INT64_MAX / 2)
				return bad(e, "timestamp", "timestamp is not a positive integer");
			n->timestamp_ms = v.val;
			break;
		case K_PCRS:
			rc = parse_pcrs(&c, n, e);
			break;
		case K_CERT:
			if (cbor_expect(&c, CBOR_BYTES, &v) != 0 || v.val == 0)
				return bad(e, "certificate", "certificate is not a byte string");
			raw->cert = v.str;
			raw->cert_len = (size_t)v.val;
			break;
		case K_CAB:
			if (cbor_expect(&c, CBOR_ARRAY, &v) != 0 || v.val == 0 ||
			    v.val > NITRO_MAX_CABUNDLE)
				return bad(e, "cabundle", "cabundle is not an array of 1 to 8 entries");
			raw->n_ca = (size_t)v.val;
			for (size_t j = 0; j < raw->n_ca; j++) {
				struct cbor_item b;
				if (cbor_expect(&c, CBOR_BYTES, &b) != 0 || b.val == 0)
					return bad(e, "cabundle", "a cabundle entry is not a byte string");
				raw->ca[j] = b.str;
				raw->ca_len[j] = (size_t)b.val;
			}
			n->n_cabundle = raw->n_ca;
			break;
		case K_PUB:
			rc = opt_bytes(&c, n->public_key, &n->public_key_len, &n->has_public_key,
				       "public_key", e);
			break;
		case K_USER:
			rc = opt_bytes(&c, n->user_data, &n->user_data_len, &n->has_user_data,
				       "user_data", e);
			break;
		case K_NONCE:
			rc = opt_bytes(&c, n->nonce, &n->nonce_len, &n->has_nonce, "nonce", e);
			break;
		}
		if (rc != 0)
			return rc;
	}
	for (int j = 0; j <= K_CAB; j++)
		if (!(seen & (1u << j)))
			return attest_fail(e, ERR_PARSE, ATTEST_CHECK_FORMAT, keys[j],
					   "Nitro document: %s is missing", keys[j]);
	if (c.off != c.len)
		return bad(e, "payload", "bytes after the payload map");
	return 0;
}

static int parse(const uint8_t *doc, size_t len, struct attest_nitro *n, struct nitro_raw *raw,
		 struct attest_error *e)
{
	memset(n, 0, sizeof *n);
	memset(raw, 0, sizeof *raw);
	if (len == 0 || len > ATTEST_EVIDENCE_MAX)
		return bad(e, "length", "empty or larger than 64 KiB");
	struct cbor c;
	struct cbor_item it;
	cbor_init(&c, doc, len);
	if (cbor_read(&c, &it) != 0)
		return bad(e, NULL, "not CBOR");
	/* COSE_Sign1 may carry its tag (18); the NSM sends it untagged. */
	if (it.type == CBOR_TAG) {
		if (it.val != 18 || cbor_read(&c, &it) != 0)
			return bad(e, NULL, "tagged, but not as COSE_Sign1 (18)");
	}
	if (it.type != CBOR_ARRAY || it.val != 4)
		return bad(e, NULL, "not a COSE_Sign1 array of four");
	/* protected: a bstr holding exactly {1: -35} (alg: ES384). */
	struct cbor_item ph;
	if (cbor_expect(&c, CBOR_BYTES, &ph) != 0)
		return bad(e, "protected", "the protected header is not a byte string");
	raw->protected_hdr = ph.str;
	raw->protected_len = (size_t)ph.val;
	struct cbor h;
	struct cbor_item m, k, v;
	cbor_init(&h, ph.str, (size_t)ph.val);
	if (cbor_expect(&h, CBOR_MAP, &m) != 0 || m.val != 1 || cbor_expect(&h, CBOR_UINT, &k) != 0 ||
	    k.val != 1 || cbor_expect(&h, CBOR_NINT, &v) != 0 || v.val != 34 || h.off != h.len)
		return bad(e, "protected", "the protected header is not {alg: ES384}");
	/* unprotected: a map, whose content is not signed and so never used. */
	struct cbor_item um;
	if (cbor_expect(&c, CBOR_MAP, &um) != 0 || um.val > 16)
		return bad(e, "unprotected", "the unprotected header is not a map");
	for (uint64_t i = 0; i < 2 * um.val; i++)
		if (cbor_skip(&c) != 0)
			return bad(e, "unprotected", "the unprotected header is malformed");
	struct cbor_item pl, sg;
	if (cbor_expect(&c, CBOR_BYTES, &pl) != 0)
		return bad(e, "payload", "the payload is not a byte string");
	if (cbor_expect(&c, CBOR_BYTES, &sg) != 0 || sg.val != NITRO_SIG_LEN)
		return bad(e, "signature", "the signature is not 96 bytes (ES384 r || s)");
	if (c.off != c.len)
		return bad(e, NULL, "bytes after the COSE_Sign1 structure");
	raw->payload = pl.str;
	raw->payload_len = (size_t)pl.val;
	raw->sig = sg.str;
	return parse_payload(pl.str, (size_t)pl.val, n, raw, e);
}

int attest_nitro_parse(const uint8_t *doc, size_t len, struct attest_nitro *out,
		       struct attest_error *err)
{
	struct attest_error local_err;
	if (!err)
		err = &local_err;
	attest_error_clear(err);
	if (!doc || !out)
		return attest_fail(err, ERR_INVALID, ATTEST_CHECK_NONE, NULL, "no document");
	struct nitro_raw raw;
	return parse(doc, len, out, &raw, err);
}

/* The CBOR head of a byte string of length n, shortest form. */
static size_t bstr_head(uint8_t *h, size_t n)
{
	if (n < 24) {
		h[0] = (uint8_t)(0x40 | n);
		return 1;
	}
	if (n < 0x100) {
		h[0] = 0x58;
		h[1] = (uint8_t)n;
		return 2;
	}
	if (n < 0x10000) {
		h[0] = 0x59;
		h[1] = (uint8_t)(n >> 8);
		h[2] = (uint8_t)n;
		return 3;
	}
	h[0] = 0x5a;
	h[1] = (uint8_t)(n >> 24);
	h[2] = (uint8_t)(n >> 16);
	h[3] = (uint8_t)(n >> 8);
	h[4] = (uint8_t)n;
	return 5;
}

/* Sig_structure = ["Signature1", protected, external_aad = h'', payload] (RFC 9052,
 * section 4.4), the bytes the ES384 signature is over. */
static int sig_structure(const struct nitro_raw *raw, uint8_t **out, size_t *len)
{
	static const uint8_t pre[] = {0x84, 0x6a, 'S', 'i', 'g', 'n', 'a', 't', 'u', 'r', 'e', '1'};
	size_t cap = sizeof pre + 5 + raw->protected_len + 1 + 5 + raw->payload_len;
	uint8_t *b = malloc(cap);
	if (!b)
		return ERR_NOMEM;
	size_t o = 0;
	memcpy(b, pre, sizeof pre);
	o += sizeof pre;
	o += bstr_head(b + o, raw->protected_len);
	memcpy(b + o, raw->protected_hdr, raw->protected_len);
	o += raw->protected_len;
	b[o++] = 0x40;
	o += bstr_head(b + o, raw->payload_len);
	memcpy(b + o, raw->payload, raw->payload_len);
	o += raw->payload_len;
	*out = b;
	*len = o;
	return 0;
}

static X509 *der_cert(const uint8_t *p, size_t n)
{
	const unsigned char *q = p;
	X509 *x = n <= INT32_MAX ? d2i_X509(NULL, &q, (long)n) : NULL;
	if (x && (size_t)(q - p) != n) {
		X509_free(x);
		x = NULL;
	}
	ERR_clear_error();
	return x;
}

static bool all_zero(const uint8_t *p, size_t n)
{
	for (size_t i = 0; i < n; i++)
		if (p[i])
			return false;
	return true;
}

int attest_nitro_verify(const struct attest_roots *roots, const uint8_t *doc, size_t len,
			int64_t at, struct attest_claims *out, struct attest_error *e)
{
	struct attest_error local_err;
	if (!e)
		e = &local_err;
	attest_error_clear(e);
	if (!doc || !out)
		return attest_fail(e, ERR_INVALID, ATTEST_CHECK_NONE, NULL, "no document");
	memset(out, 0, sizeof *out);
	struct attest_nitro *n = &out->nitro;
	struct nitro_raw raw;
	int rc = parse(doc, len, n, &raw, e);
	if (rc != 0)
		return rc;
	X509 *leaf = NULL;
	STACK_OF(X509) *bundle = NULL;
	uint8_t *tbs = NULL;
	size_t tbs_len = 0;
	/* 1. The document's signature with its own certificate's P-384 key. */
	leaf = der_cert(raw.cert, raw.cert_len);
	if (!leaf) {
		rc = attest_fail(e, ERR_PARSE, ATTEST_CHECK_FORMAT, "certificate",
				 "Nitro document: certificate is not one DER certificate");
		goto out;
	}
	EVP_PKEY *pk = X509_get0_pubkey(leaf);
	char group[32] = "";
	size_t glen = 0;
	if (!pk || EVP_PKEY_base_id(pk) != EVP_PKEY_EC ||
	    EVP_PKEY_get_utf8_string_param(pk, "group", group, sizeof group, &glen) != 1 ||
	    strcmp(group, "secp384r1") != 0) {
		ERR_clear_error();
		rc = attest_fail(e, ERR_ATTESTATION, ATTEST_CHECK_SIGNATURE, "certificate",
				 "the document's certificate key is not ECDSA P-384");
		goto out;
	}
	if ((rc = sig_structure(&raw, &tbs, &tbs_len)) != 0) {
		rc = attest_fail(e, rc, ATTEST_CHECK_NONE, NULL, "out of memory");
		goto out;
	}
	if ((rc = attest_ecdsa_verify(pk, EVP_sha384(), tbs, tbs_len, raw.sig, raw.sig + 48, 48,
				      "Nitro document signature (COSE_Sign1 ES384)", e)) != 0)
		goto out;
	/* 2. certificate <- cabundle[n-1] <- ... <- cabundle[0] = the AWS Nitro root. */
	bundle = sk_X509_new_null();
	if (!bundle) {
		rc = attest_fail(e, ERR_NOMEM, ATTEST_CHECK_NONE, NULL, "out of memory");
		goto out;
	}
	for (size_t i = 0; i < raw.n_ca; i++) {
		X509 *x = der_cert(raw.ca[i], raw.ca_len[i]);
		if (!x || !sk_X509_push(bundle, x)) {
			X509_free(x);
			rc = attest_fail(e, ERR_PARSE, ATTEST_CHECK_FORMAT, "cabundle",
					 "Nitro document: cabundle entry %zu is not one DER "
					 "certificate",
					 i);
			goto out;
		}
	}
	if ((rc = attest_chain_verify(leaf, bundle, attest_roots_get(roots, ATTEST_ROOT_AWS_NITRO),
				      NULL, at, "Nitro document certificate", NULL, e)) != 0)
		goto out;
	if (X509_cmp(sk_X509_value(bundle, 0), attest_roots_get(roots, ATTEST_ROOT_AWS_NITRO)) != 0) {
		rc = attest_fail(e, ERR_ATTESTATION, ATTEST_CHECK_CHAIN, "cabundle",
				 "cabundle[0] is not the AWS Nitro root");
		goto out;
	}
	/* 3. Time: a document from after the verification time is refused. */
	int64_t ts = (int64_t)(n->timestamp_ms / 1000);
	if (ts > at + NITRO_CLOCK_SKEW) {
		rc = attest_fail(e, ERR_ATTESTATION, ATTEST_CHECK_FRESHNESS, "timestamp",
				 "the document's timestamp is %lld s after the verification time",
				 (long long)(ts - at));
		goto out;
	}
	out->platform = IDENT_PLATFORM_NITRO;
	memcpy(out->measurement, n->pcr[0], ATTEST_NITRO_PCR_LEN);
	out->measurement_len = ATTEST_NITRO_PCR_LEN;
	if (n->has_user_data && n->user_data_len == ATTEST_REPORT_DATA_LEN) {
		out->has_report_data = true;
		memcpy(out->report_data, n->user_data, ATTEST_REPORT_DATA_LEN);
	}
	/* A debug-mode enclave reports all-zero PCR0-2 (AWS, "Nitro Enclaves concepts:
	 * debug mode"). */
	out->debug = all_zero(n->pcr[0], ATTEST_NITRO_PCR_LEN) &&
		     all_zero(n->pcr[1], ATTEST_NITRO_PCR_LEN) &&
		     all_zero(n->pcr[2], ATTEST_NITRO_PCR_LEN);
	out->has_time = true;
	out->time = ts;
	unsigned int dn = 0;
	EVP_Digest(doc, len, out->evidence_sha256, &dn, EVP_sha256(), NULL);
	rc = 0;
out:
	if (rc != 0)
		memset(out, 0, sizeof *out);
	free(tbs);
	X509_free(leaf);
	sk_X509_pop_free(bundle, X509_free);
	return rc;
}
