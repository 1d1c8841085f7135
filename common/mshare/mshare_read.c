/* mshare_read: a party opening its share file. The clear header is parsed and checked
 * against the real size first (mshare_format.c); the secret key must belong to the
 * recipient named there; the sealed file key is opened; then the chunks are decrypted
 * one at a time into one chunk-sized buffer, the first with every byte before it as
 * additional data, so that nothing the header said is used unauthenticated past
 * mshare_open. The reader hashes every byte it reads, so a fully read file yields the
 * digest a registry can pin. A failure poisons the reader: a caller cannot skip a bad
 * chunk and carry on. Plaintext shares and the stream state are wiped. */
#define _FILE_OFFSET_BITS 64
#include "mshare/mshare.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#include <sodium.h>

#include "err/err.h"
#include "mshare/mshare_internal.h"

_Static_assert(MSHARE_SEALED_KEY_BYTES ==
		       crypto_box_SEALBYTES + crypto_secretstream_xchacha20poly1305_KEYBYTES,
	       "sealed key size");
_Static_assert(MSHARE_STREAM_HEADER_BYTES == crypto_secretstream_xchacha20poly1305_HEADERBYTES,
	       "stream header size");
_Static_assert(MSHARE_CHUNK_OVERHEAD == crypto_secretstream_xchacha20poly1305_ABYTES,
	       "chunk overhead");

/* A sequential byte source: a memory image or an open file. */
struct src {
	FILE *f;
	const uint8_t *mem;
	size_t len, pos;
};

struct mshare_reader {
	struct mshare_info info;
	struct src src;
	crypto_secretstream_xchacha20poly1305_state st;
	crypto_generichash_state hash;
	uint8_t *plain;  /* the current chunk's shares (wiped) */
	uint8_t *cipher; /* the current chunk as read */
	size_t plain_cap, plain_len, plain_pos;
	uint64_t next_chunk; /* chunks decrypted so far */
	uint64_t consumed;   /* shares handed out */
	int failed;          /* sticky error */
	bool done;
	uint8_t digest[MSHARE_DIGEST_BYTES];
};

static int src_read(struct src *s, void *dst, size_t n)
{
	if (s->f)
		return fread(dst, 1, n, s->f) == n ? 0 : -1;
	if (n > s->len - s->pos)
		return -1;
	memcpy(dst, s->mem + s->pos, n);
	s->pos += n;
	return 0;
}

static bool src_at_end(struct src *s)
{
	if (s->f)
		return fgetc(s->f) == EOF && !ferror(s->f);
	return s->pos == s->len;
}

static int fail(struct mshare_reader *r, int rc)
{
	r->failed = rc;
	sodium_memzero(r->plain, r->plain_cap);
	r->plain_len = r->plain_pos = 0;
	return rc;
}

/* Reads and decrypts chunk r->next_chunk into r->plain; ad is the first chunk's. */
static int pull_chunk(struct mshare_reader *r, const uint8_t *ad, size_t adlen, char *err,
		      size_t errcap)
{
	const struct mshare_info *in = &r->info;
	uint64_t k = r->next_chunk, payload = in->total * 8;
	uint64_t left = payload - k * in->chunk_bytes;
	size_t plen = left < in->chunk_bytes ? (size_t)left : in->chunk_bytes;
	size_t clen = plen + MSHARE_CHUNK_OVERHEAD;
	if (src_read(&r->src, r->cipher, clen) != 0) {
		mshare_seterr(err, errcap, "%s: read error in chunk %llu of %llu", in->name,
			      (unsigned long long)k + 1, (unsigned long long)in->chunks);
		return fail(r, ERR_IO);
	}
	crypto_generichash_update(&r->hash, r->cipher, clen);
	unsigned long long mlen = 0;
	unsigned char tag = 0;
	if (crypto_secretstream_xchacha20poly1305_pull(&r->st, r->plain, &mlen, &tag, r->cipher,
						       clen, ad, adlen) != 0) {
		if (k == 0)
			mshare_seterr(err, errcap,
				      "%s: the first chunk does not authenticate: the header or the "
				      "data was changed",
				      in->name);
		else
			mshare_seterr(err, errcap,
				      "%s: chunk %llu of %llu does not authenticate (damaged, "
				      "reordered or replaced)",
				      in->name, (unsigned long long)k + 1,
				      (unsigned long long)in->chunks);
		return fail(r, ERR_CRYPTO);
	}
	bool last = k + 1 == in->chunks;
	if (mlen != plen ||
	    tag != (last ? crypto_secretstream_xchacha20poly1305_TAG_FINAL
			 : crypto_secretstream_xchacha20poly1305_TAG_MESSAGE)) {
		if (last)
			mshare_seterr(err, errcap,
				      "%s: the last chunk is not tagged final: the stream was cut",
				      in->name);
		else
			mshare_seterr(err, errcap,
				      "%s: chunk %llu of %llu ends the stream early (tag %u)",
				      in->name, (unsigned long long)k + 1,
				      (unsigned long long)in->chunks, tag);
		return fail(r, ERR_CRYPTO);
	}
	r->next_chunk++;
	r->plain_len = plen;
	r->plain_pos = 0;
	if (last) {
		if (!src_at_end(&r->src)) {
			mshare_seterr(err, errcap, "%s: data after the final chunk", in->name);
			return fail(r, ERR_PARSE);
		}
		crypto_generichash_final(&r->hash, r->digest, sizeof r->digest);
	}
	return 0;
}

