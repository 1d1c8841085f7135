/* attestpeer: the CA and CRL files of a service (OpenSSL, for both TLS ends), the
 * revocation lookup, the production rule, and the reload of tls.crl. The CRLs in force
 * are one immutable set behind a read-write lock: a check reads it, a reload builds a
 * new set outside the lock and swaps it in, so a slow or failed reload never stalls a
 * handshake and never leaves a half-read list in force. */
#include "attestpeer/attestpeer.h"

#include <errno.h>
#include <fcntl.h>
#include <openssl/bn.h>
#include <openssl/err.h>
#include <openssl/pem.h>
#include <openssl/x509.h>
#include <openssl/x509v3.h>
#include <pthread.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include "err/err.h"
#include "log/log.h"
#include "metrics/metrics.h"

#define STALE_WARN_EVERY_S 60

/* The CRLs in force, each with the CA whose key signed it (borrowed from ap->cas). */
struct crl_set {
	X509_CRL *crl[ATTESTPEER_CRLS_MAX];
	X509 *signer[ATTESTPEER_CRLS_MAX];
	size_t n;
	size_t entries;
	int64_t next_update; /* earliest, 0: none */
	int64_t loaded_at;
};

/* What identifies one version of a file, for "has it changed". */
struct file_sig {
	bool valid;
	dev_t dev;
	ino_t ino;
	off_t size;
	struct timespec mtim, ctim;
};

static const char *const refusal_reasons[] = {"unreadable", "revoked", "no_extension",
					      "not_attestation_ca", "not_attested",
					      "simulated_not_allowed", NULL};

struct attestpeer {
	int refs;
	enum attestpeer_mode mode;
	bool allow_simulated;
	X509 *cas[2 * ATTESTPEER_CAS_MAX]; /* tls.ca and tls.attest_ca: who may sign CRLs */
	size_t ncas;
	X509 *attest_cas[ATTESTPEER_CAS_MAX];
	size_t nattest;
	char *crl_file;
	pthread_rwlock_t lock; /* guards set */
	struct crl_set *set;
	pthread_mutex_t reload_mu; /* one reload at a time; guards sig, failed, missing */
	struct file_sig sig;       /* the file behind set */
	struct file_sig failed;    /* a version that failed: not retried until it changes */
	bool missing;              /* the file vanished (warned once) */
	int64_t last_check_ms;     /* atomic */
	int64_t last_stale_warn;   /* atomic, unix s */
	uint64_t reloads, failures; /* atomic */
	struct metric_series *m_reload_ok, *m_reload_failed, *m_simulated;
	struct metric_series *m_refused[sizeof refusal_reasons / sizeof refusal_reasons[0]];
};

static int64_t mono_ms(void)
{
	struct timespec t;
	clock_gettime(CLOCK_MONOTONIC, &t);
	return (int64_t)t.tv_sec * 1000 + t.tv_nsec / 1000000;
}

static int64_t now_s(void) { return (int64_t)time(NULL); }

static void sig_of(const struct stat *st, struct file_sig *s)
{
	*s = (struct file_sig){.valid = true, .dev = st->st_dev, .ino = st->st_ino, .size = st->st_size,
			       .mtim = st->st_mtim, .ctim = st->st_ctim};
}

static bool sig_eq(const struct file_sig *a, const struct file_sig *b)
{
	return a->valid && b->valid && a->dev == b->dev && a->ino == b->ino && a->size == b->size &&
	       a->mtim.tv_sec == b->mtim.tv_sec && a->mtim.tv_nsec == b->mtim.tv_nsec &&
	       a->ctim.tv_sec == b->ctim.tv_sec && a->ctim.tv_nsec == b->ctim.tv_nsec;
}

static int asn1_unix(const ASN1_TIME *t, int64_t *out)
{
	struct tm tm;
	if (!t || ASN1_TIME_to_tm(t, &tm) != 1)
		return ERR_PARSE;
	*out = (int64_t)timegm(&tm);
	return 0;
}

static void name_of(const X509_NAME *n, char *buf, size_t cap)
{
	buf[0] = '\0';
	if (n)
		X509_NAME_oneline(n, buf, (int)cap);
}

/* The whole file (symbolic links followed: configuration maps are often links), a
 * regular file of at most ATTESTPEER_FILE_MAX bytes. */
