/* clientio_party: the parties' side of the client protocols, on the engine's public API.
 *
 * Masks are made by every party inputting random values (mpc_input, one round per
 * owner) and summing them, so no party and not the dealer knows a mask; one spare mask
 * is then revealed so that the MAC check, with its comparison of broadcast views, covers
 * those inputs before any share leaves a party. The client's check combinations are
 * opened with mpc_reveal and each output with mpc_reveal of y + r: the engine writes a
 * revealed value only after the MAC check over everything opened so far has passed, so
 * every byte a party seals to the client is covered by a passed check. Masks are used
 * once and wiped after use. */
#include "clientio/clientio_int.h"

#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <sodium.h>

#include "err/err.h"

_Static_assert(CIO_CLIENT_SENDER >= MPC_MAX_PARTIES, "client sender is not a party");

#define MAX_FAULTS 4

enum state { ST_NEW, ST_MASKED, ST_READY, ST_DEAD };

struct cio_party {
	struct mpc *p;
	struct mpc_net *net;
	unsigned me, n;
	struct cio_expect e;
	uint8_t client_pk[CIO_KEY_BYTES];
	uint8_t key[CIO_TAG_BYTES];
	enum state st;
	/* n_in input masks, n_out output masks, CIO_CHECKS blinders, one spare */
	mpc_share *mask;
	size_t nmask;
	uint32_t out_next;
	struct {
		enum cio_fault kind;
		uint64_t index, delta;
	} fault[MAX_FAULTS];
	unsigned nfault;
	uint8_t seed[CIO_SEED_BYTES]; /* the client's, kept only for the adaptive fault */
	char why[CIO_WHY_BYTES];
};

__attribute__((format(printf, 3, 4))) static int refuse(struct cio_party *cp, int rc,
							 const char *fmt, ...)
{
	va_list ap;
	va_start(ap, fmt);
	vsnprintf(cp->why, sizeof cp->why, fmt, ap);
	va_end(ap);
	cp->st = ST_DEAD;
	if (cp->net)
		mpc_net_abort(cp->net);
	return rc;
}

/* The engine failed: it has already aborted the transport. */
static int engine_failed(struct cio_party *cp, int rc, const char *step)
{
	const char *chk = mpc_failed_check(cp->p);
	snprintf(cp->why, sizeof cp->why, "%s: engine failed (%s)", step, chk ? chk : err_slug(rc));
	cp->st = ST_DEAD;
	return rc;
}

int cio_party_new(struct mpc *p, struct mpc_net *net, const struct cio_party_params *prm,
		  struct cio_party **out)
{
	if (!p || !prm || !out)
		return ERR_INVALID;
	*out = NULL;
	uint64_t m = cio_nmasked(prm->n_in, prm->n_out);
	if (m == 0 || m > CIO_MAX_VALUES || sodium_init() < 0)
		return ERR_INVALID;
	struct cio_party *cp = calloc(1, sizeof *cp);
	if (!cp)
		return ERR_NOMEM;
	uint8_t sk[CIO_KEY_BYTES], pk[CIO_KEY_BYTES];
	int rc = 0;
	cp->p = p;
	cp->net = net;
	cp->me = mpc_party(p);
	cp->n = mpc_nparties(p);
	memcpy(cp->e.session, prm->session, CIO_ID_BYTES);
	memcpy(cp->e.generation, prm->generation, CIO_ID_BYTES);
	cp->e.nparties = cp->n;
	cp->e.n_in = prm->n_in;
	cp->e.n_out = prm->n_out;
	memcpy(cp->client_pk, prm->client_pk, CIO_KEY_BYTES);
	memcpy(sk, prm->party_sk, CIO_KEY_BYTES);
	if (crypto_scalarmult_base(pk, sk) != 0 ||
	    (rc = cio_auth_key(sk, cp->client_pk, cp->client_pk, pk, cp->key)) != 0) {
		rc = ERR_INVALID; /* a client key of low order */
		goto out;
	}
	cp->nmask = m + CIO_CHECKS + 1;
	if (!(cp->mask = calloc(cp->nmask, sizeof *cp->mask))) {
		rc = ERR_NOMEM;
		goto out;
	}
	cp->st = ST_NEW;
out:
	sodium_memzero(sk, sizeof sk);
	if (rc != 0) {
		cio_party_free(cp);
		cp = NULL;
	}
	*out = cp;
	return rc;
}

