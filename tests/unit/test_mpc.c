/* mpc: the engine computes what it claims at N = 2, 3 and 5 (input, linear operations,
 * Beaver multiplication exactly in Z_2^64, fixed-point multiplication and truncation
 * within their stated error, the fixed-mask matrix product and its reuse at the cost
 * of the activations only, batching into one round), counts rounds and bytes as
 * docs/PROTOCOL.md states, MAC-checks when the unchecked batch is full, and aborts
 * cleanly, naming the check, on a faulty dealer triple, a bad dealer payload or a peer
 * that sends the wrong number of bytes. */
#include <math.h>
#include <stdio.h>
#include <string.h>

#include "err/err.h"
#include "log/log.h"
#include "test_mpc_harness.h"
#include "testutil.h"

static const unsigned NS[] = {2, 3, 5};

#define K 32
#define MAXOUT 512

struct prog {
	unsigned n, m;
	uint64_t seed;
	ring64_t x[K], y[K]; /* inputs of party 0 and party n-1 */
	ring64_t out[MPC_MAX_PARTIES][MAXOUT];
	size_t nout;
	/* measured inside the program */
	uint64_t rounds[MPC_MAX_PARTIES], bytes[MPC_MAX_PARTIES];
	int after_abort[MPC_MAX_PARTIES];
};

static int input_xy(struct mpch_party *pp, struct prog *g, mpc_share *x, mpc_share *y)
{
	int rc = mpc_input(pp->mpc, 0, pp->id == 0 ? g->x : NULL, x, K);
	if (rc == 0)
		rc = mpc_input(pp->mpc, pp->n - 1, pp->id == pp->n - 1 ? g->y : NULL, y, K);
	return rc;
}

/* ---------------------------------------------------------------- linear */

static int prog_linear(struct mpch_party *pp, void *arg)
{
	struct prog *g = arg;
	struct mpc *p = pp->mpc;
	mpc_share x[K], y[K], r[6 * K];
	ring64_t c[K];
	for (int i = 0; i < K; i++)
		c[i] = 1000 + (ring64_t)i;
	int rc = input_xy(pp, g, x, y);
	if (rc != 0)
		return rc;
	mpc_add(p, r, x, y, K);
	mpc_sub(p, r + K, x, y, K);
	mpc_add_public(p, r + 2 * K, x, c, K);
	mpc_mul_public(p, r + 3 * K, y, c, K);
	mpc_scale(p, r + 4 * K, x, (ring64_t)-3, K);
	mpc_neg(p, r + 5 * K, y, K);
	mpc_add(p, r + 5 * K, r + 5 * K, r + 4 * K, K); /* aliasing */
	g->nout = 6 * K + 1;
	mpc_share k;
	mpc_constant(p, &k, 42, 1);
	if ((rc = mpc_reveal(p, g->out[pp->id], r, 6 * K)) != 0)
		return rc;
	return mpc_reveal(p, g->out[pp->id] + 6 * K, &k, 1);
}

static void fill_inputs(struct prog *g, unsigned n, uint64_t seed)
{
	memset(g, 0, sizeof *g);
	g->n = n;
	g->seed = seed;
	for (int i = 0; i < K; i++) {
		g->x[i] = mpch_rand(&seed);
		g->y[i] = mpch_rand(&seed);
	}
	g->x[0] = 0;
	g->y[1] = UINT64_MAX;
	g->x[2] = (ring64_t)1 << 63;
}

START_TEST(test_linear)
{
	unsigned n = NS[_i];
	struct prog g;
	struct mpch_party pp[MPC_MAX_PARTIES];
	fill_inputs(&g, n, 11 + n);
	ck_assert_int_eq(mpch_run(n, NULL, prog_linear, &g, pp), 0);
	for (unsigned i = 0; i < n; i++) {
		ck_assert_int_eq(pp[i].rc, 0);
		const ring64_t *o = g.out[i];
		for (int j = 0; j < K; j++) {
			ck_assert_uint_eq(o[j], g.x[j] + g.y[j]);
			ck_assert_uint_eq(o[K + j], g.x[j] - g.y[j]);
			ck_assert_uint_eq(o[2 * K + j], g.x[j] + 1000 + (ring64_t)j);
			ck_assert_uint_eq(o[3 * K + j], g.y[j] * (1000 + (ring64_t)j));
			ck_assert_uint_eq(o[4 * K + j], g.x[j] * (ring64_t)-3);
			ck_assert_uint_eq(o[5 * K + j], -g.y[j] + g.x[j] * (ring64_t)-3);
		}
		ck_assert_uint_eq(o[6 * K], 42);
		/* two inputs, two reveals, each reveal followed by a 4-round check, the first
		 * toss commits in an extra round */
		ck_assert_uint_eq(pp[i].st.rounds, 2 + 2 * (1 + 4) + 1);
		ck_assert_uint_eq(pp[i].st.checks, 2);
	}
}
END_TEST

/* ---------------------------------------------------------------- multiplication */

static int prog_mul(struct mpch_party *pp, void *arg)
{
	struct prog *g = arg;
	mpc_share x[K], y[K], z[K];
	int rc = input_xy(pp, g, x, y);
	if (rc == 0)
		rc = mpc_mul(pp->mpc, z, x, y, K);
	if (rc == 0)
		rc = mpc_mul(pp->mpc, z, z, x, K); /* out aliases an input */
	g->nout = K;
	if (rc == 0)
		rc = mpc_reveal(pp->mpc, g->out[pp->id], z, K);
	return rc;
}

