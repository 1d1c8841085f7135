/* mimirctl models: list, read, register and delete models. A model is registered with
 * its seven dimensions and the SHA-256 of each party's share file, in share order (the
 * digests `mimir-model inspect` prints), or from a JSON file in the API's shape. */
#include <getopt.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "ctl.h"

static const char help[] =
	"Usage: " CTL_PROG " models VERB [OPTIONS]\n"
	"\n"
	"  list [--limit N] [--all]\n"
	"  get ID\n"
	"  create --name NAME --dims DIM,HIDDEN,LAYERS,HEADS,KV_HEADS,VOCAB,SEQ_LEN\n"
	"         --share SHA256 --share SHA256 ... [--description TEXT]\n"
	"  create --file MODEL.json        (the body of POST /admin/v1/models)\n"
	"  delete ID                       (refused while a session uses the model)\n";

static const char *const list_opts_short = "h";

int ctl_list_opts(const char *cmd, int argc, char **argv, long long *limit, bool *all)
{
	static const struct option opts[] = {{"limit", required_argument, NULL, 'l'},
					     {"all", no_argument, NULL, 'a'},
					     {"help", no_argument, NULL, 'h'},
					     {NULL, 0, NULL, 0}};
	int o;
	while ((o = getopt_long(argc, argv, list_opts_short, opts, NULL)) != -1) {
		if (o == 'l' && ctl_number(cmd, "--limit", optarg, 1, 500, limit))
			continue;
		if (o == 'a') {
			*all = true;
			continue;
		}
		if (o == 'h')
			return -1; /* the caller prints its help */
		return o == 'l' ? CTL_USAGE : ctl_usage(cmd, "unknown option '%s'", argv[optind - 1]);
	}
	return CTL_OK;
}

static void dims_cell(json_t *m, char *buf, size_t cap)
{
	json_t *d = json_object_get(m, "dims");
	snprintf(buf, cap, "%lld/%lld/%lld/%lld", (long long)json_integer_value(json_object_get(d, "dim")),
		 (long long)json_integer_value(json_object_get(d, "n_layers")),
		 (long long)json_integer_value(json_object_get(d, "vocab_size")),
		 (long long)json_integer_value(json_object_get(d, "seq_len")));
}

static void shares_cell(json_t *m, char *buf, size_t cap)
{
	snprintf(buf, cap, "%zu", json_array_size(json_object_get(m, "shares")));
}

static int list(struct ctl *c, const char *cmd, int argc, char **argv)
{
	long long limit = 50;
	bool all = false;
	int rc = ctl_list_opts(cmd, argc, argv, &limit, &all);
	if (rc == -1)
		return fputs(help, stdout), CTL_OK;
	if (rc != CTL_OK || !ctl_operands(cmd, argc - optind, 0, ""))
		return rc != CTL_OK ? rc : CTL_USAGE;
	char path[64];
	snprintf(path, sizeof path, "/models?limit=%lld", limit);
	json_t *page;
	if ((rc = ctl_list(c, path, all, &page)) != CTL_OK)
		return rc;
	if (c->json)
		return ctl_print_json(page);
	static const struct ctl_col cols[] = {
		{"ID", "id", NULL}, {"NAME", "name", NULL}, {"SHARES", NULL, shares_cell},
		{"DIM/LAYERS/VOCAB/SEQ", NULL, dims_cell}, {"CREATED", "created_at", NULL},
	};
	ctl_table(json_object_get(page, "items"), cols, sizeof cols / sizeof cols[0]);
	json_decref(page);
	return CTL_OK;
}

static int show(struct ctl *c, json_t *m)
{
	if (c->json)
		return ctl_print_json(m);
	static const char *const keys[] = {"id", "name", "description", "dims.dim", "dims.hidden_dim",
					   "dims.n_layers", "dims.n_heads", "dims.n_kv_heads",
					   "dims.vocab_size", "dims.seq_len", "created_at", NULL};
	ctl_fields(m, keys);
	size_t i;
	json_t *s;
	json_array_foreach(json_object_get(m, "shares"), i, s)
		printf("share %-6zu %s\n", i, json_string_value(s));
	json_decref(m);
	return CTL_OK;
}

int ctl_id_path(const char *cmd, int argc, char **argv, const char *help, const char *prefix,
		const char *suffix, char *path, size_t cap)
{
	path[0] = '\0';
	if (argc == 2 && (!strcmp(argv[1], "--help") || !strcmp(argv[1], "-h"))) {
		fputs(help, stdout);
		return CTL_OK;
	}
	if (!ctl_operands(cmd, argc - 1, 1, "the id"))
		return CTL_USAGE;
	/* Ids are [A-Za-z0-9_-]; anything else would change the path. */
	if (!*argv[1] || strspn(argv[1], "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789_-") !=
				 strlen(argv[1]))
		return ctl_usage(cmd, "'%s' is not an id", argv[1]);
	snprintf(path, cap, "%s/%s%s", prefix, argv[1], suffix);
	return CTL_OK;
}

