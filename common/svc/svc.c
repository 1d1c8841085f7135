/* svc: command line, configuration, logging and lifecycle around http_server, shared by
 * every service binary. */
#include "svc/svc.h"

#include <errno.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "attestpeer/attestpeer.h"
#include "config/config.h"
#include "err/err.h"
#include "log/log.h"
#include "metrics/metrics.h"

struct svc_settings {
	const char *bind;
	int64_t port, threads, max_body, idle_timeout_s, drain_timeout_ms, max_connections;
	bool tls_enabled;
	const char *tls_cert, *tls_key, *tls_ca;
	const char *tls_crl, *tls_attest_ca;
	int tls_mode; /* enum attestpeer_mode, by its name */
	bool tls_allow_simulated;
	int log_level;
	bool log_json;
};

static const char *const level_names[] = {"debug", "info", "warn", "error", NULL};
static const char *const mode_names[] = {"development", "production", NULL};

static void usage(FILE *f, const struct svc_def *d)
{
	fprintf(f,
		"usage: mimir-%s [--config FILE] [--port-file FILE] [--check-config]\n"
		"%s\n\n"
		"  --config FILE     JSON configuration (keys below); MIMIR_%s_<KEY> environment\n"
		"                    variables override it (dots become underscores)\n"
		"  --port-file FILE  write the bound TCP port there once listening\n"
		"  --check-config    validate the configuration and exit\n"
		"  --help, --version\n\n"
		"common keys: http.bind http.port http.threads http.max_body http.idle_timeout_s\n"
		"  http.drain_timeout_ms http.max_connections tls.enabled tls.cert tls.key tls.ca\n"
		"  tls.crl tls.mode (development|production) tls.attest_ca tls.allow_simulated\n"
		"  log.level (debug|info|warn|error) log.json\n"
		"signals: SIGTERM/SIGINT stop gracefully; SIGHUP reads tls.crl again\n",
		d->name, d->summary ? d->summary : "", d->name);
	if (d->config_spec) {
		fprintf(f, "service keys:");
		for (const struct jspec_field *s = d->config_spec; s->name; s++)
			fprintf(f, " %s", s->name);
		fprintf(f, "\n");
	}
}

static int write_port_file(const char *path, unsigned port)
{
	char tmp[4096];
	if (snprintf(tmp, sizeof tmp, "%s.tmp", path) >= (int)sizeof tmp)
		return ERR_INVALID;
	FILE *f = fopen(tmp, "w");
	if (!f)
		return ERR_IO;
	fprintf(f, "%u\n", port);
	if (fclose(f) != 0 || rename(tmp, path) != 0)
		return ERR_IO;
	return 0;
}

