/* http later: answers made after the handler returned, by another thread. libmicrohttpd
 * lets a response be queued only from its access handler, so the other thread never
 * queues: it stores the answer in the later object and resumes the suspended
 * connection, and the access handler, called again, queues it. A later has two owners,
 * the request (dropped when the connection ends) and the producer (dropped by its one
 * answering call), and its own lock; the server lists the requests it holds so that a
 * shutdown can answer them. Lock order: the server's, then the later's, never the
 * reverse (the producer takes only the later's).
 *
 * States: PENDING (no answer yet; the connection is suspended once the handler has
 * returned) -> READY (an answer is stored: the producer's, or the 503 of a shutdown;
 * the connection is resumed if it was suspended) -> SENT (queued by the access
 * handler). `gone` is set when the connection ends, in any state; a producer call that
 * finds the later gone or no longer PENDING discards its answer (ERR_CANCELLED). */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "err/err.h"
#include "http/http_int.h"
#include "log/log.h"

enum later_state { LATER_PENDING, LATER_READY, LATER_SENT };

/* What to answer. A problem also keeps what its log line says; the line is written
 * when the answer is queued, in the request's own thread and log context. */
struct later_answer {
	unsigned status;
	char ctype[128];
	char *body;         /* malloc'd (json_dumps or a copy), or a static string when body_static */
	size_t len;
	bool body_static;
	struct http_stream *stream; /* a stream answer: made, not attached yet */
	int problem;        /* the problem's code, 0 when not a problem */
	char detail[192];
	char field[64];
};

struct http_later {
	pthread_mutex_t mu;
	int refs;
	enum later_state state;
	bool suspended; /* we suspended the connection and owe it a resume */
	bool gone;      /* the connection ended: nothing will be queued */
	struct MHD_Connection *conn;
	struct later_answer ans;
	size_t base_hdr; /* headers the request already had when it was deferred */
	size_t nhdr;
	char hdr_name[HTTP_REPLY_HEADERS][HTTP_HEADER_NAME_MAX];
	char hdr_value[HTTP_REPLY_HEADERS][HTTP_HEADER_VALUE_MAX];
	char id[65];
	struct http_later *next, *prev; /* the server's list, under its lock */
};

static const char oom_problem[] = "{\"title\":\"Out of memory\",\"status\":503}";

static void answer_clear(struct later_answer *a)
{
	if (!a->body_static)
		free(a->body);
	memset(a, 0, sizeof *a);
}

static void later_unref(struct http_later *l)
{
	pthread_mutex_lock(&l->mu);
	bool last = --l->refs == 0;
	pthread_mutex_unlock(&l->mu);
	if (!last)
		return;
	/* Both sides have let go: any answer left was discarded by whoever dropped it. */
	answer_clear(&l->ans);
	pthread_mutex_destroy(&l->mu);
	free(l);
}

/* A problem+json answer (a static 503 body when even that cannot be allocated). */
static void problem_answer(struct later_answer *a, const char *id, int code, unsigned status,
			   const char *detail, const char *field)
{
	json_t *p = err_problem_status(code, (int)status, detail, field, id);
	char *text = p ? json_dumps(p, JSON_COMPACT) : NULL;
	json_decref(p);
	snprintf(a->ctype, sizeof a->ctype, "application/problem+json");
	a->problem = code;
	snprintf(a->detail, sizeof a->detail, "%s", detail ? detail : err_title(code));
	snprintf(a->field, sizeof a->field, "%s", field ? field : "");
	if (text) {
		a->status = status;
		a->body = text;
		a->len = strlen(text);
	} else {
		a->status = 503;
		a->body = (char *)oom_problem;
		a->body_static = true;
		a->len = sizeof oom_problem - 1;
	}
}

int http_reply_later(struct http_req *r, struct http_later **out)
{
	if (!out)
		return ERR_INVALID;
	*out = NULL;
	if (!r)
		return ERR_INVALID;
	if (http_req_replied(r) || http_req_later(r)) {
		LOG_ERROR("http.double_reply", LOG_S("route", http_req_route(r)),
			  LOG_S("detail", http_req_replied(r) ? "http_reply_later after a reply"
							      : "http_reply_later called twice"));
		return ERR_INTERNAL;
	}
	struct http_server *s = http_req_server(r);
	struct http_later *l = calloc(1, sizeof *l);
	if (!l)
		return ERR_NOMEM;
	pthread_mutex_init(&l->mu, NULL);
	l->refs = 2;
	l->conn = http_req_conn(r);
	l->base_hdr = http_req_nhdr(r);
	snprintf(l->id, sizeof l->id, "%s", http_req_id(r));
	/* Listed under the server's lock, where shutdown reads stopping: a later is either
	 * listed before the shutdown's sweep (and answered by it) or refused here. */
	pthread_mutex_lock(&s->mu);
	bool stopping = s->stopping;
	if (!stopping) {
		l->next = s->laters;
		if (s->laters)
			s->laters->prev = l;
		s->laters = l;
		s->nlaters++;
	}
	pthread_mutex_unlock(&s->mu);
	if (stopping) {
		pthread_mutex_destroy(&l->mu);
		free(l);
		http_reply_problem(r, ERR_UNAVAILABLE, "shutting down", NULL);
		return ERR_UNAVAILABLE;
	}
	http_req_set_later(r, l);
	*out = l;
	return 0;
}

