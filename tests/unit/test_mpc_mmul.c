/* mpc, plain matrix product (common/mpc/mmul.c): at N = 2, 3 and 5 the product of two
 * secret matrices is exact in Z_2^64 and, in fixed point, within the bound of
 * docs/PROTOCOL.md of the double-precision product, for a token's row (1x64 by 64x172),
 * a square block (64x64 by 64x64), odd shapes and 1x1; it costs the rounds and bytes the
 * document states (one round of (m k + k n) 8 (N-1) bytes, a second for the truncation,
 * a toss and two rounds more when the triple is fetched inline), shares its round in a
 * batch, and refuses bad shapes. A matrix triple whose C is wrong is caught by the
 * sacrifice (and would have given a wrong product without it), one with a wrong MAC
 * share by the MAC check, a rushing party that cancels the sacrifice by the MAC check
 * of the wide openings, and a bit flipped anywhere in the messages of a pipeline of
 * products either aborts the run or changes nothing that is released. */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "err/err.h"
#include "log/log.h"
#include "test_mpc_harness.h"
#include "testutil.h"

static const unsigned NS[] = {2, 3, 5};

struct shape {
	size_t m, k, n;
};

/* a token's row times a weight-shaped matrix, a square block, odd shapes, 1x1 */
static const struct shape SHAPES[] = {{1, 64, 172}, {64, 64, 64}, {3, 7, 5},
				      {17, 1, 9},   {5, 33, 2},   {1, 1, 1}};

static double urand(uint64_t *s, double lo, double hi)
{
	return lo + (hi - lo) * (double)(mpch_rand(s) >> 11) * 0x1p-53;
}

/* A toss sends a 32-byte commitment the first time in a session (one round), then
 * opens in one round: seed, nonce and the next commitment. */
#define TOSS_FIRST 32
#define TOSS_OPEN 96

/* ---------------------------------------------------------------- accuracy and cost */

struct mprog {
	size_t m, k, n;
	unsigned f;
	ring64_t *xr, *yr, *xf, *yf; /* ring operands; fixed-point operands (encoded) */
	double *xd, *yd;             /* the reals the fixed-point operands encode */
	ring64_t *out[MPC_MAX_PARTIES]; /* ring product, then fixed-point product */
	uint64_t rounds[MPC_MAX_PARTIES][2], bytes[MPC_MAX_PARTIES][2];
	uint64_t prep_rounds[MPC_MAX_PARTIES];
};

static void mprog_init(struct mprog *g, const struct shape *s, unsigned f, uint64_t seed)
{
	memset(g, 0, sizeof *g);
	g->m = s->m, g->k = s->k, g->n = s->n, g->f = f;
	size_t mk = s->m * s->k, kn = s->k * s->n;
	g->xr = calloc(mk, sizeof *g->xr);
	g->xf = calloc(mk, sizeof *g->xf);
	g->xd = calloc(mk, sizeof *g->xd);
	g->yr = calloc(kn, sizeof *g->yr);
	g->yf = calloc(kn, sizeof *g->yf);
	g->yd = calloc(kn, sizeof *g->yd);
	ck_assert(g->xr && g->xf && g->xd && g->yr && g->yf && g->yd);
	for (size_t i = 0; i < mk; i++) {
		g->xr[i] = mpch_rand(&seed); /* any ring element: the product is exact mod 2^64 */
		g->xd[i] = urand(&seed, -8, 8);
		ck_assert_int_eq(ring_fxp_encode(g->xd[i], f, &g->xf[i], NULL), 0);
	}
	for (size_t i = 0; i < kn; i++) {
		g->yr[i] = mpch_rand(&seed);
		g->yd[i] = urand(&seed, -8, 8);
		ck_assert_int_eq(ring_fxp_encode(g->yd[i], f, &g->yf[i], NULL), 0);
	}
	for (unsigned i = 0; i < MPC_MAX_PARTIES; i++)
		ck_assert((g->out[i] = calloc(2 * s->m * s->n, sizeof *g->out[i])) != NULL);
}

static void mprog_free(struct mprog *g)
{
	free(g->xr), free(g->yr), free(g->xf), free(g->yf), free(g->xd), free(g->yd);
	for (unsigned i = 0; i < MPC_MAX_PARTIES; i++)
		free(g->out[i]);
}

/* x (ring, then fixed point) from party 0, y from party N-1 */
static int input_xy(struct mpch_party *pp, const struct mprog *g, mpc_share *x, mpc_share *y)
{
	struct mpc *p = pp->mpc;
	const size_t mk = g->m * g->k, kn = g->k * g->n;
	const unsigned last = pp->n - 1;
	int rc = mpc_input(p, 0, pp->id == 0 ? g->xr : NULL, x, mk);
	if (rc == 0)
		rc = mpc_input(p, 0, pp->id == 0 ? g->xf : NULL, x + mk, mk);
	if (rc == 0)
		rc = mpc_input(p, last, pp->id == last ? g->yr : NULL, y, kn);
	if (rc == 0)
		rc = mpc_input(p, last, pp->id == last ? g->yf : NULL, y + kn, kn);
	return rc;
}

static void delta(struct mpc *p, struct mpc_stats *a, uint64_t *rounds, uint64_t *bytes)
{
	struct mpc_stats b;
	mpc_get_stats(p, &b);
	*rounds = b.rounds - a->rounds;
	*bytes = b.bytes_sent - a->bytes_sent;
	*a = b;
}

/* Both products with triples made ahead (mpc_matmul_prefill), each measured alone. */
static int prog_shape(struct mpch_party *pp, void *arg)
{
	struct mprog *g = arg;
	struct mpc *p = pp->mpc;
	const size_t mk = g->m * g->k, kn = g->k * g->n, mn = g->m * g->n;
	mpc_share *x = calloc(2 * mk, sizeof *x), *y = calloc(2 * kn, sizeof *y);
	mpc_share *z = calloc(2 * mn, sizeof *z);
	struct mpc_stats a;
	uint64_t ignore;
	int rc = x && y && z ? 0 : ERR_NOMEM;
	if (rc == 0)
		rc = input_xy(pp, g, x, y);
	mpc_get_stats(p, &a);
	if (rc == 0) /* the session's first toss: with its commitment round */
		rc = mpc_matmul_prefill(p, g->m, g->k, g->n, 2);
	delta(p, &a, &g->prep_rounds[pp->id], &ignore);
	if (rc == 0)
		rc = mpc_check(p); /* so that no check falls inside what is measured */
	mpc_get_stats(p, &a);
	if (rc == 0)
		rc = mpc_matmul(p, z, x, y, g->m, g->k, g->n);
	delta(p, &a, &g->rounds[pp->id][0], &g->bytes[pp->id][0]);
	if (rc == 0)
		rc = mpc_matmul_fx(p, z + mn, x + mk, y + kn, g->m, g->k, g->n);
	delta(p, &a, &g->rounds[pp->id][1], &g->bytes[pp->id][1]);
	if (rc == 0)
		rc = mpc_reveal(p, g->out[pp->id], z, 2 * mn);
	free(x);
	free(y);
	free(z);
	return rc;
}

