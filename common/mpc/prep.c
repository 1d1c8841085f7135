/* mpc preprocessing: the seed-expanded dealer and the party-side expansion of its
 * batches.
 *
 * Every party i holds a seed; from it a ChaCha20 keystream per preprocessing kind
 * yields, for each item, party i's value and MAC shares. For parties 1..N-1 those PRG
 * shares are final. The dealer, which knows every seed and the MAC key, expands all
 * of them, fixes the correlated values (c = ab, the bits of a truncation mask) and
 * sends party 0 only what cannot be random: its MAC shares and the value shares of the
 * correlated components, as corrections. Random components need no payload at all,
 * so the dealer sends 16-80 bytes per item to one party instead of N full shares.
 * Owners of input masks also receive the mask in clear. */
#include <pthread.h>
#include <stdlib.h>
#include <string.h>

#include <sodium.h>

#include "err/err.h"
#include "mpc/mpc_impl.h"

void prg_init(struct prg *g, const uint8_t seed[MPC_SEED_BYTES], uint32_t stream)
{
	memcpy(g->key, seed, MPC_SEED_BYTES);
	memset(g->nonce, 0, sizeof g->nonce);
	for (int i = 0; i < 4; i++)
		g->nonce[i] = (uint8_t)(stream >> (8 * i));
	g->block = 0;
}

int prg_fill(struct prg *g, uint8_t *out, size_t len)
{
	uint64_t blocks = ((uint64_t)len + 63) / 64;
	if (blocks > UINT32_MAX - (uint64_t)g->block)
		return ERR_RANGE; /* 256 GB per stream: a session must be re-keyed first */
	memset(out, 0, len);
	crypto_stream_chacha20_ietf_xor_ic(out, out, len, g->nonce, g->block, g->key);
	g->block += (uint32_t)blocks;
	return 0;
}

void prg_wipe(struct prg *g) { sodium_memzero(g, sizeof *g); }

uint32_t prep_stream(const struct mpc_prep_req *req)
{
	switch (req->kind) {
	case MPC_PREP_INPUT:
		return PRG_STREAM_INPUT0 + req->param;
	case MPC_PREP_TRUNC:
		return PRG_STREAM_TRUNC0 + req->param;
	case MPC_PREP_LUT:
		return PRG_STREAM_LUT0 + req->param;
	default:
		return req->kind;
	}
}

ring64_t prep_alpha_share(const uint8_t seed[MPC_SEED_BYTES])
{
	struct prg g;
	uint8_t b[8];
	prg_init(&g, seed, PRG_STREAM_KEY);
	prg_fill(&g, b, sizeof b);
	ring64_t a = ring64_load(b);
	sodium_memzero(b, sizeof b);
	prg_wipe(&g);
	return a;
}

unsigned prep_shares_per_item(const struct mpc_prep_req *req)
{
	switch (req->kind) {
	case MPC_PREP_TRIPLE:
	case MPC_PREP_TRUNC:
		return 3;
	case MPC_PREP_MMUL:
		return req->rows + req->cols;
	case MPC_PREP_CMP:
		return MPC_CMP_SHARES;
	case MPC_PREP_LUT:
		return 1 + (1u << req->param);
	default:
		return 1;
	}
}

size_t prep_prg_bytes(const struct mpc_prep_req *req)
{
	size_t per = req->kind == MPC_PREP_TRIPLE ? 48 : 32; /* value and MAC share */
	return per * prep_shares_per_item(req);
}

bool mpc_prep_needs_payload(unsigned party, const struct mpc_prep_req *req)
{
	return party == 0 || (req->kind == MPC_PREP_INPUT && req->param == party);
}

