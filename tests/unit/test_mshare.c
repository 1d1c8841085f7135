/* mshare: splitting the real stories260K into N = 2, 3 and 5 share files and combining
 * them gives back exactly the fixed-point encoding of every weight (so the float weights
 * within 2^-(f+1)); the files follow the documented layout byte for byte (decoded here
 * with libsodium alone); any N-1 shares look uniform (mean and chi-square tests whose
 * chance of a false failure is below 1e-6, and which the plaintext fails); and every
 * way a file can be wrong is refused with its message: a wrong key, a flipped bit
 * anywhere, a truncation, a changed header, reordered chunks, files of two splits, a
 * saturating weight, an existing output. Keys: RFC 7748 vectors and the text format. */
#include <fcntl.h>
#include <math.h>
#include <sodium.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>
#include <dirent.h>

#include "err/err.h"
#include "model/model.h"
#include "mpc/mpc.h"
#include "mshare/mshare.h"
#include "testutil.h"

/* ---- helpers ---- */

static struct model *load_model_file(const char *rel, bool shared)
{
	char path[1024], err[256];
	struct model *m = NULL;
	if (shared)
		tu_shared(path, sizeof path, rel);
	else
		snprintf(path, sizeof path, "%s", rel);
	int rc = model_load(path, &m, err, sizeof err);
	ck_assert_msg(rc == 0, "%s", err);
	return m;
}

static struct model *load_real(void) { return load_model_file("models/stories260K.bin", true); }

struct split {
	char dir[512];
	unsigned n, f;
	uint8_t pk[MSHARE_MAX_PARTIES][MSHARE_PK_BYTES];
	uint8_t sk[MSHARE_MAX_PARTIES][MSHARE_SK_BYTES];
	char path[MSHARE_MAX_PARTIES][700];
	struct mshare_split_result res;
};

/* Fresh keys and a temporary directory; then mshare_split. Returns its code, err filled. */
static int do_split(struct split *s, const struct model *m, unsigned n, unsigned f,
		    uint32_t chunk, char *err, size_t errcap)
{
	memset(s, 0, sizeof *s);
	tu_tmpdir(s->dir, sizeof s->dir);
	ck_assert(s->dir[0]);
	s->n = n, s->f = f;
	const char *pv[MSHARE_MAX_PARTIES];
	char dir[sizeof s->dir];
	memcpy(dir, s->dir, sizeof dir);
	for (unsigned i = 0; i < n && i < MSHARE_MAX_PARTIES; i++) {
		ck_assert_int_eq(mshare_keypair(s->pk[i], s->sk[i]), 0);
		snprintf(s->path[i], sizeof s->path[i], "%s/m.party%u.mshare", dir, i);
		pv[i] = s->path[i];
	}
	struct mshare_split_opts o = {.nparties = n,
				      .frac_bits = f,
				      .chunk_bytes = chunk,
				      .recipients = (const uint8_t(*)[MSHARE_PK_BYTES])s->pk,
				      .paths = pv};
	return mshare_split(m, &o, &s->res, err, errcap);
}

static void split_ok(struct split *s, const struct model *m, unsigned n, unsigned f,
		     uint32_t chunk)
{
	char err[512] = "";
	int rc = do_split(s, m, n, f, chunk, err, sizeof err);
	ck_assert_msg(rc == 0, "split failed: %s", err);
}

static size_t dir_entries(const char *dir)
{
	DIR *d = opendir(dir);
	ck_assert_ptr_nonnull(d);
	size_t n = 0;
	struct dirent *e;
	while ((e = readdir(d)) != NULL)
		if (strcmp(e->d_name, ".") && strcmp(e->d_name, ".."))
			n++;
	closedir(d);
	return n;
}

/* Opens a memory image and reads every share. Returns 0 only if all of it verified. */
static int read_all_mem(const uint8_t *buf, size_t len, const uint8_t *sk, char *err,
			size_t errcap)
{
	struct mshare_reader *r = NULL;
	int rc = mshare_open_mem(buf, len, "img", sk, &r, err, errcap);
	if (rc) {
		ck_assert_ptr_null(r);
		return rc;
	}
	const struct mshare_info *in = mshare_reader_info(r);
	enum { B = 4096 };
	static ring64_t tmp[B];
	for (uint64_t left = in->total; left > 0 && rc == 0;) {
		size_t n = left < B ? (size_t)left : B;
		rc = mshare_read(r, tmp, n, err, errcap);
		left -= n;
	}
	if (rc == 0 && !mshare_reader_done(r))
		rc = ERR_INTERNAL;
	if (rc)
		ck_assert(!mshare_reader_done(r));
	mshare_reader_free(r);
	return rc;
}

static uint8_t *read_whole(const char *path, size_t *len)
{
	uint8_t *b = (uint8_t *)tu_read_file(path, len);
	ck_assert_ptr_nonnull(b);
	return b;
}

static void fix_checksum(uint8_t *img)
{
	uint32_t hb = (uint32_t)img[12] | (uint32_t)img[13] << 8 | (uint32_t)img[14] << 16 |
		      (uint32_t)img[15] << 24;
	crypto_generichash(img + hb - 32, 32, img, hb - 32, NULL, 0);
}

static void put32(uint8_t *p, uint32_t v)
{
	for (int i = 0; i < 4; i++)
		p[i] = (uint8_t)(v >> (8 * i));
}

static uint64_t get64(const uint8_t *p)
{
	uint64_t v = 0;
	for (int i = 7; i >= 0; i--)
		v = v << 8 | p[i];
	return v;
}

#define ASSERT_MSG_HAS(err, text)                                                          \
	ck_assert_msg(strstr((err), (text)) != NULL, "message '%s' lacks '%s'", (err), (text))

/* ---- round trip ---- */

static const struct {
	unsigned n, f;
} rt_cases[] = {{2, 16}, {3, 16}, {5, 16}, {2, 8}, {3, 24}};

/* The N files of a split, loaded with their keys, sum to the fixed-point encoding of
 * every weight exactly, which is within 2^-(f+1) of the float; the streaming reader sees
 * the same shares tensor by tensor; digests agree with the files. */
