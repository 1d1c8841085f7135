/* mpc approximations at every f from 8 to 24 (N = 3): exp, reciprocal, rsqrt, SiLU and
 * exp_neg each on a grid over its whole domain with the edges, points just and far outside,
 * and for recip and rsqrt every power of two of the domain (where the look-up changes
 * alignment); every output held to the
 * bound of docs/PROTOCOL.md at that f (or to the exact saturated value), and the
 * rounds to the stated count (exp 11 for f <= 14, recip and rsqrt 13 for f >= 18). The
 * dense grids at f = 16 and N = 2, 3, 5 are in test_mpc_approx, test_mpc_recip and
 * test_mpc_silu. */
#include <stdio.h>
#include <string.h>

#include "err/err.h"
#include "log/log.h"
#include "test_mpc_harness.h"
#include "testutil.h"

static void sweep(enum mpch_op op, size_t np)
{
	for (unsigned f = RING_FXP_MIN_F; f <= RING_FXP_MAX_F; f++) {
		struct mpch_approx g = {.op = {op}, .nops = 1};
		mpch_grid(&g, op, f, np, 1, 0xF00Du * f + op);
		mpch_approx_run(3, &g, 512);
		mpch_grid_free(&g);
	}
}

START_TEST(test_exp_every_f) { sweep(MPCH_EXP, 80); }
END_TEST

START_TEST(test_recip_every_f) { sweep(MPCH_RECIP, 60); }
END_TEST

START_TEST(test_rsqrt_every_f) { sweep(MPCH_RSQRT, 60); }
END_TEST

START_TEST(test_silu_every_f) { sweep(MPCH_SILU, 120); }
END_TEST

START_TEST(test_exp_neg_every_f) { sweep(MPCH_EXPNEG, 120); }
END_TEST

Suite *suite(void)
{
	log_set_level(LOG_LEVEL_ERROR);
	Suite *s = suite_create("mpc_approx_f");
	TCase *tc = tcase_create("every_f");
	tcase_set_timeout(tc, 300); /* a hang guard: sanitizer builds are slow */
	tcase_add_test(tc, test_exp_every_f);
	tcase_add_test(tc, test_recip_every_f);
	tcase_add_test(tc, test_rsqrt_every_f);
	tcase_add_test(tc, test_silu_every_f);
	tcase_add_test(tc, test_exp_neg_every_f);
	suite_add_tcase(s, tc);
	return s;
}
