/* Integration: the real mimir-session binary over mutual TLS on a loopback port, with
 * certificates from the real mimir-pki, driven through httpc. Proves the registry's
 * promises from the outside: the administrator's whole flow (models, parties,
 * sessions through their state machine with the parties reporting initialisation,
 * keys shown once and verified by the gateway, the audit log and its verification),
 * refusals by role, bad input answered 400 naming the field, unknown objects 404,
 * every acknowledged write present after kill -9 in the middle of a stream of writes,
 * sessions and keys surviving a restart, a read-only database answered with clear
 * errors and left intact, tampering with the database file detected through the API,
 * and clear start-up failures. */
#define _GNU_SOURCE
#include <pthread.h>
#include <signal.h>
#include <sqlite3.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include <sodium.h>

#include "err/err.h"
#include "httpc/httpc.h"
#include "svcproc.h"
#include "testutil.h"

static char tmp[256], pki[300];

struct svc {
	struct tu_svc s;
	char db[400];
};
static struct svc main_svc;

/* The configuration of service `name` with its database db. */
static void config_json(const char *name, const char *db, char *json, size_t cap)
{
	snprintf(json, cap,
		 "{\"http\": {\"port\": 0, \"threads\": 4, \"idle_timeout_s\": 5},"
		 " \"tls\": {\"cert\": \"%s/session.crt\", \"key\": \"%s/session.key\", \"ca\": \"%s/ca.crt\"},"
		 " \"db\": {\"path\": \"%s\", \"connections\": 4},"
		 " \"keys\": {\"secret_file\": \"%s/%s.secret\"},"
		 " \"sessions\": {\"sweep_interval_s\": 1, \"max_ttl_s\": 86400}}",
		 pki, pki, pki, db, tmp, name);
}

/* Starts mimir-session as `name`, optionally under a wrapper (argv prefix). */
static int svc_start_wrapped(struct svc *s, const char *name, const char *db, char *const *wrap)
{
	char json[2048];
	snprintf(s->db, sizeof s->db, "%s", db);
	config_json(name, db, json, sizeof json);
	return tu_svc_start(&s->s, tmp, "mimir-session", name, json, wrap);
}

static int svc_start(struct svc *s, const char *name, const char *db)
{
	return svc_start_wrapped(s, name, db, NULL);
}

static void svc_stop(struct svc *s)
{
	tu_svc_stop(&s->s);
}

static void setup(void)
{
	ck_assert_int_ge(sodium_init(), 0);
	tu_tmpdir(tmp, sizeof tmp);
	snprintf(pki, sizeof pki, "%s/pki", tmp);
	ck_assert_int_eq(tu_pki(tmp, "dev --out %s", pki), 0);
	char db[400];
	snprintf(db, sizeof db, "%s/main.db", tmp);
	ck_assert_int_eq(svc_start(&main_svc, "main", db), 0);
}

static void teardown(void)
{
	svc_stop(&main_svc);
	tu_rmrf(tmp);
}

/* A client with the named certificate of the dev PKI, expecting the session role. */
static struct httpc *client_at(const char *name, const char *url)
{
	return tu_client(pki, name, url, IDENT_ROLE_SESSION);
}

static struct httpc *client_as(const char *name)
{
	return client_at(name, main_svc.s.url);
}

/* One request; asserts the status; returns the JSON body (NULL for an empty one). */
static json_t *call_h(struct httpc *c, const char *method, const char *path, const char *const *hdrs,
		      const char *body, long want)
{
	struct httpc_resp r;
	int rc = httpc_request(c, method, path, hdrs, body ? "application/json" : NULL, body,
			       body ? strlen(body) : 0, &r);
	ck_assert_msg(rc == 0, "%s %s: transport error %s", method, path, r.error);
	ck_assert_msg(r.status == want, "%s %s: status %ld, want %ld: %s", method, path, r.status, want,
		      r.body);
	json_t *j = r.len ? json_loadb(r.body, r.len, 0, NULL) : NULL;
	ck_assert_msg(!r.len || j, "%s %s: body is not JSON: %s", method, path, r.body);
	if (want >= 400) {
		ck_assert_str_eq(r.content_type, "application/problem+json");
		ck_assert_int_eq(json_integer_value(json_object_get(j, "status")), want);
		ck_assert_str_eq(json_string_value(json_object_get(j, "request_id")), r.request_id);
		ck_assert_ptr_nonnull(json_string_value(json_object_get(j, "detail")));
	}
	httpc_resp_free(&r);
	return j;
}

static json_t *call(struct httpc *c, const char *method, const char *path, const char *body, long want)
{
	return call_h(c, method, path, NULL, body, want);
}

static const char *str(json_t *j, const char *key)
{
	const char *s = json_string_value(json_object_get(j, key));
	ck_assert_msg(s != NULL, "no string %s", key);
	return s;
}

static void hexrand(char *out, size_t bytes)
{
	uint8_t b[64];
	randombytes_buf(b, bytes);
	sodium_bin2hex(out, 2 * bytes + 1, b, bytes);
}

static json_t *create_model(struct httpc *c, const char *name, int shares)
{
	char body[1024], list[600] = "";
	for (int i = 0; i < shares; i++) {
		char h[65];
		hexrand(h, 32);
		size_t l = strlen(list);
		snprintf(list + l, sizeof list - l, "%s\"%s\"", i ? ", " : "", h);
	}
	snprintf(body, sizeof body,
		 "{\"name\": \"%s\", \"dims\": {\"dim\": 64, \"hidden_dim\": 172, \"n_layers\": 5,"
		 " \"n_heads\": 8, \"n_kv_heads\": 4, \"vocab_size\": 512, \"seq_len\": 512},"
		 " \"shares\": [%s]}", name, list);
	return call(c, "POST", "/v1/models", body, 201);
}

