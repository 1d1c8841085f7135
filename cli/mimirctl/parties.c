/* mimirctl parties: list, read, register and change parties (status, sealing key,
 * certificate pin, endpoint, attestation summary). */
#include <getopt.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "ctl.h"

static const char help[] =
	"Usage: " CTL_PROG " parties VERB [OPTIONS]\n"
	"\n"
	"  list [--status active|suspended|retired] [--limit N] [--all]\n"
	"  get ID\n"
	"  create --identity CN --sealing-key HEX32 [--role party|dealer] [--endpoint URL]\n"
	"         [--fingerprint SHA256] [--attestation JSON]\n"
	"  update ID [--status active|suspended|retired] [--sealing-key HEX32]\n"
	"         [--fingerprint SHA256|\"\"] [--endpoint URL] [--attestation JSON]\n"
	"\n"
	"The sealing key is the party's X25519 public key (mimir-model keygen writes it);\n"
	"--fingerprint pins the SHA-256 of its certificate (\"\" removes the pin).\n";

static void key_cell(json_t *p, char *buf, size_t cap)
{
	snprintf(buf, cap, "%.16s...", json_string_value(json_object_get(p, "sealing_key")));
}

static int print_party(struct ctl *c, json_t *p)
{
	if (c->json)
		return ctl_print_json(p);
	static const char *const keys[] = {"id", "identity", "role", "status", "sealing_key",
					   "cert_fingerprint", "endpoint", "attestation",
					   "created_at", "updated_at", NULL};
	ctl_fields(p, keys);
	json_decref(p);
	return CTL_OK;
}

static int list(struct ctl *c, const char *cmd, int argc, char **argv)
{
	long long limit = 50;
	bool all = false;
	const char *status = NULL;
	static const struct option opts[] = {{"limit", required_argument, NULL, 'l'},
					     {"all", no_argument, NULL, 'a'},
					     {"status", required_argument, NULL, 's'},
					     {"help", no_argument, NULL, 'h'},
					     {NULL, 0, NULL, 0}};
	int o;
	while ((o = getopt_long(argc, argv, "h", opts, NULL)) != -1) {
		if (o == 'l' && !ctl_number(cmd, "--limit", optarg, 1, 500, &limit))
			return CTL_USAGE;
		else if (o == 'a')
			all = true;
		else if (o == 's')
			status = optarg;
		else if (o == 'h')
			return fputs(help, stdout), CTL_OK;
		else if (o != 'l')
			return ctl_usage(cmd, "unknown option '%s'", argv[optind - 1]);
	}
	if (!ctl_operands(cmd, argc - optind, 0, ""))
		return CTL_USAGE;
	if (status && strcmp(status, "active") && strcmp(status, "suspended") && strcmp(status, "retired"))
		return ctl_usage(cmd, "--status is active, suspended or retired");
	char path[96];
	snprintf(path, sizeof path, "/parties?limit=%lld%s%s", limit, status ? "&status=" : "",
		 status ? status : "");
	json_t *page;
	int rc = ctl_list(c, path, all, &page);
	if (rc != CTL_OK)
		return rc;
	if (c->json)
		return ctl_print_json(page);
	static const struct ctl_col cols[] = {
		{"ID", "id", NULL},         {"IDENTITY", "identity", NULL}, {"ROLE", "role", NULL},
		{"STATUS", "status", NULL}, {"SEALING KEY", NULL, key_cell},  {"ENDPOINT", "endpoint", NULL},
	};
	ctl_table(json_object_get(page, "items"), cols, sizeof cols / sizeof cols[0]);
	json_decref(page);
	return CTL_OK;
}

static int get(struct ctl *c, const char *cmd, int argc, char **argv)
{
	char path[160];
	int rc = ctl_id_path(cmd, argc, argv, help, "/parties", "", path, sizeof path);
	if (rc != CTL_OK || !path[0])
		return rc;
	json_t *p;
	rc = ctl_call(c, "GET", path, NULL, &p);
	return rc != CTL_OK ? rc : print_party(c, p);
}

/* create and update share their options; create requires identity and key. */
static int write_party(struct ctl *c, const char *cmd, int argc, char **argv, bool create)
{
	static const struct option opts[] = {
		{"identity", required_argument, NULL, 'i'}, {"sealing-key", required_argument, NULL, 'k'},
		{"role", required_argument, NULL, 'r'},     {"endpoint", required_argument, NULL, 'e'},
		{"fingerprint", required_argument, NULL, 'f'}, {"attestation", required_argument, NULL, 'a'},
		{"status", required_argument, NULL, 's'},   {"help", no_argument, NULL, 'h'},
		{NULL, 0, NULL, 0},
	};
	json_t *body = json_object();
	int o, rc = CTL_USAGE;
	while ((o = getopt_long(argc, argv, "h", opts, NULL)) != -1) {
		const char *key = o == 'i' ? "identity" : o == 'k' ? "sealing_key" : o == 'r' ? "role"
				: o == 'e' ? "endpoint" : o == 'f' ? "cert_fingerprint" : o == 's' ? "status" : NULL;
		if (o == 'h') {
			fputs(help, stdout);
			rc = CTL_OK;
			goto out;
		}
		if ((create && o == 's') || (!create && (o == 'i' || o == 'r'))) {
			ctl_usage(cmd, "'%s' does not apply here", argv[optind - 1]);
			goto out;
		}
		if (key) {
			json_object_set_new(body, key, json_string(optarg));
		} else if (o == 'a') {
			json_error_t e;
			json_t *att = json_loads(optarg, JSON_REJECT_DUPLICATES, &e);
			if (!json_is_object(att)) {
				json_decref(att);
				ctl_usage(cmd, "--attestation must be a JSON object");
				goto out;
			}
			json_object_set_new(body, "attestation", att);
		} else {
			ctl_usage(cmd, "unknown option '%s'", argv[optind - 1]);
			goto out;
		}
	}
	char path[160] = "/parties";
	if (create) {
		if (!ctl_operands(cmd, argc - optind, 0, ""))
			goto out;
		if (!json_object_get(body, "identity") || !json_object_get(body, "sealing_key")) {
			ctl_usage(cmd, "--identity and --sealing-key are required");
			goto out;
		}
	} else {
		char *sub[] = {argv[0], optind < argc ? argv[optind] : NULL, NULL};
		int n = argc - optind + 1;
		if ((rc = ctl_id_path(cmd, n, sub, help, "/parties", "", path, sizeof path)) != CTL_OK || !path[0])
			goto out;
		rc = CTL_USAGE;
		if (json_object_size(body) == 0) {
			ctl_usage(cmd, "nothing to change");
			goto out;
		}
	}
	json_t *p;
	rc = ctl_call(c, create ? "POST" : "PATCH", path, body, &p);
	if (rc == CTL_OK)
		rc = print_party(c, p);
out:
	json_decref(body);
	return rc;
}

static int create(struct ctl *c, const char *cmd, int argc, char **argv)
{
	return write_party(c, cmd, argc, argv, true);
}

static int update(struct ctl *c, const char *cmd, int argc, char **argv)
{
	return write_party(c, cmd, argc, argv, false);
}

int ctl_parties(struct ctl *c, int argc, char **argv)
{
	static const struct ctl_verb verbs[] = {
		{"list", list}, {"get", get}, {"create", create}, {"update", update}, {NULL, NULL},
	};
	return ctl_dispatch(c, argc, argv, help, verbs);
}
