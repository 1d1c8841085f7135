/* jspec: every type is accepted and rejected the documented way, errors name the field
 * (dotted path) with the right code and bounds, strictness reaches nested objects,
 * malformed bodies report their position, a failed parse writes and leaks nothing
 * (the SAN build's leak checker runs over these tests), and the problem+json built
 * from an error is a 400 naming the field. */
#include <jansson.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "err/err.h"
#include "jspec/jspec.h"
#include "testutil.h"

static const char *const modes[] = {"greedy", "sample", "beam", NULL};

/* Parses a NUL-terminated body; the document is dropped unless the caller wants it. */
static int parse(const char *body, const struct jspec_field *spec, unsigned flags,
		 struct jspec_error *e)
{
	json_t *root = NULL;
	int rc = jspec_parse_body(body, strlen(body), spec, flags, &root, e);
	if (rc == 0)
		ck_assert_ptr_nonnull(root);
	else
		ck_assert_ptr_null(root);
	json_decref(root);
	return rc;
}

#define ck_detail_has(e, s)                                                                \
	ck_assert_msg(strstr((e).detail, (s)) != NULL, "detail \"%s\" lacks \"%s\"",       \
		      (e).detail, (s))

START_TEST(test_every_type_accepted)
{
	const char *model = NULL;
	int64_t seed = 0;
	uint64_t max_tokens = 0;
	double temp = 0;
	bool stream = false, has_cert = false;
	int mode = -1;
	struct jspec_bytes key = {0}, nonce = {0};
	json_t *meta = NULL, *stop = NULL;
	const struct jspec_field spec[] = {
		JSPEC_STR("model", true, 1, 64, &model),
		JSPEC_I64("seed", true, -10, 10, &seed),
		JSPEC_U64("options.max_tokens", true, 1, 4096, &max_tokens),
		JSPEC_DBL("options.temperature", true, 0, 2, &temp),
		JSPEC_BOOLEAN("stream", true, &stream),
		JSPEC_CHOICE("options.mode", true, modes, &mode),
		JSPEC_HEXBYTES("tls.key", true, 4, 4, &key, .present = &has_cert),
		JSPEC_B64BYTES("tls.nonce", true, 0, 0, &nonce),
		JSPEC_OBJ("meta", true, &meta),
		JSPEC_ARR("stop", true, 0, 4, &stop),
		JSPEC_END_F,
	};
	const char *body = "{\"model\": \"stories260K\", \"seed\": -7, \"stream\": true,"
			   " \"options\": {\"max_tokens\": 4096, \"temperature\": 0.5,"
			   " \"mode\": \"beam\"},"
			   " \"tls\": {\"key\": \"DEADbeef\", \"nonce\": \"aGVsbG8=\"},"
			   " \"meta\": {\"anything\": [1, {\"x\": null}]}, \"stop\": [\"\\n\"]}";
	struct jspec_error e;
	json_t *root = NULL;
	ck_assert_int_eq(jspec_parse_body(body, strlen(body), spec, 0, &root, &e), 0);
	ck_assert_int_eq(e.code, 0);
	ck_assert_str_eq(model, "stories260K");
	ck_assert_int_eq(seed, -7);
	ck_assert_uint_eq(max_tokens, 4096);
	ck_assert(temp == 0.5);
	ck_assert(stream);
	ck_assert_int_eq(mode, 2);
	ck_assert(has_cert);
	const uint8_t want_key[] = {0xde, 0xad, 0xbe, 0xef};
	ck_assert_uint_eq(key.len, 4);
	ck_assert_mem_eq(key.data, want_key, 4);
	ck_assert_uint_eq(nonce.len, 5);
	ck_assert_mem_eq(nonce.data, "hello", 5);
	/* Borrowed JSON values point into the document. */
	ck_assert_ptr_eq(meta, json_object_get(root, "meta"));
	ck_assert_uint_eq(json_array_size(stop), 1);
	ck_assert_str_eq(json_string_value(json_array_get(stop, 0)), "\n");
	jspec_bytes_free(&key);
	jspec_bytes_free(&nonce);
	ck_assert_ptr_null(key.data);
	ck_assert_uint_eq(key.len, 0);
	jspec_bytes_free(NULL);
	json_decref(root);
}
END_TEST

