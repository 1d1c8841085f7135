/* ct: a dudect-style timing test (Reparaz, Balasch, Verbauwhede, "Dude, is my code
 * constant time?", DATE 2017) of the kernels that touch secrets: the Z_2^128 and
 * Z_2^192 multiply-and-add of the MAC check, the shape of its accumulation loop, and
 * the digest comparison (sodium_memcmp on 32 bytes) of its commitments and broadcast
 * views. Each measurement times a batch of CT_BATCH calls on inputs of one of two
 * classes (fixed vs random, or equal vs differing), the class drawn at random per
 * measurement so that drift of the machine's load hits both alike; Welch's t is taken
 * on the raw timings and on the timings cropped at several percentiles (a loaded box
 * has a long upper tail), and the largest |t| must stay below 4.5. A leaky comparison
 * with early exit, run through the same harness, must exceed it, so the harness is
 * shown able to fail. Up to CT_TRIES measurements per kernel, the best one counts:
 * a leak shows in every try, a burst of noise rarely does three times. */
#include <math.h>
#include <sodium.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#if defined(__x86_64__) || defined(__i386__)
#include <x86intrin.h>
#endif

#include "ring/ring.h"
#include "testutil.h"

#define CT_N 200000     /* measurements per try */
#define CT_WARMUP 10000 /* discarded first measurements */
#define CT_BATCH 16     /* calls per measurement */
#define CT_TRIES 3
#define CT_LIMIT 4.5
#define CT_NCROP 6 /* raw, then cropped at the percentiles below */
static const double ct_crop_pct[CT_NCROP] = {100.0, 99.0, 95.0, 90.0, 75.0, 50.0};

/* The inputs of one measurement, prepared outside the timed region by the same
 * instructions in both classes (the class picks a value by a mask, not whether to
 * draw or write one): with ~100 cycles timed, a preparation that differed by class
 * showed as |t| up to 90 on kernels that are straight-line code. */
struct ct_in {
	ring128_t s[CT_BATCH], m[CT_BATCH], c[CT_BATCH];
	ring64_t up[CT_BATCH], chi[CT_BATCH];
	ring192_t ws[CT_BATCH], wm[CT_BATCH];
	uint8_t x[CT_BATCH][32], y[CT_BATCH][32];
};

struct ct_kernel {
	const char *name;
	void (*prep)(struct ct_in *in, int cls, uint64_t *rng);
	void (*run)(const struct ct_in *in);
};

static volatile uint64_t ct_sink;

static uint64_t ct_rand(uint64_t *s)
{
	/* splitmix64: fast input generation; its quality is irrelevant to the secrets */
	uint64_t z = (*s += 0x9e3779b97f4a7c15ull);
	z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ull;
	z = (z ^ (z >> 27)) * 0x94d049bb133111ebull;
	return z ^ (z >> 31);
}

static ring128_t ct_rand128(uint64_t *s)
{
	return ring128_make(ct_rand(s), ct_rand(s));
}

static ring192_t ct_rand192(uint64_t *s)
{
	return (ring192_t){{ct_rand(s), ct_rand(s), ct_rand(s)}};
}

/* All ones for class 1, zero for class 0, opaque to the compiler: the class then picks
 * a value by masking, and the compiler cannot skip drawing the random value of class
 * 1 when class 0 is picked (which would make the two classes' preparation differ). */
static inline uint64_t ct_mask(int cls)
{
	uint64_t m = (uint64_t)0 - (uint64_t)(cls & 1);
	__asm__("" : "+r"(m));
	return m;
}

static inline uint64_t ct_sel(uint64_t mask, uint64_t rnd, uint64_t fix)
{
	return (rnd & mask) | (fix & ~mask);
}

static inline uint64_t ct_now(void)
{
#if defined(__x86_64__) || defined(__i386__)
	_mm_lfence();
	uint64_t t = __rdtsc();
	_mm_lfence();
	return t;
#else
	struct timespec ts;
	clock_gettime(CLOCK_MONOTONIC_RAW, &ts);
	return (uint64_t)ts.tv_sec * 1000000000u + (uint64_t)ts.tv_nsec;
#endif
}

/* The barrier keeps the compiler from hoisting or merging the calls of a batch. */
#define CT_BARRIER() __asm__ volatile("" ::: "memory")

/* ---------------------------------------------------------------- kernels */

/* Public operand random in both classes; the secret one fixed (0, the value a
 * variable-time multiplier would shortcut) or random. */
