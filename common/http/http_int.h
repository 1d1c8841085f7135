/* http internals shared by server.c, stream.c and later.c; not part of the public API. */
#ifndef MIMIR_HTTP_INT_H
#define MIMIR_HTTP_INT_H

#include <microhttpd.h>
#include <pthread.h>

#include "http/http.h"

struct attestpeer;
struct metric;
struct metric_series;

/* Response headers a reply may carry, and their bounds. */
#define HTTP_REPLY_HEADERS 16
#define HTTP_HEADER_NAME_MAX 64
#define HTTP_HEADER_VALUE_MAX 256

struct http_server {
	struct MHD_Daemon *d;
	struct http_server_config cfg;
	char service[64];
	const struct http_route *routes;
	void *svc_ctx;
	struct metrics *metrics;
	struct metrics *own_metrics;
	struct metric *m_requests, *m_duration;
	struct metric_series *m_tls_refused_s, *m_inflight_s, *m_streams_s, *m_stream_drops_s;
	struct metric_series *m_deferred_s;
	bool tls;
	char *cert_pem, *key_pem, *ca_pem;
	struct attestpeer *peers; /* a reference, or NULL: chain verification only */
	pthread_mutex_t mu; /* guards inflight, nstreams, nlaters and the two lists; taken
			       before a stream's or a later's own lock, never after */
	pthread_cond_t cv;
	unsigned inflight;
	unsigned nstreams;
	struct http_stream *streams;
	unsigned nlaters;
	struct http_later *laters; /* requests answered later, until their connection ends */
	pthread_t hb_thread;
	bool hb_running;
	bool hb_stop;
	pthread_cond_t hb_cv;
	volatile bool stopping;
	bool stopped;
	uint16_t port;
};

int http_metrics_init(struct http_server *s);
int http_streams_start(struct http_server *s);
void http_streams_stop(struct http_server *s);
void http_streams_orphan(struct http_server *s);

struct MHD_Connection *http_req_conn(struct http_req *r);
void http_req_mark_stream(struct http_req *r, unsigned status);
void http_req_hdrs(struct http_req *r, struct MHD_Response *resp);
struct http_server *http_req_server(struct http_req *r);
bool http_req_replied(const struct http_req *r);
size_t http_req_nhdr(const struct http_req *r);
struct http_later *http_req_later(const struct http_req *r);
void http_req_set_later(struct http_req *r, struct http_later *l);
/* True when the request's answer belongs to a later handle: replies through the
 * request are refused (a second answer). */
bool http_req_deferred(const struct http_req *r);
/* Queues the answer of a later handle (the server's own headers and X-Request-Id
 * added); resp may be NULL (ERR_NOMEM, nothing queued). len is the body size logged. */
int http_req_queue_later(struct http_req *r, unsigned status, const char *ctype,
			 struct MHD_Response *resp, size_t len);

/* stream.c: a stream is made (two references, the connection's and the producer's, no
 * connection yet) and then attached to a request, which queues its 200 response and
 * puts it on the server's list. attach consumes the connection's reference whatever it
 * returns: ERR_NOMEM (nothing queued, the request unanswered) or ERR_IO (queued
 * failed, the request counts as answered). abandon drops the connection's reference
 * of a stream never attached (its producer's writes then return ERR_CANCELLED). */
struct http_stream *http_stream_make(unsigned heartbeat_ms, const char *heartbeat, size_t max_buffer);
int http_stream_attach(struct http_req *r, struct http_stream *st, const char *content_type);
void http_stream_abandon(struct http_stream *st);

/* later.c, called by server.c. resume: in the access handler once the handler has
 * deferred, and again on every call after: queues the answer when there is one, else
 * suspends the connection; false when nothing could be queued (close the connection).
 * detach: the connection ended (on_completed): drops the request's side. cancel: at
 * shutdown, answers every pending later 503 and resumes its connection. */
bool http_later_resume(struct http_req *r);
void http_later_detach(struct http_req *r);
void http_laters_cancel(struct http_server *s);

#endif
