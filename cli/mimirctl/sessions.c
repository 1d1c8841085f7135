/* mimirctl sessions: list, read (with each party), create, move along the state
 * machine (activate is the common ready -> active), close. */
#include <getopt.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "ctl.h"

static const char help[] =
	"Usage: " CTL_PROG " sessions VERB [OPTIONS]\n"
	"\n"
	"  list [--state STATE] [--model ID] [--limit N] [--all]\n"
	"  get ID\n"
	"  create --model ID [--party ID ...] [--bits N] [--max-context N] [--pad-bucket N]\n"
	"         [--ttl SECONDS]\n"
	"  activate ID                      (ready -> active)\n"
	"  transition ID --to STATE [--from STATE] [--reason TEXT]\n"
	"  close ID [--reason TEXT]\n"
	"\n"
	"States: created, ready (every party initialised), active, closed, failed. Without\n"
	"--party the registry picks the least loaded active parties, one per model share.\n";

static bool state_ok(const char *s)
{
	static const char *const states[] = {"created", "ready", "active", "closed", "failed"};
	for (size_t i = 0; i < 5; i++)
		if (!strcmp(s, states[i]))
			return true;
	return false;
}

static void ready_cell(json_t *s, char *buf, size_t cap)
{
	json_t *in = json_object_get(s, "initialised");
	snprintf(buf, cap, "%lld/%lld", (long long)json_integer_value(json_object_get(in, "ready")),
		 (long long)json_integer_value(json_object_get(in, "of")));
}

static void key_cell(json_t *p, char *buf, size_t cap)
{
	snprintf(buf, cap, "%.16s...", json_string_value(json_object_get(p, "sealing_key")));
}

static int print_session(struct ctl *c, json_t *s)
{
	if (c->json)
		return ctl_print_json(s);
	static const char *const keys[] = {"id", "model", "state", "reason", "expired",
					   "fixed_point_bits", "max_context", "pad_bucket",
					   "created_at", "updated_at", "expires_at", NULL};
	ctl_fields(s, keys);
	char ready[32];
	ready_cell(s, ready, sizeof ready);
	printf("%-17s %s\n\n", "initialised:", ready);
	static const struct ctl_col cols[] = {
		{"INDEX", "index", NULL},       {"PARTY", "id", NULL},
		{"IDENTITY", "identity", NULL}, {"SEALING KEY", NULL, key_cell},
		{"STATUS", "status", NULL},     {"INITIALISED", "initialised_at", NULL},
	};
	ctl_table(json_object_get(s, "parties"), cols, sizeof cols / sizeof cols[0]);
	json_decref(s);
	return CTL_OK;
}

static int list(struct ctl *c, const char *cmd, int argc, char **argv)
{
	long long limit = 50;
	bool all = false;
	const char *state = NULL, *model = NULL;
	static const struct option opts[] = {{"limit", required_argument, NULL, 'l'},
					     {"all", no_argument, NULL, 'a'},
					     {"state", required_argument, NULL, 's'},
					     {"model", required_argument, NULL, 'm'},
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
			state = optarg;
		} else if (o == 'm') {
			model = optarg;
		} else if (o == 'h') {
			return fputs(help, stdout), CTL_OK;
		} else {
			return ctl_usage(cmd, "unknown option '%s'", argv[optind - 1]);
		}
	}
	if (!ctl_operands(cmd, argc - optind, 0, ""))
		return CTL_USAGE;
	if (state && !state_ok(state))
		return ctl_usage(cmd, "--state is created, ready, active, closed or failed");
	if (model && strspn(model, "mdl_0123456789abcdef") != strlen(model))
		return ctl_usage(cmd, "--model takes a model id (mdl_...)");
	char path[160];
	snprintf(path, sizeof path, "/sessions?limit=%lld%s%s%s%s", limit, state ? "&state=" : "",
		 state ? state : "", model ? "&model=" : "", model ? model : "");
	json_t *page;
	int rc = ctl_list(c, path, all, &page);
	if (rc != CTL_OK)
		return rc;
	if (c->json)
		return ctl_print_json(page);
	static const struct ctl_col cols[] = {
		{"ID", "id", NULL},         {"MODEL", "model", NULL},     {"STATE", "state", NULL},
		{"READY", NULL, ready_cell}, {"EXPIRES", "expires_at", NULL}, {"REASON", "reason", NULL},
	};
	ctl_table(json_object_get(page, "items"), cols, sizeof cols / sizeof cols[0]);
	json_decref(page);
	return CTL_OK;
}

static int get(struct ctl *c, const char *cmd, int argc, char **argv)
{
	char path[160];
	int rc = ctl_id_path(cmd, argc, argv, help, "/sessions", "", path, sizeof path);
	if (rc != CTL_OK || !path[0])
		return rc;
	json_t *s;
	rc = ctl_call(c, "GET", path, NULL, &s);
	return rc != CTL_OK ? rc : print_session(c, s);
}

