/* attest (TDX): the real quotes in ../shared/vectors/attest/tdx (v4 from dcap-qvl, v5
 * with a TD 1.5 body from go-tdx-guest) verify at a time inside their PCK chain's
 * validity with the fields PROVENANCE.md records; with Intel's collateral (TCB info, QE
 * identity, CRLs, all signature-checked) the v4 platform is placed on its TCB level;
 * one flipped bit anywhere in a quote is rejected; a wrong root, a time outside the
 * chain's validity, stale or tampered collateral and collateral for another platform
 * are each rejected with the check that failed. */
#include <stdlib.h>
#include <string.h>

#include "attest/attest.h"
#include "err/err.h"
#include "test_attest_util.h"
#include "testutil.h"

#define T_V4 1750377600 /* 2025-06-20: inside the v4 collateral's 06-19..07-19 */
#define T_V5 1769990400 /* 2026-02-02: inside the v5 TCB info's 02-01..03-03 */

static struct attest_roots *roots(void)
{
	return atu_roots(ATTEST_ROOTS_PINNED | ATTEST_ROOTS_ALL);
}

/* Collateral from files under vectors/attest/tdx/. */
static struct attest_tdx_collateral *coll(const char *const *files, size_t n)
{
	struct attest_tdx_collateral *c = NULL;
	ck_assert_int_eq(attest_tdx_collateral_new(&c), 0);
	for (size_t i = 0; i < n; i++) {
		char rel[256];
		size_t len;
		snprintf(rel, sizeof rel, "vectors/attest/tdx/%s", files[i]);
		uint8_t *d = atu_load(rel, &len);
		struct attest_error e;
		int rc = attest_tdx_collateral_add(c, d, len, &e);
		ck_assert_msg(rc == 0, "%s: %s", files[i], e.reason);
		free(d);
	}
	return c;
}

START_TEST(test_v4_verifies_with_fields)
{
	size_t len;
	uint8_t *q = atu_load("vectors/attest/tdx/v4-dcap-qvl/quote.bin", &len);
	ck_assert_uint_eq(len, 5006);
	struct attest_roots *r = roots();
	struct attest_claims *c = malloc(sizeof *c);
	struct attest_error e;
	int rc = attest_tdx_verify(r, q, len, NULL, T_V4, c, &e);
	atu_assert_verified(rc, &e);
	ck_assert_int_eq(c->platform, IDENT_PLATFORM_TDX);
	ck_assert_uint_eq(c->tdx.version, 4);
	ck_assert_uint_eq(c->tdx.tee_type, 0x81);
	ck_assert_uint_eq(c->tdx.body_type, 2);
	ck_assert(!c->tdx.has_td15);
	atu_assert_hex(c->tdx.mrtd, 48,
		       "91eb2b44d141d4ece09f0c75c2c53d247a3c68edd7fafe8a3520c942a604a407de03ae6dc5f87f27428b2538873118b7");
	ck_assert(memcmp(c->measurement, c->tdx.mrtd, 48) == 0);
	atu_assert_hex(c->report_data, 64,
		       "9a9d48e7f6799642d3d1b34e1e5e1742d4bb02dd6ddd551862c1211d35c304f9eca3efdbb481601c163cf52493d6e44aed55d51ec39b7e518fadb92c2b523f20");
	atu_assert_hex(c->tdx.td_attributes, 8, "0000001000000000");
	ck_assert(!c->debug);
	atu_assert_hex(c->tdx.fmspc, 6, "b0c06f000000");
	atu_assert_hex(c->tdx.tee_tcb_svn, 16, "06010300000000000000000000000000");
	ck_assert_uint_eq(c->tdx.pck_pce_svn, 11);
	ck_assert_uint_eq(c->tdx.qe_isv_prod_id, 2);
	ck_assert(!c->tdx.tcb_info_checked);
	ck_assert(!c->tdx.crls_checked);
	free(c);
	attest_roots_free(r);
	free(q);
}
END_TEST

