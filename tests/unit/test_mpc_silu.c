/* mpc SiLU, exp of non-positive values and softmax against double precision.
 * SiLU: its whole domain [MPC_SILU_LO, MPC_SILU_HI] in equal steps at N = 2, 3 and 5,
 * the edges and one unit either side, far-out values (which must give exactly the
 * asymptote, 0 below and x above, within 2.1e-6 of SiLU), the bound of
 * docs/PROTOCOL.md asserted for every point, 6 rounds and the stated bytes; exp_neg
 * the same on [MPC_EXPNEG_LO, 0] (exactly 0 below, exactly 1 above); a SiLU and an exp
 * on one batch take exp's 12 rounds. Every f: test_mpc_approx_f.
 * Softmax: rows of random values, of equal values, with one dominant value, with
 * differences far beyond exp's domain, a single column, 1 x 512, at N = 2, 3 and 5;
 * every output held to the bound that follows from the components' bounds
 * (docs/PROTOCOL.md, "Softmax"), rows summing to 1 within it, and the rounds
 * 6 ceil(log2 cols) + 20. */
#include <math.h>
#include <stdio.h>
#include <string.h>

#include "err/err.h"
#include "log/log.h"
#include "test_mpc_harness.h"
#include "testutil.h"

static const unsigned NS[] = {2, 3, 5};

START_TEST(test_silu_domain)
{
	unsigned n = NS[_i];
	struct mpch_approx g = {.op = {MPCH_SILU}, .nops = 1};
	mpch_grid(&g, MPCH_SILU, 16, 400, 0, 0x51u + n);
	mpch_approx_run(n, &g, 1024);
	for (unsigned i = 0; i < n; i++) /* docs/PROTOCOL.md: 1088 bytes per element and peer */
		ck_assert_uint_eq(g.bytes[i], (uint64_t)1088 * 400 * (n - 1));
	mpch_grid_free(&g);
}
END_TEST

START_TEST(test_exp_neg_domain)
{
	unsigned n = NS[_i];
	struct mpch_approx g = {.op = {MPCH_EXPNEG}, .nops = 1};
	mpch_grid(&g, MPCH_EXPNEG, 16, 400, 0, 0xE9u + n);
	mpch_approx_run(n, &g, 1024);
	for (unsigned i = 0; i < n; i++) /* docs/PROTOCOL.md: 1072 bytes per element and peer */
		ck_assert_uint_eq(g.bytes[i], (uint64_t)1072 * 400 * (n - 1));
	mpch_grid_free(&g);
}
END_TEST

START_TEST(test_silu_exp_one_batch)
{
	struct mpch_approx g = {.op = {MPCH_SILU, MPCH_EXP}, .nops = 2};
	mpch_grid(&g, MPCH_SILU, 16, 120, 0, 0xE);
	mpch_approx_run(3, &g, 1024); /* exp's 12 rounds for both; each within its bound */
	mpch_grid_free(&g);
}
END_TEST

/* ---------------------------------------------------------------- softmax */

#define SM_MAX 1024

struct sprog {
	size_t rows, cols;
	unsigned f;
	ring64_t x[SM_MAX];
	double xd[SM_MAX];
	ring64_t out[MPC_MAX_PARTIES][SM_MAX + 64];
	uint64_t rounds[MPC_MAX_PARTIES];
	bool with_silu; /* a SiLU of the first 64 inputs on the same batch */
};

static int prog_softmax(struct mpch_party *pp, void *arg)
{
	struct sprog *g = arg;
	struct mpc *p = pp->mpc;
	const size_t mn = g->rows * g->cols;
	mpc_share *x = calloc(mn, sizeof *x), *y = calloc(mn + 64, sizeof *y);
	struct mpc_batch *bt = NULL;
	struct mpc_stats a, b;
	int rc = x && y ? 0 : ERR_NOMEM;
	if (rc == 0)
		rc = mpc_input(p, 0, pp->id == 0 ? g->x : NULL, x, mn);
	if (rc == 0) /* tournament, exp, reciprocal, product, SiLU */
		rc = mpc_prefill(p, MPC_PREP_TRIPLE, 0, 200 * mn + 600 * g->rows + 80 * 64);
	if (rc == 0)
		rc = mpc_check(p);
	mpc_get_stats(p, &a);
	if (rc == 0)
		rc = mpc_batch_new(p, &bt);
	if (rc == 0)
		rc = mpc_batch_softmax(bt, y, x, g->rows, g->cols);
	if (rc == 0 && g->with_silu)
		rc = mpc_batch_silu(bt, y + mn, x, mn < 64 ? mn : 64);
	if (rc == 0)
		rc = mpc_batch_run(bt);
	mpc_batch_free(bt);
	mpc_get_stats(p, &b);
	g->rounds[pp->id] = b.rounds - a.rounds;
	if (rc == 0)
		rc = mpc_reveal(p, g->out[pp->id], y, mn + (g->with_silu ? (mn < 64 ? mn : 64) : 0));
	free(x);
	free(y);
	return rc;
}

