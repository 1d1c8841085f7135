/* mpc: the N-party MPC engine of Mimir (SPDZ2k-style authenticated shares, dealer
 * preprocessing, batched MAC check), in three layers that only depend downwards:
 *
 *   transport  (mpc_net_*)    one exchange = one round, counted; in-process hub, and a
 *                             fault-injecting wrapper for the malicious-security tests;
 *   dealer     (mpc_dealer_*) correlated randomness: party i expands its shares from a
 *                             PRG seed, only party 0 (and an input's owner) receive
 *                             explicit payloads, so the dealer sends ~1/N of the naive
 *                             volume; reached through struct mpc_prep_source so that it
 *                             can live in another process;
 *   engine     (mpc_*)        one object per party: input, linear operations, opening
 *                             with recording, the MAC check, Beaver multiplication and
 *                             truncation, comparisons, maxima, and the approximations
 *                             (exp, reciprocal, rsqrt, SiLU, softmax: approx.c), all
 *                             vectorised and batchable.
 *
 * Values are elements of Z_2^64 (signed fixed point with f fractional bits, see
 * ring/ring.h). A share is (v, m) in Z_2^128 x Z_2^128 with sum(v) = x mod 2^64 and
 * sum(m) = alpha * sum(v) mod 2^128, alpha the additively shared MAC key (k = s = 64).
 * docs/PROTOCOL.md names the protocol, rounds, bytes and accuracy of every operation.
 *
 * Error discipline: any failure inside a protocol (a peer's wrong message size, a
 * commitment that does not open, a failed MAC check, an exhausted dealer) aborts the
 * engine for good: the transport is told to abort (so peers blocked in a round return),
 * mpc_failed_check() names the failing check, and every later call returns
 * ERR_ABORTED without opening anything. Threads: one engine per party and thread. */
#ifndef MIMIR_MPC_H
#define MIMIR_MPC_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "ring/ring.h"

#define MPC_MAX_PARTIES 16
#define MPC_SEED_BYTES 32

/* ---------------------------------------------------------------- transport */

struct mpc_net;

/* An implementation moves one round: send[j] (send_len[j] bytes) to every peer j and
 * receives exactly recv_len[j] bytes from every peer j into recv[j]; entries for the
 * own index are ignored. A peer that sends any other number of bytes is ERR_PROTOCOL.
 * abort() makes every party's pending and future exchange fail (ERR_ABORTED). */
struct mpc_net_ops {
	int (*exchange)(void *impl, const uint8_t *const send[], const size_t send_len[],
			uint8_t *const recv[], const size_t recv_len[]);
	void (*abort)(void *impl);
	void (*free)(void *impl);
};

struct mpc_net_stats {
	uint64_t rounds;     /* exchange calls that completed */
	uint64_t bytes_sent; /* payload bytes, summed over peers */
	uint64_t bytes_recv;
};

/* Wraps an implementation; the net owns impl from then on (ops->free on mpc_net_free,
 * also when mpc_net_new fails). */
int mpc_net_new(const struct mpc_net_ops *ops, void *impl, unsigned party, unsigned nparties,
		struct mpc_net **out);
void mpc_net_free(struct mpc_net *net);
unsigned mpc_net_party(const struct mpc_net *net);
unsigned mpc_net_nparties(const struct mpc_net *net);
/* One round; arrays have nparties entries. Counts rounds and bytes on success. */
int mpc_net_exchange(struct mpc_net *net, const uint8_t *const send[], const size_t send_len[],
		     uint8_t *const recv[], const size_t recv_len[]);
void mpc_net_abort(struct mpc_net *net);
void mpc_net_get_stats(const struct mpc_net *net, struct mpc_net_stats *st);

/* In-process transport: one hub shared by the nparties threads, one net per party.
 * The hub must outlive every net made from it. timeout_ms bounds the wait for the
 * other parties in one round (0: 120 s); on expiry the hub aborts (ERR_TIMEOUT). */