size_t prep_payload_bytes(unsigned party, const struct mpc_prep_req *req)
{
	if (!mpc_prep_needs_payload(party, req))
		return 0;
	size_t per = 0;
	if (party == 0) {
		switch (req->kind) {
		case MPC_PREP_RAND:
		case MPC_PREP_INPUT:
			per = 16; /* m */
			break;
		case MPC_PREP_TRIPLE:
			per = 96; /* m_a, m_b, v_c, m_c, 24 bytes each */
			break;
		case MPC_PREP_TRUNC:
			per = 80; /* m_r, v_bit, m_bit, v_mid, m_mid */
			break;
		case MPC_PREP_MMASK:
			per = 16; /* m */
			break;
		case MPC_PREP_MMUL:
			per = 16 * (size_t)req->rows + 32 * (size_t)req->cols; /* m(a), v(aB), m(aB) */
			break;
		case MPC_PREP_CMP:
			per = 16 + 32 * (MPC_CMP_SHARES - 1); /* m(r), then v and m of the rest */
			break;
		case MPC_PREP_LUT:
			per = 16 + 32 * ((size_t)1 << req->param); /* m(r), v and m of each entry */
			break;
		}
	}
	if (req->kind == MPC_PREP_INPUT && req->param == party)
		per += 8; /* the mask in clear */
	return PREP_HDR_BYTES + per * req->n;
}

bool prep_req_valid(const struct mpc_prep_req *req, unsigned nparties)
{
	if (req->n == 0 || req->n > PREP_MAX_BATCH)
		return false;
	bool matrix = req->kind == MPC_PREP_MMASK || req->kind == MPC_PREP_MMUL;
	if (!matrix && (req->rows || req->cols))
		return false;
	if (matrix && (req->rows == 0 || req->cols == 0 || req->rows > PREP_MAX_DIM ||
		       req->cols > PREP_MAX_DIM))
		return false;
	switch (req->kind) {
	case MPC_PREP_MMASK:
		return (uint64_t)req->rows * req->cols == req->n;
	case MPC_PREP_MMUL:
		return (uint64_t)req->n * (req->rows + req->cols) <= 3 * (uint64_t)PREP_MAX_BATCH;
	case MPC_PREP_RAND:
	case MPC_PREP_TRIPLE:
	case MPC_PREP_CMP:
		return req->param == 0;
	case MPC_PREP_TRUNC:
		return req->param >= 1 && req->param <= 62;
	case MPC_PREP_INPUT:
		return req->param < nparties;
	case MPC_PREP_LUT:
		/* the body of one batch stays within PREP_MAX_BATCH shares of 32 bytes */
		return req->param >= 1 && req->param <= MPC_LUT_MAX_BITS &&
		       (uint64_t)req->n << req->param <= PREP_MAX_BATCH;
	default:
		return false;
	}
}

static void put_hdr(uint8_t *p, const struct mpc_prep_req *req)
{
	memcpy(p, "MPRP", 4);
	p[4] = PREP_VERSION & 0xff;
	p[5] = PREP_VERSION >> 8;
	p[6] = (uint8_t)req->kind;
	p[7] = (uint8_t)(req->kind >> 8);
	for (int i = 0; i < 4; i++) {
		p[8 + i] = (uint8_t)(req->param >> (8 * i));
		p[12 + i] = (uint8_t)(req->n >> (8 * i));
		p[16 + i] = (uint8_t)(req->rows >> (8 * i));
		p[20 + i] = (uint8_t)(req->cols >> (8 * i));
	}
}

static uint32_t get32(const uint8_t *p)
{
	return (uint32_t)p[0] | (uint32_t)p[1] << 8 | (uint32_t)p[2] << 16 | (uint32_t)p[3] << 24;
}

/* Items per PRG chunk: even (an item is a multiple of 32 bytes, so a chunk is whole
 * 64-byte blocks and filling chunk by chunk gives the keystream of one fill of the
 * batch), about 32 KB, so that the scratch buffers stay small and in cache. */
static size_t chunk_items(size_t per, size_t n)
{
	size_t c = (32768 / per) & ~(size_t)1;
	if (c < 2)
		c = 2;
	return c < n ? c : n;
}

/* Reads party's PRG shares of one item (layout: the item's value shares, then its MAC
 * shares, 16 bytes each). */
static void load_item(const uint8_t *b, unsigned k, mpc_share *s)
{
	for (unsigned j = 0; j < k; j++) {
		s[j].v = ring128_load(b + 16 * j);
		s[j].m = ring128_load(b + 16 * (k + j));
	}
}

