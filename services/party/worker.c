/* mimir-party session worker: the one thread that owns a session's engine. It fetches
 * the party's seed from the dealer (prepnet), joins the peers over mnet (one mnet
 * generation per session: the engine's MAC key, PRG streams and weight masks live as
 * long as the session), loads the weights as shares (smodel_new_shares; the share file
 * is decrypted for that and wiped right after), then runs the session's generations
 * one after the other with the client protocols of common/clientio.
 *
 * Ending a generation early without ending the session needs every party to stop at
 * the same point, or the engines' states diverge. So the parties exchange one byte in
 * a control round before the client's input is used and after every token: each says
 * whether it goes on (a cancel or a missing INPUT says no), and all stop when any one
 * does. Anything else that goes wrong (a failed check, a peer gone, a timeout, a
 * refused INPUT, the dealer) aborts the engine, which its transport carries to every
 * peer; the session is then over, and its state is wiped at once.
 *
 * Nothing reaches the client before the MAC check that covers it: MASKS, RECEIPT and
 * each OUTPUT come out of clientio, which checks before it seals. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <openssl/crypto.h>
#include <sodium.h>

#include "err/err.h"
#include "log/log.h"
#include "metrics/metrics.h"
#include "model/sampler.h"
#include "party.h"
#include "prepnet/prepnet.h"
#include "smodel/smodel.h"
#include "sse/sse.h"

/* ---- a transport wrapper that remembers why a round failed ----
 * The engine reports "transport" for every failed round; the code the transport
 * returned tells a peer gone (ERR_IO) from a timeout, an abort elsewhere, a protocol
 * violation or a refused certificate, which is what an operator needs to read. */
struct wnet {
	struct mpc_net *inner;
	int last_rc;
};

static int w_exchange(void *impl, const uint8_t *const send[], const size_t send_len[], uint8_t *const recv[],
		      const size_t recv_len[])
{
	struct wnet *w = impl;
	int rc = mpc_net_exchange(w->inner, send, send_len, recv, recv_len);
	if (rc != 0)
		__atomic_store_n(&w->last_rc, rc, __ATOMIC_RELAXED);
	return rc;
}

static void w_abort(void *impl)
{
	mpc_net_abort(((struct wnet *)impl)->inner);
}

static void w_free(void *impl)
{
	struct wnet *w = impl;
	if (!w)
		return;
	mpc_net_free(w->inner);
	free(w);
}

static const struct mpc_net_ops wnet_ops = {w_exchange, w_abort, w_free};

static const char *transport_why(int rc)
{
	switch (rc) {
	case ERR_IO: return "a peer's connection ended (the peer stopped, crashed or closed the session)";
	case ERR_TIMEOUT: return "a peer did not answer within timeouts.round_ms";
	case ERR_ABORTED:
		return "the computation was aborted by a peer (its own failure, a refused INPUT there) or because a "
		       "payload broke the transport's rules (replayed or reordered)";
	case ERR_PROTOCOL: return "a peer sent a payload of the wrong size or out of order";
	case ERR_TLS:
		return "a peer could not be reached over mutual TLS with the pinned certificate and the party role";
	case ERR_FORBIDDEN: return "a peer refused this party's certificate (not the one it has for this index)";
	case ERR_CONFLICT: return "a peer refused the stream: this session was already joined from elsewhere";
	case ERR_UNAVAILABLE: return "a peer could not take the stream (too busy)";
	default: return err_title(rc);
	}
}

/* ---- the worker's state ---- */

struct work {
	struct party_ctx *c;
	struct psession *s;
	struct prepnet *pn;
	struct mpc_prep_source src;
	struct mpc_net *net;
	struct wnet *wn;
	struct mpc *mpc;
	struct smodel *sm;
	struct mpc_stats seen; /* what the metrics have counted already */
	bool transport_failed; /* a control round failed (the engine did not see it) */
};

