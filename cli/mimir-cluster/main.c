/* mimir-cluster: a dealer and N parties on loopback for development and tests, made of
 * the real binaries that sit beside this one. `up` makes what is missing in DIR (a dev
 * PKI with mimir-pki, the parties' X25519 keys and the model's share files with
 * mimir-model), starts mimir-dealer and one mimir-party per share in sessions of their
 * own (they outlive this tool), waits until every /readyz answers over mutual TLS and
 * writes DIR/cluster.json: where each service listens, its certificate fingerprint,
 * each party's sealing key and stream URL, the process ids and the logs, all a caller
 * needs to open sessions. With --attest URL the dealer and the parties do not take
 * their certificates from the dev PKI: each asks the attest service for one with
 * (simulated) evidence bound to its TLS key and, for a party, to the X25519 key its
 * share is sealed to, as a TEE deployment does (mimir-attest request); the services
 * then trust the dev CA and the attestation CA (DIR/trust.pem). `down` stops them with SIGTERM (SIGKILL past the timeout),
 * checking first that each pid still runs the binary it started; `status` probes them.
 * Exit status: 0 done, 1 failed, 2 bad command line. */
#include <errno.h>
#include <fcntl.h>
#include <getopt.h>
#include <limits.h>
#include <signal.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/types.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include <jansson.h>
#include <sodium.h>

#include <openssl/pem.h>

#include "err/err.h"
#include "httpc/httpc.h"
#include "ident/ident.h"
#include "mnet/mnet.h"
#include "mpc/mpc.h"

#define PROG "mimir-cluster"
#define EXIT_USAGE 2
#define PATHMAX 1024

static void usage(FILE *f)
{
	fputs("Usage: " PROG " up --dir DIR [--parties N] [--model PATH] [--frac-bits F] [--attest URL]\n"
	      "                      [--timeout S]\n"
	      "       " PROG " down --dir DIR [--timeout S]\n"
	      "       " PROG " status --dir DIR\n"
	      "\n"
	      "Runs a Mimir dealer and N parties on loopback (127.0.0.1, ephemeral ports), every\n"
	      "link mutual TLS, from the binaries beside this one.\n"
	      "\n"
	      "  up      makes what DIR lacks (pki/ from mimir-pki dev, keys/ and shares/ from\n"
	      "          mimir-model keygen and share), starts mimir-dealer and mimir-party x N,\n"
	      "          waits for every /readyz and writes DIR/cluster.json (URLs, certificate\n"
	      "          fingerprints, sealing keys, stream URLs, pids, logs)\n"
	      "  down    stops the processes of DIR/cluster.json (SIGTERM, then SIGKILL past the\n"
	      "          timeout); keys, shares and logs stay\n"
	      "  status  says which of them run and answer /readyz\n"
	      "\n"
	      "  --dir DIR        the cluster's directory (created, mode 0700)\n"
	      "  --parties N      parties, 2..16 (default 3)\n"
	      "  --model PATH     llama2.c checkpoint to share (default\n"
	      "                   $MIMIR_SHARED/models/stories260K.bin, MIMIR_SHARED defaults to\n"
	      "                   ../shared)\n"
	      "  --frac-bits F    fixed-point fractional bits of the shares (default 16)\n"
	      "  --attest URL     the dealer and the parties get attested certificates from the\n"
	      "                   attest service at URL (its TLS certificate from DIR/pki; its\n"
	      "                   policy must allow simulated evidence for roles party and\n"
	      "                   dealer), a party's bound to the X25519 key of its share; files\n"
	      "                   in DIR/attested, the CAs to trust in DIR/trust.pem\n"
	      "  --timeout S      seconds to wait for readiness or for the processes to stop\n"
	      "                   (default 30)\n"
	      "  -h, --help       this text\n"
	      "\n"
	      "Exit status: 0 done, 1 failed, 2 bad command line.\n",
	      f);
}

static int fail(const char *fmt, ...) __attribute__((format(printf, 1, 2)));
static int fail(const char *fmt, ...)
{
	va_list ap;
	va_start(ap, fmt);
	fputs(PROG ": ", stderr);
	vfprintf(stderr, fmt, ap);
	fputc('\n', stderr);
	va_end(ap);
	return 1;
}