static int open_src(struct mshare_reader *r, uint64_t size, const char *name,
		    const uint8_t sk[MSHARE_SK_BYTES], char *err, size_t errcap)
{
	uint8_t pre[MSHARE_PREFIX_MAX];
	uint8_t pk[MSHARE_PK_BYTES], key[crypto_secretstream_xchacha20poly1305_KEYBYTES];
	int rc = 0;

	/* The fixed part says how long the whole header is; read no more than the
	 * largest valid header, and let the parser name whatever is wrong. */
	size_t want = size < MSHARE_FIXED_BYTES ? (size_t)size : MSHARE_FIXED_BYTES;
	if (src_read(&r->src, pre, want) != 0)
		goto io;
	size_t have = want;
	if (have == MSHARE_FIXED_BYTES) {
		uint32_t hb = mshare_ld32(pre + MSHARE_OFF_HEADER_BYTES);
		if (hb > MSHARE_HEADER_MAX)
			hb = MSHARE_HEADER_MAX;
		if (hb > size)
			hb = (uint32_t)size;
		if (hb > have) {
			if (src_read(&r->src, pre + have, hb - have) != 0)
				goto io;
			have = hb;
		}
	}
	if ((rc = mshare_parse_header(pre, have, size, name, &r->info, err, errcap)) != 0)
		goto out;
	struct mshare_info *in = &r->info;
	size_t adlen = in->header_bytes + MSHARE_SEALED_KEY_BYTES + MSHARE_STREAM_HEADER_BYTES;
	if (src_read(&r->src, pre + in->header_bytes, adlen - in->header_bytes) != 0)
		goto io;
	crypto_generichash_init(&r->hash, NULL, 0, MSHARE_DIGEST_BYTES);
	crypto_generichash_update(&r->hash, pre, adlen);

	if (mshare_public_from_secret(sk, pk) != 0 ||
	    memcmp(pk, in->recipient, MSHARE_PK_BYTES) != 0) {
		char a[17], b[17];
		mshare_seterr(err, errcap,
			      "%s: sealed to the public key %s..., not to this key (%s...): "
			      "this file is another party's",
			      name, mshare_hex(in->recipient, 8, a, sizeof a),
			      mshare_hex(pk, 8, b, sizeof b));
		rc = ERR_FORBIDDEN;
		goto out;
	}
	const uint8_t *sealed = pre + in->header_bytes;
	if (crypto_box_seal_open(key, sealed, MSHARE_SEALED_KEY_BYTES, pk, sk) != 0) {
		mshare_seterr(err, errcap,
			      "%s: the file key does not unseal with this key: the file is "
			      "damaged or was not made for this key",
			      name);
		rc = ERR_CRYPTO;
		goto out;
	}
	if (crypto_secretstream_xchacha20poly1305_init_pull(&r->st, sealed + MSHARE_SEALED_KEY_BYTES,
							    key) != 0) {
		mshare_seterr(err, errcap, "%s: bad stream header", name);
		rc = ERR_CRYPTO;
		goto out;
	}
	uint64_t payload = in->total * 8;
	r->plain_cap = payload < in->chunk_bytes ? (size_t)payload : in->chunk_bytes;
	r->plain = malloc(r->plain_cap ? r->plain_cap : 1);
	r->cipher = malloc(r->plain_cap + MSHARE_CHUNK_OVERHEAD);
	if (!r->plain || !r->cipher) {
		mshare_seterr(err, errcap, "%s: out of memory", name);
		rc = ERR_NOMEM;
		goto out;
	}
	rc = pull_chunk(r, pre, adlen, err, errcap);
	goto out;
io:
	mshare_seterr(err, errcap, "%s: read error in the header", name);
	rc = ERR_IO;
out:
	sodium_memzero(key, sizeof key);
	return rc;
}

