/* mimir-model inspect and open. `inspect` reads only the clear header, which anyone may
 * read, and checks it and the file size; it cannot tell a forged header from a genuine
 * one. `open` does what a party does at start-up: unseals the file key with the party's
 * secret key and authenticates every chunk to the end, then prints the header and the
 * file digest. Neither prints a share. */
#include <getopt.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <sodium.h>

#include "mm.h"

static void usage_inspect(FILE *f)
{
	fputs("Usage: " MM_PROG " inspect FILE\n"
	      "\n"
	      "Prints the clear header of a share file (party, model id, fixed point, model\n"
	      "config, tensor table) after checking it and the file size. No key is needed,\n"
	      "and nothing is authenticated: use 'open' for that.\n",
	      f);
}

static void usage_open(FILE *f)
{
	fputs("Usage: " MM_PROG " open --key KEY FILE\n"
	      "\n"
	      "Verifies a share file with its party's secret key: unseals the file key and\n"
	      "authenticates the header and every chunk up to the final one, then prints the\n"
	      "header and the file's BLAKE2b-256 digest. Shares are never printed.\n"
	      "\n"
	      "  --key KEY    the party's secret key file (NAME.x25519.key)\n"
	      "  -h, --help   this text\n",
	      f);
}

int cmd_inspect(int argc, char **argv)
{
	if (argc == 2 && (strcmp(argv[1], "--help") == 0 || strcmp(argv[1], "-h") == 0)) {
		usage_inspect(stdout);
		return MM_EXIT_OK;
	}
	if (argc != 2 || argv[1][0] == '-')
		return mm_usage_error("inspect", "expected exactly one FILE");
	struct mshare_info in;
	char err[512];
	if (mshare_inspect(argv[1], &in, err, sizeof err) != 0)
		return mm_fail("%s", err);
	mm_print_info(stdout, &in);
	printf("header:       checksum ok, size ok (not authenticated without the key)\n");
	return fflush(stdout) == 0 ? MM_EXIT_OK : MM_EXIT_RUNTIME;
}

int cmd_open(int argc, char **argv)
{
	const char *key = NULL;
	static const struct option lo[] = {{"key", required_argument, NULL, 'k'},
					   {"help", no_argument, NULL, 'h'},
					   {NULL, 0, NULL, 0}};
	opterr = 0;
	int c;
	while ((c = getopt_long(argc, argv, ":h", lo, NULL)) != -1) {
		switch (c) {
		case 'k': key = optarg; break;
		case 'h': usage_open(stdout); return MM_EXIT_OK;
		case ':': return mm_usage_error("open", "%s needs a value", argv[optind - 1]);
		default: return mm_usage_error("open", "unknown option %s", argv[optind - 1]);
		}
	}
	if (!key)
		return mm_usage_error("open", "--key is required");
	if (argc - optind != 1)
		return mm_usage_error("open", "expected exactly one FILE");
	const char *path = argv[optind];

	uint8_t sk[MSHARE_SK_BYTES];
	char err[512];
	int status = MM_EXIT_RUNTIME;
	struct mshare_reader *r = NULL;
	enum { BLOCK = 8192 };
	ring64_t *buf = malloc(BLOCK * sizeof *buf);
	if (!buf) {
		mm_fail("out of memory");
		goto out;
	}
	if (mm_read_secret(key, sk) != 0)
		goto out;
	if (mshare_open(path, sk, &r, err, sizeof err) != 0) {
		mm_fail("%s", err);
		goto out;
	}
	const struct mshare_info *in = mshare_reader_info(r);
	for (uint64_t left = in->total; left > 0;) {
		size_t n = left < BLOCK ? (size_t)left : BLOCK;
		if (mshare_read(r, buf, n, err, sizeof err) != 0) {
			mm_fail("%s", err);
			goto out;
		}
		left -= n;
	}
	uint8_t d[MSHARE_DIGEST_BYTES];
	char hex[2 * MSHARE_DIGEST_BYTES + 1];
	if (mshare_reader_digest(r, d) != 0) {
		mm_fail("%s: the stream did not end where the header says", path);
		goto out;
	}
	mm_print_info(stdout, in);
	printf("verified:     the key unseals the file key; the header and all %llu chunks "
	       "authenticate, the last is final\n",
	       (unsigned long long)in->chunks);
	printf("file digest:  %s\n", mshare_hex(d, sizeof d, hex, sizeof hex));
	status = fflush(stdout) == 0 ? MM_EXIT_OK : MM_EXIT_RUNTIME;
out:
	if (buf) {
		sodium_memzero(buf, BLOCK * sizeof *buf);
		free(buf);
	}
	mshare_reader_free(r);
	sodium_memzero(sk, sizeof sk);
	return status;
}
