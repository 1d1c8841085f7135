/* tok: loading, validating, encoding and decoding the llama2.c tokenizer. The loader
 * walks the file once to validate and count before it allocates (so allocations are
 * bounded by the file's real length), then copies the pieces into one owned blob with
 * a sorted index for the lookups encode makes. */
#define _FILE_OFFSET_BITS 64
#include "model/tok.h"

#include <errno.h>
#include <math.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#include "err/err.h"
#include "model/model_internal.h"

/* A tokenizer file is a few hundred kilobytes for a 32k vocabulary. */
#define TOK_MAX_FILE (64u << 20)

/* Longer texts are refused (indices are 32-bit); a model context is far shorter. */
#define TOK_MAX_TEXT ((size_t)1 << 30)

/* run.c starts its best-merge search at this score, so no pair at or below it merges. */
#define TOK_NO_MERGE_SCORE -1e10f

struct tok_entry {
	const unsigned char *p;
	size_t len;
	int id;
};

struct tok {
	int n;
	int max_len; /* longest piece actually present */
	float *scores;
	uint32_t *off, *len; /* piece i is blob[off[i] .. off[i]+len[i]) */
	unsigned char *blob;
	struct tok_entry *sorted; /* ids >= TOK_MIN_VOCAB ordered by (bytes, id) */
	int nsorted;
};

/* Decoded byte tokens point here. */
static const unsigned char byte_table[256] = {
#define B4(i) (i), (i) + 1, (i) + 2, (i) + 3
#define B16(i) B4(i), B4((i) + 4), B4((i) + 8), B4((i) + 12)
#define B64(i) B16(i), B16((i) + 16), B16((i) + 32), B16((i) + 48)
	B64(0), B64(64), B64(128), B64(192)
#undef B64
#undef B16
#undef B4
};

static const char *or_name(const char *name) { return name && *name ? name : "tokenizer"; }

static int32_t rd_i32(const unsigned char *p)
{
	int32_t v;
	memcpy(&v, p, 4);
	return v;
}

static float rd_f32(const unsigned char *p)
{
	float v;
	memcpy(&v, p, 4);
	return v;
}

static int hexval(unsigned char c)
{
	if (c >= '0' && c <= '9')
		return c - '0';
	if (c >= 'a' && c <= 'f')
		return c - 'a' + 10;
	if (c >= 'A' && c <= 'F')
		return c - 'A' + 10;
	return -1;
}

/* "<0xNN>" spelling byte b? */
static bool is_byte_piece(const unsigned char *p, size_t len, int b)
{
	if (len != 6 || p[0] != '<' || p[1] != '0' || p[2] != 'x' || p[5] != '>')
		return false;
	int hi = hexval(p[3]), lo = hexval(p[4]);
	return hi >= 0 && lo >= 0 && hi * 16 + lo == b;
}

static int bytes_cmp(const unsigned char *a, size_t alen, const unsigned char *b, size_t blen)
{
	int c = memcmp(a, b, alen < blen ? alen : blen);
	if (c)
		return c;
	return alen < blen ? -1 : alen > blen ? 1 : 0;
}

static int entry_cmp(const void *pa, const void *pb)
{
	const struct tok_entry *a = pa, *b = pb;
	int c = bytes_cmp(a->p, a->len, b->p, b->len);
	return c ? c : (a->id > b->id) - (a->id < b->id);
}

/* Lowest id >= TOK_MIN_VOCAB whose piece is exactly s[0..len), or -1. */
static int lookup(const struct tok *t, const unsigned char *s, size_t len)
{
	int lo = 0, hi = t->nsorted;
	while (lo < hi) {
		int mid = lo + (hi - lo) / 2;
		const struct tok_entry *e = &t->sorted[mid];
		if (bytes_cmp(s, len, e->p, e->len) > 0)
			lo = mid + 1;
		else
			hi = mid;
	}
	if (lo < t->nsorted && bytes_cmp(s, len, t->sorted[lo].p, t->sorted[lo].len) == 0)
		return t->sorted[lo].id;
	return -1;
}

