/* attest cbor: a strict, bounded CBOR reader (RFC 8949) for the Nitro attestation
 * document, the one hand-written parser of this module. It is a cursor, not a tree:
 * the caller reads heads in the order the format prescribes and strings point into
 * the input, so nothing is allocated and nothing a length claims is trusted before the
 * bytes are there. Only the deterministic subset is accepted (shortest argument
 * encodings, definite lengths, no floats), which is what the Nitro Secure Module
 * emits; anything else is ERR_PARSE. */
#include <string.h>

#include "attest_int.h"
#include "err/err.h"

void cbor_init(struct cbor *c, const uint8_t *p, size_t len)
{
	c->p = p;
	c->len = len;
	c->off = 0;
}

static int read_arg(struct cbor *c, uint8_t ai, uint64_t *out)
{
	if (ai < 24) {
		*out = ai;
		return 0;
	}
	size_t n;
	switch (ai) {
	case 24: n = 1; break;
	case 25: n = 2; break;
	case 26: n = 4; break;
	case 27: n = 8; break;
	default: return ERR_PARSE; /* 28..30 reserved, 31 indefinite */
	}
	if (c->len - c->off < n)
		return ERR_PARSE;
	uint64_t v = 0;
	for (size_t i = 0; i < n; i++)
		v = (v << 8) | c->p[c->off + i];
	c->off += n;
	/* Shortest form only: a value that fits a smaller encoding must use it. */
	static const uint64_t min_for[] = {24, 0x100, 0x10000, 0x100000000ull};
	size_t k = n == 1 ? 0 : n == 2 ? 1 : n == 4 ? 2 : 3;
	if (v < min_for[k])
		return ERR_PARSE;
	*out = v;
	return 0;
}

int cbor_read(struct cbor *c, struct cbor_item *it)
{
	if (c->off >= c->len)
		return ERR_PARSE;
	memset(it, 0, sizeof *it);
	it->start = c->off;
	uint8_t ib = c->p[c->off++];
	it->type = (enum cbor_type)(ib >> 5);
	uint8_t ai = ib & 31;
	if (it->type == CBOR_SIMPLE) {
		/* false, true, null, undefined only; no floats, no other simple values. */
		if (ai < 20 || ai > 23)
			return ERR_PARSE;
		it->val = ai;
		return 0;
	}
	int rc = read_arg(c, ai, &it->val);
	if (rc != 0)
		return rc;
	if (it->type == CBOR_BYTES || it->type == CBOR_TEXT) {
		if (it->val > c->len - c->off)
			return ERR_PARSE;
		it->str = c->p + c->off;
		c->off += (size_t)it->val;
	} else if (it->type == CBOR_ARRAY || it->type == CBOR_MAP) {
		/* Each element takes at least one byte: a count beyond the bytes left is a
		 * lie, refused before anyone loops on it. */
		uint64_t min_bytes = it->val * (it->type == CBOR_MAP ? 2 : 1);
		if (it->val > c->len || min_bytes > c->len - c->off)
			return ERR_PARSE;
	}
	return 0;
}

static int skip_depth(struct cbor *c, int depth)
{
	if (depth > CBOR_MAX_DEPTH)
		return ERR_PARSE;
	struct cbor_item it;
	int rc = cbor_read(c, &it);
	if (rc != 0)
		return rc;
	switch (it.type) {
	case CBOR_ARRAY:
	case CBOR_MAP: {
		uint64_t n = it.type == CBOR_MAP ? 2 * it.val : it.val;
		for (uint64_t i = 0; i < n; i++)
			if ((rc = skip_depth(c, depth + 1)) != 0)
				return rc;
		return 0;
	}
	case CBOR_TAG:
		return skip_depth(c, depth + 1);
	default:
		return 0;
	}
}

int cbor_skip(struct cbor *c)
{
	return skip_depth(c, 0);
}

int cbor_expect(struct cbor *c, enum cbor_type t, struct cbor_item *it)
{
	int rc = cbor_read(c, it);
	if (rc != 0)
		return rc;
	return it->type == t ? 0 : ERR_PARSE;
}
