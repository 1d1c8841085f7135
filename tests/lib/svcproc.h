/* svcproc: what integration suites need to run the real binaries: a development PKI
 * from the real mimir-pki, a service started with its configuration on an ephemeral
 * port and stopped with SIGTERM (asserting a clean exit), and an mTLS client holding
 * one of the PKI's certificates. */
#ifndef MIMIR_SVCPROC_H
#define MIMIR_SVCPROC_H

#include <stdbool.h>

#include "httpc/httpc.h"
#include "testutil.h"

struct tu_svc {
	struct tu_proc proc;
	char name[32];
	char url[64];  /* https://localhost:PORT */
	char log[400]; /* its stdout and stderr */
};

/* Runs build/bin/mimir-pki with the formatted arguments, output appended to
 * logdir/pki.log. Returns its exit status. */
int tu_pki(const char *logdir, const char *fmt, ...) __attribute__((format(printf, 2, 3)));

/* Writes config_json to dir/<name>.json and starts build/bin/<binary> with --config and
 * --port-file (the configuration should say "port": 0), under the argv prefix wrap
 * when not NULL (e.g. setpriv, prlimit). Returns 0 once it listens, -1 when it exited
 * or did not write its port within 8 s. */
int tu_svc_start(struct tu_svc *s, const char *dir, const char *binary, const char *name,
		 const char *config_json, char *const *wrap);
/* SIGTERM, then asserts (Check) that the service exited 0 within 15 s. */
void tu_svc_stop(struct tu_svc *s);

/* An mTLS client at url with pki/<name>.crt (name NULL: no client certificate),
 * trusting pki/ca.crt, requiring the server to have role expect (IDENT_ROLE_NONE: any),
 * no retries. */
struct httpc *tu_client(const char *pki, const char *name, const char *url, enum ident_role expect);

/* Waits up to wait_ms for the file to contain needle. */
bool tu_file_contains(const char *path, const char *needle, int wait_ms);

#endif
