/* mimirctl: the administrator's command-line tool. It talks to a gateway's admin API
 * (/admin/v1) over HTTPS with a client certificate of the deployment's CA, and with
 * either an admin certificate (role admin) or an admin token, and manages the
 * registry: models, parties, sessions, API keys and the audit log. Output is a table
 * (or "key: value" lines) for people, the gateway's JSON with --json for scripts; the
 * exit status says what kind of outcome it was (see --help). This file holds the
 * global options and the dispatch; the commands live in their own files. */
#include <getopt.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <sodium.h>

#include "ctl.h"
#include "svc/svc.h"

static void usage(FILE *f)
{
	fputs("Usage: " CTL_PROG " [OPTIONS] COMMAND [ARGS]\n"
	      "\n"
	      "Manages a Mimir deployment through its gateway's admin API.\n"
	      "\n"
	      "Commands:\n"
	      "  models   list | get ID | create ... | delete ID\n"
	      "  parties  list | get ID | create ... | update ID ...\n"
	      "  sessions list | get ID | create ... | activate ID | transition ID ... | close ID\n"
	      "  keys     list | get ID | create ... | revoke ID\n"
	      "  audit    list | head | verify [--seq N --hash HEX]\n"
	      "  whoami   the administrator the gateway sees\n"
	      "  token    new [--name NAME]: make an admin token and its line for admin.tokens_file\n"
	      "\n"
	      "Options (before the command):\n"
	      "  --gateway URL      the gateway (env MIMIR_GATEWAY, default https://localhost:8443)\n"
	      "  --ca FILE          the deployment's CA certificate (env MIMIR_CA)\n"
	      "  --cert FILE        client certificate (env MIMIR_CERT); an admin certificate is\n"
	      "                     a credential by itself\n"
	      "  --key FILE         its key (env MIMIR_KEY)\n"
	      "  --token-file FILE  file holding an admin token (env MIMIR_ADMIN_TOKEN_FILE, or the\n"
	      "                     token itself in MIMIR_ADMIN_TOKEN); never on the command line\n"
	      "  --json             print the gateway's JSON instead of tables\n"
	      "  --timeout SECONDS  per request (default 30)\n"
	      "  --help, --version\n"
	      "\n"
	      "Run '" CTL_PROG " COMMAND --help' for a command's arguments.\n"
	      "\n"
	      "Exit status: 0 done; 1 failed otherwise; 2 bad command line; 3 gateway unreachable\n"
	      "(connection, TLS, timeout); 4 credential refused (401/403); 5 not found; 6 conflict;\n"
	      "7 invalid input (400/413/415); 8 rate limited; 9 server error (5xx); 10 the audit\n"
	      "chain does not verify.\n",
	      f);
}

int ctl_fail(const char *fmt, ...)
{
	va_list ap;
	va_start(ap, fmt);
	fputs(CTL_PROG ": ", stderr);
	vfprintf(stderr, fmt, ap);
	fputc('\n', stderr);
	va_end(ap);
	return CTL_FAIL;
}

int ctl_usage(const char *cmd, const char *fmt, ...)
{
	va_list ap;
	va_start(ap, fmt);
	fprintf(stderr, CTL_PROG " %s: ", cmd);
	vfprintf(stderr, fmt, ap);
	fprintf(stderr, "\nTry '" CTL_PROG " %s --help'.\n", cmd);
	va_end(ap);
	return CTL_USAGE;
}

bool ctl_number(const char *cmd, const char *opt, const char *s, long long lo, long long hi, long long *out)
{
	char *end;
	long long v = s && *s && *s != '-' && *s != '+' ? strtoll(s, &end, 10) : 0;
	if (!s || !*s || *s == '-' || *s == '+' || *end || v < lo || v > hi) {
		ctl_usage(cmd, "%s must be a whole number from %lld to %lld", opt, lo, hi);
		return false;
	}
	*out = v;
	return true;
}

