/* prepnet: the party side of the dealer service, an implementation of the engine's
 * struct mpc_prep_source (common/mpc/mpc.h) that fetches payloads from mimir-dealer
 * over mutual TLS.
 *
 * One prepnet serves one party of one dealer session. It keeps one persistent mTLS
 * connection to the dealer (httpc), accepts only the dealer: a certificate of the Mimir
 * CA with the dealer role, and when a fingerprint is given, exactly that certificate
 * (checked inside the handshake, so nothing is sent to an impostor). A payload larger
 * than max_payload is refused while it arrives.
 *
 * Every call is bounded by timeout_ms, retries included: a dealer that cannot be
 * reached is tried again with backoff until the bound, then the call fails with
 * ERR_UNAVAILABLE; a dealer that accepts but does not answer in time gives ERR_TIMEOUT.
 * The engine turns either into an abort ("preprocessing") that reaches every party
 * through its transport, so no party waits longer than this bound plus one round, and
 * none spins: the wait is in poll(2). prepnet_last_error() says what happened in words
 * (the dealer's problem detail for a refusal). Refusals map to codes: 400 ERR_INVALID,
 * 403 ERR_FORBIDDEN, 404 ERR_NOT_FOUND, 409 ERR_CONFLICT, 503 ERR_UNAVAILABLE, other
 * statuses ERR_UPSTREAM; a certificate or role mismatch is ERR_TLS.
 *
 * Secrets: the seed and the payloads are wiped from every buffer prepnet owns (httpc's
 * growth copies are outside its reach). Threads: one prepnet per party thread (the
 * engine's); prepnet_get_stats may be called from any thread. */
#ifndef MIMIR_PREPNET_H
#define MIMIR_PREPNET_H

#include <stddef.h>
#include <stdint.h>

#include "mpc/mpc.h"

#define PREPNET_DEFAULT_TIMEOUT_MS 10000
#define PREPNET_DEFAULT_MAX_PAYLOAD (64u << 20)

struct prepnet;

struct prepnet_opts {
	const char *url;                   /* the dealer: "https://10.0.0.5:8444" */
	const char *ca_file;               /* the Mimir CA (PEM) */
	const char *cert_file, *key_file;  /* this party's certificate and key */
	const uint8_t *dealer_fingerprint; /* SHA-256 of the dealer's certificate (32 bytes,
					      copied), or NULL: any dealer of the CA */
	const char *session;               /* dealer session id: 1..64 of [A-Za-z0-9._-] */
	unsigned party;                    /* this party's index in the session */
	unsigned timeout_ms;               /* bound on one call, retries included (0: default) */
	size_t max_payload;                /* largest payload accepted (0: default) */
};

struct prepnet_stats {
	uint64_t fetches;     /* payloads received */
	uint64_t bytes;       /* payload bytes received */
	uint64_t retries;     /* attempts repeated because the dealer could not be reached */
	uint64_t wait_ms;     /* time spent in calls to the dealer */
	uint64_t max_wait_ms; /* the longest single call */
};

/* Copies every option. ERR_INVALID for a missing URL, CA, certificate or key, a bad
 * session id or a party index past MPC_MAX_PARTIES. Nothing is sent yet. */
int prepnet_new(const struct prepnet_opts *o, struct prepnet **out);
/* Accepts NULL. */
void prepnet_free(struct prepnet *pn);

/* This party's PRG seed (once per session: the dealer refuses a second delivery with
 * ERR_CONFLICT). The caller wipes seed after mpc_new. */
int prepnet_seed(struct prepnet *pn, uint8_t seed[MPC_SEED_BYTES]) __attribute__((warn_unused_result));

/* The engine's source; valid while pn lives. fetch() is asked only for this party. */
struct mpc_prep_source prepnet_source(struct prepnet *pn);

/* Tells the dealer that this party's engine aborted, with the engine's name of the
 * failed check (mpc_failed_check): the dealer counts sacrifice failures and stops
 * serving the session. */
int prepnet_report(struct prepnet *pn, const char *check);

/* The last failure in words ("" when none). Valid until the next call on pn. */
const char *prepnet_last_error(const struct prepnet *pn);
void prepnet_get_stats(const struct prepnet *pn, struct prepnet_stats *st);

#endif
