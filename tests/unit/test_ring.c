/* ring: Z_2^64 / Z_2^128 / Z_2^192 wrap exactly like the rings, the wire format is little endian,
 * and the fixed-point encoding rounds to nearest (ties away from zero), saturates
 * instead of wrapping, rejects NaN and bad f, and decodes exactly. */
#include <math.h>
#include <stdint.h>
#include <string.h>

#include "err/err.h"
#include "ring/ring.h"
#include "testutil.h"

START_TEST(test_ring_wraps)
{
	ck_assert_uint_eq(ring64_add(UINT64_MAX, 2), 1);
	ck_assert_uint_eq(ring64_sub(0, 1), UINT64_MAX);
	ck_assert_uint_eq(ring64_mul((ring64_t)1 << 63, 2), 0);
	ck_assert_uint_eq(ring64_neg(1), UINT64_MAX);
	ring128_t top = ring128_make(UINT64_MAX, UINT64_MAX);
	ck_assert(ring128_add(top, 1) == 0);
	ck_assert(ring128_sub(0, 1) == top);
	ck_assert(ring128_mul((ring128_t)1 << 127, 2) == 0);
	/* (2^64 + 3)(2^64 + 5) = 2^128 + 8 * 2^64 + 15 = 8 * 2^64 + 15 mod 2^128 */
	ring128_t a = ring128_make(1, 3), b = ring128_make(1, 5);
	ck_assert(ring128_mul(a, b) == ring128_make(8, 15));
	ck_assert_uint_eq(ring128_lo(ring128_make(7, 9)), 9);
	ck_assert_uint_eq(ring128_hi(ring128_make(7, 9)), 7);
	/* the projection is a ring homomorphism */
	ring128_t x = ring128_make(0x0123456789abcdefULL, 0xfedcba9876543210ULL);
	ring128_t y = ring128_make(0x1111111111111111ULL, 0x9999999999999999ULL);
	ck_assert_uint_eq(ring128_lo(x * y), ring128_lo(x) * ring128_lo(y));
	ck_assert_uint_eq(ring128_lo(x + y), ring128_lo(x) + ring128_lo(y));
}
END_TEST

START_TEST(test_wire_format)
{
	uint8_t b[16];
	ring64_store(b, 0x0102030405060708ULL);
	const uint8_t want64[8] = {8, 7, 6, 5, 4, 3, 2, 1};
	ck_assert_mem_eq(b, want64, 8);
	ck_assert_uint_eq(ring64_load(b), 0x0102030405060708ULL);
	ring128_t v = ring128_make(0x1112131415161718ULL, 0x0102030405060708ULL);
	ring128_store(b, v);
	const uint8_t want128[16] = {8, 7, 6, 5, 4, 3, 2, 1, 0x18, 0x17, 0x16, 0x15, 0x14, 0x13, 0x12, 0x11};
	ck_assert_mem_eq(b, want128, 16);
	ck_assert(ring128_load(b) == v);
}
END_TEST

/* Z_2^192: known answers (computed with Python's big integers) for the carries across
 * every limb, and the projection to Z_2^128 is a ring homomorphism. */
