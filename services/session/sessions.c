/* mimir-session sessions: create (the registry allocates the parties unless they are
 * named), read (with each party's sealing key, endpoint and attestation summary, what
 * a client needs), list, move along the state machine, close; and the one write a
 * party makes itself, reporting its initialisation, which makes the session ready
 * once every party has. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "err/err.h"
#include "session.h"

static const char *const state_choices[] = {"created", "ready", "active", "closed", "failed", NULL};

/* The session and its parties in full, for replies. */
static int reply_detail(struct http_req *r, struct session_ctx *c, unsigned status, const char *id)
{
	struct reg_session *s = malloc(sizeof *s);
	struct reg_party *parties = calloc(REG_MAX_PARTIES, sizeof *parties);
	int rc;
	if (!s || !parties)
		rc = http_reply_problem(r, ERR_NOMEM, NULL, NULL);
	else if ((rc = reg_session_get_detail(c->reg, id, s, parties)) != 0)
		session_fail(r, rc);
	else
		rc = http_reply_json(r, status, session_session_json(s, parties, session_now_ms()));
	free(s);
	free(parties);
	return rc;
}

int session_session_create(struct http_req *r, void *ctx)
{
	struct session_ctx *c = ctx;
	struct reg_session_spec s = {0};
	json_t *parties = NULL, *doc = NULL;
	uint64_t bits = (uint64_t)c->set.session_fixed_point_bits, max_context = 0, pad = 0,
		 ttl = (uint64_t)c->set.session_default_ttl_s;
	const char *ids[REG_MAX_PARTIES];
	const struct jspec_field spec[] = {
		JSPEC_STR("model", true, 1, 64, &s.model_id),
		JSPEC_ARR("parties", false, 2, REG_MAX_PARTIES, &parties),
		JSPEC_U64("fixed_point_bits", false, 8, 32, &bits),
		JSPEC_U64("max_context", false, 1, 1 << 20, &max_context),
		JSPEC_U64("pad_bucket", false, 1, 1 << 20, &pad),
		JSPEC_U64("ttl_s", false, 1, (double)c->set.session_max_ttl_s, &ttl),
		JSPEC_END_F,
	};
	int rc = http_req_json(r, spec, 0, &doc);
	if (rc != 0)
		return rc;
	if (parties && session_string_array(r, parties, "parties", 64, ids, REG_MAX_PARTIES,
					    &s.n_parties) != 0)
		goto out;
	s.party_ids = ids;
	s.fixed_point_bits = (uint32_t)bits;
	s.max_context = (uint32_t)max_context;
	s.pad_bucket = (uint32_t)pad;
	s.ttl_s = (int64_t)ttl;
	struct reg_session *out = malloc(sizeof *out);
	if (!out) {
		rc = http_reply_problem(r, ERR_NOMEM, NULL, NULL);
		goto out;
	}
	struct session_actor a;
	session_actor(r, &a);
	rc = reg_session_create(c->reg, &a.actor, &s, out);
	if (rc == 0) {
		char loc[64];
		snprintf(loc, sizeof loc, "/v1/sessions/%s", out->id);
		http_reply_header(r, "Location", loc);
		session_prov_kick(c->prov);
		rc = reply_detail(r, c, 201, out->id);
	} else {
		session_fail(r, rc);
	}
	free(out);
out:
	json_decref(doc);
	return rc;
}

int session_session_list(struct http_req *r, void *ctx)
{
	struct session_ctx *c = ctx;
	int64_t after, next;
	size_t limit, n;
	struct reg_session *items;
	int rc = session_page(r, &after, &limit);
	if (rc != 0)
		return rc;
	enum reg_state st;
	const char *state = http_req_query(r, "state"), *model = http_req_query(r, "model");
	if (state && reg_state_parse(state, &st) != 0)
		return http_reply_problem(r, ERR_RANGE,
					  "state: must be created, ready, active, closed or failed", "state");
	if (model && !reg_id_ok(model, "mdl_"))
		return http_reply_problem(r, ERR_INVALID, "model: not a model id", "model");
	if ((rc = reg_session_list(c->reg, state ? (int)st : -1, model, after, limit, &items, &n,
				   &next)) != 0)
		return session_fail(r, rc);
	json_t *arr = json_array();
	int64_t now = session_now_ms();
	for (size_t i = 0; i < n; i++)
		json_array_append_new(arr, session_session_json(&items[i], NULL, now));
	free(items);
	return session_reply_page(r, arr, next);
}

