/* attest tdx: the Intel TDX verifier (DCAP ECDSA quotes, version 4 and 5; Intel "TDX
 * DCAP Quoting Library API", appendix A.3 to A.4). A quote is a header and a TD report
 * body signed with an attestation key (ECDSA P-256); the attestation key is vouched for
 * by the quoting enclave, whose own SGX report carries SHA-256(attestation key || QE
 * authentication data) in its report_data and is signed by the platform's PCK key; the
 * PCK certificate chains to the Intel SGX Root CA. Trust is therefore established in
 * that order: PCK chain, QE report signature, QE report binding, quote signature. With
 * collateral (TCB info and QE identity, each signed by the Intel TCB signing key, and
 * CRLs), the platform's TCB is placed on a TCB level of Intel's TCB info for its FMSPC,
 * which yields the status a policy decides on (UpToDate, OutOfDate, ...; Intel PCS API
 * "TCB info V3" and Intel's quote verification library, TcbLevelCheck and
 * TdxModuleCheck). Collateral that is stale at the verification time is rejected, not
 * ignored. */
#include <ctype.h>
#include <openssl/asn1.h>
#include <openssl/err.h>
#include <openssl/evp.h>
#include <openssl/objects.h>
#include <openssl/pem.h>
#include <openssl/x509.h>
#include <openssl/x509v3.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "attest_int.h"
#include "err/err.h"

#define TDX_HEADER_LEN 48
#define TD10_BODY_LEN 584
#define TD15_BODY_LEN 648
#define QE_REPORT_LEN 384
#define TDX_PCK_MAX_CERTS 4

static const uint8_t intel_qe_vendor[16] = {0x93, 0x9a, 0x72, 0x33, 0xf7, 0x9c, 0x4c, 0xa9,
					    0x94, 0x0a, 0x0d, 0xb3, 0x95, 0x7f, 0x06, 0x07};

/* Where the parts of a quote are, for the verifier. */
struct tdx_raw {
	size_t signed_len; /* header + body (v5: + body descriptor) */
	const uint8_t *sig, *att_key, *qe_report, *qe_sig, *auth, *pck_pem;
	size_t auth_len, pck_len;
};

struct attest_tdx_collateral {
	char *tcb_info;
	size_t tcb_info_len;
	uint8_t tcb_info_sig[64];
	char *qe_identity;
	size_t qe_identity_len;
	uint8_t qe_identity_sig[64];
	STACK_OF(X509) *certs;
	STACK_OF(X509_CRL) *crls;
};

static uint16_t le16(const uint8_t *p)
{
	return (uint16_t)(p[0] | p[1] << 8);
}

static uint32_t le32(const uint8_t *p)
{
	return (uint32_t)p[0] | (uint32_t)p[1] << 8 | (uint32_t)p[2] << 16 | (uint32_t)p[3] << 24;
}

static int bad(struct attest_error *e, const char *field, const char *what)
{
	return attest_fail(e, ERR_PARSE, ATTEST_CHECK_FORMAT, field, "TDX quote: %s", what);
}

static void parse_body(const uint8_t *b, bool td15, struct attest_tdx *t)
{
	memcpy(t->tee_tcb_svn, b, 16);
	memcpy(t->mrseam, b + 16, 48);
	memcpy(t->mrsignerseam, b + 64, 48);
	memcpy(t->seam_attributes, b + 112, 8);
	memcpy(t->td_attributes, b + 120, 8);
	memcpy(t->xfam, b + 128, 8);
	memcpy(t->mrtd, b + 136, 48);
	memcpy(t->mrconfigid, b + 184, 48);
	memcpy(t->mrowner, b + 232, 48);
	memcpy(t->mrownerconfig, b + 280, 48);
	for (int i = 0; i < 4; i++)
		memcpy(t->rtmr[i], b + 328 + 48 * i, 48);
	memcpy(t->report_data, b + 520, 64);
	if (td15) {
		t->has_td15 = true;
		memcpy(t->tee_tcb_svn2, b + 584, 16);
		memcpy(t->mrservicetd, b + 600, 48);
	}
}

static void parse_qe_report(const uint8_t *q, struct attest_tdx *t)
{
	memcpy(t->qe_cpu_svn, q, 16);
	t->qe_miscselect = le32(q + 16);
	memcpy(t->qe_attributes, q + 48, 16);
	memcpy(t->qe_mrenclave, q + 64, 32);
	memcpy(t->qe_mrsigner, q + 128, 32);
	t->qe_isv_prod_id = le16(q + 256);
	t->qe_isv_svn = le16(q + 258);
}

