/* bench_mpc: the MPC engine's micro-benchmark. For N = 2, 3 and 5 in-process parties
 * (one thread each, in-process dealer) it times each operation the engine has, end to
 * end: dealer generation, triple sacrifice, the online rounds and the closing MAC
 * check, and prints rounds, bytes sent per party (party 0; the busiest is the same up
 * to the input owner) and the dealer's bytes. Loopback without latency: on a real
 * network add rounds x RTT. Usage: bench_mpc [scale [filter]] (scale < 1 shrinks the
 * sizes; filter runs only the operations whose name contains it, e.g. "matmul"). */
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "log/log.h"
#include "mpc/mpc.h"

enum op {
	OP_MUL,
	OP_MUL_FX,
	OP_TRUNC,
	OP_REVEAL,
	OP_INPUT,
	OP_FMAT,
	OP_LTZ,
	OP_ARGMAX,
	OP_EXP,
	OP_RECIP,
	OP_RSQRT,
	OP_SILU,
	OP_SOFTMAX,
	OP_EXPNEG,
	OP_PMAT,
};
static const char *op_name[] = {"multiply (Beaver, Z_2^64)", "fixed-point multiply",
				"truncation (f = 16)", "reveal (open + MAC check)",
				"input (one owner)", "fixed-mask matmul", "LTZ (x < 0)",
				"argmax (index + one-hot)", "exp (f = 16)", "reciprocal",
				"rsqrt", "SiLU", "softmax", "exp of x <= 0 (exp_neg)",
				"matmul (plain)"};

/* Preprocessing an approximation consumes, per element at f = 16 (docs/PROTOCOL.md):
 * triples, comparison masks, look-up masks, and truncation pairs by these amounts. */
struct apx_prep {
	size_t triples, cmps, luts;
	unsigned tm[3];
	size_t tn[3];
};
static const struct apx_prep apx_prep[] = {
    [OP_EXP] = {130, 3, 0, {16}, {4}},
    [OP_RECIP] = {420, 6, 0, {35, 27, 24}, {1, 1, 3}},
    [OP_RSQRT] = {480, 6, 0, {35, 28, 24}, {1, 1, 2}},
    [OP_SILU] = {66, 2, 1, {13, 16, 32}, {1, 1, 1}},
    [OP_EXPNEG] = {64, 2, 1, {13, 16, 32}, {1, 1, 1}},
    /* softmax, per element: a comparison of the tournament (30 triples), the exp of
     * x - max <= 0 (one LTZ: 35) and the product */
    [OP_SOFTMAX] = {66, 2, 1, {13, 16, 32}, {1, 2, 1}},
};

struct job {
	enum op op;
	size_t n;
	uint32_t m, rows, cols, uses; /* OP_FMAT, OP_PMAT: uses x (m x rows by rows x cols) */
	unsigned id, np;
	struct mpc *mpc;
	pthread_barrier_t *bar;
	double secs, prep_secs;
	struct mpc_stats st, prep;
	int rc;
};

static double now(void)
{
	struct timespec t;
	clock_gettime(CLOCK_MONOTONIC, &t);
	return (double)t.tv_sec + (double)t.tv_nsec * 1e-9;
}

