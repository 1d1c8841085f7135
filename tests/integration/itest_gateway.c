/* Integration: the real mimir-gateway in front of the real mimir-session, both over
 * mutual TLS with certificates from the real mimir-pki. Proves from the outside: the
 * administrator's whole flow through the gateway (models, parties, sessions, keys,
 * the audit log, with the administrator named in the audit actor) with a certificate
 * and with a bearer token; the client's read of its session with an API key; every
 * refusal of a missing, malformed, unknown, revoked or misdirected credential; the
 * token-bucket limits with Retry-After; CORS preflights and response headers; bad
 * input answered 400 naming the field (413, 415 too); the session service going away
 * (503 with a clear problem, /readyz failing) and coming back; and mimirctl driving
 * the gateway with its tables, --json and exit codes. Every response the suite
 * receives from a gateway is recorded and validated against openapi/mimir.yaml with
 * scripts/openapi-validate.mjs at the end of each test, and the validator is shown to
 * reject responses that drift from the document. */
#define _GNU_SOURCE
#include <curl/curl.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include <sodium.h>

#include "err/err.h"
#include "httpc/httpc.h"
#include "svcproc.h"
#include "testutil.h"

static char tmp[256], pki[300], records[400], token[64], token_file[400];
static struct tu_svc session_svc, gw_svc;

#define ORIGIN "https://app.example"

/* ---- services ---- */

static void session_config(const char *db, const char *secret, int port, char *json, size_t cap)
{
	snprintf(json, cap,
		 "{\"http\": {\"port\": %d, \"threads\": 4, \"idle_timeout_s\": 5},"
		 " \"tls\": {\"cert\": \"%s/session.crt\", \"key\": \"%s/session.key\", \"ca\": \"%s/ca.crt\"},"
		 " \"db\": {\"path\": \"%s\"}, \"keys\": {\"secret_file\": \"%s\"}}",
		 port, pki, pki, pki, db, secret);
}

/* A gateway in front of the session service at session_url; extra: more JSON members. */
static int gateway_start(struct tu_svc *g, const char *name, const char *session_url, const char *extra)
{
	char json[4096];
	snprintf(json, sizeof json,
		 "{\"http\": {\"port\": 0, \"threads\": 8, \"idle_timeout_s\": 5},"
		 " \"tls\": {\"cert\": \"%s/gateway.crt\", \"key\": \"%s/gateway.key\", \"ca\": \"%s/ca.crt\"},"
		 " \"session\": {\"url\": \"%s\", \"ca\": \"%s/ca.crt\", \"cert\": \"%s/gateway.crt\","
		 " \"key\": \"%s/gateway.key\", \"timeout_ms\": 3000, \"retries\": 1},"
		 " \"admin\": {\"tokens_file\": \"%s\"}%s%s}",
		 pki, pki, pki, session_url, pki, pki, pki, token_file, extra ? ", " : "", extra ? extra : "");
	return tu_svc_start(g, tmp, "mimir-gateway", name, json, NULL);
}

/* The token file format of docs/GATEWAY.md: "<name> <hex BLAKE2b-256(domain || 0 || token)>". */
static void make_token(const char *name, char *tok, size_t cap, FILE *f)
{
	uint8_t r[32], h[32];
	randombytes_buf(r, sizeof r);
	char b64[48], hex[65];
	sodium_bin2base64(b64, sizeof b64, r, sizeof r, sodium_base64_VARIANT_URLSAFE_NO_PADDING);
	snprintf(tok, cap, "mimir_at_%s", b64);
	static const char domain[] = "mimir-admin-token-v1";
	crypto_generichash_state st;
	crypto_generichash_init(&st, NULL, 0, 32);
	crypto_generichash_update(&st, (const uint8_t *)domain, sizeof domain); /* with its NUL */
	crypto_generichash_update(&st, (const uint8_t *)tok, strlen(tok));
	crypto_generichash_final(&st, h, 32);
	sodium_bin2hex(hex, sizeof hex, h, 32);
	fprintf(f, "%s %s\n", name, hex);
}

static void setup(void)
{
	ck_assert_int_ge(sodium_init(), 0);
	curl_global_init(CURL_GLOBAL_DEFAULT);
	ck_assert_msg(tu_system("bash scripts/openapi-lint.sh --install-only >/dev/null") == 0,
		      "cannot install the OpenAPI validator (scripts/openapi-lint.sh --install-only)");
	tu_tmpdir(tmp, sizeof tmp);
	snprintf(pki, sizeof pki, "%s/pki", tmp);
	ck_assert_int_eq(tu_pki(tmp, "dev --out %s", pki), 0);
	snprintf(token_file, sizeof token_file, "%s/admin-tokens", tmp);
	FILE *f = fopen(token_file, "w");
	ck_assert_ptr_nonnull(f);
	fprintf(f, "# administrators of the test deployment\n");
	make_token("ops", token, sizeof token, f);
	char other[64];
	make_token("backup-robot", other, sizeof other, f);
	fclose(f);
	chmod(token_file, 0600);
	char json[2048], db[400], secret[400];
	snprintf(db, sizeof db, "%s/main.db", tmp);
	snprintf(secret, sizeof secret, "%s/main.secret", tmp);
	session_config(db, secret, 0, json, sizeof json);
	ck_assert_int_eq(tu_svc_start(&session_svc, tmp, "mimir-session", "session", json, NULL), 0);
	ck_assert_int_eq(gateway_start(&gw_svc, "gateway", session_svc.url,
				       "\"keys\": {\"cache_ms\": 300},"
				       " \"cors\": {\"origins\": \"" ORIGIN ", http://localhost:5173\","
				       " \"max_age_s\": 120}"),
			 0);
}

static void teardown(void)
{
	tu_svc_stop(&gw_svc);
	tu_svc_stop(&session_svc);
	tu_rmrf(tmp);
}

/* ---- requests through a gateway, recorded for the OpenAPI check ---- */

struct gresp {
	long status;
	char ctype[128];
	struct buf_ {
		char *p;
		size_t n;
	} body;
	json_t *j;       /* the body as JSON, or NULL */
	json_t *headers; /* lower-case name -> value */
};

static size_t on_data(char *p, size_t sz, size_t n, void *arg)
{
	struct buf_ *b = arg;
	char *q = realloc(b->p, b->n + sz * n + 1);
	ck_assert_ptr_nonnull(q);
	memcpy(q + b->n, p, sz * n);
	b->p = q;
	b->n += sz * n;
	b->p[b->n] = '\0';
	return sz * n;
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
				r->body.p ? r->body.p : "", r->body.n);
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
	free(r->body.p);
	json_decref(r->j);
	json_decref(r->headers);
	memset(r, 0, sizeof *r);
}

static const char *hdr(const struct gresp *r, const char *name)
{
	return json_string_value(json_object_get(r->headers, name));
}

/* One request to base as `who` (a certificate of the dev PKI; NULL: none), with extra
 * headers ("Name: value", NULL-terminated) and a JSON body. Asserts the status and, for
 * errors, the problem+json shape. */
