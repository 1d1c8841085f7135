/* http streams: response bodies written by the service after its handler returned
 * (server-sent events). libmicrohttpd pulls the body through a content-reader callback;
 * when the buffer is empty the callback suspends the connection instead of returning 0
 * in a busy loop, and a write resumes it. A housekeeping thread writes heartbeat bytes
 * into idle streams, which keeps proxies from timing out and lets a write notice a
 * client that has gone. Each stream has two owners: the connection (released by the
 * response's free callback) and the producer (released by http_stream_close). A stream
 * is made before it is attached to a connection, so that a deferred answer
 * (http_later_stream) can hand the producer its stream while the connection is still
 * suspended: writes until then are only buffered. */
#include <errno.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "buf/buf.h"
#include "err/err.h"
#include "http/http_int.h"
#include "log/log.h"
#include "metrics/metrics.h"

#define STREAM_KEEP_CAP (16u << 10)

struct http_stream {
	pthread_mutex_t mu;
	struct http_server *srv;     /* set (under both locks) once attached, NULL again when orphaned */
	struct MHD_Connection *conn; /* NULL until attached */
	int refs;
	bool suspended;  /* we suspended the connection and owe it a resume */
	bool closed;     /* no more data will come: end the body once drained */
	bool gone;       /* the connection released its response: writes are pointless */
	struct buf out; /* written, not yet sent; bounded by the stream's max_buffer */
	unsigned heartbeat_ms;
	char heartbeat[64];
	long long last_write_ms;
	struct http_stream *next, *prev;
};

