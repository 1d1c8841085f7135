/* sse: server-sent events (the WHATWG "text/event-stream" format), both sides.
 *
 * Writer: sse_encode() frames one event (id, event name, data split into lines). An
 * sse_log is the recent history of one event stream (for Mimir, one generation): events
 * get consecutive ids from 1, the log keeps the last max_events / max_bytes of them,
 * and pushes every new event to the HTTP streams attached to it. A client that lost its
 * connection reattaches with its Last-Event-ID and gets exactly the events after it
 * (or ERR_RANGE when they have already left the buffer). Heartbeats are comment lines
 * written by the HTTP layer into idle streams.
 *
 * Reader: sse_parser turns bytes from the network, in chunks of any size, into events,
 * for clients (the CLI, tests) and for relays. */
#ifndef MIMIR_SSE_H
#define MIMIR_SSE_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

struct http_req;
struct http_stream;

#define SSE_CONTENT_TYPE "text/event-stream; charset=utf-8"
#define SSE_HEARTBEAT ": heartbeat\n\n"
#define SSE_EVENT_NAME_MAX 31

/* Event names: 1..31 of [A-Za-z0-9_.-]. */
bool sse_event_name_ok(const char *name);

/* Frames one event into a new buffer (caller frees): "id: <id>\n" (id 0: no id line),
 * "event: <name>\n" (name NULL: none), one "data: " line per line of data (CRLF, CR
 * and LF all end a line), then a blank line; NUL-terminated for convenience.
 * ERR_INVALID for a bad name. */
int sse_encode(uint64_t id, const char *event, const char *data, size_t len, char **out,
	       size_t *out_len);

/* Last-Event-ID: 1..20 decimal digits, no sign or spaces, <= UINT64_MAX. */
int sse_parse_last_id(const char *s, uint64_t *out);

/* Answers the request with an event stream (200, text/event-stream, heartbeats every
 * heartbeat_ms). */
int sse_reply(struct http_req *req, unsigned heartbeat_ms, struct http_stream **out);

/* ---- the replay log ---- */
struct sse_log;
struct sse_log *sse_log_new(size_t max_events, size_t max_bytes);
/* Closes every attached stream and frees. Accepts NULL. */
void sse_log_free(struct sse_log *l);
/* Appends an event (ids 1, 2, ...), writes it to every attached stream; streams whose
 * client has gone are detached and released. ERR_INVALID once the log is finished. */
int sse_log_append(struct sse_log *l, const char *event, const char *data, size_t len,
		   uint64_t *id_out);
/* Takes ownership of the caller's reference to st: replays the events with id > after,
 * then keeps the stream attached for new ones. When the log is already finished the
 * stream gets the replay and is closed. On an error the stream stays the caller's:
 * ERR_RANGE when an event after `after` has been dropped from the buffer, ERR_INVALID
 * when after is beyond the last id, ERR_NOMEM. */
int sse_log_attach(struct sse_log *l, struct http_stream *st, uint64_t after);
/* Marks the stream complete: attached streams are closed after what they have. */
void sse_log_finish(struct sse_log *l);
uint64_t sse_log_last_id(struct sse_log *l);
size_t sse_log_attached(struct sse_log *l);
/* Releases the attached streams whose client has gone and returns how many remain. A
 * log learns of a gone client at its next write otherwise, and a stream can wait long
 * for its next event (a generation waiting for its client's INPUT); the HTTP layer's
 * heartbeats find dead connections, and this asks each stream. */
size_t sse_log_clients(struct sse_log *l);

/* ---- the reader ---- */
struct sse_event {
	const char *id;    /* NULL when the event had no id line */
	const char *event; /* "message" when none was given */
	const char *data;  /* data lines joined with '\n' */
	size_t data_len;
	unsigned retry_ms; /* 0 unless a retry line came */
};
/* Return non-zero from the callback to stop parsing (sse_parser_feed returns it). */
typedef int (*sse_event_fn)(const struct sse_event *ev, void *arg);
struct sse_parser;
/* max_event bounds one event's size (data and fields); past it, ERR_TOO_LARGE. */
struct sse_parser *sse_parser_new(size_t max_event);
void sse_parser_free(struct sse_parser *p);
int sse_parser_feed(struct sse_parser *p, const char *buf, size_t len, sse_event_fn fn, void *arg);
/* The id of the last event that carried one ("" if none): what to send as Last-Event-ID. */
const char *sse_parser_last_id(const struct sse_parser *p);

#endif