static struct gresp request(const char *base, const char *who, const char *method, const char *path,
			    const char *const *hdrs, const char *body, long want)
{
	struct gresp r = {.headers = json_object()};
	char url[1024], ca[400], crt[400], key[400];
	snprintf(url, sizeof url, "%s%s", base, path);
	snprintf(ca, sizeof ca, "%s/ca.crt", pki);
	CURL *h = curl_easy_init();
	curl_easy_setopt(h, CURLOPT_URL, url);
	curl_easy_setopt(h, CURLOPT_CAINFO, ca);
	if (who) {
		snprintf(crt, sizeof crt, "%s/%s.crt", pki, who);
		snprintf(key, sizeof key, "%s/%s.key", pki, who);
		curl_easy_setopt(h, CURLOPT_SSLCERT, crt);
		curl_easy_setopt(h, CURLOPT_SSLKEY, key);
	}
	curl_easy_setopt(h, CURLOPT_CUSTOMREQUEST, method);
	if (!strcmp(method, "HEAD"))
		curl_easy_setopt(h, CURLOPT_NOBODY, 1L);
	struct curl_slist *sl = NULL;
	bool has_ct = false;
	for (const char *const *e = hdrs; e && *e; e++) {
		sl = curl_slist_append(sl, *e);
		has_ct = has_ct || !strncasecmp(*e, "Content-Type:", 13);
	}
	if (body) {
		if (!has_ct)
			sl = curl_slist_append(sl, "Content-Type: application/json");
		curl_easy_setopt(h, CURLOPT_POSTFIELDS, body);
		curl_easy_setopt(h, CURLOPT_POSTFIELDSIZE, (long)strlen(body));
	}
	sl = curl_slist_append(sl, "Expect:");
	curl_easy_setopt(h, CURLOPT_HTTPHEADER, sl);
	curl_easy_setopt(h, CURLOPT_WRITEFUNCTION, on_data);
	curl_easy_setopt(h, CURLOPT_WRITEDATA, &r.body);
	curl_easy_setopt(h, CURLOPT_HEADERFUNCTION, on_header);
	curl_easy_setopt(h, CURLOPT_HEADERDATA, r.headers);
	curl_easy_setopt(h, CURLOPT_TIMEOUT, 20L);
	CURLcode cc = curl_easy_perform(h);
	ck_assert_msg(cc == CURLE_OK, "%s %s: %s", method, path, curl_easy_strerror(cc));
	curl_easy_getinfo(h, CURLINFO_RESPONSE_CODE, &r.status);
	curl_slist_free_all(sl);
	curl_easy_cleanup(h);
	snprintf(r.ctype, sizeof r.ctype, "%s", hdr(&r, "content-type") ? hdr(&r, "content-type") : "");
	record(method, path, &r);
	if (r.body.n)
		r.j = json_loadb(r.body.p, r.body.n, 0, NULL);
	ck_assert_msg(r.status == want, "%s %s: status %ld, want %ld: %s", method, path, r.status, want,
		      r.body.p ? r.body.p : "");
	if (want >= 400) {
		ck_assert_str_eq(r.ctype, "application/problem+json");
		ck_assert_int_eq(json_integer_value(json_object_get(r.j, "status")), want);
		ck_assert_str_eq(json_string_value(json_object_get(r.j, "request_id")), hdr(&r, "x-request-id"));
		ck_assert_ptr_nonnull(json_string_value(json_object_get(r.j, "detail")));
	}
	return r;
}

static struct gresp gw(const char *who, const char *method, const char *path, const char *body, long want)
{
	return request(gw_svc.url, who, method, path, NULL, body, want);
}

/* The same with an admin token instead of an admin certificate (the client certificate
 * only opens the TLS connection). */
static struct gresp gw_token(const char *tok, const char *method, const char *path, const char *body,
			     long want)
{
	char auth[128];
	snprintf(auth, sizeof auth, "Authorization: Bearer %s", tok);
	const char *h[] = {auth, NULL};
	return request(gw_svc.url, "client", method, path, h, body, want);
}

/* A client's read of its session with an API key. */
static struct gresp client_get(const char *base, const char *key, const char *sid, long want)
{
	char auth[128], path[96];
	snprintf(auth, sizeof auth, "Authorization: Bearer %s", key);
	snprintf(path, sizeof path, "/v1/sessions/%s", sid);
	const char *h[] = {auth, NULL};
	return request(base, NULL, "GET", path, key ? h : NULL, NULL, want); /* clients hold no certificate */
}

static const char *str(json_t *j, const char *key)
{
	const char *s = json_string_value(json_object_get(j, key));
	ck_assert_msg(s != NULL, "no string %s", key);
	return s;
}

static const char *field(const struct gresp *r)
{
	const char *f = json_string_value(json_object_get(r->j, "field"));
	return f ? f : "";
}

/* Every response this test received validates against the OpenAPI document. */
static void validate_records(void)
{
	char out[420];
	snprintf(out, sizeof out, "%s.out", records);
	int rc = tu_system("node scripts/openapi-validate.mjs openapi/mimir.yaml %s >%s 2>&1", records, out);
	char *text = tu_read_file(out, NULL);
	ck_assert_msg(rc == 0, "responses do not match openapi/mimir.yaml:\n%.3000s", text ? text : "");
	ck_assert_ptr_nonnull(strstr(text, "valid against"));
	fprintf(stderr, "   %s", text); /* the count, in the suite's output */
	free(text);
}

static void begin(const char *name)
{
	snprintf(records, sizeof records, "%s/records-%s.jsonl", tmp, name);
	unlink(records);
}

/* ---- fixtures through the admin API ---- */

static void hexrand(char *out, size_t bytes)
{
	uint8_t b[32];
	randombytes_buf(b, bytes);
	sodium_bin2hex(out, 2 * bytes + 1, b, bytes);
}

static void create_model(const char *name, int shares, char id[32])
{
	char body[1024], list[600] = "";
	for (int i = 0; i < shares; i++) {
		char h[65];
		hexrand(h, 32);
		size_t l = strlen(list);
		snprintf(list + l, sizeof list - l, "%s\"%s\"", i ? ", " : "", h);
	}
	snprintf(body, sizeof body,
		 "{\"name\": \"%s\", \"description\": \"test model\", \"dims\": {\"dim\": 64, \"hidden_dim\": 172,"
		 " \"n_layers\": 5, \"n_heads\": 8, \"n_kv_heads\": 4, \"vocab_size\": 512, \"seq_len\": 512},"
		 " \"shares\": [%s]}", name, list);
	struct gresp r = gw("admin", "POST", "/admin/v1/models", body, 201);
	snprintf(id, 32, "%s", str(r.j, "id"));
	char loc[96];
	snprintf(loc, sizeof loc, "/admin/v1/models/%s", id);
	ck_assert_str_eq(hdr(&r, "location"), loc);
	ck_assert_str_eq(hdr(&r, "cache-control"), "no-store");
	gresp_free(&r);
}

/* Parties party0..2 (the dev PKI's names) exist once. */
static void ensure_parties(void)
{
	struct gresp l = gw("admin", "GET", "/admin/v1/parties?limit=500", NULL, 200);
	for (int i = 0; i < 3; i++) {
		char id[24], body[512];
		snprintf(id, sizeof id, "party%d", i);
		bool have = false;
		size_t k;
		json_t *v;
		json_array_foreach(json_object_get(l.j, "items"), k, v)
			have = have || strcmp(str(v, "identity"), id) == 0;
		if (have)
			continue;
		uint8_t pk[32], sk[32];
		char hex[65];
		crypto_box_keypair(pk, sk);
		sodium_bin2hex(hex, sizeof hex, pk, sizeof pk);
		snprintf(body, sizeof body,
			 "{\"identity\": \"%s\", \"sealing_key\": \"%s\", \"endpoint\": \"https://localhost:9000\","
			 " \"attestation\": {\"platform\": \"simulated\", \"measurement\": \"00ff\"}}", id, hex);
		struct gresp p = gw("admin", "POST", "/admin/v1/parties", body, 201);
		gresp_free(&p);
	}
	gresp_free(&l);
}

static void create_session(const char *model, char sid[32])
{
	char body[256];
	snprintf(body, sizeof body, "{\"model\": \"%s\", \"ttl_s\": 3600}", model);
	struct gresp r = gw("admin", "POST", "/admin/v1/sessions", body, 201);
	snprintf(sid, 32, "%s", str(r.j, "id"));
	gresp_free(&r);
}