/* A payload is exactly what this party expects for req: the magic and version first
 * (another version is ERR_UNSUPPORTED), then the echo of the request and the length
 * (ERR_PROTOCOL). Nothing of the body is read before this passes. */
static int check_payload(unsigned party, const struct mpc_prep_req *req, const uint8_t *payload,
			 size_t len)
{
	size_t want = prep_payload_bytes(party, req);
	if (!want)
		return 0;
	if (!payload || len < PREP_HDR_BYTES)
		return ERR_PROTOCOL;
	if (memcmp(payload, "MPRP", 4) != 0 || (payload[4] | payload[5] << 8) != PREP_VERSION)
		return ERR_UNSUPPORTED;
	if ((payload[6] | payload[7] << 8) != req->kind || get32(payload + 8) != req->param ||
	    get32(payload + 12) != req->n || get32(payload + 16) != req->rows ||
	    get32(payload + 20) != req->cols || len != want)
		return ERR_PROTOCOL;
	return 0;
}

int prep_expand(struct prg *g, unsigned party, const struct mpc_prep_req *req,
		const uint8_t *payload, size_t len, mpc_share *out, ring64_t *clear)
{
	unsigned k = prep_shares_per_item(req);
	size_t per = prep_prg_bytes(req);
	if (req->kind == MPC_PREP_TRIPLE)
		return ERR_INVALID; /* wide: prep_expand_wide */
	int rc = check_payload(party, req, payload, len);
	if (rc != 0)
		return rc;
	const size_t C = chunk_items(per, req->n);
	uint8_t *buf = malloc(per * C);
	if (!buf)
		return ERR_NOMEM;
	const uint8_t *q = payload ? payload + PREP_HDR_BYTES : NULL;
	for (uint32_t i = 0; i < req->n; i++) {
		mpc_share *s = out + (size_t)i * k;
		if (i % C == 0 && (rc = prg_fill(g, buf, per * (req->n - i < C ? req->n - i : C))) != 0)
			goto out;
		load_item(buf + per * (i % C), k, s);
		if (party != 0)
			goto owner;
		switch (req->kind) {
		case MPC_PREP_RAND:
		case MPC_PREP_INPUT:
			s[0].m = ring128_load(q);
			q += 16;
			break;
		case MPC_PREP_TRUNC:
			s[0].m = ring128_load(q);
			s[1].v = ring128_load(q + 16);
			s[1].m = ring128_load(q + 32);
			s[2].v = ring128_load(q + 48);
			s[2].m = ring128_load(q + 64);
			q += 80;
			break;
		case MPC_PREP_MMASK:
			s[0].m = ring128_load(q);
			q += 16;
			break;
		case MPC_PREP_MMUL:
			for (uint32_t j = 0; j < req->rows; j++, q += 16)
				s[j].m = ring128_load(q);
			for (uint32_t j = req->rows; j < k; j++, q += 32) {
				s[j].v = ring128_load(q);
				s[j].m = ring128_load(q + 16);
			}
			break;
		case MPC_PREP_CMP:
		case MPC_PREP_LUT:
			s[0].m = ring128_load(q);
			q += 16;
			for (unsigned j = 1; j < k; j++, q += 32) {
				s[j].v = ring128_load(q);
				s[j].m = ring128_load(q + 16);
			}
			break;
		}
	owner:
		if (req->kind == MPC_PREP_INPUT && req->param == party) {
			clear[i] = ring64_load(q);
			q += 8;
		}
	}
out:
	sodium_memzero(buf, per * C);
	free(buf);
	return rc;
}

