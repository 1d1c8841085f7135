/* ident internals shared by the files of the module (not a public header: other
 * modules include "ident/ident.h" only). */
#ifndef MIMIR_IDENT_INT_H
#define MIMIR_IDENT_INT_H

#include <openssl/x509.h>

#include "ident/ident.h"

/* The extension's OID as a complete DER TLV (06 0b 69 95 ...). */
extern const unsigned char ident_oid_der[13];

/* Finds the Mimir extension: 0 and *out NULL when absent, 0 and *out set when present
 * once, ERR_PARSE when present more than once (RFC 5280 4.2). */
int ident_ext_find(const X509 *x, X509_EXTENSION **out);

/* An X.509 time as unix seconds; ERR_PARSE when it is not a valid time. */
int ident_time_unix(const ASN1_TIME *t, int64_t *out);

#endif
