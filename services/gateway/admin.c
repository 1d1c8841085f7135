/* mimir-gateway admin API: everything an administrator does to the registry (models,
 * parties, sessions, API keys, the audit log) under /admin/v1, forwarded to the
 * session service's /v1 with the administrator named in X-Mimir-Actor, so the audit
 * log records "gateway:<gateway CN> for cert:<CN>" or "... for token:<name>".
 *
 * The gateway checks what it can without the registry, so bad requests never reach
 * it: the credential and its rate limit, path ids (a malformed one is 404, as the
 * session service answers), the body's media type and JSON syntax (400 naming line and
 * column). Query parameters are forwarded only when the operation has them, each
 * percent-encoded again. The registry's own answers, including its 400s that name the
 * field, come back unchanged; every admin answer is Cache-Control: no-store, since
 * they carry key metadata and audit entries. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include "err/err.h"
#include "gateway.h"
#include "jspec/jspec.h"

enum body_kind { BODY_NONE, BODY_JSON, BODY_OPTIONAL };

struct op {
	const char *method, *pattern;
	const char *query[4];
	enum body_kind body;
};

#define A GW_ADMIN_PREFIX
static const struct op ops[] = {
	{"POST", A "/models", {NULL}, BODY_JSON},
	{"GET", A "/models", {"limit", "after", NULL}, BODY_NONE},
	{"GET", A "/models/{id}", {NULL}, BODY_NONE},
	{"DELETE", A "/models/{id}", {NULL}, BODY_NONE},
	{"POST", A "/parties", {NULL}, BODY_JSON},
	{"GET", A "/parties", {"limit", "after", "status", NULL}, BODY_NONE},
	{"GET", A "/parties/{id}", {NULL}, BODY_NONE},
	{"PATCH", A "/parties/{id}", {NULL}, BODY_JSON},
	{"POST", A "/sessions", {NULL}, BODY_JSON},
	{"GET", A "/sessions", {"limit", "after", "state", "model"}, BODY_NONE},
	{"GET", A "/sessions/{id}", {NULL}, BODY_NONE},
	{"POST", A "/sessions/{id}/transition", {NULL}, BODY_JSON},
	{"POST", A "/sessions/{id}/close", {NULL}, BODY_OPTIONAL},
	{"POST", A "/keys", {NULL}, BODY_JSON},
	{"GET", A "/keys", {"limit", "after", "session", NULL}, BODY_NONE},
	{"GET", A "/keys/{id}", {NULL}, BODY_NONE},
	{"POST", A "/keys/{id}/revoke", {NULL}, BODY_NONE},
	{"GET", A "/audit", {"limit", "after", NULL}, BODY_NONE},
	{"GET", A "/audit/head", {NULL}, BODY_NONE},
	{"GET", A "/audit/verify", {"seq", "hash", NULL}, BODY_NONE},
	{NULL, NULL, {NULL}, BODY_NONE},
};
#undef A

static const struct op *find_op(struct http_req *r)
{
	const char *route = http_req_route(r), *method = http_req_method(r);
	if (!strcmp(method, "HEAD"))
		method = "GET";
	for (const struct op *o = ops; o->method; o++)
		if (!strcmp(o->pattern, route) && !strcmp(o->method, method))
			return o;
	return NULL;
}

/* Registry ids and anything else an administrator might type: 1..64 of
 * [A-Za-z0-9_-]. Nothing else may reach the upstream path. */
static bool param_ok(const char *s)
{
	size_t n = s ? strlen(s) : 0;
	if (n == 0 || n > 64)
		return false;
	for (size_t i = 0; i < n; i++)
		if (!((s[i] >= 'a' && s[i] <= 'z') || (s[i] >= 'A' && s[i] <= 'Z') ||
		      (s[i] >= '0' && s[i] <= '9') || s[i] == '_' || s[i] == '-'))
			return false;
	return true;
}

/* Appends "k=v" (v percent-encoded) to the query in buf. False when it does not fit. */
static bool query_add(char *buf, size_t cap, size_t *used, const char *k, const char *v)
{
	static const char hex[] = "0123456789ABCDEF";
	int w = snprintf(buf + *used, cap - *used, "%c%s=", *used ? '&' : '?', k);
	if (w < 0 || (size_t)w >= cap - *used)
		return false;
	*used += (size_t)w;
	for (const unsigned char *p = (const unsigned char *)v; *p; p++) {
		bool plain = (*p >= 'a' && *p <= 'z') || (*p >= 'A' && *p <= 'Z') ||
			     (*p >= '0' && *p <= '9') || strchr("-._~", *p);
		if (*used + (plain ? 1 : 3) >= cap)
			return false;
		if (plain) {
			buf[(*used)++] = (char)*p;
		} else {
			buf[(*used)++] = '%';
			buf[(*used)++] = hex[*p >> 4];
			buf[(*used)++] = hex[*p & 15];
		}
	}
	buf[*used] = '\0';
	return true;
}

