/* Integration: the real mimir-attest binary on loopback, driven through common/attestc
 * (the library a party uses) and raw httpc requests. Proves: a party with simulated
 * evidence under the development policy gets a certificate whose Mimir extension says
 * party / simulated / its measurement / the hash of its evidence, and with it calls
 * mimir-example (whose tls.ca is the attestation CA) over mutual TLS, while a
 * development-CA certificate is refused there; the production policy refuses the same
 * request; a nonce never issued, a reused nonce, an expired nonce, evidence bound to
 * another TLS key or X25519 key, and malformed bodies are each refused with their own
 * check and reason; the nonce table is bounded; the real SEV-SNP, TDX and Nitro vectors
 * verify through the API at their recorded time (testing.verify_time) and fail where
 * they must (binding, measurement, debug), at the current time the 2024 Nitro chain is
 * expired; revocation reaches a signed CRL and survives a restart; the TLS rules of the
 * optional-client-certificate server (401 for anonymous callers outside the public
 * routes, foreign certificates refused in the handshake); the CA key's mode is
 * checked; the tool commands (request, renew, verify, collect, crl); /metrics passes
 * promtool; one client address flooding the challenge endpoint gets 429 with
 * Retry-After (its rate, its share of live nonces) while another address still gets
 * nonces from the same table. */
#define _GNU_SOURCE
#include <curl/curl.h>
#include <openssl/bn.h>
#include <openssl/pem.h>
#include <openssl/x509.h>
#include <signal.h>
#include <sodium.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "attest/attest.h"
#include "attestc/attestc.h"
#include "err/err.h"
#include "httpc/httpc.h"
#include "ident/ident.h"
#include "svcproc.h"
#include "testutil.h"

static char tmp[256], pki[300], aca[300], roots[512], dev_policy[320], prod_policy[320],
	vec_policy[320], pki_ca[400], bin[512];
static struct tu_svc att; /* the development instance, for the whole suite */

#define MILAN_MEAS "b07af9620f3b839b47996422ddec6058338951d984e312115131ea82705eaf5b6bdf8a9ece31a5a608eb0cf2e4872b01"
#define TDX4_MRTD "91eb2b44d141d4ece09f0c75c2c53d247a3c68edd7fafe8a3520c942a604a407de03ae6dc5f87f27428b2538873118b7"
#define NITRO_PCR0 "e72a46ca80a260fb044a125442f0c7e331813bcbaf9724d9f3857758992766f2d65710a27aa94ae3949dd54e7c9fe86a"
#define ZERO48 "000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000"

static const uint8_t sim_meas[48] = {
	0x5a, 0x11, 0x22, 0x33, 0x44, 0x55, 0x66, 0x77, 0x88, 0x99, 0xaa, 0xbb, 0xcc, 0xdd, 0xee, 0xff,
	0x01, 0x02, 0x03, 0x04, 0x05, 0x06, 0x07, 0x08, 0x09, 0x0a, 0x0b, 0x0c, 0x0d, 0x0e, 0x0f, 0x10,
	0x5a, 0x5a, 0x5a, 0x5a, 0x5a, 0x5a, 0x5a, 0x5a, 0x5a, 0x5a, 0x5a, 0x5a, 0x5a, 0x5a, 0x5a, 0x5a,
};

static void write_text(const char *path, const char *text)
{
	ck_assert_int_eq(tu_write_file(path, text, strlen(text)), 0);
}

/* An attest instance named name (its config, port and log files in tmp) with the given
 * policy and extra top-level JSON members. */
static int start_attest(struct tu_svc *s, const char *name, const char *policy, const char *extra)
{
	char json[4096];
	snprintf(json, sizeof json,
		 "{\"http\": {\"port\": 0, \"threads\": 4, \"idle_timeout_s\": 5, \"drain_timeout_ms\": 3000},"
		 " \"tls\": {\"cert\": \"%s/attest.crt\", \"key\": \"%s/attest.key\", \"ca\": \"%s/ca.crt\"},"
		 " \"ca\": {\"cert\": \"%s/ca.crt\", \"key\": \"%s/ca.key\"}, \"policy\": {\"file\": \"%s\"},"
		 " \"roots\": {\"dir\": \"%s\"}%s%s}",
		 pki, pki, pki, aca, aca, policy, roots, extra ? ", " : "", extra ? extra : "");
	return tu_svc_start(s, tmp, "mimir-attest", name, json, NULL);
}

static void setup(void)
{
	char cwd[256];
	ck_assert_ptr_nonnull(getcwd(cwd, sizeof cwd));
	snprintf(roots, sizeof roots, "%s/attest/roots", cwd);
	tu_tmpdir(tmp, sizeof tmp);
	snprintf(pki, sizeof pki, "%s/pki", tmp);
	snprintf(aca, sizeof aca, "%s/aca", tmp);
	snprintf(pki_ca, sizeof pki_ca, "%s/ca.crt", pki);
	tu_build(bin, sizeof bin, "bin/mimir-attest");
	/* The deployment's CA (service TLS certificates, administrators) and, apart from it,
	 * the attestation CA that signs attested certificates. */
	ck_assert_int_eq(tu_pki(tmp, "dev --out %s", pki), 0);
	ck_assert_int_eq(tu_pki(tmp, "ca --out %s --cn 'Mimir Attestation CA'", aca), 0);
	ck_assert_int_eq(tu_pki(tmp, "issue --ca %s --role gateway --name example --dns localhost --ip 127.0.0.1 --out %s",
				aca, aca), 0);
	ck_assert_int_eq(tu_pki(tmp, "ca --out %s/other --cn 'Someone Else CA'", tmp), 0);
	ck_assert_int_eq(tu_pki(tmp, "issue --ca %s/other --role admin --name rogue --out %s/other", tmp, tmp), 0);
	snprintf(dev_policy, sizeof dev_policy, "%s/policy-dev.json", tmp);
	snprintf(prod_policy, sizeof prod_policy, "%s/policy-prod.json", tmp);
	snprintf(vec_policy, sizeof vec_policy, "%s/policy-vectors.json", tmp);
	write_text(dev_policy, "{\"version\": 1, \"roles\": {\"party\": {\"simulated\": {}}, \"dealer\": {\"simulated\": {}}}}");
	write_text(prod_policy, "{\"version\": 1, \"roles\": {\"party\": {\"sev-snp\": {\"measurements\": [\"" MILAN_MEAS
				"\"], \"debug\": false}}}}");
	write_text(vec_policy, "{\"version\": 1, \"roles\": {\"party\": {"
			       "\"sev-snp\": {\"measurements\": [\"" MILAN_MEAS "\"], \"debug\": true},"
			       "\"tdx\": {\"measurements\": [\"" TDX4_MRTD "\"], \"tcb_status\": [\"UpToDate\"]},"
			       "\"nitro\": {\"measurements\": [\"" NITRO_PCR0 "\", \"" ZERO48 "\"]}}}}");
	char extra[512];
	snprintf(extra, sizeof extra, "\"revocations\": {\"file\": \"%s/revoked-dev.jsonl\"}", tmp);
	ck_assert_int_eq(start_attest(&att, "attest", dev_policy, extra), 0);
}

static void teardown(void)
{
	tu_svc_stop(&att);
	tu_rmrf(tmp);
}

static struct attestc_opts opts_for(const char *url, enum ident_platform p, enum ident_role role)
{
	struct attestc_opts o = {.url = url, .ca_file = pki_ca, .timeout_ms = 15000, .platform = p, .role = role};
	o.collect.snp_vmpl = -1;
	o.collect.sim_measurement = sim_meas;
	o.collect.sim_measurement_len = sizeof sim_meas;
	return o;
}

static EVP_PKEY *new_key(void)
{
	EVP_PKEY *k = NULL;
	ck_assert_int_eq(ident_key_new(&k), 0);
	return k;
}

/* Challenge, then simulated evidence bound to (bind_key, bind_x) and the nonce, then a
 * post with (key, x). Returns attestc_post's code; err says why. */
