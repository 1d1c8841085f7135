/* Integration: the real mimir-dealer binary over mutual TLS with a dev PKI from the
 * real mimir-pki, and its client common/prepnet. Three parties in threads run an MPC
 * program (inputs, products, truncations, comparisons, a fixed-mask matrix product)
 * on the in-process transport with their preprocessing fetched from the dealer
 * service; the results and the engine's counters equal those of the same program on
 * the in-process dealer. Proves the access rules (a party gets only its own seed,
 * once, and its own payloads; unknown sessions 404; other roles 403; malformed input
 * 400 naming the field; out-of-order and disagreeing batches 409), the pools (served
 * ahead of use, bounded in memory, wiped on delete and expiry), sacrifice failures
 * reported and counted, a dealer killed or frozen mid-run ending every party with a
 * clear error within the bound and without spinning, and /metrics passing promtool. */
#define _GNU_SOURCE
#include <pthread.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include <jansson.h>
#include <openssl/pem.h>
#include <openssl/x509.h>
#include <sodium.h>

#include "err/err.h"
#include "httpc/httpc.h"
#include "mpc/mpc.h"
#include "prepnet/prepnet.h"
#include "testutil.h"

#define NP 3
#define NV 300
#define MR 8 /* matrix rows */
#define MC 5 /* matrix columns */
#define MM (NV / MR)
#define BATCH 256
#define F RING_FXP_DEFAULT_F

static char tmp[256], pki[300], bin_dealer[512], bin_pki[512], url[64], dlog[320];
static struct tu_proc dealer;
static uint8_t dealer_fp[32];
static char fp_hex[NP][65];

