/* The CPU reference backend's operation table, lifecycle and memory (host memory through
 * fngd_host_alloc, so fault injection reaches it) and copies. Every other operation lives in
 * the file named after it, as its CUDA twin does (cpu_X.c / cuda_X.cu): cpu_check_finite.c,
 * cpu_workspace.c, cpu_gram*.c, cpu_solve.c, cpu_solve_batched.c, cpu_coefs.c,
 * cpu_weighted.c, cpu_sgd_update.c, cpu_step_control.c. Streams are ignored: everything is
 * blocking. */
#include <string.h>

#include "alloc.h"
#include "cpu_internal.h"

#define CPU_ALIGN ((size_t)256)

static fngd_status_t cpu_create(const fngd_config_t* cfg, fngd_backend_ctx_t** ctx,
                                fngd_err_t* err) {
    FNGD_REQUIRE(err, ctx, FNGD_ERROR_INVALID_ARGUMENT, "cpu create: ctx is NULL");
    *ctx = NULL;
    fngd_backend_ctx_t* c = (fngd_backend_ctx_t*)fngd_host_alloc(sizeof(*c), CPU_ALIGN);
    FNGD_REQUIRE(err, c, FNGD_ERROR_OUT_OF_MEMORY, "cpu create: out of host memory (%zu bytes)",
                 sizeof(*c));
    if (cfg) c->cfg = *cfg;
    c->chunk_budget = FNGD_CPU_DEFAULT_CHUNK_BUDGET;
    if (cfg && cfg->max_workspace_bytes > 0 && cfg->max_workspace_bytes < c->chunk_budget)
        c->chunk_budget = cfg->max_workspace_bytes;
    *ctx = c;
    return FNGD_SUCCESS;
}

static void cpu_destroy(fngd_backend_ctx_t* ctx) { fngd_host_free(ctx); }

void fngd_cpu_set_chunk_budget(fngd_backend_ctx_t* ctx, size_t bytes) {
    if (ctx) ctx->chunk_budget = bytes;
}

static fngd_status_t cpu_alloc(fngd_backend_ctx_t* ctx, size_t bytes, void** ptr,
                               fngd_err_t* err) {
    FNGD_REQUIRE(err, ptr, FNGD_ERROR_INVALID_ARGUMENT, "cpu alloc: ptr is NULL");
    *ptr = fngd_host_alloc(bytes, CPU_ALIGN);
    FNGD_REQUIRE(err, *ptr, FNGD_ERROR_OUT_OF_MEMORY, "cpu alloc: out of host memory (%zu bytes)",
                 bytes);
    return FNGD_SUCCESS;
}

static void cpu_free(fngd_backend_ctx_t* ctx, void* ptr) { fngd_host_free(ptr); }

static fngd_status_t cpu_memcpy(void* dst, const void* src, size_t bytes, const char* what,
                                fngd_err_t* err) {
    FNGD_REQUIRE(err, bytes == 0 || (dst && src), FNGD_ERROR_INVALID_ARGUMENT,
                 "cpu %s: null pointer for %zu bytes", what, bytes);
    if (bytes) memmove(dst, src, bytes);
    return FNGD_SUCCESS;
}

static fngd_status_t cpu_upload(fngd_backend_ctx_t* ctx, void* dst, const void* host_src,
                                size_t bytes, fngd_stream_t stream, fngd_err_t* err) {
    return cpu_memcpy(dst, host_src, bytes, "upload", err);
}

static fngd_status_t cpu_download(fngd_backend_ctx_t* ctx, void* host_dst, const void* src,
                                  size_t bytes, fngd_stream_t stream, fngd_err_t* err) {
    return cpu_memcpy(host_dst, src, bytes, "download", err);
}

static fngd_status_t cpu_copy(fngd_backend_ctx_t* ctx, float* dst, const float* src, int64_t n,
                              fngd_stream_t stream, fngd_err_t* err) {
    FNGD_REQUIRE(err, n >= 0, FNGD_ERROR_INVALID_ARGUMENT, "cpu copy: n = %lld < 0",
                 (long long)n);
    return cpu_memcpy(dst, src, (size_t)n * sizeof(float), "copy", err);
}

static fngd_status_t cpu_synchronize(fngd_backend_ctx_t* ctx, fngd_stream_t stream,
                                     fngd_err_t* err) {
    return FNGD_SUCCESS; /* every CPU op has finished when it returns */
}

static const fngd_backend_ops_t g_cpu_ops = {
    .name = "cpu",
    .create = cpu_create,
    .destroy = cpu_destroy,
    .alloc = cpu_alloc,
    .free = cpu_free,
    .upload = cpu_upload,
    .download = cpu_download,
    .synchronize = cpu_synchronize,
    .workspace_bytes = cpu_workspace_bytes,
    .solver_workspace_bytes = cpu_solver_workspace_bytes,
    .check_finite = cpu_check_finite,
    .layer_gram = cpu_layer_gram,
    .factor_solve = cpu_factor_solve,
    .factor_solve_batched = cpu_factor_solve_batched,
    .solver_batched_workspace_bytes = cpu_solver_batched_workspace_bytes,
    .scatter_coefs = cpu_scatter_coefs,
    .gather_coefs = cpu_gather_coefs,
    .summarize_coefs = cpu_summarize_coefs,
    .weighted_grad = cpu_weighted_grad,
    .sgd_update = cpu_sgd_update,
    .dot = cpu_dot,
    .scale = cpu_scale,
    .copy = cpu_copy,
};

const fngd_backend_ops_t* fngd_cpu_backend_ops(void) { return &g_cpu_ops; }
