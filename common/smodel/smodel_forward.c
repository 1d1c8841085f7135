/* smodel_forward: one step of the secure forward pass over m rows (the prompt's slots
 * at once, then one token per step) and the generation state around it.
 *
 * Fixed point: activations have f fractional bits between stages; a product of two of
 * them has 2f and goes straight into the next weight product (3f), and a single
 * truncation by 2f brings the result back, so a secret product followed by a matrix
 * costs one truncation round, not two (the values stay far below the 2^62 bound the
 * truncation needs: docs/MODEL.md lists the largest magnitudes). Every secret x secret
 * product is a Beaver product; every product with a weight matrix is a fixed-mask
 * product, whose opening is the masked activation only. */
#include "smodel/smodel_int.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>

#include <sodium.h>

#include "err/err.h"
#include "model/tok.h"

/* Products per batch at most (bounds memory for long prompts: a prompt of s slots
 * needs about heads * s^2 * head_size / 2 products per layer). */
#define SMODEL_MAX_PRODUCTS (1u << 20)

struct fw {
	struct smodel_gen *g;
	struct smodel *sm;
	struct mpc *p;
	const struct model_config *c;
	unsigned f;
	size_t m;   /* rows */
	int pos0;   /* position of row 0 */
};

#define TRACE(layer, stage, v, rows, n, frac)                                                  \
	do {                                                                                   \
		if (fw->g->trace &&                                                            \
		    (rc = fw->g->trace(fw->g->trace_ctx, fw->p, (layer), (stage), (v), (rows), \
				       (n), (frac))) != 0)                                     \
			goto out;                                                              \
	} while (0)

/* Products x[i] y[i] for i < n in as few batches as SMODEL_MAX_PRODUCTS allows (one,
 * for every prompt this project runs). */
static int products(struct mpc *p, mpc_share *out, const mpc_share *x, const mpc_share *y,
		    size_t n)
{
	for (size_t i = 0; i < n; i += SMODEL_MAX_PRODUCTS) {
		size_t k = n - i < SMODEL_MAX_PRODUCTS ? n - i : SMODEL_MAX_PRODUCTS;
		int rc = mpc_mul(p, out + i, x + i, y + i, k);
		if (rc != 0)
			return rc;
	}
	return 0;
}

/* A batch that is run and freed at once (the common case). */
static int runb(struct mpc_batch **b)
{
	int rc = mpc_batch_run(*b);
	mpc_batch_free(*b);
	*b = NULL;
	return rc;
}

/* Queues out = x / 2^(2f) for x at 3f bits (a truncation by 2f). For x at 2f bits the
 * caller scales by 2^f first: every truncation of the forward pass is by 2f, because the
 * engine keeps one pool of truncation material and starts it afresh when the amount
 * changes. */
static int trunc2f(struct mpc_batch *b, const struct fw *fw, mpc_share *out, mpc_share *x,
		   size_t n, bool from_2f)
{
	if (from_2f)
		mpc_scale(fw->p, x, x, (ring64_t)1 << fw->f, n);
	return n ? mpc_batch_trunc(b, out, x, n, 2 * fw->f) : 0;
}

/* y (m x cols) = rmsnorm(x) W for the RMSNorm weight w, with rsqrt(mean(x^2) + eps)
 * applied last (it is one scalar per row, so it commutes with W):
 *   A  x^2 and x w (products)
 *   B  the mean's truncation and (x w) W (fixed-mask product, 3f bits)
 *   C  rsqrt of the mean, and beside it the truncation of (x w) W to f bits
 *   D  times the row's rsqrt: y at 2f bits
 * so the weight product and its truncation hide under rsqrt's rounds. With scale
 * false, C and D are replaced by the truncation alone and y (f bits) is the product
 * without the 1/rms factor: a positive scale that greedy argmax does not need. */
