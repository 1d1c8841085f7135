/* attest (Nitro): the two real attestation documents in ../shared/vectors/attest/nitro
 * verify at a time inside their three-hour certificate window with the fields
 * PROVENANCE.md records; one flipped bit anywhere in a document is rejected; a wrong
 * root and a time outside the chain's validity are rejected with check "chain". The
 * CBOR reader refuses what COSE and the NSM never produce (non-shortest integers,
 * indefinite lengths, floats, lying lengths, deep nesting). */
#include <stdlib.h>
#include <string.h>

#include "attest/attest.h"
#include "attest/attest_int.h"
#include "err/err.h"
#include "test_attest_util.h"
#include "testutil.h"

/* 2024-09-07T15:00:00Z, inside 14:37:36..17:37:39 of the production document's chain. */
#define T_PROD 1725721200
/* 2022-10-12T14:00:00Z, inside 13:49:51..16:49:54 of the debug document's chain. */
#define T_DEBUG 1665583200

static struct attest_roots *roots(void)
{
	return atu_roots(ATTEST_ROOTS_PINNED | ATTEST_ROOTS_ALL);
}

START_TEST(test_production_2024_verifies_with_fields)
{
	size_t len;
	uint8_t *doc = atu_load("vectors/attest/nitro/production-2024/document.cose", &len);
	struct attest_roots *r = roots();
	struct attest_claims *c = malloc(sizeof *c);
	struct attest_error e;
	int rc = attest_nitro_verify(r, doc, len, T_PROD, c, &e);
	atu_assert_verified(rc, &e);
	ck_assert_int_eq(c->platform, IDENT_PLATFORM_NITRO);
	ck_assert_str_eq(c->nitro.module_id, "i-0a22e5c5f24d22174-enc0191cceb4289903f");
	ck_assert_str_eq(c->nitro.digest, "SHA384");
	ck_assert_uint_eq(c->nitro.timestamp_ms, 1725719859545ull); /* 14:37:39.545Z */
	ck_assert(c->has_time);
	ck_assert_int_eq(c->time, 1725719859);
	atu_assert_hex(c->nitro.pcr[0], 48,
		       "e72a46ca80a260fb044a125442f0c7e331813bcbaf9724d9f3857758992766f2d65710a27aa94ae3949dd54e7c9fe86a");
	atu_assert_hex(c->nitro.pcr[1], 48,
		       "0343b056cd8485ca7890ddd833476d78460aed2aa161548e4e26bedf321726696257d623e8805f3f605946b3d8b0c6aa");
	atu_assert_hex(c->nitro.pcr[2], 48,
		       "d5dcbdea0aa39c802f9d55ced2ea6e4d74ecec5f08fe40c508882639c9090642669106a062a3e24ee2805a3024b9b75c");
	ck_assert(c->nitro.pcr_present & (1u << 8));
	ck_assert(memcmp(c->measurement, c->nitro.pcr[0], 48) == 0);
	ck_assert_uint_eq(c->measurement_len, 48);
	ck_assert(!c->debug);
	uint8_t ones[1024];
	memset(ones, 1, sizeof ones);
	ck_assert(c->nitro.has_user_data && c->nitro.user_data_len == 1024);
	ck_assert(c->nitro.has_nonce && c->nitro.nonce_len == 1024);
	ck_assert(c->nitro.has_public_key && c->nitro.public_key_len == 1024);
	ck_assert(memcmp(c->nitro.user_data, ones, 1024) == 0);
	ck_assert(memcmp(c->nitro.nonce, ones, 1024) == 0);
	ck_assert(memcmp(c->nitro.public_key, ones, 1024) == 0);
	ck_assert(!c->has_report_data); /* user_data is not 64 bytes */
	ck_assert_uint_ge(c->nitro.n_cabundle, 2);
	json_t *j = attest_claims_json(c);
	ck_assert_ptr_nonnull(j);
	ck_assert_str_eq(json_string_value(json_object_get(json_object_get(j, "nitro"),
							    "module_id")),
			 "i-0a22e5c5f24d22174-enc0191cceb4289903f");
	json_decref(j);
	free(c);
	attest_roots_free(r);
	free(doc);
}
END_TEST

