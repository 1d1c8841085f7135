/* http internals shared by server.c and stream.c; not part of the public API. */
#ifndef MIMIR_HTTP_INT_H
#define MIMIR_HTTP_INT_H

#include <microhttpd.h>
#include <pthread.h>

#include "http/http.h"

struct attestpeer;
struct metric;
struct metric_series;

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
	bool tls;
	char *cert_pem, *key_pem, *ca_pem;
	struct attestpeer *peers; /* a reference, or NULL: chain verification only */
	pthread_mutex_t mu; /* guards inflight, nstreams and the stream list */
	pthread_cond_t cv;
	unsigned inflight;
	unsigned nstreams;
	struct http_stream *streams;
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

#endif
