/* ident: reads the identity a handler sees out of a peer certificate the TLS layer has
 * already verified. Everything copied out is bounded and checked (CN and SAN lengths
 * and characters, SAN counts, serial size), and ambiguity is refused rather than
 * resolved by a guess: two CNs, two SAN or Mimir extensions, or a certificate whose
 * bytes are not canonical DER (so that one certificate has one fingerprint) are all
 * ERR_PARSE. */
#include <arpa/inet.h>
#include <openssl/err.h>
#include <openssl/evp.h>
#include <openssl/x509.h>
#include <openssl/x509v3.h>
#include <string.h>
#include <time.h>

#include "err/err.h"
#include "ident/ident.h"
#include "ident_int.h"

int ident_time_unix(const ASN1_TIME *t, int64_t *out)
{
	struct tm tm;
	memset(&tm, 0, sizeof tm);
	if (!t || !ASN1_TIME_to_tm(t, &tm))
		return ERR_PARSE;
	*out = (int64_t)timegm(&tm);
	return 0;
}

/* A UTF-8 string with no control character (so it can go to a log line or a key:
 * value output as it is) of 1..max bytes, into dst (max + 1 bytes). */
static int copy_text(char *dst, size_t max, const unsigned char *s, int len, bool ascii_only)
{
	if (len <= 0 || (size_t)len > max)
		return ERR_PARSE;
	for (int i = 0; i < len; i++)
		if (s[i] < 0x20 || s[i] == 0x7f || (ascii_only && (s[i] == ' ' || s[i] > 0x7e)))
			return ERR_PARSE;
	memcpy(dst, s, (size_t)len);
	dst[len] = '\0';
	return 0;
}

static int read_cn(const X509 *x, struct ident *out)
{
	const X509_NAME *name = X509_get_subject_name(x);
	int idx = X509_NAME_get_index_by_NID(name, NID_commonName, -1);
	if (idx < 0)
		return 0;
	if (X509_NAME_get_index_by_NID(name, NID_commonName, idx) >= 0)
		return ERR_PARSE;
	const ASN1_STRING *s = X509_NAME_ENTRY_get_data(X509_NAME_get_entry(name, idx));
	unsigned char *utf8 = NULL;
	int len = s ? ASN1_STRING_to_UTF8(&utf8, s) : -1;
	int rc = len < 0 ? ERR_PARSE : copy_text(out->cn, IDENT_CN_MAX, utf8, len, false);
	OPENSSL_free(utf8);
	return rc;
}

static int read_sans(const X509 *x, struct ident *out)
{
	int crit = -1;
	GENERAL_NAMES *gens = X509_get_ext_d2i(x, NID_subject_alt_name, &crit, NULL);
	if (!gens)
		return crit == -1 ? 0 : ERR_PARSE; /* -1 absent; -2 duplicated; >= 0 malformed */
	int rc = 0;
	for (int i = 0; rc == 0 && i < sk_GENERAL_NAME_num(gens); i++) {
		const GENERAL_NAME *g = sk_GENERAL_NAME_value(gens, i);
		if (g->type == GEN_DNS) {
			if (out->n_dns == IDENT_MAX_DNS) {
				rc = ERR_TOO_LARGE;
				break;
			}
			rc = copy_text(out->dns[out->n_dns++], IDENT_DNS_MAX,
				       ASN1_STRING_get0_data(g->d.dNSName),
				       ASN1_STRING_length(g->d.dNSName), true);
		} else if (g->type == GEN_IPADD) {
			int len = ASN1_STRING_length(g->d.iPAddress);
			if (out->n_ip == IDENT_MAX_IP) {
				rc = ERR_TOO_LARGE;
				break;
			}
			if ((len != 4 && len != 16) ||
			    !inet_ntop(len == 4 ? AF_INET : AF_INET6,
				       ASN1_STRING_get0_data(g->d.iPAddress), out->ip[out->n_ip++],
				       IDENT_IP_STR_MAX))
				rc = ERR_PARSE;
		}
		/* Other name forms (email, URI, ...) are not part of a Mimir identity. */
	}
	GENERAL_NAMES_free(gens);
	return rc;
}

