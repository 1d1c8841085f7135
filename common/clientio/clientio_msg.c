/* clientio_msg: the one binary format of the client protocols, shared by both sides, and
 * the cryptography around it. The parser checks every field against its range and the
 * total length against the exact length the type implies before anyone allocates or
 * reads a value, so a lying count can neither overrun a buffer nor ask for memory. The
 * tag key comes from a static-ephemeral X25519 exchange between the party's published
 * sealing key and the client's ephemeral key: it proves to the client which party wrote
 * a message and to a party that the client wrote the INPUT, which is what stops a
 * gateway from fabricating masks (and so learning the prompt) or masked tokens. */
#include "clientio/clientio_int.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <sodium.h>

#include "err/err.h"
#include "ring/ring.h"

_Static_assert(CIO_SEAL_BYTES == crypto_box_SEALBYTES, "seal overhead");
_Static_assert(CIO_KEY_BYTES == crypto_box_PUBLICKEYBYTES, "key size");
_Static_assert(CIO_KEY_BYTES == crypto_box_SECRETKEYBYTES, "key size");
_Static_assert(CIO_SEED_BYTES == crypto_stream_chacha20_ietf_KEYBYTES, "seed size");

static const char auth_domain[] = "mimir clientio v1 auth";

static void put16(uint8_t *p, uint16_t v)
{
	p[0] = (uint8_t)v;
	p[1] = (uint8_t)(v >> 8);
}

static void put32(uint8_t *p, uint32_t v)
{
	for (int i = 0; i < 4; i++)
		p[i] = (uint8_t)(v >> (8 * i));
}

static uint16_t get16(const uint8_t *p) { return (uint16_t)(p[0] | p[1] << 8); }

static uint32_t get32(const uint8_t *p)
{
	return (uint32_t)p[0] | (uint32_t)p[1] << 8 | (uint32_t)p[2] << 16 | (uint32_t)p[3] << 24;
}

void cio_hdr_write(uint8_t out[CIO_HDR_BYTES], const struct cio_hdr *h)
{
	memcpy(out, CIO_MAGIC, 4);
	put16(out + 4, h->version);
	out[6] = h->type;
	out[7] = h->sender;
	out[8] = h->nparties;
	out[9] = h->checks;
	put16(out + 10, 0);
	put32(out + 12, h->count);
	put32(out + 16, h->n_in);
	put32(out + 20, h->n_out);
	ring64_store(out + 24, h->seq);
	memcpy(out + 32, h->session, CIO_ID_BYTES);
	memcpy(out + 48, h->generation, CIO_ID_BYTES);
}

size_t cio_body_bytes(const struct cio_hdr *h)
{
	size_t v = (size_t)h->count * 8;
	switch (h->type) {
	case CIO_INPUT:
		return v + CIO_SEED_BYTES;
	case CIO_RECEIPT:
		return CIO_DIGEST_BYTES + v;
	default:
		return v;
	}
}

