/* mpc transport: the counting wrapper every implementation sits behind, the in-process
 * hub (one thread per party) and the fault-injecting wrapper of the malicious tests.
 *
 * The hub keeps one mailbox per (sender, receiver) pair and round parity. A party
 * writes its outgoing messages into the mailboxes of the current parity, meets the
 * others at a barrier, then reads what was sent to it. Double buffering by parity
 * means one barrier per round suffices: a party can only write the same parity again
 * two rounds later, after the next barrier, which every party passes only once it
 * has finished reading. A message that goes to every peer alike (what the engine
 * mostly sends) is copied once, into the sender's own box, which the others read.
 * An abort (or a timeout) wakes every waiter for good. */
#include <errno.h>
#include <pthread.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include <sodium.h>

#include "err/err.h"
#include "mpc/mpc.h"

struct mpc_net {
	const struct mpc_net_ops *ops;
	void *impl;
	unsigned party, n;
	struct mpc_net_stats st;
	/* fault wrapper state (only when ops == &faulty_ops) */
};

int mpc_net_new(const struct mpc_net_ops *ops, void *impl, unsigned party, unsigned nparties,
		struct mpc_net **out)
{
	*out = NULL;
	if (!ops || !ops->exchange || nparties < 2 || nparties > MPC_MAX_PARTIES ||
	    party >= nparties) {
		if (ops && ops->free)
			ops->free(impl);
		return ERR_INVALID;
	}
	struct mpc_net *net = calloc(1, sizeof *net);
	if (!net) {
		if (ops->free)
			ops->free(impl);
		return ERR_NOMEM;
	}
	net->ops = ops;
	net->impl = impl;
	net->party = party;
	net->n = nparties;
	*out = net;
	return 0;
}

void mpc_net_free(struct mpc_net *net)
{
	if (!net)
		return;
	if (net->ops->free)
		net->ops->free(net->impl);
	free(net);
}

unsigned mpc_net_party(const struct mpc_net *net) { return net->party; }
unsigned mpc_net_nparties(const struct mpc_net *net) { return net->n; }

int mpc_net_exchange(struct mpc_net *net, const uint8_t *const send[], const size_t send_len[],
		     uint8_t *const recv[], const size_t recv_len[])
{
	int rc = net->ops->exchange(net->impl, send, send_len, recv, recv_len);
	if (rc != 0)
		return rc;
	net->st.rounds++;
	for (unsigned j = 0; j < net->n; j++) {
		if (j == net->party)
			continue;
		net->st.bytes_sent += send_len[j];
		net->st.bytes_recv += recv_len[j];
	}
	return 0;
}

void mpc_net_abort(struct mpc_net *net)
{
	if (net && net->ops->abort)
		net->ops->abort(net->impl);
}

void mpc_net_get_stats(const struct mpc_net *net, struct mpc_net_stats *st) { *st = net->st; }

/* ---------------------------------------------------------------- in-process hub */

struct mbox {
	uint8_t *buf;
	size_t len, cap;
	bool shared; /* the message is the sender's broadcast copy (its own box) */
};

struct mpc_hub {
	unsigned n;
	unsigned timeout_ms;
	pthread_mutex_t mu;
	pthread_cond_t cv;
	unsigned arrived;
	uint64_t generation;
	int aborted; /* 0, or the error every waiter returns */
	struct mbox box[2][MPC_MAX_PARTIES][MPC_MAX_PARTIES]; /* [parity][from][to] */
};

struct local_net {
	struct mpc_hub *hub;
	unsigned party;
	uint64_t round;
};

int mpc_hub_new(unsigned nparties, unsigned timeout_ms, struct mpc_hub **out)
{
	*out = NULL;
	if (nparties < 2 || nparties > MPC_MAX_PARTIES)
		return ERR_INVALID;
	struct mpc_hub *h = calloc(1, sizeof *h);
	if (!h)
		return ERR_NOMEM;
	h->n = nparties;
	h->timeout_ms = timeout_ms ? timeout_ms : 120000;
	pthread_condattr_t ca;
	pthread_condattr_init(&ca);
	pthread_condattr_setclock(&ca, CLOCK_MONOTONIC);
	if (pthread_mutex_init(&h->mu, NULL) != 0 || pthread_cond_init(&h->cv, &ca) != 0) {
		pthread_condattr_destroy(&ca);
		free(h);
		return ERR_INTERNAL;
	}
	pthread_condattr_destroy(&ca);
	*out = h;
	return 0;
}