START_TEST(test_mul_exact)
{
	unsigned n = NS[_i];
	struct prog g;
	struct mpch_party pp[MPC_MAX_PARTIES];
	fill_inputs(&g, n, 21 + n);
	struct mpch_opts o = {.fault_party = -1, .cfg = {.prep_batch = 16}};
	ck_assert_int_eq(mpch_run(n, &o, prog_mul, &g, pp), 0);
	for (unsigned i = 0; i < n; i++) {
		ck_assert_int_eq(pp[i].rc, 0);
		for (int j = 0; j < K; j++)
			ck_assert_uint_eq(g.out[i][j], g.x[j] * g.y[j] * g.x[j]);
		ck_assert_uint_eq(pp[i].st.triples, 2 * K);
		ck_assert_uint_eq(pp[i].st.triples_sacrificed, 2 * K);
	}
}
END_TEST

static int prog_mul_fx(struct mpch_party *pp, void *arg)
{
	struct prog *g = arg;
	mpc_share x[K], y[K], z[K];
	int rc = input_xy(pp, g, x, y);
	if (rc == 0)
		rc = mpc_mul_fx(pp->mpc, z, x, y, K);
	g->nout = K;
	if (rc == 0)
		rc = mpc_reveal(pp->mpc, g->out[pp->id], z, K);
	return rc;
}

START_TEST(test_mul_fx_accuracy)
{
	unsigned n = NS[_i];
	for (unsigned f = RING_FXP_MIN_F; f <= RING_FXP_MAX_F; f += 8) {
		struct prog g;
		struct mpch_party pp[MPC_MAX_PARTIES];
		double xd[K], yd[K];
		uint64_t s = 31 + n + f;
		fill_inputs(&g, n, s);
		for (int j = 0; j < K; j++) {
			xd[j] = ((double)(mpch_rand(&s) >> 11) / 9007199254740992.0 - 0.5) * 200.0;
			yd[j] = ((double)(mpch_rand(&s) >> 11) / 9007199254740992.0 - 0.5) * 200.0;
			ck_assert_int_eq(ring_fxp_encode(xd[j], f, &g.x[j], NULL), 0);
			ck_assert_int_eq(ring_fxp_encode(yd[j], f, &g.y[j], NULL), 0);
		}
		struct mpch_opts o = {.fault_party = -1, .cfg = {.frac_bits = f, .prep_batch = 64}};
		ck_assert_int_eq(mpch_run(n, &o, prog_mul_fx, &g, pp), 0);
		for (unsigned i = 0; i < n; i++) {
			ck_assert_int_eq(pp[i].rc, 0);
			for (int j = 0; j < K; j++) {
				/* exact: floor(x y / 2^f) or one more */
				__int128 prod = (__int128)(int64_t)g.x[j] * (int64_t)g.y[j];
				int64_t fl = (int64_t)(prod >> f);
				int64_t got = (int64_t)g.out[i][j];
				ck_assert_msg(got == fl || got == fl + 1, "f=%u j=%d", f, j);
				/* against doubles: input rounding plus < 1 ulp of truncation */
				double ulp = ldexp(1.0, -(int)f);
				double bound = (fabs(xd[j]) + fabs(yd[j]) + 1.0) * ulp / 2 + ulp;
				double err = fabs(ring_fxp_decode(g.out[i][j], f) - xd[j] * yd[j]);
				ck_assert_msg(err <= bound, "f=%u err=%g bound=%g", f, err, bound);
			}
		}
	}
}
END_TEST

/* ---------------------------------------------------------------- truncation */

static int prog_trunc(struct mpch_party *pp, void *arg)
{
	struct prog *g = arg;
	mpc_share x[K], y[K];
	int rc = input_xy(pp, g, x, y);
	if (rc == 0)
		rc = mpc_trunc(pp->mpc, y, x, K, g->m);
	g->nout = K;
	if (rc == 0)
		rc = mpc_reveal(pp->mpc, g->out[pp->id], y, K);
	return rc;
}

START_TEST(test_trunc_exact_to_one_unit)
{
	unsigned n = NS[_i];
	static const unsigned ms[] = {1, 8, 16, 24, 40, 61, 62};
	const int64_t lim = ((int64_t)1 << 62) - 1;
	for (size_t t = 0; t < sizeof ms / sizeof ms[0]; t++) {
		struct prog g;
		struct mpch_party pp[MPC_MAX_PARTIES];
		uint64_t s = 41 + n + t;
		fill_inputs(&g, n, s);
		g.m = ms[t];
		for (int j = 0; j < K; j++)
			g.x[j] = (ring64_t)((int64_t)mpch_rand(&s) >> 2); /* |x| < 2^62 */
		/* the edges of the domain and around zero */
		g.x[0] = (ring64_t)lim;
		g.x[1] = (ring64_t)-lim - 1;
		g.x[2] = 0;
		g.x[3] = (ring64_t)-1;
		g.x[4] = 1;
		struct mpch_opts o = {.fault_party = -1, .cfg = {.prep_batch = 64}};
		ck_assert_int_eq(mpch_run(n, &o, prog_trunc, &g, pp), 0);
		for (unsigned i = 0; i < n; i++) {
			ck_assert_int_eq(pp[i].rc, 0);
			for (int j = 0; j < K; j++) {
				int64_t fl = (int64_t)g.x[j] >> g.m; /* arithmetic shift = floor */
				int64_t got = (int64_t)g.out[i][j];
				ck_assert_msg(got == fl || got == fl + 1, "m=%u x=%lld got=%lld",
					      g.m, (long long)(int64_t)g.x[j], (long long)got);
			}
		}
	}
}
END_TEST

