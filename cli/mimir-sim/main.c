/* mimir-sim: secure generation with N parties in one process, the secure twin of
 * mimir-ref. Each party is a thread with its own engine, all joined by the in-process
 * hub and fed by one in-process dealer; party 0 plays the model owner (it inputs the
 * weights) and the client's proxy (it inputs the prompt and receives the tokens).
 * Weights, prompt, activations, KV cache and chosen tokens stay secret-shared; each
 * token is released to party 0 alone (masked opening after the MAC check), which then
 * tells the others whether to go on, as a client would. stdout is exactly mimir-ref's
 * (same flags, same defaults, same BOS stop); stderr reports rounds, bytes per party and
 * time for the weight setup, the prompt with its first token, and the later tokens.
 * Exit status: 0 ok, 1 runtime error, 2 usage. */
#include <errno.h>
#include <getopt.h>
#include <math.h>
#include <pthread.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "cli/cli.h"
#include "err/err.h"
#include "model/model.h"
#include "model/sampler.h"
#include "model/tok.h"
#include "mpc/mpc.h"
#include "smodel/smodel.h"

#define PROG "mimir-sim"
#define EXIT_USAGE CLI_EXIT_USAGE
#define bad(...) cli_usage_error(PROG, __VA_ARGS__)

struct opts {
	struct cli_gen g; /* --model ... --ids, common/cli */
	long parties;
	long pad;
	long frac_bits;
};

static void usage(FILE *f)
{
	fprintf(f,
		"usage: " PROG " --prompt TEXT --tokens N [options]\n"
		"\n"
		"Generates N tokens after TEXT with the secret-shared model, N parties in this\n"
		"process, and prints the prompt followed by the continuation on stdout, as\n"
		"mimir-ref does (rounds, bytes and timing on stderr).\n"
		"\n"
		"  --model PATH        llama2.c checkpoint\n"
		"                      (default $MIMIR_SHARED/models/stories260K.bin,\n"
		"                       MIMIR_SHARED defaults to ../shared)\n"
		"  --tokenizer PATH    llama2.c tokenizer (default $MIMIR_SHARED/models/tok512.bin)\n"
		"  --prompt TEXT       the prompt (may be empty)\n"
		"  --tokens N          new tokens to generate; generation also stops at BOS\n"
		"  --temperature T     0 = greedy argmax (default 0)\n"
		"  --top-p P           nucleus sampling mass, 0 or 1 = off (default 0.9; only\n"
		"                      with a temperature above 0, and then only with --top-k)\n"
		"  --top-k K           keep the K most likely tokens, 0 = off (default 0)\n"
		"  --seed S            seed of the public sampling coins, as mimir-ref (default 1)\n"
		"  --ids               print only the new token ids, space separated, one line\n"
		"  --parties N         parties, 2..%d (default 3)\n"
		"  --pad BUCKET        pad the prompt to a multiple of BUCKET positions, so that\n"
		"                      rounds and bytes depend only on the bucket (default 0: off)\n"
		"  --frac-bits F       fixed-point fractional bits, %d..%d (default %d)\n"
		"  -h, --help          this text\n"
		"\n"
		"exit status: 0 ok, 1 runtime error, 2 usage error\n",
		MPC_MAX_PARTIES, RING_FXP_MIN_F, RING_FXP_MAX_F, RING_FXP_DEFAULT_F);
}

/* Returns -1 to go on, otherwise the exit status. */
static int parse_args(int argc, char **argv, struct opts *o)
{
	cli_gen_defaults(&o->g);
	o->parties = 3;
	o->frac_bits = RING_FXP_DEFAULT_F;

	enum { O_PARTIES = 256, O_PAD, O_FRAC };
	static const struct option lo[] = {
		CLI_GEN_LONGOPTS,
		{"parties", required_argument, NULL, O_PARTIES},
		{"pad", required_argument, NULL, O_PAD},
		{"frac-bits", required_argument, NULL, O_FRAC},
		{"help", no_argument, NULL, 'h'},
		{NULL, 0, NULL, 0},
	};
	opterr = 0;
	int c;
	while ((c = getopt_long(argc, argv, ":h", lo, NULL)) != -1) {
		const char *a = optarg;
		int st = cli_gen_option(PROG, &o->g, c, a, argv[optind - 1], 1e-3f);
		if (st != -2) {
			if (st >= 0)
				return st;
			continue;
		}
		switch (c) {
		case 'h': usage(stdout); return 0;
		case O_PARTIES:
			if (!cli_parse_long(a, 2, MPC_MAX_PARTIES, &o->parties))
				return bad("--parties %s: expected an integer in 2..%d", a,
					   MPC_MAX_PARTIES);
			break;
		case O_PAD:
			if (!cli_parse_long(a, 0, MODEL_MAX_SEQ, &o->pad))
				return bad("--pad %s: expected an integer in 0..%d", a,
					   MODEL_MAX_SEQ);
			break;
		case O_FRAC:
			if (!cli_parse_long(a, RING_FXP_MIN_F, RING_FXP_MAX_F, &o->frac_bits))
				return bad("--frac-bits %s: expected an integer in %d..%d", a,
					   RING_FXP_MIN_F, RING_FXP_MAX_F);
			break;
		case ':': return bad("%s needs a value", argv[optind - 1]);
		default: return bad("unknown option %s", argv[optind - 1]);
		}
	}
	if (optind < argc)
		return bad("unexpected argument '%s'", argv[optind]);
	int gc = cli_gen_check(PROG, &o->g);
	if (gc >= 0)
		return gc;
	return -1;
}

