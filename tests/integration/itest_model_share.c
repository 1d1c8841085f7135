/* mimir-model, driven as a model owner and the parties drive it: keygen writes a 0600
 * secret key and a public key; share splits the real stories260K among three parties
 * (files 0600, progress as plain lines when stderr is not a terminal and as a redrawn bar
 * when it is); inspect reads a header without a key; open verifies a file with its own
 * party's key and refuses another's; combine of all shares reproduces the checkpoint
 * exactly and the digest share printed; and every refusal (existing output, two splits,
 * a missing share, a damaged file, a saturating weight, a wrong checkpoint, a secret
 * key given as a public one) exits 1 with its message, every bad command line 2. */
#include <stdarg.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "testutil.h"

static char bin[512], dir[512], model[1024], out_path[600], err_path[600];
static char *out_text, *err_text;

static void setup(void)
{
	tu_build(bin, sizeof bin, "bin/mimir-model");
	ck_assert_msg(access(bin, X_OK) == 0, "%s missing: build it first", bin);
	tu_shared(model, sizeof model, "models/stories260K.bin");
	tu_tmpdir(dir, sizeof dir);
	ck_assert_msg(dir[0], "no temporary directory");
	snprintf(out_path, sizeof out_path, "%s/.out", dir);
	snprintf(err_path, sizeof err_path, "%s/.err", dir);
}

static void teardown(void)
{
	free(out_text);
	free(err_text);
	out_text = err_text = NULL;
	tu_rmrf(dir);
}

/* Runs "mimir-model ARGS" (shell words); returns the exit status, keeps stdout/stderr. */
static int mm(const char *fmt, ...) __attribute__((format(printf, 1, 2)));
static int mm(const char *fmt, ...)
{
	char args[4096];
	va_list ap;
	va_start(ap, fmt);
	vsnprintf(args, sizeof args, fmt, ap);
	va_end(ap);
	int st = tu_system("%s %s >%s 2>%s", bin, args, out_path, err_path);
	free(out_text);
	free(err_text);
	out_text = tu_read_file(out_path, NULL);
	err_text = tu_read_file(err_path, NULL);
	ck_assert(out_text && err_text);
	return st;
}

#define HAS(text, needle)                                                                  \
	ck_assert_msg(strstr((text), (needle)) != NULL, "'%s' not in:\n%s", (needle), (text))

/* The value after "label" on its line, trimmed, into buf. */
static const char *field(const char *text, const char *label, char *buf, size_t cap)
{
	const char *p = strstr(text, label);
	ck_assert_msg(p != NULL, "'%s' not in:\n%s", label, text);
	p += strlen(label);
	while (*p == ' ')
		p++;
	size_t n = strcspn(p, " \n");
	ck_assert_uint_lt(n, cap);
	memcpy(buf, p, n);
	buf[n] = '\0';
	return buf;
}

static unsigned mode_of(const char *path)
{
	struct stat st;
	ck_assert_msg(stat(path, &st) == 0, "%s missing", path);
	return st.st_mode & 0777;
}

static void keygen3(void)
{
	for (int i = 0; i < 3; i++)
		ck_assert_int_eq(mm("keygen --out %s/keys --name party%d", dir, i), 0);
}

static int share3(const char *outdir, const char *extra)
{
	return mm("share --model %s --parties 3 --to %s/keys/party0.x25519.pub,"
		  "%s/keys/party1.x25519.pub,%s/keys/party2.x25519.pub --out %s %s",
		  model, dir, dir, dir, outdir, extra);
}

/* The public key's hex, as keygen and inspect print it. */
static void pub_hex(int party, char out[65])
{
	char p[1024];
	snprintf(p, sizeof p, "%s/keys/party%d.x25519.pub", dir, party);
	char *t = tu_read_file(p, NULL);
	ck_assert_ptr_nonnull(t);
	const char *nl = strchr(t, '\n');
	ck_assert_ptr_nonnull(nl);
	memcpy(out, nl + 1, 64);
	out[64] = '\0';
	free(t);
}