static int open_common(struct src s, uint64_t size, const char *name,
		       const uint8_t sk[MSHARE_SK_BYTES], struct mshare_reader **out, char *err,
		       size_t errcap)
{
	struct mshare_reader *r = sodium_init() < 0 ? NULL : calloc(1, sizeof *r);
	if (!r) {
		mshare_seterr(err, errcap, "%s: out of memory", name);
		if (s.f)
			fclose(s.f);
		return ERR_NOMEM;
	}
	r->src = s;
	int rc = open_src(r, size, name, sk, err, errcap);
	if (rc) {
		mshare_reader_free(r);
		return rc;
	}
	*out = r;
	return 0;
}

int mshare_open_mem(const void *buf, size_t len, const char *name,
		    const uint8_t sk[MSHARE_SK_BYTES], struct mshare_reader **out, char *err,
		    size_t errcap)
{
	if (!name || !*name)
		name = "share file";
	if (!out || !sk || (!buf && len)) {
		mshare_seterr(err, errcap, "%s: invalid arguments", name);
		return ERR_INVALID;
	}
	*out = NULL;
	struct src s = {.mem = buf, .len = len};
	return open_common(s, len, name, sk, out, err, errcap);
}

int mshare_open(const char *path, const uint8_t sk[MSHARE_SK_BYTES], struct mshare_reader **out,
		char *err, size_t errcap)
{
	if (!path || !out || !sk) {
		mshare_seterr(err, errcap, "share file: invalid arguments");
		return ERR_INVALID;
	}
	*out = NULL;
	FILE *f = fopen(path, "rbe");
	if (!f) {
		int e = errno;
		mshare_seterr(err, errcap, "%s: cannot open: %s", path, strerror(e));
		return e == ENOENT ? ERR_NOT_FOUND : ERR_IO;
	}
	struct stat st;
	if (fstat(fileno(f), &st) != 0 || !S_ISREG(st.st_mode)) {
		mshare_seterr(err, errcap, "%s: not a regular file", path);
		fclose(f);
		return ERR_IO;
	}
	struct src s = {.f = f};
	return open_common(s, (uint64_t)st.st_size, path, sk, out, err, errcap);
}

const struct mshare_info *mshare_reader_info(const struct mshare_reader *r)
{
	return r ? &r->info : NULL;
}

int mshare_read(struct mshare_reader *r, ring64_t *out, size_t n, char *err, size_t errcap)
{
	if (!r || (!out && n)) {
		mshare_seterr(err, errcap, "share file: invalid arguments");
		return ERR_INVALID;
	}
	if (r->failed) {
		mshare_seterr(err, errcap, "%s: an earlier read failed; the file cannot be used",
			      r->info.name);
		return r->failed;
	}
	if (n > r->info.total - r->consumed) {
		mshare_seterr(err, errcap, "%s: %zu shares asked, only %llu left", r->info.name, n,
			      (unsigned long long)(r->info.total - r->consumed));
		return ERR_RANGE;
	}
	while (n > 0) {
		if (r->plain_pos == r->plain_len) {
			int rc = pull_chunk(r, NULL, 0, err, errcap);
			if (rc)
				return rc;
		}
		size_t avail = (r->plain_len - r->plain_pos) / 8;
		size_t take = n < avail ? n : avail;
		const uint8_t *p = r->plain + r->plain_pos;
		for (size_t i = 0; i < take; i++)
			out[i] = ring64_load(p + 8 * i);
		sodium_memzero(r->plain + r->plain_pos, take * 8);
		r->plain_pos += take * 8;
		r->consumed += take;
		out += take;
		n -= take;
	}
	if (r->consumed == r->info.total)
		r->done = true; /* the final chunk was pulled, its tag and the end checked */
	return 0;
}

