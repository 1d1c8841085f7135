/* mimir-attest request | collect | revoke: the commands that talk to the hardware or
 * the attest service. `request` keeps everything a service needs in one directory:
 * NAME.key (its TLS key, 0600, created here or reused with --renew), NAME.crt (the
 * issued certificate, replaced atomically on renewal), attest-ca.crt (the CA peers
 * must trust), NAME.x25519.pub / NAME.x25519.key (the sealing key pair, unless one is
 * given) and NAME.attestation.json (what was attested and when to renew). */
#include <getopt.h>
#include <openssl/bio.h>
#include <openssl/err.h>
#include <openssl/evp.h>
#include <openssl/pem.h>
#include <sodium.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "attestc/attestc.h"
#include "err/err.h"
#include "httpc/httpc.h"
#include "tool.h"
#include "mshare/mshare.h"

/* The measurement simulated evidence claims unless --measurement says otherwise:
 * SHA-384 of "mimir-simulated-guest", so that it is recognisable in logs. */
static void default_measurement(uint8_t out[48])
{
	static const char tag[] = "mimir-simulated-guest";
	unsigned int n = 0;
	EVP_Digest(tag, sizeof tag - 1, out, &n, EVP_sha384(), NULL);
}

static void request_usage(FILE *f)
{
	fputs("Usage: mimir-attest request --url URL --ca FILE --platform P --role ROLE --out DIR\n"
	      "                            [--name NAME] [--dns NAME]... [--ip ADDR]...\n"
	      "                            [--x25519 FILE] [--renew] [--measurement HEX]\n"
	      "                            [--cert FILE]... [--collateral FILE]...\n"
	      "                            [--tsm-dir DIR | --tsm-report DIR] [--nsm PATH] [--vmpl N]\n"
	      "\n"
	      "Asks the attest service for a nonce, collects evidence on this machine bound to\n"
	      "the TLS key, the X25519 sealing key and the nonce, and writes the certificate\n"
	      "the service issues.\n"
	      "\n"
	      "  --url URL          the attest service, e.g. https://attest:8445\n"
	      "  --ca FILE          the CA of the attest service's own TLS certificate\n"
	      "  --platform P       snp, tdx, nitro, or simulated (development only)\n"
	      "  --role ROLE        party, dealer, gateway or session\n"
	      "  --out DIR          where the files go (NAME.key, NAME.crt, attest-ca.crt, ...)\n"
	      "  --name NAME        certificate CN and file name (default: the role)\n"
	      "  --dns/--ip         subject alternative names (for a service peers connect to)\n"
	      "  --x25519 FILE      the X25519 public key to bind (MIMIR X25519 PUBLIC KEY file,\n"
	      "                     e.g. from mimir-model keygen); default: a new key pair\n"
	      "  --renew            reuse DIR/NAME.key and the X25519 key, replace DIR/NAME.crt\n"
	      "  --measurement HEX  simulated only: the measurement to claim\n"
	      "  --cert FILE        SNP: the VCEK and ASK when the host supplies none\n"
	      "  --collateral FILE  TDX: collateral files to send with the quote\n"
	      "  --tsm-dir DIR      configfs-tsm reports (default /sys/kernel/config/tsm/report)\n"
	      "  --tsm-report DIR   an existing report directory (root made it for this user)\n"
	      "  --nsm PATH         the Nitro Secure Module (default /dev/nsm)\n"
	      "  --vmpl N           SEV-SNP: the VMPL (privlevel) to ask the report for\n",
	      f);
}

static int write_key(const char *path, EVP_PKEY *key)
{
	BIO *b = BIO_new(BIO_s_secmem());
	char *p = NULL;
	long n = 0;
	int rc = TOOL_EXIT_FAIL;
	if (b && PEM_write_bio_PrivateKey(b, key, NULL, NULL, 0, NULL, NULL) == 1 &&
	    (n = BIO_get_mem_data(b, &p)) > 0)
		rc = tool_write_new(path, p, (size_t)n, 0600);
	else
		tool_fail("cannot encode the key");
	BIO_free(b); /* secure memory: wiped */
	return rc;
}

