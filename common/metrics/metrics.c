/* metrics: the registry, lock-free series updates and the Prometheus text rendering.
 *
 * Families live in an array sorted by name and each family's series in an array sorted
 * by label values, so lookups are binary searches and a render walks both in order with
 * no sorting. A series is one cache-line-aligned allocation (values, histogram buckets,
 * label values) so that two hot counters never share a line. Histogram buckets are
 * stored per bucket and made cumulative at render time; _count is their sum, so a
 * scrape always sees le="+Inf" equal to _count even while observations race with it
 * (only _sum may lag by the in-flight observations). */
#define _GNU_SOURCE
#include "metrics/metrics.h"

#include <dirent.h>
#include <fcntl.h>
#include <inttypes.h>
#include <locale.h>
#include <math.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <time.h>
#include <unistd.h>

#include "err/err.h"
#include "log/log.h"

enum mtype { MT_COUNTER, MT_GAUGE, MT_HISTOGRAM };

static const char *const type_names[] = {"counter", "gauge", "histogram"};

struct metric_series {
	/* Counters: whole increments here (one fetch-add), fractional ones in dbits. */
	_Atomic uint64_t ival;
	/* Bit pattern of a double: the counter's fractional part, the gauge's value, or
	 * the histogram's sum. */
	_Atomic uint64_t dbits;
	struct metric *fam;
	enum mtype type;
	char **values; /* fam->nlabels label values, inside this allocation */
	_Atomic uint64_t buckets[]; /* histograms: fam->nbounds + 1, not cumulative */
};

struct metric {
	struct metrics *reg;
	char *name, *help;
	enum mtype type;
	char **labels;
	size_t nlabels;
	double *bounds;
	size_t nbounds;
	metric_fn fn; /* callback family: no series */
	void *arg;
	pthread_mutex_t lock; /* guards series, nseries, cap */
	struct metric_series **series; /* sorted by label values */
	size_t nseries, cap;
	struct metric_series *solo; /* the one series of a label-less family */
	atomic_bool warned; /* one log line per family when lookups are refused */
};

struct metrics {
	pthread_mutex_t lock; /* guards fams, nfams, cap; held through a render */
	struct metric **fams; /* sorted by name */
	size_t nfams, cap;
	struct metric *dropped;
	locale_t c_locale; /* renders use '.' whatever the process locale */
	double start_time;
};

/* ---- validation ---- */

