/* Direction of one layer (reuse phase, and the epoch-one direction): scale * sum_i alpha_i g_i
 * as one reduction (METHOD.md section 4, last part). For LINEAR and CONV2D layers the weights
 * and the scale are folded into the output gradient first, leaving the plain weight gradient
 * of the batch, the same call an SGD step makes:
 *   CONV2D with cuDNN:  alpha_scale (dy_w = scale * alpha_i * dy_i, bias sums in the same pass),
 *                       then cudnnConvolutionBackwardFilter(x, dy_w) into out_w (cuda_cudnn.cu);
 *   LINEAR:             alpha_scale on the (N*T) x q rows, then one cuBLAS GEMM
 *                       out_w^T (p x q) = A^T (p x NT) * (D E) (NT x q);
 *   CONV2D without cuDNN (or when its plan does not fit the workspace): im2col, the
 *                       transpose-scale of E, and the same GEMM, in sample chunks.
 * The GEMMs and the convolution run in the math mode of fngd_config_t.allow_tf32: FP32
 * (cuBLAS default math, cuDNN FMA math) unless TF32 was allowed. */
#include "cuda_cudnn.h"
#include "cuda_layer_params.h"
#include "cuda_plan.h"
#include "kernels/alpha_scale.cuh"
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

/* cuBLAS math mode of the weight-gradient GEMMs for the guard's scope: TF32 tensor ops when
 * the configuration allows them, else the default (FP32) math. The guard puts the default
 * back on every return path: the Gram and solve ops that follow on this handle rely on it
 * (fngd_cuda_bind does not reset the math mode). */
struct blas_math_scope {
    cublasHandle_t h;
    bool set = false;
    blas_math_scope(cublasHandle_t handle, bool tf32) : h(handle)
    {
        if (tf32) set = cublasSetMathMode(h, CUBLAS_TF32_TENSOR_OP_MATH) == CUBLAS_STATUS_SUCCESS;
    }
    ~blas_math_scope()
    {
        if (set) (void)cublasSetMathMode(h, CUBLAS_DEFAULT_MATH);
    }
    blas_math_scope(const blas_math_scope&) = delete;
    blas_math_scope& operator=(const blas_math_scope&) = delete;
};

/* LINEAR and CONV2D through the im2col / staging plan (every conv when cuDNN is absent). */
fngd_status_t weighted_gemm(fngd_backend_ctx_t* ctx, const fngd_layer_t* L,
                            const fngd_layer_batch_t* batch, int N, const float* alpha,
                            float scale, float* out_w, float* out_b, void* ws, size_t ws_bytes,
                            cudaStream_t s, fngd_err_t* err)
{
    fngd_weighted_plan plan = fngd_cuda_plan_weighted(L, N, ws_bytes);
    if (plan.bytes > ws_bytes) plan = fngd_cuda_plan_weighted(L, N, FNGD_CUDA_WS_TARGET);
    FNGD_REQUIRE(err, plan.bytes <= ws_bytes && ws != NULL, FNGD_ERROR_INTERNAL,
                 "weighted_grad: workspace of %zu bytes, %zu needed", ws_bytes, plan.bytes);
    size_t used = 0;
    const fngd_weighted_buffers B = fngd_cuda_weighted_buffers(L, plan, ws, &used);
    const int T = L->T, p = L->p, q = L->q;
    const bool conv = L->kind == FNGD_LAYER_CONV2D;
    /* LINEAR in one chunk: the bias sums come out of the staging pass (alpha_scale), with
     * its partial sums after the plan's buffers when the workspace has room for them. */
    const int nsplit = fngd_alpha_scale_splits(N, q, T, 1, ctx->sm_count);
    const size_t partial_bytes = nsplit > 1 ? fngd_cuda_align((size_t)nsplit * q * sizeof(float)) : 0;
    const bool fused_bias = !conv && L->n_bias && plan.nc >= N && used + partial_bytes <= ws_bytes;
    float* partial = fused_bias && nsplit > 1 ? (float*)((char*)ws + used) : nullptr;
    const float one = 1.0f;
    blas_math_scope math(ctx->blas, fngd_cuda_allow_tf32(ctx) != 0);
    for (int i0 = 0; i0 < N; i0 += plan.nc) {
        const int ni = N - i0 < plan.nc ? N - i0 : plan.nc;
        const int64_t k = (int64_t)ni * T;
        FNGD_REQUIRE(err, k <= INT32_MAX, FNGD_ERROR_NOT_SUPPORTED,
                     "weighted_grad: %lld rows exceed the cuBLAS int range", (long long)k);
        const float* A = batch->input + (int64_t)i0 * L->in_per_sample;
        const float* go = batch->grad_output + (int64_t)i0 * L->out_per_sample;
        if (conv) {
            const fngd_im2col_params I = fngd_cuda_im2col_params(L, A, B.cols, ni);
            FNGD_CUDA_TRY(err, fngd_launch_im2col(I, s));
            A = B.cols;
            fngd_stage_grad_params G = {go, B.DE, alpha + i0, scale, ni, T, q, 1};
            FNGD_CUDA_TRY(err, fngd_launch_stage_grad(G, s));
        } else {
            fngd_alpha_scale_params S = {};
            S.src = go;
            S.dst = B.DE;
            S.alpha = alpha + i0;
            S.scale = scale;
            S.n = ni;
            S.q = q;
            S.T = T;
            S.channels_last = 1;
            S.out_b = fused_bias ? out_b : nullptr;
            S.partial = partial;
            S.nsplit = fused_bias ? nsplit : 1;
            FNGD_CUDA_TRY(err, fngd_launch_alpha_scale(S, s));
        }
        const float beta = i0 == 0 ? 0.0f : 1.0f;
        FNGD_CUBLAS_TRY(err, cublasSgemm(ctx->blas, CUBLAS_OP_N, CUBLAS_OP_T, p, q, (int)k,
                                         &one, A, p, B.DE, q, &beta, out_w, p));
    }
    if (L->n_bias && !fused_bias)
        FNGD_TRY(weighted_bias(L, batch->grad_output, N, alpha, scale, out_b, s, err));
    return FNGD_SUCCESS;
}
}  // namespace