START_TEST(test_workflow)
{
	keygen3();
	HAS(out_text, "party2.x25519.key (mode 0600");
	char p[1024], hex[65], v[256], v2[256];
	for (int i = 0; i < 3; i++) {
		snprintf(p, sizeof p, "%s/keys/party%d.x25519.key", dir, i);
		ck_assert_uint_eq(mode_of(p), 0600);
		char *t = tu_read_file(p, NULL);
		ck_assert_ptr_nonnull(strstr(t, "-----BEGIN MIMIR X25519 SECRET KEY-----\n"));
		free(t);
		snprintf(p, sizeof p, "%s/keys/party%d.x25519.pub", dir, i);
		ck_assert_uint_eq(mode_of(p), 0644);
	}
	snprintf(p, sizeof p, "%s/keys", dir);
	ck_assert_uint_eq(mode_of(p), 0700);
	pub_hex(2, hex);
	HAS(out_text, hex); /* keygen printed the public key it wrote */

	/* share: three files, 0600, plain progress lines on a non-terminal */
	snprintf(p, sizeof p, "%s/out", dir);
	ck_assert_msg(share3(p, "") == 0, "%s", err_text);
	HAS(err_text, "mimir-model: sharing: 100% (260032 of 260032 weights)\n");
	ck_assert_ptr_null(strchr(err_text, '\r'));
	HAS(out_text, "260032 weights");
	HAS(out_text, "3 parties, 16 fractional bits");
	char id[64], wdigest[80], fdigest1[80];
	field(out_text, "model id:", id, sizeof id);
	ck_assert_uint_eq(strlen(id), 32);
	field(out_text, "weights digest:", wdigest, sizeof wdigest);
	const char *p1 = strstr(out_text, "party 1:");
	ck_assert_ptr_nonnull(p1);
	field(p1, "file digest:", fdigest1, sizeof fdigest1);
	for (int i = 0; i < 3; i++) {
		snprintf(p, sizeof p, "%s/out/stories260K.party%d.mshare", dir, i);
		ck_assert_uint_eq(mode_of(p), 0600);
		HAS(out_text, p);
	}

	/* inspect: no key, the header */
	ck_assert_int_eq(mm("inspect %s/out/stories260K.party1.mshare", dir), 0);
	HAS(out_text, "party:        1 (of 3 parties");
	ck_assert_str_eq(field(out_text, "model id:", v, sizeof v), id);
	pub_hex(1, hex);
	ck_assert_str_eq(field(out_text, "sealed to:", v, sizeof v), hex);
	HAS(out_text, "fixed point:  16 fractional bits");
	HAS(out_text, "dim 64, hidden 172, layers 5, heads 8, kv heads 4, vocab 512, seq 512, "
		      "shared classifier");
	HAS(out_text, "w2");
	HAS(out_text, "not authenticated");

	/* open: the party's key verifies the whole file; another party's is refused */
	ck_assert_int_eq(mm("open --key %s/keys/party1.x25519.key "
			    "%s/out/stories260K.party1.mshare",
			    dir, dir),
			 0);
	HAS(out_text, "verified:");
	ck_assert_str_eq(field(out_text, "file digest:", v, sizeof v), fdigest1);
	ck_assert_str_eq(err_text, "");
	ck_assert_int_eq(mm("open --key %s/keys/party0.x25519.key "
			    "%s/out/stories260K.party1.mshare",
			    dir, dir),
			 1);
	HAS(err_text, "this file is another party's");
	ck_assert_str_eq(out_text, "");

	/* combine, files in any order: the checkpoint exactly, and share's digest */
	ck_assert_int_eq(mm("combine --key %s/keys/party2.x25519.key %s/out/stories260K.party2.mshare"
			    " --key %s/keys/party0.x25519.key %s/out/stories260K.party0.mshare"
			    " --key=%s/keys/party1.x25519.key %s/out/stories260K.party1.mshare"
			    " --check %s",
			    dir, dir, dir, dir, dir, dir, model),
			 0);
	HAS(out_text, "identical to the checkpoint's encoding (260032 weights)");
	HAS(out_text, "(bound 2^-17 = 7.62939e-06): ok");
	field(out_text, "digest", v2, sizeof v2);
	ck_assert_str_eq(v2, wdigest);
	snprintf(v, sizeof v, "model id %s, 3 parties", id);
	HAS(out_text, v);
}
END_TEST