void cio_party_free(struct cio_party *cp)
{
	if (!cp)
		return;
	if (cp->mask) {
		sodium_memzero(cp->mask, cp->nmask * sizeof *cp->mask);
		free(cp->mask);
	}
	sodium_memzero(cp, sizeof *cp);
	free(cp);
}

const char *cio_party_why(const struct cio_party *cp)
{
	return cp && cp->why[0] ? cp->why : NULL;
}

int cio_party_inject(struct cio_party *cp, enum cio_fault kind, uint64_t index, uint64_t delta)
{
	if (!cp || cp->nfault == MAX_FAULTS || kind < CIO_FAULT_MASK || kind > CIO_FAULT_OUTPUT)
		return ERR_INVALID;
	cp->fault[cp->nfault].kind = kind;
	cp->fault[cp->nfault].index = index;
	cp->fault[cp->nfault].delta = delta;
	cp->nfault++;
	return 0;
}

/* header, optional prefix (the receipt's digest), values, tag; sealed to the client. The
 * plaintext holds shares, so it is wiped. */
static int seal_msg(struct cio_party *cp, uint8_t type, uint64_t seq, const uint8_t *pre,
		    size_t pre_len, const ring64_t *vals, uint32_t count, uint8_t **msg,
		    size_t *len)
{
	struct cio_hdr h = {.version = CIO_VERSION,
			    .type = type,
			    .sender = (uint8_t)cp->me,
			    .nparties = (uint8_t)cp->n,
			    .checks = CIO_CHECKS,
			    .count = count,
			    .n_in = cp->e.n_in,
			    .n_out = cp->e.n_out,
			    .seq = seq};
	memcpy(h.session, cp->e.session, CIO_ID_BYTES);
	memcpy(h.generation, cp->e.generation, CIO_ID_BYTES);
	size_t auth = CIO_HDR_BYTES + pre_len + 8 * (size_t)count;
	uint8_t *plain = malloc(auth + CIO_TAG_BYTES);
	if (!plain)
		return ERR_NOMEM;
	cio_hdr_write(plain, &h);
	if (pre_len)
		memcpy(plain + CIO_HDR_BYTES, pre, pre_len);
	for (uint32_t i = 0; i < count; i++)
		ring64_store(plain + CIO_HDR_BYTES + pre_len + 8 * (size_t)i, vals[i]);
	cio_tag(plain + auth, cp->key, plain, auth);
	int rc = cio_seal(plain, auth + CIO_TAG_BYTES, cp->client_pk, msg, len);
	sodium_memzero(plain, auth + CIO_TAG_BYTES);
	free(plain);
	return rc;
}

static void add_faults(struct cio_party *cp, enum cio_fault kind, uint64_t from, ring64_t *v,
		       size_t n)
{
	for (unsigned f = 0; f < cp->nfault; f++)
		if (cp->fault[f].kind == kind && cp->fault[f].index >= from &&
		    cp->fault[f].index - from < n)
			v[cp->fault[f].index - from] += cp->fault[f].delta;
}

/* Every party inputs nmask random values; the masks are the sums. Then the spare mask
 * is revealed, which runs the MAC check and compares every party's view of the input
 * broadcasts (a party that sent different corrections to different peers is caught
 * here, before a share leaves). */
static int make_masks(struct cio_party *cp)
{
	size_t n = cp->nmask;
	ring64_t *mine = malloc(n * sizeof *mine);
	mpc_share *tmp = malloc(n * sizeof *tmp);
	int rc = 0;
	if (!mine || !tmp) {
		rc = refuse(cp, ERR_NOMEM, "masks: out of memory");
		goto out;
	}
	randombytes_buf(mine, n * sizeof *mine);
	memset(cp->mask, 0, n * sizeof *cp->mask);
	for (unsigned owner = 0; owner < cp->n; owner++) {
		if ((rc = mpc_input(cp->p, owner, owner == cp->me ? mine : NULL, tmp, n)) != 0) {
			rc = engine_failed(cp, rc, "masks");
			goto out;
		}
		mpc_add(cp->p, cp->mask, cp->mask, tmp, n);
	}
	ring64_t spare;
	if ((rc = mpc_reveal(cp->p, &spare, &cp->mask[n - 1], 1)) != 0)
		rc = engine_failed(cp, rc, "masks check");
	sodium_memzero(&cp->mask[n - 1], sizeof cp->mask[n - 1]);
out:
	if (mine) {
		sodium_memzero(mine, n * sizeof *mine);
		free(mine);
	}
	if (tmp) {
		sodium_memzero(tmp, n * sizeof *tmp);
		free(tmp);
	}
	return rc;
}