fngd_status_t fngd_cuda_weighted_grad(fngd_backend_ctx_t* ctx, const fngd_layer_t* layer,
                                      const fngd_layer_batch_t* batch, int N, const float* alpha,
                                      float scale, float* out_w, float* out_b,
                                      const fngd_call_t* call)
{
    void* ws = call->ws;
    const size_t ws_bytes = call->ws_bytes;
    fngd_err_t* err = call->err;
    fngd_nvtx_range r("reduce");
    FNGD_REQUIRE(err, ctx && layer && batch && alpha && out_w && N >= 1,
                 FNGD_ERROR_INVALID_ARGUMENT,
                 "cuda weighted_grad: null argument or N = %d < 1", N);
    FNGD_REQUIRE(err, batch->input && (layer->kind == FNGD_LAYER_GENERIC || batch->grad_output),
                 FNGD_ERROR_INVALID_ARGUMENT, "cuda weighted_grad: batch input/grad_output is NULL");
    FNGD_REQUIRE(err, layer->n_bias == 0 || out_b, FNGD_ERROR_INVALID_ARGUMENT,
                 "cuda weighted_grad: layer has a bias but out_b is NULL");
    const cudaStream_t s = fngd_cuda_stream(call->stream);
    FNGD_TRY(fngd_cuda_bind(ctx, s, err));
    const fngd_layer_t* L = layer;
    if (L->kind == FNGD_LAYER_CONV2D && L->groups > 1)
        return fngd_cuda_grouped_weighted(ctx, L, batch, N, alpha, scale, out_w, out_b, call);

    switch (L->kind) {
    case FNGD_LAYER_CONV2D: {
        int ran = 0;
        FNGD_TRY(fngd_cuda_conv_weighted_cudnn(ctx, L, batch, N, alpha, scale, out_w, out_b, ws,
                                               ws_bytes, s, &ran, err));
        if (ran) return FNGD_SUCCESS;
        return weighted_gemm(ctx, L, batch, N, alpha, scale, out_w, out_b, ws, ws_bytes, s, err);
    }
    case FNGD_LAYER_LINEAR:
        return weighted_gemm(ctx, L, batch, N, alpha, scale, out_w, out_b, ws, ws_bytes, s, err);
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
    case FNGD_LAYER_EMBEDDING:
        return fngd_cuda_embedding_reduce(ctx, L, batch, N, alpha, scale, out_w, s, err);
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
