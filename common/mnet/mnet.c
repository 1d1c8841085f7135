/* mnet: payload framing, the hub that files incoming round payloads per generation
 * and sender, and the mpc_net implementation that sends to all peers concurrently and
 * waits for their payloads. Everything shared between the HTTP worker threads (which
 * deliver) and the engine threads (which wait) is under the hub's one lock; each
 * generation has its own condition variable so waiters wake only for their own. */
#include "mnet/mnet.h"

#include <errno.h>
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

int mnet_hdr_decode(const uint8_t *buf, size_t len, struct mnet_hdr *h)
{
	if (len < MNET_HDR_LEN || memcmp(buf, magic, 4) != 0)
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
	if (h->length > MNET_MAX_DATA || h->length != len - MNET_HDR_LEN ||
	    ((h->flags & MNET_FLAG_ABORT) && h->length != 0))
		return ERR_PARSE;
	return 0;
}

/* ---- the hub ---- */

struct msg {
	uint64_t round;
	uint8_t *data;
	size_t len;
	struct msg *next;
};

/* One generation as seen by one receiving party. Created by registration, or by the
 * first payload when a faster peer is already sending (then unregistered until this
 * party catches up, with the senders' fingerprints recorded for the later check). */
struct chan {
	uint8_t session[MNET_SESSION_LEN];
	uint64_t generation;
	unsigned party, nparties;
	bool registered;
	bool aborted;
	char why[128];
	pthread_cond_t cv;
	uint8_t fp[MPC_MAX_PARTIES][32];
	bool fp_set[MPC_MAX_PARTIES];
	uint64_t next_round[MPC_MAX_PARTIES];
	struct msg *head[MPC_MAX_PARTIES], *tail[MPC_MAX_PARTIES];
	long long created_ms;
	struct chan *next;
};

/* Generations that peers started but this party has not joined: bounded in number and
 * age, so stray or late payloads cannot pile up. */
#define MAX_UNREGISTERED 64
#define UNREGISTERED_TTL_MS 30000

