/* sampler: choosing the next token from the logits: greedy argmax, or temperature
 * sampling restricted by top-k and/or top-p, driven by a seeded xorshift generator so
 * every run is reproducible from its seed.
 *
 * The randomness enters as one "coin" in [0,1) per sampled token, and
 * sampler_sample_coin() is a pure function of (logits, parameters, coin): the secure
 * sampler, which tosses its coin jointly, can check its choice against this one for the
 * same coin. With top_k off the rules and the generator are those of llama2.c's run.c
 * (same seed, same tokens, except on exact probability ties, which run.c leaves to
 * qsort and this module breaks by lower id). */
#ifndef MIMIR_SAMPLER_H
#define MIMIR_SAMPLER_H

#include <stdint.h>

struct sampler_params {
	float temperature; /* 0: greedy (argmax); otherwise logits / temperature, softmax */
	float top_p;       /* nucleus mass; <= 0 or >= 1 disables */
	int top_k;         /* keep the k most likely; 0 or >= vocab disables */
	uint64_t seed;     /* 0 is replaced by a fixed non-zero constant (xorshift needs one) */
};

/* xorshift64* as in run.c: state ^= state>>12, <<25, >>27; output (state * M) >> 32. */
struct sampler_rng {
	uint64_t state;
};
void sampler_rng_seed(struct sampler_rng *r, uint64_t seed);
uint32_t sampler_rng_u32(struct sampler_rng *r);
float sampler_rng_f32(struct sampler_rng *r); /* 24 random bits in [0,1) */

/* Index of the largest value, the lowest index on ties; NaNs never win. */
int sampler_argmax(const float *logits, int n);

struct sampler; /* opaque: parameters, generator, scratch of vocab_size entries */

/* ERR_RANGE for a negative or non-finite temperature, a non-finite top_p, a negative
 * top_k or vocab_size out of 1..(1 << 20). */
int sampler_new(int vocab_size, const struct sampler_params *p, struct sampler **out);
void sampler_free(struct sampler *s); /* accepts NULL */

/* The next token for logits[0..vocab_size). Greedy draws no coin; otherwise one coin
 * from the generator per call. */
int sampler_sample(struct sampler *s, const float *logits);
/* Same with the coin given (in [0,1)); greedy ignores it. */
int sampler_sample_coin(struct sampler *s, const float *logits, float coin);

#endif
