/* tokenizer: encoding the reference prompts gives exactly the ids llama2.c's run.c gave
 * (read from ../shared/models/README.md, the reference, at test time), decode inverts
 * encode for any bytes, the merge rules (best score, leftmost on ties, byte fallback per
 * codepoint) hold on a hand-made vocabulary, and damaged tokenizer files are refused
 * with a message naming the fault. */
#include <math.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "err/err.h"
#include "model/tok.h"
#include "refcases.h"
#include "testutil.h"

/* ---- the README's expected vectors ---- */


static struct tok *load_real(void)
{
	char path[1024], err[256];
	struct tok *t = NULL;
	int rc = tok_load(tu_shared(path, sizeof path, "models/tok512.bin"), 512, &t, err,
			  sizeof err);
	ck_assert_msg(rc == 0, "%s", err);
	return t;
}

static size_t encode(const struct tok *t, const char *s, size_t len, int *ids, size_t cap)
{
	size_t n = 0;
	ck_assert_int_eq(tok_encode(t, s, len, true, false, ids, cap, &n), 0);
	return n;
}

START_TEST(test_readme_prompt_ids)
{
	struct tu_ref_case c[TU_REF_MAX];
	int nc = tu_ref_load(c, TU_REF_MAX, NULL);
	ck_assert_int_ge(nc, 4);
	struct tok *t = load_real();
	for (int i = 0; i < nc; i++) {
		ck_assert_int_gt(c[i].np, 1);
		int ids[300];
		size_t n = encode(t, c[i].prompt, strlen(c[i].prompt), ids, 300);
		ck_assert_msg(n == (size_t)c[i].np, "\"%s\": %zu ids, README has %d", c[i].prompt,
			      n, c[i].np);
		for (size_t j = 0; j < n; j++)
			ck_assert_msg(ids[j] == c[i].pids[j], "\"%s\" id %zu: %d, README has %d",
				      c[i].prompt, j, ids[j], c[i].pids[j]);
	}
	tok_free(t);
}
END_TEST

static void roundtrip(const struct tok *t, const char *s, size_t len)
{
	size_t cap = tok_encode_max(len);
	int *ids = malloc(cap * sizeof *ids);
	ck_assert_ptr_nonnull(ids);
	size_t n = encode(t, s, len, ids, cap);
	ck_assert_int_eq(ids[0], TOK_BOS);
	for (size_t i = 0; i < n; i++)
		ck_assert(ids[i] >= 0 && ids[i] < tok_vocab_size(t));
	char *back = NULL;
	size_t blen = 0;
	ck_assert_int_eq(tok_decode_all(t, ids, n, &back, &blen), 0);
	ck_assert_msg(blen == len && memcmp(back, s, len) == 0,
		      "round trip of %zu bytes gave %zu bytes", len, blen);
	free(back);
	free(ids);
}

START_TEST(test_roundtrip)
{
	struct tok *t = load_real();
	static const char *const cases[] = {
		"",
		"a",
		"Once upon a time",
		" leading space",
		"  two leading spaces",
		"trailing space ",
		"tab\there\nand newlines\n\n",
		"Hello, World! 12345 ?!",
		"na\xc3\xafve caf\xc3\xa9",                    /* 2-byte codepoints */
		"\xe6\x97\xa5\xe6\x9c\xac\xe8\xaa\x9e",        /* CJK, 3-byte */
		"emoji \xf0\x9f\x99\x82 and \xf0\x9d\x84\x9e", /* 4-byte */
		"\xff\xfe invalid",
		"\xc3",
		"\x80 lone continuation",                    /* broken UTF-8 */
		"\xe2\x82\xac\x80\x80\x80\x80 overlong run", /* > 4 bytes in a run */
		"\x01\x1b[31mred\x7f",
		"<0x41> <unk> \n<s>\n </s>", /* look like specials */
	};
	for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++)
		roundtrip(t, cases[i], strlen(cases[i]));
	/* Every byte value, NUL included, in one string and each alone. */
	char all[256];
	for (int b = 0; b < 256; b++) {
		all[b] = (char)b;
		roundtrip(t, &all[b], 1);
	}
	roundtrip(t, all, sizeof all);
	tok_free(t);
}
END_TEST