static int nproj(struct fw *fw, mpc_share *y, const mpc_share *x, const mpc_share *w,
		 const struct smat *W, size_t m, bool scale)
{
	struct mpc *p = fw->p;
	const size_t d = (size_t)fw->c->dim, md = m * d, mc = m * W->cols,
		     tl = smat_tmp_len(W, m);
	const unsigned f = fw->f;
	mpc_share *sq = sm_alloc(md), *xw = sm_alloc(md), *wr = sm_alloc(mc > md ? mc : md),
		  *ss = sm_alloc(m), *r = sm_alloc(m), *y3 = sm_alloc(mc),
		  *tmp = tl ? sm_alloc(tl) : NULL;
	struct mpc_batch *b = NULL;
	int rc = 0;
	if (!sq || !xw || !wr || !ss || !r || !y3 || (tl && !tmp)) {
		rc = ERR_NOMEM;
		goto out;
	}
	for (size_t i = 0; i < m; i++)
		memcpy(wr + i * d, w, d * sizeof *w);
	/* A */
	if ((rc = mpc_batch_new(p, &b)) != 0 || (rc = mpc_batch_mul(b, xw, x, wr, md)) != 0 ||
	    (scale && (rc = mpc_batch_mul(b, sq, x, x, md)) != 0) || (rc = runb(&b)) != 0)
		goto out;
	/* B: mean(x^2) at f bits from the sum (2f bits) times 2^f / dim, truncated by 2f;
	 * exact for a power-of-two dim up to 2^f, otherwise 2^f / dim is rounded (relative
	 * error below dim 2^-(f+1)); beyond 2^f the sum is truncated by f + s with
	 * c = 2^s / dim instead, one truncation of another amount. */
	unsigned shift = 2 * f;
	ring64_t cdim = 0;
	if (d <= ((size_t)1 << f) && ((d & (d - 1)) == 0 || (((size_t)1 << f) / d) >= 64)) {
		cdim = (ring64_t)llround(ldexp(1.0, (int)f) / (double)d);
	} else {
		unsigned sh = 61 - 2 * f - 10;
		cdim = (ring64_t)llround(ldexp(1.0, (int)sh) / (double)d);
		shift = f + sh;
	}
	if (scale)
		for (size_t i = 0; i < m; i++) {
			ss[i] = sq[i * d];
			for (size_t j = 1; j < d; j++)
				mpc_add(p, &ss[i], &ss[i], &sq[i * d + j], 1);
			mpc_scale(p, &ss[i], &ss[i], cdim, 1);
		}
	if ((rc = mpc_batch_new(p, &b)) != 0 || (rc = smat_queue(b, W, y3, tmp, xw, m)) != 0 ||
	    (scale && (rc = mpc_batch_trunc(b, ss, ss, m, shift)) != 0) || (rc = runb(&b)) != 0)
		goto out;
	smat_done(W, y3, tmp, m);
	/* C */
	ring64_t eps = sm_fx(MODEL_RMS_EPS, f);
	if (eps == 0)
		eps = 1;
	for (size_t i = 0; scale && i < m; i++)
		mpc_add_public(p, &ss[i], &ss[i], &eps, 1);
	if ((rc = mpc_batch_new(p, &b)) != 0 ||
	    (rc = trunc2f(b, fw, scale ? y3 : y, y3, mc, false)) != 0 ||
	    (scale && (rc = mpc_batch_rsqrt(b, r, ss, m)) != 0) || (rc = runb(&b)) != 0)
		goto out;
	if (!scale)
		goto out;
	/* D */
	for (size_t i = 0; i < m; i++)
		for (size_t j = 0; j < W->cols; j++)
			wr[i * W->cols + j] = r[i];
	rc = mpc_mul(p, y, y3, wr, mc);
out:
	mpc_batch_free(b);
	sm_free(sq, md);
	sm_free(xw, md);
	sm_free(wr, mc > md ? mc : md);
	sm_free(ss, m);
	sm_free(r, m);
	sm_free(y3, mc);
	sm_free(tmp, tl);
	return rc;
}

/* out (m x cols, f bits) = x W for x at f bits (in_f) or 2f bits: the product has 2f
 * or 3f bits, one truncation by 2f (scaled up first from 2f). */
