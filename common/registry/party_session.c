/* registry: the parties' name of a registry session (reg_party_session_id, documented
 * in registry.h). It lives beside the registry because the registry owns the ids it
 * maps; it touches no database, so the gateway and the client CLI call it too. */
#include <string.h>

#include <sodium.h>

#include "err/err.h"
#include "registry/registry.h"

#define PARTY_SESSION_DOMAIN "mimir.party-session.v1"

int reg_party_session_id(const char *ses_id, char out[REG_PARTY_SESSION_HEX + 1])
{
	if (!out)
		return ERR_INVALID;
	out[0] = '\0';
	if (!reg_id_ok(ses_id, "ses_"))
		return ERR_INVALID;
	uint8_t h[crypto_hash_sha256_BYTES];
	crypto_hash_sha256_state st;
	crypto_hash_sha256_init(&st);
	crypto_hash_sha256_update(&st, (const uint8_t *)PARTY_SESSION_DOMAIN, sizeof PARTY_SESSION_DOMAIN - 1);
	crypto_hash_sha256_update(&st, (const uint8_t *)ses_id, strlen(ses_id));
	crypto_hash_sha256_final(&st, h);
	sodium_bin2hex(out, REG_PARTY_SESSION_HEX + 1, h, REG_PARTY_SESSION_HEX / 2);
	return 0;
}