static void create_key(const char *sid, char key[96], char kid[32])
{
	char body[256];
	snprintf(body, sizeof body, "{\"sessions\": [\"%s\"], \"name\": \"test\", \"ttl_s\": 3600}", sid);
	struct gresp r = gw("admin", "POST", "/admin/v1/keys", body, 201);
	snprintf(key, 96, "%s", str(r.j, "key"));
	snprintf(kid, 32, "%s", str(r.j, "id"));
	ck_assert_str_eq(hdr(&r, "cache-control"), "no-store");
	gresp_free(&r);
}

/* The parties report their initialisation to the session service directly (that is
 * not the gateway's business), which makes the session ready. */
static void parties_report_ready(const char *sid)
{
	char path[96];
	snprintf(path, sizeof path, "/v1/sessions/%s/init", sid);
	for (int i = 0; i < 3; i++) {
		char who[16];
		snprintf(who, sizeof who, "party%d", i % 10);
		struct httpc *c = tu_client(pki, who, session_svc.url, IDENT_ROLE_SESSION);
		struct httpc_resp resp;
		static const char body[] = "{\"status\": \"ready\"}";
		ck_assert_int_eq(httpc_request(c, "POST", path, NULL, "application/json", body, sizeof body - 1,
					       &resp), 0);
		ck_assert_int_eq(resp.status, 200);
		httpc_resp_free(&resp);
		httpc_free(c);
	}
}

/* ---- tests ---- */

START_TEST(test_admin_crud_with_certificate)
{
	begin("crud");
	struct gresp r = gw("admin", "GET", "/admin/v1/whoami", NULL, 200);
	ck_assert_str_eq(str(r.j, "actor"), "cert:admin");
	ck_assert_str_eq(str(r.j, "credential"), "certificate");
	gresp_free(&r);
	char model[32], sid[32], path[192], body[512];
	create_model("crud-model", 3, model);
	ensure_parties();
	snprintf(path, sizeof path, "/admin/v1/models/%s", model);
	r = gw("admin", "GET", path, NULL, 200);
	ck_assert_int_eq(json_array_size(json_object_get(r.j, "shares")), 3);
	gresp_free(&r);
	/* A session through its state machine. */
	create_session(model, sid);
	snprintf(path, sizeof path, "/admin/v1/sessions/%s", sid);
	r = gw("admin", "GET", path, NULL, 200);
	ck_assert_str_eq(str(r.j, "state"), "created");
	ck_assert_int_eq(json_array_size(json_object_get(r.j, "parties")), 3);
	gresp_free(&r);
	parties_report_ready(sid);
	snprintf(path, sizeof path, "/admin/v1/sessions/%s/transition", sid);
	r = gw("admin", "POST", path, "{\"to\": \"active\", \"from\": \"ready\"}", 200);
	ck_assert_str_eq(str(r.j, "state"), "active");
	gresp_free(&r);
	r = gw("admin", "POST", path, "{\"to\": \"active\", \"from\": \"ready\"}", 409);
	ck_assert_str_eq(field(&r), "from");
	gresp_free(&r);
	/* Lists with filters and cursors. */
	char more[32];
	create_session(model, more);
	snprintf(path, sizeof path, "/admin/v1/sessions?model=%s&state=created&limit=1", model);
	r = gw("admin", "GET", path, NULL, 200);
	ck_assert_int_eq(json_array_size(json_object_get(r.j, "items")), 1);
	ck_assert_str_eq(str(json_array_get(json_object_get(r.j, "items"), 0), "id"), more);
	gresp_free(&r);
	r = gw("admin", "GET", "/admin/v1/sessions?limit=1", NULL, 200);
	ck_assert(json_is_string(json_object_get(r.j, "next")));
	snprintf(path, sizeof path, "/admin/v1/sessions?limit=1&after=%s", str(r.j, "next"));
	gresp_free(&r);
	r = gw("admin", "GET", path, NULL, 200);
	ck_assert_int_eq(json_array_size(json_object_get(r.j, "items")), 1);
	gresp_free(&r);
	/* A party: read, suspend with a pin, back to active. */
	r = gw("admin", "GET", "/admin/v1/parties?status=active&limit=1", NULL, 200);
	char pid[32];
	snprintf(pid, sizeof pid, "%s", str(json_array_get(json_object_get(r.j, "items"), 0), "id"));
	gresp_free(&r);
	snprintf(path, sizeof path, "/admin/v1/parties/%s", pid);
	char fp[65];
	hexrand(fp, 32);
	snprintf(body, sizeof body, "{\"status\": \"suspended\", \"cert_fingerprint\": \"%s\"}", fp);
	r = gw("admin", "PATCH", path, body, 200);
	ck_assert_str_eq(str(r.j, "status"), "suspended");
	ck_assert_str_eq(str(r.j, "cert_fingerprint"), fp);
	gresp_free(&r);
	r = gw("admin", "PATCH", path, "{\"status\": \"active\", \"cert_fingerprint\": \"\"}", 200);
	ck_assert(json_is_null(json_object_get(r.j, "cert_fingerprint")));
	gresp_free(&r);
	r = gw("admin", "GET", path, NULL, 200);
	gresp_free(&r);
	/* Keys: shown once, listed, revoked. */
	char key[96], kid[32];
	create_key(sid, key, kid);
	snprintf(path, sizeof path, "/admin/v1/keys/%s", kid);
	r = gw("admin", "GET", path, NULL, 200);
	ck_assert_ptr_null(json_object_get(r.j, "key"));
	ck_assert_str_eq(str(r.j, "state"), "active");
	gresp_free(&r);
	snprintf(path, sizeof path, "/admin/v1/keys?session=%s", sid);
	r = gw("admin", "GET", path, NULL, 200);
	ck_assert_int_eq(json_array_size(json_object_get(r.j, "items")), 1);
	gresp_free(&r);
	snprintf(path, sizeof path, "/admin/v1/keys/%s/revoke", kid);
	r = gw("admin", "POST", path, NULL, 200);
	ck_assert_str_eq(str(r.j, "state"), "revoked");
	gresp_free(&r);
	/* Close; models in use stay, unused ones go. */
	snprintf(path, sizeof path, "/admin/v1/sessions/%s/close", sid);
	r = gw("admin", "POST", path, "{\"reason\": \"done\"}", 200);
	ck_assert_str_eq(str(r.j, "state"), "closed");
	gresp_free(&r);
	r = gw("admin", "POST", path, NULL, 200); /* no body: allowed, and idempotent */
	gresp_free(&r);
	snprintf(path, sizeof path, "/admin/v1/models/%s", model);
	r = gw("admin", "DELETE", path, NULL, 409);
	gresp_free(&r);
	char scratch[32];
	create_model("crud-scratch", 2, scratch);
	snprintf(path, sizeof path, "/admin/v1/models/%s", scratch);
	r = gw("admin", "DELETE", path, NULL, 204);
	ck_assert_uint_eq(r.body.n, 0);
	gresp_free(&r);
	r = gw("admin", "GET", path, NULL, 404);
	gresp_free(&r);
	/* The audit log names the administrator behind the gateway, and verifies. */
	r = gw("admin", "GET", "/admin/v1/audit/head", NULL, 200);
	json_int_t seq = json_integer_value(json_object_get(r.j, "seq"));
	char hash[65];
	snprintf(hash, sizeof hash, "%s", str(r.j, "hash"));
	gresp_free(&r);
	ck_assert_int_ge(seq, 10);
	bool saw = false;
	char after[32] = "0";
	for (;;) {
		snprintf(path, sizeof path, "/admin/v1/audit?limit=100&after=%s", after);
		r = gw("admin", "GET", path, NULL, 200);
		size_t i;
		json_t *e;
		json_array_foreach(json_object_get(r.j, "items"), i, e) {
			saw = saw || !strcmp(str(e, "actor"), "gateway:gateway for cert:admin");
			ck_assert_ptr_null(strstr(str(e, "detail"), key));
		}
		bool last = !json_is_string(json_object_get(r.j, "next"));
		if (!last)
			snprintf(after, sizeof after, "%s", str(r.j, "next"));
		gresp_free(&r);
		if (last)
			break;
	}
	ck_assert(saw);
	snprintf(path, sizeof path, "/admin/v1/audit/verify?seq=%lld&hash=%s", (long long)seq, hash);
	r = gw("admin", "GET", path, NULL, 200);
	ck_assert(json_is_true(json_object_get(r.j, "ok")));
	ck_assert(json_is_true(json_object_get(r.j, "anchor_ok")));
	gresp_free(&r);
	validate_records();
}
END_TEST

