/* config: defaults, file and environment combine in that order of precedence; every
 * error names the key and where its value came from (file path or variable); a typo in
 * either source is refused; environment text is converted strictly by type; a failed
 * load writes nothing. Each test runs with no MIMIR_UNIT_CFG_* variable set. */
#define _GNU_SOURCE
#include <jansson.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "config/config.h"
#include "err/err.h"
#include "log/log.h"
#include "testutil.h"

extern char **environ;

#define SERVICE "unit-cfg"
#define PREFIX "MIMIR_UNIT_CFG_"

struct settings {
	uint64_t port;
	int64_t offset;
	double ratio;
	bool tls;
	const char *cert;
	int level;
	struct jspec_bytes key;
	json_t *peers;
	json_t *extra;
};

static const char *const levels[] = {"debug", "info", "warn", "error", NULL};
static struct settings S;
/* Static, so this also proves the spec macros work in a constant initializer. */
static const struct jspec_field SPEC[] = {
	JSPEC_U64("http.port", false, 0, 65535, &S.port),
	JSPEC_I64("offset", false, -100, 100, &S.offset),
	JSPEC_DBL("ratio", false, 0, 1, &S.ratio),
	JSPEC_BOOLEAN("tls.enabled", false, &S.tls),
	JSPEC_STR("tls.cert", false, 1, 256, &S.cert),
	JSPEC_CHOICE("log-level", false, levels, &S.level),
	JSPEC_HEXBYTES("mac_key", false, 16, 16, &S.key),
	JSPEC_ARR("peers", false, 0, 8, &S.peers),
	JSPEC_OBJ("extra", false, &S.extra),
	JSPEC_END_F,
};

static char dir[256], file[320];

static void clear_env(void)
{
	char names[64][128];
	size_t n = 0;
	for (char **e = environ; *e && n < 64; e++)
		if (strncmp(*e, PREFIX, strlen(PREFIX)) == 0) {
			size_t len = strcspn(*e, "=");
			snprintf(names[n++], sizeof names[0], "%.*s", (int)len, *e);
		}
	for (size_t i = 0; i < n; i++)
		unsetenv(names[i]);
}

static void setup(void)
{
	clear_env();
	S = (struct settings){.port = 8080, .offset = 0, .ratio = 0.5, .tls = true, .level = 1};
	ck_assert_str_ne(tu_tmpdir(dir, sizeof dir), "");
	snprintf(file, sizeof file, "%s/unit.json", dir);
}

static void teardown(void)
{
	clear_env();
	jspec_bytes_free(&S.key);
	tu_rmrf(dir);
}

static void write_config(const char *text)
{
	ck_assert_int_eq(tu_write_file(file, text, strlen(text)), 0);
}

static int load(struct config **c, const char *path, struct jspec_error *e)
{
	int rc = config_load(c, SERVICE, path, SPEC, e);
	if (rc)
		ck_assert_ptr_null(*c);
	return rc;
}

START_TEST(test_file_then_env_precedence)
{
	write_config("{\"http\": {\"port\": 9000}, \"log-level\": \"debug\", \"offset\": -3}");
	setenv(PREFIX "HTTP_PORT", "9100", 1);
	setenv(PREFIX "RATIO", "0.25", 1);
	struct config *c = NULL;
	struct jspec_error e;
	ck_assert_int_eq(load(&c, file, &e), 0);
	ck_assert_uint_eq(S.port, 9100); /* file and env: env wins */
	ck_assert(S.ratio == 0.25);      /* env only */
	ck_assert_int_eq(S.level, 0);    /* file only */
	ck_assert_int_eq(S.offset, -3);
	ck_assert(S.tls);                /* neither: default kept */
	ck_assert_ptr_null(S.cert);
	ck_assert_ptr_null(S.key.data);
	config_free(c);
	/* Without the override, the file's value. */
	unsetenv(PREFIX "HTTP_PORT");
	ck_assert_int_eq(load(&c, file, &e), 0);
	ck_assert_uint_eq(S.port, 9000);
	config_free(c);
	config_free(NULL);
}
END_TEST