/* Rounding is unbiased: x = k 2^m + 2^m / 4 rounds up with probability 1/4, and a
 * multiple of 2^m is exact. */
START_TEST(test_trunc_probabilistic_rounding)
{
	struct prog g;
	struct mpch_party pp[MPC_MAX_PARTIES];
	int ups = 0, total = 0;
	for (int rep = 0; rep < 40; rep++) {
		uint64_t s = 1000 + (uint64_t)rep;
		fill_inputs(&g, 3, s);
		g.m = 16;
		for (int j = 0; j < K; j++) {
			int64_t k = (int64_t)(mpch_rand(&s) >> 20) - ((int64_t)1 << 43);
			g.x[j] = (ring64_t)(k * 65536 + (j % 2 ? 16384 : 0));
		}
		ck_assert_int_eq(mpch_run(3, NULL, prog_trunc, &g, pp), 0);
		ck_assert_int_eq(pp[0].rc, 0);
		for (int j = 0; j < K; j++) {
			int64_t fl = (int64_t)g.x[j] >> 16, got = (int64_t)g.out[0][j];
			if (j % 2 == 0) {
				ck_assert_int_eq(got, fl);
			} else {
				ups += got == fl + 1;
				total++;
			}
		}
	}
	double frac = (double)ups / total; /* 640 draws: sd 0.017 */
	ck_assert_msg(fabs(frac - 0.25) < 0.08, "round-up frequency %g", frac);
}
END_TEST

/* ---------------------------------------------------------------- batching and costs */

static int prog_batch(struct mpch_party *pp, void *arg)
{
	struct prog *g = arg;
	struct mpc *p = pp->mpc;
	mpc_share x[K], y[K], z[K], t[K];
	struct mpc_stats a, b;
	struct mpc_batch *bt = NULL;
	int rc = input_xy(pp, g, x, y);
	if (rc == 0) /* warm the pools so the measured round has no preprocessing traffic */
		rc = mpc_mul(p, z, x, y, K);
	if (rc == 0)
		rc = mpc_trunc(p, t, x, K, 16);
	if (rc != 0)
		return rc;
	if ((rc = mpc_batch_new(p, &bt)) != 0)
		return rc;
	mpc_get_stats(p, &a);
	if ((rc = mpc_batch_mul(bt, z, x, y, K / 2)) == 0 &&
	    (rc = mpc_batch_mul(bt, z + K / 2, x + K / 2, y + K / 2, K / 2)) == 0 &&
	    (rc = mpc_batch_trunc(bt, t, x, K, 16)) == 0)
		rc = mpc_batch_run(bt);
	mpc_get_stats(p, &b);
	mpc_batch_free(bt);
	g->rounds[pp->id] = b.rounds - a.rounds;
	g->bytes[pp->id] = b.bytes_sent - a.bytes_sent;
	g->nout = 2 * K;
	if (rc == 0)
		rc = mpc_reveal(p, g->out[pp->id], z, K);
	if (rc == 0)
		rc = mpc_reveal(p, g->out[pp->id] + K, t, K);
	return rc;
}

START_TEST(test_batch_one_round)
{
	unsigned n = NS[_i];
	struct prog g;
	struct mpch_party pp[MPC_MAX_PARTIES];
	fill_inputs(&g, n, 51 + n);
	for (int j = 0; j < K; j++)
		g.x[j] = (ring64_t)((int64_t)g.x[j] >> 3);
	struct mpch_opts o = {.fault_party = -1, .cfg = {.prep_batch = 256}};
	ck_assert_int_eq(mpch_run(n, &o, prog_batch, &g, pp), 0);
	for (unsigned i = 0; i < n; i++) {
		ck_assert_int_eq(pp[i].rc, 0);
		ck_assert_uint_eq(g.rounds[i], 1);
		/* 8 bytes per opened value to each peer: 2 per product, 1 per truncation */
		ck_assert_uint_eq(g.bytes[i], (uint64_t)(n - 1) * 8 * (2 * K + K));
		for (int j = 0; j < K; j++) {
			ck_assert_uint_eq(g.out[i][j], g.x[j] * g.y[j]);
			int64_t fl = (int64_t)g.x[j] >> 16, got = (int64_t)g.out[i][K + j];
			ck_assert(got == fl || got == fl + 1);
		}
	}
}
END_TEST

static int prog_many_opens(struct mpch_party *pp, void *arg)
{
	struct prog *g = arg;
	mpc_share x[K], y[K], z[K];
	int rc = input_xy(pp, g, x, y);
	for (int r = 0; rc == 0 && r < 10; r++)
		rc = mpc_mul(pp->mpc, z, x, y, K);
	g->nout = K;
	if (rc == 0)
		rc = mpc_open(pp->mpc, g->out[pp->id], z, K);
	return rc;
}

