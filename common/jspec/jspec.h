/* jspec: declarative parsing of JSON objects (request bodies, configuration files).
 *
 * A caller describes the fields it expects in a spec array (name, type, required,
 * bounds, where to store the value) and jspec_parse() checks a document against it, so
 * every handler rejects bad input the same way: one struct jspec_error naming the
 * offending field (dotted path) that jspec_problem() turns into a 400 problem+json.
 *
 *   const char *model = NULL;
 *   uint64_t max_tokens = 16;             // default, kept when the field is absent
 *   int mode = 0;
 *   static const char *const modes[] = {"greedy", "sample", NULL};
 *   const struct jspec_field spec[] = {
 *           JSPEC_STR("model", true, 1, 64, &model),
 *           JSPEC_U64("options.max_tokens", false, 1, 4096, &max_tokens),
 *           JSPEC_CHOICE("options.mode", false, modes, &mode),
 *           JSPEC_END_F,
 *   };
 *   json_t *root;
 *   struct jspec_error e;
 *   if (jspec_parse_body(body, len, spec, 0, &root, &e) != 0)
 *           reply(jspec_problem(&e, request_id));
 *
 * Rules, the same for every caller:
 * - Strict by default: a key the spec does not name is ERR_UNKNOWN_FIELD (also inside
 *   objects reached through dotted names; a JSPEC_OBJECT field is taken as-is). A key
 *   that itself contains '.' never matches a dotted name, so it is always unknown.
 * - A JSON null counts as absent: an optional field keeps its default, a required one
 *   is ERR_MISSING.
 * - Parsing is all-or-nothing: outputs and present flags are written only when the
 *   whole document is valid. On error nothing is written and nothing is left allocated.
 * - Details never quote the offending value (configuration values may be secrets),
 *   only its name, its JSON type and the bounds. They read "<field>: <what is wrong>".
 * - Spec mistakes (NULL name, bad bounds, ENUM without choices) are our bug, not the
 *   client's: ERR_INTERNAL with a detail starting "bad spec".
 *
 * Thread-safe: no global state. */
#ifndef MIMIR_JSPEC_H
#define MIMIR_JSPEC_H

#include <jansson.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

/* Default maximum for STRING length, ARRAY element count and HEX/BASE64 decoded length
 * when a field's max is 0. A field may ask for more explicitly. */
#define JSPEC_DEFAULT_MAX 65536
/* jspec_parse_body(): largest body and deepest nesting accepted (root object = 1). */
#define JSPEC_MAX_BODY (1024 * 1024)
#define JSPEC_MAX_DEPTH 32
/* Field names (dotted paths) are shorter than this; so is jspec_error.field. */
#define JSPEC_NAME_MAX 128

enum jspec_type {
	JSPEC_END = 0,
	JSPEC_STRING, /* out: const char ** (borrowed from the document) */
	JSPEC_INT,    /* out: int64_t *; a JSON integer, 3.0 is not one */
	JSPEC_UINT,   /* out: uint64_t *; a non-negative JSON integer (at most INT64_MAX) */
	JSPEC_DOUBLE, /* out: double *; any JSON number */
	JSPEC_BOOL,   /* out: bool * */
	JSPEC_ENUM,   /* out: int *, the index into choices */
	JSPEC_HEX,    /* out: struct jspec_bytes * (allocated; caller frees) */
	JSPEC_BASE64, /* out: struct jspec_bytes *; standard alphabet, padded (RFC 4648 s.4) */
	JSPEC_OBJECT, /* out: json_t ** (borrowed), taken as-is */
	JSPEC_ARRAY,  /* out: json_t ** (borrowed); elements are not checked */
};

struct jspec_field {
	const char *name;           /* dotted path into nested objects: "tls.cert" */
	enum jspec_type type;
	bool required;
	/* INT/UINT/DOUBLE: inclusive value bounds, min == max == 0 means unbounded and
	 * -INFINITY / INFINITY leave one side open. STRING: byte length; ARRAY: element
	 * count; HEX/BASE64: decoded byte length; for these max == 0 means
	 * JSPEC_DEFAULT_MAX. */
	double min, max;
	const char *const *choices; /* JSPEC_ENUM: NULL-terminated, matched exactly */
	void *out;                  /* see enum jspec_type; NULL: checked, not stored */
	bool *present;              /* optional: whether the field was there (not null) */
};

/* Decoded HEX/BASE64 bytes. data is malloc'd (never NULL after a successful parse,
 * even when len is 0); jspec_bytes_free() wipes and frees it. jspec overwrites an out
 * struct without freeing what it held, so pass a zeroed or already-freed one. */
struct jspec_bytes {
	uint8_t *data;
	size_t len;
};