static int attest_bound(const char *url, EVP_PKEY *bind_key, const uint8_t bind_x[32], EVP_PKEY *key,
			const uint8_t x[32], struct attestc_result *res, struct attestc_error *err,
			struct attestc_evidence *ev_out)
{
	struct attestc_opts o = opts_for(url, IDENT_PLATFORM_SIMULATED, IDENT_ROLE_PARTY);
	uint8_t nonce[32], rd[64];
	ck_assert_int_eq(attestc_challenge(&o, nonce, err), 0);
	ck_assert_int_eq(attestc_binding(bind_key, bind_x, nonce, 32, rd), 0);
	struct attestc_evidence ev;
	ck_assert_int_eq(attestc_collect(IDENT_PLATFORM_SIMULATED, rd, &o.collect, &ev, err), 0);
	int rc = attestc_post(&o, nonce, key, x, &ev, res, err);
	if (ev_out)
		*ev_out = ev;
	else
		attestc_evidence_free(&ev);
	return rc;
}

static void assert_refusal(int rc, const struct attestc_error *e, long status, const char *check,
			   const char *reason, const char *field)
{
	ck_assert_msg(rc != 0, "expected a refusal (%s), got a certificate", reason);
	ck_assert_msg(e->status == status, "status %ld, want %ld: %s", e->status, status, e->detail);
	if (check)
		ck_assert_msg(!strcmp(e->check, check), "check '%s', want '%s': %s", e->check, check, e->detail);
	if (reason)
		ck_assert_msg(!strcmp(e->reason, reason), "reason '%s', want '%s': %s", e->reason, reason, e->detail);
	if (field)
		ck_assert_msg(!strcmp(e->field, field), "field '%s', want '%s': %s", e->field, field, e->detail);
}

static void save_key(const char *path, EVP_PKEY *k)
{
	FILE *f = fopen(path, "w");
	ck_assert_ptr_nonnull(f);
	ck_assert_int_eq(PEM_write_PrivateKey(f, k, NULL, NULL, 0, NULL, NULL), 1);
	fclose(f);
	chmod(path, 0600);
}

static void cert_ident(const char *pem, struct ident *id)
{
	BIO *b = BIO_new_mem_buf(pem, -1);
	X509 *x = PEM_read_bio_X509(b, NULL, NULL, NULL);
	BIO_free(b);
	ck_assert_ptr_nonnull(x);
	ck_assert_int_eq(ident_from_x509(x, id), 0);
	X509_free(x);
}

static struct httpc *anon_client(const char *url)
{
	struct httpc_opts o = {.base_url = url, .ca_file = pki_ca, .timeout_ms = 15000, .retries = 0};
	struct httpc *c = NULL;
	ck_assert_int_eq(httpc_new(&c, &o), 0);
	return c;
}

static long post_raw(struct httpc *c, const char *path, const char *body, json_t **out)
{
	struct httpc_resp r;
	ck_assert_int_eq(httpc_request(c, "POST", path, NULL, "application/json", body, strlen(body), &r), 0);
	long st = r.status;
	if (out) {
		*out = json_loadb(r.body, r.len, 0, NULL);
		ck_assert_msg(*out != NULL, "%s: not JSON: %s", path, r.body);
	}
	httpc_resp_free(&r);
	return st;
}

/* ---- the development policy: a certificate, and mTLS with it ---- */

START_TEST(test_dev_policy_certificate_and_mtls)
{
	EVP_PKEY *key = new_key();
	uint8_t x[32];
	randombytes_buf(x, sizeof x);
	struct attestc_opts o = opts_for(att.url, IDENT_PLATFORM_SIMULATED, IDENT_ROLE_PARTY);
	const char *dns[] = {"localhost"};
	o.name = "party0";
	o.dns = dns;
	o.n_dns = 1;
	uint8_t nonce[32], rd[64];
	struct attestc_error err;
	struct attestc_result res;
	struct attestc_evidence ev;
	ck_assert_int_eq(attestc_challenge(&o, nonce, &err), 0);
	ck_assert_int_eq(attestc_binding(key, x, nonce, 32, rd), 0);
	ck_assert_int_eq(attestc_collect(IDENT_PLATFORM_SIMULATED, rd, &o.collect, &ev, &err), 0);
	int64_t t0 = (int64_t)time(NULL);
	int rc = attestc_post(&o, nonce, key, x, &ev, &res, &err);
	ck_assert_msg(rc == 0, "attestation refused: %s", err.detail);

	/* The certificate says what was attested. */
	struct ident id;
	cert_ident(res.cert_pem, &id);
	ck_assert_str_eq(id.cn, "party0");
	ck_assert(id.has_extension);
	ck_assert_int_eq(id.role, IDENT_ROLE_PARTY);
	ck_assert_int_eq(id.platform, IDENT_PLATFORM_SIMULATED);
	ck_assert_uint_eq(id.measurement_len, sizeof sim_meas);
	ck_assert_mem_eq(id.measurement, sim_meas, sizeof sim_meas);
	uint8_t h[32];
	crypto_hash_sha256(h, ev.data, ev.len);
	ck_assert(id.has_evidence_hash);
	ck_assert_mem_eq(id.evidence_hash, h, 32);
	ck_assert_mem_eq(res.evidence_sha256, h, 32);
	ck_assert_uint_eq(id.n_dns, 1);
	ck_assert_str_eq(id.dns[0], "localhost");
	/* One hour (the default), backdated five minutes like every Mimir leaf. */
	ck_assert_int_eq(id.not_after - id.not_before, 3600 + 300);
	ck_assert(id.not_after >= t0 + 3600 - 5 && id.not_after <= t0 + 3600 + 60);
	ck_assert(res.renew_after > t0 && res.renew_after < id.not_after);
	ck_assert_str_eq(res.serial, id.serial);
	attestc_evidence_free(&ev);

	/* Simulated evidence is loud on every use. */
	ck_assert(tu_file_contains(att.log, "level=warn service=attest event=attest.simulated_accepted", 2000));
	ck_assert(tu_file_contains(att.log, "level=warn service=attest event=attest.issued", 2000));

	/* With it, the party calls a service whose tls.ca is the attestation CA. */
	char crt[400], kpath[400], cfg[1024];
	snprintf(crt, sizeof crt, "%s/party0.crt", tmp);
	snprintf(kpath, sizeof kpath, "%s/party0.key", tmp);
	write_text(crt, res.cert_pem);
	save_key(kpath, key);
	snprintf(cfg, sizeof cfg,
		 "{\"http\": {\"port\": 0}, \"tls\": {\"cert\": \"%s/example.crt\", \"key\": \"%s/example.key\", "
		 "\"ca\": \"%s/ca.crt\"}}",
		 aca, aca, aca);
	struct tu_svc ex;
	ck_assert_int_eq(tu_svc_start(&ex, tmp, "mimir-example", "example", cfg, NULL), 0);
	char aca_ca[400];
	snprintf(aca_ca, sizeof aca_ca, "%s/ca.crt", aca);
	struct httpc_opts ho = {.base_url = ex.url, .ca_file = aca_ca, .cert_file = crt, .key_file = kpath,
				.timeout_ms = 15000, .retries = 0};
	struct httpc *c;
	ck_assert_int_eq(httpc_new(&c, &ho), 0);
	struct httpc_resp r;
	ck_assert_int_eq(httpc_request(c, "GET", "/v1/whoami", NULL, NULL, NULL, 0, &r), 0);
	ck_assert_msg(r.status == 200, "whoami: %ld %s", r.status, r.body);
	json_t *j = json_loadb(r.body, r.len, 0, NULL);
	ck_assert_str_eq(json_string_value(json_object_get(j, "role")), "party");
	ck_assert_str_eq(json_string_value(json_object_get(j, "platform")), "simulated");
	ck_assert_str_eq(json_string_value(json_object_get(j, "cn")), "party0");
	char mh[97];
	sodium_bin2hex(mh, sizeof mh, sim_meas, sizeof sim_meas);
	ck_assert_str_eq(json_string_value(json_object_get(j, "measurement")), mh);
	json_decref(j);
	httpc_resp_free(&r);
	httpc_free(c);
	/* A certificate of the development CA is no attested identity there. */
	char dcrt[400], dkey[400];
	snprintf(dcrt, sizeof dcrt, "%s/party0.crt", pki);
	snprintf(dkey, sizeof dkey, "%s/party0.key", pki);
	ho.cert_file = dcrt;
	ho.key_file = dkey;
	ck_assert_int_eq(httpc_new(&c, &ho), 0);
	ck_assert_int_ne(httpc_request(c, "GET", "/v1/whoami", NULL, NULL, NULL, 0, &r), 0);
	ck_assert_int_eq(r.status, 0);
	httpc_resp_free(&r);
	httpc_free(c);
	tu_svc_stop(&ex);
	attestc_result_free(&res);
	EVP_PKEY_free(key);
}
END_TEST