static int64_t now_ms(void)
{
	struct timespec ts;
	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

static void path_of(char *buf, size_t cap, const char *name, const char *ext)
{
	snprintf(buf, cap, "%s/%s.%s", pki, name, ext);
}

/* SHA-256 of the DER certificate in a PEM file: what the dealer registers per party. */
static int cert_fingerprint(const char *pem, uint8_t out[32])
{
	FILE *f = fopen(pem, "r");
	X509 *x = f ? PEM_read_X509(f, NULL, NULL, NULL) : NULL;
	unsigned char *der = NULL;
	int len = x ? i2d_X509(x, &der) : -1;
	if (f)
		fclose(f);
	X509_free(x);
	if (len <= 0)
		return -1;
	crypto_hash_sha256(out, der, (unsigned long long)len);
	OPENSSL_free(der);
	return 0;
}

/* Starts a dealer with the common settings plus extra (JSON members, may be ""). */
static int start_dealer(struct tu_proc *p, const char *name, const char *extra, char *u, size_t ucap,
			char *logp, size_t lcap)
{
	char cfg[400], portf[400], json[2048];
	snprintf(cfg, sizeof cfg, "%s/%s.json", tmp, name);
	snprintf(portf, sizeof portf, "%s/%s.port", tmp, name);
	snprintf(logp, lcap, "%s/%s.log", tmp, name);
	unlink(portf);
	snprintf(json, sizeof json,
		 "{\"http\": {\"port\": 0, \"threads\": 8, \"drain_timeout_ms\": 3000},"
		 " \"tls\": {\"cert\": \"%s/dealer.crt\", \"key\": \"%s/dealer.key\", \"ca\": \"%s/ca.crt\"}%s%s}",
		 pki, pki, pki, extra[0] ? ", " : "", extra);
	if (tu_write_file(cfg, json, strlen(json)) != 0)
		return -1;
	char *argv[] = {bin_dealer, "--config", cfg, "--port-file", portf, NULL};
	if (tu_proc_start(p, argv, logp) != 0 || tu_wait_file(portf, 5000) != 0)
		return -1;
	char *port = tu_read_file(portf, NULL);
	if (!port)
		return -1;
	snprintf(u, ucap, "https://localhost:%ld", strtol(port, NULL, 10));
	free(port);
	return 0;
}

static void setup(void)
{
	tu_tmpdir(tmp, sizeof tmp);
	snprintf(pki, sizeof pki, "%s/pki", tmp);
	tu_build(bin_dealer, sizeof bin_dealer, "bin/mimir-dealer");
	tu_build(bin_pki, sizeof bin_pki, "bin/mimir-pki");
	ck_assert_int_eq(tu_system("%s dev --parties %d --out %s >/dev/null", bin_pki, NP, pki), 0);
	char crt[400];
	path_of(crt, sizeof crt, "dealer", "crt");
	ck_assert_int_eq(cert_fingerprint(crt, dealer_fp), 0);
	for (int i = 0; i < NP; i++) {
		char name[24];
		uint8_t fp[32];
		snprintf(name, sizeof name, "party%d", i);
		path_of(crt, sizeof crt, name, "crt");
		ck_assert_int_eq(cert_fingerprint(crt, fp), 0);
		sodium_bin2hex(fp_hex[i], sizeof fp_hex[i], fp, sizeof fp);
	}
	ck_assert_int_eq(start_dealer(&dealer, "dealer",
				      "\"triple_pool\": {\"min_size\": 1024, \"max_size\": 4096},"
				      " \"pool\": {\"workers\": 2, \"max_bytes\": 67108864, \"max_pool_bytes\": 16777216},"
				      " \"testing\": {\"fault_injection\": true}",
				      url, sizeof url, dlog, sizeof dlog),
			 0);
}

static void teardown(void)
{
	int st = tu_proc_stop(&dealer, SIGTERM, 10000);
	ck_assert_msg(st >= 0 && WIFEXITED(st) && WEXITSTATUS(st) == 0, "dealer did not exit 0 on SIGTERM");
	char *text = tu_read_file(dlog, NULL);
	ck_assert_msg(text && !strstr(text, "Sanitizer") && !strstr(text, "runtime error"),
		      "sanitizer report in the dealer's log");
	free(text);
	tu_rmrf(tmp);
}

/* ---- HTTP helpers ---- */

static struct httpc *as(const char *name, const char *u)
{
	char ca[400], crt[400], key[400];
	path_of(ca, sizeof ca, "ca", "crt");
	path_of(crt, sizeof crt, name, "crt");
	path_of(key, sizeof key, name, "key");
	struct httpc_opts o = {.base_url = u ? u : url, .ca_file = ca, .cert_file = crt, .key_file = key,
			       .expect_role = IDENT_ROLE_DEALER, .timeout_ms = 20000, .retries = 0};
	struct httpc *c;
	ck_assert_int_eq(httpc_new(&c, &o), 0);
	return c;
}

/* One request as name; returns the status, with the problem's field (or "") in field
 * when given, and the parsed body in *doc when given. */
static long call_as(const char *name, const char *u, const char *method, const char *path, const char *body,
		    char *field, size_t fcap, json_t **doc)
{
	struct httpc *c = as(name, u);
	struct httpc_resp r;
	int rc = httpc_request(c, method, path, NULL, body ? "application/json" : NULL, body, body ? strlen(body) : 0,
			       &r);
	ck_assert_msg(rc == 0, "%s %s: no response (%s)", method, path, r.error);
	json_t *j = json_loadb(r.body, r.len, 0, NULL);
	if (field) {
		const char *f = json_string_value(json_object_get(j, "field"));
		snprintf(field, fcap, "%s", f ? f : "");
	}
	if (doc)
		*doc = j;
	else
		json_decref(j);
	long st = r.status;
	httpc_resp_free(&r);
	httpc_free(c);
	return st;
}

static long status_of(const char *name, const char *method, const char *path, const char *body)
{
	return call_as(name, NULL, method, path, body, NULL, 0, NULL);
}

/* Creates session id on u with the parties' fingerprints; extra adds JSON members. */
static long create_session(const char *u, const char *id, const char *extra)
{
	char body[2048];
	snprintf(body, sizeof body, "{\"id\": \"%s\", \"nparties\": %d, \"fingerprints\": [\"%s\", \"%s\", \"%s\"]%s%s}",
		 id, NP, fp_hex[0], fp_hex[1], fp_hex[2], extra && extra[0] ? ", " : "", extra ? extra : "");
	return call_as("admin", u, "POST", "/v1/sessions", body, NULL, 0, NULL);
}

static json_t *get_session(const char *u, const char *id)
{
	char path[128];
	json_t *doc = NULL;
	snprintf(path, sizeof path, "/v1/sessions/%s", id);
	long st = call_as("admin", u, "GET", path, NULL, NULL, 0, &doc);
	ck_assert_msg(st == 200, "GET %s: %ld", path, st);
	return doc;
}

static json_t *pool_of(json_t *ses, int kind)
{
	json_t *pools = json_object_get(ses, "pools");
	for (size_t i = 0; i < json_array_size(pools); i++)
		if (json_integer_value(json_object_get(json_array_get(pools, i), "kind")) == kind)
			return json_array_get(pools, i);
	return NULL;
}

static double metric_value_of(const char *u, const char *line_prefix)
{
	struct httpc *c = as("admin", u);
	struct httpc_resp r;
	ck_assert_int_eq(httpc_request(c, "GET", "/metrics", NULL, NULL, NULL, 0, &r), 0);
	ck_assert_int_eq(r.status, 200);
	double v = -1;
	for (char *l = r.body; l && *l; l = strchr(l, '\n') ? strchr(l, '\n') + 1 : NULL)
		if (strncmp(l, line_prefix, strlen(line_prefix)) == 0 && l[strlen(line_prefix)] == ' ')
			v = strtod(l + strlen(line_prefix) + 1, NULL);
	httpc_resp_free(&r);
	httpc_free(c);
	return v;
}

static void delete_session(const char *u, const char *id)
{
	char path[128];
	snprintf(path, sizeof path, "/v1/sessions/%s", id);
	ck_assert_int_eq(call_as("admin", u, "DELETE", path, NULL, NULL, 0, NULL), 204);
}

/* ---- the program ---- */

static ring64_t X[NV], Y[NV], W[MR * MC];

static void make_inputs(void)
{
	for (int i = 0; i < NV; i++) {
		X[i] = (ring64_t)(int64_t)(((i * 37) % 301 - 150) * ((int64_t)1 << F) / 40);
		Y[i] = (ring64_t)(int64_t)(((i * 53) % 211 - 100) * ((int64_t)1 << F) / 30);
	}
	for (int i = 0; i < MR * MC; i++)
		W[i] = (ring64_t)(int64_t)(((i * 7) % 23 - 11) * ((int64_t)1 << F) / 8);
}

struct party {
	unsigned id;
	bool loop; /* multiply until the engine fails (the fault tests) */
	struct prepnet *pn;
	struct mpc_prep_source src;
	struct mpc_net *net;
	struct mpc *mpc;
	int rc;
	const char *failed;
	char err[512];
	int64_t done_ms;
	uint64_t iterations;
	ring64_t prod[NV], fx[NV], lt[NV], mm[MM * MC], pm[MM * MC], pm2[MM * MC];
	struct mpc_stats st;
};

static int program(struct party *p)
{
	struct mpc *m = p->mpc;
	mpc_share *x = calloc(NV, sizeof *x), *y = calloc(NV, sizeof *y), *w = calloc(MR * MC, sizeof *w);
	mpc_share *t = calloc(NV, sizeof *t), *mo = calloc(MM * MC, sizeof *mo);
	struct mpc_fmat *fm = NULL;
	int rc;
	if ((rc = mpc_input(m, 0, p->id == 0 ? X : NULL, x, NV)) != 0 ||
	    (rc = mpc_input(m, 1, p->id == 1 ? Y : NULL, y, NV)) != 0 ||
	    (rc = mpc_input(m, 2, p->id == 2 ? W : NULL, w, MR * MC)) != 0)
		goto out;
	if (p->loop) {
		while ((rc = mpc_mul_fx(m, t, x, y, NV)) == 0)
			__atomic_fetch_add(&p->iterations, 1, __ATOMIC_RELAXED);
		goto out;
	}
	if ((rc = mpc_mul(m, t, x, y, NV)) != 0 || (rc = mpc_reveal(m, p->prod, t, NV)) != 0)
		goto out;
	if ((rc = mpc_mul_fx(m, t, x, y, NV)) != 0 || (rc = mpc_reveal(m, p->fx, t, NV)) != 0)
		goto out;
	mpc_sub(m, t, x, y, NV);
	if ((rc = mpc_ltz(m, t, t, NV)) != 0 || (rc = mpc_reveal(m, p->lt, t, NV)) != 0)
		goto out;
	if ((rc = mpc_fmat_new(m, w, MR, MC, &fm)) != 0 || (rc = mpc_fmat_mul(m, fm, mo, x, MM)) != 0 ||
	    (rc = mpc_reveal(m, p->mm, mo, MM * MC)) != 0)
		goto out;
	/* the plain product of two secrets, one triple inline, one from a prefill */
	if ((rc = mpc_matmul(m, mo, x, w, MM, MR, MC)) != 0 || (rc = mpc_reveal(m, p->pm, mo, MM * MC)) != 0)
		goto out;
	if ((rc = mpc_matmul_prefill(m, MM, MR, MC, 2)) != 0 || (rc = mpc_matmul(m, mo, y, w, MM, MR, MC)) != 0 ||
	    (rc = mpc_reveal(m, p->pm2, mo, MM * MC)) != 0)
		goto out;
out:
	mpc_fmat_free(fm);
	free(x), free(y), free(w), free(t), free(mo);
	return rc;
}

static void *party_main(void *arg)
{
	struct party *p = arg;
	p->rc = program(p);
	p->done_ms = now_ms();
	p->failed = mpc_failed_check(p->mpc);
	mpc_get_stats(p->mpc, &p->st);
	/* What a party service does: an integrity failure is reported to the dealer. */
	if (p->rc != 0 && p->pn && p->failed &&
	    (!strcmp(p->failed, "triple-sacrifice") || !strcmp(p->failed, "mac-check")))
		prepnet_report(p->pn, p->failed);
	if (p->pn)
		snprintf(p->err, sizeof p->err, "%s", prepnet_last_error(p->pn));
	return NULL;
}

struct run_opts {
	const char *u;            /* the dealer service, or NULL for the in-process dealer */
	const char *session;
	unsigned prep_timeout_ms; /* prepnet's bound */
	bool loop;
	struct mpc_dealer *local;
};

/* Sets the parties up (seeds fetched before any thread starts). */
static void parties_new(struct party *ps, const struct run_opts *o, struct mpc_hub **hub)
{
	ck_assert_int_eq(mpc_hub_new(NP, 30000, hub), 0);
	for (unsigned i = 0; i < NP; i++) {
		struct party *p = &ps[i];
		uint8_t seed[MPC_SEED_BYTES];
		memset(p, 0, sizeof *p);
		p->id = i;
		p->loop = o->loop;
		if (o->u) {
			char ca[400], crt[400], key[400], name[16];
			snprintf(name, sizeof name, "party%u", i);
			path_of(ca, sizeof ca, "ca", "crt");
			path_of(crt, sizeof crt, name, "crt");
			path_of(key, sizeof key, name, "key");
			struct prepnet_opts po = {.url = o->u, .ca_file = ca, .cert_file = crt, .key_file = key,
						  .dealer_fingerprint = dealer_fp, .session = o->session, .party = i,
						  .timeout_ms = o->prep_timeout_ms};
			ck_assert_int_eq(prepnet_new(&po, &p->pn), 0);
			int rc = prepnet_seed(p->pn, seed);
			ck_assert_msg(rc == 0, "seed of party %u: %s", i, prepnet_last_error(p->pn));
			p->src = prepnet_source(p->pn);
		} else {
			ck_assert_int_eq(mpc_dealer_party_seed(o->local, i, seed), 0);
			p->src = mpc_dealer_source(o->local);
		}
		ck_assert_int_eq(mpc_net_local_new(*hub, i, &p->net), 0);
		struct mpc_config cfg = {.prep_batch = BATCH};
		ck_assert_int_eq(mpc_new(p->net, seed, &p->src, &cfg, &p->mpc), 0);
		sodium_memzero(seed, sizeof seed);
	}
}

static void parties_free(struct party *ps, struct mpc_hub *hub)
{
	for (unsigned i = 0; i < NP; i++) {
		mpc_free(ps[i].mpc);
		mpc_net_free(ps[i].net);
		prepnet_free(ps[i].pn);
		ps[i].mpc = NULL, ps[i].net = NULL, ps[i].pn = NULL;
	}
	mpc_hub_free(hub);
}

static void run(struct party *ps, const struct run_opts *o)
{
	struct mpc_hub *hub;
	pthread_t th[NP];
	parties_new(ps, o, &hub);
	for (unsigned i = 0; i < NP; i++)
		pthread_create(&th[i], NULL, party_main, &ps[i]);
	for (unsigned i = 0; i < NP; i++)
		pthread_join(th[i], NULL);
	parties_free(ps, hub);
}

/* ---- tests ---- */

/* Triples and party 1's input masks (two receivers) declared with their shape, so
 * generated from batch 0; truncation and comparison masks by kind alone, so learned
 * from the first request (the engine sizes those batches itself). */
#define POOLS_JSON                                                                                 \
	"\"pools\": [{\"kind\": 2, \"n\": 256}, {\"kind\": 4, \"param\": 1, \"n\": 256},"          \
	" {\"kind\": 3}, {\"kind\": 7}]"

START_TEST(test_program_matches_inprocess)
{
	static struct party svc[NP], loc[NP];
	make_inputs();
	ck_assert_int_eq(create_session(url, "prog", POOLS_JSON), 201);
	usleep(300000); /* the workers fill the pools ahead of use */
	struct run_opts o = {.u = url, .session = "prog", .prep_timeout_ms = 20000};
	run(svc, &o);
	struct mpc_dealer *d;
	ck_assert_int_eq(mpc_dealer_new(NP, &d), 0);
	struct run_opts lo = {.local = d};
	run(loc, &lo);
	mpc_dealer_free(d);

	uint64_t prep_in = 0;
	for (unsigned i = 0; i < NP; i++) {
		ck_assert_msg(svc[i].rc == 0, "party %u over the dealer service: %s (%s; %s)", i, err_slug(svc[i].rc),
			      svc[i].failed ? svc[i].failed : "-", svc[i].err);
		ck_assert_int_eq(loc[i].rc, 0);
		for (int j = 0; j < NV; j++) {
			ck_assert_uint_eq(svc[i].prod[j], X[j] * Y[j]);
			ck_assert_uint_eq(svc[i].prod[j], loc[i].prod[j]);
			int64_t want = (int64_t)(X[j] * Y[j]) >> F;
			ck_assert_msg(llabs((int64_t)svc[i].fx[j] - want) <= 1, "fx[%d] %lld vs %lld", j,
				      (long long)(int64_t)svc[i].fx[j], (long long)want);
			ck_assert_msg(llabs((int64_t)svc[i].fx[j] - (int64_t)loc[i].fx[j]) <= 1, "fx[%d]", j);
			ck_assert_uint_eq(svc[i].lt[j], (int64_t)(X[j] - Y[j]) < 0);
			ck_assert_uint_eq(svc[i].lt[j], loc[i].lt[j]);
		}
		for (int r = 0; r < MM; r++)
			for (int c = 0; c < MC; c++) {
				ring64_t acc = 0;
				for (int k = 0; k < MR; k++)
					acc += X[r * MR + k] * W[k * MC + c];
				ck_assert_uint_eq(svc[i].mm[r * MC + c], acc);
				ck_assert_uint_eq(svc[i].pm[r * MC + c], acc);
				ring64_t acc2 = 0;
				for (int k = 0; k < MR; k++)
					acc2 += Y[r * MR + k] * W[k * MC + c];
				ck_assert_uint_eq(svc[i].pm2[r * MC + c], acc2);
				ck_assert_uint_eq(loc[i].pm2[r * MC + c], acc2);
				ck_assert_uint_eq(svc[i].mm[r * MC + c], loc[i].mm[r * MC + c]);
			}
		/* The same preprocessing flowed: same rounds, bytes and consumption. */
		ck_assert_uint_eq(svc[i].st.rounds, loc[i].st.rounds);
		ck_assert_uint_eq(svc[i].st.bytes_sent, loc[i].st.bytes_sent);
		ck_assert_uint_eq(svc[i].st.prep_bytes_in, loc[i].st.prep_bytes_in);
		ck_assert_uint_eq(svc[i].st.triples, loc[i].st.triples);
		ck_assert_uint_eq(svc[i].st.truncs, loc[i].st.truncs);
		ck_assert_uint_eq(svc[i].st.cmps, loc[i].st.cmps);
		prep_in += svc[i].st.prep_bytes_in;
	}
	ck_assert_uint_gt(svc[0].st.cmps, 0);
	ck_assert_uint_gt(svc[0].st.triples_sacrificed, 0);
	for (unsigned i = 0; i < NP; i++) { /* matrix triples through the service (kind 9, unpooled) */
		ck_assert_uint_eq(svc[i].st.mtriples, 2);
		ck_assert_uint_eq(svc[i].st.mtriples_sacrificed, 3);
		ck_assert_uint_eq(svc[i].st.mtriples, loc[i].st.mtriples);
	}
	json_t *ses = get_session(url, "prog");
	ck_assert_uint_eq((uint64_t)json_integer_value(json_object_get(ses, "bytes_served")), prep_in);
	for (unsigned i = 0; i < NP; i++)
		ck_assert(json_is_true(json_array_get(json_object_get(ses, "seeds_delivered"), i)));
	json_int_t hits = 0, misses = 0;
	for (int k = 2; k <= 7; k++) {
		json_t *p = pool_of(ses, k);
		if (!p)
			continue;
		ck_assert_msg(json_is_null(json_object_get(p, "failed")), "pool %d failed: %s", k,
			      json_string_value(json_object_get(p, "failed")));
		hits += json_integer_value(json_object_get(p, "hits"));
		misses += json_integer_value(json_object_get(p, "misses"));
	}
	for (int k = 3; k <= 7; k += 4) { /* learned from the first request, then ahead of it */
		json_t *p = pool_of(ses, k);
		ck_assert(json_is_false(json_object_get(p, "learning")));
		ck_assert_int_eq(json_integer_value(json_object_get(p, "start_batch")), 1);
		ck_assert_int_gt(json_integer_value(json_object_get(p, "hits")) +
				     json_integer_value(json_object_get(p, "misses")),
				 0);
	}
	ck_assert_int_gt(json_integer_value(json_object_get(pool_of(ses, 2), "hits")), 0);
	ck_assert_int_gt(json_integer_value(json_object_get(pool_of(ses, 4), "hits")), 0); /* two receivers */
	fprintf(stderr,
		"dealer service, %d parties, batches of %d: party0 received %llu payload bytes, party1 %llu, "
		"party2 %llu; %lld pool hits, %lld misses; %llu rounds, bytes sent per party %llu\n",
		NP, BATCH, (unsigned long long)svc[0].st.prep_bytes_in, (unsigned long long)svc[1].st.prep_bytes_in,
		(unsigned long long)svc[2].st.prep_bytes_in, (long long)hits, (long long)misses,
		(unsigned long long)svc[0].st.rounds, (unsigned long long)svc[0].st.bytes_sent);
	json_decref(ses);
	/* A seed is handed out once. */
	ck_assert_int_eq(status_of("party0", "GET", "/v1/sessions/prog/seed?party=0", NULL), 409);
	delete_session(url, "prog");
}
END_TEST

START_TEST(test_party_gets_only_its_own)
{
	ck_assert_int_eq(create_session(url, "auth", NULL), 201);
	const char *prep0 = "{\"party\": 0, \"kind\": 2, \"n\": 256, \"batch\": 0}";
	/* another party's seed or payload */
	ck_assert_int_eq(status_of("party1", "GET", "/v1/sessions/auth/seed?party=0", NULL), 403);
	ck_assert_int_eq(status_of("party2", "POST", "/v1/sessions/auth/prep", prep0), 403);
	/* other roles */
	ck_assert_int_eq(status_of("client", "GET", "/v1/sessions/auth/seed?party=0", NULL), 403);
	ck_assert_int_eq(status_of("client", "POST", "/v1/sessions/auth/prep", prep0), 403);
	ck_assert_int_eq(status_of("admin", "GET", "/v1/sessions/auth/seed?party=0", NULL), 403);
	ck_assert_int_eq(status_of("gateway", "GET", "/v1/sessions/auth", NULL), 403);
	ck_assert_int_eq(status_of("party0", "GET", "/v1/sessions/auth", NULL), 403);
	ck_assert_int_eq(status_of("party0", "DELETE", "/v1/sessions/auth", NULL), 403);
	char body[1024];
	snprintf(body, sizeof body, "{\"id\": \"rogue\", \"nparties\": 2, \"fingerprints\": [\"%s\", \"%s\"]}",
		 fp_hex[0], fp_hex[1]);
	ck_assert_int_eq(status_of("party0", "POST", "/v1/sessions", body), 403);
	ck_assert_int_eq(status_of("client", "POST", "/v1/sessions", body), 403);
	/* the session service may create sessions */
	ck_assert_int_eq(status_of("session", "POST", "/v1/sessions", body), 201);
	ck_assert_int_eq(status_of("session", "DELETE", "/v1/sessions/rogue", NULL), 204);
	/* prepnet with the wrong index says so */
	char ca[400], crt[400], key[400];
	path_of(ca, sizeof ca, "ca", "crt");
	path_of(crt, sizeof crt, "party1", "crt");
	path_of(key, sizeof key, "party1", "key");
	struct prepnet_opts po = {.url = url, .ca_file = ca, .cert_file = crt, .key_file = key,
				  .dealer_fingerprint = dealer_fp, .session = "auth", .party = 0, .timeout_ms = 5000};
	struct prepnet *pn;
	uint8_t seed[MPC_SEED_BYTES];
	ck_assert_int_eq(prepnet_new(&po, &pn), 0);
	ck_assert_int_eq(prepnet_seed(pn, seed), ERR_FORBIDDEN);
	ck_assert_ptr_nonnull(strstr(prepnet_last_error(pn), "not the one registered for party 0"));
	prepnet_free(pn);
	/* none of that consumed anything: the owners still get theirs */
	ck_assert_int_eq(status_of("party0", "GET", "/v1/sessions/auth/seed?party=0", NULL), 200);
	ck_assert_int_eq(status_of("party0", "POST", "/v1/sessions/auth/prep", prep0), 200);
	ck_assert_int_eq(status_of("party1", "GET", "/v1/sessions/auth/seed?party=1", NULL), 200);
	delete_session(url, "auth");
}
END_TEST

START_TEST(test_dealer_certificate_pinned)
{
	ck_assert_int_eq(create_session(url, "pin", NULL), 201);
	char ca[400], crt[400], key[400];
	path_of(ca, sizeof ca, "ca", "crt");
	path_of(crt, sizeof crt, "party0", "crt");
	path_of(key, sizeof key, "party0", "key");
	uint8_t wrong[32];
	memcpy(wrong, dealer_fp, sizeof wrong);
	wrong[0] ^= 1;
	struct prepnet_opts po = {.url = url, .ca_file = ca, .cert_file = crt, .key_file = key,
				  .dealer_fingerprint = wrong, .session = "pin", .party = 0, .timeout_ms = 3000};
	struct prepnet *pn;
	uint8_t seed[MPC_SEED_BYTES];
	ck_assert_int_eq(prepnet_new(&po, &pn), 0);
	ck_assert_int_eq(prepnet_seed(pn, seed), ERR_TLS);
	prepnet_free(pn);
	/* nothing was sent to the impostor: the real party still gets its seed */
	po.dealer_fingerprint = dealer_fp;
	ck_assert_int_eq(prepnet_new(&po, &pn), 0);
	ck_assert_int_eq(prepnet_seed(pn, seed), 0);
	prepnet_free(pn);
	delete_session(url, "pin");
}
END_TEST

START_TEST(test_unknown_session_404)
{
	const char *prep = "{\"party\": 0, \"kind\": 2, \"n\": 256, \"batch\": 0}";
	ck_assert_int_eq(status_of("party0", "GET", "/v1/sessions/nope/seed?party=0", NULL), 404);
	ck_assert_int_eq(status_of("party0", "POST", "/v1/sessions/nope/prep", prep), 404);
	ck_assert_int_eq(status_of("party0", "POST", "/v1/sessions/nope/report", "{\"party\": 0, \"check\": \"x\"}"),
			 404);
	ck_assert_int_eq(status_of("admin", "GET", "/v1/sessions/nope", NULL), 404);
	ck_assert_int_eq(status_of("admin", "DELETE", "/v1/sessions/nope", NULL), 404);
	ck_assert_int_eq(status_of("admin", "GET", "/v1/sessions/bad%20id", NULL), 404);
}
END_TEST

START_TEST(test_malformed_names_field)
{
	ck_assert_int_eq(create_session(url, "bad", NULL), 201);
	static const struct {
		const char *who, *method, *path, *body, *field;
	} cases[] = {
		{"party0", "POST", "/v1/sessions/bad/prep", "{\"party\": 0, \"kind\": 2, \"n\": 256}", "batch"},
		{"party0", "POST", "/v1/sessions/bad/prep", "{\"party\": 0, \"kind\": \"x\", \"n\": 1, \"batch\": 0}", "kind"},
		{"party0", "POST", "/v1/sessions/bad/prep", "{\"party\": 0, \"kind\": 2, \"n\": 0, \"batch\": 0}", "n"},
		{"party0", "POST", "/v1/sessions/bad/prep", "{\"party\": 0, \"kind\": 2, \"n\": 1, \"batch\": -1}", "batch"},
		{"party0", "POST", "/v1/sessions/bad/prep", "{\"party\": 0, \"kind\": 2, \"n\": 1, \"batch\": 0, \"x\": 1}", "x"},
		{"party0", "POST", "/v1/sessions/bad/prep", "{\"party\": 5, \"kind\": 2, \"n\": 1, \"batch\": 0}", "party"},
		{"party1", "POST", "/v1/sessions/bad/prep", "{\"party\": 1, \"kind\": 2, \"n\": 1, \"batch\": 0}", "party"},
		{"party0", "GET", "/v1/sessions/bad/seed", NULL, "party"},
		{"party0", "GET", "/v1/sessions/bad/seed?party=x", NULL, "party"},
		{"party0", "POST", "/v1/sessions/bad/report", "{\"party\": 0}", "check"},
		{"admin", "POST", "/v1/sessions", "{\"nparties\": 3, \"fingerprints\": []}", "id"},
		{"admin", "POST", "/v1/sessions", "{\"id\": \"a b\", \"nparties\": 2, \"fingerprints\": [\"\", \"\"]}", "id"},
		{"admin", "POST", "/v1/sessions", "{\"id\": \"z\", \"nparties\": 1, \"fingerprints\": [\"\", \"\"]}", "nparties"},
		{"admin", "POST", "/v1/sessions", "{\"id\": \"z\", \"nparties\": 2, \"fingerprints\": [\"00\", \"11\"]}",
		 "fingerprints[0]"},
		{"admin", "POST", "/v1/sessions", "{\"id\": \"z\", \"nparties\": 3, \"fingerprints\": [\"00\", \"11\"]}",
		 "fingerprints"},
		{"admin", "POST", "/v1/sessions", "{\"id\": \"z\", \"nparties\": 2, \"fingerprints\": [1, 2], \"extra\": 1}",
		 "extra"},
	};
	for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
		char field[64];
		long st = call_as(cases[i].who, NULL, cases[i].method, cases[i].path, cases[i].body, field, sizeof field,
				  NULL);
		ck_assert_msg(st == 400 && !strcmp(field, cases[i].field), "case %zu (%s): status %ld field '%s', want 400 '%s'",
			      i, cases[i].body ? cases[i].body : cases[i].path, st, field, cases[i].field);
	}
	/* fingerprints and pools, which need the real fingerprints */
	char body[2048], field[64];
	static const struct {
		const char *pools, *field;
	} pc[] = {
		{"[{\"kind\": 2, \"n\": 0}]", "pools[0].n"},
		{"[{\"kind\": 2, \"n\": 8}, {\"kind\": 2, \"n\": 16}]", "pools[1].kind"},
		{"[{\"kind\": 2, \"n\": 8}, 3]", "pools[1]"},
		{"[{\"kind\": 99, \"n\": 8}]", "pools[0]"},            /* the library refuses the kind */
		{"[{\"kind\": 3, \"param\": 0, \"n\": 8}]", "pools[0]"}, /* ... and this param */
		{"[{\"kind\": 2, \"n\": 8, \"min_items\": 9, \"max_items\": 8}]", "pools[0].min_items"},
	};
	for (size_t i = 0; i < sizeof pc / sizeof pc[0]; i++) {
		snprintf(body, sizeof body, "{\"id\": \"p%zu\", \"nparties\": 3, \"fingerprints\": [\"%s\", \"%s\", \"%s\"], \"pools\": %s}",
			 i, fp_hex[0], fp_hex[1], fp_hex[2], pc[i].pools);
		long st = call_as("admin", NULL, "POST", "/v1/sessions", body, field, sizeof field, NULL);
		ck_assert_msg(st == 400 && !strcmp(field, pc[i].field), "pools %s: status %ld field '%s'", pc[i].pools, st,
			      field);
	}
	snprintf(body, sizeof body, "{\"id\": \"dup\", \"nparties\": 3, \"fingerprints\": [\"%s\", \"%s\", \"%s\"]}",
		 fp_hex[0], fp_hex[1], fp_hex[0]);
	ck_assert_int_eq(call_as("admin", NULL, "POST", "/v1/sessions", body, field, sizeof field, NULL), 400);
	ck_assert_str_eq(field, "fingerprints[2]");
	ck_assert_int_eq(create_session(url, "bad", NULL), 409); /* the id is taken */
	delete_session(url, "bad");
}
END_TEST