START_TEST(test_round_trip)
{
	unsigned n = rt_cases[_i].n, f = rt_cases[_i].f;
	struct model *m = load_real();
	struct split s;
	split_ok(&s, m, n, f, 0);
	char err[512];
	struct mshare_shares *sh[MSHARE_MAX_PARTIES] = {0};
	for (unsigned p = 0; p < n; p++) {
		ck_assert_msg(mshare_load(s.path[p], s.sk[p], &sh[p], err, sizeof err) == 0, "%s",
			      err);
		const struct mshare_info *in = mshare_shares_info(sh[p]);
		ck_assert_uint_eq(in->party, p);
		ck_assert_uint_eq(in->nparties, n);
		ck_assert_uint_eq(in->frac_bits, f);
		ck_assert_uint_eq(in->total, model_param_count(model_config(m)));
		ck_assert_mem_eq(in->model_id, s.res.model_id, MSHARE_ID_BYTES);
		ck_assert_mem_eq(in->recipient, s.pk[p], MSHARE_PK_BYTES);
		struct stat st;
		ck_assert_int_eq(stat(s.path[p], &st), 0);
		ck_assert_uint_eq((uint64_t)st.st_size, s.res.file_bytes);
		ck_assert_uint_eq(st.st_mode & 0777, 0600);
	}
	double bound = ldexp(1.0, -(int)(f + 1)), maxerr = 0;
	crypto_generichash_state wh;
	crypto_generichash_init(&wh, NULL, 0, 32);
	for (int id = 0; id < MODEL_T_COUNT; id++) {
		struct model_tensor t;
		ck_assert_int_eq(model_tensor(m, (enum model_tensor_id)id, &t), 0);
		const ring64_t *v[MSHARE_MAX_PARTIES];
		size_t cnt = 0;
		for (unsigned p = 0; p < n; p++) {
			ck_assert_int_eq(mshare_shares_tensor(sh[p], (enum model_tensor_id)id, &v[p],
							      &cnt),
					 0);
			ck_assert_uint_eq(cnt, t.count);
		}
		for (size_t i = 0; i < t.count; i++) {
			ring64_t sum = 0, x;
			for (unsigned p = 0; p < n; p++)
				sum += v[p][i];
			bool sat = true;
			ck_assert_int_eq(ring_fxp_encode((double)t.data[i], f, &x, &sat), 0);
			ck_assert(!sat);
			if (sum != x)
				ck_abort_msg("%s[%zu]: combined %016llx, encoding %016llx", t.name, i,
					     (unsigned long long)sum, (unsigned long long)x);
			double e = fabs(ring_fxp_decode(sum, f) - (double)t.data[i]);
			if (e > maxerr)
				maxerr = e;
			if (!t.alias) {
				uint8_t le[8];
				ring64_store(le, x);
				crypto_generichash_update(&wh, le, 8);
			}
		}
	}
	ck_assert_msg(maxerr <= bound, "max error %g > %g", maxerr, bound);
	ck_assert(maxerr > 0); /* the rounding is real: the test compares two things */
	uint8_t wd[32];
	crypto_generichash_final(&wh, wd, sizeof wd);
	ck_assert_mem_eq(wd, s.res.weights_digest, 32);

	/* The streaming reader gives the same shares, in table order, and the file's digest. */
	for (unsigned p = 0; p < n; p++) {
		struct mshare_reader *r = NULL;
		ck_assert_int_eq(mshare_open(s.path[p], s.sk[p], &r, err, sizeof err), 0);
		const struct mshare_info *in = mshare_reader_info(r);
		for (size_t k = 0; k < in->ntensors; k++) {
			const struct mshare_tensor *t = &in->tensors[k];
			ring64_t *buf = malloc(t->count * sizeof *buf);
			ck_assert_ptr_nonnull(buf);
			ck_assert(!mshare_reader_done(r));
			ck_assert_msg(mshare_read_tensor(r, k, buf, t->count, err, sizeof err) == 0,
				      "%s", err);
			const ring64_t *v;
			size_t cnt;
			ck_assert_int_eq(mshare_shares_tensor(sh[p], t->id, &v, &cnt), 0);
			ck_assert_mem_eq(buf, v, cnt * sizeof *v);
			free(buf);
		}
		ck_assert(mshare_reader_done(r));
		uint8_t d[32], d2[32];
		ck_assert_int_eq(mshare_reader_digest(r, d), 0);
		ck_assert_mem_eq(d, s.res.file_digest[p], 32);
		size_t len;
		uint8_t *img = read_whole(s.path[p], &len);
		crypto_generichash(d2, sizeof d2, img, len, NULL, 0);
		ck_assert_mem_eq(d, d2, 32);
		free(img);
		mshare_reader_free(r);
	}
	for (unsigned p = 0; p < n; p++)
		mshare_shares_free(sh[p]);
	tu_rmrf(s.dir);
	model_free(m);
}
END_TEST

/* The layout of docs/SHARES.md, decoded with libsodium and the documented offsets alone:
 * the checkpoint's own 28 header bytes at offset 80, the table, the sealed key, the
 * stream, and the first share of each party summing to the first weight. */
START_TEST(test_layout_matches_spec)
{
	struct model *m = load_real();
	struct split s;
	split_ok(&s, m, 2, 16, 0);
	char ckpt[1024];
	size_t cl, len[2];
	uint8_t *raw = read_whole(tu_shared(ckpt, sizeof ckpt, "models/stories260K.bin"), &cl);
	ring64_t first[2];
	for (unsigned p = 0; p < 2; p++) {
		uint8_t *img = read_whole(s.path[p], &len[p]);
		ck_assert_mem_eq(img, "MIMIRSHR", 8);
		ck_assert_uint_eq(img[8] | img[9] << 8, 1);   /* version */
		ck_assert_uint_eq(img[10] | img[11] << 8, 1); /* additive scheme */
		uint32_t hb = img[12] | img[13] << 8 | img[14] << 16 | (uint32_t)img[15] << 24;
		ck_assert_uint_eq(hb, 120 + 11 * 64 + 32);
		ck_assert_mem_eq(img + 16, s.res.model_id, 16);
		ck_assert_uint_eq(img[32], p);
		ck_assert_uint_eq(img[36], 2);
		ck_assert_uint_eq(img[40], 16);
		ck_assert_uint_eq(get64(img + 44) & 0xffffffffu, 1u << 20);
		ck_assert_mem_eq(img + 48, s.pk[p], 32);
		ck_assert_mem_eq(img + 80, raw, 28); /* the checkpoint header, verbatim */
		ck_assert_uint_eq(img[108], 11);
		ck_assert_uint_eq(get64(img + 112), 260032);
		ck_assert_str_eq((const char *)img + 120, "token_embedding_table");
		ck_assert_str_eq((const char *)img + 120 + 2 * 64, "wq");
		ck_assert_uint_eq(get64(img + 120 + 2 * 64 + 48), 512 * 64 + 5 * 64); /* offset */
		ck_assert_uint_eq(get64(img + 120 + 2 * 64 + 56), 5 * 64 * 64);       /* count */
		uint8_t sum[32];
		crypto_generichash(sum, 32, img, hb - 32, NULL, 0);
		ck_assert_mem_eq(sum, img + hb - 32, 32);

		uint8_t key[32];
		ck_assert_int_eq(crypto_box_seal_open(key, img + hb, 80, s.pk[p], s.sk[p]), 0);
		crypto_secretstream_xchacha20poly1305_state st;
		ck_assert_int_eq(crypto_secretstream_xchacha20poly1305_init_pull(&st, img + hb + 80,
										 key),
				 0);
		size_t pre = hb + 80 + 24, clen = (1u << 20) + 17;
		uint8_t *plain = malloc(1u << 20);
		unsigned long long ml;
		unsigned char tag;
		ck_assert_int_eq(crypto_secretstream_xchacha20poly1305_pull(
					 &st, plain, &ml, &tag, img + pre, clen, img, pre),
				 0);
		ck_assert_uint_eq(ml, 1u << 20);
		ck_assert_uint_eq(tag, crypto_secretstream_xchacha20poly1305_TAG_MESSAGE);
		first[p] = get64(plain);
		/* The second and last chunk holds the rest, tagged FINAL, and ends the file. */
		size_t rest = 260032 * 8 - (1u << 20);
		ck_assert_uint_eq(len[p], pre + clen + rest + 17);
		ck_assert_int_eq(crypto_secretstream_xchacha20poly1305_pull(
					 &st, plain, &ml, &tag, img + pre + clen, rest + 17, NULL, 0),
				 0);
		ck_assert_uint_eq(tag, crypto_secretstream_xchacha20poly1305_TAG_FINAL);
		free(plain);
		free(img);
	}
	float w0;
	memcpy(&w0, raw + 28, 4);
	ring64_t x;
	ck_assert_int_eq(ring_fxp_encode(w0, 16, &x, NULL), 0);
	ck_assert_uint_eq(first[0] + first[1], x);
	free(raw);
	tu_rmrf(s.dir);
	model_free(m);
}
END_TEST

