/* Integration: the MPC transport over mutual TLS, in both of its modes. Each party has
 * its own HTTPS server (the platform's) and hub with its stream listener, with the
 * party certificate from a real mimir-pki dev PKI; the parties run in threads and talk
 * only through loopback TLS. Every test of the "request" and "stream" cases is the
 * same test run in each mode. Proves: the engine's protocol code gives the same results
 * (and the same rounds and bytes) over mnet as over the in-process hub; wrong sizes,
 * replays, impostors, silent or vanished peers, memory exhaustion and aborts end the
 * generation everywhere with a clear error, quickly; the stream listener refuses
 * whatever is not a party's well-formed Upgrade for a generation it may send to. */
#include <arpa/inet.h>
#include <curl/curl.h>
#include <netinet/in.h>
#include <poll.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#include "err/err.h"
#include "http/http.h"
#include "httpc/httpc.h"
#include "mnet/mnet.h"
#include "mpc/mpc.h"
#include "testutil.h"

#define MAXP 5
#define HUB_BOUND (1u << 20) /* bytes a hub holds at once (the memory test exceeds it) */

static char tmp[256], pki[300];
static struct http_server *srv[MAXP];
static struct mnet_hub *hub[MAXP];
static struct mnet_peer peers[MAXP];
static enum mnet_mode mode;

static int h_round(struct http_req *r, void *ctx)
{
	/* In a service the context is the service's; here each server's is its hub. */
	return mnet_hub_deliver(ctx, r);
}

static const struct http_route routes[] = {
	{"POST", MNET_ROUTE, h_round, HTTP_ROLE(IDENT_ROLE_PARTY), MNET_HDR_LEN + MNET_MAX_DATA,
	 HTTP_ROUTE_QUIET | HTTP_ROUTE_SECRET},
	{NULL, NULL, NULL, 0, 0},
};

static void path_of(char *buf, size_t cap, const char *name, const char *ext)
{
	snprintf(buf, cap, "%s/%s.%s", pki, name, ext);
}

/* Certificates once (files survive Check's fork); servers per test, inside the test's
 * process, because threads do not survive a fork. */
static void setup_pki(void)
{
	char bin[512];
	tu_tmpdir(tmp, sizeof tmp);
	snprintf(pki, sizeof pki, "%s/pki", tmp);
	tu_build(bin, sizeof bin, "bin/mimir-pki");
	ck_assert_int_eq(tu_system("%s dev --parties %d --out %s >/dev/null", bin, MAXP, pki), 0);
}

static void teardown_pki(void)
{
	tu_rmrf(tmp);
}

static void listen_opts(unsigned i, struct mnet_listen_opts *lo, char crt[400], char key[400], char ca[400])
{
	char name[24];
	snprintf(name, sizeof name, "party%u", i);
	path_of(crt, 400, name, "crt");
	path_of(key, 400, name, "key");
	path_of(ca, 400, "ca", "crt");
	*lo = (struct mnet_listen_opts){.ca_file = ca, .cert_file = crt, .key_file = key};
}

static void setup(void)
{
	for (unsigned i = 0; i < MAXP; i++) {
		char name[24], crt[400], key[400], ca[400];
		struct mnet_listen_opts lo;
		listen_opts(i, &lo, crt, key, ca);
		snprintf(name, sizeof name, "party%u", i);
		ck_assert_int_eq(mnet_hub_new(HUB_BOUND, &hub[i]), 0);
		ck_assert_int_eq(mnet_hub_listen(hub[i], &lo), 0);
		struct http_server_config hc = {.service = name, .port = 0, .threads = 4,
						.tls_cert = crt, .tls_key = key, .tls_ca = ca};
		ck_assert_int_eq(http_server_start(&srv[i], &hc, routes, hub[i], NULL), 0);
		static char urls[MAXP][64], surls[MAXP][64];
		snprintf(urls[i], sizeof urls[i], "https://localhost:%u", http_server_port(srv[i]));
		snprintf(surls[i], sizeof surls[i], "https://localhost:%u", mnet_hub_stream_port(hub[i]));
		peers[i].url = urls[i];
		peers[i].stream_url = surls[i];
		ck_assert_int_eq(mnet_cert_fingerprint(crt, peers[i].fingerprint), 0);
	}
}

static void setup_request(void)
{
	mode = MNET_MODE_REQUEST;
	setup();
}

static void setup_stream(void)
{
	mode = MNET_MODE_STREAM;
	setup();
}

static void teardown(void)
{
	for (int i = 0; i < MAXP; i++) {
		http_server_free(srv[i]);
		mnet_hub_free(hub[i]);
		srv[i] = NULL;
		hub[i] = NULL;
	}
}

static struct mnet_opts opts_for(unsigned i, unsigned timeout_ms)
{
	static char crt[MAXP][400], key[MAXP][400], ca[400];
	char name[24];
	snprintf(name, sizeof name, "party%u", i);
	path_of(crt[i], sizeof crt[i], name, "crt");
	path_of(key[i], sizeof key[i], name, "key");
	path_of(ca, sizeof ca, "ca", "crt");
	return (struct mnet_opts){.ca_file = ca, .cert_file = crt[i], .key_file = key[i], .timeout_ms = timeout_ms,
				  .mode = mode};
}

static void session_id(uint8_t s[MNET_SESSION_LEN], unsigned tag)
{
	memset(s, 0, MNET_SESSION_LEN);
	s[0] = (uint8_t)tag;
	s[15] = 0x5a;
}

/* ---- a party program, run over either transport ---- */

#define NV 200

