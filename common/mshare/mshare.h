/* mshare: model share files, the form in which a party receives its part of the weights.
 *
 * A model owner splits a checkpoint into N files (mshare_split): every weight is encoded
 * to signed fixed point in Z_2^64 with f fractional bits and split into N additive
 * shares; parties 0..N-2 receive uniformly random values, party N-1 the difference, so
 * any N-1 files are independent of the weights. Each file carries a clear header (format
 * version, party index, N, f, the checkpoint's config header, the tensor table, a random
 * model id common to the N files of one split, the recipient's public key, a checksum),
 * then a random file key sealed to the party's X25519 key (crypto_box_seal), then the
 * shares encrypted in chunks with crypto_secretstream_xchacha20poly1305; every byte before
 * the first chunk is that chunk's additional data and the last chunk is tagged FINAL, so
 * a changed header, a reordered, altered or missing chunk and a truncation are all
 * refused. The byte layout is in docs/SHARES.md.
 *
 * A party opens its file with its secret key (mshare_open) and streams its shares tensor
 * by tensor, or loads them all (mshare_load); no plaintext weight exists on its side.
 * Readers check everything an outside file claims (lengths against the real size, the
 * table against the config) before they allocate: the largest allocation is one chunk,
 * or the payload of a file whose size has been checked. Share and key buffers are wiped.
 *
 * Errors: functions return 0 or a negative ERR_* (err/err.h) and, when err is not NULL,
 * write a one-line message naming the file and the fault into err[0..errcap):
 *   ERR_PARSE (malformed, truncated, checksum), ERR_RANGE (a field or weight out of
 *   range), ERR_UNSUPPORTED (another format version), ERR_FORBIDDEN (sealed to another
 *   key), ERR_CRYPTO (the key does not unseal, a chunk does not authenticate), ERR_CONFLICT
 *   (files of different splits, an output that exists), ERR_IO / ERR_NOT_FOUND,
 *   ERR_INVALID (a bad argument), ERR_NOMEM. */
#ifndef MIMIR_MSHARE_H
#define MIMIR_MSHARE_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "model/model.h"
#include "ring/ring.h"

#define MSHARE_VERSION 1
#define MSHARE_SCHEME_ADDITIVE64 1 /* additive shares of fixed point in Z_2^64 */
#define MSHARE_MAGIC "MIMIRSHR"    /* 8 bytes, no terminator in the file */

#define MSHARE_PK_BYTES 32 /* X25519 public key */
#define MSHARE_SK_BYTES 32 /* X25519 secret key */
#define MSHARE_ID_BYTES 16 /* model id of one split */
#define MSHARE_DIGEST_BYTES 32
#define MSHARE_NAME_BYTES 32 /* tensor name field, NUL padded */

/* The engine's limit (MPC_MAX_PARTIES); a unit test ties the two together. */
#define MSHARE_MIN_PARTIES 2
#define MSHARE_MAX_PARTIES 16
/* Both checkpoint layouts have at most MODEL_T_COUNT tensors; the parser bound. */
#define MSHARE_MAX_TENSORS MODEL_T_COUNT

/* Plaintext bytes per encrypted chunk: a multiple of 8 so no share straddles two chunks.
 * A reader holds one chunk, so the maximum bounds its memory. */
#define MSHARE_CHUNK_MIN 64u
#define MSHARE_CHUNK_MAX (16u << 20)
#define MSHARE_CHUNK_DEFAULT (1u << 20)

/* Layout sizes (docs/SHARES.md). */
#define MSHARE_FIXED_BYTES 120 /* header before the tensor table */
#define MSHARE_ENTRY_BYTES 64  /* one tensor table entry */
#define MSHARE_HEADER_MAX (MSHARE_FIXED_BYTES + MSHARE_MAX_TENSORS * MSHARE_ENTRY_BYTES + 32)
#define MSHARE_SEALED_KEY_BYTES 80 /* crypto_box_SEALBYTES + the 32-byte file key */
#define MSHARE_STREAM_HEADER_BYTES 24
#define MSHARE_CHUNK_OVERHEAD 17 /* secretstream tag and MAC per chunk */

