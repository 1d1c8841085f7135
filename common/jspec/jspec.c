/* jspec: the checker behind jspec.h. A parse runs in two passes so that it is
 * all-or-nothing: every field is looked up, checked and converted into a staging slot
 * (decoded bytes are the only allocations), and only when the whole document passed are
 * the slots copied to the caller's outputs. An error therefore frees the staged bytes
 * and leaves the caller's structs exactly as they were. */
#include "jspec/jspec.h"

#include <inttypes.h>
#include <math.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <sodium.h>

#include "err/err.h"

struct slot {
	bool present;
	union {
		const char *s;
		int64_t i;
		uint64_t u;
		double d;
		bool b;
		int e;
		struct jspec_bytes bytes;
		json_t *j;
	} v;
};

static int fail(struct jspec_error *err, int code, const char *field, const char *fmt, ...)
	__attribute__((format(printf, 4, 5)));
static int fail(struct jspec_error *err, int code, const char *field, const char *fmt, ...)
{
	va_list ap;
	size_t n = 0;
	err->code = code;
	snprintf(err->field, sizeof err->field, "%s", field ? field : "");
	if (err->field[0]) {
		n = strlen(err->field);
		memcpy(err->detail, err->field, n);
		memcpy(err->detail + n, ": ", 2);
		n += 2;
	}
	va_start(ap, fmt);
	vsnprintf(err->detail + n, sizeof err->detail - n, fmt, ap);
	va_end(ap);
	return code;
}

static const char *json_type_name(const json_t *v)
{
	switch (json_typeof(v)) {
	case JSON_OBJECT: return "object";
	case JSON_ARRAY: return "array";
	case JSON_STRING: return "string";
	case JSON_INTEGER: return "integer";
	case JSON_REAL: return "non-integer number";
	case JSON_TRUE:
	case JSON_FALSE: return "boolean";
	case JSON_NULL: return "null";
	}
	return "unknown";
}

static bool is_length_type(enum jspec_type t)
{
	return t == JSPEC_STRING || t == JSPEC_ARRAY || t == JSPEC_HEX || t == JSPEC_BASE64;
}

/* Length bounds as sizes: max 0 is the default maximum, INFINITY is no maximum. */
static void length_bounds(const struct jspec_field *f, size_t *lo, size_t *hi)
{
	*lo = f->min <= 0 ? 0 : f->min >= 18446744073709551615.0 ? SIZE_MAX : (size_t)ceil(f->min);
	if (f->max == 0)
		*hi = JSPEC_DEFAULT_MAX;
	else if (f->max >= 18446744073709551615.0)
		*hi = SIZE_MAX;
	else
		*hi = (size_t)floor(f->max);
}

static bool unbounded(const struct jspec_field *f) { return f->min == 0 && f->max == 0; }

/* Integer bounds from the double ones; 2^63 and 2^64 are exactly representable, so the
 * comparisons clamp without rounding surprises. */
static void int_bounds(const struct jspec_field *f, int64_t *lo, int64_t *hi)
{
	*lo = INT64_MIN;
	*hi = INT64_MAX;
	if (unbounded(f))
		return;
	if (f->min > -9223372036854775808.0)
		*lo = f->min >= 9223372036854775808.0 ? INT64_MAX : (int64_t)ceil(f->min);
	if (f->max < 9223372036854775808.0)
		*hi = f->max <= -9223372036854775808.0 ? INT64_MIN : (int64_t)floor(f->max);
}

static void uint_bounds(const struct jspec_field *f, uint64_t *lo, uint64_t *hi)
{
	*lo = 0;
	*hi = UINT64_MAX;
	if (unbounded(f))
		return;
	if (f->min > 0)
		*lo = f->min >= 18446744073709551616.0 ? UINT64_MAX : (uint64_t)ceil(f->min);
	if (f->max < 18446744073709551616.0)
		*hi = f->max < 0 ? 0 : (uint64_t)floor(f->max);
}

/* Spec mistakes are caught before any input is looked at, so a bad spec fails on the
 * first request rather than on the first unusual one. */
