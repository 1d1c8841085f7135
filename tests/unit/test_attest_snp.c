/* attest (SEV-SNP): the real reports in ../shared/vectors/attest/snp verify at a time
 * inside their VCEK's validity with the fields PROVENANCE.md records; one flipped bit
 * in any byte of the signed part, or of the VCEK, is rejected; a wrong root, a time
 * outside the chain's validity and a missing ASK are rejected with check "chain"; and,
 * with a test CA standing in for AMD (we cannot make AMD sign), a VCEK issued for
 * another TCB or another chip is rejected with check "tcb" / "binding". The roots
 * shipped in attest/roots equal the ones in ../shared and their pinned hashes. */
#include <openssl/evp.h>
#include <openssl/objects.h>
#include <openssl/x509.h>
#include <openssl/x509v3.h>
#include <stdlib.h>
#include <string.h>

#include "attest/attest.h"
#include "err/err.h"
#include "test_attest_util.h"
#include "testutil.h"

#define T_MILAN 1704067200 /* 2024-01-01: inside the Milan VCEK's 2022-09-24..2029-09-24 */
#define T_GENOA 1748736000 /* 2025-06-01: inside the Genoa VCEK's 2025-01-24..2032-01-24 */

static struct attest_roots *roots(void)
{
	return atu_roots(ATTEST_ROOTS_PINNED | ATTEST_ROOTS_ALL);
}

START_TEST(test_shipped_roots_equal_shared)
{
	static const struct {
		enum attest_root which;
		const char *shared;
	} map[] = {
		{ATTEST_ROOT_AMD_MILAN, "vectors/attest/snp/milan-v2/ark_milan.pem"},
		{ATTEST_ROOT_AMD_GENOA, "vectors/attest/snp/genoa-v3-azure/ark_genoa.pem"},
		{ATTEST_ROOT_INTEL_SGX, "vectors/attest/tdx/Intel_SGX_Root_CA.pem"},
		{ATTEST_ROOT_AWS_NITRO, "vectors/attest/nitro/aws_nitro_root.pem"},
	};
	struct attest_roots *mine = roots(), *theirs = NULL;
	ck_assert_int_eq(attest_roots_new(&theirs), 0);
	for (size_t i = 0; i < sizeof map / sizeof map[0]; i++) {
		size_t len;
		uint8_t *pem = atu_load(map[i].shared, &len);
		ck_assert_int_eq(attest_roots_set(theirs, map[i].which, pem, len), 0);
		free(pem);
		uint8_t a[32], b[32], pin[32];
		ck_assert_int_eq(attest_roots_sha256(mine, map[i].which, a), 0);
		ck_assert_int_eq(attest_roots_sha256(theirs, map[i].which, b), 0);
		ck_assert_int_eq(attest_root_pinned_sha256(map[i].which, pin), 0);
		ck_assert_msg(memcmp(a, b, 32) == 0, "%s differs from ../shared",
			      attest_root_file(map[i].which));
		ck_assert(memcmp(a, pin, 32) == 0);
	}
	/* The Nitro pin is the one PROVENANCE.md (and AWS) publish. */
	uint8_t pin[32];
	ck_assert_int_eq(attest_root_pinned_sha256(ATTEST_ROOT_AWS_NITRO, pin), 0);
	atu_assert_hex(pin, 32, "641a0321a3e244efe456463195d606317ed7cdcc3c1756e09893f3c68f79bb5b");
	attest_roots_free(mine);
	attest_roots_free(theirs);
}
END_TEST

START_TEST(test_pinned_load_refuses_a_swapped_root)
{
	char dir[512], path[600];
	tu_tmpdir(dir, sizeof dir);
	size_t len;
	/* The Genoa ARK under the Milan file name: a valid self-signed root, wrong pin. */
	uint8_t *pem = atu_load("vectors/attest/snp/genoa-v3-azure/ark_genoa.pem", &len);
	snprintf(path, sizeof path, "%s/amd_ark_milan.pem", dir);
	ck_assert_int_eq(tu_write_file(path, pem, len), 0);
	struct attest_roots *r = NULL;
	ck_assert_int_eq(attest_roots_load_dir(&r, dir, ATTEST_ROOTS_PINNED), ERR_ATTESTATION);
	ck_assert_ptr_null(r);
	ck_assert_int_eq(attest_roots_load_dir(&r, dir, ATTEST_ROOTS_ALL), ERR_MISSING);
	ck_assert_int_eq(attest_roots_load_dir(&r, dir, 0), 0);
	attest_roots_free(r);
	/* Not a certificate at all. */
	ck_assert_int_eq(tu_write_file(path, "hello", 5), 0);
	ck_assert_int_eq(attest_roots_load_dir(&r, dir, 0), ERR_PARSE);
	free(pem);
	tu_rmrf(dir);
}
END_TEST

