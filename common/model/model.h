/* model: the llama2.c checkpoint (configuration, weights) and the float reference forward
 * pass that every other implementation of the model is measured against.
 *
 * The loader validates a legacy llama2.c checkpoint completely (header ranges, exact byte
 * size, every value finite) before it allocates anything big, then owns the weights in
 * one array it wipes on free: the weights are the model owner's secret even where this
 * process may see them. The configuration and tensor table are what the secure forward
 * pass and the share splitter reuse; model_forward() with its KV cache is the float
 * reference they compare their logits against, step by step (token, pos).
 *
 * Errors: functions return 0 or a negative ERR_* (err/err.h) and, when err is not NULL,
 * write a one-line message naming the file and the fault into err[0..errcap). */
#ifndef MIMIR_MODEL_H
#define MIMIR_MODEL_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

/* Header bounds. Generous for Llama-family models, small enough that no product of them
 * overflows 64 bits and a lying header is caught by the file-size check. */
#define MODEL_MAX_DIM 8192
#define MODEL_MAX_HIDDEN 65536
#define MODEL_MAX_LAYERS 256
#define MODEL_MAX_VOCAB (1 << 20)
#define MODEL_MAX_SEQ (1 << 16)
#define MODEL_HEADER_BYTES 28 /* seven little-endian int32 */

/* Constants of the llama2.c architecture (run.c), shared with the secure pass. */
#define MODEL_RMS_EPS 1e-5f
#define MODEL_ROPE_THETA 10000.0f

struct model_config {
	int dim;        /* residual width */
	int hidden_dim; /* SwiGLU width */
	int n_layers;
	int n_heads;    /* query heads */
	int n_kv_heads; /* key/value heads; n_heads / n_kv_heads queries share one */
	int vocab_size;
	int seq_len;            /* trained context length, the maximum position + 1 */
	bool shared_classifier; /* header vocab_size > 0: logits use the token embedding */
	/* Derived. */
	int head_size; /* dim / n_heads, even */
	int kv_dim;    /* n_kv_heads * head_size */
};

/* The tensors in file order (the RoPE tables, unused, are not listed). All are row
 * major float32; a matrix [rows][cols] maps a cols-vector to a rows-vector:
 * out[r] = sum_c w[r][c] * in[c]. Per-layer tensors are stacked [n_layers][...]. */
enum model_tensor_id {
	MODEL_T_TOKEN_EMBEDDING, /* [vocab][dim] */
	MODEL_T_RMS_ATT,         /* [layers][dim] */
	MODEL_T_WQ,              /* [layers][dim][dim] */
	MODEL_T_WK,              /* [layers][kv_dim][dim] */
	MODEL_T_WV,              /* [layers][kv_dim][dim] */
	MODEL_T_WO,              /* [layers][dim][dim] */
	MODEL_T_RMS_FFN,         /* [layers][dim] */
	MODEL_T_W1,              /* [layers][hidden][dim] (gate, through SiLU) */
	MODEL_T_W2,              /* [layers][dim][hidden] (down) */
	MODEL_T_W3,              /* [layers][hidden][dim] (up) */
	MODEL_T_RMS_FINAL,       /* [dim] */
	MODEL_T_WCLS,            /* [vocab][dim]; the embedding itself when shared */
	MODEL_T_COUNT
};

struct model_tensor {
	const char *name;  /* llama2.c's name, e.g. "wq", "rms_att_weight" */
	const float *data; /* owned by the model */
	size_t count;      /* floats in the whole tensor (all layers) */
	int layers;        /* 1 for the non-layered tensors */
	int rows, cols;    /* of one layer's matrix; rows == 1 for vectors */
	bool alias;        /* WCLS of a shared classifier: same data as the embedding */
};

/* Direct views for code that walks the weights itself (layer l of wq is wq + l*dim*dim). */
struct model_weights {
	const float *token_embedding, *rms_att, *wq, *wk, *wv, *wo, *rms_ffn, *w1, *w2, *w3,
		*rms_final, *wcls;
};

struct model; /* opaque: config + owned weights */

/* Parses and validates the 28-byte header (ranges, divisibility, even head size). name
 * prefixes messages. Exposed so share files can carry and check the same header. */
int model_config_parse(const void *header, size_t len, const char *name, struct model_config *out,
		       char *err, size_t errcap);
/* Floats in the weights the forward pass uses (no RoPE tables; wcls counted once when
 * shared). */
uint64_t model_param_count(const struct model_config *c);
/* Exact file sizes the header implies, without and with the RoPE tables. */
void model_file_sizes(const struct model_config *c, uint64_t *without_rope, uint64_t *with_rope);

/* Loads a checkpoint file (read with fread into owned memory) or a memory image (copied;
 * buf may be freed afterwards). On success *out is a new model the caller frees. */
int model_load(const char *path, struct model **out, char *err, size_t errcap);
int model_load_mem(const void *buf, size_t len, const char *name, struct model **out, char *err,
		   size_t errcap);
void model_free(struct model *m); /* wipes the weights; accepts NULL */

const struct model_config *model_config(const struct model *m);
const struct model_weights *model_weights(const struct model *m);
/* Fills *out for tensor id; ERR_RANGE for an unknown id. */
int model_tensor(const struct model *m, enum model_tensor_id id, struct model_tensor *out);

/* RoPE as run.c computes it (not from the file's tables): for pair j of a head
 * (elements 2j, 2j+1), angle = pos * theta^(-2j/head_size). Fills head_size/2 values
 * into each of cos_out and sin_out. The rotation is public, so the secure pass uses
 * these same constants. */
void model_rope(const struct model_config *c, int pos, float *cos_out, float *sin_out);

/* The building blocks, exact as the forward pass uses them, for testing approximations.
 * out may alias x. */
void model_rmsnorm(float *out, const float *x, const float *weight, int n);
void model_softmax(float *x, int n);
float model_silu(float x);

/* Reference forward pass state: KV cache for n_ctx positions plus scratch. */
struct model_state;

/* n_ctx: positions the caller will use (1..seq_len); 0 means seq_len. The cache is
 * sized to n_ctx so a short run does not pay for the whole context. The state keeps a
 * pointer to m, which must outlive it. */
int model_state_new(const struct model *m, int n_ctx, struct model_state **out);
void model_state_free(struct model_state *s); /* wipes activations; accepts NULL */

/* Runs token at position pos and returns the vocab_size logits for the next position in
 * *logits (owned by the state, valid until the next call). Positions 0..pos-1 must have
 * been run before (ERR_INVALID otherwise); running an earlier pos again rewinds the
 * sequence to it. ERR_RANGE for a token or position out of range. */
int model_forward(struct model_state *s, int token, int pos, const float **logits);

/* Optional observer of the intermediate vectors, for comparing an implementation
 * stage by stage. layer is -1 outside the layers. Stages, in order: "embedding";
 * per layer "attn_norm", "q", "k", "v" (q and k after RoPE), "attn" (heads'
 * outputs concatenated, before wo), "attn_res" (residual after wo), "ffn_norm", "ffn_gate"
 * (silu(w1 x) * w3 x), "ffn_res"; then "final_norm", "logits". */
typedef void (*model_trace_fn)(void *ctx, int layer, const char *stage, const float *v, int n);
void model_state_set_trace(struct model_state *s, model_trace_fn fn, void *ctx);

#endif
