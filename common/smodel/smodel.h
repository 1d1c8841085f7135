/* smodel: the secure forward pass of a Llama-2 model on the MPC engine. The weights,
 * the prompt, every activation, the KV cache and the chosen tokens are authenticated
 * secret shares; a party learns nothing but the tokens it is asked to reveal.
 *
 * One struct smodel per party holds the shared weights: every weight matrix as a
 * fixed-mask matrix (mpc_fmat: W - B is opened once, each use opens only the masked
 * activations), the RMSNorm weights as plain shares. It is built either from one
 * owner's plaintext checkpoint (smodel_new_owner, the in-process case) or from every
 * party's additive fixed-point shares (smodel_new_shares, what a share file holds).
 * One struct smodel_gen per generation holds the KV cache (rows appended as positions
 * are run, kept shared across steps), the pending input and the sampling rule.
 *
 * Every party runs the same calls in the same order with the same public arguments
 * (configuration, slots, n_ctx, sampling parameters, coins); only an input's owner
 * passes the secret. docs/MODEL.md, "Secure forward pass", gives the protocol of each
 * stage, its rounds and its error bound.
 *
 * Errors: 0 or a negative ERR_* (err/err.h); a failure inside the engine aborts it
 * (mpc.h), after which every call returns ERR_ABORTED. Threads: one smodel and its
 * generations per party and thread, like the engine. */
#ifndef MIMIR_SMODEL_H
#define MIMIR_SMODEL_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "model/model.h"
#include "mpc/mpc.h"
#include "ring/ring.h"

/* Attention scores of padding positions are pushed down by this much (in real units)
 * before the softmax, so they weigh e^-SMODEL_MASK_SHIFT (0 in fixed point) whatever
 * their value; it must exceed the spread of a row's scores (stories260K: below 270). */
#define SMODEL_MASK_SHIFT 16384.0

struct smodel;

/* Weights from one owner: at party `owner`, m is the plaintext model (every weight is
 * encoded to fixed point with the engine's f and refused with ERR_RANGE if it would
 * saturate); elsewhere m is NULL. cfg is the public configuration every party passes
 * (at the owner it must equal m's). The owner sends each weight once, masked; the
 * weights are then opened only as W - B (fmat). The smodel borrows p. */
int smodel_new_owner(struct mpc *p, const struct model_config *cfg, unsigned owner,
		     const struct model *m, struct smodel **out);

/* Weights as additive shares: every party passes its own fixed-point shares (f equal to
 * the engine's) of every tensor in checkpoint layout ([layers][rows][cols], as
 * mshare_shares_tensor returns them); tensors[MODEL_T_WCLS] is ignored when the
 * classifier is shared. Each party inputs its shares in turn and the sums are the
 * weights (N input rounds per tensor). */
int smodel_new_shares(struct mpc *p, const struct model_config *cfg,
		      const ring64_t *const tensors[MODEL_T_COUNT], struct smodel **out);

void smodel_free(struct smodel *sm); /* wipes; accepts NULL */
const struct model_config *smodel_config(const struct smodel *sm);
struct mpc *smodel_mpc(const struct smodel *sm);

/* Sampling rule of a generation. temperature 0: greedy (secure argmax, the first
 * maximum on ties, as sampler_argmax). Otherwise the logits are divided by the
 * temperature and one public coin per token picks along the cumulative mass:
 *   - top_k in 1..vocab-1: the k largest logits (ties: lower id first) in descending
 *     order, optionally cut further by top_p within them (sampler.h's rules);
 *   - no top_k and no top_p: the whole vocabulary in id order;
 *   - top_p without top_k needs a secure sort of the vocabulary: ERR_UNSUPPORTED.
 * The choice equals sampler_sample_coin() for the same coin up to the fixed-point error
 * of the probabilities (a coin within that error of a boundary may pick a neighbour). */
struct smodel_sampling {
	float temperature; /* 0 or 1e-3..1e6 */
	float top_p;       /* <= 0 or >= 1: off */
	int top_k;         /* 0 or >= vocab: off */
};

struct smodel_gen_opts {
	int n_ctx; /* positions this generation may use: slots + new tokens, <= seq_len */
	struct smodel_sampling sampling;
	/* Greedy needs only the argmax, which the final RMSNorm's positive scale does not
	 * change, so by default greedy skips that reciprocal square root (13 rounds) and
	 * smodel_gen_logits holds the logits times rms(x). true computes the logits
	 * themselves (tests, diagnostics). Sampling always does. */
	bool full_logits;
};

struct smodel_gen;
int smodel_gen_new(struct smodel *sm, const struct smodel_gen_opts *o, struct smodel_gen **out);
void smodel_gen_free(struct smodel_gen *g); /* wipes the cache; accepts NULL */

