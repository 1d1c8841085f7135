/* attest (policy): a policy file is read strictly (a typo, a wrong length, an unknown
 * role or platform is an error naming the key), and decisions on real verified claims
 * are right and say why: a debuggable guest under a no-debug rule, a measurement not
 * listed, a TCB below the minimum, a TDX status not allowed, stale evidence, a platform
 * the role may not use, simulated evidence outside development, and evidence that does
 * not commit to the expected keys and nonce (a wrong nonce) are each refused with their
 * own check and field. */
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "attest/attest.h"
#include "err/err.h"
#include "log/log.h"
#include "test_attest_util.h"
#include "testutil.h"

#define T_MILAN 1704067200
#define T_GENOA 1748736000
#define T_PROD 1725721200
#define T_DEBUG 1665583200
#define T_V4 1750377600

#define MILAN_M "b07af9620f3b839b47996422ddec6058338951d984e312115131ea82705eaf5b6bdf8a9ece31a5a608eb0cf2e4872b01"
#define GENOA_M "f57dc09a507c6ecd82369bffb600f0003792f4d99bc26e985ec0c266fc34faf3706faf814c9e61065768a6ff917c89ae"
#define NITRO_PCR0 "e72a46ca80a260fb044a125442f0c7e331813bcbaf9724d9f3857758992766f2d65710a27aa94ae3949dd54e7c9fe86a"
#define NITRO_PCR1 "0343b056cd8485ca7890ddd833476d78460aed2aa161548e4e26bedf321726696257d623e8805f3f605946b3d8b0c6aa"
#define ZERO48 "000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000"
#define TDX_MRTD "91eb2b44d141d4ece09f0c75c2c53d247a3c68edd7fafe8a3520c942a604a407de03ae6dc5f87f27428b2538873118b7"

static struct attest_roots *roots(void)
{
	return atu_roots(ATTEST_ROOTS_PINNED);
}

static struct attest_policy *policy(const char *json)
{
	struct attest_policy *p = NULL;
	struct jspec_error e;
	int rc = attest_policy_parse(&p, json, strlen(json), &e);
	ck_assert_msg(rc == 0, "policy refused: %s", e.detail);
	return p;
}

static void claims_snp(const char *dir, const char *vcek, const char *ask, int64_t at,
		       struct attest_claims *c)
{
	struct atu_snp_vec v;
	atu_snp_load(&v, dir, vcek, ask);
	struct attest_roots *r = roots();
	struct attest_error e;
	ck_assert_int_eq(atu_snp_verify(r, &v, at, c, &e), 0);
	attest_roots_free(r);
	atu_snp_free(&v);
}

static void claims_nitro(const char *rel, int64_t at, struct attest_claims *c)
{
	size_t len;
	uint8_t *doc = atu_load(rel, &len);
	struct attest_roots *r = roots();
	struct attest_error e;
	ck_assert_int_eq(attest_nitro_verify(r, doc, len, at, c, &e), 0);
	attest_roots_free(r);
	free(doc);
}

static void claims_tdx(bool with_collateral, struct attest_claims *c)
{
	size_t len, clen;
	uint8_t *q = atu_load("vectors/attest/tdx/v4-dcap-qvl/quote.bin", &len);
	uint8_t *cj = atu_load("vectors/attest/tdx/v4-dcap-qvl/collateral.json", &clen);
	struct attest_blob blobs[] = {{cj, clen}};
	struct attest_evidence ev = {.platform = IDENT_PLATFORM_TDX, .data = q, .len = len,
				     .collateral = blobs, .n_collateral = with_collateral ? 1 : 0};
	struct attest_roots *r = roots();
	struct attest_error e;
	ck_assert_int_eq(attest_verify(r, &ev, T_V4, c, &e), 0);
	attest_roots_free(r);
	free(q);
	free(cj);
}

static void expect(int rc, const struct attest_error *e, enum attest_check check,
		   const char *field)
{
	ck_assert_msg(rc == ERR_ATTESTATION && e->check == check && strcmp(e->field, field) == 0,
		      "rc %d check %s field %s (%s); wanted %s %s", rc, attest_check_name(e->check),
		      e->field, e->reason, attest_check_name(check), field);
	ck_assert(e->reason[0]);
}

