/* smodel_choose: the next token from shared logits, without opening anything but
 * masked values. Greedy is the engine's argmax with the one-hot output. Sampling
 * follows sampler.h's rules on unnormalised probabilities: the kept candidates' exps
 * e_i (after subtracting the largest logit, so every exponent is <= 0), their running
 * sums C_i in the sampler's order, and the public coin c: the choice is the first i
 * with c C_last < C_i, i.e. one comparison per candidate against a threshold, and the
 * one-hot of the choice is the difference of neighbouring comparison bits (the bits
 * are monotone). Normalising is never needed, so no reciprocal enters the choice.
 * Top-k takes k argmax tournaments, each removing its winner, which yields the candidates
 * already in descending order with ties to the lower id, as the sampler sorts them. The
 * chosen one-hot becomes the next step's input row and the id share is sum_j j e_j.
 * Release opens the id masked by a value only the prompt's owner knows, so only the
 * client's side learns it. */
#include "smodel/smodel_int.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>

#include <sodium.h>

#include "err/err.h"

/* The coin enters with 24 fractional bits (all the bits sampler_rng_f32 draws). */
#define COIN_BITS 24

/* bits[i] = [t < c[i]] for i < n (LTZ of t - c[i]), the last forced to 1 so that a
 * choice always exists (the sampler's "last on rounding"). */
static int above(struct mpc *p, mpc_share *bits, const mpc_share *t, const mpc_share *c,
		 size_t n)
{
	mpc_share *d = sm_alloc(n);
	if (!d)
		return ERR_NOMEM;
	for (size_t i = 0; i < n; i++)
		mpc_sub(p, &d[i], t, &c[i], 1);
	int rc = n > 1 ? mpc_ltz(p, bits, d, n - 1) : 0;
	if (rc == 0)
		mpc_constant(p, &bits[n - 1], 1, 1);
	sm_free(d, n);
	return rc;
}

/* t = frac * x with a public fraction in [0, 1) taken at COIN_BITS bits, minus one unit
 * so that t < x whenever frac < 1 (the truncation may round up by one unit). */
static int portion(struct mpc *p, mpc_share *t, const mpc_share *x, float frac)
{
	ring64_t q = (ring64_t)llround(ldexp((double)frac, COIN_BITS)), one = (ring64_t)0 - 1;
	mpc_share s;
	mpc_scale(p, &s, x, q, 1);
	int rc = mpc_trunc(p, t, &s, 1, COIN_BITS);
	if (rc == 0)
		mpc_add_public(p, t, t, &one, 1);
	return rc;
}

/* onehot[i] = bits[i] - bits[i-1]: the first 1 of a monotone bit vector. */
static void first_one(struct mpc *p, mpc_share *onehot, const mpc_share *bits, size_t n)
{
	onehot[0] = bits[0];
	for (size_t i = 1; i < n; i++)
		mpc_sub(p, &onehot[i], &bits[i], &bits[i - 1], 1);
}

static int greedy(struct smodel_gen *g, mpc_share *onehot)
{
	return smax(g->sm->p, NULL, onehot, g->logits, 1, (size_t)g->sm->c.vocab_size);
}

/* Whole vocabulary in id order. */
static int sample_all(struct smodel_gen *g, const mpc_share *z, mpc_share *onehot, float coin)
{
	struct mpc *p = g->sm->p;
	const size_t V = (size_t)g->sm->c.vocab_size;
	mpc_share *e = sm_alloc(V), *bits = sm_alloc(V), mx, t;
	int rc = 0;
	if (!e || !bits) {
		rc = ERR_NOMEM;
		goto out;
	}
	if ((rc = smax(p, &mx, NULL, z, 1, V)) != 0)
		goto out;
	for (size_t i = 0; i < V; i++)
		mpc_sub(p, &e[i], &z[i], &mx, 1);
	if ((rc = mpc_exp_neg(p, e, e, V)) != 0)
		goto out;
	for (size_t i = 1; i < V; i++)
		mpc_add(p, &e[i], &e[i], &e[i - 1], 1);
	if ((rc = portion(p, &t, &e[V - 1], coin)) != 0 || (rc = above(p, bits, &t, e, V)) != 0)
		goto out;
	first_one(p, onehot, bits, V);
out:
	sm_free(e, V);
	sm_free(bits, V);
	return rc;
}