START_TEST(test_v4_with_collateral_is_up_to_date)
{
	size_t len;
	uint8_t *q = atu_load("vectors/attest/tdx/v4-dcap-qvl/quote.bin", &len);
	struct attest_roots *r = roots();
	static const char *const files[] = {"v4-dcap-qvl/collateral.json"};
	struct attest_tdx_collateral *col = coll(files, 1);
	struct attest_claims *c = malloc(sizeof *c);
	struct attest_error e;
	int rc = attest_tdx_verify(r, q, len, col, T_V4, c, &e);
	atu_assert_verified(rc, &e);
	ck_assert(c->tdx.tcb_info_checked);
	ck_assert(c->tdx.qe_identity_checked);
	ck_assert(c->tdx.crls_checked);
	ck_assert_str_eq(c->tdx.tcb_status, "UpToDate");
	ck_assert_str_eq(c->tdx.qe_tcb_status, "UpToDate");
	ck_assert_int_eq(c->tdx.tcb_date, 1710288000); /* 2024-03-13 */
	json_t *j = attest_claims_json(c);
	ck_assert_str_eq(json_string_value(json_object_get(json_object_get(j, "tdx"), "tcb_status")),
			 "UpToDate");
	json_decref(j);
	/* A month later the collateral (and its CRLs) are stale. */
	rc = attest_tdx_verify(r, q, len, col, 1754006400 /* 2025-08-01 */, c, &e);
	atu_expect(rc, &e, ERR_ATTESTATION, ATTEST_CHECK_FRESHNESS, "not current");
	attest_tdx_collateral_free(col);
	/* Through the generic entry, as the command line gives files. */
	size_t clen;
	uint8_t *cj = atu_load("vectors/attest/tdx/v4-dcap-qvl/collateral.json", &clen);
	struct attest_blob blobs[] = {{cj, clen}};
	struct attest_evidence ev = {.platform = IDENT_PLATFORM_TDX, .data = q, .len = len,
				     .collateral = blobs, .n_collateral = 1};
	ck_assert_int_eq(attest_verify(r, &ev, T_V4, c, &e), 0);
	ck_assert_str_eq(c->tdx.tcb_status, "UpToDate");
	/* One changed character of the signed TCB info. */
	char *p = strstr((char *)cj, "\\\"tcbEvaluationDataNumber\\\":17");
	ck_assert_ptr_nonnull(p);
	p[strlen("\\\"tcbEvaluationDataNumber\\\":")] = '8';
	rc = attest_verify(r, &ev, T_V4, c, &e);
	atu_expect(rc, &e, ERR_ATTESTATION, ATTEST_CHECK_COLLATERAL, "TCB info signature");
	free(cj);
	free(c);
	attest_roots_free(r);
	free(q);
}
END_TEST

START_TEST(test_v5_verifies_with_fields_and_collateral)
{
	size_t len;
	uint8_t *q = atu_load("vectors/attest/tdx/v5-go-tdx-guest/quote.bin", &len);
	struct attest_roots *r = roots();
	struct attest_claims *c = malloc(sizeof *c);
	struct attest_error e;
	int rc = attest_tdx_verify(r, q, len, NULL, T_V5, c, &e);
	atu_assert_verified(rc, &e);
	ck_assert_uint_eq(c->tdx.version, 5);
	ck_assert_uint_eq(c->tdx.body_type, 3);
	ck_assert(c->tdx.has_td15);
	atu_assert_hex(c->tdx.mrtd, 48,
		       "7348651a34b2d2d3462822e3a750ec6110125f36757c78480bbfc69cc0d21fb001a1ced3ee19747dda8f750c3bc8f876");
	atu_assert_hex(c->report_data, 64,
		       "945eaacf5abc1f719d8666a942fda03d1edcb4490277396093dc5a5289ab9f1e094aed63060cd4a4933a4dd537ed1255c9c79ecb3ed82cd1b486233e31c25c3a");
	atu_assert_hex(c->tdx.td_attributes, 8, "0000001000000000");
	ck_assert(!c->debug);
	atu_assert_hex(c->tdx.fmspc, 6, "90c06f000000");
	atu_assert_hex(c->tdx.tee_tcb_svn2, 16, "0d010400000000000000000000000000");
	/* TCB info (PCS response body) with the TCB signing chain. */
	static const char *const tcb[] = {"v5-go-tdx-guest/tcbinfo.json",
					  "Intel_SGX_TCB_Signing_chain.pem"};
	struct attest_tdx_collateral *col = coll(tcb, 2);
	rc = attest_tdx_verify(r, q, len, col, T_V5, c, &e);
	atu_assert_verified(rc, &e);
	ck_assert_str_eq(c->tdx.tcb_status, "UpToDate");
	ck_assert(!c->tdx.qe_identity_checked);
	attest_tdx_collateral_free(col);
	/* The v5 sample QE identity expired in 2023, its root CRL in 2024. */
	static const char *const qe[] = {"v5-go-tdx-guest/tcbinfo.json", "v5-go-tdx-guest/qe_identity.json",
					 "Intel_SGX_TCB_Signing_chain.pem"};
	col = coll(qe, 3);
	rc = attest_tdx_verify(r, q, len, col, T_V5, c, &e);
	atu_expect(rc, &e, ERR_ATTESTATION, ATTEST_CHECK_FRESHNESS, "QE identity expired");
	attest_tdx_collateral_free(col);
	static const char *const crl[] = {"v5-go-tdx-guest/root_crl.der"};
	col = coll(crl, 1);
	rc = attest_tdx_verify(r, q, len, col, T_V5, c, &e);
	atu_expect(rc, &e, ERR_ATTESTATION, ATTEST_CHECK_FRESHNESS, "CRL of Intel SGX Root CA");
	/* In its own year the root CRL applies and revokes nothing. */
	attest_tdx_collateral_free(col);
	free(c);
	attest_roots_free(r);
	free(q);
}
END_TEST