struct mpc_hub;
int mpc_hub_new(unsigned nparties, unsigned timeout_ms, struct mpc_hub **out);
void mpc_hub_free(struct mpc_hub *hub);
int mpc_net_local_new(struct mpc_hub *hub, unsigned party, struct mpc_net **out);

/* Fault injection for tests: wraps inner (taking ownership) and flips bit `bit`
 * (taken modulo the message's bit length) of the message this party sends to peer
 * `to` in round `round` (0-based, counting this party's exchanges). An empty message
 * is left alone. mpc_net_fault_fired() tells whether the flip happened. */
int mpc_net_faulty_new(struct mpc_net *inner, uint64_t round, unsigned to, uint64_t bit,
		       struct mpc_net **out);
bool mpc_net_fault_fired(const struct mpc_net *net);

/* ---------------------------------------------------------------- preprocessing */

enum mpc_prep_kind {
	MPC_PREP_RAND = 1,   /* random authenticated value [r] */
	MPC_PREP_TRIPLE = 2, /* Beaver triple [a],[b],[c] with 192-bit shares and MACs,
				c = ab mod 2^192 (the sacrifice checks 128-bit values) */
	MPC_PREP_TRUNC = 3,  /* [r], [r_63] (bit 63 of r), [(r mod 2^63) >> m]; param = m */
	MPC_PREP_INPUT = 4,  /* [r] with r known to the owner; param = owner */
	MPC_PREP_MMASK = 5,  /* fixed mask [B] of a rows x cols matrix; param = mask id,
				n = rows * cols; the dealer keeps B for MPC_PREP_MMUL */
	MPC_PREP_MMUL = 6,   /* per row of an input to that matrix: [a] (rows) and [a B]
				(cols); param = mask id, n = number of rows of the input */
	MPC_PREP_CMP = 7,    /* comparison mask: [r], [r_63], [r_62] and, for each 4-bit
				chunk j = 0..15 of r mod 2^62, the one-hot vector
				[r_(j) == v] for v = 0..15 (MPC_CMP_SHARES shares) */
	MPC_PREP_LUT = 8,    /* table look-up mask: [r] and the one-hot vector
				[r mod 2^b == v], v = 0..2^b - 1; param = b (1..MPC_LUT_MAX_BITS) */
	MPC_PREP_MTRIPLE = 9, /* matrix triple and its sacrifice partner, 192-bit shares:
				 [A] (rows x param), [B], [B'] (param x cols), [C] = A B,
				 [C'] = A B' (rows x cols); see mpc_matmul */
};

#define MPC_CMP_CHUNKS 16
#define MPC_CMP_SHARES (3 + 16 * MPC_CMP_CHUNKS)
#define MPC_LUT_MAX_BITS 10

/* One batch of one kind: the batch-th request of that kind (0, 1, 2, ...), for n
 * items. Truncation pairs (per m) and look-up masks (per b) are numbered per
 * parameter, so that a program may use several and a dealer may pool each on its
 * own. Every party requests the same sequence; the dealer refuses a batch whose kind,
 * param or n differ from what another party asked for. */
struct mpc_prep_req {
	uint16_t kind;
	uint32_t param;
	uint32_t n;
	uint64_t batch;
	uint32_t rows, cols; /* matrix kinds only, else 0 */
};

/* Where a party's engine gets dealer payloads. fetch returns in *payload (malloc'd,
 * caller frees with free after wiping) the bytes for `party`; parties that need no
 * payload for a request are never asked (see mpc_prep_needs_payload). The payload is
 * versioned: "MPRP", u16 version, u16 kind, u32 param, u32 n, u32 rows, u32 cols (all
 * little endian), then the body. */
struct mpc_prep_source {
	int (*fetch)(void *ctx, unsigned party, const struct mpc_prep_req *req, uint8_t **payload,
		     size_t *len);
	void *ctx;
};
bool mpc_prep_needs_payload(unsigned party, const struct mpc_prep_req *req);

