#include "bench_cpu_run.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "bench_cpu_sgd.h"

static unsigned long long lcg(unsigned long long* s) {
    *s = *s * 6364136223846793005ull + 1442695040888963407ull;
    return *s >> 33;
}

int bench_data_init(bench_data_t* d, const bench_case_t* c, unsigned long long seed) {
    memset(d, 0, sizeof(*d));
    unsigned long long s = seed;
    for (int l = 0; l < c->nlayers; ++l) {
        size_t ni = (size_t)c->N * bench_layer_in_floats(&c->descs[l]);
        size_t no = (size_t)c->N * bench_layer_out_floats(&c->descs[l]);
        d->input[l] = malloc(ni * sizeof(float));
        d->grad_output[l] = malloc(no * sizeof(float));
        if (!d->input[l] || !d->grad_output[l]) {
            bench_data_free(d);
            return 1;
        }
        /* Inputs like post-ReLU activations in [0, 1); output gradients of a mean loss,
         * symmetric and of order 1/N. The values do not change the work done. */
        for (size_t k = 0; k < ni; ++k) d->input[l][k] = (float)(lcg(&s) & 0xffffff) / 16777216.0f;
        for (size_t k = 0; k < no; ++k)
            d->grad_output[l][k] =
                ((float)(lcg(&s) & 0xffffff) / 16777216.0f - 0.5f) / (float)c->N;
    }
    return 0;
}

void bench_data_free(bench_data_t* d) {
    for (int l = 0; l < BENCH_MAX_LAYERS; ++l) {
        free(d->input[l]);
        free(d->grad_output[l]);
    }
    memset(d, 0, sizeof(*d));
}

/* Parameter buffers libfngd borrows (APPLY_SGD updates them in place). */
typedef struct fngd_bufs {
    float *weight, *bias;
} fngd_bufs_t;

static int fail(fngd_status_t st, fngd_handle_t h, const char* what) {
    if (st == FNGD_SUCCESS) return 0;
    fprintf(stderr, "%s: %s: %s\n", what, fngd_status_string(st), fngd_get_last_error(h));
    return 1;
}

static int create_handle(const bench_case_t* c, int first, int count, const bench_settings_t* s,
                         fngd_bufs_t* bufs, fngd_handle_t* h) {
    fngd_config_t cfg;
    fngd_config_init(&cfg);
    cfg.backend = FNGD_BACKEND_CPU;
    cfg.max_batch = c->N;
    cfg.num_samples = (int64_t)(s->warmup + s->repeats) * c->N; /* distinct ids per repeat */
    cfg.output = FNGD_OUTPUT_APPLY_SGD;
    cfg.learning_rate = 1e-4f;
    cfg.momentum = 0.9f;
    cfg.check_finite = s->check_finite;
    if (fail(fngd_create(&cfg, h), NULL, "fngd_create")) return 1;
    for (int l = 0; l < count; ++l) {
        fngd_layer_desc_t d = c->descs[first + l];
        const int conv = d.kind == FNGD_LAYER_CONV2D;
        const size_t q = (size_t)(conv ? d.out_channels : d.out_features);
        const size_t nw = q * (conv ? (size_t)d.in_channels * d.kernel_h * d.kernel_w
                                    : (size_t)d.in_features);
        bufs[l].weight = calloc(nw, sizeof(float));
        bufs[l].bias = d.has_bias ? calloc(q, sizeof(float)) : NULL;
        if (!bufs[l].weight || (d.has_bias && !bufs[l].bias)) {
            fprintf(stderr, "out of memory\n");
            return 1;
        }
        /* No grad buffers: with them libfngd would also copy the direction out, work the
         * SGD baseline does not do. */
        d.weight = bufs[l].weight;
        d.bias = bufs[l].bias;
        if (fail(fngd_add_layer(*h, &d, NULL), *h, "fngd_add_layer")) return 1;
    }
    return fail(fngd_prepare(*h), *h, "fngd_prepare");
}

/* Wall and process CPU time of one call, in ms. */
typedef struct sample {
    double wall, cpu;
} sample_t;

/* One timed SGD step over the layers (all layer baselines, flushed cache first). */
static sample_t time_sgd(bench_sgd_t* sgd, const bench_data_t* d, int first, int count,
                         const bench_settings_t* s) {
    bench_flush(s->flusher);
    double w0 = bench_now_ms(), c0 = bench_cpu_ms();
    for (int l = 0; l < count; ++l)
        bench_sgd_step(&sgd[l], d->input[first + l], d->grad_output[first + l], 1e-4f, 0.9f);
    sample_t t = {bench_now_ms() - w0, bench_cpu_ms() - c0};
    return t;
}