/* The table the format derives from a config is the model's own (names, shapes, order),
 * for a shared classifier (stories260K, 11 tensors) and a separate one (12). */
START_TEST(test_table_matches_model)
{
	struct model *ms[2] = {load_real(),
			       load_model_file("fuzz/corpus/fuzz_model/tiny_unshared_norope.bin",
					       false)};
	for (int k = 0; k < 2; k++) {
		const struct model_config *c = model_config(ms[k]);
		struct mshare_tensor t[MSHARE_MAX_TENSORS];
		size_t n;
		mshare_table(c, t, &n);
		ck_assert_uint_eq(n, c->shared_classifier ? 11 : 12);
		ck_assert_uint_eq(c->shared_classifier, k == 0);
		size_t j = 0;
		uint64_t off = 0;
		for (int id = 0; id < MODEL_T_COUNT; id++) {
			struct model_tensor mt;
			ck_assert_int_eq(model_tensor(ms[k], (enum model_tensor_id)id, &mt), 0);
			if (mt.alias)
				continue;
			ck_assert_str_eq(t[j].name, mt.name);
			ck_assert_int_eq(t[j].id, id);
			ck_assert_int_eq(t[j].layers, mt.layers);
			ck_assert_int_eq(t[j].rows, mt.rows);
			ck_assert_int_eq(t[j].cols, mt.cols);
			ck_assert_uint_eq(t[j].count, mt.count);
			ck_assert_uint_eq(t[j].offset, off);
			off += mt.count;
			j++;
		}
		ck_assert_uint_eq(j, n);
		ck_assert_uint_eq(off, model_param_count(c));
	}
	/* The separate classifier survives a round trip and is not the embedding. */
	struct split s;
	split_ok(&s, ms[1], 2, 16, 64);
	char err[512];
	struct mshare_shares *a = NULL, *b = NULL;
	ck_assert_msg(mshare_load(s.path[0], s.sk[0], &a, err, sizeof err) == 0, "%s", err);
	ck_assert_msg(mshare_load(s.path[1], s.sk[1], &b, err, sizeof err) == 0, "%s", err);
	const ring64_t *ea, *ca, *cb;
	size_t ne, nc;
	ck_assert_int_eq(mshare_shares_tensor(a, MODEL_T_TOKEN_EMBEDDING, &ea, &ne), 0);
	ck_assert_int_eq(mshare_shares_tensor(a, MODEL_T_WCLS, &ca, &nc), 0);
	ck_assert_int_eq(mshare_shares_tensor(b, MODEL_T_WCLS, &cb, &nc), 0);
	ck_assert_ptr_ne(ea, ca);
	struct model_tensor wc;
	model_tensor(ms[1], MODEL_T_WCLS, &wc);
	for (size_t i = 0; i < nc; i++) {
		ring64_t x;
		ring_fxp_encode(wc.data[i], 16, &x, NULL);
		ck_assert_uint_eq(ca[i] + cb[i], x);
	}
	ck_assert_int_eq(mshare_shares_tensor(a, (enum model_tensor_id)MODEL_T_COUNT, &ca, &nc),
			 ERR_RANGE);
	mshare_shares_free(a);
	mshare_shares_free(b);
	tu_rmrf(s.dir);
	/* and a shared classifier's WCLS is the embedding's shares */
	split_ok(&s, ms[0], 2, 16, 0);
	ck_assert_int_eq(mshare_load(s.path[0], s.sk[0], &a, err, sizeof err), 0);
	ck_assert_int_eq(mshare_shares_tensor(a, MODEL_T_TOKEN_EMBEDDING, &ea, &ne), 0);
	ck_assert_int_eq(mshare_shares_tensor(a, MODEL_T_WCLS, &ca, &nc), 0);
	ck_assert_ptr_eq(ea, ca);
	mshare_shares_free(a);
	tu_rmrf(s.dir);
	model_free(ms[0]);
	model_free(ms[1]);
}
END_TEST

/* ---- any N-1 shares are uniform ---- */

/* For n values u_i = v_i / 2^64 of independent uniform shares, Hoeffding bounds
 * P(|mean - 1/2| >= t) <= 2 exp(-2 n t^2); t is chosen so that this is 1e-8. The
 * chi-square statistic of the top byte over 256 cells (255 degrees of freedom, 215
 * expected per cell for w1's 55040 values) exceeds 480 with asymptotic probability
 * 5.8e-16 (regularized upper gamma Q(127.5, 240)); that leaves eight orders of magnitude
 * for the error of the asymptotic law, so each check fails by chance with probability
 * below 1e-8. The suite runs 22 checks: below 1e-6 altogether. */
#define CHI2_LIMIT 480.0

struct unif {
	double mean, chi2;
};

static struct unif uniformity(const ring64_t *v, size_t n)
{
	double cnt[256] = {0}, sum = 0;
	for (size_t i = 0; i < n; i++) {
		cnt[v[i] >> 56] += 1;
		sum += ldexp((double)v[i], -64);
	}
	double e = (double)n / 256, chi = 0;
	for (int b = 0; b < 256; b++)
		chi += (cnt[b] - e) * (cnt[b] - e) / e;
	return (struct unif){sum / (double)n, chi};
}

static void assert_uniform(const ring64_t *v, size_t n, const char *what)
{
	struct unif u = uniformity(v, n);
	double t = sqrt(log(2 / 1e-8) / (2.0 * (double)n));
	ck_assert_msg(fabs(u.mean - 0.5) < t, "%s: mean %f, off 1/2 by more than %f", what, u.mean,
		      t);
	ck_assert_msg(u.chi2 < CHI2_LIMIT, "%s: chi-square of the top byte %f >= %f", what,
		      u.chi2, CHI2_LIMIT);
}