static json_t *create_party(struct httpc *c, const char *identity, long want)
{
	uint8_t pk[32], sk[32];
	char hex[65], body[512];
	crypto_box_keypair(pk, sk);
	sodium_bin2hex(hex, sizeof hex, pk, sizeof pk);
	snprintf(body, sizeof body,
		 "{\"identity\": \"%s\", \"sealing_key\": \"%s\", \"endpoint\": \"https://localhost:9000\","
		 " \"attestation\": {\"platform\": \"simulated\"}}", identity, hex);
	return call(c, "POST", "/v1/parties", body, want);
}

/* Model and parties party0..2 exist once per service; returns a fresh session. */
static json_t *create_session(struct httpc *c, const char *model_id)
{
	char body[256];
	snprintf(body, sizeof body, "{\"model\": \"%s\", \"ttl_s\": 3600}", model_id);
	return call(c, "POST", "/v1/sessions", body, 201);
}

static void ensure_parties(struct httpc *c)
{
	json_t *l = call(c, "GET", "/v1/parties?limit=500", NULL, 200);
	for (int i = 0; i < 3; i++) {
		char id[24];
		snprintf(id, sizeof id, "party%d", i);
		bool have = false;
		size_t k;
		json_t *v;
		json_array_foreach(json_object_get(l, "items"), k, v)
			have = have || strcmp(str(v, "identity"), id) == 0;
		if (!have)
			json_decref(create_party(c, id, 201));
	}
	json_decref(l);
}

