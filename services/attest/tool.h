/* mimir-attest tool: the operator's and requester's commands (request, collect, verify,
 * revoke, crl) and the small helpers they share (messages, exit statuses, option values,
 * files created exclusively with their final mode and replaced atomically).
 *
 * They live in the service's binary because the build derives one name for both:
 * services/attest -> build/bin/mimir-attest, and a tool in cli/mimir-attest would be
 * build/bin/mimir-attest too. main() runs the tool when the first argument is one of
 * its commands and the service otherwise. */
#ifndef MIMIR_ATTEST_TOOL_H
#define MIMIR_ATTEST_TOOL_H

#include <stdbool.h>
#include <stddef.h>
#include <stdio.h>
#include <stdint.h>

#include "attest/attest.h"
#include "ident/ident.h"

/* Exit statuses: 0 done (evidence accepted, certificate issued), 1 refused or failed,
 * 2 the command line is wrong. */
enum { TOOL_EXIT_OK = 0, TOOL_EXIT_FAIL = 1, TOOL_EXIT_USAGE = 2 };

#define TOOL_PATH_MAX 4096
#define TOOL_FILES_MAX 8
#define TOOL_FILE_MAX (1024 * 1024)

/* True when argv[1] names a tool command ("request", ..., "help"). */
bool tool_is_command(const char *arg);
/* Runs the tool command argv[1]; returns the exit status. */
int tool_main(int argc, char **argv);
void tool_help(FILE *f);

int cmd_request(int argc, char **argv);
int cmd_collect(int argc, char **argv);
int cmd_verify(int argc, char **argv);
int cmd_revoke(int argc, char **argv);
int cmd_crl(int argc, char **argv);

/* "mimir-attest: <message>" on stderr; return TOOL_EXIT_FAIL / TOOL_EXIT_USAGE. */
int tool_fail(const char *fmt, ...) __attribute__((format(printf, 1, 2)));
int tool_usage(const char *cmd, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
/* A getopt error ('?' or ':') as a usage error naming the option. */
int tool_opt_error(const char *cmd, int c, char **argv);

/* "snp" or "sev-snp", "tdx", "nitro", "simulated". */
bool tool_platform(const char *s, enum ident_platform *out);
/* Even-length hex of 1..max bytes. */
bool tool_hex(const char *s, uint8_t *out, size_t max, size_t *len);
/* "2024-09-07T15:00:00Z", fractional seconds allowed. */
bool tool_rfc3339(const char *s, int64_t *out);
void tool_time(int64_t t, char *buf, size_t cap);

/* Whole file (at most TOOL_FILE_MAX) into a new buffer (NUL-terminated beyond len). */
int tool_read(const char *path, uint8_t **out, size_t *len);
/* Creates path exclusively (never through a symbolic link) with mode. */
int tool_write_new(const char *path, const void *data, size_t len, unsigned mode);
/* Writes path.tmp exclusively, then renames it over path. */
int tool_write_replace(const char *path, const void *data, size_t len, unsigned mode);
bool tool_path(char *buf, size_t cap, const char *dir, const char *name, const char *ext);

#endif
