/* Integration: secure generation across separate processes. A real mimir-dealer and
 * three real mimir-party processes on loopback, every link mutual TLS with a dev PKI
 * from the real mimir-pki, each party holding one share file made by the real
 * mimir-model from ../shared/models/stories260K.bin. The test plays the gateway and the
 * client: it opens the session at every party, relays the client protocol messages
 * (MASKS, RECEIPT and each token's OUTPUT from the parties' event streams, the client's
 * INPUT back to them) and checks, as the client (common/clientio), that the greedy
 * tokens of "Once upon a time" are the expected ids of ../shared/models/README.md.
 *
 * Faults, each its own test: a party killed with SIGKILL mid-generation (the others
 * end it with an error within the bound and keep serving; a new session after the
 * restart works); the dealer stopped before a session and frozen during a generation
 * (bounded waits, errors naming the dealer); a peer that is not the session's (another
 * party certificate) or has the wrong role (refused in the handshake); a replayed round
 * payload (refused, and the generation ends everywhere) next to an impostor's (refused
 * without disturbing it); a cancel that ends a generation at every party at the same
 * token while the session goes on; and the control API's refusals. */
#include <pthread.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include <jansson.h>
#include <sodium.h>

#include "clientio/clientio.h"
#include "err/err.h"
#include "httpc/httpc.h"
#include "mnet/mnet.h"
#include "mshare/mshare.h"
#include "refcases.h"
#include "sse/sse.h"
#include "svcproc.h"
#include "testutil.h"

#define NP 3
#define SLOTS (NP + 1) /* process slots: the three parties and an impostor */
#define V 512          /* stories260K's vocabulary */
#define MAXTOK 64

static char tmp[256], pki[300], shares[300];
static struct tu_svc dealer, party[SLOTS];
static bool dealer_up, party_up[SLOTS];
static char dealer_fp_hex[65];
static uint8_t sealing[SLOTS][CIO_KEY_BYTES];
static char cert_of[SLOTS][32], fp_of[SLOTS][65];
static int stream_port[SLOTS];

