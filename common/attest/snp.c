/* attest snp: the AMD SEV-SNP verifier. The report is the fixed 1184-byte
 * ATTESTATION_REPORT of the SEV-SNP firmware ABI (spec 56860, section 7.3), read field by
 * field with every must-be-zero range checked, so a report that a newer firmware
 * extended in a way we do not know is refused rather than half understood. It is
 * signed (ECDSA P-384, SHA-384, r and s as 72-byte little-endian fields) by the VCEK, a
 * key derived from the chip's secrets and its firmware TCB; the VCEK certificate is
 * signed by the ASK, the ASK by the ARK, the AMD root of the processor line, which is
 * self-signed RSA-PSS (VCEK specification 57230, section 2). The VCEK carries the TCB it
 * was derived for and the chip's hwID in its extensions: both must match the report, or
 * a valid VCEK of one machine (or one firmware level) would vouch for another. */
#include <openssl/asn1.h>
#include <openssl/err.h>
#include <openssl/evp.h>
#include <openssl/objects.h>
#include <openssl/x509.h>
#include <openssl/x509v3.h>
#include <string.h>

#include "attest_int.h"
#include "err/err.h"

#define SNP_REPORT_LEN 0x4A0
#define SNP_SIG_OFF 0x2A0
#define SNP_SIGNED_LEN SNP_SIG_OFF
#define SNP_RS_FIELD 72
#define SNP_RS_LEN 48

static uint32_t le32(const uint8_t *p)
{
	return (uint32_t)p[0] | (uint32_t)p[1] << 8 | (uint32_t)p[2] << 16 | (uint32_t)p[3] << 24;
}

static uint64_t le64(const uint8_t *p)
{
	return (uint64_t)le32(p) | (uint64_t)le32(p + 4) << 32;
}

/* The first offset in [lo, hi) whose byte is not zero, or hi. */
static size_t first_nonzero(const uint8_t *p, size_t lo, size_t hi)
{
	for (size_t i = lo; i < hi; i++)
		if (p[i])
			return i;
	return hi;
}

static int mbz(const uint8_t *r, size_t lo, size_t hi, struct attest_error *e)
{
	size_t at = first_nonzero(r, lo, hi);
	if (at != hi)
		return attest_fail(e, ERR_PARSE, ATTEST_CHECK_FORMAT, "reserved",
				   "SEV-SNP report: reserved byte at 0x%zx is not zero", at);
	return 0;
}

static void rev(uint8_t *dst, const uint8_t *src, size_t n)
{
	for (size_t i = 0; i < n; i++)
		dst[i] = src[n - 1 - i];
}

