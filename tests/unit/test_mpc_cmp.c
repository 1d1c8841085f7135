/* mpc comparisons: LTZ is exact on its whole domain |x| < 2^62 (the edges, zero, the
 * chunk boundaries of the dealer's one-hot encoding, random values of every
 * magnitude), takes 5 rounds and 472 bytes per value per peer as docs/PROTOCOL.md
 * states, and shares its rounds with other work in a batch; select, max, argmax
 * (index, one-hot, ties to the first index) are exact and take the stated rounds, at
 * N = 2, 3 and 5. */
#include <math.h>
#include <stdio.h>
#include <string.h>

#include "err/err.h"
#include "log/log.h"
#include "test_mpc_harness.h"
#include "testutil.h"

static const unsigned NS[] = {2, 3, 5};

#define NL 192

struct lprog {
	ring64_t x[NL], y[NL], bit[NL];
	ring64_t out[MPC_MAX_PARTIES][3 * NL];
	uint64_t rounds[MPC_MAX_PARTIES], bytes[MPC_MAX_PARTIES];
	uint64_t rounds2[MPC_MAX_PARTIES];
};

static int prog_ltz(struct mpch_party *pp, void *arg)
{
	struct lprog *g = arg;
	struct mpc *p = pp->mpc;
	mpc_share x[NL], y[NL], bit[NL], l[NL], s[NL], z[NL], t[NL];
	struct mpc_stats a, b;
	struct mpc_batch *bt = NULL;
	unsigned last = pp->n - 1;
	int rc = mpc_input(p, 0, pp->id == 0 ? g->x : NULL, x, NL);
	if (rc == 0)
		rc = mpc_input(p, last, pp->id == last ? g->y : NULL, y, NL);
	if (rc == 0)
		rc = mpc_input(p, last, pp->id == last ? g->bit : NULL, bit, NL);
	/* preprocessing first, so that the rounds measured are the comparison's */
	if (rc == 0)
		rc = mpc_prefill(p, MPC_PREP_TRIPLE, 0, 2 * 29 * NL + 2 * NL);
	if (rc == 0)
		rc = mpc_prefill(p, MPC_PREP_CMP, 0, NL);
	if (rc == 0)
		rc = mpc_prefill(p, MPC_PREP_TRUNC, 16, NL);
	if (rc != 0)
		return rc;
	mpc_get_stats(p, &a);
	rc = mpc_ltz(p, l, x, NL);
	mpc_get_stats(p, &b);
	g->rounds[pp->id] = b.rounds - a.rounds;
	g->bytes[pp->id] = b.bytes_sent - a.bytes_sent;
	/* a comparison, a select, a product and a truncation in one batch: 5 rounds */
	if (rc == 0)
		rc = mpc_batch_new(p, &bt);
	mpc_get_stats(p, &a);
	if (rc == 0 && (rc = mpc_batch_ltz(bt, l, x, NL)) == 0 &&
	    (rc = mpc_batch_select(bt, s, bit, x, y, NL)) == 0 &&
	    (rc = mpc_batch_mul(bt, z, x, bit, NL)) == 0 && (rc = mpc_batch_trunc(bt, t, y, NL, 16)) == 0)
		rc = mpc_batch_run(bt);
	mpc_get_stats(p, &b);
	mpc_batch_free(bt);
	g->rounds2[pp->id] = b.rounds - a.rounds;
	if (rc == 0)
		rc = mpc_reveal(p, g->out[pp->id], l, NL);
	if (rc == 0)
		rc = mpc_reveal(p, g->out[pp->id] + NL, s, NL);
	if (rc == 0)
		rc = mpc_reveal(p, g->out[pp->id] + 2 * NL, z, NL);
	return rc;
}