START_TEST(test_n_minus_1_shares_uniform)
{
	struct model *m = load_real();
	struct model_tensor w1;
	model_tensor(m, MODEL_T_W1, &w1);
	size_t n = w1.count;
	ring64_t *x = malloc(n * sizeof *x);
	for (size_t i = 0; i < n; i++)
		ring_fxp_encode(w1.data[i], 16, &x[i], NULL);
	/* The checks can fail: the plaintext encoding is far from uniform. */
	ck_assert(uniformity(x, n).chi2 > 100 * CHI2_LIMIT);

	for (unsigned N = 2; N <= 3; N++) {
		struct split s;
		split_ok(&s, m, N, 16, 0);
		const ring64_t *v[3];
		struct mshare_shares *sh[3];
		char err[512];
		for (unsigned p = 0; p < N; p++) {
			ck_assert_msg(mshare_load(s.path[p], s.sk[p], &sh[p], err, sizeof err) == 0,
				      "%s", err);
			size_t cnt;
			ck_assert_int_eq(mshare_shares_tensor(sh[p], MODEL_T_W1, &v[p], &cnt), 0);
		}
		ring64_t *acc = malloc(n * sizeof *acc);
		for (unsigned missing = 0; missing < N; missing++) {
			/* The coalition of everyone but `missing`: each member's shares, and
			 * their sum, which is the weights minus the missing share. */
			memset(acc, 0, n * sizeof *acc);
			for (unsigned p = 0; p < N; p++) {
				if (p == missing)
					continue;
				char what[64];
				snprintf(what, sizeof what, "N=%u party %u", N, p);
				if (N > 2)
					assert_uniform(v[p], n, what);
				for (size_t i = 0; i < n; i++)
					acc[i] += v[p][i];
			}
			char what[64];
			snprintf(what, sizeof what, "N=%u all but party %u, summed", N, missing);
			assert_uniform(acc, n, what);
		}
		/* the last coalition left out party N-1: adding its share gives the weights */
		for (size_t i = 0; i < n; i++)
			ck_assert_uint_eq(acc[i] + v[N - 1][i], x[i]);
		free(acc);
		for (unsigned p = 0; p < N; p++)
			mshare_shares_free(sh[p]);
		tu_rmrf(s.dir);
	}
	free(x);
	model_free(m);
}
END_TEST

/* ---- refusals ---- */

START_TEST(test_wrong_key)
{
	struct model *m = load_real();
	struct split s;
	split_ok(&s, m, 3, 16, 0);
	char err[512] = "";
	struct mshare_reader *r = NULL;
	/* another party's key */
	ck_assert_int_eq(mshare_open(s.path[0], s.sk[1], &r, err, sizeof err), ERR_FORBIDDEN);
	ck_assert_ptr_null(r);
	ASSERT_MSG_HAS(err, "another party's");
	ASSERT_MSG_HAS(err, s.path[0]);
	/* a stranger's key, written into the header with a fixed checksum: the recipient
	 * check passes, the sealed file key does not open */
	uint8_t pk[32], sk[32];
	mshare_keypair(pk, sk);
	size_t len;
	uint8_t *img = read_whole(s.path[0], &len);
	memcpy(img + 48, pk, 32);
	fix_checksum(img);
	ck_assert_int_eq(read_all_mem(img, len, sk, err, sizeof err), ERR_CRYPTO);
	ASSERT_MSG_HAS(err, "does not unseal");
	/* and the party's own key no longer matches the header */
	ck_assert_int_eq(read_all_mem(img, len, s.sk[0], err, sizeof err), ERR_FORBIDDEN);
	free(img);
	tu_rmrf(s.dir);
	model_free(m);
}
END_TEST

/* One flipped bit anywhere is refused: every byte of the clear header, sealed key and
 * stream header, the first and last bytes of many chunks, the final chunk's tag and MAC
 * and a few hundred random payload positions. Small chunks give many chunk boundaries. */
START_TEST(test_bit_flips_refused)
{
	struct model *m = load_real();
	struct split s;
	split_ok(&s, m, 2, 16, 4096);
	size_t len;
	uint8_t *img = read_whole(s.path[1], &len);
	char err[512];
	ck_assert_msg(read_all_mem(img, len, s.sk[1], err, sizeof err) == 0, "%s", err);
	size_t pre = 120 + 11 * 64 + 32 + 80 + 24, clen = 4096 + 17;
	size_t nchunks = (len - pre + clen - 1) / clen;
	ck_assert_uint_eq(nchunks, (260032 * 8 + 4095) / 4096);

	size_t *pos = malloc((pre + 4 * nchunks + 17 + 400) * sizeof *pos), np = 0;
	for (size_t i = 0; i < pre; i++)
		pos[np++] = i;
	for (size_t k = 0; k < nchunks; k += 7) {
		size_t at = pre + k * clen;
		pos[np++] = at;                                  /* the encrypted tag byte */
		pos[np++] = at + 1;                              /* the first share */
		pos[np++] = at + clen - 1 < len ? at + clen - 1 : len - 1; /* the MAC */
	}
	for (size_t i = len - 17; i < len; i++)
		pos[np++] = i;
	for (int i = 0; i < 400; i++)
		pos[np++] = pre + randombytes_uniform((uint32_t)(len - pre));
	for (size_t i = 0; i < np; i++) {
		uint8_t bit = (uint8_t)(1u << (pos[i] * 5 % 8));
		img[pos[i]] ^= bit;
		err[0] = '\0';
		int rc = read_all_mem(img, len, s.sk[1], err, sizeof err);
		ck_assert_msg(rc != 0, "flip at byte %zu bit %u accepted", pos[i], bit);
		ck_assert_msg(strncmp(err, "img: ", 5) == 0, "flip at %zu: message '%s'", pos[i],
			      err);
		img[pos[i]] ^= bit;
	}
	ck_assert_int_eq(read_all_mem(img, len, s.sk[1], err, sizeof err), 0);
	free(pos);
	free(img);
	tu_rmrf(s.dir);
	model_free(m);
}
END_TEST

START_TEST(test_truncation_refused)
{
	struct model *m = load_real();
	struct split s;
	split_ok(&s, m, 2, 16, 4096);
	size_t len;
	uint8_t *img = read_whole(s.path[0], &len);
	size_t hb = 120 + 11 * 64 + 32, pre = hb + 80 + 24, clen = 4096 + 17;
	size_t cuts[] = {0,        1,         7,          8,           119,       120,
			 hb - 1,   hb,        hb + 79,    pre - 1,     pre,       pre + 1,
			 pre + clen, pre + 2 * clen, len - clen, len - 18, len - 17, len - 1};
	char err[512];
	for (size_t i = 0; i < sizeof cuts / sizeof cuts[0]; i++) {
		err[0] = '\0';
		int rc = read_all_mem(img, cuts[i], s.sk[0], err, sizeof err);
		ck_assert_msg(rc == ERR_PARSE, "cut at %zu: rc %d (%s)", cuts[i], rc, err);
		ck_assert_msg(strstr(err, "truncated") || strstr(err, "magic"),
			      "cut at %zu: '%s'", cuts[i], err);
	}
	/* one byte more is trailing data */
	uint8_t *longer = malloc(len + 1);
	memcpy(longer, img, len);
	longer[len] = 0;
	ck_assert_int_eq(read_all_mem(longer, len + 1, s.sk[0], err, sizeof err), ERR_PARSE);
	ASSERT_MSG_HAS(err, "trailing");
	free(longer);
	/* and a truncated file on disk, through the file API */
	ck_assert_int_eq(truncate(s.path[0], (off_t)(len - 100)), 0);
	struct mshare_reader *r = NULL;
	ck_assert_int_eq(mshare_open(s.path[0], s.sk[0], &r, err, sizeof err), ERR_PARSE);
	ASSERT_MSG_HAS(err, "truncated");
	struct mshare_info in;
	ck_assert_int_eq(mshare_inspect(s.path[0], &in, err, sizeof err), ERR_PARSE);
	free(img);
	tu_rmrf(s.dir);
	model_free(m);
}
END_TEST