START_TEST(test_policy_file_is_strict)
{
	static const struct {
		const char *json;
		int code;
		const char *field;
	} bad[] = {
		{"{\"version\":2,\"roles\":{}}", ERR_RANGE, "version"},
		{"{\"roles\":{}}", ERR_MISSING, "version"},
		{"{\"version\":1,\"roles\":{\"wizard\":{}}}", ERR_UNKNOWN_FIELD, "roles.wizard"},
		{"{\"version\":1,\"roles\":{\"party\":{\"sgx\":{}}}}", ERR_UNKNOWN_FIELD,
		 "roles.party.sgx"},
		{"{\"version\":1,\"roles\":{\"party\":{\"sev-snp\":{}}}}", ERR_MISSING,
		 "roles.party.sev-snp.measurements"},
		{"{\"version\":1,\"roles\":{\"party\":{\"sev-snp\":{\"measurements\":[\"" MILAN_M
		 "\"],\"debgu\":true}}}}",
		 ERR_UNKNOWN_FIELD, "roles.party.sev-snp.debgu"},
		{"{\"version\":1,\"roles\":{\"party\":{\"tdx\":{\"measurements\":[\"abcd\"]}}}}",
		 ERR_RANGE, "roles.party.tdx.measurements"},
		{"{\"version\":1,\"roles\":{\"party\":{\"tdx\":{\"measurements\":[\"" TDX_MRTD
		 "\"],\"tcb_status\":[\"Fine\"]}}}}",
		 ERR_RANGE, "roles.party.tdx.tcb_status"},
		{"{\"version\":1,\"roles\":{\"party\":{\"sev-snp\":{\"measurements\":[\"" MILAN_M
		 "\"],\"min_tcb\":{\"snp\":256}}}}}",
		 ERR_RANGE, "roles.party.sev-snp.min_tcb.snp"},
		{"{\"version\":1,\"roles\":{\"party\":{\"nitro\":{\"measurements\":[\"zz" NITRO_PCR0
		 "\"]}}}}",
		 ERR_RANGE, "roles.party.nitro.measurements"},
		{"{\"version\":1,\"roles\":{\"party\":{\"nitro\":{\"measurements\":[\"" NITRO_PCR0
		 "\"],\"min_tcb\":{}}}}}",
		 ERR_UNKNOWN_FIELD, "roles.party.nitro.min_tcb"},
		{"not json", ERR_PARSE, ""},
	};
	for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
		struct attest_policy *p = NULL;
		struct jspec_error e;
		memset(&e, 0, sizeof e);
		int rc = attest_policy_parse(&p, bad[i].json, strlen(bad[i].json), &e);
		ck_assert_msg(rc == bad[i].code && strcmp(e.field, bad[i].field) == 0,
			      "case %zu: rc %d field \"%s\" (%s)", i, rc, e.field, e.detail);
		ck_assert_ptr_null(p);
	}
	/* From a file; a missing file is ERR_IO. */
	char dir[512], path[600];
	tu_tmpdir(dir, sizeof dir);
	snprintf(path, sizeof path, "%s/policy.json", dir);
	const char *ok = "{\"version\":1,\"roles\":{\"party\":{\"simulated\":{}}}}";
	ck_assert_int_eq(tu_write_file(path, ok, strlen(ok)), 0);
	struct attest_policy *p = NULL;
	struct jspec_error e;
	ck_assert_int_eq(attest_policy_load(&p, path, &e), 0);
	attest_policy_free(p);
	snprintf(path, sizeof path, "%s/none.json", dir);
	ck_assert_int_eq(attest_policy_load(&p, path, &e), ERR_IO);
	tu_rmrf(dir);
}
END_TEST

