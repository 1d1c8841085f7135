/* cli: what the command-line tools share: strict number parsing for flags (the whole
 * argument, within a range, no silent wrap), the usage-error line, a monotonic clock,
 * and the printing of decoded text that keeps a model from driving the terminal. */
#ifndef MIMIR_CLI_H
#define MIMIR_CLI_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>

#include "model/model.h"
#include "model/sampler.h"

#define CLI_EXIT_USAGE 2

/* The whole of s as a decimal number in [lo, hi]; false otherwise (out unchanged). */
bool cli_parse_long(const char *s, long lo, long hi, long *out);
/* A finite float in [lo, hi]. */
bool cli_parse_float(const char *s, float lo, float hi, float *out);
/* An unsigned 64-bit decimal, no sign. */
bool cli_parse_u64(const char *s, uint64_t *out);

/* "prog: <message>\n(see prog --help)" on stderr; returns CLI_EXIT_USAGE. */
int cli_usage_error(const char *prog, const char *fmt, ...) __attribute__((format(printf, 2, 3)));

/* Seconds on the monotonic clock. */
double cli_now_s(void);

/* ---- the generation options mimir-ref and mimir-sim share ----
 * --model, --tokenizer (defaults under $MIMIR_SHARED, else ../shared), --prompt,
 * --tokens (required), --temperature, --top-p, --top-k, --seed, --ids. A tool puts
 * CLI_GEN_LONGOPTS in its getopt_long table and hands every option to cli_gen_option
 * before its own. */
struct cli_gen {
	char model[4096];
	char tokenizer[4096];
	const char *prompt;
	long tokens;
	struct sampler_params sp; /* temperature 0, top_p 0.9, top_k 0, seed 1 */
	bool ids;
};
enum { CLI_O_MODEL = 0x1000, CLI_O_TOK, CLI_O_PROMPT, CLI_O_TOKENS, CLI_O_TEMP, CLI_O_TOPP, CLI_O_TOPK,
       CLI_O_SEED, CLI_O_IDS };
#define CLI_GEN_LONGOPTS                                                                             \
	{"model", required_argument, NULL, CLI_O_MODEL},                                             \
	{"tokenizer", required_argument, NULL, CLI_O_TOK},                                           \
	{"prompt", required_argument, NULL, CLI_O_PROMPT},                                           \
	{"tokens", required_argument, NULL, CLI_O_TOKENS},                                           \
	{"temperature", required_argument, NULL, CLI_O_TEMP},                                        \
	{"top-p", required_argument, NULL, CLI_O_TOPP},                                              \
	{"top-k", required_argument, NULL, CLI_O_TOPK},                                              \
	{"seed", required_argument, NULL, CLI_O_SEED},                                               \
	{"ids", no_argument, NULL, CLI_O_IDS}
void cli_gen_defaults(struct cli_gen *g);
/* One option from getopt_long (c, its argument a, as spelled on the command line:
 * flag): -1 when it was one of these and is valid, -2 when it is not one of these, else
 * the usage exit status (the message printed). A temperature above 0 must be at least
 * min_temperature. */
int cli_gen_option(const char *prog, struct cli_gen *g, int c, const char *a, const char *flag,
		   float min_temperature);
/* After the options: the prompt and the number of tokens were given (-1, or the usage
 * exit status). */
int cli_gen_check(const char *prog, const struct cli_gen *g);

/* Writes a decoded piece of text to f the way llama2.c's safe_printf does: a lone
 * ASCII control byte other than whitespace is dropped. */
void cli_print_piece(FILE *f, const char *p, size_t len);

#endif