struct jspec_error {
	int code;                    /* the ERR_* returned; 0 when none */
	char field[JSPEC_NAME_MAX];  /* dotted path of the offending field, "" when none */
	char detail[256];            /* "<field>: <what is wrong>", for humans */
};

enum jspec_flags {
	JSPEC_ALLOW_UNKNOWN = 1u << 0, /* ignore keys the spec does not name */
};

/* Spec rows that read like a table. Each checks the type of its out pointer at compile
 * time; extra designated initializers may follow, e.g. `.present = &has_top_k`. */
#define JSPEC_OUT_(T, o) ((void *)(1 ? (o) : (T)0))
#define JSPEC_ROW_(n, t, r, lo, hi, T, o, ...)                                             \
	{                                                                                  \
		.name = (n), .type = (t), .required = (r), .min = (lo), .max = (hi),       \
		.out = JSPEC_OUT_(T, o), __VA_ARGS__                                      \
	}
#define JSPEC_STR(n, req, minlen, maxlen, o, ...)                                          \
	JSPEC_ROW_(n, JSPEC_STRING, req, minlen, maxlen, const char **, o, __VA_ARGS__)
#define JSPEC_I64(n, req, lo, hi, o, ...)                                                  \
	JSPEC_ROW_(n, JSPEC_INT, req, lo, hi, int64_t *, o, __VA_ARGS__)
#define JSPEC_U64(n, req, lo, hi, o, ...)                                                  \
	JSPEC_ROW_(n, JSPEC_UINT, req, lo, hi, uint64_t *, o, __VA_ARGS__)
#define JSPEC_DBL(n, req, lo, hi, o, ...)                                                  \
	JSPEC_ROW_(n, JSPEC_DOUBLE, req, lo, hi, double *, o, __VA_ARGS__)
#define JSPEC_BOOLEAN(n, req, o, ...) JSPEC_ROW_(n, JSPEC_BOOL, req, 0, 0, bool *, o, __VA_ARGS__)
#define JSPEC_CHOICE(n, req, list, o, ...)                                                 \
	JSPEC_ROW_(n, JSPEC_ENUM, req, 0, 0, int *, o, .choices = (list), __VA_ARGS__)
#define JSPEC_HEXBYTES(n, req, minlen, maxlen, o, ...)                                     \
	JSPEC_ROW_(n, JSPEC_HEX, req, minlen, maxlen, struct jspec_bytes *, o, __VA_ARGS__)
#define JSPEC_B64BYTES(n, req, minlen, maxlen, o, ...)                                     \
	JSPEC_ROW_(n, JSPEC_BASE64, req, minlen, maxlen, struct jspec_bytes *, o, __VA_ARGS__)
#define JSPEC_OBJ(n, req, o, ...) JSPEC_ROW_(n, JSPEC_OBJECT, req, 0, 0, json_t **, o, __VA_ARGS__)
#define JSPEC_ARR(n, req, mincount, maxcount, o, ...)                                      \
	JSPEC_ROW_(n, JSPEC_ARRAY, req, mincount, maxcount, json_t **, o, __VA_ARGS__)
#define JSPEC_END_F {.name = NULL, .type = JSPEC_END}

/* Checks root (a JSON object) against spec (terminated by a JSPEC_END row) and stores
 * the values. Returns 0, or ERR_UNKNOWN_FIELD, ERR_MISSING, ERR_TYPE (wrong JSON type;
 * for "a.b", also "a" not an object), ERR_RANGE (bounds or enum choices, listed in the
 * detail), ERR_PARSE (bad hex/base64), ERR_NOMEM, ERR_INTERNAL (bad spec) or
 * ERR_INVALID (NULL root or spec), with err filled in (err may be NULL). Borrowed
 * outputs live as long as root. */
int jspec_parse(const json_t *root, const struct jspec_field *spec, unsigned flags,
		struct jspec_error *err);

/* Parses buf (len bytes, at most JSPEC_MAX_BODY: else ERR_TOO_LARGE) as one JSON
 * object, rejecting duplicate keys and nesting deeper than JSPEC_MAX_DEPTH, then runs
 * jspec_parse() on it (spec NULL: parse and check the object only). Malformed JSON is
 * ERR_PARSE with line and column in the detail and no field; a root that is not an
 * object is ERR_TYPE. On success *root is the document (caller json_decref()s it once
 * done with borrowed outputs); on error *root is NULL. */
int jspec_parse_body(const void *buf, size_t len, const struct jspec_field *spec,
		     unsigned flags, json_t **root, struct jspec_error *err);

/* The RFC 9457 body for err (err_problem(): status from the code, 400 for every input
 * error, "field" when one is named). New reference, NULL on allocation failure. */
json_t *jspec_problem(const struct jspec_error *err, const char *request_id);

/* Wipes and frees b->data and zeroes b. Accepts NULL and an empty struct. */
void jspec_bytes_free(struct jspec_bytes *b);

#endif