/* One walk over the file: validates every entry; with fill set, also records them. */
static int walk(const unsigned char *buf, size_t len, const char *name, int want, struct tok *fill,
		int *count, char *err, size_t errcap)
{
	int32_t maxlen = rd_i32(buf);
	if (maxlen < 1 || maxlen > TOK_MAX_TOKEN_LENGTH) {
		model_seterr(err, errcap, "%s: max_token_length=%d out of range 1..%d", name,
			     (int)maxlen, TOK_MAX_TOKEN_LENGTH);
		return ERR_RANGE;
	}
	size_t pos = 4, blob = 0;
	int n = 0;
	while (pos < len && (want == 0 || n < want)) {
		if (n >= TOK_MAX_VOCAB) {
			model_seterr(err, errcap, "%s: more than %d tokens", name, TOK_MAX_VOCAB);
			return ERR_RANGE;
		}
		if (len - pos < 8) {
			model_seterr(err, errcap,
				     "%s: truncated in the header of token %d (offset %zu)", name,
				     n, pos);
			return ERR_PARSE;
		}
		float score = rd_f32(buf + pos);
		int32_t tl = rd_i32(buf + pos + 4);
		if (!isfinite(score)) {
			model_seterr(err, errcap, "%s: token %d has a non-finite score", name, n);
			return ERR_RANGE;
		}
		if (tl < 1 || tl > maxlen) {
			model_seterr(
				err, errcap,
				"%s: token %d has length %d, out of range 1..max_token_length=%d",
				name, n, (int)tl, (int)maxlen);
			return ERR_RANGE;
		}
		pos += 8;
		if (len - pos < (size_t)tl) {
			model_seterr(err, errcap,
				     "%s: truncated in token %d: length %d but %zu bytes left",
				     name, n, (int)tl, len - pos);
			return ERR_PARSE;
		}
		if (n >= TOK_BYTE0 && n < TOK_MIN_VOCAB &&
		    !is_byte_piece(buf + pos, (size_t)tl, n - TOK_BYTE0)) {
			model_seterr(
				err, errcap,
				"%s: token %d must be the byte-fallback piece <0x%02X> (ids %d..%d "
				"are bytes 0x00..0xFF)",
				name, n, n - TOK_BYTE0, TOK_BYTE0, TOK_MIN_VOCAB - 1);
			return ERR_PARSE;
		}
		if (fill) {
			fill->scores[n] = score;
			fill->off[n] = (uint32_t)blob;
			fill->len[n] = (uint32_t)tl;
			memcpy(fill->blob + blob, buf + pos, (size_t)tl);
			if (tl > fill->max_len)
				fill->max_len = tl;
		}
		blob += (size_t)tl;
		pos += (size_t)tl;
		n++;
	}
	if (want > 0 && n < want) {
		model_seterr(err, errcap, "%s: truncated: %d tokens, the model's vocab_size is %d",
			     name, n, want);
		return ERR_PARSE;
	}
	if (pos != len) {
		model_seterr(err, errcap,
			     "%s: %zu trailing bytes after the %d tokens the model's vocab_size "
			     "expects",
			     name, len - pos, n);
		return ERR_PARSE;
	}
	if (n < TOK_MIN_VOCAB) {
		model_seterr(err, errcap,
			     "%s: %d tokens; the llama2.c layout needs at least %d (<unk>, BOS, "
			     "EOS and 256 byte tokens)",
			     name, n, TOK_MIN_VOCAB);
		return ERR_PARSE;
	}
	*count = n;
	return 0;
}

