/* mpc internals shared by the files of common/mpc (not a public header): the PRG that
 * expands dealer seeds, the item layouts of every preprocessing kind (which the dealer
 * and the parties must agree on byte for byte) and the party-side expansion. */
#ifndef MIMIR_MPC_IMPL_H
#define MIMIR_MPC_IMPL_H

#include "mpc/mpc.h"

/* ChaCha20 (IETF) keystream: key = the party's seed, nonce = the stream id, counter =
 * 64-byte blocks already used. Every batch starts on a block boundary. */
struct prg {
	uint8_t key[MPC_SEED_BYTES];
	uint8_t nonce[12];
	uint32_t block;
};

enum {
	PRG_STREAM_KEY = 0, /* the party's MAC key share alpha_i (8 bytes) */
	/* streams 1..7: MPC_PREP_RAND .. _CMP (the kind), 9: MPC_PREP_MTRIPLE (every
	 * shape in one sequence); 16 + owner: MPC_PREP_INPUT;
	 * 32 + m: MPC_PREP_TRUNC by m; 96 + b: MPC_PREP_LUT of b bits. A stream per
	 * parameter keeps each parameter's batches in their own sequence. */
	PRG_STREAM_INPUT0 = 16,
	PRG_STREAM_TRUNC0 = 32,
	PRG_STREAM_LUT0 = 96,
	PRG_STREAMS = PRG_STREAM_LUT0 + MPC_LUT_MAX_BITS + 1,
};

void prg_init(struct prg *g, const uint8_t seed[MPC_SEED_BYTES], uint32_t stream);
int prg_fill(struct prg *g, uint8_t *out, size_t len);
void prg_wipe(struct prg *g);
/* The stream a request draws from. */
uint32_t prep_stream(const struct mpc_prep_req *req);
/* alpha_i of a seed. */
ring64_t prep_alpha_share(const uint8_t seed[MPC_SEED_BYTES]);

/* A share of the triple sacrifice: value and MAC share in Z_2^192, so that values
 * checked modulo 2^128 carry s = 64 bits of MAC above them (SPDZ2k's check of
 * (k + s)-bit values with (k + 2s)-bit MACs). */
typedef struct {
	ring192_t v, m;
} mpc_wshare;

/* Shares per item (TRIPLE: a, b, c; TRUNC: r, r_63, r_mid; MMUL: a (rows), a B (cols);
 * LUT: r, then the 2^b one-hot entries),
 * PRG bytes per item and
 * payload body bytes per item for party 0 and for an input's owner. */
unsigned prep_shares_per_item(const struct mpc_prep_req *req);
size_t prep_prg_bytes(const struct mpc_prep_req *req);
size_t prep_payload_bytes(unsigned party, const struct mpc_prep_req *req);
bool prep_req_valid(const struct mpc_prep_req *req, unsigned nparties);

#define PREP_HDR_BYTES 24
#define PREP_MAX_DIM 65536
#define PREP_VERSION 3 /* 2: triples with 192-bit shares; 3: a stream per truncation
			  parameter, look-up masks */
#define PREP_MAX_BATCH (1u << 20)

/* Party side: expands one batch from the party's PRG and, where needed, the dealer's
 * payload (validated: header, version, kind, param, n and exact length). out receives
 * n * prep_shares_per_item shares; clear (input owner only) n values. */
int prep_expand(struct prg *g, unsigned party, const struct mpc_prep_req *req,
		const uint8_t *payload, size_t len, mpc_share *out, ring64_t *clear);
/* The same for MPC_PREP_TRIPLE, whose shares are wide: out receives 3 n shares. */
int prep_expand_wide(struct prg *g, unsigned party, const struct mpc_prep_req *req,
		     const uint8_t *payload, size_t len, mpc_wshare *out);

/* ---------------------------------------------------------------- batch internals */

/* A compound operation (approx.c): step() runs when the compound is queued and again
 * each time every child its last stage queued has finished; it reads the children's
 * outputs, queues the next stage's children on b (they become its children by
 * themselves) or sets done after writing the final output. free() wipes and frees
 * the whole state (the struct the compound embeds this in). pending counts the
 * children in flight (kept by the batch). */
struct cop {
	int (*step)(struct mpc_batch *b, struct cop *c);
	void (*free)(struct cop *c);
	unsigned stage;
	size_t pending;
	bool done;
};

