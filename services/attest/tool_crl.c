/* mimir-attest crl: the refresher of a service's tls.crl. It fetches the attest
 * service's CRL, checks that the attestation CA signed it and that it is not older
 * than the CRL already in the file (a lower CRL number would bring revoked
 * certificates back), and replaces the file atomically, which the services notice
 * within a second (or at SIGHUP). Run it from a timer more often than crl.validity_s / 2
 * (the service re-signs its CRL by then). */
#define _GNU_SOURCE
#include <getopt.h>
#include <openssl/bn.h>
#include <openssl/err.h>
#include <openssl/pem.h>
#include <openssl/x509.h>
#include <openssl/x509v3.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#include "httpc/httpc.h"
#include "tool.h"

/* A CRL from DER or PEM bytes (exactly one, nothing after it), or NULL. */
static X509_CRL *crl_parse(const uint8_t *data, size_t len)
{
	X509_CRL *crl = NULL;
	ERR_set_mark();
	if (len >= 10 && memcmp(data, "-----BEGIN", 10) == 0) {
		BIO *b = BIO_new_mem_buf(data, (int)len);
		crl = b ? PEM_read_bio_X509_CRL(b, NULL, NULL, NULL) : NULL;
		BIO_free(b);
	} else {
		const unsigned char *p = data;
		crl = d2i_X509_CRL(NULL, &p, (long)len);
		if (crl && p != data + len) {
			X509_CRL_free(crl);
			crl = NULL;
		}
	}
	ERR_pop_to_mark();
	return crl;
}

/* The CRL number, or -1 when absent or too large for the comparison. */
static long long crl_number(X509_CRL *crl)
{
	ASN1_INTEGER *n = X509_CRL_get_ext_d2i(crl, NID_crl_number, NULL, NULL);
	long long v = -1;
	int64_t i64;
	if (n && ASN1_INTEGER_get_int64(&i64, n) == 1 && i64 >= 0)
		v = (long long)i64;
	ASN1_INTEGER_free(n);
	return v;
}

/* True when one of the PEM certificates of issuer_path signed crl. */
static bool signed_by(X509_CRL *crl, const char *issuer_path)
{
	FILE *f = fopen(issuer_path, "r");
	bool ok = false;
	if (!f)
		return false;
	X509 *x;
	ERR_set_mark();
	while (!ok && (x = PEM_read_X509(f, NULL, NULL, NULL))) {
		ok = X509_NAME_cmp(X509_get_subject_name(x), X509_CRL_get_issuer(crl)) == 0 &&
		     X509_CRL_verify(crl, X509_get0_pubkey(x)) == 1;
		X509_free(x);
	}
	ERR_pop_to_mark();
	fclose(f);
	return ok;
}

static int64_t asn1_unix(const ASN1_TIME *t)
{
	struct tm tm;
	return t && ASN1_TIME_to_tm(t, &tm) == 1 ? (int64_t)timegm(&tm) : 0;
}