START_TEST(test_debug_2022_verifies_as_debug)
{
	size_t len;
	uint8_t *doc = atu_load("vectors/attest/nitro/debug-2022/document.cose", &len);
	struct attest_roots *r = roots();
	struct attest_claims *c = malloc(sizeof *c);
	struct attest_error e;
	int rc = attest_nitro_verify(r, doc, len, T_DEBUG, c, &e);
	atu_assert_verified(rc, &e);
	ck_assert(c->debug);
	uint8_t zero[48] = {0};
	for (int i = 0; i < 3; i++)
		ck_assert(memcmp(c->nitro.pcr[i], zero, 48) == 0);
	ck_assert_uint_eq(c->nitro.timestamp_ms / 1000, 1665582606); /* 13:50:06Z */
	ck_assert(c->nitro.has_user_data);
	ck_assert_uint_eq(c->nitro.user_data_len, 13);
	ck_assert(memcmp(c->nitro.user_data, "hello, world!", 13) == 0);
	ck_assert(c->nitro.has_public_key);
	ck_assert_uint_eq(c->nitro.public_key_len, 19);
	ck_assert(memcmp(c->nitro.public_key, "my super secret key", 19) == 0);
	ck_assert(!c->nitro.has_nonce);
	free(c);
	attest_roots_free(r);
	free(doc);
}
END_TEST

struct doc {
	struct attest_roots *r;
	const uint8_t *data;
	size_t len;
	int64_t at;
};

static int doc_verify(void *ctx, struct attest_claims *c, struct attest_error *e)
{
	struct doc *d = ctx;
	return attest_nitro_verify(d->r, d->data, d->len, d->at, c, e);
}

static void flip_all(const char *rel, int64_t at)
{
	struct doc d = {.r = roots(), .at = at};
	uint8_t *buf = atu_load(rel, &d.len);
	d.data = buf;
	/* Only the signature can catch a change the parser accepts; the chain is never
	 * reached by a document whose signature fails. */
	struct atu_flips t;
	atu_flip_each(buf, 0, d.len, doc_verify, &d, ATU_CHECK(ATTEST_CHECK_SIGNATURE), &t);
	ck_assert_uint_eq(t.parse + t.check[ATTEST_CHECK_SIGNATURE], d.len);
	ck_assert_uint_gt(t.check[ATTEST_CHECK_SIGNATURE], d.len / 2);
	attest_roots_free(d.r);
	free(buf);
}

START_TEST(test_every_byte_of_production_matters)
{
	flip_all("vectors/attest/nitro/production-2024/document.cose", T_PROD);
}
END_TEST

START_TEST(test_every_byte_of_debug_matters)
{
	flip_all("vectors/attest/nitro/debug-2022/document.cose", T_DEBUG);
}
END_TEST

START_TEST(test_wrong_root_and_expired_chain)
{
	size_t len, rlen;
	uint8_t *doc = atu_load("vectors/attest/nitro/production-2024/document.cose", &len);
	struct attest_claims *c = malloc(sizeof *c);
	struct attest_error e;
	/* The Intel root where the AWS root should be. */
	uint8_t *intel = atu_load("vectors/attest/tdx/Intel_SGX_Root_CA.pem", &rlen);
	struct attest_roots *bad = NULL;
	ck_assert_int_eq(attest_roots_new(&bad), 0);
	ck_assert_int_eq(attest_roots_set(bad, ATTEST_ROOT_AWS_NITRO, intel, rlen), 0);
	atu_expect(attest_nitro_verify(bad, doc, len, T_PROD, c, &e), &e, ERR_ATTESTATION,
		   ATTEST_CHECK_CHAIN, "Nitro document certificate chain");
	attest_roots_free(bad);
	struct attest_roots *r = roots();
	atu_expect(attest_nitro_verify(r, doc, len, T_PROD + 3 * 3600, c, &e), &e, ERR_ATTESTATION,
		   ATTEST_CHECK_CHAIN, "expired");
	atu_expect(attest_nitro_verify(r, doc, len, T_PROD - 3600, c, &e), &e, ERR_ATTESTATION,
		   ATTEST_CHECK_CHAIN, "not yet valid");
	/* The debug document at the production time: its chain expired in 2022. */
	size_t dlen;
	uint8_t *dbg = atu_load("vectors/attest/nitro/debug-2022/document.cose", &dlen);
	atu_expect(attest_nitro_verify(r, dbg, dlen, T_PROD, c, &e), &e, ERR_ATTESTATION,
		   ATTEST_CHECK_CHAIN, "expired");
	/* Truncated, and with a byte after the structure. */
	atu_expect(attest_nitro_verify(r, doc, len - 1, T_PROD, c, &e), &e, ERR_PARSE,
		   ATTEST_CHECK_FORMAT, "Nitro document");
	uint8_t *longer = malloc(len + 1);
	memcpy(longer, doc, len);
	longer[len] = 0;
	atu_expect(attest_nitro_verify(r, longer, len + 1, T_PROD, c, &e), &e, ERR_PARSE,
		   ATTEST_CHECK_FORMAT, "after the COSE_Sign1");
	/* The same document wrapped in the COSE_Sign1 tag (18) still verifies. */
	longer[0] = 0xd2;
	memcpy(longer + 1, doc, len);
	ck_assert_int_eq(attest_nitro_verify(r, longer, len + 1, T_PROD, c, &e), 0);
	/* Through the generic entry. */
	struct attest_evidence ev = {.platform = IDENT_PLATFORM_NITRO, .data = doc, .len = len};
	ck_assert_int_eq(attest_verify(r, &ev, T_PROD, c, &e), 0);
	free(longer);
	free(dbg);
	attest_roots_free(r);
	free(intel);
	free(c);
	free(doc);
}
END_TEST

