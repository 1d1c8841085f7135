/* mimir: the client's command-line tool; dispatches to its commands (generate.c).
 * Usage errors exit 2 with a hint; every other status is listed in --help. */
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <sodium.h>

#include "mimir.h"
#include "svc/svc.h"

int mimir_say(const char *prog, int status, const char *fmt, ...)
{
	va_list ap;
	va_start(ap, fmt);
	fprintf(stderr, "%s: ", prog);
	vfprintf(stderr, fmt, ap);
	fputc('\n', stderr);
	va_end(ap);
	if (status == MX_USAGE)
		fprintf(stderr, "(see %s --help)\n", prog);
	return status;
}

const char *mimir_env(const char *name, const char *dflt)
{
	const char *v = getenv(name);
	return v && *v ? v : dflt;
}

static void usage(FILE *f)
{
	fprintf(f,
		"usage: " MIMIR_PROG " COMMAND [options]\n"
		"\n"
		"The client of a Mimir deployment: text generation on a model secret-shared among\n"
		"several parties, where the prompt and the generated text exist in clear only on\n"
		"this machine.\n"
		"\n"
		"commands:\n"
		"  generate   generate text after a prompt through a gateway (" MIMIR_PROG
		" generate --help)\n"
		"  proxy      a local OpenAI-compatible server doing the same (" MIMIR_PROG
		" proxy --help)\n"
		"\n"
		"  -h, --help     this text\n"
		"  --version      the version\n");
}

int main(int argc, char **argv)
{
	if (sodium_init() < 0) {
		fprintf(stderr, MIMIR_PROG ": libsodium cannot be initialised\n");
		return MX_FAIL;
	}
	if (argc < 2) {
		usage(stderr);
		return MX_USAGE;
	}
	const char *cmd = argv[1];
	if (!strcmp(cmd, "-h") || !strcmp(cmd, "--help") || !strcmp(cmd, "help")) {
		usage(stdout);
		return MX_OK;
	}
	if (!strcmp(cmd, "--version")) {
		printf(MIMIR_PROG " %s\n", SVC_VERSION);
		return MX_OK;
	}
	if (!strcmp(cmd, "generate"))
		return mimir_generate(argc - 1, argv + 1);
	if (!strcmp(cmd, "proxy"))
		return mimir_proxy(argc - 1, argv + 1);
	fprintf(stderr, MIMIR_PROG ": unknown command '%s'\n(see " MIMIR_PROG " --help)\n", cmd);
	return MX_USAGE;
}