START_TEST(test_admin_with_token)
{
	begin("token");
	struct gresp r = gw_token(token, "GET", "/admin/v1/whoami", NULL, 200);
	ck_assert_str_eq(str(r.j, "actor"), "token:ops");
	ck_assert_str_eq(str(r.j, "credential"), "token");
	gresp_free(&r);
	static const char body[] = "{\"name\": \"token-model\", \"dims\": {\"dim\": 64, \"hidden_dim\": 172,"
				   " \"n_layers\": 5, \"n_heads\": 8, \"n_kv_heads\": 4, \"vocab_size\": 512,"
				   " \"seq_len\": 512}, \"shares\": [\"" "0000000000000000000000000000000000000000000000000000000000000001"
				   "\", \"" "0000000000000000000000000000000000000000000000000000000000000002" "\"]}";
	r = gw_token(token, "POST", "/admin/v1/models", body, 201);
	char id[32];
	snprintf(id, sizeof id, "%s", str(r.j, "id"));
	gresp_free(&r);
	r = gw_token(token, "GET", "/admin/v1/audit?limit=500", NULL, 200);
	bool saw = false;
	size_t i;
	json_t *e;
	json_array_foreach(json_object_get(r.j, "items"), i, e)
		saw = saw || (!strcmp(str(json_object_get(e, "object"), "id"), id) &&
			      !strcmp(str(e, "actor"), "gateway:gateway for token:ops"));
	ck_assert(saw);
	gresp_free(&r);
	validate_records();
}
END_TEST

START_TEST(test_client_reads_its_session)
{
	begin("client");
	char model[32], sid[32], other[32], key[96], kid[32], path[128];
	create_model("client-model", 3, model);
	ensure_parties();
	create_session(model, sid);
	create_session(model, other);
	create_key(sid, key, kid);
	snprintf(path, sizeof path, "/admin/v1/sessions/%s", sid);
	struct gresp adm = gw("admin", "GET", path, NULL, 200);
	struct gresp r = client_get(gw_svc.url, key, sid, 200);
	ck_assert_str_eq(str(r.j, "id"), sid);
	ck_assert_str_eq(str(r.j, "state"), "created");
	json_t *m = json_object_get(r.j, "model");
	ck_assert_str_eq(str(m, "id"), model);
	ck_assert_str_eq(str(m, "name"), "client-model");
	ck_assert_int_eq(json_integer_value(json_object_get(json_object_get(m, "dims"), "vocab_size")), 512);
	json_t *ps = json_object_get(r.j, "parties"), *aps = json_object_get(adm.j, "parties");
	ck_assert_int_eq(json_array_size(ps), 3);
	for (size_t i = 0; i < 3; i++) {
		json_t *p = json_array_get(ps, i), *ap = json_array_get(aps, i);
		ck_assert_int_eq(json_integer_value(json_object_get(p, "index")), (json_int_t)i);
		ck_assert_str_eq(str(p, "sealing_key"), str(ap, "sealing_key"));
		ck_assert_str_eq(str(p, "identity"), str(ap, "identity"));
		ck_assert_str_eq(str(json_object_get(p, "attestation"), "platform"), "simulated");
		ck_assert(json_is_false(json_object_get(p, "initialised")));
		ck_assert_ptr_null(json_object_get(p, "endpoint")); /* operators only */
	}
	ck_assert_str_eq(hdr(&r, "cache-control"), "no-store");
	gresp_free(&r);
	gresp_free(&adm);
	/* The second read comes from the verification cache; the state is always fresh. */
	parties_report_ready(sid);
	r = client_get(gw_svc.url, key, sid, 200);
	ck_assert_str_eq(str(r.j, "state"), "ready");
	ck_assert(json_is_true(json_object_get(json_array_get(json_object_get(r.j, "parties"), 0), "initialised")));
	gresp_free(&r);
	/* Refusals: another session, an unknown or malformed id, no key, not a key, an
	 * unknown key, an admin token. */
	r = client_get(gw_svc.url, key, other, 403);
	gresp_free(&r);
	r = client_get(gw_svc.url, key, "ses_0000000000000000", 403);
	gresp_free(&r);
	r = client_get(gw_svc.url, key, "not-a-session", 404);
	ck_assert_str_eq(field(&r), "id");
	gresp_free(&r);
	r = client_get(gw_svc.url, NULL, sid, 401);
	ck_assert_str_eq(hdr(&r, "www-authenticate"), "Bearer realm=\"mimir\"");
	gresp_free(&r);
	r = client_get(gw_svc.url, "sk-not-ours", sid, 401);
	ck_assert_str_eq(hdr(&r, "www-authenticate"), "Bearer realm=\"mimir\", error=\"invalid_token\"");
	gresp_free(&r);
	char forged[96];
	snprintf(forged, sizeof forged, "%s", key);
	forged[strlen(forged) - 1] = forged[strlen(forged) - 1] == 'A' ? 'B' : 'A';
	r = client_get(gw_svc.url, forged, sid, 401);
	ck_assert_ptr_nonnull(strstr(str(r.j, "detail"), "not known"));
	gresp_free(&r);
	r = client_get(gw_svc.url, token, sid, 401);
	gresp_free(&r);
	/* The client API does not accept an API key on the admin API either. */
	char auth[128];
	snprintf(auth, sizeof auth, "Authorization: Bearer %s", key);
	const char *h[] = {auth, NULL};
	r = request(gw_svc.url, "client", "GET", "/admin/v1/models", h, NULL, 401);
	gresp_free(&r);
	/* Revoked: refused once the cache (300 ms here) has let go. */
	snprintf(path, sizeof path, "/admin/v1/keys/%s/revoke", kid);
	r = gw("admin", "POST", path, NULL, 200);
	gresp_free(&r);
	usleep(400 * 1000);
	r = client_get(gw_svc.url, key, sid, 401);
	ck_assert_ptr_nonnull(strstr(str(r.j, "detail"), "revoked"));
	gresp_free(&r);
	/* A closed session reads as closed. */
	char key2[96], kid2[32];
	create_key(other, key2, kid2);
	snprintf(path, sizeof path, "/admin/v1/sessions/%s/close", other);
	r = gw("admin", "POST", path, "{\"reason\": \"over\"}", 200);
	gresp_free(&r);
	r = client_get(gw_svc.url, key2, other, 200);
	ck_assert_str_eq(str(r.j, "state"), "closed");
	ck_assert_str_eq(str(r.j, "reason"), "over");
	gresp_free(&r);
	validate_records();
}
END_TEST

static size_t discard(char *p, size_t sz, size_t n, void *arg)
{
	(void)p;
	(void)arg;
	return sz * n;
}