struct party {
	unsigned id, n;
	struct mpc_net *net;
	struct mpc *mpc;
	int rc;
	ring64_t out[NV];
	struct mpc_stats st;
	const char *failed;
	/* raw exchange tests */
	int mode;
	double ms;      /* from the start to the end of the party's run */
	double last_ms; /* its last exchange: how long it took to notice the fault */
};

static void inputs(ring64_t *x, ring64_t *y)
{
	for (int i = 0; i < NV; i++) {
		x[i] = (ring64_t)(0x9e3779b97f4a7c15ULL * (uint64_t)(i + 1));
		y[i] = (ring64_t)(0xbf58476d1ce4e5b9ULL * (uint64_t)(i + 7));
	}
}

static void *run_program(void *arg)
{
	struct party *p = arg;
	ring64_t x[NV], y[NV];
	mpc_share *a = calloc(NV, sizeof *a), *b = calloc(NV, sizeof *b), *c = calloc(NV, sizeof *c);
	struct mpc_batch *batch = NULL;
	inputs(x, y);
	p->rc = mpc_input(p->mpc, 0, p->id == 0 ? x : NULL, a, NV);
	if (p->rc == 0)
		p->rc = mpc_input(p->mpc, 1 % p->n, p->id == 1 % p->n ? y : NULL, b, NV);
	if (p->rc == 0 && (p->rc = mpc_batch_new(p->mpc, &batch)) == 0 &&
	    (p->rc = mpc_batch_mul(batch, c, a, b, NV)) == 0)
		p->rc = mpc_batch_run(batch);
	if (p->rc == 0)
		p->rc = mpc_reveal(p->mpc, p->out, c, NV);
	mpc_batch_free(batch);
	mpc_get_stats(p->mpc, &p->st);
	p->failed = mpc_failed_check(p->mpc);
	free(a), free(b), free(c);
	return NULL;
}

/* Runs the program on n parties over mnet (tls) or the in-process hub. */
static void run_parties(unsigned n, bool tls, unsigned tag, struct party *ps)
{
	struct mpc_dealer *dealer;
	struct mpc_hub *lh = NULL;
	ck_assert_int_eq(mpc_dealer_new(n, &dealer), 0);
	struct mpc_prep_source src = mpc_dealer_source(dealer);
	uint8_t sid[MNET_SESSION_LEN];
	session_id(sid, tag);
	if (!tls)
		ck_assert_int_eq(mpc_hub_new(n, 10000, &lh), 0);
	for (unsigned i = 0; i < n; i++) {
		uint8_t seed[MPC_SEED_BYTES];
		memset(&ps[i], 0, sizeof ps[i]);
		ps[i].id = i;
		ps[i].n = n;
		if (tls) {
			struct mnet_opts o = opts_for(i, 10000);
			ck_assert_int_eq(mnet_net_new(hub[i], sid, 1, i, n, peers, &o, &ps[i].net), 0);
		} else {
			ck_assert_int_eq(mpc_net_local_new(lh, i, &ps[i].net), 0);
		}
		mpc_dealer_party_seed(dealer, i, seed);
		struct mpc_config cfg = {0};
		ck_assert_int_eq(mpc_new(ps[i].net, seed, &src, &cfg, &ps[i].mpc), 0);
	}
	pthread_t th[MAXP];
	for (unsigned i = 0; i < n; i++)
		pthread_create(&th[i], NULL, run_program, &ps[i]);
	for (unsigned i = 0; i < n; i++)
		pthread_join(th[i], NULL);
	for (unsigned i = 0; i < n; i++) {
		mpc_free(ps[i].mpc);
		mpc_net_free(ps[i].net);
	}
	mpc_hub_free(lh);
	mpc_dealer_free(dealer);
}

static void same_program_both_transports(unsigned n, unsigned tag)
{
	struct party tls[MAXP], local[MAXP];
	ring64_t x[NV], y[NV];
	inputs(x, y);
	run_parties(n, true, tag, tls);
	run_parties(n, false, tag, local);
	for (unsigned i = 0; i < n; i++) {
		ck_assert_msg(tls[i].rc == 0, "party %u over mTLS: %s (%s)", i, err_title(tls[i].rc),
			      tls[i].failed ? tls[i].failed : "-");
		ck_assert_int_eq(local[i].rc, 0);
		for (int k = 0; k < NV; k++)
			ck_assert_msg(tls[i].out[k] == (ring64_t)(x[k] * y[k]), "wrong product at %d", k);
		ck_assert_mem_eq(tls[i].out, local[i].out, sizeof tls[i].out);
		/* The protocol code is the same: so are its rounds and bytes. */
		ck_assert_uint_eq(tls[i].st.rounds, local[i].st.rounds);
		ck_assert_uint_eq(tls[i].st.bytes_sent, local[i].st.bytes_sent);
	}
}

START_TEST(test_engine_over_mtls_3) { same_program_both_transports(3, 1); }
END_TEST
START_TEST(test_engine_over_mtls_2) { same_program_both_transports(2, 2); }
END_TEST
START_TEST(test_engine_over_mtls_5) { same_program_both_transports(5, 3); }
END_TEST

/* ---- raw exchanges and faults ---- */

enum { M_SIZES, M_WRONG_SIZE, M_SILENT, M_ABORT, M_VANISH, M_BIG, M_CANCEL };

#define BIG (2u << 20) /* more than a hub holds */

