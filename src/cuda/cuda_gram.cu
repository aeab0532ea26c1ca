/* Per-sample Gram K = scale^2 * G^T G of one layer (METHOD.md section 4), both exact methods:
 * MATERIALIZE forms the per-sample gradients (one strided-batched GEMM per channel chunk) and
 * accumulates K with SYRK; POSITION forms A A^T and E E^T one sample row block at a time and
 * reduces their Hadamard product block by block without storing it. cuBLAS is column-major:
 * a row-major r x c array is used as a column-major c x r matrix throughout. */
#include "cuda_layer_params.h"
#include "cuda_plan.h"
#include "kernels/position_gram.cuh"
#include "kernels/stage_grad.cuh"
#include "kernels/symmetrize.cuh"

namespace {
/* K (+)= alpha * X X^T for X row-major n x k (ld ldx): lower triangle of column-major K. */
fngd_status_t syrk_rows(fngd_backend_ctx_t* ctx, const float* X, int n, int64_t k, int64_t ldx,
                        float alpha, float beta, float* K, fngd_err_t* err)
{
    FNGD_REQUIRE(err, k <= INT32_MAX && ldx <= INT32_MAX, FNGD_ERROR_NOT_SUPPORTED,
                 "per-sample gradient length %lld exceeds the cuBLAS int range", (long long)k);
    FNGD_CUBLAS_TRY(err, cublasSsyrk(ctx->blas, CUBLAS_FILL_MODE_LOWER, CUBLAS_OP_T, n, (int)k,
                                     &alpha, X, (int)ldx, &beta, K, n));
    return FNGD_SUCCESS;
}

/* Per-sample bias gradients (sums of E over positions), row-major N x q. */
fngd_status_t bias_rows(const fngd_layer_t* L, const float* go, int N, float* Pb,
                        cudaStream_t s, fngd_err_t* err)
{
    fngd_norm_grads_params B = fngd_cuda_norm_params(L, nullptr, go, N);
    B.scale = 1.0f;
    B.out_b = Pb;
    B.ld = L->q;
    FNGD_CUDA_TRY(err, fngd_launch_norm_grads(B, s));
    return FNGD_SUCCESS;
}

fngd_status_t gram_materialize(fngd_backend_ctx_t* ctx, const fngd_layer_t* L,
                               const fngd_layer_batch_t* batch, int N, float scale2, float* K,
                               int accumulate, const fngd_gram_plan& plan,
                               const fngd_gram_buffers& B, cudaStream_t s, fngd_err_t* err)
{
    const int T = L->T, p = L->p, q = L->q;
    const bool conv = L->kind == FNGD_LAYER_CONV2D;
    const int64_t in_ps = L->in_per_sample;
    float beta = accumulate ? 1.0f : 0.0f;
    const float one = 1.0f, zero = 0.0f;
    bool cols_ready = false;
    for (int o0 = 0; o0 < q; o0 += plan.qc) {
        const int qn = q - o0 < plan.qc ? q - o0 : plan.qc;
        const int64_t dc = (int64_t)qn * p;
        if (!conv) {
            /* P_i^T (p x qn) = A_i^T (p x T) * E_i[:, o0:o0+qn] (T x qn), all samples. */
            FNGD_CUBLAS_TRY(err, cublasSgemmStridedBatched(
                                     ctx->blas, CUBLAS_OP_N, CUBLAS_OP_T, p, qn, T, &one,
                                     batch->input, p, (long long)T * p, batch->grad_output + o0,
                                     q, (long long)T * q, &zero, B.P, p, dc, N));
        } else {
            for (int i0 = 0; i0 < N; i0 += plan.nc) {
                const int ni = N - i0 < plan.nc ? N - i0 : plan.nc;
                if (!cols_ready) {
                    const fngd_im2col_params I =
                        fngd_cuda_im2col_params(L, batch->input + i0 * in_ps, B.cols, ni);
                    FNGD_CUDA_TRY(err, fngd_launch_im2col(I, s));
                    cols_ready = plan.nc >= N; /* the whole batch stays valid across chunks */
                }
                /* P_i^T (p x qn) = cols_i^T (p x T) * G_i^T (T x qn), G_i = go_i rows o0.. */
                FNGD_CUBLAS_TRY(err, cublasSgemmStridedBatched(
                                         ctx->blas, CUBLAS_OP_N, CUBLAS_OP_N, p, qn, T, &one,
                                         B.cols, p, (long long)T * p,
                                         batch->grad_output + (int64_t)i0 * q * T + (int64_t)o0 * T,
                                         T, (long long)q * T, &zero, B.P + i0 * dc, p, dc, ni));
            }
        }
        FNGD_TRY(syrk_rows(ctx, B.P, N, dc, dc, scale2, beta, K, err));
        beta = 1.0f;
    }
    if (L->n_bias) {
        FNGD_TRY(bias_rows(L, batch->grad_output, N, B.Pb, s, err));
        FNGD_TRY(syrk_rows(ctx, B.Pb, N, q, q, scale2, beta, K, err));
    }
    return FNGD_SUCCESS;
}

fngd_status_t gram_position(fngd_backend_ctx_t* ctx, const fngd_layer_t* L,
                            const fngd_layer_batch_t* batch, int N, float scale2, float* K,
                            int accumulate, const fngd_gram_plan& plan,
                            const fngd_gram_buffers& B, cudaStream_t s, fngd_err_t* err)
{
    const int T = L->T, p = L->p, q = L->q;
    const float* A = batch->input;
    const float* E = batch->grad_output;
    if (L->kind == FNGD_LAYER_CONV2D) {
        const fngd_im2col_params I = fngd_cuda_im2col_params(L, batch->input, B.cols, N);
        FNGD_CUDA_TRY(err, fngd_launch_im2col(I, s));
        fngd_stage_grad_params G = {batch->grad_output, B.E, nullptr, 1.0f, N, T, q, 1};
        FNGD_CUDA_TRY(err, fngd_launch_stage_grad(G, s));
        A = B.cols;
        E = B.E;
    }
    const float one = 1.0f, zero = 0.0f;
    for (int i0 = 0; i0 < N; i0 += plan.nb) {
        const int ni = N - i0 < plan.nb ? N - i0 : plan.nb;
        const int nj = N - i0; /* columns j >= i0 only: K is symmetric */
        const int64_t rows = (int64_t)ni * T, cols = (int64_t)nj * T;
        FNGD_REQUIRE(err, cols <= INT32_MAX, FNGD_ERROR_NOT_SUPPORTED,
                     "position Gram with N*T = %lld rows exceeds the cuBLAS int range",
                     (long long)cols);
        /* Row-major SA (rows x cols) = A[i0 rows] A[i0.. rows]^T, i.e. column-major cols x rows. */
        FNGD_CUBLAS_TRY(err, cublasSgemm(ctx->blas, CUBLAS_OP_T, CUBLAS_OP_N, (int)cols,
                                         (int)rows, p, &one, A + (int64_t)i0 * T * p, p,
                                         A + (int64_t)i0 * T * p, p, &zero, B.SA, (int)cols));
        FNGD_CUBLAS_TRY(err, cublasSgemm(ctx->blas, CUBLAS_OP_T, CUBLAS_OP_N, (int)cols,
                                         (int)rows, q, &one, E + (int64_t)i0 * T * q, q,
                                         E + (int64_t)i0 * T * q, q, &zero, B.SE, (int)cols));
        fngd_block_sum_params S;
        S.SA = B.SA;
        S.SE = B.SE;
        S.K = K;
        S.ldk = N;
        S.i0 = i0;
        S.ni = ni;
        S.j0 = i0;
        S.nj = nj;
        S.T = T;
        S.bias = L->n_bias ? 1.0f : 0.0f;
        S.scale2 = scale2;
        S.accumulate = accumulate;
        FNGD_CUDA_TRY(err, fngd_launch_block_sum(S, s));
    }
    return FNGD_SUCCESS;
}
}  // namespace