static long prep_as(const char *who, const char *sid, unsigned party, unsigned kind, unsigned param, unsigned n,
		    unsigned batch, char *detail, size_t dcap)
{
	char path[96], body[256];
	json_t *doc = NULL;
	snprintf(path, sizeof path, "/v1/sessions/%s/prep", sid);
	snprintf(body, sizeof body, "{\"party\": %u, \"kind\": %u, \"param\": %u, \"n\": %u, \"batch\": %u}", party, kind,
		 param, n, batch);
	long st = call_as(who, NULL, "POST", path, body, NULL, 0, &doc);
	if (detail) {
		const char *d = json_string_value(json_object_get(doc, "detail"));
		snprintf(detail, dcap, "%s", d ? d : "");
	}
	json_decref(doc);
	return st;
}

static long prep_as_at(const char *u, const char *sid, unsigned party, unsigned n, unsigned batch, char *scratch,
		       size_t cap)
{
	char body[256];
	snprintf(scratch, cap, "/v1/sessions/%s/prep", sid);
	snprintf(body, sizeof body, "{\"party\": %u, \"kind\": 2, \"n\": %u, \"batch\": %u}", party, n, batch);
	return call_as("party0", u, "POST", scratch, body, NULL, 0, NULL);
}

START_TEST(test_order_and_agreement)
{
	char detail[512];
	ck_assert_int_eq(create_session(url, "ord", "\"pools\": [{\"kind\": 2, \"n\": 256}]"), 201);
	/* pooled: in order, once */
	ck_assert_int_eq(prep_as("party0", "ord", 0, 2, 0, 256, 1, detail, sizeof detail), 409);
	ck_assert_ptr_nonnull(strstr(detail, "out of order"));
	ck_assert_int_eq(prep_as("party0", "ord", 0, 2, 0, 256, 0, NULL, 0), 200);
	ck_assert_int_eq(prep_as("party0", "ord", 0, 2, 0, 256, 0, detail, sizeof detail), 409);
	ck_assert_ptr_nonnull(strstr(detail, "delivered already"));
	/* a pooled kind asked with another shape: the library refuses, the detail says why */
	ck_assert_int_eq(prep_as("party0", "ord", 0, 2, 0, 128, 1, detail, sizeof detail), 409);
	ck_assert_ptr_nonnull(strstr(detail, "pool declaration does not match"));
	/* not pooled: the library's own order */
	ck_assert_int_eq(prep_as("party0", "ord", 0, 1, 0, 64, 1, NULL, 0), 409);
	ck_assert_int_eq(prep_as("party0", "ord", 0, 1, 0, 64, 0, NULL, 0), 200);
	ck_assert_int_eq(prep_as("party0", "ord", 0, 1, 0, 64, 0, NULL, 0), 409);
	/* parties that disagree on a batch: party 0 and the input's owner ask different n */
	ck_assert_int_eq(prep_as("party0", "ord", 0, 4, 1, 8, 0, NULL, 0), 200);
	ck_assert_int_eq(prep_as("party1", "ord", 1, 4, 1, 16, 0, detail, sizeof detail), 409);
	ck_assert_int_eq(prep_as("party1", "ord", 1, 4, 1, 8, 0, NULL, 0), 200);
	/* the dealer library refuses a request it does not know */
	ck_assert_int_eq(prep_as("party0", "ord", 0, 99, 0, 8, 0, NULL, 0), 400);
	delete_session(url, "ord");
}
END_TEST