/* With check_every = 100, ten products of 32 (64 opened values each) force a check
 * after every second product: five checks without any reveal. */
START_TEST(test_check_when_batch_full)
{
	struct prog g;
	struct mpch_party pp[MPC_MAX_PARTIES];
	fill_inputs(&g, 3, 61);
	struct mpch_opts o = {.fault_party = -1,
			      .cfg = {.check_every = 100, .prep_batch = 64, .no_sacrifice = true}};
	ck_assert_int_eq(mpch_run(3, &o, prog_many_opens, &g, pp), 0);
	for (unsigned i = 0; i < 3; i++) {
		ck_assert_int_eq(pp[i].rc, 0);
		ck_assert_uint_eq(pp[i].st.checks, 5);
		ck_assert_uint_eq(pp[i].st.triples_sacrificed, 0);
	}
}
END_TEST

/* ---------------------------------------------------------------- fixed-mask matrices */

#define FR 8  /* rows of W */
#define FC 12 /* cols of W */
#define FM 3  /* rows of X */

struct fprog {
	ring64_t w[FR * FC], x[2][FM * FR];
	ring64_t out[MPC_MAX_PARTIES][2 * FM * FC + FM * FC];
	uint64_t rounds[MPC_MAX_PARTIES], bytes[MPC_MAX_PARTIES];
};

static int prog_fmat(struct mpch_party *pp, void *arg)
{
	struct fprog *g = arg;
	struct mpc *p = pp->mpc;
	mpc_share w[FR * FC], x[2][FM * FR], y[3][FM * FC];
	struct mpc_fmat *fm = NULL;
	struct mpc_batch *bt = NULL;
	struct mpc_stats a, b;
	unsigned last = pp->n - 1;
	int rc = mpc_input(p, 0, pp->id == 0 ? g->w : NULL, w, FR * FC);
	for (int u = 0; rc == 0 && u < 2; u++)
		rc = mpc_input(p, last, pp->id == last ? g->x[u] : NULL, x[u], FM * FR);
	if (rc == 0)
		rc = mpc_fmat_new(p, w, FR, FC, &fm);
	if (rc == 0)
		rc = mpc_fmat_mul(p, fm, y[0], x[0], FM); /* integer product */
	/* second use, fixed point, batched with its own truncation's neighbour */
	if (rc == 0)
		rc = mpc_batch_new(p, &bt);
	mpc_get_stats(p, &a);
	if (rc == 0 && (rc = mpc_batch_fmat_mul(bt, fm, y[1], x[1], FM)) == 0)
		rc = mpc_batch_run(bt);
	mpc_get_stats(p, &b);
	g->rounds[pp->id] = b.rounds - a.rounds;
	g->bytes[pp->id] = b.bytes_sent - a.bytes_sent;
	if (rc == 0)
		rc = mpc_trunc(p, y[2], y[1], FM * FC, mpc_frac_bits(p));
	if (rc == 0)
		rc = mpc_reveal(p, g->out[pp->id], y[0], 2 * FM * FC + FM * FC);
	mpc_batch_free(bt);
	mpc_fmat_free(fm);
	return rc;
}

START_TEST(test_fmat_product)
{
	unsigned n = NS[_i];
	struct fprog g;
	struct mpch_party pp[MPC_MAX_PARTIES];
	double wd[FR * FC], xd[FM * FR];
	uint64_t s = 101 + n;
	memset(&g, 0, sizeof g);
	for (int i = 0; i < FR * FC; i++) {
		wd[i] = ((double)(mpch_rand(&s) >> 11) / 9007199254740992.0 - 0.5) * 4.0;
		ck_assert_int_eq(ring_fxp_encode(wd[i], 16, &g.w[i], NULL), 0);
	}
	for (int i = 0; i < FM * FR; i++) {
		g.x[0][i] = mpch_rand(&s); /* any ring elements: the product is exact mod 2^64 */
		xd[i] = ((double)(mpch_rand(&s) >> 11) / 9007199254740992.0 - 0.5) * 20.0;
		ck_assert_int_eq(ring_fxp_encode(xd[i], 16, &g.x[1][i], NULL), 0);
	}
	struct mpch_opts o = {.fault_party = -1, .cfg = {.prep_batch = 64}};
	ck_assert_int_eq(mpch_run(n, &o, prog_fmat, &g, pp), 0);
	for (unsigned i = 0; i < n; i++) {
		ck_assert_int_eq(pp[i].rc, 0);
		/* a reuse opens only X - A: m x rows values, nothing of size rows x cols */
		ck_assert_uint_eq(g.rounds[i], 1);
		ck_assert_uint_eq(g.bytes[i], (uint64_t)(n - 1) * 8 * FM * FR);
		const ring64_t *y0 = g.out[i], *y1 = y0 + FM * FC, *y2 = y1 + FM * FC;
		for (int r = 0; r < FM; r++)
			for (int c = 0; c < FC; c++) {
				ring64_t want = 0;
				__int128 wide = 0;
				double ref = 0, mag = 0;
				for (int j = 0; j < FR; j++) {
					want += g.x[0][r * FR + j] * g.w[j * FC + c];
					wide += (__int128)(int64_t)g.x[1][r * FR + j] *
						(int64_t)g.w[j * FC + c];
					ref += xd[r * FR + j] * wd[j * FC + c];
					mag += fabs(xd[r * FR + j]) + fabs(wd[j * FC + c]);
				}
				ck_assert_uint_eq(y0[r * FC + c], want);
				ck_assert_uint_eq(y1[r * FC + c], (ring64_t)(uint64_t)wide);
				int64_t fl = (int64_t)(wide >> 16), got = (int64_t)y2[r * FC + c];
				ck_assert(got == fl || got == fl + 1);
				double ulp = ldexp(1.0, -16);
				double err = fabs(ring_fxp_decode(y2[r * FC + c], 16) - ref);
				ck_assert_msg(err <= (mag + 1) * ulp / 2 + ulp, "err %g", err);
			}
	}
}
END_TEST