int mshare_read_tensor(struct mshare_reader *r, size_t index, ring64_t *out, size_t cap,
		       char *err, size_t errcap)
{
	if (!r) {
		mshare_seterr(err, errcap, "share file: invalid arguments");
		return ERR_INVALID;
	}
	const struct mshare_info *in = &r->info;
	if (index >= in->ntensors) {
		mshare_seterr(err, errcap, "%s: no tensor %zu (the file has %zu)", in->name, index,
			      in->ntensors);
		return ERR_RANGE;
	}
	const struct mshare_tensor *t = &in->tensors[index];
	if (r->consumed != t->offset) {
		mshare_seterr(err, errcap,
			      "%s: tensor %zu (%s) asked out of order: the file is read as a "
			      "stream, %llu shares are read so far",
			      in->name, index, t->name, (unsigned long long)r->consumed);
		return ERR_INVALID;
	}
	if (cap < t->count) {
		mshare_seterr(err, errcap, "%s: tensor %s has %llu shares, the buffer holds %zu",
			      in->name, t->name, (unsigned long long)t->count, cap);
		return ERR_RANGE;
	}
	return mshare_read(r, out, (size_t)t->count, err, errcap);
}

bool mshare_reader_done(const struct mshare_reader *r) { return r && r->done && !r->failed; }

int mshare_reader_digest(const struct mshare_reader *r, uint8_t out[MSHARE_DIGEST_BYTES])
{
	if (!mshare_reader_done(r) || !out)
		return ERR_INVALID;
	memcpy(out, r->digest, MSHARE_DIGEST_BYTES);
	return 0;
}

void mshare_reader_free(struct mshare_reader *r)
{
	if (!r)
		return;
	if (r->plain) {
		sodium_memzero(r->plain, r->plain_cap);
		free(r->plain);
	}
	free(r->cipher);
	if (r->src.f)
		fclose(r->src.f);
	sodium_memzero(&r->st, sizeof r->st);
	sodium_memzero(r, sizeof *r);
	free(r);
}

/* ---- a whole file in memory ----------------------------------------------------------- */

struct mshare_shares {
	struct mshare_info info;
	ring64_t *v; /* info.total shares, payload order (wiped) */
};

int mshare_load(const char *path, const uint8_t sk[MSHARE_SK_BYTES], struct mshare_shares **out,
		char *err, size_t errcap)
{
	if (!out) {
		mshare_seterr(err, errcap, "share file: invalid arguments");
		return ERR_INVALID;
	}
	*out = NULL;
	struct mshare_reader *r = NULL;
	struct mshare_shares *s = NULL;
	int rc = mshare_open(path, sk, &r, err, errcap);
	if (rc)
		return rc;
	s = calloc(1, sizeof *s);
	/* total was checked against the real file size: this is at most the file's size. */
	if (!s || r->info.total > SIZE_MAX / sizeof(ring64_t) ||
	    !(s->v = malloc((size_t)r->info.total * sizeof(ring64_t)))) {
		mshare_seterr(err, errcap, "%s: out of memory for %llu shares", path,
			      (unsigned long long)r->info.total);
		rc = ERR_NOMEM;
		goto out;
	}
	s->info = r->info;
	if ((rc = mshare_read(r, s->v, (size_t)s->info.total, err, errcap)) != 0)
		goto out;
	if (!mshare_reader_done(r)) {
		mshare_seterr(err, errcap, "%s: the stream did not end where expected", path);
		rc = ERR_INTERNAL;
		goto out;
	}
	*out = s;
	s = NULL;
out:
	mshare_reader_free(r);
	mshare_shares_free(s);
	return rc;
}

const struct mshare_info *mshare_shares_info(const struct mshare_shares *s)
{
	return s ? &s->info : NULL;
}

int mshare_shares_tensor(const struct mshare_shares *s, enum model_tensor_id id,
			 const ring64_t **data, size_t *count)
{
	if (!s || !data || !count || (int)id < 0 || id >= MODEL_T_COUNT)
		return ERR_RANGE;
	enum model_tensor_id want =
		id == MODEL_T_WCLS && s->info.config.shared_classifier ? MODEL_T_TOKEN_EMBEDDING : id;
	for (size_t i = 0; i < s->info.ntensors; i++) {
		const struct mshare_tensor *t = &s->info.tensors[i];
		if (t->id != want)
			continue;
		*data = s->v + t->offset;
		*count = (size_t)t->count;
		return 0;
	}
	return ERR_RANGE;
}

void mshare_shares_free(struct mshare_shares *s)
{
	if (!s)
		return;
	if (s->v) {
		sodium_memzero(s->v, (size_t)s->info.total * sizeof(ring64_t));
		free(s->v);
	}
	free(s);
}
