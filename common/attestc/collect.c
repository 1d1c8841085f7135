/* attestc collect: evidence from the machine we run on. SEV-SNP and TDX share the
 * kernel's configfs-tsm interface (Documentation/ABI/testing/configfs-tsm): one
 * directory per report, inblob in, outblob (and for SNP auxblob) out, a generation
 * counter to notice a concurrent writer of the same directory. Nitro has its own
 * device, /dev/nsm, spoken to with one raw ioctl carrying CBOR both ways; the request
 * is encoded and the response decoded here by a few lines that accept exactly the one
 * shape each has (no general CBOR library is needed for that, and the verifier's
 * reader is internal to common/attest). Every failure says what is missing. */
#include <errno.h>
#include <fcntl.h>
#include <linux/ioctl.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/ioctl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <sodium.h>

#include "attestc/attestc.h"
#include "err/err.h"

#define BLOB_MAX (64 * 1024)
#define TSM_RETRIES 3
#define CERT_TABLE_MAX_ENTRIES 16

/* include/uapi/linux/nsm.h (Linux 6.8), spelled out so that older kernel headers
 * build too: the request and response buffers of one raw NSM message. */
struct attestc_nsm_iovec {
	uint64_t addr;
	uint64_t len;
};
struct attestc_nsm_raw {
	struct attestc_nsm_iovec request;
	struct attestc_nsm_iovec response;
};
#define ATTESTC_NSM_IOCTL_RAW _IOWR(0x0A, 0x0, struct attestc_nsm_raw)
#define NSM_REQUEST_MAX 0x1000
#define NSM_RESPONSE_MAX 0x3000

__attribute__((format(printf, 3, 4))) static int fail(struct attestc_error *e, int code, const char *fmt, ...)
{
	if (e) {
		memset(e, 0, sizeof *e);
		e->code = code;
		va_list ap;
		va_start(ap, fmt);
		vsnprintf(e->detail, sizeof e->detail, fmt, ap);
		va_end(ap);
	}
	return code;
}

void attestc_evidence_free(struct attestc_evidence *e)
{
	if (!e)
		return;
	free(e->data);
	for (size_t i = 0; i < e->n_certs; i++)
		free((void *)e->certs[i].data);
	memset(e, 0, sizeof *e);
}

/* ---- the SNP certificate table ---- */

/* GUIDs of the GHCB certificate table, in the byte order of RFC 4122 (what AMD's
 * tools and the Linux host write) and in the mixed-endian order of EFI GUIDs (which
 * some hosts use); either identifies the entry. */
static const char *const vcek_guid = "63da758d-e664-4564-adc5-f4b93be8accd";
static const char *const ask_guid = "4ab7b379-bbac-4fe4-a02f-05aef327c782";

static void guid_bytes(const char *s, uint8_t be[16], uint8_t le[16])
{
	size_t n = 0;
	sodium_hex2bin(be, 16, s, strlen(s), "-", &n, NULL);
	memcpy(le, be, 16);
	le[0] = be[3], le[1] = be[2], le[2] = be[1], le[3] = be[0];
	le[4] = be[5], le[5] = be[4], le[6] = be[7], le[7] = be[6];
}

static bool guid_is(const uint8_t *g, const char *s)
{
	uint8_t be[16], le[16];
	guid_bytes(s, be, le);
	return memcmp(g, be, 16) == 0 || memcmp(g, le, 16) == 0;
}

static uint32_t le32(const uint8_t *p)
{
	return (uint32_t)p[0] | (uint32_t)p[1] << 8 | (uint32_t)p[2] << 16 | (uint32_t)p[3] << 24;
}

int attestc_snp_cert_table(const uint8_t *table, size_t len, struct attestc_evidence *out)
{
	if (!table || !out)
		return ERR_INVALID;
	for (size_t i = 0;; i++) {
		if (i >= CERT_TABLE_MAX_ENTRIES || (i + 1) * 24 > len)
			return ERR_PARSE; /* no terminator within bounds */
		const uint8_t *e = table + i * 24;
		uint32_t off = le32(e + 16), n = le32(e + 20);
		if (sodium_is_zero(e, 24))
			return 0;
		if (n == 0 || off > len || n > len - off || off < (i + 1) * 24)
			return ERR_PARSE;
		if (!guid_is(e, vcek_guid) && !guid_is(e, ask_guid))
			continue; /* the ARK is pinned on the verifier's side; others unused */
		if (out->n_certs >= ATTESTC_CERTS_MAX)
			return ERR_PARSE;
		uint8_t *c = malloc(n);
		if (!c)
			return ERR_NOMEM;
		memcpy(c, table + off, n);
		out->certs[out->n_certs++] = (struct attest_blob){c, n};
	}
}

