/* http routing: pattern matching with parameters, and the 404 / 405-with-Allow
 * decision, including the bounds that keep a hostile path from overflowing. */
#include <string.h>

#include "http/http.h"
#include "testutil.h"

static int h(struct http_req *r, void *c) { (void)r, (void)c; return 0; }

static const struct http_route routes[] = {
	{"GET", "/v1/sessions", h, 0, 0},
	{"POST", "/v1/sessions", h, 0, 0},
	{"GET", "/v1/sessions/{id}", h, 0, 0},
	{"DELETE", "/v1/sessions/{id}", h, 0, 0},
	{"POST", "/v1/sessions/{id}/generations/{gen}/cancel", h, 0, 0},
	{"GET", "/", h, 0, 0},
	{NULL, NULL, NULL, 0, 0},
};

START_TEST(test_match_params)
{
	struct http_params p;
	ck_assert(http_path_match("/v1/sessions/{id}", "/v1/sessions/abc-123", &p));
	ck_assert_uint_eq(p.n, 1);
	ck_assert_str_eq(p.name[0], "id");
	ck_assert_str_eq(p.value[0], "abc-123");
	ck_assert(http_path_match("/a/{x}/b/{y}", "/a/1/b/2", &p));
	ck_assert_uint_eq(p.n, 2);
	ck_assert_str_eq(p.value[1], "2");
	ck_assert(http_path_match("/", "/", &p));
}
END_TEST

START_TEST(test_no_match)
{
	struct http_params p;
	ck_assert(!http_path_match("/v1/sessions/{id}", "/v1/sessions", &p));
	ck_assert(!http_path_match("/v1/sessions/{id}", "/v1/sessions/", &p));
	ck_assert(!http_path_match("/v1/sessions/{id}", "/v1/sessions/a/b", &p));
	ck_assert(!http_path_match("/v1/sessions", "/v1/sessions/", &p));
	ck_assert(!http_path_match("/v1/sessions", "/v1/session", &p));
	ck_assert(!http_path_match("/v1/sessions", "v1/sessions", &p));
	ck_assert(!http_path_match("/v1", "/v10", &p));
	ck_assert(!http_path_match("/v1/x", NULL, &p));
}
END_TEST

START_TEST(test_bounds)
{
	struct http_params p;
	char path[1024] = "/v1/sessions/";
	memset(path + 13, 'a', 400); /* longer than a parameter may be */
	path[413] = '\0';
	ck_assert(!http_path_match("/v1/sessions/{id}", path, &p));
	path[13 + 255] = '\0';
	ck_assert(http_path_match("/v1/sessions/{id}", path, &p));
	ck_assert_uint_eq(strlen(p.value[0]), 255);
	/* More parameters than the table holds is a non-match, never an overflow. */
	ck_assert(!http_path_match("/{a}/{b}/{c}/{d}/{e}/{f}/{g}/{h}/{i}", "/1/2/3/4/5/6/7/8/9", &p));
}
END_TEST

START_TEST(test_find_and_allow)
{
	struct http_params p;
	char allow[128];
	const struct http_route *r = http_route_find(routes, "DELETE", "/v1/sessions/s1", &p, allow, sizeof allow);
	ck_assert_ptr_eq(r, &routes[3]);
	ck_assert_str_eq(p.value[0], "s1");
	r = http_route_find(routes, "PUT", "/v1/sessions/s1", &p, allow, sizeof allow);
	ck_assert_ptr_null(r);
	ck_assert_str_eq(allow, "GET, DELETE");
	r = http_route_find(routes, "PATCH", "/v1/sessions", &p, allow, sizeof allow);
	ck_assert_ptr_null(r);
	ck_assert_str_eq(allow, "GET, POST");
	r = http_route_find(routes, "GET", "/v2/nothing", &p, allow, sizeof allow);
	ck_assert_ptr_null(r);
	ck_assert_str_eq(allow, "");
	/* HEAD is served by the GET route. */
	r = http_route_find(routes, "HEAD", "/v1/sessions", &p, allow, sizeof allow);
	ck_assert_ptr_eq(r, &routes[0]);
	r = http_route_find(routes, "POST", "/v1/sessions/a/generations/7/cancel", &p, allow, sizeof allow);
	ck_assert_ptr_eq(r, &routes[4]);
	ck_assert_str_eq(p.name[1], "gen");
	ck_assert_str_eq(p.value[1], "7");
}
END_TEST

Suite *suite(void)
{
	Suite *s = suite_create("http_route");
	TCase *tc = tcase_create("route");
	tcase_add_test(tc, test_match_params);
	tcase_add_test(tc, test_no_match);
	tcase_add_test(tc, test_bounds);
	tcase_add_test(tc, test_find_and_allow);
	suite_add_tcase(s, tc);
	return s;
}