int prep_expand_wide(struct prg *g, unsigned party, const struct mpc_prep_req *req,
		     const uint8_t *payload, size_t len, mpc_wshare *out)
{
	if (req->kind != MPC_PREP_TRIPLE)
		return ERR_INVALID;
	size_t per = prep_prg_bytes(req);
	int rc = check_payload(party, req, payload, len);
	if (rc != 0)
		return rc;
	const size_t C = chunk_items(per, req->n);
	uint8_t *buf = malloc(per * C);
	if (!buf)
		return ERR_NOMEM;
	const uint8_t *q = payload ? payload + PREP_HDR_BYTES : NULL;
	for (uint32_t i = 0; i < req->n; i++) {
		mpc_wshare *s = out + 3 * (size_t)i;
		if (i % C == 0 && (rc = prg_fill(g, buf, per * (req->n - i < C ? req->n - i : C))) != 0)
			goto out;
		const uint8_t *b = buf + per * (i % C);
		for (unsigned j = 0; j < 3; j++) {
			s[j].v = ring192_load(b + 24 * j);
			s[j].m = ring192_load(b + 24 * (3 + j));
		}
		if (party == 0) {
			s[0].m = ring192_load(q);
			s[1].m = ring192_load(q + 24);
			s[2].v = ring192_load(q + 48);
			s[2].m = ring192_load(q + 72);
			q += 96;
		}
	}
out:
	sodium_memzero(buf, per * C);
	free(buf);
	return rc;
}

/* ---------------------------------------------------------------- dealer */

#define DEALER_STREAMS PRG_STREAMS

struct stored_batch {
	struct mpc_prep_req req;
	uint8_t *payload[2]; /* [0] party 0, [1] the input's owner (when not 0) */
	size_t len[2];
};

struct dealer_stream {
	uint64_t next_batch;
	struct prg prg[MPC_MAX_PARTIES];
	struct stored_batch *stored;
	size_t nstored, capstored;
};

struct fault {
	enum mpc_dealer_fault kind;
	uint64_t item;
	unsigned bit;
	bool set;
};

struct dealer_mask {
	uint32_t id, rows, cols;
	ring128_t *b; /* the full values of B, row-major */
};

struct mpc_dealer {
	unsigned n;
	struct dealer_mask *masks;
	size_t nmasks, capmasks;
	uint8_t seed[MPC_MAX_PARTIES][MPC_SEED_BYTES];
	ring128_t alpha; /* sum of the alpha_i, lifted: the effective MAC key */
	ring192_t walpha; /* the same in Z_2^192 */
	struct dealer_stream st[DEALER_STREAMS];
	uint64_t triples_made;
	uint64_t bytes_out;
	struct fault fault;
	pthread_mutex_t mu;
};

int mpc_dealer_new(unsigned nparties, struct mpc_dealer **out)
{
	*out = NULL;
	if (nparties < 2 || nparties > MPC_MAX_PARTIES)
		return ERR_INVALID;
	if (sodium_init() < 0)
		return ERR_CRYPTO;
	struct mpc_dealer *d = calloc(1, sizeof *d);
	if (!d)
		return ERR_NOMEM;
	if (pthread_mutex_init(&d->mu, NULL) != 0) {
		free(d);
		return ERR_INTERNAL;
	}
	d->n = nparties;
	for (unsigned i = 0; i < nparties; i++) {
		randombytes_buf(d->seed[i], MPC_SEED_BYTES);
		d->alpha += ring128_from64(prep_alpha_share(d->seed[i]));
	}
	d->walpha = ring192_from128(d->alpha); /* at most 16 * 2^64: no wrap */
	for (unsigned s = 0; s < DEALER_STREAMS; s++)
		for (unsigned i = 0; i < nparties; i++)
			prg_init(&d->st[s].prg[i], d->seed[i], s);
	*out = d;
	return 0;
}

static void stored_wipe(struct stored_batch *b)
{
	for (int w = 0; w < 2; w++) {
		if (b->payload[w]) {
			sodium_memzero(b->payload[w], b->len[w]);
			free(b->payload[w]);
			b->payload[w] = NULL;
		}
	}
}

void mpc_dealer_free(struct mpc_dealer *d)
{
	if (!d)
		return;
	for (unsigned s = 0; s < DEALER_STREAMS; s++) {
		for (size_t j = 0; j < d->st[s].nstored; j++)
			stored_wipe(&d->st[s].stored[j]);
		free(d->st[s].stored);
	}
	for (size_t i = 0; i < d->nmasks; i++) {
		sodium_memzero(d->masks[i].b,
			       (size_t)d->masks[i].rows * d->masks[i].cols * sizeof(ring128_t));
		free(d->masks[i].b);
	}
	free(d->masks);
	pthread_mutex_destroy(&d->mu);
	sodium_memzero(d, sizeof *d);
	free(d);
}