static void *run_raw(void *arg)
{
	struct party *p = arg;
	size_t cap = p->mode == M_BIG ? BIG : 4096;
	uint8_t *sbuf[MAXP], *rbuf[MAXP];
	const uint8_t *send[MAXP];
	uint8_t *recv[MAXP];
	size_t slen[MAXP], rlen[MAXP];
	for (unsigned j = 0; j < p->n; j++) {
		sbuf[j] = malloc(cap);
		rbuf[j] = malloc(cap);
	}
	struct timespec t0, t1;
	clock_gettime(CLOCK_MONOTONIC, &t0);
	p->rc = 0;
	for (unsigned round = 0; round < 6 && p->rc == 0; round++) {
		if ((p->mode == M_SILENT || p->mode == M_CANCEL) && p->id == 2)
			break; /* party 2 never shows up */
		if (p->mode == M_VANISH && p->id == 2 && round == 2) {
			/* party 2 leaves in the middle: its connections close */
			mpc_net_free(p->net);
			p->net = NULL;
			break;
		}
		if (p->mode == M_ABORT && p->id == 0 && round == 3) {
			mpc_net_abort(p->net);
			p->rc = ERR_ABORTED;
			break;
		}
		for (unsigned j = 0; j < p->n; j++) {
			/* round r: every message is r * 100 + sender + receiver bytes */
			slen[j] = round * 100 + p->id + j;
			rlen[j] = round * 100 + j + p->id;
			if (p->mode == M_WRONG_SIZE && p->id == 1 && round == 2)
				slen[j]++;
			if (p->mode == M_BIG && round == 1)
				slen[j] = rlen[j] = BIG; /* everyone expects it: only the bound refuses */
			memset(sbuf[j], (int)(p->id * 16 + round), slen[j]);
			send[j] = sbuf[j];
			recv[j] = rbuf[j];
		}
		struct timespec r0, r1;
		clock_gettime(CLOCK_MONOTONIC, &r0);
		p->rc = mpc_net_exchange(p->net, send, slen, recv, rlen);
		clock_gettime(CLOCK_MONOTONIC, &r1);
		p->last_ms = (double)(r1.tv_sec - r0.tv_sec) * 1e3 + (double)(r1.tv_nsec - r0.tv_nsec) / 1e6;
		for (unsigned j = 0; p->rc == 0 && j < p->n; j++)
			if (j != p->id && rlen[j] && rbuf[j][0] != (uint8_t)(j * 16 + round))
				p->rc = ERR_INTERNAL;
	}
	clock_gettime(CLOCK_MONOTONIC, &t1);
	p->ms = (double)(t1.tv_sec - t0.tv_sec) * 1e3 + (double)(t1.tv_nsec - t0.tv_nsec) / 1e6;
	for (unsigned j = 0; j < p->n; j++) {
		free(sbuf[j]);
		free(rbuf[j]);
	}
	return NULL;
}

struct canceller {
	struct mpc_net *net;
	unsigned after_ms;
};

static void *cancel_later(void *arg)
{
	struct canceller *c = arg;
	usleep(c->after_ms * 1000);
	mpc_net_abort(c->net); /* from another thread, while the engine waits */
	return NULL;
}

static void run_raw_parties(unsigned n, int m, unsigned tag, unsigned timeout_ms, struct party *ps)
{
	uint8_t sid[MNET_SESSION_LEN];
	session_id(sid, tag);
	/* The nets keep what they need of the peer table: this copy is gone before the
	 * first round connects anything. */
	struct mnet_peer tmp_peers[MAXP];
	char urls[MAXP][2][64];
	for (unsigned i = 0; i < n; i++) {
		tmp_peers[i] = peers[i];
		snprintf(urls[i][0], sizeof urls[i][0], "%s", peers[i].url);
		snprintf(urls[i][1], sizeof urls[i][1], "%s", peers[i].stream_url);
		tmp_peers[i].url = urls[i][0];
		tmp_peers[i].stream_url = urls[i][1];
	}
	for (unsigned i = 0; i < n; i++) {
		memset(&ps[i], 0, sizeof ps[i]);
		ps[i].id = i;
		ps[i].n = n;
		ps[i].mode = m;
		struct mnet_opts o = opts_for(i, timeout_ms);
		ck_assert_int_eq(mnet_net_new(hub[i], sid, 7, i, n, tmp_peers, &o, &ps[i].net), 0);
	}
	memset(urls, 'x', sizeof urls);
	pthread_t th[MAXP], ct;
	for (unsigned i = 0; i < n; i++)
		pthread_create(&th[i], NULL, run_raw, &ps[i]);
	struct canceller cl = {ps[0].net, 300};
	if (m == M_CANCEL)
		pthread_create(&ct, NULL, cancel_later, &cl);
	for (unsigned i = 0; i < n; i++)
		pthread_join(th[i], NULL);
	if (m == M_CANCEL)
		pthread_join(ct, NULL);
	for (unsigned i = 0; i < n; i++)
		mpc_net_free(ps[i].net);
}

START_TEST(test_sizes_and_counters)
{
	struct party ps[3];
	run_raw_parties(3, M_SIZES, 10, 5000, ps);
	for (int i = 0; i < 3; i++)
		ck_assert_msg(ps[i].rc == 0, "party %d: %s", i, err_title(ps[i].rc));
}
END_TEST

START_TEST(test_wrong_size_aborts_everywhere)
{
	struct party ps[3];
	run_raw_parties(3, M_WRONG_SIZE, 11, 5000, ps);
	for (int i = 0; i < 3; i++) {
		ck_assert_msg(ps[i].rc != 0, "party %d finished despite a wrong-size payload", i);
		ck_assert_msg(ps[i].last_ms < 3000, "party %d took %.0f ms to stop (%.0f ms in all)", i,
			      ps[i].last_ms, ps[i].ms);
	}
	/* The receivers of the bad payload name it as a protocol violation. */
	ck_assert(ps[0].rc == ERR_PROTOCOL || ps[2].rc == ERR_PROTOCOL);
}
END_TEST