START_TEST(test_absent_and_null_keep_defaults)
{
	uint64_t n = 16;
	double t = 1.0;
	const char *s = "default";
	bool has_n = true, has_s = true;
	const struct jspec_field spec[] = {
		JSPEC_U64("n", false, 1, 100, &n, .present = &has_n),
		JSPEC_DBL("a.t", false, 0, 2, &t),
		JSPEC_STR("s", false, 0, 8, &s, .present = &has_s),
		JSPEC_END_F,
	};
	struct jspec_error e;
	ck_assert_int_eq(parse("{\"s\": null, \"a\": null}", spec, 0, &e), 0);
	ck_assert_uint_eq(n, 16);
	ck_assert(t == 1.0);
	ck_assert_str_eq(s, "default");
	ck_assert(!has_n);
	ck_assert(!has_s);
	ck_assert_int_eq(parse("{}", spec, 0, &e), 0);
	ck_assert_uint_eq(n, 16);
	/* A NULL out checks the field without storing it. */
	const struct jspec_field check_only[] = {
		JSPEC_I64("x", true, 0, 1, NULL),
		JSPEC_HEXBYTES("h", true, 0, 0, NULL),
		JSPEC_END_F,
	};
	ck_assert_int_eq(parse("{\"x\": 1, \"h\": \"00\"}", check_only, 0, &e), 0);
	ck_assert_int_eq(parse("{\"x\": 2, \"h\": \"00\"}", check_only, 0, &e), ERR_RANGE);
}
END_TEST

struct type_case {
	const char *body;
	const char *field;
	const char *detail;
};

START_TEST(test_wrong_types)
{
	const struct jspec_field spec[] = {
		JSPEC_STR("s", false, 0, 0, NULL),    JSPEC_I64("i", false, 0, 0, NULL),
		JSPEC_U64("u", false, 0, 0, NULL),    JSPEC_DBL("d", false, 0, 0, NULL),
		JSPEC_BOOLEAN("b", false, NULL),      JSPEC_CHOICE("e", false, modes, NULL),
		JSPEC_HEXBYTES("h", false, 0, 0, NULL), JSPEC_B64BYTES("x", false, 0, 0, NULL),
		JSPEC_OBJ("o", false, NULL),          JSPEC_ARR("a", false, 0, 0, NULL),
		JSPEC_END_F,
	};
	static const struct type_case cases[] = {
		{"{\"s\": 1}", "s", "s: must be a string, got integer"},
		{"{\"i\": 3.0}", "i", "i: must be an integer, got non-integer number"},
		{"{\"i\": 1e2}", "i", "must be an integer"},
		{"{\"i\": \"3\"}", "i", "must be an integer, got string"},
		{"{\"u\": -1}", "u", "u: must be a non-negative integer, got negative integer"},
		{"{\"u\": 1.5}", "u", "must be a non-negative integer"},
		{"{\"d\": \"1\"}", "d", "d: must be a number, got string"},
		{"{\"d\": true}", "d", "got boolean"},
		{"{\"b\": 1}", "b", "b: must be true or false, got integer"},
		{"{\"b\": \"true\"}", "b", "got string"},
		{"{\"e\": 0}", "e", "e: must be a string, got integer"},
		{"{\"h\": 12}", "h", "h: must be a hex string"},
		{"{\"x\": []}", "x", "x: must be a base64 string, got array"},
		{"{\"o\": [1]}", "o", "o: must be an object, got array"},
		{"{\"a\": {}}", "a", "a: must be an array, got object"},
	};
	for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
		struct jspec_error e;
		ck_assert_msg(parse(cases[i].body, spec, 0, &e) == ERR_TYPE, "%s", cases[i].body);
		ck_assert_int_eq(e.code, ERR_TYPE);
		ck_assert_str_eq(e.field, cases[i].field);
		ck_detail_has(e, cases[i].detail);
	}
	/* Numbers of the right kind pass: an integer is a valid DOUBLE. */
	struct jspec_error e;
	ck_assert_int_eq(parse("{\"d\": 3, \"i\": -0, \"u\": 0}", spec, 0, &e), 0);
}
END_TEST

struct range_case {
	const char *body;
	const char *detail;
};

