/* testutil: paths, temporary directories, files and child processes for the suites. */
#define _GNU_SOURCE
#include "testutil.h"

#include <errno.h>
#include <fcntl.h>
#include <ftw.h>
#include <signal.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

static const char *env_or(const char *name, const char *def)
{
	const char *v = getenv(name);
	return v && *v ? v : def;
}

const char *tu_shared(char *buf, size_t cap, const char *rel)
{
	snprintf(buf, cap, "%s/%s", env_or("MIMIR_SHARED", "../shared"), rel);
	return buf;
}

const char *tu_build(char *buf, size_t cap, const char *rel)
{
	snprintf(buf, cap, "%s/%s", env_or("MIMIR_BUILD", "build"), rel);
	return buf;
}

bool tu_quick(void) { return strcmp(env_or("MIMIR_TEST_DEPTH", "full"), "quick") == 0; }

const char *tu_tmpdir(char *buf, size_t cap)
{
	snprintf(buf, cap, "%s/mimir-test-XXXXXX", env_or("TMPDIR", "/tmp"));
	if (!mkdtemp(buf))
		buf[0] = '\0';
	return buf;
}

static int rm_one(const char *path, const struct stat *sb, int flag, struct FTW *ftw)
{
	(void)sb, (void)flag, (void)ftw;
	return remove(path);
}

void tu_rmrf(const char *dir)
{
	if (dir && *dir && getenv("MIMIR_TEST_KEEP") && strstr(dir, "mimir-test-")) {
		fprintf(stderr, "MIMIR_TEST_KEEP: kept %s\n", dir); /* the logs of a failed run */
		return;
	}
	if (dir && *dir)
		nftw(dir, rm_one, 16, FTW_DEPTH | FTW_PHYS);
}

char *tu_read_file(const char *path, size_t *len)
{
	FILE *f = fopen(path, "rb");
	if (!f)
		return NULL;
	char *buf = NULL;
	size_t n = 0, cap = 0;
	for (;;) {
		if (n + 4096 + 1 > cap) {
			cap = cap ? cap * 2 : 8192;
			char *nb = realloc(buf, cap);
			if (!nb) {
				free(buf);
				fclose(f);
				return NULL;
			}
			buf = nb;
		}
		size_t r = fread(buf + n, 1, cap - n - 1, f);
		n += r;
		if (r == 0)
			break;
	}
	fclose(f);
	buf[n] = '\0';
	if (len)
		*len = n;
	return buf;
}

int tu_write_file(const char *path, const void *data, size_t len)
{
	FILE *f = fopen(path, "wb");
	if (!f)
		return -1;
	int rc = fwrite(data, 1, len, f) == len ? 0 : -1;
	return fclose(f) == 0 ? rc : -1;
}

int tu_proc_start(struct tu_proc *p, char *const argv[], const char *log_path)
{
	memset(p, 0, sizeof *p);
	if (log_path)
		snprintf(p->log, sizeof p->log, "%s", log_path);
	pid_t pid = fork();
	if (pid < 0)
		return -1;
	if (pid == 0) {
		if (log_path) {
			int fd = open(log_path, O_WRONLY | O_CREAT | O_APPEND, 0644);
			if (fd >= 0) {
				dup2(fd, 1);
				dup2(fd, 2);
				close(fd);
			}
		}
		execv(argv[0], argv);
		_exit(127);
	}
	p->pid = pid;
	return 0;
}

static long now_ms(void)
{
	struct timespec ts;
	clock_gettime(CLOCK_MONOTONIC, &ts);
	return ts.tv_sec * 1000L + ts.tv_nsec / 1000000L;
}

int tu_proc_stop(struct tu_proc *p, int sig, int timeout_ms)
{
	if (p->pid <= 0)
		return -1;
	kill(p->pid, sig);
	long end = now_ms() + timeout_ms;
	int status = 0;
	for (;;) {
		pid_t r = waitpid(p->pid, &status, WNOHANG);
		if (r == p->pid) {
			p->pid = 0;
			return status;
		}
		if (now_ms() > end) {
			kill(p->pid, SIGKILL);
			waitpid(p->pid, &status, 0);
			p->pid = 0;
			return -1;
		}
		usleep(10000);
	}
}

int tu_wait_file(const char *path, int timeout_ms)
{
	long end = now_ms() + timeout_ms;
	struct stat st;
	while (now_ms() <= end) {
		if (stat(path, &st) == 0 && st.st_size > 0)
			return 0;
		usleep(10000);
	}
	return -1;
}

int tu_system(const char *fmt, ...)
{
	char cmd[4096];
	va_list ap;
	va_start(ap, fmt);
	vsnprintf(cmd, sizeof cmd, fmt, ap);
	va_end(ap);
	int st = system(cmd);
	if (st == -1 || !WIFEXITED(st))
		return -1;
	return WEXITSTATUS(st);
}