/* The prompt, from party owner (the client's proxy): ids[0..n) at the owner (BOS
 * first, as tok_encode writes it); elsewhere ids is NULL and n is ignored. slots and
 * pad are public. Without pad, n == slots. With pad, the owner's n <= slots (which no
 * other party learns) and the prompt is left-padded to slots with positions that
 * attention masks (the mask bits are input with the prompt), so rounds and bytes
 * depend on slots only (length hiding: slots is the bucket, e.g. 16, 32, 64). RoPE
 * scores depend only on position differences, so the padded prompt gives the same
 * logits as the bare one up to fixed-point rounding. One input round; the forward pass
 * runs in the next smodel_gen_step. Once per generation, before any step. */
int smodel_gen_prompt(struct smodel_gen *g, unsigned owner, const int *ids, size_t n,
		      size_t slots, bool pad);

/* The same with the prompt already shared, e.g. received from an outside client with
 * common/clientio: onehot (slots x vocab) holds one one-hot row per position (integer
 * 0/1 shares), valid (slots integer bits, NULL when not padded) which positions are
 * real. No round. The rows are not checked to be one-hot (that would cost a comparison
 * per entry): a client that sends anything else only spoils its own generation. No
 * release masks are set up (smodel_gen_release answers ERR_RANGE): the output goes
 * through smodel_gen_token_share and the client's output protocol. */
int smodel_gen_prompt_shares(struct smodel_gen *g, const mpc_share *onehot,
			     const mpc_share *valid, size_t slots);

/* Runs the forward pass over the pending input (the prompt's slots at the first call,
 * then the last chosen token, which stays shared) and chooses the next token with the
 * sampling rule; coin in [0,1) is public (ignored when greedy). ERR_RANGE when the
 * context is full, ERR_INVALID before the prompt. */
int smodel_gen_step(struct smodel_gen *g, float coin);

/* Releases the last chosen token to the prompt's owner (the client's proxy) only: the
 * token plus a random mask that the owner input with the prompt is opened with
 * mpc_reveal (the opening, then a MAC check of everything opened so far, before any
 * value is returned), and the owner removes its mask. *token is the id at the owner
 * and -1 elsewhere: the other parties see a uniformly random value. Each release uses
 * one mask; there are n_ctx - slots + 1 (as many as tokens can be chosen), ERR_RANGE
 * past them. 5 rounds. */
int smodel_gen_release(struct smodel_gen *g, int *token);

/* Opens the last chosen token to every party (mpc_reveal, after the MAC check): for
 * tests and for deployments where the parties may see the output. */
int smodel_gen_reveal(struct smodel_gen *g, int *token);

/* This party's share of the last chosen token (an integer share), for an output
 * protocol towards a client that the parties must not learn; run mpc_check before
 * handing it out. */
int smodel_gen_token_share(const struct smodel_gen *g, mpc_share *out);

/* Positions used so far (the next step's first position). */
int smodel_gen_pos(const struct smodel_gen *g);

/* The shares of the last step's logits (vocab values, f fractional bits; see
 * full_logits), owned by g, valid until the next step; for tests and diagnostics. */
const mpc_share *smodel_gen_logits(const struct smodel_gen *g);

/* Observer of the intermediate vectors, with the stages of model_state_set_trace that
 * the secure pass materialises ("embedding", per layer "q", "k" (after RoPE,
 * unscaled), "v", "attn", "attn_res", "ffn_gate", "ffn_res", then "logits"; the
 * normalised vectors never exist on their own, the 1/rms factor is applied after the
 * weight product): rows x n shares with frac fractional bits (f, 2f or 3f: some stages
 * are kept wider until the next truncation). The callback runs in every party at the
 * same point, so it may open what it is given (tests). A callback that returns
 * non-zero aborts the step with that code. */
typedef int (*smodel_trace_fn)(void *ctx, struct mpc *p, int layer, const char *stage,
			       const mpc_share *v, size_t rows, size_t n, unsigned frac);
void smodel_gen_set_trace(struct smodel_gen *g, smodel_trace_fn fn, void *ctx);

/* Jointly tossed 64-bit seed for the sampling coins: every party inputs a random
 * value (the inputs are committed, masked, one after the other) and the sum is revealed
 * after a MAC check, so no coalition of fewer than all parties can bias it. The coins
 * are then reproducible from the seed: sampler_rng_seed() and one sampler_rng_f32() per
 * sampled token, as mimir-ref draws them. N + 5 rounds. */
int smodel_toss_seed(struct mpc *p, uint64_t *seed);

#endif
