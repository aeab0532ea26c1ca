#include "bench_cpu_timing.h"

#include <math.h>
#include <stdlib.h>
#include <time.h>

double bench_now_ms(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec * 1e3 + (double)ts.tv_nsec * 1e-6;
}

double bench_cpu_ms(void) {
    struct timespec ts;
    clock_gettime(CLOCK_PROCESS_CPUTIME_ID, &ts);
    return (double)ts.tv_sec * 1e3 + (double)ts.tv_nsec * 1e-6;
}

static int cmp_double(const void* a, const void* b) {
    double x = *(const double*)a, y = *(const double*)b;
    return (x > y) - (x < y);
}

double bench_median(double* v, int n) {
    if (n <= 0) return NAN;
    qsort(v, (size_t)n, sizeof(double), cmp_double);
    return n % 2 ? v[n / 2] : 0.5 * (v[n / 2 - 1] + v[n / 2]);
}

int bench_flusher_init(bench_flusher_t* f, size_t bytes) {
    f->n = bytes / sizeof(float);
    f->buf = calloc(f->n ? f->n : 1, sizeof(float));
    return f->buf ? 0 : 1;
}

void bench_flush(bench_flusher_t* f) {
    /* Read-modify-write so the compiler cannot drop it and the lines end up dirty elsewhere. */
    volatile float* b = f->buf;
    for (size_t k = 0; k < f->n; k += 16) b[k] += 1.0f;
}

void bench_flusher_free(bench_flusher_t* f) {
    free(f->buf);
    f->buf = NULL;
    f->n = 0;
}