int attest_snp_parse(const uint8_t *r, size_t len, struct attest_snp *s, struct attest_error *e)
{
	struct attest_error local_err;
	if (!e)
		e = &local_err;
	attest_error_clear(e);
	if (!r || !s)
		return attest_fail(e, ERR_INVALID, ATTEST_CHECK_NONE, NULL, "no report");
	memset(s, 0, sizeof *s);
	if (len != SNP_REPORT_LEN)
		return attest_fail(e, ERR_PARSE, ATTEST_CHECK_FORMAT, "length",
				   "SEV-SNP report is %zu bytes, the ABI fixes it at %d", len,
				   SNP_REPORT_LEN);
	int rc;
	s->version = le32(r);
	/* Version 2: ABI 1.51; 3 adds CPUID_FAM/MOD/STEP (1.55); 5 adds the mitigation
	 * vectors (1.58). Later versions define fields we would not check. */
	if (s->version < 2 || s->version > 5)
		return attest_fail(e, ERR_PARSE, ATTEST_CHECK_FORMAT, "version",
				   "SEV-SNP report version %u is not supported (2 to 5 are)",
				   s->version);
	s->guest_svn = le32(r + 0x04);
	s->policy = le64(r + 0x08);
	if (!(s->policy & ATTEST_SNP_POLICY_RESERVED1))
		return attest_fail(e, ERR_PARSE, ATTEST_CHECK_FORMAT, "policy",
				   "SEV-SNP guest policy bit 17 must be one");
	if (s->policy >> 26)
		return attest_fail(e, ERR_PARSE, ATTEST_CHECK_FORMAT, "policy",
				   "SEV-SNP guest policy bits 63:26 must be zero");
	memcpy(s->family_id, r + 0x10, 16);
	memcpy(s->image_id, r + 0x20, 16);
	s->vmpl = le32(r + 0x30);
	s->signature_algo = le32(r + 0x34);
	if (s->signature_algo != 1)
		return attest_fail(e, ERR_PARSE, ATTEST_CHECK_FORMAT, "signature_algo",
				   "SEV-SNP signature algorithm %u is not ECDSA P-384 with SHA-384 (1)",
				   s->signature_algo);
	s->current_tcb = le64(r + 0x38);
	s->platform_info = le64(r + 0x40);
	s->signer_info = le32(r + 0x48);
	if (s->signer_info >> 5)
		return attest_fail(e, ERR_PARSE, ATTEST_CHECK_FORMAT, "signer_info",
				   "SEV-SNP signer info bits 31:5 must be zero");
	unsigned key = (s->signer_info >> 2) & 7;
	if (key > 1 && key < 7)
		return attest_fail(e, ERR_PARSE, ATTEST_CHECK_FORMAT, "signer_info",
				   "SEV-SNP SIGNING_KEY %u is reserved", key);
	if ((rc = mbz(r, 0x4C, 0x50, e)) != 0)
		return rc;
	memcpy(s->report_data, r + 0x50, 64);
	memcpy(s->measurement, r + 0x90, 48);
	memcpy(s->host_data, r + 0xC0, 32);
	memcpy(s->id_key_digest, r + 0xE0, 48);
	memcpy(s->author_key_digest, r + 0x110, 48);
	memcpy(s->report_id, r + 0x140, 32);
	memcpy(s->report_id_ma, r + 0x160, 32);
	s->reported_tcb = le64(r + 0x180);
	if (s->version >= 3) {
		s->has_cpuid = true;
		s->cpuid_fam_id = r[0x188];
		s->cpuid_mod_id = r[0x189];
		s->cpuid_step = r[0x18A];
		rc = mbz(r, 0x18B, 0x1A0, e);
	} else {
		rc = mbz(r, 0x188, 0x1A0, e);
	}
	if (rc != 0)
		return rc;
	memcpy(s->chip_id, r + 0x1A0, 64);
	if ((s->signer_info & 2) && first_nonzero(s->chip_id, 0, 64) != 64)
		return attest_fail(e, ERR_PARSE, ATTEST_CHECK_FORMAT, "chip_id",
				   "SEV-SNP MASK_CHIP_ID is set but CHIP_ID is not zero");
	s->committed_tcb = le64(r + 0x1E0);
	s->current_build = r[0x1E8];
	s->current_minor = r[0x1E9];
	s->current_major = r[0x1EA];
	if ((rc = mbz(r, 0x1EB, 0x1EC, e)) != 0)
		return rc;
	s->committed_build = r[0x1EC];
	s->committed_minor = r[0x1ED];
	s->committed_major = r[0x1EE];
	if ((rc = mbz(r, 0x1EF, 0x1F0, e)) != 0)
		return rc;
	s->launch_tcb = le64(r + 0x1F0);
	if (s->version >= 5) {
		s->has_mit_vectors = true;
		s->launch_mit_vector = le64(r + 0x1F8);
		s->current_mit_vector = le64(r + 0x200);
		rc = mbz(r, 0x208, SNP_SIG_OFF, e);
	} else {
		rc = mbz(r, 0x1F8, SNP_SIG_OFF, e);
	}
	if (rc != 0)
		return rc;
	/* r and s are 48-byte P-384 values zero-extended to 72 bytes; the rest of the
	 * 512-byte signature field is reserved. */
	if ((rc = mbz(r, SNP_SIG_OFF + SNP_RS_LEN, SNP_SIG_OFF + SNP_RS_FIELD, e)) != 0 ||
	    (rc = mbz(r, SNP_SIG_OFF + SNP_RS_FIELD + SNP_RS_LEN, SNP_SIG_OFF + 2 * SNP_RS_FIELD,
		      e)) != 0 ||
	    (rc = mbz(r, SNP_SIG_OFF + 2 * SNP_RS_FIELD, SNP_REPORT_LEN, e)) != 0)
		return rc;
	rev(s->sig_r, r + SNP_SIG_OFF, SNP_RS_LEN);
	rev(s->sig_s, r + SNP_SIG_OFF + SNP_RS_FIELD, SNP_RS_LEN);
	return 0;
}

