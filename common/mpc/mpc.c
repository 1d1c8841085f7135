/* mpc engine: one party's view of an SPDZ2k-style computation (Cramer, Damgard,
 * Escudero, Scholl, Xing, CRYPTO 2018) over Z_2^64 with 128-bit shares and MACs.
 *
 * Opening sends only the low 64 bits of each share, so the upper bits of the share sum
 * (which depend on earlier products and would leak) never leave a party. Every opened
 * value is recorded with the party's MAC share and the upper half of its value share;
 * the batched MAC check combines them with coefficients from jointly tossed randomness,
 * masks the combined upper part with a random authenticated value, and
 * commits-then-opens the check shares (docs/PROTOCOL.md, "MAC check"). Each party also
 * hashes its view of everything that should be a broadcast (opened shares, input
 * corrections, tossed seeds, check messages) and the parties compare those hashes
 * before the check result is opened, so a peer that tells different parties different
 * things is caught as well.
 *
 * Any failure is final: fail() records which check failed, tells the transport to
 * abort, and every entry point then returns ERR_ABORTED. */
#include <stdlib.h>
#include <string.h>

#include <openssl/core_names.h>
#include <openssl/evp.h>
#include <openssl/rand.h>
#include <sodium.h>

#include "err/err.h"
#include "log/log.h"
#include "mpc/mpc_impl.h"

#define COMMIT_BYTES 32
#define NONCE_BYTES 32
#define HASH_BYTES 32

struct queue {
	uint16_t kind;
	uint32_t param;
	struct prg prg;
	uint64_t next_batch;
	mpc_share *items;
	ring64_t *clear; /* an input owner's masks in clear */
	size_t k, avail, pos, cap;
};

struct open_log {
	ring128_t *s; /* sum of the low halves, as an integer (or the full value) */
	ring128_t *m; /* own MAC share */
	ring64_t *up; /* upper half of own value share */
	size_t n, cap;
};

struct mpc {
	struct mpc_net *net;
	struct mpc_prep_source src;
	unsigned me, n, f;
	size_t check_every;
	uint32_t prep_batch;
	bool sacrifice;
	ring64_t alpha; /* alpha_i */
	uint8_t seed[MPC_SEED_BYTES];

	struct queue rand, triple_raw, trunc, input[MPC_MAX_PARTIES];
	/* matrix material is fetched per use, not pooled */
	struct prg prg_mmask, prg_mmul;
	uint64_t mmask_batch, mmul_batch;
	uint32_t next_mask_id;
	/* triples that passed the sacrifice */
	mpc_share *triples;
	size_t tri_avail, tri_pos, tri_cap;

	struct open_log log;
	crypto_generichash_state view;

	/* coin tossing: our committed seed for the next toss, and the peers' commitments */
	bool toss_pending;
	uint8_t toss_seed[MPC_SEED_BYTES], toss_nonce[NONCE_BYTES];
	uint8_t toss_com[MPC_MAX_PARTIES][COMMIT_BYTES];
	EVP_RAND *rand_hmac, *rand_test;

	uint8_t *sbuf, *rbuf;
	size_t scap, rcap;

	struct mpc_stats st;
	const char *failed;
};

/* ---------------------------------------------------------------- failure */

static int fail(struct mpc *p, int rc, const char *check)
{
	if (!p->failed) {
		p->failed = check;
		LOG_WARN("mpc.abort", LOG_S("check", check), LOG_S("error", err_slug(rc)),
			 LOG_I("party", p->me));
		mpc_net_abort(p->net);
	}
	return rc;
}

const char *mpc_failed_check(const struct mpc *p) { return p->failed; }

/* ---------------------------------------------------------------- rounds */

static int grow(uint8_t **buf, size_t *cap, size_t need)
{
	if (need <= *cap)
		return 0;
	size_t nc = *cap ? *cap : 4096;
	while (nc < need)
		nc *= 2;
	uint8_t *nb = malloc(nc);
	if (!nb)
		return ERR_NOMEM;
	if (*buf) {
		sodium_memzero(*buf, *cap);
		free(*buf);
	}
	*buf = nb;
	*cap = nc;
	return 0;
}

/* One round in which party j sends the same lens[j] bytes to every peer. Our message
 * is msg; on return p->rbuf holds every party's message (ours included) at offsets
 * off[j] = sum of lens[< j], in party order, so that all parties hash the same bytes. */
static int xchg(struct mpc *p, const uint8_t *msg, const size_t lens[])
{
	size_t off[MPC_MAX_PARTIES + 1];
	off[0] = 0;
	for (unsigned j = 0; j < p->n; j++)
		off[j + 1] = off[j] + lens[j];
	int rc = grow(&p->rbuf, &p->rcap, off[p->n] ? off[p->n] : 1);
	if (rc != 0)
		return fail(p, rc, "memory");
	const uint8_t *send[MPC_MAX_PARTIES];
	size_t slen[MPC_MAX_PARTIES];
	uint8_t *recv[MPC_MAX_PARTIES];
	for (unsigned j = 0; j < p->n; j++) {
		send[j] = msg;
		slen[j] = lens[p->me];
		recv[j] = p->rbuf + off[j];
	}
	if (lens[p->me])
		memcpy(p->rbuf + off[p->me], msg, lens[p->me]);
	rc = mpc_net_exchange(p->net, send, slen, recv, lens);
	if (rc != 0)
		return fail(p, rc, "transport");
	return 0;
}

/* Everyone sends len bytes. */
static int xchg_all(struct mpc *p, const uint8_t *msg, size_t len)
{
	size_t lens[MPC_MAX_PARTIES];
	for (unsigned j = 0; j < p->n; j++)
		lens[j] = len;
	return xchg(p, msg, lens);
}

static uint8_t *sbuf(struct mpc *p, size_t len)
{
	if (grow(&p->sbuf, &p->scap, len ? len : 1) != 0)
		return NULL;
	return p->sbuf;
}

/* ---------------------------------------------------------------- commitments */

static void commit(uint8_t out[COMMIT_BYTES], uint8_t tag, unsigned party,
		   const uint8_t nonce[NONCE_BYTES], const uint8_t *val, size_t len)
{
	crypto_generichash_state h;
	uint8_t hdr[2] = {tag, (uint8_t)party};
	crypto_generichash_init(&h, nonce, NONCE_BYTES, COMMIT_BYTES);
	crypto_generichash_update(&h, (const uint8_t *)"mimir.mpc.commit.v1", 19);
	crypto_generichash_update(&h, hdr, 2);
	crypto_generichash_update(&h, val, len);
	crypto_generichash_final(&h, out, COMMIT_BYTES);
}

static int commit_ok(const uint8_t com[COMMIT_BYTES], uint8_t tag, unsigned party,
		     const uint8_t nonce[NONCE_BYTES], const uint8_t *val, size_t len)
{
	uint8_t c[COMMIT_BYTES];
	commit(c, tag, party, nonce, val, len);
	return sodium_memcmp(c, com, COMMIT_BYTES) == 0;
}