/* The bound of docs/PROTOCOL.md for one entry of the fixed-point product, against the
 * product of the reals: the truncation (< 1 unit) plus the operands' rounding to
 * 2^-f (at most half a unit each). */
static double fx_bound(const struct mprog *g, size_t r, size_t c)
{
	const double u = ldexp(1.0, -(int)g->f);
	double mag = 0;
	for (size_t l = 0; l < g->k; l++)
		mag += fabs(g->xd[r * g->k + l]) + fabs(g->yd[l * g->n + c]);
	return u + mag * u / 2 + (double)g->k * u * u / 4;
}

/* Every party's outputs against the plain products; returns the worst fixed-point
 * error as a fraction of the bound. */
static double check_outputs(const struct mprog *g, unsigned np, const struct mpch_party *pp)
{
	const size_t m = g->m, k = g->k, n = g->n, mn = m * n;
	double worst = 0;
	for (unsigned i = 0; i < np; i++) {
		ck_assert_msg(pp[i].rc == 0, "party %u: %d (%s)", i, pp[i].rc,
			      pp[i].failed ? pp[i].failed : "-");
		ck_assert_mem_eq(g->out[i], g->out[0], 2 * mn * sizeof(ring64_t));
	}
	for (size_t r = 0; r < m; r++)
		for (size_t c = 0; c < n; c++) {
			ring64_t want = 0;
			__int128 wide = 0;
			double ref = 0;
			for (size_t l = 0; l < k; l++) {
				want += g->xr[r * k + l] * g->yr[l * n + c];
				wide += (__int128)(int64_t)g->xf[r * k + l] * (int64_t)g->yf[l * n + c];
				ref += g->xd[r * k + l] * g->yd[l * n + c];
			}
			ck_assert_uint_eq(g->out[0][r * n + c], want);
			/* exactly floor(X Y / 2^f) or one more, on the encoded operands */
			int64_t fl = (int64_t)(wide >> g->f), got = (int64_t)g->out[0][mn + r * n + c];
			ck_assert_msg(got == fl || got == fl + 1, "%zux%zux%zu f=%u (%zu,%zu): %lld vs %lld",
				      m, k, n, g->f, r, c, (long long)got, (long long)fl);
			double err = fabs(ring_fxp_decode((ring64_t)got, g->f) - ref), bound = fx_bound(g, r, c);
			ck_assert_msg(err <= bound, "%zux%zux%zu f=%u: err %g > bound %g", m, k, n, g->f, err,
				      bound);
			if (err / bound > worst)
				worst = err / bound;
		}
	return worst;
}

static void run_shape(unsigned np, const struct shape *s, unsigned f, uint64_t seed)
{
	struct mprog g;
	struct mpch_party pp[MPC_MAX_PARTIES];
	mprog_init(&g, s, f, seed);
	struct mpch_opts o = {.fault_party = -1, .cfg = {.frac_bits = f}};
	ck_assert_int_eq(mpch_run(np, &o, prog_shape, &g, pp), 0);
	double worst = check_outputs(&g, np, pp);
	const uint64_t mk = s->m * s->k, kn = s->k * s->n, mn = s->m * s->n;
	for (unsigned i = 0; i < np; i++) {
		/* one round, X - A and Y - B; the fixed-point form one more for the truncation */
		ck_assert_uint_eq(g.rounds[i][0], 1);
		ck_assert_uint_eq(g.bytes[i][0], 8 * (mk + kn) * (np - 1));
		ck_assert_uint_eq(g.rounds[i][1], 2);
		ck_assert_uint_eq(g.bytes[i][1], 8 * (mk + kn + mn) * (np - 1));
		/* the prefill: the first toss (2 rounds) and the two sacrifice rounds for
		 * both triples */
		ck_assert_uint_eq(g.prep_rounds[i], 2 + 2);
		ck_assert_uint_eq(pp[i].st.mtriples, 2);
		ck_assert_uint_eq(pp[i].st.mtriples_sacrificed, 2);
	}
	fprintf(stderr, "matmul N=%u %zux%zu by %zux%zu f=%u: exact in Z_2^64, fixed point worst %.3f of the bound\n",
		np, s->m, s->k, s->k, s->n, f, worst);
	mprog_free(&g);
}

START_TEST(test_shapes_against_double)
{
	unsigned np = NS[_i];
	for (size_t s = 0; s < sizeof SHAPES / sizeof SHAPES[0]; s++)
		run_shape(np, &SHAPES[s], 16, 1000 + 17 * s + np);
}
END_TEST

/* The fixed-point product at the ends of the supported fractional bits. */
START_TEST(test_fx_every_f_end)
{
	static const struct shape s = {4, 9, 3};
	run_shape(3, &s, RING_FXP_MIN_F, 77);
	run_shape(3, &s, RING_FXP_MAX_F, 78);
}
END_TEST

/* ---------------------------------------------------------------- inline sacrifice */

/* A product whose shape has no pooled triple fetches and sacrifices one when queued:
 * one toss and two rounds of 16 (k n + m n) bytes per peer before its own round.
 * A prefill larger than one dealer batch takes one toss and two rounds per batch. */
struct iprog {
	struct mprog g;
	uint64_t rounds[MPC_MAX_PARTIES][3], bytes[MPC_MAX_PARTIES][3];
	bool no_sacrifice;
};

