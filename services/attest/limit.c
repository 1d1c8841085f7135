/* mimir-attest per-address limits for the anonymous challenge endpoint. Two bounds
 * work together: a token bucket per client address (challenge.rate_per_s,
 * challenge.burst) bounds the work one address can cause, since every attestation
 * needs a nonce first; and the nonce table counts the live nonces of each address
 * (nonce.max_per_address, nonce.c), so that one address can never hold more than its
 * share of the table, whatever its rate. A client is its IPv4 address or the /64 of
 * its IPv6 address (a host usually holds a whole /64).
 *
 * The buckets live in a fixed table (challenge.track_max entries), hashed with a
 * random key so that a client cannot aim at another's entry; a lookup probes a few
 * slots and, when all are taken, reuses the one idle longest. Forgetting a client only
 * gives it a full bucket again, so memory is bounded whatever the number of
 * addresses, at the price of at most one burst per eviction. */
#include <arpa/inet.h>
#include <netinet/in.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>

#include <sodium.h>

#include "attestd.h"
#include "err/err.h"

#define PROBES 8

struct bucket {
	uint8_t key[ATTESTD_ADDR_KEY_LEN];
	bool used;
	double tokens;
	int64_t last_ms;
};

struct attestd_limiter {
	pthread_mutex_t mu;
	struct bucket *b;
	size_t cap;
	double rate, burst;
	uint8_t hash_key[crypto_shorthash_KEYBYTES];
};

bool attestd_addr_key(const struct sockaddr *sa, uint8_t key[ATTESTD_ADDR_KEY_LEN], char *text, size_t cap)
{
	static const uint8_t mapped[12] = {0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0xff, 0xff};
	memset(key, 0, ATTESTD_ADDR_KEY_LEN);
	if (text && cap)
		snprintf(text, cap, "?");
	if (!sa)
		return false;
	const uint8_t *v4 = NULL;
	if (sa->sa_family == AF_INET) {
		v4 = (const uint8_t *)&((const struct sockaddr_in *)(const void *)sa)->sin_addr;
	} else if (sa->sa_family == AF_INET6) {
		const uint8_t *a = ((const struct sockaddr_in6 *)(const void *)sa)->sin6_addr.s6_addr;
		if (memcmp(a, mapped, sizeof mapped) == 0) {
			v4 = a + 12;
		} else {
			key[0] = 6;
			memcpy(key + 1, a, 8); /* the /64 */
			if (text && cap) {
				uint8_t net[16] = {0};
				char s[INET6_ADDRSTRLEN];
				memcpy(net, a, 8);
				inet_ntop(AF_INET6, net, s, sizeof s);
				snprintf(text, cap, "%s/64", s);
			}
			return true;
		}
	} else {
		return false;
	}
	key[0] = 4;
	memcpy(key + 1, v4, 4);
	if (text && cap)
		inet_ntop(AF_INET, v4, text, (socklen_t)cap);
	return true;
}

int attestd_limiter_new(struct attestd_limiter **out, size_t cap, double rate, double burst)
{
	*out = NULL;
	if (cap == 0 || burst < 1)
		return ERR_INVALID;
	struct attestd_limiter *l = calloc(1, sizeof *l);
	if (!l || !(l->b = calloc(cap, sizeof *l->b))) {
		free(l);
		return ERR_NOMEM;
	}
	pthread_mutex_init(&l->mu, NULL);
	l->cap = cap;
	l->rate = rate;
	l->burst = burst;
	randombytes_buf(l->hash_key, sizeof l->hash_key);
	*out = l;
	return 0;
}

void attestd_limiter_free(struct attestd_limiter *l)
{
	if (!l)
		return;
	free(l->b);
	pthread_mutex_destroy(&l->mu);
	free(l);
}

bool attestd_limiter_take(struct attestd_limiter *l, const uint8_t key[ATTESTD_ADDR_KEY_LEN], int64_t now_ms,
			  int64_t *retry_ms)
{
	*retry_ms = 0;
	if (l->rate <= 0)
		return true;
	uint8_t h[crypto_shorthash_BYTES];
	crypto_shorthash(h, key, ATTESTD_ADDR_KEY_LEN, l->hash_key);
	uint64_t start;
	memcpy(&start, h, sizeof start);
	pthread_mutex_lock(&l->mu);
	/* The client's bucket, else an empty slot, else the one idle longest. */
	struct bucket *hit = NULL, *spare = NULL;
	for (size_t i = 0; i < PROBES && i < l->cap && !hit; i++) {
		struct bucket *b = &l->b[(start + i) % l->cap];
		if (b->used && memcmp(b->key, key, ATTESTD_ADDR_KEY_LEN) == 0)
			hit = b;
		else if (!spare || (spare->used && (!b->used || b->last_ms < spare->last_ms)))
			spare = b;
	}
	if (!hit) {
		hit = spare;
		memcpy(hit->key, key, ATTESTD_ADDR_KEY_LEN);
		hit->used = true;
		hit->tokens = l->burst;
		hit->last_ms = now_ms;
	}
	double elapsed = now_ms > hit->last_ms ? (double)(now_ms - hit->last_ms) / 1000.0 : 0;
	hit->tokens += elapsed * l->rate;
	if (hit->tokens > l->burst)
		hit->tokens = l->burst;
	hit->last_ms = now_ms;
	bool ok = hit->tokens >= 1.0;
	if (ok)
		hit->tokens -= 1.0;
	else
		*retry_ms = (int64_t)((1.0 - hit->tokens) / l->rate * 1000.0) + 1;
	pthread_mutex_unlock(&l->mu);
	return ok;
}
