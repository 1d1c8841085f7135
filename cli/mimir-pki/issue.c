/* mimir-pki ca | issue | dev: the commands that create keys and certificates. The
 * certificate profile itself is common/ident's (ident_issue_ca, ident_issue_leaf);
 * this file turns a command line into those calls, checks every value first so that a
 * mistake is a usage error naming the option, and checks that nothing would be
 * overwritten before it writes anything. */
#include <errno.h>
#include <getopt.h>
#include <openssl/evp.h>
#include <openssl/x509.h>
#include <stdio.h>
#include <string.h>
#include <time.h>

#include "err/err.h"
#include "ident/ident.h"
#include "pki.h"

/* Reports a getopt error ('?' unknown option, ':' missing value) as a usage error. */
static int opt_error(const char *cmd, int c, char **argv)
{
	const char *arg = optind > 0 ? argv[optind - 1] : "?";
	if (c == ':')
		return pki_usage(cmd, "option '%s' needs a value", arg);
	return pki_usage(cmd, "unknown option '%s'", arg);
}

static void warn_platform(enum ident_platform p)
{
	if (p != IDENT_PLATFORM_NONE && p != IDENT_PLATFORM_SIMULATED)
		pki_warn("claiming platform '%s' without attestation evidence: a certificate "
			 "for tests only, never for a deployment",
			 ident_platform_name(p));
}

static int64_t now_secs(void) { return (int64_t)time(NULL); }

static void fmt_time(char *buf, size_t cap, int64_t t)
{
	struct tm tm;
	time_t tt = (time_t)t;
	if (!gmtime_r(&tt, &tm) || !strftime(buf, cap, "%Y-%m-%dT%H:%M:%SZ", &tm))
		snprintf(buf, cap, "%lld", (long long)t);
}

/* Writes key then certificate; when the certificate cannot be written, the key just
 * written is removed again so no orphan is left behind. */
static int write_pair(const char *dir, const char *name, EVP_PKEY *key, X509 *x, bool force)
{
	char kpath[PKI_PATH_MAX], cpath[PKI_PATH_MAX], kname[80], cname[80];
	snprintf(kname, sizeof kname, "%s.key", name);
	snprintf(cname, sizeof cname, "%s.crt", name);
	if (!pki_path(kpath, sizeof kpath, dir, kname) ||
	    !pki_path(cpath, sizeof cpath, dir, cname)) {
		pki_fail("output path too long: %s", dir);
		return -1;
	}
	if (pki_write_key(kpath, key, force) != 0)
		return -1;
	if (pki_write_cert(cpath, x, force) != 0) {
		remove(kpath);
		return -1;
	}
	return 0;
}

static int check_pair_absent(const char *dir, const char *name, bool force)
{
	char path[PKI_PATH_MAX], file[80];
	const char *ext[] = {".key", ".crt"};
	for (int i = 0; i < 2; i++) {
		snprintf(file, sizeof file, "%s%s", name, ext[i]);
		if (!pki_path(path, sizeof path, dir, file)) {
			pki_fail("output path too long: %s", dir);
			return -1;
		}
		if (pki_check_absent(path, force) != 0)
			return -1;
	}
	return 0;
}

static int prepare_dir(const char *dir)
{
	if (pki_mkdir_p(dir) != 0) {
		pki_fail("cannot create directory %s: %s", dir, strerror(errno));
		return -1;
	}
	return 0;
}

/* Creates the CA key and certificate in dir (files "ca.key", "ca.crt"). */
static int make_ca(const char *dir, const char *cn, int64_t days, bool force, X509 **cert,
		   EVP_PKEY **key)
{
	int64_t now = now_secs();
	*cert = NULL;
	if (ident_key_new(key) != 0) {
		pki_fail("cannot generate a P-256 key");
		return -1;
	}
	int rc = ident_issue_ca(cn, now - PKI_BACKDATE_SECS, now + days * 86400, *key, cert);
	if (rc != 0) {
		pki_fail("cannot create the CA certificate: %s", err_title(rc));
		EVP_PKEY_free(*key);
		*key = NULL;
		return -1;
	}
	if (write_pair(dir, "ca", *key, *cert, force) != 0) {
		X509_free(*cert);
		EVP_PKEY_free(*key);
		*cert = NULL;
		*key = NULL;
		return -1;
	}
	return 0;
}

