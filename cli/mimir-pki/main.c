/* mimir-pki: the development PKI of Mimir. Creates a CA, issues leaf certificates in
 * the Mimir profile (the same code the attestation service will use, common/ident),
 * creates a whole development PKI in one go, and shows the identity a service would
 * read from a certificate. This file dispatches to the commands and holds the small
 * parsing helpers they share. */
#include <arpa/inet.h>
#include <errno.h>
#include <limits.h>
#include <sodium.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "pki.h"

static void usage(FILE *f)
{
	fputs("Usage: mimir-pki COMMAND [OPTIONS]\n"
	      "\n"
	      "The development PKI of Mimir: ECDSA P-256 certificates carrying the Mimir\n"
	      "identity extension (role, platform, measurement) for mutual TLS.\n"
	      "\n"
	      "Commands:\n"
	      "  ca     create a CA: DIR/ca.crt, DIR/ca.key\n"
	      "  issue  issue a leaf certificate signed by a CA: DIR/NAME.crt, DIR/NAME.key\n"
	      "  dev    create a CA and every certificate a local deployment needs\n"
	      "  show   print the identity a service reads from a certificate\n"
	      "\n"
	      "Run 'mimir-pki COMMAND --help' for the options of a command.\n"
	      "Exit status: 0 done, 1 the work failed, 2 bad command line.\n",
	      f);
}

int main(int argc, char **argv)
{
	if (sodium_init() < 0)
		return pki_fail("cannot initialise libsodium");
	if (argc < 2) {
		usage(stderr);
		return PKI_EXIT_USAGE;
	}
	const char *cmd = argv[1];
	if (strcmp(cmd, "--help") == 0 || strcmp(cmd, "-h") == 0 || strcmp(cmd, "help") == 0) {
		usage(stdout);
		return PKI_EXIT_OK;
	}
	static const struct {
		const char *name;
		int (*fn)(int, char **);
	} cmds[] = {{"ca", cmd_ca}, {"issue", cmd_issue}, {"dev", cmd_dev}, {"show", cmd_show}};
	for (size_t i = 0; i < sizeof cmds / sizeof cmds[0]; i++)
		if (strcmp(cmd, cmds[i].name) == 0)
			return cmds[i].fn(argc - 1, argv + 1);
	fprintf(stderr, "mimir-pki: unknown command '%s'\n", cmd);
	fputs("Try 'mimir-pki --help'.\n", stderr);
	return PKI_EXIT_USAGE;
}

int pki_fail(const char *fmt, ...)
{
	va_list ap;
	va_start(ap, fmt);
	fputs("mimir-pki: ", stderr);
	vfprintf(stderr, fmt, ap);
	fputc('\n', stderr);
	va_end(ap);
	return PKI_EXIT_RUNTIME;
}

void pki_warn(const char *fmt, ...)
{
	va_list ap;
	va_start(ap, fmt);
	fputs("mimir-pki: warning: ", stderr);
	vfprintf(stderr, fmt, ap);
	fputc('\n', stderr);
	va_end(ap);
}

int pki_usage(const char *cmd, const char *fmt, ...)
{
	va_list ap;
	va_start(ap, fmt);
	fprintf(stderr, "mimir-pki %s: ", cmd);
	vfprintf(stderr, fmt, ap);
	fprintf(stderr, "\nTry 'mimir-pki %s --help'.\n", cmd);
	va_end(ap);
	return PKI_EXIT_USAGE;
}

bool pki_parse_i64(const char *s, int64_t min, int64_t max, int64_t *out)
{
	if (!s || !*s)
		return false;
	char *end;
	errno = 0;
	long long v = strtoll(s, &end, 10);
	if (errno || *end || end == s || v < min || v > max)
		return false;
	*out = v;
	return true;
}

bool pki_name_ok(const char *s)
{
	size_t n = strnlen(s, 65);
	if (n == 0 || n > 64 || s[0] == '.' || s[0] == '-')
		return false;
	for (size_t i = 0; i < n; i++) {
		char c = s[i];
		if (!((c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') ||
		      c == '.' || c == '_' || c == '-'))
			return false;
	}
	return true;
}

bool pki_ip_ok(const char *s)
{
	unsigned char b[16];
	return inet_pton(AF_INET, s, b) == 1 || inet_pton(AF_INET6, s, b) == 1;
}

bool pki_parse_hex(const char *s, uint8_t *out, size_t max, size_t *len)
{
	size_t n = strlen(s);
	const char *end;
	if (n % 2 || n / 2 > max)
		return false;
	if (sodium_hex2bin(out, max, s, n, NULL, len, &end) != 0 || *end)
		return false;
	return *len == n / 2;
}

bool pki_path(char *buf, size_t cap, const char *dir, const char *name)
{
	int n = snprintf(buf, cap, "%s/%s", dir, name);
	return n > 0 && (size_t)n < cap;
}