static int read_file(const char *path, char **out, size_t *len, struct file_sig *sig, char *why, size_t cap)
{
	*out = NULL;
	int fd = open(path, O_RDONLY | O_CLOEXEC);
	if (fd < 0) {
		snprintf(why, cap, "%s: %s", path, strerror(errno));
		return ERR_CONFIG;
	}
	struct stat st;
	char *buf = NULL;
	int rc = ERR_CONFIG;
	if (fstat(fd, &st) != 0 || !S_ISREG(st.st_mode) || st.st_size <= 0 ||
	    (size_t)st.st_size > ATTESTPEER_FILE_MAX) {
		snprintf(why, cap, "%s: not a regular non-empty file of at most 64 MiB", path);
		goto out;
	}
	if (!(buf = malloc((size_t)st.st_size + 1))) {
		rc = ERR_NOMEM;
		snprintf(why, cap, "%s: out of memory", path);
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
		snprintf(why, cap, "%s: short read (the file changed while it was read?)", path);
		goto out;
	}
	buf[got] = '\0';
	if (sig)
		sig_of(&st, sig);
	*out = buf;
	*len = got;
	buf = NULL;
	rc = 0;
out:
	free(buf);
	close(fd);
	return rc;
}

static bool is_pem(const char *buf, size_t len)
{
	size_t i = 0;
	while (i < len && (buf[i] == ' ' || buf[i] == '\t' || buf[i] == '\r' || buf[i] == '\n'))
		i++;
	return len - i >= 10 && memcmp(buf + i, "-----BEGIN", 10) == 0;
}

/* Each PEM block of buf in turn: its label must be want; der/dlen are the decoded
 * bytes (freed by the caller with OPENSSL_free). Returns 1 with a block, 0 at the end,
 * -1 on a malformed block. */
static int pem_next(BIO *b, const char *want, unsigned char **der, long *dlen)
{
	char *name = NULL, *header = NULL;
	ERR_set_mark();
	int ok = PEM_read_bio(b, &name, &header, der, dlen);
	unsigned long e = ok ? 0 : ERR_peek_last_error();
	ERR_pop_to_mark();
	if (!ok)
		return ERR_GET_REASON(e) == PEM_R_NO_START_LINE ? 0 : -1;
	int r = strcmp(name, want) == 0 ? 1 : -1;
	OPENSSL_free(name);
	OPENSSL_free(header);
	if (r < 0) {
		OPENSSL_free(*der);
		*der = NULL;
	}
	return r;
}

/* PEM certificates of path, appended to list (at most ATTESTPEER_CAS_MAX); each must be
 * a CA certificate. */
static int load_cas(const char *path, const char *key, X509 **list, size_t *n, char *why, size_t cap)
{
	char *text = NULL;
	size_t len = 0;
	int rc = read_file(path, &text, &len, NULL, why, cap);
	if (rc != 0)
		return rc;
	BIO *b = BIO_new_mem_buf(text, (int)len);
	size_t got = 0;
	rc = b ? 0 : ERR_NOMEM;
	while (rc == 0) {
		unsigned char *der = NULL;
		long dlen = 0;
		int r = pem_next(b, "CERTIFICATE", &der, &dlen);
		if (r == 0)
			break;
		const unsigned char *p = der;
		X509 *x = r > 0 ? d2i_X509(NULL, &p, dlen) : NULL;
		bool whole = x && p == der + dlen;
		OPENSSL_free(der);
		if (!whole || got >= ATTESTPEER_CAS_MAX || X509_check_ca(x) == 0) {
			snprintf(why, cap, "%s (%s): certificate %zu: %s", path, key, got + 1,
				 !whole ? "not a PEM certificate"
				 : got >= ATTESTPEER_CAS_MAX ? "more than 64 certificates"
							     : "not a CA certificate");
			X509_free(x);
			rc = ERR_CONFIG;
			break;
		}
		list[(*n)++] = x;
		got++;
	}
	if (rc == 0 && got == 0) {
		snprintf(why, cap, "%s (%s): no PEM certificate in the file", path, key);
		rc = ERR_CONFIG;
	}
	BIO_free(b);
	free(text);
	return rc;
}

static void set_free(struct crl_set *s)
{
	if (!s)
		return;
	for (size_t i = 0; i < s->n; i++)
		X509_CRL_free(s->crl[i]);
	free(s);
}

