/* fuzz_tokenizer: the tokenizer loader on arbitrary bytes, and encode/decode on whatever
 * it accepts. Each input is tried twice: whole, as a tokenizer file (so real tokenizers
 * in the seeds are exercised as they are), encoding a few fixed texts; and split as a
 * little-endian uint16 text length, that many bytes of text (fewer if the input ends),
 * then the tokenizer file. For every accepted tokenizer each id is in range and
 * decode(encode(text)) == text, the invariant tok.h promises; short texts are also
 * encoded by a naive transcription of run.c's procedure (linear lookups, rescanning every
 * pair each round) and the ids must agree. A refused file must come with a message
 * naming it. */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "model/tok.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

static int naive_lookup(const struct tok *t, const char *s, size_t len)
{
	for (int id = TOK_MIN_VOCAB; id < tok_vocab_size(t); id++) {
		size_t l;
		const char *p = tok_piece(t, id, &l);
		if (l == len && memcmp(p, s, len) == 0)
			return id;
	}
	return -1;
}

static size_t naive_encode(const struct tok *t, const char *text, size_t len, int *ids)
{
	size_t n = 0;
	ids[n++] = TOK_BOS;
	if (len > 0) {
		int sp = naive_lookup(t, " ", 1);
		ids[n++] = sp >= 0 ? sp : TOK_BYTE0 + ' ';
	}
	char cp[5];
	size_t cl = 0;
	for (size_t i = 0; i < len; i++) {
		if ((text[i] & 0xC0) != 0x80)
			cl = 0;
		cp[cl++] = text[i];
		if (i + 1 < len && (text[i + 1] & 0xC0) == 0x80 && cl < 4)
			continue;
		int id = naive_lookup(t, cp, cl);
		if (id >= 0)
			ids[n++] = id;
		else
			for (size_t j = 0; j < cl; j++)
				ids[n++] = TOK_BYTE0 + (unsigned char)cp[j];
		cl = 0;
	}
	static char buf[2 * TOK_MAX_TOKEN_LENGTH];
	for (;;) {
		float best = -1e10f;
		size_t bi = 0;
		int bid = -1;
		for (size_t i = 0; i + 1 < n; i++) {
			if (ids[i] < TOK_MIN_VOCAB || ids[i + 1] < TOK_MIN_VOCAB)
				continue;
			size_t la, lb;
			const char *a = tok_piece(t, ids[i], &la),
				   *b = tok_piece(t, ids[i + 1], &lb);
			memcpy(buf, a, la);
			memcpy(buf + la, b, lb);
			int id = naive_lookup(t, buf, la + lb);
			if (id >= 0 && tok_score(t, id) > best) {
				best = tok_score(t, id);
				bi = i;
				bid = id;
			}
		}
		if (bid < 0)
			return n;
		ids[bi] = bid;
		memmove(ids + bi + 1, ids + bi + 2, (n - bi - 2) * sizeof *ids);
		n--;
	}
}

static void exercise(const struct tok *t, const char *text, size_t len)
{
	size_t cap = tok_encode_max(len), n = 0;
	int *ids = malloc(cap * sizeof *ids);
	if (!ids)
		abort();
	if (tok_encode(t, text, len, true, false, ids, cap, &n) != 0 || n < 1 || ids[0] != TOK_BOS)
		abort();
	for (size_t i = 0; i < n; i++)
		if (ids[i] < 0 || ids[i] >= tok_vocab_size(t))
			abort();
	if (len <= 128) {
		int naive[128 + 3];
		size_t nn = naive_encode(t, text, len, naive);
		if (nn != n || memcmp(naive, ids, n * sizeof *ids) != 0)
			abort();
	}
	char *back = NULL;
	size_t blen = 0;
	if (tok_decode_all(t, ids, n, &back, &blen) != 0 || blen != len ||
	    memcmp(back, text, len) != 0)
		abort();
	free(back);
	free(ids);
}

static struct tok *load(const uint8_t *buf, size_t len)
{
	struct tok *t = NULL;
	char err[256] = "";
	if (tok_load_mem(buf, len, "fuzz", 0, &t, err, sizeof err) != 0) {
		if (t != NULL || strncmp(err, "fuzz: ", 6) != 0)
			abort();
		return NULL;
	}
	return t;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	static const char *const fixed[] = {"", "Once upon a time", " the  cat\n",
					    "caf\xc3\xa9 \xe2\x82\xac \xf0\x9f\x99\x82",
					    "\xff\x80\xc3 <0x41>\n<s>\n"};
	struct tok *t = load(data, size);
	if (t) {
		for (size_t i = 0; i < sizeof fixed / sizeof fixed[0]; i++)
			exercise(t, fixed[i], strlen(fixed[i]));
		tok_free(t);
	}
	if (size < 2)
		return 0;
	size_t tlen = (size_t)data[0] | (size_t)data[1] << 8;
	if (tlen > size - 2)
		tlen = size - 2;
	t = load(data + 2 + tlen, size - 2 - tlen);
	if (t) {
		exercise(t, (const char *)data + 2, tlen);
		tok_free(t);
	}
	return 0;
}
