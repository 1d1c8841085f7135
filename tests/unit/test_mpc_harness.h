/* test_mpc_harness: runs one MPC program on N in-process parties (one thread each,
 * one in-process hub, one in-process dealer), optionally with a fault-injecting
 * transport for one party. Shared by the test_mpc* suites; header-only so each suite
 * stays one file plus this. */
#ifndef MIMIR_TEST_MPC_HARNESS_H
#define MIMIR_TEST_MPC_HARNESS_H

#include <pthread.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "mpc/mpc.h"

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
	struct mpc_dealer *dealer = o->dealer;
	memset(pp, 0, n * sizeof *pp);
	int rc = mpc_hub_new(n, 20000, &hub);
	if (rc != 0)
		return rc;
	if (!dealer && (rc = mpc_dealer_new(n, &dealer)) != 0)
		goto out;
	struct mpc_prep_source src = o->src ? *o->src : mpc_dealer_source(dealer);
	for (unsigned i = 0; i < n; i++) {
		uint8_t seed[MPC_SEED_BYTES];
		pp[i].id = i;
		pp[i].n = n;
		pp[i].fn = fn;
		pp[i].arg = arg;
		if ((rc = mpc_net_local_new(hub, i, &pp[i].net)) != 0)
			goto out;
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