START_TEST(test_milan_v2_verifies_with_fields)
{
	struct atu_snp_vec v;
	atu_snp_load(&v, "milan-v2", "vcek.der", "ask_milan.pem");
	struct attest_roots *r = roots();
	struct attest_claims *c = malloc(sizeof *c);
	struct attest_error e;
	int rc = atu_snp_verify(r, &v, T_MILAN, c, &e);
	atu_assert_verified(rc, &e);
	ck_assert_int_eq(c->platform, IDENT_PLATFORM_SEV_SNP);
	ck_assert_uint_eq(c->snp.version, 2);
	ck_assert_str_eq(c->snp.product, "Milan");
	ck_assert_uint_eq(c->measurement_len, 48);
	atu_assert_hex(c->measurement, 48,
		       "b07af9620f3b839b47996422ddec6058338951d984e312115131ea82705eaf5b6bdf8a9ece31a5a608eb0cf2e4872b01");
	ck_assert(c->has_report_data);
	uint8_t rd[64] = {1, 2, 3, 4, 5};
	ck_assert(memcmp(c->report_data, rd, 64) == 0);
	ck_assert_uint_eq(c->snp.policy, 0xb0000);
	ck_assert(c->debug); /* bit 19 */
	struct attest_snp_tcb t;
	attest_snp_tcb_split(c->snp.reported_tcb, &t);
	ck_assert_uint_eq(t.bootloader, 2);
	ck_assert_uint_eq(t.tee, 0);
	ck_assert_uint_eq(t.snp, 5);
	ck_assert_uint_eq(t.microcode, 0x44);
	uint8_t tcb_bytes[8];
	for (int i = 0; i < 8; i++)
		tcb_bytes[i] = (uint8_t)(c->snp.reported_tcb >> (8 * i));
	atu_assert_hex(tcb_bytes, 8, "0200000000000544");
	ck_assert(c->has_chip_id);
	atu_assert_hex(c->chip_id, 64,
		       "3ac3fe21e13fb0990eb28a802e3fb6a29483a6b0753590c951bdd3b8e53786184ca39e359669a2b76a1936776b564ea464cdce40c05f63c9b610c5068b006b5d");
	ck_assert(!c->snp.has_cpuid);
	ck_assert(!c->has_time);
	/* The JSON view carries the same values. */
	json_t *j = attest_claims_json(c);
	ck_assert_ptr_nonnull(j);
	ck_assert_str_eq(json_string_value(json_object_get(j, "platform")), "sev-snp");
	ck_assert(json_is_true(json_object_get(j, "debug")));
	ck_assert_str_eq(json_string_value(json_object_get(json_object_get(j, "sev-snp"),
							    "reported_tcb")),
			 "4405000000000002");
	json_decref(j);
	free(c);
	attest_roots_free(r);
	atu_snp_free(&v);
}
END_TEST

START_TEST(test_genoa_v3_verifies_with_fields)
{
	struct atu_snp_vec v;
	atu_snp_load(&v, "genoa-v3-azure", "vcek.pem", "ask_genoa.pem");
	struct attest_roots *r = roots();
	struct attest_claims *c = malloc(sizeof *c);
	struct attest_error e;
	int rc = atu_snp_verify(r, &v, T_GENOA, c, &e);
	atu_assert_verified(rc, &e);
	ck_assert_uint_eq(c->snp.version, 3);
	ck_assert_str_eq(c->snp.product, "Genoa");
	atu_assert_hex(c->measurement, 48,
		       "f57dc09a507c6ecd82369bffb600f0003792f4d99bc26e985ec0c266fc34faf3706faf814c9e61065768a6ff917c89ae");
	atu_assert_hex(c->report_data, 64,
		       "b581f12e29a2d7d64e5e0b738d563879a78b51c644d0fa0cce02b48699f6bf5f"
		       "0000000000000000000000000000000000000000000000000000000000000000");
	ck_assert_uint_eq(c->snp.policy, 0x3001f);
	ck_assert(!c->debug);
	uint8_t tcb_bytes[8];
	for (int i = 0; i < 8; i++)
		tcb_bytes[i] = (uint8_t)(c->snp.reported_tcb >> (8 * i));
	atu_assert_hex(tcb_bytes, 8, "0a00000000001754");
	atu_assert_hex(c->chip_id, 64,
		       "0506ffba875e939c2729d20c74eb72b4c5ba6bf7ea1faaa640141f12c6d64782fb487f68ce69dcd021e914cc0d9244327bc121f0242d6470903ad1d4aaea4ad1");
	ck_assert(c->snp.has_cpuid);
	ck_assert_uint_eq(c->snp.cpuid_fam_id, 0x19);
	ck_assert_uint_eq(c->snp.cpuid_mod_id, 0x11);
	free(c);
	attest_roots_free(r);
	atu_snp_free(&v);
}
END_TEST