START_TEST(test_prod_policy_refuses_simulated)
{
	struct tu_svc p;
	ck_assert_int_eq(start_attest(&p, "attest-prod", prod_policy, NULL), 0);
	EVP_PKEY *key = new_key();
	uint8_t x[32];
	randombytes_buf(x, sizeof x);
	struct attestc_opts o = opts_for(p.url, IDENT_PLATFORM_SIMULATED, IDENT_ROLE_PARTY);
	struct attestc_result res;
	struct attestc_error err;
	int rc = attestc_request(&o, key, x, &res, &err);
	assert_refusal(rc, &err, 403, "policy", "policy", "platform");
	ck_assert_int_eq(err.code, ERR_ATTESTATION);
	ck_assert(tu_file_contains(p.log, "event=attest.rejected", 2000));
	ck_assert(!tu_file_contains(p.log, "event=attest.issued", 0));
	/* The same request is fine under the development policy: only the policy differs. */
	o.url = att.url;
	ck_assert_int_eq(attestc_request(&o, key, x, &res, &err), 0);
	attestc_result_free(&res);
	EVP_PKEY_free(key);
	tu_svc_stop(&p);
}
END_TEST

/* ---- freshness and binding ---- */

START_TEST(test_wrong_nonce)
{
	EVP_PKEY *key = new_key();
	uint8_t x[32], nonce[32], rd[64];
	randombytes_buf(x, sizeof x);
	randombytes_buf(nonce, sizeof nonce); /* never issued */
	struct attestc_opts o = opts_for(att.url, IDENT_PLATFORM_SIMULATED, IDENT_ROLE_PARTY);
	struct attestc_evidence ev;
	struct attestc_result res;
	struct attestc_error err;
	ck_assert_int_eq(attestc_binding(key, x, nonce, 32, rd), 0);
	ck_assert_int_eq(attestc_collect(IDENT_PLATFORM_SIMULATED, rd, &o.collect, &ev, &err), 0);
	int rc = attestc_post(&o, nonce, key, x, &ev, &res, &err);
	assert_refusal(rc, &err, 403, "freshness", "nonce_unknown", "nonce");
	attestc_evidence_free(&ev);
	EVP_PKEY_free(key);
}
END_TEST

START_TEST(test_reused_nonce)
{
	EVP_PKEY *key = new_key();
	uint8_t x[32], nonce[32], rd[64];
	randombytes_buf(x, sizeof x);
	struct attestc_opts o = opts_for(att.url, IDENT_PLATFORM_SIMULATED, IDENT_ROLE_PARTY);
	struct attestc_evidence ev;
	struct attestc_result res;
	struct attestc_error err;
	ck_assert_int_eq(attestc_challenge(&o, nonce, &err), 0);
	ck_assert_int_eq(attestc_binding(key, x, nonce, 32, rd), 0);
	ck_assert_int_eq(attestc_collect(IDENT_PLATFORM_SIMULATED, rd, &o.collect, &ev, &err), 0);
	ck_assert_int_eq(attestc_post(&o, nonce, key, x, &ev, &res, &err), 0);
	attestc_result_free(&res);
	/* The very same request again: a replay. */
	int rc = attestc_post(&o, nonce, key, x, &ev, &res, &err);
	assert_refusal(rc, &err, 403, "freshness", "nonce_reused", "nonce");
	/* A refused attempt spends its nonce too: no retrying with other evidence. */
	ck_assert_int_eq(attestc_challenge(&o, nonce, &err), 0);
	EVP_PKEY *other = new_key();
	ck_assert_int_ne(attestc_post(&o, nonce, other, x, &ev, &res, &err), 0); /* wrong binding */
	ck_assert_int_eq(attestc_binding(key, x, nonce, 32, rd), 0);
	attestc_evidence_free(&ev);
	ck_assert_int_eq(attestc_collect(IDENT_PLATFORM_SIMULATED, rd, &o.collect, &ev, &err), 0);
	rc = attestc_post(&o, nonce, key, x, &ev, &res, &err);
	assert_refusal(rc, &err, 403, "freshness", "nonce_reused", "nonce");
	attestc_evidence_free(&ev);
	EVP_PKEY_free(other);
	EVP_PKEY_free(key);
}
END_TEST

START_TEST(test_expired_nonce)
{
	struct tu_svc p;
	ck_assert_int_eq(start_attest(&p, "attest-short", dev_policy, "\"nonce\": {\"lifetime_s\": 1}"), 0);
	EVP_PKEY *key = new_key();
	uint8_t x[32], nonce[32], rd[64];
	randombytes_buf(x, sizeof x);
	struct attestc_opts o = opts_for(p.url, IDENT_PLATFORM_SIMULATED, IDENT_ROLE_PARTY);
	struct attestc_evidence ev;
	struct attestc_result res;
	struct attestc_error err;
	ck_assert_int_eq(attestc_challenge(&o, nonce, &err), 0);
	ck_assert_int_eq(attestc_binding(key, x, nonce, 32, rd), 0);
	ck_assert_int_eq(attestc_collect(IDENT_PLATFORM_SIMULATED, rd, &o.collect, &ev, &err), 0);
	usleep(1500000);
	int rc = attestc_post(&o, nonce, key, x, &ev, &res, &err);
	assert_refusal(rc, &err, 403, "freshness", "nonce_expired", "nonce");
	/* Within its lifetime the same steps succeed. */
	ck_assert_int_eq(attestc_request(&o, key, x, &res, &err), 0);
	attestc_result_free(&res);
	attestc_evidence_free(&ev);
	EVP_PKEY_free(key);
	tu_svc_stop(&p);
}
END_TEST

START_TEST(test_bound_to_other_key)
{
	EVP_PKEY *key = new_key(), *thief = new_key();
	uint8_t x[32], x2[32];
	randombytes_buf(x, sizeof x);
	randombytes_buf(x2, sizeof x2);
	struct attestc_result res;
	struct attestc_error err;
	/* Evidence made for key, presented with another TLS key. */
	int rc = attest_bound(att.url, key, x, thief, x, &res, &err, NULL);
	assert_refusal(rc, &err, 403, "binding", "binding", "report_data");
	/* ... or with another X25519 sealing key. */
	rc = attest_bound(att.url, key, x, key, x2, &res, &err, NULL);
	assert_refusal(rc, &err, 403, "binding", "binding", "report_data");
	/* Bound to what is presented: accepted. */
	ck_assert_int_eq(attest_bound(att.url, key, x, key, x, &res, &err, NULL), 0);
	attestc_result_free(&res);
	EVP_PKEY_free(thief);
	EVP_PKEY_free(key);
}
END_TEST