START_TEST(test_bounds)
{
	const struct jspec_field spec[] = {
		JSPEC_I64("i", false, -5, 5, NULL),
		JSPEC_U64("u", false, 1, INFINITY, NULL),
		JSPEC_U64("port", false, 0, 65535, NULL),
		JSPEC_DBL("d", false, 0, 2, NULL),
		JSPEC_DBL("lo", false, -INFINITY, 0.5, NULL),
		JSPEC_STR("s", false, 2, 4, NULL),
		JSPEC_ARR("a", false, 1, 2, NULL),
		JSPEC_HEXBYTES("h", false, 2, 3, NULL),
		JSPEC_B64BYTES("k", false, 3, 3, NULL),
		JSPEC_END_F,
	};
	static const struct range_case bad[] = {
		{"{\"i\": -6}", "i: must be between -5 and 5"},
		{"{\"i\": 6}", "i: must be between -5 and 5"},
		{"{\"u\": 0}", "u: must be at least 1"},
		{"{\"port\": 65536}", "port: must be between 0 and 65535"},
		{"{\"d\": -0.001}", "d: must be between 0 and 2"},
		{"{\"d\": 2.5}", "d: must be between 0 and 2"},
		{"{\"lo\": 0.75}", "lo: must be at most 0.5"},
		{"{\"s\": \"a\"}", "s: length must be between 2 and 4 bytes"},
		{"{\"s\": \"abcde\"}", "s: length must be between 2 and 4 bytes"},
		{"{\"a\": []}", "a: array must have between 1 and 2 elements"},
		{"{\"a\": [1, 2, 3]}", "a: array must have between 1 and 2 elements"},
		{"{\"h\": \"00\"}", "h: decoded length must be between 2 and 3 bytes"},
		{"{\"h\": \"00112233\"}", "h: decoded length must be between 2 and 3 bytes"},
		{"{\"k\": \"AAA=\"}", "k: decoded length must be exactly 3 bytes"},
		{"{\"k\": \"AAAAAA==\"}", "k: decoded length must be exactly 3 bytes"},
	};
	for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
		struct jspec_error e;
		ck_assert_msg(parse(bad[i].body, spec, 0, &e) == ERR_RANGE, "%s", bad[i].body);
		ck_assert_str_eq(e.detail, bad[i].detail);
	}
	/* Both ends of every range are inclusive. */
	const char *good[] = {
		"{\"i\": -5, \"u\": 1, \"port\": 0, \"d\": 0, \"lo\": 0.5, \"s\": \"ab\","
		" \"a\": [1], \"h\": \"0011\", \"k\": \"AAAA\"}",
		"{\"i\": 5, \"u\": 9223372036854775807, \"port\": 65535, \"d\": 2, \"lo\": -1e300,"
		" \"s\": \"abcd\", \"a\": [1, 2], \"h\": \"001122\"}",
	};
	for (size_t i = 0; i < 2; i++) {
		struct jspec_error e;
		ck_assert_msg(parse(good[i], spec, 0, &e) == 0, "%s: %s", good[i], e.detail);
	}
}
END_TEST

START_TEST(test_default_length_maximum)
{
	const struct jspec_field spec[] = {
		JSPEC_STR("s", false, 0, 0, NULL),
		JSPEC_STR("big", false, 0, 100000, NULL),
		JSPEC_END_F,
	};
	size_t n = JSPEC_DEFAULT_MAX + 1;
	char *body = malloc(n + 32);
	ck_assert_ptr_nonnull(body);
	memcpy(body, "{\"s\": \"", 7);
	memset(body + 7, 'a', n);
	memcpy(body + 7 + n, "\"}", 3);
	struct jspec_error e;
	ck_assert_int_eq(parse(body, spec, 0, &e), ERR_RANGE);
	ck_assert_str_eq(e.detail, "s: length must be at most 65536 bytes");
	body[7 + n - 1] = '"';
	body[7 + n] = '}';
	body[7 + n + 1] = '\0';
	ck_assert_int_eq(parse(body, spec, 0, &e), 0);
	/* An explicit maximum above the default is honoured. */
	memcpy(body, "{\"big\": \"", 9);
	memset(body + 9, 'a', n);
	memcpy(body + 9 + n, "\"}", 3);
	ck_assert_int_eq(parse(body, spec, 0, &e), 0);
	free(body);
}
END_TEST

START_TEST(test_integer_extremes)
{
	int64_t i = 0;
	uint64_t u = 0;
	const struct jspec_field spec[] = {
		JSPEC_I64("i", false, 0, 0, &i),
		JSPEC_U64("u", false, 0, 0, &u),
		JSPEC_END_F,
	};
	struct jspec_error e;
	ck_assert_int_eq(parse("{\"i\": -9223372036854775808, \"u\": 9223372036854775807}",
			       spec, 0, &e), 0);
	ck_assert(i == INT64_MIN);
	ck_assert(u == (uint64_t)INT64_MAX);
	/* Beyond int64 the JSON itself is refused (jansson's integer range). */
	ck_assert_int_eq(parse("{\"u\": 18446744073709551615}", spec, 0, &e), ERR_PARSE);
	ck_assert_int_eq(parse("{\"i\": 1e400}", spec, 0, &e), ERR_PARSE);
}
END_TEST

