/* fuzz_mshare: the share-file reader on arbitrary bytes: the clear header and tensor table
 * parser, then the whole open-and-stream path with a fixed party key, and the key-file
 * parser. A refusal must come with a message that names the input; an accepted header
 * must be self-consistent and match the input's size; a file read to its end must hash
 * to the input's digest. Each input is also tried with its header checksum recomputed,
 * so that mutations reach the field and table checks behind the checksum (and the
 * authentication of the first chunk, which must then refuse them).
 *
 * The fixed key is FUZZ_SK below. The seeds in fuzz/corpus/fuzz_mshare/ are the key
 * files of that key (fuzz.x25519.key and .pub, seeds for the key parser too) and share
 * files of the tiny checkpoints in fuzz/corpus/fuzz_model/, made with
 *   mimir-model share --model fuzz/corpus/fuzz_model/<tiny>.bin --parties 2
 *     --to fuzz/corpus/fuzz_mshare/fuzz.x25519.pub,<any other .pub> --out DIR
 *     --chunk-bytes 64
 * so that party 0's file opens with FUZZ_SK and has many chunks. */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include <sodium.h>

#include "mshare/mshare.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

/* sk[i] = 0x4d + 7 i; its public key is in fuzz/corpus/fuzz_mshare/fuzz.x25519.pub. */
static void fuzz_sk(uint8_t sk[MSHARE_SK_BYTES])
{
	for (int i = 0; i < MSHARE_SK_BYTES; i++)
		sk[i] = (uint8_t)(0x4d + 7 * i);
}

static void check_refusal(const char *err)
{
	if (strncmp(err, "fuzz: ", 6) != 0)
		abort();
}

static void check_info(const struct mshare_info *in, size_t size)
{
	if (in->party >= in->nparties || in->nparties > MSHARE_MAX_PARTIES ||
	    in->ntensors == 0 || in->ntensors > MSHARE_MAX_TENSORS || in->file_bytes != size ||
	    in->total * 8 >= size || in->chunks == 0)
		abort();
	uint64_t off = 0;
	for (size_t i = 0; i < in->ntensors; i++) {
		const struct mshare_tensor *t = &in->tensors[i];
		if (t->offset != off ||
		    t->count != (uint64_t)t->layers * (uint64_t)t->rows * (uint64_t)t->cols)
			abort();
		off += t->count;
	}
	if (off != in->total)
		abort();
}

static void one(const uint8_t *data, size_t size)
{
	char err[512] = "";
	struct mshare_info in;
	if (mshare_parse_header(data, size, size, "fuzz", &in, err, sizeof err) != 0)
		check_refusal(err);
	else
		check_info(&in, size);

	uint8_t sk[MSHARE_SK_BYTES];
	fuzz_sk(sk);
	struct mshare_reader *r = NULL;
	err[0] = '\0';
	if (mshare_open_mem(data, size, "fuzz", sk, &r, err, sizeof err) != 0) {
		if (r)
			abort();
		check_refusal(err);
		return;
	}
	const struct mshare_info *ri = mshare_reader_info(r);
	check_info(ri, size);
	ring64_t buf[256];
	int rc = 0;
	/* Alternate tensor reads and raw reads so both paths run. */
	for (size_t k = 0; k < ri->ntensors && rc == 0; k++) {
		uint64_t left = ri->tensors[k].count;
		if (k % 2 == 0 && left <= 256) {
			rc = mshare_read_tensor(r, k, buf, 256, err, sizeof err);
			continue;
		}
		while (left > 0 && rc == 0) {
			size_t n = left < 256 ? (size_t)left : 256;
			rc = mshare_read(r, buf, n, err, sizeof err);
			left -= n;
		}
	}
	if (rc != 0) {
		check_refusal(err);
		if (mshare_reader_done(r))
			abort();
	} else {
		uint8_t d[MSHARE_DIGEST_BYTES], want[MSHARE_DIGEST_BYTES];
		if (!mshare_reader_done(r) || mshare_reader_digest(r, d) != 0)
			abort();
		crypto_generichash(want, sizeof want, data, size, NULL, 0);
		if (memcmp(d, want, sizeof d) != 0)
			abort();
	}
	mshare_reader_free(r);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	static bool init;
	if (!init) {
		if (sodium_init() < 0)
			abort();
		init = true;
	}
	one(data, size);

	/* The same bytes with a valid checksum over whatever header length they claim. */
	if (size >= 16) {
		uint32_t hb = (uint32_t)data[12] | (uint32_t)data[13] << 8 |
			      (uint32_t)data[14] << 16 | (uint32_t)data[15] << 24;
		if (hb >= 32 && hb <= size && hb <= MSHARE_HEADER_MAX) {
			uint8_t *copy = malloc(size);
			if (!copy)
				abort();
			memcpy(copy, data, size);
			crypto_generichash(copy + hb - 32, 32, copy, hb - 32, NULL, 0);
			if (memcmp(copy + hb - 32, data + hb - 32, 32) != 0)
				one(copy, size);
			free(copy);
		}
	}

	uint8_t key[32];
	char err[512];
	for (int secret = 0; secret < 2; secret++) {
		err[0] = '\0';
		if (mshare_key_parse((const char *)data, size, secret, key, "fuzz", err,
				     sizeof err) != 0)
			check_refusal(err);
	}
	return 0;
}