/* ---- configfs-tsm ---- */

static int read_attr(const char *dir, const char *name, uint8_t **out, size_t *len, int *errn)
{
	char path[4200];
	*out = NULL;
	*len = 0;
	snprintf(path, sizeof path, "%s/%s", dir, name);
	int fd = open(path, O_RDONLY | O_CLOEXEC);
	if (fd < 0) {
		*errn = errno;
		return ERR_IO;
	}
	uint8_t *buf = malloc(BLOB_MAX);
	size_t n = 0;
	int rc = buf ? 0 : ERR_NOMEM;
	while (rc == 0) {
		if (n == BLOB_MAX) {
			rc = ERR_TOO_LARGE;
			break;
		}
		ssize_t r = read(fd, buf + n, BLOB_MAX - n);
		if (r < 0 && errno == EINTR)
			continue;
		if (r < 0) {
			*errn = errno;
			rc = ERR_IO;
		} else if (r == 0) {
			break;
		} else {
			n += (size_t)r;
		}
	}
	close(fd);
	if (rc != 0) {
		free(buf);
		return rc;
	}
	*out = buf;
	*len = n;
	return 0;
}

static int write_attr(const char *dir, const char *name, const void *data, size_t len, int *errn)
{
	char path[4200];
	snprintf(path, sizeof path, "%s/%s", dir, name);
	int fd = open(path, O_WRONLY | O_CLOEXEC);
	if (fd < 0) {
		*errn = errno;
		return ERR_IO;
	}
	ssize_t w;
	do
		w = write(fd, data, len);
	while (w < 0 && errno == EINTR);
	*errn = errno;
	int rc = w == (ssize_t)len ? 0 : ERR_IO;
	if (close(fd) != 0 && rc == 0) {
		*errn = errno;
		rc = ERR_IO;
	}
	return rc;
}

static int read_u64_attr(const char *dir, const char *name, uint64_t *v, int *errn)
{
	uint8_t *b;
	size_t n;
	int rc = read_attr(dir, name, &b, &n, errn);
	if (rc != 0)
		return rc;
	char text[32];
	size_t l = n < sizeof text - 1 ? n : sizeof text - 1;
	memcpy(text, b, l);
	text[l] = '\0';
	free(b);
	char *end;
	errno = 0;
	unsigned long long x = strtoull(text, &end, 10);
	if (errno || end == text || (*end && *end != '\n'))
		return ERR_PARSE;
	*v = x;
	return 0;
}

/* One attempt in an existing report directory. */
static int tsm_once(const char *dir, enum ident_platform p, const uint8_t rd[64],
		    const struct attestc_collect_opts *o, struct attestc_evidence *out,
		    struct attestc_error *err)
{
	int errn = 0, rc;
	uint8_t *prov = NULL, *aux = NULL;
	size_t plen = 0, alen = 0;
	if ((rc = read_attr(dir, "provider", &prov, &plen, &errn)) != 0)
		return fail(err, rc, "configfs-tsm: cannot read %s/provider: %s", dir, strerror(errn));
	const char *want = p == IDENT_PLATFORM_SEV_SNP ? "sev_guest" : "tdx_guest";
	size_t wl = strlen(want);
	bool match = plen >= wl && memcmp(prov, want, wl) == 0 && (plen == wl || prov[wl] == '\n');
	char got[32];
	snprintf(got, sizeof got, "%.*s", (int)(plen && prov[plen - 1] == '\n' ? plen - 1 : plen), (const char *)prov);
	free(prov);
	if (!match)
		return fail(err, ERR_UNSUPPORTED,
			    "configfs-tsm provider is '%s', not %s: this is not a %s guest", got, want,
			    ident_platform_name(p));
	if (p == IDENT_PLATFORM_SEV_SNP && o && o->snp_vmpl >= 0) {
		char lvl[8];
		int l = snprintf(lvl, sizeof lvl, "%d", o->snp_vmpl);
		if ((rc = write_attr(dir, "privlevel", lvl, (size_t)l, &errn)) != 0)
			return fail(err, rc, "configfs-tsm: cannot set privlevel %d: %s", o->snp_vmpl, strerror(errn));
	}
	if ((rc = write_attr(dir, "inblob", rd, 64, &errn)) != 0)
		return fail(err, rc, "configfs-tsm: cannot write inblob: %s", strerror(errn));
	uint64_t g1 = 0, g2 = 0;
	if ((rc = read_u64_attr(dir, "generation", &g1, &errn)) != 0)
		return fail(err, rc, "configfs-tsm: cannot read generation");
	if ((rc = read_attr(dir, "outblob", &out->data, &out->len, &errn)) != 0)
		return fail(err, rc, "configfs-tsm: reading outblob failed: %s (the %s firmware refused "
			    "to make a report)", rc == ERR_IO ? strerror(errn) : err_title(rc), ident_platform_name(p));
	if (p == IDENT_PLATFORM_SEV_SNP) {
		/* The certificate table is optional: a host that supplies none leaves it empty
		 * (or the attribute absent), and the VCEK must come from elsewhere. */
		if (read_attr(dir, "auxblob", &aux, &alen, &errn) == 0 && alen > 0) {
			rc = attestc_snp_cert_table(aux, alen, out);
			free(aux);
			if (rc != 0)
				return fail(err, rc, "configfs-tsm: the SNP certificate table (auxblob) is malformed");
		} else {
			free(aux);
		}
	}
	if ((rc = read_u64_attr(dir, "generation", &g2, &errn)) != 0)
		return fail(err, rc, "configfs-tsm: cannot read generation");
	if (g1 != g2)
		return fail(err, ERR_CONFLICT, "configfs-tsm: another writer changed the request while we read it");
	if (out->len == 0)
		return fail(err, ERR_PARSE, "configfs-tsm: outblob is empty");
	return 0;
}

