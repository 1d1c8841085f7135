/* mimir-party sessions: the table (reference counted, so a worker, a queued abort or a
 * request in flight keeps a closed session alive until it lets go) and the control
 * endpoints: open a session (validated against this party's share file, then handed to
 * a worker thread that fetches the dealer seed, connects the peers and loads the
 * weights), list, show, close (which ends the worker, aborts the transport so every
 * peer learns of it, and wipes). */
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <sodium.h>

#include "err/err.h"
#include "log/log.h"
#include "metrics/metrics.h"
#include "party.h"

static const char *const state_names[] = {"created", "initialising", "ready", "failed", "closed"};

const char *party_session_state_name(enum psession_state s)
{
	return (unsigned)s < sizeof state_names / sizeof state_names[0] ? state_names[s] : "unknown";
}

bool party_hex_id_ok(const char *s)
{
	if (!s || strlen(s) != PARTY_ID_HEX)
		return false;
	for (size_t i = 0; i < PARTY_ID_HEX; i++)
		if (!((s[i] >= '0' && s[i] <= '9') || (s[i] >= 'a' && s[i] <= 'f')))
			return false;
	return true;
}

static bool dealer_id_ok(const char *s)
{
	size_t n = strlen(s);
	if (n == 0 || n > PARTY_DEALER_ID_MAX)
		return false;
	for (size_t i = 0; i < n; i++) {
		char ch = s[i];
		if (!((ch >= 'a' && ch <= 'z') || (ch >= 'A' && ch <= 'Z') || (ch >= '0' && ch <= '9') || ch == '.' ||
		      ch == '_' || ch == '-'))
			return false;
	}
	return true;
}

/* An https URL without spaces or control characters that fits the session's buffers. */
static bool url_ok(const char *u)
{
	size_t n = strlen(u);
	if (n >= PARTY_URL_MAX || n <= 8 || strncmp(u, "https://", 8) != 0)
		return false;
	for (size_t i = 0; i < n; i++)
		if ((unsigned char)u[i] <= 0x20 || u[i] == 0x7f)
			return false;
	return true;
}

static bool fp_parse(const char *h, uint8_t out[32])
{
	size_t got = 0;
	return h && strlen(h) == 64 && sodium_hex2bin(out, 32, h, 64, NULL, &got, NULL) == 0 && got == 32;
}

/* ---- the table ---- */

struct psession *party_session_get_locked(struct party_ctx *c, const char *id)
{
	for (size_t i = 0; i < c->nsessions; i++)
		if (strcmp(c->sessions[i]->id, id) == 0) {
			c->sessions[i]->refs++;
			return c->sessions[i];
		}
	return NULL;
}

void party_session_put_locked(struct party_ctx *c, struct psession *s)
{
	(void)c;
	if (!s || --s->refs > 0)
		return;
	party_gen_free(s->gen);
	for (size_t i = 0; i < PARTY_KEEP_FINISHED; i++)
		party_gen_free(s->finished[i]);
	pthread_cond_destroy(&s->cv);
	pthread_mutex_destroy(&s->mu);
	sodium_memzero(s, sizeof *s);
	free(s);
}

void party_session_put(struct party_ctx *c, struct psession *s)
{
	pthread_mutex_lock(&c->mu);
	party_session_put_locked(c, s);
	pthread_mutex_unlock(&c->mu);
}

void party_session_close_locked(struct party_ctx *c, struct psession *s, const char *why)
{
	bool in_table = false;
	for (size_t i = 0; i < c->nsessions; i++)
		if (c->sessions[i] == s) {
			c->sessions[i] = c->sessions[--c->nsessions];
			in_table = true;
			break;
		}
	if (!in_table)
		return;
	metric_set(c->m_sessions, (double)c->nsessions);
	pthread_mutex_lock(&s->mu);
	s->closing = true;
	if (s->state != PS_FAILED)
		snprintf(s->detail, sizeof s->detail, "%s", why);
	s->state = PS_CLOSED;
	bool worker = !s->worker_done;
	pthread_cond_broadcast(&s->cv);
	pthread_mutex_unlock(&s->mu);
	/* The peers must learn that the session is over here; a worker inside a round
	 * returns at once. */
	if (worker)
		party_abort_later_locked(c, s);
	party_session_put_locked(c, s); /* the table's reference */
}