/* Finds the CA among ap->cas whose key signed crl. */
static X509 *crl_signer(const struct attestpeer *ap, X509_CRL *crl)
{
	for (size_t i = 0; i < ap->ncas; i++) {
		if (X509_NAME_cmp(X509_get_subject_name(ap->cas[i]), X509_CRL_get_issuer(crl)) != 0)
			continue;
		EVP_PKEY *k = X509_get0_pubkey(ap->cas[i]);
		ERR_set_mark();
		int ok = k && X509_CRL_verify(crl, k) == 1;
		ERR_pop_to_mark();
		if (ok)
			return ap->cas[i];
	}
	return NULL;
}

static int set_add(const struct attestpeer *ap, struct crl_set *s, X509_CRL *crl, const char *path,
		   char *why, size_t cap)
{
	char issuer[256];
	if (s->n >= ATTESTPEER_CRLS_MAX) {
		snprintf(why, cap, "%s: more than %d CRLs", path, ATTESTPEER_CRLS_MAX);
		X509_CRL_free(crl);
		return ERR_CONFIG;
	}
	X509 *signer = crl_signer(ap, crl);
	if (!signer) {
		name_of(X509_CRL_get_issuer(crl), issuer, sizeof issuer);
		snprintf(why, cap,
			 "%s: CRL %zu (issuer %s) is not signed by a CA of tls.ca or tls.attest_ca; "
			 "fetch it from the attest service that signs the certificates",
			 path, s->n + 1, issuer);
		X509_CRL_free(crl);
		return ERR_CONFIG;
	}
	int64_t next = 0;
	const ASN1_TIME *nu = X509_CRL_get0_nextUpdate(crl);
	if (nu && asn1_unix(nu, &next) != 0) {
		snprintf(why, cap, "%s: CRL %zu has an unreadable nextUpdate", path, s->n + 1);
		X509_CRL_free(crl);
		return ERR_CONFIG;
	}
	if (next && (!s->next_update || next < s->next_update))
		s->next_update = next;
	STACK_OF(X509_REVOKED) *rv = X509_CRL_get_REVOKED(crl);
	s->entries += rv ? (size_t)sk_X509_REVOKED_num(rv) : 0;
	s->signer[s->n] = signer;
	s->crl[s->n++] = crl;
	return 0;
}

/* Reads path into a new set: PEM (one or more "X509 CRL" blocks) or one DER CRL, every
 * CRL signed by a known CA. */
static int load_crls(const struct attestpeer *ap, const char *path, struct crl_set **out,
		     struct file_sig *sig, char *why, size_t cap)
{
	char *text = NULL;
	size_t len = 0;
	*out = NULL;
	int rc = read_file(path, &text, &len, sig, why, cap);
	if (rc != 0)
		return rc;
	struct crl_set *s = calloc(1, sizeof *s);
	BIO *b = NULL;
	if (!s) {
		rc = ERR_NOMEM;
		goto out;
	}
	if (is_pem(text, len)) {
		if (!(b = BIO_new_mem_buf(text, (int)len))) {
			rc = ERR_NOMEM;
			goto out;
		}
		for (;;) {
			unsigned char *der = NULL;
			long dlen = 0;
			int r = pem_next(b, "X509 CRL", &der, &dlen);
			if (r == 0)
				break;
			const unsigned char *p = der;
			X509_CRL *crl = r > 0 ? d2i_X509_CRL(NULL, &p, dlen) : NULL;
			bool whole = crl && p == der + dlen;
			OPENSSL_free(der);
			if (!whole) {
				X509_CRL_free(crl);
				snprintf(why, cap, "%s: block %zu is not a PEM \"X509 CRL\"", path, s->n + 1);
				rc = ERR_CONFIG;
				goto out;
			}
			if ((rc = set_add(ap, s, crl, path, why, cap)) != 0)
				goto out;
		}
	} else {
		const unsigned char *p = (const unsigned char *)text;
		ERR_set_mark();
		X509_CRL *crl = d2i_X509_CRL(NULL, &p, (long)len);
		ERR_pop_to_mark();
		if (!crl || p != (const unsigned char *)text + len) {
			X509_CRL_free(crl);
			snprintf(why, cap, "%s: neither PEM CRLs nor one DER CRL", path);
			rc = ERR_CONFIG;
			goto out;
		}
		if ((rc = set_add(ap, s, crl, path, why, cap)) != 0)
			goto out;
	}
	if (s->n == 0) {
		snprintf(why, cap, "%s: no CRL in the file", path);
		rc = ERR_CONFIG;
		goto out;
	}
	s->loaded_at = now_s();
	*out = s;
	s = NULL;
	rc = 0;
out:
	BIO_free(b);
	set_free(s);
	free(text);
	return rc;
}