void mpc_hub_free(struct mpc_hub *h)
{
	if (!h)
		return;
	for (int p = 0; p < 2; p++)
		for (unsigned i = 0; i < h->n; i++)
			for (unsigned j = 0; j < h->n; j++) {
				struct mbox *b = &h->box[p][i][j];
				if (b->buf) {
					/* Mailboxes carry shares: wipe before freeing. */
					sodium_memzero(b->buf, b->cap);
					free(b->buf);
				}
			}
	pthread_mutex_destroy(&h->mu);
	pthread_cond_destroy(&h->cv);
	free(h);
}

static void hub_abort_locked(struct mpc_hub *h, int code)
{
	if (!h->aborted)
		h->aborted = code;
	pthread_cond_broadcast(&h->cv);
}

/* Barrier with abort and timeout; called with h->mu held. */
static int hub_barrier_locked(struct mpc_hub *h)
{
	if (h->aborted)
		return ERR_ABORTED;
	uint64_t gen = h->generation;
	if (++h->arrived == h->n) {
		h->arrived = 0;
		h->generation++;
		pthread_cond_broadcast(&h->cv);
		return 0;
	}
	struct timespec dl;
	clock_gettime(CLOCK_MONOTONIC, &dl);
	dl.tv_sec += h->timeout_ms / 1000;
	dl.tv_nsec += (long)(h->timeout_ms % 1000) * 1000000L;
	if (dl.tv_nsec >= 1000000000L) {
		dl.tv_sec++;
		dl.tv_nsec -= 1000000000L;
	}
	while (h->generation == gen && !h->aborted) {
		int rc = pthread_cond_timedwait(&h->cv, &h->mu, &dl);
		if (rc == ETIMEDOUT && h->generation == gen) {
			hub_abort_locked(h, ERR_TIMEOUT);
			return ERR_TIMEOUT;
		}
	}
	if (h->generation == gen)
		return ERR_ABORTED;
	return 0;
}

static int local_exchange(void *impl, const uint8_t *const send[], const size_t send_len[],
			  uint8_t *const recv[], const size_t recv_len[])
{
	struct local_net *ln = impl;
	struct mpc_hub *h = ln->hub;
	unsigned me = ln->party;
	int par = (int)(ln->round & 1);
	int rc = 0;

	/* Writing our own row of mailboxes needs no lock: nobody reads this parity
	 * before the barrier below, and nobody else writes our row. After an abort the
	 * previous barrier may not have completed, so a late party must not write. */
	pthread_mutex_lock(&h->mu);
	int dead = h->aborted;
	pthread_mutex_unlock(&h->mu);
	if (dead)
		return ERR_ABORTED;
	unsigned first = me == 0 ? 1 : 0;
	bool bcast = true;
	for (unsigned j = first + 1; j < h->n; j++)
		if (j != me && (send[j] != send[first] || send_len[j] != send_len[first]))
			bcast = false;
	for (unsigned j = 0; j < h->n; j++) {
		if (j == me && !bcast)
			continue;
		struct mbox *b = &h->box[par][me][j];
		if (bcast && j != me) { /* readers take the copy in box[me][me] */
			b->len = send_len[j];
			b->shared = true;
			continue;
		}
		b->shared = false;
		size_t want = j == me ? send_len[first] : send_len[j];
		const uint8_t *src = j == me ? send[first] : send[j];
		if (want > b->cap) {
			uint8_t *nb = malloc(want);
			if (!nb) {
				rc = ERR_NOMEM;
				break;
			}
			if (b->buf) {
				sodium_memzero(b->buf, b->cap);
				free(b->buf);
			}
			b->buf = nb;
			b->cap = want;
		}
		if (want)
			memcpy(b->buf, src, want);
		b->len = want;
	}
	pthread_mutex_lock(&h->mu);
	if (rc != 0)
		hub_abort_locked(h, rc);
	else
		rc = hub_barrier_locked(h);
	pthread_mutex_unlock(&h->mu);
	if (rc != 0)
		return rc;
	for (unsigned j = 0; j < h->n; j++) {
		if (j == me)
			continue;
		const struct mbox *b = &h->box[par][j][me];
		if (b->len != recv_len[j]) {
			rc = ERR_PROTOCOL;
			break;
		}
		if (b->len)
			memcpy(recv[j], b->shared ? h->box[par][j][j].buf : b->buf, b->len);
	}
	if (rc != 0) {
		pthread_mutex_lock(&h->mu);
		hub_abort_locked(h, rc);
		pthread_mutex_unlock(&h->mu);
		return rc;
	}
	ln->round++;
	return 0;
}