static int check_spec_row(const struct jspec_field *f, struct jspec_error *err)
{
	const char *n = f->name;
	size_t len = strnlen(n, JSPEC_NAME_MAX);
	if (len == 0 || len >= JSPEC_NAME_MAX || n[0] == '.' || n[len - 1] == '.' ||
	    strstr(n, ".."))
		return fail(err, ERR_INTERNAL, NULL, "bad spec: field name \"%.*s\"", 64, n);
	if (f->type <= JSPEC_END || f->type > JSPEC_ARRAY)
		return fail(err, ERR_INTERNAL, n, "bad spec: unknown type %d", (int)f->type);
	if (isnan(f->min) || isnan(f->max))
		return fail(err, ERR_INTERNAL, n, "bad spec: NaN bound");
	if (f->type == JSPEC_ENUM && (!f->choices || !f->choices[0]))
		return fail(err, ERR_INTERNAL, n, "bad spec: enum without choices");
	if (is_length_type(f->type)) {
		size_t lo, hi;
		length_bounds(f, &lo, &hi);
		if (f->min < 0 || f->max < 0 || lo > hi)
			return fail(err, ERR_INTERNAL, n, "bad spec: length bounds");
	} else if (!unbounded(f) && f->min > f->max) {
		return fail(err, ERR_INTERNAL, n, "bad spec: min > max");
	}
	return 0;
}

/* Finds the value at a dotted name. *v is NULL when the field, or an object on its path,
 * is absent or null. An object on the path that is something else is ERR_TYPE on the
 * prefix that names it. */
static int lookup(const json_t *root, const char *name, const json_t **v,
		  struct jspec_error *err)
{
	const json_t *cur = root;
	const char *seg = name;
	char key[JSPEC_NAME_MAX];
	*v = NULL;
	for (;;) {
		const char *dot = strchr(seg, '.');
		size_t n = dot ? (size_t)(dot - seg) : strlen(seg);
		memcpy(key, seg, n);
		key[n] = '\0';
		const json_t *next = json_object_get(cur, key);
		if (!next || json_is_null(next))
			return 0;
		if (!dot) {
			*v = next;
			return 0;
		}
		if (!json_is_object(next)) {
			char prefix[JSPEC_NAME_MAX];
			size_t plen = (size_t)(dot - name);
			memcpy(prefix, name, plen);
			prefix[plen] = '\0';
			return fail(err, ERR_TYPE, prefix, "must be an object, got %s",
				    json_type_name(next));
		}
		cur = next;
		seg = dot + 1;
	}
}

/* Levenshtein distance, for "did you mean" on unknown keys (typos in config files). */
static size_t edit_distance(const char *a, const char *b)
{
	size_t la = strlen(a), lb = strlen(b);
	size_t row[JSPEC_NAME_MAX + 1];
	if (la >= JSPEC_NAME_MAX || lb >= JSPEC_NAME_MAX)
		return SIZE_MAX;
	for (size_t j = 0; j <= lb; j++)
		row[j] = j;
	for (size_t i = 1; i <= la; i++) {
		size_t diag = row[0];
		row[0] = i;
		for (size_t j = 1; j <= lb; j++) {
			size_t up = row[j];
			size_t best = diag + (a[i - 1] != b[j - 1]);
			if (up + 1 < best)
				best = up + 1;
			if (row[j - 1] + 1 < best)
				best = row[j - 1] + 1;
			row[j] = best;
			diag = up;
		}
	}
	return row[lb];
}

/* The spec name (or the object on a spec name's path) at the same depth as path that is
 * at most two edits away, into buf; NULL when none is that close. */
static const char *closest_name(const struct jspec_field *spec, const char *path, char *buf,
				size_t cap)
{
	size_t best_d = 3, len = strlen(path), dots = 0;
	for (const char *p = path; *p; p++)
		dots += *p == '.';
	buf[0] = '\0';
	for (const struct jspec_field *f = spec; f->type != JSPEC_END; f++) {
		char cand[JSPEC_NAME_MAX];
		size_t i = 0, d = 0;
		for (; f->name[i] && i + 1 < sizeof cand; i++) {
			if (f->name[i] == '.' && d++ == dots)
				break;
			cand[i] = f->name[i];
		}
		cand[i] = '\0';
		size_t dist = edit_distance(path, cand);
		if (dist < best_d && dist < len) {
			best_d = dist;
			snprintf(buf, cap, "%s", cand);
		}
	}
	return buf[0] ? buf : NULL;
}