START_TEST(test_admin_flow)
{
	struct httpc *admin = client_as("admin");
	json_t *m = create_model(admin, "stories260K", 3);
	char model[32], path[160], body[512];
	snprintf(model, sizeof model, "%s", str(m, "id"));
	ck_assert_int_eq(json_array_size(json_object_get(m, "shares")), 3);
	ck_assert_int_eq(json_integer_value(json_object_get(json_object_get(m, "dims"), "seq_len")), 512);
	json_decref(m);
	ensure_parties(admin);
	/* The registry picks the parties; the session starts created. */
	json_t *s = create_session(admin, model);
	char sid[32];
	snprintf(sid, sizeof sid, "%s", str(s, "id"));
	ck_assert_str_eq(str(s, "state"), "created");
	ck_assert_int_eq(json_integer_value(json_object_get(s, "fixed_point_bits")), 16);
	json_t *parties = json_object_get(s, "parties");
	ck_assert_int_eq(json_array_size(parties), 3);
	for (size_t i = 0; i < 3; i++) {
		json_t *p = json_array_get(parties, i);
		ck_assert_int_eq(strlen(str(p, "sealing_key")), 64);
		ck_assert_str_eq(str(json_object_get(p, "attestation"), "platform"), "simulated");
		ck_assert(json_is_null(json_object_get(p, "initialised_at")));
	}
	json_decref(s);
	/* Each party reports; the last report makes it ready. */
	snprintf(path, sizeof path, "/v1/sessions/%s/init", sid);
	for (int i = 0; i < 3; i++) {
		char who[24];
		snprintf(who, sizeof who, "party%d", i);
		struct httpc *pc = client_as(who);
		s = call(pc, "POST", path, "{\"status\": \"ready\"}", 200);
		ck_assert_str_eq(str(s, "state"), i < 2 ? "created" : "ready");
		ck_assert_int_eq(json_integer_value(json_object_get(json_object_get(s, "initialised"), "ready")),
				 i + 1);
		json_decref(s);
		/* A party may read the session it serves. */
		snprintf(path, sizeof path, "/v1/sessions/%s", sid);
		json_decref(call(pc, "GET", path, NULL, 200));
		snprintf(path, sizeof path, "/v1/sessions/%s/init", sid);
		httpc_free(pc);
	}
	/* The gateway activates it on behalf of an administrator, as the audit log says. */
	struct httpc *gw = client_as("gateway");
	const char *behalf[] = {"X-Mimir-Actor: alice", NULL};
	snprintf(path, sizeof path, "/v1/sessions/%s/transition", sid);
	s = call_h(gw, "POST", path, behalf, "{\"to\": \"active\", \"from\": \"ready\"}", 200);
	ck_assert_str_eq(str(s, "state"), "active");
	json_decref(s);
	json_decref(call(gw, "POST", path, "{\"to\": \"active\", \"from\": \"ready\"}", 409));
	/* A key, shown once, verified by the gateway, revoked. */
	snprintf(body, sizeof body, "{\"sessions\": [\"%s\"], \"name\": \"demo\", \"ttl_s\": 600}", sid);
	json_t *k = call(admin, "POST", "/v1/keys", body, 201);
	char key[128], kid[32];
	snprintf(key, sizeof key, "%s", str(k, "key"));
	snprintf(kid, sizeof kid, "%s", str(k, "id"));
	ck_assert_str_eq(str(k, "state"), "active");
	json_decref(k);
	snprintf(path, sizeof path, "/v1/keys/%s", kid);
	k = call(admin, "GET", path, NULL, 200);
	ck_assert_ptr_null(json_object_get(k, "key")); /* never again */
	json_decref(k);
	snprintf(body, sizeof body, "{\"key\": \"%s\", \"session\": \"%s\"}", key, sid);
	json_t *v = call(gw, "POST", "/v1/keys/verify", body, 200);
	ck_assert(json_is_true(json_object_get(v, "valid")));
	ck_assert_str_eq(str(v, "key_id"), kid);
	json_decref(v);
	snprintf(body, sizeof body, "{\"key\": \"%s\", \"session\": \"ses_0000000000000000\"}", key);
	v = call(gw, "POST", "/v1/keys/verify", body, 200);
	ck_assert_str_eq(str(v, "reason"), "wrong-session");
	json_decref(v);
	v = call(gw, "POST", "/v1/keys/verify", "{\"key\": \"sk-not-ours\"}", 200);
	ck_assert(json_is_false(json_object_get(v, "valid")));
	ck_assert_str_eq(str(v, "reason"), "malformed");
	json_decref(v);
	snprintf(path, sizeof path, "/v1/keys/%s/revoke", kid);
	k = call(admin, "POST", path, NULL, 200);
	ck_assert_str_eq(str(k, "state"), "revoked");
	json_decref(k);
	snprintf(body, sizeof body, "{\"key\": \"%s\", \"session\": \"%s\"}", key, sid);
	v = call(gw, "POST", "/v1/keys/verify", body, 200);
	ck_assert_str_eq(str(v, "reason"), "revoked");
	json_decref(v);
	snprintf(path, sizeof path, "/v1/keys?session=%s", sid);
	json_t *l = call(admin, "GET", path, NULL, 200);
	ck_assert_int_eq(json_array_size(json_object_get(l, "items")), 1);
	json_decref(l);
	/* Party update: suspend with a pin, back to active. */
	l = call(admin, "GET", "/v1/parties?status=active&limit=1", NULL, 200);
	char pid[32];
	snprintf(pid, sizeof pid, "%s", str(json_array_get(json_object_get(l, "items"), 0), "id"));
	ck_assert(json_is_string(json_object_get(l, "next")));
	json_decref(l);
	snprintf(path, sizeof path, "/v1/parties/%s", pid);
	char fp[65];
	hexrand(fp, 32);
	snprintf(body, sizeof body, "{\"status\": \"suspended\", \"cert_fingerprint\": \"%s\"}", fp);
	json_t *p = call(admin, "PATCH", path, body, 200);
	ck_assert_str_eq(str(p, "status"), "suspended");
	ck_assert_str_eq(str(p, "cert_fingerprint"), fp);
	json_decref(p);
	p = call(admin, "PATCH", path, "{\"status\": \"active\", \"cert_fingerprint\": \"\"}", 200);
	ck_assert(json_is_null(json_object_get(p, "cert_fingerprint")));
	json_decref(p);
	/* Close; a closed session cannot come back. */
	snprintf(path, sizeof path, "/v1/sessions/%s/close", sid);
	s = call(admin, "POST", path, "{\"reason\": \"demo over\"}", 200);
	ck_assert_str_eq(str(s, "state"), "closed");
	ck_assert_str_eq(str(s, "reason"), "demo over");
	json_decref(s);
	json_decref(call(admin, "POST", path, NULL, 200)); /* closing twice is fine */
	snprintf(path, sizeof path, "/v1/sessions/%s/transition", sid);
	json_decref(call(admin, "POST", path, "{\"to\": \"active\"}", 409));
	/* Models in use stay; unused ones go. */
	snprintf(path, sizeof path, "/v1/models/%s", model);
	json_decref(call(admin, "DELETE", path, NULL, 409));
	m = create_model(admin, "scratch", 2);
	snprintf(path, sizeof path, "/v1/models/%s", str(m, "id"));
	json_decref(m);
	ck_assert_ptr_null(call(admin, "DELETE", path, NULL, 204));
	json_decref(call(admin, "GET", path, NULL, 404));
	/* The audit log has it all, chained, with who did it. */
	json_t *head = call(admin, "GET", "/v1/audit/head", NULL, 200);
	json_int_t seq = json_integer_value(json_object_get(head, "seq"));
	ck_assert_int_ge(seq, 15);
	char hash[65];
	snprintf(hash, sizeof hash, "%s", str(head, "hash"));
	json_decref(head);
	bool saw_behalf = false, saw_party = false;
	char after[32] = "0";
	for (;;) {
		snprintf(path, sizeof path, "/v1/audit?limit=7&after=%s", after);
		l = call(admin, "GET", path, NULL, 200);
		size_t i;
		json_t *e;
		json_array_foreach(json_object_get(l, "items"), i, e) {
			saw_behalf = saw_behalf || strcmp(str(e, "actor"), "gateway:gateway for alice") == 0;
			saw_party = saw_party || strcmp(str(e, "actor"), "party:party0") == 0;
			ck_assert_ptr_null(strstr(str(e, "detail"), key)); /* keys never logged */
		}
		json_t *next = json_object_get(l, "next");
		if (!json_is_string(next)) {
			json_decref(l);
			break;
		}
		snprintf(after, sizeof after, "%s", json_string_value(next));
		json_decref(l);
	}
	ck_assert(saw_behalf && saw_party);
	snprintf(path, sizeof path, "/v1/audit/verify?seq=%lld&hash=%s", (long long)seq, hash);
	v = call(admin, "GET", path, NULL, 200);
	ck_assert(json_is_true(json_object_get(v, "ok")));
	ck_assert_int_ge(json_integer_value(json_object_get(v, "entries")), seq);
	json_decref(v);
	/* Lists page with a cursor. */
	for (int i = 0; i < 3; i++)
		json_decref(create_session(admin, model));
	l = call(admin, "GET", "/v1/sessions?state=created&limit=2", NULL, 200);
	ck_assert_int_eq(json_array_size(json_object_get(l, "items")), 2);
	snprintf(path, sizeof path, "/v1/sessions?state=created&limit=2&after=%s", str(l, "next"));
	json_decref(l);
	l = call(admin, "GET", path, NULL, 200);
	ck_assert_int_eq(json_array_size(json_object_get(l, "items")), 1);
	ck_assert(json_is_null(json_object_get(l, "next")));
	json_decref(l);
	httpc_free(gw);
	httpc_free(admin);
}
END_TEST

