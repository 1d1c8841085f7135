/* ident: the MimirIdentity extension has one DER encoding (known-answer vectors, round
 * trips) and its decoder refuses every value outside the definition and every BER
 * liberty; certificates built here with plain OpenSSL parse to the identity they carry
 * (CN, SANs, validity, serial, fingerprint = SHA-256 of the DER), with or without the
 * extension, and a malformed, duplicated or ambiguous one is refused; and the issuing
 * functions produce the Mimir profile, which OpenSSL's own chain verification accepts. */
#include <gnutls/gnutls.h>
#include <gnutls/x509.h>
#include <openssl/evp.h>
#include <openssl/objects.h>
#include <openssl/x509.h>
#include <openssl/x509v3.h>
#include <sodium.h>
#include <string.h>
#include <time.h>

#include "err/err.h"
#include "ident/ident.h"
#include "testutil.h"

/* ---- a small DER writer for hand-made (and deliberately wrong) inputs ---- */

struct der {
	uint8_t b[1024];
	size_t n;
};

static void put(struct der *d, const void *p, size_t n)
{
	ck_assert_uint_le(d->n + n, sizeof d->b);
	memcpy(d->b + d->n, p, n);
	d->n += n;
}

static void put_len(struct der *d, size_t n)
{
	uint8_t h[3];
	if (n < 128) {
		h[0] = (uint8_t)n;
		put(d, h, 1);
	} else if (n < 256) {
		h[0] = 0x81, h[1] = (uint8_t)n;
		put(d, h, 2);
	} else {
		h[0] = 0x82, h[1] = (uint8_t)(n >> 8), h[2] = (uint8_t)n;
		put(d, h, 3);
	}
}

/* One TLV with a minimal definite length (DER). */
static void tlv(struct der *d, uint8_t tag, const void *v, size_t n)
{
	put(d, &tag, 1);
	put_len(d, n);
	put(d, v, n);
}

static void tlv_s(struct der *d, uint8_t tag, const char *s) { tlv(d, tag, s, strlen(s)); }

/* The fields of a MimirIdentity as separate TLVs, so a test can replace one. */
struct parts {
	struct der version, role, platform, meas, hash, extra;
};

static const uint8_t kat_meas[3] = {1, 2, 3};

static void base_parts(struct parts *p)
{
	uint8_t one = 1, h[32];
	memset(p, 0, sizeof *p);
	memset(h, 0xaa, sizeof h);
	tlv(&p->version, 0x02, &one, 1);
	tlv_s(&p->role, 0x0c, "party");
	tlv_s(&p->platform, 0x0c, "simulated");
	tlv(&p->meas, 0x04, kat_meas, sizeof kat_meas);
	tlv(&p->hash, 0x80, h, sizeof h);
}

static void build(struct der *out, const struct parts *p)
{
	struct der c = {.n = 0};
	put(&c, p->version.b, p->version.n);
	put(&c, p->role.b, p->role.n);
	put(&c, p->platform.b, p->platform.n);
	put(&c, p->meas.b, p->meas.n);
	put(&c, p->hash.b, p->hash.n);
	put(&c, p->extra.b, p->extra.n);
	out->n = 0;
	tlv(out, 0x30, c.b, c.n);
}

static void from_hex(struct der *d, const char *hex)
{
	size_t n;
	d->n = 0;
	ck_assert_int_eq(sodium_hex2bin(d->b, sizeof d->b, hex, strlen(hex), " ", &n, NULL), 0);
	d->n = n;
}

static int decode(const struct der *d)
{
	struct ident_ext e;
	return ident_ext_decode(d->b, d->n, &e);
}

/* ---- the extension ---- */

/* The example of docs/PKI.md, written out byte by byte from the ASN.1 definition. */
#define KAT_FULL                                                                           \
	"30 3c"                                                                            \
	" 02 01 01"                                                                        \
	" 0c 05 7061727479"                                                                \
	" 0c 09 73696d756c61746564"                                                        \
	" 04 03 010203"                                                                    \
	" 80 20 aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa"
#define KAT_MIN "30 13 02 01 01 0c 06 6465616c6572 0c 04 6e6f6e65 04 00"

START_TEST(test_ext_known_answer)
{
	struct der want;
	uint8_t buf[IDENT_EXT_DER_MAX];
	size_t len = 0;
	struct ident_ext e = {.role = IDENT_ROLE_PARTY, .platform = IDENT_PLATFORM_SIMULATED,
			      .measurement = {1, 2, 3}, .measurement_len = 3,
			      .has_evidence_hash = true};
	memset(e.evidence_hash, 0xaa, sizeof e.evidence_hash);
	from_hex(&want, KAT_FULL);
	ck_assert_int_eq(ident_ext_encode(&e, buf, sizeof buf, &len), 0);
	ck_assert_uint_eq(len, want.n);
	ck_assert_mem_eq(buf, want.b, len);

	struct ident_ext m = {.role = IDENT_ROLE_DEALER, .platform = IDENT_PLATFORM_NONE};
	from_hex(&want, KAT_MIN);
	ck_assert_int_eq(ident_ext_encode(&m, buf, sizeof buf, &len), 0);
	ck_assert_uint_eq(len, want.n);
	ck_assert_mem_eq(buf, want.b, len);

	/* The hand-built parts give the same bytes, so the reject tests below start from
	 * a valid value and change one thing. */
	struct parts p;
	struct der d;
	base_parts(&p);
	build(&d, &p);
	from_hex(&want, KAT_FULL);
	ck_assert_uint_eq(d.n, want.n);
	ck_assert_mem_eq(d.b, want.b, d.n);

	struct ident_ext got;
	ck_assert_int_eq(ident_ext_decode(d.b, d.n, &got), 0);
	ck_assert_int_eq(got.role, IDENT_ROLE_PARTY);
	ck_assert_int_eq(got.platform, IDENT_PLATFORM_SIMULATED);
	ck_assert_uint_eq(got.measurement_len, 3);
	ck_assert_mem_eq(got.measurement, kat_meas, 3);
	ck_assert(got.has_evidence_hash);
	ck_assert_mem_eq(got.evidence_hash, e.evidence_hash, 32);
}
END_TEST

