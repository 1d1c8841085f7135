/* bench.h: timing helpers shared by the benchmark programs (header-only; each bench
 * is one program). */
#ifndef MIMIR_BENCH_H
#define MIMIR_BENCH_H

#include <stdlib.h>
#include <time.h>

static inline double bench_now_us(void)
{
	struct timespec t;
	clock_gettime(CLOCK_MONOTONIC, &t);
	return (double)t.tv_sec * 1e6 + (double)t.tv_nsec / 1e3;
}

static inline int bench_cmp_double(const void *a, const void *b)
{
	double x = *(const double *)a, y = *(const double *)b;
	return (x > y) - (x < y);
}

/* Sorts t in place and returns the q-quantile (0.5: median). */
static inline double bench_quantile(double *t, size_t n, double q)
{
	qsort(t, n, sizeof *t, bench_cmp_double);
	size_t i = (size_t)(q * (double)n);
	return t[i < n ? i : n - 1];
}

#endif
