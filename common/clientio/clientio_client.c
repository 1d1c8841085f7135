/* clientio_client: the client's side, a small library with no engine. It unseals each
 * party message with the ephemeral key, authenticates it with that party's tag key,
 * binds it to this generation and position, and keeps only sums: the masks A (summed
 * over the parties as their MASKS arrive), the expected check values, and for every
 * output position the first masked value seen and which parties sent it. Nothing is
 * released before every party's receipt matched the client's own combinations of A,
 * and an output value only once all N parties sent the same masked value. */
#include "clientio/clientio_int.h"

#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <sodium.h>

#include "err/err.h"

struct cio_client {
	struct cio_expect e;
	uint8_t pk[CIO_KEY_BYTES], sk[CIO_KEY_BYTES];
	uint8_t key[MPC_MAX_PARTIES][CIO_TAG_BYTES];
	uint64_t m;              /* n_in + n_out */
	uint64_t *A;             /* m + CIO_CHECKS mask sums (secret: wiped) */
	uint32_t masks_seen;     /* bit per party */
	bool input_made;
	uint8_t digest[CIO_DIGEST_BYTES];
	uint64_t L[CIO_CHECKS];  /* the check values the receipts must carry */
	uint32_t receipts_seen;
	uint64_t *z;             /* n_out masked outputs, first copy seen */
	uint16_t *z_seen;        /* parties that sent each output */
	uint64_t next_seq[MPC_MAX_PARTIES];
	uint32_t taken;
	bool dead;
	char why[CIO_WHY_BYTES];
};

_Static_assert(MPC_MAX_PARTIES <= 16, "z_seen holds one bit per party");

__attribute__((format(printf, 3, 4))) static int why(struct cio_client *c, int rc,
						      const char *fmt, ...)
{
	va_list ap;
	va_start(ap, fmt);
	vsnprintf(c->why, sizeof c->why, fmt, ap);
	va_end(ap);
	if (rc == ERR_MAC_CHECK)
		c->dead = true;
	return rc;
}

static uint32_t all_parties(const struct cio_client *c) { return (1u << c->e.nparties) - 1; }

int cio_client_new(const struct cio_client_params *prm, struct cio_client **out)
{
	if (!prm || !out)
		return ERR_INVALID;
	*out = NULL;
	uint64_t m = cio_nmasked(prm->n_in, prm->n_out);
	if (prm->nparties < 2 || prm->nparties > MPC_MAX_PARTIES || !prm->party_pk || m == 0 ||
	    m > CIO_MAX_VALUES || sodium_init() < 0)
		return ERR_INVALID;
	struct cio_client *c = calloc(1, sizeof *c);
	if (!c)
		return ERR_NOMEM;
	int rc = 0;
	memcpy(c->e.session, prm->session, CIO_ID_BYTES);
	memcpy(c->e.generation, prm->generation, CIO_ID_BYTES);
	c->e.nparties = prm->nparties;
	c->e.n_in = prm->n_in;
	c->e.n_out = prm->n_out;
	c->m = m;
	memcpy(c->sk, prm->client_sk, CIO_KEY_BYTES);
	if (crypto_scalarmult_base(c->pk, c->sk) != 0) {
		rc = ERR_INVALID;
		goto out;
	}
	for (unsigned i = 0; i < prm->nparties; i++)
		if ((rc = cio_auth_key(c->sk, prm->party_pk[i], c->pk, prm->party_pk[i], c->key[i])) !=
		    0)
			goto out; /* a party key of low order */
	c->A = calloc(m + CIO_CHECKS, sizeof *c->A);
	c->z = calloc(prm->n_out ? prm->n_out : 1, sizeof *c->z);
	c->z_seen = calloc(prm->n_out ? prm->n_out : 1, sizeof *c->z_seen);
	if (!c->A || !c->z || !c->z_seen)
		rc = ERR_NOMEM;
out:
	if (rc != 0) {
		cio_client_free(c);
		c = NULL;
	}
	*out = c;
	return rc;
}

void cio_client_free(struct cio_client *c)
{
	if (!c)
		return;
	if (c->A) {
		sodium_memzero(c->A, (c->m + CIO_CHECKS) * sizeof *c->A);
		free(c->A);
	}
	free(c->z);
	free(c->z_seen);
	sodium_memzero(c, sizeof *c);
	free(c);
}

void cio_client_pk(const struct cio_client *c, uint8_t pk[CIO_KEY_BYTES])
{
	memcpy(pk, c->pk, CIO_KEY_BYTES);
}

const char *cio_client_why(const struct cio_client *c)
{
	return c && c->why[0] ? c->why : NULL;
}

