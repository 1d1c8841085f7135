/* provision: the real session service tells the real dealer and the real parties about
 * its sessions. A session created in the registry appears at the dealer with its
 * parties' pinned certificates in share order, and disappears there (seeds and pools
 * wiped) when it is closed; a session whose party has no pinned certificate fails with
 * a reason that says so; a restarted session service adopts what the dealer already
 * has instead of posting it again; the provisioner's requests are counted in /metrics.
 *
 * With three real mimir-party processes (share files from the real mimir-model, a dev
 * PKI from the real mimir-pki): a session created through the session service is
 * opened at every party under the id reg_party_session_id derives, the registry
 * becomes `ready` once every party is, with the provisioner's reports in the audit log,
 * and closing it in the registry closes it at the parties; a session service killed
 * (kill -9) while the parties initialise finds them with the session after its restart
 * (409 taken as opened) and still reaches `ready`; a party that fails to initialise
 * fails the session with the party's own words; a party that is down is asked again
 * until it is back (at a new endpoint); parties holding other keys or other fixed-point
 * bits than the session needs are refused before anything is opened. */
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include <sodium.h>

#include "err/err.h"
#include "httpc/httpc.h"
#include "mnet/mnet.h"
#include "mshare/mshare.h"
#include "registry/registry.h"
#include "svcproc.h"
#include "testutil.h"

static char tmp[256], pki[300], db[400];
static struct tu_svc dealer, session;
static char fp_hex[4][65];

static void start_session(void)
{
	char json[4096];
	snprintf(json, sizeof json,
		 "{\"http\": {\"port\": 0, \"threads\": 4},"
		 " \"tls\": {\"cert\": \"%s/session.crt\", \"key\": \"%s/session.key\", \"ca\": \"%s/ca.crt\"},"
		 " \"db\": {\"path\": \"%s\"}, \"keys\": {\"secret_file\": \"%s/session.secret\"},"
		 " \"dealer\": {\"url\": \"%s\", \"ca\": \"%s/ca.crt\", \"cert\": \"%s/session.crt\","
		 " \"key\": \"%s/session.key\", \"timeout_ms\": 3000}}",
		 pki, pki, pki, db, tmp, dealer.url, pki, pki, pki);
	ck_assert_int_eq(tu_svc_start(&session, tmp, "mimir-session", "session", json, NULL), 0);
}

static void setup(void)
{
	ck_assert_int_ge(sodium_init(), 0);
	tu_tmpdir(tmp, sizeof tmp);
	snprintf(pki, sizeof pki, "%s/pki", tmp);
	snprintf(db, sizeof db, "%s/session.db", tmp);
	ck_assert_int_eq(tu_pki(tmp, "dev --parties 4 --out %s", pki), 0);
	for (int i = 0; i < 4; i++) {
		char crt[400];
		uint8_t fp[32];
		snprintf(crt, sizeof crt, "%s/party%d.crt", pki, i);
		ck_assert_int_eq(mnet_cert_fingerprint(crt, fp), 0);
		sodium_bin2hex(fp_hex[i], sizeof fp_hex[i], fp, sizeof fp);
	}
	char json[2048];
	snprintf(json, sizeof json,
		 "{\"http\": {\"port\": 0, \"threads\": 4},"
		 " \"tls\": {\"cert\": \"%s/dealer.crt\", \"key\": \"%s/dealer.key\", \"ca\": \"%s/ca.crt\"},"
		 " \"pool\": {\"workers\": 1}}",
		 pki, pki, pki);
	ck_assert_int_eq(tu_svc_start(&dealer, tmp, "mimir-dealer", "dealer", json, NULL), 0);
	start_session();
}

static void teardown(void)
{
	tu_svc_stop(&session);
	tu_svc_stop(&dealer);
	tu_rmrf(tmp);
}

/* One request; asserts the status; returns the JSON body (NULL when empty). */
static json_t *call(struct httpc *c, const char *method, const char *path, const char *body,
		    long want)
{
	struct httpc_resp r;
	int rc = httpc_request(c, method, path, NULL, body ? "application/json" : NULL, body,
			       body ? strlen(body) : 0, &r);
	ck_assert_msg(rc == 0, "%s %s: %s", method, path, r.error);
	ck_assert_msg(r.status == want, "%s %s: %ld, want %ld: %s", method, path, r.status, want,
		      r.body);
	json_t *j = r.len ? json_loadb(r.body, r.len, 0, NULL) : NULL;
	httpc_resp_free(&r);
	return j;
}

/* The status of GET path, without asserting it. */
static long status_of(struct httpc *c, const char *path)
{
	struct httpc_resp r;
	long st = httpc_request(c, "GET", path, NULL, NULL, NULL, 0, &r) == 0 ? r.status : 0;
	httpc_resp_free(&r);
	return st;
}

