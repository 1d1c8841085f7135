/* attestpeer: the production rule refuses exactly the certificates that are no
 * attested identity (table of cases, each with its reason); a CRL revokes only the
 * certificates of the CA that signed it, in DER and in PEM bundles, and a CRL no
 * trusted CA signed, a forged one, or a malformed file is refused at load; a stale CRL
 * is still honoured; the file is read again when it changes, a bad version leaves the
 * previous CRLs in force (and is not re-read every second), a vanished file too; the
 * attestation-CA check is cryptographic (a rogue CA with the same name fails); and,
 * end to end in process, an http server refuses a revoked client in the handshake and
 * a connection opened before the revocation at its next request, while httpc refuses a
 * revoked or unattested server. */
#include <openssl/bn.h>
#include <openssl/pem.h>
#include <openssl/x509.h>
#include <openssl/x509v3.h>
#include <sodium.h>
#include <stdio.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include "attestpeer/attestpeer.h"
#include "err/err.h"
#include "http/http.h"
#include "httpc/httpc.h"
#include "ident/ident.h"
#include "log/log.h"
#include "metrics/metrics.h"
#include "svcproc.h"
#include "testutil.h"

static char dir[256];

/* ---- a small PKI: the deployment CA A, the attestation CA B, a rogue CA R that calls
 * itself by B's name, a rogue CA S that copies B's name and key identifier (only a
 * signature check tells it apart), and an unrelated CA C ---- */

struct ca {
	EVP_PKEY *key;
	X509 *cert;
};

static struct ca A, B, R, S, C;

static void ca_make(struct ca *c, const char *cn)
{
	ck_assert_int_eq(ident_key_new(&c->key), 0);
	ck_assert_int_eq(ident_issue_ca(cn, time(NULL) - 3600, time(NULL) + 86400 * 30, c->key, &c->cert), 0);
}

static X509 *leaf(const struct ca *c, const char *cn, enum ident_role role, enum ident_platform p,
		  bool evidence, EVP_PKEY **key_out)
{
	EVP_PKEY *k = NULL;
	ck_assert_int_eq(ident_key_new(&k), 0);
	struct ident_ext e = {.role = role, .platform = p};
	if (p != IDENT_PLATFORM_NONE) {
		memset(e.measurement, 0x5a, 48);
		e.measurement_len = 48;
	}
	if (evidence) {
		e.has_evidence_hash = true;
		memset(e.evidence_hash, 0xee, 32);
	}
	const char *dns[] = {"localhost"};
	const char *ip[] = {"127.0.0.1"};
	struct ident_leaf_spec spec = {.cn = cn, .dns = dns, .n_dns = 1, .ip = ip, .n_ip = 1,
				       .not_before = time(NULL) - 300, .not_after = time(NULL) + 86400,
				       .ext = role == IDENT_ROLE_NONE ? NULL : &e};
	X509 *x = NULL;
	ck_assert_int_eq(ident_issue_leaf(&spec, k, c->cert, c->key, &x), 0);
	if (key_out)
		*key_out = k;
	else
		EVP_PKEY_free(k);
	return x;
}

static void path_of(char *buf, size_t cap, const char *name) { snprintf(buf, cap, "%s/%s", dir, name); }

static void write_pem_certs(const char *name, X509 *const *x, size_t n)
{
	char p[400];
	path_of(p, sizeof p, name);
	FILE *f = fopen(p, "w");
	ck_assert_ptr_nonnull(f);
	for (size_t i = 0; i < n; i++)
		ck_assert_int_eq(PEM_write_X509(f, x[i]), 1);
	fclose(f);
}

static void write_key(const char *name, EVP_PKEY *k)
{
	char p[400];
	path_of(p, sizeof p, name);
	FILE *f = fopen(p, "w");
	ck_assert_ptr_nonnull(f);
	ck_assert_int_eq(PEM_write_PrivateKey(f, k, NULL, NULL, 0, NULL, NULL), 1);
	fclose(f);
	chmod(p, 0600);
}

/* A v2 CRL of c listing the serials of revoked (reason keyCompromise). */
static X509_CRL *crl_make(const struct ca *c, X509 *const *revoked, size_t n, int64_t this_upd, int64_t next_upd)
{
	X509_CRL *crl = X509_CRL_new();
	ASN1_TIME *t1 = ASN1_TIME_set(NULL, (time_t)this_upd), *t2 = ASN1_TIME_set(NULL, (time_t)next_upd);
	ck_assert(crl && t1 && t2);
	ck_assert_int_eq(X509_CRL_set_version(crl, X509_CRL_VERSION_2), 1);
	ck_assert_int_eq(X509_CRL_set_issuer_name(crl, X509_get_subject_name(c->cert)), 1);
	ck_assert_int_eq(X509_CRL_set1_lastUpdate(crl, t1), 1);
	ck_assert_int_eq(X509_CRL_set1_nextUpdate(crl, t2), 1);
	for (size_t i = 0; i < n; i++) {
		X509_REVOKED *r = X509_REVOKED_new();
		ASN1_ENUMERATED *reason = ASN1_ENUMERATED_new();
		ASN1_ENUMERATED_set(reason, 1);
		ck_assert_int_eq(X509_REVOKED_set_serialNumber(r, X509_get_serialNumber(revoked[i])), 1);
		ck_assert_int_eq(X509_REVOKED_set_revocationDate(r, t1), 1);
		ck_assert_int_eq(X509_REVOKED_add1_ext_i2d(r, NID_crl_reason, reason, 0, 0), 1);
		ASN1_ENUMERATED_free(reason);
		ck_assert_int_eq(X509_CRL_add0_revoked(crl, r), 1);
	}
	X509_CRL_sort(crl);
	ck_assert_int_gt(X509_CRL_sign(crl, c->key, EVP_sha256()), 0);
	ASN1_TIME_free(t1);
	ASN1_TIME_free(t2);
	return crl;
}

