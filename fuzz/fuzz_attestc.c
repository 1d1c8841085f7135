/* libFuzzer harness: the two readers of bytes attestc takes from outside the process,
 * the SEV-SNP certificate table a host hands the guest (auxblob) and the Nitro Secure
 * Module's CBOR response. The first input byte picks the reader. Invariants: a table
 * that parses yields at most ATTESTC_CERTS_MAX certificates, each non-empty and lying
 * wholly inside the input; a response that parses points at a non-empty document that
 * ends exactly at the end of the input. */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "attestc/attestc.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	if (size < 1)
		return 0;
	const uint8_t *p = data + 1;
	size_t n = size - 1;
	if (data[0] & 1) {
		struct attestc_evidence ev = {0};
		if (attestc_snp_cert_table(p, n, &ev) == 0) {
			if (ev.n_certs > ATTESTC_CERTS_MAX)
				abort();
			for (size_t i = 0; i < ev.n_certs; i++)
				if (ev.certs[i].len == 0 || ev.certs[i].len > n)
					abort();
		}
		attestc_evidence_free(&ev);
	} else {
		const uint8_t *doc = NULL;
		size_t dlen = 0;
		struct attestc_error err;
		if (attestc_nsm_response(p, n, &doc, &dlen, &err) == 0 &&
		    (dlen == 0 || doc < p || doc + dlen != p + n))
			abort();
	}
	return 0;
}
