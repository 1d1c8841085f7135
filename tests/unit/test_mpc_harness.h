/* test_mpc_harness: runs one MPC program on N in-process parties (one thread each,
 * one in-process hub, one in-process dealer), optionally with a fault-injecting
 * transport for one party, or with a rushing adversary: a transport in which one
 * party sees what every honest party sends it in a round before it chooses its own
 * message for that round (the strongest network position a malicious party can
 * have). Shared by the test_mpc* suites; header-only so each suite stays one file
 * plus this. */
#ifndef MIMIR_TEST_MPC_HARNESS_H
#define MIMIR_TEST_MPC_HARNESS_H

#include <errno.h>
#include <pthread.h>
#include <stdint.h>
#include <time.h>
#include <stdlib.h>
#include <string.h>

#include "err/err.h"
#include "mpc/mpc.h"

/* The rushing adversary's hook: called in every round of party `me` with what each
 * honest party j sends it (in[j], in_len[j]; in[me] is NULL) and its own outgoing
 * message out (the engine broadcasts, so one buffer stands for every peer), which it
 * may change in place. The adversary's engine then sees the changed message as its
 * own (its view stays consistent, as a real cheater's would). */
typedef void (*mpch_rush_fn)(void *ctx, uint64_t round, unsigned n, unsigned me,
			     const uint8_t *const in[], const size_t in_len[], uint8_t *out,
			     size_t out_len);

struct mpch_party;
typedef int (*mpch_fn)(struct mpch_party *pp, void *arg);

struct mpch_opts {
	struct mpc_config cfg;
	struct mpc_dealer *dealer; /* NULL: a fresh one per run */
	const struct mpc_prep_source *src; /* NULL: the dealer's */
	int fault_party;           /* -1: no fault */
	uint64_t fault_round;
	unsigned fault_to;
	uint64_t fault_bit;
	int rush_party;            /* the rushing adversary (with rush != NULL) */
	mpch_rush_fn rush;
	void *rush_ctx;
};

struct mpch_party {
	unsigned id, n;
	struct mpc *mpc;
	struct mpc_net *net;
	mpch_fn fn;
	void *arg;
	int rc;
	bool fault_fired;
	struct mpc_stats st;
	const char *failed;
};


/* ---------------------------------------------------------------- rushing hub */

struct mpch_rbox {
	uint8_t *buf;
	size_t len, cap;
};

struct mpch_rhub {
	unsigned n, adv;
	mpch_rush_fn rush;
	void *ctx;
	pthread_mutex_t mu;
	pthread_cond_t cv;
	uint64_t gen;
	unsigned arrived, deposited[2];
	int aborted;
	struct mpch_rbox box[2][MPC_MAX_PARTIES][MPC_MAX_PARTIES]; /* [parity][from][to] */
};

struct mpch_rnet {
	struct mpch_rhub *h;
	unsigned me;
	uint64_t round;
};

static int mpch_rwait(struct mpch_rhub *h, bool (*done)(struct mpch_rhub *, void *), void *arg)
{
	struct timespec dl;
	clock_gettime(CLOCK_REALTIME, &dl);
	dl.tv_sec += 20;
	while (!h->aborted && !done(h, arg))
		if (pthread_cond_timedwait(&h->cv, &h->mu, &dl) == ETIMEDOUT) {
			h->aborted = ERR_TIMEOUT;
			pthread_cond_broadcast(&h->cv);
		}
	return done(h, arg) ? 0 : ERR_ABORTED; /* a round that completed still counts */
}

static bool mpch_honest_in(struct mpch_rhub *h, void *arg)
{
	return h->deposited[*(int *)arg] == h->n - 1;
}

static bool mpch_gen_moved(struct mpch_rhub *h, void *arg)
{
	return h->gen != *(uint64_t *)arg;
}

