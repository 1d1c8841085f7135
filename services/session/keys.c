/* mimir-session API keys: create one scoped to sessions (the only reply that ever
 * contains the key), list, read, revoke; and verify, which the gateway calls with the
 * key a client presented and the session it asks for. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <sodium.h>

#include "err/err.h"
#include "metrics/metrics.h"
#include "session.h"

int session_key_create(struct http_req *r, void *ctx)
{
	struct session_ctx *c = ctx;
	struct reg_key_spec s = {0};
	json_t *sessions = NULL, *doc = NULL;
	uint64_t ttl = (uint64_t)c->set.key_default_ttl_s;
	const char *ids[REG_KEY_MAX_SESSIONS];
	const struct jspec_field spec[] = {
		JSPEC_ARR("sessions", true, 1, REG_KEY_MAX_SESSIONS, &sessions),
		JSPEC_STR("name", false, 0, REG_NAME_MAX, &s.name),
		JSPEC_U64("ttl_s", false, 0, (double)c->set.key_max_ttl_s, &ttl),
		JSPEC_END_F,
	};
	int rc = http_req_json(r, spec, 0, &doc);
	if (rc != 0)
		return rc;
	if (session_string_array(r, sessions, "sessions", 64, ids, REG_KEY_MAX_SESSIONS,
				 &s.n_sessions) != 0)
		goto out;
	s.session_ids = ids;
	/* With a maximum configured, "no expiry" means "as long as allowed". */
	if (ttl == 0 && c->set.key_max_ttl_s < REG_TTL_MAX_S)
		ttl = (uint64_t)c->set.key_max_ttl_s;
	s.ttl_s = (int64_t)ttl;
	struct reg_key k;
	char text[REG_KEY_TEXT_SIZE];
	struct session_actor a;
	session_actor(r, &a);
	if ((rc = reg_key_create(c->reg, &a.actor, &s, &k, text)) != 0) {
		session_fail(r, rc);
		goto out;
	}
	json_t *body = session_key_json(&k, session_now_ms());
	if (body)
		json_object_set_new(body, "key", json_string(text));
	sodium_memzero(text, sizeof text);
	char loc[64];
	snprintf(loc, sizeof loc, "/v1/keys/%s", k.id);
	http_reply_header(r, "Location", loc);
	/* The one response that carries the key: no cache may keep it. */
	http_reply_header(r, "Cache-Control", "no-store");
	rc = http_reply_json(r, 201, body);
out:
	json_decref(doc);
	return rc;
}

int session_key_list(struct http_req *r, void *ctx)
{
	struct session_ctx *c = ctx;
	int64_t after, next;
	size_t limit, n;
	struct reg_key *items;
	int rc = session_page(r, &after, &limit);
	if (rc != 0)
		return rc;
	const char *session = http_req_query(r, "session");
	if (session && !reg_id_ok(session, "ses_"))
		return http_reply_problem(r, ERR_INVALID, "session: not a session id", "session");
	if ((rc = reg_key_list(c->reg, session, after, limit, &items, &n, &next)) != 0)
		return session_fail(r, rc);
	json_t *arr = json_array();
	int64_t now = session_now_ms();
	for (size_t i = 0; i < n; i++)
		json_array_append_new(arr, session_key_json(&items[i], now));
	free(items);
	return session_reply_page(r, arr, next);
}

int session_key_get(struct http_req *r, void *ctx)
{
	struct session_ctx *c = ctx;
	struct reg_key k;
	int rc = reg_key_get(c->reg, http_req_param(r, "id"), &k);
	if (rc != 0)
		return session_fail(r, rc);
	return http_reply_json(r, 200, session_key_json(&k, session_now_ms()));
}

int session_key_revoke(struct http_req *r, void *ctx)
{
	struct session_ctx *c = ctx;
	struct reg_key k;
	struct session_actor a;
	session_actor(r, &a);
	int rc = reg_key_revoke(c->reg, &a.actor, http_req_param(r, "id"), &k);
	if (rc != 0)
		return session_fail(r, rc);
	return http_reply_json(r, 200, session_key_json(&k, session_now_ms()));
}

int session_key_verify(struct http_req *r, void *ctx)
{
	struct session_ctx *c = ctx;
	const char *key = NULL, *session = NULL;
	json_t *doc;
	const struct jspec_field spec[] = {
		JSPEC_STR("key", true, 1, 256, &key),
		JSPEC_STR("session", false, 1, 64, &session),
		JSPEC_END_F,
	};
	int rc = http_req_json(r, spec, 0, &doc);
	if (rc != 0)
		return rc;
	enum reg_key_verdict v;
	char key_id[REG_ID_SIZE];
	rc = reg_key_verify(c->reg, key, session, &v, key_id);
	json_decref(doc); /* the key text dies with the document */
	if (rc != 0)
		return session_fail(r, rc);
	metric_inc(metric_series(c->m_verify, METRIC_LABELS(reg_key_verdict_name(v))));
	return http_reply_json(r, 200, json_pack("{s:b, s:s, s:o}", "valid", v == REG_KEY_VALID,
						 "reason", reg_key_verdict_name(v), "key_id",
						 key_id[0] ? json_string(key_id) : json_null()));
}