START_TEST(test_missing_required)
{
	const struct jspec_field spec[] = {
		JSPEC_STR("model", true, 1, 64, NULL),
		JSPEC_U64("options.top_k", true, 1, 100, NULL),
		JSPEC_END_F,
	};
	struct jspec_error e;
	ck_assert_int_eq(parse("{\"options\": {\"top_k\": 5}}", spec, 0, &e), ERR_MISSING);
	ck_assert_str_eq(e.field, "model");
	ck_assert_str_eq(e.detail, "model: required field is missing");
	ck_assert_int_eq(parse("{\"model\": \"m\"}", spec, 0, &e), ERR_MISSING);
	ck_assert_str_eq(e.field, "options.top_k");
	ck_assert_int_eq(parse("{\"model\": \"m\", \"options\": {}}", spec, 0, &e), ERR_MISSING);
	ck_assert_str_eq(e.field, "options.top_k");
	ck_assert_int_eq(parse("{\"model\": null, \"options\": {\"top_k\": 1}}", spec, 0, &e),
			 ERR_MISSING);
	ck_assert_str_eq(e.field, "model");
	ck_assert_int_eq(parse("{\"model\": \"m\", \"options\": {\"top_k\": 1}}", spec, 0, &e), 0);
}
END_TEST

START_TEST(test_unknown_fields)
{
	const struct jspec_field spec[] = {
		JSPEC_STR("model", false, 0, 0, NULL),
		JSPEC_STR("tls.cert", false, 0, 0, NULL),
		JSPEC_BOOLEAN("tls.enabled", false, NULL),
		JSPEC_OBJ("extra", false, NULL),
		JSPEC_END_F,
	};
	struct jspec_error e;
	ck_assert_int_eq(parse("{\"model\": \"m\", \"stream\": true}", spec, 0, &e),
			 ERR_UNKNOWN_FIELD);
	ck_assert_str_eq(e.field, "stream");
	ck_assert_str_eq(e.detail, "stream: unknown field");
	/* Nested, reported by dotted path, with the near miss suggested. */
	ck_assert_int_eq(parse("{\"tls\": {\"cert\": \"c\", \"enabeld\": true}}", spec, 0, &e),
			 ERR_UNKNOWN_FIELD);
	ck_assert_str_eq(e.field, "tls.enabeld");
	ck_assert_str_eq(e.detail, "tls.enabeld: unknown field (did you mean tls.enabled?)");
	ck_assert_int_eq(parse("{\"tsl\": {}}", spec, 0, &e), ERR_UNKNOWN_FIELD);
	ck_assert_str_eq(e.detail, "tsl: unknown field (did you mean tls?)");
	/* A dotted key is not a path. */
	ck_assert_int_eq(parse("{\"tls.cert\": \"c\"}", spec, 0, &e), ERR_UNKNOWN_FIELD);
	ck_assert_str_eq(e.field, "tls.cert");
	ck_assert_int_eq(parse("{\"\": 1}", spec, 0, &e), ERR_UNKNOWN_FIELD);
	/* The first unknown key in document order is the one named. */
	ck_assert_int_eq(parse("{\"zz\": 1, \"aa\": 2}", spec, 0, &e), ERR_UNKNOWN_FIELD);
	ck_assert_str_eq(e.field, "zz");
	/* A JSPEC_OBJECT is taken as-is; ALLOW_UNKNOWN turns strictness off everywhere. */
	ck_assert_int_eq(parse("{\"extra\": {\"anything\": {\"goes\": 1}}}", spec, 0, &e), 0);
	ck_assert_int_eq(parse("{\"stream\": 1, \"tls\": {\"x\": 2, \"cert\": \"c\"}}", spec,
			       JSPEC_ALLOW_UNKNOWN, &e), 0);
	/* Still type-checked when unknown keys are allowed. */
	ck_assert_int_eq(parse("{\"stream\": 1, \"model\": 2}", spec, JSPEC_ALLOW_UNKNOWN, &e),
			 ERR_TYPE);
	/* A very long unknown key is reported truncated, never overflowing field. */
	char body[600];
	memset(body, 'k', sizeof body);
	memcpy(body, "{\"", 2);
	memcpy(body + sizeof body - 8, "\": 1}", 6);
	ck_assert_int_eq(parse(body, spec, 0, &e), ERR_UNKNOWN_FIELD);
	ck_assert_uint_eq(strlen(e.field), JSPEC_NAME_MAX - 1);
}
END_TEST