START_TEST(test_role_refusals)
{
	struct httpc *admin = client_as("admin");
	json_t *m = create_model(admin, "roles", 3);
	ensure_parties(admin);
	json_t *s = create_session(admin, str(m, "id"));
	char sid[32], path[128];
	snprintf(sid, sizeof sid, "%s", str(s, "id"));
	json_decref(s);
	json_decref(m);
	/* A client may call nothing here. */
	struct httpc *client = client_as("client");
	static const char *const admin_only[][2] = {
		{"GET", "/v1/models"}, {"POST", "/v1/models"}, {"GET", "/v1/parties"},
		{"POST", "/v1/sessions"}, {"GET", "/v1/sessions"}, {"POST", "/v1/keys"},
		{"POST", "/v1/keys/verify"}, {"GET", "/v1/audit"}, {"GET", "/v1/audit/verify"},
	};
	for (size_t i = 0; i < sizeof admin_only / sizeof admin_only[0]; i++)
		json_decref(call(client, admin_only[i][0], admin_only[i][1],
				 strcmp(admin_only[i][0], "POST") ? NULL : "{}", 403));
	snprintf(path, sizeof path, "/v1/sessions/%s", sid);
	json_decref(call(client, "GET", path, NULL, 403));
	httpc_free(client);
	/* A party reports and reads, and nothing else. */
	struct httpc *party = client_as("party1");
	json_decref(call(party, "POST", "/v1/models", "{}", 403));
	json_decref(call(party, "POST", "/v1/keys/verify", "{\"key\": \"x\"}", 403));
	json_decref(call(party, "GET", "/v1/audit", NULL, 403));
	snprintf(path, sizeof path, "/v1/sessions/%s/transition", sid);
	json_decref(call(party, "POST", path, "{\"to\": \"closed\"}", 403));
	httpc_free(party);
	/* The dealer reads sessions (to fill their pools) but is not one of their parties. */
	struct httpc *dealer = client_as("dealer");
	json_decref(call(dealer, "GET", "/v1/sessions?state=created", NULL, 200));
	snprintf(path, sizeof path, "/v1/sessions/%s", sid);
	json_decref(call(dealer, "GET", path, NULL, 200));
	json_decref(call(dealer, "POST", "/v1/keys", "{}", 403));
	snprintf(path, sizeof path, "/v1/sessions/%s/init", sid);
	json_decref(call(dealer, "POST", path, "{\"status\": \"ready\"}", 403));
	httpc_free(dealer);
	/* An administrator does not report initialisation for a party. */
	json_decref(call(admin, "POST", path, "{\"status\": \"ready\"}", 403));
	/* A registered party outside the session may not read it. */
	json_decref(create_party(admin, "party3", 201));
	ck_assert_int_eq(tu_pki(tmp, "issue --ca %s --role party --name party3 --dns localhost --out %s", pki, pki), 0);
	struct httpc *outsider = client_as("party3");
	snprintf(path, sizeof path, "/v1/sessions/%s", sid);
	json_decref(call(outsider, "GET", path, NULL, 403));
	snprintf(path, sizeof path, "/v1/sessions/%s/init", sid);
	json_decref(call(outsider, "POST", path, "{\"status\": \"ready\"}", 403));
	httpc_free(outsider);
	httpc_free(admin);
}
END_TEST

START_TEST(test_bad_input_names_field)
{
	struct httpc *admin = client_as("admin");
	json_t *m = create_model(admin, "bad-input", 3);
	char model[32];
	snprintf(model, sizeof model, "%s", str(m, "id"));
	json_decref(m);
	ensure_parties(admin);
	char good_share[65], bad_model[1024], body[1024];
	hexrand(good_share, 32);
	struct {
		const char *method, *path, *body, *type, *field;
	} cases[] = {
		{"POST", "/v1/models", "{\"name\": \"x\", \"dims\": {\"dim\": 0, \"hidden_dim\": 1, \"n_layers\": 1,"
		 " \"n_heads\": 1, \"n_kv_heads\": 1, \"vocab_size\": 1, \"seq_len\": 1}, \"shares\": [\"a\", \"b\"]}",
		 "out-of-range", "dims.dim"},
		{"POST", "/v1/models", "{\"name\": \"x\", \"dims\": {\"dim\": 64}, \"shares\": []}", "missing-field",
		 "dims.hidden_dim"},
		{"POST", "/v1/models", bad_model, "malformed", "shares[1]"},
		{"POST", "/v1/models", "{\"name\": \"x\", \"colour\": 1}", "unknown-field", "colour"},
		{"POST", "/v1/parties", "{\"identity\": \"p\", \"sealing_key\": \"abcd\"}", "out-of-range", "sealing_key"},
		{"POST", "/v1/parties", "{\"identity\": 7, \"sealing_key\": \"abcd\"}", "wrong-type", "identity"},
		{"POST", "/v1/parties", "{\"identity\": \"p\", \"role\": \"boss\", \"sealing_key\": \"ab\"}",
		 "out-of-range", "role"},
		{"POST", "/v1/sessions", "{\"model\": \"mdl_0000000000000000\"}", "invalid-argument", "model"},
		{"POST", "/v1/sessions", body, "out-of-range", "ttl_s"},
		{"POST", "/v1/sessions", "{\"model\": \"m\", \"parties\": [1, 2, 3]}", "wrong-type", "parties[0]"},
		{"POST", "/v1/keys", "{\"sessions\": []}", "out-of-range", "sessions"},
		{"POST", "/v1/keys", "{\"sessions\": [\"ses_0000000000000000\"]}", "invalid-argument", "sessions[0]"},
		{"POST", "/v1/keys/verify", "{\"session\": \"x\"}", "missing-field", "key"},
		{"GET", "/v1/sessions?limit=0", NULL, "out-of-range", "limit"},
		{"GET", "/v1/sessions?limit=abc", NULL, "out-of-range", "limit"},
		{"GET", "/v1/sessions?after=-3", NULL, "invalid-argument", "after"},
		{"GET", "/v1/sessions?state=bogus", NULL, "out-of-range", "state"},
		{"GET", "/v1/audit/verify?seq=3", NULL, "missing-field", "hash"},
		{"GET", "/v1/audit/verify?seq=3&hash=zz", NULL, "malformed", "hash"},
		{"POST", "/v1/models", "{\"name\": ", "malformed", NULL},
	};
	snprintf(bad_model, sizeof bad_model,
		 "{\"name\": \"x\", \"dims\": {\"dim\": 64, \"hidden_dim\": 172, \"n_layers\": 5, \"n_heads\": 8,"
		 " \"n_kv_heads\": 4, \"vocab_size\": 512, \"seq_len\": 512}, \"shares\": [\"%s\", \"xyz\"]}",
		 good_share);
	snprintf(body, sizeof body, "{\"model\": \"%s\", \"ttl_s\": 0}", model);
	for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
		json_t *j = call(admin, cases[i].method, cases[i].path, cases[i].body, 400);
		char type[96];
		snprintf(type, sizeof type, "urn:mimir:problem:%s", cases[i].type);
		ck_assert_msg(strcmp(str(j, "type"), type) == 0, "case %zu: type %s, want %s (%s)", i,
			      str(j, "type"), type, str(j, "detail"));
		if (cases[i].field)
			ck_assert_msg(json_is_string(json_object_get(j, "field")) &&
					      strcmp(str(j, "field"), cases[i].field) == 0,
				      "case %zu: field %s, want %s", i,
				      json_string_value(json_object_get(j, "field")), cases[i].field);
		json_decref(j);
	}
	/* Semantic conflicts are 409 and name the field too. */
	json_t *s = create_session(admin, model);
	char path[128];
	snprintf(path, sizeof path, "/v1/sessions/%s/transition", str(s, "id"));
	json_decref(s);
	json_t *j = call(admin, "POST", path, "{\"to\": \"ready\"}", 409);
	ck_assert_str_eq(str(j, "field"), "to");
	json_decref(j);
	j = call(admin, "POST", path, "{\"to\": \"sideways\"}", 400);
	ck_assert_str_eq(str(j, "field"), "to");
	json_decref(j);
	j = create_model(admin, "dup", 2);
	json_decref(j);
	hexrand(good_share, 32);
	snprintf(body, sizeof body,
		 "{\"name\": \"dup\", \"dims\": {\"dim\": 64, \"hidden_dim\": 172, \"n_layers\": 5, \"n_heads\": 8,"
		 " \"n_kv_heads\": 4, \"vocab_size\": 512, \"seq_len\": 512}, \"shares\": [\"%s\", \"%s\"]}",
		 good_share, good_share);
	j = call(admin, "POST", "/v1/models", body, 400); /* the same digest twice */
	ck_assert_str_eq(str(j, "field"), "shares[1]");
	json_decref(j);
	httpc_free(admin);
}
END_TEST

