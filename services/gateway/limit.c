/* mimir-gateway rate limits: one token bucket per credential (an API key id, an
 * administrator), in a fixed table so that a flood of made-up credentials costs a
 * bounded amount of memory. A bucket holds at most `burst` tokens, gains `rate` per
 * second and pays one per request. Slots are found by a keyed hash (a secret key per
 * process, so nobody can aim collisions at a victim's slot) and a short probe; when
 * the probe finds no free slot, the least recently used slot of the probe is reused,
 * which hands its credential a fresh bucket: under that much churn a credential can
 * get at most one extra burst, never unlimited requests. */
#include <math.h>
#include <stdio.h>
#include <pthread.h>
#include <stdlib.h>
#include <string.h>

#include <sodium.h>

#include "err/err.h"
#include "gateway.h"

#define PROBE 8
#define KEY_MAX 72 /* "a:" + an actor of up to 64 bytes */

struct bucket {
	char key[KEY_MAX];
	double tokens;
	int64_t seen_ms; /* last refill */
};

struct gw_limits {
	pthread_mutex_t mu;
	struct bucket *b;
	size_t n;
	uint8_t hkey[crypto_shorthash_KEYBYTES];
};

int gw_limits_new(struct gw_limits **out, size_t buckets)
{
	struct gw_limits *l = calloc(1, sizeof *l);
	if (!l || buckets < PROBE || !(l->b = calloc(buckets, sizeof *l->b))) {
		free(l);
		return buckets < PROBE ? ERR_INVALID : ERR_NOMEM;
	}
	l->n = buckets;
	randombytes_buf(l->hkey, sizeof l->hkey);
	pthread_mutex_init(&l->mu, NULL);
	*out = l;
	return 0;
}

void gw_limits_free(struct gw_limits *l)
{
	if (!l)
		return;
	pthread_mutex_destroy(&l->mu);
	free(l->b);
	free(l);
}

static size_t slot_of(const struct gw_limits *l, const char *key)
{
	uint8_t h[crypto_shorthash_BYTES];
	crypto_shorthash(h, (const unsigned char *)key, strlen(key), l->hkey);
	uint64_t v;
	memcpy(&v, h, sizeof v);
	return (size_t)(v % l->n);
}

bool gw_limits_take(struct gw_limits *l, const char *key, double rate, double burst,
		    int64_t now_ms, unsigned *retry_after_s)
{
	if (rate <= 0 || !l)
		return true;
	if (burst < 1)
		burst = 1;
	char k[KEY_MAX];
	snprintf(k, sizeof k, "%s", key);
	size_t first = slot_of(l, k);
	pthread_mutex_lock(&l->mu);
	struct bucket *hit = NULL, *lru = NULL;
	for (size_t i = 0; i < PROBE && !hit; i++) {
		struct bucket *b = &l->b[(first + i) % l->n];
		if (b->key[0] && strcmp(b->key, k) == 0)
			hit = b;
		else if (!lru || !b->key[0] || (lru->key[0] && b->seen_ms < lru->seen_ms))
			lru = b;
	}
	if (!hit) {
		hit = lru;
		memcpy(hit->key, k, sizeof k);
		hit->tokens = burst;
		hit->seen_ms = now_ms;
	}
	if (now_ms > hit->seen_ms) {
		hit->tokens = fmin(burst, hit->tokens + rate * (double)(now_ms - hit->seen_ms) / 1000.0);
		hit->seen_ms = now_ms;
	}
	bool ok = hit->tokens >= 1.0;
	if (ok) {
		hit->tokens -= 1.0;
	} else if (retry_after_s) {
		double wait = (1.0 - hit->tokens) / rate;
		*retry_after_s = wait < 1 ? 1 : wait > 86400 ? 86400 : (unsigned)ceil(wait);
	}
	pthread_mutex_unlock(&l->mu);
	return ok;
}
