/* mimir-attest CA: the one place that holds the issuing key. The key file must be a
 * regular file that only its owner can read (mode 0600 or stricter, checked on the open
 * descriptor, no symbolic link followed); its bytes pass through a buffer that is wiped
 * once OpenSSL has parsed them. Leaves are issued through ident (the same profile as
 * mimir-pki), and CRLs are signed here; both under one lock, so the key is used by one
 * thread at a time. */
#include <errno.h>
#include <fcntl.h>
#include <openssl/bio.h>
#include <openssl/bn.h>
#include <openssl/err.h>
#include <openssl/pem.h>
#include <openssl/x509.h>
#include <openssl/x509v3.h>
#include <pthread.h>
#include <sodium.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include "attestd.h"
#include "err/err.h"
#include "log/log.h"

#define CA_FILE_MAX (64 * 1024)

struct attestd_ca {
	pthread_mutex_t mu;
	X509 *cert;
	EVP_PKEY *key;
	char *pem;
	int64_t not_after;
};

/* Encrypted keys are refused instead of prompting on a terminal. */
static int no_passphrase(char *buf, int size, int rwflag, void *u)
{
	(void)buf, (void)size, (void)rwflag, (void)u;
	return -1;
}

static int asn1_unix(const ASN1_TIME *t, int64_t *out)
{
	struct tm tm;
	if (!t || ASN1_TIME_to_tm(t, &tm) != 1)
		return ERR_PARSE;
	*out = (int64_t)timegm(&tm);
	return 0;
}

/* The whole file into a sodium_malloc'd buffer (wiped by sodium_free), refusing a file
 * others may read when secret. */
static int read_small(const char *path, bool secret, char **out, size_t *len)
{
	*out = NULL;
	int fd = open(path, O_RDONLY | O_NOFOLLOW | O_CLOEXEC);
	if (fd < 0) {
		LOG_ERROR("attest.ca_file", LOG_S("path", path), LOG_S("error", strerror(errno)),
			  LOG_S("hint", "check ca.cert and ca.key in the configuration"));
		return ERR_CONFIG;
	}
	struct stat st;
	int rc = ERR_CONFIG;
	char *buf = NULL;
	if (fstat(fd, &st) != 0 || !S_ISREG(st.st_mode)) {
		LOG_ERROR("attest.ca_file", LOG_S("path", path), LOG_S("error", "not a regular file"));
		goto out;
	}
	if (secret && (st.st_mode & 077)) {
		char mode[8];
		snprintf(mode, sizeof mode, "%04o", (unsigned)(st.st_mode & 07777));
		LOG_ERROR("attest.ca_key_mode", LOG_S("path", path), LOG_S("mode", mode),
			  LOG_S("error", "the CA key is readable by group or others"),
			  LOG_S("hint", "run chmod 600 on it (and check who could have read it)"));
		goto out;
	}
	if (st.st_size <= 0 || st.st_size >= CA_FILE_MAX) {
		LOG_ERROR("attest.ca_file", LOG_S("path", path), LOG_S("error", "empty or larger than 64 KiB"));
		goto out;
	}
	if (!(buf = sodium_malloc((size_t)st.st_size + 1))) {
		rc = ERR_NOMEM;
		goto out;
	}
	size_t got = 0;
	while (got < (size_t)st.st_size) {
		ssize_t n = read(fd, buf + got, (size_t)st.st_size - got);
		if (n < 0 && errno == EINTR)
			continue;
		if (n <= 0)
			break;
		got += (size_t)n;
	}
	if (got != (size_t)st.st_size) {
		LOG_ERROR("attest.ca_file", LOG_S("path", path), LOG_S("error", "short read"));
		goto out;
	}
	buf[got] = '\0';
	*out = buf;
	*len = got;
	buf = NULL;
	rc = 0;
out:
	if (buf)
		sodium_free(buf);
	close(fd);
	return rc;
}