static long long mono_ms(void)
{
	struct timespec ts;
	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (long long)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

static void wake_locked(struct http_stream *st)
{
	if (st->suspended && !st->gone) {
		st->suspended = false;
		MHD_resume_connection(st->conn);
	}
}

/* Drops one reference. While the server exists an attached stream is on its list
 * (guarded by the server's lock); a stream still held by its producer when the server
 * is freed is orphaned (srv NULL) and just freed by its last reference. srv is read
 * under the stream's lock and checked again under both, because a stream made for a
 * deferred answer may be attached while its producer drops a reference. */
static void unref(struct http_stream *st)
{
	struct http_server *s;
	for (;;) {
		pthread_mutex_lock(&st->mu);
		s = st->srv;
		pthread_mutex_unlock(&st->mu);
		if (s)
			pthread_mutex_lock(&s->mu);
		pthread_mutex_lock(&st->mu);
		if (st->srv == s)
			break;
		pthread_mutex_unlock(&st->mu);
		if (s)
			pthread_mutex_unlock(&s->mu);
	}
	bool last = --st->refs == 0;
	pthread_mutex_unlock(&st->mu);
	if (last && s) {
		if (st->prev)
			st->prev->next = st->next;
		else
			s->streams = st->next;
		if (st->next)
			st->next->prev = st->prev;
		s->nstreams--;
		pthread_cond_broadcast(&s->cv);
	}
	if (s)
		pthread_mutex_unlock(&s->mu);
	if (last) {
		pthread_mutex_destroy(&st->mu);
		buf_free(&st->out);
		free(st);
	}
}

void http_streams_orphan(struct http_server *s)
{
	pthread_mutex_lock(&s->mu);
	for (struct http_stream *st = s->streams, *next; st; st = next) {
		next = st->next;
		pthread_mutex_lock(&st->mu);
		st->srv = NULL;
		st->gone = st->closed = true;
		st->next = st->prev = NULL;
		pthread_mutex_unlock(&st->mu);
	}
	s->streams = NULL;
	s->nstreams = 0;
	pthread_mutex_unlock(&s->mu);
}

static ssize_t reader(void *cls, uint64_t pos, char *out, size_t max)
{
	(void)pos;
	struct http_stream *st = cls;
	pthread_mutex_lock(&st->mu);
	ssize_t n;
	if (st->out.len > 0) {
		size_t k = st->out.len < max ? st->out.len : max;
		memcpy(out, st->out.data, k);
		buf_consume(&st->out, k);
		/* Drained: give a large buffer back (a replay or a burst made it grow), so an
		 * idle stream costs its connection, not its high-water mark. */
		if (st->out.len == 0 && st->out.cap > STREAM_KEEP_CAP)
			buf_free(&st->out);
		n = (ssize_t)k;
	} else if (st->closed) {
		n = MHD_CONTENT_READER_END_OF_STREAM;
	} else {
		/* Nothing to send yet: park the connection until a write resumes it. */
		st->suspended = true;
		MHD_suspend_connection(st->conn);
		n = 0;
	}
	pthread_mutex_unlock(&st->mu);
	return n;
}

static void reader_free(void *cls)
{
	struct http_stream *st = cls;
	pthread_mutex_lock(&st->mu);
	st->gone = true;
	st->suspended = false;
	pthread_mutex_unlock(&st->mu);
	unref(st);
}

struct http_stream *http_stream_make(unsigned heartbeat_ms, const char *heartbeat, size_t max_buffer)
{
	struct http_stream *st = calloc(1, sizeof *st);
	if (!st)
		return NULL;
	pthread_mutex_init(&st->mu, NULL);
	st->refs = 2;
	buf_init(&st->out, max_buffer ? max_buffer : (1u << 20), false);
	st->heartbeat_ms = heartbeat_ms;
	snprintf(st->heartbeat, sizeof st->heartbeat, "%s", heartbeat ? heartbeat : "");
	st->last_write_ms = mono_ms();
	return st;
}

void http_stream_abandon(struct http_stream *st)
{
	pthread_mutex_lock(&st->mu);
	st->gone = st->closed = true;
	pthread_mutex_unlock(&st->mu);
	unref(st);
}

int http_stream_attach(struct http_req *r, struct http_stream *st, const char *content_type)
{
	struct http_server *s = http_req_server(r);
	struct MHD_Response *resp =
		MHD_create_response_from_callback(MHD_SIZE_UNKNOWN, 16 * 1024, reader, st, reader_free);
	if (!resp) {
		http_stream_abandon(st);
		return ERR_NOMEM;
	}
	http_req_hdrs(r, resp);
	MHD_add_response_header(resp, MHD_HTTP_HEADER_CONTENT_TYPE, content_type);
	MHD_add_response_header(resp, MHD_HTTP_HEADER_CACHE_CONTROL, "no-cache");
	MHD_add_response_header(resp, "X-Accel-Buffering", "no");
	pthread_mutex_lock(&s->mu);
	pthread_mutex_lock(&st->mu);
	st->srv = s;
	st->conn = http_req_conn(r);
	/* Attached after shutdown ended the streams (a deferred answer): end it as they
	 * were ended, once what is buffered is sent. */
	if (s->hb_stop)
		st->closed = true;
	pthread_mutex_unlock(&st->mu);
	st->next = s->streams;
	if (s->streams)
		s->streams->prev = st;
	s->streams = st;
	s->nstreams++;
	pthread_mutex_unlock(&s->mu);
	enum MHD_Result q = MHD_queue_response(st->conn, 200, resp);
	MHD_destroy_response(resp); /* the connection holds its own reference */
	http_req_mark_stream(r, 200);
	/* On failure the response's free callback has released the connection's reference. */
	return q == MHD_YES ? 0 : ERR_IO;
}

int http_reply_stream(struct http_req *r, const char *content_type, unsigned heartbeat_ms,
		      const char *heartbeat, size_t max_buffer, struct http_stream **out)
{
	*out = NULL;
	struct http_server *s = http_req_server(r);
	if (http_req_deferred(r)) {
		LOG_ERROR("http.double_reply", LOG_S("route", http_req_route(r)),
			  LOG_S("detail", "the answer was deferred (http_reply_later)"));
		return ERR_INTERNAL;
	}
	if (s->stopping)
		return http_reply_problem(r, ERR_UNAVAILABLE, "shutting down", NULL), ERR_UNAVAILABLE;
	struct http_stream *st = http_stream_make(heartbeat_ms, heartbeat, max_buffer);
	if (!st)
		return ERR_NOMEM;
	int rc = http_stream_attach(r, st, content_type);
	if (rc != 0) {
		http_stream_close(st); /* the caller's reference: the stream is freed */
		return rc;
	}
	*out = st;
	return 0;
}

static int write_locked(struct http_stream *st, const void *data, size_t len)
{
	if (st->gone || st->closed)
		return ERR_CANCELLED;
	int rc = buf_append(&st->out, data, len);
	if (rc == ERR_TOO_LARGE) {
		/* The client reads slower than we produce: drop it rather than grow. */
		LOG_WARN("http.stream_dropped", LOG_S("reason", "client too slow"), LOG_I("buffered", st->out.len));
		st->closed = true;
		buf_consume(&st->out, st->out.len);
		wake_locked(st);
		if (st->srv)
			metric_inc(st->srv->m_stream_drops_s);
		return ERR_TOO_LARGE;
	}
	if (rc != 0)
		return rc;
	st->last_write_ms = mono_ms();
	wake_locked(st);
	return 0;
}

int http_stream_write(struct http_stream *st, const void *data, size_t len)
{
	if (!st)
		return ERR_INVALID;
	pthread_mutex_lock(&st->mu);
	int rc = write_locked(st, data, len);
	pthread_mutex_unlock(&st->mu);
	return rc;
}

bool http_stream_alive(struct http_stream *st)
{
	if (!st)
		return false;
	pthread_mutex_lock(&st->mu);
	bool alive = !st->gone && !st->closed;
	pthread_mutex_unlock(&st->mu);
	return alive;
}

void http_stream_close(struct http_stream *st)
{
	if (!st)
		return;
	pthread_mutex_lock(&st->mu);
	st->closed = true;
	wake_locked(st);
	pthread_mutex_unlock(&st->mu);
	unref(st);
}

/* Heartbeats: every 100 ms, streams idle past their interval get their heartbeat. */
static void *housekeeper(void *arg)
{
	struct http_server *s = arg;
	pthread_mutex_lock(&s->mu);
	while (!s->hb_stop) {
		struct timespec dl;
		clock_gettime(CLOCK_REALTIME, &dl);
		dl.tv_nsec += 100 * 1000000L;
		if (dl.tv_nsec >= 1000000000L)
			dl.tv_sec++, dl.tv_nsec -= 1000000000L;
		pthread_cond_timedwait(&s->hb_cv, &s->mu, &dl);
		long long now = mono_ms();
		for (struct http_stream *st = s->streams; st; st = st->next) {
			pthread_mutex_lock(&st->mu);
			if (st->heartbeat_ms && !st->closed && !st->gone &&
			    now - st->last_write_ms >= st->heartbeat_ms)
				write_locked(st, st->heartbeat, strlen(st->heartbeat));
			pthread_mutex_unlock(&st->mu);
		}
	}
	pthread_mutex_unlock(&s->mu);
	return NULL;
}

int http_streams_start(struct http_server *s)
{
	pthread_cond_init(&s->hb_cv, NULL);
	if (pthread_create(&s->hb_thread, NULL, housekeeper, s) != 0)
		return ERR_NOMEM;
	s->hb_running = true;
	return 0;
}

void http_streams_stop(struct http_server *s)
{
	pthread_mutex_lock(&s->mu);
	for (struct http_stream *st = s->streams; st; st = st->next) {
		pthread_mutex_lock(&st->mu);
		st->closed = true;
		wake_locked(st);
		pthread_mutex_unlock(&st->mu);
	}
	bool join = s->hb_running;
	s->hb_stop = true;
	s->hb_running = false;
	pthread_cond_broadcast(&s->hb_cv);
	pthread_mutex_unlock(&s->mu);
	if (join) {
		pthread_join(s->hb_thread, NULL);
		pthread_cond_destroy(&s->hb_cv);
	}
}