int svc_main(int argc, char **argv, const struct svc_def *def)
{
	const char *config_path = NULL, *port_file = NULL;
	bool check_only = false;
	int code = 1;
	struct config *cfg = NULL;
	struct jspec_field *spec = NULL;
	struct metrics *metrics = NULL;
	struct http_server *srv = NULL;
	struct attestpeer *peers = NULL;
	void *ctx = NULL;
	bool inited = false;

	for (int i = 1; i < argc; i++) {
		const char *a = argv[i];
		if (!strcmp(a, "--help") || !strcmp(a, "-h")) {
			usage(stdout, def);
			return 0;
		} else if (!strcmp(a, "--version")) {
			printf("mimir-%s %s\n", def->name, SVC_VERSION);
			return 0;
		} else if (!strcmp(a, "--check-config")) {
			check_only = true;
		} else if (!strcmp(a, "--config") && i + 1 < argc) {
			config_path = argv[++i];
		} else if (!strcmp(a, "--port-file") && i + 1 < argc) {
			port_file = argv[++i];
		} else {
			fprintf(stderr, "mimir-%s: unknown or incomplete argument '%s' (try --help)\n",
				def->name, a);
			return 2;
		}
	}

	struct svc_settings st = {
		.bind = "127.0.0.1", .port = def->default_port, .threads = 4,
		.max_body = 1 << 20, .idle_timeout_s = 30, .drain_timeout_ms = 10000,
		.max_connections = 1024, .tls_enabled = true, .log_level = LOG_LEVEL_INFO,
	};
	const struct jspec_field common[] = {
		JSPEC_STR("http.bind", false, 1, 64, &st.bind),
		JSPEC_I64("http.port", false, 0, 65535, &st.port),
		JSPEC_I64("http.threads", false, 1, 256, &st.threads),
		JSPEC_I64("http.max_body", false, 1024, 1 << 30, &st.max_body),
		JSPEC_I64("http.idle_timeout_s", false, 1, 3600, &st.idle_timeout_s),
		JSPEC_I64("http.drain_timeout_ms", false, 0, 600000, &st.drain_timeout_ms),
		JSPEC_I64("http.max_connections", false, 1, 100000, &st.max_connections),
		JSPEC_BOOLEAN("tls.enabled", false, &st.tls_enabled),
		JSPEC_STR("tls.cert", false, 1, 4096, &st.tls_cert),
		JSPEC_STR("tls.key", false, 1, 4096, &st.tls_key),
		JSPEC_STR("tls.ca", false, 1, 4096, &st.tls_ca),
		JSPEC_STR("tls.crl", false, 1, 4096, &st.tls_crl),
		JSPEC_CHOICE("tls.mode", false, mode_names, &st.tls_mode),
		JSPEC_STR("tls.attest_ca", false, 1, 4096, &st.tls_attest_ca),
		JSPEC_BOOLEAN("tls.allow_simulated", false, &st.tls_allow_simulated),
		JSPEC_CHOICE("log.level", false, level_names, &st.log_level),
		JSPEC_BOOLEAN("log.json", false, &st.log_json),
	};
	size_t ncommon = sizeof common / sizeof common[0], nsvc = 0;
	for (const struct jspec_field *s = def->config_spec; s && s->name; s++)
		nsvc++;
	spec = calloc(ncommon + nsvc + 1, sizeof *spec);
	if (!spec)
		goto out;
	memcpy(spec, common, sizeof common);
	if (nsvc)
		memcpy(spec + ncommon, def->config_spec, nsvc * sizeof *spec);

	log_set_service(def->name);
	struct jspec_error e;
	int rc = config_load(&cfg, def->name, config_path, spec, &e);
	if (rc == 0 && st.tls_enabled && (!st.tls_cert || !st.tls_key || !st.tls_ca)) {
		rc = ERR_MISSING;
		snprintf(e.field, sizeof e.field, "%s", !st.tls_cert ? "tls.cert" : !st.tls_key ? "tls.key" : "tls.ca");
		snprintf(e.detail, sizeof e.detail, "%s: required when tls.enabled is true "
			 "(set it, or set tls.enabled to false for local development)", e.field);
	}
	if (rc == 0 && !st.tls_enabled && (st.tls_crl || st.tls_mode == ATTESTPEER_PRODUCTION)) {
		rc = ERR_INVALID;
		snprintf(e.field, sizeof e.field, "%s", st.tls_crl ? "tls.crl" : "tls.mode");
		snprintf(e.detail, sizeof e.detail, "%s: needs tls.enabled (revocation and production "
			 "mode are checks on TLS peers)", e.field);
	}
	if (rc == 0 && st.tls_mode == ATTESTPEER_PRODUCTION && !st.tls_attest_ca) {
		rc = ERR_MISSING;
		snprintf(e.field, sizeof e.field, "tls.attest_ca");
		snprintf(e.detail, sizeof e.detail, "tls.attest_ca: required when tls.mode is production "
			 "(the attestation CA's certificate: only it may sign attested identities)");
	}
	if (rc != 0) {
		fprintf(stderr, "mimir-%s: configuration error: %s\n", def->name, e.detail);
		code = 2;
		goto out;
	}
	log_set_level((enum log_level)st.log_level);
	log_set_json(st.log_json);
	if (st.tls_enabled && (st.tls_crl || st.tls_mode == ATTESTPEER_PRODUCTION)) {
		/* One verifier for the server and every outgoing client of the process. */
		const struct attestpeer_config pc = {
			.mode = (enum attestpeer_mode)st.tls_mode,
			.allow_simulated = st.tls_allow_simulated,
			.ca_file = st.tls_ca,
			.attest_ca_file = st.tls_attest_ca,
			.crl_file = st.tls_crl,
		};
		char why[512];
		if (attestpeer_new(&peers, &pc, why, sizeof why) != 0) {
			fprintf(stderr, "mimir-%s: configuration error: %s\n", def->name, why);
			code = 2;
			goto out;
		}
	}
	if (check_only) {
		printf("mimir-%s: configuration ok\n", def->name);
		code = 0;
		goto out;
	}
	if (log_enabled(LOG_LEVEL_DEBUG))
		config_log_effective(cfg, spec); /* where every setting came from */

	/* Before any thread exists, so every thread inherits the mask. */
	http_signals_block();
	if (!(metrics = metrics_new()) || metrics_add_process(metrics) != 0)
		goto out;
	if (st.tls_enabled && st.tls_mode == ATTESTPEER_DEVELOPMENT)
		LOG_WARN("tls.development_mode",
			 LOG_S("detail", "peers are accepted on their chain to tls.ca alone, attested or not"),
			 LOG_S("hint", "deployments set tls.mode to production (docs/PKI.md)"));
	else if (st.tls_enabled && st.tls_allow_simulated)
		LOG_WARN("tls.simulated_allowed",
			 LOG_S("detail", "production mode with tls.allow_simulated: peers on simulated "
					 "attestation are accepted (each one logged); development deployments only"));
	attestpeer_register_metrics(peers, metrics);
	attestpeer_set_default(peers); /* before init: services make their clients there */
	if (def->init && (rc = def->init(&ctx, metrics)) != 0) {
		LOG_ERROR("svc.init_failed", LOG_S("error", err_title(rc)));
		goto out;
	}
	inited = true;
	struct http_server_config hc = {
		.service = def->name,
		.bind = st.bind,
		.port = (uint16_t)st.port,
		.threads = (unsigned)st.threads,
		.max_body = (size_t)st.max_body,
		.idle_timeout_s = (unsigned)st.idle_timeout_s,
		.drain_timeout_ms = (unsigned)st.drain_timeout_ms,
		.max_connections = (unsigned)st.max_connections,
		.tls_cert = st.tls_enabled ? st.tls_cert : NULL,
		.tls_key = st.tls_enabled ? st.tls_key : NULL,
		.tls_ca = st.tls_enabled ? st.tls_ca : NULL,
		.ready = def->ready,
		.client_cert_optional = def->tls_client_cert_optional,
		.peers = peers,
	};
	if ((rc = http_server_start(&srv, &hc, def->routes, ctx, metrics)) != 0)
		goto out;
	if (port_file && write_port_file(port_file, http_server_port(srv)) != 0) {
		LOG_ERROR("svc.port_file", LOG_S("path", port_file), LOG_S("error", strerror(errno)));
		goto out;
	}
	int sig;
	while ((sig = http_signals_wait()) == SIGHUP) {
		const char *action = "none (no tls.crl)";
		if (st.tls_enabled && st.tls_crl)
			action = attestpeer_reload(peers, "signal") == 0 ? "reload tls.crl"
									 : "reload tls.crl failed: previous CRLs kept";
		LOG_INFO("svc.signal", LOG_I("signal", sig), LOG_S("action", action));
	}
	LOG_INFO("svc.signal", LOG_I("signal", sig), LOG_S("action", "graceful shutdown"));
	http_server_shutdown(srv);
	code = 0;
out:
	/* No handler runs once the server is shut down; the service then releases what it
	 * holds (streams included) while the server still exists. */
	http_server_shutdown(srv);
	if (inited && def->fini)
		def->fini(ctx);
	http_server_free(srv);
	attestpeer_set_default(NULL);
	metrics_free(metrics); /* its callbacks read the verifier */
	attestpeer_free(peers);
	config_free(cfg);
	free(spec);
	return code;
}