START_TEST(test_unknown_objects_404)
{
	struct httpc *admin = client_as("admin");
	static const char *const cases[][2] = {
		{"GET", "/v1/sessions/ses_0000000000000000"},
		{"GET", "/v1/sessions/not-an-id"},
		{"POST", "/v1/sessions/ses_0000000000000000/close"},
		{"POST", "/v1/sessions/ses_0000000000000000/transition"},
		{"GET", "/v1/models/mdl_0000000000000000"},
		{"DELETE", "/v1/models/mdl_0000000000000000"},
		{"GET", "/v1/parties/pty_0000000000000000"},
		{"GET", "/v1/keys/key_0000000000000000"},
		{"POST", "/v1/keys/key_0000000000000000/revoke"},
	};
	for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
		const char *body = strstr(cases[i][1], "transition") ? "{\"to\": \"closed\"}" : NULL;
		json_t *j = call(admin, cases[i][0], cases[i][1], body, 404);
		ck_assert_str_eq(str(j, "type"), "urn:mimir:problem:not-found");
		json_decref(j);
	}
	struct httpc *party = client_as("party0");
	json_decref(call(party, "POST", "/v1/sessions/ses_0000000000000000/init", "{\"status\": \"ready\"}", 404));
	httpc_free(party);
	httpc_free(admin);
}
END_TEST

START_TEST(test_metrics_and_readiness)
{
	struct httpc *admin = client_as("admin");
	json_decref(create_model(admin, "metrics", 2));
	json_t *j = call(admin, "GET", "/readyz", NULL, 200);
	ck_assert_str_eq(str(j, "status"), "ready");
	json_decref(j);
	struct httpc_resp r;
	ck_assert_int_eq(httpc_request(admin, "GET", "/metrics", NULL, NULL, NULL, 0, &r), 0);
	ck_assert_int_eq(r.status, 200);
	ck_assert_ptr_nonnull(strstr(r.body, "mimir_registry_commits_total "));
	ck_assert_ptr_nonnull(strstr(r.body, "mimir_registry_busy_retries_total "));
	ck_assert_ptr_nonnull(strstr(r.body, "mimir_session_sessions{state=\"created\"}"));
	char path[400];
	snprintf(path, sizeof path, "%s/metrics.txt", tmp);
	ck_assert_int_eq(tu_write_file(path, r.body, r.len), 0);
	httpc_resp_free(&r);
	if (tu_system("command -v promtool >/dev/null") == 0)
		ck_assert_msg(tu_system("promtool check metrics < %s >/dev/null 2>&1", path) == 0,
			      "promtool rejects /metrics");
	httpc_free(admin);
}
END_TEST

/* ---- durability, on services of their own ---- */

struct writer {
	const char *url;
	int id;
	pthread_mutex_t *mu;
	char (*acked)[2][32]; /* id, name */
	size_t *n_acked;
	size_t cap;
	volatile bool *stop;
	int transport_errors;
};

static void *write_loop(void *arg)
{
	struct writer *w = arg;
	struct httpc *c = client_at("admin", w->url);
	for (int i = 0; !*w->stop; i++) {
		char name[32], body[1024], a[65], b[65];
		snprintf(name, sizeof name, "k9-%d-%d", w->id, i);
		hexrand(a, 32);
		hexrand(b, 32);
		snprintf(body, sizeof body,
			 "{\"name\": \"%s\", \"dims\": {\"dim\": 64, \"hidden_dim\": 172, \"n_layers\": 5,"
			 " \"n_heads\": 8, \"n_kv_heads\": 4, \"vocab_size\": 512, \"seq_len\": 512},"
			 " \"shares\": [\"%s\", \"%s\"]}", name, a, b);
		struct httpc_resp r;
		int rc = httpc_request(c, "POST", "/v1/models", NULL, "application/json", body, strlen(body), &r);
		if (rc != 0 || r.status == 0) {
			w->transport_errors++;
			httpc_resp_free(&r);
			break; /* the service is gone */
		}
		if (r.status == 201) {
			json_t *j = json_loadb(r.body, r.len, 0, NULL);
			pthread_mutex_lock(w->mu);
			if (j && *w->n_acked < w->cap) {
				snprintf(w->acked[*w->n_acked][0], 32, "%s", json_string_value(json_object_get(j, "id")));
				snprintf(w->acked[*w->n_acked][1], 32, "%s", name);
				(*w->n_acked)++;
			}
			pthread_mutex_unlock(w->mu);
			json_decref(j);
		}
		httpc_resp_free(&r);
	}
	httpc_free(c);
	return NULL;
}