START_TEST(test_null_path_defaults_and_env)
{
	struct config *c = NULL;
	struct jspec_error e;
	ck_assert_int_eq(load(&c, NULL, &e), 0);
	ck_assert_uint_eq(S.port, 8080);
	ck_assert(S.ratio == 0.5);
	ck_assert(S.tls);
	ck_assert_int_eq(S.level, 1);
	config_free(c);
	/* The environment alone can set nested keys; strings borrow from the config. */
	setenv(PREFIX "TLS_CERT", "/etc/mimir/gw.pem", 1);
	setenv(PREFIX "TLS_ENABLED", "no", 1);
	setenv(PREFIX "LOG_LEVEL", "error", 1);
	ck_assert_int_eq(load(&c, NULL, &e), 0);
	ck_assert_str_eq(S.cert, "/etc/mimir/gw.pem");
	ck_assert(!S.tls);
	ck_assert_int_eq(S.level, 3);
	config_free(c);
}
END_TEST

START_TEST(test_missing_and_unreadable_file)
{
	struct config *c = (struct config *)1;
	struct jspec_error e;
	char missing[400];
	snprintf(missing, sizeof missing, "%s/nope.json", dir);
	ck_assert_int_eq(load(&c, missing, &e), ERR_IO);
	ck_assert_str_eq(e.field, "");
	ck_assert_msg(strstr(e.detail, missing) && strstr(e.detail, "No such file"), "%s",
		      e.detail);
	ck_assert_int_eq(load(&c, dir, &e), ERR_IO); /* a directory */
	ck_assert_ptr_nonnull(strstr(e.detail, dir));
}
END_TEST

START_TEST(test_file_too_large)
{
	size_t n = CONFIG_MAX_FILE + 1;
	char *big = malloc(n);
	ck_assert_ptr_nonnull(big);
	memset(big, ' ', n);
	big[0] = '{';
	big[n - 1] = '}';
	ck_assert_int_eq(tu_write_file(file, big, n), 0);
	struct config *c;
	struct jspec_error e;
	ck_assert_int_eq(load(&c, file, &e), ERR_TOO_LARGE);
	ck_assert_ptr_nonnull(strstr(e.detail, file));
	/* One byte less is read (and is an empty object). */
	big[1] = '{';
	ck_assert_int_eq(tu_write_file(file, big + 1, n - 1), 0);
	ck_assert_int_eq(load(&c, file, &e), 0);
	config_free(c);
	free(big);
}
END_TEST

START_TEST(test_bad_json_names_position_and_file)
{
	write_config("{\n  \"offset\": 1,\n  \"ratio\": .5\n}");
	struct config *c;
	struct jspec_error e;
	ck_assert_int_eq(load(&c, file, &e), ERR_PARSE);
	ck_assert_str_eq(e.field, "");
	ck_assert_msg(strstr(e.detail, "invalid JSON at line 3, column"), "%s", e.detail);
	char tail[400];
	snprintf(tail, sizeof tail, "(from %s)", file);
	ck_assert_msg(strstr(e.detail, tail), "%s", e.detail);
	/* jansson quotes the token it stopped at; a value (maybe a key) is not repeated. */
	write_config("{\"mac_key\" \"00112233445566778899aabbccddeeff\"}");
	ck_assert_int_eq(load(&c, file, &e), ERR_PARSE);
	ck_assert_msg(strstr(e.detail, "00112233") == NULL, "%s", e.detail);
	write_config("[1, 2]");
	ck_assert_int_eq(load(&c, file, &e), ERR_TYPE);
	ck_assert_ptr_nonnull(strstr(e.detail, "must be a JSON object"));
	write_config("{\"offset\": 1, \"offset\": 2}");
	ck_assert_int_eq(load(&c, file, &e), ERR_PARSE);
}
END_TEST

START_TEST(test_unknown_key_in_file)
{
	write_config("{\"http\": {\"prot\": 80}}");
	struct config *c;
	struct jspec_error e;
	ck_assert_int_eq(load(&c, file, &e), ERR_UNKNOWN_FIELD);
	ck_assert_str_eq(e.field, "http.prot");
	char want[512];
	snprintf(want, sizeof want, "http.prot: unknown field (did you mean http.port?) (from %s)",
		 file);
	ck_assert_str_eq(e.detail, want);
	write_config("{\"tls_enabled\": true}");
	ck_assert_int_eq(load(&c, file, &e), ERR_UNKNOWN_FIELD);
	ck_assert_str_eq(e.field, "tls_enabled");
}
END_TEST