START_TEST(test_nested_parent_must_be_object)
{
	const char *cert = NULL;
	const struct jspec_field spec[] = {
		JSPEC_STR("tls.cert", false, 0, 0, &cert),
		JSPEC_END_F,
	};
	struct jspec_error e;
	ck_assert_int_eq(parse("{\"tls\": \"yes\"}", spec, 0, &e), ERR_TYPE);
	ck_assert_str_eq(e.field, "tls");
	ck_assert_str_eq(e.detail, "tls: must be an object, got string");
	ck_assert_int_eq(parse("{\"tls\": [] }", spec, JSPEC_ALLOW_UNKNOWN, &e), ERR_TYPE);
	ck_assert_str_eq(e.field, "tls");
	const struct jspec_field deep[] = {
		JSPEC_I64("a.b.c", true, 0, 0, NULL),
		JSPEC_END_F,
	};
	ck_assert_int_eq(parse("{\"a\": {\"b\": 1}}", deep, 0, &e), ERR_TYPE);
	ck_assert_str_eq(e.field, "a.b");
	ck_assert_int_eq(parse("{\"a\": {\"b\": {\"c\": 1, \"d\": 2}}}", deep, 0, &e),
			 ERR_UNKNOWN_FIELD);
	ck_assert_str_eq(e.field, "a.b.d");
	ck_assert_int_eq(parse("{\"a\": {\"b\": {\"c\": 1}}}", deep, 0, &e), 0);
}
END_TEST

START_TEST(test_duplicates_rejected)
{
	const struct jspec_field spec[] = {
		JSPEC_I64("a", false, 0, 0, NULL),
		JSPEC_I64("o.b", false, 0, 0, NULL),
		JSPEC_END_F,
	};
	struct jspec_error e;
	ck_assert_int_eq(parse("{\"a\": 1, \"a\": 2}", spec, 0, &e), ERR_PARSE);
	ck_assert_str_eq(e.field, "");
	ck_detail_has(e, "duplicate");
	ck_assert_int_eq(parse("{\"o\": {\"b\": 1, \"b\": 1}}", spec, 0, &e), ERR_PARSE);
	ck_detail_has(e, "duplicate");
}
END_TEST

START_TEST(test_malformed_json_position)
{
	const struct jspec_field spec[] = {JSPEC_I64("a", false, 0, 0, NULL), JSPEC_END_F};
	struct jspec_error e;
	ck_assert_int_eq(parse("{\n  \"a\": 1,\n  \"b\": }", spec, 0, &e), ERR_PARSE);
	ck_assert_int_eq(e.code, ERR_PARSE);
	ck_assert_str_eq(e.field, "");
	ck_detail_has(e, "invalid JSON at line 3, column 8:");
	ck_assert_int_eq(parse("{\"a\": 1", spec, 0, &e), ERR_PARSE);
	ck_detail_has(e, "line 1,");
	ck_assert_int_eq(parse("", spec, 0, &e), ERR_PARSE);
	ck_assert_int_eq(parse("{\"a\": 1} x", spec, 0, &e), ERR_PARSE);
	/* The token jansson stopped at is not echoed: it may be a value. */
	ck_assert_int_eq(parse("{\"a\" \"s3cr3t\"}", spec, 0, &e), ERR_PARSE);
	ck_assert_msg(strstr(e.detail, "s3cr3t") == NULL, "%s", e.detail);
	ck_detail_has(e, "line 1, column");
	/* \u0000 would cut a C string short: refused. */
	ck_assert_int_eq(parse("{\"a\": \"x\\u0000y\"}", spec, JSPEC_ALLOW_UNKNOWN, &e),
			 ERR_PARSE);
	json_t *root = (json_t *)1;
	ck_assert_int_eq(jspec_parse_body(NULL, 0, spec, 0, &root, &e), ERR_PARSE);
	ck_assert_ptr_null(root);
}
END_TEST