static void log_loaded(const struct attestpeer *ap, const struct crl_set *s, const char *trigger)
{
	char nu[32] = "none";
	if (s->next_update) {
		time_t t = (time_t)s->next_update;
		struct tm tm;
		if (gmtime_r(&t, &tm))
			strftime(nu, sizeof nu, "%Y-%m-%dT%H:%M:%SZ", &tm);
	}
	LOG_INFO("tls.crl_loaded", LOG_S("path", ap->crl_file), LOG_S("trigger", trigger),
		 LOG_I("crls", s->n), LOG_I("entries", s->entries), LOG_S("next_update", nu));
	if (s->next_update && s->next_update < now_s())
		LOG_WARN("tls.crl_stale", LOG_S("path", ap->crl_file), LOG_S("next_update", nu),
			 LOG_S("detail", "the CRL is past its nextUpdate; it is still honoured, but newer "
					 "revocations are missing"),
			 LOG_S("hint", "refresh it from the attest service (mimir-attest crl)"));
}

static void prefix(char *buf, size_t cap, const char *pre)
{
	size_t pl = strlen(pre), l = strlen(buf);
	if (pl + 1 >= cap)
		return;
	if (l + pl >= cap)
		l = cap - pl - 1;
	memmove(buf + pl, buf, l);
	buf[pl + l] = '\0';
	memcpy(buf, pre, pl);
}

int attestpeer_new(struct attestpeer **out, const struct attestpeer_config *cfg, char *why, size_t cap)
{
	*out = NULL;
	why[0] = '\0';
	if (!cfg || !cfg->ca_file) {
		snprintf(why, cap, "tls.ca is required");
		return ERR_INVALID;
	}
	if (cfg->mode == ATTESTPEER_PRODUCTION && !cfg->attest_ca_file) {
		snprintf(why, cap, "tls.attest_ca: required when tls.mode is production (the attestation "
				   "CA's certificate, which alone may sign attested identities)");
		return ERR_INVALID;
	}
	struct attestpeer *ap = calloc(1, sizeof *ap);
	if (!ap)
		return ERR_NOMEM;
	ap->refs = 1;
	ap->mode = cfg->mode;
	ap->allow_simulated = cfg->allow_simulated;
	pthread_rwlock_init(&ap->lock, NULL);
	pthread_mutex_init(&ap->reload_mu, NULL);
	ap->last_check_ms = mono_ms();
	int rc = load_cas(cfg->ca_file, "tls.ca", ap->cas, &ap->ncas, why, cap);
	if (rc == 0 && cfg->attest_ca_file) {
		rc = load_cas(cfg->attest_ca_file, "tls.attest_ca", ap->attest_cas, &ap->nattest, why, cap);
		for (size_t i = 0; rc == 0 && i < ap->nattest; i++) {
			X509_up_ref(ap->attest_cas[i]);
			ap->cas[ap->ncas++] = ap->attest_cas[i];
		}
	}
	if (rc == 0 && cfg->crl_file) {
		if (!(ap->crl_file = strdup(cfg->crl_file)))
			rc = ERR_NOMEM;
		else if ((rc = load_crls(ap, ap->crl_file, &ap->set, &ap->sig, why, cap)) == 0)
			log_loaded(ap, ap->set, "start");
		else
			prefix(why, cap, "tls.crl: ");
	}
	if (rc != 0) {
		attestpeer_free(ap);
		return rc;
	}
	*out = ap;
	return 0;
}

struct attestpeer *attestpeer_ref(struct attestpeer *ap)
{
	if (ap)
		__atomic_add_fetch(&ap->refs, 1, __ATOMIC_RELAXED);
	return ap;
}

