/* mimirctl keys: list, read, create (the key text is printed this once, on stdout, and
 * never again by anyone) and revoke API keys. */
#include <getopt.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <sodium.h>

#include "ctl.h"

static const char help[] =
	"Usage: " CTL_PROG " keys VERB [OPTIONS]\n"
	"\n"
	"  list [--session ID] [--limit N] [--all]\n"
	"  get ID\n"
	"  create --session ID [--session ID ...] [--name NAME] [--ttl SECONDS]\n"
	"  revoke ID\n"
	"\n"
	"create prints the key once; the registry keeps only a keyed hash of it. A revoked\n"
	"key is refused by the gateway within its keys.cache_ms.\n";

static void sessions_cell(json_t *k, char *buf, size_t cap)
{
	json_t *ss = json_object_get(k, "sessions");
	size_t n = json_array_size(ss);
	snprintf(buf, cap, "%s%s", n ? json_string_value(json_array_get(ss, 0)) : "-",
		 n > 1 ? " (+more)" : "");
}

static int print_key(struct ctl *c, json_t *k)
{
	if (c->json)
		return ctl_print_json(k);
	static const char *const keys[] = {"id", "name", "state", "sessions", "created_at",
					   "expires_at", "revoked_at", NULL};
	ctl_fields(k, keys);
	json_decref(k);
	return CTL_OK;
}

static int list(struct ctl *c, const char *cmd, int argc, char **argv)
{
	long long limit = 50;
	bool all = false;
	const char *session = NULL;
	static const struct option opts[] = {{"limit", required_argument, NULL, 'l'},
					     {"all", no_argument, NULL, 'a'},
					     {"session", required_argument, NULL, 's'},
					     {"help", no_argument, NULL, 'h'},
					     {NULL, 0, NULL, 0}};
	int o;
	while ((o = getopt_long(argc, argv, "h", opts, NULL)) != -1) {
		if (o == 'l') {
			if (!ctl_number(cmd, "--limit", optarg, 1, 500, &limit))
				return CTL_USAGE;
		} else if (o == 'a') {
			all = true;
		} else if (o == 's') {
			session = optarg;
		} else if (o == 'h') {
			return fputs(help, stdout), CTL_OK;
		} else {
			return ctl_usage(cmd, "unknown option '%s'", argv[optind - 1]);
		}
	}
	if (!ctl_operands(cmd, argc - optind, 0, ""))
		return CTL_USAGE;
	if (session && strspn(session, "ses_0123456789abcdef") != strlen(session))
		return ctl_usage(cmd, "--session takes a session id (ses_...)");
	char path[160];
	snprintf(path, sizeof path, "/keys?limit=%lld%s%s", limit, session ? "&session=" : "",
		 session ? session : "");
	json_t *page;
	int rc = ctl_list(c, path, all, &page);
	if (rc != CTL_OK)
		return rc;
	if (c->json)
		return ctl_print_json(page);
	static const struct ctl_col cols[] = {
		{"ID", "id", NULL},           {"NAME", "name", NULL},
		{"STATE", "state", NULL},     {"SESSIONS", NULL, sessions_cell},
		{"EXPIRES", "expires_at", NULL},
	};
	ctl_table(json_object_get(page, "items"), cols, sizeof cols / sizeof cols[0]);
	json_decref(page);
	return CTL_OK;
}

static int get(struct ctl *c, const char *cmd, int argc, char **argv)
{
	char path[160];
	int rc = ctl_id_path(cmd, argc, argv, help, "/keys", "", path, sizeof path);
	if (rc != CTL_OK || !path[0])
		return rc;
	json_t *k;
	rc = ctl_call(c, "GET", path, NULL, &k);
	return rc != CTL_OK ? rc : print_key(c, k);
}

static int create(struct ctl *c, const char *cmd, int argc, char **argv)
{
	static const struct option opts[] = {
		{"session", required_argument, NULL, 's'}, {"name", required_argument, NULL, 'n'},
		{"ttl", required_argument, NULL, 't'},     {"help", no_argument, NULL, 'h'},
		{NULL, 0, NULL, 0},
	};
	json_t *body = json_object(), *sessions = json_array();
	int o, rc = CTL_USAGE;
	long long v;
	while ((o = getopt_long(argc, argv, "h", opts, NULL)) != -1) {
		switch (o) {
		case 's': json_array_append_new(sessions, json_string(optarg)); break;
		case 'n': json_object_set_new(body, "name", json_string(optarg)); break;
		case 't':
			if (!ctl_number(cmd, "--ttl", optarg, 1, 10LL * 365 * 86400, &v))
				goto out;
			json_object_set_new(body, "ttl_s", json_integer(v));
			break;
		case 'h': fputs(help, stdout); rc = CTL_OK; goto out;
		default: ctl_usage(cmd, "unknown option '%s'", argv[optind - 1]); goto out;
		}
	}
	if (!ctl_operands(cmd, argc - optind, 0, ""))
		goto out;
	if (!json_array_size(sessions)) {
		ctl_usage(cmd, "--session is required (1 to 16 of them)");
		goto out;
	}
	json_object_set(body, "sessions", sessions);
	json_t *k;
	if ((rc = ctl_call(c, "POST", "/keys", body, &k)) != CTL_OK)
		goto out;
	if (c->json) {
		rc = ctl_print_json(k);
		goto out;
	}
	const char *text = json_string_value(json_object_get(k, "key"));
	fprintf(stderr, CTL_PROG ": the key is shown this once; store it now\n");
	printf("key: %s\n", text ? text : "?");
	fflush(stdout);
	if (text) /* jansson does not wipe what it frees: do it for the key */
		sodium_memzero((char *)text, strlen(text));
	json_object_del(k, "key");
	rc = print_key(c, k);
out:
	json_decref(body);
	json_decref(sessions);
	return rc;
}

static int revoke(struct ctl *c, const char *cmd, int argc, char **argv)
{
	char path[160];
	int rc = ctl_id_path(cmd, argc, argv, help, "/keys", "/revoke", path, sizeof path);
	if (rc != CTL_OK || !path[0])
		return rc;
	json_t *k;
	rc = ctl_call(c, "POST", path, NULL, &k);
	return rc != CTL_OK ? rc : print_key(c, k);
}

int ctl_keys(struct ctl *c, int argc, char **argv)
{
	static const struct ctl_verb verbs[] = {
		{"list", list}, {"get", get}, {"create", create}, {"revoke", revoke}, {NULL, NULL},
	};
	return ctl_dispatch(c, argc, argv, help, verbs);
}