/* Top-k (with top-p inside it): k argmax rounds give the candidates in order. */
static int sample_top(struct smodel_gen *g, const mpc_share *z, mpc_share *onehot, float coin)
{
	struct mpc *p = g->sm->p;
	const struct smodel_sampling *s = &g->s;
	const size_t V = (size_t)g->sm->c.vocab_size, k = (size_t)s->top_k;
	const unsigned f = g->sm->f;
	const bool top_p = s->top_p > 0.0f && s->top_p < 1.0f;
	/* a winner is pushed this far down (2^40 units: far below any logit, far inside
	 * the comparison's 2^61 domain) */
	const ring64_t big = (ring64_t)1 << 40;
	mpc_share *w = sm_alloc(V), *oh = sm_alloc(k * V), *v = sm_alloc(k), *bits = sm_alloc(k),
		  *u = sm_alloc(k), *ohT = NULL, *ur = NULL, mass, t;
	int rc = 0;
	(void)f;
	if (!w || !oh || !v || !bits || !u) {
		rc = ERR_NOMEM;
		goto out;
	}
	memcpy(w, z, V * sizeof *w);
	for (size_t i = 0; i < k; i++) {
		if ((rc = smax(p, &v[i], oh + i * V, w, 1, V)) != 0)
			goto out;
		for (size_t j = 0; j < V; j++) {
			mpc_share a;
			mpc_scale(p, &a, &oh[i * V + j], big, 1);
			mpc_sub(p, &w[j], &w[j], &a, 1);
		}
	}
	/* e_i = exp(v_i - v_0), running sums */
	for (size_t i = k; i-- > 0;)
		mpc_sub(p, &v[i], &v[i], &v[0], 1);
	if ((rc = mpc_exp_neg(p, v, v, k)) != 0)
		goto out;
	for (size_t i = 1; i < k; i++)
		mpc_add(p, &v[i], &v[i], &v[i - 1], 1);
	mass = v[k - 1];
	if (top_p) {
		/* the nucleus ends at the first candidate whose running sum exceeds top_p of
		 * the kept mass; its running sum is the mass the coin scales */
		mpc_share lim, *cm = sm_alloc(k);
		if (!cm) {
			rc = ERR_NOMEM;
			goto out;
		}
		if ((rc = portion(p, &lim, &v[k - 1], s->top_p)) == 0)
			rc = above(p, bits, &lim, v, k);
		if (rc == 0) {
			first_one(p, u, bits, k);
			rc = mpc_mul(p, cm, u, v, k);
		}
		if (rc == 0) {
			mass = cm[0];
			for (size_t i = 1; i < k; i++)
				mpc_add(p, &mass, &mass, &cm[i], 1);
		}
		sm_free(cm, k);
		if (rc != 0)
			goto out;
	}
	if ((rc = portion(p, &t, &mass, coin)) != 0 || (rc = above(p, bits, &t, v, k)) != 0)
		goto out;
	first_one(p, u, bits, k);
	/* onehot = sum_i u_i oh_i: k V products in one round */
	if (!(ohT = sm_alloc(k * V)) || !(ur = sm_alloc(k * V))) {
		rc = ERR_NOMEM;
		goto out;
	}
	for (size_t i = 0; i < k; i++)
		for (size_t j = 0; j < V; j++)
			ur[i * V + j] = u[i];
	if ((rc = mpc_mul(p, ohT, ur, oh, k * V)) != 0)
		goto out;
	memcpy(onehot, ohT, V * sizeof *onehot);
	for (size_t i = 1; i < k; i++)
		mpc_add(p, onehot, onehot, ohT + i * V, V);
out:
	sm_free(w, V);
	sm_free(oh, k * V);
	sm_free(v, k);
	sm_free(bits, k);
	sm_free(u, k);
	sm_free(ohT, k * V);
	sm_free(ur, k * V);
	return rc;
}