START_TEST(test_admin_refusals)
{
	begin("refusals");
	/* No admin credential: a client certificate, a party certificate. */
	static const char *const who[] = {"client", "party0", "dealer"};
	for (size_t i = 0; i < 3; i++) {
		struct gresp r = gw(who[i], "GET", "/admin/v1/models", NULL, 401);
		ck_assert_str_eq(hdr(&r, "www-authenticate"), "Bearer realm=\"mimir-admin\"");
		gresp_free(&r);
	}
	struct gresp r = gw("client", "POST", "/admin/v1/keys", "{\"sessions\": [\"ses_0000000000000000\"]}", 401);
	gresp_free(&r);
	/* A wrong token, a malformed one. */
	char wrong[64];
	snprintf(wrong, sizeof wrong, "%s", token);
	wrong[20] = wrong[20] == 'x' ? 'y' : 'x';
	r = gw_token(wrong, "GET", "/admin/v1/whoami", NULL, 401);
	ck_assert_ptr_nonnull(strstr(str(r.j, "detail"), "unknown admin token"));
	ck_assert_str_eq(hdr(&r, "www-authenticate"), "Bearer realm=\"mimir-admin\", error=\"invalid_token\"");
	gresp_free(&r);
	r = gw_token("letmein", "GET", "/admin/v1/whoami", NULL, 401);
	gresp_free(&r);
	/* Nothing was written on anyone's behalf. */
	r = gw("admin", "GET", "/admin/v1/audit/head", NULL, 200);
	gresp_free(&r);
	/* Unknown endpoints and methods: the platform's 404 and 405. */
	r = gw("admin", "GET", "/admin/v1/nothing", NULL, 404);
	gresp_free(&r);
	r = gw("admin", "PUT", "/admin/v1/models", NULL, 405);
	ck_assert_ptr_nonnull(hdr(&r, "allow"));
	gresp_free(&r);
	/* Without a client certificate (the public edge takes clients that have none): the
	 * operations endpoints still need one, the admin API still needs a credential. */
	static const struct {
		const char *path;
		long want;
	} anon[] = {{"/healthz", 401}, {"/metrics", 401}, {"/admin/v1/models", 401}};
	for (size_t i = 0; i < sizeof anon / sizeof anon[0]; i++) {
		char url[160], ca[400];
		long status = 0;
		snprintf(url, sizeof url, "%s%s", gw_svc.url, anon[i].path);
		snprintf(ca, sizeof ca, "%s/ca.crt", pki);
		CURL *h = curl_easy_init();
		curl_easy_setopt(h, CURLOPT_URL, url);
		curl_easy_setopt(h, CURLOPT_CAINFO, ca);
		curl_easy_setopt(h, CURLOPT_TIMEOUT, 10L);
		curl_easy_setopt(h, CURLOPT_WRITEFUNCTION, discard);
		ck_assert_int_eq(curl_easy_perform(h), CURLE_OK);
		curl_easy_getinfo(h, CURLINFO_RESPONSE_CODE, &status);
		ck_assert_msg(status == anon[i].want, "%s without a certificate: %ld", anon[i].path, status);
		curl_easy_cleanup(h);
	}
	validate_records();
}
END_TEST

START_TEST(test_bad_input_names_the_field)
{
	begin("badinput");
	struct gresp r;
	static const struct {
		const char *path, *body, *field;
		long status;
	} cases[] = {
		{"/admin/v1/models", "{\"name\": 5}", "name", 400},
		{"/admin/v1/models", "{\"name\": \"m\", \"dims\": {\"dim\": 64, \"hidden_dim\": 172, \"n_layers\": 5,"
				     " \"n_kv_heads\": 4, \"vocab_size\": 512, \"seq_len\": 512}, \"shares\": []}",
		 "dims.n_heads", 400},
		{"/admin/v1/models", "{\"name\": \"m\", \"colour\": \"red\"}", "colour", 400},
		{"/admin/v1/parties", "{\"identity\": \"p\", \"sealing_key\": \"zz\"}", "sealing_key", 400},
		{"/admin/v1/sessions", "{\"model\": \"mdl_0000000000000000\", \"parties\": [1, 2]}", "parties[0]", 400},
		{"/admin/v1/keys", "{\"sessions\": []}", "sessions", 400},
	};
	for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
		r = gw("admin", "POST", cases[i].path, cases[i].body, cases[i].status);
		ck_assert_msg(!strcmp(field(&r), cases[i].field), "%s: field %s, want %s", cases[i].body,
			      field(&r), cases[i].field);
		gresp_free(&r);
	}
	/* The gateway's own checks: JSON syntax, media type, size, path ids, queries. */
	r = gw("admin", "POST", "/admin/v1/models", "{\"name\": ", 400);
	ck_assert_ptr_nonnull(strstr(str(r.j, "type"), "malformed"));
	gresp_free(&r);
	r = gw("admin", "POST", "/admin/v1/models", "[1, 2]", 400);
	gresp_free(&r);
	const char *form[] = {"Content-Type: application/x-www-form-urlencoded", NULL};
	r = request(gw_svc.url, "admin", "POST", "/admin/v1/models", form, "name=m", 415);
	ck_assert_str_eq(field(&r), "Content-Type");
	gresp_free(&r);
	char *big = malloc(70 * 1024);
	memset(big, ' ', 70 * 1024 - 1);
	big[0] = '{';
	big[70 * 1024 - 2] = '}';
	big[70 * 1024 - 1] = '\0';
	r = gw("admin", "POST", "/admin/v1/models", big, 413);
	gresp_free(&r);
	r = gw("admin", "POST", "/admin/v1/keys", big, 413);
	gresp_free(&r);
	free(big);
	r = gw("admin", "GET", "/admin/v1/models/mdl_0000000000000000", NULL, 404);
	gresp_free(&r);
	r = gw("admin", "GET", "/admin/v1/sessions/bad%3Fid", NULL, 404);
	ck_assert_str_eq(field(&r), "id");
	gresp_free(&r);
	r = gw("admin", "GET", "/admin/v1/models?limit=0", NULL, 400);
	ck_assert_str_eq(field(&r), "limit");
	gresp_free(&r);
	r = gw("admin", "GET", "/admin/v1/sessions?state=sleeping", NULL, 400);
	ck_assert_str_eq(field(&r), "state");
	gresp_free(&r);
	r = gw("admin", "GET", "/admin/v1/audit/verify?seq=1", NULL, 400);
	ck_assert_str_eq(field(&r), "hash");
	gresp_free(&r);
	r = gw("admin", "POST", "/admin/v1/sessions/ses_0000000000000000/transition", "{\"to\": \"dancing\"}", 400);
	ck_assert_str_eq(field(&r), "to");
	gresp_free(&r);
	validate_records();
}
END_TEST

START_TEST(test_rate_limits)
{
	begin("limits");
	struct tu_svc lim;
	ck_assert_int_eq(gateway_start(&lim, "gateway-limited", session_svc.url,
				       "\"limits\": {\"key_rate\": 1, \"key_burst\": 3, \"admin_rate\": 1,"
				       " \"admin_burst\": 2}"),
			 0);
	char model[32], sid[32], key[96], kid[32], key2[96], kid2[32];
	create_model("limit-model", 3, model);
	ensure_parties();
	create_session(model, sid);
	create_key(sid, key, kid);
	create_key(sid, key2, kid2);
	/* A burst of 3, then 429 with Retry-After. */
	for (int i = 0; i < 3; i++) {
		struct gresp r = client_get(lim.url, key, sid, 200);
		gresp_free(&r);
	}
	struct gresp r = client_get(lim.url, key, sid, 429);
	const char *ra = hdr(&r, "retry-after");
	ck_assert_ptr_nonnull(ra);
	long wait = strtol(ra, NULL, 10);
	ck_assert_int_ge(wait, 1);
	ck_assert_int_le(wait, 2);
	ck_assert_ptr_nonnull(strstr(str(r.j, "type"), "rate-limited"));
	gresp_free(&r);
	/* Each key has its own bucket. */
	r = client_get(lim.url, key2, sid, 200);
	gresp_free(&r);
	/* A made-up key of the right shape is limited too, before it costs a verification. */
	static const char fake[] = "mimir_sk_00000000000000ff_AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA";
	for (int i = 0; i < 3; i++) {
		r = client_get(lim.url, fake, sid, 401);
		gresp_free(&r);
	}
	r = client_get(lim.url, fake, sid, 429);
	gresp_free(&r);
	/* After Retry-After, the key is served again. */
	sleep((unsigned)wait);
	r = client_get(lim.url, key, sid, 200);
	gresp_free(&r);
	/* Administrators too, each on their own. */
	char auth[128];
	snprintf(auth, sizeof auth, "Authorization: Bearer %s", token);
	const char *h[] = {auth, NULL};
	for (int i = 0; i < 2; i++) {
		r = request(lim.url, "client", "GET", "/admin/v1/whoami", h, NULL, 200);
		gresp_free(&r);
	}
	r = request(lim.url, "client", "GET", "/admin/v1/whoami", h, NULL, 429);
	ck_assert_ptr_nonnull(hdr(&r, "retry-after"));
	gresp_free(&r);
	r = request(lim.url, "admin", "GET", "/admin/v1/whoami", NULL, NULL, 200);
	gresp_free(&r);
	/* Counted in the metrics. */
	r = request(lim.url, "admin", "GET", "/metrics", NULL, NULL, 200);
	ck_assert_ptr_nonnull(strstr(r.body.p, "mimir_gateway_rate_limited_total{scope=\"key\"} 2"));
	ck_assert_ptr_nonnull(strstr(r.body.p, "mimir_gateway_rate_limited_total{scope=\"admin\"} 1"));
	gresp_free(&r);
	tu_svc_stop(&lim);
	validate_records();
}
END_TEST

