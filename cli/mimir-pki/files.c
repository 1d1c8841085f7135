/* mimir-pki files: every byte of a private key passes through buffers this file wipes
 * (a secure-memory BIO on the way out, a read buffer on the way in), and every output
 * file is created exclusively, without following a symbolic link, with its final mode:
 * a key is never readable by anyone else, not even for the moment between open and
 * chmod. */
#include <errno.h>
#include <fcntl.h>
#include <openssl/bio.h>
#include <openssl/buffer.h>
#include <openssl/err.h>
#include <openssl/pem.h>
#include <openssl/x509.h>
#include <openssl/x509v3.h>
#include <sodium.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "ident/ident.h"
#include "pki.h"

#define PKI_FILE_MAX (256 * 1024)

int pki_mkdir_p(const char *dir)
{
	char buf[PKI_PATH_MAX];
	size_t n = strlen(dir);
	if (n == 0 || n >= sizeof buf) {
		errno = ENAMETOOLONG;
		return -1;
	}
	memcpy(buf, dir, n + 1);
	for (size_t i = 1; i <= n; i++) {
		if (buf[i] != '/' && buf[i] != '\0')
			continue;
		char c = buf[i];
		buf[i] = '\0';
		if (mkdir(buf, 0755) != 0 && errno != EEXIST)
			return -1;
		buf[i] = c;
	}
	struct stat st;
	if (stat(dir, &st) != 0)
		return -1;
	if (!S_ISDIR(st.st_mode)) {
		errno = ENOTDIR;
		return -1;
	}
	return 0;
}

int pki_check_absent(const char *path, bool force)
{
	struct stat st;
	if (force || lstat(path, &st) != 0)
		return 0;
	pki_fail("%s already exists; refusing to overwrite it (use --force to replace)", path);
	return -1;
}

static int write_all(int fd, const void *data, size_t len)
{
	const char *p = data;
	while (len > 0) {
		ssize_t w = write(fd, p, len);
		if (w < 0 && errno == EINTR)
			continue;
		if (w <= 0)
			return -1;
		p += w;
		len -= (size_t)w;
	}
	return 0;
}

static int create_file(const char *path, mode_t mode, bool force, const void *data, size_t len)
{
	if (force && unlink(path) != 0 && errno != ENOENT) {
		pki_fail("cannot replace %s: %s", path, strerror(errno));
		return -1;
	}
	int fd = open(path, O_WRONLY | O_CREAT | O_EXCL | O_NOFOLLOW | O_CLOEXEC, mode);
	if (fd < 0) {
		if (errno == EEXIST)
			pki_fail("%s already exists; refusing to overwrite it (use --force to "
				 "replace)",
				 path);
		else
			pki_fail("cannot create %s: %s", path, strerror(errno));
		return -1;
	}
	int rc = write_all(fd, data, len);
	if (rc == 0 && fsync(fd) != 0)
		rc = -1;
	int saved = errno;
	if (close(fd) != 0 && rc == 0) {
		saved = errno;
		rc = -1;
	}
	if (rc != 0) {
		pki_fail("cannot write %s: %s", path, strerror(saved));
		unlink(path);
	}
	return rc;
}

int pki_write_key(const char *path, EVP_PKEY *key, bool force)
{
	int rc = -1;
	BIO *b = BIO_new(BIO_s_secmem());
	BUF_MEM *bm = NULL;
	if (!b || !PEM_write_bio_PrivateKey(b, key, NULL, NULL, 0, NULL, NULL) ||
	    BIO_get_mem_ptr(b, &bm) != 1 || !bm) {
		pki_fail("cannot encode the private key for %s", path);
		goto out;
	}
	rc = create_file(path, 0600, force, bm->data, bm->length);
out:
	if (bm && bm->data)
		sodium_memzero(bm->data, bm->max);
	BIO_free(b);
	return rc;
}

int pki_write_cert(const char *path, X509 *x, bool force)
{
	int rc = -1;
	BIO *b = BIO_new(BIO_s_mem());
	BUF_MEM *bm = NULL;
	if (!b || !PEM_write_bio_X509(b, x) || BIO_get_mem_ptr(b, &bm) != 1 || !bm)
		pki_fail("cannot encode the certificate for %s", path);
	else
		rc = create_file(path, 0644, force, bm->data, bm->length);
	BIO_free(b);
	return rc;
}