enum { TAG_SEED = 1, TAG_Z = 2 };

/* ---------------------------------------------------------------- joint randomness */

/* A fresh SP 800-90A HMAC-DRBG (SHA-256) instantiated from the tossed seed: the
 * TEST-RAND parent feeds it exactly our entropy and nonce, which makes it a
 * deterministic generator shared by all parties. */
static EVP_RAND_CTX *drbg_new(struct mpc *p, const uint8_t joint[64])
{
	EVP_RAND_CTX *parent = NULL, *ctx = NULL;
	unsigned strength = 256, zero = 0;
	uint8_t ent[48], nonce[16];
	memcpy(ent, joint, 48);
	memcpy(nonce, joint + 48, 16);
	OSSL_PARAM pp[] = {
		OSSL_PARAM_construct_octet_string(OSSL_RAND_PARAM_TEST_ENTROPY, ent, sizeof ent),
		OSSL_PARAM_construct_octet_string(OSSL_RAND_PARAM_TEST_NONCE, nonce, sizeof nonce),
		OSSL_PARAM_construct_uint(OSSL_RAND_PARAM_STRENGTH, &strength),
		OSSL_PARAM_construct_end()};
	OSSL_PARAM cp[] = {
		OSSL_PARAM_construct_utf8_string(OSSL_DRBG_PARAM_DIGEST, "SHA256", 0),
		OSSL_PARAM_construct_utf8_string(OSSL_DRBG_PARAM_MAC, "HMAC", 0),
		OSSL_PARAM_construct_uint(OSSL_DRBG_PARAM_RESEED_REQUESTS, &zero),
		OSSL_PARAM_construct_end()};
	parent = EVP_RAND_CTX_new(p->rand_test, NULL);
	if (!parent || !EVP_RAND_CTX_set_params(parent, pp) ||
	    !EVP_RAND_instantiate(parent, strength, 0, NULL, 0, NULL))
		goto bad;
	ctx = EVP_RAND_CTX_new(p->rand_hmac, parent);
	if (!ctx || !EVP_RAND_CTX_set_params(ctx, cp) ||
	    !EVP_RAND_instantiate(ctx, strength, 0, (const uint8_t *)"mimir.mpc.jrand.v1", 18,
				  NULL))
		goto bad;
	EVP_RAND_CTX_free(parent); /* the child holds its own reference */
	sodium_memzero(ent, sizeof ent);
	return ctx;
bad:
	EVP_RAND_CTX_free(ctx);
	EVP_RAND_CTX_free(parent);
	sodium_memzero(ent, sizeof ent);
	return NULL;
}

static int drbg_bytes(EVP_RAND_CTX *ctx, uint8_t *out, size_t len)
{
	return EVP_RAND_generate(ctx, out, len, 256, 0, NULL, 0) == 1 ? 0 : ERR_CRYPTO;
}

/* Commit-then-open coin tossing. The commitment to the seed of the next toss rides on
 * the opening round of this one, so after the first toss a toss costs one round: a
 * seed is committed before any value it will check is opened, and opened after. */
static int toss(struct mpc *p, EVP_RAND_CTX **out)
{
	*out = NULL;
	int rc;
	if (!p->toss_pending) {
		uint8_t com[COMMIT_BYTES];
		randombytes_buf(p->toss_seed, sizeof p->toss_seed);
		randombytes_buf(p->toss_nonce, sizeof p->toss_nonce);
		commit(com, TAG_SEED, p->me, p->toss_nonce, p->toss_seed, MPC_SEED_BYTES);
		if ((rc = xchg_all(p, com, COMMIT_BYTES)) != 0)
			return rc;
		for (unsigned j = 0; j < p->n; j++)
			memcpy(p->toss_com[j], p->rbuf + j * COMMIT_BYTES, COMMIT_BYTES);
		p->toss_pending = true;
	}
	/* open: seed | nonce | commitment to the next seed */
	enum { L = MPC_SEED_BYTES + NONCE_BYTES + COMMIT_BYTES };
	uint8_t msg[L], next_seed[MPC_SEED_BYTES], next_nonce[NONCE_BYTES];
	memcpy(msg, p->toss_seed, MPC_SEED_BYTES);
	memcpy(msg + MPC_SEED_BYTES, p->toss_nonce, NONCE_BYTES);
	randombytes_buf(next_seed, sizeof next_seed);
	randombytes_buf(next_nonce, sizeof next_nonce);
	commit(msg + MPC_SEED_BYTES + NONCE_BYTES, TAG_SEED, p->me, next_nonce, next_seed,
	       MPC_SEED_BYTES);
	if ((rc = xchg_all(p, msg, L)) != 0)
		return rc;
	crypto_generichash_state h;
	uint8_t joint[64];
	crypto_generichash_init(&h, NULL, 0, sizeof joint);
	for (unsigned j = 0; j < p->n; j++) {
		const uint8_t *m = p->rbuf + (size_t)j * L;
		if (!commit_ok(p->toss_com[j], TAG_SEED, j, m + MPC_SEED_BYTES, m, MPC_SEED_BYTES))
			return fail(p, ERR_PROTOCOL, "commitment");
		crypto_generichash_update(&h, m, MPC_SEED_BYTES);
		memcpy(p->toss_com[j], m + MPC_SEED_BYTES + NONCE_BYTES, COMMIT_BYTES);
	}
	crypto_generichash_final(&h, joint, sizeof joint);
	/* the seeds are part of the broadcast view */
	crypto_generichash_update(&p->view, joint, sizeof joint);
	memcpy(p->toss_seed, next_seed, sizeof next_seed);
	memcpy(p->toss_nonce, next_nonce, sizeof next_nonce);
	sodium_memzero(next_seed, sizeof next_seed);
	*out = drbg_new(p, joint);
	sodium_memzero(joint, sizeof joint);
	if (!*out)
		return fail(p, ERR_CRYPTO, "joint-randomness");
	return 0;
}

/* ---------------------------------------------------------------- preprocessing */

static void queue_init(struct queue *q, uint16_t kind, uint32_t param, const uint8_t *seed)
{
	memset(q, 0, sizeof *q);
	q->kind = kind;
	q->param = param;
	struct mpc_prep_req r = {.kind = kind, .param = param};
	q->k = prep_shares_per_item(&r);
	prg_init(&q->prg, seed, prep_stream(&r));
}

static void queue_wipe(struct queue *q)
{
	if (q->items) {
		sodium_memzero(q->items, q->cap * q->k * sizeof *q->items);
		free(q->items);
	}
	if (q->clear) {
		sodium_memzero(q->clear, q->cap * sizeof *q->clear);
		free(q->clear);
	}
	prg_wipe(&q->prg);
}