struct flipped {
	struct attest_roots *r;
	const struct atu_snp_vec *v;
	int64_t at;
};

static int flipped_verify(void *ctx, struct attest_claims *c, struct attest_error *e)
{
	struct flipped *f = ctx;
	return atu_snp_verify(f->r, f->v, f->at, c, e);
}

/* Every one-bit change of buf[lo, hi), a part of v, is rejected: malformed (ERR_PARSE)
 * or, when it still parses, at the check `want` (for the report, the signature; for
 * the VCEK, the chain). */
static void flip_all(struct atu_snp_vec *v, uint8_t *buf, size_t lo, size_t hi, int64_t at,
		     enum attest_check want)
{
	struct flipped f = {.r = roots(), .v = v, .at = at};
	struct atu_flips t;
	atu_flip_each(buf, lo, hi, flipped_verify, &f, ATU_CHECK(want), &t);
	ck_assert_uint_eq(t.parse + t.check[want], hi - lo);
	ck_assert_uint_gt(t.check[want], 0);
	attest_roots_free(f.r);
}

START_TEST(test_every_byte_of_the_signed_report_matters)
{
	struct atu_snp_vec v;
	atu_snp_load(&v, "milan-v2", "vcek.der", "ask_milan.pem");
	flip_all(&v, v.report, 0, v.report_len, T_MILAN, ATTEST_CHECK_SIGNATURE);
	atu_snp_free(&v);
	atu_snp_load(&v, "genoa-v3-azure", "vcek.pem", "ask_genoa.pem");
	flip_all(&v, v.report, 0, v.report_len, T_GENOA, ATTEST_CHECK_SIGNATURE);
	atu_snp_free(&v);
}
END_TEST

START_TEST(test_every_byte_of_the_vcek_matters)
{
	struct atu_snp_vec v;
	atu_snp_load(&v, "milan-v2", "vcek.der", "ask_milan.pem");
	flip_all(&v, v.vcek, 0, v.vcek_len, T_MILAN, ATTEST_CHECK_CHAIN);
	atu_snp_free(&v);
}
END_TEST

