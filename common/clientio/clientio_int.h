/* clientio internals shared by the party and client sides (not a public header): the
 * message header, the one parser both sides use, the key derivation, tags, sealing and
 * the check coefficients. The fuzz harness reaches the parser through here. */
#ifndef MIMIR_CLIENTIO_INT_H
#define MIMIR_CLIENTIO_INT_H

#include "clientio/clientio.h"

#define CIO_MAGIC "MCIO"
#define CIO_DIGEST_BYTES 32
#define CIO_WHY_BYTES 160

/* The 64-byte header, little endian:
 *   0 magic "MCIO"   4 u16 version   6 u8 type   7 u8 sender (party, or 0xFF)
 *   8 u8 nparties    9 u8 checks    10 u16 reserved (0)   12 u32 count
 *  16 u32 n_in      20 u32 n_out    24 u64 seq   32 session[16]   48 generation[16] */
struct cio_hdr {
	uint16_t version;
	uint8_t type, sender, nparties, checks;
	uint32_t count, n_in, n_out;
	uint64_t seq;
	uint8_t session[CIO_ID_BYTES], generation[CIO_ID_BYTES];
};

void cio_hdr_write(uint8_t out[CIO_HDR_BYTES], const struct cio_hdr *h);

/* Parses one plaintext message: the header, every field's range and the exact length
 * its type implies (a party message: header, body, tag; INPUT: header, body, one tag
 * per party). *auth_len receives the length of the tagged part (header and body).
 * Nothing is authenticated here. ERR_PARSE, ERR_UNSUPPORTED (version) or 0. */
int cio_parse(const uint8_t *buf, size_t len, struct cio_hdr *h, size_t *auth_len);

/* Body bytes of a message of this header (no tags). */
size_t cio_body_bytes(const struct cio_hdr *h);

/* The tag key between the client and party i: BLAKE2b-256 over a domain string,
 * X25519(sk, peer) and both public keys (client first). ERR_INVALID when the shared
 * point is the identity (a key of low order). */
int cio_auth_key(const uint8_t sk[CIO_KEY_BYTES], const uint8_t peer[CIO_KEY_BYTES],
		 const uint8_t client_pk[CIO_KEY_BYTES], const uint8_t party_pk[CIO_KEY_BYTES],
		 uint8_t key[CIO_TAG_BYTES]);
void cio_tag(uint8_t tag[CIO_TAG_BYTES], const uint8_t key[CIO_TAG_BYTES], const uint8_t *msg,
	     size_t len);
/* Constant-time check of a tag; true when it matches. */
bool cio_tag_ok(const uint8_t tag[CIO_TAG_BYTES], const uint8_t key[CIO_TAG_BYTES],
		const uint8_t *msg, size_t len);

/* Seals header || body || tag (plain, plain_len bytes, tag included) to the client:
 * *out malloc'd, CIO_SEAL_BYTES longer. */
int cio_seal(const uint8_t *plain, size_t plain_len, const uint8_t client_pk[CIO_KEY_BYTES],
	     uint8_t **out, size_t *out_len);

/* Check coefficients: chi[j] for j in [from, from + n) of check k, from the client's
 * seed (ChaCha20-IETF, key = seed, nonce = "cio-chi\0" || u32 k, 64-bit words in
 * order; from must be a multiple of 8). */
void cio_chi(const uint8_t seed[CIO_SEED_BYTES], uint32_t k, uint64_t from, uint64_t *chi,
	     size_t n);

/* What a message must be bound to: the generation it belongs to and its shape. */
struct cio_expect {
	uint8_t session[CIO_ID_BYTES], generation[CIO_ID_BYTES];
	unsigned nparties;
	uint32_t n_in, n_out;
};
/* True when h belongs to e (session, generation, N, n_in, n_out all equal). */
bool cio_bound(const struct cio_hdr *h, const struct cio_expect *e);

/* Party side: parses and authenticates the client's INPUT message for party `me` (its
 * tag under key), bound to e. *auth_len as for cio_parse. ERR_PARSE, ERR_UNSUPPORTED or
 * ERR_PROTOCOL (another type, generation or shape, or a tag that does not verify);
 * why (may be NULL) receives the reason. */
int cio_input_verify(const struct cio_expect *e, const uint8_t key[CIO_TAG_BYTES], unsigned me,
		     const uint8_t *in, size_t len, struct cio_hdr *h, size_t *auth_len,
		     char *why, size_t whycap);

/* Masked values per generation: n_in + n_out (what the checks cover). */
static inline uint64_t cio_nmasked(uint32_t n_in, uint32_t n_out)
{
	return (uint64_t)n_in + n_out;
}

#endif