/* Room for `more` items after the unused ones, which move to the front. */
static int queue_room(struct mpc *p, struct queue *q, size_t more)
{
	size_t keep = q->avail - q->pos;
	if (keep && q->pos) {
		memmove(q->items, q->items + q->pos * q->k, keep * q->k * sizeof *q->items);
		if (q->clear)
			memmove(q->clear, q->clear + q->pos, keep * sizeof *q->clear);
	}
	q->pos = 0;
	q->avail = keep;
	if (keep + more <= q->cap)
		return 0;
	size_t nc = q->cap ? q->cap : more;
	while (nc < keep + more)
		nc *= 2;
	bool owner = q->kind == MPC_PREP_INPUT && q->param == p->me;
	mpc_share *ni = malloc(nc * q->k * sizeof *ni);
	ring64_t *nc_ = owner ? malloc(nc * sizeof *nc_) : NULL;
	if (!ni || (owner && !nc_)) {
		free(ni);
		free(nc_);
		return fail(p, ERR_NOMEM, "memory");
	}
	if (q->items) {
		memcpy(ni, q->items, keep * q->k * sizeof *ni);
		sodium_memzero(q->items, q->cap * q->k * sizeof *ni);
		free(q->items);
	}
	if (q->clear) {
		memcpy(nc_, q->clear, keep * sizeof *nc_);
		sodium_memzero(q->clear, q->cap * sizeof *nc_);
		free(q->clear);
	}
	q->items = ni;
	q->clear = nc_;
	q->cap = nc;
	return 0;
}

/* Appends one dealer batch. */
static int queue_refill(struct mpc *p, struct queue *q)
{
	struct mpc_prep_req req = {
		.kind = q->kind, .param = q->param, .n = p->prep_batch, .batch = q->next_batch};
	uint8_t *payload = NULL;
	size_t len = 0;
	int rc;
	if ((rc = queue_room(p, q, p->prep_batch)) != 0)
		return rc;
	if (mpc_prep_needs_payload(p->me, &req)) {
		rc = p->src.fetch(p->src.ctx, p->me, &req, &payload, &len);
		if (rc != 0)
			return fail(p, rc, "preprocessing");
		p->st.prep_bytes_in += len;
	}
	rc = prep_expand(&q->prg, p->me, &req, payload, len, q->items + q->avail * q->k,
			 q->clear ? q->clear + q->avail : NULL);
	if (payload) {
		sodium_memzero(payload, len);
		free(payload);
	}
	if (rc != 0)
		return fail(p, rc, "preprocessing");
	q->next_batch++;
	q->avail += p->prep_batch;
	return 0;
}

/* Makes n items for parameter param available. Material for another parameter (a
 * truncation by another m) is dropped: every party runs the same program, so every
 * party drops the same items. */
static int queue_fill(struct mpc *p, struct queue *q, uint32_t param, size_t n)
{
	if (q->param != param) {
		if (q->items)
			sodium_memzero(q->items, q->cap * q->k * sizeof *q->items);
		q->pos = q->avail = 0;
		q->param = param;
	}
	while (q->avail - q->pos < n) {
		int rc = queue_refill(p, q);
		if (rc != 0)
			return rc;
	}
	return 0;
}

/* n items (k shares each) into out; the owner of an input queue also gets the masks. */
static int queue_take(struct mpc *p, struct queue *q, uint32_t param, size_t n, mpc_share *out,
		      ring64_t *clear)
{
	int rc = queue_fill(p, q, param, n);
	if (rc != 0)
		return rc;
	memcpy(out, q->items + q->pos * q->k, n * q->k * sizeof *out);
	sodium_memzero(q->items + q->pos * q->k, n * q->k * sizeof *out);
	if (clear) {
		memcpy(clear, q->clear + q->pos, n * sizeof *clear);
		sodium_memzero(q->clear + q->pos, n * sizeof *clear);
	}
	q->pos += n;
	return 0;
}

/* One dealer batch straight into out (matrix material, which is shaped per use). */
static int prep_direct(struct mpc *p, struct prg *g, uint64_t *batch, struct mpc_prep_req *req,
		       mpc_share *out)
{
	uint8_t *payload = NULL;
	size_t len = 0;
	int rc;
	req->batch = *batch;
	if (mpc_prep_needs_payload(p->me, req)) {
		rc = p->src.fetch(p->src.ctx, p->me, req, &payload, &len);
		if (rc != 0)
			return fail(p, rc, "preprocessing");
		p->st.prep_bytes_in += len;
	}
	rc = prep_expand(g, p->me, req, payload, len, out, NULL);
	if (payload) {
		sodium_memzero(payload, len);
		free(payload);
	}
	if (rc != 0)
		return fail(p, rc, "preprocessing");
	(*batch)++;
	return 0;
}

/* ---------------------------------------------------------------- linear algebra */

void mpc_add(const struct mpc *p, mpc_share *out, const mpc_share *a, const mpc_share *b, size_t n)
{
	(void)p;
	for (size_t i = 0; i < n; i++) {
		out[i].v = a[i].v + b[i].v;
		out[i].m = a[i].m + b[i].m;
	}
}

void mpc_sub(const struct mpc *p, mpc_share *out, const mpc_share *a, const mpc_share *b, size_t n)
{
	(void)p;
	for (size_t i = 0; i < n; i++) {
		out[i].v = a[i].v - b[i].v;
		out[i].m = a[i].m - b[i].m;
	}
}

void mpc_neg(const struct mpc *p, mpc_share *out, const mpc_share *a, size_t n)
{
	(void)p;
	for (size_t i = 0; i < n; i++) {
		out[i].v = ring128_neg(a[i].v);
		out[i].m = ring128_neg(a[i].m);
	}
}

/* Adding a public c: party 0 adds it to its value share, everyone adds alpha_i * c to
 * the MAC share, so sum(m) grows by alpha * c. The mask is branch-free. */
static inline void add_pub1(const struct mpc *p, mpc_share *o, const mpc_share *a, ring128_t c)
{
	ring128_t is0 = (ring128_t)0 - (ring128_t)(p->me == 0);
	o->v = a->v + (c & is0);
	o->m = a->m + (ring128_t)p->alpha * c;
}

void mpc_add_public(const struct mpc *p, mpc_share *out, const mpc_share *a, const ring64_t *c,
		    size_t n)
{
	for (size_t i = 0; i < n; i++)
		add_pub1(p, &out[i], &a[i], c[i]);
}

void mpc_mul_public(const struct mpc *p, mpc_share *out, const mpc_share *a, const ring64_t *c,
		    size_t n)
{
	(void)p;
	for (size_t i = 0; i < n; i++) {
		out[i].v = a[i].v * c[i];
		out[i].m = a[i].m * c[i];
	}
}

void mpc_scale(const struct mpc *p, mpc_share *out, const mpc_share *a, ring64_t c, size_t n)
{
	(void)p;
	for (size_t i = 0; i < n; i++) {
		out[i].v = a[i].v * c;
		out[i].m = a[i].m * c;
	}
}