START_TEST(test_byte_fallback_and_decode)
{
	struct tok *t = load_real();
	int ids[16];
	/* 0xFF is no codepoint of the vocabulary: the dummy-prefix space, then byte 0xFF. */
	size_t n = encode(t, "\xff", 1, ids, 16);
	ck_assert_uint_eq(n, 3);
	size_t l;
	const char *p = tok_piece(t, ids[1], &l);
	ck_assert(l == 1 && p[0] == ' ');
	ck_assert_int_eq(ids[2], TOK_BYTE0 + 0xFF);
	/* A 3-byte codepoint in the vocabulary ("\u20ac" is id 503) is one piece; one that
	 * is missing ("\u65e5") falls back to its three bytes. */
	n = encode(t, "\xe2\x82\xac", 3, ids, 16);
	ck_assert_uint_eq(n, 3);
	p = tok_piece(t, ids[2], &l);
	ck_assert(ids[2] == 503 && l == 3 && memcmp(p, "\xe2\x82\xac", 3) == 0);
	n = encode(t, "\xe6\x97\xa5", 3, ids, 16);
	ck_assert_uint_eq(n, 5);
	ck_assert_int_eq(ids[2], TOK_BYTE0 + 0xE6);
	ck_assert_int_eq(ids[3], TOK_BYTE0 + 0x97);
	ck_assert_int_eq(ids[4], TOK_BYTE0 + 0xA5);
	/* No BOS requested: no BOS, and EOS on request. */
	ck_assert_int_eq(tok_encode(t, "hi", 2, false, true, ids, 16, &n), 0);
	ck_assert_int_ne(ids[0], TOK_BOS);
	ck_assert_int_eq(ids[n - 1], TOK_EOS);
	ck_assert_int_eq(tok_encode(t, "hi", 2, true, true, ids, 4, &n), ERR_RANGE);

	/* After BOS the dummy-prefix space is dropped, elsewhere kept; bytes decode. */
	ck_assert_int_eq(tok_decode(t, TOK_BOS, 403, &p, &l), 0);
	ck_assert(l == 4 && memcmp(p, "Once", 4) == 0);
	ck_assert_int_eq(tok_decode(t, 378, 403, &p, &l), 0);
	ck_assert(l == 5 && memcmp(p, " Once", 5) == 0);
	ck_assert_int_eq(tok_decode(t, 5, TOK_BYTE0 + 'A', &p, &l), 0);
	ck_assert(l == 1 && p[0] == 'A');
	ck_assert_int_eq(tok_decode(t, 5, TOK_BOS, &p, &l), 0);
	ck_assert_uint_eq(l, 0);
	ck_assert_int_eq(tok_decode(t, 5, 512, &p, &l), ERR_RANGE);
	ck_assert_int_eq(tok_decode(t, 5, -1, &p, &l), ERR_RANGE);
	ck_assert_ptr_null(tok_piece(t, 512, &l));
	tok_free(t);
}
END_TEST

/* ---- an independent, naive encoder: run.c's procedure step by step (linear lookups,
 * rescan every pair each round), against which the real one is compared ---- */

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
	char buf[2 * TOK_MAX_TOKEN_LENGTH];
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

static uint64_t rnd_state = 88172645463325252ull;
static uint32_t rnd(void)
{
	rnd_state ^= rnd_state << 13;
	rnd_state ^= rnd_state >> 7;
	rnd_state ^= rnd_state << 17;
	return (uint32_t)(rnd_state >> 32);
}

