/* mpc plain matrix product: the product of two secret matrices (attention scores,
 * activations times activations) by Beaver's method on dealer matrix triples
 * (Mohassel and Zhang, "SecureML", IEEE S&P 2017, section on matrix multiplication
 * triplets), in the SPDZ2k setting of the rest of the engine. The engine keeps pools of
 * checked triples per shape (struct mmul_state); a triple enters a pool only after its
 * sacrifice: the dealer sends each triple with a partner sharing A, ([A], [B], [C] =
 * A B) and ([A], [B'], [C'] = A B'), all with 192-bit shares, and with t from the
 * joint randomness the parties open rho = t B - B' and require tau = t C - C' - A rho
 * to open to zero modulo 2^128; the openings are MAC-checked modulo 2^192 like those
 * of the elementwise sacrifice (docs/PROTOCOL.md, "Plain matrix product", gives the
 * argument). The product itself is one opening of X - A and Y - B queued on a batch
 * (struct xop), so it shares its round with whatever else the batch holds; the
 * fixed-point form adds a truncation as a two-stage compound. Everything here is
 * local arithmetic on shares and public values: no branch or index depends on a
 * secret. */
#include <stdlib.h>
#include <string.h>

#include <sodium.h>

#include "err/err.h"
#include "mpc/mpc_impl.h"

/* A checked triple, reduced to the online 128-bit shares: A (m x k), then B (k x n),
 * then C (m x n), in one block. */
struct mtriple {
	size_t m, k, n;
	mpc_share *s;
};

struct mmul_state {
	struct prg prg;  /* the party's MPC_PREP_MTRIPLE stream */
	uint64_t batch;  /* the next dealer batch of that stream */
	struct mtriple *pool;
	size_t npool, cap;
};

static size_t mt_len(size_t m, size_t k, size_t n) { return m * k + k * n + m * n; }

static void mt_wipe(struct mtriple *t)
{
	mpc_wipe_free(t->s, mt_len(t->m, t->k, t->n) * sizeof *t->s);
	t->s = NULL;
}

void mmul_state_free(struct mmul_state *s)
{
	if (!s)
		return;
	for (size_t i = 0; i < s->npool; i++)
		mt_wipe(&s->pool[i]);
	free(s->pool);
	prg_wipe(&s->prg);
	sodium_memzero(s, sizeof *s);
	free(s);
}

/* ERR_INVALID for a zero dimension; ERR_RANGE for a shape whose triple the dealer
 * refuses (too many shares). The products cannot overflow: every dimension is at most
 * 2^16 when they are formed. */
static int mm_shape(size_t m, size_t k, size_t n)
{
	if (m == 0 || k == 0 || n == 0)
		return ERR_INVALID;
	if (m > PREP_MAX_DIM || k > PREP_MAX_DIM || n > PREP_MAX_DIM)
		return ERR_RANGE;
	if (prep_mtriple_shares(m, k, n) > MPC_MMUL_MAX_SHARES)
		return ERR_RANGE;
	return 0;
}

static int mm_state(struct mpc *p, struct mmul_state **out)
{
	struct mmul_state **sp = engine_mmul(p);
	if (!*sp) {
		struct mmul_state *s = calloc(1, sizeof *s);
		if (!s)
			return engine_fail(p, ERR_NOMEM, "memory");
		struct mpc_prep_req r = {.kind = MPC_PREP_MTRIPLE};
		prg_init(&s->prg, engine_seed(p), prep_stream(&r));
		*sp = s;
	}
	*out = *sp;
	return 0;
}

static inline mpc_wshare wlin(ring192_t t, const mpc_wshare *x, const mpc_wshare *y)
{
	/* t x - y */
	return (mpc_wshare){ring192_sub(ring192_mul(t, x->v), y->v),
			    ring192_sub(ring192_mul(t, x->m), y->m)};
}

/* The sacrifice of one dealer batch of cnt items (w: K wide shares per item, in the
 * order A, B, B', C, C'), one toss and two rounds for the whole batch:
 *   rho = t B - B'          (k x n, opened modulo 2^128: uniform, as B' is)
 *   tau = t C - C' - A rho  (m x n, must open to 0 modulo 2^128)
 * with a 64-bit t per item. */
