/* mimir-gateway event log: the recent events of one generation's stream to the client,
 * for resumption with Last-Event-ID, and the client streams attached to it.
 *
 * It is common/sse's replay log with one thing more, which the relay needs and sse_log
 * cannot tell: whether any attached client is still there. sse_log learns that a client
 * has gone only when its next event fails to write, and a generation can sit for a
 * minute without an event (waiting for the client's INPUT, the prompt's forward pass),
 * so a client that disconnected then would never be noticed. Here the log holds its
 * streams and gw_evlog_clients() asks each whether its connection is still open (the
 * HTTP layer's heartbeats find dead connections), which lets the relay cancel an
 * abandoned generation at the parties. (With an sse_log_clients() in common/sse this
 * file would go.) Events are framed with sse_encode, ids 1, 2, ...; the log keeps the
 * last max_events / max_bytes of them. Thread-safe. */
#include <stdlib.h>
#include <string.h>

#include "err/err.h"
#include "gateway.h"
#include "sse/sse.h"

struct rec {
	uint64_t id;
	char *bytes;
	size_t len;
};

struct gw_evlog {
	pthread_mutex_t mu;
	struct rec *ring; /* ring[(first + i) % max_events], i < count */
	size_t max_events, max_bytes, first, count, bytes;
	uint64_t last_id;
	bool finished;
	struct http_stream **att;
	size_t natt, catt;
};

struct gw_evlog *gw_evlog_new(size_t max_events, size_t max_bytes)
{
	if (!max_events || !max_bytes)
		return NULL;
	struct gw_evlog *l = calloc(1, sizeof *l);
	if (!l || !(l->ring = calloc(max_events, sizeof *l->ring))) {
		free(l);
		return NULL;
	}
	l->max_events = max_events;
	l->max_bytes = max_bytes;
	pthread_mutex_init(&l->mu, NULL);
	return l;
}

static void detach_all(struct gw_evlog *l)
{
	for (size_t i = 0; i < l->natt; i++)
		http_stream_close(l->att[i]);
	l->natt = 0;
}

void gw_evlog_free(struct gw_evlog *l)
{
	if (!l)
		return;
	pthread_mutex_lock(&l->mu);
	detach_all(l);
	for (size_t i = 0; i < l->count; i++)
		free(l->ring[(l->first + i) % l->max_events].bytes);
	pthread_mutex_unlock(&l->mu);
	pthread_mutex_destroy(&l->mu);
	free(l->att);
	free(l->ring);
	free(l);
}

/* Writes to every attached stream; those whose client has gone are released. */
static void broadcast_locked(struct gw_evlog *l, const char *bytes, size_t n)
{
	for (size_t i = 0; i < l->natt;) {
		if (http_stream_write(l->att[i], bytes, n) != 0) {
			http_stream_close(l->att[i]);
			l->att[i] = l->att[--l->natt];
		} else {
			i++;
		}
	}
}

int gw_evlog_append(struct gw_evlog *l, const char *event, const char *data, size_t len, uint64_t *id)
{
	char *bytes = NULL;
	size_t n = 0;
	pthread_mutex_lock(&l->mu);
	int rc = l->finished ? ERR_INVALID : sse_encode(l->last_id + 1, event, data, len, &bytes, &n);
	if (rc == 0) {
		while (l->count && (l->count == l->max_events || l->bytes + n > l->max_bytes)) {
			struct rec *o = &l->ring[l->first];
			l->bytes -= o->len;
			free(o->bytes);
			o->bytes = NULL;
			l->first = (l->first + 1) % l->max_events;
			l->count--;
		}
		struct rec *r = &l->ring[(l->first + l->count) % l->max_events];
		*r = (struct rec){.id = ++l->last_id, .bytes = bytes, .len = n};
		l->count++;
		l->bytes += n;
		if (id)
			*id = r->id;
		broadcast_locked(l, bytes, n);
	}
	pthread_mutex_unlock(&l->mu);
	return rc;
}

int gw_evlog_attach(struct gw_evlog *l, struct http_stream *st, uint64_t after)
{
	int rc = 0;
	pthread_mutex_lock(&l->mu);
	uint64_t oldest = l->count ? l->ring[l->first].id : l->last_id + 1;
	if (after > l->last_id) {
		rc = ERR_INVALID;
	} else if (after + 1 < oldest) {
		rc = ERR_RANGE; /* some of what the client missed has left the buffer */
	} else {
		bool ok = true;
		for (size_t i = 0; i < l->count && ok; i++) {
			const struct rec *r = &l->ring[(l->first + i) % l->max_events];
			if (r->id > after)
				ok = http_stream_write(st, r->bytes, r->len) == 0;
		}
		if (!ok || l->finished) {
			http_stream_close(st);
		} else if (l->natt == l->catt) {
			size_t cap = l->catt ? 2 * l->catt : 4;
			struct http_stream **a = realloc(l->att, cap * sizeof *a);
			if (a) {
				l->att = a;
				l->catt = cap;
				l->att[l->natt++] = st;
			} else {
				rc = ERR_NOMEM; /* st stays the caller's */
			}
		} else {
			l->att[l->natt++] = st;
		}
	}
	pthread_mutex_unlock(&l->mu);
	return rc;
}

void gw_evlog_finish(struct gw_evlog *l)
{
	pthread_mutex_lock(&l->mu);
	l->finished = true;
	detach_all(l); /* each stream ends once what it has is written */
	pthread_mutex_unlock(&l->mu);
}

uint64_t gw_evlog_last_id(struct gw_evlog *l)
{
	pthread_mutex_lock(&l->mu);
	uint64_t id = l->last_id;
	pthread_mutex_unlock(&l->mu);
	return id;
}

size_t gw_evlog_clients(struct gw_evlog *l)
{
	pthread_mutex_lock(&l->mu);
	for (size_t i = 0; i < l->natt;) {
		if (!http_stream_alive(l->att[i])) {
			http_stream_close(l->att[i]);
			l->att[i] = l->att[--l->natt];
		} else {
			i++;
		}
	}
	size_t n = l->natt;
	pthread_mutex_unlock(&l->mu);
	return n;
}