/* Text built from story-like words, spaces, punctuation, UTF-8 and stray bytes. */
static size_t random_text(char *buf, size_t cap)
{
	static const char *const parts[] = {"Once",
					    " upon",
					    " a",
					    " time",
					    " the",
					    " little",
					    " dog",
					    " was",
					    " sad",
					    "Lily",
					    " and",
					    " Tom",
					    " went",
					    " to",
					    " park",
					    ".",
					    ",",
					    "!",
					    "\"",
					    "'s",
					    " ",
					    "  ",
					    "\n",
					    "play",
					    "ing",
					    "ed",
					    "\xc3\xa9",
					    "\xe2\x80\x9c",
					    "\xe2\x82\xac",
					    "\xf0\x9f\x99\x82",
					    "\xff",
					    "\x80",
					    "\xc3",
					    "\t",
					    "<0x41>",
					    "the",
					    "happy",
					    "big",
					    "box",
					    "xy"};
	size_t n = 0, want = rnd() % (cap / 2);
	while (n < want) {
		const char *p = parts[rnd() % (sizeof parts / sizeof parts[0])];
		size_t l = strlen(p);
		if (n + l >= cap)
			break;
		memcpy(buf + n, p, l);
		n += l;
	}
	return n;
}

static void compare_naive(const struct tok *t, int rounds)
{
	char text[256];
	int a[300], b[300];
	for (int r = 0; r < rounds; r++) {
		size_t len = random_text(text, sizeof text);
		size_t na = encode(t, text, len, a, 300);
		size_t nb = naive_encode(t, text, len, b);
		ck_assert_msg(na == nb, "round %d: %zu ids, naive %zu", r, na, nb);
		ck_assert_msg(memcmp(a, b, na * sizeof *a) == 0, "round %d: ids differ", r);
	}
}

START_TEST(test_matches_naive_procedure)
{
	struct tok *t = load_real();
	compare_naive(t, 400);
	/* The README prompts through the naive encoder too: the oracle itself is sound. */
	int ids[300];
	size_t n = naive_encode(t, "Once upon a time", 16, ids);
	ck_assert_uint_eq(n, 5);
	ck_assert(ids[1] == 403 && ids[2] == 407 && ids[3] == 261 && ids[4] == 378);
	tok_free(t);
}
END_TEST

START_TEST(test_long_text)
{
	/* 512 KiB: fine for the heap-driven merge; a rescan of every pair per merge (run.c)
	 * would take hours here and run into the suite's timeout. */
	struct tok *t = load_real();
	size_t len = 512 * 1024, at = 0;
	char *text = malloc(len);
	ck_assert_ptr_nonnull(text);
	while (at < len) {
		char chunk[256];
		size_t l = random_text(chunk, sizeof chunk);
		if (l > len - at)
			l = len - at;
		memcpy(text + at, chunk, l);
		at += l;
	}
	roundtrip(t, text, len);
	free(text);
	tok_free(t);
}
END_TEST

/* ---- hand-made tokenizers ---- */

struct tb {
	unsigned char *buf;
	size_t len, cap;
};

static void tb_put(struct tb *b, const void *p, size_t n)
{
	if (b->len + n > b->cap) {
		b->cap = (b->len + n) * 2 + 64;
		b->buf = realloc(b->buf, b->cap);
		ck_assert_ptr_nonnull(b->buf);
	}
	memcpy(b->buf + b->len, p, n);
	b->len += n;
}

static void tb_i32(struct tb *b, int32_t v) { tb_put(b, &v, 4); }

static void tb_tok(struct tb *b, float score, const char *s)
{
	tb_put(b, &score, 4);
	tb_i32(b, (int32_t)strlen(s));
	tb_put(b, s, strlen(s));
}

/* The fixed 259 entries, then extra pieces with their scores. */
static struct tb make_tok(const char *const *pieces, const float *scores, int n)
{
	struct tb b = {0};
	tb_i32(&b, 8);
	tb_tok(&b, 0, "<unk>");
	tb_tok(&b, 0, "\n<s>\n");
	tb_tok(&b, 0, "\n</s>\n");
	for (int i = 0; i < 256; i++) {
		char s[8];
		snprintf(s, sizeof s, "<0x%02X>", i);
		tb_tok(&b, 0, s);
	}
	for (int i = 0; i < n; i++)
		tb_tok(&b, scores[i], pieces[i]);
	return b;
}

