/* mpc approximations: exp, exp of non-positive values, reciprocal, reciprocal square
 * root, SiLU and softmax on signed fixed point, as compound batch operations
 * (mpc_impl.h, struct cop): each is a short program of stages over the primitive
 * steps of mpc.c (Beaver products, truncations, comparisons, the digit and
 * leading-digit look-ups, one-time truth tables), and every stage's children share
 * their rounds with whatever else runs on the same batch. All parties run the same
 * stages on the same public constants, so nothing here branches on a secret: the
 * tables are public, the opened values are uniform masks, and which table entry or
 * alignment wins is decided inside the shares. docs/PROTOCOL.md gives each
 * operation's protocol, rounds, bytes and accuracy; tests/unit/test_mpc_approx*.c,
 * test_mpc_recip.c and test_mpc_silu.c assert those bounds. */
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include <sodium.h>

#include "err/err.h"
#include "mpc/mpc_impl.h"

/* Memory of a compound: one block of shares carved into named buffers, and its
 * public tables. */
struct cbase {
	struct cop c;
	struct mpc *p;
	size_t n;
	mpc_share *out;
	mpc_share *mem;
	size_t nmem;
	ring64_t *tab;
	size_t ntab;
};

static void cbase_free(struct cop *c)
{
	struct cbase *k = (struct cbase *)c;
	mpc_wipe_free(k->mem, k->nmem * sizeof *k->mem);
	free(k->tab);
	sodium_memzero(k, sizeof *k);
	free(k);
}

/* A compound of `size` bytes (a struct starting with struct cbase) with nmem shares
 * and ntab table entries, zeroed. */
static void *cbase_new(struct mpc_batch *b, size_t size, size_t n, mpc_share *out, size_t nmem,
		       size_t ntab, int (*step)(struct mpc_batch *, struct cop *))
{
	struct cbase *k = calloc(1, size);
	if (!k)
		return NULL;
	k->c.step = step;
	k->c.free = cbase_free;
	k->p = batch_engine(b);
	k->n = n;
	k->out = out;
	k->nmem = nmem ? nmem : 1;
	k->mem = calloc(k->nmem, sizeof *k->mem);
	k->ntab = ntab;
	k->tab = ntab ? calloc(ntab, sizeof *k->tab) : NULL;
	if (!k->mem || (ntab && !k->tab)) {
		cbase_free(&k->c);
		return NULL;
	}
	return k;
}

static inline void addc(const struct mpc *p, mpc_share *o, const mpc_share *a, ring64_t c)
{
	mpc_add_public(p, o, a, &c, 1);
}

static ring64_t enc(double x, unsigned f)
{
	ring64_t v;
	ring_fxp_encode(x, f, &v, NULL);
	return v;
}

/* ---------------------------------------------------------------- exp */

/* exp(x) = 2^t, t = x log2(e), on [MPC_EXP_LO, MPC_EXP_HI] (docs/PROTOCOL.md, "exp"):
 *  - t' = x L + 48 (L = log2(e) 2^f, so t' has 2f fractional bits; in the domain t'
 *    is in [1.8, 59.6]: its integer part k' = t' - frac is 6 bits, never negative),
 *    shifted left by 0..3 bits so that the binary point falls on a chunk boundary
 *    (chunk jI is the integer part's low digit d4, chunk jI + 1 its high one d5);
 *  - the digit look-up gives: for the four chunks right of the point, 2^(d 16^-k) in
 *    [1, 2) (the fraction bits below those 16 are dropped: a relative error below
 *    ln 2 2^-16); for d4 the four candidates 2^(d4 + 16 v - 48), v = 0..3, exact
 *    powers of two; for d5 the four indicators [d5 = v];
 *  - Q = sum_v [d5 = v] 2^(d4 + 16 v - 48) = 2^(k' - 48) exactly (a bit times a
 *    value: no truncation), in the round of the first fraction products; then
 *    P = (F0 F1)(F2 F3), Q g with g = 0 outside the domain, and P (Q g);
 *  - in parallel with the look-up, two LTZ tell whether x is above or below the
 *    domain; the saturated value e^HI is added above (below, e^LO < 2^-24 is 0).
 * 12 rounds (11 for f <= 14, where the borrows need one prefix level less). */
enum { EXP_NT = 12 };

struct cexp {
	struct cbase k;
	mpc_share *t, *fac, *fl, *pr, *q;
	ring64_t ehi;
};

