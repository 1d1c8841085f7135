/* mpc reciprocal and reciprocal square root against double precision over their whole
 * domain [2^-16, 2^16] at f = 16 and N = 2, 3 and 5: the edges, one unit inside and
 * outside them, zero, negative and far-out values (which must give exactly the
 * saturated value), every power of two of the domain and its neighbours one unit
 * away (the alignment boundaries of the look-up; MP-SPDZ's InvertSqrt returned twice
 * the right value at some of them), and a log-uniform grid over the rest. The error
 * bounds of docs/PROTOCOL.md are asserted for every point and party, and so are the
 * rounds (12) and the bytes each party sends. A reciprocal and a rsqrt queued on one
 * batch take 12 rounds together. Every f from 8 to 24: test_mpc_approx_f. */
#include <stdio.h>
#include <string.h>

#include "err/err.h"
#include "log/log.h"
#include "test_mpc_harness.h"
#include "testutil.h"

static const unsigned NS[] = {2, 3, 5};

#define NP 180

static void domain(unsigned n, enum mpch_op op)
{
	struct mpch_approx g = {.op = {op}, .nops = 1};
	mpch_grid(&g, op, 16, NP, 3, 0x5EED + 31 * n + op);
	mpch_approx_run(n, &g, 1024);
	/* every party sends its share of each opened value to each peer: 6728 bytes per
	 * element and peer for recip, 7744 for rsqrt (docs/PROTOCOL.md) */
	for (unsigned i = 0; i < n; i++)
		ck_assert_uint_eq(g.bytes[i], (uint64_t)(op == MPCH_RECIP ? 6728 : 7744) * NP * (n - 1));
	mpch_grid_free(&g);
}

START_TEST(test_recip_domain) { domain(NS[_i], MPCH_RECIP); }
END_TEST

START_TEST(test_rsqrt_domain) { domain(NS[_i], MPCH_RSQRT); }
END_TEST

START_TEST(test_recip_rsqrt_one_batch)
{
	struct mpch_approx g = {.op = {MPCH_RECIP, MPCH_RSQRT}, .nops = 2};
	mpch_grid(&g, MPCH_RECIP, 16, 72, 1, 0xB0B);
	mpch_approx_run(3, &g, 1024); /* 12 rounds for both */
	mpch_grid_free(&g);
}
END_TEST

Suite *suite(void)
{
	log_set_level(LOG_LEVEL_ERROR);
	Suite *s = suite_create("mpc_recip");
	TCase *tc = tcase_create("recip");
	tcase_set_timeout(tc, 300); /* a hang guard: sanitizer builds are slow */
	tcase_add_loop_test(tc, test_recip_domain, 0, (int)(sizeof NS / sizeof NS[0]));
	tcase_add_loop_test(tc, test_rsqrt_domain, 0, (int)(sizeof NS / sizeof NS[0]));
	tcase_add_test(tc, test_recip_rsqrt_one_batch);
	suite_add_tcase(s, tc);
	return s;
}