START_TEST(test_error_names_key_and_source)
{
	struct config *c;
	struct jspec_error e;
	char want[512];
	/* The same bad value, from each source in turn. */
	write_config("{\"http\": {\"port\": 70000}}");
	ck_assert_int_eq(load(&c, file, &e), ERR_RANGE);
	ck_assert_str_eq(e.field, "http.port");
	snprintf(want, sizeof want, "http.port: must be between 0 and 65535 (from %s)", file);
	ck_assert_str_eq(e.detail, want);
	setenv(PREFIX "HTTP_PORT", "70000", 1);
	ck_assert_int_eq(load(&c, file, &e), ERR_RANGE);
	ck_assert_str_eq(e.field, "http.port");
	ck_assert_str_eq(e.detail, "http.port: must be between 0 and 65535 "
				   "(from environment MIMIR_UNIT_CFG_HTTP_PORT)");
	/* A good env value over a bad file value is fine: the file's is never used. */
	setenv(PREFIX "HTTP_PORT", "443", 1);
	ck_assert_int_eq(load(&c, file, &e), 0);
	ck_assert_uint_eq(S.port, 443);
	config_free(c);
	/* Type errors in the file and in the environment. */
	write_config("{\"tls\": {\"enabled\": \"yes\"}}");
	ck_assert_int_eq(load(&c, file, &e), ERR_TYPE);
	snprintf(want, sizeof want, "tls.enabled: must be true or false, got string (from %s)",
		 file);
	ck_assert_str_eq(e.detail, want);
	setenv(PREFIX "TLS_ENABLED", "maybe", 1);
	ck_assert_int_eq(load(&c, NULL, &e), ERR_TYPE);
	ck_assert_str_eq(e.field, "tls.enabled");
	ck_assert_str_eq(e.detail, "tls.enabled: must be true, false, 1, 0, yes or no "
				   "(from environment MIMIR_UNIT_CFG_TLS_ENABLED)");
}
END_TEST

START_TEST(test_unknown_env_variable)
{
	setenv(PREFIX "HTTP_PROT", "80", 1);
	struct config *c;
	struct jspec_error e;
	ck_assert_int_eq(load(&c, NULL, &e), ERR_UNKNOWN_FIELD);
	ck_assert_str_eq(e.field, PREFIX "HTTP_PROT");
	ck_assert_ptr_nonnull(strstr(e.detail, "environment variable " PREFIX "HTTP_PROT"));
	unsetenv(PREFIX "HTTP_PROT");
	/* Other services' variables are not ours to judge. */
	setenv("MIMIR_UNIT_OTHER_X", "1", 1);
	setenv("MIMIR_UNIT_CFGX", "1", 1);
	ck_assert_int_eq(load(&c, NULL, &e), 0);
	config_free(c);
	unsetenv("MIMIR_UNIT_OTHER_X");
	unsetenv("MIMIR_UNIT_CFGX");
}
END_TEST

struct env_case {
	const char *var, *value;
	int rc;
};

START_TEST(test_env_conversion_is_strict)
{
	static const struct env_case cases[] = {
		{"OFFSET", "-5", 0},
		{"OFFSET", "+5", 0},
		{"OFFSET", " 5", ERR_TYPE},
		{"OFFSET", "5 ", ERR_TYPE},
		{"OFFSET", "5x", ERR_TYPE},
		{"OFFSET", "0x10", ERR_TYPE},
		{"OFFSET", "", ERR_TYPE},
		{"OFFSET", "101", ERR_RANGE},
		{"OFFSET", "99999999999999999999", ERR_RANGE},
		{"HTTP_PORT", "-1", ERR_TYPE},
		{"HTTP_PORT", "18446744073709551615", ERR_RANGE},
		{"HTTP_PORT", "65535", 0},
		{"RATIO", "1", 0},
		{"RATIO", "1e-3", 0},
		{"RATIO", "nan", ERR_TYPE},
		{"RATIO", "1e999", ERR_TYPE},
		{"RATIO", "0.5.1", ERR_TYPE},
		{"RATIO", "1.5", ERR_RANGE},
		{"TLS_ENABLED", "TRUE", 0},
		{"TLS_ENABLED", "Yes", 0},
		{"TLS_ENABLED", "0", 0},
		{"TLS_ENABLED", "2", ERR_TYPE},
		{"TLS_CERT", "", ERR_RANGE},
		{"TLS_CERT", "\xff\xfe", ERR_PARSE},
		{"LOG_LEVEL", "warn", 0},
		{"LOG_LEVEL", "WARN", ERR_RANGE},
		{"MAC_KEY", "000102030405060708090a0b0c0d0e0f", 0},
		{"MAC_KEY", "0001", ERR_RANGE},
		{"MAC_KEY", "zz", ERR_PARSE},
		{"PEERS", "[\"a:1\", \"b:2\"]", 0},
		{"PEERS", "[1, ", ERR_PARSE},
		{"PEERS", "{}", ERR_TYPE},
		{"EXTRA", "{\"k\": {\"any\": 1}}", 0},
		{"EXTRA", "{\"k\": 1, \"k\": 2}", ERR_PARSE},
	};
	for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
		char var[128];
		snprintf(var, sizeof var, PREFIX "%s", cases[i].var);
		setenv(var, cases[i].value, 1);
		struct config *c = NULL;
		struct jspec_error e;
		int rc = load(&c, NULL, &e);
		ck_assert_msg(rc == cases[i].rc, "%s=%s: %d (%s)", var, cases[i].value, rc,
			      e.detail);
		if (rc) {
			ck_assert_msg(strstr(e.detail, var) != NULL, "%s", e.detail);
			/* Values are never echoed (they may be keys). */
			ck_assert_msg(strlen(cases[i].value) < 4 ||
					      strstr(e.detail, cases[i].value) == NULL,
				      "value quoted: %s", e.detail);
		}
		config_free(c);
		jspec_bytes_free(&S.key);
		unsetenv(var);
	}
}
END_TEST

