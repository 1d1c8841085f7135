/* mimir-example handlers: identity, echo (declarative parsing), work (a slow request,
 * for graceful shutdown), an admin-only route, and named event feeds streamed as SSE
 * with Last-Event-ID resumption. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <sodium.h>

#include "err/err.h"
#include "log/log.h"
#include "example.h"
#include "sse/sse.h"

int example_whoami(struct http_req *r, void *ctx)
{
	(void)ctx;
	const struct ident *p = http_req_peer(r);
	if (!p)
		return http_reply_json(r, 200, json_pack("{s:b}", "authenticated", 0));
	char fp[65], meas[129];
	sodium_bin2hex(fp, sizeof fp, p->fingerprint, sizeof p->fingerprint);
	sodium_bin2hex(meas, sizeof meas, p->measurement, p->measurement_len);
	return http_reply_json(r, 200,
			       json_pack("{s:b, s:s, s:s, s:s, s:s, s:s}", "authenticated", 1, "cn", p->cn,
					 "role", ident_role_name(p->role), "platform",
					 ident_platform_name(p->platform), "measurement", meas,
					 "fingerprint", fp));
}

int example_echo(struct http_req *r, void *ctx)
{
	(void)ctx;
	const char *message = NULL;
	int64_t repeat = 1;
	bool shout = false;
	const struct jspec_field spec[] = {
		JSPEC_STR("message", true, 1, 1024, &message),
		JSPEC_I64("repeat", false, 1, 10, &repeat),
		JSPEC_BOOLEAN("options.shout", false, &shout),
		JSPEC_END_F,
	};
	json_t *doc;
	int rc = http_req_json(r, spec, 0, &doc);
	if (rc != 0)
		return rc;
	const struct ident *p = http_req_peer(r);
	json_t *out = json_pack("{s:s, s:I, s:b, s:s}", "message", message, "repeat", (json_int_t)repeat,
				"shout", shout, "peer_role", p ? ident_role_name(p->role) : "none");
	json_decref(doc);
	return http_reply_json(r, 200, out);
}

int example_work(struct http_req *r, void *ctx)
{
	(void)ctx;
	int64_t ms = 0;
	const struct jspec_field spec[] = {JSPEC_I64("ms", true, 0, 10000, &ms), JSPEC_END_F};
	json_t *doc;
	int rc = http_req_json(r, spec, 0, &doc);
	if (rc != 0)
		return rc;
	json_decref(doc);
	/* Blocks this worker thread (and the connections it serves): a real service hands
	 * long work to threads of its own and answers through a stream. */
	LOG_INFO("example.work_started", LOG_I("ms", ms));
	usleep((useconds_t)ms * 1000);
	return http_reply_json(r, 200, json_pack("{s:I}", "slept_ms", (json_int_t)ms));
}

int example_admin(struct http_req *r, void *ctx)
{
	(void)ctx;
	return http_reply_json(r, 200, json_pack("{s:b}", "admin", 1));
}

static bool feed_name_ok(const char *n)
{
	size_t l = n ? strlen(n) : 0;
	if (l == 0 || l > 32)
		return false;
	for (size_t i = 0; i < l; i++)
		if (!((n[i] >= 'a' && n[i] <= 'z') || (n[i] >= '0' && n[i] <= '9') || n[i] == '-'))
			return false;
	return true;
}

/* The feed called name, created on first use when create is set. */
static struct sse_log *feed(struct example_ctx *c, const char *name, bool create, int *rc)
{
	struct sse_log *log = NULL;
	*rc = ERR_NOT_FOUND;
	pthread_mutex_lock(&c->mu);
	for (size_t i = 0; i < EXAMPLE_FEEDS_MAX && !log; i++)
		if (c->feeds[i].log && strcmp(c->feeds[i].name, name) == 0)
			log = c->feeds[i].log;
	for (size_t i = 0; i < EXAMPLE_FEEDS_MAX && !log && create; i++)
		if (!c->feeds[i].log) {
			log = c->feeds[i].log = sse_log_new((size_t)c->set.feed_max_events, 1 << 20);
			snprintf(c->feeds[i].name, sizeof c->feeds[i].name, "%s", name);
			*rc = log ? 0 : ERR_NOMEM;
			break;
		}
	if (!log && create && *rc == ERR_NOT_FOUND)
		*rc = ERR_CONFLICT; /* table full */
	pthread_mutex_unlock(&c->mu);
	if (log)
		*rc = 0;
	return log;
}

