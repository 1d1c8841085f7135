/* clientio: how an outside client gives the parties its prompt and gets each generated
 * token back, with neither the gateway that relays the bytes nor any coalition of up to
 * N-1 parties learning them, and with a party that lies about its part detected.
 *
 * One generation runs four messages (docs/PROTOCOL.md, "Client input and output"):
 *
 *   MASKS   party -> client   the party's shares of n_in input masks, n_out output masks
 *                             and CIO_CHECKS blinders, made jointly by the parties
 *   INPUT   client -> parties x - A for every prompt token (A the masks the client
 *                             reconstructed) and a 32-byte seed for the check
 *                             coefficients; the parties set [x] = [a] + (x - A). Not
 *                             sealed: every value in it is uniform; tagged per party
 *   RECEIPT party -> client   CIO_CHECKS random linear combinations of the masks, opened
 *                             and MAC-checked by the parties; the client compares them
 *                             with its own combinations of A, so a party that gave it a
 *                             wrong share is caught (probability >= 1 - 2^-64)
 *   OUTPUT  party -> client   z = y + r for output mask r, opened and MAC-checked by the
 *                             parties; every party sends z and the client requires all
 *                             N copies to agree, then takes y = z - R
 *
 * Every message from a party is sealed to the client's X25519 key (crypto_box_seal) and
 * carries inside the seal a BLAKE2b tag under a key derived from X25519(party sealing key,
 * client key), so the client knows which attested party wrote it; the INPUT message
 * carries one such tag per party. All messages share one versioned binary format with a
 * 64-byte header that binds session, generation, the generation's shape and the position,
 * so a message sealed to another key, altered, truncated, reordered, repeated or replayed
 * from another generation is refused.
 *
 * Party side: functions that run on an engine (all N parties call them together, like
 * every engine call). Client side: a small library with no engine, used by the CLI and
 * the tests. Neither side is thread-safe; use one object per generation.
 *
 * Errors (0 or a negative ERR_*): ERR_INVALID (a bad argument, a call out of order, a key
 * of low order), ERR_PARSE (a malformed or truncated message), ERR_UNSUPPORTED (another
 * format version), ERR_TOO_LARGE, ERR_PROTOCOL (a message that does not unseal or
 * authenticate, belongs to another session or generation, or repeats or skips a
 * position), ERR_MAC_CHECK (a party lied: receipts or output parts disagree with what
 * the client reconstructed; the client is then dead), ERR_ABORTED (a dead object),
 * ERR_NOMEM, and whatever the engine returns. cio_*_why() names the last refusal. */
#ifndef MIMIR_CLIENTIO_H
#define MIMIR_CLIENTIO_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "mpc/mpc.h"

#define CIO_VERSION 1
#define CIO_KEY_BYTES 32  /* X25519 public or secret key */
#define CIO_ID_BYTES 16   /* session and generation ids */
#define CIO_HDR_BYTES 64  /* the clear header of every message */
#define CIO_TAG_BYTES 32  /* BLAKE2b-256 keyed tag */
#define CIO_SEED_BYTES 32 /* the client's seed for the check coefficients */
#define CIO_SEAL_BYTES 48 /* crypto_box_SEALBYTES */
#define CIO_CHECKS 64     /* independent check combinations (soundness 2^-64) */
/* At most this many masked values (n_in + n_out) per generation: bounds every message
 * (a MASKS message is at most 524,944 bytes) and the client's memory. */
#define CIO_MAX_VALUES 65536u
#define CIO_CLIENT_SENDER 0xFF /* the sender field of the client's message */

enum cio_type { CIO_MASKS = 1, CIO_INPUT = 2, CIO_RECEIPT = 3, CIO_OUTPUT = 4 };

/* Exact wire sizes (used by the gateway to bound what it relays, and by the tests). */
size_t cio_masks_bytes(uint32_t n_in, uint32_t n_out);
size_t cio_input_bytes(unsigned nparties, uint32_t n_in);
size_t cio_receipt_bytes(void);
size_t cio_output_bytes(uint32_t count);

/* A fresh X25519 key pair (the client's ephemeral key; also usable for tests). */
int cio_keypair(uint8_t pk[CIO_KEY_BYTES], uint8_t sk[CIO_KEY_BYTES]);

/* ---------------------------------------------------------------- party side */

struct cio_party_params {
	uint8_t session[CIO_ID_BYTES];
	uint8_t generation[CIO_ID_BYTES]; /* fresh per generation (the client picks it) */
	uint8_t client_pk[CIO_KEY_BYTES]; /* the client's ephemeral key */
	uint8_t party_sk[CIO_KEY_BYTES];  /* this party's sealing key (the one published
					     with its certificate); only the tag key derived
					     from it is kept (the caller wipes its params) */
	uint32_t n_in, n_out;             /* prompt tokens, output values; 1 <= sum <= max */
};

struct cio_party;