/* On a terminal the progress is a bar redrawn in place (script(1) gives the pty). */
START_TEST(test_progress_bar_on_tty)
{
	keygen3();
	char cmd[4096];
	snprintf(cmd, sizeof cmd,
		 "%s share --model %s --parties 3 --to %s/keys/party0.x25519.pub,"
		 "%s/keys/party1.x25519.pub,%s/keys/party2.x25519.pub --out %s/tty "
		 "--chunk-bytes 4096 >/dev/null",
		 bin, model, dir, dir, dir, dir);
	int st = tu_system("script -qec '%s' /dev/null >%s 2>&1", cmd, out_path);
	ck_assert_int_eq(st, 0);
	free(out_text);
	out_text = tu_read_file(out_path, NULL);
	HAS(out_text, "\rsharing [");
	HAS(out_text, "] 100%  260032/260032 weights x 3 parties");
	ck_assert_ptr_null(strstr(out_text, "mimir-model: sharing:"));
}
END_TEST

START_TEST(test_refusals)
{
	keygen3();
	char p[1024], q[1024];
	/* keygen never replaces a key */
	ck_assert_int_eq(mm("keygen --out %s/keys --name party1", dir), 1);
	HAS(err_text, "party1.x25519.key already exists; refusing to overwrite it");

	snprintf(p, sizeof p, "%s/a", dir);
	ck_assert_int_eq(share3(p, ""), 0);
	snprintf(p, sizeof p, "%s/a/stories260K.party0.mshare", dir);
	char *before = tu_read_file(p, NULL);
	/* share never replaces a file */
	snprintf(p, sizeof p, "%s/a", dir);
	ck_assert_int_eq(share3(p, ""), 1);
	HAS(err_text, "stories260K.party0.mshare already exists; refusing to overwrite it");
	snprintf(p, sizeof p, "%s/a/stories260K.party0.mshare", dir);
	char *after = tu_read_file(p, NULL);
	ck_assert_mem_eq(before, after, 2081250);
	free(before);
	free(after);

	/* a second split; mixing the two is refused */
	snprintf(p, sizeof p, "%s/b", dir);
	ck_assert_int_eq(share3(p, "--name other"), 0);
	ck_assert_int_eq(mm("combine --key %s/keys/party0.x25519.key %s/a/stories260K.party0.mshare"
			    " --key %s/keys/party1.x25519.key %s/b/other.party1.mshare"
			    " --key %s/keys/party2.x25519.key %s/a/stories260K.party2.mshare",
			    dir, dir, dir, dir, dir, dir),
			 1);
	HAS(err_text, "come from different splits");
	ck_assert_str_eq(out_text, "");
	/* a missing share */
	ck_assert_int_eq(mm("combine --key %s/keys/party0.x25519.key %s/a/stories260K.party0.mshare"
			    " --key %s/keys/party1.x25519.key %s/a/stories260K.party1.mshare",
			    dir, dir, dir, dir),
			 1);
	HAS(err_text, "2 of the 3 share files");
	HAS(err_text, "party 2 is missing");

	/* a truncated file, a flipped bit */
	snprintf(q, sizeof q, "%s/cut.mshare", dir);
	ck_assert_int_eq(tu_system("head -c 2000000 %s/a/stories260K.party0.mshare > %s", dir, q), 0);
	ck_assert_int_eq(mm("open --key %s/keys/party0.x25519.key %s", dir, q), 1);
	HAS(err_text, "truncated: 2000000 bytes, the header implies 2081250");
	ck_assert_int_eq(mm("inspect %s", q), 1);
	HAS(err_text, "truncated");
	snprintf(q, sizeof q, "%s/flip.mshare", dir);
	ck_assert_int_eq(tu_system("cp %s/a/stories260K.party0.mshare %s && printf '\\001' | "
				   "dd of=%s bs=1 seek=1500000 conv=notrunc status=none",
				   dir, q, q),
			 0);
	ck_assert_int_eq(mm("inspect %s", q), 0); /* the header is intact */
	ck_assert_int_eq(mm("open --key %s/keys/party0.x25519.key %s", dir, q), 1);
	HAS(err_text, "chunk 2 of 2 does not authenticate");

	/* a secret key where a public key belongs */
	snprintf(p, sizeof p, "%s/c", dir);
	ck_assert_int_eq(mm("share --model %s --parties 2 --to %s/keys/party0.x25519.key,"
			    "%s/keys/party1.x25519.pub --out %s",
			    model, dir, dir, p),
			 1);
	HAS(err_text, "this is an X25519 secret key; a public key (.x25519.pub) is expected here");
	/* the same key twice */
	ck_assert_int_eq(mm("share --model %s --parties 2 --to %s/keys/party0.x25519.pub,"
			    "%s/keys/party0.x25519.pub --out %s",
			    model, dir, dir, p),
			 1);
	HAS(err_text, "parties 0 and 1 have the same public key");
	/* a key file that is not there */
	ck_assert_int_eq(mm("open --key %s/keys/nobody.x25519.key %s", dir, q), 1);
	HAS(err_text, "cannot open");
}
END_TEST

