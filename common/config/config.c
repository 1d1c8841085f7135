/* config: loads the file, folds the environment overrides into the same JSON document
 * (converted by each field's type), then runs one strict jspec_parse() over the result.
 * One parse keeps the load all-or-nothing and gives file and environment values the
 * same checks and messages; the map of keys the environment set tells an error which
 * source to name. */
#define _GNU_SOURCE
#include "config/config.h"

#include <ctype.h>
#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <math.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/stat.h>
#include <unistd.h>

#include <sodium.h>

#include "err/err.h"
#include "log/log.h"

extern char **environ;

#define SERVICE_MAX 32
/* "MIMIR_" + service + "_" + key, with room to spare. */
#define VAR_MAX (8 + SERVICE_MAX + JSPEC_NAME_MAX)

struct config {
	json_t *doc;  /* file plus environment: what borrowed outputs point into */
	json_t *env;  /* dotted key -> variable name, for each key the environment set */
	char *path;   /* the file, NULL when none */
};

static int fail(struct jspec_error *err, int code, const char *field, const char *fmt, ...)
	__attribute__((format(printf, 4, 5)));
static int fail(struct jspec_error *err, int code, const char *field, const char *fmt, ...)
{
	va_list ap;
	err->code = code;
	snprintf(err->field, sizeof err->field, "%s", field ? field : "");
	va_start(ap, fmt);
	vsnprintf(err->detail, sizeof err->detail, fmt, ap);
	va_end(ap);
	return code;
}

/* Appends " (<source>)" to the detail, shortening the message rather than the source
 * when both do not fit: the source is what the operator needs to find the value. */
static void add_source(struct jspec_error *err, const char *fmt, ...)
	__attribute__((format(printf, 2, 3)));
static void add_source(struct jspec_error *err, const char *fmt, ...)
{
	char src[sizeof err->detail];
	va_list ap;
	va_start(ap, fmt);
	int w = vsnprintf(src + 2, sizeof src - 3, fmt, ap);
	va_end(ap);
	if (w < 0)
		return;
	src[0] = ' ';
	src[1] = '(';
	size_t sl = strlen(src);
	src[sl++] = ')';
	src[sl] = '\0';
	size_t dl = strlen(err->detail), cap = sizeof err->detail - 1;
	if (sl >= cap)
		dl = 0;
	else if (dl + sl > cap)
		dl = cap - sl;
	size_t n = dl + sl > cap ? cap - dl : sl;
	memcpy(err->detail + dl, src, n);
	err->detail[dl + n] = '\0';
}

static int read_file(const char *path, char **buf, size_t *len, struct jspec_error *err)
{
	struct stat st;
	size_t n = 0;
	int rc = 0;
	char *b = NULL;
	int fd = open(path, O_RDONLY | O_CLOEXEC);
	if (fd < 0)
		return fail(err, ERR_IO, NULL, "cannot read config file %s: %s", path,
			    strerror(errno));
	if (fstat(fd, &st) != 0 || !S_ISREG(st.st_mode)) {
		rc = fail(err, ERR_IO, NULL, "cannot read config file %s: not a regular file",
			  path);
		goto out;
	}
	/* One read buffer of the bound, plus one byte to see a file that is larger. */
	b = malloc(CONFIG_MAX_FILE + 1);
	if (!b) {
		rc = fail(err, ERR_NOMEM, NULL, "out of memory reading %s", path);
		goto out;
	}
	while (n < CONFIG_MAX_FILE + 1) {
		ssize_t r = read(fd, b + n, CONFIG_MAX_FILE + 1 - n);
		if (r < 0 && errno == EINTR)
			continue;
		if (r < 0) {
			rc = fail(err, ERR_IO, NULL, "cannot read config file %s: %s", path,
				  strerror(errno));
			goto out;
		}
		if (r == 0)
			break;
		n += (size_t)r;
	}
	if (n > CONFIG_MAX_FILE) {
		rc = fail(err, ERR_TOO_LARGE, NULL, "config file %s is larger than %d bytes", path,
			  CONFIG_MAX_FILE);
		goto out;
	}
	*buf = b;
	*len = n;
	b = NULL;
out:
	if (b) {
		sodium_memzero(b, n);
		free(b);
	}
	close(fd);
	return rc;
}

static bool service_ok(const char *s)
{
	size_t n = s ? strnlen(s, SERVICE_MAX + 1) : 0;
	if (n == 0 || n > SERVICE_MAX)
		return false;
	for (size_t i = 0; i < n; i++)
		if (!isalnum((unsigned char)s[i]) && s[i] != '-' && s[i] != '_')
			return false;
	return true;
}

