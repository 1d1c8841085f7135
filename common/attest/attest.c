/* attest: the module's common face. It holds the trust anchors (one root per vendor
 * line, read from attest/roots/ and optionally pinned by SHA-256 so that a swapped file
 * is refused at start-up), dispatches a piece of evidence to its platform's verifier,
 * turns rejections into problem+json and claims into JSON, computes the key binding a
 * requester puts into its evidence, and reads the simulated evidence of development. */
#include <errno.h>
#include <openssl/err.h>
#include <openssl/evp.h>
#include <openssl/x509.h>
#include <openssl/x509v3.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "attest_int.h"
#include "err/err.h"

struct attest_roots {
	X509 *root[ATTEST_ROOT_COUNT];
};

static const struct {
	const char *file;
	const char *name;
	const char *sha256;
} root_info[ATTEST_ROOT_COUNT] = {
	[ATTEST_ROOT_AMD_MILAN] = {"amd_ark_milan.pem", "AMD ARK-Milan",
				   "69d063b45344d26a2e94e1f4210de49ef555308287d4c174445c95639a540bcd"},
	[ATTEST_ROOT_AMD_GENOA] = {"amd_ark_genoa.pem", "AMD ARK-Genoa",
				   "4c6598d19c18719c5dfd4a7d335f674e5bfe1d8f800cea2cf270c10d103db2f1"},
	[ATTEST_ROOT_INTEL_SGX] = {"intel_sgx_root_ca.pem", "Intel SGX Root CA",
				   "44a0196b2b99f889b8e149e95b807a350e7424964399e885a7cbb8ccfab674d3"},
	[ATTEST_ROOT_AWS_NITRO] = {"aws_nitro_root_g1.pem", "AWS Nitro Enclaves root G1",
				   "641a0321a3e244efe456463195d606317ed7cdcc3c1756e09893f3c68f79bb5b"},
};

const char *attest_check_name(enum attest_check c)
{
	static const char *const names[] = {"none",	 "format",     "signature",
					    "chain",	 "binding",    "tcb",
					    "collateral", "freshness", "policy"};
	return (unsigned)c < sizeof names / sizeof names[0] ? names[c] : "none";
}

json_t *attest_problem(const struct attest_error *e, const char *request_id)
{
	if (!e)
		return NULL;
	char detail[ATTEST_REASON_MAX + 32];
	snprintf(detail, sizeof detail, "%s: %s", attest_check_name(e->check), e->reason);
	json_t *j = err_problem(e->code ? e->code : ERR_ATTESTATION, detail,
				e->field[0] ? e->field : NULL, request_id);
	if (j && json_object_set_new(j, "check", json_string(attest_check_name(e->check))) != 0) {
		json_decref(j);
		return NULL;
	}
	return j;
}

const char *attest_root_file(enum attest_root which)
{
	return (unsigned)which < ATTEST_ROOT_COUNT ? root_info[which].file : NULL;
}

const char *attest_root_name(enum attest_root which)
{
	return (unsigned)which < ATTEST_ROOT_COUNT ? root_info[which].name : "unknown root";
}

static int unhex(const char *s, uint8_t *out, size_t n)
{
	if (strlen(s) != 2 * n)
		return ERR_PARSE;
	for (size_t i = 0; i < n; i++) {
		unsigned v;
		if (sscanf(s + 2 * i, "%2x", &v) != 1)
			return ERR_PARSE;
		out[i] = (uint8_t)v;
	}
	return 0;
}

int attest_root_pinned_sha256(enum attest_root which, uint8_t out[32])
{
	if ((unsigned)which >= ATTEST_ROOT_COUNT || !out)
		return ERR_INVALID;
	return unhex(root_info[which].sha256, out, 32);
}

int attest_roots_new(struct attest_roots **out)
{
	if (!out)
		return ERR_INVALID;
	*out = calloc(1, sizeof **out);
	return *out ? 0 : ERR_NOMEM;
}

