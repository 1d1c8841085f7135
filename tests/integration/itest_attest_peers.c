/* Integration (issue 7, "Done when"): attested identities between real processes.
 * A party with simulated evidence under the development policy gets its certificate
 * from mimir-attest (the tool, as a deployment runs it) and talks to its peer, the
 * dealer, over mutual TLS with both ends in production mode and tls.allow_simulated:
 * mimir-dealer, whose own certificate also comes from attest, hands the party its seed
 * through prepnet, an unchanged module that applies the process's peer verifier to the
 * dealer (as svc sets it in a service). Under the production policy attest refuses the
 * same request. A production-mode dealer refuses in the handshake a mimir-pki
 * certificate (even one that claims a TEE platform, even one the attestation CA's key
 * signed without attestation) and simulated attestation unless allowed, while a
 * development-mode dealer accepts them (the mode is what refuses); roles still decide
 * per route. Revocation end to end: an administrator revokes the party at attest,
 * `mimir-attest crl` refreshes the dealer's tls.crl, and the dealer refuses the party
 * from its next handshake, without a restart; SIGHUP reloads and does not stop the
 * service; the party refuses a dealer whose certificate is revoked. A tls.crl that is
 * no CRL, or production mode without tls.attest_ca, stops the service at start. */
#define _GNU_SOURCE
#include <openssl/pem.h>
#include <openssl/x509.h>
#include <signal.h>
#include <sodium.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include "attestpeer/attestpeer.h"
#include "err/err.h"
#include "httpc/httpc.h"
#include "ident/ident.h"
#include "log/log.h"
#include "prepnet/prepnet.h"
#include "svcproc.h"
#include "testutil.h"

static char tmp[256], pki[300], aca[300], att[300], trust[320], roots[512], crl[320], bin[512],
	plog[320];
static struct tu_svc attest_dev, dealer;
static FILE *plog_f; /* this process's log: the party side */

#define MEAS48 "5a5a5a5a5a5a5a5a5a5a5a5a5a5a5a5a5a5a5a5a5a5a5a5a5a5a5a5a5a5a5a5a5a5a5a5a5a5a5a5a5a5a5a5a5a5a5a5a"
#define HASH32 "eeeeeeeeeeeeeeeeeeeeeeeeeeeeeeeeeeeeeeeeeeeeeeeeeeeeeeeeeeeeeeee"

static void write_text(const char *path, const char *text)
{
	ck_assert_int_eq(tu_write_file(path, text, strlen(text)), 0);
}

static void cert_of(const char *path, struct ident *id)
{
	FILE *f = fopen(path, "r");
	ck_assert_msg(f != NULL, "cannot open %s", path);
	X509 *x = PEM_read_X509(f, NULL, NULL, NULL);
	fclose(f);
	ck_assert_ptr_nonnull(x);
	ck_assert_int_eq(ident_from_x509(x, id), 0);
	X509_free(x);
}

static int attest_start(struct tu_svc *s, const char *name, const char *policy_json)
{
	char policy[400], json[4096];
	snprintf(policy, sizeof policy, "%s/%s.policy.json", tmp, name);
	write_text(policy, policy_json);
	snprintf(json, sizeof json,
		 "{\"http\": {\"port\": 0, \"idle_timeout_s\": 5, \"drain_timeout_ms\": 3000},"
		 " \"tls\": {\"cert\": \"%s/attest.crt\", \"key\": \"%s/attest.key\", \"ca\": \"%s/ca.crt\"},"
		 " \"ca\": {\"cert\": \"%s/ca.crt\", \"key\": \"%s/ca.key\"}, \"policy\": {\"file\": \"%s\"},"
		 " \"roots\": {\"dir\": \"%s\"}, \"revocations\": {\"file\": \"%s/%s.revoked\"}}",
		 pki, pki, pki, aca, aca, policy, roots, tmp, name);
	return tu_svc_start(s, tmp, "mimir-attest", name, json, NULL);
}

/* A dealer with the attested certificate dealer1; tls_extra completes the tls object
 * (mode, CRL, ...). */
