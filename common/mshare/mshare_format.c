/* mshare_format: the clear header of a share file, both ways. The writer encodes it from
 * a config; readers parse bytes from outside and trust nothing: magic, version and
 * length first, then the checksum (so accidental damage is named as such), then every
 * field against its range, the tensor table against the table the config implies, and
 * the real file size against the size the header implies, all before anything is
 * allocated. The checksum only detects accidents; the header is authenticated as the
 * additional data of the first encrypted chunk (mshare_read.c). */
#define _FILE_OFFSET_BITS 64
#include "mshare/mshare.h"

#include <errno.h>
#include <fcntl.h>
#include <stdarg.h>
#include <stdio.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include <sodium.h>

#include "err/err.h"
#include "mshare/mshare_internal.h"

/* llama2.c's names, in checkpoint order (as model_tensor() reports them; a unit test
 * checks the two agree). */
static const char *const tensor_names[MODEL_T_COUNT] = {
	"token_embedding_table",
	"rms_att_weight",
	"wq",
	"wk",
	"wv",
	"wo",
	"rms_ffn_weight",
	"w1",
	"w2",
	"w3",
	"rms_final_weight",
	"wcls",
};

void mshare_seterr(char *err, size_t cap, const char *fmt, ...)
{
	if (!err || cap == 0)
		return;
	va_list ap;
	va_start(ap, fmt);
	vsnprintf(err, cap, fmt, ap);
	va_end(ap);
}

const char *mshare_hex(const uint8_t *bytes, size_t n, char *buf, size_t cap)
{
	if (!buf || cap == 0)
		return buf;
	if (cap < 2 * n + 1)
		n = (cap - 1) / 2;
	sodium_bin2hex(buf, 2 * n + 1, bytes, n);
	return buf;
}

static void shape_of(const struct model_config *c, int id, int *layers, int *rows, int *cols)
{
	int L = 1, r = 1, k = c->dim;
	switch (id) {
	case MODEL_T_TOKEN_EMBEDDING:
	case MODEL_T_WCLS: r = c->vocab_size; break;
	case MODEL_T_RMS_ATT:
	case MODEL_T_RMS_FFN: L = c->n_layers; break;
	case MODEL_T_WQ:
	case MODEL_T_WO: L = c->n_layers, r = c->dim; break;
	case MODEL_T_WK:
	case MODEL_T_WV: L = c->n_layers, r = c->kv_dim; break;
	case MODEL_T_W1:
	case MODEL_T_W3: L = c->n_layers, r = c->hidden_dim; break;
	case MODEL_T_W2: L = c->n_layers, r = c->dim, k = c->hidden_dim; break;
	default: break; /* MODEL_T_RMS_FINAL: one dim-vector */
	}
	*layers = L, *rows = r, *cols = k;
}

void mshare_table(const struct model_config *c, struct mshare_tensor out[MSHARE_MAX_TENSORS],
		  size_t *n)
{
	size_t k = 0;
	uint64_t off = 0;
	for (int id = 0; id < MODEL_T_COUNT; id++) {
		if (id == MODEL_T_WCLS && c->shared_classifier)
			continue;
		struct mshare_tensor *t = &out[k++];
		memset(t, 0, sizeof *t);
		snprintf(t->name, sizeof t->name, "%s", tensor_names[id]);
		t->id = (enum model_tensor_id)id;
		shape_of(c, id, &t->layers, &t->rows, &t->cols);
		t->offset = off;
		t->count = (uint64_t)t->layers * (uint64_t)t->rows * (uint64_t)t->cols;
		off += t->count;
	}
	*n = k;
}

uint64_t mshare_file_size(uint64_t total, uint32_t chunk_bytes, size_t ntensors, uint64_t *chunks)
{
	uint64_t payload = total * 8;
	uint64_t nc = (payload + chunk_bytes - 1) / chunk_bytes;
	if (nc == 0)
		nc = 1; /* an empty payload is still one (FINAL) chunk */
	if (chunks)
		*chunks = nc;
	return (uint64_t)MSHARE_FIXED_BYTES + (uint64_t)ntensors * MSHARE_ENTRY_BYTES + 32 +
	       MSHARE_SEALED_KEY_BYTES + MSHARE_STREAM_HEADER_BYTES + payload +
	       nc * MSHARE_CHUNK_OVERHEAD;
}

