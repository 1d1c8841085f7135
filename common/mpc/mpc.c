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
	uint32_t batch; /* items per dealer request */
};

struct open_log {
	ring128_t *s; /* sum of the low halves, as an integer */
	ring128_t *m; /* own MAC share */
	ring64_t *up; /* upper half of own value share */
	size_t n, cap;
	size_t hw; /* the most entries it ever held: mpc_free wipes as far */
};

/* Openings of 128-bit values (the sacrifice), with MACs modulo 2^192. */
struct wopen_log {
	ring192_t *s; /* sum of the low 128 bits of the shares, as an integer */
	ring192_t *m; /* own MAC share */
	ring64_t *up; /* bits 128..191 of own value share */
	size_t n, cap, hw;
};

/* A buffer reused from call to call instead of a fresh allocation each time (which
 * for these sizes is an mmap, page faults on first touch and the kernel zeroing every
 * page): grow-only, wiped when it grows and when the engine is freed, as far as it was
 * ever handed out (wiping pages never touched would only fault them in). */
struct scratch {
	void *buf;
	size_t cap, used;
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

	/* a pool per truncation amount (index m) and per look-up width (index b), each
	 * on its own PRG stream; only the ones a program uses ever hold items */
	struct queue rand, cmp, input[MPC_MAX_PARTIES], trunc[63], lut[MPC_LUT_MAX_BITS + 1];
	/* matrix material is fetched per use, not pooled; raw triples are fetched
	 * per sacrifice (always whole dealer batches) */
	struct prg prg_mmask, prg_mmul, prg_triple;
	uint64_t mmask_batch, mmul_batch, triple_batch;
	uint32_t next_mask_id;
	struct mmul_state *mmul; /* matrix triples (mmul.c), NULL until used */
	/* triples that passed the sacrifice */
	mpc_share *triples;
	size_t tri_avail, tri_pos, tri_cap;

	struct open_log log;
	struct wopen_log wlog;
	crypto_generichash_state view;

	/* coin tossing: our committed seed for the next toss, and the peers' commitments */
	bool toss_pending;
	uint8_t toss_seed[MPC_SEED_BYTES], toss_nonce[NONCE_BYTES];
	uint8_t toss_com[MPC_MAX_PARTIES][COMMIT_BYTES];
	EVP_RAND *rand_hmac, *rand_test;

