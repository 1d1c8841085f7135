/* smodel_weights: turning a checkpoint into shared weights. The weights enter the
 * engine either from one owner (mpc_input of the fixed-point encoding) or as every
 * party's additive shares (each party inputs its share, the sum is the weight), so
 * both end as authenticated shares; then every matrix becomes a fixed-mask matrix
 * (W - B opened once per session, docs/PROTOCOL.md) transposed to the x W orientation,
 * with the matrices that read the same input side by side (wq|wk|wv, w1|w3) so that one
 * opening of the input serves them all. */
#include "smodel/smodel_int.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>

#include <sodium.h>

#include "err/err.h"

mpc_share *sm_alloc(size_t n)
{
	return calloc(n ? n : 1, sizeof(mpc_share));
}

void sm_free(mpc_share *a, size_t n)
{
	if (!a)
		return;
	sodium_memzero(a, n * sizeof *a);
	free(a);
}

ring64_t sm_fx(double x, unsigned f)
{
	ring64_t v = 0;
	ring_fxp_encode(x, f, &v, NULL);
	return v;
}

/* ---------------------------------------------------------------- smat */

int smat_new(struct mpc *p, const mpc_share *w, uint32_t rows, uint32_t cols, struct smat *out)
{
	memset(out, 0, sizeof *out);
	if (rows == 0 || cols == 0 || rows > SMODEL_FMAT_MAX_SIDE)
		return ERR_INVALID;
	uint32_t bc = SMODEL_FMAT_MAX_ENTRIES / rows;
	if (bc > SMODEL_FMAT_MAX_SIDE)
		bc = SMODEL_FMAT_MAX_SIDE;
	if (bc > cols)
		bc = cols;
	out->rows = rows;
	out->cols = cols;
	out->bcols = bc;
	out->nblk = (cols + bc - 1) / bc;
	out->fm = calloc(out->nblk, sizeof *out->fm);
	mpc_share *blk = out->nblk > 1 ? sm_alloc((size_t)rows * bc) : NULL;
	int rc = 0;
	if (!out->fm || (out->nblk > 1 && !blk)) {
		rc = ERR_NOMEM;
		goto out;
	}
	for (size_t k = 0; k < out->nblk; k++) {
		uint32_t c0 = (uint32_t)k * bc, n = cols - c0 < bc ? cols - c0 : bc;
		const mpc_share *src = w;
		if (out->nblk > 1) {
			for (uint32_t r = 0; r < rows; r++)
				memcpy(blk + (size_t)r * n, w + (size_t)r * cols + c0, n * sizeof *blk);
			src = blk;
		}
		if ((rc = mpc_fmat_new(p, src, rows, n, &out->fm[k])) != 0)
			goto out;
	}
out:
	sm_free(blk, (size_t)rows * bc);
	if (rc != 0)
		smat_free(out);
	return rc;
}

void smat_free(struct smat *s)
{
	if (!s || !s->fm)
		return;
	for (size_t k = 0; k < s->nblk; k++)
		mpc_fmat_free(s->fm[k]);
	free(s->fm);
	s->fm = NULL;
}

size_t smat_tmp_len(const struct smat *s, size_t m) { return s->nblk > 1 ? m * s->cols : 0; }

/* Block k of an m-row product sits at tmp + c0 m as m rows of its own width. */
static size_t blk_cols(const struct smat *s, size_t k)
{
	size_t c0 = k * s->bcols;
	return s->cols - c0 < s->bcols ? s->cols - c0 : s->bcols;
}

int smat_queue(struct mpc_batch *b, const struct smat *s, mpc_share *out, mpc_share *tmp,
	       const mpc_share *x, size_t m)
{
	size_t per = SMODEL_FMAT_MAX_USE / (s->rows + s->bcols);
	int rc = 0;
	if (per == 0 || (s->nblk > 1 && !tmp))
		return ERR_INVALID;
	/* row chunks (the engine's per-use limit) are separate products in the same round */
	for (size_t r0 = 0; r0 < m && rc == 0; r0 += per) {
		size_t mm = m - r0 < per ? m - r0 : per;
		for (size_t k = 0; k < s->nblk && rc == 0; k++) {
			size_t c0 = k * s->bcols, n = blk_cols(s, k);
			mpc_share *dst = s->nblk > 1 ? tmp + c0 * m + r0 * n : out + r0 * s->cols;
			rc = mpc_batch_fmat_mul(b, s->fm[k], dst, x + r0 * s->rows, (uint32_t)mm);
		}
	}
	return rc;
}