/* ---------------------------------------------------------------- faults */

static int prog_mul_then_abort(struct mpch_party *pp, void *arg)
{
	struct prog *g = arg;
	int rc = prog_mul(pp, arg);
	if (rc != 0) {
		ring64_t v;
		mpc_share s = {0, 0};
		g->after_abort[pp->id] = mpc_open(pp->mpc, &v, &s, 1);
	}
	return rc;
}

/* A dealer that hands out a triple with c != ab (and a matching MAC) is caught by the
 * sacrifice before the triple is used, whichever half of the sacrificed batch it is in
 * and whichever bit below 2^64 is wrong. */
START_TEST(test_faulty_triple_caught)
{
	unsigned n = NS[_i];
	static const struct {
		uint64_t item;
		unsigned bit;
	} cases[] = {{5, 0}, {5, 63}, {16 + 3, 17}, {40, 40}};
	for (size_t c = 0; c < sizeof cases / sizeof cases[0]; c++) {
		struct prog g;
		struct mpch_party pp[MPC_MAX_PARTIES];
		struct mpc_dealer *d;
		fill_inputs(&g, n, 71 + c);
		ck_assert_int_eq(mpc_dealer_new(n, &d), 0);
		ck_assert_int_eq(
		    mpc_dealer_inject(d, MPC_DEALER_FAULT_TRIPLE_VALUE, cases[c].item, cases[c].bit), 0);
		struct mpch_opts o = {.fault_party = -1, .dealer = d, .cfg = {.prep_batch = 16}};
		ck_assert_int_eq(mpch_run(n, &o, prog_mul_then_abort, &g, pp), 0);
		for (unsigned i = 0; i < n; i++) {
			ck_assert_int_eq(pp[i].rc, ERR_MAC_CHECK);
			ck_assert_str_eq(pp[i].failed, "triple-sacrifice");
			ck_assert_int_eq(g.after_abort[i], ERR_ABORTED);
		}
		mpc_dealer_free(d);
	}
}
END_TEST

/* The rushing adversary of the sacrifice: it waits for the honest parties' shares of
 * tau (the sacrifice's zero check, the round of 16-byte openings right after the
 * round that opens rho and sigma), computes what tau will be and changes its own
 * share so that every tau opens to exactly zero. A dealer fault in c then passes the
 * sacrifice, and only the MAC on the opened tau can still catch the change. */
struct rusher {
	size_t cnt;     /* triples per sacrifice: rho/sigma are 32 cnt bytes, tau 16 cnt */
	bool armed;     /* the previous round was a rho/sigma opening */
	int cancelled;  /* tau elements changed */
	ring128_t top;  /* with top != 0: add top << 64 to tau[0] instead of cancelling */
	bool rho;       /* add it to rho[0] instead, then cancel tau */
};

