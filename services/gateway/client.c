/* mimir-gateway client API, read side: a client holding an API key reads the session
 * it will generate in, which is what it needs before sending anything: the state, the
 * model (name and dimensions, to pick the public tokenizer and respect the context),
 * the fixed-point and padding parameters, and each party in share order with the
 * X25519 key the client seals to and the party's attestation summary. The view is
 * built from the registry's and leaves out what only operators need (party
 * endpoints, certificate pins, timestamps of initialisation).
 *
 * Model facts never change once registered (a model in use cannot be deleted), so the
 * gateway keeps those it has fetched; a session read costs one call to the session
 * service, plus the key check when it is not cached. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "err/err.h"
#include "gateway.h"

/* The model facts of gateway.h (gw_model_facts), cached here. */
json_t *gw_model_facts(struct http_req *r, struct gw_ctx *c, const char *id)
{
	json_t *f = NULL;
	pthread_mutex_lock(&c->models_mu);
	for (size_t i = 0; i < c->n_models && !f; i++)
		if (!strcmp(c->models[i].id, id))
			f = json_incref(c->models[i].facts);
	pthread_mutex_unlock(&c->models_mu);
	if (f)
		return f;
	char path[64];
	snprintf(path, sizeof path, "/v1/models/%s", id);
	struct httpc_resp resp;
	int rc = gw_upstream_call(c->up, r, "GET", path, NULL, NULL, 0, &resp);
	json_t *m = rc == 0 && resp.status == 200 ? json_loadb(resp.body, resp.len, 0, NULL) : NULL;
	json_t *dims = json_object_get(m, "dims");
	const char *name = json_string_value(json_object_get(m, "name"));
	if (m && json_is_object(dims) && name)
		f = json_pack("{s:s, s:s, s:O}", "id", id, "name", name, "dims", dims);
	json_decref(m);
	if (!f) {
		if (rc != 0 || resp.status < 400)
			gw_upstream_fail(r, c, rc, &resp);
		else
			gw_relay(r, c, &resp, false);
		httpc_resp_free(&resp);
		return NULL;
	}
	httpc_resp_free(&resp);
	pthread_mutex_lock(&c->models_mu);
	bool have = false;
	for (size_t i = 0; i < c->n_models; i++)
		have = have || !strcmp(c->models[i].id, id);
	if (!have && c->n_models < sizeof c->models / sizeof c->models[0]) {
		snprintf(c->models[c->n_models].id, sizeof c->models[0].id, "%s", id);
		c->models[c->n_models++].facts = json_incref(f);
	}
	pthread_mutex_unlock(&c->models_mu);
	return f;
}

static json_t *party_view(json_t *p)
{
	json_t *att = json_object_get(p, "attestation");
	return json_pack("{s:O, s:O, s:O, s:o, s:b}", "index", json_object_get(p, "index"), "identity",
			 json_object_get(p, "identity"), "sealing_key", json_object_get(p, "sealing_key"),
			 "attestation", json_is_object(att) ? json_incref(att) : json_object(),
			 "initialised", json_is_string(json_object_get(p, "initialised_at")));
}

/* The client's view of the registry's session s (with model facts m, stolen). NULL when
 * s lacks what the session service promises. */
static json_t *session_view(json_t *s, json_t *m)
{
	json_t *ps = json_array(), *src = json_object_get(s, "parties");
	size_t i;
	json_t *p;
	bool ok = ps && json_is_array(src);
	json_array_foreach(src, i, p) {
		json_t *v = json_is_object(p) && json_is_string(json_object_get(p, "sealing_key")) &&
					    json_is_string(json_object_get(p, "identity")) &&
					    json_is_integer(json_object_get(p, "index"))
				    ? party_view(p)
				    : NULL;
		ok = ok && v;
		json_array_append_new(ps, v);
	}
	static const char *const keep[] = {"id", "state", "expired", "reason", "fixed_point_bits",
					   "max_context", "pad_bucket", "initialised", "expires_at", NULL};
	json_t *out = ok ? json_object() : NULL;
	for (size_t k = 0; out && keep[k]; k++) {
		json_t *v = json_object_get(s, keep[k]);
		if (!v) {
			json_decref(out);
			out = NULL;
		} else {
			json_object_set(out, keep[k], v);
		}
	}
	if (out) {
		json_object_set_new(out, "model", m);
		json_object_set_new(out, "parties", ps);
	} else {
		json_decref(m);
		json_decref(ps);
	}
	return out;
}

int gw_client_session_get(struct http_req *r, void *ctx)
{
	struct gw_ctx *c = ctx;
	gw_cors_headers(r, c, GW_API_CLIENT);
	http_reply_header(r, "Cache-Control", "no-store");
	const char *id = http_req_param(r, "id");
	if (!gw_id_ok(id, "ses_"))
		return http_reply_problem_status(r, ERR_NOT_FOUND, 404, "no session has this id", "id");
	struct gw_client who;
	int rc = gw_client_auth(r, c, id, &who);
	if (rc != 0)
		return rc;
	char path[64];
	snprintf(path, sizeof path, "/v1/sessions/%s", id);
	struct httpc_resp resp;
	rc = gw_upstream_call(c->up, r, "GET", path, NULL, NULL, 0, &resp);
	if (rc != 0 || resp.status != 200) {
		if (rc != 0)
			gw_upstream_fail(r, c, rc, &resp);
		else
			gw_relay(r, c, &resp, false);
		httpc_resp_free(&resp);
		return rc ? rc : ERR_UPSTREAM;
	}
	json_t *s = json_loadb(resp.body, resp.len, 0, NULL);
	const char *mid = json_string_value(json_object_get(s, "model"));
	json_t *view = NULL;
	if (mid && gw_id_ok(mid, "mdl_")) {
		json_t *m = gw_model_facts(r, c, mid);
		if (!m) { /* replied */
			json_decref(s);
			httpc_resp_free(&resp);
			return ERR_UPSTREAM;
		}
		view = session_view(s, m);
	}
	json_decref(s);
	if (!view) {
		rc = gw_upstream_fail(r, c, 0, &resp);
		httpc_resp_free(&resp);
		return rc;
	}
	httpc_resp_free(&resp);
	return http_reply_json(r, 200, view);
}