START_TEST(test_snp_debug_measurement_and_tcb)
{
	struct attest_claims *milan = malloc(sizeof *milan), *genoa = malloc(sizeof *genoa);
	claims_snp("milan-v2", "vcek.der", "ask_milan.pem", T_MILAN, milan);
	claims_snp("genoa-v3-azure", "vcek.pem", "ask_genoa.pem", T_GENOA, genoa);
	struct attest_error e;
	struct attest_policy *p = policy(
		"{\"version\":1,\"roles\":{\"party\":{\"sev-snp\":{\"measurements\":[\"" MILAN_M
		"\"]}},\"dealer\":{\"sev-snp\":{\"measurements\":[\"" MILAN_M "\",\"" GENOA_M
		"\"],\"debug\":true,\"min_tcb\":{\"bootloader\":2,\"snp\":5,\"microcode\":68}}}}}");
	/* The Milan guest is debuggable (policy bit 19): refused where debug is not allowed. */
	expect(attest_policy_check(p, IDENT_ROLE_PARTY, milan, T_MILAN, NULL, &e), &e,
	       ATTEST_CHECK_POLICY, "debug");
	ck_assert_ptr_nonnull(strstr(e.reason, "debug"));
	ck_assert_int_eq(attest_policy_check(p, IDENT_ROLE_DEALER, milan, T_MILAN, NULL, &e), 0);
	/* The Genoa measurement is not listed for party. */
	expect(attest_policy_check(p, IDENT_ROLE_PARTY, genoa, T_GENOA, NULL, &e), &e,
	       ATTEST_CHECK_POLICY, "measurement");
	ck_assert_int_eq(attest_policy_check(p, IDENT_ROLE_DEALER, genoa, T_GENOA, NULL, &e), 0);
	/* No rule for gateway at all. */
	expect(attest_policy_check(p, IDENT_ROLE_GATEWAY, genoa, T_GENOA, NULL, &e), &e,
	       ATTEST_CHECK_POLICY, "platform");
	json_t *pj = attest_problem(&e, NULL);
	ck_assert_str_eq(json_string_value(json_object_get(pj, "check")), "policy");
	ck_assert_str_eq(json_string_value(json_object_get(pj, "field")), "platform");
	json_decref(pj);
	attest_policy_free(p);
	/* Minimum TCB: Milan reports snp 5, microcode 0x44. */
	p = policy("{\"version\":1,\"roles\":{\"party\":{\"sev-snp\":{\"measurements\":[\"" MILAN_M
		   "\"],\"debug\":true,\"min_tcb\":{\"snp\":6}}}}}");
	expect(attest_policy_check(p, IDENT_ROLE_PARTY, milan, T_MILAN, NULL, &e), &e,
	       ATTEST_CHECK_TCB, "min_tcb.snp");
	attest_policy_free(p);
	p = policy("{\"version\":1,\"roles\":{\"party\":{\"sev-snp\":{\"measurements\":[\"" MILAN_M
		   "\"],\"debug\":true,\"min_tcb\":{\"microcode\":69}}}}}");
	expect(attest_policy_check(p, IDENT_ROLE_PARTY, milan, T_MILAN, NULL, &e), &e,
	       ATTEST_CHECK_TCB, "min_tcb.microcode");
	attest_policy_free(p);
	/* max_age needs a time: the SNP report has none until the caller supplies the
	 * time of the nonce it bound. */
	p = policy("{\"version\":1,\"roles\":{\"party\":{\"sev-snp\":{\"measurements\":[\"" GENOA_M
		   "\"],\"max_age_seconds\":60}}}}");
	expect(attest_policy_check(p, IDENT_ROLE_PARTY, genoa, T_GENOA, NULL, &e), &e,
	       ATTEST_CHECK_FRESHNESS, "max_age_seconds");
	genoa->has_time = true;
	genoa->time = T_GENOA - 30;
	ck_assert_int_eq(attest_policy_check(p, IDENT_ROLE_PARTY, genoa, T_GENOA, NULL, &e), 0);
	genoa->time = T_GENOA - 61;
	expect(attest_policy_check(p, IDENT_ROLE_PARTY, genoa, T_GENOA, NULL, &e), &e,
	       ATTEST_CHECK_FRESHNESS, "max_age_seconds");
	attest_policy_free(p);
	free(milan);
	free(genoa);
}
END_TEST