static void *party(void *a)
{
	struct job *j = a;
	struct mpc *p = j->mpc;
	size_t n = j->n;
	mpc_share *x = calloc(n, sizeof *x), *y = calloc(n, sizeof *y), *z = calloc(n, sizeof *z);
	ring64_t *v = calloc(n, sizeof *v);
	struct mpc_stats a0, a1;
	struct mpc_fmat *fm = NULL;
	mpc_share *w = NULL, *oh = NULL;
	if (!x || !y || !z || !v) {
		j->rc = -1;
		goto out;
	}
	for (size_t i = 0; i < n; i++)
		v[i] = (ring64_t)((i * 2654435761u) % 200000) << 4; /* |x| < 2^22 */
	for (size_t i = 0; j->op == OP_LTZ && i < n; i += 2)
		v[i] = (ring64_t) - (int64_t)v[i]; /* both signs */
	for (size_t i = 0; j->op == OP_EXP && i < n; i++) /* across the domain [-32, 8] */
		v[i] = (ring64_t)((int64_t)(i % 40) - 32) << 16 | (ring64_t)(i * 40503u % 65536);
	for (size_t i = 0; (j->op == OP_RECIP || j->op == OP_RSQRT) && i < n; i++) /* [2^-16, 2^16] */
		v[i] = ((ring64_t)1 << (i % 32)) | (ring64_t)(i * 2654435761u % (1u << (i % 32)));
	for (size_t i = 0; j->op == OP_EXPNEG && i < n; i++) /* [-32, 0] */
		v[i] = (ring64_t)((int64_t)(i % 32) - 32) << 16 | (ring64_t)(i * 40503u % 65536);
	for (size_t i = 0; j->op == OP_SILU && i < n; i++) /* [-16, 16] */
		v[i] = (ring64_t)((int64_t)(i % 32) - 16) << 16 | (ring64_t)(i * 40503u % 65536);
	for (size_t i = 0; j->op == OP_SOFTMAX && i < n; i++) /* [-8, 8] */
		v[i] = (ring64_t)((int64_t)(i % 16) - 8) << 16 | (ring64_t)(i * 40503u % 65536);
	if (j->op == OP_ARGMAX && !(oh = calloc(n, sizeof *oh))) {
		j->rc = -1;
		goto out;
	}
	if (j->op != OP_INPUT) {
		if ((j->rc = mpc_input(p, 0, j->id == 0 ? v : NULL, x, n)) != 0 ||
		    (j->rc = mpc_input(p, j->np - 1, j->id == j->np - 1 ? v : NULL, y, n)) != 0 ||
		    (j->rc = mpc_check(p)) != 0)
			goto out;
	}
	/* preprocessing ahead of the operation: dealer requests and the triple sacrifice */
	if (j->op == OP_FMAT) {
		size_t nw = (size_t)j->rows * j->cols;
		if (!(w = calloc(nw, sizeof *w))) {
			j->rc = -1;
			goto out;
		}
		if ((j->rc = mpc_input(p, 0, j->id == 0 ? v : NULL, w, nw)) != 0)
			goto out;
	}
	pthread_barrier_wait(j->bar);
	mpc_get_stats(p, &a0);
	double t0 = now();
	if (j->op == OP_FMAT)
		j->rc = mpc_fmat_new(p, w, j->rows, j->cols, &fm);
	if (j->op == OP_MUL || j->op == OP_MUL_FX)
		j->rc = mpc_prefill(p, MPC_PREP_TRIPLE, 0, n);
	if (j->rc == 0 && (j->op == OP_TRUNC || j->op == OP_MUL_FX))
		j->rc = mpc_prefill(p, MPC_PREP_TRUNC, 16, n);
	if (j->rc == 0 && (j->op == OP_FMAT || j->op == OP_PMAT))
		j->rc = mpc_prefill(p, MPC_PREP_TRUNC, 16, (size_t)j->m * j->cols * j->uses);
	if (j->rc == 0 && j->op == OP_PMAT) /* the matrix triples, sacrificed */
		j->rc = mpc_matmul_prefill(p, j->m, j->rows, j->cols, j->uses);
	if (j->rc == 0 && j->op == OP_INPUT)
		j->rc = mpc_prefill(p, MPC_PREP_INPUT, 0, n);
	if (j->rc == 0 && j->op == OP_LTZ)
		j->rc = mpc_prefill(p, MPC_PREP_TRIPLE, 0, 29 * n);
	if (j->rc == 0 && j->op == OP_ARGMAX) /* 29 + 2 per comparison, 1 per one-hot node */
		j->rc = mpc_prefill(p, MPC_PREP_TRIPLE, 0, 32 * n);
	if (j->op == OP_EXP || j->op == OP_RECIP || j->op == OP_RSQRT || j->op == OP_SILU ||
	    j->op == OP_SOFTMAX || j->op == OP_EXPNEG) {
		/* softmax of rows x cols: the tournament (30 triples and a comparison mask per
		 * element), exp of every element with its product, a reciprocal per row */
		size_t rows = j->m, nr = j->op == OP_SOFTMAX ? rows : 0;
		const struct apx_prep *a = &apx_prep[j->op];
		size_t tri = a->triples * n + nr * apx_prep[OP_RECIP].triples;
		size_t cmp = a->cmps * n + nr * apx_prep[OP_RECIP].cmps;
		if (j->rc == 0)
			j->rc = mpc_prefill(p, MPC_PREP_TRIPLE, 0, tri);
		if (j->rc == 0)
			j->rc = mpc_prefill(p, MPC_PREP_CMP, 0, cmp);
		if (j->rc == 0 && a->luts)
			j->rc = mpc_prefill(p, MPC_PREP_LUT, 8, a->luts * n);
		for (int t = 0; t < 3 && j->rc == 0 && a->tm[t]; t++)
			j->rc = mpc_prefill(p, MPC_PREP_TRUNC, a->tm[t], a->tn[t] * n);
		for (int t = 0; t < 3 && j->rc == 0 && nr; t++)
			j->rc = mpc_prefill(p, MPC_PREP_TRUNC, apx_prep[OP_RECIP].tm[t],
					    apx_prep[OP_RECIP].tn[t] * nr);
	}
	if (j->rc == 0 && (j->op == OP_LTZ || j->op == OP_ARGMAX))
		j->rc = mpc_prefill(p, MPC_PREP_CMP, 0, n);
	if (j->rc == 0)
		j->rc = mpc_prefill(p, MPC_PREP_RAND, 0, 1);
	if (j->rc != 0 || (j->rc = mpc_check(p)) != 0)
		goto out;
	j->prep_secs = now() - t0;
	mpc_get_stats(p, &a1);
	j->prep = a1;
	j->prep.rounds -= a0.rounds;
	j->prep.bytes_sent -= a0.bytes_sent;
	j->prep.prep_bytes_in -= a0.prep_bytes_in;

	pthread_barrier_wait(j->bar);
	mpc_get_stats(p, &a0);
	t0 = now();
	switch (j->op) {
	case OP_MUL:
		j->rc = mpc_mul(p, z, x, y, n);
		break;
	case OP_MUL_FX:
		j->rc = mpc_mul_fx(p, z, x, y, n);
		break;
	case OP_TRUNC:
		j->rc = mpc_trunc(p, z, x, n, 16);
		break;
	case OP_REVEAL:
		j->rc = mpc_reveal(p, v, x, n);
		break;
	case OP_INPUT:
		j->rc = mpc_input(p, 0, j->id == 0 ? v : NULL, x, n);
		break;
	case OP_LTZ:
		j->rc = mpc_ltz(p, z, x, n);
		break;
	case OP_ARGMAX:
		j->rc = mpc_argmax(p, z, z + 1, oh, x, 1, n);
		break;
	case OP_EXP:
		j->rc = mpc_exp(p, z, x, n);
		break;
	case OP_RECIP:
		j->rc = mpc_recip(p, z, x, n);
		break;
	case OP_RSQRT:
		j->rc = mpc_rsqrt(p, z, x, n);
		break;
	case OP_SILU:
		j->rc = mpc_silu(p, z, x, n);
		break;
	case OP_EXPNEG:
		j->rc = mpc_exp_neg(p, z, x, n);
		break;
	case OP_SOFTMAX:
		j->rc = mpc_softmax(p, z, x, j->m, n / j->m);
		break;
	case OP_FMAT:
		for (uint32_t u = 0; j->rc == 0 && u < j->uses; u++) {
			size_t mc = (size_t)j->m * j->cols;
			if ((j->rc = mpc_fmat_mul(p, fm, z, x, j->m)) == 0)
				j->rc = mpc_trunc(p, z, z, mc, 16);
		}
		break;
	case OP_PMAT: /* x (m x rows) times y (rows x cols), both secret */
		for (uint32_t u = 0; j->rc == 0 && u < j->uses; u++)
			j->rc = mpc_matmul_fx(p, z, x, y, j->m, j->rows, j->cols);
		break;
	}
	if (j->rc == 0)
		j->rc = mpc_check(p); /* the cost of checking what was opened */
	j->secs = now() - t0;
	mpc_get_stats(p, &a1);
	j->st = a1;
	j->st.rounds -= a0.rounds;
	j->st.bytes_sent -= a0.bytes_sent;
	j->st.bytes_recv -= a0.bytes_recv;
	j->st.prep_bytes_in -= a0.prep_bytes_in;
out:
	free(oh);
	mpc_fmat_free(fm);
	free(w);
	free(x);
	free(y);
	free(z);
	free(v);
	return NULL;
}