int tok_load_mem(const void *buf, size_t len, const char *name, int vocab_size, struct tok **out,
		 char *err, size_t errcap)
{
	name = or_name(name);
	if (!out || (!buf && len) || vocab_size < 0) {
		model_seterr(err, errcap, "%s: invalid arguments", name);
		return ERR_INVALID;
	}
	*out = NULL;
	if (len < 4) {
		model_seterr(err, errcap, "%s: %zu bytes, shorter than the 4-byte max_token_length",
			     name, len);
		return ERR_PARSE;
	}
	if (len > TOK_MAX_FILE) {
		model_seterr(err, errcap, "%s: %zu bytes, larger than the %u-byte limit", name, len,
			     TOK_MAX_FILE);
		return ERR_TOO_LARGE;
	}
	int n = 0;
	int rc = walk(buf, len, name, vocab_size, NULL, &n, err, errcap);
	if (rc)
		return rc;
	struct tok *t = calloc(1, sizeof *t);
	if (!t)
		goto nomem;
	t->n = n;
	t->scores = malloc((size_t)n * sizeof *t->scores);
	t->off = malloc((size_t)n * sizeof *t->off);
	t->len = malloc((size_t)n * sizeof *t->len);
	t->blob = malloc(len); /* pieces are a strict subset of the file */
	t->sorted = malloc((size_t)(n - TOK_MIN_VOCAB + 1) * sizeof *t->sorted);
	if (!t->scores || !t->off || !t->len || !t->blob || !t->sorted)
		goto nomem;
	if ((rc = walk(buf, len, name, vocab_size, t, &n, err, errcap)) != 0) {
		tok_free(t);
		return rc;
	}
	for (int i = TOK_MIN_VOCAB; i < n; i++)
		t->sorted[t->nsorted++] =
			(struct tok_entry){.p = t->blob + t->off[i], .len = t->len[i], .id = i};
	qsort(t->sorted, (size_t)t->nsorted, sizeof *t->sorted, entry_cmp);
	*out = t;
	return 0;
nomem:
	tok_free(t);
	model_seterr(err, errcap, "%s: out of memory", name);
	return ERR_NOMEM;
}

int tok_load(const char *path, int vocab_size, struct tok **out, char *err, size_t errcap)
{
	const char *name = or_name(path);
	if (!path || !out) {
		model_seterr(err, errcap, "%s: invalid arguments", name);
		return ERR_INVALID;
	}
	*out = NULL;
	int rc = 0;
	unsigned char *buf = NULL;
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
	if (st.st_size > (off_t)TOK_MAX_FILE) {
		model_seterr(err, errcap, "%s: %lld bytes, larger than the %u-byte limit", name,
			     (long long)st.st_size, TOK_MAX_FILE);
		rc = ERR_TOO_LARGE;
		goto out;
	}
	size_t len = (size_t)st.st_size;
	buf = malloc(len ? len : 1);
	if (!buf) {
		model_seterr(err, errcap, "%s: out of memory", name);
		rc = ERR_NOMEM;
		goto out;
	}
	if (fread(buf, 1, len, f) != len) {
		model_seterr(err, errcap, "%s: read error", name);
		rc = ERR_IO;
		goto out;
	}
	rc = tok_load_mem(buf, len, path, vocab_size, out, err, errcap);
out:
	free(buf);
	fclose(f);
	return rc;
}

void tok_free(struct tok *t)
{
	if (!t)
		return;
	free(t->scores);
	free(t->off);
	free(t->len);
	free(t->blob);
	free(t->sorted);
	free(t);
}

int tok_vocab_size(const struct tok *t) { return t->n; }

const char *tok_piece(const struct tok *t, int id, size_t *len)
{
	if (id < 0 || id >= t->n)
		return NULL;
	if (len)
		*len = t->len[id];
	return (const char *)t->blob + t->off[id];
}

float tok_score(const struct tok *t, int id) { return id >= 0 && id < t->n ? t->scores[id] : NAN; }

size_t tok_encode_max(size_t len) { return len > SIZE_MAX - 3 ? SIZE_MAX : len + 3; }

/* The merge of ids a and b: the vocabulary entry spelling their concatenation, or -1.
 * Only ordinary tokens merge. */
static int pair_merge(const struct tok *t, int a, int b, unsigned char *tmp)
{
	if (a < TOK_MIN_VOCAB || b < TOK_MIN_VOCAB)
		return -1;
	memcpy(tmp, t->blob + t->off[a], t->len[a]);
	memcpy(tmp + t->len[a], t->blob + t->off[b], t->len[b]);
	int id = lookup(t, tmp, (size_t)t->len[a] + t->len[b]);
	return id >= 0 && t->scores[id] > TOK_NO_MERGE_SCORE ? id : -1;
}