void smat_done(const struct smat *s, mpc_share *out, const mpc_share *tmp, size_t m)
{
	if (s->nblk < 2)
		return;
	for (size_t k = 0; k < s->nblk; k++) {
		size_t c0 = k * s->bcols, n = blk_cols(s, k);
		for (size_t r = 0; r < m; r++)
			memcpy(out + r * s->cols + c0, tmp + c0 * m + r * n, n * sizeof *out);
	}
}

int smat_mul(struct mpc *p, const struct smat *s, mpc_share *out, const mpc_share *x, size_t m)
{
	size_t tl = smat_tmp_len(s, m);
	mpc_share *tmp = tl ? sm_alloc(tl) : NULL;
	struct mpc_batch *b = NULL;
	int rc = tl && !tmp ? ERR_NOMEM : mpc_batch_new(p, &b);
	if (rc == 0 && (rc = smat_queue(b, s, out, tmp, x, m)) == 0 && (rc = mpc_batch_run(b)) == 0)
		smat_done(s, out, tmp, m);
	mpc_batch_free(b);
	sm_free(tmp, tl);
	return rc;
}

/* ---------------------------------------------------------------- tensors */

static void tensor_shape(const struct model_config *c, enum model_tensor_id id, size_t *layers,
			 size_t *rows, size_t *cols)
{
	size_t L = (size_t)c->n_layers, d = (size_t)c->dim, kv = (size_t)c->kv_dim,
	       h = (size_t)c->hidden_dim, v = (size_t)c->vocab_size;
	size_t s[MODEL_T_COUNT][3] = {
		[MODEL_T_TOKEN_EMBEDDING] = {1, v, d}, [MODEL_T_RMS_ATT] = {L, 1, d},
		[MODEL_T_WQ] = {L, d, d},              [MODEL_T_WK] = {L, kv, d},
		[MODEL_T_WV] = {L, kv, d},             [MODEL_T_WO] = {L, d, d},
		[MODEL_T_RMS_FFN] = {L, 1, d},         [MODEL_T_W1] = {L, h, d},
		[MODEL_T_W2] = {L, d, h},              [MODEL_T_W3] = {L, h, d},
		[MODEL_T_RMS_FINAL] = {1, 1, d},       [MODEL_T_WCLS] = {1, v, d},
	};
	*layers = s[id][0];
	*rows = s[id][1];
	*cols = s[id][2];
}

/* The source of the tensors' shares: one owner's plaintext, or every party's shares. */
struct wsrc {
	unsigned owner;                 /* owner mode */
	const struct model *m;          /* owner mode, at the owner */
	const ring64_t *const *tensors; /* shares mode */
};

/* The whole tensor id as authenticated shares (count values) into out. */
static int tensor_input(struct smodel *sm, const struct wsrc *src, enum model_tensor_id id,
			mpc_share *out, size_t count)
{
	struct mpc *p = sm->p;
	unsigned me = mpc_party(p), n = mpc_nparties(p);
	int rc = 0;
	if (!src->tensors) {
		ring64_t *enc = NULL;
		if (me == src->owner) {
			struct model_tensor t;
			if ((rc = model_tensor(src->m, id, &t)) != 0)
				return rc;
			if (t.count != count)
				return ERR_INVALID;
			if (!(enc = malloc(count * sizeof *enc)))
				return ERR_NOMEM;
			for (size_t i = 0; i < count && rc == 0; i++) {
				bool sat = false;
				if (ring_fxp_encode(t.data[i], sm->f, &enc[i], &sat) != 0 || sat)
					rc = ERR_RANGE;
			}
		}
		/* every party takes part in the round, also when the owner must refuse, so
		 * nobody waits: the owner inputs zeros and then reports its error */
		if (rc != 0 && enc)
			memset(enc, 0, count * sizeof *enc);
		int rc2 = mpc_input(p, src->owner, enc, out, count);
		if (enc) {
			sodium_memzero(enc, count * sizeof *enc);
			free(enc);
		}
		return rc != 0 ? rc : rc2;
	}
	mpc_share *tmp = sm_alloc(count);
	if (!tmp)
		return ERR_NOMEM;
	for (unsigned i = 0; i < n && rc == 0; i++) {
		rc = mpc_input(p, i, i == me ? src->tensors[id] : NULL, i == 0 ? out : tmp, count);
		if (rc == 0 && i > 0)
			mpc_add(p, out, out, tmp, count);
	}
	sm_free(tmp, count);
	return rc;
}