static int prog_inline(struct mpch_party *pp, void *arg)
{
	struct iprog *ip = arg;
	struct mprog *g = &ip->g;
	struct mpc *p = pp->mpc;
	const size_t mk = g->m * g->k, kn = g->k * g->n, mn = g->m * g->n;
	mpc_share *x = calloc(2 * mk, sizeof *x), *y = calloc(2 * kn, sizeof *y);
	mpc_share *z = calloc(2 * mn, sizeof *z);
	struct mpc_stats a;
	int rc = x && y && z ? 0 : ERR_NOMEM;
	if (rc == 0)
		rc = input_xy(pp, g, x, y);
	mpc_get_stats(p, &a);
	if (rc == 0) /* the session's first toss, then each toss is one round */
		rc = mpc_matmul(p, z, x, y, g->m, g->k, g->n);
	delta(p, &a, &ip->rounds[pp->id][0], &ip->bytes[pp->id][0]);
	if (rc == 0)
		rc = mpc_matmul_fx(p, z + mn, x + mk, y + kn, g->m, g->k, g->n);
	delta(p, &a, &ip->rounds[pp->id][1], &ip->bytes[pp->id][1]);
	/* 1x1024 by 1024x256: 525824 shares per triple, one triple per dealer batch */
	if (rc == 0)
		rc = mpc_matmul_prefill(p, 1, 1024, 256, 2);
	delta(p, &a, &ip->rounds[pp->id][2], &ip->bytes[pp->id][2]);
	if (rc == 0)
		rc = mpc_reveal(p, g->out[pp->id], z, 2 * mn);
	free(x);
	free(y);
	free(z);
	return rc;
}

START_TEST(test_inline_sacrifice_cost)
{
	unsigned np = NS[_i];
	static const struct shape s = {3, 7, 5};
	for (int nos = 0; nos <= 1; nos++) {
		struct iprog ip;
		struct mpch_party pp[MPC_MAX_PARTIES];
		memset(&ip, 0, sizeof ip);
		mprog_init(&ip.g, &s, 16, 300 + np);
		struct mpch_opts o = {.fault_party = -1, .cfg = {.no_sacrifice = nos}};
		ck_assert_int_eq(mpch_run(np, &o, prog_inline, &ip, pp), 0);
		check_outputs(&ip.g, np, pp);
		const uint64_t mk = s.m * s.k, kn = s.k * s.n, mn = s.m * s.n, P = np - 1;
		for (unsigned i = 0; i < np; i++) {
			if (nos) { /* the bare online: no toss, no sacrifice rounds */
				ck_assert_uint_eq(ip.rounds[i][0], 1);
				ck_assert_uint_eq(ip.rounds[i][1], 2);
				ck_assert_uint_eq(ip.rounds[i][2], 0);
				ck_assert_uint_eq(pp[i].st.mtriples_sacrificed, 0);
				ck_assert_uint_eq(pp[i].st.mtriples, 2);
				continue;
			}
			ck_assert_uint_eq(ip.rounds[i][0], 1 + 3 + 1);
			ck_assert_uint_eq(ip.bytes[i][0], P * (TOSS_FIRST + TOSS_OPEN + 16 * (kn + mn) +
							       8 * (mk + kn)));
			ck_assert_uint_eq(ip.rounds[i][1], 3 + 2);
			ck_assert_uint_eq(ip.bytes[i][1],
					  P * (TOSS_OPEN + 16 * (kn + mn) + 8 * (mk + kn + mn)));
			/* two dealer batches of one triple: two tosses and four rounds */
			ck_assert_uint_eq(ip.rounds[i][2], 6);
			ck_assert_uint_eq(ip.bytes[i][2], 2 * P * (TOSS_OPEN + 16 * (1024 * 256 + 256)));
			ck_assert_uint_eq(pp[i].st.mtriples, 2);
			ck_assert_uint_eq(pp[i].st.mtriples_sacrificed, 4);
		}
		mprog_free(&ip.g);
	}
}
END_TEST

/* ---------------------------------------------------------------- batching */

/* Two products of different shapes and an elementwise product share one round; a
 * fixed-point product (2 rounds) beside an LTZ (5) takes 5. */
struct bprog {
	struct mprog g;
	ring64_t e[MPC_MAX_PARTIES][8 + 8];
	uint64_t rounds[MPC_MAX_PARTIES][2];
};

static int prog_batch(struct mpch_party *pp, void *arg)
{
	struct bprog *bp = arg;
	struct mprog *g = &bp->g;
	struct mpc *p = pp->mpc;
	const size_t mk = g->m * g->k, kn = g->k * g->n, mn = g->m * g->n;
	mpc_share *x = calloc(2 * mk, sizeof *x), *y = calloc(2 * kn, sizeof *y);
	mpc_share *z = calloc(3 * mn, sizeof *z), e[8 + 8];
	struct mpc_batch *b = NULL;
	struct mpc_stats a;
	uint64_t ignore;
	int rc = x && y && z ? 0 : ERR_NOMEM;
	if (rc == 0)
		rc = input_xy(pp, g, x, y);
	if (rc == 0)
		rc = mpc_matmul_prefill(p, g->m, g->k, g->n, 2);
	if (rc == 0)
		rc = mpc_matmul_prefill(p, 1, g->k, 1, 1);
	if (rc == 0) /* the elementwise product and the LTZ's 29 per element */
		rc = mpc_prefill(p, MPC_PREP_TRIPLE, 0, 8 + 29 * 8);
	if (rc == 0)
		rc = mpc_check(p);
	mpc_get_stats(p, &a);
	if (rc == 0)
		rc = mpc_batch_new(p, &b);
	/* z = X Y, a second shape in flight (X's first row times y's first k entries read
	 * as a column: their dot product), and x[0..7] * y[0..7] elementwise */
	if (rc == 0)
		rc = mpc_batch_matmul(b, z, x, y, g->m, g->k, g->n);
	if (rc == 0)
		rc = mpc_batch_matmul(b, z + mn, x, y, 1, g->k, 1);
	if (rc == 0)
		rc = mpc_batch_mul(b, e, x, y, 8);
	if (rc == 0)
		rc = mpc_batch_run(b);
	delta(p, &a, &bp->rounds[pp->id][0], &ignore);
	if (rc == 0)
		rc = mpc_batch_matmul_fx(b, z + 2 * mn, x + mk, y + kn, g->m, g->k, g->n);
	if (rc == 0)
		rc = mpc_batch_ltz(b, e + 8, x + mk, 8);
	if (rc == 0)
		rc = mpc_batch_run(b);
	delta(p, &a, &bp->rounds[pp->id][1], &ignore);
	mpc_batch_free(b);
	if (rc == 0)
		rc = mpc_reveal(p, g->out[pp->id], z, 3 * mn);
	if (rc == 0)
		rc = mpc_reveal(p, bp->e[pp->id], e, 16);
	free(x);
	free(y);
	free(z);
	return rc;
}