/* The in-process dealer: draws the MAC key shares and the party seeds at creation,
 * then produces batches on demand (thread-safe). A real deployment runs the same code
 * in the dealer service and ships payloads over mTLS. */
struct mpc_dealer;
int mpc_dealer_new(unsigned nparties, struct mpc_dealer **out);
void mpc_dealer_free(struct mpc_dealer *d);
/* Party i's seed: the only secret party i ever needs from the dealer besides payloads. */
int mpc_dealer_party_seed(const struct mpc_dealer *d, unsigned party,
			  uint8_t seed[MPC_SEED_BYTES]);
int mpc_dealer_fetch(struct mpc_dealer *d, unsigned party, const struct mpc_prep_req *req,
		     uint8_t **payload, size_t *len);
/* A source that calls mpc_dealer_fetch; valid while d lives. */
struct mpc_prep_source mpc_dealer_source(struct mpc_dealer *d);
/* Bytes the dealer has handed out so far, over all parties. */
uint64_t mpc_dealer_bytes_out(struct mpc_dealer *d);

/* Fault injection for tests: the item-th triple ever generated (0-based) gets c + 2^bit
 * with a MAC that matches (a faulty dealer, MPC_DEALER_FAULT_TRIPLE_VALUE), or a MAC
 * share off by 2^bit (MPC_DEALER_FAULT_TRIPLE_MAC); bit < 192. The MTRIPLE kinds do the
 * same to the item-th entry of C over all matrix triples generated (row-major, triple
 * after triple; the sacrifice partner C' is not counted). */
enum mpc_dealer_fault {
	MPC_DEALER_FAULT_TRIPLE_VALUE = 1,
	MPC_DEALER_FAULT_TRIPLE_MAC = 2,
	MPC_DEALER_FAULT_MTRIPLE_VALUE = 3,
	MPC_DEALER_FAULT_MTRIPLE_MAC = 4,
};
int mpc_dealer_inject(struct mpc_dealer *d, enum mpc_dealer_fault kind, uint64_t item,
		      unsigned bit);

/* ---------------------------------------------------------------- engine */

typedef struct {
	ring128_t v; /* value share */
	ring128_t m; /* MAC share */
} mpc_share;

struct mpc_config {
	unsigned frac_bits;  /* f, 8..24; 0 means RING_FXP_DEFAULT_F */
	size_t check_every;  /* MAC-check when this many values are unchecked; 0: 1 << 18 */
	uint32_t prep_batch; /* items per dealer request; 0: 4096 */
	bool no_sacrifice;   /* skip the triple sacrifice (benchmarks of the bare online) */
};

struct mpc_stats {
	uint64_t rounds, bytes_sent, bytes_recv; /* from the transport */
	uint64_t opened;                         /* values opened (recorded for checking) */
	uint64_t checks;                         /* MAC checks run */
	uint64_t triples, truncs, randoms;       /* preprocessing consumed */
	uint64_t cmps;                           /* comparison masks consumed */
	uint64_t luts;                           /* look-up masks consumed */
	uint64_t triples_sacrificed;
	uint64_t prep_bytes_in; /* dealer payload bytes this party received */
	uint64_t mtriples, mtriples_sacrificed; /* matrix triples used and sacrificed */
};

struct mpc;

/* The engine borrows net (free it after mpc_free) and src; seed is party's dealer
 * seed (copied, wiped on free). */
int mpc_new(struct mpc_net *net, const uint8_t seed[MPC_SEED_BYTES],
	    const struct mpc_prep_source *src, const struct mpc_config *cfg, struct mpc **out);
