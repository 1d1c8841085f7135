/* mimir-model keygen: a party's X25519 key pair, the key its share file is sealed to.
 * The secret key file is created with mode 0600 (never readable by others, not even
 * briefly), neither file ever replaces an existing one, and the secret key is wiped from
 * memory once written. */
#include <errno.h>
#include <getopt.h>
#include <stdio.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include <sodium.h>

#include "mm.h"

static void usage(FILE *f)
{
	fputs("Usage: " MM_PROG " keygen --out DIR --name NAME\n"
	      "\n"
	      "Creates a party's X25519 key pair for share files:\n"
	      "  DIR/NAME.x25519.key  the secret key (mode 0600; stays with the party)\n"
	      "  DIR/NAME.x25519.pub  the public key (give it to the model owner for --to)\n"
	      "DIR is created (mode 0700) when missing. Existing files are never replaced.\n"
	      "\n"
	      "  --out DIR     output directory\n"
	      "  --name NAME   file name stem: letters, digits, '.', '_' and '-', at most 64\n"
	      "  -h, --help    this text\n",
	      f);
}

static bool good_name(const char *s)
{
	size_t n = strlen(s);
	if (n == 0 || n > 64 || s[0] == '.' || s[0] == '-')
		return false;
	for (size_t i = 0; i < n; i++) {
		char c = s[i];
		if (!((c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') ||
		      c == '.' || c == '_' || c == '-'))
			return false;
	}
	return true;
}

int cmd_keygen(int argc, char **argv)
{
	const char *out = NULL, *name = NULL;
	static const struct option lo[] = {{"out", required_argument, NULL, 'o'},
					   {"name", required_argument, NULL, 'n'},
					   {"help", no_argument, NULL, 'h'},
					   {NULL, 0, NULL, 0}};
	opterr = 0;
	int c;
	while ((c = getopt_long(argc, argv, ":h", lo, NULL)) != -1) {
		switch (c) {
		case 'o': out = optarg; break;
		case 'n': name = optarg; break;
		case 'h': usage(stdout); return MM_EXIT_OK;
		case ':': return mm_usage_error("keygen", "%s needs a value", argv[optind - 1]);
		default: return mm_usage_error("keygen", "unknown option %s", argv[optind - 1]);
		}
	}
	if (optind < argc)
		return mm_usage_error("keygen", "unexpected argument '%s'", argv[optind]);
	if (!out || !name)
		return mm_usage_error("keygen", "--out and --name are required");
	if (!good_name(name))
		return mm_usage_error("keygen",
				      "--name '%s': use letters, digits, '.', '_' and '-' (at "
				      "most 64, not starting with '.' or '-')",
				      name);

	char keyp[MM_PATH_MAX], pubp[MM_PATH_MAX];
	if ((size_t)snprintf(keyp, sizeof keyp, "%s/%s.x25519.key", out, name) >= sizeof keyp ||
	    (size_t)snprintf(pubp, sizeof pubp, "%s/%s.x25519.pub", out, name) >= sizeof pubp)
		return mm_usage_error("keygen", "--out: path too long");
	if (mm_mkdir_p(out, 0700) != 0)
		return mm_fail("cannot create the directory %s: %s", out, strerror(errno));
	struct stat st;
	if (lstat(keyp, &st) == 0)
		return mm_fail("%s already exists; refusing to overwrite it", keyp);
	if (lstat(pubp, &st) == 0)
		return mm_fail("%s already exists; refusing to overwrite it", pubp);

	uint8_t pk[MSHARE_PK_BYTES], sk[MSHARE_SK_BYTES];
	char err[512], hex[2 * MSHARE_PK_BYTES + 1];
	int status = MM_EXIT_RUNTIME;
	if (mshare_keypair(pk, sk) != 0) {
		mm_fail("cannot generate a key pair");
		goto out;
	}
	if (mshare_key_write(keyp, sk, true, err, sizeof err) != 0) {
		mm_fail("%s", err);
		goto out;
	}
	if (mshare_key_write(pubp, pk, false, err, sizeof err) != 0) {
		unlink(keyp); /* no secret key without its public half */
		mm_fail("%s", err);
		goto out;
	}
	printf("secret key:  %s (mode 0600; keep it with the party)\n", keyp);
	printf("public key:  %s\n", pubp);
	printf("X25519:      %s\n", mshare_hex(pk, sizeof pk, hex, sizeof hex));
	status = fflush(stdout) == 0 ? MM_EXIT_OK : MM_EXIT_RUNTIME;
out:
	sodium_memzero(sk, sizeof sk);
	return status;
}