/* Writes the CRLs to name (PEM, or DER for a single one) through a temporary file and
 * a rename, as an operator should. */
static void write_crls(const char *name, X509_CRL *const *crls, size_t n, bool pem)
{
	char p[400], tmp[420];
	path_of(p, sizeof p, name);
	snprintf(tmp, sizeof tmp, "%s.tmp", p);
	FILE *f = fopen(tmp, "w");
	ck_assert_ptr_nonnull(f);
	for (size_t i = 0; i < n; i++)
		ck_assert_int_eq(pem ? PEM_write_X509_CRL(f, crls[i]) : i2d_X509_CRL_fp(f, crls[i]), 1);
	fclose(f);
	ck_assert_int_eq(rename(tmp, p), 0);
}

static void write_text(const char *name, const char *text)
{
	char p[400];
	path_of(p, sizeof p, name);
	ck_assert_int_eq(tu_write_file(p, text, strlen(text)), 0);
}

static void setup(void)
{
	tu_tmpdir(dir, sizeof dir);
	ca_make(&A, "Mimir Development CA");
	ca_make(&B, "Mimir Attestation CA");
	ca_make(&R, "Mimir Attestation CA");
	ca_make(&C, "Someone Else CA");
	/* S: B's certificate with another key, self-signed: same subject, same subject key
	 * identifier extension. */
	ck_assert_int_eq(ident_key_new(&S.key), 0);
	S.cert = X509_dup(B.cert);
	ck_assert_ptr_nonnull(S.cert);
	ck_assert_int_eq(X509_set_pubkey(S.cert, S.key), 1);
	ck_assert_int_gt(X509_sign(S.cert, S.key, EVP_sha256()), 0);
	write_pem_certs("ca.pem", &A.cert, 1);
	write_pem_certs("attest-ca.pem", &B.cert, 1);
	X509 *both[] = {A.cert, B.cert};
	write_pem_certs("trust.pem", both, 2);
}

static void teardown(void)
{
	struct ca *all[] = {&A, &B, &R, &S, &C};
	for (size_t i = 0; i < 5; i++) {
		EVP_PKEY_free(all[i]->key);
		X509_free(all[i]->cert);
	}
	tu_rmrf(dir);
}

static struct attestpeer *verifier(enum attestpeer_mode mode, bool sim, const char *crl_name)
{
	char ca[400], aca[400], crl[400], why[512];
	path_of(ca, sizeof ca, "trust.pem");
	path_of(aca, sizeof aca, "attest-ca.pem");
	if (crl_name)
		path_of(crl, sizeof crl, crl_name);
	struct attestpeer_config cfg = {.mode = mode, .allow_simulated = sim, .ca_file = ca,
					.attest_ca_file = aca, .crl_file = crl_name ? crl : NULL};
	struct attestpeer *ap = NULL;
	int rc = attestpeer_new(&ap, &cfg, why, sizeof why);
	ck_assert_msg(rc == 0, "attestpeer_new: %s", why);
	return ap;
}

static int load_rc(const char *crl_name, char *why, size_t cap)
{
	char ca[400], crl[400];
	path_of(ca, sizeof ca, "trust.pem");
	path_of(crl, sizeof crl, crl_name);
	struct attestpeer_config cfg = {.ca_file = ca, .crl_file = crl};
	struct attestpeer *ap = NULL;
	int rc = attestpeer_new(&ap, &cfg, why, cap);
	ck_assert(rc == 0 || ap == NULL);
	attestpeer_free(ap);
	return rc;
}

static int check(struct attestpeer *ap, X509 *x, struct attestpeer_verdict *v)
{
	struct ident id;
	int rc = attestpeer_check_x509(ap, x, &id, v);
	/* The DER path (the server's) decides the same. */
	unsigned char *der = NULL;
	int len = i2d_X509(x, &der);
	ck_assert_int_gt(len, 0);
	struct attestpeer_verdict v2;
	ck_assert_int_eq(attestpeer_check_der(ap, der, (size_t)len, &id, &v2), rc);
	ck_assert_str_eq(v2.reason, v->reason);
	OPENSSL_free(der);
	return rc;
}

/* ---- the production rule ---- */