enum match { MATCH_NONE = 0, MATCH_LEAF = 1, MATCH_PARENT = 2, MATCH_OPAQUE = 4 };

static unsigned classify(const struct jspec_field *spec, const char *path, size_t len)
{
	unsigned m = MATCH_NONE;
	for (const struct jspec_field *f = spec; f->type != JSPEC_END; f++) {
		if (strncmp(f->name, path, len) != 0)
			continue;
		if (f->name[len] == '\0')
			m |= f->type == JSPEC_OBJECT ? MATCH_OPAQUE : MATCH_LEAF;
		else if (f->name[len] == '.')
			m |= MATCH_PARENT;
	}
	return m;
}

/* Every key of obj (at dotted prefix) must be named by the spec, either as a field or as
 * an object on the path of one; objects on such paths are checked the same way.
 * Recursion is bounded by the length of the spec's names. */
static int check_unknown(const json_t *obj, const char *prefix, const struct jspec_field *spec,
			 struct jspec_error *err)
{
	const char *key;
	const json_t *v;
	size_t plen = strlen(prefix);
	json_object_foreach ((json_t *)obj, key, v) {
		char path[JSPEC_NAME_MAX];
		unsigned m = MATCH_NONE;
		int w = snprintf(path, sizeof path, "%s%s%s", prefix, plen ? "." : "", key);
		/* Too long for any spec name (then reported truncated), empty, or dotted:
		 * none can name a field. */
		if (w > 0 && (size_t)w < sizeof path && key[0] && !strchr(key, '.'))
			m = classify(spec, path, (size_t)w);
		if (m & MATCH_OPAQUE)
			continue;
		if (m == MATCH_NONE && strchr(key, '.'))
			return fail(err, ERR_UNKNOWN_FIELD, path,
				    "unknown field (a key with '.' is not a path: nest objects)");
		if (m == MATCH_NONE) {
			char near[JSPEC_NAME_MAX];
			const char *hint = closest_name(spec, path, near, sizeof near);
			if (hint)
				return fail(err, ERR_UNKNOWN_FIELD, path,
					    "unknown field (did you mean %s?)", hint);
			return fail(err, ERR_UNKNOWN_FIELD, path, "unknown field");
		}
		if ((m & MATCH_PARENT) && json_is_object(v)) {
			int rc = check_unknown(v, path, spec, err);
			if (rc)
				return rc;
		}
	}
	return 0;
}

static int range_len(const struct jspec_field *f, size_t n, const char *what, const char *unit,
		     struct jspec_error *err)
{
	size_t lo, hi;
	length_bounds(f, &lo, &hi);
	if (n >= lo && n <= hi)
		return 0;
	if (lo == hi)
		return fail(err, ERR_RANGE, f->name, "%s exactly %zu %s", what, lo, unit);
	if (lo == 0)
		return fail(err, ERR_RANGE, f->name, "%s at most %zu %s", what, hi, unit);
	if (hi == SIZE_MAX)
		return fail(err, ERR_RANGE, f->name, "%s at least %zu %s", what, lo, unit);
	return fail(err, ERR_RANGE, f->name, "%s between %zu and %zu %s", what, lo, hi,
		    unit);
}

static int stage_int(const struct jspec_field *f, const json_t *v, struct slot *s,
		     struct jspec_error *err)
{
	if (!json_is_integer(v))
		return fail(err, ERR_TYPE, f->name, "must be an integer, got %s",
			    json_type_name(v));
	int64_t x = (int64_t)json_integer_value(v), lo, hi;
	int_bounds(f, &lo, &hi);
	if (x < lo || x > hi) {
		if (lo == INT64_MIN)
			return fail(err, ERR_RANGE, f->name, "must be at most %" PRId64, hi);
		if (hi == INT64_MAX)
			return fail(err, ERR_RANGE, f->name, "must be at least %" PRId64, lo);
		return fail(err, ERR_RANGE, f->name, "must be between %" PRId64 " and %" PRId64,
			    lo, hi);
	}
	s->v.i = x;
	return 0;
}