static int exp_step(struct mpc_batch *b, struct cop *c)
{
	struct cexp *e = (struct cexp *)c;
	struct mpc *p = e->k.p;
	const size_t n = e->k.n;
	const unsigned f = mpc_frac_bits(p);
	mpc_share *pr = e->pr, *q = e->q, *fl = e->fl;
	switch (c->stage++) {
	case 0: {
		const unsigned F = (2 * f + 3) / 4 * 4, jI = F / 4, J = jI + 2;
		unsigned tch[EXP_NT];
		for (unsigned k = 0; k < 4; k++)
			tch[k] = jI - 4 + k;
		for (unsigned v = 0; v < 4; v++) {
			tch[4 + v] = jI;
			tch[8 + v] = jI + 1;
		}
		int rc = batch_digits(b, e->fac, e->t, n, J, EXP_NT, tch, e->k.tab);
		return rc ? rc : batch_ltz(b, fl + 2 * n, NULL, fl, 2 * n, 0, NULL, NULL);
	}
	case 1:
		/* level 1: F0 F1, F2 F3 and the four terms of Q, one round */
		for (size_t i = 0; i < n; i++) {
			const mpc_share *a = e->fac + EXP_NT * i;
			pr[i] = a[0];
			q[i] = a[1];
			pr[n + i] = a[2];
			q[n + i] = a[3];
			for (unsigned v = 0; v < 4; v++) {
				pr[(2 + v) * n + i] = a[8 + v];
				q[(2 + v) * n + i] = a[4 + v];
			}
		}
		return batch_mul_add(b, pr, pr, q, NULL, 6 * n);
	case 2: /* truncate the two fraction products */
		return mpc_batch_trunc(b, pr, pr, 2 * n, f);
	case 3:
		/* level 2: P = (F0 F1)(F2 F3) and Q g, g = 1 - above - below */
		for (size_t i = 0; i < n; i++) {
			mpc_share g, Q = pr[2 * n + i];
			for (unsigned v = 1; v < 4; v++)
				mpc_add(p, &Q, &Q, &pr[(2 + v) * n + i], 1);
			mpc_add(p, &g, &fl[2 * n + i], &fl[3 * n + i], 1);
			mpc_neg(p, &g, &g, 1);
			addc(p, &q[n + i], &g, 1);
			q[i] = pr[n + i];
			pr[n + i] = Q;
		}
		return batch_mul_add(b, pr, pr, q, NULL, 2 * n);
	case 4:
		return mpc_batch_trunc(b, pr, pr, n, f);
	case 5: /* level 3: P (Q g) */
		return batch_mul_add(b, q, pr, pr + n, NULL, n);
	case 6:
		return mpc_batch_trunc(b, q, q, n, f);
	default: /* + above e^HI */
		for (size_t i = 0; i < n; i++) {
			mpc_share s;
			mpc_scale(p, &s, &fl[2 * n + i], e->ehi, 1);
			mpc_add(p, &e->k.out[i], &q[i], &s, 1);
		}
		c->done = true;
		return 0;
	}
}

int mpc_batch_exp(struct mpc_batch *b, mpc_share *out, const mpc_share *x, size_t n)
{
	struct mpc *p = batch_engine(b);
	const unsigned f = mpc_frac_bits(p), F = (2 * f + 3) / 4 * 4;
	if (mpc_failed_check(p))
		return ERR_ABORTED;
	if (n == 0)
		return 0;
	if (n > SIZE_MAX / 64)
		return ERR_INVALID;
	struct cexp *e = cbase_new(b, sizeof *e, n, out, n * (1 + EXP_NT + 4 + 6 + 6),
				   16 * EXP_NT, exp_step);
	if (!e)
		return ERR_NOMEM;
	e->t = e->k.mem;
	e->fac = e->t + n;
	e->fl = e->fac + EXP_NT * n;
	e->pr = e->fl + 4 * n;
	e->q = e->pr + 6 * n;
	/* public constants (f is public) */
	ring64_t *tab = e->k.tab, L = enc(M_LOG2E, f), hi = enc(MPC_EXP_HI, f);
	ring64_t lo = enc(MPC_EXP_LO, f);
	e->ehi = enc(exp(MPC_EXP_HI), f);
	for (unsigned k = 0; k < 4; k++) /* chunk jI - 4 + k: weight 16^(k - 4) */
		for (unsigned d = 0; d < 16; d++)
			tab[16 * k + d] = enc(exp2(ldexp((double)d, 4 * ((int)k - 4))), f);
	for (unsigned v = 0; v < 4; v++)
		for (unsigned d = 0; d < 16; d++) {
			tab[16 * (4 + v) + d] = enc(exp2((double)d + 16.0 * v - 48), f);
			tab[16 * (8 + v) + d] = d == v; /* an integer bit, not fixed point */
		}
	/* t' = (x L + 48 2^(2f)) 2^(F - 2f), and the domain tests hi - x < 0, x - lo < 0 */
	mpc_scale(p, e->t, x, L << (F - 2 * f), n);
	for (size_t i = 0; i < n; i++) {
		addc(p, &e->t[i], &e->t[i], (ring64_t)48 << F);
		mpc_neg(p, &e->fl[i], &x[i], 1);
		addc(p, &e->fl[i], &e->fl[i], hi);
		addc(p, &e->fl[n + i], &x[i], (ring64_t)0 - lo);
	}
	return batch_compound(b, &e->k.c);
}