START_TEST(test_kill9_loses_no_acknowledged_write)
{
	struct svc s;
	char db[400];
	snprintf(db, sizeof db, "%s/k9.db", tmp);
	ck_assert_int_eq(svc_start(&s, "k9", db), 0);
	/* A session and a key from before, to check they survive too. */
	struct httpc *admin = client_at("admin", s.s.url);
	json_t *m = create_model(admin, "k9-base", 3);
	ensure_parties(admin);
	json_t *ses = create_session(admin, str(m, "id"));
	char sid[32], body[256], key[128];
	snprintf(sid, sizeof sid, "%s", str(ses, "id"));
	json_decref(ses);
	json_decref(m);
	snprintf(body, sizeof body, "{\"sessions\": [\"%s\"]}", sid);
	json_t *k = call(admin, "POST", "/v1/keys", body, 201);
	snprintf(key, sizeof key, "%s", str(k, "key"));
	json_decref(k);
	httpc_free(admin);

	enum { WRITERS = 4, CAP = 100000 };
	static char acked[CAP][2][32];
	size_t n_acked = 0;
	pthread_mutex_t mu = PTHREAD_MUTEX_INITIALIZER;
	volatile bool stop = false;
	struct writer w[WRITERS];
	pthread_t th[WRITERS];
	for (int i = 0; i < WRITERS; i++) {
		w[i] = (struct writer){s.s.url, i, &mu, acked, &n_acked, CAP, &stop, 0};
		pthread_create(&th[i], NULL, write_loop, &w[i]);
	}
	/* Kill once plenty are acknowledged, with the writers still going. */
	for (int waited = 0; waited < 30000; waited += 10) {
		pthread_mutex_lock(&mu);
		size_t n = n_acked;
		pthread_mutex_unlock(&mu);
		if (n >= 200)
			break;
		usleep(10000);
	}
	kill(s.s.proc.pid, SIGKILL);
	int st = tu_proc_stop(&s.s.proc, SIGKILL, 5000);
	ck_assert(WIFSIGNALED(st) && WTERMSIG(st) == SIGKILL);
	stop = true;
	int errors = 0;
	for (int i = 0; i < WRITERS; i++) {
		pthread_join(th[i], NULL);
		errors += w[i].transport_errors;
	}
	ck_assert_msg(errors >= 1, "no writer was cut off: the kill was not in the middle of writes");
	size_t total = n_acked;
	ck_assert_int_ge(total, 200);

	/* Same database, new process: every acknowledged write is there. */
	ck_assert_int_eq(svc_start(&s, "k9", db), 0);
	admin = client_at("admin", s.s.url);
	for (size_t i = 0; i < total; i++) {
		char path[64];
		snprintf(path, sizeof path, "/v1/models/%.31s", acked[i][0]);
		json_t *j = call(admin, "GET", path, NULL, 200);
		ck_assert_str_eq(str(j, "name"), acked[i][1]);
		json_decref(j);
	}
	json_t *v = call(admin, "GET", "/v1/audit/verify", NULL, 200);
	ck_assert_msg(json_is_true(json_object_get(v, "ok")), "audit chain broken after kill -9: %s",
		      str(v, "reason"));
	ck_assert_int_ge(json_integer_value(json_object_get(v, "entries")), (json_int_t)total + 5);
	json_decref(v);
	/* The session and the key survived as well. */
	char path[64];
	snprintf(path, sizeof path, "/v1/sessions/%s", sid);
	json_decref(call(admin, "GET", path, NULL, 200));
	struct httpc *gw = client_at("gateway", s.s.url);
	snprintf(body, sizeof body, "{\"key\": \"%s\", \"session\": \"%s\"}", key, sid);
	v = call(gw, "POST", "/v1/keys/verify", body, 200);
	ck_assert(json_is_true(json_object_get(v, "valid")));
	json_decref(v);
	httpc_free(gw);
	httpc_free(admin);
	svc_stop(&s);
	printf("kill -9: %zu acknowledged writes, all present after restart\n", total);
}
END_TEST

static int64_t db_int(const char *db, const char *sql)
{
	sqlite3 *h;
	sqlite3_stmt *st;
	ck_assert_int_eq(sqlite3_open_v2(db, &h, SQLITE_OPEN_READONLY, NULL), SQLITE_OK);
	ck_assert_int_eq(sqlite3_prepare_v2(h, sql, -1, &st, NULL), SQLITE_OK);
	ck_assert_int_eq(sqlite3_step(st), SQLITE_ROW);
	int64_t v = sqlite3_column_int64(st, 0);
	sqlite3_finalize(st);
	sqlite3_close(h);
	return v;
}

static bool log_contains(const struct svc *s, const char *needle)
{
	return tu_file_contains(s->s.log, needle, 0);
}

