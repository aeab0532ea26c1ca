/* Shared by the CUDA backend's host files (C++ / nvcc only): the backend context and the
 * checking macros that turn CUDA, cuBLAS and cuSOLVER failures into FNGD statuses. */
#ifndef FNGD_CUDA_COMMON_H
#define FNGD_CUDA_COMMON_H

#include <cublas_v2.h>
#include <cuda_runtime.h>
#include <cusolverDn.h>

#include "backend.h"
#include "cuda_device_guard.h"
#include "error.h"
#include "kernels/coef_summary.cuh"
#include "nvtx_range.h"

/* Host ids of scatter/gather are staged through a ring of pinned slots (see cuda_ids.cu). */
#define FNGD_CUDA_ID_RING 4
/* cuBLAS workspace: 32 MiB is what NVIDIA recommends for Hopper. */
#define FNGD_CUDA_BLAS_WS_BYTES ((size_t)32 << 20)

/* Results of check_finite and of the embedding id check, read back through pinned memory. */
struct fngd_cuda_scratch {
    int nonfinite;
    int bad_id;
};
/* summarize_coefs: at most this many partial blocks per set, and about this many in all. */
#define FNGD_CUDA_SUMMARY_BLOCKS 256

struct fngd_backend_ctx {
    int device;
    int max_batch;
    int sm_count;
    cublasHandle_t blas;
    cusolverDnHandle_t solver;
    /* cuBLAS workspace owned by the context (cublasSetWorkspace after every rebind), so
     * that stream capture never makes cuBLAS allocate one per captured graph. Work of one
     * handle on two streams at once would share it: one handle serves one thread, in order. */
    void* blas_ws;
    /* The stream both library handles are bound to (fngd_cuda_bind), valid once bound != 0:
     * a call on the same stream as the last one rebinds nothing. */
    cudaStream_t bound_stream;
    int bound;

    struct fngd_cuda_scratch* scratch_dev;    /* device */
    struct fngd_cuda_scratch* scratch_host;   /* pinned mirror */
    /* Pinned staging of factor_solve (per-matrix floors up, statuses down), grown on demand
     * and kept: the solve is blocking, so nothing else uses it in between. */
    void* batch_host;
    size_t batch_host_bytes;
    /* summarize_coefs' partials and per-set results (device) and the results' pinned mirror,
     * grown on demand to the largest nsets seen and kept (the summary is blocking). */
    struct fngd_coef_summary_item* summary_dev;
    struct fngd_coef_summary_item* summary_host;
    size_t summary_items;      /* capacity of summary_dev */
    int summary_sets;          /* capacity of summary_host */

    /* Id staging: FNGD_CUDA_ID_RING ring slots plus one slot reserved for graph capture,
     * each max_batch int64 in pinned host memory and in device memory. */
    int64_t* ids_host;
    int64_t* ids_dev;
    cudaEvent_t ring_event[FNGD_CUDA_ID_RING];
    int ring_used[FNGD_CUDA_ID_RING];  /* an event was recorded for the slot */
    int ring_next;
    /* Reuse-phase state (cuda_cudnn.h): math mode, cuDNN handle, backward-filter plans. */
    struct fngd_cuda_dnn* dnn;
};

static inline cudaStream_t fngd_cuda_stream(fngd_stream_t s)
{
    return s ? (cudaStream_t)s : cudaStreamPerThread;
}

static inline fngd_status_t fngd_cuda_status(cudaError_t e)
{
    return e == cudaErrorMemoryAllocation ? FNGD_ERROR_OUT_OF_MEMORY : FNGD_ERROR_BACKEND;
}
static inline fngd_status_t fngd_cublas_status(cublasStatus_t s)
{
    return s == CUBLAS_STATUS_ALLOC_FAILED ? FNGD_ERROR_OUT_OF_MEMORY : FNGD_ERROR_BACKEND;
}
static inline fngd_status_t fngd_cusolver_status(cusolverStatus_t s)
{
    return s == CUSOLVER_STATUS_ALLOC_FAILED ? FNGD_ERROR_OUT_OF_MEMORY : FNGD_ERROR_BACKEND;
}
const char* fngd_cusolver_status_name(cusolverStatus_t s);