void mpc_free(struct mpc *p);
unsigned mpc_party(const struct mpc *p);
unsigned mpc_nparties(const struct mpc *p);
unsigned mpc_frac_bits(const struct mpc *p);
void mpc_get_stats(const struct mpc *p, struct mpc_stats *st);
/* NULL while healthy; after an abort, the name of the check or step that failed:
 * "mac-check", "commitment", "broadcast-consistency", "triple-sacrifice" (integrity
 * checks), "transport" (a peer's wrong size, an abort or timeout elsewhere),
 * "preprocessing" (dealer unreachable or a bad payload), "joint-randomness", "memory",
 * "internal" (a compound operation's stage failed for another reason: a bug). */
const char *mpc_failed_check(const struct mpc *p);

/* Secret input of party owner: x (n values, read only at the owner, NULL elsewhere)
 * becomes out. One round; the owner sends 8n bytes to each peer. */
int mpc_input(struct mpc *p, unsigned owner, const ring64_t *x, mpc_share *out, size_t n);

/* Local linear operations (no communication, no failure). out may alias inputs. */
void mpc_add(const struct mpc *p, mpc_share *out, const mpc_share *a, const mpc_share *b,
	     size_t n);
void mpc_sub(const struct mpc *p, mpc_share *out, const mpc_share *a, const mpc_share *b,
	     size_t n);
void mpc_neg(const struct mpc *p, mpc_share *out, const mpc_share *a, size_t n);
/* out[i] = a[i] + c[i] and out[i] = c[i] * a[i] with public c. */
void mpc_add_public(const struct mpc *p, mpc_share *out, const mpc_share *a, const ring64_t *c,
		    size_t n);
void mpc_mul_public(const struct mpc *p, mpc_share *out, const mpc_share *a, const ring64_t *c,
		    size_t n);
/* out[i] = c * a[i] with one public scalar. */
void mpc_scale(const struct mpc *p, mpc_share *out, const mpc_share *a, ring64_t c, size_t n);
/* The public constant c as a share (party 0 holds the value; everyone the MAC). */
void mpc_constant(const struct mpc *p, mpc_share *out, ring64_t c, size_t n);

/* Preprocessing ahead of time, off the critical path: makes n items of a kind ready
 * (param: m for MPC_PREP_TRUNC, b for MPC_PREP_LUT, the owner for MPC_PREP_INPUT, else
 * 0). For triples this runs the sacrifice now (one toss and two rounds, all parties
 * must call it together); the other kinds only talk to the dealer. What each
 * approximation consumes per value is in docs/PROTOCOL.md. */
int mpc_prefill(struct mpc *p, enum mpc_prep_kind kind, uint32_t param, size_t n);

/* Opening among the parties (one round, 8n bytes to each peer). The values are
 * recorded for the next MAC check and are NOT yet safe to release to anyone outside
 * the parties. */
int mpc_open(struct mpc *p, ring64_t *out, const mpc_share *a, size_t n);
/* Opening for release: opens, then MAC-checks everything opened so far; out is written
 * only when the check passed. */
int mpc_reveal(struct mpc *p, ring64_t *out, const mpc_share *a, size_t n);
/* Runs the batched MAC check now (no-op when nothing is unchecked). */
int mpc_check(struct mpc *p);

/* Batches: independent operations queued on one batch share their rounds: every
 * round opens what each unfinished operation needs for its current step (a product
 * has one step, a comparison five, a max six, the approximations below a program of
 * stages), so a batch takes as many rounds as its longest operation. Outputs are
 * written by mpc_batch_run; inputs are read when queued (so out may alias them), and
 * out must stay valid until mpc_batch_run returns. A queueing call that fails after
 * an approximation queued part of its work aborts the engine (the other parties
 * could not undo theirs). */
struct mpc_batch;
int mpc_batch_new(struct mpc *p, struct mpc_batch **out);
void mpc_batch_free(struct mpc_batch *b);
/* out = a * b in Z_2^64 (Beaver; no rescaling). */
int mpc_batch_mul(struct mpc_batch *b, mpc_share *out, const mpc_share *x, const mpc_share *y,
		  size_t n);
