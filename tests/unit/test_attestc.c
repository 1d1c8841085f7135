/* attestc: the requester's side without a service. The SEV-SNP certificate table is
 * read by GUID in either byte order and every lying offset, length or missing
 * terminator is refused; the NSM request is byte-exact CBOR and the response reader
 * takes the document, reports the NSM's own error, and refuses every truncation and
 * every foreign shape; collection fails with ERR_UNAVAILABLE and a message naming
 * what is missing where there is no hardware; a configfs-tsm report directory made of
 * plain files (the real Milan report and its certificates) yields evidence that
 * attest_verify accepts, with report_data written to inblob, and a foreign provider
 * is refused; simulated evidence carries the binding; attestc_binding is
 * attest_binding over the key's DER SubjectPublicKeyInfo; renewal is due at
 * renew_after. */
#include <openssl/evp.h>
#include <openssl/pem.h>
#include <openssl/x509.h>
#include <sodium.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#include "attest/attest.h"
#include "attestc/attestc.h"
#include "err/err.h"
#include "ident/ident.h"
#include "testutil.h"

static uint8_t *shared_file(const char *rel, size_t *len)
{
	char path[1024];
	uint8_t *p = (uint8_t *)tu_read_file(tu_shared(path, sizeof path, rel), len);
	ck_assert_msg(p != NULL, "cannot read %s", path);
	return p;
}

static void put_le32(uint8_t *p, uint32_t v)
{
	for (int i = 0; i < 4; i++)
		p[i] = (uint8_t)(v >> (8 * i));
}

/* GUIDs as RFC 4122 bytes and as EFI (mixed-endian) bytes. */
static const uint8_t VCEK_BE[16] = {0x63, 0xda, 0x75, 0x8d, 0xe6, 0x64, 0x45, 0x64,
				    0xad, 0xc5, 0xf4, 0xb9, 0x3b, 0xe8, 0xac, 0xcd};
static const uint8_t ASK_LE[16] = {0x79, 0xb3, 0xb7, 0x4a, 0xac, 0xbb, 0xe4, 0x4f,
				   0xa0, 0x2f, 0x05, 0xae, 0xf3, 0x27, 0xc7, 0x82};
static const uint8_t ARK_BE[16] = {0xc0, 0xb4, 0x06, 0xa4, 0xa8, 0x03, 0x49, 0x52,
				   0x97, 0x43, 0x3f, 0xb6, 0x01, 0x4c, 0xd0, 0xae};

/* A table of entries {guid, payload} plus terminator, payloads after the table. */
static size_t make_table(uint8_t *buf, size_t cap, const uint8_t *const *guids, const uint8_t *const *data,
			 const size_t *lens, size_t n)
{
	size_t off = (n + 1) * 24;
	memset(buf, 0, cap);
	for (size_t i = 0; i < n; i++) {
		memcpy(buf + i * 24, guids[i], 16);
		put_le32(buf + i * 24 + 16, (uint32_t)off);
		put_le32(buf + i * 24 + 20, (uint32_t)lens[i]);
		ck_assert_uint_le(off + lens[i], cap);
		memcpy(buf + off, data[i], lens[i]);
		off += lens[i];
	}
	return off;
}

