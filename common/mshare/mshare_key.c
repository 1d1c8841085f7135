/* mshare_key: the X25519 keys share files are sealed to, and their text files. The two
 * kinds carry different armour lines and each parser accepts only its own kind: a secret
 * key passed where a public key is expected would otherwise be copied into the clear
 * header of every share file. Secret key text passes only through buffers wiped here, and
 * a secret key file is created with mode 0600 from the first instant. */
#define _FILE_OFFSET_BITS 64
#include "mshare/mshare.h"

#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include <sodium.h>

#include "err/err.h"
#include "mshare/mshare_internal.h"

#define KEY_FILE_MAX 4096

static const char *const begin_line[2] = {"-----BEGIN MIMIR X25519 PUBLIC KEY-----",
					  "-----BEGIN MIMIR X25519 SECRET KEY-----"};
static const char *const end_line[2] = {"-----END MIMIR X25519 PUBLIC KEY-----",
					"-----END MIMIR X25519 SECRET KEY-----"};

int mshare_keypair(uint8_t pk[MSHARE_PK_BYTES], uint8_t sk[MSHARE_SK_BYTES])
{
	if (!pk || !sk || sodium_init() < 0)
		return ERR_INVALID;
	return crypto_box_keypair(pk, sk) == 0 ? 0 : ERR_CRYPTO;
}

int mshare_public_from_secret(const uint8_t sk[MSHARE_SK_BYTES], uint8_t pk[MSHARE_PK_BYTES])
{
	if (!pk || !sk)
		return ERR_INVALID;
	return crypto_scalarmult_base(pk, sk) == 0 ? 0 : ERR_CRYPTO;
}

int mshare_key_format(const uint8_t key[32], bool secret, char *buf, size_t cap)
{
	if (!key || !buf || cap < MSHARE_KEY_TEXT_MAX)
		return ERR_INVALID;
	char hex[65];
	sodium_bin2hex(hex, sizeof hex, key, 32);
	snprintf(buf, cap, "%s\n%s\n%s\n", begin_line[secret], hex, end_line[secret]);
	sodium_memzero(hex, sizeof hex);
	return 0;
}

/* The next line of text[*pos..len) without its terminator and trailing blanks. */
static bool next_line(const char *text, size_t len, size_t *pos, const char **line, size_t *n)
{
	if (*pos >= len)
		return false;
	const char *s = text + *pos;
	const char *nl = memchr(s, '\n', len - *pos);
	size_t l = nl ? (size_t)(nl - s) : len - *pos;
	*pos += l + (nl ? 1 : 0);
	while (l > 0 && (s[l - 1] == '\r' || s[l - 1] == ' ' || s[l - 1] == '\t'))
		l--;
	*line = s, *n = l;
	return true;
}

static bool line_is(const char *line, size_t n, const char *want)
{
	return n == strlen(want) && memcmp(line, want, n) == 0;
}

int mshare_key_parse(const char *text, size_t len, bool secret, uint8_t key[32],
		     const char *name, char *err, size_t errcap)
{
	if (!name || !*name)
		name = "key";
	if (!key || (!text && len)) {
		mshare_seterr(err, errcap, "%s: invalid arguments", name);
		return ERR_INVALID;
	}
	const char *kind = secret ? "secret" : "public";
	const char *lines[3];
	size_t lens[3], k = 0, pos = 0;
	const char *l;
	size_t n;
	while (next_line(text, len, &pos, &l, &n)) {
		if (n == 0)
			continue; /* blank lines around the armour */
		if (k == 3) {
			mshare_seterr(err, errcap, "%s: unexpected text after the key's END line",
				      name);
			return ERR_PARSE;
		}
		lines[k] = l, lens[k] = n, k++;
	}
	if (k == 0 || !line_is(lines[0], lens[0], begin_line[secret])) {
		if (k > 0 && line_is(lines[0], lens[0], begin_line[!secret]))
			mshare_seterr(err, errcap,
				      "%s: this is an X25519 %s key; a %s key (%s) is expected here",
				      name, secret ? "public" : "secret", kind,
				      secret ? ".x25519.key" : ".x25519.pub");
		else
			mshare_seterr(err, errcap,
				      "%s: not a Mimir X25519 %s key (expected a line '%s')", name,
				      kind, begin_line[secret]);
		return ERR_PARSE;
	}
	if (k < 3 || !line_is(lines[2], lens[2], end_line[secret])) {
		mshare_seterr(err, errcap, "%s: the key has no '%s' line", name, end_line[secret]);
		return ERR_PARSE;
	}
	uint8_t tmp[32];
	size_t got = 0;
	const char *endp = NULL;
	int rc = 0;
	if (lens[1] != 64 ||
	    sodium_hex2bin(tmp, sizeof tmp, lines[1], lens[1], NULL, &got, &endp) != 0 ||
	    got != 32 || endp != lines[1] + 64) {
		mshare_seterr(err, errcap, "%s: the %s key must be 64 hex digits", name, kind);
		rc = ERR_PARSE;
	} else {
		memcpy(key, tmp, 32);
	}
	sodium_memzero(tmp, sizeof tmp);
	return rc;
}