int mpc_dealer_party_seed(const struct mpc_dealer *d, unsigned party, uint8_t seed[MPC_SEED_BYTES])
{
	if (party >= d->n)
		return ERR_INVALID;
	memcpy(seed, d->seed[party], MPC_SEED_BYTES);
	return 0;
}

uint64_t mpc_dealer_bytes_out(struct mpc_dealer *d)
{
	pthread_mutex_lock(&d->mu);
	uint64_t b = d->bytes_out;
	pthread_mutex_unlock(&d->mu);
	return b;
}

int mpc_dealer_inject(struct mpc_dealer *d, enum mpc_dealer_fault kind, uint64_t item, unsigned bit)
{
	if ((kind != MPC_DEALER_FAULT_TRIPLE_VALUE && kind != MPC_DEALER_FAULT_TRIPLE_MAC) ||
	    bit > 191)
		return ERR_INVALID;
	pthread_mutex_lock(&d->mu);
	d->fault = (struct fault){.kind = kind, .item = item, .bit = bit, .set = true};
	pthread_mutex_unlock(&d->mu);
	return 0;
}

static struct dealer_mask *dealer_mask_find(struct mpc_dealer *d, uint32_t id)
{
	for (size_t i = 0; i < d->nmasks; i++)
		if (d->masks[i].id == id)
			return &d->masks[i];
	return NULL;
}

/* Triples, in Z_2^192: a and b are the sums of the parties' PRG value shares, c = ab,
 * and party 0 receives its MAC shares of a and b and its value and MAC share of c. */
static int dealer_generate_triples(struct mpc_dealer *d, struct dealer_stream *ds,
				   const struct mpc_prep_req *req, struct stored_batch *sb)
{
	const size_t per = prep_prg_bytes(req), n = req->n, C = chunk_items(per, n);
	uint8_t *buf = malloc(per * C);
	mpc_wshare *sum = calloc(3 * C, sizeof *sum); /* parties 1..N-1, then + party 0 */
	mpc_wshare *s0 = calloc(3 * C, sizeof *s0);
	int rc = 0;
	sb->len[0] = prep_payload_bytes(0, req);
	sb->payload[0] = malloc(sb->len[0]);
	if (!buf || !sum || !s0 || !sb->payload[0]) {
		rc = ERR_NOMEM;
		goto out;
	}
	put_hdr(sb->payload[0], req);
	uint8_t *q = sb->payload[0] + PREP_HDR_BYTES;
	const ring192_t a = d->walpha;
	/* chunk by chunk: every party's PRG shares of the chunk, then party 0's payload */
	for (size_t t0 = 0; t0 < n; t0 += C) {
		const size_t cn = n - t0 < C ? n - t0 : C;
		memset(sum, 0, 3 * cn * sizeof *sum);
		for (unsigned i = 0; i < d->n; i++) {
			if ((rc = prg_fill(&ds->prg[i], buf, per * cn)) != 0)
				goto out;
			for (size_t t = 0; t < cn; t++)
				for (unsigned j = 0; j < 3; j++) {
					const uint8_t *b = buf + per * t;
					mpc_wshare sh = {ring192_load(b + 24 * j), ring192_load(b + 24 * (3 + j))};
					mpc_wshare *dst = i == 0 ? &s0[3 * t + j] : &sum[3 * t + j];
					if (i == 0)
						*dst = sh;
					else {
						dst->v = ring192_add(dst->v, sh.v);
						dst->m = ring192_add(dst->m, sh.m);
					}
				}
		}
		for (size_t t = 0; t < cn; t++) {
			const mpc_wshare *o = &sum[3 * t];
			ring192_t fa = ring192_add(o[0].v, s0[3 * t].v), fb = ring192_add(o[1].v, s0[3 * t + 1].v);
			ring192_t fc = ring192_mul(fa, fb);
			bool fault = d->fault.set && d->fault.item == d->triples_made + t0 + t;
			ring192_t e = {{0, 0, 0}};
			if (fault)
				e.w[d->fault.bit / 64] = (uint64_t)1 << (d->fault.bit % 64);
			if (fault && d->fault.kind == MPC_DEALER_FAULT_TRIPLE_VALUE)
				fc = ring192_add(fc, e); /* a wrong c whose MAC matches */
			ring192_t mc0 = ring192_sub(ring192_mul(a, fc), o[2].m);
			if (fault && d->fault.kind == MPC_DEALER_FAULT_TRIPLE_MAC)
				mc0 = ring192_add(mc0, e);
			ring192_store(q, ring192_sub(ring192_mul(a, fa), o[0].m));
			ring192_store(q + 24, ring192_sub(ring192_mul(a, fb), o[1].m));
			ring192_store(q + 48, ring192_sub(fc, o[2].v));
			ring192_store(q + 72, mc0);
			q += 96;
		}
	}
	d->triples_made += n;
out:
	if (buf) {
		sodium_memzero(buf, per * C);
		free(buf);
	}
	if (sum) {
		sodium_memzero(sum, 3 * C * sizeof *sum);
		free(sum);
	}
	if (s0) {
		sodium_memzero(s0, 3 * C * sizeof *s0);
		free(s0);
	}
	if (rc != 0)
		stored_wipe(sb);
	return rc;
}

