/* Integration: a client's generation through the gateway, every piece the real binary.
 * A real mimir-session (provisioning the real mimir-dealer), three real mimir-party
 * processes holding share files made by the real mimir-model from
 * ../shared/models/stories260K.bin, and the real mimir-gateway, all on loopback with
 * mutual TLS from a dev PKI of the real mimir-pki. The test registers the model, the
 * parties (sealing keys, pinned certificates, endpoints) and a session, opens the
 * session at the parties itself (admin certificate, POST /v1/sessions, under the id
 * reg_party_session_id gives) and reports them initialised, which the session
 * service's provisioner also does: whichever comes first, the same session ends up
 * ready.
 *
 * It proves from the outside: `mimir generate` prints exactly mimir-ref's text for the
 * greedy tokens of "Once upon a time"; a client on the streaming POST that drops its
 * connection resumes with Last-Event-ID and gets exactly the events it missed (ids
 * consecutive, tokens equal to the reference); the refusals (no key, a wrong key,
 * another session's key, a session not ready, bad bodies naming the field, a wrong
 * INPUT, another key's generation) and the CLI's exit codes for them; a party
 * registered with a sealing key it does not hold is caught by the client (exit 11); a
 * cancel ends the generation at every party with an error event; a client that
 * disconnects has its generation cancelled at the parties; a party killed mid-stream
 * gives the client an error event, not a hang. Every response the gateway gives the
 * test is validated against openapi/mimir.yaml. */
#define _GNU_SOURCE
#include <curl/curl.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
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
#include "registry/registry.h"
#include "sse/sse.h"
#include "svcproc.h"
#include "testutil.h"

#define NP 3
#define V 512
#define PAD 8 /* the sessions' pad_bucket: "Once upon a time" (5 ids) takes 8 positions */
#define PROMPT "Once upon a time"

static char tmp[256], pki[300], shares[300];
static char fp_hex[NP][65], dealer_fp[65], share_sha[NP][65], sealing_hex[NP][65];

/* per test (each runs in its own process) */
static char run[320], records[400];
static struct tu_svc dealer, party[NP], session_svc, gw_svc;
static bool party_up[NP];
static int stream_port[NP];
static unsigned round_ms = 10000;
static char model_id[32], party_id[NP][32];

