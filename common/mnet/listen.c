/* mnet streams, receiving end: the hub's own mTLS listener and the one reader thread
 * that serves it. A connection goes through three states, driven by epoll with
 * non-blocking sockets: the TLS handshake (OpenSSL; a client certificate from the CA
 * alone is required), the Upgrade request (one bounded HTTP/1.1 request that binds the
 * connection to one session, generation, sender and receiver, with the checks a POSTed
 * payload passes), then the stream of payloads. A payload's header is checked against
 * the binding before its data is read; a large payload's room is reserved against the
 * hub's bound at that point, so a lying length cannot allocate past it, and the whole
 * payload is then filed under the hub lock by mnet_file, the rules a POST follows. A
 * stream that ends marks its sender gone.
 *
 * Who reads a stream: the reader until the generation's engine thread first needs it
 * in an exchange; from then on the engine reads it itself, in the poll loop that also
 * sends (one thread woken per payload instead of two), and between its rounds nobody
 * does: a peer is at most one round ahead, and what it sent waits in the socket. The
 * engine gives its streams back when its generation ends (mnet_streams_detach), for the
 * reader to close. Ownership is under the hub lock: IDLE (armed in epoll, one-shot, so
 * an event reaches the reader once), READER (being stepped; an engine that wants it
 * meanwhile gets it right after) or ENGINE (the reader ignores its events and leaves it
 * unarmed). Only the reader frees streams. */
#define _GNU_SOURCE /* accept4 */
#include <arpa/inet.h>
#include <errno.h>
#include <inttypes.h>
#include <netdb.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <openssl/err.h>
#include <openssl/ssl.h>
#include <openssl/x509.h>
#include <openssl/x509v3.h>
#include <poll.h>
#include <signal.h>
#include <sodium.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/epoll.h>
#include <sys/eventfd.h>
#include <sys/socket.h>
#include <unistd.h>

#include "err/err.h"
#include "ident/ident.h"
#include "attestpeer/attestpeer.h"
#include "log/log.h"
#include "mnet/mnet_int.h"

#define REQ_MAX 4096        /* the Upgrade request, headers included */
#define SMALL_MAX 16384     /* payloads up to this are read before the hub is asked for
			       room (one per stream at a time, so bounded all the same) */
#define PUMP_BUDGET 64      /* payloads per stream per wake-up, for fairness */
#define SWEEP_EVERY_MS 250  /* handshake deadlines and unjoined generations */

enum st_state { ST_HANDSHAKE, ST_REQUEST, ST_STREAM };
enum st_owner { OWN_IDLE, OWN_READER, OWN_ENGINE };

struct mnet_stream {
	int fd;
	SSL *ssl;
	enum st_state state;
	long long opened_ms;
	uint32_t events;       /* what epoll watches now */
	char remote[64];
	char cn[IDENT_CN_MAX + 1];
	bool party;            /* the certificate carries the party role */
	uint8_t fp[32];
	/* the binding, from the Upgrade request */
	uint8_t session[MNET_SESSION_LEN];
	uint64_t generation;
	unsigned sender, receiver;
	/* under the hub lock */
	struct chan *chan;     /* NULL before the 101 and once the generation is over here */
	bool closing;          /* the reader is to close it */
	enum st_owner owner;
	bool want;             /* the engine waits for it to leave the reader */
	bool ready;            /* (engine) poll said readable */
	struct mnet_stream *next, *prev;
	/* the reader's alone */
	struct mnet_stream *todo;
	char *req;             /* the request while it arrives (REQ_MAX) */
	size_t req_len;
	char *early;           /* bytes that followed the request */
	size_t early_len, early_off;
	uint8_t hb[MNET_HDR_LEN];
	size_t hb_have;
	struct mnet_hdr hd;
	bool in_data, skip;
	bool more;             /* the read budget ran out with bytes inside OpenSSL */
	char close_why[96];    /* why the engine gave it back to be closed */
	uint8_t *data;
	size_t have, reserved;
};

/* epoll tags for the two descriptors that are not streams */
static char tag_event, tag_listen;

static void kick_reader(struct mnet_hub *h)
{
	if (h->evfd >= 0) {
		uint64_t one = 1;
		ssize_t w = write(h->evfd, &one, sizeof one);
		(void)w; /* a full counter already means "wake up" */
	}
}

void mnet_streams_detach(struct mnet_hub *h, struct chan *c)
{
	bool any = false;
	for (unsigned j = 0; j < MPC_MAX_PARTIES; j++) {
		struct mnet_stream *s = c->in[j];
		if (!s)
			continue;
		s->chan = NULL;
		s->closing = true;
		s->want = false;
		if (s->owner == OWN_ENGINE)
			s->owner = OWN_IDLE; /* the engine is done with it: the reader closes it */
		c->in[j] = NULL;
		any = true;
	}
	if (any)
		kick_reader(h);
}

/* Reader only. why is NULL for an orderly end (the sender closed after its rounds, or
 * the generation ended here). */
