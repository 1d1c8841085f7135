/* err: every registry code has a distinct slug, a title and an HTTP error status, and
 * problem+json carries the RFC 9457 members. */
#include <string.h>

#include "err/err.h"
#include "testutil.h"

static const int all_codes[] = {
#define ERR_CODE(name, val, slug, status, title) val,
	ERR_LIST(ERR_CODE)
#undef ERR_CODE
};
#define NCODES (sizeof all_codes / sizeof all_codes[0])

START_TEST(test_table_complete_and_distinct)
{
	for (size_t i = 0; i < NCODES; i++) {
		int c = all_codes[i];
		ck_assert_int_le(c, 0);
		ck_assert_ptr_nonnull(err_slug(c));
		ck_assert_int_gt((int)strlen(err_title(c)), 0);
		if (c != ERR_OK)
			ck_assert_int_ge(err_http_status(c), 400);
		for (size_t j = 0; j < i; j++) {
			ck_assert_int_ne(all_codes[j], c);
			ck_assert_str_ne(err_slug(all_codes[j]), err_slug(c));
		}
	}
}
END_TEST

START_TEST(test_unknown_code_is_internal)
{
	ck_assert_str_eq(err_slug(-12345), "internal");
	ck_assert_int_eq(err_http_status(42), 500);
}
END_TEST

START_TEST(test_problem_members)
{
	json_t *p = err_problem(ERR_TYPE, "must be an integer", "options.top_k", "req-1");
	ck_assert_ptr_nonnull(p);
	ck_assert_str_eq(json_string_value(json_object_get(p, "type")), "urn:mimir:problem:wrong-type");
	ck_assert_str_eq(json_string_value(json_object_get(p, "title")), "Wrong type");
	ck_assert_int_eq(json_integer_value(json_object_get(p, "status")), 400);
	ck_assert_str_eq(json_string_value(json_object_get(p, "detail")), "must be an integer");
	ck_assert_str_eq(json_string_value(json_object_get(p, "field")), "options.top_k");
	ck_assert_str_eq(json_string_value(json_object_get(p, "request_id")), "req-1");
	json_decref(p);

	p = err_problem(ERR_TOO_LARGE, NULL, NULL, NULL);
	ck_assert_int_eq(json_integer_value(json_object_get(p, "status")), 413);
	ck_assert_str_eq(json_string_value(json_object_get(p, "detail")), "Payload too large");
	ck_assert_ptr_null(json_object_get(p, "field"));
	json_decref(p);
}
END_TEST

Suite *suite(void)
{
	Suite *s = suite_create("err");
	TCase *tc = tcase_create("registry");
	tcase_add_test(tc, test_table_complete_and_distinct);
	tcase_add_test(tc, test_unknown_code_is_internal);
	tcase_add_test(tc, test_problem_members);
	suite_add_tcase(s, tc);
	return s;
}