START_TEST(test_collateral_for_another_platform_or_tampered)
{
	size_t len;
	uint8_t *q = atu_load("vectors/attest/tdx/v4-dcap-qvl/quote.bin", &len);
	struct attest_roots *r = roots();
	struct attest_claims *c = malloc(sizeof *c);
	struct attest_error e;
	/* The v5 platform's TCB info (FMSPC 90c06f) for the v4 platform (b0c06f). */
	static const char *const other[] = {"v5-go-tdx-guest/tcbinfo.json",
					    "Intel_SGX_TCB_Signing_chain.pem"};
	struct attest_tdx_collateral *col = coll(other, 2);
	int rc = attest_tdx_verify(r, q, len, col, T_V5, c, &e);
	atu_expect(rc, &e, ERR_ATTESTATION, ATTEST_CHECK_COLLATERAL, "another platform");
	attest_tdx_collateral_free(col);
	/* TCB info without its signing certificate. */
	static const char *const unsigned_[] = {"v5-go-tdx-guest/tcbinfo.json"};
	col = coll(unsigned_, 1);
	rc = attest_tdx_verify(r, q, len, col, T_V5, c, &e);
	atu_expect(rc, &e, ERR_ATTESTATION, ATTEST_CHECK_COLLATERAL, "no Intel SGX TCB Signing");
	attest_tdx_collateral_free(col);
	/* A PCS body with one byte changed inside the signed object. */
	size_t tlen;
	uint8_t *ti = atu_load("vectors/attest/tdx/v5-go-tdx-guest/tcbinfo.json", &tlen);
	char *p = strstr((char *)ti, "\"pceId\":\"0000\"");
	ck_assert_ptr_nonnull(p);
	p[10] = '1';
	ck_assert_int_eq(attest_tdx_collateral_new(&col), 0);
	ck_assert_int_eq(attest_tdx_collateral_add(col, ti, tlen, &e), 0);
	size_t slen;
	uint8_t *chain = atu_load("vectors/attest/tdx/Intel_SGX_TCB_Signing_chain.pem", &slen);
	ck_assert_int_eq(attest_tdx_collateral_add(col, chain, slen, &e), 0);
	rc = attest_tdx_verify(r, q, len, col, T_V5, c, &e);
	atu_expect(rc, &e, ERR_ATTESTATION, ATTEST_CHECK_COLLATERAL, "TCB info signature");
	/* A second TCB info, garbage, and an empty file are refused when added. */
	ck_assert_int_eq(attest_tdx_collateral_add(col, ti, tlen, &e), ERR_CONFLICT);
	ck_assert_int_eq(attest_tdx_collateral_add(col, (const uint8_t *)"hello", 5, &e), ERR_PARSE);
	ck_assert_int_eq(attest_tdx_collateral_add(col, (const uint8_t *)"{\"a\":1}", 7, &e),
			 ERR_PARSE);
	ck_assert_int_eq(attest_tdx_collateral_add(col, ti, 0, &e), ERR_PARSE);
	attest_tdx_collateral_free(col);
	free(chain);
	free(ti);
	free(c);
	attest_roots_free(r);
	free(q);
}
END_TEST

