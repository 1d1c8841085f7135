/* mimir-model share: splits a checkpoint into one sealed share file per party. The
 * command line is checked in full (keys read, paths free) before the checkpoint is
 * loaded; the work is mshare_split, which refuses a weight that does not fit the fixed
 * point and never leaves a partial split behind. Progress goes to stderr: a bar that
 * redraws itself on a terminal, plain lines (every 10%) otherwise, so logs stay
 * readable. stdout gets the summary the owner registers: model id, files, digests. */
#include <errno.h>
#include <getopt.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include <sodium.h>

#include "err/err.h"
#include "mm.h"
#include "model/model.h"

static void usage(FILE *f)
{
	fprintf(f,
		"Usage: " MM_PROG " share --model PATH --parties N --to PUB0,PUB1,... --out DIR\n"
		"                         [--frac-bits F] [--name BASE] [--chunk-bytes B]\n"
		"\n"
		"Encodes every weight of a llama2.c checkpoint as fixed point in Z_2^64, splits\n"
		"it into N additive shares and writes DIR/BASE.party<i>.mshare for each party i,\n"
		"sealed to that party's public key. Any N-1 files together reveal nothing about\n"
		"the weights. Existing files are never replaced; on failure no file is left.\n"
		"\n"
		"  --model PATH       llama2.c checkpoint\n"
		"  --parties N        number of parties, %d..%d\n"
		"  --to LIST          N public key files (from keygen), comma separated, in\n"
		"                     party order: party i's file is sealed to the i-th key\n"
		"  --out DIR          output directory (created when missing)\n"
		"  --frac-bits F      fractional bits of the fixed point, %d..%d (default %d);\n"
		"                     a weight of magnitude 2^(63-F) or more is refused\n"
		"  --name BASE        file name stem (default: the checkpoint's name without\n"
		"                     its extension)\n"
		"  --chunk-bytes B    plaintext bytes per encrypted chunk, a multiple of 8 in\n"
		"                     %u..%u (default %u); a reader holds one chunk\n"
		"  -h, --help         this text\n",
		MSHARE_MIN_PARTIES, MSHARE_MAX_PARTIES, RING_FXP_MIN_F, RING_FXP_MAX_F,
		RING_FXP_DEFAULT_F, MSHARE_CHUNK_MIN, MSHARE_CHUNK_MAX, MSHARE_CHUNK_DEFAULT);
}

struct progress {
	bool tty;
	int shown; /* last percentage drawn, -1 before the first */
	unsigned nparties;
	double t0, last;
};

static double now_s(void)
{
	struct timespec ts;
	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (double)ts.tv_sec + (double)ts.tv_nsec * 1e-9;
}

static void on_progress(void *ctx, uint64_t done, uint64_t total)
{
	struct progress *p = ctx;
	int pct = total ? (int)(done * 100 / total) : 100;
	double t = now_s();
	if (p->tty) {
		/* Redraw at most ten times a second, and always at the end. */
		if (pct == p->shown || (done < total && t - p->last < 0.1))
			return;
		enum { W = 30 };
		char bar[W + 1];
		int fill = pct * W / 100;
		for (int i = 0; i < W; i++)
			bar[i] = i < fill ? '#' : '.';
		bar[W] = '\0';
		fprintf(stderr, "\rsharing [%s] %3d%%  %llu/%llu weights x %u parties  %.1f s", bar,
			pct, (unsigned long long)done, (unsigned long long)total, p->nparties,
			t - p->t0);
		if (done == total)
			fputc('\n', stderr);
		fflush(stderr);
	} else {
		if (pct / 10 == p->shown / 10 && p->shown >= 0)
			return;
		fprintf(stderr, MM_PROG ": sharing: %d%% (%llu of %llu weights)\n", pct,
			(unsigned long long)done, (unsigned long long)total);
	}
	p->shown = pct;
	p->last = t;
}

/* The checkpoint's file name without directory and extension. */
static void default_base(const char *model, char *out, size_t cap)
{
	const char *b = strrchr(model, '/');
	b = b ? b + 1 : model;
	size_t n = strlen(b);
	const char *dot = strrchr(b, '.');
	if (dot && dot != b)
		n = (size_t)(dot - b);
	if (n == 0 || n >= cap)
		n = 0;
	memcpy(out, b, n);
	out[n] = '\0';
	if (n == 0)
		snprintf(out, cap, "model");
}