static int mm_sacrifice(struct mpc *p, const mpc_wshare *w, size_t cnt, size_t m, size_t k,
			size_t n)
{
	const size_t nA = m * k, nB = k * n, nC = m * n, K = nA + 2 * nB + 2 * nC;
	const size_t big = nB > nC ? nB : nC;
	mpc_wshare *open = malloc(cnt * big * sizeof *open);
	ring128_t *pub = malloc(cnt * big * sizeof *pub);
	uint8_t *tb = malloc(8 * cnt);
	int rc = 0;
	if (!open || !pub || !tb) {
		rc = engine_fail(p, ERR_NOMEM, "memory");
		goto out;
	}
	if ((rc = engine_toss(p, tb, 8 * cnt)) != 0)
		goto out;
	for (size_t t = 0; t < cnt; t++) {
		const mpc_wshare *B = w + t * K + nA, *B2 = B + nB;
		const ring192_t T = ring192_from128(ring64_load(tb + 8 * t));
		for (size_t j = 0; j < nB; j++)
			open[t * nB + j] = wlin(T, &B[j], &B2[j]);
	}
	if ((rc = engine_open_wide(p, open, cnt * nB, pub)) != 0)
		goto out;
	for (size_t t = 0; t < cnt; t++) {
		const mpc_wshare *A = w + t * K, *C = A + nA + 2 * nB, *C2 = C + nC;
		const ring128_t *rho = pub + t * nB;
		const ring192_t T = ring192_from128(ring64_load(tb + 8 * t));
		mpc_wshare *tau = open + t * nC;
		for (size_t x = 0; x < nC; x++)
			tau[x] = wlin(T, &C[x], &C2[x]);
		for (size_t i = 0; i < m; i++)
			for (size_t l = 0; l < k; l++) {
				const mpc_wshare a = A[i * k + l];
				mpc_wshare *row = tau + i * n;
				for (size_t j = 0; j < n; j++) {
					const ring192_t r = ring192_from128(rho[l * n + j]);
					row[j].v = ring192_sub(row[j].v, ring192_mul(a.v, r));
					row[j].m = ring192_sub(row[j].m, ring192_mul(a.m, r));
				}
			}
	}
	if ((rc = engine_open_wide(p, open, cnt * nC, pub)) != 0)
		goto out;
	ring128_t acc = 0;
	for (size_t x = 0; x < cnt * nC; x++)
		acc |= pub[x];
	if (acc != 0) { /* public: the opened tau */
		rc = engine_fail(p, ERR_MAC_CHECK, "triple-sacrifice");
		goto out;
	}
	engine_stats(p)->mtriples_sacrificed += cnt;
out:
	mpc_wipe_free(open, cnt * big * sizeof *open);
	free(pub);
	free(tb);
	return rc;
}

/* Fetches one dealer batch of cnt triples of a shape, sacrifices the partners (unless
 * the engine runs without the sacrifice) and appends the triples to the pool. */
static int mm_refill(struct mpc *p, struct mmul_state *s, size_t m, size_t k, size_t n,
		     uint32_t cnt)
{
	const size_t nA = m * k, nB = k * n, nC = m * n, K = nA + 2 * nB + 2 * nC;
	struct mpc_prep_req req = {.kind = MPC_PREP_MTRIPLE,
				   .param = (uint32_t)k,
				   .n = cnt,
				   .rows = (uint32_t)m,
				   .cols = (uint32_t)n,
				   .batch = s->batch};
	uint8_t *payload = NULL;
	size_t len = 0;
	mpc_wshare *w = NULL;
	int rc = 0;
	if (s->npool + cnt > s->cap) {
		size_t nc = s->cap ? s->cap : 4;
		while (nc < s->npool + cnt)
			nc *= 2;
		struct mtriple *np = realloc(s->pool, nc * sizeof *np);
		if (!np)
			return engine_fail(p, ERR_NOMEM, "memory");
		s->pool = np;
		s->cap = nc;
	}
	if (!(w = malloc(cnt * K * sizeof *w)))
		return engine_fail(p, ERR_NOMEM, "memory");
	if ((rc = engine_fetch(p, &req, &payload, &len)) != 0)
		goto out;
	rc = prep_expand_mtriple(&s->prg, mpc_party(p), &req, payload, len, w);
	mpc_wipe_free(payload, len);
	if (rc != 0) {
		rc = engine_fail(p, rc, "preprocessing");
		goto out;
	}
	s->batch++;
	if (engine_sacrifice(p) && (rc = mm_sacrifice(p, w, cnt, m, k, n)) != 0)
		goto out;
	/* checked modulo 2^128 with MACs modulo 2^192: after reduction a valid sharing of
	 * C = A B modulo 2^64, which is all the product needs (A, B, then C; B' and C'
	 * are dropped) */
	for (size_t t = 0; t < cnt; t++) {
		struct mtriple mt = {.m = m, .k = k, .n = n};
		if (!(mt.s = malloc(mt_len(m, k, n) * sizeof *mt.s))) {
			rc = engine_fail(p, ERR_NOMEM, "memory");
			goto out;
		}
		const mpc_wshare *src = w + t * K;
		mpc_share *dst = mt.s;
		for (size_t j = 0; j < nA + nB; j++)
			*dst++ = (mpc_share){ring192_lo(src[j].v), ring192_lo(src[j].m)};
		for (size_t j = nA + 2 * nB; j < nA + 2 * nB + nC; j++)
			*dst++ = (mpc_share){ring192_lo(src[j].v), ring192_lo(src[j].m)};
		s->pool[s->npool++] = mt;
	}
out:
	mpc_wipe_free(w, cnt * K * sizeof *w);
	return rc;
}