START_TEST(test_rule_table)
{
	struct ident id;
	struct attestpeer_verdict v;
	struct row {
		enum ident_role role;
		enum ident_platform platform;
		bool ext, hash, meas, issued, allow_sim;
		int want;
		const char *reason;
		bool simulated;
	} rows[] = {
		/* attested roles: attestation CA, TEE platform, measurement, evidence hash */
		{IDENT_ROLE_PARTY, IDENT_PLATFORM_SEV_SNP, true, true, true, true, false, 0, "ok", false},
		{IDENT_ROLE_DEALER, IDENT_PLATFORM_TDX, true, true, true, true, false, 0, "ok", false},
		{IDENT_ROLE_GATEWAY, IDENT_PLATFORM_NITRO, true, true, true, true, false, 0, "ok", false},
		{IDENT_ROLE_SESSION, IDENT_PLATFORM_SEV_SNP, true, true, true, true, false, 0, "ok", false},
		{IDENT_ROLE_PARTY, IDENT_PLATFORM_SEV_SNP, true, true, true, false, false, ERR_FORBIDDEN, "not_attestation_ca", false},
		{IDENT_ROLE_PARTY, IDENT_PLATFORM_NONE, true, false, false, false, false, ERR_FORBIDDEN, "not_attestation_ca", false},
		{IDENT_ROLE_PARTY, IDENT_PLATFORM_NONE, true, true, true, true, false, ERR_FORBIDDEN, "not_attested", false},
		{IDENT_ROLE_PARTY, IDENT_PLATFORM_SEV_SNP, true, false, true, true, false, ERR_FORBIDDEN, "not_attested", false},
		{IDENT_ROLE_PARTY, IDENT_PLATFORM_TDX, true, true, false, true, false, ERR_FORBIDDEN, "not_attested", false},
		{IDENT_ROLE_PARTY, IDENT_PLATFORM_SIMULATED, true, true, true, true, false, ERR_FORBIDDEN, "simulated_not_allowed", false},
		{IDENT_ROLE_PARTY, IDENT_PLATFORM_SIMULATED, true, true, true, true, true, 0, "ok", true},
		{IDENT_ROLE_DEALER, IDENT_PLATFORM_SIMULATED, true, true, true, false, true, ERR_FORBIDDEN, "not_attestation_ca", false},
		/* no extension at all: refused whatever signed it */
		{IDENT_ROLE_NONE, IDENT_PLATFORM_NONE, false, false, false, true, true, ERR_FORBIDDEN, "no_extension", false},
		{IDENT_ROLE_NONE, IDENT_PLATFORM_NONE, false, false, false, false, false, ERR_FORBIDDEN, "no_extension", false},
		/* roles attest never issues: people and attest itself */
		{IDENT_ROLE_ADMIN, IDENT_PLATFORM_NONE, true, false, false, false, false, 0, "ok", false},
		{IDENT_ROLE_CLIENT, IDENT_PLATFORM_NONE, true, false, false, false, false, 0, "ok", false},
		{IDENT_ROLE_ATTEST, IDENT_PLATFORM_NONE, true, false, false, false, false, 0, "ok", false},
	};
	for (size_t i = 0; i < sizeof rows / sizeof rows[0]; i++) {
		const struct row *r = &rows[i];
		memset(&id, 0, sizeof id);
		snprintf(id.cn, sizeof id.cn, "peer%zu", i);
		id.has_extension = r->ext;
		id.role = r->role;
		id.platform = r->platform;
		id.has_evidence_hash = r->hash;
		id.measurement_len = r->meas ? 48 : 0;
		int rc = attestpeer_rule(ATTESTPEER_PRODUCTION, r->allow_sim, &id, r->issued, &v);
		ck_assert_msg(rc == r->want && !strcmp(v.reason, r->reason) && v.simulated == r->simulated,
			      "row %zu: rc %d reason %s simulated %d (%s)", i, rc, v.reason, v.simulated, v.detail);
		if (rc)
			ck_assert_ptr_nonnull(strstr(v.detail, id.cn)); /* the log says who */
		/* Development mode accepts every row. */
		ck_assert_int_eq(attestpeer_rule(ATTESTPEER_DEVELOPMENT, false, &id, r->issued, &v), 0);
		ck_assert_str_eq(v.reason, "ok");
	}
	enum attestpeer_mode m;
	ck_assert_int_eq(attestpeer_mode_parse("production", &m), 0);
	ck_assert_int_eq(m, ATTESTPEER_PRODUCTION);
	ck_assert_int_eq(attestpeer_mode_parse("development", &m), 0);
	ck_assert_int_eq(m, ATTESTPEER_DEVELOPMENT);
	ck_assert_int_eq(attestpeer_mode_parse("Production", &m), ERR_INVALID);
	ck_assert_int_eq(attestpeer_mode_parse(NULL, &m), ERR_INVALID);
	ck_assert_str_eq(attestpeer_mode_name(ATTESTPEER_PRODUCTION), "production");
}
END_TEST

