/* sse: framing, Last-Event-ID parsing, the replay log's window, and the parser against
 * the WHATWG rules, fed whole and one byte at a time (a chunk may split anything). */
#include <stdlib.h>
#include <string.h>

#include "err/err.h"
#include "sse/sse.h"
#include "testutil.h"

START_TEST(test_encode)
{
	char *out;
	size_t n;
	ck_assert_int_eq(sse_encode(7, "token", "a\nb\r\nc\rd", 8, &out, &n), 0);
	ck_assert_str_eq(out, "id: 7\nevent: token\ndata: a\ndata: b\ndata: c\ndata: d\n\n");
	ck_assert_uint_eq(n, strlen(out));
	free(out);
	ck_assert_int_eq(sse_encode(0, NULL, "", 0, &out, &n), 0);
	ck_assert_str_eq(out, "data: \n\n");
	free(out);
	ck_assert_int_eq(sse_encode(1, "bad\nname", "x", 1, &out, &n), ERR_INVALID);
	ck_assert_int_eq(sse_encode(1, "", "x", 1, &out, &n), ERR_INVALID);
	ck_assert(!sse_event_name_ok("a b"));
	ck_assert(sse_event_name_ok("done.final-2"));
}
END_TEST

START_TEST(test_last_id)
{
	uint64_t v;
	ck_assert_int_eq(sse_parse_last_id("0", &v), 0);
	ck_assert_uint_eq(v, 0);
	ck_assert_int_eq(sse_parse_last_id("18446744073709551615", &v), 0);
	ck_assert_uint_eq(v, UINT64_MAX);
	ck_assert_int_eq(sse_parse_last_id("18446744073709551616", &v), ERR_PARSE);
	ck_assert_int_eq(sse_parse_last_id("-1", &v), ERR_PARSE);
	ck_assert_int_eq(sse_parse_last_id(" 1", &v), ERR_PARSE);
	ck_assert_int_eq(sse_parse_last_id("1x", &v), ERR_PARSE);
	ck_assert_int_eq(sse_parse_last_id("", &v), ERR_PARSE);
	ck_assert_int_eq(sse_parse_last_id(NULL, &v), ERR_PARSE);
}
END_TEST

START_TEST(test_log_window)
{
	struct sse_log *l = sse_log_new(3, 1 << 20);
	uint64_t id;
	for (int i = 0; i < 5; i++)
		ck_assert_int_eq(sse_log_append(l, "tick", "x", 1, &id), 0);
	ck_assert_uint_eq(id, 5);
	ck_assert_uint_eq(sse_log_last_id(l), 5);
	/* Events 3..5 are kept: resuming after 1 would lose event 2. */
	ck_assert_int_eq(sse_log_attach(l, NULL, 1), ERR_RANGE);
	ck_assert_int_eq(sse_log_attach(l, NULL, 6), ERR_INVALID);
	ck_assert_int_eq(sse_log_append(l, "bad name", "x", 1, &id), ERR_INVALID);
	ck_assert_uint_eq(sse_log_last_id(l), 5);
	sse_log_finish(l);
	ck_assert_int_eq(sse_log_append(l, "tick", "x", 1, &id), ERR_INVALID);
	sse_log_free(l);
	/* The byte bound evicts too. */
	l = sse_log_new(100, 64);
	for (int i = 0; i < 10; i++)
		ck_assert_int_eq(sse_log_append(l, "t", "0123456789", 10, &id), 0);
	ck_assert_int_eq(sse_log_attach(l, NULL, 5), ERR_RANGE);
	sse_log_free(l);
}
END_TEST

struct got {
	int n;
	char id[8][16];
	char ev[8][32];
	char data[8][64];
	unsigned retry[8];
};

static int collect(const struct sse_event *e, void *arg)
{
	struct got *g = arg;
	if (g->n < 8) {
		snprintf(g->id[g->n], 16, "%s", e->id ? e->id : "-");
		snprintf(g->ev[g->n], 32, "%s", e->event);
		snprintf(g->data[g->n], 64, "%.*s", (int)e->data_len, e->data);
		g->retry[g->n] = e->retry_ms;
	}
	g->n++;
	return 0;
}