static int parse(const uint8_t *q, size_t len, struct attest_tdx *t, struct tdx_raw *raw,
		 struct attest_error *e)
{
	memset(t, 0, sizeof *t);
	memset(raw, 0, sizeof *raw);
	if (len < TDX_HEADER_LEN || len > ATTEST_EVIDENCE_MAX)
		return bad(e, "length", "shorter than its header or larger than 64 KiB");
	t->version = le16(q);
	t->att_key_type = le16(q + 2);
	t->tee_type = le32(q + 4);
	memcpy(t->header_reserved, q + 8, 4);
	memcpy(t->qe_vendor_id, q + 12, 16);
	memcpy(t->user_data, q + 28, 20);
	if (t->version != 4 && t->version != 5)
		return attest_fail(e, ERR_PARSE, ATTEST_CHECK_FORMAT, "version",
				   "TDX quote version %u is not supported (4 and 5 are)", t->version);
	if (t->att_key_type != 2)
		return bad(e, "att_key_type", "the attestation key is not ECDSA P-256 (type 2)");
	if (t->tee_type != 0x81)
		return bad(e, "tee_type", "not a TDX quote (TEE type 0x81)");
	if (memcmp(t->qe_vendor_id, intel_qe_vendor, 16) != 0)
		return bad(e, "qe_vendor_id", "the quoting enclave is not Intel's");
	size_t off = TDX_HEADER_LEN, body_len = TD10_BODY_LEN;
	t->body_type = 2;
	if (t->version == 5) {
		if (len < off + 6)
			return bad(e, "body", "truncated body descriptor");
		t->body_type = le16(q + off);
		uint32_t size = le32(q + off + 2);
		off += 6;
		if (t->body_type == 2 && size == TD10_BODY_LEN)
			body_len = TD10_BODY_LEN;
		else if (t->body_type == 3 && size == TD15_BODY_LEN)
			body_len = TD15_BODY_LEN;
		else
			return attest_fail(e, ERR_PARSE, ATTEST_CHECK_FORMAT, "body_type",
					   "TDX quote: body type %u of %u bytes is not a TD report "
					   "1.0 (2, 584) or 1.5 (3, 648)",
					   t->body_type, size);
	}
	if (len - off < body_len + 4)
		return bad(e, "body", "truncated TD report body");
	parse_body(q + off, t->body_type == 3, t);
	off += body_len;
	raw->signed_len = off;
	uint32_t sig_len = le32(q + off);
	off += 4;
	if (sig_len > len - off)
		return bad(e, "signature_data", "signature data longer than the quote");
	/* Quotes come in fixed-size buffers: only zero padding may follow. */
	for (size_t i = off + sig_len; i < len; i++)
		if (q[i])
			return bad(e, "length", "non-zero bytes after the signature data");
	const uint8_t *s = q + off, *end = q + off + sig_len;
	if (sig_len < 64 + 64 + 6)
		return bad(e, "signature_data", "signature data too short");
	raw->sig = s;
	raw->att_key = s + 64;
	s += 128;
	uint16_t ctype = le16(s);
	uint32_t csize = le32(s + 2);
	s += 6;
	if (ctype != 6)
		return attest_fail(e, ERR_PARSE, ATTEST_CHECK_FORMAT, "certification_data",
				   "TDX quote: certification data type %u is not QE report "
				   "certification data (6)",
				   ctype);
	if (csize != (size_t)(end - s))
		return bad(e, "certification_data", "certification data size does not match");
	if (csize < QE_REPORT_LEN + 64 + 2)
		return bad(e, "certification_data", "QE report certification data too short");
	raw->qe_report = s;
	raw->qe_sig = s + QE_REPORT_LEN;
	s += QE_REPORT_LEN + 64;
	raw->auth_len = le16(s);
	s += 2;
	if (raw->auth_len > (size_t)(end - s) || (size_t)(end - s) - raw->auth_len < 6)
		return bad(e, "qe_auth_data", "QE authentication data overruns the quote");
	raw->auth = s;
	s += raw->auth_len;
	uint16_t itype = le16(s);
	uint32_t isize = le32(s + 2);
	s += 6;
	if (itype != 5)
		return attest_fail(e, ERR_PARSE, ATTEST_CHECK_FORMAT, "certification_data",
				   "TDX quote: inner certification data type %u is not a PCK "
				   "certificate chain (5)",
				   itype);
	if (isize != (size_t)(end - s) || isize == 0)
		return bad(e, "certification_data", "PCK chain size does not match");
	raw->pck_pem = s;
	raw->pck_len = isize;
	parse_qe_report(raw->qe_report, t);
	return 0;
}

int attest_tdx_parse(const uint8_t *quote, size_t len, struct attest_tdx *out,
		     struct attest_error *err)
{
	struct attest_error local_err;
	if (!err)
		err = &local_err;
	attest_error_clear(err);
	if (!quote || !out)
		return attest_fail(err, ERR_INVALID, ATTEST_CHECK_NONE, NULL, "no quote");
	struct tdx_raw raw;
	return parse(quote, len, out, &raw, err);
}

/* --- The PCK certificate's SGX extension (Intel "SGX PCK Certificate and CRL
 * Profile", section 1.3.5) --- */

#define SGX_OID "1.2.840.113741.1.13.1"

static int oid_text(const ASN1_TYPE *t, char *buf, size_t cap)
{
	if (!t || t->type != V_ASN1_OBJECT)
		return ERR_PARSE;
	int n = OBJ_obj2txt(buf, (int)cap, t->value.object, 1);
	return n > 0 && (size_t)n < cap ? 0 : ERR_PARSE;
}

/* The elements of a DER SEQUENCE held by an ASN1_TYPE (or by raw bytes). */
static STACK_OF(ASN1_TYPE) *seq_of(const uint8_t *der, long len)
{
	const unsigned char *p = der;
	STACK_OF(ASN1_TYPE) *sk = d2i_ASN1_SEQUENCE_ANY(NULL, &p, len);
	if (sk && p != der + len) {
		sk_ASN1_TYPE_pop_free(sk, ASN1_TYPE_free);
		sk = NULL;
	}
	return sk;
}

static STACK_OF(ASN1_TYPE) *seq_in(const ASN1_TYPE *t)
{
	if (!t || t->type != V_ASN1_SEQUENCE)
		return NULL;
	return seq_of(ASN1_STRING_get0_data(t->value.sequence),
		      ASN1_STRING_length(t->value.sequence));
}

static int int_val(const ASN1_TYPE *t, int64_t lo, int64_t hi, int64_t *out)
{
	int64_t v;
	if (!t || t->type != V_ASN1_INTEGER || ASN1_INTEGER_get_int64(&v, t->value.integer) != 1 ||
	    v < lo || v > hi)
		return ERR_PARSE;
	*out = v;
	return 0;
}

static int octets(const ASN1_TYPE *t, uint8_t *out, int n)
{
	if (!t || t->type != V_ASN1_OCTET_STRING || ASN1_STRING_length(t->value.octet_string) != n)
		return ERR_PARSE;
	memcpy(out, ASN1_STRING_get0_data(t->value.octet_string), (size_t)n);
	return 0;
}