START_TEST(test_nonce_table_bounded)
{
	struct tu_svc p;
	ck_assert_int_eq(start_attest(&p, "attest-small", dev_policy, "\"nonce\": {\"max_outstanding\": 2}"), 0);
	struct attestc_opts o = opts_for(p.url, IDENT_PLATFORM_SIMULATED, IDENT_ROLE_PARTY);
	uint8_t n1[32], n2[32], n3[32];
	struct attestc_error err;
	ck_assert_int_eq(attestc_challenge(&o, n1, &err), 0);
	ck_assert_int_eq(attestc_challenge(&o, n2, &err), 0);
	ck_assert_int_eq(attestc_challenge(&o, n3, &err), ERR_RATE_LIMITED);
	ck_assert_int_eq(err.status, 429);
	/* Spending one frees its slot. */
	EVP_PKEY *key = new_key();
	uint8_t x[32], rd[64];
	randombytes_buf(x, sizeof x);
	struct attestc_evidence ev;
	struct attestc_result res;
	ck_assert_int_eq(attestc_binding(key, x, n1, 32, rd), 0);
	ck_assert_int_eq(attestc_collect(IDENT_PLATFORM_SIMULATED, rd, &o.collect, &ev, &err), 0);
	ck_assert_int_eq(attestc_post(&o, n1, key, x, &ev, &res, &err), 0);
	attestc_result_free(&res);
	attestc_evidence_free(&ev);
	ck_assert_int_eq(attestc_challenge(&o, n3, &err), 0);
	EVP_PKEY_free(key);
	tu_svc_stop(&p);
}
END_TEST

/* ---- malformed bodies ---- */

static void assert_400(struct httpc *c, const char *body, const char *type, const char *field)
{
	json_t *j;
	long st = post_raw(c, "/v1/attestations", body, &j);
	ck_assert_msg(st == 400, "%s: status %ld", body, st);
	ck_assert_str_eq(json_string_value(json_object_get(j, "type")), type);
	if (field)
		ck_assert_msg(json_object_get(j, "field") && !strcmp(json_string_value(json_object_get(j, "field")), field),
			      "%s: field %s, want %s", body, json_string_value(json_object_get(j, "field")), field);
	json_decref(j);
}

START_TEST(test_malformed_bodies)
{
	struct httpc *c = anon_client(att.url);
	EVP_PKEY *key = new_key();
	BIO *b = BIO_new(BIO_s_mem());
	PEM_write_bio_PUBKEY(b, key);
	char *pem;
	long n = BIO_get_mem_data(b, &pem);
	json_t *pk = json_stringn(pem, (size_t)n);
	char *pkj = json_dumps(pk, JSON_ENCODE_ANY);
	char nonce[65], x[65], body[4096];
	memset(nonce, 'a', 64), nonce[64] = 0;
	memset(x, 'b', 64), x[64] = 0;
	const char *ok_tail = "\"platform\": \"simulated\", \"role\": \"party\", \"evidence\": \"e30=\"";
	assert_400(c, "not json", "urn:mimir:problem:malformed", NULL);
	assert_400(c, "[]", "urn:mimir:problem:wrong-type", NULL);
	snprintf(body, sizeof body, "{\"nonce\": \"%s\", %s, \"public_key\": %s}", nonce, ok_tail, pkj);
	assert_400(c, body, "urn:mimir:problem:missing-field", "x25519_public_key");
	snprintf(body, sizeof body, "{\"nonce\": \"%s\", %s, \"public_key\": %s, \"x25519_public_key\": \"%s\", \"extra\": 1}",
		 nonce, ok_tail, pkj, x);
	assert_400(c, body, "urn:mimir:problem:unknown-field", "extra");
	snprintf(body, sizeof body, "{\"nonce\": \"abcd\", %s, \"public_key\": %s, \"x25519_public_key\": \"%s\"}", ok_tail, pkj, x);
	assert_400(c, body, "urn:mimir:problem:out-of-range", "nonce");
	snprintf(body, sizeof body, "{\"nonce\": \"%s\", \"platform\": \"simulated\", \"role\": \"admin\", \"evidence\": \"e30=\", "
		 "\"public_key\": %s, \"x25519_public_key\": \"%s\"}", nonce, pkj, x);
	assert_400(c, body, "urn:mimir:problem:out-of-range", "role");
	snprintf(body, sizeof body, "{\"nonce\": \"%s\", \"platform\": \"simulated\", \"role\": \"party\", \"evidence\": \"%%%%\", "
		 "\"public_key\": %s, \"x25519_public_key\": \"%s\"}", nonce, pkj, x);
	assert_400(c, body, "urn:mimir:problem:malformed", "evidence");
	snprintf(body, sizeof body, "{\"nonce\": \"%s\", %s, \"x25519_public_key\": \"%s\"}", nonce, ok_tail, x);
	assert_400(c, body, "urn:mimir:problem:missing-field", "csr");
	snprintf(body, sizeof body, "{\"nonce\": \"%s\", %s, \"public_key\": \"-----BEGIN PUBLIC KEY-----\\nAAAA\\n-----END PUBLIC KEY-----\\n\", "
		 "\"x25519_public_key\": \"%s\"}", nonce, ok_tail, x);
	assert_400(c, body, "urn:mimir:problem:malformed", "public_key");
	snprintf(body, sizeof body, "{\"nonce\": \"%s\", %s, \"public_key\": %s, \"x25519_public_key\": \"%s\", \"dns\": [\"bad name!\"]}",
		 nonce, ok_tail, pkj, x);
	assert_400(c, body, "urn:mimir:problem:out-of-range", "dns[0]");
	/* Well-formed request, evidence that is no simulated document: check format. */
	struct attestc_opts o = opts_for(att.url, IDENT_PLATFORM_SIMULATED, IDENT_ROLE_PARTY);
	uint8_t nb[32];
	struct attestc_error err;
	ck_assert_int_eq(attestc_challenge(&o, nb, &err), 0);
	sodium_bin2hex(nonce, sizeof nonce, nb, 32);
	snprintf(body, sizeof body, "{\"nonce\": \"%s\", %s, \"public_key\": %s, \"x25519_public_key\": \"%s\"}",
		 nonce, ok_tail, pkj, x);
	json_t *j;
	ck_assert_int_eq(post_raw(c, "/v1/attestations", body, &j), 400);
	ck_assert_str_eq(json_string_value(json_object_get(j, "check")), "format");
	ck_assert_str_eq(json_string_value(json_object_get(j, "reason")), "format");
	json_decref(j);
	free(pkj);
	json_decref(pk);
	BIO_free(b);
	EVP_PKEY_free(key);
	httpc_free(c);
}
END_TEST

/* ---- the real vectors through the API ---- */

struct vector {
	const char *name;
	enum ident_platform platform;
	const char *at; /* RFC 3339, from PROVENANCE.md */
	const char *evidence;
	const char *certs[2];
	const char *collateral;
	const char *check, *field; /* the refusal expected under vec_policy */
};

static const struct vector vectors[] = {
	{"milan-v2", IDENT_PLATFORM_SEV_SNP, "2024-01-01T00:00:00Z", "snp/milan-v2/report.bin",
	 {"snp/milan-v2/vcek.der", "snp/milan-v2/ask_milan.pem"}, NULL, "binding", "report_data"},
	{"genoa-v3-azure", IDENT_PLATFORM_SEV_SNP, "2025-06-01T00:00:00Z", "snp/genoa-v3-azure/report.bin",
	 {"snp/genoa-v3-azure/vcek.pem", "snp/genoa-v3-azure/ask_genoa.pem"}, NULL, "policy", "measurement"},
	{"tdx-v4", IDENT_PLATFORM_TDX, "2025-06-20T00:00:00Z", "tdx/v4-dcap-qvl/quote.bin", {NULL, NULL},
	 "tdx/v4-dcap-qvl/collateral.json", "binding", "report_data"},
	{"tdx-v5", IDENT_PLATFORM_TDX, "2026-02-02T00:00:00Z", "tdx/v5-go-tdx-guest/quote.bin", {NULL, NULL}, NULL,
	 "policy", "measurement"},
	{"nitro-production-2024", IDENT_PLATFORM_NITRO, "2024-09-07T15:00:00Z", "nitro/production-2024/document.cose",
	 {NULL, NULL}, NULL, "binding", "report_data"},
	{"nitro-debug-2022", IDENT_PLATFORM_NITRO, "2022-10-12T14:00:00Z", "nitro/debug-2022/document.cose",
	 {NULL, NULL}, NULL, "policy", "debug"},
};

static uint8_t *read_vec(const char *rel, size_t *len)
{
	char path[600], r2[300];
	snprintf(r2, sizeof r2, "vectors/attest/%s", rel);
	tu_shared(path, sizeof path, r2);
	uint8_t *d = (uint8_t *)tu_read_file(path, len);
	ck_assert_msg(d != NULL, "cannot read %s", path);
	return d;
}

