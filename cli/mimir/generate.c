/* mimir generate: one generation through a gateway, printed as it arrives. The
 * protocol (the prompt tokenized and masked here, every token checked against every
 * party's part before it is shown) is common/gclient's; this file is the command line,
 * the printing and the summary. The output is the prompt followed by the continuation,
 * as mimir-ref prints it. Exit statuses: mimir.h (and --help). */
#include <errno.h>
#include <getopt.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <sodium.h>

#include "cli/cli.h"
#include "gclient/gclient.h"
#include "mimir.h"
#include "model/model.h"

#define PROG MIMIR_PROG " generate"

struct opts {
	struct gcl_config cfg;
	struct gcl_request req;
	char tokenizer[4096];
	bool ids, quiet;
};

/* What the callbacks keep: the ids for --ids, whether the text's line is ended. */
struct out {
	const struct opts *o;
	uint64_t *ids;
	size_t n;
};

#define say(...) mimir_say(PROG, __VA_ARGS__)

static void usage(FILE *f)
{
	fprintf(f,
		"usage: " PROG " --gateway URL --session ID [options] PROMPT\n"
		"\n"
		"Generates text after PROMPT on the session's model. The prompt is tokenized here\n"
		"and sent only masked; each token comes back sealed to a key made for this run,\n"
		"is checked against every party's part and printed as it arrives (the prompt, then\n"
		"the continuation). Neither the gateway nor any party sees the text.\n"
		"\n"
		"  --gateway URL       the gateway (default $MIMIR_GATEWAY, else https://localhost:8443)\n"
		"  --session ID        the session (ses_...; default $MIMIR_SESSION)\n"
		"  --key KEY           the API key (default $MIMIR_API_KEY; prefer the variable: a\n"
		"                      command line is visible to other users)\n"
		"  --ca FILE           the deployment's CA certificate, for https (default $MIMIR_CA)\n"
		"  --tokens N          new tokens (default 64); generation also stops at BOS\n"
		"  --temperature T     0 = greedy (default 0)\n"
		"  --top-k K           keep the K most likely tokens when sampling (default 0: all)\n"
		"  --top-p P           nucleus mass, with --top-k (default 0: off)\n"
		"  --seed S            public sampling seed (default: the parties toss one)\n"
		"  --tokenizer PATH    llama2.c tokenizer (default $MIMIR_SHARED/models/tok512.bin,\n"
		"                      MIMIR_SHARED defaulting to ../shared)\n"
		"  --timeout S         bound on each request, not on the stream (default 30)\n"
		"  --ids               print only the new token ids, space separated, one line\n"
		"  --quiet             no summary line on stderr\n"
		"  -h, --help          this text\n"
		"\n"
		"exit status: 0 done; 1 failed otherwise; 2 bad command line; 3 gateway unreachable;\n"
		"4 API key refused (401/403); 5 not found; 6 conflict (session not ready or busy);\n"
		"7 invalid request (400/413/415, e.g. prompt too long); 8 rate limited; 9 server\n"
		"error (5xx); 10 the generation ended with an error (a party failed, cancelled);\n"
		"11 a party's message did not verify (wrong sealing key, a party caught lying).\n");
}

/* ---- the command line ---- */