/* Waits up to ms for GET path to answer want. */
static bool wait_status(struct httpc *c, const char *path, long want, int ms)
{
	for (int t = 0; t < ms; t += 100) {
		if (status_of(c, path) == want)
			return true;
		usleep(100 * 1000);
	}
	return false;
}

/* A model with 3 shares; parties party0..party3, party3 without a pinned certificate.
 * Writes the model id and the party ids. */
static void fixtures(struct httpc *admin, char *model, size_t cap, char pid[4][32])
{
	char body[2048];
	snprintf(body, sizeof body,
		 "{\"name\": \"stories260K\", \"dims\": {\"dim\": 64, \"hidden_dim\": 172, \"n_layers\": 5,"
		 " \"n_heads\": 8, \"n_kv_heads\": 4, \"vocab_size\": 512, \"seq_len\": 512},"
		 " \"shares\": [\"%064d\", \"%064d\", \"%064d\"]}", 1, 2, 3);
	json_t *m = call(admin, "POST", "/v1/models", body, 201);
	snprintf(model, cap, "%s", json_string_value(json_object_get(m, "id")));
	json_decref(m);
	for (int i = 0; i < 4; i++) {
		uint8_t pk[32], sk[32];
		char hex[65], pin[400] = "";
		crypto_box_keypair(pk, sk);
		sodium_bin2hex(hex, sizeof hex, pk, sizeof pk);
		if (i < 3)
			snprintf(pin, sizeof pin, ", \"cert_fingerprint\": \"%s\"", fp_hex[i]);
		snprintf(body, sizeof body,
			 "{\"identity\": \"party%d\", \"sealing_key\": \"%s\", \"endpoint\": "
			 "\"https://localhost:9000\"%s}", i, hex, pin);
		json_t *p = call(admin, "POST", "/v1/parties", body, 201);
		snprintf(pid[i], 32, "%s", json_string_value(json_object_get(p, "id")));
		json_decref(p);
	}
}

static json_t *new_session(struct httpc *admin, const char *model, const char *p0, const char *p1,
			   const char *p2)
{
	char body[512];
	snprintf(body, sizeof body,
		 "{\"model\": \"%s\", \"parties\": [\"%s\", \"%s\", \"%s\"], \"ttl_s\": 600}", model, p0,
		 p1, p2);
	return call(admin, "POST", "/v1/sessions", body, 201);
}

START_TEST(test_dealer_follows_the_registry)
{
	struct httpc *admin = tu_client(pki, "admin", session.url, IDENT_ROLE_SESSION),
		     *dadmin = tu_client(pki, "admin", dealer.url, IDENT_ROLE_DEALER);
	char model[32], pid[4][32], sid[32], path[128];
	fixtures(admin, model, sizeof model, pid);
	/* parties in a chosen order: the dealer gets the fingerprints in share order */
	json_t *s = new_session(admin, model, pid[2], pid[0], pid[1]);
	snprintf(sid, sizeof sid, "%s", json_string_value(json_object_get(s, "id")));
	json_decref(s);
	snprintf(path, sizeof path, "/v1/sessions/%s", sid);
	ck_assert_msg(wait_status(dadmin, path, 200, 5000), "the dealer never got %s", sid);
	json_t *d = call(dadmin, "GET", path, NULL, 200);
	ck_assert_int_eq(json_integer_value(json_object_get(d, "nparties")), 3);
	json_t *fps = json_object_get(d, "fingerprints");
	ck_assert_str_eq(json_string_value(json_array_get(fps, 0)), fp_hex[2]);
	ck_assert_str_eq(json_string_value(json_array_get(fps, 1)), fp_hex[0]);
	ck_assert_str_eq(json_string_value(json_array_get(fps, 2)), fp_hex[1]);
	json_decref(d);
	/* the party's seed is now there for it: the dealer gives it to party0 (index 1) */
	struct httpc *p0 = tu_client(pki, "party0", dealer.url, IDENT_ROLE_DEALER);
	char seedp[160];
	snprintf(seedp, sizeof seedp, "/v1/sessions/%s/seed?party=1", sid);
	ck_assert_int_eq(status_of(p0, seedp), 200);
	httpc_free(p0);

	/* a restarted session service does not post it again: the dealer keeps one */
	tu_svc_stop(&session);
	start_session();
	httpc_free(admin);
	admin = tu_client(pki, "admin", session.url, IDENT_ROLE_SESSION);
	ck_assert(tu_file_contains(session.log, "session.provisioned", 3000));
	d = call(dadmin, "GET", path, NULL, 200);
	ck_assert(json_is_true(json_array_get(json_object_get(d, "seeds_delivered"), 1)));
	json_decref(d);

	/* closed in the registry: gone at the dealer */
	char cpath[160];
	snprintf(cpath, sizeof cpath, "/v1/sessions/%s/close", sid);
	json_decref(call(admin, "POST", cpath, "{\"reason\": \"done\"}", 200));
	ck_assert_msg(wait_status(dadmin, path, 404, 5000), "the dealer still has %s", sid);
	ck_assert(tu_file_contains(session.log, "session.unprovisioned", 2000));

	/* the provisioner's requests are counted */
	struct httpc *any = tu_client(pki, "admin", session.url, IDENT_ROLE_SESSION);
	struct httpc_resp r;
	ck_assert_int_eq(httpc_request(any, "GET", "/metrics", NULL, NULL, NULL, 0, &r), 0);
	ck_assert_ptr_nonnull(
	    strstr(r.body, "mimir_session_dealer_requests_total{op=\"create\",outcome=\"ok\"}"));
	ck_assert_ptr_nonnull(
	    strstr(r.body, "mimir_session_dealer_requests_total{op=\"delete\",outcome=\"ok\"} 1"));
	httpc_resp_free(&r);
	httpc_free(any);
	httpc_free(admin);
	httpc_free(dadmin);
}
END_TEST