static int create(struct ctl *c, const char *cmd, int argc, char **argv)
{
	static const struct option opts[] = {
		{"model", required_argument, NULL, 'm'},      {"party", required_argument, NULL, 'p'},
		{"bits", required_argument, NULL, 'b'},       {"max-context", required_argument, NULL, 'c'},
		{"pad-bucket", required_argument, NULL, 'P'}, {"ttl", required_argument, NULL, 't'},
		{"help", no_argument, NULL, 'h'},             {NULL, 0, NULL, 0},
	};
	json_t *body = json_object(), *parties = json_array();
	int o, rc = CTL_USAGE;
	long long v;
	while ((o = getopt_long(argc, argv, "h", opts, NULL)) != -1) {
		switch (o) {
		case 'm': json_object_set_new(body, "model", json_string(optarg)); break;
		case 'p': json_array_append_new(parties, json_string(optarg)); break;
		case 'b':
			if (!ctl_number(cmd, "--bits", optarg, 8, 32, &v))
				goto out;
			json_object_set_new(body, "fixed_point_bits", json_integer(v));
			break;
		case 'c':
		case 'P':
			if (!ctl_number(cmd, o == 'c' ? "--max-context" : "--pad-bucket", optarg, 1, 1 << 20, &v))
				goto out;
			json_object_set_new(body, o == 'c' ? "max_context" : "pad_bucket", json_integer(v));
			break;
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
	if (!json_object_get(body, "model")) {
		ctl_usage(cmd, "--model is required");
		goto out;
	}
	if (json_array_size(parties))
		json_object_set(body, "parties", parties);
	json_t *s;
	rc = ctl_call(c, "POST", "/sessions", body, &s);
	if (rc == CTL_OK)
		rc = print_session(c, s);
out:
	json_decref(body);
	json_decref(parties);
	return rc;
}

/* transition, activate and close: an id, a body, the session after. */
static int move(struct ctl *c, const char *cmd, int argc, char **argv, const char *fixed_to)
{
	static const struct option opts[] = {
		{"to", required_argument, NULL, 't'},     {"from", required_argument, NULL, 'f'},
		{"reason", required_argument, NULL, 'r'}, {"help", no_argument, NULL, 'h'},
		{NULL, 0, NULL, 0},
	};
	bool close = fixed_to && !strcmp(fixed_to, "closed"), activate = fixed_to && !close;
	json_t *body = json_object();
	int o, rc = CTL_USAGE;
	while ((o = getopt_long(argc, argv, "h", opts, NULL)) != -1) {
		if (o == 'h') {
			fputs(help, stdout);
			rc = CTL_OK;
			goto out;
		}
		if ((o == 't' || o == 'f') && fixed_to) {
			ctl_usage(cmd, "'%s' does not apply here", argv[optind - 1]);
			goto out;
		}
		if (o == 'r' && activate) {
			ctl_usage(cmd, "--reason does not apply here");
			goto out;
		}
		if ((o == 't' || o == 'f') && !state_ok(optarg)) {
			ctl_usage(cmd, "%s is created, ready, active, closed or failed", argv[optind - 2]);
			goto out;
		}
		if (o == 't' || o == 'f' || o == 'r')
			json_object_set_new(body, o == 't' ? "to" : o == 'f' ? "from" : "reason", json_string(optarg));
		else {
			ctl_usage(cmd, "unknown option '%s'", argv[optind - 1]);
			goto out;
		}
	}
	char *sub[] = {argv[0], optind < argc ? argv[optind] : NULL, NULL};
	char path[160];
	if ((rc = ctl_id_path(cmd, argc - optind + 1, sub, help, "/sessions",
			      close ? "/close" : "/transition", path, sizeof path)) != CTL_OK || !path[0])
		goto out;
	if (activate) {
		json_object_set_new(body, "to", json_string("active"));
		json_object_set_new(body, "from", json_string("ready"));
	} else if (!close && !json_object_get(body, "to")) {
		rc = ctl_usage(cmd, "--to is required");
		goto out;
	}
	json_t *s;
	rc = ctl_call(c, "POST", path, body, &s);
	if (rc == CTL_OK)
		rc = print_session(c, s);
out:
	json_decref(body);
	return rc;
}

static int transition(struct ctl *c, const char *cmd, int argc, char **argv)
{
	return move(c, cmd, argc, argv, NULL);
}

static int activate(struct ctl *c, const char *cmd, int argc, char **argv)
{
	return move(c, cmd, argc, argv, "active");
}

static int close_(struct ctl *c, const char *cmd, int argc, char **argv)
{
	return move(c, cmd, argc, argv, "closed");
}

int ctl_sessions(struct ctl *c, int argc, char **argv)
{
	static const struct ctl_verb verbs[] = {
		{"list", list},         {"get", get},         {"create", create},
		{"activate", activate}, {"transition", transition}, {"close", close_},
		{NULL, NULL},
	};
	return ctl_dispatch(c, argc, argv, help, verbs);
}
