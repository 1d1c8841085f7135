/* sim: the real build/bin/mimir-sim generates, with 3 parties, exactly mimir-ref's
 * greedy tokens for 64 new tokens on every prompt of ../shared/models/README.md, and
 * with 2 and 5 parties on one of them; its text output is mimir-ref's byte for byte; a
 * padded prompt gives the same tokens; rounds, bytes and time go to stderr only; bad
 * flags exit 2, bad files exit 1. With MIMIR_TEST_DEPTH=quick (the sanitizer and clang
 * runs of CI) the same properties on the first prompt and fewer tokens. */
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <unistd.h>

#include "refcases.h"
#include "testutil.h"

struct run {
	int status; /* exit status, or -1 if it did not exit normally */
	char *out, *err;
	size_t outlen;
};

static char tmp[512];

static void run_free(struct run *r)
{
	free(r->out);
	free(r->err);
}

/* Runs bin/<tool> with the given arguments (NULL-terminated), stdout and stderr apart. */
static struct run run_tool(const char *tool, const char *const *args)
{
	char bin[1024], rel[64], outp[600], errp[600];
	snprintf(rel, sizeof rel, "bin/%s", tool);
	tu_build(bin, sizeof bin, rel);
	snprintf(outp, sizeof outp, "%s/out", tmp);
	snprintf(errp, sizeof errp, "%s/err", tmp);
	char *argv[40];
	int n = 0;
	argv[n++] = bin;
	for (; args[n - 1] && n < 39; n++)
		argv[n] = (char *)args[n - 1];
	argv[n] = NULL;
	pid_t pid = fork();
	ck_assert_int_ge(pid, 0);
	if (pid == 0) {
		int o = open(outp, O_WRONLY | O_CREAT | O_TRUNC, 0644);
		int e = open(errp, O_WRONLY | O_CREAT | O_TRUNC, 0644);
		if (o < 0 || e < 0)
			_exit(127);
		dup2(o, 1);
		dup2(e, 2);
		execv(bin, argv);
		_exit(127);
	}
	int st;
	ck_assert_int_eq(waitpid(pid, &st, 0), pid);
	struct run r = {.status = WIFEXITED(st) ? WEXITSTATUS(st) : -1};
	ck_assert_msg(r.status != 127, "cannot run %s (build it first)", bin);
	r.out = tu_read_file(outp, &r.outlen);
	r.err = tu_read_file(errp, NULL);
	ck_assert(r.out && r.err);
	return r;
}

/* The ids line of a run, without its newline (asserts a clean exit). */
static char *ids_of(struct run *r)
{
	ck_assert_msg(r->status == 0, "exit %d: %s", r->status, r->err);
	ck_assert_uint_gt(r->outlen, 0);
	ck_assert_int_eq(r->out[r->outlen - 1], '\n');
	r->out[r->outlen - 1] = '\0';
	ck_assert_ptr_null(strchr(r->out, '\n'));
	return r->out;
}

/* The first n ids of a space-separated list, into buf. */
static const char *first_ids(char *buf, size_t cap, const char *ids, int n)
{
	snprintf(buf, cap, "%s", ids);
	char *p = buf;
	for (int i = 0; i < n && p; i++)
		p = strchr(p + (i ? 1 : 0), ' ');
	if (p)
		*p = '\0';
	return buf;
}

static void setup(void)
{
	tu_tmpdir(tmp, sizeof tmp);
	ck_assert(tmp[0]);
}

static void teardown(void) { tu_rmrf(tmp); }

/* The stderr report of mimir-sim: rounds and bytes, never on stdout. */
static void check_report(const struct run *r)
{
	ck_assert_ptr_nonnull(strstr(r->err, "rounds"));
	ck_assert_ptr_nonnull(strstr(r->err, "MB per party"));
	ck_assert_ptr_nonnull(strstr(r->err, "tok/s"));
	ck_assert_ptr_null(strstr(r->out, "rounds"));
}

