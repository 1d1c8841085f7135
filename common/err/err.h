/* err: the one error registry of Mimir.
 *
 * Library functions return 0 on success or a negative ERR_* code from this enum. Each
 * code carries a stable slug (used in problem+json "type" URIs and metrics labels), a
 * human title and the HTTP status a service answers with when the code reaches the
 * edge. HTTP errors are RFC 9457 problem details built by err_problem(). */
#ifndef MIMIR_ERR_H
#define MIMIR_ERR_H

#include <jansson.h>

/* X(name, value, slug, http status, title) */
#define ERR_LIST(X)                                                                        \
	X(OK, 0, "ok", 200, "OK")                                                             \
	X(NOMEM, -1, "out-of-memory", 503, "Out of memory")                                   \
	X(INVALID, -2, "invalid-argument", 400, "Invalid argument")                           \
	X(PARSE, -3, "malformed", 400, "Malformed input")                                     \
	X(TYPE, -4, "wrong-type", 400, "Wrong type")                                          \
	X(RANGE, -5, "out-of-range", 400, "Value out of range")                               \
	X(MISSING, -6, "missing-field", 400, "Missing field")                                 \
	X(UNKNOWN_FIELD, -7, "unknown-field", 400, "Unknown field")                           \
	X(TOO_LARGE, -8, "too-large", 413, "Payload too large")                               \
	X(NOT_FOUND, -9, "not-found", 404, "Not found")                                       \
	X(METHOD, -10, "method-not-allowed", 405, "Method not allowed")                       \
	X(CONFLICT, -11, "conflict", 409, "Conflict")                                         \
	X(UNAUTHENTICATED, -12, "unauthenticated", 401, "Authentication required")            \
	X(FORBIDDEN, -13, "forbidden", 403, "Forbidden")                                      \
	X(TIMEOUT, -14, "timeout", 504, "Timed out")                                          \
	X(IO, -15, "io", 500, "I/O error")                                                    \
	X(TLS, -16, "tls", 502, "TLS failure")                                                \
	X(CRYPTO, -17, "crypto", 500, "Cryptographic failure")                                \
	X(MAC_CHECK, -18, "mac-check-failed", 502, "MAC check failed")                        \
	X(PROTOCOL, -19, "protocol-violation", 502, "Peer violated the protocol")             \
	X(ABORTED, -20, "aborted", 502, "Computation aborted")                                \
	X(UNAVAILABLE, -21, "unavailable", 503, "Service unavailable")                        \
	X(RATE_LIMITED, -22, "rate-limited", 429, "Too many requests")                        \
	X(CANCELLED, -23, "cancelled", 499, "Cancelled")                                      \
	X(UNSUPPORTED, -24, "unsupported", 415, "Unsupported")                                \
	X(DB, -25, "database", 500, "Database error")                                         \
	X(ATTESTATION, -26, "attestation-failed", 403, "Attestation failed")                  \
	X(CONFIG, -27, "bad-config", 500, "Bad configuration")                                \
	X(UPSTREAM, -28, "upstream", 502, "Upstream service failed")                          \
	X(INTERNAL, -29, "internal", 500, "Internal error")

enum err_code {
#define ERR_ENUM(name, val, slug, status, title) ERR_##name = (val),
	ERR_LIST(ERR_ENUM)
#undef ERR_ENUM
};

/* Every lookup accepts any int: unknown codes map to ERR_INTERNAL's entry. */
const char *err_slug(int code);
const char *err_title(int code);
int err_http_status(int code);
/* "urn:mimir:problem:<slug>", the problem type URI (documented in docs/ERRORS.md). */
const char *err_type_uri(int code);

/* RFC 9457 problem details: {type, title, status, detail, field?, request_id?}.
 * detail may be NULL (the title is used); field names the offending input (dotted path
 * for nested JSON, e.g. "options.top_k"), NULL when no single field is at fault.
 * Returns a new reference (caller owns) or NULL on allocation failure. */
json_t *err_problem(int code, const char *detail, const char *field, const char *request_id);

/* Same with an explicit HTTP status (for statuses with no registry code, e.g. 404 of a
 * route vs. a missing object, both NOT_FOUND). */
json_t *err_problem_status(int code, int status, const char *detail, const char *field,
			   const char *request_id);

#endif