static EVP_PKEY *read_key(const char *path)
{
	uint8_t *buf = NULL;
	size_t len = 0;
	if (tool_read(path, &buf, &len) != 0)
		return NULL;
	BIO *b = BIO_new_mem_buf(buf, (int)len);
	EVP_PKEY *k = b ? PEM_read_bio_PrivateKey(b, NULL, NULL, NULL) : NULL;
	BIO_free(b);
	sodium_memzero(buf, len);
	free(buf);
	ERR_clear_error();
	if (!k)
		tool_fail("%s is not a PEM private key", path);
	return k;
}

static void print_refusal(const struct attestc_error *e)
{
	tool_fail("%s", e->detail);
	if (e->check[0] || e->reason[0])
		fprintf(stderr, "  check: %s  reason: %s%s%s\n", e->check[0] ? e->check : "-",
			e->reason[0] ? e->reason : "-", e->field[0] ? "  field: " : "", e->field);
}

static int load_files(const char *const *paths, size_t n, uint8_t **bufs, struct attest_blob *blobs)
{
	for (size_t i = 0; i < n; i++) {
		if (tool_read(paths[i], &bufs[i], &blobs[i].len) != 0)
			return -1;
		blobs[i].data = bufs[i];
	}
	return 0;
}

int cmd_request(int argc, char **argv)
{
	static const struct option opts[] = {
		{"url", required_argument, NULL, 'u'},	    {"ca", required_argument, NULL, 'a'},
		{"platform", required_argument, NULL, 'p'}, {"role", required_argument, NULL, 'r'},
		{"out", required_argument, NULL, 'o'},	    {"name", required_argument, NULL, 'n'},
		{"dns", required_argument, NULL, 'D'},	    {"ip", required_argument, NULL, 'I'},
		{"x25519", required_argument, NULL, 'x'},   {"renew", no_argument, NULL, 'R'},
		{"measurement", required_argument, NULL, 'm'}, {"cert", required_argument, NULL, 'c'},
		{"collateral", required_argument, NULL, 'l'}, {"tsm-dir", required_argument, NULL, 't'},
		{"nsm", required_argument, NULL, 'N'},	    {"vmpl", required_argument, NULL, 'v'},
		{"tsm-report", required_argument, NULL, 'T'}, {"help", no_argument, NULL, 'h'},
		{NULL, 0, NULL, 0},
	};
	struct attestc_opts o = {.platform = IDENT_PLATFORM_NONE, .role = IDENT_ROLE_NONE};
	o.collect.snp_vmpl = -1;
	const char *out_dir = NULL, *x25519_file = NULL, *dns[IDENT_MAX_DNS], *ip[IDENT_MAX_IP],
		   *certs[TOOL_FILES_MAX], *colls[TOOL_FILES_MAX];
	size_t ncert = 0, ncoll = 0, mlen = 0;
	bool renew = false;
	uint8_t meas[ATTEST_MEASUREMENT_MAX];
	int c;
	optind = 1;
	opterr = 0;
	while ((c = getopt_long(argc, argv, ":h", opts, NULL)) != -1) {
		switch (c) {
		case 'u': o.url = optarg; break;
		case 'a': o.ca_file = optarg; break;
		case 'p':
			if (!tool_platform(optarg, &o.platform))
				return tool_usage("request", "--platform: snp, tdx, nitro or simulated, not '%s'", optarg);
			break;
		case 'r':
			if (ident_role_parse(optarg, &o.role) != 0)
				return tool_usage("request", "--role: not a role: '%s'", optarg);
			break;
		case 'o': out_dir = optarg; break;
		case 'n':
			if (!ident_cn_ok(optarg) || strchr(optarg, '/') || optarg[0] == '.')
				return tool_usage("request", "--name: 1 to 64 printable characters, no '/', not starting with '.'");
			o.name = optarg;
			break;
		case 'D':
			if (o.n_dns == IDENT_MAX_DNS || !ident_dns_name_ok(optarg))
				return tool_usage("request", "--dns: at most %d host names; '%s' is not one", IDENT_MAX_DNS, optarg);
			dns[o.n_dns++] = optarg;
			break;
		case 'I':
			if (o.n_ip == IDENT_MAX_IP)
				return tool_usage("request", "--ip: at most %d addresses", IDENT_MAX_IP);
			ip[o.n_ip++] = optarg;
			break;
		case 'x': x25519_file = optarg; break;
		case 'R': renew = true; break;
		case 'm':
			if (!tool_hex(optarg, meas, sizeof meas, &mlen))
				return tool_usage("request", "--measurement: 1 to 48 bytes of hex");
			break;
		case 'c':
			if (ncert == TOOL_FILES_MAX)
				return tool_usage("request", "--cert: at most %d files", TOOL_FILES_MAX);
			certs[ncert++] = optarg;
			break;
		case 'l':
			if (ncoll == TOOL_FILES_MAX)
				return tool_usage("request", "--collateral: at most %d files", TOOL_FILES_MAX);
			colls[ncoll++] = optarg;
			break;
		case 't': o.collect.tsm_dir = optarg; break;
		case 'T': o.collect.tsm_report_dir = optarg; break;
		case 'N': o.collect.nsm_path = optarg; break;
		case 'v':
			if (strlen(optarg) != 1 || optarg[0] < '0' || optarg[0] > '3')
				return tool_usage("request", "--vmpl: 0 to 3");
			o.collect.snp_vmpl = optarg[0] - '0';
			break;
		case 'h': request_usage(stdout); return TOOL_EXIT_OK;
		default: return tool_opt_error("request", c, argv);
		}
	}
	if (optind < argc)
		return tool_usage("request", "unexpected argument '%s'", argv[optind]);
	if (!o.url || !o.ca_file || o.platform == IDENT_PLATFORM_NONE || o.role == IDENT_ROLE_NONE || !out_dir)
		return tool_usage("request", "--url, --ca, --platform, --role and --out are required");
	if (mlen && o.platform != IDENT_PLATFORM_SIMULATED)
		return tool_usage("request", "--measurement is for simulated evidence only (hardware measures itself)");
	o.dns = dns;
	o.ip = ip;
	if (o.platform == IDENT_PLATFORM_SIMULATED) {
		if (!mlen) {
			default_measurement(meas);
			mlen = 48;
		}
		o.collect.sim_measurement = meas;
		o.collect.sim_measurement_len = mlen;
		fprintf(stderr, "mimir-attest: warning: simulated evidence: no hardware protects this key "
				"(development only)\n");
	}
	const char *name = o.name ? o.name : ident_role_name(o.role);

	int code = TOOL_EXIT_FAIL;
	EVP_PKEY *key = NULL;
	uint8_t xpk[32], xsk[32], *cbufs[TOOL_FILES_MAX] = {0}, *lbufs[TOOL_FILES_MAX] = {0};
	struct attest_blob cb[TOOL_FILES_MAX], lb[TOOL_FILES_MAX];
	struct attestc_result res = {0};
	struct attestc_error err;
	char kpath[TOOL_PATH_MAX], cpath[TOOL_PATH_MAX], capath[TOOL_PATH_MAX], xpub[TOOL_PATH_MAX],
		xsec[TOOL_PATH_MAX], jpath[TOOL_PATH_MAX], msg[256];
	bool wrote_key = false, wrote_x = false;
	if (!tool_path(kpath, sizeof kpath, out_dir, name, ".key") || !tool_path(cpath, sizeof cpath, out_dir, name, ".crt") ||
	    !tool_path(capath, sizeof capath, out_dir, "attest-ca", ".crt") ||
	    !tool_path(xpub, sizeof xpub, out_dir, name, ".x25519.pub") ||
	    !tool_path(xsec, sizeof xsec, out_dir, name, ".x25519.key") ||
	    !tool_path(jpath, sizeof jpath, out_dir, name, ".attestation.json"))
		return tool_fail("output path too long: %s", out_dir);
	if (load_files(certs, ncert, cbufs, cb) != 0 || load_files(colls, ncoll, lbufs, lb) != 0)
		goto out;
	o.certs = cb;
	o.n_certs = ncert;
	o.collateral = lb;
	o.n_collateral = ncoll;

	/* The keys: reused on renewal, else made now (written before anything is asked,
	 * so a certificate never exists without its key on disk). */
	if (renew) {
		if (!(key = read_key(kpath)))
			goto out;
	} else {
		if (ident_key_new(&key) != 0) {
			tool_fail("cannot generate a P-256 key");
			goto out;
		}
		if (write_key(kpath, key) != 0)
			goto out;
		wrote_key = true;
	}
	if (x25519_file || renew) {
		if (mshare_key_read(x25519_file ? x25519_file : xpub, false, xpk, msg, sizeof msg) != 0) {
			tool_fail("%s", msg);
			goto out;
		}
	} else {
		if (mshare_keypair(xpk, xsk) != 0 || mshare_key_write(xsec, xsk, true, msg, sizeof msg) != 0) {
			sodium_memzero(xsk, sizeof xsk);
			tool_fail("%s", msg);
			goto out;
		}
		sodium_memzero(xsk, sizeof xsk);
		wrote_x = true;
		if (mshare_key_write(xpub, xpk, false, msg, sizeof msg) != 0) {
			tool_fail("%s", msg);
			goto out;
		}
	}

	if (attestc_request(&o, key, xpk, &res, &err) != 0) {
		print_refusal(&err);
		goto out;
	}
	char na[32], ra[32], meas_hex[97], ev_hex[65], nonce_hex[65];
	tool_time(res.not_after, na, sizeof na);
	tool_time(res.renew_after, ra, sizeof ra);
	sodium_bin2hex(meas_hex, sizeof meas_hex, res.measurement, res.measurement_len);
	sodium_bin2hex(ev_hex, sizeof ev_hex, res.evidence_sha256, 32);
	sodium_bin2hex(nonce_hex, sizeof nonce_hex, res.nonce, 32);
	json_t *j = json_pack("{s:s, s:s, s:s, s:s, s:s, s:s, s:s, s:s, s:s}", "serial", res.serial, "role", res.role,
			      "platform", res.platform, "measurement", meas_hex, "evidence_sha256", ev_hex,
			      "nonce", nonce_hex, "not_after", na, "renew_after", ra, "url", o.url);
	char *jt = j ? json_dumps(j, JSON_INDENT(2) | JSON_PRESERVE_ORDER) : NULL;
	if (jt) {
		/* A text file ends with a newline. */
		size_t l = strlen(jt);
		char *t = realloc(jt, l + 2);
		if (t) {
			t[l] = '\n';
			t[l + 1] = '\0';
		}
		jt = t ? t : jt;
	}
	json_decref(j);
	int wrc = jt ? 0 : tool_fail("out of memory");
	if (wrc == 0)
		wrc = tool_write_replace(cpath, res.cert_pem, strlen(res.cert_pem), 0644);
	if (wrc == 0)
		wrc = tool_write_replace(capath, res.ca_pem, strlen(res.ca_pem), 0644);
	if (wrc == 0)
		wrc = tool_write_replace(jpath, jt, strlen(jt), 0644) == 0 ? 0 : TOOL_EXIT_FAIL;
	free(jt);
	if (wrc != 0)
		goto out;
	printf("issued %s: role %s, platform %s, serial %s, valid until %s; renew after %s\n", cpath, res.role,
	       res.platform, res.serial, na, ra);
	code = TOOL_EXIT_OK;
out:
	if (code != TOOL_EXIT_OK && !renew) {
		/* Nothing half-made is left behind on a first request. */
		if (wrote_key)
			remove(kpath);
		if (wrote_x) {
			remove(xsec);
			remove(xpub);
		}
	}
	attestc_result_free(&res);
	EVP_PKEY_free(key);
	for (size_t i = 0; i < TOOL_FILES_MAX; i++) {
		free(cbufs[i]);
		free(lbufs[i]);
	}
	return code;
}