void attest_roots_free(struct attest_roots *r)
{
	if (!r)
		return;
	for (int i = 0; i < ATTEST_ROOT_COUNT; i++)
		X509_free(r->root[i]);
	free(r);
}

X509 *attest_roots_get(const struct attest_roots *r, enum attest_root which)
{
	return r && (unsigned)which < ATTEST_ROOT_COUNT ? r->root[which] : NULL;
}

static int cert_sha256(X509 *x, uint8_t out[32])
{
	unsigned char *der = NULL;
	int n = i2d_X509(x, &der);
	if (n <= 0)
		return ERR_NOMEM;
	unsigned int mdlen = 0;
	int ok = EVP_Digest(der, (size_t)n, out, &mdlen, EVP_sha256(), NULL);
	OPENSSL_free(der);
	return ok == 1 && mdlen == 32 ? 0 : ERR_CRYPTO;
}

int attest_roots_set(struct attest_roots *r, enum attest_root which, const uint8_t *cert,
		     size_t len)
{
	if (!r || (unsigned)which >= ATTEST_ROOT_COUNT || !cert)
		return ERR_INVALID;
	STACK_OF(X509) *sk = sk_X509_new_null();
	if (!sk)
		return ERR_NOMEM;
	int rc = attest_certs_load(cert, len, sk, 1);
	if (rc == 0 && sk_X509_num(sk) != 1)
		rc = ERR_PARSE;
	if (rc == 0) {
		X509 *x = sk_X509_value(sk, 0);
		EVP_PKEY *pk = X509_get0_pubkey(x);
		if (X509_check_issued(x, x) != X509_V_OK || !pk || X509_verify(x, pk) != 1) {
			rc = ERR_ATTESTATION;
		} else {
			X509_free(r->root[which]);
			r->root[which] = x;
			(void)sk_X509_shift(sk);
		}
	}
	ERR_clear_error();
	sk_X509_pop_free(sk, X509_free);
	return rc;
}

static int read_small_file(const char *path, uint8_t **out, size_t *len)
{
	FILE *f = fopen(path, "rb");
	if (!f)
		return errno == ENOENT ? ERR_NOT_FOUND : ERR_IO;
	uint8_t *buf = malloc(ATTEST_EVIDENCE_MAX + 1);
	size_t n = buf ? fread(buf, 1, ATTEST_EVIDENCE_MAX + 1, f) : 0;
	int bad = ferror(f);
	fclose(f);
	if (!buf)
		return ERR_NOMEM;
	if (bad || n > ATTEST_EVIDENCE_MAX) {
		free(buf);
		return bad ? ERR_IO : ERR_TOO_LARGE;
	}
	*out = buf;
	*len = n;
	return 0;
}

int attest_roots_load_dir(struct attest_roots **out, const char *dir, unsigned flags)
{
	if (!out || !dir)
		return ERR_INVALID;
	*out = NULL;
	struct attest_roots *r;
	int rc = attest_roots_new(&r);
	if (rc != 0)
		return rc;
	for (int i = 0; i < ATTEST_ROOT_COUNT; i++) {
		char path[1024];
		if ((size_t)snprintf(path, sizeof path, "%s/%s", dir, root_info[i].file) >=
		    sizeof path) {
			rc = ERR_INVALID;
			break;
		}
		uint8_t *buf = NULL;
		size_t len = 0;
		rc = read_small_file(path, &buf, &len);
		if (rc == ERR_NOT_FOUND) {
			rc = (flags & ATTEST_ROOTS_ALL) ? ERR_MISSING : 0;
			if (rc != 0)
				break;
			continue;
		}
		if (rc != 0)
			break;
		rc = attest_roots_set(r, (enum attest_root)i, buf, len);
		free(buf);
		if (rc != 0)
			break;
		if (flags & ATTEST_ROOTS_PINNED) {
			uint8_t got[32], want[32];
			if ((rc = cert_sha256(r->root[i], got)) != 0 ||
			    (rc = attest_root_pinned_sha256((enum attest_root)i, want)) != 0)
				break;
			if (memcmp(got, want, 32) != 0) {
				rc = ERR_ATTESTATION;
				break;
			}
		}
	}
	if (rc != 0) {
		attest_roots_free(r);
		return rc;
	}
	*out = r;
	return 0;
}