int attestd_ca_load(struct attestd_ca **out, const char *cert_path, const char *key_path)
{
	*out = NULL;
	char *cbuf = NULL, *kbuf = NULL;
	size_t clen = 0, klen = 0;
	BIO *b = NULL;
	int rc;
	struct attestd_ca *ca = calloc(1, sizeof *ca);
	if (!ca)
		return ERR_NOMEM;
	pthread_mutex_init(&ca->mu, NULL);
	if ((rc = read_small(cert_path, false, &cbuf, &clen)) != 0 ||
	    (rc = read_small(key_path, true, &kbuf, &klen)) != 0)
		goto out;
	rc = ERR_CONFIG;
	b = BIO_new_mem_buf(cbuf, (int)clen);
	ca->cert = b ? PEM_read_bio_X509(b, NULL, NULL, NULL) : NULL;
	BIO_free(b);
	if (!ca->cert || X509_check_ca(ca->cert) != 1) {
		LOG_ERROR("attest.ca_cert", LOG_S("path", cert_path),
			  LOG_S("error", "not a PEM CA certificate (basicConstraints CA:TRUE, keyCertSign)"));
		goto out;
	}
	b = BIO_new_mem_buf(kbuf, (int)klen);
	ca->key = b ? PEM_read_bio_PrivateKey(b, NULL, no_passphrase, NULL) : NULL;
	BIO_free(b);
	if (!ca->key) {
		LOG_ERROR("attest.ca_key", LOG_S("path", key_path),
			  LOG_S("error", "not a PEM private key (encrypted keys are not supported)"));
		goto out;
	}
	if (X509_check_private_key(ca->cert, ca->key) != 1) {
		LOG_ERROR("attest.ca_key", LOG_S("path", key_path),
			  LOG_S("error", "the key does not belong to the CA certificate"),
			  LOG_S("certificate", cert_path));
		goto out;
	}
	int64_t nb = 0, now = (int64_t)time(NULL);
	if (asn1_unix(X509_get0_notBefore(ca->cert), &nb) != 0 ||
	    asn1_unix(X509_get0_notAfter(ca->cert), &ca->not_after) != 0 || now < nb ||
	    now >= ca->not_after) {
		LOG_ERROR("attest.ca_cert", LOG_S("path", cert_path),
			  LOG_S("error", "the CA certificate is not valid now (expired or not yet valid)"));
		goto out;
	}
	BIO *mb = BIO_new(BIO_s_mem());
	char *p = NULL;
	long n = 0;
	if (!mb || PEM_write_bio_X509(mb, ca->cert) != 1 || (n = BIO_get_mem_data(mb, &p)) <= 0 ||
	    !(ca->pem = malloc((size_t)n + 1))) {
		BIO_free(mb);
		rc = ERR_NOMEM;
		goto out;
	}
	memcpy(ca->pem, p, (size_t)n);
	ca->pem[n] = '\0';
	BIO_free(mb);
	rc = 0;
out:
	ERR_clear_error();
	if (cbuf)
		sodium_free(cbuf);
	if (kbuf)
		sodium_free(kbuf); /* wipes the key's PEM */
	if (rc != 0) {
		attestd_ca_free(ca);
		return rc;
	}
	*out = ca;
	return 0;
}

void attestd_ca_free(struct attestd_ca *ca)
{
	if (!ca)
		return;
	X509_free(ca->cert);
	EVP_PKEY_free(ca->key); /* OpenSSL clears the key material */
	free(ca->pem);
	pthread_mutex_destroy(&ca->mu);
	free(ca);
}

int64_t attestd_ca_not_after(const struct attestd_ca *ca) { return ca->not_after; }
const char *attestd_ca_pem(const struct attestd_ca *ca) { return ca->pem; }

int attestd_ca_issue(struct attestd_ca *ca, const struct ident_leaf_spec *spec, EVP_PKEY *subject,
		     X509 **out)
{
	struct ident_leaf_spec s = *spec;
	if (s.not_after > ca->not_after)
		s.not_after = ca->not_after;
	if (s.not_after <= s.not_before)
		return ERR_UNAVAILABLE; /* the CA itself is at its end */
	pthread_mutex_lock(&ca->mu);
	int rc = ident_issue_leaf(&s, subject, ca->cert, ca->key, out);
	pthread_mutex_unlock(&ca->mu);
	return rc;
}

static ASN1_INTEGER *serial_from_hex(const char *hex)
{
	BIGNUM *bn = NULL;
	ASN1_INTEGER *ai = NULL;
	if (BN_hex2bn(&bn, hex) > 0)
		ai = BN_to_ASN1_INTEGER(bn, NULL);
	BN_free(bn);
	return ai;
}