int cio_party_masks(struct cio_party *cp, uint8_t **msg, size_t *len)
{
	if (!cp || !msg || !len)
		return ERR_INVALID;
	*msg = NULL;
	*len = 0;
	if (cp->st == ST_DEAD)
		return ERR_ABORTED;
	if (cp->st != ST_NEW)
		return refuse(cp, ERR_INVALID, "masks: called twice");
	int rc = make_masks(cp);
	if (rc != 0)
		return rc;
	/* the client gets every mask but the spare */
	size_t cnt = cp->nmask - 1;
	ring64_t *v = malloc(cnt * sizeof *v);
	if (!v)
		return refuse(cp, ERR_NOMEM, "masks: out of memory");
	for (size_t i = 0; i < cnt; i++)
		v[i] = ring128_lo(cp->mask[i].v);
	add_faults(cp, CIO_FAULT_MASK, 0, v, cnt);
	add_faults(cp, CIO_FAULT_MASK_ADAPT, 0, v, cnt);
	rc = seal_msg(cp, CIO_MASKS, 0, NULL, 0, v, (uint32_t)cnt, msg, len);
	sodium_memzero(v, cnt * sizeof *v);
	free(v);
	if (rc != 0)
		return refuse(cp, rc, "masks: sealing failed");
	cp->st = ST_MASKED;
	return 0;
}

/* [L_k] = sum_j chi_kj [a_j] + [b_k] over the n_in + n_out masks a and blinder b_k:
 * linear, so local (mpc_mul_public and mpc_add). */
static void check_shares(struct cio_party *cp, const uint8_t seed[CIO_SEED_BYTES],
			 mpc_share L[CIO_CHECKS])
{
	uint64_t m = cio_nmasked(cp->e.n_in, cp->e.n_out);
	ring64_t chi[64];
	mpc_share t[64];
	for (uint32_t k = 0; k < CIO_CHECKS; k++) {
		L[k] = cp->mask[m + k];
		for (uint64_t j = 0; j < m; j += 64) {
			size_t c = m - j < 64 ? (size_t)(m - j) : 64;
			cio_chi(seed, k, j, chi, c);
			mpc_mul_public(cp->p, t, cp->mask + j, chi, c);
			for (size_t i = 0; i < c; i++)
				mpc_add(cp->p, &L[k], &L[k], &t[i], 1);
		}
	}
	sodium_memzero(t, sizeof t);
}

/* The adaptive liar: what its receipt must add so that it agrees with the masks it
 * claimed (the client recomputes L from the claimed masks). */
static void adapt_receipt(struct cio_party *cp, ring64_t *L)
{
	uint64_t m = cio_nmasked(cp->e.n_in, cp->e.n_out);
	for (unsigned f = 0; f < cp->nfault; f++) {
		if (cp->fault[f].kind != CIO_FAULT_MASK_ADAPT)
			continue;
		uint64_t idx = cp->fault[f].index, d = cp->fault[f].delta;
		if (idx >= m) {
			if (idx - m < CIO_CHECKS)
				L[idx - m] += d;
			continue;
		}
		for (uint32_t k = 0; k < CIO_CHECKS; k++) {
			ring64_t chi[8];
			cio_chi(cp->seed, k, idx & ~(uint64_t)7, chi, 8);
			L[k] += chi[idx & 7] * d;
		}
	}
}