void attestpeer_free(struct attestpeer *ap)
{
	if (!ap || __atomic_sub_fetch(&ap->refs, 1, __ATOMIC_ACQ_REL) > 0)
		return;
	set_free(ap->set);
	for (size_t i = 0; i < ap->ncas; i++)
		X509_free(ap->cas[i]);
	for (size_t i = 0; i < ap->nattest; i++)
		X509_free(ap->attest_cas[i]);
	free(ap->crl_file);
	pthread_rwlock_destroy(&ap->lock);
	pthread_mutex_destroy(&ap->reload_mu);
	free(ap);
}

static pthread_mutex_t default_mu = PTHREAD_MUTEX_INITIALIZER;
static struct attestpeer *default_ap;

void attestpeer_set_default(struct attestpeer *ap)
{
	attestpeer_ref(ap);
	pthread_mutex_lock(&default_mu);
	struct attestpeer *old = default_ap;
	default_ap = ap;
	pthread_mutex_unlock(&default_mu);
	attestpeer_free(old);
}

struct attestpeer *attestpeer_default(void)
{
	pthread_mutex_lock(&default_mu);
	struct attestpeer *ap = attestpeer_ref(default_ap);
	pthread_mutex_unlock(&default_mu);
	return ap;
}

enum attestpeer_mode attestpeer_mode(const struct attestpeer *ap) { return ap->mode; }

const char *attestpeer_mode_name(enum attestpeer_mode m)
{
	return m == ATTESTPEER_PRODUCTION ? "production" : "development";
}

int attestpeer_mode_parse(const char *s, enum attestpeer_mode *out)
{
	if (s && !strcmp(s, "development"))
		*out = ATTESTPEER_DEVELOPMENT;
	else if (s && !strcmp(s, "production"))
		*out = ATTESTPEER_PRODUCTION;
	else
		return ERR_INVALID;
	return 0;
}

bool attestpeer_role_attested(enum ident_role r)
{
	return r == IDENT_ROLE_PARTY || r == IDENT_ROLE_DEALER || r == IDENT_ROLE_GATEWAY ||
	       r == IDENT_ROLE_SESSION;
}

/* ---- reload ---- */

int attestpeer_reload(struct attestpeer *ap, const char *trigger)
{
	if (!ap || !ap->crl_file)
		return 0;
	char why[512];
	struct crl_set *s = NULL, *old = NULL;
	struct file_sig sig = {0};
	pthread_mutex_lock(&ap->reload_mu);
	int rc = load_crls(ap, ap->crl_file, &s, &sig, why, sizeof why);
	if (rc != 0) {
		/* Remember the version that failed, so it is not read again every second. */
		struct stat st;
		if (!sig.valid && stat(ap->crl_file, &st) == 0)
			sig_of(&st, &sig);
		ap->failed = sig;
		__atomic_add_fetch(&ap->failures, 1, __ATOMIC_RELAXED);
		metric_inc(ap->m_reload_failed);
		pthread_mutex_unlock(&ap->reload_mu);
		LOG_ERROR("tls.crl_reload_failed", LOG_S("path", ap->crl_file), LOG_S("trigger", trigger),
			  LOG_S("error", why),
			  LOG_S("detail", "the CRLs loaded before stay in force"),
			  LOG_S("hint", "replace the file atomically (write a temporary file, then rename)"));
		return rc;
	}
	pthread_rwlock_wrlock(&ap->lock);
	old = ap->set;
	ap->set = s;
	pthread_rwlock_unlock(&ap->lock);
	ap->sig = sig;
	ap->failed.valid = false;
	ap->missing = false;
	__atomic_add_fetch(&ap->reloads, 1, __ATOMIC_RELAXED);
	metric_inc(ap->m_reload_ok);
	log_loaded(ap, s, trigger);
	pthread_mutex_unlock(&ap->reload_mu);
	set_free(old);
	return 0;
}

/* At most once per ATTESTPEER_RECHECK_MS (whichever thread gets there first): has the
 * file changed since it was read, or since a version of it failed? */