START_TEST(test_nitro_production_debug_and_age)
{
	struct attest_claims *prod = malloc(sizeof *prod), *dbg = malloc(sizeof *dbg);
	claims_nitro("vectors/attest/nitro/production-2024/document.cose", T_PROD, prod);
	claims_nitro("vectors/attest/nitro/debug-2022/document.cose", T_DEBUG, dbg);
	struct attest_error e;
	struct attest_policy *p = policy(
		"{\"version\":1,\"roles\":{\"party\":{\"nitro\":{\"measurements\":[\"" NITRO_PCR0
		"\",\"" ZERO48 "\"],\"pcr1\":[\"" NITRO_PCR1 "\"],\"max_age_seconds\":3600}}}}");
	ck_assert_int_eq(attest_policy_check(p, IDENT_ROLE_PARTY, prod, T_PROD, NULL, &e), 0);
	/* The debug enclave (PCR0-2 zero) under a production rule, even with its zero PCR0
	 * listed. */
	expect(attest_policy_check(p, IDENT_ROLE_PARTY, dbg, T_DEBUG, NULL, &e), &e,
	       ATTEST_CHECK_POLICY, "debug");
	/* Two hours after the document. */
	expect(attest_policy_check(p, IDENT_ROLE_PARTY, prod, T_PROD + 7200, NULL, &e), &e,
	       ATTEST_CHECK_FRESHNESS, "max_age_seconds");
	/* Checked before it was made. */
	expect(attest_policy_check(p, IDENT_ROLE_PARTY, prod, T_PROD - 7200, NULL, &e), &e,
	       ATTEST_CHECK_FRESHNESS, "max_age_seconds");
	attest_policy_free(p);
	p = policy("{\"version\":1,\"roles\":{\"party\":{\"nitro\":{\"measurements\":[\"" NITRO_PCR0
		   "\"],\"pcr1\":[\"" ZERO48 "\"]}}}}");
	expect(attest_policy_check(p, IDENT_ROLE_PARTY, prod, T_PROD, NULL, &e), &e,
	       ATTEST_CHECK_POLICY, "pcr1");
	attest_policy_free(p);
	free(prod);
	free(dbg);
}
END_TEST

START_TEST(test_tdx_status_and_svn)
{
	struct attest_claims *bare = malloc(sizeof *bare), *full = malloc(sizeof *full);
	claims_tdx(false, bare);
	claims_tdx(true, full);
	struct attest_error e;
	struct attest_policy *p = policy(
		"{\"version\":1,\"roles\":{\"party\":{\"tdx\":{\"measurements\":[\"" TDX_MRTD
		"\"],\"tcb_status\":[\"UpToDate\",\"SWHardeningNeeded\"]}}}}");
	expect(attest_policy_check(p, IDENT_ROLE_PARTY, bare, T_V4, NULL, &e), &e, ATTEST_CHECK_TCB,
	       "tcb_status");
	ck_assert_int_eq(attest_policy_check(p, IDENT_ROLE_PARTY, full, T_V4, NULL, &e), 0);
	attest_policy_free(p);
	p = policy("{\"version\":1,\"roles\":{\"party\":{\"tdx\":{\"measurements\":[\"" TDX_MRTD
		   "\"],\"tcb_status\":[\"OutOfDate\"]}}}}");
	expect(attest_policy_check(p, IDENT_ROLE_PARTY, full, T_V4, NULL, &e), &e, ATTEST_CHECK_TCB,
	       "tcb_status");
	attest_policy_free(p);
	/* TEE_TCB_SVN is 06 01 03 ...: a minimum of 06 02 is not reached. */
	p = policy("{\"version\":1,\"roles\":{\"party\":{\"tdx\":{\"measurements\":[\"" TDX_MRTD
		   "\"],\"min_tee_tcb_svn\":\"06020000000000000000000000000000\"}}}}");
	expect(attest_policy_check(p, IDENT_ROLE_PARTY, bare, T_V4, NULL, &e), &e, ATTEST_CHECK_TCB,
	       "min_tee_tcb_svn");
	attest_policy_free(p);
	p = policy("{\"version\":1,\"roles\":{\"party\":{\"tdx\":{\"measurements\":[\"" TDX_MRTD
		   "\"],\"min_tee_tcb_svn\":\"06010300000000000000000000000000\"}}}}");
	ck_assert_int_eq(attest_policy_check(p, IDENT_ROLE_PARTY, bare, T_V4, NULL, &e), 0);
	/* The TDX rule says nothing about SEV-SNP. */
	struct attest_claims *milan = malloc(sizeof *milan);
	claims_snp("milan-v2", "vcek.der", "ask_milan.pem", T_MILAN, milan);
	expect(attest_policy_check(p, IDENT_ROLE_PARTY, milan, T_MILAN, NULL, &e), &e,
	       ATTEST_CHECK_POLICY, "platform");
	attest_policy_free(p);
	free(milan);
	free(bare);
	free(full);
}
END_TEST

