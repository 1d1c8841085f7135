/* svc: the shared main of every Mimir service, so each service's main.c is only its
 * definition: name, route table, extra configuration keys and lifecycle hooks.
 *
 * svc_main() parses the command line (--config FILE, --port-file FILE, --check-config,
 * --help, --version), loads and validates the configuration (the common keys below plus
 * the service's own, file then MIMIR_<SERVICE>_* environment), sets up logging, blocks
 * the termination signals, starts the HTTP server, writes the bound port to the port
 * file, waits for SIGTERM/SIGINT, then shuts down gracefully and exits 0. SIGHUP reads
 * tls.crl again and the service goes on.
 *
 * Common keys: http.bind, http.port, http.threads, http.max_body, http.idle_timeout_s,
 * http.drain_timeout_ms, http.max_connections, tls.enabled, tls.cert, tls.key, tls.ca,
 * tls.crl, tls.mode, tls.attest_ca, tls.allow_simulated, log.level, log.json. With
 * tls.crl or tls.mode = production, svc builds one peer verifier (common/attestpeer)
 * before the service's init: the server applies it to clients in the handshake, and it
 * is the process default every httpc applies to servers (docs/PKI.md, "Production
 * mode and revocation"). */
#ifndef MIMIR_SVC_H
#define MIMIR_SVC_H

#include <stdbool.h>
#include <stddef.h>

#include "http/http.h"
#include "jspec/jspec.h"

struct metrics;

struct svc_def {
	const char *name;    /* "gateway": logs, metrics, the MIMIR_GATEWAY_ prefix */
	const char *summary; /* one line for --help */
	uint16_t default_port;
	const struct http_route *routes;
	/* Service keys; out pointers into the service's own settings, pre-filled with
	 * defaults by the caller. NULL when the service has none. */
	const struct jspec_field *config_spec;
	/* After configuration, before the server starts: build the service context.
	 * Returns 0 or ERR_*; a failure ends the process with exit code 1. */
	int (*init)(void **ctx, struct metrics *m);
	/* After the server stopped (no handler runs any more). */
	void (*fini)(void *ctx);
	bool (*ready)(void *ctx, char *why, size_t cap);
	/* http_server_config.client_cert_optional: clients without a certificate may
	 * call the routes flagged HTTP_ROUTE_PUBLIC (attest only; default false). */
	bool tls_client_cert_optional;
};

/* Returns the process exit code: 0 after a clean shutdown, 1 on a runtime failure,
 * 2 on bad usage or configuration. */
int svc_main(int argc, char **argv, const struct svc_def *def);

#define SVC_VERSION "0.1.0"

#endif
