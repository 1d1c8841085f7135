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

#include <openssl/evp.h>
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

/* The keystream is RFC 8439 ChaCha20 either way: libcrypto's, whose vectorised code
 * (AVX-512 where the CPU has it) runs about twice as fast as libsodium's on the
 * machines we measured (docs/PROTOCOL.md, section 7), and libsodium's when the default
 * provider offers no ChaCha20 (a FIPS-only configuration). libcrypto takes the 32-bit
 * block counter and the 96-bit nonce as one 16-byte IV, counter first (little endian),
 * so both produce the same bytes for the same block. The cipher is fetched once per
 * process: a fetch per call would cost a provider look-up under a lock. */
static EVP_CIPHER *chacha;
static pthread_once_t chacha_once = PTHREAD_ONCE_INIT;

static void chacha_fetch(void) { chacha = EVP_CIPHER_fetch(NULL, "ChaCha20", NULL); }

/* A keystream reader of one PRG stream that can jump to any block, so that a caller
 * can generate only the blocks it reads. */
struct ks {
	const struct prg *g;
	EVP_CIPHER_CTX *ctx; /* NULL: libsodium */
	bool keyed;
};

static int ks_open(struct ks *s, const struct prg *g)
{
	pthread_once(&chacha_once, chacha_fetch);
	s->g = g;
	s->keyed = false;
	s->ctx = NULL;
	if (chacha && !(s->ctx = EVP_CIPHER_CTX_new()))
		return ERR_NOMEM;
	return 0;
}

/* The context's free wipes the key schedule (the provider clears its state). */
static void ks_close(struct ks *s) { EVP_CIPHER_CTX_free(s->ctx); }

/* len bytes of keystream from block `block` of the stream on (the caller has checked
 * that the 32-bit counter does not wrap). */
static int ks_gen(struct ks *s, uint32_t block, uint8_t *out, size_t len)
{
	static const uint8_t zero[4096];
	if (!s->ctx) {
		memset(out, 0, len);
		crypto_stream_chacha20_ietf_xor_ic(out, out, len, s->g->nonce, block, s->g->key);
		return 0;
	}
	uint8_t iv[16];
	for (int i = 0; i < 4; i++)
		iv[i] = (uint8_t)(block >> (8 * i));
	memcpy(iv + 4, s->g->nonce, sizeof s->g->nonce);
	/* keyed once, then only the IV (counter and nonce) moves */
	int ok = s->keyed ? EVP_EncryptInit_ex2(s->ctx, NULL, NULL, iv, NULL)
			  : EVP_EncryptInit_ex2(s->ctx, chacha, s->g->key, iv, NULL);
	s->keyed = ok == 1;
	/* the keystream is the encryption of zeros: read them from a constant block that
	 * stays in cache rather than clearing out first */
	for (size_t off = 0; ok && off < len; off += sizeof zero) {
		int ol;
		size_t n = len - off < sizeof zero ? len - off : sizeof zero;
		ok = EVP_EncryptUpdate(s->ctx, out + off, &ol, zero, (int)n);
	}
	return ok ? 0 : ERR_CRYPTO;
}

/* Blocks that len bytes take, if the stream has that many left. */
static int prg_blocks(const struct prg *g, uint64_t len, uint32_t *blocks)
{
	uint64_t b = (len + 63) / 64;
	if (b > UINT32_MAX - (uint64_t)g->block)
		return ERR_RANGE; /* 256 GB per stream: a session must be re-keyed first */
	*blocks = (uint32_t)b;
	return 0;
}

int prg_fill(struct prg *g, uint8_t *out, size_t len)
{
	uint32_t blocks;
	struct ks s;
	int rc = prg_blocks(g, len, &blocks);
	if (rc != 0 || (rc = ks_open(&s, g)) != 0)
		return rc;
	rc = ks_gen(&s, g->block, out, len);
	ks_close(&s);
	if (rc == 0)
		g->block += blocks;
	return rc;
}

/* prg_fill(g, buf, per * cn) for a chunk of cn items of per bytes, when the caller
 * reads only the first `need` bytes of each item: only the blocks holding those are
 * generated (the rest of buf is left as it was and must not be read), the stream
 * advances as far as prg_fill would. Party 0 reads nothing but the value share of a
 * comparison or look-up mask's random component from the PRG (the payload brings the
 * rest), 16 bytes of 8 KB, and so does the dealer for party 0. */