START_TEST(test_production_needs_attest_ca)
{
	char ca[400], why[512];
	path_of(ca, sizeof ca, "trust.pem");
	struct attestpeer_config cfg = {.mode = ATTESTPEER_PRODUCTION, .ca_file = ca};
	struct attestpeer *ap = NULL;
	ck_assert_int_eq(attestpeer_new(&ap, &cfg, why, sizeof why), ERR_INVALID);
	ck_assert_ptr_null(ap);
	ck_assert_ptr_nonnull(strstr(why, "tls.attest_ca"));
	/* A leaf is no CA: refused as the attestation CA. */
	X509 *l = leaf(&A, "notca", IDENT_ROLE_PARTY, IDENT_PLATFORM_NONE, false, NULL);
	write_pem_certs("leaf.pem", &l, 1);
	char aca[400];
	path_of(aca, sizeof aca, "leaf.pem");
	cfg.attest_ca_file = aca;
	ck_assert_int_eq(attestpeer_new(&ap, &cfg, why, sizeof why), ERR_CONFIG);
	ck_assert_ptr_nonnull(strstr(why, "not a CA certificate"));
	X509_free(l);
}
END_TEST

/* Real certificates through the verifier: the issuer check is a signature check. */
START_TEST(test_production_certificates)
{
	struct attestpeer *strict = verifier(ATTESTPEER_PRODUCTION, false, NULL);
	struct attestpeer *sim = verifier(ATTESTPEER_PRODUCTION, true, NULL);
	struct attestpeer *dev = verifier(ATTESTPEER_DEVELOPMENT, false, NULL);
	struct attestpeer_verdict v;
	struct {
		const struct ca *ca;
		enum ident_role role;
		enum ident_platform p;
		bool evidence;
		const char *strict, *sim; /* reasons */
	} cases[] = {
		{&B, IDENT_ROLE_PARTY, IDENT_PLATFORM_SEV_SNP, true, "ok", "ok"},
		{&B, IDENT_ROLE_PARTY, IDENT_PLATFORM_SIMULATED, true, "simulated_not_allowed", "ok"},
		/* mimir-pki: the deployment CA, even when it claims a platform */
		{&A, IDENT_ROLE_PARTY, IDENT_PLATFORM_NONE, false, "not_attestation_ca", "not_attestation_ca"},
		{&A, IDENT_ROLE_PARTY, IDENT_PLATFORM_SEV_SNP, true, "not_attestation_ca", "not_attestation_ca"},
		/* a rogue CA with the attestation CA's very name, and one with its key id too */
		{&R, IDENT_ROLE_DEALER, IDENT_PLATFORM_TDX, true, "not_attestation_ca", "not_attestation_ca"},
		{&S, IDENT_ROLE_DEALER, IDENT_PLATFORM_TDX, true, "not_attestation_ca", "not_attestation_ca"},
		{&B, IDENT_ROLE_DEALER, IDENT_PLATFORM_NONE, false, "not_attested", "not_attested"},
		{&A, IDENT_ROLE_ADMIN, IDENT_PLATFORM_NONE, false, "ok", "ok"},
		{&A, IDENT_ROLE_NONE, IDENT_PLATFORM_NONE, false, "no_extension", "no_extension"},
	};
	for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
		X509 *x = leaf(cases[i].ca, "p", cases[i].role, cases[i].p, cases[i].evidence, NULL);
		int rc = check(strict, x, &v);
		ck_assert_msg(!strcmp(v.reason, cases[i].strict) && (rc == 0) == !strcmp(cases[i].strict, "ok"),
			      "case %zu strict: %d %s (%s)", i, rc, v.reason, v.detail);
		rc = check(sim, x, &v);
		ck_assert_msg(!strcmp(v.reason, cases[i].sim) && (rc == 0) == !strcmp(cases[i].sim, "ok"),
			      "case %zu sim: %d %s (%s)", i, rc, v.reason, v.detail);
		ck_assert(v.simulated == (rc == 0 && cases[i].p == IDENT_PLATFORM_SIMULATED));
		ck_assert_int_eq(check(dev, x, &v), 0);
		X509_free(x);
	}
	/* Bytes that are no certificate. */
	uint8_t junk[64];
	memset(junk, 0x30, sizeof junk);
	ck_assert_int_eq(attestpeer_check_der(strict, junk, sizeof junk, NULL, &v), ERR_PARSE);
	ck_assert_str_eq(v.reason, "unreadable");
	attestpeer_free(strict);
	attestpeer_free(sim);
	attestpeer_free(dev);
}
END_TEST

/* ---- revocation ---- */

