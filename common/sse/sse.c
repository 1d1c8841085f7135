/* sse: event framing, the replay log behind Last-Event-ID resumption, and an
 * incremental parser that follows the WHATWG event-stream parsing rules (any of CRLF,
 * LF, CR ends a line; a chunk may end between CR and LF; ':' starts a comment; one
 * space after the colon is dropped; an event without data is not dispatched). */
#include "sse/sse.h"

#include <errno.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "err/err.h"
#include "http/http.h"

bool sse_event_name_ok(const char *name)
{
	size_t n = name ? strlen(name) : 0;
	if (n == 0 || n > SSE_EVENT_NAME_MAX)
		return false;
	for (size_t i = 0; i < n; i++) {
		char c = name[i];
		if (!((c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') ||
		      c == '_' || c == '.' || c == '-'))
			return false;
	}
	return true;
}

int sse_encode(uint64_t id, const char *event, const char *data, size_t len, char **out,
	       size_t *out_len)
{
	*out = NULL;
	if (event && !sse_event_name_ok(event))
		return ERR_INVALID;
	if (!data)
		len = 0;
	/* Worst case every byte is a line break: 7 bytes ("data: " + "\n") per line. */
	size_t lines = 1;
	for (size_t i = 0; i < len; i++)
		lines += data[i] == '\n' || data[i] == '\r';
	size_t cap = 64 + (event ? strlen(event) : 0) + len + lines * 7 + 3;
	char *b = malloc(cap);
	if (!b)
		return ERR_NOMEM;
	size_t o = 0;
	if (id)
		o += (size_t)snprintf(b + o, cap - o, "id: %llu\n", (unsigned long long)id);
	if (event)
		o += (size_t)snprintf(b + o, cap - o, "event: %s\n", event);
	size_t start = 0;
	for (size_t i = 0; i <= len; i++) {
		bool end = i == len || data[i] == '\n' || data[i] == '\r';
		if (!end)
			continue;
		memcpy(b + o, "data: ", 6);
		o += 6;
		memcpy(b + o, data + start, i - start);
		o += i - start;
		b[o++] = '\n';
		if (i < len && data[i] == '\r' && i + 1 < len && data[i + 1] == '\n')
			i++;
		start = i + 1;
	}
	b[o++] = '\n';
	b[o] = '\0'; /* not counted: the frame is out_len bytes */
	*out = b;
	*out_len = o;
	return 0;
}

int sse_parse_last_id(const char *s, uint64_t *out)
{
	size_t n = s ? strlen(s) : 0;
	if (n == 0 || n > 20)
		return ERR_PARSE;
	for (size_t i = 0; i < n; i++)
		if (s[i] < '0' || s[i] > '9')
			return ERR_PARSE;
	errno = 0;
	unsigned long long v = strtoull(s, NULL, 10);
	if (errno == ERANGE)
		return ERR_PARSE;
	*out = v;
	return 0;
}

int sse_reply(struct http_req *req, unsigned heartbeat_ms, struct http_stream **out)
{
	return http_reply_stream(req, SSE_CONTENT_TYPE, heartbeat_ms, SSE_HEARTBEAT, 0, out);
}

/* ---- the replay log ---- */

struct sse_rec {
	uint64_t id;
	char *bytes;
	size_t len;
};

struct sse_log {
	pthread_mutex_t mu;
	struct sse_rec *ring; /* ring[(first + i) % max_events], i < count */
	size_t max_events, max_bytes, first, count, bytes;
	uint64_t last_id;
	bool finished;
	struct http_stream **att;
	size_t natt, catt;
};

struct sse_log *sse_log_new(size_t max_events, size_t max_bytes)
{
	if (max_events == 0)
		return NULL;
	struct sse_log *l = calloc(1, sizeof *l);
	if (!l)
		return NULL;
	l->ring = calloc(max_events, sizeof *l->ring);
	if (!l->ring) {
		free(l);
		return NULL;
	}
	l->max_events = max_events;
	l->max_bytes = max_bytes ? max_bytes : (size_t)1 << 20;
	pthread_mutex_init(&l->mu, NULL);
	return l;
}

static void detach_all(struct sse_log *l)
{
	for (size_t i = 0; i < l->natt; i++)
		http_stream_close(l->att[i]);
	l->natt = 0;
}

void sse_log_free(struct sse_log *l)
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

static void drop_oldest(struct sse_log *l)
{
	struct sse_rec *r = &l->ring[l->first];
	l->bytes -= r->len;
	free(r->bytes);
	r->bytes = NULL;
	l->first = (l->first + 1) % l->max_events;
	l->count--;
}

int sse_log_append(struct sse_log *l, const char *event, const char *data, size_t len,
		   uint64_t *id_out)
{
	char *bytes;
	size_t n;
	pthread_mutex_lock(&l->mu);
	int rc = l->finished ? ERR_INVALID : sse_encode(l->last_id + 1, event, data, len, &bytes, &n);
	if (rc != 0)
		goto out;
	while (l->count && (l->count == l->max_events || l->bytes + n > l->max_bytes))
		drop_oldest(l);
	struct sse_rec *r = &l->ring[(l->first + l->count) % l->max_events];
	r->id = ++l->last_id;
	r->bytes = bytes;
	r->len = n;
	l->count++;
	l->bytes += n;
	if (id_out)
		*id_out = r->id;
	for (size_t i = 0; i < l->natt;) {
		if (http_stream_write(l->att[i], bytes, n) != 0) {
			http_stream_close(l->att[i]);
			l->att[i] = l->att[--l->natt];
		} else {
			i++;
		}
	}
out:
	pthread_mutex_unlock(&l->mu);
	return rc;
}

int sse_log_attach(struct sse_log *l, struct http_stream *st, uint64_t after)
{
	int rc = 0;
	pthread_mutex_lock(&l->mu);
	uint64_t oldest = l->count ? l->ring[l->first].id : l->last_id + 1;
	if (after > l->last_id) {
		rc = ERR_INVALID;
		goto out;
	}
	if (after + 1 < oldest) {
		rc = ERR_RANGE;
		goto out;
	}
	for (size_t i = 0; i < l->count; i++) {
		struct sse_rec *r = &l->ring[(l->first + i) % l->max_events];
		if (r->id > after && http_stream_write(st, r->bytes, r->len) != 0) {
			http_stream_close(st);
			goto out;
		}
	}
	if (l->finished) {
		http_stream_close(st);
		goto out;
	}
	if (l->natt == l->catt) {
		size_t nc = l->catt ? l->catt * 2 : 4;
		struct http_stream **na = realloc(l->att, nc * sizeof *na);
		if (!na) {
			rc = ERR_NOMEM; /* st stays the caller's */
			goto out;
		}
		l->att = na;
		l->catt = nc;
	}
	l->att[l->natt++] = st;
out:
	pthread_mutex_unlock(&l->mu);
	return rc;
}

void sse_log_finish(struct sse_log *l)
{
	pthread_mutex_lock(&l->mu);
	l->finished = true;
	detach_all(l);
	pthread_mutex_unlock(&l->mu);
}

uint64_t sse_log_last_id(struct sse_log *l)
{
	pthread_mutex_lock(&l->mu);
	uint64_t v = l->last_id;
	pthread_mutex_unlock(&l->mu);
	return v;
}

size_t sse_log_attached(struct sse_log *l)
{
	pthread_mutex_lock(&l->mu);
	size_t v = l->natt;
	pthread_mutex_unlock(&l->mu);
	return v;
}

size_t sse_log_clients(struct sse_log *l)
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

/* ---- the reader ---- */

struct sse_parser {
	size_t max;
	char *line; /* the line being assembled */
	size_t llen;
	char *data; /* data buffer of the event being assembled */
	size_t dlen;
	char event[SSE_EVENT_NAME_MAX + 1];
	char id[128];     /* last event id buffer (persists across events) */
	unsigned retry;
	bool after_cr;    /* the previous chunk ended in CR: skip a leading LF */
	bool started;     /* past the optional BOM */
	size_t bom_len;   /* BOM bytes matched so far */
};

struct sse_parser *sse_parser_new(size_t max_event)
{
	struct sse_parser *p = calloc(1, sizeof *p);
	if (!p)
		return NULL;
	p->max = max_event ? max_event : 1 << 20;
	p->line = malloc(p->max + 1);
	p->data = malloc(p->max + 1);
	if (!p->line || !p->data) {
		sse_parser_free(p);
		return NULL;
	}
	return p;
}

void sse_parser_free(struct sse_parser *p)
{
	if (!p)
		return;
	free(p->line);
	free(p->data);
	free(p);
}

const char *sse_parser_last_id(const struct sse_parser *p) { return p->id; }

static int dispatch(struct sse_parser *p, sse_event_fn fn, void *arg)
{
	int rc = 0;
	if (p->dlen > 0) {
		p->dlen--; /* the trailing '\n' of the last data line */
		p->data[p->dlen] = '\0';
		struct sse_event ev = {
			.id = p->id[0] ? p->id : NULL,
			.event = p->event[0] ? p->event : "message",
			.data = p->data,
			.data_len = p->dlen,
			.retry_ms = p->retry,
		};
		rc = fn ? fn(&ev, arg) : 0;
	}
	p->dlen = 0;
	p->event[0] = '\0';
	p->retry = 0;
	return rc;
}

static int process_line(struct sse_parser *p, sse_event_fn fn, void *arg)
{
	char *line = p->line;
	size_t n = p->llen;
	line[n] = '\0';
	p->llen = 0;
	if (n == 0)
		return dispatch(p, fn, arg);
	if (line[0] == ':')
		return 0;
	char *colon = memchr(line, ':', n);
	const char *val = "";
	size_t vlen = 0;
	if (colon) {
		*colon = '\0';
		val = colon + 1;
		if (*val == ' ')
			val++;
		vlen = n - (size_t)(val - line);
	}
	if (strcmp(line, "data") == 0) {
		if (p->dlen + vlen + 1 > p->max)
			return ERR_TOO_LARGE;
		memcpy(p->data + p->dlen, val, vlen);
		p->dlen += vlen;
		p->data[p->dlen++] = '\n';
	} else if (strcmp(line, "event") == 0) {
		/* An unusable name is kept out rather than truncated into another one. */
		if (vlen <= SSE_EVENT_NAME_MAX && memchr(val, '\0', vlen) == NULL)
			memcpy(p->event, val, vlen + 1);
		else
			return ERR_PROTOCOL;
	} else if (strcmp(line, "id") == 0) {
		if (vlen >= sizeof p->id || memchr(val, '\0', vlen))
			return ERR_PROTOCOL;
		memcpy(p->id, val, vlen + 1);
	} else if (strcmp(line, "retry") == 0) {
		uint64_t v;
		if (sse_parse_last_id(val, &v) == 0 && v <= 3600000)
			p->retry = (unsigned)v;
	}
	return 0;
}

static int feed_byte(struct sse_parser *p, char c, sse_event_fn fn, void *arg)
{
	if (p->after_cr) {
		p->after_cr = false;
		if (c == '\n')
			return 0;
	}
	if (c == '\r' || c == '\n') {
		p->after_cr = c == '\r';
		return process_line(p, fn, arg);
	}
	if (p->llen >= p->max)
		return ERR_TOO_LARGE;
	p->line[p->llen++] = c;
	return 0;
}

int sse_parser_feed(struct sse_parser *p, const char *buf, size_t len, sse_event_fn fn, void *arg)
{
	static const char bom[3] = {'\xEF', '\xBB', '\xBF'};
	for (size_t i = 0; i < len; i++) {
		if (!p->started) {
			/* A UTF-8 byte order mark may open the stream, split across chunks
			 * like anything else; bytes that only looked like its start are
			 * ordinary content. */
			if (buf[i] == bom[p->bom_len]) {
				if (++p->bom_len == sizeof bom)
					p->started = true;
				continue;
			}
			p->started = true;
			for (size_t k = 0; k < p->bom_len; k++) {
				int rc = feed_byte(p, bom[k], fn, arg);
				if (rc != 0)
					return rc;
			}
		}
		int rc = feed_byte(p, buf[i], fn, arg);
		if (rc != 0)
			return rc;
	}
	return 0;
}