START_TEST(test_cors)
{
	begin("cors");
	char model[32], sid[32], key[96], kid[32], path[96];
	create_model("cors-model", 3, model);
	ensure_parties();
	create_session(model, sid);
	create_key(sid, key, kid);
	snprintf(path, sizeof path, "/v1/sessions/%s", sid);
	/* An allowed preflight. */
	const char *pre[] = {"Origin: " ORIGIN, "Access-Control-Request-Method: GET",
			     "Access-Control-Request-Headers: authorization, x-request-id", NULL};
	struct gresp r = request(gw_svc.url, "client", "OPTIONS", path, pre, NULL, 204);
	ck_assert_str_eq(hdr(&r, "access-control-allow-origin"), ORIGIN);
	ck_assert_ptr_nonnull(strstr(hdr(&r, "access-control-allow-methods"), "GET"));
	ck_assert_ptr_nonnull(strstr(hdr(&r, "access-control-allow-headers"), "Authorization"));
	ck_assert_str_eq(hdr(&r, "access-control-max-age"), "120");
	ck_assert_str_eq(hdr(&r, "vary"), "Origin");
	gresp_free(&r);
	/* Refused: another origin, a method the path lacks, a header not allowed. */
	const char *evil[] = {"Origin: https://evil.example", "Access-Control-Request-Method: GET", NULL};
	r = request(gw_svc.url, "client", "OPTIONS", path, evil, NULL, 403);
	ck_assert_str_eq(field(&r), "Origin");
	ck_assert_ptr_null(hdr(&r, "access-control-allow-origin"));
	gresp_free(&r);
	const char *del[] = {"Origin: " ORIGIN, "Access-Control-Request-Method: DELETE", NULL};
	r = request(gw_svc.url, "client", "OPTIONS", path, del, NULL, 403);
	ck_assert_str_eq(field(&r), "Access-Control-Request-Method");
	gresp_free(&r);
	const char *xh[] = {"Origin: " ORIGIN, "Access-Control-Request-Method: GET",
			    "Access-Control-Request-Headers: authorization, x-secret", NULL};
	r = request(gw_svc.url, "client", "OPTIONS", path, xh, NULL, 403);
	ck_assert_str_eq(field(&r), "Access-Control-Request-Headers");
	ck_assert_ptr_nonnull(strstr(str(r.j, "detail"), "x-secret"));
	gresp_free(&r);
	/* The admin API is not open to browsers unless cors.admin says so. */
	const char *adm[] = {"Origin: " ORIGIN, "Access-Control-Request-Method: GET", NULL};
	r = request(gw_svc.url, "client", "OPTIONS", "/admin/v1/models", adm, NULL, 403);
	ck_assert_ptr_nonnull(strstr(str(r.j, "detail"), "cors.admin"));
	gresp_free(&r);
	/* A plain OPTIONS says what the path allows. */
	r = request(gw_svc.url, "client", "OPTIONS", "/admin/v1/models", NULL, NULL, 204);
	ck_assert_ptr_nonnull(strstr(hdr(&r, "allow"), "POST"));
	gresp_free(&r);
	/* The actual request: the allowed origin gets its headers, others get none. */
	char auth[128];
	snprintf(auth, sizeof auth, "Authorization: Bearer %s", key);
	const char *get[] = {auth, "Origin: " ORIGIN, NULL};
	r = request(gw_svc.url, "client", "GET", path, get, NULL, 200);
	ck_assert_str_eq(hdr(&r, "access-control-allow-origin"), ORIGIN);
	ck_assert_ptr_nonnull(strstr(hdr(&r, "access-control-expose-headers"), "Retry-After"));
	gresp_free(&r);
	const char *get_evil[] = {auth, "Origin: https://evil.example", NULL};
	r = request(gw_svc.url, "client", "GET", path, get_evil, NULL, 200);
	ck_assert_ptr_null(hdr(&r, "access-control-allow-origin"));
	ck_assert_str_eq(hdr(&r, "vary"), "Origin");
	gresp_free(&r);
	/* Refusals carry them too, so the page can read the problem. */
	const char *bad[] = {"Authorization: Bearer nope", "Origin: " ORIGIN, NULL};
	r = request(gw_svc.url, "client", "GET", path, bad, NULL, 401);
	ck_assert_str_eq(hdr(&r, "access-control-allow-origin"), ORIGIN);
	gresp_free(&r);
	validate_records();
}
END_TEST

/* The validator is not a rubber stamp: responses that drift from the document fail. */
START_TEST(test_validator_catches_drift)
{
	begin("drift");
	static const char *const bad[] = {
		/* a field missing */
		"{\"method\":\"GET\",\"path\":\"/admin/v1/keys/key_0123456789abcdef\",\"status\":200,"
		"\"content_type\":\"application/json\",\"headers\":{},\"body\":\"{\\\"id\\\":\\\"key_0123456789abcdef\\\"}\"}",
		/* a status the operation does not have */
		"{\"method\":\"GET\",\"path\":\"/v1/sessions/ses_0123456789abcdef\",\"status\":418,"
		"\"content_type\":\"application/problem+json\",\"headers\":{},\"body\":\"{}\"}",
		/* a 429 without Retry-After */
		"{\"method\":\"GET\",\"path\":\"/v1/sessions/ses_0123456789abcdef\",\"status\":429,"
		"\"content_type\":\"application/problem+json\",\"headers\":{},\"body\":"
		"\"{\\\"type\\\":\\\"urn:mimir:problem:rate-limited\\\",\\\"title\\\":\\\"t\\\",\\\"status\\\":429}\"}",
		/* an error that is not problem+json */
		"{\"method\":\"GET\",\"path\":\"/admin/v1/models\",\"status\":401,"
		"\"content_type\":\"text/plain\",\"headers\":{\"www-authenticate\":\"Bearer\"},\"body\":\"no\"}",
	};
	for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
		char line[1024];
		int n = snprintf(line, sizeof line, "%s\n", bad[i]);
		ck_assert_int_eq(tu_write_file(records, line, (size_t)n), 0);
		ck_assert_msg(tu_system("node scripts/openapi-validate.mjs openapi/mimir.yaml %s >/dev/null 2>&1",
					records) == 1, "the validator accepted: %s", bad[i]);
	}
	/* And a live response, edited to lose one field, fails where the original passes. */
	unlink(records);
	struct gresp r = gw("admin", "GET", "/admin/v1/audit/head", NULL, 200);
	gresp_free(&r);
	validate_records();
	char *text = tu_read_file(records, NULL);
	ck_assert_ptr_nonnull(text);
	char *h = strstr(text, "\\\"hash\\\"");
	ck_assert_ptr_nonnull(h);
	memcpy(h, "\\\"hush\\\"", 8);
	ck_assert_int_eq(tu_write_file(records, text, strlen(text)), 0);
	free(text);
	ck_assert_int_eq(tu_system("node scripts/openapi-validate.mjs openapi/mimir.yaml %s >/dev/null 2>&1",
				   records), 1);
}
END_TEST