START_TEST(test_batch_shares_rounds)
{
	unsigned np = NS[_i];
	static const struct shape s = {3, 8, 4}; /* k >= 8 and k <= k n */
	struct bprog bp;
	struct mpch_party pp[MPC_MAX_PARTIES];
	memset(&bp, 0, sizeof bp);
	mprog_init(&bp.g, &s, 16, 500 + np);
	for (unsigned i = 0; i < MPC_MAX_PARTIES; i++) { /* room for three products */
		free(bp.g.out[i]);
		ck_assert((bp.g.out[i] = calloc(3 * s.m * s.n, sizeof(ring64_t))) != NULL);
	}
	struct mpch_opts o = {.fault_party = -1, .cfg = {.prep_batch = 64}};
	ck_assert_int_eq(mpch_run(np, &o, prog_batch, &bp, pp), 0);
	const size_t mn = s.m * s.n;
	for (unsigned i = 0; i < np; i++) {
		ck_assert_int_eq(pp[i].rc, 0);
		ck_assert_uint_eq(bp.rounds[i][0], 1);
		ck_assert_uint_eq(bp.rounds[i][1], 5);
		ck_assert_mem_eq(bp.g.out[i], bp.g.out[0], 3 * mn * sizeof(ring64_t));
		ck_assert_mem_eq(bp.e[i], bp.e[0], sizeof bp.e[0]);
	}
	const ring64_t *o0 = bp.g.out[0];
	ring64_t dot = 0;
	for (size_t l = 0; l < s.k; l++)
		dot += bp.g.xr[l] * bp.g.yr[l];
	ck_assert_uint_eq(o0[mn], dot);
	for (size_t r = 0; r < s.m; r++)
		for (size_t c = 0; c < s.n; c++) {
			ring64_t want = 0;
			__int128 wide = 0;
			for (size_t l = 0; l < s.k; l++) {
				want += bp.g.xr[r * s.k + l] * bp.g.yr[l * s.n + c];
				wide += (__int128)(int64_t)bp.g.xf[r * s.k + l] * (int64_t)bp.g.yf[l * s.n + c];
			}
			ck_assert_uint_eq(o0[r * s.n + c], want);
			int64_t fl = (int64_t)(wide >> 16), got = (int64_t)o0[2 * mn + r * s.n + c];
			ck_assert(got == fl || got == fl + 1);
		}
	for (int j = 0; j < 8; j++) {
		ck_assert_uint_eq(bp.e[0][j], bp.g.xr[j] * bp.g.yr[j]);
		ck_assert_uint_eq(bp.e[0][8 + j], (int64_t)bp.g.xf[j] < 0);
	}
	mprog_free(&bp.g);
}
END_TEST

/* ---------------------------------------------------------------- faults */

/* A program of two products from a prefill of two triples (one dealer batch), revealed
 * together; after an abort one more call must be refused. */
static const struct shape FS = {3, 7, 5};

struct fprog {
	struct mprog g;
	int after_abort[MPC_MAX_PARTIES];
};

static int prog_fault(struct mpch_party *pp, void *arg)
{
	struct fprog *fp = arg;
	struct mprog *g = &fp->g;
	struct mpc *p = pp->mpc;
	const size_t mk = g->m * g->k, kn = g->k * g->n, mn = g->m * g->n;
	mpc_share *x = calloc(2 * mk, sizeof *x), *y = calloc(2 * kn, sizeof *y);
	mpc_share *z = calloc(2 * mn, sizeof *z);
	int rc = x && y && z ? 0 : ERR_NOMEM;
	if (rc == 0)
		rc = input_xy(pp, g, x, y);
	if (rc == 0)
		rc = mpc_matmul_prefill(p, g->m, g->k, g->n, 2);
	if (rc == 0)
		rc = mpc_matmul(p, z, x, y, g->m, g->k, g->n);
	if (rc == 0)
		rc = mpc_matmul_fx(p, z + mn, x + mk, y + kn, g->m, g->k, g->n);
	if (rc == 0)
		rc = mpc_reveal(p, g->out[pp->id], z, 2 * mn);
	if (rc != 0)
		fp->after_abort[pp->id] = mpc_matmul(p, z, x, y, g->m, g->k, g->n);
	free(x);
	free(y);
	free(z);
	return rc;
}

static void fault_setup(struct fprog *fp, uint64_t seed)
{
	memset(fp, 0, sizeof *fp);
	mprog_init(&fp->g, &FS, 16, seed);
	for (unsigned i = 0; i < MPC_MAX_PARTIES; i++)
		memset(fp->g.out[i], 0xa5, 2 * FS.m * FS.n * sizeof(ring64_t));
}

static void assert_nothing_released(const struct fprog *fp, unsigned i)
{
	for (size_t j = 0; j < 2 * FS.m * FS.n; j++)
		ck_assert_uint_eq(fp->g.out[i][j], 0xa5a5a5a5a5a5a5a5ULL);
}

/* A dealer C off by 2^bit (with a MAC that matches) in either triple of the batch and
 * at any bit below 2^64 is caught by the sacrifice; nothing is released. */
START_TEST(test_faulty_mtriple_caught)
{
	unsigned np = NS[_i];
	const uint64_t nC = FS.m * FS.n;
	static const struct {
		uint64_t item;
		unsigned bit;
	} cases[] = {{0, 0}, {14, 63}, {15 + 3, 17}, {29, 40}, {7, 1}};
	for (size_t c = 0; c < sizeof cases / sizeof cases[0]; c++) {
		struct fprog fp;
		struct mpch_party pp[MPC_MAX_PARTIES];
		struct mpc_dealer *d;
		ck_assert_uint_lt(cases[c].item, 2 * nC);
		fault_setup(&fp, 600 + c);
		ck_assert_int_eq(mpc_dealer_new(np, &d), 0);
		ck_assert_int_eq(mpc_dealer_inject(d, MPC_DEALER_FAULT_MTRIPLE_VALUE, cases[c].item, cases[c].bit), 0);
		struct mpch_opts o = {.fault_party = -1, .dealer = d};
		ck_assert_int_eq(mpch_run(np, &o, prog_fault, &fp, pp), 0);
		for (unsigned i = 0; i < np; i++) {
			ck_assert_int_eq(pp[i].rc, ERR_MAC_CHECK);
			ck_assert_str_eq(pp[i].failed, "triple-sacrifice");
			ck_assert_int_eq(fp.after_abort[i], ERR_ABORTED);
			assert_nothing_released(&fp, i);
			ck_assert_uint_eq(pp[i].st.mtriples, 0);
		}
		mpc_dealer_free(d);
		mprog_free(&fp.g);
	}
}
END_TEST