static int add_revoked(X509_CRL *crl, const struct attestd_revoked *e)
{
	X509_REVOKED *rv = X509_REVOKED_new();
	ASN1_INTEGER *serial = serial_from_hex(e->serial);
	ASN1_TIME *when = ASN1_TIME_set(NULL, (time_t)e->revoked_at);
	ASN1_ENUMERATED *reason = NULL;
	int ok = rv && serial && when && X509_REVOKED_set_serialNumber(rv, serial) == 1 &&
		 X509_REVOKED_set_revocationDate(rv, when) == 1;
	if (ok && e->reason >= 0) {
		ok = (reason = ASN1_ENUMERATED_new()) && ASN1_ENUMERATED_set(reason, e->reason) == 1 &&
		     X509_REVOKED_add1_ext_i2d(rv, NID_crl_reason, reason, 0, 0) == 1;
	}
	if (ok && X509_CRL_add0_revoked(crl, rv) == 1)
		rv = NULL;
	else
		ok = 0;
	ASN1_ENUMERATED_free(reason);
	ASN1_TIME_free(when);
	ASN1_INTEGER_free(serial);
	X509_REVOKED_free(rv);
	return ok ? 0 : ERR_CRYPTO;
}

int attestd_ca_sign_crl(struct attestd_ca *ca, const struct attestd_revoked *r, size_t n,
			int64_t this_update, int64_t next_update, uint64_t number, uint8_t **der,
			size_t *der_len)
{
	*der = NULL;
	*der_len = 0;
	int rc = ERR_CRYPTO;
	X509_CRL *crl = X509_CRL_new();
	ASN1_TIME *t1 = ASN1_TIME_set(NULL, (time_t)this_update);
	ASN1_TIME *t2 = ASN1_TIME_set(NULL, (time_t)next_update);
	ASN1_INTEGER *num = ASN1_INTEGER_new();
	unsigned char *out = NULL;
	X509V3_CTX v3;
	X509_EXTENSION *aki = NULL;
	if (!crl || !t1 || !t2 || !num || X509_CRL_set_version(crl, X509_CRL_VERSION_2) != 1 ||
	    X509_CRL_set_issuer_name(crl, X509_get_subject_name(ca->cert)) != 1 ||
	    X509_CRL_set1_lastUpdate(crl, t1) != 1 || X509_CRL_set1_nextUpdate(crl, t2) != 1 ||
	    ASN1_INTEGER_set_uint64(num, number) != 1 ||
	    X509_CRL_add1_ext_i2d(crl, NID_crl_number, num, 0, 0) != 1)
		goto out;
	X509V3_set_ctx(&v3, ca->cert, NULL, NULL, crl, 0);
	if (!(aki = X509V3_EXT_conf_nid(NULL, &v3, NID_authority_key_identifier, "keyid:always")) ||
	    X509_CRL_add_ext(crl, aki, -1) != 1)
		goto out;
	for (size_t i = 0; i < n; i++)
		if ((rc = add_revoked(crl, &r[i])) != 0)
			goto out;
	rc = ERR_CRYPTO;
	if (X509_CRL_sort(crl) != 1)
		goto out;
	pthread_mutex_lock(&ca->mu);
	int signed_ok = X509_CRL_sign(crl, ca->key, EVP_sha256()) > 0;
	pthread_mutex_unlock(&ca->mu);
	int len;
	if (!signed_ok || (len = i2d_X509_CRL(crl, &out)) <= 0)
		goto out;
	if (!(*der = malloc((size_t)len))) {
		rc = ERR_NOMEM;
		goto out;
	}
	memcpy(*der, out, (size_t)len);
	*der_len = (size_t)len;
	rc = 0;
out:
	if (rc != 0)
		LOG_ERROR("attest.crl_sign", LOG_S("error", "could not build or sign the CRL"));
	ERR_clear_error();
	OPENSSL_free(out);
	X509_EXTENSION_free(aki);
	ASN1_INTEGER_free(num);
	ASN1_TIME_free(t1);
	ASN1_TIME_free(t2);
	X509_CRL_free(crl);
	return rc;
}