static bool name_valid(const char *s, bool colon)
{
	if (!s || !*s)
		return false;
	for (const char *p = s; *p; p++) {
		char c = *p;
		bool alpha = (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || c == '_' ||
			     (colon && c == ':');
		if (!alpha && (p == s || c < '0' || c > '9'))
			return false;
	}
	return true;
}

static bool ends_with(const char *s, const char *suffix)
{
	size_t n = strlen(s), k = strlen(suffix);
	return n >= k && memcmp(s + n - k, suffix, k) == 0;
}

/* UTF-8 as Go's utf8.ValidString accepts it: what Prometheus requires of label values
 * (one bad byte makes the whole scrape fail to parse). */
static bool utf8_valid(const unsigned char *s, size_t n)
{
	for (size_t i = 0; i < n;) {
		unsigned c = s[i], cp, min;
		size_t len;
		if (c < 0x80) {
			i++;
			continue;
		}
		if ((c & 0xe0) == 0xc0) {
			len = 2, cp = c & 0x1f, min = 0x80;
		} else if ((c & 0xf0) == 0xe0) {
			len = 3, cp = c & 0x0f, min = 0x800;
		} else if ((c & 0xf8) == 0xf0) {
			len = 4, cp = c & 0x07, min = 0x10000;
		} else {
			return false;
		}
		if (n - i < len)
			return false;
		for (size_t k = 1; k < len; k++) {
			if ((s[i + k] & 0xc0) != 0x80)
				return false;
			cp = (cp << 6) | (s[i + k] & 0x3f);
		}
		if (cp < min || cp > 0x10ffff || (cp >= 0xd800 && cp <= 0xdfff))
			return false;
		i += len;
	}
	return true;
}

/* What a registration asks for; checked, then compared with an existing family. */
struct spec {
	const char *name, *help;
	enum mtype type;
	const char *const *labels;
	size_t nlabels;
	const double *bounds;
	size_t nbounds;
	metric_fn fn;
	void *arg;
};

static const char *spec_check(struct spec *sp)
{
	if (!name_valid(sp->name, true))
		return "metric name must match [a-zA-Z_:][a-zA-Z0-9_:]*";
	if (sp->type == MT_COUNTER && !ends_with(sp->name, "_total"))
		return "counter names end in _total";
	if (sp->type != MT_COUNTER && ends_with(sp->name, "_total"))
		return "only counter names end in _total";
	if (!sp->help || !*sp->help || !utf8_valid((const unsigned char *)sp->help,
						     strlen(sp->help)))
		return "help must be non-empty UTF-8";
	sp->nlabels = 0;
	for (const char *const *l = sp->labels; l && *l; l++) {
		if (++sp->nlabels > METRICS_LABELS_MAX)
			return "too many labels";
		if (!name_valid(*l, false) || strncmp(*l, "__", 2) == 0)
			return "label name must match [a-zA-Z_][a-zA-Z0-9_]* and not start with __";
		if (sp->type == MT_HISTOGRAM && strcmp(*l, "le") == 0)
			return "label le is reserved in histograms";
		for (const char *const *k = sp->labels; k < l; k++)
			if (strcmp(*k, *l) == 0)
				return "duplicate label name";
	}
	if (sp->type == MT_HISTOGRAM) {
		if (sp->nbounds && !sp->bounds)
			return "histogram bounds missing";
		for (size_t i = 0; i < sp->nbounds; i++)
			if (!isfinite(sp->bounds[i]) || (i > 0 && !(sp->bounds[i] > sp->bounds[i - 1])))
				return "histogram bounds must be finite and strictly increasing";
	}
	return NULL;
}

static bool spec_matches(const struct metric *f, const struct spec *sp)
{
	if (f->type != sp->type || strcmp(f->help, sp->help) != 0 ||
	    f->nlabels != sp->nlabels || f->fn != sp->fn || f->arg != sp->arg)
		return false;
	for (size_t i = 0; i < f->nlabels; i++)
		if (strcmp(f->labels[i], sp->labels[i]) != 0)
			return false;
	if (f->nbounds != (sp->type == MT_HISTOGRAM ? sp->nbounds : 0))
		return false;
	for (size_t i = 0; i < f->nbounds; i++)
		if (f->bounds[i] != sp->bounds[i])
			return false;
	return true;
}

/* Sample names a family emits: a histogram "x" owns x, x_bucket, x_sum and x_count. */
static const char *const hist_suffixes[] = {"", "_bucket", "_sum", "_count"};

static bool cat_eq(const char *a, const char *sa, const char *b, const char *sb)
{
	size_t al = strlen(a), bl = strlen(b), n = al + strlen(sa);
	if (n != bl + strlen(sb))
		return false;
	for (size_t i = 0; i < n; i++)
		if ((i < al ? a[i] : sa[i - al]) != (i < bl ? b[i] : sb[i - bl]))
			return false;
	return true;
}

static bool samples_collide(const char *a, enum mtype ta, const char *b, enum mtype tb)
{
	size_t na = ta == MT_HISTOGRAM ? 4 : 1, nb = tb == MT_HISTOGRAM ? 4 : 1;
	for (size_t i = 0; i < na; i++)
		for (size_t j = 0; j < nb; j++)
			if (cat_eq(a, hist_suffixes[i], b, hist_suffixes[j]))
				return true;
	return false;
}

/* ---- families ---- */

static struct metric_series *series_new(struct metric *f, const char *const *values)
{
	size_t nb = f->type == MT_HISTOGRAM ? f->nbounds + 1 : 0;
	size_t size = sizeof(struct metric_series) + nb * sizeof(_Atomic uint64_t) +
		      f->nlabels * sizeof(char *);
	for (size_t i = 0; i < f->nlabels; i++)
		size += strlen(values[i]) + 1;
	size = (size + 63) & ~(size_t)63;
	struct metric_series *s = aligned_alloc(64, size);
	if (!s)
		return NULL;
	atomic_init(&s->ival, 0);
	atomic_init(&s->dbits, 0); /* +0.0 */
	s->fam = f;
	s->type = f->type;
	for (size_t i = 0; i < nb; i++)
		atomic_init(&s->buckets[i], 0);
	s->values = (char **)(void *)&s->buckets[nb];
	char *p = (char *)&s->values[f->nlabels];
	for (size_t i = 0; i < f->nlabels; i++) {
		size_t n = strlen(values[i]) + 1;
		memcpy(p, values[i], n);
		s->values[i] = p;
		p += n;
	}
	return s;
}

static void family_free(struct metric *f)
{
	if (!f)
		return;
	for (size_t i = 0; i < f->nseries; i++)
		free(f->series[i]);
	free(f->series);
	for (size_t i = 0; i < f->nlabels; i++)
		free(f->labels[i]);
	free(f->labels);
	free(f->bounds);
	free(f->name);
	free(f->help);
	pthread_mutex_destroy(&f->lock);
	free(f);
}

static struct metric *family_new(struct metrics *m, const struct spec *sp)
{
	struct metric *f = calloc(1, sizeof *f);
	if (!f)
		return NULL;
	pthread_mutex_init(&f->lock, NULL);
	f->reg = m;
	f->type = sp->type;
	f->fn = sp->fn;
	f->arg = sp->arg;
	f->name = strdup(sp->name);
	f->help = strdup(sp->help);
	if (!f->name || !f->help)
		goto fail;
	if (sp->nlabels) {
		f->labels = calloc(sp->nlabels, sizeof *f->labels);
		if (!f->labels)
			goto fail;
		for (; f->nlabels < sp->nlabels; f->nlabels++)
			if (!(f->labels[f->nlabels] = strdup(sp->labels[f->nlabels])))
				goto fail;
	}
	if (sp->type == MT_HISTOGRAM && sp->nbounds) {
		f->bounds = malloc(sp->nbounds * sizeof *f->bounds);
		if (!f->bounds)
			goto fail;
		memcpy(f->bounds, sp->bounds, sp->nbounds * sizeof *f->bounds);
		f->nbounds = sp->nbounds;
	}
	if (!f->fn && f->nlabels == 0) {
		f->series = malloc(sizeof *f->series);
		if (!f->series || !(f->solo = series_new(f, NULL)))
			goto fail;
		f->series[0] = f->solo;
		f->nseries = f->cap = 1;
	}
	return f;
fail:
	family_free(f);
	return NULL;
}

/* Index of name in m->fams, or where it would go (*found false). */
static size_t family_find(const struct metrics *m, const char *name, bool *found)
{
	size_t lo = 0, hi = m->nfams;
	while (lo < hi) {
		size_t mid = lo + (hi - lo) / 2;
		int c = strcmp(m->fams[mid]->name, name);
		if (c == 0) {
			*found = true;
			return mid;
		}
		if (c < 0)
			lo = mid + 1;
		else
			hi = mid;
	}
	*found = false;
	return lo;
}

static int family_register(struct metrics *m, struct spec *sp, struct metric **out)
{
	int rc = 0;
	const char *why = NULL;
	struct metric *f = NULL;
	bool locked = false, found;

	*out = NULL;
	if (!m) /* metrics switched off: quietly nothing */
		return ERR_INVALID;
	if ((why = spec_check(sp))) {
		rc = ERR_INVALID;
		goto out;
	}
	pthread_mutex_lock(&m->lock);
	locked = true;
	size_t at = family_find(m, sp->name, &found);
	if (found) {
		if (spec_matches(m->fams[at], sp)) {
			*out = m->fams[at];
		} else {
			rc = ERR_CONFLICT;
			why = "registered before with another type, help, labels, bounds or callback";
		}
		goto out;
	}
	for (size_t i = 0; i < m->nfams; i++)
		if (samples_collide(m->fams[i]->name, m->fams[i]->type, sp->name, sp->type)) {
			rc = ERR_CONFLICT;
			why = "sample names collide with another family";
			goto out;
		}
	if (m->nfams == m->cap) {
		size_t cap = m->cap ? m->cap * 2 : 16;
		struct metric **fams = realloc(m->fams, cap * sizeof *fams);
		if (!fams) {
			rc = ERR_NOMEM;
			goto out;
		}
		m->fams = fams;
		m->cap = cap;
	}
	if (!(f = family_new(m, sp))) {
		rc = ERR_NOMEM;
		goto out;
	}
	memmove(&m->fams[at + 1], &m->fams[at], (m->nfams - at) * sizeof *m->fams);
	m->fams[at] = f;
	m->nfams++;
	*out = f;
out:
	if (locked)
		pthread_mutex_unlock(&m->lock);
	if (rc != 0)
		LOG_WARN("metrics.register_rejected", LOG_S("name", sp->name),
			 LOG_S("error", err_slug(rc)), LOG_S("reason", why ? why : err_title(rc)));
	return rc;
}

static struct metric *reg(struct metrics *m, struct spec sp)
{
	struct metric *f;
	family_register(m, &sp, &f);
	return f;
}

struct metric *metrics_counter(struct metrics *m, const char *name, const char *help,
			       const char *const *label_names)
{
	return reg(m, (struct spec){.name = name, .help = help, .type = MT_COUNTER,
				    .labels = label_names});
}

struct metric *metrics_gauge(struct metrics *m, const char *name, const char *help,
			     const char *const *label_names)
{
	return reg(m, (struct spec){.name = name, .help = help, .type = MT_GAUGE,
				    .labels = label_names});
}

struct metric *metrics_histogram(struct metrics *m, const char *name, const char *help,
				 const char *const *label_names, const double *bounds,
				 size_t nbounds)
{
	return reg(m, (struct spec){.name = name, .help = help, .type = MT_HISTOGRAM,
				    .labels = label_names, .bounds = bounds, .nbounds = nbounds});
}

struct metric *metrics_gauge_fn(struct metrics *m, const char *name, const char *help,
				metric_fn fn, void *arg)
{
	if (!fn)
		return NULL;
	return reg(m, (struct spec){.name = name, .help = help, .type = MT_GAUGE, .fn = fn,
				    .arg = arg});
}

struct metric *metrics_counter_fn(struct metrics *m, const char *name, const char *help,
				  metric_fn fn, void *arg)
{
	if (!fn)
		return NULL;
	return reg(m, (struct spec){.name = name, .help = help, .type = MT_COUNTER, .fn = fn,
				    .arg = arg});
}

/* ---- series ---- */

static int values_cmp(char *const *a, const char *const *b, size_t n)
{
	for (size_t i = 0; i < n; i++) {
		int c = strcmp(a[i], b[i]);
		if (c)
			return c;
	}
	return 0;
}

static bool values_valid(const struct metric *f, const char *const *v)
{
	if (!v)
		return false;
	for (size_t i = 0; i < f->nlabels; i++) {
		if (!v[i])
			return false;
		size_t n = strnlen(v[i], METRICS_LABEL_VALUE_MAX + 1);
		if (n > METRICS_LABEL_VALUE_MAX || !utf8_valid((const unsigned char *)v[i], n))
			return false;
	}
	return v[f->nlabels] == NULL;
}

static void series_dropped(struct metric *f, const char *reason)
{
	struct metrics *m = f->reg;
	if (f == m->dropped)
		return;
	metric_inc(metric_series(m->dropped, METRIC_LABELS(f->name, reason)));
	if (!atomic_exchange(&f->warned, true))
		LOG_WARN("metrics.series_refused", LOG_S("name", f->name), LOG_S("reason", reason),
			 LOG_I("limit", METRICS_SERIES_MAX),
			 LOG_S("hint", "label values must be bounded, valid UTF-8 and match "
				       "the label names; further refusals are only counted in "
				       METRICS_DROPPED_NAME));
}

struct metric_series *metric_series(struct metric *f, const char *const *label_values)
{
	if (!f || f->fn)
		return NULL;
	if (f->nlabels == 0) {
		if (label_values && label_values[0]) {
			series_dropped(f, "invalid");
			return NULL;
		}
		return f->solo;
	}
	if (!values_valid(f, label_values)) {
		series_dropped(f, "invalid");
		return NULL;
	}

	struct metric_series *s = NULL;
	bool full = false;
	pthread_mutex_lock(&f->lock);
	size_t lo = 0, hi = f->nseries;
	while (lo < hi) {
		size_t mid = lo + (hi - lo) / 2;
		int c = values_cmp(f->series[mid]->values, label_values, f->nlabels);
		if (c == 0) {
			s = f->series[mid];
			goto out;
		}
		if (c < 0)
			lo = mid + 1;
		else
			hi = mid;
	}
	if (f->nseries >= METRICS_SERIES_MAX) {
		full = true;
		goto out;
	}
	if (f->nseries == f->cap) {
		size_t cap = f->cap ? f->cap * 2 : 8;
		struct metric_series **arr = realloc(f->series, cap * sizeof *arr);
		if (!arr)
			goto out;
		f->series = arr;
		f->cap = cap;
	}
	if (!(s = series_new(f, label_values)))
		goto out;
	memmove(&f->series[lo + 1], &f->series[lo], (f->nseries - lo) * sizeof *f->series);
	f->series[lo] = s;
	f->nseries++;
out:
	pthread_mutex_unlock(&f->lock);
	if (full)
		series_dropped(f, "limit");
	return s;
}

/* ---- updates ---- */

static inline double bits_dbl(uint64_t u)
{
	double d;
	memcpy(&d, &u, sizeof d);
	return d;
}

static inline uint64_t dbl_bits(double d)
{
	uint64_t u;
	memcpy(&u, &d, sizeof u);
	return u;
}

static inline void dbl_add(_Atomic uint64_t *p, double v)
{
	uint64_t old = atomic_load_explicit(p, memory_order_relaxed);
	while (!atomic_compare_exchange_weak_explicit(p, &old, dbl_bits(bits_dbl(old) + v),
						      memory_order_relaxed,
						      memory_order_relaxed))
		;
}

static inline double dbl_load(const _Atomic uint64_t *p)
{
	return bits_dbl(atomic_load_explicit(p, memory_order_relaxed));
}

void metric_add(struct metric_series *s, double v)
{
	if (!s)
		return;
	if (s->type == MT_GAUGE) {
		dbl_add(&s->dbits, v);
	} else if (s->type == MT_COUNTER && v >= 0.0 && isfinite(v)) {
		/* Whole increments below 2^53 are exact in both representations. */
		if (v < 9007199254740992.0 && (double)(uint64_t)v == v)
			atomic_fetch_add_explicit(&s->ival, (uint64_t)v, memory_order_relaxed);
		else
			dbl_add(&s->dbits, v);
	}
}

void metric_add_u64(struct metric_series *s, uint64_t n)
{
	if (!s)
		return;
	if (s->type == MT_COUNTER)
		atomic_fetch_add_explicit(&s->ival, n, memory_order_relaxed);
	else if (s->type == MT_GAUGE)
		dbl_add(&s->dbits, (double)n);
}

void metric_inc(struct metric_series *s) { metric_add_u64(s, 1); }

void metric_dec(struct metric_series *s)
{
	if (s && s->type == MT_GAUGE)
		dbl_add(&s->dbits, -1.0);
}

void metric_set(struct metric_series *s, double v)
{
	if (s && s->type == MT_GAUGE)
		atomic_store_explicit(&s->dbits, dbl_bits(v), memory_order_relaxed);
}

void metric_observe(struct metric_series *s, double v)
{
	if (!s || s->type != MT_HISTOGRAM || isnan(v))
		return;
	const double *b = s->fam->bounds;
	size_t lo = 0, hi = s->fam->nbounds;
	while (lo < hi) { /* first bound >= v: buckets are "less or equal" */
		size_t mid = lo + (hi - lo) / 2;
		if (v <= b[mid])
			hi = mid;
		else
			lo = mid + 1;
	}
	atomic_fetch_add_explicit(&s->buckets[lo], 1, memory_order_relaxed);
	dbl_add(&s->dbits, v);
}

double metric_value(const struct metric_series *s)
{
	if (!s)
		return NAN;
	double v = dbl_load(&s->dbits);
	if (s->type == MT_COUNTER)
		v += (double)atomic_load_explicit(&s->ival, memory_order_relaxed);
	return v;
}

uint64_t metric_count(const struct metric_series *s)
{
	uint64_t n = 0;
	if (s && s->type == MT_HISTOGRAM)
		for (size_t i = 0; i <= s->fam->nbounds; i++)
			n += atomic_load_explicit(&s->buckets[i], memory_order_relaxed);
	return n;
}

/* ---- rendering ---- */

/* A growing output buffer; after a failed allocation every write is dropped. */
struct buf {
	char *p;
	size_t len, cap;
	bool oom;
};

static void put_n(struct buf *b, const char *s, size_t n)
{
	if (b->oom)
		return;
	if (n >= b->cap - b->len) {
		size_t cap = b->cap ? b->cap : 4096;
		while (n >= cap - b->len) {
			if (cap > SIZE_MAX / 2) {
				b->oom = true;
				return;
			}
			cap *= 2;
		}
		char *p = realloc(b->p, cap);
		if (!p) {
			b->oom = true;
			return;
		}
		b->p = p;
		b->cap = cap;
	}
	memcpy(b->p + b->len, s, n);
	b->len += n;
	b->p[b->len] = '\0';
}

static void put_s(struct buf *b, const char *s) { put_n(b, s, strlen(s)); }

/* HELP text escapes \ and newline; label values also ". */
static void put_escaped(struct buf *b, const char *s, bool quote)
{
	const char *run = s;
	for (; *s; s++) {
		const char *esc = *s == '\\' ? "\\\\" : *s == '\n' ? "\\n"
				: (quote && *s == '"') ? "\\\"" : NULL;
		if (esc) {
			put_n(b, run, (size_t)(s - run));
			put_s(b, esc);
			run = s + 1;
		}
	}
	put_n(b, run, (size_t)(s - run));
}

/* The shortest of %.15g..%.17g that reads back to v: 15 digits always survive a
 * decimal round trip (DBL_DIG), 17 always identify a double. Needs the C locale. */
static void fmt_double(char *out, size_t cap, double v)
{
	if (isnan(v)) {
		snprintf(out, cap, "NaN");
	} else if (isinf(v)) {
		snprintf(out, cap, v > 0 ? "+Inf" : "-Inf");
	} else {
		for (int prec = 15; prec <= 17; prec++) {
			snprintf(out, cap, "%.*g", prec, v);
			if (strtod(out, NULL) == v)
				break;
		}
	}
}

static void put_double(struct buf *b, double v)
{
	char tmp[40];
	fmt_double(tmp, sizeof tmp, v);
	put_s(b, tmp);
}

static void put_u64(struct buf *b, uint64_t v)
{
	char tmp[24];
	snprintf(tmp, sizeof tmp, "%" PRIu64, v);
	put_s(b, tmp);
}

/* name{l1="v1",...,le="x"} with the braces left out when there is no label. */
static void put_sample_name(struct buf *b, const struct metric *f, const char *suffix,
			    const struct metric_series *s, const char *le)
{
	put_s(b, f->name);
	put_s(b, suffix);
	if (f->nlabels == 0 && !le)
		return;
	put_s(b, "{");
	for (size_t i = 0; i < f->nlabels; i++) {
		put_s(b, i ? ",": "");
		put_s(b, f->labels[i]);
		put_s(b, "=\"");
		put_escaped(b, s->values[i], true);
		put_s(b, "\"");
	}
	if (le) {
		put_s(b, f->nlabels ? ",le=\"" : "le=\"");
		put_s(b, le);
		put_s(b, "\"");
	}
	put_s(b, "}");
}

static void put_series(struct buf *b, const struct metric *f, const struct metric_series *s)
{
	if (f->type != MT_HISTOGRAM) {
		put_sample_name(b, f, "", s, NULL);
		put_s(b, " ");
		put_double(b, metric_value(s));
		put_s(b, "\n");
		return;
	}
	uint64_t cum = 0;
	char le[40];
	for (size_t i = 0; i <= f->nbounds; i++) {
		cum += atomic_load_explicit(&s->buckets[i], memory_order_relaxed);
		if (i < f->nbounds)
			fmt_double(le, sizeof le, f->bounds[i]);
		else
			snprintf(le, sizeof le, "+Inf");
		put_sample_name(b, f, "_bucket", s, le);
		put_s(b, " ");
		put_u64(b, cum);
		put_s(b, "\n");
	}
	put_sample_name(b, f, "_sum", s, NULL);
	put_s(b, " ");
	put_double(b, dbl_load(&s->dbits));
	put_s(b, "\n");
	put_sample_name(b, f, "_count", s, NULL);
	put_s(b, " ");
	put_u64(b, cum);
	put_s(b, "\n");
}

static void put_header(struct buf *b, const struct metric *f)
{
	put_s(b, "# HELP ");
	put_s(b, f->name);
	put_s(b, " ");
	put_escaped(b, f->help, false);
	put_s(b, "\n# TYPE ");
	put_s(b, f->name);
	put_s(b, " ");
	put_s(b, type_names[f->type]);
	put_s(b, "\n");
}

static void put_family(struct buf *b, struct metric *f)
{
	if (f->fn) {
		double v = f->fn(f->arg);
		put_header(b, f);
		put_s(b, f->name);
		put_s(b, " ");
		put_double(b, v);
		put_s(b, "\n");
		return;
	}
	pthread_mutex_lock(&f->lock);
	if (f->nseries > 0) { /* a labelled family with no series yet says nothing */
		put_header(b, f);
		for (size_t i = 0; i < f->nseries; i++)
			put_series(b, f, f->series[i]);
	}
	pthread_mutex_unlock(&f->lock);
}

int metrics_render(struct metrics *m, char **out, size_t *len)
{
	if (!m || !out || !len)
		return ERR_INVALID;
	*out = NULL;
	*len = 0;
	struct buf b = {0};
	locale_t old = uselocale(m->c_locale);
	pthread_mutex_lock(&m->lock);
	for (size_t i = 0; i < m->nfams; i++)
		put_family(&b, m->fams[i]);
	pthread_mutex_unlock(&m->lock);
	uselocale(old);
	put_n(&b, "", 0); /* an empty registry still yields a "" buffer */
	if (b.oom) {
		free(b.p);
		return ERR_NOMEM;
	}
	*out = b.p;
	*len = b.len;
	return 0;
}

/* ---- process collector ---- */

/* A small /proc file, NUL-terminated; -1 when it cannot be read. */
static ssize_t read_small(const char *path, char *buf, size_t cap)
{
	int fd = open(path, O_RDONLY | O_CLOEXEC);
	if (fd < 0)
		return -1;
	size_t n = 0;
	while (n + 1 < cap) {
		ssize_t r = read(fd, buf + n, cap - 1 - n);
		if (r < 0) {
			close(fd);
			return -1;
		}
		if (r == 0)
			break;
		n += (size_t)r;
	}
	close(fd);
	buf[n] = '\0';
	return (ssize_t)n;
}

static double proc_cpu_seconds(void *arg)
{
	(void)arg;
	struct rusage ru;
	if (getrusage(RUSAGE_SELF, &ru) != 0)
		return NAN;
	return (double)ru.ru_utime.tv_sec + (double)ru.ru_stime.tv_sec +
	       ((double)ru.ru_utime.tv_usec + (double)ru.ru_stime.tv_usec) / 1e6;
}

static double proc_open_fds(void *arg)
{
	(void)arg;
	DIR *d = opendir("/proc/self/fd");
	if (!d)
		return NAN;
	char self[24];
	snprintf(self, sizeof self, "%d", dirfd(d));
	double n = 0;
	for (struct dirent *e; (e = readdir(d));)
		if (e->d_name[0] != '.' && strcmp(e->d_name, self) != 0)
			n++;
	closedir(d);
	return n;
}

static double proc_max_fds(void *arg)
{
	(void)arg;
	struct rlimit rl;
	if (getrlimit(RLIMIT_NOFILE, &rl) != 0)
		return NAN;
	return rl.rlim_cur == RLIM_INFINITY ? INFINITY : (double)rl.rlim_cur;
}

/* /proc/self/statm field (0: total program size, 1: resident), in bytes. */
static double proc_statm(int field)
{
	char buf[256];
	if (read_small("/proc/self/statm", buf, sizeof buf) < 0)
		return NAN;
	char *p = buf, *end;
	unsigned long long pages = 0;
	for (int i = 0; i <= field; i++, p = end) {
		pages = strtoull(p, &end, 10);
		if (end == p)
			return NAN;
	}
	return (double)pages * (double)sysconf(_SC_PAGESIZE);
}

static double proc_rss(void *arg)
{
	(void)arg;
	return proc_statm(1);
}

static double proc_vsize(void *arg)
{
	(void)arg;
	return proc_statm(0);
}

static double proc_start(void *arg) { return *(const double *)arg; }

/* Boot time (/proc/stat btime) plus the process start in clock ticks since boot (field
 * 22 of /proc/self/stat, counted after the command name, which may hold spaces). */
static double proc_start_time(void)
{
	char buf[4096];
	if (read_small("/proc/self/stat", buf, sizeof buf) < 0)
		return NAN;
	char *p = strrchr(buf, ')'), *end;
	if (!p)
		return NAN;
	p++;
	unsigned long long ticks = 0;
	for (int field = 3; field <= 22; field++, p = end) {
		while (*p == ' ')
			p++;
		if (field == 3) { /* state: one character */
			end = *p ? p + 1 : p;
			continue;
		}
		ticks = strtoull(p, &end, 10);
		if (end == p)
			return NAN;
	}
	if (read_small("/proc/stat", buf, sizeof buf) < 0)
		return NAN;
	char *bt = strstr(buf, "\nbtime ");
	if (!bt)
		return NAN;
	unsigned long long btime = strtoull(bt + 7, &end, 10);
	long hz = sysconf(_SC_CLK_TCK);
	if (end == bt + 7 || hz <= 0)
		return NAN;
	return (double)btime + (double)ticks / (double)hz;
}

int metrics_add_process(struct metrics *m)
{
	if (!m)
		return ERR_INVALID;
	struct spec specs[] = {
		{"process_cpu_seconds_total", "Total user and system CPU time spent in seconds.",
		 MT_COUNTER, .fn = proc_cpu_seconds},
		{"process_open_fds", "Number of open file descriptors.", MT_GAUGE,
		 .fn = proc_open_fds},
		{"process_max_fds", "Maximum number of open file descriptors.", MT_GAUGE,
		 .fn = proc_max_fds},
		{"process_resident_memory_bytes", "Resident memory size in bytes.", MT_GAUGE,
		 .fn = proc_rss},
		{"process_virtual_memory_bytes", "Virtual memory size in bytes.", MT_GAUGE,
		 .fn = proc_vsize},
		{"process_start_time_seconds",
		 "Start time of the process since unix epoch in seconds.", MT_GAUGE,
		 .fn = proc_start, .arg = &m->start_time},
	};
	for (size_t i = 0; i < sizeof specs / sizeof specs[0]; i++) {
		struct metric *f;
		int rc = family_register(m, &specs[i], &f);
		if (rc)
			return rc;
	}
	return 0;
}

/* ---- registry ---- */

struct metrics *metrics_new(void)
{
	struct metrics *m = calloc(1, sizeof *m);
	if (!m)
		return NULL;
	pthread_mutex_init(&m->lock, NULL);
	m->c_locale = newlocale(LC_NUMERIC_MASK, "C", (locale_t)0);
	m->start_time = proc_start_time();
	if (isnan(m->start_time)) {
		struct timespec ts;
		clock_gettime(CLOCK_REALTIME, &ts);
		m->start_time = (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
	}
	m->dropped = metrics_counter(m, METRICS_DROPPED_NAME,
				     "Series lookups refused by the metrics registry, by family "
				     "and reason (limit: too many series; invalid: bad label values).",
				     METRIC_LABELS("family", "reason"));
	if (m->c_locale == (locale_t)0 || !m->dropped) {
		metrics_free(m);
		return NULL;
	}
	return m;
}

void metrics_free(struct metrics *m)
{
	if (!m)
		return;
	for (size_t i = 0; i < m->nfams; i++)
		family_free(m->fams[i]);
	free(m->fams);
	if (m->c_locale != (locale_t)0)
		freelocale(m->c_locale);
	pthread_mutex_destroy(&m->lock);
	free(m);
}
