/* metrics: the exposition text is exactly the Prometheus text format (known answer,
 * escaping, float spelling, round trip) and promtool accepts it; names, labels and
 * conflicting registrations are refused; the series cap holds and is counted; NULL and
 * mistyped handles are no-ops; concurrent updates lose nothing; the process collector
 * and callback families are refreshed at each render. */
#define _GNU_SOURCE
#include <math.h>
#include <pthread.h>
#include <signal.h>
#include <stdatomic.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "err/err.h"
#include "log/log.h"
#include "metrics/metrics.h"
#include "testutil.h"

static void quiet(void) { log_set_level(LOG_LEVEL_ERROR); }

static char *render(struct metrics *m)
{
	char *out = NULL;
	size_t len = 0;
	ck_assert_int_eq(metrics_render(m, &out, &len), 0);
	ck_assert_ptr_nonnull(out);
	ck_assert_uint_eq(len, strlen(out));
	return out;
}

/* The value of the sample line that starts with `name` (name and labels, exactly). */
static double sample(const char *text, const char *name)
{
	size_t n = strlen(name);
	for (const char *p = text; p && *p; p = strchr(p, '\n'), p = p ? p + 1 : NULL)
		if (strncmp(p, name, n) == 0 && p[n] == ' ')
			return strtod(p + n + 1, NULL);
	ck_abort_msg("no sample %s in:\n%s", name, text);
	return NAN;
}

static size_t count_lines_with(const char *text, const char *needle)
{
	size_t n = 0;
	for (const char *p = text; (p = strstr(p, needle)); p += strlen(needle))
		n++;
	return n;
}

START_TEST(test_exposition_known_answer)
{
	static const double lat_bounds[] = {0.25, 1, 2.5};
	static const double size_bounds[] = {1024};
	struct metrics *m = metrics_new();
	ck_assert_ptr_nonnull(m);

	/* Registered out of order: families render sorted by name. */
	struct metric *temp = metrics_gauge(m, "mimir_test_temperature_celsius",
					    "Temperature.\nSecond line with a \\ backslash.",
					    METRIC_LABELS("room", "sensor"));
	struct metric *req = metrics_counter(m, "mimir_test_requests_total", "Requests handled.",
					     NULL);
	struct metric *lat = metrics_histogram(m, "mimir_test_latency_seconds",
					       "Request latency.", METRIC_LABELS("route"),
					       lat_bounds, 3);
	ck_assert_ptr_nonnull(metrics_histogram(m, "mimir_test_size_bytes", "Body size.", NULL,
						size_bounds, 1));
	ck_assert_ptr_nonnull(temp);
	ck_assert_ptr_nonnull(req);
	ck_assert_ptr_nonnull(lat);

	struct metric_series *r = metric_series(req, NULL);
	metric_inc(r);
	metric_inc(r);
	metric_add(r, 1.5);
	/* Series created out of order: they render sorted by label values. */
	metric_set(metric_series(temp, METRIC_LABELS("kitchen", "1")), -1.5);
	metric_set(metric_series(temp, METRIC_LABELS("kitchen", "0")), INFINITY);
	metric_set(metric_series(temp, METRIC_LABELS("a \"quoted\" \\ room\nnext", "2")), 0.1);
	struct metric_series *h = metric_series(lat, METRIC_LABELS("/v1"));
	const double obs[] = {0.125, 0.25, 0.5, 3, 10}; /* 0.25 sits on a bound: le is <= */
	for (size_t i = 0; i < 5; i++)
		metric_observe(h, obs[i]);

	const char *want =
		"# HELP mimir_test_latency_seconds Request latency.\n"
		"# TYPE mimir_test_latency_seconds histogram\n"
		"mimir_test_latency_seconds_bucket{route=\"/v1\",le=\"0.25\"} 2\n"
		"mimir_test_latency_seconds_bucket{route=\"/v1\",le=\"1\"} 3\n"
		"mimir_test_latency_seconds_bucket{route=\"/v1\",le=\"2.5\"} 3\n"
		"mimir_test_latency_seconds_bucket{route=\"/v1\",le=\"+Inf\"} 5\n"
		"mimir_test_latency_seconds_sum{route=\"/v1\"} 13.875\n"
		"mimir_test_latency_seconds_count{route=\"/v1\"} 5\n"
		"# HELP mimir_test_requests_total Requests handled.\n"
		"# TYPE mimir_test_requests_total counter\n"
		"mimir_test_requests_total 3.5\n"
		"# HELP mimir_test_size_bytes Body size.\n"
		"# TYPE mimir_test_size_bytes histogram\n"
		"mimir_test_size_bytes_bucket{le=\"1024\"} 0\n"
		"mimir_test_size_bytes_bucket{le=\"+Inf\"} 0\n"
		"mimir_test_size_bytes_sum 0\n"
		"mimir_test_size_bytes_count 0\n"
		"# HELP mimir_test_temperature_celsius Temperature.\\nSecond line with a \\\\ "
		"backslash.\n"
		"# TYPE mimir_test_temperature_celsius gauge\n"
		"mimir_test_temperature_celsius{room=\"a \\\"quoted\\\" \\\\ room\\nnext\","
		"sensor=\"2\"} 0.1\n"
		"mimir_test_temperature_celsius{room=\"kitchen\",sensor=\"0\"} +Inf\n"
		"mimir_test_temperature_celsius{room=\"kitchen\",sensor=\"1\"} -1.5\n";
	char *got = render(m);
	ck_assert_str_eq(got, want);
	free(got);
	metrics_free(m);
}
END_TEST

