/* mimirctl's link to the gateway: one httpc (mutual TLS, the gateway's certificate must
 * carry the gateway role), the admin token read from a file or the environment (never
 * from the command line, where other users could read it), and the translation of
 * every answer into JSON or a printed problem plus an exit status. */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <sodium.h>

#include "ctl.h"
#include "err/err.h"

#define TOKEN_LEN 52

static int load_token(struct ctl *c)
{
	char tok[256] = "";
	const char *env = getenv("MIMIR_ADMIN_TOKEN");
	if (env && *env) {
		snprintf(tok, sizeof tok, "%s", env);
	} else if (c->token_file) {
		FILE *f = fopen(c->token_file, "r");
		if (!f)
			return ctl_fail("cannot read the token file %s: %s", c->token_file, strerror(errno));
		if (!fgets(tok, sizeof tok, f))
			tok[0] = '\0';
		fclose(f);
	} else {
		return CTL_OK;
	}
	size_t l = strlen(tok);
	while (l && (tok[l - 1] == '\n' || tok[l - 1] == '\r' || tok[l - 1] == ' '))
		tok[--l] = '\0';
	int rc = CTL_OK;
	if (l != TOKEN_LEN || strncmp(tok, "mimir_at_", 9) != 0)
		rc = ctl_fail("%s does not hold an admin token (mimir_at_ and 43 characters; see "
			      "'" CTL_PROG " token new')", env && *env ? "MIMIR_ADMIN_TOKEN" : c->token_file);
	else
		snprintf(c->auth, sizeof c->auth, "Authorization: Bearer %.52s", tok);
	sodium_memzero(tok, sizeof tok);
	return rc;
}

int ctl_open(struct ctl *c)
{
	if (c->h)
		return CTL_OK;
	if (!strncmp(c->gateway, "https://", 8) && !c->ca)
		return ctl_fail("--ca (or MIMIR_CA) is required: the deployment's CA certificate");
	if (!!c->cert != !!c->key)
		return ctl_fail("--cert and --key go together");
	int rc = load_token(c);
	if (rc != CTL_OK)
		return rc;
	struct httpc_opts o = {
		.base_url = c->gateway,
		.ca_file = c->ca,
		.cert_file = c->cert,
		.key_file = c->key,
		.expect_role = IDENT_ROLE_GATEWAY,
		.timeout_ms = c->timeout_s * 1000,
		.retries = 1,
		.max_response = 64u << 20,
		.wipe_responses = true, /* a created key is in one */
	};
	if (httpc_new(&c->h, &o) != 0)
		return ctl_fail("cannot set up an HTTP client for %s", c->gateway);
	return CTL_OK;
}

void ctl_close(struct ctl *c)
{
	httpc_free(c->h);
	c->h = NULL;
	sodium_memzero(c->auth, sizeof c->auth);
}

static int exit_of(long status)
{
	switch (status) {
	case 400: case 413: case 415: return CTL_INVALID;
	case 401: case 403: return CTL_AUTH;
	case 404: return CTL_NOT_FOUND;
	case 409: return CTL_CONFLICT;
	case 429: return CTL_LIMITED;
	default: return status >= 500 ? CTL_SERVER : CTL_FAIL;
	}
}

static void print_problem(const struct httpc_resp *r)
{
	json_t *p = json_loadb(r->body, r->len, 0, NULL);
	const char *title = json_string_value(json_object_get(p, "title"));
	const char *detail = json_string_value(json_object_get(p, "detail"));
	const char *field = json_string_value(json_object_get(p, "field"));
	fprintf(stderr, CTL_PROG ": %ld %s: %s", r->status, title ? title : "error",
		detail ? detail : (r->len ? r->body : "(no detail)"));
	if (field)
		fprintf(stderr, " [field: %s]", field);
	if (r->request_id[0])
		fprintf(stderr, " (request %s)", r->request_id);
	fputc('\n', stderr);
	if (r->status == 401)
		fputs(CTL_PROG ": give an admin certificate (--cert/--key) or an admin token "
		      "(--token-file or MIMIR_ADMIN_TOKEN)\n", stderr);
	json_decref(p);
}

int ctl_call(struct ctl *c, const char *method, const char *path, json_t *body, json_t **out)
{
	*out = NULL;
	int rc = ctl_open(c);
	if (rc != CTL_OK)
		return rc;
	char full[2048];
	snprintf(full, sizeof full, "/admin/v1%s", path);
	char *text = body ? json_dumps(body, JSON_COMPACT) : NULL;
	if (body && !text)
		return ctl_fail("out of memory");
	const char *hdrs[] = {c->auth[0] ? c->auth : NULL, NULL};
	struct httpc_resp r;
	int hrc = httpc_request(c->h, method, full, hdrs, text ? "application/json" : NULL, text,
				text ? strlen(text) : 0, &r);
	free(text);
	if (hrc != 0) {
		fprintf(stderr, CTL_PROG ": no answer from the gateway at %s: %s\n", c->gateway, r.error);
		if (hrc == ERR_TLS)
			fputs(CTL_PROG ": check --ca (the deployment's CA) and --cert/--key (a certificate "
			      "it issued); the gateway asks every client for one\n", stderr);
		httpc_resp_free(&r);
		return CTL_UNREACHABLE;
	}
	if (r.status >= 200 && r.status < 300) {
		if (r.len && !(*out = json_loadb(r.body, r.len, 0, NULL)))
			rc = ctl_fail("the gateway answered %ld with a body that is not JSON", r.status);
	} else {
		print_problem(&r);
		rc = exit_of(r.status);
	}
	httpc_resp_free(&r);
	return rc;
}

int ctl_list(struct ctl *c, const char *path, bool all, json_t **out)
{
	json_t *items = json_array(), *page = NULL;
	char p[1024];
	snprintf(p, sizeof p, "%s", path);
	int rc;
	for (;;) {
		if ((rc = ctl_call(c, "GET", p, NULL, &page)) != CTL_OK)
			break;
		json_array_extend(items, json_object_get(page, "items"));
		json_t *next = json_object_get(page, "next");
		if (!all || !json_is_string(next)) {
			*out = json_pack("{s:o, s:O}", "items", items, "next", next ? next : json_null());
			json_decref(page);
			return CTL_OK;
		}
		snprintf(p, sizeof p, "%s%safter=%s", path, strchr(path, '?') ? "&" : "?", json_string_value(next));
		json_decref(page);
		page = NULL;
	}
	json_decref(items);
	return rc;
}