static int parse_sgx_tcb(const ASN1_TYPE *v, struct attest_tdx *t)
{
	STACK_OF(ASN1_TYPE) *tcb = seq_in(v);
	int rc = tcb ? 0 : ERR_PARSE;
	unsigned seen = 0;
	for (int i = 0; rc == 0 && i < sk_ASN1_TYPE_num(tcb); i++) {
		STACK_OF(ASN1_TYPE) *kv = seq_in(sk_ASN1_TYPE_value(tcb, i));
		char oid[64];
		int comp = 0;
		if (!kv || sk_ASN1_TYPE_num(kv) != 2 ||
		    oid_text(sk_ASN1_TYPE_value(kv, 0), oid, sizeof oid) != 0 ||
		    strncmp(oid, SGX_OID ".2.", sizeof SGX_OID + 2) != 0 ||
		    sscanf(oid + sizeof SGX_OID + 2, "%d", &comp) != 1 || comp < 1 || comp > 18) {
			rc = ERR_PARSE;
		} else {
			int64_t val;
			const ASN1_TYPE *x = sk_ASN1_TYPE_value(kv, 1);
			if (comp <= 16) {
				rc = int_val(x, 0, 255, &val);
				if (rc == 0)
					t->pck_cpu_svn[comp - 1] = (uint8_t)val;
			} else if (comp == 17) {
				rc = int_val(x, 0, 65535, &val);
				if (rc == 0)
					t->pck_pce_svn = (uint16_t)val;
			} else {
				uint8_t cpusvn[16];
				rc = octets(x, cpusvn, 16); /* the raw CPUSVN; components suffice */
			}
			if (rc == 0 && (seen & (1u << comp)))
				rc = ERR_PARSE;
			seen |= 1u << comp;
		}
		sk_ASN1_TYPE_pop_free(kv, ASN1_TYPE_free);
	}
	if (rc == 0 && (seen & 0x3fffeu) != 0x3fffeu) /* components 1..17 */
		rc = ERR_PARSE;
	sk_ASN1_TYPE_pop_free(tcb, ASN1_TYPE_free);
	return rc;
}

static int parse_pck_ext(X509 *pck, struct attest_tdx *t)
{
	ASN1_OBJECT *o = OBJ_txt2obj(SGX_OID, 1);
	int idx = o ? X509_get_ext_by_OBJ(pck, o, -1) : -1;
	int again = idx >= 0 ? X509_get_ext_by_OBJ(pck, o, idx) : -1;
	ASN1_OBJECT_free(o);
	if (idx < 0 || again >= 0)
		return ERR_PARSE;
	const ASN1_OCTET_STRING *v = X509_EXTENSION_get_data(X509_get_ext(pck, idx));
	STACK_OF(ASN1_TYPE) *top = seq_of(ASN1_STRING_get0_data(v), ASN1_STRING_length(v));
	int rc = top ? 0 : ERR_PARSE;
	unsigned seen = 0;
	for (int i = 0; rc == 0 && i < sk_ASN1_TYPE_num(top); i++) {
		STACK_OF(ASN1_TYPE) *kv = seq_in(sk_ASN1_TYPE_value(top, i));
		char oid[64];
		if (!kv || sk_ASN1_TYPE_num(kv) != 2 ||
		    oid_text(sk_ASN1_TYPE_value(kv, 0), oid, sizeof oid) != 0) {
			rc = ERR_PARSE;
		} else {
			const ASN1_TYPE *x = sk_ASN1_TYPE_value(kv, 1);
			if (strcmp(oid, SGX_OID ".2") == 0) {
				rc = parse_sgx_tcb(x, t);
				seen |= 1;
			} else if (strcmp(oid, SGX_OID ".3") == 0) {
				rc = octets(x, t->pce_id, 2);
				seen |= 2;
			} else if (strcmp(oid, SGX_OID ".4") == 0) {
				rc = octets(x, t->fmspc, 6);
				seen |= 4;
			}
			/* PPID, SGX type, platform instance and configuration: not used. */
		}
		sk_ASN1_TYPE_pop_free(kv, ASN1_TYPE_free);
	}
	sk_ASN1_TYPE_pop_free(top, ASN1_TYPE_free);
	ERR_clear_error();
	return rc == 0 && seen == 7 ? 0 : ERR_PARSE;
}

/* --- Collateral --- */

int attest_tdx_collateral_new(struct attest_tdx_collateral **out)
{
	if (!out)
		return ERR_INVALID;
	struct attest_tdx_collateral *c = calloc(1, sizeof *c);
	if (!c)
		return ERR_NOMEM;
	c->certs = sk_X509_new_null();
	c->crls = sk_X509_CRL_new_null();
	if (!c->certs || !c->crls) {
		attest_tdx_collateral_free(c);
		return ERR_NOMEM;
	}
	*out = c;
	return 0;
}

void attest_tdx_collateral_free(struct attest_tdx_collateral *c)
{
	if (!c)
		return;
	free(c->tcb_info);
	free(c->qe_identity);
	sk_X509_pop_free(c->certs, X509_free);
	sk_X509_CRL_pop_free(c->crls, X509_CRL_free);
	free(c);
}

/* The end of the JSON value starting at p (a valid document: jansson checked it). */
static const char *value_end(const char *p, const char *end)
{
	if (p >= end)
		return NULL;
	if (*p == '"') {
		for (p++; p < end; p++) {
			if (*p == '\\')
				p++;
			else if (*p == '"')
				return p + 1;
		}
		return NULL;
	}
	if (*p == '{' || *p == '[') {
		int depth = 0;
		for (; p < end; p++) {
			if (*p == '"') {
				const char *q = value_end(p, end);
				if (!q)
					return NULL;
				p = q - 1;
			} else if (*p == '{' || *p == '[') {
				depth++;
			} else if (*p == '}' || *p == ']') {
				if (--depth == 0)
					return p + 1;
			}
		}
		return NULL;
	}
	while (p < end && *p != ',' && *p != '}' && *p != ']' && !isspace((unsigned char)*p))
		p++;
	return p;
}

static const char *skip_ws(const char *p, const char *end)
{
	while (p < end && isspace((unsigned char)*p))
		p++;
	return p;
}

/* The exact bytes of the top-level member key (Intel signs these bytes, so they must
 * be taken as sent, not re-serialized). */
static int raw_member(const char *doc, size_t len, const char *key, const char **v, size_t *vlen)
{
	const char *p = skip_ws(doc, doc + len), *end = doc + len;
	size_t klen = strlen(key);
	if (p >= end || *p != '{')
		return ERR_PARSE;
	p++;
	for (;;) {
		p = skip_ws(p, end);
		if (p >= end || *p != '"')
			return ERR_PARSE;
		const char *ke = value_end(p, end);
		if (!ke)
			return ERR_PARSE;
		bool match = (size_t)(ke - p) == klen + 2 && memcmp(p + 1, key, klen) == 0;
		p = skip_ws(ke, end);
		if (p >= end || *p != ':')
			return ERR_PARSE;
		p = skip_ws(p + 1, end);
		const char *ve = value_end(p, end);
		if (!ve)
			return ERR_PARSE;
		if (match) {
			*v = p;
			*vlen = (size_t)(ve - p);
			return 0;
		}
		p = skip_ws(ve, end);
		if (p < end && *p == ',') {
			p++;
			continue;
		}
		return ERR_PARSE;
	}
}