START_TEST(test_crl_revokes_only_its_issuers_certificates)
{
	X509 *b1 = leaf(&B, "b1", IDENT_ROLE_PARTY, IDENT_PLATFORM_SIMULATED, true, NULL);
	X509 *b2 = leaf(&B, "b2", IDENT_ROLE_PARTY, IDENT_PLATFORM_SIMULATED, true, NULL);
	X509 *a1 = leaf(&A, "a1", IDENT_ROLE_PARTY, IDENT_PLATFORM_NONE, false, NULL);
	/* a1 made to carry b1's serial: B's CRL is not about A's certificates. */
	X509 *a_same = leaf(&A, "a-same", IDENT_ROLE_PARTY, IDENT_PLATFORM_NONE, false, NULL);
	ck_assert_int_eq(X509_set_serialNumber(a_same, X509_get_serialNumber(b1)), 1);
	ck_assert_int_gt(X509_sign(a_same, A.key, EVP_sha256()), 0);
	X509_CRL *crl = crl_make(&B, &b1, 1, time(NULL) - 60, time(NULL) + 3600);
	write_crls("b.crl", &crl, 1, false);
	struct attestpeer *ap = verifier(ATTESTPEER_DEVELOPMENT, false, "b.crl");
	struct metrics *m = metrics_new();
	attestpeer_register_metrics(ap, m);
	struct attestpeer_verdict v;
	ck_assert_int_eq(check(ap, b1, &v), ERR_FORBIDDEN);
	ck_assert_str_eq(v.reason, "revoked");
	ck_assert_ptr_nonnull(strstr(v.detail, "keyCompromise"));
	ck_assert_ptr_nonnull(strstr(v.detail, "CN=b1"));
	ck_assert_int_eq(check(ap, b2, &v), 0);
	ck_assert_int_eq(check(ap, a1, &v), 0);
	ck_assert_int_eq(check(ap, a_same, &v), 0);
	struct attestpeer_crl_info info;
	attestpeer_crl_info(ap, &info);
	ck_assert(info.configured);
	ck_assert_uint_eq(info.crls, 1);
	ck_assert_uint_eq(info.entries, 1);
	ck_assert(info.next_update > time(NULL));
	char *text;
	size_t len;
	ck_assert_int_eq(metrics_render(m, &text, &len), 0);
	/* b1 went through both entry points: two refusals. */
	ck_assert_ptr_nonnull(strstr(text, "mimir_tls_peers_refused_total{reason=\"revoked\"} 2\n"));
	ck_assert_ptr_nonnull(strstr(text, "mimir_tls_crl_entries 1\n"));
	free(text);
	attestpeer_free(ap);
	metrics_free(m);
	X509_CRL_free(crl);
	X509_free(b1);
	X509_free(b2);
	X509_free(a1);
	X509_free(a_same);
}
END_TEST

START_TEST(test_crl_files)
{
	char why[512];
	X509 *b1 = leaf(&B, "b1", IDENT_ROLE_PARTY, IDENT_PLATFORM_SIMULATED, true, NULL);
	X509 *a1 = leaf(&A, "a1", IDENT_ROLE_PARTY, IDENT_PLATFORM_NONE, false, NULL);
	X509_CRL *cb = crl_make(&B, &b1, 1, time(NULL) - 60, time(NULL) + 3600);
	X509_CRL *ca = crl_make(&A, &a1, 1, time(NULL) - 60, time(NULL) + 7200);
	/* A PEM bundle of two CRLs: both apply. */
	X509_CRL *two[] = {cb, ca};
	write_crls("two.pem", two, 2, true);
	struct attestpeer *ap = verifier(ATTESTPEER_DEVELOPMENT, false, "two.pem");
	struct attestpeer_verdict v;
	ck_assert_int_eq(check(ap, b1, &v), ERR_FORBIDDEN);
	ck_assert_int_eq(check(ap, a1, &v), ERR_FORBIDDEN);
	struct attestpeer_crl_info info;
	attestpeer_crl_info(ap, &info);
	ck_assert_uint_eq(info.crls, 2);
	ck_assert_uint_eq(info.entries, 2);
	attestpeer_free(ap);

	/* Signed by a CA nobody trusts; forged under the attestation CA's name. */
	X509_CRL *cc = crl_make(&C, &b1, 1, time(NULL), time(NULL) + 3600);
	write_crls("c.crl", &cc, 1, false);
	ck_assert_int_eq(load_rc("c.crl", why, sizeof why), ERR_CONFIG);
	ck_assert_ptr_nonnull(strstr(why, "not signed by a CA of tls.ca"));
	X509_CRL *cr = crl_make(&R, &b1, 1, time(NULL), time(NULL) + 3600);
	write_crls("r.crl", &cr, 1, true);
	ck_assert_int_eq(load_rc("r.crl", why, sizeof why), ERR_CONFIG);
	ck_assert_ptr_nonnull(strstr(why, "Mimir Attestation CA"));
	X509_CRL *cs = crl_make(&S, &b1, 1, time(NULL), time(NULL) + 3600);
	write_crls("s.crl", &cs, 1, false);
	ck_assert_int_eq(load_rc("s.crl", why, sizeof why), ERR_CONFIG);
	X509_CRL_free(cs);
	/* One good and one untrusted CRL: the file is refused as a whole. */
	X509_CRL *mixed[] = {cb, cc};
	write_crls("mixed.pem", mixed, 2, true);
	ck_assert_int_eq(load_rc("mixed.pem", why, sizeof why), ERR_CONFIG);

	/* Malformed files. */
	unsigned char *der = NULL;
	int dlen = i2d_X509_CRL(cb, &der);
	char p[400];
	path_of(p, sizeof p, "cut.crl");
	ck_assert_int_eq(tu_write_file(p, der, (size_t)dlen - 1), 0);
	ck_assert_int_eq(load_rc("cut.crl", why, sizeof why), ERR_CONFIG);
	unsigned char *more = malloc((size_t)dlen + 1);
	memcpy(more, der, (size_t)dlen);
	more[dlen] = 0;
	path_of(p, sizeof p, "trailing.crl");
	ck_assert_int_eq(tu_write_file(p, more, (size_t)dlen + 1), 0);
	ck_assert_int_eq(load_rc("trailing.crl", why, sizeof why), ERR_CONFIG);
	free(more);
	OPENSSL_free(der);
	write_text("empty.crl", "");
	ck_assert_int_eq(load_rc("empty.crl", why, sizeof why), ERR_CONFIG);
	write_text("junk.crl", "this is not a CRL\n");
	ck_assert_int_eq(load_rc("junk.crl", why, sizeof why), ERR_CONFIG);
	ck_assert_ptr_nonnull(strstr(why, "neither PEM CRLs nor one DER CRL"));
	/* A certificate where a CRL belongs. */
	write_pem_certs("cert-as-crl.pem", &b1, 1);
	ck_assert_int_eq(load_rc("cert-as-crl.pem", why, sizeof why), ERR_CONFIG);
	ck_assert_ptr_nonnull(strstr(why, "X509 CRL"));
	ck_assert_int_eq(load_rc("absent.crl", why, sizeof why), ERR_CONFIG);
	ck_assert_ptr_nonnull(strstr(why, "absent.crl"));
	X509_CRL_free(cb);
	X509_CRL_free(ca);
	X509_CRL_free(cc);
	X509_CRL_free(cr);
	X509_free(b1);
	X509_free(a1);
}
END_TEST

