/* ident: the Mimir X.509 identity of a peer.
 *
 * Every service link is mutually authenticated TLS. Once the TLS layer has verified a
 * peer certificate against the Mimir CA it hands the DER here, and ident reads what a
 * handler decides on: the subject CN, the SANs, validity, the SHA-256 fingerprint and
 * the Mimir identity extension (IDENT_OID_EXT: role, TEE platform, measurement,
 * evidence hash; the ASN.1 is in docs/PKI.md). ident does not verify chains,
 * signatures or validity times; that is the TLS layer's job. A certificate
 * without the extension parses (role NONE, has_extension false); a present but
 * malformed extension is ERR_PARSE, never ignored.
 *
 * ident also issues certificates in the Mimir profile (ECDSA P-256, SHA-256), for
 * cli/mimir-pki and, later, the attestation service, so both produce identical leaves.
 *
 * All functions are thread-safe and return 0 or a negative ERR_* code (err/err.h). */
#ifndef MIMIR_IDENT_H
#define MIMIR_IDENT_H

#include <openssl/types.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

/* The Mimir arc, 2.25 with the low 63 bits of Mimir's UUID b1c7db9f-b3d6-49d2-9532-
 * 4772cb1ce4a7 (GnuTLS refuses certificates with an OID arc of 64 bits or more; see
 * docs/PKI.md), and the identity extension under it. */
#define IDENT_OID_ARC "2.25.1527361781991531687"
#define IDENT_OID_EXT IDENT_OID_ARC ".1"

#define IDENT_EXT_VERSION 1
#define IDENT_MEASUREMENT_MAX 64
#define IDENT_EVIDENCE_HASH_LEN 32
/* Upper bound of an encoded extension value (the largest valid one is 125 bytes). */
#define IDENT_EXT_DER_MAX 160
/* Larger certificates are refused before parsing (ours are under 1 KiB). */
#define IDENT_CERT_DER_MAX 65536
#define IDENT_CN_MAX 64
#define IDENT_MAX_DNS 8
#define IDENT_DNS_MAX 255
#define IDENT_MAX_IP 8
#define IDENT_IP_STR_MAX 46 /* INET6_ADDRSTRLEN */

enum ident_role {
	IDENT_ROLE_NONE = 0, /* no extension */
	IDENT_ROLE_PARTY,
	IDENT_ROLE_DEALER,
	IDENT_ROLE_GATEWAY,
	IDENT_ROLE_SESSION,
	IDENT_ROLE_ATTEST,
	IDENT_ROLE_CLIENT,
	IDENT_ROLE_ADMIN,
};

/* Where the key lives. NONE: no TEE (hand-issued development certificates); SIMULATED:
 * the simulated attestation of local development; the others: real evidence. */
enum ident_platform {
	IDENT_PLATFORM_NONE = 0,
	IDENT_PLATFORM_SIMULATED,
	IDENT_PLATFORM_SEV_SNP,
	IDENT_PLATFORM_TDX,
	IDENT_PLATFORM_NITRO,
};

/* The content of the identity extension. */
struct ident_ext {
	enum ident_role role; /* never NONE in an extension */
	enum ident_platform platform;
	uint8_t measurement[IDENT_MEASUREMENT_MAX];
	size_t measurement_len; /* 0..64 */
	bool has_evidence_hash;
	uint8_t evidence_hash[IDENT_EVIDENCE_HASH_LEN]; /* SHA-256 of the accepted evidence */
};

/* What a handler sees of its peer. Plain data, no ownership. */
struct ident {
	char cn[IDENT_CN_MAX + 1]; /* subject CN, UTF-8; "" when the subject has none */
	bool has_extension;
	enum ident_role role; /* NONE when !has_extension */
	enum ident_platform platform; /* NONE when !has_extension */
	uint8_t measurement[IDENT_MEASUREMENT_MAX];
	size_t measurement_len;
	bool has_evidence_hash;
	uint8_t evidence_hash[IDENT_EVIDENCE_HASH_LEN];
	char dns[IDENT_MAX_DNS][IDENT_DNS_MAX + 1]; /* dNSName SANs, in certificate order */
	size_t n_dns;
	char ip[IDENT_MAX_IP][IDENT_IP_STR_MAX]; /* iPAddress SANs, as inet_ntop prints them */
	size_t n_ip;
	int64_t not_before, not_after; /* unix seconds */
	uint8_t fingerprint[32]; /* SHA-256 of the DER certificate */
	char serial[41]; /* lowercase hex of the (positive, <= 20 byte) serial number */
};