START_TEST(test_read_only_database)
{
	struct svc s;
	char db[400];
	snprintf(db, sizeof db, "%s/ro.db", tmp);
	ck_assert_int_eq(svc_start(&s, "ro", db), 0);
	struct httpc *admin = client_at("admin", s.s.url);
	json_t *m = create_model(admin, "ro-model", 2);
	char mid[32];
	snprintf(mid, sizeof mid, "%s", str(m, "id"));
	json_decref(m);
	json_t *head = call(admin, "GET", "/v1/audit/head", NULL, 200);
	json_int_t seq = json_integer_value(json_object_get(head, "seq"));
	json_decref(head);
	httpc_free(admin);
	svc_stop(&s);
	/* Root ignores file modes: run the service without the capability that lets it. */
	char *wrap_root[] = {"/usr/bin/setpriv", "--inh-caps=-dac_override,-dac_read_search",
			     "--bounding-set=-dac_override,-dac_read_search", NULL};
	char **wrap = NULL;
	if (geteuid() == 0) {
		if (access(wrap_root[0], X_OK) != 0) {
			printf("read-only database: skipped (running as root without %s)\n", wrap_root[0]);
			return;
		}
		wrap = wrap_root;
	}
	ck_assert_int_eq(chmod(db, 0444), 0);
	ck_assert_int_eq(svc_start_wrapped(&s, "ro", db, wrap), 0);
	admin = client_at("admin", s.s.url);
	char path[64];
	snprintf(path, sizeof path, "/v1/models/%s", mid);
	json_decref(call(admin, "GET", path, NULL, 200)); /* reads still work */
	json_t *j = create_party(admin, "ro-party", 503);
	ck_assert_msg(strstr(str(j, "detail"), "read-only"), "detail: %s", str(j, "detail"));
	json_decref(j);
	j = call(admin, "GET", "/readyz", NULL, 503);
	ck_assert_msg(strstr(str(j, "detail"), "read-only"), "detail: %s", str(j, "detail"));
	json_decref(j);
	httpc_free(admin);
	svc_stop(&s);
	ck_assert(log_contains(&s, "event=reg.read_only"));
	/* Writable again: nothing was lost or damaged. */
	ck_assert_int_eq(chmod(db, 0644), 0);
	ck_assert_int_eq(svc_start(&s, "ro", db), 0);
	admin = client_at("admin", s.s.url);
	json_decref(call(admin, "GET", path, NULL, 200));
	json_t *v = call(admin, "GET", "/v1/audit/verify", NULL, 200);
	ck_assert(json_is_true(json_object_get(v, "ok")));
	ck_assert_int_eq(json_integer_value(json_object_get(v, "entries")), seq);
	json_decref(v);
	json_decref(call(admin, "GET", "/readyz", NULL, 200));
	httpc_free(admin);
	svc_stop(&s);
	sqlite3 *h;
	sqlite3_stmt *st;
	ck_assert_int_eq(sqlite3_open_v2(db, &h, SQLITE_OPEN_READONLY, NULL), SQLITE_OK);
	ck_assert_int_eq(sqlite3_prepare_v2(h, "PRAGMA integrity_check", -1, &st, NULL), SQLITE_OK);
	ck_assert_int_eq(sqlite3_step(st), SQLITE_ROW);
	ck_assert_str_eq((const char *)sqlite3_column_text(st, 0), "ok");
	sqlite3_finalize(st);
	sqlite3_close(h);
	/* Where not even a database can be created: the service says so and exits 1. */
	char ro_dir[400], ro_db[450];
	snprintf(ro_dir, sizeof ro_dir, "%s/locked", tmp);
	ck_assert_int_eq(mkdir(ro_dir, 0500), 0);
	snprintf(ro_db, sizeof ro_db, "%s/new.db", ro_dir);
	ck_assert_int_eq(svc_start_wrapped(&s, "locked", ro_db, wrap), -1);
	int status = tu_proc_stop(&s.s.proc, 0, 5000);
	ck_assert(WIFEXITED(status) && WEXITSTATUS(status) == 1);
	ck_assert(log_contains(&s, "event=session.open_failed"));
	ck_assert(log_contains(&s, "new.db"));
}
END_TEST

START_TEST(test_full_disk_through_api)
{
	/* A file size limit stands in for a full disk: writes past it fail with EFBIG. */
	if (access("/usr/bin/prlimit", X_OK) != 0) {
		printf("full disk: skipped (no /usr/bin/prlimit)\n");
		return;
	}
	struct svc s;
	char db[400];
	snprintf(db, sizeof db, "%s/full.db", tmp);
	ck_assert_int_eq(svc_start(&s, "full", db), 0);
	struct httpc *admin = client_at("admin", s.s.url);
	json_decref(create_model(admin, "full-base", 2));
	httpc_free(admin);
	svc_stop(&s);
	struct stat st;
	ck_assert_int_eq(stat(db, &st), 0);
	char fsize[64];
	snprintf(fsize, sizeof fsize, "--fsize=%lld", (long long)st.st_size + 256 * 1024);
	char *wrap[] = {"/usr/bin/prlimit", fsize, "--", NULL};
	ck_assert_int_eq(svc_start_wrapped(&s, "full", db, wrap), 0);
	admin = client_at("admin", s.s.url);
	char big[3000];
	memset(big, 'x', sizeof big - 1);
	big[sizeof big - 1] = '\0';
	char acked[400][32];
	int n_acked = 0;
	json_t *refusal = NULL;
	for (int i = 0; i < 400 && !refusal; i++) {
		uint8_t pk[32], sk[32];
		char hex[65], body[4096];
		crypto_box_keypair(pk, sk);
		sodium_bin2hex(hex, sizeof hex, pk, sizeof pk);
		snprintf(body, sizeof body, "{\"identity\": \"fill%d\", \"sealing_key\": \"%s\","
			 " \"attestation\": {\"pad\": \"%s\"}}", i, hex, big);
		struct httpc_resp r;
		ck_assert_int_eq(httpc_request(admin, "POST", "/v1/parties", NULL, "application/json", body,
					       strlen(body), &r), 0);
		if (r.status == 201) {
			json_t *j = json_loadb(r.body, r.len, 0, NULL);
			snprintf(acked[n_acked++], 32, "%s", str(j, "id"));
			json_decref(j);
		} else {
			ck_assert_msg(r.status == 503, "status %ld: %s", r.status, r.body);
			refusal = json_loadb(r.body, r.len, 0, NULL);
		}
		httpc_resp_free(&r);
	}
	ck_assert_msg(refusal != NULL, "the file size limit was never reached");
	ck_assert_int_gt(n_acked, 0);
	ck_assert_msg(strstr(str(refusal, "detail"), "disk is full"), "detail: %s", str(refusal, "detail"));
	json_decref(refusal);
	httpc_free(admin);
	svc_stop(&s);
	/* Room again: every acknowledged write is there and the chain is whole. */
	ck_assert_int_eq(svc_start(&s, "full", db), 0);
	admin = client_at("admin", s.s.url);
	for (int i = 0; i < n_acked; i++) {
		char path[64];
		snprintf(path, sizeof path, "/v1/parties/%.31s", acked[i]);
		json_decref(call(admin, "GET", path, NULL, 200));
	}
	json_t *v = call(admin, "GET", "/v1/audit/verify", NULL, 200);
	ck_assert(json_is_true(json_object_get(v, "ok")));
	ck_assert_int_eq(json_integer_value(json_object_get(v, "entries")), n_acked + 1);
	json_decref(v);
	json_decref(create_party(admin, "after-full", 201));
	httpc_free(admin);
	svc_stop(&s);
	ck_assert_int_eq(db_int(db, "SELECT count(*) FROM parties"), n_acked + 1);
	printf("full disk: %d writes acknowledged before the limit, 503 \"disk is full\" after\n", n_acked);
}
END_TEST