/* Generates a key and a leaf for it, writes NAME.key and NAME.crt in dir. */
static int make_leaf(const char *dir, const char *name, const struct ident_leaf_spec *spec,
		     X509 *ca, EVP_PKEY *ca_key, bool force)
{
	EVP_PKEY *key = NULL;
	X509 *x = NULL;
	int ret = -1;
	if (ident_key_new(&key) != 0) {
		pki_fail("cannot generate a P-256 key");
		goto out;
	}
	int rc = ident_issue_leaf(spec, key, ca, ca_key, &x);
	if (rc == ERR_RANGE) {
		int64_t ca_end = 0;
		const ASN1_TIME *t = X509_get0_notAfter(ca);
		struct tm tm;
		char buf[32];
		if (ASN1_TIME_to_tm(t, &tm))
			ca_end = (int64_t)timegm(&tm);
		fmt_time(buf, sizeof buf, ca_end);
		pki_fail("%s would outlive its CA (valid until %s); choose a smaller --days or "
			 "--not-after",
			 name, buf);
		goto out;
	}
	if (rc != 0) {
		pki_fail("cannot issue %s: %s", name, err_title(rc));
		goto out;
	}
	ret = write_pair(dir, name, key, x, force);
out:
	X509_free(x);
	EVP_PKEY_free(key);
	return ret;
}

/* ---- ca ---- */

static void ca_help(void)
{
	printf("Usage: mimir-pki ca --out DIR [--cn NAME] [--days N] [--force]\n"
	       "\n"
	       "Creates a self-signed ECDSA P-256 CA: DIR/ca.crt and DIR/ca.key (mode 0600).\n"
	       "\n"
	       "  --out DIR    output directory (created if missing)\n"
	       "  --cn NAME    subject common name (default \"%s\")\n"
	       "  --days N     validity in days, 1..%d (default %d)\n"
	       "  --force      replace existing files\n"
	       "  -h, --help   this help\n",
	       PKI_DEFAULT_CA_CN, PKI_MAX_DAYS, PKI_DEFAULT_CA_DAYS);
}

int cmd_ca(int argc, char **argv)
{
	static const struct option opts[] = {
		{"out", required_argument, NULL, 'o'}, {"cn", required_argument, NULL, 'c'},
		{"days", required_argument, NULL, 'd'}, {"force", no_argument, NULL, 'f'},
		{"help", no_argument, NULL, 'h'},       {NULL, 0, NULL, 0},
	};
	const char *out = NULL, *cn = PKI_DEFAULT_CA_CN;
	int64_t days = PKI_DEFAULT_CA_DAYS;
	bool force = false;
	int c;
	opterr = 0;
	optind = 1;
	while ((c = getopt_long(argc, argv, ":h", opts, NULL)) != -1) {
		switch (c) {
		case 'o': out = optarg; break;
		case 'c': cn = optarg; break;
		case 'd':
			if (!pki_parse_i64(optarg, 1, PKI_MAX_DAYS, &days))
				return pki_usage("ca", "--days must be a whole number from 1 to %d",
						 PKI_MAX_DAYS);
			break;
		case 'f': force = true; break;
		case 'h': ca_help(); return PKI_EXIT_OK;
		default: return opt_error("ca", c, argv);
		}
	}
	if (optind < argc)
		return pki_usage("ca", "unexpected argument '%s'", argv[optind]);
	if (!out)
		return pki_usage("ca", "--out DIR is required");
	if (!ident_cn_ok(cn))
		return pki_usage("ca", "--cn must be 1 to %d bytes without control characters",
				 IDENT_CN_MAX);
	if (prepare_dir(out) != 0 || check_pair_absent(out, "ca", force) != 0)
		return PKI_EXIT_RUNTIME;
	X509 *cert;
	EVP_PKEY *key;
	if (make_ca(out, cn, days, force, &cert, &key) != 0)
		return PKI_EXIT_RUNTIME;
	printf("wrote %s/ca.crt and %s/ca.key\n", out, out);
	X509_free(cert);
	EVP_PKEY_free(key);
	return PKI_EXIT_OK;
}

