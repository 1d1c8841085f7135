/* mimirctl audit, whoami and token: read the audit log, export its head and verify the
 * chain (exit 10 when it does not verify, so a cron job can alarm); show the
 * administrator the gateway sees; and make an admin token with the line the gateway's
 * admin.tokens_file takes (the hash only: the token itself is shown once, here). */
#include <getopt.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <sodium.h>

#include "ctl.h"

static const char help[] =
	"Usage: " CTL_PROG " audit VERB [OPTIONS]\n"
	"\n"
	"  list [--after SEQ] [--limit N] [--all]\n"
	"  head                            the chain head: keep it outside the registry\n"
	"  verify [--seq N --hash HEX]     the whole chain, and an exported head still in it\n"
	"\n"
	"verify exits 10 when the chain does not verify.\n";

static void object_cell(json_t *e, char *buf, size_t cap)
{
	json_t *o = json_object_get(e, "object");
	snprintf(buf, cap, "%s %s", json_string_value(json_object_get(o, "type")),
		 json_string_value(json_object_get(o, "id")));
}

static int list(struct ctl *c, const char *cmd, int argc, char **argv)
{
	long long limit = 50, after = 0;
	bool all = false;
	static const struct option opts[] = {{"limit", required_argument, NULL, 'l'},
					     {"all", no_argument, NULL, 'a'},
					     {"after", required_argument, NULL, 'A'},
					     {"help", no_argument, NULL, 'h'},
					     {NULL, 0, NULL, 0}};
	int o;
	while ((o = getopt_long(argc, argv, "h", opts, NULL)) != -1) {
		if (o == 'l' || o == 'A') {
			if (!ctl_number(cmd, o == 'l' ? "--limit" : "--after", optarg, o == 'l' ? 1 : 0,
					o == 'l' ? 500 : INT64_MAX, o == 'l' ? &limit : &after))
				return CTL_USAGE;
		} else if (o == 'a') {
			all = true;
		} else if (o == 'h') {
			return fputs(help, stdout), CTL_OK;
		} else {
			return ctl_usage(cmd, "unknown option '%s'", argv[optind - 1]);
		}
	}
	if (!ctl_operands(cmd, argc - optind, 0, ""))
		return CTL_USAGE;
	char path[96];
	if (after)
		snprintf(path, sizeof path, "/audit?limit=%lld&after=%lld", limit, after);
	else
		snprintf(path, sizeof path, "/audit?limit=%lld", limit);
	json_t *page;
	int rc = ctl_list(c, path, all, &page);
	if (rc != CTL_OK)
		return rc;
	if (c->json)
		return ctl_print_json(page);
	static const struct ctl_col cols[] = {
		{"SEQ", "seq", NULL},       {"TIME", "time", NULL},        {"ACTOR", "actor", NULL},
		{"ACTION", "action", NULL}, {"OBJECT", NULL, object_cell}, {"REQUEST", "request_id", NULL},
	};
	ctl_table(json_object_get(page, "items"), cols, sizeof cols / sizeof cols[0]);
	json_decref(page);
	return CTL_OK;
}

static int head(struct ctl *c, const char *cmd, int argc, char **argv)
{
	if (argc == 2 && !strcmp(argv[1], "--help"))
		return fputs(help, stdout), CTL_OK;
	if (!ctl_operands(cmd, argc - 1, 0, ""))
		return CTL_USAGE;
	json_t *h;
	int rc = ctl_call(c, "GET", "/audit/head", NULL, &h);
	if (rc != CTL_OK)
		return rc;
	if (c->json)
		return ctl_print_json(h);
	static const char *const keys[] = {"seq", "time", "hash", NULL};
	ctl_fields(h, keys);
	json_decref(h);
	return CTL_OK;
}

static int verify(struct ctl *c, const char *cmd, int argc, char **argv)
{
	long long seq = 0;
	const char *hash = NULL;
	static const struct option opts[] = {{"seq", required_argument, NULL, 's'},
					     {"hash", required_argument, NULL, 'H'},
					     {"help", no_argument, NULL, 'h'},
					     {NULL, 0, NULL, 0}};
	int o;
	while ((o = getopt_long(argc, argv, "h", opts, NULL)) != -1) {
		if (o == 's') {
			if (!ctl_number(cmd, "--seq", optarg, 1, INT64_MAX, &seq))
				return CTL_USAGE;
		} else if (o == 'H') {
			hash = optarg;
		} else if (o == 'h') {
			return fputs(help, stdout), CTL_OK;
		} else {
			return ctl_usage(cmd, "unknown option '%s'", argv[optind - 1]);
		}
	}
	if (!ctl_operands(cmd, argc - optind, 0, ""))
		return CTL_USAGE;
	if (!seq != !hash)
		return ctl_usage(cmd, "an anchor needs both --seq and --hash");
	if (hash && (strlen(hash) != 64 || strspn(hash, "0123456789abcdefABCDEF") != 64))
		return ctl_usage(cmd, "--hash takes 64 hex digits");
	char path[160] = "/audit/verify";
	if (seq)
		snprintf(path, sizeof path, "/audit/verify?seq=%lld&hash=%s", seq, hash);
	json_t *v;
	int rc = ctl_call(c, "GET", path, NULL, &v);
	if (rc != CTL_OK)
		return rc;
	bool ok = json_is_true(json_object_get(v, "ok"));
	if (c->json) {
		ctl_print_json(v);
	} else {
		static const char *const keys[] = {"ok", "entries", "first_bad_seq", "reason",
						   "triggers_ok", "anchor_ok", "head.seq", "head.hash", NULL};
		ctl_fields(v, keys);
		json_decref(v);
	}
	if (!ok)
		fprintf(stderr, CTL_PROG ": the audit chain does not verify: restore the registry from a "
				"backup and investigate\n");
	return ok ? CTL_OK : CTL_TAMPERED;
}