static int get(struct ctl *c, const char *cmd, int argc, char **argv)
{
	char path[160];
	int rc = ctl_id_path(cmd, argc, argv, help, "/models", "", path, sizeof path);
	if (rc != CTL_OK || !path[0])
		return rc;
	json_t *m;
	rc = ctl_call(c, "GET", path, NULL, &m);
	return rc != CTL_OK ? rc : show(c, m);
}

static int create(struct ctl *c, const char *cmd, int argc, char **argv)
{
	static const struct option opts[] = {
		{"name", required_argument, NULL, 'n'}, {"description", required_argument, NULL, 'd'},
		{"dims", required_argument, NULL, 'D'}, {"share", required_argument, NULL, 's'},
		{"file", required_argument, NULL, 'f'}, {"help", no_argument, NULL, 'h'},
		{NULL, 0, NULL, 0},
	};
	const char *name = NULL, *desc = NULL, *dims = NULL, *file = NULL;
	json_t *shares = json_array(), *body = NULL;
	int o, rc = CTL_USAGE;
	while ((o = getopt_long(argc, argv, "h", opts, NULL)) != -1) {
		switch (o) {
		case 'n': name = optarg; break;
		case 'd': desc = optarg; break;
		case 'D': dims = optarg; break;
		case 's': json_array_append_new(shares, json_string(optarg)); break;
		case 'f': file = optarg; break;
		case 'h': fputs(help, stdout); rc = CTL_OK; goto out;
		default: ctl_usage(cmd, "unknown option '%s'", argv[optind - 1]); goto out;
		}
	}
	if (!ctl_operands(cmd, argc - optind, 0, ""))
		goto out;
	if (file) {
		json_error_t e;
		if (!(body = json_load_file(file, JSON_REJECT_DUPLICATES, &e))) {
			rc = ctl_fail("%s: %s (line %d)", file, e.text, e.line);
			goto out;
		}
	} else {
		if (!name || !dims || json_array_size(shares) < 2) {
			ctl_usage(cmd, "give --name, --dims and a --share per party (at least 2), or --file");
			goto out;
		}
		static const char *const dn[] = {"dim", "hidden_dim", "n_layers", "n_heads",
						 "n_kv_heads", "vocab_size", "seq_len"};
		json_t *d = json_object();
		const char *p = dims;
		for (size_t i = 0; i < 7; i++) {
			char num[24];
			size_t l = strcspn(p, ",");
			long long v;
			snprintf(num, sizeof num, "%.*s", (int)(l < 23 ? l : 23), p);
			if ((i < 6 && p[l] != ',') || (i == 6 && p[l]) ||
			    !ctl_number(cmd, "each of --dims", num, 1, 1 << 22, &v)) {
				if ((i < 6 && p[l] != ',') || (i == 6 && p[l]))
					ctl_usage(cmd, "--dims takes 7 numbers: %s", "DIM,HIDDEN,LAYERS,HEADS,KV_HEADS,VOCAB,SEQ_LEN");
				json_decref(d);
				goto out;
			}
			json_object_set_new(d, dn[i], json_integer(v));
			p += l + 1;
		}
		body = json_pack("{s:s, s:o, s:O}", "name", name, "dims", d, "shares", shares);
		if (desc)
			json_object_set_new(body, "description", json_string(desc));
	}
	json_t *m;
	rc = ctl_call(c, "POST", "/models", body, &m);
	if (rc == CTL_OK)
		rc = show(c, m);
out:
	json_decref(shares);
	json_decref(body);
	return rc;
}

static int del(struct ctl *c, const char *cmd, int argc, char **argv)
{
	char path[160];
	int rc = ctl_id_path(cmd, argc, argv, help, "/models", "", path, sizeof path);
	if (rc != CTL_OK || !path[0])
		return rc;
	json_t *none;
	rc = ctl_call(c, "DELETE", path, NULL, &none);
	json_decref(none);
	if (rc == CTL_OK)
		return c->json ? ctl_print_json(json_pack("{s:s}", "deleted", argv[1]))
			       : (printf("deleted %s\n", argv[1]), CTL_OK);
	return rc;
}

int ctl_models(struct ctl *c, int argc, char **argv)
{
	static const struct ctl_verb verbs[] = {
		{"list", list}, {"get", get}, {"create", create}, {"delete", del}, {NULL, NULL},
	};
	return ctl_dispatch(c, argc, argv, help, verbs);
}
