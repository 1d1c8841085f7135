/* buf: a growable byte buffer that knows its maximum size. Everything Mimir reads from
 * outside into memory (request bodies, responses, streamed output) accumulates in one,
 * so a lying or endless peer meets ERR_TOO_LARGE instead of exhausting memory. The
 * contents stay NUL-terminated for convenience (the NUL is not counted in len). */
#ifndef MIMIR_BUF_H
#define MIMIR_BUF_H

#include <stdbool.h>
#include <stddef.h>

struct buf {
	char *data; /* NULL until the first append */
	size_t len;
	size_t cap;
	size_t max; /* appends past this fail with ERR_TOO_LARGE */
	bool wipe;  /* sodium_memzero on growth and free (for secrets) */
};

/* Sets up an empty buffer bounded to max bytes. */
void buf_init(struct buf *b, size_t max, bool wipe);
/* Appends n bytes: 0, ERR_TOO_LARGE (nothing appended) or ERR_NOMEM. */
int buf_append(struct buf *b, const void *p, size_t n) __attribute__((warn_unused_result));
/* Drops the first n bytes (n <= len). */
void buf_consume(struct buf *b, size_t n);
/* Frees the storage (wiping it if asked) and leaves an empty buffer. */
void buf_free(struct buf *b);
/* Hands the storage to the caller (free() it; never NULL on success: an empty buffer
 * gives ""), leaving the buffer empty. NULL on allocation failure. */
char *buf_steal(struct buf *b, size_t *len);

#endif
