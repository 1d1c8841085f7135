/* mimir-pki, driven as a user drives it: a development PKI that the openssl CLI and
 * GnuTLS (the TLS engine of every service) both accept, for both TLS ends; an expired
 * leaf they reject; `show` printing the identity; private keys 0600; no file ever
 * overwritten without --force (not even through a symbolic link); and every bad
 * command line answered with exit status 2 and a message. */
#include <gnutls/gnutls.h>
#include <gnutls/x509.h>
#include <jansson.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include "testutil.h"

static char bin[512], dir[512], out_path[600], err_path[600];
static char *out_text, *err_text;

static void setup(void)
{
	tu_build(bin, sizeof bin, "bin/mimir-pki");
	ck_assert_msg(access(bin, X_OK) == 0, "%s missing: build it first", bin);
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

/* Runs "mimir-pki ARGS" (the arguments are shell words); returns its exit status and
 * keeps its stdout and stderr in out_text and err_text. */
static int pki(const char *fmt, ...) __attribute__((format(printf, 1, 2)));
static int pki(const char *fmt, ...)
{
	char args[2048];
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

static int openssl_verify(const char *purpose, const char *name)
{
	return tu_system("openssl verify -CAfile %s/ca.crt -purpose %s %s/%s.crt >%s 2>&1", dir,
			 purpose, dir, name, out_path);
}

static const char *const dev_names[] = {"gateway", "session", "dealer", "attest", "party0",
					"party1",  "party2",  "party3", "client", "admin"};
static const char *const dev_roles[] = {"gateway", "session", "dealer", "attest", "party",
					"party",   "party",   "party",  "client", "admin"};
#define N_DEV (sizeof dev_names / sizeof dev_names[0])

static void path_of(char *buf, size_t cap, const char *name, const char *ext)
{
	snprintf(buf, cap, "%s/%s%s", dir, name, ext);
}

static bool json_array_has(json_t *a, const char *s)
{
	size_t i;
	json_t *v;
	json_array_foreach(a, i, v)
	{
		if (strcmp(json_string_value(v), s) == 0)
			return true;
	}
	return false;
}

/* GnuTLS loads the pair as a server or client credential (it checks that key and
 * certificate match) and verifies the certificate against ca.crt for both purposes. */
static void gnutls_accepts(const char *name)
{
	char crt[700], key[700], ca[700];
	path_of(crt, sizeof crt, name, ".crt");
	path_of(key, sizeof key, name, ".key");
	path_of(ca, sizeof ca, "ca", ".crt");
	gnutls_certificate_credentials_t cred;
	ck_assert_int_eq(gnutls_certificate_allocate_credentials(&cred), 0);
	ck_assert_msg(gnutls_certificate_set_x509_key_file(cred, crt, key, GNUTLS_X509_FMT_PEM) >= 0,
		      "GnuTLS refuses %s", name);
	gnutls_certificate_free_credentials(cred);

	gnutls_x509_trust_list_t tl;
	gnutls_datum_t d;
	gnutls_x509_crt_t c;
	ck_assert_int_eq(gnutls_x509_trust_list_init(&tl, 0), 0);
	ck_assert_int_eq(gnutls_x509_trust_list_add_trust_file(tl, ca, NULL, GNUTLS_X509_FMT_PEM,
								0, 0),
			 1);
	ck_assert_int_eq(gnutls_load_file(crt, &d), 0);
	ck_assert_int_eq(gnutls_x509_crt_init(&c), 0);
	ck_assert_int_eq(gnutls_x509_crt_import(c, &d, GNUTLS_X509_FMT_PEM), 0);
	const char *purposes[] = {GNUTLS_KP_TLS_WWW_CLIENT, GNUTLS_KP_TLS_WWW_SERVER};
	for (int i = 0; i < 2; i++) {
		gnutls_typed_vdata_st vd = {.type = GNUTLS_DT_KEY_PURPOSE_OID,
					    .data = (unsigned char *)purposes[i]};
		unsigned status = 1;
		ck_assert_int_eq(gnutls_x509_trust_list_verify_crt2(tl, &c, 1, &vd, 1, 0, &status,
								    NULL),
				 0);
		ck_assert_msg(status == 0, "GnuTLS: %s not valid for %s (status %u)", name,
			      purposes[i], status);
	}
	gnutls_x509_crt_deinit(c);
	gnutls_free(d.data);
	gnutls_x509_trust_list_deinit(tl, 1);
}

START_TEST(test_dev_pki_is_accepted)
{
	ck_assert_int_eq(pki("dev --out %s --parties 4 --dns mimir.test --ip 10.9.8.7", dir), 0);
	ck_assert_ptr_nonnull(strstr(out_text, "4 parties"));
	char p[700];
	struct stat st;
	path_of(p, sizeof p, "ca", ".key");
	ck_assert_int_eq(stat(p, &st), 0);
	ck_assert_uint_eq(st.st_mode & 0777, 0600);
	for (size_t i = 0; i < N_DEV; i++) {
		const char *n = dev_names[i];
		path_of(p, sizeof p, n, ".key");
		ck_assert_int_eq(stat(p, &st), 0);
		ck_assert_msg((st.st_mode & 0777) == 0600, "%s has mode %o", p, st.st_mode & 0777);
		path_of(p, sizeof p, n, ".crt");
		ck_assert_int_eq(stat(p, &st), 0);
		ck_assert_uint_eq(st.st_mode & 022, 0);
		ck_assert_msg(openssl_verify("sslclient", n) == 0, "openssl verify %s: %s", n,
			      tu_read_file(out_path, NULL));
		ck_assert_int_eq(openssl_verify("sslserver", n), 0);
		/* the key is the certificate's */
		ck_assert_int_eq(tu_system("openssl pkey -in %s/%s.key -pubout -out %s/.pub1 && "
					   "openssl x509 -in %s/%s.crt -pubkey -noout >%s/.pub2 && "
					   "cmp -s %s/.pub1 %s/.pub2",
					   dir, n, dir, dir, n, dir, dir, dir),
				 0);
		gnutls_accepts(n);
		/* and the identity inside is the one asked for */
		ck_assert_int_eq(pki("show --json %s/%s.crt", dir, n), 0);
		json_error_t je;
		json_t *j = json_loads(out_text, 0, &je);
		ck_assert_msg(j != NULL, "show --json: %s", je.text);
		ck_assert_str_eq(json_string_value(json_object_get(j, "cn")), n);
		ck_assert_str_eq(json_string_value(json_object_get(j, "role")), dev_roles[i]);
		ck_assert_str_eq(json_string_value(json_object_get(j, "platform")), "none");
		ck_assert_str_eq(json_string_value(json_object_get(j, "status")), "valid");
		json_t *dns = json_object_get(j, "dns"), *ip = json_object_get(j, "ip");
		ck_assert_uint_eq(json_array_size(dns), 2);
		ck_assert(json_array_has(dns, "localhost") && json_array_has(dns, "mimir.test"));
		ck_assert_uint_eq(json_array_size(ip), 3);
		ck_assert(json_array_has(ip, "127.0.0.1") && json_array_has(ip, "::1") &&
			  json_array_has(ip, "10.9.8.7"));
		json_decref(j);
	}
	/* the CA is a CA and nothing more: it cannot itself pass as a TLS leaf for us */
	ck_assert_int_eq(pki("show %s/ca.crt", dir), 0);
	ck_assert_ptr_nonnull(strstr(out_text, "extension: absent\n"));
}
END_TEST

START_TEST(test_show_prints_identity)
{
	ck_assert_int_eq(pki("ca --out %s --cn 'Test CA'", dir), 0);
	ck_assert_int_eq(pki("issue --ca %s --out %s --role dealer --name dealer-1 "
			     "--platform simulated --measurement 00ff10 --dns dealer.test "
			     "--ip 192.0.2.1",
			     dir, dir),
			 0);
	ck_assert_int_eq(pki("show %s/dealer-1.crt", dir), 0);
	ck_assert_ptr_nonnull(strstr(out_text, "cn: dealer-1\n"));
	ck_assert_ptr_nonnull(strstr(out_text, "issuer: CN=Test CA\n"));
	ck_assert_ptr_nonnull(strstr(out_text, "extension: present\n"));
	ck_assert_ptr_nonnull(strstr(out_text, "role: dealer\n"));
	ck_assert_ptr_nonnull(strstr(out_text, "platform: simulated\n"));
	ck_assert_ptr_nonnull(strstr(out_text, "measurement: 00ff10\n"));
	ck_assert_ptr_nonnull(strstr(out_text, "dns: dealer.test\n"));
	ck_assert_ptr_nonnull(strstr(out_text, "ip: 192.0.2.1\n"));
	ck_assert_ptr_nonnull(strstr(out_text, "status: valid\n"));
	/* the fingerprint is the SHA-256 of the DER, as openssl computes it */
	ck_assert_int_eq(tu_system("openssl x509 -in %s/dealer-1.crt -outform DER | sha256sum "
				   "| cut -c1-64 >%s/.fp",
				   dir, dir),
			 0);
	char fp_path[700], want[100];
	snprintf(fp_path, sizeof fp_path, "%s/.fp", dir);
	char *fp = tu_read_file(fp_path, NULL);
	ck_assert_ptr_nonnull(fp);
	snprintf(want, sizeof want, "fingerprint_sha256: %.64s\n", fp);
	free(fp);
	ck_assert_ptr_nonnull(strstr(out_text, want));
	/* DER input too */
	ck_assert_int_eq(tu_system("openssl x509 -in %s/dealer-1.crt -outform DER -out %s/d.der",
				   dir, dir),
			 0);
	ck_assert_int_eq(pki("show %s/d.der", dir), 0);
	ck_assert_ptr_nonnull(strstr(out_text, "role: dealer\n"));
	/* without the extension */
	ck_assert_int_eq(pki("issue --ca %s --out %s --no-extension --name plain", dir, dir), 0);
	ck_assert_int_eq(pki("show %s/plain.crt", dir), 0);
	ck_assert_ptr_nonnull(strstr(out_text, "extension: absent\nrole: none\nplatform: none\n"));
	ck_assert_int_eq(openssl_verify("sslclient", "plain"), 0);
}
END_TEST

START_TEST(test_expired_leaf_is_rejected)
{
	long long now = (long long)time(NULL);
	ck_assert_int_eq(pki("ca --out %s", dir), 0);
	ck_assert_int_eq(pki("issue --ca %s --out %s --role party --name old "
			     "--not-before %lld --not-after %lld",
			     dir, dir, now - 7200, now - 3600),
			 0);
	ck_assert_int_ne(openssl_verify("sslclient", "old"), 0);
	char *msg = tu_read_file(out_path, NULL);
	ck_assert_ptr_nonnull(strstr(msg, "certificate has expired"));
	free(msg);
	ck_assert_int_eq(pki("show %s/old.crt", dir), 0);
	ck_assert_ptr_nonnull(strstr(out_text, "status: expired\n"));
	/* a leaf that starts in the future is not valid yet */
	ck_assert_int_eq(pki("issue --ca %s --out %s --role party --name later "
			     "--not-before %lld --days 2",
			     dir, dir, now + 86400),
			 0);
	ck_assert_int_ne(openssl_verify("sslclient", "later"), 0);
	ck_assert_int_eq(pki("show --json %s/later.crt", dir), 0);
	ck_assert_ptr_nonnull(strstr(out_text, "\"status\": \"not-yet-valid\""));
	/* a leaf may not outlive its CA */
	ck_assert_int_eq(pki("ca --out %s/short --days 1", dir), 0);
	ck_assert_int_eq(pki("issue --ca %s/short --out %s/short --role party --name p --days 2",
			     dir, dir),
			 1);
	ck_assert_ptr_nonnull(strstr(err_text, "outlive"));
}
END_TEST

/* Reads a file whole, for before/after comparison. */
static char *slurp(const char *name, size_t *len)
{
	char p[700];
	snprintf(p, sizeof p, "%s/%s", dir, name);
	char *b = tu_read_file(p, len);
	ck_assert_ptr_nonnull(b);
	return b;
}

START_TEST(test_no_overwrite_without_force)
{
	ck_assert_int_eq(pki("dev --out %s", dir), 0);
	static const char *const files[] = {"ca.key", "ca.crt", "party0.key", "party0.crt",
					    "admin.key"};
	char *before[5];
	size_t blen[5];
	for (int i = 0; i < 5; i++)
		before[i] = slurp(files[i], &blen[i]);
	/* dev, ca and issue all refuse, and change nothing */
	ck_assert_int_eq(pki("dev --out %s", dir), 1);
	ck_assert_ptr_nonnull(strstr(err_text, "already exists"));
	ck_assert_ptr_nonnull(strstr(err_text, "--force"));
	ck_assert_int_eq(pki("ca --out %s", dir), 1);
	ck_assert_int_eq(pki("issue --ca %s --out %s --role party --name party0", dir, dir), 1);
	ck_assert_ptr_nonnull(strstr(err_text, "party0"));
	for (int i = 0; i < 5; i++) {
		size_t n;
		char *now = slurp(files[i], &n);
		ck_assert_msg(n == blen[i] && memcmp(now, before[i], n) == 0, "%s changed",
			      files[i]);
		free(now);
	}
	/* --force replaces, and the new key is 0600 again */
	ck_assert_int_eq(pki("issue --ca %s --out %s --role party --name party0 --force", dir,
			     dir),
			 0);
	size_t n;
	char *now = slurp("party0.key", &n);
	ck_assert(n != blen[2] || memcmp(now, before[2], n) != 0);
	free(now);
	char p[700];
	struct stat st;
	path_of(p, sizeof p, "party0", ".key");
	ck_assert_int_eq(stat(p, &st), 0);
	ck_assert_uint_eq(st.st_mode & 0777, 0600);
	ck_assert_int_eq(openssl_verify("sslclient", "party0"), 0);
	for (int i = 0; i < 5; i++)
		free(before[i]);
}
END_TEST

START_TEST(test_symlink_is_not_followed)
{
	char target[700], link[700];
	ck_assert_int_eq(pki("ca --out %s", dir), 0);
	snprintf(target, sizeof target, "%s/victim", dir);
	ck_assert_int_eq(tu_write_file(target, "keep", 4), 0);
	path_of(link, sizeof link, "evil", ".key");
	ck_assert_int_eq(symlink(target, link), 0);
	ck_assert_int_eq(pki("issue --ca %s --out %s --role client --name evil", dir, dir), 1);
	/* with --force the link itself is replaced, never what it points to */
	ck_assert_int_eq(pki("issue --ca %s --out %s --role client --name evil --force", dir, dir),
			 0);
	size_t n;
	char *v = tu_read_file(target, &n);
	ck_assert(v && n == 4 && memcmp(v, "keep", 4) == 0);
	free(v);
	struct stat st;
	ck_assert_int_eq(lstat(link, &st), 0);
	ck_assert(S_ISREG(st.st_mode));
	ck_assert_uint_eq(st.st_mode & 0777, 0600);
}
END_TEST

START_TEST(test_bad_arguments)
{
	ck_assert_int_eq(pki("ca --out %s", dir), 0);
	char exp[1100];
	snprintf(exp, sizeof exp, "--ca %s --out %s", dir, dir);
	/* "@" in a line below stands for the --ca and --out of a working CA */
	const char *const bad[] = {
		"",
		"frobnicate",
		"ca",
		"ca --out",
		"ca --out x --days 0",
		"ca --out x --days 36501",
		"ca --out x --days 12abc",
		"ca --out x --bogus",
		"ca --out x extra",
		"ca --out x --cn ''",
		"issue --role party --name a --out x",
		"issue @ --name a",
		"issue @ --role king --name a",
		"issue @ --role none --name a",
		"issue @ --role party --name ../evil",
		"issue @ --role party --name .hidden",
		"issue @ --role party --name a --platform sgx",
		"issue @ --role party --name a --measurement zz",
		"issue @ --role party --name a --measurement abc",
		/* 65 bytes */
		("issue @ --role party --name a --measurement "
		 "0000000000000000000000000000000000000000000000000000000000000000"
		 "0000000000000000000000000000000000000000000000000000000000000000"
		 "00"),
		"issue @ --role party --name a --evidence-hash 00",
		"issue @ --role party --name a --ip 1.2.3",
		"issue @ --role party --name a --ip 1.2.3.4junk",
		"issue @ --role party --name a --dns 'a b'",
		"issue @ --role party --name a --dns x,IP:1.2.3.4",
		"issue @ --role party --name a --days 5 --not-after 2000000000",
		"issue @ --role party --name a --not-before 2000000000 --not-after 1999999999",
		"issue @ --role party --name a --not-after -5",
		"issue @ --no-extension --role party --name a",
		("issue @ --role party --name a --dns a1 --dns a2 --dns a3 --dns a4 --dns a5 "
		 "--dns a6 --dns a7 --dns a8 --dns a9"),
		"dev",
		"dev --out x --parties 1",
		"dev --out x --parties 65",
		"dev --out x --parties three",
		"dev --out x --platform sgx",
		("dev --out x --dns a1 --dns a2 --dns a3 --dns a4 --dns a5 --dns a6 --dns a7 "
		 "--dns a8"),
		"show",
		"show a b",
		"show --yaml x",
	};
	for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
		char args[2400];
		const char *at = strchr(bad[i], '@');
		if (at)
			snprintf(args, sizeof args, "%.*s%s%s", (int)(at - bad[i]), bad[i], exp,
				 at + 1);
		else
			snprintf(args, sizeof args, "%s", bad[i]);
		int st = pki("%s", args);
		ck_assert_msg(st == 2, "'mimir-pki %s' exited %d, not 2", args, st);
		ck_assert_msg(strstr(err_text, "mimir-pki") != NULL, "'%s': no message", args);
		ck_assert_msg(strstr(err_text, "--help") || strstr(err_text, "Usage"),
			      "'%s': no pointer to --help: %s", args, err_text);
		ck_assert_msg(access("x", F_OK) != 0, "'%s' created ./x", args);
	}
	/* runtime failures are 1, with the file named */
	ck_assert_int_eq(pki("show %s/none.crt", dir), 1);
	ck_assert_ptr_nonnull(strstr(err_text, "none.crt"));
	ck_assert_int_eq(pki("show %s/ca.key", dir), 1);
	ck_assert_int_eq(pki("issue --ca %s/nope --out %s --role party --name a", dir, dir), 1);
	ck_assert_ptr_nonnull(strstr(err_text, "ca.crt"));
	/* help is not an error */
	const char *const helps[] = {"--help", "ca --help", "issue --help", "dev -h", "show --help"};
	for (size_t i = 0; i < sizeof helps / sizeof helps[0]; i++) {
		ck_assert_int_eq(pki("%s", helps[i]), 0);
		ck_assert_ptr_nonnull(strstr(out_text, "Usage: mimir-pki"));
	}
}
END_TEST

Suite *suite(void)
{
	Suite *s = suite_create("pki");
	TCase *tc = tcase_create("cli");
	tcase_add_checked_fixture(tc, setup, teardown);
	tcase_set_timeout(tc, 120);
	tcase_add_test(tc, test_dev_pki_is_accepted);
	tcase_add_test(tc, test_show_prints_identity);
	tcase_add_test(tc, test_expired_leaf_is_rejected);
	tcase_add_test(tc, test_no_overwrite_without_force);
	tcase_add_test(tc, test_symlink_is_not_followed);
	tcase_add_test(tc, test_bad_arguments);
	suite_add_tcase(s, tc);
	return s;
}