static int dealer_start(struct tu_svc *s, const char *name, const char *tls_extra)
{
	char json[4096];
	snprintf(json, sizeof json,
		 "{\"http\": {\"port\": 0, \"idle_timeout_s\": 5, \"drain_timeout_ms\": 3000},"
		 " \"tls\": {\"cert\": \"%s/dealer1.crt\", \"key\": \"%s/dealer1.key\", \"ca\": \"%s\"%s%s},"
		 " \"triple_pool\": {\"min_size\": 16, \"max_size\": 64}, \"pool\": {\"workers\": 1}}",
		 att, att, trust, tls_extra ? ", " : "", tls_extra ? tls_extra : "");
	return tu_svc_start(s, tmp, "mimir-dealer", name, json, NULL);
}

static const char *production_tls(char *buf, size_t cap, bool simulated, const char *crl_path)
{
	snprintf(buf, cap, "\"mode\": \"production\", \"attest_ca\": \"%s/ca.crt\", \"allow_simulated\": %s%s%s%s",
		 aca, simulated ? "true" : "false", crl_path ? ", \"crl\": \"" : "", crl_path ? crl_path : "",
		 crl_path ? "\"" : "");
	return buf;
}

static int tool(const char *fmt, ...) __attribute__((format(printf, 1, 2)));
static int tool(const char *fmt, ...)
{
	char args[2048];
	va_list ap;
	va_start(ap, fmt);
	vsnprintf(args, sizeof args, fmt, ap);
	va_end(ap);
	return tu_system("%s %s >>%s/tool.log 2>&1", bin, args, tmp);
}

static int request_cert(const char *url, const char *role, const char *name, const char *out)
{
	return tool("request --url %s --ca %s/ca.crt --platform simulated --role %s --name %s --dns localhost "
		    "--ip 127.0.0.1 --measurement " MEAS48 " --out %s",
		    url, pki, role, name, out);
}

static int refresh_crl_from(const char *url, const char *out)
{
	return tool("crl --url %s --ca %s/ca.crt --issuer %s/ca.crt --out %s", url, pki, aca, out);
}

static int refresh_crl(const char *out) { return refresh_crl_from(attest_dev.url, out); }

static void setup(void)
{
	char cwd[256];
	ck_assert_ptr_nonnull(getcwd(cwd, sizeof cwd));
	snprintf(roots, sizeof roots, "%s/attest/roots", cwd);
	tu_tmpdir(tmp, sizeof tmp);
	snprintf(pki, sizeof pki, "%s/pki", tmp);
	snprintf(aca, sizeof aca, "%s/aca", tmp);
	snprintf(att, sizeof att, "%s/att", tmp);
	snprintf(trust, sizeof trust, "%s/trust.pem", tmp);
	snprintf(crl, sizeof crl, "%s/dealer.crl", tmp);
	snprintf(plog, sizeof plog, "%s/party.log", tmp);
	tu_build(bin, sizeof bin, "bin/mimir-attest");
	/* The deployment CA (people, the attest service's own certificate) and the
	 * attestation CA; the services trust both, and production mode knows which one
	 * attests. */
	ck_assert_int_eq(tu_pki(tmp, "dev --out %s", pki), 0);
	ck_assert_int_eq(tu_pki(tmp, "ca --out %s --cn 'Mimir Attestation CA'", aca), 0);
	ck_assert_int_eq(tu_system("cat %s/ca.crt %s/ca.crt > %s", pki, aca, trust), 0);
	/* Unattested certificates a production service must refuse: made by mimir-pki with
	 * the deployment CA claiming a TEE, and with the attestation CA's own key. */
	ck_assert_int_eq(tu_pki(tmp, "issue --ca %s --role party --name forged --platform sev-snp --measurement "
				MEAS48 " --evidence-hash " HASH32 " --dns localhost --out %s/forged", pki, tmp), 0);
	ck_assert_int_eq(tu_pki(tmp, "issue --ca %s --role party --name handmade --dns localhost --out %s/handmade",
				aca, tmp), 0);
	ck_assert_int_eq(attest_start(&attest_dev, "attest-dev",
				      "{\"version\": 1, \"roles\": {\"party\": {\"simulated\": {}}, "
				      "\"dealer\": {\"simulated\": {}}}}"), 0);
	ck_assert_int_eq(tu_system("mkdir -p %s", att), 0);
	ck_assert_int_eq(request_cert(attest_dev.url, "dealer", "dealer1", att), 0);
	ck_assert_int_eq(request_cert(attest_dev.url, "party", "partyA", att), 0);
	ck_assert_int_eq(request_cert(attest_dev.url, "party", "partyB", att), 0);
	ck_assert_int_eq(refresh_crl(crl), 0);
	char tls[1024];
	ck_assert_int_eq(dealer_start(&dealer, "dealer", production_tls(tls, sizeof tls, true, crl)), 0);
	plog_f = fopen(plog, "w");
	ck_assert_ptr_nonnull(plog_f);
	log_set_fd(fileno(plog_f));
}

