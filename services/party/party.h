/* mimir-party: one organisation's party as a service. It holds one share of the model
 * (a sealed share file, opened with its X25519 key, decrypted only while a session
 * loads its weights), publishes its sealing key beside its certificate, and runs
 * sessions: each session is one MPC engine shared with the other parties over mnet,
 * with the weights loaded once (smodel_new_shares) and any number of generations run
 * one after the other, the client's prompt entering and every token leaving through the
 * client protocols of common/clientio. docs/PARTY.md is the user's description.
 *
 * This header is shared by the service's files: settings, context, session and
 * generation state, the worker and the handlers of the route table.
 *
 * Threads. Handlers run in the HTTP server's workers and never block on the MPC: every
 * session has one worker thread (worker.c) that owns its engine, smodel, transport and
 * dealer client and runs everything that talks to peers; handlers only queue work and
 * read state. A janitor thread (main.c) aborts the transports of sessions being closed
 * (an abort may take a moment to reach the peers) and closes idle sessions.
 *
 * Locking. ctx->mu guards the session table, every reference count, the live worker
 * and running generation counts. A session's mu guards its state, its generations and
 * its net pointer. The order is ctx->mu, then a session's mu; nobody holds a session's
 * mu while taking ctx->mu. */
#ifndef MIMIR_PARTY_H
#define MIMIR_PARTY_H

#include <pthread.h>
#include <stdbool.h>
#include <stdint.h>

#include "clientio/clientio.h"
#include "http/http.h"
#include "mnet/mnet.h"
#include "model/model.h"
#include "mpc/mpc.h"
#include "mshare/mshare.h"

struct metric;
struct metric_series;
struct sse_log;
struct smodel;
struct prepnet;

/* Who may open, read and close sessions; who relays generations for a client. */
#define PARTY_CONTROL                                                                      \
	(HTTP_ROLE(IDENT_ROLE_ADMIN) | HTTP_ROLE(IDENT_ROLE_SESSION) | HTTP_ROLE(IDENT_ROLE_GATEWAY))
#define PARTY_RELAY (HTTP_ROLE(IDENT_ROLE_ADMIN) | HTTP_ROLE(IDENT_ROLE_GATEWAY))

#define PARTY_ID_HEX (2 * CIO_ID_BYTES) /* session and generation ids: 32 lowercase hex */
#define PARTY_URL_MAX 256
#define PARTY_DETAIL_MAX 320
#define PARTY_DEALER_ID_MAX 64
#define PARTY_KEEP_FINISHED 4 /* finished generations a session keeps for status and replay */
#define PARTY_EVENT_BYTES ((size_t)2 << 20) /* replay buffer of one generation's events */
#define PARTY_MNET_GENERATION 1 /* a session is one mnet generation: one engine, one net */

struct party_settings {
	/* the party's certificate for what it opens itself (streams to peers, the dealer)
	 * and for its stream listener: normally the same files as tls.* */
	const char *mtls_cert, *mtls_key, *mtls_ca;
	const char *stream_bind;
	int64_t stream_port;
	int64_t stream_max;
	const char *model_share; /* the sealed share file */
	const char *model_key;   /* its X25519 secret key (also the sealing key of clientio) */
	int64_t max_sessions;
	int64_t max_generations; /* running at once, over all sessions */
	int64_t idle_expiry_s;   /* a session without activity this long is closed (0: never) */
	int64_t input_timeout_ms; /* a generation's wait for the client's INPUT */
	int64_t round_ms;         /* bound on one MPC round (mnet) */
	int64_t dealer_ms;        /* bound on one dealer call, retries included (prepnet) */
	int64_t check_every;      /* mpc_config.check_every */
	int64_t heartbeat_ms;     /* SSE heartbeats */
	int mode;                 /* 0 stream, 1 request */
};

extern struct party_settings party_settings;

enum psession_state {
	PS_CREATED = 0,
	PS_INITIALISING,
	PS_READY,
	PS_FAILED,
	PS_CLOSED, /* deleted or expired: out of the table, the worker is winding down */
};

enum pgen_state {
	PG_MASKING = 0,   /* making the client's masks with the peers */
	PG_AWAITING_INPUT, /* MASKS sent; waiting for the client's INPUT */
	PG_RUNNING,       /* receipt sent, tokens being generated */
	PG_DONE,
	PG_FAILED,
	PG_CANCELLED,
};

struct sampling_req {
	double temperature, top_p;
	int64_t top_k;
	bool has_seed;
	uint64_t seed;
};

/* One generation. Fields below `worker-owned` are touched by the worker alone; the
 * rest under the session's mu. */
struct pgen {
	char id[PARTY_ID_HEX + 1];
	uint8_t gid[CIO_ID_BYTES];
	uint8_t client_pk[CIO_KEY_BYTES];
	uint32_t slots, max_tokens, n_in, n_out;
	struct sampling_req sampling;
	enum pgen_state state;
	char detail[PARTY_DETAIL_MAX];
	int code;            /* the ERR_* that ended it (0 while running or done) */
	uint8_t *input;      /* the client's INPUT message, once posted */
	size_t input_len;
	bool cancel;         /* asked to stop at the next token boundary */
	uint32_t tokens;     /* outputs released */
	int64_t created_ms, finished_ms;
	struct sse_log *log; /* masks, receipt, token..., done | error */
	bool counted;        /* holds one of limits.max_generations */
};