int mshare_key_read(const char *path, bool secret, uint8_t key[32], char *err, size_t errcap)
{
	if (!path || !key) {
		mshare_seterr(err, errcap, "key: invalid arguments");
		return ERR_INVALID;
	}
	int fd = open(path, O_RDONLY | O_CLOEXEC);
	if (fd < 0) {
		int e = errno;
		mshare_seterr(err, errcap, "%s: cannot open: %s", path, strerror(e));
		return e == ENOENT ? ERR_NOT_FOUND : ERR_IO;
	}
	char buf[KEY_FILE_MAX + 1];
	size_t got = 0;
	int rc = 0;
	struct stat st;
	if (fstat(fd, &st) != 0 || !S_ISREG(st.st_mode)) {
		mshare_seterr(err, errcap, "%s: not a regular file", path);
		rc = ERR_IO;
		goto out;
	}
	while (got < sizeof buf) {
		ssize_t r = read(fd, buf + got, sizeof buf - got);
		if (r < 0 && errno == EINTR)
			continue;
		if (r < 0) {
			mshare_seterr(err, errcap, "%s: read error: %s", path, strerror(errno));
			rc = ERR_IO;
			goto out;
		}
		if (r == 0)
			break;
		got += (size_t)r;
	}
	if (got > KEY_FILE_MAX) {
		mshare_seterr(err, errcap, "%s: larger than %d bytes; not a key file", path,
			      KEY_FILE_MAX);
		rc = ERR_TOO_LARGE;
		goto out;
	}
	rc = mshare_key_parse(buf, got, secret, key, path, err, errcap);
out:
	sodium_memzero(buf, sizeof buf);
	close(fd);
	return rc;
}

int mshare_key_write(const char *path, const uint8_t key[32], bool secret, char *err,
		     size_t errcap)
{
	if (!path || !key) {
		mshare_seterr(err, errcap, "key: invalid arguments");
		return ERR_INVALID;
	}
	char text[MSHARE_KEY_TEXT_MAX];
	mshare_key_format(key, secret, text, sizeof text);
	size_t len = strlen(text), done = 0;
	int rc = 0;
	int fd = open(path, O_WRONLY | O_CREAT | O_EXCL | O_NOFOLLOW | O_CLOEXEC,
		      secret ? 0600 : 0644);
	if (fd < 0) {
		int e = errno;
		if (e == EEXIST)
			mshare_seterr(err, errcap, "%s already exists; refusing to overwrite it",
				      path);
		else
			mshare_seterr(err, errcap, "cannot create %s: %s", path, strerror(e));
		rc = e == EEXIST ? ERR_CONFLICT : ERR_IO;
		goto out;
	}
	while (done < len) {
		ssize_t w = write(fd, text + done, len - done);
		if (w < 0 && errno == EINTR)
			continue;
		if (w <= 0) {
			rc = ERR_IO;
			break;
		}
		done += (size_t)w;
	}
	if (rc == 0 && fsync(fd) != 0)
		rc = ERR_IO;
	int e = errno;
	if (close(fd) != 0 && rc == 0) {
		e = errno;
		rc = ERR_IO;
	}
	if (rc) {
		mshare_seterr(err, errcap, "cannot write %s: %s", path, strerror(e));
		unlink(path);
	}
out:
	sodium_memzero(text, sizeof text);
	return rc;
}