static void expect_ids(const struct tok *t, const char *text, const int *want, size_t nwant)
{
	int ids[64];
	size_t n = encode(t, text, strlen(text), ids, 64);
	ck_assert_msg(n == nwant, "\"%s\": %zu ids, want %zu", text, n, nwant);
	for (size_t i = 0; i < n; i++)
		ck_assert_msg(ids[i] == want[i], "\"%s\" id %zu: %d, want %d", text, i, ids[i],
			      want[i]);
}

START_TEST(test_merge_rules)
{
	/* ids:               259  260  261  262  263   264   265    266   267  268   269 */
	const char *p[] = {" ",
			   "a",
			   "b",
			   "c",
			   "ab",
			   "bc",
			   "abc",
			   "ba",
			   "x",
			   "y",
			   "xy",
			   /* 270 */ "\xc3\xa9",
			   /* 271: duplicate, never returned */ "ab"};
	const float s[] = {-5, -5, -5, -5, 1, 2, 3, 1, -5, -5, -2e10f, -5, 9};
	struct tb b = make_tok(p, s, 13);
	struct tok *t = NULL;
	char err[256];
	ck_assert_msg(tok_load_mem(b.buf, b.len, "hand", 0, &t, err, sizeof err) == 0, "%s", err);
	ck_assert_int_eq(tok_vocab_size(t), 272);
	/* bc (2) beats ab (1), then a+bc = abc (3). */
	expect_ids(t, "abc", (int[]){1, 259, 265}, 3);
	/* ab and ba tie at 1: the leftmost pair merges first, leaving ab a. */
	expect_ids(t, "aba", (int[]){1, 259, 263, 260}, 4);
	/* A merge scoring at or below -1e10 never happens (run.c's starting best). */
	expect_ids(t, "xy", (int[]){1, 259, 267, 268}, 4);
	/* A whole 2-byte codepoint in the vocabulary is one piece; unknown ones fall back. */
	expect_ids(t, "\xc3\xa9", (int[]){1, 259, 270}, 3);
	expect_ids(t, "\xc3\xa8", (int[]){1, 259, 3 + 0xC3, 3 + 0xA8}, 4);
	/* Text that spells a byte token or BOS stays text. */
	roundtrip(t, "<0x41>", 6);
	roundtrip(t, "\n<s>\n", 5);
	compare_naive(t, 500);
	tok_free(t);
	free(b.buf);

	/* Without a " " piece the dummy prefix is the byte token for 0x20. */
	const char *q[] = {"a"};
	b = make_tok(q, (const float[]){0}, 1);
	ck_assert_int_eq(tok_load_mem(b.buf, b.len, "nospace", 260, &t, err, sizeof err), 0);
	expect_ids(t, "a", (int[]){1, 3 + ' ', 259}, 3);
	roundtrip(t, " a b", 4);
	tok_free(t);
	free(b.buf);
}
END_TEST

/* ---- broken files ---- */

static void put_i32(unsigned char *p, int32_t v) { memcpy(p, &v, 4); }
static void put_f32(unsigned char *p, float v) { memcpy(p, &v, 4); }

/* Offset of token i's score in a tokenizer image. */
static size_t tok_off(const unsigned char *b, int i)
{
	size_t at = 4;
	for (int k = 0; k < i; k++) {
		int32_t l;
		memcpy(&l, b + at + 4, 4);
		at += 8 + (size_t)l;
	}
	return at;
}

static void expect_refused(const void *buf, size_t len, int vocab, const char *what,
			   const char *needle)
{
	struct tok *t = (struct tok *)1;
	char err[256] = "";
	int rc = tok_load_mem(buf, len, "bad.bin", vocab, &t, err, sizeof err);
	ck_assert_msg(rc < 0, "%s: accepted", what);
	ck_assert_ptr_null(t);
	ck_assert_msg(strncmp(err, "bad.bin: ", 9) == 0, "%s: message '%s' lacks the name", what,
		      err);
	ck_assert_msg(strstr(err, needle) != NULL, "%s: message '%s' lacks '%s'", what, err,
		      needle);
}