/* MIMIR_<SERVICE>_ and <SERVICE>_<KEY> share this mapping: upper case, '.' and '-' as
 * '_', so that every name is a valid shell variable. */
static void env_append(char *buf, size_t cap, const char *s)
{
	size_t n = strlen(buf);
	for (; *s && n + 1 < cap; s++)
		buf[n++] = (*s == '.' || *s == '-') ? '_' : (char)toupper((unsigned char)*s);
	buf[n] = '\0';
}

static void var_name(char *buf, size_t cap, const char *service, const char *key)
{
	snprintf(buf, cap, "MIMIR_");
	env_append(buf, cap, service);
	env_append(buf, cap, "_");
	if (key)
		env_append(buf, cap, key);
}

/* Whole-string base-10 integers: strtoll alone would take leading spaces, trailing
 * junk, and (strtoull) wrap "-1" to 2^64-1. */
static int parse_int(const char *s, bool is_unsigned, json_int_t *out)
{
	char *end;
	if (!*s || isspace((unsigned char)*s) || (is_unsigned && *s == '-'))
		return ERR_TYPE;
	errno = 0;
	if (is_unsigned) {
		unsigned long long u = strtoull(s, &end, 10);
		if (*end)
			return ERR_TYPE;
		if (errno == ERANGE || u > INT64_MAX)
			return ERR_RANGE;
		*out = (json_int_t)u;
	} else {
		long long v = strtoll(s, &end, 10);
		if (*end)
			return ERR_TYPE;
		if (errno == ERANGE)
			return ERR_RANGE;
		*out = v;
	}
	return 0;
}

/* The environment text of one field as the JSON value a file would have held. */
static int env_value(const struct jspec_field *f, const char *var, const char *text,
		     json_t **out, struct jspec_error *err)
{
	json_int_t i;
	int rc = 0;
	*out = NULL;
	switch (f->type) {
	case JSPEC_INT:
	case JSPEC_UINT:
		rc = parse_int(text, f->type == JSPEC_UINT, &i);
		if (rc == ERR_TYPE)
			fail(err, rc, f->name, "%s: must be a%s integer", f->name,
			     f->type == JSPEC_UINT ? " non-negative" : "n");
		else if (rc == ERR_RANGE)
			fail(err, rc, f->name, "%s: must be between %" PRId64 " and %" PRId64,
			     f->name, f->type == JSPEC_UINT ? (int64_t)0 : INT64_MIN, INT64_MAX);
		else
			*out = json_integer(i);
		break;
	case JSPEC_DOUBLE: {
		char *end;
		double d = strtod(text, &end);
		if (!*text || isspace((unsigned char)*text) || *end || !isfinite(d))
			rc = fail(err, ERR_TYPE, f->name, "%s: must be a finite number", f->name);
		else
			*out = json_real(d);
		break;
	}
	case JSPEC_BOOL:
		if (!strcasecmp(text, "true") || !strcmp(text, "1") || !strcasecmp(text, "yes"))
			*out = json_true();
		else if (!strcasecmp(text, "false") || !strcmp(text, "0") || !strcasecmp(text, "no"))
			*out = json_false();
		else
			rc = fail(err, ERR_TYPE, f->name,
				  "%s: must be true, false, 1, 0, yes or no", f->name);
		break;
	case JSPEC_OBJECT:
	case JSPEC_ARRAY: {
		json_error_t je;
		*out = json_loads(text, JSON_REJECT_DUPLICATES | JSON_DECODE_ANY, &je);
		if (!*out) {
			char *near = strstr(je.text, " near '");
			if (near && json_error_code(&je) != json_error_duplicate_key)
				*near = '\0'; /* the quoted token may be part of a secret */
			rc = fail(err, ERR_PARSE, f->name, "%s: invalid JSON at column %d: %s",
				  f->name, je.column, je.text);
		}
		break;
	}
	default:
		*out = json_string(text);
		if (!*out)
			rc = fail(err, ERR_PARSE, f->name, "%s: must be valid UTF-8", f->name);
		break;
	}
	if (rc) {
		add_source(err, "from environment %s", var);
		return rc;
	}
	return *out ? 0 : fail(err, ERR_NOMEM, f->name, "out of memory");
}

/* Sets the dotted key in c->doc (taking val), creating the objects on its path. An
 * object on the path that already holds another type was set by the file or by an
 * earlier variable; the error names that source. */