static int64_t now_ms(void)
{
	struct timespec ts;
	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

static bool exists(const char *path)
{
	struct stat st;
	return stat(path, &st) == 0;
}

static bool path_fmt(char *out, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
static bool path_fmt(char *out, const char *fmt, ...)
{
	va_list ap;
	va_start(ap, fmt);
	int n = vsnprintf(out, PATHMAX, fmt, ap);
	va_end(ap);
	return n > 0 && n < PATHMAX;
}

struct opts {
	const char *dir;
	const char *attest; /* the attest service's URL, or NULL: certificates from the dev PKI */
	long parties, frac_bits, timeout_s;
	char model[PATHMAX];
	char bindir[PATHMAX];
};

/* Where the services' certificates are, and the CAs every link trusts. */
static const char *certdir(const struct opts *o) { return o->attest ? "attested" : "pki"; }
static bool trust_path(char *out, const struct opts *o)
{
	return o->attest ? path_fmt(out, "%s/trust.pem", o->dir) : path_fmt(out, "%s/pki/ca.crt", o->dir);
}

/* The directory of this executable: the other binaries are its siblings. */
static int find_bindir(char *out)
{
	char self[PATHMAX];
	ssize_t n = readlink("/proc/self/exe", self, sizeof self - 1);
	if (n <= 0)
		return fail("cannot find this program's directory (/proc/self/exe)");
	self[n] = '\0';
	char *slash = strrchr(self, '/');
	if (!slash)
		return fail("cannot find this program's directory");
	*slash = '\0';
	snprintf(out, PATHMAX, "%s", self);
	return 0;
}

/* ---- running the setup tools (no shell: argv as given) ---- */

static int run_tool(const struct opts *o, char *const argv[])
{
	char log[PATHMAX];
	if (!path_fmt(log, "%s/setup.log", o->dir))
		return fail("path too long");
	pid_t pid = fork();
	if (pid < 0)
		return fail("fork: %s", strerror(errno));
	if (pid == 0) {
		int fd = open(log, O_WRONLY | O_CREAT | O_APPEND | O_CLOEXEC, 0600);
		if (fd >= 0) {
			dup2(fd, 1);
			dup2(fd, 2);
		}
		execv(argv[0], argv);
		_exit(127);
	}
	int st;
	while (waitpid(pid, &st, 0) < 0 && errno == EINTR)
		;
	if (!WIFEXITED(st) || WEXITSTATUS(st) != 0)
		return fail("%s failed (status %d); see %s", argv[0], WIFEXITED(st) ? WEXITSTATUS(st) : -1, log);
	return 0;
}

/* One certificate from the attest service, unless DIR/attested/NAME.crt exists. */
static int attest_one(const struct opts *o, const char *role, const char *name, bool x25519)
{
	char bin[PATHMAX], ca[PATHMAX], out[PATHMAX], crt[PATHMAX], pub[PATHMAX];
	if (!path_fmt(bin, "%s/mimir-attest", o->bindir) || !path_fmt(ca, "%s/pki/ca.crt", o->dir) ||
	    !path_fmt(out, "%s/attested", o->dir) || !path_fmt(crt, "%s/%s.crt", out, name) ||
	    !path_fmt(pub, "%s/keys/%s.x25519.pub", o->dir, name))
		return fail("path too long");
	if (exists(crt))
		return 0;
	if (mkdir(out, 0700) != 0 && errno != EEXIST)
		return fail("cannot create %s: %s", out, strerror(errno));
	char *argv[] = {bin, "request", "--url", (char *)o->attest, "--ca", ca, "--platform", "simulated", "--role",
			(char *)role, "--name", (char *)name, "--dns", "localhost", "--ip", "127.0.0.1", "--out", out,
			x25519 ? "--x25519" : NULL, pub, NULL};
	return run_tool(o, argv);
}

/* The dealer's and every party's attested certificates, and DIR/trust.pem: the dev CA
 * (people, the session service, the gateway) and the attestation CA (the dealer and
 * the parties). */
static int attest_all(const struct opts *o)
{
	int rc = attest_one(o, "dealer", "dealer", false);
	for (long i = 0; i < o->parties && rc == 0; i++) {
		char name[32];
		snprintf(name, sizeof name, "party%ld", i);
		rc = attest_one(o, "party", name, true);
	}
	char dev[PATHMAX], aca[PATHMAX], trust[PATHMAX];
	if (rc != 0)
		return rc;
	if (!path_fmt(dev, "%s/pki/ca.crt", o->dir) || !path_fmt(aca, "%s/attested/attest-ca.crt", o->dir) ||
	    !trust_path(trust, o))
		return fail("path too long");
	FILE *w = fopen(trust, "w");
	if (!w)
		return fail("cannot write %s: %s", trust, strerror(errno));
	const char *from[] = {dev, aca};
	for (size_t i = 0; i < 2 && rc == 0; i++) {
		FILE *r = fopen(from[i], "r");
		char buf[4096];
		size_t n;
		if (!r) {
			rc = fail("cannot read %s: %s", from[i], strerror(errno));
			break;
		}
		while ((n = fread(buf, 1, sizeof buf, r)) > 0)
			if (fwrite(buf, 1, n, w) != n)
				rc = fail("cannot write %s", trust);
		fclose(r);
	}
	if (fclose(w) != 0 && rc == 0)
		rc = fail("cannot write %s", trust);
	return rc;
}

static int make_material(const struct opts *o)
{
	char bin[PATHMAX], out[PATHMAX], arg[32], path[PATHMAX];
	if (!path_fmt(path, "%s/pki/ca.crt", o->dir))
		return fail("path too long");
	if (!exists(path)) {
		snprintf(arg, sizeof arg, "%ld", o->parties);
		if (!path_fmt(bin, "%s/mimir-pki", o->bindir) || !path_fmt(out, "%s/pki", o->dir))
			return fail("path too long");
		char *argv[] = {bin, "dev", "--parties", arg, "--out", out, NULL};
		if (run_tool(o, argv) != 0)
			return 1;
	}
	if (!path_fmt(bin, "%s/mimir-model", o->bindir) || !path_fmt(out, "%s/keys", o->dir))
		return fail("path too long");
	size_t cap = (size_t)o->parties * PATHMAX;
	char *to = calloc(1, cap);
	if (!to)
		return fail("out of memory");
	int rc = 0;
	for (long i = 0; i < o->parties && rc == 0; i++) {
		char name[32];
		snprintf(name, sizeof name, "party%ld", i);
		if (!path_fmt(path, "%s/keys/%s.x25519.pub", o->dir, name)) {
			rc = fail("path too long");
			break;
		}
		size_t l = strlen(to);
		snprintf(to + l, cap - l, "%s%s", i ? "," : "", path);
		if (exists(path))
			continue;
		char *argv[] = {bin, "keygen", "--out", out, "--name", name, NULL};
		rc = run_tool(o, argv);
	}
	if (rc == 0 && path_fmt(path, "%s/shares/model.party0.mshare", o->dir) && !exists(path)) {
		char parties[16], fb[16], sh[PATHMAX];
		snprintf(parties, sizeof parties, "%ld", o->parties);
		snprintf(fb, sizeof fb, "%ld", o->frac_bits);
		if (!path_fmt(sh, "%s/shares", o->dir)) {
			free(to);
			return fail("path too long");
		}
		char *argv[] = {bin, "share", "--model", (char *)o->model, "--parties", parties, "--to", to,
				"--out", sh, "--name", "model", "--frac-bits", fb, NULL};
		rc = run_tool(o, argv);
	}
	free(to);
	if (rc == 0 && o->attest)
		rc = attest_all(o);
	return rc;
}

/* ---- the services ---- */

struct svcp {
	char name[32];
	char binary[PATHMAX];
	char config[PATHMAX], portfile[PATHMAX], log[PATHMAX];
	pid_t pid;
	char url[64];
	json_t *identity; /* parties: GET /v1/identity */
};

static int write_config(struct svcp *s, const struct opts *o, int party)
{
	char pki[PATHMAX], trust[PATHMAX];
	if (!path_fmt(pki, "%s/%s", o->dir, certdir(o)) || !trust_path(trust, o))
		return fail("path too long");
	json_t *tls = json_pack("{s:s+, s:s+, s:s}", "cert", pki, party < 0 ? "/dealer.crt" : "/", "key", pki,
				party < 0 ? "/dealer.key" : "/", "ca", trust);
	if (party >= 0) {
		char c[PATHMAX], k[PATHMAX];
		if (!path_fmt(c, "%s/party%d.crt", pki, party) || !path_fmt(k, "%s/party%d.key", pki, party)) {
			json_decref(tls);
			return fail("path too long");
		}
		json_object_set_new(tls, "cert", json_string(c));
		json_object_set_new(tls, "key", json_string(k));
	}
	json_t *doc = json_pack("{s:{s:s, s:i}, s:O}", "http", "bind", "127.0.0.1", "port", 0, "tls", tls);
	if (party >= 0) {
		char share[PATHMAX], key[PATHMAX];
		if (!path_fmt(share, "%s/shares/model.party%d.mshare", o->dir, party) ||
		    !path_fmt(key, "%s/keys/party%d.x25519.key", o->dir, party)) {
			json_decref(tls);
			json_decref(doc);
			return fail("path too long");
		}
		json_object_set(doc, "mtls", tls);
		json_object_set_new(doc, "stream", json_pack("{s:s, s:i}", "bind", "127.0.0.1", "port", 0));
		json_object_set_new(doc, "model", json_pack("{s:s, s:s}", "share", share, "key", key));
	} else {
		json_object_set_new(doc, "pool", json_pack("{s:i}", "workers", 1));
	}
	json_decref(tls);
	int rc = json_dump_file(doc, s->config, JSON_INDENT(2)) == 0 ? 0 : fail("cannot write %s", s->config);
	json_decref(doc);
	if (rc == 0)
		chmod(s->config, 0600);
	return rc;
}

static int start_service(struct svcp *s)
{
	unlink(s->portfile);
	pid_t pid = fork();
	if (pid < 0)
		return fail("fork: %s", strerror(errno));
	if (pid == 0) {
		/* its own session: it outlives this tool and does not get the terminal's
		 * signals */
		setsid();
		int in = open("/dev/null", O_RDONLY | O_CLOEXEC);
		int fd = open(s->log, O_WRONLY | O_CREAT | O_APPEND | O_CLOEXEC, 0600);
		if (in >= 0)
			dup2(in, 0);
		if (fd >= 0) {
			dup2(fd, 1);
			dup2(fd, 2);
		}
		char *argv[] = {s->binary, "--config", s->config, "--port-file", s->portfile, NULL};
		execv(argv[0], argv);
		_exit(127);
	}
	s->pid = pid;
	return 0;
}

static struct httpc *client(const struct opts *o, const char *url, enum ident_role role)
{
	char ca[PATHMAX], crt[PATHMAX], key[PATHMAX];
	if (!trust_path(ca, o) || !path_fmt(crt, "%s/pki/admin.crt", o->dir) ||
	    !path_fmt(key, "%s/pki/admin.key", o->dir))
		return NULL;
	struct httpc_opts ho = {.base_url = url, .ca_file = ca, .cert_file = crt, .key_file = key,
				.expect_role = role, .timeout_ms = 5000, .connect_timeout_ms = 2000, .retries = 0};
	struct httpc *c = NULL;
	return httpc_new(&c, &ho) == 0 ? c : NULL;
}

/* Waits for the port file, then for /readyz. */
static int wait_ready(struct svcp *s, const struct opts *o, enum ident_role role, int64_t deadline)
{
	for (;;) {
		int st;
		if (waitpid(s->pid, &st, WNOHANG) == s->pid) {
			s->pid = 0;
			return fail("%s exited during start-up; see %s", s->name, s->log);
		}
		FILE *f = s->url[0] ? NULL : fopen(s->portfile, "r");
		if (f) {
			long port = 0;
			if (fscanf(f, "%ld", &port) == 1 && port > 0 && port < 65536)
				snprintf(s->url, sizeof s->url, "https://localhost:%ld", port);
			fclose(f);
		}
		if (s->url[0]) {
			struct httpc *c = client(o, s->url, role);
			struct httpc_resp r;
			bool ok = c && httpc_request(c, "GET", "/readyz", NULL, NULL, NULL, 0, &r) == 0 && r.status == 200;
			if (c)
				httpc_resp_free(&r);
			httpc_free(c);
			if (ok)
				return 0;
		}
		if (now_ms() > deadline)
			return fail("%s is not ready after %ld s; see %s", s->name, o->timeout_s, s->log);
		usleep(100000);
	}
}

static json_t *get_json(const struct opts *o, const char *url, const char *path, enum ident_role role)
{
	struct httpc *c = client(o, url, role);
	struct httpc_resp r;
	json_t *doc = NULL;
	if (c && httpc_json(c, "GET", path, NULL, &r, &doc) == 0 && r.status != 200) {
		json_decref(doc);
		doc = NULL;
	}
	if (c)
		httpc_resp_free(&r);
	httpc_free(c);
	return doc;
}

static void stop_pid(pid_t pid, int64_t deadline)
{
	if (pid <= 0 || kill(pid, SIGTERM) != 0)
		return;
	while (now_ms() < deadline) {
		int st;
		if (waitpid(pid, &st, WNOHANG) == pid || (kill(pid, 0) != 0 && errno == ESRCH))
			return;
		usleep(50000);
	}
	kill(pid, SIGKILL);
	waitpid(pid, NULL, WNOHANG);
}

/* What an attested certificate says of its holder's platform, for the registry's
 * attestation summary; NULL for a certificate without the Mimir extension's platform. */
static json_t *attestation_of(const char *path)
{
	FILE *f = fopen(path, "r");
	X509 *x = f ? PEM_read_X509(f, NULL, NULL, NULL) : NULL;
	if (f)
		fclose(f);
	struct ident id;
	json_t *out = NULL;
	if (x && ident_from_x509(x, &id) == 0 && id.platform != IDENT_PLATFORM_NONE) {
		char m[2 * IDENT_MEASUREMENT_MAX + 1];
		sodium_bin2hex(m, sizeof m, id.measurement, id.measurement_len);
		out = json_pack("{s:s, s:s, s:s, s:I}", "platform", ident_platform_name(id.platform), "measurement", m,
				"certificate_serial", id.serial, "not_after", (json_int_t)id.not_after);
	}
	X509_free(x);
	return out;
}

static json_t *fingerprint_of(const char *pem)
{
	uint8_t fp[32];
	char hex[65];
	if (mnet_cert_fingerprint(pem, fp) != 0)
		return json_null();
	sodium_bin2hex(hex, sizeof hex, fp, sizeof fp);
	return json_string(hex);
}

static int cmd_up(const struct opts *o)
{
	char path[PATHMAX];
	if (!path_fmt(path, "%s/cluster.json", o->dir))
		return fail("path too long");
	if (exists(path))
		return fail("%s exists: the cluster is up (run '" PROG " down --dir %s' first)", path, o->dir);
	const char *need[] = {"mimir-pki", "mimir-model", "mimir-dealer", "mimir-party"};
	for (size_t i = 0; i < sizeof need / sizeof need[0]; i++) {
		if (!path_fmt(path, "%s/%s", o->bindir, need[i]) || access(path, X_OK) != 0)
			return fail("%s/%s is missing: build the project first (make)", o->bindir, need[i]);
	}
	if (o->attest && (!path_fmt(path, "%s/mimir-attest", o->bindir) || access(path, X_OK) != 0))
		return fail("%s/mimir-attest is missing: build the project first (make)", o->bindir);
	if (make_material(o) != 0)
		return 1;

	size_t n = (size_t)o->parties + 1; /* [0] the dealer */
	struct svcp *sv = calloc(n, sizeof *sv);
	if (!sv)
		return fail("out of memory");
	int rc = 0;
	for (size_t i = 0; i < n && rc == 0; i++) {
		struct svcp *s = &sv[i];
		if (i == 0)
			snprintf(s->name, sizeof s->name, "dealer");
		else
			snprintf(s->name, sizeof s->name, "party%zu", i - 1);
		if (!path_fmt(s->binary, "%s/mimir-%s", o->bindir, i ? "party" : "dealer") ||
		    !path_fmt(s->config, "%s/%s.json", o->dir, s->name) ||
		    !path_fmt(s->portfile, "%s/%s.port", o->dir, s->name) ||
		    !path_fmt(s->log, "%s/%s.log", o->dir, s->name))
			rc = fail("path too long");
		if (rc == 0)
			rc = write_config(s, o, i ? (int)i - 1 : -1);
		if (rc == 0)
			rc = start_service(s);
	}
	int64_t deadline = now_ms() + o->timeout_s * 1000;
	for (size_t i = 0; i < n && rc == 0; i++)
		rc = wait_ready(&sv[i], o, i ? IDENT_ROLE_PARTY : IDENT_ROLE_DEALER, deadline);
	for (size_t i = 1; i < n && rc == 0; i++)
		if (!(sv[i].identity = get_json(o, sv[i].url, "/v1/identity", IDENT_ROLE_PARTY)))
			rc = fail("%s does not answer GET /v1/identity; see %s", sv[i].name, sv[i].log);
	if (rc == 0) {
		char pki[PATHMAX], crt[PATHMAX], trust[PATHMAX];
		if (!path_fmt(pki, "%s/pki", o->dir) || !path_fmt(crt, "%s/%s/dealer.crt", o->dir, certdir(o)) ||
		    !trust_path(trust, o))
			rc = fail("path too long");
		json_t *parties = json_array();
		for (size_t i = 1; i < n && rc == 0; i++) {
			const json_t *id = sv[i].identity;
			char surl[64];
			snprintf(surl, sizeof surl, "https://localhost:%lld",
				 (long long)json_integer_value(json_object_get(id, "stream_port")));
			json_t *p = json_pack("{s:I, s:s, s:s, s:O, s:O, s:i, s:s, s:s, s:s}", "index", (json_int_t)(i - 1),
					      "url", sv[i].url, "stream_url", surl, "fingerprint",
					      json_object_get(id, "certificate_fingerprint"), "sealing_key",
					      json_object_get(id, "sealing_key"), "pid", (int)sv[i].pid, "binary",
					      sv[i].binary, "log", sv[i].log, "config", sv[i].config);
			char pc[PATHMAX];
			json_t *att = o->attest && path_fmt(pc, "%s/attested/party%zu.crt", o->dir, i - 1)
					      ? attestation_of(pc)
					      : NULL;
			if (p && att)
				json_object_set(p, "attestation", att);
			json_decref(att);
			json_array_append_new(parties, p);
		}
		json_t *doc = json_pack("{s:s, s:s, s:{s:s+, s:s+, s:s+}, s:{s:s, s:o, s:i, s:s, s:s, s:s}, s:o, s:s}",
					"dir", o->dir, "model", o->model, "admin", "ca", trust, "", "cert", pki,
					"/admin.crt", "key", pki, "/admin.key", "dealer", "url", sv[0].url,
					"fingerprint", fingerprint_of(crt), "pid", (int)sv[0].pid, "binary",
					sv[0].binary, "log", sv[0].log, "config", sv[0].config, "parties", parties,
					"note", "open a dealer session with the parties' fingerprints, then POST "
						"/v1/sessions at every party (docs/PARTY.md)");
		if (!path_fmt(path, "%s/cluster.json", o->dir) || !doc || json_dump_file(doc, path, JSON_INDENT(2)) != 0)
			rc = fail("cannot write %s/cluster.json", o->dir);
		json_decref(doc);
	}
	if (rc != 0) {
		int64_t dl = now_ms() + o->timeout_s * 1000;
		for (size_t i = n; i-- > 0;)
			stop_pid(sv[i].pid, dl);
	} else {
		printf("dealer  %s  pid %d\n", sv[0].url, (int)sv[0].pid);
		for (size_t i = 1; i < n; i++)
			printf("party%zu  %s  stream port %lld  pid %d\n", i - 1, sv[i].url,
			       (long long)json_integer_value(json_object_get(sv[i].identity, "stream_port")),
			       (int)sv[i].pid);
		printf("%s/cluster.json written; stop with: " PROG " down --dir %s\n", o->dir, o->dir);
	}
	for (size_t i = 0; i < n; i++)
		json_decref(sv[i].identity);
	free(sv);
	return rc;
}

/* The pid runs binary (so a recycled pid is never signalled). */
static bool runs(pid_t pid, const char *binary)
{
	char link[64], exe[PATHMAX];
	snprintf(link, sizeof link, "/proc/%d/exe", (int)pid);
	ssize_t n = readlink(link, exe, sizeof exe - 1);
	if (n <= 0)
		return false;
	exe[n] = '\0';
	return strcmp(exe, binary) == 0;
}

static json_t *load_cluster(const struct opts *o)
{
	char path[PATHMAX];
	json_error_t e;
	if (!path_fmt(path, "%s/cluster.json", o->dir))
		return NULL;
	json_t *doc = json_load_file(path, 0, &e);
	if (!doc)
		fail("cannot read %s: %s (is the cluster up?)", path, e.text);
	return doc;
}

/* Calls fn on the dealer then every party. */
static void each_service(json_t *doc, void (*fn)(const char *name, json_t *svc, void *arg), void *arg)
{
	fn("dealer", json_object_get(doc, "dealer"), arg);
	json_t *ps = json_object_get(doc, "parties");
	for (size_t i = 0; i < json_array_size(ps); i++) {
		char name[32];
		snprintf(name, sizeof name, "party%zu", i);
		fn(name, json_array_get(ps, i), arg);
	}
}

struct down_ctx {
	int64_t deadline;
	int stopped, gone;
};

static void down_one(const char *name, json_t *svc, void *arg)
{
	struct down_ctx *d = arg;
	pid_t pid = (pid_t)json_integer_value(json_object_get(svc, "pid"));
	const char *bin = json_string_value(json_object_get(svc, "binary"));
	if (pid <= 0 || !bin || !runs(pid, bin)) {
		printf("%s: not running\n", name);
		d->gone++;
		return;
	}
	stop_pid(pid, d->deadline);
	bool left = runs(pid, bin);
	printf("%s: %s\n", name, left ? "still running after SIGKILL" : "stopped");
	d->stopped += !left;
}

static int cmd_down(const struct opts *o)
{
	json_t *doc = load_cluster(o);
	if (!doc)
		return 1;
	/* the parties first: the dealer's sessions are theirs */
	struct down_ctx d = {.deadline = now_ms() + o->timeout_s * 1000};
	json_t *ps = json_object_get(doc, "parties");
	for (size_t i = 0; i < json_array_size(ps); i++) {
		char name[32];
		snprintf(name, sizeof name, "party%zu", i);
		down_one(name, json_array_get(ps, i), &d);
	}
	down_one("dealer", json_object_get(doc, "dealer"), &d);
	json_decref(doc);
	char path[PATHMAX];
	if (path_fmt(path, "%s/cluster.json", o->dir) && unlink(path) != 0)
		return fail("cannot remove %s: %s", path, strerror(errno));
	return 0;
}

struct status_ctx {
	const struct opts *o;
	int down;
};

static void status_one(const char *name, json_t *svc, void *arg)
{
	struct status_ctx *s = arg;
	pid_t pid = (pid_t)json_integer_value(json_object_get(svc, "pid"));
	const char *bin = json_string_value(json_object_get(svc, "binary"));
	const char *url = json_string_value(json_object_get(svc, "url"));
	bool alive = pid > 0 && bin && runs(pid, bin);
	json_t *ready = alive && url ? get_json(s->o, url, "/readyz", strcmp(name, "dealer") ? IDENT_ROLE_PARTY
											       : IDENT_ROLE_DEALER)
				     : NULL;
	printf("%-8s %s  pid %d  %s\n", name, url ? url : "-", (int)pid,
	       !alive ? "not running" : ready ? "ready" : "running, not ready");
	s->down += !(alive && ready);
	json_decref(ready);
}

static int cmd_status(const struct opts *o)
{
	json_t *doc = load_cluster(o);
	if (!doc)
		return 1;
	struct status_ctx s = {.o = o};
	each_service(doc, status_one, &s);
	json_decref(doc);
	return s.down ? 1 : 0;
}

static bool parse_long(const char *s, long lo, long hi, long *out)
{
	char *end;
	errno = 0;
	long v = strtol(s, &end, 10);
	if (errno || end == s || *end || v < lo || v > hi)
		return false;
	*out = v;
	return true;
}

int main(int argc, char **argv)
{
	if (argc < 2 || !strcmp(argv[1], "-h") || !strcmp(argv[1], "--help")) {
		usage(argc < 2 ? stderr : stdout);
		return argc < 2 ? EXIT_USAGE : 0;
	}
	const char *cmd = argv[1];
	struct opts o = {.parties = 3, .frac_bits = 16, .timeout_s = 30};
	const char *shared = getenv("MIMIR_SHARED");
	snprintf(o.model, sizeof o.model, "%s/models/stories260K.bin", shared && *shared ? shared : "../shared");
	enum { O_DIR = 256, O_PARTIES, O_MODEL, O_FRAC, O_TIMEOUT, O_ATTEST };
	static const struct option lo[] = {
		{"dir", required_argument, NULL, O_DIR},         {"parties", required_argument, NULL, O_PARTIES},
		{"model", required_argument, NULL, O_MODEL},     {"frac-bits", required_argument, NULL, O_FRAC},
		{"timeout", required_argument, NULL, O_TIMEOUT}, {"attest", required_argument, NULL, O_ATTEST},
		{"help", no_argument, NULL, 'h'},
		{NULL, 0, NULL, 0},
	};
	opterr = 0;
	optind = 2;
	int c;
	while ((c = getopt_long(argc, argv, ":h", lo, NULL)) != -1) {
		const char *a = optarg;
		switch (c) {
		case 'h': usage(stdout); return 0;
		case O_DIR: o.dir = a; break;
		case O_ATTEST:
			if (strncmp(a, "https://", 8) || strlen(a) > 200)
				return fail("--attest %s: the attest service's https:// URL", a) + 1;
			o.attest = a;
			break;
		case O_PARTIES:
			if (!parse_long(a, 2, MPC_MAX_PARTIES, &o.parties))
				return fail("--parties %s: an integer in 2..%d", a, MPC_MAX_PARTIES) + 1;
			break;
		case O_MODEL:
			if (strlen(a) >= sizeof o.model)
				return fail("--model: path too long") + 1;
			snprintf(o.model, sizeof o.model, "%s", a);
			break;
		case O_FRAC:
			if (!parse_long(a, 8, 24, &o.frac_bits))
				return fail("--frac-bits %s: an integer in 8..24", a) + 1;
			break;
		case O_TIMEOUT:
			if (!parse_long(a, 1, 3600, &o.timeout_s))
				return fail("--timeout %s: seconds, 1..3600", a) + 1;
			break;
		case ':': return fail("%s needs a value", argv[optind - 1]) + 1;
		default: return fail("unknown option %s (see --help)", argv[optind - 1]) + 1;
		}
	}
	if (optind < argc)
		return fail("unexpected argument '%s'", argv[optind]) + 1;
	if (!o.dir)
		return fail("--dir is required (see --help)") + 1;
	if (strlen(o.dir) > PATHMAX - 128)
		return fail("--dir: path too long") + 1;
	if (sodium_init() < 0)
		return fail("libsodium failed to initialise");
	/* absolute, so that the configurations and cluster.json hold wherever they are read */
	if (!strcmp(cmd, "up") && mkdir(o.dir, 0700) != 0 && errno != EEXIST)
		return fail("cannot create %s: %s", o.dir, strerror(errno));
	static char absdir[PATH_MAX];
	if (!realpath(o.dir, absdir))
		return fail("%s: %s", o.dir, strerror(errno));
	o.dir = absdir;
	char absmodel[PATH_MAX];
	if (!strcmp(cmd, "up")) {
		if (!realpath(o.model, absmodel))
			return fail("--model %s: %s", o.model, strerror(errno));
		if (strlen(absmodel) >= sizeof o.model)
			return fail("--model: path too long") + 1;
		memcpy(o.model, absmodel, strlen(absmodel) + 1);
	}
	if (find_bindir(o.bindir) != 0)
		return 1;
	if (!strcmp(cmd, "up"))
		return cmd_up(&o);
	if (!strcmp(cmd, "down"))
		return cmd_down(&o);
	if (!strcmp(cmd, "status"))
		return cmd_status(&o);
	return fail("unknown command '%s' (up, down or status)", cmd) + 1;
}
