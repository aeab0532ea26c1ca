#include "bench_cpu_sgd.h"

#include <cblas.h>

#include "cpu_internal.h"
#include <stdlib.h>
#include <string.h>

static int conv_out(int in, int k, int pad, int stride, int dil) {
    return (in + 2 * pad - dil * (k - 1) - 1) / stride + 1;
}

int64_t bench_layer_in_floats(const fngd_layer_desc_t* d) {
    if (d->kind == FNGD_LAYER_CONV2D) return (int64_t)d->in_channels * d->in_h * d->in_w;
    return (int64_t)d->positions * d->in_features;
}

int64_t bench_layer_out_floats(const fngd_layer_desc_t* d) {
    if (d->kind == FNGD_LAYER_CONV2D)
        return (int64_t)d->out_channels *
               conv_out(d->in_h, d->kernel_h, d->pad_h, d->stride_h, d->dilation_h) *
               conv_out(d->in_w, d->kernel_w, d->pad_w, d->stride_w, d->dilation_w);
    return (int64_t)d->positions * d->out_features;
}

int bench_sgd_init(bench_sgd_t* s, const fngd_layer_desc_t* d, int N) {
    memset(s, 0, sizeof(*s));
    s->desc = *d;
    s->N = N;
    char msg[256];
    if (fngd_layer_init(&s->layer, d, msg, sizeof msg) != FNGD_SUCCESS) return 1;
    if (d->kind == FNGD_LAYER_CONV2D) {
        s->out_h = conv_out(d->in_h, d->kernel_h, d->pad_h, d->stride_h, d->dilation_h);
        s->out_w = conv_out(d->in_w, d->kernel_w, d->pad_w, d->stride_w, d->dilation_w);
        s->T = s->out_h * s->out_w;
        s->p = d->in_channels * d->kernel_h * d->kernel_w;
        s->q = d->out_channels;
    } else if (d->kind == FNGD_LAYER_LINEAR) {
        s->T = d->positions;
        s->p = d->in_features;
        s->q = d->out_features;
    } else {
        return 1;
    }
    size_t rows = (size_t)N * s->T, pq = (size_t)s->p * s->q;
    int conv = d->kind == FNGD_LAYER_CONV2D;
    s->col = conv ? malloc(rows * s->p * sizeof(float)) : NULL;
    s->erows = conv ? malloc(rows * s->q * sizeof(float)) : NULL;
    s->ones = malloc(rows * sizeof(float));
    s->weight = calloc(pq, sizeof(float));
    s->grad_w = calloc(pq, sizeof(float));
    s->mom_w = calloc(pq, sizeof(float));
    s->bias = calloc((size_t)s->q, sizeof(float));
    s->grad_b = calloc((size_t)s->q, sizeof(float));
    s->mom_b = calloc((size_t)s->q, sizeof(float));
    if ((conv && (!s->col || !s->erows)) || !s->ones || !s->weight || !s->grad_w || !s->mom_w ||
        !s->bias || !s->grad_b || !s->mom_b) {
        bench_sgd_free(s);
        return 1;
    }
    for (size_t k = 0; k < rows; ++k) s->ones[k] = 1.0f;
    return 0;
}

static void momentum_update(float* w, float* m, const float* g, size_t n, float lr, float mu) {
    for (size_t k = 0; k < n; ++k) {
        m[k] = mu * m[k] + g[k];
        w[k] -= lr * m[k];
    }
}

void bench_sgd_step(bench_sgd_t* s, const float* input, const float* grad_output, float lr,
                    float momentum) {
    const int rows = s->N * s->T;
    const float *A = input, *E = grad_output;
    if (s->desc.kind == FNGD_LAYER_CONV2D) {
        cpu_im2col(&s->layer, input, 0, s->N, s->col);
        cpu_conv_rows(&s->layer, grad_output, 0, s->N, NULL, 1.0f, s->erows);
        A = s->col;
        E = s->erows;
    }
    /* grad_W (q x p) = E^T A over all rows; grad_b = E^T 1. */
    cblas_sgemm(CblasRowMajor, CblasTrans, CblasNoTrans, s->q, s->p, rows, 1.0f, E, s->q, A, s->p,
                0.0f, s->grad_w, s->p);
    momentum_update(s->weight, s->mom_w, s->grad_w, (size_t)s->p * s->q, lr, momentum);
    if (s->desc.has_bias) {
        cblas_sgemv(CblasRowMajor, CblasTrans, rows, s->q, 1.0f, E, s->q, s->ones, 1, 0.0f,
                    s->grad_b, 1);
        momentum_update(s->bias, s->mom_b, s->grad_b, (size_t)s->q, lr, momentum);
    }
}

void bench_sgd_free(bench_sgd_t* s) {
    float* bufs[] = {s->col, s->erows, s->ones, s->weight, s->bias,
                     s->grad_w, s->grad_b, s->mom_w, s->mom_b};
    for (size_t k = 0; k < sizeof(bufs) / sizeof(bufs[0]); ++k) free(bufs[k]);
    memset(s, 0, sizeof(*s));
}