static void stream_close(struct mnet_hub *h, struct mnet_stream *s, const char *why)
{
	epoll_ctl(h->epfd, EPOLL_CTL_DEL, s->fd, NULL);
	pthread_mutex_lock(&h->mu);
	if (s->prev)
		s->prev->next = s->next;
	else
		h->streams = s->next;
	if (s->next)
		s->next->prev = s->prev;
	h->nstreams--;
	h->buffered -= s->reserved;
	s->reserved = 0;
	struct chan *c = s->chan;
	if (c) {
		if (c->in[s->sender] == s)
			c->in[s->sender] = NULL;
		c->gone[s->sender] = true;
		mnet_chan_notify(c);
	}
	pthread_mutex_unlock(&h->mu);
	if (!why && s->close_why[0])
		why = s->close_why;
	if (why && s->state == ST_STREAM)
		LOG_WARN("mnet.stream_closed", LOG_S("peer", s->cn), LOG_I("sender", s->sender),
			 LOG_I("receiver", s->receiver), LOG_I("generation", s->generation), LOG_S("why", why));
	else if (why)
		LOG_WARN("mnet.stream_refused", LOG_S("remote", s->remote), LOG_S("peer", s->cn), LOG_S("why", why));
	else
		LOG_DEBUG("mnet.stream_end", LOG_S("peer", s->cn), LOG_I("sender", s->sender),
			  LOG_I("generation", s->generation));
	if (s->ssl) {
		if (!why)
			SSL_shutdown(s->ssl); /* best effort: one close_notify, no waiting */
		SSL_free(s->ssl);
	}
	close(s->fd);
	free(s->req);
	free(s->early);
	if (s->data) {
		sodium_memzero(s->data, s->have);
		free(s->data);
	}
	free(s);
}

static void watch(struct mnet_hub *h, struct mnet_stream *s, uint32_t events)
{
	(void)h;
	s->events = events;
}

/* Re-arms the one-shot registration (after the reader's step, or the engine's loan). */
static void arm(struct mnet_hub *h, struct mnet_stream *s)
{
	struct epoll_event ev = {.events = s->events | EPOLLONESHOT, .data.ptr = s};
	epoll_ctl(h->epfd, EPOLL_CTL_MOD, s->fd, &ev);
}

/* Bytes to read that epoll and poll() cannot see: early bytes, or whole records
 * inside OpenSSL left when a read budget ran out. (Not SSL_has_pending: it also counts
 * a partial record, which needs the socket, and waiting on it would spin.) */
static bool has_pending(struct mnet_stream *s)
{
	return s->early_off < s->early_len || s->more;
}

/* Why OpenSSL gave up, for the log. */
static const char *tls_why(struct mnet_stream *s, int err, char *buf, size_t cap)
{
	long v = SSL_get_verify_result(s->ssl);
	unsigned long e = ERR_peek_last_error();
	if (v != X509_V_OK)
		snprintf(buf, cap, "client certificate refused: %s", X509_verify_cert_error_string(v));
	else if (e)
		snprintf(buf, cap, "%s", ERR_reason_error_string(e) ? ERR_reason_error_string(e) : "TLS error");
	else if (err == SSL_ERROR_SYSCALL || err == SSL_ERROR_ZERO_RETURN)
		snprintf(buf, cap, "the peer closed the connection");
	else
		snprintf(buf, cap, "TLS error %d", err);
	return buf;
}

/* ---- reading ---- */

/* Reads up to want bytes: >0, 0 at the end of the stream, -1 when nothing is there
 * yet, -2 on an error (with *why). */
static ssize_t stream_read(struct mnet_stream *s, void *dst, size_t want, const char **why)
{
	if (s->early_off < s->early_len) {
		size_t k = s->early_len - s->early_off;
		k = k < want ? k : want;
		memcpy(dst, s->early + s->early_off, k);
		s->early_off += k;
		return (ssize_t)k;
	}
	ERR_clear_error();
	int n = SSL_read(s->ssl, dst, want > INT32_MAX ? INT32_MAX : (int)want);
	if (n > 0)
		return n;
	int err = SSL_get_error(s->ssl, n);
	if (err == SSL_ERROR_WANT_READ || err == SSL_ERROR_WANT_WRITE)
		return -1;
	if (err == SSL_ERROR_ZERO_RETURN || (err == SSL_ERROR_SYSCALL && ERR_peek_error() == 0))
		return 0; /* close_notify, or the peer's socket closed (a process gone) */
	*why = "TLS error on the stream";
	return -2;
}

/* Ends the generation for a payload that breaks the stream's rules (hub lock held). */
static void violation(struct mnet_stream *s, const char *what)
{
	if (s->chan) {
		char why[128];
		snprintf(why, sizeof why, "party %u %s on its stream", s->sender, what);
		mnet_chan_abort(s->chan, why);
	}
}

/* A whole header arrived: checks it against the stream's binding, and for a large
 * payload against the generation, reserving room for its data. Returns NULL to go on,
 * else why to close ("" for an orderly close: the generation is over here). A small
 * payload is read first and checked once, when it is filed: one trip to the hub lock
 * per round and peer. */
