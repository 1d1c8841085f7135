/* sampler: greedy, temperature, top-k and top-p selection over one step's logits, and
 * the seeded generator behind them. Candidates are ordered by probability with the lower
 * id first on ties, so the choice never depends on the C library's qsort. */
#include "model/sampler.h"

#include <math.h>
#include <stdbool.h>
#include <stdlib.h>

#include "err/err.h"
#include "model/model.h"

#define SAMPLER_SEED_ZERO 0x9E3779B97F4A7C15ull

struct cand {
	float p;
	int id;
};

struct sampler {
	struct sampler_params prm;
	int n;
	struct sampler_rng rng;
	float *probs;
	struct cand *cand;
};

void sampler_rng_seed(struct sampler_rng *r, uint64_t seed)
{
	r->state = seed ? seed : SAMPLER_SEED_ZERO;
}

uint32_t sampler_rng_u32(struct sampler_rng *r)
{
	r->state ^= r->state >> 12;
	r->state ^= r->state << 25;
	r->state ^= r->state >> 27;
	return (uint32_t)((r->state * 0x2545F4914F6CDD1Dull) >> 32);
}

float sampler_rng_f32(struct sampler_rng *r)
{
	return (float)(sampler_rng_u32(r) >> 8) / 16777216.0f;
}

int sampler_argmax(const float *logits, int n)
{
	int best = 0;
	for (int i = 1; i < n; i++)
		if (logits[i] > logits[best] || (isnan(logits[best]) && !isnan(logits[i])))
			best = i;
	return best;
}

int sampler_new(int vocab_size, const struct sampler_params *p, struct sampler **out)
{
	if (!p || !out)
		return ERR_INVALID;
	*out = NULL;
	if (vocab_size < 1 || vocab_size > MODEL_MAX_VOCAB || !isfinite(p->temperature) ||
	    p->temperature < 0.0f || !isfinite(p->top_p) || p->top_k < 0)
		return ERR_RANGE;
	struct sampler *s = calloc(1, sizeof *s);
	if (!s)
		return ERR_NOMEM;
	s->prm = *p;
	s->n = vocab_size;
	sampler_rng_seed(&s->rng, p->seed);
	s->probs = malloc((size_t)vocab_size * sizeof *s->probs);
	s->cand = malloc((size_t)vocab_size * sizeof *s->cand);
	if (!s->probs || !s->cand) {
		sampler_free(s);
		return ERR_NOMEM;
	}
	*out = s;
	return 0;
}

void sampler_free(struct sampler *s)
{
	if (!s)
		return;
	free(s->probs);
	free(s->cand);
	free(s);
}

static int cand_cmp(const void *pa, const void *pb)
{
	const struct cand *a = pa, *b = pb;
	if (a->p != b->p)
		return a->p > b->p ? -1 : 1;
	return (a->id > b->id) - (a->id < b->id);
}

/* Picks from cand[0..n) (descending) with r in [0, their mass); the last on rounding. */
static int pick(const struct cand *c, int n, float r)
{
	float cdf = 0.0f;
	for (int i = 0; i < n; i++) {
		cdf += c[i].p;
		if (r < cdf)
			return c[i].id;
	}
	return c[n - 1].id;
}

int sampler_sample_coin(struct sampler *s, const float *logits, float coin)
{
	const struct sampler_params *p = &s->prm;
	int n = s->n;
	if (p->temperature == 0.0f)
		return sampler_argmax(logits, n);
	float *pr = s->probs;
	for (int i = 0; i < n; i++)
		pr[i] = logits[i] / p->temperature;
	model_softmax(pr, n);
	bool top_p = p->top_p > 0.0f && p->top_p < 1.0f;
	bool top_k = p->top_k > 0 && p->top_k < n;
	if (!top_p && !top_k) {
		/* Plain sampling over the whole vocabulary in id order. */
		float cdf = 0.0f;
		for (int i = 0; i < n; i++) {
			cdf += pr[i];
			if (coin < cdf)
				return i;
		}
		return n - 1;
	}
	int m = 0;
	if (top_k) {
		for (int i = 0; i < n; i++)
			s->cand[m++] = (struct cand){pr[i], i};
	} else {
		/* run.c's shortcut: a token below (1 - top_p) / (n - 1) can never be inside
		 * the nucleus, so it is dropped before sorting. */
		float cutoff = (1.0f - p->top_p) / (float)(n - 1);
		for (int i = 0; i < n; i++)
			if (pr[i] >= cutoff)
				s->cand[m++] = (struct cand){pr[i], i};
		/* The bound only holds from the second candidate on (and not at all for
		 * n == 1): the most likely token is always in the nucleus. */
		if (m == 0) {
			int a = sampler_argmax(pr, n);
			s->cand[m++] = (struct cand){pr[a], a};
		}
	}
	qsort(s->cand, (size_t)m, sizeof *s->cand, cand_cmp);
	float mass = 0.0f;
	if (top_k) {
		m = p->top_k;
		for (int i = 0; i < m; i++)
			mass += s->cand[i].p;
	}
	int last = m - 1;
	if (top_p) {
		/* The nucleus is taken within the kept candidates' renormalised mass. */
		float limit = top_k ? p->top_p * mass : p->top_p, cum = 0.0f;
		for (int i = 0; i < m; i++) {
			cum += s->cand[i].p;
			if (cum > limit) {
				last = i;
				break;
			}
		}
		mass = cum;
	}
	return pick(s->cand, last + 1, coin * mass);
}

int sampler_sample(struct sampler *s, const float *logits)
{
	if (s->prm.temperature == 0.0f)
		return sampler_argmax(logits, s->n);
	return sampler_sample_coin(s, logits, sampler_rng_f32(&s->rng));
}