/* A changed header: the checksum catches accidents; a forger who fixes the checksum is
 * caught by the first chunk's authentication (inspect, which has no key, cannot tell);
 * impossible values are refused by name before any decryption. */
START_TEST(test_header_changed_refused)
{
	struct model *m = load_real();
	struct split s;
	split_ok(&s, m, 3, 16, 0);
	size_t len;
	uint8_t *orig = read_whole(s.path[1], &len);
	uint8_t *img = malloc(len);
	char err[512];
	struct mshare_info in;
	size_t hb = 120 + 11 * 64 + 32;

	/* party index 1 -> 2 without and with a fixed checksum */
	memcpy(img, orig, len);
	img[32] = 2;
	ck_assert_int_eq(read_all_mem(img, len, s.sk[1], err, sizeof err), ERR_PARSE);
	ASSERT_MSG_HAS(err, "checksum");
	fix_checksum(img);
	ck_assert_int_eq(mshare_parse_header(img, len, len, "img", &in, err, sizeof err), 0);
	ck_assert_uint_eq(in.party, 2);
	ck_assert_int_eq(read_all_mem(img, len, s.sk[1], err, sizeof err), ERR_CRYPTO);
	ASSERT_MSG_HAS(err, "first chunk does not authenticate");

	/* fixed point 16 -> 8, model id bytes: the same */
	const struct {
		size_t off;
		uint8_t val;
	} forged[] = {{40, 0x18}, {16, 0x5a}, {17, 0xa5}};
	for (size_t i = 0; i < sizeof forged / sizeof forged[0]; i++) {
		memcpy(img, orig, len);
		img[forged[i].off] ^= forged[i].val;
		fix_checksum(img);
		ck_assert_int_eq(mshare_parse_header(img, len, len, "img", &in, err, sizeof err),
				 0);
		ck_assert_int_eq(read_all_mem(img, len, s.sk[1], err, sizeof err), ERR_CRYPTO);
	}

	/* impossible values, named */
	const struct {
		size_t off;
		uint32_t val;
		int rc;
		const char *msg;
	} bad[] = {
		{8, 2, ERR_UNSUPPORTED, "version 2"},
		{10, 7, ERR_UNSUPPORTED, "scheme 7"},
		{36, 17, ERR_RANGE, "17 parties"},
		{36, 1, ERR_RANGE, "1 parties"},
		{32, 3, ERR_RANGE, "party index 3"},
		{40, 30, ERR_RANGE, "30 fractional bits"},
		{44, 100, ERR_RANGE, "chunk size 100"},
		{108, 12, ERR_PARSE, "header length"},
		{108, 99, ERR_RANGE, "99 tensors"},
		{12, 900, ERR_PARSE, "header length 900"},
		{80, 65, ERR_RANGE, "n_heads=8 does not divide dim=65"},
		{80 + 4, 173, ERR_PARSE, "shape 5 x 172 x 64 in the table; the config implies 5 "
					 "x 173 x 64"},
		{80 + 20, (uint32_t)-512, ERR_PARSE, "config (separate classifier) implies 12"},
		{112, 260031, ERR_PARSE, "260031 shares"},
		{120 + 2 * 64, 'x', ERR_PARSE, "named 'xq'"},
		{120 + 3 * 64 + 36, 33, ERR_PARSE, "tensor wk has shape 5 x 33 x 64"},
		{120 + 3 * 64 + 44, 1, ERR_PARSE, "reserved"},
		{120 + 3 * 64 + 48, 0, ERR_PARSE, "tensor wk at offset 0"},
	};
	for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
		memcpy(img, orig, len);
		if (bad[i].off == 120 + 2 * 64)
			img[bad[i].off] = (uint8_t)bad[i].val;
		else if (bad[i].off == 8 || bad[i].off == 10)
			img[bad[i].off] = (uint8_t)bad[i].val;
		else
			put32(img + bad[i].off, bad[i].val);
		if (bad[i].off != 12)
			fix_checksum(img);
		err[0] = '\0';
		int rc = mshare_parse_header(img, len, len, "img", &in, err, sizeof err);
		ck_assert_msg(rc == bad[i].rc, "field at %zu: rc %d, '%s'", bad[i].off, rc, err);
		ASSERT_MSG_HAS(err, bad[i].msg);
		ck_assert_int_eq(read_all_mem(img, len, s.sk[1], err, sizeof err), bad[i].rc);
	}
	/* not a share file at all */
	ck_assert_int_eq(mshare_parse_header("MIMIRSHX", 8, 8, "img", &in, err, sizeof err),
			 ERR_PARSE);
	ASSERT_MSG_HAS(err, "not a Mimir model share file");
	(void)hb;
	free(img);
	free(orig);
	tu_rmrf(s.dir);
	model_free(m);
}
END_TEST

/* Chunks are bound to their place and their file: swapped chunks, a chunk from the other
 * party's file, are refused at that chunk, and the reader stays refused. */
START_TEST(test_chunks_bound_to_place)
{
	struct model *m = load_real();
	struct split s;
	split_ok(&s, m, 2, 16, 4096);
	size_t len, len1;
	uint8_t *img = read_whole(s.path[0], &len), *other = read_whole(s.path[1], &len1);
	size_t pre = 120 + 11 * 64 + 32 + 80 + 24, clen = 4096 + 17;
	uint8_t *tmp = malloc(clen);
	char err[512];
	/* swap chunks 2 and 3 (indices from 0): the shares of chunk 0 and 1 still read */
	memcpy(tmp, img + pre + 2 * clen, clen);
	memmove(img + pre + 2 * clen, img + pre + 3 * clen, clen);
	memcpy(img + pre + 3 * clen, tmp, clen);
	struct mshare_reader *r = NULL;
	ck_assert_int_eq(mshare_open_mem(img, len, "img", s.sk[0], &r, err, sizeof err), 0);
	ring64_t buf[1024];
	ck_assert_int_eq(mshare_read(r, buf, 1024, err, sizeof err), 0); /* chunks 0 and 1 */
	ck_assert_int_eq(mshare_read(r, buf, 1, err, sizeof err), ERR_CRYPTO);
	ASSERT_MSG_HAS(err, "chunk 3 of 508 does not authenticate");
	ck_assert_int_eq(mshare_read(r, buf, 1, err, sizeof err), ERR_CRYPTO);
	ASSERT_MSG_HAS(err, "an earlier read failed");
	ck_assert(!mshare_reader_done(r));
	uint8_t d[32];
	ck_assert_int_eq(mshare_reader_digest(r, d), ERR_INVALID);
	mshare_reader_free(r);
	free(img);
	img = read_whole(s.path[0], &len);
	/* party 1's chunk 5 in party 0's file */
	memcpy(img + pre + 5 * clen, other + pre + 5 * clen, clen);
	ck_assert_int_eq(read_all_mem(img, len, s.sk[0], err, sizeof err), ERR_CRYPTO);
	ASSERT_MSG_HAS(err, "chunk 6 of 508");
	free(tmp);
	free(img);
	free(other);
	tu_rmrf(s.dir);
	model_free(m);
}
END_TEST