static const char *stream_header(struct mnet_hub *h, struct mnet_stream *s)
{
	const char *why = NULL;
	struct mnet_hdr *hd = &s->hd;
	int rc = mnet_hdr_decode_head(s->hb, hd);
	bool bad_binding = rc == 0 && (hd->sender != s->sender || hd->receiver != s->receiver ||
				       hd->generation != s->generation ||
				       memcmp(hd->session, s->session, MNET_SESSION_LEN) != 0);
	s->skip = false;
	if (rc == 0 && !bad_binding && hd->length <= SMALL_MAX)
		goto read;
	pthread_mutex_lock(&h->mu);
	if (!s->chan) {
		why = "";
	} else if (rc != 0) {
		why = "malformed payload header";
		violation(s, "sent a malformed payload header");
	} else if (bad_binding) {
		why = "payload for another generation or party than the stream's";
		violation(s, "sent a payload for another generation or party");
	} else if (s->chan->aborted) {
		s->skip = true; /* read and dropped */
	} else if (hd->round != s->chan->next_round[s->sender]) {
		why = "replayed or reordered round";
		char w[96];
		snprintf(w, sizeof w, "sent round %" PRIu64 ", expected %" PRIu64 " (replayed or reordered)",
			 hd->round, s->chan->next_round[s->sender]);
		violation(s, w);
	} else if (h->buffered + hd->length > h->max_buffered) {
		why = "the receiving party's round buffer is full";
		mnet_chan_abort(s->chan, why);
	} else {
		h->buffered += hd->length;
		s->reserved = hd->length;
	}
	pthread_mutex_unlock(&h->mu);
	if (why)
		return why;
read:
	s->have = 0;
	s->in_data = hd->length > 0;
	if (!s->skip && hd->length && !(s->data = malloc(hd->length)))
		return "out of memory";
	return NULL;
}

/* The payload is whole: files it. Returns NULL to go on, else why to close. */
static const char *stream_deliver(struct mnet_hub *h, struct mnet_stream *s)
{
	const char *detail = NULL, *why = NULL;
	uint8_t *data = s->data;
	s->data = NULL;
	s->in_data = false;
	pthread_mutex_lock(&h->mu);
	h->buffered -= s->reserved;
	s->reserved = 0;
	struct chan *c = s->chan;
	if (!c) {
		why = "";
	} else if (!s->skip && !c->aborted) {
		/* (A payload for a generation aborted here is dropped: the sender has our
		 * notice.) The reason may live in the generation, which may go once the
		 * lock is dropped: copied. */
		if (mnet_file(h, c, &s->hd, data, &detail) != 0) {
			snprintf(s->close_why, sizeof s->close_why, "%s", detail ? detail : "payload refused");
			why = s->close_why;
		}
		data = NULL; /* taken */
	}
	pthread_mutex_unlock(&h->mu);
	if (data) {
		sodium_memzero(data, s->hd.length);
		free(data);
	}
	return why;
}

/* Reads what the stream has. Returns NULL to keep it, else why to close ("" when it
 * ended in order). */
static const char *stream_pump(struct mnet_hub *h, struct mnet_stream *s)
{
	uint8_t scratch[16384]; /* a dropped payload's data: wiped after use */
	bool scratched = false;
	const char *why = NULL;
	s->more = false;
	for (int budget = PUMP_BUDGET;; budget--) {
		if (budget == 0) {
			/* epoll cannot see what OpenSSL has already read: come back. */
			s->more = true;
			break;
		}
		ssize_t k;
		bool whole = false;
		if (!s->in_data) {
			k = stream_read(s, s->hb + s->hb_have, MNET_HDR_LEN - s->hb_have, &why);
			if (k > 0 && (s->hb_have += (size_t)k) == MNET_HDR_LEN) {
				s->hb_have = 0;
				if ((why = stream_header(h, s)) != NULL)
					break;
				whole = !s->in_data; /* no data to follow */
			}
		} else {
			size_t want = s->hd.length - s->have;
			uint8_t *dst = s->data ? s->data + s->have : scratch;
			if (!s->data && want > sizeof scratch)
				want = sizeof scratch;
			scratched = scratched || !s->data;
			k = stream_read(s, dst, want, &why);
			whole = k > 0 && (s->have += (size_t)k) == s->hd.length;
		}
		if (whole && (why = stream_deliver(h, s)) != NULL)
			break;
		if (!whole && k > 0) {
			budget++; /* part of a payload: not one of the budget's */
			continue;
		}
		if (k == 0) {
			why = s->in_data || s->hb_have ? "the connection ended in the middle of a payload" : "";
			break;
		}
		if (k < 0) { /* -1: nothing more now; -2: an error, why is set */
			if (k == -1)
				why = NULL;
			break;
		}
		/* A payload ended with nothing more read ahead: back to epoll rather than
		 * a read that would only say so. */
		if (s->early_off == s->early_len && !SSL_has_pending(s->ssl))
			break;
	}
	if (scratched)
		sodium_memzero(scratch, sizeof scratch);
	return why;
}

/* ---- the Upgrade request ---- */

static int respond(struct mnet_stream *s, const char *text, size_t len)
{
	ERR_clear_error();
	/* Small, and the first thing this side writes: the socket buffer takes it. */
	return SSL_write(s->ssl, text, (int)len) == (int)len ? 0 : ERR_IO;
}