int attest_roots_sha256(const struct attest_roots *r, enum attest_root which, uint8_t out[32])
{
	X509 *x = attest_roots_get(r, which);
	if (!x)
		return ERR_NOT_FOUND;
	return cert_sha256(x, out);
}

void attest_snp_tcb_split(uint64_t tcb, struct attest_snp_tcb *out)
{
	out->bootloader = (uint8_t)(tcb & 0xff);
	out->tee = (uint8_t)((tcb >> 8) & 0xff);
	out->snp = (uint8_t)((tcb >> 48) & 0xff);
	out->microcode = (uint8_t)((tcb >> 56) & 0xff);
}

int attest_verify(const struct attest_roots *roots, const struct attest_evidence *ev, int64_t at,
		  struct attest_claims *out, struct attest_error *err)
{
	struct attest_error local_err;
	if (!err)
		err = &local_err;
	attest_error_clear(err);
	if (!ev || !out || (!ev->data && ev->len))
		return attest_fail(err, ERR_INVALID, ATTEST_CHECK_NONE, NULL, "no evidence");
	switch (ev->platform) {
	case IDENT_PLATFORM_SEV_SNP: {
		/* The VCEK is the certificate whose subject is SEV-VCEK; the ASK the other. */
		const struct attest_blob *vcek = NULL, *ask = NULL;
		STACK_OF(X509) *all = sk_X509_new_null();
		if (!all)
			return attest_fail(err, ERR_NOMEM, ATTEST_CHECK_NONE, NULL, "out of memory");
		int rc = 0;
		for (size_t i = 0; rc == 0 && i < ev->n_certs; i++)
			rc = attest_certs_load(ev->certs[i].data, ev->certs[i].len, all, 8);
		if (rc != 0) {
			sk_X509_pop_free(all, X509_free);
			return attest_fail(err, ERR_PARSE, ATTEST_CHECK_FORMAT, "certs",
					   "a certificate file is neither PEM nor one DER certificate");
		}
		unsigned char *vder = NULL, *ader = NULL;
		int vlen = 0, alen = 0;
		for (int i = 0; i < sk_X509_num(all); i++) {
			X509 *x = sk_X509_value(all, i);
			char cn[64] = "";
			X509_NAME_get_text_by_NID(X509_get_subject_name(x), NID_commonName, cn,
						  sizeof cn);
			bool is_vcek = strcmp(cn, "SEV-VCEK") == 0;
			if (is_vcek && !vder)
				vlen = i2d_X509(x, &vder);
			else if (!is_vcek && !ader && strncmp(cn, "SEV-", 4) == 0)
				alen = i2d_X509(x, &ader);
		}
		ERR_clear_error();
		sk_X509_pop_free(all, X509_free);
		struct attest_blob vb = {vder, vlen > 0 ? (size_t)vlen : 0};
		struct attest_blob ab = {ader, alen > 0 ? (size_t)alen : 0};
		vcek = &vb;
		ask = &ab;
		rc = attest_snp_verify(roots, ev->data, ev->len, vcek->data, vcek->len, ask->data,
				       ask->len, at, out, err);
		OPENSSL_free(vder);
		OPENSSL_free(ader);
		return rc;
	}
	case IDENT_PLATFORM_TDX: {
		struct attest_tdx_collateral *c = NULL;
		int rc = 0;
		if (ev->n_collateral) {
			if ((rc = attest_tdx_collateral_new(&c)) != 0)
				return attest_fail(err, rc, ATTEST_CHECK_NONE, NULL, "out of memory");
			for (size_t i = 0; rc == 0 && i < ev->n_collateral; i++)
				rc = attest_tdx_collateral_add(c, ev->collateral[i].data,
							       ev->collateral[i].len, err);
		}
		if (rc == 0)
			rc = attest_tdx_verify(roots, ev->data, ev->len, c, at, out, err);
		attest_tdx_collateral_free(c);
		return rc;
	}
	case IDENT_PLATFORM_NITRO:
		return attest_nitro_verify(roots, ev->data, ev->len, at, out, err);
	case IDENT_PLATFORM_SIMULATED:
		return attest_simulated_verify(ev->data, ev->len, out, err);
	default:
		return attest_fail(err, ERR_INVALID, ATTEST_CHECK_NONE, "platform",
				   "no verifier for platform %s", ident_platform_name(ev->platform));
	}
}

