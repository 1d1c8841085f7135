/* attestpeer: what a Mimir service accepts as a peer over mutual TLS, beyond the chain.
 *
 * The TLS layers verify the chain to tls.ca inside the handshake (common/http with
 * GnuTLS for the clients of a server, common/httpc with OpenSSL for the server a client
 * calls). A peer verifier adds, still inside the handshake, the two decisions that need
 * Mimir knowledge, with the same code on both ends so that they decide alike:
 *
 * - Revocation. tls.crl names a file of CRLs as attest serves them (GET /v1/crl: one
 *   DER CRL, or PEM with one or more). Each CRL must be signed by a CA of tls.ca or
 *   tls.attest_ca, checked when the file is loaded. A certificate is refused when a CRL
 *   of the CA that issued it lists its serial. A CA with no CRL in the file revokes
 *   nothing. A CRL past its nextUpdate is still honoured (it lists every revocation up
 *   to its signing) and reported stale: a warning at most once a minute and the
 *   mimir_tls_crl_next_update_timestamp_seconds gauge, so a broken refresh is seen
 *   without every peer being refused. The file is read again when it changes (stat
 *   compared at most once a second, when a peer is checked) and on attestpeer_reload()
 *   (svc calls it on SIGHUP); a file that cannot be used leaves the previous CRLs in
 *   force, with an error line.
 * - Production mode (tls.mode = production). A certificate for a role attest issues
 *   after attestation (party, dealer, gateway, session) must have been signed by an
 *   attestation CA (tls.attest_ca) and carry the Mimir extension with a TEE platform,
 *   a measurement and the evidence hash: a mimir-pki certificate is refused, even one
 *   that claims a platform. Platform simulated passes only with tls.allow_simulated
 *   (development policies), and the verdict says so, for a warning on every use.
 *   Roles attest never issues for evidence (attest, admin, client) need the extension
 *   but no attestation: the routes' role masks decide what they may call. Development
 *   mode accepts every chain-verified certificate.
 *
 * A verifier is immutable apart from its CRLs, shared between threads, and reference
 * counted: a service's server and all its outgoing clients hold the same one. */
#ifndef MIMIR_ATTESTPEER_H
#define MIMIR_ATTESTPEER_H

#include <openssl/types.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "ident/ident.h"

struct metrics;

enum attestpeer_mode {
	ATTESTPEER_DEVELOPMENT = 0,
	ATTESTPEER_PRODUCTION,
};

/* Files larger than this are refused (a CRL entry is about 40 bytes). */
#define ATTESTPEER_FILE_MAX ((size_t)64 << 20)
/* CRLs per tls.crl file and CA certificates per tls.ca / tls.attest_ca file. */
#define ATTESTPEER_CRLS_MAX 64
#define ATTESTPEER_CAS_MAX 64
/* How often, at most, a check looks at whether tls.crl changed. */
#define ATTESTPEER_RECHECK_MS 1000

struct attestpeer_config {
	enum attestpeer_mode mode;
	bool allow_simulated;       /* production: accept platform simulated (loudly) */
	const char *ca_file;        /* PEM: tls.ca, the CAs whose CRLs tls.crl may hold */
	const char *attest_ca_file; /* PEM: the attestation CA(s); required in production */
	const char *crl_file;       /* PEM or DER CRLs, or NULL: no revocation check */
};

struct attestpeer;

/* Loads the CA files and the CRL file and checks every CRL's signature. ERR_CONFIG
 * (with why filled: which file, what is wrong, what to do), ERR_INVALID (production
 * without attest_ca_file), ERR_NOMEM. *out holds one reference. */
int attestpeer_new(struct attestpeer **out, const struct attestpeer_config *cfg, char *why,
		   size_t cap);
/* Another reference (returns ap; NULL gives NULL). */
struct attestpeer *attestpeer_ref(struct attestpeer *ap);
/* Drops one reference; the last one frees. Accepts NULL. */
void attestpeer_free(struct attestpeer *ap);