struct psession *party_path_session(struct party_ctx *c, struct http_req *r)
{
	const char *id = http_req_param(r, "id");
	struct psession *s = NULL;
	if (party_hex_id_ok(id)) {
		pthread_mutex_lock(&c->mu);
		s = party_session_get_locked(c, id);
		pthread_mutex_unlock(&c->mu);
	}
	if (!s) {
		http_reply_problem_status(r, ERR_NOT_FOUND, 404, "no such session at this party", "id");
		return NULL;
	}
	log_ctx_set(http_req_id(r), s->id);
	pthread_mutex_lock(&s->mu);
	s->used_ms = party_now_ms();
	pthread_mutex_unlock(&s->mu);
	return s;
}

/* ---- views ---- */

/* Caller holds s->mu. */
static json_t *session_json(const struct psession *s, int64_t now)
{
	const struct pgen *g = s->gen;
	json_t *gen = g ? json_pack("{s:s, s:s}", "id", g->id, "state", party_gen_state_name(g->state)) : json_null();
	const struct mpc_stats *st = &s->stats;
	json_t *stats = json_pack("{s:I, s:I, s:I, s:I, s:I, s:I}", "rounds", (json_int_t)st->rounds, "bytes_sent",
				  (json_int_t)st->bytes_sent, "bytes_received", (json_int_t)st->bytes_recv,
				  "mac_checks", (json_int_t)st->checks, "triples_sacrificed",
				  (json_int_t)st->triples_sacrificed, "dealer_bytes", (json_int_t)st->prep_bytes_in);
	return json_pack("{s:s, s:s, s:s?, s:s?, s:i, s:i, s:i, s:i, s:i, s:o, s:I, s:I, s:I, s:o}", "id", s->id,
			 "state", party_session_state_name(s->state), "detail", s->detail[0] ? s->detail : NULL,
			 "failed_check", s->failed_check, "index", (int)s->index, "nparties", (int)s->nparties,
			 "frac_bits", (int)s->frac_bits, "n_ctx", s->n_ctx, "pad", (int)s->pad, "generation", gen,
			 "generations", (json_int_t)s->generations, "init_ms", (json_int_t)s->init_ms, "idle_ms",
			 (json_int_t)(now - s->used_ms), "stats", stats);
}

/* ---- create ---- */

static int refuse(struct http_req *r, int code, unsigned status, const char *field, const char *fmt, ...)
	__attribute__((format(printf, 5, 6)));
static int refuse(struct http_req *r, int code, unsigned status, const char *field, const char *fmt, ...)
{
	char detail[PARTY_DETAIL_MAX];
	va_list ap;
	va_start(ap, fmt);
	vsnprintf(detail, sizeof detail, fmt, ap);
	va_end(ap);
	LOG_WARN("party.refused", LOG_S("reason", err_slug(code)), LOG_I("status", status), LOG_S("detail", detail),
		 LOG_S("field", field ? field : ""));
	http_reply_problem_status(r, code, status, detail, field);
	return code;
}

/* Fills s's peer table from "peers": every index but this party's exactly once, this
 * party's own entry optional (and then its certificate must be this party's). */
