/* Coefficient table operations over every coefficient set in one call: scatter (collect
 * phase), gather with fallback counting (reuse phase) and the blocking summary used for
 * statistics and fallback means. */
#include "cuda_common.h"
#include "kernels/coef_summary.cuh"
#include "kernels/coefs.cuh"

namespace {
/* The part scatter and gather share: stage the host ids (if any)
 * into a ring slot, fill the key fields of the kernel parameters, launch, and release the
 * slot once the launch is enqueued (also when it failed). P's other fields are the caller's. */
template <class Params>
fngd_status_t launch_keyed(fngd_backend_ctx_t* ctx, Params& P,
                           cudaError_t (*launch)(const Params&, cudaStream_t), int nsets,
                           const int64_t* ids, int64_t key_offset, int N, const fngd_call_t* call)
{
    fngd_err_t* err = call->err;
    const cudaStream_t s = fngd_cuda_stream(call->stream);
    int slot = -1;
    FNGD_TRY(fngd_cuda_stage_ids(ctx, ids, N, s, &P.ids, &slot, err));
    P.nsets = nsets;
    P.key_offset = key_offset;
    P.n = N;
    const cudaError_t e = launch(P, s);
    FNGD_TRY(fngd_cuda_release_ids(ctx, slot, s, err));
    FNGD_CUDA_TRY(err, e);
    return FNGD_SUCCESS;
}
}  // namespace

fngd_status_t fngd_cuda_scatter_coefs(fngd_backend_ctx_t* ctx, float* table, uint8_t* seen,
                                      int nsets, const int64_t* ids, int64_t key_offset, int N,
                                      const float* alpha, int ld_alpha, const fngd_call_t* call)
{
    fngd_err_t* err = call->err;
    fngd_nvtx_range r("scatter");
    FNGD_REQUIRE(err, table && seen && alpha && N >= 0 && nsets >= 1 && ld_alpha >= N,
                 FNGD_ERROR_INVALID_ARGUMENT,
                 "cuda scatter_coefs: bad argument (N %d, nsets %d, ld_alpha %d)", N, nsets,
                 ld_alpha);
    if (N == 0) return FNGD_SUCCESS;
    fngd_coef_scatter_params P;
    P.table = table;
    P.seen = seen;
    P.alpha = alpha;
    P.ld_alpha = ld_alpha;
    return launch_keyed(ctx, P, fngd_launch_coef_scatter, nsets, ids, key_offset, N, call);
}

fngd_status_t fngd_cuda_gather_coefs(fngd_backend_ctx_t* ctx, const float* table,
                                     const uint8_t* seen, int nsets, const int64_t* ids,
                                     int64_t key_offset, int N, fngd_fallback_t fallback_kind,
                                     const float* fallback, float out_scale, float* out,
                                     int ld_out, int64_t* fallback_count, const fngd_call_t* call)
{
    fngd_err_t* err = call->err;
    fngd_nvtx_range r("gather");
    FNGD_REQUIRE(err, table && seen && out && N >= 1 && nsets >= 1 && ld_out >= N,
                 FNGD_ERROR_INVALID_ARGUMENT,
                 "cuda gather_coefs: bad argument (N %d, nsets %d, ld_out %d)", N, nsets, ld_out);
    FNGD_REQUIRE(err, fallback_kind != FNGD_FALLBACK_STORED_MEAN || fallback != NULL,
                 FNGD_ERROR_INVALID_ARGUMENT, "cuda gather_coefs: stored-mean fallback is NULL");
    FNGD_REQUIRE(err, fallback_count != NULL, FNGD_ERROR_INVALID_ARGUMENT,
                 "cuda gather_coefs: fallback counter is NULL");
    fngd_coef_gather_params P;
    P.table = table;
    P.seen = seen;
    P.uniform = fallback_kind != FNGD_FALLBACK_STORED_MEAN;
    P.fallback = fallback;
    P.out_scale = out_scale;
    P.out = out;
    P.ld_out = ld_out;
    P.fallback_count = fallback_count;
    return launch_keyed(ctx, P, fngd_launch_coef_gather, nsets, ids, key_offset, N, call);
}