static int mpch_rput(struct mpch_rbox *b, const uint8_t *msg, size_t len)
{
	if (len > b->cap) {
		uint8_t *nb = realloc(b->buf, len);
		if (!nb)
			return ERR_NOMEM;
		b->buf = nb;
		b->cap = len;
	}
	if (len)
		memcpy(b->buf, msg, len);
	b->len = len;
	return 0;
}

static int mpch_rexchange(void *impl, const uint8_t *const send[], const size_t send_len[],
			  uint8_t *const recv[], const size_t recv_len[])
{
	struct mpch_rnet *rn = impl;
	struct mpch_rhub *h = rn->h;
	unsigned me = rn->me;
	int par = (int)(rn->round & 1), rc = 0;
	uint8_t *own = NULL;
	pthread_mutex_lock(&h->mu);
	if (h->aborted) {
		rc = ERR_ABORTED;
		goto out;
	}
	if (me == h->adv) {
		/* rushing: wait for every honest message of this round, then choose ours */
		const uint8_t *in[MPC_MAX_PARTIES] = {0};
		size_t in_len[MPC_MAX_PARTIES] = {0}, len = 0;
		if ((rc = mpch_rwait(h, mpch_honest_in, &par)) != 0)
			goto out;
		for (unsigned j = 0; j < h->n; j++) {
			if (j == me)
				continue;
			in[j] = h->box[par][j][me].buf;
			in_len[j] = h->box[par][j][me].len;
			len = send_len[j];
		}
		own = malloc(len ? len : 1);
		if (!own) {
			rc = ERR_NOMEM;
			goto out;
		}
		for (unsigned j = 0; j < h->n; j++)
			if (j != me && len)
				memcpy(own, send[j], len);
		h->rush(h->ctx, rn->round, h->n, me, in, in_len, own, len);
		/* the adversary's own engine believes what it sent: the engine passes its
		 * own slot of the round's buffer as recv[me] (ignored by real transports) */
		if (recv[me] && recv_len[me] == len && len)
			memcpy(recv[me], own, len);
	}
	for (unsigned j = 0; j < h->n && rc == 0; j++)
		if (j != me)
			rc = mpch_rput(&h->box[par][me][j], own ? own : send[j], send_len[j]);
	if (rc != 0)
		goto out;
	if (me != h->adv) {
		h->deposited[par]++;
		pthread_cond_broadcast(&h->cv);
	}
	uint64_t gen = h->gen;
	if (++h->arrived == h->n) {
		h->arrived = 0;
		h->deposited[par] = 0;
		h->gen++;
		pthread_cond_broadcast(&h->cv);
	} else if ((rc = mpch_rwait(h, mpch_gen_moved, &gen)) != 0) {
		goto out;
	}
	for (unsigned j = 0; j < h->n; j++) {
		if (j == me)
			continue;
		const struct mpch_rbox *b = &h->box[par][j][me];
		if (b->len != recv_len[j]) {
			rc = ERR_PROTOCOL;
			h->aborted = rc;
			pthread_cond_broadcast(&h->cv);
			goto out;
		}
		if (b->len)
			memcpy(recv[j], b->buf, b->len);
	}
	rn->round++;
out:
	pthread_mutex_unlock(&h->mu);
	free(own);
	return rc;
}

static void mpch_rabort(void *impl)
{
	struct mpch_rnet *rn = impl;
	pthread_mutex_lock(&rn->h->mu);
	if (!rn->h->aborted)
		rn->h->aborted = ERR_ABORTED;
	pthread_cond_broadcast(&rn->h->cv);
	pthread_mutex_unlock(&rn->h->mu);
}

static void mpch_rfree(void *impl) { free(impl); }

static const struct mpc_net_ops mpch_rops = {
	.exchange = mpch_rexchange, .abort = mpch_rabort, .free = mpch_rfree};

static void mpch_rhub_free(struct mpch_rhub *h)
{
	if (!h)
		return;
	for (int p = 0; p < 2; p++)
		for (unsigned i = 0; i < MPC_MAX_PARTIES; i++)
			for (unsigned j = 0; j < MPC_MAX_PARTIES; j++)
				free(h->box[p][i][j].buf);
	pthread_mutex_destroy(&h->mu);
	pthread_cond_destroy(&h->cv);
	free(h);
}

