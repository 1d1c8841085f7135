/* log: structured one-line logs.
 *
 * One event is one line, written with a single write(2) so lines from threads never
 * interleave. Format is key=value (default) or JSON (log_set_json). Every line carries
 * ts, level, service, event, and the request and session ids of the calling thread's
 * context (log_ctx_set), so a request can be followed across services. Fields are
 * typed so both formats quote and escape correctly:
 *
 *   LOG_INFO("http.request", LOG_S("method", m), LOG_I("status", 200));
 *
 * Secrets (shares, keys, seeds) must never be passed as fields. */
#ifndef MIMIR_LOG_H
#define MIMIR_LOG_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

enum log_level { LOG_LEVEL_DEBUG = 0, LOG_LEVEL_INFO, LOG_LEVEL_WARN, LOG_LEVEL_ERROR };

enum log_ftype { LOG_FT_STR, LOG_FT_INT, LOG_FT_DBL, LOG_FT_BOOL };

struct log_field {
	const char *key;
	enum log_ftype type;
	union {
		const char *s;
		long long i;
		double d;
		bool b;
	} v;
};

#define LOG_S(k, x) ((struct log_field){.key = (k), .type = LOG_FT_STR, .v.s = (x)})
#define LOG_I(k, x) ((struct log_field){.key = (k), .type = LOG_FT_INT, .v.i = (long long)(x)})
#define LOG_D(k, x) ((struct log_field){.key = (k), .type = LOG_FT_DBL, .v.d = (double)(x)})
#define LOG_B(k, x) ((struct log_field){.key = (k), .type = LOG_FT_BOOL, .v.b = (x)})

#define LOG_FIELDS_(...) ((const struct log_field[]){{0}, __VA_ARGS__})
#define LOG_NFIELDS_(...) (sizeof(LOG_FIELDS_(__VA_ARGS__)) / sizeof(struct log_field) - 1)
/* The leading {0} lets the field list be empty; log_write skips it. */
#define LOG_AT(lvl, event, ...)                                                            \
	log_write((lvl), (event), LOG_FIELDS_(__VA_ARGS__) + 1, LOG_NFIELDS_(__VA_ARGS__))
#define LOG_DEBUG(event, ...) LOG_AT(LOG_LEVEL_DEBUG, event, __VA_ARGS__)
#define LOG_INFO(event, ...) LOG_AT(LOG_LEVEL_INFO, event, __VA_ARGS__)
#define LOG_WARN(event, ...) LOG_AT(LOG_LEVEL_WARN, event, __VA_ARGS__)
#define LOG_ERROR(event, ...) LOG_AT(LOG_LEVEL_ERROR, event, __VA_ARGS__)

void log_write(enum log_level lvl, const char *event, const struct log_field *f, size_t n);

/* Process-wide settings; set them at start-up, before threads start. */
void log_set_service(const char *service);
void log_set_level(enum log_level lvl);
void log_set_json(bool json);
void log_set_fd(int fd); /* default 2 (stderr) */
bool log_enabled(enum log_level lvl);
/* "debug" | "info" | "warn" | "error" -> 0, or ERR_INVALID. */
int log_level_parse(const char *s, enum log_level *out);

/* Thread context carried into every line of the calling thread. Ids are copied
 * (truncated to 64 bytes); NULL clears one. */
void log_ctx_set(const char *request_id, const char *session_id);
void log_ctx_clear(void);
const char *log_ctx_request_id(void); /* "" when unset */

/* Render one line into buf (no trailing newline). Exposed for tests. Returns the
 * length written, truncated to cap - 1. */
size_t log_format(char *buf, size_t cap, bool json, enum log_level lvl, const char *event,
		  const struct log_field *f, size_t n);

#endif