/* out = a / 2^m rounded probabilistically to a neighbouring integer (error < 1 unit),
 * for signed a with |a| < 2^62; 1 <= m <= 62. */
int mpc_batch_trunc(struct mpc_batch *b, mpc_share *out, const mpc_share *x, size_t n,
		    unsigned m);
/* out = bit ? x : y, i.e. y + bit (x - y), for bit in {0, 1} (an integer, not fixed
 * point). 1 round (one product). */
int mpc_batch_select(struct mpc_batch *b, mpc_share *out, const mpc_share *bit,
		     const mpc_share *x, const mpc_share *y, size_t n);
/* out[i] = 1 if x[i] < 0, else 0 (the integer, not fixed point), exactly, for signed
 * x with |x| < 2^62 (in units of 2^-f: |x| < 2^(62-f) in reals); outside that
 * domain the result is unspecified. 5 rounds (docs/PROTOCOL.md, "Comparison"). */
int mpc_batch_ltz(struct mpc_batch *b, mpc_share *out, const mpc_share *x, size_t n);
/* out[i] = max(x[i], y[i]) for |x - y| < 2^62. 6 rounds (LTZ, then a selection). */
int mpc_batch_max(struct mpc_batch *b, mpc_share *out, const mpc_share *x, const mpc_share *y,
		  size_t n);
int mpc_batch_run(struct mpc_batch *b);

/* Fixed-mask matrix product for a secret matrix W that is reused (model weights, rows
 * of the KV cache): the dealer's mask [B] is fetched once and E = W - B is opened once
 * (rows * cols values, one round); every product X W afterwards opens only X - A (the
 * activations), so per-use traffic grows with X, not with W. */
struct mpc_fmat;
int mpc_fmat_new(struct mpc *p, const mpc_share *w, uint32_t rows, uint32_t cols,
		 struct mpc_fmat **out);
void mpc_fmat_free(struct mpc_fmat *fm);
/* out (m x cols) = x (m x rows) W in Z_2^64, row-major, no rescaling (truncate by f
 * after a fixed-point product; the truncation can share a batch with other work). */
int mpc_batch_fmat_mul(struct mpc_batch *b, const struct mpc_fmat *fm, mpc_share *out,
		       const mpc_share *x, uint32_t m);
int mpc_fmat_mul(struct mpc *p, const struct mpc_fmat *fm, mpc_share *out, const mpc_share *x,
		 uint32_t m);

/* One-operation conveniences (one round each; mul_fx two: multiply, then truncate f). */
int mpc_mul(struct mpc *p, mpc_share *out, const mpc_share *x, const mpc_share *y, size_t n);
int mpc_trunc(struct mpc *p, mpc_share *out, const mpc_share *x, size_t n, unsigned m);
int mpc_mul_fx(struct mpc *p, mpc_share *out, const mpc_share *x, const mpc_share *y, size_t n);
int mpc_select(struct mpc *p, mpc_share *out, const mpc_share *bit, const mpc_share *x,
	       const mpc_share *y, size_t n);
int mpc_ltz(struct mpc *p, mpc_share *out, const mpc_share *x, size_t n);

/* Reductions over m rows of n values (x row-major, m x n), each row by a tree of
 * ceil(log2 n) layers of pairwise comparisons, all rows side by side (6 rounds per
 * layer). Values need |x| < 2^61 (differences within the LTZ domain). Ties go to the
 * lower index (the first maximum, as a plain argmax).
 *   mpc_max:    out[r] = max of row r.
 *   mpc_argmax: idx[r] = the index of the first maximum of row r (an integer share;
 *               may be NULL); onehot (m x n, may be NULL) = the one-hot vector of
 *               that index, computed by a backward pass over the tree's comparison
 *               bits (ceil(log2 n) more rounds of products); max (m, may be NULL). */
int mpc_max(struct mpc *p, mpc_share *out, const mpc_share *x, size_t m, size_t n);
int mpc_argmax(struct mpc *p, mpc_share *max, mpc_share *idx, mpc_share *onehot,
	       const mpc_share *x, size_t m, size_t n);

