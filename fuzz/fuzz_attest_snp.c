/* fuzz_attest_snp: the SEV-SNP report parser and verifier on arbitrary bytes. Whatever
 * parses must satisfy the invariants the parser promises (a known version, the
 * version's optional fields present exactly when they exist, reserved policy bits
 * clear); full verification runs against the real Milan VCEK and ASK from ../shared
 * when they are there, so the signature and certificate paths see the mutated reports
 * too. Any violation aborts. */
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "attest/attest.h"

static struct attest_roots *roots;
static uint8_t *vcek, *ask;
static size_t vcek_len, ask_len;

static uint8_t *slurp(const char *rel, size_t *len)
{
	const char *base = getenv("MIMIR_SHARED");
	char path[1024];
	snprintf(path, sizeof path, "%s/%s", base ? base : "../shared", rel);
	FILE *f = fopen(path, "rb");
	if (!f)
		return NULL;
	uint8_t *buf = malloc(65536);
	*len = buf ? fread(buf, 1, 65536, f) : 0;
	fclose(f);
	return buf;
}

int LLVMFuzzerInitialize(int *argc, char ***argv)
{
	(void)argc;
	(void)argv;
	if (attest_roots_load_dir(&roots, ATTEST_ROOTS_DEFAULT_DIR, 0) != 0)
		roots = NULL;
	vcek = slurp("vectors/attest/snp/milan-v2/vcek.der", &vcek_len);
	ask = slurp("vectors/attest/snp/milan-v2/ask_milan.pem", &ask_len);
	return 0;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	struct attest_snp s;
	struct attest_error e;
	if (attest_snp_parse(data, size, &s, &e) == 0) {
		if (size != 1184 || s.version < 2 || s.version > 5 ||
		    s.has_cpuid != (s.version >= 3) || s.has_mit_vectors != (s.version >= 5) ||
		    !(s.policy & ATTEST_SNP_POLICY_RESERVED1) || (s.policy >> 26) ||
		    s.signature_algo != 1)
			abort();
	} else if (e.code == 0 || !memchr(e.reason, 0, sizeof e.reason)) {
		abort();
	}
	if (vcek && ask) {
		static struct attest_claims c;
		int rc = attest_snp_verify(roots, data, size, vcek, vcek_len, ask, ask_len,
					   1704067200, &c, &e);
		if (rc == 0 && (c.platform != IDENT_PLATFORM_SEV_SNP || c.measurement_len != 48))
			abort();
	}
	return 0;
}