static int wmul(struct fw *fw, const struct smat *W, mpc_share *out, const mpc_share *x,
		size_t m, bool in_f)
{
	struct mpc_batch *b = NULL;
	int rc = smat_mul(fw->p, W, out, x, m);
	if (rc == 0 && (rc = mpc_batch_new(fw->p, &b)) == 0 &&
	    (rc = trunc2f(b, fw, out, out, m * W->cols, in_f)) == 0)
		rc = mpc_batch_run(b);
	mpc_batch_free(b);
	return rc;
}

/* Rotates the (2j, 2j+1) pairs of every head of v (n values) by position pos, with the
 * public cos/sin at f bits times scale: out has one f more than v. Local. */
static void rope(struct fw *fw, mpc_share *out, const mpc_share *v, size_t n, int pos,
		 double scale)
{
	const struct model_config *c = fw->c;
	const size_t hs = (size_t)c->head_size;
	float cs[MODEL_MAX_DIM / 2], sn[MODEL_MAX_DIM / 2];
	model_rope(c, pos, cs, sn);
	for (size_t j = 0; j < hs / 2; j++) {
		ring64_t C = sm_fx(cs[j] * scale, fw->f), S = sm_fx(sn[j] * scale, fw->f);
		for (size_t h = 0; h < n / hs; h++) {
			const mpc_share *a = v + h * hs + 2 * j, *b = a + 1;
			mpc_share t0, t1;
			mpc_scale(fw->p, &t0, a, C, 1);
			mpc_scale(fw->p, &t1, b, S, 1);
			mpc_sub(fw->p, &out[h * hs + 2 * j], &t0, &t1, 1);
			mpc_scale(fw->p, &t0, a, S, 1);
			mpc_scale(fw->p, &t1, b, C, 1);
			mpc_add(fw->p, &out[h * hs + 2 * j + 1], &t0, &t1, 1);
		}
	}
}

/* Attention over the cache for m rows at positions pos0.. (row r sees keys t <= pos0+r):
 *   nproj  q, k, v at 2f bits (rsqrt included)
 *   E      RoPE (local), then q (scaled by 1/sqrt(head_size)), k and v to f bits; k and
 *          v are appended to the cache
 *   F, G   scores q.k (Beaver, 2f bits), truncated; masks (local)
 *   max    row maxima (smax)
 *   X      exp(score - max), an exponent <= 0 (mpc_batch_exp_neg)
 *   Y      1/row sums (reciprocal), beside the unnormalised att V (Beaver, 2f bits)
 *   Z, W   times the reciprocal (3f bits), truncated
 *   V      wo (fixed mask) and its truncation; the residual add is local. */