static int hex_bytes(const char *s, uint8_t *out, size_t n)
{
	if (!s || strlen(s) != 2 * n)
		return ERR_PARSE;
	for (size_t i = 0; i < n; i++) {
		int hi = isxdigit((unsigned char)s[2 * i]), lo = isxdigit((unsigned char)s[2 * i + 1]);
		unsigned v;
		if (!hi || !lo || sscanf(s + 2 * i, "%2x", &v) != 1)
			return ERR_PARSE;
		out[i] = (uint8_t)v;
	}
	return 0;
}

static int set_signed(char **dst, size_t *dst_len, uint8_t sig[64], const char *body,
		      size_t blen, const char *sig_hex)
{
	if (*dst)
		return ERR_CONFLICT;
	if (hex_bytes(sig_hex, sig, 64) != 0)
		return ERR_PARSE;
	char *copy = malloc(blen + 1);
	if (!copy)
		return ERR_NOMEM;
	memcpy(copy, body, blen);
	copy[blen] = '\0';
	*dst = copy;
	*dst_len = blen;
	return 0;
}

static int add_crl_der(struct attest_tdx_collateral *c, const uint8_t *p, size_t n)
{
	const unsigned char *q = p;
	X509_CRL *crl = n <= INT32_MAX ? d2i_X509_CRL(NULL, &q, (long)n) : NULL;
	ERR_clear_error();
	if (!crl || (size_t)(q - p) != n || sk_X509_CRL_num(c->crls) >= 8 ||
	    !sk_X509_CRL_push(c->crls, crl)) {
		X509_CRL_free(crl);
		return ERR_PARSE;
	}
	return 0;
}

/* A PCS response body: {"tcbInfo": {...}, "signature": "<hex>"} or the same with
 * "enclaveIdentity". */
static int add_pcs_body(struct attest_tdx_collateral *c, json_t *root, const char *doc,
			size_t len, struct attest_error *e)
{
	const char *sig = json_string_value(json_object_get(root, "signature"));
	bool tcb = json_object_get(root, "tcbInfo") != NULL;
	const char *key = tcb ? "tcbInfo" : "enclaveIdentity";
	const char *v;
	size_t vlen;
	if (json_object_size(root) != 2 || !sig || raw_member(doc, len, key, &v, &vlen) != 0)
		return attest_fail(e, ERR_PARSE, ATTEST_CHECK_COLLATERAL, key,
				   "collateral: %s must be {\"%s\": {...}, \"signature\": \"<hex>\"}",
				   key, key);
	int rc = tcb ? set_signed(&c->tcb_info, &c->tcb_info_len, c->tcb_info_sig, v, vlen, sig)
		     : set_signed(&c->qe_identity, &c->qe_identity_len, c->qe_identity_sig, v,
				  vlen, sig);
	if (rc != 0)
		return attest_fail(e, rc, ATTEST_CHECK_COLLATERAL, key,
				   rc == ERR_CONFLICT ? "collateral: a second %s"
						      : "collateral: %s signature is not 64 bytes of hex",
				   key);
	return 0;
}

/* The dcap-qvl collateral.json layout. */
static int add_bundle(struct attest_tdx_collateral *c, json_t *root, struct attest_error *e)
{
	const char *ti = NULL, *tis = NULL, *qi = NULL, *qis = NULL;
	const char *chains[3] = {NULL, NULL, NULL};
	struct jspec_bytes root_crl = {0}, pck_crl = {0};
	const struct jspec_field spec[] = {
		JSPEC_STR("tcb_info", true, 2, 65536, &ti),
		JSPEC_STR("tcb_info_signature", true, 128, 128, &tis),
		JSPEC_STR("qe_identity", false, 2, 65536, &qi),
		JSPEC_STR("qe_identity_signature", false, 128, 128, &qis),
		JSPEC_STR("tcb_info_issuer_chain", false, 1, 65536, &chains[0]),
		JSPEC_STR("qe_identity_issuer_chain", false, 1, 65536, &chains[1]),
		JSPEC_STR("pck_crl_issuer_chain", false, 1, 65536, &chains[2]),
		JSPEC_HEXBYTES("root_ca_crl", false, 1, 65536, &root_crl),
		JSPEC_HEXBYTES("pck_crl", false, 1, 65536, &pck_crl),
		JSPEC_END_F,
	};
	struct jspec_error je;
	if (jspec_parse(root, spec, JSPEC_ALLOW_UNKNOWN, &je) != 0)
		return attest_fail(e, ERR_PARSE, ATTEST_CHECK_COLLATERAL, je.field, "collateral: %s",
				   je.detail);
	int rc = set_signed(&c->tcb_info, &c->tcb_info_len, c->tcb_info_sig, ti, strlen(ti), tis);
	if (rc == 0 && qi) {
		rc = qis ? set_signed(&c->qe_identity, &c->qe_identity_len, c->qe_identity_sig, qi,
				      strlen(qi), qis)
			 : ERR_PARSE;
	}
	for (int i = 0; rc == 0 && i < 3; i++)
		if (chains[i])
			rc = attest_certs_load((const uint8_t *)chains[i], strlen(chains[i]),
					       c->certs, 16);
	if (rc == 0 && root_crl.data)
		rc = add_crl_der(c, root_crl.data, root_crl.len);
	if (rc == 0 && pck_crl.data)
		rc = add_crl_der(c, pck_crl.data, pck_crl.len);
	jspec_bytes_free(&root_crl);
	jspec_bytes_free(&pck_crl);
	if (rc != 0)
		return attest_fail(e, rc == ERR_CONFLICT ? ERR_CONFLICT : ERR_PARSE,
				   ATTEST_CHECK_COLLATERAL, NULL,
				   rc == ERR_CONFLICT ? "collateral: a second TCB info or QE identity"
						      : "collateral: a bundle member is malformed");
	return 0;
}

