/* mimirctl internals: the connection to a gateway's admin API, the exit statuses every
 * command shares, and the printers (tables for people, JSON for scripts). */
#ifndef MIMIR_CTL_H
#define MIMIR_CTL_H

#include <jansson.h>
#include <stdbool.h>
#include <stddef.h>

#include "httpc/httpc.h"

#define CTL_PROG "mimirctl"

/* Exit statuses, one per kind of outcome a script may want to tell apart. */
enum ctl_exit {
	CTL_OK = 0,
	CTL_FAIL = 1,        /* anything else (an unusable answer, a local error) */
	CTL_USAGE = 2,       /* bad command line */
	CTL_UNREACHABLE = 3, /* no answer: connection, TLS or timeout */
	CTL_AUTH = 4,        /* 401 / 403: the credential was refused */
	CTL_NOT_FOUND = 5,   /* 404 */
	CTL_CONFLICT = 6,    /* 409 */
	CTL_INVALID = 7,     /* 400, 413, 415: the request was refused as input */
	CTL_LIMITED = 8,     /* 429 */
	CTL_SERVER = 9,      /* 5xx: the gateway or the registry failed */
	CTL_TAMPERED = 10,   /* audit verify: the chain does not verify */
};

struct ctl {
	const char *gateway, *ca, *cert, *key, *token_file;
	long timeout_s;
	bool json;
	char auth[128]; /* "Authorization: Bearer <token>", or "" (wiped at exit) */
	struct httpc *h;
};

/* Connects lazily on the first call. Returns CTL_OK or an exit status after printing. */
int ctl_open(struct ctl *c);
void ctl_close(struct ctl *c);

/* One request to the admin API (path under /admin/v1, with query), body may be NULL.
 * On a 2xx answer *out is the JSON document (NULL for 204) and CTL_OK is returned;
 * otherwise the problem is printed on stderr and its exit status returned. */
int ctl_call(struct ctl *c, const char *method, const char *path, json_t *body, json_t **out);
/* GET a list; with all set, follows "next" and returns every item in one page. */
int ctl_list(struct ctl *c, const char *path, bool all, json_t **out);

/* "mimirctl: ..." on stderr; return CTL_FAIL / CTL_USAGE. */
int ctl_fail(const char *fmt, ...) __attribute__((format(printf, 1, 2)));
int ctl_usage(const char *cmd, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
/* A whole number in lo..hi from an option's text; false with a usage message if not. */
bool ctl_number(const char *cmd, const char *opt, const char *s, long long lo, long long hi,
		long long *out);

/* ---- output ---- */
/* Pretty JSON on stdout (steals doc). */
int ctl_print_json(json_t *doc);
struct ctl_col {
	const char *title;
	const char *key; /* dotted path into each item, or NULL: fmt decides */
	/* Optional: the cell text of item (into buf); NULL prints the key's value. */
	void (*fmt)(json_t *item, char *buf, size_t cap);
};
/* A table of items (a JSON array) with the given columns, or "(none)". */
void ctl_table(json_t *items, const struct ctl_col *cols, size_t ncols);
/* "key: value" lines for the keys of obj, in order (NULL-terminated); nested values as
 * compact JSON. */
void ctl_fields(json_t *obj, const char *const *keys);
/* The text of a JSON value for a table cell: strings as they are, null as "-". */
void ctl_cell(json_t *v, char *buf, size_t cap);

/* ---- command groups ----
 * A group ("models") has verbs ("list", "get"); ctl_dispatch() answers --help with the
 * group's help text and hands argv from the verb on to the verb's function, whose
 * name for messages is "<group> <verb>". */
struct ctl_verb {
	const char *name;
	int (*fn)(struct ctl *c, const char *cmd, int argc, char **argv);
};
int ctl_dispatch(struct ctl *c, int argc, char **argv, const char *help, const struct ctl_verb *verbs);
/* After a verb's options: exactly n operands left, else a usage error (returns false). */
bool ctl_operands(const char *cmd, int left, int n, const char *what);
/* The options of every list verb: --limit N (1..500), --all. -1 for --help. */
int ctl_list_opts(const char *cmd, int argc, char **argv, long long *limit, bool *all);
/* A verb whose only operand is an id (argv[1]): builds "<prefix>/<id><suffix>" into
 * path, or prints the help (returns CTL_OK with path empty) or a usage error. */
int ctl_id_path(const char *cmd, int argc, char **argv, const char *help, const char *prefix,
		const char *suffix, char *path, size_t cap);

/* ---- commands ---- */
int ctl_models(struct ctl *c, int argc, char **argv);
int ctl_parties(struct ctl *c, int argc, char **argv);
int ctl_sessions(struct ctl *c, int argc, char **argv);
int ctl_keys(struct ctl *c, int argc, char **argv);
int ctl_audit(struct ctl *c, int argc, char **argv);
int ctl_whoami(struct ctl *c, int argc, char **argv);
int ctl_token(struct ctl *c, int argc, char **argv);

#endif