/* Items per dealer batch for a shape: as many as the dealer's bound allows. */
static uint32_t mm_per_batch(size_t m, size_t k, size_t n)
{
	return (uint32_t)(MPC_MMUL_MAX_SHARES / prep_mtriple_shares(m, k, n)); /* >= 1 */
}

int mpc_matmul_prefill(struct mpc *p, size_t m, size_t k, size_t n, size_t count)
{
	if (mpc_failed_check(p))
		return ERR_ABORTED;
	int rc = mm_shape(m, k, n);
	struct mmul_state *s;
	if (rc != 0 || count == 0)
		return rc;
	if ((rc = mm_state(p, &s)) != 0)
		return rc;
	const uint32_t per = mm_per_batch(m, k, n);
	while (count > 0 && rc == 0) {
		uint32_t cnt = count < per ? (uint32_t)count : per;
		rc = mm_refill(p, s, m, k, n, cnt);
		count -= cnt;
	}
	return rc;
}

/* The first pooled triple of the shape, fetched and checked first if there is none.
 * Every party runs the same program, so every party takes the same triple. */
static int mm_take(struct mpc *p, size_t m, size_t k, size_t n, struct mtriple *out)
{
	struct mmul_state *s;
	int rc = mm_state(p, &s);
	if (rc != 0)
		return rc;
	size_t i = 0;
	while (i < s->npool && !(s->pool[i].m == m && s->pool[i].k == k && s->pool[i].n == n))
		i++;
	if (i == s->npool && (rc = mm_refill(p, s, m, k, n, 1)) != 0)
		return rc;
	*out = s->pool[i];
	memmove(s->pool + i, s->pool + i + 1, (s->npool - i - 1) * sizeof *s->pool);
	s->npool--;
	engine_stats(p)->mtriples++;
	return 0;
}

/* ---------------------------------------------------------------- the product */

struct mm_op {
	struct xop x;
	struct mpc *p;
	mpc_share *out;
	struct mtriple t;
	ring64_t *de; /* one row of D E */
};

static void mm_op_free(struct xop *x)
{
	struct mm_op *o = (struct mm_op *)x;
	mt_wipe(&o->t);
	mpc_wipe_free(o->de, o->t.n * sizeof *o->de);
	sodium_memzero(o, sizeof *o);
	free(o);
}

/* X Y = (D + A)(E + B) = C + D [B] + [A] E + D E, with D = X - A and E = Y - B open. */
static int mm_finish(struct mpc_batch *b, struct xop *x, const ring64_t *pub)
{
	struct mm_op *o = (struct mm_op *)x;
	(void)b;
	const size_t m = o->t.m, k = o->t.k, n = o->t.n;
	const ring64_t *D = pub, *E = pub + m * k;
	const mpc_share *A = o->t.s, *B = A + m * k, *C = B + k * n;
	ring64_t *de = o->de;
	for (size_t i = 0; i < m; i++) {
		mpc_share *z = o->out + i * n;
		memcpy(z, C + i * n, n * sizeof *z);
		memset(de, 0, n * sizeof *de);
		for (size_t l = 0; l < k; l++) {
			const ring64_t d = D[i * k + l], *erow = E + l * n;
			const mpc_share a = A[i * k + l], *brow = B + l * n;
			for (size_t j = 0; j < n; j++) {
				z[j].v += brow[j].v * d + a.v * erow[j];
				z[j].m += brow[j].m * d + a.m * erow[j];
				de[j] += d * erow[j];
			}
		}
		mpc_add_public(o->p, z, z, de, n);
	}
	return 0;
}

static int mm_args(struct mpc *p, mpc_share *out, const mpc_share *x, const mpc_share *y,
		   size_t m, size_t k, size_t n)
{
	if (mpc_failed_check(p))
		return ERR_ABORTED;
	if (!out || !x || !y)
		return ERR_INVALID;
	return mm_shape(m, k, n);
}

