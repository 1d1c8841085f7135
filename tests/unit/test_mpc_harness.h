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
#include <malloc.h>
#include <math.h>
#include <pthread.h>
#include <stdio.h>
#include <stdint.h>
#include <time.h>
#include <stdlib.h>
#include <string.h>

#include "err/err.h"
#include "mpc/mpc.h"
#include "testutil.h"

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
	/* Test speed only: triple refills use buffers of tens of MB, which glibc gives back
	 * to the kernel on free (and the party threads' arenas madvise away), so every
	 * refill would fault its pages in again. Keep freed memory in the process. */
	mallopt(M_MMAP_THRESHOLD, 64 << 20);
	mallopt(M_TRIM_THRESHOLD, 1 << 30);
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

/* ---------------------------------------------------------------- approximations */

/* The approximations against double precision, shared by the test_mpc_approx*,
 * test_mpc_recip and test_mpc_silu suites: one program (party 0 inputs x, the
 * triples are made ahead so that the rounds counted are the operation's own, one or
 * two operations on one batch, then a reveal), input grids, and the checks, which
 * hold every output to the error bound docs/PROTOCOL.md states, and every output for
 * an input outside the domain to exactly the saturated value (exp: to its bound at
 * the clamped input, as before). */
enum mpch_op { MPCH_EXP, MPCH_RECIP, MPCH_RSQRT, MPCH_SILU, MPCH_EXPNEG };

struct mpch_approx {
	enum mpch_op op[2];
	unsigned nops; /* 1, or 2 side by side on one batch */
	unsigned f;
	size_t n;
	double *xd; /* the inputs as computed on (decoded after encoding) */
	ring64_t *x;
	ring64_t *out[MPC_MAX_PARTIES]; /* nops * n each */
	uint64_t rounds[MPC_MAX_PARTIES], bytes[MPC_MAX_PARTIES];
};

static inline const char *mpch_op_name(enum mpch_op op)
{
	static const char *const nm[] = {"exp", "recip", "rsqrt", "silu", "exp_neg"};
	return nm[op];
}

/* Triples per element, with a margin (docs/PROTOCOL.md has the exact counts). */
static inline size_t mpch_op_triples(enum mpch_op op)
{
	return op == MPCH_EXP ? 160 : op == MPCH_SILU || op == MPCH_EXPNEG ? 80 : 600;
}

/* Rounds at f: what docs/PROTOCOL.md states. */
static inline unsigned mpch_op_rounds(enum mpch_op op, unsigned f)
{
	switch (op) {
	case MPCH_EXP:
		return f <= 14 ? 11 : 12;
	case MPCH_RECIP:
	case MPCH_RSQRT:
		return f <= 17 ? 12 : 13;
	default:
		return 6;
	}
}

static inline int mpch_queue(struct mpc_batch *b, enum mpch_op op, mpc_share *y, const mpc_share *x,
			     size_t n)
{
	switch (op) {
	case MPCH_EXP:
		return mpc_batch_exp(b, y, x, n);
	case MPCH_RECIP:
		return mpc_batch_recip(b, y, x, n);
	case MPCH_RSQRT:
		return mpc_batch_rsqrt(b, y, x, n);
	case MPCH_EXPNEG:
		return mpc_batch_exp_neg(b, y, x, n);
	default:
		return mpc_batch_silu(b, y, x, n);
	}
}

static inline int mpch_approx_prog(struct mpch_party *pp, void *arg)
{
	struct mpch_approx *g = arg;
	struct mpc *p = pp->mpc;
	const size_t n = g->n;
	mpc_share *x = calloc(n ? n : 1, sizeof *x), *y = calloc(2 * n + 1, sizeof *y);
	struct mpc_stats a, b;
	struct mpc_batch *bt = NULL;
	size_t tri = 8;
	int rc = x && y ? 0 : ERR_NOMEM;
	for (unsigned k = 0; k < g->nops; k++)
		tri += mpch_op_triples(g->op[k]) * n;
	if (rc == 0)
		rc = mpc_input(p, 0, pp->id == 0 ? g->x : NULL, x, n);
	if (rc == 0)
		rc = mpc_prefill(p, MPC_PREP_TRIPLE, 0, tri);
	if (rc == 0) /* check what the prefill opened, so that no check falls inside */
		rc = mpc_check(p);
	mpc_get_stats(p, &a);
	if (rc == 0)
		rc = mpc_batch_new(p, &bt);
	for (unsigned k = 0; rc == 0 && k < g->nops; k++)
		rc = mpch_queue(bt, g->op[k], y + k * n, x, n);
	if (rc == 0)
		rc = mpc_batch_run(bt);
	mpc_batch_free(bt);
	mpc_get_stats(p, &b);
	g->rounds[pp->id] = b.rounds - a.rounds;
	g->bytes[pp->id] = b.bytes_sent - a.bytes_sent;
	if (rc == 0)
		rc = mpc_reveal(p, g->out[pp->id], y, g->nops * n);
	free(x);
	free(y);
	return rc;
}