int attest_tdx_collateral_add(struct attest_tdx_collateral *c, const uint8_t *data, size_t len,
			      struct attest_error *e)
{
	struct attest_error local_err;
	if (!e)
		e = &local_err;
	attest_error_clear(e);
	if (!c || !data)
		return attest_fail(e, ERR_INVALID, ATTEST_CHECK_NONE, NULL, "no collateral");
	if (len == 0 || len > 4 * ATTEST_EVIDENCE_MAX)
		return attest_fail(e, ERR_PARSE, ATTEST_CHECK_COLLATERAL, NULL,
				   "collateral: empty or larger than 256 KiB");
	size_t i = 0;
	while (i < len && isspace(data[i]))
		i++;
	if (i < len && data[i] == '{') {
		json_error_t je;
		json_t *root = json_loadb((const char *)data, len, JSON_REJECT_DUPLICATES, &je);
		if (!json_is_object(root)) {
			json_decref(root);
			return attest_fail(e, ERR_PARSE, ATTEST_CHECK_COLLATERAL, NULL,
					   "collateral: not a JSON object (line %d: %s)", je.line,
					   je.text);
		}
		int rc;
		if (json_object_get(root, "tcbInfo") || json_object_get(root, "enclaveIdentity"))
			rc = add_pcs_body(c, root, (const char *)data, len, e);
		else if (json_object_get(root, "tcb_info"))
			rc = add_bundle(c, root, e);
		else
			rc = attest_fail(e, ERR_PARSE, ATTEST_CHECK_COLLATERAL, NULL,
					 "collateral: a JSON file that is neither TCB info, QE "
					 "identity nor a collateral bundle");
		json_decref(root);
		return rc;
	}
	static const char crl_pem[] = "-----BEGIN X509 CRL-----";
	if (len - i >= sizeof crl_pem - 1 && memcmp(data + i, crl_pem, sizeof crl_pem - 1) == 0) {
		BIO *b = BIO_new_mem_buf(data, (int)len);
		X509_CRL *crl = b ? PEM_read_bio_X509_CRL(b, NULL, NULL, NULL) : NULL;
		BIO_free(b);
		ERR_clear_error();
		if (!crl || !sk_X509_CRL_push(c->crls, crl)) {
			X509_CRL_free(crl);
			return attest_fail(e, ERR_PARSE, ATTEST_CHECK_COLLATERAL, NULL,
					   "collateral: malformed PEM CRL");
		}
		return 0;
	}
	if (attest_certs_load(data, len, c->certs, 16) == 0)
		return 0;
	if (add_crl_der(c, data, len) == 0)
		return 0;
	return attest_fail(e, ERR_PARSE, ATTEST_CHECK_COLLATERAL, NULL,
			   "collateral: a file that is neither JSON, certificates nor a CRL");
}

/* --- TCB evaluation --- */

/* Statuses by severity, as Intel's verification library converges them. */
static const char *const statuses[] = {
	"UpToDate",	       "SWHardeningNeeded", "ConfigurationNeeded",
	"ConfigurationAndSWHardeningNeeded", "OutOfDate",	  "OutOfDateConfigurationNeeded",
	"Revoked",	       NULL};

static int status_index(const char *s)
{
	for (int i = 0; s && statuses[i]; i++)
		if (strcmp(s, statuses[i]) == 0)
			return i;
	return -1;
}

/* The platform status after the TDX module's or the QE's (which are only UpToDate,
 * OutOfDate or Revoked). */
static int converge(int platform, int other)
{
	if (other == 6 || platform == 6)
		return 6;
	if (other == 4) {
		if (platform == 2 || platform == 3 || platform == 5)
			return 5;
		return 4;
	}
	return platform;
}

static int json_hex(json_t *o, const char *k, uint8_t *out, size_t n)
{
	return hex_bytes(json_string_value(json_object_get(o, k)), out, n);
}

static int json_u(json_t *o, const char *k, int64_t max, int64_t *out)
{
	json_t *v = json_object_get(o, k);
	if (!json_is_integer(v) || json_integer_value(v) < 0 || json_integer_value(v) > max)
		return ERR_PARSE;
	*out = json_integer_value(v);
	return 0;
}

/* The 16 svn values of a components array. */
static int components(json_t *arr, uint8_t out[16])
{
	if (!json_is_array(arr) || json_array_size(arr) != 16)
		return ERR_PARSE;
	for (size_t i = 0; i < 16; i++) {
		int64_t v;
		if (json_u(json_array_get(arr, i), "svn", 255, &v) != 0)
			return ERR_PARSE;
		out[i] = (uint8_t)v;
	}
	return 0;
}

/* Verifies one signed collateral body: the TCB signing certificate from the collateral
 * chains to the Intel root at time at, and its key signed the exact bytes. */
static int verify_signed(const struct attest_tdx_collateral *c, const struct attest_roots *roots,
			 const char *body, size_t len, const uint8_t sig[64], int64_t at,
			 const char *what, struct attest_error *e)
{
	X509 *signer = NULL;
	for (int i = 0; !signer && i < sk_X509_num(c->certs); i++) {
		X509 *x = sk_X509_value(c->certs, i);
		char cn[64] = "";
		X509_NAME_get_text_by_NID(X509_get_subject_name(x), NID_commonName, cn, sizeof cn);
		if (strcmp(cn, "Intel SGX TCB Signing") == 0)
			signer = x;
	}
	ERR_clear_error();
	if (!signer)
		return attest_fail(e, ERR_ATTESTATION, ATTEST_CHECK_COLLATERAL, what,
				   "%s: no Intel SGX TCB Signing certificate in the collateral",
				   what);
	char label[64];
	snprintf(label, sizeof label, "%s signing certificate", what);
	int rc = attest_chain_verify(signer, c->certs, attest_roots_get(roots, ATTEST_ROOT_INTEL_SGX),
				     sk_X509_CRL_num(c->crls) ? c->crls : NULL, at, label, NULL,
				     e);
	if (rc != 0) {
		e->check = e->check == ATTEST_CHECK_CHAIN ? ATTEST_CHECK_COLLATERAL : e->check;
		return rc;
	}
	snprintf(label, sizeof label, "%s signature", what);
	rc = attest_ecdsa_verify(X509_get0_pubkey(signer), EVP_sha256(), (const uint8_t *)body, len,
				 sig, sig + 32, 32, label, e);
	if (rc != 0)
		e->check = ATTEST_CHECK_COLLATERAL;
	return rc;
}

