/* mimir-model internals: the commands and the few helpers they share (messages, exit
 * statuses, numbers, directories, printing a share file's header). */
#ifndef MIMIR_MM_H
#define MIMIR_MM_H

#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>

#include "mshare/mshare.h"

#define MM_PROG "mimir-model"
#define MM_EXIT_OK 0
#define MM_EXIT_RUNTIME 1
#define MM_EXIT_USAGE 2
#define MM_PATH_MAX 4096

int cmd_keygen(int argc, char **argv);
int cmd_share(int argc, char **argv);
int cmd_inspect(int argc, char **argv);
int cmd_open(int argc, char **argv);
int cmd_combine(int argc, char **argv);

/* "mimir-model: <message>" on stderr; returns MM_EXIT_RUNTIME. */
int mm_fail(const char *fmt, ...) __attribute__((format(printf, 1, 2)));
/* The same plus a pointer to the command's --help; returns MM_EXIT_USAGE. */
int mm_usage_error(const char *cmd, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
void mm_warn(const char *fmt, ...) __attribute__((format(printf, 1, 2)));

bool mm_parse_uint(const char *s, unsigned long lo, unsigned long hi, unsigned long *out);
/* Creates dir and its missing parents with mode; 0 or -1 with errno. */
int mm_mkdir_p(const char *dir, unsigned mode);
/* Reads a secret key file, warning when others may read it. Returns 0 or prints and
 * returns MM_EXIT_RUNTIME. */
int mm_read_secret(const char *path, uint8_t sk[MSHARE_SK_BYTES]);
/* Prints what a share file's header says, one "key: value" line each, then the table. */
void mm_print_info(FILE *f, const struct mshare_info *in);

#endif
