/* test_oai: the OpenAI-compatible API's request rules (defaults as OpenAI's, every value
 * Mimir cannot honour refused with its field named) and its UTF-8 cleaner (whole
 * characters only, a character cut by a token boundary held, invalid bytes replaced).
 * The API end to end, with the real services, is in itest_generate (test_openai). */
#include <check.h>
#include <string.h>

#include "err/err.h"
#include "oai/oai.h"

static int parse(const char *text, struct oai_completion *c, const char **field)
{
	static json_t *keep; /* the strings of c point into the document */
	json_decref(keep);
	keep = json_loads(text, 0, NULL);
	ck_assert_msg(keep, "bad test JSON: %s", text);
	char why[256] = "";
	int rc = oai_parse_completion(keep, 16, c, why, sizeof why, field);
	ck_assert(rc == 0 || why[0]);
	return rc;
}

START_TEST(test_defaults)
{
	struct oai_completion c;
	const char *f;
	ck_assert_int_eq(parse("{\"model\": \"ses_0123456789abcdef\", \"prompt\": \"Once\"}", &c, &f), 0);
	ck_assert_str_eq(c.model, "ses_0123456789abcdef");
	ck_assert_str_eq(c.prompt, "Once");
	ck_assert_int_eq(c.max_tokens, 16);
	ck_assert_double_eq(c.temperature, 1);
	ck_assert_double_eq(c.top_p, 1);
	ck_assert(!c.stream && !c.echo && !c.has_seed && c.n_stops == 0);
	ck_assert_int_eq(parse("{\"model\": \"m\", \"prompt\": [\"p\"], \"max_tokens\": null, \"temperature\": 0,"
			       " \"stream\": true, \"stream_options\": {\"include_usage\": true}, \"stop\": \"\\n\","
			       " \"top_k\": 5, \"top_p\": 0.5, \"seed\": 9, \"n\": 1, \"logprobs\": null,"
			       " \"presence_penalty\": 0, \"logit_bias\": {}, \"user\": \"u\", \"extra\": 1}",
			       &c, &f),
			 0);
	ck_assert_int_eq(c.max_tokens, 16);
	ck_assert(c.stream && c.include_usage && c.has_seed && c.seed == 9 && c.top_k == 5);
	ck_assert_int_eq(c.n_stops, 1);
	ck_assert_int_eq(c.stop_len[0], 1);
}
END_TEST

START_TEST(test_refusals)
{
	static const char *const cases[][2] = {
		{"[]", ""},
		{"{\"prompt\": \"x\"}", "model"},
		{"{\"model\": \"m\"}", "prompt"},
		{"{\"model\": \"m\", \"prompt\": [1, 2]}", "prompt"},
		{"{\"model\": \"m\", \"prompt\": [\"a\", \"b\"]}", "prompt"},
		{"{\"model\": \"m\", \"prompt\": \"x\", \"max_tokens\": 0}", "max_tokens"},
		{"{\"model\": \"m\", \"prompt\": \"x\", \"max_tokens\": 1.5}", "max_tokens"},
		{"{\"model\": \"m\", \"prompt\": \"x\", \"temperature\": 3}", "temperature"},
		{"{\"model\": \"m\", \"prompt\": \"x\", \"temperature\": \"hot\"}", "temperature"},
		{"{\"model\": \"m\", \"prompt\": \"x\", \"top_p\": 0}", "top_p"},
		{"{\"model\": \"m\", \"prompt\": \"x\", \"top_p\": 0.9}", "top_p"},
		{"{\"model\": \"m\", \"prompt\": \"x\", \"seed\": -1}", "seed"},
		{"{\"model\": \"m\", \"prompt\": \"x\", \"stream\": 1}", "stream"},
		{"{\"model\": \"m\", \"prompt\": \"x\", \"stop\": [\"a\", \"b\", \"c\", \"d\", \"e\"]}", "stop"},
		{"{\"model\": \"m\", \"prompt\": \"x\", \"stop\": \"\"}", "stop"},
		{"{\"model\": \"m\", \"prompt\": \"x\", \"n\": 2}", "n"},
		{"{\"model\": \"m\", \"prompt\": \"x\", \"best_of\": 3}", "best_of"},
		{"{\"model\": \"m\", \"prompt\": \"x\", \"logprobs\": 5}", "logprobs"},
		{"{\"model\": \"m\", \"prompt\": \"x\", \"suffix\": \"end\"}", "suffix"},
		{"{\"model\": \"m\", \"prompt\": \"x\", \"frequency_penalty\": 0.5}", "frequency_penalty"},
		{"{\"model\": \"m\", \"prompt\": \"x\", \"logit_bias\": {\"50\": 1}}", "logit_bias"},
	};
	for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
		struct oai_completion c;
		const char *f = NULL;
		ck_assert_msg(parse(cases[i][0], &c, &f) == ERR_INVALID, "accepted %s", cases[i][0]);
		ck_assert_msg(!strcmp(f, cases[i][1]), "%s: field %s, want %s", cases[i][0], f, cases[i][1]);
	}
}
END_TEST

static const char *clean(const char *in, size_t len, bool final, size_t *keep)
{
	static char out[256];
	size_t n = oai_utf8_clean(in, len, final, out, keep);
	out[n] = '\0';
	return out;
}

START_TEST(test_utf8)
{
	size_t keep;
	ck_assert_str_eq(clean("caf\xc3\xa9", 5, false, &keep), "caf\xc3\xa9");
	ck_assert_int_eq(keep, 0);
	/* a character cut by the piece's end is held, then completed by the next piece */
	ck_assert_str_eq(clean("a\xf0\x9f\x98", 4, false, &keep), "a");
	ck_assert_int_eq(keep, 3);
	ck_assert_str_eq(clean("\xf0\x9f\x98\x80", 4, false, &keep), "\xf0\x9f\x98\x80");
	/* at the end, or when what follows cannot continue it, it is replaced */
	ck_assert_str_eq(clean("a\xf0\x9f\x98", 4, true, &keep), "a\xef\xbf\xbd\xef\xbf\xbd\xef\xbf\xbd");
	ck_assert_int_eq(keep, 0);
	ck_assert_str_eq(clean("\xe2x", 2, false, &keep), "\xef\xbf\xbdx");
	/* overlong, surrogate, beyond U+10FFFF, lone continuation */
	ck_assert_str_eq(clean("\xc0\xaf", 2, false, &keep), "\xef\xbf\xbd\xef\xbf\xbd");
	ck_assert_str_eq(clean("\xed\xa0\x80", 3, false, &keep), "\xef\xbf\xbd\xef\xbf\xbd\xef\xbf\xbd");
	ck_assert_str_eq(clean("\xf4\x90\x80\x80", 4, false, &keep),
			 "\xef\xbf\xbd\xef\xbf\xbd\xef\xbf\xbd\xef\xbf\xbd");
	ck_assert_str_eq(clean("\x80", 1, false, &keep), "\xef\xbf\xbd");
}
END_TEST

Suite *suite(void)
{
	Suite *s = suite_create("oai");
	TCase *tc = tcase_create("core");
	tcase_add_test(tc, test_defaults);
	tcase_add_test(tc, test_refusals);
	tcase_add_test(tc, test_utf8);
	suite_add_tcase(s, tc);
	return s;
}