static inline void mpch_domain(enum mpch_op op, double *lo, double *hi)
{
	switch (op) {
	case MPCH_EXP:
		*lo = MPC_EXP_LO, *hi = MPC_EXP_HI;
		break;
	case MPCH_RECIP:
		*lo = MPC_RECIP_LO, *hi = MPC_RECIP_HI;
		break;
	case MPCH_RSQRT:
		*lo = MPC_RSQRT_LO, *hi = MPC_RSQRT_HI;
		break;
	case MPCH_EXPNEG:
		*lo = MPC_EXPNEG_LO, *hi = 0;
		break;
	default:
		*lo = MPC_SILU_LO, *hi = MPC_SILU_HI;
	}
}

/* The grid for op at f, n points: the edges, one unit inside and outside them, a few
 * points far outside (for recip and rsqrt zero and negative values too); for recip
 * and rsqrt with pow2 every power of two of the domain (pow2 = 1) and its neighbours
 * one unit away too (pow2 = 3); then the rest of the domain in equal steps (in log
 * for recip and rsqrt) at random offsets. */
static inline void mpch_grid(struct mpch_approx *g, enum mpch_op op, unsigned f, size_t n,
			     unsigned pow2, uint64_t seed)
{
	double lo, hi;
	const double u = ldexp(1.0, -(int)f);
	const bool logs = op == MPCH_RECIP || op == MPCH_RSQRT;
	mpch_domain(op, &lo, &hi);
	g->f = f;
	g->n = n;
	g->xd = calloc(n, sizeof *g->xd);
	g->x = calloc(n, sizeof *g->x);
	for (unsigned i = 0; i < MPC_MAX_PARTIES; i++)
		g->out[i] = calloc(2 * n, sizeof *g->out[i]);
	ck_assert(g->xd && g->x && g->out[MPC_MAX_PARTIES - 1]);
	const double far = ldexp(1.0, 60 - (int)f); /* |x| < 2^61 units */
	const double extra[] = {lo, hi, lo + u, hi - u, lo - u, hi + u, 2 * lo - 2 * hi, 2 * hi - lo,
				far, -far, 0, u, -u, 1.0, -1.0, 0.5};
	size_t k = 0;
	for (size_t e = 0; e < sizeof extra / sizeof extra[0] && k < n; e++)
		g->xd[k++] = extra[e];
	/* Powers of two only for the positive (log-spaced) domains: log2 of a negative
	 * bound is NaN, and converting NaN to int is undefined. */
	const int e0 = logs ? (int)floor(log2(lo)) : 0, e1 = logs ? (int)ceil(log2(hi)) : -1;
	for (int e = e0; pow2 && logs && e <= e1 && k + pow2 <= n; e++) {
		double p2 = ldexp(1.0, e);
		g->xd[k++] = p2;
		if (pow2 == 3) {
			g->xd[k++] = p2 + u;
			g->xd[k++] = p2 - u;
		}
	}
	const size_t rest = n - k;
	for (size_t i = 0; k < n; i++, k++) {
		double t = ((double)i + (double)(mpch_rand(&seed) >> 11) * 0x1p-53) / (double)rest;
		g->xd[k] = logs ? exp(log(lo) + (log(hi) - log(lo)) * t) : lo + (hi - lo) * t;
	}
	for (size_t i = 0; i < n; i++) {
		ck_assert_int_eq(ring_fxp_encode(g->xd[i], f, &g->x[i], NULL), 0);
		g->xd[i] = ring_fxp_decode(g->x[i], f); /* the value actually computed on */
	}
}

static inline void mpch_grid_free(struct mpch_approx *g)
{
	free(g->xd);
	free(g->x);
	for (unsigned i = 0; i < MPC_MAX_PARTIES; i++)
		free(g->out[i]);
}

static inline double mpch_silu(double x) { return x / (1 + exp(-x)); }

/* exp_neg's bound at e^x (docs/PROTOCOL.md): the cubic's remainder, the truncations,
 * and for f > 20 the rounding of the cubic coefficient. */
static inline double mpch_expneg_bound(double ex, unsigned f)
{
	const unsigned K = 2 * f + 16 < 56 ? 2 * f + 16 : 56;
	return 1.2e-5 * ex + 3 * ldexp(1.0, -(int)f) + ldexp(1.0, 2 * (int)f - (int)K - 10);
}

