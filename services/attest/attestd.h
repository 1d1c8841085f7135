/* mimir-attest: the attestation service. A requester that has no Mimir certificate yet
 * asks for a nonce (POST /v1/challenge), binds it with its TLS key and X25519 sealing
 * key into its hardware evidence (attest_binding), and sends evidence, keys and the
 * role it wants (POST /v1/attestations). The service verifies the evidence with
 * common/attest at the current time, checks the binding and the policy, and signs a
 * short-lived certificate (common/ident) whose Mimir extension carries the role,
 * platform, measurement and evidence hash. Administrators revoke certificates; the CRL
 * is public. Those two public endpoints and the CRL are served to clients without a
 * certificate (http client_cert_optional); everything else needs mutual TLS.
 *
 * This header is shared by the service's files: settings, context, and the handlers of
 * the route table. Locking: each part has its own mutex (nonces, CA, revocations) and
 * none is taken inside another, except revocations -> CA when the CRL is signed. */
#ifndef MIMIR_ATTESTD_H
#define MIMIR_ATTESTD_H

#include <openssl/types.h>
#include <pthread.h>
#include <stdbool.h>
#include <stdint.h>

#include "attest/attest.h"
#include "http/http.h"

struct metric;
struct metric_series;
struct metrics;

#define ATTESTD_NONCE_LEN 32
#define ATTESTD_ADDR_KEY_LEN 9 /* family, then 4 (IPv4) or 8 (IPv6 /64) address bytes */
#define ATTESTD_SERIAL_HEX_MAX 40

struct attestd_settings {
	const char *ca_cert;       /* ca.cert: PEM certificate of the issuing CA */
	const char *ca_key;        /* ca.key: its PEM private key, mode 0600 */
	const char *policy_file;   /* policy.file */
	const char *roots_dir;     /* roots.dir (default attest/roots) */
	bool roots_pinned;         /* roots.pinned: each root must be the genuine one */
	int64_t cert_lifetime_s;   /* cert.lifetime_s */
	int64_t cert_backdate_s;   /* cert.backdate_s: notBefore = now - this */
	int64_t nonce_lifetime_s;  /* nonce.lifetime_s */
	int64_t nonce_max;         /* nonce.max_outstanding: the table's size */
	int64_t nonce_per_address; /* nonce.max_per_address: live nonces of one client */
	double challenge_rate;     /* challenge.rate_per_s: per client address, 0 = off */
	double challenge_burst;    /* challenge.burst */
	int64_t challenge_track;   /* challenge.track_max: client addresses remembered */
	int64_t crl_validity_s;    /* crl.validity_s: nextUpdate - thisUpdate */
	const char *revocations_file; /* revocations.file: survives restarts when set */
	int64_t track_max;         /* issued.track_max: certificates remembered for revoke */
	int64_t verify_time;       /* testing.verify_time: unix seconds, 0 = the clock */
};

extern struct attestd_settings attestd_settings;

/* ---- nonces (nonce.c) ---- */

enum attestd_nonce_verdict {
	ATTESTD_NONCE_OK = 0,
	ATTESTD_NONCE_UNKNOWN,
	ATTESTD_NONCE_REUSED,
	ATTESTD_NONCE_EXPIRED,
};

struct attestd_nonces;
int attestd_nonces_new(struct attestd_nonces **out, size_t cap, int64_t lifetime_ms);
void attestd_nonces_free(struct attestd_nonces *n);
/* A fresh nonce for owner (the client's address key, NULL: nobody in particular).
 * ERR_RATE_LIMITED when every slot holds a live nonce (*full true), or when owner
 * already holds max_per_owner live ones (*full false; 0 = no such limit); *retry_ms
 * is then how long until one of the nonces in the way expires. */
int attestd_nonce_issue(struct attestd_nonces *n, int64_t now_ms, const uint8_t *owner,
			size_t max_per_owner, uint8_t out[ATTESTD_NONCE_LEN], int64_t *expires_ms,
			bool *full, int64_t *retry_ms);
/* Takes the nonce (single use: any later presentation is REUSED until it expires);
 * *issued_ms is when it was made. Constant-time comparison. */
enum attestd_nonce_verdict attestd_nonce_take(struct attestd_nonces *n, const uint8_t *nonce,
					      size_t len, int64_t now_ms, int64_t *issued_ms);
/* Issued, unused and unexpired now. */
size_t attestd_nonces_live(struct attestd_nonces *n, int64_t now_ms);