/* Approximations on fixed point (f fractional bits), as compound batch operations:
 * each is a fixed program of rounds over the steps above, queued on a batch like a
 * product (inputs read when queued, so out may alias x; outputs written by
 * mpc_batch_run), sharing every round with whatever else the batch holds; a batch
 * with several takes as many rounds as the longest. The mpc_<op> calls run one on a
 * batch of its own. docs/PROTOCOL.md gives each one's protocol, rounds, bytes and the
 * error bound that tests/unit/test_mpc_approx*.c, test_mpc_recip.c and
 * test_mpc_silu.c assert (softmax's follows from its parts). Inputs need |x| < 2^61
 * (units of 2^-f) for the domain tests to be exact; outside its domain each
 * saturates as stated, and nothing ever wraps. Rounds below are for f <= 17 (the
 * default is 16); preprocessing consumed is in docs/PROTOCOL.md.
 *
 *   exp:     e^x on [MPC_EXP_LO, MPC_EXP_HI]; below it e^LO, above e^HI. 12 rounds
 *            (11 for f <= 14). |exp(x) - e^x| <= (8 e^x + 3) 2^-f + 1.2e-5 e^x.
 *   exp_neg: e^x for x <= 0, on [MPC_EXPNEG_LO, 0] by a table and a cubic, the way
 *            SiLU is; below it exactly 0 (e^LO < 2^-45), from 0 up exactly 1. 6 rounds,
 *            about half of exp's bytes. |exp_neg(x) - e^x| <= 1.2e-5 e^x + 3 2^-f
 *            (f <= 20). Softmax uses it.
 *   recip:   1/x on [MPC_RECIP_LO, MPC_RECIP_HI] (x > 0); below it (x <= 0
 *            included) 1/LO, above 1/HI. 12 rounds (13 for f >= 18).
 *            |recip(x) - 1/x| <= 1.35e-5 / x + 4 2^-f.
 *   rsqrt:   1/sqrt(x) on [MPC_RSQRT_LO, MPC_RSQRT_HI]; below 1/sqrt(LO), above
 *            1/sqrt(HI). 12 rounds (13 for f >= 18).
 *            |rsqrt(x) - x^-1/2| <= 4.5e-6 x^-1/2 + 4 2^-f.
 *   silu:    x sigmoid(x); on [MPC_SILU_LO, MPC_SILU_HI] by a table and a cubic,
 *            outside by its asymptotes (0 below, x above), which are within 2.1e-6
 *            of SiLU there. 6 rounds. |silu(x) - SiLU(x)| <= 6e-6 + 3 2^-f (f <= 20;
 *            docs/PROTOCOL.md for f > 20).
 *   softmax: row-wise over rows x cols (row-major), cols <= MPC_SOFTMAX_MAX_COLS:
 *            max (mpc_max's tournament), exp_neg(x - max), row sums, one reciprocal
 *            per row, products. 6 ceil(log2 cols) + 20 rounds. */
#define MPC_EXP_LO (-32.0)
#define MPC_EXP_HI 8.0
#define MPC_RECIP_LO (1.0 / 65536.0) /* 2^-16 */
#define MPC_RECIP_HI 65536.0         /* 2^16 */
#define MPC_RSQRT_LO (1.0 / 65536.0)
#define MPC_RSQRT_HI 65536.0
#define MPC_EXPNEG_LO (-31.875) /* -(32 - 1/8): the table covers [-31.875, 0] in steps of 1/8 */
#define MPC_SILU_LO (-15.875)   /* -(16 - 1/8): the table covers [-16, 16) in steps of 1/8 */
#define MPC_SILU_HI 15.875
#define MPC_SOFTMAX_MAX_COLS 32768 /* row sums stay below the reciprocal's 2^16 */
int mpc_batch_exp(struct mpc_batch *b, mpc_share *out, const mpc_share *x, size_t n);
int mpc_batch_exp_neg(struct mpc_batch *b, mpc_share *out, const mpc_share *x, size_t n);
int mpc_batch_recip(struct mpc_batch *b, mpc_share *out, const mpc_share *x, size_t n);
int mpc_batch_rsqrt(struct mpc_batch *b, mpc_share *out, const mpc_share *x, size_t n);
int mpc_batch_silu(struct mpc_batch *b, mpc_share *out, const mpc_share *x, size_t n);
int mpc_batch_softmax(struct mpc_batch *b, mpc_share *out, const mpc_share *x, size_t rows,
		      size_t cols);