/* Generates the next batch of a stream: every party's PRG shares, the correlated
 * values, and party 0's corrections (and the owner's clear masks). */
static int dealer_generate(struct mpc_dealer *d, struct dealer_stream *ds,
			   const struct mpc_prep_req *req, struct stored_batch *sb)
{
	unsigned k = prep_shares_per_item(req);
	size_t per = prep_prg_bytes(req);
	size_t n = req->n;
	uint8_t *buf = NULL;
	mpc_share *sh = NULL;
	ring128_t *vo = NULL, *mo = NULL, *full = NULL, *bstore = NULL;
	struct dealer_mask *mask = NULL;
	int rc = 0;
	memset(sb, 0, sizeof *sb);
	sb->req = *req;
	if (req->kind == MPC_PREP_TRIPLE)
		return dealer_generate_triples(d, ds, req, sb);
	if (req->kind == MPC_PREP_MMASK && dealer_mask_find(d, req->param))
		return ERR_PROTOCOL; /* a mask id is used once per session */
	if (req->kind == MPC_PREP_MMUL) {
		mask = dealer_mask_find(d, req->param);
		if (!mask || mask->rows != req->rows || mask->cols != req->cols)
			return ERR_PROTOCOL;
	}
	const size_t C = chunk_items(per, n);
	buf = malloc(per * C);
	sh = calloc(C * k * d->n, sizeof *sh); /* [party][item of the chunk][component] */
	vo = calloc(k, sizeof *vo);
	mo = calloc(k, sizeof *mo);
	full = calloc(k, sizeof *full);
	if (req->kind == MPC_PREP_MMASK)
		bstore = calloc(n, sizeof *bstore);
	if (!buf || !sh || !vo || !mo || !full || (req->kind == MPC_PREP_MMASK && !bstore)) {
		rc = ERR_NOMEM;
		goto out;
	}
	unsigned owner = req->kind == MPC_PREP_INPUT ? req->param : 0;
	for (int w = 0; w < 2; w++) {
		unsigned who = w == 0 ? 0 : owner;
		if (w == 1 && owner == 0)
			break;
		sb->len[w] = prep_payload_bytes(who, req);
		sb->payload[w] = malloc(sb->len[w]);
		if (!sb->payload[w]) {
			rc = ERR_NOMEM;
			goto out;
		}
		put_hdr(sb->payload[w], req);
	}
	uint8_t *q0 = sb->payload[0] + PREP_HDR_BYTES;
	uint8_t *qo = sb->payload[1] ? sb->payload[1] + PREP_HDR_BYTES : NULL;
	const ring128_t a = d->alpha;
	for (size_t t = 0; t < n; t++) {
		if (t % C == 0) /* every party's PRG shares of the next chunk */
			for (unsigned i = 0; i < d->n; i++) {
				size_t cn = n - t < C ? n - t : C;
				if ((rc = prg_fill(&ds->prg[i], buf, per * cn)) != 0)
					goto out;
				for (size_t u = 0; u < cn; u++)
					load_item(buf + per * u, k, sh + ((size_t)i * C + u) * k);
			}
		/* sums over parties 1..N-1 (fixed), and the full random values */
		memset(vo, 0, k * sizeof *vo);
		memset(mo, 0, k * sizeof *mo);
		for (unsigned i = 1; i < d->n; i++) {
			const mpc_share *si = sh + ((size_t)i * C + t % C) * k;
			for (unsigned j = 0; j < k; j++) {
				vo[j] += si[j].v;
				mo[j] += si[j].m;
			}
		}
		const mpc_share *s0 = sh + (t % C) * k;
		for (unsigned j = 0; j < k; j++)
			full[j] = vo[j] + s0[j].v;
		switch (req->kind) {
		case MPC_PREP_RAND:
		case MPC_PREP_INPUT:
		case MPC_PREP_MMASK:
			ring128_store(q0, a * full[0] - mo[0]);
			q0 += 16;
			if (bstore)
				bstore[t] = full[0];
			if (req->kind == MPC_PREP_INPUT) {
				uint8_t **qc = owner == 0 ? &q0 : &qo;
				ring64_store(*qc, ring128_lo(full[0]));
				*qc += 8;
			}
			break;
		case MPC_PREP_TRUNC: {
			ring64_t r = ring128_lo(full[0]);
			full[1] = r >> 63;
			full[2] = (r & (((ring64_t)1 << 63) - 1)) >> req->param;
			ring128_store(q0, a * full[0] - mo[0]);
			ring128_store(q0 + 16, full[1] - vo[1]);
			ring128_store(q0 + 32, a * full[1] - mo[1]);
			ring128_store(q0 + 48, full[2] - vo[2]);
			ring128_store(q0 + 64, a * full[2] - mo[2]);
			q0 += 80;
			break;
		}
		case MPC_PREP_CMP: {
			ring64_t r = ring128_lo(full[0]);
			ring64_t low = r & (((ring64_t)1 << 62) - 1);
			full[1] = r >> 63;
			full[2] = (r >> 62) & 1;
			for (unsigned j = 0; j < MPC_CMP_CHUNKS; j++) {
				unsigned chunk = (unsigned)(low >> (4 * j)) & 15;
				for (unsigned v = 0; v < 16; v++)
					full[3 + 16 * j + v] = v == chunk;
			}
			ring128_store(q0, a * full[0] - mo[0]);
			q0 += 16;
			for (unsigned j = 1; j < k; j++, q0 += 32) {
				ring128_store(q0, full[j] - vo[j]);
				ring128_store(q0 + 16, a * full[j] - mo[j]);
			}
			break;
		}
		case MPC_PREP_LUT: {
			ring64_t low = ring128_lo(full[0]) & (((ring64_t)1 << req->param) - 1);
			for (unsigned v = 0; v + 1 < k; v++)
				full[1 + v] = v == low;
			ring128_store(q0, a * full[0] - mo[0]);
			q0 += 16;
			for (unsigned j = 1; j < k; j++, q0 += 32) {
				ring128_store(q0, full[j] - vo[j]);
				ring128_store(q0 + 16, a * full[j] - mo[j]);
			}
			break;
		}
		case MPC_PREP_MMUL: {
			uint32_t R = req->rows, C = req->cols;
			for (uint32_t j = 0; j < R; j++, q0 += 16)
				ring128_store(q0, a * full[j] - mo[j]);
			for (uint32_t c = 0; c < C; c++, q0 += 32) {
				ring128_t acc = 0;
				for (uint32_t j = 0; j < R; j++)
					acc += full[j] * mask->b[(size_t)j * C + c];
				ring128_store(q0, acc - vo[R + c]);
				ring128_store(q0 + 16, a * acc - mo[R + c]);
			}
			break;
		}
		}
	}
	if (req->kind == MPC_PREP_MMASK) {
		if (d->nmasks == d->capmasks) {
			size_t nc = d->capmasks ? 2 * d->capmasks : 8;
			struct dealer_mask *nm = realloc(d->masks, nc * sizeof *nm);
			if (!nm) {
				rc = ERR_NOMEM;
				goto out;
			}
			d->masks = nm;
			d->capmasks = nc;
		}
		d->masks[d->nmasks++] =
		    (struct dealer_mask){.id = req->param, .rows = req->rows, .cols = req->cols, .b = bstore};
		bstore = NULL;
	}
out:
	if (buf) {
		sodium_memzero(buf, per * C);
		free(buf);
	}
	if (sh) {
		sodium_memzero(sh, C * k * d->n * sizeof *sh);
		free(sh);
	}
	if (full) {
		sodium_memzero(full, k * sizeof *full);
		sodium_memzero(vo, k * sizeof *vo);
		sodium_memzero(mo, k * sizeof *mo);
	}
	free(full);
	free(vo);
	free(mo);
	if (bstore) {
		sodium_memzero(bstore, n * sizeof *bstore);
		free(bstore);
	}
	if (rc != 0)
		stored_wipe(sb);
	return rc;
}