START_TEST(test_float_spelling)
{
	struct metrics *m = metrics_new();
	struct metric *f = metrics_gauge(m, "mimir_test_values", "Values.", METRIC_LABELS("v"));
	const struct {
		const char *label;
		double v;
		const char *want;
	} cases[] = {
		{"a", NAN, "NaN"},
		{"b", -INFINITY, "-Inf"},
		{"c", 1.0 / 3.0, "0.3333333333333333"},
		{"d", 0.1 + 0.2, "0.30000000000000004"},
		{"e", 1e21, "1e+21"},
		{"f", 9007199254740992.0, "9007199254740992"},
		{"g", 123456789, "123456789"},
		{"h", 1e-7, "1e-07"},
		{"i", -0.0, "-0"},
		{"j", 2.5e-300, "2.5e-300"},
	};
	for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++)
		metric_set(metric_series(f, METRIC_LABELS(cases[i].label)), cases[i].v);
	char *got = render(m);
	for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
		char line[128];
		snprintf(line, sizeof line, "mimir_test_values{v=\"%s\"} %s\n", cases[i].label,
			 cases[i].want);
		ck_assert_msg(strstr(got, line), "missing line %s in:\n%s", line, got);
	}
	free(got);
	metrics_free(m);
}
END_TEST

/* Every double (bit patterns from a fixed xorshift stream, denormals included) reads
 * back from the text to the same bits, and the rendering does not depend on the
 * process locale's decimal point. */
START_TEST(test_float_round_trip)
{
	struct metrics *m = metrics_new();
	struct metric_series *s = metric_series(metrics_gauge(m, "mimir_test_rt", "RT.", NULL),
						NULL);
	uint64_t x = 0x9e3779b97f4a7c15ull;
	for (int i = 0; i < 2000; i++) {
		x ^= x << 13, x ^= x >> 7, x ^= x << 17;
		uint64_t bits = i % 4 == 0 ? x >> 12 : x; /* a quarter are denormal */
		double v;
		memcpy(&v, &bits, sizeof v);
		if (isnan(v))
			continue;
		metric_set(s, v);
		char *got = render(m);
		double back = sample(got, "mimir_test_rt");
		ck_assert_msg(memcmp(&back, &v, sizeof v) == 0, "%a rendered as %s", v, got);
		free(got);
	}
	metrics_free(m);
}
END_TEST