START_TEST(test_stale_crl_still_honoured)
{
	X509 *b1 = leaf(&B, "b1", IDENT_ROLE_PARTY, IDENT_PLATFORM_SIMULATED, true, NULL);
	X509_CRL *crl = crl_make(&B, &b1, 1, time(NULL) - 7200, time(NULL) - 3600);
	write_crls("stale.crl", &crl, 1, false);
	char logp[400];
	path_of(logp, sizeof logp, "stale.log");
	FILE *lf = fopen(logp, "w");
	log_set_fd(fileno(lf));
	struct attestpeer *ap = verifier(ATTESTPEER_DEVELOPMENT, false, "stale.crl");
	struct attestpeer_verdict v;
	ck_assert_int_eq(check(ap, b1, &v), ERR_FORBIDDEN);
	log_set_fd(2);
	fclose(lf);
	ck_assert(tu_file_contains(logp, "event=tls.crl_stale", 0));
	struct attestpeer_crl_info info;
	attestpeer_crl_info(ap, &info);
	ck_assert(info.next_update < time(NULL));
	attestpeer_free(ap);
	X509_CRL_free(crl);
	X509_free(b1);
}
END_TEST

START_TEST(test_reload_when_the_file_changes)
{
	X509 *b1 = leaf(&B, "b1", IDENT_ROLE_PARTY, IDENT_PLATFORM_SIMULATED, true, NULL);
	X509 *b2 = leaf(&B, "b2", IDENT_ROLE_PARTY, IDENT_PLATFORM_SIMULATED, true, NULL);
	X509_CRL *none = crl_make(&B, NULL, 0, time(NULL) - 60, time(NULL) + 3600);
	X509_CRL *one = crl_make(&B, &b1, 1, time(NULL) - 60, time(NULL) + 3600);
	X509 *both_x[] = {b1, b2};
	X509_CRL *both = crl_make(&B, both_x, 2, time(NULL) - 60, time(NULL) + 3600);
	write_crls("live.crl", &none, 1, false);
	struct attestpeer *ap = verifier(ATTESTPEER_DEVELOPMENT, false, "live.crl");
	struct attestpeer_verdict v;
	uint64_t g0 = attestpeer_poll(ap);
	ck_assert_int_eq(check(ap, b1, &v), 0);
	/* Replaced: seen at the next check once a second has passed. */
	write_crls("live.crl", &one, 1, false);
	usleep((ATTESTPEER_RECHECK_MS + 100) * 1000);
	ck_assert_int_eq(check(ap, b1, &v), ERR_FORBIDDEN);
	uint64_t g1 = attestpeer_poll(ap);
	ck_assert_uint_ne(g1, g0);
	/* A broken version leaves the previous CRL in force, and is read once. */
	write_text("live.crl", "garbage");
	usleep((ATTESTPEER_RECHECK_MS + 100) * 1000);
	ck_assert_int_eq(check(ap, b1, &v), ERR_FORBIDDEN);
	ck_assert_int_eq(check(ap, b2, &v), 0);
	usleep((ATTESTPEER_RECHECK_MS + 100) * 1000);
	ck_assert_int_eq(check(ap, b1, &v), ERR_FORBIDDEN);
	struct attestpeer_crl_info info;
	attestpeer_crl_info(ap, &info);
	ck_assert_uint_eq(info.reload_failures, 1);
	ck_assert_uint_eq(attestpeer_poll(ap), g1);
	/* Gone: still in force. */
	char p[400];
	path_of(p, sizeof p, "live.crl");
	ck_assert_int_eq(unlink(p), 0);
	usleep((ATTESTPEER_RECHECK_MS + 100) * 1000);
	ck_assert_int_eq(check(ap, b1, &v), ERR_FORBIDDEN);
	/* Back, with both: reloaded. */
	write_crls("live.crl", &both, 1, true);
	usleep((ATTESTPEER_RECHECK_MS + 100) * 1000);
	ck_assert_int_eq(check(ap, b2, &v), ERR_FORBIDDEN);
	/* A forced reload (SIGHUP) reads the file whether or not it changed. */
	attestpeer_crl_info(ap, &info);
	uint64_t before = info.reloads;
	ck_assert_int_eq(attestpeer_reload(ap, "signal"), 0);
	attestpeer_crl_info(ap, &info);
	ck_assert_uint_eq(info.reloads, before + 1);
	write_text("live.crl", "garbage");
	ck_assert_int_eq(attestpeer_reload(ap, "signal"), ERR_CONFIG);
	ck_assert_int_eq(check(ap, b2, &v), ERR_FORBIDDEN);
	attestpeer_free(ap);
	X509_CRL_free(none);
	X509_CRL_free(one);
	X509_CRL_free(both);
	X509_free(b1);
	X509_free(b2);
}
END_TEST

