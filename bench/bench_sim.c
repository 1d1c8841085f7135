/* bench_sim: secure generation on stories260K with 3 parties in process (threads, the
 * in-process hub and dealer), an 8-token prompt and 64 new greedy tokens: rounds per
 * token, bytes per token per party, tokens per second, and the float reference's
 * tokens per second measured in the same run. Also the preprocessing each token
 * consumed (Beaver triples, truncation pairs, comparison masks, MAC checks), which is
 * what limits the in-process rate. Tokens are released to party 0 (the client's proxy),
 * as mimir-sim does. Usage: bench_sim [new tokens (64)] [parties (3)]. */
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "bench.h"
#include "err/err.h"
#include "model/model.h"
#include "model/sampler.h"
#include "model/tok.h"
#include "mpc/mpc.h"
#include "smodel/smodel.h"

#define PROMPT "Once upon a time, there was"
#define MAX_TOK 256

struct party {
	unsigned id;
	struct mpc *mpc;
	struct mpc_net *net;
	const struct model *m;
	const int *ids;
	size_t np;
	int ntok;
	int rc;
	int tok[MAX_TOK];
	/* counters after the setup and after each token; time of each */
	struct mpc_stats st[MAX_TOK + 1];
	double t[MAX_TOK + 1], cpu[MAX_TOK + 1]; /* wall and this thread's CPU, us */
};

static double cpu_us(void)
{
	struct timespec t;
	clock_gettime(CLOCK_THREAD_CPUTIME_ID, &t);
	return (double)t.tv_sec * 1e6 + (double)t.tv_nsec / 1e3;
}

static void *party_main(void *arg)
{
	struct party *pp = arg;
	struct smodel *sm = NULL;
	struct smodel_gen *g = NULL;
	const struct model_config *c = model_config(pp->m);
	int rc;
	if ((rc = smodel_new_owner(pp->mpc, c, 0, pp->id == 0 ? pp->m : NULL, &sm)) != 0)
		goto out;
	struct smodel_gen_opts o = {.n_ctx = (int)pp->np + pp->ntok};
	if ((rc = smodel_gen_new(sm, &o, &g)) != 0 ||
	    (rc = smodel_gen_prompt(g, 0, pp->id == 0 ? pp->ids : NULL, pp->np, pp->np, false)) != 0)
		goto out;
	mpc_get_stats(pp->mpc, &pp->st[0]);
	pp->t[0] = bench_now_us();
	pp->cpu[0] = cpu_us();
	for (int i = 0; i < pp->ntok; i++) {
		if ((rc = smodel_gen_step(g, 0.0f)) != 0 ||
		    (rc = smodel_gen_release(g, &pp->tok[i])) != 0)
			goto out;
		mpc_get_stats(pp->mpc, &pp->st[i + 1]);
		pp->t[i + 1] = bench_now_us();
		pp->cpu[i + 1] = cpu_us();
	}
out:
	if (rc != 0)
		mpc_net_abort(pp->net);
	pp->rc = rc;
	smodel_gen_free(g);
	smodel_free(sm);
	return NULL;
}

/* KB sent per party (average over the parties) between counter a and b (a = -1: from
 * the start). */
static double kb(const struct party *pp, unsigned n, int a, int b)
{
	double s = 0;
	for (unsigned i = 0; i < n; i++)
		s += (double)(pp[i].st[b].bytes_sent - (a < 0 ? 0 : pp[i].st[a].bytes_sent));
	return s / n / 1e3;
}

/* The float reference: greedy tokens and its rate (best of reps). */
static double ref_rate(const struct model *m, const int *ids, size_t np, int ntok, int *out)
{
	double best = 0;
	for (int rep = 0; rep < 20; rep++) {
		struct model_state *st;
		if (model_state_new(m, (int)np + ntok, &st) != 0)
			return 0;
		int token = ids[0], made = 0;
		double t0 = bench_now_us();
		for (int pos = 0; made < ntok; pos++) {
			const float *lg;
			model_forward(st, token, pos, &lg);
			if ((size_t)pos + 1 < np) {
				token = ids[pos + 1];
				continue;
			}
			token = out[made++] = sampler_argmax(lg, model_config(m)->vocab_size);
		}
		double r = ntok / ((bench_now_us() - t0) / 1e6);
		if (r > best)
			best = r;
		model_state_free(st);
	}
	return best;
}