START_TEST(test_bad_names_rejected)
{
	quiet();
	struct metrics *m = metrics_new();
	static const double ok_bounds[] = {1, 2};
	const char *bad_names[] = {"", "1abc_total", "a-b_total", "a b_total", "caf\xc3\xa9_total",
				   "a.b_total"};
	for (size_t i = 0; i < sizeof bad_names / sizeof bad_names[0]; i++)
		ck_assert_ptr_null(metrics_counter(m, bad_names[i], "H.", NULL));
	ck_assert_ptr_null(metrics_counter(m, NULL, "H.", NULL));
	ck_assert_ptr_nonnull(metrics_counter(m, "mimir:rule_x_total", "Colons are legal.", NULL));
	ck_assert_ptr_nonnull(metrics_gauge(m, "_x9", "Leading underscore is legal.", NULL));

	/* _total belongs to counters and only to them. */
	ck_assert_ptr_null(metrics_counter(m, "mimir_requests", "H.", NULL));
	ck_assert_ptr_null(metrics_gauge(m, "mimir_g_total", "H.", NULL));
	ck_assert_ptr_null(metrics_histogram(m, "mimir_h_total", "H.", NULL, ok_bounds, 2));

	/* Help: present, non-empty, UTF-8. */
	ck_assert_ptr_null(metrics_gauge(m, "mimir_g", NULL, NULL));
	ck_assert_ptr_null(metrics_gauge(m, "mimir_g", "", NULL));
	ck_assert_ptr_null(metrics_gauge(m, "mimir_g", "bad \xff byte", NULL));

	const char *const *bad_labels[] = {
		METRIC_LABELS("__reserved"), METRIC_LABELS("1x"),      METRIC_LABELS("a-b"),
		METRIC_LABELS(""),           METRIC_LABELS("a:b"),     METRIC_LABELS("a", "a"),
		METRIC_LABELS("x", "y", "x"),
	};
	for (size_t i = 0; i < sizeof bad_labels / sizeof bad_labels[0]; i++)
		ck_assert_ptr_null(metrics_gauge(m, "mimir_labels", "H.", bad_labels[i]));
	const char *many[METRICS_LABELS_MAX + 2] = {0};
	char names[METRICS_LABELS_MAX + 1][16];
	for (int i = 0; i <= METRICS_LABELS_MAX; i++) {
		snprintf(names[i], sizeof names[i], "l%d", i);
		many[i] = names[i];
	}
	ck_assert_ptr_null(metrics_gauge(m, "mimir_labels", "H.", many));
	many[METRICS_LABELS_MAX] = NULL;
	ck_assert_ptr_nonnull(metrics_gauge(m, "mimir_labels", "H.", many));

	/* le: reserved in histograms only. */
	ck_assert_ptr_null(metrics_histogram(m, "mimir_h", "H.", METRIC_LABELS("le"), ok_bounds, 2));
	ck_assert_ptr_nonnull(metrics_gauge(m, "mimir_le_gauge", "H.", METRIC_LABELS("le")));

	/* Bounds: finite, strictly increasing; none at all is fine (+Inf only). */
	const double dup[] = {1, 1}, dec[] = {2, 1}, nan[] = {NAN}, inf[] = {1, INFINITY};
	ck_assert_ptr_null(metrics_histogram(m, "mimir_h", "H.", NULL, dup, 2));
	ck_assert_ptr_null(metrics_histogram(m, "mimir_h", "H.", NULL, dec, 2));
	ck_assert_ptr_null(metrics_histogram(m, "mimir_h", "H.", NULL, nan, 1));
	ck_assert_ptr_null(metrics_histogram(m, "mimir_h", "H.", NULL, inf, 2));
	ck_assert_ptr_null(metrics_histogram(m, "mimir_h", "H.", NULL, NULL, 1));
	ck_assert_ptr_nonnull(metrics_histogram(m, "mimir_h0", "H.", NULL, NULL, 0));

	/* Nothing rejected above was registered. */
	char *got = render(m);
	ck_assert_ptr_null(strstr(got, "mimir_g "));
	ck_assert_ptr_null(strstr(got, "mimir_h "));
	ck_assert_ptr_null(strstr(got, "mimir_requests"));
	free(got);
	metrics_free(m);
}
END_TEST

static double const_fn(void *arg) { return *(const double *)arg; }