/* The same fault with the sacrifice switched off releases a wrong product (the entry
 * off by exactly 2^bit): the fault is real, and the sacrifice is what stops it. */
START_TEST(test_fault_real_without_sacrifice)
{
	struct fprog fp, honest;
	struct mpch_party pp[MPC_MAX_PARTIES];
	struct mpc_dealer *d;
	const unsigned np = 3, bit = 5;
	const uint64_t item = 8; /* row 1, column 3 of the first triple's C */
	fault_setup(&fp, 700);
	fault_setup(&honest, 700);
	struct mpch_opts o = {.fault_party = -1, .cfg = {.no_sacrifice = true}};
	ck_assert_int_eq(mpch_run(np, &o, prog_fault, &honest, pp), 0);
	check_outputs(&honest.g, np, pp);
	ck_assert_int_eq(mpc_dealer_new(np, &d), 0);
	ck_assert_int_eq(mpc_dealer_inject(d, MPC_DEALER_FAULT_MTRIPLE_VALUE, item, bit), 0);
	o.dealer = d;
	ck_assert_int_eq(mpch_run(np, &o, prog_fault, &fp, pp), 0);
	for (unsigned i = 0; i < np; i++) {
		ck_assert_int_eq(pp[i].rc, 0);
		for (size_t j = 0; j < FS.m * FS.n; j++)
			ck_assert_uint_eq(fp.g.out[i][j] - honest.g.out[0][j], j == item ? (ring64_t)1 << bit : 0);
	}
	mpc_dealer_free(d);
	mprog_free(&fp.g);
	mprog_free(&honest.g);
}
END_TEST

/* Errors at bits 64..191 of C do not change C mod 2^64: the sacrifice catches those
 * below 2^128 unless t e = 0 mod 2^128 (bit 127: t even), and the product released is
 * the honest one whenever a run is not aborted. */
START_TEST(test_high_fault_never_wrong)
{
	static const unsigned bits[] = {64, 100, 127, 127, 127, 127, 150, 191};
	int caught = 0;
	struct fprog honest;
	struct mpch_party pp[MPC_MAX_PARTIES];
	fault_setup(&honest, 800);
	struct mpch_opts o = {.fault_party = -1};
	ck_assert_int_eq(mpch_run(3, &o, prog_fault, &honest, pp), 0);
	check_outputs(&honest.g, 3, pp);
	for (size_t c = 0; c < sizeof bits / sizeof bits[0]; c++) {
		struct fprog fp;
		struct mpc_dealer *d;
		fault_setup(&fp, 800);
		ck_assert_int_eq(mpc_dealer_new(3, &d), 0);
		ck_assert_int_eq(mpc_dealer_inject(d, MPC_DEALER_FAULT_MTRIPLE_VALUE, c % 15, bits[c]), 0);
		o.dealer = d;
		ck_assert_int_eq(mpch_run(3, &o, prog_fault, &fp, pp), 0);
		for (unsigned i = 0; i < 3; i++) {
			if (pp[i].rc != 0) {
				ck_assert_str_eq(pp[i].failed, "triple-sacrifice");
				assert_nothing_released(&fp, i);
				continue;
			}
			ck_assert_mem_eq(fp.g.out[i], honest.g.out[0], FS.m * FS.n * sizeof(ring64_t));
			ck_assert(bits[c] >= 127); /* below 2^127 a value fault is always caught here */
		}
		caught += pp[0].rc != 0;
		mpc_dealer_free(d);
		mprog_free(&fp.g);
	}
	ck_assert_int_ge(caught, 2); /* bits 64 and 100 at least; 127 when t is odd */
	mprog_free(&honest.g);
}
END_TEST

/* A MAC share of C off by 2^bit passes the sacrifice's values but not the MAC check
 * (of tau's opening, or of the product when there is no sacrifice); nothing is
 * released. */
START_TEST(test_bad_mtriple_mac_caught)
{
	unsigned np = NS[_i];
	for (int nos = 0; nos <= 1; nos++) {
		struct fprog fp;
		struct mpch_party pp[MPC_MAX_PARTIES];
		struct mpc_dealer *d;
		fault_setup(&fp, 900 + nos);
		ck_assert_int_eq(mpc_dealer_new(np, &d), 0);
		ck_assert_int_eq(mpc_dealer_inject(d, MPC_DEALER_FAULT_MTRIPLE_MAC, 4, nos ? 70 : 3), 0);
		struct mpch_opts o = {.fault_party = -1, .dealer = d, .cfg = {.no_sacrifice = nos}};
		ck_assert_int_eq(mpch_run(np, &o, prog_fault, &fp, pp), 0);
		for (unsigned i = 0; i < np; i++) {
			ck_assert_int_eq(pp[i].rc, ERR_MAC_CHECK);
			ck_assert_str_eq(pp[i].failed, "mac-check");
			ck_assert_int_eq(fp.after_abort[i], ERR_ABORTED);
			assert_nothing_released(&fp, i);
		}
		mpc_dealer_free(d);
		mprog_free(&fp.g);
	}
}
END_TEST

/* The rushing adversary of the sacrifice: it sees the honest shares of tau before it
 * sends its own and chooses its share so that tau opens to zero, hiding a dealer fault
 * in C. The wide openings carry MACs modulo 2^192, so the MAC check catches the change
 * (nothing is released). The rounds are told apart by size: rho is 16 k n bytes per
 * triple, tau 16 m n, and nothing else in the program has those sizes. */
struct rusher {
	size_t rho_len, tau_len;
	bool armed;
	int cancelled;
};

