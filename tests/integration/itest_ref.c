/* ref: the real build/bin/mimir-ref binary prints the README's expected continuations
 * (text and --ids) for every prompt listed in ../shared/models/README.md, reports its
 * speed on stderr only, samples reproducibly from a seed, and answers bad flags with
 * exit status 2 and bad files with 1. */
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <unistd.h>

#include "refcases.h"
#include "testutil.h"

/* ---- the README's expected vectors ---- */


/* ---- running the binary ---- */

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

/* Runs mimir-ref with the given arguments (NULL-terminated), stdout and stderr apart. */
static struct run run_ref(const char *const *args)
{
	char bin[1024], outp[600], errp[600];
	tu_build(bin, sizeof bin, "bin/mimir-ref");
	snprintf(outp, sizeof outp, "%s/out", tmp);
	snprintf(errp, sizeof errp, "%s/err", tmp);
	char *argv[32];
	int n = 0;
	argv[n++] = bin;
	for (; args[n - 1] && n < 31; n++)
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

static void setup(void)
{
	tu_tmpdir(tmp, sizeof tmp);
	ck_assert(tmp[0]);
}

static void teardown(void) { tu_rmrf(tmp); }

/* ---- tests ---- */

START_TEST(test_readme_text_and_ids)
{
	struct tu_ref_case c[TU_REF_MAX];
	int nc = tu_ref_load(c, TU_REF_MAX, NULL);
	ck_assert_int_ge(nc, 2);
	char model[1024], tokz[1024];
	tu_shared(model, sizeof model, "models/stories260K.bin");
	tu_shared(tokz, sizeof tokz, "models/tok512.bin");
	for (int i = 0; i < nc; i++) {
		/* Text: the prompt and its continuation. The README writes the text on one
		 * line, with the model's newlines shown as spaces. */
		struct run r =
			run_ref((const char *[]){"--model", model, "--tokenizer", tokz, "--prompt",
						 c[i].prompt, "--tokens", "64", NULL});
		ck_assert_msg(r.status == 0, "exit %d: %s", r.status, r.err);
		ck_assert_uint_gt(r.outlen, 0);
		ck_assert_int_eq(r.out[r.outlen - 1], '\n');
		r.out[--r.outlen] = '\0';
		ck_assert_uint_eq(strlen(r.out), r.outlen);
		for (size_t k = 0; k < r.outlen; k++)
			if (r.out[k] == '\n')
				r.out[k] = ' ';
		ck_assert_str_eq(r.out, c[i].text);
		/* Timing goes to stderr, never into the text. */
		ck_assert_ptr_nonnull(strstr(r.err, "tok/s"));
		run_free(&r);

		/* --ids: the new ids only, on one line. Default paths this time. */
		r = run_ref(
			(const char *[]){"--prompt", c[i].prompt, "--tokens", "64", "--ids", NULL});
		ck_assert_msg(r.status == 0, "exit %d: %s", r.status, r.err);
		ck_assert_int_eq(r.out[r.outlen - 1], '\n');
		r.out[r.outlen - 1] = '\0';
		ck_assert_ptr_null(strchr(r.out, '\n'));
		ck_assert_str_eq(r.out, c[i].ids);
		run_free(&r);
	}
}
END_TEST

START_TEST(test_sampling_flags)
{
	/* The same seed gives the same tokens; top-k 1 is greedy whatever the temperature. */
	const char *a[] = {"--prompt", "Once upon a time", "--tokens", "40",
			   "--ids",    "--temperature",    "1.0",      "--top-p",
			   "0.9",      "--seed",           "42",       NULL};
	struct run r1 = run_ref(a), r2 = run_ref(a);
	ck_assert_int_eq(r1.status, 0);
	ck_assert_str_eq(r1.out, r2.out);
	int count = 0;
	for (char *p = r1.out, *end; *p && *p != '\n'; p = end, count++) {
		long v = strtol(p, &end, 10);
		ck_assert(end != p && v >= 0 && v < 512);
	}
	ck_assert_int_le(count, 40);
	run_free(&r1);
	run_free(&r2);
	struct run g =
		run_ref((const char *[]){"--prompt", "One day", "--tokens", "30", "--ids", NULL});
	struct run k = run_ref((const char *[]){"--prompt", "One day", "--tokens", "30", "--ids",
						"--temperature", "1.5", "--top-k", "1", "--seed",
						"9", NULL});
	ck_assert_int_eq(g.status, 0);
	ck_assert_int_eq(k.status, 0);
	ck_assert_str_eq(g.out, k.out);
	run_free(&g);
	run_free(&k);
	/* An empty prompt starts from BOS alone; zero tokens prints only the prompt. */
	struct run e = run_ref((const char *[]){"--prompt", "", "--tokens", "8", NULL});
	ck_assert_int_eq(e.status, 0);
	ck_assert_uint_gt(e.outlen, 1);
	ck_assert_int_ne(e.out[0], ' ');
	run_free(&e);
	struct run z = run_ref((const char *[]){"--prompt", "Hi there", "--tokens", "0", NULL});
	ck_assert_int_eq(z.status, 0);
	ck_assert_str_eq(z.out, "Hi there\n");
	run_free(&z);
}
END_TEST

START_TEST(test_usage_errors)
{
	const char *const *bad[] = {
		(const char *[]){"--bogus", NULL},
		(const char *[]){"--prompt", "x", NULL},             /* no --tokens */
		(const char *[]){"--tokens", "3", NULL},             /* no --prompt */
		(const char *[]){"--prompt", "x", "--tokens", NULL}, /* no value */
		(const char *[]){"--prompt", "x", "--tokens", "abc", NULL},
		(const char *[]){"--prompt", "x", "--tokens", "-1", NULL},
		(const char *[]){"--prompt", "x", "--tokens", "3x", NULL},
		(const char *[]){"--prompt", "x", "--tokens", "3", "--temperature", "-1", NULL},
		(const char *[]){"--prompt", "x", "--tokens", "3", "--temperature", "nan", NULL},
		(const char *[]){"--prompt", "x", "--tokens", "3", "--top-p", "1.5", NULL},
		(const char *[]){"--prompt", "x", "--tokens", "3", "--top-k", "-2", NULL},
		(const char *[]){"--prompt", "x", "--tokens", "3", "--seed", "-5", NULL},
		(const char *[]){"--prompt", "x", "--tokens", "3", "extra", NULL},
		(const char *[]){"--prompt", "x", "--tokens", "600", NULL}, /* beyond the context */
	};
	for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
		struct run r = run_ref(bad[i]);
		ck_assert_msg(r.status == 2, "case %zu: exit %d", i, r.status);
		ck_assert_msg(strstr(r.err, "mimir-ref: ") != NULL, "case %zu: stderr '%s'", i,
			      r.err);
		ck_assert_uint_eq(r.outlen, 0);
		run_free(&r);
	}
	struct run h = run_ref((const char *[]){"--help", NULL});
	ck_assert_int_eq(h.status, 0);
	ck_assert_ptr_nonnull(strstr(h.out, "usage: mimir-ref"));
	run_free(&h);
}
END_TEST

