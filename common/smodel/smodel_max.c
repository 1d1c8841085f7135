/* smodel_max: row-wise maximum and argmax by a tournament of groups of up to five,
 * from the engine's batched comparison and products only. A binary tournament spends
 * a comparison (5 rounds) and a selection (1) per level; a group of four compares all
 * six pairs at once (the same 5 rounds); the winner's indicator is
 * w_i = prod_{j<i} [x_i > x_j] prod_{j>i} [x_i >= x_j] (the first maximum wins ties,
 * as sampler_argmax), and the maximum sum_i x_i w_i is a product of four factors per
 * element, two rounds: 7 rounds for two levels' worth instead of 12. The price is
 * comparisons: about 2n instead of n - 1. The one-hot of the winner comes from a
 * backward pass over the stored indicators (one round of products per level).
 * Attention softmax and the classifier argmax sit on the critical path of every token,
 * which is why rounds are traded for comparisons here. */
#include "smodel/smodel_int.h"

#include <stdlib.h>
#include <string.h>

#include "err/err.h"

#define GMAX 5      /* largest group */
#define LVMAX 64    /* levels: 4^LVMAX is far beyond any row */

/* One level: cnt values per row in groups; w[r][i] is element i's winner indicator
 * (kept for the backward pass). */
struct level {
	size_t cnt, ngroups, nout;
	mpc_share *w; /* rows x cnt */
};

/* Group g of a level of cnt values: first element and size. The last level (cnt <= 5)
 * is one group; otherwise groups of four, the last one smaller (a single element
 * passes through). */
static size_t group_size(size_t cnt, size_t g)
{
	if (cnt <= GMAX)
		return cnt;
	size_t first = 4 * g;
	return cnt - first < 4 ? cnt - first : 4;
}

static size_t group_count(size_t cnt) { return cnt <= GMAX ? 1 : (cnt + 3) / 4; }

/* Runs one level over v (rows x cnt, row-major): next (rows x ngroups) gets each
 * group's maximum and, with want_w, lv->w the indicators. Element i's value times its
 * bits, sum_i x_i prod(bits), is a product of k factors reduced pairwise, so a group of
 * four takes the 5 comparison rounds and 2 of products (the indicators alone ride
 * along in the same rounds). */
static int level_run(struct mpc *p, struct level *lv, const mpc_share *v, mpc_share *next,
		     size_t rows, bool want_w)
{
	const size_t cnt = lv->cnt, ng = group_count(cnt), FS = GMAX; /* factors per list */
	size_t npairs = 0;
	for (size_t g = 0; g < ng; g++) {
		size_t k = group_size(cnt, g);
		npairs += k * (k - 1) / 2;
	}
	const size_t P = rows * npairs, E = rows * cnt;
	/* two factor lists per element: [0] value and bits, [1] bits only (indicator) */
	mpc_share *dif = sm_alloc(P), *bit = sm_alloc(P), *fac = sm_alloc(2 * E * FS),
		  *x = sm_alloc(2 * E * FS), *y = sm_alloc(2 * E * FS), *z = sm_alloc(2 * E * FS);
	unsigned char *nf = calloc(2 * E, 1);
	struct mpc_batch *b = NULL;
	int rc = 0;
	if (!dif || !bit || !fac || !x || !y || !z || !nf) {
		rc = ERR_NOMEM;
		goto out;
	}
	lv->ngroups = ng;
	/* all pairs i < j of every group: bit = [v_i < v_j] */
	size_t e = 0;
	for (size_t r = 0; r < rows; r++)
		for (size_t g = 0, s = 0; g < ng; s += group_size(cnt, g), g++) {
			size_t k = group_size(cnt, g);
			for (size_t i = 0; i < k; i++)
				for (size_t j = i + 1; j < k; j++, e++)
					mpc_sub(p, &dif[e], &v[r * cnt + s + i], &v[r * cnt + s + j], 1);
		}
	if (P && ((rc = mpc_batch_new(p, &b)) != 0 || (rc = mpc_batch_ltz(b, bit, dif, P)) != 0 ||
		  (rc = mpc_batch_run(b)) != 0))
		goto out;
	/* factors of element i: bit(j, i) for j < i (x_i > x_j), 1 - bit(i, j) for j > i */
	e = 0;
	const ring64_t one = 1;
	for (size_t r = 0; r < rows; r++)
		for (size_t g = 0, s = 0; g < ng; s += group_size(cnt, g), g++) {
			size_t k = group_size(cnt, g), base = e;
			for (size_t i = 0; i < k; i++) {
				size_t el = r * cnt + s + i;
				mpc_share *fv = &fac[(2 * el) * FS], *fw = &fac[(2 * el + 1) * FS];
				fv[nf[2 * el]++] = v[el];
				for (size_t j = 0; j < k; j++) {
					if (j == i)
						continue;
					size_t a = i < j ? i : j, c = i < j ? j : i;
					size_t pi = base + a * k - a * (a + 1) / 2 + (c - a - 1);
					mpc_share t = bit[pi];
					if (i < j) {
						mpc_neg(p, &t, &t, 1);
						mpc_add_public(p, &t, &t, &one, 1);
					}
					fv[nf[2 * el]++] = t;
					if (want_w)
						fw[nf[2 * el + 1]++] = t;
				}
			}
			e += k * (k - 1) / 2;
		}
	/* multiply each list down to one factor, pairwise, one round per halving */
	for (;;) {
		size_t q = 0;
		for (size_t li = 0; li < 2 * E; li++)
			for (unsigned t = 0; t + 1 < nf[li]; t += 2, q++) {
				x[q] = fac[li * FS + t];
				y[q] = fac[li * FS + t + 1];
			}
		if (q == 0)
			break;
		if ((rc = mpc_mul(p, z, x, y, q)) != 0)
			goto out;
		q = 0;
		for (size_t li = 0; li < 2 * E; li++) {
			unsigned m = 0, t = 0;
			mpc_share *f = &fac[li * FS];
			for (; t + 1 < nf[li]; t += 2)
				f[m++] = z[q++];
			if (t < nf[li])
				f[m++] = f[t];
			nf[li] = (unsigned char)m;
		}
	}
	/* the maximum: sum of the value lists; the indicators (1 for a lone element) */
	for (size_t r = 0; r < rows; r++)
		for (size_t g = 0, s = 0; g < ng; s += group_size(cnt, g), g++) {
			mpc_share *o = &next[r * ng + g];
			*o = fac[(2 * (r * cnt + s)) * FS];
			for (size_t i = 1; i < group_size(cnt, g); i++)
				mpc_add(p, o, o, &fac[(2 * (r * cnt + s + i)) * FS], 1);
		}
	if (want_w)
		for (size_t el = 0; el < E; el++) {
			if (nf[2 * el + 1])
				lv->w[el] = fac[(2 * el + 1) * FS];
			else
				mpc_constant(p, &lv->w[el], 1, 1);
		}
out:
	mpc_batch_free(b);
	sm_free(dif, P);
	sm_free(bit, P);
	sm_free(fac, 2 * E * FS);
	sm_free(x, 2 * E * FS);
	sm_free(y, 2 * E * FS);
	sm_free(z, 2 * E * FS);
	free(nf);
	return rc;
}

