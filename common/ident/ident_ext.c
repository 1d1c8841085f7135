/* ident_ext: the MimirIdentity extension value, encoded and decoded with OpenSSL's
 * ASN.1 templates. The decoder reads bytes chosen by a peer, so on top of the template
 * it insists on canonical DER (the value must re-encode to exactly the input, which
 * rules out every BER liberty OpenSSL tolerates: long or indefinite lengths,
 * constructed strings), on exact consumption of the input, and on the closed lists of
 * roles and platforms: an identity the verifier cannot fully understand is refused
 * rather than half-read. */
#include <openssl/asn1t.h>
#include <openssl/err.h>
#include <openssl/objects.h>
#include <openssl/x509.h>
#include <string.h>

#include "err/err.h"
#include "ident/ident.h"
#include "ident_int.h"

/* OBJECT IDENTIFIER 2.25.1527361781991531687.1 (docs/PKI.md says why the arc is the
 * low 63 bits of the Mimir UUID rather than all 128). */
const unsigned char ident_oid_der[13] = {
	0x06, 0x0b, 0x69, 0x95, 0x99, 0x91, 0xee, 0xac, 0xd8, 0xf3, 0xc9, 0x27, 0x01,
};

/* MimirIdentity ::= SEQUENCE {
 *     version INTEGER (1), role UTF8String, platform UTF8String,
 *     measurement OCTET STRING, evidenceHash [0] IMPLICIT OCTET STRING OPTIONAL } */
typedef struct {
	ASN1_INTEGER *version;
	ASN1_UTF8STRING *role;
	ASN1_UTF8STRING *platform;
	ASN1_OCTET_STRING *measurement;
	ASN1_OCTET_STRING *evidence_hash;
} MIMIR_IDENTITY;

ASN1_SEQUENCE(MIMIR_IDENTITY) = {
	ASN1_SIMPLE(MIMIR_IDENTITY, version, ASN1_INTEGER),
	ASN1_SIMPLE(MIMIR_IDENTITY, role, ASN1_UTF8STRING),
	ASN1_SIMPLE(MIMIR_IDENTITY, platform, ASN1_UTF8STRING),
	ASN1_SIMPLE(MIMIR_IDENTITY, measurement, ASN1_OCTET_STRING),
	ASN1_IMP_OPT(MIMIR_IDENTITY, evidence_hash, ASN1_OCTET_STRING, 0),
} static_ASN1_SEQUENCE_END(MIMIR_IDENTITY)

#define MI_ITEM ASN1_ITEM_rptr(MIMIR_IDENTITY)

static const char *const role_names[] = {
	[IDENT_ROLE_NONE] = "none",       [IDENT_ROLE_PARTY] = "party",
	[IDENT_ROLE_DEALER] = "dealer",   [IDENT_ROLE_GATEWAY] = "gateway",
	[IDENT_ROLE_SESSION] = "session", [IDENT_ROLE_ATTEST] = "attest",
	[IDENT_ROLE_CLIENT] = "client",   [IDENT_ROLE_ADMIN] = "admin",
};
#define N_ROLES (sizeof role_names / sizeof role_names[0])

static const char *const platform_names[] = {
	[IDENT_PLATFORM_NONE] = "none",   [IDENT_PLATFORM_SIMULATED] = "simulated",
	[IDENT_PLATFORM_SEV_SNP] = "sev-snp", [IDENT_PLATFORM_TDX] = "tdx",
	[IDENT_PLATFORM_NITRO] = "nitro",
};
#define N_PLATFORMS (sizeof platform_names / sizeof platform_names[0])

const char *ident_role_name(enum ident_role r)
{
	return (unsigned)r < N_ROLES ? role_names[r] : "unknown";
}

const char *ident_platform_name(enum ident_platform p)
{
	return (unsigned)p < N_PLATFORMS ? platform_names[p] : "unknown";
}

/* Index of the name equal to the len bytes at s, from first on; -1 if none. Takes a
 * length so that an embedded NUL ("party\0x") cannot match. */