static int prg_fill_heads(struct prg *g, struct ks *s, uint8_t *buf, size_t per, size_t cn,
			  size_t need)
{
	uint32_t blocks;
	int rc = prg_blocks(g, (uint64_t)per * cn, &blocks);
	if (rc != 0)
		return rc;
	const size_t end = per * cn;
	if (per - need < 512) { /* too little to skip: one call */
		if ((rc = ks_gen(s, g->block, buf, end)) == 0)
			g->block += blocks;
		return rc;
	}
	size_t r0 = 0, r1 = 0; /* a run of needed blocks [r0, r1) not generated yet */
	for (size_t u = 0; u <= cn; u++) {
		size_t b0 = u < cn ? per * u / 64 : SIZE_MAX, b1 = u < cn ? (per * u + need + 63) / 64 : 0;
		if (u < cn && b0 <= r1) { /* touches the run: extends it */
			r1 = b1 > r1 ? b1 : r1;
			continue;
		}
		if (r1 > r0) {
			size_t hi = 64 * r1 < end ? 64 * r1 : end;
			if ((rc = ks_gen(s, g->block + (uint32_t)r0, buf + 64 * r0, hi - 64 * r0)) != 0)
				return rc;
		}
		r0 = b0;
		r1 = b1;
	}
	g->block += blocks;
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
	case MPC_PREP_MTRIPLE: /* validated: at most MPC_MMUL_MAX_SHARES */
		return (unsigned)prep_mtriple_shares(req->rows, req->param, req->cols);
	default:
		return 1;
	}
}

size_t prep_prg_bytes(const struct mpc_prep_req *req)
{
	size_t per = req->kind == MPC_PREP_TRIPLE || req->kind == MPC_PREP_MTRIPLE ? 48 : 32;
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
		case MPC_PREP_MTRIPLE: /* m of A, B, B'; v and m of C, C' (24 bytes each) */
			per = 24 * (size_t)prep_mtriple_shares(req->rows, req->param, req->cols) +
			      48 * (size_t)req->rows * req->cols;
			break;
		}
	}
	if (req->kind == MPC_PREP_INPUT && req->param == party)
		per += 8; /* the mask in clear */
	return PREP_HDR_BYTES + per * req->n;
}

uint64_t prep_mtriple_shares(uint64_t rows, uint64_t inner, uint64_t cols)
{
	if (rows > PREP_MAX_DIM || inner > PREP_MAX_DIM || cols > PREP_MAX_DIM)
		return UINT64_MAX;
	return rows * inner + 2 * inner * cols + 2 * rows * cols;
}

/* A batch of matrix triples is bounded in shares (dealer and party memory, payload
 * size; with m k + 2 k n + 2 m n <= 2^20, the dealer's m k n products per item stay
 * below 1.1e8 as well). */
static bool mtriple_valid(const struct mpc_prep_req *req)
{
	if (req->n == 0 || req->param == 0 || req->param > PREP_MAX_DIM || req->rows == 0 ||
	    req->cols == 0 || req->rows > PREP_MAX_DIM || req->cols > PREP_MAX_DIM)
		return false;
	uint64_t k = prep_mtriple_shares(req->rows, req->param, req->cols);
	return k <= MPC_MMUL_MAX_SHARES && (uint64_t)req->n * k <= MPC_MMUL_MAX_SHARES;
}