START_TEST(test_delete_wipes)
{
	ck_assert_int_eq(create_session(url, "del", "\"pools\": [{\"kind\": 2, \"n\": 256}, {\"kind\": 1, \"n\": 512}]"),
			 201);
	usleep(200000);
	json_t *ses = get_session(url, "del");
	json_int_t held = json_integer_value(json_object_get(pool_of(ses, 2), "bytes")) +
			  json_integer_value(json_object_get(pool_of(ses, 1), "bytes"));
	json_decref(ses);
	ck_assert_int_gt(held, 0);
	json_t *list = NULL;
	ck_assert_int_eq(call_as("admin", NULL, "GET", "/v1/sessions", NULL, NULL, 0, &list), 200);
	json_int_t before = json_integer_value(json_object_get(list, "pool_bytes"));
	json_decref(list);
	ck_assert_int_ge(before, held);
	delete_session(url, "del");
	ck_assert_int_eq(status_of("admin", "GET", "/v1/sessions/del", NULL), 404);
	ck_assert_int_eq(status_of("party0", "GET", "/v1/sessions/del/seed?party=0", NULL), 404);
	ck_assert_int_eq(status_of("admin", "DELETE", "/v1/sessions/del", NULL), 404);
	ck_assert_int_eq(call_as("admin", NULL, "GET", "/v1/sessions", NULL, NULL, 0, &list), 200);
	json_t *ids = json_object_get(list, "sessions");
	for (size_t i = 0; i < json_array_size(ids); i++)
		ck_assert_str_ne(json_string_value(json_array_get(ids, i)), "del");
	ck_assert_int_le(json_integer_value(json_object_get(list, "pool_bytes")), before - held);
	json_decref(list);
}
END_TEST

