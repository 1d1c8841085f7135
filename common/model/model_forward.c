/* model_forward: the float reference forward pass of a Llama-2 model, as llama2.c's
 * run.c computes it (RMSNorm, RoPE computed from the position, grouped-query attention
 * over a KV cache, SwiGLU, final norm, classifier). It is the yardstick for the secure
 * pass, so it stays plain: the only liberty taken is summing dot products in four
 * interleaved partial sums, which changes the last bits, not the tokens. */
#include "model/model.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>

#include <sodium.h>

#include "err/err.h"
#include "model/model_internal.h"

struct model_state {
	const struct model *m;
	int n_ctx;
	int filled; /* positions 0..filled-1 hold valid keys and values */
	float *x, *xb, *xb2, *hb, *hb2, *q, *att, *logits, *rope_cos, *rope_sin;
	float *kcache, *vcache; /* [n_layers][n_ctx][kv_dim] */
	float *buf;
	size_t nbuf;
	model_trace_fn trace;
	void *trace_ctx;
};

void model_rmsnorm(float *out, const float *x, const float *weight, int n)
{
	float ss = 0.0f;
	for (int i = 0; i < n; i++)
		ss += x[i] * x[i];
	ss /= (float)n;
	ss += MODEL_RMS_EPS;
	ss = 1.0f / sqrtf(ss);
	for (int i = 0; i < n; i++)
		out[i] = weight[i] * (ss * x[i]);
}

void model_softmax(float *x, int n)
{
	if (n <= 0)
		return;
	float max = x[0];
	for (int i = 1; i < n; i++)
		if (x[i] > max)
			max = x[i];
	float sum = 0.0f;
	for (int i = 0; i < n; i++) {
		x[i] = expf(x[i] - max);
		sum += x[i];
	}
	for (int i = 0; i < n; i++)
		x[i] /= sum;
}

float model_silu(float x) { return x * (1.0f / (1.0f + expf(-x))); }

void model_rope(const struct model_config *c, int pos, float *cos_out, float *sin_out)
{
	for (int j = 0; j < c->head_size / 2; j++) {
		float freq = 1.0f / powf(MODEL_ROPE_THETA, (float)(2 * j) / (float)c->head_size);
		float val = (float)pos * freq;
		cos_out[j] = cosf(val);
		sin_out[j] = sinf(val);
	}
}

static float dot(const float *a, const float *b, int n)
{
	float s0 = 0.0f, s1 = 0.0f, s2 = 0.0f, s3 = 0.0f;
	int j = 0;
	for (; j + 4 <= n; j += 4) {
		s0 += a[j] * b[j];
		s1 += a[j + 1] * b[j + 1];
		s2 += a[j + 2] * b[j + 2];
		s3 += a[j + 3] * b[j + 3];
	}
	for (; j < n; j++)
		s0 += a[j] * b[j];
	return (s0 + s1) + (s2 + s3);
}

/* out[d] = W[d][n] x[n] */
static void matmul(float *out, const float *x, const float *w, int n, int d)
{
	for (int i = 0; i < d; i++)
		out[i] = dot(w + (size_t)i * (size_t)n, x, n);
}

int model_state_new(const struct model *m, int n_ctx, struct model_state **out)
{
	if (!m || !out)
		return ERR_INVALID;
	*out = NULL;
	const struct model_config *c = &m->cfg;
	if (n_ctx == 0)
		n_ctx = c->seq_len;
	if (n_ctx < 0 || n_ctx > c->seq_len)
		return ERR_RANGE;
	/* Every factor is bounded by the header limits, so this cannot overflow 64 bits. */
	uint64_t kv = (uint64_t)c->n_layers * (uint64_t)n_ctx * (uint64_t)c->kv_dim;
	uint64_t n = 4 * (uint64_t)c->dim + 2 * (uint64_t)c->hidden_dim +
		     (uint64_t)c->n_heads * (uint64_t)n_ctx + (uint64_t)c->vocab_size +
		     (uint64_t)c->head_size + 2 * kv;
	if (n > SIZE_MAX / sizeof(float))
		return ERR_NOMEM;
	struct model_state *s = calloc(1, sizeof *s);
	if (!s)
		return ERR_NOMEM;
	s->nbuf = (size_t)n;
	s->buf = calloc(s->nbuf, sizeof(float));
	if (!s->buf) {
		free(s);
		return ERR_NOMEM;
	}
	s->m = m;
	s->n_ctx = n_ctx;
	float *p = s->buf;
#define TAKE(ptr, cnt) (ptr = p, p += (cnt))
	TAKE(s->x, c->dim);
	TAKE(s->xb, c->dim);
	TAKE(s->xb2, c->dim);
	TAKE(s->q, c->dim);
	TAKE(s->hb, c->hidden_dim);
	TAKE(s->hb2, c->hidden_dim);
	TAKE(s->att, (size_t)c->n_heads * (size_t)n_ctx);
	TAKE(s->logits, c->vocab_size);
	TAKE(s->rope_cos, c->head_size / 2);
	TAKE(s->rope_sin, c->head_size / 2);
	TAKE(s->kcache, kv);
	TAKE(s->vcache, kv);
#undef TAKE
	*out = s;
	return 0;
}

void model_state_free(struct model_state *s)
{
	if (!s)
		return;
	/* Activations and the KV cache are functions of the prompt. */
	sodium_memzero(s->buf, s->nbuf * sizeof(float));
	free(s->buf);
	free(s);
}