START_TEST(test_env_values_land)
{
	setenv(PREFIX "MAC_KEY", "000102030405060708090a0b0c0d0e0f", 1);
	setenv(PREFIX "PEERS", "[\"a:1\", \"b:2\"]", 1);
	setenv(PREFIX "EXTRA", "{\"k\": true}", 1);
	setenv(PREFIX "OFFSET", "-100", 1);
	struct config *c = NULL;
	struct jspec_error e;
	ck_assert_int_eq(load(&c, NULL, &e), 0);
	ck_assert_uint_eq(S.key.len, 16);
	ck_assert_uint_eq(S.key.data[15], 0x0f);
	ck_assert_uint_eq(json_array_size(S.peers), 2);
	ck_assert(json_is_true(json_object_get(S.extra, "k")));
	ck_assert_int_eq(S.offset, -100);
	config_free(c);
}
END_TEST

START_TEST(test_nested_conflicts)
{
	struct config *c;
	struct jspec_error e;
	char want[512];
	/* The file made "tls" a number; the environment cannot nest under it. */
	write_config("{\"tls\": 5}");
	setenv(PREFIX "TLS_CERT", "/x.pem", 1);
	ck_assert_int_eq(load(&c, file, &e), ERR_TYPE);
	ck_assert_str_eq(e.field, "tls");
	snprintf(want, sizeof want, "tls: must be an object (from %s)", file);
	ck_assert_str_eq(e.detail, want);
	unsetenv(PREFIX "TLS_CERT");
	ck_assert_int_eq(load(&c, file, &e), ERR_TYPE);
	ck_assert_str_eq(e.field, "tls");
	/* The environment merges into an object the file opened. */
	write_config("{\"tls\": {\"enabled\": false}}");
	setenv(PREFIX "TLS_CERT", "/x.pem", 1);
	ck_assert_int_eq(load(&c, file, &e), 0);
	ck_assert(!S.tls);
	ck_assert_str_eq(S.cert, "/x.pem");
	config_free(c);
}
END_TEST

START_TEST(test_required_key_says_where_to_set_it)
{
	uint64_t shares = 0;
	const struct jspec_field spec[] = {
		JSPEC_U64("model.shares", true, 1, 16, &shares),
		JSPEC_END_F,
	};
	struct config *c;
	struct jspec_error e;
	ck_assert_int_eq(config_load(&c, "party", NULL, spec, &e), ERR_MISSING);
	ck_assert_str_eq(e.field, "model.shares");
	ck_assert_str_eq(e.detail,
			 "model.shares: required field is missing (set MIMIR_PARTY_MODEL_SHARES)");
	write_config("{}");
	ck_assert_int_eq(config_load(&c, "party", file, spec, &e), ERR_MISSING);
	char want[512];
	snprintf(want, sizeof want,
		 "model.shares: required field is missing (set it in %s or MIMIR_PARTY_MODEL_SHARES)",
		 file);
	ck_assert_str_eq(e.detail, want);
}
END_TEST

START_TEST(test_failed_load_writes_nothing)
{
	write_config("{\"http\": {\"port\": 1}, \"mac_key\": \"000102030405060708090a0b0c0d0e0f\","
		     " \"offset\": 1000}");
	struct config *c;
	struct jspec_error e;
	ck_assert_int_eq(load(&c, file, &e), ERR_RANGE);
	ck_assert_str_eq(e.field, "offset");
	ck_assert_uint_eq(S.port, 8080);
	ck_assert_ptr_null(S.key.data);
}
END_TEST