static int64_t now_ms(void)
{
	struct timespec ts;
	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

static const char *jstr(const json_t *o, const char *k)
{
	const char *s = json_string_value(json_object_get(o, k));
	return s ? s : "";
}

static void sha256_file_hex(const char *path, char out[65])
{
	size_t len = 0;
	char *data = tu_read_file(path, &len);
	ck_assert_msg(data, "cannot read %s", path);
	uint8_t h[32];
	crypto_hash_sha256(h, (const uint8_t *)data, len);
	sodium_bin2hex(out, 65, h, 32);
	free(data);
}

static void fingerprint_hex(const char *cert, char out[65])
{
	char crt[400];
	uint8_t fp[32];
	snprintf(crt, sizeof crt, "%s/%s.crt", pki, cert);
	ck_assert_int_eq(mnet_cert_fingerprint(crt, fp), 0);
	sodium_bin2hex(out, 65, fp, sizeof fp);
}

/* PKI, keys and shares: once, in the parent (files survive Check's fork). */
static void setup_once(void)
{
	char bin[512], model[1024], to[1200];
	ck_assert_int_ge(sodium_init(), 0);
	tu_tmpdir(tmp, sizeof tmp);
	snprintf(pki, sizeof pki, "%s/pki", tmp);
	snprintf(shares, sizeof shares, "%s/shares", tmp);
	ck_assert_int_eq(tu_pki(tmp, "dev --parties %d --out %s", NP, pki), 0);
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
	for (int i = 0; i < NP; i++) {
		char name[24], path[400], err[200];
		uint8_t pk[32];
		snprintf(name, sizeof name, "party%d", i);
		fingerprint_hex(name, fp_hex[i]);
		snprintf(path, sizeof path, "%s/stories.party%d.mshare", shares, i);
		sha256_file_hex(path, share_sha[i]);
		snprintf(path, sizeof path, "%s/party%d.x25519.pub", shares, i);
		ck_assert_int_eq(mshare_key_read(path, false, pk, err, sizeof err), 0);
		sodium_bin2hex(sealing_hex[i], 65, pk, 32);
	}
	fingerprint_hex("dealer", dealer_fp);
	ck_assert_msg(tu_system("bash scripts/openapi-lint.sh --install-only >/dev/null") == 0,
		      "cannot install the OpenAPI validator (scripts/openapi-lint.sh --install-only)");
}

static void teardown_once(void)
{
	tu_rmrf(tmp);
}

/* ---- services ---- */

static struct httpc *as(const char *cert, const char *url, enum ident_role role)
{
	struct httpc *c = tu_client(pki, cert, url, role);
	ck_assert_ptr_nonnull(c);
	return c;
}

/* One mTLS request; asserts the status (want 0: any); returns the JSON body. */
static json_t *mcall(const char *cert, const char *url, enum ident_role role, const char *method,
		     const char *path, const char *body, long want, long *status)
{
	struct httpc *c = as(cert, url, role);
	struct httpc_resp r;
	int rc = httpc_request(c, method, path, NULL, body ? "application/json" : NULL, body,
			       body ? strlen(body) : 0, &r);
	ck_assert_msg(rc == 0, "%s %s%s: no answer (%s)", method, url, path, r.error);
	ck_assert_msg(!want || r.status == want, "%s %s%s: %ld, want %ld: %s", method, url, path, r.status, want,
		      r.body);
	if (status)
		*status = r.status;
	json_t *j = r.len ? json_loadb(r.body, r.len, 0, NULL) : NULL;
	httpc_resp_free(&r);
	httpc_free(c);
	return j;
}

static void start_party(int i)
{
	char json[4096], name[24];
	snprintf(name, sizeof name, "party%d", i);
	snprintf(json, sizeof json,
		 "{\"http\": {\"port\": 0, \"threads\": 4, \"drain_timeout_ms\": 3000},"
		 " \"tls\": {\"cert\": \"%s/%s.crt\", \"key\": \"%s/%s.key\", \"ca\": \"%s/ca.crt\"},"
		 " \"mtls\": {\"cert\": \"%s/%s.crt\", \"key\": \"%s/%s.key\", \"ca\": \"%s/ca.crt\"},"
		 " \"stream\": {\"port\": 0},"
		 " \"model\": {\"share\": \"%s/stories.party%d.mshare\", \"key\": \"%s/party%d.x25519.key\"},"
		 " \"timeouts\": {\"round_ms\": %u, \"dealer_ms\": %u},"
		 " \"limits\": {\"input_timeout_ms\": 60000}, \"sse\": {\"heartbeat_ms\": 1000}}",
		 pki, name, pki, name, pki, pki, name, pki, name, pki, shares, i, shares, i, round_ms,
		 round_ms / 2);
	ck_assert_msg(tu_svc_start(&party[i], run, "mimir-party", name, json, NULL) == 0,
		      "party %d did not start; see %s", i, party[i].log);
	party_up[i] = true;
	json_t *id = mcall("admin", party[i].url, IDENT_ROLE_PARTY, "GET", "/v1/identity", NULL, 200, NULL);
	ck_assert_str_eq(jstr(id, "sealing_key"), sealing_hex[i]);
	stream_port[i] = (int)json_integer_value(json_object_get(id, "stream_port"));
	json_decref(id);
}

static void setup(void)
{
	setvbuf(stdout, NULL, _IOLBF, 0);
	curl_global_init(CURL_GLOBAL_DEFAULT);
	if (tu_quick())
		round_ms = 30000;
	snprintf(run, sizeof run, "%s/run-%d", tmp, (int)getpid());
	ck_assert_int_eq(mkdir(run, 0700), 0);
	char json[4096];
	snprintf(json, sizeof json,
		 "{\"http\": {\"port\": 0, \"threads\": 4, \"drain_timeout_ms\": 3000},"
		 " \"tls\": {\"cert\": \"%s/dealer.crt\", \"key\": \"%s/dealer.key\", \"ca\": \"%s/ca.crt\"},"
		 " \"pool\": {\"workers\": 1}}",
		 pki, pki, pki);
	ck_assert_msg(tu_svc_start(&dealer, run, "mimir-dealer", "dealer", json, NULL) == 0, "dealer: see %s",
		      dealer.log);
	for (int i = 0; i < NP; i++)
		start_party(i);
	snprintf(json, sizeof json,
		 "{\"http\": {\"port\": 0, \"threads\": 4},"
		 " \"tls\": {\"cert\": \"%s/session.crt\", \"key\": \"%s/session.key\", \"ca\": \"%s/ca.crt\"},"
		 " \"db\": {\"path\": \"%s/session.db\"}, \"keys\": {\"secret_file\": \"%s/session.secret\"},"
		 " \"dealer\": {\"url\": \"%s\", \"ca\": \"%s/ca.crt\", \"cert\": \"%s/session.crt\","
		 " \"key\": \"%s/session.key\", \"timeout_ms\": 3000}}",
		 pki, pki, pki, run, run, dealer.url, pki, pki, pki);
	ck_assert_msg(tu_svc_start(&session_svc, run, "mimir-session", "session", json, NULL) == 0,
		      "session: see %s", session_svc.log);
	snprintf(json, sizeof json,
		 "{\"http\": {\"port\": 0, \"threads\": 8, \"idle_timeout_s\": 30},"
		 " \"tls\": {\"cert\": \"%s/gateway.crt\", \"key\": \"%s/gateway.key\", \"ca\": \"%s/ca.crt\"},"
		 " \"session\": {\"url\": \"%s\", \"ca\": \"%s/ca.crt\", \"cert\": \"%s/gateway.crt\","
		 " \"key\": \"%s/gateway.key\", \"timeout_ms\": 5000},"
		 " \"parties\": {\"timeout_ms\": 20000, \"connect_timeout_ms\": 10000},"
		 " \"stream\": {\"heartbeat_ms\": 500, \"abandon_ms\": 1500, \"keep_ms\": 60000}}",
		 pki, pki, pki, session_svc.url, pki, pki, pki);
	ck_assert_msg(tu_svc_start(&gw_svc, run, "mimir-gateway", "gateway", json, NULL) == 0, "gateway: see %s",
		      gw_svc.log);
	/* The registry: the model with its share digests, the parties pinned. */
	char body[2048];
	snprintf(body, sizeof body,
		 "{\"name\": \"stories260K\", \"dims\": {\"dim\": 64, \"hidden_dim\": 172, \"n_layers\": 5,"
		 " \"n_heads\": 8, \"n_kv_heads\": 4, \"vocab_size\": 512, \"seq_len\": 512},"
		 " \"shares\": [\"%s\", \"%s\", \"%s\"]}",
		 share_sha[0], share_sha[1], share_sha[2]);
	json_t *m = mcall("admin", session_svc.url, IDENT_ROLE_SESSION, "POST", "/v1/models", body, 201, NULL);
	snprintf(model_id, sizeof model_id, "%s", jstr(m, "id"));
	json_decref(m);
	for (int i = 0; i < NP; i++) {
		snprintf(body, sizeof body,
			 "{\"identity\": \"party%d\", \"sealing_key\": \"%s\", \"cert_fingerprint\": \"%s\","
			 " \"endpoint\": \"%s\", \"attestation\": {\"platform\": \"simulated\"}}",
			 i, sealing_hex[i], fp_hex[i], party[i].url);
		json_t *p = mcall("admin", session_svc.url, IDENT_ROLE_SESSION, "POST", "/v1/parties", body, 201, NULL);
		snprintf(party_id[i], sizeof party_id[i], "%s", jstr(p, "id"));
		json_decref(p);
	}
	snprintf(records, sizeof records, "%s/records.jsonl", run);
}

static void assert_clean_log(const char *path)
{
	char *text = tu_read_file(path, NULL);
	ck_assert_msg(text && !strstr(text, "Sanitizer") && !strstr(text, "runtime error"), "sanitizer report in %s",
		      path);
	free(text);
}

/* Closes every session a party still has and waits for its worker to let go of it.
 * (A party stopped with a session open ends the worker's thread while the process
 * exits, racing OpenSSL's exit-time cleanup of that thread's DRBG: LeakSanitizer then
 * reports a leak and the party exits 1 under the sanitizers. Reported to the party's
 * owner; closing first keeps the sanitizer runs meaningful.) */
static void close_party_sessions(void)
{
	for (int k = 0; k < NP; k++) {
		if (!party_up[k])
			continue;
		json_t *l = mcall("admin", party[k].url, IDENT_ROLE_PARTY, "GET", "/v1/sessions", NULL, 200, NULL);
		size_t i;
		json_t *v;
		json_array_foreach(json_object_get(l, "sessions"), i, v) {
			char path[96], mark[128];
			snprintf(path, sizeof path, "/v1/sessions/%s", jstr(v, "id"));
			long st = 0;
			json_decref(mcall("admin", party[k].url, IDENT_ROLE_PARTY, "DELETE", path, NULL, 0, &st));
			snprintf(mark, sizeof mark, "event=party.session_released session_id=%s", jstr(v, "id"));
			ck_assert_msg(tu_file_contains(party[k].log, mark, 20000), "party %d did not release %s", k,
				      jstr(v, "id"));
		}
		json_decref(l);
	}
	usleep(300 * 1000); /* the workers' threads end after their last line */
}

static void teardown(void)
{
	tu_svc_stop(&gw_svc);
	close_party_sessions();
	assert_clean_log(gw_svc.log);
	tu_svc_stop(&session_svc);
	for (int i = 0; i < NP; i++)
		if (party_up[i]) {
			tu_svc_stop(&party[i]);
			assert_clean_log(party[i].log);
		}
	tu_svc_stop(&dealer);
	curl_global_cleanup();
}

/* ---- sessions ---- */

/* A registry session of the three parties; its id into sid. */
static void create_session(int max_context, char sid[32])
{
	char body[512];
	snprintf(body, sizeof body,
		 "{\"model\": \"%s\", \"parties\": [\"%s\", \"%s\", \"%s\"], \"pad_bucket\": %d, \"max_context\": %d,"
		 " \"ttl_s\": 3600}",
		 model_id, party_id[0], party_id[1], party_id[2], PAD, max_context);
	json_t *s = mcall("admin", session_svc.url, IDENT_ROLE_SESSION, "POST", "/v1/sessions", body, 201, NULL);
	snprintf(sid, 32, "%s", jstr(s, "id"));
	json_decref(s);
}

static void create_key(const char *sid, char key[96])
{
	char body[256];
	snprintf(body, sizeof body, "{\"sessions\": [\"%s\"], \"name\": \"itest\"}", sid);
	json_t *k = mcall("admin", session_svc.url, IDENT_ROLE_SESSION, "POST", "/v1/keys", body, 201, NULL);
	snprintf(key, 96, "%s", jstr(k, "key"));
	json_decref(k);
}

static const char *party_state(int i, const char *psid, char *out, size_t cap)
{
	char path[96];
	long st = 0;
	snprintf(path, sizeof path, "/v1/sessions/%s", psid);
	json_t *j = mcall("admin", party[i].url, IDENT_ROLE_PARTY, "GET", path, NULL, 0, &st);
	snprintf(out, cap, "%s", st == 200 ? jstr(j, "state") : "absent");
	json_decref(j);
	return out;
}

static const char *registry_state(const char *sid, char *out, size_t cap)
{
	char path[96];
	snprintf(path, sizeof path, "/v1/sessions/%s", sid);
	json_t *s = mcall("admin", session_svc.url, IDENT_ROLE_SESSION, "GET", path, NULL, 200, NULL);
	snprintf(out, cap, "%s", jstr(s, "state"));
	json_decref(s);
	return out;
}

/* Opens the registry's session at the parties under the id reg_party_session_id
 * gives, with the registry's padding and context, its dealer session the registry's
 * (which the session service provisions), waits for them to be ready, and reports
 * each ready to the session service, which makes the session ready. A session service
 * that opens sessions at the parties itself (its provisioner) may be first: the
 * parties then answer 409 on the id, and a repeated report is accepted; either way
 * the same session, with the same parameters, ends up ready. */
static void open_session(const char *sid, int max_context)
{
	char psid[REG_PARTY_SESSION_HEX + 1], path[96];
	ck_assert_int_eq(reg_party_session_id(sid, psid), 0);
	snprintf(path, sizeof path, "/v1/sessions/%s", sid);
	int64_t t0 = now_ms();
	for (long st = 0; st != 200; usleep(100 * 1000)) {
		json_decref(mcall("admin", dealer.url, IDENT_ROLE_DEALER, "GET", path, NULL, 0, &st));
		ck_assert_msg(now_ms() - t0 < 15000, "the session service did not provision the dealer");
	}
	for (int k = 0; k < NP; k++) {
		char body[4096];
		int n = snprintf(body, sizeof body,
				 "{\"id\": \"%s\", \"index\": %d, \"nparties\": %d, \"n_ctx\": %d, \"pad\": %d, \"peers\": [",
				 psid, k, NP, max_context, PAD);
		for (int j = 0; j < NP; j++)
			n += snprintf(body + n, sizeof body - (size_t)n,
				      "%s{\"index\": %d, \"url\": \"%s\", \"stream_url\": \"https://localhost:%d\","
				      " \"fingerprint\": \"%s\"}",
				      j ? ", " : "", j, party[j].url, stream_port[j], fp_hex[j]);
		snprintf(body + n, sizeof body - (size_t)n,
			 "], \"dealer\": {\"url\": \"%s\", \"fingerprint\": \"%s\", \"session\": \"%s\"}}", dealer.url,
			 dealer_fp, sid);
		long st = 0;
		json_decref(mcall("admin", party[k].url, IDENT_ROLE_PARTY, "POST", "/v1/sessions", body, 0, &st));
		ck_assert_msg(st == 202 || st == 409, "POST /v1/sessions at party %d: %ld", k, st);
	}
	for (int k = 0; k < NP; k++) {
		char st[32];
		while (!strcmp(party_state(k, psid, st, sizeof st), "created") || !strcmp(st, "initialising")) {
			ck_assert_msg(now_ms() - t0 < 120000, "party %d still initialising", k);
			usleep(200 * 1000);
		}
		ck_assert_msg(!strcmp(st, "ready"), "party %d: the session is %s; see %s", k, st, party[k].log);
	}
	snprintf(path, sizeof path, "/v1/sessions/%s/init", sid);
	for (int k = 0; k < NP; k++) {
		char who[24];
		snprintf(who, sizeof who, "party%d", k);
		json_decref(mcall(who, session_svc.url, IDENT_ROLE_SESSION, "POST", path, "{\"status\": \"ready\"}", 200,
				  NULL));
	}
	char st[32];
	ck_assert_str_eq(registry_state(sid, st, sizeof st), "ready");
	printf("generate: session %s (parties' %s) ready in %lld ms\n", sid, psid, (long long)(now_ms() - t0));
}

/* ---- requests to the gateway, recorded for the OpenAPI check ---- */

struct gresp {
	long status;
	char ctype[128];
	char *body;
	size_t len;
	json_t *j;
	json_t *headers;
};

typedef int (*ev_fn)(const struct sse_event *ev, void *arg); /* non-zero: disconnect */

/* Where gw() sends its requests: the gateway under test unless set (a second gateway
 * in plaintext mode, mimir proxy). */
static const char *gw_base;

struct xfer {
	struct gresp *r;
	struct sse_parser *p;
	ev_fn fn;
	void *arg;
	bool hung_up;
};

static int on_sse(const struct sse_event *ev, void *arg)
{
	struct xfer *x = arg;
	return x->fn(ev, x->arg);
}

static size_t on_data(char *p, size_t sz, size_t n, void *arg)
{
	struct xfer *x = arg;
	size_t len = sz * n;
	char *q = realloc(x->r->body, x->r->len + len + 1);
	ck_assert_ptr_nonnull(q);
	memcpy(q + x->r->len, p, len);
	x->r->body = q;
	x->r->len += len;
	q[x->r->len] = '\0';
	if (x->fn && sse_parser_feed(x->p, p, len, on_sse, x) != 0) {
		x->hung_up = true;
		return 0; /* the client hangs up */
	}
	return len;
}

static size_t on_header(char *p, size_t sz, size_t n, void *arg)
{
	size_t len = sz * n, colon = 0;
	while (colon < len && p[colon] != ':')
		colon++;
	if (colon == 0 || colon >= len || colon > 63)
		return len;
	char name[64], value[512];
	for (size_t i = 0; i < colon; i++)
		name[i] = (char)(p[i] >= 'A' && p[i] <= 'Z' ? p[i] + 32 : p[i]);
	name[colon] = '\0';
	size_t v = colon + 1, e = len;
	while (v < e && p[v] == ' ')
		v++;
	while (e > v && (p[e - 1] == '\r' || p[e - 1] == '\n' || p[e - 1] == ' '))
		e--;
	snprintf(value, sizeof value, "%.*s", (int)(e - v), p + v);
	json_object_set_new(arg, name, json_string(value));
	return len;
}

static void record(const char *method, const char *path, const struct gresp *r)
{
	json_t *rec = json_pack("{s:s, s:s, s:I, s:s, s:O, s:s%}", "method", method, "path", path, "status",
				(json_int_t)r->status, "content_type", r->ctype, "headers", r->headers, "body",
				r->body ? r->body : "", r->len);
	ck_assert_ptr_nonnull(rec);
	char *line = json_dumps(rec, JSON_COMPACT);
	FILE *f = fopen(records, "a");
	ck_assert_ptr_nonnull(f);
	fprintf(f, "%s\n", line);
	fclose(f);
	free(line);
	json_decref(rec);
}

static void gresp_free(struct gresp *r)
{
	free(r->body);
	json_decref(r->j);
	json_decref(r->headers);
	memset(r, 0, sizeof *r);
}

static const char *hdr(const struct gresp *r, const char *name)
{
	return json_string_value(json_object_get(r->headers, name));
}

/* One request to the gateway with the API key (NULL: none), no client certificate. With
 * fn, the answer is read as an event stream and fn sees each event as it comes. Asserts
 * the status (want) and, for errors, the problem+json shape. */
static struct gresp gw(const char *key, const char *method, const char *path, const char *const *extra,
		       const char *ctype, const void *body, size_t len, ev_fn fn, void *arg, long want)
{
	struct gresp r = {.headers = json_object()};
	struct xfer x = {.r = &r, .fn = fn, .arg = arg};
	char url[512], ca[400], auth[128];
	snprintf(url, sizeof url, "%s%s", gw_base ? gw_base : gw_svc.url, path);
	snprintf(ca, sizeof ca, "%s/ca.crt", pki);
	CURL *h = curl_easy_init();
	curl_easy_setopt(h, CURLOPT_URL, url);
	curl_easy_setopt(h, CURLOPT_CAINFO, ca);
	curl_easy_setopt(h, CURLOPT_CUSTOMREQUEST, method);
	struct curl_slist *sl = NULL;
	if (key) {
		snprintf(auth, sizeof auth, "Authorization: Bearer %s", key);
		sl = curl_slist_append(sl, auth);
	}
	for (const char *const *e = extra; e && *e; e++)
		sl = curl_slist_append(sl, *e);
	if (body) {
		char ct[128];
		snprintf(ct, sizeof ct, "Content-Type: %s", ctype ? ctype : "application/json");
		sl = curl_slist_append(sl, ct);
		curl_easy_setopt(h, CURLOPT_POSTFIELDS, body);
		curl_easy_setopt(h, CURLOPT_POSTFIELDSIZE, (long)len);
	}
	sl = curl_slist_append(sl, "Expect:");
	curl_easy_setopt(h, CURLOPT_HTTPHEADER, sl);
	curl_easy_setopt(h, CURLOPT_WRITEFUNCTION, on_data);
	curl_easy_setopt(h, CURLOPT_WRITEDATA, &x);
	curl_easy_setopt(h, CURLOPT_HEADERFUNCTION, on_header);
	curl_easy_setopt(h, CURLOPT_HEADERDATA, r.headers);
	curl_easy_setopt(h, CURLOPT_TIMEOUT, fn ? 900L : 60L);
	if (fn)
		ck_assert_ptr_nonnull(x.p = sse_parser_new(16u << 20));
	CURLcode cc = curl_easy_perform(h);
	ck_assert_msg(cc == CURLE_OK || (x.hung_up && cc == CURLE_WRITE_ERROR), "%s %s: %s", method, path,
		      curl_easy_strerror(cc));
	curl_easy_getinfo(h, CURLINFO_RESPONSE_CODE, &r.status);
	curl_slist_free_all(sl);
	curl_easy_cleanup(h);
	sse_parser_free(x.p);
	snprintf(r.ctype, sizeof r.ctype, "%s", hdr(&r, "content-type") ? hdr(&r, "content-type") : "");
	record(method, path, &r);
	if (r.len && strstr(r.ctype, "json"))
		r.j = json_loadb(r.body, r.len, 0, NULL);
	ck_assert_msg(r.status == want, "%s %s: status %ld, want %ld: %.400s", method, path, r.status, want,
		      r.body ? r.body : "");
	if (want >= 400) {
		ck_assert_str_eq(r.ctype, "application/problem+json");
		ck_assert_int_eq(json_integer_value(json_object_get(r.j, "status")), want);
		ck_assert_ptr_nonnull(json_string_value(json_object_get(r.j, "detail")));
	}
	return r;
}

static struct gresp gw_json(const char *key, const char *method, const char *path, const char *body, long want)
{
	return gw(key, method, path, NULL, NULL, body, body ? strlen(body) : 0, NULL, NULL, want);
}

static const char *field_of(const struct gresp *r)
{
	return jstr(r->j, "field");
}

static void validate_records(void)
{
	char out[420];
	snprintf(out, sizeof out, "%s.out", records);
	int rc = tu_system("node scripts/openapi-validate.mjs openapi/mimir.yaml %s >%s 2>&1", records, out);
	char *text = tu_read_file(out, NULL);
	ck_assert_msg(rc == 0, "responses do not match openapi/mimir.yaml:\n%.3000s", text ? text : "");
	ck_assert_ptr_nonnull(strstr(text, "valid against"));
	fprintf(stderr, "   %s", text);
	free(text);
}

/* ---- the test as the client (common/clientio) ---- */

struct client {
	const char *key, *sid;
	char gid[40], psid[REG_PARTY_SESSION_HEX + 1];
	uint8_t pk[NP][CIO_KEY_BYTES], csk[CIO_KEY_BYTES], cpk[CIO_KEY_BYTES];
	const int *prompt;
	int np;
	uint32_t slots, n_in, n_out;
	struct cio_client *cl;
	uint64_t tok[64];
	size_t ntok;
	uint64_t last_id, ids_seen, first_id;
	bool id_gap, input_sent, done, error;
	bool no_input; /* a replay: the masks are not answered again */
	char error_type[96], error_detail[400];
	int hang_up_after; /* tokens; 0: never (-1: right after masks) */
	char event_names[2048];
};

/* The parties' sealing keys from the gateway's session view. */
static void client_init(struct client *c, const char *key, const char *sid, const struct tu_ref_case *rc,
			uint32_t n_out)
{
	memset(c, 0, sizeof *c);
	c->key = key;
	c->sid = sid;
	char path[96];
	snprintf(path, sizeof path, "/v1/sessions/%s", sid);
	struct gresp r = gw_json(key, "GET", path, NULL, 200);
	json_t *ps = json_object_get(r.j, "parties");
	ck_assert_uint_eq(json_array_size(ps), NP);
	ck_assert_int_eq(json_integer_value(json_object_get(r.j, "pad_bucket")), PAD);
	for (int i = 0; i < NP; i++) {
		size_t got = 0;
		const char *hex = jstr(json_array_get(ps, (size_t)i), "sealing_key");
		ck_assert(sodium_hex2bin(c->pk[i], 32, hex, strlen(hex), NULL, &got, NULL) == 0 && got == 32);
	}
	gresp_free(&r);
	ck_assert_int_eq(reg_party_session_id(sid, c->psid), 0);
	ck_assert_int_eq(cio_keypair(c->cpk, c->csk), 0);
	c->prompt = rc->pids;
	c->np = rc->np;
	c->slots = (uint32_t)((rc->np + PAD - 1) / PAD * PAD);
	c->n_in = c->slots * V + c->slots;
	c->n_out = n_out;
}

static void client_free(struct client *c)
{
	cio_client_free(c->cl);
	sodium_memzero(c->csk, sizeof c->csk);
}

static void feed_parts(struct client *c, json_t *ev)
{
	json_t *parts = json_object_get(ev, "parts");
	ck_assert_uint_eq(json_array_size(parts), NP);
	for (size_t i = 0; i < NP; i++) {
		json_t *p = json_array_get(parts, i);
		ck_assert_int_eq(json_integer_value(json_object_get(p, "party")), (json_int_t)i);
		const char *m = jstr(p, "message");
		size_t cap = strlen(m), len = 0;
		uint8_t *bin = malloc(cap + 1);
		ck_assert_int_eq(sodium_base642bin(bin, cap + 1, m, cap, NULL, &len, NULL, sodium_base64_VARIANT_ORIGINAL), 0);
		int rc = cio_client_feed(c->cl, bin, len);
		ck_assert_msg(rc == 0, "the client refused party %zu's part: %s", i, cio_client_why(c->cl));
		free(bin);
	}
}

static void send_input(struct client *c)
{
	uint64_t *x = calloc(c->n_in, sizeof *x);
	size_t pad = c->slots - (size_t)c->np;
	for (size_t i = 0; i < c->slots; i++) {
		int t = i < pad ? 1 : c->prompt[i - pad];
		x[i * V + (size_t)t] = 1;
		x[(size_t)c->slots * V + i] = i >= pad;
	}
	uint8_t *in = NULL;
	size_t len = 0;
	ck_assert_int_eq(cio_client_input(c->cl, x, c->n_in, &in, &len), 0);
	free(x);
	char path[200];
	snprintf(path, sizeof path, "/v1/sessions/%s/generations/%s/input", c->sid, c->gid);
	struct gresp r = gw(c->key, "POST", path, NULL, "application/octet-stream", in, len, NULL, NULL, 202);
	ck_assert_str_eq(jstr(r.j, "id"), c->gid);
	gresp_free(&r);
	free(in);
	c->input_sent = true;
}

static int client_event(const struct sse_event *ev, void *arg)
{
	struct client *c = arg;
	uint64_t id = 0;
	ck_assert_msg(ev->id && sse_parse_last_id(ev->id, &id) == 0, "an event without an id");
	if (c->last_id && id != c->last_id + 1)
		c->id_gap = true;
	if (!c->first_id)
		c->first_id = id;
	c->last_id = id;
	c->ids_seen++;
	size_t l = strlen(c->event_names);
	snprintf(c->event_names + l, sizeof c->event_names - l, "%s%s", l ? " " : "", ev->event);
	json_t *j = json_loadb(ev->data, ev->data_len, 0, NULL);
	ck_assert_msg(j, "event %s: not JSON", ev->event);
	if (!strcmp(ev->event, "generation")) {
		snprintf(c->gid, sizeof c->gid, "%s", jstr(j, "id"));
		ck_assert_str_eq(jstr(j, "session"), c->sid);
		ck_assert_int_eq(json_integer_value(json_object_get(j, "parties")), NP);
	} else if (!strcmp(ev->event, "masks")) {
		struct cio_client_params cp = {.nparties = NP, .party_pk = (const uint8_t(*)[CIO_KEY_BYTES])c->pk,
					       .n_in = c->n_in, .n_out = c->n_out};
		size_t got;
		sodium_hex2bin(cp.session, 16, c->psid, 32, NULL, &got, NULL);
		sodium_hex2bin(cp.generation, 16, c->gid, 32, NULL, &got, NULL);
		memcpy(cp.client_sk, c->csk, 32);
		ck_assert_int_eq(cio_client_new(&cp, &c->cl), 0);
		feed_parts(c, j);
		json_decref(j);
		if (c->hang_up_after < 0)
			return 1;
		if (!c->no_input)
			send_input(c);
		return 0;
	} else if (!strcmp(ev->event, "receipt") || !strcmp(ev->event, "token")) {
		feed_parts(c, j);
		size_t n = 0;
		ck_assert_int_eq(cio_client_take(c->cl, c->tok + c->ntok, 64 - c->ntok, &n), 0);
		c->ntok += n;
	} else if (!strcmp(ev->event, "done")) {
		c->done = true;
		ck_assert_int_eq(json_integer_value(json_object_get(j, "tokens")), c->n_out);
		ck_assert_str_eq(jstr(j, "reason"), "max_tokens");
		ck_assert_int_eq(json_integer_value(json_object_get(json_object_get(j, "usage"), "prompt_slots")), c->slots);
	} else if (!strcmp(ev->event, "error")) {
		c->error = true;
		snprintf(c->error_type, sizeof c->error_type, "%s", jstr(j, "type"));
		snprintf(c->error_detail, sizeof c->error_detail, "%s", jstr(j, "detail"));
	}
	json_decref(j);
	return c->hang_up_after > 0 && c->ntok >= (size_t)c->hang_up_after;
}

static const char *gen_body(const struct client *c, char *out, size_t cap)
{
	char ck[65];
	sodium_bin2hex(ck, sizeof ck, c->cpk, 32);
	snprintf(out, cap, "{\"client_key\": \"%s\", \"slots\": %u, \"max_tokens\": %u, \"sampling\": {\"temperature\": 0}}",
		 ck, c->slots, c->n_out);
	return out;
}

static const struct tu_ref_case *once_upon(void)
{
	static struct tu_ref_case c[TU_REF_MAX];
	int n = tu_ref_load(c, TU_REF_MAX, NULL);
	for (int i = 0; i < n; i++)
		if (!strcmp(c[i].prompt, PROMPT))
			return &c[i];
	ck_abort_msg("no \"" PROMPT "\" case in the models README");
	return NULL;
}

/* A metric of the gateway (scraped with the admin certificate), or -1. */
static double gw_metric(const char *line_prefix)
{
	struct httpc *c = as("admin", gw_svc.url, IDENT_ROLE_GATEWAY);
	struct httpc_resp r;
	ck_assert_int_eq(httpc_request(c, "GET", "/metrics", NULL, NULL, NULL, 0, &r), 0);
	double v = -1;
	size_t pl = strlen(line_prefix);
	for (char *l = r.body; l && *l; l = strchr(l, '\n') ? strchr(l, '\n') + 1 : NULL)
		if (strncmp(l, line_prefix, pl) == 0 && l[pl] == ' ')
			v = strtod(l + pl + 1, NULL);
	httpc_resp_free(&r);
	httpc_free(c);
	return v;
}

/* The CLI with the environment's key; returns its exit status, output in files. */
static int run_cli(const char *key, const char *sid, int tokens, const char *extra, const char *tag)
{
	char bin[512];
	tu_build(bin, sizeof bin, "bin/mimir");
	return tu_system("MIMIR_API_KEY='%s' %s generate --gateway %s --ca %s/ca.crt --session %s --tokens %d %s '%s'"
			 " >%s/%s.out 2>%s/%s.err",
			 key, bin, gw_svc.url, pki, sid, tokens, extra ? extra : "", PROMPT, run, tag, run, tag);
}

static char *run_file(const char *tag, const char *ext)
{
	char path[400];
	snprintf(path, sizeof path, "%s/%s.%s", run, tag, ext);
	char *t = tu_read_file(path, NULL);
	ck_assert_msg(t, "cannot read %s", path);
	return t;
}

/* ---- tests ---- */

/* The property of the issue: `mimir generate` through the gateway prints exactly what
 * mimir-ref prints for the greedy tokens of "Once upon a time". */
START_TEST(test_cli_matches_reference)
{
	const int ntok = tu_quick() ? 3 : 8;
	char sid[32], key[96], st[32];
	create_session(512, sid);
	create_key(sid, key);
	open_session(sid, 512);
	ck_assert_str_eq(registry_state(sid, st, sizeof st), "ready");
	char ref[512];
	tu_build(ref, sizeof ref, "bin/mimir-ref");
	ck_assert_int_eq(tu_system("%s --prompt '%s' --tokens %d >%s/ref.out 2>/dev/null", ref, PROMPT, ntok, run), 0);
	int64_t t0 = now_ms();
	int rc = run_cli(key, sid, ntok, NULL, "cli");
	int64_t ms = now_ms() - t0;
	char *out = run_file("cli", "out"), *err = run_file("cli", "err"), *want = run_file("ref", "out");
	ck_assert_msg(rc == 0, "mimir generate exited %d:\n%s", rc, err);
	ck_assert_msg(!strcmp(out, want), "mimir generate printed\n%s\nmimir-ref printed\n%s", out, want);
	printf("generate: %d greedy tokens through the gateway equal mimir-ref's in %.1f s: %s", ntok, ms / 1e3, out);
	printf("generate: %s", err);
	free(out);
	free(err);
	free(want);
	/* the first generation made the session active; the gateway counted it */
	ck_assert_str_eq(registry_state(sid, st, sizeof st), "active");
	for (int i = 0; i < 50 && gw_metric("mimir_gateway_generations_total{outcome=\"done\"}") != 1; i++)
		usleep(100 * 1000);
	ck_assert_double_eq(gw_metric("mimir_gateway_generations_total{outcome=\"done\"}"), 1);
	ck_assert_double_eq(gw_metric("mimir_gateway_tokens_total"), ntok);
	/* --ids gives the reference ids */
	const struct tu_ref_case *rcs = once_upon();
	ck_assert_int_eq(run_cli(key, sid, 2, "--ids --quiet", "ids"), 0);
	char *ids = run_file("ids", "out"), expect[64];
	snprintf(expect, sizeof expect, "%d %d\n", rcs->gids[0], rcs->gids[1]);
	ck_assert_str_eq(ids, expect);
	free(ids);
}
END_TEST

/* The streaming POST, as a browser or curl client would use it: the client drops the
 * connection after its first token and reattaches with Last-Event-ID; it gets exactly
 * the events after that id (consecutive ids, nothing repeated, nothing lost) and the
 * reference tokens. A finished generation can still be replayed. */
START_TEST(test_stream_resume)
{
	const struct tu_ref_case *rc = once_upon();
	const uint32_t ntok = tu_quick() ? 3 : 4;
	char sid[32], key[96], body[512], path[200];
	create_session(512, sid);
	create_key(sid, key);
	open_session(sid, 512);
	struct client c;
	client_init(&c, key, sid, rc, ntok);
	c.hang_up_after = 1;
	snprintf(path, sizeof path, "/v1/sessions/%s/generations", sid);
	gen_body(&c, body, sizeof body);
	struct gresp r = gw(key, "POST", path, NULL, NULL, body, strlen(body), client_event, &c, 200);
	ck_assert_str_eq(r.ctype, SSE_CONTENT_TYPE);
	char loc[200];
	snprintf(loc, sizeof loc, "/v1/sessions/%s/generations/%s", sid, c.gid);
	ck_assert_str_eq(hdr(&r, "location"), loc);
	ck_assert_str_eq(hdr(&r, "cache-control"), "no-cache");
	gresp_free(&r);
	ck_assert_msg(!c.done && c.ntok >= 1, "the client had %zu tokens when it hung up (%s)", c.ntok, c.event_names);
	ck_assert(!c.id_gap);
	uint64_t resumed_after = c.last_id;
	printf("generate: hung up after event %llu (%s)\n", (unsigned long long)resumed_after, c.event_names);
	/* reattach */
	char last[64];
	snprintf(last, sizeof last, "Last-Event-ID: %llu", (unsigned long long)resumed_after);
	const char *h[] = {last, NULL};
	snprintf(path, sizeof path, "/v1/sessions/%s/generations/%s/events", sid, c.gid);
	c.hang_up_after = 0;
	c.first_id = 0;
	c.event_names[0] = '\0';
	r = gw(key, "GET", path, h, NULL, NULL, 0, client_event, &c, 200);
	gresp_free(&r);
	printf("generate: resumed with events %llu..%llu (%s)\n", (unsigned long long)c.first_id,
	       (unsigned long long)c.last_id, c.event_names);
	ck_assert_uint_eq(c.first_id, resumed_after + 1);
	ck_assert(!c.id_gap);
	ck_assert_msg(c.done && !c.error, "the generation did not end with done: %s %s", c.event_names,
		      c.error_detail);
	ck_assert_uint_eq(c.ntok, ntok);
	for (uint32_t i = 0; i < ntok; i++)
		ck_assert_msg(c.tok[i] == (uint64_t)rc->gids[i], "token %u: %llu, expected %d", i,
			      (unsigned long long)c.tok[i], rc->gids[i]);
	/* the generation's view; a replay of a finished generation; bad resumption ids */
	snprintf(path, sizeof path, "/v1/sessions/%s/generations/%s", sid, c.gid);
	r = gw_json(key, "GET", path, NULL, 200);
	ck_assert_str_eq(jstr(r.j, "state"), "done");
	ck_assert_int_eq(json_integer_value(json_object_get(r.j, "tokens")), ntok);
	ck_assert_int_eq(json_integer_value(json_object_get(r.j, "last_event_id")), c.last_id);
	gresp_free(&r);
	snprintf(path, sizeof path, "/v1/sessions/%s/generations/%s/events", sid, c.gid);
	const char *from1[] = {"Last-Event-ID: 1", NULL};
	r = gw(key, "GET", path, from1, NULL, NULL, 0, NULL, NULL, 200);
	ck_assert_ptr_nonnull(strstr(r.body, "id: 2\nevent: masks\n"));
	ck_assert_ptr_null(strstr(r.body, "event: generation"));
	ck_assert_ptr_nonnull(strstr(r.body, "event: done\n"));
	gresp_free(&r);
	const char *beyond[] = {"Last-Event-ID: 999", NULL}, *junk[] = {"Last-Event-ID: 1x", NULL};
	r = gw(key, "GET", path, beyond, NULL, NULL, 0, NULL, NULL, 400);
	ck_assert_str_eq(field_of(&r), "Last-Event-ID");
	gresp_free(&r);
	r = gw(key, "GET", path, junk, NULL, NULL, 0, NULL, NULL, 400);
	gresp_free(&r);
	ck_assert_double_eq(gw_metric("mimir_gateway_stream_resumes_total"), 2);
	client_free(&c);
	validate_records();
}
END_TEST

/* What the gateway refuses, and the CLI's exit status for each; a sealing key the party
 * does not hold is caught by the client; a cancel ends a generation at every party. */
START_TEST(test_refusals_and_cancel)
{
	const struct tu_ref_case *rcs = once_upon();
	char sid[32], key[96], other_sid[32], other_key[96], key2[96], body[512], path[200];
	create_session(512, sid);
	create_key(sid, key);
	create_key(sid, key2);
	create_session(64, other_sid);
	create_key(other_sid, other_key);
	char cl[96];
	snprintf(cl, sizeof cl, "/v1/sessions/%s/close", other_sid);
	json_decref(mcall("admin", session_svc.url, IDENT_ROLE_SESSION, "POST", cl, "{\"reason\": \"over\"}", 200,
			  NULL));
	open_session(sid, 512);
	struct client c;
	client_init(&c, key, sid, rcs, 4);
	snprintf(path, sizeof path, "/v1/sessions/%s/generations", sid);
	gen_body(&c, body, sizeof body);
	/* credentials */
	struct gresp r = gw_json(NULL, "POST", path, body, 401);
	ck_assert_ptr_nonnull(hdr(&r, "www-authenticate"));
	gresp_free(&r);
	char forged[96];
	snprintf(forged, sizeof forged, "%.26sAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA", key);
	r = gw_json(forged, "POST", path, body, 401);
	gresp_free(&r);
	r = gw_json(other_key, "POST", path, body, 403);
	gresp_free(&r);
	r = gw_json(key, "POST", "/v1/sessions/ses_zz/generations", body, 404);
	ck_assert_str_eq(field_of(&r), "id");
	gresp_free(&r);
	/* bodies */
	r = gw(key, "POST", path, NULL, "text/plain", body, strlen(body), NULL, NULL, 415);
	gresp_free(&r);
	r = gw_json(key, "POST", path, "{\"slots\": 8, \"max_tokens\": 4}", 400);
	ck_assert_str_eq(field_of(&r), "client_key");
	gresp_free(&r);
	char ck[65], bad[512];
	sodium_bin2hex(ck, sizeof ck, c.cpk, 32);
	snprintf(bad, sizeof bad, "{\"client_key\": \"%s\", \"slots\": 5, \"max_tokens\": 4}", ck);
	r = gw_json(key, "POST", path, bad, 400);
	ck_assert_str_eq(field_of(&r), "slots");
	gresp_free(&r);
	snprintf(bad, sizeof bad, "{\"client_key\": \"%s\", \"slots\": 8, \"max_tokens\": 600}", ck);
	r = gw_json(key, "POST", path, bad, 400);
	ck_assert_str_eq(field_of(&r), "max_tokens");
	gresp_free(&r);
	snprintf(bad, sizeof bad, "{\"client_key\": \"%s\", \"slots\": 8, \"max_tokens\": 4, \"stream\": true}", ck);
	r = gw_json(key, "POST", path, bad, 400);
	ck_assert_str_eq(field_of(&r), "stream");
	gresp_free(&r);
	/* a session that is over */
	char opath[200];
	snprintf(opath, sizeof opath, "/v1/sessions/%s/generations", other_sid);
	r = gw_json(other_key, "POST", opath, body, 409);
	ck_assert_msg(strstr(jstr(r.j, "detail"), "the session is closed (over)"), "%s", jstr(r.j, "detail"));
	gresp_free(&r);
	/* the CLI's statuses */
	ck_assert_int_eq(run_cli(forged, sid, 4, NULL, "forged"), 4);
	ck_assert_int_eq(run_cli(other_key, sid, 4, NULL, "other"), 4);
	ck_assert_int_eq(run_cli(other_key, other_sid, 4, NULL, "closed"), 6);
	ck_assert_int_eq(run_cli(key, sid, 600, NULL, "toolong"), 7);
	char *err = run_file("toolong", "err");
	ck_assert_msg(strstr(err, "exceeds the session's context"), "%s", err);
	free(err);

	/* A generation started for JSON (201), its INPUT refused for shape, another key's
	 * view of it refused, then cancelled: every party ends it with an error event. */
	const char *acc[] = {"Accept: application/json", NULL};
	r = gw(key, "POST", path, acc, NULL, body, strlen(body), NULL, NULL, 201);
	snprintf(c.gid, sizeof c.gid, "%s", jstr(r.j, "id"));
	ck_assert_str_eq(jstr(r.j, "session"), sid);
	ck_assert_int_eq(json_integer_value(json_object_get(r.j, "slots")), c.slots);
	char gpath[256];
	snprintf(gpath, sizeof gpath, "%s/%s", path, c.gid);
	ck_assert_str_eq(hdr(&r, "location"), gpath);
	gresp_free(&r);
	r = gw_json(key, "POST", path, body, 409); /* one generation at a time per session */
	gresp_free(&r);
	char ipath[300];
	snprintf(ipath, sizeof ipath, "%s/input", gpath);
	r = gw(key, "POST", ipath, NULL, "application/json", "{}", 2, NULL, NULL, 415);
	ck_assert_str_eq(field_of(&r), "Content-Type");
	gresp_free(&r);
	r = gw(key, "POST", ipath, NULL, "application/octet-stream", "0123456789", 10, NULL, NULL, 400);
	gresp_free(&r);
	r = gw_json(key2, "GET", gpath, NULL, 404);
	ck_assert_str_eq(field_of(&r), "g");
	gresp_free(&r);
	r = gw_json(other_key, "GET", gpath, NULL, 403);
	gresp_free(&r);
	char cpath[300];
	snprintf(cpath, sizeof cpath, "%s/cancel", gpath);
	r = gw_json(key, "POST", cpath, NULL, 202);
	gresp_free(&r);
	snprintf(ipath, sizeof ipath, "%s/events", gpath);
	c.hang_up_after = 0;
	c.no_input = true;
	r = gw(key, "GET", ipath, NULL, NULL, NULL, 0, client_event, &c, 200); /* ends with the error */
	gresp_free(&r);
	ck_assert_msg(c.error, "no error event after the cancel: %s", c.event_names);
	ck_assert_str_eq(c.error_type, "urn:mimir:problem:cancelled");
	r = gw_json(key, "POST", cpath, NULL, 409);
	gresp_free(&r);
	r = gw_json(key, "GET", gpath, NULL, 200);
	ck_assert_str_eq(jstr(r.j, "state"), "cancelled");
	gresp_free(&r);
	for (int k = 0; k < NP; k++) {
		char st[32], pp[160];
		snprintf(pp, sizeof pp, "/v1/sessions/%s/generations/%s", c.psid, c.gid);
		json_t *pg = mcall("admin", party[k].url, IDENT_ROLE_PARTY, "GET", pp, NULL, 200, NULL);
		ck_assert_str_eq(jstr(pg, "state"), "cancelled");
		json_decref(pg);
		ck_assert_str_eq(party_state(k, c.psid, st, sizeof st), "ready");
	}

	/* The registry lists for party 1 a sealing key it does not hold: the client refuses
	 * its MASKS before anything of the prompt leaves. */
	uint8_t pk[32], sk[32];
	char hex[65], pbody[128], ppath[64];
	crypto_box_keypair(pk, sk);
	sodium_bin2hex(hex, sizeof hex, pk, 32);
	snprintf(pbody, sizeof pbody, "{\"sealing_key\": \"%s\"}", hex);
	snprintf(ppath, sizeof ppath, "/v1/parties/%s", party_id[1]);
	json_decref(mcall("admin", session_svc.url, IDENT_ROLE_SESSION, "PATCH", ppath, pbody, 200, NULL));
	ck_assert_int_eq(run_cli(key, sid, 2, NULL, "wrongkey"), 11);
	err = run_file("wrongkey", "err");
	ck_assert_msg(strstr(err, "party 1's MASKS do not verify"), "%s", err);
	free(err);
	client_free(&c);
	validate_records();
}
END_TEST

/* A client that goes away (here right after the masks, before its INPUT, when no event
 * would reveal it for a minute) has its generation cancelled at every party. */
START_TEST(test_client_disconnect_cancels)
{
	const struct tu_ref_case *rcs = once_upon();
	char sid[32], key[96], body[512], path[200];
	create_session(512, sid);
	create_key(sid, key);
	open_session(sid, 512);
	struct client c;
	client_init(&c, key, sid, rcs, 4);
	c.hang_up_after = -1;
	snprintf(path, sizeof path, "/v1/sessions/%s/generations", sid);
	gen_body(&c, body, sizeof body);
	struct gresp r = gw(key, "POST", path, NULL, NULL, body, strlen(body), client_event, &c, 200);
	gresp_free(&r);
	int64_t t0 = now_ms();
	ck_assert_msg(c.cl && !c.input_sent, "%s", c.event_names);
	char pp[160];
	snprintf(pp, sizeof pp, "/v1/sessions/%s/generations/%s", c.psid, c.gid);
	for (int k = 0; k < NP; k++) {
		for (;;) {
			json_t *pg = mcall("admin", party[k].url, IDENT_ROLE_PARTY, "GET", pp, NULL, 200, NULL);
			bool over = !strcmp(jstr(pg, "state"), "cancelled");
			ck_assert_msg(over || !strcmp(jstr(pg, "state"), "awaiting_input") || !strcmp(jstr(pg, "state"), "masking"),
				      "party %d: %s", k, jstr(pg, "state"));
			json_decref(pg);
			if (over)
				break;
			ck_assert_msg(now_ms() - t0 < 20000, "party %d still waits for the vanished client", k);
			usleep(200 * 1000);
		}
	}
	printf("generate: a client gone before its INPUT: cancelled at every party %lld ms after it hung up\n",
	       (long long)(now_ms() - t0));
	ck_assert(tu_file_contains(gw_svc.log, "gateway.generation_abandoned", 5000));
	for (int i = 0; i < 50 && gw_metric("mimir_gateway_generations_abandoned_total") != 1; i++)
		usleep(100 * 1000);
	ck_assert_double_eq(gw_metric("mimir_gateway_generations_abandoned_total"), 1);
	char st[32];
	for (int k = 0; k < NP; k++)
		ck_assert_str_eq(party_state(k, c.psid, st, sizeof st), "ready");
	snprintf(path, sizeof path, "/v1/sessions/%s/generations/%s", sid, c.gid);
	r = gw_json(key, "GET", path, NULL, 200);
	ck_assert_str_eq(jstr(r.j, "state"), "cancelled");
	gresp_free(&r);
	client_free(&c);
	validate_records();
}
END_TEST

/* ---- the OpenAI-compatible API ---- */

/* The continuation mimir-ref prints after PROMPT for ntok greedy tokens. */
static char *ref_continuation(int ntok)
{
	char ref[512];
	tu_build(ref, sizeof ref, "bin/mimir-ref");
	ck_assert_int_eq(tu_system("%s --prompt '%s' --tokens %d >%s/oref.out 2>/dev/null", ref, PROMPT, ntok, run), 0);
	char *t = run_file("oref", "out");
	size_t l = strlen(t);
	if (l && t[l - 1] == '\n')
		t[--l] = '\0';
	ck_assert(!strncmp(t, PROMPT, strlen(PROMPT)));
	memmove(t, t + strlen(PROMPT), l - strlen(PROMPT) + 1);
	return t;
}

struct ochunks {
	char text[4096];
	int chunks, done, errors;
	char finish[32];
	json_int_t usage_completion;
	bool after_done;
};

static int on_ochunk(const struct sse_event *ev, void *arg)
{
	struct ochunks *o = arg;
	if (o->done)
		o->after_done = true;
	if (ev->data_len == 6 && !memcmp(ev->data, "[DONE]", 6)) {
		o->done++;
		return 0;
	}
	json_t *j = json_loadb(ev->data, ev->data_len, 0, NULL);
	ck_assert_msg(j, "a stream chunk that is not JSON: %.*s", (int)ev->data_len, ev->data);
	if (json_object_get(j, "error")) {
		o->errors++;
	} else {
		ck_assert_str_eq(jstr(j, "object"), "text_completion");
		ck_assert_int_eq(strncmp(jstr(j, "id"), "cmpl-", 5), 0);
		json_t *c = json_array_get(json_object_get(j, "choices"), 0);
		const char *t = json_string_value(json_object_get(c, "text"));
		if (t)
			strncat(o->text, t, sizeof o->text - strlen(o->text) - 1);
		const char *f = json_string_value(json_object_get(c, "finish_reason"));
		if (f)
			snprintf(o->finish, sizeof o->finish, "%s", f);
		json_t *u = json_object_get(j, "usage");
		if (u)
			o->usage_completion = json_integer_value(json_object_get(u, "completion_tokens"));
		o->chunks++;
	}
	json_decref(j);
	return 0;
}

/* One completion, not streamed: its text (caller frees) and finish reason. */
static char *complete(const char *key, const char *sid, int ntok, const char *extra, char finish[32])
{
	char body[512];
	snprintf(body, sizeof body, "{\"model\": \"%s\", \"prompt\": \"%s\", \"max_tokens\": %d, \"temperature\": 0%s}",
		 sid, PROMPT, ntok, extra ? extra : "");
	struct gresp r = gw_json(key, "POST", "/v1/completions", body, 200);
	ck_assert_str_eq(jstr(r.j, "object"), "text_completion");
	ck_assert_str_eq(jstr(r.j, "model"), sid);
	json_t *c = json_array_get(json_object_get(r.j, "choices"), 0);
	json_t *u = json_object_get(r.j, "usage");
	ck_assert_int_eq(json_integer_value(json_object_get(u, "prompt_tokens")), once_upon()->np);
	ck_assert_int_eq(json_integer_value(json_object_get(u, "total_tokens")),
			 json_integer_value(json_object_get(u, "prompt_tokens")) +
				 json_integer_value(json_object_get(u, "completion_tokens")));
	snprintf(finish, 32, "%s", jstr(c, "finish_reason"));
	char *t = strdup(jstr(c, "text"));
	gresp_free(&r);
	return t;
}

static void complete_stream(const char *key, const char *sid, int ntok, struct ochunks *o)
{
	char body[512];
	memset(o, 0, sizeof *o);
	snprintf(body, sizeof body,
		 "{\"model\": \"%s\", \"prompt\": [\"%s\"], \"max_tokens\": %d, \"temperature\": 0, \"stream\": true,"
		 " \"stream_options\": {\"include_usage\": true}}",
		 sid, PROMPT, ntok);
	struct gresp r = gw(key, "POST", "/v1/completions", NULL, NULL, body, strlen(body), on_ochunk, o, 200);
	ck_assert_msg(strstr(r.ctype, "text/event-stream"), "%s", r.ctype);
	gresp_free(&r);
}

/* Plaintext mode at a gateway (openai.sessions) and mimir proxy on the client's machine
 * serve the OpenAI API: greedy completions, streamed and not, equal mimir-ref's
 * continuation; a stop sequence cuts the text; what Mimir cannot honour is refused; a
 * gateway without the mode answers 404. Every answer validates against the OpenAPI
 * document. */
START_TEST(test_openai)
{
	const int ntok = tu_quick() ? 3 : 6;
	char sid[32], key[96], json[4096], tok[400], fin[32];
	create_session(512, sid);
	create_key(sid, key);
	open_session(sid, 512);
	char *want = ref_continuation(ntok);
	tu_shared(tok, sizeof tok, "models/tok512.bin");

	/* off by default */
	struct gresp r = gw_json(key, "GET", "/v1/models", NULL, 404);
	gresp_free(&r);

	/* a second gateway, in plaintext mode for this session */
	struct tu_svc gw2;
	snprintf(json, sizeof json,
		 "{\"http\": {\"port\": 0, \"threads\": 4},"
		 " \"tls\": {\"cert\": \"%s/gateway.crt\", \"key\": \"%s/gateway.key\", \"ca\": \"%s/ca.crt\"},"
		 " \"session\": {\"url\": \"%s\", \"ca\": \"%s/ca.crt\", \"cert\": \"%s/gateway.crt\","
		 " \"key\": \"%s/gateway.key\"}, \"parties\": {\"timeout_ms\": 20000, \"connect_timeout_ms\": 10000},"
		 " \"stream\": {\"heartbeat_ms\": 500}, \"openai\": {\"sessions\": \"%s\", \"tokenizer\": \"%s\"}}",
		 pki, pki, pki, session_svc.url, pki, pki, pki, sid, tok);
	ck_assert_msg(tu_svc_start(&gw2, run, "mimir-gateway", "gateway2", json, NULL) == 0, "see %s", gw2.log);
	gw_base = gw2.url;
	r = gw_json(key, "GET", "/v1/models", NULL, 200);
	ck_assert_str_eq(jstr(r.j, "object"), "list");
	ck_assert_str_eq(jstr(json_array_get(json_object_get(r.j, "data"), 0), "id"), sid);
	gresp_free(&r);
	r = gw_json(NULL, "GET", "/v1/models", NULL, 401);
	ck_assert_ptr_nonnull(json_object_get(json_object_get(r.j, "error"), "message"));
	gresp_free(&r);
	int64_t t0 = now_ms();
	char *text = complete(key, sid, ntok, NULL, fin);
	ck_assert_msg(!strcmp(text, want), "the gateway's completion %s, mimir-ref's %s", text, want);
	ck_assert_str_eq(fin, "length");
	printf("openai: gateway plaintext mode, %d greedy tokens equal mimir-ref's in %.1f s:%s\n", ntok,
	       (now_ms() - t0) / 1e3, text);
	free(text);
	struct ochunks o;
	complete_stream(key, sid, ntok, &o);
	ck_assert_msg(!strcmp(o.text, want), "streamed %s, mimir-ref %s", o.text, want);
	ck_assert_int_eq(o.done, 1);
	ck_assert(!o.after_done);
	ck_assert_int_eq(o.errors, 0);
	ck_assert_str_eq(o.finish, "length");
	ck_assert_int_eq(o.usage_completion, ntok);
	/* refusals, before any generation */
	static const char *const bad[][2] = {
		{"\"n\": 2", "n"}, {"\"logprobs\": 3", "logprobs"}, {"\"top_p\": 0.5", "top_p"},
		{"\"max_tokens\": 0", "max_tokens"}, {"\"stop\": [\"a\", \"b\", \"c\", \"d\", \"e\"]", "stop"},
	};
	for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
		char body[256];
		snprintf(body, sizeof body, "{\"model\": \"%s\", \"prompt\": \"x\", %s}", sid, bad[i][0]);
		r = gw_json(key, "POST", "/v1/completions", body, 400);
		ck_assert_str_eq(field_of(&r), bad[i][1]);
		ck_assert_str_eq(jstr(json_object_get(r.j, "error"), "param"), bad[i][1]);
		gresp_free(&r);
	}
	r = gw_json(key, "POST", "/v1/completions", "{\"model\": \"ses_0000000000000000\", \"prompt\": \"x\"}", 404);
	ck_assert_str_eq(jstr(json_object_get(r.j, "error"), "code"), "model_not_found");
	gresp_free(&r);
	r = gw_json(NULL, "POST", "/v1/completions", "{\"model\": \"x\", \"prompt\": 5}", 400);
	gresp_free(&r);
	char forged[96];
	snprintf(forged, sizeof forged, "%s", key);
	forged[strlen(forged) - 1] = forged[strlen(forged) - 1] == 'A' ? 'B' : 'A';
	snprintf(json, sizeof json, "{\"model\": \"%s\", \"prompt\": \"x\"}", sid);
	r = gw_json(forged, "POST", "/v1/completions", json, 401);
	gresp_free(&r);
	gw_base = NULL;
	tu_svc_stop(&gw2);
	assert_clean_log(gw2.log);

	/* mimir proxy on the client's machine, against the gateway under test */
	char bin[512], portf[400], plog[400], listen[] = "127.0.0.1:0", url[64];
	tu_build(bin, sizeof bin, "bin/mimir");
	snprintf(portf, sizeof portf, "%s/proxy.port", run);
	snprintf(plog, sizeof plog, "%s/proxy.log", run);
	char cafile[400];
	snprintf(cafile, sizeof cafile, "%s/ca.crt", pki);
	setenv("MIMIR_API_KEY", key, 1);
	char *argv[] = {bin, "proxy", "--listen", listen, "--gateway", gw_svc.url, "--session", sid, "--ca", cafile,
			"--tokenizer", tok, "--port-file", portf, NULL};
	struct tu_proc proxy;
	ck_assert_int_eq(tu_proc_start(&proxy, argv, plog), 0);
	unsetenv("MIMIR_API_KEY");
	ck_assert_msg(tu_wait_file(portf, 8000) == 0, "the proxy did not start: see %s", plog);
	char *port = tu_read_file(portf, NULL);
	snprintf(url, sizeof url, "http://127.0.0.1:%ld", strtol(port, NULL, 10));
	free(port);
	gw_base = url;
	r = gw_json("sk-anything", "GET", "/v1/models", NULL, 200); /* the proxy's own key is used */
	ck_assert_str_eq(jstr(json_array_get(json_object_get(r.j, "data"), 0), "id"), sid);
	gresp_free(&r);
	t0 = now_ms();
	text = complete(NULL, sid, ntok, NULL, fin);
	ck_assert_msg(!strcmp(text, want), "the proxy's completion %s, mimir-ref's %s", text, want);
	printf("openai: mimir proxy, %d greedy tokens equal mimir-ref's in %.1f s:%s\n", ntok, (now_ms() - t0) / 1e3,
	       text);
	free(text);
	complete_stream(NULL, sid, ntok, &o);
	ck_assert_msg(!strcmp(o.text, want), "streamed by the proxy %s, mimir-ref %s", o.text, want);
	ck_assert_int_eq(o.done, 1);
	/* a stop sequence: the text ends before it, finish "stop" */
	const char *cut = strchr(want + 1, ' ');
	if (cut) {
		char stop[64], extra[128];
		snprintf(stop, sizeof stop, "%.*s", (int)(strlen(cut) < 4 ? strlen(cut) : 4), cut);
		snprintf(extra, sizeof extra, ", \"stop\": \"%s\"", stop);
		text = complete(NULL, sid, ntok, extra, fin);
		ck_assert_msg(!strncmp(text, want, (size_t)(cut - want)) && strlen(text) == (size_t)(cut - want),
			      "stop %s: got '%s' from '%s'", stop, text, want);
		ck_assert_str_eq(fin, "stop");
		free(text);
	}
	gw_base = NULL;
	ck_assert_int_eq(tu_proc_stop(&proxy, SIGTERM, 15000), 0);
	free(want);
	validate_records();
}
END_TEST

