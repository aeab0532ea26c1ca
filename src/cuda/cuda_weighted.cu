/* Direction of one layer in the reuse phase: scale * sum_i alpha_i g_i as one reduction
 * (METHOD.md section 4, last part). For linear and conv layers the per-sample weights and the
 * scale are folded into the staging of E (transpose-scale kernel), leaving exactly the
 * weight-gradient GEMM  out_w^T (p x q) = A^T (p x NT) * (D E) (NT x q). */
#include "cuda_layer_params.h"
#include "cuda_plan.h"
#include "kernels/stage_grad.cuh"

namespace {
/* out_b[o] = scale * sum_i alpha_i sum_t E_i[t, o], straight from grad_output. */
fngd_status_t weighted_bias(const fngd_layer_t* L, const float* go, int N, const float* alpha,
                            float scale, float* out_b, cudaStream_t s, fngd_err_t* err)
{
    fngd_norm_grads_params B = fngd_cuda_norm_params(L, nullptr, go, N);
    B.alpha = alpha;
    B.scale = scale;
    B.out_b = out_b;
    B.weighted = 1;
    FNGD_CUDA_TRY(err, fngd_launch_norm_grads(B, s));
    return FNGD_SUCCESS;
}
}  // namespace

fngd_status_t fngd_cuda_weighted_grad(fngd_backend_ctx_t* ctx, const fngd_layer_t* layer,
                                      const fngd_layer_batch_t* batch, int N, const float* alpha,
                                      float scale, float* out_w, float* out_b, void* ws,
                                      size_t ws_bytes, fngd_stream_t stream, fngd_err_t* err)
{
    fngd_nvtx_range r("reduce");
    FNGD_REQUIRE(err, N > 0, FNGD_ERROR_INVALID_ARGUMENT, "weighted_grad: N = %d", N);
    const cudaStream_t s = fngd_cuda_stream(stream);
    fngd_cuda_device_guard dev;
    FNGD_TRY(dev.enter(ctx->device, err));
    FNGD_TRY(fngd_cuda_bind(ctx, s, err));
    const fngd_layer_t* L = layer;

    switch (L->kind) {
    case FNGD_LAYER_LINEAR:
    case FNGD_LAYER_CONV2D: {
        fngd_weighted_plan plan = fngd_cuda_plan_weighted(L, N, ws_bytes);
        if (plan.bytes > ws_bytes) plan = fngd_cuda_plan_weighted(L, N, FNGD_CUDA_WS_TARGET);
        FNGD_REQUIRE(err, plan.bytes <= ws_bytes && ws != NULL, FNGD_ERROR_INTERNAL,
                     "weighted_grad: workspace of %zu bytes, %zu needed", ws_bytes, plan.bytes);
        size_t used = 0;
        const fngd_weighted_buffers B = fngd_cuda_weighted_buffers(L, plan, ws, &used);
        const int T = L->T, p = L->p, q = L->q;
        const bool conv = L->kind == FNGD_LAYER_CONV2D;
        const float one = 1.0f;
        for (int i0 = 0; i0 < N; i0 += plan.nc) {
            const int ni = N - i0 < plan.nc ? N - i0 : plan.nc;
            const int64_t k = (int64_t)ni * T;
            FNGD_REQUIRE(err, k <= INT32_MAX, FNGD_ERROR_NOT_SUPPORTED,
                         "weighted_grad: %lld rows exceed the cuBLAS int range", (long long)k);
            const float* A = batch->input + (int64_t)i0 * L->in_per_sample;
            if (conv) {
                const fngd_im2col_params I = fngd_cuda_im2col_params(L, A, B.cols, ni);
                FNGD_CUDA_TRY(err, fngd_launch_im2col(I, s));
                A = B.cols;
            }
            fngd_stage_grad_params G = {batch->grad_output + (int64_t)i0 * L->out_per_sample,
                                        B.DE, alpha + i0, scale, ni, T, q, conv ? 1 : 0};
            FNGD_CUDA_TRY(err, fngd_launch_stage_grad(G, s));
            const float beta = i0 == 0 ? 0.0f : 1.0f;
            FNGD_CUBLAS_TRY(err, cublasSgemm(ctx->blas, CUBLAS_OP_N, CUBLAS_OP_T, p, q, (int)k,
                                             &one, A, p, B.DE, q, &beta, out_w, p));
        }
        if (L->n_bias)
            FNGD_TRY(weighted_bias(L, batch->grad_output, N, alpha, scale, out_b, s, err));
        return FNGD_SUCCESS;
    }
    case FNGD_LAYER_NORM_AFFINE: {
        fngd_norm_grads_params P =
            fngd_cuda_norm_params(L, batch->input, batch->grad_output, N);
        P.alpha = alpha;
        P.scale = scale;
        P.out_w = out_w;
        P.out_b = L->n_bias ? out_b : nullptr;
        P.weighted = 1;
        FNGD_CUDA_TRY(err, fngd_launch_norm_grads(P, s));
        return FNGD_SUCCESS;
    }
    case FNGD_LAYER_GENERIC: {
        FNGD_REQUIRE(err, L->n_weight <= INT32_MAX, FNGD_ERROR_NOT_SUPPORTED,
                     "generic layer of %lld parameters exceeds the cuBLAS int range",
                     (long long)L->n_weight);
        const float zero = 0.0f;
        /* out_w = scale * X^T alpha, X row-major N x n_weight = column-major n_weight x N. */
        FNGD_CUBLAS_TRY(err, cublasSgemv(ctx->blas, CUBLAS_OP_N, (int)L->n_weight, N, &scale,
                                         batch->input, (int)L->n_weight, alpha, 1, &zero, out_w,
                                         1));
        return FNGD_SUCCESS;
    }
    default:
        return FNGD_FAIL(err, FNGD_ERROR_INVALID_ARGUMENT, "unknown layer kind %d",
                         (int)L->kind);
    }
}