static void teardown(void)
{
	log_set_fd(2);
	fclose(plog_f);
	tu_svc_stop(&dealer);
	tu_svc_stop(&attest_dev);
	tu_rmrf(tmp);
}

/* ---- clients ---- */

static struct httpc *client(const char *url, const char *dir, const char *name, struct attestpeer *peers)
{
	char crt[400], key[400];
	snprintf(crt, sizeof crt, "%s/%s.crt", dir, name);
	snprintf(key, sizeof key, "%s/%s.key", dir, name);
	struct httpc_opts o = {.base_url = url, .ca_file = trust, .cert_file = crt, .key_file = key,
			       .expect_role = IDENT_ROLE_DEALER, .timeout_ms = 10000, .retries = 0, .peers = peers};
	struct httpc *c = NULL;
	ck_assert_int_eq(httpc_new(&c, &o), 0);
	return c;
}

/* status of one request, 0 when none came (the handshake was refused) */
static long call(const char *url, const char *dir, const char *name, const char *method, const char *path,
		 const char *body)
{
	struct httpc *c = client(url, dir, name, NULL);
	struct httpc_resp r;
	int rc = httpc_request(c, method, path, NULL, body ? "application/json" : NULL, body, body ? strlen(body) : 0,
			       &r);
	long st = rc == 0 ? r.status : 0;
	httpc_resp_free(&r);
	httpc_free(c);
	return st;
}

static void create_session(const char *id)
{
	struct ident a, b;
	char pa[400], pb[400], fa[65], fb[65], body[512];
	snprintf(pa, sizeof pa, "%s/partyA.crt", att);
	snprintf(pb, sizeof pb, "%s/partyB.crt", att);
	cert_of(pa, &a);
	cert_of(pb, &b);
	sodium_bin2hex(fa, sizeof fa, a.fingerprint, 32);
	sodium_bin2hex(fb, sizeof fb, b.fingerprint, 32);
	snprintf(body, sizeof body, "{\"id\": \"%s\", \"nparties\": 2, \"fingerprints\": [\"%s\", \"%s\"]}", id, fa, fb);
	/* The administrator: a person, from the deployment CA; production mode leaves
	 * people to the routes' roles. */
	ck_assert_int_eq(call(dealer.url, pki, "admin", "POST", "/v1/sessions", body), 201);
}

/* A verifier as svc builds it for a party process. */
static struct attestpeer *party_verifier(bool simulated, const char *crl_path)
{
	char aca_ca[400], why[512];
	snprintf(aca_ca, sizeof aca_ca, "%s/ca.crt", aca);
	struct attestpeer_config pc = {.mode = ATTESTPEER_PRODUCTION, .allow_simulated = simulated,
				       .ca_file = trust, .attest_ca_file = aca_ca, .crl_file = crl_path};
	struct attestpeer *ap = NULL;
	ck_assert_msg(attestpeer_new(&ap, &pc, why, sizeof why) == 0, "%s", why);
	return ap;
}

/* The party's seed through prepnet (which makes its own httpc: the process default
 * verifier applies). */