/* A faulty triple from the dealer (testing.fault_injection) is caught by the parties'
 * sacrifice; they report it, the dealer counts one failure and closes the session. */
START_TEST(test_sacrifice_failure_reported)
{
	static struct party ps[NP];
	make_inputs();
	double before = metric_value_of(url, "mimir_dealer_sacrifice_failures_total");
	ck_assert(before >= 0);
	ck_assert_int_eq(create_session(url, "sac",
					"\"pools\": [{\"kind\": 2, \"n\": 256}], \"fault\": {\"kind\": \"triple-value\","
					" \"item\": 5, \"bit\": 3}"),
			 201);
	struct run_opts o = {.u = url, .session = "sac", .prep_timeout_ms = 20000};
	run(ps, &o);
	for (unsigned i = 0; i < NP; i++) {
		ck_assert_int_eq(ps[i].rc, ERR_MAC_CHECK);
		ck_assert_str_eq(ps[i].failed, "triple-sacrifice");
	}
	ck_assert(metric_value_of(url, "mimir_dealer_sacrifice_failures_total") == before + 1);
	ck_assert(metric_value_of(url, "mimir_dealer_party_aborts_total{check=\"triple-sacrifice\"}") >= NP);
	char detail[512];
	ck_assert_int_eq(prep_as("party0", "sac", 0, 1, 0, 8, 0, detail, sizeof detail), 409);
	ck_assert_ptr_nonnull(strstr(detail, "triple-sacrifice"));
	json_t *ses = get_session(url, "sac");
	ck_assert_int_eq(json_integer_value(json_object_get(pool_of(ses, 2), "bytes")), 0); /* wiped */
	json_decref(ses);
	delete_session(url, "sac");
	/* without testing.fault_injection the field is refused */
	char u2[64], log2[320], field[64], body[1024];
	struct tu_proc p2;
	ck_assert_int_eq(start_dealer(&p2, "nofault", "", u2, sizeof u2, log2, sizeof log2), 0);
	snprintf(body, sizeof body,
		 "{\"id\": \"f\", \"nparties\": 2, \"fingerprints\": [\"%s\", \"%s\"], \"fault\": {\"kind\": \"triple-mac\"}}",
		 fp_hex[0], fp_hex[1]);
	ck_assert_int_eq(call_as("admin", u2, "POST", "/v1/sessions", body, field, sizeof field, NULL), 400);
	ck_assert_str_eq(field, "fault");
	tu_proc_stop(&p2, SIGTERM, 5000);
}
END_TEST