/* What the run shares between the party threads. */
struct run {
	const struct opts *o;
	const struct model *m;
	const struct model_config *cfg;
	const struct tok *t;
	const int *ids;
	size_t np, slots;
	bool live;
	/* party 0's record, read by main after the join */
	int *out;
	long made;
	/* The client's word after each release: only party 0 (the client's proxy) learns
	 * the token, so it tells the others whether to go on (a BOS ends the text), as a
	 * client would. A failing party marks the board so that nobody waits. */
	pthread_mutex_t mu;
	pthread_cond_t cv;
	long posted;
	bool stop, failed;
	double t_setup, t_prompt, t_gen;
	struct mpc_stats st_setup, st_prompt, st_end;
};

struct party {
	struct run *run;
	unsigned id;
	struct mpc *mpc;
	struct mpc_net *net;
	int rc;
	const char *where;
	struct mpc_stats st_setup, st_prompt, st_end;
};

/* Party 0 posts the verdict on token made; the others wait for it. Returns true to stop. */
static bool board(struct run *r, bool lead, long made, bool stop)
{
	pthread_mutex_lock(&r->mu);
	if (lead) {
		r->posted = made + 1;
		r->stop = stop;
		pthread_cond_broadcast(&r->cv);
	} else {
		while (r->posted < made + 1 && !r->failed)
			pthread_cond_wait(&r->cv, &r->mu);
	}
	bool s = r->stop || r->failed;
	pthread_mutex_unlock(&r->mu);
	return s;
}

static void board_fail(struct run *r)
{
	pthread_mutex_lock(&r->mu);
	r->failed = true;
	pthread_cond_broadcast(&r->cv);
	pthread_mutex_unlock(&r->mu);
}

static void *party_main(void *arg)
{
	struct party *pp = arg;
	struct run *r = pp->run;
	const struct opts *o = r->o;
	struct smodel *sm = NULL;
	struct smodel_gen *g = NULL;
	struct sampler_rng rng;
	int rc, prev;
	double t0 = cli_now_s(), t1, t2;
	const bool lead = pp->id == 0;

	sampler_rng_seed(&rng, o->g.sp.seed);
	pp->where = "weights";
	if ((rc = smodel_new_owner(pp->mpc, r->cfg, 0, lead ? r->m : NULL, &sm)) != 0)
		goto out;
	struct smodel_gen_opts go = {
		.n_ctx = (int)(r->slots + (size_t)o->g.tokens),
		.sampling = {.temperature = o->g.sp.temperature,
			     .top_p = o->g.sp.top_p,
			     .top_k = o->g.sp.top_k},
	};
	if (go.n_ctx < 1)
		go.n_ctx = 1;
	pp->where = "generation";
	if ((rc = smodel_gen_new(sm, &go, &g)) != 0)
		goto out;
	mpc_get_stats(pp->mpc, &pp->st_setup);
	t1 = cli_now_s();
	if (o->g.tokens > 0 &&
	    (rc = smodel_gen_prompt(g, 0, lead ? r->ids : NULL, lead ? r->np : 0, r->slots,
				    o->pad > 0)) != 0)
		goto out;
	prev = r->ids[r->np - 1];
	t2 = t1;
	for (long made = 0; made < o->g.tokens; made++) {
		float coin = o->g.sp.temperature > 0.0f ? sampler_rng_f32(&rng) : 0.0f;
		int tok;
		pp->where = "forward pass";
		if ((rc = smodel_gen_step(g, coin)) != 0)
			goto out;
		pp->where = "release";
		if ((rc = smodel_gen_release(g, &tok)) != 0)
			goto out;
		if (made == 0) {
			mpc_get_stats(pp->mpc, &pp->st_prompt);
			t2 = cli_now_s();
		}
		if (board(r, lead, made, tok == TOK_BOS))
			break;
		if (lead) {
			r->out[r->made++] = tok;
			if (!o->g.ids) {
				const char *piece;
				size_t l;
				tok_decode(r->t, prev, tok, &piece, &l);
				cli_print_piece(stdout, piece, l);
				if (r->live)
					fflush(stdout);
			}
		}
		prev = tok;
	}
	if (o->g.tokens == 0) {
		mpc_get_stats(pp->mpc, &pp->st_prompt);
		t2 = cli_now_s();
	}
	mpc_get_stats(pp->mpc, &pp->st_end);
	if (lead) {
		r->t_setup = t1 - t0;
		r->t_prompt = t2 - t1;
		r->t_gen = cli_now_s() - t2;
	}
	rc = 0;
out:
	if (rc != 0) {
		/* nobody may wait for this party any more */
		board_fail(r);
		mpc_net_abort(pp->net);
		mpc_get_stats(pp->mpc, &pp->st_end);
	}
	pp->rc = rc;
	smodel_gen_free(g);
	smodel_free(sm);
	return NULL;
}