bool prep_req_valid(const struct mpc_prep_req *req, unsigned nparties)
{
	if (req->n == 0 || req->n > PREP_MAX_BATCH)
		return false;
	bool matrix = req->kind == MPC_PREP_MMASK || req->kind == MPC_PREP_MMUL ||
		      req->kind == MPC_PREP_MTRIPLE;
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
	case MPC_PREP_MTRIPLE:
		return mtriple_valid(req);
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

/* Value shares at the head of an item that party 0 takes from its PRG: the payload
 * brings every other share of an item, so the rest of its keystream is never read (0:
 * read the whole item, for a kind whose corrections are not listed here). */
static unsigned prg_heads(const struct mpc_prep_req *req)
{
	switch (req->kind) {
	case MPC_PREP_RAND:
	case MPC_PREP_INPUT:
	case MPC_PREP_MMASK:
	case MPC_PREP_TRUNC:
	case MPC_PREP_CMP:
	case MPC_PREP_LUT:
		return 1; /* [r] */
	case MPC_PREP_MMUL:
		return req->rows; /* [a] */
	default:
		return 0;
	}
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
	if (req->kind == MPC_PREP_TRIPLE || req->kind == MPC_PREP_MTRIPLE)
		return ERR_INVALID; /* wide: prep_expand_wide, prep_expand_mtriple */
	int rc = check_payload(party, req, payload, len);
	if (rc != 0)
		return rc;
	/* party 0 reads only the heads from its PRG (prg_heads): generating the rest of
	 * a comparison mask's keystream would be 99% waste */
	const unsigned heads = party == 0 ? prg_heads(req) : 0;
	const size_t C = chunk_items(per, req->n);
	struct ks ks;
	uint8_t *buf = malloc(per * C);
	if (!buf)
		return ERR_NOMEM;
	if ((rc = ks_open(&ks, g)) != 0) {
		free(buf);
		return rc;
	}
	const uint8_t *q = payload ? payload + PREP_HDR_BYTES : NULL;
	for (uint32_t i = 0; i < req->n; i++) {
		mpc_share *s = out + (size_t)i * k;
		if (i % C == 0 &&
		    (rc = prg_fill_heads(g, &ks, buf, per, req->n - i < C ? req->n - i : C,
					 heads ? 16 * (size_t)heads : per)) != 0)
			goto out;
		if (!heads) {
			load_item(buf + per * (i % C), k, s);
			if (party != 0)
				goto owner;
		} else {
			for (unsigned j = 0; j < heads; j++)
				s[j].v = ring128_load(buf + per * (i % C) + 16 * j);
		}
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
	ks_close(&ks);
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
	struct ks ks;
	uint8_t *buf = malloc(per * C);
	if (!buf)
		return ERR_NOMEM;
	if ((rc = ks_open(&ks, g)) != 0) {
		free(buf);
		return rc;
	}
	const uint8_t *q = payload ? payload + PREP_HDR_BYTES : NULL;
	for (uint32_t i = 0; i < req->n; i++) {
		mpc_wshare *s = out + 3 * (size_t)i;
		if (i % C == 0 &&
		    (rc = prg_fill_heads(g, &ks, buf, per, req->n - i < C ? req->n - i : C, per)) != 0)
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
	ks_close(&ks);
	sodium_memzero(buf, per * C);
	free(buf);
	return rc;
}

/* Shares of a matrix item read from the PRG at a time: 48 KB, whole 64-byte blocks, so
 * that reading an item slice by slice gives the keystream of one read of the item. */
#define MT_SLICE 1024

int prep_expand_mtriple(struct prg *g, unsigned party, const struct mpc_prep_req *req,
			const uint8_t *payload, size_t len, mpc_wshare *out)
{
	if (req->kind != MPC_PREP_MTRIPLE || !mtriple_valid(req))
		return ERR_INVALID;
	int rc = check_payload(party, req, payload, len);
	if (rc != 0)
		return rc;
	const size_t K = prep_shares_per_item(req);
	const size_t R = K - 2 * (size_t)req->rows * req->cols; /* A, B, B': MAC only */
	uint8_t *buf = malloc(48 * MT_SLICE);
	if (!buf)
		return ERR_NOMEM;
	const uint8_t *q = payload ? payload + PREP_HDR_BYTES : NULL;
	for (uint32_t t = 0; t < req->n; t++) {
		mpc_wshare *s = out + (size_t)t * K;
		for (size_t j0 = 0; j0 < K; j0 += MT_SLICE) {
			size_t cnt = K - j0 < MT_SLICE ? K - j0 : MT_SLICE;
			if ((rc = prg_fill(g, buf, 48 * cnt)) != 0)
				goto out;
			for (size_t u = 0; u < cnt; u++) {
				s[j0 + u].v = ring192_load(buf + 48 * u);
				s[j0 + u].m = ring192_load(buf + 48 * u + 24);
			}
		}
		if (party != 0)
			continue;
		for (size_t j = 0; j < R; j++, q += 24)
			s[j].m = ring192_load(q);
		for (size_t j = R; j < K; j++, q += 48) {
			s[j].v = ring192_load(q);
			s[j].m = ring192_load(q + 24);
		}
	}
out:
	sodium_memzero(buf, 48 * MT_SLICE);
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
	uint64_t mtriple_entries; /* entries of C generated so far (fault injection) */
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
	if (kind < MPC_DEALER_FAULT_TRIPLE_VALUE || kind > MPC_DEALER_FAULT_MTRIPLE_MAC || bit > 191)
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

/* A keystream reader per party stream, kept for a whole batch (a cipher context per
 * chunk would cost a context set-up per 32 KB); ks must start zeroed, and closing all
 * n is safe whether or not this succeeded. */
static int ks_open_parties(struct ks *ks, struct dealer_stream *ds, unsigned n)
{
	for (unsigned i = 0; i < n; i++) {
		int rc = ks_open(&ks[i], &ds->prg[i]);
		if (rc != 0)
			return rc;
	}
	return 0;
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
	struct ks ks[MPC_MAX_PARTIES] = {0};
	int rc = 0;
	sb->len[0] = prep_payload_bytes(0, req);
	sb->payload[0] = malloc(sb->len[0]);
	if (!buf || !sum || !s0 || !sb->payload[0]) {
		rc = ERR_NOMEM;
		goto out;
	}
	if ((rc = ks_open_parties(ks, ds, d->n)) != 0)
		goto out;
	put_hdr(sb->payload[0], req);
	uint8_t *q = sb->payload[0] + PREP_HDR_BYTES;
	const ring192_t a = d->walpha;
	/* chunk by chunk: every party's PRG shares of the chunk, then party 0's payload */
	for (size_t t0 = 0; t0 < n; t0 += C) {
		const size_t cn = n - t0 < C ? n - t0 : C;
		memset(sum, 0, 3 * cn * sizeof *sum);
		for (unsigned i = 0; i < d->n; i++) {
			if ((rc = prg_fill_heads(&ds->prg[i], &ks[i], buf, per, cn, per)) != 0)
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
	for (unsigned i = 0; i < d->n; i++)
		ks_close(&ks[i]);
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

/* c = a b for row-major a (M x K) and b (K x N), in Z_2^192. */
static void mt_product(ring192_t *c, const ring192_t *a, const ring192_t *b, size_t M, size_t K,
		       size_t N)
{
	memset(c, 0, M * N * sizeof *c);
	for (size_t i = 0; i < M; i++)
		for (size_t l = 0; l < K; l++) {
			const ring192_t ail = a[i * K + l], *brow = b + l * N;
			ring192_t *crow = c + i * N;
			for (size_t j = 0; j < N; j++)
				crow[j] = ring192_add(crow[j], ring192_mul(ail, brow[j]));
		}
}

/* Matrix triples, in Z_2^192 as the triples are (the sacrifice checks 128-bit values):
 * A, B and B' are the sums of the parties' PRG value shares, C = A B and C' = A B'
 * are computed here, and party 0 receives its MAC shares of A, B, B' and its value
 * and MAC shares of C and C'. An item may hold up to MPC_MMUL_MAX_SHARES shares, so
 * the parties' PRG shares are read in slices and summed as they come. */
static int dealer_generate_mtriples(struct mpc_dealer *d, struct dealer_stream *ds,
				    const struct mpc_prep_req *req, struct stored_batch *sb)
{
	const size_t M = req->rows, Kd = req->param, Nc = req->cols;
	const size_t nA = M * Kd, nB = Kd * Nc, nC = M * Nc, R = nA + 2 * nB, K = R + 2 * nC;
	uint8_t *buf = malloc(48 * MT_SLICE);
	/* val: every party's value shares of A, B, B' (so the full values) and parties
	 * 1..N-1's of C, C'; mac: parties 1..N-1's MAC shares */
	ring192_t *val = malloc(K * sizeof *val), *mac = malloc(K * sizeof *mac);
	ring192_t *prod = malloc(nC * sizeof *prod);
	int rc = 0;
	sb->len[0] = prep_payload_bytes(0, req);
	sb->payload[0] = malloc(sb->len[0]);
	if (!buf || !val || !mac || !prod || !sb->payload[0]) {
		rc = ERR_NOMEM;
		goto out;
	}
	put_hdr(sb->payload[0], req);
	uint8_t *q = sb->payload[0] + PREP_HDR_BYTES;
	const ring192_t a = d->walpha;
	const bool mfault = d->fault.set && (d->fault.kind == MPC_DEALER_FAULT_MTRIPLE_VALUE ||
					     d->fault.kind == MPC_DEALER_FAULT_MTRIPLE_MAC);
	ring192_t e = {{0, 0, 0}};
	if (mfault)
		e.w[d->fault.bit / 64] = (uint64_t)1 << (d->fault.bit % 64);
	for (uint32_t t = 0; t < req->n; t++) {
		memset(val, 0, K * sizeof *val);
		memset(mac, 0, K * sizeof *mac);
		for (unsigned i = 0; i < d->n; i++)
			for (size_t j0 = 0; j0 < K; j0 += MT_SLICE) {
				size_t cnt = K - j0 < MT_SLICE ? K - j0 : MT_SLICE;
				if ((rc = prg_fill(&ds->prg[i], buf, 48 * cnt)) != 0)
					goto out;
				for (size_t u = 0; u < cnt; u++) {
					size_t j = j0 + u;
					if (i == 0 && j >= R)
						break; /* party 0's shares of C, C' are replaced */
					val[j] = ring192_add(val[j], ring192_load(buf + 48 * u));
					if (i != 0)
						mac[j] = ring192_add(mac[j], ring192_load(buf + 48 * u + 24));
				}
			}
		for (size_t j = 0; j < R; j++, q += 24)
			ring192_store(q, ring192_sub(ring192_mul(a, val[j]), mac[j]));
		for (size_t w = 0; w < 2; w++) { /* C = A B, then C' = A B' */
			mt_product(prod, val, val + nA + w * nB, M, Kd, Nc);
			const ring192_t *ov = val + R + w * nC, *om = mac + R + w * nC;
			for (size_t x = 0; x < nC; x++, q += 48) {
				ring192_t c = prod[x];
				bool fault = mfault && w == 0 && d->fault.item == d->mtriple_entries + x;
				if (fault && d->fault.kind == MPC_DEALER_FAULT_MTRIPLE_VALUE)
					c = ring192_add(c, e); /* a wrong C whose MAC matches */
				ring192_t m0 = ring192_sub(ring192_mul(a, c), om[x]);
				if (fault && d->fault.kind == MPC_DEALER_FAULT_MTRIPLE_MAC)
					m0 = ring192_add(m0, e);
				ring192_store(q, ring192_sub(c, ov[x]));
				ring192_store(q + 24, m0);
			}
		}
		d->mtriple_entries += nC;
	}
out:
	mpc_wipe_free(buf, 48 * MT_SLICE);
	mpc_wipe_free(val, K * sizeof *val);
	mpc_wipe_free(mac, K * sizeof *mac);
	mpc_wipe_free(prod, nC * sizeof *prod);
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
	if (req->kind == MPC_PREP_MTRIPLE)
		return dealer_generate_mtriples(d, ds, req, sb);
	if (req->kind == MPC_PREP_MMASK && dealer_mask_find(d, req->param))
		return ERR_PROTOCOL; /* a mask id is used once per session */
	if (req->kind == MPC_PREP_MMUL) {
		mask = dealer_mask_find(d, req->param);
		if (!mask || mask->rows != req->rows || mask->cols != req->cols)
			return ERR_PROTOCOL;
	}
	const size_t C = chunk_items(per, n);
	struct ks ks[MPC_MAX_PARTIES] = {0};
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
	if ((rc = ks_open_parties(ks, ds, d->n)) != 0)
		goto out;
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
	/* party 0's shares other than the heads are replaced by its corrections, so only
	 * the heads are read of its stream (as party 0 itself does) */
	const unsigned heads = prg_heads(req), nh = heads ? heads : k;
	mpc_share *osum = sh, *h0 = sh + C * k; /* per item of the chunk */
	for (size_t t = 0; t < n; t++) {
		if (t % C == 0) { /* the next chunk: sums over parties 1..N-1, party 0's heads */
			size_t cn = n - t < C ? n - t : C;
			memset(osum, 0, cn * k * sizeof *osum);
			for (unsigned i = 1; i < d->n; i++) {
				if ((rc = prg_fill_heads(&ds->prg[i], &ks[i], buf, per, cn, per)) != 0)
					goto out;
				for (size_t u = 0; u < cn; u++)
					for (unsigned j = 0; j < k; j++) {
						const uint8_t *b = buf + per * u;
						osum[u * k + j].v += ring128_load(b + 16 * j);
						osum[u * k + j].m += ring128_load(b + 16 * (k + j));
					}
			}
			if ((rc = prg_fill_heads(&ds->prg[0], &ks[0], buf, per, cn, 16 * (size_t)nh)) != 0)
				goto out;
			for (size_t u = 0; u < cn; u++)
				for (unsigned j = 0; j < nh; j++)
					h0[u * k + j].v = ring128_load(buf + per * u + 16 * j);
		}
		/* the fixed sums of parties 1..N-1, and the full random values (the other
		 * components of full are set below, per kind) */
		const mpc_share *o = osum + (t % C) * k, *s0 = h0 + (t % C) * k;
		for (unsigned j = 0; j < k; j++) {
			vo[j] = o[j].v;
			mo[j] = o[j].m;
		}
		for (unsigned j = 0; j < nh; j++)
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
	for (unsigned i = 0; i < d->n; i++)
		ks_close(&ks[i]);
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