int cmd_collect(int argc, char **argv)
{
	static const struct option opts[] = {
		{"platform", required_argument, NULL, 'p'}, {"report-data", required_argument, NULL, 'd'},
		{"out", required_argument, NULL, 'o'},	    {"certs-out", required_argument, NULL, 'C'},
		{"measurement", required_argument, NULL, 'm'}, {"tsm-dir", required_argument, NULL, 't'},
		{"nsm", required_argument, NULL, 'N'},	    {"vmpl", required_argument, NULL, 'v'},
		{"tsm-report", required_argument, NULL, 'T'}, {"help", no_argument, NULL, 'h'},
		{NULL, 0, NULL, 0},
	};
	enum ident_platform p = IDENT_PLATFORM_NONE;
	struct attestc_collect_opts co = {.snp_vmpl = -1};
	const char *out = NULL, *certs_out = NULL;
	uint8_t rd[ATTEST_REPORT_DATA_LEN], meas[ATTEST_MEASUREMENT_MAX];
	size_t rdlen = 0, mlen = 0;
	int c;
	optind = 1;
	opterr = 0;
	while ((c = getopt_long(argc, argv, ":h", opts, NULL)) != -1) {
		switch (c) {
		case 'p':
			if (!tool_platform(optarg, &p))
				return tool_usage("collect", "--platform: snp, tdx, nitro or simulated, not '%s'", optarg);
			break;
		case 'd':
			if (!tool_hex(optarg, rd, sizeof rd, &rdlen) || rdlen != sizeof rd)
				return tool_usage("collect", "--report-data: 64 bytes of hex (128 digits)");
			break;
		case 'o': out = optarg; break;
		case 'C': certs_out = optarg; break;
		case 'm':
			if (!tool_hex(optarg, meas, sizeof meas, &mlen))
				return tool_usage("collect", "--measurement: 1 to 48 bytes of hex");
			break;
		case 't': co.tsm_dir = optarg; break;
		case 'T': co.tsm_report_dir = optarg; break;
		case 'N': co.nsm_path = optarg; break;
		case 'v':
			if (strlen(optarg) != 1 || optarg[0] < '0' || optarg[0] > '3')
				return tool_usage("collect", "--vmpl: 0 to 3");
			co.snp_vmpl = optarg[0] - '0';
			break;
		case 'h':
			puts("Usage: mimir-attest collect --platform P --report-data HEX --out FILE\n"
			     "                            [--certs-out DIR] [--measurement HEX]\n"
			     "                            [--tsm-dir DIR | --tsm-report DIR] [--nsm PATH]\n"
			     "                            [--vmpl N]\n"
			     "\n"
			     "Makes evidence on this machine with the 64 bytes given bound into it and\n"
			     "writes it to FILE (SNP: the host's VCEK and ASK to DIR/vcek.der and\n"
			     "DIR/ask.der when it supplies them).");
			return TOOL_EXIT_OK;
		default: return tool_opt_error("collect", c, argv);
		}
	}
	if (optind < argc)
		return tool_usage("collect", "unexpected argument '%s'", argv[optind]);
	if (p == IDENT_PLATFORM_NONE || !rdlen || !out)
		return tool_usage("collect", "--platform, --report-data and --out are required");
	if (p == IDENT_PLATFORM_SIMULATED) {
		if (!mlen) {
			default_measurement(meas);
			mlen = 48;
		}
		co.sim_measurement = meas;
		co.sim_measurement_len = mlen;
	}
	struct attestc_evidence ev;
	struct attestc_error err;
	if (attestc_collect(p, rd, &co, &ev, &err) != 0)
		return tool_fail("%s", err.detail);
	int code = tool_write_new(out, ev.data, ev.len, 0644);
	for (size_t i = 0; code == 0 && certs_out && i < ev.n_certs; i++) {
		char path[TOOL_PATH_MAX];
		if (!tool_path(path, sizeof path, certs_out, i == 0 ? "cert0" : i == 1 ? "cert1" : "cert2", ".der"))
			code = tool_fail("path too long: %s", certs_out);
		else
			code = tool_write_new(path, ev.certs[i].data, ev.certs[i].len, 0644);
	}
	if (code == 0)
		printf("wrote %s (%zu bytes of %s evidence, %zu certificates from the host)\n", out, ev.len,
		       ident_platform_name(p), ev.n_certs);
	attestc_evidence_free(&ev);
	return code;
}