START_TEST(test_wrong_root_expired_and_missing_chain)
{
	struct atu_snp_vec v;
	atu_snp_load(&v, "milan-v2", "vcek.der", "ask_milan.pem");
	struct attest_claims *c = malloc(sizeof *c);
	struct attest_error e;
	/* The Genoa ARK installed as the Milan root. */
	struct attest_roots *bad = NULL;
	ck_assert_int_eq(attest_roots_new(&bad), 0);
	size_t len;
	uint8_t *genoa = atu_load("vectors/attest/snp/genoa-v3-azure/ark_genoa.pem", &len);
	ck_assert_int_eq(attest_roots_set(bad, ATTEST_ROOT_AMD_MILAN, genoa, len), 0);
	int rc = atu_snp_verify(bad, &v, T_MILAN, c, &e);
	atu_expect(rc, &e, ERR_ATTESTATION, ATTEST_CHECK_CHAIN, "VCEK chain");
	/* No roots at all. */
	attest_roots_free(bad);
	ck_assert_int_eq(attest_roots_new(&bad), 0);
	rc = atu_snp_verify(bad, &v, T_MILAN, c, &e);
	atu_expect(rc, &e, ERR_ATTESTATION, ATTEST_CHECK_CHAIN, "no trust anchor");
	attest_roots_free(bad);

	struct attest_roots *r = roots();
	/* After the VCEK expired (2029-09-24) and before it was issued (2022-09-24). */
	rc = atu_snp_verify(r, &v, 1893456000 /* 2030-01-01 */, c, &e);
	atu_expect(rc, &e, ERR_ATTESTATION, ATTEST_CHECK_CHAIN, "expired");
	rc = atu_snp_verify(r, &v, 1640995200 /* 2022-01-01 */, c, &e);
	atu_expect(rc, &e, ERR_ATTESTATION, ATTEST_CHECK_CHAIN, "not yet valid");
	/* The ARK given as the ASK; a missing VCEK; a truncated report. */
	rc = attest_snp_verify(r, v.report, v.report_len, v.vcek, v.vcek_len, genoa, len, T_MILAN,
			       c, &e);
	atu_expect(rc, &e, ERR_ATTESTATION, ATTEST_CHECK_CHAIN, "ASK");
	rc = attest_snp_verify(r, v.report, v.report_len, NULL, 0, v.ask, v.ask_len, T_MILAN, c,
			       &e);
	atu_expect(rc, &e, ERR_PARSE, ATTEST_CHECK_FORMAT, "VCEK");
	rc = attest_snp_verify(r, v.report, v.report_len - 1, v.vcek, v.vcek_len, v.ask,
			       v.ask_len, T_MILAN, c, &e);
	atu_expect(rc, &e, ERR_PARSE, ATTEST_CHECK_FORMAT, "1184");
	/* Each report with the other's VCEK: the chain holds, the signature not. */
	struct atu_snp_vec g;
	atu_snp_load(&g, "genoa-v3-azure", "vcek.pem", "ask_genoa.pem");
	rc = attest_snp_verify(r, g.report, g.report_len, v.vcek, v.vcek_len, v.ask, v.ask_len,
			       T_GENOA, c, &e);
	atu_expect(rc, &e, ERR_ATTESTATION, ATTEST_CHECK_SIGNATURE, "does not verify");
	rc = attest_snp_verify(r, v.report, v.report_len, g.vcek, g.vcek_len, g.ask, g.ask_len,
			       T_GENOA, c, &e);
	atu_expect(rc, &e, ERR_ATTESTATION, ATTEST_CHECK_SIGNATURE, "does not verify");
	json_t *pj = attest_problem(&e, "req-1");
	ck_assert_str_eq(json_string_value(json_object_get(pj, "check")), "signature");
	ck_assert_int_eq(json_integer_value(json_object_get(pj, "status")), 403);
	json_decref(pj);
	atu_snp_free(&g);
	attest_roots_free(r);
	free(genoa);
	free(c);
	atu_snp_free(&v);
}
END_TEST

START_TEST(test_generic_entry_finds_vcek_and_ask)
{
	struct atu_snp_vec v;
	atu_snp_load(&v, "genoa-v3-azure", "vcek.pem", "ask_genoa.pem");
	struct attest_roots *r = roots();
	/* ASK first, VCEK second: attest_verify sorts them by subject. */
	struct attest_blob certs[] = {{v.ask, v.ask_len}, {v.vcek, v.vcek_len}};
	struct attest_evidence ev = {.platform = IDENT_PLATFORM_SEV_SNP, .data = v.report,
				     .len = v.report_len, .certs = certs, .n_certs = 2};
	struct attest_claims *c = malloc(sizeof *c);
	struct attest_error e;
	ck_assert_int_eq(attest_verify(r, &ev, T_GENOA, c, &e), 0);
	ck_assert_str_eq(c->snp.product, "Genoa");
	ev.n_certs = 1; /* no VCEK */
	ck_assert_int_eq(attest_verify(r, &ev, T_GENOA, c, &e), ERR_PARSE);
	free(c);
	attest_roots_free(r);
	atu_snp_free(&v);
}
END_TEST

/* --- A test CA standing in for AMD, to reach the checks after the signature --- */

struct fake {
	EVP_PKEY *ark_key, *vcek_key;
	X509 *ark, *ask, *vcek;
	uint8_t *ark_der, *ask_der, *vcek_der;
	int ark_len, ask_len, vcek_len;
};