START_TEST(test_root_must_be_object)
{
	const struct jspec_field spec[] = {JSPEC_END_F};
	const char *bodies[] = {"[1]", "1", "\"s\"", "null", "true"};
	for (size_t i = 0; i < 5; i++) {
		struct jspec_error e;
		ck_assert_int_eq(parse(bodies[i], spec, 0, &e), ERR_TYPE);
		ck_assert_str_eq(e.field, "");
		ck_detail_has(e, "the document must be a JSON object");
	}
	struct jspec_error e;
	json_t *arr = json_array();
	ck_assert_int_eq(jspec_parse(arr, spec, 0, &e), ERR_TYPE);
	json_decref(arr);
	ck_assert_int_eq(jspec_parse(NULL, spec, 0, &e), ERR_INVALID);
	/* The empty spec accepts only the empty object. */
	ck_assert_int_eq(parse("{}", spec, 0, &e), 0);
	ck_assert_int_eq(parse("{\"a\": 1}", spec, 0, &e), ERR_UNKNOWN_FIELD);
}
END_TEST

START_TEST(test_enum)
{
	int mode = -1;
	const struct jspec_field spec[] = {JSPEC_CHOICE("mode", true, modes, &mode), JSPEC_END_F};
	struct jspec_error e;
	ck_assert_int_eq(parse("{\"mode\": \"greedy\"}", spec, 0, &e), 0);
	ck_assert_int_eq(mode, 0);
	ck_assert_int_eq(parse("{\"mode\": \"sample\"}", spec, 0, &e), 0);
	ck_assert_int_eq(mode, 1);
	mode = 7;
	ck_assert_int_eq(parse("{\"mode\": \"Greedy\"}", spec, 0, &e), ERR_RANGE);
	ck_assert_str_eq(e.field, "mode");
	ck_assert_str_eq(e.detail, "mode: must be one of: greedy, sample, beam");
	ck_assert_int_eq(mode, 7);
}
END_TEST

START_TEST(test_hex_and_base64)
{
	struct jspec_bytes h = {0}, b = {0};
	const struct jspec_field spec[] = {
		JSPEC_HEXBYTES("h", false, 0, 0, &h),
		JSPEC_B64BYTES("b", false, 0, 0, &b),
		JSPEC_END_F,
	};
	struct jspec_error e;
	/* RFC 4648 section 10 vectors. */
	static const struct {
		const char *enc, *dec;
	} b64[] = {{"", ""},         {"Zg==", "f"},         {"Zm8=", "fo"},
		   {"Zm9v", "foo"},  {"Zm9vYg==", "foob"},  {"Zm9vYmE=", "fooba"},
		   {"Zm9vYmFy", "foobar"}};
	for (size_t i = 0; i < sizeof b64 / sizeof b64[0]; i++) {
		char body[64];
		snprintf(body, sizeof body, "{\"b\": \"%s\"}", b64[i].enc);
		ck_assert_int_eq(parse(body, spec, 0, &e), 0);
		ck_assert_ptr_nonnull(b.data);
		ck_assert_uint_eq(b.len, strlen(b64[i].dec));
		ck_assert_mem_eq(b.data, b64[i].dec, b.len);
		jspec_bytes_free(&b);
	}
	ck_assert_int_eq(parse("{\"h\": \"00ff10Ab\"}", spec, 0, &e), 0);
	const uint8_t want[] = {0x00, 0xff, 0x10, 0xab};
	ck_assert_uint_eq(h.len, 4);
	ck_assert_mem_eq(h.data, want, 4);
	jspec_bytes_free(&h);
	ck_assert_int_eq(parse("{\"h\": \"\"}", spec, 0, &e), 0);
	ck_assert_ptr_nonnull(h.data);
	ck_assert_uint_eq(h.len, 0);
	jspec_bytes_free(&h);
	const char *bad[] = {
		"{\"h\": \"abc\"}",     "{\"h\": \"zz\"}",       "{\"h\": \"0x00\"}",
		"{\"h\": \"00 11\"}",   "{\"b\": \"Zm9vYg\"}",   "{\"b\": \"Zm9v-_==\"}",
		"{\"b\": \"Zm=vYg==\"}", "{\"b\": \"Zm9v\\nYg==\"}", "{\"b\": \"====\"}",
	};
	for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
		ck_assert_msg(parse(bad[i], spec, 0, &e) == ERR_PARSE, "%s", bad[i]);
		const char field[2] = {bad[i][2], '\0'};
		ck_assert_str_eq(e.field, field);
		ck_assert_ptr_null(h.data);
		ck_assert_ptr_null(b.data);
	}
}
END_TEST