static uint32_t ready_outputs(const struct cio_client *c)
{
	uint32_t t = c->taken;
	if (!c->input_made || c->receipts_seen != all_parties(c) || c->dead)
		return 0;
	while (t < c->e.n_out && c->z_seen[t] == all_parties(c))
		t++;
	return t - c->taken;
}

void cio_client_status(const struct cio_client *c, struct cio_client_status *st)
{
	memset(st, 0, sizeof *st);
	st->masks = (unsigned)__builtin_popcount(c->masks_seen);
	st->input_made = c->input_made;
	st->receipts = (unsigned)__builtin_popcount(c->receipts_seen);
	st->verified = c->input_made && c->receipts_seen == all_parties(c) && !c->dead;
	st->taken = c->taken;
	st->ready = ready_outputs(c);
	st->failed = c->dead;
}

static int on_masks(struct cio_client *c, const struct cio_hdr *h, const uint8_t *body)
{
	uint32_t bit = 1u << h->sender;
	if (c->input_made)
		return why(c, ERR_PROTOCOL, "MASKS of party %u after the input was made", h->sender);
	if (c->masks_seen & bit)
		return why(c, ERR_PROTOCOL, "MASKS of party %u repeated", h->sender);
	for (uint32_t i = 0; i < h->count; i++)
		c->A[i] += ring64_load(body + 8 * (size_t)i);
	c->masks_seen |= bit;
	return 0;
}

static int on_receipt(struct cio_client *c, const struct cio_hdr *h, const uint8_t *body)
{
	uint32_t bit = 1u << h->sender;
	if (!c->input_made)
		return why(c, ERR_PROTOCOL, "RECEIPT of party %u before the input", h->sender);
	if (c->receipts_seen & bit)
		return why(c, ERR_PROTOCOL, "RECEIPT of party %u repeated", h->sender);
	if (memcmp(body, c->digest, CIO_DIGEST_BYTES) != 0)
		return why(c, ERR_MAC_CHECK, "party %u acknowledged another INPUT message",
			   h->sender);
	uint64_t diff = 0;
	for (uint32_t k = 0; k < CIO_CHECKS; k++)
		diff |= ring64_load(body + CIO_DIGEST_BYTES + 8 * (size_t)k) ^ c->L[k];
	if (diff != 0)
		return why(c, ERR_MAC_CHECK,
			   "check values of party %u do not match the masks received: a party "
			   "gave wrong mask shares",
			   h->sender);
	c->receipts_seen |= bit;
	return 0;
}

static int on_output(struct cio_client *c, const struct cio_hdr *h, const uint8_t *body)
{
	if (!c->input_made)
		return why(c, ERR_PROTOCOL, "OUTPUT of party %u before the input", h->sender);
	if (h->seq != c->next_seq[h->sender])
		return why(c, ERR_PROTOCOL, "OUTPUT of party %u at %llu where %llu was due", h->sender,
			   (unsigned long long)h->seq, (unsigned long long)c->next_seq[h->sender]);
	uint16_t bit = (uint16_t)(1u << h->sender);
	for (uint32_t i = 0; i < h->count; i++) {
		uint64_t t = h->seq + i, v = ring64_load(body + 8 * (size_t)i);
		if (c->z_seen[t] && c->z[t] != v)
			return why(c, ERR_MAC_CHECK, "output %llu: the parts of the parties disagree",
				   (unsigned long long)t);
	}
	for (uint32_t i = 0; i < h->count; i++) {
		uint64_t t = h->seq + i;
		c->z[t] = ring64_load(body + 8 * (size_t)i);
		c->z_seen[t] |= bit;
	}
	c->next_seq[h->sender] += h->count;
	return 0;
}