static int run_parties(struct run *r, unsigned n, unsigned frac_bits, struct party *pp)
{
	struct mpc_hub *hub = NULL;
	struct mpc_dealer *dealer = NULL;
	pthread_t th[MPC_MAX_PARTIES];
	unsigned started = 0;
	int rc;
	if ((rc = mpc_hub_new(n, 0, &hub)) != 0 || (rc = mpc_dealer_new(n, &dealer)) != 0)
		goto out;
	struct mpc_prep_source src = mpc_dealer_source(dealer);
	/* a MAC check costs 4 rounds whatever it covers: let one check (the release's)
	 * cover a whole token's openings (about 1.5 to 5 million values at stories260K's
	 * contexts; 40 bytes each in the engine's log) */
	struct mpc_config cfg = {.frac_bits = frac_bits, .check_every = (size_t)1 << 22};
	for (unsigned i = 0; i < n; i++) {
		uint8_t seed[MPC_SEED_BYTES];
		pp[i].run = r;
		pp[i].id = i;
		if ((rc = mpc_net_local_new(hub, i, &pp[i].net)) != 0 ||
		    (rc = mpc_dealer_party_seed(dealer, i, seed)) != 0 ||
		    (rc = mpc_new(pp[i].net, seed, &src, &cfg, &pp[i].mpc)) != 0)
			goto out;
	}
	for (; started < n; started++)
		if (pthread_create(&th[started], NULL, party_main, &pp[started]) != 0) {
			rc = ERR_NOMEM;
			mpc_net_abort(pp[0].net);
			break;
		}
	for (unsigned i = 0; i < started; i++)
		pthread_join(th[i], NULL);
out:
	for (unsigned i = 0; i < n; i++) {
		mpc_free(pp[i].mpc);
		mpc_net_free(pp[i].net);
		pp[i].mpc = NULL;
		pp[i].net = NULL;
	}
	mpc_dealer_free(dealer);
	mpc_hub_free(hub);
	return rc;
}

static void report(const struct run *r, const struct party *pp, unsigned n)
{
	/* rounds are the same at every party; bytes differ (party 0 inputs), so the
	 * average and the largest over the parties are given */
	uint64_t bs[3] = {0}, bmax[3] = {0};
	for (unsigned i = 0; i < n; i++) {
		uint64_t b[3] = {pp[i].st_setup.bytes_sent,
				 pp[i].st_prompt.bytes_sent - pp[i].st_setup.bytes_sent,
				 pp[i].st_end.bytes_sent - pp[i].st_prompt.bytes_sent};
		for (int k = 0; k < 3; k++) {
			bs[k] += b[k];
			if (b[k] > bmax[k])
				bmax[k] = b[k];
		}
	}
	const struct mpc_stats *a = &pp[0].st_setup, *b = &pp[0].st_prompt, *c = &pp[0].st_end;
	long later = r->made > 1 ? r->made - 1 : 0;
	fprintf(stderr,
		PROG ": %u parties, prompt %zu tokens in %zu positions, generated %ld tokens in "
		     "%.3f s: %.2f tok/s\n",
		n, r->np, r->slots, r->made, r->t_prompt + r->t_gen,
		r->t_prompt + r->t_gen > 0 ? (double)r->made / (r->t_prompt + r->t_gen) : 0.0);
	fprintf(stderr,
		PROG ": weights: %llu rounds, %.3f MB per party (max %.3f), %.3f s\n",
		(unsigned long long)a->rounds, (double)bs[0] / n / 1e6, (double)bmax[0] / 1e6,
		r->t_setup);
	fprintf(stderr,
		PROG ": prompt and first token: %llu rounds, %.3f MB per party (max %.3f), "
		     "%.3f s\n",
		(unsigned long long)(b->rounds - a->rounds), (double)bs[1] / n / 1e6,
		(double)bmax[1] / 1e6, r->t_prompt);
	if (later > 0)
		fprintf(stderr,
			PROG ": per later token: %.1f rounds, %.1f KB per party (max %.1f), "
			     "%.1f ms (%ld tokens)\n",
			(double)(c->rounds - b->rounds) / (double)later,
			(double)bs[2] / n / (double)later / 1e3,
			(double)bmax[2] / (double)later / 1e3, r->t_gen * 1e3 / (double)later, later);
}