/* Files of two splits of the same model never combine; nor does a party twice, or an
 * incomplete set. (Their sum would not be the weights, which is the point.) */
START_TEST(test_two_splits_refused)
{
	struct model *m = load_real();
	struct split a, b;
	split_ok(&a, m, 2, 16, 0);
	split_ok(&b, m, 2, 16, 0);
	char err[512], ida[33], idb[33];
	struct mshare_info ia0, ia1, ib1;
	ck_assert_int_eq(mshare_inspect(a.path[0], &ia0, err, sizeof err), 0);
	ck_assert_int_eq(mshare_inspect(a.path[1], &ia1, err, sizeof err), 0);
	ck_assert_int_eq(mshare_inspect(b.path[1], &ib1, err, sizeof err), 0);
	const struct mshare_info *good[] = {&ia1, &ia0};
	ck_assert_int_eq(mshare_same_split(good, 2, err, sizeof err), 0);
	const struct mshare_info *mixed[] = {&ia0, &ib1};
	ck_assert_int_eq(mshare_same_split(mixed, 2, err, sizeof err), ERR_CONFLICT);
	ASSERT_MSG_HAS(err, "different splits");
	ASSERT_MSG_HAS(err, mshare_hex(a.res.model_id, 16, ida, sizeof ida));
	ASSERT_MSG_HAS(err, mshare_hex(b.res.model_id, 16, idb, sizeof idb));
	ASSERT_MSG_HAS(err, a.path[0]);
	ASSERT_MSG_HAS(err, b.path[1]);
	const struct mshare_info *twice[] = {&ia0, &ia0};
	ck_assert_int_eq(mshare_same_split(twice, 2, err, sizeof err), ERR_CONFLICT);
	ASSERT_MSG_HAS(err, "both the share of party 0");
	const struct mshare_info *alone[] = {&ia0};
	ck_assert_int_eq(mshare_same_split(alone, 1, err, sizeof err), ERR_INVALID);
	ASSERT_MSG_HAS(err, "party 1 is missing");
	/* what the check prevents: the mixed sum is not the weights */
	struct mshare_shares *x = NULL, *y = NULL;
	ck_assert_int_eq(mshare_load(a.path[0], a.sk[0], &x, err, sizeof err), 0);
	ck_assert_int_eq(mshare_load(b.path[1], b.sk[1], &y, err, sizeof err), 0);
	const ring64_t *vx, *vy;
	size_t n;
	mshare_shares_tensor(x, MODEL_T_WQ, &vx, &n);
	mshare_shares_tensor(y, MODEL_T_WQ, &vy, &n);
	struct model_tensor wq;
	model_tensor(m, MODEL_T_WQ, &wq);
	size_t equal = 0;
	for (size_t i = 0; i < n; i++) {
		ring64_t e;
		ring_fxp_encode(wq.data[i], 16, &e, NULL);
		equal += vx[i] + vy[i] == e;
	}
	ck_assert_uint_lt(equal, 3);
	mshare_shares_free(x);
	mshare_shares_free(y);
	tu_rmrf(a.dir);
	tu_rmrf(b.dir);
	model_free(m);
}
END_TEST

/* A weight beyond the fixed-point range is refused by name before any file exists; with
 * fewer fractional bits the same weight fits and round-trips exactly. */
START_TEST(test_saturating_weight_refused)
{
	char path[1024], err[512];
	size_t len;
	uint8_t *raw = read_whole(tu_shared(path, sizeof path, "models/stories260K.bin"), &len);
	/* wq, layer 2, row 10, col 5 := 2^48 (fits 2^(63-8), not 2^(63-16)) */
	size_t at = 512 * 64 + 5 * 64 + 2 * 64 * 64 + 10 * 64 + 5;
	float big = 281474976710656.0f;
	memcpy(raw + 28 + 4 * at, &big, 4);
	struct model *m = NULL;
	ck_assert_int_eq(model_load_mem(raw, len, "big", &m, err, sizeof err), 0);
	struct split s;
	int rc = do_split(&s, m, 3, 16, 0, err, sizeof err);
	ck_assert_int_eq(rc, ERR_RANGE);
	ASSERT_MSG_HAS(err, "weight wq at layer 2 row 10 col 5 (element 8837)");
	ASSERT_MSG_HAS(err, "f=16");
	ck_assert_uint_eq(dir_entries(s.dir), 0);
	tu_rmrf(s.dir);

	split_ok(&s, m, 2, 8, 0);
	struct mshare_shares *a = NULL, *b = NULL;
	ck_assert_int_eq(mshare_load(s.path[0], s.sk[0], &a, err, sizeof err), 0);
	ck_assert_int_eq(mshare_load(s.path[1], s.sk[1], &b, err, sizeof err), 0);
	const ring64_t *va, *vb;
	size_t n;
	mshare_shares_tensor(a, MODEL_T_WQ, &va, &n);
	mshare_shares_tensor(b, MODEL_T_WQ, &vb, &n);
	ck_assert_uint_eq(va[8837] + vb[8837], (ring64_t)1 << 56);
	mshare_shares_free(a);
	mshare_shares_free(b);
	tu_rmrf(s.dir);
	model_free(m);
	free(raw);
}
END_TEST

