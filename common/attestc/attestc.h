/* attestc: the requester's side of Mimir attestation.
 *
 * A party, the dealer or another service running in a TEE gets its Mimir certificate
 * from the attest service in three steps: ask for a nonce (POST /v1/challenge), make
 * hardware evidence whose report_data / user_data is attest_binding(its TLS public key,
 * its X25519 sealing key, the nonce), and send evidence and keys with the role it wants
 * (POST /v1/attestations). attestc_request() does all three; renewal is the same call
 * again before renew_after.
 *
 * Evidence collection is compiled in for every platform and fails with ERR_UNAVAILABLE
 * and a message that says what is missing where the hardware is absent:
 * - SEV-SNP and TDX through the Linux configfs-tsm report interface (Linux 6.7+,
 *   /sys/kernel/config/tsm/report): a report directory is created, the 64 bytes are
 *   written to inblob, outblob is the SNP ATTESTATION_REPORT or the TDX quote, and for
 *   SNP the auxblob (the GHCB certificate table, when the host provides one) gives the
 *   VCEK and ASK; the generation counter detects a concurrent writer.
 * - Nitro Enclaves through /dev/nsm: one NSM Attestation request (CBOR) with the 64
 *   bytes as user_data and the nonce as nonce, over the NSM_IOCTL_RAW ioctl.
 * - Simulated evidence (attest_simulated_make) for development: no hardware at all, and
 *   accepted only by a policy that says so.
 *
 * Secrets: the TLS private key stays with the caller (only its public half and a CSR
 * signature leave); nothing here logs key material. All functions return 0 or a
 * negative ERR_* code; those that can fail for outside reasons also fill a struct
 * attestc_error. */
#ifndef MIMIR_ATTESTC_H
#define MIMIR_ATTESTC_H

#include <openssl/types.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "attest/attest.h"
#include "ident/ident.h"

#define ATTESTC_TSM_DIR_DEFAULT "/sys/kernel/config/tsm/report"
#define ATTESTC_NSM_PATH_DEFAULT "/dev/nsm"
#define ATTESTC_CERTS_MAX 4

struct attestc_error {
	int code;           /* the ERR_* returned */
	long status;        /* HTTP status of a refusal, 0 when none arrived */
	char check[32];     /* the service's "check" ("binding", "signature", ...), or "" */
	char reason[32];    /* the service's "reason" ("nonce_reused", ...), or "" */
	char field[64];     /* the field at fault, or "" */
	char detail[512];   /* one sentence for the operator */
};

/* ---- evidence collection ---- */

struct attestc_collect_opts {
	const char *tsm_dir;  /* NULL: ATTESTC_TSM_DIR_DEFAULT */
	/* An existing report directory to use instead of creating one under tsm_dir (root
	 * can create it and give it to the service's user, so the service needs no
	 * privilege; tests point it at a directory of plain files). Left in place. */
	const char *tsm_report_dir;
	const char *nsm_path; /* NULL: ATTESTC_NSM_PATH_DEFAULT */
	int snp_vmpl;         /* SEV-SNP privlevel to ask for, -1: the kernel's default */
	/* Simulated: the measurement to claim (1..48 bytes). */
	const uint8_t *sim_measurement;
	size_t sim_measurement_len;
	/* Nitro: the nonce field of the request (the binding already covers it; putting
	 * it there too lets a Nitro-only verifier see it). NULL: none. */
	const uint8_t *nitro_nonce;
	size_t nitro_nonce_len;
};

struct attestc_evidence {
	enum ident_platform platform;
	uint8_t *data; /* the report, quote, attestation document or simulated JSON */
	size_t len;
	/* SEV-SNP: the certificates the host supplied (VCEK, ASK; DER), possibly none. */
	struct attest_blob certs[ATTESTC_CERTS_MAX];
	size_t n_certs;
};

/* Makes evidence on this machine for platform p with report_data bound in.
 * ERR_UNAVAILABLE: the interface is absent (not a TEE of that kind, or too old a
 * kernel); ERR_UNSUPPORTED: the interface is another platform's (configfs-tsm provider
 * tdx_guest when SNP was asked for); ERR_IO, ERR_PARSE (the device answered nonsense),
 * ERR_CONFLICT (another writer kept racing us). out is zeroed first. */