static int parse_peers(struct party_ctx *c, struct http_req *r, const json_t *arr, struct psession *s)
{
	bool seen[MPC_MAX_PARTIES] = {false};
	char field[JSPEC_NAME_MAX + 32];
	for (size_t k = 0; k < json_array_size(arr); k++) {
		const json_t *el = json_array_get(arr, k);
		const char *url = NULL, *surl = NULL, *fph = NULL;
		uint64_t idx = 0;
		const struct jspec_field spec[] = {
			JSPEC_U64("index", true, 0, MPC_MAX_PARTIES - 1, &idx),
			JSPEC_STR("url", false, 9, PARTY_URL_MAX - 1, &url),
			JSPEC_STR("stream_url", false, 9, PARTY_URL_MAX - 1, &surl),
			JSPEC_STR("fingerprint", true, 64, 64, &fph),
			JSPEC_END_F,
		};
		struct jspec_error e;
		if (!json_is_object(el)) {
			snprintf(field, sizeof field, "peers[%zu]", k);
			return refuse(r, ERR_TYPE, 400, field, "%s: must be an object {index, url, stream_url, fingerprint}",
				      field);
		}
		if (jspec_parse(el, spec, 0, &e) != 0) {
			snprintf(field, sizeof field, "peers[%zu].%s", k, e.field);
			return refuse(r, e.code, 400, field, "peers[%zu].%s", k, e.detail);
		}
		uint8_t fp[32];
		if (idx >= s->nparties) {
			snprintf(field, sizeof field, "peers[%zu].index", k);
			return refuse(r, ERR_RANGE, 400, field, "%s: the session has parties 0 to %u", field,
				      s->nparties - 1);
		}
		if (seen[idx]) {
			snprintf(field, sizeof field, "peers[%zu].index", k);
			return refuse(r, ERR_INVALID, 400, field, "%s: party %u is listed twice", field, (unsigned)idx);
		}
		seen[idx] = true;
		if (!fp_parse(fph, fp)) {
			snprintf(field, sizeof field, "peers[%zu].fingerprint", k);
			return refuse(r, ERR_PARSE, 400, field,
				      "%s: the SHA-256 of the party's certificate (DER) as 64 hex digits", field);
		}
		if (idx == s->index) {
			if (sodium_memcmp(fp, c->cert_fp, 32) != 0) {
				snprintf(field, sizeof field, "peers[%zu].fingerprint", k);
				return refuse(r, ERR_CONFLICT, 409, field,
					      "%s: names this party's index %u with another certificate than this "
					      "party's: the session was meant for another party",
					      field, s->index);
			}
			memcpy(s->fp[idx], fp, 32);
			continue;
		}
		if (!url || !url_ok(url) || ((!surl || !url_ok(surl)) && c->set.mode == 0)) {
			const char *which = !url || !url_ok(url) ? "url" : "stream_url";
			snprintf(field, sizeof field, "peers[%zu].%s", k, which);
			return refuse(r, ERR_INVALID, 400, field,
				      "%s: required, an https:// URL of at most %d bytes (url: the peer's HTTPS "
				      "server; stream_url: its MPC stream listener, see GET /v1/identity)",
				      field, PARTY_URL_MAX - 1);
		}
		snprintf(s->url[idx], sizeof s->url[idx], "%s", url);
		snprintf(s->stream_url[idx], sizeof s->stream_url[idx], "%s", surl ? surl : "");
		memcpy(s->fp[idx], fp, 32);
	}
	memcpy(s->fp[s->index], c->cert_fp, 32);
	for (unsigned j = 0; j < s->nparties; j++) {
		if (j != s->index && !seen[j])
			return refuse(r, ERR_MISSING, 400, "peers", "peers: party %u is missing (every other party "
								    "of the session must be listed)",
				      j);
		for (unsigned i = 0; i < j; i++)
			if (sodium_memcmp(s->fp[i], s->fp[j], 32) == 0)
				return refuse(r, ERR_INVALID, 400, "peers",
					      "peers: parties %u and %u have the same certificate: each index "
					      "needs its own party",
					      i, j);
	}
	return 0;
}