int smax(struct mpc *p, mpc_share *max, mpc_share *onehot, const mpc_share *x, size_t rows,
	 size_t n)
{
	if (!x || rows == 0 || n == 0)
		return ERR_INVALID;
	struct level lv[LVMAX];
	size_t nl = 0, cnt = n;
	mpc_share *v = sm_alloc(rows * n), *nx = sm_alloc(rows * n), *f = NULL, *g = NULL;
	int rc = 0;
	memset(lv, 0, sizeof lv);
	if (!v || !nx) {
		rc = ERR_NOMEM;
		goto out;
	}
	memcpy(v, x, rows * n * sizeof *v);
	while (cnt > 1 && nl < LVMAX) {
		struct level *L = &lv[nl++];
		L->cnt = cnt;
		if (onehot && !(L->w = sm_alloc(rows * cnt))) {
			rc = ERR_NOMEM;
			goto out;
		}
		if ((rc = level_run(p, L, v, nx, rows, onehot != NULL)) != 0)
			goto out;
		cnt = L->ngroups;
		memcpy(v, nx, rows * cnt * sizeof *v);
	}
	if (max)
		memcpy(max, v, rows * sizeof *v);
	if (!onehot)
		goto out;
	/* backward: a group's flag times its members' indicators, level by level down */
	if (!(f = sm_alloc(rows * n)) || !(g = sm_alloc(rows * n))) {
		rc = ERR_NOMEM;
		goto out;
	}
	mpc_constant(p, f, 1, rows);
	cnt = 1;
	for (size_t l = nl; l-- > 0;) {
		const struct level *L = &lv[l];
		const size_t c = L->cnt, ng = L->ngroups;
		mpc_share *fr = sm_alloc(rows * c);
		if (!fr) {
			rc = ERR_NOMEM;
			goto out;
		}
		for (size_t r = 0; r < rows; r++)
			for (size_t gi = 0, s = 0; gi < ng; s += group_size(c, gi), gi++)
				for (size_t i = 0; i < group_size(c, gi); i++)
					fr[r * c + s + i] = f[r * ng + gi];
		rc = mpc_mul(p, g, fr, L->w, rows * c);
		sm_free(fr, rows * c);
		if (rc != 0)
			goto out;
		mpc_share *t = f;
		f = g;
		g = t;
	}
	memcpy(onehot, f, rows * n * sizeof *f);
out:
	for (size_t l = 0; l < nl; l++)
		sm_free(lv[l].w, rows * lv[l].cnt);

	sm_free(v, rows * n);
	sm_free(nx, rows * n);
	sm_free(f, rows * n);
	sm_free(g, rows * n);
	return rc;
}
