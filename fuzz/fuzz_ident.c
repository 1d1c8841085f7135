/* fuzz_ident: the two parsers of peer bytes in common/ident. ident_ext_decode must
 * accept only canonical DER, so whatever it accepts must encode back to exactly the
 * input; ident_from_der must return an identity within its documented bounds. Any
 * violation aborts, which libFuzzer reports as a crash. */
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "ident/ident.h"

static void check_ext(const uint8_t *data, size_t size)
{
	struct ident_ext e;
	if (ident_ext_decode(data, size, &e) != 0)
		return;
	uint8_t buf[IDENT_EXT_DER_MAX];
	size_t len = 0;
	if (ident_ext_encode(&e, buf, sizeof buf, &len) != 0 || len != size ||
	    memcmp(buf, data, size) != 0)
		abort();
}

static void check_cert(const uint8_t *data, size_t size)
{
	struct ident id;
	if (ident_from_der(data, size, &id) != 0)
		return;
	if (id.n_dns > IDENT_MAX_DNS || id.n_ip > IDENT_MAX_IP ||
	    id.measurement_len > IDENT_MEASUREMENT_MAX || !memchr(id.cn, 0, sizeof id.cn) ||
	    !memchr(id.serial, 0, sizeof id.serial) || id.has_extension != (id.role != IDENT_ROLE_NONE))
		abort();
	for (size_t i = 0; i < id.n_dns; i++)
		if (!memchr(id.dns[i], 0, sizeof id.dns[i]) || !id.dns[i][0])
			abort();
	for (size_t i = 0; i < id.n_ip; i++)
		if (!memchr(id.ip[i], 0, sizeof id.ip[i]))
			abort();
	/* A certificate that parses re-parses to the same identity. */
	struct ident again;
	if (ident_from_der(data, size, &again) != 0 || memcmp(&id, &again, sizeof id) != 0)
		abort();
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	check_ext(data, size);
	check_cert(data, size);
	return 0;
}