static int stage_uint(const struct jspec_field *f, const json_t *v, struct slot *s,
		      struct jspec_error *err)
{
	if (!json_is_integer(v) || json_integer_value(v) < 0)
		return fail(err, ERR_TYPE, f->name, "must be a non-negative integer, got %s%s",
			    json_is_integer(v) ? "negative " : "", json_type_name(v));
	uint64_t x = (uint64_t)json_integer_value(v), lo, hi;
	uint_bounds(f, &lo, &hi);
	if (x < lo || x > hi) {
		if (hi == UINT64_MAX)
			return fail(err, ERR_RANGE, f->name, "must be at least %" PRIu64, lo);
		return fail(err, ERR_RANGE, f->name, "must be between %" PRIu64 " and %" PRIu64,
			    lo, hi);
	}
	s->v.u = x;
	return 0;
}

static int stage_double(const struct jspec_field *f, const json_t *v, struct slot *s,
			struct jspec_error *err)
{
	if (!json_is_number(v))
		return fail(err, ERR_TYPE, f->name, "must be a number, got %s", json_type_name(v));
	double x = json_number_value(v);
	if (!unbounded(f) && (x < f->min || x > f->max)) {
		if (isinf(f->min))
			return fail(err, ERR_RANGE, f->name, "must be at most %.15g", f->max);
		if (isinf(f->max))
			return fail(err, ERR_RANGE, f->name, "must be at least %.15g", f->min);
		return fail(err, ERR_RANGE, f->name, "must be between %.15g and %.15g", f->min,
			    f->max);
	}
	s->v.d = x;
	return 0;
}

/* A string with an embedded NUL (possible in a json_t built in code) would be cut short
 * by every C consumer, so it is refused rather than silently truncated. */
static int get_string(const struct jspec_field *f, const json_t *v, const char *what,
		      struct jspec_error *err)
{
	if (!json_is_string(v))
		return fail(err, ERR_TYPE, f->name, "must be %s, got %s", what, json_type_name(v));
	if (strlen(json_string_value(v)) != json_string_length(v))
		return fail(err, ERR_PARSE, f->name, "must not contain NUL characters");
	return 0;
}

static int stage_enum(const struct jspec_field *f, const json_t *v, struct slot *s,
		      struct jspec_error *err)
{
	int rc = get_string(f, v, "a string", err);
	if (rc)
		return rc;
	const char *str = json_string_value(v);
	for (int i = 0; f->choices[i]; i++)
		if (strcmp(str, f->choices[i]) == 0) {
			s->v.e = i;
			return 0;
		}
	char list[sizeof err->detail];
	size_t n = 0;
	list[0] = '\0';
	for (int i = 0; f->choices[i] && n < sizeof list; i++) {
		int w = snprintf(list + n, sizeof list - n, "%s%s", i ? ", " : "", f->choices[i]);
		if (w < 0)
			break;
		n += (size_t)w;
	}
	return fail(err, ERR_RANGE, f->name, "must be one of: %s", list);
}

/* Decodes into an allocation of the exact decoded size; the encoded length is checked
 * against the bound first, so a long string cannot make us allocate more than the
 * field allows. */
static int stage_bytes(const struct jspec_field *f, const json_t *v, struct slot *s,
		       struct jspec_error *err)
{
	bool hex = f->type == JSPEC_HEX;
	int rc = get_string(f, v, hex ? "a hex string" : "a base64 string", err);
	if (rc)
		return rc;
	const char *str = json_string_value(v);
	size_t n = json_string_length(v), lo, hi, cap;
	length_bounds(f, &lo, &hi);
	if (hex) {
		if (n % 2)
			return fail(err, ERR_PARSE, f->name, "must be hex (an even number of digits)");
		cap = n / 2;
	} else {
		if (n % 4)
			return fail(err, ERR_PARSE, f->name, "must be base64 (standard, padded)");
		cap = n / 4 * 3;
		cap -= (n > 0 && str[n - 1] == '=') + (n > 1 && str[n - 2] == '=');
	}
	if (cap > hi)
		return range_len(f, cap, "decoded length must be", "bytes", err);
	uint8_t *buf = malloc(cap ? cap : 1);
	if (!buf)
		return fail(err, ERR_NOMEM, f->name, "out of memory decoding");
	size_t got = 0;
	int dec = hex ? sodium_hex2bin(buf, cap, str, n, NULL, &got, NULL)
		      : sodium_base642bin(buf, cap, str, n, NULL, &got, NULL,
					  sodium_base64_VARIANT_ORIGINAL);
	if (dec != 0 || got != cap) {
		sodium_memzero(buf, cap);
		free(buf);
		return fail(err, ERR_PARSE, f->name, "must be %s",
			    hex ? "hex (digits 0-9, a-f or A-F)" : "base64 (standard alphabet, padded)");
	}
	s->v.bytes.data = buf;
	s->v.bytes.len = got;
	rc = range_len(f, got, "decoded length must be", "bytes", err);
	if (rc)
		jspec_bytes_free(&s->v.bytes);
	return rc;
}