void mshare_config_raw(const struct model_config *c, uint8_t out[MODEL_HEADER_BYTES])
{
	int32_t h[7] = {c->dim,        c->hidden_dim, c->n_layers, c->n_heads, c->n_kv_heads,
			c->shared_classifier ? c->vocab_size : -c->vocab_size, c->seq_len};
	for (int i = 0; i < 7; i++)
		mshare_st32(out + 4 * i, (uint32_t)h[i]);
}

size_t mshare_header_encode(const struct mshare_info *info, uint8_t buf[MSHARE_HEADER_MAX])
{
	size_t len = MSHARE_FIXED_BYTES + info->ntensors * MSHARE_ENTRY_BYTES + 32;
	memset(buf, 0, len);
	memcpy(buf + MSHARE_OFF_MAGIC, MSHARE_MAGIC, 8);
	mshare_st16(buf + MSHARE_OFF_VERSION, (uint16_t)info->version);
	mshare_st16(buf + MSHARE_OFF_SCHEME, MSHARE_SCHEME_ADDITIVE64);
	mshare_st32(buf + MSHARE_OFF_HEADER_BYTES, (uint32_t)len);
	memcpy(buf + MSHARE_OFF_MODEL_ID, info->model_id, MSHARE_ID_BYTES);
	mshare_st32(buf + MSHARE_OFF_PARTY, info->party);
	mshare_st32(buf + MSHARE_OFF_NPARTIES, info->nparties);
	mshare_st32(buf + MSHARE_OFF_FRAC_BITS, info->frac_bits);
	mshare_st32(buf + MSHARE_OFF_CHUNK, info->chunk_bytes);
	memcpy(buf + MSHARE_OFF_RECIPIENT, info->recipient, MSHARE_PK_BYTES);
	memcpy(buf + MSHARE_OFF_CONFIG, info->config_raw, MODEL_HEADER_BYTES);
	mshare_st32(buf + MSHARE_OFF_NTENSORS, (uint32_t)info->ntensors);
	mshare_st64(buf + MSHARE_OFF_TOTAL, info->total);
	for (size_t i = 0; i < info->ntensors; i++) {
		const struct mshare_tensor *t = &info->tensors[i];
		uint8_t *e = buf + MSHARE_OFF_TABLE + i * MSHARE_ENTRY_BYTES;
		memcpy(e, t->name, strnlen(t->name, MSHARE_NAME_BYTES - 1));
		mshare_st32(e + 32, (uint32_t)t->layers);
		mshare_st32(e + 36, (uint32_t)t->rows);
		mshare_st32(e + 40, (uint32_t)t->cols);
		/* e + 44: reserved, zero */
		mshare_st64(e + 48, t->offset);
		mshare_st64(e + 56, t->count);
	}
	crypto_generichash(buf + len - 32, 32, buf, len - 32, NULL, 0);
	return len;
}

/* A tensor name from the file, printable, for a message. */
static void printable_name(const uint8_t *field, char out[MSHARE_NAME_BYTES])
{
	size_t i = 0;
	for (; i < MSHARE_NAME_BYTES - 1 && field[i]; i++)
		out[i] = field[i] >= 0x20 && field[i] < 0x7f ? (char)field[i] : '?';
	out[i] = '\0';
}