/* A weight beyond the fixed-point range is refused by name and leaves no file; fewer
 * fractional bits fit it. combine --check notices a checkpoint that is not the one shared. */
START_TEST(test_saturation_and_wrong_checkpoint)
{
	keygen3();
	size_t len;
	char *raw = tu_read_file(model, &len);
	ck_assert_ptr_nonnull(raw);
	size_t at = 512 * 64 + 5 * 64 + 2 * 64 * 64 + 10 * 64 + 5; /* wq[2][10][5] */
	float big = 281474976710656.0f;                             /* 2^48 */
	memcpy(raw + 28 + 4 * at, &big, 4);
	char big_path[1024], p[1024];
	snprintf(big_path, sizeof big_path, "%s/big.bin", dir);
	ck_assert_int_eq(tu_write_file(big_path, raw, len), 0);
	free(raw);
	snprintf(p, sizeof p, "%s/sat", dir);
	ck_assert_int_eq(mm("share --model %s --parties 2 --to %s/keys/party0.x25519.pub,"
			    "%s/keys/party1.x25519.pub --out %s",
			    big_path, dir, dir, p),
			 1);
	HAS(err_text, "weight wq at layer 2 row 10 col 5 (element 8837) is 2.81475e+14, beyond "
		      "the fixed-point range with f=16");
	ck_assert_int_eq(tu_system("test -z \"$(ls -A %s)\"", p), 0); /* nothing left */
	ck_assert_int_eq(mm("share --model %s --parties 2 --to %s/keys/party0.x25519.pub,"
			    "%s/keys/party1.x25519.pub --out %s --frac-bits 8",
			    big_path, dir, dir, p),
			 0);
	HAS(out_text, "8 fractional bits");
	ck_assert_int_eq(mm("combine --key %s/keys/party0.x25519.key %s/big.party0.mshare"
			    " --key %s/keys/party1.x25519.key %s/big.party1.mshare --check %s",
			    dir, p, dir, p, big_path),
			 0);
	HAS(out_text, "(bound 2^-9 = 0.00195312): ok");
	/* the original checkpoint is not the one these shares hold */
	ck_assert_int_eq(mm("combine --key %s/keys/party0.x25519.key %s/big.party0.mshare"
			    " --key %s/keys/party1.x25519.key %s/big.party1.mshare --check %s",
			    dir, p, dir, p, model),
			 1);
	HAS(out_text, "1 weights differ from the checkpoint's encoding (first: wq element 8837)");
	HAS(out_text, "EXCEEDED");
	HAS(err_text, "the shares do not reconstruct");
}
END_TEST