START_TEST(test_ext_round_trip_all_values)
{
	static const size_t mlens[] = {0, 1, 32, 48, 64};
	size_t max_len = 0;
	for (int r = IDENT_ROLE_PARTY; r <= IDENT_ROLE_ADMIN; r++)
		for (int p = IDENT_PLATFORM_NONE; p <= IDENT_PLATFORM_NITRO; p++)
			for (size_t mi = 0; mi < sizeof mlens / sizeof mlens[0]; mi++)
				for (int h = 0; h < 2; h++) {
					struct ident_ext e = {.role = r, .platform = p,
							      .measurement_len = mlens[mi],
							      .has_evidence_hash = h};
					for (size_t i = 0; i < mlens[mi]; i++)
						e.measurement[i] = (uint8_t)(i * 7 + r);
					if (h)
						randombytes_buf(e.evidence_hash, 32);
					uint8_t buf[IDENT_EXT_DER_MAX];
					size_t len;
					struct ident_ext d;
					ck_assert_int_eq(ident_ext_encode(&e, buf, sizeof buf, &len), 0);
					ck_assert_int_eq(ident_ext_decode(buf, len, &d), 0);
					ck_assert_mem_eq(&d, &e, sizeof e);
					if (len > max_len)
						max_len = len;
				}
	ck_assert_uint_eq(max_len, 125); /* "session"/"gateway", "simulated", 64, hash */
}
END_TEST

START_TEST(test_ext_encode_rejects)
{
	uint8_t buf[IDENT_EXT_DER_MAX];
	size_t len;
	struct ident_ext e = {.role = IDENT_ROLE_PARTY};
	ck_assert_int_eq(ident_ext_encode(&e, buf, sizeof buf, &len), 0);
	e.role = IDENT_ROLE_NONE;
	ck_assert_int_eq(ident_ext_encode(&e, buf, sizeof buf, &len), ERR_INVALID);
	e.role = (enum ident_role)99;
	ck_assert_int_eq(ident_ext_encode(&e, buf, sizeof buf, &len), ERR_INVALID);
	e.role = IDENT_ROLE_ADMIN;
	e.platform = (enum ident_platform)5;
	ck_assert_int_eq(ident_ext_encode(&e, buf, sizeof buf, &len), ERR_INVALID);
	e.platform = IDENT_PLATFORM_TDX;
	e.measurement_len = 65;
	ck_assert_int_eq(ident_ext_encode(&e, buf, sizeof buf, &len), ERR_INVALID);
	e.measurement_len = 64;
	ck_assert_int_eq(ident_ext_encode(&e, buf, 10, &len), ERR_TOO_LARGE);
	ck_assert_int_eq(ident_ext_encode(NULL, buf, sizeof buf, &len), ERR_INVALID);
	ck_assert_int_eq(ident_ext_encode(&e, NULL, sizeof buf, &len), ERR_INVALID);
}
END_TEST