struct mpc *batch_engine(struct mpc_batch *b);
/* Takes ownership of c (freed on error too) and runs its first stage. */
int batch_compound(struct mpc_batch *b, struct cop *c);
/* The primitive steps of mpc.c, for compounds (inputs read when queued, outputs
 * written when the step finishes). out = x y + add (add may be NULL). */
int batch_mul_add(struct mpc_batch *b, mpc_share *out, const mpc_share *x, const mpc_share *y,
		  const mpc_share *add, size_t n);
/* LTZ of x; with selw lanes, out[i selw + k] = bit ? sx : sy instead (bits gets the
 * bits if not NULL). */
int batch_ltz(struct mpc_batch *b, mpc_share *out, mpc_share *bits, const mpc_share *x, size_t n,
	      unsigned selw, const mpc_share *sx, const mpc_share *sy);
/* The digit look-up of exp: out[i ntab + k] = tab_k(digit tch[k] of x mod 16^J). */
int batch_digits(struct mpc_batch *b, mpc_share *out, const mpc_share *x, size_t n, unsigned J,
		 unsigned ntab, const unsigned *tch, const ring64_t *tab);
/* One-time truth table on V in [0, 2^bits): out[i ntab + k] = tab[k 2^bits + V_i]. */
int batch_lut(struct mpc_batch *b, mpc_share *out, const mpc_share *x, size_t n, unsigned bits,
	      unsigned ntab, const ring64_t *tab);
/* Leading-digit look-up on x in [0, 16^J): out[i ntab + k] =
 * sum_{j = jlo}^{J-1} [x < 16^(j+1)] tab[(k J + j) 16 + d_j(x)]. */
int batch_norm(struct mpc_batch *b, mpc_share *out, const mpc_share *x, size_t n, unsigned J,
	       unsigned jlo, unsigned ntab, const ring64_t *tab);
void mpc_wipe_free(void *ptr, size_t len);

/* ---------------------------------------------------------------- matrix triples (mmul.c) */

/* Party side of MPC_PREP_MTRIPLE (prep.c): per item, K = rows param + 2 param cols +
 * 2 rows cols wide shares in the order A, B, B', C, C'. Each share's PRG bytes are its
 * value then its MAC (24 bytes each), and every item starts on a 64-byte block of the
 * stream. out receives n K shares. */
uint64_t prep_mtriple_shares(uint64_t rows, uint64_t inner, uint64_t cols);
int prep_expand_mtriple(struct prg *g, unsigned party, const struct mpc_prep_req *req,
			const uint8_t *payload, size_t len, mpc_wshare *out);

/* An operation defined outside mpc.c that opens nopen values in one round of a batch
 * (a matrix product): batch_xop queues the openings (copied) and takes ownership of x
 * (freed on error too); once they are open, finish(b, x, pub) gets them in queue
 * order and writes the output, then x->free wipes and frees the whole state. finish
 * must not fail except through engine_fail. */
struct xop {
	int (*finish)(struct mpc_batch *b, struct xop *x, const ring64_t *pub);
	void (*free)(struct xop *x);
};
int batch_xop(struct mpc_batch *b, struct xop *x, const mpc_share *open, size_t nopen);

/* The engine's matrix-triple state (its PRG stream, the dealer batch counter and the
 * pools of checked triples), owned by the engine, made by mmul.c on first use, freed
 * by mpc_free through mmul_state_free (accepts NULL). */
struct mmul_state;
void mmul_state_free(struct mmul_state *s);
struct mmul_state **engine_mmul(struct mpc *p);
/* What mmul.c needs of the engine: the party's dealer seed, whether triples are
 * sacrificed, the counters, the abort, one dealer fetch (counted; a failure aborts
 * with "preprocessing"), a toss read as len bytes of joint randomness, and a wide
 * opening (low 128 bits sent, recorded for the MAC check modulo 2^192). */
const uint8_t *engine_seed(const struct mpc *p);
bool engine_sacrifice(const struct mpc *p);
struct mpc_stats *engine_stats(struct mpc *p);
int engine_fail(struct mpc *p, int rc, const char *check);
int engine_fetch(struct mpc *p, const struct mpc_prep_req *req, uint8_t **payload, size_t *len);
int engine_toss(struct mpc *p, uint8_t *out, size_t len);
int engine_open_wide(struct mpc *p, const mpc_wshare *a, size_t n, ring128_t *out);

#endif