/* ---------------------------------------------------------------- 1/x and 1/sqrt(x) */

/* Reciprocal and reciprocal square root (docs/PROTOCOL.md, "Reciprocal and
 * reciprocal square root"), both on [2^-16, 2^16]:
 *  - a first approximation y0 from the leading four bits of x: for a = 0..3, the
 *    leading-digit look-up of x 2^a with tables that are zero unless the digit is
 *    8..15. Exactly one alignment has x's leading bit at the top of a 4-bit chunk, so
 *    exactly one table entry survives: y0 for the segment [d, d + 1) 16^j 2^-a that
 *    holds x, the value that minimises the relative error on it (2 / (lo + hi), or
 *    2 / (sqrt lo + sqrt hi)), which is within 1/17 (1/32 for rsqrt) everywhere. The
 *    tables carry y0 (and y0^2 for rsqrt) with F fractional bits, so that x y0 is exact
 *    to 2^-20 however small y0 is;
 *  - e = 1 - x y0 (recip) or 1 - x y0^2 (rsqrt): |e| <= 1/17 (1/16);
 *  - y = y0 (1 + e + e^2 + e^3) = y0 + (y0 e)(1 + e + e^2), or for rsqrt
 *    y0 (1 + e/2 + 3e^2/8 + 5e^3/16): the series of 1/(1 - e) and (1 - e)^-1/2 to the
 *    cube, relative error e^4 <= 1.2e-5 (0.27 e^4 <= 4.2e-6);
 *  - two LTZ in parallel with the look-ups say whether x is below or above the domain;
 *    g = 1 - below - above multiplies y0 before it enters the series, so out of the
 *    domain only the saturated value is left.
 * Rounds: 6 (look-ups, the LTZ in parallel) + 6 (x y0, truncate, y0 e and e^2,
 * truncate, the last product, truncate) = 12 for f <= 17 (the look-up has 9 chunks),
 * 13 above. */
struct cinv {
	struct cbase k;
	bool rsqrt;
	unsigned f, J, F, fe, ntab, jlo[4];
	ring64_t ylo, yhi;
	mpc_share *x, *w, *lt, *mx, *my, *m1, *er, *gy, *e2, *q, *yb;
};

#define INV_LOG2 16 /* the domain is [2^-16, 2^16] */

