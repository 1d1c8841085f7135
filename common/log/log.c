/* log: renders typed fields as key=value or JSON and writes each line atomically.
 * Rendering is done by hand into a bounded stack buffer (no allocation, no locks) so
 * logging is safe on every path, including out-of-memory ones. */
#include "log/log.h"

#include <errno.h>
#include <math.h>
#include <stdarg.h>
#include <stdio.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "err/err.h"

#define LOG_LINE_MAX 4096
#define LOG_ID_MAX 64

static const char *log_service = "mimir";
static enum log_level log_min = LOG_LEVEL_INFO;
static bool log_json;
static int log_fd = 2;

static __thread char ctx_request[LOG_ID_MAX + 1];
static __thread char ctx_session[LOG_ID_MAX + 1];

static const char *const level_names[] = {"debug", "info", "warn", "error"};

void log_set_service(const char *s) { log_service = s ? s : "mimir"; }
void log_set_level(enum log_level l) { log_min = l; }
void log_set_json(bool j) { log_json = j; }
void log_set_fd(int fd) { log_fd = fd; }
bool log_enabled(enum log_level l) { return l >= log_min; }

int log_level_parse(const char *s, enum log_level *out)
{
	for (int i = 0; s && i < 4; i++)
		if (strcmp(s, level_names[i]) == 0) {
			*out = (enum log_level)i;
			return 0;
		}
	return ERR_INVALID;
}

static void ctx_copy(char *dst, const char *src)
{
	size_t n = src ? strnlen(src, LOG_ID_MAX) : 0;
	memcpy(dst, src ? src : "", n);
	dst[n] = '\0';
}

void log_ctx_set(const char *request_id, const char *session_id)
{
	ctx_copy(ctx_request, request_id);
	ctx_copy(ctx_session, session_id);
}

void log_ctx_clear(void) { log_ctx_set(NULL, NULL); }
const char *log_ctx_request_id(void) { return ctx_request; }

/* A bounded output cursor: writes past the end are dropped, the length still counts. */
struct out {
	char *b;
	size_t cap, len;
};

static void put_c(struct out *o, char c)
{
	if (o->len + 1 < o->cap)
		o->b[o->len] = c;
	o->len++;
}

static void put_s(struct out *o, const char *s)
{
	while (*s)
		put_c(o, *s++);
}

static void put_f(struct out *o, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
static void put_f(struct out *o, const char *fmt, ...)
{
	char tmp[64];
	va_list ap;
	va_start(ap, fmt);
	vsnprintf(tmp, sizeof tmp, fmt, ap);
	va_end(ap);
	put_s(o, tmp);
}

/* JSON string body (RFC 8259 escapes; control bytes as \u00XX). */
static void put_json_str(struct out *o, const char *s)
{
	put_c(o, '"');
	for (const unsigned char *p = (const unsigned char *)s; *p; p++) {
		switch (*p) {
		case '"': put_s(o, "\\\""); break;
		case '\\': put_s(o, "\\\\"); break;
		case '\n': put_s(o, "\\n"); break;
		case '\r': put_s(o, "\\r"); break;
		case '\t': put_s(o, "\\t"); break;
		default:
			if (*p < 0x20 || *p == 0x7f)
				put_f(o, "\\u%04x", *p);
			else
				put_c(o, (char)*p);
		}
	}
	put_c(o, '"');
}

/* key=value value: bare when it is a plain token, else quoted with escapes, so one
 * line always parses back into the same fields (logfmt). */
static void put_kv_str(struct out *o, const char *s)
{
	bool bare = *s != '\0';
	for (const unsigned char *p = (const unsigned char *)s; *p && bare; p++)
		if (*p <= ' ' || *p == '"' || *p == '=' || *p == '\\' || *p == 0x7f)
			bare = false;
	if (bare)
		put_s(o, s);
	else
		put_json_str(o, s);
}

static void put_field(struct out *o, bool json, bool first, const char *key,
		      const struct log_field *f, const char *sval)
{
	if (json) {
		put_s(o, first ? "" : ",");
		put_json_str(o, key);
		put_c(o, ':');
	} else {
		put_s(o, first ? "" : " ");
		put_s(o, key);
		put_c(o, '=');
	}
	if (sval || !f || f->type == LOG_FT_STR) {
		const char *s = sval ? sval : (f->v.s ? f->v.s : "");
		json ? put_json_str(o, s) : put_kv_str(o, s);
		return;
	}
	switch (f->type) {
	case LOG_FT_INT: put_f(o, "%lld", f->v.i); break;
	case LOG_FT_DBL:
		if (isfinite(f->v.d))
			put_f(o, "%.6g", f->v.d);
		else
			json ? put_s(o, "null") : put_s(o, "nan");
		break;
	case LOG_FT_BOOL: put_s(o, f->v.b ? "true" : "false"); break;
	default: break;
	}
}

size_t log_format(char *buf, size_t cap, bool json, enum log_level lvl, const char *event,
		  const struct log_field *f, size_t n)
{
	struct out o = {buf, cap, 0};
	struct timespec ts;
	struct tm tm;
	char tsbuf[40], secs[24];
	clock_gettime(CLOCK_REALTIME, &ts);
	gmtime_r(&ts.tv_sec, &tm);
	strftime(secs, sizeof secs, "%Y-%m-%dT%H:%M:%S", &tm);
	snprintf(tsbuf, sizeof tsbuf, "%s.%03dZ", secs, (int)(ts.tv_nsec / 1000000) % 1000);
	unsigned li = (unsigned)lvl < 4 ? (unsigned)lvl : 3;

	if (json)
		put_c(&o, '{');
	put_field(&o, json, true, "ts", NULL, tsbuf);
	put_field(&o, json, false, "level", NULL, level_names[li]);
	put_field(&o, json, false, "service", NULL, log_service);
	put_field(&o, json, false, "event", NULL, event ? event : "");
	if (ctx_request[0])
		put_field(&o, json, false, "request_id", NULL, ctx_request);
	if (ctx_session[0])
		put_field(&o, json, false, "session_id", NULL, ctx_session);
	for (size_t i = 0; i < n; i++)
		if (f[i].key)
			put_field(&o, json, false, f[i].key, &f[i], NULL);
	if (json)
		put_c(&o, '}');
	if (cap > 0)
		buf[o.len < cap ? o.len : cap - 1] = '\0';
	return o.len < cap ? o.len : (cap ? cap - 1 : 0);
}

void log_write(enum log_level lvl, const char *event, const struct log_field *f, size_t n)
{
	if (lvl < log_min)
		return;
	char line[LOG_LINE_MAX + 1];
	size_t len = log_format(line, LOG_LINE_MAX, log_json, lvl, event, f, n);
	line[len++] = '\n';
	int saved = errno;
	for (size_t off = 0; off < len;) {
		ssize_t w = write(log_fd, line + off, len - off);
		if (w < 0 && errno == EINTR)
			continue;
		if (w <= 0)
			break;
		off += (size_t)w;
	}
	errno = saved;
}
