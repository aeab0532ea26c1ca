#include "digits_net.h"

#include <cblas.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "ex_rng.h"

enum {
    OFF_W1 = 0,
    OFF_B1 = OFF_W1 + NET_CONV_OUT * NET_KK,
    OFF_W2 = OFF_B1 + NET_CONV_OUT,
    OFF_B2 = OFF_W2 + NET_H2 * NET_H1,
    OFF_W3 = OFF_B2 + NET_H2,
    OFF_B3 = OFF_W3 + NET_OUT * NET_H2,
    N_PARAMS = OFF_B3 + NET_OUT
};

static void set_views(net_t* n) {
    n->w1 = n->params + OFF_W1;
    n->b1 = n->params + OFF_B1;
    n->w2 = n->params + OFF_W2;
    n->b2 = n->params + OFF_B2;
    n->w3 = n->params + OFF_W3;
    n->b3 = n->params + OFF_B3;
    n->gw1 = n->grads + OFF_W1;
    n->gb1 = n->grads + OFF_B1;
    n->gw2 = n->grads + OFF_W2;
    n->gb2 = n->grads + OFF_B2;
    n->gw3 = n->grads + OFF_W3;
    n->gb3 = n->grads + OFF_B3;
}

int net_create(net_t* n, int max_batch) {
    memset(n, 0, sizeof(*n));
    n->max_batch = max_batch;
    n->n_params = N_PARAMS;
    size_t B = (size_t)max_batch;
    n->params = calloc(N_PARAMS, sizeof(float));
    n->grads = calloc(N_PARAMS, sizeof(float));
    n->mom = calloc(N_PARAMS, sizeof(float));
    n->col = calloc(B * NET_KK * NET_POS, sizeof(float));
    n->z1 = calloc(B * NET_H1, sizeof(float));
    n->a1 = calloc(B * NET_H1, sizeof(float));
    n->z2 = calloc(B * NET_H2, sizeof(float));
    n->a2 = calloc(B * NET_H2, sizeof(float));
    n->logits = calloc(B * NET_OUT, sizeof(float));
    n->dz1 = calloc(B * NET_H1, sizeof(float));
    n->dz2 = calloc(B * NET_H2, sizeof(float));
    n->dlogits = calloc(B * NET_OUT, sizeof(float));
    if (!n->params || !n->grads || !n->mom || !n->col || !n->z1 || !n->a1 || !n->z2 ||
        !n->a2 || !n->logits || !n->dz1 || !n->dz2 || !n->dlogits) {
        net_destroy(n);
        return 1;
    }
    set_views(n);
    return 0;
}

void net_destroy(net_t* n) {
    float* bufs[] = {n->params, n->grads, n->mom, n->col, n->z1, n->a1, n->z2,
                     n->a2, n->logits, n->dz1, n->dz2, n->dlogits};
    for (size_t i = 0; i < sizeof(bufs) / sizeof(bufs[0]); ++i) free(bufs[i]);
    memset(n, 0, sizeof(*n));
}

/* Uniform in [-b, b] with b = sqrt(6 / fan_in) (He init for ReLU layers). */
static void he_uniform(ex_rng_t* r, float* w, int count, int fan_in) {
    float b = sqrtf(6.0f / (float)fan_in);
    for (int i = 0; i < count; ++i) w[i] = (2.0f * ex_rng_uniform(r) - 1.0f) * b;
}

void net_init(net_t* n, uint64_t seed) {
    ex_rng_t r = {seed};
    memset(n->params, 0, N_PARAMS * sizeof(float));
    memset(n->mom, 0, N_PARAMS * sizeof(float));
    he_uniform(&r, n->w1, NET_CONV_OUT * NET_KK, NET_KK);
    he_uniform(&r, n->w2, NET_H2 * NET_H1, NET_H1);
    he_uniform(&r, n->w3, NET_OUT * NET_H2, NET_H2);
}

void net_copy(net_t* dst, const net_t* src) {
    memcpy(dst->params, src->params, N_PARAMS * sizeof(float));
    memcpy(dst->mom, src->mom, N_PARAMS * sizeof(float));
}

/* col[i][k][t]: pixel under kernel tap k = ki*3 + kj at output position t, zero padding 1. */
static void im2col(const float* x, float* col, int N) {
    for (int i = 0; i < N; ++i) {
        const float* xi = x + (size_t)i * NET_POS;
        float* ci = col + (size_t)i * NET_KK * NET_POS;
        for (int ki = 0; ki < 3; ++ki)
            for (int kj = 0; kj < 3; ++kj)
                for (int oh = 0; oh < NET_HW; ++oh)
                    for (int ow = 0; ow < NET_HW; ++ow) {
                        int ih = oh + ki - 1, iw = ow + kj - 1;
                        int in = ih >= 0 && ih < NET_HW && iw >= 0 && iw < NET_HW;
                        ci[(ki * 3 + kj) * NET_POS + oh * NET_HW + ow] =
                            in ? xi[ih * NET_HW + iw] : 0.0f;
                    }
    }
}

static void relu(const float* restrict z, float* restrict a, size_t n) {
    for (size_t k = 0; k < n; ++k) a[k] = z[k] > 0.0f ? z[k] : 0.0f;
}

/* y (N x out) = x (N x in) W^T + b */
static void linear_forward(const float* x, const float* W, const float* b, float* y, int N,
                           int in, int out) {
    for (int i = 0; i < N; ++i) memcpy(y + (size_t)i * out, b, (size_t)out * sizeof(float));
    cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, N, out, in, 1.0f, x, in, W, in, 1.0f,
                y, out);
}