int mpc_batch_matmul(struct mpc_batch *b, mpc_share *out, const mpc_share *x, const mpc_share *y,
		     size_t m, size_t k, size_t n)
{
	struct mpc *p = b ? batch_engine(b) : NULL;
	if (!p)
		return ERR_INVALID;
	int rc = mm_args(p, out, x, y, m, k, n);
	if (rc != 0)
		return rc;
	const size_t nA = m * k, nB = k * n;
	struct mm_op *o = calloc(1, sizeof *o);
	mpc_share *open = malloc((nA + nB) * sizeof *open);
	if (!o || !open || !(o->de = malloc(n * sizeof *o->de))) {
		if (o)
			free(o->de);
		free(o);
		free(open);
		return ERR_NOMEM;
	}
	o->x = (struct xop){.finish = mm_finish, .free = mm_op_free};
	o->p = p;
	o->out = out;
	o->t.n = n; /* sizes de for mm_op_free until the triple is in */
	if ((rc = mm_take(p, m, k, n, &o->t)) != 0) {
		mm_op_free(&o->x);
		free(open);
		return rc;
	}
	const mpc_share *A = o->t.s, *B = A + nA;
	mpc_sub(p, open, x, A, nA);
	mpc_sub(p, open + nA, y, B, nB);
	rc = batch_xop(b, &o->x, open, nA + nB);
	mpc_wipe_free(open, (nA + nB) * sizeof *open);
	return rc;
}

/* The fixed-point form: the product into a buffer of its own, then the truncation by f
 * in the next round (a compound, so both steps share rounds with the batch). */
struct mm_fx {
	struct cop c;
	struct mpc *p;
	mpc_share *out, *tmp;
	const mpc_share *x, *y; /* read by stage 0, which runs when queued */
	size_t m, k, n;
};

static void mm_fx_free(struct cop *c)
{
	struct mm_fx *f = (struct mm_fx *)c;
	mpc_wipe_free(f->tmp, f->m * f->n * sizeof *f->tmp);
	sodium_memzero(f, sizeof *f);
	free(f);
}

static int mm_fx_step(struct mpc_batch *b, struct cop *c)
{
	struct mm_fx *f = (struct mm_fx *)c;
	int rc = 0;
	switch (c->stage++) {
	case 0:
		rc = mpc_batch_matmul(b, f->tmp, f->x, f->y, f->m, f->k, f->n);
		f->x = f->y = NULL;
		return rc;
	case 1:
		return mpc_batch_trunc(b, f->out, f->tmp, f->m * f->n, mpc_frac_bits(f->p));
	default:
		c->done = true;
		return 0;
	}
}

int mpc_batch_matmul_fx(struct mpc_batch *b, mpc_share *out, const mpc_share *x,
			const mpc_share *y, size_t m, size_t k, size_t n)
{
	struct mpc *p = b ? batch_engine(b) : NULL;
	if (!p)
		return ERR_INVALID;
	/* every argument error is found here, before the compound exists: a failing
	 * stage would abort the engine */
	int rc = mm_args(p, out, x, y, m, k, n);
	if (rc != 0)
		return rc;
	struct mm_fx *f = calloc(1, sizeof *f);
	if (!f || !(f->tmp = malloc(m * n * sizeof *f->tmp))) {
		free(f);
		return ERR_NOMEM;
	}
	f->c = (struct cop){.step = mm_fx_step, .free = mm_fx_free};
	f->p = p;
	f->out = out;
	f->x = x;
	f->y = y;
	f->m = m;
	f->k = k;
	f->n = n;
	return batch_compound(b, &f->c);
}

static int mm_run(struct mpc *p, bool fx, mpc_share *out, const mpc_share *x, const mpc_share *y,
		  size_t m, size_t k, size_t n)
{
	struct mpc_batch *b;
	int rc = mpc_batch_new(p, &b);
	if (rc != 0)
		return rc;
	rc = fx ? mpc_batch_matmul_fx(b, out, x, y, m, k, n) : mpc_batch_matmul(b, out, x, y, m, k, n);
	if (rc == 0)
		rc = mpc_batch_run(b);
	mpc_batch_free(b);
	return rc;
}

int mpc_matmul(struct mpc *p, mpc_share *out, const mpc_share *x, const mpc_share *y, size_t m,
	       size_t k, size_t n)
{
	return mm_run(p, false, out, x, y, m, k, n);
}

int mpc_matmul_fx(struct mpc *p, mpc_share *out, const mpc_share *x, const mpc_share *y,
		  size_t m, size_t k, size_t n)
{
	return mm_run(p, true, out, x, y, m, k, n);
}