START_TEST(test_ext_decode_rejects_values)
{
	struct parts p;
	struct der d;
	uint8_t b[80];
	memset(b, 0x11, sizeof b);
#define REJECT(stmt)                                                                       \
	do {                                                                               \
		base_parts(&p);                                                            \
		stmt;                                                                      \
		build(&d, &p);                                                             \
		ck_assert_msg(decode(&d) == ERR_PARSE, "accepted: %s", #stmt);             \
	} while (0)
	base_parts(&p);
	build(&d, &p);
	ck_assert_int_eq(decode(&d), 0);
	/* version */
	REJECT((p.version.n = 0, tlv(&p.version, 0x02, "\x00", 1)));
	REJECT((p.version.n = 0, tlv(&p.version, 0x02, "\x02", 1)));
	REJECT((p.version.n = 0, tlv(&p.version, 0x02, "\xff", 1)));     /* -1 */
	REJECT((p.version.n = 0, tlv(&p.version, 0x02, "\x01\x01", 2))); /* 257 */
	REJECT((p.version.n = 0, tlv(&p.version, 0x02, "\x00\x01", 2))); /* padded 1 */
	REJECT((p.version.n = 0, tlv(&p.version, 0x02, "", 0)));
	REJECT((p.version.n = 0, tlv(&p.version, 0x0a, "\x01", 1))); /* ENUMERATED */
	REJECT((p.version.n = 0));                                     /* missing */
	/* role */
	REJECT((p.role.n = 0, tlv_s(&p.role, 0x0c, "root")));
	REJECT((p.role.n = 0, tlv_s(&p.role, 0x0c, "Party")));
	REJECT((p.role.n = 0, tlv_s(&p.role, 0x0c, "none")));
	REJECT((p.role.n = 0, tlv_s(&p.role, 0x0c, "")));
	REJECT((p.role.n = 0, tlv_s(&p.role, 0x0c, "partypartyparty17")));
	REJECT((p.role.n = 0, tlv(&p.role, 0x0c, "party\0", 6)));
	REJECT((p.role.n = 0, tlv(&p.role, 0x0c, "part", 4)));
	REJECT((p.role.n = 0, tlv_s(&p.role, 0x13, "party"))); /* PrintableString */
	REJECT((p.role.n = 0, tlv_s(&p.role, 0x16, "party"))); /* IA5String */
	REJECT((p.role.n = 0));
	/* platform */
	REJECT((p.platform.n = 0, tlv_s(&p.platform, 0x0c, "sgx")));
	REJECT((p.platform.n = 0, tlv_s(&p.platform, 0x0c, "SEV-SNP")));
	REJECT((p.platform.n = 0, tlv_s(&p.platform, 0x0c, "")));
	REJECT((p.platform.n = 0, tlv(&p.platform, 0x0c, "tdx\0", 4)));
	REJECT((p.platform.n = 0));
	/* measurement */
	REJECT((p.meas.n = 0, tlv(&p.meas, 0x04, b, 65)));
	REJECT((p.meas.n = 0, tlv(&p.meas, 0x0c, b, 3)));
	REJECT((p.meas.n = 0));
	/* evidenceHash */
	REJECT((p.hash.n = 0, tlv(&p.hash, 0x80, b, 31)));
	REJECT((p.hash.n = 0, tlv(&p.hash, 0x80, b, 33)));
	REJECT((p.hash.n = 0, tlv(&p.hash, 0x80, b, 0)));
	REJECT((p.hash.n = 0, tlv(&p.hash, 0x81, b, 32))); /* [1] */
	REJECT((p.hash.n = 0, tlv(&p.hash, 0x04, b, 32))); /* untagged */
	/* order and extra elements: the definition is closed */
	REJECT((tlv(&p.extra, 0x05, "", 0)));
	REJECT((tlv(&p.extra, 0x80, b, 32)));
	REJECT((p.hash.n = 0, tlv(&p.extra, 0x81, b, 32)));
	REJECT((p.extra = p.role, p.role = p.platform, p.platform = p.extra, p.extra.n = 0));
#undef REJECT
	/* Within bounds, the extremes decode. */
	base_parts(&p);
	p.meas.n = 0;
	tlv(&p.meas, 0x04, b, 64);
	build(&d, &p);
	ck_assert_int_eq(decode(&d), 0);
	p.hash.n = 0;
	build(&d, &p);
	ck_assert_int_eq(decode(&d), 0);
}
END_TEST

START_TEST(test_ext_decode_rejects_framing)
{
	struct parts p;
	struct der d, v;
	base_parts(&p);
	build(&d, &p);
	struct ident_ext e;
	/* trailing bytes */
	v = d;
	put(&v, "\x00", 1);
	ck_assert_int_eq(decode(&v), ERR_PARSE);
	v = d;
	put(&v, d.b, d.n);
	ck_assert_int_eq(decode(&v), ERR_PARSE);
	/* every truncation */
	for (size_t n = 0; n < d.n; n++)
		ck_assert_int_eq(ident_ext_decode(d.b, n, &e), ERR_PARSE);
	/* not a SEQUENCE */
	v = d;
	v.b[0] = 0x31;
	ck_assert_int_eq(decode(&v), ERR_PARSE);
	/* an outer length that claims more or less than there is */
	v = d;
	v.b[1]++;
	ck_assert_int_eq(decode(&v), ERR_PARSE);
	v = d;
	v.b[1]--;
	ck_assert_int_eq(decode(&v), ERR_PARSE);
	/* larger than any valid value, whatever the content */
	uint8_t big[IDENT_EXT_DER_MAX + 1];
	memset(big, 0, sizeof big);
	ck_assert_int_eq(ident_ext_decode(big, sizeof big, &e), ERR_PARSE);
	ck_assert_int_eq(ident_ext_decode(NULL, 0, &e), ERR_PARSE);
	ck_assert_int_eq(ident_ext_decode(NULL, 3, &e), ERR_INVALID);
	ck_assert_int_eq(ident_ext_decode(d.b, d.n, NULL), ERR_INVALID);
}
END_TEST

/* BER forms OpenSSL's template decoder accepts; only the canonical-DER check refuses
 * them, so each is first shown to be what it claims (equal content in another form). */
START_TEST(test_ext_decode_rejects_ber)
{
	struct der v;
	/* the minimal KAT, DER, decodes */
	from_hex(&v, KAT_MIN);
	ck_assert_int_eq(decode(&v), 0);
	static const char *const ber[] = {
		/* long-form outer length */
		"30 81 13 02 01 01 0c 06 6465616c6572 0c 04 6e6f6e65 04 00",
		/* non-minimal long form */
		"30 82 00 13 02 01 01 0c 06 6465616c6572 0c 04 6e6f6e65 04 00",
		/* long-form length inside */
		"30 14 02 01 01 0c 81 06 6465616c6572 0c 04 6e6f6e65 04 00",
		/* indefinite-length SEQUENCE */
		"30 80 02 01 01 0c 06 6465616c6572 0c 04 6e6f6e65 04 00 00 00",
		/* constructed OCTET STRING for the measurement (01 02 03 in two pieces) */
		"30 1a 02 01 01 0c 06 6465616c6572 0c 04 6e6f6e65 24 07 04 01 01 04 02 0203",
		/* constructed UTF8String for the role */
		"30 17 02 01 01 2c 0a 0c 03 646561 0c 03 6c6572 0c 04 6e6f6e65 04 00",
		/* constructed [0] for the evidence hash */
		("30 37 02 01 01 0c 06 6465616c6572 0c 04 6e6f6e65 04 00 a0 22 04 20"
		 " 0000000000000000000000000000000000000000000000000000000000000000"),
	};
	for (size_t i = 0; i < sizeof ber / sizeof ber[0]; i++) {
		from_hex(&v, ber[i]);
		ck_assert_msg(decode(&v) == ERR_PARSE, "BER form %zu accepted", i);
	}
}
END_TEST

/* Every one-bit change of a valid value is either refused or decodes to a value that
 * encodes back to exactly the changed bytes: there is no second encoding. */
START_TEST(test_ext_bit_flips_stay_canonical)
{
	struct der d, v;
	from_hex(&d, KAT_FULL);
	size_t accepted = 0;
	for (size_t i = 0; i < d.n * 8; i++) {
		v = d;
		v.b[i / 8] ^= (uint8_t)(1u << (i % 8));
		struct ident_ext e;
		if (ident_ext_decode(v.b, v.n, &e) != 0)
			continue;
		accepted++;
		uint8_t buf[IDENT_EXT_DER_MAX];
		size_t len;
		ck_assert_int_eq(ident_ext_encode(&e, buf, sizeof buf, &len), 0);
		ck_assert_uint_eq(len, v.n);
		ck_assert_mem_eq(buf, v.b, len);
	}
	/* Flips inside the measurement and the hash are valid values. */
	ck_assert_uint_eq(accepted, (3 + 32) * 8);
}
END_TEST

START_TEST(test_role_and_platform_names)
{
	for (int r = IDENT_ROLE_PARTY; r <= IDENT_ROLE_ADMIN; r++) {
		enum ident_role got;
		ck_assert_int_eq(ident_role_parse(ident_role_name(r), &got), 0);
		ck_assert_int_eq(got, r);
	}
	for (int p = IDENT_PLATFORM_NONE; p <= IDENT_PLATFORM_NITRO; p++) {
		enum ident_platform got;
		ck_assert_int_eq(ident_platform_parse(ident_platform_name(p), &got), 0);
		ck_assert_int_eq(got, p);
	}
	enum ident_role r;
	enum ident_platform pl;
	ck_assert_str_eq(ident_role_name(IDENT_ROLE_NONE), "none");
	ck_assert_str_eq(ident_role_name(IDENT_ROLE_GATEWAY), "gateway");
	ck_assert_str_eq(ident_role_name((enum ident_role)42), "unknown");
	ck_assert_str_eq(ident_platform_name(IDENT_PLATFORM_SEV_SNP), "sev-snp");
	ck_assert_str_eq(ident_platform_name((enum ident_platform)-1), "unknown");
	ck_assert_int_eq(ident_role_parse("none", &r), ERR_INVALID);
	ck_assert_int_eq(ident_role_parse("PARTY", &r), ERR_INVALID);
	ck_assert_int_eq(ident_role_parse("", &r), ERR_INVALID);
	ck_assert_int_eq(ident_role_parse(NULL, &r), ERR_INVALID);
	ck_assert_int_eq(ident_platform_parse("sev_snp", &pl), ERR_INVALID);
	ck_assert_int_eq(ident_platform_parse(NULL, &pl), ERR_INVALID);
}
END_TEST

/* ---- certificates built with plain OpenSSL ---- */

static EVP_PKEY *test_key;

static void keys_setup(void)
{
	test_key = EVP_EC_gen("P-256");
	ck_assert_ptr_nonnull(test_key);
}

static void keys_teardown(void) { EVP_PKEY_free(test_key); }

static X509 *new_cert(const char *cn)
{
	X509 *x = X509_new();
	ck_assert_ptr_nonnull(x);
	ck_assert(X509_set_version(x, X509_VERSION_3));
	static const uint8_t sn[] = {0x01, 0x02, 0x03, 0xfe};
	BIGNUM *bn = BN_bin2bn(sn, sizeof sn, NULL);
	ASN1_INTEGER *ai = BN_to_ASN1_INTEGER(bn, NULL);
	ck_assert(X509_set_serialNumber(x, ai));
	ASN1_INTEGER_free(ai);
	BN_free(bn);
	X509_NAME *n = X509_get_subject_name(x);
	if (cn)
		ck_assert(X509_NAME_add_entry_by_txt(n, "CN", MBSTRING_UTF8,
						     (const unsigned char *)cn, -1, -1, 0));
	ck_assert(X509_NAME_add_entry_by_txt(n, "O", MBSTRING_UTF8,
					     (const unsigned char *)"Test", -1, -1, 0));
	ck_assert(X509_set_issuer_name(x, n));
	ck_assert_ptr_nonnull(ASN1_TIME_set(X509_getm_notBefore(x), 1700000000));
	ck_assert_ptr_nonnull(ASN1_TIME_set(X509_getm_notAfter(x), 4102444800)); /* 2100 */
	ck_assert(X509_set_pubkey(x, test_key));
	return x;
}

static void add_san(X509 *x, const char *value)
{
	X509V3_CTX ctx;
	X509V3_set_ctx(&ctx, x, x, NULL, NULL, 0);
	X509_EXTENSION *ex = X509V3_EXT_nconf_nid(NULL, &ctx, NID_subject_alt_name, value);
	ck_assert_ptr_nonnull(ex);
	ck_assert(X509_add_ext(x, ex, -1));
	X509_EXTENSION_free(ex);
}

/* Adds an extension with the Mimir OID and the given raw value. */
static void add_raw_ext(X509 *x, const struct der *value, int crit)
{
	ASN1_OBJECT *obj = OBJ_txt2obj(IDENT_OID_EXT, 1);
	ASN1_OCTET_STRING *os = ASN1_OCTET_STRING_new();
	ck_assert(ASN1_OCTET_STRING_set(os, value->b, (int)value->n));
	X509_EXTENSION *ex = X509_EXTENSION_create_by_OBJ(NULL, obj, crit, os);
	ck_assert_ptr_nonnull(ex);
	ck_assert(X509_add_ext(x, ex, -1));
	X509_EXTENSION_free(ex);
	ASN1_OCTET_STRING_free(os);
	ASN1_OBJECT_free(obj);
}

/* Signs x, returns its DER (caller frees with OPENSSL_free) and frees x. */
static uint8_t *finish(X509 *x, size_t *len)
{
	ck_assert_int_gt(X509_sign(x, test_key, EVP_sha256()), 0);
	unsigned char *der = NULL;
	int n = i2d_X509(x, &der);
	ck_assert_int_gt(n, 0);
	*len = (size_t)n;
	X509_free(x);
	return der;
}

static int parse(X509 *x, struct ident *id)
{
	size_t len;
	uint8_t *der = finish(x, &len);
	int rc = ident_from_der(der, len, id);
	OPENSSL_free(der);
	return rc;
}

START_TEST(test_cert_with_extension)
{
	X509 *x = new_cert("party7");
	add_san(x, "DNS:party7.mimir.test, IP:10.1.2.3, DNS:localhost, IP:2001:db8::1, "
		   "email:ops@example.org");
	struct ident_ext e = {.role = IDENT_ROLE_PARTY, .platform = IDENT_PLATFORM_SEV_SNP,
			      .measurement_len = 48, .has_evidence_hash = true};
	memset(e.measurement, 0x5a, 48);
	memset(e.evidence_hash, 0x3c, 32);
	ck_assert_int_eq(ident_ext_add_to_x509(x, &e), 0);
	ck_assert_int_eq(ident_ext_add_to_x509(x, &e), ERR_CONFLICT);

	/* The extension is where docs/PKI.md says, non-critical, with the KAT encoding. */
	ASN1_OBJECT *obj = OBJ_txt2obj(IDENT_OID_EXT, 1);
	int loc = X509_get_ext_by_OBJ(x, obj, -1);
	ck_assert_int_ge(loc, 0);
	ck_assert_int_eq(X509_EXTENSION_get_critical(X509_get_ext(x, loc)), 0);
	unsigned char *oid_der = NULL;
	int oid_len = i2d_ASN1_OBJECT(obj, &oid_der);
	struct der want_oid;
	from_hex(&want_oid, "06 0b 69 959991eeacd8f3c927 01");
	ck_assert_int_eq(oid_len, (int)want_oid.n);
	ck_assert_mem_eq(oid_der, want_oid.b, want_oid.n);
	OPENSSL_free(oid_der);
	ASN1_OBJECT_free(obj);

	size_t len;
	uint8_t *der = finish(x, &len);
	struct ident id;
	ck_assert_int_eq(ident_from_der(der, len, &id), 0);
	ck_assert_str_eq(id.cn, "party7");
	ck_assert(id.has_extension);
	ck_assert_int_eq(id.role, IDENT_ROLE_PARTY);
	ck_assert_int_eq(id.platform, IDENT_PLATFORM_SEV_SNP);
	ck_assert_uint_eq(id.measurement_len, 48);
	ck_assert_mem_eq(id.measurement, e.measurement, 48);
	ck_assert(id.has_evidence_hash);
	ck_assert_mem_eq(id.evidence_hash, e.evidence_hash, 32);
	ck_assert_uint_eq(id.n_dns, 2);
	ck_assert_str_eq(id.dns[0], "party7.mimir.test");
	ck_assert_str_eq(id.dns[1], "localhost");
	ck_assert_uint_eq(id.n_ip, 2);
	ck_assert_str_eq(id.ip[0], "10.1.2.3");
	ck_assert_str_eq(id.ip[1], "2001:db8::1");
	ck_assert_int_eq(id.not_before, 1700000000);
	ck_assert_int_eq(id.not_after, 4102444800);
	ck_assert_str_eq(id.serial, "010203fe");
	uint8_t fp[32];
	ck_assert_int_eq(crypto_hash_sha256(fp, der, len), 0);
	ck_assert_mem_eq(id.fingerprint, fp, 32);

	/* The same through an X509 OpenSSL holds. */
	const unsigned char *p = der;
	X509 *again = d2i_X509(NULL, &p, (long)len);
	struct ident id2;
	ck_assert_int_eq(ident_from_x509(again, &id2), 0);
	ck_assert_mem_eq(&id, &id2, sizeof id);
	X509_free(again);
	OPENSSL_free(der);
}
END_TEST

START_TEST(test_cert_without_extension)
{
	X509 *x = new_cert("plain");
	struct ident id;
	memset(&id, 0x55, sizeof id);
	ck_assert_int_eq(parse(x, &id), 0);
	ck_assert(!id.has_extension);
	ck_assert_int_eq(id.role, IDENT_ROLE_NONE);
	ck_assert_int_eq(id.platform, IDENT_PLATFORM_NONE);
	ck_assert_uint_eq(id.measurement_len, 0);
	ck_assert_str_eq(id.cn, "plain");
	ck_assert_uint_eq(id.n_dns, 0);
	ck_assert_uint_eq(id.n_ip, 0);
	/* No CN at all is no name, not an error. */
	ck_assert_int_eq(parse(new_cert(NULL), &id), 0);
	ck_assert_str_eq(id.cn, "");
	/* A critical extension is still ours to read. */
	x = new_cert("crit");
	struct der v;
	from_hex(&v, KAT_MIN);
	add_raw_ext(x, &v, 1);
	ck_assert_int_eq(parse(x, &id), 0);
	ck_assert_int_eq(id.role, IDENT_ROLE_DEALER);
}
END_TEST

START_TEST(test_cert_bad_extension_is_an_error)
{
	struct ident id;
	struct der v;
	/* unknown role inside a well-formed certificate */
	X509 *x = new_cert("x");
	from_hex(&v, "30 11 02 01 01 0c 04 726f6f74 0c 04 6e6f6e65 04 00");
	add_raw_ext(x, &v, 0);
	memset(&id, 0x55, sizeof id);
	ck_assert_int_eq(parse(x, &id), ERR_PARSE);
	/* refused means nothing half-read is left behind */
	struct ident zero;
	memset(&zero, 0, sizeof zero);
	ck_assert_mem_eq(&id, &zero, sizeof id);
	/* BER inside the extension */
	x = new_cert("x");
	from_hex(&v, "30 81 13 02 01 01 0c 06 6465616c6572 0c 04 6e6f6e65 04 00");
	add_raw_ext(x, &v, 0);
	ck_assert_int_eq(parse(x, &id), ERR_PARSE);
	/* empty value */
	x = new_cert("x");
	v.n = 0;
	add_raw_ext(x, &v, 0);
	ck_assert_int_eq(parse(x, &id), ERR_PARSE);
	/* the extension twice, even identical */
	x = new_cert("x");
	from_hex(&v, KAT_MIN);
	add_raw_ext(x, &v, 0);
	add_raw_ext(x, &v, 0);
	ck_assert_int_eq(parse(x, &id), ERR_PARSE);
}
END_TEST

START_TEST(test_cert_names_bounded)
{
	struct ident id;
	char san[2048];
	size_t off = 0;
	/* eight DNS and eight IP SANs fit, a ninth of either does not */
	for (int i = 0; i < 8; i++)
		off += (size_t)snprintf(san + off, sizeof san - off, "%sDNS:h%d.test, IP:10.0.0.%d",
					i ? ", " : "", i, i);
	X509 *x = new_cert("many");
	add_san(x, san);
	ck_assert_int_eq(parse(x, &id), 0);
	ck_assert_uint_eq(id.n_dns, 8);
	ck_assert_uint_eq(id.n_ip, 8);
	ck_assert_str_eq(id.dns[7], "h7.test");
	ck_assert_str_eq(id.ip[7], "10.0.0.7");
	char more[2100];
	snprintf(more, sizeof more, "%s, DNS:h8.test", san);
	x = new_cert("many");
	add_san(x, more);
	ck_assert_int_eq(parse(x, &id), ERR_TOO_LARGE);
	snprintf(more, sizeof more, "%s, IP:10.0.0.8", san);
	x = new_cert("many");
	add_san(x, more);
	ck_assert_int_eq(parse(x, &id), ERR_TOO_LARGE);

	/* a 255-byte DNS name fits, 256 does not; no spaces or control bytes */
	char name[300] = "DNS:";
	memset(name + 4, 'a', 255);
	name[4 + 255] = '\0';
	x = new_cert("long");
	add_san(x, name);
	ck_assert_int_eq(parse(x, &id), 0);
	ck_assert_uint_eq(strlen(id.dns[0]), 255);
	name[4 + 255] = 'a';
	name[4 + 256] = '\0';
	x = new_cert("long");
	add_san(x, name);
	ck_assert_int_eq(parse(x, &id), ERR_PARSE);
	x = new_cert("sp");
	add_san(x, "DNS:a b");
	ck_assert_int_eq(parse(x, &id), ERR_PARSE);

	/* CN: 64 bytes fit, 65 do not; two CNs are ambiguous */
	char cn[70];
	memset(cn, 'c', 64);
	cn[64] = '\0';
	ck_assert_int_eq(parse(new_cert(cn), &id), 0);
	ck_assert_str_eq(id.cn, cn);
	/* OpenSSL itself refuses to build a CN over 64 characters (ub-common-name), so a
	 * CN over 64 bytes is made of 33 two-byte UTF-8 characters. */
	char wide[80] = "";
	for (int i = 0; i < 33; i++)
		memcpy(wide + 2 * i, "\xc3\xa9", 3);
	ck_assert_int_eq(parse(new_cert(wide), &id), ERR_PARSE);
	x = new_cert("one");
	ck_assert(X509_NAME_add_entry_by_txt(X509_get_subject_name(x), "CN", MBSTRING_UTF8,
					     (const unsigned char *)"two", -1, -1, 0));
	ck_assert_int_eq(parse(x, &id), ERR_PARSE);
}
END_TEST

START_TEST(test_cert_framing)
{
	X509 *x = new_cert("frame");
	size_t len;
	uint8_t *der = finish(x, &len);
	struct ident id;
	uint8_t *buf = malloc(len + 8);
	ck_assert_ptr_nonnull(buf);
	memcpy(buf, der, len);
	ck_assert_int_eq(ident_from_der(buf, len, &id), 0);
	buf[len] = 0;
	ck_assert_int_eq(ident_from_der(buf, len + 1, &id), ERR_PARSE); /* trailing byte */
	ck_assert_int_eq(ident_from_der(buf, len - 1, &id), ERR_PARSE); /* truncated */
	ck_assert_int_eq(ident_from_der(buf, 1, &id), ERR_PARSE);
	ck_assert_int_eq(ident_from_der(buf, 0, &id), ERR_PARSE);
	ck_assert_int_eq(ident_from_der(NULL, 5, &id), ERR_INVALID);
	ck_assert_int_eq(ident_from_der(buf, len, NULL), ERR_INVALID);
	ck_assert_int_eq(ident_from_der(buf, IDENT_CERT_DER_MAX + 1, &id), ERR_TOO_LARGE);
	/* The same certificate with a non-minimal outer length (30 8k ... -> 30 8k+1 00
	 * ...): OpenSSL reads it, but its fingerprint would not be the one of the DER. */
	ck_assert_int_eq(der[0], 0x30);
	ck_assert_int_ge(der[1], 0x81);
	buf[0] = 0x30, buf[1] = (uint8_t)(der[1] + 1), buf[2] = 0x00;
	memcpy(buf + 3, der + 2, len - 2);
	const unsigned char *p = buf;
	X509 *ber = d2i_X509(NULL, &p, (long)len + 1);
	ck_assert_ptr_nonnull(ber);
	X509_free(ber);
	ck_assert_int_eq(ident_from_der(buf, len + 1, &id), ERR_PARSE);
	free(buf);
	OPENSSL_free(der);
	ck_assert_int_eq(ident_from_x509(NULL, &id), ERR_INVALID);
}
END_TEST

/* ---- issuing: the Mimir profile ---- */

static X509 *ca_cert;
static EVP_PKEY *ca_key;

static void ca_setup(void)
{
	keys_setup();
	ck_assert_int_eq(ident_key_new(&ca_key), 0);
	ck_assert_int_eq(ident_issue_ca("Test CA", 1700000000, 4102444800, ca_key, &ca_cert), 0);
}

static void ca_teardown(void)
{
	X509_free(ca_cert);
	EVP_PKEY_free(ca_key);
	keys_teardown();
}

/* X509_verify_cert against ca_cert at time t for a TLS purpose; the verify error. */
static int verify_at(X509 *leaf, int64_t t, int purpose)
{
	X509_STORE *st = X509_STORE_new();
	X509_STORE_CTX *ctx = X509_STORE_CTX_new();
	ck_assert(X509_STORE_add_cert(st, ca_cert));
	ck_assert(X509_STORE_CTX_init(ctx, st, leaf, NULL));
	X509_STORE_CTX_set_time(ctx, 0, (time_t)t);
	X509_STORE_CTX_set_purpose(ctx, purpose);
	int ok = X509_verify_cert(ctx);
	int err = ok == 1 ? X509_V_OK : X509_STORE_CTX_get_error(ctx);
	X509_STORE_CTX_free(ctx);
	X509_STORE_free(st);
	return err;
}

static const char *const dns2[] = {"localhost", "*.mimir.test"};
static const char *const ip2[] = {"127.0.0.1", "::1"};

START_TEST(test_issue_profile)
{
	/* CA */
	ck_assert_int_eq(X509_get_version(ca_cert), X509_VERSION_3);
	ck_assert_int_eq(X509_check_ca(ca_cert), 1);
	ck_assert_int_eq(X509_get_pathlen(ca_cert), 0);
	ck_assert_uint_eq(X509_get_key_usage(ca_cert), KU_KEY_CERT_SIGN | KU_CRL_SIGN);
	ck_assert_ptr_nonnull(X509_get0_subject_key_id(ca_cert));
	ck_assert_int_eq(X509_get_signature_nid(ca_cert), NID_ecdsa_with_SHA256);
	int crit = -1;
	BASIC_CONSTRAINTS *bc = X509_get_ext_d2i(ca_cert, NID_basic_constraints, &crit, NULL);
	ck_assert(bc && bc->ca && crit == 1);
	BASIC_CONSTRAINTS_free(bc);
	ASN1_BIT_STRING *ku = X509_get_ext_d2i(ca_cert, NID_key_usage, &crit, NULL);
	ck_assert(ku && crit == 1);
	ASN1_BIT_STRING_free(ku);

	/* leaf */
	EVP_PKEY *k;
	ck_assert_int_eq(ident_key_new(&k), 0);
	struct ident_ext e = {.role = IDENT_ROLE_GATEWAY, .platform = IDENT_PLATFORM_SIMULATED,
			      .measurement = {9, 8, 7}, .measurement_len = 3};
	struct ident_leaf_spec spec = {.cn = "gw", .dns = dns2, .n_dns = 2, .ip = ip2,
				       .n_ip = 2, .not_before = 1750000000,
				       .not_after = 1760000000, .ext = &e};
	X509 *leaf, *leaf2;
	ck_assert_int_eq(ident_issue_leaf(&spec, k, ca_cert, ca_key, &leaf), 0);
	ck_assert_int_eq(ident_issue_leaf(&spec, k, ca_cert, ca_key, &leaf2), 0);
	ck_assert_int_eq(X509_get_version(leaf), X509_VERSION_3);
	ck_assert_int_eq(X509_get_signature_nid(leaf), NID_ecdsa_with_SHA256);
	ck_assert_int_eq(X509_check_ca(leaf), 0);
	bc = X509_get_ext_d2i(leaf, NID_basic_constraints, &crit, NULL);
	ck_assert(bc && !bc->ca && crit == 1);
	BASIC_CONSTRAINTS_free(bc);
	ku = X509_get_ext_d2i(leaf, NID_key_usage, &crit, NULL);
	ck_assert(ku && crit == 1);
	ASN1_BIT_STRING_free(ku);
	ck_assert_uint_eq(X509_get_key_usage(leaf), KU_DIGITAL_SIGNATURE);
	ck_assert_uint_eq(X509_get_extended_key_usage(leaf), XKU_SSL_SERVER | XKU_SSL_CLIENT);
	ck_assert_ptr_nonnull(X509_get0_subject_key_id(leaf));
	ck_assert_int_eq(ASN1_OCTET_STRING_cmp(X509_get0_authority_key_id(leaf),
					       X509_get0_subject_key_id(ca_cert)),
			 0);
	/* serial: positive, 128 bits at most, and not repeated */
	const ASN1_INTEGER *sn = X509_get0_serialNumber(leaf);
	ck_assert_int_eq(ASN1_STRING_type(sn), V_ASN1_INTEGER);
	ck_assert_int_le(ASN1_STRING_length(sn), 16);
	ck_assert_int_ge(ASN1_STRING_length(sn), 8); /* fails with probability 2^-64 */
	ck_assert_int_ne(ASN1_INTEGER_cmp(sn, X509_get0_serialNumber(leaf2)), 0);
	/* chain verification by OpenSSL, for both TLS purposes, inside the validity */
	ck_assert_int_eq(verify_at(leaf, 1755000000, X509_PURPOSE_SSL_CLIENT), X509_V_OK);
	ck_assert_int_eq(verify_at(leaf, 1755000000, X509_PURPOSE_SSL_SERVER), X509_V_OK);
	ck_assert_int_eq(verify_at(leaf, 1760000001, X509_PURPOSE_SSL_CLIENT),
			 X509_V_ERR_CERT_HAS_EXPIRED);
	ck_assert_int_eq(verify_at(leaf, 1749999999, X509_PURPOSE_SSL_CLIENT),
			 X509_V_ERR_CERT_NOT_YET_VALID);
	/* and the identity the services will read */
	struct ident id;
	ck_assert_int_eq(ident_from_x509(leaf, &id), 0);
	ck_assert_str_eq(id.cn, "gw");
	ck_assert_int_eq(id.role, IDENT_ROLE_GATEWAY);
	ck_assert_int_eq(id.platform, IDENT_PLATFORM_SIMULATED);
	ck_assert_uint_eq(id.measurement_len, 3);
	ck_assert(!id.has_evidence_hash);
	ck_assert_uint_eq(id.n_dns, 2);
	ck_assert_str_eq(id.dns[1], "*.mimir.test");
	ck_assert_uint_eq(id.n_ip, 2);
	ck_assert_str_eq(id.ip[1], "::1");
	ck_assert_int_eq(id.not_before, 1750000000);
	ck_assert_int_eq(id.not_after, 1760000000);
	X509_free(leaf);
	X509_free(leaf2);

	/* without the extension and without SANs */
	spec.ext = NULL;
	spec.n_dns = spec.n_ip = 0;
	ck_assert_int_eq(ident_issue_leaf(&spec, k, ca_cert, ca_key, &leaf), 0);
	ck_assert_int_lt(X509_get_ext_by_NID(leaf, NID_subject_alt_name, -1), 0);
	ck_assert_int_eq(ident_from_x509(leaf, &id), 0);
	ck_assert(!id.has_extension);
	X509_free(leaf);
	EVP_PKEY_free(k);
}
END_TEST

/* The TLS side of every service is GnuTLS (libtasn1): it must parse and verify what we
 * issue, extension included. libtasn1 refuses OID arcs of 64 bits or more, which is
 * why the Mimir arc is not the full 128-bit UUID (docs/PKI.md). */
static gnutls_x509_crt_t to_gnutls(X509 *x)
{
	unsigned char *der = NULL;
	int n = i2d_X509(x, &der);
	ck_assert_int_gt(n, 0);
	gnutls_datum_t d = {der, (unsigned)n};
	gnutls_x509_crt_t c;
	ck_assert_int_eq(gnutls_x509_crt_init(&c), 0);
	ck_assert_int_eq(gnutls_x509_crt_import(c, &d, GNUTLS_X509_FMT_DER), 0);
	OPENSSL_free(der);
	return c;
}

START_TEST(test_issue_gnutls_accepts)
{
	EVP_PKEY *k;
	X509 *leaf;
	ck_assert_int_eq(ident_key_new(&k), 0);
	struct ident_ext e = {.role = IDENT_ROLE_PARTY, .platform = IDENT_PLATFORM_TDX,
			      .measurement_len = 48, .has_evidence_hash = true};
	int64_t now = (int64_t)time(NULL);
	struct ident_leaf_spec spec = {.cn = "party0", .dns = dns2, .n_dns = 1, .ip = ip2,
				       .n_ip = 2, .not_before = now - 60, .not_after = now + 3600,
				       .ext = &e};
	ck_assert_int_eq(ident_issue_leaf(&spec, k, ca_cert, ca_key, &leaf), 0);
	gnutls_x509_crt_t gl = to_gnutls(leaf), gca = to_gnutls(ca_cert);
	/* GnuTLS sees our extension under our OID, non-critical */
	char oid[128];
	size_t oid_len;
	unsigned crit = 1;
	bool found = false;
	for (unsigned i = 0;; i++) {
		oid_len = sizeof oid;
		if (gnutls_x509_crt_get_extension_info(gl, i, oid, &oid_len, &crit) < 0)
			break;
		if (strcmp(oid, IDENT_OID_EXT) == 0) {
			found = true;
			ck_assert_uint_eq(crit, 0);
		}
	}
	ck_assert(found);
	/* and verifies the chain, with the key purposes of both TLS ends */
	gnutls_x509_trust_list_t tl;
	ck_assert_int_eq(gnutls_x509_trust_list_init(&tl, 0), 0);
	ck_assert_int_eq(gnutls_x509_trust_list_add_cas(tl, &gca, 1, 0), 1);
	const char *purposes[] = {GNUTLS_KP_TLS_WWW_CLIENT, GNUTLS_KP_TLS_WWW_SERVER};
	for (int i = 0; i < 2; i++) {
		gnutls_typed_vdata_st vd = {.type = GNUTLS_DT_KEY_PURPOSE_OID,
					    .data = (unsigned char *)purposes[i]};
		unsigned status = 1;
		ck_assert_int_eq(gnutls_x509_trust_list_verify_crt2(tl, &gl, 1, &vd, 1, 0, &status,
								    NULL),
				 0);
		ck_assert_uint_eq(status, 0);
	}
	gnutls_x509_trust_list_deinit(tl, 1); /* frees gca */
	gnutls_x509_crt_deinit(gl);
	X509_free(leaf);
	EVP_PKEY_free(k);
}
END_TEST

START_TEST(test_issue_rejects)
{
	EVP_PKEY *k, *other;
	X509 *leaf = (X509 *)1;
	ck_assert_int_eq(ident_key_new(&k), 0);
	ck_assert_int_eq(ident_key_new(&other), 0);
	struct ident_leaf_spec good = {.cn = "p", .dns = dns2, .n_dns = 1, .ip = ip2, .n_ip = 1,
				       .not_before = 1750000000, .not_after = 1760000000};
	struct ident_leaf_spec s;
#define ISSUE(expect, stmt)                                                                \
	do {                                                                               \
		s = good;                                                                  \
		stmt;                                                                      \
		ck_assert_msg(ident_issue_leaf(&s, k, ca_cert, ca_key, &leaf) == (expect), \
			      "not %d: %s", expect, #stmt);                                \
		ck_assert_ptr_null(leaf);                                                  \
	} while (0)
	const char *bad_dns[] = {"a..b", "-a.test", "a-.test", "a b", "x,IP:1.2.3.4", "",
				 "a.test.", "*", "*.", "a.*.test"};
	for (size_t i = 0; i < sizeof bad_dns / sizeof bad_dns[0]; i++)
		ISSUE(ERR_INVALID, (s.dns = &bad_dns[i]));
	const char *bad_ip[] = {"1.2.3.4junk", " 1.2.3.4", "1.2.3", "256.1.1.1", "::g", ""};
	for (size_t i = 0; i < sizeof bad_ip / sizeof bad_ip[0]; i++)
		ISSUE(ERR_INVALID, (s.ip = &bad_ip[i]));
	ISSUE(ERR_INVALID, (s.cn = ""));
	ISSUE(ERR_INVALID, (s.cn = "a\nb"));
	ISSUE(ERR_INVALID, (s.cn = NULL));
	ISSUE(ERR_INVALID, (s.n_dns = IDENT_MAX_DNS + 1));
	ISSUE(ERR_INVALID, (s.n_ip = IDENT_MAX_IP + 1));
	ISSUE(ERR_INVALID, (s.not_after = s.not_before));
	ISSUE(ERR_RANGE, (s.not_after = 4102444801)); /* outlives the CA */
	struct ident_ext bad_ext = {.role = IDENT_ROLE_NONE};
	ISSUE(ERR_INVALID, (s.ext = &bad_ext));
#undef ISSUE
	/* a CA key that is not the CA's, an issuer that is not a CA */
	ck_assert_int_eq(ident_issue_leaf(&good, k, ca_cert, other, &leaf), ERR_CRYPTO);
	X509 *notca;
	ck_assert_int_eq(ident_issue_leaf(&good, other, ca_cert, ca_key, &notca), 0);
	ck_assert_int_eq(ident_issue_leaf(&good, k, notca, other, &leaf), ERR_CRYPTO);
	X509_free(notca);
	/* subject keys outside the profile */
	EVP_PKEY *p384 = EVP_EC_gen("P-384");
	ck_assert_int_eq(ident_issue_leaf(&good, p384, ca_cert, ca_key, &leaf), ERR_INVALID);
	EVP_PKEY *ed = EVP_PKEY_Q_keygen(NULL, NULL, "ED25519");
	ck_assert_int_eq(ident_issue_leaf(&good, ed, ca_cert, ca_key, &leaf), ERR_INVALID);
	X509 *ca2;
	ck_assert_int_eq(ident_issue_ca("x", 1, 2, p384, &ca2), ERR_INVALID);
	ck_assert_int_eq(ident_issue_ca("x", 2, 2, k, &ca2), ERR_INVALID);
	ck_assert_int_eq(ident_issue_ca("", 1, 2, k, &ca2), ERR_INVALID);
	EVP_PKEY_free(ed);
	EVP_PKEY_free(p384);
	EVP_PKEY_free(other);
	EVP_PKEY_free(k);
}
END_TEST

START_TEST(test_name_predicates)
{
	ck_assert(ident_dns_name_ok("localhost"));
	ck_assert(ident_dns_name_ok("party-0.mimir.example"));
	ck_assert(ident_dns_name_ok("*.mimir.example"));
	ck_assert(ident_dns_name_ok("1.2.3.4")); /* digits are LDH; harmless */
	char label[70];
	memset(label, 'a', 63);
	label[63] = '\0';
	ck_assert(ident_dns_name_ok(label));
	label[63] = 'a', label[64] = '\0';
	ck_assert(!ident_dns_name_ok(label));
	char longname[300];
	for (int i = 0; i < 127; i++)
		memcpy(longname + 2 * i, "a.", 2);
	longname[253] = '\0'; /* 253 bytes: a.a. ... a */
	ck_assert(ident_dns_name_ok(longname));
	longname[253] = 'b', longname[254] = '\0';
	ck_assert(!ident_dns_name_ok(longname));
	ck_assert(!ident_dns_name_ok(NULL));
	ck_assert(!ident_dns_name_ok("a_b"));
	ck_assert(!ident_dns_name_ok("a/b"));
	ck_assert(ident_cn_ok("Mimir Development CA"));
	ck_assert(ident_cn_ok("\xc3\xa9t\xc3\xa9"));
	ck_assert(!ident_cn_ok("a\x7f"));
	char cn[70];
	memset(cn, 'c', 65);
	cn[65] = '\0';
	ck_assert(!ident_cn_ok(cn));
	cn[64] = '\0';
	ck_assert(ident_cn_ok(cn));
}
END_TEST

Suite *suite(void)
{
	Suite *s = suite_create("ident");
	TCase *tc = tcase_create("extension");
	tcase_add_test(tc, test_ext_known_answer);
	tcase_add_test(tc, test_ext_round_trip_all_values);
	tcase_add_test(tc, test_ext_encode_rejects);
	tcase_add_test(tc, test_ext_decode_rejects_values);
	tcase_add_test(tc, test_ext_decode_rejects_framing);
	tcase_add_test(tc, test_ext_decode_rejects_ber);
	tcase_add_test(tc, test_ext_bit_flips_stay_canonical);
	tcase_add_test(tc, test_role_and_platform_names);
	suite_add_tcase(s, tc);
	tc = tcase_create("certificate");
	tcase_add_checked_fixture(tc, keys_setup, keys_teardown);
	tcase_add_test(tc, test_cert_with_extension);
	tcase_add_test(tc, test_cert_without_extension);
	tcase_add_test(tc, test_cert_bad_extension_is_an_error);
	tcase_add_test(tc, test_cert_names_bounded);
	tcase_add_test(tc, test_cert_framing);
	suite_add_tcase(s, tc);
	tc = tcase_create("issue");
	tcase_add_checked_fixture(tc, ca_setup, ca_teardown);
	tcase_add_test(tc, test_issue_profile);
	tcase_add_test(tc, test_issue_gnutls_accepts);
	tcase_add_test(tc, test_issue_rejects);
	tcase_add_test(tc, test_name_predicates);
	suite_add_tcase(s, tc);
	return s;
}