START_TEST(test_silent_peer_times_out)
{
	struct party ps[3];
	run_raw_parties(3, M_SILENT, 12, 800, ps);
	for (int i = 0; i < 2; i++) {
		ck_assert_msg(ps[i].rc == ERR_TIMEOUT || ps[i].rc == ERR_ABORTED || ps[i].rc == ERR_IO,
			      "party %d: %s", i, err_title(ps[i].rc));
		ck_assert_msg(ps[i].last_ms < 2500, "party %d waited %.0f ms (timeout 800)", i, ps[i].last_ms);
	}
}
END_TEST

START_TEST(test_abort_reaches_every_party)
{
	struct party ps[3];
	run_raw_parties(3, M_ABORT, 13, 20000, ps);
	for (int i = 0; i < 3; i++) {
		ck_assert_msg(ps[i].rc == ERR_ABORTED, "party %d: %s", i, err_title(ps[i].rc));
		/* Long before the 20 s timeout: the abort was sent, not waited out. */
		ck_assert_msg(ps[i].last_ms < 3000, "party %d stopped after %.0f ms (%.0f ms in all)", i,
			      ps[i].last_ms, ps[i].ms);
	}
}
END_TEST

START_TEST(test_cancel_from_another_thread)
{
	/* Party 2 is silent; party 0 is cancelled from outside while it waits: both
	 * waiting parties stop long before their 20 s timeout. */
	struct party ps[3];
	run_raw_parties(3, M_CANCEL, 17, 20000, ps);
	for (int i = 0; i < 2; i++) {
		ck_assert_msg(ps[i].rc == ERR_ABORTED, "party %d: %s", i, err_title(ps[i].rc));
		ck_assert_msg(ps[i].last_ms < 3000, "party %d stopped after %.0f ms (%.0f ms in all)", i,
			      ps[i].last_ms, ps[i].ms);
	}
}
END_TEST

START_TEST(test_vanished_peer_ends_the_generation)
{
	/* A stream that closes is a peer gone: the others stop at once. Requests have no
	 * connection to lose, so there the timeout decides (kept short). */
	unsigned timeout = mode == MNET_MODE_STREAM ? 20000 : 800;
	struct party ps[3];
	run_raw_parties(3, M_VANISH, 14, timeout, ps);
	for (int i = 0; i < 2; i++) {
		ck_assert_msg(ps[i].rc != 0, "party %d finished without party 2", i);
		if (mode == MNET_MODE_STREAM)
			ck_assert_msg(ps[i].rc == ERR_IO || ps[i].rc == ERR_ABORTED, "party %d: %s", i,
				      err_title(ps[i].rc));
		ck_assert_msg(ps[i].last_ms < 3000, "party %d stopped after %.0f ms (timeout %u, %.0f ms in all)", i,
			      ps[i].last_ms, timeout, ps[i].ms);
	}
}
END_TEST

START_TEST(test_unreachable_peer_fails_fast)
{
	/* Party 2's process is gone (server and listener closed) before the first round:
	 * the others learn it when they connect, not at their 20 s timeout. */
	http_server_free(srv[2]);
	mnet_hub_free(hub[2]);
	srv[2] = NULL;
	hub[2] = NULL;
	uint8_t sid[MNET_SESSION_LEN];
	session_id(sid, 18);
	struct party ps[2];
	pthread_t th[2];
	for (unsigned i = 0; i < 2; i++) {
		memset(&ps[i], 0, sizeof ps[i]);
		ps[i].id = i;
		ps[i].n = 3;
		ps[i].mode = M_SIZES;
		struct mnet_opts o = opts_for(i, 20000);
		ck_assert_int_eq(mnet_net_new(hub[i], sid, 1, i, 3, peers, &o, &ps[i].net), 0);
	}
	for (unsigned i = 0; i < 2; i++)
		pthread_create(&th[i], NULL, run_raw, &ps[i]);
	for (unsigned i = 0; i < 2; i++)
		pthread_join(th[i], NULL);
	for (unsigned i = 0; i < 2; i++) {
		ck_assert_msg(ps[i].rc == ERR_IO || ps[i].rc == ERR_ABORTED, "party %u: %s", i, err_title(ps[i].rc));
		ck_assert_msg(ps[i].last_ms < 3000, "party %u stopped after %.0f ms", i, ps[i].last_ms);
		mpc_net_free(ps[i].net);
	}
}
END_TEST

START_TEST(test_memory_bound_aborts)
{
	/* Round 1 carries 2 MiB per peer, every party expects it, but a hub holds 1 MiB. */
	struct party ps[3];
	run_raw_parties(3, M_BIG, 15, 20000, ps);
	for (int i = 0; i < 3; i++) {
		ck_assert_msg(ps[i].rc != 0, "party %d took a round past the hub's memory bound", i);
		ck_assert_msg(ps[i].last_ms < 5000, "party %d stopped after %.0f ms (%.0f ms in all)", i,
			      ps[i].last_ms, ps[i].ms);
	}
}
END_TEST