double net_forward(net_t* n, const float* x, const int* y, int N, int* correct) {
    n->x = x;
    im2col(x, n->col, N);
    for (int i = 0; i < N; ++i) {
        /* z1_i (8 x 64) = W1 (8 x 9) col_i (9 x 64) + b1 */
        float* zi = n->z1 + (size_t)i * NET_H1;
        const float* ci = n->col + (size_t)i * NET_KK * NET_POS;
        for (int c = 0; c < NET_CONV_OUT; ++c) {
            float* zc = zi + c * NET_POS;
            for (int t = 0; t < NET_POS; ++t) zc[t] = n->b1[c];
            for (int k = 0; k < NET_KK; ++k) {
                float w = n->w1[c * NET_KK + k];
                const float* ck = ci + k * NET_POS;
                for (int t = 0; t < NET_POS; ++t) zc[t] += w * ck[t];
            }
        }
    }
    relu(n->z1, n->a1, (size_t)N * NET_H1);
    linear_forward(n->a1, n->w2, n->b2, n->z2, N, NET_H1, NET_H2);
    relu(n->z2, n->a2, (size_t)N * NET_H2);
    linear_forward(n->a2, n->w3, n->b3, n->logits, N, NET_H2, NET_OUT);
    /* Softmax in place, loss from the log-sum-exp for stability. */
    double loss = 0.0;
    int right = 0;
    for (int i = 0; i < N; ++i) {
        float* li = n->logits + (size_t)i * NET_OUT;
        int arg = 0;
        for (int k = 1; k < NET_OUT; ++k)
            if (li[k] > li[arg]) arg = k;
        float mx = li[arg], sum = 0.0f;
        for (int k = 0; k < NET_OUT; ++k) sum += expf(li[k] - mx);
        if (y) loss += (double)(logf(sum) - (li[y[i]] - mx));
        for (int k = 0; k < NET_OUT; ++k) li[k] = expf(li[k] - mx) / sum;
        if (y && arg == y[i]) ++right;
    }
    if (correct) *correct = right;
    return loss;
}

/* dz *= relu'(z). Separate pointers (not reloaded from the struct) so the loop vectorises. */
static void relu_mask(const float* restrict z, float* restrict dz, size_t n) {
    for (size_t k = 0; k < n; ++k) dz[k] = z[k] > 0.0f ? dz[k] : 0.0f;
}

void net_backward(net_t* n, const int* y, int N) {
    float inv = 1.0f / (float)N;
    for (int i = 0; i < N; ++i)
        for (int k = 0; k < NET_OUT; ++k)
            n->dlogits[i * NET_OUT + k] =
                (n->logits[i * NET_OUT + k] - (k == y[i] ? 1.0f : 0.0f)) * inv;
    /* dz2 = (dlogits W3) * relu'(z2) */
    cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasNoTrans, N, NET_H2, NET_OUT, 1.0f, n->dlogits,
                NET_OUT, n->w3, NET_H2, 0.0f, n->dz2, NET_H2);
    relu_mask(n->z2, n->dz2, (size_t)N * NET_H2);
    /* dz1 = (dz2 W2) * relu'(z1) */
    cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasNoTrans, N, NET_H1, NET_H2, 1.0f, n->dz2,
                NET_H2, n->w2, NET_H1, 0.0f, n->dz1, NET_H1);
    relu_mask(n->z1, n->dz1, (size_t)N * NET_H1);
}

/* gW (out x in) = dy^T x, gb = column sums of dy. */
static void linear_weight_grad(const float* x, const float* dy, float* gW, float* gb, int N,
                               int in, int out) {
    cblas_sgemm(CblasRowMajor, CblasTrans, CblasNoTrans, out, in, N, 1.0f, dy, out, x, in, 0.0f,
                gW, in);
    for (int o = 0; o < out; ++o) gb[o] = 0.0f;
    for (int i = 0; i < N; ++i)
        for (int o = 0; o < out; ++o) gb[o] += dy[(size_t)i * out + o];
}

void net_weight_grads(net_t* n, int N) {
    linear_weight_grad(n->a2, n->dlogits, n->gw3, n->gb3, N, NET_H2, NET_OUT);
    linear_weight_grad(n->a1, n->dz2, n->gw2, n->gb2, N, NET_H1, NET_H2);
    /* gW1[c][k] = sum_i sum_t dz1[i][c][t] col[i][k][t]: one GEMM per sample, accumulated. */
    memset(n->gw1, 0, NET_CONV_OUT * NET_KK * sizeof(float));
    memset(n->gb1, 0, NET_CONV_OUT * sizeof(float));
    for (int i = 0; i < N; ++i) {
        const float* di = n->dz1 + (size_t)i * NET_H1;
        cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, NET_CONV_OUT, NET_KK, NET_POS, 1.0f,
                    di, NET_POS, n->col + (size_t)i * NET_KK * NET_POS, NET_POS, 1.0f, n->gw1,
                    NET_KK);
        for (int c = 0; c < NET_CONV_OUT; ++c)
            for (int t = 0; t < NET_POS; ++t) n->gb1[c] += di[c * NET_POS + t];
    }
}

void net_sgd_update(net_t* n, float lr, float momentum) {
    for (int64_t k = 0; k < n->n_params; ++k) {
        n->mom[k] = momentum * n->mom[k] + n->grads[k];
        n->params[k] -= lr * n->mom[k];
    }
}