/* Counts the engine's progress into the metrics and the session's view. */
static void refresh_stats(struct work *w)
{
	if (!w->mpc)
		return;
	struct mpc_stats st;
	mpc_get_stats(w->mpc, &st);
	struct party_ctx *c = w->c;
	metric_add_u64(c->m_rounds, st.rounds - w->seen.rounds);
	metric_add_u64(c->m_bytes_sent, st.bytes_sent - w->seen.bytes_sent);
	metric_add_u64(c->m_bytes_recv, st.bytes_recv - w->seen.bytes_recv);
	metric_add_u64(c->m_checks, st.checks - w->seen.checks);
	metric_add_u64(c->m_sacrificed, st.triples_sacrificed - w->seen.triples_sacrificed);
	metric_add_u64(c->m_prep_bytes, st.prep_bytes_in - w->seen.prep_bytes_in);
	w->seen = st;
	pthread_mutex_lock(&w->s->mu);
	w->s->stats = st;
	pthread_mutex_unlock(&w->s->mu);
}

static bool integrity_check(const char *check)
{
	static const char *const names[] = {"mac-check", "triple-sacrifice", "commitment", "broadcast-consistency",
					    "joint-randomness", NULL};
	for (size_t i = 0; check && names[i]; i++)
		if (strcmp(check, names[i]) == 0)
			return true;
	return false;
}

static const char *failed_check(const struct work *w)
{
	const char *f = w->mpc ? mpc_failed_check(w->mpc) : NULL;
	return f ? f : w->transport_failed ? "transport" : NULL;
}

/* What went wrong in words: the engine's check, the transport's reason, the dealer's
 * answer; where says which step. */
static void describe(const struct work *w, int rc, const char *where, char *out, size_t cap)
{
	const char *check = failed_check(w);
	int trc = w->wn ? __atomic_load_n(&w->wn->last_rc, __ATOMIC_RELAXED) : 0;
	if (check && strcmp(check, "preprocessing") == 0)
		snprintf(out, cap, "%s: the dealer failed: %s", where,
			 w->pn && prepnet_last_error(w->pn)[0] ? prepnet_last_error(w->pn) : err_title(rc));
	else if (check && strcmp(check, "transport") == 0)
		snprintf(out, cap, "%s: %s", where, transport_why(trc ? trc : rc));
	else if (integrity_check(check))
		snprintf(out, cap,
			 "%s: the engine's %s check failed: a party deviated from the protocol or a message was "
			 "corrupted; nothing unchecked was released",
			 where, check);
	else if (check)
		snprintf(out, cap, "%s: the engine aborted (%s): %s", where, check, err_title(rc));
	else
		snprintf(out, cap, "%s: %s", where, err_title(rc));
}

static void set_state(struct psession *s, enum psession_state st, const char *detail)
{
	pthread_mutex_lock(&s->mu);
	if (s->state != PS_CLOSED)
		s->state = st;
	if (detail && s->state != PS_CLOSED)
		snprintf(s->detail, sizeof s->detail, "%s", detail);
	pthread_mutex_unlock(&s->mu);
}

static bool closing(struct psession *s)
{
	pthread_mutex_lock(&s->mu);
	bool v = s->closing;
	pthread_mutex_unlock(&s->mu);
	return v;
}

/* The session cannot go on: records why, reports integrity failures to the dealer
 * (which then stops serving the session) and counts the abort. */
static void fail_session(struct work *w, const char *detail)
{
	struct psession *s = w->s;
	const char *check = failed_check(w);
	pthread_mutex_lock(&s->mu);
	if (s->state != PS_CLOSED) {
		s->state = PS_FAILED;
		snprintf(s->detail, sizeof s->detail, "%s", detail);
	}
	s->failed_check = check;
	pthread_mutex_unlock(&s->mu);
	if (check)
		metric_inc(metric_series(w->c->m_aborts, METRIC_LABELS(check)));
	if (w->pn && integrity_check(check))
		prepnet_report(w->pn, check);
	/* Whatever failed here must end the session at the peers too, now rather than at
	 * their next round's timeout. */
	if (w->net)
		mpc_net_abort(w->net);
	LOG_WARN("party.session_failed", LOG_S("check", check ? check : "-"), LOG_S("detail", detail));
}

/* ---- initialisation ---- */