int mpc_dealer_fetch(struct mpc_dealer *d, unsigned party, const struct mpc_prep_req *req,
		     uint8_t **payload, size_t *len)
{
	*payload = NULL;
	*len = 0;
	if (party >= d->n || !prep_req_valid(req, d->n) || !mpc_prep_needs_payload(party, req))
		return ERR_INVALID;
	int rc = 0;
	pthread_mutex_lock(&d->mu);
	struct dealer_stream *ds = &d->st[prep_stream(req)];
	if (req->batch > ds->next_batch) {
		rc = ERR_PROTOCOL; /* batches are asked for in order */
		goto out;
	}
	if (req->batch == ds->next_batch) {
		if (ds->nstored == ds->capstored) {
			size_t nc = ds->capstored ? 2 * ds->capstored : 4;
			struct stored_batch *ns = realloc(ds->stored, nc * sizeof *ns);
			if (!ns) {
				rc = ERR_NOMEM;
				goto out;
			}
			ds->stored = ns;
			ds->capstored = nc;
		}
		if ((rc = dealer_generate(d, ds, req, &ds->stored[ds->nstored])) != 0)
			goto out;
		ds->nstored++;
		ds->next_batch++;
	}
	size_t j = 0;
	while (j < ds->nstored && ds->stored[j].req.batch != req->batch)
		j++;
	int w = party == 0 ? 0 : 1;
	if (j == ds->nstored || !ds->stored[j].payload[w]) {
		rc = ERR_PROTOCOL; /* asked twice */
		goto out;
	}
	struct stored_batch *sb = &ds->stored[j];
	if (sb->req.kind != req->kind || sb->req.param != req->param || sb->req.n != req->n ||
	    sb->req.rows != req->rows || sb->req.cols != req->cols) {
		rc = ERR_PROTOCOL; /* parties disagree on the program */
		goto out;
	}
	*payload = sb->payload[w];
	*len = sb->len[w];
	sb->payload[w] = NULL;
	d->bytes_out += *len;
	if (!sb->payload[0] && !sb->payload[1]) {
		ds->stored[j] = ds->stored[ds->nstored - 1];
		ds->nstored--;
	}
out:
	pthread_mutex_unlock(&d->mu);
	return rc;
}

static int dealer_source_fetch(void *ctx, unsigned party, const struct mpc_prep_req *req,
			       uint8_t **payload, size_t *len)
{
	return mpc_dealer_fetch(ctx, party, req, payload, len);
}

struct mpc_prep_source mpc_dealer_source(struct mpc_dealer *d)
{
	return (struct mpc_prep_source){.fetch = dealer_source_fetch, .ctx = d};
}