static int time_fngd(fngd_handle_t h, const fngd_layer_batch_t* lb, int N, int64_t* ids, int r,
                     const bench_settings_t* s, sample_t* t) {
    for (int i = 0; i < N; ++i) ids[i] = (int64_t)r * N + i;
    bench_flush(s->flusher);
    double w0 = bench_now_ms(), c0 = bench_cpu_ms();
    fngd_status_t st = fngd_step(h, N, ids, lb, NULL, NULL);
    t->wall = bench_now_ms() - w0;
    t->cpu = bench_cpu_ms() - c0;
    return fail(st, h, "fngd_step");
}

/* Statistics of one clock (cpu = 0: wall, 1: CPU) over the timed repeats [w, w + R).
 * sgd[0, total) precede the collect steps, sgd[total, 2 total) the reuse steps. */
static void summarise(const sample_t* sgd, const sample_t* col, const sample_t* reu, int total,
                      int w, int R, int cpu, double* tmp, bench_stats_t* out) {
#define PICK(x) (cpu ? (x).cpu : (x).wall)
    for (int r = 0; r < R; ++r) tmp[r] = PICK(col[w + r]) / PICK(sgd[w + r]);
    out->collect_ratio = bench_median(tmp, R);
    for (int r = 0; r < R; ++r) tmp[r] = PICK(reu[w + r]) / PICK(sgd[total + w + r]);
    out->reuse_ratio = bench_median(tmp, R);
    for (int r = 0; r < R; ++r) tmp[r] = PICK(col[w + r]);
    out->collect_ms = bench_median(tmp, R);
    for (int r = 0; r < R; ++r) tmp[r] = PICK(reu[w + r]);
    out->reuse_ms = bench_median(tmp, R);
    for (int r = 0; r < R; ++r) {
        tmp[r] = PICK(sgd[w + r]);
        tmp[R + r] = PICK(sgd[total + w + r]);
    }
    out->sgd_ms = bench_median(tmp, 2 * R);
#undef PICK
}

int bench_measure(const bench_case_t* c, const bench_data_t* d, int first, int count,
                  const bench_settings_t* s, bench_timing_t* out, fngd_gram_method_t* methods) {
    const int N = c->N, total = s->warmup + s->repeats;
    int rc = 1;
    bench_sgd_t sgd[BENCH_MAX_LAYERS];
    fngd_bufs_t bufs[BENCH_MAX_LAYERS];
    fngd_layer_batch_t lb[BENCH_MAX_LAYERS];
    fngd_handle_t h = NULL;
    memset(sgd, 0, sizeof(sgd));
    memset(bufs, 0, sizeof(bufs));
    /* t_sgd: [0, total) SGD before each collect step, [total, 2 total) before each reuse. */
    sample_t* t_sgd = calloc((size_t)2 * total, sizeof(sample_t));
    sample_t* t_col = calloc((size_t)total, sizeof(sample_t));
    sample_t* t_reu = calloc((size_t)total, sizeof(sample_t));
    double* tmp = calloc((size_t)2 * total, sizeof(double));
    int64_t* ids = calloc((size_t)N, sizeof(int64_t));
    if (!t_sgd || !t_col || !t_reu || !tmp || !ids) {
        fprintf(stderr, "out of memory\n");
        goto done;
    }
    for (int l = 0; l < count; ++l) {
        if (bench_sgd_init(&sgd[l], &c->descs[first + l], N)) {
            fprintf(stderr, "out of memory (SGD baseline)\n");
            goto done;
        }
        lb[l].input = d->input[first + l];
        lb[l].grad_output = d->grad_output[first + l];
    }
    if (create_handle(c, first, count, s, bufs, &h)) goto done;
    for (int l = 0; methods && l < count; ++l)
        if (fail(fngd_get_layer_gram_method(h, l, &methods[l]), h, "fngd_get_layer_gram_method"))
            goto done;
    /* Epoch one: SGD and collect steps alternate so that both see the same machine state. */
    for (int r = 0; r < total; ++r) {
        t_sgd[r] = time_sgd(sgd, d, first, count, s);
        if (time_fngd(h, lb, N, ids, r, s, &t_col[r])) goto done;
    }
    if (fail(fngd_end_epoch(h, NULL), h, "fngd_end_epoch")) goto done;
    /* Epoch two: the same ids, now reused. */
    for (int r = 0; r < total; ++r) {
        t_sgd[total + r] = time_sgd(sgd, d, first, count, s);
        if (time_fngd(h, lb, N, ids, r, s, &t_reu[r])) goto done;
    }
    summarise(t_sgd, t_col, t_reu, total, s->warmup, s->repeats, 0, tmp, &out->wall);
    summarise(t_sgd, t_col, t_reu, total, s->warmup, s->repeats, 1, tmp, &out->cpu);
    rc = 0;
done:
    fngd_destroy(h);
    for (int l = 0; l < BENCH_MAX_LAYERS; ++l) {
        bench_sgd_free(&sgd[l]);
        free(bufs[l].weight);
        free(bufs[l].bias);
    }
    free(t_sgd);
    free(t_col);
    free(t_reu);
    free(tmp);
    free(ids);
    return rc;
}