static int check_window(json_t *o, int64_t at, const char *what, struct attest_error *e)
{
	int64_t issue, next;
	if (attest_parse_rfc3339(json_string_value(json_object_get(o, "issueDate")), &issue) != 0 ||
	    attest_parse_rfc3339(json_string_value(json_object_get(o, "nextUpdate")), &next) != 0)
		return attest_fail(e, ERR_ATTESTATION, ATTEST_CHECK_COLLATERAL, what,
				   "%s: issueDate or nextUpdate is malformed", what);
	if (at < issue)
		return attest_fail(e, ERR_ATTESTATION, ATTEST_CHECK_FRESHNESS, what,
				   "%s was issued after the verification time", what);
	if (at > next)
		return attest_fail(e, ERR_ATTESTATION, ATTEST_CHECK_FRESHNESS, what,
				   "%s expired (nextUpdate passed) before the verification time",
				   what);
	return 0;
}

static int tdx_module_status(json_t *info, struct attest_tdx *t, int *status,
			     struct attest_error *e)
{
	/* The module's signer and attributes: from tdxModule, or for a module of major
	 * version > 0 from its entry in tdxModuleIdentities (with its own TCB levels). */
	uint8_t major = t->tee_tcb_svn[1], minor_svn = t->tee_tcb_svn[0];
	json_t *ids = json_object_get(info, "tdxModuleIdentities");
	json_t *mod = json_object_get(info, "tdxModule");
	*status = 0;
	json_t *ident = NULL;
	if (major > 0 && json_is_array(ids)) {
		char want[16];
		snprintf(want, sizeof want, "TDX_%02X", major);
		for (size_t i = 0; i < json_array_size(ids); i++) {
			const char *id = json_string_value(json_object_get(json_array_get(ids, i), "id"));
			if (id && strcasecmp(id, want) == 0)
				ident = json_array_get(ids, i);
		}
		if (!ident)
			return attest_fail(e, ERR_ATTESTATION, ATTEST_CHECK_TCB, "tee_tcb_svn",
					   "no TDX module identity %s in the TCB info", want);
		json_t *levels = json_object_get(ident, "tcbLevels");
		int found = -1;
		for (size_t i = 0; found < 0 && i < json_array_size(levels); i++) {
			json_t *lv = json_array_get(levels, i);
			int64_t isvsvn;
			if (json_u(json_object_get(lv, "tcb"), "isvsvn", 255, &isvsvn) != 0)
				return attest_fail(e, ERR_ATTESTATION, ATTEST_CHECK_COLLATERAL,
						   "tcbInfo", "a TDX module TCB level is malformed");
			if (minor_svn >= isvsvn)
				found = status_index(
					json_string_value(json_object_get(lv, "tcbStatus")));
		}
		if (found < 0)
			return attest_fail(e, ERR_ATTESTATION, ATTEST_CHECK_TCB, "tee_tcb_svn",
					   "the TDX module SVN %u matches no TCB level of %s",
					   minor_svn, want);
		*status = found;
		mod = ident;
	}
	uint8_t mrsigner[48], attrs[8], mask[8];
	if (!json_is_object(mod) || json_hex(mod, "mrsigner", mrsigner, 48) != 0 ||
	    json_hex(mod, "attributes", attrs, 8) != 0 ||
	    json_hex(mod, "attributesMask", mask, 8) != 0)
		return attest_fail(e, ERR_ATTESTATION, ATTEST_CHECK_COLLATERAL, "tcbInfo",
				   "the TCB info's TDX module entry is malformed");
	if (memcmp(mrsigner, t->mrsignerseam, 48) != 0)
		return attest_fail(e, ERR_ATTESTATION, ATTEST_CHECK_TCB, "mrsignerseam",
				   "MRSIGNERSEAM is not the TDX module signer of the TCB info");
	for (int i = 0; i < 8; i++)
		if ((t->seam_attributes[i] & mask[i]) != attrs[i])
			return attest_fail(e, ERR_ATTESTATION, ATTEST_CHECK_TCB, "seam_attributes",
					   "SEAMATTRIBUTES do not match the TCB info");
	return 0;
}

static int check_tcb_info(const struct attest_tdx_collateral *c, const struct attest_roots *roots,
			  struct attest_tdx *t, int64_t at, struct attest_error *e)
{
	int rc = verify_signed(c, roots, c->tcb_info, c->tcb_info_len, c->tcb_info_sig, at,
			       "TCB info", e);
	if (rc != 0)
		return rc;
	json_error_t je;
	json_t *info = json_loadb(c->tcb_info, c->tcb_info_len, JSON_REJECT_DUPLICATES, &je);
	rc = ERR_ATTESTATION;
	uint8_t fmspc[6], pce_id[2];
	int64_t version;
	const char *id = json_string_value(json_object_get(info, "id"));
	if (!json_is_object(info) || !id || strcmp(id, "TDX") != 0 ||
	    json_u(info, "version", 100, &version) != 0 || version != 3) {
		attest_fail(e, rc, ATTEST_CHECK_COLLATERAL, "tcbInfo",
			    "TCB info is not TDX TCB info version 3");
		goto out;
	}
	if ((rc = check_window(info, at, "TCB info", e)) != 0)
		goto out;
	rc = ERR_ATTESTATION;
	if (json_hex(info, "fmspc", fmspc, 6) != 0 || json_hex(info, "pceId", pce_id, 2) != 0) {
		attest_fail(e, rc, ATTEST_CHECK_COLLATERAL, "tcbInfo", "TCB info fmspc or pceId malformed");
		goto out;
	}
	if (memcmp(fmspc, t->fmspc, 6) != 0 || memcmp(pce_id, t->pce_id, 2) != 0) {
		attest_fail(e, rc, ATTEST_CHECK_COLLATERAL, "fmspc",
			    "the TCB info is for another platform (FMSPC or PCE-ID differs from the "
			    "PCK certificate's)");
		goto out;
	}
	int module_status;
	if ((rc = tdx_module_status(info, t, &module_status, e)) != 0)
		goto out;
	rc = ERR_ATTESTATION;
	/* The first level (they are ordered newest first) the platform's SGX TCB (PCK
	 * certificate) and TDX TCB (TEE_TCB_SVN) both reach. With a module of major
	 * version > 0 its first two SVN bytes are judged by the module identity above. */
	json_t *levels = json_object_get(info, "tcbLevels");
	size_t start = t->tee_tcb_svn[1] > 0 && json_object_get(info, "tdxModuleIdentities") ? 2 : 0;
	int found = -1;
	for (size_t i = 0; found < 0 && i < json_array_size(levels); i++) {
		json_t *lv = json_array_get(levels, i), *tcb = json_object_get(lv, "tcb");
		uint8_t sgx[16], tdx[16];
		int64_t pcesvn;
		if (components(json_object_get(tcb, "sgxtcbcomponents"), sgx) != 0 ||
		    components(json_object_get(tcb, "tdxtcbcomponents"), tdx) != 0 ||
		    json_u(tcb, "pcesvn", 65535, &pcesvn) != 0 ||
		    status_index(json_string_value(json_object_get(lv, "tcbStatus"))) < 0) {
			attest_fail(e, rc, ATTEST_CHECK_COLLATERAL, "tcbInfo",
				    "TCB info level %zu is malformed", i);
			goto out;
		}
		bool ok = t->pck_pce_svn >= pcesvn;
		for (int k = 0; ok && k < 16; k++)
			ok = t->pck_cpu_svn[k] >= sgx[k];
		for (size_t k = start; ok && k < 16; k++)
			ok = t->tee_tcb_svn[k] >= tdx[k];
		if (ok) {
			found = status_index(json_string_value(json_object_get(lv, "tcbStatus")));
			if (attest_parse_rfc3339(json_string_value(json_object_get(lv, "tcbDate")),
						 &t->tcb_date) != 0)
				t->tcb_date = 0;
		}
	}
	if (found < 0) {
		attest_fail(e, rc, ATTEST_CHECK_TCB, "tee_tcb_svn",
			    "the platform's TCB is below every TCB level of the TCB info");
		goto out;
	}
	int st = converge(found, module_status);
	snprintf(t->tcb_status, sizeof t->tcb_status, "%s", statuses[st]);
	t->tcb_info_checked = true;
	rc = 0;
out:
	json_decref(info);
	return rc;
}