START_TEST(test_net_needs_stream_urls_and_listener)
{
	uint8_t sid[MNET_SESSION_LEN];
	session_id(sid, 16);
	struct mnet_peer bare[3];
	memcpy(bare, peers, sizeof bare);
	bare[2].stream_url = NULL;
	struct mnet_opts o = opts_for(0, 1000);
	struct mpc_net *net = NULL;
	o.mode = MNET_MODE_STREAM;
	ck_assert_int_eq(mnet_net_new(hub[0], sid, 1, 0, 3, bare, &o, &net), ERR_INVALID);
	o.mode = MNET_MODE_DEFAULT; /* the default is the stream */
	ck_assert_int_eq(mnet_net_new(hub[0], sid, 1, 0, 3, bare, &o, &net), ERR_INVALID);
	o.mode = MNET_MODE_REQUEST;
	ck_assert_int_eq(mnet_net_new(hub[0], sid, 1, 0, 3, bare, &o, &net), 0);
	mpc_net_free(net);
	/* A hub that does not listen cannot receive streams: no stream-mode net on it. */
	struct mnet_hub *deaf;
	ck_assert_int_eq(mnet_hub_new(0, &deaf), 0);
	o.mode = MNET_MODE_STREAM;
	ck_assert_int_eq(mnet_net_new(deaf, sid, 1, 0, 3, peers, &o, &net), ERR_INVALID);
	o.mode = MNET_MODE_REQUEST;
	ck_assert_int_eq(mnet_net_new(deaf, sid, 1, 0, 3, peers, &o, &net), 0);
	mpc_net_free(net);
	mnet_hub_free(deaf);
}
END_TEST

/* ---- request mode: the POST route's refusals ---- */

static struct httpc *client_as(const char *name, unsigned to)
{
	char crt[400], key[400], ca[400];
	path_of(crt, sizeof crt, name, "crt");
	path_of(key, sizeof key, name, "key");
	path_of(ca, sizeof ca, "ca", "crt");
	struct httpc_opts o = {.base_url = peers[to].url, .ca_file = ca, .cert_file = crt, .key_file = key};
	struct httpc *c;
	ck_assert_int_eq(httpc_new(&c, &o), 0);
	return c;
}

static long post_payload(struct httpc *c, const struct mnet_hdr *h, const void *data)
{
	uint8_t body[MNET_HDR_LEN + 64];
	mnet_hdr_encode(h, body);
	memcpy(body + MNET_HDR_LEN, data, h->length);
	struct httpc_resp r;
	ck_assert_int_eq(httpc_request(c, "POST", MNET_ROUTE, NULL, "application/octet-stream", body,
				       MNET_HDR_LEN + h->length, &r), 0);
	long st = r.status;
	httpc_resp_free(&r);
	return st;
}

START_TEST(test_replay_impostor_and_outsiders_refused_post)
{
	/* Party 1 joins generation 21 expecting parties 0 and 2. */
	uint8_t sid[MNET_SESSION_LEN];
	session_id(sid, 21);
	struct mnet_opts o = opts_for(1, 2000);
	struct mpc_net *net;
	ck_assert_int_eq(mnet_net_new(hub[1], sid, 1, 1, 3, peers, &o, &net), 0);
	struct mnet_hdr h = {.version = MNET_VERSION, .generation = 1, .round = 0, .sender = 0,
			     .receiver = 1, .length = 8};
	memcpy(h.session, sid, sizeof sid);
	uint8_t data[8] = {1, 2, 3, 4, 5, 6, 7, 8};

	/* A client certificate may not post rounds at all (route role). */
	struct httpc *outsider = client_as("client", 1);
	ck_assert_int_eq(post_payload(outsider, &h, data), 403);
	httpc_free(outsider);
	/* Party 2's certificate claiming to be party 0: refused, generation unharmed. */
	struct httpc *p2 = client_as("party2", 1);
	ck_assert_int_eq(post_payload(p2, &h, data), 403);
	httpc_free(p2);
	/* A malformed payload: 400. */
	struct httpc *p0 = client_as("party0", 1);
	struct mnet_hdr bad = h;
	bad.version = 9;
	ck_assert_int_eq(post_payload(p0, &bad, data), 415);
	/* The real party 0: accepted once; the same round again is a replay: refused, and
	 * the generation is over for everyone. */
	ck_assert_int_eq(post_payload(p0, &h, data), 204);
	ck_assert_int_eq(post_payload(p0, &h, data), 409);
	h.round = 1;
	ck_assert_int_eq(post_payload(p0, &h, data), 410);
	httpc_free(p0);
	uint8_t r0[8], r2[8];
	const uint8_t *send[3] = {data, NULL, data};
	uint8_t *recv[3] = {r0, NULL, r2};
	size_t len[3] = {8, 0, 8};
	ck_assert_int_eq(mpc_net_exchange(net, send, len, recv, len), ERR_ABORTED);
	mpc_net_free(net);
}
END_TEST

/* ---- stream mode: the listener, driven by hand ---- */

/* A TLS connection to party `to`'s stream listener with the certificate of `name`
 * (NULL: none), as a peer would open it (curl, connect-only). */
static CURL *raw_connect(const char *name, unsigned to)
{
	char crt[400], key[400], ca[400];
	path_of(ca, sizeof ca, "ca", "crt");
	CURL *c = curl_easy_init();
	ck_assert_ptr_nonnull(c);
	curl_easy_setopt(c, CURLOPT_URL, peers[to].stream_url);
	curl_easy_setopt(c, CURLOPT_CONNECT_ONLY, 1L);
	curl_easy_setopt(c, CURLOPT_CAINFO, ca);
	curl_easy_setopt(c, CURLOPT_NOSIGNAL, 1L);
	curl_easy_setopt(c, CURLOPT_CONNECTTIMEOUT_MS, 3000L);
	if (name) {
		path_of(crt, sizeof crt, name, "crt");
		path_of(key, sizeof key, name, "key");
		curl_easy_setopt(c, CURLOPT_SSLCERT, crt);
		curl_easy_setopt(c, CURLOPT_SSLKEY, key);
	}
	ck_assert_int_eq(curl_easy_perform(c), CURLE_OK);
	return c;
}

static curl_socket_t raw_fd(CURL *c)
{
	curl_socket_t fd = CURL_SOCKET_BAD;
	curl_easy_getinfo(c, CURLINFO_ACTIVESOCKET, &fd);
	return fd;
}

