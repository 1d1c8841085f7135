/* mimir-pki show: prints the identity a Mimir service reads from a certificate, through
 * the same parser the services use (ident_from_der), so what is shown is what a handler
 * would see, and a certificate a service would refuse is refused here too. */
#include <getopt.h>
#include <jansson.h>
#include <openssl/bio.h>
#include <openssl/err.h>
#include <openssl/x509.h>
#include <sodium.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "err/err.h"
#include "ident/ident.h"
#include "pki.h"

static void show_help(void)
{
	puts("Usage: mimir-pki show [--json] FILE\n"
	     "\n"
	     "Prints the Mimir identity of a certificate (PEM or DER): subject CN, issuer,\n"
	     "role, platform, measurement, SANs, validity, serial and SHA-256 fingerprint,\n"
	     "as 'key: value' lines or, with --json, one JSON object.\n"
	     "\n"
	     "  --json       JSON output\n"
	     "  -h, --help   this help");
}

static void iso_time(char *buf, size_t cap, int64_t t)
{
	struct tm tm;
	time_t tt = (time_t)t;
	if (!gmtime_r(&tt, &tm) || !strftime(buf, cap, "%Y-%m-%dT%H:%M:%SZ", &tm))
		snprintf(buf, cap, "%lld", (long long)t);
}

/* RFC 2253 form of the issuer name, for orientation only. */
static void issuer_of(const uint8_t *der, size_t len, char *buf, size_t cap)
{
	const unsigned char *p = der;
	X509 *x = d2i_X509(NULL, &p, (long)len);
	BIO *b = BIO_new(BIO_s_mem());
	buf[0] = '\0';
	if (x && b && X509_NAME_print_ex(b, X509_get_issuer_name(x), 0, XN_FLAG_RFC2253) >= 0) {
		int n = BIO_read(b, buf, (int)cap - 1);
		buf[n > 0 ? n : 0] = '\0';
	}
	BIO_free(b);
	X509_free(x);
}

static const char *status_of(const struct ident *id, int64_t now)
{
	if (now < id->not_before)
		return "not-yet-valid";
	return now > id->not_after ? "expired" : "valid";
}

static void print_list(const char *key, const char *items, size_t stride, size_t n)
{
	printf("%s:", key);
	for (size_t i = 0; i < n; i++)
		printf("%s%s", i ? ", " : " ", items + i * stride);
	putchar('\n');
}

static int print_text(const struct ident *id, const char *issuer, const char *meas,
		      const char *evid, const char *fp, int64_t now)
{
	char nb[32], na[32];
	iso_time(nb, sizeof nb, id->not_before);
	iso_time(na, sizeof na, id->not_after);
	printf("cn: %s\n", id->cn);
	printf("issuer: %s\n", issuer);
	printf("extension: %s\n", id->has_extension ? "present" : "absent");
	printf("role: %s\n", ident_role_name(id->role));
	printf("platform: %s\n", ident_platform_name(id->platform));
	printf("measurement:%s%s\n", *meas ? " " : "", meas);
	printf("evidence_hash:%s%s\n", *evid ? " " : "", evid);
	print_list("dns", &id->dns[0][0], sizeof id->dns[0], id->n_dns);
	print_list("ip", &id->ip[0][0], sizeof id->ip[0], id->n_ip);
	printf("not_before: %s\n", nb);
	printf("not_after: %s\n", na);
	printf("status: %s\n", status_of(id, now));
	printf("serial: %s\n", id->serial);
	printf("fingerprint_sha256: %s\n", fp);
	return fflush(stdout) == 0 ? PKI_EXIT_OK : pki_fail("cannot write the output");
}

static int print_json(const struct ident *id, const char *issuer, const char *meas,
		      const char *evid, const char *fp, int64_t now)
{
	char nb[32], na[32];
	iso_time(nb, sizeof nb, id->not_before);
	iso_time(na, sizeof na, id->not_after);
	json_t *dns = json_array(), *ip = json_array();
	for (size_t i = 0; dns && i < id->n_dns; i++)
		json_array_append_new(dns, json_string(id->dns[i]));
	for (size_t i = 0; ip && i < id->n_ip; i++)
		json_array_append_new(ip, json_string(id->ip[i]));
	json_t *j = json_pack("{s:s, s:s, s:b, s:s, s:s, s:s, s:s?, s:o, s:o, s:s, s:I, s:s, "
			      "s:I, s:s, s:s, s:s}",
			      "cn", id->cn, "issuer", issuer, "extension", id->has_extension,
			      "role", ident_role_name(id->role), "platform",
			      ident_platform_name(id->platform), "measurement", meas,
			      "evidence_hash", *evid ? evid : NULL, "dns", dns, "ip", ip,
			      "not_before", nb, "not_before_unix", (json_int_t)id->not_before,
			      "not_after", na, "not_after_unix", (json_int_t)id->not_after,
			      "status", status_of(id, now), "serial", id->serial,
			      "fingerprint_sha256", fp);
	char *s = j ? json_dumps(j, JSON_INDENT(2) | JSON_PRESERVE_ORDER) : NULL;
	json_decref(j);
	if (!s)
		return pki_fail("cannot build the JSON output");
	puts(s);
	free(s);
	return fflush(stdout) == 0 ? PKI_EXIT_OK : pki_fail("cannot write the output");
}

int cmd_show(int argc, char **argv)
{
	static const struct option opts[] = {
		{"json", no_argument, NULL, 'j'},
		{"help", no_argument, NULL, 'h'},
		{NULL, 0, NULL, 0},
	};
	bool json = false;
	int c;
	opterr = 0;
	optind = 1;
	while ((c = getopt_long(argc, argv, ":h", opts, NULL)) != -1) {
		switch (c) {
		case 'j': json = true; break;
		case 'h': show_help(); return PKI_EXIT_OK;
		default:
			return pki_usage("show", "unknown option '%s'",
					 optind > 0 ? argv[optind - 1] : "?");
		}
	}
	if (argc - optind != 1)
		return pki_usage("show", "expected exactly one certificate file");
	const char *path = argv[optind];
	uint8_t *der;
	size_t len;
	if (pki_read_cert_der(path, &der, &len) != 0)
		return PKI_EXIT_RUNTIME;
	struct ident id;
	int rc = ident_from_der(der, len, &id);
	if (rc != 0) {
		const unsigned char *p = der;
		X509 *x = d2i_X509(NULL, &p, (long)len);
		ERR_clear_error();
		free(der);
		if (!x)
			return pki_fail("%s: not an X.509 certificate", path);
		X509_free(x);
		return pki_fail("%s: a Mimir service would refuse this certificate: %s (the "
				"identity extension, CN or SANs are malformed or out of bounds)",
				path, err_title(rc));
	}
	char issuer[512], meas[2 * IDENT_MEASUREMENT_MAX + 1], evid[2 * IDENT_EVIDENCE_HASH_LEN + 1];
	char fp[2 * sizeof id.fingerprint + 1];
	issuer_of(der, len, issuer, sizeof issuer);
	free(der);
	sodium_bin2hex(meas, sizeof meas, id.measurement, id.measurement_len);
	evid[0] = '\0';
	if (id.has_evidence_hash)
		sodium_bin2hex(evid, sizeof evid, id.evidence_hash, sizeof id.evidence_hash);
	sodium_bin2hex(fp, sizeof fp, id.fingerprint, sizeof id.fingerprint);
	int64_t now = (int64_t)time(NULL);
	return json ? print_json(&id, issuer, meas, evid, fp, now)
		    : print_text(&id, issuer, meas, evid, fp, now);
}