static void *mpch_thread(void *a)
{
	struct mpch_party *pp = a;
	pp->rc = pp->fn(pp, pp->arg);
	mpc_get_stats(pp->mpc, &pp->st);
	pp->failed = mpc_failed_check(pp->mpc);
	pp->fault_fired = mpc_net_fault_fired(pp->net);
	return NULL;
}

/* Runs fn on n parties; party results in pp[0..n-1]. Returns 0 when the harness itself
 * worked (the parties' own results are in pp[i].rc). */
static inline int mpch_run(unsigned n, const struct mpch_opts *o, mpch_fn fn, void *arg,
			   struct mpch_party pp[])
{
	struct mpch_opts def = {.fault_party = -1};
	if (!o)
		o = &def;
	struct mpc_hub *hub = NULL;
	struct mpch_rhub *rh = NULL;
	struct mpc_dealer *dealer = o->dealer;
	memset(pp, 0, n * sizeof *pp);
	int rc = mpc_hub_new(n, 20000, &hub);
	if (rc != 0)
		return rc;
	if (o->rush) {
		if (!(rh = calloc(1, sizeof *rh))) {
			rc = ERR_NOMEM;
			goto out;
		}
		rh->n = n;
		rh->adv = (unsigned)o->rush_party;
		rh->rush = o->rush;
		rh->ctx = o->rush_ctx;
		pthread_mutex_init(&rh->mu, NULL);
		pthread_cond_init(&rh->cv, NULL);
	}
	if (!dealer && (rc = mpc_dealer_new(n, &dealer)) != 0)
		goto out;
	struct mpc_prep_source src = o->src ? *o->src : mpc_dealer_source(dealer);
	for (unsigned i = 0; i < n; i++) {
		uint8_t seed[MPC_SEED_BYTES];
		pp[i].id = i;
		pp[i].n = n;
		pp[i].fn = fn;
		pp[i].arg = arg;
		if (rh) {
			struct mpch_rnet *rn = calloc(1, sizeof *rn);
			if (!rn) {
				rc = ERR_NOMEM;
				goto out;
			}
			rn->h = rh;
			rn->me = i;
			if ((rc = mpc_net_new(&mpch_rops, rn, i, n, &pp[i].net)) != 0)
				goto out;
		} else if ((rc = mpc_net_local_new(hub, i, &pp[i].net)) != 0) {
			goto out;
		}
		if (o->fault_party == (int)i &&
		    (rc = mpc_net_faulty_new(pp[i].net, o->fault_round, o->fault_to, o->fault_bit,
					     &pp[i].net)) != 0)
			goto out;
		mpc_dealer_party_seed(dealer, i, seed);
		if ((rc = mpc_new(pp[i].net, seed, &src, &o->cfg, &pp[i].mpc)) != 0)
			goto out;
	}
	pthread_t th[MPC_MAX_PARTIES];
	for (unsigned i = 0; i < n; i++)
		pthread_create(&th[i], NULL, mpch_thread, &pp[i]);
	for (unsigned i = 0; i < n; i++)
		pthread_join(th[i], NULL);
out:
	for (unsigned i = 0; i < n; i++) {
		mpc_free(pp[i].mpc);
		mpc_net_free(pp[i].net);
		pp[i].mpc = NULL;
		pp[i].net = NULL;
	}
	if (!o->dealer)
		mpc_dealer_free(dealer);
	mpc_hub_free(hub);
	mpch_rhub_free(rh);
	return rc;
}

/* xorshift64*, for reproducible test data */
static inline uint64_t mpch_rand(uint64_t *s)
{
	*s ^= *s >> 12;
	*s ^= *s << 25;
	*s ^= *s >> 27;
	return *s * 0x2545F4914F6CDD1DULL;
}

#endif
