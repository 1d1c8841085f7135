/* libFuzzer harness: the MPC round payload header, which arrives from peers. A decoded
 * header must re-encode to the same 48 bytes and describe exactly the bytes given. */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "mnet/mnet.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	struct mnet_hdr h;
	if (mnet_hdr_decode(data, size, &h) != 0)
		return 0;
	uint8_t again[MNET_HDR_LEN];
	mnet_hdr_encode(&h, again);
	if (memcmp(again, data, MNET_HDR_LEN) != 0 || (size_t)h.length + MNET_HDR_LEN != size ||
	    h.sender == h.receiver)
		abort();
	return 0;
}