static void prep_mul128(struct ct_in *in, int cls, uint64_t *rng)
{
	for (int i = 0; i < CT_BATCH; i++) {
		in->c[i] = ct_rand128(rng);
		uint64_t mk = ct_mask(cls);
		in->m[i] = ring128_make(ct_sel(mk, ct_rand(rng), 0), ct_sel(mk, ct_rand(rng), 0));
	}
}

static void run_mul128(const struct ct_in *in)
{
	ring128_t acc = 0;
	for (int i = 0; i < CT_BATCH; i++) {
		acc = ring128_add(acc, ring128_mul(in->m[i], in->c[i]));
		CT_BARRIER();
	}
	ct_sink = ring128_lo(acc) ^ ring128_hi(acc);
}

static void prep_mul192(struct ct_in *in, int cls, uint64_t *rng)
{
	for (int i = 0; i < CT_BATCH; i++) {
		in->ws[i] = ct_rand192(rng);
		uint64_t mk = ct_mask(cls);
		for (int k = 0; k < 3; k++)
			in->wm[i].w[k] = ct_sel(mk, ct_rand(rng), 0);
	}
}

static void run_mul192(const struct ct_in *in)
{
	ring192_t acc = ring192_from128(0);
	for (int i = 0; i < CT_BATCH; i++) {
		acc = ring192_add(acc, ring192_mul(in->wm[i], in->ws[i]));
		acc = ring192_sub(acc, in->ws[i]);
		CT_BARRIER();
	}
	ct_sink = acc.w[0] ^ acc.w[1] ^ acc.w[2] ^ (uint64_t)ring192_eq(acc, in->wm[0]);
}

/* The accumulation loop of mac_check (common/mpc/mpc.c), which is static there: the
 * same ring.h operations in the same shape (a narrow and a wide entry per call). The
 * coefficients and opened sums are public; the MAC shares and upper value halves are
 * the secrets, fixed (all ones) or random. */
static void prep_accum(struct ct_in *in, int cls, uint64_t *rng)
{
	for (int i = 0; i < CT_BATCH; i++) {
		in->chi[i] = ct_rand(rng);
		in->s[i] = ct_rand128(rng);
		in->ws[i] = ct_rand192(rng);
		uint64_t mk = ct_mask(cls), one = ~0ull;
		in->m[i] = ring128_make(ct_sel(mk, ct_rand(rng), one), ct_sel(mk, ct_rand(rng), one));
		in->up[i] = ct_sel(mk, ct_rand(rng), one);
		for (int k = 0; k < 3; k++)
			in->wm[i].w[k] = ct_sel(mk, ct_rand(rng), one);
	}
}

static void run_accum(const struct ct_in *in)
{
	ring128_t y = 0, mi = 0;
	ring64_t pi = 0, wpi = 0;
	ring192_t wy = ring192_from128(0), wmi = ring192_from128(0);
	for (int j = 0; j < CT_BATCH; j++) {
		ring64_t c = in->chi[j];
		y += in->s[j] * c;
		mi += in->m[j] * c;
		pi += in->up[j] * c;
		ring192_t cw = ring192_from128(c);
		wy = ring192_add(wy, ring192_mul(in->ws[j], cw));
		wmi = ring192_add(wmi, ring192_mul(in->wm[j], cw));
		wpi += in->up[j] * c;
		CT_BARRIER();
	}
	ct_sink = (uint64_t)y ^ (uint64_t)mi ^ pi ^ wpi ^ wy.w[2] ^ wmi.w[0] ^ wmi.w[2];
}

/* Digests: equal in class 0, independent random (so differing) in class 1. */
static void prep_cmp(struct ct_in *in, int cls, uint64_t *rng)
{
	for (int i = 0; i < CT_BATCH; i++) {
		for (int k = 0; k < 32; k += 8) {
			uint64_t a = ct_rand(rng), b = ct_rand(rng);
			memcpy(in->x[i] + k, &a, 8);
			b = ct_sel(ct_mask(cls), b, a);
			memcpy(in->y[i] + k, &b, 8);
		}
	}
}

static void run_sodium_memcmp(const struct ct_in *in)
{
	int r = 0;
	for (int i = 0; i < CT_BATCH; i++) {
		r |= sodium_memcmp(in->x[i], in->y[i], 32);
		CT_BARRIER();
	}
	ct_sink = (uint64_t)r;
}

/* Positive control: equal digests in class 0, the first byte differing in class 1. */
static void prep_cmp_first(struct ct_in *in, int cls, uint64_t *rng)
{
	prep_cmp(in, 0, rng);
	for (int i = 0; i < CT_BATCH; i++)
		in->y[i][0] ^= (uint8_t)(ct_mask(cls) & 1);
}