/* Posts vector v (optionally with one byte flipped) to url; returns the refusal. */
static int post_vector(const char *url, const struct vector *v, long flip, struct attestc_error *err)
{
	struct attestc_opts o = opts_for(url, v->platform, IDENT_ROLE_PARTY);
	struct attestc_evidence ev = {.platform = v->platform};
	uint8_t *cbuf[2] = {NULL, NULL}, *coll = NULL, nonce[32], x[32];
	struct attest_blob cb;
	ev.data = read_vec(v->evidence, &ev.len);
	if (flip >= 0)
		ev.data[flip] ^= 0x01;
	for (int i = 0; i < 2 && v->certs[i]; i++) {
		cbuf[i] = read_vec(v->certs[i], &ev.certs[i].len);
		ev.certs[i].data = cbuf[i];
		ev.n_certs++;
	}
	if (v->collateral) {
		coll = read_vec(v->collateral, &cb.len);
		cb.data = coll;
		o.collateral = &cb;
		o.n_collateral = 1;
	}
	EVP_PKEY *key = new_key();
	randombytes_buf(x, sizeof x);
	struct attestc_result res;
	ck_assert_int_eq(attestc_challenge(&o, nonce, err), 0);
	int rc = attestc_post(&o, nonce, key, x, &ev, &res, err);
	ck_assert_msg(rc != 0, "%s: a certificate for evidence bound to someone else", v->name);
	EVP_PKEY_free(key);
	free(coll);
	free(cbuf[0]);
	free(cbuf[1]);
	free(ev.data);
	return rc;
}

static int64_t at_of(const char *s)
{
	struct tm tm = {0};
	ck_assert_ptr_nonnull(strptime(s, "%Y-%m-%dT%H:%M:%SZ", &tm));
	return (int64_t)timegm(&tm);
}

START_TEST(test_real_vectors_at_their_time)
{
	const struct vector *v = &vectors[_i];
	struct tu_svc p;
	char extra[128], name[64];
	snprintf(extra, sizeof extra, "\"testing\": {\"verify_time\": %lld}", (long long)at_of(v->at));
	snprintf(name, sizeof name, "attest-vec-%d", _i);
	ck_assert_int_eq(start_attest(&p, name, vec_policy, extra), 0);
	ck_assert_msg(tu_file_contains(p.log, "level=warn service=attest event=attest.fixed_verify_time", 2000),
		      "a fixed verification time must be logged at start");
	struct attestc_error err;
	/* Every cryptographic check passes: what refuses is the policy or the binding
	 * (the recorded evidence commits to its own report_data, not to our keys). */
	post_vector(p.url, v, -1, &err);
	assert_refusal(-1, &err, 403, v->check, v->check, v->field);
	/* Each use of the fixed time is logged too. */
	ck_assert(tu_file_contains(p.log, "event=attest.fixed_verify_time request_id=", 2000));
	/* One bit flipped in the signed part: the signature (or the format) fails. */
	long flip = v->platform == IDENT_PLATFORM_SEV_SNP ? 0x90 : 200; /* measurement; header/body; payload */
	post_vector(p.url, v, flip, &err);
	ck_assert_msg(!strcmp(err.check, "signature") || !strcmp(err.check, "format"),
		      "%s flipped: check %s (%s)", v->name, err.check, err.detail);
	tu_svc_stop(&p);
}
END_TEST

START_TEST(test_vectors_at_current_time)
{
	/* Without testing.verify_time the clock decides: the 2024 Nitro document's chain
	 * lived three hours and is long expired. */
	struct attestc_error err;
	post_vector(att.url, &vectors[4], -1, &err);
	assert_refusal(-1, &err, 403, "chain", "chain", NULL);
	ck_assert(!tu_file_contains(att.log, "attest.fixed_verify_time", 0));
}
END_TEST

/* ---- revocation ---- */

static X509_CRL *fetch_crl(const char *url, bool pem)
{
	struct httpc *c = anon_client(url);
	struct httpc_resp r;
	ck_assert_int_eq(httpc_request(c, "GET", pem ? "/v1/crl?format=pem" : "/v1/crl", NULL, NULL, NULL, 0, &r), 0);
	ck_assert_int_eq(r.status, 200);
	ck_assert_str_eq(r.content_type, pem ? "application/x-pem-file" : "application/pkix-crl");
	X509_CRL *crl = NULL;
	if (pem) {
		BIO *b = BIO_new_mem_buf(r.body, (int)r.len);
		crl = PEM_read_bio_X509_CRL(b, NULL, NULL, NULL);
		BIO_free(b);
	} else {
		const unsigned char *p = (const unsigned char *)r.body;
		crl = d2i_X509_CRL(NULL, &p, (long)r.len);
	}
	ck_assert_ptr_nonnull(crl);
	/* Signed by the attestation CA. */
	char path[400];
	snprintf(path, sizeof path, "%s/ca.crt", aca);
	FILE *f = fopen(path, "r");
	X509 *ca = PEM_read_X509(f, NULL, NULL, NULL);
	fclose(f);
	ck_assert_int_eq(X509_CRL_verify(crl, X509_get0_pubkey(ca)), 1);
	X509_free(ca);
	httpc_resp_free(&r);
	httpc_free(c);
	return crl;
}

static bool crl_lists(X509_CRL *crl, const char *serial_hex)
{
	BIGNUM *bn = NULL;
	ck_assert_int_gt(BN_hex2bn(&bn, serial_hex), 0);
	ASN1_INTEGER *ai = BN_to_ASN1_INTEGER(bn, NULL);
	X509_REVOKED *rv = NULL;
	bool found = X509_CRL_get0_by_serial(crl, &rv, ai) == 1;
	ASN1_INTEGER_free(ai);
	BN_free(bn);
	return found;
}

static struct httpc *client_with(const char *dir, const char *name, const char *url)
{
	char crt[400], key[400];
	snprintf(crt, sizeof crt, "%s/%s.crt", dir, name);
	snprintf(key, sizeof key, "%s/%s.key", dir, name);
	struct httpc_opts o = {.base_url = url, .ca_file = pki_ca, .cert_file = crt, .key_file = key,
			       .timeout_ms = 15000, .retries = 0};
	struct httpc *c = NULL;
	ck_assert_int_eq(httpc_new(&c, &o), 0);
	return c;
}