static void maybe_reload(struct attestpeer *ap)
{
	if (!ap->crl_file)
		return;
	int64_t now = mono_ms();
	int64_t last = __atomic_load_n(&ap->last_check_ms, __ATOMIC_RELAXED);
	if (now - last < ATTESTPEER_RECHECK_MS ||
	    !__atomic_compare_exchange_n(&ap->last_check_ms, &last, now, false, __ATOMIC_RELAXED,
					 __ATOMIC_RELAXED))
		return;
	struct stat st;
	struct file_sig sig = {0};
	bool gone = stat(ap->crl_file, &st) != 0;
	int err = errno;
	if (!gone)
		sig_of(&st, &sig);
	pthread_mutex_lock(&ap->reload_mu);
	bool warn_gone = gone && !ap->missing;
	if (gone)
		ap->missing = true;
	bool changed = !gone && !sig_eq(&sig, &ap->sig) && !sig_eq(&sig, &ap->failed);
	pthread_mutex_unlock(&ap->reload_mu);
	if (warn_gone)
		LOG_WARN("tls.crl_missing", LOG_S("path", ap->crl_file), LOG_S("error", strerror(err)),
			 LOG_S("detail", "the CRLs loaded before stay in force until the file is back"));
	if (changed)
		attestpeer_reload(ap, "changed");
}

uint64_t attestpeer_poll(struct attestpeer *ap)
{
	if (!ap)
		return 0;
	maybe_reload(ap);
	return __atomic_load_n(&ap->reloads, __ATOMIC_ACQUIRE);
}

/* ---- checks ---- */

static void verdict_init(struct attestpeer_verdict *v)
{
	v->reason = "ok";
	v->simulated = false;
	v->detail[0] = '\0';
}

static int refuse(struct attestpeer_verdict *v, const char *reason, int code, const char *fmt, ...)
	__attribute__((format(printf, 4, 5)));
static int refuse(struct attestpeer_verdict *v, const char *reason, int code, const char *fmt, ...)
{
	va_list ap;
	va_start(ap, fmt);
	vsnprintf(v->detail, sizeof v->detail, fmt, ap);
	va_end(ap);
	v->reason = reason;
	v->simulated = false;
	return code;
}

int attestpeer_rule(enum attestpeer_mode mode, bool allow_simulated, const struct ident *id,
		    bool issued_by_attest_ca, struct attestpeer_verdict *v)
{
	verdict_init(v);
	if (mode != ATTESTPEER_PRODUCTION)
		return 0;
	const char *cn = id->cn[0] ? id->cn : "(no CN)";
	if (!id->has_extension)
		return refuse(v, "no_extension", ERR_FORBIDDEN,
			      "certificate CN=%s has no Mimir identity extension; production mode accepts "
			      "only certificates that carry a role",
			      cn);
	if (!attestpeer_role_attested(id->role))
		return 0; /* people and attest itself: never attested; route roles decide */
	const char *role = ident_role_name(id->role);
	if (!issued_by_attest_ca)
		return refuse(v, "not_attestation_ca", ERR_FORBIDDEN,
			      "%s certificate CN=%s was not issued by an attestation CA (tls.attest_ca): "
			      "a development (mimir-pki) certificate is no attested identity",
			      role, cn);
	if (id->platform == IDENT_PLATFORM_NONE || !id->has_evidence_hash || id->measurement_len == 0)
		return refuse(v, "not_attested", ERR_FORBIDDEN,
			      "%s certificate CN=%s carries no attestation (platform %s, %s evidence hash, "
			      "%zu-byte measurement)",
			      role, cn, ident_platform_name(id->platform), id->has_evidence_hash ? "an" : "no",
			      id->measurement_len);
	if (id->platform == IDENT_PLATFORM_SIMULATED) {
		if (!allow_simulated)
			return refuse(v, "simulated_not_allowed", ERR_FORBIDDEN,
				      "%s certificate CN=%s rests on simulated attestation, which production "
				      "mode accepts only with tls.allow_simulated (development deployments)",
				      role, cn);
		v->simulated = true;
	}
	return 0;
}

static bool attest_issued(const struct attestpeer *ap, X509 *x)
{
	for (size_t i = 0; i < ap->nattest; i++) {
		if (X509_check_issued(ap->attest_cas[i], x) != X509_V_OK)
			continue;
		EVP_PKEY *k = X509_get0_pubkey(ap->attest_cas[i]);
		ERR_set_mark();
		int ok = k && X509_verify(x, k) == 1;
		ERR_pop_to_mark();
		if (ok)
			return true;
	}
	return false;
}

