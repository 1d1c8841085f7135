/* log: both formats render every field type, escape what would break a line, carry the
 * thread's request and session ids, and honour the level. */
#include <jansson.h>
#include <string.h>
#include <unistd.h>

#include "log/log.h"
#include "testutil.h"

START_TEST(test_kv_format_and_quoting)
{
	char buf[1024];
	log_set_service("unit");
	log_ctx_set("r-1", "s-9");
	const struct log_field f[] = {LOG_S("path", "/v1/x y"), LOG_I("status", 413),
				      LOG_D("ms", 1.5), LOG_B("tls", true),
				      LOG_S("evil", "a\"b\nlevel=error")};
	log_format(buf, sizeof buf, false, LOG_LEVEL_WARN, "http.request", f, 5);
	ck_assert_ptr_nonnull(strstr(buf, " level=warn service=unit event=http.request"));
	ck_assert_ptr_nonnull(strstr(buf, " request_id=r-1 session_id=s-9 "));
	ck_assert_ptr_nonnull(strstr(buf, " path=\"/v1/x y\" status=413 ms=1.5 tls=true "));
	/* A value cannot forge a field or a second line. */
	ck_assert_ptr_nonnull(strstr(buf, " evil=\"a\\\"b\\nlevel=error\""));
	ck_assert_ptr_null(strchr(buf, '\n'));
	log_ctx_clear();
	log_format(buf, sizeof buf, false, LOG_LEVEL_INFO, "x", NULL, 0);
	ck_assert_ptr_null(strstr(buf, "request_id"));
}
END_TEST

START_TEST(test_json_format_parses)
{
	char buf[1024];
	log_ctx_set("r-2", NULL);
	const struct log_field f[] = {LOG_S("detail", "tab\there \x01"), LOG_I("n", -7),
				      LOG_D("inf", 1.0 / 0.0)};
	log_format(buf, sizeof buf, true, LOG_LEVEL_ERROR, "boom", f, 3);
	json_error_t e;
	json_t *j = json_loads(buf, 0, &e);
	ck_assert_msg(j != NULL, "not JSON: %s (%s)", buf, e.text);
	ck_assert_str_eq(json_string_value(json_object_get(j, "level")), "error");
	ck_assert_str_eq(json_string_value(json_object_get(j, "event")), "boom");
	ck_assert_str_eq(json_string_value(json_object_get(j, "request_id")), "r-2");
	ck_assert_str_eq(json_string_value(json_object_get(j, "detail")), "tab\there \x01");
	ck_assert_int_eq(json_integer_value(json_object_get(j, "n")), -7);
	ck_assert(json_is_null(json_object_get(j, "inf")));
	json_decref(j);
	log_ctx_clear();
}
END_TEST

START_TEST(test_levels_and_single_write)
{
	int fds[2];
	ck_assert_int_eq(pipe(fds), 0);
	log_set_fd(fds[1]);
	log_set_level(LOG_LEVEL_WARN);
	LOG_INFO("hidden", LOG_I("x", 1));
	LOG_WARN("shown", LOG_I("x", 2));
	LOG_ERROR("bare");
	log_set_fd(2);
	close(fds[1]);
	char buf[2048] = {0};
	ssize_t n = read(fds[0], buf, sizeof buf - 1);
	close(fds[0]);
	ck_assert_int_gt(n, 0);
	ck_assert_ptr_null(strstr(buf, "hidden"));
	ck_assert_ptr_nonnull(strstr(buf, "event=shown x=2\n"));
	ck_assert_ptr_nonnull(strstr(buf, "event=bare\n"));
	enum log_level l;
	ck_assert_int_eq(log_level_parse("debug", &l), 0);
	ck_assert_int_eq(l, LOG_LEVEL_DEBUG);
	ck_assert_int_lt(log_level_parse("loud", &l), 0);
}
END_TEST

START_TEST(test_truncates_long_lines)
{
	char big[8192];
	memset(big, 'a', sizeof big - 1);
	big[sizeof big - 1] = '\0';
	char buf[256];
	const struct log_field f[] = {LOG_S("v", big)};
	size_t n = log_format(buf, sizeof buf, false, LOG_LEVEL_INFO, "e", f, 1);
	ck_assert_uint_eq(n, sizeof buf - 1);
	ck_assert_uint_eq(strlen(buf), sizeof buf - 1);
}
END_TEST

Suite *suite(void)
{
	Suite *s = suite_create("log");
	TCase *tc = tcase_create("format");
	tcase_add_test(tc, test_kv_format_and_quoting);
	tcase_add_test(tc, test_json_format_parses);
	tcase_add_test(tc, test_levels_and_single_write);
	tcase_add_test(tc, test_truncates_long_lines);
	suite_add_tcase(s, tc);
	return s;
}