/* ---- per-address limits (limit.c) ---- */

struct sockaddr;
struct attestd_limiter;
/* The key a client is limited by: its IPv4 address, or the /64 of its IPv6 address
 * (IPv4-mapped IPv6 counts as IPv4); text gets a printable form. false when sa is
 * NULL or of another family. */
bool attestd_addr_key(const struct sockaddr *sa, uint8_t key[ATTESTD_ADDR_KEY_LEN], char *text,
		      size_t cap);
/* A token bucket per client (rate per second, up to burst), for cap clients at a
 * time. rate <= 0: no limit. */
int attestd_limiter_new(struct attestd_limiter **out, size_t cap, double rate, double burst);
void attestd_limiter_free(struct attestd_limiter *l);
/* Takes one token of key's bucket; false when it is empty, with *retry_ms until one
 * is back. */
bool attestd_limiter_take(struct attestd_limiter *l, const uint8_t key[ATTESTD_ADDR_KEY_LEN],
			  int64_t now_ms, int64_t *retry_ms);

/* ---- the issuing CA (ca.c) ---- */

struct attestd_ca;
/* Loads the certificate and key (refused unless the key file is a regular file of mode
 * 0600 or stricter), checks they belong together and that the certificate is a CA
 * valid now. ERR_CONFIG with a log line that says what to fix. */
int attestd_ca_load(struct attestd_ca **out, const char *cert_path, const char *key_path);
void attestd_ca_free(struct attestd_ca *ca);
int64_t attestd_ca_not_after(const struct attestd_ca *ca);
/* The CA certificate, PEM (owned by the CA). */
const char *attestd_ca_pem(const struct attestd_ca *ca);
/* Signs a leaf (ident_issue_leaf under the CA's lock); notAfter is clipped to the CA's
 * own. */
int attestd_ca_issue(struct attestd_ca *ca, const struct ident_leaf_spec *spec,
		     EVP_PKEY *subject, X509 **out);
/* A CRL v2 over the given revoked entries, signed by the CA: DER, new buffer. */
struct attestd_revoked {
	char serial[ATTESTD_SERIAL_HEX_MAX + 1]; /* lowercase hex, two digits a byte, no leading zero byte */
	int64_t revoked_at;
	int64_t expires_at; /* dropped from the CRL after this */
	int reason;         /* CRLReason code, -1: none */
};
int attestd_ca_sign_crl(struct attestd_ca *ca, const struct attestd_revoked *r, size_t n,
			int64_t this_update, int64_t next_update, uint64_t number,
			uint8_t **der, size_t *der_len);

/* ---- revocations (revocations.c) ---- */

struct attestd_revocations;
int attestd_revocations_new(struct attestd_revocations **out, const char *file, int64_t now,
			    size_t track_max);
void attestd_revocations_free(struct attestd_revocations *rv);
/* Remembers an issued certificate (bounded ring: the oldest is forgotten first). */
void attestd_issued_note(struct attestd_revocations *rv, const char *serial_hex,
			 int64_t not_after);
size_t attestd_revocations_count(struct attestd_revocations *rv, int64_t now);

/* ---- context ---- */

struct attestd_ctx {
	struct attestd_settings set;
	struct attestd_ca *ca;
	struct attest_policy *policy;
	struct attest_roots *roots;
	struct attestd_nonces *nonces;
	struct attestd_limiter *limiter;
	struct attestd_revocations *revs;
	struct metric *m_attest;      /* {platform, result, reason} */
	struct metric *m_issued;      /* {role, platform} */
	struct metric *m_verify;      /* histogram {platform} */
	struct metric *m_challenges;  /* {result}: issued, refused, rate_limited, address_quota */
	struct metric_series *m_revoked;
};

/* Wall clock in milliseconds, and the time evidence is verified at (the clock, or
 * testing.verify_time, logged on every use). */
int64_t attestd_now_ms(void);
int64_t attestd_verify_time(const struct attestd_ctx *c);
/* "2026-01-02T03:04:05Z" into buf (21 bytes at least). */
void attestd_rfc3339(int64_t t, char *buf, size_t cap);

/* ---- handlers ---- */
int attestd_challenge(struct http_req *r, void *ctx);    /* POST /v1/challenge */
int attestd_attestation(struct http_req *r, void *ctx);  /* POST /v1/attestations */
int attestd_crl(struct http_req *r, void *ctx);          /* GET /v1/crl */
int attestd_revoke(struct http_req *r, void *ctx);       /* POST /v1/revocations */

#endif