/* Returns -1 to go on, otherwise the exit status. */
static int parse_args(int argc, char **argv, struct opts *o)
{
	struct gcl_config *c = &o->cfg;
	struct gcl_request *q = &o->req;
	c->gateway = mimir_env("MIMIR_GATEWAY", "https://localhost:8443");
	c->session = mimir_env("MIMIR_SESSION", NULL);
	c->ca = mimir_env("MIMIR_CA", NULL);
	c->key = mimir_env("MIMIR_API_KEY", NULL);
	snprintf(o->tokenizer, sizeof o->tokenizer, "%s/models/tok512.bin", mimir_env("MIMIR_SHARED", "../shared"));
	c->tokenizer = o->tokenizer;
	c->timeout_s = 30;
	q->tokens = 64;
	enum { O_GW = 256, O_SES, O_KEY, O_CA, O_TOKENS, O_TEMP, O_TOPK, O_TOPP, O_SEED, O_TOK, O_TIMEOUT, O_IDS, O_QUIET };
	static const struct option lo[] = {
		{"gateway", required_argument, NULL, O_GW},
		{"session", required_argument, NULL, O_SES},
		{"key", required_argument, NULL, O_KEY},
		{"ca", required_argument, NULL, O_CA},
		{"tokens", required_argument, NULL, O_TOKENS},
		{"temperature", required_argument, NULL, O_TEMP},
		{"top-k", required_argument, NULL, O_TOPK},
		{"top-p", required_argument, NULL, O_TOPP},
		{"seed", required_argument, NULL, O_SEED},
		{"tokenizer", required_argument, NULL, O_TOK},
		{"timeout", required_argument, NULL, O_TIMEOUT},
		{"ids", no_argument, NULL, O_IDS},
		{"quiet", no_argument, NULL, O_QUIET},
		{"help", no_argument, NULL, 'h'},
		{NULL, 0, NULL, 0},
	};
	opterr = 0;
	optind = 1;
	int ch;
	float f;
	while ((ch = getopt_long(argc, argv, ":h", lo, NULL)) != -1) {
		const char *a = optarg;
		switch (ch) {
		case 'h': usage(stdout); return MX_OK;
		case O_GW: c->gateway = a; break;
		case O_SES: c->session = a; break;
		case O_KEY: c->key = a; break;
		case O_CA: c->ca = a; break;
		case O_TOKENS:
			if (!cli_parse_long(a, 1, MODEL_MAX_SEQ, &q->tokens))
				return say(MX_USAGE, "--tokens %s: expected an integer in 1..%d", a, MODEL_MAX_SEQ);
			break;
		case O_TEMP:
			if (!cli_parse_float(a, 0, 1e6f, &f))
				return say(MX_USAGE, "--temperature %s: expected a number >= 0", a);
			q->temperature = f;
			break;
		case O_TOPK:
			if (!cli_parse_long(a, 0, MODEL_MAX_VOCAB, &q->top_k))
				return say(MX_USAGE, "--top-k %s: expected an integer in 0..%d", a, MODEL_MAX_VOCAB);
			break;
		case O_TOPP:
			if (!cli_parse_float(a, 0, 1, &f))
				return say(MX_USAGE, "--top-p %s: expected a number in [0, 1]", a);
			q->top_p = f;
			break;
		case O_SEED:
			if (!cli_parse_u64(a, &q->seed) || q->seed > (uint64_t)INT64_MAX)
				return say(MX_USAGE, "--seed %s: expected an unsigned integer below 2^63", a);
			q->has_seed = true;
			break;
		case O_TOK:
			if (strlen(a) >= sizeof o->tokenizer)
				return say(MX_USAGE, "--tokenizer: path too long");
			snprintf(o->tokenizer, sizeof o->tokenizer, "%s", a);
			break;
		case O_TIMEOUT:
			if (!cli_parse_long(a, 1, 3600, &c->timeout_s))
				return say(MX_USAGE, "--timeout %s: expected seconds in 1..3600", a);
			break;
		case O_IDS: o->ids = true; break;
		case O_QUIET: o->quiet = true; break;
		case ':': return say(MX_USAGE, "%s needs a value", argv[optind - 1]);
		default: return say(MX_USAGE, "unknown option %s", argv[optind - 1]);
		}
	}
	if (optind + 1 != argc)
		return say(MX_USAGE, optind == argc ? "the prompt is missing" : "one prompt only (quote it)");
	q->prompt = argv[optind];
	q->prompt_len = strlen(q->prompt);
	if (!c->session)
		return say(MX_USAGE, "--session is required (or MIMIR_SESSION)");
	if (!c->key)
		return say(MX_USAGE, "an API key is required: set MIMIR_API_KEY (or --key)");
	char why[256];
	if (gcl_config_check(c, why, sizeof why) != GCL_OK)
		return say(MX_USAGE, "%s", why);
	if (q->top_p > 0 && q->top_p < 1 && !q->top_k)
		return say(MX_USAGE, "--top-p needs --top-k (the parties sample the nucleus among the top k)");
	return -1;
}

/* ---- printing ---- */

static int on_started(void *arg, const char *generation, size_t prompt_tokens)
{
	(void)generation, (void)prompt_tokens;
	struct out *w = arg;
	if (!w->o->ids) {
		fwrite(w->o->req.prompt, 1, w->o->req.prompt_len, stdout);
		fflush(stdout);
	}
	return 0;
}

static int on_token(void *arg, int id, const char *piece, size_t len)
{
	struct out *w = arg;
	w->ids[w->n++] = (uint64_t)id;
	if (!w->o->ids) {
		cli_print_piece(stdout, piece, len);
		fflush(stdout);
	}
	return 0;
}

static void on_notice(void *arg, const char *message)
{
	(void)arg;
	say(0, "%s", message);
}

int mimir_generate(int argc, char **argv)
{
	struct opts o = {0};
	int st = parse_args(argc, argv, &o);
	if (st >= 0) {
		sodium_memzero(&o, sizeof o);
		return st;
	}
	struct out w = {.o = &o, .ids = calloc((size_t)o.req.tokens, sizeof *w.ids)};
	if (!w.ids) {
		sodium_memzero(&o, sizeof o);
		return say(MX_FAIL, "out of memory");
	}
	struct gcl_callbacks cb = {.arg = &w, .started = on_started, .token = on_token, .notice = on_notice};
	struct gcl_result res;
	st = (int)gcl_generate(&o.cfg, &o.req, &cb, &res);
	/* What was verified is shown, whatever ended the generation. */
	if (o.ids)
		for (size_t i = 0; i < w.n; i++)
			printf("%s%llu", i ? " " : "", (unsigned long long)w.ids[i]);
	if (res.generation[0])
		printf("\n");
	if (fflush(stdout) != 0 && st == MX_OK)
		st = say(MX_FAIL, "cannot write the output: %s", strerror(errno));
	if (res.status != GCL_OK)
		say(st, "%s", res.error);
	if (!o.quiet && res.generation[0])
		fprintf(stderr,
			PROG ": prompt %zu tokens (%u positions), %zu token%s in %.2f s (%.2f tok/s), first token "
			     "after %.2f s, %u parties, generation %s\n",
			res.prompt_tokens, res.slots, res.made, res.made == 1 ? "" : "s", res.seconds,
			res.seconds > 0 ? (double)res.made / res.seconds : 0.0, res.first_token_s, res.nparties,
			res.generation);
	sodium_memzero(w.ids, (size_t)o.req.tokens * sizeof *w.ids);
	free(w.ids);
	sodium_memzero(&res, sizeof res);
	sodium_memzero(&o, sizeof o);
	return st;
}