START_TEST(test_unpinned_party_fails_the_session)
{
	struct httpc *admin = tu_client(pki, "admin", session.url, IDENT_ROLE_SESSION),
		     *dadmin = tu_client(pki, "admin", dealer.url, IDENT_ROLE_DEALER);
	char model[32], pid[4][32], sid[32], path[128];
	fixtures(admin, model, sizeof model, pid);
	json_t *s = new_session(admin, model, pid[0], pid[1], pid[3]);
	snprintf(sid, sizeof sid, "%s", json_string_value(json_object_get(s, "id")));
	json_decref(s);
	snprintf(path, sizeof path, "/v1/sessions/%s", sid);
	const char *state = NULL;
	json_t *g = NULL;
	for (int t = 0; t < 50; t++) {
		json_decref(g);
		g = call(admin, "GET", path, NULL, 200);
		state = json_string_value(json_object_get(g, "state"));
		if (strcmp(state, "failed") == 0)
			break;
		usleep(100 * 1000);
	}
	ck_assert_str_eq(state, "failed");
	const char *reason = json_string_value(json_object_get(g, "reason"));
	ck_assert_msg(reason && strstr(reason, "party3") && strstr(reason, "pinned"), "reason: %s",
		      reason);
	json_decref(g);
	ck_assert_int_eq(status_of(dadmin, path), 404);
	httpc_free(admin);
	httpc_free(dadmin);
}
END_TEST

/* ---- with real parties ---- */

#define NP 3

static char ptmp[256], ppki[300], shares[300], run[256];
static struct tu_svc pdealer, psession, party[NP];
static bool party_up[NP], psession_up;
static char pfp[NP][65], dealer_fp[65], sealing_hex[NP][65], share_hex[NP][65];
static unsigned round_ms = 10000, dealer_ms = 4000;
static int wait_ms = 60000; /* for a session to settle */