void mpc_constant(const struct mpc *p, mpc_share *out, ring64_t c, size_t n)
{
	mpc_share z = {0, 0};
	for (size_t i = 0; i < n; i++)
		add_pub1(p, &out[i], &z, c);
}

/* ---------------------------------------------------------------- opening */

static int log_reserve(struct mpc *p, size_t more)
{
	struct open_log *l = &p->log;
	if (l->n + more <= l->cap)
		return 0;
	size_t nc = l->cap ? l->cap : 4096;
	while (nc < l->n + more)
		nc *= 2;
	ring128_t *s = realloc(l->s, nc * sizeof *s);
	if (s)
		l->s = s;
	ring128_t *m = realloc(l->m, nc * sizeof *m);
	if (m)
		l->m = m;
	ring64_t *up = realloc(l->up, nc * sizeof *up);
	if (up)
		l->up = up;
	if (!s || !m || !up)
		return fail(p, ERR_NOMEM, "memory");
	l->cap = nc;
	return 0;
}

static int mac_check(struct mpc *p);

/* Opens n shares in one round: each party sends the low 64 bits of its value shares
 * (or, with full, all 128 bits: only for values whose upper bits are uniformly
 * random, i.e. the sacrifice). Records everything for the MAC check. */
static int open_shares(struct mpc *p, const mpc_share *a, size_t n, ring64_t *out,
		       ring128_t *out_full, bool full)
{
	size_t w = full ? 16 : 8;
	int rc;
	if ((rc = log_reserve(p, n)) != 0)
		return rc;
	uint8_t *msg = sbuf(p, n * w);
	if (!msg)
		return fail(p, ERR_NOMEM, "memory");
	for (size_t i = 0; i < n; i++) {
		if (full)
			ring128_store(msg + 16 * i, a[i].v);
		else
			ring64_store(msg + 8 * i, ring128_lo(a[i].v));
	}
	if ((rc = xchg_all(p, msg, n * w)) != 0)
		return rc;
	crypto_generichash_update(&p->view, p->rbuf, n * w * p->n);
	struct open_log *l = &p->log;
	for (size_t i = 0; i < n; i++) {
		ring128_t s = 0;
		for (unsigned j = 0; j < p->n; j++) {
			const uint8_t *b = p->rbuf + ((size_t)j * n + i) * w;
			s += full ? ring128_load(b) : ring128_from64(ring64_load(b));
		}
		l->s[l->n] = s;
		l->m[l->n] = a[i].m;
		l->up[l->n] = full ? 0 : ring128_hi(a[i].v);
		l->n++;
		if (out)
			out[i] = ring128_lo(s);
		if (out_full)
			out_full[i] = s;
	}
	p->st.opened += n;
	if (l->n >= p->check_every)
		return mac_check(p);
	return 0;
}

/* The batched MAC check (SPDZ2k, with a random [r] masking the upper part):
 *   chi_j  <- joint DRBG (64 bits each)
 *   y      = sum chi_j s_j                 (public)
 *   p_i    = sum chi_j up_ij + r_i mod 2^64 (broadcast; p = sum p_i)
 *   z_i    = sum chi_j m_ij - alpha_i y - 2^64 alpha_i p + 2^64 m(r)_i
 * commit z_i (with the hash of the broadcast view), open, and require sum z_i = 0. */
static int mac_check(struct mpc *p)
{
	struct open_log *l = &p->log;
	EVP_RAND_CTX *dr = NULL;
	uint8_t *chi = NULL;
	mpc_share r;
	int rc;
	if (l->n == 0)
		return 0;
	if ((rc = queue_take(p, &p->rand, 0, 1, &r, NULL)) != 0)
		return rc;
	p->st.randoms++;
	if ((rc = toss(p, &dr)) != 0)
		goto out;
	chi = malloc(l->n * 8);
	if (!chi) {
		rc = fail(p, ERR_NOMEM, "memory");
		goto out;
	}
	if ((rc = drbg_bytes(dr, chi, l->n * 8)) != 0) {
		rc = fail(p, rc, "joint-randomness");
		goto out;
	}
	ring128_t y = 0, mi = 0;
	ring64_t pi = ring128_lo(r.v);
	for (size_t j = 0; j < l->n; j++) {
		ring64_t c = ring64_load(chi + 8 * j);
		y += l->s[j] * c;
		mi += l->m[j] * c;
		pi += l->up[j] * c;
	}
	uint8_t pm[8];
	ring64_store(pm, pi);
	if ((rc = xchg_all(p, pm, 8)) != 0)
		goto out;
	crypto_generichash_update(&p->view, p->rbuf, 8 * p->n);
	ring64_t pbar = 0;
	for (unsigned j = 0; j < p->n; j++)
		pbar += ring64_load(p->rbuf + 8 * j);
	ring128_t a = p->alpha;
	ring128_t z = mi - a * y - ((a * pbar) << 64) + (r.m << 64);

	/* commit to z_i, together with the hash of our broadcast view */
	uint8_t zb[16], nonce[NONCE_BYTES], msg[COMMIT_BYTES + HASH_BYTES];
	uint8_t coms[MPC_MAX_PARTIES][COMMIT_BYTES];
	ring128_store(zb, z);
	randombytes_buf(nonce, sizeof nonce);
	commit(msg, TAG_Z, p->me, nonce, zb, sizeof zb);
	crypto_generichash_final(&p->view, msg + COMMIT_BYTES, HASH_BYTES);
	crypto_generichash_init(&p->view, NULL, 0, HASH_BYTES);
	if ((rc = xchg_all(p, msg, sizeof msg)) != 0)
		goto out;
	for (unsigned j = 0; j < p->n; j++) {
		const uint8_t *m = p->rbuf + (size_t)j * sizeof msg;
		if (sodium_memcmp(m + COMMIT_BYTES, msg + COMMIT_BYTES, HASH_BYTES) != 0) {
			rc = fail(p, ERR_PROTOCOL, "broadcast-consistency");
			goto out;
		}
		memcpy(coms[j], m, COMMIT_BYTES);
	}
	uint8_t open[16 + NONCE_BYTES];
	memcpy(open, zb, 16);
	memcpy(open + 16, nonce, NONCE_BYTES);
	if ((rc = xchg_all(p, open, sizeof open)) != 0)
		goto out;
	ring128_t sum = 0;
	for (unsigned j = 0; j < p->n; j++) {
		const uint8_t *m = p->rbuf + (size_t)j * sizeof open;
		if (!commit_ok(coms[j], TAG_Z, j, m + 16, m, 16)) {
			rc = fail(p, ERR_PROTOCOL, "commitment");
			goto out;
		}
		sum += ring128_load(m);
	}
	/* sum is public; a data-dependent branch on it leaks nothing */
	if (sum != 0) {
		rc = fail(p, ERR_MAC_CHECK, "mac-check");
		goto out;
	}
	p->st.checks++;
	l->n = 0;
out:
	EVP_RAND_CTX_free(dr);
	free(chi);
	sodium_memzero(&r, sizeof r);
	return rc;
}