int party_session_create(struct http_req *r, void *ctx)
{
	struct party_ctx *c = ctx;
	const char *id = NULL, *durl = NULL, *dfp = NULL, *dses = NULL;
	uint64_t index = 0, n = 0, f = 0, n_ctx = 0, pad = 0;
	bool has_f = false, has_ctx = false;
	json_t *peers = NULL, *doc = NULL;
	const struct jspec_field spec[] = {
		JSPEC_STR("id", true, PARTY_ID_HEX, PARTY_ID_HEX, &id),
		JSPEC_U64("index", true, 0, MPC_MAX_PARTIES - 1, &index),
		JSPEC_U64("nparties", true, 2, MPC_MAX_PARTIES, &n),
		JSPEC_U64("frac_bits", false, RING_FXP_MIN_F, RING_FXP_MAX_F, &f, .present = &has_f),
		JSPEC_U64("n_ctx", false, 1, MODEL_MAX_SEQ, &n_ctx, .present = &has_ctx),
		JSPEC_U64("pad", false, 0, MODEL_MAX_SEQ, &pad),
		JSPEC_ARR("peers", true, 1, MPC_MAX_PARTIES, &peers),
		JSPEC_STR("dealer.url", true, 9, PARTY_URL_MAX - 1, &durl),
		JSPEC_STR("dealer.fingerprint", false, 64, 64, &dfp),
		JSPEC_STR("dealer.session", false, 1, PARTY_DEALER_ID_MAX, &dses),
		JSPEC_END_F,
	};
	int rc = http_req_json(r, spec, 0, &doc);
	if (rc != 0)
		return rc;
	struct psession *s = calloc(1, sizeof *s);
	if (!s) {
		rc = http_reply_problem(r, ERR_NOMEM, NULL, NULL);
		goto out;
	}
	pthread_mutex_init(&s->mu, NULL);
	pthread_cond_init(&s->cv, NULL);
	s->ctx = c;
	s->refs = 1; /* ours until the table takes it */
	s->worker_done = true; /* until a worker starts */
	const struct mshare_info *sh = &c->share;
	if (!party_hex_id_ok(id)) {
		rc = refuse(r, ERR_INVALID, 400, "id", "id: 32 lowercase hex digits (16 random bytes)");
		goto out;
	}
	if (n != sh->nparties) {
		rc = refuse(r, ERR_CONFLICT, 409, "nparties",
			    "nparties: this party's share file belongs to a split among %u parties", sh->nparties);
		goto out;
	}
	if (index != sh->party) {
		rc = refuse(r, ERR_CONFLICT, 409, "index", "index: this party holds the share of party %u",
			    sh->party);
		goto out;
	}
	if (has_f && f != sh->frac_bits) {
		rc = refuse(r, ERR_CONFLICT, 409, "frac_bits",
			    "frac_bits: this party's shares are fixed point with %u fractional bits", sh->frac_bits);
		goto out;
	}
	if (!has_ctx)
		n_ctx = (uint64_t)sh->config.seq_len;
	if (n_ctx > (uint64_t)sh->config.seq_len) {
		rc = refuse(r, ERR_RANGE, 400, "n_ctx", "n_ctx: at most the model's context, %d positions",
			    sh->config.seq_len);
		goto out;
	}
	if (pad > n_ctx) {
		rc = refuse(r, ERR_RANGE, 400, "pad", "pad: a prompt bucket of 0 (off) to n_ctx positions");
		goto out;
	}
	if (!url_ok(durl)) {
		rc = refuse(r, ERR_INVALID, 400, "dealer.url", "dealer.url: an https:// URL of at most %d bytes",
			    PARTY_URL_MAX - 1);
		goto out;
	}
	if (dfp && !fp_parse(dfp, s->dealer_fp)) {
		rc = refuse(r, ERR_PARSE, 400, "dealer.fingerprint",
			    "dealer.fingerprint: the SHA-256 of the dealer's certificate (DER) as 64 hex digits");
		goto out;
	}
	if (dses && !dealer_id_ok(dses)) {
		rc = refuse(r, ERR_INVALID, 400, "dealer.session",
			    "dealer.session: 1 to 64 of the characters A-Z a-z 0-9 . _ -");
		goto out;
	}
	snprintf(s->id, sizeof s->id, "%s", id);
	size_t got = 0;
	sodium_hex2bin(s->sid, sizeof s->sid, id, PARTY_ID_HEX, NULL, &got, NULL);
	s->index = (unsigned)index;
	s->nparties = (unsigned)n;
	s->frac_bits = sh->frac_bits;
	s->n_ctx = (int)n_ctx;
	s->pad = (unsigned)pad;
	s->has_dealer_fp = dfp != NULL;
	snprintf(s->dealer_url, sizeof s->dealer_url, "%s", durl);
	snprintf(s->dealer_session, sizeof s->dealer_session, "%s", dses ? dses : id);
	if ((rc = parse_peers(c, r, peers, s)) != 0)
		goto out;
	log_ctx_set(http_req_id(r), s->id);
	s->created_ms = s->used_ms = party_now_ms();

	pthread_mutex_lock(&c->mu);
	struct psession *dup = party_session_get_locked(c, s->id);
	if (dup || c->stop || c->nsessions >= (size_t)c->set.max_sessions) {
		party_session_put_locked(c, dup);
		pthread_mutex_unlock(&c->mu);
		rc = dup ? refuse(r, ERR_CONFLICT, 409, "id", "a session with this id exists at this party")
			 : refuse(r, ERR_UNAVAILABLE, 503, NULL,
				  "this party runs limits.max_sessions sessions: close one or retry later");
		goto out;
	}
	struct psession **ns = realloc(c->sessions, (c->nsessions + 1) * sizeof *ns);
	if (!ns || (rc = party_worker_start_locked(c, s)) != 0) {
		if (ns)
			c->sessions = ns;
		pthread_mutex_unlock(&c->mu);
		rc = http_reply_problem(r, ERR_NOMEM, "could not start the session's worker", NULL);
		goto out;
	}
	c->sessions = ns;
	c->sessions[c->nsessions++] = s;
	s->refs++; /* the table's */
	metric_set(c->m_sessions, (double)c->nsessions);
	pthread_mutex_lock(&s->mu);
	json_t *body = session_json(s, party_now_ms());
	pthread_mutex_unlock(&s->mu);
	pthread_mutex_unlock(&c->mu);
	const struct ident *peer = http_req_peer(r);
	LOG_INFO("party.session_created", LOG_I("index", s->index), LOG_I("nparties", s->nparties),
		 LOG_I("n_ctx", s->n_ctx), LOG_I("pad", s->pad), LOG_S("dealer", s->dealer_url),
		 LOG_S("by", peer ? peer->cn : "-"));
	char loc[64];
	snprintf(loc, sizeof loc, "/v1/sessions/%s", s->id);
	http_reply_header(r, "Location", loc);
	rc = http_reply_json(r, 202, body);
out:
	if (s)
		party_session_put(c, s);
	json_decref(doc);
	return rc;
}

