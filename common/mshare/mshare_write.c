/* mshare_write: splitting a checkpoint into N sealed share files. The weights are
 * checked for fixed-point saturation before any file exists; then the N files are
 * written side by side, one chunk of weights at a time: the chunk is encoded, parties
 * 0..N-2 get fresh randombytes, party N-1 the encoding minus their sum, and each share
 * chunk is encrypted into its party's stream at once, so memory stays at a few chunks
 * whatever the model's size or N. Files are written under temporary names and linked into
 * place only when all N are complete: no partial split is ever visible under the final
 * names, and link() refuses to replace an existing file. Plaintext weights, shares and
 * stream states are wiped. */
#define _GNU_SOURCE
#define _FILE_OFFSET_BITS 64
#include "mshare/mshare.h"

#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include <sodium.h>

#include "err/err.h"
#include "mshare/mshare_internal.h"

struct party_out {
	int fd;
	bool tmp_made, linked;
	char tmp[PATH_MAX];
	crypto_secretstream_xchacha20poly1305_state st;
	crypto_generichash_state hash;
	uint8_t ad[MSHARE_PREFIX_MAX];
	size_t adlen;
};

static int write_all(int fd, const void *data, size_t len)
{
	const uint8_t *p = data;
	while (len > 0) {
		ssize_t w = write(fd, p, len);
		if (w < 0 && errno == EINTR)
			continue;
		if (w <= 0)
			return -1;
		p += w;
		len -= (size_t)w;
	}
	return 0;
}

/* A walk over the weights in payload order. */
struct cursor {
	const struct model_tensor *t;
	size_t nt, i;
	size_t off;
};

static void cursor_take(struct cursor *c, unsigned f, ring64_t *x, size_t n)
{
	while (n > 0) {
		const struct model_tensor *t = &c->t[c->i];
		size_t take = t->count - c->off;
		if (take > n)
			take = n;
		for (size_t j = 0; j < take; j++)
			ring_fxp_encode((double)t->data[c->off + j], f, &x[j], NULL);
		x += take;
		n -= take;
		c->off += take;
		if (c->off == t->count)
			c->i++, c->off = 0;
	}
}

/* Every weight must encode without saturation: the largest magnitude f leaves is just
 * under 2^(63-f). */
static int check_range(const struct model_tensor *t, size_t nt, unsigned f, char *err,
		       size_t errcap)
{
	for (size_t k = 0; k < nt; k++) {
		for (size_t i = 0; i < t[k].count; i++) {
			ring64_t x;
			bool sat = false;
			int rc = ring_fxp_encode((double)t[k].data[i], f, &x, &sat);
			if (rc == 0 && !sat)
				continue;
			size_t per = (size_t)t[k].rows * (size_t)t[k].cols;
			mshare_seterr(err, errcap,
				      "weight %s at layer %zu row %zu col %zu (element %zu) is %g, "
				      "beyond the fixed-point range with f=%u (|w| < 2^%u); "
				      "refusing to clip it (fewer fractional bits widen the range)",
				      t[k].name, i / per, i % per / (size_t)t[k].cols,
				      i % (size_t)t[k].cols, i, (double)t[k].data[i], f, 63 - f);
			return ERR_RANGE;
		}
	}
	return 0;
}

static int check_opts(const struct mshare_split_opts *o, uint32_t chunk, char *err,
		      size_t errcap)
{
	if (o->nparties < MSHARE_MIN_PARTIES || o->nparties > MSHARE_MAX_PARTIES) {
		mshare_seterr(err, errcap, "%u parties; between %d and %d are supported",
			      o->nparties, MSHARE_MIN_PARTIES, MSHARE_MAX_PARTIES);
		return ERR_RANGE;
	}
	if (!ring_fxp_valid_f(o->frac_bits)) {
		mshare_seterr(err, errcap, "%u fractional bits; between %d and %d are supported",
			      o->frac_bits, RING_FXP_MIN_F, RING_FXP_MAX_F);
		return ERR_RANGE;
	}
	if (chunk < MSHARE_CHUNK_MIN || chunk > MSHARE_CHUNK_MAX || chunk % 8 != 0) {
		mshare_seterr(err, errcap, "chunk size %u is not a multiple of 8 in %u..%u", chunk,
			      MSHARE_CHUNK_MIN, MSHARE_CHUNK_MAX);
		return ERR_RANGE;
	}
	for (unsigned i = 0; i < o->nparties; i++) {
		if (!o->paths[i] || !*o->paths[i] || strlen(o->paths[i]) + 20 > PATH_MAX) {
			mshare_seterr(err, errcap, "output path %u is empty or too long", i);
			return ERR_INVALID;
		}
		for (unsigned j = 0; j < i; j++) {
			/* One key for two parties would hand one holder two shares: with
			 * N = 2 that is the whole model. */
			if (memcmp(o->recipients[i], o->recipients[j], MSHARE_PK_BYTES) == 0) {
				mshare_seterr(err, errcap,
					      "parties %u and %u have the same public key; each "
					      "party needs its own",
					      j, i);
				return ERR_INVALID;
			}
			if (strcmp(o->paths[i], o->paths[j]) == 0) {
				mshare_seterr(err, errcap, "parties %u and %u share the path %s",
					      j, i, o->paths[i]);
				return ERR_INVALID;
			}
		}
		struct stat st;
		if (lstat(o->paths[i], &st) == 0) {
			mshare_seterr(err, errcap, "%s already exists; refusing to overwrite it",
				      o->paths[i]);
			return ERR_CONFLICT;
		}
	}
	return 0;
}