static int run(unsigned np, enum op op, size_t n, uint32_t m, uint32_t rows, uint32_t cols,
	       uint32_t uses)
{
	struct mpc_hub *hub = NULL;
	struct mpc_dealer *d = NULL;
	struct mpc_net *net[MPC_MAX_PARTIES] = {0};
	struct job job[MPC_MAX_PARTIES];
	pthread_t th[MPC_MAX_PARTIES];
	pthread_barrier_t bar;
	int rc = -1;
	memset(job, 0, sizeof job);
	pthread_barrier_init(&bar, NULL, np);
	if (mpc_hub_new(np, 0, &hub) != 0 || mpc_dealer_new(np, &d) != 0)
		goto out;
	struct mpc_prep_source src = mpc_dealer_source(d);
	struct mpc_config cfg = {.prep_batch = 1 << 14, .check_every = (size_t)1 << 20};
	for (unsigned i = 0; i < np; i++) {
		uint8_t seed[MPC_SEED_BYTES];
		mpc_dealer_party_seed(d, i, seed);
		if (mpc_net_local_new(hub, i, &net[i]) != 0 ||
		    mpc_new(net[i], seed, &src, &cfg, &job[i].mpc) != 0)
			goto out;
		job[i] = (struct job){.op = op, .n = n, .id = i, .np = np, .mpc = job[i].mpc,
				      .bar = &bar, .m = m, .rows = rows, .cols = cols, .uses = uses};
	}
	uint64_t dealer0 = 0;
	for (unsigned i = 0; i < np; i++)
		pthread_create(&th[i], NULL, party, &job[i]);
	for (unsigned i = 0; i < np; i++)
		pthread_join(th[i], NULL);
	double secs = 0, psecs = 0;
	uint64_t pdealer = 0;
	for (unsigned i = 0; i < np; i++) {
		if (job[i].rc != 0) {
			fprintf(stderr, "bench_mpc: party %u failed (%d)\n", i, job[i].rc);
			goto out;
		}
		if (job[i].secs > secs)
			secs = job[i].secs;
		if (job[i].prep_secs > psecs)
			psecs = job[i].prep_secs;
		dealer0 += job[i].st.prep_bytes_in;
		pdealer += job[i].prep.prep_bytes_in;
	}
	const struct mpc_stats *s = &job[0].st, *q = &job[0].prep;
	char name[64];
	if (op == OP_FMAT)
		snprintf(name, sizeof name, "%ux matmul %ux%u by %ux%u", uses, m, rows, rows, cols);
	else if (op == OP_PMAT && uses == 1)
		snprintf(name, sizeof name, "matmul (plain) %ux%u by %ux%u", m, rows, rows, cols);
	else if (op == OP_PMAT)
		snprintf(name, sizeof name, "%ux matmul (plain) %ux%u by %ux%u", uses, m, rows, rows, cols);
	else if (op == OP_SOFTMAX)
		snprintf(name, sizeof name, "softmax %u rows of %zu", m, n / m);
	else
		snprintf(name, sizeof name, "%s", op_name[op]);
	printf("N=%u %-34s %7zu | %4llu %9.3f %8.3f %8.1f | %4llu %9.3f %8.3f %8.1f\n", np,
	       name, n, (unsigned long long)s->rounds, (double)s->bytes_sent / 1e6,
	       (double)dealer0 / 1e6, secs * 1e3, (unsigned long long)q->rounds,
	       (double)q->bytes_sent / 1e6, (double)pdealer / 1e6, psecs * 1e3);
	rc = 0;
out:
	for (unsigned i = 0; i < np; i++) {
		mpc_free(job[i].mpc);
		mpc_net_free(net[i]);
	}
	mpc_dealer_free(d);
	mpc_hub_free(hub);
	pthread_barrier_destroy(&bar);
	return rc;
}