/* ---- issue ---- */

static void issue_help(void)
{
	printf("Usage: mimir-pki issue --ca DIR --role ROLE --name NAME --out DIR [OPTIONS]\n"
	       "\n"
	       "Issues a leaf certificate (mutual TLS, server and client) signed by the CA in\n"
	       "DIR/ca.crt + DIR/ca.key: writes OUT/NAME.crt and OUT/NAME.key (mode 0600).\n"
	       "\n"
	       "  --ca DIR            directory holding ca.crt and ca.key\n"
	       "  --role ROLE         party | dealer | gateway | session | attest | client | admin\n"
	       "  --name NAME         subject CN and file name ([A-Za-z0-9._-], up to 64)\n"
	       "  --out DIR           output directory (created if missing)\n"
	       "  --dns NAME          DNS subject alternative name (repeatable, up to %d)\n"
	       "  --ip ADDR           IPv4 or IPv6 subject alternative name (repeatable, up to %d)\n"
	       "  --platform P        none | simulated | sev-snp | tdx | nitro (default none)\n"
	       "  --measurement HEX   TEE measurement, up to %d bytes (default empty)\n"
	       "  --evidence-hash HEX SHA-256 of the attestation evidence (32 bytes)\n"
	       "  --no-extension      issue without the Mimir identity extension (tests)\n"
	       "  --days N            validity in days from now, 1..%d (default %d)\n"
	       "  --not-before UNIX   start of validity, unix seconds (default now - %d s)\n"
	       "  --not-after UNIX    end of validity, unix seconds (instead of --days)\n"
	       "  --force             replace existing files\n"
	       "  -h, --help          this help\n",
	       IDENT_MAX_DNS, IDENT_MAX_IP, IDENT_MEASUREMENT_MAX, PKI_MAX_DAYS,
	       PKI_DEFAULT_LEAF_DAYS, PKI_BACKDATE_SECS);
}