struct psession {
	char id[PARTY_ID_HEX + 1];
	uint8_t sid[MNET_SESSION_LEN];
	unsigned index, nparties, frac_bits, pad;
	int n_ctx;
	/* peers (own entry unused) and the dealer, as given at creation */
	char url[MPC_MAX_PARTIES][PARTY_URL_MAX];
	char stream_url[MPC_MAX_PARTIES][PARTY_URL_MAX];
	uint8_t fp[MPC_MAX_PARTIES][32];
	char dealer_url[PARTY_URL_MAX];
	char dealer_session[PARTY_DEALER_ID_MAX + 1];
	uint8_t dealer_fp[32];
	bool has_dealer_fp;

	struct party_ctx *ctx;
	/* ctx->mu */
	unsigned refs;
	/* mu */
	pthread_mutex_t mu;
	pthread_cond_t cv; /* the worker waits here for work, input, cancel, close */
	enum psession_state state;
	char detail[PARTY_DETAIL_MAX];
	const char *failed_check; /* the engine's mpc_failed_check, static string */
	bool closing;             /* delete, expiry or shutdown: the worker ends */
	bool worker_done;         /* the worker has released the engine and transport */
	struct mpc_net *net;      /* the worker's transport, for aborts from the janitor */
	unsigned net_users;       /* janitor calls in progress on net */
	struct pgen *gen;         /* the generation queued or running, or NULL */
	struct pgen *finished[PARTY_KEEP_FINISHED]; /* most recent first */
	uint64_t generations;     /* started in this session */
	int64_t created_ms, used_ms, init_ms;
	struct mpc_stats stats;   /* the engine's counters, refreshed by the worker */
};

struct party_ctx {
	struct party_settings set;
	/* identity, fixed after init */
	uint8_t sk[MSHARE_SK_BYTES]; /* the X25519 sealing key: secret, wiped at fini */
	uint8_t pk[MSHARE_PK_BYTES];
	uint8_t cert_fp[32];
	char cn[IDENT_CN_MAX + 1];
	struct mshare_info share; /* the share file's header, checked at start-up */
	uint8_t share_digest[MSHARE_DIGEST_BYTES];
	struct mnet_hub *hub;

	pthread_mutex_t mu;
	pthread_cond_t cv; /* workers ending (fini waits), janitor wake-ups */
	struct psession **sessions;
	size_t nsessions;
	unsigned workers;  /* live worker threads */
	unsigned running;  /* generations holding a slot of limits.max_generations */
	struct psession **abortq; /* closed sessions whose transport the janitor aborts */
	size_t nabort, cabort;
	bool stop;
	pthread_t janitor;
	bool janitor_started;

	/* metrics */
	struct metric_series *m_sessions, *m_running, *m_tokens, *m_rounds, *m_bytes_sent,
		*m_bytes_recv, *m_sacrificed, *m_checks, *m_prep_bytes, *m_init_seconds,
		*m_token_seconds;
	struct metric *m_sessions_total, *m_generations_total, *m_aborts;
};

/* ---- main.c ---- */
int64_t party_now_ms(void);
/* Queues s (a reference is taken) for the janitor to abort its transport: an abort
 * can take a moment to reach the peers, too long for a handler. Caller holds c->mu. */
void party_abort_later_locked(struct party_ctx *c, struct psession *s);
/* Aborts s's transport now if the worker still has one (blocks briefly). */
void party_abort_net(struct psession *s);

/* ---- identity.c ---- */
/* Reads the certificate, the key and the share file at start-up (every failure is a
 * configuration error with a log line naming the setting). */
int party_identity_load(struct party_ctx *c);
int party_identity_get(struct http_req *r, void *ctx);

/* ---- sessions.c ---- */
bool party_hex_id_ok(const char *s);
/* The session called id with a reference taken, or NULL. Caller holds c->mu. */
struct psession *party_session_get_locked(struct party_ctx *c, const char *id);
/* Drops a reference; the last one frees the session. Caller holds c->mu. */
void party_session_put_locked(struct party_ctx *c, struct psession *s);
void party_session_put(struct party_ctx *c, struct psession *s);
/* Takes s out of the table and tells its worker to end (closing, transport abort
 * when it is busy). Caller holds c->mu. */
void party_session_close_locked(struct party_ctx *c, struct psession *s, const char *why);
/* The session of the path ({id}) with a reference, or NULL after a 404 reply. */
struct psession *party_path_session(struct party_ctx *c, struct http_req *r);
const char *party_session_state_name(enum psession_state s);
int party_session_create(struct http_req *r, void *ctx);
int party_session_list(struct http_req *r, void *ctx);
int party_session_get(struct http_req *r, void *ctx);
int party_session_delete(struct http_req *r, void *ctx);

/* ---- generations.c ---- */
const char *party_gen_state_name(enum pgen_state s);
bool party_gen_finished(const struct pgen *g);
/* Frees a generation record (wipes the INPUT, closes its event streams). Accepts NULL. */
void party_gen_free(struct pgen *g);
/* Appends one event with a JSON object as data (stolen). */
int party_gen_event(struct pgen *g, const char *event, json_t *data);
int party_gen_create(struct http_req *r, void *ctx);
int party_gen_get(struct http_req *r, void *ctx);
int party_gen_input(struct http_req *r, void *ctx);
int party_gen_events(struct http_req *r, void *ctx);
int party_gen_cancel(struct http_req *r, void *ctx);

/* ---- worker.c ---- */
/* Starts s's worker thread (it takes a reference). Caller holds c->mu. */
int party_worker_start_locked(struct party_ctx *c, struct psession *s);

/* ---- mpc rounds (main.c): mnet's delivery route ---- */
int party_mpc_round(struct http_req *r, void *ctx);

#endif