/* ---- tests ---- */

START_TEST(test_three_parties_every_prompt)
{
	struct tu_ref_case c[TU_REF_MAX];
	int nc = tu_ref_load(c, TU_REF_MAX, NULL);
	ck_assert_int_ge(nc, 2);
	const int ntok = tu_quick() ? 16 : 64;
	char ntoks[16], want[1024];
	snprintf(ntoks, sizeof ntoks, "%d", ntok);
	for (int i = 0; i < (tu_quick() ? 1 : nc); i++) {
		struct run ref =
			run_tool("mimir-ref", (const char *[]){"--prompt", c[i].prompt, "--tokens",
							       ntoks, "--ids", NULL});
		ck_assert_str_eq(ids_of(&ref), first_ids(want, sizeof want, c[i].ids, ntok));
		struct run sim = run_tool("mimir-sim", (const char *[]){"--prompt", c[i].prompt,
									"--tokens", ntoks, "--ids",
									"--parties", "3", NULL});
		char *got = ids_of(&sim);
		ck_assert_msg(strcmp(got, want) == 0, "\"%s\":\n sim %s\n ref %s", c[i].prompt, got,
			      want);
		check_report(&sim);
		printf("sim: 3 parties, \"%s\": %d tokens equal mimir-ref's\n%s", c[i].prompt, ntok,
		       sim.err);
		run_free(&ref);
		run_free(&sim);
	}
}
END_TEST

START_TEST(test_two_and_five_parties)
{
	struct tu_ref_case c[TU_REF_MAX];
	int nc = tu_ref_load(c, TU_REF_MAX, NULL);
	ck_assert_int_ge(nc, 1);
	static const char *const parties[] = {"2", "5"};
	const int ntok = tu_quick() ? 8 : 64;
	char ntoks[16], want[1024];
	snprintf(ntoks, sizeof ntoks, "%d", ntok);
	first_ids(want, sizeof want, c[0].ids, ntok);
	for (int k = 0; k < 2; k++) {
		struct run sim = run_tool("mimir-sim", (const char *[]){"--prompt", c[0].prompt,
									"--tokens", ntoks, "--ids",
									"--parties", parties[k], NULL});
		ck_assert_str_eq(ids_of(&sim), want);
		check_report(&sim);
		printf("sim: %s parties, \"%s\": %d tokens equal mimir-ref's\n%s", parties[k],
		       c[0].prompt, ntok, sim.err);
		run_free(&sim);
	}
}
END_TEST

/* Text mode prints what mimir-ref prints, byte for byte; a padded prompt gives the
 * same continuation (default parties). */
START_TEST(test_text_and_padding)
{
	struct tu_ref_case c[TU_REF_MAX];
	int nc = tu_ref_load(c, TU_REF_MAX, NULL);
	ck_assert_int_ge(nc, 1);
	const char *prompt = c[nc - 1].prompt;
	const int ntok = tu_quick() ? 8 : 24;
	char ntoks[16];
	snprintf(ntoks, sizeof ntoks, "%d", ntok);
	struct run ref = run_tool("mimir-ref", (const char *[]){"--prompt", prompt, "--tokens",
								ntoks, NULL});
	struct run sim = run_tool("mimir-sim", (const char *[]){"--prompt", prompt, "--tokens",
								ntoks, NULL});
	ck_assert_int_eq(ref.status, 0);
	ck_assert_msg(sim.status == 0, "%s", sim.err);
	ck_assert_uint_eq(sim.outlen, ref.outlen);
	ck_assert_int_eq(memcmp(sim.out, ref.out, ref.outlen), 0);
	run_free(&ref);
	run_free(&sim);

	struct run pad = run_tool("mimir-sim", (const char *[]){"--prompt", prompt, "--tokens",
								ntoks, "--ids", "--pad", "16", NULL});
	char want[1024];
	ck_assert_str_eq(ids_of(&pad), first_ids(want, sizeof want, c[nc - 1].ids, ntok));
	ck_assert_ptr_nonnull(strstr(pad.err, "in 16 positions"));
	run_free(&pad);
}
END_TEST

