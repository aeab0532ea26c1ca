/* dot and scale: the reductions of the step-size control (fngd_step_control_t), on cuBLAS.
 * dot writes its result to device memory (pointer mode device), so a step enqueues all of its
 * dot products and the host reads them back with one download. */
#include <limits.h>

#include "cuda_common.h"

fngd_status_t fngd_cuda_dot(fngd_backend_ctx_t* ctx, const float* x, const float* y, int64_t n,
                            float* out, const fngd_call_t* call)
{
    fngd_err_t* err = call->err;
    FNGD_REQUIRE(err, out && n >= 0 && n <= INT_MAX && (n == 0 || (x && y)),
                 FNGD_ERROR_INVALID_ARGUMENT, "cuda dot: null buffer or n = %lld",
                 (long long)n);
    const cudaStream_t s = fngd_cuda_stream(call->stream);
    if (n == 0) {
        FNGD_CUDA_TRY(err, cudaMemsetAsync(out, 0, sizeof(float), s));
        return FNGD_SUCCESS;
    }
    FNGD_TRY(fngd_cuda_bind(ctx, s, err));
    FNGD_CUBLAS_TRY(err, cublasSetPointerMode(ctx->blas, CUBLAS_POINTER_MODE_DEVICE));
    cublasStatus_t st = cublasSdot(ctx->blas, (int)n, x, 1, y, 1, out);
    /* Back to host mode (what every other call of this handle expects) before any return. */
    FNGD_CUBLAS_TRY(err, cublasSetPointerMode(ctx->blas, CUBLAS_POINTER_MODE_HOST));
    FNGD_CUBLAS_TRY(err, st);
    return FNGD_SUCCESS;
}

fngd_status_t fngd_cuda_scale(fngd_backend_ctx_t* ctx, float* x, int64_t n, float s_value,
                              const fngd_call_t* call)
{
    fngd_err_t* err = call->err;
    FNGD_REQUIRE(err, n >= 0 && n <= INT_MAX && (n == 0 || x), FNGD_ERROR_INVALID_ARGUMENT,
                 "cuda scale: null buffer or n = %lld", (long long)n);
    if (n == 0) return FNGD_SUCCESS;
    const cudaStream_t s = fngd_cuda_stream(call->stream);
    FNGD_TRY(fngd_cuda_bind(ctx, s, err));
    FNGD_CUBLAS_TRY(err, cublasSscal(ctx->blas, (int)n, &s_value, x, 1));
    return FNGD_SUCCESS;
}