static void rush_sacrifice(void *ctx, uint64_t round, unsigned n, unsigned me,
			   const uint8_t *const in[], const size_t in_len[], uint8_t *out,
			   size_t out_len)
{
	struct rusher *r = ctx;
	(void)round;
	(void)in_len;
	bool tau = r->armed && out_len == 16 * r->cnt;
	r->armed = out_len == 32 * r->cnt;
	if (r->armed && r->rho && r->top) {
		ring128_store(out, ring128_load(out) + (r->top << 64));
		r->cancelled++;
		r->top = 0;
	}
	if (!tau)
		return;
	if (r->top) {
		ring128_store(out, ring128_load(out) + (r->top << 64));
		r->cancelled++;
		r->top = 0;
		return;
	}
	for (size_t e = 0; e < r->cnt; e++) {
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

/* A malicious party facing a faulty dealer triple cancels the fault in the sacrifice
 * by adding a chosen error to its tau opening (for a fault at bit 127 of c the error
 * lies entirely in the top 64 bits of the 128-bit opening; at bit 40 it also changes
 * the product). The MAC check over the sacrifice's openings catches it every time:
 * those openings carry MACs modulo 2^192, so an error in any of their 128 bits is
 * caught except with probability about 2^-57.9. Nothing is released. With MACs
 * modulo 2^128 only, an error of 2^127 would pass whenever chi * alpha is even. */
START_TEST(test_sacrifice_cancel_caught)
{
	unsigned n = NS[_i];
	static const unsigned bits[] = {127, 127, 127, 127, 127, 127, 127, 127, 100, 80, 63, 40};
	int cancelled_runs = 0;
	for (size_t c = 0; c < sizeof bits / sizeof bits[0]; c++) {
		struct prog g;
		struct mpch_party pp[MPC_MAX_PARTIES];
		struct mpc_dealer *d;
		struct rusher r = {.cnt = K};
		fill_inputs(&g, n, 111 + c);
		memset(g.out, 0xa5, sizeof g.out);
		ck_assert_int_eq(mpc_dealer_new(n, &d), 0);
		ck_assert_int_eq(mpc_dealer_inject(d, MPC_DEALER_FAULT_TRIPLE_VALUE, 5, bits[c]), 0);
		struct mpch_opts o = {.fault_party = -1, .dealer = d, .cfg = {.prep_batch = 16},
				      .rush_party = (int)(c % n), .rush = rush_sacrifice, .rush_ctx = &r};
		ck_assert_int_eq(mpch_run(n, &o, prog_mul_then_abort, &g, pp), 0);
		if (bits[c] < 127)
			ck_assert_msg(r.cancelled > 0, "bit %u case %zu", bits[c], c); /* t 2^bit != 0 */
		for (unsigned i = 0; i < n; i++) {
			if (i == c % n)
				continue; /* the adversary */
			if (r.cancelled == 0) { /* t even: tau was 0, the fault is above 2^64 */
				ck_assert_int_eq(pp[i].rc, 0);
				for (int j = 0; j < K; j++)
					ck_assert_uint_eq(g.out[i][j], g.x[j] * g.y[j] * g.x[j]);
				continue;
			}
			ck_assert_msg(pp[i].rc == ERR_MAC_CHECK, "bit %u party %u rc %d (%s)", bits[c], i,
				      pp[i].rc, pp[i].failed ? pp[i].failed : "-");
			ck_assert_str_eq(pp[i].failed, "mac-check");
			ck_assert_int_eq(g.after_abort[i], ERR_ABORTED);
			for (int j = 0; j < K; j++)
				ck_assert_uint_eq(g.out[i][j], 0xa5a5a5a5a5a5a5a5ULL);
		}
		cancelled_runs += r.cancelled > 0;
		mpc_dealer_free(d);
	}
	ck_assert_int_ge(cancelled_runs, 4); /* 4 sure; bit 127 only when t is odd */
}
END_TEST

/* With an honest dealer, a chosen error in the top 64 bits of the adversary's share
 * of tau is caught (tau is not zero); a chosen error in the top 64 bits of its share
 * of rho, followed by cancelling tau as above, is caught by the MAC check. */
START_TEST(test_sacrifice_top_error_caught)
{
	unsigned n = NS[_i];
	static const ring128_t errs[] = {(ring128_t)1 << 63, 1, 0x123456789abcdefULL};
	for (size_t c = 0; c < 2 * sizeof errs / sizeof errs[0]; c++) {
		struct prog g;
		struct mpch_party pp[MPC_MAX_PARTIES];
		struct rusher r = {.cnt = K, .top = errs[c / 2], .rho = c % 2};
		fill_inputs(&g, n, 121 + c);
		memset(g.out, 0xa5, sizeof g.out);
		struct mpch_opts o = {.fault_party = -1, .cfg = {.prep_batch = 16},
				      .rush_party = (int)(c % n), .rush = rush_sacrifice, .rush_ctx = &r};
		ck_assert_int_eq(mpch_run(n, &o, prog_mul_then_abort, &g, pp), 0);
		ck_assert_int_ge(r.cancelled, 1);
		for (unsigned i = 0; i < n; i++) {
			if (i == c % n)
				continue; /* the adversary */
			ck_assert_msg(pp[i].rc == ERR_MAC_CHECK, "case %zu party %u rc %d (%s)", c, i,
				      pp[i].rc, pp[i].failed ? pp[i].failed : "-");
			ck_assert(strcmp(pp[i].failed, "mac-check") == 0 ||
				  strcmp(pp[i].failed, "triple-sacrifice") == 0);
			for (int j = 0; j < K; j++)
				ck_assert_uint_eq(g.out[i][j], 0xa5a5a5a5a5a5a5a5ULL);
		}
	}
}
END_TEST

/* A triple whose MAC share is wrong passes the sacrifice (values are right) but the MAC
 * check before the reveal catches it; nothing is released. */
START_TEST(test_bad_triple_mac_caught)
{
	unsigned n = NS[_i];
	struct prog g;
	struct mpch_party pp[MPC_MAX_PARTIES];
	struct mpc_dealer *d;
	fill_inputs(&g, n, 81);
	memset(g.out, 0xa5, sizeof g.out);
	ck_assert_int_eq(mpc_dealer_new(n, &d), 0);
	ck_assert_int_eq(mpc_dealer_inject(d, MPC_DEALER_FAULT_TRIPLE_MAC, 2, 70), 0);
	struct mpch_opts o = {.fault_party = -1, .dealer = d, .cfg = {.prep_batch = 16}};
	ck_assert_int_eq(mpch_run(n, &o, prog_mul_then_abort, &g, pp), 0);
	for (unsigned i = 0; i < n; i++) {
		ck_assert_int_eq(pp[i].rc, ERR_MAC_CHECK);
		ck_assert_str_eq(pp[i].failed, "mac-check");
		ck_assert_int_eq(g.after_abort[i], ERR_ABORTED);
		for (int j = 0; j < K; j++)
			ck_assert_uint_eq(g.out[i][j], 0xa5a5a5a5a5a5a5a5ULL);
	}
	mpc_dealer_free(d);
}
END_TEST

/* A dealer payload with the wrong version or length is refused. */
struct bad_src {
	struct mpc_dealer *d;
	int mode; /* 1: version, 2: one byte short */
};

static int bad_fetch(void *ctx, unsigned party, const struct mpc_prep_req *req, uint8_t **payload,
		     size_t *len)
{
	struct bad_src *b = ctx;
	int rc = mpc_dealer_fetch(b->d, party, req, payload, len);
	if (rc == 0 && b->mode == 1)
		(*payload)[4] = 1; /* the previous version */
	if (rc == 0 && b->mode == 2)
		(*len)--;
	return rc;
}

START_TEST(test_bad_payload_refused)
{
	for (int mode = 1; mode <= 2; mode++) {
		struct prog g;
		struct mpch_party pp[MPC_MAX_PARTIES];
		struct bad_src b = {.mode = mode};
		ck_assert_int_eq(mpc_dealer_new(3, &b.d), 0);
		struct mpc_prep_source src = {.fetch = bad_fetch, .ctx = &b};
		struct mpch_opts o = {.fault_party = -1, .dealer = b.d, .src = &src};
		fill_inputs(&g, 3, 91);
		ck_assert_int_eq(mpch_run(3, &o, prog_mul, &g, pp), 0);
		ck_assert_int_eq(pp[0].rc, mode == 1 ? ERR_UNSUPPORTED : ERR_PROTOCOL);
		ck_assert_str_eq(pp[0].failed, "preprocessing");
		for (unsigned i = 1; i < 3; i++)
			ck_assert_int_eq(pp[i].rc, ERR_ABORTED); /* the others are released */
		mpc_dealer_free(b.d);
	}
}
END_TEST

/* Transport: a peer that sends a different number of bytes than expected is
 * ERR_PROTOCOL at the receiver, and the other parties are released (no hang). */
struct raw_arg {
	struct mpc_net *net;
	int rc;
};

static void *raw_thread(void *a)
{
	struct raw_arg *r = a;
	unsigned me = mpc_net_party(r->net);
	uint8_t msg[8] = {1, 2, 3, 4, 5, 6, 7, 8}, in[3][8];
	const uint8_t *send[3] = {msg, msg, msg};
	size_t slen[3] = {4, 4, 4}, rlen[3] = {4, 4, 4};
	uint8_t *recv[3] = {in[0], in[1], in[2]};
	if (me == 0)
		slen[1] = 5;
	r->rc = mpc_net_exchange(r->net, send, slen, recv, rlen);
	if (r->rc == 0) /* a second round must not hang either */
		r->rc = mpc_net_exchange(r->net, send, slen, recv, rlen);
	return NULL;
}

START_TEST(test_transport_wrong_size)
{
	struct mpc_hub *hub;
	struct raw_arg ra[3];
	pthread_t th[3];
	ck_assert_int_eq(mpc_hub_new(3, 5000, &hub), 0);
	for (unsigned i = 0; i < 3; i++) {
		ck_assert_int_eq(mpc_net_local_new(hub, i, &ra[i].net), 0);
		pthread_create(&th[i], NULL, raw_thread, &ra[i]);
	}
	for (unsigned i = 0; i < 3; i++)
		pthread_join(th[i], NULL);
	ck_assert_int_eq(ra[1].rc, ERR_PROTOCOL);
	ck_assert_int_ne(ra[0].rc, 0);
	ck_assert_int_ne(ra[2].rc, 0);
	struct mpc_net_stats st;
	mpc_net_get_stats(ra[1].net, &st);
	ck_assert_uint_eq(st.rounds, 0);
	for (unsigned i = 0; i < 3; i++)
		mpc_net_free(ra[i].net);
	mpc_hub_free(hub);
}
END_TEST

START_TEST(test_bad_arguments)
{
	struct mpc_hub *hub;
	struct mpc_net *net;
	struct mpc_dealer *d;
	struct mpc *p;
	uint8_t seed[MPC_SEED_BYTES] = {0};
	ck_assert_int_eq(mpc_hub_new(1, 0, &hub), ERR_INVALID);
	ck_assert_int_eq(mpc_hub_new(MPC_MAX_PARTIES + 1, 0, &hub), ERR_INVALID);
	ck_assert_int_eq(mpc_dealer_new(1, &d), ERR_INVALID);
	ck_assert_int_eq(mpc_hub_new(2, 0, &hub), 0);
	ck_assert_int_eq(mpc_net_local_new(hub, 2, &net), ERR_INVALID);
	ck_assert_int_eq(mpc_net_local_new(hub, 0, &net), 0);
	ck_assert_int_eq(mpc_dealer_new(2, &d), 0);
	struct mpc_prep_source src = mpc_dealer_source(d);
	struct mpc_config bad = {.frac_bits = 30};
	ck_assert_int_eq(mpc_new(net, seed, &src, &bad, &p), ERR_INVALID);
	ck_assert_int_eq(mpc_new(net, seed, &src, NULL, &p), 0);
	mpc_share s[1];
	ck_assert_int_eq(mpc_input(p, 2, NULL, s, 1), ERR_INVALID);
	ck_assert_int_eq(mpc_input(p, 0, NULL, s, 1), ERR_INVALID); /* own input missing */
	/* the dealer refuses requests out of order, repeated or malformed */
	struct mpc_prep_req r = {.kind = MPC_PREP_RAND, .n = 4, .batch = 1};
	uint8_t *pl;
	size_t len;
	ck_assert_int_eq(mpc_dealer_fetch(d, 0, &r, &pl, &len), ERR_PROTOCOL);
	r.batch = 0;
	ck_assert_int_eq(mpc_dealer_fetch(d, 0, &r, &pl, &len), 0);
	ck_assert_uint_eq(len, 24 + 16 * 4); /* header, then one MAC share per item */
	ck_assert_uint_eq(mpc_dealer_bytes_out(d), len);
	free(pl);
	ck_assert_int_eq(mpc_dealer_fetch(d, 0, &r, &pl, &len), ERR_PROTOCOL);
	ck_assert_int_eq(mpc_dealer_fetch(d, 1, &r, &pl, &len), ERR_INVALID); /* needs none */
	r.kind = 99;
	ck_assert_int_eq(mpc_dealer_fetch(d, 0, &r, &pl, &len), ERR_INVALID);
	r = (struct mpc_prep_req){.kind = MPC_PREP_TRUNC, .param = 63, .n = 1};
	ck_assert_int_eq(mpc_dealer_fetch(d, 0, &r, &pl, &len), ERR_INVALID);
	r = (struct mpc_prep_req){.kind = MPC_PREP_RAND, .n = 0};
	ck_assert_int_eq(mpc_dealer_fetch(d, 0, &r, &pl, &len), ERR_INVALID);
	/* look-up masks: 1..MPC_LUT_MAX_BITS bits, a batch of at most 2^20 entries */
	r = (struct mpc_prep_req){.kind = MPC_PREP_LUT, .param = 0, .n = 1};
	ck_assert_int_eq(mpc_dealer_fetch(d, 0, &r, &pl, &len), ERR_INVALID);
	r.param = MPC_LUT_MAX_BITS + 1;
	ck_assert_int_eq(mpc_dealer_fetch(d, 0, &r, &pl, &len), ERR_INVALID);
	r = (struct mpc_prep_req){.kind = MPC_PREP_LUT, .param = 10, .n = 1025};
	ck_assert_int_eq(mpc_dealer_fetch(d, 0, &r, &pl, &len), ERR_INVALID);
	r = (struct mpc_prep_req){.kind = MPC_PREP_LUT, .param = 8, .n = 2};
	ck_assert_int_eq(mpc_dealer_fetch(d, 0, &r, &pl, &len), 0);
	ck_assert_uint_eq(len, 24 + 2 * (16 + 32 * 256)); /* m(r), then v and m per entry */
	free(pl);
	ck_assert_int_eq(mpc_prefill(p, MPC_PREP_LUT, 0, 1), ERR_INVALID);
	ck_assert_int_eq(mpc_prefill(p, MPC_PREP_LUT, MPC_LUT_MAX_BITS + 1, 1), ERR_INVALID);
	ck_assert_int_eq(mpc_prefill(p, MPC_PREP_TRUNC, 63, 1), ERR_INVALID);
	struct mpc_batch *b;
	ck_assert_int_eq(mpc_batch_new(p, &b), 0);
	ck_assert_int_eq(mpc_batch_trunc(b, s, s, 1, 0), ERR_INVALID);
	ck_assert_int_eq(mpc_batch_trunc(b, s, s, 1, 63), ERR_INVALID);
	mpc_batch_free(b);
	mpc_free(p);
	mpc_free(NULL);
	mpc_net_free(net);
	mpc_dealer_free(d);
	mpc_hub_free(hub);
}
END_TEST

Suite *suite(void)
{
	log_set_level(LOG_LEVEL_ERROR); /* the abort tests log a warning per party */
	Suite *s = suite_create("mpc");
	TCase *tc = tcase_create("mpc");
	tcase_set_timeout(tc, 30);
	int nn = (int)(sizeof NS / sizeof NS[0]);
	tcase_add_loop_test(tc, test_linear, 0, nn);
	tcase_add_loop_test(tc, test_mul_exact, 0, nn);
	tcase_add_loop_test(tc, test_mul_fx_accuracy, 0, nn);
	tcase_add_loop_test(tc, test_trunc_exact_to_one_unit, 0, nn);
	tcase_add_test(tc, test_trunc_probabilistic_rounding);
	tcase_add_loop_test(tc, test_batch_one_round, 0, nn);
	tcase_add_test(tc, test_check_when_batch_full);
	tcase_add_loop_test(tc, test_fmat_product, 0, nn);
	tcase_add_loop_test(tc, test_faulty_triple_caught, 0, nn);
	tcase_add_loop_test(tc, test_bad_triple_mac_caught, 0, nn);
	tcase_add_loop_test(tc, test_sacrifice_cancel_caught, 0, nn);
	tcase_add_loop_test(tc, test_sacrifice_top_error_caught, 0, nn);
	tcase_add_test(tc, test_bad_payload_refused);
	tcase_add_test(tc, test_transport_wrong_size);
	tcase_add_test(tc, test_bad_arguments);
	suite_add_tcase(s, tc);
	return s;
}
