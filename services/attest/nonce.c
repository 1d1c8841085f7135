/* mimir-attest nonces: the challenge endpoint and the table behind it. A nonce is 32
 * random bytes, valid for nonce.lifetime_s and good for one attestation. The table has
 * a fixed number of slots, so an anonymous caller asking for nonces in a loop gets 429
 * once every slot is live, never more memory. A slot stays occupied after its nonce
 * was taken or expired, until the slot is needed again, so that a late or repeated
 * presentation is answered "expired" or "already used" rather than "unknown". */
#include <pthread.h>
#include <stdlib.h>
#include <string.h>

#include <sodium.h>

#include "attestd.h"
#include "err/err.h"
#include "log/log.h"
#include "metrics/metrics.h"

struct slot {
	uint8_t nonce[ATTESTD_NONCE_LEN];
	int64_t issued_ms, expires_ms;
	bool occupied, used;
};

struct attestd_nonces {
	pthread_mutex_t mu;
	struct slot *s;
	size_t cap;
	int64_t lifetime_ms;
};

int attestd_nonces_new(struct attestd_nonces **out, size_t cap, int64_t lifetime_ms)
{
	*out = NULL;
	if (cap == 0 || lifetime_ms <= 0)
		return ERR_INVALID;
	struct attestd_nonces *n = calloc(1, sizeof *n);
	if (!n || !(n->s = calloc(cap, sizeof *n->s))) {
		free(n);
		return ERR_NOMEM;
	}
	pthread_mutex_init(&n->mu, NULL);
	n->cap = cap;
	n->lifetime_ms = lifetime_ms;
	*out = n;
	return 0;
}

void attestd_nonces_free(struct attestd_nonces *n)
{
	if (!n)
		return;
	sodium_memzero(n->s, n->cap * sizeof *n->s);
	free(n->s);
	pthread_mutex_destroy(&n->mu);
	free(n);
}

int attestd_nonce_issue(struct attestd_nonces *n, int64_t now_ms, uint8_t out[ATTESTD_NONCE_LEN],
			int64_t *expires_ms)
{
	pthread_mutex_lock(&n->mu);
	/* A free slot, else the one whose nonce is spent longest (taken or expired). */
	struct slot *pick = NULL;
	for (size_t i = 0; i < n->cap && !(pick && !pick->occupied); i++) {
		struct slot *s = &n->s[i];
		if (!s->occupied) {
			pick = s;
		} else if (s->used || s->expires_ms <= now_ms) {
			if (!pick || s->issued_ms < pick->issued_ms)
				pick = s;
		}
	}
	if (!pick) {
		pthread_mutex_unlock(&n->mu);
		return ERR_RATE_LIMITED;
	}
	randombytes_buf(pick->nonce, sizeof pick->nonce);
	pick->issued_ms = now_ms;
	pick->expires_ms = now_ms + n->lifetime_ms;
	pick->occupied = true;
	pick->used = false;
	memcpy(out, pick->nonce, ATTESTD_NONCE_LEN);
	*expires_ms = pick->expires_ms;
	pthread_mutex_unlock(&n->mu);
	return 0;
}

enum attestd_nonce_verdict attestd_nonce_take(struct attestd_nonces *n, const uint8_t *nonce,
					      size_t len, int64_t now_ms, int64_t *issued_ms)
{
	if (len != ATTESTD_NONCE_LEN)
		return ATTESTD_NONCE_UNKNOWN;
	enum attestd_nonce_verdict v = ATTESTD_NONCE_UNKNOWN;
	pthread_mutex_lock(&n->mu);
	/* Every slot is compared, in constant time, so the time taken says nothing about
	 * which nonces exist. */
	struct slot *hit = NULL;
	for (size_t i = 0; i < n->cap; i++)
		if (n->s[i].occupied && sodium_memcmp(n->s[i].nonce, nonce, ATTESTD_NONCE_LEN) == 0)
			hit = &n->s[i];
	if (hit) {
		if (hit->used)
			v = ATTESTD_NONCE_REUSED;
		else if (hit->expires_ms <= now_ms)
			v = ATTESTD_NONCE_EXPIRED;
		else
			v = ATTESTD_NONCE_OK;
		*issued_ms = hit->issued_ms;
		if (v == ATTESTD_NONCE_OK)
			hit->used = true;
	}
	pthread_mutex_unlock(&n->mu);
	return v;
}

size_t attestd_nonces_live(struct attestd_nonces *n, int64_t now_ms)
{
	size_t live = 0;
	pthread_mutex_lock(&n->mu);
	for (size_t i = 0; i < n->cap; i++)
		live += n->s[i].occupied && !n->s[i].used && n->s[i].expires_ms > now_ms;
	pthread_mutex_unlock(&n->mu);
	return live;
}

int attestd_challenge(struct http_req *r, void *ctx)
{
	struct attestd_ctx *c = ctx;
	/* The body is empty or an empty object: there is nothing to choose yet. */
	size_t blen = 0;
	http_req_body(r, &blen);
	if (blen) {
		json_t *doc;
		const struct jspec_field spec[] = {JSPEC_END_F};
		int rc = http_req_json(r, spec, 0, &doc);
		if (rc != 0)
			return rc;
		json_decref(doc);
	}
	uint8_t nonce[ATTESTD_NONCE_LEN];
	int64_t now = attestd_now_ms(), expires = 0;
	int rc = attestd_nonce_issue(c->nonces, now, nonce, &expires);
	if (rc != 0) {
		metric_inc(metric_series(c->m_challenges, METRIC_LABELS("refused")));
		http_reply_header(r, "Retry-After", "5");
		return http_reply_problem(r, rc, "every nonce slot is in use; retry shortly", NULL);
	}
	metric_inc(metric_series(c->m_challenges, METRIC_LABELS("issued")));
	char hex[2 * ATTESTD_NONCE_LEN + 1], at[32];
	sodium_bin2hex(hex, sizeof hex, nonce, sizeof nonce);
	attestd_rfc3339(expires / 1000, at, sizeof at);
	http_reply_header(r, "Cache-Control", "no-store");
	return http_reply_json(r, 201, json_pack("{s:s, s:s, s:I}", "nonce", hex, "expires_at", at,
						 "expires_in_seconds", (json_int_t)((expires - now) / 1000)));
}
