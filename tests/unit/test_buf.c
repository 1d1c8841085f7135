/* buf: the bound is exact (max bytes fit, one more does not, and a failed append
 * changes nothing), contents stay NUL-terminated, consume and steal behave. */
#include <stdlib.h>
#include <string.h>

#include "buf/buf.h"
#include "err/err.h"
#include "testutil.h"

START_TEST(test_bound_exact)
{
	struct buf b;
	buf_init(&b, 1000, false);
	char chunk[300];
	memset(chunk, 'x', sizeof chunk);
	for (int i = 0; i < 3; i++)
		ck_assert_int_eq(buf_append(&b, chunk, sizeof chunk), 0);
	ck_assert_int_eq(buf_append(&b, chunk, 101), ERR_TOO_LARGE);
	ck_assert_uint_eq(b.len, 900);
	ck_assert_int_eq(buf_append(&b, chunk, 100), 0);
	ck_assert_uint_eq(b.len, 1000);
	ck_assert_int_eq(buf_append(&b, chunk, 1), ERR_TOO_LARGE);
	ck_assert_int_eq(buf_append(&b, chunk, SIZE_MAX), ERR_TOO_LARGE);
	ck_assert_int_eq(b.data[b.len], '\0');
	buf_free(&b);
	ck_assert_ptr_null(b.data);
}
END_TEST

START_TEST(test_consume_and_steal)
{
	struct buf b;
	buf_init(&b, 64, true);
	ck_assert_int_eq(buf_append(&b, "hello world", 11), 0);
	buf_consume(&b, 6);
	ck_assert_str_eq(b.data, "world");
	buf_consume(&b, 99);
	ck_assert_uint_eq(b.len, 0);
	ck_assert_int_eq(buf_append(&b, "abc", 3), 0);
	size_t n;
	char *s = buf_steal(&b, &n);
	ck_assert_str_eq(s, "abc");
	ck_assert_uint_eq(n, 3);
	free(s);
	ck_assert_ptr_null(b.data);
	s = buf_steal(&b, &n); /* empty: "" */
	ck_assert_str_eq(s, "");
	ck_assert_uint_eq(n, 0);
	free(s);
}
END_TEST

Suite *suite(void)
{
	Suite *s = suite_create("buf");
	TCase *tc = tcase_create("buf");
	tcase_add_test(tc, test_bound_exact);
	tcase_add_test(tc, test_consume_and_steal);
	suite_add_tcase(s, tc);
	return s;
}