/* --- VCEK extensions (VCEK spec 57230, Table 9) --- */

#define AMD_OID "1.3.6.1.4.1.3704.1."

static const ASN1_OCTET_STRING *ext_value(X509 *x, const char *oid)
{
	ASN1_OBJECT *o = OBJ_txt2obj(oid, 1);
	if (!o)
		return NULL;
	int idx = X509_get_ext_by_OBJ(x, o, -1);
	/* A second copy of the same extension is ambiguous: refuse it. */
	int again = idx >= 0 ? X509_get_ext_by_OBJ(x, o, idx) : -1;
	ASN1_OBJECT_free(o);
	if (idx < 0 || again >= 0)
		return NULL;
	return X509_EXTENSION_get_data(X509_get_ext(x, idx));
}

/* An extension holding a DER INTEGER in 0..255. */
static int ext_u8(X509 *x, const char *oid, uint8_t *out)
{
	const ASN1_OCTET_STRING *v = ext_value(x, oid);
	if (!v)
		return ERR_PARSE;
	const unsigned char *p = ASN1_STRING_get0_data(v);
	long n = ASN1_STRING_length(v);
	ASN1_INTEGER *i = d2i_ASN1_INTEGER(NULL, &p, n);
	int64_t val = -1;
	int ok = i && p == ASN1_STRING_get0_data(v) + n && ASN1_INTEGER_get_int64(&val, i) == 1 &&
		 val >= 0 && val <= 255;
	ASN1_INTEGER_free(i);
	ERR_clear_error();
	if (!ok)
		return ERR_PARSE;
	*out = (uint8_t)val;
	return 0;
}

/* hwID: 64 raw bytes (as AMD's KDS issues it), or the same wrapped in an OCTET STRING. */
static int ext_hwid(X509 *x, uint8_t out[64])
{
	const ASN1_OCTET_STRING *v = ext_value(x, AMD_OID "4");
	if (!v)
		return ERR_PARSE;
	const uint8_t *p = ASN1_STRING_get0_data(v);
	int n = ASN1_STRING_length(v);
	if (n == 64) {
		memcpy(out, p, 64);
		return 0;
	}
	if (n == 66 && p[0] == 0x04 && p[1] == 64) {
		memcpy(out, p + 2, 64);
		return 0;
	}
	return ERR_PARSE;
}

/* productName: an IA5String "Milan", "Milan-B0", "Genoa", ...: the part before '-'. */
static int ext_product(X509 *x, char *out, size_t cap)
{
	const ASN1_OCTET_STRING *v = ext_value(x, AMD_OID "2");
	if (!v)
		return ERR_PARSE;
	const unsigned char *p = ASN1_STRING_get0_data(v);
	long n = ASN1_STRING_length(v);
	ASN1_IA5STRING *s = d2i_ASN1_IA5STRING(NULL, &p, n);
	int rc = ERR_PARSE;
	if (s && p == ASN1_STRING_get0_data(v) + n) {
		const unsigned char *d = ASN1_STRING_get0_data(s);
		int len = ASN1_STRING_length(s);
		size_t k = 0;
		while (k < (size_t)len && d[k] != '-' && k + 1 < cap) {
			if (d[k] < 0x21 || d[k] > 0x7e)
				break;
			out[k] = (char)d[k];
			k++;
		}
		out[k] = '\0';
		if (k > 0 && (k == (size_t)len || d[k] == '-'))
			rc = 0;
	}
	ASN1_IA5STRING_free(s);
	ERR_clear_error();
	return rc;
}

/* The product a v3+ report's CPUID names (family 19h: Milan models 0xh, Genoa 1xh and
 * Ah (Bergamo, Siena share the Genoa keys); family 1Ah: Turin). NULL: unknown. */
static const char *cpuid_product(const struct attest_snp *s)
{
	if (s->cpuid_fam_id == 0x19) {
		unsigned hi = s->cpuid_mod_id >> 4;
		if (hi == 0)
			return "Milan";
		if (hi == 1 || hi == 0xA)
			return "Genoa";
	}
	if (s->cpuid_fam_id == 0x1A)
		return "Turin";
	return NULL;
}