static void rush_tau(void *ctx, uint64_t round, unsigned n, unsigned me, const uint8_t *const in[],
		     const size_t in_len[], uint8_t *out, size_t out_len)
{
	struct rusher *r = ctx;
	(void)round;
	(void)in_len;
	bool tau = r->armed && out_len == r->tau_len;
	r->armed = out_len == r->rho_len;
	if (!tau)
		return;
	for (size_t e = 0; e < out_len / 16; e++) {
		ring128_t sum = ring128_load(out + 16 * e);
		for (unsigned j = 0; j < n; j++)
			if (j != me)
				sum += ring128_load(in[j] + 16 * e);
		if (sum != 0) {
			ring128_store(out + 16 * e, ring128_load(out + 16 * e) - sum);
			r->cancelled++;
		}
	}
}

START_TEST(test_sacrifice_cancel_caught)
{
	unsigned np = NS[_i];
	static const unsigned bits[] = {0, 40, 63, 100};
	for (size_t c = 0; c < sizeof bits / sizeof bits[0]; c++) {
		struct fprog fp;
		struct mpch_party pp[MPC_MAX_PARTIES];
		struct mpc_dealer *d;
		struct rusher r = {.rho_len = 2 * 16 * FS.k * FS.n, .tau_len = 2 * 16 * FS.m * FS.n};
		fault_setup(&fp, 1000 + c);
		ck_assert_int_eq(mpc_dealer_new(np, &d), 0);
		ck_assert_int_eq(mpc_dealer_inject(d, MPC_DEALER_FAULT_MTRIPLE_VALUE, 2 + c, bits[c]), 0);
		unsigned adv = (unsigned)(c % np);
		struct mpch_opts o = {.fault_party = -1, .dealer = d, .rush_party = (int)adv,
				      .rush = rush_tau, .rush_ctx = &r};
		ck_assert_int_eq(mpch_run(np, &o, prog_fault, &fp, pp), 0);
		ck_assert_int_ge(r.cancelled, 1); /* tau was not zero: the adversary hid it */
		for (unsigned i = 0; i < np; i++) {
			if (i == adv)
				continue;
			ck_assert_msg(pp[i].rc == ERR_MAC_CHECK, "bit %u party %u: %d (%s)", bits[c], i,
				      pp[i].rc, pp[i].failed ? pp[i].failed : "-");
			ck_assert_str_eq(pp[i].failed, "mac-check");
			assert_nothing_released(&fp, i);
		}
		mpc_dealer_free(d);
		mprog_free(&fp.g);
	}
}
END_TEST

/* A matrix-triple payload of the wrong version or length is refused ("preprocessing")
 * and the other parties are released. */
struct bad_src {
	struct mpc_dealer *d;
	int mode; /* 1: version, 2: one byte short */
};

static int bad_fetch(void *ctx, unsigned party, const struct mpc_prep_req *req, uint8_t **payload,
		     size_t *len)
{
	struct bad_src *b = ctx;
	int rc = mpc_dealer_fetch(b->d, party, req, payload, len);
	if (rc == 0 && req->kind == MPC_PREP_MTRIPLE && b->mode == 1)
		(*payload)[4] = 2;
	if (rc == 0 && req->kind == MPC_PREP_MTRIPLE && b->mode == 2)
		(*len)--;
	return rc;
}

START_TEST(test_bad_payload_refused)
{
	for (int mode = 1; mode <= 2; mode++) {
		struct fprog fp;
		struct mpch_party pp[MPC_MAX_PARTIES];
		struct bad_src b = {.mode = mode};
		fault_setup(&fp, 1100);
		ck_assert_int_eq(mpc_dealer_new(3, &b.d), 0);
		struct mpc_prep_source src = {.fetch = bad_fetch, .ctx = &b};
		struct mpch_opts o = {.fault_party = -1, .dealer = b.d, .src = &src};
		ck_assert_int_eq(mpch_run(3, &o, prog_fault, &fp, pp), 0);
		ck_assert_int_eq(pp[0].rc, mode == 1 ? ERR_UNSUPPORTED : ERR_PROTOCOL);
		ck_assert_str_eq(pp[0].failed, "preprocessing");
		for (unsigned i = 1; i < 3; i++)
			ck_assert_int_eq(pp[i].rc, ERR_ABORTED);
		for (unsigned i = 0; i < 3; i++)
			assert_nothing_released(&fp, i);
		mpc_dealer_free(b.d);
		mprog_free(&fp.g);
	}
}
END_TEST

/* ---------------------------------------------------------------- bit flips */

/* A pipeline of products: two from a prefill, one fixed-point product whose triple is
 * fetched inline, batched with a second ring product, then a product of a product,
 * revealed at the end. Operands are integers (fixed point with zero fraction) so that
 * truncation is exact and the honest output one fixed vector. */
static const struct shape PS = {2, 5, 3};

struct pipe {
	struct mprog g;
	ring64_t w[3 * 4]; /* a 3 x 4 matrix of party 1 */
	ring64_t out[MPC_MAX_PARTIES][4 * 2 * 3 + 2 * 4];
	bool released[MPC_MAX_PARTIES];
};

static int prog_pipe(struct mpch_party *pp, void *arg)
{
	struct pipe *q = arg;
	struct mprog *g = &q->g;
	struct mpc *p = pp->mpc;
	const size_t mk = g->m * g->k, kn = g->k * g->n, mn = g->m * g->n;
	mpc_share x[2 * 2 * 5], y[2 * 5 * 3], w[3 * 4], z[4 * 2 * 3 + 2 * 4];
	struct mpc_batch *b = NULL;
	int rc = input_xy(pp, g, x, y);
	if (rc == 0)
		rc = mpc_input(p, 1, pp->id == 1 ? q->w : NULL, w, 12);
	if (rc == 0)
		rc = mpc_matmul_prefill(p, g->m, g->k, g->n, 2);
	if (rc == 0)
		rc = mpc_matmul(p, z, x, y, g->m, g->k, g->n);
	if (rc == 0)
		rc = mpc_batch_new(p, &b);
	if (rc == 0)
		rc = mpc_batch_matmul_fx(b, z + mn, x + mk, y + kn, g->m, g->k, g->n);
	if (rc == 0)
		rc = mpc_batch_matmul(b, z + 2 * mn, x, y, g->m, g->k, g->n);
	if (rc == 0)
		rc = mpc_batch_run(b);
	mpc_batch_free(b);
	if (rc == 0) /* (X Y)_fx W: 2x3 by 3x4, inline triple */
		rc = mpc_matmul_fx(p, z + 3 * mn, z + mn, w, g->m, g->n, 4);
	if (rc == 0)
		rc = mpc_reveal(p, q->out[pp->id], z, 3 * mn + 2 * 4);
	q->released[pp->id] = rc == 0;
	return rc;
}