/* Creates party p's temporary file and writes everything before the first chunk. */
static int start_party(struct party_out *po, const struct mshare_info *base, unsigned p,
		       const uint8_t pk[MSHARE_PK_BYTES], const char *path, char *err,
		       size_t errcap)
{
	struct mshare_info info = *base;
	info.party = p;
	memcpy(info.recipient, pk, MSHARE_PK_BYTES);
	snprintf(po->tmp, sizeof po->tmp, "%s.partial-XXXXXX", path);
	po->fd = mkostemp(po->tmp, O_CLOEXEC); /* mode 0600 */
	if (po->fd < 0) {
		mshare_seterr(err, errcap, "cannot create a file beside %s: %s", path,
			      strerror(errno));
		return ERR_IO;
	}
	po->tmp_made = true;

	uint8_t key[crypto_secretstream_xchacha20poly1305_KEYBYTES];
	size_t hl = mshare_header_encode(&info, po->ad);
	uint8_t *sealed = po->ad + hl;
	int rc = 0;
	crypto_secretstream_xchacha20poly1305_keygen(key);
	if (crypto_box_seal(sealed, key, sizeof key, pk) != 0) {
		mshare_seterr(err, errcap, "the public key of party %u is not a usable X25519 key",
			      p);
		rc = ERR_INVALID;
		goto out;
	}
	crypto_secretstream_xchacha20poly1305_init_push(&po->st, sealed + MSHARE_SEALED_KEY_BYTES,
							key);
	po->adlen = hl + MSHARE_SEALED_KEY_BYTES + MSHARE_STREAM_HEADER_BYTES;
	crypto_generichash_init(&po->hash, NULL, 0, MSHARE_DIGEST_BYTES);
	crypto_generichash_update(&po->hash, po->ad, po->adlen);
	if (write_all(po->fd, po->ad, po->adlen) != 0) {
		mshare_seterr(err, errcap, "cannot write %s: %s", po->tmp, strerror(errno));
		rc = ERR_IO;
	}
out:
	sodium_memzero(key, sizeof key);
	return rc;
}

static int push_chunk(struct party_out *po, uint8_t *cbuf, const uint8_t *m, size_t mlen,
		      bool first, bool last, char *err, size_t errcap)
{
	unsigned long long clen = 0;
	crypto_secretstream_xchacha20poly1305_push(
		&po->st, cbuf, &clen, m, mlen, first ? po->ad : NULL, first ? po->adlen : 0,
		last ? crypto_secretstream_xchacha20poly1305_TAG_FINAL
		     : crypto_secretstream_xchacha20poly1305_TAG_MESSAGE);
	crypto_generichash_update(&po->hash, cbuf, (size_t)clen);
	if (write_all(po->fd, cbuf, (size_t)clen) != 0) {
		mshare_seterr(err, errcap, "cannot write %s: %s", po->tmp, strerror(errno));
		return ERR_IO;
	}
	return 0;
}

int mshare_split(const struct model *m, const struct mshare_split_opts *o,
		 struct mshare_split_result *res, char *err, size_t errcap)
{
	if (!m || !o || !o->recipients || !o->paths || !res) {
		mshare_seterr(err, errcap, "split: invalid arguments");
		return ERR_INVALID;
	}
	if (sodium_init() < 0) {
		mshare_seterr(err, errcap, "cannot initialise libsodium");
		return ERR_CRYPTO;
	}
	uint32_t chunk = o->chunk_bytes ? o->chunk_bytes : MSHARE_CHUNK_DEFAULT;
	int rc = check_opts(o, chunk, err, errcap);
	if (rc)
		return rc;
	const unsigned N = o->nparties, f = o->frac_bits;
	const struct model_config *c = model_config(m);

	/* The model's tensors in payload order must be the table the format implies. */
	struct mshare_info base;
	memset(&base, 0, sizeof base);
	struct model_tensor mt[MODEL_T_COUNT];
	size_t nt = 0;
	mshare_table(c, base.tensors, &base.ntensors);
	for (int id = 0; id < MODEL_T_COUNT; id++) {
		struct model_tensor t;
		if (model_tensor(m, (enum model_tensor_id)id, &t) != 0 || t.alias)
			continue;
		const struct mshare_tensor *w = &base.tensors[nt];
		if (nt >= base.ntensors || strcmp(t.name, w->name) != 0 || t.count != w->count ||
		    t.layers != w->layers || t.rows != w->rows || t.cols != w->cols) {
			mshare_seterr(err, errcap, "tensor %s does not match the share format's "
						   "table", t.name);
			return ERR_INTERNAL;
		}
		mt[nt++] = t;
	}
	if (nt != base.ntensors) {
		mshare_seterr(err, errcap, "the model has %zu tensors, the format expects %zu", nt,
			      base.ntensors);
		return ERR_INTERNAL;
	}
	if ((rc = check_range(mt, nt, f, err, errcap)) != 0)
		return rc;