static double cpu_seconds(void)
{
	struct rusage ru;
	getrusage(RUSAGE_SELF, &ru);
	return (double)(ru.ru_utime.tv_sec + ru.ru_stime.tv_sec) + (double)(ru.ru_utime.tv_usec + ru.ru_stime.tv_usec) / 1e6;
}

/* The dealer goes away (SIGKILL) or hangs (SIGSTOP) while the parties compute: every
 * party ends with an error within the bound, none spins while it waits. */
static void dealer_lost_midrun(int sig)
{
	static struct party ps[NP];
	enum { BOUND_MS = 1500 };
	char u2[64], log2[320];
	struct tu_proc p2;
	make_inputs();
	ck_assert_int_eq(start_dealer(&p2, sig == SIGKILL ? "killed" : "frozen", "\"pool\": {\"workers\": 1}", u2,
				      sizeof u2, log2, sizeof log2),
			 0);
	ck_assert_int_eq(create_session(u2, "mid", NULL), 201); /* no pools: a fetch per batch */
	struct run_opts o = {.u = u2, .session = "mid", .prep_timeout_ms = BOUND_MS, .loop = true};
	struct mpc_hub *hub;
	pthread_t th[NP];
	parties_new(ps, &o, &hub);
	for (unsigned i = 0; i < NP; i++)
		pthread_create(&th[i], NULL, party_main, &ps[i]);
	/* mid-run: a few products done, the parties still going */
	for (int i = 0; i < 1000 && __atomic_load_n(&ps[0].iterations, __ATOMIC_RELAXED) < 3; i++)
		usleep(10000);
	ck_assert_int_eq(kill(p2.pid, sig), 0);
	int64_t t0 = now_ms();
	double cpu0 = cpu_seconds();
	for (unsigned i = 0; i < NP; i++)
		pthread_join(th[i], NULL);
	double cpu = cpu_seconds() - cpu0;
	int64_t wall = now_ms() - t0;
	int64_t last = 0;
	for (unsigned i = 0; i < NP; i++)
		last = ps[i].done_ms - t0 > last ? ps[i].done_ms - t0 : last;
	fprintf(stderr,
		"dealer %s mid-run after %llu products: every party stopped within %lld ms (bound %d ms); "
		"party0: %s (%s); CPU %.3f s over %.3f s\n",
		sig == SIGKILL ? "killed" : "frozen", (unsigned long long)ps[0].iterations, (long long)last, BOUND_MS,
		err_slug(ps[0].rc), ps[0].err, cpu, (double)wall / 1000);
	ck_assert_uint_gt(ps[0].iterations, 0);
	ck_assert_int_eq(ps[0].rc, sig == SIGKILL ? ERR_UNAVAILABLE : ERR_TIMEOUT);
	ck_assert_str_eq(ps[0].failed, "preprocessing");
	ck_assert_ptr_nonnull(strstr(ps[0].err, "the dealer at"));
	for (unsigned i = 1; i < NP; i++) {
		ck_assert_int_eq(ps[i].rc, ERR_ABORTED);
		ck_assert_str_eq(ps[i].failed, "transport");
	}
	ck_assert_msg(last <= BOUND_MS + 1000, "a party took %lld ms to give up (bound %d ms)", (long long)last, BOUND_MS);
	ck_assert_msg(cpu < 0.3 * (double)wall / 1000 + 0.1, "the parties spun: %.3f s CPU in %.3f s", cpu,
		      (double)wall / 1000);
	parties_free(ps, hub);
	if (sig == SIGSTOP)
		kill(p2.pid, SIGCONT);
	tu_proc_stop(&p2, SIGKILL, 5000);
}