static void pipe_init(struct pipe *q)
{
	memset(q, 0, sizeof *q);
	mprog_init(&q->g, &PS, 16, 4242);
	for (size_t i = 0; i < PS.m * PS.k; i++)
		q->g.xf[i] = (ring64_t)((int64_t)(i % 7) - 3) << 16;
	for (size_t i = 0; i < PS.k * PS.n; i++)
		q->g.yf[i] = (ring64_t)((int64_t)(i % 5) - 2) << 16;
	for (size_t i = 0; i < 12; i++)
		q->w[i] = (ring64_t)((int64_t)(i % 3) - 1) << 16;
}

static void run_bitflips(unsigned np, int runs, uint64_t seed)
{
	struct pipe honest, g;
	struct mpch_party pp[MPC_MAX_PARTIES];
	memset(&g, 0, sizeof g);
	const size_t mn = PS.m * PS.n, nout = 3 * mn + 8;
	pipe_init(&honest);
	struct mpch_opts o = {.fault_party = -1};
	ck_assert_int_eq(mpch_run(np, &o, prog_pipe, &honest, pp), 0);
	for (unsigned i = 0; i < np; i++) {
		ck_assert_int_eq(pp[i].rc, 0);
		ck_assert_mem_eq(honest.out[i], honest.out[0], nout * sizeof(ring64_t));
	}
	/* the honest output is right: X Y twice, (X Y)_fx exactly, then times W */
	int64_t xy[2 * 3];
	for (size_t r = 0; r < PS.m; r++)
		for (size_t c = 0; c < PS.n; c++) {
			ring64_t want = 0;
			int64_t wi = 0;
			for (size_t l = 0; l < PS.k; l++) {
				want += honest.g.xr[r * PS.k + l] * honest.g.yr[l * PS.n + c];
				wi += ((int64_t)honest.g.xf[r * PS.k + l] >> 16) * ((int64_t)honest.g.yf[l * PS.n + c] >> 16);
			}
			xy[r * PS.n + c] = wi;
			ck_assert_uint_eq(honest.out[0][r * PS.n + c], want);
			ck_assert_uint_eq(honest.out[0][2 * mn + r * PS.n + c], want);
			ck_assert_int_eq((int64_t)honest.out[0][mn + r * PS.n + c], wi * 65536);
		}
	for (size_t r = 0; r < PS.m; r++)
		for (size_t c = 0; c < 4; c++) {
			int64_t acc = 0;
			for (size_t l = 0; l < PS.n; l++)
				acc += xy[r * PS.n + l] * ((int64_t)honest.w[l * 4 + c] >> 16);
			ck_assert_int_eq((int64_t)honest.out[0][3 * mn + r * 4 + c], acc * 65536);
		}
	const uint64_t R = pp[0].st.rounds;
	int fired = 0, aborted = 0, harmless = 0;
	for (int run = 0; run < runs; run++) {
		mprog_free(&g.g);
		pipe_init(&g);
		o.fault_party = (int)(mpch_rand(&seed) % np);
		o.fault_to = (unsigned)((o.fault_party + 1 + mpch_rand(&seed) % (np - 1)) % np);
		o.fault_round = mpch_rand(&seed) % R;
		o.fault_bit = mpch_rand(&seed);
		ck_assert_int_eq(mpch_run(np, &o, prog_pipe, &g, pp), 0);
		bool any_abort = false;
		for (unsigned i = 0; i < np; i++) {
			if (g.released[i]) /* whatever was released is exactly the honest output */
				ck_assert_mem_eq(g.out[i], honest.out[0], nout * sizeof(ring64_t));
			any_abort |= pp[i].rc != 0;
		}
		bool f = pp[o.fault_party].fault_fired;
		fired += f;
		aborted += f && any_abort;
		harmless += f && !any_abort;
	}
	mprog_free(&g.g);
	mprog_free(&honest.g);
	fprintf(stderr, "matmul bit flips N=%u: %d runs over %llu rounds, %d injected, %d aborted, "
			"%d harmless, 0 wrong releases\n",
		np, runs, (unsigned long long)R, fired, aborted, harmless);
	/* 5 of the 25 rounds are inputs, in which only the owner sends: a fault chosen for
	 * another party there has nothing to flip (up to a fifth of the runs at N = 5) */
	ck_assert_int_ge(fired, runs / 2);
	ck_assert_int_ge(aborted, fired * 9 / 10);
}

START_TEST(test_bitflips)
{
	static const int runs[] = {100, 300, 100};
	/* quick (the sanitizer and second-compiler runs): a third of the runs */
	run_bitflips(NS[_i], tu_quick() ? runs[_i] / 3 : runs[_i], 0x5eed0000ULL + NS[_i]);
}
END_TEST

/* ---------------------------------------------------------------- bad input */

