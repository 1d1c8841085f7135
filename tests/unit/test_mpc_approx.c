/* mpc exp against double precision over its whole domain [MPC_EXP_LO, MPC_EXP_HI] (a
 * dense grid at random offsets, the edges, one unit inside and outside them, and
 * points far outside, where the result must be e^LO or e^HI within the bound) with the
 * error bound of docs/PROTOCOL.md asserted for every point, the rounds (12) and bytes
 * (1976 per value and peer), at N = 2, 3 and 5, f = 16. Every f from 8 to 24:
 * test_mpc_approx_f. */
#include <stdio.h>
#include <string.h>

#include "err/err.h"
#include "log/log.h"
#include "test_mpc_harness.h"
#include "testutil.h"

static const unsigned NS[] = {2, 3, 5};

#define NE 400

START_TEST(test_exp_domain_n)
{
	unsigned n = NS[_i];
	struct mpch_approx g = {.op = {MPCH_EXP}, .nops = 1};
	mpch_grid(&g, MPCH_EXP, 16, NE, 0, 0xE4Bu + n);
	mpch_approx_run(n, &g, 1024);
	for (unsigned i = 0; i < n; i++)
		ck_assert_uint_eq(g.bytes[i], (uint64_t)1976 * NE * (n - 1));
	mpch_grid_free(&g);
}
END_TEST

Suite *suite(void)
{
	log_set_level(LOG_LEVEL_ERROR);
	Suite *s = suite_create("mpc_approx");
	TCase *tc = tcase_create("approx");
	tcase_set_timeout(tc, 60);
	tcase_add_loop_test(tc, test_exp_domain_n, 0, (int)(sizeof NS / sizeof NS[0]));
	suite_add_tcase(s, tc);
	return s;
}