int main(int argc, char **argv)
{
	struct opts o = {0};
	int rc = parse_args(argc, argv, &o);
	if (rc >= 0)
		return rc;
	if (o.g.sp.temperature > 0.0f && o.g.sp.top_p > 0.0f && o.g.sp.top_p < 1.0f &&
	    (o.g.sp.top_k <= 0))
		return bad("top-p sampling needs --top-k: the nucleus of the whole vocabulary "
			   "would need a secure sort; give --top-k K (top-p then applies within "
			   "the K) or --top-p 1");

	int status = 1;
	char err[512];
	struct model *m = NULL;
	struct tok *t = NULL;
	int *ids = NULL, *out = NULL;
	size_t plen = strlen(o.g.prompt), np = 0;
	struct party pp[MPC_MAX_PARTIES];
	memset(pp, 0, sizeof pp);

	if ((rc = model_load(o.g.model, &m, err, sizeof err)) != 0) {
		fprintf(stderr, PROG ": %s\n", err);
		goto out;
	}
	const struct model_config *c = model_config(m);
	if ((rc = tok_load(o.g.tokenizer, c->vocab_size, &t, err, sizeof err)) != 0) {
		fprintf(stderr, PROG ": %s\n", err);
		goto out;
	}
	ids = malloc(tok_encode_max(plen) * sizeof *ids);
	out = malloc(((size_t)o.g.tokens + 1) * sizeof *out);
	if (!ids || !out) {
		fprintf(stderr, PROG ": out of memory\n");
		goto out;
	}
	if ((rc = tok_encode(t, o.g.prompt, plen, true, false, ids, tok_encode_max(plen), &np)) !=
	    0) {
		fprintf(stderr, PROG ": cannot encode the prompt: %s\n", err_title(rc));
		goto out;
	}
	size_t slots = np;
	if (o.pad > 0)
		slots = (np + (size_t)o.pad - 1) / (size_t)o.pad * (size_t)o.pad;
	if (slots + (size_t)o.g.tokens > (size_t)c->seq_len) {
		fprintf(stderr,
			PROG ": the prompt (%zu tokens with BOS, %zu positions) plus --tokens %ld "
			     "exceeds the model's context of %d\n",
			np, slots, o.g.tokens, c->seq_len);
		status = EXIT_USAGE;
		goto out;
	}
	if (o.g.sp.top_k >= c->vocab_size)
		o.g.sp.top_k = 0; /* keeps everything: the same as off, as in the sampler */

	struct run r = {.o = &o, .m = m, .cfg = c, .t = t, .ids = ids, .np = np, .slots = slots,
			.out = out, .live = !o.g.ids && isatty(STDOUT_FILENO),
			.mu = PTHREAD_MUTEX_INITIALIZER, .cv = PTHREAD_COND_INITIALIZER};
	if (!o.g.ids) {
		fwrite(o.g.prompt, 1, plen, stdout);
		if (r.live)
			fflush(stdout);
	}
	unsigned n = (unsigned)o.parties;
	if ((rc = run_parties(&r, n, (unsigned)o.frac_bits, pp)) != 0) {
		fprintf(stderr, PROG ": cannot start the parties: %s\n", err_title(rc));
		goto out;
	}
	for (unsigned i = 0; i < n; i++)
		if (pp[i].rc != 0 && pp[i].rc != ERR_ABORTED) {
			fprintf(stderr, PROG ": party %u failed in the %s: %s\n", i, pp[i].where,
				err_title(pp[i].rc));
			goto out;
		}
	for (unsigned i = 0; i < n; i++)
		if (pp[i].rc != 0) {
			fprintf(stderr, PROG ": party %u aborted in the %s\n", i, pp[i].where);
			goto out;
		}
	if (o.g.ids)
		for (long i = 0; i < r.made; i++)
			printf("%s%d", i ? " " : "", out[i]);
	printf("\n");
	if (fflush(stdout) != 0) {
		fprintf(stderr, PROG ": cannot write the output: %s\n", strerror(errno));
		goto out;
	}
	report(&r, pp, n);
	status = 0;
out:
	free(ids);
	free(out);
	tok_free(t);
	model_free(m);
	return status;
}