static int64_t now_ms(void)
{
	struct timespec ts;
	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

static void fresh_id(char out[33])
{
	uint8_t b[16];
	randombytes_buf(b, sizeof b);
	sodium_bin2hex(out, 33, b, sizeof b);
}

static void fingerprint_hex(const char *cert, char out[65])
{
	char crt[400];
	uint8_t fp[32];
	snprintf(crt, sizeof crt, "%s/%s.crt", pki, cert);
	ck_assert_int_eq(mnet_cert_fingerprint(crt, fp), 0);
	sodium_bin2hex(out, 65, fp, sizeof fp);
}

/* ---- the cluster ---- */

/* Certificates (party3: a party certificate no session names), a key pair per party
 * and the three share files: once, in the parent (files survive Check's fork). */
static void setup_once(void)
{
	char bin[512], model[1024], to[1200];
	tu_tmpdir(tmp, sizeof tmp);
	snprintf(pki, sizeof pki, "%s/pki", tmp);
	snprintf(shares, sizeof shares, "%s/shares", tmp);
	/* the namespace test's addresses are in every certificate too (harmless elsewhere) */
	ck_assert_int_eq(tu_pki(tmp, "dev --parties %d --ip 10.77.0.1 --ip 10.77.0.2 --ip 10.77.1.2 --ip 10.77.2.2 --out %s",
				NP + 1, pki),
			 0);
	tu_build(bin, sizeof bin, "bin/mimir-model");
	tu_shared(model, sizeof model, "models/stories260K.bin");
	to[0] = '\0';
	for (int i = 0; i < NP; i++) {
		ck_assert_int_eq(tu_system("%s keygen --out %s --name party%d >/dev/null", bin, shares, i), 0);
		size_t l = strlen(to);
		snprintf(to + l, sizeof to - l, "%s%s/party%d.x25519.pub", i ? "," : "", shares, i);
	}
	ck_assert_int_eq(tu_system("%s share --model %s --parties %d --to %s --out %s --name stories >/dev/null",
				   bin, model, NP, to, shares),
			 0);
	fingerprint_hex("dealer", dealer_fp_hex);
}

static void teardown_once(void)
{
	tu_rmrf(tmp);
}

static const char *dealer_bind = "127.0.0.1";

static void start_dealer(void)
{
	char json[2048];
	snprintf(json, sizeof json,
		 "{\"http\": {\"port\": 0, \"bind\": \"%s\", \"threads\": 4, \"drain_timeout_ms\": 3000},"
		 " \"tls\": {\"cert\": \"%s/dealer.crt\", \"key\": \"%s/dealer.key\", \"ca\": \"%s/ca.crt\"},"
		 " \"pool\": {\"workers\": 1}}",
		 dealer_bind, pki, pki, pki);
	ck_assert_msg(tu_svc_start(&dealer, tmp, "mimir-dealer", "dealer", json, NULL) == 0,
		      "the dealer did not start; see %s", dealer.log);
	dealer_up = true;
}

static struct httpc *client_as(const char *cert, const char *url, enum ident_role role, long timeout_ms)
{
	char ca[400], crt[400], key[400];
	snprintf(ca, sizeof ca, "%s/ca.crt", pki);
	snprintf(crt, sizeof crt, "%s/%s.crt", pki, cert);
	snprintf(key, sizeof key, "%s/%s.key", pki, cert);
	struct httpc_opts o = {.base_url = url, .ca_file = ca, .cert_file = crt, .key_file = key,
			       .expect_role = role, .timeout_ms = timeout_ms, .retries = 0};
	struct httpc *c = NULL;
	ck_assert_int_eq(httpc_new(&c, &o), 0);
	return c;
}

/* One request as cert; returns the status and, when asked, the parsed body. */
static long call(const char *cert, const char *url, enum ident_role role, const char *method, const char *path,
		 const char *ctype, const void *body, size_t len, json_t **doc)
{
	struct httpc *c = client_as(cert, url, role, 30000);
	struct httpc_resp r;
	int rc = httpc_request(c, method, path, NULL, ctype, body, len, &r);
	ck_assert_msg(rc == 0, "%s %s%s: no response (%s)", method, url, path, r.error);
	if (doc)
		*doc = json_loadb(r.body, r.len, 0, NULL);
	long st = r.status;
	httpc_resp_free(&r);
	httpc_free(c);
	return st;
}

/* As admin at party slot i (JSON in, JSON out). */
static long pcall(int i, const char *method, const char *path, const char *json, json_t **doc)
{
	return call("admin", party[i].url, IDENT_ROLE_PARTY, method, path, json ? "application/json" : NULL, json,
		    json ? strlen(json) : 0, doc);
}

static const char *jstr(const json_t *o, const char *k)
{
	const char *s = json_string_value(json_object_get(o, k));
	return s ? s : "";
}

struct party_opts {
	int index;        /* whose share file and key it holds */
	const char *cert; /* its certificate, "party<slot>" when NULL */
	unsigned round_ms, dealer_ms;
	unsigned idle_expiry_s, max_sessions; /* 0: the test's defaults */
	const char *bind;  /* numeric address of both listeners (NULL: loopback) */
	char *const *wrap; /* argv prefix, e.g. ip netns exec NS */
};

/* Starts process slot i and checks what it publishes: its role and index, the sealing
 * key its share file was sealed to, the fingerprint of the certificate it serves. */
static void start_party(int slot, const struct party_opts *po)
{
	char json[4096], name[16];
	snprintf(name, sizeof name, "party%d", slot);
	snprintf(cert_of[slot], sizeof cert_of[slot], "%s", po->cert ? po->cert : name);
	const char *cert = cert_of[slot];
	fingerprint_hex(cert, fp_of[slot]);
	snprintf(json, sizeof json,
		 "{\"http\": {\"port\": 0, \"bind\": \"%s\", \"threads\": 4, \"drain_timeout_ms\": 3000},"
		 " \"tls\": {\"cert\": \"%s/%s.crt\", \"key\": \"%s/%s.key\", \"ca\": \"%s/ca.crt\"},"
		 " \"mtls\": {\"cert\": \"%s/%s.crt\", \"key\": \"%s/%s.key\", \"ca\": \"%s/ca.crt\"},"
		 " \"stream\": {\"port\": 0, \"bind\": \"%s\"},"
		 " \"model\": {\"share\": \"%s/stories.party%d.mshare\", \"key\": \"%s/party%d.x25519.key\"},"
		 " \"timeouts\": {\"round_ms\": %u, \"dealer_ms\": %u},"
		 " \"limits\": {\"input_timeout_ms\": 30000, \"idle_expiry_s\": %u, \"max_sessions\": %u},"
		 " \"sse\": {\"heartbeat_ms\": 1000}}",
		 po->bind ? po->bind : "127.0.0.1", pki, cert, pki, cert, pki, pki, cert, pki, cert, pki,
		 po->bind ? po->bind : "127.0.0.1", shares, po->index, shares, po->index,
		 po->round_ms, po->dealer_ms, po->idle_expiry_s ? po->idle_expiry_s : 900,
		 po->max_sessions ? po->max_sessions : 16);
	ck_assert_msg(tu_svc_start(&party[slot], tmp, "mimir-party", name, json, po->wrap) == 0,
		      "party %d did not start; see %s", slot, party[slot].log);
	party_up[slot] = true;
	if (po->bind) { /* reached at its own address, not loopback */
		const char *port = strrchr(party[slot].url, ':');
		char u[sizeof party[slot].url];
		snprintf(u, sizeof u, "https://%s%s", po->bind, port ? port : ":0");
		memcpy(party[slot].url, u, sizeof u);
	}
	json_t *id = NULL;
	ck_assert_int_eq(pcall(slot, "GET", "/v1/identity", NULL, &id), 200);
	ck_assert_str_eq(jstr(id, "role"), "party");
	ck_assert_str_eq(jstr(id, "certificate_fingerprint"), fp_of[slot]);
	ck_assert_int_eq(json_integer_value(json_object_get(id, "index")), po->index);
	ck_assert_int_eq(json_integer_value(json_object_get(id, "nparties")), NP);
	ck_assert_int_eq(json_integer_value(json_object_get(json_object_get(id, "model"), "vocab_size")), V);
	size_t got = 0;
	const char *sk = jstr(id, "sealing_key");
	ck_assert(sodium_hex2bin(sealing[slot], CIO_KEY_BYTES, sk, strlen(sk), NULL, &got, NULL) == 0 &&
		  got == CIO_KEY_BYTES);
	char pub[400], err[256];
	uint8_t want[32];
	snprintf(pub, sizeof pub, "%s/party%d.x25519.pub", shares, po->index);
	ck_assert_int_eq(mshare_key_read(pub, false, want, err, sizeof err), 0);
	ck_assert_mem_eq(sealing[slot], want, sizeof want);
	stream_port[slot] = (int)json_integer_value(json_object_get(id, "stream_port"));
	ck_assert_int_gt(stream_port[slot], 0);
	json_decref(id);
}

/* SIGTERM and a clean exit expected; otherwise the end of its log says why. */
static void stop_party(int slot)
{
	if (!party_up[slot])
		return;
	party_up[slot] = false;
	int st = tu_proc_stop(&party[slot].proc, SIGTERM, 15000);
	if (st >= 0 && WIFEXITED(st) && WEXITSTATUS(st) == 0)
		return;
	size_t len = 0;
	char *text = tu_read_file(party[slot].log, &len);
	ck_abort_msg("party slot %d did not exit 0 on SIGTERM (status %d); the end of its log:\n%s", slot, st,
		     text ? text + (len > 4000 ? len - 4000 : 0) : "(none)");
	free(text);
}

static void assert_clean_log(const char *path)
{
	char *text = tu_read_file(path, NULL);
	ck_assert_msg(text && !strstr(text, "Sanitizer") && !strstr(text, "runtime error"),
		      "sanitizer report in %s", path);
	free(text);
}

/* The bounds the parties run with; the sanitizer and second-compiler runs (quick
 * depth) are several times slower, so their rounds get more room. */
static unsigned round_ms = 10000, dealer_ms = 4000;
static char dealer_url_for_parties[96]; /* where the parties reach the dealer, when not dealer.url */

static void setup(void)
{
	setvbuf(stdout, NULL, _IOLBF, 0); /* a failing test's figures are not lost */
	if (tu_quick())
		round_ms = 30000, dealer_ms = 15000;
	start_dealer();
	for (int i = 0; i < NP; i++)
		start_party(i, &(struct party_opts){.index = i, .round_ms = round_ms, .dealer_ms = dealer_ms});
}

static void teardown(void)
{
	for (int i = 0; i < SLOTS; i++)
		if (party_up[i]) {
			stop_party(i);
			assert_clean_log(party[i].log);
		}
	if (dealer_up) {
		kill(dealer.proc.pid, SIGCONT);
		tu_svc_stop(&dealer);
		dealer_up = false;
		assert_clean_log(dealer.log);
	}
}

/* ---- sessions ---- */

/* The party at process slot slots[k] plays index k. Peers: the processes' URLs and
 * the certificates they are expected to have (fp[k], default the process's own). */
struct layout {
	int slots[NP];
	const char *url[NP];        /* override: where index k is reached */
	const char *stream_url[NP]; /* override */
	const char *fp[NP];         /* override: the certificate index k must have */
	const char *dealer_fp[NP];  /* override: the certificate the dealer registers */
};

static void default_layout(struct layout *l)
{
	memset(l, 0, sizeof *l);
	for (int k = 0; k < NP; k++)
		l->slots[k] = k;
}

static long create_dealer_session(const char *id, const struct layout *l)
{
	char body[1024];
	const char *fp[NP];
	for (int k = 0; k < NP; k++)
		fp[k] = l->dealer_fp[k] ? l->dealer_fp[k] : l->fp[k] ? l->fp[k] : fp_of[l->slots[k]];
	snprintf(body, sizeof body, "{\"id\": \"%s\", \"nparties\": %d, \"fingerprints\": [\"%s\", \"%s\", \"%s\"]}", id,
		 NP, fp[0], fp[1], fp[2]);
	return call("admin", dealer.url, IDENT_ROLE_DEALER, "POST", "/v1/sessions", "application/json", body,
		    strlen(body), NULL);
}

static void session_body(char *out, size_t cap, const char *id, int k, const struct layout *l)
{
	int n = snprintf(out, cap, "{\"id\": \"%s\", \"index\": %d, \"nparties\": %d, \"peers\": [", id, k, NP);
	for (int j = 0; j < NP; j++) {
		char u[96], su[96];
		int s = l->slots[j];
		snprintf(u, sizeof u, "%s", l->url[j] ? l->url[j] : party[s].url);
		if (l->stream_url[j])
			snprintf(su, sizeof su, "%s", l->stream_url[j]);
		else
			snprintf(su, sizeof su, "https://localhost:%d", stream_port[s]);
		/* a process always names itself with its own certificate (else it refuses) */
		const char *fp = l->fp[j] && j != k ? l->fp[j] : fp_of[s];
		n += snprintf(out + n, cap - (size_t)n,
			      "%s{\"index\": %d, \"url\": \"%s\", \"stream_url\": \"%s\", \"fingerprint\": \"%s\"}",
			      j ? ", " : "", j, u, su, fp);
	}
	snprintf(out + n, cap - (size_t)n, "], \"dealer\": {\"url\": \"%s\", \"fingerprint\": \"%s\"}}",
		 dealer_url_for_parties[0] ? dealer_url_for_parties : dealer.url, dealer_fp_hex);
}

/* Opens session id at the parties of the layout (those of skip_mask left out). */
static void open_session(const char *id, const struct layout *l, unsigned skip_mask)
{
	ck_assert_int_eq(create_dealer_session(id, l), 201);
	for (int k = 0; k < NP; k++) {
		if (skip_mask & (1u << k))
			continue;
		char body[4096];
		json_t *doc = NULL;
		session_body(body, sizeof body, id, k, l);
		long st = pcall(l->slots[k], "POST", "/v1/sessions", body, &doc);
		ck_assert_msg(st == 202, "POST /v1/sessions at index %d: %ld %s", k, st, jstr(doc, "detail"));
		ck_assert_str_eq(jstr(doc, "id"), id);
		json_decref(doc);
	}
}

/* The session's state at slot s (its detail into detail when given). */
static void session_state(int s, const char *id, char *state, size_t scap, char *detail, size_t dcap)
{
	char path[96];
	json_t *doc = NULL;
	snprintf(path, sizeof path, "/v1/sessions/%s", id);
	long st = pcall(s, "GET", path, NULL, &doc);
	snprintf(state, scap, "%s", st == 200 ? jstr(doc, "state") : st == 404 ? "absent" : "?");
	if (detail)
		snprintf(detail, dcap, "%s", jstr(doc, "detail"));
	json_decref(doc);
}

/* Waits until the session is no longer initialising at every slot listed; returns the
 * time it took. */
static int64_t wait_settled(const char *id, const int *slots, int n, int64_t limit_ms)
{
	int64_t t0 = now_ms();
	for (;;) {
		bool settled = true;
		for (int k = 0; k < n; k++) {
			char st[32];
			session_state(slots[k], id, st, sizeof st, NULL, 0);
			if (!strcmp(st, "initialising") || !strcmp(st, "created"))
				settled = false;
		}
		if (settled)
			return now_ms() - t0;
		ck_assert_msg(now_ms() - t0 < limit_ms, "session %s still initialising after %lld ms", id,
			      (long long)limit_ms);
		usleep(200000);
	}
}

static void expect_state(int s, const char *id, const char *want)
{
	char st[32], detail[400];
	session_state(s, id, st, sizeof st, detail, sizeof detail);
	ck_assert_msg(!strcmp(st, want), "session at slot %d is %s, expected %s (%s)", s, st, want, detail);
}

static void close_session(const struct layout *l, const char *id, unsigned skip_mask)
{
	char path[96];
	snprintf(path, sizeof path, "/v1/sessions/%s", id);
	for (int k = 0; k < NP; k++)
		if (party_up[l->slots[k]] && !(skip_mask & (1u << k)))
			ck_assert_int_eq(pcall(l->slots[k], "DELETE", path, NULL, NULL), 204);
	call("admin", dealer.url, IDENT_ROLE_DEALER, "DELETE", path, NULL, NULL, 0, NULL);
}

/* ---- the relay and the client ---- */

struct ev {
	int k; /* session index of the party whose stream it came from */
	char name[32];
	char *data;
	int64_t at_ms;
	struct ev *next;
};

struct evq {
	pthread_mutex_t mu;
	pthread_cond_t cv;
	struct ev *head, *tail;
};

static void evq_push(struct evq *q, int k, const char *name, const char *data, size_t len)
{
	struct ev *e = calloc(1, sizeof *e);
	ck_assert_ptr_nonnull(e);
	e->k = k;
	snprintf(e->name, sizeof e->name, "%s", name);
	e->data = strndup(data ? data : "", len);
	e->at_ms = now_ms();
	pthread_mutex_lock(&q->mu);
	if (q->tail)
		q->tail->next = e;
	else
		q->head = e;
	q->tail = e;
	pthread_cond_broadcast(&q->cv);
	pthread_mutex_unlock(&q->mu);
}

static struct ev *evq_pop(struct evq *q, int64_t deadline)
{
	pthread_mutex_lock(&q->mu);
	while (!q->head && now_ms() < deadline) {
		struct timespec ts;
		clock_gettime(CLOCK_REALTIME, &ts);
		ts.tv_sec += 1;
		pthread_cond_timedwait(&q->cv, &q->mu, &ts);
	}
	struct ev *e = q->head;
	if (e && !(q->head = e->next))
		q->tail = NULL;
	pthread_mutex_unlock(&q->mu);
	return e;
}

static void ev_free(struct ev *e)
{
	if (e)
		free(e->data);
	free(e);
}

struct reader {
	int k, slot;
	char path[256];
	struct evq *q;
	struct sse_parser *p;
	volatile bool stop;
	pthread_t th;
};

static int on_event(const struct sse_event *ev, void *arg)
{
	struct reader *r = arg;
	evq_push(r->q, r->k, ev->event, ev->data, ev->data_len);
	return 0;
}

static int on_chunk(const char *data, size_t len, void *arg)
{
	struct reader *r = arg;
	if (r->stop)
		return 1;
	return sse_parser_feed(r->p, data, len, on_event, r) != 0;
}

static void *reader_main(void *arg)
{
	struct reader *r = arg;
	struct httpc *c = client_as("admin", party[r->slot].url, IDENT_ROLE_PARTY, 0);
	struct httpc_resp resp;
	r->p = sse_parser_new(4 << 20);
	httpc_stream(c, "GET", r->path, NULL, on_chunk, r, &resp);
	char status[16];
	snprintf(status, sizeof status, "%ld", resp.status);
	evq_push(r->q, r->k, "end", status, strlen(status));
	httpc_resp_free(&resp);
	sse_parser_free(r->p);
	httpc_free(c);
	return NULL;
}

/* What a generation gave the client and what each party's stream said. */
struct gen_out {
	uint64_t tok[MAXTOK];
	size_t ntok;
	int done;                /* streams that ended with "done" */
	int errors;              /* streams that ended with "error" */
	char error_type[NP][96];
	char error_detail[NP][400];
	char error_check[NP][48];
	int64_t end_ms[NP];      /* when each stream ended */
	int64_t first_token_ms;
	int64_t stop_ms;         /* when the fault hook ran */
	bool client_failed;
	int tokens_seen[NP];     /* token events per party */
};

struct gen_opts {
	const struct layout *l;
	const char *session;
	const int *prompt;
	int np;
	int max_tokens;
	int fault_after; /* run fault() once the client has this many tokens (0: never) */
	void (*fault)(void *arg);
	void *fault_arg;
	int tamper; /* 1 + the index whose copy of the INPUT the relay alters (0: none) */
	int64_t limit_ms;
};

static void b64_feed(struct cio_client *cl, const char *json_text, int *rc)
{
	json_t *j = json_loads(json_text, 0, NULL);
	const char *m = jstr(j, "message");
	size_t cap = strlen(m), len = 0;
	uint8_t *bin = malloc(cap + 1);
	ck_assert_int_eq(sodium_base642bin(bin, cap + 1, m, cap, NULL, &len, NULL, sodium_base64_VARIANT_ORIGINAL), 0);
	*rc = cio_client_feed(cl, bin, len);
	free(bin);
	json_decref(j);
}

/* One generation, the test as the gateway (it relays) and as the client (it holds the
 * ephemeral key, makes the INPUT and reads the tokens). */
static void generate(const struct gen_opts *o, struct gen_out *out)
{
	memset(out, 0, sizeof *out);
	char gid[33], ckhex[65];
	fresh_id(gid);
	uint8_t cpk[CIO_KEY_BYTES], csk[CIO_KEY_BYTES], pks[NP][CIO_KEY_BYTES];
	ck_assert_int_eq(cio_keypair(cpk, csk), 0);
	sodium_bin2hex(ckhex, sizeof ckhex, cpk, sizeof cpk);
	for (int k = 0; k < NP; k++)
		memcpy(pks[k], sealing[o->l->slots[k]], CIO_KEY_BYTES);
	const uint32_t n_in = (uint32_t)o->np * V, n_out = (uint32_t)o->max_tokens;
	struct cio_client_params cp = {.nparties = NP, .party_pk = (const uint8_t(*)[CIO_KEY_BYTES])pks,
				       .n_in = n_in, .n_out = n_out};
	size_t got;
	sodium_hex2bin(cp.session, sizeof cp.session, o->session, 32, NULL, &got, NULL);
	sodium_hex2bin(cp.generation, sizeof cp.generation, gid, 32, NULL, &got, NULL);
	memcpy(cp.client_sk, csk, sizeof csk);
	struct cio_client *cl = NULL;
	ck_assert_int_eq(cio_client_new(&cp, &cl), 0);
	sodium_memzero(&cp, sizeof cp);

	char body[512], base[160];
	snprintf(base, sizeof base, "/v1/sessions/%s/generations", o->session);
	snprintf(body, sizeof body, "{\"id\": \"%s\", \"client_key\": \"%s\", \"slots\": %d, \"max_tokens\": %d}", gid,
		 ckhex, o->np, o->max_tokens);
	for (int k = 0; k < NP; k++) {
		json_t *doc = NULL;
		long st = pcall(o->l->slots[k], "POST", base, body, &doc);
		ck_assert_msg(st == 202, "POST generation at index %d: %ld %s", k, st, jstr(doc, "detail"));
		json_decref(doc);
	}
	struct evq q = {.mu = PTHREAD_MUTEX_INITIALIZER, .cv = PTHREAD_COND_INITIALIZER};
	struct reader rd[NP];
	for (int k = 0; k < NP; k++) {
		memset(&rd[k], 0, sizeof rd[k]);
		rd[k].k = k;
		rd[k].slot = o->l->slots[k];
		rd[k].q = &q;
		snprintf(rd[k].path, sizeof rd[k].path, "%s/%s/events", base, gid);
		ck_assert_int_eq(pthread_create(&rd[k].th, NULL, reader_main, &rd[k]), 0);
	}
	int ended = 0, masks = 0;
	bool input_sent = false, faulted = false;
	int64_t deadline = now_ms() + o->limit_ms;
	while (ended < NP) {
		struct ev *e = evq_pop(&q, deadline);
		ck_assert_msg(e, "the generation did not end within %lld ms (%zu tokens)", (long long)o->limit_ms,
			      out->ntok);
		int rc = 0;
		if (!strcmp(e->name, "end")) {
			ended++;
			out->end_ms[e->k] = e->at_ms;
		} else if (!strcmp(e->name, "masks") || !strcmp(e->name, "receipt") || !strcmp(e->name, "token")) {
			b64_feed(cl, e->data, &rc);
			ck_assert_msg(rc == 0, "the client refused the %s of index %d: %s", e->name, e->k,
				      cio_client_why(cl));
			masks += !strcmp(e->name, "masks");
			out->tokens_seen[e->k] += !strcmp(e->name, "token");
		} else if (!strcmp(e->name, "done")) {
			out->done++;
		} else if (!strcmp(e->name, "error")) {
			json_t *p = json_loads(e->data, 0, NULL);
			out->errors++;
			snprintf(out->error_type[e->k], sizeof out->error_type[e->k], "%s", jstr(p, "type"));
			snprintf(out->error_detail[e->k], sizeof out->error_detail[e->k], "%s", jstr(p, "detail"));
			snprintf(out->error_check[e->k], sizeof out->error_check[e->k], "%s", jstr(p, "check"));
			json_decref(p);
		}
		if (masks == NP && !input_sent) {
			uint64_t *x = calloc(n_in, sizeof *x);
			for (int i = 0; i < o->np; i++)
				x[(size_t)i * V + (size_t)o->prompt[i]] = 1; /* one-hot rows */
			uint8_t *in = NULL;
			size_t in_len = 0;
			ck_assert_int_eq(cio_client_input(cl, x, n_in, &in, &in_len), 0);
			free(x);
			char path[200];
			snprintf(path, sizeof path, "%s/%s/input", base, gid);
			for (int k = 0; k < NP; k++) {
				in[CIO_HDR_BYTES] ^= (uint8_t)(o->tamper == k + 1); /* a masked value */
				long st = call("admin", party[o->l->slots[k]].url, IDENT_ROLE_PARTY, "POST", path,
					       "application/octet-stream", in, in_len, NULL);
				in[CIO_HDR_BYTES] ^= (uint8_t)(o->tamper == k + 1);
				ck_assert_msg(st == 202, "POST input at index %d: %ld", k, st);
			}
			free(in);
			input_sent = true;
		}
		size_t n = 0;
		ck_assert_int_eq(cio_client_take(cl, out->tok + out->ntok, MAXTOK - out->ntok, &n), 0);
		if (n && !out->ntok)
			out->first_token_ms = now_ms();
		out->ntok += n;
		if (o->fault && !faulted && out->ntok >= (size_t)o->fault_after) {
			faulted = true;
			out->stop_ms = now_ms();
			o->fault(o->fault_arg);
		}
		ev_free(e);
	}
	struct cio_client_status cs;
	cio_client_status(cl, &cs);
	out->client_failed = cs.failed;
	for (int k = 0; k < NP; k++) {
		rd[k].stop = true;
		pthread_join(rd[k].th, NULL);
	}
	for (struct ev *e; (e = evq_pop(&q, 0));)
		ev_free(e);
	cio_client_free(cl);
	sodium_memzero(csk, sizeof csk);
}

static const struct tu_ref_case *once_upon(void)
{
	static struct tu_ref_case c[TU_REF_MAX];
	int n = tu_ref_load(c, TU_REF_MAX, NULL);
	for (int i = 0; i < n; i++)
		if (!strcmp(c[i].prompt, "Once upon a time"))
			return &c[i];
	ck_abort_msg("no \"Once upon a time\" case in the models README");
	return NULL;
}

static double metric_of(int slot, const char *line_prefix)
{
	struct httpc *c = client_as("admin", party[slot].url, IDENT_ROLE_PARTY, 30000);
	struct httpc_resp r;
	ck_assert_int_eq(httpc_request(c, "GET", "/metrics", NULL, NULL, NULL, 0, &r), 0);
	ck_assert_int_eq(r.status, 200);
	double v = -1;
	size_t pl = strlen(line_prefix);
	for (char *l = r.body; l && *l; l = strchr(l, '\n') ? strchr(l, '\n') + 1 : NULL)
		if (strncmp(l, line_prefix, pl) == 0 && l[pl] == ' ')
			v = strtod(l + pl + 1, NULL);
	httpc_resp_free(&r);
	httpc_free(c);
	return v;
}

/* ---- tests ---- */

/* The property of the issue: 32 greedy tokens of "Once upon a time", three processes
 * over mTLS, equal to the reference (and to mimir-sim, which itest_sim holds to the
 * same ids). The tokens reach only the client: each party's OUTPUT parts are sealed to
 * the client's key and agree at all three parties. */
START_TEST(test_generate_32_greedy)
{
	const struct tu_ref_case *rc = once_upon();
	const int ntok = tu_quick() ? 8 : 32;
	struct layout l;
	default_layout(&l);
	char sid[33];
	fresh_id(sid);
	open_session(sid, &l, 0);
	int64_t init_ms = wait_settled(sid, l.slots, NP, 180000);
	for (int k = 0; k < NP; k++)
		expect_state(k, sid, "ready");
	struct gen_opts o = {.l = &l, .session = sid, .prompt = rc->pids, .np = rc->np, .max_tokens = ntok,
			     .limit_ms = 900000};
	int64_t t0 = now_ms();
	struct gen_out out;
	generate(&o, &out);
	int64_t t1 = now_ms();
	ck_assert_msg(out.errors == 0, "a party ended with an error: %s", out.error_detail[0][0] ? out.error_detail[0]
						 : out.error_detail[1][0]		       ? out.error_detail[1]
													       : out.error_detail[2]);
	ck_assert_int_eq(out.done, NP);
	ck_assert_uint_eq(out.ntok, (size_t)ntok);
	for (int i = 0; i < ntok; i++)
		ck_assert_msg(out.tok[i] == (uint64_t)rc->gids[i], "token %d: got %llu, expected %d", i,
			      (unsigned long long)out.tok[i], rc->gids[i]);
	printf("party: %d tokens of \"%s\" equal the reference; session ready in %lld ms, first token %.1f s, "
	       "%.2f s per later token, %.1f s in all\n",
	       ntok, rc->prompt, (long long)init_ms, (double)(out.first_token_ms - t0) / 1e3,
	       ntok > 1 ? (double)(t1 - out.first_token_ms) / 1e3 / (ntok - 1) : 0.0, (double)(t1 - t0) / 1e3);

	/* The counters say what happened, and /metrics is valid exposition. */
	for (int k = 0; k < NP; k++) {
		ck_assert_double_eq(metric_of(k, "mimir_party_tokens_total"), ntok);
		ck_assert_double_eq(metric_of(k, "mimir_party_generations_total{outcome=\"done\"}"), 1);
		ck_assert_double_eq(metric_of(k, "mimir_party_sessions_total{outcome=\"ready\"}"), 1);
		ck_assert_double_gt(metric_of(k, "mimir_party_mpc_rounds_total"), 100);
		ck_assert_double_gt(metric_of(k, "mimir_party_triples_sacrificed_total"), 0);
		ck_assert_double_eq(metric_of(k, "mimir_party_generations_running"), 0);
	}
	ck_assert_double_gt(metric_of(0, "mimir_party_dealer_bytes_total"), 0);
	struct httpc *c = client_as("admin", party[0].url, IDENT_ROLE_PARTY, 30000);
	struct httpc_resp r;
	ck_assert_int_eq(httpc_request(c, "GET", "/metrics", NULL, NULL, NULL, 0, &r), 0);
	char path[400];
	snprintf(path, sizeof path, "%s/party-metrics.txt", tmp);
	ck_assert_int_eq(tu_write_file(path, r.body, r.len), 0);
	httpc_resp_free(&r);
	httpc_free(c);
	int st = tu_system("promtool check metrics < %s > %s/promtool.out 2>&1", path, tmp);
	ck_assert_msg(st == 0, "promtool check metrics failed (%d); see %s/promtool.out", st, tmp);

	/* The session goes on after the generation; closing it wipes it everywhere. */
	for (int k = 0; k < NP; k++)
		expect_state(k, sid, "ready");
	close_session(&l, sid, 0);
	for (int k = 0; k < NP; k++)
		expect_state(k, sid, "absent");
	for (int k = 0; k < NP; k++)
		ck_assert_msg(tu_file_contains(party[k].log, "party.session_released", 10000),
			      "party %d did not release the session", k);
}
END_TEST

/* A cancel at one party ends the generation at every party at the same token
 * boundary (the control round), and the session stays ready for the next one. */
struct cancel_arg {
	const char *session;
	char gid[33];
};

static const char *current_gen(int slot, const char *session, char *out)
{
	char path[96];
	json_t *doc = NULL;
	snprintf(path, sizeof path, "/v1/sessions/%s", session);
	ck_assert_int_eq(pcall(slot, "GET", path, NULL, &doc), 200);
	snprintf(out, 33, "%s", jstr(json_object_get(doc, "generation"), "id"));
	json_decref(doc);
	return out;
}

static void cancel_at_party1(void *arg)
{
	struct cancel_arg *a = arg;
	char gid[33], path[160];
	current_gen(1, a->session, gid);
	snprintf(path, sizeof path, "/v1/sessions/%s/generations/%s/cancel", a->session, gid);
	ck_assert_int_eq(pcall(1, "POST", path, "{}", NULL), 202);
}

START_TEST(test_cancel_keeps_session)
{
	const struct tu_ref_case *rc = once_upon();
	struct layout l;
	default_layout(&l);
	char sid[33];
	fresh_id(sid);
	open_session(sid, &l, 0);
	wait_settled(sid, l.slots, NP, 180000);
	struct cancel_arg ca = {.session = sid};
	struct gen_opts o = {.l = &l, .session = sid, .prompt = rc->pids, .np = rc->np, .max_tokens = 12,
			     .fault_after = 1, .fault = cancel_at_party1, .fault_arg = &ca, .limit_ms = 300000};
	struct gen_out out;
	generate(&o, &out);
	ck_assert_int_eq(out.errors, NP);
	for (int k = 0; k < NP; k++) {
		ck_assert_str_eq(out.error_type[k], "urn:mimir:problem:cancelled");
		ck_assert_int_eq(out.tokens_seen[k], out.tokens_seen[0]); /* the same boundary everywhere */
	}
	ck_assert_int_lt(out.tokens_seen[0], 12);
	ck_assert_msg(strstr(out.error_detail[1], "cancelled by the caller"), "%s", out.error_detail[1]);
	ck_assert_msg(strstr(out.error_detail[0], "another party"), "%s", out.error_detail[0]);
	for (size_t i = 0; i < out.ntok; i++)
		ck_assert_int_eq(out.tok[i], rc->gids[i]);
	for (int k = 0; k < NP; k++)
		expect_state(k, sid, "ready");
	/* the next generation of the same session works */
	struct gen_opts o2 = {.l = &l, .session = sid, .prompt = rc->pids, .np = rc->np, .max_tokens = 2,
			      .limit_ms = 300000};
	generate(&o2, &out);
	ck_assert_int_eq(out.done, NP);
	ck_assert_uint_eq(out.ntok, 2);
	ck_assert_int_eq(out.tok[0], rc->gids[0]);
	ck_assert_int_eq(out.tok[1], rc->gids[1]);
	ck_assert_double_eq(metric_of(1, "mimir_party_generations_total{outcome=\"cancelled\"}"), 1);
	close_session(&l, sid, 0);
}
END_TEST

/* kill -9 of one party mid-generation: the other two end the generation with an error
 * at once (the killed party's streams close), free it, and keep serving; after a
 * restart, a new session of the three works. */
static void kill_party2(void *arg)
{
	(void)arg;
	kill(party[2].proc.pid, SIGKILL);
	waitpid(party[2].proc.pid, NULL, 0);
	party_up[2] = false;
}

START_TEST(test_party_killed_mid_generation)
{
	const struct tu_ref_case *rc = once_upon();
	struct layout l;
	default_layout(&l);
	char sid[33];
	fresh_id(sid);
	open_session(sid, &l, 0);
	wait_settled(sid, l.slots, NP, 180000);
	struct gen_opts o = {.l = &l, .session = sid, .prompt = rc->pids, .np = rc->np, .max_tokens = 16,
			     .fault_after = 1, .fault = kill_party2, .limit_ms = 300000};
	struct gen_out out;
	generate(&o, &out);
	ck_assert_int_lt(out.ntok, 16);
	for (int k = 0; k < 2; k++) {
		ck_assert_msg(out.error_type[k][0], "index %d did not end with an error event", k);
		int64_t waited = out.end_ms[k] - out.stop_ms;
		ck_assert_msg(waited < round_ms + 3000, "index %d took %lld ms to end the generation", k,
			      (long long)waited);
		printf("party: kill -9 of party 2: index %d ended the generation after %lld ms: %s\n", k,
		       (long long)waited, out.error_detail[k]);
		expect_state(k, sid, "failed");
	}
	ck_assert(strstr(out.error_detail[0], "peer") || strstr(out.error_detail[1], "peer"));
	for (size_t i = 0; i < out.ntok; i++)
		ck_assert_int_eq(out.tok[i], rc->gids[i]);
	/* the survivors freed the session's engine and still serve */
	for (int k = 0; k < 2; k++) {
		ck_assert(tu_file_contains(party[k].log, "party.session_released", 10000));
		ck_assert_int_eq(pcall(k, "GET", "/readyz", NULL, NULL), 200);
		ck_assert_double_eq(metric_of(k, "mimir_party_generations_running"), 0);
	}
	close_session(&l, sid, 0);
	/* restart, then a new session of the three */
	start_party(2, &(struct party_opts){.index = 2, .round_ms = round_ms, .dealer_ms = dealer_ms});
	fresh_id(sid);
	open_session(sid, &l, 0);
	wait_settled(sid, l.slots, NP, 180000);
	for (int k = 0; k < NP; k++)
		expect_state(k, sid, "ready");
	struct gen_opts o2 = {.l = &l, .session = sid, .prompt = rc->pids, .np = rc->np, .max_tokens = 2,
			      .limit_ms = 300000};
	generate(&o2, &out);
	ck_assert_int_eq(out.done, NP);
	ck_assert_uint_eq(out.ntok, 2);
	ck_assert_int_eq(out.tok[0], rc->gids[0]);
	ck_assert_int_eq(out.tok[1], rc->gids[1]);
	close_session(&l, sid, 0);
}
END_TEST

/* The dealer gone before a session: initialisation fails within the dealer bound with
 * an error naming the dealer. The dealer frozen during a generation: party 0 (the one
 * that fetches payloads) gives up within the bound, and the abort ends the generation
 * at every party; nobody waits for ever. */
static void freeze_dealer(void *arg)
{
	(void)arg;
	kill(dealer.proc.pid, SIGSTOP);
}

START_TEST(test_dealer_stopped)
{
	const struct tu_ref_case *rc = once_upon();
	struct layout l;
	default_layout(&l);
	char sid[33];
	/* frozen mid-generation */
	fresh_id(sid);
	open_session(sid, &l, 0);
	wait_settled(sid, l.slots, NP, 180000);
	struct gen_opts o = {.l = &l, .session = sid, .prompt = rc->pids, .np = rc->np, .max_tokens = 16,
			     .fault_after = 1, .fault = freeze_dealer, .limit_ms = 300000};
	struct gen_out out;
	generate(&o, &out);
	kill(dealer.proc.pid, SIGCONT);
	ck_assert_int_lt(out.ntok, 16);
	ck_assert_int_eq(out.errors, NP);
	for (int k = 0; k < NP; k++) {
		int64_t waited = out.end_ms[k] - out.stop_ms;
		printf("party: dealer frozen: index %d ended after %lld ms: %s\n", k, (long long)waited,
		       out.error_detail[k]);
		ck_assert_msg(waited < dealer_ms + round_ms + 5000, "index %d waited %lld ms", k, (long long)waited);
		expect_state(k, sid, "failed");
	}
	ck_assert_msg(strstr(out.error_detail[0], "dealer"), "%s", out.error_detail[0]);
	ck_assert_str_eq(out.error_check[0], "preprocessing");
	close_session(&l, sid, 0);

	/* stopped before the session */
	tu_svc_stop(&dealer);
	dealer_up = false;
	fresh_id(sid);
	for (int k = 0; k < NP; k++) {
		char body[4096];
		session_body(body, sizeof body, sid, k, &l);
		ck_assert_int_eq(pcall(k, "POST", "/v1/sessions", body, NULL), 202);
	}
	int64_t waited = wait_settled(sid, l.slots, NP, dealer_ms + 8000);
	for (int k = 0; k < NP; k++) {
		char st[32], detail[400];
		session_state(k, sid, st, sizeof st, detail, sizeof detail);
		ck_assert_str_eq(st, "failed");
		ck_assert_msg(strstr(detail, "dealer") && strstr(detail, "could not be reached"), "%s", detail);
		if (k == 0)
			printf("party: dealer stopped: sessions failed after %lld ms: %s\n", (long long)waited,
			       detail);
	}
	for (int k = 0; k < NP; k++)
		ck_assert_double_eq(metric_of(k, "mimir_party_sessions_total{outcome=\"failed\"}"), 1);
	start_dealer(); /* for the teardown's clean stop */
}
END_TEST

/* A party certificate that is not the session's: index 2 is played by a process with
 * party3's certificate (holding party 2's share and key, and told the session with
 * its own certificate at index 2; the dealer, misled as well, gives it a seed).
 * Parties 0 and 1 know index 2 as party2's certificate: they refuse its streams and
 * will not connect to it; every session fails, fast, before any share is exchanged. */
START_TEST(test_peer_not_in_session)
{
	start_party(3, &(struct party_opts){.index = 2, .cert = "party3", .round_ms = round_ms, .dealer_ms = dealer_ms});
	struct layout l;
	default_layout(&l);
	l.slots[2] = 3;
	char fp2[65];
	fingerprint_hex("party2", fp2);
	l.fp[2] = fp2; /* the session says index 2 is party2's certificate */
	l.dealer_fp[2] = fp_of[3];
	char sid[33];
	fresh_id(sid);
	open_session(sid, &l, 0);
	int64_t waited = wait_settled(sid, l.slots, NP, round_ms + 10000);
	for (int k = 0; k < NP; k++)
		expect_state(l.slots[k], sid, "failed");
	char st[32], detail[400];
	for (int s = 0; s < SLOTS; s++) {
		if (s == 2)
			continue;
		session_state(s, sid, st, sizeof st, detail, sizeof detail);
		printf("party: a peer with another party's certificate: slot %d failed (%lld ms): %s\n", s,
		       (long long)waited, detail);
		ck_assert_msg(strstr(detail, "weights:"), "slot %d failed before the transport: %s", s, detail);
	}
	/* The parties would not connect to it (its certificate is not the pinned one) nor
	 * let it in (its streams carry the wrong certificate for index 2: refused, or,
	 * when they came before the party joined, the session is aborted on joining);
	 * whichever came first ended the session. */
	static const char *const marks[] = {"not the one pinned for this party", "mnet.impostor",
					    "unexpected certificate"};
	int seen = 0;
	for (int k = 0; k < 2; k++)
		for (int m = 0; m < 3; m++)
			if (tu_file_contains(party[k].log, marks[m], 0)) {
				printf("party: index %d logged \"%s\"\n", k, marks[m]);
				seen++;
			}
	ck_assert_msg(seen > 0, "no refusal of the impostor in the parties' logs");
	close_session(&l, sid, 0);
}
END_TEST

/* A peer with the wrong role: the session names the dealer (a valid certificate of the
 * CA, role dealer) as index 2. Parties 0 and 1 pin its certificate and still refuse it
 * inside the TLS handshake for its role. The control API and the round route refuse
 * other roles too. */
START_TEST(test_peer_wrong_role)
{
	struct layout l;
	default_layout(&l);
	l.url[2] = dealer.url;
	l.stream_url[2] = dealer.url;
	l.fp[2] = dealer_fp_hex;
	char sid[33];
	fresh_id(sid);
	open_session(sid, &l, 1u << 2);
	const int two[] = {0, 1};
	wait_settled(sid, two, 2, round_ms + 10000);
	for (int k = 0; k < 2; k++)
		expect_state(k, sid, "failed");
	/* whoever met the dealer's certificate first says why; the other may only have
	 * heard of the abort */
	char st[32], d0[400], d1[400];
	session_state(0, sid, st, sizeof st, d0, sizeof d0);
	session_state(1, sid, st, sizeof st, d1, sizeof d1);
	ck_assert_msg(strstr(d0, "party role") || strstr(d1, "party role"), "%s | %s", d0, d1);
	ck_assert(tu_file_contains(party[0].log, "does not carry the party role", 5000) ||
		  tu_file_contains(party[1].log, "does not carry the party role", 5000));
	close_session(&l, sid, 1u << 2);

	/* other roles at the party's own doors */
	const char *json = "{}";
	ck_assert_int_eq(call("party1", party[0].url, IDENT_ROLE_PARTY, "POST", "/v1/sessions", "application/json", json,
			      2, NULL),
			 403);
	ck_assert_int_eq(call("client", party[0].url, IDENT_ROLE_PARTY, "GET", "/v1/sessions", NULL, NULL, 0, NULL),
			 403);
	uint8_t hdr[MNET_HDR_LEN];
	struct mnet_hdr h = {.version = MNET_VERSION, .sender = 1, .receiver = 0};
	mnet_hdr_encode(&h, hdr);
	ck_assert_int_eq(call("gateway", party[0].url, IDENT_ROLE_PARTY, "POST", MNET_ROUTE,
			      "application/octet-stream", hdr, sizeof hdr, NULL),
			 403);
}
END_TEST

/* Replays: during a generation, a payload claiming to be party 1's round 0 comes to
 * party 0 again. Under party 2's certificate it is an impostor's: refused (403) and
 * the generation goes on. Under party 1's own certificate it is a replay: refused
 * (409) and the generation ends at every party with an error. */
struct replay_arg {
	const char *session;
	long impostor_status, replay_status;
	int tokens_when_impostor;
};

static long post_round(const char *cert, const char *session, uint64_t round)
{
	uint8_t buf[MNET_HDR_LEN + 8] = {0};
	struct mnet_hdr h = {.version = MNET_VERSION, .generation = 1, .round = round, .sender = 1, .receiver = 0,
			     .length = 8};
	size_t got;
	sodium_hex2bin(h.session, sizeof h.session, session, 32, NULL, &got, NULL);
	mnet_hdr_encode(&h, buf);
	return call(cert, party[0].url, IDENT_ROLE_PARTY, "POST", MNET_ROUTE, "application/octet-stream", buf,
		    sizeof buf, NULL);
}

static void impostor_then_replay(void *arg)
{
	struct replay_arg *a = arg;
	if (!a->impostor_status) {
		a->impostor_status = post_round("party2", a->session, 0);
		return;
	}
	a->replay_status = post_round("party1", a->session, 0);
}

START_TEST(test_replayed_payload)
{
	const struct tu_ref_case *rc = once_upon();
	struct layout l;
	default_layout(&l);
	char sid[33];
	fresh_id(sid);
	open_session(sid, &l, 0);
	wait_settled(sid, l.slots, NP, 180000);
	/* first the impostor, after the first token */
	struct replay_arg ra = {.session = sid};
	struct gen_opts o = {.l = &l, .session = sid, .prompt = rc->pids, .np = rc->np, .max_tokens = 3,
			     .fault_after = 1, .fault = impostor_then_replay, .fault_arg = &ra, .limit_ms = 300000};
	struct gen_out out;
	generate(&o, &out);
	ck_assert_int_eq(ra.impostor_status, 403);
	ck_assert_int_eq(out.done, NP); /* undisturbed */
	ck_assert_uint_eq(out.ntok, 3);
	/* then the replay, in the next generation */
	o.max_tokens = 8;
	generate(&o, &out);
	ck_assert_int_eq(ra.replay_status, 409);
	ck_assert_int_lt(out.ntok, 8);
	ck_assert_int_eq(out.errors, NP);
	for (int k = 0; k < NP; k++) {
		printf("party: replayed payload: index %d: %s\n", k, out.error_detail[k]);
		expect_state(k, sid, "failed");
	}
	ck_assert(tu_file_contains(party[0].log, "replayed or reordered", 5000));
	ck_assert(!out.client_failed); /* nothing wrong ever reached the client */
	for (size_t i = 0; i < out.ntok; i++)
		ck_assert_int_eq(out.tok[i], rc->gids[i]);
	close_session(&l, sid, 0);
}
END_TEST

/* A relay that alters the INPUT on its way to one party: that party's tag check
 * refuses it, its abort ends the generation at the others before any output exists,
 * and the session is over. */
START_TEST(test_altered_input)
{
	const struct tu_ref_case *rc = once_upon();
	struct layout l;
	default_layout(&l);
	char sid[33];
	fresh_id(sid);
	open_session(sid, &l, 0);
	wait_settled(sid, l.slots, NP, 180000);
	struct gen_opts o = {.l = &l, .session = sid, .prompt = rc->pids, .np = rc->np, .max_tokens = 4,
			     .tamper = 2, .limit_ms = 300000};
	struct gen_out out;
	generate(&o, &out);
	ck_assert_uint_eq(out.ntok, 0);
	ck_assert_int_eq(out.errors, NP);
	for (int k = 0; k < NP; k++) {
		ck_assert_int_eq(out.tokens_seen[k], 0);
		expect_state(k, sid, "failed");
	}
	printf("party: INPUT altered for index 1: %s\n", out.error_detail[1]);
	ck_assert_msg(strstr(out.error_detail[1], "the client's INPUT was refused"), "%s", out.error_detail[1]);
	ck_assert_str_eq(out.error_type[1], "urn:mimir:problem:protocol-violation");
	close_session(&l, sid, 0);
}
END_TEST

/* The control API refuses bad input with a problem naming the field, before any
 * session or generation exists. */
static void expect_problem(int slot, const char *method, const char *path, const char *body, long status,
			   const char *field)
{
	json_t *doc = NULL;
	long st = pcall(slot, method, path, body, &doc);
	ck_assert_msg(st == status, "%s %s: %ld, expected %ld (%s)", method, path, st, status, jstr(doc, "detail"));
	if (field)
		ck_assert_msg(!strcmp(jstr(doc, "field"), field), "%s %s: field %s, expected %s", method, path,
			      jstr(doc, "field"), field);
	json_decref(doc);
}

START_TEST(test_api_refusals)
{
	struct layout l;
	default_layout(&l);
	char sid[33], body[4096];
	fresh_id(sid);
	session_body(body, sizeof body, sid, 1, &l);
	/* the share file decides index, nparties and frac_bits */
	expect_problem(0, "POST", "/v1/sessions", body, 409, "index");
	char missing[96];
	snprintf(missing, sizeof missing, "{\"id\": \"%s\", \"nparties\": 3}", sid);
	expect_problem(0, "POST", "/v1/sessions", missing, 400, "index");
	session_body(body, sizeof body, "ABCDEF0123456789abcdef0123456789", 0, &l);
	expect_problem(0, "POST", "/v1/sessions", body, 400, "id");
	session_body(body, sizeof body, sid, 0, &l);
	char *p = strstr(body, "\"index\": 2");
	ck_assert_ptr_nonnull(p);
	p[9] = '1'; /* index 1 listed twice, 2 missing */
	expect_problem(0, "POST", "/v1/sessions", body, 400, "peers[2].index");
	session_body(body, sizeof body, sid, 0, &l);
	p = strstr(body, fp_of[0]);
	ck_assert_ptr_nonnull(p);
	p[0] = p[0] == 'a' ? 'b' : 'a'; /* its own entry with another certificate */
	expect_problem(0, "POST", "/v1/sessions", body, 409, "peers[0].fingerprint");
	expect_problem(0, "GET", "/v1/sessions/0123456789abcdef0123456789abcdef", NULL, 404, "id");
	expect_problem(0, "POST", "/v1/sessions/0123456789abcdef0123456789abcdef/generations", "{}", 404, "id");
	/* a session that fails to initialise (no dealer session) refuses generations */
	session_body(body, sizeof body, sid, 0, &l);
	ck_assert_int_eq(pcall(0, "POST", "/v1/sessions", body, NULL), 202);
	expect_problem(0, "POST", "/v1/sessions", body, 409, "id");
	const int zero[] = {0};
	wait_settled(sid, zero, 1, dealer_ms + round_ms + 5000);
	expect_state(0, sid, "failed");
	char path[160], gbody[512], gid[33];
	fresh_id(gid);
	snprintf(path, sizeof path, "/v1/sessions/%s/generations", sid);
	snprintf(gbody, sizeof gbody,
		 "{\"id\": \"%s\", \"client_key\": \"%064d\", \"slots\": 5, \"max_tokens\": 4}", gid, 0);
	expect_problem(0, "POST", path, gbody, 400, "client_key"); /* the zero key has low order */
	snprintf(gbody, sizeof gbody,
		 "{\"id\": \"%s\", \"client_key\": \"%s\", \"slots\": 5, \"max_tokens\": 4, \"sampling\": "
		 "{\"temperature\": 0.8, \"top_p\": 0.9}}",
		 gid, fp_of[1]);
	expect_problem(0, "POST", path, gbody, 400, "sampling.top_p");
	snprintf(gbody, sizeof gbody, "{\"id\": \"%s\", \"client_key\": \"%s\", \"slots\": 5, \"max_tokens\": 4}",
		 gid, fp_of[1]);
	expect_problem(0, "POST", path, gbody, 409, NULL); /* the session failed */
	snprintf(path, sizeof path, "/v1/sessions/%s", sid);
	ck_assert_int_eq(pcall(0, "DELETE", path, NULL, NULL), 204);
	expect_problem(0, "GET", path, NULL, 404, "id");
}
END_TEST

/* Limits: a party refuses a session past limits.max_sessions (503), and closes and
 * wipes a session idle past limits.idle_expiry_s, which frees its place. */
START_TEST(test_limits_and_expiry)
{
	for (int i = 0; i < NP; i++) {
		stop_party(i);
		start_party(i, &(struct party_opts){.index = i, .round_ms = round_ms, .dealer_ms = dealer_ms,
						    .idle_expiry_s = 3, .max_sessions = 1});
	}
	struct layout l;
	default_layout(&l);
	char a[33], b[33], body[4096];
	fresh_id(a);
	fresh_id(b);
	open_session(a, &l, 0);
	wait_settled(a, l.slots, NP, 60000);
	for (int k = 0; k < NP; k++)
		expect_state(k, a, "ready");
	session_body(body, sizeof body, b, 0, &l);
	json_t *doc = NULL;
	ck_assert_int_eq(pcall(0, "POST", "/v1/sessions", body, &doc), 503);
	ck_assert_msg(strstr(jstr(doc, "detail"), "limits.max_sessions"), "%s", jstr(doc, "detail"));
	json_decref(doc);
	/* nobody touches session a: within the expiry and a sweep it is gone everywhere */
	for (int k = 0; k < NP; k++) {
		ck_assert(tu_file_contains(party[k].log, "party.session_expired", 10000));
		ck_assert(tu_file_contains(party[k].log, "party.session_released", 10000));
		char st[32];
		session_state(k, a, st, sizeof st, NULL, 0);
		ck_assert_str_eq(st, "absent");
	}
	ck_assert_int_eq(pcall(0, "POST", "/v1/sessions", body, NULL), 202);
	char path[96];
	snprintf(path, sizeof path, "/v1/sessions/%s", b);
	ck_assert_int_eq(pcall(0, "DELETE", path, NULL, NULL), 204);
}
END_TEST

/* mimir-cluster: up makes a PKI, keys and shares, starts a dealer and the parties and
 * describes them; every one answers /readyz with the certificate cluster.json names;
 * down stops them all. */
START_TEST(test_cluster_up_down)
{
	char dir[320], bin[512];
	snprintf(dir, sizeof dir, "%s/cluster", tmp);
	tu_build(bin, sizeof bin, "bin/mimir-cluster");
	ck_assert_int_eq(tu_system("%s up --dir %s --parties 2 >%s/cluster.out 2>&1", bin, dir, tmp), 0);
	char path[400];
	snprintf(path, sizeof path, "%s/cluster.json", dir);
	json_error_t e;
	json_t *doc = json_load_file(path, 0, &e);
	ck_assert_msg(doc, "%s: %s", path, e.text);
	json_t *ps = json_object_get(doc, "parties");
	ck_assert_uint_eq(json_array_size(ps), 2);
	pid_t pids[3];
	pids[0] = (pid_t)json_integer_value(json_object_get(json_object_get(doc, "dealer"), "pid"));
	for (size_t i = 0; i < 2; i++) {
		json_t *p = json_array_get(ps, i);
		pids[i + 1] = (pid_t)json_integer_value(json_object_get(p, "pid"));
		char crt[400], fp[65], cdir[400];
		snprintf(crt, sizeof crt, "%s/pki/party%zu.crt", dir, i);
		uint8_t b[32];
		ck_assert_int_eq(mnet_cert_fingerprint(crt, b), 0);
		sodium_bin2hex(fp, sizeof fp, b, sizeof b);
		ck_assert_str_eq(jstr(p, "fingerprint"), fp);
		ck_assert_int_eq(strncmp(jstr(p, "stream_url"), "https://localhost:", 18), 0);
		/* the published sealing key is the one the share file is sealed to */
		char pub[400], err[200];
		uint8_t want[32], got[32];
		size_t gl = 0;
		snprintf(pub, sizeof pub, "%s/keys/party%zu.x25519.pub", dir, i);
		ck_assert_int_eq(mshare_key_read(pub, false, want, err, sizeof err), 0);
		ck_assert_int_eq(sodium_hex2bin(got, 32, jstr(p, "sealing_key"), 64, NULL, &gl, NULL), 0);
		ck_assert_mem_eq(got, want, 32);
		/* reachable with the cluster's own admin certificate */
		snprintf(cdir, sizeof cdir, "%s/pki", dir);
		struct httpc *c = tu_client(cdir, "admin", jstr(p, "url"), IDENT_ROLE_PARTY);
		struct httpc_resp r;
		ck_assert_int_eq(httpc_request(c, "GET", "/readyz", NULL, NULL, NULL, 0, &r), 0);
		ck_assert_int_eq(r.status, 200);
		httpc_resp_free(&r);
		httpc_free(c);
	}
	json_decref(doc);
	ck_assert_int_eq(tu_system("%s status --dir %s >>%s/cluster.out 2>&1", bin, dir, tmp), 0);
	/* a second up refuses while the first runs */
	ck_assert_int_eq(tu_system("%s up --dir %s >>%s/cluster.out 2>&1", bin, dir, tmp), 1);
	ck_assert_int_eq(tu_system("%s down --dir %s >>%s/cluster.out 2>&1", bin, dir, tmp), 0);
	for (int i = 0; i < 3; i++)
		ck_assert_msg(kill(pids[i], 0) != 0, "pid %d still runs after down", (int)pids[i]);
	ck_assert_int_eq(tu_system("%s status --dir %s >>%s/cluster.out 2>&1", bin, dir, tmp), 1);
	char log[400];
	snprintf(log, sizeof log, "%s/party0.log", dir);
	ck_assert(tu_file_contains(log, "svc.signal", 0));
	assert_clean_log(log);
}
END_TEST

/* mimir-cluster --attest: the dealer and the parties hold certificates the attest
 * service issued on (simulated) evidence, not the dev PKI's; cluster.json pins them
 * and carries each party's platform; every service answers over the trust bundle of
 * the dev CA and the attestation CA, and refuses a client that trusts the dev CA alone
 * for its server certificate. */
START_TEST(test_cluster_attested)
{
	char dir[320], bin[512], json[4096], cwd[256], policy[400], aca[400];
	snprintf(dir, sizeof dir, "%s/acluster", tmp);
	snprintf(aca, sizeof aca, "%s/aca", tmp);
	snprintf(policy, sizeof policy, "%s/attest-policy.json", tmp);
	ck_assert_int_eq(tu_pki(tmp, "dev --out %s/pki", dir), 0);
	ck_assert_int_eq(tu_pki(tmp, "ca --out %s --cn 'Mimir Attestation CA'", aca), 0);
	static const char pol[] = "{\"version\": 1, \"roles\": {\"party\": {\"simulated\": {}}, \"dealer\": {\"simulated\": {}}}}";
	ck_assert_int_eq(tu_write_file(policy, pol, sizeof pol - 1), 0);
	ck_assert_ptr_nonnull(getcwd(cwd, sizeof cwd));
	snprintf(json, sizeof json,
		 "{\"http\": {\"port\": 0, \"drain_timeout_ms\": 3000},"
		 " \"tls\": {\"cert\": \"%s/pki/attest.crt\", \"key\": \"%s/pki/attest.key\", \"ca\": \"%s/pki/ca.crt\"},"
		 " \"ca\": {\"cert\": \"%s/ca.crt\", \"key\": \"%s/ca.key\"}, \"policy\": {\"file\": \"%s\"},"
		 " \"roots\": {\"dir\": \"%s/attest/roots\"}, \"revocations\": {\"file\": \"%s/attest.revoked\"}}",
		 dir, dir, dir, aca, aca, policy, cwd, tmp);
	struct tu_svc at;
	ck_assert_msg(tu_svc_start(&at, tmp, "mimir-attest", "attest", json, NULL) == 0, "attest: see %s", at.log);
	tu_build(bin, sizeof bin, "bin/mimir-cluster");
	ck_assert_int_eq(tu_system("%s up --dir %s --parties 2 --attest %s >%s/acluster.out 2>&1", bin, dir, at.url, tmp),
			 0);
	ck_assert(tu_file_contains(at.log, "attest.simulated_accepted", 0));
	char path[400], trust[400];
	snprintf(path, sizeof path, "%s/cluster.json", dir);
	snprintf(trust, sizeof trust, "%s/trust.pem", dir);
	json_error_t e;
	json_t *doc = json_load_file(path, 0, &e);
	ck_assert_msg(doc, "%s: %s", path, e.text);
	ck_assert_str_eq(jstr(json_object_get(doc, "admin"), "ca"), trust);
	json_t *ps = json_object_get(doc, "parties");
	ck_assert_uint_eq(json_array_size(ps), 2);
	for (size_t i = 0; i < 2; i++) {
		json_t *p = json_array_get(ps, i);
		char crt[400], fp[65];
		uint8_t b[32];
		snprintf(crt, sizeof crt, "%s/attested/party%zu.crt", dir, i);
		ck_assert_int_eq(mnet_cert_fingerprint(crt, b), 0);
		sodium_bin2hex(fp, sizeof fp, b, sizeof b);
		ck_assert_str_eq(jstr(p, "fingerprint"), fp);
		ck_assert_str_eq(jstr(json_object_get(p, "attestation"), "platform"), "simulated");
		/* over the bundle with the admin certificate; not with the dev CA alone */
		struct httpc_opts ho = {.base_url = jstr(p, "url"), .ca_file = trust, .expect_role = IDENT_ROLE_PARTY,
					.timeout_ms = 5000};
		char acrt[400], akey[400], devca[400];
		snprintf(acrt, sizeof acrt, "%s/pki/admin.crt", dir);
		snprintf(akey, sizeof akey, "%s/pki/admin.key", dir);
		snprintf(devca, sizeof devca, "%s/pki/ca.crt", dir);
		ho.cert_file = acrt, ho.key_file = akey;
		struct httpc *c = NULL;
		struct httpc_resp r;
		ck_assert_int_eq(httpc_new(&c, &ho), 0);
		ck_assert_int_eq(httpc_request(c, "GET", "/readyz", NULL, NULL, NULL, 0, &r), 0);
		ck_assert_int_eq(r.status, 200);
		httpc_resp_free(&r);
		httpc_free(c);
		ho.ca_file = devca;
		ck_assert_int_eq(httpc_new(&c, &ho), 0);
		ck_assert_int_eq(httpc_request(c, "GET", "/readyz", NULL, NULL, NULL, 0, &r), ERR_TLS);
		httpc_resp_free(&r);
		httpc_free(c);
	}
	json_decref(doc);
	ck_assert_int_eq(tu_system("%s down --dir %s >>%s/acluster.out 2>&1", bin, dir, tmp), 0);
	tu_svc_stop(&at);
}
END_TEST

/* ---- each party in its own network namespace ---- */

/* Three namespaces mimir<pid>n<i>, each joined to this one by a veth pair: 10.77.i.1
 * here, 10.77.i.2 there, routed through this namespace (ip_forward), so party i
 * reaches party j at 10.77.j.2 and the dealer (here, on every address) at 10.77.0.1.
 * Needs CAP_NET_ADMIN; without it the test says so and passes nothing off as tested. */
static char ns_name[NP][32];
static bool ns_ok;
static char ns_forward_was[8];

/* Names from the suite's temporary directory (set before the fork), so that the
 * parent's teardown can remove what a failed child left. */
static const char *ns_tag(void)
{
	size_t n = strlen(tmp);
	return n >= 6 ? tmp + n - 6 : "mimir0";
}

static void netns_down(void)
{
	for (int i = 0; i < NP; i++) {
		tu_system("ip netns del mimir%sn%d >/dev/null 2>&1", ns_tag(), i);
		tu_system("ip link del mv%sh%d >/dev/null 2>&1", ns_tag(), i);
	}
	if (ns_forward_was[0])
		(void)tu_write_file("/proc/sys/net/ipv4/ip_forward", ns_forward_was, 1);
}

/* The ip binary by absolute path (tu_proc_start does not search PATH). */
static const char *ip_bin(void)
{
	static const char *const c[] = {"/usr/sbin/ip", "/sbin/ip", "/usr/bin/ip", "/bin/ip"};
	for (size_t i = 0; i < sizeof c / sizeof c[0]; i++)
		if (access(c[i], X_OK) == 0)
			return c[i];
	return "/sbin/ip";
}

static bool netns_up(char *why, size_t cap)
{
	if (geteuid() != 0) {
		snprintf(why, cap, "not root: network namespaces need CAP_NET_ADMIN");
		return false;
	}
	size_t len = 0;
	char *fw = tu_read_file("/proc/sys/net/ipv4/ip_forward", &len);
	if (fw) {
		snprintf(ns_forward_was, sizeof ns_forward_was, "%c", fw[0]);
		free(fw);
	}
	for (int i = 0; i < NP; i++) {
		snprintf(ns_name[i], sizeof ns_name[i], "mimir%sn%d", ns_tag(), i);
		int st = tu_system(
		    "set -e; ip netns add %1$s; ip link add mv%2$sh%3$d type veth peer name mv%2$sp%3$d;"
		    " ip link set mv%2$sp%3$d netns %1$s; ip addr add 10.77.%3$d.1/24 dev mv%2$sh%3$d;"
		    " ip link set mv%2$sh%3$d up; ip netns exec %1$s ip link set lo up;"
		    " ip netns exec %1$s ip addr add 10.77.%3$d.2/24 dev mv%2$sp%3$d;"
		    " ip netns exec %1$s ip link set mv%2$sp%3$d up;"
		    " ip netns exec %1$s ip route add default via 10.77.%3$d.1",
		    ns_name[i], ns_tag(), i);
		if (st != 0) {
			snprintf(why, cap, "ip netns / veth set-up failed (exit %d): no privileges for it here?", st);
			return false;
		}
	}
	if (tu_write_file("/proc/sys/net/ipv4/ip_forward", "1", 1) != 0) {
		snprintf(why, cap, "cannot enable net.ipv4.ip_forward");
		return false;
	}
	return true;
}

static void netns_setup(void)
{
	setvbuf(stdout, NULL, _IOLBF, 0);
	char why[200] = "";
	ns_ok = netns_up(why, sizeof why);
	if (!ns_ok) {
		printf("netns: SKIPPED, each party in its own network namespace was not tested: %s\n", why);
		netns_down();
		return;
	}
	if (tu_quick())
		round_ms = 30000, dealer_ms = 15000;
	dealer_bind = "0.0.0.0";
	start_dealer();
	const char *port = strrchr(dealer.url, ':');
	snprintf(dealer_url_for_parties, sizeof dealer_url_for_parties, "https://10.77.0.1%s", port ? port : "");
	for (int i = 0; i < NP; i++) {
		char *wrap[] = {(char *)ip_bin(), "netns", "exec", ns_name[i], NULL};
		char bind[32];
		snprintf(bind, sizeof bind, "10.77.%d.2", i);
		start_party(i, &(struct party_opts){.index = i, .round_ms = round_ms, .dealer_ms = dealer_ms,
						     .bind = bind, .wrap = wrap});
	}
}

static void netns_teardown(void)
{
	if (ns_ok)
		teardown();
	dealer_bind = "127.0.0.1";
	dealer_url_for_parties[0] = '\0';
	netns_down();
}

/* In the parent: whatever a child left (a failed start skips the checked teardown). */
static void netns_teardown_once(void)
{
	if (geteuid() == 0)
		netns_down();
	teardown_once();
}

START_TEST(test_generate_in_namespaces)
{
	if (!ns_ok)
		return; /* said why in the fixture */
	const struct tu_ref_case *rc = once_upon();
	const int ntok = tu_quick() ? 8 : 32;
	struct layout l;
	default_layout(&l);
	char su[NP][96];
	for (int k = 0; k < NP; k++) {
		snprintf(su[k], sizeof su[k], "https://10.77.%d.2:%d", k, stream_port[k]);
		l.stream_url[k] = su[k];
	}
	char sid[33];
	fresh_id(sid);
	open_session(sid, &l, 0);
	int64_t init_ms = wait_settled(sid, l.slots, NP, 180000);
	for (int k = 0; k < NP; k++)
		expect_state(k, sid, "ready");
	struct gen_opts o = {.l = &l, .session = sid, .prompt = rc->pids, .np = rc->np, .max_tokens = ntok,
			     .limit_ms = 900000};
	struct gen_out out;
	generate(&o, &out);
	int64_t t1 = now_ms();
	ck_assert_msg(out.errors == 0, "a party ended with an error: %s%s%s", out.error_detail[0],
		      out.error_detail[1], out.error_detail[2]);
	ck_assert_uint_eq(out.ntok, (size_t)ntok);
	for (int i = 0; i < ntok; i++)
		ck_assert_msg(out.tok[i] == (uint64_t)rc->gids[i], "token %d: got %llu, expected %d", i,
			      (unsigned long long)out.tok[i], rc->gids[i]);
	printf("netns: each party in its own namespace (10.77.{0,1,2}.2, routed): %d tokens of \"%s\" equal the "
	       "reference; session ready in %lld ms, %.2f s per later token\n",
	       ntok, rc->prompt, (long long)init_ms,
	       ntok > 1 ? (double)(t1 - out.first_token_ms) / 1e3 / (ntok - 1) : 0.0);
	close_session(&l, sid, 0);
}
END_TEST

Suite *suite(void)
{
	Suite *s = suite_create("party");
	TCase *main_ = tcase_create("generate");
	tcase_add_unchecked_fixture(main_, setup_once, teardown_once);
	tcase_add_checked_fixture(main_, setup, teardown);
	tcase_set_timeout(main_, 1500);
	tcase_add_test(main_, test_generate_32_greedy);
	suite_add_tcase(s, main_);
	TCase *peers = tcase_create("peers");
	tcase_add_unchecked_fixture(peers, setup_once, teardown_once);
	tcase_add_checked_fixture(peers, setup, teardown);
	tcase_set_timeout(peers, 300);
	tcase_add_test(peers, test_api_refusals);
	tcase_add_test(peers, test_peer_wrong_role);
	tcase_add_test(peers, test_peer_not_in_session);
	tcase_add_test(peers, test_limits_and_expiry);
	suite_add_tcase(s, peers);
	TCase *ns = tcase_create("netns");
	tcase_add_unchecked_fixture(ns, setup_once, netns_teardown_once);
	tcase_add_checked_fixture(ns, netns_setup, netns_teardown);
	tcase_set_timeout(ns, 900);
	tcase_add_test(ns, test_generate_in_namespaces);
	suite_add_tcase(s, ns);
	TCase *cluster = tcase_create("cluster");
	tcase_add_unchecked_fixture(cluster, setup_once, teardown_once);
	tcase_set_timeout(cluster, 120);
	tcase_add_test(cluster, test_cluster_up_down);
	tcase_add_test(cluster, test_cluster_attested);
	suite_add_tcase(s, cluster);
	/* one case per fault, so that each can be run alone (CK_RUN_CASE=kill) */
	const struct {
		const char *name;
		const TTest *test;
	} faults[] = {
		{"cancel", test_cancel_keeps_session},
		{"kill", test_party_killed_mid_generation},
		{"dealer", test_dealer_stopped},
		{"replay", test_replayed_payload},
		{"tamper", test_altered_input},
	};
	for (size_t i = 0; i < sizeof faults / sizeof faults[0]; i++) {
		TCase *tc = tcase_create(faults[i].name);
		tcase_add_unchecked_fixture(tc, setup_once, teardown_once);
		tcase_add_checked_fixture(tc, setup, teardown);
		tcase_set_timeout(tc, 900);
		tcase_add_test(tc, faults[i].test);
		suite_add_tcase(s, tc);
	}
	return s;
}