static int stage(const struct jspec_field *f, const json_t *v, struct slot *s,
		 struct jspec_error *err)
{
	int rc = 0;
	switch (f->type) {
	case JSPEC_STRING:
		rc = get_string(f, v, "a string", err);
		if (!rc)
			rc = range_len(f, json_string_length(v), "length must be", "bytes", err);
		s->v.s = json_string_value(v);
		break;
	case JSPEC_INT: rc = stage_int(f, v, s, err); break;
	case JSPEC_UINT: rc = stage_uint(f, v, s, err); break;
	case JSPEC_DOUBLE: rc = stage_double(f, v, s, err); break;
	case JSPEC_BOOL:
		if (!json_is_boolean(v))
			return fail(err, ERR_TYPE, f->name, "must be true or false, got %s",
				    json_type_name(v));
		s->v.b = json_is_true(v);
		break;
	case JSPEC_ENUM: rc = stage_enum(f, v, s, err); break;
	case JSPEC_HEX:
	case JSPEC_BASE64: rc = stage_bytes(f, v, s, err); break;
	case JSPEC_OBJECT:
		if (!json_is_object(v))
			return fail(err, ERR_TYPE, f->name, "must be an object, got %s",
				    json_type_name(v));
		s->v.j = (json_t *)v;
		break;
	case JSPEC_ARRAY:
		if (!json_is_array(v))
			return fail(err, ERR_TYPE, f->name, "must be an array, got %s",
				    json_type_name(v));
		rc = range_len(f, json_array_size(v), "array must have", "elements", err);
		s->v.j = (json_t *)v;
		break;
	case JSPEC_END: break;
	}
	if (!rc)
		s->present = true;
	return rc;
}

static void commit(const struct jspec_field *f, struct slot *s)
{
	if (f->present)
		*f->present = s->present;
	if (!s->present)
		return;
	if (!f->out) {
		if (f->type == JSPEC_HEX || f->type == JSPEC_BASE64)
			jspec_bytes_free(&s->v.bytes);
		return;
	}
	switch (f->type) {
	case JSPEC_STRING: *(const char **)f->out = s->v.s; break;
	case JSPEC_INT: *(int64_t *)f->out = s->v.i; break;
	case JSPEC_UINT: *(uint64_t *)f->out = s->v.u; break;
	case JSPEC_DOUBLE: *(double *)f->out = s->v.d; break;
	case JSPEC_BOOL: *(bool *)f->out = s->v.b; break;
	case JSPEC_ENUM: *(int *)f->out = s->v.e; break;
	case JSPEC_HEX:
	case JSPEC_BASE64:
		*(struct jspec_bytes *)f->out = s->v.bytes;
		s->v.bytes.data = NULL;
		break;
	case JSPEC_OBJECT:
	case JSPEC_ARRAY: *(json_t **)f->out = s->v.j; break;
	case JSPEC_END: break;
	}
}

