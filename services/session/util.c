/* mimir-session helpers: the audit actor of a request, registry errors as problems,
 * pagination, and the JSON form of every entity (one place, so every endpoint shows an
 * entity the same way). */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include <sodium.h>

#include "err/err.h"
#include "session.h"

int64_t session_now_ms(void)
{
	struct timespec ts;
	clock_gettime(CLOCK_REALTIME, &ts);
	return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

static bool actor_name_ok(const char *s)
{
	size_t n = s ? strlen(s) : 0;
	if (n == 0 || n > 64)
		return false;
	for (size_t i = 0; i < n; i++)
		if ((unsigned char)s[i] <= 0x20 || (unsigned char)s[i] >= 0x7f)
			return false;
	return true;
}

void session_actor(struct http_req *r, struct session_actor *out)
{
	const struct ident *p = http_req_peer(r);
	const char *role = p ? ident_role_name(p->role) : "anonymous";
	const char *cn = p && p->cn[0] ? p->cn : "-";
	const char *behalf = http_req_header(r, SESSION_ACTOR_HEADER);
	if (p && p->role == IDENT_ROLE_GATEWAY && actor_name_ok(behalf))
		snprintf(out->text, sizeof out->text, "%s:%s for %s", role, cn, behalf);
	else
		snprintf(out->text, sizeof out->text, "%s:%s", role, cn);
	out->actor.actor = out->text;
	out->actor.request_id = http_req_id(r);
}

int session_fail(struct http_req *r, int rc)
{
	const struct reg_error *e = reg_last_error();
	bool mine = e->code == rc && e->detail[0];
	http_reply_problem(r, rc, mine ? e->detail : NULL, mine && e->field[0] ? e->field : NULL);
	return rc;
}

static int parse_i64(const char *s, int64_t lo, int64_t hi, int64_t *out)
{
	if (!s || !*s || *s == '+' || *s == '-' || *s == ' ')
		return ERR_PARSE;
	char *end;
	errno = 0;
	long long v = strtoll(s, &end, 10);
	if (errno || *end || v < lo || v > hi)
		return ERR_RANGE;
	*out = v;
	return 0;
}

int session_page(struct http_req *r, int64_t *after, size_t *limit)
{
	const char *a = http_req_query(r, "after"), *l = http_req_query(r, "limit");
	int64_t v = SESSION_PAGE_DEFAULT;
	*after = 0;
	if (l && parse_i64(l, 1, REG_PAGE_MAX, &v) != 0) {
		char detail[96];
		snprintf(detail, sizeof detail, "limit: must be a whole number from 1 to %d", REG_PAGE_MAX);
		http_reply_problem(r, ERR_RANGE, detail, "limit");
		return ERR_RANGE;
	}
	*limit = (size_t)v;
	if (a && parse_i64(a, 0, INT64_MAX, after) != 0) {
		http_reply_problem(r, ERR_INVALID, "after: not a cursor this service returned", "after");
		return ERR_INVALID;
	}
	return 0;
}

int session_reply_page(struct http_req *r, json_t *items, int64_t next)
{
	char cur[32];
	snprintf(cur, sizeof cur, "%lld", (long long)next);
	return http_reply_json(r, 200, json_pack("{s:o, s:o}", "items", items ? items : json_array(),
						 "next", next ? json_string(cur) : json_null()));
}

bool session_has_body(struct http_req *r)
{
	size_t len = 0;
	const char *b = http_req_body(r, &len);
	for (size_t i = 0; i < len; i++)
		if (b[i] != ' ' && b[i] != '\t' && b[i] != '\r' && b[i] != '\n')
			return true;
	return false;
}

int session_string_array(struct http_req *r, json_t *arr, const char *field, size_t max,
			 const char **out, size_t cap, size_t *n)
{
	*n = 0;
	size_t i;
	json_t *v;
	json_array_foreach(arr, i, v) {
		char name[64], detail[128];
		snprintf(name, sizeof name, "%s[%zu]", field, i);
		const char *s = json_string_value(v);
		if (!s || !*s || strlen(s) > max || i >= cap) {
			snprintf(detail, sizeof detail, "%s: %s", name,
				 i >= cap ? "too many elements" : "must be a non-empty string of bounded length");
			http_reply_problem(r, i >= cap ? ERR_RANGE : ERR_TYPE, detail, name);
			return ERR_INVALID;
		}
		out[(*n)++] = s;
	}
	return 0;
}

json_t *session_time_json(int64_t ms)
{
	if (ms <= 0)
		return json_null();
	time_t t = (time_t)(ms / 1000);
	struct tm tm;
	char buf[40];
	if (!gmtime_r(&t, &tm))
		return json_null();
	size_t n = strftime(buf, sizeof buf, "%Y-%m-%dT%H:%M:%S", &tm);
	snprintf(buf + n, sizeof buf - n, ".%03dZ", (int)(ms % 1000));
	return json_string(buf);
}

json_t *session_hex_json(const uint8_t *b, size_t n)
{
	char hex[2 * 64 + 1];
	if (n > 64)
		return json_null();
	sodium_bin2hex(hex, sizeof hex, b, n);
	return json_string(hex);
}

json_t *session_model_json(const struct reg_model *m)
{
	json_t *shares = json_array();
	for (size_t i = 0; i < m->n_shares; i++)
		json_array_append_new(shares, session_hex_json(m->shares[i], REG_HASH_LEN));
	return json_pack("{s:s, s:s, s:s, s:{s:i, s:i, s:i, s:i, s:i, s:i, s:i}, s:o, s:o}", "id", m->id,
			 "name", m->name, "description", m->description, "dims", "dim",
			 (int)m->dims.dim, "hidden_dim", (int)m->dims.hidden_dim, "n_layers",
			 (int)m->dims.n_layers, "n_heads", (int)m->dims.n_heads, "n_kv_heads",
			 (int)m->dims.n_kv_heads, "vocab_size", (int)m->dims.vocab_size, "seq_len",
			 (int)m->dims.seq_len, "shares", shares, "created_at",
			 session_time_json(m->created_ms));
}

json_t *session_party_json(const struct reg_party *p)
{
	json_t *att = json_loads(p->attestation, 0, NULL);
	if (!att)
		att = json_object();
	return json_pack("{s:s, s:s, s:s, s:s, s:o, s:o, s:s, s:o, s:o, s:o}", "id", p->id, "identity",
			 p->identity, "role", reg_party_role_name(p->role), "status",
			 reg_party_status_name(p->status), "sealing_key",
			 session_hex_json(p->sealing_key, 32), "cert_fingerprint",
			 p->has_fingerprint ? session_hex_json(p->fingerprint, 32) : json_null(),
			 "endpoint", p->endpoint, "attestation", att, "created_at",
			 session_time_json(p->created_ms), "updated_at", session_time_json(p->updated_ms));
}

json_t *session_session_json(const struct reg_session *s, const struct reg_party *parties,
			     int64_t now_ms)
{
	json_t *ps = json_array();
	size_t ready = 0;
	for (size_t i = 0; i < s->n_parties; i++) {
		json_t *p = parties ? session_party_json(&parties[i]) : json_pack("{s:s}", "id",
										  s->parties[i].party_id);
		if (p) {
			json_object_set_new(p, "index", json_integer((json_int_t)i));
			json_object_set_new(p, "initialised_at", session_time_json(s->parties[i].init_ms));
		}
		json_array_append_new(ps, p);
		ready += s->parties[i].init_ms != 0;
	}
	bool live = !reg_state_terminal(s->state);
	return json_pack("{s:s, s:s, s:s, s:s, s:b, s:i, s:i, s:i, s:o, s:{s:i, s:i}, s:o, s:o, s:o}",
			 "id", s->id, "model", s->model_id, "state", reg_state_name(s->state), "reason",
			 s->reason, "expired", live && s->expires_ms <= now_ms, "fixed_point_bits",
			 (int)s->fixed_point_bits, "max_context", (int)s->max_context, "pad_bucket",
			 (int)s->pad_bucket, "parties", ps, "initialised", "ready", (int)ready, "of",
			 (int)s->n_parties, "created_at", session_time_json(s->created_ms),
			 "updated_at", session_time_json(s->updated_ms), "expires_at",
			 session_time_json(s->expires_ms));
}

json_t *session_key_json(const struct reg_key *k, int64_t now_ms)
{
	json_t *ss = json_array();
	for (size_t i = 0; i < k->n_sessions; i++)
		json_array_append_new(ss, json_string(k->sessions[i]));
	const char *state = k->revoked_ms ? "revoked"
			    : k->expires_ms && k->expires_ms <= now_ms ? "expired" : "active";
	return json_pack("{s:s, s:s, s:s, s:o, s:o, s:o, s:o}", "id", k->id, "name", k->name, "state",
			 state, "sessions", ss, "created_at", session_time_json(k->created_ms),
			 "expires_at", session_time_json(k->expires_ms), "revoked_at",
			 session_time_json(k->revoked_ms));
}

json_t *session_audit_json(const struct reg_audit_entry *e)
{
	/* detail stays the exact stored text: it is what the hash covers. */
	return json_pack("{s:I, s:I, s:o, s:s, s:s, s:{s:s, s:s}, s:s, s:s, s:o, s:o}", "seq",
			 (json_int_t)e->seq, "ts_ms", (json_int_t)e->ts_ms, "time",
			 session_time_json(e->ts_ms), "actor", e->actor, "action", e->action, "object",
			 "type", e->object_type, "id", e->object_id, "detail", e->detail, "request_id",
			 e->request_id, "prev_hash", session_hex_json(e->prev_hash, REG_HASH_LEN), "hash",
			 session_hex_json(e->hash, REG_HASH_LEN));
}

json_t *session_head_json(const struct reg_audit_head *h)
{
	return json_pack("{s:I, s:I, s:o, s:o}", "seq", (json_int_t)h->seq, "ts_ms", (json_int_t)h->ts_ms,
			 "time", session_time_json(h->ts_ms), "hash",
			 session_hex_json(h->hash, REG_HASH_LEN));
}