/* A comparison with early exit; the empty asm keeps the compiler from vectorising
 * the loop into one that reads the whole buffer anyway. */
static int leaky_memcmp(const uint8_t *a, const uint8_t *b, size_t n)
{
	for (size_t i = 0; i < n; i++) {
		__asm__ volatile("" : "+r"(i));
		if (a[i] != b[i])
			return 1;
	}
	return 0;
}

static void run_leaky_memcmp(const struct ct_in *in)
{
	int r = 0;
	for (int i = 0; i < CT_BATCH; i++) {
		r |= leaky_memcmp(in->x[i], in->y[i], 32);
		CT_BARRIER();
	}
	ct_sink = (uint64_t)r;
}

/* Positive control at the scale of the ring kernels: a multiply that skips a zero
 * operand (one branch per call; the empty asm keeps the compiler from seeing that
 * the product would be 0 anyway and dropping the branch). */
static ring128_t leaky_mul128(ring128_t a, ring128_t b)
{
	if (a == 0) {
		__asm__ volatile("");
		return 0;
	}
	return ring128_mul(a, b);
}

static void run_leaky_mul128(const struct ct_in *in)
{
	ring128_t acc = 0;
	for (int i = 0; i < CT_BATCH; i++) {
		acc = ring128_add(acc, leaky_mul128(in->m[i], in->c[i]));
		CT_BARRIER();
	}
	ct_sink = ring128_lo(acc) ^ ring128_hi(acc);
}

/* Positive control of the smallest leak: the digests differ in the last byte only, so
 * the early exit saves one byte comparison per call (prep_cmp_last). */
static void prep_cmp_last(struct ct_in *in, int cls, uint64_t *rng)
{
	prep_cmp(in, 0, rng);
	for (int i = 0; i < CT_BATCH; i++)
		in->y[i][31] ^= (uint8_t)(ct_mask(cls) & 1);
}

static const struct ct_kernel k_mul128 = {"ring128 mul+add", prep_mul128, run_mul128};
static const struct ct_kernel k_mul192 = {"ring192 mul+add+sub", prep_mul192, run_mul192};
static const struct ct_kernel k_accum = {"mac-check accumulation", prep_accum, run_accum};
static const struct ct_kernel k_cmp = {"sodium_memcmp 32 B", prep_cmp, run_sodium_memcmp};
static const struct ct_kernel k_leaky = {"leaky memcmp (control)", prep_cmp_first,
					 run_leaky_memcmp};
static const struct ct_kernel k_leaky_last = {"leaky memcmp, last byte", prep_cmp_last,
					      run_leaky_memcmp};
static const struct ct_kernel k_leaky_mul = {"leaky mul128 (control)", prep_mul128,
					     run_leaky_mul128};

/* ---------------------------------------------------------------- statistics */

static int ct_cmp_u64(const void *a, const void *b)
{
	uint64_t x = *(const uint64_t *)a, y = *(const uint64_t *)b;
	return (x > y) - (x < y);
}

/* Welch's t of the two classes among the timings <= lim. */
static double ct_welch(const uint64_t *t, const uint8_t *cls, size_t n, uint64_t lim)
{
	double mean[2] = {0, 0}, m2[2] = {0, 0}, cnt[2] = {0, 0};
	for (size_t i = 0; i < n; i++) {
		if (t[i] > lim)
			continue;
		int c = cls[i];
		double x = (double)t[i];
		cnt[c] += 1;
		double d = x - mean[c];
		mean[c] += d / cnt[c];
		m2[c] += d * (x - mean[c]);
	}
	if (cnt[0] < 2 || cnt[1] < 2)
		return 0;
	double v0 = m2[0] / (cnt[0] - 1), v1 = m2[1] / (cnt[1] - 1);
	double se = sqrt(v0 / cnt[0] + v1 / cnt[1]);
	if (se == 0)
		return 0;
	return (mean[0] - mean[1]) / se;
}

/* One try: CT_N measurements of k, the largest |t| over the raw data and the crops. */
static double ct_measure(const struct ct_kernel *k, uint64_t *t, uint8_t *cls, uint64_t *sorted)
{
	struct ct_in in;
	uint64_t rng;
	randombytes_buf(&rng, sizeof rng);
	randombytes_buf(cls, CT_N);
	for (size_t i = 0; i < CT_N + CT_WARMUP; i++) {
		size_t j = i < CT_WARMUP ? 0 : i - CT_WARMUP;
		int c = i < CT_WARMUP ? (int)(i & 1) : cls[j] & 1;
		k->prep(&in, c, &rng);
		uint64_t t0 = ct_now();
		k->run(&in);
		uint64_t t1 = ct_now();
		if (i >= CT_WARMUP) {
			t[j] = t1 - t0;
			cls[j] = (uint8_t)c;
		}
	}
	memcpy(sorted, t, CT_N * sizeof *t);
	qsort(sorted, CT_N, sizeof *sorted, ct_cmp_u64);
	double worst = 0;
	for (int p = 0; p < CT_NCROP; p++) {
		size_t idx = (size_t)(ct_crop_pct[p] / 100.0 * (CT_N - 1));
		double a = fabs(ct_welch(t, cls, CT_N, sorted[idx]));
		if (a > worst)
			worst = a;
	}
	sodium_memzero(&in, sizeof in);
	return worst;
}

