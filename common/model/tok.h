/* tok: the llama2.c tokenizer (SentencePiece BPE exported as tokenizer.bin).
 *
 * File format, little-endian: int32 max_token_length, then per token a float32 merge
 * score, an int32 byte length and that many bytes. Ids 0, 1, 2 are <unk>, BOS, EOS and
 * ids 3..258 the byte-fallback tokens "<0x00>".."<0xFF>"; the loader insists on that
 * layout because encode and decode rely on it.
 *
 * Encoding follows llama2.c's run.c: BOS, a dummy-prefix space before non-empty text,
 * one piece per UTF-8 codepoint (bytes of a codepoint missing from the vocabulary fall
 * back to their byte tokens), then repeatedly merge the adjacent pair whose
 * concatenation is the highest-scoring vocabulary entry (leftmost on ties). Special and
 * byte tokens never take part in a merge, which for SentencePiece vocabularies changes
 * nothing and makes decode(encode(x)) == x hold for every input. The tokenizer is
 * public data; nothing here is secret. */
#ifndef MIMIR_TOK_H
#define MIMIR_TOK_H

#include <stdbool.h>
#include <stddef.h>

#define TOK_UNK 0
#define TOK_BOS 1
#define TOK_EOS 2
#define TOK_BYTE0 3 /* id of byte 0x00; byte b is TOK_BYTE0 + b */
#define TOK_MIN_VOCAB (TOK_BYTE0 + 256)
#define TOK_MAX_VOCAB (1 << 20)
#define TOK_MAX_TOKEN_LENGTH 1024

struct tok; /* opaque: vocabulary, scores and a sorted lookup index */

/* Loads path (or a memory image, copied). vocab_size > 0 requires exactly that many
 * tokens (the model's vocabulary); 0 accepts any count from TOK_MIN_VOCAB up. The file
 * must be consumed exactly. Messages as in model.h: "<name>: <fault>". */
int tok_load(const char *path, int vocab_size, struct tok **out, char *err, size_t errcap);
int tok_load_mem(const void *buf, size_t len, const char *name, int vocab_size, struct tok **out,
		 char *err, size_t errcap);
void tok_free(struct tok *t); /* accepts NULL */

int tok_vocab_size(const struct tok *t);
/* The raw piece of id (not NUL-terminated; byte tokens give "<0xNN>"), NULL if out of
 * range. */
const char *tok_piece(const struct tok *t, int id, size_t *len);
float tok_score(const struct tok *t, int id);

/* Upper bound on the ids tok_encode writes for text of len bytes (BOS, dummy prefix,
 * one per byte, EOS). */
size_t tok_encode_max(size_t len);
/* Encodes text[0..len) (any bytes, NULs included) into ids[0..*n). cap must be at least
 * tok_encode_max(len) (ERR_RANGE otherwise); texts over 1 GiB give ERR_TOO_LARGE. bos/eos
 * add the markers. Time O(len log len), memory O(len). */
int tok_encode(const struct tok *t, const char *text, size_t len, bool bos, bool eos, int *ids,
	       size_t cap, size_t *n);

/* The bytes id stands for when it follows prev: byte tokens give their byte, and after
 * BOS a leading space (the dummy prefix) is dropped, as run.c does. The pointer is into
 * the tokenizer (valid while it lives). ERR_RANGE for an id out of range. */
int tok_decode(const struct tok *t, int prev, int id, const char **piece, size_t *len);
/* Decodes ids[0..n) into a new NUL-terminated buffer (caller frees), skipping BOS and EOS
 * markers themselves. *outlen excludes the NUL. */
int tok_decode_all(const struct tok *t, const int *ids, size_t n, char **out, size_t *outlen);

#endif