int main(int argc, char **argv)
{
	double scale = argc > 1 ? strtod(argv[1], NULL) : 1.0;
	const char *filter = argc > 2 ? argv[2] : "";
	if (!(scale > 0 && scale <= 10))
		scale = 1.0;
	log_set_level(LOG_LEVEL_ERROR);
	static const unsigned ns[] = {2, 3, 5};
	static const struct {
		enum op op;
		size_t n;
		uint32_t rows; /* softmax */
	} ops[] = {{OP_MUL, 100000, 0},  {OP_MUL_FX, 100000, 0}, {OP_TRUNC, 100000, 0},
		   {OP_REVEAL, 100000, 0}, {OP_INPUT, 100000, 0},  {OP_LTZ, 10000, 0},
		   {OP_ARGMAX, 512, 0},    {OP_EXP, 1000, 0},      {OP_EXPNEG, 1000, 0},
		   {OP_RECIP, 1000, 0},
		   {OP_RSQRT, 1000, 0},    {OP_SILU, 1000, 0},     {OP_SOFTMAX, 8 * 128, 8},
		   {OP_SOFTMAX, 512, 1}};
	printf("# MPC engine, N in-process parties (threads on this machine's cores, no\n"
	       "# network latency: add rounds x RTT for a real network).\n"
	       "# online: the operation itself plus the MAC check of what it opened, with\n"
	       "#   preprocessing already in the pools. prep: the dealer requests and the\n"
	       "#   triple sacrifice that fill the pools for it, run just before.\n"
	       "# MB/party: bytes party 0 sent to its peers; dealer MB: payload bytes all\n"
	       "#   parties received from the dealer (only party 0 and input owners get any).\n"
	       "# matmul: W secret and fixed; prep = fetching its mask and opening W - B, once\n"
	       "#   per session; online = each use (X - A opened; the dealer's per-use [A], [AB]\n"
	       "#   fetched inline) with its truncation by f, then the MAC check.\n"
	       "# matmul (plain): X and Y both secret; prep = fetching the matrix triples and\n"
	       "#   their sacrifice (one toss and two rounds per dealer batch); online = each\n"
	       "#   product (X - A and Y - B opened) with its truncation by f, then the MAC check.\n"
	       "#                                              | online                           |"
	       " prep\n"
	       "#   operation                                 n | rnds  MB/party dealerMB       ms |"
	       " rnds  MB/party dealerMB       ms\n");
	static const uint32_t mats[][4] = {{1, 64, 172, 1}, {1, 64, 172, 10}, {64, 64, 64, 1},
					   {64, 64, 64, 10}};
	for (size_t k = 0; k < sizeof ns / sizeof ns[0]; k++) {
		for (size_t o = 0; o < sizeof ops / sizeof ops[0]; o++) {
			size_t n = (size_t)((double)ops[o].n * scale);
			uint32_t rows = ops[o].rows;
			if (!strstr(op_name[ops[o].op], filter))
				continue;
			if (rows) /* softmax: scale the rows, never the row length */
				n = ops[o].n, rows = (uint32_t)(rows * scale) ? (uint32_t)(rows * scale) : 1,
				n = n / ops[o].rows * rows;
			if (run(ns[k], ops[o].op, n ? n : 1, rows, 0, 0, 0) != 0)
				return 1;
		}
		/* n for a matmul sizes the buffers: the largest of X, W and the output */
		for (size_t q = 0; q < sizeof mats / sizeof mats[0] && strstr(op_name[OP_FMAT], filter); q++) {
			uint32_t m = mats[q][0], r = mats[q][1], c = mats[q][2];
			size_t n = (size_t)m * (r > c ? r : c);
			if ((size_t)r * c > n)
				n = (size_t)r * c;
			if (run(ns[k], OP_FMAT, n, m, r, c, mats[q][3]) != 0)
				return 1;
		}
		for (size_t q = 0; q < sizeof mats / sizeof mats[0] && strstr(op_name[OP_PMAT], filter); q++) {
			uint32_t m = mats[q][0], r = mats[q][1], c = mats[q][2];
			size_t n = (size_t)m * (r > c ? r : c);
			if ((size_t)r * c > n)
				n = (size_t)r * c;
			if (run(ns[k], OP_PMAT, n, m, r, c, mats[q][3]) != 0)
				return 1;
		}
	}
	return 0;
}