static int fetch_seed(const char *session, unsigned party, const char *name, char *err, size_t cap)
{
	char crt[400], key[400];
	snprintf(crt, sizeof crt, "%s/%s.crt", att, name);
	snprintf(key, sizeof key, "%s/%s.key", att, name);
	struct prepnet_opts o = {.url = dealer.url, .ca_file = trust, .cert_file = crt, .key_file = key,
				 .session = session, .party = party, .timeout_ms = 3000};
	struct prepnet *pn = NULL;
	ck_assert_int_eq(prepnet_new(&o, &pn), 0);
	uint8_t seed[MPC_SEED_BYTES], zero[MPC_SEED_BYTES] = {0};
	int rc = prepnet_seed(pn, seed);
	if (rc == 0)
		ck_assert_mem_ne(seed, zero, sizeof seed);
	snprintf(err, cap, "%s", prepnet_last_error(pn));
	sodium_memzero(seed, sizeof seed);
	prepnet_free(pn);
	return rc;
}

/* ---- the development policy: certificates, and peers that talk ---- */

START_TEST(test_attested_party_talks_to_dealer)
{
	/* What attest issued: role, simulated platform, the measurement, evidence hash. */
	struct ident d, p;
	char path[400];
	snprintf(path, sizeof path, "%s/dealer1.crt", att);
	cert_of(path, &d);
	snprintf(path, sizeof path, "%s/partyA.crt", att);
	cert_of(path, &p);
	ck_assert_int_eq(d.role, IDENT_ROLE_DEALER);
	ck_assert_int_eq(p.role, IDENT_ROLE_PARTY);
	ck_assert_int_eq(p.platform, IDENT_PLATFORM_SIMULATED);
	ck_assert(p.has_evidence_hash && p.measurement_len == 48);

	create_session("s1");
	struct attestpeer *ap = party_verifier(true, NULL);
	attestpeer_set_default(ap);
	char err[512];
	int rc = fetch_seed("s1", 0, "partyA", err, sizeof err);
	ck_assert_msg(rc == 0, "party A's seed: %s", err);
	rc = fetch_seed("s1", 1, "partyB", err, sizeof err);
	ck_assert_msg(rc == 0, "party B's seed: %s", err);
	/* Both ends said, loudly, that they accepted simulated attestation. */
	ck_assert(tu_file_contains(dealer.log, "level=warn service=dealer event=tls.simulated_peer cn=partyA role=party", 2000));
	ck_assert(tu_file_contains(plog, "event=httpc.simulated_peer", 2000));
	ck_assert(tu_file_contains(dealer.log, "event=tls.simulated_allowed", 0));
	ck_assert(tu_file_contains(dealer.log, "tls_mode=production", 0));
	/* Without tls.allow_simulated the party refuses that dealer, in the handshake. */
	create_session("s1b");
	struct attestpeer *strict = party_verifier(false, NULL);
	attestpeer_set_default(strict);
	rc = fetch_seed("s1b", 0, "partyA", err, sizeof err);
	ck_assert_int_eq(rc, ERR_TLS);
	ck_assert(tu_file_contains(plog, "event=httpc.peer_refused", 2000));
	ck_assert(tu_file_contains(plog, "check=simulated_not_allowed", 0));
	attestpeer_set_default(NULL);
	attestpeer_free(strict);
	attestpeer_free(ap);
	/* The seed was not delivered to anyone in s1b: the attested party gets it now. */
	rc = fetch_seed("s1b", 0, "partyA", err, sizeof err);
	ck_assert_msg(rc == 0, "%s", err);
}
END_TEST