static int inv_step(struct mpc_batch *b, struct cop *c)
{
	struct cinv *v = (struct cinv *)c;
	struct mpc *p = v->k.p;
	const size_t n = v->k.n;
	const unsigned f = v->f, F = v->F, fe = v->fe, nt = v->ntab;
	int rc;
	switch (c->stage++) {
	case 0: {
		mpc_share *xa = malloc((n ? n : 1) * sizeof *xa);
		if (!xa)
			return ERR_NOMEM;
		rc = 0;
		for (unsigned a = 0; a < 4 && rc == 0; a++) {
			mpc_scale(p, xa, v->x, (ring64_t)1 << a, n);
			rc = batch_norm(b, v->w + (size_t)a * n * nt, xa, n, v->J, v->jlo[a], nt,
					v->k.tab + (size_t)a * 16 * v->J * nt);
		}
		mpc_wipe_free(xa, (n ? n : 1) * sizeof *xa);
		if (rc != 0)
			return rc;
		/* below = [x < LO], above = [x > HI - 1 unit]: LTZ(x - LO), LTZ(HI - 1 - x) */
		ring64_t lo = f >= INV_LOG2 ? (ring64_t)1 << (f - INV_LOG2) : 1;
		ring64_t hi = (ring64_t)1 << (f + INV_LOG2);
		for (size_t i = 0; i < n; i++) {
			addc(p, &v->mx[i], &v->x[i], (ring64_t)0 - lo);
			mpc_neg(p, &v->mx[n + i], &v->x[i], 1);
			addc(p, &v->mx[n + i], &v->mx[n + i], hi - 1);
		}
		return batch_ltz(b, v->lt, NULL, v->mx, 2 * n, 0, NULL, NULL);
	}
	case 1:
		/* W = the surviving table entries; g = 1 - below - above; then x W (W = y0^2
		 * for rsqrt) and g y0 in one round */
		for (size_t i = 0; i < n; i++) {
			mpc_share w[2] = {{0, 0}, {0, 0}}, g;
			for (unsigned a = 0; a < 4; a++)
				mpc_add(p, w, w, v->w + ((size_t)a * n + i) * nt, nt);
			mpc_add(p, &g, &v->lt[i], &v->lt[n + i], 1);
			mpc_neg(p, &g, &g, 1);
			addc(p, &g, &g, 1);
			v->mx[i] = v->x[i];
			v->my[i] = w[0];
			v->mx[n + i] = g;
			v->my[n + i] = w[nt - 1];
		}
		return batch_mul_add(b, v->m1, v->mx, v->my, NULL, 2 * n);
	case 2:
		/* e_raw = (1 - e) 2^fe; for recip g y0 goes from F to f fractional bits in the
		 * same round (rsqrt's table of y0 has f already) */
		rc = mpc_batch_trunc(b, v->er, v->m1, n, f + F - fe);
		if (rc == 0 && !v->rsqrt)
			rc = mpc_batch_trunc(b, v->gy, v->m1 + n, n, F - f);
		if (rc == 0 && v->rsqrt)
			memcpy(v->gy, v->m1 + n, n * sizeof *v->gy);
		return rc;
	case 3:
		/* e (fe bits); g y0 e and e^2 */
		for (size_t i = 0; i < n; i++) {
			mpc_neg(p, &v->er[i], &v->er[i], 1);
			addc(p, &v->er[i], &v->er[i], (ring64_t)1 << fe);
			v->mx[i] = v->gy[i];
			v->my[i] = v->er[i];
			v->mx[n + i] = v->er[i];
			v->my[n + i] = v->er[i];
		}
		return batch_mul_add(b, v->e2, v->mx, v->my, NULL, 2 * n);
	case 4:
		return mpc_batch_trunc(b, v->e2, v->e2, 2 * n, fe); /* g y0 e (f), e^2 (fe) */
	case 5:
		/* q = 1 + e + e^2 (fe bits), or 1/2 + 3e/8 + 5e^2/16 (fe + 4 bits) */
		for (size_t i = 0; i < n; i++) {
			mpc_share s, t;
			if (v->rsqrt) {
				mpc_scale(p, &s, &v->er[i], 6, 1);
				mpc_scale(p, &t, &v->e2[n + i], 5, 1);
				mpc_add(p, &s, &s, &t, 1);
				addc(p, &v->q[i], &s, (ring64_t)1 << (fe + 3));
			} else {
				mpc_add(p, &s, &v->er[i], &v->e2[n + i], 1);
				addc(p, &v->q[i], &s, (ring64_t)1 << fe);
			}
		}
		return batch_mul_add(b, v->yb, v->e2, v->q, NULL, n);
	case 6:
		return mpc_batch_trunc(b, v->yb, v->yb, n, v->rsqrt ? fe + 4 : fe);
	default:
		/* y = g y0 + g y0 e q + below f(LO) + above f(HI) */
		for (size_t i = 0; i < n; i++) {
			mpc_share y, s;
			mpc_add(p, &y, &v->gy[i], &v->yb[i], 1);
			mpc_scale(p, &s, &v->lt[i], v->ylo, 1);
			mpc_add(p, &y, &y, &s, 1);
			mpc_scale(p, &s, &v->lt[n + i], v->yhi, 1);
			mpc_add(p, &v->k.out[i], &y, &s, 1);
		}
		c->done = true;
		return 0;
	}
}

static int batch_inv(struct mpc_batch *b, mpc_share *out, const mpc_share *x, size_t n, bool rsqrt)
{
	struct mpc *p = batch_engine(b);
	if (mpc_failed_check(p))
		return ERR_ABORTED;
	if (n == 0)
		return 0;
	if (n > SIZE_MAX / 64)
		return ERR_INVALID;
	const unsigned f = mpc_frac_bits(p), nt = rsqrt ? 2 : 1;
	const unsigned J = (f + INV_LOG2 + 3 + 3) / 4; /* x 2^a < 2^(f + 19) */
	const size_t tabn = (size_t)4 * 16 * J * nt;
	/* x, the look-ups' outputs, then lt, mx, my, m1 (2n each), er, gy, e2 (2n), q, yb */
	struct cinv *v = cbase_new(b, sizeof *v, n, out, n * (15 + 4 * (size_t)nt), tabn, inv_step);
	if (!v)
		return ERR_NOMEM;
	v->rsqrt = rsqrt;
	v->f = f;
	v->J = J;
	v->ntab = nt;
	v->F = 59 - f < 44 ? 59 - f : 44;
	v->fe = 44 - f < 24 ? 44 - f : 24;
	v->x = v->k.mem;
	v->w = v->x + n;
	v->lt = v->w + 4 * nt * n;
	v->mx = v->lt + 2 * n;
	v->my = v->mx + 2 * n;
	v->m1 = v->my + 2 * n;
	v->er = v->m1 + 2 * n;
	v->gy = v->er + n;
	v->e2 = v->gy + n;
	v->q = v->e2 + 2 * n;
	v->yb = v->q + n;
	memcpy(v->x, x, n * sizeof *x);
	const double lo = ldexp(1.0, -INV_LOG2), hi = ldexp(1.0, INV_LOG2);
	v->ylo = enc(rsqrt ? 1 / sqrt(lo) : 1 / lo, f);
	v->yhi = enc(rsqrt ? 1 / sqrt(hi) : 1 / hi, f);
	/* tables: alignment a, table k (recip: y0 2^F; rsqrt: y0^2 2^F, y0 2^f), chunk j,
	 * digit d >= 8: the segment x 2^a in [d, d + 1) 16^j (units of 2^-f) */
	for (unsigned a = 0; a < 4; a++) {
		unsigned low = (f > INV_LOG2 ? f - INV_LOG2 : 0) + a; /* lowest leading bit */
		v->jlo[a] = low <= 3 ? 0 : (low - 3 + 3) / 4;
		for (unsigned j = v->jlo[a]; j < J; j++)
			for (unsigned d = 8; d < 16; d++) {
				double xl = ldexp((double)d, 4 * (int)j - (int)a - (int)f);
				double xh = ldexp((double)d + 1, 4 * (int)j - (int)a - (int)f);
				if (xh <= lo || xl >= hi)
					continue; /* never in the domain: g discards it */
				double y0 = rsqrt ? 2 / (sqrt(xl) + sqrt(xh)) : 2 / (xl + xh);
				ring64_t *t = v->k.tab + (size_t)a * 16 * J * nt;
				t[((size_t)0 * J + j) * 16 + d] =
				    (ring64_t)llround(ldexp(rsqrt ? y0 * y0 : y0, (int)v->F));
				if (rsqrt)
					t[((size_t)1 * J + j) * 16 + d] = (ring64_t)llround(ldexp(y0, (int)f));
			}
	}
	return batch_compound(b, &v->k.c);
}