/* Sends everything (or fails: the server may have closed). */
static int raw_send(CURL *c, const void *p, size_t len)
{
	size_t off = 0;
	for (int spins = 0; off < len && spins < 1000; spins++) {
		size_t k = 0;
		CURLcode cc = curl_easy_send(c, (const char *)p + off, len - off, &k);
		if (cc == CURLE_AGAIN) {
			struct pollfd pf = {.fd = raw_fd(c), .events = POLLOUT};
			poll(&pf, 1, 100);
			continue;
		}
		if (cc != CURLE_OK)
			return -1;
		off += k;
	}
	return off == len ? 0 : -1;
}

/* Reads up to cap-1 bytes until the peer closes, `until` appears, or 3 s pass.
 * Returns the count (the buffer is NUL-terminated). */
static size_t raw_read(CURL *c, char *buf, size_t cap, const char *until)
{
	size_t have = 0;
	buf[0] = '\0';
	for (int waits = 0; have < cap - 1 && waits < 30;) {
		size_t k = 0;
		CURLcode cc = curl_easy_recv(c, buf + have, cap - 1 - have, &k);
		if (cc == CURLE_AGAIN) {
			struct pollfd pf = {.fd = raw_fd(c), .events = POLLIN};
			poll(&pf, 1, 100);
			waits++;
			continue;
		}
		if (cc != CURLE_OK || k == 0)
			break;
		have += k;
		buf[have] = '\0';
		if (until && strstr(buf, until))
			break;
	}
	return have;
}

/* Sends an Upgrade request for `target` and returns the status answered (0: none). */
static int raw_upgrade(CURL *c, const char *target, const char *upgrade)
{
	char req[512], resp[2048];
	int n = snprintf(req, sizeof req, "GET %s HTTP/1.1\r\nHost: localhost\r\n%s%s%s\r\n", target,
			 upgrade ? "Connection: Upgrade\r\nUpgrade: " : "", upgrade ? upgrade : "", upgrade ? "\r\n" : "");
	if (raw_send(c, req, (size_t)n) != 0)
		return 0;
	raw_read(c, resp, sizeof resp, "\r\n\r\n");
	int status = 0;
	if (sscanf(resp, "HTTP/1.1 %d", &status) != 1)
		return 0;
	return status;
}

static void stream_target(char *buf, size_t cap, const uint8_t sid[MNET_SESSION_LEN], uint64_t gen,
			  unsigned from, unsigned to)
{
	char hex[2 * MNET_SESSION_LEN + 1];
	for (int i = 0; i < MNET_SESSION_LEN; i++)
		snprintf(hex + 2 * i, 3, "%02x", sid[i]);
	snprintf(buf, cap, "%s?session=%s&generation=%llu&sender=%u&receiver=%u", MNET_STREAM_ROUTE, hex,
		 (unsigned long long)gen, from, to);
}

static int open_stream(const char *name, unsigned to, const uint8_t sid[MNET_SESSION_LEN], uint64_t gen,
		       unsigned from, CURL **out)
{
	char target[256];
	stream_target(target, sizeof target, sid, gen, from, to);
	CURL *c = raw_connect(name, to);
	int st = raw_upgrade(c, target, MNET_STREAM_PROTOCOL);
	if (out && st == 101)
		*out = c;
	else
		curl_easy_cleanup(c);
	return st;
}

static void send_payload(CURL *c, const struct mnet_hdr *h, const void *data)
{
	uint8_t frame[MNET_HDR_LEN + 64];
	mnet_hdr_encode(h, frame);
	memcpy(frame + MNET_HDR_LEN, data, h->length);
	ck_assert_int_eq(raw_send(c, frame, MNET_HDR_LEN + h->length), 0);
}

/* The server ended the stream: reading gives end of file (or a reset) within 3 s. */
static bool closed_by_server(CURL *c)
{
	char buf[256];
	for (int i = 0; i < 30; i++) {
		size_t k = 0;
		CURLcode cc = curl_easy_recv(c, buf, sizeof buf, &k);
		if (cc == CURLE_AGAIN) {
			struct pollfd pf = {.fd = raw_fd(c), .events = POLLIN};
			poll(&pf, 1, 100);
			continue;
		}
		return cc != CURLE_OK || k == 0;
	}
	return false;
}

START_TEST(test_replay_impostor_and_outsiders_refused_stream)
{
	uint8_t sid[MNET_SESSION_LEN];
	session_id(sid, 22);
	struct mnet_opts o = opts_for(1, 2000);
	struct mpc_net *net;
	ck_assert_int_eq(mnet_net_new(hub[1], sid, 1, 1, 3, peers, &o, &net), 0);
	char target[256];
	stream_target(target, sizeof target, sid, 1, 0, 1);

	/* A client certificate may not open round streams at all. */
	ck_assert_int_eq(open_stream("client", 1, sid, 1, 0, NULL), 403);
	/* Party 2's certificate claiming to be party 0: refused, generation unharmed. */
	ck_assert_int_eq(open_stream("party2", 1, sid, 1, 0, NULL), 403);
	/* The real party 0: one stream, and one only. */
	CURL *p0 = NULL;
	ck_assert_int_eq(open_stream("party0", 1, sid, 1, 0, &p0), 101);
	ck_assert_int_eq(open_stream("party0", 1, sid, 1, 0, NULL), 409);
	/* Round 0 is taken; round 0 again is a replay: the stream ends and so does the
	 * generation, for everyone. */
	struct mnet_hdr h = {.version = MNET_VERSION, .generation = 1, .round = 0, .sender = 0,
			     .receiver = 1, .length = 8};
	memcpy(h.session, sid, sizeof sid);
	uint8_t data[8] = {1, 2, 3, 4, 5, 6, 7, 8};
	send_payload(p0, &h, data);
	send_payload(p0, &h, data);
	ck_assert(closed_by_server(p0));
	curl_easy_cleanup(p0);
	/* A new stream for the aborted generation: 410. */
	ck_assert_int_eq(open_stream("party2", 1, sid, 1, 2, NULL), 410);
	uint8_t r0[8], r2[8];
	const uint8_t *send[3] = {data, NULL, data};
	uint8_t *recv[3] = {r0, NULL, r2};
	size_t len[3] = {8, 0, 8};
	ck_assert_int_eq(mpc_net_exchange(net, send, len, recv, len), ERR_ABORTED);
	mpc_net_free(net);
}
END_TEST