START_TEST(test_reregistration)
{
	quiet();
	struct metrics *m = metrics_new();
	static const double b12[] = {1, 2}, b13[] = {1, 3};
	struct metric *c = metrics_counter(m, "mimir_c_total", "C.", METRIC_LABELS("x"));
	ck_assert_ptr_nonnull(c);
	ck_assert_ptr_eq(metrics_counter(m, "mimir_c_total", "C.", METRIC_LABELS("x")), c);
	ck_assert_ptr_null(metrics_counter(m, "mimir_c_total", "C.", METRIC_LABELS("y")));
	ck_assert_ptr_null(metrics_counter(m, "mimir_c_total", "C.", METRIC_LABELS("x", "y")));
	ck_assert_ptr_null(metrics_counter(m, "mimir_c_total", "C.", NULL));
	ck_assert_ptr_null(metrics_counter(m, "mimir_c_total", "Other help.", METRIC_LABELS("x")));

	struct metric *g = metrics_gauge(m, "mimir_g", "G.", NULL);
	ck_assert_ptr_eq(metrics_gauge(m, "mimir_g", "G.", NULL), g);
	ck_assert_ptr_null(metrics_histogram(m, "mimir_g", "G.", NULL, b12, 2));

	struct metric *h = metrics_histogram(m, "mimir_h", "H.", NULL, b12, 2);
	ck_assert_ptr_nonnull(h);
	ck_assert_ptr_eq(metrics_histogram(m, "mimir_h", "H.", NULL, b12, 2), h);
	ck_assert_ptr_null(metrics_histogram(m, "mimir_h", "H.", NULL, b13, 2));
	ck_assert_ptr_null(metrics_histogram(m, "mimir_h", "H.", NULL, b12, 1));
	ck_assert_ptr_null(metrics_gauge(m, "mimir_h", "H.", NULL));

	/* A histogram's samples are x_bucket, x_sum and x_count: no one else may own them,
	 * whichever registers first. */
	ck_assert_ptr_null(metrics_gauge(m, "mimir_h_sum", "S.", NULL));
	ck_assert_ptr_null(metrics_gauge(m, "mimir_h_count", "S.", NULL));
	ck_assert_ptr_null(metrics_gauge(m, "mimir_h_bucket", "S.", NULL));
	ck_assert_ptr_nonnull(metrics_gauge(m, "mimir_q_count", "Q.", NULL));
	ck_assert_ptr_null(metrics_histogram(m, "mimir_q", "Q.", NULL, b12, 2));
	ck_assert_ptr_nonnull(metrics_histogram(m, "mimir_r_sum", "R.", NULL, b12, 2));
	ck_assert_ptr_null(metrics_histogram(m, "mimir_r", "R.", NULL, b12, 2));

	/* Callback families: the same fn and arg is the same family. */
	double a = 1, b = 2;
	struct metric *fa = metrics_gauge_fn(m, "mimir_fn", "F.", const_fn, &a);
	ck_assert_ptr_nonnull(fa);
	ck_assert_ptr_eq(metrics_gauge_fn(m, "mimir_fn", "F.", const_fn, &a), fa);
	ck_assert_ptr_null(metrics_gauge_fn(m, "mimir_fn", "F.", const_fn, &b));
	ck_assert_ptr_null(metrics_gauge(m, "mimir_fn", "F.", NULL));
	ck_assert_ptr_null(metrics_gauge_fn(m, "mimir_fn2", "F.", NULL, &a));
	ck_assert_ptr_null(metrics_counter_fn(m, "mimir_fn", "F.", const_fn, &a));

	/* The registry's own family is taken like any other. */
	ck_assert_ptr_null(metrics_counter(m, METRICS_DROPPED_NAME, "Mine.", NULL));
	metrics_free(m);
}
END_TEST

START_TEST(test_series_cap)
{
	quiet();
	struct metrics *m = metrics_new();
	struct metric *f = metrics_counter(m, "mimir_test_cap_total", "Cap.", METRIC_LABELS("id"));
	struct metric_series *first = NULL, *last = NULL;
	char id[16];
	for (int i = 0; i < METRICS_SERIES_MAX; i++) {
		snprintf(id, sizeof id, "%d", i);
		struct metric_series *s = metric_series(f, METRIC_LABELS(id));
		ck_assert_ptr_nonnull(s);
		metric_inc(s);
		if (i == 0)
			first = s;
		last = s;
	}
	ck_assert_ptr_ne(first, last);
	for (int i = 0; i < 4; i++) {
		snprintf(id, sizeof id, "new%d", i);
		ck_assert_ptr_null(metric_series(f, METRIC_LABELS(id)));
	}
	/* Existing series are still found (the same handle) at the cap. */
	ck_assert_ptr_eq(metric_series(f, METRIC_LABELS("0")), first);
	snprintf(id, sizeof id, "%d", METRICS_SERIES_MAX - 1);
	ck_assert_ptr_eq(metric_series(f, METRIC_LABELS(id)), last);
	/* Other families are not affected. */
	struct metric *g = metrics_counter(m, "mimir_test_other_total", "O.", METRIC_LABELS("id"));
	ck_assert_ptr_nonnull(metric_series(g, METRIC_LABELS("new0")));

	char *got = render(m);
	ck_assert_uint_eq(count_lines_with(got, "\nmimir_test_cap_total{"), METRICS_SERIES_MAX);
	ck_assert_ptr_null(strstr(got, "mimir_test_cap_total{id=\"new"));
	ck_assert_double_eq(sample(got, METRICS_DROPPED_NAME
				   "{family=\"mimir_test_cap_total\",reason=\"limit\"}"),
			    4);
	free(got);
	metrics_free(m);
}
END_TEST