START_TEST(test_snp_cert_table)
{
	uint8_t buf[512];
	const uint8_t vcek[] = "vcek-der-bytes", ask[] = "ask", ark[] = "ark-der";
	const uint8_t *guids[] = {ARK_BE, VCEK_BE, ASK_LE};
	const uint8_t *data[] = {ark, vcek, ask};
	const size_t lens[] = {sizeof ark, sizeof vcek, sizeof ask};
	size_t len = make_table(buf, sizeof buf, guids, data, lens, 3);
	struct attestc_evidence ev = {0};
	ck_assert_int_eq(attestc_snp_cert_table(buf, len, &ev), 0);
	ck_assert_uint_eq(ev.n_certs, 2); /* the ARK is not taken: the verifier pins its own */
	ck_assert_uint_eq(ev.certs[0].len, sizeof vcek);
	ck_assert_mem_eq(ev.certs[0].data, vcek, sizeof vcek);
	ck_assert_mem_eq(ev.certs[1].data, ask, sizeof ask);
	attestc_evidence_free(&ev);

	/* Each lie refused: offset past the end, length past the end, offset inside the
	 * table, zero length, no terminator within the buffer. */
	uint8_t bad[512];
	const uint32_t offs[] = {(uint32_t)len + 1, 0, 30, 96};
	const uint32_t lns[] = {4, (uint32_t)len, 4, 0};
	for (size_t k = 0; k < 4; k++) {
		memcpy(bad, buf, sizeof bad);
		put_le32(bad + 24 + 16, offs[k] ? offs[k] : 96);
		put_le32(bad + 24 + 20, lns[k]);
		ck_assert_msg(attestc_snp_cert_table(bad, len, &ev) == ERR_PARSE, "lie %zu accepted", k);
		attestc_evidence_free(&ev);
	}
	ck_assert_int_eq(attestc_snp_cert_table(buf, 3 * 24, &ev), ERR_PARSE); /* terminator cut off */
	attestc_evidence_free(&ev);
	/* Seventeen entries: more than any host sends. */
	uint8_t many[17 * 24 + 24 + 17];
	memset(many, 0, sizeof many);
	for (int i = 0; i < 17; i++) {
		memcpy(many + i * 24, ARK_BE, 16);
		put_le32(many + i * 24 + 16, 18 * 24 + (uint32_t)i);
		put_le32(many + i * 24 + 20, 1);
	}
	ck_assert_int_eq(attestc_snp_cert_table(many, sizeof many, &ev), ERR_PARSE);
	attestc_evidence_free(&ev);
	/* An empty table (just the terminator) is fine: the host supplied nothing. */
	uint8_t empty[24] = {0};
	ck_assert_int_eq(attestc_snp_cert_table(empty, sizeof empty, &ev), 0);
	ck_assert_uint_eq(ev.n_certs, 0);
}
END_TEST

START_TEST(test_nsm_request_bytes)
{
	uint8_t ud[64], nonce[32], buf[256];
	for (int i = 0; i < 64; i++)
		ud[i] = (uint8_t)i;
	memset(nonce, 0xab, sizeof nonce);
	size_t len = 0;
	ck_assert_int_eq(attestc_nsm_request(ud, sizeof ud, nonce, sizeof nonce, buf, sizeof buf, &len), 0);
	uint8_t want[256];
	size_t w = 0;
	const uint8_t h1[] = {0xa1, 0x6b, 'A', 't', 't', 'e', 's', 't', 'a', 't', 'i', 'o', 'n', 0xa3,
			      0x69, 'u', 's', 'e', 'r', '_', 'd', 'a', 't', 'a', 0x58, 0x40};
	memcpy(want + w, h1, sizeof h1), w += sizeof h1;
	memcpy(want + w, ud, 64), w += 64;
	const uint8_t h2[] = {0x65, 'n', 'o', 'n', 'c', 'e', 0x58, 0x20};
	memcpy(want + w, h2, sizeof h2), w += sizeof h2;
	memcpy(want + w, nonce, 32), w += 32;
	const uint8_t h3[] = {0x6a, 'p', 'u', 'b', 'l', 'i', 'c', '_', 'k', 'e', 'y', 0xf6};
	memcpy(want + w, h3, sizeof h3), w += sizeof h3;
	ck_assert_uint_eq(len, w);
	ck_assert_mem_eq(buf, want, w);
	/* No nonce: null. */
	ck_assert_int_eq(attestc_nsm_request(ud, sizeof ud, NULL, 0, buf, sizeof buf, &len), 0);
	ck_assert_uint_eq(len, sizeof h1 + 64 + 6 + 1 + sizeof h3);
	ck_assert_uint_eq(buf[sizeof h1 + 64 + 6], 0xf6);
	/* Too small a buffer is an error, never an overflow. */
	for (size_t cap = 0; cap < w; cap++)
		ck_assert_int_eq(attestc_nsm_request(ud, sizeof ud, nonce, sizeof nonce, buf, cap, &len), ERR_TOO_LARGE);
}
END_TEST