START_TEST(test_bad_arguments)
{
	struct mpc_hub *hub;
	struct mpc_net *net;
	struct mpc_dealer *d;
	struct mpc *p;
	struct mpc_batch *b;
	uint8_t seed[MPC_SEED_BYTES];
	mpc_share s[4] = {{0, 0}};
	ck_assert_int_eq(mpc_hub_new(2, 0, &hub), 0);
	ck_assert_int_eq(mpc_net_local_new(hub, 0, &net), 0);
	ck_assert_int_eq(mpc_dealer_new(2, &d), 0);
	ck_assert_int_eq(mpc_dealer_party_seed(d, 0, seed), 0);
	struct mpc_prep_source src = mpc_dealer_source(d);
	ck_assert_int_eq(mpc_new(net, seed, &src, NULL, &p), 0);
	ck_assert_int_eq(mpc_batch_new(p, &b), 0);
	/* zero dimensions and missing pointers */
	static const size_t zero[][3] = {{0, 1, 1}, {1, 0, 1}, {1, 1, 0}, {0, 0, 0}};
	for (size_t i = 0; i < 4; i++) {
		const size_t *z = zero[i];
		ck_assert_int_eq(mpc_matmul(p, s, s, s, z[0], z[1], z[2]), ERR_INVALID);
		ck_assert_int_eq(mpc_matmul_fx(p, s, s, s, z[0], z[1], z[2]), ERR_INVALID);
		ck_assert_int_eq(mpc_batch_matmul(b, s, s, s, z[0], z[1], z[2]), ERR_INVALID);
		ck_assert_int_eq(mpc_batch_matmul_fx(b, s, s, s, z[0], z[1], z[2]), ERR_INVALID);
		ck_assert_int_eq(mpc_matmul_prefill(p, z[0], z[1], z[2], 1), ERR_INVALID);
	}
	ck_assert_int_eq(mpc_matmul(p, NULL, s, s, 1, 1, 1), ERR_INVALID);
	ck_assert_int_eq(mpc_matmul(p, s, NULL, s, 1, 1, 1), ERR_INVALID);
	ck_assert_int_eq(mpc_batch_matmul_fx(b, s, s, NULL, 1, 1, 1), ERR_INVALID);
	ck_assert_int_eq(mpc_batch_matmul(NULL, s, s, s, 1, 1, 1), ERR_INVALID);
	/* dimensions whose products overflow, past 2^16, or a triple past 2^20 shares */
	static const size_t big[][3] = {{SIZE_MAX, SIZE_MAX, 2},
					{(size_t)1 << 32, (size_t)1 << 32, 1},
					{65537, 1, 1},
					{1, 1, 65537},
					{1, 1024, 1024}, /* 1024 + 2^21 + 2048 shares */
					{512, 512, 512}};
	for (size_t i = 0; i < sizeof big / sizeof big[0]; i++) {
		const size_t *z = big[i];
		ck_assert_int_eq(mpc_matmul(p, s, s, s, z[0], z[1], z[2]), ERR_RANGE);
		ck_assert_int_eq(mpc_matmul_fx(p, s, s, s, z[0], z[1], z[2]), ERR_RANGE);
		ck_assert_int_eq(mpc_batch_matmul(b, s, s, s, z[0], z[1], z[2]), ERR_RANGE);
		ck_assert_int_eq(mpc_matmul_prefill(p, z[0], z[1], z[2], 1), ERR_RANGE);
	}
	ck_assert_int_eq(mpc_matmul_prefill(p, 2, 3, 4, 0), 0); /* nothing to do */
	/* matrix triples are shaped per product: mpc_prefill has no shape for them */
	ck_assert_int_eq(mpc_prefill(p, MPC_PREP_MTRIPLE, 0, 1), ERR_INVALID);
	ck_assert_ptr_null(mpc_failed_check(p)); /* refusals do not hurt the engine */
	struct mpc_stats st;
	mpc_get_stats(p, &st);
	ck_assert_uint_eq(st.rounds, 0);

	/* the dealer refuses malformed requests and serves the documented payload size */
	uint8_t *pl;
	size_t len;
	struct mpc_prep_req r = {.kind = MPC_PREP_MTRIPLE, .param = 7, .n = 2, .rows = 3, .cols = 5};
	struct mpc_prep_req bad[] = {r, r, r, r, r, r, r};
	bad[0].rows = 0;
	bad[1].param = 0;
	bad[2].cols = 0;
	bad[3].rows = 65537;
	bad[4].n = 0;
	bad[5].n = (uint32_t)(MPC_MMUL_MAX_SHARES / (21 + 70 + 30)) + 1; /* past 2^20 shares */
	bad[6] = (struct mpc_prep_req){.kind = MPC_PREP_MTRIPLE, .param = 1024, .n = 1, .rows = 1,
				       .cols = 1024};
	for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++)
		ck_assert_int_eq(mpc_dealer_fetch(d, 0, &bad[i], &pl, &len), ERR_INVALID);
	ck_assert_int_eq(mpc_dealer_fetch(d, 1, &r, &pl, &len), ERR_INVALID); /* party 1 needs none */
	ck_assert_int_eq(mpc_dealer_fetch(d, 0, &r, &pl, &len), 0);
	/* header, then per triple: MACs of A, B, B' (24 bytes), values and MACs of C, C' */
	ck_assert_uint_eq(len, 24 + 2 * (24 * (21 + 35 + 35) + 48 * (15 + 15)));
	ck_assert_mem_eq(pl, "MPRP", 4);
	free(pl);
	ck_assert_int_eq(mpc_dealer_fetch(d, 0, &r, &pl, &len), ERR_PROTOCOL); /* asked twice */
	r.batch = 1;
	r.rows = 4; /* another shape is the next batch of the same sequence */
	ck_assert_int_eq(mpc_dealer_fetch(d, 0, &r, &pl, &len), 0);
	free(pl);
	ck_assert_int_eq(mpc_dealer_inject(d, MPC_DEALER_FAULT_MTRIPLE_MAC, 0, 192), ERR_INVALID);
	ck_assert_int_eq(mpc_dealer_inject(d, (enum mpc_dealer_fault)5, 0, 1), ERR_INVALID);

	mpc_batch_free(b);
	mpc_batch_free(NULL);
	mpc_free(p);
	mpc_net_free(net);
	mpc_dealer_free(d);
	mpc_hub_free(hub);
}
END_TEST

Suite *suite(void)
{
	log_set_level(LOG_LEVEL_ERROR); /* the abort tests log a warning per party */
	Suite *s = suite_create("mpc_mmul");
	TCase *tc = tcase_create("mpc_mmul");
	tcase_set_timeout(tc, 120);
	int nn = (int)(sizeof NS / sizeof NS[0]);
	tcase_add_loop_test(tc, test_shapes_against_double, 0, nn);
	tcase_add_test(tc, test_fx_every_f_end);
	tcase_add_loop_test(tc, test_inline_sacrifice_cost, 0, nn);
	tcase_add_loop_test(tc, test_batch_shares_rounds, 0, nn);
	tcase_add_loop_test(tc, test_faulty_mtriple_caught, 0, nn);
	tcase_add_test(tc, test_fault_real_without_sacrifice);
	tcase_add_test(tc, test_high_fault_never_wrong);
	tcase_add_loop_test(tc, test_bad_mtriple_mac_caught, 0, nn);
	tcase_add_loop_test(tc, test_sacrifice_cancel_caught, 0, nn);
	tcase_add_test(tc, test_bad_payload_refused);
	tcase_add_loop_test(tc, test_bitflips, 0, nn);
	tcase_add_test(tc, test_bad_arguments);
	suite_add_tcase(s, tc);
	return s;
}