START_TEST(test_ring192)
{
	static const ring192_t kat[][5] = { /* a, b, a + b, a - b, a * b */
		{{{0xffffffffffffffffULL, 0xffffffffffffffffULL, 0xffffffffffffffffULL}}, {{0x0000000000000001ULL, 0x0000000000000000ULL, 0x0000000000000000ULL}}, {{0x0000000000000000ULL, 0x0000000000000000ULL, 0x0000000000000000ULL}}, {{0xfffffffffffffffeULL, 0xffffffffffffffffULL, 0xffffffffffffffffULL}}, {{0xffffffffffffffffULL, 0xffffffffffffffffULL, 0xffffffffffffffffULL}}},
		{{{0xffffffffffffffffULL, 0xffffffffffffffffULL, 0x0000000000000000ULL}}, {{0x0000000000000001ULL, 0x0000000000000001ULL, 0x0000000000000000ULL}}, {{0x0000000000000000ULL, 0x0000000000000001ULL, 0x0000000000000001ULL}}, {{0xfffffffffffffffeULL, 0xfffffffffffffffeULL, 0x0000000000000000ULL}}, {{0xffffffffffffffffULL, 0xfffffffffffffffeULL, 0x0000000000000000ULL}}},
		{{{0x1111111111111111ULL, 0xfedcba9876543210ULL, 0x0123456789abcdefULL}}, {{0x7777777777777777ULL, 0x8888888888888888ULL, 0x9999999999999999ULL}}, {{0x8888888888888888ULL, 0x87654320fedcba98ULL, 0x9abcdf0123456789ULL}}, {{0x999999999999999aULL, 0x7654320fedcba987ULL, 0x6789abcdf0123456ULL}}, {{0x6f8091a2b3c4d5e7ULL, 0x1075b8d9d8b57008ULL, 0x86f0c0f7949801d2ULL}}},
	};
	for (size_t i = 0; i < sizeof kat / sizeof kat[0]; i++) {
		ck_assert(ring192_eq(ring192_add(kat[i][0], kat[i][1]), kat[i][2]));
		ck_assert(ring192_eq(ring192_sub(kat[i][0], kat[i][1]), kat[i][3]));
		ck_assert(ring192_eq(ring192_mul(kat[i][0], kat[i][1]), kat[i][4]));
		ck_assert(ring192_eq(ring192_mul(kat[i][1], kat[i][0]), kat[i][4]));
		ck_assert(ring192_eq(ring192_add(ring192_neg(kat[i][0]), kat[i][0]), ring192_from128(0)));
		uint8_t b[24];
		ring192_store(b, kat[i][0]);
		ck_assert(ring192_eq(ring192_load(b), kat[i][0]));
		ck_assert_uint_eq(ring64_load(b + 16), kat[i][0].w[2]);
	}
	uint64_t s = 0x9e3779b97f4a7c15ULL;
	for (int i = 0; i < 1000; i++) {
		ring192_t a, c;
		for (int j = 0; j < 3; j++) {
			s = s * 6364136223846793005ULL + 1442695040888963407ULL;
			a.w[j] = s ^ (s >> 29);
			s = s * 6364136223846793005ULL + 1442695040888963407ULL;
			c.w[j] = s ^ (s >> 31);
		}
		ck_assert(ring192_lo(ring192_mul(a, c)) == ring192_lo(a) * ring192_lo(c));
		ck_assert(ring192_lo(ring192_add(a, c)) == ring192_lo(a) + ring192_lo(c));
		ck_assert(ring192_lo(ring192_sub(a, c)) == ring192_lo(a) - ring192_lo(c));
	}
	ck_assert_uint_eq(ring192_hi(ring192_shl128(7)), 7);
	ck_assert(ring192_lo(ring192_shl128(7)) == 0);
}
END_TEST

START_TEST(test_fxp_known_answers)
{
	ring64_t v;
	bool sat;
	ck_assert_int_eq(ring_fxp_encode(1.0, 16, &v, &sat), 0);
	ck_assert_uint_eq(v, 65536);
	ck_assert(!sat);
	ck_assert_int_eq(ring_fxp_encode(-1.5, 16, &v, NULL), 0);
	ck_assert_uint_eq(v, (ring64_t)-98304);
	/* ties away from zero: 0.5 ulp -> 1 ulp, -0.5 ulp -> -1 ulp, 1.5 ulp -> 2 ulp */
	ck_assert_int_eq(ring_fxp_encode(ldexp(0.5, -16), 16, &v, NULL), 0);
	ck_assert_uint_eq(v, 1);
	ck_assert_int_eq(ring_fxp_encode(ldexp(-0.5, -16), 16, &v, NULL), 0);
	ck_assert_uint_eq(v, (ring64_t)-1);
	ck_assert_int_eq(ring_fxp_encode(ldexp(1.5, -8), 8, &v, NULL), 0);
	ck_assert_uint_eq(v, 2);
	/* nearest: 0.3 * 2^16 = 19660.8 -> 19661 */
	ck_assert_int_eq(ring_fxp_encode(0.3, 16, &v, NULL), 0);
	ck_assert_uint_eq(v, 19661);
	ck_assert_int_eq(ring_fxp_encode(-0.3, 24, &v, NULL), 0);
	ck_assert_int_eq((int64_t)v, -5033165); /* -0.3 * 2^24 = -5033164.8 */
	ck_assert(ring_fxp_decode(19661, 16) == 19661.0 / 65536.0);
	ck_assert(ring_fxp_decode((ring64_t)-98304, 16) == -1.5);
	ck_assert(ring_fxp_decode((ring64_t)INT64_MIN, 8) == -ldexp(1.0, 55));
}
END_TEST

