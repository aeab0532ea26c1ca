/* weighted_grad: out = scale * sum_i alpha_i g_i as one reduction, never forming the g_i
 * (METHOD.md section 4, last part). LINEAR/CONV2D: scale the T rows of E_i by alpha_i*scale
 * (DE), then out_w = DE^T A (one GEMM over the rows of a sample chunk; one chunk unless the
 * workspace budget forces more; one per group of a grouped conv) and out_b = DE^T 1. NORM_AFFINE: direct sums. GENERIC:
 * out_w = scale * G^T alpha. */
#include <cblas.h>

#include "cpu_internal.h"

static void reduce_matmul(const fngd_layer_t* layer, const fngd_layer_batch_t* batch, int N,
                          const float* alpha, float scale, float* out_w, float* out_b,
                          const cpu_plan_t* plan, void* ws) {
    const int T = layer->T, p = layer->p, q = layer->q;
    const int G = layer->groups, qg = q / G, lda = layer->cols;
    const int bias = layer->pa > layer->p;
    const int conv = layer->kind == FNGD_LAYER_CONV2D;
    const int nb = plan->chunk;
    cpu_ws_t w = {(char*)ws};
    float* DE = cpu_ws_take(&w, (size_t)nb * T * q);
    float* Abuf = conv ? cpu_ws_take(&w, (size_t)nb * T * lda) : NULL;
    float* ones = bias ? cpu_ws_take(&w, (size_t)nb * T) : NULL;
    if (ones) cpu_fill(ones, (size_t)nb * T, 1.0f);

    for (int i0 = 0; i0 < N; i0 += nb) {
        const int nbi = N - i0 < nb ? N - i0 : nb;
        const int rows = nbi * T;
        const float* A;
        if (conv) {
            cpu_conv_rows(layer, batch->grad_output, i0, nbi, alpha + i0, scale, DE);
            cpu_im2col(layer, batch->input, i0, nbi, Abuf);
            A = Abuf;
        } else {
            const int64_t per = (int64_t)T * q;
            for (int ii = 0; ii < nbi; ++ii) {
                const float s = alpha[i0 + ii] * scale;
                const float* e = batch->grad_output + (int64_t)(i0 + ii) * per;
                float* d = DE + ii * per;
                for (int64_t k = 0; k < per; ++k) d[k] = s * e[k];
            }
            A = batch->input + (int64_t)i0 * T * p;
        }
        const float beta = i0 == 0 ? 0.0f : 1.0f;
        /* group g: out_w rows g*qg.. = DE columns g*qg.. ^T times A columns g*p.. */
        for (int g = 0; g < G; ++g)
            cblas_sgemm(CblasRowMajor, CblasTrans, CblasNoTrans, qg, p, rows, 1.0f,
                        DE + (int64_t)g * qg, q, A + (int64_t)g * p, lda, beta,
                        out_w + (int64_t)g * qg * p, p);
        if (bias)
            cblas_sgemv(CblasRowMajor, CblasTrans, rows, q, 1.0f, DE, q, ones, 1, beta, out_b, 1);
    }
}

static void reduce_norm(const fngd_layer_t* layer, const fngd_layer_batch_t* batch, int N,
                        const float* alpha, float scale, float* out_w, float* out_b) {
    const int64_t C = layer->q, T = layer->T;
    const int last = layer->desc.channels_last;
    for (int64_t c = 0; c < C; ++c) {
        double sg = 0.0, sb = 0.0;
        for (int i = 0; i < N; ++i) {
            const float* x = batch->input + (int64_t)i * C * T;
            const float* dy = batch->grad_output + (int64_t)i * C * T;
            double g = 0.0, b = 0.0;
            for (int64_t t = 0; t < T; ++t) {
                const int64_t k = last ? t * C + c : c * T + t;
                g += (double)dy[k] * x[k];
                b += dy[k];
            }
            sg += (double)alpha[i] * g;
            sb += (double)alpha[i] * b;
        }
        out_w[c] = (float)(scale * sg);
        if (out_b) out_b[c] = (float)(scale * sb);
    }
}

fngd_status_t cpu_weighted_grad(fngd_backend_ctx_t* ctx, const fngd_layer_t* layer,
                                const fngd_layer_batch_t* batch, int N, const float* alpha,
                                float scale, float* out_w, float* out_b, const fngd_call_t* call) {
    void* ws = call->ws;
    size_t ws_bytes = call->ws_bytes;
    fngd_err_t* err = call->err;
    FNGD_REQUIRE(err, ctx && layer && batch && alpha && out_w && N >= 1,
                 FNGD_ERROR_INVALID_ARGUMENT, "cpu weighted_grad: null argument or N = %d < 1", N);
    FNGD_REQUIRE(err, batch->input && (layer->kind == FNGD_LAYER_GENERIC || batch->grad_output),
                 FNGD_ERROR_INVALID_ARGUMENT, "cpu weighted_grad: batch input/grad_output is NULL");
    FNGD_REQUIRE(err, layer->n_bias == 0 || out_b, FNGD_ERROR_INVALID_ARGUMENT,
                 "cpu weighted_grad: layer has a bias but out_b is NULL");
    cpu_plan_t plan;
    FNGD_TRY(cpu_plan_reduce(ctx, layer, N, ws ? ws_bytes : 0, &plan, err));
    switch (layer->kind) {
    case FNGD_LAYER_LINEAR:
    case FNGD_LAYER_CONV2D:
        reduce_matmul(layer, batch, N, alpha, scale, out_w, out_b, &plan, ws);
        return FNGD_SUCCESS;
    case FNGD_LAYER_NORM_AFFINE:
        reduce_norm(layer, batch, N, alpha, scale, out_w, layer->n_bias ? out_b : NULL);
        return FNGD_SUCCESS;
    case FNGD_LAYER_EMBEDDING:
        return cpu_embedding_reduce(layer, batch, N, alpha, scale, out_w, err);
    case FNGD_LAYER_GENERIC: {
        const int len = (int)layer->grad_len;
        cblas_sgemv(CblasRowMajor, CblasTrans, N, len, scale, batch->input, len, alpha, 1, 0.0f,
                    out_w, 1);
        return FNGD_SUCCESS;
    }
    }
    return FNGD_FAIL(err, FNGD_ERROR_INTERNAL, "cpu weighted_grad: unknown layer kind %d",
                     (int)layer->kind);
}