fngd_status_t fngd_cuda_layer_gram(fngd_backend_ctx_t* ctx, const fngd_layer_t* layer,
                                   const fngd_layer_batch_t* batch, int N, float scale, float* K,
                                   int accumulate, const fngd_call_t* call)
{
    void* ws = call->ws;
    const size_t ws_bytes = call->ws_bytes;
    fngd_err_t* err = call->err;
    fngd_nvtx_range r("gram");
    FNGD_REQUIRE(err, N > 0, FNGD_ERROR_INVALID_ARGUMENT, "layer_gram: N = %d", N);
    const cudaStream_t s = fngd_cuda_stream(call->stream);
    FNGD_TRY(fngd_cuda_bind(ctx, s, err));
    if (layer->kind == FNGD_LAYER_CONV2D && layer->groups > 1)
        return fngd_cuda_grouped_gram(ctx, layer, batch, N, scale, K, accumulate, call);
    fngd_gram_plan plan = fngd_cuda_plan_gram(layer, N, ws_bytes);
    if (plan.bytes > ws_bytes) plan = fngd_cuda_plan_gram(layer, N, FNGD_CUDA_WS_TARGET);
    FNGD_REQUIRE(err, plan.bytes <= ws_bytes && (plan.bytes == 0 || ws != NULL),
                 FNGD_ERROR_INTERNAL, "layer_gram: workspace of %zu bytes, %zu needed", ws_bytes,
                 plan.bytes);
    size_t used = 0;
    const fngd_gram_buffers B = fngd_cuda_gram_buffers(layer, N, plan, ws, &used);
    const float scale2 = scale * scale;
    const float beta = accumulate ? 1.0f : 0.0f;

    switch (layer->kind) {
    case FNGD_LAYER_LINEAR:
    case FNGD_LAYER_CONV2D:
        if (layer->method == FNGD_GRAM_POSITION)
            return gram_position(ctx, layer, batch, N, scale2, K, accumulate, plan, B, s, err);
        FNGD_TRY(gram_materialize(ctx, layer, batch, N, scale2, K, accumulate, plan, B, s, err));
        break;
    case FNGD_LAYER_NORM_AFFINE: {
        fngd_norm_grads_params P =
            fngd_cuda_norm_params(layer, batch->input, batch->grad_output, N);
        P.scale = 1.0f;
        P.out_w = B.P;
        P.out_b = layer->n_bias ? B.P + layer->n_weight : nullptr;
        P.ld = layer->grad_len;
        FNGD_CUDA_TRY(err, fngd_launch_norm_grads(P, s));
        FNGD_TRY(syrk_rows(ctx, B.P, N, layer->grad_len, layer->grad_len, scale2, beta, K, err));
        break;
    }
    case FNGD_LAYER_EMBEDDING: /* writes both triangles itself */
        return fngd_cuda_embedding_gram(ctx, layer, batch, N, scale2, K, accumulate, s, err);
    case FNGD_LAYER_GENERIC:
        FNGD_TRY(syrk_rows(ctx, batch->input, N, layer->n_weight, layer->n_weight, scale2, beta,
                           K, err));
        break;
    default:
        return FNGD_FAIL(err, FNGD_ERROR_INVALID_ARGUMENT, "unknown layer kind %d",
                         (int)layer->kind);
    }
    FNGD_CUDA_TRY(err, fngd_launch_symmetrize_lower(K, N, s));
    return FNGD_SUCCESS;
}