	base.version = MSHARE_VERSION;
	base.nparties = N;
	base.frac_bits = f;
	base.chunk_bytes = chunk;
	base.config = *c;
	mshare_config_raw(c, base.config_raw);
	base.total = model_param_count(c);
	base.file_bytes = mshare_file_size(base.total, chunk, base.ntensors, &base.chunks);
	randombytes_buf(base.model_id, sizeof base.model_id);

	const size_t E = chunk / 8; /* shares per chunk */
	struct party_out *po = calloc(N, sizeof *po);
	ring64_t *x = malloc(E * sizeof *x), *acc = malloc(E * sizeof *acc);
	uint8_t *sbuf = malloc(chunk), *cbuf = malloc(chunk + MSHARE_CHUNK_OVERHEAD);
	crypto_generichash_state wh;
	crypto_generichash_init(&wh, NULL, 0, MSHARE_DIGEST_BYTES);
	if (!po || !x || !acc || !sbuf || !cbuf) {
		mshare_seterr(err, errcap, "out of memory");
		rc = ERR_NOMEM;
		goto out;
	}
	for (unsigned p = 0; p < N; p++)
		po[p].fd = -1;
	for (unsigned p = 0; p < N; p++)
		if ((rc = start_party(&po[p], &base, p, o->recipients[p], o->paths[p], err,
				      errcap)) != 0)
			goto out;

	struct cursor cur = {.t = mt, .nt = nt};
	uint64_t done = 0;
	for (uint64_t k = 0; k < base.chunks; k++) {
		size_t n = base.total - done < E ? (size_t)(base.total - done) : E;
		bool first = k == 0, last = k + 1 == base.chunks;
		cursor_take(&cur, f, x, n);
		for (size_t j = 0; j < n; j++)
			ring64_store(sbuf + 8 * j, x[j]);
		crypto_generichash_update(&wh, sbuf, n * 8);
		memset(acc, 0, n * sizeof *acc);
		for (unsigned p = 0; p + 1 < N; p++) {
			randombytes_buf(sbuf, n * 8);
			for (size_t j = 0; j < n; j++)
				acc[j] += ring64_load(sbuf + 8 * j);
			if ((rc = push_chunk(&po[p], cbuf, sbuf, n * 8, first, last, err,
					     errcap)) != 0)
				goto out;
		}
		for (size_t j = 0; j < n; j++)
			ring64_store(sbuf + 8 * j, x[j] - acc[j]);
		if ((rc = push_chunk(&po[N - 1], cbuf, sbuf, n * 8, first, last, err, errcap)) != 0)
			goto out;
		done += n;
		if (o->progress)
			o->progress(o->progress_ctx, done, base.total);
	}

	for (unsigned p = 0; p < N; p++) {
		int e = 0;
		if (fsync(po[p].fd) != 0)
			e = errno;
		if (close(po[p].fd) != 0 && !e)
			e = errno;
		po[p].fd = -1;
		if (e) {
			mshare_seterr(err, errcap, "cannot write %s: %s", po[p].tmp, strerror(e));
			rc = ERR_IO;
			goto out;
		}
		crypto_generichash_final(&po[p].hash, res->file_digest[p], MSHARE_DIGEST_BYTES);
	}
	for (unsigned p = 0; p < N; p++) {
		if (link(po[p].tmp, o->paths[p]) != 0) {
			int e = errno;
			if (e == EEXIST) {
				mshare_seterr(err, errcap,
					      "%s appeared while sharing; refusing to overwrite it",
					      o->paths[p]);
				rc = ERR_CONFLICT;
			} else {
				mshare_seterr(err, errcap, "cannot create %s: %s", o->paths[p],
					      strerror(e));
				rc = ERR_IO;
			}
			goto out;
		}
		po[p].linked = true;
	}
	crypto_generichash_final(&wh, res->weights_digest, sizeof res->weights_digest);
	memcpy(res->model_id, base.model_id, MSHARE_ID_BYTES);
	res->file_bytes = base.file_bytes;
	rc = 0;
out:
	if (po) {
		for (unsigned p = 0; p < N; p++) {
			if (po[p].fd >= 0)
				close(po[p].fd);
			if (po[p].tmp_made)
				unlink(po[p].tmp);
			if (rc && po[p].linked)
				unlink(o->paths[p]);
		}
		sodium_memzero(po, N * sizeof *po);
	}
	free(po);
	if (x)
		sodium_memzero(x, E * sizeof *x);
	if (acc)
		sodium_memzero(acc, E * sizeof *acc);
	if (sbuf)
		sodium_memzero(sbuf, chunk);
	sodium_memzero(&wh, sizeof wh);
	free(x);
	free(acc);
	free(sbuf);
	free(cbuf);
	return rc;
}