static int set_path(struct config *c, const char *key, json_t *val, struct jspec_error *err)
{
	char seg[JSPEC_NAME_MAX];
	json_t *cur = c->doc;
	const char *s = key;
	for (const char *dot; (dot = strchr(s, '.')) != NULL; s = dot + 1) {
		size_t n = (size_t)(dot - s);
		memcpy(seg, s, n);
		seg[n] = '\0';
		json_t *next = json_object_get(cur, seg);
		if (next && !json_is_object(next) && !json_is_null(next)) {
			char prefix[JSPEC_NAME_MAX];
			snprintf(prefix, sizeof prefix, "%.*s", (int)(dot - key), key);
			const char *var = json_string_value(json_object_get(c->env, prefix));
			fail(err, ERR_TYPE, prefix, "%s: must be an object", prefix);
			if (var)
				add_source(err, "from environment %s", var);
			else
				add_source(err, "from %s", c->path);
			json_decref(val);
			return ERR_TYPE;
		}
		if (!next || json_is_null(next)) {
			next = json_object();
			if (!next || json_object_set_new(cur, seg, next) != 0) {
				json_decref(val);
				return fail(err, ERR_NOMEM, key, "out of memory");
			}
		}
		cur = next;
	}
	if (json_object_set_new(cur, s, val) != 0)
		return fail(err, ERR_NOMEM, key, "out of memory");
	return 0;
}

/* Folds MIMIR_<SERVICE>_* into c->doc, in spec order (so an OBJECT field is set before
 * keys inside it). Any variable with the prefix that no key owns is refused first. */
static int apply_env(struct config *c, const char *service, const struct jspec_field *spec,
		     struct jspec_error *err)
{
	char prefix[VAR_MAX], var[VAR_MAX], other[VAR_MAX];
	var_name(prefix, sizeof prefix, service, NULL);
	size_t plen = strlen(prefix);
	for (const struct jspec_field *f = spec; f->type != JSPEC_END; f++) {
		/* Names are walked here before jspec_parse() checks the rest of the spec. */
		if (!f->name || !f->name[0] || strnlen(f->name, JSPEC_NAME_MAX) >= JSPEC_NAME_MAX)
			return fail(err, ERR_INTERNAL, NULL, "bad spec: row %td has a bad name",
				    f - spec);
		var_name(var, sizeof var, service, f->name);
		for (const struct jspec_field *g = spec; g < f; g++) {
			var_name(other, sizeof other, service, g->name);
			if (strcmp(var, other) == 0)
				return fail(err, ERR_INTERNAL, f->name,
					    "bad spec: keys %s and %s share the variable %s",
					    g->name, f->name, var);
		}
	}
	for (char **e = environ; e && *e; e++) {
		const char *eq = strchr(*e, '=');
		if (strncmp(*e, prefix, plen) != 0 || !eq)
			continue;
		size_t n = (size_t)(eq - *e);
		bool known = false;
		for (const struct jspec_field *f = spec; f->type != JSPEC_END && !known; f++) {
			var_name(var, sizeof var, service, f->name);
			known = strlen(var) == n && memcmp(var, *e, n) == 0;
		}
		if (!known) {
			snprintf(var, sizeof var, "%.*s", (int)(n < VAR_MAX ? n : VAR_MAX - 1), *e);
			return fail(err, ERR_UNKNOWN_FIELD, var,
				    "environment variable %s names no configuration key of %s",
				    var, service);
		}
	}
	for (const struct jspec_field *f = spec; f->type != JSPEC_END; f++) {
		json_t *val;
		int rc;
		var_name(var, sizeof var, service, f->name);
		const char *text = getenv(var);
		if (!text)
			continue;
		if ((rc = env_value(f, var, text, &val, err)) != 0 ||
		    (rc = set_path(c, f->name, val, err)) != 0)
			return rc;
		if (json_object_set_new(c->env, f->name, json_string(var)) != 0)
			return fail(err, ERR_NOMEM, f->name, "out of memory");
	}
	return 0;
}

/* The source an error from the merged document came from. */
static void attribute(const struct config *c, const char *service, struct jspec_error *err)
{
	const char *var = json_string_value(json_object_get(c->env, err->field));
	char name[VAR_MAX];
	if (var) {
		add_source(err, "from environment %s", var);
	} else if (err->code == ERR_MISSING) {
		var_name(name, sizeof name, service, err->field);
		if (c->path)
			add_source(err, "set it in %s or %s", c->path, name);
		else
			add_source(err, "set %s", name);
	} else if (c->path && err->code != ERR_INTERNAL) {
		add_source(err, "from %s", c->path);
	}
}

