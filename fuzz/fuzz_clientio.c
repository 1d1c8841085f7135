/* libFuzzer harness: the parsers of the client protocols, the bytes that cross the
 * gateway. The first byte chooses what the rest is:
 *   0: a plaintext message for the shared parser (cio_parse);
 *   1: a sealed message fed as is to a client (byte 1, bit 0: a client that has every
 *      party's masks and made its input, else a fresh one);
 *   2: a party's plaintext message that the harness tags with that party's real key
 *      (the sender byte of the header chooses it) and seals to the client, so the
 *      fuzzer reaches every rule after authentication (order, repeats, positions,
 *      agreement, the receipt check);
 *   3: an INPUT message (header and body) that the harness tags for every party, then
 *      verified by party byte1 % N as the party side does.
 * Whatever the bytes, the code returns 0 or a negative ERR_* code, reads nothing past
 * the input (ASan), and accepts only messages of exactly the documented length. */
#include <stdbool.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include <sodium.h>

#include "clientio/clientio_int.h"
#include "err/err.h"

#define FZ_N 3
#define FZ_IN 2
#define FZ_OUT 3

static struct {
	bool ready;
	uint8_t cpk[CIO_KEY_BYTES], csk[CIO_KEY_BYTES];
	uint8_t ppk[FZ_N][CIO_KEY_BYTES], psk[FZ_N][CIO_KEY_BYTES];
	uint8_t key[FZ_N][CIO_TAG_BYTES];
	uint8_t session[CIO_ID_BYTES], gen[CIO_ID_BYTES];
	uint8_t *masks[FZ_N];
	size_t masks_len[FZ_N];
} F;

static void fz_setup(void)
{
	uint8_t seed[crypto_box_SEEDBYTES] = {0};
	if (F.ready)
		return;
	if (sodium_init() < 0)
		abort();
	seed[0] = 0xC1;
	crypto_box_seed_keypair(F.cpk, F.csk, seed);
	for (unsigned i = 0; i < FZ_N; i++) {
		seed[0] = (uint8_t)(0xB0 + i);
		crypto_box_seed_keypair(F.ppk[i], F.psk[i], seed);
		if (cio_auth_key(F.psk[i], F.cpk, F.cpk, F.ppk[i], F.key[i]) != 0)
			abort();
	}
	memset(F.session, 0x5E, sizeof F.session);
	memset(F.gen, 0x6E, sizeof F.gen);
	/* every party's MASKS (all shares 0), sealed once */
	for (unsigned i = 0; i < FZ_N; i++) {
		struct cio_hdr h = {.version = CIO_VERSION,
				    .type = CIO_MASKS,
				    .sender = (uint8_t)i,
				    .nparties = FZ_N,
				    .checks = CIO_CHECKS,
				    .count = FZ_IN + FZ_OUT + CIO_CHECKS,
				    .n_in = FZ_IN,
				    .n_out = FZ_OUT};
		memcpy(h.session, F.session, CIO_ID_BYTES);
		memcpy(h.generation, F.gen, CIO_ID_BYTES);
		size_t auth = CIO_HDR_BYTES + 8 * (size_t)h.count;
		uint8_t *p = calloc(1, auth + CIO_TAG_BYTES);
		if (!p)
			abort();
		cio_hdr_write(p, &h);
		cio_tag(p + auth, F.key[i], p, auth);
		if (cio_seal(p, auth + CIO_TAG_BYTES, F.cpk, &F.masks[i], &F.masks_len[i]) != 0)
			abort();
		free(p);
	}
	F.ready = true;
}

static struct cio_client *fz_client(bool prepared)
{
	struct cio_client_params prm = {
	    .nparties = FZ_N, .party_pk = F.ppk, .n_in = FZ_IN, .n_out = FZ_OUT};
	struct cio_client *c = NULL;
	memcpy(prm.session, F.session, CIO_ID_BYTES);
	memcpy(prm.generation, F.gen, CIO_ID_BYTES);
	memcpy(prm.client_sk, F.csk, CIO_KEY_BYTES);
	if (cio_client_new(&prm, &c) != 0)
		abort();
	if (prepared) {
		uint8_t *in = NULL;
		size_t len = 0;
		uint64_t x[FZ_IN] = {1, 2};
		for (unsigned i = 0; i < FZ_N; i++)
			if (cio_client_feed(c, F.masks[i], F.masks_len[i]) != 0)
				abort();
		if (cio_client_input(c, x, FZ_IN, &in, &len) != 0 ||
		    len != cio_input_bytes(FZ_N, FZ_IN))
			abort();
		free(in);
	}
	return c;
}