START_TEST(test_ltz_exact_on_domain)
{
	unsigned n = NS[_i];
	struct lprog g;
	struct mpch_party pp[MPC_MAX_PARTIES];
	uint64_t s = 0xC0FFEE + n;
	const int64_t lim = ((int64_t)1 << 62) - 1;
	memset(&g, 0, sizeof g);
	int k = 0;
	/* the edges and the neighbourhood of zero */
	const int64_t edge[] = {0, 1, -1, 2, -2, lim, -lim, -lim - 1, lim - 1, 65535, 65536, -65536,
				-65537, ((int64_t)1 << 60) - 1, (int64_t)1 << 60, -((int64_t)1 << 60),
				((int64_t)1 << 61), -((int64_t)1 << 61)};
	for (size_t e = 0; e < sizeof edge / sizeof edge[0]; e++)
		g.x[k++] = (ring64_t)edge[e];
	/* every chunk boundary: +-2^(4j) and +-(2^(4j) - 1) */
	for (int j = 1; j < 16 && k + 4 <= NL; j++) {
		int64_t v = (int64_t)1 << (4 * j);
		g.x[k++] = (ring64_t)v;
		g.x[k++] = (ring64_t)(v - 1);
		g.x[k++] = (ring64_t)-v;
		g.x[k++] = (ring64_t)(1 - v);
	}
	/* random values of every magnitude */
	while (k < NL) {
		int sh = 2 + (int)(mpch_rand(&s) % 62);
		g.x[k++] = (ring64_t)((int64_t)mpch_rand(&s) >> sh);
	}
	for (int i = 0; i < NL; i++) {
		g.y[i] = (ring64_t)((int64_t)mpch_rand(&s) >> 3);
		g.bit[i] = mpch_rand(&s) & 1;
	}
	struct mpch_opts o = {.fault_party = -1, .cfg = {.prep_batch = 256}};
	ck_assert_int_eq(mpch_run(n, &o, prog_ltz, &g, pp), 0);
	for (unsigned i = 0; i < n; i++) {
		ck_assert_int_eq(pp[i].rc, 0);
		ck_assert_uint_eq(g.rounds[i], 5);
		/* 8 bytes for c and 29 products of 16 bytes, to each peer */
		ck_assert_uint_eq(g.bytes[i], (uint64_t)(n - 1) * NL * (8 + 29 * 16));
		ck_assert_uint_eq(g.rounds2[i], 5);
		for (int j = 0; j < NL; j++) {
			ck_assert_msg(g.out[i][j] == ((int64_t)g.x[j] < 0), "x=%lld got %llu",
				      (long long)(int64_t)g.x[j], (unsigned long long)g.out[i][j]);
			ck_assert_uint_eq(g.out[i][NL + j], g.bit[j] ? g.x[j] : g.y[j]);
			ck_assert_uint_eq(g.out[i][2 * NL + j], g.x[j] * g.bit[j]);
		}
	}
}
END_TEST

/* ---------------------------------------------------------------- max and argmax */

#define AM 3   /* rows */
#define AN 37  /* values per row: odd, so an element goes up unopposed */

struct aprog {
	size_t n;
	ring64_t x[AM * AN];
	ring64_t out[MPC_MAX_PARTIES][AM * 3 + AM * AN + AN];
	uint64_t rounds[MPC_MAX_PARTIES][3];
};

static int prog_argmax(struct mpch_party *pp, void *arg)
{
	struct aprog *g = arg;
	struct mpc *p = pp->mpc;
	size_t n = g->n;
	mpc_share x[AM * AN], mx[AM], mx2[AM], ix[AM], oh[AM * AN], e[AN];
	struct mpc_stats a, b;
	int rc = mpc_input(p, 0, pp->id == 0 ? g->x : NULL, x, AM * n);
	if (rc == 0)
		rc = mpc_prefill(p, MPC_PREP_TRIPLE, 0, 3 * 31 * AM * AN);
	if (rc == 0)
		rc = mpc_prefill(p, MPC_PREP_CMP, 0, 2 * AM * AN);
	if (rc != 0)
		return rc;
	mpc_get_stats(p, &a);
	rc = mpc_max(p, mx2, x, AM, n);
	mpc_get_stats(p, &b);
	g->rounds[pp->id][0] = b.rounds - a.rounds;
	a = b;
	if (rc == 0)
		rc = mpc_argmax(p, mx, ix, NULL, x, AM, n);
	mpc_get_stats(p, &b);
	g->rounds[pp->id][1] = b.rounds - a.rounds;
	a = b;
	if (rc == 0)
		rc = mpc_argmax(p, NULL, NULL, oh, x, AM, n);
	mpc_get_stats(p, &b);
	g->rounds[pp->id][2] = b.rounds - a.rounds;
	/* elementwise max of row 0 and row 1 */
	if (rc == 0) {
		struct mpc_batch *bt;
		if ((rc = mpc_batch_new(p, &bt)) == 0) {
			if ((rc = mpc_batch_max(bt, e, x, x + n, n)) == 0)
				rc = mpc_batch_run(bt);
			mpc_batch_free(bt);
		}
	}
	ring64_t *o = g->out[pp->id];
	if (rc == 0)
		rc = mpc_reveal(p, o, mx, AM);
	if (rc == 0)
		rc = mpc_reveal(p, o + AM, ix, AM);
	if (rc == 0)
		rc = mpc_reveal(p, o + 2 * AM, mx2, AM);
	if (rc == 0)
		rc = mpc_reveal(p, o + 3 * AM, oh, AM * n);
	if (rc == 0)
		rc = mpc_reveal(p, o + 3 * AM + AM * n, e, n);
	return rc;
}

static unsigned clog2(size_t n)
{
	unsigned l = 0;
	while (((size_t)1 << l) < n)
		l++;
	return l;
}