static X509 *mkcert(const char *cn, const char *issuer_cn, EVP_PKEY *subject, bool ca)
{
	X509 *x = X509_new();
	ck_assert_ptr_nonnull(x);
	X509_set_version(x, 2);
	ASN1_INTEGER_set(X509_get_serialNumber(x), 1);
	X509_NAME *n = X509_NAME_new(), *in = X509_NAME_new();
	X509_NAME_add_entry_by_txt(n, "CN", MBSTRING_ASC, (const unsigned char *)cn, -1, -1, 0);
	X509_NAME_add_entry_by_txt(in, "CN", MBSTRING_ASC, (const unsigned char *)issuer_cn, -1,
				   -1, 0);
	X509_set_subject_name(x, n);
	X509_set_issuer_name(x, in);
	X509_NAME_free(n);
	X509_NAME_free(in);
	ASN1_TIME_set(X509_getm_notBefore(x), 1600000000);
	ASN1_TIME_set(X509_getm_notAfter(x), 2000000000);
	X509_set_pubkey(x, subject);
	if (ca) {
		X509_EXTENSION *bc = X509V3_EXT_conf_nid(NULL, NULL, NID_basic_constraints,
							 "critical,CA:TRUE");
		X509_add_ext(x, bc, -1);
		X509_EXTENSION_free(bc);
	}
	return x;
}

static void add_raw_ext(X509 *x, const char *oid, const uint8_t *der, int len)
{
	ASN1_OBJECT *o = OBJ_txt2obj(oid, 1);
	ASN1_OCTET_STRING *v = ASN1_OCTET_STRING_new();
	ASN1_OCTET_STRING_set(v, der, len);
	X509_EXTENSION *ex = X509_EXTENSION_create_by_OBJ(NULL, o, 0, v);
	ck_assert_ptr_nonnull(ex);
	X509_add_ext(x, ex, -1);
	X509_EXTENSION_free(ex);
	ASN1_OCTET_STRING_free(v);
	ASN1_OBJECT_free(o);
}

/* A Milan-like chain whose VCEK states tcb (8 bytes, report byte order) and hwid. */
static void fake_make(struct fake *f, const uint8_t tcb[8], const uint8_t hwid[64])
{
	memset(f, 0, sizeof *f);
	f->ark_key = EVP_EC_gen("P-384");
	f->vcek_key = EVP_EC_gen("P-384");
	ck_assert(f->ark_key && f->vcek_key);
	f->ark = mkcert("ARK-Milan", "ARK-Milan", f->ark_key, true);
	X509_sign(f->ark, f->ark_key, EVP_sha384());
	f->ask = mkcert("SEV-Milan", "ARK-Milan", f->ark_key, true);
	X509_sign(f->ask, f->ark_key, EVP_sha384());
	f->vcek = mkcert("SEV-VCEK", "SEV-Milan", f->vcek_key, false);
	static const uint8_t product[] = {0x16, 0x08, 'M', 'i', 'l', 'a', 'n', '-', 'B', '0'};
	add_raw_ext(f->vcek, "1.3.6.1.4.1.3704.1.2", product, sizeof product);
	static const char *const oids[8] = {"1.3.6.1.4.1.3704.1.3.1", "1.3.6.1.4.1.3704.1.3.2",
					    "1.3.6.1.4.1.3704.1.3.4", "1.3.6.1.4.1.3704.1.3.5",
					    "1.3.6.1.4.1.3704.1.3.6", "1.3.6.1.4.1.3704.1.3.7",
					    "1.3.6.1.4.1.3704.1.3.3", "1.3.6.1.4.1.3704.1.3.8"};
	for (int i = 0; i < 8; i++) {
		uint8_t der[4] = {0x02, 0x01, tcb[i]};
		int n = 3;
		if (tcb[i] & 0x80) { /* positive INTEGER needs a leading zero */
			der[1] = 2;
			der[2] = 0;
			der[3] = tcb[i];
			n = 4;
		}
		add_raw_ext(f->vcek, oids[i], der, n);
	}
	add_raw_ext(f->vcek, "1.3.6.1.4.1.3704.1.4", hwid, 64);
	X509_sign(f->vcek, f->ark_key, EVP_sha384()); /* the ASK shares the ARK's key */
	f->ark_len = i2d_X509(f->ark, &f->ark_der);
	f->ask_len = i2d_X509(f->ask, &f->ask_der);
	f->vcek_len = i2d_X509(f->vcek, &f->vcek_der);
	ck_assert(f->ark_len > 0 && f->ask_len > 0 && f->vcek_len > 0);
}

