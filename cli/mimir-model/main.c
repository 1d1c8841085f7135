/* mimir-model: the model owner's tool for secret-sharing a checkpoint among the parties.
 * `keygen` makes a party's X25519 key pair, `share` splits a llama2.c checkpoint into one
 * sealed share file per party, `inspect` shows a file's clear header, `open` verifies a
 * file with its party's key, and `combine` (tests and audits only) reconstructs the
 * weights from every share and compares them with the checkpoint. The format and the
 * work are in common/mshare; this file dispatches to the commands and holds the helpers
 * they share. Exit status: 0 done, 1 the work failed, 2 bad command line. */
#include <errno.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#include <sodium.h>

#include "mm.h"

static void usage(FILE *f)
{
	fputs("Usage: " MM_PROG " COMMAND [OPTIONS]\n"
	      "\n"
	      "Splits a model checkpoint into N share files, each sealed to one party's X25519\n"
	      "key, so that no party ever holds the plaintext weights.\n"
	      "\n"
	      "Commands:\n"
	      "  keygen   create a party's key pair: DIR/NAME.x25519.key, DIR/NAME.x25519.pub\n"
	      "  share    split a checkpoint into one share file per party\n"
	      "  inspect  print a share file's clear header (no key needed)\n"
	      "  open     verify a share file with its party's secret key\n"
	      "  combine  reconstruct the weights from all shares and compare them with the\n"
	      "           checkpoint (for tests and audits only)\n"
	      "\n"
	      "Run '" MM_PROG " COMMAND --help' for the options of a command.\n"
	      "Exit status: 0 done, 1 the work failed, 2 bad command line.\n",
	      f);
}

int main(int argc, char **argv)
{
	if (sodium_init() < 0)
		return mm_fail("cannot initialise libsodium");
	if (argc < 2) {
		usage(stderr);
		return MM_EXIT_USAGE;
	}
	const char *cmd = argv[1];
	if (strcmp(cmd, "--help") == 0 || strcmp(cmd, "-h") == 0 || strcmp(cmd, "help") == 0) {
		usage(stdout);
		return MM_EXIT_OK;
	}
	static const struct {
		const char *name;
		int (*fn)(int, char **);
	} cmds[] = {{"keygen", cmd_keygen},
		    {"share", cmd_share},
		    {"inspect", cmd_inspect},
		    {"open", cmd_open},
		    {"combine", cmd_combine}};
	for (size_t i = 0; i < sizeof cmds / sizeof cmds[0]; i++)
		if (strcmp(cmd, cmds[i].name) == 0)
			return cmds[i].fn(argc - 1, argv + 1);
	fprintf(stderr, MM_PROG ": unknown command '%s'\n", cmd);
	fputs("Try '" MM_PROG " --help'.\n", stderr);
	return MM_EXIT_USAGE;
}

int mm_fail(const char *fmt, ...)
{
	va_list ap;
	va_start(ap, fmt);
	fputs(MM_PROG ": ", stderr);
	vfprintf(stderr, fmt, ap);
	fputc('\n', stderr);
	va_end(ap);
	return MM_EXIT_RUNTIME;
}

int mm_usage_error(const char *cmd, const char *fmt, ...)
{
	va_list ap;
	va_start(ap, fmt);
	fprintf(stderr, MM_PROG " %s: ", cmd);
	vfprintf(stderr, fmt, ap);
	fprintf(stderr, "\n(see " MM_PROG " %s --help)\n", cmd);
	va_end(ap);
	return MM_EXIT_USAGE;
}

void mm_warn(const char *fmt, ...)
{
	va_list ap;
	va_start(ap, fmt);
	fputs(MM_PROG ": warning: ", stderr);
	vfprintf(stderr, fmt, ap);
	fputc('\n', stderr);
	va_end(ap);
}

bool mm_parse_uint(const char *s, unsigned long lo, unsigned long hi, unsigned long *out)
{
	char *end;
	if (!s || *s < '0' || *s > '9')
		return false;
	errno = 0;
	unsigned long v = strtoul(s, &end, 10);
	if (errno || *end || v < lo || v > hi)
		return false;
	*out = v;
	return true;
}

int mm_mkdir_p(const char *dir, unsigned mode)
{
	char buf[MM_PATH_MAX];
	size_t n = strlen(dir);
	if (n == 0 || n >= sizeof buf) {
		errno = ENAMETOOLONG;
		return -1;
	}
	memcpy(buf, dir, n + 1);
	for (size_t i = 1; i <= n; i++) {
		if (buf[i] != '/' && buf[i] != '\0')
			continue;
		char c = buf[i];
		buf[i] = '\0';
		if (mkdir(buf, (mode_t)mode) != 0 && errno != EEXIST)
			return -1;
		buf[i] = c;
	}
	struct stat st;
	if (stat(dir, &st) != 0)
		return -1;
	if (!S_ISDIR(st.st_mode)) {
		errno = ENOTDIR;
		return -1;
	}
	return 0;
}

int mm_read_secret(const char *path, uint8_t sk[MSHARE_SK_BYTES])
{
	char err[512];
	struct stat st;
	if (stat(path, &st) == 0 && (st.st_mode & 077) != 0)
		mm_warn("%s can be read by other users (mode %03o); a secret key should be 0600",
			path, (unsigned)(st.st_mode & 0777));
	if (mshare_key_read(path, true, sk, err, sizeof err) != 0)
		return mm_fail("%s", err);
	return 0;
}

void mm_print_info(FILE *f, const struct mshare_info *in)
{
	char id[2 * MSHARE_ID_BYTES + 1], pk[2 * MSHARE_PK_BYTES + 1];
	const struct model_config *c = &in->config;
	fprintf(f, "file:         %s\n", in->name);
	fprintf(f, "format:       Mimir model share v%u (additive shares in Z_2^64)\n",
		in->version);
	fprintf(f, "model id:     %s\n", mshare_hex(in->model_id, MSHARE_ID_BYTES, id, sizeof id));
	fprintf(f, "party:        %u (of %u parties, numbered from 0)\n", in->party, in->nparties);
	fprintf(f, "fixed point:  %u fractional bits\n", in->frac_bits);
	fprintf(f, "sealed to:    %s\n", mshare_hex(in->recipient, MSHARE_PK_BYTES, pk, sizeof pk));
	fprintf(f,
		"model:        dim %d, hidden %d, layers %d, heads %d, kv heads %d, vocab %d, "
		"seq %d, %s classifier\n",
		c->dim, c->hidden_dim, c->n_layers, c->n_heads, c->n_kv_heads, c->vocab_size,
		c->seq_len, c->shared_classifier ? "shared" : "separate");
	fprintf(f, "shares:       %llu (%llu bytes)\n", (unsigned long long)in->total,
		(unsigned long long)in->total * 8);
	fprintf(f, "chunks:       %llu of %u bytes\n", (unsigned long long)in->chunks,
		in->chunk_bytes);
	fprintf(f, "file size:    %llu bytes\n", (unsigned long long)in->file_bytes);
	fprintf(f, "tensors:      %zu\n", in->ntensors);
	for (size_t i = 0; i < in->ntensors; i++) {
		const struct mshare_tensor *t = &in->tensors[i];
		fprintf(f, "  %-22s %4d x %6d x %6d  offset %10llu  count %10llu\n", t->name,
			t->layers, t->rows, t->cols, (unsigned long long)t->offset,
			(unsigned long long)t->count);
	}
}