int cio_parse(const uint8_t *buf, size_t len, struct cio_hdr *h, size_t *auth_len)
{
	if (!buf || !h || len < CIO_HDR_BYTES || memcmp(buf, CIO_MAGIC, 4) != 0)
		return ERR_PARSE;
	memset(h, 0, sizeof *h);
	h->version = get16(buf + 4);
	if (h->version != CIO_VERSION)
		return ERR_UNSUPPORTED;
	h->type = buf[6];
	h->sender = buf[7];
	h->nparties = buf[8];
	h->checks = buf[9];
	h->count = get32(buf + 12);
	h->n_in = get32(buf + 16);
	h->n_out = get32(buf + 20);
	h->seq = ring64_load(buf + 24);
	memcpy(h->session, buf + 32, CIO_ID_BYTES);
	memcpy(h->generation, buf + 48, CIO_ID_BYTES);
	uint64_t m = cio_nmasked(h->n_in, h->n_out);
	if (get16(buf + 10) != 0 || h->nparties < 2 || h->nparties > MPC_MAX_PARTIES ||
	    h->checks != CIO_CHECKS || m == 0 || m > CIO_MAX_VALUES)
		return ERR_PARSE;
	/* per type: who may send it, how many values, which positions */
	bool from_party = h->sender < h->nparties;
	switch (h->type) {
	case CIO_MASKS:
		if (!from_party || h->seq != 0 || h->count != m + CIO_CHECKS)
			return ERR_PARSE;
		break;
	case CIO_INPUT:
		if (h->sender != CIO_CLIENT_SENDER || h->seq != 0 || h->count != h->n_in)
			return ERR_PARSE;
		break;
	case CIO_RECEIPT:
		if (!from_party || h->seq != 0 || h->count != CIO_CHECKS)
			return ERR_PARSE;
		break;
	case CIO_OUTPUT:
		if (!from_party || h->count == 0 || h->seq >= h->n_out ||
		    h->count > h->n_out - h->seq)
			return ERR_PARSE;
		break;
	default:
		return ERR_PARSE;
	}
	size_t auth = CIO_HDR_BYTES + cio_body_bytes(h);
	size_t tags = h->type == CIO_INPUT ? (size_t)h->nparties * CIO_TAG_BYTES : CIO_TAG_BYTES;
	if (len != auth + tags)
		return ERR_PARSE;
	if (auth_len)
		*auth_len = auth;
	return 0;
}

bool cio_bound(const struct cio_hdr *h, const struct cio_expect *e)
{
	return h->nparties == e->nparties && h->n_in == e->n_in && h->n_out == e->n_out &&
	       memcmp(h->session, e->session, CIO_ID_BYTES) == 0 &&
	       memcmp(h->generation, e->generation, CIO_ID_BYTES) == 0;
}

int cio_input_verify(const struct cio_expect *e, const uint8_t key[CIO_TAG_BYTES], unsigned me,
		     const uint8_t *in, size_t len, struct cio_hdr *h, size_t *auth_len,
		     char *why, size_t whycap)
{
	size_t auth = 0;
	int rc = cio_parse(in, len, h, &auth);
	if (rc != 0) {
		if (why)
			snprintf(why, whycap, "INPUT message malformed (%zu bytes)", len);
		return rc;
	}
	if (h->type != CIO_INPUT) {
		if (why)
			snprintf(why, whycap, "message of type %u where INPUT belongs", h->type);
		return ERR_PROTOCOL;
	}
	if (!cio_bound(h, e)) {
		if (why)
			snprintf(why, whycap, "INPUT of another session, generation or shape");
		return ERR_PROTOCOL;
	}
	if (me >= h->nparties || !cio_tag_ok(in + auth + (size_t)me * CIO_TAG_BYTES, key, in, auth)) {
		if (why)
			snprintf(why, whycap, "INPUT tag for party %u does not verify", me);
		return ERR_PROTOCOL;
	}
	*auth_len = auth;
	return 0;
}

int cio_auth_key(const uint8_t sk[CIO_KEY_BYTES], const uint8_t peer[CIO_KEY_BYTES],
		 const uint8_t client_pk[CIO_KEY_BYTES], const uint8_t party_pk[CIO_KEY_BYTES],
		 uint8_t key[CIO_TAG_BYTES])
{
	uint8_t dh[crypto_scalarmult_BYTES];
	crypto_generichash_state st;
	/* libsodium refuses an all-zero result, i.e. a peer key of low order */
	if (crypto_scalarmult(dh, sk, peer) != 0)
		return ERR_INVALID;
	crypto_generichash_init(&st, NULL, 0, CIO_TAG_BYTES);
	crypto_generichash_update(&st, (const uint8_t *)auth_domain, sizeof auth_domain);
	crypto_generichash_update(&st, dh, sizeof dh);
	crypto_generichash_update(&st, client_pk, CIO_KEY_BYTES);
	crypto_generichash_update(&st, party_pk, CIO_KEY_BYTES);
	crypto_generichash_final(&st, key, CIO_TAG_BYTES);
	sodium_memzero(dh, sizeof dh);
	sodium_memzero(&st, sizeof st);
	return 0;
}

