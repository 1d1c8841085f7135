/* mimir-attest tool commands: the same binary as the service (the build names both
 * build/bin/mimir-attest; see tool.h). `request` gets a Mimir certificate from the
 * attest service for evidence collected on this machine (the same code a service uses,
 * common/attestc), `collect` only makes the evidence, `verify` checks evidence offline
 * against the vendors' roots and optionally a policy (common/attest), `revoke` asks the
 * service to revoke a certificate, `crl` refreshes a service's tls.crl file. This file
 * dispatches and holds the shared helpers. */
#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <sodium.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include "tool.h"

void tool_help(FILE *f)
{
	fputs("Usage: mimir-attest COMMAND [OPTIONS]   (the tool)\n"
	      "       mimir-attest [--config FILE] [--port-file FILE] [--check-config]   (the service)\n"
	      "\n"
	      "Attestation for Mimir: hardware evidence (AMD SEV-SNP, Intel TDX, AWS Nitro\n"
	      "Enclaves, or simulated for development) turned into a short-lived certificate.\n"
	      "\n"
	      "Commands:\n"
	      "  request  collect evidence here and get a certificate from the attest service\n"
	      "  collect  only collect evidence (report_data given) into a file\n"
	      "  verify   verify evidence offline against the vendors' roots (and a policy)\n"
	      "  revoke   revoke a certificate (administrator)\n"
	      "  crl      fetch the CRL into a service's tls.crl file (checked, atomic)\n"
	      "\n"
	      "Run 'mimir-attest COMMAND --help' for the options of a command.\n"
	      "Exit status: 0 done, 1 refused or failed, 2 bad command line.\n",
	      f);
}

static const struct {
	const char *name;
	int (*fn)(int, char **);
} cmds[] = {{"request", cmd_request}, {"collect", cmd_collect}, {"verify", cmd_verify},
	    {"revoke", cmd_revoke}, {"crl", cmd_crl}};

bool tool_is_command(const char *arg)
{
	for (size_t i = 0; arg && i < sizeof cmds / sizeof cmds[0]; i++)
		if (!strcmp(arg, cmds[i].name))
			return true;
	return arg && !strcmp(arg, "help");
}

int tool_main(int argc, char **argv)
{
	if (sodium_init() < 0)
		return tool_fail("cannot initialise libsodium");
	const char *cmd = argv[1];
	if (!strcmp(cmd, "help")) {
		tool_help(stdout);
		return TOOL_EXIT_OK;
	}
	for (size_t i = 0; i < sizeof cmds / sizeof cmds[0]; i++)
		if (!strcmp(cmd, cmds[i].name))
			return cmds[i].fn(argc - 1, argv + 1);
	return TOOL_EXIT_USAGE;
}

int tool_fail(const char *fmt, ...)
{
	va_list ap;
	va_start(ap, fmt);
	fputs("mimir-attest: ", stderr);
	vfprintf(stderr, fmt, ap);
	fputc('\n', stderr);
	va_end(ap);
	return TOOL_EXIT_FAIL;
}

int tool_usage(const char *cmd, const char *fmt, ...)
{
	va_list ap;
	va_start(ap, fmt);
	fprintf(stderr, "mimir-attest %s: ", cmd);
	vfprintf(stderr, fmt, ap);
	fprintf(stderr, "\nTry 'mimir-attest %s --help'.\n", cmd);
	va_end(ap);
	return TOOL_EXIT_USAGE;
}

int tool_opt_error(const char *cmd, int c, char **argv)
{
	extern int optind;
	const char *arg = optind > 0 ? argv[optind - 1] : "?";
	if (c == ':')
		return tool_usage(cmd, "option '%s' needs a value", arg);
	return tool_usage(cmd, "unknown option '%s'", arg);
}

bool tool_platform(const char *s, enum ident_platform *out)
{
	if (s && !strcmp(s, "snp")) {
		*out = IDENT_PLATFORM_SEV_SNP;
		return true;
	}
	return s && ident_platform_parse(s, out) == 0 && *out != IDENT_PLATFORM_NONE;
}