START_TEST(test_nsm_response)
{
	uint8_t resp[512];
	size_t n = 0;
	const uint8_t head[] = {0xa1, 0x6b, 'A', 't', 't', 'e', 's', 't', 'a', 't', 'i', 'o', 'n', 0xa1,
				0x68, 'd', 'o', 'c', 'u', 'm', 'e', 'n', 't', 0x59, 0x01, 0x00};
	memcpy(resp, head, sizeof head), n = sizeof head;
	for (int i = 0; i < 256; i++)
		resp[n++] = (uint8_t)(255 - i);
	const uint8_t *doc = NULL;
	size_t dlen = 0;
	struct attestc_error err;
	ck_assert_int_eq(attestc_nsm_response(resp, n, &doc, &dlen, &err), 0);
	ck_assert_ptr_eq(doc, resp + sizeof head);
	ck_assert_uint_eq(dlen, 256);
	/* Every truncation and a trailing byte are refused. */
	for (size_t cut = 0; cut < n; cut++)
		ck_assert_msg(attestc_nsm_response(resp, cut, &doc, &dlen, &err) == ERR_PARSE, "cut %zu accepted", cut);
	resp[n] = 0;
	ck_assert_int_eq(attestc_nsm_response(resp, n + 1, &doc, &dlen, &err), ERR_PARSE);
	/* An indefinite-length byte string, another key, another top-level shape. */
	uint8_t alt[sizeof head];
	memcpy(alt, head, sizeof head);
	alt[sizeof head - 3] = 0x5f;
	ck_assert_int_eq(attestc_nsm_response(alt, sizeof alt, &doc, &dlen, &err), ERR_PARSE);
	memcpy(alt, head, sizeof head);
	alt[15] = 'D';
	ck_assert_int_eq(attestc_nsm_response(alt, sizeof alt, &doc, &dlen, &err), ERR_PARSE);
	const uint8_t arr[] = {0x82, 0x01, 0x02};
	ck_assert_int_eq(attestc_nsm_response(arr, sizeof arr, &doc, &dlen, &err), ERR_PARSE);
	/* The NSM's own refusal, quoted. */
	const uint8_t e[] = {0xa1, 0x65, 'E', 'r', 'r', 'o', 'r', 0x6f, 'I', 'n', 'v', 'a', 'l', 'i', 'd',
			     'A', 'r', 'g', 'u', 'm', 'e', 'n', 't'};
	ck_assert_int_eq(attestc_nsm_response(e, sizeof e, &doc, &dlen, &err), ERR_UNAVAILABLE);
	ck_assert_ptr_nonnull(strstr(err.detail, "InvalidArgument"));
}
END_TEST

START_TEST(test_collect_without_hardware)
{
	uint8_t rd[64] = {1};
	char dir[256], none[300];
	tu_tmpdir(dir, sizeof dir);
	snprintf(none, sizeof none, "%s/absent", dir);
	struct attestc_collect_opts o = {.tsm_dir = none, .nsm_path = none, .snp_vmpl = -1};
	struct attestc_evidence ev;
	struct attestc_error err;
	ck_assert_int_eq(attestc_collect(IDENT_PLATFORM_SEV_SNP, rd, &o, &ev, &err), ERR_UNAVAILABLE);
	ck_assert_ptr_nonnull(strstr(err.detail, "configfs-tsm needs a SEV-SNP guest"));
	ck_assert_ptr_nonnull(strstr(err.detail, none));
	ck_assert_ptr_null(ev.data);
	ck_assert_int_eq(attestc_collect(IDENT_PLATFORM_TDX, rd, &o, &ev, &err), ERR_UNAVAILABLE);
	ck_assert_ptr_nonnull(strstr(err.detail, "TDX guest"));
	ck_assert_int_eq(attestc_collect(IDENT_PLATFORM_NITRO, rd, &o, &ev, &err), ERR_UNAVAILABLE);
	ck_assert_ptr_nonnull(strstr(err.detail, "not inside a Nitro Enclave"));
	ck_assert_int_eq(attestc_collect(IDENT_PLATFORM_NONE, rd, &o, &ev, &err), ERR_INVALID);
	/* Simulated evidence needs a measurement to claim. */
	ck_assert_int_eq(attestc_collect(IDENT_PLATFORM_SIMULATED, rd, &o, &ev, &err), ERR_INVALID);
	tu_rmrf(dir);
}
END_TEST