/* Parses one DER certificate (exactly len bytes, canonical DER, <= IDENT_CERT_DER_MAX).
 * ERR_PARSE: not a certificate, trailing bytes, malformed or duplicated Mimir
 * extension, a CN or SAN outside the bounds above; ERR_TOO_LARGE: more SANs of one
 * kind than IDENT_MAX_DNS / IDENT_MAX_IP, or len too large; ERR_INVALID: NULL args.
 * *out is zeroed first, and left zeroed on error. */
int ident_from_der(const uint8_t *der, size_t len, struct ident *out)
	__attribute__((warn_unused_result));
/* The same for a certificate OpenSSL already holds. */
int ident_from_x509(const X509 *x, struct ident *out) __attribute__((warn_unused_result));

/* Extension value (the DER inside the extnValue OCTET STRING). encode: e is validated
 * (ERR_INVALID), buf needs IDENT_EXT_DER_MAX bytes at most (ERR_TOO_LARGE if cap is
 * short). decode: strict DER, exactly len bytes, known version, role and platform,
 * bounded sizes; anything else is ERR_PARSE. */
int ident_ext_encode(const struct ident_ext *e, uint8_t *buf, size_t cap, size_t *len);
int ident_ext_decode(const uint8_t *der, size_t len, struct ident_ext *e)
	__attribute__((warn_unused_result));
/* Adds the extension (non-critical) to x before signing. ERR_CONFLICT if x has one. */
int ident_ext_add_to_x509(X509 *x, const struct ident_ext *e);

/* "party", "dealer", ...; "none" for NONE; "unknown" out of range. parse accepts the
 * seven extension roles only (not "none"): ERR_INVALID otherwise. */
const char *ident_role_name(enum ident_role r);
int ident_role_parse(const char *s, enum ident_role *out);
/* "none", "simulated", "sev-snp", "tdx", "nitro"; parse: ERR_INVALID otherwise. */
const char *ident_platform_name(enum ident_platform p);
int ident_platform_parse(const char *s, enum ident_platform *out);

/* --- Issuing (the Mimir certificate profile) --- */

/* A fresh ECDSA P-256 key (caller frees with EVP_PKEY_free, which wipes it). */
int ident_key_new(EVP_PKEY **out);

/* Self-signed CA: v3, random positive 128-bit serial, CN=cn, basicConstraints
 * CA:TRUE pathlen 0 (critical), keyUsage keyCertSign+cRLSign (critical), SKI; signed
 * with SHA-256. *out is new (caller frees with X509_free). */
int ident_issue_ca(const char *cn, int64_t not_before, int64_t not_after, EVP_PKEY *key,
		   X509 **out);

struct ident_leaf_spec {
	const char *cn; /* 1..64 bytes, printable */
	const char *const *dns; /* n_dns <= IDENT_MAX_DNS host names (LDH labels, '*.' prefix ok) */
	size_t n_dns;
	const char *const *ip; /* n_ip <= IDENT_MAX_IP textual IPv4 / IPv6 addresses */
	size_t n_ip;
	int64_t not_before, not_after; /* not_before < not_after <= the CA's not_after */
	const struct ident_ext *ext; /* NULL: no Mimir extension */
};

/* Leaf for subject_key (a P-256 key; only its public half is used), signed by ca_key
 * as ca_cert: v3, random positive 128-bit serial, CN, basicConstraints CA:FALSE
 * (critical), keyUsage digitalSignature (critical), extendedKeyUsage serverAuth +
 * clientAuth, SKI, AKI (the CA's SKI), SANs when any, the Mimir extension when
 * spec->ext. ERR_INVALID: a bad spec or key (tools check user input with the
 * predicates below first, to say which value is wrong); ERR_RANGE: the leaf would
 * outlive the CA; ERR_CRYPTO: ca_key does not match ca_cert, ca_cert is not a CA, or
 * signing failed. */
int ident_issue_leaf(const struct ident_leaf_spec *spec, EVP_PKEY *subject_key, X509 *ca_cert,
		     EVP_PKEY *ca_key, X509 **out);

/* Validation used by ident_issue_leaf, exposed so tools can reject input early. */
bool ident_dns_name_ok(const char *s);
bool ident_cn_ok(const char *s);

#endif