#define FNGD_CUDA_TRY(err, call)                                                              \
    do {                                                                                      \
        cudaError_t fngd_e_ = (call);                                                         \
        if (fngd_e_ != cudaSuccess)                                                           \
            return FNGD_FAIL(err, fngd_cuda_status(fngd_e_), "%s failed: %s (%s)", #call,     \
                             cudaGetErrorName(fngd_e_), cudaGetErrorString(fngd_e_));         \
    } while (0)

#define FNGD_CUBLAS_TRY(err, call)                                                            \
    do {                                                                                      \
        cublasStatus_t fngd_s_ = (call);                                                      \
        if (fngd_s_ != CUBLAS_STATUS_SUCCESS)                                                 \
            return FNGD_FAIL(err, fngd_cublas_status(fngd_s_), "%s failed: %s (%s)", #call,   \
                             cublasGetStatusName(fngd_s_), cublasGetStatusString(fngd_s_));   \
    } while (0)

#define FNGD_CUSOLVER_TRY(err, call)                                                          \
    do {                                                                                      \
        cusolverStatus_t fngd_s_ = (call);                                                    \
        if (fngd_s_ != CUSOLVER_STATUS_SUCCESS)                                               \
            return FNGD_FAIL(err, fngd_cusolver_status(fngd_s_), "%s failed: %s", #call,      \
                             fngd_cusolver_status_name(fngd_s_));                             \
    } while (0)

/* Bind both library handles (cuBLAS with the context's workspace, cuSOLVER) to `stream`, only
 * when it differs from the stream they are bound to. The math mode stays cuBLAS's default
 * (full FP32 on the Gram/solve path): the one op that switches to TF32 restores it
 * (cuda_weighted.cu). Runs inside a call (the device is current). */
fngd_status_t fngd_cuda_bind(fngd_backend_ctx_t* ctx, cudaStream_t stream, fngd_err_t* err);

/* Workspace carving: successive 256-byte aligned pieces of one buffer. */
static inline size_t fngd_cuda_align(size_t bytes) { return (bytes + 255) & ~(size_t)255; }
struct fngd_cuda_carve {
    char* base;
    size_t used;
    void* take(size_t bytes)
    {
        void* p = base ? base + used : nullptr;
        used += fngd_cuda_align(bytes);
        return p;
    }
};

/* RAII NVTX range for one backend operation. */
struct fngd_nvtx_range {
    explicit fngd_nvtx_range(const char* name) { fngd_nvtx_push(name); }
    ~fngd_nvtx_range() { fngd_nvtx_pop(); }
    fngd_nvtx_range(const fngd_nvtx_range&) = delete;
    fngd_nvtx_range& operator=(const fngd_nvtx_range&) = delete;
};

/* The per-op entry points (one file each, the signatures of src/host/backend.h); the table
 * lives in cuda_backend.cu. Each runs inside a call (begin_call entered the device). */
fngd_status_t fngd_cuda_workspace_bytes(fngd_backend_ctx_t* ctx, const fngd_layer_t* layers,
                                        int num_layers, int N, int solve_count, size_t* bytes,
                                        const fngd_call_t* call);
fngd_status_t fngd_cuda_layer_gram(fngd_backend_ctx_t* ctx, const fngd_layer_t* layer,
                                   const fngd_layer_batch_t* batch, int N, float scale, float* K,
                                   int accumulate, const fngd_call_t* call);
fngd_status_t fngd_cuda_factor_solve(fngd_backend_ctx_t* ctx, const float* K, int count, int N,
                                     fngd_damping_kind_t damping_kind, double damping,
                                     const double* min_shift, const float* rhs, int range_filter,
                                     float* alpha, int ld_alpha, int* info, double* shift_used,
                                     double* trace_K, const fngd_call_t* call);
fngd_status_t fngd_cuda_dot(fngd_backend_ctx_t* ctx, const float* x, const float* y, int64_t n,
                            float* out, const fngd_call_t* call);
fngd_status_t fngd_cuda_scale(fngd_backend_ctx_t* ctx, float* x, int64_t n, float s,
                              const fngd_call_t* call);
fngd_status_t fngd_cuda_weighted_grad(fngd_backend_ctx_t* ctx, const fngd_layer_t* layer,
                                      const fngd_layer_batch_t* batch, int N, const float* alpha,
                                      float scale, float* out_w, float* out_b,
                                      const fngd_call_t* call);