int mpc_check(struct mpc *p)
{
	if (p->failed)
		return ERR_ABORTED;
	return mac_check(p);
}

int mpc_open(struct mpc *p, ring64_t *out, const mpc_share *a, size_t n)
{
	if (p->failed)
		return ERR_ABORTED;
	return open_shares(p, a, n, out, NULL, false);
}

int mpc_reveal(struct mpc *p, ring64_t *out, const mpc_share *a, size_t n)
{
	if (p->failed)
		return ERR_ABORTED;
	ring64_t *tmp = malloc((n ? n : 1) * sizeof *tmp);
	if (!tmp)
		return ERR_NOMEM;
	int rc = open_shares(p, a, n, tmp, NULL, false);
	if (rc == 0)
		rc = mac_check(p);
	if (rc == 0)
		memcpy(out, tmp, n * sizeof *tmp);
	free(tmp);
	return rc;
}

/* ---------------------------------------------------------------- input */

int mpc_input(struct mpc *p, unsigned owner, const ring64_t *x, mpc_share *out, size_t n)
{
	if (p->failed)
		return ERR_ABORTED;
	if (owner >= p->n || (owner == p->me && !x && n))
		return ERR_INVALID;
	ring64_t *clear = NULL;
	int rc;
	if (owner == p->me && !(clear = malloc((n ? n : 1) * sizeof *clear)))
		return ERR_NOMEM;
	if ((rc = queue_take(p, &p->input[owner], owner, n, out, clear)) != 0)
		goto out;
	size_t lens[MPC_MAX_PARTIES] = {0};
	lens[owner] = n * 8;
	uint8_t *msg = sbuf(p, n * 8);
	if (!msg) {
		rc = fail(p, ERR_NOMEM, "memory");
		goto out;
	}
	if (owner == p->me)
		for (size_t i = 0; i < n; i++)
			ring64_store(msg + 8 * i, x[i] - clear[i]);
	if ((rc = xchg(p, msg, lens)) != 0)
		goto out;
	/* rbuf holds only the owner's message (the others are empty) */
	crypto_generichash_update(&p->view, p->rbuf, n * 8);
	for (size_t i = 0; i < n; i++)
		add_pub1(p, &out[i], &out[i], ring64_load(p->rbuf + 8 * i));
out:
	if (clear) {
		sodium_memzero(clear, n * sizeof *clear);
		free(clear);
	}
	return rc;
}

/* ---------------------------------------------------------------- triples */

/* Tops up the checked-triple pool by cnt triples: takes 2 cnt from the dealer and
 * sacrifices the second half to check the first, all in one toss and two rounds (the
 * two-triple check of SPDZ, done modulo 2^128 so that a fault in any bit of c below
 * 2^64 is caught with probability 1 - 2^-64):
 *   rho = t a - a',  sigma = b - b'   (opened in full: uniform, as a', b' are)
 *   tau = t c - c' - rho b - sigma a' must be 0 in Z_2^128. */
static int triples_refill(struct mpc *p, size_t cnt)
{
	mpc_share *raw = NULL, *open = NULL;
	ring128_t *pub = NULL;
	uint8_t *tb = NULL;
	EVP_RAND_CTX *dr = NULL;
	int rc = 0;
	size_t keep = p->tri_avail - p->tri_pos;
	if (keep && p->tri_pos)
		memmove(p->triples, p->triples + 3 * p->tri_pos, 3 * keep * sizeof *p->triples);
	p->tri_pos = 0;
	p->tri_avail = keep;
	if (keep + cnt > p->tri_cap) {
		mpc_share *nt = malloc(3 * (keep + cnt) * sizeof *nt);
		if (!nt)
			return fail(p, ERR_NOMEM, "memory");
		if (p->triples) {
			memcpy(nt, p->triples, 3 * keep * sizeof *nt);
			sodium_memzero(p->triples, 3 * p->tri_cap * sizeof *nt);
			free(p->triples);
		}
		p->triples = nt;
		p->tri_cap = keep + cnt;
	}
	size_t take = p->sacrifice ? 2 * cnt : cnt;
	raw = malloc(3 * take * sizeof *raw);
	if (!raw) {
		rc = fail(p, ERR_NOMEM, "memory");
		goto out;
	}
	if ((rc = queue_take(p, &p->triple_raw, 0, take, raw, NULL)) != 0)
		goto out;
	if (p->sacrifice) {
		open = malloc(2 * cnt * sizeof *open);
		pub = malloc(2 * cnt * sizeof *pub);
		tb = malloc(8 * cnt);
		if (!open || !pub || !tb) {
			rc = fail(p, ERR_NOMEM, "memory");
			goto out;
		}
		if ((rc = toss(p, &dr)) != 0)
			goto out;
		if ((rc = drbg_bytes(dr, tb, 8 * cnt)) != 0) {
			rc = fail(p, rc, "joint-randomness");
			goto out;
		}
		for (size_t i = 0; i < cnt; i++) {
			const mpc_share *t = raw + 3 * i, *s = raw + 3 * (cnt + i);
			ring128_t c = ring64_load(tb + 8 * i);
			open[2 * i].v = c * t[0].v - s[0].v;
			open[2 * i].m = c * t[0].m - s[0].m;
			open[2 * i + 1].v = t[1].v - s[1].v;
			open[2 * i + 1].m = t[1].m - s[1].m;
		}
		if ((rc = open_shares(p, open, 2 * cnt, NULL, pub, true)) != 0)
			goto out;
		for (size_t i = 0; i < cnt; i++) {
			const mpc_share *t = raw + 3 * i, *s = raw + 3 * (cnt + i);
			ring128_t c = ring64_load(tb + 8 * i), rho = pub[2 * i], sig = pub[2 * i + 1];
			open[i].v = c * t[2].v - s[2].v - rho * t[1].v - sig * s[0].v;
			open[i].m = c * t[2].m - s[2].m - rho * t[1].m - sig * s[0].m;
		}
		if ((rc = open_shares(p, open, cnt, NULL, pub, true)) != 0)
			goto out;
		ring128_t acc = 0;
		for (size_t i = 0; i < cnt; i++)
			acc |= pub[i];
		if (acc != 0) {
			rc = fail(p, ERR_MAC_CHECK, "triple-sacrifice");
			goto out;
		}
		p->st.triples_sacrificed += cnt;
	}
	memcpy(p->triples + 3 * keep, raw, 3 * cnt * sizeof *raw);
	p->tri_avail = keep + cnt;
out:
	EVP_RAND_CTX_free(dr);
	if (raw) {
		sodium_memzero(raw, 3 * take * sizeof *raw);
		free(raw);
	}
	if (open) {
		sodium_memzero(open, 2 * cnt * sizeof *open);
		free(open);
	}
	free(pub);
	free(tb);
	return rc;
}

/* Makes at least n checked triples available, refilling in multiples of the dealer
 * batch so that one operation's deficit costs one sacrifice. */