static int load_one(const uint8_t *p, size_t n, X509 **out)
{
	STACK_OF(X509) *sk = sk_X509_new_null();
	if (!sk)
		return ERR_NOMEM;
	int rc = attest_certs_load(p, n, sk, 1);
	if (rc == 0 && sk_X509_num(sk) == 1)
		*out = sk_X509_shift(sk);
	else
		rc = ERR_PARSE;
	sk_X509_pop_free(sk, X509_free);
	return rc;
}

static int check_tcb(X509 *vcek, const struct attest_snp *s, struct attest_error *e)
{
	/* blSPL, teeSPL, spl_4..spl_7, snpSPL, ucodeSPL are the eight bytes of the
	 * TCB_VERSION the VCEK was derived for, in byte order 0,1,2..5,6,7. */
	static const char *const oids[8] = {AMD_OID "3.1", AMD_OID "3.2", AMD_OID "3.4",
					    AMD_OID "3.5", AMD_OID "3.6", AMD_OID "3.7",
					    AMD_OID "3.3", AMD_OID "3.8"};
	static const char *const names[8] = {"bootloader", "tee", "spl_4", "spl_5",
					     "spl_6", "spl_7", "snp", "microcode"};
	for (int i = 0; i < 8; i++) {
		uint8_t v;
		if (ext_u8(vcek, oids[i], &v) != 0)
			return attest_fail(e, ERR_ATTESTATION, ATTEST_CHECK_TCB, "vcek",
					   "the VCEK has no valid %s TCB extension (%s)", names[i],
					   oids[i]);
		uint8_t want = (uint8_t)(s->reported_tcb >> (8 * i));
		if (v != want)
			return attest_fail(e, ERR_ATTESTATION, ATTEST_CHECK_TCB, "reported_tcb",
					   "REPORTED_TCB %s is %u but the VCEK was issued for %u",
					   names[i], want, v);
	}
	return 0;
}