static int attention(struct fw *fw, int l, mpc_share *x)
{
	struct smodel_gen *g = fw->g;
	struct mpc *p = fw->p;
	const struct model_config *c = fw->c;
	const struct slayer *ly = &fw->sm->layer[l];
	const unsigned f = fw->f;
	const size_t m = fw->m, d = (size_t)c->dim, kv = (size_t)c->kv_dim,
		     hs = (size_t)c->head_size, H = (size_t)c->n_heads,
		     grp = (size_t)(c->n_heads / c->n_kv_heads), qc = d + 2 * kv,
		     n = (size_t)fw->pos0 + m, pos0 = (size_t)fw->pos0, R = m * H;
	mpc_share *kc = g->kc + (size_t)l * g->n_ctx * kv, *vc = g->vc + (size_t)l * g->n_ctx * kv;
	size_t np = 0; /* products of F (and of Y's att V) */
	for (size_t r = 0; r < m; r++)
		np += H * (pos0 + r + 1) * hs;
	mpc_share *y = sm_alloc(m * qc), *q3 = sm_alloc(m * qc), *q = sm_alloc(m * d),
		  *px = sm_alloc(np), *py = sm_alloc(np), *pz = sm_alloc(np), *sc = sm_alloc(R * n),
		  *mx = sm_alloc(R), *sum = sm_alloc(R), *rcp = sm_alloc(R), *av = sm_alloc(m * d),
		  *rr = sm_alloc(m * d), *o = sm_alloc(m * d), *tq = NULL;
	struct mpc_batch *b = NULL;
	int rc = 0;
	if (!y || !q3 || !q || !px || !py || !pz || !sc || !mx || !sum || !rcp || !av || !rr || !o) {
		rc = ERR_NOMEM;
		goto out;
	}
	if ((rc = nproj(fw, y, x, ly->rms_att, &ly->qkv, m, true)) != 0)
		goto out;
	/* E */
	const double isq = 1.0 / sqrt((double)hs);
	for (size_t r = 0; r < m; r++) {
		const mpc_share *yr = y + r * qc;
		mpc_share *qr = q3 + r * qc;
		rope(fw, qr, yr, d, fw->pos0 + (int)r, isq);
		rope(fw, qr + d, yr + d, kv, fw->pos0 + (int)r, 1.0);
		mpc_scale(p, qr + d + kv, yr + d + kv, (ring64_t)1 << f, kv);
	}
	if (g->trace) {
		if (!(tq = sm_alloc(m * d))) {
			rc = ERR_NOMEM;
			goto out;
		}
		for (size_t r = 0; r < m; r++)
			rope(fw, tq + r * d, y + r * qc, d, fw->pos0 + (int)r, 1.0);
		TRACE(l, "q", tq, m, d, 3 * f);
	}
	if ((rc = mpc_batch_new(p, &b)) != 0)
		goto out;
	for (size_t r = 0; r < m && rc == 0; r++) {
		mpc_share *qr = q3 + r * qc;
		if ((rc = trunc2f(b, fw, q + r * d, qr, d, false)) == 0 &&
		    (rc = trunc2f(b, fw, kc + (pos0 + r) * kv, qr + d, kv, false)) == 0)
			rc = trunc2f(b, fw, vc + (pos0 + r) * kv, qr + d + kv, kv, false);
	}
	if (rc != 0 || (rc = runb(&b)) != 0)
		goto out;
	TRACE(l, "k", kc + pos0 * kv, m, kv, f);
	TRACE(l, "v", vc + pos0 * kv, m, kv, f);
	/* F */
	size_t e = 0;
	for (size_t r = 0; r < m; r++)
		for (size_t h = 0; h < H; h++) {
			const size_t gk = h / grp;
			for (size_t t = 0; t <= pos0 + r; t++)
				for (size_t j = 0; j < hs; j++, e++) {
					px[e] = q[r * d + h * hs + j];
					py[e] = kc[t * kv + gk * hs + j];
				}
		}
	if ((rc = products(p, pz, px, py, e)) != 0)
		goto out;
	/* G: scores at f bits; the causal mask is public (a constant far below), the pad
	 * mask adds (valid - 1) shift (local) */
	const ring64_t shift = sm_fx(SMODEL_MASK_SHIFT, f), mshift = (ring64_t)0 - shift;
	e = 0;
	for (size_t r = 0; r < m; r++)
		for (size_t h = 0; h < H; h++) {
			mpc_share *s = sc + (r * H + h) * n;
			for (size_t t = 0; t <= pos0 + r; t++) {
				s[t] = pz[e++];
				for (size_t j = 1; j < hs; j++)
					mpc_add(p, &s[t], &s[t], &pz[e++], 1);
			}
		}
	if ((rc = mpc_batch_new(p, &b)) != 0)
		goto out;
	for (size_t i = 0; i < R && rc == 0; i++) {
		size_t tn = pos0 + i / H + 1;
		rc = trunc2f(b, fw, sc + i * n, sc + i * n, tn, true);
	}
	if (rc != 0 || (rc = runb(&b)) != 0)
		goto out;
	for (size_t i = 0; i < R; i++) {
		size_t tn = pos0 + i / H + 1;
		for (size_t t = tn; t < n; t++)
			mpc_constant(p, &sc[i * n + t], mshift, 1);
		if (g->padded)
			for (size_t t = 0; t < tn; t++) {
				mpc_share a;
				mpc_scale(p, &a, &g->valid[t], shift, 1);
				mpc_add(p, &sc[i * n + t], &sc[i * n + t], &a, 1);
				mpc_add_public(p, &sc[i * n + t], &sc[i * n + t], &mshift, 1);
			}
	}
	/* max, X */
	if ((rc = smax(p, mx, NULL, sc, R, n)) != 0)
		goto out;
	for (size_t i = 0; i < R; i++)
		for (size_t t = 0; t < n; t++)
			mpc_sub(p, &sc[i * n + t], &sc[i * n + t], &mx[i], 1);
	if ((rc = mpc_batch_new(p, &b)) != 0 || (rc = mpc_batch_exp_neg(b, sc, sc, R * n)) != 0 ||
	    (rc = runb(&b)) != 0)
		goto out;
	/* Y */
	for (size_t i = 0; i < R; i++) {
		sum[i] = sc[i * n];
		for (size_t t = 1; t < n; t++)
			mpc_add(p, &sum[i], &sum[i], &sc[i * n + t], 1);
	}
	e = 0;
	for (size_t r = 0; r < m; r++)
		for (size_t h = 0; h < H; h++) {
			const size_t gk = h / grp;
			for (size_t t = 0; t <= pos0 + r; t++)
				for (size_t j = 0; j < hs; j++, e++) {
					px[e] = sc[(r * H + h) * n + t];
					py[e] = vc[t * kv + gk * hs + j];
				}
		}
	if ((rc = mpc_batch_new(p, &b)) != 0 || (rc = mpc_batch_recip(b, rcp, sum, R)) != 0)
		goto out;
	for (size_t i = 0; i < e && rc == 0; i += SMODEL_MAX_PRODUCTS)
		rc = mpc_batch_mul(b, pz + i, px + i, py + i,
				   e - i < SMODEL_MAX_PRODUCTS ? e - i : SMODEL_MAX_PRODUCTS);
	if (rc != 0 || (rc = runb(&b)) != 0)
		goto out;
	e = 0;
	for (size_t r = 0; r < m; r++)
		for (size_t h = 0; h < H; h++) {
			mpc_share *a = av + r * d + h * hs;
			mpc_constant(p, a, 0, hs);
			for (size_t t = 0; t <= pos0 + r; t++)
				for (size_t j = 0; j < hs; j++, e++)
					mpc_add(p, &a[j], &a[j], &pz[e], 1);
			for (size_t j = 0; j < hs; j++)
				rr[r * d + h * hs + j] = rcp[r * H + h];
		}
	/* Z, W */
	if ((rc = mpc_mul(p, av, av, rr, m * d)) != 0 || (rc = mpc_batch_new(p, &b)) != 0 ||
	    (rc = trunc2f(b, fw, av, av, m * d, false)) != 0 || (rc = runb(&b)) != 0)
		goto out;
	TRACE(l, "attn", av, m, d, f);
	/* V */
	if ((rc = wmul(fw, &ly->wo, o, av, m, true)) != 0)
		goto out;
	mpc_add(p, x, x, o, m * d);
	TRACE(l, "attn_res", x, m, d, f);
out:
	mpc_batch_free(b);
	sm_free(y, m * qc);
	sm_free(q3, m * qc);
	sm_free(q, m * d);
	sm_free(px, np);
	sm_free(py, np);
	sm_free(pz, np);
	sm_free(sc, R * n);
	sm_free(mx, R);
	sm_free(sum, R);
	sm_free(rcp, R);
	sm_free(av, m * d);
	sm_free(rr, m * d);
	sm_free(o, m * d);
	sm_free(tq, m * d);
	return rc;
}