int config_load(struct config **out, const char *service, const char *path,
		const struct jspec_field *spec, struct jspec_error *err)
{
	struct jspec_error scratch;
	struct config *c = NULL;
	char *text = NULL;
	size_t len = 0;
	int rc = 0;
	if (!err)
		err = &scratch;
	memset(err, 0, sizeof *err);
	if (!out || !spec)
		return fail(err, ERR_INVALID, NULL, "config_load: no output or no spec");
	*out = NULL;
	if (!service_ok(service))
		return fail(err, ERR_INVALID, NULL,
			    "config_load: service name must be 1-%d letters, digits, '-' or '_'",
			    SERVICE_MAX);
	c = calloc(1, sizeof *c);
	if (!c || !(c->env = json_object()) || (path && !(c->path = strdup(path)))) {
		rc = fail(err, ERR_NOMEM, NULL, "out of memory");
		goto out;
	}
	if (path) {
		if ((rc = read_file(path, &text, &len, err)) != 0)
			goto out;
		rc = jspec_parse_body(text, len, NULL, 0, &c->doc, err);
		if (rc) {
			add_source(err, "from %s", path);
			goto out;
		}
	} else if (!(c->doc = json_object())) {
		rc = fail(err, ERR_NOMEM, NULL, "out of memory");
		goto out;
	}
	if ((rc = apply_env(c, service, spec, err)) != 0)
		goto out;
	if ((rc = jspec_parse(c->doc, spec, 0, err)) != 0) {
		attribute(c, service, err);
		goto out;
	}
	*out = c;
	c = NULL;
out:
	if (text) {
		sodium_memzero(text, len);
		free(text);
	}
	config_free(c);
	return rc;
}

void config_free(struct config *c)
{
	if (!c)
		return;
	json_decref(c->doc);
	json_decref(c->env);
	free(c->path);
	free(c);
}

static bool doc_has(const json_t *doc, const char *key)
{
	char seg[JSPEC_NAME_MAX];
	const json_t *cur = doc;
	for (const char *s = key, *dot;; s = dot + 1) {
		dot = strchr(s, '.');
		size_t n = dot ? (size_t)(dot - s) : strlen(s);
		if (n >= sizeof seg)
			return false;
		memcpy(seg, s, n);
		seg[n] = '\0';
		cur = json_object_get(cur, seg);
		if (!cur || json_is_null(cur))
			return false;
		if (!dot)
			return true;
	}
}

void config_log_effective(const struct config *c, const struct jspec_field *spec)
{
	if (!c || !spec)
		return;
	for (const struct jspec_field *f = spec; f->type != JSPEC_END; f++) {
		const char *var = json_string_value(json_object_get(c->env, f->name));
		const char *source = "default", *from = "";
		if (var) {
			source = "environment";
			from = var;
		} else if (doc_has(c->doc, f->name)) {
			source = "file";
			from = c->path;
		}
		char val[64] = "";
		bool set = false;
		const void *o = f->out;
		switch (o ? f->type : JSPEC_END) {
		case JSPEC_INT: snprintf(val, sizeof val, "%" PRId64, *(const int64_t *)o); break;
		case JSPEC_UINT: snprintf(val, sizeof val, "%" PRIu64, *(const uint64_t *)o); break;
		case JSPEC_DOUBLE: snprintf(val, sizeof val, "%.17g", *(const double *)o); break;
		case JSPEC_BOOL: snprintf(val, sizeof val, "%s", *(const bool *)o ? "true" : "false"); break;
		case JSPEC_ENUM: {
			int k = *(const int *)o, m = 0;
			while (f->choices[m])
				m++;
			snprintf(val, sizeof val, "%s", k >= 0 && k < m ? f->choices[k] : "?");
			break;
		}
		case JSPEC_STRING: set = *(const char *const *)o != NULL; break;
		case JSPEC_HEX:
		case JSPEC_BASE64: set = ((const struct jspec_bytes *)o)->data != NULL; break;
		case JSPEC_OBJECT:
		case JSPEC_ARRAY: set = *(json_t *const *)o != NULL; break;
		case JSPEC_END: break;
		}
		if (val[0])
			LOG_INFO("config.effective", LOG_S("key", f->name), LOG_S("source", source),
				 LOG_S("from", from), LOG_S("value", val));
		else
			LOG_INFO("config.effective", LOG_S("key", f->name), LOG_S("source", source),
				 LOG_S("from", from), LOG_B("set", set));
	}
}
