/* cli: strict flag parsing, usage errors, the clock and safe printing (cli.h). */
#include "cli/cli.h"

#include <errno.h>
#include <math.h>
#include <stdarg.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

bool cli_parse_long(const char *s, long lo, long hi, long *out)
{
	char *end;
	errno = 0;
	long v = strtol(s, &end, 10);
	if (errno || end == s || *end || v < lo || v > hi)
		return false;
	*out = v;
	return true;
}

bool cli_parse_float(const char *s, float lo, float hi, float *out)
{
	char *end;
	errno = 0;
	float v = strtof(s, &end);
	if (errno || end == s || *end || !isfinite(v) || v < lo || v > hi)
		return false;
	*out = v;
	return true;
}

bool cli_parse_u64(const char *s, uint64_t *out)
{
	char *end;
	errno = 0;
	if (*s == '-' || *s == '+')
		return false;
	unsigned long long v = strtoull(s, &end, 10);
	if (errno || end == s || *end)
		return false;
	*out = v;
	return true;
}

int cli_usage_error(const char *prog, const char *fmt, ...)
{
	va_list ap;
	va_start(ap, fmt);
	fprintf(stderr, "%s: ", prog);
	vfprintf(stderr, fmt, ap);
	fprintf(stderr, "\n(see %s --help)\n", prog);
	va_end(ap);
	return CLI_EXIT_USAGE;
}

double cli_now_s(void)
{
	struct timespec ts;
	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (double)ts.tv_sec + (double)ts.tv_nsec * 1e-9;
}

void cli_print_piece(FILE *f, const char *p, size_t len)
{
	if (len == 1) {
		unsigned char b = (unsigned char)p[0];
		if ((b < 0x20 && b != '\t' && b != '\n' && b != '\r') || b == 0x7f)
			return;
	}
	fwrite(p, 1, len, f);
}

/* ---- the generation options ---- */

void cli_gen_defaults(struct cli_gen *g)
{
	memset(g, 0, sizeof *g);
	const char *shared = getenv("MIMIR_SHARED");
	if (!shared || !*shared)
		shared = "../shared";
	snprintf(g->model, sizeof g->model, "%s/models/stories260K.bin", shared);
	snprintf(g->tokenizer, sizeof g->tokenizer, "%s/models/tok512.bin", shared);
	g->tokens = -1;
	g->sp = (struct sampler_params){.temperature = 0.0f, .top_p = 0.9f, .top_k = 0, .seed = 1};
}

/* A refused value leaves g as it was. */
int cli_gen_option(const char *prog, struct cli_gen *g, int c, const char *a, const char *flag,
		   float min_temperature)
{
	long v;
	switch (c) {
	case CLI_O_MODEL:
	case CLI_O_TOK: {
		char *dst = c == CLI_O_MODEL ? g->model : g->tokenizer;
		if (strlen(a) >= sizeof g->model)
			return cli_usage_error(prog, "%s: path too long", flag);
		snprintf(dst, sizeof g->model, "%s", a);
		return -1;
	}
	case CLI_O_PROMPT: g->prompt = a; return -1;
	case CLI_O_TOKENS:
		if (!cli_parse_long(a, 0, MODEL_MAX_SEQ, &g->tokens))
			return cli_usage_error(prog, "--tokens %s: expected an integer in 0..%d", a, MODEL_MAX_SEQ);
		return -1;
	case CLI_O_TEMP: {
		float t = 0;
		if (!cli_parse_float(a, 0.0f, 1e6f, &t) || (t > 0.0f && t < min_temperature))
			return min_temperature > 0 ? cli_usage_error(prog, "--temperature %s: expected 0 or a number in "
									   "%g..1000000", a, (double)min_temperature)
						   : cli_usage_error(prog, "--temperature %s: expected a number >= 0", a);
		g->sp.temperature = t;
		return -1;
	}
	case CLI_O_TOPP:
		if (!cli_parse_float(a, 0.0f, 1.0f, &g->sp.top_p))
			return cli_usage_error(prog, "--top-p %s: expected a number in [0, 1]", a);
		return -1;
	case CLI_O_TOPK:
		if (!cli_parse_long(a, 0, MODEL_MAX_VOCAB, &v))
			return cli_usage_error(prog, "--top-k %s: expected an integer in 0..%d", a, MODEL_MAX_VOCAB);
		g->sp.top_k = (int)v;
		return -1;
	case CLI_O_SEED:
		if (!cli_parse_u64(a, &g->sp.seed))
			return cli_usage_error(prog, "--seed %s: expected an unsigned 64-bit integer", a);
		return -1;
	case CLI_O_IDS: g->ids = true; return -1;
	default: return -2;
	}
}

int cli_gen_check(const char *prog, const struct cli_gen *g)
{
	if (!g->prompt)
		return cli_usage_error(prog, "--prompt is required");
	if (g->tokens < 0)
		return cli_usage_error(prog, "--tokens is required");
	return -1;
}