static int collect_tsm(enum ident_platform p, const uint8_t rd[64], const struct attestc_collect_opts *o,
		       struct attestc_evidence *out, struct attestc_error *err)
{
	const char *root = o && o->tsm_dir ? o->tsm_dir : ATTESTC_TSM_DIR_DEFAULT;
	const char *given = o ? o->tsm_report_dir : NULL;
	struct stat st;
	char dir[4200];
	if (given) {
		if (stat(given, &st) != 0 || !S_ISDIR(st.st_mode))
			return fail(err, ERR_UNAVAILABLE, "no %s evidence here: the report directory %s does not exist",
				    ident_platform_name(p), given);
		snprintf(dir, sizeof dir, "%s", given);
	} else {
		if (stat(root, &st) != 0 || !S_ISDIR(st.st_mode))
			return fail(err, ERR_UNAVAILABLE,
				    "no %s evidence here: %s does not exist (configfs-tsm needs a %s guest, Linux "
				    "6.7 or later, and configfs mounted on /sys/kernel/config)",
				    ident_platform_name(p), root, p == IDENT_PLATFORM_SEV_SNP ? "SEV-SNP" : "TDX");
		uint8_t rnd[8];
		char hex[17];
		randombytes_buf(rnd, sizeof rnd);
		sodium_bin2hex(hex, sizeof hex, rnd, sizeof rnd);
		snprintf(dir, sizeof dir, "%s/mimir-%ld-%s", root, (long)getpid(), hex);
		if (mkdir(dir, 0700) != 0) {
			bool denied = errno == EACCES || errno == EPERM;
			return fail(err, denied ? ERR_UNAVAILABLE : ERR_IO, "configfs-tsm: cannot create a report in %s: %s%s",
				    root, strerror(errno),
				    denied ? " (run as root, or have root create a report directory for this user "
					     "and pass it as the report directory)" : "");
		}
	}
	int rc = ERR_CONFLICT;
	for (int i = 0; i < TSM_RETRIES && rc == ERR_CONFLICT; i++) {
		attestc_evidence_free(out);
		out->platform = p;
		rc = tsm_once(dir, p, rd, o, out, err);
	}
	if (!given)
		rmdir(dir);
	if (rc != 0)
		attestc_evidence_free(out);
	return rc;
}

/* ---- Nitro ---- */

/* A CBOR head (RFC 8949 section 3) in its shortest form. */
static bool cb_put(uint8_t *buf, size_t cap, size_t *o, unsigned major, uint64_t v)
{
	uint8_t h[9];
	size_t n;
	if (v < 24) {
		h[0] = (uint8_t)(major << 5 | v);
		n = 1;
	} else if (v <= 0xff) {
		h[0] = (uint8_t)(major << 5 | 24), h[1] = (uint8_t)v;
		n = 2;
	} else if (v <= 0xffff) {
		h[0] = (uint8_t)(major << 5 | 25), h[1] = (uint8_t)(v >> 8), h[2] = (uint8_t)v;
		n = 3;
	} else {
		h[0] = (uint8_t)(major << 5 | 26);
		for (int i = 0; i < 4; i++)
			h[1 + i] = (uint8_t)(v >> (24 - 8 * i));
		n = 5;
	}
	if (cap - *o < n)
		return false;
	memcpy(buf + *o, h, n);
	*o += n;
	return true;
}