/* Transposes layer l of a [L][rows][cols] tensor into columns c0.. of a cols x W matrix
 * (x W orientation: W[in][out] = w[out][in]). */
static void put_t(mpc_share *W, size_t wcols, size_t c0, const mpc_share *t, size_t l,
		  size_t rows, size_t cols)
{
	const mpc_share *base = t + l * rows * cols;
	for (size_t r = 0; r < rows; r++)
		for (size_t c = 0; c < cols; c++)
			W[c * wcols + c0 + r] = base[r * cols + c];
}

static bool config_ok(const struct model_config *c)
{
	return c->dim > 0 && c->n_layers > 0 && c->n_heads > 0 && c->n_kv_heads > 0 &&
	       c->vocab_size > 0 && c->hidden_dim > 0 && c->seq_len > 0 &&
	       c->dim % c->n_heads == 0 && c->n_heads % c->n_kv_heads == 0 &&
	       c->head_size == c->dim / c->n_heads && c->head_size % 2 == 0 &&
	       c->kv_dim == c->n_kv_heads * c->head_size && c->dim <= MODEL_MAX_DIM &&
	       c->hidden_dim <= MODEL_MAX_HIDDEN && c->n_layers <= MODEL_MAX_LAYERS &&
	       c->vocab_size <= MODEL_MAX_VOCAB && c->seq_len <= MODEL_MAX_SEQ;
}

static bool config_eq(const struct model_config *a, const struct model_config *b)
{
	return a->dim == b->dim && a->hidden_dim == b->hidden_dim && a->n_layers == b->n_layers &&
	       a->n_heads == b->n_heads && a->n_kv_heads == b->n_kv_heads &&
	       a->vocab_size == b->vocab_size && a->seq_len == b->seq_len &&
	       a->shared_classifier == b->shared_classifier && a->head_size == b->head_size &&
	       a->kv_dim == b->kv_dim;
}

