/* mimir-model combine: the audit of a split, for tests and audits only, since it brings
 * the plaintext weights together in one process (held in wiped blocks, never written).
 * Every file is opened with its party's key and fully authenticated; the files must form
 * one whole split (same model id, each party once); the shares are summed block by block
 * and the sum is hashed (the digest `share` printed), and with --check compared with the
 * checkpoint: it must equal the checkpoint's fixed-point encoding exactly, and differ from
 * the float weights by at most 2^-(f+1), the rounding of the encoding. */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <sodium.h>

#include "mm.h"
#include "model/model.h"

static void usage(FILE *f)
{
	fputs("Usage: " MM_PROG " combine --key KEY0 FILE0 --key KEY1 FILE1 ... [--check PATH]\n"
	      "\n"
	      "For tests and audits only: opens every share file of one split with its party's\n"
	      "secret key, reconstructs the fixed-point weights and prints their BLAKE2b-256\n"
	      "digest (the weights digest 'share' printed). With --check, compares them with\n"
	      "the checkpoint: the reconstruction must equal its fixed-point encoding exactly\n"
	      "and be within 2^-(f+1) of its float weights. The exit status is 1 otherwise.\n"
	      "\n"
	      "  --key KEY FILE   a party's secret key file followed by its share file; one\n"
	      "                   pair per party, in any order\n"
	      "  --check PATH     the llama2.c checkpoint the split was made from\n"
	      "  -h, --help       this text\n",
	      f);
}

struct pair {
	const char *key, *file;
};

/* A walk over the checkpoint's weights in payload order. */
struct cursor {
	const struct model *m;
	const struct mshare_info *in;
	size_t ti;
	uint64_t off;
};

static float cursor_next(struct cursor *c, const char **tname, uint64_t *index)
{
	const struct mshare_tensor *t = &c->in->tensors[c->ti];
	struct model_tensor mt;
	model_tensor(c->m, t->id, &mt);
	float w = mt.data[c->off];
	*tname = t->name;
	*index = c->off;
	if (++c->off == t->count)
		c->ti++, c->off = 0;
	return w;
}