START_TEST(test_series_invalid_values)
{
	quiet();
	struct metrics *m = metrics_new();
	struct metric *f = metrics_gauge(m, "mimir_test_lv", "LV.", METRIC_LABELS("a", "b"));
	struct metric *solo = metrics_gauge(m, "mimir_test_solo", "Solo.", NULL);
	char longv[METRICS_LABEL_VALUE_MAX + 2];
	memset(longv, 'x', sizeof longv - 1);
	longv[sizeof longv - 1] = '\0';

	ck_assert_ptr_null(metric_series(f, NULL));
	ck_assert_ptr_null(metric_series(f, METRIC_LABELS("only-one")));
	ck_assert_ptr_null(metric_series(f, METRIC_LABELS("1", "2", "3")));
	ck_assert_ptr_null(metric_series(f, METRIC_LABELS("bad \xff", "2")));
	ck_assert_ptr_null(metric_series(f, METRIC_LABELS("\xc0\xaf", "2"))); /* overlong '/' */
	ck_assert_ptr_null(metric_series(f, METRIC_LABELS("\xed\xa0\x80", "2"))); /* surrogate */
	ck_assert_ptr_null(metric_series(f, METRIC_LABELS("\xe2\x82", "2"))); /* truncated */
	ck_assert_ptr_null(metric_series(f, METRIC_LABELS(longv, "2")));
	ck_assert_ptr_null(metric_series(solo, METRIC_LABELS("x")));
	longv[METRICS_LABEL_VALUE_MAX] = '\0';
	ck_assert_ptr_nonnull(metric_series(f, METRIC_LABELS(longv, "2")));
	ck_assert_ptr_nonnull(metric_series(f, METRIC_LABELS("caf\xc3\xa9 \xf0\x9f\x94\x92", "")));
	ck_assert_ptr_eq(metric_series(solo, NULL), metric_series(solo, METRIC_LABELS(NULL)));

	char *got = render(m);
	ck_assert_double_eq(sample(got, METRICS_DROPPED_NAME
				   "{family=\"mimir_test_lv\",reason=\"invalid\"}"),
			    8);
	ck_assert_double_eq(sample(got, METRICS_DROPPED_NAME
				   "{family=\"mimir_test_solo\",reason=\"invalid\"}"),
			    1);
	ck_assert_ptr_nonnull(strstr(got, "{a=\"caf\xc3\xa9 \xf0\x9f\x94\x92\",b=\"\"} 0\n"));
	free(got);
	metrics_free(m);
}
END_TEST

START_TEST(test_null_and_mistyped_are_noops)
{
	quiet();
	metric_add(NULL, 1);
	metric_add_u64(NULL, 1);
	metric_inc(NULL);
	metric_dec(NULL);
	metric_set(NULL, 1);
	metric_observe(NULL, 1);
	ck_assert(isnan(metric_value(NULL)));
	ck_assert_uint_eq(metric_count(NULL), 0);
	ck_assert_ptr_null(metric_series(NULL, NULL));
	ck_assert_ptr_null(metric_series(NULL, METRIC_LABELS("x")));
	ck_assert_ptr_null(metrics_counter(NULL, "a_total", "A.", NULL));
	ck_assert_ptr_null(metrics_gauge(NULL, "a", "A.", NULL));
	ck_assert_ptr_null(metrics_histogram(NULL, "a", "A.", NULL, NULL, 0));
	ck_assert_ptr_null(metrics_gauge_fn(NULL, "a", "A.", const_fn, NULL));
	ck_assert_int_eq(metrics_add_process(NULL), ERR_INVALID);
	metrics_free(NULL);
	char *out = (char *)"sentinel";
	size_t len = 7;
	ck_assert_int_eq(metrics_render(NULL, &out, &len), ERR_INVALID);

	struct metrics *m = metrics_new();
	ck_assert_int_eq(metrics_render(m, NULL, &len), ERR_INVALID);
	ck_assert_int_eq(metrics_render(m, &out, NULL), ERR_INVALID);
	/* An empty registry renders to an empty (allocated) text. */
	out = render(m);
	ck_assert_str_eq(out, "");
	free(out);

	static const double b[] = {1};
	struct metric_series *c = metric_series(metrics_counter(m, "mimir_c_total", "C.", NULL), NULL);
	struct metric_series *g = metric_series(metrics_gauge(m, "mimir_g", "G.", NULL), NULL);
	struct metric_series *h = metric_series(metrics_histogram(m, "mimir_h", "H.", NULL, b, 1),
						NULL);
	double v = 5;
	ck_assert_ptr_null(metric_series(metrics_gauge_fn(m, "mimir_fn", "F.", const_fn, &v), NULL));
	metric_add(c, 2);
	/* Counters never go down, never become NaN or infinite, and are not set. */
	metric_add(c, -1);
	metric_add(c, NAN);
	metric_add(c, INFINITY);
	metric_dec(c);
	metric_set(c, 0);
	metric_observe(c, 1);
	ck_assert_double_eq(metric_value(c), 2);
	metric_add(c, 0.5);
	metric_add(c, 1e300); /* past 2^53: the floating path */
	ck_assert_double_eq(metric_value(c), 2.5 + 1e300);
	/* Gauges are not observed; histograms are not added to or set. */
	metric_set(g, 3);
	metric_observe(g, 10);
	ck_assert_double_eq(metric_value(g), 3);
	metric_dec(g);
	metric_add(g, -2.5);
	metric_add_u64(g, 4);
	ck_assert_double_eq(metric_value(g), 3.5);
	metric_inc(h);
	metric_add(h, 1);
	metric_set(h, 9);
	metric_observe(h, NAN);
	ck_assert_uint_eq(metric_count(h), 0);
	ck_assert_double_eq(metric_value(h), 0);
	metric_observe(h, 0.5);
	metric_observe(h, INFINITY);
	ck_assert_uint_eq(metric_count(h), 2);
	out = render(m);
	ck_assert_ptr_nonnull(strstr(out, "mimir_h_bucket{le=\"1\"} 1\n"
					  "mimir_h_bucket{le=\"+Inf\"} 2\n"
					  "mimir_h_sum +Inf\n"
					  "mimir_h_count 2\n"));
	ck_assert_ptr_nonnull(strstr(out, "\nmimir_fn 5\n"));
	free(out);
	metrics_free(m);
}
END_TEST