START_TEST(test_revocation_and_crl)
{
	struct tu_svc p;
	char extra[512], body[256];
	snprintf(extra, sizeof extra, "\"revocations\": {\"file\": \"%s/revoked.jsonl\"}", tmp);
	ck_assert_int_eq(start_attest(&p, "attest-rv", dev_policy, extra), 0);
	EVP_PKEY *key = new_key();
	uint8_t x[32];
	randombytes_buf(x, sizeof x);
	struct attestc_opts o = opts_for(p.url, IDENT_PLATFORM_SIMULATED, IDENT_ROLE_PARTY);
	struct attestc_result res;
	struct attestc_error err;
	ck_assert_int_eq(attestc_request(&o, key, x, &res, &err), 0);
	X509_CRL *crl = fetch_crl(p.url, false);
	ck_assert(!crl_lists(crl, res.serial));
	X509_CRL_free(crl);

	struct httpc *admin = client_with(pki, "admin", p.url), *party = client_with(pki, "party0", p.url),
		     *anon = anon_client(p.url);
	json_t *j;
	snprintf(body, sizeof body, "{\"serial\": \"%s\", \"reason\": \"keyCompromise\"}", res.serial);
	ck_assert_int_eq(post_raw(anon, "/v1/revocations", body, NULL), 401);
	ck_assert_int_eq(post_raw(party, "/v1/revocations", body, NULL), 403);
	ck_assert_int_eq(post_raw(admin, "/v1/revocations", body, &j), 201);
	ck_assert_str_eq(json_string_value(json_object_get(j, "serial")), res.serial);
	ck_assert(json_is_true(json_object_get(j, "known")));
	json_decref(j);
	ck_assert_int_eq(post_raw(admin, "/v1/revocations", body, &j), 200);
	ck_assert(json_is_true(json_object_get(j, "already_revoked")));
	json_decref(j);
	/* A serial this service never issued is refused unless forced. */
	ck_assert_int_eq(post_raw(admin, "/v1/revocations", "{\"serial\": \"0abc\"}", &j), 404);
	ck_assert_str_eq(json_string_value(json_object_get(j, "field")), "serial");
	json_decref(j);
	ck_assert_int_eq(post_raw(admin, "/v1/revocations", "{\"serial\": \"0abc\", \"force\": true}", NULL), 201);
	ck_assert_int_eq(post_raw(admin, "/v1/revocations", "{\"serial\": \"xyz\"}", NULL), 400);

	crl = fetch_crl(p.url, false);
	ck_assert(crl_lists(crl, res.serial));
	ck_assert(crl_lists(crl, "abc"));
	X509_REVOKED *rv = NULL;
	BIGNUM *bn = NULL;
	BN_hex2bn(&bn, res.serial);
	ASN1_INTEGER *ai = BN_to_ASN1_INTEGER(bn, NULL);
	ck_assert_int_eq(X509_CRL_get0_by_serial(crl, &rv, ai), 1);
	ASN1_ENUMERATED *reason = X509_REVOKED_get_ext_d2i(rv, NID_crl_reason, NULL, NULL);
	ck_assert_ptr_nonnull(reason);
	ck_assert_int_eq(ASN1_ENUMERATED_get(reason), 1); /* keyCompromise */
	ASN1_ENUMERATED_free(reason);
	ASN1_INTEGER_free(ai);
	BN_free(bn);
	X509_CRL_free(crl);
	crl = fetch_crl(p.url, true);
	ck_assert(crl_lists(crl, res.serial));
	X509_CRL_free(crl);
	httpc_free(admin);
	httpc_free(party);
	httpc_free(anon);

	/* A restart does not un-revoke. */
	tu_svc_stop(&p);
	ck_assert_int_eq(start_attest(&p, "attest-rv", dev_policy, extra), 0);
	crl = fetch_crl(p.url, false);
	ck_assert(crl_lists(crl, res.serial));
	X509_CRL_free(crl);
	tu_svc_stop(&p);
	attestc_result_free(&res);
	EVP_PKEY_free(key);
}
END_TEST

/* ---- TLS rules of a server with optional client certificates ---- */

START_TEST(test_tls_rules)
{
	struct httpc *anon = anon_client(att.url);
	struct httpc_resp r;
	const char *closed[] = {"/metrics", "/healthz", "/readyz"};
	for (size_t i = 0; i < 3; i++) {
		ck_assert_int_eq(httpc_request(anon, "GET", closed[i], NULL, NULL, NULL, 0, &r), 0);
		ck_assert_msg(r.status == 401, "anonymous %s: %ld", closed[i], r.status);
		ck_assert_str_eq(r.content_type, "application/problem+json");
		httpc_resp_free(&r);
	}
	ck_assert_int_eq(httpc_request(anon, "GET", "/v1/crl", NULL, NULL, NULL, 0, &r), 0);
	ck_assert_int_eq(r.status, 200);
	httpc_resp_free(&r);
	httpc_free(anon);
	/* A certificate that is presented is still verified, in the handshake. */
	char other[300];
	snprintf(other, sizeof other, "%s/other", tmp);
	struct httpc *rogue = client_with(other, "rogue", att.url);
	ck_assert_int_ne(httpc_request(rogue, "POST", "/v1/challenge", NULL, "application/json", "{}", 2, &r), 0);
	ck_assert_int_eq(r.status, 0);
	httpc_resp_free(&r);
	httpc_free(rogue);
	ck_assert(tu_file_contains(att.log, "event=tls.refused", 2000));
	/* A Mimir certificate works on every route its role may call. */
	struct httpc *admin = client_with(pki, "admin", att.url);
	ck_assert_int_eq(httpc_request(admin, "GET", "/healthz", NULL, NULL, NULL, 0, &r), 0);
	ck_assert_int_eq(r.status, 200);
	httpc_resp_free(&r);
	ck_assert_int_eq(httpc_request(admin, "POST", "/v1/challenge", NULL, "application/json", "{}", 2, &r), 0);
	ck_assert_int_eq(r.status, 201);
	httpc_resp_free(&r);
	httpc_free(admin);
}
END_TEST

/* ---- configuration ---- */

START_TEST(test_ca_key_mode_checked)
{
	char dir[300];
	snprintf(dir, sizeof dir, "%s/lax", tmp);
	ck_assert_int_eq(tu_system("mkdir -p %s && cp %s/ca.crt %s/ca.key %s/ && chmod 0644 %s/ca.key", dir, aca, aca, dir, dir), 0);
	char json[4096];
	snprintf(json, sizeof json,
		 "{\"http\": {\"port\": 0}, \"tls\": {\"cert\": \"%s/attest.crt\", \"key\": \"%s/attest.key\", \"ca\": \"%s/ca.crt\"},"
		 " \"ca\": {\"cert\": \"%s/ca.crt\", \"key\": \"%s/ca.key\"}, \"policy\": {\"file\": \"%s\"}, \"roots\": {\"dir\": \"%s\"}}",
		 pki, pki, pki, dir, dir, dev_policy, roots);
	struct tu_svc p;
	ck_assert_int_eq(tu_svc_start(&p, tmp, "mimir-attest", "attest-lax", json, NULL), -1);
	int st = tu_proc_stop(&p.proc, SIGKILL, 5000);
	ck_assert_msg(WIFEXITED(st) && WEXITSTATUS(st) == 1, "status %d", st);
	ck_assert(tu_file_contains(p.log, "event=attest.ca_key_mode", 0));
	ck_assert(tu_file_contains(p.log, "chmod 600", 0));
	/* A missing required key is a configuration error naming it. */
	snprintf(json, sizeof json, "{\"http\": {\"port\": 0}, \"tls\": {\"enabled\": false}, \"policy\": {\"file\": \"%s\"}}",
		 dev_policy);
	ck_assert_int_eq(tu_svc_start(&p, tmp, "mimir-attest", "attest-nokey", json, NULL), -1);
	st = tu_proc_stop(&p.proc, SIGKILL, 5000);
	ck_assert_msg(WIFEXITED(st) && WEXITSTATUS(st) == 2, "status %d", st);
	ck_assert(tu_file_contains(p.log, "ca.cert", 0));
}
END_TEST

/* ---- the tool ---- */