int cmd_revoke(int argc, char **argv)
{
	static const struct option opts[] = {
		{"url", required_argument, NULL, 'u'},	  {"ca", required_argument, NULL, 'a'},
		{"cert", required_argument, NULL, 'c'},	  {"key", required_argument, NULL, 'k'},
		{"serial", required_argument, NULL, 's'}, {"reason", required_argument, NULL, 'r'},
		{"force", no_argument, NULL, 'f'},	  {"help", no_argument, NULL, 'h'},
		{NULL, 0, NULL, 0},
	};
	const char *url = NULL, *ca = NULL, *cert = NULL, *key = NULL, *serial = NULL, *reason = NULL;
	bool force = false;
	int c;
	optind = 1;
	opterr = 0;
	while ((c = getopt_long(argc, argv, ":h", opts, NULL)) != -1) {
		switch (c) {
		case 'u': url = optarg; break;
		case 'a': ca = optarg; break;
		case 'c': cert = optarg; break;
		case 'k': key = optarg; break;
		case 's': serial = optarg; break;
		case 'r': reason = optarg; break;
		case 'f': force = true; break;
		case 'h':
			puts("Usage: mimir-attest revoke --url URL --ca FILE --cert FILE --key FILE --serial HEX\n"
			     "                           [--reason unspecified|keyCompromise|affiliationChanged|\n"
			     "                                     superseded|cessationOfOperation|privilegeWithdrawn]\n"
			     "                           [--force]\n"
			     "\n"
			     "Revokes a certificate the attest service issued (needs an admin certificate).\n"
			     "--force revokes a serial the service does not remember (issued before its\n"
			     "last restart).");
			return TOOL_EXIT_OK;
		default: return tool_opt_error("revoke", c, argv);
		}
	}
	if (optind < argc)
		return tool_usage("revoke", "unexpected argument '%s'", argv[optind]);
	if (!url || !ca || !cert || !key || !serial)
		return tool_usage("revoke", "--url, --ca, --cert, --key and --serial are required");
	struct httpc_opts ho = {.base_url = url, .ca_file = ca, .cert_file = cert, .key_file = key,
				.expect_role = IDENT_ROLE_NONE, .retries = 2};
	struct httpc *h = NULL;
	struct httpc_resp r = {0};
	json_t *body = json_pack("{s:s, s:b}", "serial", serial, "force", force);
	if (body && reason)
		json_object_set_new(body, "reason", json_string(reason));
	char *text = body ? json_dumps(body, JSON_COMPACT) : NULL;
	json_decref(body);
	int code = TOOL_EXIT_FAIL;
	if (!text || httpc_new(&h, &ho) != 0) {
		tool_fail("cannot set up the request");
		goto out;
	}
	if (httpc_request(h, "POST", "/v1/revocations", NULL, "application/json", text, strlen(text), &r) != 0) {
		tool_fail("cannot reach %s: %s", url, r.error);
		goto out;
	}
	printf("%s\n", r.body ? r.body : "");
	if (r.status == 200 || r.status == 201)
		code = TOOL_EXIT_OK;
	else
		tool_fail("the service refused (HTTP %ld)", r.status);
out:
	free(text);
	httpc_resp_free(&r);
	httpc_free(h);
	return code;
}
