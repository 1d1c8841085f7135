/* mimir-attest revocations: the revoked serials, the CRL built from them, and the
 * administrator's revoke endpoint. Certificates live an hour, so an entry is kept only
 * until the certificate it names has expired; the CRL is re-signed when an entry is
 * added or dropped and when half of its validity has passed. When revocations.file is
 * set every revocation is appended to it (one JSON line, fsync'd before the answer) and
 * read back at start-up, so a restart never un-revokes a certificate; expired lines are
 * dropped by rewriting the file then. The service also remembers the serials it issued
 * (a bounded ring) so that a mistyped serial is refused instead of silently "revoked". */
#include <errno.h>
#include <fcntl.h>
#include <pthread.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include <openssl/pem.h>
#include <openssl/x509.h>
#include <sodium.h>

#include "attestd.h"
#include "err/err.h"
#include "jspec/jspec.h"
#include "log/log.h"
#include "metrics/metrics.h"

#define REVOKED_MAX 100000
#define FILE_MAX ((size_t)64 << 20)

struct issued {
	char serial[ATTESTD_SERIAL_HEX_MAX + 1];
	int64_t not_after;
};

struct attestd_revocations {
	pthread_mutex_t mu;
	char *file;
	struct attestd_revoked *r;
	size_t n, cap;
	struct issued *ring;
	size_t ring_cap, ring_next;
	/* The current CRL. */
	uint8_t *crl_der;
	size_t crl_len;
	char *crl_pem;
	int64_t crl_this, crl_next;
	uint64_t crl_number;
	bool dirty;
};

/* RFC 5280 section 5.3.1 CRLReason; "unspecified" is written as no reason at all, as
 * the RFC asks. */
static const char *const reason_names[] = {"unspecified", "keyCompromise", "affiliationChanged",
					   "superseded", "cessationOfOperation",
					   "privilegeWithdrawn", NULL};
static const int reason_codes[] = {-1, 1, 3, 4, 5, 9};

/* The serial's one spelling, the one certificates are read in (common/ident): the
 * bytes of the integer in lowercase hex, two digits each, no leading zero byte ("06af",
 * not "6af"; zero is "00"). Accepts 1..64 hex digits of either case with any leading
 * zeros; false when s is not hex or the value needs more than 20 bytes. */
static bool serial_norm(const char *s, char out[ATTESTD_SERIAL_HEX_MAX + 1])
{
	size_t l = s ? strlen(s) : 0;
	if (l == 0 || l > 64)
		return false;
	size_t i = 0;
	while (i + 1 < l && s[i] == '0')
		i++;
	size_t digits = l - i, o = 0;
	if (digits > ATTESTD_SERIAL_HEX_MAX)
		return false;
	if (digits % 2)
		out[o++] = '0';
	for (; i < l; i++) {
		char ch = s[i];
		if (ch >= 'A' && ch <= 'F')
			ch = (char)(ch - 'A' + 'a');
		if (!((ch >= '0' && ch <= '9') || (ch >= 'a' && ch <= 'f')))
			return false;
		out[o++] = ch;
	}
	out[o] = '\0';
	return true;
}

static struct attestd_revoked *find(struct attestd_revocations *rv, const char *serial)
{
	for (size_t i = 0; i < rv->n; i++)
		if (strcmp(rv->r[i].serial, serial) == 0)
			return &rv->r[i];
	return NULL;
}

static int push(struct attestd_revocations *rv, const struct attestd_revoked *e)
{
	if (rv->n == rv->cap) {
		if (rv->cap >= REVOKED_MAX)
			return ERR_UNAVAILABLE;
		size_t cap = rv->cap ? rv->cap * 2 : 64;
		if (cap > REVOKED_MAX)
			cap = REVOKED_MAX;
		struct attestd_revoked *p = realloc(rv->r, cap * sizeof *p);
		if (!p)
			return ERR_NOMEM;
		rv->r = p;
		rv->cap = cap;
	}
	rv->r[rv->n++] = *e;
	return 0;
}

/* Drops entries whose certificates have expired; true when any was dropped. */
static bool prune(struct attestd_revocations *rv, int64_t now)
{
	size_t k = 0;
	for (size_t i = 0; i < rv->n; i++)
		if (rv->r[i].expires_at > now)
			rv->r[k++] = rv->r[i];
	bool dropped = k != rv->n;
	rv->n = k;
	return dropped;
}

static int line_of(const struct attestd_revoked *e, char *buf, size_t cap)
{
	int n = snprintf(buf, cap, "{\"serial\":\"%s\",\"revoked_at\":%lld,\"expires_at\":%lld,\"reason\":%d}\n",
			 e->serial, (long long)e->revoked_at, (long long)e->expires_at, e->reason);
	return n > 0 && (size_t)n < cap ? n : -1;
}