/* A candidate merge of the adjacent pieces at l and r (indices into the initial piece
 * sequence, which keep their order), valid while neither piece has changed since. */
struct cand {
	float score;
	uint32_t l, r;
	int id;
	uint32_t vl, vr;
};

/* Heap order: higher score first, then the leftmost pair, as run.c's scan chooses. */
static bool cand_before(const struct cand *a, const struct cand *b)
{
	return a->score > b->score || (a->score == b->score && a->l < b->l);
}

static void heap_push(struct cand *h, size_t *n, struct cand c)
{
	size_t i = (*n)++;
	while (i > 0 && cand_before(&c, &h[(i - 1) / 2])) {
		h[i] = h[(i - 1) / 2];
		i = (i - 1) / 2;
	}
	h[i] = c;
}

static struct cand heap_pop(struct cand *h, size_t *n)
{
	struct cand top = h[0], last = h[--(*n)];
	size_t i = 0;
	for (;;) {
		size_t c = 2 * i + 1;
		if (c >= *n)
			break;
		if (c + 1 < *n && cand_before(&h[c + 1], &h[c]))
			c++;
		if (!cand_before(&h[c], &last))
			break;
		h[i] = h[c];
		i = c;
	}
	if (*n > 0)
		h[i] = last;
	return top;
}

struct mstate {
	const struct tok *t;
	int *v;
	uint32_t *next, *prev, *ver;
	struct cand *heap;
	size_t nheap;
	unsigned char *tmp;
};

#define NONE UINT32_MAX

static void consider(struct mstate *s, uint32_t l, uint32_t r)
{
	if (l == NONE || r == NONE)
		return;
	int id = pair_merge(s->t, s->v[l], s->v[r], s->tmp);
	if (id >= 0)
		heap_push(s->heap, &s->nheap,
			  (struct cand){s->t->scores[id], l, r, id, s->ver[l], s->ver[r]});
}

/* Merges v[0..*m) in place: repeatedly the best-scoring adjacent pair (leftmost on ties)
 * until no pair is in the vocabulary. Same result as rescanning all pairs each round,
 * which is what run.c does, in O(n log n) instead of O(n^2): a long prompt must not
 * stall a service. Each merge pops one candidate and pushes at most two, so the heap
 * never holds more than 2 * m entries. */
static int merge(const struct tok *t, int *v, size_t *m, unsigned char *tmp)
{
	size_t n = *m;
	int rc = 0;
	struct mstate s = {.t = t, .v = v, .tmp = tmp};
	s.next = malloc(n * sizeof *s.next);
	s.prev = malloc(n * sizeof *s.prev);
	s.ver = calloc(n, sizeof *s.ver);
	s.heap = malloc(2 * n * sizeof *s.heap);
	if (!s.next || !s.prev || !s.ver || !s.heap) {
		rc = ERR_NOMEM;
		goto out;
	}
	for (size_t i = 0; i < n; i++) {
		s.next[i] = i + 1 < n ? (uint32_t)(i + 1) : NONE;
		s.prev[i] = i > 0 ? (uint32_t)(i - 1) : NONE;
	}
	for (size_t i = 0; i + 1 < n; i++)
		consider(&s, (uint32_t)i, (uint32_t)(i + 1));
	while (s.nheap > 0) {
		struct cand c = heap_pop(s.heap, &s.nheap);
		/* Stale: r was merged away, or either piece changed since the push. */
		if (s.next[c.l] != c.r || s.ver[c.l] != c.vl || s.ver[c.r] != c.vr)
			continue;
		v[c.l] = c.id;
		s.ver[c.l]++;
		s.ver[c.r]++;
		s.next[c.l] = s.next[c.r];
		if (s.next[c.r] != NONE)
			s.prev[s.next[c.r]] = c.l;
		s.next[c.r] = NONE;
		consider(&s, s.prev[c.l], c.l);
		consider(&s, c.l, s.next[c.l]);
	}
	/* Piece 0 is never merged away (only right-hand pieces are), so the list starts
	 * there. */
	size_t k = 0;
	for (uint32_t i = 0; i != NONE; i = s.next[i])
		v[k++] = v[i];
	*m = k;
out:
	free(s.next);
	free(s.prev);
	free(s.ver);
	free(s.heap);
	return rc;
}