int ctl_dispatch(struct ctl *c, int argc, char **argv, const char *help, const struct ctl_verb *verbs)
{
	if (argc < 2 || !strcmp(argv[1], "--help") || !strcmp(argv[1], "-h") || !strcmp(argv[1], "help")) {
		fputs(help, argc < 2 ? stderr : stdout);
		return argc < 2 ? CTL_USAGE : CTL_OK;
	}
	for (const struct ctl_verb *v = verbs; v->name; v++)
		if (!strcmp(argv[1], v->name)) {
			char cmd[64];
			snprintf(cmd, sizeof cmd, "%s %s", argv[0], v->name);
			optind = 0; /* glibc: start the verb's options afresh */
			return v->fn(c, cmd, argc - 1, argv + 1);
		}
	fprintf(stderr, CTL_PROG " %s: unknown command '%s'\n", argv[0], argv[1]);
	fputs(help, stderr);
	return CTL_USAGE;
}

bool ctl_operands(const char *cmd, int left, int n, const char *what)
{
	if (left == n)
		return true;
	if (left < n)
		ctl_usage(cmd, "missing %s", what);
	else
		ctl_usage(cmd, "too many arguments");
	return false;
}

int main(int argc, char **argv)
{
	struct ctl c = {
		.gateway = getenv("MIMIR_GATEWAY") ? getenv("MIMIR_GATEWAY") : "https://localhost:8443",
		.ca = getenv("MIMIR_CA"),
		.cert = getenv("MIMIR_CERT"),
		.key = getenv("MIMIR_KEY"),
		.token_file = getenv("MIMIR_ADMIN_TOKEN_FILE"),
		.timeout_s = 30,
	};
	enum { O_GATEWAY = 1000, O_CA, O_CERT, O_KEY, O_TOKEN_FILE, O_JSON, O_TIMEOUT, O_VERSION };
	static const struct option opts[] = {
		{"gateway", required_argument, NULL, O_GATEWAY},
		{"ca", required_argument, NULL, O_CA},
		{"cert", required_argument, NULL, O_CERT},
		{"key", required_argument, NULL, O_KEY},
		{"token-file", required_argument, NULL, O_TOKEN_FILE},
		{"json", no_argument, NULL, O_JSON},
		{"timeout", required_argument, NULL, O_TIMEOUT},
		{"version", no_argument, NULL, O_VERSION},
		{"help", no_argument, NULL, 'h'},
		{NULL, 0, NULL, 0},
	};
	if (sodium_init() < 0)
		return ctl_fail("cannot initialise libsodium");
	int o;
	long long t;
	opterr = 0;
	/* "+": stop at the command, whose own options follow it. */
	while ((o = getopt_long(argc, argv, "+:h", opts, NULL)) != -1) {
		switch (o) {
		case O_GATEWAY: c.gateway = optarg; break;
		case O_CA: c.ca = optarg; break;
		case O_CERT: c.cert = optarg; break;
		case O_KEY: c.key = optarg; break;
		case O_TOKEN_FILE: c.token_file = optarg; break;
		case O_JSON: c.json = true; break;
		case O_TIMEOUT:
			if (!ctl_number("", "--timeout", optarg, 1, 3600, &t))
				return CTL_USAGE;
			c.timeout_s = (long)t;
			break;
		case O_VERSION: printf(CTL_PROG " %s\n", SVC_VERSION); return CTL_OK;
		case 'h': usage(stdout); return CTL_OK;
		case ':':
			fprintf(stderr, CTL_PROG ": %s needs a value\n", argv[optind - 1]);
			return CTL_USAGE;
		default:
			fprintf(stderr, CTL_PROG ": unknown option '%s' (try --help)\n", argv[optind - 1]);
			return CTL_USAGE;
		}
	}
	if (optind >= argc) {
		usage(stderr);
		return CTL_USAGE;
	}
	static const struct {
		const char *name;
		int (*fn)(struct ctl *, int, char **);
	} cmds[] = {
		{"models", ctl_models}, {"parties", ctl_parties}, {"sessions", ctl_sessions},
		{"keys", ctl_keys},     {"audit", ctl_audit},     {"whoami", ctl_whoami},
		{"token", ctl_token},
	};
	const char *cmd = argv[optind];
	int rc = -1;
	for (size_t i = 0; i < sizeof cmds / sizeof cmds[0]; i++)
		if (!strcmp(cmd, cmds[i].name))
			rc = cmds[i].fn(&c, argc - optind, argv + optind);
	if (rc == -1) {
		fprintf(stderr, CTL_PROG ": unknown command '%s' (try --help)\n", cmd);
		rc = CTL_USAGE;
	}
	ctl_close(&c);
	return rc;
}