static bool cb_bytes(uint8_t *buf, size_t cap, size_t *o, unsigned major, const void *p, size_t n)
{
	if (!cb_put(buf, cap, o, major, n) || cap - *o < n)
		return false;
	memcpy(buf + *o, p, n);
	*o += n;
	return true;
}

static bool cb_text(uint8_t *buf, size_t cap, size_t *o, const char *s)
{
	return cb_bytes(buf, cap, o, 3, s, strlen(s));
}

static bool cb_null(uint8_t *buf, size_t cap, size_t *o)
{
	if (cap - *o < 1)
		return false;
	buf[(*o)++] = 0xf6; /* simple value 22, null */
	return true;
}

int attestc_nsm_request(const uint8_t *user_data, size_t ud_len, const uint8_t *nonce, size_t nonce_len,
			uint8_t *buf, size_t cap, size_t *len)
{
	if (!user_data || ud_len > 1024 || nonce_len > 1024 || (nonce_len && !nonce) || !buf || !len)
		return ERR_INVALID;
	size_t o = 0;
	bool ok = cb_put(buf, cap, &o, 5, 1) && cb_text(buf, cap, &o, "Attestation") &&
		  cb_put(buf, cap, &o, 5, 3) && cb_text(buf, cap, &o, "user_data") &&
		  cb_bytes(buf, cap, &o, 2, user_data, ud_len) && cb_text(buf, cap, &o, "nonce");
	if (ok)
		ok = nonce ? cb_bytes(buf, cap, &o, 2, nonce, nonce_len) : cb_null(buf, cap, &o);
	ok = ok && cb_text(buf, cap, &o, "public_key") && cb_null(buf, cap, &o);
	if (!ok)
		return ERR_TOO_LARGE;
	*len = o;
	return 0;
}

/* Reads one head; definite lengths only. */
static bool cb_get(const uint8_t *p, size_t len, size_t *o, unsigned *major, uint64_t *v)
{
	if (*o >= len)
		return false;
	uint8_t ib = p[(*o)++];
	*major = ib >> 5;
	unsigned ai = ib & 31;
	size_t n = ai < 24 ? 0 : ai == 24 ? 1 : ai == 25 ? 2 : ai == 26 ? 4 : ai == 27 ? 8 : 99;
	if (n == 99 || len - *o < n)
		return false;
	uint64_t x = ai < 24 ? ai : 0;
	for (size_t i = 0; i < n; i++)
		x = x << 8 | p[(*o)++];
	*v = x;
	return true;
}

/* The next item must be a text string equal to s. */
static bool cb_key(const uint8_t *p, size_t len, size_t *o, const char *s)
{
	unsigned m;
	uint64_t n;
	size_t sl = strlen(s);
	if (!cb_get(p, len, o, &m, &n) || m != 3 || n != sl || len - *o < sl || memcmp(p + *o, s, sl) != 0)
		return false;
	*o += sl;
	return true;
}

int attestc_nsm_response(const uint8_t *resp, size_t len, const uint8_t **doc, size_t *doc_len,
			 struct attestc_error *err)
{
	size_t o = 0, save;
	unsigned m;
	uint64_t n;
	if (!resp || !doc || !doc_len)
		return ERR_INVALID;
	if (!cb_get(resp, len, &o, &m, &n) || m != 5 || n != 1)
		return fail(err, ERR_PARSE, "NSM response: not a map of one entry");
	save = o;
	if (cb_key(resp, len, &o, "Error")) {
		if (!cb_get(resp, len, &o, &m, &n) || m != 3 || n > 128 || len - o < n)
			return fail(err, ERR_PARSE, "NSM response: malformed error");
		return fail(err, ERR_UNAVAILABLE, "the Nitro Secure Module refused the request: %.*s", (int)n,
			    (const char *)resp + o);
	}
	o = save;
	if (!cb_key(resp, len, &o, "Attestation") || !cb_get(resp, len, &o, &m, &n) || m != 5 || n != 1 ||
	    !cb_key(resp, len, &o, "document") || !cb_get(resp, len, &o, &m, &n) || m != 2 || n == 0 ||
	    n != len - o)
		return fail(err, ERR_PARSE, "NSM response: not {\"Attestation\": {\"document\": bytes}}");
	*doc = resp + o;
	*doc_len = (size_t)n;
	return 0;
}