static void write_attr(const char *dir, const char *name, const void *data, size_t len)
{
	char path[512];
	snprintf(path, sizeof path, "%s/%s", dir, name);
	ck_assert_int_eq(tu_write_file(path, data, len), 0);
}

static uint8_t *pem_to_der(const uint8_t *pem, size_t len, size_t *out_len)
{
	BIO *b = BIO_new_mem_buf(pem, (int)len);
	X509 *x = PEM_read_bio_X509(b, NULL, NULL, NULL);
	BIO_free(b);
	ck_assert_ptr_nonnull(x);
	unsigned char *d = NULL;
	int n = i2d_X509(x, &d);
	X509_free(x);
	ck_assert_int_gt(n, 0);
	uint8_t *out = malloc((size_t)n);
	memcpy(out, d, (size_t)n);
	OPENSSL_free(d);
	*out_len = (size_t)n;
	return out;
}

START_TEST(test_collect_from_a_report_directory)
{
	/* A report directory as configfs-tsm shows it, made of plain files holding the real
	 * Milan report and its VCEK and ASK in the host's certificate table. */
	char dir[256];
	tu_tmpdir(dir, sizeof dir);
	size_t rlen, vlen, plen, alen;
	uint8_t *report = shared_file("vectors/attest/snp/milan-v2/report.bin", &rlen);
	uint8_t *vcek = shared_file("vectors/attest/snp/milan-v2/vcek.der", &vlen);
	uint8_t *askpem = shared_file("vectors/attest/snp/milan-v2/ask_milan.pem", &plen);
	uint8_t *ask = pem_to_der(askpem, plen, &alen);
	uint8_t table[8192];
	const uint8_t *guids[] = {VCEK_BE, ASK_LE};
	const uint8_t *data[] = {vcek, ask};
	const size_t lens[] = {vlen, alen};
	size_t tlen = make_table(table, sizeof table, guids, data, lens, 2);
	write_attr(dir, "provider", "sev_guest\n", 10);
	write_attr(dir, "generation", "7\n", 2);
	write_attr(dir, "outblob", report, rlen);
	write_attr(dir, "auxblob", table, tlen);
	write_attr(dir, "inblob", "", 0);
	write_attr(dir, "privlevel", "", 0);
	uint8_t rd[64];
	randombytes_buf(rd, sizeof rd);
	struct attestc_collect_opts o = {.tsm_report_dir = dir, .snp_vmpl = -1};
	struct attestc_evidence ev;
	struct attestc_error err;
	ck_assert_msg(attestc_collect(IDENT_PLATFORM_SEV_SNP, rd, &o, &ev, &err) == 0, "%s", err.detail);
	ck_assert_uint_eq(ev.len, rlen);
	ck_assert_mem_eq(ev.data, report, rlen);
	ck_assert_uint_eq(ev.n_certs, 2);
	char path[512];
	snprintf(path, sizeof path, "%s/inblob", dir);
	size_t ilen;
	char *in = tu_read_file(path, &ilen);
	ck_assert_uint_eq(ilen, 64);
	ck_assert_mem_eq(in, rd, 64);
	free(in);
	/* The certificates from the table are the ones the verifier needs. */
	struct attest_roots *roots = NULL;
	ck_assert_int_eq(attest_roots_load_dir(&roots, ATTEST_ROOTS_DEFAULT_DIR, ATTEST_ROOTS_PINNED), 0);
	struct attest_evidence e = {.platform = IDENT_PLATFORM_SEV_SNP, .data = ev.data, .len = ev.len,
				    .certs = ev.certs, .n_certs = ev.n_certs};
	struct attest_claims *cl = calloc(1, sizeof *cl);
	struct attest_error why;
	ck_assert_msg(attest_verify(roots, &e, 1704067200, cl, &why) == 0, "%s", why.reason);
	free(cl);
	attest_roots_free(roots);
	attestc_evidence_free(&ev);
	/* The VMPL goes to privlevel. */
	o.snp_vmpl = 2;
	ck_assert_int_eq(attestc_collect(IDENT_PLATFORM_SEV_SNP, rd, &o, &ev, &err), 0);
	snprintf(path, sizeof path, "%s/privlevel", dir);
	char *lvl = tu_read_file(path, NULL);
	ck_assert_str_eq(lvl, "2");
	free(lvl);
	attestc_evidence_free(&ev);
	/* A TDX request in an SNP guest is refused by provider. */
	ck_assert_int_eq(attestc_collect(IDENT_PLATFORM_TDX, rd, &o, &ev, &err), ERR_UNSUPPORTED);
	ck_assert_ptr_nonnull(strstr(err.detail, "sev_guest"));
	/* A malformed certificate table is an error, not a silent empty list. */
	table[16] = 0xff, table[17] = 0xff;
	write_attr(dir, "auxblob", table, tlen);
	ck_assert_int_eq(attestc_collect(IDENT_PLATFORM_SEV_SNP, rd, &o, &ev, &err), ERR_PARSE);
	/* An empty outblob is no evidence. */
	write_attr(dir, "auxblob", "", 0);
	write_attr(dir, "outblob", "", 0);
	ck_assert_int_eq(attestc_collect(IDENT_PLATFORM_SEV_SNP, rd, &o, &ev, &err), ERR_PARSE);
	free(report);
	free(vcek);
	free(askpem);
	free(ask);
	tu_rmrf(dir);
}
END_TEST