/* SwiGLU: nproj gives w1 x, w3 x (2f bits), truncated; silu; the gate product (2f
 * bits) goes straight into w2 (3f bits) and one truncation. */
static int ffn(struct fw *fw, int l, mpc_share *x)
{
	struct mpc *p = fw->p;
	const struct slayer *ly = &fw->sm->layer[l];
	const size_t m = fw->m, d = (size_t)fw->c->dim, hd = (size_t)fw->c->hidden_dim;
	mpc_share *h = sm_alloc(m * 2 * hd), *h1 = sm_alloc(m * hd), *h3 = sm_alloc(m * hd),
		  *s = sm_alloc(m * hd), *y = sm_alloc(m * d);
	struct mpc_batch *b = NULL;
	int rc = 0;
	if (!h || !h1 || !h3 || !s || !y) {
		rc = ERR_NOMEM;
		goto out;
	}
	if ((rc = nproj(fw, h, x, ly->rms_ffn, &ly->w13, m, true)) != 0)
		goto out;
	for (size_t r = 0; r < m; r++) {
		memcpy(h1 + r * hd, h + r * 2 * hd, hd * sizeof *h);
		memcpy(h3 + r * hd, h + r * 2 * hd + hd, hd * sizeof *h);
	}
	if ((rc = mpc_batch_new(p, &b)) != 0 || (rc = trunc2f(b, fw, h1, h1, m * hd, true)) != 0 ||
	    (rc = trunc2f(b, fw, h3, h3, m * hd, true)) != 0 || (rc = runb(&b)) != 0)
		goto out;
	if ((rc = mpc_silu(p, s, h1, m * hd)) != 0 || (rc = mpc_mul(p, s, s, h3, m * hd)) != 0)
		goto out;
	TRACE(l, "ffn_gate", s, m, hd, 2 * fw->f);
	if ((rc = wmul(fw, &ly->w2, y, s, m, false)) != 0)
		goto out;
	mpc_add(p, x, x, y, m * d);
	TRACE(l, "ffn_res", x, m, d, fw->f);
out:
	mpc_batch_free(b);
	sm_free(h, m * 2 * hd);
	sm_free(h1, m * hd);
	sm_free(h3, m * hd);
	sm_free(s, m * hd);
	sm_free(y, m * d);
	return rc;
}