static int write_all(int fd, const char *p, size_t len)
{
	while (len) {
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

static int append_line(const char *file, const struct attestd_revoked *e)
{
	char line[256];
	int n = line_of(e, line, sizeof line);
	int fd = open(file, O_WRONLY | O_APPEND | O_CREAT | O_CLOEXEC | O_NOFOLLOW, 0600);
	if (n < 0 || fd < 0) {
		LOG_ERROR("attest.revocations_write", LOG_S("path", file), LOG_S("error", strerror(errno)));
		if (fd >= 0)
			close(fd);
		return ERR_IO;
	}
	int rc = write_all(fd, line, (size_t)n) == 0 && fsync(fd) == 0 ? 0 : ERR_IO;
	if (rc != 0)
		LOG_ERROR("attest.revocations_write", LOG_S("path", file), LOG_S("error", strerror(errno)));
	close(fd);
	return rc;
}

/* Rewrites the file with the live entries only (temporary file, fsync, rename). */
static int rewrite(struct attestd_revocations *rv)
{
	char tmp[4200];
	if (snprintf(tmp, sizeof tmp, "%s.tmp", rv->file) >= (int)sizeof tmp)
		return ERR_CONFIG;
	unlink(tmp);
	int fd = open(tmp, O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC | O_NOFOLLOW, 0600);
	if (fd < 0)
		return ERR_IO;
	int rc = 0;
	for (size_t i = 0; rc == 0 && i < rv->n; i++) {
		char line[256];
		int n = line_of(&rv->r[i], line, sizeof line);
		rc = n > 0 && write_all(fd, line, (size_t)n) == 0 ? 0 : ERR_IO;
	}
	if (rc == 0 && fsync(fd) != 0)
		rc = ERR_IO;
	close(fd);
	if (rc == 0 && rename(tmp, rv->file) != 0)
		rc = ERR_IO;
	if (rc != 0)
		unlink(tmp);
	return rc;
}

static int load(struct attestd_revocations *rv, int64_t now)
{
	int fd = open(rv->file, O_RDONLY | O_CLOEXEC | O_NOFOLLOW);
	if (fd < 0 && errno == ENOENT)
		return 0; /* nothing revoked yet */
	struct stat st;
	char *text = NULL;
	int rc = ERR_CONFIG;
	size_t total = 0, lineno = 0, dropped = 0;
	if (fd < 0 || fstat(fd, &st) != 0 || !S_ISREG(st.st_mode) || (size_t)st.st_size > FILE_MAX) {
		LOG_ERROR("attest.revocations_file", LOG_S("path", rv->file),
			  LOG_S("error", fd < 0 ? strerror(errno) : "not a regular file of at most 64 MiB"));
		goto out;
	}
	if (!(text = malloc((size_t)st.st_size + 1))) {
		rc = ERR_NOMEM;
		goto out;
	}
	while (total < (size_t)st.st_size) {
		ssize_t n = read(fd, text + total, (size_t)st.st_size - total);
		if (n < 0 && errno == EINTR)
			continue;
		if (n <= 0)
			break;
		total += (size_t)n;
	}
	text[total] = '\0';
	for (char *p = text; *p;) {
		char *nl = strchr(p, '\n');
		lineno++;
		if (!nl) {
			/* A line the crash cut short was never acknowledged to anyone. */
			LOG_WARN("attest.revocations_partial", LOG_S("path", rv->file), LOG_I("line", lineno),
				 LOG_S("detail", "ignoring an unterminated last line"));
			break;
		}
		const char *serial = NULL;
		int64_t revoked_at = 0, expires_at = 0, reason = -1;
		const struct jspec_field spec[] = {
			JSPEC_STR("serial", true, 1, ATTESTD_SERIAL_HEX_MAX, &serial),
			JSPEC_I64("revoked_at", true, 0, INFINITY, &revoked_at),
			JSPEC_I64("expires_at", true, 0, INFINITY, &expires_at),
			JSPEC_I64("reason", true, -1, 10, &reason),
			JSPEC_END_F,
		};
		json_t *doc = NULL;
		struct jspec_error e;
		struct attestd_revoked ent = {0};
		if (jspec_parse_body(p, (size_t)(nl - p), spec, 0, &doc, &e) != 0 ||
		    !serial_norm(serial, ent.serial)) {
			json_decref(doc);
			LOG_ERROR("attest.revocations_file", LOG_S("path", rv->file), LOG_I("line", lineno),
				  LOG_S("error", "malformed line"),
				  LOG_S("hint", "repair or remove the line; the service will not guess"));
			goto out;
		}
		json_decref(doc);
		ent.revoked_at = revoked_at;
		ent.expires_at = expires_at;
		ent.reason = (int)reason;
		if (expires_at <= now)
			dropped++;
		else if (!find(rv, ent.serial) && (rc = push(rv, &ent)) != 0)
			goto out;
		p = nl + 1;
	}
	rc = 0;
	LOG_INFO("attest.revocations_loaded", LOG_S("path", rv->file), LOG_I("live", rv->n),
		 LOG_I("expired", dropped));
	if (dropped && rewrite(rv) != 0)
		LOG_WARN("attest.revocations_compact", LOG_S("path", rv->file),
			 LOG_S("detail", "could not drop expired lines; the file keeps them"));
out:
	if (fd >= 0)
		close(fd);
	free(text);
	return rc;
}

int attestd_revocations_new(struct attestd_revocations **out, const char *file, int64_t now,
			    size_t track_max)
{
	*out = NULL;
	struct attestd_revocations *rv = calloc(1, sizeof *rv);
	if (!rv)
		return ERR_NOMEM;
	pthread_mutex_init(&rv->mu, NULL);
	rv->dirty = true;
	int rc = ERR_NOMEM;
	rv->ring_cap = track_max ? track_max : 1;
	if (!(rv->ring = calloc(rv->ring_cap, sizeof *rv->ring)))
		goto out;
	if (file) {
		if (!(rv->file = strdup(file)))
			goto out;
		if ((rc = load(rv, now)) != 0)
			goto out;
	} else {
		LOG_WARN("attest.revocations_volatile",
			 LOG_S("detail", "revocations.file is not set: revocations are lost on restart"));
	}
	*out = rv;
	return 0;
out:
	attestd_revocations_free(rv);
	return rc;
}

void attestd_revocations_free(struct attestd_revocations *rv)
{
	if (!rv)
		return;
	free(rv->file);
	free(rv->r);
	free(rv->ring);
	free(rv->crl_der);
	free(rv->crl_pem);
	pthread_mutex_destroy(&rv->mu);
	free(rv);
}

void attestd_issued_note(struct attestd_revocations *rv, const char *serial_hex, int64_t not_after)
{
	struct issued e = {.not_after = not_after};
	if (!serial_norm(serial_hex, e.serial))
		return;
	pthread_mutex_lock(&rv->mu);
	rv->ring[rv->ring_next] = e;
	rv->ring_next = (rv->ring_next + 1) % rv->ring_cap;
	pthread_mutex_unlock(&rv->mu);
}

size_t attestd_revocations_count(struct attestd_revocations *rv, int64_t now)
{
	size_t n = 0;
	pthread_mutex_lock(&rv->mu);
	for (size_t i = 0; i < rv->n; i++)
		n += rv->r[i].expires_at > now;
	pthread_mutex_unlock(&rv->mu);
	return n;
}

/* Re-signs the CRL when needed. Called with rv->mu held. */
static int refresh_crl(struct attestd_ctx *c, struct attestd_revocations *rv, int64_t now)
{
	bool dropped = prune(rv, now);
	if (rv->crl_der && !rv->dirty && !dropped && now < rv->crl_this + (rv->crl_next - rv->crl_this) / 2)
		return 0;
	int64_t next = now + c->set.crl_validity_s;
	if (next > attestd_ca_not_after(c->ca))
		next = attestd_ca_not_after(c->ca);
	uint64_t number = (uint64_t)attestd_now_ms();
	if (number <= rv->crl_number)
		number = rv->crl_number + 1;
	uint8_t *der = NULL;
	size_t len = 0;
	int rc = attestd_ca_sign_crl(c->ca, rv->r, rv->n, now, next, number, &der, &len);
	if (rc != 0)
		return rc;
	const unsigned char *p = der;
	X509_CRL *crl = d2i_X509_CRL(NULL, &p, (long)len);
	BIO *b = BIO_new(BIO_s_mem());
	char *pem = NULL, *data = NULL;
	long plen = 0;
	if (!crl || !b || PEM_write_bio_X509_CRL(b, crl) != 1 || (plen = BIO_get_mem_data(b, &data)) <= 0 ||
	    !(pem = malloc((size_t)plen + 1))) {
		X509_CRL_free(crl);
		BIO_free(b);
		free(der);
		return ERR_NOMEM;
	}
	memcpy(pem, data, (size_t)plen);
	pem[plen] = '\0';
	X509_CRL_free(crl);
	BIO_free(b);
	free(rv->crl_der);
	free(rv->crl_pem);
	rv->crl_der = der;
	rv->crl_len = len;
	rv->crl_pem = pem;
	rv->crl_this = now;
	rv->crl_next = next;
	rv->crl_number = number;
	rv->dirty = false;
	LOG_INFO("attest.crl_signed", LOG_I("entries", rv->n), LOG_I("number", (long long)number));
	return 0;
}

int attestd_crl(struct http_req *r, void *ctx)
{
	struct attestd_ctx *c = ctx;
	struct attestd_revocations *rv = c->revs;
	const char *fmt = http_req_query(r, "format");
	bool pem = fmt && strcmp(fmt, "pem") == 0;
	if (fmt && !pem && strcmp(fmt, "der") != 0)
		return http_reply_problem(r, ERR_RANGE, "format: must be der or pem", "format");
	pthread_mutex_lock(&rv->mu);
	int rc = refresh_crl(c, rv, attestd_now_ms() / 1000);
	if (rc != 0) {
		pthread_mutex_unlock(&rv->mu);
		return http_reply_problem(r, rc, "the CRL could not be signed", NULL);
	}
	char cache[64];
	int64_t age = (rv->crl_next - rv->crl_this) / 2 - (attestd_now_ms() / 1000 - rv->crl_this);
	snprintf(cache, sizeof cache, "max-age=%lld", (long long)(age > 0 ? age : 0));
	http_reply_header(r, "Cache-Control", cache);
	if (pem)
		rc = http_reply_data(r, 200, "application/x-pem-file", rv->crl_pem, strlen(rv->crl_pem));
	else
		rc = http_reply_data(r, 200, "application/pkix-crl", rv->crl_der, rv->crl_len);
	pthread_mutex_unlock(&rv->mu);
	return rc;
}

int attestd_revoke(struct http_req *r, void *ctx)
{
	struct attestd_ctx *c = ctx;
	struct attestd_revocations *rv = c->revs;
	const char *serial_in = NULL;
	int reason_idx = 0;
	bool force = false;
	const struct jspec_field spec[] = {
		JSPEC_STR("serial", true, 1, 64, &serial_in),
		JSPEC_CHOICE("reason", false, reason_names, &reason_idx),
		JSPEC_BOOLEAN("force", false, &force),
		JSPEC_END_F,
	};
	json_t *doc;
	int rc = http_req_json(r, spec, 0, &doc);
	if (rc != 0)
		return rc;
	struct attestd_revoked e = {.reason = reason_codes[reason_idx]};
	bool ok = serial_norm(serial_in, e.serial);
	json_decref(doc);
	if (!ok)
		return http_reply_problem(r, ERR_PARSE, "serial: must be 1 to 40 hexadecimal digits", "serial");
	int64_t now = attestd_now_ms() / 1000;
	e.revoked_at = now;
	char at[32];
	pthread_mutex_lock(&rv->mu);
	const struct attestd_revoked *old = find(rv, e.serial);
	if (old) {
		attestd_rfc3339(old->revoked_at, at, sizeof at);
		pthread_mutex_unlock(&rv->mu);
		return http_reply_json(r, 200, json_pack("{s:s, s:s, s:b}", "serial", e.serial, "revoked_at", at,
							 "already_revoked", 1));
	}
	const struct issued *known = NULL;
	for (size_t i = 0; i < rv->ring_cap && !known; i++)
		if (strcmp(rv->ring[i].serial, e.serial) == 0)
			known = &rv->ring[i];
	if (!known && !force) {
		pthread_mutex_unlock(&rv->mu);
		return http_reply_problem(r, ERR_NOT_FOUND,
					  "serial: not a certificate this service issued since it started; "
					  "send \"force\": true to revoke it anyway",
					  "serial");
	}
	/* An unknown certificate was issued before now, so it expires by now plus the
	 * longest lifetime this service gives. */
	e.expires_at = known ? known->not_after : now + c->set.cert_lifetime_s;
	if (e.expires_at <= now) {
		pthread_mutex_unlock(&rv->mu);
		return http_reply_problem(r, ERR_CONFLICT, "serial: the certificate has already expired", "serial");
	}
	/* Room first, so that a line is never on disk without being in the list. */
	rc = rv->n >= REVOKED_MAX ? ERR_UNAVAILABLE : rv->file ? append_line(rv->file, &e) : 0;
	if (rc == 0)
		rc = push(rv, &e);
	if (rc == 0)
		rv->dirty = true;
	pthread_mutex_unlock(&rv->mu);
	if (rc != 0)
		return http_reply_problem(r, rc, "the revocation could not be recorded; nothing was revoked", NULL);
	metric_inc(c->m_revoked);
	const struct ident *p = http_req_peer(r);
	LOG_WARN("attest.revoked", LOG_S("serial", e.serial), LOG_S("reason", reason_names[reason_idx]),
		 LOG_S("by", p ? p->cn : ""), LOG_B("known", known != NULL));
	attestd_rfc3339(e.revoked_at, at, sizeof at);
	return http_reply_json(r, 201, json_pack("{s:s, s:s, s:s, s:b}", "serial", e.serial, "revoked_at", at,
						 "reason", reason_names[reason_idx], "known", known != NULL));
}