int tok_encode(const struct tok *t, const char *text, size_t len, bool bos, bool eos, int *ids,
	       size_t cap, size_t *nout)
{
	if (!t || (!text && len) || !ids || !nout)
		return ERR_INVALID;
	if (cap < tok_encode_max(len))
		return ERR_RANGE;
	if (len > TOK_MAX_TEXT)
		return ERR_TOO_LARGE;
	const unsigned char *s = (const unsigned char *)text;
	size_t n = 0;
	int rc = 0;
	unsigned char *tmp = malloc(2 * (size_t)t->max_len);
	if (!tmp)
		return ERR_NOMEM;
	if (bos)
		ids[n++] = TOK_BOS;
	size_t first = n;
	if (len > 0) {
		int sp = lookup(t, (const unsigned char *)" ", 1);
		ids[n++] = sp >= 0 ? sp : TOK_BYTE0 + ' ';
	}
	/* One piece per UTF-8 codepoint (at most 4 bytes, as run.c groups them). */
	unsigned char cp[4];
	size_t cl = 0;
	for (size_t i = 0; i < len; i++) {
		if ((s[i] & 0xC0) != 0x80)
			cl = 0;
		cp[cl++] = s[i];
		unsigned char next = i + 1 < len ? s[i + 1] : 0;
		if ((next & 0xC0) == 0x80 && cl < 4)
			continue;
		int id = lookup(t, cp, cl);
		if (id >= 0)
			ids[n++] = id;
		else
			for (size_t j = 0; j < cl; j++)
				ids[n++] = TOK_BYTE0 + cp[j];
		cl = 0;
	}
	size_t m = n - first;
	if (m >= 2 && (rc = merge(t, ids + first, &m, tmp)) != 0)
		goto out;
	n = first + m;
	if (eos)
		ids[n++] = TOK_EOS;
	*nout = n;
out:
	free(tmp);
	return rc;
}

int tok_decode(const struct tok *t, int prev, int id, const char **piece, size_t *len)
{
	if (!t || !piece || !len)
		return ERR_INVALID;
	if (id < 0 || id >= t->n)
		return ERR_RANGE;
	const char *p;
	size_t l;
	if (id == TOK_BOS || id == TOK_EOS) {
		p = "", l = 0;
	} else if (id >= TOK_BYTE0 && id < TOK_MIN_VOCAB) {
		p = (const char *)&byte_table[id - TOK_BYTE0], l = 1;
	} else {
		p = (const char *)t->blob + t->off[id], l = t->len[id];
	}
	/* SentencePiece's dummy prefix: the space that starts the text is not part of it. */
	if (prev == TOK_BOS && l > 0 && p[0] == ' ')
		p++, l--;
	*piece = p;
	*len = l;
	return 0;
}

int tok_decode_all(const struct tok *t, const int *ids, size_t n, char **out, size_t *outlen)
{
	if (!t || (!ids && n) || !out)
		return ERR_INVALID;
	*out = NULL;
	size_t total = 0;
	const char *p;
	size_t l;
	for (size_t i = 0; i < n; i++) {
		int rc = tok_decode(t, i ? ids[i - 1] : -1, ids[i], &p, &l);
		if (rc)
			return rc;
		total += l;
	}
	char *buf = malloc(total + 1);
	if (!buf)
		return ERR_NOMEM;
	size_t at = 0;
	for (size_t i = 0; i < n; i++) {
		tok_decode(t, i ? ids[i - 1] : -1, ids[i], &p, &l);
		memcpy(buf + at, p, l);
		at += l;
	}
	buf[at] = '\0';
	*out = buf;
	if (outlen)
		*outlen = at;
	return 0;
}