int attest_binding(const uint8_t *tls_spki, size_t spki_len, const uint8_t x25519_pub[32],
		   const uint8_t *nonce, size_t nonce_len, uint8_t out[ATTEST_REPORT_DATA_LEN])
{
	static const char tag[] = "mimir-attest-binding-v1";
	if (!tls_spki || spki_len == 0 || spki_len > 4096 || !x25519_pub || !nonce ||
	    nonce_len < 16 || nonce_len > 64 || !out)
		return ERR_INVALID;
	uint8_t l1[4] = {(uint8_t)(spki_len >> 24), (uint8_t)(spki_len >> 16),
			 (uint8_t)(spki_len >> 8), (uint8_t)spki_len};
	uint8_t l2[4] = {0, 0, 0, (uint8_t)nonce_len};
	EVP_MD_CTX *mc = EVP_MD_CTX_new();
	unsigned int n = 0;
	int ok = mc && EVP_DigestInit_ex(mc, EVP_sha512(), NULL) == 1 &&
		 EVP_DigestUpdate(mc, tag, sizeof tag) == 1 && EVP_DigestUpdate(mc, l1, 4) == 1 &&
		 EVP_DigestUpdate(mc, tls_spki, spki_len) == 1 &&
		 EVP_DigestUpdate(mc, x25519_pub, 32) == 1 && EVP_DigestUpdate(mc, l2, 4) == 1 &&
		 EVP_DigestUpdate(mc, nonce, nonce_len) == 1 && EVP_DigestFinal_ex(mc, out, &n) == 1 &&
		 n == ATTEST_REPORT_DATA_LEN;
	EVP_MD_CTX_free(mc);
	return ok ? 0 : ERR_CRYPTO;
}

/* --- Simulated evidence --- */

int attest_simulated_verify(const uint8_t *doc, size_t len, struct attest_claims *out,
			    struct attest_error *err)
{
	struct attest_error local_err;
	if (!err)
		err = &local_err;
	attest_error_clear(err);
	if (!out || (!doc && len))
		return attest_fail(err, ERR_INVALID, ATTEST_CHECK_NONE, NULL, "no evidence");
	memset(out, 0, sizeof *out);
	static const char *const types[] = {"mimir-simulated-v1", NULL};
	int type = -1;
	struct jspec_bytes m = {0}, rd = {0};
	const struct jspec_field spec[] = {
		JSPEC_CHOICE("type", true, types, &type),
		JSPEC_HEXBYTES("measurement", true, 1, ATTEST_MEASUREMENT_MAX, &m),
		JSPEC_HEXBYTES("report_data", true, ATTEST_REPORT_DATA_LEN,
			       ATTEST_REPORT_DATA_LEN, &rd),
		JSPEC_END_F,
	};
	json_t *root = NULL;
	struct jspec_error je;
	if (len > 4096 || jspec_parse_body(doc, len, spec, 0, &root, &je) != 0) {
		json_decref(root);
		return attest_fail(err, ERR_PARSE, ATTEST_CHECK_FORMAT, len > 4096 ? NULL : je.field,
				   "simulated evidence: %s",
				   len > 4096 ? "larger than 4096 bytes" : je.detail);
	}
	json_decref(root);
	out->platform = IDENT_PLATFORM_SIMULATED;
	memcpy(out->measurement, m.data, m.len);
	out->measurement_len = m.len;
	out->has_report_data = true;
	memcpy(out->report_data, rd.data, ATTEST_REPORT_DATA_LEN);
	jspec_bytes_free(&m);
	jspec_bytes_free(&rd);
	unsigned int n = 0;
	EVP_Digest(doc, len, out->evidence_sha256, &n, EVP_sha256(), NULL);
	return 0;
}