/* The forward pass over m one-hot rows at positions pos..pos+m-1, leaving
 * the last row's logits in g->logits: the true logits, or (greedy without
 * full_logits) the logits times the final RMS, whose argmax is the same. */
static int forward(struct smodel_gen *g, const mpc_share *rows, size_t m_rows)
{
	struct smodel *sm = g->sm;
	struct fw fwv = {.g = g, .sm = sm, .p = sm->p, .c = &sm->c, .f = sm->f, .m = m_rows,
			 .pos0 = g->pos};
	struct fw *fw = &fwv;
	const size_t m = fw->m, d = (size_t)sm->c.dim, V = (size_t)sm->c.vocab_size;
	const bool scale = g->s.temperature > 0.0f || g->full_logits;
	mpc_share *x = sm_alloc(m * d), *l2 = sm_alloc(V);
	struct mpc_batch *b = NULL;
	int rc = 0;
	if (!x || !l2) {
		rc = ERR_NOMEM;
		goto out;
	}
	if ((rc = smat_mul(fw->p, &sm->emb, x, rows, m)) != 0)
		goto out;
	TRACE(-1, "embedding", x, m, d, fw->f);
	for (int l = 0; l < sm->c.n_layers; l++)
		if ((rc = attention(fw, l, x)) != 0 || (rc = ffn(fw, l, x)) != 0)
			goto out;
	/* only the last row's next token matters */
	if ((rc = nproj(fw, scale ? l2 : g->logits, x + (m - 1) * d, sm->rms_final, &sm->cls, 1,
			scale)) != 0)
		goto out;
	if (scale && ((rc = mpc_batch_new(fw->p, &b)) != 0 ||
		      (rc = trunc2f(b, fw, g->logits, l2, V, true)) != 0 || (rc = runb(&b)) != 0))
		goto out;
	TRACE(-1, "logits", g->logits, 1, V, fw->f);
out:
	mpc_batch_free(b);
	sm_free(x, m * d);
	sm_free(l2, V);
	return rc;
}

/* ---------------------------------------------------------------- generation */

