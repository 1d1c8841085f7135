/* Integration: the MPC transport over mutual TLS. Each party has its own HTTPS server
 * (the platform's, with the party certificate from a real mimir-pki dev PKI) and hub;
 * the parties run in threads and talk only through loopback TLS. Proves: the engine's
 * protocol code gives the same results (and the same rounds and bytes) over mnet as
 * over the in-process hub; wrong sizes, replays, impostors, silent peers and aborts end
 * the generation everywhere with a clear error, quickly. */
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "err/err.h"
#include "http/http.h"
#include "httpc/httpc.h"
#include "mnet/mnet.h"
#include "mpc/mpc.h"
#include "testutil.h"

#define MAXP 5

static char tmp[256], pki[300];
static struct http_server *srv[MAXP];
static struct mnet_hub *hub[MAXP];
static struct mnet_peer peers[MAXP];

static int h_round(struct http_req *r, void *ctx)
{
	/* In a service the context is the service's; here each server's is its hub. */
	return mnet_hub_deliver(ctx, r);
}

/* One route table per server, because the hub is the server's context. */
static const struct http_route routes[] = {
	{"POST", MNET_ROUTE, h_round, HTTP_ROLE(IDENT_ROLE_PARTY), MNET_HDR_LEN + MNET_MAX_DATA, HTTP_ROUTE_QUIET | HTTP_ROUTE_SECRET},
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

static void setup(void)
{
	for (int i = 0; i < MAXP; i++) {
		char name[24], crt[400], key[400], ca[400];
		snprintf(name, sizeof name, "party%d", i);
		path_of(crt, sizeof crt, name, "crt");
		path_of(key, sizeof key, name, "key");
		path_of(ca, sizeof ca, "ca", "crt");
		ck_assert_int_eq(mnet_hub_new(0, &hub[i]), 0);
		struct http_server_config hc = {.service = name, .port = 0, .threads = 4,
						.tls_cert = crt, .tls_key = key, .tls_ca = ca};
		ck_assert_int_eq(http_server_start(&srv[i], &hc, routes, hub[i], NULL), 0);
		static char urls[MAXP][64];
		snprintf(urls[i], sizeof urls[i], "https://localhost:%u", http_server_port(srv[i]));
		peers[i].url = urls[i];
		ck_assert_int_eq(mnet_cert_fingerprint(crt, peers[i].fingerprint), 0);
	}
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
	return (struct mnet_opts){.ca_file = ca, .cert_file = crt[i], .key_file = key[i], .timeout_ms = timeout_ms};
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
	double ms;
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

enum { M_SIZES, M_WRONG_SIZE, M_SILENT, M_ABORT };

static void *run_raw(void *arg)
{
	struct party *p = arg;
	uint8_t sbuf[MAXP][4096], rbuf[MAXP][4096];
	const uint8_t *send[MAXP];
	uint8_t *recv[MAXP];
	size_t slen[MAXP], rlen[MAXP];
	struct timespec t0, t1;
	clock_gettime(CLOCK_MONOTONIC, &t0);
	p->rc = 0;
	for (unsigned round = 0; round < 6 && p->rc == 0; round++) {
		if (p->mode == M_SILENT && p->id == 2)
			break; /* party 2 never shows up */
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
			memset(sbuf[j], (int)(p->id * 16 + round), slen[j]);
			send[j] = sbuf[j];
			recv[j] = rbuf[j];
		}
		p->rc = mpc_net_exchange(p->net, send, slen, recv, rlen);
		for (unsigned j = 0; p->rc == 0 && j < p->n; j++)
			if (j != p->id && rlen[j] && rbuf[j][0] != (uint8_t)(j * 16 + round))
				p->rc = ERR_INTERNAL;
	}
	clock_gettime(CLOCK_MONOTONIC, &t1);
	p->ms = (double)(t1.tv_sec - t0.tv_sec) * 1e3 + (double)(t1.tv_nsec - t0.tv_nsec) / 1e6;
	return NULL;
}

static void run_raw_parties(unsigned n, int mode, unsigned tag, unsigned timeout_ms, struct party *ps)
{
	uint8_t sid[MNET_SESSION_LEN];
	session_id(sid, tag);
	for (unsigned i = 0; i < n; i++) {
		memset(&ps[i], 0, sizeof ps[i]);
		ps[i].id = i;
		ps[i].n = n;
		ps[i].mode = mode;
		struct mnet_opts o = opts_for(i, timeout_ms);
		ck_assert_int_eq(mnet_net_new(hub[i], sid, 7, i, n, peers, &o, &ps[i].net), 0);
	}
	pthread_t th[MAXP];
	for (unsigned i = 0; i < n; i++)
		pthread_create(&th[i], NULL, run_raw, &ps[i]);
	for (unsigned i = 0; i < n; i++)
		pthread_join(th[i], NULL);
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
		ck_assert_msg(ps[i].ms < 3000, "party %d took %.0f ms to stop", i, ps[i].ms);
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
		ck_assert_msg(ps[i].ms < 2500, "party %d waited %.0f ms (timeout 800)", i, ps[i].ms);
	}
}
END_TEST

START_TEST(test_abort_reaches_every_party)
{
	struct party ps[3];
	run_raw_parties(3, M_ABORT, 13, 20000, ps);
	for (int i = 0; i < 3; i++) {
		ck_assert_int_eq(ps[i].rc, ERR_ABORTED);
		/* Long before the 20 s timeout: the abort was sent, not waited out. */
		ck_assert_msg(ps[i].ms < 3000, "party %d stopped after %.0f ms", i, ps[i].ms);
	}
}
END_TEST

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

START_TEST(test_replay_impostor_and_outsiders_refused)
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

Suite *suite(void)
{
	Suite *s = suite_create("mnet");
	TCase *codec = tcase_create("codec");
	tcase_add_test(codec, test_header_codec);
	suite_add_tcase(s, codec);
	TCase *tc = tcase_create("mtls");
	tcase_add_unchecked_fixture(tc, setup_pki, teardown_pki);
	tcase_add_checked_fixture(tc, setup, teardown);
	tcase_set_timeout(tc, 60);
	tcase_add_test(tc, test_engine_over_mtls_3);
	tcase_add_test(tc, test_engine_over_mtls_2);
	tcase_add_test(tc, test_engine_over_mtls_5);
	tcase_add_test(tc, test_sizes_and_counters);
	tcase_add_test(tc, test_wrong_size_aborts_everywhere);
	tcase_add_test(tc, test_silent_peer_times_out);
	tcase_add_test(tc, test_abort_reaches_every_party);
	tcase_add_test(tc, test_replay_impostor_and_outsiders_refused);
	suite_add_tcase(s, tc);
	return s;
}