int cmd_issue(int argc, char **argv)
{
	enum { O_CA = 1000, O_ROLE, O_NAME, O_OUT, O_DNS, O_IP, O_PLATFORM, O_MEAS, O_EVID,
	       O_NOEXT, O_DAYS, O_NB, O_NA, O_FORCE };
	static const struct option opts[] = {
		{"ca", required_argument, NULL, O_CA},
		{"role", required_argument, NULL, O_ROLE},
		{"name", required_argument, NULL, O_NAME},
		{"out", required_argument, NULL, O_OUT},
		{"dns", required_argument, NULL, O_DNS},
		{"ip", required_argument, NULL, O_IP},
		{"platform", required_argument, NULL, O_PLATFORM},
		{"measurement", required_argument, NULL, O_MEAS},
		{"evidence-hash", required_argument, NULL, O_EVID},
		{"no-extension", no_argument, NULL, O_NOEXT},
		{"days", required_argument, NULL, O_DAYS},
		{"not-before", required_argument, NULL, O_NB},
		{"not-after", required_argument, NULL, O_NA},
		{"force", no_argument, NULL, O_FORCE},
		{"help", no_argument, NULL, 'h'},
		{NULL, 0, NULL, 0},
	};
	const char *ca_dir = NULL, *name = NULL, *out = NULL, *role_s = NULL, *plat_s = NULL;
	const char *dns[IDENT_MAX_DNS], *ip[IDENT_MAX_IP];
	size_t n_dns = 0, n_ip = 0;
	struct ident_ext ext = {.platform = IDENT_PLATFORM_NONE};
	bool no_ext = false, force = false, have_days = false, have_nb = false, have_na = false;
	bool have_meas = false;
	int64_t days = PKI_DEFAULT_LEAF_DAYS, nb = 0, na = 0;
	int c;
	opterr = 0;
	optind = 1;
	while ((c = getopt_long(argc, argv, ":h", opts, NULL)) != -1) {
		switch (c) {
		case O_CA: ca_dir = optarg; break;
		case O_ROLE: role_s = optarg; break;
		case O_NAME: name = optarg; break;
		case O_OUT: out = optarg; break;
		case O_DNS:
			if (n_dns == IDENT_MAX_DNS)
				return pki_usage("issue", "at most %d --dns names", IDENT_MAX_DNS);
			if (!ident_dns_name_ok(optarg))
				return pki_usage("issue", "--dns '%s' is not a valid host name",
						 optarg);
			dns[n_dns++] = optarg;
			break;
		case O_IP:
			if (n_ip == IDENT_MAX_IP)
				return pki_usage("issue", "at most %d --ip addresses", IDENT_MAX_IP);
			if (!pki_ip_ok(optarg))
				return pki_usage("issue", "--ip '%s' is not an IPv4 or IPv6 address",
						 optarg);
			ip[n_ip++] = optarg;
			break;
		case O_PLATFORM: plat_s = optarg; break;
		case O_MEAS:
			if (!pki_parse_hex(optarg, ext.measurement, IDENT_MEASUREMENT_MAX,
					   &ext.measurement_len))
				return pki_usage("issue",
						 "--measurement must be hex of at most %d bytes",
						 IDENT_MEASUREMENT_MAX);
			have_meas = true;
			break;
		case O_EVID: {
			size_t n = 0;
			if (!pki_parse_hex(optarg, ext.evidence_hash, IDENT_EVIDENCE_HASH_LEN, &n) ||
			    n != IDENT_EVIDENCE_HASH_LEN)
				return pki_usage("issue", "--evidence-hash must be 64 hex digits");
			ext.has_evidence_hash = true;
			break;
		}
		case O_NOEXT: no_ext = true; break;
		case O_DAYS:
			if (!pki_parse_i64(optarg, 1, PKI_MAX_DAYS, &days))
				return pki_usage("issue", "--days must be a whole number from 1 to %d",
						 PKI_MAX_DAYS);
			have_days = true;
			break;
		case O_NB:
		case O_NA:
			if (!pki_parse_i64(optarg, 0, PKI_TIME_MAX, c == O_NB ? &nb : &na))
				return pki_usage("issue", "--%s must be unix seconds (0..%lld)",
						 c == O_NB ? "not-before" : "not-after", PKI_TIME_MAX);
			*(c == O_NB ? &have_nb : &have_na) = true;
			break;
		case O_FORCE: force = true; break;
		case 'h': issue_help(); return PKI_EXIT_OK;
		default: return opt_error("issue", c, argv);
		}
	}
	if (optind < argc)
		return pki_usage("issue", "unexpected argument '%s'", argv[optind]);
	if (!ca_dir || !name || !out)
		return pki_usage("issue", "--ca, --name and --out are required");
	if (!pki_name_ok(name))
		return pki_usage("issue",
				 "--name '%s' must be 1 to 64 of [A-Za-z0-9._-], not starting with "
				 "'.' or '-'",
				 name);
	if (no_ext && (role_s || plat_s || have_meas || ext.has_evidence_hash))
		return pki_usage("issue", "--no-extension excludes --role, --platform, "
					  "--measurement and --evidence-hash");
	if (!no_ext && !role_s)
		return pki_usage("issue", "--role is required (or --no-extension)");
	if (role_s && ident_role_parse(role_s, &ext.role) != 0)
		return pki_usage("issue",
				 "unknown --role '%s' (party, dealer, gateway, session, attest, "
				 "client, admin)",
				 role_s);
	if (plat_s && ident_platform_parse(plat_s, &ext.platform) != 0)
		return pki_usage("issue",
				 "unknown --platform '%s' (none, simulated, sev-snp, tdx, nitro)",
				 plat_s);
	if (have_days && have_na)
		return pki_usage("issue", "--days and --not-after exclude each other");
	int64_t now = now_secs();
	if (!have_nb)
		nb = now - PKI_BACKDATE_SECS;
	if (!have_na)
		na = now + days * 86400;
	if (na <= nb)
		return pki_usage("issue", "the end of validity must be later than its start");

	if (!no_ext)
		warn_platform(ext.platform);
	X509 *ca = NULL;
	EVP_PKEY *ca_key = NULL;
	int ret = PKI_EXIT_RUNTIME;
	if (pki_load_ca(ca_dir, &ca, &ca_key) != 0 || prepare_dir(out) != 0 ||
	    check_pair_absent(out, name, force) != 0)
		goto out;
	struct ident_leaf_spec spec = {
		.cn = name, .dns = dns, .n_dns = n_dns, .ip = ip, .n_ip = n_ip,
		.not_before = nb, .not_after = na, .ext = no_ext ? NULL : &ext,
	};
	if (make_leaf(out, name, &spec, ca, ca_key, force) != 0)
		goto out;
	printf("wrote %s/%s.crt and %s/%s.key\n", out, name, out, name);
	ret = PKI_EXIT_OK;
out:
	X509_free(ca);
	EVP_PKEY_free(ca_key);
	return ret;
}

