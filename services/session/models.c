/* mimir-session models: register a model (its dimensions and the digest of each
 * party's share file), read, list, and delete one no session refers to. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <sodium.h>

#include "err/err.h"
#include "session.h"

int session_model_create(struct http_req *r, void *ctx)
{
	struct session_ctx *c = ctx;
	struct reg_model_spec s = {0};
	uint64_t d[7] = {0};
	json_t *shares = NULL, *doc = NULL;
	const double big = 1 << 22; /* coarse; the registry holds the exact bounds */
	const struct jspec_field spec[] = {
		JSPEC_STR("name", true, 1, REG_NAME_MAX, &s.name),
		JSPEC_STR("description", false, 0, REG_DESC_MAX, &s.description),
		JSPEC_U64("dims.dim", true, 1, big, &d[0]),
		JSPEC_U64("dims.hidden_dim", true, 1, big, &d[1]),
		JSPEC_U64("dims.n_layers", true, 1, big, &d[2]),
		JSPEC_U64("dims.n_heads", true, 1, big, &d[3]),
		JSPEC_U64("dims.n_kv_heads", true, 1, big, &d[4]),
		JSPEC_U64("dims.vocab_size", true, 1, big, &d[5]),
		JSPEC_U64("dims.seq_len", true, 1, big, &d[6]),
		JSPEC_ARR("shares", true, 2, REG_MAX_SHARES, &shares),
		JSPEC_END_F,
	};
	int rc = http_req_json(r, spec, 0, &doc);
	if (rc != 0)
		return rc;
	uint8_t (*digests)[REG_HASH_LEN] = calloc(REG_MAX_SHARES, REG_HASH_LEN);
	struct reg_model *m = malloc(sizeof *m);
	if (!digests || !m) {
		rc = http_reply_problem(r, ERR_NOMEM, NULL, NULL);
		goto out;
	}
	size_t i;
	json_t *v;
	json_array_foreach(shares, i, v) {
		const char *hex = json_string_value(v);
		size_t bin = 0;
		if (!hex || strlen(hex) != 2 * REG_HASH_LEN ||
		    sodium_hex2bin(digests[i], REG_HASH_LEN, hex, strlen(hex), NULL, &bin, NULL) != 0 ||
		    bin != REG_HASH_LEN) {
			char field[32], detail[96];
			snprintf(field, sizeof field, "shares[%zu]", i);
			snprintf(detail, sizeof detail, "%s: must be a SHA-256 digest, 64 hex digits", field);
			rc = http_reply_problem(r, ERR_PARSE, detail, field);
			goto out;
		}
	}
	s.dims = (struct reg_dims){(uint32_t)d[0], (uint32_t)d[1], (uint32_t)d[2], (uint32_t)d[3],
				   (uint32_t)d[4], (uint32_t)d[5], (uint32_t)d[6]};
	s.n_shares = json_array_size(shares);
	s.shares = (const uint8_t(*)[REG_HASH_LEN])digests;
	struct session_actor a;
	session_actor(r, &a);
	if ((rc = reg_model_create(c->reg, &a.actor, &s, m)) != 0) {
		session_fail(r, rc);
		goto out;
	}
	char loc[64];
	snprintf(loc, sizeof loc, "/v1/models/%s", m->id);
	http_reply_header(r, "Location", loc);
	rc = http_reply_json(r, 201, session_model_json(m));
out:
	json_decref(doc);
	free(digests);
	free(m);
	return rc;
}

int session_model_list(struct http_req *r, void *ctx)
{
	struct session_ctx *c = ctx;
	int64_t after, next;
	size_t limit, n;
	struct reg_model *items;
	int rc = session_page(r, &after, &limit);
	if (rc != 0)
		return rc;
	if ((rc = reg_model_list(c->reg, after, limit, &items, &n, &next)) != 0)
		return session_fail(r, rc);
	json_t *arr = json_array();
	for (size_t i = 0; i < n; i++)
		json_array_append_new(arr, session_model_json(&items[i]));
	free(items);
	return session_reply_page(r, arr, next);
}

int session_model_get(struct http_req *r, void *ctx)
{
	struct session_ctx *c = ctx;
	struct reg_model *m = malloc(sizeof *m);
	if (!m)
		return http_reply_problem(r, ERR_NOMEM, NULL, NULL);
	int rc = reg_model_get(c->reg, http_req_param(r, "id"), m);
	rc = rc != 0 ? session_fail(r, rc) : http_reply_json(r, 200, session_model_json(m));
	free(m);
	return rc;
}

int session_model_delete(struct http_req *r, void *ctx)
{
	struct session_ctx *c = ctx;
	struct session_actor a;
	session_actor(r, &a);
	int rc = reg_model_delete(c->reg, &a.actor, http_req_param(r, "id"));
	if (rc != 0)
		return session_fail(r, rc);
	return http_reply_data(r, 204, NULL, "", 0);
}