int mpc_exp(struct mpc *p, mpc_share *out, const mpc_share *x, size_t n);
int mpc_exp_neg(struct mpc *p, mpc_share *out, const mpc_share *x, size_t n);
int mpc_recip(struct mpc *p, mpc_share *out, const mpc_share *x, size_t n);
int mpc_rsqrt(struct mpc *p, mpc_share *out, const mpc_share *x, size_t n);
int mpc_silu(struct mpc *p, mpc_share *out, const mpc_share *x, size_t n);
int mpc_softmax(struct mpc *p, mpc_share *out, const mpc_share *x, size_t rows, size_t cols);

/* Plain matrix product of two secret matrices (attention scores and the like, where
 * neither side is a fixed weight): Beaver's method on a dealer matrix triple
 * ([A] m x k, [B] k x n, [C] = A B; Mohassel and Zhang, SecureML, S&P 2017), each
 * triple checked by a sacrifice before use (docs/PROTOCOL.md, "Plain matrix product").
 * out (m x n) = x (m x k) y (k x n), row-major, exactly in Z_2^64: one round opening
 * X - A and Y - B, (m k + k n) 8 (N-1) bytes per party. The _fx forms truncate by f
 * afterwards (one more round, 8 m n (N-1) bytes) for fixed-point operands:
 * floor(X Y / 2^f) or one more, entry by entry, which needs every |(X Y)_ij| < 2^62
 * (units of 2^-2f; 2^30 in reals at f = 16). Batch forms read x and y when queued (out
 * may alias them) and share their rounds like the other batch operations.
 *
 * Triples are shaped per product and pooled per shape: a product whose shape has no
 * checked triple left fetches one and sacrifices it when queued (a toss and two rounds
 * of 16 (k n + m n) (N-1) bytes); mpc_matmul_prefill does that ahead of time for
 * `count` products of a shape, one toss and two rounds per dealer batch (mpc_prefill
 * refuses MPC_PREP_MTRIPLE: it has no shape). Dimensions 0 or NULL pointers are
 * ERR_INVALID; a dimension above 65536 or a shape whose triple would exceed
 * MPC_MMUL_MAX_SHARES shares (m k + 2 k n + 2 m n, which also bounds m k n below
 * 1.1e8) is ERR_RANGE: split such a product into row blocks of x. A refused call
 * leaves the engine as it was. */
#define MPC_MMUL_MAX_SHARES ((uint64_t)1 << 20)
int mpc_matmul_prefill(struct mpc *p, size_t m, size_t k, size_t n, size_t count);
int mpc_batch_matmul(struct mpc_batch *b, mpc_share *out, const mpc_share *x, const mpc_share *y,
		     size_t m, size_t k, size_t n);
int mpc_batch_matmul_fx(struct mpc_batch *b, mpc_share *out, const mpc_share *x,
			const mpc_share *y, size_t m, size_t k, size_t n);
int mpc_matmul(struct mpc *p, mpc_share *out, const mpc_share *x, const mpc_share *y, size_t m,
	       size_t k, size_t n);
int mpc_matmul_fx(struct mpc *p, mpc_share *out, const mpc_share *x, const mpc_share *y,
		  size_t m, size_t k, size_t n);
#endif