/* ---- dev ---- */

static void dev_help(void)
{
	printf("Usage: mimir-pki dev --out DIR [--parties N] [--ip ADDR]... [--dns NAME]...\n"
	       "\n"
	       "Creates a development PKI in DIR: a CA (ca.crt, ca.key) and a certificate and\n"
	       "key for gateway, session, dealer, attest, party0..party{N-1}, client and\n"
	       "admin, each with the role of its name and the SANs localhost, 127.0.0.1, ::1\n"
	       "plus those given.\n"
	       "\n"
	       "  --out DIR       output directory (created if missing)\n"
	       "  --parties N     number of parties, 2..64 (default 3)\n"
	       "  --dns NAME      extra DNS name for every certificate (repeatable)\n"
	       "  --ip ADDR       extra IP address for every certificate (repeatable)\n"
	       "  --platform P    platform in every certificate (default none)\n"
	       "  --days N        leaf validity in days, 1..%d (default %d; the CA gets %d)\n"
	       "  --force         replace existing files\n"
	       "  -h, --help      this help\n",
	       PKI_DEFAULT_CA_DAYS - 1, PKI_DEFAULT_LEAF_DAYS, PKI_DEFAULT_CA_DAYS);
}

#define DEV_MAX_PARTIES 64

int cmd_dev(int argc, char **argv)
{
	enum { O_OUT = 1000, O_PARTIES, O_DNS, O_IP, O_PLATFORM, O_DAYS, O_FORCE };
	static const struct option opts[] = {
		{"out", required_argument, NULL, O_OUT},
		{"parties", required_argument, NULL, O_PARTIES},
		{"dns", required_argument, NULL, O_DNS},
		{"ip", required_argument, NULL, O_IP},
		{"platform", required_argument, NULL, O_PLATFORM},
		{"days", required_argument, NULL, O_DAYS},
		{"force", no_argument, NULL, O_FORCE},
		{"help", no_argument, NULL, 'h'},
		{NULL, 0, NULL, 0},
	};
	const char *out = NULL;
	const char *dns[IDENT_MAX_DNS] = {"localhost"}, *ip[IDENT_MAX_IP] = {"127.0.0.1", "::1"};
	size_t n_dns = 1, n_ip = 2;
	int64_t parties = 3, days = PKI_DEFAULT_LEAF_DAYS;
	enum ident_platform platform = IDENT_PLATFORM_NONE;
	bool force = false;
	int c;
	opterr = 0;
	optind = 1;
	while ((c = getopt_long(argc, argv, ":h", opts, NULL)) != -1) {
		switch (c) {
		case O_OUT: out = optarg; break;
		case O_PARTIES:
			if (!pki_parse_i64(optarg, 2, DEV_MAX_PARTIES, &parties))
				return pki_usage("dev", "--parties must be a whole number from 2 to %d",
						 DEV_MAX_PARTIES);
			break;
		case O_DNS:
			if (!ident_dns_name_ok(optarg))
				return pki_usage("dev", "--dns '%s' is not a valid host name", optarg);
			if (n_dns == IDENT_MAX_DNS)
				return pki_usage("dev", "at most %d --dns names besides localhost",
						 IDENT_MAX_DNS - 1);
			dns[n_dns++] = optarg;
			break;
		case O_IP:
			if (!pki_ip_ok(optarg))
				return pki_usage("dev", "--ip '%s' is not an IPv4 or IPv6 address",
						 optarg);
			if (n_ip == IDENT_MAX_IP)
				return pki_usage("dev", "at most %d --ip addresses besides 127.0.0.1 "
							"and ::1",
						 IDENT_MAX_IP - 2);
			ip[n_ip++] = optarg;
			break;
		case O_PLATFORM:
			if (ident_platform_parse(optarg, &platform) != 0)
				return pki_usage("dev",
						 "unknown --platform '%s' (none, simulated, sev-snp, "
						 "tdx, nitro)",
						 optarg);
			break;
		case O_DAYS:
			if (!pki_parse_i64(optarg, 1, PKI_DEFAULT_CA_DAYS - 1, &days))
				return pki_usage("dev", "--days must be a whole number from 1 to %d",
						 PKI_DEFAULT_CA_DAYS - 1);
			break;
		case O_FORCE: force = true; break;
		case 'h': dev_help(); return PKI_EXIT_OK;
		default: return opt_error("dev", c, argv);
		}
	}
	if (optind < argc)
		return pki_usage("dev", "unexpected argument '%s'", argv[optind]);
	if (!out)
		return pki_usage("dev", "--out DIR is required");
	warn_platform(platform);

	/* The plan: fixed services, then the parties, then the two users. */
	struct {
		char name[32];
		enum ident_role role;
	} plan[4 + DEV_MAX_PARTIES + 2];
	size_t n = 0;
	static const struct {
		const char *name;
		enum ident_role role;
	} fixed[] = {{"gateway", IDENT_ROLE_GATEWAY},
		     {"session", IDENT_ROLE_SESSION},
		     {"dealer", IDENT_ROLE_DEALER},
		     {"attest", IDENT_ROLE_ATTEST}};
	for (size_t i = 0; i < 4; i++, n++) {
		snprintf(plan[n].name, sizeof plan[n].name, "%s", fixed[i].name);
		plan[n].role = fixed[i].role;
	}
	for (int64_t i = 0; i < parties; i++, n++) {
		snprintf(plan[n].name, sizeof plan[n].name, "party%lld", (long long)i);
		plan[n].role = IDENT_ROLE_PARTY;
	}
	snprintf(plan[n].name, sizeof plan[n].name, "client");
	plan[n++].role = IDENT_ROLE_CLIENT;
	snprintf(plan[n].name, sizeof plan[n].name, "admin");
	plan[n++].role = IDENT_ROLE_ADMIN;

	/* Nothing is written unless everything can be. */
	if (prepare_dir(out) != 0 || check_pair_absent(out, "ca", force) != 0)
		return PKI_EXIT_RUNTIME;
	for (size_t i = 0; i < n; i++)
		if (check_pair_absent(out, plan[i].name, force) != 0)
			return PKI_EXIT_RUNTIME;

	X509 *ca;
	EVP_PKEY *ca_key;
	if (make_ca(out, PKI_DEFAULT_CA_CN, PKI_DEFAULT_CA_DAYS, force, &ca, &ca_key) != 0)
		return PKI_EXIT_RUNTIME;
	int ret = PKI_EXIT_OK;
	int64_t now = now_secs();
	for (size_t i = 0; i < n; i++) {
		struct ident_ext ext = {.role = plan[i].role, .platform = platform};
		struct ident_leaf_spec spec = {
			.cn = plan[i].name, .dns = dns, .n_dns = n_dns, .ip = ip, .n_ip = n_ip,
			.not_before = now - PKI_BACKDATE_SECS, .not_after = now + days * 86400,
			.ext = &ext,
		};
		if (make_leaf(out, plan[i].name, &spec, ca, ca_key, force) != 0) {
			ret = PKI_EXIT_RUNTIME;
			break;
		}
	}
	X509_free(ca);
	EVP_PKEY_free(ca_key);
	if (ret == PKI_EXIT_OK)
		printf("wrote a development PKI to %s: ca and %zu certificates (%lld parties)\n",
		       out, n, (long long)parties);
	return ret;
}
