/* test_cli: what the command-line tools share. Number flags take the whole argument
 * within its range and nothing else (no sign tricks, no wrap, no trailing bytes); the
 * generation options of mimir-ref and mimir-sim keep their defaults, accept exactly
 * their ranges, leave other options to the tool (-2) and require --prompt and --tokens.
 * Usage errors go to stderr; the tests check the status only. */
#include <check.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "cli/cli.h"

START_TEST(test_numbers)
{
	long l = 7;
	ck_assert(cli_parse_long("42", 0, 100, &l) && l == 42);
	ck_assert(!cli_parse_long("101", 0, 100, &l) && l == 42);
	ck_assert(!cli_parse_long("-1", 0, 100, &l));
	ck_assert(!cli_parse_long("4x", 0, 100, &l));
	ck_assert(!cli_parse_long("", 0, 100, &l));
	ck_assert(!cli_parse_long("99999999999999999999", 0, 100, &l));
	float f = 0;
	ck_assert(cli_parse_float("0.5", 0, 1, &f) && f == 0.5f);
	ck_assert(!cli_parse_float("nan", 0, 1, &f));
	ck_assert(!cli_parse_float("inf", 0, 1e6f, &f));
	ck_assert(!cli_parse_float("1.5", 0, 1, &f));
	uint64_t u = 0;
	ck_assert(cli_parse_u64("18446744073709551615", &u) && u == UINT64_MAX);
	ck_assert(!cli_parse_u64("18446744073709551616", &u));
	ck_assert(!cli_parse_u64("-1", &u));
	ck_assert(!cli_parse_u64("+1", &u));
}
END_TEST

START_TEST(test_gen_options)
{
	setenv("MIMIR_SHARED", "/data", 1);
	struct cli_gen g;
	cli_gen_defaults(&g);
	ck_assert_str_eq(g.model, "/data/models/stories260K.bin");
	ck_assert_str_eq(g.tokenizer, "/data/models/tok512.bin");
	ck_assert(g.sp.temperature == 0.0f && g.sp.top_p == 0.9f && g.sp.top_k == 0 && g.sp.seed == 1);
	ck_assert_int_eq(g.tokens, -1);
	ck_assert_int_eq(cli_gen_check("t", &g), CLI_EXIT_USAGE); /* no prompt */
	const struct {
		int c;
		const char *a;
		int want;
	} cases[] = {
		{CLI_O_PROMPT, "Once", -1},   {CLI_O_TOKENS, "8", -1},      {CLI_O_TOKENS, "-1", 2},
		{CLI_O_TOKENS, "8a", 2},      {CLI_O_TEMP, "0.8", -1},      {CLI_O_TEMP, "-1", 2},
		{CLI_O_TEMP, "0.0001", 2},    {CLI_O_TOPP, "0.5", -1},      {CLI_O_TOPP, "1.5", 2},
		{CLI_O_TOPK, "40", -1},       {CLI_O_TOPK, "9999999", 2},   {CLI_O_SEED, "123", -1},
		{CLI_O_SEED, "-5", 2},        {CLI_O_IDS, NULL, -1},        {CLI_O_MODEL, "/m.bin", -1},
		{CLI_O_TOK, "/t.bin", -1},    {'h', NULL, -2},              {':', NULL, -2},
		{256, "x", -2},
	};
	for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++)
		ck_assert_msg(cli_gen_option("t", &g, cases[i].c, cases[i].a, "--flag", 1e-3f) == cases[i].want,
			      "case %zu", i);
	ck_assert_str_eq(g.prompt, "Once");
	ck_assert_int_eq(g.tokens, 8);
	ck_assert(g.sp.temperature == 0.8f && g.sp.top_p == 0.5f && g.sp.top_k == 40 && g.sp.seed == 123 && g.ids);
	ck_assert_str_eq(g.model, "/m.bin");
	ck_assert_str_eq(g.tokenizer, "/t.bin");
	ck_assert_int_eq(cli_gen_check("t", &g), -1);
	/* without a floor, a tiny temperature is a temperature */
	ck_assert_int_eq(cli_gen_option("t", &g, CLI_O_TEMP, "0.0001", "--temperature", 0.0f), -1);
	/* a path that does not fit */
	char *big = malloc(5000);
	memset(big, 'a', 4999);
	big[4999] = '\0';
	ck_assert_int_eq(cli_gen_option("t", &g, CLI_O_MODEL, big, "--model", 0.0f), CLI_EXIT_USAGE);
	ck_assert_str_eq(g.model, "/m.bin");
	free(big);
}
END_TEST

Suite *suite(void)
{
	Suite *s = suite_create("cli");
	TCase *tc = tcase_create("core");
	tcase_add_test(tc, test_numbers);
	tcase_add_test(tc, test_gen_options);
	suite_add_tcase(s, tc);
	return s;
}