const char *http_later_request_id(const struct http_later *l) { return l ? l->id : ""; }

int http_later_header(struct http_later *l, const char *name, const char *value)
{
	if (!l || !name || !value || !*name || strlen(name) >= HTTP_HEADER_NAME_MAX ||
	    strlen(value) >= HTTP_HEADER_VALUE_MAX || strpbrk(name, "\r\n: ") || strpbrk(value, "\r\n"))
		return ERR_INVALID;
	int rc = 0;
	pthread_mutex_lock(&l->mu);
	if (l->gone || l->state != LATER_PENDING) {
		rc = ERR_CANCELLED;
	} else if (l->base_hdr + l->nhdr >= HTTP_REPLY_HEADERS) {
		rc = ERR_INVALID;
	} else {
		snprintf(l->hdr_name[l->nhdr], sizeof l->hdr_name[0], "%s", name);
		snprintf(l->hdr_value[l->nhdr], sizeof l->hdr_value[0], "%s", value);
		l->nhdr++;
	}
	pthread_mutex_unlock(&l->mu);
	return rc;
}

/* The producer's one answer: stored and the connection resumed, or discarded when
 * nobody is left to take it. Drops the producer's reference either way. */
static int settle(struct http_later *l, struct later_answer *a)
{
	int rc = 0;
	pthread_mutex_lock(&l->mu);
	if (l->gone || l->state != LATER_PENDING) {
		rc = ERR_CANCELLED;
	} else {
		l->ans = *a;
		memset(a, 0, sizeof *a);
		l->state = LATER_READY;
		if (l->suspended) {
			l->suspended = false;
			MHD_resume_connection(l->conn);
		}
	}
	pthread_mutex_unlock(&l->mu);
	if (rc != 0) {
		if (a->stream) {
			/* Never attached nor handed out: drop both its references. */
			http_stream_abandon(a->stream);
			http_stream_close(a->stream);
			a->stream = NULL;
		}
		answer_clear(a);
	}
	later_unref(l);
	return rc;
}

/* A call that cannot be honoured still answers (the client must not wait forever):
 * 500 for a call the service got wrong (ERR_INVALID), 503 when out of memory. */
static int refuse(struct http_later *l, int rc, const char *detail)
{
	struct later_answer a = {0};
	if (rc == ERR_NOMEM)
		problem_answer(&a, l->id, ERR_NOMEM, 503, NULL, NULL);
	else
		problem_answer(&a, l->id, ERR_INTERNAL, 500, detail, NULL);
	int src = settle(l, &a);
	return src == ERR_CANCELLED ? src : rc;
}

int http_later_problem(struct http_later *l, int code, unsigned status, const char *detail,
		       const char *field)
{
	if (!l)
		return ERR_INVALID;
	if (status == 0)
		status = (unsigned)err_http_status(code);
	if (status < 400 || status > 599)
		return refuse(l, ERR_INVALID, "the service made a problem answer with a bad status");
	struct later_answer a = {0};
	problem_answer(&a, l->id, code, status, detail, field);
	return settle(l, &a);
}

int http_later_json(struct http_later *l, unsigned status, json_t *body)
{
	if (!l) {
		json_decref(body);
		return ERR_INVALID;
	}
	if (status < 200 || status > 599) {
		json_decref(body);
		return refuse(l, ERR_INVALID, "the service made an answer with a bad status");
	}
	char *text = body ? json_dumps(body, JSON_COMPACT) : NULL;
	json_decref(body);
	if (!text)
		return refuse(l, ERR_NOMEM, NULL);
	struct later_answer a = {.status = status, .ctype = "application/json", .body = text,
				 .len = strlen(text)};
	return settle(l, &a);
}

static bool ctype_ok(const char *ctype)
{
	return ctype && *ctype && strlen(ctype) < sizeof((struct later_answer *)0)->ctype &&
	       !strpbrk(ctype, "\r\n");
}

int http_later_data(struct http_later *l, unsigned status, const char *content_type, const void *data,
		    size_t len)
{
	if (!l)
		return ERR_INVALID;
	if (status < 200 || status > 599 || !ctype_ok(content_type) || (!data && len))
		return refuse(l, ERR_INVALID, "the service made an answer with a bad status or content type");
	struct later_answer a = {.status = status, .len = len, .body = malloc(len ? len : 1)};
	if (!a.body)
		return refuse(l, ERR_NOMEM, NULL);
	if (len)
		memcpy(a.body, data, len);
	snprintf(a.ctype, sizeof a.ctype, "%s", content_type);
	return settle(l, &a);
}