#define THREADS 4
#define ITERS 100000

struct worker {
	struct metric *labelled;
	struct metric_series *c, *frac, *g, *h;
	struct metric_series *mine; /* looked up by the thread itself */
};

static void *work(void *arg)
{
	struct worker *w = arg;
	w->mine = metric_series(w->labelled, METRIC_LABELS("shared"));
	for (int i = 0; i < ITERS; i++) {
		metric_inc(w->c);
		metric_add(w->frac, 0.25);
		metric_add(w->g, 0.5);
		metric_observe(w->h, (double)(i % 4));
		metric_add_u64(w->mine, 3);
	}
	return NULL;
}

static atomic_int renders_stop;

static void *renderer(void *arg)
{
	struct metrics *m = arg;
	int n = 0;
	while (!atomic_load(&renders_stop) || n == 0) {
		char *out = NULL;
		size_t len;
		if (metrics_render(m, &out, &len) != 0)
			return (void *)1;
		free(out);
		n++;
	}
	return NULL;
}

START_TEST(test_concurrent_updates_sum_exactly)
{
	static const double b[] = {0.5, 1.5, 2.5};
	struct metrics *m = metrics_new();
	struct worker w[THREADS];
	struct metric_series *c = metric_series(metrics_counter(m, "mimir_c_total", "C.", NULL), NULL);
	struct metric_series *frac = metric_series(metrics_counter(m, "mimir_f_total", "F.", NULL),
						   NULL);
	struct metric_series *g = metric_series(metrics_gauge(m, "mimir_g", "G.", NULL), NULL);
	struct metric_series *h = metric_series(metrics_histogram(m, "mimir_h", "H.", NULL, b, 3),
						NULL);
	struct metric *labelled = metrics_counter(m, "mimir_l_total", "L.", METRIC_LABELS("k"));
	pthread_t t[THREADS], r;
	atomic_store(&renders_stop, 0);
	ck_assert_int_eq(pthread_create(&r, NULL, renderer, m), 0);
	for (int i = 0; i < THREADS; i++) {
		w[i] = (struct worker){labelled, c, frac, g, h, NULL};
		ck_assert_int_eq(pthread_create(&t[i], NULL, work, &w[i]), 0);
	}
	for (int i = 0; i < THREADS; i++)
		ck_assert_int_eq(pthread_join(t[i], NULL), 0);
	atomic_store(&renders_stop, 1);
	void *rr;
	ck_assert_int_eq(pthread_join(r, &rr), 0);
	ck_assert_ptr_null(rr);

	ck_assert_double_eq(metric_value(c), THREADS * ITERS);
	ck_assert_double_eq(metric_value(frac), THREADS * ITERS * 0.25);
	ck_assert_double_eq(metric_value(g), THREADS * ITERS * 0.5);
	ck_assert_uint_eq(metric_count(h), THREADS * ITERS);
	ck_assert_double_eq(metric_value(h), THREADS * (ITERS / 4) * (0 + 1 + 2 + 3));
	for (int i = 1; i < THREADS; i++)
		ck_assert_ptr_eq(w[i].mine, w[0].mine);
	ck_assert_double_eq(metric_value(w[0].mine), THREADS * ITERS * 3);

	char *out = render(m);
	ck_assert_double_eq(sample(out, "mimir_c_total"), THREADS * ITERS);
	ck_assert_double_eq(sample(out, "mimir_h_bucket{le=\"0.5\"}"), THREADS * ITERS / 4);
	ck_assert_double_eq(sample(out, "mimir_h_bucket{le=\"1.5\"}"), THREADS * ITERS / 2);
	ck_assert_double_eq(sample(out, "mimir_h_bucket{le=\"+Inf\"}"), THREADS * ITERS);
	free(out);
	metrics_free(m);
}
END_TEST