START_TEST(test_broken_files)
{
	char path[1024];
	size_t len = 0;
	unsigned char *real = (unsigned char *)tu_read_file(
		tu_shared(path, sizeof path, "models/tok512.bin"), &len);
	ck_assert_ptr_nonnull(real);
	unsigned char *b = malloc(len + 64);
	ck_assert_ptr_nonnull(b);
	struct tok *t = NULL;
	char err[256];
	ck_assert_int_eq(tok_load_mem(real, len, "ok", 512, &t, err, sizeof err), 0);
	tok_free(t);
	ck_assert_int_eq(tok_load_mem(real, len, "ok", 0, &t, err, sizeof err), 0);
	ck_assert_int_eq(tok_vocab_size(t), 512);
	tok_free(t);

	/* Truncated anywhere. */
	size_t cuts[] = {0, 3, 4, 5, 11, 12, 13, len / 2, len - 1};
	for (size_t i = 0; i < sizeof cuts / sizeof cuts[0]; i++)
		expect_refused(real, cuts[i], 512, "truncated",
			       cuts[i] < 4 ? "shorter" : "truncated");
	/* Trailing junk, and a vocabulary size that disagrees with the model. */
	memcpy(b, real, len);
	memset(b + len, 0, 64);
	expect_refused(b, len + 1, 512, "1 trailing byte", "trailing");
	expect_refused(b, len + 9, 512, "junk token", "trailing");
	expect_refused(real, len, 511, "vocab 511", "trailing");
	expect_refused(real, len, 513, "vocab 513", "vocab_size is 513");
	/* max_token_length out of range. */
	int32_t bad_max[] = {0, -1, 100000};
	for (size_t i = 0; i < 3; i++) {
		memcpy(b, real, len);
		put_i32(b, bad_max[i]);
		expect_refused(b, len, 512, "max_token_length", "max_token_length");
	}
	/* A token longer than max_token_length, of length 0, negative, or past the end. */
	size_t at = tok_off(real, 300);
	int32_t bad_len[] = {8, 0, -3, 1 << 30};
	for (size_t i = 0; i < 4; i++) {
		memcpy(b, real, len);
		put_i32(b + at + 4, bad_len[i]);
		expect_refused(b, len, 512, "token length", "token 300");
	}
	/* Non-finite scores. */
	float bad_score[] = {NAN, INFINITY, -INFINITY};
	for (size_t i = 0; i < 3; i++) {
		memcpy(b, real, len);
		put_f32(b + at, bad_score[i]);
		expect_refused(b, len, 512, "score", "token 300 has a non-finite score");
	}
	/* The byte-fallback range must spell its bytes. */
	memcpy(b, real, len);
	b[tok_off(real, 3 + 0x41) + 8 + 4] = '2'; /* <0x41> -> <0x42> */
	expect_refused(b, len, 512, "byte piece",
		       "token 68 must be the byte-fallback piece <0x41>");
	/* Too few tokens for the layout. */
	expect_refused(real, tok_off(real, 200), 0, "200 tokens", "needs at least 259");
	free(b);
	free(real);

	/* From the file system: a missing file and a directory. */
	ck_assert_int_eq(tok_load("/nonexistent/tok.bin", 0, &t, err, sizeof err), ERR_NOT_FOUND);
	ck_assert_ptr_nonnull(strstr(err, "/nonexistent/tok.bin: cannot open"));
	ck_assert_int_lt(tok_load("/", 0, &t, err, sizeof err), 0);
	ck_assert_ptr_nonnull(strstr(err, "not a regular file"));
}
END_TEST

Suite *suite(void)
{
	Suite *s = suite_create("tokenizer");
	TCase *tc = tcase_create("reference");
	tcase_add_test(tc, test_readme_prompt_ids);
	tcase_add_test(tc, test_roundtrip);
	tcase_add_test(tc, test_byte_fallback_and_decode);
	tcase_add_test(tc, test_matches_naive_procedure);
	tcase_add_test(tc, test_long_text);
	suite_add_tcase(s, tc);
	tc = tcase_create("rules");
	tcase_add_test(tc, test_merge_rules);
	tcase_add_test(tc, test_broken_files);
	suite_add_tcase(s, tc);
	return s;
}