/* The best of up to CT_TRIES tries' largest |t| (the smallest when want_below, else
 * the largest), stopping at the first try on the wanted side of the limit. */
static double ct_test(const struct ct_kernel *k, bool want_below)
{
	uint64_t *t = malloc(CT_N * sizeof *t), *sorted = malloc(CT_N * sizeof *sorted);
	uint8_t *cls = malloc(CT_N);
	ck_assert(t && sorted && cls);
	double best = want_below ? INFINITY : 0;
	for (int tr = 0; tr < CT_TRIES; tr++) {
		struct timespec a, b;
		clock_gettime(CLOCK_MONOTONIC, &a);
		double w = ct_measure(k, t, cls, sorted);
		clock_gettime(CLOCK_MONOTONIC, &b);
		double s = (double)(b.tv_sec - a.tv_sec) + (double)(b.tv_nsec - a.tv_nsec) / 1e9;
		fprintf(stderr, "ct: %-24s try %d: max |t| = %7.2f (%d x %d calls, %.2f s)\n",
			k->name, tr + 1, w, CT_N, CT_BATCH, s);
		if (want_below ? w < best : w > best)
			best = w;
		if (want_below ? w < CT_LIMIT : w > CT_LIMIT)
			break;
	}
	free(t);
	free(sorted);
	free(cls);
	return best;
}

/* ---------------------------------------------------------------- tests */

static void ct_setup(void)
{
	ck_assert_int_ge(sodium_init(), 0);
}

START_TEST(test_ring128_mul_add_ct)
{
	double t = ct_test(&k_mul128, true);
	ck_assert_msg(t < CT_LIMIT, "ring128 mul+add: |t| = %.2f", t);
}
END_TEST

START_TEST(test_ring192_mul_add_ct)
{
	double t = ct_test(&k_mul192, true);
	ck_assert_msg(t < CT_LIMIT, "ring192 mul+add: |t| = %.2f", t);
}
END_TEST

START_TEST(test_mac_accumulation_ct)
{
	double t = ct_test(&k_accum, true);
	ck_assert_msg(t < CT_LIMIT, "mac-check accumulation: |t| = %.2f", t);
}
END_TEST

START_TEST(test_digest_compare_ct)
{
	double t = ct_test(&k_cmp, true);
	ck_assert_msg(t < CT_LIMIT, "sodium_memcmp: |t| = %.2f", t);
}
END_TEST

/* The harness can fail: an early-exit comparison is caught. */
START_TEST(test_leaky_compare_detected)
{
	double t = ct_test(&k_leaky, false);
	ck_assert_msg(t > CT_LIMIT, "leaky memcmp not detected: |t| = %.2f", t);
}
END_TEST

START_TEST(test_leaky_compare_last_byte_detected)
{
	double t = ct_test(&k_leaky_last, false);
	ck_assert_msg(t > CT_LIMIT, "last-byte leak not detected: |t| = %.2f", t);
}
END_TEST

START_TEST(test_leaky_mul_detected)
{
	double t = ct_test(&k_leaky_mul, false);
	ck_assert_msg(t > CT_LIMIT, "zero-skipping multiply not detected: |t| = %.2f", t);
}
END_TEST

Suite *suite(void)
{
	Suite *s = suite_create("ct");
	TCase *tc = tcase_create("dudect");
	tcase_add_unchecked_fixture(tc, ct_setup, NULL);
	tcase_set_timeout(tc, 120);
	tcase_add_test(tc, test_ring128_mul_add_ct);
	tcase_add_test(tc, test_ring192_mul_add_ct);
	tcase_add_test(tc, test_mac_accumulation_ct);
	tcase_add_test(tc, test_digest_compare_ct);
	tcase_add_test(tc, test_leaky_compare_detected);
	tcase_add_test(tc, test_leaky_compare_last_byte_detected);
	tcase_add_test(tc, test_leaky_mul_detected);
	suite_add_tcase(s, tc);
	return s;
}