int smodel_gen_new(struct smodel *sm, const struct smodel_gen_opts *o, struct smodel_gen **out)
{
	if (!out)
		return ERR_INVALID;
	*out = NULL;
	if (!sm || !o)
		return ERR_INVALID;
	const struct model_config *c = &sm->c;
	const struct smodel_sampling *s = &o->sampling;
	if (o->n_ctx < 1 || o->n_ctx > c->seq_len)
		return ERR_RANGE;
	if (!isfinite(s->temperature) || s->temperature < 0.0f ||
	    (s->temperature > 0.0f && (s->temperature < 1e-3f || s->temperature > 1e6f)) ||
	    !isfinite(s->top_p) || s->top_k < 0)
		return ERR_RANGE;
	bool top_k = s->top_k > 0 && s->top_k < c->vocab_size;
	bool top_p = s->top_p > 0.0f && s->top_p < 1.0f;
	if (s->temperature > 0.0f && top_p && !top_k)
		return ERR_UNSUPPORTED;
	struct smodel_gen *g = calloc(1, sizeof *g);
	if (!g)
		return ERR_NOMEM;
	g->sm = sm;
	g->s = *s;
	g->full_logits = o->full_logits;
	g->n_ctx = o->n_ctx;
	size_t cache = (size_t)c->n_layers * (size_t)o->n_ctx * (size_t)c->kv_dim;
	if (!(g->kc = sm_alloc(cache)) || !(g->vc = sm_alloc(cache)) ||
	    !(g->valid = sm_alloc((size_t)o->n_ctx)) ||
	    !(g->logits = sm_alloc((size_t)c->vocab_size))) {
		smodel_gen_free(g);
		return ERR_NOMEM;
	}
	/* every position is a real one unless a padded prompt says otherwise */
	mpc_constant(sm->p, g->valid, 1, (size_t)o->n_ctx);
	*out = g;
	return 0;
}

void smodel_gen_free(struct smodel_gen *g)
{
	if (!g)
		return;
	const struct model_config *c = &g->sm->c;
	size_t cache = (size_t)c->n_layers * (size_t)g->n_ctx * (size_t)c->kv_dim;
	sm_free(g->kc, cache);
	sm_free(g->vc, cache);
	sm_free(g->valid, (size_t)g->n_ctx);
	sm_free(g->logits, (size_t)c->vocab_size);
	sm_free(g->pending, g->npending * (size_t)c->vocab_size);
	sm_free(g->masks, g->nmasks);
	if (g->mask_clear) {
		sodium_memzero(g->mask_clear, g->nmasks * sizeof *g->mask_clear);
		free(g->mask_clear);
	}
	free(g);
}

int smodel_gen_prompt(struct smodel_gen *g, unsigned owner, const int *ids, size_t n,
		      size_t slots, bool pad)
{
	if (!g || g->started)
		return ERR_INVALID;
	struct mpc *p = g->sm->p;
	const size_t V = (size_t)g->sm->c.vocab_size;
	const bool me = mpc_party(p) == owner;
	if (owner >= mpc_nparties(p) || slots == 0 || slots > (size_t)g->n_ctx)
		return ERR_RANGE;
	if (me && (!ids || n == 0 || n > slots || (!pad && n != slots)))
		return ERR_INVALID;
	/* one input round: the one-hot rows, the valid bits (padded), the release masks
	 * (one per token the context leaves room to choose: a step per free position,
	 * plus the prompt's); pads are BOS, masked anyway */
	const size_t nm = (size_t)g->n_ctx - slots + 1, vbits = pad ? slots : 0,
		     vals = slots * V + vbits + nm;
	ring64_t *clear = NULL;
	mpc_share *in = sm_alloc(vals);
	int rc = 0, rc2;
	if (!in || !(g->pending = sm_alloc(slots * V)) || !(g->masks = sm_alloc(nm))) {
		sm_free(in, vals);
		return ERR_NOMEM;
	}
	g->npending = slots;
	g->nmasks = nm;
	g->padded = pad;
	g->started = true;
	if (me) {
		if (!(clear = calloc(vals, sizeof *clear)) ||
		    !(g->mask_clear = calloc(nm ? nm : 1, sizeof *g->mask_clear))) {
			free(clear);
			sm_free(in, vals);
			return ERR_NOMEM;
		}
		size_t lead = slots - n;
		for (size_t i = 0; i < slots; i++) {
			int id = i < lead ? TOK_BOS : ids[i - lead];
			if (id < 0 || (size_t)id >= V) {
				rc = ERR_RANGE; /* still take part in the round, then refuse */
				id = 0;
			}
			clear[i * V + (size_t)id] = 1;
			if (pad)
				clear[slots * V + i] = i >= lead;
		}
		randombytes_buf(g->mask_clear, nm * sizeof *g->mask_clear);
		memcpy(clear + slots * V + vbits, g->mask_clear, nm * sizeof *clear);
	}
	if ((rc2 = mpc_input(p, owner, clear, in, vals)) == 0) {
		memcpy(g->pending, in, slots * V * sizeof *in);
		if (pad)
			memcpy(g->valid, in + slots * V, slots * sizeof *in);
		memcpy(g->masks, in + slots * V + vbits, nm * sizeof *in);
	}
	sm_free(in, vals);
	if (clear) {
		sodium_memzero(clear, vals * sizeof *clear);
		free(clear);
	}
	return rc != 0 ? rc : rc2;
}