static void local_abort(void *impl)
{
	struct local_net *ln = impl;
	pthread_mutex_lock(&ln->hub->mu);
	hub_abort_locked(ln->hub, ERR_ABORTED);
	pthread_mutex_unlock(&ln->hub->mu);
}

static void local_free(void *impl) { free(impl); }

static const struct mpc_net_ops local_ops = {
	.exchange = local_exchange, .abort = local_abort, .free = local_free};

int mpc_net_local_new(struct mpc_hub *hub, unsigned party, struct mpc_net **out)
{
	*out = NULL;
	if (!hub || party >= hub->n)
		return ERR_INVALID;
	struct local_net *ln = calloc(1, sizeof *ln);
	if (!ln)
		return ERR_NOMEM;
	ln->hub = hub;
	ln->party = party;
	return mpc_net_new(&local_ops, ln, party, hub->n, out);
}

/* ---------------------------------------------------------------- fault injection */

struct faulty_net {
	struct mpc_net *inner;
	uint64_t round, at_round, bit;
	unsigned to;
	bool fired;
	uint8_t *scratch;
	size_t scratch_cap;
};

static int faulty_exchange(void *impl, const uint8_t *const send[], const size_t send_len[],
			   uint8_t *const recv[], const size_t recv_len[])
{
	struct faulty_net *fn = impl;
	const uint8_t *snd[MPC_MAX_PARTIES];
	unsigned n = mpc_net_nparties(fn->inner);
	memcpy(snd, send, n * sizeof snd[0]);
	if (fn->round == fn->at_round && fn->to != mpc_net_party(fn->inner) && fn->to < n &&
	    send_len[fn->to] > 0) {
		size_t len = send_len[fn->to];
		if (len > fn->scratch_cap) {
			uint8_t *nb = realloc(fn->scratch, len);
			if (!nb)
				return ERR_NOMEM;
			fn->scratch = nb;
			fn->scratch_cap = len;
		}
		memcpy(fn->scratch, send[fn->to], len);
		uint64_t b = fn->bit % ((uint64_t)len * 8);
		fn->scratch[b / 8] ^= (uint8_t)(1u << (b % 8));
		snd[fn->to] = fn->scratch;
		fn->fired = true;
	}
	fn->round++;
	return mpc_net_exchange(fn->inner, snd, send_len, recv, recv_len);
}

static void faulty_abort(void *impl)
{
	struct faulty_net *fn = impl;
	mpc_net_abort(fn->inner);
}

static void faulty_free(void *impl)
{
	struct faulty_net *fn = impl;
	mpc_net_free(fn->inner);
	free(fn->scratch);
	free(fn);
}

static const struct mpc_net_ops faulty_ops = {
	.exchange = faulty_exchange, .abort = faulty_abort, .free = faulty_free};

int mpc_net_faulty_new(struct mpc_net *inner, uint64_t round, unsigned to, uint64_t bit,
		       struct mpc_net **out)
{
	*out = NULL;
	if (!inner)
		return ERR_INVALID;
	struct faulty_net *fn = calloc(1, sizeof *fn);
	if (!fn) {
		mpc_net_free(inner);
		return ERR_NOMEM;
	}
	fn->inner = inner;
	fn->at_round = round;
	fn->to = to;
	fn->bit = bit;
	return mpc_net_new(&faulty_ops, fn, mpc_net_party(inner), mpc_net_nparties(inner), out);
}

bool mpc_net_fault_fired(const struct mpc_net *net)
{
	if (!net || net->ops != &faulty_ops)
		return false;
	return ((const struct faulty_net *)net->impl)->fired;
}