static int name_index(const char *const *names, size_t n, size_t first, const void *s,
		      size_t len)
{
	for (size_t i = first; i < n; i++)
		if (strlen(names[i]) == len && memcmp(names[i], s, len) == 0)
			return (int)i;
	return -1;
}

int ident_role_parse(const char *s, enum ident_role *out)
{
	int i = s ? name_index(role_names, N_ROLES, IDENT_ROLE_PARTY, s, strlen(s)) : -1;
	if (i < 0 || !out)
		return ERR_INVALID;
	*out = (enum ident_role)i;
	return 0;
}

int ident_platform_parse(const char *s, enum ident_platform *out)
{
	int i = s ? name_index(platform_names, N_PLATFORMS, 0, s, strlen(s)) : -1;
	if (i < 0 || !out)
		return ERR_INVALID;
	*out = (enum ident_platform)i;
	return 0;
}

static bool ext_valid(const struct ident_ext *e)
{
	return e->role > IDENT_ROLE_NONE && (unsigned)e->role < N_ROLES &&
	       (unsigned)e->platform < N_PLATFORMS && e->measurement_len <= IDENT_MEASUREMENT_MAX;
}

int ident_ext_encode(const struct ident_ext *e, uint8_t *buf, size_t cap, size_t *len)
{
	if (!e || !buf || !len || !ext_valid(e))
		return ERR_INVALID;
	int rc = ERR_NOMEM;
	unsigned char *der = NULL;
	MIMIR_IDENTITY *m = (MIMIR_IDENTITY *)ASN1_item_new(MI_ITEM);
	if (!m)
		goto out;
	const char *role = role_names[e->role], *plat = platform_names[e->platform];
	if (!ASN1_INTEGER_set(m->version, IDENT_EXT_VERSION) ||
	    !ASN1_STRING_set(m->role, role, (int)strlen(role)) ||
	    !ASN1_STRING_set(m->platform, plat, (int)strlen(plat)) ||
	    !ASN1_OCTET_STRING_set(m->measurement, e->measurement, (int)e->measurement_len))
		goto out;
	if (e->has_evidence_hash &&
	    (!(m->evidence_hash = ASN1_OCTET_STRING_new()) ||
	     !ASN1_OCTET_STRING_set(m->evidence_hash, e->evidence_hash, IDENT_EVIDENCE_HASH_LEN)))
		goto out;
	int n = ASN1_item_i2d((ASN1_VALUE *)m, &der, MI_ITEM);
	if (n <= 0)
		goto out;
	if ((size_t)n > cap) {
		rc = ERR_TOO_LARGE;
		goto out;
	}
	memcpy(buf, der, (size_t)n);
	*len = (size_t)n;
	rc = 0;
out:
	OPENSSL_free(der);
	ASN1_item_free((ASN1_VALUE *)m, MI_ITEM);
	return rc;
}

/* Fills e from a decoded value; ERR_PARSE when a field is outside the definition. */
static int ext_from_asn1(const MIMIR_IDENTITY *m, struct ident_ext *e)
{
	int64_t version;
	if (ASN1_STRING_type(m->version) != V_ASN1_INTEGER ||
	    !ASN1_INTEGER_get_int64(&version, m->version) || version != IDENT_EXT_VERSION)
		return ERR_PARSE;
	int role = name_index(role_names, N_ROLES, IDENT_ROLE_PARTY,
			      ASN1_STRING_get0_data(m->role), (size_t)ASN1_STRING_length(m->role));
	int plat = name_index(platform_names, N_PLATFORMS, 0, ASN1_STRING_get0_data(m->platform),
			      (size_t)ASN1_STRING_length(m->platform));
	if (role < 0 || plat < 0)
		return ERR_PARSE;
	int mlen = ASN1_STRING_length(m->measurement);
	if (mlen < 0 || mlen > IDENT_MEASUREMENT_MAX)
		return ERR_PARSE;
	if (m->evidence_hash && ASN1_STRING_length(m->evidence_hash) != IDENT_EVIDENCE_HASH_LEN)
		return ERR_PARSE;
	e->role = (enum ident_role)role;
	e->platform = (enum ident_platform)plat;
	e->measurement_len = (size_t)mlen;
	if (mlen > 0)
		memcpy(e->measurement, ASN1_STRING_get0_data(m->measurement), (size_t)mlen);
	e->has_evidence_hash = m->evidence_hash != NULL;
	if (m->evidence_hash)
		memcpy(e->evidence_hash, ASN1_STRING_get0_data(m->evidence_hash),
		       IDENT_EVIDENCE_HASH_LEN);
	return 0;
}

