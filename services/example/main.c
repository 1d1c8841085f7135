/* mimir-example: configuration, route table and lifecycle; handlers live beside it. */
#include <stdlib.h>

#include "err/err.h"
#include "example.h"
#include "sse/sse.h"
#include "svc/svc.h"

struct example_settings example_settings = {.feed_max_events = 256, .heartbeat_ms = 15000};

static const struct jspec_field config_spec[] = {
	JSPEC_I64("feeds.max_events", false, 1, 100000, &example_settings.feed_max_events),
	JSPEC_I64("sse.heartbeat_ms", false, 10, 600000, &example_settings.heartbeat_ms),
	JSPEC_END_F,
};

static const struct http_route routes[] = {
	{"GET", "/v1/whoami", example_whoami, 0, 0},
	{"POST", "/v1/echo", example_echo, 0, 4096},
	{"POST", "/v1/work", example_work, 0, 0},
	{"GET", "/v1/admin", example_admin, HTTP_ROLE(IDENT_ROLE_ADMIN), 0},
	{"POST", "/v1/feeds/{name}/events", example_feed_post, 0, 0},
	{"GET", "/v1/feeds/{name}", example_feed_get, 0, 0},
	{"POST", "/v1/feeds/{name}/finish", example_feed_finish, 0, 0},
	{NULL, NULL, NULL, 0, 0},
};

static int init(void **out, struct metrics *m)
{
	(void)m;
	struct example_ctx *c = calloc(1, sizeof *c);
	if (!c)
		return ERR_NOMEM;
	c->set = example_settings;
	pthread_mutex_init(&c->mu, NULL);
	*out = c;
	return 0;
}

static void fini(void *ctx)
{
	struct example_ctx *c = ctx;
	for (size_t i = 0; i < EXAMPLE_FEEDS_MAX; i++)
		sse_log_free(c->feeds[i].log);
	pthread_mutex_destroy(&c->mu);
	free(c);
}

static const struct svc_def def = {
	.name = "example",
	.summary = "The reference service of the Mimir platform (identity, echo, feeds over SSE).",
	.default_port = 8440,
	.routes = routes,
	.config_spec = config_spec,
	.init = init,
	.fini = fini,
};

int main(int argc, char **argv)
{
	return svc_main(argc, argv, &def);
}