int jspec_parse(const json_t *root, const struct jspec_field *spec, unsigned flags,
		struct jspec_error *err)
{
	struct jspec_error scratch;
	struct slot *slots = NULL;
	size_t n = 0;
	int rc = 0;
	if (!err)
		err = &scratch;
	memset(err, 0, sizeof *err);
	if (!root || !spec)
		return fail(err, ERR_INVALID, NULL, "no document or no spec");
	for (; spec[n].type != JSPEC_END; n++) {
		if (!spec[n].name)
			return fail(err, ERR_INTERNAL, NULL, "bad spec: row %zu has no name", n);
		if ((rc = check_spec_row(&spec[n], err)) != 0)
			return rc;
	}
	if (!json_is_object(root))
		return fail(err, ERR_TYPE, NULL, "the document must be a JSON object, got %s",
			    json_type_name(root));
	if (!(flags & JSPEC_ALLOW_UNKNOWN) && (rc = check_unknown(root, "", spec, err)) != 0)
		return rc;
	slots = calloc(n ? n : 1, sizeof *slots);
	if (!slots)
		return fail(err, ERR_NOMEM, NULL, "out of memory");
	for (size_t i = 0; i < n; i++) {
		const json_t *v;
		if ((rc = lookup(root, spec[i].name, &v, err)) != 0)
			goto out;
		if (!v) {
			if (spec[i].required) {
				rc = fail(err, ERR_MISSING, spec[i].name, "required field is missing");
				goto out;
			}
			continue;
		}
		if ((rc = stage(&spec[i], v, &slots[i], err)) != 0)
			goto out;
	}
	for (size_t i = 0; i < n; i++)
		commit(&spec[i], &slots[i]);
out:
	if (rc) {
		for (size_t i = 0; i < n; i++)
			if (slots[i].present &&
			    (spec[i].type == JSPEC_HEX || spec[i].type == JSPEC_BASE64))
				jspec_bytes_free(&slots[i].v.bytes);
	}
	sodium_memzero(slots, n * sizeof *slots);
	free(slots);
	return rc;
}

/* Depth of containers below v (v itself at depth d); stops as soon as the bound is
 * passed, so the recursion never goes deeper than JSPEC_MAX_DEPTH + 1 frames. */
static bool too_deep(const json_t *v, int d)
{
	if (d > JSPEC_MAX_DEPTH)
		return true;
	if (json_is_object(v)) {
		const char *k;
		const json_t *c;
		json_object_foreach ((json_t *)v, k, c)
			if ((json_is_object(c) || json_is_array(c)) && too_deep(c, d + 1))
				return true;
	} else if (json_is_array(v)) {
		size_t i;
		const json_t *c;
		json_array_foreach (v, i, c)
			if ((json_is_object(c) || json_is_array(c)) && too_deep(c, d + 1))
				return true;
	}
	return false;
}

int jspec_parse_body(const void *buf, size_t len, const struct jspec_field *spec,
		     unsigned flags, json_t **root, struct jspec_error *err)
{
	struct jspec_error scratch;
	json_error_t je;
	json_t *doc = NULL;
	int rc = 0;
	if (!err)
		err = &scratch;
	memset(err, 0, sizeof *err);
	if (!root)
		return fail(err, ERR_INVALID, NULL, "no root pointer");
	*root = NULL;
	if (len > JSPEC_MAX_BODY)
		return fail(err, ERR_TOO_LARGE, NULL, "body is larger than %d bytes",
			    JSPEC_MAX_BODY);
	doc = json_loadb(buf ? buf : "", buf ? len : 0, JSON_REJECT_DUPLICATES | JSON_DECODE_ANY,
			 &je);
	if (!doc) {
		/* jansson quotes the token it stopped at, which may be a value (a key in a
		 * config file): keep the quote only when it is a duplicated key's name. */
		char *near = strstr(je.text, " near '");
		if (near && json_error_code(&je) != json_error_duplicate_key)
			*near = '\0';
		return fail(err, ERR_PARSE, NULL, "invalid JSON at line %d, column %d: %s",
			    je.line, je.column, je.text);
	}
	if (!json_is_object(doc)) {
		rc = fail(err, ERR_TYPE, NULL, "the document must be a JSON object, got %s",
			  json_type_name(doc));
		goto out;
	}
	if (too_deep(doc, 1)) {
		rc = fail(err, ERR_PARSE, NULL, "JSON nested deeper than %d levels",
			  JSPEC_MAX_DEPTH);
		goto out;
	}
	if (spec && (rc = jspec_parse(doc, spec, flags, err)) != 0)
		goto out;
	*root = doc;
	doc = NULL;
out:
	json_decref(doc);
	return rc;
}

json_t *jspec_problem(const struct jspec_error *err, const char *request_id)
{
	if (!err || err->code == 0)
		return err_problem(ERR_INTERNAL, NULL, NULL, request_id);
	return err_problem(err->code, err->detail[0] ? err->detail : NULL,
			   err->field[0] ? err->field : NULL, request_id);
}

void jspec_bytes_free(struct jspec_bytes *b)
{
	if (!b)
		return;
	if (b->data) {
		sodium_memzero(b->data, b->len);
		free(b->data);
	}
	b->data = NULL;
	b->len = 0;
}