static int collect_nitro(const uint8_t rd[64], const struct attestc_collect_opts *o, struct attestc_evidence *out,
			 struct attestc_error *err)
{
	const char *path = o && o->nsm_path ? o->nsm_path : ATTESTC_NSM_PATH_DEFAULT;
	uint8_t req[NSM_REQUEST_MAX];
	size_t rlen;
	int rc = attestc_nsm_request(rd, 64, o ? o->nitro_nonce : NULL, o ? o->nitro_nonce_len : 0, req,
				     sizeof req, &rlen);
	if (rc != 0)
		return fail(err, rc, "NSM request: the nonce is longer than 1024 bytes");
	int fd = open(path, O_RDWR | O_CLOEXEC);
	if (fd < 0)
		return fail(err, errno == ENOENT ? ERR_UNAVAILABLE : ERR_IO,
			    "no Nitro evidence here: cannot open %s: %s%s", path, strerror(errno),
			    errno == ENOENT ? " (not inside a Nitro Enclave, or the nsm driver is not loaded)" : "");
	uint8_t *resp = malloc(NSM_RESPONSE_MAX);
	if (!resp) {
		close(fd);
		return fail(err, ERR_NOMEM, "out of memory");
	}
	struct attestc_nsm_raw raw = {
		.request = {.addr = (uint64_t)(uintptr_t)req, .len = rlen},
		.response = {.addr = (uint64_t)(uintptr_t)resp, .len = NSM_RESPONSE_MAX},
	};
	int r;
	do
		r = ioctl(fd, ATTESTC_NSM_IOCTL_RAW, &raw);
	while (r < 0 && errno == EINTR);
	int errn = errno;
	close(fd);
	const uint8_t *doc = NULL;
	size_t dlen = 0;
	if (r < 0)
		rc = fail(err, ERR_IO, "NSM ioctl on %s failed: %s", path, strerror(errn));
	else if (raw.response.len > NSM_RESPONSE_MAX)
		rc = fail(err, ERR_PARSE, "NSM response longer than its buffer");
	else
		rc = attestc_nsm_response(resp, (size_t)raw.response.len, &doc, &dlen, err);
	if (rc == 0 && !(out->data = malloc(dlen)))
		rc = fail(err, ERR_NOMEM, "out of memory");
	if (rc == 0) {
		memcpy(out->data, doc, dlen);
		out->len = dlen;
	}
	free(resp);
	return rc;
}

/* ---- simulated ---- */

static int collect_simulated(const uint8_t rd[64], const struct attestc_collect_opts *o,
			     struct attestc_evidence *out, struct attestc_error *err)
{
	if (!o || !o->sim_measurement || o->sim_measurement_len == 0 ||
	    o->sim_measurement_len > ATTEST_MEASUREMENT_MAX)
		return fail(err, ERR_INVALID, "simulated evidence needs a measurement of 1 to 48 bytes");
	char buf[512];
	int rc = attest_simulated_make(o->sim_measurement, o->sim_measurement_len, rd, buf, sizeof buf);
	if (rc != 0)
		return fail(err, rc, "cannot make simulated evidence");
	size_t n = strlen(buf);
	if (!(out->data = malloc(n)))
		return fail(err, ERR_NOMEM, "out of memory");
	memcpy(out->data, buf, n);
	out->len = n;
	return 0;
}

int attestc_collect(enum ident_platform p, const uint8_t report_data[ATTEST_REPORT_DATA_LEN],
		    const struct attestc_collect_opts *o, struct attestc_evidence *out,
		    struct attestc_error *err)
{
	if (!out || !report_data)
		return fail(err, ERR_INVALID, "no output or report data");
	memset(out, 0, sizeof *out);
	out->platform = p;
	if (err)
		memset(err, 0, sizeof *err);
	int rc;
	switch (p) {
	case IDENT_PLATFORM_SEV_SNP:
	case IDENT_PLATFORM_TDX:
		rc = collect_tsm(p, report_data, o, out, err);
		break;
	case IDENT_PLATFORM_NITRO:
		rc = collect_nitro(report_data, o, out, err);
		break;
	case IDENT_PLATFORM_SIMULATED:
		rc = collect_simulated(report_data, o, out, err);
		break;
	default:
		rc = fail(err, ERR_INVALID, "no evidence for platform %s", ident_platform_name(p));
	}
	if (rc != 0) {
		attestc_evidence_free(out);
		out->platform = p;
	}
	return rc;
}