int cmd_crl(int argc, char **argv)
{
	static const struct option opts[] = {
		{"url", required_argument, NULL, 'u'},	  {"ca", required_argument, NULL, 'a'},
		{"issuer", required_argument, NULL, 'i'}, {"out", required_argument, NULL, 'o'},
		{"cert", required_argument, NULL, 'c'},	  {"key", required_argument, NULL, 'k'},
		{"pem", no_argument, NULL, 'p'},	  {"help", no_argument, NULL, 'h'},
		{NULL, 0, NULL, 0},
	};
	const char *url = NULL, *ca = NULL, *issuer = NULL, *out = NULL, *cert = NULL, *key = NULL;
	bool pem = false;
	int c;
	optind = 1;
	opterr = 0;
	while ((c = getopt_long(argc, argv, ":h", opts, NULL)) != -1) {
		switch (c) {
		case 'u': url = optarg; break;
		case 'a': ca = optarg; break;
		case 'i': issuer = optarg; break;
		case 'o': out = optarg; break;
		case 'c': cert = optarg; break;
		case 'k': key = optarg; break;
		case 'p': pem = true; break;
		case 'h':
			puts("Usage: mimir-attest crl --url URL --ca FILE --issuer FILE --out FILE\n"
			     "                        [--cert FILE --key FILE] [--pem]\n"
			     "\n"
			     "Fetches the attest service's CRL (GET /v1/crl) into FILE, the tls.crl of the\n"
			     "services: --ca is the CA of the attest service's TLS certificate, --issuer the\n"
			     "attestation CA that must have signed the CRL. A CRL older than the one already\n"
			     "in FILE (lower CRL number) is refused. FILE is replaced atomically, DER unless\n"
			     "--pem; services reload it within a second.");
			return TOOL_EXIT_OK;
		default: return tool_opt_error("crl", c, argv);
		}
	}
	if (optind < argc)
		return tool_usage("crl", "unexpected argument '%s'", argv[optind]);
	if (!url || !ca || !issuer || !out)
		return tool_usage("crl", "--url, --ca, --issuer and --out are required");
	if (!!cert != !!key)
		return tool_usage("crl", "--cert and --key go together");
	struct httpc_opts ho = {.base_url = url, .ca_file = ca, .cert_file = cert, .key_file = key,
				.expect_role = IDENT_ROLE_NONE, .retries = 2, .max_response = 64u << 20};
	struct httpc *h = NULL;
	struct httpc_resp r = {0};
	X509_CRL *crl = NULL, *old = NULL;
	uint8_t *prev = NULL;
	size_t prev_len = 0;
	int code = TOOL_EXIT_FAIL;
	if (httpc_new(&h, &ho) != 0) {
		tool_fail("cannot set up the request");
		goto out;
	}
	if (httpc_request(h, "GET", pem ? "/v1/crl?format=pem" : "/v1/crl", NULL, NULL, NULL, 0, &r) != 0) {
		tool_fail("cannot reach %s: %s", url, r.error);
		goto out;
	}
	if (r.status != 200) {
		tool_fail("the service answered HTTP %ld: %s", r.status, r.body ? r.body : "");
		goto out;
	}
	if (!(crl = crl_parse((const uint8_t *)r.body, r.len))) {
		tool_fail("the answer is not a CRL");
		goto out;
	}
	if (!signed_by(crl, issuer)) {
		tool_fail("the CRL is not signed by the CA in %s; nothing written", issuer);
		goto out;
	}
	long long number = crl_number(crl);
	struct stat st;
	if (stat(out, &st) == 0) {
		if (tool_read(out, &prev, &prev_len) != 0)
			goto out;
		old = crl_parse(prev, prev_len);
		long long was = old ? crl_number(old) : -1;
		if (old && X509_NAME_cmp(X509_CRL_get_issuer(old), X509_CRL_get_issuer(crl)) == 0 && was > number) {
			tool_fail("the fetched CRL (number %lld) is older than the one in %s (number %lld); "
				  "nothing written",
				  number, out, was);
			goto out;
		}
	}
	if (tool_write_replace(out, r.body, r.len, 0644) != 0)
		goto out;
	char nu[32] = "none";
	if (X509_CRL_get0_nextUpdate(crl))
		tool_time(asn1_unix(X509_CRL_get0_nextUpdate(crl)), nu, sizeof nu);
	STACK_OF(X509_REVOKED) *rv = X509_CRL_get_REVOKED(crl);
	printf("wrote %s: %d revoked, CRL number %lld, next update %s\n", out, rv ? sk_X509_REVOKED_num(rv) : 0,
	       number, nu);
	code = TOOL_EXIT_OK;
out:
	X509_CRL_free(crl);
	X509_CRL_free(old);
	free(prev);
	httpc_resp_free(&r);
	httpc_free(h);
	return code;
}
