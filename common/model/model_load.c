/* model_load: reading and validating a legacy llama2.c checkpoint. Everything a header
 * claims is checked against hard bounds and against the real byte length before the
 * weights are allocated, so the largest allocation is the size of a file that exists;
 * every value is then checked finite as it lands in owned memory. Files are read with
 * fread (no mmap) so a file that shrinks under us is a clean I/O error, not a SIGBUS. */
#define _FILE_OFFSET_BITS 64
#include "model/model.h"

#include <errno.h>
#include <math.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#include <sodium.h>

#include "err/err.h"
#include "model/model_internal.h"

#if !defined(__BYTE_ORDER__) || __BYTE_ORDER__ != __ORDER_LITTLE_ENDIAN__
#error "checkpoints are little-endian float32; add byte swapping for this target"
#endif

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

void model_seterr(char *err, size_t cap, const char *fmt, ...)
{
	if (!err || cap == 0)
		return;
	va_list ap;
	va_start(ap, fmt);
	vsnprintf(err, cap, fmt, ap);
	va_end(ap);
}

static const char *or_name(const char *name) { return name && *name ? name : "checkpoint"; }

int model_config_parse(const void *header, size_t len, const char *name, struct model_config *out,
		       char *err, size_t errcap)
{
	name = or_name(name);
	if (!header || !out) {
		model_seterr(err, errcap, "%s: no header", name);
		return ERR_INVALID;
	}
	if (len < MODEL_HEADER_BYTES) {
		model_seterr(err, errcap, "%s: %zu bytes, shorter than the %d-byte header", name,
			     len, MODEL_HEADER_BYTES);
		return ERR_PARSE;
	}
	int32_t h[7];
	memcpy(h, header, sizeof h);
	static const char *const fields[7] = {"dim",        "hidden_dim", "n_layers", "n_heads",
					      "n_kv_heads", "vocab_size", "seq_len"};
	static const int64_t maxes[7] = {MODEL_MAX_DIM, MODEL_MAX_HIDDEN, MODEL_MAX_LAYERS,
					 MODEL_MAX_DIM, MODEL_MAX_DIM,    MODEL_MAX_VOCAB,
					 MODEL_MAX_SEQ};
	for (int i = 0; i < 7; i++) {
		/* vocab_size's sign only says whether the classifier is shared. */
		int64_t v = h[i];
		if (i == 5 && v < 0)
			v = -v;
		if (v <= 0 || v > maxes[i]) {
			model_seterr(err, errcap, "%s: header %s=%d out of range 1..%lld", name,
				     fields[i], (int)h[i], (long long)maxes[i]);
			return ERR_RANGE;
		}
	}
	struct model_config c = {
		.dim = h[0],
		.hidden_dim = h[1],
		.n_layers = h[2],
		.n_heads = h[3],
		.n_kv_heads = h[4],
		.vocab_size = h[5] < 0 ? -h[5] : h[5],
		.seq_len = h[6],
		.shared_classifier = h[5] > 0,
	};
	if (c.dim % c.n_heads != 0) {
		model_seterr(err, errcap, "%s: header n_heads=%d does not divide dim=%d", name,
			     c.n_heads, c.dim);
		return ERR_RANGE;
	}
	if (c.n_heads % c.n_kv_heads != 0) {
		model_seterr(err, errcap, "%s: header n_kv_heads=%d does not divide n_heads=%d",
			     name, c.n_kv_heads, c.n_heads);
		return ERR_RANGE;
	}
	c.head_size = c.dim / c.n_heads;
	if (c.head_size % 2 != 0) {
		model_seterr(err, errcap,
			     "%s: header gives an odd head size %d (dim=%d / n_heads=%d); RoPE "
			     "rotates pairs",
			     name, c.head_size, c.dim, c.n_heads);
		return ERR_RANGE;
	}
	c.kv_dim = c.n_kv_heads * c.head_size;
	*out = c;
	return 0;
}

void model_tensor_shape(const struct model_config *c, int id, int *layers, int *rows, int *cols)
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
	case MODEL_T_RMS_FINAL: break;
	default: L = 0; break;
	}
	*layers = L, *rows = r, *cols = k;
}

static uint64_t tensor_count(const struct model_config *c, int id)
{
	int L, r, k;
	model_tensor_shape(c, id, &L, &r, &k);
	return (uint64_t)L * (uint64_t)r * (uint64_t)k;
}

uint64_t model_param_count(const struct model_config *c)
{
	uint64_t n = 0;
	for (int id = 0; id < MODEL_T_COUNT; id++)
		if (id != MODEL_T_WCLS || !c->shared_classifier)
			n += tensor_count(c, id);
	return n;
}

static uint64_t rope_floats(const struct model_config *c)
{
	/* freq_cis_real and freq_cis_imag, seq_len x head_size/2 each. */
	return (uint64_t)c->seq_len * (uint64_t)c->head_size;
}

