/* smodel internals shared by the files of common/smodel (not a public header): the
 * shared weights, the generation state, the weight matrices as column blocks of
 * fixed-mask matrices, and the small batch helpers every stage uses. */
#ifndef MIMIR_SMODEL_INT_H
#define MIMIR_SMODEL_INT_H

#include "smodel/smodel.h"

/* The engine refuses a fixed-mask matrix of more than 2^20 entries or a side above
 * 65536 (its dealer batch limits), so a larger matrix is kept as column blocks. */
#define SMODEL_FMAT_MAX_ENTRIES (1u << 20)
#define SMODEL_FMAT_MAX_SIDE 65536u
/* Rows of one product per use: the engine takes m (rows + cols) <= 3 * 2^20. */
#define SMODEL_FMAT_MAX_USE (3u << 20)

/* A weight matrix for out (m x cols) = x (m x rows) W, split into column blocks. */
struct smat {
	uint32_t rows, cols, bcols; /* bcols: columns per block, the last may have fewer */
	size_t nblk;
	struct mpc_fmat **fm;
};

struct slayer {
	mpc_share *rms_att, *rms_ffn; /* dim each */
	struct smat qkv;              /* dim x (dim + 2 kv_dim): wq, wk, wv side by side */
	struct smat wo;               /* dim x dim */
	struct smat w13;              /* dim x 2 hidden: w1 (gate), w3 (up) side by side */
	struct smat w2;               /* hidden x dim */
};

struct smodel {
	struct mpc *p;
	struct model_config c;
	unsigned f;
	struct slayer *layer;
	mpc_share *rms_final; /* dim */
	struct smat emb;      /* vocab x dim: one-hot rows -> embeddings */
	struct smat cls;      /* dim x vocab: the classifier */
};

struct smodel_gen {
	struct smodel *sm;
	struct smodel_sampling s;
	int n_ctx;
	int pos;      /* positions run so far */
	bool padded;  /* the prompt was left-padded: attention masks the pad positions */
	bool started; /* the prompt was given */
	mpc_share *kc, *vc; /* [layers][n_ctx][kv_dim]: keys after RoPE, values (f bits) */
	mpc_share *valid;   /* [n_ctx] 1 for a real position, 0 for a pad (integer) */
	mpc_share *pending; /* [npending][vocab] one-hot rows to run next */
	size_t npending;
	mpc_share *logits; /* [vocab] of the last step */
	mpc_share token;   /* the last chosen token (integer) */
	bool have_token;
	bool full_logits;
	/* release masks: shares of random values input by the prompt's owner, who alone
	 * keeps them in clear (mask_clear, NULL elsewhere) */
	mpc_share *masks;
	ring64_t *mask_clear;
	size_t nmasks, released;
	uint64_t step_triples; /* triples the last one-row step consumed */
	smodel_trace_fn trace;
	void *trace_ctx;
};

/* smat: rows x cols weights w (row-major, x W orientation) into column blocks. */
int smat_new(struct mpc *p, const mpc_share *w, uint32_t rows, uint32_t cols, struct smat *out);
void smat_free(struct smat *s);
/* out (m x cols) = x (m x rows) W, in as few rounds as the engine's limits allow (one
 * for every model this project runs). */
int smat_mul(struct mpc *p, const struct smat *s, mpc_share *out, const mpc_share *x, size_t m);

/* Queues out = x W on batch b (written when b runs); with several column blocks the
 * products land in tmp (smat_tmp_len shares) and smat_done moves them into out. */
size_t smat_tmp_len(const struct smat *s, size_t m);
int smat_queue(struct mpc_batch *b, const struct smat *s, mpc_share *out, mpc_share *tmp,
	       const mpc_share *x, size_t m);
void smat_done(const struct smat *s, mpc_share *out, const mpc_share *tmp, size_t m);

/* Row-wise maximum of rows x n values (|x| < 2^61) by a tournament of groups of up to
 * five (smodel_max.c); onehot (rows x n, may be NULL) gets the integer one-hot of the
 * first maximum, max (rows, may be NULL) the maxima. */
int smax(struct mpc *p, mpc_share *max, mpc_share *onehot, const mpc_share *x, size_t rows,
	 size_t n);

/* Allocation that counts in shares and is wiped on free. */
mpc_share *sm_alloc(size_t n);
void sm_free(mpc_share *a, size_t n);

/* Encodes a public real at f bits (the constants are in range by construction). */
ring64_t sm_fx(double x, unsigned f);

/* The choice of the next token from g->logits (smodel_choose.c): writes the one-hot
 * into g->pending (1 row) and the id share into g->token. */
int smodel_choose(struct smodel_gen *g, float coin);

#endif