int mpc_batch_recip(struct mpc_batch *b, mpc_share *out, const mpc_share *x, size_t n)
{
	return batch_inv(b, out, x, n, false);
}

int mpc_batch_rsqrt(struct mpc_batch *b, mpc_share *out, const mpc_share *x, size_t n)
{
	return batch_inv(b, out, x, n, true);
}

/* ---------------------------------------------------------------- SiLU, exp of x <= 0 */

/* A function F on [lo, hi] (hi - lo <= 32 - 1/8) by a one-time truth table of the top
 * bits and a cubic in the rest (docs/PROTOCOL.md, "SiLU"):
 *  - u = x - lo (the table's grid starts at lo), V = trunc(u, f - 3): floor(8 u) or
 *    one more, so in [0, 255] inside the domain;
 *  - b = u - V/8, |b| < 1/8, exact (a linear combination of u and the truncation's
 *    output: V itself is never opened);
 *  - the look-up of V gives c_i = F^(i)(a)/i! at a = lo + V/8, i = 0..3, scaled by 2^K,
 *    2^(K-f), 2^(K-f), 2^(K-2f) (K = min(2f + 16, 56)) so that c0 + c1 b + c2 b^2 +
 *    c3 b^3 needs one final truncation; the cubic's error is at most
 *    max|F^(4)| (1/8)^4 / 24;
 *  - LTZ tests of x against lo and hi, in parallel, select what F is outside the
 *    domain: the result is g p + above (x or a constant), g = 1 - below - above.
 * Rounds: truncation, look-up (with b^2), two product rounds, truncation = 5, the LTZ in
 * parallel, then the selection: 6. SiLU uses it on [-15.875, 15.875] (0 below, x
 * above: its asymptotes); exp on [-31.875, 0] (0 below, 1 above), which is all
 * softmax needs: there the inputs are x - max <= 0, so only "below" is tested. */
enum { TC_NT = 4 };

struct tcfn {
	double lo, hi;                         /* the domain */
	void (*taylor)(double a, double c[4]); /* F^(i)(a)/i! */
	bool above_x;                          /* above the domain: x (else above_val) */
	double above_val;
};

struct cpoly {
	struct cbase k;
	unsigned f, K;
	mpc_share *u, *v, *cs, *b2, *mx, *my, *m1, *m2, *sum;
};