/* Bad options are refused before any file is made; an existing file is never replaced. */
START_TEST(test_split_options_refused)
{
	struct model *m = load_real();
	char err[512];
	struct split s;
	const struct {
		unsigned n, f;
		uint32_t chunk;
		int rc;
		const char *msg;
	} bad[] = {{1, 16, 0, ERR_RANGE, "1 parties"},
		   {17, 16, 0, ERR_RANGE, "17 parties"},
		   {2, 7, 0, ERR_RANGE, "7 fractional bits"},
		   {2, 25, 0, ERR_RANGE, "25 fractional bits"},
		   {2, 16, 100, ERR_RANGE, "chunk size 100"},
		   {2, 16, 32, ERR_RANGE, "chunk size 32"},
		   {2, 16, (16u << 20) + 8, ERR_RANGE, "chunk size"}};
	for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
		int rc = do_split(&s, m, bad[i].n, bad[i].f, bad[i].chunk, err, sizeof err);
		ck_assert_msg(rc == bad[i].rc, "case %zu: %d %s", i, rc, err);
		ASSERT_MSG_HAS(err, bad[i].msg);
		ck_assert_uint_eq(dir_entries(s.dir), 0);
		tu_rmrf(s.dir);
	}
	/* the same key twice */
	const char *pv[3];
	split_ok(&s, m, 3, 16, 0);
	tu_rmrf(s.dir);
	ck_assert_int_eq(mkdir(s.dir, 0700), 0);
	for (int i = 0; i < 3; i++)
		pv[i] = s.path[i];
	memcpy(s.pk[2], s.pk[0], 32);
	struct mshare_split_opts o = {.nparties = 3,
				      .frac_bits = 16,
				      .recipients = (const uint8_t(*)[MSHARE_PK_BYTES])s.pk,
				      .paths = pv};
	struct mshare_split_result res;
	ck_assert_int_eq(mshare_split(m, &o, &res, err, sizeof err), ERR_INVALID);
	ASSERT_MSG_HAS(err, "parties 0 and 2 have the same public key");
	/* a key that is no X25519 point of use (all zero): no file left behind */
	memset(s.pk[2], 0, 32);
	ck_assert_int_eq(mshare_split(m, &o, &res, err, sizeof err), ERR_INVALID);
	ASSERT_MSG_HAS(err, "party 2 is not a usable X25519 key");
	ck_assert_uint_eq(dir_entries(s.dir), 0);
	/* an existing output: refused, untouched, nothing else written */
	mshare_keypair(s.pk[2], s.sk[2]);
	ck_assert_int_eq(tu_write_file(s.path[1], "keep", 4), 0);
	ck_assert_int_eq(mshare_split(m, &o, &res, err, sizeof err), ERR_CONFLICT);
	ASSERT_MSG_HAS(err, "refusing to overwrite");
	ck_assert_uint_eq(dir_entries(s.dir), 1);
	char *kept = tu_read_file(s.path[1], NULL);
	ck_assert_str_eq(kept, "keep");
	free(kept);
	/* a dangling symbolic link counts as existing */
	unlink(s.path[1]);
	ck_assert_int_eq(symlink("/nonexistent/target", s.path[1]), 0);
	ck_assert_int_eq(mshare_split(m, &o, &res, err, sizeof err), ERR_CONFLICT);
	tu_rmrf(s.dir);
	model_free(m);
}
END_TEST

START_TEST(test_reader_api_misuse)
{
	struct model *m = load_real();
	struct split s;
	split_ok(&s, m, 2, 16, 0);
	char err[512];
	struct mshare_reader *r = NULL;
	ck_assert_int_eq(mshare_open(s.path[0], s.sk[0], &r, err, sizeof err), 0);
	const struct mshare_info *in = mshare_reader_info(r);
	ring64_t *buf = malloc(in->tensors[0].count * sizeof *buf);
	ck_assert_int_eq(mshare_read_tensor(r, 1, buf, in->tensors[1].count, err, sizeof err),
			 ERR_INVALID);
	ASSERT_MSG_HAS(err, "out of order");
	ck_assert_int_eq(mshare_read_tensor(r, 0, buf, 10, err, sizeof err), ERR_RANGE);
	ck_assert_int_eq(mshare_read_tensor(r, 99, buf, 10, err, sizeof err), ERR_RANGE);
	ck_assert_int_eq(mshare_read(r, buf, (size_t)in->total + 1, err, sizeof err), ERR_RANGE);
	ck_assert_int_eq(mshare_read_tensor(r, 0, buf, in->tensors[0].count, err, sizeof err), 0);
	ck_assert_int_eq(mshare_read_tensor(r, 0, buf, in->tensors[0].count, err, sizeof err),
			 ERR_INVALID);
	free(buf);
	mshare_reader_free(r);
	mshare_reader_free(NULL);
	mshare_shares_free(NULL);
	ck_assert_int_eq(mshare_open("/nonexistent/x.mshare", s.sk[0], &r, err, sizeof err),
			 ERR_NOT_FOUND);
	ck_assert_int_eq(mshare_open(s.dir, s.sk[0], &r, err, sizeof err), ERR_IO);
	tu_rmrf(s.dir);
	model_free(m);
}
END_TEST

/* ---- keys ---- */

static void unhex(const char *h, uint8_t *out, size_t n)
{
	size_t got;
	ck_assert_int_eq(sodium_hex2bin(out, n, h, strlen(h), NULL, &got, NULL), 0);
	ck_assert_uint_eq(got, n);
}

/* RFC 7748 section 6.1: Alice's and Bob's X25519 key pairs. */
START_TEST(test_x25519_known_answers)
{
	const char *sks[2] = {"77076d0a7318a57d3c16c17251b26645df4c2f87ebc0992ab177fba51db92c2a",
			      "5dab087e624a8a4b79e17f8b83800ee66f3bb1292618b6fd1c2f8b27ff88e0eb"};
	const char *pks[2] = {"8520f0098930a754748b7ddcb43ef75a0dbf3a0d26381af4eba4a98eaa9b4e6a",
			      "de9edb7d7b7dc1b4d35b61c2ece435373f8343c85b78674dadfc7e146f882b4f"};
	for (int i = 0; i < 2; i++) {
		uint8_t sk[32], pk[32], want[32];
		unhex(sks[i], sk, 32);
		unhex(pks[i], want, 32);
		ck_assert_int_eq(mshare_public_from_secret(sk, pk), 0);
		ck_assert_mem_eq(pk, want, 32);
	}
	uint8_t pk[32], sk[32], pk2[32];
	ck_assert_int_eq(mshare_keypair(pk, sk), 0);
	ck_assert_int_eq(mshare_public_from_secret(sk, pk2), 0);
	ck_assert_mem_eq(pk, pk2, 32);
}
END_TEST

