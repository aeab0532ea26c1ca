/* Timing helpers of the CPU step benchmark: a monotonic clock, medians, and a cache flush so
 * that every timed call starts from memory, as a training step does after the forward pass. */
#ifndef FNGD_BENCH_CPU_TIMING_H
#define FNGD_BENCH_CPU_TIMING_H

#include <stddef.h>

double bench_now_ms(void);
/* CPU time of the whole process (all threads, BLAS's included), in milliseconds. Unlike wall
 * time it does not count the time other processes hold the cores, which matters on a shared
 * machine; it does count BLAS threads that spin while waiting. */
double bench_cpu_ms(void);
/* Median of v[0..n) (v is reordered); NAN for n == 0. */
double bench_median(double* v, int n);

/* A buffer larger than the last-level cache; bench_flush writes it (returns 0 on success). */
typedef struct bench_flusher {
    float* buf;
    size_t n;
} bench_flusher_t;
int bench_flusher_init(bench_flusher_t* f, size_t bytes);
void bench_flush(bench_flusher_t* f);
void bench_flusher_free(bench_flusher_t* f);

#endif
