/* Coefficient table operations: scatter (collect phase), gather with fallback counting (reuse
 * phase) and the blocking summary used for statistics and fallback means. */
#include "cuda_common.h"
#include "kernels/coef_summary.cuh"
#include "kernels/coefs.cuh"

namespace {
/* The part scatter and gather share: on the context's device, stage the host ids (if any)
 * into a ring slot, fill the key fields of the kernel parameters, launch, and release the
 * slot once the launch is enqueued (also when it failed). P's other fields are the caller's. */
template <class Params>
fngd_status_t launch_keyed(fngd_backend_ctx_t* ctx, Params& P,
                           cudaError_t (*launch)(const Params&, cudaStream_t), int nsets,
                           int set, const int64_t* ids, int64_t key_offset, int N,
                           fngd_stream_t stream, fngd_err_t* err)
{
    const cudaStream_t s = fngd_cuda_stream(stream);
    fngd_cuda_device_guard dev;
    FNGD_TRY(dev.enter(ctx->device, err));
    int slot = -1;
    FNGD_TRY(fngd_cuda_stage_ids(ctx, ids, N, s, &P.ids, &slot, err));
    P.nsets = nsets;
    P.set = set;
    P.key_offset = key_offset;
    P.n = N;
    const cudaError_t e = launch(P, s);
    FNGD_TRY(fngd_cuda_release_ids(ctx, slot, s, err));
    FNGD_CUDA_TRY(err, e);
    return FNGD_SUCCESS;
}
}  // namespace

fngd_status_t fngd_cuda_scatter_coefs(fngd_backend_ctx_t* ctx, float* table, uint8_t* seen,
                                      int nsets, int set, const int64_t* ids, int64_t key_offset,
                                      int N, const float* alpha, fngd_stream_t stream,
                                      fngd_err_t* err)
{
    fngd_nvtx_range r("scatter");
    if (N <= 0) return FNGD_SUCCESS;
    fngd_coef_scatter_params P;
    P.table = table;
    P.seen = seen;
    P.alpha = alpha;
    return launch_keyed(ctx, P, fngd_launch_coef_scatter, nsets, set, ids, key_offset, N, stream,
                        err);
}

fngd_status_t fngd_cuda_gather_coefs(fngd_backend_ctx_t* ctx, const float* table,
                                     const uint8_t* seen, int nsets, int set, const int64_t* ids,
                                     int64_t key_offset, int N, fngd_fallback_t fallback_kind,
                                     const float* fallback, float out_scale, float* out,
                                     int64_t* fallback_count, int count, fngd_stream_t stream,
                                     fngd_err_t* err)
{
    fngd_nvtx_range r("gather");
    if (N <= 0) return FNGD_SUCCESS;
    FNGD_REQUIRE(err, fallback_kind == FNGD_FALLBACK_UNIFORM || fallback != NULL,
                 FNGD_ERROR_INVALID_ARGUMENT, "stored-mean fallback needs the fallback array");
    /* As the CPU backend: a count request without a counter is an error, not a silent skip. */
    FNGD_REQUIRE(err, !count || fallback_count != NULL, FNGD_ERROR_INVALID_ARGUMENT,
                 "gather_coefs: fallback counter is NULL");
    fngd_coef_gather_params P;
    P.table = table;
    P.seen = seen;
    P.uniform = fallback_kind == FNGD_FALLBACK_UNIFORM;
    P.fallback = fallback;
    P.out_scale = out_scale;
    P.out = out;
    P.fallback_count = count ? fallback_count : NULL;
    return launch_keyed(ctx, P, fngd_launch_coef_gather, nsets, set, ids, key_offset, N, stream,
                        err);
}

fngd_status_t fngd_cuda_summarize_coefs(fngd_backend_ctx_t* ctx, const float* table,
                                        const uint8_t* seen, int64_t num_keys, int nsets,
                                        int set, fngd_coef_summary_t* out, fngd_stream_t stream,
                                        fngd_err_t* err)
{
    fngd_nvtx_range r("check");
    const cudaStream_t s = fngd_cuda_stream(stream);
    fngd_cuda_device_guard dev;
    FNGD_TRY(dev.enter(ctx->device, err));
    fngd_coef_summary_params P;
    P.table = table;
    P.seen = seen;
    P.num_keys = num_keys > 0 ? num_keys : 0;
    P.nsets = nsets;
    P.set = set;
    P.partials = ctx->scratch_dev->partials;
    /* Enough blocks to fill the GPU, never more than the partial array holds. */
    int64_t blocks = (P.num_keys + 255) / 256;
    if (blocks > FNGD_CUDA_SUMMARY_BLOCKS) blocks = FNGD_CUDA_SUMMARY_BLOCKS;
    if (blocks < 1) blocks = 1;
    P.blocks = (int)blocks;
    P.result = &ctx->scratch_dev->total;
    FNGD_CUDA_TRY(err, fngd_launch_coef_summary(P, s));
    FNGD_CUDA_TRY(err, cudaMemcpyAsync(&ctx->scratch_host->total, P.result,
                                       sizeof(fngd_coef_summary_item), cudaMemcpyDeviceToHost, s));
    FNGD_CUDA_TRY(err, cudaStreamSynchronize(s));
    const fngd_coef_summary_item t = ctx->scratch_host->total;
    out->count = t.count;
    out->sum = t.sum;
    /* An empty set reports zeros rather than +-Inf sentinels. */
    out->min = t.count ? t.min : 0.0;
    out->max = t.count ? t.max : 0.0;
    return FNGD_SUCCESS;
}