static long long mono_ms(void)
{
	struct timespec ts;
	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (long long)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

struct mnet_hub {
	pthread_mutex_t mu;
	struct chan *chans;
	size_t buffered, max_buffered;
	unsigned unregistered;
};

int mnet_hub_new(size_t max_buffered, struct mnet_hub **out)
{
	struct mnet_hub *h = calloc(1, sizeof *h);
	if (!h)
		return ERR_NOMEM;
	pthread_mutex_init(&h->mu, NULL);
	h->max_buffered = max_buffered ? max_buffered : (size_t)256 << 20;
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

static void chan_free(struct mnet_hub *h, struct chan *c)
{
	chan_drop_msgs(h, c);
	pthread_cond_destroy(&c->cv);
	free(c);
}

void mnet_hub_free(struct mnet_hub *h)
{
	if (!h)
		return;
	while (h->chans) {
		struct chan *c = h->chans;
		h->chans = c->next;
		chan_free(h, c);
	}
	pthread_mutex_destroy(&h->mu);
	free(h);
}

static struct chan *chan_find(struct mnet_hub *h, const uint8_t *session, uint64_t gen, unsigned party)
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
	c->created_ms = mono_ms();
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

static void sweep_unregistered(struct mnet_hub *h)
{
	long long now = mono_ms();
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

/* Marks the generation aborted (first reason wins) and wakes its waiter. */
static void chan_abort(struct chan *c, const char *why)
{
	if (!c->aborted) {
		c->aborted = true;
		snprintf(c->why, sizeof c->why, "%s", why);
	}
	pthread_cond_broadcast(&c->cv);
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

	int status = 204, code = 0;
	const char *detail = NULL;
	pthread_mutex_lock(&h->mu);
	struct chan *c = chan_find(h, hd.session, hd.generation, hd.receiver);
	if (!c) {
		sweep_unregistered(h);
		if (h->unregistered >= MAX_UNREGISTERED || !(c = chan_new(h, hd.session, hd.generation, hd.receiver))) {
			code = ERR_UNAVAILABLE, detail = "too many generations not yet joined by this party";
			goto out;
		}
		h->unregistered++;
	}
	if (c->aborted) {
		status = 410, code = ERR_ABORTED, detail = c->why;
		goto out;
	}
	if (c->registered && hd.sender >= c->nparties) {
		code = ERR_RANGE, detail = "sender index beyond the parties of this generation";
		goto out;
	}
	if (c->fp_set[hd.sender] &&
	    sodium_memcmp(c->fp[hd.sender], peer->fingerprint, sizeof peer->fingerprint) != 0) {
		/* Another party's certificate claiming this sender's index: refuse it, and
		 * do not let it disturb the generation. */
		code = ERR_FORBIDDEN, detail = "the certificate is not the one registered for this sender";
		LOG_WARN("mnet.impostor", LOG_S("peer", peer->cn), LOG_I("claimed_sender", hd.sender));
		goto out;
	}
	if (!c->fp_set[hd.sender]) {
		memcpy(c->fp[hd.sender], peer->fingerprint, sizeof peer->fingerprint);
		c->fp_set[hd.sender] = true;
	}
	if (hd.flags & MNET_FLAG_ABORT) {
		char why[96];
		snprintf(why, sizeof why, "party %u aborted the generation", hd.sender);
		chan_abort(c, why);
		goto out;
	}
	if (hd.round != c->next_round[hd.sender]) {
		char why[96];
		snprintf(why, sizeof why, "party %u sent round %llu, expected %llu (replayed or reordered)",
			 hd.sender, (unsigned long long)hd.round, (unsigned long long)c->next_round[hd.sender]);
		chan_abort(c, why);
		code = ERR_CONFLICT, detail = c->why;
		goto out;
	}
	if (h->buffered + hd.length > h->max_buffered) {
		chan_abort(c, "the receiving party's round buffer is full");
		code = ERR_UNAVAILABLE, detail = c->why;
		goto out;
	}
	struct msg *m = calloc(1, sizeof *m);
	uint8_t *data = hd.length ? malloc(hd.length) : NULL;
	if (!m || (hd.length && !data)) {
		free(m);
		free(data);
		code = ERR_NOMEM;
		goto out;
	}
	if (hd.length)
		memcpy(data, body + MNET_HDR_LEN, hd.length);
	m->round = hd.round;
	m->data = data;
	m->len = hd.length;
	if (c->tail[hd.sender])
		c->tail[hd.sender]->next = m;
	else
		c->head[hd.sender] = m;
	c->tail[hd.sender] = m;
	c->next_round[hd.sender]++;
	h->buffered += hd.length;
	pthread_cond_broadcast(&c->cv);
out:
	pthread_mutex_unlock(&h->mu);
	if (code)
		return http_reply_problem_status(req, code, status == 410 ? 410 : (unsigned)err_http_status(code),
						 detail, NULL);
	return http_reply_data(req, 204, NULL, NULL, 0);
}

/* ---- the net ---- */

struct mnet_net {
	struct mnet_hub *hub;
	struct chan *chan;
	unsigned party, nparties;
	unsigned timeout_ms;
	uint64_t round;
	struct httpc *peer[MPC_MAX_PARTIES];
	struct httpc_multi *multi;
	struct buf out[MPC_MAX_PARTIES];
	struct mnet_opts o;
	struct mnet_peer peers[MPC_MAX_PARTIES];
	uint8_t session[MNET_SESSION_LEN];
	uint64_t generation;
	bool notified; /* the peers have been told this generation is over */
};

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

static int net_send(struct mnet_net *n, const uint8_t *const send[], const size_t send_len[], uint16_t flags,
		    struct httpc *const clients[], struct httpc_multi *multi)
{
	struct httpc_call calls[MPC_MAX_PARTIES];
	size_t nc = 0;
	for (unsigned j = 0; j < n->nparties; j++) {
		if (j == n->party)
			continue;
		size_t dlen = send ? send_len[j] : 0;
		if (dlen > MNET_MAX_DATA)
			return ERR_TOO_LARGE;
		struct mnet_hdr hd = {.version = MNET_VERSION, .flags = flags, .generation = n->generation,
				      .round = n->round, .sender = (uint16_t)n->party, .receiver = (uint16_t)j,
				      .length = (uint32_t)dlen};
		memcpy(hd.session, n->session, MNET_SESSION_LEN);
		uint8_t hb[MNET_HDR_LEN];
		mnet_hdr_encode(&hd, hb);
		struct buf *b = &n->out[j];
		b->len = 0;
		if (buf_append(b, hb, sizeof hb) != 0 || (dlen && buf_append(b, send[j], dlen) != 0))
			return ERR_NOMEM;
		calls[nc++] = (struct httpc_call){.c = clients[j], .method = "POST", .path = MNET_ROUTE,
						  .content_type = "application/octet-stream",
						  .body = b->data, .len = b->len};
	}
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

static int net_exchange(void *impl, const uint8_t *const send[], const size_t send_len[],
			uint8_t *const recv[], const size_t recv_len[])
{
	struct mnet_net *n = impl;
	struct mnet_hub *h = n->hub;
	int rc = net_send(n, send, send_len, 0, n->peer, n->multi);
	if (rc != 0)
		return rc;
	struct timespec dl;
	clock_gettime(CLOCK_REALTIME, &dl);
	dl.tv_sec += n->timeout_ms / 1000;
	dl.tv_nsec += (long)(n->timeout_ms % 1000) * 1000000L;
	if (dl.tv_nsec >= 1000000000L)
		dl.tv_sec++, dl.tv_nsec -= 1000000000L;
	pthread_mutex_lock(&h->mu);
	struct chan *c = n->chan;
	for (unsigned j = 0; j < n->nparties && rc == 0; j++) {
		if (j == n->party)
			continue;
		while (!c->aborted && !c->head[j] && rc == 0)
			if (pthread_cond_timedwait(&c->cv, &h->mu, &dl) == ETIMEDOUT && !c->head[j])
				rc = ERR_TIMEOUT;
		if (c->aborted) {
			rc = ERR_ABORTED;
			break;
		}
		if (rc != 0) {
			char why[96];
			snprintf(why, sizeof why, "no payload from party %u within %u ms", j, n->timeout_ms);
			chan_abort(c, why);
			break;
		}
		struct msg *m = c->head[j];
		if (m->len != recv_len[j]) {
			char why[96];
			snprintf(why, sizeof why, "party %u sent %zu bytes, expected %zu", j, m->len, recv_len[j]);
			chan_abort(c, why);
			rc = ERR_PROTOCOL;
			break;
		}
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
	char why[128];
	snprintf(why, sizeof why, "%s", c->why);
	pthread_mutex_unlock(&h->mu);
	if (rc == 0) {
		n->round++;
		return 0;
	}
	LOG_WARN("mnet.round_failed", LOG_I("party", n->party), LOG_I("round", n->round),
		 LOG_S("error", err_title(rc)), LOG_S("why", why));
	/* Whatever ended the round here ends it everywhere: peers that already moved on
	 * must not wait out their timeout for a round this party will never send. */
	net_abort(n);
	return rc;
}

/* Stops this generation here and tells every peer, over fresh short-lived connections
 * (the engine thread may be using the round connections right now). */
static void net_abort(void *impl)
{
	struct mnet_net *n = impl;
	pthread_mutex_lock(&n->hub->mu);
	chan_abort(n->chan, "this party aborted the generation");
	bool notified = n->notified;
	n->notified = true;
	pthread_mutex_unlock(&n->hub->mu);
	if (notified)
		return;
	struct httpc *clients[MPC_MAX_PARTIES] = {0};
	struct httpc_multi *multi = NULL;
	bool ok = httpc_multi_new(&multi) == 0;
	for (unsigned j = 0; ok && j < n->nparties; j++)
		if (j != n->party && peer_client(n, j, 1000, &clients[j]) != 0)
			ok = false;
	if (ok)
		net_send(n, NULL, NULL, MNET_FLAG_ABORT, clients, multi);
	for (unsigned j = 0; j < n->nparties; j++)
		httpc_free(clients[j]);
	httpc_multi_free(multi);
}

static void net_free(void *impl)
{
	struct mnet_net *n = impl;
	if (!n)
		return;
	if (n->chan) {
		pthread_mutex_lock(&n->hub->mu);
		chan_unlink(n->hub, n->chan);
		chan_free(n->hub, n->chan);
		pthread_mutex_unlock(&n->hub->mu);
	}
	for (unsigned j = 0; j < MPC_MAX_PARTIES; j++) {
		httpc_free(n->peer[j]);
		buf_free(&n->out[j]);
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
	    !o->cert_file || !o->key_file)
		return ERR_INVALID;
	struct mnet_net *n = calloc(1, sizeof *n);
	if (!n)
		return ERR_NOMEM;
	n->hub = hub;
	n->party = party;
	n->nparties = nparties;
	n->o = *o;
	n->timeout_ms = o->timeout_ms ? o->timeout_ms : 5000;
	n->generation = generation;
	memcpy(n->session, session, MNET_SESSION_LEN);
	memcpy(n->peers, peers, nparties * sizeof *peers);
	int rc = httpc_multi_new(&n->multi);
	for (unsigned j = 0; j < nparties && rc == 0; j++) {
		buf_init(&n->out[j], MNET_HDR_LEN + MNET_MAX_DATA, true);
		if (j != party)
			rc = peer_client(n, j, n->timeout_ms, &n->peer[j]);
	}
	if (rc != 0)
		goto fail;

	pthread_mutex_lock(&hub->mu);
	struct chan *c = chan_find(hub, session, generation, party);
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
			/* Payloads that arrived before we joined must have come from the
			 * registered certificates, else the generation cannot be trusted. */
			for (unsigned j = 0; j < nparties; j++) {
				if (c->fp_set[j] && sodium_memcmp(c->fp[j], peers[j].fingerprint, 32) != 0)
					chan_abort(c, "an early payload came from an unexpected certificate");
				memcpy(c->fp[j], peers[j].fingerprint, 32);
				c->fp_set[j] = j != party;
			}
			for (unsigned j = nparties; j < MPC_MAX_PARTIES; j++)
				if (c->head[j] || c->fp_set[j])
					chan_abort(c, "an early payload named a sender outside the generation");
			n->chan = c;
		}
	}
	pthread_mutex_unlock(&hub->mu);
	if (rc != 0)
		goto fail;
	rc = mpc_net_new(&mnet_ops, n, party, nparties, out);
	return rc; /* on failure mpc_net_new has freed n through net_free */
fail:
	net_free(n);
	return rc;
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