int attestc_collect(enum ident_platform p, const uint8_t report_data[ATTEST_REPORT_DATA_LEN],
		    const struct attestc_collect_opts *o, struct attestc_evidence *out,
		    struct attestc_error *err);
void attestc_evidence_free(struct attestc_evidence *e);

/* The GHCB extended-report certificate table (GHCB spec 56421, "SNP Extended Guest
 * Request"): 24-byte entries {GUID, offset, length} ended by an all-zero entry, offsets
 * from the table's start. Extracts the VCEK and ASK (DER) into out (copies). Exposed
 * for tests. ERR_PARSE on a lying offset or length, a missing terminator, or too many
 * entries. */
int attestc_snp_cert_table(const uint8_t *table, size_t len, struct attestc_evidence *out);

/* The NSM request and response (CBOR) for an attestation, exposed for tests: the
 * request {"Attestation": {"user_data": h'..', "nonce": h'..'|null, "public_key": null}}
 * into buf; the document out of a response {"Attestation": {"document": h'..'}} (a
 * pointer into resp), or ERR_UNAVAILABLE with the NSM's own error text for
 * {"Error": "..."}. */
int attestc_nsm_request(const uint8_t *user_data, size_t ud_len, const uint8_t *nonce,
			size_t nonce_len, uint8_t *buf, size_t cap, size_t *len);
int attestc_nsm_response(const uint8_t *resp, size_t len, const uint8_t **doc, size_t *doc_len,
			 struct attestc_error *err);

/* ---- the exchange with the attest service ---- */

struct attestc_opts {
	const char *url;     /* "https://attest:8445" */
	const char *ca_file; /* the CA that issued the attest service's TLS certificate */
	long timeout_ms;     /* whole request, default 30000 */
	enum ident_platform platform;
	enum ident_role role; /* party, dealer, gateway or session */
	const char *name;     /* certificate CN; NULL: the service picks "<role>-<key hash>" */
	const char *const *dns;
	size_t n_dns;
	const char *const *ip;
	size_t n_ip;
	struct attestc_collect_opts collect;
	/* Sent besides what collection found: the SNP VCEK and ASK when the host's
	 * certificate table lacks them, TDX collateral files. */
	const struct attest_blob *certs;
	size_t n_certs;
	const struct attest_blob *collateral;
	size_t n_collateral;
	/* Tests: evidence to send instead of collecting it (the binding is not computed
	 * then). NULL normally. */
	const struct attestc_evidence *evidence_override;
};

struct attestc_result {
	char *cert_pem;    /* the issued certificate (owned) */
	char *ca_pem;      /* the issuing CA (owned) */
	char serial[41];
	char platform[16];
	char role[16];
	uint8_t evidence_sha256[32];
	uint8_t measurement[ATTEST_MEASUREMENT_MAX];
	size_t measurement_len;
	int64_t not_before, not_after, renew_after; /* unix seconds */
	uint8_t nonce[32]; /* the nonce that was bound */
};

/* Runs challenge, collection and attestation for tls_key (ECDSA P-256; a CSR signed
 * with it proves possession) and the X25519 public key. On a refusal err carries the
 * service's status, check, reason and detail (code ERR_ATTESTATION for 403, else the
 * code of the status). */
int attestc_request(const struct attestc_opts *o, EVP_PKEY *tls_key, const uint8_t x25519_pub[32],
		    struct attestc_result *out, struct attestc_error *err);
void attestc_result_free(struct attestc_result *r);
/* True once now has reached renew_after (or the certificate has expired). */
bool attestc_renew_due(const struct attestc_result *r, int64_t now);

/* Steps of attestc_request on their own (tools, tests). challenge: the nonce, 32
 * bytes. post: the body built from the parts, the answer parsed into out. */
int attestc_challenge(const struct attestc_opts *o, uint8_t nonce[32], struct attestc_error *err);
int attestc_post(const struct attestc_opts *o, const uint8_t nonce[32], EVP_PKEY *tls_key,
		 const uint8_t x25519_pub[32], const struct attestc_evidence *ev,
		 struct attestc_result *out, struct attestc_error *err);

/* The binding a requester must put into its evidence (attest_binding over the DER
 * SubjectPublicKeyInfo of tls_key). */
int attestc_binding(EVP_PKEY *tls_key, const uint8_t x25519_pub[32], const uint8_t *nonce,
		    size_t nonce_len, uint8_t out[ATTEST_REPORT_DATA_LEN]);

#endif
