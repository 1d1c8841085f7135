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
	/* streams 1..7: MPC_PREP_RAND .. _CMP (the kind); 16 + owner: MPC_PREP_INPUT */
	PRG_STREAM_INPUT0 = 16,
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

/* Shares per item (TRIPLE: a, b, c; TRUNC: r, r_63, r_mid; MMUL: a (rows), a B (cols)),
 * PRG bytes per item and
 * payload body bytes per item for party 0 and for an input's owner. */
unsigned prep_shares_per_item(const struct mpc_prep_req *req);
size_t prep_prg_bytes(const struct mpc_prep_req *req);
size_t prep_payload_bytes(unsigned party, const struct mpc_prep_req *req);
bool prep_req_valid(const struct mpc_prep_req *req, unsigned nparties);

#define PREP_HDR_BYTES 24
#define PREP_MAX_DIM 65536
#define PREP_VERSION 2 /* 2: triples with 192-bit shares */
#define PREP_MAX_BATCH (1u << 20)

/* Party side: expands one batch from the party's PRG and, where needed, the dealer's
 * payload (validated: header, version, kind, param, n and exact length). out receives
 * n * prep_shares_per_item shares; clear (input owner only) n values. */
int prep_expand(struct prg *g, unsigned party, const struct mpc_prep_req *req,
		const uint8_t *payload, size_t len, mpc_share *out, ring64_t *clear);
/* The same for MPC_PREP_TRIPLE, whose shares are wide: out receives 3 n shares. */
int prep_expand_wide(struct prg *g, unsigned party, const struct mpc_prep_req *req,
		     const uint8_t *payload, size_t len, mpc_wshare *out);

#endif
