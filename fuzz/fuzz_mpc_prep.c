/* libFuzzer harness: the party-side parser of dealer payloads (prep_expand,
 * prep_expand_wide and prep_expand_mtriple), the bytes a party receives from the dealer service. The first
 * six input bytes choose the request (kind, parameter, count, matrix shape, party),
 * the rest is the payload (seeds: one real payload of version 3 per kind, look-up
 * masks of 3 and 8 bits included). A request the engine would never make is skipped, as the
 * engine checks it before asking. Whatever the payload, the parser must return an
 * error or fill exactly what was asked, and it may only accept a payload of exactly
 * the documented length. */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "mpc/mpc_impl.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	if (size < 6)
		return 0;
	struct mpc_prep_req req = {
	    .kind = (uint16_t)(data[0] % 10), /* 0 (none) .. MPC_PREP_MTRIPLE */
	    .param = data[1] % 70,
	    .n = 1u + data[2] % 32,
	    .rows = data[3] % 6,
	    .cols = data[4] % 6,
	};
	unsigned party = data[5] % 3;
	data += 6;
	size -= 6;
	if (!prep_req_valid(&req, 3))
		return 0;
	unsigned k = prep_shares_per_item(&req);
	struct prg g;
	uint8_t seed[MPC_SEED_BYTES] = {1};
	prg_init(&g, seed, prep_stream(&req));
	/* a copy of exactly size bytes, so that any over-read is caught by ASan */
	uint8_t *payload = malloc(size ? size : 1);
	mpc_share *out = calloc((size_t)req.n * k, sizeof *out);
	size_t wn = req.kind == MPC_PREP_MTRIPLE ? k : 3;
	mpc_wshare *wout = calloc((size_t)req.n * wn, sizeof *wout);
	ring64_t *clear = calloc(req.n, sizeof *clear);
	if (!payload || !out || !wout || !clear)
		abort();
	memcpy(payload, data, size);
	int rc;
	if (req.kind == MPC_PREP_TRIPLE)
		rc = prep_expand_wide(&g, party, &req, payload, size, wout);
	else if (req.kind == MPC_PREP_MTRIPLE)
		rc = prep_expand_mtriple(&g, party, &req, payload, size, wout);
	else
		rc = prep_expand(&g, party, &req, payload, size, out, clear);
	if (rc == 0 && mpc_prep_needs_payload(party, &req) &&
	    size != prep_payload_bytes(party, &req))
		abort(); /* accepted a payload of the wrong length */
	if (rc > 0)
		abort(); /* 0 or a negative ERR_* code */
	free(payload);
	free(out);
	free(wout);
	free(clear);
	return 0;
}