START_TEST(test_key_text)
{
	uint8_t k[32], back[32];
	unhex("8520f0098930a754748b7ddcb43ef75a0dbf3a0d26381af4eba4a98eaa9b4e6a", k, 32);
	char t[MSHARE_KEY_TEXT_MAX], err[256];
	ck_assert_int_eq(mshare_key_format(k, false, t, sizeof t), 0);
	ck_assert_str_eq(t, "-----BEGIN MIMIR X25519 PUBLIC KEY-----\n"
			    "8520f0098930a754748b7ddcb43ef75a0dbf3a0d26381af4eba4a98eaa9b4e6a\n"
			    "-----END MIMIR X25519 PUBLIC KEY-----\n");
	ck_assert_int_eq(mshare_key_parse(t, strlen(t), false, back, "p", err, sizeof err), 0);
	ck_assert_mem_eq(back, k, 32);
	/* a secret key is never taken for a public one, nor the reverse */
	ck_assert_int_eq(mshare_key_parse(t, strlen(t), true, back, "p", err, sizeof err),
			 ERR_PARSE);
	ASSERT_MSG_HAS(err, "this is an X25519 public key; a secret key");
	ck_assert_int_eq(mshare_key_format(k, true, t, sizeof t), 0);
	ck_assert_int_eq(mshare_key_parse(t, strlen(t), false, back, "s", err, sizeof err),
			 ERR_PARSE);
	ASSERT_MSG_HAS(err, "this is an X25519 secret key; a public key");
	ck_assert_int_eq(mshare_key_parse(t, strlen(t), true, back, "s", err, sizeof err), 0);
	ck_assert_mem_eq(back, k, 32);
	/* CRLF, blank lines and trailing blanks are fine */
	const char *crlf = "\r\n-----BEGIN MIMIR X25519 PUBLIC KEY----- \r\n"
			   "8520f0098930a754748b7ddcb43ef75a0dbf3a0d26381af4eba4a98eaa9b4e6a\r\n"
			   "-----END MIMIR X25519 PUBLIC KEY-----\r\n\r\n";
	ck_assert_int_eq(mshare_key_parse(crlf, strlen(crlf), false, back, "c", err, sizeof err),
			 0);
	ck_assert_mem_eq(back, k, 32);
	const char *bad[] = {
		"",
		"8520f0098930a754748b7ddcb43ef75a0dbf3a0d26381af4eba4a98eaa9b4e6a\n",
		"-----BEGIN MIMIR X25519 PUBLIC KEY-----\n"
		"8520f0098930a754748b7ddcb43ef75a0dbf3a0d26381af4eba4a98eaa9b4e6\n"
		"-----END MIMIR X25519 PUBLIC KEY-----\n",
		"-----BEGIN MIMIR X25519 PUBLIC KEY-----\n"
		"8520f0098930a754748b7ddcb43ef75a0dbf3a0d26381af4eba4a98eaa9b4e6g\n"
		"-----END MIMIR X25519 PUBLIC KEY-----\n",
		"-----BEGIN MIMIR X25519 PUBLIC KEY-----\n"
		"8520f0098930a754748b7ddcb43ef75a0dbf3a0d26381af4eba4a98eaa9b4e6a\n",
		"-----BEGIN MIMIR X25519 PUBLIC KEY-----\n"
		"8520f0098930a754748b7ddcb43ef75a0dbf3a0d26381af4eba4a98eaa9b4e6a\n"
		"-----END MIMIR X25519 SECRET KEY-----\n",
		"-----BEGIN MIMIR X25519 PUBLIC KEY-----\n"
		"8520f0098930a754748b7ddcb43ef75a0dbf3a0d26381af4eba4a98eaa9b4e6a\n"
		"-----END MIMIR X25519 PUBLIC KEY-----\nmore\n",
	};
	for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
		err[0] = '\0';
		ck_assert_msg(mshare_key_parse(bad[i], strlen(bad[i]), false, back, "b", err,
					       sizeof err) == ERR_PARSE,
			      "bad key text %zu accepted", i);
		ck_assert_msg(strncmp(err, "b: ", 3) == 0, "%zu: '%s'", i, err);
	}
}
END_TEST

START_TEST(test_key_files)
{
	char dir[512], p[700], q[700], err[256];
	tu_tmpdir(dir, sizeof dir);
	snprintf(p, sizeof p, "%s/a.x25519.key", dir);
	snprintf(q, sizeof q, "%s/a.x25519.pub", dir);
	uint8_t pk[32], sk[32], back[32];
	mshare_keypair(pk, sk);
	mode_t old = umask(0);
	ck_assert_int_eq(mshare_key_write(p, sk, true, err, sizeof err), 0);
	ck_assert_int_eq(mshare_key_write(q, pk, false, err, sizeof err), 0);
	umask(old);
	struct stat st;
	ck_assert_int_eq(stat(p, &st), 0);
	ck_assert_uint_eq(st.st_mode & 0777, 0600);
	ck_assert_int_eq(stat(q, &st), 0);
	ck_assert_uint_eq(st.st_mode & 0777, 0644);
	ck_assert_int_eq(mshare_key_read(p, true, back, err, sizeof err), 0);
	ck_assert_mem_eq(back, sk, 32);
	ck_assert_int_eq(mshare_key_read(q, false, back, err, sizeof err), 0);
	ck_assert_mem_eq(back, pk, 32);
	ck_assert_int_eq(mshare_key_read(p, false, back, err, sizeof err), ERR_PARSE);
	/* never replaced, never through a link */
	ck_assert_int_eq(mshare_key_write(p, pk, true, err, sizeof err), ERR_CONFLICT);
	ASSERT_MSG_HAS(err, "refusing to overwrite");
	ck_assert_int_eq(mshare_key_read(p, true, back, err, sizeof err), 0);
	ck_assert_mem_eq(back, sk, 32);
	char l[700], target[700];
	snprintf(l, sizeof l, "%s/link.key", dir);
	snprintf(target, sizeof target, "%s/target", dir);
	ck_assert_int_eq(symlink(target, l), 0);
	ck_assert_int_eq(mshare_key_write(l, sk, true, err, sizeof err), ERR_CONFLICT);
	ck_assert_int_ne(access(target, F_OK), 0);
	/* a file too big to be a key */
	char big[5000];
	memset(big, 'a', sizeof big);
	snprintf(l, sizeof l, "%s/big", dir);
	ck_assert_int_eq(tu_write_file(l, big, sizeof big), 0);
	ck_assert_int_eq(mshare_key_read(l, false, back, err, sizeof err), ERR_TOO_LARGE);
	ck_assert_int_eq(mshare_key_read("/nonexistent", false, back, err, sizeof err),
			 ERR_NOT_FOUND);
	tu_rmrf(dir);
}
END_TEST

START_TEST(test_limits_agree)
{
	ck_assert_int_eq(MSHARE_MAX_PARTIES, MPC_MAX_PARTIES);
	ck_assert_int_eq(MSHARE_SEALED_KEY_BYTES,
			 crypto_box_SEALBYTES + crypto_secretstream_xchacha20poly1305_KEYBYTES);
	ck_assert_int_eq(MSHARE_STREAM_HEADER_BYTES,
			 crypto_secretstream_xchacha20poly1305_HEADERBYTES);
	ck_assert_int_eq(MSHARE_CHUNK_OVERHEAD, crypto_secretstream_xchacha20poly1305_ABYTES);
	ck_assert_int_eq(MSHARE_HEADER_MAX, 120 + 12 * 64 + 32);
}
END_TEST

Suite *suite(void)
{
	Suite *s = suite_create("mshare");
	TCase *tc = tcase_create("core");
	tcase_set_timeout(tc, 120);
	tcase_add_loop_test(tc, test_round_trip, 0, sizeof rt_cases / sizeof rt_cases[0]);
	tcase_add_test(tc, test_layout_matches_spec);
	tcase_add_test(tc, test_table_matches_model);
	tcase_add_test(tc, test_n_minus_1_shares_uniform);
	tcase_add_test(tc, test_wrong_key);
	tcase_add_test(tc, test_bit_flips_refused);
	tcase_add_test(tc, test_truncation_refused);
	tcase_add_test(tc, test_header_changed_refused);
	tcase_add_test(tc, test_chunks_bound_to_place);
	tcase_add_test(tc, test_two_splits_refused);
	tcase_add_test(tc, test_saturating_weight_refused);
	tcase_add_test(tc, test_split_options_refused);
	tcase_add_test(tc, test_reader_api_misuse);
	tcase_add_test(tc, test_x25519_known_answers);
	tcase_add_test(tc, test_key_text);
	tcase_add_test(tc, test_key_files);
	tcase_add_test(tc, test_limits_agree);
	suite_add_tcase(s, tc);
	return s;
}