static bool good_base(const char *s)
{
	size_t n = strlen(s);
	if (n == 0 || n > 128 || s[0] == '.' || s[0] == '-')
		return false;
	for (size_t i = 0; i < n; i++)
		if (s[i] == '/' || (unsigned char)s[i] < 0x20 || s[i] == 0x7f)
			return false;
	return true;
}

int cmd_share(int argc, char **argv)
{
	const char *model = NULL, *to = NULL, *outdir = NULL, *name = NULL;
	unsigned long nparties = 0, f = RING_FXP_DEFAULT_F, chunk = MSHARE_CHUNK_DEFAULT;
	enum { O_MODEL = 256, O_PARTIES, O_TO, O_OUT, O_FRAC, O_NAME, O_CHUNK };
	static const struct option lo[] = {{"model", required_argument, NULL, O_MODEL},
					   {"parties", required_argument, NULL, O_PARTIES},
					   {"to", required_argument, NULL, O_TO},
					   {"out", required_argument, NULL, O_OUT},
					   {"frac-bits", required_argument, NULL, O_FRAC},
					   {"name", required_argument, NULL, O_NAME},
					   {"chunk-bytes", required_argument, NULL, O_CHUNK},
					   {"help", no_argument, NULL, 'h'},
					   {NULL, 0, NULL, 0}};
	opterr = 0;
	int c;
	while ((c = getopt_long(argc, argv, ":h", lo, NULL)) != -1) {
		const char *a = optarg;
		switch (c) {
		case O_MODEL: model = a; break;
		case O_TO: to = a; break;
		case O_OUT: outdir = a; break;
		case O_NAME: name = a; break;
		case O_PARTIES:
			if (!mm_parse_uint(a, MSHARE_MIN_PARTIES, MSHARE_MAX_PARTIES, &nparties))
				return mm_usage_error("share",
						      "--parties %s: expected an integer in %d..%d", a,
						      MSHARE_MIN_PARTIES, MSHARE_MAX_PARTIES);
			break;
		case O_FRAC:
			if (!mm_parse_uint(a, RING_FXP_MIN_F, RING_FXP_MAX_F, &f))
				return mm_usage_error("share",
						      "--frac-bits %s: expected an integer in %d..%d",
						      a, RING_FXP_MIN_F, RING_FXP_MAX_F);
			break;
		case O_CHUNK:
			if (!mm_parse_uint(a, MSHARE_CHUNK_MIN, MSHARE_CHUNK_MAX, &chunk) ||
			    chunk % 8 != 0)
				return mm_usage_error("share",
						      "--chunk-bytes %s: expected a multiple of 8 in "
						      "%u..%u",
						      a, MSHARE_CHUNK_MIN, MSHARE_CHUNK_MAX);
			break;
		case 'h': usage(stdout); return MM_EXIT_OK;
		case ':': return mm_usage_error("share", "%s needs a value", argv[optind - 1]);
		default: return mm_usage_error("share", "unknown option %s", argv[optind - 1]);
		}
	}
	if (optind < argc)
		return mm_usage_error("share", "unexpected argument '%s'", argv[optind]);
	if (!model || !nparties || !to || !outdir)
		return mm_usage_error("share", "--model, --parties, --to and --out are required");
	char base[256];
	if (name) {
		if (!good_base(name))
			return mm_usage_error("share", "--name '%s': not a plain file name stem",
					      name);
		snprintf(base, sizeof base, "%s", name);
	} else {
		default_base(model, base, sizeof base);
	}

	/* --to: exactly nparties key files. */
	char keypaths[MSHARE_MAX_PARTIES][MM_PATH_MAX];
	unsigned nk = 0;
	for (const char *p = to;; nk++) {
		const char *comma = strchr(p, ',');
		size_t n = comma ? (size_t)(comma - p) : strlen(p);
		if (nk >= nparties)
			return mm_usage_error("share", "--to lists more than the %lu keys --parties "
						       "asks for",
					      nparties);
		if (n == 0 || n >= MM_PATH_MAX)
			return mm_usage_error("share", "--to: empty or overlong entry %u", nk + 1);
		memcpy(keypaths[nk], p, n);
		keypaths[nk][n] = '\0';
		if (!comma) {
			nk++;
			break;
		}
		p = comma + 1;
	}
	if (nk != nparties)
		return mm_usage_error("share", "--to lists %u keys; --parties %lu needs one per party",
				      nk, nparties);

	int status = MM_EXIT_RUNTIME;
	char err[768];
	struct model *m = NULL;
	uint8_t pks[MSHARE_MAX_PARTIES][MSHARE_PK_BYTES];
	char paths[MSHARE_MAX_PARTIES][MM_PATH_MAX];
	const char *pathv[MSHARE_MAX_PARTIES];
	for (unsigned i = 0; i < nk; i++) {
		if (mshare_key_read(keypaths[i], false, pks[i], err, sizeof err) != 0)
			return mm_fail("--to: %s", err);
		if ((size_t)snprintf(paths[i], sizeof paths[i], "%s/%s.party%u.mshare", outdir, base,
				     i) >= sizeof paths[i])
			return mm_usage_error("share", "--out: path too long");
		pathv[i] = paths[i];
		struct stat st;
		if (lstat(paths[i], &st) == 0)
			return mm_fail("%s already exists; refusing to overwrite it (choose another "
				       "--out or --name)",
				       paths[i]);
	}
	if (mm_mkdir_p(outdir, 0755) != 0)
		return mm_fail("cannot create the directory %s: %s", outdir, strerror(errno));

	double t0 = now_s();
	if (model_load(model, &m, err, sizeof err) != 0) {
		mm_fail("%s", err);
		goto out;
	}
	double t_load = now_s() - t0;
	struct progress pr = {.tty = isatty(STDERR_FILENO) == 1,
			      .shown = -1,
			      .nparties = (unsigned)nparties,
			      .t0 = now_s()};
	struct mshare_split_opts so = {.nparties = (unsigned)nparties,
				       .frac_bits = (unsigned)f,
				       .chunk_bytes = (uint32_t)chunk,
				       .recipients = (const uint8_t(*)[MSHARE_PK_BYTES])pks,
				       .paths = pathv,
				       .progress = on_progress,
				       .progress_ctx = &pr};
	struct mshare_split_result res;
	int rc = mshare_split(m, &so, &res, err, sizeof err);
	if (rc != 0) {
		if (pr.tty && pr.shown >= 0)
			fputc('\n', stderr);
		mm_fail("%s: %s", model, err);
		goto out;
	}
	double t_split = now_s() - pr.t0;

	const struct model_config *cfg = model_config(m);
	char id[2 * MSHARE_ID_BYTES + 1], hex[2 * MSHARE_DIGEST_BYTES + 1];
	printf("model:          %s (dim %d, %d layers, vocab %d, %llu weights)\n", model,
	       cfg->dim, cfg->n_layers, cfg->vocab_size,
	       (unsigned long long)model_param_count(cfg));
	printf("model id:       %s\n", mshare_hex(res.model_id, MSHARE_ID_BYTES, id, sizeof id));
	printf("split:          %lu parties, %lu fractional bits, %lu-byte chunks\n", nparties, f,
	       chunk);
	printf("weights digest: %s (BLAKE2b-256 of the fixed-point weights; combine "
	       "reproduces it)\n",
	       mshare_hex(res.weights_digest, MSHARE_DIGEST_BYTES, hex, sizeof hex));
	for (unsigned i = 0; i < nk; i++) {
		char pk[17];
		printf("party %u:        %s  %llu bytes  sealed to %s...\n", i, paths[i],
		       (unsigned long long)res.file_bytes, mshare_hex(pks[i], 8, pk, sizeof pk));
		printf("  file digest:  %s\n",
		       mshare_hex(res.file_digest[i], MSHARE_DIGEST_BYTES, hex, sizeof hex));
	}
	printf("time:           %.3f s to load, %.3f s to split and write %llu bytes\n", t_load,
	       t_split, (unsigned long long)res.file_bytes * nk);
	status = fflush(stdout) == 0 ? MM_EXIT_OK : MM_EXIT_RUNTIME;
out:
	model_free(m);
	return status;
}