START_TEST(test_wrong_root_and_expired_chain)
{
	size_t len, rlen;
	uint8_t *q = atu_load("vectors/attest/tdx/v4-dcap-qvl/quote.bin", &len);
	uint8_t *aws = atu_load("vectors/attest/nitro/aws_nitro_root.pem", &rlen);
	struct attest_claims *c = malloc(sizeof *c);
	struct attest_error e;
	struct attest_roots *bad = NULL;
	ck_assert_int_eq(attest_roots_new(&bad), 0);
	ck_assert_int_eq(attest_roots_set(bad, ATTEST_ROOT_INTEL_SGX, aws, rlen), 0);
	atu_expect(attest_tdx_verify(bad, q, len, NULL, T_V4, c, &e), &e, ERR_ATTESTATION,
		   ATTEST_CHECK_CHAIN, "PCK chain");
	attest_roots_free(bad);
	struct attest_roots *r = roots();
	/* The PCK Platform CA expires on 2033-05-21; the v4 PCK leaf starts 2025-02-06. */
	atu_expect(attest_tdx_verify(r, q, len, NULL, 2051222400 /* 2035-01-01 */, c, &e), &e,
		   ERR_ATTESTATION, ATTEST_CHECK_CHAIN, "expired");
	atu_expect(attest_tdx_verify(r, q, len, NULL, 1735689600 /* 2025-01-01 */, c, &e), &e,
		   ERR_ATTESTATION, ATTEST_CHECK_CHAIN, "not yet valid");
	/* Padding after the signature data must be zero; a short quote is malformed. */
	q[len - 1] = 1;
	atu_expect(attest_tdx_verify(r, q, len, NULL, T_V4, c, &e), &e, ERR_PARSE,
		   ATTEST_CHECK_FORMAT, "after the signature data");
	q[len - 1] = 0;
	atu_expect(attest_tdx_verify(r, q, 600, NULL, T_V4, c, &e), &e, ERR_PARSE,
		   ATTEST_CHECK_FORMAT, "TDX quote");
	/* Without padding the same quote verifies (4936 bytes of content). */
	ck_assert_int_eq(attest_tdx_verify(r, q, 4936, NULL, T_V4, c, &e), 0);
	free(aws);
	free(c);
	attest_roots_free(r);
	free(q);
}
END_TEST

struct quote {
	struct attest_roots *r;
	const uint8_t *data;
	size_t len;
	int64_t at;
};

static int quote_verify(void *ctx, struct attest_claims *c, struct attest_error *e)
{
	struct quote *q = ctx;
	return attest_tdx_verify(q->r, q->data, q->len, NULL, q->at, c, e);
}

static void flip_all(const char *rel, int64_t at)
{
	struct quote q = {.r = roots(), .at = at};
	uint8_t *buf = atu_load(rel, &q.len);
	q.data = buf;
	struct atu_flips t;
	atu_flip_each(buf, 0, q.len, quote_verify, &q,
		      ATU_CHECK(ATTEST_CHECK_SIGNATURE) | ATU_CHECK(ATTEST_CHECK_CHAIN) |
			      ATU_CHECK(ATTEST_CHECK_BINDING),
		      &t);
	/* The header and body (632 or 702 bytes) fail at the quote signature. */
	ck_assert_uint_ge(t.check[ATTEST_CHECK_SIGNATURE], 600);
	ck_assert_uint_gt(t.check[ATTEST_CHECK_CHAIN], 0);
	ck_assert_uint_gt(t.check[ATTEST_CHECK_BINDING], 0);
	attest_roots_free(q.r);
	free(buf);
}

START_TEST(test_every_byte_of_v4_matters)
{
	flip_all("vectors/attest/tdx/v4-dcap-qvl/quote.bin", T_V4);
}
END_TEST

START_TEST(test_every_byte_of_v5_matters)
{
	flip_all("vectors/attest/tdx/v5-go-tdx-guest/quote.bin", T_V5);
}
END_TEST

Suite *suite(void)
{
	Suite *s = suite_create("attest_tdx");
	TCase *tc = tcase_create("tdx");
	tcase_set_timeout(tc, 120);
	tcase_add_test(tc, test_v4_verifies_with_fields);
	tcase_add_test(tc, test_v4_with_collateral_is_up_to_date);
	tcase_add_test(tc, test_v5_verifies_with_fields_and_collateral);
	tcase_add_test(tc, test_collateral_for_another_platform_or_tampered);
	tcase_add_test(tc, test_wrong_root_and_expired_chain);
	tcase_add_test(tc, test_every_byte_of_v4_matters);
	tcase_add_test(tc, test_every_byte_of_v5_matters);
	suite_add_tcase(s, tc);
	return s;
}