int cio_party_input(struct cio_party *cp, const uint8_t *in, size_t in_len, mpc_share *x,
		    uint8_t **msg, size_t *len)
{
	if (!cp || !msg || !len || (!in && in_len) || (!x && cp->e.n_in))
		return ERR_INVALID;
	*msg = NULL;
	*len = 0;
	if (cp->st == ST_DEAD)
		return ERR_ABORTED;
	if (cp->st != ST_MASKED)
		return refuse(cp, ERR_INVALID, "input: called out of order");
	struct cio_hdr h;
	size_t auth = 0;
	char why[CIO_WHY_BYTES];
	int rc = cio_input_verify(&cp->e, cp->key, cp->me, in, in_len, &h, &auth, why, sizeof why);
	if (rc != 0)
		return refuse(cp, rc, "%s", why);
	uint8_t digest[CIO_DIGEST_BYTES];
	crypto_generichash(digest, sizeof digest, in, auth, NULL, 0);
	const uint8_t *vals = in + CIO_HDR_BYTES;
	memcpy(cp->seed, vals + 8 * (size_t)cp->e.n_in, CIO_SEED_BYTES);

	uint64_t m = cio_nmasked(cp->e.n_in, cp->e.n_out);
	mpc_share L[CIO_CHECKS];
	ring64_t Lv[CIO_CHECKS];
	check_shares(cp, cp->seed, L);
	rc = mpc_reveal(cp->p, Lv, L, CIO_CHECKS);
	sodium_memzero(L, sizeof L);
	if (rc != 0)
		return engine_failed(cp, rc, "input check");
	add_faults(cp, CIO_FAULT_RECEIPT, 0, Lv, CIO_CHECKS);
	adapt_receipt(cp, Lv);
	for (unsigned f = 0; f < cp->nfault; f++)
		if (cp->fault[f].kind == CIO_FAULT_RECEIPT && cp->fault[f].index == CIO_CHECKS)
			digest[cp->fault[f].delta % CIO_DIGEST_BYTES] ^= 1;
	if ((rc = seal_msg(cp, CIO_RECEIPT, 0, digest, sizeof digest, Lv, CIO_CHECKS, msg, len)) !=
	    0)
		return refuse(cp, rc, "input: sealing failed");
	/* [x] = [a] + (x - A); the input masks and the blinders are spent */
	for (uint32_t j = 0; j < cp->e.n_in; j++) {
		ring64_t c = ring64_load(vals + 8 * (size_t)j);
		mpc_add_public(cp->p, &x[j], &cp->mask[j], &c, 1);
	}
	sodium_memzero(cp->mask, cp->e.n_in * sizeof *cp->mask);
	sodium_memzero(cp->mask + m, CIO_CHECKS * sizeof *cp->mask);
	if (cp->nfault == 0)
		sodium_memzero(cp->seed, sizeof cp->seed);
	cp->out_next = 0;
	cp->st = ST_READY;
	return 0;
}

int cio_party_output(struct cio_party *cp, const mpc_share *y, size_t n, uint8_t **msg,
		     size_t *len)
{
	if (!cp || !msg || !len || (!y && n))
		return ERR_INVALID;
	*msg = NULL;
	*len = 0;
	if (cp->st == ST_DEAD)
		return ERR_ABORTED;
	if (cp->st != ST_READY)
		return refuse(cp, ERR_INVALID, "output: called before input");
	if (n == 0 || n > cp->e.n_out - cp->out_next)
		return refuse(cp, ERR_INVALID, "output: %zu values, %u output masks left", n,
			      cp->e.n_out - cp->out_next);
	mpc_share *z = malloc(n * sizeof *z);
	ring64_t *zv = malloc(n * sizeof *zv);
	mpc_share *r = cp->mask + cp->e.n_in + cp->out_next;
	int rc = 0;
	if (!z || !zv) {
		rc = refuse(cp, ERR_NOMEM, "output: out of memory");
		goto out;
	}
	mpc_add(cp->p, z, y, r, n);
	if ((rc = mpc_reveal(cp->p, zv, z, n)) != 0) {
		rc = engine_failed(cp, rc, "output");
		goto out;
	}
	sodium_memzero(r, n * sizeof *r); /* each output mask is used once */
	add_faults(cp, CIO_FAULT_OUTPUT, cp->out_next, zv, n);
	if ((rc = seal_msg(cp, CIO_OUTPUT, cp->out_next, NULL, 0, zv, (uint32_t)n, msg, len)) !=
	    0) {
		rc = refuse(cp, rc, "output: sealing failed");
		goto out;
	}
	cp->out_next += (uint32_t)n;
out:
	if (z) {
		sodium_memzero(z, n * sizeof *z);
		free(z);
	}
	free(zv);
	return rc;
}
