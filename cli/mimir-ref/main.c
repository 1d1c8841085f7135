/* mimir-ref: plaintext generation with the float reference model, the yardstick the
 * secure engine is compared against. It loads a llama2.c checkpoint and tokenizer,
 * encodes the prompt, runs the forward pass token by token and prints the prompt and
 * the continuation (or only the new ids with --ids) on stdout; timing goes to stderr.
 * Exit status: 0 ok, 1 runtime error (bad files, out of memory), 2 usage error. */
#include <errno.h>
#include <getopt.h>
#include <limits.h>
#include <math.h>
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

#define PROG "mimir-ref"
#define EXIT_USAGE CLI_EXIT_USAGE
#define bad(...) cli_usage_error(PROG, __VA_ARGS__)

struct opts {
	struct cli_gen g; /* --model ... --ids, common/cli */
};

static void usage(FILE *f)
{
	fprintf(f,
		"usage: " PROG " --prompt TEXT --tokens N [options]\n"
		"\n"
		"Generates N tokens after TEXT with the float reference model and prints the\n"
		"prompt followed by the continuation on stdout (timing on stderr).\n"
		"\n"
		"  --model PATH        llama2.c checkpoint\n"
		"                      (default $MIMIR_SHARED/models/stories260K.bin,\n"
		"                       MIMIR_SHARED defaults to ../shared)\n"
		"  --tokenizer PATH    llama2.c tokenizer (default $MIMIR_SHARED/models/tok512.bin)\n"
		"  --prompt TEXT       the prompt (may be empty)\n"
		"  --tokens N          new tokens to generate; generation also stops at BOS\n"
		"  --temperature T     0 = greedy argmax (default 0)\n"
		"  --top-p P           nucleus sampling mass, 0 or 1 = off (default 0.9;\n"
		"                      only with a temperature above 0)\n"
		"  --top-k K           keep the K most likely tokens, 0 = off (default 0)\n"
		"  --seed S            generator seed, unsigned 64-bit (default 1)\n"
		"  --ids               print only the new token ids, space separated, one line\n"
		"  -h, --help          this text\n"
		"\n"
		"exit status: 0 ok, 1 runtime error, 2 usage error\n");
}

/* Returns -1 to go on, otherwise the exit status. */
static int parse_args(int argc, char **argv, struct opts *o)
{
	cli_gen_defaults(&o->g);
	static const struct option lo[] = {
		CLI_GEN_LONGOPTS,
		{"help", no_argument, NULL, 'h'},
		{NULL, 0, NULL, 0},
	};
	opterr = 0;
	int c;
	while ((c = getopt_long(argc, argv, ":h", lo, NULL)) != -1) {
		const char *a = optarg;
		int st = cli_gen_option(PROG, &o->g, c, a, argv[optind - 1], 0.0f);
		if (st != -2) {
			if (st >= 0)
				return st;
			continue;
		}
		switch (c) {
		case 'h': usage(stdout); return 0;
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

int main(int argc, char **argv)
{
	struct opts o = {0};
	int rc = parse_args(argc, argv, &o);
	if (rc >= 0)
		return rc;

	int status = 1;
	char err[512];
	struct model *m = NULL;
	struct tok *t = NULL;
	struct model_state *st = NULL;
	struct sampler *smp = NULL;
	int *ids = NULL, *out = NULL;
	size_t plen = strlen(o.g.prompt), np = 0;

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
	if (np + (size_t)o.g.tokens > (size_t)c->seq_len) {
		fprintf(stderr,
			PROG ": the prompt (%zu tokens with BOS) plus --tokens %ld exceeds the "
			     "model's context of %d\n",
			np, o.g.tokens, c->seq_len);
		status = EXIT_USAGE;
		goto out;
	}
	if ((rc = sampler_new(c->vocab_size, &o.g.sp, &smp)) != 0 ||
	    (rc = model_state_new(m, (int)(np + (size_t)o.g.tokens), &st)) != 0) {
		fprintf(stderr, PROG ": cannot set up generation: %s\n", err_title(rc));
		goto out;
	}

	bool live = !o.g.ids && isatty(STDOUT_FILENO);
	if (!o.g.ids) {
		fwrite(o.g.prompt, 1, plen, stdout);
		if (live)
			fflush(stdout);
	}
	/* Feed the prompt, then sample: position pos holds ids[pos] for pos < np. */
	long made = 0;
	int token = ids[0], passes = 0;
	double t0 = cli_now_s();
	for (int pos = 0; made < o.g.tokens; pos++) {
		const float *logits;
		if ((rc = model_forward(st, token, pos, &logits)) != 0) {
			fprintf(stderr, PROG ": forward pass failed at position %d: %s\n", pos,
				err_title(rc));
			goto out;
		}
		passes++;
		if ((size_t)pos + 1 < np) {
			token = ids[pos + 1];
			continue;
		}
		int next = sampler_sample(smp, logits);
		if (next == TOK_BOS)
			break; /* BOS starts a new text: the model has finished this one */
		out[made++] = next;
		if (!o.g.ids) {
			const char *p;
			size_t l;
			tok_decode(t, token, next, &p, &l);
			cli_print_piece(stdout, p, l);
			if (live)
				fflush(stdout);
		}
		token = next;
	}
	double dt = cli_now_s() - t0;
	if (o.g.ids)
		for (long i = 0; i < made; i++)
			printf("%s%d", i ? " " : "", out[i]);
	printf("\n");
	if (fflush(stdout) != 0) {
		fprintf(stderr, PROG ": cannot write the output: %s\n", strerror(errno));
		goto out;
	}
	fprintf(stderr,
		PROG ": prompt %zu tokens, generated %ld tokens in %.4f s: %.1f tok/s "
		     "(%d forward passes, %.1f passes/s)\n",
		np, made, dt, dt > 0 ? (double)made / dt : 0.0, passes,
		dt > 0 ? (double)passes / dt : 0.0);
	status = 0;
out:
	free(ids);
	free(out);
	sampler_free(smp);
	model_state_free(st);
	tok_free(t);
	model_free(m);
	return status;
}