START_TEST(test_production_policy_refuses)
{
	struct tu_svc prod;
	ck_assert_int_eq(attest_start(&prod, "attest-prod",
				      "{\"version\": 1, \"roles\": {\"party\": {\"sev-snp\": {\"measurements\": [\"" MEAS48
				      "\"], \"debug\": false}}}}"), 0);
	char out[400], path[500];
	snprintf(out, sizeof out, "%s/prod", tmp);
	ck_assert_int_eq(tu_system("mkdir -p %s", out), 0);
	ck_assert_int_eq(request_cert(prod.url, "party", "partyC", out), 1);
	char logp[400];
	snprintf(logp, sizeof logp, "%s/tool.log", tmp);
	ck_assert(tu_file_contains(logp, "policy", 0));
	ck_assert(tu_file_contains(prod.log, "event=attest.rejected", 2000));
	ck_assert(tu_file_contains(prod.log, "check=policy", 0));
	ck_assert(!tu_file_contains(prod.log, "event=attest.issued", 0));
	/* No certificate, and the keys of the failed first request are gone. */
	snprintf(path, sizeof path, "%s/partyC.crt", out);
	ck_assert_int_ne(access(path, F_OK), 0);
	snprintf(path, sizeof path, "%s/partyC.key", out);
	ck_assert_int_ne(access(path, F_OK), 0);
	tu_svc_stop(&prod);
}
END_TEST

/* ---- production mode refuses what is no attested identity ---- */

START_TEST(test_production_refuses_unattested)
{
	char forged[300], handmade[300];
	snprintf(forged, sizeof forged, "%s/forged", tmp);
	snprintf(handmade, sizeof handmade, "%s/handmade", tmp);
	const struct {
		const char *dir, *name, *check;
	} refused[] = {
		{pki, "party0", "check=not_attestation_ca"},     /* mimir-pki dev */
		{forged, "forged", "check=not_attestation_ca"},  /* claims sev-snp */
		{handmade, "handmade", "check=not_attested"},   /* the attestation CA's key, no evidence */
	};
	for (size_t i = 0; i < sizeof refused / sizeof refused[0]; i++) {
		ck_assert_msg(call(dealer.url, refused[i].dir, refused[i].name, "GET", "/v1/sessions/s1/seed?party=0",
				   NULL) == 0,
			      "%s reached the dealer", refused[i].name);
		ck_assert_msg(tu_file_contains(dealer.log, refused[i].check, 2000), "%s: no %s", refused[i].name,
			      refused[i].check);
	}
	ck_assert(tu_file_contains(dealer.log, "event=tls.refused", 0));
	/* Roles still decide per route: a party on the administrators' route. */
	ck_assert_int_eq(call(dealer.url, att, "partyA", "GET", "/v1/sessions", NULL), 403);
	ck_assert_int_eq(call(dealer.url, pki, "admin", "GET", "/v1/sessions", NULL), 200);

	/* Without tls.allow_simulated, simulated attestation is refused too. */
	struct tu_svc strict, dev;
	char tls[1024];
	ck_assert_int_eq(dealer_start(&strict, "dealer-strict", production_tls(tls, sizeof tls, false, NULL)), 0);
	ck_assert_int_eq(call(strict.url, att, "partyA", "GET", "/v1/sessions/x/seed?party=0", NULL), 0);
	ck_assert(tu_file_contains(strict.log, "check=simulated_not_allowed", 2000));
	tu_svc_stop(&strict);
	/* The same certificates in development mode: accepted (404: no such session). */
	ck_assert_int_eq(dealer_start(&dev, "dealer-dev", NULL), 0);
	for (size_t i = 0; i < sizeof refused / sizeof refused[0]; i++)
		ck_assert_int_eq(call(dev.url, refused[i].dir, refused[i].name, "GET", "/v1/sessions/x/seed?party=0", NULL),
				 404);
	ck_assert(tu_file_contains(dev.log, "event=tls.development_mode", 0));
	tu_svc_stop(&dev);
}
END_TEST

/* ---- revocation, served by attest and honoured by the peers ---- */

