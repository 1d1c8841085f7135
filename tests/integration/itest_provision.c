/* provision: the real session service tells the real dealer about its sessions. A
 * session created in the registry appears at the dealer with its parties' pinned
 * certificates in share order, and disappears there (seeds and pools wiped) when it is
 * closed; a session whose party has no pinned certificate fails with a reason that
 * says so; a restarted session service adopts what the dealer already has instead of
 * posting it again; the provisioner's requests are counted in /metrics. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <sodium.h>

#include "httpc/httpc.h"
#include "mnet/mnet.h"
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

Suite *suite(void)
{
	Suite *s = suite_create("provision");
	TCase *tc = tcase_create("core");
	tcase_add_checked_fixture(tc, setup, teardown);
	tcase_set_timeout(tc, 120);
	tcase_add_test(tc, test_dealer_follows_the_registry);
	tcase_add_test(tc, test_unpinned_party_fails_the_session);
	suite_add_tcase(s, tc);
	return s;
}