START_TEST(test_stream_bad_payloads_end_the_stream)
{
	uint8_t sid[MNET_SESSION_LEN];
	session_id(sid, 23);
	struct mnet_hdr h = {.version = MNET_VERSION, .generation = 5, .round = 0, .sender = 0,
			     .receiver = 1, .length = 8};
	memcpy(h.session, sid, sizeof sid);
	uint8_t data[8] = {0};
	/* A payload naming another sender than the stream's: closed. */
	CURL *c = NULL;
	ck_assert_int_eq(open_stream("party0", 1, sid, 5, 0, &c), 101);
	struct mnet_hdr other = h;
	other.sender = 2;
	send_payload(c, &other, data);
	ck_assert(closed_by_server(c));
	curl_easy_cleanup(c);
	/* A malformed header: closed (on another generation, as the first is over). */
	h.generation = 6;
	ck_assert_int_eq(open_stream("party0", 1, sid, 6, 0, &c), 101);
	uint8_t junk[MNET_HDR_LEN];
	memset(junk, 'x', sizeof junk);
	ck_assert_int_eq(raw_send(c, junk, sizeof junk), 0);
	ck_assert(closed_by_server(c));
	curl_easy_cleanup(c);
	/* A header announcing more than a hub holds: closed before any data is read. */
	h.generation = 7;
	ck_assert_int_eq(open_stream("party0", 1, sid, 7, 0, &c), 101);
	struct mnet_hdr huge = h;
	huge.length = MNET_MAX_DATA;
	uint8_t hb[MNET_HDR_LEN];
	mnet_hdr_encode(&huge, hb);
	ck_assert_int_eq(raw_send(c, hb, sizeof hb), 0);
	ck_assert(closed_by_server(c));
	curl_easy_cleanup(c);
}
END_TEST

START_TEST(test_stream_listener_refusals)
{
	uint8_t sid[MNET_SESSION_LEN];
	session_id(sid, 24);
	char target[256];
	stream_target(target, sizeof target, sid, 1, 0, 1);
	CURL *c = raw_connect("party0", 1);
	ck_assert_int_eq(raw_upgrade(c, target, NULL), 426); /* no Upgrade */
	curl_easy_cleanup(c);
	c = raw_connect("party0", 1);
	ck_assert_int_eq(raw_upgrade(c, "/v1/other?x=1", MNET_STREAM_PROTOCOL), 404);
	curl_easy_cleanup(c);
	c = raw_connect("party0", 1);
	ck_assert_int_eq(raw_upgrade(c, MNET_STREAM_ROUTE "?session=00&generation=1&sender=0&receiver=1",
				     MNET_STREAM_PROTOCOL), 400);
	curl_easy_cleanup(c);
	c = raw_connect("party0", 1);
	char same[256];
	stream_target(same, sizeof same, sid, 1, 1, 1); /* sender == receiver */
	ck_assert_int_eq(raw_upgrade(c, same, MNET_STREAM_PROTOCOL), 400);
	curl_easy_cleanup(c);
	/* An oversized request: 431. */
	c = raw_connect("party0", 1);
	char *big = malloc(8192);
	memset(big, 'a', 8191);
	big[8191] = '\0';
	char req[256];
	int n = snprintf(req, sizeof req, "GET %s HTTP/1.1\r\nX-Pad: ", target);
	ck_assert_int_eq(raw_send(c, req, (size_t)n), 0);
	raw_send(c, big, 8191);
	char resp[1024];
	raw_read(c, resp, sizeof resp, "\r\n\r\n");
	ck_assert_msg(strncmp(resp, "HTTP/1.1 431", 12) == 0, "answer: %.40s", resp);
	free(big);
	curl_easy_cleanup(c);
	/* Without a client certificate the handshake fails: no answer at all. */
	c = raw_connect(NULL, 1);
	ck_assert_int_eq(raw_upgrade(c, target, MNET_STREAM_PROTOCOL), 0);
	curl_easy_cleanup(c);
	/* The listener still serves a proper request afterwards. */
	ck_assert_int_eq(open_stream("party0", 1, sid, 1, 0, NULL), 101);
}
END_TEST

static int tcp_connect(uint16_t port)
{
	int fd = socket(AF_INET, SOCK_STREAM, 0);
	struct sockaddr_in sa = {.sin_family = AF_INET, .sin_port = htons(port)};
	inet_pton(AF_INET, "127.0.0.1", &sa.sin_addr);
	ck_assert_int_eq(connect(fd, (struct sockaddr *)&sa, sizeof sa), 0);
	return fd;
}

/* The server closed the connection (end of file or reset) within ms. */
static bool tcp_closed_within(int fd, int ms)
{
	struct pollfd pf = {.fd = fd, .events = POLLIN};
	char b;
	return poll(&pf, 1, ms) == 1 && read(fd, &b, 1) <= 0;
}

