/* Output of the CPU step benchmark: a readable table on stdout and a JSON file. */
#ifndef FNGD_BENCH_CPU_REPORT_H
#define FNGD_BENCH_CPU_REPORT_H

#include "bench_cpu_cases.h"
#include "bench_cpu_machine.h"
#include "bench_cpu_run.h"

/* Targets from the issue: a reuse-phase step within 10% of SGD, a collect step within 3x. */
#define BENCH_TARGET_REUSE 1.10
#define BENCH_TARGET_COLLECT 3.0

typedef struct bench_case_result {
    const bench_case_t* c;
    bench_timing_t all;                          /* all layers in one handle */
    int has_layers;                              /* per-layer breakdown measured */
    bench_timing_t layer[BENCH_MAX_LAYERS];      /* each layer alone in its own handle */
    fngd_gram_method_t method[BENCH_MAX_LAYERS]; /* Gram method chosen by libfngd */
} bench_case_result_t;

void bench_print_table(const bench_case_result_t* r);
/* Write every result and the machine description as JSON. Returns 0 on success. */
int bench_write_json(const char* path, const bench_machine_t* m, const bench_settings_t* s,
                     const bench_case_result_t* results, int nresults, double total_s);

#endif