/* kill -9 of a party while the CLI streams: the client gets an error event naming what
 * failed and exits 10, within a bound, not a hang. */
START_TEST(test_party_killed_mid_stream)
{
	char sid[32], key[96], bin[512], cmd[2048], outp[400];
	create_session(512, sid);
	create_key(sid, key);
	open_session(sid, 512);
	tu_build(bin, sizeof bin, "bin/mimir");
	snprintf(outp, sizeof outp, "%s/killed.out", run);
	snprintf(cmd, sizeof cmd,
		 "MIMIR_API_KEY='%s' exec %s generate --gateway %s --ca %s/ca.crt --session %s --tokens 16 '%s'"
		 " >%s 2>%s/killed.err",
		 key, bin, gw_svc.url, pki, sid, PROMPT, outp, run);
	char *argv[] = {"/bin/sh", "-c", cmd, NULL};
	struct tu_proc p;
	ck_assert_int_eq(tu_proc_start(&p, argv, NULL), 0);
	int64_t t0 = now_ms();
	for (;;) { /* the first token is out: more than the prompt printed */
		size_t len = 0;
		char *t = tu_read_file(outp, &len);
		free(t);
		if (len > strlen(PROMPT))
			break;
		ck_assert_msg(now_ms() - t0 < 300000, "no token after 300 s");
		usleep(100 * 1000);
	}
	kill(party[2].proc.pid, SIGKILL);
	waitpid(party[2].proc.pid, NULL, 0);
	party_up[2] = false;
	int64_t killed = now_ms();
	int st = -1;
	while (waitpid(p.pid, &st, WNOHANG) == 0) {
		ck_assert_msg(now_ms() - killed < round_ms + 20000, "the client still waits %lld ms after the kill",
			      (long long)(now_ms() - killed));
		usleep(100 * 1000);
	}
	char *err = run_file("killed", "err");
	printf("generate: party 2 killed mid-stream: the client ended %lld ms later: %s",
	       (long long)(now_ms() - killed), err);
	ck_assert_msg(WIFEXITED(st) && WEXITSTATUS(st) == 10, "exit %d: %s", WEXITSTATUS(st), err);
	ck_assert_msg(strstr(err, "the generation ended after"), "%s", err);
	free(err);
}
END_TEST