START_TEST(test_argmax_index_onehot_ties)
{
	unsigned n = NS[_i];
	static const size_t sizes[] = {1, 2, 5, 8, AN};
	for (size_t c = 0; c < sizeof sizes / sizeof sizes[0]; c++) {
		struct aprog g;
		struct mpch_party pp[MPC_MAX_PARTIES];
		size_t len = sizes[c];
		uint64_t s = 0xA11 + n * 10 + c;
		memset(&g, 0, sizeof g);
		g.n = len;
		for (size_t r = 0; r < AM; r++)
			for (size_t j = 0; j < len; j++) {
				double d = ((double)(mpch_rand(&s) >> 11) / 9007199254740992.0 - 0.5) * 2e6;
				ck_assert_int_eq(ring_fxp_encode(d, 16, &g.x[r * len + j], NULL), 0);
			}
		/* row 1: the maximum twice (the first must win); row 2: all equal and negative */
		if (len >= 5) {
			g.x[len + 1] = g.x[len + 4] = (ring64_t)((int64_t)1 << 50);
			for (size_t j = 0; j < len; j++)
				g.x[2 * len + j] = (ring64_t)-12345;
		}
		struct mpch_opts o = {.fault_party = -1, .cfg = {.prep_batch = 512}};
		ck_assert_int_eq(mpch_run(n, &o, prog_argmax, &g, pp), 0);
		for (unsigned i = 0; i < n; i++) {
			const ring64_t *out = g.out[i];
			ck_assert_int_eq(pp[i].rc, 0);
			unsigned L = clog2(len);
			ck_assert_uint_eq(g.rounds[i][0], 6 * L);
			ck_assert_uint_eq(g.rounds[i][1], 6 * L);
			ck_assert_uint_eq(g.rounds[i][2], 7 * L);
			for (size_t r = 0; r < AM; r++) {
				size_t best = 0;
				for (size_t j = 1; j < len; j++)
					if ((int64_t)g.x[r * len + j] > (int64_t)g.x[r * len + best])
						best = j;
				ck_assert_uint_eq(out[r], g.x[r * len + best]);
				ck_assert_uint_eq(out[AM + r], best);
				ck_assert_uint_eq(out[2 * AM + r], g.x[r * len + best]);
				for (size_t j = 0; j < len; j++)
					ck_assert_uint_eq(out[3 * AM + r * len + j], j == best);
			}
			if (len >= 5) {
				ck_assert_uint_eq(out[AM + 1], 1);
				ck_assert_uint_eq(out[AM + 2], 0);
			}
			for (size_t j = 0; j < len && AM >= 2; j++) {
				int64_t a = (int64_t)g.x[j], b = (int64_t)g.x[len + j];
				ck_assert_int_eq((int64_t)out[3 * AM + AM * len + j], a > b ? a : b);
			}
		}
	}
}
END_TEST

START_TEST(test_reduce_bad_arguments)
{
	struct mpc_hub *hub;
	struct mpc_net *net;
	struct mpc_dealer *d;
	struct mpc *p;
	uint8_t seed[MPC_SEED_BYTES] = {0};
	mpc_share s[2];
	ck_assert_int_eq(mpc_hub_new(2, 0, &hub), 0);
	ck_assert_int_eq(mpc_net_local_new(hub, 0, &net), 0);
	ck_assert_int_eq(mpc_dealer_new(2, &d), 0);
	struct mpc_prep_source src = mpc_dealer_source(d);
	ck_assert_int_eq(mpc_new(net, seed, &src, NULL, &p), 0);
	ck_assert_int_eq(mpc_max(p, s, s, 0, 2), ERR_INVALID);
	ck_assert_int_eq(mpc_max(p, s, s, 1, 0), ERR_INVALID);
	ck_assert_int_eq(mpc_argmax(p, s, s, NULL, NULL, 1, 2), ERR_INVALID);
	ck_assert_int_eq(mpc_argmax(p, s, s, NULL, s, SIZE_MAX / 2, 4), ERR_INVALID);
	mpc_free(p);
	mpc_net_free(net);
	mpc_dealer_free(d);
	mpc_hub_free(hub);
}
END_TEST

Suite *suite(void)
{
	log_set_level(LOG_LEVEL_ERROR);
	Suite *s = suite_create("mpc_cmp");
	TCase *tc = tcase_create("cmp");
	tcase_set_timeout(tc, 60);
	int nn = (int)(sizeof NS / sizeof NS[0]);
	tcase_add_loop_test(tc, test_ltz_exact_on_domain, 0, nn);
	tcase_add_loop_test(tc, test_argmax_index_onehot_ties, 0, nn);
	tcase_add_test(tc, test_reduce_bad_arguments);
	suite_add_tcase(s, tc);
	return s;
}