START_TEST(test_revocation_honoured)
{
	create_session("s2");
	struct attestpeer *ap = party_verifier(true, NULL);
	attestpeer_set_default(ap);
	struct ident b;
	char path[400], err[512];
	snprintf(path, sizeof path, "%s/partyB.crt", att);
	cert_of(path, &b);
	ck_assert_int_eq(tool("revoke --url %s --ca %s/ca.crt --cert %s/admin.crt --key %s/admin.key --serial %s "
			      "--reason keyCompromise",
			      attest_dev.url, pki, pki, pki, b.serial),
			 0);
	ck_assert_int_eq(refresh_crl(crl), 0);
	sleep(1); /* the dealer looks at tls.crl at most once a second */
	int rc = fetch_seed("s2", 1, "partyB", err, sizeof err);
	ck_assert_int_ne(rc, 0);
	ck_assert(tu_file_contains(dealer.log, "trigger=changed crls=1 entries=1", 2000));
	ck_assert(tu_file_contains(dealer.log, "check=revoked", 2000));
	/* The party that is not revoked is fine; no restart happened. */
	rc = fetch_seed("s2", 0, "partyA", err, sizeof err);
	ck_assert_msg(rc == 0, "%s", err);
	/* SIGHUP reads the file again and the dealer goes on serving. */
	ck_assert_int_eq(kill(dealer.proc.pid, SIGHUP), 0);
	ck_assert(tu_file_contains(dealer.log, "trigger=signal", 3000));
	ck_assert(tu_file_contains(dealer.log, "event=svc.signal signal=1 action=\"reload tls.crl\"", 3000));
	ck_assert_int_eq(call(dealer.url, pki, "admin", "GET", "/v1/sessions", NULL), 200);

	/* The party side: the dealer's certificate revoked, the party's CRL refreshed. (The
	 * session first: the administrator's client in this process uses the default.) */
	attestpeer_set_default(NULL);
	create_session("s3");
	struct ident d;
	snprintf(path, sizeof path, "%s/dealer1.crt", att);
	cert_of(path, &d);
	ck_assert_int_eq(tool("revoke --url %s --ca %s/ca.crt --cert %s/admin.crt --key %s/admin.key --serial %s",
			      attest_dev.url, pki, pki, pki, d.serial),
			 0);
	char pcrl[400];
	snprintf(pcrl, sizeof pcrl, "%s/party.crl", tmp);
	ck_assert_int_eq(refresh_crl(pcrl), 0);
	struct attestpeer *rev = party_verifier(true, pcrl);
	attestpeer_set_default(rev);
	rc = fetch_seed("s3", 0, "partyA", err, sizeof err);
	ck_assert_int_eq(rc, ERR_TLS);
	ck_assert(tu_file_contains(plog, "check=revoked", 2000));
	attestpeer_set_default(NULL);
	attestpeer_free(rev);
	attestpeer_free(ap);
}
END_TEST

START_TEST(test_crl_refresher_refuses_rollback)
{
	/* Two attest instances of the same CA: the second signs its first CRL later, with
	 * a higher CRL number (the signing time in ms) than the first's current one. */
	char scratch[400], target[400], kept[400], logp[400];
	snprintf(scratch, sizeof scratch, "%s/scratch.crl", tmp);
	snprintf(target, sizeof target, "%s/target.crl", tmp);
	snprintf(kept, sizeof kept, "%s/target.kept", tmp);
	snprintf(logp, sizeof logp, "%s/tool.log", tmp);
	ck_assert_int_eq(refresh_crl(scratch), 0); /* attest-dev's CRL is signed by now */
	usleep(50000);
	struct tu_svc other;
	ck_assert_int_eq(attest_start(&other, "attest-dev2",
				      "{\"version\": 1, \"roles\": {\"party\": {\"simulated\": {}}}}"), 0);
	ck_assert_int_eq(refresh_crl_from(other.url, target), 0);
	ck_assert_int_eq(tu_system("cp %s %s", target, kept), 0);
	/* attest-dev's CRL is older than the one in the file: refused, file untouched. */
	ck_assert_int_eq(refresh_crl(target), 1);
	ck_assert(tu_file_contains(logp, "is older than the one in", 0));
	ck_assert_int_eq(tu_system("cmp -s %s %s", target, kept), 0);
	/* The same CRL again is fine (a timer refreshes an unchanged CRL all the time). */
	ck_assert_int_eq(refresh_crl_from(other.url, target), 0);
	tu_svc_stop(&other);
	/* A CRL checked against the wrong CA is never written. */
	ck_assert_int_eq(tool("crl --url %s --ca %s/ca.crt --issuer %s/ca.crt --out %s/wrong-issuer.crl",
			      attest_dev.url, pki, pki, tmp),
			 1);
	ck_assert(tu_file_contains(logp, "is not signed by the CA in", 0));
	char wrong[400];
	snprintf(wrong, sizeof wrong, "%s/wrong-issuer.crl", tmp);
	ck_assert_int_ne(access(wrong, F_OK), 0);
}
END_TEST

