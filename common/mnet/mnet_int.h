/* mnet internals shared by mnet.c (framing, hub, the net), listen.c (the stream
 * listener and reader) and link.c (the sending end of streams); not part of the public
 * API. Everything the HTTP threads, the stream reader and the engine threads share is
 * under the hub's one lock. */
#ifndef MIMIR_MNET_INT_H
#define MIMIR_MNET_INT_H

#include <pthread.h>
#include <stdbool.h>
#include <stdint.h>

#include "buf/buf.h"
#include "mnet/mnet.h"
#include "mpc/mpc.h"

struct httpc;
struct httpc_multi;
struct mnet_stream; /* receiving end of one stream (listen.c) */
struct mnet_link;   /* sending end of one stream (link.c) */
typedef struct ssl_ctx_st SSL_CTX;

struct msg {
	uint64_t round;
	uint8_t *data;
	size_t len;
	struct msg *next;
};

/* One generation as seen by one receiving party. Created by registration, or by the
 * first payload or stream when a faster peer is already sending (then unregistered
 * until this party catches up, with the senders' fingerprints recorded for the later
 * check). */
struct chan {
	uint8_t session[MNET_SESSION_LEN];
	uint64_t generation;
	unsigned party, nparties;
	bool registered;
	bool aborted;
	char why[128];
	pthread_cond_t cv;
	uint8_t fp[MPC_MAX_PARTIES][32];
	bool fp_set[MPC_MAX_PARTIES];
	uint64_t next_round[MPC_MAX_PARTIES];
	struct msg *head[MPC_MAX_PARTIES], *tail[MPC_MAX_PARTIES];
	struct mnet_stream *in[MPC_MAX_PARTIES]; /* the sender's open stream */
	bool stream_seen[MPC_MAX_PARTIES];       /* it had one (a second is refused) */
	bool gone[MPC_MAX_PARTIES];              /* its stream ended: no more payloads */
	unsigned waiting_for;                    /* 1 + the sender the engine waits on, or 0:
						    other payloads need not wake it */
	/* stream mode: the engine waits in poll(), woken through evfd */
	int evfd;                                /* -1 until a stream-mode net registers */
	bool in_exchange;                        /* the engine has borrowed its streams */
	bool polling;                            /* ... and sleeps in poll() right now */
	long long created_ms;
	struct chan *next;
};

struct mnet_hub {
	pthread_mutex_t mu;
	struct chan *chans;
	size_t buffered, max_buffered; /* data held or reserved for payloads being read */
	unsigned unregistered;
	/* the stream listener and its reader (listen.c) */
	struct mnet_stream *streams; /* every connection, handshakes included */
	unsigned nstreams, max_streams, handshake_ms;
	SSL_CTX *tls;
	int lfd, epfd, evfd;
	uint16_t port;
	pthread_t reader;
	bool reader_running, reader_stop;
};

/* Generations that peers started but this party has not joined: bounded in number and
 * age, so stray or late payloads cannot pile up. */
#define MAX_UNREGISTERED 64
#define UNREGISTERED_TTL_MS 30000

/* The header alone (a stream reads it before the data): every check of
 * mnet_hdr_decode but the one against the bytes present. */
int mnet_hdr_decode_head(const uint8_t buf[MNET_HDR_LEN], struct mnet_hdr *h);

long long mnet_mono_ms(void);
void mnet_deadline(struct timespec *dl, unsigned ms);

/* Hub lock held for all of these. */
/* Frees the unregistered generations past their age (and closes their streams). */
void mnet_hub_sweep(struct mnet_hub *h);
struct chan *mnet_chan_find(struct mnet_hub *h, const uint8_t *session, uint64_t gen, unsigned party);
/* Finds the generation, or creates it unregistered within the bound; NULL with *detail
 * set when the bound is reached or memory is short. */
struct chan *mnet_chan_get(struct mnet_hub *h, const uint8_t *session, uint64_t gen, unsigned party,
			   const char **detail);
void mnet_chan_abort(struct chan *c, const char *why);
/* Wakes the generation's engine, whichever way it waits. */
void mnet_chan_notify(struct chan *c);
/* The checks a payload's sender passes before anything else: the generation is not
 * aborted (ERR_ABORTED), the sender is one of its parties, the certificate is the one
 * registered for it (recorded when none is yet). 0 or ERR_* with *detail. */
int mnet_check_sender(struct mnet_hub *h, struct chan *c, unsigned sender, const uint8_t fp[32],
		      const char *cn, const char **detail);
/* Files one payload (header already decoded, data taken: freed on refusal) after the
 * sender checks: ABORT, round order, memory bound. 0 or ERR_* with *detail. */
int mnet_file(struct mnet_hub *h, struct chan *c, const struct mnet_hdr *hd, uint8_t *data,
	      const char **detail);

/* listen.c: the receiving side's reader, and the hub's part in freeing a generation. */
void mnet_streams_detach(struct mnet_hub *h, struct chan *c); /* hub lock held */
void mnet_streams_stop(struct mnet_hub *h);                   /* at hub free */
/* The engine takes its generation's streams at each exchange (those bound since the
 * last one; it keeps them until mnet_streams_detach), then each time round its loop
 * lists them for poll() (*now set when one must be read without waiting: bytes already
 * inside OpenSSL), marks the ones poll() found readable and pumps them (hub lock held
 * for all but the pump). */
struct pollfd;
void mnet_streams_borrow(struct mnet_hub *h, struct chan *c);
unsigned mnet_streams_poll(struct chan *c, struct pollfd *pf, struct mnet_stream **who, bool *now);
void mnet_stream_mark_ready(struct mnet_stream *s);
void mnet_stream_engine_pump(struct mnet_hub *h, struct mnet_stream *s);

/* The sending side of one net. */
struct mnet_net {
	struct mnet_hub *hub;
	struct chan *chan;
	unsigned party, nparties;
	unsigned timeout_ms;
	enum mnet_mode mode;
	uint64_t round;
	struct httpc *peer[MPC_MAX_PARTIES];
	struct httpc_multi *multi;
	struct mnet_link *link[MPC_MAX_PARTIES];
	bool links_open;
	struct buf out[MPC_MAX_PARTIES];
	struct mnet_opts o;
	struct mnet_peer peers[MPC_MAX_PARTIES]; /* urls point at the copies below */
	char *urls[2 * MPC_MAX_PARTIES];
	uint8_t session[MNET_SESSION_LEN];
	uint64_t generation;
	bool notified; /* the peers have been told this generation is over */
};

/* Frames this party's payload for peer j into n->out[j]. */
int mnet_frame(struct mnet_net *n, unsigned j, const uint8_t *data, size_t len, uint16_t flags);
/* Takes the round's payloads once every peer's is in (hub lock held): 0, or the error
 * that ends the generation (it is aborted here then), with its reason in why. Returns 1
 * when some peer's payload is still missing. */
int mnet_take_round(struct mnet_net *n, uint8_t *const recv[], const size_t recv_len[], char *why,
		    size_t cap);

/* link.c: the sending side. */
int mnet_links_open(struct mnet_net *n);
/* One round in stream mode: sends n->out[j] to every peer and reads the peers'
 * payloads from the borrowed streams in one poll loop, within timeout_ms. */
int mnet_stream_exchange(struct mnet_net *n, uint8_t *const recv[], const size_t recv_len[], char *why,
			 size_t cap);
/* Sends an ABORT frame on every stream that is free right now; marks in reached[j]
 * the peers it reached. */
void mnet_links_abort(struct mnet_net *n, bool reached[MPC_MAX_PARTIES]);
void mnet_links_free(struct mnet_net *n);

#endif
