/* ident_issue: the Mimir certificate profile. One place builds CA and leaf certificates
 * so that the development PKI (cli/mimir-pki) and the attestation service issue the
 * same thing: ECDSA P-256 keys, SHA-256 signatures, random positive 128-bit serials,
 * and the extensions GnuTLS and OpenSSL both check for mutual TLS. SANs are built as
 * structures from validated names, never through OpenSSL's configuration-string
 * syntax, so a name cannot smuggle in another SAN. */
#include <arpa/inet.h>
#include <openssl/core_names.h>
#include <openssl/err.h>
#include <openssl/evp.h>
#include <openssl/rand.h>
#include <openssl/x509.h>
#include <openssl/x509v3.h>
#include <string.h>

#include "err/err.h"
#include "ident/ident.h"
#include "ident_int.h"

bool ident_cn_ok(const char *s)
{
	size_t n = s ? strnlen(s, IDENT_CN_MAX + 1) : 0;
	if (n == 0 || n > IDENT_CN_MAX)
		return false;
	for (size_t i = 0; i < n; i++)
		if ((unsigned char)s[i] < 0x20 || s[i] == 0x7f)
			return false;
	return true;
}

/* RFC 1123 host names: LDH labels of 1..63 bytes, no leading or trailing hyphen, at
 * most 253 bytes, optionally a leading "*." wildcard label. */