static int poly_step(struct mpc_batch *b, struct cop *c)
{
	struct cpoly *s = (struct cpoly *)c;
	struct mpc *p = s->k.p;
	const size_t n = s->k.n;
	const unsigned f = s->f;
	switch (c->stage++) {
	case 0:
		return mpc_batch_trunc(b, s->v, s->u, n, f - 3);
	case 1: {
		/* b = u - V 2^(f-3), in place of u */
		mpc_share t;
		for (size_t i = 0; i < n; i++) {
			mpc_scale(p, &t, &s->v[i], (ring64_t)1 << (f - 3), 1);
			mpc_sub(p, &s->u[i], &s->u[i], &t, 1);
		}
		int rc = batch_lut(b, s->cs, s->v, n, 8, TC_NT, s->k.tab);
		return rc ? rc : batch_mul_add(b, s->b2, s->u, s->u, NULL, n);
	}
	case 2: {
		for (size_t i = 0; i < n; i++) {
			s->mx[i] = s->cs[TC_NT * i + 1];
			s->mx[n + i] = s->cs[TC_NT * i + 3];
			s->my[i] = s->my[n + i] = s->u[i];
		}
		int rc = batch_mul_add(b, s->m1, s->mx, s->my, NULL, 2 * n); /* c1 b, c3 b */
		return rc ? rc : mpc_batch_trunc(b, s->b2, s->b2, n, f);
	}
	case 3:
		for (size_t i = 0; i < n; i++) {
			s->mx[i] = s->cs[TC_NT * i + 2];
			s->mx[n + i] = s->m1[n + i];
			s->my[i] = s->my[n + i] = s->b2[i];
		}
		return batch_mul_add(b, s->m2, s->mx, s->my, NULL, 2 * n); /* c2 b^2, c3 b^3 */
	case 4:
		for (size_t i = 0; i < n; i++) {
			s->sum[i] = s->cs[TC_NT * i];
			mpc_add(p, &s->sum[i], &s->sum[i], &s->m1[i], 1);
			mpc_add(p, &s->sum[i], &s->sum[i], &s->m2[i], 1);
			mpc_add(p, &s->sum[i], &s->sum[i], &s->m2[n + i], 1);
		}
		return mpc_batch_trunc(b, s->k.out, s->sum, n, s->K - f);
	default:
		c->done = true;
		return 0;
	}
}

/* SiLU and its derivatives up to the third at a, by the sigmoid's. */
static void silu_taylor(double a, double c[4])
{
	double s = 1 / (1 + exp(-a)), s1 = s * (1 - s), s2 = s1 * (1 - 2 * s);
	double s3 = s2 * (1 - 2 * s) - 2 * s1 * s1;
	c[0] = a * s;
	c[1] = s + a * s1;
	c[2] = (2 * s1 + a * s2) / 2;
	c[3] = (3 * s2 + a * s3) / 6;
}

static void exp_taylor(double a, double c[4])
{
	double e = exp(a);
	c[0] = e;
	c[1] = e;
	c[2] = e / 2;
	c[3] = e / 6;
}

static const struct tcfn tc_silu = {MPC_SILU_LO, MPC_SILU_HI, silu_taylor, true, 0};
static const struct tcfn tc_exp = {MPC_EXPNEG_LO, 0, exp_taylor, false, 1};

struct ctc {
	struct cbase k;
	const struct tcfn *fn;
	bool one_sided; /* inputs are never above the domain: test below only */
	mpc_share *x, *pv, *lt, *mx, *my, *m1;
};

static int tc_step(struct mpc_batch *b, struct cop *c)
{
	struct ctc *s = (struct ctc *)c;
	struct mpc *p = s->k.p;
	const size_t n = s->k.n;
	const unsigned f = mpc_frac_bits(p), nl = s->one_sided ? 1 : 2;
	const struct tcfn *fn = s->fn;
	const bool ax = nl == 2 && fn->above_x;
	switch (c->stage++) {
	case 0: {
		const unsigned K = 2 * f + 16 < 56 ? 2 * f + 16 : 56;
		struct cpoly *q = cbase_new(b, sizeof *q, n, s->pv, (11 + TC_NT) * (size_t)n,
					    (size_t)TC_NT << 8, poly_step);
		if (!q)
			return ERR_NOMEM;
		q->f = f;
		q->K = K;
		q->u = q->k.mem;
		q->v = q->u + n;
		q->b2 = q->v + n;
		q->mx = q->b2 + n;
		q->my = q->mx + 2 * n;
		q->m1 = q->my + 2 * n;
		q->m2 = q->m1 + 2 * n;
		q->cs = q->m2 + 2 * n;
		q->sum = q->v; /* V is dead by then */
		for (unsigned V = 0; V < 256; V++) {
			double t[4];
			fn->taylor(fn->lo + V / 8.0, t);
			q->k.tab[0 * 256 + V] = (ring64_t)llround(ldexp(t[0], (int)K));
			q->k.tab[1 * 256 + V] = (ring64_t)llround(ldexp(t[1], (int)(K - f)));
			q->k.tab[2 * 256 + V] = (ring64_t)llround(ldexp(t[2], (int)(K - f)));
			q->k.tab[3 * 256 + V] = (ring64_t)llround(ldexp(t[3], (int)K - 2 * (int)f));
		}
		ring64_t lo = enc(fn->lo, f), hi = enc(fn->hi, f);
		for (size_t i = 0; i < n; i++)
			addc(p, &q->u[i], &s->x[i], (ring64_t)0 - lo);
		int rc = batch_compound(b, &q->k.c);
		if (rc != 0)
			return rc;
		/* below = [x < lo], above = [x >= hi]: LTZ(x - lo), LTZ(hi - 1 unit - x) */
		for (size_t i = 0; i < n; i++) {
			addc(p, &s->mx[i], &s->x[i], (ring64_t)0 - lo);
			mpc_neg(p, &s->mx[n + i], &s->x[i], 1);
			addc(p, &s->mx[n + i], &s->mx[n + i], hi - 1);
		}
		return batch_ltz(b, s->lt, NULL, s->mx, nl * n, 0, NULL, NULL);
	}
	case 1:
		/* g p, g = 1 - below - above, and above x if that is the value above */
		for (size_t i = 0; i < n; i++) {
			mpc_share g = s->lt[i];
			if (nl == 2)
				mpc_add(p, &g, &g, &s->lt[n + i], 1);
			mpc_neg(p, &g, &g, 1);
			addc(p, &s->mx[i], &g, 1);
			s->my[i] = s->pv[i];
			if (ax) {
				s->mx[n + i] = s->lt[n + i];
				s->my[n + i] = s->x[i];
			}
		}
		return batch_mul_add(b, s->m1, s->mx, s->my, NULL, (ax ? 2 : 1) * n);
	default:
		for (size_t i = 0; i < n; i++) {
			mpc_share t = {0, 0};
			if (ax)
				t = s->m1[n + i];
			else if (nl == 2)
				mpc_scale(p, &t, &s->lt[n + i], enc(fn->above_val, f), 1);
			mpc_add(p, &s->k.out[i], &s->m1[i], &t, 1);
		}
		c->done = true;
		return 0;
	}
}