int attest_snp_verify(const struct attest_roots *roots, const uint8_t *report, size_t len,
		      const uint8_t *vcek_b, size_t vcek_len, const uint8_t *ask_b, size_t ask_len,
		      int64_t at, struct attest_claims *out, struct attest_error *e)
{
	struct attest_error local_err;
	if (!e)
		e = &local_err;
	attest_error_clear(e);
	if (!out || !report)
		return attest_fail(e, ERR_INVALID, ATTEST_CHECK_NONE, NULL, "no report");
	memset(out, 0, sizeof *out);
	struct attest_snp *s = &out->snp;
	int rc = attest_snp_parse(report, len, s, e);
	if (rc != 0)
		return rc;
	X509 *vcek = NULL, *ask = NULL;
	STACK_OF(X509) *inter = NULL;
	if (!vcek_b || load_one(vcek_b, vcek_len, &vcek) != 0) {
		rc = attest_fail(e, ERR_PARSE, ATTEST_CHECK_FORMAT, "vcek",
				 "the VCEK certificate is missing or malformed");
		goto out;
	}
	if (!ask_b || load_one(ask_b, ask_len, &ask) != 0) {
		rc = attest_fail(e, ERR_PARSE, ATTEST_CHECK_FORMAT, "ask",
				 "the ASK certificate is missing or malformed");
		goto out;
	}
	unsigned key = (s->signer_info >> 2) & 7;
	if (key != 0) {
		rc = attest_fail(e, ERR_ATTESTATION, ATTEST_CHECK_SIGNATURE, "signer_info",
				 "the report is signed by a %s, only VCEK-signed reports are supported",
				 key == 1 ? "VLEK" : "no key");
		goto out;
	}
	/* 1. Which AMD root: the VCEK's product (a v3+ report's CPUID must agree, step 4). */
	if (ext_product(vcek, s->product, sizeof s->product) != 0) {
		rc = attest_fail(e, ERR_ATTESTATION, ATTEST_CHECK_CHAIN, "vcek",
				 "the VCEK has no valid productName extension");
		goto out;
	}
	enum attest_root which;
	if (strcmp(s->product, "Milan") == 0)
		which = ATTEST_ROOT_AMD_MILAN;
	else if (strcmp(s->product, "Genoa") == 0)
		which = ATTEST_ROOT_AMD_GENOA;
	else {
		rc = attest_fail(e, ERR_ATTESTATION, ATTEST_CHECK_CHAIN, "vcek",
				 "no AMD root for product %s (Milan and Genoa are supported)",
				 s->product);
		goto out;
	}
	/* 2. VCEK -> ASK -> ARK at the verification time. */
	char want_ask[24];
	snprintf(want_ask, sizeof want_ask, "SEV-%s", s->product);
	char cn[64] = "";
	X509_NAME_get_text_by_NID(X509_get_subject_name(ask), NID_commonName, cn, sizeof cn);
	ERR_clear_error();
	if (strcmp(cn, want_ask) != 0) {
		rc = attest_fail(e, ERR_ATTESTATION, ATTEST_CHECK_CHAIN, "ask",
				 "the ASK is \"%s\", expected \"%s\"", cn, want_ask);
		goto out;
	}
	inter = sk_X509_new_null();
	if (!inter || !sk_X509_push(inter, ask)) {
		rc = attest_fail(e, ERR_NOMEM, ATTEST_CHECK_NONE, NULL, "out of memory");
		goto out;
	}
	ask = NULL; /* owned by inter */
	if ((rc = attest_chain_verify(vcek, inter, attest_roots_get(roots, which), NULL, at,
				      "VCEK", NULL, e)) != 0)
		goto out;
	/* 3. The report signature with the VCEK's P-384 key. */
	EVP_PKEY *pk = X509_get0_pubkey(vcek);
	char group[32] = "";
	size_t glen = 0;
	if (!pk || EVP_PKEY_base_id(pk) != EVP_PKEY_EC ||
	    EVP_PKEY_get_utf8_string_param(pk, "group", group, sizeof group, &glen) != 1 ||
	    strcmp(group, "secp384r1") != 0) {
		ERR_clear_error();
		rc = attest_fail(e, ERR_ATTESTATION, ATTEST_CHECK_SIGNATURE, "vcek",
				 "the VCEK key is not an ECDSA P-384 key");
		goto out;
	}
	if ((rc = attest_ecdsa_verify(pk, EVP_sha384(), report, SNP_SIGNED_LEN, s->sig_r,
				      s->sig_s, SNP_RS_LEN, "SEV-SNP report signature (VCEK)", e)) !=
	    0)
		goto out;
	/* 4. The VCEK was issued for this processor line, this TCB and this chip. */
	if (s->has_cpuid) {
		const char *p = cpuid_product(s);
		if (!p || strcmp(p, s->product) != 0) {
			rc = attest_fail(e, ERR_ATTESTATION, ATTEST_CHECK_BINDING, "cpuid",
					 "the report's CPUID (family %02x model %02x) is not a %s "
					 "processor, as the VCEK says",
					 s->cpuid_fam_id, s->cpuid_mod_id, s->product);
			goto out;
		}
	}
	if ((rc = check_tcb(vcek, s, e)) != 0)
		goto out;
	if (!(s->signer_info & 2)) {
		uint8_t hwid[64];
		if (ext_hwid(vcek, hwid) != 0) {
			rc = attest_fail(e, ERR_ATTESTATION, ATTEST_CHECK_BINDING, "vcek",
					 "the VCEK has no valid hwID extension");
			goto out;
		}
		if (memcmp(hwid, s->chip_id, 64) != 0) {
			rc = attest_fail(e, ERR_ATTESTATION, ATTEST_CHECK_BINDING, "chip_id",
					 "CHIP_ID differs from the VCEK's hwID: the VCEK belongs "
					 "to another processor");
			goto out;
		}
	}
	out->platform = IDENT_PLATFORM_SEV_SNP;
	memcpy(out->measurement, s->measurement, 48);
	out->measurement_len = 48;
	out->has_report_data = true;
	memcpy(out->report_data, s->report_data, 64);
	out->debug = (s->policy & ATTEST_SNP_POLICY_DEBUG) != 0;
	out->has_chip_id = !(s->signer_info & 2);
	if (out->has_chip_id)
		memcpy(out->chip_id, s->chip_id, 64);
	unsigned int n = 0;
	EVP_Digest(report, len, out->evidence_sha256, &n, EVP_sha256(), NULL);
	rc = 0;
out:
	if (rc != 0) {
		memset(out, 0, sizeof *out);
	}
	X509_free(vcek);
	X509_free(ask);
	sk_X509_pop_free(inter, X509_free);
	return rc;
}