START_TEST(test_default_and_references)
{
	struct attestpeer *ap = verifier(ATTESTPEER_DEVELOPMENT, false, NULL);
	ck_assert_ptr_null(attestpeer_default());
	attestpeer_set_default(ap);
	struct attestpeer *d = attestpeer_default();
	ck_assert_ptr_eq(d, ap);
	attestpeer_free(d);
	attestpeer_free(ap); /* the default still holds one */
	d = attestpeer_default();
	ck_assert_int_eq(attestpeer_mode(d), ATTESTPEER_DEVELOPMENT);
	attestpeer_free(d);
	attestpeer_set_default(NULL);
	ck_assert_ptr_null(attestpeer_default());
	attestpeer_free(NULL);
	ck_assert_uint_eq(attestpeer_poll(NULL), 0);
}
END_TEST

/* ---- end to end: an in-process server and httpc ---- */

static int h_ok(struct http_req *r, void *ctx)
{
	(void)ctx;
	const struct ident *p = http_req_peer(r);
	return http_reply_json(r, 200, json_pack("{s:s}", "cn", p ? p->cn : ""));
}

static const struct http_route routes[] = {
	{"GET", "/v1/ok", h_ok, 0, 0, 0},
	{NULL, NULL, NULL, 0, 0, 0},
};

static void save_leaf(const char *name, X509 *x, EVP_PKEY *k)
{
	char n[64];
	snprintf(n, sizeof n, "%s.crt", name);
	write_pem_certs(n, &x, 1);
	snprintf(n, sizeof n, "%s.key", name);
	write_key(n, k);
}

static struct httpc *client(const char *url, const char *name, struct attestpeer *peers)
{
	char ca[400], crt[400], key[400], n[64];
	path_of(ca, sizeof ca, "trust.pem");
	snprintf(n, sizeof n, "%s.crt", name);
	path_of(crt, sizeof crt, n);
	snprintf(n, sizeof n, "%s.key", name);
	path_of(key, sizeof key, n);
	struct httpc_opts o = {.base_url = url, .ca_file = ca, .cert_file = crt, .key_file = key,
			       .timeout_ms = 10000, .retries = 0, .peers = peers};
	struct httpc *c = NULL;
	ck_assert_int_eq(httpc_new(&c, &o), 0);
	return c;
}

static long get_ok(struct httpc *c, int *rc)
{
	struct httpc_resp r;
	*rc = httpc_request(c, "GET", "/v1/ok", NULL, NULL, NULL, 0, &r);
	long st = r.status;
	httpc_resp_free(&r);
	return st;
}