static int batch_tc(struct mpc_batch *b, const struct tcfn *fn, bool one_sided, mpc_share *out,
		    const mpc_share *x, size_t n)
{
	struct mpc *p = batch_engine(b);
	if (mpc_failed_check(p))
		return ERR_ABORTED;
	if (n == 0)
		return 0;
	if (n > SIZE_MAX / 64)
		return ERR_INVALID;
	struct ctc *s = cbase_new(b, sizeof *s, n, out, 10 * (size_t)n, 0, tc_step);
	if (!s)
		return ERR_NOMEM;
	s->fn = fn;
	s->one_sided = one_sided;
	s->x = s->k.mem;
	s->pv = s->x + n;
	s->lt = s->pv + n;
	s->mx = s->lt + 2 * n;
	s->my = s->mx + 2 * n;
	s->m1 = s->my + 2 * n;
	memcpy(s->x, x, n * sizeof *x);
	return batch_compound(b, &s->k.c);
}

int mpc_batch_silu(struct mpc_batch *b, mpc_share *out, const mpc_share *x, size_t n)
{
	return batch_tc(b, &tc_silu, false, out, x, n);
}

int mpc_batch_exp_neg(struct mpc_batch *b, mpc_share *out, const mpc_share *x, size_t n)
{
	return batch_tc(b, &tc_exp, false, out, x, n);
}

/* ---------------------------------------------------------------- softmax */

/* Row-wise softmax, numerically stable (docs/PROTOCOL.md, "Softmax"): the row maximum
 * by a tournament of comparisons (6 rounds a layer, ceil(log2 cols) layers, every row
 * side by side), then exp(x - max) by the table-and-cubic exp (x - max <= 0, so only
 * the test below its domain is needed: values below -31.875 give 0), the row sums
 * (local), one reciprocal per row (the sum is in [1, cols] up to exp's error, well
 * inside the reciprocal's domain), and the products exp(x - max) / sum with one
 * truncation: 6 ceil(log2 cols) + 6 + 12 + 2 rounds. */
struct csm {
	struct cbase k;
	size_t rows, cols, cnt;
	mpc_share *x, *v, *dif, *sx, *sy, *res, *ex, *sum, *r, *pr;
};