static int triples_ensure(struct mpc *p, size_t n)
{
	size_t have = p->tri_avail - p->tri_pos;
	if (have >= n)
		return 0;
	size_t B = p->prep_batch, need = n - have;
	return triples_refill(p, (need + B - 1) / B * B);
}

static int triples_take(struct mpc *p, size_t n, mpc_share *out)
{
	int rc = triples_ensure(p, n);
	if (rc != 0)
		return rc;
	memcpy(out, p->triples + 3 * p->tri_pos, 3 * n * sizeof *out);
	sodium_memzero(p->triples + 3 * p->tri_pos, 3 * n * sizeof *out);
	p->tri_pos += n;
	return 0;
}

int mpc_prefill(struct mpc *p, enum mpc_prep_kind kind, uint32_t param, size_t n)
{
	if (p->failed)
		return ERR_ABORTED;
	switch (kind) {
	case MPC_PREP_TRIPLE:
		return triples_ensure(p, n);
	case MPC_PREP_TRUNC:
		if (param < 1 || param > 62)
			return ERR_INVALID;
		return queue_fill(p, &p->trunc, param, n);
	case MPC_PREP_RAND:
		return queue_fill(p, &p->rand, 0, n);
	case MPC_PREP_INPUT:
		if (param >= p->n)
			return ERR_INVALID;
		return queue_fill(p, &p->input[param], param, n);
	case MPC_PREP_MMASK:
	case MPC_PREP_MMUL:
		break; /* shaped per use: fetched by mpc_fmat_new / mpc_batch_fmat_mul */
	}
	return ERR_INVALID;
}

/* ---------------------------------------------------------------- batches */

enum op_kind { OP_MUL = 1, OP_TRUNC, OP_FMUL };

struct op {
	enum op_kind kind;
	mpc_share *out;
	size_t n, first; /* first opened value of this op in the batch */
	unsigned m;
	const struct mpc_fmat *fm;
	mpc_share *mat; /* MUL: triples (3n); TRUNC: r_63 and r_mid (2n);
			   FMUL: per row a (rows) and a B (cols) */
	size_t nmat;
	ring64_t *tmp; /* FMUL: one row of D E */
};

struct mpc_fmat {
	uint32_t id, rows, cols;
	mpc_share *b; /* [B], row-major */
	ring64_t *e;  /* E = W - B, public */
};

struct mpc_batch {
	struct mpc *p;
	struct op *ops;
	size_t nops, capops;
	mpc_share *opens;
	size_t nopen, capopen;
};

int mpc_batch_new(struct mpc *p, struct mpc_batch **out)
{
	*out = NULL;
	struct mpc_batch *b = calloc(1, sizeof *b);
	if (!b)
		return ERR_NOMEM;
	b->p = p;
	*out = b;
	return 0;
}

static void batch_clear(struct mpc_batch *b)
{
	for (size_t i = 0; i < b->nops; i++) {
		struct op *o = &b->ops[i];
		if (o->mat) {
			sodium_memzero(o->mat, o->nmat * sizeof *o->mat);
			free(o->mat);
		}
		free(o->tmp);
	}
	b->nops = 0;
	if (b->opens)
		sodium_memzero(b->opens, b->nopen * sizeof *b->opens);
	b->nopen = 0;
}

void mpc_batch_free(struct mpc_batch *b)
{
	if (!b)
		return;
	batch_clear(b);
	free(b->ops);
	free(b->opens);
	free(b);
}

static struct op *batch_push(struct mpc_batch *b, size_t nopen)
{
	if (b->nops == b->capops) {
		size_t nc = b->capops ? 2 * b->capops : 8;
		struct op *no = realloc(b->ops, nc * sizeof *no);
		if (!no)
			return NULL;
		b->ops = no;
		b->capops = nc;
	}
	if (b->nopen + nopen > b->capopen) {
		size_t nc = b->capopen ? b->capopen : 1024;
		while (nc < b->nopen + nopen)
			nc *= 2;
		mpc_share *no = malloc(nc * sizeof *no);
		if (!no)
			return NULL;
		if (b->opens) {
			memcpy(no, b->opens, b->nopen * sizeof *no);
			sodium_memzero(b->opens, b->capopen * sizeof *no);
			free(b->opens);
		}
		b->opens = no;
		b->capopen = nc;
	}
	struct op *o = &b->ops[b->nops];
	memset(o, 0, sizeof *o);
	o->first = b->nopen;
	return o;
}

/* Beaver: open d = x - a and e = y - b; z = c + e a + d b + d e. */
int mpc_batch_mul(struct mpc_batch *b, mpc_share *out, const mpc_share *x, const mpc_share *y,
		  size_t n)
{
	struct mpc *p = b->p;
	if (p->failed)
		return ERR_ABORTED;
	struct op *o = batch_push(b, 2 * n);
	if (!o)
		return ERR_NOMEM;
	o->kind = OP_MUL;
	o->out = out;
	o->n = n;
	o->nmat = 3 * n;
	o->mat = malloc((n ? 3 * n : 1) * sizeof *o->mat);
	if (!o->mat)
		return ERR_NOMEM;
	int rc = triples_take(p, n, o->mat);
	if (rc != 0) {
		free(o->mat);
		return rc;
	}
	p->st.triples += n;
	mpc_share *d = b->opens + b->nopen;
	for (size_t i = 0; i < n; i++) {
		const mpc_share *t = o->mat + 3 * i;
		d[2 * i].v = x[i].v - t[0].v;
		d[2 * i].m = x[i].m - t[0].m;
		d[2 * i + 1].v = y[i].v - t[1].v;
		d[2 * i + 1].m = y[i].m - t[1].m;
	}
	b->nopen += 2 * n;
	b->nops++;
	return 0;
}

/* Truncation (Escudero, Ghosh, Keller, Rachuri, Scholl, CRYPTO 2020, probabilistic
 * truncation with the top bit of the mask handled exactly): for |x| < 2^62 open
 * c = x + 2^62 + r with r uniform in Z_2^64. The wrap of x + 2^62 + r is exactly
 * r_63 (1 - c_63), so no large error can occur; only the carry out of the low m bits
 * is left, which rounds the result up with probability (x mod 2^m) / 2^m. */
