/* Staging of host sample ids for scatter/gather without a host synchronisation.
 *
 * Ring of FNGD_CUDA_ID_RING slots, each max_batch int64 in pinned host memory plus a device
 * twin. A call copies the ids into the next pinned slot and enqueues the host-to-device copy
 * on the caller's stream; after the consuming kernel is enqueued, fngd_cuda_release_ids
 * records the slot's event, so the event completes once both the copy and its reader are done.
 * A slot is rewritten only after that: if its event is still pending we wait on that event
 * alone (cudaEventSynchronize), which is not a stream synchronisation. A step stages its ids
 * once: scatter and gather serve every coefficient set in one call.
 *
 * CUDA graph capture: while `stream` is capturing, ids go through one extra slot reserved for
 * capture (no event is queried or recorded, as that is illegal inside a capture). The captured
 * graph's copy node re-reads that pinned slot at every launch, i.e. it replays with the ids of
 * the most recent captured call; key by position (ids == NULL) when each replay must see new
 * ids, or re-capture. */
#include <string.h>

#include "cuda_common.h"

#define CAPTURE_SLOT FNGD_CUDA_ID_RING

fngd_status_t fngd_cuda_ids_create(fngd_backend_ctx_t* ctx, fngd_err_t* err)
{
    const size_t bytes = (size_t)(FNGD_CUDA_ID_RING + 1) * ctx->max_batch * sizeof(int64_t);
    FNGD_CUDA_TRY(err, cudaMallocHost((void**)&ctx->ids_host, bytes));
    FNGD_CUDA_TRY(err, cudaMalloc((void**)&ctx->ids_dev, bytes));
    for (int k = 0; k < FNGD_CUDA_ID_RING; ++k)
        FNGD_CUDA_TRY(err, cudaEventCreateWithFlags(&ctx->ring_event[k], cudaEventDisableTiming));
    return FNGD_SUCCESS;
}

void fngd_cuda_ids_destroy(fngd_backend_ctx_t* ctx)
{
    /* A pending copy may still read a pinned slot: wait for each slot's own event (never
     * recorded: completes at once), not for the whole device. */
    for (int k = 0; k < FNGD_CUDA_ID_RING; ++k)
        if (ctx->ring_event[k]) {
            (void)cudaEventSynchronize(ctx->ring_event[k]);
            cudaEventDestroy(ctx->ring_event[k]);
        }
    if (ctx->ids_dev) cudaFree(ctx->ids_dev);
    if (ctx->ids_host) cudaFreeHost(ctx->ids_host);
}

fngd_status_t fngd_cuda_stage_ids(fngd_backend_ctx_t* ctx, const int64_t* ids, int N,
                                  cudaStream_t stream, const int64_t** ids_dev, int* slot,
                                  fngd_err_t* err)
{
    *ids_dev = NULL;
    *slot = -1;
    if (!ids) return FNGD_SUCCESS;
    FNGD_REQUIRE(err, N > 0 && N <= ctx->max_batch, FNGD_ERROR_INVALID_ARGUMENT,
                 "batch of %d ids exceeds max_batch %d", N, ctx->max_batch);
    const size_t bytes = (size_t)N * sizeof(int64_t);

    cudaStreamCaptureStatus cap = cudaStreamCaptureStatusNone;
    FNGD_CUDA_TRY(err, cudaStreamIsCapturing(stream, &cap));
    if (cap != cudaStreamCaptureStatusNone) {
        int64_t* h = ctx->ids_host + (size_t)CAPTURE_SLOT * ctx->max_batch;
        int64_t* d = ctx->ids_dev + (size_t)CAPTURE_SLOT * ctx->max_batch;
        memcpy(h, ids, bytes);
        FNGD_CUDA_TRY(err, cudaMemcpyAsync(d, h, bytes, cudaMemcpyHostToDevice, stream));
        *ids_dev = d;
        return FNGD_SUCCESS;
    }

    const int k = ctx->ring_next;
    if (ctx->ring_used[k]) {
        const cudaError_t q = cudaEventQuery(ctx->ring_event[k]);
        if (q == cudaErrorNotReady) {
            FNGD_CUDA_TRY(err, cudaEventSynchronize(ctx->ring_event[k]));
        } else if (q != cudaSuccess) {
            FNGD_CUDA_TRY(err, q);
        }
    }
    int64_t* h = ctx->ids_host + (size_t)k * ctx->max_batch;
    int64_t* d = ctx->ids_dev + (size_t)k * ctx->max_batch;
    memcpy(h, ids, bytes);
    FNGD_CUDA_TRY(err, cudaMemcpyAsync(d, h, bytes, cudaMemcpyHostToDevice, stream));
    ctx->ring_next = (k + 1) % FNGD_CUDA_ID_RING;
    *ids_dev = d;
    *slot = k;
    return FNGD_SUCCESS;
}

fngd_status_t fngd_cuda_release_ids(fngd_backend_ctx_t* ctx, int slot, cudaStream_t stream,
                                    fngd_err_t* err)
{
    if (slot < 0) return FNGD_SUCCESS;
    FNGD_CUDA_TRY(err, cudaEventRecord(ctx->ring_event[slot], stream));
    ctx->ring_used[slot] = 1;
    return FNGD_SUCCESS;
}
