/* The CPU reference backend's operation table, lifecycle and memory (host memory through
 * fngd_host_alloc, so fault injection reaches it) and copies. Every other operation lives in
 * the file named after it, as its CUDA twin does (cpu_X.c / cuda_X.cu): cpu_check_finite.c,
 * cpu_workspace.c, cpu_gram*.c, cpu_solve.c, cpu_coefs.c,
 * cpu_weighted.c, cpu_sgd_update.c, cpu_step_control.c. Streams are ignored: everything is
 * blocking, and a call binds nothing (begin_call and end_call do no work). */
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

static fngd_status_t cpu_begin_call(fngd_backend_ctx_t* ctx, fngd_call_t* call) {
    return FNGD_SUCCESS;
}

static void cpu_end_call(fngd_backend_ctx_t* ctx, fngd_call_t* call) {}

static fngd_status_t cpu_alloc(fngd_backend_ctx_t* ctx, size_t bytes, void** ptr,
                               const fngd_call_t* call) {
    fngd_err_t* err = call->err;
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
                                size_t bytes, const fngd_call_t* call) {
    return cpu_memcpy(dst, host_src, bytes, "upload", call->err);
}

static fngd_status_t cpu_download(fngd_backend_ctx_t* ctx, void* host_dst, const void* src,
                                  size_t bytes, const fngd_call_t* call) {
    return cpu_memcpy(host_dst, src, bytes, "download", call->err);
}

static fngd_status_t cpu_copy(fngd_backend_ctx_t* ctx, float* dst, const float* src, int64_t n,
                              const fngd_call_t* call) {
    FNGD_REQUIRE(call->err, n >= 0, FNGD_ERROR_INVALID_ARGUMENT, "cpu copy: n = %lld < 0",
                 (long long)n);
    return cpu_memcpy(dst, src, (size_t)n * sizeof(float), "copy", call->err);
}

static fngd_status_t cpu_synchronize(fngd_backend_ctx_t* ctx, const fngd_call_t* call) {
    return FNGD_SUCCESS; /* every CPU op has finished when it returns */
}

static const fngd_backend_ops_t g_cpu_ops = FNGD_BACKEND_OPS_TABLE("cpu", cpu);

const fngd_backend_ops_t* fngd_cpu_backend_ops(void) { return &g_cpu_ops; }