START_TEST(test_runtime_errors)
{
	char p[600];
	snprintf(p, sizeof p, "%s/missing.bin", tmp);
	struct run r =
		run_ref((const char *[]){"--model", p, "--prompt", "x", "--tokens", "3", NULL});
	ck_assert_int_eq(r.status, 1);
	ck_assert_ptr_nonnull(strstr(r.err, "missing.bin: cannot open"));
	run_free(&r);
	/* A truncated checkpoint and a tokenizer that does not fit the model. */
	char real[1024];
	size_t len;
	char *b = tu_read_file(tu_shared(real, sizeof real, "models/stories260K.bin"), &len);
	ck_assert_ptr_nonnull(b);
	snprintf(p, sizeof p, "%s/short.bin", tmp);
	ck_assert_int_eq(tu_write_file(p, b, len - 100), 0);
	free(b);
	r = run_ref((const char *[]){"--model", p, "--prompt", "x", "--tokens", "3", NULL});
	ck_assert_int_eq(r.status, 1);
	ck_assert_ptr_nonnull(strstr(r.err, "short.bin: "));
	ck_assert_ptr_nonnull(strstr(r.err, "does not match the header"));
	run_free(&r);
	b = tu_read_file(tu_shared(real, sizeof real, "models/tok512.bin"), &len);
	ck_assert_ptr_nonnull(b);
	snprintf(p, sizeof p, "%s/tok.bin", tmp);
	ck_assert_int_eq(tu_write_file(p, b, len - 10), 0);
	free(b);
	r = run_ref((const char *[]){"--tokenizer", p, "--prompt", "x", "--tokens", "3", NULL});
	ck_assert_int_eq(r.status, 1);
	ck_assert_ptr_nonnull(strstr(r.err, "tok.bin: truncated"));
	run_free(&r);
}
END_TEST

Suite *suite(void)
{
	Suite *s = suite_create("ref");
	TCase *tc = tcase_create("cli");
	tcase_add_checked_fixture(tc, setup, teardown);
	tcase_add_test(tc, test_readme_text_and_ids);
	tcase_add_test(tc, test_sampling_flags);
	tcase_add_test(tc, test_usage_errors);
	tcase_add_test(tc, test_runtime_errors);
	suite_add_tcase(s, tc);
	return s;
}