static bool has_body(const char *b, size_t len)
{
	for (size_t i = 0; i < len; i++)
		if (b[i] != ' ' && b[i] != '\t' && b[i] != '\r' && b[i] != '\n')
			return true;
	return false;
}

/* The media type and the JSON syntax of a body, before the registry sees it. */
static int check_body(struct http_req *r, const char *body, size_t len)
{
	const char *ct = http_req_header(r, "Content-Type");
	if (ct) {
		size_t l = strcspn(ct, ";");
		while (l && ct[l - 1] == ' ')
			l--;
		if (l != 16 || strncasecmp(ct, "application/json", 16) != 0) {
			http_reply_problem(r, ERR_UNSUPPORTED, "the body must be application/json",
					   "Content-Type");
			return ERR_UNSUPPORTED;
		}
	}
	json_t *doc = NULL;
	struct jspec_error e;
	int rc = jspec_parse_body(body, len, NULL, 0, &doc, &e);
	json_decref(doc);
	if (rc != 0)
		http_reply_problem(r, e.code, e.detail, e.field[0] ? e.field : NULL);
	return rc;
}

int gw_admin_forward(struct http_req *r, void *ctx)
{
	struct gw_ctx *c = ctx;
	gw_cors_headers(r, c, GW_API_ADMIN);
	http_reply_header(r, "Cache-Control", "no-store");
	struct gw_admin who;
	int rc = gw_admin_auth(r, c, &who);
	if (rc != 0)
		return rc;
	const struct op *o = find_op(r);
	if (!o)
		return http_reply_problem(r, ERR_INTERNAL, "admin route without an operation", NULL);
	const char *id = http_req_param(r, "id");
	if (strstr(o->pattern, "{id}") && !param_ok(id))
		return http_reply_problem_status(r, ERR_NOT_FOUND, 404, "no object has this id", "id");
	char path[1024];
	size_t used = 0;
	int w = snprintf(path, sizeof path, "/v1%s", http_req_path(r) + strlen(GW_ADMIN_PREFIX));
	if (w < 0 || (size_t)w >= sizeof path)
		return http_reply_problem_status(r, ERR_NOT_FOUND, 404, "no such endpoint", NULL);
	char query[600];
	for (size_t i = 0; i < 4 && o->query[i]; i++) {
		const char *v = http_req_query(r, o->query[i]);
		if (v && !query_add(query, sizeof query, &used, o->query[i], v))
			return http_reply_problem(r, ERR_RANGE, "query parameter too long", o->query[i]);
	}
	if (used && (size_t)w + used >= sizeof path)
		return http_reply_problem(r, ERR_RANGE, "query too long", NULL);
	if (used)
		memcpy(path + w, query, used + 1);
	size_t len = 0;
	const char *body = http_req_body(r, &len);
	bool send = o->body == BODY_JSON || (o->body == BODY_OPTIONAL && has_body(body, len));
	if (send && (rc = check_body(r, body, len)) != 0)
		return rc;
	struct httpc_resp resp;
	rc = gw_upstream_call(c->up, r, o->method, path, who.actor, send ? body : NULL, send ? len : 0, &resp);
	if (rc != 0) {
		gw_upstream_fail(r, c, rc, &resp);
	} else {
		if (resp.status == 201) {
			json_t *doc = json_loadb(resp.body, resp.len, 0, NULL);
			const char *nid = json_string_value(json_object_get(doc, "id"));
			char loc[256];
			if (nid && param_ok(nid) &&
			    snprintf(loc, sizeof loc, "%s/%s", http_req_path(r), nid) < (int)sizeof loc)
				http_reply_header(r, "Location", loc);
			json_decref(doc);
		}
		/* The one answer that carries a key in clear. */
		bool secret = !strcmp(o->method, "POST") && !strcmp(o->pattern, GW_ADMIN_PREFIX "/keys");
		rc = gw_relay(r, c, &resp, secret);
	}
	httpc_resp_free(&resp);
	return rc;
}

int gw_admin_whoami(struct http_req *r, void *ctx)
{
	struct gw_ctx *c = ctx;
	gw_cors_headers(r, c, GW_API_ADMIN);
	http_reply_header(r, "Cache-Control", "no-store");
	struct gw_admin who;
	int rc = gw_admin_auth(r, c, &who);
	if (rc != 0)
		return rc;
	return http_reply_json(r, 200, json_pack("{s:s, s:s}", "actor", who.actor, "credential",
						 who.credential));
}
