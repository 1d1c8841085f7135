/* buf: bounded growth by doubling, an optional wipe for buffers that held secrets. */
#include "buf/buf.h"

#include <sodium.h>
#include <stdlib.h>
#include <string.h>

#include "err/err.h"

void buf_init(struct buf *b, size_t max, bool wipe)
{
	memset(b, 0, sizeof *b);
	b->max = max;
	b->wipe = wipe;
}

static int grow(struct buf *b, size_t need)
{
	size_t cap = b->cap ? b->cap : 256;
	while (cap < need)
		cap = cap > SIZE_MAX / 2 ? need : cap * 2;
	char *nb = malloc(cap);
	if (!nb)
		return ERR_NOMEM;
	if (b->data) {
		memcpy(nb, b->data, b->len + 1);
		if (b->wipe)
			sodium_memzero(b->data, b->cap);
		free(b->data);
	}
	b->data = nb;
	b->cap = cap;
	return 0;
}

int buf_append(struct buf *b, const void *p, size_t n)
{
	if (n > b->max || b->len > b->max - n)
		return ERR_TOO_LARGE;
	if (b->len + n + 1 > b->cap) {
		int rc = grow(b, b->len + n + 1);
		if (rc != 0)
			return rc;
	}
	if (n)
		memcpy(b->data + b->len, p, n);
	b->len += n;
	b->data[b->len] = '\0';
	return 0;
}

void buf_consume(struct buf *b, size_t n)
{
	if (n >= b->len) {
		b->len = 0;
	} else {
		memmove(b->data, b->data + n, b->len - n);
		b->len -= n;
	}
	if (b->data)
		b->data[b->len] = '\0';
}

void buf_free(struct buf *b)
{
	if (b->data && b->wipe)
		sodium_memzero(b->data, b->cap);
	free(b->data);
	b->data = NULL;
	b->len = b->cap = 0;
}

char *buf_steal(struct buf *b, size_t *len)
{
	char *d = b->data ? b->data : calloc(1, 1);
	if (len)
		*len = b->data ? b->len : 0;
	b->data = NULL;
	b->len = b->cap = 0;
	return d;
}