START_TEST(test_dealer_killed_midrun) { dealer_lost_midrun(SIGKILL); }
END_TEST

START_TEST(test_dealer_frozen_midrun) { dealer_lost_midrun(SIGSTOP); }
END_TEST

/* Pools stay within their memory bounds, refill as parties take from them, and an
 * idle session expires (wiped). */
START_TEST(test_pool_bounds_and_expiry)
{
	char u2[64], log2[320];
	struct tu_proc p2;
	/* a triple batch of 256 is 24 + 96 * 256 = 24600 bytes */
	ck_assert_int_eq(start_dealer(&p2, "bounded",
				      "\"triple_pool\": {\"min_size\": 4096, \"max_size\": 65536},"
				      " \"pool\": {\"workers\": 2, \"max_bytes\": 100000, \"max_pool_bytes\": 80000},"
				      " \"sessions\": {\"idle_timeout_s\": 4}",
				      u2, sizeof u2, log2, sizeof log2),
			 0);
	ck_assert_int_eq(create_session(u2, "b1", "\"pools\": [{\"kind\": 2, \"n\": 256}]"), 201);
	ck_assert_int_eq(create_session(u2, "b2", "\"pools\": [{\"kind\": 2, \"n\": 256}]"), 201);
	usleep(400000);
	json_t *s1 = get_session(u2, "b1"), *s2 = get_session(u2, "b2");
	json_int_t by1 = json_integer_value(json_object_get(pool_of(s1, 2), "bytes"));
	json_int_t by2 = json_integer_value(json_object_get(pool_of(s2, 2), "bytes"));
	json_int_t next1 = json_integer_value(json_object_get(pool_of(s1, 2), "next_batch"));
	json_decref(s1);
	json_decref(s2);
	ck_assert_int_le(by1, 80000);
	ck_assert_int_le(by2, 80000);
	ck_assert_int_le(by1 + by2, 100000);
	ck_assert_int_ge(by1 + by2, 3 * 24600); /* the bound binds, the pools are not empty */
	ck_assert(metric_value_of(u2, "mimir_dealer_pool_backpressure_total") >= 1);
	ck_assert(metric_value_of(u2, "mimir_dealer_pool_bytes") <= 100000);
	/* taking from the pool makes room: the workers refill within the bound */
	char path[64];
	ck_assert_int_eq(prep_as_at(u2, "b1", 0, 256, 0, path, sizeof path), 200);
	ck_assert_int_eq(prep_as_at(u2, "b1", 0, 256, 1, path, sizeof path), 200);
	usleep(400000);
	s1 = get_session(u2, "b1");
	ck_assert_int_gt(json_integer_value(json_object_get(pool_of(s1, 2), "next_batch")), next1);
	ck_assert_int_le(json_integer_value(json_object_get(pool_of(s1, 2), "bytes")), 80000);
	ck_assert_int_eq(json_integer_value(json_object_get(pool_of(s1, 2), "hits")), 2);
	json_decref(s1);
	ck_assert(metric_value_of(u2, "mimir_dealer_pool_bytes") <= 100000);
	/* idle sessions expire (b2 was never used by a party, b1 since the fetches) */
	long st = 200;
	for (int i = 0; i < 120 && st == 200; i++) {
		usleep(100000);
		st = call_as("admin", u2, "GET", "/v1/sessions/b2", NULL, NULL, 0, NULL);
	}
	ck_assert_int_eq(st, 404);
	ck_assert(metric_value_of(u2, "mimir_dealer_sessions") <= 1);
	tu_proc_stop(&p2, SIGTERM, 5000);
	char *text = tu_read_file(log2, NULL);
	ck_assert_ptr_nonnull(strstr(text, "event=dealer.session_expired"));
	free(text);
}
END_TEST

