/* Wall-clock timing and medians for the example's per-step timings. */
#ifndef FNGD_EX_TIME_H
#define FNGD_EX_TIME_H

#include <stdlib.h>
#include <string.h>
#include <time.h>

static inline double ex_now_ms(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec * 1e3 + (double)ts.tv_nsec * 1e-6;
}

static inline int ex_cmp_double(const void* a, const void* b) {
    double x = *(const double*)a, y = *(const double*)b;
    return (x > y) - (x < y);
}

/* Median of v[0..n) (v is reordered); 0 for n == 0. */
static inline double ex_median(double* v, int n) {
    if (n <= 0) return 0.0;
    qsort(v, (size_t)n, sizeof(double), ex_cmp_double);
    return n % 2 ? v[n / 2] : 0.5 * (v[n / 2 - 1] + v[n / 2]);
}

#endif