START_TEST(test_usage_and_file_errors)
{
	static const char *const bad[][12] = {
		{"--tokens", "4", NULL},
		{"--prompt", "x", NULL},
		{"--prompt", "x", "--tokens", "4", "--parties", "1", NULL},
		{"--prompt", "x", "--tokens", "4", "--parties", "17", NULL},
		{"--prompt", "x", "--tokens", "4", "--pad", "-1", NULL},
		{"--prompt", "x", "--tokens", "4", "--frac-bits", "30", NULL},
		{"--prompt", "x", "--tokens", "4", "--temperature", "1", NULL}, /* top-p 0.9 */
		{"--prompt", "x", "--tokens", "4", "--temperature", "1", "--top-p", "0.5", NULL},
		{"--prompt", "x", "--tokens", "600", NULL},
		{"--prompt", "x", "--tokens", "500", "--pad", "64", NULL},
		{"--prompt", "x", "--tokens", "4", "--bogus", NULL},
	};
	for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
		struct run r = run_tool("mimir-sim", bad[i]);
		ck_assert_msg(r.status == 2, "case %zu: exit %d (%s)", i, r.status, r.err);
		ck_assert_ptr_nonnull(strstr(r.err, "mimir-sim: "));
		ck_assert_uint_eq(r.outlen, 0);
		run_free(&r);
	}
	/* a missing and a truncated model: exit 1 with the file named */
	char trunc[600], model[1024];
	snprintf(trunc, sizeof trunc, "%s/short.bin", tmp);
	size_t len;
	char *buf = tu_read_file(tu_shared(model, sizeof model, "models/stories260K.bin"), &len);
	ck_assert_ptr_nonnull(buf);
	ck_assert_int_eq(tu_write_file(trunc, buf, len / 2), 0);
	free(buf);
	const char *paths[] = {"/nonexistent/model.bin", trunc};
	for (int i = 0; i < 2; i++) {
		struct run r = run_tool("mimir-sim", (const char *[]){"--model", paths[i], "--prompt",
								      "x", "--tokens", "2", NULL});
		ck_assert_int_eq(r.status, 1);
		ck_assert_ptr_nonnull(strstr(r.err, i ? "short.bin" : "model.bin"));
		run_free(&r);
	}
	/* help */
	struct run h = run_tool("mimir-sim", (const char *[]){"--help", NULL});
	ck_assert_int_eq(h.status, 0);
	ck_assert_ptr_nonnull(strstr(h.out, "--parties"));
	run_free(&h);
}
END_TEST

/* Sampling with top-k is reproducible from the seed. */
START_TEST(test_sampling_reproducible)
{
	const char *args[] = {"--prompt", "Once upon a time", "--tokens", "6", "--ids",
			      "--temperature", "0.9", "--top-k", "5", "--seed", "11", NULL};
	struct run a = run_tool("mimir-sim", args), b = run_tool("mimir-sim", args);
	ck_assert_str_eq(ids_of(&a), ids_of(&b));
	run_free(&a);
	run_free(&b);
}
END_TEST

Suite *suite(void)
{
	Suite *s = suite_create("sim");
	TCase *tc = tcase_create("core");
	tcase_add_checked_fixture(tc, setup, teardown);
	tcase_set_timeout(tc, 10800); /* full: 11 to 25 min here; quick: a few minutes */
	tcase_add_test(tc, test_usage_and_file_errors);
	tcase_add_test(tc, test_text_and_padding);
	tcase_add_test(tc, test_sampling_reproducible);
	tcase_add_test(tc, test_two_and_five_parties);
	tcase_add_test(tc, test_three_parties_every_prompt);
	suite_add_tcase(s, tc);
	return s;
}