/* Answers a refusal (problem+json, then the connection closes). */
static void refuse(struct mnet_stream *s, int code, unsigned status, const char *detail, const char *field)
{
	json_t *p = err_problem_status(code, (int)status, detail, field, NULL);
	char *body = p ? json_dumps(p, JSON_COMPACT) : NULL;
	json_decref(p);
	char head[256];
	size_t bl = body ? strlen(body) : 0;
	int hl = snprintf(head, sizeof head,
			  "HTTP/1.1 %u %s\r\nContent-Type: application/problem+json\r\nContent-Length: %zu\r\n"
			  "Connection: close\r\n\r\n",
			  status, err_title(code), bl);
	if (hl > 0 && (size_t)hl < sizeof head && respond(s, head, (size_t)hl) == 0 && bl)
		respond(s, body, bl);
	free(body);
	LOG_WARN("mnet.stream_refused", LOG_S("remote", s->remote), LOG_S("peer", s->cn), LOG_I("status", status),
		 LOG_S("detail", detail ? detail : err_title(code)), LOG_S("field", field ? field : ""));
}

/* Case-insensitive header lookup in the request block (NUL-terminated, lines end in
 * CRLF); copies the value. */
static bool header_value(const char *req, const char *name, char *out, size_t cap)
{
	size_t nl = strlen(name);
	for (const char *p = strstr(req, "\r\n"); p && p[2] != '\r'; p = strstr(p + 2, "\r\n")) {
		const char *line = p + 2;
		if (strncasecmp(line, name, nl) != 0 || line[nl] != ':')
			continue;
		const char *v = line + nl + 1, *e = strstr(v, "\r\n");
		while (v < e && (*v == ' ' || *v == '\t'))
			v++;
		while (e > v && (e[-1] == ' ' || e[-1] == '\t'))
			e--;
		size_t l = (size_t)(e - v) < cap - 1 ? (size_t)(e - v) : cap - 1;
		memcpy(out, v, l);
		out[l] = '\0';
		return true;
	}
	return false;
}

static bool has_token(const char *value, const char *token)
{
	size_t tl = strlen(token);
	for (const char *p = value; *p;) {
		while (*p == ' ' || *p == '\t' || *p == ',')
			p++;
		const char *e = p;
		while (*e && *e != ',')
			e++;
		const char *t = e;
		while (t > p && (t[-1] == ' ' || t[-1] == '\t'))
			t--;
		if ((size_t)(t - p) == tl && strncasecmp(p, token, tl) == 0)
			return true;
		p = e;
	}
	return false;
}

/* One query parameter (decimal, no sign) of the target. */
static int query_u64(const char *query, const char *key, uint64_t max, uint64_t *out)
{
	size_t kl = strlen(key);
	for (const char *p = query; p && *p; p = strchr(p, '&') ? strchr(p, '&') + 1 : NULL) {
		if (strncmp(p, key, kl) != 0 || p[kl] != '=')
			continue;
		const char *v = p + kl + 1;
		if (*v < '0' || *v > '9')
			return ERR_PARSE;
		char *end;
		errno = 0;
		unsigned long long x = strtoull(v, &end, 10);
		if (errno || (*end && *end != '&') || x > max)
			return ERR_PARSE;
		*out = x;
		return 0;
	}
	return ERR_PARSE;
}

static int query_session(const char *query, uint8_t out[MNET_SESSION_LEN])
{
	for (const char *p = query; p && *p; p = strchr(p, '&') ? strchr(p, '&') + 1 : NULL) {
		if (strncmp(p, "session=", 8) != 0)
			continue;
		const char *v = p + 8;
		size_t vl = strcspn(v, "&"), bl = 0;
		if (vl != 2 * MNET_SESSION_LEN ||
		    sodium_hex2bin(out, MNET_SESSION_LEN, v, vl, NULL, &bl, NULL) != 0 || bl != MNET_SESSION_LEN)
			return ERR_PARSE;
		return 0;
	}
	return ERR_PARSE;
}

/* The request is whole (s->req, NUL-terminated at its blank line): binds the stream
 * or refuses it. Returns NULL to go on streaming, else why to close. */