static int parse_table(const uint8_t *h, const char *name, struct mshare_info *o, char *err,
		       size_t errcap)
{
	struct mshare_tensor want[MSHARE_MAX_TENSORS];
	size_t nwant;
	mshare_table(&o->config, want, &nwant);
	if (o->ntensors != nwant) {
		mshare_seterr(err, errcap,
			      "%s: the tensor table lists %zu tensors; the config (%s classifier) "
			      "implies %zu",
			      name, o->ntensors, o->config.shared_classifier ? "shared" : "separate",
			      nwant);
		return ERR_PARSE;
	}
	for (size_t i = 0; i < nwant; i++) {
		const uint8_t *e = h + MSHARE_OFF_TABLE + i * MSHARE_ENTRY_BYTES;
		const struct mshare_tensor *w = &want[i];
		uint8_t wname[MSHARE_NAME_BYTES] = {0};
		memcpy(wname, w->name, strlen(w->name));
		if (memcmp(e, wname, MSHARE_NAME_BYTES) != 0) {
			char got[MSHARE_NAME_BYTES];
			printable_name(e, got);
			mshare_seterr(err, errcap,
				      "%s: tensor table entry %zu is named '%s' (or not NUL padded); "
				      "'%s' expected",
				      name, i, got, w->name);
			return ERR_PARSE;
		}
		uint32_t L = mshare_ld32(e + 32), r = mshare_ld32(e + 36), c = mshare_ld32(e + 40);
		if (L != (uint32_t)w->layers || r != (uint32_t)w->rows || c != (uint32_t)w->cols) {
			mshare_seterr(err, errcap,
				      "%s: tensor %s has shape %u x %u x %u in the table; the config "
				      "implies %d x %d x %d",
				      name, w->name, L, r, c, w->layers, w->rows, w->cols);
			return ERR_PARSE;
		}
		if (mshare_ld32(e + 44) != 0) {
			mshare_seterr(err, errcap, "%s: tensor %s: reserved field is not zero", name,
				      w->name);
			return ERR_PARSE;
		}
		uint64_t off = mshare_ld64(e + 48), cnt = mshare_ld64(e + 56);
		if (off != w->offset || cnt != w->count) {
			mshare_seterr(err, errcap,
				      "%s: tensor %s at offset %llu with %llu shares in the table; "
				      "the config implies offset %llu with %llu",
				      name, w->name, (unsigned long long)off, (unsigned long long)cnt,
				      (unsigned long long)w->offset, (unsigned long long)w->count);
			return ERR_PARSE;
		}
		o->tensors[i] = *w;
	}
	return 0;
}

int mshare_parse_header(const void *buf, size_t len, uint64_t file_size, const char *name,
			struct mshare_info *out, char *err, size_t errcap)
{
	if (!name || !*name)
		name = "share file";
	if ((!buf && len) || !out) {
		mshare_seterr(err, errcap, "%s: invalid arguments", name);
		return ERR_INVALID;
	}
	const uint8_t *h = buf;
	struct mshare_info o;
	memset(&o, 0, sizeof o);
	snprintf(o.name, sizeof o.name, "%s", name);

	if (len < 8 || memcmp(h, MSHARE_MAGIC, 8) != 0) {
		if (len < 8 && file_size < 8)
			mshare_seterr(err, errcap,
				      "%s: truncated: %llu bytes, not even the magic of a model "
				      "share file",
				      name, (unsigned long long)file_size);
		else
			mshare_seterr(err, errcap,
				      "%s: not a Mimir model share file (no '" MSHARE_MAGIC
				      "' magic)",
				      name);
		return ERR_PARSE;
	}
	if (len < MSHARE_FIXED_BYTES) {
		mshare_seterr(err, errcap,
			      "%s: truncated: %llu bytes, shorter than the %d-byte fixed header",
			      name, (unsigned long long)(file_size < len ? len : file_size),
			      MSHARE_FIXED_BYTES);
		return ERR_PARSE;
	}
	o.version = mshare_ld16(h + MSHARE_OFF_VERSION);
	if (o.version != MSHARE_VERSION) {
		mshare_seterr(err, errcap,
			      "%s: share format version %u; this build reads version %d", name,
			      o.version, MSHARE_VERSION);
		return ERR_UNSUPPORTED;
	}
	unsigned scheme = mshare_ld16(h + MSHARE_OFF_SCHEME);
	if (scheme != MSHARE_SCHEME_ADDITIVE64) {
		mshare_seterr(err, errcap,
			      "%s: sharing scheme %u is unknown (1 = additive shares in Z_2^64)",
			      name, scheme);
		return ERR_UNSUPPORTED;
	}
	uint32_t nt = mshare_ld32(h + MSHARE_OFF_NTENSORS);
	if (nt == 0 || nt > MSHARE_MAX_TENSORS) {
		mshare_seterr(err, errcap, "%s: header lists %u tensors, outside 1..%d", name, nt,
			      MSHARE_MAX_TENSORS);
		return ERR_RANGE;
	}
	o.ntensors = nt;
	o.header_bytes = mshare_ld32(h + MSHARE_OFF_HEADER_BYTES);
	uint32_t want_hb = MSHARE_FIXED_BYTES + nt * MSHARE_ENTRY_BYTES + 32;
	if (o.header_bytes != want_hb) {
		mshare_seterr(err, errcap,
			      "%s: header length %u does not match its %u tensors (%u expected)",
			      name, o.header_bytes, nt, want_hb);
		return ERR_PARSE;
	}
	if (len < o.header_bytes) {
		mshare_seterr(err, errcap,
			      "%s: truncated: %llu bytes, shorter than its %u-byte header", name,
			      (unsigned long long)(file_size < len ? len : file_size),
			      o.header_bytes);
		return ERR_PARSE;
	}
	uint8_t sum[32];
	crypto_generichash(sum, sizeof sum, h, o.header_bytes - 32, NULL, 0);
	if (memcmp(sum, h + o.header_bytes - 32, 32) != 0) {
		mshare_seterr(err, errcap,
			      "%s: header checksum mismatch: the header is damaged", name);
		return ERR_PARSE;
	}