struct mshare_tensor {
	char name[MSHARE_NAME_BYTES]; /* NUL terminated */
	enum model_tensor_id id;
	int layers, rows, cols;
	uint64_t offset; /* in shares from the start of the payload */
	uint64_t count;  /* layers * rows * cols */
};

/* Everything the clear header says, validated. */
struct mshare_info {
	char name[256]; /* the file name used in messages (truncated) */
	unsigned version, party, nparties, frac_bits;
	uint32_t chunk_bytes;
	uint8_t model_id[MSHARE_ID_BYTES];
	uint8_t recipient[MSHARE_PK_BYTES];
	uint8_t config_raw[MODEL_HEADER_BYTES]; /* the checkpoint header, verbatim */
	struct model_config config;
	size_t ntensors;
	struct mshare_tensor tensors[MSHARE_MAX_TENSORS];
	uint64_t total;       /* shares in the payload */
	uint64_t chunks;      /* encrypted chunks */
	uint32_t header_bytes; /* the clear header, checksum included */
	uint64_t file_bytes;  /* the exact size the header implies */
};

/* ---- keys ---------------------------------------------------------------------------- */

/* A fresh X25519 key pair (crypto_box_keypair). */
int mshare_keypair(uint8_t pk[MSHARE_PK_BYTES], uint8_t sk[MSHARE_SK_BYTES]);
/* The public key of a secret key (crypto_scalarmult_base). */
int mshare_public_from_secret(const uint8_t sk[MSHARE_SK_BYTES], uint8_t pk[MSHARE_PK_BYTES]);

/* Text form of a key: a PEM-like armour ("-----BEGIN MIMIR X25519 PUBLIC KEY-----" or
 * "... SECRET KEY-----") around the key in lowercase hex, newline terminated. */
#define MSHARE_KEY_TEXT_MAX 160
int mshare_key_format(const uint8_t key[32], bool secret, char *buf, size_t cap);
/* Parses a key of the kind asked for; the other kind is refused with a message saying
 * so (a secret key given where a public one belongs must never end up in a header).
 * Surrounding blank lines, trailing blanks and CRLF are accepted; nothing else. */
int mshare_key_parse(const char *text, size_t len, bool secret, uint8_t key[32],
		     const char *name, char *err, size_t errcap);
/* Reads and parses a key file (at most 4 KiB; the read buffer is wiped). */
int mshare_key_read(const char *path, bool secret, uint8_t key[32], char *err, size_t errcap);
/* Writes a key file: created exclusively, never through a symbolic link, with its final
 * mode from the start (0600 secret, 0644 public). ERR_CONFLICT if path exists. */
int mshare_key_write(const char *path, const uint8_t key[32], bool secret, char *err,
		     size_t errcap);

/* ---- the header ---------------------------------------------------------------------- */

/* Parses and validates the clear header in buf[0..len) of a file of file_size bytes:
 * magic, version, scheme, ranges, checksum, config (model_config_parse), the table
 * against the config, and file_size against the size the header implies. len may cover
 * more than the header. name prefixes messages. No key needed, nothing authenticated:
 * the header is authenticated only when the first chunk is decrypted (mshare_open). */
int mshare_parse_header(const void *buf, size_t len, uint64_t file_size, const char *name,
			struct mshare_info *out, char *err, size_t errcap);
/* Reads a file's header and checks its size (mshare_parse_header on the file). */
int mshare_inspect(const char *path, struct mshare_info *out, char *err, size_t errcap);

/* The tensor table a config implies: the tensors in checkpoint order, the classifier
 * omitted when it shares the embedding. *n receives the count. */
void mshare_table(const struct model_config *c, struct mshare_tensor out[MSHARE_MAX_TENSORS],
		  size_t *n);

/* Checks that n files form one whole split: n == N, the same model id, N, f, chunk size
 * and config, and every party index exactly once. ERR_CONFLICT with a message naming the
 * two files that disagree. */
int mshare_same_split(const struct mshare_info *const *infos, size_t n, char *err,
		      size_t errcap);

/* Lowercase hex of bytes into buf (2 * n + 1 bytes). Returns buf. */
const char *mshare_hex(const uint8_t *bytes, size_t n, char *buf, size_t cap);

/* ---- splitting ----------------------------------------------------------------------- */

/* done / total shares of one party have been written (called once per chunk). */
typedef void (*mshare_progress_fn)(void *ctx, uint64_t done, uint64_t total);

