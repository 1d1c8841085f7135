/* mimir-session parties: register a party (certificate identity, sealing key, optional
 * certificate pin, endpoint, attestation summary), read, list, and update one (status,
 * key rotation, pin, endpoint, a fresh attestation summary). */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <sodium.h>

#include "err/err.h"
#include "session.h"

static const char *const role_choices[] = {"party", "dealer", NULL};
static const char *const status_choices[] = {"active", "suspended", "retired", NULL};

int session_party_create(struct http_req *r, void *ctx)
{
	struct session_ctx *c = ctx;
	struct reg_party_spec s = {0};
	struct jspec_bytes key = {0}, fp = {0};
	json_t *att = NULL, *doc = NULL;
	int role = 0;
	char *att_text = NULL;
	struct reg_party *p = NULL;
	const struct jspec_field spec[] = {
		JSPEC_STR("identity", true, 1, REG_NAME_MAX, &s.identity),
		JSPEC_CHOICE("role", false, role_choices, &role),
		JSPEC_HEXBYTES("sealing_key", true, 32, 32, &key),
		JSPEC_HEXBYTES("cert_fingerprint", false, 32, 32, &fp),
		JSPEC_STR("endpoint", false, 0, REG_ENDPOINT_MAX, &s.endpoint),
		JSPEC_OBJ("attestation", false, &att),
		JSPEC_END_F,
	};
	int rc = http_req_json(r, spec, 0, &doc);
	if (rc != 0)
		return rc;
	if (att && !(att_text = json_dumps(att, JSON_COMPACT | JSON_SORT_KEYS))) {
		rc = http_reply_problem(r, ERR_NOMEM, NULL, NULL);
		goto out;
	}
	if (!(p = malloc(sizeof *p))) {
		rc = http_reply_problem(r, ERR_NOMEM, NULL, NULL);
		goto out;
	}
	s.role = (enum reg_party_role)role;
	s.sealing_key = key.data;
	s.fingerprint = fp.data;
	s.attestation = att_text;
	struct session_actor a;
	session_actor(r, &a);
	if ((rc = reg_party_create(c->reg, &a.actor, &s, p)) != 0) {
		session_fail(r, rc);
		goto out;
	}
	char loc[64];
	snprintf(loc, sizeof loc, "/v1/parties/%s", p->id);
	http_reply_header(r, "Location", loc);
	rc = http_reply_json(r, 201, session_party_json(p));
out:
	jspec_bytes_free(&key);
	jspec_bytes_free(&fp);
	free(att_text);
	free(p);
	json_decref(doc);
	return rc;
}

int session_party_list(struct http_req *r, void *ctx)
{
	struct session_ctx *c = ctx;
	int64_t after, next;
	size_t limit, n;
	struct reg_party *items;
	int rc = session_page(r, &after, &limit);
	if (rc != 0)
		return rc;
	enum reg_party_status st;
	const char *status = http_req_query(r, "status");
	if (status && reg_party_status_parse(status, &st) != 0)
		return http_reply_problem(r, ERR_RANGE, "status: must be active, suspended or retired",
					  "status");
	if ((rc = reg_party_list(c->reg, status ? (int)st : -1, after, limit, &items, &n, &next)) != 0)
		return session_fail(r, rc);
	json_t *arr = json_array();
	for (size_t i = 0; i < n; i++)
		json_array_append_new(arr, session_party_json(&items[i]));
	free(items);
	return session_reply_page(r, arr, next);
}

int session_party_get(struct http_req *r, void *ctx)
{
	struct session_ctx *c = ctx;
	struct reg_party *p = malloc(sizeof *p);
	if (!p)
		return http_reply_problem(r, ERR_NOMEM, NULL, NULL);
	int rc = reg_party_get(c->reg, http_req_param(r, "id"), p);
	rc = rc != 0 ? session_fail(r, rc) : http_reply_json(r, 200, session_party_json(p));
	free(p);
	return rc;
}

int session_party_update(struct http_req *r, void *ctx)
{
	struct session_ctx *c = ctx;
	struct reg_party_update u = {0};
	struct jspec_bytes key = {0};
	json_t *att = NULL, *doc = NULL;
	const char *fp_hex = NULL;
	int status = 0;
	char *att_text = NULL;
	uint8_t fp[32];
	struct reg_party *p = NULL;
	const struct jspec_field spec[] = {
		JSPEC_CHOICE("status", false, status_choices, &status, .present = &u.set_status),
		JSPEC_HEXBYTES("sealing_key", false, 32, 32, &key),
		/* A digest to pin, or "" to remove the pin. */
		JSPEC_STR("cert_fingerprint", false, 0, 64, &fp_hex, .present = &u.set_fingerprint),
		JSPEC_STR("endpoint", false, 0, REG_ENDPOINT_MAX, &u.endpoint),
		JSPEC_OBJ("attestation", false, &att),
		JSPEC_END_F,
	};
	int rc = http_req_json(r, spec, 0, &doc);
	if (rc != 0)
		return rc;
	if (!u.set_status && !key.data && !u.set_fingerprint && !u.endpoint && !att) {
		rc = http_reply_problem(r, ERR_MISSING, "nothing to change: give at least one of status, "
					"sealing_key, cert_fingerprint, endpoint, attestation", NULL);
		goto out;
	}
	u.status = (enum reg_party_status)status;
	u.sealing_key = key.data;
	if (u.set_fingerprint && *fp_hex) {
		size_t bin = 0;
		if (strlen(fp_hex) != 64 || sodium_hex2bin(fp, sizeof fp, fp_hex, 64, NULL, &bin, NULL) != 0 ||
		    bin != 32) {
			rc = http_reply_problem(r, ERR_PARSE, "cert_fingerprint: must be 64 hex digits (a "
						"SHA-256), or \"\" to remove the pin", "cert_fingerprint");
			goto out;
		}
		u.fingerprint = fp;
	}
	if (att && !(att_text = json_dumps(att, JSON_COMPACT | JSON_SORT_KEYS))) {
		rc = http_reply_problem(r, ERR_NOMEM, NULL, NULL);
		goto out;
	}
	u.attestation = att_text;
	if (!(p = malloc(sizeof *p))) {
		rc = http_reply_problem(r, ERR_NOMEM, NULL, NULL);
		goto out;
	}
	struct session_actor a;
	session_actor(r, &a);
	if ((rc = reg_party_update(c->reg, &a.actor, http_req_param(r, "id"), &u, p)) != 0)
		session_fail(r, rc);
	else
		rc = http_reply_json(r, 200, session_party_json(p));
out:
	jspec_bytes_free(&key);
	free(att_text);
	free(p);
	json_decref(doc);
	return rc;
}