	memcpy(o.model_id, h + MSHARE_OFF_MODEL_ID, MSHARE_ID_BYTES);
	memcpy(o.recipient, h + MSHARE_OFF_RECIPIENT, MSHARE_PK_BYTES);
	memcpy(o.config_raw, h + MSHARE_OFF_CONFIG, MODEL_HEADER_BYTES);
	uint32_t party = mshare_ld32(h + MSHARE_OFF_PARTY);
	uint32_t np = mshare_ld32(h + MSHARE_OFF_NPARTIES);
	uint32_t f = mshare_ld32(h + MSHARE_OFF_FRAC_BITS);
	o.chunk_bytes = mshare_ld32(h + MSHARE_OFF_CHUNK);
	o.total = mshare_ld64(h + MSHARE_OFF_TOTAL);
	if (np < MSHARE_MIN_PARTIES || np > MSHARE_MAX_PARTIES) {
		mshare_seterr(err, errcap, "%s: %u parties, outside %d..%d", name, np,
			      MSHARE_MIN_PARTIES, MSHARE_MAX_PARTIES);
		return ERR_RANGE;
	}
	if (party >= np) {
		mshare_seterr(err, errcap, "%s: party index %u, but only %u parties", name, party,
			      np);
		return ERR_RANGE;
	}
	if (!ring_fxp_valid_f(f)) {
		mshare_seterr(err, errcap, "%s: %u fractional bits, outside %d..%d", name, f,
			      RING_FXP_MIN_F, RING_FXP_MAX_F);
		return ERR_RANGE;
	}
	if (o.chunk_bytes < MSHARE_CHUNK_MIN || o.chunk_bytes > MSHARE_CHUNK_MAX ||
	    o.chunk_bytes % 8 != 0) {
		mshare_seterr(err, errcap,
			      "%s: chunk size %u is not a multiple of 8 in %u..%u bytes", name,
			      o.chunk_bytes, MSHARE_CHUNK_MIN, MSHARE_CHUNK_MAX);
		return ERR_RANGE;
	}
	o.party = party, o.nparties = np, o.frac_bits = f;
	int rc = model_config_parse(o.config_raw, MODEL_HEADER_BYTES, name, &o.config, err, errcap);
	if (rc)
		return rc;
	if ((rc = parse_table(h, name, &o, err, errcap)) != 0)
		return rc;
	uint64_t params = model_param_count(&o.config);
	if (o.total != params) {
		mshare_seterr(err, errcap,
			      "%s: header says %llu shares; the config implies %llu weights", name,
			      (unsigned long long)o.total, (unsigned long long)params);
		return ERR_PARSE;
	}
	o.file_bytes = mshare_file_size(o.total, o.chunk_bytes, o.ntensors, &o.chunks);
	if (file_size != o.file_bytes) {
		if (file_size < o.file_bytes)
			mshare_seterr(err, errcap,
				      "%s: truncated: %llu bytes, the header implies %llu", name,
				      (unsigned long long)file_size,
				      (unsigned long long)o.file_bytes);
		else
			mshare_seterr(err, errcap,
				      "%s: %llu bytes, the header implies %llu (trailing data)",
				      name, (unsigned long long)file_size,
				      (unsigned long long)o.file_bytes);
		return ERR_PARSE;
	}
	*out = o;
	return 0;
}