/* Borrows p (and net, which may be NULL) for the object's life. On every local refusal
 * (a bad INPUT message, a call out of order) the object calls mpc_net_abort(net) so that
 * peers waiting in the next round return at once; with net NULL the caller must abort.
 * Any failure leaves the object dead (ERR_ABORTED afterwards). */
int cio_party_new(struct mpc *p, struct mpc_net *net, const struct cio_party_params *prm,
		  struct cio_party **out);
void cio_party_free(struct cio_party *cp);
const char *cio_party_why(const struct cio_party *cp);

/* Step 1, all parties together: makes the masks (each party inputs random values, the
 * masks are their sums), MAC-checks, and returns in *msg (malloc'd, caller frees) this
 * party's sealed MASKS message. */
int cio_party_masks(struct cio_party *cp, uint8_t **msg, size_t *len);
/* Step 2, all parties together, with the client's INPUT message (the same bytes at
 * every party): verifies it, writes the n_in prompt shares to x, opens the check
 * combinations (MAC-checked) and returns the sealed RECEIPT in *msg. */
int cio_party_input(struct cio_party *cp, const uint8_t *in, size_t in_len, mpc_share *x,
		    uint8_t **msg, size_t *len);
/* Step 3, any number of times, all parties together: releases the n values y (n >= 1,
 * at most the output masks left) to the client: opens y + r with fresh output masks,
 * MAC-checks, and returns the sealed OUTPUT message. */
int cio_party_output(struct cio_party *cp, const mpc_share *y, size_t n, uint8_t **msg,
		     size_t *len);

/* Fault injection for the tests: this party cheats in one place, with a message that is
 * still correctly sealed and tagged. Each call adds one fault (at most 4).
 *   CIO_FAULT_MASK:    adds delta to value `index` of its MASKS message;
 *   CIO_FAULT_MASK_ADAPT: the same, and adds to its RECEIPT exactly what makes the
 *                      receipt consistent with the lie (the strongest lie it can tell);
 *   CIO_FAULT_RECEIPT: adds delta to check value `index` of its RECEIPT (index
 *                      CIO_CHECKS: flips a bit of the digest instead);
 *   CIO_FAULT_OUTPUT:  adds delta to output value `index` (counting from 0 over the
 *                      whole generation). */
enum cio_fault { CIO_FAULT_MASK = 1, CIO_FAULT_MASK_ADAPT, CIO_FAULT_RECEIPT, CIO_FAULT_OUTPUT };
int cio_party_inject(struct cio_party *cp, enum cio_fault kind, uint64_t index, uint64_t delta);

/* ---------------------------------------------------------------- client side */

struct cio_client_params {
	uint8_t session[CIO_ID_BYTES];
	uint8_t generation[CIO_ID_BYTES];
	uint8_t client_sk[CIO_KEY_BYTES]; /* the ephemeral secret key; the client keeps a
					     copy (wiped by cio_client_free) */
	unsigned nparties;                /* 2 .. MPC_MAX_PARTIES */
	const uint8_t (*party_pk)[CIO_KEY_BYTES]; /* nparties attested sealing keys */
	uint32_t n_in, n_out;
};

struct cio_client_status {
	unsigned masks;     /* parties whose MASKS arrived */
	bool input_made;    /* cio_client_input ran */
	unsigned receipts;  /* parties whose RECEIPT matched */
	bool verified;      /* every receipt matched: outputs may be released */
	uint32_t taken;     /* outputs handed out by cio_client_take */
	uint32_t ready;     /* outputs complete and agreed, not yet taken */
	bool failed;        /* a party was caught lying (ERR_MAC_CHECK); dead */
};

struct cio_client;

int cio_client_new(const struct cio_client_params *prm, struct cio_client **out);
void cio_client_free(struct cio_client *c);
/* The client's public key (what the parties seal to). */
void cio_client_pk(const struct cio_client *c, uint8_t pk[CIO_KEY_BYTES]);
const char *cio_client_why(const struct cio_client *c);
void cio_client_status(const struct cio_client *c, struct cio_client_status *st);

/* Any sealed party message (MASKS, RECEIPT, OUTPUT, in any interleaving of parties).
 * A refused message leaves the state as it was, except ERR_MAC_CHECK, which kills the
 * client. Outputs may arrive before every receipt did; they are held, not released. */
int cio_client_feed(struct cio_client *c, const uint8_t *msg, size_t len);
/* After every MASKS message: the prompt (n == n_in values, e.g. token ids) becomes the
 * INPUT message in *msg (malloc'd, caller frees), the same bytes for every party. */
int cio_client_input(struct cio_client *c, const uint64_t *x, size_t n, uint8_t **msg,
		     size_t *len);
/* The outputs released so far, in order: up to cap values into out, *n of them; 0 values
 * until every receipt matched. */
int cio_client_take(struct cio_client *c, uint64_t *out, size_t cap, size_t *n);

#endif