/* Whole file (at most PKI_FILE_MAX bytes) into a malloc'ed buffer the caller wipes. */
static int read_file(const char *path, uint8_t **out, size_t *len)
{
	int fd = open(path, O_RDONLY | O_CLOEXEC);
	if (fd < 0) {
		pki_fail("cannot open %s: %s", path, strerror(errno));
		return -1;
	}
	uint8_t *buf = malloc(PKI_FILE_MAX);
	size_t n = 0;
	int rc = -1;
	if (!buf) {
		pki_fail("out of memory reading %s", path);
		goto out;
	}
	for (;;) {
		ssize_t r = read(fd, buf + n, PKI_FILE_MAX - n);
		if (r < 0 && errno == EINTR)
			continue;
		if (r < 0) {
			pki_fail("cannot read %s: %s", path, strerror(errno));
			goto out;
		}
		if (r == 0)
			break;
		n += (size_t)r;
		if (n == PKI_FILE_MAX) {
			pki_fail("%s is larger than %d bytes; not a certificate or key", path,
				 PKI_FILE_MAX);
			goto out;
		}
	}
	*out = buf;
	*len = n;
	buf = NULL;
	rc = 0;
out:
	if (buf) {
		sodium_memzero(buf, PKI_FILE_MAX);
		free(buf);
	}
	close(fd);
	return rc;
}

static bool is_pem(const uint8_t *b, size_t n)
{
	static const char tag[] = "-----BEGIN ";
	for (size_t i = 0; i + sizeof tag - 1 <= n; i++)
		if (memcmp(b + i, tag, sizeof tag - 1) == 0)
			return true;
	return false;
}

int pki_read_cert_der(const char *path, uint8_t **der, size_t *len)
{
	uint8_t *buf;
	size_t n;
	if (read_file(path, &buf, &n) != 0)
		return -1;
	int rc = -1;
	if (!is_pem(buf, n)) {
		*der = buf;
		*len = n;
		return 0;
	}
	BIO *b = BIO_new_mem_buf(buf, (int)n);
	X509 *x = b ? PEM_read_bio_X509(b, NULL, NULL, NULL) : NULL;
	unsigned char *d = NULL;
	int dl = x ? i2d_X509(x, &d) : -1;
	if (dl <= 0) {
		pki_fail("%s: no PEM certificate found", path);
		goto out;
	}
	if (!(*der = malloc((size_t)dl))) {
		pki_fail("out of memory");
		goto out;
	}
	memcpy(*der, d, (size_t)dl);
	*len = (size_t)dl;
	rc = 0;
out:
	ERR_clear_error();
	OPENSSL_free(d);
	X509_free(x);
	BIO_free(b);
	free(buf);
	return rc;
}

/* Encrypted keys are not supported: refuse them instead of prompting on a terminal. */
static int no_passphrase(char *buf, int size, int rwflag, void *u)
{
	(void)buf, (void)size, (void)rwflag, (void)u;
	return -1;
}

int pki_load_ca(const char *dir, X509 **cert, EVP_PKEY **key)
{
	char cpath[PKI_PATH_MAX], kpath[PKI_PATH_MAX];
	uint8_t *kbuf = NULL;
	size_t klen = 0;
	BIO *b = NULL;
	int rc = -1;
	*cert = NULL;
	*key = NULL;
	if (!pki_path(cpath, sizeof cpath, dir, "ca.crt") ||
	    !pki_path(kpath, sizeof kpath, dir, "ca.key")) {
		pki_fail("CA directory path too long: %s", dir);
		return -1;
	}
	uint8_t *der = NULL;
	size_t dlen;
	if (pki_read_cert_der(cpath, &der, &dlen) != 0)
		goto out;
	const unsigned char *p = der;
	*cert = d2i_X509(NULL, &p, (long)dlen);
	free(der);
	if (!*cert) {
		pki_fail("%s is not a certificate", cpath);
		goto out;
	}
	if (X509_check_ca(*cert) != 1) {
		pki_fail("%s is not a CA certificate", cpath);
		goto out;
	}
	if (read_file(kpath, &kbuf, &klen) != 0)
		goto out;
	b = BIO_new_mem_buf(kbuf, (int)klen);
	*key = b ? PEM_read_bio_PrivateKey(b, NULL, no_passphrase, NULL) : NULL;
	if (!*key) {
		pki_fail("%s is not a PEM private key (encrypted keys are not supported)", kpath);
		goto out;
	}
	if (X509_check_private_key(*cert, *key) != 1) {
		pki_fail("%s does not belong to %s", kpath, cpath);
		goto out;
	}
	rc = 0;
out:
	ERR_clear_error();
	BIO_free(b);
	if (kbuf) {
		sodium_memzero(kbuf, PKI_FILE_MAX);
		free(kbuf);
	}
	if (rc != 0) {
		X509_free(*cert);
		EVP_PKEY_free(*key);
		*cert = NULL;
		*key = NULL;
	}
	return rc;
}