int mpc_batch_trunc(struct mpc_batch *b, mpc_share *out, const mpc_share *x, size_t n, unsigned m)
{
	struct mpc *p = b->p;
	if (p->failed)
		return ERR_ABORTED;
	if (m < 1 || m > 62)
		return ERR_INVALID;
	struct op *o = batch_push(b, n);
	if (!o)
		return ERR_NOMEM;
	o->kind = OP_TRUNC;
	o->out = out;
	o->n = n;
	o->m = m;
	mpc_share *mat = malloc((n ? 3 * n : 1) * sizeof *mat);
	o->nmat = 2 * n;
	o->mat = malloc((n ? 2 * n : 1) * sizeof *o->mat);
	if (!mat || !o->mat) {
		free(mat);
		free(o->mat);
		return ERR_NOMEM;
	}
	int rc = queue_take(p, &p->trunc, m, n, mat, NULL);
	if (rc != 0) {
		free(mat);
		free(o->mat);
		return rc;
	}
	p->st.truncs += n;
	mpc_share *c = b->opens + b->nopen;
	const ring128_t off = (ring128_t)1 << 62;
	for (size_t i = 0; i < n; i++) {
		mpc_share t;
		t.v = x[i].v + mat[3 * i].v;
		t.m = x[i].m + mat[3 * i].m;
		add_pub1(p, &c[i], &t, off);
		o->mat[2 * i] = mat[3 * i + 1];
		o->mat[2 * i + 1] = mat[3 * i + 2];
	}
	sodium_memzero(mat, 3 * n * sizeof *mat);
	free(mat);
	b->nopen += n;
	b->nops++;
	return 0;
}

static void finish_mul(struct mpc *p, struct op *o, const ring64_t *pub)
{
	for (size_t i = 0; i < o->n; i++) {
		const mpc_share *t = o->mat + 3 * i;
		ring64_t d = pub[2 * i], e = pub[2 * i + 1];
		mpc_share z;
		z.v = t[2].v + t[0].v * e + t[1].v * d;
		z.m = t[2].m + t[0].m * e + t[1].m * d;
		add_pub1(p, &o->out[i], &z, (ring128_t)(ring64_t)(d * e));
	}
}

static void finish_trunc(struct mpc *p, struct op *o, const ring64_t *pub)
{
	unsigned m = o->m;
	for (size_t i = 0; i < o->n; i++) {
		ring64_t c = pub[i];
		ring64_t msb = c >> 63;
		/* y = (c >> m) - 2^(62-m) + coef [r_63] - [r_mid], coef = +-2^(63-m) */
		ring64_t coef = (ring64_t)1 << (63 - m);
		coef = msb ? ring64_neg(coef) : coef; /* c is public */
		ring64_t k = (c >> m) - ((ring64_t)1 << (62 - m));
		const mpc_share *rb = &o->mat[2 * i], *rm = &o->mat[2 * i + 1];
		mpc_share y;
		y.v = rb->v * coef - rm->v;
		y.m = rb->m * coef - rm->m;
		add_pub1(p, &o->out[i], &y, k);
	}
}

/* ---------------------------------------------------------------- fixed-mask matrices */

int mpc_fmat_new(struct mpc *p, const mpc_share *w, uint32_t rows, uint32_t cols,
		 struct mpc_fmat **out)
{
	*out = NULL;
	if (p->failed)
		return ERR_ABORTED;
	if (rows == 0 || cols == 0 || rows > PREP_MAX_DIM || cols > PREP_MAX_DIM ||
	    (uint64_t)rows * cols > PREP_MAX_BATCH)
		return ERR_INVALID;
	size_t n = (size_t)rows * cols;
	struct mpc_fmat *fm = calloc(1, sizeof *fm);
	mpc_share *d = malloc(n * sizeof *d);
	int rc = 0;
	if (!fm || !d || !(fm->b = malloc(n * sizeof *fm->b)) || !(fm->e = malloc(n * sizeof *fm->e))) {
		rc = ERR_NOMEM;
		goto out;
	}
	fm->id = p->next_mask_id++;
	fm->rows = rows;
	fm->cols = cols;
	struct mpc_prep_req req = {
		.kind = MPC_PREP_MMASK, .param = fm->id, .n = (uint32_t)n, .rows = rows, .cols = cols};
	if ((rc = prep_direct(p, &p->prg_mmask, &p->mmask_batch, &req, fm->b)) != 0)
		goto out;
	mpc_sub(p, d, w, fm->b, n);
	rc = open_shares(p, d, n, fm->e, NULL, false);
out:
	if (d) {
		sodium_memzero(d, n * sizeof *d);
		free(d);
	}
	if (rc != 0) {
		mpc_fmat_free(fm);
		return rc;
	}
	*out = fm;
	return 0;
}

void mpc_fmat_free(struct mpc_fmat *fm)
{
	if (!fm)
		return;
	if (fm->b) {
		sodium_memzero(fm->b, (size_t)fm->rows * fm->cols * sizeof *fm->b);
		free(fm->b);
	}
	free(fm->e);
	free(fm);
}

/* X W = (D + A)(E + B) = D E + D [B] + [A] E + [A B] with D = X - A opened. */
int mpc_batch_fmat_mul(struct mpc_batch *b, const struct mpc_fmat *fm, mpc_share *out,
		       const mpc_share *x, uint32_t m)
{
	struct mpc *p = b->p;
	if (p->failed)
		return ERR_ABORTED;
	if (!fm || m == 0 || (uint64_t)m * (fm->rows + fm->cols) > 3 * (uint64_t)PREP_MAX_BATCH)
		return ERR_INVALID;
	size_t R = fm->rows, C = fm->cols, k = R + C;
	struct op *o = batch_push(b, m * R);
	if (!o)
		return ERR_NOMEM;
	o->kind = OP_FMUL;
	o->out = out;
	o->n = m;
	o->fm = fm;
	o->nmat = m * k;
	o->mat = malloc(o->nmat * sizeof *o->mat);
	o->tmp = malloc(C * sizeof *o->tmp);
	if (!o->mat || !o->tmp) {
		free(o->mat);
		free(o->tmp);
		return ERR_NOMEM;
	}
	struct mpc_prep_req req = {
		.kind = MPC_PREP_MMUL, .param = fm->id, .n = m, .rows = fm->rows, .cols = fm->cols};
	int rc = prep_direct(p, &p->prg_mmul, &p->mmul_batch, &req, o->mat);
	if (rc != 0) {
		free(o->mat);
		free(o->tmp);
		return rc;
	}
	mpc_share *d = b->opens + b->nopen;
	for (size_t t = 0; t < m; t++)
		mpc_sub(p, d + t * R, x + t * R, o->mat + t * k, R);
	b->nopen += m * R;
	b->nops++;
	return 0;
}

static void finish_fmul(struct mpc *p, struct op *o, const ring64_t *pub)
{
	const struct mpc_fmat *fm = o->fm;
	size_t R = fm->rows, C = fm->cols, k = R + C;
	for (size_t t = 0; t < o->n; t++) {
		const ring64_t *d = pub + t * R;
		const mpc_share *a = o->mat + t * k, *ab = a + R;
		mpc_share *y = o->out + t * C;
		ring64_t *de = o->tmp;
		for (size_t c = 0; c < C; c++) {
			y[c] = ab[c];
			de[c] = 0;
		}
		for (size_t j = 0; j < R; j++) {
			const ring64_t dj = d[j];
			const ring64_t *erow = fm->e + j * C;
			const mpc_share *brow = fm->b + j * C;
			for (size_t c = 0; c < C; c++) {
				y[c].v += brow[c].v * dj + a[j].v * erow[c];
				y[c].m += brow[c].m * dj + a[j].m * erow[c];
				de[c] += dj * erow[c];
			}
		}
		mpc_add_public(p, y, y, de, C);
	}
}