int ctl_audit(struct ctl *c, int argc, char **argv)
{
	static const struct ctl_verb verbs[] = {
		{"list", list}, {"head", head}, {"verify", verify}, {NULL, NULL},
	};
	return ctl_dispatch(c, argc, argv, help, verbs);
}

int ctl_whoami(struct ctl *c, int argc, char **argv)
{
	if (argc > 1) {
		if (!strcmp(argv[1], "--help"))
			return puts("Usage: " CTL_PROG " whoami"), CTL_OK;
		return ctl_usage("whoami", "takes no arguments");
	}
	json_t *w;
	int rc = ctl_call(c, "GET", "/whoami", NULL, &w);
	if (rc != CTL_OK)
		return rc;
	if (c->json)
		return ctl_print_json(w);
	static const char *const keys[] = {"actor", "credential", NULL};
	ctl_fields(w, keys);
	json_decref(w);
	return CTL_OK;
}

static const char token_help[] =
	"Usage: " CTL_PROG " token new [--name NAME]\n"
	"\n"
	"Makes an admin token (256 random bits). The token goes to stdout, once; the line for\n"
	"the gateway's admin.tokens_file (\"NAME HASH\", the hash only) goes to stderr, or both\n"
	"into one JSON object with --json. NAME (1-48 of [A-Za-z0-9._@-], default admin) is\n"
	"how the audit log names the administrator: token:NAME.\n";

int ctl_token(struct ctl *c, int argc, char **argv)
{
	if (argc < 2 || strcmp(argv[1], "new")) {
		bool asked = argc >= 2 && (!strcmp(argv[1], "--help") || !strcmp(argv[1], "-h"));
		fputs(token_help, asked ? stdout : stderr);
		return asked ? CTL_OK : CTL_USAGE;
	}
	static const struct option opts[] = {{"name", required_argument, NULL, 'n'},
					     {"help", no_argument, NULL, 'h'},
					     {NULL, 0, NULL, 0}};
	const char *name = "admin";
	int o;
	optind = 0;
	while ((o = getopt_long(argc - 1, argv + 1, "h", opts, NULL)) != -1) {
		if (o == 'n')
			name = optarg;
		else if (o == 'h')
			return fputs(token_help, stdout), CTL_OK;
		else
			return ctl_usage("token new", "unknown option '%s'", argv[optind]);
	}
	size_t nl = strlen(name);
	if (nl == 0 || nl > 48 ||
	    strspn(name, "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789._@-") != nl)
		return ctl_usage("token new", "--name is 1-48 of [A-Za-z0-9._@-]");
	uint8_t rnd[32], h[32];
	char b64[48], tok[64], hex[65];
	randombytes_buf(rnd, sizeof rnd);
	sodium_bin2base64(b64, sizeof b64, rnd, sizeof rnd, sodium_base64_VARIANT_URLSAFE_NO_PADDING);
	snprintf(tok, sizeof tok, "mimir_at_%s", b64);
	/* The gateway's hash: BLAKE2b-256("mimir-admin-token-v1" || 0x00 || token). */
	static const char domain[] = "mimir-admin-token-v1";
	crypto_generichash_state st;
	crypto_generichash_init(&st, NULL, 0, sizeof h);
	crypto_generichash_update(&st, (const uint8_t *)domain, sizeof domain);
	crypto_generichash_update(&st, (const uint8_t *)tok, strlen(tok));
	crypto_generichash_final(&st, h, sizeof h);
	sodium_bin2hex(hex, sizeof hex, h, sizeof h);
	if (c->json) {
		ctl_print_json(json_pack("{s:s, s:s, s:s}", "name", name, "token", tok, "hash", hex));
	} else {
		printf("%s\n", tok);
		fprintf(stderr, "add to admin.tokens_file:\n%s %s\n", name, hex);
	}
	sodium_memzero(rnd, sizeof rnd);
	sodium_memzero(b64, sizeof b64);
	sodium_memzero(tok, sizeof tok);
	return CTL_OK;
}