/* The bound of docs/PROTOCOL.md: with E_j = e^(x_j - max), S their sum, a_j exp_neg's
 * bound at x_j - max and A their sum,
 *   |out_j - E_j/S| <= u + (E_j + a_j)(1.35e-5/(S - A) + 4u) + (a_j + A E_j/S)/(S - A). */
static double softmax_check(const struct sprog *g, unsigned party)
{
	const double u = ldexp(1.0, -(int)g->f);
	double worst = 0;
	for (size_t r = 0; r < g->rows; r++) {
		const double *x = g->xd + r * g->cols;
		double mx = x[0], S = 0, A = 0, sum = 0;
		for (size_t j = 1; j < g->cols; j++)
			mx = x[j] > mx ? x[j] : mx;
		for (size_t j = 0; j < g->cols; j++) {
			double E = exp(x[j] - mx);
			S += E;
			A += mpch_expneg_bound(E, g->f);
		}
		for (size_t j = 0; j < g->cols; j++) {
			double E = exp(x[j] - mx), a = mpch_expneg_bound(E, g->f), want = E / S;
			double got = ring_fxp_decode(g->out[party][r * g->cols + j], g->f);
			double bound = u + (E + a) * (1.35e-5 / (S - A) + 4 * u) + (a + A * E / S) / (S - A);
			double err = fabs(got - want);
			ck_assert_msg(err <= bound, "party %u row %zu col %zu: got %.9g want %.9g err %g bound %g",
				      party, r, j, got, want, err, bound);
			worst = err / bound > worst ? err / bound : worst;
			sum += got;
		}
		/* the row sums to 1 within the sum of the bounds */
		double sb = 0;
		for (size_t j = 0; j < g->cols; j++) {
			double E = exp(x[j] - mx), a = mpch_expneg_bound(E, g->f);
			sb += u + (E + a) * (1.35e-5 / (S - A) + 4 * u) + (a + A * E / S) / (S - A);
		}
		ck_assert(fabs(sum - 1) <= sb);
	}
	return worst;
}

static void softmax_run(unsigned n, struct sprog *g)
{
	struct mpch_party pp[MPC_MAX_PARTIES];
	struct mpch_opts o = {.fault_party = -1, .cfg = {.frac_bits = g->f, .prep_batch = 1024}};
	const size_t mn = g->rows * g->cols;
	for (size_t i = 0; i < mn; i++) {
		ck_assert_int_eq(ring_fxp_encode(g->xd[i], g->f, &g->x[i], NULL), 0);
		g->xd[i] = ring_fxp_decode(g->x[i], g->f);
	}
	ck_assert_int_eq(mpch_run(n, &o, prog_softmax, g, pp), 0);
	unsigned L = 0;
	while (((size_t)1 << L) < g->cols)
		L++;
	double worst = 0;
	for (unsigned i = 0; i < n; i++) {
		ck_assert_int_eq(pp[i].rc, 0);
		ck_assert_uint_eq(g->rounds[i], 6 * L + 20);
		double w = softmax_check(g, i);
		worst = w > worst ? w : worst;
		if (g->with_silu) { /* the SiLU on the same batch is right too */
			size_t k = mn < 64 ? mn : 64;
			for (size_t j = 0; j < k; j++) {
				double got = ring_fxp_decode(g->out[i][mn + j], g->f);
				ck_assert(fabs(got - mpch_silu(g->xd[j])) <= 6e-6 + 3 * ldexp(1.0, -(int)g->f));
			}
		}
	}
	fprintf(stderr, "softmax N=%u %zux%zu: %u rounds, worst error %.3f of the bound\n", n, g->rows,
		g->cols, 6 * L + 20, worst);
}

/* rows of 64: random in [-10, 10], all equal, one dominant (+25), a spread beyond
 * exp's domain ([-300, 300], most outputs 0), negative and large (around -1000) */
START_TEST(test_softmax_rows)
{
	unsigned n = NS[_i];
	struct sprog *g = calloc(1, sizeof *g);
	uint64_t s = 0x50F7 + n;
	ck_assert_ptr_nonnull(g);
	g->rows = 5;
	g->cols = 64;
	g->f = 16;
	for (size_t j = 0; j < 64; j++) {
		double t = (double)(mpch_rand(&s) >> 11) * 0x1p-53;
		g->xd[j] = -10 + 20 * t;
		g->xd[64 + j] = 3.25;
		g->xd[128 + j] = -2 + 4 * t + (j == 17 ? 25 : 0);
		g->xd[192 + j] = -300 + 600 * t;
		g->xd[256 + j] = -1000 + 2 * t;
	}
	g->with_silu = n == 3;
	softmax_run(n, g);
	free(g);
}
END_TEST

START_TEST(test_softmax_512)
{
	struct sprog *g = calloc(1, sizeof *g);
	uint64_t s = 512;
	ck_assert_ptr_nonnull(g);
	g->rows = 1;
	g->cols = 512;
	g->f = 16;
	for (size_t j = 0; j < 512; j++)
		g->xd[j] = -8 + 16 * (double)(mpch_rand(&s) >> 11) * 0x1p-53;
	softmax_run(3, g);
	free(g);
}
END_TEST