static int load_weights(struct work *w, char *detail, size_t cap)
{
	struct party_ctx *c = w->c;
	struct mshare_shares *sh = NULL;
	char err[400];
	int rc = mshare_load(c->set.model_share, c->sk, &sh, err, sizeof err);
	if (rc != 0) {
		snprintf(detail, cap, "weights: %.300s", err);
		return rc;
	}
	const struct mshare_info *in = mshare_shares_info(sh);
	if (sodium_memcmp(in->model_id, c->share.model_id, MSHARE_ID_BYTES) != 0 || in->party != c->share.party ||
	    in->nparties != c->share.nparties || in->frac_bits != c->share.frac_bits) {
		snprintf(detail, cap, "weights: model.share changed since start-up (another split or party): restart "
				      "the party to take it");
		rc = ERR_CONFLICT;
		goto out;
	}
	const ring64_t *t[MODEL_T_COUNT] = {0};
	for (int id = 0; id < MODEL_T_COUNT && rc == 0; id++) {
		size_t n;
		rc = mshare_shares_tensor(sh, (enum model_tensor_id)id, &t[id], &n);
	}
	if (rc != 0) {
		snprintf(detail, cap, "weights: the share file lacks a tensor");
		goto out;
	}
	if ((rc = smodel_new_shares(w->mpc, &c->share.config, t, &w->sm)) != 0)
		describe(w, rc, "weights", detail, cap);
out:
	mshare_shares_free(sh); /* the plaintext shares live no longer than this */
	return rc;
}

static int session_init(struct work *w, char *detail, size_t cap)
{
	struct party_ctx *c = w->c;
	struct psession *s = w->s;
	uint8_t seed[MPC_SEED_BYTES];
	struct prepnet_opts po = {.url = s->dealer_url, .ca_file = c->set.mtls_ca, .cert_file = c->set.mtls_cert,
				  .key_file = c->set.mtls_key, .dealer_fingerprint = s->has_dealer_fp ? s->dealer_fp : NULL,
				  .session = s->dealer_session, .party = s->index,
				  .timeout_ms = (unsigned)c->set.dealer_ms};
	int rc = prepnet_new(&po, &w->pn);
	if (rc != 0) {
		snprintf(detail, cap, "dealer: the dealer settings were refused (%s)", err_title(rc));
		return rc;
	}
	if ((rc = prepnet_seed(w->pn, seed)) != 0) {
		snprintf(detail, cap, "dealer: %s", prepnet_last_error(w->pn)[0] ? prepnet_last_error(w->pn)
										   : err_title(rc));
		return rc;
	}
	struct mnet_peer peers[MPC_MAX_PARTIES];
	memset(peers, 0, sizeof peers);
	for (unsigned j = 0; j < s->nparties; j++) {
		peers[j].url = s->url[j][0] ? s->url[j] : NULL;
		peers[j].stream_url = s->stream_url[j][0] ? s->stream_url[j] : NULL;
		memcpy(peers[j].fingerprint, s->fp[j], 32);
	}
	struct mnet_opts mo = {.ca_file = c->set.mtls_ca, .cert_file = c->set.mtls_cert, .key_file = c->set.mtls_key,
			       .timeout_ms = (unsigned)c->set.round_ms,
			       .mode = c->set.mode ? MNET_MODE_REQUEST : MNET_MODE_STREAM};
	struct mpc_net *inner = NULL;
	if ((rc = mnet_net_new(c->hub, s->sid, PARTY_MNET_GENERATION, s->index, s->nparties, peers, &mo, &inner)) !=
	    0) {
		snprintf(detail, cap, "transport: %s",
			 rc == ERR_CONFLICT ? "this session id is in use by another session of this party"
					    : err_title(rc));
		goto out;
	}
	if (!(w->wn = calloc(1, sizeof *w->wn))) {
		mpc_net_free(inner);
		rc = ERR_NOMEM;
		snprintf(detail, cap, "transport: out of memory");
		goto out;
	}
	w->wn->inner = inner;
	if ((rc = mpc_net_new(&wnet_ops, w->wn, s->index, s->nparties, &w->net)) != 0) {
		w->wn = NULL; /* freed with inner by mpc_net_new */
		snprintf(detail, cap, "transport: %s", err_title(rc));
		goto out;
	}
	pthread_mutex_lock(&s->mu);
	s->net = w->net;
	bool gone = s->closing;
	pthread_mutex_unlock(&s->mu);
	if (gone) {
		rc = ERR_CANCELLED;
		snprintf(detail, cap, "closed during initialisation");
		goto out;
	}
	struct mpc_config cfg = {.frac_bits = s->frac_bits, .check_every = (size_t)c->set.check_every};
	w->src = prepnet_source(w->pn);
	if ((rc = mpc_new(w->net, seed, &w->src, &cfg, &w->mpc)) != 0) {
		snprintf(detail, cap, "engine: %s", err_title(rc));
		goto out;
	}
	rc = load_weights(w, detail, cap);
out:
	sodium_memzero(seed, sizeof seed);
	return rc;
}

