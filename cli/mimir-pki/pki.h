/* mimir-pki internals: the commands, their shared option parsing and the file
 * handling (private keys created 0600 from the start, never overwritten without
 * --force, wiped from memory). */
#ifndef MIMIR_PKI_H
#define MIMIR_PKI_H

#include <openssl/types.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

/* Exit statuses: 0 done, 1 the work failed, 2 the command line is wrong. */
enum { PKI_EXIT_OK = 0, PKI_EXIT_RUNTIME = 1, PKI_EXIT_USAGE = 2 };

#define PKI_PATH_MAX 4096
#define PKI_DEFAULT_CA_CN "Mimir Development CA"
#define PKI_DEFAULT_CA_DAYS 3650
#define PKI_DEFAULT_LEAF_DAYS 365
#define PKI_MAX_DAYS 36500
/* Certificates start this long before "now" so that peers with slightly slow clocks
 * accept them at once. */
#define PKI_BACKDATE_SECS 300
/* Latest time X.509 can express (9999-12-31T23:59:59Z). */
#define PKI_TIME_MAX 253402300799LL

int cmd_ca(int argc, char **argv);
int cmd_issue(int argc, char **argv);
int cmd_dev(int argc, char **argv);
int cmd_show(int argc, char **argv);

/* "mimir-pki: <message>" on stderr; runtime errors return PKI_EXIT_RUNTIME. */
int pki_fail(const char *fmt, ...) __attribute__((format(printf, 1, 2)));
/* Same, plus a pointer to the command's --help; returns PKI_EXIT_USAGE. */
int pki_usage(const char *cmd, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
void pki_warn(const char *fmt, ...) __attribute__((format(printf, 1, 2)));

/* Argument parsing; false on anything but a whole number in [min, max]. */
bool pki_parse_i64(const char *s, int64_t min, int64_t max, int64_t *out);
/* A NAME fit for a file name and a CN: [A-Za-z0-9._-], 1..64, not starting with
 * '.' or '-'. */
bool pki_name_ok(const char *s);
bool pki_ip_ok(const char *s);
/* Even-length hex of at most max bytes into out. */
bool pki_parse_hex(const char *s, uint8_t *out, size_t max, size_t *len);

/* "dir/name" into buf; false when it does not fit. */
bool pki_path(char *buf, size_t cap, const char *dir, const char *name);
/* Creates dir and missing parents (0755). 0 or -1 with errno. */
int pki_mkdir_p(const char *dir);
/* 0 when path does not exist (or force); otherwise prints why and returns -1. */
int pki_check_absent(const char *path, bool force);
/* PEM files, created with O_CREAT|O_EXCL|O_NOFOLLOW (after unlinking an old file when
 * force) so a key is 0600 from its first byte; a failed write removes the file. Print
 * their own error and return -1. */
int pki_write_key(const char *path, EVP_PKEY *key, bool force);
int pki_write_cert(const char *path, X509 *x, bool force);
/* Loads DIR/ca.crt and DIR/ca.key and checks they belong together. */
int pki_load_ca(const char *dir, X509 **cert, EVP_PKEY **key);
/* A certificate file, PEM or DER, as DER (caller frees with free()). */
int pki_read_cert_der(const char *path, uint8_t **der, size_t *len);

#endif
