/* fuzz_attest_nitro: the COSE_Sign1 / CBOR attestation document parser and verifier on
 * arbitrary bytes. A document that parses keeps every bound (PCR indices and sizes,
 * data lengths, a NUL-terminated module id, PCR0-2 present); verification against the
 * shipped AWS root at the production sample's time exercises the signature and chain
 * paths on mutated documents. Any violation aborts. */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "attest/attest.h"

static struct attest_roots *roots;

int LLVMFuzzerInitialize(int *argc, char ***argv)
{
	(void)argc;
	(void)argv;
	if (attest_roots_load_dir(&roots, ATTEST_ROOTS_DEFAULT_DIR, 0) != 0)
		roots = NULL;
	return 0;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	static struct attest_nitro n;
	struct attest_error e;
	if (attest_nitro_parse(data, size, &n, &e) == 0) {
		if (!memchr(n.module_id, 0, sizeof n.module_id) || !n.module_id[0] ||
		    n.user_data_len > ATTEST_NITRO_DATA_MAX || n.nonce_len > ATTEST_NITRO_DATA_MAX ||
		    n.public_key_len > ATTEST_NITRO_DATA_MAX || (n.pcr_present & 7u) != 7u ||
		    n.n_cabundle == 0 || n.timestamp_ms == 0 || strcmp(n.digest, "SHA384") != 0)
			abort();
	} else if (e.code == 0) {
		abort();
	}
	static struct attest_claims c;
	int rc = attest_nitro_verify(roots, data, size, 1725721200, &c, &e);
	if (rc == 0 && (c.platform != IDENT_PLATFORM_NITRO || !c.has_time))
		abort();
	return 0;
}