/* Holds every output of op (the k-th of the batch) at one party to its bound or to
 * the exact saturated value; returns the worst error inside the domain as a fraction
 * of the bound. */
static inline double mpch_check(const struct mpch_approx *g, unsigned party, unsigned k)
{
	const enum mpch_op op = g->op[k];
	const unsigned f = g->f;
	const double u = ldexp(1.0, -(int)f);
	const ring64_t *out = g->out[party] + k * g->n;
	double lo, hi, worst = 0;
	mpch_domain(op, &lo, &hi);
	for (size_t i = 0; i < g->n; i++) {
		double x = g->xd[i], got = ring_fxp_decode(out[i], f), want, bound;
		bool below = x < lo, above = op == MPCH_EXP ? x > hi : x >= hi;
		if ((op == MPCH_RECIP || op == MPCH_RSQRT) && x < u)
			below = true; /* below the first representable point of the domain */
		if (op != MPCH_EXP && (below || above)) {
			ring64_t sat = 0;
			if (op == MPCH_SILU)
				sat = above ? g->x[i] : 0; /* the asymptotes */
			else if (op == MPCH_EXPNEG)
				sat = above ? (ring64_t)1 << f : 0; /* e^0, and e^LO < 2^-45 */
			else
				ring_fxp_encode(op == MPCH_RECIP ? 1 / (below ? lo : hi)
								 : 1 / sqrt(below ? lo : hi),
						f, &sat, NULL);
			ck_assert_msg(out[i] == sat, "%s party %u f=%u x=%.9g: %.9g, not the saturated %.9g",
				      mpch_op_name(op), party, f, x, got, ring_fxp_decode(sat, f));
			if (op == MPCH_SILU) /* and the asymptote is SiLU within 2.1e-6 */
				ck_assert(fabs(ring_fxp_decode(sat, f) - mpch_silu(x)) <= 2.1e-6 + u);
			if (op == MPCH_EXPNEG && below)
				ck_assert(exp(x) < ldexp(1.0, -45));
			continue;
		}
		switch (op) {
		case MPCH_EXP: {
			double c = above ? hi : below ? lo : x;
			want = exp(c);
			bound = (8 * want + 3) * u + 1.2e-5 * want;
			break;
		}
		case MPCH_RECIP:
			want = 1 / x;
			bound = 1.35e-5 * want + 4 * u;
			break;
		case MPCH_RSQRT:
			want = 1 / sqrt(x);
			bound = 4.5e-6 * want + 4 * u;
			break;
		case MPCH_EXPNEG:
			want = exp(x);
			bound = mpch_expneg_bound(want, f);
			break;
		default: {
			const unsigned K = 2 * f + 16 < 56 ? 2 * f + 16 : 56;
			want = mpch_silu(x);
			bound = 6e-6 + ldexp(1.0, 2 * (int)f - (int)K - 10) + 3 * u;
		}
		}
		double err = fabs(got - want);
		ck_assert_msg(err <= bound, "%s party %u f=%u x=%.9g got %.9g want %.9g err %g bound %g",
			      mpch_op_name(op), party, f, x, got, want, err, bound);
		if (err / bound > worst)
			worst = err / bound;
	}
	return worst;
}

/* Runs the grid g on n parties and checks everything: every party's rc, rounds (the
 * longest operation's), identical outputs, every bound. Prints the worst error. */
static inline void mpch_approx_run(unsigned n, struct mpch_approx *g, uint32_t prep_batch)
{
	struct mpch_party pp[MPC_MAX_PARTIES];
	struct mpch_opts o = {.fault_party = -1, .cfg = {.frac_bits = g->f, .prep_batch = prep_batch}};
	ck_assert_int_eq(mpch_run(n, &o, mpch_approx_prog, g, pp), 0);
	unsigned want = 0;
	for (unsigned k = 0; k < g->nops; k++)
		if (mpch_op_rounds(g->op[k], g->f) > want)
			want = mpch_op_rounds(g->op[k], g->f);
	double worst[2] = {0, 0};
	for (unsigned i = 0; i < n; i++) {
		ck_assert_int_eq(pp[i].rc, 0);
		ck_assert_uint_eq(g->rounds[i], want);
		ck_assert_mem_eq(g->out[i], g->out[0], g->nops * g->n * sizeof(ring64_t));
		for (unsigned k = 0; k < g->nops; k++) {
			double w = mpch_check(g, i, k);
			worst[k] = w > worst[k] ? w : worst[k];
		}
	}
	for (unsigned k = 0; k < g->nops; k++)
		fprintf(stderr, "%s N=%u f=%u: %zu points, %u rounds, worst error %.3f of the bound\n",
			mpch_op_name(g->op[k]), n, g->f, g->n, want, worst[k]);
}

#endif
