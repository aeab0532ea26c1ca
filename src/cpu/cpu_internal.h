/* Private to the CPU reference backend (src/cpu): the context, the workspace plans shared by
 * workspace_bytes and the operations (so the size reported is exactly the size used), and the
 * per-job entry points that cpu_backend.c puts into the operation table. */
#ifndef FNGD_CPU_INTERNAL_H
#define FNGD_CPU_INTERNAL_H

#include <stddef.h>
#include <stdint.h>

#include "backend.h"

#ifdef __cplusplus
extern "C" {
#endif

/* Default chunk budget: past a few hundred MiB the chunked GEMM/SYRK calls already run at full
 * BLAS speed, so more workspace would buy nothing on a CPU. The config cap lowers it. */
#define FNGD_CPU_DEFAULT_CHUNK_BUDGET ((size_t)256 << 20)

struct fngd_backend_ctx {
    fngd_config_t cfg;
    /* Target workspace of one layer op in bytes; chunk sizes (output channels for the
     * materialising Gram, samples for the position Gram and the weighted reduction) are the
     * largest that keep the workspace under it (one chunk minimum; see cpu_workspace.c). */
    size_t chunk_budget;
};

/* Test hook: change the chunk budget of a context (forces the chunked paths with small
 * problems). workspace_bytes must be queried again after a change. */
void fngd_cpu_set_chunk_budget(fngd_backend_ctx_t* ctx, size_t bytes);

/* ---- workspace carving: every piece is rounded to 64 bytes (cache line) ------------------- */
#define FNGD_CPU_WS_ALIGN ((size_t)64)

static inline size_t cpu_ws_piece(size_t nfloats) {
    size_t b = nfloats * sizeof(float);
    return (b + FNGD_CPU_WS_ALIGN - 1) / FNGD_CPU_WS_ALIGN * FNGD_CPU_WS_ALIGN;
}

typedef struct cpu_ws {
    char* next;
} cpu_ws_t;

static inline float* cpu_ws_take(cpu_ws_t* ws, size_t nfloats) {
    float* p = (float*)ws->next;
    ws->next += cpu_ws_piece(nfloats);
    return p;
}

/* ---- plans ------------------------------------------------------------------------------- */
typedef struct cpu_plan {
    size_t bytes;  /* workspace the op needs */
    int chunk;     /* output channels (materialise) or samples (position, reduction) per chunk */
} cpu_plan_t;

/* Plans for layer_gram with `method` (ignored for NORM_AFFINE and GENERIC) and for
 * weighted_grad: the largest chunk under the context's budget whose workspace also fits in
 * ws_limit (SIZE_MAX for a size query). INTERNAL (message in err) when even one chunk does not
 * fit in ws_limit; NOT_SUPPORTED when a BLAS dimension would not fit in an int. */
fngd_status_t cpu_plan_gram(const fngd_backend_ctx_t* ctx, const fngd_layer_t* layer, int N,
                            fngd_gram_method_t method, size_t ws_limit, cpu_plan_t* plan,
                            fngd_err_t* err);
fngd_status_t cpu_plan_reduce(const fngd_backend_ctx_t* ctx, const fngd_layer_t* layer, int N,
                              size_t ws_limit, cpu_plan_t* plan, fngd_err_t* err);
/* The op table's workspace_bytes (backend.h): per layer the larger of the Gram plan (with the
 * layer's method; both while it is still AUTO) and the reduction plan; and one solve's. */
fngd_status_t cpu_workspace_bytes(fngd_backend_ctx_t* ctx, const fngd_layer_t* layers,
                                  int num_layers, int N, int solve_count, size_t* bytes,
                                  const fngd_call_t* call);
/* Workspace of one damped solve of order N (cpu_solve.c). */
size_t cpu_solve_workspace_bytes(int N);

/* ---- layout helpers (cpu_im2col.c) ------------------------------------------------------- */
/* Patches of samples [i0, i0+nb) of a CONV2D input, (nb*T) x p row-major, patch column
 * c*kh*kw + ki*kw + kj, zeros where the window falls into the padding. */
void cpu_im2col(const fngd_layer_t* layer, const float* input, int i0, int nb, float* out);
/* grad_output of samples [i0, i0+nb) of a CONV2D layer (N x q x T) as (nb*T) x q rows, each
 * sample's rows multiplied by mult * row_scale[i - i0] (row_scale NULL: by mult). */
void cpu_conv_rows(const fngd_layer_t* layer, const float* grad_output, int i0, int nb,
                   const float* row_scale, float mult, float* out);
void cpu_fill(float* x, size_t n, float value);
/* Mirror the upper triangle of the row-major n x n matrix K into the lower one. */
void cpu_mirror_upper(float* K, int n);

/* ---- operations (one file each, named after the op as on the CUDA side; the signatures
 * are backend.h's) --------------------------------------------------------------------------- */
fngd_status_t cpu_check_finite(fngd_backend_ctx_t* ctx, const fngd_array_ref_t* arrays,
                               int count, int* nonfinite, const fngd_call_t* call);
fngd_status_t cpu_layer_gram(fngd_backend_ctx_t* ctx, const fngd_layer_t* layer,
                             const fngd_layer_batch_t* batch, int N, float scale, float* K,
                             int accumulate, const fngd_call_t* call);
/* The two exact methods for LINEAR and CONV2D (cpu_gram_materialize.c, cpu_gram_position.c);
 * ws already checked against the plan. */
fngd_status_t cpu_gram_materialize(const fngd_layer_t* layer, const fngd_layer_batch_t* batch,
                                   int N, float scale, float* K, int accumulate,
                                   const cpu_plan_t* plan, void* ws);
/* EMBEDDING (cpu_embedding.c): sparse-row Gram and scatter-add reduction. */
size_t cpu_embedding_gram_bytes(const fngd_layer_t* layer, int N);
fngd_status_t cpu_embedding_gram(const fngd_layer_t* layer, const fngd_layer_batch_t* batch,
                                 int N, float scale, float* K, int accumulate, void* ws,
                                 fngd_err_t* err);
fngd_status_t cpu_embedding_reduce(const fngd_layer_t* layer, const fngd_layer_batch_t* batch,
                                   int N, const float* alpha, float scale, float* out_w,
                                   fngd_err_t* err);
fngd_status_t cpu_gram_position(const fngd_layer_t* layer, const fngd_layer_batch_t* batch,
                                int N, float scale, float* K, int accumulate,
                                const cpu_plan_t* plan, void* ws);

fngd_status_t cpu_factor_solve(fngd_backend_ctx_t* ctx, const float* K, int count, int N,
                               fngd_damping_kind_t damping_kind, double damping,
                               const double* min_shift, const float* rhs, int range_filter,
                               float* alpha, int ld_alpha, int* info, double* shift_used,
                               double* trace_K, const fngd_call_t* call);

fngd_status_t cpu_scatter_coefs(fngd_backend_ctx_t* ctx, float* table, uint8_t* seen,
                                int nsets, const int64_t* ids, int64_t key_offset, int N,
                                const float* alpha, int ld_alpha, const fngd_call_t* call);
fngd_status_t cpu_gather_coefs(fngd_backend_ctx_t* ctx, const float* table,
                               const uint8_t* seen, int nsets, const int64_t* ids,
                               int64_t key_offset, int N, fngd_fallback_t fallback_kind,
                               const float* fallback, float out_scale, float* out, int ld_out,
                               int64_t* fallback_count, const fngd_call_t* call);
fngd_status_t cpu_summarize_coefs(fngd_backend_ctx_t* ctx, const float* table,
                                  const uint8_t* seen, int64_t num_keys, int nsets,
                                  fngd_coef_summary_t* out, const fngd_call_t* call);

fngd_status_t cpu_weighted_grad(fngd_backend_ctx_t* ctx, const fngd_layer_t* layer,
                                const fngd_layer_batch_t* batch, int N, const float* alpha,
                                float scale, float* out_w, float* out_b,
                                const fngd_call_t* call);

fngd_status_t cpu_dot(fngd_backend_ctx_t* ctx, const float* x, const float* y, int64_t n,
                      float* out, const fngd_call_t* call);
fngd_status_t cpu_scale(fngd_backend_ctx_t* ctx, float* x, int64_t n, float s,
                        const fngd_call_t* call);
fngd_status_t cpu_sgd_update(fngd_backend_ctx_t* ctx, const fngd_update_tensor_t* tensors,
                             int count, float lr, float momentum, float weight_decay,
                             const fngd_call_t* call);

#ifdef __cplusplus
}
#endif

#endif