/* The summary buffers for nsets sets of blocks_per_set partials each (grown, never shrunk). */
static fngd_status_t reserve_summary(fngd_backend_ctx_t* ctx, int nsets, int blocks_per_set,
                                     fngd_err_t* err)
{
    const size_t items = (size_t)nsets * ((size_t)blocks_per_set + 1);
    if (items > ctx->summary_items) {
        fngd_coef_summary_item* d = NULL;
        FNGD_CUDA_TRY(err, cudaMalloc((void**)&d, items * sizeof(*d)));
        if (ctx->summary_dev) cudaFree(ctx->summary_dev);
        ctx->summary_dev = d;
        ctx->summary_items = items;
    }
    if (nsets > ctx->summary_sets) {
        fngd_coef_summary_item* h = NULL;
        FNGD_CUDA_TRY(err, cudaMallocHost((void**)&h, (size_t)nsets * sizeof(*h)));
        if (ctx->summary_host) cudaFreeHost(ctx->summary_host);
        ctx->summary_host = h;
        ctx->summary_sets = nsets;
    }
    return FNGD_SUCCESS;
}

void fngd_cuda_summary_destroy(fngd_backend_ctx_t* ctx)
{
    if (ctx->summary_dev) cudaFree(ctx->summary_dev);
    if (ctx->summary_host) cudaFreeHost(ctx->summary_host);
    ctx->summary_dev = NULL;
    ctx->summary_host = NULL;
    ctx->summary_items = 0;
    ctx->summary_sets = 0;
}

fngd_status_t fngd_cuda_summarize_coefs(fngd_backend_ctx_t* ctx, const float* table,
                                        const uint8_t* seen, int64_t num_keys, int nsets,
                                        fngd_coef_summary_t* out, const fngd_call_t* call)
{
    fngd_err_t* err = call->err;
    fngd_nvtx_range r("summary");
    FNGD_REQUIRE(err, table && seen && out && num_keys >= 0 && nsets >= 1,
                 FNGD_ERROR_INVALID_ARGUMENT,
                 "cuda summarize_coefs: bad argument (num_keys %lld, nsets %d)",
                 (long long)num_keys, nsets);
    const cudaStream_t s = fngd_cuda_stream(call->stream);
    /* About FNGD_CUDA_SUMMARY_BLOCKS blocks in all (enough to fill the GPU), at least one per
     * set, never more per set than its keys need. */
    int64_t per_set = (num_keys + 255) / 256;
    const int64_t share = FNGD_CUDA_SUMMARY_BLOCKS / nsets;
    if (per_set > share) per_set = share;
    if (per_set < 1) per_set = 1;
    FNGD_TRY(reserve_summary(ctx, nsets, (int)per_set, err));
    fngd_coef_summary_params P;
    P.table = table;
    P.seen = seen;
    P.num_keys = num_keys;
    P.nsets = nsets;
    P.blocks_per_set = (int)per_set;
    P.result = ctx->summary_dev;
    P.partials = ctx->summary_dev + nsets;
    FNGD_CUDA_TRY(err, fngd_launch_coef_summary(P, s));
    FNGD_CUDA_TRY(err, cudaMemcpyAsync(ctx->summary_host, P.result,
                                       (size_t)nsets * sizeof(fngd_coef_summary_item),
                                       cudaMemcpyDeviceToHost, s));
    FNGD_CUDA_TRY(err, cudaStreamSynchronize(s));
    for (int set = 0; set < nsets; ++set) {
        const fngd_coef_summary_item& t = ctx->summary_host[set];
        out[set].count = t.count;
        out[set].sum = t.sum;
        /* An empty set reports zeros rather than +-Inf sentinels. */
        out[set].min = t.count ? t.min : 0.0;
        out[set].max = t.count ? t.max : 0.0;
    }
    return FNGD_SUCCESS;
}