START_TEST(test_metrics_promtool)
{
	ck_assert_int_eq(status_of("admin", "GET", "/readyz", NULL), 200);
	struct httpc *c = as("admin", NULL);
	struct httpc_resp r;
	ck_assert_int_eq(httpc_request(c, "GET", "/metrics", NULL, NULL, NULL, 0, &r), 0);
	ck_assert_int_eq(r.status, 200);
	static const char *const families[] = {
		"mimir_dealer_pool_items{", "mimir_dealer_pool_bytes ", "mimir_dealer_items_generated_total{",
		"mimir_dealer_bytes_served_total{", "mimir_dealer_requests_refused_total{",
		"mimir_dealer_sacrifice_failures_total ", "mimir_dealer_batch_generation_seconds_bucket{",
		"mimir_dealer_sessions ", NULL};
	for (size_t i = 0; families[i]; i++)
		ck_assert_msg(strstr(r.body, families[i]), "no %s in /metrics", families[i]);
	char path[400];
	snprintf(path, sizeof path, "%s/metrics.txt", tmp);
	ck_assert_int_eq(tu_write_file(path, r.body, r.len), 0);
	httpc_resp_free(&r);
	httpc_free(c);
	int st = tu_system("promtool check metrics < %s > %s/promtool.out 2>&1", path, tmp);
	if (st != 0) {
		char out[400];
		snprintf(out, sizeof out, "%s/promtool.out", tmp);
		char *text = tu_read_file(out, NULL);
		ck_abort_msg("promtool check metrics failed (%d): %s", st, text ? text : "(no output)");
	}
}
END_TEST

START_TEST(test_config_checked)
{
	char out[400];
	snprintf(out, sizeof out, "%s/cfg.out", tmp);
	ck_assert_int_eq(tu_system("MIMIR_DEALER_TLS_ENABLED=false MIMIR_DEALER_TRIPLE_POOL_MIN_SIZE=-1 %s --check-config >%s 2>&1",
				   bin_dealer, out),
			 2);
	char *text = tu_read_file(out, NULL);
	ck_assert_msg(text && strstr(text, "triple_pool.min_size"), "message: %s", text ? text : "");
	free(text);
	ck_assert_int_eq(tu_system("MIMIR_DEALER_TLS_ENABLED=false MIMIR_DEALER_POOL_MAX_BYTES=4096 %s --check-config >%s 2>&1",
				   bin_dealer, out),
			 0);
}
END_TEST

Suite *suite(void)
{
	Suite *s = suite_create("dealer");
	TCase *tc = tcase_create("dealer_service");
	tcase_add_unchecked_fixture(tc, setup, teardown);
	tcase_set_timeout(tc, 120);
	tcase_add_test(tc, test_program_matches_inprocess);
	tcase_add_test(tc, test_party_gets_only_its_own);
	tcase_add_test(tc, test_dealer_certificate_pinned);
	tcase_add_test(tc, test_unknown_session_404);
	tcase_add_test(tc, test_malformed_names_field);
	tcase_add_test(tc, test_order_and_agreement);
	tcase_add_test(tc, test_delete_wipes);
	tcase_add_test(tc, test_sacrifice_failure_reported);
	tcase_add_test(tc, test_dealer_killed_midrun);
	tcase_add_test(tc, test_dealer_frozen_midrun);
	tcase_add_test(tc, test_pool_bounds_and_expiry);
	tcase_add_test(tc, test_metrics_promtool);
	tcase_add_test(tc, test_config_checked);
	suite_add_tcase(s, tc);
	return s;
}