/* ---- one generation ---- */

/* Every party says whether it goes on; all go on only if every one does. A failed
 * round is a failed session (the transport has aborted everywhere already). */
static int control_round(struct work *w, bool go, bool *all)
{
	const unsigned n = w->s->nparties, me = w->s->index;
	uint8_t mine = go ? 1 : 0, theirs[MPC_MAX_PARTIES] = {0};
	const uint8_t *send[MPC_MAX_PARTIES] = {0};
	uint8_t *recv[MPC_MAX_PARTIES] = {0};
	size_t slen[MPC_MAX_PARTIES] = {0}, rlen[MPC_MAX_PARTIES] = {0};
	for (unsigned j = 0; j < n; j++) {
		send[j] = &mine;
		recv[j] = &theirs[j];
		slen[j] = rlen[j] = 1;
	}
	int rc = mpc_net_exchange(w->net, send, slen, recv, rlen);
	if (rc != 0) {
		w->transport_failed = true;
		return rc;
	}
	*all = go;
	for (unsigned j = 0; j < n; j++)
		if (j != me && theirs[j] != 1)
			*all = false;
	return 0;
}

static json_t *message_json(const char *key, long long v, const uint8_t *msg, size_t len)
{
	size_t cap = sodium_base64_ENCODED_LEN(len, sodium_base64_VARIANT_ORIGINAL);
	char *b = malloc(cap);
	if (!b)
		return NULL;
	sodium_bin2base64(b, cap, msg, len, sodium_base64_VARIANT_ORIGINAL);
	json_t *j = json_pack("{s:I, s:s}", key, (json_int_t)v, "message", b);
	free(b);
	return j;
}

enum gen_end { END_DONE, END_CANCELLED, END_TIMEOUT, END_FAILED };

struct gen_result {
	enum gen_end end;
	int code;
	char detail[PARTY_DETAIL_MAX];
};

/* Waits for the client's INPUT (or a cancel, the session's end, the input timeout).
 * Returns whether this party goes on, with why not in r. */
static bool wait_input(struct work *w, struct pgen *g, struct gen_result *r)
{
	struct psession *s = w->s;
	int64_t deadline = party_now_ms() + w->c->set.input_timeout_ms;
	pthread_mutex_lock(&s->mu);
	if (!g->input && !g->cancel)
		g->state = PG_AWAITING_INPUT;
	while (!g->input && !g->cancel && !s->closing) {
		int64_t left = deadline - party_now_ms();
		if (left <= 0)
			break;
		struct timespec ts;
		clock_gettime(CLOCK_REALTIME, &ts);
		ts.tv_sec += left / 1000;
		ts.tv_nsec += (long)(left % 1000) * 1000000L;
		if (ts.tv_nsec >= 1000000000L)
			ts.tv_sec++, ts.tv_nsec -= 1000000000L;
		pthread_cond_timedwait(&s->cv, &s->mu, &ts);
	}
	bool go = g->input && !g->cancel && !s->closing;
	if (!go && g->cancel)
		r->end = END_CANCELLED, r->code = ERR_CANCELLED,
		snprintf(r->detail, sizeof r->detail, "cancelled by the caller before the INPUT was used");
	else if (!go && s->closing)
		r->end = END_FAILED, r->code = ERR_CANCELLED,
		snprintf(r->detail, sizeof r->detail, "the session was closed");
	else if (!go)
		r->end = END_TIMEOUT, r->code = ERR_TIMEOUT,
		snprintf(r->detail, sizeof r->detail, "no INPUT message arrived within limits.input_timeout_ms (%lld ms)",
			 (long long)w->c->set.input_timeout_ms);
	pthread_mutex_unlock(&s->mu);
	return go;
}