static int check_qe_identity(const struct attest_tdx_collateral *c,
			     const struct attest_roots *roots, struct attest_tdx *t, int64_t at,
			     struct attest_error *e)
{
	int rc = verify_signed(c, roots, c->qe_identity, c->qe_identity_len, c->qe_identity_sig,
			       at, "QE identity", e);
	if (rc != 0)
		return rc;
	json_error_t je;
	json_t *qi = json_loadb(c->qe_identity, c->qe_identity_len, JSON_REJECT_DUPLICATES, &je);
	rc = ERR_ATTESTATION;
	const char *id = json_string_value(json_object_get(qi, "id"));
	uint8_t misc[4], miscmask[4], attrs[16], mask[16], mrsigner[32];
	int64_t prodid, version;
	if (!json_is_object(qi) || !id || strcmp(id, "TD_QE") != 0 ||
	    json_u(qi, "version", 100, &version) != 0 || version != 2 ||
	    json_hex(qi, "miscselect", misc, 4) != 0 ||
	    json_hex(qi, "miscselectMask", miscmask, 4) != 0 ||
	    json_hex(qi, "attributes", attrs, 16) != 0 ||
	    json_hex(qi, "attributesMask", mask, 16) != 0 ||
	    json_hex(qi, "mrsigner", mrsigner, 32) != 0 ||
	    json_u(qi, "isvprodid", 65535, &prodid) != 0) {
		attest_fail(e, rc, ATTEST_CHECK_COLLATERAL, "qeIdentity",
			    "QE identity is not a TD_QE identity version 2");
		goto out;
	}
	if ((rc = check_window(qi, at, "QE identity", e)) != 0)
		goto out;
	rc = ERR_ATTESTATION;
	/* miscselect is a number in the JSON (big-endian hex), little-endian in the
	 * report. */
	uint32_t m = (uint32_t)misc[0] << 24 | (uint32_t)misc[1] << 16 | (uint32_t)misc[2] << 8 | misc[3];
	uint32_t mm = (uint32_t)miscmask[0] << 24 | (uint32_t)miscmask[1] << 16 |
		      (uint32_t)miscmask[2] << 8 | miscmask[3];
	bool ok = (t->qe_miscselect & mm) == m;
	for (int i = 0; ok && i < 16; i++)
		ok = (t->qe_attributes[i] & mask[i]) == attrs[i];
	if (!ok || memcmp(mrsigner, t->qe_mrsigner, 32) != 0 || prodid != t->qe_isv_prod_id) {
		attest_fail(e, rc, ATTEST_CHECK_TCB, "qe_report",
			    "the quoting enclave is not the one Intel's QE identity describes "
			    "(signer, product, attributes or miscselect)");
		goto out;
	}
	json_t *levels = json_object_get(qi, "tcbLevels");
	int found = -1;
	for (size_t i = 0; found < 0 && i < json_array_size(levels); i++) {
		json_t *lv = json_array_get(levels, i);
		int64_t isvsvn;
		if (json_u(json_object_get(lv, "tcb"), "isvsvn", 65535, &isvsvn) != 0) {
			attest_fail(e, rc, ATTEST_CHECK_COLLATERAL, "qeIdentity",
				    "QE identity level %zu is malformed", i);
			goto out;
		}
		if (t->qe_isv_svn >= isvsvn)
			found = status_index(json_string_value(json_object_get(lv, "tcbStatus")));
	}
	if (found < 0) {
		attest_fail(e, rc, ATTEST_CHECK_TCB, "qe_isv_svn",
			    "the QE's ISVSVN %u is below every level of the QE identity",
			    t->qe_isv_svn);
		goto out;
	}
	snprintf(t->qe_tcb_status, sizeof t->qe_tcb_status, "%s", statuses[found]);
	t->qe_identity_checked = true;
	if (t->tcb_info_checked) {
		int st = converge(status_index(t->tcb_status), found);
		snprintf(t->tcb_status, sizeof t->tcb_status, "%s", statuses[st]);
	}
	rc = 0;
out:
	json_decref(qi);
	return rc;
}

/* --- Verification --- */

static bool p256(EVP_PKEY *pk)
{
	char group[32] = "";
	size_t glen = 0;
	bool ok = pk && EVP_PKEY_base_id(pk) == EVP_PKEY_EC &&
		  EVP_PKEY_get_utf8_string_param(pk, "group", group, sizeof group, &glen) == 1 &&
		  strcmp(group, "prime256v1") == 0;
	ERR_clear_error();
	return ok;
}