	uint8_t *sbuf, *rbuf;
	size_t scap, rcap;
	/* the MAC check's coefficients; the sacrifice's raw triples, openings, opened
	 * values and coefficients; the public values of a batch round */
	struct scratch chi, t_raw, t_open, t_pub, t_coef, pub;

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

/* At least len bytes of s (contents undefined); NULL after failing the engine. */
static void *scratch(struct mpc *p, struct scratch *s, size_t len)
{
	if (len > s->cap) {
		size_t nc = s->cap ? s->cap : 4096;
		while (nc < len)
			nc *= 2;
		void *nb = malloc(nc);
		if (!nb) {
			fail(p, ERR_NOMEM, "memory");
			return NULL;
		}
		if (s->buf) {
			sodium_memzero(s->buf, s->used);
			free(s->buf);
		}
		s->buf = nb;
		s->cap = nc;
		s->used = 0;
	}
	if (len > s->used)
		s->used = len;
	return s->buf;
}

static void scratch_free(struct scratch *s)
{
	if (s->buf) {
		sodium_memzero(s->buf, s->used);
		free(s->buf);
	}
	*s = (struct scratch){0};
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

/* Joint coefficients (docs/PROTOCOL.md, section 4): a toss, then 32 bytes of its
 * HMAC-DRBG key a ChaCha20 keystream (nonce 0, counter from 0) whose first len bytes
 * are the coefficients. The DRBG would spend an HMAC per 32 bytes, and a MAC check
 * of 2^18 openings needs 2 MB. */
static int coins(struct mpc *p, uint8_t *out, size_t len)
{
	EVP_RAND_CTX *dr = NULL;
	uint8_t key[MPC_SEED_BYTES];
	struct prg g;
	int rc = toss(p, &dr);
	if (rc != 0)
		return rc;
	rc = drbg_bytes(dr, key, sizeof key);
	EVP_RAND_CTX_free(dr);
	if (rc == 0) {
		prg_init(&g, key, 0);
		rc = prg_fill(&g, out, len);
		prg_wipe(&g);
	}
	sodium_memzero(key, sizeof key);
	return rc != 0 ? fail(p, rc, "joint-randomness") : 0;
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

/* Room for `more` items after the unused ones, which move to the front. Items taken
 * are wiped here rather than when taken, as far as the new batch does not overwrite
 * them: until then they sit next to unused items that are just as secret, and
 * mpc_free wipes the whole pool. */
static int queue_room(struct mpc *p, struct queue *q, size_t more)
{
	size_t keep = q->avail - q->pos;
	if (keep && q->pos) {
		memmove(q->items, q->items + q->pos * q->k, keep * q->k * sizeof *q->items);
		if (q->clear)
			memmove(q->clear, q->clear + q->pos, keep * sizeof *q->clear);
	}
	if (q->avail > keep + more) {
		sodium_memzero(q->items + (keep + more) * q->k,
			       (q->avail - keep - more) * q->k * sizeof *q->items);
		if (q->clear)
			sodium_memzero(q->clear + keep + more,
				       (q->avail - keep - more) * sizeof *q->clear);
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
		.kind = q->kind, .param = q->param, .n = q->batch, .batch = q->next_batch};
	uint8_t *payload = NULL;
	size_t len = 0;
	int rc;
	if ((rc = queue_room(p, q, q->batch)) != 0)
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
	q->avail += q->batch;
	return 0;
}

/* Makes n items for parameter param available. Every parameterised kind has a pool
 * per parameter, so param always matches; if it ever did not, the pool's material
 * would be dropped (every party runs the same program, so every party drops the same
 * items). */
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
	if (clear)
		memcpy(clear, q->clear + q->pos, n * sizeof *clear);
	q->pos += n; /* wiped by the refill that reuses the room (queue_room) */
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

static int wlog_reserve(struct mpc *p, size_t more)
{
	struct wopen_log *l = &p->wlog;
	if (l->n + more <= l->cap)
		return 0;
	size_t nc = l->cap ? l->cap : 1024;
	while (nc < l->n + more)
		nc *= 2;
	ring192_t *s = realloc(l->s, nc * sizeof *s);
	if (s)
		l->s = s;
	ring192_t *m = realloc(l->m, nc * sizeof *m);
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

/* Opens n shares in one round: each party sends the low 64 bits of its value shares,
 * never the upper half (SPDZ2k: the upper bits of the share sum depend on earlier
 * products). Records everything for the MAC check. */
static int open_shares(struct mpc *p, const mpc_share *a, size_t n, ring64_t *out)
{
	int rc;
	if ((rc = log_reserve(p, n)) != 0)
		return rc;
	uint8_t *msg = sbuf(p, n * 8);
	if (!msg)
		return fail(p, ERR_NOMEM, "memory");
	for (size_t i = 0; i < n; i++)
		ring64_store(msg + 8 * i, ring128_lo(a[i].v));
	if ((rc = xchg_all(p, msg, n * 8)) != 0)
		return rc;
	crypto_generichash_update(&p->view, p->rbuf, n * 8 * p->n);
	struct open_log *l = &p->log;
	for (size_t i = 0; i < n; i++) {
		ring128_t s = 0;
		for (unsigned j = 0; j < p->n; j++)
			s += ring128_from64(ring64_load(p->rbuf + ((size_t)j * n + i) * 8));
		l->s[l->n] = s;
		l->m[l->n] = a[i].m;
		l->up[l->n] = ring128_hi(a[i].v);
		l->n++;
		if (out)
			out[i] = ring128_lo(s);
	}
	p->st.opened += n;
	if (l->n + p->wlog.n >= p->check_every)
		return mac_check(p);
	return 0;
}

/* The same one level up, for the sacrifice: values modulo 2^128 (each party sends
 * the low 128 bits of its 192-bit share), MACs modulo 2^192, so that an error in any
 * of the 128 opened bits is caught by the MAC check as surely as an error in a 64-bit
 * opening is. */
static int open_wide(struct mpc *p, const mpc_wshare *a, size_t n, ring128_t *out)
{
	int rc;
	if ((rc = wlog_reserve(p, n)) != 0)
		return rc;
	uint8_t *msg = sbuf(p, n * 16);
	if (!msg)
		return fail(p, ERR_NOMEM, "memory");
	for (size_t i = 0; i < n; i++)
		ring128_store(msg + 16 * i, ring192_lo(a[i].v));
	if ((rc = xchg_all(p, msg, n * 16)) != 0)
		return rc;
	crypto_generichash_update(&p->view, p->rbuf, n * 16 * p->n);
	struct wopen_log *l = &p->wlog;
	for (size_t i = 0; i < n; i++) {
		/* the integer sum of N < 2^64 128-bit values: the low 128 bits and a carry
		 * count, which is the sum in Z_2^192 */
		ring128_t lo = 0;
		uint64_t carry = 0;
		for (unsigned j = 0; j < p->n; j++) {
			ring128_t v = ring128_load(p->rbuf + ((size_t)j * n + i) * 16);
			lo += v;
			carry += lo < v;
		}
		ring192_t s = ring192_from128(lo);
		s.w[2] = carry;
		l->s[l->n] = s;
		l->m[l->n] = a[i].m;
		l->up[l->n] = ring192_hi(a[i].v);
		l->n++;
		out[i] = ring192_lo(s);
	}
	p->st.opened += n;
	return 0;
}

/* The batched MAC check (SPDZ2k, with a random [r] masking the upper part):
 *   chi_j  <- joint DRBG (64 bits each)
 *   y      = sum chi_j s_j                 (public)
 *   p_i    = sum chi_j up_ij + r_i mod 2^64 (broadcast; p = sum p_i)
 *   z_i    = sum chi_j m_ij - alpha_i y - 2^64 alpha_i p + 2^64 m(r)_i
 * commit z_i (with the hash of the broadcast view), open, and require sum z_i = 0.
 * The 128-bit openings of the sacrifice, if any, are checked in the same rounds one
 * level up (modulo 2^192, the mask at 2^128, a second [r]): w_i next to z_i. */
static int mac_check(struct mpc *p)
{
	struct open_log *l = &p->log;
	struct wopen_log *wl = &p->wlog;
	uint8_t *chi;
	mpc_share r[2];
	int rc;
	if (l->n == 0 && wl->n == 0)
		return 0;
	/* every party has the same log sizes (they run the same program) */
	const bool wide = wl->n != 0;
	const size_t nr = wide ? 2 : 1, pl = 8 * nr, zl = wide ? 16 + 24 : 16;
	if ((rc = queue_take(p, &p->rand, 0, nr, r, NULL)) != 0)
		return rc;
	p->st.randoms += nr;
	if (!(chi = scratch(p, &p->chi, (l->n + wl->n) * 8))) {
		rc = ERR_NOMEM;
		goto out;
	}
	if ((rc = coins(p, chi, (l->n + wl->n) * 8)) != 0)
		goto out;
	ring128_t y = 0, mi = 0;
	ring64_t pi = ring128_lo(r[0].v);
	for (size_t j = 0; j < l->n; j++) {
		ring64_t c = ring64_load(chi + 8 * j);
		y += l->s[j] * c;
		mi += l->m[j] * c;
		pi += l->up[j] * c;
	}
	ring192_t wy = ring192_from128(0), wmi = ring192_from128(0);
	ring64_t wpi = ring128_lo(r[nr - 1].v);
	for (size_t j = 0; j < wl->n; j++) {
		ring64_t c = ring64_load(chi + 8 * (l->n + j));
		ring192_t cw = ring192_from128(c);
		wy = ring192_add(wy, ring192_mul(wl->s[j], cw));
		wmi = ring192_add(wmi, ring192_mul(wl->m[j], cw));
		wpi += wl->up[j] * c;
	}
	uint8_t pm[16];
	ring64_store(pm, pi);
	ring64_store(pm + 8, wpi);
	if ((rc = xchg_all(p, pm, pl)) != 0)
		goto out;
	crypto_generichash_update(&p->view, p->rbuf, pl * p->n);
	ring64_t pbar = 0, wpbar = 0;
	for (unsigned j = 0; j < p->n; j++) {
		pbar += ring64_load(p->rbuf + pl * j);
		if (wide)
			wpbar += ring64_load(p->rbuf + pl * j + 8);
	}
	ring128_t a = p->alpha;
	ring128_t z = mi - a * y - ((a * pbar) << 64) + (r[0].m << 64);
	ring192_t wa = ring192_from128(a);
	ring192_t wz = ring192_sub(wmi, ring192_mul(wa, wy));
	wz = ring192_sub(wz, ring192_shl128(p->alpha * wpbar));
	wz = ring192_add(wz, ring192_shl128(ring128_lo(r[nr - 1].m)));

	/* commit to z_i (and w_i), together with the hash of our broadcast view */
	uint8_t zb[40], nonce[NONCE_BYTES], msg[COMMIT_BYTES + HASH_BYTES];
	uint8_t coms[MPC_MAX_PARTIES][COMMIT_BYTES];
	ring128_store(zb, z);
	ring192_store(zb + 16, wz);
	randombytes_buf(nonce, sizeof nonce);
	commit(msg, TAG_Z, p->me, nonce, zb, zl);
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
	uint8_t open[40 + NONCE_BYTES];
	const size_t ol = zl + NONCE_BYTES;
	memcpy(open, zb, zl);
	memcpy(open + zl, nonce, NONCE_BYTES);
	if ((rc = xchg_all(p, open, ol)) != 0)
		goto out;
	ring128_t sum = 0;
	ring192_t wsum = ring192_from128(0);
	for (unsigned j = 0; j < p->n; j++) {
		const uint8_t *m = p->rbuf + (size_t)j * ol;
		if (!commit_ok(coms[j], TAG_Z, j, m + zl, m, zl)) {
			rc = fail(p, ERR_PROTOCOL, "commitment");
			goto out;
		}
		sum += ring128_load(m);
		if (wide)
			wsum = ring192_add(wsum, ring192_load(m + 16));
	}
	/* the sums are public; a data-dependent branch on them leaks nothing */
	if (sum != 0 || !ring192_eq(wsum, ring192_from128(0))) {
		rc = fail(p, ERR_MAC_CHECK, "mac-check");
		goto out;
	}
	p->st.checks++;
	l->hw = l->n > l->hw ? l->n : l->hw;
	wl->hw = wl->n > wl->hw ? wl->n : wl->hw;
	l->n = 0;
	wl->n = 0;
out:
	sodium_memzero(r, sizeof r);
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
	return open_shares(p, a, n, out);
}

int mpc_reveal(struct mpc *p, ring64_t *out, const mpc_share *a, size_t n)
{
	if (p->failed)
		return ERR_ABORTED;
	ring64_t *tmp = malloc((n ? n : 1) * sizeof *tmp);
	if (!tmp)
		return ERR_NOMEM;
	int rc = open_shares(p, a, n, tmp);
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

/* take raw (wide) triples from the dealer, in whole batches of prep_batch. */
static int triples_fetch(struct mpc *p, size_t take, mpc_wshare *raw)
{
	for (size_t got = 0; got < take; got += p->prep_batch) {
		struct mpc_prep_req req = {
		    .kind = MPC_PREP_TRIPLE, .n = p->prep_batch, .batch = p->triple_batch};
		uint8_t *payload = NULL;
		size_t len = 0;
		int rc;
		if (mpc_prep_needs_payload(p->me, &req)) {
			if ((rc = p->src.fetch(p->src.ctx, p->me, &req, &payload, &len)) != 0)
				return fail(p, rc, "preprocessing");
			p->st.prep_bytes_in += len;
		}
		rc = prep_expand_wide(&p->prg_triple, p->me, &req, payload, len, raw + 3 * got);
		if (payload) {
			sodium_memzero(payload, len);
			free(payload);
		}
		if (rc != 0)
			return fail(p, rc, "preprocessing");
		p->triple_batch++;
	}
	return 0;
}

static inline mpc_wshare wlin(ring64_t t, const mpc_wshare *x, const mpc_wshare *y)
{
	/* t x - y */
	ring192_t tw = ring192_from128(t);
	return (mpc_wshare){ring192_sub(ring192_mul(tw, x->v), y->v),
			    ring192_sub(ring192_mul(tw, x->m), y->m)};
}

/* Tops up the checked-triple pool by cnt triples (a multiple of the dealer batch):
 * takes 2 cnt from the dealer and sacrifices the second half to check the first, in
 * one toss and two rounds. This is SPDZ's two-triple check (Damgard, Pastro, Smart,
 * Zakarias, CRYPTO 2012) done as SPDZ2k does it: the triples live in Z_2^192 with
 * c = ab there, the check is of 128-bit values with MACs modulo 2^192 (k + s = 128
 * checked bits, s = 64 bits of MAC above them), with t a 64-bit coefficient:
 *   rho = t a - a',  sigma = b - b'   (opened mod 2^128: uniform, as a', b' are)
 *   tau = t c - c' - rho b - sigma a' must be 0 mod 2^128.
 * For c = ab + e with e != 0 mod 2^64 (an error that matters), tau = t e - e' mod
 * 2^128, and t e mod 2^128 takes a different value for every t in [0, 2^64), so at
 * most one t passes. An error a party adds to any of the 128 opened bits, to cancel
 * tau, is caught by the MAC check of the wide openings. */
static int triples_refill(struct mpc *p, size_t cnt)
{
	mpc_wshare *raw, *open;
	ring128_t *pub;
	uint8_t *tb;
	size_t keep = p->tri_avail - p->tri_pos;
	if (keep && p->tri_pos)
		memmove(p->triples, p->triples + 3 * p->tri_pos, 3 * keep * sizeof *p->triples);
	if (p->tri_avail > keep + cnt) /* triples taken that the new ones do not cover */
		sodium_memzero(p->triples + 3 * (keep + cnt),
			       3 * (p->tri_avail - keep - cnt) * sizeof *p->triples);
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
	/* the scratch keeps the raw triples until the next refill overwrites them or the
	 * engine is freed; the pool holds the same secrets meanwhile anyway */
	size_t take = p->sacrifice ? 2 * cnt : cnt;
	int rc;
	if (!(raw = scratch(p, &p->t_raw, 3 * take * sizeof *raw)))
		return ERR_NOMEM;
	if ((rc = triples_fetch(p, take, raw)) != 0)
		return rc;
	if (p->sacrifice) {
		open = scratch(p, &p->t_open, 2 * cnt * sizeof *open);
		pub = scratch(p, &p->t_pub, 2 * cnt * sizeof *pub);
		tb = scratch(p, &p->t_coef, 8 * cnt);
		if (!open || !pub || !tb)
			return ERR_NOMEM;
		if ((rc = coins(p, tb, 8 * cnt)) != 0)
			return rc;
		for (size_t i = 0; i < cnt; i++) {
			const mpc_wshare *t = raw + 3 * i, *s = raw + 3 * (cnt + i);
			open[2 * i] = wlin(ring64_load(tb + 8 * i), &t[0], &s[0]);
			open[2 * i + 1] = (mpc_wshare){ring192_sub(t[1].v, s[1].v),
						       ring192_sub(t[1].m, s[1].m)};
		}
		if ((rc = open_wide(p, open, 2 * cnt, pub)) != 0)
			return rc;
		for (size_t i = 0; i < cnt; i++) {
			const mpc_wshare *t = raw + 3 * i, *s = raw + 3 * (cnt + i);
			ring192_t rho = ring192_from128(pub[2 * i]), sig = ring192_from128(pub[2 * i + 1]);
			mpc_wshare z = wlin(ring64_load(tb + 8 * i), &t[2], &s[2]);
			z.v = ring192_sub(z.v, ring192_add(ring192_mul(rho, t[1].v), ring192_mul(sig, s[0].v)));
			z.m = ring192_sub(z.m, ring192_add(ring192_mul(rho, t[1].m), ring192_mul(sig, s[0].m)));
			open[i] = z;
		}
		if ((rc = open_wide(p, open, cnt, pub)) != 0)
			return rc;
		ring128_t acc = 0;
		for (size_t i = 0; i < cnt; i++)
			acc |= pub[i];
		if (acc != 0)
			return fail(p, ERR_MAC_CHECK, "triple-sacrifice");
		p->st.triples_sacrificed += cnt;
	}
	/* what is checked mod 2^128 with MACs mod 2^192 is a valid share with a MAC mod
	 * 2^128 after reduction: the online phase only needs c = ab mod 2^64 */
	for (size_t i = 0; i < 3 * cnt; i++)
		p->triples[3 * keep + i] = (mpc_share){ring192_lo(raw[i].v), ring192_lo(raw[i].m)};
	p->tri_avail = keep + cnt;
	return 0;
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
	p->tri_pos += n; /* wiped by the refill that reuses the room, as in queue_room */
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
		return queue_fill(p, &p->trunc[param], param, n);
	case MPC_PREP_LUT:
		if (param < 1 || param > MPC_LUT_MAX_BITS)
			return ERR_INVALID;
		return queue_fill(p, &p->lut[param], param, n);
	case MPC_PREP_RAND:
		return queue_fill(p, &p->rand, 0, n);
	case MPC_PREP_CMP:
		return queue_fill(p, &p->cmp, 0, n);
	case MPC_PREP_INPUT:
		if (param >= p->n)
			return ERR_INVALID;
		return queue_fill(p, &p->input[param], param, n);
	case MPC_PREP_MMASK:
	case MPC_PREP_MMUL:
	case MPC_PREP_MTRIPLE: /* mpc_matmul_prefill */
		break; /* shaped per use: fetched by mpc_fmat_new / mpc_batch_fmat_mul */
	}
	return ERR_INVALID;
}

/* ---------------------------------------------------------------- batches */

/* A batch is a set of operations that run side by side: in every round each
 * unfinished operation contributes the values it needs opened for its current step,
 * one exchange opens them all, and each operation consumes its part and either
 * finishes or queues the openings of its next step. A one-round operation (product,
 * truncation, matrix product, table look-up) has one step; a comparison has five or
 * six; however many there are, independent operations share every round.
 *
 * A compound operation (exp, reciprocal, SiLU, softmax: approx.c) opens nothing
 * itself: each of its stages queues child operations on the same batch, and the next
 * stage starts in the round after the last child of the stage finished. Children may
 * be compound, which is how a compound runs two chains side by side. So a compound
 * shares its rounds with everything else on the batch, like any other operation. */
enum op_kind { OP_MUL = 1, OP_TRUNC, OP_FMUL, OP_LTZ, OP_DIGIT, OP_LUT, OP_NORM, OP_COMPOUND, OP_XOP };

struct op {
	enum op_kind kind;
	mpc_share *out;
	size_t n;
	size_t first, cnt;           /* this round's openings of this op */
	size_t next_first, next_cnt; /* the next round's, while they are queued */
	unsigned m;
	const struct mpc_fmat *fm;
	mpc_share *mat; /* MUL: triples (3n); TRUNC: r_63 and r_mid (2n);
			   FMUL: per row a (rows) and a B (cols); LTZ: triples */
	size_t nmat;
	ring64_t *tmp;  /* FMUL: one row of D E */
	mpc_share *add; /* MUL: added to the product (n), or NULL */
	/* LTZ */
	mpc_share *cm;   /* comparison material, MPC_CMP_SHARES per element */
	mpc_share *st;   /* per element: the linear part, then G[16] and E[16] */
	mpc_share *sel;  /* select operands: per element and lane, x - y and y */
	mpc_share *bits; /* where the comparison bits go as well (or NULL) */
	unsigned selw;   /* lanes selected by each bit (0: the bit is the output) */
	unsigned nodes;  /* carry-tree nodes left per element */
	size_t tpos;     /* next unused triple */
	size_t tfirst;   /* the first triple of this round's products */
	size_t nst;      /* shares in st */
	/* DIGIT */
	ring64_t *tab;   /* 16 entries per table (NORM: 16 per chunk and table; LUT: 2^m) */
	unsigned *tch;   /* the chunk of each table */
	unsigned J, ntab; /* chunks covered by the borrows; tables */
	unsigned dist;   /* the prefix distance of the level in flight (0: none yet) */
	size_t ncm;      /* shares in cm */
	/* NORM */
	unsigned jlo, stage;
	bool vec[MPC_CMP_CHUNKS]; /* suffix accumulator i is a vector (reaches the top) */
	uint8_t *zc;              /* per element and chunk: the block matrix's z is in
				     column 2 (c_j = 0 all through the block), public */
	/* COMPOUND, and the link of every child to its compound */
	struct cop *cop;
	struct xop *xop; /* XOP: an operation of another file (mmul.c) */
	size_t parent; /* 1 + index of the compound this op is a child of, or 0 */
	bool done;
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
	size_t cur_parent; /* 1 + index of the compound whose stage is queueing, or 0 */
};

struct mpc *batch_engine(struct mpc_batch *b) { return b->p; }

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

void mpc_wipe_free(void *ptr, size_t len)
{
	if (ptr) {
		sodium_memzero(ptr, len);
		free(ptr);
	}
}

#define wipe_free mpc_wipe_free

/* Releases what an operation holds; the op itself stays in the array (indices of
 * children and compounds must not move). */
static void op_free(struct op *o)
{
	wipe_free(o->mat, o->nmat * sizeof *o->mat);
	free(o->tmp);
	wipe_free(o->add, o->n * sizeof *o->add);
	wipe_free(o->cm, o->ncm * sizeof *o->cm);
	wipe_free(o->st, o->nst * sizeof *o->st);
	free(o->tab);
	free(o->tch);
	free(o->zc);
	wipe_free(o->sel, 2 * o->n * o->selw * sizeof *o->sel);
	if (o->cop)
		o->cop->free(o->cop);
	if (o->xop)
		o->xop->free(o->xop);
	memset(o, 0, sizeof *o);
}

/* Operation i has produced its output: free it and tell its compound. */
static void op_done(struct mpc_batch *b, size_t i)
{
	struct op *o = &b->ops[i];
	size_t parent = o->parent;
	if (o->done)
		return;
	op_free(o);
	o->done = true;
	if (parent)
		b->ops[parent - 1].cop->pending--;
}

/* The op just filled in at the end of the array becomes part of the batch (and of
 * the compound whose stage queued it). An op with nothing to open is done at once. */
static void batch_commit(struct mpc_batch *b, struct op *o)
{
	size_t i = b->nops++;
	o->parent = b->cur_parent;
	if (o->parent)
		b->ops[o->parent - 1].cop->pending++;
	if (o->kind != OP_COMPOUND && o->cnt == 0)
		op_done(b, i);
}

static void batch_clear(struct mpc_batch *b)
{
	for (size_t i = 0; i < b->nops; i++)
		op_free(&b->ops[i]);
	b->nops = 0;
	b->cur_parent = 0;
	if (b->opens) /* every round reused the buffer: wipe all of it */
		sodium_memzero(b->opens, b->capopen * sizeof *b->opens);
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

static int opens_reserve(struct mpc_batch *b, size_t nopen)
{
	if (b->nopen + nopen > b->capopen) {
		size_t nc = b->capopen ? b->capopen : 1024;
		while (nc < b->nopen + nopen)
			nc *= 2;
		mpc_share *no = malloc(nc * sizeof *no);
		if (!no)
			return ERR_NOMEM;
		if (b->opens) {
			memcpy(no, b->opens, b->nopen * sizeof *no);
			sodium_memzero(b->opens, b->capopen * sizeof *no);
			free(b->opens);
		}
		b->opens = no;
		b->capopen = nc;
	}
	return 0;
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
	if (opens_reserve(b, nopen) != 0)
		return NULL;
	struct op *o = &b->ops[b->nops];
	memset(o, 0, sizeof *o);
	o->first = b->nopen;
	o->cnt = nopen;
	return o;
}

/* Beaver: open d = x - a and e = y - b; z = c + e a + d b + d e (+ add). */
int batch_mul_add(struct mpc_batch *b, mpc_share *out, const mpc_share *x, const mpc_share *y,
		  const mpc_share *add, size_t n)
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
	if (add && (o->add = malloc((n ? n : 1) * sizeof *o->add)))
		memcpy(o->add, add, n * sizeof *add);
	int rc = !o->mat || (add && !o->add) ? ERR_NOMEM : triples_take(p, n, o->mat);
	if (rc != 0) {
		op_free(o);
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
	batch_commit(b, o);
	return 0;
}

int mpc_batch_mul(struct mpc_batch *b, mpc_share *out, const mpc_share *x, const mpc_share *y,
		  size_t n)
{
	return batch_mul_add(b, out, x, y, NULL, n);
}

int mpc_batch_select(struct mpc_batch *b, mpc_share *out, const mpc_share *bit,
		     const mpc_share *x, const mpc_share *y, size_t n)
{
	mpc_share *d = malloc((n ? n : 1) * sizeof *d);
	if (!d)
		return ERR_NOMEM;
	mpc_sub(b->p, d, x, y, n);
	int rc = batch_mul_add(b, out, bit, d, y, n);
	wipe_free(d, n * sizeof *d);
	return rc;
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
	int rc = queue_take(p, &p->trunc[m], m, n, mat, NULL);
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
	batch_commit(b, o);
	return 0;
}

/* z = x y from the triple t and the opened d = x - a, e = y - b. */
static inline void beaver(const struct mpc *p, mpc_share *z, const mpc_share *t, ring64_t d,
			  ring64_t e)
{
	mpc_share w;
	w.v = t[2].v + t[0].v * e + t[1].v * d;
	w.m = t[2].m + t[0].m * e + t[1].m * d;
	add_pub1(p, z, &w, (ring128_t)(ring64_t)(d * e));
}

static void finish_mul(struct mpc *p, struct op *o, const ring64_t *pub)
{
	for (size_t i = 0; i < o->n; i++) {
		beaver(p, &o->out[i], o->mat + 3 * i, pub[2 * i], pub[2 * i + 1]);
		if (o->add)
			mpc_add(p, &o->out[i], &o->out[i], &o->add[i], 1);
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

/* ---------------------------------------------------------------- comparison */

/* LTZ (docs/PROTOCOL.md, "Comparison"). For |x| < 2^62, y = x + 2^62 lies in
 * [0, 2^63) and x < 0 exactly when bit 62 of y is 0. Open c = y + r for the dealer's
 * mask r (uniform in Z_2^64). As in the truncation, the wrap of y + r is
 * r_63 (1 - c_63), so
 *   bit62(y) = (c >> 62) - 2 r_63 - r_62 + 4 r_63 (1 - c_63) - [c mod 2^62 < r mod 2^62],
 * all linear in the dealer's shares except the borrow, a comparison of the public
 * c mod 2^62 with the secret r mod 2^62. For each 4-bit chunk j the dealer gives the
 * one-hot vector of r's chunk, so with c's chunk c_j public, G_j = [r_j > c_j] and
 * E_j = [r_j = c_j] are sums of one-hot entries (no communication). The borrow is the
 * carry of the chunk pairs, combined from the top down by (G, E) o (G', E') =
 * (G + E G', E E') over a 16-leaf tree: 4 rounds of Beaver products (29 products).
 * Then LTZ = 1 - bit62(y). With selw lanes, one more round selects
 * out = bit ? x : y per lane. */
#define LTZ_ST (1 + 2 * MPC_CMP_CHUNKS)
#define LTZ_TRIPLES (2 * (MPC_CMP_CHUNKS - 1) - 1)

int batch_ltz(struct mpc_batch *b, mpc_share *out, mpc_share *bits, const mpc_share *x, size_t n,
	      unsigned selw, const mpc_share *sx, const mpc_share *sy)
{
	struct mpc *p = b->p;
	if (p->failed)
		return ERR_ABORTED;
	struct op *o = batch_push(b, n);
	if (!o)
		return ERR_NOMEM;
	o->kind = OP_LTZ;
	o->out = out;
	o->bits = bits;
	o->n = n;
	o->selw = selw;
	o->nodes = MPC_CMP_CHUNKS;
	size_t nt = n * (LTZ_TRIPLES + selw), nn = n ? n : 1;
	o->nmat = 3 * nt;
	o->mat = malloc((nt ? 3 * nt : 1) * sizeof *o->mat);
	o->cm = malloc(nn * MPC_CMP_SHARES * sizeof *o->cm);
	o->ncm = nn * MPC_CMP_SHARES;
	o->st = malloc(nn * LTZ_ST * sizeof *o->st);
	o->nst = nn * LTZ_ST;
	if (selw)
		o->sel = malloc(2 * nn * selw * sizeof *o->sel);
	int rc = 0;
	if (!o->mat || !o->cm || !o->st || (selw && !o->sel))
		rc = ERR_NOMEM;
	if (rc == 0)
		rc = queue_take(p, &p->cmp, 0, n, o->cm, NULL);
	if (rc == 0)
		rc = triples_take(p, nt, o->mat);
	if (rc != 0) {
		op_free(o);
		return rc;
	}
	p->st.triples += nt;
	p->st.cmps += n;
	for (size_t i = 0; i < n * selw; i++) {
		mpc_sub(p, &o->sel[2 * i], &sx[i], &sy[i], 1);
		o->sel[2 * i + 1] = sy[i];
	}
	mpc_share *c = b->opens + b->nopen;
	for (size_t i = 0; i < n; i++) {
		mpc_share t;
		mpc_add(p, &t, &x[i], &o->cm[i * MPC_CMP_SHARES], 1);
		add_pub1(p, &c[i], &t, (ring128_t)1 << 62);
	}
	b->nopen += n;
	batch_commit(b, o);
	return 0;
}

/* Queues the Beaver openings x - a, y - b of one product. */
static void push_product(struct op *o, mpc_share *d, const mpc_share *x, const mpc_share *y)
{
	const mpc_share *t = o->mat + 3 * o->tpos++;
	mpc_sub(NULL, &d[0], x, &t[0], 1);
	mpc_sub(NULL, &d[1], y, &t[1], 1);
}

/* Queues the next carry-tree level (or the selection once the tree is done). */
static int ltz_push(struct mpc_batch *b, struct op *o)
{
	unsigned m = o->nodes;
	size_t per = m > 2 ? 2 * (m / 2) : 1; /* products per element */
	if (m == 1)
		per = o->selw;
	if (per == 0)
		return 0;
	if (opens_reserve(b, 2 * per * o->n) != 0)
		return fail(b->p, ERR_NOMEM, "memory");
	o->tfirst = o->tpos;
	o->next_first = b->nopen;
	o->next_cnt = 2 * per * o->n;
	mpc_share *d = b->opens + b->nopen;
	for (size_t i = 0; i < o->n; i++) {
		const mpc_share *G = o->st + i * LTZ_ST + 1, *E = G + MPC_CMP_CHUNKS;
		if (m == 1) { /* select: bit (x - y) + y */
			for (unsigned k = 0; k < o->selw; k++, d += 2)
				push_product(o, d, &G[0], &o->sel[2 * (i * o->selw + k)]);
			continue;
		}
		for (unsigned t = 0; t < m / 2; t++) {
			push_product(o, d, &E[2 * t + 1], &G[2 * t]);
			d += 2;
			if (m > 2) {
				push_product(o, d, &E[2 * t + 1], &E[2 * t]);
				d += 2;
			}
		}
	}
	b->nopen += o->next_cnt;
	return 0;
}

static int finish_ltz(struct mpc_batch *b, struct op *o, const ring64_t *pub)
{
	struct mpc *p = b->p;
	unsigned m = o->nodes;
	if (o->cm) {
		/* step 0: c is open; the linear part and the leaves */
		for (size_t i = 0; i < o->n; i++) {
			ring64_t c = pub[i];
			const mpc_share *cm = o->cm + i * MPC_CMP_SHARES;
			mpc_share *st = o->st + i * LTZ_ST, *G = st + 1, *E = G + MPC_CMP_CHUNKS;
			/* c is public: branching on it is fine */
			ring64_t coef = (c >> 63) ? (ring64_t)-2 : 2; /* -2 + 4 (1 - c_63) */
			mpc_share t;
			mpc_scale(p, &t, &cm[1], coef, 1);
			mpc_sub(p, &t, &t, &cm[2], 1);
			add_pub1(p, &st[0], &t, c >> 62);
			for (unsigned j = 0; j < MPC_CMP_CHUNKS; j++) {
				unsigned cj = (unsigned)(c >> (4 * j)) & (j == MPC_CMP_CHUNKS - 1 ? 3 : 15);
				const mpc_share *e = cm + 3 + 16 * j;
				E[j] = e[cj];
				G[j] = (mpc_share){0, 0};
				for (unsigned v = cj + 1; v < 16; v++)
					mpc_add(p, &G[j], &G[j], &e[v], 1);
			}
		}
		wipe_free(o->cm, o->ncm * sizeof *o->cm);
		o->cm = NULL;
		o->ncm = 0;
		return ltz_push(b, o);
	}
	const mpc_share *T = o->mat + 3 * o->tfirst;
	if (m == 1) { /* the selection is done */
		for (size_t i = 0; i < o->n; i++)
			for (unsigned k = 0; k < o->selw; k++) {
				size_t q = i * o->selw + k;
				beaver(p, &o->out[q], T + 3 * q, pub[2 * q], pub[2 * q + 1]);
				mpc_add(p, &o->out[q], &o->out[q], &o->sel[2 * q + 1], 1);
			}
		o->nodes = 0;
		return 0;
	}
	size_t per = m > 2 ? 2 * (m / 2) : 1;
	for (size_t i = 0; i < o->n; i++) {
		mpc_share *st = o->st + i * LTZ_ST, *G = st + 1, *E = G + MPC_CMP_CHUNKS;
		const ring64_t *d = pub + 2 * per * i;
		const mpc_share *t = T + 3 * per * i;
		for (unsigned q = 0; q < m / 2; q++) {
			mpc_share g;
			beaver(p, &g, t, d[0], d[1]);
			mpc_add(p, &G[q], &G[2 * q + 1], &g, 1);
			t += 3;
			d += 2;
			if (m > 2) {
				beaver(p, &E[q], t, d[0], d[1]);
				t += 3;
				d += 2;
			}
		}
		if (m == 2) {
			/* G[0] is the borrow: LTZ = 1 - bit62(y) = 1 - lin + borrow */
			mpc_share bit;
			mpc_sub(p, &bit, &G[0], &st[0], 1);
			add_pub1(p, &bit, &bit, 1);
			G[0] = bit;
			if (o->bits)
				o->bits[i] = bit;
			if (!o->selw)
				o->out[i] = bit;
		}
	}
	o->nodes = m / 2;
	return ltz_push(b, o);
}

int mpc_batch_ltz(struct mpc_batch *b, mpc_share *out, const mpc_share *x, size_t n)
{
	return batch_ltz(b, out, NULL, x, n, 0, NULL, NULL);
}

int mpc_batch_max(struct mpc_batch *b, mpc_share *out, const mpc_share *x, const mpc_share *y,
		  size_t n)
{
	mpc_share *d = malloc((n ? n : 1) * sizeof *d);
	if (!d)
		return ERR_NOMEM;
	mpc_sub(b->p, d, x, y, n);
	int rc = batch_ltz(b, out, NULL, d, n, 1, y, x); /* x < y ? y : x */
	wipe_free(d, n * sizeof *d);
	return rc;
}

/* ---------------------------------------------------------------- digit look-up */

/* Table look-up on the 4-bit digits of a secret (docs/PROTOCOL.md, "exp"): for
 * t = x mod 2^(4J) and ntab public tables, each of 16 entries and attached to one
 * chunk j < J, outputs T_k(digit_j(t)) for every table k. Open c = x + r for a
 * comparison mask r (whose chunks come one-hot). Digit j of t is c_j - r_j - b_j mod
 * 16, b_j the borrow out of the lower chunks, [c mod 2^(4j) < r mod 2^(4j)]. All
 * borrows at once: the (G, E) pairs of the chunks (as in LTZ) under a Kogge-Stone
 * prefix, ceil(log2 (J - 1)) rounds. Then, with one-hot e of r_j,
 * A = T(c_j - r_j) = sum_v T(c_j - v) e_v and B = T(c_j - r_j - 1) are linear, and
 * T(digit_j) = A + b_j (B - A): one more round. Output k of element i is
 * out[i ntab + k]. */
#define DG_G(o, i) ((o)->st + (size_t)(i) * (2 * (o)->J + 2 * (o)->ntab))
#define DG_E(o, i) (DG_G(o, i) + (o)->J)
#define DG_A(o, i) (DG_G(o, i) + 2 * (o)->J)
#define DG_D(o, i) (DG_A(o, i) + (o)->ntab) /* B - A */

/* products of the prefix level at distance dist (E is needed while a level follows) */
static size_t dg_level_products(unsigned J, unsigned dist)
{
	unsigned last = J - 2; /* leaves 0..J-2 */
	if (dist > last)
		return 0;
	bool more = 2 * dist <= last;
	return (size_t)(last - dist + 1) * (more ? 2 : 1);
}

static size_t dg_selects(const struct op *o)
{
	size_t k = 0;
	for (unsigned t = 0; t < o->ntab; t++)
		k += o->tch[t] != 0;
	return k;
}

int batch_digits(struct mpc_batch *b, mpc_share *out, const mpc_share *x, size_t n, unsigned J,
		 unsigned ntab, const unsigned *tch, const ring64_t *tab)
{
	struct mpc *p = b->p;
	if (p->failed)
		return ERR_ABORTED;
	if (J < 2 || J > MPC_CMP_CHUNKS - 1 || ntab == 0)
		return ERR_INVALID;
	for (unsigned t = 0; t < ntab; t++)
		if (tch[t] >= J)
			return ERR_INVALID;
	struct op *o = batch_push(b, n);
	if (!o)
		return ERR_NOMEM;
	size_t nn = n ? n : 1;
	o->kind = OP_DIGIT;
	o->out = out;
	o->n = n;
	o->J = J;
	o->ntab = ntab;
	o->tch = malloc(ntab * sizeof *o->tch);
	o->tab = malloc(16 * ntab * sizeof *o->tab);
	if (!o->tch || !o->tab) {
		op_free(o);
		return ERR_NOMEM;
	}
	memcpy(o->tch, tch, ntab * sizeof *tch);
	memcpy(o->tab, tab, 16 * ntab * sizeof *tab);
	size_t per = dg_selects(o);
	for (unsigned d = 1; d <= J - 2; d *= 2)
		per += dg_level_products(J, d);
	size_t nt = n * per;
	o->nmat = 3 * nt;
	o->mat = malloc((nt ? 3 * nt : 1) * sizeof *o->mat);
	o->cm = malloc(nn * MPC_CMP_SHARES * sizeof *o->cm);
	o->ncm = nn * MPC_CMP_SHARES;
	o->nst = nn * (2 * J + 2 * ntab);
	o->st = malloc(o->nst * sizeof *o->st);
	int rc = 0;
	if (!o->mat || !o->cm || !o->st)
		rc = ERR_NOMEM;
	if (rc == 0)
		rc = queue_take(p, &p->cmp, 0, n, o->cm, NULL);
	if (rc == 0)
		rc = triples_take(p, nt, o->mat);
	if (rc != 0) {
		op_free(o);
		return rc;
	}
	p->st.triples += nt;
	p->st.cmps += n;
	mpc_share *c = b->opens + b->nopen;
	for (size_t i = 0; i < n; i++)
		mpc_add(p, &c[i], &x[i], &o->cm[i * MPC_CMP_SHARES], 1);
	b->nopen += n;
	batch_commit(b, o);
	return 0;
}

/* Queues the prefix level at o->dist, or the final selection. */
static int dg_push(struct mpc_batch *b, struct op *o)
{
	size_t per = dg_level_products(o->J, o->dist);
	bool select = per == 0;
	if (select)
		per = dg_selects(o);
	if (opens_reserve(b, 2 * per * o->n) != 0)
		return fail(b->p, ERR_NOMEM, "memory");
	o->tfirst = o->tpos;
	o->next_first = b->nopen;
	o->next_cnt = 2 * per * o->n;
	mpc_share *d = b->opens + b->nopen;
	unsigned last = o->J - 2;
	bool more = 2 * o->dist <= last;
	for (size_t i = 0; i < o->n; i++) {
		const mpc_share *G = DG_G(o, i), *E = DG_E(o, i), *D = DG_D(o, i);
		if (select) {
			for (unsigned t = 0; t < o->ntab; t++)
				if (o->tch[t]) {
					push_product(o, d, &G[o->tch[t] - 1], &D[t]);
					d += 2;
				}
			continue;
		}
		for (unsigned j = o->dist; j <= last; j++) {
			push_product(o, d, &E[j], &G[j - o->dist]);
			d += 2;
			if (more) {
				push_product(o, d, &E[j], &E[j - o->dist]);
				d += 2;
			}
		}
	}
	b->nopen += o->next_cnt;
	return 0;
}

static int finish_digits(struct mpc_batch *b, struct op *o, const ring64_t *pub)
{
	struct mpc *p = b->p;
	unsigned J = o->J, last = J - 2;
	if (o->cm) {
		/* c is open: the (G, E) leaves, and A, B - A of every table */
		for (size_t i = 0; i < o->n; i++) {
			ring64_t c = pub[i]; /* public: indexing by it is fine */
			const mpc_share *cm = o->cm + i * MPC_CMP_SHARES;
			mpc_share *G = DG_G(o, i), *E = DG_E(o, i), *A = DG_A(o, i), *D = DG_D(o, i);
			for (unsigned j = 0; j <= last; j++) {
				unsigned cj = (unsigned)(c >> (4 * j)) & 15;
				const mpc_share *e = cm + 3 + 16 * j;
				E[j] = e[cj];
				G[j] = (mpc_share){0, 0};
				for (unsigned v = cj + 1; v < 16; v++)
					mpc_add(p, &G[j], &G[j], &e[v], 1);
			}
			for (unsigned t = 0; t < o->ntab; t++) {
				unsigned j = o->tch[t], cj = (unsigned)(c >> (4 * j)) & 15;
				const mpc_share *e = cm + 3 + 16 * j;
				const ring64_t *T = o->tab + 16 * t;
				mpc_share a = {0, 0}, bb = {0, 0}, s;
				for (unsigned v = 0; v < 16; v++) {
					mpc_scale(p, &s, &e[v], T[(cj - v) & 15], 1);
					mpc_add(p, &a, &a, &s, 1);
					mpc_scale(p, &s, &e[v], T[(cj - v - 1) & 15], 1);
					mpc_add(p, &bb, &bb, &s, 1);
				}
				A[t] = a;
				mpc_sub(p, &D[t], &bb, &a, 1);
			}
		}
		wipe_free(o->cm, o->ncm * sizeof *o->cm);
		o->cm = NULL;
		o->ncm = 0;
		o->dist = dg_level_products(J, 1) ? 1 : 1u << 30;
		return dg_push(b, o);
	}
	const mpc_share *T = o->mat + 3 * o->tfirst;
	size_t per = dg_level_products(J, o->dist);
	if (per == 0) {
		/* the selection is done: out = A + b (B - A) */
		size_t ns = dg_selects(o);
		for (size_t i = 0; i < o->n; i++) {
			const mpc_share *A = DG_A(o, i);
			size_t q = i * ns;
			for (unsigned t = 0; t < o->ntab; t++) {
				mpc_share *y = &o->out[i * o->ntab + t];
				if (!o->tch[t]) {
					*y = A[t];
					continue;
				}
				beaver(p, y, T + 3 * q, pub[2 * q], pub[2 * q + 1]);
				mpc_add(p, y, y, &A[t], 1);
				q++;
			}
		}
		o->dist = 0;
		return 0;
	}
	bool more = 2 * o->dist <= last;
	for (size_t i = 0; i < o->n; i++) {
		mpc_share *G = DG_G(o, i), *E = DG_E(o, i);
		const ring64_t *d = pub + 2 * per * i;
		const mpc_share *t = T + 3 * per * i;
		/* the products were taken from the old values at push time; only G[j]
		 * itself is read here, so the order of the updates does not matter */
		for (unsigned j = o->dist; j <= last; j++) {
			mpc_share g;
			beaver(p, &g, t, d[0], d[1]);
			mpc_add(p, &G[j], &G[j], &g, 1);
			t += 3;
			d += 2;
			if (more) {
				beaver(p, &E[j], t, d[0], d[1]);
				t += 3;
				d += 2;
			}
		}
	}
	o->dist *= 2;
	if (dg_level_products(J, o->dist) == 0)
		o->dist = 1u << 30; /* past every level: the next finish is the selection */
	return dg_push(b, o);
}

/* ---------------------------------------------------------------- table look-up */

/* A one-time truth table (Ishai, Kushilevitz, Meldgaard, Orlandi,
 * Paskin-Cherniavsky, TCC 2013) on a secret V that lies in [0, 2^bits): the dealer's
 * mask r comes with the one-hot vector e of r mod 2^bits, c = V + r is opened, and
 * since V = (c - r) mod 2^bits exactly, T(V) = sum_v T((c - v) mod 2^bits) e_v is linear
 * in e: one round, any number of tables. Output k of element i is out[i ntab + k]. A V
 * outside [0, 2^bits) reads the table at V mod 2^bits. */
int batch_lut(struct mpc_batch *b, mpc_share *out, const mpc_share *x, size_t n, unsigned bits,
	      unsigned ntab, const ring64_t *tab)
{
	struct mpc *p = b->p;
	if (p->failed)
		return ERR_ABORTED;
	if (bits < 1 || bits > MPC_LUT_MAX_BITS || ntab == 0)
		return ERR_INVALID;
	size_t k = (1 + ((size_t)1 << bits)), nn = n ? n : 1;
	struct op *o = batch_push(b, n);
	if (!o)
		return ERR_NOMEM;
	o->kind = OP_LUT;
	o->out = out;
	o->n = n;
	o->m = bits;
	o->ntab = ntab;
	o->tab = malloc((ntab << bits) * sizeof *o->tab);
	o->cm = malloc(nn * k * sizeof *o->cm);
	o->ncm = nn * k;
	int rc = !o->tab || !o->cm ? ERR_NOMEM : queue_take(p, &p->lut[bits], bits, n, o->cm, NULL);
	if (rc != 0) {
		op_free(o);
		return rc;
	}
	memcpy(o->tab, tab, (ntab << bits) * sizeof *tab);
	p->st.luts += n;
	mpc_share *c = b->opens + b->nopen;
	for (size_t i = 0; i < n; i++)
		mpc_add(p, &c[i], &x[i], &o->cm[i * k], 1);
	b->nopen += n;
	batch_commit(b, o);
	return 0;
}

static void finish_lut(struct mpc *p, struct op *o, const ring64_t *pub)
{
	const size_t V = (size_t)1 << o->m, k = V + 1;
	for (size_t i = 0; i < o->n; i++) {
		const ring64_t c = pub[i]; /* public: indexing by it is fine */
		const mpc_share *e = o->cm + i * k + 1;
		for (unsigned t = 0; t < o->ntab; t++) {
			const ring64_t *T = o->tab + (size_t)t * V;
			mpc_share acc = {0, 0};
			for (size_t v = 0; v < V; v++) {
				ring64_t w = T[(c - v) & (V - 1)];
				acc.v += e[v].v * w;
				acc.m += e[v].m * w;
			}
			(void)p;
			o->out[i * o->ntab + t] = acc;
		}
	}
}

/* ---------------------------------------------------------------- leading digit */

/* Leading-digit look-up (docs/PROTOCOL.md, "Reciprocal and reciprocal square root"):
 * for x in [0, 16^J) and tables T_k,j (16 entries per chunk j and table k),
 *   out_k = sum_{j = jlo}^{J-1} [x < 16^(j+1)] T_k,j(d_j),
 * d_j the j-th 4-bit digit of x. With T_k,j(0) = 0 only the leading nonzero digit
 * contributes (every digit above it is 0), so this is a table of (position, value) of
 * the leading digit. As for the digit look-up of exp, c = x + r is opened for a
 * comparison mask r (one-hot chunks), the borrows B_j = [c mod 16^j < r mod 16^j] come
 * from a Kogge-Stone prefix over the chunks' (G, E), and T(d_j) = A + B_j (B - A). The
 * thermometer t_j = [x < 16^j] needs the high part floor(x / 16^j) = C_j - R_j - B_j
 * (mod 16^(J - j), C_j and R_j the high parts of c and r) to vanish, i.e.
 *   t_j = P_j + B_j (Q_j - P_j),  P_j = [R_j = C_j],  Q_j = [R_j = C_j - 1],
 * and both come from one suffix scan: (P_j, Q_j) = M_j (P_j+1, Q_j+1) with
 * M_j = [[a, 0], [z, 0]] (z = [r_j = c_j - 1]: the decrement stops at chunk j) or,
 * when c_j = 0 and the decrement borrows through, [[a, 0], [0, z]] (z = [r_j = 15]),
 * a = [r_j = c_j]; all linear in the one-hot chunk j of r. A product of such matrices
 * keeps the form (the second when every c of the block is 0), which c tells publicly,
 * so every composition in the Kogge-Stone suffix scan (run in the same rounds as the
 * prefix) costs 2 products.
 * Rounds: 1 (open) + the scans' levels + 1 (t and the tables) + 1 (t_j+1 T(d_j)). */
#define NM_G(o, i) ((o)->st + (size_t)(i) * nm_per(o))
#define NM_E(o, i) (NM_G(o, i) + (o)->J)
#define NM_SA(o, i) (NM_E(o, i) + (o)->J)
#define NM_SB(o, i) (NM_SA(o, i) + (o)->J)
#define NM_T(o, i) (NM_SB(o, i) + (o)->J)
#define NM_A(o, i) (NM_T(o, i) + (o)->J)  /* [k J + j] */
#define NM_D(o, i) (NM_A(o, i) + (size_t)(o)->ntab * (o)->J)

static size_t nm_per(const struct op *o) { return (size_t)5 * o->J + 2 * (size_t)o->ntab * o->J; }

/* Products of one scan level at distance d, per element: prefix (as the digit
 * look-up: leaves 0..J-2) and suffix (elements jlo+1..J-1, 2 products to compose two
 * blocks or to apply one to a vector). vec is updated when apply. */
static size_t nm_level(unsigned J, unsigned jlo, unsigned d, bool vec[], bool apply)
{
	size_t k = dg_level_products(J, d);
	bool nv[MPC_CMP_CHUNKS];
	memcpy(nv, vec, sizeof nv);
	for (unsigned i = jlo + 1; i + d <= J - 1; i++)
		if (!vec[i]) {
			k += 2;
			nv[i] = vec[i + d];
		}
	if (apply)
		memcpy(vec, nv, sizeof nv);
	return k;
}

static bool nm_more(unsigned J, unsigned jlo, unsigned d, const bool vec[])
{
	return dg_level_products(J, d) != 0 || (jlo + 1 <= J - 1 && !vec[jlo + 1]);
}

static void nm_vec_init(unsigned J, bool vec[])
{
	memset(vec, 0, MPC_CMP_CHUNKS * sizeof *vec);
	vec[J - 1] = true;
}

/* Triples per element: every level, then the selects, then the final products. */
static size_t nm_triples(unsigned J, unsigned jlo, unsigned ntab)
{
	bool vec[MPC_CMP_CHUNKS];
	size_t k = 0;
	nm_vec_init(J, vec);
	for (unsigned d = 1; nm_more(J, jlo, d, vec); d *= 2)
		k += nm_level(J, jlo, d, vec, true);
	k += (J - 1 - jlo) + (size_t)ntab * (J - (jlo ? jlo : 1)); /* t_i, B_j D */
	k += (size_t)ntab * (J - 1 - jlo);                          /* t_j+1 T(d_j) */
	return k;
}

int batch_norm(struct mpc_batch *b, mpc_share *out, const mpc_share *x, size_t n, unsigned J,
	       unsigned jlo, unsigned ntab, const ring64_t *tab)
{
	struct mpc *p = b->p;
	if (p->failed)
		return ERR_ABORTED;
	if (J < 2 || J > MPC_CMP_CHUNKS - 1 || jlo >= J || ntab == 0)
		return ERR_INVALID;
	struct op *o = batch_push(b, n);
	if (!o)
		return ERR_NOMEM;
	size_t nn = n ? n : 1;
	o->kind = OP_NORM;
	o->out = out;
	o->n = n;
	o->J = J;
	o->jlo = jlo;
	o->ntab = ntab;
	o->tab = malloc((size_t)16 * J * ntab * sizeof *o->tab);
	size_t nt = n * nm_triples(J, jlo, ntab);
	o->nmat = 3 * nt;
	o->mat = malloc((nt ? 3 * nt : 1) * sizeof *o->mat);
	o->cm = malloc(nn * MPC_CMP_SHARES * sizeof *o->cm);
	o->ncm = nn * MPC_CMP_SHARES;
	o->nst = nn * nm_per(o);
	o->st = malloc(o->nst * sizeof *o->st);
	o->zc = malloc(nn * J);
	int rc = 0;
	if (!o->tab || !o->mat || !o->cm || !o->st || !o->zc)
		rc = ERR_NOMEM;
	if (rc == 0)
		rc = queue_take(p, &p->cmp, 0, n, o->cm, NULL);
	if (rc == 0)
		rc = triples_take(p, nt, o->mat);
	if (rc != 0) {
		op_free(o);
		return rc;
	}
	memcpy(o->tab, tab, (size_t)16 * J * ntab * sizeof *tab);
	p->st.triples += nt;
	p->st.cmps += n;
	nm_vec_init(J, o->vec);
	mpc_share *c = b->opens + b->nopen;
	for (size_t i = 0; i < n; i++)
		mpc_add(p, &c[i], &x[i], &o->cm[i * MPC_CMP_SHARES], 1);
	b->nopen += n;
	batch_commit(b, o);
	return 0;
}

/* Queues the openings of the next stage: a scan level, the selects or the final
 * products. */
static int nm_push(struct mpc_batch *b, struct op *o)
{
	const unsigned J = o->J, jlo = o->jlo, last = J - 2;
	size_t per;
	if (o->stage == 1) {
		bool vec[MPC_CMP_CHUNKS];
		memcpy(vec, o->vec, sizeof vec);
		per = nm_level(J, jlo, o->dist, vec, false);
	} else if (o->stage == 2) {
		per = (J - 1 - jlo) + (size_t)o->ntab * (J - (jlo ? jlo : 1));
	} else {
		per = (size_t)o->ntab * (J - 1 - jlo);
	}
	if (per == 0)
		return 0;
	if (opens_reserve(b, 2 * per * o->n) != 0)
		return fail(b->p, ERR_NOMEM, "memory");
	o->tfirst = o->tpos;
	o->next_first = b->nopen;
	o->next_cnt = 2 * per * o->n;
	mpc_share *d = b->opens + b->nopen;
	const unsigned dist = o->dist;
	for (size_t i = 0; i < o->n; i++) {
		mpc_share *G = NM_G(o, i), *E = NM_E(o, i), *SA = NM_SA(o, i), *SB = NM_SB(o, i);
		mpc_share *T = NM_T(o, i), *A = NM_A(o, i), *D = NM_D(o, i);
		if (o->stage == 1) {
			bool more = 2 * dist <= last;
			for (unsigned j = dist; j <= last && dg_level_products(J, dist); j++) {
				push_product(o, d, &E[j], &G[j - dist]);
				d += 2;
				if (more) {
					push_product(o, d, &E[j], &E[j - dist]);
					d += 2;
				}
			}
			const uint8_t *zc = o->zc + i * J;
			for (unsigned q = jlo + 1; q + dist <= J - 1; q++) {
				if (o->vec[q])
					continue;
				unsigned r = q + dist;
				/* [[a,0],[z,0]] (a',z') = (a a', z a'); [[a,0],[0,z]] (a',z') =
				 * (a a', z z'), for a vector (p, q) as for a block */
				push_product(o, d, &SA[q], &SA[r]);
				push_product(o, d + 2, &SB[q], zc[q] ? &SB[r] : &SA[r]);
				d += 4;
			}
		} else if (o->stage == 2) {
			for (unsigned q = jlo + 1; q <= J - 1; q++) {
				mpc_share qp;
				mpc_sub(NULL, &qp, &SB[q], &SA[q], 1); /* Q - P */
				push_product(o, d, &G[q - 1], &qp);
				d += 2;
				T[q] = SA[q]; /* P, the product is added */
			}
			for (unsigned k = 0; k < o->ntab; k++)
				for (unsigned j = jlo ? jlo : 1; j <= J - 1; j++) {
					push_product(o, d, &G[j - 1], &D[k * J + j]);
					d += 2;
				}
		} else {
			for (unsigned k = 0; k < o->ntab; k++)
				for (unsigned j = jlo; j <= J - 2; j++) {
					push_product(o, d, &T[j + 1], &A[k * J + j]);
					d += 2;
				}
		}
	}
	b->nopen += o->next_cnt;
	return 0;
}

static int finish_norm(struct mpc_batch *b, struct op *o, const ring64_t *pub)
{
	struct mpc *p = b->p;
	const unsigned J = o->J, jlo = o->jlo, last = J - 2;
	if (o->stage == 0) {
		/* c is open (public: branching and indexing on it is fine) */
		for (size_t i = 0; i < o->n; i++) {
			ring64_t c = pub[i];
			const mpc_share *cm = o->cm + i * MPC_CMP_SHARES;
			mpc_share *G = NM_G(o, i), *E = NM_E(o, i), *SA = NM_SA(o, i), *SB = NM_SB(o, i);
			mpc_share *A = NM_A(o, i), *D = NM_D(o, i);
			for (unsigned j = 0; j < J; j++) {
				unsigned cj = (unsigned)(c >> (4 * j)) & 15;
				const mpc_share *e = cm + 3 + 16 * j;
				const mpc_share zero = {0, 0};
				if (j <= last) {
					E[j] = e[cj];
					G[j] = zero;
					for (unsigned v = cj + 1; v < 16; v++)
						mpc_add(p, &G[j], &G[j], &e[v], 1);
				}
				if (j > jlo) {
					/* M_j: a = [r_j = c_j]; z = [r_j = c_j - 1] in column 1, or
					 * when c_j = 0 (the decrement borrows through) [r_j = 15] in
					 * column 2; at the top, applied to (1, 1): (P, Q) = (a, z) */
					SA[j] = e[cj];
					SB[j] = cj ? e[cj - 1] : e[15];
					o->zc[i * J + j] = cj == 0;
				}
				if (j < jlo)
					continue;
				for (unsigned k = 0; k < o->ntab; k++) {
					const ring64_t *Tk = o->tab + ((size_t)k * J + j) * 16;
					mpc_share a = zero, bb = zero, s;
					for (unsigned v = 0; v < 16; v++) {
						mpc_scale(p, &s, &e[v], Tk[(cj - v) & 15], 1);
						mpc_add(p, &a, &a, &s, 1);
						mpc_scale(p, &s, &e[v], Tk[(cj - v - 1) & 15], 1);
						mpc_add(p, &bb, &bb, &s, 1);
					}
					A[k * J + j] = a;
					mpc_sub(p, &D[k * J + j], &bb, &a, 1);
				}
			}
		}
		wipe_free(o->cm, o->ncm * sizeof *o->cm);
		o->cm = NULL;
		o->ncm = 0;
		o->dist = 1;
		o->stage = nm_more(J, jlo, 1, o->vec) ? 1 : 2;
		return nm_push(b, o);
	}
	const mpc_share *Tr = o->mat + 3 * o->tfirst;
	if (o->stage == 1) {
		const unsigned dist = o->dist;
		bool more = 2 * dist <= last;
		bool vec[MPC_CMP_CHUNKS];
		memcpy(vec, o->vec, sizeof vec);
		size_t per = nm_level(J, jlo, dist, vec, false);
		for (size_t i = 0; i < o->n; i++) {
			mpc_share *G = NM_G(o, i), *E = NM_E(o, i), *SA = NM_SA(o, i), *SB = NM_SB(o, i);
			const ring64_t *d = pub + 2 * per * i;
			const mpc_share *t = Tr + 3 * per * i;
			mpc_share x1;
			/* the products were taken from the old values at push time; each
			 * update below only writes the element it reads as a product */
			for (unsigned j = dist; j <= last && dg_level_products(J, dist); j++) {
				beaver(p, &x1, t, d[0], d[1]);
				mpc_add(p, &G[j], &G[j], &x1, 1);
				t += 3;
				d += 2;
				if (more) {
					beaver(p, &E[j], t, d[0], d[1]);
					t += 3;
					d += 2;
				}
			}
			uint8_t *zc = o->zc + i * J;
			for (unsigned q = jlo + 1; q + dist <= J - 1; q++) {
				if (o->vec[q])
					continue;
				unsigned r = q + dist;
				beaver(p, &SA[q], t, d[0], d[1]);
				beaver(p, &SB[q], t + 3, d[2], d[3]);
				t += 6;
				d += 4;
				/* the block keeps column 1 if it stops the decrement itself */
				if (zc[q] && !o->vec[r])
					zc[q] = zc[r];
			}
		}
		nm_level(J, jlo, dist, o->vec, true);
		o->dist *= 2;
		if (!nm_more(J, jlo, o->dist, o->vec))
			o->stage = 2;
		return nm_push(b, o);
	}
	if (o->stage == 2) {
		size_t per = (J - 1 - jlo) + (size_t)o->ntab * (J - (jlo ? jlo : 1));
		for (size_t i = 0; i < o->n; i++) {
			mpc_share *T = NM_T(o, i), *A = NM_A(o, i);
			const ring64_t *d = pub + 2 * per * i;
			const mpc_share *t = Tr + 3 * per * i;
			mpc_share x1;
			for (unsigned q = jlo + 1; q <= J - 1; q++, t += 3, d += 2) {
				beaver(p, &x1, t, d[0], d[1]);
				mpc_add(p, &T[q], &T[q], &x1, 1); /* t_q = P + B (Q - P) */
			}
			/* the table values T_k(d_j) = A + B_j (B - A) replace A */
			for (unsigned k = 0; k < o->ntab; k++)
				for (unsigned j = jlo ? jlo : 1; j <= J - 1; j++, t += 3, d += 2) {
					beaver(p, &x1, t, d[0], d[1]);
					mpc_add(p, &A[k * J + j], &A[k * J + j], &x1, 1);
				}
		}
		o->stage = 3;
		if (J - 1 - jlo == 0)
			goto out; /* only the top chunk: nothing to select */
		return nm_push(b, o);
	}
out:;
	/* final: out_k = sum_j t_j+1 T_k(d_j) + T_k(d_J-1) */
	size_t per = (size_t)o->ntab * (J - 1 - jlo);
	for (size_t i = 0; i < o->n; i++) {
		const mpc_share *A = NM_A(o, i);
		const ring64_t *d = pub + 2 * per * i;
		const mpc_share *t = Tr + 3 * per * i;
		for (unsigned k = 0; k < o->ntab; k++) {
			mpc_share acc = A[k * J + J - 1], x1;
			for (unsigned j = jlo; j <= J - 2; j++, t += 3, d += 2) {
				beaver(p, &x1, t, d[0], d[1]);
				mpc_add(p, &acc, &acc, &x1, 1);
			}
			o->out[i * o->ntab + k] = acc;
		}
	}
	o->stage = 4;
	return 0;
}

/* ---------------------------------------------------------------- compound operations */

/* Runs every compound whose stage has nothing left in flight, until none has:
 * a stage queues children (so it waits again, unless they had nothing to do and
 * finished at once) or finishes the compound (which may complete the stage of the
 * compound above it). Every compound's program is finite, so this ends. */
static int batch_settle(struct mpc_batch *b)
{
	struct mpc *p = b->p;
	bool again = true;
	while (again) {
		again = false;
		for (size_t i = 0; i < b->nops; i++) {
			struct op *o = &b->ops[i];
			if (o->kind != OP_COMPOUND || o->done || o->cop->pending)
				continue;
			struct cop *c = o->cop;
			size_t saved = b->cur_parent;
			b->cur_parent = i + 1;
			int rc = c->step(b, c);
			b->cur_parent = saved;
			if (rc != 0)
				return p->failed ? rc : fail(p, rc, rc == ERR_NOMEM ? "memory" : "internal");
			if (c->done)
				op_done(b, i);
			again = true;
		}
	}
	return 0;
}

int batch_compound(struct mpc_batch *b, struct cop *c)
{
	struct mpc *p = b->p;
	if (p->failed) {
		c->free(c);
		return ERR_ABORTED;
	}
	struct op *o = batch_push(b, 0);
	if (!o) {
		c->free(c);
		return ERR_NOMEM;
	}
	o->kind = OP_COMPOUND;
	o->cop = c;
	size_t self = b->nops;
	batch_commit(b, o);
	size_t saved = b->cur_parent;
	b->cur_parent = self + 1;
	int rc = c->step(b, c);
	b->cur_parent = saved;
	if (rc != 0) /* some children may be queued already: nothing can be undone */
		return p->failed ? rc : fail(p, rc, rc == ERR_NOMEM ? "memory" : "internal");
	if (c->done)
		op_done(b, self);
	return 0;
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
	rc = open_shares(p, d, n, fm->e);
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
	batch_commit(b, o);
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
	int rc = 0;
	if (p->failed) {
		batch_clear(b);
		return ERR_ABORTED;
	}
	rc = batch_settle(b);
	while (rc == 0 && b->nopen > 0) {
		/* batches never nest (no step runs a batch), so one scratch serves them all */
		ring64_t *pub = scratch(p, &p->pub, b->nopen * sizeof *pub);
		if (!pub) {
			rc = ERR_NOMEM;
			break;
		}
		rc = open_shares(p, b->opens, b->nopen, pub);
		b->nopen = 0; /* the opened shares are consumed: the buffer takes the next round */
		/* finishing a step queues openings, never operations: the array is stable */
		for (size_t i = 0; rc == 0 && i < b->nops; i++) {
			struct op *o = &b->ops[i];
			if (!o->cnt)
				continue;
			o->next_cnt = 0;
			const ring64_t *q = pub + o->first;
			switch (o->kind) {
			case OP_MUL:
				finish_mul(p, o, q);
				break;
			case OP_TRUNC:
				finish_trunc(p, o, q);
				break;
			case OP_FMUL:
				finish_fmul(p, o, q);
				break;
			case OP_LTZ:
				rc = finish_ltz(b, o, q);
				break;
			case OP_DIGIT:
				rc = finish_digits(b, o, q);
				break;
			case OP_LUT:
				finish_lut(p, o, q);
				break;
			case OP_NORM:
				rc = finish_norm(b, o, q);
				break;
			case OP_XOP:
				rc = o->xop->finish(b, o->xop, q);
				break;
			default:
				rc = fail(p, ERR_INTERNAL, "internal");
				break;
			}
			o->first = o->next_first;
			o->cnt = o->next_cnt;
			if (rc == 0 && o->cnt == 0)
				op_done(b, i);
		}
		if (rc == 0)
			rc = batch_settle(b); /* stages whose children all finished queue the next */
	}
	/* nothing left to open: every operation must have written its output */
	for (size_t i = 0; rc == 0 && i < b->nops; i++)
		if (!b->ops[i].done && b->ops[i].kind == OP_COMPOUND)
			rc = fail(p, ERR_INTERNAL, "internal");
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

int mpc_select(struct mpc *p, mpc_share *out, const mpc_share *bit, const mpc_share *x,
	       const mpc_share *y, size_t n)
{
	struct mpc_batch *b;
	int rc = mpc_batch_new(p, &b);
	if (rc != 0)
		return rc;
	if ((rc = mpc_batch_select(b, out, bit, x, y, n)) == 0)
		rc = mpc_batch_run(b);
	mpc_batch_free(b);
	return rc;
}

int mpc_ltz(struct mpc *p, mpc_share *out, const mpc_share *x, size_t n)
{
	struct mpc_batch *b;
	int rc = mpc_batch_new(p, &b);
	if (rc != 0)
		return rc;
	if ((rc = mpc_batch_ltz(b, out, x, n)) == 0)
		rc = mpc_batch_run(b);
	mpc_batch_free(b);
	return rc;
}

/* ---------------------------------------------------------------- max and argmax */

#define MAX_LAYERS 64

/* The tournament: layer by layer, element 2t meets 2t + 1 (an odd last element goes
 * up unopposed); the bit LTZ(lo - hi) selects the winner's value and, with track,
 * its index in the same round. bits[l] keeps layer l's bits for the backward pass. */
static int tournament(struct mpc *p, mpc_share *v, mpc_share *ix, size_t m, size_t n,
		      mpc_share *bits[], size_t cnts[], unsigned *nlayers)
{
	unsigned w = ix ? 2 : 1, L = 0;
	size_t cnt = n;
	mpc_share *sx = NULL, *sy = NULL, *dif = NULL, *res = NULL;
	int rc = 0;
	size_t cap = m * (n / 2 + 1);
	sx = malloc(cap * w * sizeof *sx);
	sy = malloc(cap * w * sizeof *sy);
	dif = malloc(cap * sizeof *dif);
	res = malloc(cap * w * sizeof *res);
	if (!sx || !sy || !dif || !res) {
		rc = ERR_NOMEM;
		goto out;
	}
	while (cnt > 1) {
		size_t pairs = cnt / 2, next = pairs + cnt % 2, e = 0;
		cnts[L] = cnt;
		if (bits && !(bits[L] = malloc(m * pairs * sizeof *bits[L]))) {
			rc = ERR_NOMEM;
			goto out;
		}
		for (size_t r = 0; r < m; r++)
			for (size_t t = 0; t < pairs; t++, e++) {
				const mpc_share *lo = v + r * n + 2 * t, *hi = lo + 1;
				mpc_sub(p, &dif[e], lo, hi, 1);
				sx[w * e] = *hi; /* lo < hi: hi wins */
				sy[w * e] = *lo;
				if (ix) {
					sx[w * e + 1] = ix[r * n + 2 * t + 1];
					sy[w * e + 1] = ix[r * n + 2 * t];
				}
			}
		struct mpc_batch *b;
		if ((rc = mpc_batch_new(p, &b)) != 0)
			goto out;
		rc = batch_ltz(b, res, bits ? bits[L] : NULL, dif, m * pairs, w, sx, sy);
		if (rc == 0)
			rc = mpc_batch_run(b);
		mpc_batch_free(b);
		if (rc != 0)
			goto out;
		/* compact in place: row r keeps its first `next` slots */
		for (size_t r = 0; r < m; r++) {
			mpc_share carry = v[r * n + cnt - 1], carryi = ix ? ix[r * n + cnt - 1] : carry;
			for (size_t t = 0; t < pairs; t++) {
				v[r * n + t] = res[w * (r * pairs + t)];
				if (ix)
					ix[r * n + t] = res[w * (r * pairs + t) + 1];
			}
			if (cnt % 2) {
				v[r * n + pairs] = carry;
				if (ix)
					ix[r * n + pairs] = carryi;
			}
		}
		cnt = next;
		if (++L >= MAX_LAYERS) {
			rc = ERR_INTERNAL;
			goto out;
		}
	}
	*nlayers = L;
out:
	wipe_free(sx, cap * w * sizeof *sx);
	wipe_free(sy, cap * w * sizeof *sy);
	wipe_free(dif, cap * sizeof *dif);
	wipe_free(res, cap * w * sizeof *res);
	return rc;
}

static int reduce_check(struct mpc *p, const mpc_share *x, size_t m, size_t n)
{
	if (p->failed)
		return ERR_ABORTED;
	if (!x || m == 0 || n == 0 || m > SIZE_MAX / n / 4)
		return ERR_INVALID;
	return 0;
}

int mpc_max(struct mpc *p, mpc_share *out, const mpc_share *x, size_t m, size_t n)
{
	int rc = reduce_check(p, x, m, n);
	if (rc != 0)
		return rc;
	mpc_share *v = malloc(m * n * sizeof *v);
	size_t cnts[MAX_LAYERS];
	unsigned L = 0;
	if (!v)
		return ERR_NOMEM;
	memcpy(v, x, m * n * sizeof *v);
	if ((rc = tournament(p, v, NULL, m, n, NULL, cnts, &L)) == 0)
		for (size_t r = 0; r < m; r++)
			out[r] = v[r * n];
	wipe_free(v, m * n * sizeof *v);
	return rc;
}

int mpc_argmax(struct mpc *p, mpc_share *max, mpc_share *idx, mpc_share *onehot,
	       const mpc_share *x, size_t m, size_t n)
{
	int rc = reduce_check(p, x, m, n);
	if (rc != 0)
		return rc;
	mpc_share *v = malloc(m * n * sizeof *v), *ix = NULL, *f = NULL, *g = NULL;
	mpc_share *bits[MAX_LAYERS] = {0};
	size_t cnts[MAX_LAYERS];
	unsigned L = 0;
	struct mpc_batch *b = NULL;
	if (!v || (idx && !(ix = malloc(m * n * sizeof *ix)))) {
		rc = ERR_NOMEM;
		goto out;
	}
	memcpy(v, x, m * n * sizeof *v);
	for (size_t r = 0; idx && r < m; r++)
		for (size_t j = 0; j < n; j++)
			mpc_constant(p, &ix[r * n + j], (ring64_t)j, 1);
	if ((rc = tournament(p, v, ix, m, n, onehot ? bits : NULL, cnts, &L)) != 0)
		goto out;
	for (size_t r = 0; r < m; r++) {
		if (max)
			max[r] = v[r * n];
		if (idx)
			idx[r] = ix[r * n];
	}
	if (!onehot)
		goto out;
	/* backward pass: the root's flag is 1; a node with flag f and bit b hands f b to
	 * its upper child and f - f b to its lower one; an unopposed element keeps f */
	f = malloc(m * n * sizeof *f);
	g = malloc(m * n * sizeof *g);
	if (!f || !g) {
		rc = ERR_NOMEM;
		goto out;
	}
	for (size_t r = 0; r < m; r++)
		mpc_constant(p, &f[r * n], 1, 1);
	for (unsigned l = L; l-- > 0;) {
		size_t cnt = cnts[l], pairs = cnt / 2, np = pairs + cnt % 2;
		mpc_share *fp = malloc(m * pairs * sizeof *fp), *hi = malloc(m * pairs * sizeof *hi);
		if (!fp || !hi) {
			free(fp);
			free(hi);
			rc = ERR_NOMEM;
			goto out;
		}
		for (size_t r = 0; r < m; r++)
			for (size_t t = 0; t < pairs; t++)
				fp[r * pairs + t] = f[r * n + t];
		if ((rc = mpc_mul(p, hi, fp, bits[l], m * pairs)) == 0) {
			for (size_t r = 0; r < m; r++) {
				for (size_t t = 0; t < pairs; t++) {
					g[r * n + 2 * t + 1] = hi[r * pairs + t];
					mpc_sub(p, &g[r * n + 2 * t], &fp[r * pairs + t], &hi[r * pairs + t], 1);
				}
				if (cnt % 2)
					g[r * n + cnt - 1] = f[r * n + np - 1];
			}
			mpc_share *tmp = f;
			f = g;
			g = tmp;
		}
		wipe_free(fp, m * pairs * sizeof *fp);
		wipe_free(hi, m * pairs * sizeof *hi);
		if (rc != 0)
			goto out;
	}
	memcpy(onehot, f, m * n * sizeof *f);
out:
	mpc_batch_free(b);
	for (unsigned l = 0; l < MAX_LAYERS; l++)
		if (bits[l])
			wipe_free(bits[l], m * (cnts[l] / 2) * sizeof *bits[l]);
	wipe_free(v, m * n * sizeof *v);
	wipe_free(ix, idx ? m * n * sizeof *ix : 0);
	wipe_free(f, m * n * sizeof *f);
	wipe_free(g, m * n * sizeof *g);
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
	queue_init(&p->cmp, MPC_PREP_CMP, 0, seed);
	for (unsigned j = 0; j < p->n; j++)
		queue_init(&p->input[j], MPC_PREP_INPUT, j, seed);
	for (unsigned m = 1; m <= 62; m++) {
		queue_init(&p->trunc[m], MPC_PREP_TRUNC, m, seed);
		p->trunc[m].batch = p->prep_batch;
	}
	/* a comparison mask is 259 shares and a look-up mask 1 + 2^b: their batches are
	 * smaller, so that a pool holds about as many bytes as the other kinds' */
	p->rand.batch = p->prep_batch;
	for (unsigned j = 0; j < p->n; j++)
		p->input[j].batch = p->prep_batch;
	p->cmp.batch = p->prep_batch / 32 ? p->prep_batch / 32 : 1;
	for (unsigned b = 1; b <= MPC_LUT_MAX_BITS; b++) {
		queue_init(&p->lut[b], MPC_PREP_LUT, b, seed);
		uint32_t lb = p->prep_batch >> (b > 3 ? b - 3 : 0);
		if (lb > PREP_MAX_BATCH >> b)
			lb = PREP_MAX_BATCH >> b;
		p->lut[b].batch = lb ? lb : 1;
	}
	prg_init(&p->prg_mmask, seed, MPC_PREP_MMASK);
	prg_init(&p->prg_mmul, seed, MPC_PREP_MMUL);
	prg_init(&p->prg_triple, seed, MPC_PREP_TRIPLE);
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
	queue_wipe(&p->cmp);
	for (unsigned m = 1; m <= 62; m++)
		queue_wipe(&p->trunc[m]);
	for (unsigned b = 1; b <= MPC_LUT_MAX_BITS; b++)
		queue_wipe(&p->lut[b]);
	for (unsigned j = 0; j < p->n; j++)
		queue_wipe(&p->input[j]);
	prg_wipe(&p->prg_mmask);
	prg_wipe(&p->prg_mmul);
	prg_wipe(&p->prg_triple);
	mmul_state_free(p->mmul);
	if (p->triples) {
		sodium_memzero(p->triples, 3 * p->tri_cap * sizeof *p->triples);
		free(p->triples);
	}
	/* only as far as the logs were ever filled: the rest of their capacity was
	 * never touched, and wiping it would fault it in */
	size_t lw = p->log.n > p->log.hw ? p->log.n : p->log.hw;
	size_t ww = p->wlog.n > p->wlog.hw ? p->wlog.n : p->wlog.hw;
	if (p->log.m)
		sodium_memzero(p->log.m, lw * sizeof *p->log.m);
	if (p->log.up)
		sodium_memzero(p->log.up, lw * sizeof *p->log.up);
	free(p->log.s);
	free(p->log.m);
	free(p->log.up);
	if (p->wlog.m)
		sodium_memzero(p->wlog.m, ww * sizeof *p->wlog.m);
	if (p->wlog.up)
		sodium_memzero(p->wlog.up, ww * sizeof *p->wlog.up);
	free(p->wlog.s);
	free(p->wlog.m);
	free(p->wlog.up);
	if (p->sbuf) {
		sodium_memzero(p->sbuf, p->scap);
		free(p->sbuf);
	}
	if (p->rbuf) {
		sodium_memzero(p->rbuf, p->rcap);
		free(p->rbuf);
	}
	scratch_free(&p->chi);
	scratch_free(&p->t_raw);
	scratch_free(&p->t_open);
	scratch_free(&p->t_pub);
	scratch_free(&p->t_coef);
	scratch_free(&p->pub);
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

/* ---------------------------------------------------------------- hooks for mmul.c */

int batch_xop(struct mpc_batch *b, struct xop *x, const mpc_share *open, size_t nopen)
{
	if (b->p->failed) {
		x->free(x);
		return ERR_ABORTED;
	}
	struct op *o = batch_push(b, nopen);
	if (!o) {
		x->free(x);
		return ERR_NOMEM;
	}
	o->kind = OP_XOP;
	o->xop = x;
	memcpy(b->opens + b->nopen, open, nopen * sizeof *open);
	b->nopen += nopen;
	batch_commit(b, o);
	return 0;
}

struct mmul_state **engine_mmul(struct mpc *p) { return &p->mmul; }
const uint8_t *engine_seed(const struct mpc *p) { return p->seed; }
bool engine_sacrifice(const struct mpc *p) { return p->sacrifice; }
struct mpc_stats *engine_stats(struct mpc *p) { return &p->st; }
int engine_fail(struct mpc *p, int rc, const char *check) { return fail(p, rc, check); }

int engine_fetch(struct mpc *p, const struct mpc_prep_req *req, uint8_t **payload, size_t *len)
{
	*payload = NULL;
	*len = 0;
	if (!mpc_prep_needs_payload(p->me, req))
		return 0;
	int rc = p->src.fetch(p->src.ctx, p->me, req, payload, len);
	if (rc != 0)
		return fail(p, rc, "preprocessing");
	p->st.prep_bytes_in += *len;
	return 0;
}

int engine_toss(struct mpc *p, uint8_t *out, size_t len) { return coins(p, out, len); }

int engine_open_wide(struct mpc *p, const mpc_wshare *a, size_t n, ring128_t *out)
{
	return open_wide(p, a, n, out);
}