/* Runs g to its end; the result says how it ended. */
static void run_generation(struct work *w, struct pgen *g, struct gen_result *res)
{
	struct party_ctx *c = w->c;
	struct psession *s = w->s;
	const size_t V = (size_t)c->share.config.vocab_size;
	struct cio_party *cp = NULL;
	struct smodel_gen *sg = NULL;
	mpc_share *x = NULL;
	uint8_t *msg = NULL;
	size_t len = 0;
	const char *where = "masks";
	int rc;
	bool all = false;
	res->end = END_DONE;

	struct cio_party_params prm = {.n_in = g->n_in, .n_out = g->n_out};
	memcpy(prm.session, s->sid, CIO_ID_BYTES);
	memcpy(prm.generation, g->gid, CIO_ID_BYTES);
	memcpy(prm.client_pk, g->client_pk, CIO_KEY_BYTES);
	memcpy(prm.party_sk, c->sk, CIO_KEY_BYTES);
	rc = cio_party_new(w->mpc, w->net, &prm, &cp); /* (the handler refused keys of low order) */
	sodium_memzero(&prm, sizeof prm);
	if (rc != 0 || (rc = cio_party_masks(cp, &msg, &len)) != 0)
		goto fail;
	party_gen_event(g, "masks", message_json("party", s->index, msg, len));
	free(msg), msg = NULL;
	refresh_stats(w);

	bool go = wait_input(w, g, res);
	where = "control round";
	if ((rc = control_round(w, go, &all)) != 0)
		goto fail;
	if (!all) {
		if (go) /* this party had its INPUT: another one stopped */
			res->end = END_CANCELLED, res->code = ERR_CANCELLED,
			snprintf(res->detail, sizeof res->detail,
				 "ended by another party before the INPUT was used (a cancel there, or its "
				 "INPUT did not arrive)");
		goto out;
	}
	pthread_mutex_lock(&s->mu);
	g->state = PG_RUNNING;
	pthread_mutex_unlock(&s->mu);
	where = "input";
	if (!(x = calloc(g->n_in, sizeof *x))) {
		rc = ERR_NOMEM;
		goto fail;
	}
	if ((rc = cio_party_input(cp, g->input, g->input_len, x, &msg, &len)) != 0) {
		/* with the engine healthy, the refusal is this party's own verdict on the
		 * INPUT (clientio has aborted the transport for the peers) */
		if (!mpc_failed_check(w->mpc)) {
			res->end = END_FAILED, res->code = ERR_PROTOCOL;
			snprintf(res->detail, sizeof res->detail, "input: the client's INPUT was refused: %s",
				 cio_party_why(cp) ? cio_party_why(cp) : err_title(rc));
			goto out_fail;
		}
		goto fail;
	}
	party_gen_event(g, "receipt", message_json("party", s->index, msg, len));
	free(msg), msg = NULL;

	where = "prompt";
	struct smodel_gen_opts go_opts = {
		.n_ctx = (int)(g->slots + g->max_tokens),
		.sampling = {.temperature = (float)g->sampling.temperature,
			     .top_p = (float)g->sampling.top_p,
			     .top_k = (int)g->sampling.top_k},
	};
	if ((rc = smodel_gen_new(w->sm, &go_opts, &sg)) != 0 ||
	    (rc = smodel_gen_prompt_shares(sg, x, s->pad ? x + (size_t)g->slots * V : NULL, g->slots)) != 0)
		goto fail;
	sodium_memzero(x, (size_t)g->n_in * sizeof *x);
	free(x), x = NULL;
	struct sampler_rng rng;
	uint64_t seed = g->sampling.seed;
	if (g->sampling.temperature > 0 && !g->sampling.has_seed && (rc = smodel_toss_seed(w->mpc, &seed)) != 0)
		goto fail;
	sampler_rng_seed(&rng, seed);

	for (uint32_t t = 0; t < g->n_out; t++) {
		int64_t t0 = party_now_ms();
		float coin = g->sampling.temperature > 0 ? sampler_rng_f32(&rng) : 0.0f;
		mpc_share y;
		where = t == 0 ? "prompt and first token" : "token";
		if ((rc = smodel_gen_step(sg, coin)) != 0 || (rc = smodel_gen_token_share(sg, &y)) != 0)
			goto fail;
		where = "output";
		rc = cio_party_output(cp, &y, 1, &msg, &len);
		sodium_memzero(&y, sizeof y);
		if (rc != 0)
			goto fail;
		party_gen_event(g, "token", message_json("index", t, msg, len));
		free(msg), msg = NULL;
		pthread_mutex_lock(&s->mu);
		g->tokens = t + 1;
		s->used_ms = party_now_ms();
		pthread_mutex_unlock(&s->mu);
		metric_inc(c->m_tokens);
		metric_observe(c->m_token_seconds, (double)(party_now_ms() - t0) / 1000.0);
		refresh_stats(w);
		if (t + 1 == g->n_out)
			break;
		pthread_mutex_lock(&s->mu);
		bool stop = g->cancel || s->closing;
		pthread_mutex_unlock(&s->mu);
		where = "control round";
		if ((rc = control_round(w, !stop, &all)) != 0)
			goto fail;
		if (!all) {
			res->end = END_CANCELLED, res->code = ERR_CANCELLED;
			snprintf(res->detail, sizeof res->detail, "%s after %u of %u tokens",
				 stop ? "cancelled by the caller" : "ended by another party (a cancel there)", t + 1,
				 g->n_out);
			goto out;
		}
	}
	goto out;
fail:
	res->end = END_FAILED;
	res->code = rc;
	if (closing(s)) /* the transport was aborted for the close: say so, not "a peer" */
		snprintf(res->detail, sizeof res->detail, "%s: the session was closed at this party", where);
	else
		describe(w, rc, where, res->detail, sizeof res->detail);
out_fail:
	if (res->end == END_FAILED && w->net)
		mpc_net_abort(w->net); /* the peers must not wait for this party */
out:
	if (x) {
		sodium_memzero(x, (size_t)g->n_in * sizeof *x);
		free(x);
	}
	free(msg);
	smodel_gen_free(sg); /* wipes this generation's KV cache */
	cio_party_free(cp);
	refresh_stats(w);
}