static void fz_drain(struct cio_client *c)
{
	uint64_t out[FZ_OUT];
	size_t n = 0;
	int rc = cio_client_take(c, out, FZ_OUT, &n);
	if (rc > 0 || n > FZ_OUT)
		abort();
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	if (size < 2)
		return 0;
	fz_setup();
	unsigned mode = data[0] % 4, arg = data[1];
	const uint8_t *d = data + 2;
	size_t n = size - 2;
	/* a copy of exactly n bytes, so that any over-read is caught by ASan */
	uint8_t *buf = malloc(n ? n : 1);
	if (!buf)
		abort();
	memcpy(buf, d, n);
	struct cio_hdr h;
	size_t auth = 0;
	int rc = 0;
	switch (mode) {
	case 0:
		rc = cio_parse(buf, n, &h, &auth);
		if (rc == 0) {
			size_t tags = h.type == CIO_INPUT ? (size_t)h.nparties * CIO_TAG_BYTES
							  : CIO_TAG_BYTES;
			if (auth + tags != n || auth != CIO_HDR_BYTES + cio_body_bytes(&h))
				abort(); /* accepted a message of the wrong length */
		}
		break;
	case 1: {
		struct cio_client *c = fz_client(arg & 1);
		rc = cio_client_feed(c, buf, n);
		fz_drain(c);
		cio_client_free(c);
		break;
	}
	case 2: {
		/* tag with the key of the party the header names, seal, feed */
		uint8_t *p = malloc(n + CIO_TAG_BYTES), *sealed = NULL;
		size_t slen = 0;
		if (!p)
			abort();
		memcpy(p, buf, n);
		unsigned who = n > 7 ? buf[7] % FZ_N : 0;
		cio_tag(p + n, F.key[who], p, n);
		if (cio_seal(p, n + CIO_TAG_BYTES, F.cpk, &sealed, &slen) != 0)
			abort();
		struct cio_client *c = fz_client(arg & 1);
		rc = cio_client_feed(c, sealed, slen);
		/* the same message again must never be accepted twice */
		if (rc == 0 && cio_client_feed(c, sealed, slen) == 0)
			abort();
		fz_drain(c);
		cio_client_free(c);
		free(sealed);
		free(p);
		break;
	}
	default: {
		struct cio_expect e = {.nparties = FZ_N, .n_in = FZ_IN, .n_out = FZ_OUT};
		memcpy(e.session, F.session, CIO_ID_BYTES);
		memcpy(e.generation, F.gen, CIO_ID_BYTES);
		unsigned me = arg % FZ_N;
		uint8_t *p = malloc(n + FZ_N * CIO_TAG_BYTES);
		if (!p)
			abort();
		memcpy(p, buf, n);
		for (unsigned i = 0; i < FZ_N; i++)
			cio_tag(p + n + i * CIO_TAG_BYTES, F.key[i], p, n);
		char why[CIO_WHY_BYTES];
		rc = cio_input_verify(&e, F.key[me], me, p, n + FZ_N * CIO_TAG_BYTES, &h, &auth, why,
				      sizeof why);
		if (rc == 0 && (auth != n || n != CIO_HDR_BYTES + 8 * FZ_IN + CIO_SEED_BYTES))
			abort();
		/* and untagged, as it came */
		int rc2 = cio_input_verify(&e, F.key[me], me, buf, n, &h, &auth, why, sizeof why);
		if (rc2 > 0)
			abort();
		free(p);
		break;
	}
	}
	if (rc > 0)
		abort(); /* 0 or a negative ERR_* code */
	free(buf);
	return 0;
}