bool tool_hex(const char *s, uint8_t *out, size_t max, size_t *len)
{
	size_t l = s ? strlen(s) : 0;
	if (l == 0 || l % 2 || l / 2 > max)
		return false;
	const char *end;
	return sodium_hex2bin(out, max, s, l, NULL, len, &end) == 0 && *end == '\0' && *len == l / 2;
}

bool tool_rfc3339(const char *s, int64_t *out)
{
	struct tm tm = {0};
	const char *end = s ? strptime(s, "%Y-%m-%dT%H:%M:%S", &tm) : NULL;
	if (!end)
		return false;
	if (*end == '.') {
		end++;
		if (*end < '0' || *end > '9')
			return false;
		while (*end >= '0' && *end <= '9')
			end++;
	}
	if (strcmp(end, "Z") != 0)
		return false;
	*out = (int64_t)timegm(&tm);
	return true;
}

void tool_time(int64_t t, char *buf, size_t cap)
{
	struct tm tm;
	time_t tt = (time_t)t;
	if (!gmtime_r(&tt, &tm) || !strftime(buf, cap, "%Y-%m-%dT%H:%M:%SZ", &tm))
		snprintf(buf, cap, "%lld", (long long)t);
}

int tool_read(const char *path, uint8_t **out, size_t *len)
{
	*out = NULL;
	int fd = open(path, O_RDONLY | O_CLOEXEC);
	struct stat st;
	if (fd < 0 || fstat(fd, &st) != 0 || !S_ISREG(st.st_mode) || st.st_size > TOOL_FILE_MAX) {
		int e = errno;
		if (fd >= 0)
			close(fd);
		return tool_fail("cannot read %s: %s", path, fd < 0 ? strerror(e) : "not a regular file of at most 1 MiB");
	}
	uint8_t *buf = malloc((size_t)st.st_size + 1);
	size_t n = 0;
	while (buf && n < (size_t)st.st_size) {
		ssize_t r = read(fd, buf + n, (size_t)st.st_size - n);
		if (r < 0 && errno == EINTR)
			continue;
		if (r <= 0)
			break;
		n += (size_t)r;
	}
	close(fd);
	if (!buf || n != (size_t)st.st_size) {
		free(buf);
		return tool_fail("cannot read %s", path);
	}
	buf[n] = '\0';
	*out = buf;
	*len = n;
	return 0;
}

static int write_fd(int fd, const void *data, size_t len)
{
	const char *p = data;
	while (len) {
		ssize_t w = write(fd, p, len);
		if (w < 0 && errno == EINTR)
			continue;
		if (w <= 0)
			return -1;
		p += w;
		len -= (size_t)w;
	}
	return fsync(fd);
}

int tool_write_new(const char *path, const void *data, size_t len, unsigned mode)
{
	int fd = open(path, O_WRONLY | O_CREAT | O_EXCL | O_NOFOLLOW | O_CLOEXEC, (mode_t)mode);
	if (fd < 0)
		return tool_fail("cannot create %s: %s%s", path, strerror(errno),
			       errno == EEXIST ? " (refusing to overwrite it)" : "");
	int rc = write_fd(fd, data, len);
	if (close(fd) != 0 || rc != 0) {
		unlink(path);
		return tool_fail("cannot write %s: %s", path, strerror(errno));
	}
	return 0;
}

int tool_write_replace(const char *path, const void *data, size_t len, unsigned mode)
{
	char tmp[TOOL_PATH_MAX + 8];
	if (snprintf(tmp, sizeof tmp, "%s.tmp", path) >= (int)sizeof tmp)
		return tool_fail("path too long: %s", path);
	unlink(tmp);
	if (tool_write_new(tmp, data, len, mode) != 0)
		return TOOL_EXIT_FAIL;
	if (rename(tmp, path) != 0) {
		unlink(tmp);
		return tool_fail("cannot replace %s: %s", path, strerror(errno));
	}
	return 0;
}

bool tool_path(char *buf, size_t cap, const char *dir, const char *name, const char *ext)
{
	int n = snprintf(buf, cap, "%s/%s%s", dir, name, ext ? ext : "");
	return n > 0 && (size_t)n < cap;
}
