/* The narrow interface between the backend-agnostic host logic (src/host) and a compute
 * backend (src/cpu, src/cuda). Every pointer named "backend memory" lives where the backend
 * computes (host for CPU, device for CUDA); host pointers are marked as such.
 *
 * Contract for every operation:
 * - runs inside a call (begin_call .. end_call) and reads stream, workspace and error sink
 *   from its fngd_call_t;
 * - returns FNGD_SUCCESS or an error status; on error it has written a message into
 *   call->err (fngd_errf) and has not written to any output except workspace;
 * - enqueues its work on call->stream (CUDA) and does not block unless it says so;
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

/* What every operation of one public call shares, in one struct (as NCCL passes a call's
 * arguments): the caller's stream, the handle's workspace and the error sink. The host fills
 * it once per public entry point (src/host/call.h); the operations only read it. */
typedef struct fngd_call {
    fngd_stream_t stream;  /* NULL: the backend's default stream */
    void* ws;              /* workspace (backend memory) of ws_bytes, NULL before prepare */
    size_t ws_bytes;
    fngd_err_t* err;       /* a failing operation writes its message here (fngd_errf) */
    int restore_device;    /* begin_call/end_call's own: the caller's device, or -1 */
} fngd_call_t;

typedef struct fngd_backend_ops {
    const char* name;

    /* Lifecycle. create enters the device (CUDA) and creates library handles; it and destroy
     * are the only operations that need no open call. */
    fngd_status_t (*create)(const fngd_config_t* cfg, fngd_backend_ctx_t** ctx, fngd_err_t* err);
    void (*destroy)(fngd_backend_ctx_t* ctx);

    /* One public call: begin_call makes the context's device current (CUDA: recording the
     * caller's in call->restore_device), end_call switches back. Every operation below runs
     * between the two. Calls nest (an inner begin finds the device current and records
     * nothing); end_call after a failed begin_call does nothing. Library handles are bound to
     * call->stream by the operations that use them, and rebound only when the stream differs
     * from the one they were last bound to. */
    fngd_status_t (*begin_call)(fngd_backend_ctx_t* ctx, fngd_call_t* call);
    void (*end_call)(fngd_backend_ctx_t* ctx, fngd_call_t* call);

    /* Memory. alloc returns zero-filled memory, 256-byte aligned; blocking. free is best
     * effort and may also run outside a call (cleanup). */
    fngd_status_t (*alloc)(fngd_backend_ctx_t* ctx, size_t bytes, void** ptr,
                           const fngd_call_t* call);
    void (*free)(fngd_backend_ctx_t* ctx, void* ptr);
    /* Blocking copies between host memory and backend memory. */
    fngd_status_t (*upload)(fngd_backend_ctx_t* ctx, void* dst, const void* host_src,
                            size_t bytes, const fngd_call_t* call);
    fngd_status_t (*download)(fngd_backend_ctx_t* ctx, void* host_dst, const void* src,
                              size_t bytes, const fngd_call_t* call);
    fngd_status_t (*synchronize)(fngd_backend_ctx_t* ctx, const fngd_call_t* call);

    /* The one workspace query: *bytes = the workspace that layer_gram and weighted_grad need
     * for a batch of up to N on each of layers[0..num_layers) (with its resolved method) and
     * that factor_solve needs for solve_count matrices of order up to N, or one (a retry), (0:
     * no solve), whichever is largest. An op may be given less than its share only by a
     * caller that queried less. */
    fngd_status_t (*workspace_bytes)(fngd_backend_ctx_t* ctx, const fngd_layer_t* layers,
                                     int num_layers, int N, int solve_count, size_t* bytes,
                                     const fngd_call_t* call);

    /* Check every array of the host list arrays[0..count) for NaN or Inf: *nonfinite = 0 if
     * all are finite, else 1 + the index of an array that is not (CPU: the first such). One
     * blocking result for the whole list (one synchronisation on a GPU). */
    fngd_status_t (*check_finite)(fngd_backend_ctx_t* ctx, const fngd_array_ref_t* arrays,
                                  int count, int* nonfinite, const fngd_call_t* call);

    /* K (N x N, row-major, symmetric, both triangles written) = scale^2 * Gram of the layer's
     * per-sample gradients on this batch, using layer->method; with accumulate != 0 adds to K
     * instead. scale converts the caller's gradients to per-sample ones (N or 1). */
    fngd_status_t (*layer_gram)(fngd_backend_ctx_t* ctx, const fngd_layer_t* layer,
                                const fngd_layer_batch_t* batch, int N, float scale, float* K,
                                int accumulate, const fngd_call_t* call);

    /* Damped Cholesky solves in double precision of `count` Gram matrices of order N (global
     * mode: one; per-layer mode: one per layer, so a backend can use one batched
     * factorization and one blocking status read). For matrix s, K_s = K + s*N*N:
     *   shift = damping_kind == TRACE_RELATIVE ? damping * trace(K_s) : N * damping
     *   shift = max(shift, min_shift[s])
     *   x = (K_s + shift I)^-1 r,   r = rhs (N floats, backend memory, shared) or all ones
     *   alpha_s = x, or with range_filter != 0 (FNGD_FILTER_RANGE) the same factor applied
     *   twice: alpha_s = x - shift (K_s + shift I)^-1 x = (K_s + shift I)^-1 K_s x,
     * written to alpha + s*ld_alpha. info[s] (host): 0 on success, > 0 if not positive
     * definite (alpha_s then untouched); shift_used[s], trace_K[s] (host). A NaN in any
     * matrix fails the call before any alpha is written. Blocking (it reads the statuses). */
    fngd_status_t (*factor_solve)(fngd_backend_ctx_t* ctx, const float* K, int count, int N,
                                  fngd_damping_kind_t damping_kind, double damping,
                                  const double* min_shift, const float* rhs, int range_filter,
                                  float* alpha, int ld_alpha, int* info, double* shift_used,
                                  double* trace_K, const fngd_call_t* call);

    /* The coefficient table, all nsets sets of a batch in one call. Per-sample keys:
     * key_i = ids ? ids[i] : key_offset + i (ids: host memory, validated: in range, distinct).
     * Table layout key-major: table[key * nsets + set]; seen[key] != 0 once the key is stored.
     * scatter: for every set s and i < N, table[key_i * nsets + s] = alpha[s * ld_alpha + i];
     * seen[key_i] = 1. ld_alpha >= N. */
    fngd_status_t (*scatter_coefs)(fngd_backend_ctx_t* ctx, float* table, uint8_t* seen,
                                   int nsets, const int64_t* ids, int64_t key_offset, int N,
                                   const float* alpha, int ld_alpha, const fngd_call_t* call);
    /* gather: for every set s and i < N, out[s * ld_out + i] = out_scale *
     * (seen[key_i] ? table[key_i * nsets + s] : fallback_value(s)), fallback_value(s) =
     * fallback[s] (STORED_MEAN, nsets floats of backend memory) or 1/N (UNIFORM);
     * *fallback_count (backend memory, int64, required) += the number of unseen keys (once per
     * key, not per set). ld_out >= N. */
    fngd_status_t (*gather_coefs)(fngd_backend_ctx_t* ctx, const float* table,
                                  const uint8_t* seen, int nsets, const int64_t* ids,
                                  int64_t key_offset, int N, fngd_fallback_t fallback_kind,
                                  const float* fallback, float out_scale, float* out, int ld_out,
                                  int64_t* fallback_count, const fngd_call_t* call);
    /* summarize: out[s] (host array of nsets) = summary of table[key * nsets + s] over the
     * keys < num_keys with seen[key] != 0; an empty set reports count 0 and zeros. min and max
     * follow a sequential scan in key order (a NaN at the lowest seen key makes both NaN, a
     * NaN later is skipped); the sum takes every value. Blocking (one synchronisation). */
    fngd_status_t (*summarize_coefs)(fngd_backend_ctx_t* ctx, const float* table,
                                     const uint8_t* seen, int64_t num_keys, int nsets,
                                     fngd_coef_summary_t* out, const fngd_call_t* call);

    /* Direction of one layer: out_w (n_weight floats) and out_b (n_bias floats, if the layer
     * has one) = scale * sum_i alpha[i] * g_i, the coefficient-weighted per-sample gradient,
     * formed as one reduction without per-sample gradients (docs/METHOD.md section 4). */
    fngd_status_t (*weighted_grad)(fngd_backend_ctx_t* ctx, const fngd_layer_t* layer,
                                   const fngd_layer_batch_t* batch, int N, const float* alpha,
                                   float scale, float* out_w, float* out_b,
                                   const fngd_call_t* call);

    /* SGD with momentum, decoupled from preconditioning, for every tensor of the host array
     * tensors[0..count) in one pass (a backend may fuse them into one launch):
     *   d = dir + weight_decay * param;  mom = momentum * mom + d (mom may be NULL if
     *   momentum == 0, then mom_val = d);  param -= lr * mom_val.
     * All tensors are validated before any is updated. */
    fngd_status_t (*sgd_update)(fngd_backend_ctx_t* ctx, const fngd_update_tensor_t* tensors,
                                int count, float lr, float momentum, float weight_decay,
                                const fngd_call_t* call);

    /* Step-size control (fngd_step_control_t): *out (one float, backend memory) = sum_k
     * x[k] * y[k] over n floats, accumulated in double; enqueued, not blocking (read it back
     * with download). scale: x[0..n) *= s. */
    fngd_status_t (*dot)(fngd_backend_ctx_t* ctx, const float* x, const float* y, int64_t n,
                         float* out, const fngd_call_t* call);
    fngd_status_t (*scale)(fngd_backend_ctx_t* ctx, float* x, int64_t n, float s,
                           const fngd_call_t* call);

    /* dst[0..n) = src[0..n) (both backend memory). */
    fngd_status_t (*copy)(fngd_backend_ctx_t* ctx, float* dst, const float* src, int64_t n,
                          const fngd_call_t* call);
} fngd_backend_ops_t;

/* A backend's operation table, labelled by field, from functions named <prefix>_<field>
 * (one list of fields for every backend: a backend that lacks an op does not compile). */
#define FNGD_BACKEND_OPS_TABLE(label, prefix)                                                  \
    {                                                                                          \
        .name = label, .create = prefix##_create, .destroy = prefix##_destroy,                \
        .begin_call = prefix##_begin_call, .end_call = prefix##_end_call,                     \
        .alloc = prefix##_alloc, .free = prefix##_free, .upload = prefix##_upload,            \
        .download = prefix##_download, .synchronize = prefix##_synchronize,                   \
        .workspace_bytes = prefix##_workspace_bytes, .check_finite = prefix##_check_finite,   \
        .layer_gram = prefix##_layer_gram, .factor_solve = prefix##_factor_solve,             \
        .scatter_coefs = prefix##_scatter_coefs, .gather_coefs = prefix##_gather_coefs,       \
        .summarize_coefs = prefix##_summarize_coefs, .weighted_grad = prefix##_weighted_grad, \
        .sgd_update = prefix##_sgd_update, .dot = prefix##_dot, .scale = prefix##_scale,      \
        .copy = prefix##_copy,                                                                \
    }

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