START_TEST(test_health_and_metrics)
{
	begin("health");
	struct gresp r = gw("client", "GET", "/healthz", NULL, 200);
	ck_assert_str_eq(str(r.j, "service"), "gateway");
	gresp_free(&r);
	r = gw("client", "GET", "/readyz", NULL, 200);
	gresp_free(&r);
	r = gw("admin", "GET", "/metrics", NULL, 200);
	ck_assert_ptr_nonnull(strstr(r.body.p, "mimir_gateway_upstream_requests_total{outcome=\"2xx\"}"));
	ck_assert_ptr_nonnull(strstr(r.body.p, "mimir_gateway_auth_failures_total"));
	ck_assert_ptr_nonnull(strstr(r.body.p, "mimir_http_requests_total"));
	gresp_free(&r);
	validate_records();
}
END_TEST

START_TEST(test_session_service_down)
{
	begin("down");
	char json[2048], db[400], secret[400];
	snprintf(db, sizeof db, "%s/down.db", tmp);
	snprintf(secret, sizeof secret, "%s/down.secret", tmp);
	struct tu_svc s, g;
	session_config(db, secret, 0, json, sizeof json);
	ck_assert_int_eq(tu_svc_start(&s, tmp, "mimir-session", "session-down", json, NULL), 0);
	ck_assert_int_eq(gateway_start(&g, "gateway-down", s.url, "\"keys\": {\"cache_ms\": 0}"), 0);
	const char *port = strrchr(s.url, ':') + 1;
	int sport = (int)strtol(port, NULL, 10);
	/* Something to find again after the restart. */
	char body[1024];
	snprintf(body, sizeof body,
		 "{\"name\": \"down\", \"dims\": {\"dim\": 64, \"hidden_dim\": 172, \"n_layers\": 5, \"n_heads\": 8,"
		 " \"n_kv_heads\": 4, \"vocab_size\": 512, \"seq_len\": 512}, \"shares\": [\"%064d\", \"%064d\"]}", 1, 2);
	struct gresp r = request(g.url, "admin", "POST", "/admin/v1/models", NULL, body, 201);
	char mid[32], path[96];
	snprintf(mid, sizeof mid, "%s", str(r.j, "id"));
	gresp_free(&r);
	tu_svc_stop(&s);
	/* Every API answers 503 with a problem that says what is wrong. */
	r = request(g.url, "admin", "GET", "/admin/v1/models", NULL, NULL, 503);
	ck_assert_ptr_nonnull(strstr(str(r.j, "detail"), "session service is unreachable"));
	ck_assert_ptr_nonnull(strstr(str(r.j, "type"), "unavailable"));
	ck_assert_str_eq(hdr(&r, "retry-after"), "1");
	gresp_free(&r);
	r = request(g.url, "admin", "POST", "/admin/v1/models", NULL, body, 503);
	gresp_free(&r);
	r = client_get(g.url, "mimir_sk_0123456789abcdef_AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA",
		       "ses_0123456789abcdef", 503);
	gresp_free(&r);
	/* Readiness says so (after its one-second memory). */
	usleep(1100 * 1000);
	r = request(g.url, "client", "GET", "/readyz", NULL, NULL, 503);
	ck_assert_ptr_nonnull(strstr(str(r.j, "detail"), "unreachable"));
	gresp_free(&r);
	r = request(g.url, "client", "GET", "/healthz", NULL, NULL, 200);
	gresp_free(&r);
	/* Back on the same port: served again, nothing lost. */
	session_config(db, secret, sport, json, sizeof json);
	ck_assert_int_eq(tu_svc_start(&s, tmp, "mimir-session", "session-down", json, NULL), 0);
	snprintf(path, sizeof path, "/admin/v1/models/%s", mid);
	r = request(g.url, "admin", "GET", path, NULL, NULL, 200);
	ck_assert_str_eq(str(r.j, "name"), "down");
	gresp_free(&r);
	usleep(1100 * 1000);
	r = request(g.url, "client", "GET", "/readyz", NULL, NULL, 200);
	gresp_free(&r);
	tu_svc_stop(&g);
	tu_svc_stop(&s);
	ck_assert(tu_file_contains(g.log, "event=gateway.upstream_unreachable", 0));
	validate_records();
}
END_TEST

/* Runs mimirctl with the dev PKI's CA and the given certificate (and the env prefix,
 * e.g. a token), output into out; returns its exit status. */
static int ctl(const char *env, const char *cert, const char *args, char *out, size_t cap)
{
	char bin[512], file[420];
	tu_build(bin, sizeof bin, "bin/mimirctl");
	snprintf(file, sizeof file, "%s/ctl.out", tmp);
	int rc = tu_system("%s %s --gateway %s --ca %s/ca.crt --cert %s/%s.crt --key %s/%s.key %s >%s 2>&1",
			   env ? env : "", bin, gw_svc.url, pki, pki, cert, pki, cert, args, file);
	char *text = tu_read_file(file, NULL);
	snprintf(out, cap, "%s", text ? text : "");
	free(text);
	return rc;
}