static const char *stream_request(struct mnet_hub *h, struct mnet_stream *s)
{
	char *req = s->req;
	const char *target_start = strncmp(req, "GET ", 4) == 0 ? req + 4 : NULL;
	const char *sp = target_start ? strchr(target_start, ' ') : NULL;
	if (!sp || strncmp(sp, " HTTP/1.1\r\n", 11) != 0) {
		refuse(s, ERR_PARSE, 400, "expected GET " MNET_STREAM_ROUTE "?... HTTP/1.1", NULL);
		return "";
	}
	size_t rl = strlen(MNET_STREAM_ROUTE);
	if ((size_t)(sp - target_start) <= rl || strncmp(target_start, MNET_STREAM_ROUTE, rl) != 0 ||
	    target_start[rl] != '?') {
		refuse(s, ERR_NOT_FOUND, 404, "a stream listener serves " MNET_STREAM_ROUTE " only", NULL);
		return "";
	}
	char query[512];
	size_t ql = (size_t)(sp - target_start) - rl - 1;
	if (ql >= sizeof query) {
		refuse(s, ERR_PARSE, 400, "query too long", NULL);
		return "";
	}
	memcpy(query, target_start + rl + 1, ql);
	query[ql] = '\0';
	char up[128];
	if (!header_value(req, "Upgrade", up, sizeof up) || !has_token(up, MNET_STREAM_PROTOCOL)) {
		refuse(s, ERR_UNSUPPORTED, 426, "a stream needs Upgrade: " MNET_STREAM_PROTOCOL, NULL);
		return "";
	}
	if (!s->party) {
		refuse(s, ERR_FORBIDDEN, 403, "only a party certificate may open a round stream", NULL);
		return "";
	}
	uint64_t gen = 0, sender = 0, receiver = 0;
	const char *field = NULL;
	if (query_session(query, s->session) != 0)
		field = "session";
	else if (query_u64(query, "generation", UINT64_MAX, &gen) != 0)
		field = "generation";
	else if (query_u64(query, "sender", MPC_MAX_PARTIES - 1, &sender) != 0)
		field = "sender";
	else if (query_u64(query, "receiver", MPC_MAX_PARTIES - 1, &receiver) != 0 || receiver == sender)
		field = "receiver";
	if (field) {
		refuse(s, ERR_PARSE, 400, "a round stream names ?session=<32 hex>&generation=<n>&sender=<i>&receiver=<j>",
		       field);
		return "";
	}
	s->generation = gen;
	s->sender = (unsigned)sender;
	s->receiver = (unsigned)receiver;

	const char *detail = NULL;
	char why[128] = "";
	int rc;
	pthread_mutex_lock(&h->mu);
	struct chan *c = mnet_chan_get(h, s->session, gen, s->receiver, &detail);
	if (!c) {
		rc = ERR_UNAVAILABLE;
	} else if ((rc = mnet_check_sender(h, c, s->sender, s->fp, s->cn, &detail)) == 0) {
		if (c->stream_seen[s->sender]) {
			rc = ERR_CONFLICT;
			detail = "this sender already opened its stream for this generation";
		} else {
			c->stream_seen[s->sender] = true;
			c->in[s->sender] = s;
			s->chan = c;
		}
	}
	if (detail)
		snprintf(why, sizeof why, "%s", detail); /* it may live in the generation */
	pthread_mutex_unlock(&h->mu);
	if (rc != 0) {
		refuse(s, rc, rc == ERR_ABORTED ? 410 : (unsigned)err_http_status(rc), why[0] ? why : NULL, NULL);
		return "";
	}
	static const char ok[] = "HTTP/1.1 101 Switching Protocols\r\nConnection: Upgrade\r\nUpgrade: "
				 MNET_STREAM_PROTOCOL "\r\n\r\n";
	if (respond(s, ok, sizeof ok - 1) != 0)
		return "could not answer the Upgrade request";
	s->state = ST_STREAM;
	LOG_DEBUG("mnet.stream_open", LOG_S("peer", s->cn), LOG_I("sender", s->sender), LOG_I("receiver", s->receiver),
		  LOG_I("generation", s->generation));
	return NULL;
}

/* Reads the request; once its blank line is in, binds the stream. */
static const char *stream_request_read(struct mnet_hub *h, struct mnet_stream *s)
{
	if (!s->req && !(s->req = malloc(REQ_MAX + 1)))
		return "out of memory";
	for (;;) {
		if (s->req_len == REQ_MAX) {
			refuse(s, ERR_TOO_LARGE, 431, "the Upgrade request is larger than 4 KiB", NULL);
			return "";
		}
		ERR_clear_error();
		int n = SSL_read(s->ssl, s->req + s->req_len, (int)(REQ_MAX - s->req_len));
		if (n <= 0) {
			int err = SSL_get_error(s->ssl, n);
			if (err == SSL_ERROR_WANT_READ || err == SSL_ERROR_WANT_WRITE)
				return NULL;
			return "the connection ended before its Upgrade request";
		}
		s->req_len += (size_t)n;
		s->req[s->req_len] = '\0';
		char *end = strstr(s->req, "\r\n\r\n");
		if (!end)
			continue;
		/* Whatever follows the blank line is the start of the stream. */
		size_t used = (size_t)(end + 4 - s->req);
		if (used < s->req_len) {
			s->early_len = s->req_len - used;
			if (!(s->early = malloc(s->early_len)))
				return "out of memory";
			memcpy(s->early, s->req + used, s->early_len);
		}
		end[2] = '\0'; /* keep the last header's CRLF for header_value */
		const char *why = stream_request(h, s);
		free(s->req);
		s->req = NULL;
		return why;
	}
}

/* ---- the handshake ---- */

static const char *stream_handshake(struct mnet_hub *h, struct mnet_stream *s)
{
	ERR_clear_error();
	int r = SSL_accept(s->ssl);
	if (r != 1) {
		int err = SSL_get_error(s->ssl, r);
		if (err == SSL_ERROR_WANT_READ) {
			watch(h, s, EPOLLIN);
			return NULL;
		}
		if (err == SSL_ERROR_WANT_WRITE) {
			watch(h, s, EPOLLOUT);
			return NULL;
		}
		static char why[200]; /* the reader's alone */
		return tls_why(s, err, why, sizeof why);
	}
	watch(h, s, EPOLLIN);
	X509 *peer = SSL_get0_peer_certificate(s->ssl);
	struct ident id;
	if (!peer || ident_from_x509(peer, &id) != 0)
		return "client certificate identity unreadable";
	/* the process's verifier (tls.crl, tls.mode), as on the HTTPS server */
	struct attestpeer *ap = attestpeer_default();
	struct attestpeer_verdict v = {0};
	int arc = ap ? attestpeer_check_x509(ap, peer, NULL, &v) : 0;
	attestpeer_free(ap);
	if (arc != 0) {
		static char refused[300]; /* the reader's alone */
		snprintf(refused, sizeof refused, "client certificate refused: %s", v.detail);
		return refused;
	}
	if (v.simulated)
		LOG_WARN("mnet.simulated_peer", LOG_S("cn", id.cn), LOG_S("detail", v.detail));
	snprintf(s->cn, sizeof s->cn, "%s", id.cn);
	memcpy(s->fp, id.fingerprint, sizeof s->fp);
	s->party = id.role == IDENT_ROLE_PARTY;
	s->state = ST_REQUEST;
	return NULL;
}

