/* mimir-session audit: read the log a page at a time, export the chain head (to keep
 * elsewhere), and verify the whole chain, optionally against a head exported before. */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <sodium.h>

#include "err/err.h"
#include "log/log.h"
#include "session.h"

int session_audit_list(struct http_req *r, void *ctx)
{
	struct session_ctx *c = ctx;
	int64_t after, next;
	size_t limit, n;
	struct reg_audit_entry *items;
	int rc = session_page(r, &after, &limit);
	if (rc != 0)
		return rc;
	if ((rc = reg_audit_list(c->reg, after, limit, &items, &n, &next)) != 0)
		return session_fail(r, rc);
	json_t *arr = json_array();
	for (size_t i = 0; i < n; i++)
		json_array_append_new(arr, session_audit_json(&items[i]));
	free(items);
	return session_reply_page(r, arr, next);
}

int session_audit_head(struct http_req *r, void *ctx)
{
	struct session_ctx *c = ctx;
	struct reg_audit_head h;
	int rc = reg_audit_head(c->reg, &h);
	if (rc != 0)
		return session_fail(r, rc);
	return http_reply_json(r, 200, session_head_json(&h));
}

/* ?seq=N&hash=HEX: an anchor, a head exported earlier (both or neither). */
int session_audit_verify(struct http_req *r, void *ctx)
{
	struct session_ctx *c = ctx;
	const char *seq = http_req_query(r, "seq"), *hash = http_req_query(r, "hash");
	struct reg_audit_head anchor = {0};
	if (!seq != !hash)
		return http_reply_problem(r, ERR_MISSING, "an anchor needs both seq and hash",
					  seq ? "hash" : "seq");
	if (seq) {
		char *end;
		errno = 0;
		long long v = strtoll(seq, &end, 10);
		if (!*seq || *end || errno || v < 1)
			return http_reply_problem(r, ERR_RANGE, "seq: must be a sequence number (1 or more)",
						  "seq");
		size_t bin = 0;
		if (strlen(hash) != 2 * REG_HASH_LEN ||
		    sodium_hex2bin(anchor.hash, REG_HASH_LEN, hash, strlen(hash), NULL, &bin, NULL) != 0 ||
		    bin != REG_HASH_LEN)
			return http_reply_problem(r, ERR_PARSE, "hash: must be 64 hex digits", "hash");
		anchor.seq = v;
	}
	struct reg_audit_report rep;
	int rc = reg_audit_verify(c->reg, seq ? &anchor : NULL, &rep);
	if (rc != 0)
		return session_fail(r, rc);
	if (!rep.ok)
		LOG_ERROR("session.audit_tampered", LOG_I("first_bad_seq", rep.first_bad_seq),
			  LOG_S("reason", rep.reason),
			  LOG_S("action", "restore the database from a backup and investigate"));
	return http_reply_json(r, 200,
			       json_pack("{s:b, s:I, s:o, s:s, s:b, s:b, s:o}", "ok", rep.ok, "entries",
					 (json_int_t)rep.entries, "first_bad_seq",
					 rep.first_bad_seq ? json_integer(rep.first_bad_seq) : json_null(),
					 "reason", rep.reason, "triggers_ok", rep.triggers_ok, "anchor_ok",
					 rep.anchor_ok, "head", session_head_json(&rep.head)));
}