static int build(struct mpc *p, const struct model_config *cfg, const struct wsrc *src,
		 struct smodel **out)
{
	*out = NULL;
	if (!p || !cfg || !config_ok(cfg))
		return ERR_INVALID;
	struct smodel *sm = calloc(1, sizeof *sm);
	mpc_share *t[MODEL_T_COUNT] = {0};
	size_t cnt[MODEL_T_COUNT] = {0};
	mpc_share *W = NULL;
	int rc = 0;
	if (!sm)
		return ERR_NOMEM;
	sm->p = p;
	sm->c = *cfg;
	sm->f = mpc_frac_bits(p);
	const size_t L = (size_t)cfg->n_layers, d = (size_t)cfg->dim, kv = (size_t)cfg->kv_dim,
		     h = (size_t)cfg->hidden_dim, v = (size_t)cfg->vocab_size;
	size_t wmax = d * (d + 2 * kv);
	if (d * 2 * h > wmax)
		wmax = d * 2 * h;
	if (v * d > wmax)
		wmax = v * d;
	if (!(sm->layer = calloc(L, sizeof *sm->layer))) {
		rc = ERR_NOMEM;
		goto out;
	}
	/* one tensor at a time into shares (the classifier of a shared-classifier model is
	 * the embedding) */
	for (int id = 0; id < MODEL_T_COUNT; id++) {
		if (id == MODEL_T_WCLS && cfg->shared_classifier)
			continue;
		size_t nl, r, c;
		tensor_shape(cfg, (enum model_tensor_id)id, &nl, &r, &c);
		cnt[id] = nl * r * c;
		if (!(t[id] = sm_alloc(cnt[id]))) {
			rc = ERR_NOMEM;
			goto out;
		}
		if ((rc = tensor_input(sm, src, (enum model_tensor_id)id, t[id], cnt[id])) != 0)
			goto out;
	}
	if (!(W = sm_alloc(wmax)) || !(sm->rms_final = sm_alloc(d))) {
		rc = ERR_NOMEM;
		goto out;
	}
	memcpy(sm->rms_final, t[MODEL_T_RMS_FINAL], d * sizeof *W);
	for (size_t l = 0; l < L; l++) {
		struct slayer *ly = &sm->layer[l];
		if (!(ly->rms_att = sm_alloc(d)) || !(ly->rms_ffn = sm_alloc(d))) {
			rc = ERR_NOMEM;
			goto out;
		}
		memcpy(ly->rms_att, t[MODEL_T_RMS_ATT] + l * d, d * sizeof *W);
		memcpy(ly->rms_ffn, t[MODEL_T_RMS_FFN] + l * d, d * sizeof *W);
		size_t qc = d + 2 * kv;
		put_t(W, qc, 0, t[MODEL_T_WQ], l, d, d);
		put_t(W, qc, d, t[MODEL_T_WK], l, kv, d);
		put_t(W, qc, d + kv, t[MODEL_T_WV], l, kv, d);
		if ((rc = smat_new(p, W, (uint32_t)d, (uint32_t)qc, &ly->qkv)) != 0)
			goto out;
		put_t(W, d, 0, t[MODEL_T_WO], l, d, d);
		if ((rc = smat_new(p, W, (uint32_t)d, (uint32_t)d, &ly->wo)) != 0)
			goto out;
		put_t(W, 2 * h, 0, t[MODEL_T_W1], l, h, d);
		put_t(W, 2 * h, h, t[MODEL_T_W3], l, h, d);
		if ((rc = smat_new(p, W, (uint32_t)d, (uint32_t)(2 * h), &ly->w13)) != 0)
			goto out;
		put_t(W, d, 0, t[MODEL_T_W2], l, d, h);
		if ((rc = smat_new(p, W, (uint32_t)h, (uint32_t)d, &ly->w2)) != 0)
			goto out;
	}
	/* the embedding as it is (one-hot rows in, embeddings out), the classifier
	 * transposed */
	if ((rc = smat_new(p, t[MODEL_T_TOKEN_EMBEDDING], (uint32_t)v, (uint32_t)d, &sm->emb)) != 0)
		goto out;
	put_t(W, v, 0, cfg->shared_classifier ? t[MODEL_T_TOKEN_EMBEDDING] : t[MODEL_T_WCLS], 0, v,
	      d);
	if ((rc = smat_new(p, W, (uint32_t)d, (uint32_t)v, &sm->cls)) != 0)
		goto out;
out:
	for (int id = 0; id < MODEL_T_COUNT; id++)
		sm_free(t[id], cnt[id]);
	sm_free(W, wmax);
	if (rc != 0) {
		smodel_free(sm);
		return rc;
	}
	*out = sm;
	return 0;
}

int smodel_new_owner(struct mpc *p, const struct model_config *cfg, unsigned owner,
		     const struct model *m, struct smodel **out)
{
	if (!out)
		return ERR_INVALID;
	*out = NULL;
	if (!p || owner >= mpc_nparties(p) || (mpc_party(p) == owner) != (m != NULL))
		return ERR_INVALID;
	if (m && !config_eq(model_config(m), cfg))
		return ERR_INVALID;
	struct wsrc src = {.owner = owner, .m = m};
	return build(p, cfg, &src, out);
}

int smodel_new_shares(struct mpc *p, const struct model_config *cfg,
		      const ring64_t *const tensors[MODEL_T_COUNT], struct smodel **out)
{
	if (!out)
		return ERR_INVALID;
	*out = NULL;
	if (!p || !tensors || !cfg)
		return ERR_INVALID;
	for (int id = 0; id < MODEL_T_COUNT; id++)
		if (!tensors[id] && !(id == MODEL_T_WCLS && cfg->shared_classifier))
			return ERR_INVALID;
	struct wsrc src = {.tensors = tensors};
	return build(p, cfg, &src, out);
}

void smodel_free(struct smodel *sm)
{
	if (!sm)
		return;
	size_t d = (size_t)sm->c.dim;
	if (sm->layer)
		for (int l = 0; l < sm->c.n_layers; l++) {
			struct slayer *ly = &sm->layer[l];
			sm_free(ly->rms_att, d);
			sm_free(ly->rms_ffn, d);
			smat_free(&ly->qkv);
			smat_free(&ly->wo);
			smat_free(&ly->w13);
			smat_free(&ly->w2);
		}
	free(sm->layer);
	sm_free(sm->rms_final, d);
	smat_free(&sm->emb);
	smat_free(&sm->cls);
	sodium_memzero(sm, sizeof *sm);
	free(sm);
}

const struct model_config *smodel_config(const struct smodel *sm) { return &sm->c; }
struct mpc *smodel_mpc(const struct smodel *sm) { return sm->p; }