static void fake_free(struct fake *f)
{
	EVP_PKEY_free(f->ark_key);
	EVP_PKEY_free(f->vcek_key);
	X509_free(f->ark);
	X509_free(f->ask);
	X509_free(f->vcek);
	OPENSSL_free(f->ark_der);
	OPENSSL_free(f->ask_der);
	OPENSSL_free(f->vcek_der);
}

/* Signs report[0..0x2A0) with key and writes r, s little-endian into the report. */
static void sign_report(uint8_t *report, EVP_PKEY *key)
{
	EVP_MD_CTX *mc = EVP_MD_CTX_new();
	uint8_t der[128];
	size_t dlen = sizeof der;
	ck_assert_int_eq(EVP_DigestSignInit(mc, NULL, EVP_sha384(), NULL, key), 1);
	ck_assert_int_eq(EVP_DigestSign(mc, der, &dlen, report, 0x2A0), 1);
	EVP_MD_CTX_free(mc);
	const unsigned char *p = der;
	ECDSA_SIG *sig = d2i_ECDSA_SIG(NULL, &p, (long)dlen);
	ck_assert_ptr_nonnull(sig);
	uint8_t be[48];
	memset(report + 0x2A0, 0, 0x4A0 - 0x2A0);
	BN_bn2binpad(ECDSA_SIG_get0_r(sig), be, 48);
	for (int i = 0; i < 48; i++)
		report[0x2A0 + i] = be[47 - i];
	BN_bn2binpad(ECDSA_SIG_get0_s(sig), be, 48);
	for (int i = 0; i < 48; i++)
		report[0x2E8 + i] = be[47 - i];
	ECDSA_SIG_free(sig);
}

static int fake_verify(struct fake *f, uint8_t *report, struct attest_claims *c,
		       struct attest_error *e)
{
	struct attest_roots *r = NULL;
	ck_assert_int_eq(attest_roots_new(&r), 0);
	ck_assert_int_eq(attest_roots_set(r, ATTEST_ROOT_AMD_MILAN, f->ark_der,
					  (size_t)f->ark_len),
			 0);
	int rc = attest_snp_verify(r, report, 0x4A0, f->vcek_der, (size_t)f->vcek_len, f->ask_der,
				   (size_t)f->ask_len, T_MILAN, c, e);
	attest_roots_free(r);
	return rc;
}

START_TEST(test_vcek_for_another_tcb_or_chip_is_refused)
{
	struct atu_snp_vec v;
	atu_snp_load(&v, "milan-v2", "vcek.der", "ask_milan.pem");
	uint8_t *report = v.report;
	struct attest_claims *c = malloc(sizeof *c);
	struct attest_error e;
	struct fake f;
	/* The harness itself: a VCEK that states the report's TCB and chip verifies. */
	fake_make(&f, report + 0x180, report + 0x1A0);
	sign_report(report, f.vcek_key);
	int rc = fake_verify(&f, report, c, &e);
	ck_assert_msg(rc == 0, "%s", e.reason);
	fake_free(&f);
	/* Microcode 0x43 in the VCEK, 0x44 in the report. */
	uint8_t tcb[8];
	memcpy(tcb, report + 0x180, 8);
	tcb[7] = 0x43;
	fake_make(&f, tcb, report + 0x1A0);
	sign_report(report, f.vcek_key);
	atu_expect(fake_verify(&f, report, c, &e), &e, ERR_ATTESTATION, ATTEST_CHECK_TCB, "microcode");
	ck_assert_str_eq(e.field, "reported_tcb");
	fake_free(&f);
	/* A reserved TCB byte (spl_5) the report does not have. */
	memcpy(tcb, report + 0x180, 8);
	tcb[3] = 1;
	fake_make(&f, tcb, report + 0x1A0);
	sign_report(report, f.vcek_key);
	atu_expect(fake_verify(&f, report, c, &e), &e, ERR_ATTESTATION, ATTEST_CHECK_TCB, "spl_5");
	fake_free(&f);
	/* Another chip's hwID. */
	uint8_t hw[64];
	memcpy(hw, report + 0x1A0, 64);
	hw[63] ^= 1;
	fake_make(&f, report + 0x180, hw);
	sign_report(report, f.vcek_key);
	atu_expect(fake_verify(&f, report, c, &e), &e, ERR_ATTESTATION, ATTEST_CHECK_BINDING, "hwID");
	/* ...unless the host masked the chip id: then CHIP_ID is zero and not compared. */
	report[0x48] |= 2;
	memset(report + 0x1A0, 0, 64);
	sign_report(report, f.vcek_key);
	ck_assert_int_eq(fake_verify(&f, report, c, &e), 0);
	ck_assert(!c->has_chip_id);
	/* MASK_CHIP_ID with a non-zero CHIP_ID is malformed. */
	report[0x1A0] = 1;
	sign_report(report, f.vcek_key);
	atu_expect(fake_verify(&f, report, c, &e), &e, ERR_PARSE, ATTEST_CHECK_FORMAT,
		   "MASK_CHIP_ID");
	/* A version 3 report whose CPUID names a Genoa under a Milan VCEK. */
	report[0x1A0] = 0;
	report[0x48] = 0;
	memcpy(report + 0x1A0, hw, 64);
	report[0] = 3;
	report[0x188] = 0x19;
	report[0x189] = 0x11;
	sign_report(report, f.vcek_key);
	atu_expect(fake_verify(&f, report, c, &e), &e, ERR_ATTESTATION, ATTEST_CHECK_BINDING,
		   "CPUID");
	report[0x189] = 0x01; /* a Milan model: accepted */
	sign_report(report, f.vcek_key);
	ck_assert_int_eq(fake_verify(&f, report, c, &e), 0);
	ck_assert(c->snp.has_cpuid);
	/* A VLEK-signed report is refused by name. */
	report[0x1A0] = 0;
	report[0x48] = 1 << 2;
	sign_report(report, f.vcek_key);
	atu_expect(fake_verify(&f, report, c, &e), &e, ERR_ATTESTATION, ATTEST_CHECK_SIGNATURE,
		   "VLEK");
	fake_free(&f);
	free(c);
	atu_snp_free(&v);
}
END_TEST

