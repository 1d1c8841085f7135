/* test_attest_util: what the test_attest_* suites share, so the SEV-SNP, TDX, Nitro and
 * policy suites read vectors, flip bytes and judge rejections the same way: vectors
 * from ../shared (never copied here), the pinned roots, hex and rejection assertions
 * that print what the verifier said, and one byte-flipping loop that every "each byte
 * matters" test runs with its own verifier and its own set of acceptable checks.
 * Header-only so each suite stays one file plus this. */
#ifndef MIMIR_TEST_ATTEST_UTIL_H
#define MIMIR_TEST_ATTEST_UTIL_H

#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "attest/attest.h"
#include "err/err.h"
#include "testutil.h"

/* A vector under ../shared (rel: "vectors/attest/..."), whole; the caller frees it. */
static inline uint8_t *atu_load(const char *rel, size_t *len)
{
	char path[1024];
	uint8_t *p = (uint8_t *)tu_read_file(tu_shared(path, sizeof path, rel), len);
	ck_assert_msg(p != NULL, "cannot read %s", path);
	return p;
}

/* The roots shipped in attest/roots, loaded with flags (ATTEST_ROOTS_*). */
static inline struct attest_roots *atu_roots(unsigned flags)
{
	struct attest_roots *r = NULL;
	ck_assert_int_eq(attest_roots_load_dir(&r, ATTEST_ROOTS_DEFAULT_DIR, flags), 0);
	return r;
}

/* n bytes (at most 128) equal the lowercase hex want. */
static inline void atu_assert_hex(const uint8_t *p, size_t n, const char *want)
{
	char buf[2 * 128 + 1];
	ck_assert_uint_le(n, 128);
	for (size_t i = 0; i < n; i++)
		snprintf(buf + 2 * i, 3, "%02x", p[i]);
	buf[2 * n] = '\0';
	ck_assert_str_eq(buf, want);
}

/* A verification succeeded; when not, the failure names the check and the reason. */
static inline void atu_assert_verified(int rc, const struct attest_error *e)
{
	ck_assert_msg(rc == 0, "rejected: %s: %s", attest_check_name(e->check), e->reason);
}

/* A rejection with the code, at the check, whose reason contains needle; the error
 * struct carries the code it returned. */
static inline void atu_expect(int rc, const struct attest_error *e, int code,
			      enum attest_check check, const char *needle)
{
	ck_assert_msg(rc == code && e->check == check && strstr(e->reason, needle),
		      "rc %d check %s reason \"%s\" (wanted %d %s \"%s\")", rc,
		      attest_check_name(e->check), e->reason, code, attest_check_name(check),
		      needle);
	ck_assert_int_eq(e->code, code);
}

/* ---- SEV-SNP vectors ---- */

/* vectors/attest/snp/<dir>: the report with its VCEK and ASK. */
struct atu_snp_vec {
	uint8_t *report, *vcek, *ask;
	size_t report_len, vcek_len, ask_len;
};

static inline void atu_snp_load(struct atu_snp_vec *v, const char *dir, const char *vcek,
				const char *ask)
{
	char rel[256];
	snprintf(rel, sizeof rel, "vectors/attest/snp/%s/report.bin", dir);
	v->report = atu_load(rel, &v->report_len);
	snprintf(rel, sizeof rel, "vectors/attest/snp/%s/%s", dir, vcek);
	v->vcek = atu_load(rel, &v->vcek_len);
	snprintf(rel, sizeof rel, "vectors/attest/snp/%s/%s", dir, ask);
	v->ask = atu_load(rel, &v->ask_len);
}

static inline void atu_snp_free(struct atu_snp_vec *v)
{
	free(v->report);
	free(v->vcek);
	free(v->ask);
}

/* attest_snp_verify on a whole vector. */
static inline int atu_snp_verify(const struct attest_roots *r, const struct atu_snp_vec *v,
				 int64_t at, struct attest_claims *c, struct attest_error *e)
{
	return attest_snp_verify(r, v->report, v->report_len, v->vcek, v->vcek_len, v->ask,
				 v->ask_len, at, c, e);
}

/* ---- every byte matters ---- */

#define ATU_CHECKS (ATTEST_CHECK_POLICY + 1)
#define ATU_CHECK(c) (1u << (c)) /* a bit of atu_flip_each's `allowed` */

/* How the one-bit changes were rejected. */
struct atu_flips {
	size_t parse;             /* ERR_PARSE: the change broke the structure */
	size_t check[ATU_CHECKS]; /* ERR_ATTESTATION, by the check that caught it */
};

/* One verification of the evidence as it is now (buf is part of what it reads). */
typedef int (*atu_verify_fn)(void *ctx, struct attest_claims *c, struct attest_error *e);

/* Flips bit (i % 8) of byte i of buf for every i in [lo, hi), verifies, and restores
 * the byte. Every change must be rejected: as malformed, or at one of the checks in
 * allowed (ATU_CHECK bits), since a change the parser accepts may only be caught by
 * the checks that cover those bytes. *t counts how each was rejected, for the caller's
 * own assertions on the proportions. */
static inline void atu_flip_each(uint8_t *buf, size_t lo, size_t hi, atu_verify_fn verify,
				 void *ctx, unsigned allowed, struct atu_flips *t)
{
	struct attest_claims *c = malloc(sizeof *c);
	memset(t, 0, sizeof *t);
	for (size_t i = lo; i < hi; i++) {
		buf[i] ^= (uint8_t)(1u << (i % 8));
		struct attest_error e;
		int rc = verify(ctx, c, &e);
		buf[i] ^= (uint8_t)(1u << (i % 8));
		ck_assert_msg(rc != 0, "flip at byte %zu accepted", i);
		if (rc == ERR_PARSE) {
			t->parse++;
			continue;
		}
		ck_assert_msg(rc == ERR_ATTESTATION && (unsigned)e.check < ATU_CHECKS &&
				      (allowed & ATU_CHECK(e.check)),
			      "flip at byte %zu: rc %d check %s (%s)", i, rc,
			      attest_check_name(e.check), e.reason);
		t->check[e.check]++;
	}
	free(c);
}

#endif