int example_feed_post(struct http_req *r, void *ctx)
{
	const char *name = http_req_param(r, "name"), *event = NULL, *data = NULL;
	if (!feed_name_ok(name))
		return http_reply_problem(r, ERR_INVALID, "feed names are 1-32 of [a-z0-9-]", "name");
	const struct jspec_field spec[] = {
		JSPEC_STR("event", true, 1, SSE_EVENT_NAME_MAX, &event),
		JSPEC_STR("data", true, 0, 65536, &data),
		JSPEC_END_F,
	};
	json_t *doc;
	int rc = http_req_json(r, spec, 0, &doc);
	if (rc != 0)
		return rc;
	if (!sse_event_name_ok(event)) {
		json_decref(doc);
		return http_reply_problem(r, ERR_INVALID, "event names are 1-31 of [A-Za-z0-9_.-]", "event");
	}
	struct sse_log *log = feed(ctx, name, true, &rc);
	uint64_t id = 0;
	if (log)
		rc = sse_log_append(log, event, data, strlen(data), &id);
	json_decref(doc);
	if (rc != 0)
		return http_reply_problem(r, rc == ERR_INVALID ? ERR_CONFLICT : rc,
					  rc == ERR_INVALID ? "the feed is finished" : NULL, NULL);
	return http_reply_json(r, 201, json_pack("{s:I}", "id", (json_int_t)id));
}

int example_feed_get(struct http_req *r, void *ctx)
{
	struct example_ctx *c = ctx;
	int rc;
	struct sse_log *log = feed(c, http_req_param(r, "name"), false, &rc);
	if (!log)
		return http_reply_problem(r, ERR_NOT_FOUND, "no such feed", "name");
	uint64_t after = 0;
	const char *last = http_req_header(r, "Last-Event-ID");
	if (last && sse_parse_last_id(last, &after) != 0)
		return http_reply_problem(r, ERR_PARSE, "Last-Event-ID must be a decimal event id",
					  "Last-Event-ID");
	if (after > sse_log_last_id(log))
		return http_reply_problem(r, ERR_RANGE, "Last-Event-ID is beyond the last event",
					  "Last-Event-ID");
	struct http_stream *st;
	if ((rc = sse_reply(r, (unsigned)c->set.heartbeat_ms, &st)) != 0)
		return rc;
	rc = sse_log_attach(log, st, after);
	if (rc != 0 && rc != ERR_RANGE) {
		http_stream_close(st); /* nobody will write to it */
	} else if (rc == ERR_RANGE) {
		/* Headers are gone already: say so in the stream, then end it. */
		char *ev;
		size_t n;
		static const char msg[] = "{\"type\":\"urn:mimir:problem:out-of-range\",\"status\":410,"
					  "\"title\":\"Events no longer buffered\"}";
		if (sse_encode(0, "error", msg, sizeof msg - 1, &ev, &n) == 0) {
			http_stream_write(st, ev, n);
			free(ev);
		}
		http_stream_close(st);
	}
	return 0;
}

int example_feed_finish(struct http_req *r, void *ctx)
{
	int rc;
	struct sse_log *log = feed(ctx, http_req_param(r, "name"), false, &rc);
	if (!log)
		return http_reply_problem(r, ERR_NOT_FOUND, "no such feed", "name");
	sse_log_finish(log);
	return http_reply_json(r, 200, json_pack("{s:I}", "last_id", (json_int_t)sse_log_last_id(log)));
}