void model_file_sizes(const struct model_config *c, uint64_t *without_rope, uint64_t *with_rope)
{
	uint64_t base = MODEL_HEADER_BYTES + 4 * model_param_count(c);
	if (without_rope)
		*without_rope = base;
	if (with_rope)
		*with_rope = base + 4 * rope_floats(c);
}

/* A sequential byte source: a memory image or an open file. */
struct src {
	const unsigned char *mem;
	size_t len, pos;
	FILE *f;
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

static int check_finite(const float *v, size_t n, const struct model_config *c, int id,
			const char *tname, uint64_t base, const char *name, char *err,
			size_t errcap)
{
	for (size_t i = 0; i < n; i++) {
		if (isfinite(v[i]))
			continue;
		const char *what = isnan(v[i]) ? "NaN" : "Inf";
		uint64_t at = base + i;
		if (id >= 0) {
			int L, r, k;
			model_tensor_shape(c, id, &L, &r, &k);
			uint64_t per = (uint64_t)r * (uint64_t)k;
			model_seterr(err, errcap,
				     "%s: weight %s is %s at layer %llu row %llu col %llu", name,
				     tname, what, (unsigned long long)(at / per),
				     (unsigned long long)(at % per / (uint64_t)k),
				     (unsigned long long)(at % (uint64_t)k));
		} else {
			model_seterr(err, errcap, "%s: %s is %s at element %llu", name, tname, what,
				     (unsigned long long)at);
		}
		return ERR_RANGE;
	}
	return 0;
}

/* Reads n floats of tensor id into dst and checks them. */
static int read_tensor(struct src *s, float *dst, const struct model_config *c, int id,
		       const char *name, char *err, size_t errcap)
{
	uint64_t n = tensor_count(c, id);
	if (src_read(s, dst, (size_t)n * sizeof(float)) != 0) {
		model_seterr(err, errcap, "%s: read error in tensor %s", name, tensor_names[id]);
		return ERR_IO;
	}
	return check_finite(dst, (size_t)n, c, id, tensor_names[id], 0, name, err, errcap);
}

/* The unused RoPE tables are still checked: a non-finite value there means a damaged
 * file. Read through a small buffer, not kept. */
static int skip_rope(struct src *s, const struct model_config *c, const char *name, char *err,
		     size_t errcap)
{
	float buf[1024];
	const char *tn[2] = {"freq_cis_real", "freq_cis_imag"};
	for (int t = 0; t < 2; t++) {
		uint64_t total = rope_floats(c) / 2;
		for (uint64_t done = 0; done < total;) {
			size_t n = total - done < 1024 ? (size_t)(total - done) : 1024;
			if (src_read(s, buf, n * sizeof(float)) != 0) {
				model_seterr(err, errcap, "%s: read error in %s", name, tn[t]);
				return ERR_IO;
			}
			int rc = check_finite(buf, n, c, -1, tn[t], done, name, err, errcap);
			if (rc)
				return rc;
			done += n;
		}
	}
	return 0;
}

static void model_bind(struct model *m)
{
	const struct model_config *c = &m->cfg;
	float *p = m->w;
	const float *at[MODEL_T_COUNT];
	for (int id = 0; id < MODEL_T_COUNT; id++) {
		if (id == MODEL_T_WCLS && c->shared_classifier) {
			at[id] = at[MODEL_T_TOKEN_EMBEDDING];
			continue;
		}
		at[id] = p;
		p += tensor_count(c, id);
	}
	for (int id = 0; id < MODEL_T_COUNT; id++) {
		struct model_tensor *t = &m->tensors[id];
		t->name = tensor_names[id];
		t->data = at[id];
		t->count = (size_t)tensor_count(c, id);
		model_tensor_shape(c, id, &t->layers, &t->rows, &t->cols);
		t->alias = id == MODEL_T_WCLS && c->shared_classifier;
	}
	m->views = (struct model_weights){
		.token_embedding = at[MODEL_T_TOKEN_EMBEDDING],
		.rms_att = at[MODEL_T_RMS_ATT],
		.wq = at[MODEL_T_WQ],
		.wk = at[MODEL_T_WK],
		.wv = at[MODEL_T_WV],
		.wo = at[MODEL_T_WO],
		.rms_ffn = at[MODEL_T_RMS_FFN],
		.w1 = at[MODEL_T_W1],
		.w2 = at[MODEL_T_W2],
		.w3 = at[MODEL_T_W3],
		.rms_final = at[MODEL_T_RMS_FINAL],
		.wcls = at[MODEL_T_WCLS],
	};
}

/* Header already parsed into c and the total length checked; s is positioned after the
 * header. */
static int load_body(struct src *s, const struct model_config *c, bool has_rope, const char *name,
		     struct model **out, char *err, size_t errcap)
{
	int rc = 0;
	struct model *m = calloc(1, sizeof *m);
	if (!m) {
		model_seterr(err, errcap, "%s: out of memory", name);
		return ERR_NOMEM;
	}
	m->cfg = *c;
	uint64_t n = model_param_count(c);
	if (n > SIZE_MAX / sizeof(float)) {
		model_seterr(err, errcap, "%s: model too large for this platform", name);
		rc = ERR_TOO_LARGE;
		goto out;
	}
	m->nw = (size_t)n;
	m->w = malloc(m->nw * sizeof(float));
	if (!m->w) {
		model_seterr(err, errcap, "%s: out of memory for %llu weights", name,
			     (unsigned long long)n);
		rc = ERR_NOMEM;
		goto out;
	}
	float *p = m->w;
	for (int id = 0; id <= MODEL_T_RMS_FINAL; id++) {
		if ((rc = read_tensor(s, p, c, id, name, err, errcap)) != 0)
			goto out;
		p += tensor_count(c, id);
	}
	if (has_rope && (rc = skip_rope(s, c, name, err, errcap)) != 0)
		goto out;
	if (!c->shared_classifier &&
	    (rc = read_tensor(s, p, c, MODEL_T_WCLS, name, err, errcap)) != 0)
		goto out;
	model_bind(m);
	*out = m;
	m = NULL;
out:
	model_free(m);
	return rc;
}

/* Parses the header and decides, from the exact length, whether RoPE tables follow. */
static int check_layout(const void *hdr, uint64_t len, const char *name, struct model_config *c,
			bool *has_rope, char *err, size_t errcap)
{
	int rc =
		model_config_parse(hdr, len > MODEL_HEADER_BYTES ? MODEL_HEADER_BYTES : (size_t)len,
				   name, c, err, errcap);
	if (rc)
		return rc;
	uint64_t a, b;
	model_file_sizes(c, &a, &b);
	if (len == a || len == b) {
		*has_rope = len == b;
		return 0;
	}
	if (len < a)
		model_seterr(err, errcap,
			     "%s: truncated: %llu bytes, the header (dim=%d hidden_dim=%d "
			     "n_layers=%d vocab_size=%d) implies %llu (or %llu with RoPE tables)",
			     name, (unsigned long long)len, c->dim, c->hidden_dim, c->n_layers,
			     c->vocab_size, (unsigned long long)a, (unsigned long long)b);
	else
		model_seterr(err, errcap,
			     "%s: %llu bytes does not match the header: expected %llu without "
			     "RoPE tables or %llu with them (trailing or missing data)",
			     name, (unsigned long long)len, (unsigned long long)a,
			     (unsigned long long)b);
	return ERR_PARSE;
}

int model_load_mem(const void *buf, size_t len, const char *name, struct model **out, char *err,
		   size_t errcap)
{
	name = or_name(name);
	if (!out || (!buf && len)) {
		model_seterr(err, errcap, "%s: invalid arguments", name);
		return ERR_INVALID;
	}
	*out = NULL;
	struct model_config c;
	bool has_rope;
	int rc = check_layout(buf, len, name, &c, &has_rope, err, errcap);
	if (rc)
		return rc;
	struct src s = {.mem = buf, .len = len, .pos = MODEL_HEADER_BYTES};
	return load_body(&s, &c, has_rope, name, out, err, errcap);
}

int model_load(const char *path, struct model **out, char *err, size_t errcap)
{
	const char *name = or_name(path);
	if (!path || !out) {
		model_seterr(err, errcap, "%s: invalid arguments", name);
		return ERR_INVALID;
	}
	*out = NULL;
	int rc = 0;
	FILE *f = fopen(path, "rb");
	if (!f) {
		model_seterr(err, errcap, "%s: cannot open: %s", name, strerror(errno));
		return errno == ENOENT ? ERR_NOT_FOUND : ERR_IO;
	}
	struct stat st;
	if (fstat(fileno(f), &st) != 0 || !S_ISREG(st.st_mode)) {
		model_seterr(err, errcap, "%s: not a regular file", name);
		rc = ERR_IO;
		goto out;
	}
	unsigned char hdr[MODEL_HEADER_BYTES];
	size_t got = fread(hdr, 1, sizeof hdr, f);
	struct model_config c;
	bool has_rope;
	if ((rc = check_layout(hdr, got < sizeof hdr ? got : (uint64_t)st.st_size, name, &c,
			       &has_rope, err, errcap)) != 0)
		goto out;
	struct src s = {.f = f};
	rc = load_body(&s, &c, has_rope, name, out, err, errcap);
out:
	fclose(f);
	return rc;
}

void model_free(struct model *m)
{
	if (!m)
		return;
	if (m->w) {
		sodium_memzero(m->w, m->nw * sizeof(float));
		free(m->w);
	}
	free(m);
}

const struct model_config *model_config(const struct model *m) { return &m->cfg; }

const struct model_weights *model_weights(const struct model *m) { return &m->views; }

int model_tensor(const struct model *m, enum model_tensor_id id, struct model_tensor *out)
{
	if (!m || !out || (int)id < 0 || id >= MODEL_T_COUNT)
		return ERR_RANGE;
	*out = m->tensors[id];
	return 0;
}