int attest_simulated_make(const uint8_t *measurement, size_t mlen,
			  const uint8_t report_data[ATTEST_REPORT_DATA_LEN], char *buf, size_t cap)
{
	if (!measurement || mlen == 0 || mlen > ATTEST_MEASUREMENT_MAX || !report_data || !buf)
		return ERR_INVALID;
	char mh[2 * ATTEST_MEASUREMENT_MAX + 1], rh[2 * ATTEST_REPORT_DATA_LEN + 1];
	attest_hex(mh, measurement, mlen);
	attest_hex(rh, report_data, ATTEST_REPORT_DATA_LEN);
	int n = snprintf(buf, cap,
			 "{\"type\":\"mimir-simulated-v1\",\"measurement\":\"%s\",\"report_data\":\"%s\"}",
			 mh, rh);
	return n > 0 && (size_t)n < cap ? 0 : ERR_TOO_LARGE;
}

/* --- Claims as JSON --- */

static int jhex(json_t *o, const char *k, const uint8_t *p, size_t n)
{
	char buf[2 * ATTEST_NITRO_DATA_MAX + 1];
	if (n > ATTEST_NITRO_DATA_MAX)
		return -1;
	attest_hex(buf, p, n);
	return json_object_set_new(o, k, json_string(buf));
}

static int jint(json_t *o, const char *k, json_int_t v)
{
	return json_object_set_new(o, k, json_integer(v));
}

static json_t *snp_json(const struct attest_snp *s)
{
	json_t *o = json_object();
	struct attest_snp_tcb t;
	attest_snp_tcb_split(s->reported_tcb, &t);
	json_t *tcb = json_pack("{s:i,s:i,s:i,s:i}", "bootloader", t.bootloader, "tee", t.tee,
				"snp", t.snp, "microcode", t.microcode);
	char hx[17];
	int bad = !o || !tcb;
	bad |= jint(o, "version", s->version) | jint(o, "guest_svn", s->guest_svn);
	snprintf(hx, sizeof hx, "%016llx", (unsigned long long)s->policy);
	bad |= json_object_set_new(o, "policy", json_string(hx));
	bad |= jint(o, "vmpl", s->vmpl);
	bad |= jhex(o, "family_id", s->family_id, 16) | jhex(o, "image_id", s->image_id, 16);
	bad |= jhex(o, "host_data", s->host_data, 32);
	bad |= jhex(o, "id_key_digest", s->id_key_digest, 48);
	bad |= jhex(o, "author_key_digest", s->author_key_digest, 48);
	bad |= jhex(o, "report_id", s->report_id, 32);
	snprintf(hx, sizeof hx, "%016llx", (unsigned long long)s->reported_tcb);
	bad |= json_object_set_new(o, "reported_tcb", json_string(hx));
	bad |= json_object_set(o, "reported_tcb_fields", tcb);
	snprintf(hx, sizeof hx, "%016llx", (unsigned long long)s->current_tcb);
	bad |= json_object_set_new(o, "current_tcb", json_string(hx));
	snprintf(hx, sizeof hx, "%016llx", (unsigned long long)s->committed_tcb);
	bad |= json_object_set_new(o, "committed_tcb", json_string(hx));
	snprintf(hx, sizeof hx, "%016llx", (unsigned long long)s->launch_tcb);
	bad |= json_object_set_new(o, "launch_tcb", json_string(hx));
	bad |= json_object_set_new(o, "product", json_string(s->product));
	json_decref(tcb);
	if (bad) {
		json_decref(o);
		return NULL;
	}
	return o;
}