void model_state_set_trace(struct model_state *s, model_trace_fn fn, void *ctx)
{
	s->trace = fn;
	s->trace_ctx = ctx;
}

#define TRACE(layer, stage, v, n)                                                                  \
	do {                                                                                       \
		if (s->trace)                                                                      \
			s->trace(s->trace_ctx, (layer), (stage), (v), (n));                        \
	} while (0)

/* Rotates each (2j, 2j+1) pair of every head of v (width n) by the position's angles. */
static void rope_apply(float *v, int n, int head_size, const float *cs, const float *sn)
{
	for (int i = 0; i < n; i += 2) {
		int j = (i % head_size) / 2;
		float v0 = v[i], v1 = v[i + 1];
		v[i] = v0 * cs[j] - v1 * sn[j];
		v[i + 1] = v0 * sn[j] + v1 * cs[j];
	}
}

static void attention(struct model_state *s, int l, int pos)
{
	const struct model_config *c = &s->m->cfg;
	int hs = c->head_size, kv_dim = c->kv_dim, kv_mul = c->n_heads / c->n_kv_heads;
	size_t loff = (size_t)l * (size_t)s->n_ctx * (size_t)kv_dim;
	float scale = sqrtf((float)hs);
	for (int h = 0; h < c->n_heads; h++) {
		const float *q = s->q + (size_t)h * hs;
		float *att = s->att + (size_t)h * (size_t)s->n_ctx;
		size_t hoff = (size_t)(h / kv_mul) * hs;
		for (int t = 0; t <= pos; t++) {
			const float *k = s->kcache + loff + (size_t)t * kv_dim + hoff;
			att[t] = dot(q, k, hs) / scale;
		}
		model_softmax(att, pos + 1);
		float *xb = s->xb + (size_t)h * hs;
		memset(xb, 0, (size_t)hs * sizeof(float));
		for (int t = 0; t <= pos; t++) {
			const float *v = s->vcache + loff + (size_t)t * kv_dim + hoff;
			float a = att[t];
			for (int i = 0; i < hs; i++)
				xb[i] += a * v[i];
		}
	}
}

int model_forward(struct model_state *s, int token, int pos, const float **logits)
{
	if (!s || !logits)
		return ERR_INVALID;
	const struct model_config *c = &s->m->cfg;
	const struct model_weights *w = &s->m->views;
	if (token < 0 || token >= c->vocab_size || pos < 0 || pos >= s->n_ctx)
		return ERR_RANGE;
	if (pos > s->filled)
		return ERR_INVALID;
	int dim = c->dim, hid = c->hidden_dim, kv_dim = c->kv_dim;
	size_t dd = (size_t)dim * (size_t)dim, kd = (size_t)kv_dim * (size_t)dim,
	       hd = (size_t)hid * (size_t)dim;
	float *x = s->x;

	memcpy(x, w->token_embedding + (size_t)token * dim, (size_t)dim * sizeof(float));
	TRACE(-1, "embedding", x, dim);
	model_rope(c, pos, s->rope_cos, s->rope_sin);
	for (int l = 0; l < c->n_layers; l++) {
		size_t loff = (size_t)l * (size_t)s->n_ctx * (size_t)kv_dim;
		float *k = s->kcache + loff + (size_t)pos * kv_dim;
		float *v = s->vcache + loff + (size_t)pos * kv_dim;

		model_rmsnorm(s->xb, x, w->rms_att + (size_t)l * dim, dim);
		TRACE(l, "attn_norm", s->xb, dim);
		matmul(s->q, s->xb, w->wq + l * dd, dim, dim);
		matmul(k, s->xb, w->wk + l * kd, dim, kv_dim);
		matmul(v, s->xb, w->wv + l * kd, dim, kv_dim);
		rope_apply(s->q, dim, c->head_size, s->rope_cos, s->rope_sin);
		rope_apply(k, kv_dim, c->head_size, s->rope_cos, s->rope_sin);
		TRACE(l, "q", s->q, dim);
		TRACE(l, "k", k, kv_dim);
		TRACE(l, "v", v, kv_dim);

		attention(s, l, pos);
		TRACE(l, "attn", s->xb, dim);
		matmul(s->xb2, s->xb, w->wo + l * dd, dim, dim);
		for (int i = 0; i < dim; i++)
			x[i] += s->xb2[i];
		TRACE(l, "attn_res", x, dim);

		model_rmsnorm(s->xb, x, w->rms_ffn + (size_t)l * dim, dim);
		TRACE(l, "ffn_norm", s->xb, dim);
		matmul(s->hb, s->xb, w->w1 + l * hd, dim, hid);
		matmul(s->hb2, s->xb, w->w3 + l * hd, dim, hid);
		for (int i = 0; i < hid; i++)
			s->hb[i] = model_silu(s->hb[i]) * s->hb2[i];
		TRACE(l, "ffn_gate", s->hb, hid);
		matmul(s->xb, s->hb, w->w2 + l * hd, hid, dim);
		for (int i = 0; i < dim; i++)
			x[i] += s->xb[i];
		TRACE(l, "ffn_res", x, dim);
	}
	model_rmsnorm(x, x, w->rms_final, dim);
	TRACE(-1, "final_norm", x, dim);
	matmul(s->logits, x, w->wcls, dim, c->vocab_size);
	TRACE(-1, "logits", s->logits, c->vocab_size);
	s->filled = pos + 1;
	*logits = s->logits;
	return 0;
}