int smodel_gen_prompt_shares(struct smodel_gen *g, const mpc_share *onehot,
			     const mpc_share *valid, size_t slots)
{
	if (!g || g->started || !onehot)
		return ERR_INVALID;
	const size_t V = (size_t)g->sm->c.vocab_size;
	if (slots == 0 || slots > (size_t)g->n_ctx)
		return ERR_RANGE;
	if (!(g->pending = sm_alloc(slots * V)))
		return ERR_NOMEM;
	memcpy(g->pending, onehot, slots * V * sizeof *onehot);
	if (valid)
		memcpy(g->valid, valid, slots * sizeof *valid);
	g->npending = slots;
	g->padded = valid != NULL;
	g->started = true;
	return 0;
}

int smodel_gen_step(struct smodel_gen *g, float coin)
{
	if (!g || !g->started || !g->npending)
		return ERR_INVALID;
	if (g->pos + (int)g->npending > g->n_ctx)
		return ERR_RANGE;
	if (!(coin >= 0.0f && coin < 1.0f))
		return ERR_RANGE;
	struct mpc *p = g->sm->p;
	struct mpc_stats st0, st1;
	int rc;
	/* One triple sacrifice per step instead of one per operation that runs dry: the
	 * last step's consumption plus what one more key adds to attention (2 dim
	 * products per layer). The counters are the same at every party, so every party
	 * asks for the same amount. */
	mpc_get_stats(p, &st0);
	if (g->npending == 1 && g->step_triples > 0) {
		size_t want = (size_t)g->step_triples +
			      2 * (size_t)g->sm->c.dim * (size_t)g->sm->c.n_layers;
		if ((rc = mpc_prefill(p, MPC_PREP_TRIPLE, 0, want + want / 32)) != 0)
			return rc;
	}
	/* a long prompt runs in chunks of rows, each attending to the cache and to itself,
	 * so that one chunk's attention holds at most 2^16 scores (memory: every score
	 * costs dozens of triples); the chunking depends on public sizes only */
	const size_t rows = g->npending, V = (size_t)g->sm->c.vocab_size,
		     per = (size_t)1 << 16, hn = (size_t)g->sm->c.n_heads * (size_t)g->n_ctx;
	const size_t chunk = hn >= per ? 1 : per / hn;
	for (size_t r0 = 0; r0 < rows; r0 += chunk) {
		size_t m = rows - r0 < chunk ? rows - r0 : chunk;
		if ((rc = forward(g, g->pending + r0 * V, m)) != 0)
			return rc;
		g->pos += (int)m;
	}
	sm_free(g->pending, rows * (size_t)g->sm->c.vocab_size);
	g->pending = NULL;
	g->npending = 0;
	if ((rc = smodel_choose(g, coin)) != 0)
		return rc;
	/* after the prompt, a guess from its consumption per row (a single row reads more
	 * keys than the prompt's average row); triples asked for and not used stay in the
	 * pool for the next step */
	mpc_get_stats(p, &st1);
	g->step_triples = (st1.triples - st0.triples) * (rows == 1 ? 2 : 3) / (2 * rows);
	return 0;
}

int smodel_gen_pos(const struct smodel_gen *g) { return g->pos; }
const mpc_share *smodel_gen_logits(const struct smodel_gen *g) { return g->logits; }

void smodel_gen_set_trace(struct smodel_gen *g, smodel_trace_fn fn, void *ctx)
{
	g->trace = fn;
	g->trace_ctx = ctx;
}