int mshare_inspect(const char *path, struct mshare_info *out, char *err, size_t errcap)
{
	if (!path || !out) {
		mshare_seterr(err, errcap, "share file: invalid arguments");
		return ERR_INVALID;
	}
	int fd = open(path, O_RDONLY | O_CLOEXEC);
	if (fd < 0) {
		int e = errno;
		mshare_seterr(err, errcap, "%s: cannot open: %s", path, strerror(e));
		return e == ENOENT ? ERR_NOT_FOUND : ERR_IO;
	}
	int rc = 0;
	struct stat st;
	uint8_t h[MSHARE_HEADER_MAX];
	if (fstat(fd, &st) != 0 || !S_ISREG(st.st_mode)) {
		mshare_seterr(err, errcap, "%s: not a regular file", path);
		rc = ERR_IO;
		goto out;
	}
	size_t got = 0;
	while (got < sizeof h) {
		ssize_t r = read(fd, h + got, sizeof h - got);
		if (r < 0 && errno == EINTR)
			continue;
		if (r < 0) {
			mshare_seterr(err, errcap, "%s: read error: %s", path, strerror(errno));
			rc = ERR_IO;
			goto out;
		}
		if (r == 0)
			break;
		got += (size_t)r;
	}
	rc = mshare_parse_header(h, got, (uint64_t)st.st_size, path, out, err, errcap);
out:
	close(fd);
	return rc;
}

int mshare_same_split(const struct mshare_info *const *infos, size_t n, char *err, size_t errcap)
{
	if (!infos || n == 0) {
		mshare_seterr(err, errcap, "no share files");
		return ERR_INVALID;
	}
	const struct mshare_info *a = infos[0];
	char ha[2 * MSHARE_ID_BYTES + 1], hb[2 * MSHARE_ID_BYTES + 1];
	for (size_t i = 1; i < n; i++) {
		const struct mshare_info *b = infos[i];
		if (memcmp(a->model_id, b->model_id, MSHARE_ID_BYTES) != 0) {
			mshare_seterr(err, errcap,
				      "%s and %s come from different splits (model ids %s and %s); "
				      "shares of different splits never combine",
				      a->name, b->name,
				      mshare_hex(a->model_id, MSHARE_ID_BYTES, ha, sizeof ha),
				      mshare_hex(b->model_id, MSHARE_ID_BYTES, hb, sizeof hb));
			return ERR_CONFLICT;
		}
		if (a->nparties != b->nparties || a->frac_bits != b->frac_bits ||
		    a->chunk_bytes != b->chunk_bytes ||
		    memcmp(a->config_raw, b->config_raw, MODEL_HEADER_BYTES) != 0) {
			mshare_seterr(err, errcap,
				      "%s and %s carry the same model id but disagree on the parties, "
				      "fixed point, chunk size or config",
				      a->name, b->name);
			return ERR_CONFLICT;
		}
	}
	for (size_t i = 0; i < n; i++)
		for (size_t j = i + 1; j < n; j++)
			if (infos[i]->party == infos[j]->party) {
				mshare_seterr(err, errcap, "%s and %s are both the share of party %u",
					      infos[i]->name, infos[j]->name, infos[i]->party);
				return ERR_CONFLICT;
			}
	if (n != a->nparties) {
		unsigned missing = 0;
		for (unsigned p = 0; p < a->nparties; p++) {
			bool seen = false;
			for (size_t i = 0; i < n && !seen; i++)
				seen = infos[i]->party == p;
			if (!seen) {
				missing = p;
				break;
			}
		}
		if (n < a->nparties)
			mshare_seterr(err, errcap,
				      "%zu of the %u share files of split %s; party %u is missing "
				      "(every party's share is needed)",
				      n, a->nparties,
				      mshare_hex(a->model_id, MSHARE_ID_BYTES, ha, sizeof ha),
				      missing);
		else
			mshare_seterr(err, errcap, "%zu share files for a split of %u parties", n,
				      a->nparties);
		return ERR_INVALID;
	}
	return 0;
}