START_TEST(test_parse_rejects_structure)
{
	struct atu_snp_vec v;
	atu_snp_load(&v, "genoa-v3-azure", "vcek.pem", "ask_genoa.pem");
	struct attest_snp s;
	struct attest_error e;
	ck_assert_int_eq(attest_snp_parse(v.report, v.report_len, &s, &e), 0);
	uint8_t *r = v.report;
	static const struct {
		size_t off;
		uint8_t val;
		const char *needle;
	} cases[] = {
		{0x00, 1, "version 1"},   {0x00, 6, "version 6"},   {0x0A, 0x01, "bit 17"},
		{0x0F, 0x01, "63:26"},     {0x34, 2, "algorithm"},   {0x48, 0x20, "31:5"},
		{0x48, 0x08, "reserved"},  {0x4C, 1, "0x4c"},        {0x18B, 1, "0x18b"},
		{0x1EB, 1, "0x1eb"},       {0x1F8, 1, "0x1f8"},      {0x2A0 + 48, 1, "0x2d0"},
		{0x2E8 + 71, 1, "0x32f"},  {0x4A0 - 1, 1, "0x49f"},
	};
	for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
		uint8_t save = r[cases[i].off];
		r[cases[i].off] = cases[i].val;
		int rc = attest_snp_parse(r, v.report_len, &s, &e);
		r[cases[i].off] = save;
		ck_assert_msg(rc == ERR_PARSE && strstr(e.reason, cases[i].needle),
			      "case %zu: rc %d \"%s\"", i, rc, e.reason);
	}
	atu_snp_free(&v);
}
END_TEST

Suite *suite(void)
{
	Suite *s = suite_create("attest_snp");
	TCase *tc = tcase_create("snp");
	tcase_set_timeout(tc, 120);
	tcase_add_test(tc, test_shipped_roots_equal_shared);
	tcase_add_test(tc, test_pinned_load_refuses_a_swapped_root);
	tcase_add_test(tc, test_milan_v2_verifies_with_fields);
	tcase_add_test(tc, test_genoa_v3_verifies_with_fields);
	tcase_add_test(tc, test_every_byte_of_the_signed_report_matters);
	tcase_add_test(tc, test_every_byte_of_the_vcek_matters);
	tcase_add_test(tc, test_wrong_root_expired_and_missing_chain);
	tcase_add_test(tc, test_generic_entry_finds_vcek_and_ask);
	tcase_add_test(tc, test_vcek_for_another_tcb_or_chip_is_refused);
	tcase_add_test(tc, test_parse_rejects_structure);
	suite_add_tcase(s, tc);
	return s;
}