static const char stream[] =
	"\xEF\xBB\xBF: comment\n"
	"id: 1\nevent: token\ndata: hello\n\n"
	"data:no-space\r\ndata:  two spaces\r\n\r\n"
	"event: noise\n\n"                /* no data: not dispatched */
	"id: 9\rdata: cr\rretry: 1500\r\r" /* CR line endings */
	"data\n\n"                        /* field without colon: empty data line */
	"unknown: field\ndata: x\n\n";

static void check_stream(const struct got *g)
{
	ck_assert_int_eq(g->n, 5);
	ck_assert_str_eq(g->id[0], "1");
	ck_assert_str_eq(g->ev[0], "token");
	ck_assert_str_eq(g->data[0], "hello");
	ck_assert_str_eq(g->id[1], "1"); /* the last event id persists */
	ck_assert_str_eq(g->ev[1], "message");
	ck_assert_str_eq(g->data[1], "no-space\n two spaces");
	ck_assert_str_eq(g->id[2], "9");
	ck_assert_str_eq(g->data[2], "cr");
	ck_assert_uint_eq(g->retry[2], 1500);
	ck_assert_str_eq(g->data[3], "");
	ck_assert_str_eq(g->data[4], "x");
}

START_TEST(test_parser_whole_and_bytewise)
{
	struct got g = {0};
	struct sse_parser *p = sse_parser_new(0);
	ck_assert_int_eq(sse_parser_feed(p, stream, sizeof stream - 1, collect, &g), 0);
	check_stream(&g);
	ck_assert_str_eq(sse_parser_last_id(p), "9");
	sse_parser_free(p);

	struct got g2 = {0};
	p = sse_parser_new(0);
	for (size_t i = 0; i < sizeof stream - 1; i++)
		ck_assert_int_eq(sse_parser_feed(p, stream + i, 1, collect, &g2), 0);
	check_stream(&g2);
	sse_parser_free(p);

	/* A BOM split across chunks is still stripped (found by fuzz_sse). */
	static const char bom_data[] = "\xEF\xBB\xBF" "data: a\n\n";
	struct got g3 = {0};
	p = sse_parser_new(0);
	for (size_t i = 0; i < sizeof bom_data - 1; i++)
		ck_assert_int_eq(sse_parser_feed(p, bom_data + i, 1, collect, &g3), 0);
	ck_assert_int_eq(g3.n, 1);
	ck_assert_str_eq(g3.data[0], "a");
	sse_parser_free(p);
}
END_TEST

START_TEST(test_parser_round_trip_and_limits)
{
	char *out;
	size_t n;
	ck_assert_int_eq(sse_encode(42, "token", "line1\nline2", 11, &out, &n), 0);
	struct got g = {0};
	struct sse_parser *p = sse_parser_new(64);
	ck_assert_int_eq(sse_parser_feed(p, out, n, collect, &g), 0);
	ck_assert_int_eq(g.n, 1);
	ck_assert_str_eq(g.id[0], "42");
	ck_assert_str_eq(g.data[0], "line1\nline2");
	free(out);
	/* A line longer than the event bound is refused, not buffered without end. */
	char big[200];
	memset(big, 'a', sizeof big);
	ck_assert_int_eq(sse_parser_feed(p, big, sizeof big, collect, &g), ERR_TOO_LARGE);
	sse_parser_free(p);
	/* An event name longer than allowed is a protocol error. */
	p = sse_parser_new(0);
	const char longname[] = "event: aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa\n";
	ck_assert_int_eq(sse_parser_feed(p, longname, sizeof longname - 1, collect, &g), ERR_PROTOCOL);
	sse_parser_free(p);
}
END_TEST

Suite *suite(void)
{
	Suite *s = suite_create("sse");
	TCase *tc = tcase_create("sse");
	tcase_add_test(tc, test_encode);
	tcase_add_test(tc, test_last_id);
	tcase_add_test(tc, test_log_window);
	tcase_add_test(tc, test_parser_whole_and_bytewise);
	tcase_add_test(tc, test_parser_round_trip_and_limits);
	suite_add_tcase(s, tc);
	return s;
}
