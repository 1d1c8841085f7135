/* mnet: the MPC engine's transport between party processes, over mutual TLS.
 *
 * Each round a party sends one binary payload to every peer and then waits for the
 * payload of every peer for the same round. Two ways to carry the payloads, chosen per
 * net (struct mnet_opts.mode):
 *
 *   stream   (the default) one long-lived mTLS connection per ordered pair of parties
 *            and generation. Party i connects to party j's stream listener (a port of
 *            its own, served by j's hub, see mnet_hub_listen), sends an HTTP/1.1
 *            Upgrade request naming the generation and both ends (GET
 *            MNET_STREAM_ROUTE?session=..&generation=..&sender=i&receiver=j, Upgrade:
 *            MNET_STREAM_PROTOCOL), and after the 101 writes its payloads for j back
 *            to back. A round costs one one-way trip, with nothing to wait for in
 *            return.
 *   request  every payload is a POST MNET_ROUTE to the peer's HTTPS server on a
 *            persistent connection (curl's multi interface, all peers in parallel),
 *            answered 204 before the round goes on.
 *
 * Why a listener of its own rather than an Upgrade on the HTTPS server: libmicrohttpd
 * (0.9.75) relays an upgraded TLS connection through a socketpair with an 8-byte
 * buffer, 4 bytes per system call, once the connection's memory pool is spent (which
 * it is, whatever its size): slower than a POST per round. See docs/ARCHITECTURE.md.
 *
 * A payload is a fixed 48-byte header, then the data; on a stream payloads simply
 * follow each other:
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
 * sender (certificate fingerprint, party role; a stream is bound to one sender and
 * generation when it is opened), only in round order (a replayed or reordered payload
 * is refused and aborts the generation), and only within a memory bound. An abort
 * anywhere (MAC failure, a peer gone, cancel, timeout) is sent to every peer so that
 * all of them stop at once instead of waiting for their timeout. A stream that ends is
 * a peer gone: waiting for its next payload fails at once.
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

#define MNET_ROUTE "/v1/mpc/rounds"        /* POST: one payload (request mode, aborts) */
#define MNET_STREAM_ROUTE "/v1/mpc/stream" /* the Upgrade request on a stream listener */
#define MNET_STREAM_PROTOCOL "mimir-mpc/1"
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
 * 410 the generation was aborted, 503 over the memory bound. The party's HTTPS server
 * routes it in every mode (aborts travel this way when a stream cannot carry them),
 * to the party role only: {"POST", MNET_ROUTE, handler, HTTP_ROLE(IDENT_ROLE_PARTY),
 * MNET_HDR_LEN + MNET_MAX_DATA, HTTP_ROUTE_QUIET | HTTP_ROUTE_SECRET}. The hub must
 * outlive the server. */
int mnet_hub_deliver(struct mnet_hub *hub, struct http_req *req);

/* The stream listener: mutual TLS with the party's own certificate, client
 * certificates required and verified against the CA alone (chain, validity,
 * clientAuth), then one HTTP/1.1 request per connection: GET MNET_STREAM_ROUTE with
 * ?session=<32 hex>&generation=<n>&sender=<i>&receiver=<j> and Upgrade:
 * MNET_STREAM_PROTOCOL. It answers 101 and reads payloads from then on, or a problem
 * and closes: 400 malformed, 403 not a party certificate or not the one registered for
 * the sender, 404 another path, 409 the sender already has (or had) a stream for this
 * generation, 410 the generation was aborted, 426 no Upgrade, 431 request too large,
 * 503 too many generations not yet joined. Payloads on a stream are filed with the
 * rules of mnet_hub_deliver; one that breaks them (or names another generation or
 * party) ends the stream, and a violation of the round order aborts the generation
 * too. A payload for a generation aborted here is read and dropped (the sender learns
 * of the abort from this party's notice). Handshakes and requests are bounded in time
 * and size, streams in number. One reader thread serves the listener and every
 * stream; mnet_hub_free stops it. */
struct mnet_listen_opts {
	const char *bind;   /* numeric address (default 127.0.0.1) */
	uint16_t port;      /* 0: an ephemeral port (see mnet_hub_stream_port) */
	const char *ca_file, *cert_file, *key_file; /* the party's mTLS material */
	unsigned max_streams;  /* connections at once, streams and handshakes (default 256) */
	unsigned handshake_ms; /* TLS handshake and Upgrade request (default 5000) */
};
int mnet_hub_listen(struct mnet_hub *hub, const struct mnet_listen_opts *o);
uint16_t mnet_hub_stream_port(const struct mnet_hub *hub);

/* ---- sending side: one net per party and generation ---- */
struct mnet_peer {
	const char *url;            /* its HTTPS server, "https://10.0.0.2:8443" (every mode:
				       aborts may travel this way) */
	uint8_t fingerprint[32];    /* SHA-256 of the peer's certificate (DER) */
	const char *stream_url;     /* its stream listener, "https://10.0.0.2:8444" (stream
				       mode; the host must be one the certificate names) */
};

enum mnet_mode {
	MNET_MODE_DEFAULT = 0, /* stream: 3-5x less time per round than request on loopback */
	MNET_MODE_STREAM,
	MNET_MODE_REQUEST,
};

struct mnet_opts {
	const char *ca_file, *cert_file, *key_file; /* this party's mTLS material */
	unsigned timeout_ms; /* bound on one round (sending it and waiting for the peers'),
				and on opening each stream (0: 5000) */
	enum mnet_mode mode;
};

/* Registers (session, generation, party) with the hub and returns the engine's
 * transport. peers has nparties entries (this party's own is not used) and is copied:
 * every peer needs a url, and in stream mode a stream_url, and the hub must be
 * listening (mnet_hub_listen) (else ERR_INVALID). Nothing
 * is connected yet: the first exchange opens the streams (or the request connections).
 * The net owns its connections and is used by one thread at a time, except for
 * mpc_net_abort, which any thread may call. Free it with mpc_net_free, which
 * unregisters it and closes the streams of this generation in both directions. */
int mnet_net_new(struct mnet_hub *hub, const uint8_t session[MNET_SESSION_LEN],
		 uint64_t generation, unsigned party, unsigned nparties,
		 const struct mnet_peer *peers, const struct mnet_opts *o, struct mpc_net **out);

/* SHA-256 of the DER certificate in a PEM file (what mnet_peer.fingerprint wants). */
int mnet_cert_fingerprint(const char *pem_path, uint8_t out[32]);

#endif
