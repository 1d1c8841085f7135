/* mnet: the MPC engine's transport between party processes, over mutual TLS.
 *
 * Each round, a party POSTs one binary payload to every peer at once (one persistent
 * mTLS connection per peer, curl's multi interface) and then waits for the payload of
 * every peer for the same round, which the peer POSTed to this party's own HTTP server.
 * A payload is a fixed 48-byte header, then the data:
 *
 *   offset  size  field (little endian)
 *        0     4  magic "MMPC"
 *        4     2  version (1)
 *        6     2  flags (bit 0: ABORT, the sender gives up this generation; no data)
 *        8    16  session id
 *       24     8  generation
 *       32     8  round (0, 1, 2, ... per generation and sender)
 *       40     2  sender party index
 *       42     2  receiver party index
 *       44     4  data length
 *
 * The receiving side (a hub, one per party process) files payloads by (session,
 * generation, receiver), accepts them only from the TLS identity registered for that
 * sender (certificate fingerprint), only in round order (a replayed or reordered
 * payload is refused and aborts the generation), and only within a memory bound. An
 * abort anywhere (MAC failure, a peer gone, cancel, timeout) is sent to every peer so
 * that all of them stop at once instead of waiting for their timeout.
 *
 * The transport plugs into the engine as a struct mpc_net (common/mpc/mpc.h): protocol
 * code is the same over this and the in-process hub. */
#ifndef MIMIR_MNET_H
#define MIMIR_MNET_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

struct http_req;
struct mpc_net;

#define MNET_ROUTE "/v1/mpc/rounds"
#define MNET_HDR_LEN 48
#define MNET_VERSION 1
#define MNET_FLAG_ABORT 1u
#define MNET_SESSION_LEN 16
#define MNET_MAX_DATA (64u << 20)

struct mnet_hdr {
	uint16_t version;
	uint16_t flags;
	uint8_t session[MNET_SESSION_LEN];
	uint64_t generation;
	uint64_t round;
	uint16_t sender;
	uint16_t receiver;
	uint32_t length;
};

void mnet_hdr_encode(const struct mnet_hdr *h, uint8_t out[MNET_HDR_LEN]);
/* Parses a whole payload (header and data, len bytes): magic, version, known flags,
 * party indexes below MPC_MAX_PARTIES and distinct, length equal to the data present
 * (0 for ABORT) and at most MNET_MAX_DATA. ERR_PARSE / ERR_UNSUPPORTED / ERR_RANGE. */
int mnet_hdr_decode(const uint8_t *buf, size_t len, struct mnet_hdr *h)
	__attribute__((warn_unused_result));

/* ---- receiving side: one hub per party process ---- */
struct mnet_hub;
/* max_buffered bounds the bytes held for all generations together (0: 256 MiB). */
int mnet_hub_new(size_t max_buffered, struct mnet_hub **out);
/* Every net made from the hub must be freed first. Accepts NULL. */
void mnet_hub_free(struct mnet_hub *hub);
/* Files the request's payload; answers 204, or a problem: 400 malformed, 403 not the
 * registered sender, 409 replayed or out-of-order round (the generation is aborted),
 * 410 the generation was aborted, 503 over the memory bound. The route must admit
 * only the party role: {"POST", MNET_ROUTE, handler, HTTP_ROLE(IDENT_ROLE_PARTY),
 * MNET_HDR_LEN + MNET_MAX_DATA, HTTP_ROUTE_QUIET | HTTP_ROUTE_SECRET}. */
int mnet_hub_deliver(struct mnet_hub *hub, struct http_req *req);

/* ---- sending side: one net per party and generation ---- */
struct mnet_peer {
	const char *url;            /* "https://10.0.0.2:8443" (this party's own entry unused) */
	uint8_t fingerprint[32];    /* SHA-256 of the peer's certificate (DER) */
};

struct mnet_opts {
	const char *ca_file, *cert_file, *key_file; /* this party's mTLS material */
	unsigned timeout_ms; /* bound on one round's wait for the peers (0: 5000) */
};

/* Registers (session, generation, party) with the hub and returns the engine's
 * transport. peers has nparties entries. The net owns its connections; free it with
 * mpc_net_free (which unregisters it). */
int mnet_net_new(struct mnet_hub *hub, const uint8_t session[MNET_SESSION_LEN],
		 uint64_t generation, unsigned party, unsigned nparties,
		 const struct mnet_peer *peers, const struct mnet_opts *o, struct mpc_net **out);

/* SHA-256 of the DER certificate in a PEM file (what mnet_peer.fingerprint wants). */
int mnet_cert_fingerprint(const char *pem_path, uint8_t out[32]);

#endif