/* One readiness event (or a return for more) on a connection. Returns false when the
 * connection was closed (and freed). */
static bool stream_step(struct mnet_hub *h, struct mnet_stream *s)
{
	const char *why = NULL;
	if (s->state == ST_HANDSHAKE && (why = stream_handshake(h, s)) == NULL && s->state == ST_HANDSHAKE)
		return true;
	if (!why && s->state == ST_REQUEST)
		why = stream_request_read(h, s);
	if (!why && s->state == ST_STREAM)
		why = stream_pump(h, s);
	if (why) {
		stream_close(h, s, *why ? why : NULL);
		return false;
	}
	return true;
}

/* The reader's turn on a connection it may own. Returns true when it should come back
 * without waiting for an event (bytes inside OpenSSL). */
static bool reader_step(struct mnet_hub *h, struct mnet_stream *s)
{
	pthread_mutex_lock(&h->mu);
	bool mine = s->owner == OWN_IDLE && !s->closing;
	if (mine)
		s->owner = OWN_READER;
	pthread_mutex_unlock(&h->mu);
	if (!mine || !stream_step(h, s))
		return false;
	bool more = false;
	pthread_mutex_lock(&h->mu);
	struct chan *c = s->chan;
	if (c && (s->want || c->in_exchange)) {
		/* Its engine waits in an exchange: it reads the stream from now on. */
		s->want = false;
		s->owner = OWN_ENGINE;
		mnet_chan_notify(c);
	} else {
		s->owner = OWN_IDLE;
		more = s->more;
		if (!more)
			arm(h, s);
	}
	pthread_mutex_unlock(&h->mu);
	return more;
}

/* ---- the engine's loan (hub lock held for all but pump) ---- */

void mnet_streams_borrow(struct mnet_hub *h, struct chan *c)
{
	(void)h;
	for (unsigned j = 0; j < MPC_MAX_PARTIES; j++) {
		struct mnet_stream *s = c->in[j];
		if (!s)
			continue;
		if (s->owner == OWN_IDLE)
			s->owner = OWN_ENGINE, s->ready = true; /* it may hold bytes already */
		else if (s->owner == OWN_READER)
			s->want = true;
	}
}

unsigned mnet_streams_poll(struct chan *c, struct pollfd *pf, struct mnet_stream **who, bool *now)
{
	unsigned n = 0;
	for (unsigned j = 0; j < MPC_MAX_PARTIES; j++) {
		struct mnet_stream *s = c->in[j];
		if (!s || s->owner != OWN_ENGINE)
			continue;
		if (s->ready || has_pending(s))
			s->ready = *now = true;
		pf[n] = (struct pollfd){.fd = s->fd, .events = POLLIN};
		who[n++] = s;
	}
	return n;
}

void mnet_stream_mark_ready(struct mnet_stream *s) { s->ready = true; }

/* The engine reads one of its borrowed streams (hub lock not held). A stream that
 * fails or ends goes back to the reader to be closed, its sender marked gone. */
void mnet_stream_engine_pump(struct mnet_hub *h, struct mnet_stream *s)
{
	if (!s->ready)
		return;
	s->ready = false;
	const char *why = stream_pump(h, s);
	if (s->more)
		s->ready = true;
	if (!why)
		return;
	pthread_mutex_lock(&h->mu);
	struct chan *c = s->chan;
	if (c) {
		if (c->in[s->sender] == s)
			c->in[s->sender] = NULL;
		c->gone[s->sender] = true;
		s->chan = NULL;
	}
	if (*why)
		snprintf(s->close_why, sizeof s->close_why, "%s", why);
	s->closing = true;
	s->owner = OWN_IDLE;
	kick_reader(h);
	pthread_mutex_unlock(&h->mu);
}