int cmd_combine(int argc, char **argv)
{
	struct pair pairs[MSHARE_MAX_PARTIES];
	size_t np = 0;
	const char *check = NULL;
	for (int i = 1; i < argc; i++) {
		const char *a = argv[i];
		if (strcmp(a, "--help") == 0 || strcmp(a, "-h") == 0) {
			usage(stdout);
			return MM_EXIT_OK;
		}
		const char *val = NULL;
		bool is_key = strcmp(a, "--key") == 0 || strncmp(a, "--key=", 6) == 0;
		bool is_check = strcmp(a, "--check") == 0 || strncmp(a, "--check=", 8) == 0;
		if (!is_key && !is_check)
			return mm_usage_error("combine",
					      "unexpected argument '%s' (each FILE follows its --key "
					      "KEY)",
					      a);
		const char *eq = strchr(a, '=');
		if (eq) {
			val = eq + 1;
		} else {
			if (i + 1 >= argc)
				return mm_usage_error("combine", "%s needs a value", a);
			val = argv[++i];
		}
		if (!*val)
			return mm_usage_error("combine", "%s needs a value", a);
		if (is_check) {
			check = val;
			continue;
		}
		if (i + 1 >= argc || strncmp(argv[i + 1], "--", 2) == 0)
			return mm_usage_error("combine", "--key %s must be followed by its share file",
					      val);
		if (np == MSHARE_MAX_PARTIES)
			return mm_usage_error("combine", "more than %d share files",
					      MSHARE_MAX_PARTIES);
		pairs[np].key = val;
		pairs[np].file = argv[++i];
		np++;
	}
	if (np < MSHARE_MIN_PARTIES)
		return mm_usage_error("combine", "give every share file of the split, each as "
						 "--key KEY FILE");

	int status = MM_EXIT_RUNTIME;
	char err[768];
	struct mshare_reader *r[MSHARE_MAX_PARTIES] = {0};
	const struct mshare_info *infos[MSHARE_MAX_PARTIES];
	struct model *m = NULL;
	enum { BLOCK = 8192 };
	ring64_t *acc = malloc(BLOCK * sizeof *acc), *tmp = malloc(BLOCK * sizeof *tmp);
	crypto_generichash_state h;
	crypto_generichash_init(&h, NULL, 0, MSHARE_DIGEST_BYTES);
	if (!acc || !tmp) {
		mm_fail("out of memory");
		goto out;
	}
	for (size_t i = 0; i < np; i++) {
		uint8_t sk[MSHARE_SK_BYTES];
		if (mm_read_secret(pairs[i].key, sk) != 0)
			goto out;
		int rc = mshare_open(pairs[i].file, sk, &r[i], err, sizeof err);
		sodium_memzero(sk, sizeof sk);
		if (rc != 0) {
			mm_fail("%s", err);
			goto out;
		}
		infos[i] = mshare_reader_info(r[i]);
	}
	if (mshare_same_split(infos, np, err, sizeof err) != 0) {
		mm_fail("%s", err);
		goto out;
	}
	const struct mshare_info *in = infos[0];
	const unsigned f = in->frac_bits;
	if (check) {
		if (model_load(check, &m, err, sizeof err) != 0) {
			mm_fail("%s", err);
			goto out;
		}
		const struct model_config *a = model_config(m), *b = &in->config;
		if (a->dim != b->dim || a->hidden_dim != b->hidden_dim ||
		    a->n_layers != b->n_layers || a->n_heads != b->n_heads ||
		    a->n_kv_heads != b->n_kv_heads || a->vocab_size != b->vocab_size ||
		    a->seq_len != b->seq_len || a->shared_classifier != b->shared_classifier) {
			mm_fail("%s: its config differs from the split's; it is not the checkpoint "
				"these shares come from",
				check);
			goto out;
		}
	}

	struct cursor cur = {.m = m, .in = in};
	uint64_t mismatches = 0, first_index = 0;
	const char *first_tensor = NULL;
	double maxerr = 0.0;
	for (uint64_t done = 0; done < in->total;) {
		size_t n = in->total - done < BLOCK ? (size_t)(in->total - done) : BLOCK;
		memset(acc, 0, n * sizeof *acc);
		for (size_t p = 0; p < np; p++) {
			if (mshare_read(r[p], tmp, n, err, sizeof err) != 0) {
				mm_fail("%s", err);
				goto out;
			}
			for (size_t j = 0; j < n; j++)
				acc[j] += tmp[j];
		}
		for (size_t j = 0; j < n; j++) {
			uint8_t le[8];
			ring64_store(le, acc[j]);
			crypto_generichash_update(&h, le, sizeof le);
			if (!m)
				continue;
			const char *tn;
			uint64_t idx;
			float w = cursor_next(&cur, &tn, &idx);
			ring64_t x;
			ring_fxp_encode((double)w, f, &x, NULL);
			if (x != acc[j] && mismatches++ == 0)
				first_tensor = tn, first_index = idx;
			double e = fabs(ring_fxp_decode(acc[j], f) - (double)w);
			if (!(e <= maxerr))
				maxerr = e; /* also catches NaN */
		}
		done += n;
	}
	for (size_t p = 0; p < np; p++)
		if (!mshare_reader_done(r[p])) {
			mm_fail("%s: the stream did not end where the header says", infos[p]->name);
			goto out;
		}

	uint8_t d[MSHARE_DIGEST_BYTES];
	char id[2 * MSHARE_ID_BYTES + 1], hex[2 * MSHARE_DIGEST_BYTES + 1];
	crypto_generichash_final(&h, d, sizeof d);
	printf("split:          model id %s, %u parties, %u fractional bits\n",
	       mshare_hex(in->model_id, MSHARE_ID_BYTES, id, sizeof id), in->nparties, f);
	printf("reconstructed:  %llu weights, digest %s\n", (unsigned long long)in->total,
	       mshare_hex(d, sizeof d, hex, sizeof hex));
	status = MM_EXIT_OK;
	if (m) {
		double bound = ldexp(1.0, -(int)(f + 1));
		printf("checkpoint:     %s\n", check);
		if (mismatches == 0) {
			printf("fixed point:    identical to the checkpoint's encoding (%llu "
			       "weights)\n",
			       (unsigned long long)in->total);
		} else {
			printf("fixed point:    %llu weights differ from the checkpoint's encoding "
			       "(first: %s element %llu)\n",
			       (unsigned long long)mismatches, first_tensor,
			       (unsigned long long)first_index);
			status = MM_EXIT_RUNTIME;
		}
		bool within = maxerr <= bound;
		printf("max abs error:  %.6g against the float weights (bound 2^-%u = %.6g): %s\n",
		       maxerr, f + 1, bound, within ? "ok" : "EXCEEDED");
		if (!within)
			status = MM_EXIT_RUNTIME;
		if (status != MM_EXIT_OK)
			mm_fail("the shares do not reconstruct %s", check);
	}
	if (fflush(stdout) != 0)
		status = MM_EXIT_RUNTIME;
out:
	for (size_t p = 0; p < np; p++)
		mshare_reader_free(r[p]);
	if (acc)
		sodium_memzero(acc, BLOCK * sizeof *acc);
	if (tmp)
		sodium_memzero(tmp, BLOCK * sizeof *tmp);
	free(acc);
	free(tmp);
	sodium_memzero(&h, sizeof h);
	model_free(m);
	return status;
}