int attest_tdx_verify(const struct attest_roots *roots, const uint8_t *quote, size_t len,
		      const struct attest_tdx_collateral *coll, int64_t at,
		      struct attest_claims *out, struct attest_error *e)
{
	struct attest_error local_err;
	if (!e)
		e = &local_err;
	attest_error_clear(e);
	if (!quote || !out)
		return attest_fail(e, ERR_INVALID, ATTEST_CHECK_NONE, NULL, "no quote");
	memset(out, 0, sizeof *out);
	struct attest_tdx *t = &out->tdx;
	struct tdx_raw raw;
	int rc = parse(quote, len, t, &raw, e);
	if (rc != 0)
		return rc;
	STACK_OF(X509) *chain = sk_X509_new_null();
	EVP_PKEY *ak = NULL;
	if (!chain) {
		rc = attest_fail(e, ERR_NOMEM, ATTEST_CHECK_NONE, NULL, "out of memory");
		goto out;
	}
	/* 1. PCK leaf -> intermediate -> Intel SGX Root CA (the leaf comes first). */
	if (attest_certs_load(raw.pck_pem, raw.pck_len, chain, TDX_PCK_MAX_CERTS) != 0 ||
	    sk_X509_num(chain) < 2) {
		rc = attest_fail(e, ERR_PARSE, ATTEST_CHECK_FORMAT, "pck_chain",
				 "TDX quote: the PCK certificate chain is not 2 to 4 PEM certificates");
		goto out;
	}
	X509 *pck = sk_X509_value(chain, 0);
	STACK_OF(X509_CRL) *crls = coll && sk_X509_CRL_num(coll->crls) ? coll->crls : NULL;
	int crls_used = 0;
	if ((rc = attest_chain_verify(pck, chain, attest_roots_get(roots, ATTEST_ROOT_INTEL_SGX),
				      crls, at, "PCK", &crls_used, e)) != 0)
		goto out;
	t->crls_checked = crls_used > 0;
	/* The quote carries the root too: it must be ours, byte for byte, or a change to it
	 * would go unnoticed (the store's anchor is what the chain used). */
	X509 *qroot = sk_X509_value(chain, sk_X509_num(chain) - 1);
	if (sk_X509_num(chain) != 3 ||
	    X509_cmp(qroot, attest_roots_get(roots, ATTEST_ROOT_INTEL_SGX)) != 0) {
		rc = attest_fail(e, ERR_ATTESTATION, ATTEST_CHECK_CHAIN, "pck_chain",
				 "the quote's PCK chain is not leaf, intermediate and the Intel SGX "
				 "Root CA");
		goto out;
	}
	/* 2. The QE report is signed by the PCK key. */
	EVP_PKEY *pck_key = X509_get0_pubkey(pck);
	if (!p256(pck_key)) {
		rc = attest_fail(e, ERR_ATTESTATION, ATTEST_CHECK_SIGNATURE, "pck_chain",
				 "the PCK key is not ECDSA P-256");
		goto out;
	}
	if ((rc = attest_ecdsa_verify(pck_key, EVP_sha256(), raw.qe_report, QE_REPORT_LEN,
				      raw.qe_sig, raw.qe_sig + 32, 32, "QE report signature (PCK)",
				      e)) != 0)
		goto out;
	/* 3. The QE report vouches for the attestation key. */
	uint8_t h[32];
	unsigned int hn = 0;
	EVP_MD_CTX *mc = EVP_MD_CTX_new();
	int ok = mc && EVP_DigestInit_ex(mc, EVP_sha256(), NULL) == 1 &&
		 EVP_DigestUpdate(mc, raw.att_key, 64) == 1 &&
		 EVP_DigestUpdate(mc, raw.auth, raw.auth_len) == 1 &&
		 EVP_DigestFinal_ex(mc, h, &hn) == 1;
	EVP_MD_CTX_free(mc);
	if (!ok) {
		rc = attest_fail(e, ERR_NOMEM, ATTEST_CHECK_NONE, NULL, "hash failed");
		goto out;
	}
	static const uint8_t zero[32];
	if (memcmp(h, raw.qe_report + 320, 32) != 0 || memcmp(raw.qe_report + 352, zero, 32) != 0) {
		rc = attest_fail(e, ERR_ATTESTATION, ATTEST_CHECK_BINDING, "qe_report_data",
				 "the QE report does not bind the attestation key "
				 "(SHA-256(key || auth data) differs)");
		goto out;
	}
	/* 4. The quote (header and body) is signed by the attestation key. */
	if (attest_p256_key(raw.att_key, &ak) != 0) {
		rc = attest_fail(e, ERR_ATTESTATION, ATTEST_CHECK_SIGNATURE, "attestation_key",
				 "the attestation key is not a P-256 point");
		goto out;
	}
	if ((rc = attest_ecdsa_verify(ak, EVP_sha256(), quote, raw.signed_len, raw.sig,
				      raw.sig + 32, 32, "TDX quote signature (attestation key)", e)) !=
	    0)
		goto out;
	/* 5. What the PCK certificate says about the platform, then the collateral. */
	if (parse_pck_ext(pck, t) != 0) {
		rc = attest_fail(e, ERR_ATTESTATION, ATTEST_CHECK_CHAIN, "pck_chain",
				 "the PCK certificate has no valid SGX extension (FMSPC, TCB)");
		goto out;
	}
	if (coll && coll->tcb_info && (rc = check_tcb_info(coll, roots, t, at, e)) != 0)
		goto out;
	if (coll && coll->qe_identity && (rc = check_qe_identity(coll, roots, t, at, e)) != 0)
		goto out;
	if (t->tcb_info_checked && strcmp(t->tcb_status, "Revoked") == 0) {
		rc = attest_fail(e, ERR_ATTESTATION, ATTEST_CHECK_TCB, "tcb_status",
				 "the platform's TCB is revoked");
		goto out;
	}
	out->platform = IDENT_PLATFORM_TDX;
	memcpy(out->measurement, t->mrtd, 48);
	out->measurement_len = 48;
	out->has_report_data = true;
	memcpy(out->report_data, t->report_data, 64);
	out->debug = (t->td_attributes[0] & 1) != 0; /* TUD.DEBUG */
	unsigned int dn = 0;
	EVP_Digest(quote, len, out->evidence_sha256, &dn, EVP_sha256(), NULL);
	rc = 0;
out:
	if (rc != 0)
		memset(out, 0, sizeof *out);
	EVP_PKEY_free(ak);
	sk_X509_pop_free(chain, X509_free);
	return rc;
}