static int read_serial(const X509 *x, struct ident *out)
{
	static const char hex[] = "0123456789abcdef";
	const ASN1_INTEGER *sn = X509_get0_serialNumber(x);
	int len = ASN1_STRING_length(sn);
	const unsigned char *d = ASN1_STRING_get0_data(sn);
	if (ASN1_STRING_type(sn) != V_ASN1_INTEGER || len < 0 || len > 20)
		return ERR_PARSE;
	if (len == 0) {
		memcpy(out->serial, "00", 3);
		return 0;
	}
	for (int i = 0; i < len; i++) {
		out->serial[2 * i] = hex[d[i] >> 4];
		out->serial[2 * i + 1] = hex[d[i] & 15];
	}
	out->serial[2 * len] = '\0';
	return 0;
}

static int read_ext(const X509 *x, struct ident *out)
{
	X509_EXTENSION *ex;
	int rc = ident_ext_find(x, &ex);
	if (rc != 0 || !ex)
		return rc;
	const ASN1_OCTET_STRING *v = X509_EXTENSION_get_data(ex);
	struct ident_ext e;
	rc = ident_ext_decode(ASN1_STRING_get0_data(v), (size_t)ASN1_STRING_length(v), &e);
	if (rc != 0)
		return ERR_PARSE;
	out->has_extension = true;
	out->role = e.role;
	out->platform = e.platform;
	memcpy(out->measurement, e.measurement, e.measurement_len);
	out->measurement_len = e.measurement_len;
	out->has_evidence_hash = e.has_evidence_hash;
	memcpy(out->evidence_hash, e.evidence_hash, sizeof out->evidence_hash);
	return 0;
}

int ident_from_x509(const X509 *x, struct ident *out)
{
	if (!out)
		return ERR_INVALID;
	memset(out, 0, sizeof *out);
	if (!x)
		return ERR_INVALID;
	unsigned int fplen = 0;
	ERR_set_mark();
	int rc = read_cn(x, out);
	if (rc == 0)
		rc = read_ext(x, out);
	if (rc == 0)
		rc = read_sans(x, out);
	if (rc == 0)
		rc = read_serial(x, out);
	if (rc == 0)
		rc = ident_time_unix(X509_get0_notBefore(x), &out->not_before);
	if (rc == 0)
		rc = ident_time_unix(X509_get0_notAfter(x), &out->not_after);
	if (rc == 0 && (!X509_digest(x, EVP_sha256(), out->fingerprint, &fplen) ||
			fplen != sizeof out->fingerprint))
		rc = ERR_CRYPTO;
	ERR_pop_to_mark();
	if (rc != 0)
		memset(out, 0, sizeof *out);
	return rc;
}

int ident_from_der(const uint8_t *der, size_t len, struct ident *out)
{
	if (!out || (!der && len))
		return ERR_INVALID;
	memset(out, 0, sizeof *out);
	if (len > IDENT_CERT_DER_MAX)
		return ERR_TOO_LARGE;
	if (len == 0)
		return ERR_PARSE;
	int rc = ERR_PARSE;
	unsigned char *re = NULL;
	const unsigned char *p = der;
	ERR_set_mark();
	X509 *x = d2i_X509(NULL, &p, (long)len);
	if (!x || p != der + len)
		goto out;
	/* Canonical DER only: the fingerprint X509_digest computes over OpenSSL's
	 * re-encoding is then the hash of the bytes the peer sent. */
	int n = i2d_X509(x, &re);
	if (n < 0 || (size_t)n != len || memcmp(re, der, len) != 0)
		goto out;
	rc = ident_from_x509(x, out);
out:
	ERR_pop_to_mark();
	OPENSSL_free(re);
	X509_free(x);
	return rc;
}