static void accept_all(struct mnet_hub *h)
{
	for (;;) {
		struct sockaddr_storage ss;
		socklen_t sl = sizeof ss;
		int fd = accept4(h->lfd, (struct sockaddr *)&ss, &sl, SOCK_NONBLOCK | SOCK_CLOEXEC);
		if (fd < 0)
			return; /* EAGAIN, or a connection that went away meanwhile */
		char remote[64] = "?", host[INET6_ADDRSTRLEN];
		if (ss.ss_family == AF_INET &&
		    inet_ntop(AF_INET, &((struct sockaddr_in *)&ss)->sin_addr, host, sizeof host))
			snprintf(remote, sizeof remote, "%s:%u", host, ntohs(((struct sockaddr_in *)&ss)->sin_port));
		else if (ss.ss_family == AF_INET6 &&
			 inet_ntop(AF_INET6, &((struct sockaddr_in6 *)&ss)->sin6_addr, host, sizeof host))
			snprintf(remote, sizeof remote, "[%s]:%u", host, ntohs(((struct sockaddr_in6 *)&ss)->sin6_port));
		pthread_mutex_lock(&h->mu);
		bool full = h->nstreams >= h->max_streams;
		pthread_mutex_unlock(&h->mu);
		struct mnet_stream *s = full ? NULL : calloc(1, sizeof *s);
		if (s)
			s->ssl = SSL_new(h->tls);
		if (!s || !s->ssl || SSL_set_fd(s->ssl, fd) != 1) {
			LOG_WARN("mnet.stream_refused", LOG_S("remote", remote),
				 LOG_S("why", full ? "too many stream connections" : "out of memory"));
			if (s)
				SSL_free(s->ssl);
			free(s);
			close(fd);
			continue;
		}
		int one = 1;
		setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
		s->fd = fd;
		s->state = ST_HANDSHAKE;
		s->opened_ms = mnet_mono_ms();
		s->events = EPOLLIN;
		snprintf(s->remote, sizeof s->remote, "%s", remote);
		struct epoll_event ev = {.events = EPOLLIN | EPOLLONESHOT, .data.ptr = s};
		if (epoll_ctl(h->epfd, EPOLL_CTL_ADD, fd, &ev) != 0) {
			SSL_free(s->ssl);
			free(s);
			close(fd);
			continue;
		}
		pthread_mutex_lock(&h->mu);
		s->next = h->streams;
		if (h->streams)
			h->streams->prev = s;
		h->streams = s;
		h->nstreams++;
		pthread_mutex_unlock(&h->mu);
	}
}

static void *reader_main(void *arg)
{
	struct mnet_hub *h = arg;
	/* A write to a connection the peer has closed must fail with EPIPE here, not
	 * kill the process (OpenSSL writes with plain send()). */
	sigset_t pipe;
	sigemptyset(&pipe);
	sigaddset(&pipe, SIGPIPE);
	pthread_sigmask(SIG_BLOCK, &pipe, NULL);
	long long last_sweep = mnet_mono_ms();
	bool more = false; /* a stream has bytes inside OpenSSL that epoll cannot see */
	for (;;) {
		struct epoll_event ev[32];
		int n = epoll_wait(h->epfd, ev, 32, more ? 0 : SWEEP_EVERY_MS);
		bool scan = more;
		more = false;
		for (int i = 0; i < n; i++) {
			if (ev[i].data.ptr == &tag_event) {
				uint64_t v;
				ssize_t r = read(h->evfd, &v, sizeof v);
				(void)r;
				scan = true;
			} else if (ev[i].data.ptr == &tag_listen) {
				accept_all(h);
			} else if (reader_step(h, ev[i].data.ptr)) {
				scan = true;
			}
		}
		long long now = mnet_mono_ms();
		if (now - last_sweep >= SWEEP_EVERY_MS)
			scan = true;
		if (!scan)
			continue;
		pthread_mutex_lock(&h->mu);
		bool stop = h->reader_stop; /* set with a kick of the eventfd */
		pthread_mutex_unlock(&h->mu);
		if (stop)
			break;
		/* Generations over here, expired handshakes, and streams to come back to.
		 * Only this thread frees streams, so the work lists stay valid unlocked. */
		struct mnet_stream *closing = NULL, *expired = NULL, *again = NULL;
		pthread_mutex_lock(&h->mu);
		if (now - last_sweep >= SWEEP_EVERY_MS) {
			mnet_hub_sweep(h);
			last_sweep = now;
		}
		for (struct mnet_stream *s = h->streams; s; s = s->next) {
			if (s->closing && s->owner == OWN_IDLE) {
				s->todo = closing;
				closing = s;
			} else if (s->state != ST_STREAM && now - s->opened_ms > h->handshake_ms) {
				s->todo = expired;
				expired = s;
			} else if (s->more && s->owner == OWN_IDLE) {
				s->todo = again;
				again = s;
			}
		}
		pthread_mutex_unlock(&h->mu);
		for (struct mnet_stream *s = closing, *next; s; s = next) {
			next = s->todo;
			stream_close(h, s, NULL);
		}
		for (struct mnet_stream *s = expired, *next; s; s = next) {
			next = s->todo;
			stream_close(h, s, "no TLS handshake and Upgrade request within the time allowed");
		}
		for (struct mnet_stream *s = again, *next; s; s = next) {
			next = s->todo;
			more = reader_step(h, s) || more;
		}
	}
	return NULL;
}

/* ---- set-up and tear-down ---- */