/* A decoded field followed by a failing one: nothing may be written or leaked. Under
 * the SAN build LeakSanitizer fails this test if the staged bytes are not freed. */
START_TEST(test_no_leak_on_later_error)
{
	struct jspec_bytes key = {0}, nonce = {0};
	int64_t n = 42;
	bool has_key = false;
	const struct jspec_field spec[] = {
		JSPEC_HEXBYTES("key", true, 32, 32, &key, .present = &has_key),
		JSPEC_B64BYTES("nonce", true, 0, 0, &nonce),
		JSPEC_I64("n", true, 0, 10, &n),
		JSPEC_END_F,
	};
	char body[256];
	snprintf(body, sizeof body, "{\"key\": \"%064d\", \"nonce\": \"AAAA\", \"n\": 11}", 0);
	struct jspec_error e;
	ck_assert_int_eq(parse(body, spec, 0, &e), ERR_RANGE);
	ck_assert_str_eq(e.field, "n");
	ck_assert_ptr_null(key.data);
	ck_assert_ptr_null(nonce.data);
	ck_assert_int_eq(n, 42);
	ck_assert(!has_key);
	/* Decoded, then out of bounds: the decode buffer itself must be freed. */
	const struct jspec_field spec2[] = {
		JSPEC_B64BYTES("nonce", true, 4, 0, &nonce),
		JSPEC_END_F,
	};
	ck_assert_int_eq(parse("{\"nonce\": \"AAAA\"}", spec2, 0, &e), ERR_RANGE);
	ck_assert_ptr_null(nonce.data);
	/* The same body with a valid n commits everything. */
	snprintf(body, sizeof body, "{\"key\": \"%064d\", \"nonce\": \"AAAA\", \"n\": 10}", 0);
	ck_assert_int_eq(parse(body, spec, 0, &e), 0);
	ck_assert_uint_eq(key.len, 32);
	ck_assert_uint_eq(nonce.len, 3);
	ck_assert_int_eq(n, 10);
	ck_assert(has_key);
	jspec_bytes_free(&key);
	jspec_bytes_free(&nonce);
}
END_TEST

START_TEST(test_problem_json)
{
	const struct jspec_field spec[] = {
		JSPEC_U64("options.top_k", false, 1, 100, NULL),
		JSPEC_END_F,
	};
	struct jspec_error e;
	ck_assert_int_eq(parse("{\"options\": {\"top_k\": 0}}", spec, 0, &e), ERR_RANGE);
	json_t *p = jspec_problem(&e, "req-7");
	ck_assert_ptr_nonnull(p);
	ck_assert_int_eq(json_integer_value(json_object_get(p, "status")), 400);
	ck_assert_str_eq(json_string_value(json_object_get(p, "field")), "options.top_k");
	ck_assert_str_eq(json_string_value(json_object_get(p, "type")),
			 "urn:mimir:problem:out-of-range");
	ck_assert_str_eq(json_string_value(json_object_get(p, "detail")),
			 "options.top_k: must be between 1 and 100");
	ck_assert_str_eq(json_string_value(json_object_get(p, "request_id")), "req-7");
	json_decref(p);
	/* A parse error names no field. */
	ck_assert_int_eq(parse("{", spec, 0, &e), ERR_PARSE);
	p = jspec_problem(&e, NULL);
	ck_assert_int_eq(json_integer_value(json_object_get(p, "status")), 400);
	ck_assert_ptr_null(json_object_get(p, "field"));
	ck_assert_ptr_null(json_object_get(p, "request_id"));
	json_decref(p);
}
END_TEST

