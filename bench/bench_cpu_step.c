/* fngd_bench_cpu: step time of libfngd's CPU backend against a plain SGD step.
 *
 * For the digits example's network and for ResNet-18 CIFAR layer shapes it measures, on the
 * same random layer inputs and output gradients:
 *   SGD      the plain weight gradients (im2col + one SGEMM per layer, OpenBLAS) + momentum;
 *   collect  fngd_step in the first epoch (Gram, Cholesky, coefficients, direction, update);
 *   reuse    fngd_step after fngd_end_epoch (stored coefficients, one weighted reduction).
 * SGD and FNGD steps alternate, each after a cache flush; medians over the repeats. Each case
 * is measured with all layers in one handle, then (the breakdown) each layer alone.
 *
 * Usage: fngd_bench_cpu [--json PATH] [--batch N] [--repeats R] [--warmup W]
 *                       [--case all|demo|resnet18] [--threads T] [--no-breakdown]
 *                       [--no-check-finite]
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cblas.h>

#include "bench_cpu_cases.h"
#include "bench_cpu_machine.h"
#include "bench_cpu_report.h"
#include "bench_cpu_run.h"
#include "bench_cpu_timing.h"

#ifndef FNGD_BENCH_RESULTS_DIR
#define FNGD_BENCH_RESULTS_DIR "bench/results"
#endif

typedef struct options {
    const char* json;
    int batch, demo_batch, repeats, warmup, breakdown, check_finite, threads;
    int run_demo, run_resnet;
} options_t;

static int parse(int argc, char** argv, options_t* o) {
    for (int i = 1; i < argc; ++i) {
        const char* a = argv[i];
        if (!strcmp(a, "--no-breakdown")) {
            o->breakdown = 0;
            continue;
        }
        if (!strcmp(a, "--no-check-finite")) {
            o->check_finite = 0;
            continue;
        }
        if (!strcmp(a, "--help") || !strcmp(a, "-h")) return 2;
        if (i + 1 >= argc) {
            fprintf(stderr, "option %s needs a value\n", a);
            return 1;
        }
        const char* v = argv[++i];
        char* end = NULL;
        if (!strcmp(a, "--json")) {
            o->json = v;
            continue;
        }
        if (!strcmp(a, "--case")) {
            o->run_demo = !strcmp(v, "all") || !strcmp(v, "demo");
            o->run_resnet = !strcmp(v, "all") || !strcmp(v, "resnet18");
            if (!o->run_demo && !o->run_resnet) {
                fprintf(stderr, "--case: all, demo or resnet18\n");
                return 1;
            }
            continue;
        }
        long x = strtol(v, &end, 10);
        if (!end || *end || end == v) {
            fprintf(stderr, "bad value for %s: %s\n", a, v);
            return 1;
        }
        if (!strcmp(a, "--batch")) o->batch = (int)x;
        else if (!strcmp(a, "--repeats")) o->repeats = (int)x;
        else if (!strcmp(a, "--warmup")) o->warmup = (int)x;
        else if (!strcmp(a, "--threads")) o->threads = (int)x;
        else {
            fprintf(stderr, "unknown option %s\n", a);
            return 1;
        }
    }
    if (o->batch < 1 || o->repeats < 1 || o->warmup < 0 || o->threads < 0) {
        fprintf(stderr, "need --batch >= 1, --repeats >= 1, --warmup >= 0, --threads >= 0\n");
        return 1;
    }
    return 0;
}

/* Measure one case: all layers together, then each layer alone. */
static int run_case(const bench_case_t* c, const bench_settings_t* settings, int breakdown,
                    bench_case_result_t* r) {
    bench_settings_t cs = *settings, *s = &cs;
    cs.repeats *= c->repeat_factor;
    bench_data_t d;
    if (bench_data_init(&d, c, 42)) {
        fprintf(stderr, "out of memory for case %s\n", c->name);
        return 1;
    }
    int rc = 1;
    r->c = c;
    r->has_layers = breakdown;
    fprintf(stderr, "[bench] %s: all %d layers...\n", c->name, c->nlayers);
    if (bench_measure(c, &d, 0, c->nlayers, s, &r->all, r->method)) goto done;
    for (int l = 0; breakdown && l < c->nlayers; ++l) {
        fprintf(stderr, "[bench] %s: layer %s...\n", c->name, c->layer_names[l]);
        if (bench_measure(c, &d, l, 1, s, &r->layer[l], NULL)) goto done;
    }
    rc = 0;
done:
    bench_data_free(&d);
    return rc;
}

int main(int argc, char** argv) {
    options_t o = {FNGD_BENCH_RESULTS_DIR "/cpu_step.json", 16, 64, 11, 2, 1, 1, 0, 1, 1};
    int pa = parse(argc, argv, &o);
    if (pa) {
        fprintf(pa == 2 ? stdout : stderr,
                "usage: fngd_bench_cpu [--json PATH] [--batch N (ResNet, default 16)] "
                "[--repeats R (11)] [--warmup W (2)] [--case all|demo|resnet18] "
                "[--threads T (BLAS threads; default OpenBLAS's)] [--no-breakdown] "
                "[--no-check-finite]\n");
        return pa == 2 ? 0 : 1;
    }
    setvbuf(stdout, NULL, _IOLBF, 0); /* keep the table and the stderr progress in order */
    if (o.threads > 0) openblas_set_num_threads(o.threads);
    bench_machine_t m;
    bench_machine_describe(&m);
    printf("fngd_bench_cpu: %s, %d logical CPUs, OpenBLAS %d threads (%s)\n", m.cpu_model,
           m.logical_cpus, m.blas_threads, m.blas_config);
    bench_flusher_t flusher;
    if (bench_flusher_init(&flusher, (size_t)64 << 20)) {
        fprintf(stderr, "out of memory\n");
        return 1;
    }
    bench_settings_t s = {o.warmup, o.repeats, o.check_finite, &flusher};
    printf("medians of %d repeats (demo: %d) after %d warm-up, 64 MiB cache flush before every "
           "timed call, check_finite %d; ratios are medians of paired FNGD/SGD ratios\n",
           o.repeats, 5 * o.repeats, o.warmup, o.check_finite);
    bench_case_t cases[2];
    bench_case_result_t results[2];
    int n = 0, rc = 0;
    if (o.run_demo) bench_case_demo(&cases[n++], o.demo_batch);
    if (o.run_resnet) bench_case_resnet18(&cases[n++], o.batch);
    double t0 = bench_now_ms();
    for (int k = 0; k < n && !rc; ++k) {
        rc = run_case(&cases[k], &s, o.breakdown, &results[k]);
        if (!rc) bench_print_table(&results[k]);
    }
    double total_s = (bench_now_ms() - t0) / 1e3;
    m.load_end = bench_load_average();
    printf("\n1-minute load average: %.2f before, %.2f after (%d logical CPUs; other work on "
           "the machine makes the timings noisier)\n", m.load_start, m.load_end, m.logical_cpus);
    if (!rc) {
        rc = bench_write_json(o.json, &m, &s, results, n, total_s);
        if (!rc) printf("\nwrote %s (%.1f s)\n", o.json, total_s);
    }
    bench_flusher_free(&flusher);
    return rc ? 1 : 0;
}