static const char *crl_reason_name(long r)
{
	static const char *const names[] = {"unspecified", "keyCompromise", "cACompromise",
					    "affiliationChanged", "superseded", "cessationOfOperation",
					    "certificateHold", "(7)", "removeFromCRL",
					    "privilegeWithdrawn", "aACompromise"};
	return r >= 0 && r <= 10 ? names[r] : "unspecified";
}

/* Looks x up in the CRL of the CA that issued it. Called under the read lock. */
static bool revoked(const struct crl_set *s, X509 *x, struct attestpeer_verdict *v)
{
	for (size_t i = 0; s && i < s->n; i++) {
		if (X509_check_issued(s->signer[i], x) != X509_V_OK)
			continue;
		X509_REVOKED *r = NULL;
		if (X509_CRL_get0_by_serial(s->crl[i], &r, X509_get0_serialNumber(x)) != 1)
			continue;
		long reason = -1;
		ASN1_ENUMERATED *e = X509_REVOKED_get_ext_d2i(r, NID_crl_reason, NULL, NULL);
		if (e)
			reason = ASN1_ENUMERATED_get(e);
		ASN1_ENUMERATED_free(e);
		char cn[IDENT_CN_MAX + 1] = "", serial[48] = "";
		X509_NAME_get_text_by_NID(X509_get_subject_name(x), NID_commonName, cn, sizeof cn);
		BIGNUM *bn = ASN1_INTEGER_to_BN(X509_get0_serialNumber(x), NULL);
		char *hex = bn ? BN_bn2hex(bn) : NULL;
		snprintf(serial, sizeof serial, "%s", hex ? hex : "?");
		OPENSSL_free(hex);
		BN_free(bn);
		refuse(v, "revoked", ERR_FORBIDDEN, "certificate CN=%s serial %s is revoked (%s) by the CRL in tls.crl",
		       cn[0] ? cn : "(no CN)", serial, crl_reason_name(reason));
		return true;
	}
	return false;
}

static void stale_warn(struct attestpeer *ap, int64_t next_update)
{
	int64_t now = now_s();
	if (!next_update || now <= next_update)
		return;
	int64_t last = __atomic_load_n(&ap->last_stale_warn, __ATOMIC_RELAXED);
	if (now - last < STALE_WARN_EVERY_S ||
	    !__atomic_compare_exchange_n(&ap->last_stale_warn, &last, now, false, __ATOMIC_RELAXED,
					 __ATOMIC_RELAXED))
		return;
	LOG_WARN("tls.crl_stale", LOG_S("path", ap->crl_file), LOG_I("seconds_past_next_update", now - next_update),
		 LOG_S("detail", "the CRL is past its nextUpdate; it is still honoured, but newer revocations "
				 "are missing"),
		 LOG_S("hint", "refresh it from the attest service (mimir-attest crl)"));
}

static int count(struct attestpeer *ap, int rc, const struct attestpeer_verdict *v)
{
	if (rc == 0) {
		if (v->simulated)
			metric_inc(ap->m_simulated);
		return 0;
	}
	for (size_t i = 0; refusal_reasons[i]; i++)
		if (!strcmp(refusal_reasons[i], v->reason))
			metric_inc(ap->m_refused[i]);
	return rc;
}

/* x is the certificate; prc is what ident made of it (id is filled when 0). */
static int check(struct attestpeer *ap, X509 *x, int prc, struct ident *id, struct attestpeer_verdict *v)
{
	verdict_init(v);
	maybe_reload(ap);
	pthread_rwlock_rdlock(&ap->lock);
	bool rev = revoked(ap->set, x, v);
	int64_t next = ap->set ? ap->set->next_update : 0;
	pthread_rwlock_unlock(&ap->lock);
	stale_warn(ap, next);
	if (rev)
		return count(ap, ERR_FORBIDDEN, v);
	int rc;
	if (prc != 0)
		rc = refuse(v, "unreadable", ERR_PARSE, "the certificate's Mimir identity cannot be read (%s)",
			    err_title(prc));
	else
		rc = attestpeer_rule(ap->mode, ap->allow_simulated, id,
				     ap->mode == ATTESTPEER_PRODUCTION && attest_issued(ap, x), v);
	return count(ap, rc, v);
}

