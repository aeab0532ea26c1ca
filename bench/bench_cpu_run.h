/* The measurement of the CPU step benchmark: SGD baseline, FNGD collect-phase step and FNGD
 * reuse-phase step on the same data, interleaved, with warm-up, cache flush and medians. */
#ifndef FNGD_BENCH_CPU_RUN_H
#define FNGD_BENCH_CPU_RUN_H

#include "bench_cpu_cases.h"
#include "bench_cpu_timing.h"

typedef struct bench_settings {
    int warmup, repeats;
    int check_finite;     /* fngd config.check_finite (library default 1) */
    bench_flusher_t* flusher;
} bench_settings_t;

/* Medians in milliseconds over the timed repeats, and the medians of the paired ratios (each
 * FNGD step over the SGD step timed just before it), which cancel slow drifts in machine load
 * and are what the targets are checked against. */
typedef struct bench_stats {
    double sgd_ms, collect_ms, reuse_ms;
    double collect_ratio, reuse_ratio;
} bench_stats_t;

/* The same statistics from wall-clock time and from process CPU time. */
typedef struct bench_timing {
    bench_stats_t wall, cpu;
} bench_timing_t;

/* Per-layer inputs and output gradients of a case (random, fixed seed). */
typedef struct bench_data {
    float* input[BENCH_MAX_LAYERS];
    float* grad_output[BENCH_MAX_LAYERS];
} bench_data_t;

int bench_data_init(bench_data_t* d, const bench_case_t* c, unsigned long long seed);
void bench_data_free(bench_data_t* d);

/* Measure layers [first, first + count) of the case with one FNGD handle (per-layer
 * coefficients, FNGD_OUTPUT_APPLY_SGD) against the SGD baseline of the same layers.
 * methods (may be NULL) receives the Gram method libfngd chose per layer.
 * Returns 0 on success; prints the libfngd error otherwise. */
int bench_measure(const bench_case_t* c, const bench_data_t* d, int first, int count,
                  const bench_settings_t* s, bench_timing_t* out, fngd_gram_method_t* methods);

#endif