START_TEST(test_tool_commands)
{
	char out[400], log[400], meas[97];
	snprintf(out, sizeof out, "%s/tool", tmp);
	snprintf(log, sizeof log, "%s/tool.log", tmp);
	sodium_bin2hex(meas, sizeof meas, sim_meas, sizeof sim_meas);
	ck_assert_int_eq(tu_system("mkdir -p %s", out), 0);
	ck_assert_int_eq(tu_system("%s request --url %s --ca %s --platform simulated --role dealer --name dealer1 "
				   "--dns localhost --measurement %s --out %s >>%s 2>&1",
				   bin, att.url, pki_ca, meas, out, log), 0);
	char path[500];
	struct stat st;
	snprintf(path, sizeof path, "%s/dealer1.key", out);
	ck_assert_int_eq(stat(path, &st), 0);
	ck_assert_int_eq(st.st_mode & 0777, 0600);
	snprintf(path, sizeof path, "%s/dealer1.x25519.key", out);
	ck_assert_int_eq(stat(path, &st), 0);
	ck_assert_int_eq(st.st_mode & 0777, 0600);
	snprintf(path, sizeof path, "%s/dealer1.crt", out);
	char *pem = tu_read_file(path, NULL);
	ck_assert_ptr_nonnull(pem);
	struct ident a, b;
	cert_ident(pem, &a);
	free(pem);
	ck_assert_int_eq(a.role, IDENT_ROLE_DEALER);
	ck_assert_int_eq(a.platform, IDENT_PLATFORM_SIMULATED);
	ck_assert_mem_eq(a.measurement, sim_meas, sizeof sim_meas);
	/* A second request would overwrite the keys: refused. Renewal re-attests with them. */
	ck_assert_int_ne(tu_system("%s request --url %s --ca %s --platform simulated --role dealer --name dealer1 "
				   "--out %s >>%s 2>&1", bin, att.url, pki_ca, out, log), 0);
	ck_assert_int_eq(tu_system("%s request --url %s --ca %s --platform simulated --role dealer --name dealer1 "
				   "--measurement %s --out %s --renew >>%s 2>&1",
				   bin, att.url, pki_ca, meas, out, log), 0);
	pem = tu_read_file(path, NULL);
	cert_ident(pem, &b);
	free(pem);
	ck_assert_str_ne(a.serial, b.serial);
	ck_assert_mem_ne(a.fingerprint, b.fingerprint, 32);
	ck_assert_int_eq(b.role, IDENT_ROLE_DEALER);
	/* The offline verifier on a real vector, at its time and now. */
	char ev[600], vcek[600], ask[600];
	tu_shared(ev, sizeof ev, "vectors/attest/snp/milan-v2/report.bin");
	tu_shared(vcek, sizeof vcek, "vectors/attest/snp/milan-v2/vcek.der");
	tu_shared(ask, sizeof ask, "vectors/attest/snp/milan-v2/ask_milan.pem");
	ck_assert_int_eq(tu_system("%s verify --platform snp --evidence %s --cert %s --cert %s --at 2024-01-01T00:00:00Z "
				   "> %s/verify.json", bin, ev, vcek, ask, tmp), 0);
	snprintf(path, sizeof path, "%s/verify.json", tmp);
	ck_assert(tu_file_contains(path, "\"verdict\": \"accepted\"", 0));
	ck_assert(tu_file_contains(path, MILAN_MEAS, 0));
	ck_assert_int_eq(tu_system("%s verify --platform snp --evidence %s --cert %s --cert %s --at 2030-01-01T00:00:00Z "
				   "> %s/verify2.json", bin, ev, vcek, ask, tmp), 1);
	snprintf(path, sizeof path, "%s/verify2.json", tmp);
	ck_assert(tu_file_contains(path, "\"check\": \"chain\"", 0));
	ck_assert_int_eq(tu_system("%s verify --platform snp --evidence %s --cert %s --cert %s --at 2024-01-01T00:00:00Z "
				   "--policy %s > %s/verify3.json", bin, ev, vcek, ask, prod_policy, tmp), 1);
	snprintf(path, sizeof path, "%s/verify3.json", tmp);
	ck_assert(tu_file_contains(path, "\"field\": \"debug\"", 0));
	ck_assert_int_eq(tu_system("%s verify --platform snp >>%s 2>&1", bin, log), 2);
	/* Collection where the hardware is absent fails with a message that says so. */
	ck_assert_int_eq(tu_system("%s collect --platform tdx --report-data %0128d --tsm-dir %s/none --out %s/q >>%s 2>&1",
				   bin, 0, tmp, tmp, log), 1);
	ck_assert(tu_file_contains(log, "configfs-tsm needs a TDX guest", 0));
	ck_assert_int_eq(tu_system("%s collect --platform nitro --report-data %0128d --nsm %s/none --out %s/q >>%s 2>&1",
				   bin, 0, tmp, tmp, log), 1);
	ck_assert(tu_file_contains(log, "not inside a Nitro Enclave", 0));
}
END_TEST

/* ---- per-address limits on the challenge endpoint ---- */

struct answer {
	long status;
	char retry_after[16];
	char body[1024];
	size_t len;
};

static size_t on_hdr(char *p, size_t sz, size_t n, void *arg)
{
	struct answer *a = arg;
	size_t len = sz * n;
	if (len > 12 && !strncasecmp(p, "Retry-After:", 12)) {
		size_t l = len - 12;
		const char *v = p + 12;
		while (l && (*v == ' '))
			v++, l--;
		while (l && (v[l - 1] == '\r' || v[l - 1] == '\n'))
			l--;
		snprintf(a->retry_after, sizeof a->retry_after, "%.*s", (int)l, v);
	}
	return len;
}

static size_t on_data(char *p, size_t sz, size_t n, void *arg)
{
	struct answer *a = arg;
	size_t len = sz * n, room = sizeof a->body - 1 - a->len;
	memcpy(a->body + a->len, p, len < room ? len : room);
	a->len += len < room ? len : room;
	a->body[a->len] = '\0';
	return len;
}

/* POST /v1/challenge from the loopback address src (127.0.0.1, 127.0.0.2, ...: each
 * one a different client to the service), anonymously. */
static struct answer challenge_from(const char *url, const char *src)
{
	struct answer a = {0};
	char u[128], iface[64];
	snprintf(u, sizeof u, "%s/v1/challenge", url);
	snprintf(iface, sizeof iface, "host!%s", src);
	CURL *h = curl_easy_init();
	ck_assert_ptr_nonnull(h);
	curl_easy_setopt(h, CURLOPT_URL, u);
	curl_easy_setopt(h, CURLOPT_POST, 1L);
	curl_easy_setopt(h, CURLOPT_POSTFIELDS, "");
	curl_easy_setopt(h, CURLOPT_CAINFO, pki_ca);
	curl_easy_setopt(h, CURLOPT_CAPATH, NULL);
	curl_easy_setopt(h, CURLOPT_INTERFACE, iface);
	curl_easy_setopt(h, CURLOPT_IPRESOLVE, CURL_IPRESOLVE_V4);
	curl_easy_setopt(h, CURLOPT_HEADERFUNCTION, on_hdr);
	curl_easy_setopt(h, CURLOPT_HEADERDATA, &a);
	curl_easy_setopt(h, CURLOPT_WRITEFUNCTION, on_data);
	curl_easy_setopt(h, CURLOPT_WRITEDATA, &a);
	curl_easy_setopt(h, CURLOPT_TIMEOUT_MS, 10000L);
	CURLcode cc = curl_easy_perform(h);
	ck_assert_msg(cc == CURLE_OK, "challenge from %s: %s", src, curl_easy_strerror(cc));
	curl_easy_getinfo(h, CURLINFO_RESPONSE_CODE, &a.status);
	curl_easy_cleanup(h);
	return a;
}

static void assert_429(const struct answer *a, const char *detail_has)
{
	ck_assert_msg(a->status == 429, "status %ld: %s", a->status, a->body);
	long ra = strtol(a->retry_after, NULL, 10);
	ck_assert_msg(ra >= 1 && ra <= 130, "Retry-After '%s'", a->retry_after);
	json_t *j = json_loads(a->body, 0, NULL);
	ck_assert_ptr_nonnull(j);
	ck_assert_str_eq(json_string_value(json_object_get(j, "type")), "urn:mimir:problem:rate-limited");
	ck_assert_int_eq(json_integer_value(json_object_get(j, "status")), 429);
	ck_assert_msg(strstr(json_string_value(json_object_get(j, "detail")), detail_has), "detail: %s",
		      json_string_value(json_object_get(j, "detail")));
	json_decref(j);
}