int attestpeer_check_x509(struct attestpeer *ap, X509 *x, struct ident *id, struct attestpeer_verdict *v)
{
	struct ident tmp;
	struct attestpeer_verdict vtmp;
	id = id ? id : &tmp;
	v = v ? v : &vtmp;
	if (!ap || !x)
		return ERR_INVALID;
	return check(ap, x, ident_from_x509(x, id), id, v);
}

int attestpeer_check_der(struct attestpeer *ap, const uint8_t *der, size_t len, struct ident *id,
			 struct attestpeer_verdict *v)
{
	struct ident tmp;
	struct attestpeer_verdict vtmp;
	id = id ? id : &tmp;
	v = v ? v : &vtmp;
	verdict_init(v);
	if (!ap || !der)
		return ERR_INVALID;
	/* Parsed once (OpenSSL 3 spends most of a millisecond decoding the key), with the
	 * rules of ident_from_der: one certificate, nothing after it, canonical DER. */
	const unsigned char *p = der;
	unsigned char *re = NULL;
	memset(id, 0, sizeof *id);
	ERR_set_mark();
	X509 *x = len <= IDENT_CERT_DER_MAX ? d2i_X509(NULL, &p, (long)len) : NULL;
	int n = x && p == der + len ? i2d_X509(x, &re) : -1;
	ERR_pop_to_mark();
	bool canonical = n >= 0 && (size_t)n == len && memcmp(re, der, len) == 0;
	OPENSSL_free(re);
	if (!x)
		return count(ap, refuse(v, "unreadable", ERR_PARSE, "not a DER certificate"), v);
	int rc = check(ap, x, canonical ? ident_from_x509(x, id) : ERR_PARSE, id, v);
	X509_free(x);
	return rc;
}

/* ---- introspection and metrics ---- */

void attestpeer_crl_info(struct attestpeer *ap, struct attestpeer_crl_info *out)
{
	memset(out, 0, sizeof *out);
	if (!ap)
		return;
	out->configured = ap->crl_file != NULL;
	pthread_rwlock_rdlock(&ap->lock);
	if (ap->set) {
		out->crls = ap->set->n;
		out->entries = ap->set->entries;
		out->next_update = ap->set->next_update;
		out->loaded_at = ap->set->loaded_at;
	}
	pthread_rwlock_unlock(&ap->lock);
	out->reloads = __atomic_load_n(&ap->reloads, __ATOMIC_RELAXED);
	out->reload_failures = __atomic_load_n(&ap->failures, __ATOMIC_RELAXED);
}

static double m_entries(void *arg)
{
	struct attestpeer_crl_info i;
	attestpeer_crl_info(arg, &i);
	return (double)i.entries;
}

static double m_next_update(void *arg)
{
	struct attestpeer_crl_info i;
	attestpeer_crl_info(arg, &i);
	return (double)i.next_update;
}

void attestpeer_register_metrics(struct attestpeer *ap, struct metrics *m)
{
	if (!ap || !m)
		return;
	if (ap->crl_file) {
		metrics_gauge_fn(m, "mimir_tls_crl_entries",
				 "Revoked serials listed by the CRLs of tls.crl in force.", m_entries, ap);
		metrics_gauge_fn(m, "mimir_tls_crl_next_update_timestamp_seconds",
				 "Earliest nextUpdate of the CRLs of tls.crl in force (unix seconds); "
				 "past it the CRL is stale and needs a refresh.",
				 m_next_update, ap);
		struct metric *r = metrics_counter(m, "mimir_tls_crl_reloads_total",
						   "Reloads of tls.crl (file changed or SIGHUP), by result.",
						   (const char *const[]){"result", NULL});
		ap->m_reload_ok = metric_series(r, METRIC_LABELS("ok"));
		ap->m_reload_failed = metric_series(r, METRIC_LABELS("failed"));
	}
	struct metric *f = metrics_counter(m, "mimir_tls_peers_refused_total",
					   "Peer certificates refused after their chain verified, by reason "
					   "(revoked, or not attested in production mode).",
					   (const char *const[]){"reason", NULL});
	for (size_t i = 0; refusal_reasons[i]; i++)
		ap->m_refused[i] = metric_series(f, METRIC_LABELS(refusal_reasons[i]));
	ap->m_simulated = metric_series(
		metrics_counter(m, "mimir_tls_simulated_peers_total",
				"Peers accepted on simulated attestation (tls.allow_simulated).", NULL),
		NULL);
}
