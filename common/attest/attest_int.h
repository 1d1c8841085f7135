/* attest_int: what the verifiers of common/attest share and nothing outside uses: the
 * rejection helper, certificate loading and chain verification over OpenSSL, raw ECDSA
 * signatures, and the small bounded CBOR reader the Nitro verifier needs (no Debian C
 * library in our dependency list reads CBOR). Tests include it to reach the CBOR
 * reader directly. */
#ifndef MIMIR_ATTEST_INT_H
#define MIMIR_ATTEST_INT_H

#include <openssl/types.h>
#include <openssl/x509.h>
#include <stdarg.h>

#include "attest/attest.h"

/* Fills e (may be NULL) and returns code. */
int attest_fail(struct attest_error *e, int code, enum attest_check check, const char *field,
		const char *fmt, ...) __attribute__((format(printf, 5, 6)));
void attest_error_clear(struct attest_error *e);

/* Lowercase hex of n bytes into buf (2n + 1 bytes). */
void attest_hex(char *buf, const uint8_t *p, size_t n);

X509 *attest_roots_get(const struct attest_roots *r, enum attest_root which);
const char *attest_root_name(enum attest_root which);

/* Certificates from PEM (one or more, only line breaks and NULs around them, each in
 * canonical base64 so that no byte can change without changing a certificate) or from
 * one DER certificate (exactly len bytes), appended to out. At most max certificates
 * in total in out. ERR_PARSE on anything else. */
int attest_certs_load(const uint8_t *data, size_t len, STACK_OF(X509) *out, int max);

/* Verifies leaf up to anchor (the only trusted certificate) through untrusted (may be
 * NULL) at time at, checking the anchor's own signature too. Each CRL in crls (may be
 * NULL) issued by a certificate of the built chain is checked: its signature (check
 * collateral), its validity at at (freshness) and that it does not list the issuer's
 * child (chain); *crls_used (may be NULL) counts the CRLs that applied. what names the
 * chain in the reason ("VCEK", "PCK", ...). ERR_ATTESTATION with check chain when the
 * chain does not verify. */
int attest_chain_verify(X509 *leaf, STACK_OF(X509) *untrusted, X509 *anchor,
			STACK_OF(X509_CRL) *crls, int64_t at, const char *what, int *crls_used,
			struct attest_error *e);

/* ECDSA over msg with md; the signature as big-endian r and s of n bytes each. 0, or
 * ERR_ATTESTATION (check signature, reason names what) on a bad signature. */
int attest_ecdsa_verify(EVP_PKEY *key, const EVP_MD *md, const uint8_t *msg, size_t len,
			const uint8_t *r, const uint8_t *s, size_t n, const char *what,
			struct attest_error *e);
/* A P-256 public key from its 64-byte x || y. */
int attest_p256_key(const uint8_t xy[64], EVP_PKEY **out);

/* "2025-06-19T10:16:03Z" (also with fractional seconds) -> unix seconds. */
int attest_parse_rfc3339(const char *s, int64_t *out);

/* --- CBOR (RFC 8949), the subset a COSE_Sign1 attestation document uses --- */

enum cbor_type {
	CBOR_UINT = 0,
	CBOR_NINT = 1,
	CBOR_BYTES = 2,
	CBOR_TEXT = 3,
	CBOR_ARRAY = 4,
	CBOR_MAP = 5,
	CBOR_TAG = 6,
	CBOR_SIMPLE = 7, /* false, true, null, undefined; floats are refused */
};

#define CBOR_MAX_DEPTH 16

/* A cursor over a buffer. Every read checks the remaining length before it looks, so a
 * lying length is ERR_PARSE and never a read past the end or a large allocation (the
 * reader allocates nothing: strings point into the buffer). Indefinite lengths,
 * non-shortest integer encodings, floats and reserved additional-info values are
 * refused: COSE wants deterministic encodings and Nitro produces them. */
struct cbor {
	const uint8_t *p;
	size_t len, off;
};

struct cbor_item {
	enum cbor_type type;
	uint64_t val; /* UINT/NINT argument, BYTES/TEXT length, ARRAY/MAP count, TAG number,
		       * SIMPLE value (20 false, 21 true, 22 null, 23 undefined) */
	const uint8_t *str; /* BYTES/TEXT content */
	size_t start;       /* offset of the item's first byte */
};

void cbor_init(struct cbor *c, const uint8_t *p, size_t len);
/* Reads one item's head (and a string's content). ARRAY/MAP/TAG leave the cursor at
 * their first element. */
int cbor_read(struct cbor *c, struct cbor_item *it);
/* Skips one complete item (with its children), at most CBOR_MAX_DEPTH deep. */
int cbor_skip(struct cbor *c);
/* Reads a head and checks its type; for strings also max length. */
int cbor_expect(struct cbor *c, enum cbor_type t, struct cbor_item *it);

#endif
