/* metrics: a Prometheus metrics registry and its text exposition (format 0.0.4).
 *
 * A registry (struct metrics) owns metric families (struct metric: name, help, type,
 * label names, histogram bounds) and their labelled series (struct metric_series). Hot
 * paths look a series up once and keep the handle: updates are lock-free atomics on the
 * series alone (an integer fetch-add for whole counter increments, a compare-and-swap
 * loop on the double's bit pattern otherwise), so the MPC engine can count rounds and
 * bytes without contention on a shared lock. Registration and series creation lock
 * the registry or the family; rendering locks the registry for one consistent pass.
 *
 * Every handle stays valid until metrics_free() and every function accepts NULL
 * handles as no-ops, so a failed registration (logged once as a warning) never crashes
 * a caller: code may update metrics without checking what registration returned.
 *
 * Naming rules, enforced at registration so that every render passes promtool:
 * metric names match [a-zA-Z_:][a-zA-Z0-9_:]*; counter names end in "_total" and no
 * other name does; label names match [a-zA-Z_][a-zA-Z0-9_]*, never start with "__",
 * are distinct within a family, and "le" is reserved in histograms; help text is
 * non-empty UTF-8. Families render sorted by name, series sorted by label values. */
#ifndef MIMIR_METRICS_H
#define MIMIR_METRICS_H

#include <stddef.h>
#include <stdint.h>

/* The Content-Type of a metrics_render() body, for the HTTP layer. */
#define METRICS_CONTENT_TYPE "text/plain; version=0.0.4; charset=utf-8"

/* Series per family: lookups for new label values past this return NULL and count
 * into mimir_metrics_series_dropped_total{family, reason="limit"}. Bounds what a
 * caller that labels by outside input can make the registry allocate. */
#define METRICS_SERIES_MAX 2000
/* Labels per family, and bytes per label value (longer values are rejected). */
#define METRICS_LABELS_MAX 16
#define METRICS_LABEL_VALUE_MAX 1024

/* The registry's own family counting refused series lookups, by family and reason
 * ("limit": the family is at METRICS_SERIES_MAX; "invalid": wrong number of values,
 * a value that is not UTF-8 or is longer than METRICS_LABEL_VALUE_MAX). */
#define METRICS_DROPPED_NAME "mimir_metrics_series_dropped_total"

struct metrics;
struct metric;
struct metric_series;

/* Value of a callback family, called at each render with the registry locked: it must
 * not register families or render the same registry (it may update series). */
typedef double (*metric_fn)(void *arg);

/* A new empty registry (NULL on allocation failure); metrics_free() releases it with
 * every family and series. Updates must have stopped before metrics_free(). */
struct metrics *metrics_new(void);
void metrics_free(struct metrics *m);

/* Families. label_names is NULL-terminated (NULL for none); names and help are copied.
 * Registering a name again with the same type, help, labels (and bounds) returns the
 * existing family; a different one, an invalid name, or a name whose samples would
 * collide with another family's (a histogram "x" emits x_bucket, x_sum, x_count)
 * returns NULL with a warning logged. A NULL registry (metrics switched off) returns
 * NULL quietly. */
struct metric *metrics_counter(struct metrics *m, const char *name, const char *help,
			       const char *const *label_names);
struct metric *metrics_gauge(struct metrics *m, const char *name, const char *help,
			     const char *const *label_names);
/* bounds: nbounds finite upper bounds, strictly increasing; "+Inf" is implicit (and
 * nbounds may be 0). */
struct metric *metrics_histogram(struct metrics *m, const char *name, const char *help,
				 const char *const *label_names, const double *bounds,
				 size_t nbounds);
/* Label-less families whose value is fn(arg) at render time (e.g. a pool size, or a
 * counter the MPC engine already keeps). Re-registering returns the existing family
 * only when fn and arg are the same. They have no series: metric_series() gives NULL. */
struct metric *metrics_gauge_fn(struct metrics *m, const char *name, const char *help,
				metric_fn fn, void *arg);
struct metric *metrics_counter_fn(struct metrics *m, const char *name, const char *help,
				  metric_fn fn, void *arg);

/* The series of family f for label_values (NULL-terminated, exactly one value per label
 * name, in the family's label order), created on first use. Label-less families: pass
 * NULL (lock-free). Returns NULL, counted in METRICS_DROPPED_NAME, when the family is
 * full or the values are invalid; NULL when f is NULL or a callback family. */
struct metric_series *metric_series(struct metric *f, const char *const *label_values);
/* metric_series(f, METRIC_LABELS("GET", "200")) */
#define METRIC_LABELS(...) ((const char *const[]){__VA_ARGS__, NULL})

/* Updates: lock-free, NULL is a no-op, and a call that does not fit the series' type is
 * ignored (these are the only silent paths; counters stay monotonic).
 * metric_add: counters take finite v >= 0 only; gauges any v.
 * metric_inc / metric_add_u64: counters and gauges (a whole-number counter increment
 * is a single atomic fetch-add).
 * metric_dec / metric_set: gauges only.
 * metric_observe: histograms; NaN is ignored (it would poison _sum for good). */
void metric_add(struct metric_series *s, double v);
void metric_add_u64(struct metric_series *s, uint64_t n);
void metric_inc(struct metric_series *s);
void metric_dec(struct metric_series *s);
void metric_set(struct metric_series *s, double v);
void metric_observe(struct metric_series *s, double v);

/* Reads, for tests and benchmarks: a counter's or gauge's value, a histogram's sum (NaN
 * for NULL); a histogram's observation count (0 for NULL or other types). */
double metric_value(const struct metric_series *s);
uint64_t metric_count(const struct metric_series *s);

/* The whole registry in the Prometheus text format 0.0.4 (METRICS_CONTENT_TYPE): one
 * "# HELP" and "# TYPE" per family that has samples, families sorted by name, series by
 * label values, histograms as cumulative _bucket{le=...} (le="+Inf" last), _sum,
 * _count. Floats print as the first of %.15g, %.16g, %.17g that reads back to the same
 * double (the shortest such form for every normal double), in the C locale whatever
 * the process locale; infinities and NaN as +Inf, -Inf, NaN. On success *out is a new NUL-terminated
 * buffer (caller frees with free()) of *len bytes. Returns 0, ERR_INVALID (NULL
 * argument) or ERR_NOMEM. */
int metrics_render(struct metrics *m, char **out, size_t *len);

/* The standard process collector, refreshed at each render: process_cpu_seconds_total,
 * process_open_fds, process_max_fds, process_resident_memory_bytes,
 * process_virtual_memory_bytes, process_start_time_seconds (from /proc). Returns 0
 * (also when already added), ERR_INVALID, ERR_NOMEM or ERR_CONFLICT (a name is taken
 * by another family). */
int metrics_add_process(struct metrics *m);

#endif