START_TEST(test_bad_arguments)
{
	struct config *c;
	struct jspec_error e;
	ck_assert_int_eq(config_load(&c, "", NULL, SPEC, &e), ERR_INVALID);
	ck_assert_int_eq(config_load(&c, "bad name", NULL, SPEC, &e), ERR_INVALID);
	ck_assert_int_eq(config_load(&c, "x", NULL, NULL, &e), ERR_INVALID);
	ck_assert_int_eq(config_load(NULL, "x", NULL, SPEC, &e), ERR_INVALID);
	/* Two keys that map to one variable are a spec bug. */
	const struct jspec_field clash[] = {
		JSPEC_I64("a.b", false, 0, 0, NULL),
		JSPEC_I64("a_b", false, 0, 0, NULL),
		JSPEC_END_F,
	};
	ck_assert_int_eq(config_load(&c, "x", NULL, clash, &e), ERR_INTERNAL);
	ck_assert_ptr_nonnull(strstr(e.detail, "MIMIR_X_A_B"));
	const struct jspec_field noname[] = {
		{.name = NULL, .type = JSPEC_INT},
		JSPEC_END_F,
	};
	ck_assert_int_eq(config_load(&c, "x", NULL, noname, &e), ERR_INTERNAL);
	/* Spec checks beyond names are jspec's, run on the merged document. */
	const struct jspec_field badrange[] = {JSPEC_I64("a", false, 2, 1, NULL), JSPEC_END_F};
	ck_assert_int_eq(config_load(&c, "x", NULL, badrange, &e), ERR_INTERNAL);
	ck_assert_ptr_null(c);
}
END_TEST

START_TEST(test_log_effective_hides_secrets)
{
	write_config("{\"tls\": {\"cert\": \"/secret/path.pem\"}, \"offset\": 7}");
	setenv(PREFIX "MAC_KEY", "000102030405060708090a0b0c0d0e0f", 1);
	setenv(PREFIX "HTTP_PORT", "9999", 1);
	struct config *c = NULL;
	struct jspec_error e;
	ck_assert_int_eq(load(&c, file, &e), 0);
	int fds[2];
	ck_assert_int_eq(pipe(fds), 0);
	log_set_fd(fds[1]);
	log_set_level(LOG_LEVEL_INFO);
	config_log_effective(c, SPEC);
	log_set_fd(2);
	close(fds[1]);
	char buf[8192] = {0};
	size_t n = 0;
	for (ssize_t r; (r = read(fds[0], buf + n, sizeof buf - 1 - n)) > 0;)
		n += (size_t)r;
	close(fds[0]);
	ck_assert_ptr_nonnull(strstr(buf, "key=http.port source=environment "
					  "from=MIMIR_UNIT_CFG_HTTP_PORT value=9999"));
	ck_assert_ptr_nonnull(strstr(buf, "key=offset source=file"));
	ck_assert_ptr_nonnull(strstr(buf, "value=7\n"));
	ck_assert_ptr_nonnull(strstr(buf, "key=ratio source=default from=\"\" value=0.5\n"));
	ck_assert_ptr_nonnull(strstr(buf, "key=log-level source=default from=\"\" value=info\n"));
	ck_assert_ptr_nonnull(strstr(buf, "key=mac_key source=environment"));
	ck_assert_ptr_null(strstr(buf, "/secret/path.pem"));
	ck_assert_ptr_null(strstr(buf, "0a0b0c"));
	config_free(c);
}
END_TEST

Suite *suite(void)
{
	Suite *s = suite_create("config");
	TCase *tc = tcase_create("load");
	tcase_add_checked_fixture(tc, setup, teardown);
	tcase_add_test(tc, test_file_then_env_precedence);
	tcase_add_test(tc, test_null_path_defaults_and_env);
	tcase_add_test(tc, test_missing_and_unreadable_file);
	tcase_add_test(tc, test_file_too_large);
	tcase_add_test(tc, test_bad_json_names_position_and_file);
	tcase_add_test(tc, test_unknown_key_in_file);
	tcase_add_test(tc, test_error_names_key_and_source);
	tcase_add_test(tc, test_unknown_env_variable);
	tcase_add_test(tc, test_env_conversion_is_strict);
	tcase_add_test(tc, test_env_values_land);
	tcase_add_test(tc, test_nested_conflicts);
	tcase_add_test(tc, test_required_key_says_where_to_set_it);
	tcase_add_test(tc, test_failed_load_writes_nothing);
	tcase_add_test(tc, test_bad_arguments);
	tcase_add_test(tc, test_log_effective_hides_secrets);
	suite_add_tcase(s, tc);
	return s;
}