START_TEST(test_tls_end_to_end)
{
	EVP_PKEY *ks, *k1, *k2, *k3;
	X509 *srv = leaf(&B, "srv", IDENT_ROLE_DEALER, IDENT_PLATFORM_SIMULATED, true, &ks);
	X509 *c1 = leaf(&B, "c1", IDENT_ROLE_PARTY, IDENT_PLATFORM_SIMULATED, true, &k1);
	X509 *c2 = leaf(&B, "c2", IDENT_ROLE_PARTY, IDENT_PLATFORM_SIMULATED, true, &k2);
	X509 *dev = leaf(&A, "dev", IDENT_ROLE_PARTY, IDENT_PLATFORM_NONE, false, &k3);
	save_leaf("srv", srv, ks);
	save_leaf("c1", c1, k1);
	save_leaf("c2", c2, k2);
	save_leaf("dev", dev, k3);
	X509_CRL *crl1 = crl_make(&B, &c1, 1, time(NULL) - 60, time(NULL) + 3600);
	X509 *both_x[] = {c1, c2};
	X509_CRL *crl2 = crl_make(&B, both_x, 2, time(NULL) - 60, time(NULL) + 3600);
	write_crls("srv.crl", &crl1, 1, false);
	struct attestpeer *sp = verifier(ATTESTPEER_PRODUCTION, true, "srv.crl");
	char crt[400], key[400], ca[400];
	path_of(crt, sizeof crt, "srv.crt");
	path_of(key, sizeof key, "srv.key");
	path_of(ca, sizeof ca, "trust.pem");
	struct http_server_config hc = {.service = "unit", .port = 0, .threads = 2, .tls_cert = crt,
					.tls_key = key, .tls_ca = ca, .peers = sp};
	struct http_server *s = NULL;
	char logp[400];
	path_of(logp, sizeof logp, "server.log");
	FILE *lf = fopen(logp, "w");
	log_set_fd(fileno(lf));
	ck_assert_int_eq(http_server_start(&s, &hc, routes, NULL, NULL), 0);
	attestpeer_free(sp); /* the server holds its own reference */
	char url[64];
	snprintf(url, sizeof url, "https://localhost:%u", http_server_port(s));
	int rc;
	/* Server side: revoked in the handshake; a mimir-pki certificate refused in
	 * production; an attested one accepted, with no verifier on the client. (With TLS
	 * 1.3 the client learns of a refused certificate as a failed read, not always as a
	 * TLS error: the server's log line says what the handshake decided.) */
	struct httpc *h1 = client(url, "c1", NULL), *h2 = client(url, "c2", NULL), *hd = client(url, "dev", NULL);
	ck_assert_int_eq(get_ok(h1, &rc), 0);
	ck_assert_int_ne(rc, 0);
	ck_assert(tu_file_contains(logp, "check=revoked", 2000));
	ck_assert_int_eq(get_ok(hd, &rc), 0);
	ck_assert_int_ne(rc, 0);
	ck_assert(tu_file_contains(logp, "check=not_attestation_ca", 2000));
	ck_assert_int_eq(get_ok(h2, &rc), 200);
	/* c2 revoked while its connection is open: refused at its next request. */
	write_crls("srv.crl", &crl2, 1, false);
	usleep((ATTESTPEER_RECHECK_MS + 100) * 1000);
	ck_assert_int_eq(get_ok(h2, &rc), 403);
	ck_assert(tu_file_contains(logp, "event=tls.peer_revoked", 2000));
	ck_assert_int_eq(get_ok(h2, &rc), 0); /* and the connection was closed: new handshake */
	ck_assert_int_ne(rc, 0);
	httpc_free(h1);
	httpc_free(h2);
	httpc_free(hd);

	/* Client side, against the same server: a CRL listing the server's certificate, a
	 * production verifier without simulated, one with it, the process default. */
	X509_CRL *crl_srv = crl_make(&B, &srv, 1, time(NULL) - 60, time(NULL) + 3600);
	write_crls("cli.crl", &crl_srv, 1, true);
	write_crls("srv.crl", &crl1, 1, false); /* c2 is good again on the server */
	usleep((ATTESTPEER_RECHECK_MS + 100) * 1000);
	struct attestpeer *cp_rev = verifier(ATTESTPEER_DEVELOPMENT, false, "cli.crl");
	struct attestpeer *cp_strict = verifier(ATTESTPEER_PRODUCTION, false, NULL);
	struct attestpeer *cp_sim = verifier(ATTESTPEER_PRODUCTION, true, NULL);
	struct httpc *h = client(url, "c2", cp_rev);
	ck_assert_int_eq(get_ok(h, &rc), 0);
	ck_assert_int_eq(rc, ERR_TLS);
	httpc_free(h);
	h = client(url, "c2", cp_strict);
	ck_assert_int_eq(get_ok(h, &rc), 0);
	ck_assert_int_eq(rc, ERR_TLS);
	httpc_free(h);
	h = client(url, "c2", cp_sim);
	ck_assert_int_eq(get_ok(h, &rc), 200);
	httpc_free(h);
	attestpeer_set_default(cp_strict);
	h = client(url, "c2", NULL);
	ck_assert_int_eq(get_ok(h, &rc), 0);
	ck_assert_int_eq(rc, ERR_TLS);
	httpc_free(h);
	attestpeer_set_default(NULL);
	attestpeer_free(cp_rev);
	attestpeer_free(cp_strict);
	attestpeer_free(cp_sim);

	http_server_free(s);
	log_set_fd(2);
	fclose(lf);
	X509_CRL_free(crl1);
	X509_CRL_free(crl2);
	X509_CRL_free(crl_srv);
	X509 *xs[] = {srv, c1, c2, dev};
	EVP_PKEY *ks_[] = {ks, k1, k2, k3};
	for (size_t i = 0; i < 4; i++) {
		X509_free(xs[i]);
		EVP_PKEY_free(ks_[i]);
	}
}
END_TEST

Suite *suite(void)
{
	Suite *s = suite_create("attestpeer");
	TCase *tc = tcase_create("attestpeer");
	tcase_add_checked_fixture(tc, setup, teardown);
	tcase_set_timeout(tc, 60);
	tcase_add_test(tc, test_rule_table);
	tcase_add_test(tc, test_production_needs_attest_ca);
	tcase_add_test(tc, test_production_certificates);
	tcase_add_test(tc, test_crl_revokes_only_its_issuers_certificates);
	tcase_add_test(tc, test_crl_files);
	tcase_add_test(tc, test_stale_crl_still_honoured);
	tcase_add_test(tc, test_reload_when_the_file_changes);
	tcase_add_test(tc, test_default_and_references);
	tcase_add_test(tc, test_tls_end_to_end);
	suite_add_tcase(s, tc);
	return s;
}