int mpc_fmat_mul(struct mpc *p, const struct mpc_fmat *fm, mpc_share *out, const mpc_share *x,
		 uint32_t m)
{
	struct mpc_batch *b;
	int rc = mpc_batch_new(p, &b);
	if (rc != 0)
		return rc;
	if ((rc = mpc_batch_fmat_mul(b, fm, out, x, m)) == 0)
		rc = mpc_batch_run(b);
	mpc_batch_free(b);
	return rc;
}

int mpc_batch_run(struct mpc_batch *b)
{
	struct mpc *p = b->p;
	if (p->failed) {
		batch_clear(b);
		return ERR_ABORTED;
	}
	ring64_t *pub = malloc((b->nopen ? b->nopen : 1) * sizeof *pub);
	if (!pub) {
		batch_clear(b);
		return ERR_NOMEM;
	}
	int rc = b->nopen ? open_shares(p, b->opens, b->nopen, pub, NULL, false) : 0;
	if (rc == 0) {
		for (size_t i = 0; i < b->nops; i++) {
			struct op *o = &b->ops[i];
			if (o->kind == OP_MUL)
				finish_mul(p, o, pub + o->first);
			else if (o->kind == OP_TRUNC)
				finish_trunc(p, o, pub + o->first);
			else
				finish_fmul(p, o, pub + o->first);
		}
	}
	free(pub);
	batch_clear(b);
	return rc;
}

int mpc_mul(struct mpc *p, mpc_share *out, const mpc_share *x, const mpc_share *y, size_t n)
{
	struct mpc_batch *b;
	int rc = mpc_batch_new(p, &b);
	if (rc != 0)
		return rc;
	if ((rc = mpc_batch_mul(b, out, x, y, n)) == 0)
		rc = mpc_batch_run(b);
	mpc_batch_free(b);
	return rc;
}

int mpc_trunc(struct mpc *p, mpc_share *out, const mpc_share *x, size_t n, unsigned m)
{
	struct mpc_batch *b;
	int rc = mpc_batch_new(p, &b);
	if (rc != 0)
		return rc;
	if ((rc = mpc_batch_trunc(b, out, x, n, m)) == 0)
		rc = mpc_batch_run(b);
	mpc_batch_free(b);
	return rc;
}

int mpc_mul_fx(struct mpc *p, mpc_share *out, const mpc_share *x, const mpc_share *y, size_t n)
{
	int rc = mpc_mul(p, out, x, y, n);
	if (rc == 0)
		rc = mpc_trunc(p, out, out, n, p->f);
	return rc;
}

/* ---------------------------------------------------------------- lifecycle */

int mpc_new(struct mpc_net *net, const uint8_t seed[MPC_SEED_BYTES],
	    const struct mpc_prep_source *src, const struct mpc_config *cfg, struct mpc **out)
{
	*out = NULL;
	struct mpc_config c = cfg ? *cfg : (struct mpc_config){0};
	if (!net || !seed || !src || !src->fetch)
		return ERR_INVALID;
	if (c.frac_bits == 0)
		c.frac_bits = RING_FXP_DEFAULT_F;
	if (!ring_fxp_valid_f(c.frac_bits) || c.prep_batch > PREP_MAX_BATCH)
		return ERR_INVALID;
	if (sodium_init() < 0)
		return ERR_CRYPTO;
	struct mpc *p = calloc(1, sizeof *p);
	if (!p)
		return ERR_NOMEM;
	p->net = net;
	p->src = *src;
	p->me = mpc_net_party(net);
	p->n = mpc_net_nparties(net);
	p->f = c.frac_bits;
	p->check_every = c.check_every ? c.check_every : (size_t)1 << 18;
	p->prep_batch = c.prep_batch ? c.prep_batch : 4096;
	p->sacrifice = !c.no_sacrifice;
	memcpy(p->seed, seed, MPC_SEED_BYTES);
	p->alpha = prep_alpha_share(seed);
	queue_init(&p->rand, MPC_PREP_RAND, 0, seed);
	queue_init(&p->triple_raw, MPC_PREP_TRIPLE, 0, seed);
	queue_init(&p->trunc, MPC_PREP_TRUNC, 0, seed);
	for (unsigned j = 0; j < p->n; j++)
		queue_init(&p->input[j], MPC_PREP_INPUT, j, seed);
	prg_init(&p->prg_mmask, seed, MPC_PREP_MMASK);
	prg_init(&p->prg_mmul, seed, MPC_PREP_MMUL);
	crypto_generichash_init(&p->view, NULL, 0, HASH_BYTES);
	p->rand_hmac = EVP_RAND_fetch(NULL, "HMAC-DRBG", NULL);
	p->rand_test = EVP_RAND_fetch(NULL, "TEST-RAND", NULL);
	if (!p->rand_hmac || !p->rand_test) {
		mpc_free(p);
		return ERR_CRYPTO;
	}
	*out = p;
	return 0;
}

void mpc_free(struct mpc *p)
{
	if (!p)
		return;
	queue_wipe(&p->rand);
	queue_wipe(&p->triple_raw);
	queue_wipe(&p->trunc);
	for (unsigned j = 0; j < p->n; j++)
		queue_wipe(&p->input[j]);
	prg_wipe(&p->prg_mmask);
	prg_wipe(&p->prg_mmul);
	if (p->triples) {
		sodium_memzero(p->triples, 3 * p->tri_cap * sizeof *p->triples);
		free(p->triples);
	}
	if (p->log.m)
		sodium_memzero(p->log.m, p->log.cap * sizeof *p->log.m);
	if (p->log.up)
		sodium_memzero(p->log.up, p->log.cap * sizeof *p->log.up);
	free(p->log.s);
	free(p->log.m);
	free(p->log.up);
	if (p->sbuf) {
		sodium_memzero(p->sbuf, p->scap);
		free(p->sbuf);
	}
	if (p->rbuf) {
		sodium_memzero(p->rbuf, p->rcap);
		free(p->rbuf);
	}
	EVP_RAND_free(p->rand_hmac);
	EVP_RAND_free(p->rand_test);
	sodium_memzero(p, sizeof *p);
	free(p);
}

unsigned mpc_party(const struct mpc *p) { return p->me; }
unsigned mpc_nparties(const struct mpc *p) { return p->n; }
unsigned mpc_frac_bits(const struct mpc *p) { return p->f; }

void mpc_get_stats(const struct mpc *p, struct mpc_stats *st)
{
	struct mpc_net_stats ns;
	mpc_net_get_stats(p->net, &ns);
	*st = p->st;
	st->rounds = ns.rounds;
	st->bytes_sent = ns.bytes_sent;
	st->bytes_recv = ns.bytes_recv;
}