START_TEST(test_fxp_saturates_and_rejects)
{
	ring64_t v;
	bool sat;
	ck_assert_int_eq(ring_fxp_encode(1e30, 16, &v, &sat), 0);
	ck_assert(sat);
	ck_assert_uint_eq(v, (ring64_t)INT64_MAX);
	ck_assert_int_eq(ring_fxp_encode(-1e30, 16, &v, &sat), 0);
	ck_assert(sat);
	ck_assert_uint_eq(v, (ring64_t)INT64_MIN);
	ck_assert_int_eq(ring_fxp_encode(INFINITY, 16, &v, &sat), 0);
	ck_assert(sat);
	ck_assert_uint_eq(v, (ring64_t)INT64_MAX);
	/* at f = 16 the largest double below the bound, 2^47 - 2^-6 (2^63 - 2^10 units),
	 * encodes exactly; 2^47 saturates, and so does 2^47 - 2^-16, whose scaled value
	 * 2^63 - 1 is not a double and rounds to 2^63 */
	ck_assert_int_eq(ring_fxp_encode(ldexp(1.0, 47) - ldexp(1.0, -6), 16, &v, &sat), 0);
	ck_assert(!sat);
	ck_assert_uint_eq(v, ((ring64_t)1 << 63) - 1024);
	ck_assert_int_eq(ring_fxp_encode(ldexp(1.0, 47) - ldexp(1.0, -16), 16, &v, &sat), 0);
	ck_assert(sat);
	ck_assert_int_eq(ring_fxp_encode(ldexp(1.0, 47), 16, &v, &sat), 0);
	ck_assert(sat);
	ck_assert_int_eq(ring_fxp_encode(-ldexp(1.0, 47), 16, &v, &sat), 0);
	ck_assert(!sat);
	ck_assert_uint_eq(v, (ring64_t)INT64_MIN);
	ck_assert_int_eq(ring_fxp_encode(NAN, 16, &v, &sat), ERR_INVALID);
	ck_assert_uint_eq(v, 0);
	ck_assert_int_eq(ring_fxp_encode(1.0, 7, &v, NULL), ERR_INVALID);
	ck_assert_int_eq(ring_fxp_encode(1.0, 25, &v, NULL), ERR_INVALID);
	ck_assert(ring_fxp_valid_f(8) && ring_fxp_valid_f(24) && !ring_fxp_valid_f(0));
}
END_TEST

/* Round trip: |decode(encode(x)) - x| <= 2^-(f+1) for every f and many x. */
START_TEST(test_fxp_round_trip)
{
	uint64_t s = 0x9e3779b97f4a7c15ULL;
	for (unsigned f = RING_FXP_MIN_F; f <= RING_FXP_MAX_F; f++) {
		for (int i = 0; i < 2000; i++) {
			s ^= s << 13, s ^= s >> 7, s ^= s << 17;
			double x = ldexp((double)(int64_t)s, -40); /* |x| < 2^23 */
			ring64_t v;
			ck_assert_int_eq(ring_fxp_encode(x, f, &v, NULL), 0);
			double err = fabs(ring_fxp_decode(v, f) - x);
			ck_assert_msg(err <= ldexp(1.0, -(int)f - 1), "f=%u x=%.17g err=%g", f, x, err);
		}
	}
}
END_TEST

Suite *suite(void)
{
	Suite *s = suite_create("ring");
	TCase *tc = tcase_create("ring");
	tcase_add_test(tc, test_ring_wraps);
	tcase_add_test(tc, test_wire_format);
	tcase_add_test(tc, test_ring192);
	tcase_add_test(tc, test_fxp_known_answers);
	tcase_add_test(tc, test_fxp_saturates_and_rejects);
	tcase_add_test(tc, test_fxp_round_trip);
	suite_add_tcase(s, tc);
	return s;
}