static int64_t mono_ms(void)
{
	struct timespec ts;
	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

/* Once, in the parent (files survive Check's fork): the PKI, a key pair per party and
 * the three share files of stories260K, their digests and the parties' fingerprints. */
static void parties_once(void)
{
	char bin[512], model[1024], to[1200];
	ck_assert_int_ge(sodium_init(), 0);
	tu_tmpdir(ptmp, sizeof ptmp);
	snprintf(ppki, sizeof ppki, "%s/pki", ptmp);
	snprintf(shares, sizeof shares, "%s/shares", ptmp);
	ck_assert_int_eq(tu_pki(ptmp, "dev --parties %d --out %s", NP, ppki), 0);
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
	char path[400], err[256];
	uint8_t b[32];
	for (int i = 0; i < NP; i++) {
		snprintf(path, sizeof path, "%s/party%d.crt", ppki, i);
		ck_assert_int_eq(mnet_cert_fingerprint(path, b), 0);
		sodium_bin2hex(pfp[i], sizeof pfp[i], b, sizeof b);
		snprintf(path, sizeof path, "%s/party%d.x25519.pub", shares, i);
		ck_assert_int_eq(mshare_key_read(path, false, b, err, sizeof err), 0);
		sodium_bin2hex(sealing_hex[i], sizeof sealing_hex[i], b, sizeof b);
		size_t len = 0;
		snprintf(path, sizeof path, "%s/stories.party%d.mshare", shares, i);
		char *data = tu_read_file(path, &len);
		ck_assert_ptr_nonnull(data);
		crypto_hash_sha256(b, (const uint8_t *)data, len);
		free(data);
		sodium_bin2hex(share_hex[i], sizeof share_hex[i], b, sizeof b);
	}
	snprintf(path, sizeof path, "%s/dealer.crt", ppki);
	ck_assert_int_eq(mnet_cert_fingerprint(path, b), 0);
	sodium_bin2hex(dealer_fp, sizeof dealer_fp, b, sizeof b);
}

static void parties_once_done(void)
{
	tu_rmrf(ptmp);
}

/* Party i (share i, certificate party<i>), logging as name. */
static void start_party(int i, const char *name)
{
	char json[4096];
	snprintf(json, sizeof json,
		 "{\"http\": {\"port\": 0, \"threads\": 4, \"drain_timeout_ms\": 3000},"
		 " \"tls\": {\"cert\": \"%s/party%d.crt\", \"key\": \"%s/party%d.key\", \"ca\": \"%s/ca.crt\"},"
		 " \"mtls\": {\"cert\": \"%s/party%d.crt\", \"key\": \"%s/party%d.key\", \"ca\": \"%s/ca.crt\"},"
		 " \"stream\": {\"port\": 0},"
		 " \"model\": {\"share\": \"%s/stories.party%d.mshare\", \"key\": \"%s/party%d.x25519.key\"},"
		 " \"timeouts\": {\"round_ms\": %u, \"dealer_ms\": %u}}",
		 ppki, i, ppki, i, ppki, ppki, i, ppki, i, ppki, shares, i, shares, i, round_ms, dealer_ms);
	ck_assert_msg(tu_svc_start(&party[i], run, "mimir-party", name, json, NULL) == 0,
		      "party %d did not start; see %s", i, party[i].log);
	party_up[i] = true;
}

static void stop_party(int i)
{
	if (party_up[i])
		tu_svc_stop(&party[i]);
	party_up[i] = false;
}

/* The session service as name, with extra members of its "dealer" and "parties"
 * objects. */
static void start_psession(const char *name, const char *dealer_extra, const char *parties_extra)
{
	char json[4096];
	snprintf(json, sizeof json,
		 "{\"http\": {\"port\": 0, \"threads\": 4},"
		 " \"tls\": {\"cert\": \"%s/session.crt\", \"key\": \"%s/session.key\", \"ca\": \"%s/ca.crt\"},"
		 " \"db\": {\"path\": \"%s/session.db\"}, \"keys\": {\"secret_file\": \"%s/session.secret\"},"
		 " \"dealer\": {\"url\": \"%s\", \"ca\": \"%s/ca.crt\", \"cert\": \"%s/session.crt\","
		 " \"key\": \"%s/session.key\", \"timeout_ms\": 3000%s%s},"
		 " \"parties\": {\"timeout_ms\": 5000, \"init_timeout_ms\": %d%s%s}}",
		 ppki, ppki, ppki, run, run, pdealer.url, ppki, ppki, ppki, dealer_extra ? ", " : "",
		 dealer_extra ? dealer_extra : "", wait_ms, parties_extra ? ", " : "",
		 parties_extra ? parties_extra : "");
	ck_assert_msg(tu_svc_start(&psession, run, "mimir-session", name, json, NULL) == 0,
		      "the session service did not start; see %s", psession.log);
	psession_up = true;
}

static void assert_clean_log(const char *path)
{
	char *text = tu_read_file(path, NULL);
	ck_assert_msg(text && !strstr(text, "Sanitizer") && !strstr(text, "runtime error"),
		      "sanitizer report in %s", path);
	free(text);
}

static void parties_setup(void)
{
	setvbuf(stdout, NULL, _IOLBF, 0);
	if (tu_quick()) /* sanitizers and the second compiler run several times slower */
		round_ms = 30000, dealer_ms = 15000, wait_ms = 180000;
	tu_tmpdir(run, sizeof run);
	char json[2048];
	snprintf(json, sizeof json,
		 "{\"http\": {\"port\": 0, \"threads\": 4},"
		 " \"tls\": {\"cert\": \"%s/dealer.crt\", \"key\": \"%s/dealer.key\", \"ca\": \"%s/ca.crt\"},"
		 " \"pool\": {\"workers\": 1}}",
		 ppki, ppki, ppki);
	ck_assert_int_eq(tu_svc_start(&pdealer, run, "mimir-dealer", "dealer", json, NULL), 0);
	for (int i = 0; i < NP; i++) {
		char name[32];
		snprintf(name, sizeof name, "party%d", i);
		start_party(i, name);
	}
}

static void parties_teardown(void)
{
	if (psession_up) {
		tu_svc_stop(&psession);
		assert_clean_log(psession.log);
		psession_up = false;
	}
	for (int i = 0; i < NP; i++)
		if (party_up[i]) {
			stop_party(i);
			assert_clean_log(party[i].log);
		}
	tu_svc_stop(&pdealer);
	assert_clean_log(pdealer.log);
	tu_rmrf(run);
}

/* The model of the share files and its three parties, as the registry should know
 * them; bad_key: party that index registers a sealing key it does not hold (-1: none). */
static void register_all(struct httpc *admin, char *model, size_t cap, char pid[NP][32], int bad_key)
{
	char body[2048];
	snprintf(body, sizeof body,
		 "{\"name\": \"stories260K\", \"dims\": {\"dim\": 64, \"hidden_dim\": 172, \"n_layers\": 5,"
		 " \"n_heads\": 8, \"n_kv_heads\": 4, \"vocab_size\": 512, \"seq_len\": 512},"
		 " \"shares\": [\"%s\", \"%s\", \"%s\"]}",
		 share_hex[0], share_hex[1], share_hex[2]);
	json_t *m = call(admin, "POST", "/v1/models", body, 201);
	snprintf(model, cap, "%s", json_string_value(json_object_get(m, "id")));
	json_decref(m);
	for (int i = 0; i < NP; i++) {
		char key[65];
		snprintf(key, sizeof key, "%s", sealing_hex[i]);
		if (i == bad_key) {
			uint8_t pk[32], sk[32];
			crypto_box_keypair(pk, sk);
			sodium_bin2hex(key, sizeof key, pk, sizeof pk);
		}
		snprintf(body, sizeof body,
			 "{\"identity\": \"party%d\", \"sealing_key\": \"%s\", \"cert_fingerprint\": \"%s\","
			 " \"endpoint\": \"%s\"}",
			 i, key, pfp[i], party[i].url);
		json_t *p = call(admin, "POST", "/v1/parties", body, 201);
		snprintf(pid[i], 32, "%s", json_string_value(json_object_get(p, "id")));
		json_decref(p);
	}
}

static void create_session(struct httpc *admin, const char *model, char pid[NP][32], const char *extra,
			   char *sid, size_t cap)
{
	char body[512];
	snprintf(body, sizeof body, "{\"model\": \"%s\", \"parties\": [\"%s\", \"%s\", \"%s\"], \"ttl_s\": 600%s%s}",
		 model, pid[0], pid[1], pid[2], extra ? ", " : "", extra ? extra : "");
	json_t *s = call(admin, "POST", "/v1/sessions", body, 201);
	snprintf(sid, cap, "%s", json_string_value(json_object_get(s, "id")));
	json_decref(s);
}

/* Waits until the registry's session leaves `created`; returns it (decref it). */
static json_t *settled(struct httpc *admin, const char *sid)
{
	char path[96];
	snprintf(path, sizeof path, "/v1/sessions/%s", sid);
	int64_t t0 = mono_ms();
	for (;;) {
		json_t *s = call(admin, "GET", path, NULL, 200);
		const char *st = json_string_value(json_object_get(s, "state"));
		if (strcmp(st, "created") != 0)
			return s;
		json_decref(s);
		ck_assert_msg(mono_ms() - t0 < wait_ms, "session %s still created after %d ms", sid, wait_ms);
		usleep(100 * 1000);
	}
}

/* The session's state at party i ("absent" for a 404), its document into *doc. */
static const char *party_state(int i, const char *psid, json_t **doc)
{
	struct httpc *c = tu_client(ppki, "admin", party[i].url, IDENT_ROLE_PARTY);
	char path[96];
	snprintf(path, sizeof path, "/v1/sessions/%s", psid);
	struct httpc_resp r;
	ck_assert_int_eq(httpc_request(c, "GET", path, NULL, NULL, NULL, 0, &r), 0);
	ck_assert_msg(r.status == 200 || r.status == 404, "party %d: %ld", i, r.status);
	json_t *d = r.status == 200 ? json_loadb(r.body, r.len, 0, NULL) : NULL;
	httpc_resp_free(&r);
	httpc_free(c);
	*doc = d;
	return d ? json_string_value(json_object_get(d, "state")) : "absent";
}

/* How many sessions party i holds. */
static size_t party_sessions(int i)
{
	struct httpc *c = tu_client(ppki, "admin", party[i].url, IDENT_ROLE_PARTY);
	json_t *d = call(c, "GET", "/v1/sessions", NULL, 200);
	size_t n = json_array_size(json_object_get(d, "sessions"));
	json_decref(d);
	httpc_free(c);
	return n;
}

static bool parties_absent(const char *psid, int ms)
{
	for (int t = 0; t < ms; t += 100) {
		int absent = 0;
		for (int i = 0; i < NP; i++) {
			json_t *d;
			absent += !strcmp(party_state(i, psid, &d), "absent");
			json_decref(d);
		}
		if (absent == NP)
			return true;
		usleep(100 * 1000);
	}
	return false;
}

/* Closes the session in the registry and waits until no party has it (the parties'
 * workers end before the parties are stopped). */
static void close_everywhere(struct httpc *admin, const char *sid)
{
	char path[160], psid[REG_PARTY_SESSION_HEX + 1];
	snprintf(path, sizeof path, "/v1/sessions/%s/close", sid);
	json_decref(call(admin, "POST", path, NULL, 200));
	ck_assert_int_eq(reg_party_session_id(sid, psid), 0);
	ck_assert_msg(parties_absent(psid, 10000), "a party still has %s", psid);
}

static char *metrics_text(void)
{
	struct httpc *c = tu_client(ppki, "admin", psession.url, IDENT_ROLE_SESSION);
	struct httpc_resp r;
	ck_assert_int_eq(httpc_request(c, "GET", "/metrics", NULL, NULL, NULL, 0, &r), 0);
	char *text = strdup(r.body);
	httpc_resp_free(&r);
	httpc_free(c);
	return text;
}

static int occurrences(const char *path, const char *needle)
{
	char *text = tu_read_file(path, NULL);
	int n = 0;
	for (const char *p = text; p && (p = strstr(p, needle)); p++)
		n++;
	free(text);
	return n;
}

START_TEST(test_party_session_id_known_answer)
{
	/* hashlib.sha256(b"mimir.party-session.v1" + b"ses_0123456789abcdef").hexdigest()[:32] */
	char out[REG_PARTY_SESSION_HEX + 1];
	ck_assert_int_eq(reg_party_session_id("ses_0123456789abcdef", out), 0);
	ck_assert_str_eq(out, "e93af35d71b29d5126dfa1c71e1666c6");
	ck_assert_int_eq(reg_party_session_id("ses_0000000000000000", out), 0);
	ck_assert_str_eq(out, "e7e0044aed51b6e930ac8a1b1f17711f");
	ck_assert_int_eq(reg_party_session_id("ses_0123", out), ERR_INVALID);
	ck_assert_str_eq(out, "");
}
END_TEST

START_TEST(test_parties_follow_the_registry)
{
	start_psession("session", NULL, NULL);
	struct httpc *admin = tu_client(ppki, "admin", psession.url, IDENT_ROLE_SESSION),
		     *dadmin = tu_client(ppki, "admin", pdealer.url, IDENT_ROLE_DEALER);
	char model[32], pid[NP][32], sid[32], psid[REG_PARTY_SESSION_HEX + 1], path[160];
	register_all(admin, model, sizeof model, pid, -1);
	int64_t t0 = mono_ms();
	create_session(admin, model, pid, "\"max_context\": 256, \"pad_bucket\": 8", sid, sizeof sid);
	json_t *s = settled(admin, sid);
	int64_t took = mono_ms() - t0;
	ck_assert_msg(!strcmp(json_string_value(json_object_get(s, "state")), "ready"), "session %s: %s (%s)", sid,
		      json_string_value(json_object_get(s, "state")), json_string_value(json_object_get(s, "reason")));
	for (int i = 0; i < NP; i++)
		ck_assert(json_is_string(json_object_get(json_array_get(json_object_get(s, "parties"), i),
							 "initialised_at")));
	json_decref(s);
	printf("provision: session %s ready in the registry %lld ms after its creation\n", sid, (long long)took);

	/* every party has it, under the derived id, with the session's parameters */
	ck_assert_int_eq(reg_party_session_id(sid, psid), 0);
	for (int i = 0; i < NP; i++) {
		json_t *d;
		ck_assert_str_eq(party_state(i, psid, &d), "ready");
		ck_assert_int_eq(json_integer_value(json_object_get(d, "index")), i);
		ck_assert_int_eq(json_integer_value(json_object_get(d, "nparties")), NP);
		ck_assert_int_eq(json_integer_value(json_object_get(d, "frac_bits")), 16);
		ck_assert_int_eq(json_integer_value(json_object_get(d, "n_ctx")), 256);
		ck_assert_int_eq(json_integer_value(json_object_get(d, "pad")), 8);
		json_decref(d);
		ck_assert_uint_eq(party_sessions(i), 1);
	}

	/* the reports are the provisioner's, one per party, in the audit log */
	json_t *audit = call(admin, "GET", "/v1/audit?limit=500", NULL, 200);
	int reports = 0;
	json_t *e;
	size_t idx;
	json_array_foreach(json_object_get(audit, "items"), idx, e)
	{
		if (!strcmp(json_string_value(json_object_get(e, "action")), "session.party_ready") &&
		    !strcmp(json_string_value(json_object_get(json_object_get(e, "object"), "id")), sid)) {
			ck_assert_str_eq(json_string_value(json_object_get(e, "actor")), "system:provisioner");
			reports++;
		}
	}
	json_decref(audit);
	ck_assert_int_eq(reports, NP);

	char *m = metrics_text();
	ck_assert_msg(strstr(m, "mimir_session_party_requests_total{op=\"open\",outcome=\"ok\"} 3"), "%s", m);
	ck_assert_ptr_nonnull(strstr(m, "mimir_session_party_init_seconds_count 1"));
	free(m);

	/* closed in the registry: closed at every party and at the dealer */
	snprintf(path, sizeof path, "/v1/sessions/%s/close", sid);
	json_decref(call(admin, "POST", path, "{\"reason\": \"done\"}", 200));
	ck_assert_msg(parties_absent(psid, 10000), "a party still has %s", psid);
	snprintf(path, sizeof path, "/v1/sessions/%s", sid);
	ck_assert(wait_status(dadmin, path, 404, 5000));
	ck_assert(tu_file_contains(psession.log, "session.party_closed", 2000));
	for (int i = 0; i < NP; i++)
		ck_assert_uint_eq(party_sessions(i), 0);
	httpc_free(admin);
	httpc_free(dadmin);
}
END_TEST

/* kill -9 while the parties initialise: the restarted service finds the session at the
 * parties (409, taken as opened) and reports them; nobody holds it twice. */
START_TEST(test_restart_while_initialising)
{
	start_psession("session", NULL, NULL);
	struct httpc *admin = tu_client(ppki, "admin", psession.url, IDENT_ROLE_SESSION);
	char model[32], pid[NP][32], sid[32], psid[REG_PARTY_SESSION_HEX + 1];
	register_all(admin, model, sizeof model, pid, -1);
	create_session(admin, model, pid, NULL, sid, sizeof sid);
	int64_t t0 = mono_ms();
	while (occurrences(psession.log, "session.party_opened") < NP) {
		ck_assert_msg(mono_ms() - t0 < wait_ms, "the session was not opened at the parties");
		usleep(5 * 1000);
	}
	tu_proc_stop(&psession.proc, SIGKILL, 5000);
	psession_up = false;
	httpc_free(admin);
	ck_assert_int_eq(reg_party_session_id(sid, psid), 0);
	/* restarted, this time with the dealer's certificate pinned by configuration */
	char pin[120];
	snprintf(pin, sizeof pin, "\"pin\": \"%s\"", dealer_fp);
	start_psession("session2", pin, NULL);
	admin = tu_client(ppki, "admin", psession.url, IDENT_ROLE_SESSION);
	json_t *s = settled(admin, sid);
	ck_assert_msg(!strcmp(json_string_value(json_object_get(s, "state")), "ready"), "session: %s (%s)",
		      json_string_value(json_object_get(s, "state")), json_string_value(json_object_get(s, "reason")));
	json_decref(s);
	ck_assert_int_eq(occurrences(psession.log, "session.party_opened"), NP);
	ck_assert_int_eq(occurrences(psession.log, "outcome=existing"), NP);
	for (int i = 0; i < NP; i++) {
		json_t *d;
		ck_assert_str_eq(party_state(i, psid, &d), "ready");
		json_decref(d);
		ck_assert_uint_eq(party_sessions(i), 1);
	}
	close_everywhere(admin, sid);
	httpc_free(admin);
}
END_TEST

/* A party that cannot initialise (the dealer URL it is given leads nowhere) fails the
 * session with the party's own detail; the parties are then told to forget it. */
START_TEST(test_party_failure_fails_the_session)
{
	start_psession("session", NULL, "\"dealer_url\": \"https://localhost:1\"");
	struct httpc *admin = tu_client(ppki, "admin", psession.url, IDENT_ROLE_SESSION);
	char model[32], pid[NP][32], sid[32], psid[REG_PARTY_SESSION_HEX + 1];
	register_all(admin, model, sizeof model, pid, -1);
	create_session(admin, model, pid, NULL, sid, sizeof sid);
	json_t *s = settled(admin, sid);
	const char *reason = json_string_value(json_object_get(s, "reason"));
	ck_assert_str_eq(json_string_value(json_object_get(s, "state")), "failed");
	ck_assert_msg(strstr(reason, "failed to initialise") && strstr(reason, "dealer"), "reason: %s", reason);
	printf("provision: a party that cannot reach the dealer: \"%s\"\n", reason);
	json_decref(s);
	ck_assert_int_eq(reg_party_session_id(sid, psid), 0);
	ck_assert_msg(parties_absent(psid, 10000), "a party still has the failed session");
	httpc_free(admin);
}
END_TEST

/* A party that is down is asked again every tick; once it is back (at a new endpoint,
 * which the administrator updates), the session becomes ready. */
START_TEST(test_party_down_then_back)
{
	start_psession("session", NULL, NULL);
	struct httpc *admin = tu_client(ppki, "admin", psession.url, IDENT_ROLE_SESSION);
	char model[32], pid[NP][32], sid[32], path[160], body[256];
	register_all(admin, model, sizeof model, pid, -1);
	stop_party(2);
	create_session(admin, model, pid, NULL, sid, sizeof sid);
	ck_assert(tu_file_contains(psession.log, "session.party_retry", 10000));
	snprintf(path, sizeof path, "/v1/sessions/%s", sid);
	json_t *s = call(admin, "GET", path, NULL, 200);
	ck_assert_str_eq(json_string_value(json_object_get(s, "state")), "created");
	json_decref(s);
	for (int i = 0; i < 2; i++)
		ck_assert_uint_eq(party_sessions(i), 0); /* nobody is opened while one is missing */
	start_party(2, "party2b");
	snprintf(path, sizeof path, "/v1/parties/%s", pid[2]);
	snprintf(body, sizeof body, "{\"endpoint\": \"%s\"}", party[2].url);
	json_decref(call(admin, "PATCH", path, body, 200));
	s = settled(admin, sid);
	ck_assert_msg(!strcmp(json_string_value(json_object_get(s, "state")), "ready"), "session: %s (%s)",
		      json_string_value(json_object_get(s, "state")), json_string_value(json_object_get(s, "reason")));
	json_decref(s);
	close_everywhere(admin, sid);
	httpc_free(admin);
}
END_TEST

/* What the parties publish must match the session: a party holding another key than
 * the registry has, or shares with other fixed-point bits, is refused before any party
 * is opened, with a reason that says what to change. */
START_TEST(test_mismatches_refused)
{
	start_psession("session", NULL, NULL);
	struct httpc *admin = tu_client(ppki, "admin", psession.url, IDENT_ROLE_SESSION);
	char model[32], pid[NP][32], sid[32];
	register_all(admin, model, sizeof model, pid, 1);
	create_session(admin, model, pid, NULL, sid, sizeof sid);
	json_t *s = settled(admin, sid);
	const char *reason = json_string_value(json_object_get(s, "reason"));
	ck_assert_str_eq(json_string_value(json_object_get(s, "state")), "failed");
	ck_assert_msg(strstr(reason, "party1") && strstr(reason, "sealing_key"), "reason: %s", reason);
	json_decref(s);

	char path[160], body[256];
	snprintf(path, sizeof path, "/v1/parties/%s", pid[1]);
	snprintf(body, sizeof body, "{\"sealing_key\": \"%s\"}", sealing_hex[1]);
	json_decref(call(admin, "PATCH", path, body, 200));
	create_session(admin, model, pid, "\"fixed_point_bits\": 12", sid, sizeof sid);
	s = settled(admin, sid);
	reason = json_string_value(json_object_get(s, "reason"));
	ck_assert_str_eq(json_string_value(json_object_get(s, "state")), "failed");
	ck_assert_msg(strstr(reason, "fractional bits") && strstr(reason, "16"), "reason: %s", reason);
	json_decref(s);
	for (int i = 0; i < NP; i++)
		ck_assert_uint_eq(party_sessions(i), 0);
	httpc_free(admin);
}
END_TEST

Suite *suite(void)
{
	Suite *s = suite_create("provision");
	TCase *tc = tcase_create("core");
	tcase_add_checked_fixture(tc, setup, teardown);
	tcase_set_timeout(tc, 120);
	tcase_add_test(tc, test_dealer_follows_the_registry);
	tcase_add_test(tc, test_unpinned_party_fails_the_session);
	tcase_add_test(tc, test_party_session_id_known_answer);
	suite_add_tcase(s, tc);
	TCase *pc = tcase_create("parties");
	tcase_add_unchecked_fixture(pc, parties_once, parties_once_done);
	tcase_add_checked_fixture(pc, parties_setup, parties_teardown);
	tcase_set_timeout(pc, 600);
	tcase_add_test(pc, test_parties_follow_the_registry);
	tcase_add_test(pc, test_restart_while_initialising);
	tcase_add_test(pc, test_party_failure_fails_the_session);
	tcase_add_test(pc, test_party_down_then_back);
	tcase_add_test(pc, test_mismatches_refused);
	suite_add_tcase(s, pc);
	return s;
}