static json_t *tdx_json(const struct attest_tdx *t)
{
	json_t *o = json_object();
	int bad = !o;
	bad |= jint(o, "version", t->version) | jint(o, "body_type", t->body_type);
	bad |= jhex(o, "mrtd", t->mrtd, 48) | jhex(o, "mrseam", t->mrseam, 48);
	bad |= jhex(o, "mrsignerseam", t->mrsignerseam, 48);
	bad |= jhex(o, "mrconfigid", t->mrconfigid, 48) | jhex(o, "mrowner", t->mrowner, 48);
	bad |= jhex(o, "mrownerconfig", t->mrownerconfig, 48);
	for (int i = 0; i < 4; i++) {
		char k[16];
		snprintf(k, sizeof k, "rtmr%d", i);
		bad |= jhex(o, k, t->rtmr[i], 48);
	}
	bad |= jhex(o, "td_attributes", t->td_attributes, 8) | jhex(o, "xfam", t->xfam, 8);
	bad |= jhex(o, "tee_tcb_svn", t->tee_tcb_svn, 16);
	bad |= jhex(o, "fmspc", t->fmspc, 6);
	if (t->tcb_info_checked)
		bad |= json_object_set_new(o, "tcb_status", json_string(t->tcb_status));
	if (t->qe_identity_checked)
		bad |= json_object_set_new(o, "qe_tcb_status", json_string(t->qe_tcb_status));
	if (bad) {
		json_decref(o);
		return NULL;
	}
	return o;
}

static json_t *nitro_json(const struct attest_nitro *n)
{
	json_t *o = json_object(), *pcrs = json_object();
	int bad = !o || !pcrs;
	bad |= json_object_set_new(o, "module_id", json_string(n->module_id));
	bad |= json_object_set_new(o, "timestamp_ms", json_integer((json_int_t)n->timestamp_ms));
	for (int i = 0; i < ATTEST_NITRO_PCRS; i++)
		if (n->pcr_present & (1u << i)) {
			char k[16];
			snprintf(k, sizeof k, "%d", i);
			bad |= jhex(pcrs, k, n->pcr[i], ATTEST_NITRO_PCR_LEN);
		}
	bad |= json_object_set(o, "pcrs", pcrs);
	if (n->has_user_data)
		bad |= jhex(o, "user_data", n->user_data, n->user_data_len);
	if (n->has_nonce)
		bad |= jhex(o, "nonce", n->nonce, n->nonce_len);
	if (n->has_public_key)
		bad |= jhex(o, "public_key", n->public_key, n->public_key_len);
	json_decref(pcrs);
	if (bad) {
		json_decref(o);
		return NULL;
	}
	return o;
}

json_t *attest_claims_json(const struct attest_claims *c)
{
	if (!c)
		return NULL;
	json_t *o = json_object();
	int bad = !o;
	bad |= json_object_set_new(o, "platform", json_string(ident_platform_name(c->platform)));
	bad |= jhex(o, "measurement", c->measurement, c->measurement_len);
	if (c->has_report_data)
		bad |= jhex(o, "report_data", c->report_data, ATTEST_REPORT_DATA_LEN);
	bad |= json_object_set_new(o, "debug", json_boolean(c->debug));
	if (c->has_chip_id)
		bad |= jhex(o, "chip_id", c->chip_id, ATTEST_CHIP_ID_LEN);
	if (c->has_time)
		bad |= json_object_set_new(o, "time", json_integer(c->time));
	bad |= jhex(o, "evidence_sha256", c->evidence_sha256, 32);
	json_t *p = NULL;
	if (c->platform == IDENT_PLATFORM_SEV_SNP)
		p = snp_json(&c->snp);
	else if (c->platform == IDENT_PLATFORM_TDX)
		p = tdx_json(&c->tdx);
	else if (c->platform == IDENT_PLATFORM_NITRO)
		p = nitro_json(&c->nitro);
	if (c->platform == IDENT_PLATFORM_SEV_SNP || c->platform == IDENT_PLATFORM_TDX ||
	    c->platform == IDENT_PLATFORM_NITRO)
		bad |= !p || json_object_set_new(o, ident_platform_name(c->platform), p);
	if (bad) {
		json_decref(o);
		return NULL;
	}
	return o;
}