START_TEST(test_mimirctl)
{
	begin("ctl");
	char out[16384], args[1024], env[160];
	/* A model through the tool, as JSON for a script... */
	char h1[65], h2[65], h3[65];
	hexrand(h1, 32), hexrand(h2, 32), hexrand(h3, 32);
	snprintf(args, sizeof args, "--json models create --name ctl-model --dims 64,172,5,8,4,512,512"
		 " --share %s --share %s --share %s --description 'made by mimirctl'", h1, h2, h3);
	ck_assert_msg(ctl(NULL, "admin", args, out, sizeof out) == 0, "%s", out);
	json_t *m = json_loads(out, 0, NULL);
	ck_assert_msg(m != NULL, "not JSON: %s", out);
	char model[32];
	snprintf(model, sizeof model, "%s", str(m, "id"));
	ck_assert_str_eq(str(m, "description"), "made by mimirctl");
	json_decref(m);
	/* ...and as a table for a person. */
	ck_assert_int_eq(ctl(NULL, "admin", "models list --all", out, sizeof out), 0);
	ck_assert_ptr_nonnull(strstr(out, "ID"));
	ck_assert_ptr_nonnull(strstr(out, "ctl-model"));
	ck_assert_ptr_nonnull(strstr(out, model));
	ensure_parties();
	snprintf(args, sizeof args, "--json sessions create --model %s --ttl 600", model);
	ck_assert_msg(ctl(NULL, "admin", args, out, sizeof out) == 0, "%s", out);
	json_t *s = json_loads(out, 0, NULL);
	char sid[32];
	snprintf(sid, sizeof sid, "%s", str(s, "id"));
	ck_assert_int_eq(json_array_size(json_object_get(s, "parties")), 3);
	json_decref(s);
	snprintf(args, sizeof args, "sessions get %s", sid);
	ck_assert_int_eq(ctl(NULL, "admin", args, out, sizeof out), 0);
	ck_assert_ptr_nonnull(strstr(out, "state:"));
	ck_assert_ptr_nonnull(strstr(out, "party2"));
	/* A key: its text once, then usable by a client. */
	snprintf(args, sizeof args, "keys create --session %s --name from-ctl", sid);
	ck_assert_int_eq(ctl(NULL, "admin", args, out, sizeof out), 0);
	char *k = strstr(out, "key: mimir_sk_");
	ck_assert_ptr_nonnull(k);
	char key[96];
	snprintf(key, sizeof key, "%.69s", k + 5);
	struct gresp r = client_get(gw_svc.url, key, sid, 200);
	gresp_free(&r);
	/* With an admin token instead of an admin certificate; the audit log says who. */
	snprintf(env, sizeof env, "MIMIR_ADMIN_TOKEN=%s", token);
	ck_assert_int_eq(ctl(env, "client", "whoami", out, sizeof out), 0);
	ck_assert_ptr_nonnull(strstr(out, "token:ops"));
	snprintf(args, sizeof args, "sessions close %s --reason ctl-done", sid);
	ck_assert_int_eq(ctl(env, "client", args, out, sizeof out), 0);
	ck_assert_int_eq(ctl(NULL, "admin", "--json audit list --all", out, sizeof out), 0);
	ck_assert_ptr_nonnull(strstr(out, "gateway:gateway for token:ops"));
	ck_assert_int_eq(ctl(NULL, "admin", "audit verify", out, sizeof out), 0);
	ck_assert_ptr_nonnull(strstr(out, "ok:"));
	/* Exit statuses a script can act on. */
	ck_assert_int_eq(ctl(NULL, "admin", "models get mdl_0000000000000000", out, sizeof out), 5);
	ck_assert_ptr_nonnull(strstr(out, "404"));
	snprintf(args, sizeof args, "models delete %s", model);
	ck_assert_int_eq(ctl(NULL, "admin", args, out, sizeof out), 6);
	ck_assert_int_eq(ctl(NULL, "admin", "sessions create --model mdl_0000000000000000 --party x --party y",
			     out, sizeof out), 7);
	ck_assert_ptr_nonnull(strstr(out, "field"));
	ck_assert_int_eq(ctl(NULL, "client", "models list", out, sizeof out), 4);
	ck_assert_int_eq(ctl(NULL, "admin", "models frobnicate", out, sizeof out), 2);
	ck_assert_int_eq(ctl(NULL, "admin", "models list --limit 0", out, sizeof out), 2);
	ck_assert_int_eq(ctl(NULL, "admin", "--bogus models list", out, sizeof out), 2);
	ck_assert_int_eq(ctl(NULL, "admin", "--help", out, sizeof out), 0);
	ck_assert_ptr_nonnull(strstr(out, "Exit status"));
	char bin[512];
	tu_build(bin, sizeof bin, "bin/mimirctl");
	ck_assert_int_eq(tu_system("%s --gateway https://localhost:1 --ca %s/ca.crt --cert %s/admin.crt"
				   " --key %s/admin.key whoami >/dev/null 2>&1", bin, pki, pki, pki), 3);
	/* token new: a token and the line for the tokens file, in the gateway's format. */
	ck_assert_int_eq(ctl(NULL, "admin", "--json token new --name carol", out, sizeof out), 0);
	json_t *t = json_loads(out, 0, NULL);
	ck_assert_ptr_nonnull(t);
	ck_assert_str_eq(str(t, "name"), "carol");
	ck_assert_int_eq(strlen(str(t, "token")), 52);
	uint8_t h[32];
	char hex[65];
	static const char domain[] = "mimir-admin-token-v1";
	crypto_generichash_state st;
	crypto_generichash_init(&st, NULL, 0, 32);
	crypto_generichash_update(&st, (const uint8_t *)domain, sizeof domain);
	crypto_generichash_update(&st, (const uint8_t *)str(t, "token"), 52);
	crypto_generichash_final(&st, h, 32);
	sodium_bin2hex(hex, sizeof hex, h, 32);
	ck_assert_str_eq(str(t, "hash"), hex);
	json_decref(t);
	validate_records();
}
END_TEST

START_TEST(test_bad_configuration_is_refused)
{
	begin("config");
	/* Not a token file: the gateway refuses to start and says which line. */
	char bad[400], json[4096];
	snprintf(bad, sizeof bad, "%s/bad-tokens", tmp);
	ck_assert_int_eq(tu_write_file(bad, "ops not-a-hash\n", 15), 0);
	chmod(bad, 0600);
	struct tu_svc g;
	snprintf(json, sizeof json,
		 "{\"http\": {\"port\": 0}, \"tls\": {\"cert\": \"%s/gateway.crt\", \"key\": \"%s/gateway.key\","
		 " \"ca\": \"%s/ca.crt\"}, \"session\": {\"url\": \"%s\", \"ca\": \"%s/ca.crt\","
		 " \"cert\": \"%s/gateway.crt\", \"key\": \"%s/gateway.key\"}, \"admin\": {\"tokens_file\": \"%s\"}}",
		 pki, pki, pki, session_svc.url, pki, pki, pki, bad);
	ck_assert_int_eq(tu_svc_start(&g, tmp, "mimir-gateway", "gateway-badtokens", json, NULL), -1);
	int st = tu_proc_stop(&g.proc, 0, 5000);
	ck_assert(WIFEXITED(st) && WEXITSTATUS(st) == 1);
	ck_assert(tu_file_contains(g.log, "line=1", 0));
	/* A token file anyone may write to would let anyone add an administrator. */
	chmod(token_file, 0666);
	snprintf(json, sizeof json,
		 "{\"http\": {\"port\": 0}, \"tls\": {\"cert\": \"%s/gateway.crt\", \"key\": \"%s/gateway.key\","
		 " \"ca\": \"%s/ca.crt\"}, \"session\": {\"url\": \"%s\", \"ca\": \"%s/ca.crt\","
		 " \"cert\": \"%s/gateway.crt\", \"key\": \"%s/gateway.key\"}, \"admin\": {\"tokens_file\": \"%s\"}}",
		 pki, pki, pki, session_svc.url, pki, pki, pki, token_file);
	ck_assert_int_eq(tu_svc_start(&g, tmp, "mimir-gateway", "gateway-openfile", json, NULL), -1);
	st = tu_proc_stop(&g.proc, 0, 5000);
	chmod(token_file, 0600);
	ck_assert(WIFEXITED(st) && WEXITSTATUS(st) == 1);
	ck_assert(tu_file_contains(g.log, "writable by group or others", 0));
	/* Mutual TLS to the session service is not optional. */
	snprintf(json, sizeof json,
		 "{\"http\": {\"port\": 0}, \"tls\": {\"cert\": \"%s/gateway.crt\", \"key\": \"%s/gateway.key\","
		 " \"ca\": \"%s/ca.crt\"}, \"session\": {\"url\": \"%s\"}}", pki, pki, pki, session_svc.url);
	ck_assert_int_eq(tu_svc_start(&g, tmp, "mimir-gateway", "gateway-nocert", json, NULL), -1);
	st = tu_proc_stop(&g.proc, 0, 5000);
	ck_assert(WIFEXITED(st) && WEXITSTATUS(st) == 1);
	ck_assert(tu_file_contains(g.log, "session.ca", 0));
	/* Nothing was answered, so there is nothing to validate; the document is. */
	ck_assert_int_eq(tu_system("node scripts/openapi-validate.mjs openapi/mimir.yaml --document >/dev/null"), 0);
}
END_TEST

Suite *suite(void)
{
	Suite *s = suite_create("gateway");
	TCase *tc = tcase_create("gateway");
	tcase_add_unchecked_fixture(tc, setup, teardown);
	tcase_set_timeout(tc, 120);
	tcase_add_test(tc, test_admin_crud_with_certificate);
	tcase_add_test(tc, test_admin_with_token);
	tcase_add_test(tc, test_client_reads_its_session);
	tcase_add_test(tc, test_admin_refusals);
	tcase_add_test(tc, test_bad_input_names_the_field);
	tcase_add_test(tc, test_rate_limits);
	tcase_add_test(tc, test_cors);
	tcase_add_test(tc, test_health_and_metrics);
	tcase_add_test(tc, test_validator_catches_drift);
	tcase_add_test(tc, test_mimirctl);
	tcase_add_test(tc, test_session_service_down);
	tcase_add_test(tc, test_bad_configuration_is_refused);
	suite_add_tcase(s, tc);
	return s;
}
