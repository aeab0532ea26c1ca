/* layer_gram: argument and workspace checks, dispatch to the two exact methods for LINEAR and
 * CONV2D, and the materialising Gram of NORM_AFFINE and GENERIC layers (their per-sample
 * gradients are cheap or given, so K = G G^T with one SYRK). */
#include <cblas.h>

#include "cpu_internal.h"

/* Per-sample gradients of a norm affine layer, N x grad_len: [sum_t dy*xhat ; sum_t dy]. */
static void norm_per_sample(const fngd_layer_t* layer, const fngd_layer_batch_t* batch, int N,
                            float* G) {
    const int64_t C = layer->q, T = layer->T, len = layer->grad_len;
    const int bias = layer->n_bias > 0;
    const int last = layer->desc.channels_last;
    for (int i = 0; i < N; ++i) {
        const float* x = batch->input + (int64_t)i * C * T;
        const float* dy = batch->grad_output + (int64_t)i * C * T;
        for (int64_t c = 0; c < C; ++c) {
            double sg = 0.0, sb = 0.0;
            for (int64_t t = 0; t < T; ++t) {
                const int64_t k = last ? t * C + c : c * T + t;
                sg += (double)dy[k] * x[k];
                sb += dy[k];
            }
            G[i * len + c] = (float)sg;
            if (bias) G[i * len + C + c] = (float)sb;
        }
    }
}

/* K = alpha * G G^T (+ K when accumulate), both triangles. */
static void syrk_full(const float* G, int N, int len, int ldg, float alpha, float* K,
                      int accumulate) {
    cblas_ssyrk(CblasRowMajor, CblasUpper, CblasNoTrans, N, len, alpha, G, ldg,
                accumulate ? 1.0f : 0.0f, K, N);
    cpu_mirror_upper(K, N);
}

fngd_status_t cpu_layer_gram(fngd_backend_ctx_t* ctx, const fngd_layer_t* layer,
                             const fngd_layer_batch_t* batch, int N, float scale, float* K,
                             int accumulate, const fngd_call_t* call) {
    void* ws = call->ws;
    size_t ws_bytes = call->ws_bytes;
    fngd_err_t* err = call->err;
    FNGD_REQUIRE(err, ctx && layer && batch && K && N >= 1, FNGD_ERROR_INVALID_ARGUMENT,
                 "cpu layer_gram: null argument or N = %d < 1", N);
    FNGD_REQUIRE(err, batch->input && (layer->kind == FNGD_LAYER_GENERIC || batch->grad_output),
                 FNGD_ERROR_INVALID_ARGUMENT, "cpu layer_gram: batch input/grad_output is NULL");
    cpu_plan_t plan;
    FNGD_TRY(cpu_plan_gram(ctx, layer, N, layer->method, ws ? ws_bytes : 0, &plan, err));
    const float s2 = scale * scale;
    switch (layer->kind) {
    case FNGD_LAYER_LINEAR:
    case FNGD_LAYER_CONV2D:
        if (layer->method == FNGD_GRAM_POSITION)
            return cpu_gram_position(layer, batch, N, scale, K, accumulate, &plan, ws);
        return cpu_gram_materialize(layer, batch, N, scale, K, accumulate, &plan, ws);
    case FNGD_LAYER_NORM_AFFINE: {
        float* G = (float*)ws;
        norm_per_sample(layer, batch, N, G);
        syrk_full(G, N, (int)layer->grad_len, (int)layer->grad_len, s2, K, accumulate);
        return FNGD_SUCCESS;
    }
    case FNGD_LAYER_EMBEDDING:
        return cpu_embedding_gram(layer, batch, N, scale, K, accumulate, ws, err);
    case FNGD_LAYER_GENERIC:
        syrk_full(batch->input, N, (int)layer->grad_len, (int)layer->grad_len, s2, K,
                  accumulate);
        return FNGD_SUCCESS;
    }
    return FNGD_FAIL(err, FNGD_ERROR_INTERNAL, "cpu layer_gram: unknown layer kind %d",
                     (int)layer->kind);
}