/* The process's verifier. svc_main sets it from the service's tls.* keys before the
 * service starts, so every outgoing client (httpc) and every other TLS end of the
 * process applies the same rules without each module passing them along. set takes a
 * reference and drops the previous one (NULL clears); get returns a new reference, or
 * NULL when none is set. */
void attestpeer_set_default(struct attestpeer *ap);
struct attestpeer *attestpeer_default(void);

enum attestpeer_mode attestpeer_mode(const struct attestpeer *ap);
/* "development" | "production"; parse returns ERR_INVALID for anything else. */
const char *attestpeer_mode_name(enum attestpeer_mode m);
int attestpeer_mode_parse(const char *s, enum attestpeer_mode *out);
/* True for the roles attest certifies after attestation: party, dealer, gateway,
 * session. */
bool attestpeer_role_attested(enum ident_role r);

/* The verdict on one peer certificate. */
struct attestpeer_verdict {
	/* Metrics label and log field: "ok", "unreadable", "revoked", "no_extension",
	 * "not_attestation_ca", "not_attested", "simulated_not_allowed". */
	const char *reason;
	bool simulated;   /* accepted with platform simulated: the caller warns */
	char detail[256]; /* one sentence for the log (no secrets: names and serials) */
};

/* Checks a chain-verified peer certificate (DER as the peer sent it, or as OpenSSL
 * holds it): CRLs, then the production rule. 0 accepted, *id filled (NULL allowed);
 * ERR_FORBIDDEN refused (revoked or not attested); ERR_PARSE a certificate ident
 * cannot read (refused in production, where the identity is the point; in development
 * the caller decides). v explains either way. May reload tls.crl first when it
 * changed. Thread-safe. */
int attestpeer_check_der(struct attestpeer *ap, const uint8_t *der, size_t len, struct ident *id,
			 struct attestpeer_verdict *v) __attribute__((warn_unused_result));
int attestpeer_check_x509(struct attestpeer *ap, X509 *x, struct ident *id,
			  struct attestpeer_verdict *v) __attribute__((warn_unused_result));

/* The production rule alone, on what was read from a certificate (exposed for tests
 * and for callers that hold an ident already). 0 or ERR_FORBIDDEN; fills v. */
int attestpeer_rule(enum attestpeer_mode mode, bool allow_simulated, const struct ident *id,
		    bool issued_by_attest_ca, struct attestpeer_verdict *v);

/* Reloads tls.crl when it changed (stat compared at most once a second) and returns the
 * generation of the CRLs in force, which changes with every reload: a caller that
 * remembers the generation a connection was checked at knows when to check it again. */
uint64_t attestpeer_poll(struct attestpeer *ap);

/* Reads tls.crl again now, whether or not it changed; trigger ("signal", "changed")
 * goes to the log line. 0, or the load error (the previous CRLs stay in force). 0 and
 * nothing done without a CRL file. */
int attestpeer_reload(struct attestpeer *ap, const char *trigger);

struct attestpeer_crl_info {
	bool configured;     /* tls.crl is set */
	size_t crls;         /* CRLs in force */
	size_t entries;      /* revoked serials they list */
	int64_t next_update; /* the earliest nextUpdate (unix s); 0 when none says */
	int64_t loaded_at;   /* when they were read (unix s) */
	uint64_t reloads, reload_failures;
};
void attestpeer_crl_info(struct attestpeer *ap, struct attestpeer_crl_info *out);

/* Registers the verifier's metrics in m (m may be NULL): mimir_tls_crl_entries,
 * mimir_tls_crl_next_update_timestamp_seconds, mimir_tls_crl_reloads_total{result},
 * mimir_tls_peers_refused_total{reason}, mimir_tls_simulated_peers_total. m must not
 * outlive ap. Call once, before the verifier is in use. */
void attestpeer_register_metrics(struct attestpeer *ap, struct metrics *m);

#endif
