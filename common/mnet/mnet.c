/* mnet: payload framing, the hub that files incoming round payloads per generation
 * and sender (the rules every payload passes, whether it came in a POST or on a
 * stream), and the mpc_net implementation: a round is sent to all peers at once and
 * the peers' payloads are taken from the hub. In request mode the engine thread POSTs
 * and then sleeps on the generation's condition variable until the HTTP threads have
 * filed every payload; in stream mode link.c runs the round (sending and reading the
 * borrowed streams in one poll loop). Everything shared between the HTTP threads, the
 * stream reader and the engine threads is under the hub's one lock; each generation has
 * its own wake-up so waiters wake only for their own, and only for the payload they
 * wait on. */
#include "mnet/mnet.h"

#include <errno.h>
#include <sys/eventfd.h>
#include <unistd.h>
#include <openssl/pem.h>
#include <openssl/x509.h>
#include <pthread.h>
#include <sodium.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "buf/buf.h"
#include "err/err.h"
#include "http/http.h"
#include "httpc/httpc.h"
#include "log/log.h"
#include "mnet/mnet_int.h"
#include "mpc/mpc.h"

static const uint8_t magic[4] = {'M', 'M', 'P', 'C'};

static void put16(uint8_t *p, uint16_t v) { p[0] = (uint8_t)v, p[1] = (uint8_t)(v >> 8); }
static void put32(uint8_t *p, uint32_t v) { for (int i = 0; i < 4; i++) p[i] = (uint8_t)(v >> (8 * i)); }
static void put64(uint8_t *p, uint64_t v) { for (int i = 0; i < 8; i++) p[i] = (uint8_t)(v >> (8 * i)); }
static uint16_t get16(const uint8_t *p) { return (uint16_t)(p[0] | p[1] << 8); }
static uint32_t get32(const uint8_t *p)
{
	uint32_t v = 0;
	for (int i = 3; i >= 0; i--)
		v = v << 8 | p[i];
	return v;
}
static uint64_t get64(const uint8_t *p)
{
	uint64_t v = 0;
	for (int i = 7; i >= 0; i--)
		v = v << 8 | p[i];
	return v;
}

void mnet_hdr_encode(const struct mnet_hdr *h, uint8_t out[MNET_HDR_LEN])
{
	memcpy(out, magic, 4);
	put16(out + 4, h->version);
	put16(out + 6, h->flags);
	memcpy(out + 8, h->session, MNET_SESSION_LEN);
	put64(out + 24, h->generation);
	put64(out + 32, h->round);
	put16(out + 40, h->sender);
	put16(out + 42, h->receiver);
	put32(out + 44, h->length);
}

int mnet_hdr_decode_head(const uint8_t buf[MNET_HDR_LEN], struct mnet_hdr *h)
{
	if (memcmp(buf, magic, 4) != 0)
		return ERR_PARSE;
	h->version = get16(buf + 4);
	h->flags = get16(buf + 6);
	memcpy(h->session, buf + 8, MNET_SESSION_LEN);
	h->generation = get64(buf + 24);
	h->round = get64(buf + 32);
	h->sender = get16(buf + 40);
	h->receiver = get16(buf + 42);
	h->length = get32(buf + 44);
	if (h->version != MNET_VERSION || (h->flags & ~MNET_FLAG_ABORT))
		return ERR_UNSUPPORTED;
	if (h->sender >= MPC_MAX_PARTIES || h->receiver >= MPC_MAX_PARTIES || h->sender == h->receiver)
		return ERR_RANGE;
	if (h->length > MNET_MAX_DATA || ((h->flags & MNET_FLAG_ABORT) && h->length != 0))
		return ERR_PARSE;
	return 0;
}

int mnet_hdr_decode(const uint8_t *buf, size_t len, struct mnet_hdr *h)
{
	if (len < MNET_HDR_LEN)
		return ERR_PARSE;
	int rc = mnet_hdr_decode_head(buf, h);
	if (rc == 0 && h->length != len - MNET_HDR_LEN)
		rc = ERR_PARSE;
	return rc;
}

/* ---- the hub ---- */

