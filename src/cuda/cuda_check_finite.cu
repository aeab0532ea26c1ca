/* check_finite: NaN or +-Inf in any array of a list, with one blocking read-back. */
#include "cuda_common.h"
#include "kernels/nonfinite.cuh"

/* One launch per array, all tagging the same device flag, then one read-back: a step's inputs
 * cost one synchronisation, not one per array. */
fngd_status_t fngd_cuda_check_finite(fngd_backend_ctx_t* ctx, const fngd_array_ref_t* arrays,
                                     int count, int* nonfinite, const fngd_call_t* call)
{
    fngd_err_t* err = call->err;
    fngd_nvtx_range r("check");
    FNGD_REQUIRE(err, nonfinite && count >= 0 && (count == 0 || arrays),
                 FNGD_ERROR_INVALID_ARGUMENT, "cuda check_finite: null argument");
    for (int a = 0; a < count; ++a)
        FNGD_REQUIRE(err, arrays[a].n == 0 || arrays[a].x, FNGD_ERROR_INVALID_ARGUMENT,
                     "cuda check_finite: array %d is NULL", a);
    const cudaStream_t s = fngd_cuda_stream(call->stream);
    int* flag = &ctx->scratch_dev->nonfinite;
    FNGD_CUDA_TRY(err, cudaMemsetAsync(flag, 0, sizeof(int), s));
    for (int a = 0; a < count; ++a)
        FNGD_CUDA_TRY(err, fngd_launch_nonfinite(arrays[a].x, arrays[a].n, flag, a + 1, s));
    FNGD_CUDA_TRY(err, cudaMemcpyAsync(&ctx->scratch_host->nonfinite, flag, sizeof(int),
                                       cudaMemcpyDeviceToHost, s));
    FNGD_CUDA_TRY(err, cudaStreamSynchronize(s));
    *nonfinite = ctx->scratch_host->nonfinite;
    return FNGD_SUCCESS;
}