int smodel_choose(struct smodel_gen *g, float coin)
{
	struct mpc *p = g->sm->p;
	const size_t V = (size_t)g->sm->c.vocab_size;
	const struct smodel_sampling *s = &g->s;
	mpc_share *onehot = sm_alloc(V), *z = NULL;
	int rc = 0;
	if (!onehot)
		return ERR_NOMEM;
	if (s->temperature == 0.0f) {
		rc = greedy(g, onehot);
	} else {
		/* z = logits / T at f bits */
		ring64_t it = (ring64_t)llround(ldexp(1.0 / (double)s->temperature, COIN_BITS));
		if (!(z = sm_alloc(V))) {
			rc = ERR_NOMEM;
			goto out;
		}
		mpc_scale(p, z, g->logits, it, V);
		if ((rc = mpc_trunc(p, z, z, V, COIN_BITS)) != 0)
			goto out;
		if (s->top_k > 0 && (size_t)s->top_k < V)
			rc = sample_top(g, z, onehot, coin);
		else
			rc = sample_all(g, z, onehot, coin);
	}
	if (rc != 0)
		goto out;
	mpc_constant(p, &g->token, 0, 1);
	for (size_t j = 1; j < V; j++) {
		mpc_share a;
		mpc_scale(p, &a, &onehot[j], (ring64_t)j, 1);
		mpc_add(p, &g->token, &g->token, &a, 1);
	}
	g->have_token = true;
	g->pending = onehot;
	g->npending = 1;
	onehot = NULL;
out:
	sm_free(onehot, V);
	sm_free(z, V);
	return rc;
}

int smodel_gen_reveal(struct smodel_gen *g, int *token)
{
	if (!g || !token || !g->have_token)
		return ERR_INVALID;
	ring64_t v;
	int rc = mpc_reveal(g->sm->p, &v, &g->token, 1);
	if (rc != 0)
		return rc;
	if (v >= (ring64_t)g->sm->c.vocab_size)
		return ERR_PROTOCOL; /* not a one-hot: cannot happen with honest arithmetic */
	*token = (int)v;
	return 0;
}

int smodel_gen_release(struct smodel_gen *g, int *token)
{
	if (!g || !token || !g->have_token)
		return ERR_INVALID;
	if (g->released >= g->nmasks)
		return ERR_RANGE;
	struct mpc *p = g->sm->p;
	mpc_share t;
	ring64_t v;
	mpc_add(p, &t, &g->token, &g->masks[g->released], 1);
	int rc = mpc_reveal(p, &v, &t, 1);
	sodium_memzero(&t, sizeof t);
	if (rc != 0)
		return rc;
	*token = -1;
	if (g->mask_clear) {
		v -= g->mask_clear[g->released];
		if (v >= (ring64_t)g->sm->c.vocab_size)
			return ERR_PROTOCOL;
		*token = (int)v;
	}
	g->released++;
	return 0;
}

int smodel_gen_token_share(const struct smodel_gen *g, mpc_share *out)
{
	if (!g || !out || !g->have_token)
		return ERR_INVALID;
	*out = g->token;
	return 0;
}

int smodel_toss_seed(struct mpc *p, uint64_t *seed)
{
	if (!p || !seed)
		return ERR_INVALID;
	unsigned n = mpc_nparties(p), me = mpc_party(p);
	mpc_share acc, in;
	ring64_t mine, v;
	int rc = 0;
	randombytes_buf(&mine, sizeof mine);
	mpc_constant(p, &acc, 0, 1);
	for (unsigned i = 0; i < n && rc == 0; i++)
		if ((rc = mpc_input(p, i, i == me ? &mine : NULL, &in, 1)) == 0)
			mpc_add(p, &acc, &acc, &in, 1);
	sodium_memzero(&mine, sizeof mine);
	if (rc == 0 && (rc = mpc_reveal(p, &v, &acc, 1)) == 0)
		*seed = v;
	sodium_memzero(&acc, sizeof acc);
	return rc;
}