START_TEST(test_tampering_detected_through_api)
{
	struct svc s;
	char db[400];
	snprintf(db, sizeof db, "%s/tamper.db", tmp);
	ck_assert_int_eq(svc_start(&s, "tamper", db), 0);
	struct httpc *admin = client_at("admin", s.s.url);
	for (int i = 0; i < 4; i++) {
		char name[16];
		snprintf(name, sizeof name, "t%d", i);
		json_decref(create_model(admin, name, 2));
	}
	json_t *head = call(admin, "GET", "/v1/audit/head", NULL, 200);
	char anchor[160];
	snprintf(anchor, sizeof anchor, "/v1/audit/verify?seq=%lld&hash=%s",
		 (long long)json_integer_value(json_object_get(head, "seq")), str(head, "hash"));
	json_decref(head);
	httpc_free(admin);
	svc_stop(&s);
	/* Someone with the file edits history. */
	sqlite3 *h;
	ck_assert_int_eq(sqlite3_open(db, &h), SQLITE_OK);
	ck_assert_int_ne(sqlite3_exec(h, "UPDATE audit SET actor = 'admin:nobody' WHERE seq = 2", NULL, NULL,
				      NULL), SQLITE_OK);
	ck_assert_int_eq(sqlite3_exec(h, "DROP TRIGGER audit_no_update;"
					 "UPDATE audit SET actor = 'admin:nobody' WHERE seq = 2", NULL, NULL, NULL),
			 SQLITE_OK);
	sqlite3_close(h);
	ck_assert_int_eq(db_int(db, "SELECT count(*) FROM audit WHERE actor = 'admin:nobody'"), 1);
	ck_assert_int_eq(svc_start(&s, "tamper", db), 0);
	admin = client_at("admin", s.s.url);
	json_t *v = call(admin, "GET", anchor, NULL, 200);
	ck_assert(json_is_false(json_object_get(v, "ok")));
	ck_assert_int_eq(json_integer_value(json_object_get(v, "first_bad_seq")), 2);
	ck_assert(json_is_false(json_object_get(v, "triggers_ok")));
	json_decref(v);
	httpc_free(admin);
	svc_stop(&s);
	ck_assert(log_contains(&s, "event=session.audit_tampered"));
}
END_TEST

START_TEST(test_startup_errors_are_clear)
{
	struct svc s;
	char db[400], secret[400];
	snprintf(db, sizeof db, "%s/se.db", tmp);
	/* A secret file others can read. */
	snprintf(secret, sizeof secret, "%s/se.secret", tmp);
	char hex[65];
	hexrand(hex, 32);
	ck_assert_int_eq(tu_write_file(secret, hex, 64), 0);
	chmod(secret, 0644);
	ck_assert_int_eq(svc_start(&s, "se", db), -1);
	int st = tu_proc_stop(&s.s.proc, 0, 5000);
	ck_assert(WIFEXITED(st) && WEXITSTATUS(st) == 1);
	ck_assert(log_contains(&s, "chmod 600"));
	/* The right mode: it starts, and the database remembers this secret... */
	chmod(secret, 0600);
	ck_assert_int_eq(svc_start(&s, "se", db), 0);
	svc_stop(&s);
	/* ...so another secret is refused instead of silently breaking every key. */
	hexrand(hex, 32);
	ck_assert_int_eq(tu_write_file(secret, hex, 64), 0);
	unlink(s.s.log);
	ck_assert_int_eq(svc_start(&s, "se", db), -1);
	st = tu_proc_stop(&s.s.proc, 0, 5000);
	ck_assert(WIFEXITED(st) && WEXITSTATUS(st) == 1);
	ck_assert(log_contains(&s, "secret is not the one"));
}
END_TEST

Suite *suite(void)
{
	Suite *s = suite_create("session");
	TCase *tc = tcase_create("session_service");
	tcase_add_unchecked_fixture(tc, setup, teardown);
	tcase_set_timeout(tc, 120);
	tcase_add_test(tc, test_admin_flow);
	tcase_add_test(tc, test_role_refusals);
	tcase_add_test(tc, test_bad_input_names_field);
	tcase_add_test(tc, test_unknown_objects_404);
	tcase_add_test(tc, test_metrics_and_readiness);
	tcase_add_test(tc, test_kill9_loses_no_acknowledged_write);
	tcase_add_test(tc, test_read_only_database);
	tcase_add_test(tc, test_full_disk_through_api);
	tcase_add_test(tc, test_tampering_detected_through_api);
	tcase_add_test(tc, test_startup_errors_are_clear);
	suite_add_tcase(s, tc);
	return s;
}