START_TEST(test_challenge_limits_per_address)
{
	/* The share of the table: 3 live nonces per address, 8 slots. */
	struct tu_svc p;
	ck_assert_int_eq(start_attest(&p, "attest-quota", dev_policy,
				      "\"nonce\": {\"max_outstanding\": 8, \"max_per_address\": 3},"
				      " \"challenge\": {\"rate_per_s\": 1000, \"burst\": 1000}"), 0);
	struct answer first = challenge_from(p.url, "127.0.0.1");
	ck_assert_int_eq(first.status, 201);
	for (int i = 0; i < 2; i++)
		ck_assert_int_eq(challenge_from(p.url, "127.0.0.1").status, 201);
	/* A flood from one address gets nothing more... */
	for (int i = 0; i < 40; i++) {
		struct answer a = challenge_from(p.url, "127.0.0.1");
		assert_429(&a, "127.0.0.1 holds 3 unused nonces");
	}
	/* ... and has not exhausted the table: other clients still get theirs. */
	ck_assert_int_eq(challenge_from(p.url, "127.0.0.2").status, 201);
	ck_assert_int_eq(challenge_from(p.url, "127.0.0.3").status, 201);
	/* Its own client library hears 429 too (httpc connects from 127.0.0.1). */
	EVP_PKEY *key = new_key();
	uint8_t x[32], nonce[32], rd[64];
	randombytes_buf(x, sizeof x);
	struct attestc_opts o = opts_for(p.url, IDENT_PLATFORM_SIMULATED, IDENT_ROLE_PARTY);
	struct attestc_result res;
	struct attestc_error err;
	ck_assert_int_eq(attestc_request(&o, key, x, &res, &err), ERR_RATE_LIMITED);
	ck_assert_int_eq(err.status, 429);
	/* Spending one of its nonces gives the address a slot back. */
	json_t *j = json_loads(first.body, 0, NULL);
	size_t nl = 0;
	ck_assert_int_eq(sodium_hex2bin(nonce, sizeof nonce, json_string_value(json_object_get(j, "nonce")), 64, NULL,
					&nl, NULL), 0);
	json_decref(j);
	struct attestc_evidence ev;
	ck_assert_int_eq(attestc_binding(key, x, nonce, 32, rd), 0);
	ck_assert_int_eq(attestc_collect(IDENT_PLATFORM_SIMULATED, rd, &o.collect, &ev, &err), 0);
	ck_assert_int_eq(attestc_post(&o, nonce, key, x, &ev, &res, &err), 0);
	attestc_result_free(&res);
	attestc_evidence_free(&ev);
	ck_assert_int_eq(challenge_from(p.url, "127.0.0.1").status, 201);
	ck_assert_int_eq(challenge_from(p.url, "127.0.0.1").status, 429);
	tu_svc_stop(&p);

	/* The rate: a burst of 3, then one every 2 s, per address. */
	ck_assert_int_eq(start_attest(&p, "attest-rate", dev_policy,
				      "\"challenge\": {\"rate_per_s\": 0.5, \"burst\": 3}"), 0);
	for (int i = 0; i < 3; i++)
		ck_assert_int_eq(challenge_from(p.url, "127.0.0.1").status, 201);
	struct answer a = challenge_from(p.url, "127.0.0.1");
	assert_429(&a, "too many challenges from 127.0.0.1");
	ck_assert_int_le(strtol(a.retry_after, NULL, 10), 2);
	ck_assert_int_eq(challenge_from(p.url, "127.0.0.2").status, 201);
	usleep((useconds_t)strtol(a.retry_after, NULL, 10) * 1000000 + 100000);
	ck_assert_int_eq(challenge_from(p.url, "127.0.0.1").status, 201);
	/* A whole attestation needs one challenge: within the rate it works. */
	usleep(2100000);
	o = opts_for(p.url, IDENT_PLATFORM_SIMULATED, IDENT_ROLE_PARTY);
	ck_assert_int_eq(attestc_request(&o, key, x, &res, &err), 0);
	attestc_result_free(&res);
	struct httpc *c = client_with(pki, "admin", p.url);
	struct httpc_resp r;
	ck_assert_int_eq(httpc_request(c, "GET", "/metrics", NULL, NULL, NULL, 0, &r), 0);
	ck_assert_ptr_nonnull(strstr(r.body, "mimir_attest_challenges_total{result=\"rate_limited\"} 1\n"));
	httpc_resp_free(&r);
	httpc_free(c);
	EVP_PKEY_free(key);
	tu_svc_stop(&p);
}
END_TEST

/* ---- metrics ---- */

START_TEST(test_metrics_promtool)
{
	/* An acceptance, a replay and evidence for another key, so that accepted and
	 * rejected series are all there. */
	EVP_PKEY *key = new_key(), *other = new_key();
	uint8_t x[32];
	randombytes_buf(x, sizeof x);
	struct attestc_opts o = opts_for(att.url, IDENT_PLATFORM_SIMULATED, IDENT_ROLE_PARTY);
	struct attestc_result res;
	struct attestc_error err;
	struct attestc_evidence ev;
	uint8_t nonce[32], rd[64];
	ck_assert_int_eq(attestc_challenge(&o, nonce, &err), 0);
	ck_assert_int_eq(attestc_binding(key, x, nonce, 32, rd), 0);
	ck_assert_int_eq(attestc_collect(IDENT_PLATFORM_SIMULATED, rd, &o.collect, &ev, &err), 0);
	ck_assert_int_eq(attestc_post(&o, nonce, key, x, &ev, &res, &err), 0);
	attestc_result_free(&res);
	ck_assert_int_ne(attestc_post(&o, nonce, key, x, &ev, &res, &err), 0);
	attestc_evidence_free(&ev);
	ck_assert_int_ne(attest_bound(att.url, key, x, other, x, &res, &err, NULL), 0);
	EVP_PKEY_free(other);
	struct httpc *c = client_with(pki, "admin", att.url);
	struct httpc_resp r;
	ck_assert_int_eq(httpc_request(c, "GET", "/metrics", NULL, NULL, NULL, 0, &r), 0);
	ck_assert_int_eq(r.status, 200);
	ck_assert_ptr_nonnull(strstr(r.body, "mimir_attest_attestations_total{platform=\"simulated\",result=\"accepted\",reason=\"none\"}"));
	ck_assert_ptr_nonnull(strstr(r.body, "mimir_attest_certificates_issued_total{role=\"party\",platform=\"simulated\"}"));
	ck_assert_ptr_nonnull(strstr(r.body, "mimir_attest_challenges_total{result=\"issued\"}"));
	ck_assert_ptr_nonnull(strstr(r.body, "mimir_attest_verify_duration_seconds_bucket{platform=\"simulated\""));
	ck_assert_ptr_nonnull(strstr(r.body, "mimir_attest_nonces_outstanding "));
	ck_assert_ptr_nonnull(strstr(r.body, "mimir_attest_ca_not_after_timestamp_seconds "));
	ck_assert_ptr_nonnull(strstr(r.body, "reason=\"nonce_reused\"}"));
	ck_assert_ptr_nonnull(strstr(r.body, "reason=\"binding\"}"));
	char path[400];
	snprintf(path, sizeof path, "%s/metrics.txt", tmp);
	ck_assert_int_eq(tu_write_file(path, r.body, r.len), 0);
	int st = tu_system("promtool check metrics < %s > %s/promtool.out 2>&1", path, tmp);
	if (st != 0) {
		char out[400];
		snprintf(out, sizeof out, "%s/promtool.out", tmp);
		char *text = tu_read_file(out, NULL);
		ck_abort_msg("promtool check metrics failed (%d): %s", st, text ? text : "(no output)");
	}
	httpc_resp_free(&r);
	httpc_free(c);
	EVP_PKEY_free(key);
}
END_TEST

Suite *suite(void)
{
	Suite *s = suite_create("attest_service");
	TCase *tc = tcase_create("attest");
	tcase_add_unchecked_fixture(tc, setup, teardown);
	tcase_set_timeout(tc, 120);
	tcase_add_test(tc, test_dev_policy_certificate_and_mtls);
	tcase_add_test(tc, test_prod_policy_refuses_simulated);
	tcase_add_test(tc, test_wrong_nonce);
	tcase_add_test(tc, test_reused_nonce);
	tcase_add_test(tc, test_expired_nonce);
	tcase_add_test(tc, test_bound_to_other_key);
	tcase_add_test(tc, test_nonce_table_bounded);
	tcase_add_test(tc, test_malformed_bodies);
	tcase_add_loop_test(tc, test_real_vectors_at_their_time, 0, (int)(sizeof vectors / sizeof vectors[0]));
	tcase_add_test(tc, test_vectors_at_current_time);
	tcase_add_test(tc, test_revocation_and_crl);
	tcase_add_test(tc, test_tls_rules);
	tcase_add_test(tc, test_ca_key_mode_checked);
	tcase_add_test(tc, test_tool_commands);
	tcase_add_test(tc, test_metrics_promtool);
	tcase_add_test(tc, test_challenge_limits_per_address);
	suite_add_tcase(s, tc);
	return s;
}