START_TEST(test_simulated_and_binding)
{
	EVP_PKEY *key = NULL;
	ck_assert_int_eq(ident_key_new(&key), 0);
	uint8_t x[32], nonce[32], rd[64], want[64], meas[48];
	randombytes_buf(x, sizeof x);
	randombytes_buf(nonce, sizeof nonce);
	memset(meas, 0x42, sizeof meas);
	ck_assert_int_eq(attestc_binding(key, x, nonce, sizeof nonce, rd), 0);
	unsigned char *spki = NULL;
	int n = i2d_PUBKEY(key, &spki);
	ck_assert_int_eq(attest_binding(spki, (size_t)n, x, nonce, sizeof nonce, want), 0);
	ck_assert_mem_eq(rd, want, 64);
	OPENSSL_free(spki);
	/* Another key, another binding. */
	EVP_PKEY *k2 = NULL;
	ck_assert_int_eq(ident_key_new(&k2), 0);
	ck_assert_int_eq(attestc_binding(k2, x, nonce, sizeof nonce, want), 0);
	ck_assert_mem_ne(rd, want, 64);
	struct attestc_collect_opts o = {.sim_measurement = meas, .sim_measurement_len = sizeof meas, .snp_vmpl = -1};
	struct attestc_evidence ev;
	struct attestc_error err;
	ck_assert_int_eq(attestc_collect(IDENT_PLATFORM_SIMULATED, rd, &o, &ev, &err), 0);
	struct attest_claims *cl = calloc(1, sizeof *cl);
	struct attest_error why;
	ck_assert_int_eq(attest_simulated_verify(ev.data, ev.len, cl, &why), 0);
	ck_assert_mem_eq(cl->report_data, rd, 64);
	ck_assert_uint_eq(cl->measurement_len, 48);
	ck_assert_mem_eq(cl->measurement, meas, 48);
	free(cl);
	attestc_evidence_free(&ev);
	EVP_PKEY_free(k2);
	EVP_PKEY_free(key);
}
END_TEST

START_TEST(test_renew_due)
{
	struct attestc_result r = {.not_before = 1000, .not_after = 4900, .renew_after = 3400};
	ck_assert(!attestc_renew_due(&r, 1500));
	ck_assert(!attestc_renew_due(&r, 3399));
	ck_assert(attestc_renew_due(&r, 3400));
	ck_assert(attestc_renew_due(&r, 5000));
	ck_assert(attestc_renew_due(NULL, 0));
}
END_TEST

Suite *suite(void)
{
	Suite *s = suite_create("attestc");
	TCase *tc = tcase_create("attestc");
	tcase_set_timeout(tc, 60);
	tcase_add_test(tc, test_snp_cert_table);
	tcase_add_test(tc, test_nsm_request_bytes);
	tcase_add_test(tc, test_nsm_response);
	tcase_add_test(tc, test_collect_without_hardware);
	tcase_add_test(tc, test_collect_from_a_report_directory);
	tcase_add_test(tc, test_simulated_and_binding);
	tcase_add_test(tc, test_renew_due);
	suite_add_tcase(s, tc);
	return s;
}