fngd_status_t fngd_cuda_scatter_coefs(fngd_backend_ctx_t* ctx, float* table, uint8_t* seen,
                                      int nsets, const int64_t* ids, int64_t key_offset, int N,
                                      const float* alpha, int ld_alpha, const fngd_call_t* call);
fngd_status_t fngd_cuda_gather_coefs(fngd_backend_ctx_t* ctx, const float* table,
                                     const uint8_t* seen, int nsets, const int64_t* ids,
                                     int64_t key_offset, int N, fngd_fallback_t fallback_kind,
                                     const float* fallback, float out_scale, float* out,
                                     int ld_out, int64_t* fallback_count,
                                     const fngd_call_t* call);
fngd_status_t fngd_cuda_summarize_coefs(fngd_backend_ctx_t* ctx, const float* table,
                                        const uint8_t* seen, int64_t num_keys, int nsets,
                                        fngd_coef_summary_t* out, const fngd_call_t* call);
void fngd_cuda_summary_destroy(fngd_backend_ctx_t* ctx);
fngd_status_t fngd_cuda_check_finite(fngd_backend_ctx_t* ctx, const fngd_array_ref_t* arrays,
                                     int count, int* nonfinite, const fngd_call_t* call);
fngd_status_t fngd_cuda_sgd_update(fngd_backend_ctx_t* ctx, const fngd_update_tensor_t* tensors,
                                   int count, float lr, float momentum, float weight_decay,
                                   const fngd_call_t* call);

/* Layer kinds composed outside the dense matrix path (docs/METHOD.md section 4):
 * EMBEDDING (cuda_embedding.cu: sparse-row Gram and scatter-add, no workspace; each op checks
 * the ids against num_embeddings with one blocking read-back) and CONV2D with groups > 1
 * (cuda_grouped.cu: each group's input and output-gradient channels are staged into the
 * workspace by one strided copy each and run as an ungrouped conv; the Gram adds the groups'
 * Grams, the direction fills each group's slice of the weight and bias). */
fngd_status_t fngd_cuda_embedding_gram(fngd_backend_ctx_t* ctx, const fngd_layer_t* layer,
                                       const fngd_layer_batch_t* batch, int N, float scale2,
                                       float* K, int accumulate, cudaStream_t s, fngd_err_t* err);
fngd_status_t fngd_cuda_embedding_reduce(fngd_backend_ctx_t* ctx, const fngd_layer_t* layer,
                                         const fngd_layer_batch_t* batch, int N,
                                         const float* alpha, float scale, float* out_w,
                                         cudaStream_t s, fngd_err_t* err);
/* The ungrouped layer of one group of a grouped CONV2D (its geometry; method inherited). */
fngd_status_t fngd_cuda_group_layer(const fngd_layer_t* layer, fngd_layer_t* group,
                                    fngd_err_t* err);
/* Staging bytes of one group (its layer from fngd_cuda_group_layer) at batch N; the group's
 * own op workspace comes after them. */
size_t fngd_cuda_grouped_staging_bytes(const fngd_layer_t* group, int N);
fngd_status_t fngd_cuda_grouped_gram(fngd_backend_ctx_t* ctx, const fngd_layer_t* layer,
                                     const fngd_layer_batch_t* batch, int N, float scale, float* K,
                                     int accumulate, const fngd_call_t* call);
fngd_status_t fngd_cuda_grouped_weighted(fngd_backend_ctx_t* ctx, const fngd_layer_t* layer,
                                         const fngd_layer_batch_t* batch, int N,
                                         const float* alpha, float scale, float* out_w,
                                         float* out_b, const fngd_call_t* call);

/* Id staging (cuda_ids.cu): device copy of host ids (NULL when ids is NULL) in ring slot
 * *slot (-1: none to release); release after enqueueing the kernel that reads it. */
fngd_status_t fngd_cuda_stage_ids(fngd_backend_ctx_t* ctx, const int64_t* ids, int N,
                                  cudaStream_t stream, const int64_t** ids_dev, int* slot,
                                  fngd_err_t* err);
fngd_status_t fngd_cuda_release_ids(fngd_backend_ctx_t* ctx, int slot, cudaStream_t stream,
                                    fngd_err_t* err);
fngd_status_t fngd_cuda_ids_create(fngd_backend_ctx_t* ctx, fngd_err_t* err);
void fngd_cuda_ids_destroy(fngd_backend_ctx_t* ctx);

#endif