static SSL_CTX *server_tls(const struct mnet_listen_opts *o)
{
	SSL_CTX *ctx = SSL_CTX_new(TLS_server_method());
	STACK_OF(X509_NAME) *cas = NULL;
	if (!ctx || SSL_CTX_set_min_proto_version(ctx, TLS1_2_VERSION) != 1 ||
	    SSL_CTX_use_certificate_chain_file(ctx, o->cert_file) != 1 ||
	    SSL_CTX_use_PrivateKey_file(ctx, o->key_file, SSL_FILETYPE_PEM) != 1 ||
	    SSL_CTX_check_private_key(ctx) != 1 ||
	    SSL_CTX_load_verify_locations(ctx, o->ca_file, NULL) != 1 || /* the CA, nothing else */
	    !(cas = SSL_load_client_CA_file(o->ca_file))) {
		SSL_CTX_free(ctx);
		return NULL;
	}
	SSL_CTX_set_client_CA_list(ctx, cas);
	SSL_CTX_set_verify(ctx, SSL_VERIFY_PEER | SSL_VERIFY_FAIL_IF_NO_PEER_CERT, NULL);
	X509_VERIFY_PARAM_set_purpose(SSL_CTX_get0_param(ctx), X509_PURPOSE_SSL_CLIENT);
	/* Read whole records and whatever follows in one system call. */
	SSL_CTX_set_read_ahead(ctx, 1);
	/* Payloads are shares: OpenSSL wipes its copy of what it deciphered. */
	SSL_CTX_set_options(ctx, SSL_OP_CLEANSE_PLAINTEXT);
	/* One connection per generation, never resumed: no tickets to send or keep. */
	SSL_CTX_set_num_tickets(ctx, 0);
	SSL_CTX_set_session_cache_mode(ctx, SSL_SESS_CACHE_OFF);
	return ctx;
}

int mnet_hub_listen(struct mnet_hub *h, const struct mnet_listen_opts *o)
{
	if (!o || !o->ca_file || !o->cert_file || !o->key_file)
		return ERR_INVALID;
	if (h->tls)
		return ERR_CONFLICT;
	int rc = 0;
	struct addrinfo hints = {.ai_flags = AI_NUMERICHOST | AI_PASSIVE, .ai_socktype = SOCK_STREAM};
	struct addrinfo *ai = NULL;
	char port[8];
	snprintf(port, sizeof port, "%u", o->port);
	const char *host = o->bind && *o->bind ? o->bind : "127.0.0.1";
	if (getaddrinfo(host, port, &hints, &ai) != 0 || !ai) {
		LOG_ERROR("mnet.listen", LOG_S("bind", host), LOG_S("error", "not a numeric IPv4 or IPv6 address"));
		return ERR_CONFIG;
	}
	if (!(h->tls = server_tls(o))) {
		LOG_ERROR("mnet.listen", LOG_S("error", "could not load the TLS certificate, key or CA"),
			  LOG_S("cert", o->cert_file), LOG_S("key", o->key_file), LOG_S("ca", o->ca_file));
		rc = ERR_CONFIG;
		goto out;
	}
	int one = 1;
	h->lfd = socket(ai->ai_family, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
	if (h->lfd < 0 || setsockopt(h->lfd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof one) != 0 ||
	    bind(h->lfd, ai->ai_addr, ai->ai_addrlen) != 0 || listen(h->lfd, 128) != 0) {
		LOG_ERROR("mnet.listen", LOG_S("bind", host), LOG_I("port", o->port), LOG_S("error", strerror(errno)));
		rc = ERR_IO;
		goto out;
	}
	struct sockaddr_storage ss;
	socklen_t sl = sizeof ss;
	if (getsockname(h->lfd, (struct sockaddr *)&ss, &sl) == 0)
		h->port = ntohs(ss.ss_family == AF_INET6 ? ((struct sockaddr_in6 *)&ss)->sin6_port
							: ((struct sockaddr_in *)&ss)->sin_port);
	h->max_streams = o->max_streams ? o->max_streams : 256;
	h->handshake_ms = o->handshake_ms ? o->handshake_ms : 5000;
	h->epfd = epoll_create1(EPOLL_CLOEXEC);
	h->evfd = eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK);
	struct epoll_event eev = {.events = EPOLLIN, .data.ptr = &tag_event};
	struct epoll_event lev = {.events = EPOLLIN, .data.ptr = &tag_listen};
	if (h->epfd < 0 || h->evfd < 0 || epoll_ctl(h->epfd, EPOLL_CTL_ADD, h->evfd, &eev) != 0 ||
	    epoll_ctl(h->epfd, EPOLL_CTL_ADD, h->lfd, &lev) != 0 ||
	    pthread_create(&h->reader, NULL, reader_main, h) != 0) {
		rc = ERR_NOMEM;
		goto out;
	}
	h->reader_running = true;
	LOG_INFO("mnet.listening", LOG_S("bind", host), LOG_I("port", h->port));
out:
	freeaddrinfo(ai);
	if (rc != 0) {
		if (h->lfd >= 0)
			close(h->lfd);
		if (h->epfd >= 0)
			close(h->epfd);
		if (h->evfd >= 0)
			close(h->evfd);
		h->lfd = h->epfd = h->evfd = -1;
		SSL_CTX_free(h->tls);
		h->tls = NULL;
	}
	return rc;
}

uint16_t mnet_hub_stream_port(const struct mnet_hub *h) { return h->port; }

void mnet_streams_stop(struct mnet_hub *h)
{
	pthread_mutex_lock(&h->mu);
	bool running = h->reader_running;
	h->reader_stop = true;
	kick_reader(h);
	pthread_mutex_unlock(&h->mu);
	if (running)
		pthread_join(h->reader, NULL);
	h->reader_running = false;
	while (h->streams)
		stream_close(h, h->streams, NULL);
	if (h->lfd >= 0)
		close(h->lfd);
	if (h->epfd >= 0)
		close(h->epfd);
	if (h->evfd >= 0)
		close(h->evfd);
	h->lfd = h->epfd = h->evfd = -1;
	SSL_CTX_free(h->tls);
	h->tls = NULL;
}
