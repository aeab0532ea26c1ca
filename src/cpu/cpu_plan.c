/* Workspace plans: chunk sizes and the exact bytes each layer op carves from its workspace.
 * workspace_bytes and the ops call the same functions, so they can never disagree. */
#include <limits.h>

#include "cpu_internal.h"

/* Largest chunk in [1, max_chunk] with fixed + chunk * per_chunk <= budget (bytes). */
static int chunk_under_budget(size_t budget, size_t fixed, size_t per_chunk, int max_chunk) {
    if (per_chunk == 0 || budget <= fixed) return 1;
    size_t c = (budget - fixed) / per_chunk;
    if (c < 1) return 1;
    if (c > (size_t)max_chunk) return max_chunk;
    return (int)c;
}

static int fits_int(int64_t v) { return v >= 0 && v <= INT_MAX; }

fngd_status_t cpu_plan_gram(const fngd_backend_ctx_t* ctx, const fngd_layer_t* layer, int N,
                            fngd_gram_method_t method, cpu_plan_t* plan, fngd_err_t* err) {
    const int64_t T = layer->T, p = layer->p, pa = layer->pa, q = layer->q;
    const int bias = pa > p;
    const size_t budget = ctx->chunk_budget;
    plan->bytes = 0;
    plan->chunk = 1;
    switch (layer->kind) {
    case FNGD_LAYER_LINEAR:
    case FNGD_LAYER_CONV2D: {
        const int conv = layer->kind == FNGD_LAYER_CONV2D;
        if (method == FNGD_GRAM_MATERIALIZE) {
            /* One sample's patches and a ones vector (bias) plus P: N x (qc*pa). */
            size_t fixed = (conv ? cpu_ws_piece((size_t)(T * p)) : 0) +
                           (bias ? cpu_ws_piece((size_t)T) : 0);
            int qc = chunk_under_budget(budget, fixed, (size_t)N * pa * sizeof(float), (int)q);
            if (!fits_int((int64_t)qc * pa))
                return FNGD_FAIL(err, FNGD_ERROR_NOT_SUPPORTED,
                                 "cpu gram: per-sample gradient chunk %lld x %lld exceeds BLAS int",
                                 (long long)qc, (long long)pa);
            plan->chunk = qc;
            plan->bytes = fixed + cpu_ws_piece((size_t)N * qc * pa);
        } else if (method == FNGD_GRAM_POSITION) {
            /* All rows of A and E (conv: im2col and transposed grad_output), then S_A and S_E
             * for nb samples against all samples. */
            if (!fits_int((int64_t)N * T))
                return FNGD_FAIL(err, FNGD_ERROR_NOT_SUPPORTED,
                                 "cpu gram: N*T = %lld exceeds BLAS int", (long long)N * T);
            size_t fixed = conv ? cpu_ws_piece((size_t)(N * T * p)) +
                                      cpu_ws_piece((size_t)(N * T * q))
                                : 0;
            int nb = chunk_under_budget(budget, fixed, 2 * (size_t)(T * N * T) * sizeof(float),
                                        N);
            plan->chunk = nb;
            plan->bytes = fixed + 2 * cpu_ws_piece((size_t)nb * T * N * T);
        } else {
            return FNGD_FAIL(err, FNGD_ERROR_INTERNAL, "cpu gram: unresolved Gram method %d",
                             (int)method);
        }
        return FNGD_SUCCESS;
    }
    case FNGD_LAYER_NORM_AFFINE:
        plan->bytes = cpu_ws_piece((size_t)N * (size_t)layer->grad_len);
        return FNGD_SUCCESS;
    case FNGD_LAYER_GENERIC:
        if (!fits_int(layer->grad_len))
            return FNGD_FAIL(err, FNGD_ERROR_NOT_SUPPORTED,
                             "cpu gram: %lld generic parameters exceed BLAS int",
                             (long long)layer->grad_len);
        return FNGD_SUCCESS; /* SYRK straight on the caller's per-sample gradients */
    }
    return FNGD_FAIL(err, FNGD_ERROR_INTERNAL, "cpu gram: unknown layer kind %d",
                     (int)layer->kind);
}

fngd_status_t cpu_plan_reduce(const fngd_backend_ctx_t* ctx, const fngd_layer_t* layer, int N,
                              cpu_plan_t* plan, fngd_err_t* err) {
    const int64_t T = layer->T, p = layer->p, q = layer->q;
    const int bias = layer->pa > layer->p;
    plan->bytes = 0;
    plan->chunk = 1;
    switch (layer->kind) {
    case FNGD_LAYER_LINEAR:
    case FNGD_LAYER_CONV2D: {
        const int conv = layer->kind == FNGD_LAYER_CONV2D;
        if (!fits_int((int64_t)N * T))
            return FNGD_FAIL(err, FNGD_ERROR_NOT_SUPPORTED,
                             "cpu weighted_grad: N*T = %lld exceeds BLAS int", (long long)N * T);
        /* Per sample: T scaled rows of E (q), conv patches (p), ones for the bias sums. */
        size_t per = (size_t)T * ((size_t)q + (conv ? (size_t)p : 0) + (bias ? 1 : 0));
        int nb = chunk_under_budget(ctx->chunk_budget, 0, per * sizeof(float), N);
        plan->chunk = nb;
        plan->bytes = cpu_ws_piece((size_t)nb * T * q) +
                      (conv ? cpu_ws_piece((size_t)nb * T * p) : 0) +
                      (bias ? cpu_ws_piece((size_t)nb * T) : 0);
        return FNGD_SUCCESS;
    }
    case FNGD_LAYER_NORM_AFFINE:
        return FNGD_SUCCESS; /* direct loops */
    case FNGD_LAYER_GENERIC:
        if (!fits_int(layer->grad_len))
            return FNGD_FAIL(err, FNGD_ERROR_NOT_SUPPORTED,
                             "cpu weighted_grad: %lld generic parameters exceed BLAS int",
                             (long long)layer->grad_len);
        return FNGD_SUCCESS; /* one GEMV on the caller's per-sample gradients */
    }
    return FNGD_FAIL(err, FNGD_ERROR_INTERNAL, "cpu weighted_grad: unknown layer kind %d",
                     (int)layer->kind);
}