/* ---- configuration ---- */

START_TEST(test_bad_tls_configuration_stops_start)
{
	char bad[400], tls[1024];
	snprintf(bad, sizeof bad, "%s/garbage.crl", tmp);
	write_text(bad, "not a CRL at all\n");
	struct tu_svc s;
	ck_assert_int_eq(dealer_start(&s, "dealer-badcrl", production_tls(tls, sizeof tls, true, bad)), -1);
	int st = tu_proc_stop(&s.proc, SIGKILL, 5000);
	ck_assert_msg(WIFEXITED(st) && WEXITSTATUS(st) == 2, "status %d", st);
	ck_assert(tu_file_contains(s.log, "configuration error: tls.crl:", 0));
	/* A CRL of a CA the service does not trust: the deployment CA's trust only. */
	snprintf(tls, sizeof tls, "\"crl\": \"%s\"", crl);
	char json[2048];
	snprintf(json, sizeof json,
		 "{\"http\": {\"port\": 0}, \"tls\": {\"cert\": \"%s/dealer.crt\", \"key\": \"%s/dealer.key\","
		 " \"ca\": \"%s/ca.crt\", \"crl\": \"%s\"}}",
		 pki, pki, pki, crl);
	ck_assert_int_eq(tu_svc_start(&s, tmp, "mimir-dealer", "dealer-untrusted-crl", json, NULL), -1);
	st = tu_proc_stop(&s.proc, SIGKILL, 5000);
	ck_assert_msg(WIFEXITED(st) && WEXITSTATUS(st) == 2, "status %d", st);
	ck_assert(tu_file_contains(s.log, "not signed by a CA of tls.ca or tls.attest_ca", 0));
	/* Production mode names the attestation CA. */
	ck_assert_int_eq(dealer_start(&s, "dealer-noaca", "\"mode\": \"production\""), -1);
	st = tu_proc_stop(&s.proc, SIGKILL, 5000);
	ck_assert_msg(WIFEXITED(st) && WEXITSTATUS(st) == 2, "status %d", st);
	ck_assert(tu_file_contains(s.log, "tls.attest_ca: required when tls.mode is production", 0));
	/* ... and needs TLS. */
	snprintf(json, sizeof json, "{\"http\": {\"port\": 0}, \"tls\": {\"enabled\": false, \"mode\": \"production\"}}");
	ck_assert_int_eq(tu_svc_start(&s, tmp, "mimir-dealer", "dealer-notls", json, NULL), -1);
	st = tu_proc_stop(&s.proc, SIGKILL, 5000);
	ck_assert_msg(WIFEXITED(st) && WEXITSTATUS(st) == 2, "status %d", st);
	ck_assert(tu_file_contains(s.log, "tls.mode: needs tls.enabled", 0));
}
END_TEST

Suite *suite(void)
{
	Suite *s = suite_create("attest_peers");
	TCase *tc = tcase_create("attest_peers");
	tcase_add_unchecked_fixture(tc, setup, teardown);
	tcase_set_timeout(tc, 120);
	tcase_add_test(tc, test_attested_party_talks_to_dealer);
	tcase_add_test(tc, test_production_policy_refuses);
	tcase_add_test(tc, test_production_refuses_unattested);
	tcase_add_test(tc, test_revocation_honoured);
	tcase_add_test(tc, test_crl_refresher_refuses_rollback);
	tcase_add_test(tc, test_bad_tls_configuration_stops_start);
	suite_add_tcase(s, tc);
	return s;
}