static const char *end_name(enum gen_end e)
{
	static const char *const n[] = {"done", "cancelled", "timeout", "failed"};
	return n[e];
}

/* Sends g's last event, files it among the finished generations and frees its slot. */
static void finish_gen(struct work *w, struct pgen *g, const struct gen_result *res)
{
	struct party_ctx *c = w->c;
	struct psession *s = w->s;
	if (res->end == END_DONE) {
		party_gen_event(g, "done", json_pack("{s:i, s:s}", "tokens", (int)g->tokens, "reason", "max_tokens"));
	} else {
		json_t *p = err_problem(res->code, res->detail, NULL, NULL);
		if (p) {
			json_object_set_new(p, "party", json_integer(s->index));
			json_object_set_new(p, "tokens", json_integer(g->tokens));
			const char *check = res->end == END_FAILED ? failed_check(w) : NULL;
			if (check)
				json_object_set_new(p, "check", json_string(check));
		}
		party_gen_event(g, "error", p);
	}
	sse_log_finish(g->log);
	pthread_mutex_lock(&s->mu);
	g->state = res->end == END_DONE ? PG_DONE : res->end == END_FAILED ? PG_FAILED : PG_CANCELLED;
	g->code = res->code;
	snprintf(g->detail, sizeof g->detail, "%s", res->detail);
	g->finished_ms = party_now_ms();
	if (s->gen == g)
		s->gen = NULL;
	party_gen_free(s->finished[PARTY_KEEP_FINISHED - 1]);
	memmove(s->finished + 1, s->finished, (PARTY_KEEP_FINISHED - 1) * sizeof s->finished[0]);
	s->finished[0] = g;
	s->used_ms = party_now_ms();
	bool counted = g->counted;
	g->counted = false;
	pthread_mutex_unlock(&s->mu);
	pthread_mutex_lock(&c->mu);
	if (counted && c->running)
		c->running--;
	metric_set(c->m_running, (double)c->running);
	pthread_mutex_unlock(&c->mu);
	metric_inc(metric_series(c->m_generations_total, METRIC_LABELS(end_name(res->end))));
	if (res->end == END_DONE || res->end == END_CANCELLED)
		LOG_INFO("party.generation_end", LOG_S("generation", g->id), LOG_S("outcome", end_name(res->end)),
			 LOG_I("tokens", g->tokens), LOG_S("detail", res->detail));
	else
		LOG_WARN("party.generation_end", LOG_S("generation", g->id), LOG_S("outcome", end_name(res->end)),
			 LOG_I("tokens", g->tokens), LOG_S("error", err_slug(res->code)), LOG_S("detail", res->detail));
}

/* ---- the thread ---- */