/* The one mapping from a registry session id to the parties' (registry.h), against a
 * value computed with Python's hashlib. */
START_TEST(test_party_session_id)
{
	char out[REG_PARTY_SESSION_HEX + 1];
	ck_assert_int_eq(reg_party_session_id("ses_0123456789abcdef", out), 0);
	ck_assert_str_eq(out, "e93af35d71b29d5126dfa1c71e1666c6");
	ck_assert_int_eq(reg_party_session_id("ses_2a6bf2643a52603e", out), 0);
	ck_assert_str_eq(out, "b2a92faba9dc2c3724d9bef9892e8832");
	ck_assert_int_eq(reg_party_session_id("ses_0123456789ABCDEF", out), ERR_INVALID);
	ck_assert_int_eq(reg_party_session_id("mdl_0123456789abcdef", out), ERR_INVALID);
	ck_assert_int_eq(reg_party_session_id(NULL, out), ERR_INVALID);
}
END_TEST

Suite *suite(void)
{
	Suite *s = suite_create("generate");
	TCase *id = tcase_create("ids");
	tcase_add_test(id, test_party_session_id);
	suite_add_tcase(s, id);
	TCase *tc = tcase_create("generate");
	tcase_add_unchecked_fixture(tc, setup_once, teardown_once);
	tcase_add_checked_fixture(tc, setup, teardown);
	tcase_set_timeout(tc, 1500);
	tcase_add_test(tc, test_cli_matches_reference);
	tcase_add_test(tc, test_stream_resume);
	tcase_add_test(tc, test_refusals_and_cancel);
	tcase_add_test(tc, test_client_disconnect_cancels);
	tcase_add_test(tc, test_party_killed_mid_stream);
	suite_add_tcase(s, tc);
	TCase *oa = tcase_create("openai");
	tcase_add_unchecked_fixture(oa, setup_once, teardown_once);
	tcase_add_checked_fixture(oa, setup, teardown);
	tcase_set_timeout(oa, 900);
	tcase_add_test(oa, test_openai);
	suite_add_tcase(s, oa);
	return s;
}