int ident_ext_decode(const uint8_t *der, size_t len, struct ident_ext *e)
{
	if (!e || (!der && len))
		return ERR_INVALID;
	memset(e, 0, sizeof *e);
	if (len == 0 || len > IDENT_EXT_DER_MAX)
		return ERR_PARSE;
	int rc = ERR_PARSE;
	unsigned char *re = NULL;
	const unsigned char *p = der;
	/* A failed d2i leaves errors on the thread's OpenSSL queue; they are ours to drop,
	 * not for the next TLS call to report. */
	ERR_set_mark();
	MIMIR_IDENTITY *m = (MIMIR_IDENTITY *)ASN1_item_d2i(NULL, &p, (long)len, MI_ITEM);
	if (!m || p != der + len)
		goto out;
	int n = ASN1_item_i2d((ASN1_VALUE *)m, &re, MI_ITEM);
	if (n < 0 || (size_t)n != len || memcmp(re, der, len) != 0)
		goto out;
	rc = ext_from_asn1(m, e);
out:
	ERR_pop_to_mark();
	OPENSSL_free(re);
	ASN1_item_free((ASN1_VALUE *)m, MI_ITEM);
	if (rc != 0)
		memset(e, 0, sizeof *e);
	return rc;
}

int ident_ext_find(const X509 *x, X509_EXTENSION **out)
{
	*out = NULL;
	int n = X509_get_ext_count(x);
	for (int i = 0; i < n; i++) {
		X509_EXTENSION *ex = X509_get_ext(x, i);
		const ASN1_OBJECT *obj = ex ? X509_EXTENSION_get_object(ex) : NULL;
		if (!obj || OBJ_length(obj) != sizeof ident_oid_der - 2 ||
		    memcmp(OBJ_get0_data(obj), ident_oid_der + 2, sizeof ident_oid_der - 2) != 0)
			continue;
		if (*out) {
			*out = NULL;
			return ERR_PARSE;
		}
		*out = ex;
	}
	return 0;
}

int ident_ext_add_to_x509(X509 *x, const struct ident_ext *e)
{
	if (!x || !e)
		return ERR_INVALID;
	X509_EXTENSION *have;
	if (ident_ext_find(x, &have) != 0 || have)
		return ERR_CONFLICT;
	uint8_t der[IDENT_EXT_DER_MAX];
	size_t len;
	int rc = ident_ext_encode(e, der, sizeof der, &len);
	if (rc != 0)
		return rc;
	rc = ERR_NOMEM;
	const unsigned char *p = ident_oid_der;
	ASN1_OBJECT *obj = d2i_ASN1_OBJECT(NULL, &p, sizeof ident_oid_der);
	ASN1_OCTET_STRING *val = ASN1_OCTET_STRING_new();
	X509_EXTENSION *ex = NULL;
	if (!obj || !val || !ASN1_OCTET_STRING_set(val, der, (int)len))
		goto out;
	ex = X509_EXTENSION_create_by_OBJ(NULL, obj, 0, val);
	if (!ex || !X509_add_ext(x, ex, -1))
		goto out;
	rc = 0;
out:
	X509_EXTENSION_free(ex);
	ASN1_OCTET_STRING_free(val);
	ASN1_OBJECT_free(obj);
	return rc;
}