static int sm_step(struct mpc_batch *b, struct cop *c)
{
	struct csm *s = (struct csm *)c;
	struct mpc *p = s->k.p;
	const size_t m = s->rows, n = s->cols;
	if (c->stage == 0 || c->stage == 1) {
		if (c->stage == 1) {
			/* a layer is done: row r keeps its first `next` slots */
			size_t cnt = s->cnt, pairs = cnt / 2, next = pairs + cnt % 2;
			for (size_t r = 0; r < m; r++) {
				mpc_share carry = s->v[r * n + cnt - 1];
				for (size_t t = 0; t < pairs; t++)
					s->v[r * n + t] = s->res[r * pairs + t];
				if (cnt % 2)
					s->v[r * n + pairs] = carry;
			}
			s->cnt = next;
		}
		c->stage = 1;
		if (s->cnt > 1) {
			size_t cnt = s->cnt, pairs = cnt / 2, e = 0;
			for (size_t r = 0; r < m; r++)
				for (size_t t = 0; t < pairs; t++, e++) {
					const mpc_share *lo = s->v + r * n + 2 * t, *hi = lo + 1;
					mpc_sub(p, &s->dif[e], lo, hi, 1);
					s->sx[e] = *hi; /* lo < hi: hi wins */
					s->sy[e] = *lo;
				}
			return batch_ltz(b, s->res, NULL, s->dif, m * pairs, 1, s->sx, s->sy);
		}
		/* the maxima are in v[r n]: exp(x - max) */
		c->stage = 2;
		for (size_t r = 0; r < m; r++)
			for (size_t j = 0; j < n; j++)
				mpc_sub(p, &s->dif[r * n + j], &s->x[r * n + j], &s->v[r * n], 1);
		return batch_tc(b, &tc_exp, true, s->ex, s->dif, m * n);
	}
	switch (c->stage++) {
	case 2:
		for (size_t r = 0; r < m; r++) {
			s->sum[r] = (mpc_share){0, 0};
			mpc_add(p, &s->sum[r], &s->sum[r], s->ex + r * n, 1);
			for (size_t j = 1; j < n; j++)
				mpc_add(p, &s->sum[r], &s->sum[r], &s->ex[r * n + j], 1);
		}
		return mpc_batch_recip(b, s->r, s->sum, m);
	case 3:
		for (size_t r = 0; r < m; r++)
			for (size_t j = 0; j < n; j++)
				s->dif[r * n + j] = s->r[r];
		return batch_mul_add(b, s->pr, s->ex, s->dif, NULL, m * n);
	case 4:
		return mpc_batch_trunc(b, s->k.out, s->pr, m * n, mpc_frac_bits(p));
	default:
		c->done = true;
		return 0;
	}
}

int mpc_batch_softmax(struct mpc_batch *b, mpc_share *out, const mpc_share *x, size_t rows,
		      size_t cols)
{
	struct mpc *p = batch_engine(b);
	if (mpc_failed_check(p))
		return ERR_ABORTED;
	if (!x || rows == 0 || cols == 0 || cols > MPC_SOFTMAX_MAX_COLS || rows > SIZE_MAX / 16 / cols)
		return ERR_INVALID;
	const size_t mn = rows * cols;
	struct csm *s = cbase_new(b, sizeof *s, mn, out, 6 * mn + 2 * rows + 3 * (mn / 2 + rows), 0,
				  sm_step);
	if (!s)
		return ERR_NOMEM;
	s->rows = rows;
	s->cols = cols;
	s->cnt = cols;
	s->x = s->k.mem;
	s->v = s->x + mn;
	s->ex = s->v + mn;
	s->pr = s->ex + mn;
	s->dif = s->pr + mn; /* mn: the differences, then exp's inputs, then r broadcast */
	s->sum = s->dif + mn;
	s->r = s->sum + rows;
	s->sx = s->r + rows;
	s->sy = s->sx + mn / 2 + rows;
	s->res = s->sy + mn / 2 + rows;
	memcpy(s->x, x, mn * sizeof *x);
	memcpy(s->v, x, mn * sizeof *x);
	return batch_compound(b, &s->k.c);
}

/* ---------------------------------------------------------------- one-operation calls */

static int run1(struct mpc *p, int (*q)(struct mpc_batch *, mpc_share *, const mpc_share *, size_t),
		mpc_share *out, const mpc_share *x, size_t n)
{
	struct mpc_batch *b;
	int rc = mpc_batch_new(p, &b);
	if (rc != 0)
		return rc;
	if ((rc = q(b, out, x, n)) == 0)
		rc = mpc_batch_run(b);
	mpc_batch_free(b);
	return rc;
}

int mpc_exp(struct mpc *p, mpc_share *out, const mpc_share *x, size_t n)
{
	return run1(p, mpc_batch_exp, out, x, n);
}

int mpc_recip(struct mpc *p, mpc_share *out, const mpc_share *x, size_t n)
{
	return run1(p, mpc_batch_recip, out, x, n);
}

int mpc_rsqrt(struct mpc *p, mpc_share *out, const mpc_share *x, size_t n)
{
	return run1(p, mpc_batch_rsqrt, out, x, n);
}

int mpc_silu(struct mpc *p, mpc_share *out, const mpc_share *x, size_t n)
{
	return run1(p, mpc_batch_silu, out, x, n);
}

int mpc_exp_neg(struct mpc *p, mpc_share *out, const mpc_share *x, size_t n)
{
	return run1(p, mpc_batch_exp_neg, out, x, n);
}

int mpc_softmax(struct mpc *p, mpc_share *out, const mpc_share *x, size_t rows, size_t cols)
{
	struct mpc_batch *b;
	int rc = mpc_batch_new(p, &b);
	if (rc != 0)
		return rc;
	if ((rc = mpc_batch_softmax(b, out, x, rows, cols)) == 0)
		rc = mpc_batch_run(b);
	mpc_batch_free(b);
	return rc;
}