void cio_tag(uint8_t tag[CIO_TAG_BYTES], const uint8_t key[CIO_TAG_BYTES], const uint8_t *msg,
	     size_t len)
{
	crypto_generichash(tag, CIO_TAG_BYTES, msg, len, key, CIO_TAG_BYTES);
}

bool cio_tag_ok(const uint8_t tag[CIO_TAG_BYTES], const uint8_t key[CIO_TAG_BYTES],
		const uint8_t *msg, size_t len)
{
	uint8_t want[CIO_TAG_BYTES];
	cio_tag(want, key, msg, len);
	bool ok = crypto_verify_32(tag, want) == 0;
	sodium_memzero(want, sizeof want);
	return ok;
}

int cio_seal(const uint8_t *plain, size_t plain_len, const uint8_t client_pk[CIO_KEY_BYTES],
	     uint8_t **out, size_t *out_len)
{
	uint8_t *b = malloc(plain_len + CIO_SEAL_BYTES);
	if (!b)
		return ERR_NOMEM;
	if (crypto_box_seal(b, plain, plain_len, client_pk) != 0) {
		free(b);
		return ERR_CRYPTO;
	}
	*out = b;
	*out_len = plain_len + CIO_SEAL_BYTES;
	return 0;
}

void cio_chi(const uint8_t seed[CIO_SEED_BYTES], uint32_t k, uint64_t from, uint64_t *chi,
	     size_t n)
{
	static const uint8_t zero[512];
	uint8_t nonce[crypto_stream_chacha20_ietf_NONCEBYTES] = {'c', 'i', 'o', '-', 'c', 'h', 'i', 0};
	uint8_t buf[512];
	put32(nonce + 8, k);
	/* 64 words = 8 ChaCha blocks per chunk; word j starts in block j / 8 */
	for (size_t done = 0; done < n; done += 64) {
		size_t c = n - done < 64 ? n - done : 64;
		crypto_stream_chacha20_ietf_xor_ic(buf, zero, c * 8, nonce,
						   (uint32_t)((from + done) / 8), seed);
		for (size_t i = 0; i < c; i++)
			chi[done + i] = ring64_load(buf + 8 * i);
	}
	sodium_memzero(buf, sizeof buf);
}

size_t cio_masks_bytes(uint32_t n_in, uint32_t n_out)
{
	return CIO_SEAL_BYTES + CIO_HDR_BYTES + 8 * (cio_nmasked(n_in, n_out) + CIO_CHECKS) +
	       CIO_TAG_BYTES;
}

size_t cio_input_bytes(unsigned nparties, uint32_t n_in)
{
	return CIO_HDR_BYTES + 8 * (size_t)n_in + CIO_SEED_BYTES + (size_t)nparties * CIO_TAG_BYTES;
}

size_t cio_receipt_bytes(void)
{
	return CIO_SEAL_BYTES + CIO_HDR_BYTES + CIO_DIGEST_BYTES + 8 * CIO_CHECKS + CIO_TAG_BYTES;
}

size_t cio_output_bytes(uint32_t count)
{
	return CIO_SEAL_BYTES + CIO_HDR_BYTES + 8 * (size_t)count + CIO_TAG_BYTES;
}

int cio_keypair(uint8_t pk[CIO_KEY_BYTES], uint8_t sk[CIO_KEY_BYTES])
{
	if (!pk || !sk || sodium_init() < 0)
		return ERR_INVALID;
	return crypto_box_keypair(pk, sk) == 0 ? 0 : ERR_CRYPTO;
}
