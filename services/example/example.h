/* mimir-example: the reference service over the common platform. It has no product
 * role: it exists so the platform (mTLS identity, declarative parsing, limits, SSE with
 * resumption, graceful shutdown, metrics) is exercised end to end by the integration
 * tests and shown by the demo, and it is the template a new service starts from. */
#ifndef MIMIR_EXAMPLE_H
#define MIMIR_EXAMPLE_H

#include <pthread.h>

#include "http/http.h"

#define EXAMPLE_FEEDS_MAX 16

struct example_settings {
	int64_t feed_max_events;
	int64_t heartbeat_ms;
};

struct example_ctx {
	struct example_settings set;
	pthread_mutex_t mu;
	struct example_feed {
		char name[33];
		struct sse_log *log;
	} feeds[EXAMPLE_FEEDS_MAX];
};

extern struct example_settings example_settings;

int example_whoami(struct http_req *r, void *ctx);
int example_echo(struct http_req *r, void *ctx);
int example_work(struct http_req *r, void *ctx);
int example_admin(struct http_req *r, void *ctx);
int example_feed_post(struct http_req *r, void *ctx);
int example_feed_get(struct http_req *r, void *ctx);
int example_feed_finish(struct http_req *r, void *ctx);

#endif