START_TEST(test_softmax_one_column)
{
	struct sprog *g = calloc(1, sizeof *g);
	ck_assert_ptr_nonnull(g);
	g->rows = 3;
	g->cols = 1;
	g->f = 16;
	g->xd[0] = -5;
	g->xd[1] = 0;
	g->xd[2] = 1e4;
	softmax_run(2, g); /* 20 rounds, each output 1 within the bound */
	free(g);
}
END_TEST

/* Approximations of zero values queue nothing: a batch with all five and a product
 * takes the product's one round. */
static int prog_empty(struct mpch_party *pp, void *arg)
{
	uint64_t *rounds = arg;
	struct mpc *p = pp->mpc;
	struct mpc_batch *b = NULL;
	struct mpc_stats a, c;
	mpc_share x[1], y[1];
	ring64_t one = 1 << 16;
	int rc = mpc_input(p, 0, pp->id == 0 ? &one : NULL, x, 1);
	if (rc == 0)
		rc = mpc_prefill(p, MPC_PREP_TRIPLE, 0, 4);
	if (rc == 0)
		rc = mpc_check(p);
	mpc_get_stats(p, &a);
	if (rc == 0)
		rc = mpc_batch_new(p, &b);
	if (rc == 0)
		rc = mpc_batch_exp(b, y, x, 0);
	if (rc == 0)
		rc = mpc_batch_recip(b, y, x, 0);
	if (rc == 0)
		rc = mpc_batch_rsqrt(b, y, x, 0);
	if (rc == 0)
		rc = mpc_batch_silu(b, y, x, 0);
	if (rc == 0)
		rc = mpc_batch_exp_neg(b, y, x, 0);
	if (rc == 0)
		rc = mpc_batch_mul(b, y, x, x, 1);
	if (rc == 0)
		rc = mpc_batch_run(b);
	mpc_batch_free(b);
	mpc_get_stats(p, &c);
	rounds[pp->id] = c.rounds - a.rounds;
	return rc;
}

START_TEST(test_empty)
{
	uint64_t rounds[MPC_MAX_PARTIES];
	struct mpch_party pp[MPC_MAX_PARTIES];
	struct mpch_opts o = {.fault_party = -1};
	ck_assert_int_eq(mpch_run(2, &o, prog_empty, rounds, pp), 0);
	for (unsigned i = 0; i < 2; i++) {
		ck_assert_int_eq(pp[i].rc, 0);
		ck_assert_uint_eq(rounds[i], 1);
	}
}
END_TEST

START_TEST(test_softmax_bad_arguments)
{
	struct mpc_hub *hub;
	struct mpc_net *net;
	struct mpc_dealer *d;
	struct mpc *p;
	struct mpc_batch *b;
	uint8_t seed[MPC_SEED_BYTES] = {0};
	mpc_share s[4];
	ck_assert_int_eq(mpc_hub_new(2, 0, &hub), 0);
	ck_assert_int_eq(mpc_net_local_new(hub, 0, &net), 0);
	ck_assert_int_eq(mpc_dealer_new(2, &d), 0);
	struct mpc_prep_source src = mpc_dealer_source(d);
	ck_assert_int_eq(mpc_new(net, seed, &src, NULL, &p), 0);
	ck_assert_int_eq(mpc_batch_new(p, &b), 0);
	ck_assert_int_eq(mpc_batch_softmax(b, s, s, 0, 4), ERR_INVALID);
	ck_assert_int_eq(mpc_batch_softmax(b, s, s, 1, 0), ERR_INVALID);
	ck_assert_int_eq(mpc_batch_softmax(b, s, NULL, 1, 4), ERR_INVALID);
	ck_assert_int_eq(mpc_batch_softmax(b, s, s, 1, MPC_SOFTMAX_MAX_COLS + 1), ERR_INVALID);
	ck_assert_int_eq(mpc_batch_softmax(b, s, s, SIZE_MAX / 2, 4), ERR_INVALID);
	mpc_batch_free(b);
	mpc_free(p);
	mpc_net_free(net);
	mpc_dealer_free(d);
	mpc_hub_free(hub);
}
END_TEST

Suite *suite(void)
{
	log_set_level(LOG_LEVEL_ERROR);
	Suite *s = suite_create("mpc_silu");
	TCase *tc = tcase_create("silu");
	tcase_set_timeout(tc, 300); /* a hang guard: sanitizer builds are slow */
	int nn = (int)(sizeof NS / sizeof NS[0]);
	tcase_add_loop_test(tc, test_silu_domain, 0, nn);
	tcase_add_loop_test(tc, test_exp_neg_domain, 0, nn);
	tcase_add_test(tc, test_silu_exp_one_batch);
	tcase_add_loop_test(tc, test_softmax_rows, 0, nn);
	tcase_add_test(tc, test_softmax_512);
	tcase_add_test(tc, test_softmax_one_column);
	tcase_add_test(tc, test_softmax_bad_arguments);
	tcase_add_test(tc, test_empty);
	suite_add_tcase(s, tc);
	return s;
}