long long mnet_mono_ms(void)
{
	struct timespec ts;
	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (long long)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

void mnet_deadline(struct timespec *dl, unsigned ms)
{
	clock_gettime(CLOCK_REALTIME, dl);
	dl->tv_sec += ms / 1000;
	dl->tv_nsec += (long)(ms % 1000) * 1000000L;
	if (dl->tv_nsec >= 1000000000L)
		dl->tv_sec++, dl->tv_nsec -= 1000000000L;
}

int mnet_hub_new(size_t max_buffered, struct mnet_hub **out)
{
	struct mnet_hub *h = calloc(1, sizeof *h);
	if (!h)
		return ERR_NOMEM;
	/* The reader files a payload and wakes the engine, which then takes the lock the
	 * reader is about to drop: a short spin beats a sleep there. */
	pthread_mutexattr_t ma;
	pthread_mutexattr_init(&ma);
	pthread_mutexattr_settype(&ma, PTHREAD_MUTEX_ADAPTIVE_NP);
	pthread_mutex_init(&h->mu, &ma);
	pthread_mutexattr_destroy(&ma);
	h->max_buffered = max_buffered ? max_buffered : (size_t)256 << 20;
	h->lfd = h->epfd = h->evfd = -1;
	*out = h;
	return 0;
}

static void chan_drop_msgs(struct mnet_hub *h, struct chan *c)
{
	for (unsigned j = 0; j < MPC_MAX_PARTIES; j++)
		while (c->head[j]) {
			struct msg *m = c->head[j];
			c->head[j] = m->next;
			h->buffered -= m->len;
			sodium_memzero(m->data, m->len);
			free(m->data);
			free(m);
		}
}

/* The generation is over here: its streams are closed (by the reader) and its
 * payloads wiped. */
static void chan_free(struct mnet_hub *h, struct chan *c)
{
	mnet_streams_detach(h, c);
	chan_drop_msgs(h, c);
	pthread_cond_destroy(&c->cv);
	if (c->evfd >= 0)
		close(c->evfd);
	free(c);
}

void mnet_hub_free(struct mnet_hub *h)
{
	if (!h)
		return;
	mnet_streams_stop(h);
	while (h->chans) {
		struct chan *c = h->chans;
		h->chans = c->next;
		chan_free(h, c);
	}
	pthread_mutex_destroy(&h->mu);
	free(h);
}

struct chan *mnet_chan_find(struct mnet_hub *h, const uint8_t *session, uint64_t gen, unsigned party)
{
	for (struct chan *c = h->chans; c; c = c->next)
		if (c->generation == gen && c->party == party && memcmp(c->session, session, MNET_SESSION_LEN) == 0)
			return c;
	return NULL;
}

static struct chan *chan_new(struct mnet_hub *h, const uint8_t *session, uint64_t gen, unsigned party)
{
	struct chan *c = calloc(1, sizeof *c);
	if (!c)
		return NULL;
	memcpy(c->session, session, MNET_SESSION_LEN);
	c->generation = gen;
	c->party = party;
	c->created_ms = mnet_mono_ms();
	c->evfd = -1;
	pthread_cond_init(&c->cv, NULL);
	c->next = h->chans;
	h->chans = c;
	return c;
}

static void chan_unlink(struct mnet_hub *h, struct chan *c)
{
	for (struct chan **pp = &h->chans; *pp; pp = &(*pp)->next)
		if (*pp == c) {
			*pp = c->next;
			return;
		}
}

void mnet_hub_sweep(struct mnet_hub *h)
{
	long long now = mnet_mono_ms();
	for (struct chan **pp = &h->chans; *pp;) {
		struct chan *c = *pp;
		if (!c->registered && now - c->created_ms > UNREGISTERED_TTL_MS) {
			*pp = c->next;
			h->unregistered--;
			chan_free(h, c);
		} else {
			pp = &c->next;
		}
	}
}

struct chan *mnet_chan_get(struct mnet_hub *h, const uint8_t *session, uint64_t gen, unsigned party,
			   const char **detail)
{
	struct chan *c = mnet_chan_find(h, session, gen, party);
	if (c)
		return c;
	mnet_hub_sweep(h);
	if (h->unregistered >= MAX_UNREGISTERED || !(c = chan_new(h, session, gen, party))) {
		*detail = "too many generations not yet joined by this party";
		return NULL;
	}
	h->unregistered++;
	return c;
}

static void kick_engine(struct chan *c)
{
	if (c->polling && c->evfd >= 0) {
		uint64_t one = 1;
		ssize_t w = write(c->evfd, &one, sizeof one);
		(void)w; /* a full counter already means "wake up" */
	}
}

void mnet_chan_notify(struct chan *c)
{
	pthread_cond_broadcast(&c->cv);
	kick_engine(c);
}

/* Marks the generation aborted (first reason wins) and wakes its waiter. */
void mnet_chan_abort(struct chan *c, const char *why)
{
	if (!c->aborted) {
		c->aborted = true;
		snprintf(c->why, sizeof c->why, "%s", why);
	}
	mnet_chan_notify(c);
}

int mnet_check_sender(struct mnet_hub *h, struct chan *c, unsigned sender, const uint8_t fp[32],
		      const char *cn, const char **detail)
{
	(void)h;
	if (c->aborted) {
		*detail = c->why;
		return ERR_ABORTED;
	}
	if (c->registered && sender >= c->nparties) {
		*detail = "sender index beyond the parties of this generation";
		return ERR_RANGE;
	}
	if (c->fp_set[sender] && sodium_memcmp(c->fp[sender], fp, 32) != 0) {
		/* Another party's certificate claiming this sender's index: refuse it, and
		 * do not let it disturb the generation. */
		*detail = "the certificate is not the one registered for this sender";
		LOG_WARN("mnet.impostor", LOG_S("peer", cn), LOG_I("claimed_sender", sender));
		return ERR_FORBIDDEN;
	}
	if (!c->fp_set[sender]) {
		memcpy(c->fp[sender], fp, 32);
		c->fp_set[sender] = true;
	}
	return 0;
}

int mnet_file(struct mnet_hub *h, struct chan *c, const struct mnet_hdr *hd, uint8_t *data,
	      const char **detail)
{
	int rc = 0;
	if (hd->flags & MNET_FLAG_ABORT) {
		char why[96];
		snprintf(why, sizeof why, "party %u aborted the generation", hd->sender);
		mnet_chan_abort(c, why);
		goto out;
	}
	if (hd->round != c->next_round[hd->sender]) {
		char why[96];
		snprintf(why, sizeof why, "party %u sent round %llu, expected %llu (replayed or reordered)",
			 hd->sender, (unsigned long long)hd->round, (unsigned long long)c->next_round[hd->sender]);
		mnet_chan_abort(c, why);
		rc = ERR_CONFLICT, *detail = c->why;
		goto out;
	}
	if (h->buffered + hd->length > h->max_buffered) {
		mnet_chan_abort(c, "the receiving party's round buffer is full");
		rc = ERR_UNAVAILABLE, *detail = c->why;
		goto out;
	}
	struct msg *m = calloc(1, sizeof *m);
	if (!m) {
		rc = ERR_NOMEM, *detail = NULL;
		goto out;
	}
	m->round = hd->round;
	m->data = data;
	m->len = hd->length;
	data = NULL;
	if (c->tail[hd->sender])
		c->tail[hd->sender]->next = m;
	else
		c->head[hd->sender] = m;
	c->tail[hd->sender] = m;
	c->next_round[hd->sender]++;
	h->buffered += hd->length;
	if (c->waiting_for == hd->sender + 1u)
		pthread_cond_signal(&c->cv); /* one waiter: the engine */
	kick_engine(c);
out:
	if (data) {
		sodium_memzero(data, hd->length);
		free(data);
	}
	return rc;
}

int mnet_hub_deliver(struct mnet_hub *h, struct http_req *req)
{
	size_t len;
	const uint8_t *body = http_req_body(req, &len);
	const struct ident *peer = http_req_peer(req);
	struct mnet_hdr hd;
	int rc = mnet_hdr_decode(body, len, &hd);
	if (rc != 0)
		return http_reply_problem(req, rc, "not a valid MPC round payload (see docs/PROTOCOL.md)", "body");
	if (!peer)
		return http_reply_problem(req, ERR_UNAUTHENTICATED, "round payloads need a party certificate", NULL);

	const char *detail = NULL;
	char why[128] = "";
	uint8_t *data = NULL;
	if (hd.length && !(data = malloc(hd.length)))
		return http_reply_problem(req, ERR_NOMEM, NULL, NULL);
	if (hd.length)
		memcpy(data, body + MNET_HDR_LEN, hd.length);
	pthread_mutex_lock(&h->mu);
	struct chan *c = mnet_chan_get(h, hd.session, hd.generation, hd.receiver, &detail);
	if (!c)
		rc = ERR_UNAVAILABLE;
	else if ((rc = mnet_check_sender(h, c, hd.sender, peer->fingerprint, peer->cn, &detail)) == 0)
		rc = mnet_file(h, c, &hd, data, &detail), data = NULL;
	if (detail)
		snprintf(why, sizeof why, "%s", detail); /* it may live in the generation */
	pthread_mutex_unlock(&h->mu);
	if (data) {
		sodium_memzero(data, hd.length);
		free(data);
	}
	if (rc)
		return http_reply_problem_status(req, rc, rc == ERR_ABORTED ? 410 : (unsigned)err_http_status(rc),
						 why[0] ? why : NULL, NULL);
	return http_reply_data(req, 204, NULL, NULL, 0);
}

/* ---- the net ---- */

static void net_abort(void *impl);

static int peer_client(const struct mnet_net *n, unsigned j, unsigned timeout_ms, struct httpc **out)
{
	struct httpc_opts ho = {
		.base_url = n->peers[j].url,
		.ca_file = n->o.ca_file,
		.cert_file = n->o.cert_file,
		.key_file = n->o.key_file,
		.expect_role = IDENT_ROLE_PARTY,
		.expect_fingerprint = n->peers[j].fingerprint,
		.connect_timeout_ms = timeout_ms,
		.timeout_ms = timeout_ms,
	};
	return httpc_new(out, &ho);
}

int mnet_frame(struct mnet_net *n, unsigned j, const uint8_t *data, size_t len, uint16_t flags)
{
	if (len > MNET_MAX_DATA)
		return ERR_TOO_LARGE;
	struct mnet_hdr hd = {.version = MNET_VERSION, .flags = flags, .generation = n->generation,
			      .round = n->round, .sender = (uint16_t)n->party, .receiver = (uint16_t)j,
			      .length = (uint32_t)len};
	memcpy(hd.session, n->session, MNET_SESSION_LEN);
	uint8_t hb[MNET_HDR_LEN];
	mnet_hdr_encode(&hd, hb);
	struct buf *b = &n->out[j];
	b->len = 0;
	if (buf_append(b, hb, sizeof hb) != 0 || (len && buf_append(b, data, len) != 0))
		return ERR_NOMEM;
	return 0;
}

/* POSTs bufs[j] to every peer j with to[j] set, all at once. */
static int post_all(struct mnet_net *n, const struct buf *bufs, const bool to[], struct httpc *const clients[],
		    struct httpc_multi *multi)
{
	struct httpc_call calls[MPC_MAX_PARTIES];
	size_t nc = 0;
	for (unsigned j = 0; j < n->nparties; j++)
		if (j != n->party && to[j])
			calls[nc++] = (struct httpc_call){.c = clients[j], .method = "POST", .path = MNET_ROUTE,
							  .content_type = "application/octet-stream",
							  .body = bufs[j].data, .len = bufs[j].len};
	int rc = httpc_multi_run(multi, calls, nc);
	for (size_t k = 0; k < nc; k++) {
		long st = calls[k].resp.status;
		if (rc == 0 && st != 204) {
			rc = st == 410 ? ERR_ABORTED : ERR_PROTOCOL;
			LOG_WARN("mnet.send_refused", LOG_I("status", st), LOG_S("detail", calls[k].resp.body));
		} else if (calls[k].rc != 0 && rc == calls[k].rc) {
			LOG_WARN("mnet.send_failed", LOG_S("error", calls[k].resp.error));
		}
		httpc_resp_free(&calls[k].resp);
	}
	return rc;
}

int mnet_take_round(struct mnet_net *n, uint8_t *const recv[], const size_t recv_len[], char *why, size_t cap)
{
	struct mnet_hub *h = n->hub;
	struct chan *c = n->chan;
	int rc = 0;
	if (c->aborted) {
		rc = ERR_ABORTED;
		goto fail;
	}
	bool missing = false;
	for (unsigned j = 0; j < n->nparties; j++) {
		if (j == n->party)
			continue;
		struct msg *m = c->head[j];
		char w[96];
		if (!m && c->gone[j]) {
			snprintf(w, sizeof w, "party %u closed its stream before round %llu", j,
				 (unsigned long long)n->round);
			mnet_chan_abort(c, w);
			rc = ERR_IO;
			goto fail;
		}
		if (m && m->len != recv_len[j]) {
			snprintf(w, sizeof w, "party %u sent %zu bytes, expected %zu", j, m->len, recv_len[j]);
			mnet_chan_abort(c, w);
			rc = ERR_PROTOCOL;
			goto fail;
		}
		missing = missing || !m;
	}
	if (missing)
		return 1;
	for (unsigned j = 0; j < n->nparties; j++) {
		struct msg *m = j == n->party ? NULL : c->head[j];
		if (!m)
			continue;
		if (m->len)
			memcpy(recv[j], m->data, m->len);
		c->head[j] = m->next;
		if (!c->head[j])
			c->tail[j] = NULL;
		h->buffered -= m->len;
		sodium_memzero(m->data, m->len);
		free(m->data);
		free(m);
	}
	return 0;
fail:
	snprintf(why, cap, "%s", c->why);
	return rc;
}

/* Request mode: a POST to every peer, then a sleep until the HTTP threads have filed
 * every peer's payload. */
static int request_exchange(struct mnet_net *n, uint8_t *const recv[], const size_t recv_len[], char *why,
			    size_t cap)
{
	struct mnet_hub *h = n->hub;
	struct chan *c = n->chan;
	int rc = 0;
	if (!n->multi) {
		/* Connections are made at the first round, like the streams. */
		rc = httpc_multi_new(&n->multi);
		for (unsigned j = 0; j < n->nparties && rc == 0; j++)
			if (j != n->party)
				rc = peer_client(n, j, n->timeout_ms, &n->peer[j]);
	}
	bool all[MPC_MAX_PARTIES];
	memset(all, 1, sizeof all);
	if (rc == 0)
		rc = post_all(n, n->out, all, n->peer, n->multi);
	if (rc != 0) {
		snprintf(why, cap, "sending this round failed");
		return rc;
	}
	struct timespec dl;
	mnet_deadline(&dl, n->timeout_ms);
	pthread_mutex_lock(&h->mu);
	while ((rc = mnet_take_round(n, recv, recv_len, why, cap)) == 1) {
		unsigned j = 0;
		while (j == n->party || c->head[j])
			j++;
		c->waiting_for = j + 1; /* only this peer's payload wakes us */
		int w = pthread_cond_timedwait(&c->cv, &h->mu, &dl);
		c->waiting_for = 0;
		if (w == ETIMEDOUT && !c->head[j] && !c->aborted && !c->gone[j]) {
			snprintf(why, cap, "no payload from party %u within %u ms", j, n->timeout_ms);
			mnet_chan_abort(c, why);
			rc = ERR_TIMEOUT;
			break;
		}
	}
	pthread_mutex_unlock(&h->mu);
	return rc;
}

static int net_exchange(void *impl, const uint8_t *const send[], const size_t send_len[],
			uint8_t *const recv[], const size_t recv_len[])
{
	struct mnet_net *n = impl;
	struct mnet_hub *h = n->hub;
	char why[128] = "";
	int rc = 0;
	for (unsigned j = 0; j < n->nparties && rc == 0; j++)
		if (j != n->party)
			rc = mnet_frame(n, j, send[j], send_len[j], 0);
	if (rc == 0 && n->mode == MNET_MODE_STREAM)
		rc = (n->links_open ? 0 : mnet_links_open(n)) ?: mnet_stream_exchange(n, recv, recv_len, why, sizeof why);
	else if (rc == 0)
		rc = request_exchange(n, recv, recv_len, why, sizeof why);
	if (rc == 0) {
		__atomic_store_n(&n->round, n->round + 1, __ATOMIC_RELAXED); /* aborts read it */
		return 0;
	}
	pthread_mutex_lock(&h->mu);
	if (!why[0])
		snprintf(why, sizeof why, "%s", n->chan->aborted ? n->chan->why : "could not reach the peers");
	pthread_mutex_unlock(&h->mu);
	LOG_WARN("mnet.round_failed", LOG_I("party", n->party), LOG_I("round", n->round),
		 LOG_S("error", err_title(rc)), LOG_S("why", why));
	/* Whatever ended the round here ends it everywhere: peers that already moved on
	 * must not wait out their timeout for a round this party will never send. */
	net_abort(n);
	return rc;
}

/* Stops this generation here and tells every peer: on its stream when the stream is
 * free right now, else over a fresh short-lived connection (the engine thread may be
 * in the middle of a round on the usual ones). */
static void net_abort(void *impl)
{
	struct mnet_net *n = impl;
	pthread_mutex_lock(&n->hub->mu);
	mnet_chan_abort(n->chan, "this party aborted the generation");
	bool notified = n->notified;
	n->notified = true;
	pthread_mutex_unlock(&n->hub->mu);
	if (notified)
		return;
	bool reached[MPC_MAX_PARTIES] = {false}, to[MPC_MAX_PARTIES] = {false}, any = false;
	if (n->mode == MNET_MODE_STREAM)
		mnet_links_abort(n, reached);
	struct buf bufs[MPC_MAX_PARTIES];
	struct httpc *clients[MPC_MAX_PARTIES] = {0};
	struct httpc_multi *multi = NULL;
	for (unsigned j = 0; j < n->nparties; j++) {
		buf_init(&bufs[j], MNET_HDR_LEN, false);
		to[j] = j != n->party && !reached[j];
		any = any || to[j];
	}
	bool ok = any && httpc_multi_new(&multi) == 0;
	for (unsigned j = 0; ok && j < n->nparties; j++) {
		if (!to[j])
			continue;
		struct mnet_hdr hd = {.version = MNET_VERSION, .flags = MNET_FLAG_ABORT, .generation = n->generation,
				      .round = __atomic_load_n(&n->round, __ATOMIC_RELAXED),
				      .sender = (uint16_t)n->party, .receiver = (uint16_t)j};
		memcpy(hd.session, n->session, MNET_SESSION_LEN);
		uint8_t hb[MNET_HDR_LEN];
		mnet_hdr_encode(&hd, hb);
		ok = buf_append(&bufs[j], hb, sizeof hb) == 0 && peer_client(n, j, 1000, &clients[j]) == 0;
	}
	if (ok)
		post_all(n, bufs, to, clients, multi);
	for (unsigned j = 0; j < n->nparties; j++) {
		httpc_free(clients[j]);
		buf_free(&bufs[j]);
	}
	httpc_multi_free(multi);
}

static void net_free(void *impl)
{
	struct mnet_net *n = impl;
	if (!n)
		return;
	mnet_links_free(n);
	if (n->chan) {
		pthread_mutex_lock(&n->hub->mu);
		chan_unlink(n->hub, n->chan);
		chan_free(n->hub, n->chan);
		pthread_mutex_unlock(&n->hub->mu);
	}
	for (unsigned j = 0; j < MPC_MAX_PARTIES; j++) {
		httpc_free(n->peer[j]);
		buf_free(&n->out[j]);
		free(n->urls[2 * j]);
		free(n->urls[2 * j + 1]);
	}
	httpc_multi_free(n->multi);
	free(n);
}

static const struct mpc_net_ops mnet_ops = {net_exchange, net_abort, net_free};

int mnet_net_new(struct mnet_hub *hub, const uint8_t session[MNET_SESSION_LEN], uint64_t generation,
		 unsigned party, unsigned nparties, const struct mnet_peer *peers,
		 const struct mnet_opts *o, struct mpc_net **out)
{
	*out = NULL;
	if (nparties < 2 || nparties > MPC_MAX_PARTIES || party >= nparties || !o || !o->ca_file ||
	    !o->cert_file || !o->key_file || o->mode > MNET_MODE_REQUEST)
		return ERR_INVALID;
	struct mnet_net *n = calloc(1, sizeof *n);
	if (!n)
		return ERR_NOMEM;
	int rc = 0;
	n->hub = hub;
	n->party = party;
	n->nparties = nparties;
	n->o = *o;
	n->timeout_ms = o->timeout_ms ? o->timeout_ms : 5000;
	n->mode = o->mode == MNET_MODE_DEFAULT ? MNET_MODE_STREAM : o->mode;
	for (unsigned j = 0; j < nparties && rc == 0; j++)
		if (j != party && (!peers[j].url || (n->mode == MNET_MODE_STREAM && !peers[j].stream_url)))
			rc = ERR_INVALID;
	pthread_mutex_lock(&hub->mu);
	bool listening = hub->tls != NULL;
	pthread_mutex_unlock(&hub->mu);
	if (rc == 0 && n->mode == MNET_MODE_STREAM && !listening) {
		/* The peers' streams to this party would have nowhere to go. */
		LOG_ERROR("mnet.config", LOG_S("error", "stream mode needs the hub's stream listener (mnet_hub_listen)"));
		rc = ERR_INVALID;
	}
	int evfd = -1;
	if (rc == 0 && n->mode == MNET_MODE_STREAM && (evfd = eventfd(0, EFD_NONBLOCK | EFD_CLOEXEC)) < 0)
		rc = ERR_NOMEM;
	if (rc != 0) {
		free(n);
		return rc;
	}
	n->generation = generation;
	memcpy(n->session, session, MNET_SESSION_LEN);
	memcpy(n->peers, peers, nparties * sizeof *peers);
	for (unsigned j = 0; j < MPC_MAX_PARTIES; j++)
		buf_init(&n->out[j], MNET_HDR_LEN + MNET_MAX_DATA, true);
	/* Connections are made at the first round: the net keeps its own copies. */
	for (unsigned j = 0; j < nparties && rc == 0; j++) {
		struct mnet_peer *p = &n->peers[j];
		if (p->url && !(p->url = n->urls[2 * j] = strdup(p->url)))
			rc = ERR_NOMEM;
		if (p->stream_url && !(p->stream_url = n->urls[2 * j + 1] = strdup(p->stream_url)))
			rc = ERR_NOMEM;
	}
	if (rc != 0) {
		if (evfd >= 0)
			close(evfd);
		net_free(n);
		return rc;
	}

	pthread_mutex_lock(&hub->mu);
	struct chan *c = mnet_chan_find(hub, session, generation, party);
	if (c && c->registered) {
		rc = ERR_CONFLICT; /* this party already runs this generation */
	} else {
		if (!c)
			c = chan_new(hub, session, generation, party);
		else
			hub->unregistered--;
		if (!c) {
			rc = ERR_NOMEM;
		} else {
			c->registered = true;
			c->nparties = nparties;
			c->evfd = evfd;
			evfd = -1;
			/* Payloads and streams that came before we joined must have come from
			 * the registered certificates, else the generation cannot be trusted. */
			for (unsigned j = 0; j < nparties; j++) {
				if (c->fp_set[j] && sodium_memcmp(c->fp[j], peers[j].fingerprint, 32) != 0)
					mnet_chan_abort(c, "an early payload came from an unexpected certificate");
				memcpy(c->fp[j], peers[j].fingerprint, 32);
				c->fp_set[j] = j != party;
			}
			for (unsigned j = nparties; j < MPC_MAX_PARTIES; j++)
				if (c->head[j] || c->fp_set[j])
					mnet_chan_abort(c, "an early payload named a sender outside the generation");
			n->chan = c;
		}
	}
	pthread_mutex_unlock(&hub->mu);
	if (evfd >= 0)
		close(evfd);
	if (rc != 0) {
		net_free(n);
		return rc;
	}
	return mpc_net_new(&mnet_ops, n, party, nparties, out); /* on failure n is freed */
}

int mnet_cert_fingerprint(const char *pem_path, uint8_t out[32])
{
	FILE *f = fopen(pem_path, "r");
	if (!f)
		return ERR_IO;
	X509 *x = PEM_read_X509(f, NULL, NULL, NULL);
	fclose(f);
	if (!x)
		return ERR_PARSE;
	unsigned char *der = NULL;
	int len = i2d_X509(x, &der);
	X509_free(x);
	if (len <= 0)
		return ERR_PARSE;
	crypto_hash_sha256(out, der, (unsigned long long)len);
	OPENSSL_free(der);
	return 0;
}
