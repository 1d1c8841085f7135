/* mpc approximations: exp against double precision over its whole domain
 * [MPC_EXP_LO, MPC_EXP_HI] (a dense grid, the edges, and just inside and outside
 * them) with the error bound of docs/PROTOCOL.md asserted, saturation outside the
 * domain, and the round count, at N = 2, 3, 5 and for every f from 8 to 24. */
#include <math.h>
#include <stdio.h>
#include <string.h>

#include "err/err.h"
#include "log/log.h"
#include "test_mpc_harness.h"
#include "testutil.h"

static const unsigned NS[] = {2, 3, 5};

#define NE 400

struct eprog {
	unsigned f;
	size_t n;
	double xd[NE];
	ring64_t x[NE];
	ring64_t out[MPC_MAX_PARTIES][NE];
	uint64_t rounds[MPC_MAX_PARTIES];
};

static int prog_exp(struct mpch_party *pp, void *arg)
{
	struct eprog *g = arg;
	struct mpc *p = pp->mpc;
	mpc_share x[NE], y[NE];
	struct mpc_stats a, b;
	int rc = mpc_input(p, 0, pp->id == 0 ? g->x : NULL, x, g->n);
	if (rc == 0)
		rc = mpc_prefill(p, MPC_PREP_TRIPLE, 0, 160 * g->n); /* < 150 each */
	if (rc == 0)
		rc = mpc_prefill(p, MPC_PREP_CMP, 0, 3 * g->n);
	if (rc == 0)
		rc = mpc_prefill(p, MPC_PREP_TRUNC, g->f, 4 * g->n);
	if (rc == 0) /* check what the prefill opened, so that no check falls inside */
		rc = mpc_check(p);
	if (rc != 0)
		return rc;
	mpc_get_stats(p, &a);
	rc = mpc_exp(p, y, x, g->n);
	mpc_get_stats(p, &b);
	g->rounds[pp->id] = b.rounds - a.rounds;
	if (rc == 0)
		rc = mpc_reveal(p, g->out[pp->id], y, g->n);
	return rc;
}

/* The grid: the whole domain in equal steps, its edges and their neighbours, and
 * points outside on both sides (saturation). */
static void exp_inputs(struct eprog *g, unsigned f, size_t n)
{
	memset(g, 0, sizeof *g);
	g->f = f;
	g->n = n;
	const double lo = MPC_EXP_LO, hi = MPC_EXP_HI, u = ldexp(1.0, -(int)f);
	const double extra[] = {lo, hi, lo - u, hi + u, lo + u, hi - u, 0, -u, u, -1000, 1000,
				-33, 9, 50, -1e6, ldexp(1.0, 40 - (int)f)};
	size_t k = 0;
	for (size_t e = 0; e < sizeof extra / sizeof extra[0] && k < n; e++)
		g->xd[k++] = extra[e];
	for (size_t i = 0; k < n; i++, k++)
		g->xd[k] = lo + (hi - lo) * (double)i / (double)(n - 17);
	for (size_t i = 0; i < n; i++) {
		ck_assert_int_eq(ring_fxp_encode(g->xd[i], f, &g->x[i], NULL), 0);
		g->xd[i] = ring_fxp_decode(g->x[i], f); /* the value actually computed on */
	}
}

static double exp_check(const struct eprog *g, unsigned party)
{
	const unsigned f = g->f;
	const double u = ldexp(1.0, -(int)f);
	double worst = 0;
	for (size_t i = 0; i < g->n; i++) {
		double x = g->xd[i];
		double c = x > MPC_EXP_HI ? MPC_EXP_HI : x < MPC_EXP_LO ? MPC_EXP_LO : x;
		double want = exp(c), got = ring_fxp_decode(g->out[party][i], f);
		double bound = (8 * want + 3) * u + 1.2e-5 * want;
		double err = fabs(got - want);
		ck_assert_msg(err <= bound, "f=%u x=%.9g got %.9g want %.9g err %g bound %g", f, x,
			      got, want, err, bound);
		if (err / bound > worst)
			worst = err / bound;
	}
	return worst;
}

START_TEST(test_exp_domain_n)
{
	unsigned n = NS[_i];
	struct eprog g;
	struct mpch_party pp[MPC_MAX_PARTIES];
	exp_inputs(&g, 16, NE);
	struct mpch_opts o = {.fault_party = -1, .cfg = {.prep_batch = 1024}};
	ck_assert_int_eq(mpch_run(n, &o, prog_exp, &g, pp), 0);
	double worst = 0;
	for (unsigned i = 0; i < n; i++) {
		ck_assert_int_eq(pp[i].rc, 0);
		ck_assert_uint_eq(g.rounds[i], 12);
		double w = exp_check(&g, i);
		worst = w > worst ? w : worst;
	}
	fprintf(stderr, "exp N=%u f=16: worst error %.3f of the bound\n", n, worst);
}
END_TEST

START_TEST(test_exp_every_f)
{
	for (unsigned f = RING_FXP_MIN_F; f <= RING_FXP_MAX_F; f++) {
		struct eprog g;
		struct mpch_party pp[MPC_MAX_PARTIES];
		exp_inputs(&g, f, 120);
		struct mpch_opts o = {.fault_party = -1, .cfg = {.frac_bits = f, .prep_batch = 512}};
		ck_assert_int_eq(mpch_run(3, &o, prog_exp, &g, pp), 0);
		double worst = 0;
		for (unsigned i = 0; i < 3; i++) {
			ck_assert_int_eq(pp[i].rc, 0);
			ck_assert_uint_eq(g.rounds[i], f <= 14 ? 11 : 12); /* log2 of the chunks */
			double w = exp_check(&g, i);
			worst = w > worst ? w : worst;
		}
		fprintf(stderr, "exp N=3 f=%u: worst error %.3f of the bound\n", f, worst);
	}
}
END_TEST

Suite *suite(void)
{
	log_set_level(LOG_LEVEL_ERROR);
	Suite *s = suite_create("mpc_approx");
	TCase *tc = tcase_create("approx");
	tcase_set_timeout(tc, 60);
	tcase_add_loop_test(tc, test_exp_domain_n, 0, (int)(sizeof NS / sizeof NS[0]));
	tcase_add_test(tc, test_exp_every_f);
	suite_add_tcase(s, tc);
	return s;
}