int cio_client_feed(struct cio_client *c, const uint8_t *msg, size_t len)
{
	if (!c || (!msg && len))
		return ERR_INVALID;
	if (c->dead)
		return ERR_ABORTED;
	const size_t min = CIO_SEAL_BYTES + CIO_HDR_BYTES + CIO_TAG_BYTES;
	size_t max = cio_masks_bytes(c->e.n_in, c->e.n_out); /* the largest kind, */
	if (max < cio_receipt_bytes())                          /* or the receipt */
		max = cio_receipt_bytes();
	if (len < min)
		return why(c, ERR_PARSE, "message of %zu bytes is too short", len);
	if (len > max)
		return why(c, ERR_TOO_LARGE, "message of %zu bytes exceeds the %zu this generation "
					     "allows", len, max);
	size_t plen = len - CIO_SEAL_BYTES, auth = 0;
	uint8_t *plain = malloc(plen);
	struct cio_hdr h;
	int rc = 0;
	if (!plain)
		return ERR_NOMEM;
	if (crypto_box_seal_open(plain, msg, len, c->pk, c->sk) != 0) {
		rc = why(c, ERR_PROTOCOL, "message does not unseal (sealed to another key, or "
					  "altered)");
		goto out;
	}
	if ((rc = cio_parse(plain, plen, &h, &auth)) != 0) {
		why(c, rc, "malformed message (%zu bytes)", plen);
		goto out;
	}
	if (h.type == CIO_INPUT || h.sender >= c->e.nparties) {
		rc = why(c, ERR_PROTOCOL, "message of type %u from sender %u", h.type, h.sender);
		goto out;
	}
	if (!cio_tag_ok(plain + auth, c->key[h.sender], plain, auth)) {
		rc = why(c, ERR_PROTOCOL, "tag of party %u does not verify", h.sender);
		goto out;
	}
	if (!cio_bound(&h, &c->e)) {
		rc = why(c, ERR_PROTOCOL, "message of party %u belongs to another session, "
					  "generation or shape (replay refused)", h.sender);
		goto out;
	}
	const uint8_t *body = plain + CIO_HDR_BYTES;
	switch (h.type) {
	case CIO_MASKS:
		rc = on_masks(c, &h, body);
		break;
	case CIO_RECEIPT:
		rc = on_receipt(c, &h, body);
		break;
	default:
		rc = on_output(c, &h, body);
		break;
	}
out:
	sodium_memzero(plain, plen);
	free(plain);
	return rc;
}

int cio_client_input(struct cio_client *c, const uint64_t *x, size_t n, uint8_t **msg,
		     size_t *len)
{
	if (!c || !msg || !len || (!x && n))
		return ERR_INVALID;
	*msg = NULL;
	*len = 0;
	if (c->dead)
		return ERR_ABORTED;
	if (c->input_made || c->masks_seen != all_parties(c) || n != c->e.n_in)
		return why(c, ERR_INVALID, "input: %s", c->input_made ? "made twice"
							: n != c->e.n_in ? "wrong number of values"
									  : "masks missing");
	struct cio_hdr h = {.version = CIO_VERSION,
			    .type = CIO_INPUT,
			    .sender = CIO_CLIENT_SENDER,
			    .nparties = (uint8_t)c->e.nparties,
			    .checks = CIO_CHECKS,
			    .count = c->e.n_in,
			    .n_in = c->e.n_in,
			    .n_out = c->e.n_out};
	memcpy(h.session, c->e.session, CIO_ID_BYTES);
	memcpy(h.generation, c->e.generation, CIO_ID_BYTES);
	size_t auth = CIO_HDR_BYTES + cio_body_bytes(&h);
	size_t total = cio_input_bytes(c->e.nparties, c->e.n_in);
	uint8_t *b = malloc(total);
	if (!b)
		return ERR_NOMEM;
	cio_hdr_write(b, &h);
	for (size_t j = 0; j < n; j++)
		ring64_store(b + CIO_HDR_BYTES + 8 * j, x[j] - c->A[j]);
	/* the coefficients are drawn only now, after every party committed to its shares by
	 * sending them: that order is what makes the check sound */
	uint8_t *seed = b + CIO_HDR_BYTES + 8 * n;
	randombytes_buf(seed, CIO_SEED_BYTES);
	for (unsigned i = 0; i < c->e.nparties; i++)
		cio_tag(b + auth + (size_t)i * CIO_TAG_BYTES, c->key[i], b, auth);
	crypto_generichash(c->digest, sizeof c->digest, b, auth, NULL, 0);
	uint64_t chi[64];
	for (uint32_t k = 0; k < CIO_CHECKS; k++) {
		uint64_t acc = c->A[c->m + k];
		for (uint64_t j = 0; j < c->m; j += 64) {
			size_t cnt = c->m - j < 64 ? (size_t)(c->m - j) : 64;
			cio_chi(seed, k, j, chi, cnt);
			for (size_t i = 0; i < cnt; i++)
				acc += chi[i] * c->A[j + i];
		}
		c->L[k] = acc;
	}
	/* the input masks and blinders are spent; the output masks stay until used */
	sodium_memzero(c->A, c->e.n_in * sizeof *c->A);
	sodium_memzero(c->A + c->m, CIO_CHECKS * sizeof *c->A);
	c->input_made = true;
	*msg = b;
	*len = total;
	return 0;
}

int cio_client_take(struct cio_client *c, uint64_t *out, size_t cap, size_t *n)
{
	if (!c || !n || (!out && cap))
		return ERR_INVALID;
	*n = 0;
	if (c->dead)
		return ERR_ABORTED;
	uint32_t ready = ready_outputs(c);
	size_t k = ready < cap ? ready : cap;
	for (size_t i = 0; i < k; i++) {
		uint64_t *r = &c->A[c->e.n_in + c->taken];
		out[i] = c->z[c->taken] - *r;
		sodium_memzero(r, sizeof *r);
		c->taken++;
	}
	*n = k;
	return 0;
}