START_TEST(test_callback_families)
{
	struct metrics *m = metrics_new();
	double pool = 2.5, rounds = 10;
	ck_assert_ptr_nonnull(metrics_gauge_fn(m, "mimir_test_pool_size", "Pool.", const_fn, &pool));
	ck_assert_ptr_nonnull(metrics_counter_fn(m, "mimir_test_rounds_total", "Rounds.", const_fn,
						 &rounds));
	char *out = render(m);
	ck_assert_ptr_nonnull(strstr(out, "# TYPE mimir_test_pool_size gauge\n"
					  "mimir_test_pool_size 2.5\n"));
	ck_assert_ptr_nonnull(strstr(out, "# TYPE mimir_test_rounds_total counter\n"
					  "mimir_test_rounds_total 10\n"));
	free(out);
	pool = 7;
	rounds = 11;
	out = render(m);
	ck_assert_double_eq(sample(out, "mimir_test_pool_size"), 7);
	ck_assert_double_eq(sample(out, "mimir_test_rounds_total"), 11);
	free(out);
	metrics_free(m);
}
END_TEST

static volatile double burn_sink; /* keeps the busy loop from being optimised away */

START_TEST(test_process_collector)
{
	quiet();
	struct metrics *m = metrics_new();
	ck_assert_int_eq(metrics_add_process(m), 0);
	ck_assert_int_eq(metrics_add_process(m), 0); /* idempotent */
	ck_assert_ptr_null(metrics_gauge(m, "process_open_fds", "Mine.", NULL));

	int fds[2];
	ck_assert_int_eq(pipe(fds), 0);
	char *out = render(m);
	double open_with = sample(out, "process_open_fds");
	double cpu0 = sample(out, "process_cpu_seconds_total");
	double rss = sample(out, "process_resident_memory_bytes");
	double vsz = sample(out, "process_virtual_memory_bytes");
	double start = sample(out, "process_start_time_seconds");
	double maxfd = sample(out, "process_max_fds");
	free(out);
	close(fds[0]);
	close(fds[1]);

	struct rlimit rl;
	ck_assert_int_eq(getrlimit(RLIMIT_NOFILE, &rl), 0);
	ck_assert_double_eq(maxfd, (double)rl.rlim_cur);
	ck_assert_double_gt(rss, 0);
	ck_assert_double_ge(vsz, rss);
	struct timespec now;
	clock_gettime(CLOCK_REALTIME, &now);
	ck_assert_double_le(start, (double)now.tv_sec + 1);
	ck_assert_double_ge(start, (double)now.tv_sec - 600);

	/* Refreshed at render: two fewer descriptors, more CPU after a busy loop. */
	struct timespec t0, t1;
	clock_gettime(CLOCK_PROCESS_CPUTIME_ID, &t0);
	do {
		for (int i = 0; i < 100000; i++)
			burn_sink += i;
		clock_gettime(CLOCK_PROCESS_CPUTIME_ID, &t1);
	} while ((double)(t1.tv_sec - t0.tv_sec) + (double)(t1.tv_nsec - t0.tv_nsec) / 1e9 < 0.05);
	out = render(m);
	ck_assert_double_eq(sample(out, "process_open_fds"), open_with - 2);
	ck_assert_double_gt(sample(out, "process_cpu_seconds_total"), cpu0);
	ck_assert_ptr_nonnull(strstr(out, "# TYPE process_cpu_seconds_total counter\n"));
	free(out);
	metrics_free(m);

	/* A name taken first by someone else is a conflict, not a silent merge. */
	m = metrics_new();
	ck_assert_ptr_nonnull(metrics_gauge(m, "process_max_fds", "Mine.", NULL));
	ck_assert_int_eq(metrics_add_process(m), ERR_CONFLICT);
	metrics_free(m);
}
END_TEST