static void release(struct work *w)
{
	struct psession *s = w->s;
	smodel_free(w->sm); /* wipes the weights' shares and masks */
	mpc_free(w->mpc);   /* wipes the MAC key share and the seed */
	w->sm = NULL;
	w->mpc = NULL;
	pthread_mutex_lock(&s->mu);
	s->net = NULL;
	while (s->net_users) /* an abort from the janitor in progress */
		pthread_cond_wait(&s->cv, &s->mu);
	pthread_mutex_unlock(&s->mu);
	mpc_net_free(w->net); /* unregisters the session from the hub, closes the streams */
	prepnet_free(w->pn);
	w->net = NULL;
	w->wn = NULL;
	w->pn = NULL;
}

static void *worker_main(void *arg)
{
	struct psession *s = arg;
	struct party_ctx *c = s->ctx;
	struct work w = {.c = c, .s = s};
	char detail[PARTY_DETAIL_MAX] = "";
	log_ctx_set(NULL, s->id);
	int64_t t0 = party_now_ms();
	set_state(s, PS_INITIALISING, NULL);
	int rc = session_init(&w, detail, sizeof detail);
	refresh_stats(&w);
	if (rc == 0) {
		pthread_mutex_lock(&s->mu);
		s->init_ms = party_now_ms() - t0;
		pthread_mutex_unlock(&s->mu);
		set_state(s, PS_READY, NULL);
		metric_inc(metric_series(c->m_sessions_total, METRIC_LABELS("ready")));
		metric_observe(c->m_init_seconds, (double)(party_now_ms() - t0) / 1000.0);
		LOG_INFO("party.session_ready", LOG_I("ms", party_now_ms() - t0), LOG_I("rounds", w.seen.rounds),
			 LOG_I("bytes_sent", w.seen.bytes_sent));
	} else if (!closing(s)) {
		metric_inc(metric_series(c->m_sessions_total, METRIC_LABELS("failed")));
		fail_session(&w, detail);
	}
	while (rc == 0) {
		pthread_mutex_lock(&s->mu);
		while (!s->closing && !s->gen)
			pthread_cond_wait(&s->cv, &s->mu);
		struct pgen *g = s->closing ? NULL : s->gen;
		pthread_mutex_unlock(&s->mu);
		if (!g)
			break;
		log_ctx_set(NULL, s->id);
		struct gen_result res = {0};
		run_generation(&w, g, &res);
		finish_gen(&w, g, &res);
		if (res.end == END_FAILED) {
			if (!closing(s))
				fail_session(&w, res.detail);
			break;
		}
	}
	/* A generation queued when the session ended ends with it. */
	pthread_mutex_lock(&s->mu);
	struct pgen *left = s->gen;
	pthread_mutex_unlock(&s->mu);
	if (left) {
		struct gen_result res = {.end = END_FAILED, .code = ERR_UNAVAILABLE};
		pthread_mutex_lock(&s->mu);
		snprintf(res.detail, sizeof res.detail, "the session is %s: %.200s",
			 party_session_state_name(s->state), s->detail);
		pthread_mutex_unlock(&s->mu);
		finish_gen(&w, left, &res);
	}
	release(&w);
	pthread_mutex_lock(&s->mu);
	s->worker_done = true;
	pthread_mutex_unlock(&s->mu);
	LOG_INFO("party.session_released", LOG_S("detail", "engine, weights, KV cache and transport wiped"));
	log_ctx_clear();
	/* The worker is detached and fini waits only for the count below: free OpenSSL's
	 * per-thread state (random generators, error queue) before being counted out, or a
	 * shutdown right after a close finds it still allocated. */
	OPENSSL_thread_stop();
	pthread_mutex_lock(&c->mu);
	c->workers--;
	pthread_cond_broadcast(&c->cv);
	party_session_put_locked(c, s);
	pthread_mutex_unlock(&c->mu);
	return NULL;
}

int party_worker_start_locked(struct party_ctx *c, struct psession *s)
{
	pthread_attr_t a;
	pthread_t t;
	pthread_attr_init(&a);
	pthread_attr_setdetachstate(&a, PTHREAD_CREATE_DETACHED);
	s->refs++;
	s->worker_done = false;
	c->workers++;
	int ok = pthread_create(&t, &a, worker_main, s);
	pthread_attr_destroy(&a);
	if (ok != 0) {
		s->refs--;
		s->worker_done = true;
		c->workers--;
		return ERR_NOMEM;
	}
	return 0;
}