START_TEST(test_simulated_and_binding)
{
	/* A requester's keys and the service's nonce. */
	uint8_t spki[91], x25519[32], nonce[32], bound[64], other[64];
	memset(spki, 0x30, sizeof spki);
	memset(x25519, 7, sizeof x25519);
	memset(nonce, 9, sizeof nonce);
	ck_assert_int_eq(attest_binding(spki, sizeof spki, x25519, nonce, sizeof nonce, bound), 0);
	nonce[0] ^= 1;
	ck_assert_int_eq(attest_binding(spki, sizeof spki, x25519, nonce, sizeof nonce, other), 0);
	ck_assert(memcmp(bound, other, 64) != 0);
	ck_assert_int_eq(attest_binding(spki, sizeof spki, x25519, nonce, 8, other), ERR_INVALID);
	uint8_t m[32];
	memset(m, 0xab, sizeof m);
	char doc[512];
	ck_assert_int_eq(attest_simulated_make(m, sizeof m, bound, doc, sizeof doc), 0);
	struct attest_claims *c = malloc(sizeof *c);
	struct attest_error e;
	struct attest_evidence ev = {.platform = IDENT_PLATFORM_SIMULATED,
				     .data = (const uint8_t *)doc, .len = strlen(doc)};
	ck_assert_int_eq(attest_verify(NULL, &ev, T_PROD, c, &e), 0);
	ck_assert_int_eq(c->platform, IDENT_PLATFORM_SIMULATED);
	/* Production: simulated evidence is not allowed at all. */
	struct attest_policy *prod = policy(
		"{\"version\":1,\"roles\":{\"party\":{\"nitro\":{\"measurements\":[\"" NITRO_PCR0
		"\"]}}}}");
	expect(attest_policy_check(prod, IDENT_ROLE_PARTY, c, T_PROD, bound, &e), &e,
	       ATTEST_CHECK_POLICY, "platform");
	attest_policy_free(prod);
	/* Development: allowed, with a warning on every acceptance. */
	struct attest_policy *dev =
		policy("{\"version\":1,\"roles\":{\"party\":{\"simulated\":{}}}}");
	int fds[2];
	ck_assert_int_eq(pipe(fds), 0);
	log_set_fd(fds[1]);
	int rc = attest_policy_check(dev, IDENT_ROLE_PARTY, c, T_PROD, bound, &e);
	log_set_fd(2);
	close(fds[1]);
	char buf[2048] = {0};
	ck_assert_int_gt(read(fds[0], buf, sizeof buf - 1), 0);
	close(fds[0]);
	ck_assert_int_eq(rc, 0);
	ck_assert_ptr_nonnull(strstr(buf, "level=warn"));
	ck_assert_ptr_nonnull(strstr(buf, "attest.simulated_accepted"));
	/* A wrong nonce: the evidence commits to another binding. */
	expect(attest_policy_check(dev, IDENT_ROLE_PARTY, c, T_PROD, other, &e), &e,
	       ATTEST_CHECK_BINDING, "report_data");
	attest_policy_free(dev);
	/* Malformed simulated evidence. */
	ev.len = 5;
	ck_assert_int_eq(attest_verify(NULL, &ev, T_PROD, c, &e), ERR_PARSE);
	free(c);
}
END_TEST

Suite *suite(void)
{
	Suite *s = suite_create("attest_policy");
	TCase *tc = tcase_create("policy");
	tcase_set_timeout(tc, 60);
	tcase_add_test(tc, test_policy_file_is_strict);
	tcase_add_test(tc, test_snp_debug_measurement_and_tcb);
	tcase_add_test(tc, test_nitro_production_debug_and_age);
	tcase_add_test(tc, test_tdx_status_and_svn);
	tcase_add_test(tc, test_simulated_and_binding);
	suite_add_tcase(s, tc);
	return s;
}