struct mshare_split_opts {
	unsigned nparties;  /* MSHARE_MIN_PARTIES..MSHARE_MAX_PARTIES */
	unsigned frac_bits; /* RING_FXP_MIN_F..RING_FXP_MAX_F */
	uint32_t chunk_bytes; /* 0: MSHARE_CHUNK_DEFAULT */
	const uint8_t (*recipients)[MSHARE_PK_BYTES]; /* nparties distinct public keys */
	const char *const *paths;                     /* nparties output files */
	mshare_progress_fn progress;                  /* may be NULL */
	void *progress_ctx;
};

struct mshare_split_result {
	uint8_t model_id[MSHARE_ID_BYTES];
	uint64_t file_bytes; /* each file's size */
	/* BLAKE2b-256 of each whole file, for a registry to pin. */
	uint8_t file_digest[MSHARE_MAX_PARTIES][MSHARE_DIGEST_BYTES];
	/* BLAKE2b-256 of the fixed-point encoding (the payload's plaintext sum, little-endian
	 * 64-bit values in payload order): what a combine of the N files must reproduce. */
	uint8_t weights_digest[MSHARE_DIGEST_BYTES];
};

/* Splits m into nparties share files. Every weight is checked first: one that
 * saturates the fixed-point range is refused (ERR_RANGE, naming tensor and index) before
 * any file is created. Files are written under temporary names and linked to their
 * paths only when all are complete, so a failure leaves no file behind and an existing
 * path is never replaced (ERR_CONFLICT). Output files have mode 0600. */
int mshare_split(const struct model *m, const struct mshare_split_opts *o,
		 struct mshare_split_result *res, char *err, size_t errcap);

/* ---- reading ------------------------------------------------------------------------- */

struct mshare_reader; /* opaque: an open share file being streamed */

/* Opens a share file with the party's secret key: parses the header, checks the file
 * size, unseals the file key and decrypts the first chunk, which authenticates the
 * header. ERR_FORBIDDEN when the file is sealed to another public key. */
int mshare_open(const char *path, const uint8_t sk[MSHARE_SK_BYTES], struct mshare_reader **out,
		char *err, size_t errcap);
/* The same over a memory image (not copied: buf must outlive the reader). */
int mshare_open_mem(const void *buf, size_t len, const char *name,
		    const uint8_t sk[MSHARE_SK_BYTES], struct mshare_reader **out, char *err,
		    size_t errcap);
const struct mshare_info *mshare_reader_info(const struct mshare_reader *r);
/* The next n shares of the payload. Every share returned comes from a chunk that has
 * authenticated; the read that reaches the end also checks the FINAL tag and that
 * nothing follows. After any failure the reader refuses every further read. */
int mshare_read(struct mshare_reader *r, ring64_t *out, size_t n, char *err, size_t errcap);
/* The shares of table entry index, which must be the next tensor in table order (the
 * file is a stream), into out[0..count) with cap >= count. */
int mshare_read_tensor(struct mshare_reader *r, size_t index, ring64_t *out, size_t cap,
		       char *err, size_t errcap);
/* true once every share was read and the end verified. */
bool mshare_reader_done(const struct mshare_reader *r);
/* BLAKE2b-256 of the whole file, once done (ERR_INVALID before). */
int mshare_reader_digest(const struct mshare_reader *r, uint8_t out[MSHARE_DIGEST_BYTES]);
void mshare_reader_free(struct mshare_reader *r); /* wipes; accepts NULL */

/* A whole share file in memory, verified to its end. */
struct mshare_shares;
int mshare_load(const char *path, const uint8_t sk[MSHARE_SK_BYTES], struct mshare_shares **out,
		char *err, size_t errcap);
const struct mshare_info *mshare_shares_info(const struct mshare_shares *s);
/* The shares of tensor id ([layers][rows][cols] as in the checkpoint); for the
 * classifier of a shared-classifier model, the embedding's. ERR_RANGE for a bad id. */
int mshare_shares_tensor(const struct mshare_shares *s, enum model_tensor_id id,
			 const ring64_t **data, size_t *count);
void mshare_shares_free(struct mshare_shares *s); /* wipes; accepts NULL */

#endif
