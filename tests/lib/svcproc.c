/* svcproc: running real service binaries and talking to them, for integration suites. */
#include "svcproc.h"

#include <signal.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <unistd.h>

int tu_pki(const char *logdir, const char *fmt, ...)
{
	char args[2048], bin[512];
	va_list ap;
	va_start(ap, fmt);
	vsnprintf(args, sizeof args, fmt, ap);
	va_end(ap);
	tu_build(bin, sizeof bin, "bin/mimir-pki");
	return tu_system("%s %s >>%s/pki.log 2>&1", bin, args, logdir);
}

int tu_svc_start(struct tu_svc *s, const char *dir, const char *binary, const char *name,
		 const char *config_json, char *const *wrap)
{
	char cfg[400], portf[400], bin[512], rel[128];
	memset(s, 0, sizeof *s);
	snprintf(s->name, sizeof s->name, "%s", name);
	snprintf(cfg, sizeof cfg, "%s/%s.json", dir, name);
	snprintf(portf, sizeof portf, "%s/%s.port", dir, name);
	snprintf(s->log, sizeof s->log, "%s/%s.log", dir, name);
	snprintf(rel, sizeof rel, "bin/%s", binary);
	tu_build(bin, sizeof bin, rel);
	unlink(portf);
	if (tu_write_file(cfg, config_json, strlen(config_json)) != 0)
		return -1;
	char *argv[24];
	size_t n = 0;
	for (; wrap && wrap[n] && n < 16; n++)
		argv[n] = wrap[n];
	char *rest[] = {bin, "--config", cfg, "--port-file", portf, NULL};
	memcpy(argv + n, rest, sizeof rest);
	if (tu_proc_start(&s->proc, argv, s->log) != 0 || tu_wait_file(portf, 8000) != 0)
		return -1;
	char *port = tu_read_file(portf, NULL);
	if (!port)
		return -1;
	snprintf(s->url, sizeof s->url, "https://localhost:%ld", strtol(port, NULL, 10));
	free(port);
	return 0;
}

void tu_svc_stop(struct tu_svc *s)
{
	int st = tu_proc_stop(&s->proc, SIGTERM, 15000);
	bool ok = st >= 0 && WIFEXITED(st) && WEXITSTATUS(st) == 0;
	if (!ok) {
		/* The log goes with the temporary directory: its end is what CI keeps. */
		fprintf(stderr, "---- %s did not exit 0 (%s %d); the end of %s:\n", s->name,
			st >= 0 && WIFSIGNALED(st) ? "signal" : "status",
			st >= 0 && WIFSIGNALED(st) ? WTERMSIG(st) : st, s->log);
		tu_system("tail -n 30 '%s' >&2", s->log);
		fprintf(stderr, "----\n");
	}
	ck_assert_msg(ok, "%s did not exit 0 on SIGTERM (status %d); see %s", s->name, st, s->log);
}

struct httpc *tu_client(const char *pki, const char *name, const char *url, enum ident_role expect)
{
	char ca[400], crt[400], key[400];
	snprintf(ca, sizeof ca, "%s/ca.crt", pki);
	snprintf(crt, sizeof crt, "%s/%s.crt", pki, name ? name : "");
	snprintf(key, sizeof key, "%s/%s.key", pki, name ? name : "");
	struct httpc_opts o = {.base_url = url, .ca_file = ca, .cert_file = name ? crt : NULL,
			       .key_file = name ? key : NULL, .expect_role = expect,
			       .timeout_ms = 15000, .retries = 0};
	struct httpc *c = NULL;
	ck_assert_int_eq(httpc_new(&c, &o), 0);
	return c;
}

bool tu_file_contains(const char *path, const char *needle, int wait_ms)
{
	for (int waited = 0; waited <= wait_ms; waited += 50) {
		char *text = tu_read_file(path, NULL);
		bool found = text && strstr(text, needle);
		free(text);
		if (found)
			return true;
		usleep(50000);
	}
	return false;
}