bool ident_dns_name_ok(const char *s)
{
	size_t n = s ? strnlen(s, 254) : 0;
	if (n == 0 || n > 253)
		return false;
	if (s[0] == '*' && s[1] == '.' && n > 2)
		s += 2;
	for (;;) {
		size_t l = 0;
		while (s[l] && s[l] != '.') {
			char c = s[l];
			if (!((c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') ||
			      (c >= '0' && c <= '9') || c == '-'))
				return false;
			l++;
		}
		if (l == 0 || l > 63 || s[0] == '-' || s[l - 1] == '-')
			return false;
		if (!s[l])
			return true;
		s += l + 1;
	}
}

int ident_key_new(EVP_PKEY **out)
{
	if (!out)
		return ERR_INVALID;
	*out = EVP_EC_gen("P-256");
	return *out ? 0 : ERR_CRYPTO;
}

static bool key_is_p256(const EVP_PKEY *k)
{
	char group[32];
	return k && EVP_PKEY_is_a(k, "EC") &&
	       EVP_PKEY_get_utf8_string_param(k, OSSL_PKEY_PARAM_GROUP_NAME, group, sizeof group,
					      NULL) &&
	       strcmp(group, "prime256v1") == 0;
}

static int set_random_serial(X509 *x)
{
	unsigned char b[16], acc = 0;
	int rc = ERR_CRYPTO;
	BIGNUM *bn = NULL;
	ASN1_INTEGER *ai = NULL;
	/* 128 random bits, positive; zero (probability 2^-128) is not a valid serial. */
	do {
		if (RAND_bytes(b, sizeof b) != 1)
			goto out;
		acc = 0;
		for (size_t i = 0; i < sizeof b; i++)
			acc |= b[i];
	} while (acc == 0);
	if (!(bn = BN_bin2bn(b, sizeof b, NULL)) || !(ai = BN_to_ASN1_INTEGER(bn, NULL)) ||
	    !X509_set_serialNumber(x, ai))
		goto out;
	rc = 0;
out:
	ASN1_INTEGER_free(ai);
	BN_free(bn);
	return rc;
}

/* The fields every certificate of the profile shares; issuer NULL: self-issued. */
static int cert_base(X509 *x, const char *cn, int64_t not_before, int64_t not_after,
		     EVP_PKEY *pub, const X509_NAME *issuer)
{
	int rc = set_random_serial(x);
	if (rc != 0)
		return rc;
	rc = ERR_NOMEM;
	X509_NAME *subj = X509_NAME_new();
	if (!subj || !X509_set_version(x, X509_VERSION_3) ||
	    !X509_NAME_add_entry_by_NID(subj, NID_commonName, MBSTRING_UTF8,
					(const unsigned char *)cn, -1, -1, 0) ||
	    !X509_set_subject_name(x, subj) || !X509_set_issuer_name(x, issuer ? issuer : subj) ||
	    !ASN1_TIME_set(X509_getm_notBefore(x), (time_t)not_before) ||
	    !ASN1_TIME_set(X509_getm_notAfter(x), (time_t)not_after) || !X509_set_pubkey(x, pub))
		goto out;
	rc = 0;
out:
	X509_NAME_free(subj);
	return rc;
}

/* One extension from OpenSSL's configuration syntax; only fixed strings come here. */
static int add_conf_ext(X509 *x, X509V3_CTX *ctx, int nid, const char *value)
{
	X509_EXTENSION *ex = X509V3_EXT_nconf_nid(NULL, ctx, nid, value);
	int ok = ex && X509_add_ext(x, ex, -1);
	X509_EXTENSION_free(ex);
	return ok ? 0 : ERR_CRYPTO;
}

/* One SAN entry: a host name (already validated) or a textual IP address. */
static int make_san(const char *name, bool is_ip, GENERAL_NAME **out)
{
	unsigned char addr[16];
	int alen = 0;
	if (is_ip) {
		alen = inet_pton(AF_INET, name, addr) == 1    ? 4
		       : inet_pton(AF_INET6, name, addr) == 1 ? 16
							      : 0;
		if (alen == 0)
			return ERR_INVALID;
	}
	GENERAL_NAME *g = GENERAL_NAME_new();
	ASN1_STRING *v = is_ip ? ASN1_OCTET_STRING_new() : ASN1_IA5STRING_new();
	if (!g || !v ||
	    !(is_ip ? ASN1_OCTET_STRING_set(v, addr, alen) : ASN1_STRING_set(v, name, -1))) {
		ASN1_STRING_free(v);
		GENERAL_NAME_free(g);
		return ERR_NOMEM;
	}
	GENERAL_NAME_set0_value(g, is_ip ? GEN_IPADD : GEN_DNS, v);
	*out = g;
	return 0;
}

static int add_sans(X509 *x, const struct ident_leaf_spec *spec)
{
	size_t n = spec->n_dns + spec->n_ip;
	if (n == 0)
		return 0;
	int rc = ERR_NOMEM;
	GENERAL_NAMES *gens = sk_GENERAL_NAME_new_null();
	if (!gens)
		return rc;
	for (size_t i = 0; i < n; i++) {
		GENERAL_NAME *g;
		bool is_ip = i >= spec->n_dns;
		rc = make_san(is_ip ? spec->ip[i - spec->n_dns] : spec->dns[i], is_ip, &g);
		if (rc != 0)
			goto out;
		if (!sk_GENERAL_NAME_push(gens, g)) {
			GENERAL_NAME_free(g);
			rc = ERR_NOMEM;
			goto out;
		}
	}
	rc = X509_add1_ext_i2d(x, NID_subject_alt_name, gens, 0, X509V3_ADD_APPEND) == 1
		     ? 0
		     : ERR_CRYPTO;
out:
	GENERAL_NAMES_free(gens);
	return rc;
}

static int sign(X509 *x, EVP_PKEY *key)
{
	return X509_sign(x, key, EVP_sha256()) > 0 ? 0 : ERR_CRYPTO;
}

int ident_issue_ca(const char *cn, int64_t not_before, int64_t not_after, EVP_PKEY *key,
		   X509 **out)
{
	if (!out)
		return ERR_INVALID;
	*out = NULL;
	if (!ident_cn_ok(cn) || not_before >= not_after || !key_is_p256(key))
		return ERR_INVALID;
	X509V3_CTX ctx;
	X509 *x = X509_new();
	if (!x)
		return ERR_NOMEM;
	ERR_set_mark();
	int rc = cert_base(x, cn, not_before, not_after, key, NULL);
	if (rc == 0) {
		X509V3_set_ctx(&ctx, x, x, NULL, NULL, 0);
		rc = add_conf_ext(x, &ctx, NID_basic_constraints, "critical,CA:TRUE,pathlen:0");
	}
	if (rc == 0)
		rc = add_conf_ext(x, &ctx, NID_key_usage, "critical,keyCertSign,cRLSign");
	if (rc == 0)
		rc = add_conf_ext(x, &ctx, NID_subject_key_identifier, "hash");
	if (rc == 0)
		rc = sign(x, key);
	ERR_pop_to_mark();
	if (rc != 0) {
		X509_free(x);
		return rc;
	}
	*out = x;
	return 0;
}

static bool spec_ok(const struct ident_leaf_spec *s)
{
	if (!ident_cn_ok(s->cn) || s->n_dns > IDENT_MAX_DNS || s->n_ip > IDENT_MAX_IP ||
	    (s->n_dns && !s->dns) || (s->n_ip && !s->ip) || s->not_before >= s->not_after)
		return false;
	for (size_t i = 0; i < s->n_dns; i++)
		if (!ident_dns_name_ok(s->dns[i]))
			return false;
	for (size_t i = 0; i < s->n_ip; i++)
		if (!s->ip[i])
			return false;
	return true;
}

int ident_issue_leaf(const struct ident_leaf_spec *spec, EVP_PKEY *subject_key, X509 *ca_cert,
		     EVP_PKEY *ca_key, X509 **out)
{
	if (!out)
		return ERR_INVALID;
	*out = NULL;
	if (!spec || !ca_cert || !ca_key || !spec_ok(spec) || !key_is_p256(subject_key))
		return ERR_INVALID;
	int64_t ca_not_after;
	X509 *x = NULL;
	X509V3_CTX ctx;
	ERR_set_mark();
	int rc = ERR_CRYPTO;
	if (X509_check_ca(ca_cert) != 1 || X509_check_private_key(ca_cert, ca_key) != 1)
		goto out;
	rc = ident_time_unix(X509_get0_notAfter(ca_cert), &ca_not_after);
	if (rc != 0)
		goto out;
	if (spec->not_after > ca_not_after) {
		rc = ERR_RANGE;
		goto out;
	}
	rc = ERR_NOMEM;
	if (!(x = X509_new()))
		goto out;
	rc = cert_base(x, spec->cn, spec->not_before, spec->not_after, subject_key,
		       X509_get_subject_name(ca_cert));
	if (rc == 0) {
		X509V3_set_ctx(&ctx, ca_cert, x, NULL, NULL, 0);
		rc = add_conf_ext(x, &ctx, NID_basic_constraints, "critical,CA:FALSE");
	}
	if (rc == 0)
		rc = add_conf_ext(x, &ctx, NID_key_usage, "critical,digitalSignature");
	if (rc == 0)
		rc = add_conf_ext(x, &ctx, NID_ext_key_usage, "serverAuth,clientAuth");
	if (rc == 0)
		rc = add_conf_ext(x, &ctx, NID_subject_key_identifier, "hash");
	if (rc == 0)
		rc = add_conf_ext(x, &ctx, NID_authority_key_identifier, "keyid:always");
	if (rc == 0)
		rc = add_sans(x, spec);
	if (rc == 0 && spec->ext)
		rc = ident_ext_add_to_x509(x, spec->ext);
	if (rc == 0)
		rc = sign(x, ca_key);
out:
	ERR_pop_to_mark();
	if (rc != 0) {
		X509_free(x);
		return rc;
	}
	*out = x;
	return 0;
}