START_TEST(test_body_size_and_depth_bounds)
{
	const struct jspec_field spec[] = {JSPEC_OBJ("a", false, NULL), JSPEC_END_F};
	struct jspec_error e;
	json_t *root = NULL;
	char *big = calloc(1, JSPEC_MAX_BODY + 2);
	ck_assert_ptr_nonnull(big);
	ck_assert_int_eq(jspec_parse_body(big, JSPEC_MAX_BODY + 1, spec, 0, &root, &e),
			 ERR_TOO_LARGE);
	ck_assert_ptr_null(root);
	json_t *p = jspec_problem(&e, NULL);
	ck_assert_int_eq(json_integer_value(json_object_get(p, "status")), 413);
	json_decref(p);
	free(big);
	/* Depth: the root object is level 1; JSPEC_MAX_DEPTH levels pass, one more fails.
	 * No spec, so depth alone is checked. */
	char body[4 * JSPEC_MAX_DEPTH + 16];
	for (int levels = JSPEC_MAX_DEPTH; levels <= JSPEC_MAX_DEPTH + 1; levels++) {
		size_t n = 0;
		memcpy(body, "{\"a\":", 5);
		n += 5;
		for (int i = 2; i <= levels; i++)
			body[n++] = '[';
		for (int i = 2; i <= levels; i++)
			body[n++] = ']';
		body[n++] = '}';
		int rc = jspec_parse_body(body, n, NULL, 0, &root, &e);
		if (levels <= JSPEC_MAX_DEPTH) {
			ck_assert_msg(rc == 0, "%d levels: %s", levels, e.detail);
			json_decref(root);
		} else {
			ck_assert_int_eq(rc, ERR_PARSE);
			ck_detail_has(e, "nested deeper than 32 levels");
			ck_assert_ptr_null(root);
		}
	}
}
END_TEST

START_TEST(test_bad_spec_is_internal)
{
	struct jspec_error e;
	const struct jspec_field minmax[] = {JSPEC_I64("i", false, 5, 1, NULL), JSPEC_END_F};
	ck_assert_int_eq(parse("{}", minmax, 0, &e), ERR_INTERNAL);
	ck_detail_has(e, "bad spec");
	const struct jspec_field noenum[] = {JSPEC_CHOICE("e", false, NULL, NULL), JSPEC_END_F};
	ck_assert_int_eq(parse("{}", noenum, 0, &e), ERR_INTERNAL);
	const struct jspec_field dots[] = {JSPEC_I64("a..b", false, 0, 0, NULL), JSPEC_END_F};
	ck_assert_int_eq(parse("{}", dots, 0, &e), ERR_INTERNAL);
	const struct jspec_field len[] = {JSPEC_STR("s", false, 10, 5, NULL), JSPEC_END_F};
	ck_assert_int_eq(parse("{}", len, 0, &e), ERR_INTERNAL);
	const struct jspec_field nan[] = {JSPEC_DBL("d", false, NAN, 1, NULL), JSPEC_END_F};
	ck_assert_int_eq(parse("{}", nan, 0, &e), ERR_INTERNAL);
	/* Our bug, so a 500 at the edge, not a 400 blaming the client. */
	json_t *p = jspec_problem(&e, NULL);
	ck_assert_int_eq(json_integer_value(json_object_get(p, "status")), 500);
	json_decref(p);
}
END_TEST

START_TEST(test_embedded_nul_refused)
{
	const struct jspec_field spec[] = {JSPEC_STR("s", true, 0, 0, NULL), JSPEC_END_F};
	json_t *root = json_pack("{s:s%}", "s", "a\0b", (size_t)3);
	ck_assert_ptr_nonnull(root);
	struct jspec_error e;
	ck_assert_int_eq(jspec_parse(root, spec, 0, &e), ERR_PARSE);
	ck_assert_str_eq(e.field, "s");
	json_decref(root);
}
END_TEST

Suite *suite(void)
{
	Suite *s = suite_create("jspec");
	TCase *tc = tcase_create("parse");
	tcase_add_test(tc, test_every_type_accepted);
	tcase_add_test(tc, test_absent_and_null_keep_defaults);
	tcase_add_test(tc, test_wrong_types);
	tcase_add_test(tc, test_bounds);
	tcase_add_test(tc, test_default_length_maximum);
	tcase_add_test(tc, test_integer_extremes);
	tcase_add_test(tc, test_missing_required);
	tcase_add_test(tc, test_unknown_fields);
	tcase_add_test(tc, test_nested_parent_must_be_object);
	tcase_add_test(tc, test_duplicates_rejected);
	tcase_add_test(tc, test_malformed_json_position);
	tcase_add_test(tc, test_root_must_be_object);
	tcase_add_test(tc, test_enum);
	tcase_add_test(tc, test_hex_and_base64);
	tcase_add_test(tc, test_no_leak_on_later_error);
	tcase_add_test(tc, test_problem_json);
	tcase_add_test(tc, test_body_size_and_depth_bounds);
	tcase_add_test(tc, test_bad_spec_is_internal);
	tcase_add_test(tc, test_embedded_nul_refused);
	suite_add_tcase(s, tc);
	return s;
}
