/* The narrow interface between the backend-agnostic host logic (src/host) and a compute
 * backend (src/cpu, src/cuda). Every pointer named "backend memory" lives where the backend
 * computes (host for CPU, device for CUDA); host pointers are marked as such.
 *
 * Contract for every operation:
 * - returns FNGD_SUCCESS or an error status; on error it has written a message into `err`
 *   (fngd_errf) and has not written to any output except workspace;
 * - enqueues its work on `stream` (CUDA) and does not block unless it says so;
 * - never allocates in the reuse-phase operations (gather, weighted_grad, sgd_update).
 */
#ifndef FNGD_HOST_BACKEND_H
#define FNGD_HOST_BACKEND_H

#include <stddef.h>
#include <stdint.h>

#include "error.h"
#include "layer.h"

#ifdef __cplusplus
extern "C" {
#endif

typedef struct fngd_backend_ctx fngd_backend_ctx_t;

/* One tensor of a multi-tensor SGD update (host struct; the pointers are backend memory). */
typedef struct fngd_update_tensor {
    float* param;
    const float* dir;
    float* mom;   /* NULL when momentum == 0 */
    int64_t n;
} fngd_update_tensor_t;

/* A read-only array of n floats in backend memory (host struct), for check_finite. */
typedef struct fngd_array_ref {
    const float* x;
    size_t n;
} fngd_array_ref_t;

/* Coefficient-table statistics over the stored keys of one set (host struct; summarize_coefs
 * writes one per set). */
typedef struct fngd_coef_summary {
    int64_t count;
    double min, max, sum;
} fngd_coef_summary_t;

typedef struct fngd_backend_ops {
    const char* name;

    /* Lifecycle. create binds the device (CUDA) and creates library handles. */
    fngd_status_t (*create)(const fngd_config_t* cfg, fngd_backend_ctx_t** ctx, fngd_err_t* err);
    void (*destroy)(fngd_backend_ctx_t* ctx);

    /* Memory. alloc returns zero-filled memory, 256-byte aligned; blocking. */
    fngd_status_t (*alloc)(fngd_backend_ctx_t* ctx, size_t bytes, void** ptr, fngd_err_t* err);
    void (*free)(fngd_backend_ctx_t* ctx, void* ptr);
    /* Blocking copies between host memory and backend memory. */
    fngd_status_t (*upload)(fngd_backend_ctx_t* ctx, void* dst, const void* host_src,
                            size_t bytes, fngd_stream_t stream, fngd_err_t* err);
    fngd_status_t (*download)(fngd_backend_ctx_t* ctx, void* host_dst, const void* src,
                              size_t bytes, fngd_stream_t stream, fngd_err_t* err);
    fngd_status_t (*synchronize)(fngd_backend_ctx_t* ctx, fngd_stream_t stream, fngd_err_t* err);

    /* Workspace bytes that layer_gram / weighted_grad / factor_solve need for a batch of N
     * with the layer's resolved method (max over the three is what the host reserves). */
    size_t (*workspace_bytes)(fngd_backend_ctx_t* ctx, const fngd_layer_t* layer, int N);
    size_t (*solver_workspace_bytes)(fngd_backend_ctx_t* ctx, int N);

    /* Check every array of the host list arrays[0..count) for NaN or Inf: *nonfinite = 0 if
     * all are finite, else 1 + the index of an array that is not (CPU: the first such). One
     * blocking result for the whole list (one synchronisation on a GPU). */
    fngd_status_t (*check_finite)(fngd_backend_ctx_t* ctx, const fngd_array_ref_t* arrays,
                                  int count, int* nonfinite, fngd_stream_t stream,
                                  fngd_err_t* err);

    /* K (N x N, row-major, symmetric, both triangles written) = scale^2 * Gram of the layer's
     * per-sample gradients on this batch, using layer->method; with accumulate != 0 adds to K
     * instead. scale converts the caller's gradients to per-sample ones (N or 1). */
    fngd_status_t (*layer_gram)(fngd_backend_ctx_t* ctx, const fngd_layer_t* layer,
                                const fngd_layer_batch_t* batch, int N, float scale, float* K,
                                int accumulate, void* ws, size_t ws_bytes, fngd_stream_t stream,
                                fngd_err_t* err);

    /* Damped Cholesky solve in double precision:
     *   shift = damping_kind == TRACE_RELATIVE ? damping * trace(K) : N * damping
     *   shift = max(shift, min_shift)
     *   x = (K + shift I)^-1 r,   r = rhs (N floats, backend memory) or all ones if NULL
     *   alpha = x, or with range_filter != 0 (FNGD_FILTER_RANGE) the same factor applied twice:
     *   alpha = x - shift (K + shift I)^-1 x = (K + shift I)^-1 K x.
     * Writes *info (host): 0 on success, > 0 if not positive definite (alpha then untouched),
     * *shift_used and *trace_K (host). Blocking (it reads the factorization status). */
    fngd_status_t (*factor_solve)(fngd_backend_ctx_t* ctx, const float* K, int N,
                                  fngd_damping_kind_t damping_kind, double damping,
                                  double min_shift, const float* rhs, int range_filter,
                                  float* alpha, int* info,
                                  double* shift_used, double* trace_K, void* ws, size_t ws_bytes,
                                  fngd_stream_t stream, fngd_err_t* err);

    /* factor_solve for `count` Gram matrices of equal size N at once (per-layer mode: one per
     * layer), so a backend can use one batched factorization and one blocking status read:
     * matrix s is K + s*N*N; its result goes to alpha + s*ld_alpha (untouched if info[s] > 0);
     * min_shift, info, shift_used and trace_K are host arrays of `count`; rhs is shared.
     * solver_batched_workspace_bytes(N, count) is what it needs. Blocking. */
    fngd_status_t (*factor_solve_batched)(fngd_backend_ctx_t* ctx, const float* K, int count,
                                          int N, fngd_damping_kind_t damping_kind,
                                          double damping, const double* min_shift,
                                          const float* rhs, int range_filter, float* alpha,
                                          int ld_alpha,
                                          int* info, double* shift_used, double* trace_K,
                                          void* ws, size_t ws_bytes, fngd_stream_t stream,
                                          fngd_err_t* err);
    size_t (*solver_batched_workspace_bytes)(fngd_backend_ctx_t* ctx, int N, int count);

    /* The coefficient table, all nsets sets of a batch in one call. Per-sample keys:
     * key_i = ids ? ids[i] : key_offset + i (ids: host memory, validated: in range, distinct).
     * Table layout key-major: table[key * nsets + set]; seen[key] != 0 once the key is stored.
     * scatter: for every set s and i < N, table[key_i * nsets + s] = alpha[s * ld_alpha + i];
     * seen[key_i] = 1. ld_alpha >= N. */
    fngd_status_t (*scatter_coefs)(fngd_backend_ctx_t* ctx, float* table, uint8_t* seen,
                                   int nsets, const int64_t* ids, int64_t key_offset, int N,
                                   const float* alpha, int ld_alpha, fngd_stream_t stream,
                                   fngd_err_t* err);
    /* gather: for every set s and i < N, out[s * ld_out + i] = out_scale *
     * (seen[key_i] ? table[key_i * nsets + s] : fallback_value(s)), fallback_value(s) =
     * fallback[s] (STORED_MEAN, nsets floats of backend memory) or 1/N (UNIFORM);
     * *fallback_count (backend memory, int64, required) += the number of unseen keys (once per
     * key, not per set). ld_out >= N. */
    fngd_status_t (*gather_coefs)(fngd_backend_ctx_t* ctx, const float* table,
                                  const uint8_t* seen, int nsets, const int64_t* ids,
                                  int64_t key_offset, int N, fngd_fallback_t fallback_kind,
                                  const float* fallback, float out_scale, float* out, int ld_out,
                                  int64_t* fallback_count, fngd_stream_t stream,
                                  fngd_err_t* err);
    /* summarize: out[s] (host array of nsets) = summary of table[key * nsets + s] over the
     * keys < num_keys with seen[key] != 0; an empty set reports count 0 and zeros. min and max
     * follow a sequential scan in key order (a NaN at the lowest seen key makes both NaN, a
     * NaN later is skipped); the sum takes every value. Blocking (one synchronisation). */
    fngd_status_t (*summarize_coefs)(fngd_backend_ctx_t* ctx, const float* table,
                                     const uint8_t* seen, int64_t num_keys, int nsets,
                                     fngd_coef_summary_t* out, fngd_stream_t stream,
                                     fngd_err_t* err);

    /* Direction of one layer: out_w (n_weight floats) and out_b (n_bias floats, if the layer
     * has one) = scale * sum_i alpha[i] * g_i, the coefficient-weighted per-sample gradient,
     * formed as one reduction without per-sample gradients (METHOD.md section 4, last part). */
    fngd_status_t (*weighted_grad)(fngd_backend_ctx_t* ctx, const fngd_layer_t* layer,
                                   const fngd_layer_batch_t* batch, int N, const float* alpha,
                                   float scale, float* out_w, float* out_b, void* ws,
                                   size_t ws_bytes, fngd_stream_t stream, fngd_err_t* err);

    /* SGD with momentum, decoupled from preconditioning, for every tensor of the host array
     * tensors[0..count) in one pass (a backend may fuse them into one launch):
     *   d = dir + weight_decay * param;  mom = momentum * mom + d (mom may be NULL if
     *   momentum == 0, then mom_val = d);  param -= lr * mom_val.
     * All tensors are validated before any is updated. */
    fngd_status_t (*sgd_update)(fngd_backend_ctx_t* ctx, const fngd_update_tensor_t* tensors,
                                int count, float lr, float momentum, float weight_decay,
                                fngd_stream_t stream, fngd_err_t* err);

    /* Step-size control (fngd_step_control_t): *out (one float, backend memory) = sum_k
     * x[k] * y[k] over n floats, accumulated in double; enqueued, not blocking (read it back
     * with download). scale: x[0..n) *= s. */
    fngd_status_t (*dot)(fngd_backend_ctx_t* ctx, const float* x, const float* y, int64_t n,
                         float* out, fngd_stream_t stream, fngd_err_t* err);
    fngd_status_t (*scale)(fngd_backend_ctx_t* ctx, float* x, int64_t n, float s,
                           fngd_stream_t stream, fngd_err_t* err);

    /* dst[0..n) = src[0..n) (both backend memory). */
    fngd_status_t (*copy)(fngd_backend_ctx_t* ctx, float* dst, const float* src, int64_t n,
                          fngd_stream_t stream, fngd_err_t* err);
} fngd_backend_ops_t;

/* The backends compiled into this library. fngd_cuda_backend_ops() returns NULL when the
 * library was built without CUDA. */
const fngd_backend_ops_t* fngd_cpu_backend_ops(void);
const fngd_backend_ops_t* fngd_cuda_backend_ops(void);
/* Nonzero when at least one CUDA device can be used (0 without CUDA support). */
int fngd_cuda_device_available(void);

#ifdef __cplusplus
}
#endif

#endif