int session_session_get(struct http_req *r, void *ctx)
{
	struct session_ctx *c = ctx;
	const char *id = http_req_param(r, "id");
	const struct ident *peer = http_req_peer(r);
	if (peer && peer->role == IDENT_ROLE_PARTY) {
		/* A party sees the sessions it serves, not the others. */
		struct reg_session *s = malloc(sizeof *s);
		struct reg_party *parties = calloc(REG_MAX_PARTIES, sizeof *parties);
		int rc;
		if (!s || !parties) {
			rc = http_reply_problem(r, ERR_NOMEM, NULL, NULL);
		} else if ((rc = reg_session_get_detail(c->reg, id, s, parties)) != 0) {
			session_fail(r, rc);
		} else {
			bool member = false;
			for (size_t i = 0; i < s->n_parties; i++)
				member = member || strcmp(parties[i].identity, peer->cn) == 0;
			rc = member ? http_reply_json(r, 200, session_session_json(s, parties, session_now_ms()))
				    : http_reply_problem(r, ERR_FORBIDDEN, "not a party of this session", NULL);
		}
		free(s);
		free(parties);
		return rc;
	}
	return reply_detail(r, c, 200, id);
}

static int transition(struct http_req *r, struct session_ctx *c, int expect, enum reg_state to,
		      const char *reason)
{
	struct reg_session *s = malloc(sizeof *s);
	if (!s)
		return http_reply_problem(r, ERR_NOMEM, NULL, NULL);
	struct session_actor a;
	session_actor(r, &a);
	const char *id = http_req_param(r, "id");
	int rc = reg_session_transition(c->reg, &a.actor, id, expect, to, reason, s);
	free(s);
	if (rc != 0)
		return session_fail(r, rc);
	if (reg_state_terminal((enum reg_state)to))
		session_prov_kick(c->prov); /* the dealer can forget it now */
	return reply_detail(r, c, 200, id);
}

int session_session_transition(struct http_req *r, void *ctx)
{
	int to = 0, from = REG_STATE_ANY;
	bool has_from = false;
	const char *reason = NULL;
	json_t *doc;
	const struct jspec_field spec[] = {
		JSPEC_CHOICE("to", true, state_choices, &to),
		JSPEC_CHOICE("from", false, state_choices, &from, .present = &has_from),
		JSPEC_STR("reason", false, 0, REG_DESC_MAX, &reason),
		JSPEC_END_F,
	};
	int rc = http_req_json(r, spec, 0, &doc);
	if (rc != 0)
		return rc;
	rc = transition(r, ctx, has_from ? from : REG_STATE_ANY, (enum reg_state)to, reason);
	json_decref(doc);
	return rc;
}

int session_session_close(struct http_req *r, void *ctx)
{
	const char *reason = NULL;
	json_t *doc = NULL;
	const struct jspec_field spec[] = {
		JSPEC_STR("reason", false, 0, REG_DESC_MAX, &reason),
		JSPEC_END_F,
	};
	int rc;
	if (session_has_body(r) && (rc = http_req_json(r, spec, 0, &doc)) != 0)
		return rc;
	rc = transition(r, ctx, REG_STATE_ANY, REG_STATE_CLOSED, reason ? reason : "closed");
	json_decref(doc);
	return rc;
}

int session_session_init(struct http_req *r, void *ctx)
{
	struct session_ctx *c = ctx;
	static const char *const results[] = {"ready", "failed", NULL};
	int result = 0;
	const char *detail = NULL;
	json_t *doc;
	const struct jspec_field spec[] = {
		JSPEC_CHOICE("status", true, results, &result),
		JSPEC_STR("detail", false, 0, 200, &detail),
		JSPEC_END_F,
	};
	int rc = http_req_json(r, spec, 0, &doc);
	if (rc != 0)
		return rc;
	const struct ident *peer = http_req_peer(r);
	struct reg_session *s = malloc(sizeof *s);
	if (!s) {
		json_decref(doc);
		return http_reply_problem(r, ERR_NOMEM, NULL, NULL);
	}
	struct session_actor a;
	session_actor(r, &a);
	const char *id = http_req_param(r, "id");
	rc = reg_session_report_init(c->reg, &a.actor, id, peer ? peer->cn : "",
				     peer ? peer->fingerprint : NULL, result == 0, detail, s);
	free(s);
	json_decref(doc);
	if (rc != 0)
		return session_fail(r, rc);
	return reply_detail(r, c, 200, id);
}
