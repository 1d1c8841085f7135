/* fuzz_attest_tdx: the TDX quote parser and verifier, and the collateral reader, on
 * arbitrary bytes. A quote that parses has a supported version and body; verification
 * (against the shipped Intel root, at the v4 sample's time) exercises the PEM reader,
 * the chain, both signatures and the PCK extension parser on mutated quotes; the same
 * bytes are offered as a collateral file (JSON, PEM or DER). Any violation aborts. */
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
	struct attest_tdx t;
	struct attest_error e;
	if (attest_tdx_parse(data, size, &t, &e) == 0) {
		if ((t.version != 4 && t.version != 5) || t.tee_type != 0x81 ||
		    t.att_key_type != 2 || (t.body_type != 2 && t.body_type != 3) ||
		    t.has_td15 != (t.body_type == 3))
			abort();
	} else if (e.code == 0) {
		abort();
	}
	static struct attest_claims c;
	int rc = attest_tdx_verify(roots, data, size, NULL, 1750377600, &c, &e);
	if (rc == 0 && (c.platform != IDENT_PLATFORM_TDX || c.measurement_len != 48))
		abort();
	struct attest_tdx_collateral *col = NULL;
	if (attest_tdx_collateral_new(&col) == 0) {
		(void)attest_tdx_collateral_add(col, data, size, &e);
		attest_tdx_collateral_free(col);
	}
	return 0;
}