START_TEST(test_bad_command_lines)
{
	keygen3();
	char to[2048];
	snprintf(to, sizeof to, "%s/keys/party0.x25519.pub,%s/keys/party1.x25519.pub", dir, dir);
	const char *const usage_cases[] = {
		"",
		"frobnicate",
		"share --model M --parties 2 --out O",
		"share --model M --parties 1 --to a,b --out O",
		"share --model M --parties 17 --to a,b --out O",
		"share --model M --parties x --to a,b --out O",
		"share --model M --parties 2 --to a,b --out O --frac-bits 7",
		"share --model M --parties 2 --to a,b --out O --frac-bits 25",
		"share --model M --parties 2 --to a,b --out O --chunk-bytes 100",
		"share --model M --parties 3 --to a,b --out O",
		"share --model M --parties 2 --to a,b,c --out O",
		"share --model M --parties 2 --to a,,b --out O",
		"share --model M --parties 2 --to a,b --out O --name ../x",
		"share --model M --parties 2 --to a,b --out O extra",
		"share --bogus",
		"keygen --out O",
		"keygen --out O --name ../evil",
		"keygen --out O --name .hidden",
		"inspect",
		"inspect a b",
		"open FILE",
		"open --key K",
		"combine",
		"combine FILE --key K",
		"combine --key K0 F0",
		"combine --key K0 --key K1 F1",
		"combine --key K0 F0 --key",
	};
	for (size_t i = 0; i < sizeof usage_cases / sizeof usage_cases[0]; i++) {
		int st = mm("%s", usage_cases[i]);
		ck_assert_msg(st == 2, "'%s': exit %d, stderr: %s", usage_cases[i], st, err_text);
		ck_assert_msg(strlen(err_text) > 0, "'%s': no message", usage_cases[i]);
		ck_assert_msg(strncmp(err_text, "mimir-model", 11) == 0 ||
				      strncmp(err_text, "Usage:", 6) == 0,
			      "'%s': %s", usage_cases[i], err_text);
	}
	const char *const cmds[] = {"keygen", "share", "inspect", "open", "combine"};
	for (size_t i = 0; i < 5; i++) {
		ck_assert_int_eq(mm("%s --help", cmds[i]), 0);
		HAS(out_text, "Usage: mimir-model");
	}
	ck_assert_int_eq(mm("--help"), 0);
	HAS(out_text, "combine");
	/* a missing checkpoint is a runtime error, after the command line was accepted */
	ck_assert_int_eq(mm("share --model %s/none.bin --parties 2 --to %s --out %s/o", dir, to,
			    dir),
			 1);
	HAS(err_text, "none.bin: cannot open");
}
END_TEST

Suite *suite(void)
{
	Suite *s = suite_create("model_share");
	TCase *tc = tcase_create("cli");
	tcase_add_checked_fixture(tc, setup, teardown);
	tcase_set_timeout(tc, 120);
	tcase_add_test(tc, test_workflow);
	tcase_add_test(tc, test_progress_bar_on_tty);
	tcase_add_test(tc, test_refusals);
	tcase_add_test(tc, test_saturation_and_wrong_checkpoint);
	tcase_add_test(tc, test_bad_command_lines);
	suite_add_tcase(s, tc);
	return s;
}
