/* mimir-attest nonces: the challenge endpoint and the table behind it. A nonce is 32
 * random bytes, valid for nonce.lifetime_s and good for one attestation. The table has
 * a fixed number of slots, so nonces never cost more memory; each slot remembers the
 * address of the client it went to, and one address holds at most
 * nonce.max_per_address live nonces, so an anonymous client asking in a loop gets 429
 * long before the table is full, while others still get theirs (limit.c adds a rate
 * per address). A slot stays occupied after its nonce was taken or expired, until the
 * slot is needed again, so that a late or repeated presentation is answered "expired"
 * or "already used" rather than "unknown". */
#include <pthread.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <sodium.h>

#include "attestd.h"
#include "err/err.h"
#include "log/log.h"
#include "metrics/metrics.h"

struct slot {
	uint8_t nonce[ATTESTD_NONCE_LEN];
	uint8_t owner[ATTESTD_ADDR_KEY_LEN]; /* all zero: none */
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

int attestd_nonce_issue(struct attestd_nonces *n, int64_t now_ms, const uint8_t *owner,
			size_t max_per_owner, uint8_t out[ATTESTD_NONCE_LEN], int64_t *expires_ms,
			bool *full, int64_t *retry_ms)
{
	static const uint8_t nobody[ATTESTD_ADDR_KEY_LEN];
	if (!owner)
		owner = nobody;
	bool counted = max_per_owner && memcmp(owner, nobody, sizeof nobody) != 0;
	*full = false;
	*retry_ms = 0;
	pthread_mutex_lock(&n->mu);
	/* A free slot, else the one whose nonce is spent longest (taken or expired); on the
	 * way, the owner's live nonces and when the first of them (or of all) expires. */
	struct slot *pick = NULL;
	size_t mine = 0;
	int64_t first_mine = INT64_MAX, first_any = INT64_MAX;
	for (size_t i = 0; i < n->cap; i++) {
		struct slot *s = &n->s[i];
		if (!s->occupied) {
			if (!pick || pick->occupied)
				pick = s;
		} else if (s->used || s->expires_ms <= now_ms) {
			if (!pick || (pick->occupied && s->issued_ms < pick->issued_ms))
				pick = s;
		} else {
			if (s->expires_ms < first_any)
				first_any = s->expires_ms;
			if (counted && memcmp(s->owner, owner, sizeof s->owner) == 0) {
				mine++;
				if (s->expires_ms < first_mine)
					first_mine = s->expires_ms;
			}
		}
	}
	if (counted && mine >= max_per_owner) {
		pthread_mutex_unlock(&n->mu);
		*retry_ms = first_mine - now_ms;
		return ERR_RATE_LIMITED;
	}
	if (!pick) {
		pthread_mutex_unlock(&n->mu);
		*full = true;
		*retry_ms = first_any - now_ms;
		return ERR_RATE_LIMITED;
	}
	memcpy(pick->owner, owner, sizeof pick->owner);
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

/* 429 problem+json with Retry-After in whole seconds (at least 1). */
static int too_many(struct http_req *r, int64_t retry_ms, const char *detail)
{
	char after[24];
	snprintf(after, sizeof after, "%lld", (long long)(retry_ms > 0 ? (retry_ms + 999) / 1000 : 1));
	http_reply_header(r, "Retry-After", after);
	return http_reply_problem(r, ERR_RATE_LIMITED, detail, NULL);
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
	uint8_t nonce[ATTESTD_NONCE_LEN], who[ATTESTD_ADDR_KEY_LEN];
	char addr[64], detail[192];
	int64_t now = attestd_now_ms(), expires = 0, retry_ms = 0;
	bool known = attestd_addr_key(http_req_remote_addr(r), who, addr, sizeof addr), full = false;
	if (known && !attestd_limiter_take(c->limiter, who, now, &retry_ms)) {
		metric_inc(metric_series(c->m_challenges, METRIC_LABELS("rate_limited")));
		snprintf(detail, sizeof detail, "too many challenges from %s (challenge.rate_per_s); retry later",
			 addr);
		return too_many(r, retry_ms, detail);
	}
	int rc = attestd_nonce_issue(c->nonces, now, known ? who : NULL, (size_t)c->set.nonce_per_address, nonce,
				     &expires, &full, &retry_ms);
	if (rc != 0) {
		metric_inc(metric_series(c->m_challenges, METRIC_LABELS(full ? "refused" : "address_quota")));
		if (full)
			snprintf(detail, sizeof detail, "every nonce slot is in use; retry shortly");
		else
			snprintf(detail, sizeof detail,
				 "%s holds %lld unused nonces already (nonce.max_per_address); use or let one expire",
				 addr, (long long)c->set.nonce_per_address);
		return too_many(r, retry_ms, detail);
	}
	metric_inc(metric_series(c->m_challenges, METRIC_LABELS("issued")));
	char hex[2 * ATTESTD_NONCE_LEN + 1], at[32];
	sodium_bin2hex(hex, sizeof hex, nonce, sizeof nonce);
	attestd_rfc3339(expires / 1000, at, sizeof at);
	http_reply_header(r, "Cache-Control", "no-store");
	return http_reply_json(r, 201, json_pack("{s:s, s:s, s:I}", "nonce", hex, "expires_at", at,
						 "expires_in_seconds", (json_int_t)((expires - now) / 1000)));
}
