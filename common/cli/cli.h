/* cli: what the command-line tools share: strict number parsing for flags (the whole
 * argument, within a range, no silent wrap), the usage-error line, a monotonic clock,
 * and the printing of decoded text that keeps a model from driving the terminal. */
#ifndef MIMIR_CLI_H
#define MIMIR_CLI_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>

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

/* Writes a decoded piece of text to f the way llama2.c's safe_printf does: a lone
 * ASCII control byte other than whitespace is dropped. */
void cli_print_piece(FILE *f, const char *p, size_t len);

#endif