/* ---- list, show, close ---- */

int party_session_list(struct http_req *r, void *ctx)
{
	struct party_ctx *c = ctx;
	json_t *list = json_array();
	pthread_mutex_lock(&c->mu);
	for (size_t i = 0; i < c->nsessions; i++) {
		struct psession *s = c->sessions[i];
		pthread_mutex_lock(&s->mu);
		json_array_append_new(list, json_pack("{s:s, s:s}", "id", s->id, "state",
						      party_session_state_name(s->state)));
		pthread_mutex_unlock(&s->mu);
	}
	unsigned running = c->running;
	pthread_mutex_unlock(&c->mu);
	return http_reply_json(r, 200,
			       json_pack("{s:o, s:I, s:i, s:I}", "sessions", list, "max_sessions",
					 (json_int_t)c->set.max_sessions, "generations_running", (int)running,
					 "max_generations", (json_int_t)c->set.max_generations));
}

int party_session_get(struct http_req *r, void *ctx)
{
	struct party_ctx *c = ctx;
	struct psession *s = party_path_session(c, r);
	if (!s)
		return ERR_NOT_FOUND;
	pthread_mutex_lock(&s->mu);
	json_t *body = session_json(s, party_now_ms());
	pthread_mutex_unlock(&s->mu);
	party_session_put(c, s);
	return http_reply_json(r, 200, body);
}

int party_session_delete(struct http_req *r, void *ctx)
{
	struct party_ctx *c = ctx;
	struct psession *s = party_path_session(c, r);
	if (!s)
		return ERR_NOT_FOUND;
	const struct ident *peer = http_req_peer(r);
	pthread_mutex_lock(&c->mu);
	party_session_close_locked(c, s, "closed by the caller");
	party_session_put_locked(c, s);
	pthread_mutex_unlock(&c->mu);
	LOG_INFO("party.session_closed", LOG_S("by", peer ? peer->cn : "-"),
		 LOG_S("detail", "the engine, the weights and the KV cache are wiped; the peers are told"));
	return http_reply_data(r, 204, NULL, "", 0);
}