START_TEST(test_stream_handshake_deadline)
{
	/* A connection that never starts its handshake is dropped after handshake_ms. */
	char crt[400], key[400], ca[400];
	struct mnet_listen_opts lo;
	listen_opts(0, &lo, crt, key, ca);
	lo.handshake_ms = 300;
	lo.max_streams = 2;
	struct mnet_hub *h;
	ck_assert_int_eq(mnet_hub_new(0, &h), 0);
	ck_assert_int_eq(mnet_hub_listen(h, &lo), 0);
	ck_assert_int_eq(mnet_hub_listen(h, &lo), ERR_CONFLICT);
	struct timespec t0, t1;
	clock_gettime(CLOCK_MONOTONIC, &t0);
	int fd = tcp_connect(mnet_hub_stream_port(h));
	ck_assert(tcp_closed_within(fd, 3000));
	clock_gettime(CLOCK_MONOTONIC, &t1);
	close(fd);
	double ms = (double)(t1.tv_sec - t0.tv_sec) * 1e3 + (double)(t1.tv_nsec - t0.tv_nsec) / 1e6;
	ck_assert_msg(ms >= 200 && ms < 2000, "dropped after %.0f ms (deadline 300)", ms);
	/* Past max_streams, a connection is closed at once. */
	int a = tcp_connect(mnet_hub_stream_port(h)), b = tcp_connect(mnet_hub_stream_port(h));
	usleep(100 * 1000);
	int third = tcp_connect(mnet_hub_stream_port(h));
	ck_assert(tcp_closed_within(third, 250));
	close(third);
	/* The hub goes away with connections still open: nothing leaks, nothing hangs. */
	mnet_hub_free(h);
	ck_assert(tcp_closed_within(a, 1000));
	close(a);
	close(b);
}
END_TEST

START_TEST(test_header_codec)
{
	struct mnet_hdr h = {.version = 1, .flags = 0, .generation = 0x0102030405060708ULL,
			     .round = 77, .sender = 3, .receiver = 4, .length = 5};
	for (int i = 0; i < 16; i++)
		h.session[i] = (uint8_t)(0xa0 + i);
	uint8_t b[MNET_HDR_LEN + 5] = {0};
	mnet_hdr_encode(&h, b);
	ck_assert_mem_eq(b, "MMPC\x01\x00\x00\x00", 8);
	ck_assert_int_eq(b[24], 0x08); /* little endian */
	struct mnet_hdr d;
	ck_assert_int_eq(mnet_hdr_decode(b, sizeof b, &d), 0);
	ck_assert_mem_eq(&d.session, h.session, 16);
	ck_assert_uint_eq(d.generation, h.generation);
	ck_assert_uint_eq(d.round, 77);
	ck_assert_int_eq(mnet_hdr_decode(b, sizeof b - 1, &d), ERR_PARSE);  /* short data */
	ck_assert_int_eq(mnet_hdr_decode(b, MNET_HDR_LEN - 1, &d), ERR_PARSE);
	b[0] = 'X';
	ck_assert_int_eq(mnet_hdr_decode(b, sizeof b, &d), ERR_PARSE);
	h.sender = h.receiver;
	mnet_hdr_encode(&h, b);
	ck_assert_int_eq(mnet_hdr_decode(b, sizeof b, &d), ERR_RANGE);
	h.sender = 1;
	h.flags = 2;
	mnet_hdr_encode(&h, b);
	ck_assert_int_eq(mnet_hdr_decode(b, sizeof b, &d), ERR_UNSUPPORTED);
	h.flags = MNET_FLAG_ABORT; /* an abort carries no data */
	mnet_hdr_encode(&h, b);
	ck_assert_int_eq(mnet_hdr_decode(b, sizeof b, &d), ERR_PARSE);
}
END_TEST

/* The tests both modes share, then each mode's own. */
static TCase *mode_case(const char *name, void (*setup_fn)(void))
{
	TCase *tc = tcase_create(name);
	tcase_add_unchecked_fixture(tc, setup_pki, teardown_pki);
	tcase_add_checked_fixture(tc, setup_fn, teardown);
	tcase_set_timeout(tc, 60);
	tcase_add_test(tc, test_engine_over_mtls_3);
	tcase_add_test(tc, test_engine_over_mtls_2);
	tcase_add_test(tc, test_engine_over_mtls_5);
	tcase_add_test(tc, test_sizes_and_counters);
	tcase_add_test(tc, test_wrong_size_aborts_everywhere);
	tcase_add_test(tc, test_silent_peer_times_out);
	tcase_add_test(tc, test_abort_reaches_every_party);
	tcase_add_test(tc, test_cancel_from_another_thread);
	tcase_add_test(tc, test_vanished_peer_ends_the_generation);
	tcase_add_test(tc, test_memory_bound_aborts);
	tcase_add_test(tc, test_unreachable_peer_fails_fast);
	return tc;
}

Suite *suite(void)
{
	Suite *s = suite_create("mnet");
	TCase *codec = tcase_create("codec");
	tcase_add_test(codec, test_header_codec);
	suite_add_tcase(s, codec);
	TCase *req = mode_case("request", setup_request);
	tcase_add_test(req, test_replay_impostor_and_outsiders_refused_post);
	suite_add_tcase(s, req);
	TCase *str = mode_case("stream", setup_stream);
	tcase_add_test(str, test_replay_impostor_and_outsiders_refused_stream);
	tcase_add_test(str, test_stream_bad_payloads_end_the_stream);
	tcase_add_test(str, test_stream_listener_refusals);
	tcase_add_test(str, test_stream_handshake_deadline);
	tcase_add_test(str, test_net_needs_stream_urls_and_listener);
	suite_add_tcase(s, str);
	return s;
}
