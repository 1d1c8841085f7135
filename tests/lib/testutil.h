/* testutil: what every Check suite shares. Each test file defines suite(); the common
 * main() in check_main.c runs it. Paths come from the environment the Makefile sets:
 * MIMIR_BUILD (the build directory) and MIMIR_SHARED (../shared by default). */
#ifndef MIMIR_TESTUTIL_H
#define MIMIR_TESTUTIL_H

#include <check.h>
#include <stdbool.h>
#include <stddef.h>
#include <sys/types.h>

Suite *suite(void);

/* "$MIMIR_SHARED/rel" (default ../shared), into buf. Returns buf. */
const char *tu_shared(char *buf, size_t cap, const char *rel);
/* "$MIMIR_BUILD/rel" (default ./build), into buf. Returns buf. */
const char *tu_build(char *buf, size_t cap, const char *rel);
/* true when MIMIR_TEST_DEPTH=quick: the slow end-to-end suites (secure generation)
 * then assert their property on fewer prompts and tokens. `make test` runs the full
 * depth; the sanitizer and second-compiler runs of CI run quick (the arithmetic under
 * test is the same, only the lengths differ). */
bool tu_quick(void);
/* A fresh temporary directory (mkdtemp under $TMPDIR), into buf; removed by tu_rmrf. */
const char *tu_tmpdir(char *buf, size_t cap);
void tu_rmrf(const char *dir);
/* Whole file into a new NUL-terminated buffer (caller frees); NULL on error. */
char *tu_read_file(const char *path, size_t *len);
int tu_write_file(const char *path, const void *data, size_t len);

/* A child process: started with argv (argv[0] a path), stdout and stderr appended to
 * log_path when non-NULL. */
struct tu_proc {
	pid_t pid;
	char log[512];
};
int tu_proc_start(struct tu_proc *p, char *const argv[], const char *log_path);
/* Sends sig and waits up to timeout_ms; returns the exit status as from waitpid
 * (use WIFEXITED/WEXITSTATUS), or -1 on timeout (then the child is SIGKILLed). */
int tu_proc_stop(struct tu_proc *p, int sig, int timeout_ms);
/* Waits up to timeout_ms for a file to exist and be non-empty (e.g. a port file). */
int tu_wait_file(const char *path, int timeout_ms);
/* Runs a shell command, returns its exit status (0..255) or -1. */
int tu_system(const char *fmt, ...) __attribute__((format(printf, 1, 2)));

#endif