int main(int argc, char **argv)
{
	long ntok_l = argc > 1 ? strtol(argv[1], NULL, 10) : 64,
	     n_l = argc > 2 ? strtol(argv[2], NULL, 10) : 3;
	if (ntok_l < 2 || ntok_l > MAX_TOK || n_l < 2 || n_l > MPC_MAX_PARTIES) {
		fprintf(stderr, "usage: bench_sim [tokens 2..%d] [parties 2..%d]\n", MAX_TOK,
			MPC_MAX_PARTIES);
		return 2;
	}
	const char *shared = getenv("MIMIR_SHARED");
	char mp[1024], tp[1024], err[256];
	snprintf(mp, sizeof mp, "%s/models/stories260K.bin", shared ? shared : "../shared");
	snprintf(tp, sizeof tp, "%s/models/tok512.bin", shared ? shared : "../shared");
	struct model *m = NULL;
	struct tok *t = NULL;
	if (model_load(mp, &m, err, sizeof err) != 0 ||
	    tok_load(tp, model_config(m)->vocab_size, &t, err, sizeof err) != 0) {
		fprintf(stderr, "bench_sim: %s\n", err);
		return 1;
	}
	int ids[64];
	size_t np;
	if (tok_encode(t, PROMPT, strlen(PROMPT), true, false, ids, 64, &np) != 0) {
		fprintf(stderr, "bench_sim: cannot encode the prompt\n");
		return 1;
	}
	int ntok = (int)ntok_l, want[MAX_TOK];
	unsigned n = (unsigned)n_l;
	double ref = ref_rate(m, ids, np, ntok, want);

	static struct party pp[MPC_MAX_PARTIES];
	struct mpc_hub *hub = NULL;
	struct mpc_dealer *dealer = NULL;
	int rc = mpc_hub_new(n, 0, &hub);
	if (rc == 0)
		rc = mpc_dealer_new(n, &dealer);
	struct mpc_prep_source src = mpc_dealer_source(dealer);
	struct mpc_config cfg = {.check_every = (size_t)1 << 22}; /* as mimir-sim */
	for (unsigned i = 0; i < n && rc == 0; i++) {
		uint8_t seed[MPC_SEED_BYTES];
		pp[i] = (struct party){.id = i, .m = m, .ids = ids, .np = np, .ntok = ntok};
		if ((rc = mpc_net_local_new(hub, i, &pp[i].net)) == 0 &&
		    (rc = mpc_dealer_party_seed(dealer, i, seed)) == 0)
			rc = mpc_new(pp[i].net, seed, &src, &cfg, &pp[i].mpc);
	}
	if (rc != 0) {
		fprintf(stderr, "bench_sim: setup failed: %s\n", err_title(rc));
		return 1;
	}
	pthread_t th[MPC_MAX_PARTIES];
	double t0 = bench_now_us();
	for (unsigned i = 0; i < n; i++)
		pthread_create(&th[i], NULL, party_main, &pp[i]);
	for (unsigned i = 0; i < n; i++)
		pthread_join(th[i], NULL);
	double wall = (bench_now_us() - t0) / 1e6;
	for (unsigned i = 0; i < n; i++)
		if (pp[i].rc != 0) {
			fprintf(stderr, "bench_sim: party %u failed: %s\n", i, err_title(pp[i].rc));
			return 1;
		}
	int same = 0;
	while (same < ntok && pp[0].tok[same] == want[same])
		same++;

	const struct party *p0 = &pp[0];
	printf("stories260K, %u parties in process, prompt \"%s\" (%zu tokens with BOS), %d new "
	       "greedy tokens (%d equal the float reference's)\n",
	       n, PROMPT, np, ntok, same);
	printf("%-26s %10s %12s %10s %8s %8s %8s %7s\n", "", "rounds", "KB/party", "ms", "triples",
	       "truncs", "cmps", "checks");
#define KB(a, b) kb(pp, n, a, b)
	printf("%-26s %10llu %12.1f %10s\n", "weights (once)", (unsigned long long)p0->st[0].rounds,
	       kb(pp, n, -1, 0), "-");
	printf("%-26s %10llu %12.1f %10.1f %8llu %8llu %8llu %7llu\n", "prompt + token 1",
	       (unsigned long long)(p0->st[1].rounds - p0->st[0].rounds), KB(0, 1),
	       (p0->t[1] - p0->t[0]) / 1e3,
	       (unsigned long long)(p0->st[1].triples - p0->st[0].triples),
	       (unsigned long long)(p0->st[1].truncs - p0->st[0].truncs),
	       (unsigned long long)(p0->st[1].cmps - p0->st[0].cmps),
	       (unsigned long long)(p0->st[1].checks - p0->st[0].checks));
	for (int i = 2; i <= ntok; i *= 2) {
		char lbl[64];
		snprintf(lbl, sizeof lbl, "token %d (%zu keys)", i, np + (size_t)i - 1);
		printf("%-26s %10llu %12.1f %10.1f %8llu %8llu %8llu %7llu\n", lbl,
		       (unsigned long long)(p0->st[i].rounds - p0->st[i - 1].rounds), KB(i - 1, i),
		       (p0->t[i] - p0->t[i - 1]) / 1e3,
		       (unsigned long long)(p0->st[i].triples - p0->st[i - 1].triples),
		       (unsigned long long)(p0->st[i].truncs - p0->st[i - 1].truncs),
		       (unsigned long long)(p0->st[i].cmps - p0->st[i - 1].cmps),
		       (unsigned long long)(p0->st[i].checks - p0->st[i - 1].checks));
	}
	uint64_t rmax = 0;
	for (int i = 2; i <= ntok; i++)
		if (p0->st[i].rounds - p0->st[i - 1].rounds > rmax)
			rmax = p0->st[i].rounds - p0->st[i - 1].rounds;
	double gen_s = (p0->t[ntok] - p0->t[1]) / 1e6;
	printf("\nper generated token (tokens 2..%d): %.1f rounds (max %llu), %.1f KB per party, "
	       "%.1f ms\n",
	       ntok, (double)(p0->st[ntok].rounds - p0->st[1].rounds) / (ntok - 1),
	       (unsigned long long)rmax, KB(1, ntok) / (ntok - 1), gen_s * 1e3 / (ntok - 1));
	printf("secure: %.2f tokens/s (tokens 2..%d), %.2f tokens/s with the prompt; wall %.1f s "
	       "with the weight setup\n",
	       (ntok - 1) / gen_s, ntok, ntok / ((p0->t[ntok] - p0->t[0]) / 1e6), wall);
	/* CPU per generated token: the busiest party bounds the rate on a machine with a
	 * core per party (the in-process dealer runs in the parties' threads) */
	double cmax = 0, csum = 0;
	for (unsigned i = 0; i < n; i++) {
		double c = (pp[i].cpu[ntok] - pp[i].cpu[1]) / (ntok - 1);
		csum += c;
		if (c > cmax)
			cmax = c;
	}
	printf("CPU per generated token: %.1f ms summed over the parties, %.1f ms at the "
	       "busiest (%.2f tokens/s with a core per party)\n",
	       csum / 1e3, cmax / 1e3, 1e6 / cmax);
	printf("mimir-ref (float, same machine, same run): %.0f tokens/s\n", ref);
	mpc_dealer_free(dealer);
	mpc_hub_free(hub);
	for (unsigned i = 0; i < n; i++) {
		mpc_free(pp[i].mpc);
		mpc_net_free(pp[i].net);
	}
	tok_free(t);
	model_free(m);
	return same == ntok ? 0 : 1;
}