int http_later_stream(struct http_later *l, const char *content_type, unsigned heartbeat_ms,
		      const char *heartbeat, size_t max_buffer, struct http_stream **out)
{
	if (out)
		*out = NULL;
	if (!l)
		return ERR_INVALID;
	struct later_answer a = {.status = 200};
	if (!out || !ctype_ok(content_type))
		return refuse(l, ERR_INVALID, "the service began a stream with a bad content type");
	a.stream = http_stream_make(heartbeat_ms, heartbeat, max_buffer);
	if (!a.stream)
		return refuse(l, ERR_NOMEM, NULL);
	snprintf(a.ctype, sizeof a.ctype, "%s", content_type);
	struct http_stream *st = a.stream;
	int rc = settle(l, &a);
	if (rc == 0)
		*out = st; /* the producer's reference; the connection holds the other */
	return rc;
}

/* ---- the request's side (server.c) ---- */

static bool deliver(struct http_req *r, struct later_answer *a)
{
	int rc;
	if (a->stream) {
		rc = http_stream_attach(r, a->stream, a->ctype);
		a->stream = NULL; /* attach consumed the connection's reference */
	} else {
		if (a->problem) {
			int level = a->status >= 500 ? LOG_LEVEL_ERROR : LOG_LEVEL_WARN;
			LOG_AT(level, "http.problem", LOG_S("route", http_req_route(r)), LOG_I("status", a->status),
			       LOG_S("type", err_slug(a->problem)), LOG_S("detail", a->detail),
			       LOG_S("field", a->field), LOG_B("deferred", true));
		}
		struct MHD_Response *resp = MHD_create_response_from_buffer(
			a->len, a->body, a->body_static ? MHD_RESPMEM_PERSISTENT : MHD_RESPMEM_MUST_FREE);
		if (resp)
			a->body = NULL; /* the response owns it */
		rc = http_req_queue_later(r, a->status, a->ctype, resp, a->len);
		answer_clear(a);
	}
	if (rc == 0 || http_req_replied(r))
		return true;
	/* Nothing could be queued (out of memory): a static answer needs no allocation but
	 * the response object's; without it the connection is closed. */
	rc = http_req_queue_later(r, 503, "application/problem+json",
				  MHD_create_response_from_buffer(sizeof oom_problem - 1, (void *)oom_problem,
								  MHD_RESPMEM_PERSISTENT),
				  sizeof oom_problem - 1);
	return rc == 0 || http_req_replied(r);
}

bool http_later_resume(struct http_req *r)
{
	struct http_later *l = http_req_later(r);
	pthread_mutex_lock(&l->mu);
	if (l->state != LATER_READY) {
		/* No answer yet (the handler just deferred, or a spurious call after a
		 * resume): park the connection until the answer resumes it. */
		if (l->state == LATER_PENDING) {
			l->suspended = true;
			MHD_suspend_connection(l->conn);
		}
		pthread_mutex_unlock(&l->mu);
		return true;
	}
	struct later_answer a = l->ans;
	memset(&l->ans, 0, sizeof l->ans);
	l->state = LATER_SENT;
	/* No more header changes once an answer is stored (http_later_header refuses). */
	for (size_t i = 0; i < l->nhdr; i++)
		if (http_reply_header(r, l->hdr_name[i], l->hdr_value[i]) != 0)
			LOG_WARN("http.header_dropped", LOG_S("route", http_req_route(r)),
				 LOG_S("header", l->hdr_name[i]),
				 LOG_S("detail", "more than 16 response headers"));
	pthread_mutex_unlock(&l->mu);
	return deliver(r, &a);
}

void http_later_detach(struct http_req *r)
{
	struct http_later *l = http_req_later(r);
	if (!l)
		return;
	struct http_server *s = http_req_server(r);
	pthread_mutex_lock(&s->mu);
	if (l->prev)
		l->prev->next = l->next;
	else
		s->laters = l->next;
	if (l->next)
		l->next->prev = l->prev;
	l->next = l->prev = NULL;
	s->nlaters--;
	pthread_mutex_unlock(&s->mu);
	pthread_mutex_lock(&l->mu);
	l->gone = true;
	l->suspended = false;
	/* An answer stored but never queued (the connection ended first) is dropped. */
	struct later_answer a = l->ans;
	memset(&l->ans, 0, sizeof l->ans);
	pthread_mutex_unlock(&l->mu);
	if (a.stream)
		http_stream_abandon(a.stream); /* its producer's writes now return ERR_CANCELLED */
	a.stream = NULL;
	answer_clear(&a);
	http_req_set_later(r, NULL);
	later_unref(l);
}

void http_laters_cancel(struct http_server *s)
{
	unsigned n = 0;
	pthread_mutex_lock(&s->mu);
	for (struct http_later *l = s->laters; l; l = l->next) {
		pthread_mutex_lock(&l->mu);
		if (!l->gone && l->state == LATER_PENDING) {
			problem_answer(&l->ans, l->id, ERR_UNAVAILABLE, 503, "shutting down", NULL);
			l->state = LATER_READY;
			if (l->suspended) {
				l->suspended = false;
				MHD_resume_connection(l->conn);
			}
			n++;
		}
		pthread_mutex_unlock(&l->mu);
	}
	pthread_mutex_unlock(&s->mu);
	if (n)
		LOG_WARN("http.deferred_cancelled", LOG_I("requests", n),
			 LOG_S("detail", "shutting down: requests waiting for a deferred answer were answered 503"));
}