/* Exit status of `promtool check metrics` on text (0: parsed and lint-clean). */
static int promtool_check(const char *text)
{
	ck_assert_msg(tu_system("command -v promtool >/dev/null 2>&1") == 0,
		      "promtool not found on PATH: install the Debian prometheus package "
		      "(apt-get install prometheus); this test does not skip");
	signal(SIGPIPE, SIG_IGN);
	FILE *p = popen("promtool check metrics >/dev/null 2>&1", "w");
	ck_assert_ptr_nonnull(p);
	fwrite(text, 1, strlen(text), p);
	int st = pclose(p);
	ck_assert_msg(st != -1 && WIFEXITED(st), "promtool did not exit normally");
	return WEXITSTATUS(st);
}

START_TEST(test_promtool_accepts)
{
	quiet();
	static const double b[] = {0.005, 0.01, 0.1, 1, 10};
	struct metrics *m = metrics_new();
	ck_assert_int_eq(metrics_add_process(m), 0);
	struct metric *req = metrics_counter(m, "mimir_http_requests_total",
					     "HTTP requests by route and status.",
					     METRIC_LABELS("route", "status"));
	metric_add_u64(metric_series(req, METRIC_LABELS("/v1/completions", "200")), 12);
	metric_inc(metric_series(req, METRIC_LABELS("/v1/\"odd\"\\route\n\r\t\x01", "404")));
	struct metric *lat = metrics_histogram(m, "mimir_http_request_duration_seconds",
					       "Request latency\\with \"quotes\"\nand lines.",
					       METRIC_LABELS("route"), b, 5);
	for (int i = 0; i < 50; i++)
		metric_observe(metric_series(lat, METRIC_LABELS(i % 2 ? "/a" : "/b")), i * 0.01);
	metric_observe(metric_series(metrics_histogram(m, "mimir_empty_bounds_seconds", "E.",
						       NULL, NULL, 0), NULL), 1);
	struct metric *vals = metrics_gauge(m, "mimir_values", "Special values.",
					    METRIC_LABELS("case"));
	metric_set(metric_series(vals, METRIC_LABELS("nan")), NAN);
	metric_set(metric_series(vals, METRIC_LABELS("pinf")), INFINITY);
	metric_set(metric_series(vals, METRIC_LABELS("ninf")), -INFINITY);
	metric_set(metric_series(vals, METRIC_LABELS("tiny")), 4.9e-324);
	metric_set(metric_series(vals, METRIC_LABELS("utf8 caf\xc3\xa9")), -1e300);
	double pool = 3;
	metrics_gauge_fn(m, "mimir_pool_size", "Pool.", const_fn, &pool);
	/* A drop, so the registry's own family is in the text too. */
	ck_assert_ptr_null(metric_series(vals, METRIC_LABELS("bad \xff")));

	char *out = render(m);
	ck_assert_ptr_nonnull(strstr(out, METRICS_DROPPED_NAME "{"));
	ck_assert_ptr_nonnull(strstr(out, "process_open_fds "));
	ck_assert_int_eq(promtool_check(out), 0);

	/* The check can fail: a counter without _total is a lint error, a label value that
	 * is not UTF-8 a parse error. */
	size_t n = strlen(out) + 128;
	char *bad = malloc(n);
	snprintf(bad, n, "%s# HELP mimir_bad x\n# TYPE mimir_bad counter\nmimir_bad 1\n", out);
	ck_assert_int_ne(promtool_check(bad), 0);
	snprintf(bad, n, "%smimir_values{case=\"\xff\"} 1\n", out);
	ck_assert_int_ne(promtool_check(bad), 0);
	free(bad);
	free(out);
	metrics_free(m);
}
END_TEST

Suite *suite(void)
{
	Suite *s = suite_create("metrics");
	TCase *tc = tcase_create("exposition");
	tcase_add_test(tc, test_exposition_known_answer);
	tcase_add_test(tc, test_float_spelling);
	tcase_add_test(tc, test_float_round_trip);
	tcase_add_test(tc, test_promtool_accepts);
	suite_add_tcase(s, tc);
	tc = tcase_create("registry");
	tcase_add_test(tc, test_bad_names_rejected);
	tcase_add_test(tc, test_reregistration);
	tcase_add_test(tc, test_series_cap);
	tcase_add_test(tc, test_series_invalid_values);
	tcase_add_test(tc, test_null_and_mistyped_are_noops);
	tcase_add_test(tc, test_callback_families);
	tcase_add_test(tc, test_process_collector);
	suite_add_tcase(s, tc);
	tc = tcase_create("concurrency");
	tcase_set_timeout(tc, 60);
	tcase_add_test(tc, test_concurrent_updates_sum_exactly);
	suite_add_tcase(s, tc);
	return s;
}