static int read_one(const uint8_t *p, size_t n, struct cbor_item *it)
{
	struct cbor c;
	cbor_init(&c, p, n);
	int rc = cbor_read(&c, it);
	return rc;
}

START_TEST(test_cbor_reader_is_strict)
{
	struct cbor_item it;
	static const uint8_t u24[] = {0x18, 24}, u23_long[] = {0x18, 23};
	ck_assert_int_eq(read_one(u24, 2, &it), 0);
	ck_assert_uint_eq(it.val, 24);
	ck_assert_int_eq(read_one(u23_long, 2, &it), ERR_PARSE); /* not shortest */
	static const uint8_t u16_short[] = {0x19, 0x00, 0xff}, u64[] = {0x1b, 0, 0, 0, 1, 0, 0, 0, 0};
	ck_assert_int_eq(read_one(u16_short, 3, &it), ERR_PARSE);
	ck_assert_int_eq(read_one(u64, 9, &it), 0);
	ck_assert_uint_eq(it.val, 1ull << 32);
	ck_assert_int_eq(read_one(u64, 8, &it), ERR_PARSE); /* truncated argument */
	static const uint8_t indef[] = {0x5f, 0x41, 0x00, 0xff}, fl[] = {0xf9, 0x3c, 0x00},
			     res[] = {0x1c}, simple[] = {0xf0};
	ck_assert_int_eq(read_one(indef, 4, &it), ERR_PARSE);
	ck_assert_int_eq(read_one(fl, 3, &it), ERR_PARSE);
	ck_assert_int_eq(read_one(res, 1, &it), ERR_PARSE);
	ck_assert_int_eq(read_one(simple, 1, &it), ERR_PARSE);
	static const uint8_t null[] = {0xf6}, t[] = {0xf5};
	ck_assert_int_eq(read_one(null, 1, &it), 0);
	ck_assert_uint_eq(it.val, 22);
	ck_assert_int_eq(read_one(t, 1, &it), 0);
	/* Lengths that lie: a byte string longer than the input, an array of 2^32
	 * elements in a few bytes, a map whose pairs cannot fit. */
	static const uint8_t lie1[] = {0x5a, 0xff, 0xff, 0xff, 0xff, 0x00},
			     lie2[] = {0x9a, 0xff, 0xff, 0xff, 0xff, 0x01}, lie3[] = {0xa2, 0x01, 0x02};
	ck_assert_int_eq(read_one(lie1, sizeof lie1, &it), ERR_PARSE);
	ck_assert_int_eq(read_one(lie2, sizeof lie2, &it), ERR_PARSE);
	ck_assert_int_eq(read_one(lie3, sizeof lie3, &it), ERR_PARSE);
	static const uint8_t str[] = {0x63, 'a', 'b', 'c'};
	ck_assert_int_eq(read_one(str, 4, &it), 0);
	ck_assert_int_eq(it.type, CBOR_TEXT);
	ck_assert(memcmp(it.str, "abc", 3) == 0);
	ck_assert_int_eq(read_one(str, 0, &it), ERR_PARSE);
	/* Nesting deeper than CBOR_MAX_DEPTH is refused by cbor_skip. */
	uint8_t deep[64];
	memset(deep, 0x81, sizeof deep);
	deep[63] = 0x00;
	struct cbor c;
	cbor_init(&c, deep, sizeof deep);
	ck_assert_int_eq(cbor_skip(&c), ERR_PARSE);
	cbor_init(&c, deep + 64 - 10, 10); /* 9 levels and a 0: fine */
	ck_assert_int_eq(cbor_skip(&c), 0);
	ck_assert_uint_eq(c.off, 10);
}
END_TEST

Suite *suite(void)
{
	Suite *s = suite_create("attest_nitro");
	TCase *tc = tcase_create("nitro");
	tcase_set_timeout(tc, 120);
	tcase_add_test(tc, test_production_2024_verifies_with_fields);
	tcase_add_test(tc, test_debug_2022_verifies_as_debug);
	tcase_add_test(tc, test_every_byte_of_production_matters);
	tcase_add_test(tc, test_every_byte_of_debug_matters);
	tcase_add_test(tc, test_wrong_root_and_expired_chain);
	tcase_add_test(tc, test_cbor_reader_is_strict);
	suite_add_tcase(s, tc);
	return s;
}
