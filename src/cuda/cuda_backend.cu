/* CUDA backend: the operation table, lifecycle (cuBLAS/cuSOLVER handles, pinned scratch), the
 * call (device entered once per public call, library handles bound to its stream) and the
 * memory operations. Every other operation lives in the file named after it, as its CPU twin
 * does (cuda_X.cu / cpu_X.c): cuda_check_finite.cu, cuda_workspace.cu, cuda_gram.cu,
 * cuda_solve.cu, cuda_coefs.cu, cuda_weighted.cu, cuda_sgd_update.cu, cuda_step_control.cu. */
#include <stdlib.h>

#include "cuda_common.h"
#include "cuda_cudnn.h"

const char* fngd_cusolver_status_name(cusolverStatus_t s)
{
    switch (s) {
    case CUSOLVER_STATUS_SUCCESS: return "CUSOLVER_STATUS_SUCCESS";
    case CUSOLVER_STATUS_NOT_INITIALIZED: return "CUSOLVER_STATUS_NOT_INITIALIZED";
    case CUSOLVER_STATUS_ALLOC_FAILED: return "CUSOLVER_STATUS_ALLOC_FAILED";
    case CUSOLVER_STATUS_INVALID_VALUE: return "CUSOLVER_STATUS_INVALID_VALUE";
    case CUSOLVER_STATUS_ARCH_MISMATCH: return "CUSOLVER_STATUS_ARCH_MISMATCH";
    case CUSOLVER_STATUS_EXECUTION_FAILED: return "CUSOLVER_STATUS_EXECUTION_FAILED";
    case CUSOLVER_STATUS_INTERNAL_ERROR: return "CUSOLVER_STATUS_INTERNAL_ERROR";
    case CUSOLVER_STATUS_MATRIX_TYPE_NOT_SUPPORTED: return "CUSOLVER_STATUS_MATRIX_TYPE_NOT_SUPPORTED";
    case CUSOLVER_STATUS_NOT_SUPPORTED: return "CUSOLVER_STATUS_NOT_SUPPORTED";
    default: return "cuSOLVER error";
    }
}

fngd_status_t fngd_cuda_bind(fngd_backend_ctx_t* ctx, cudaStream_t stream, fngd_err_t* err)
{
    if (ctx->bound && ctx->bound_stream == stream) return FNGD_SUCCESS;
    ctx->bound = 0; /* until both handles are on the new stream */
    FNGD_CUBLAS_TRY(err, cublasSetStream(ctx->blas, stream));
    /* cublasSetStream resets the workspace to cuBLAS's own pool: put ours back. */
    FNGD_CUBLAS_TRY(err, cublasSetWorkspace(ctx->blas, ctx->blas_ws, FNGD_CUDA_BLAS_WS_BYTES));
    FNGD_CUSOLVER_TRY(err, cusolverDnSetStream(ctx->solver, stream));
    ctx->bound_stream = stream;
    ctx->bound = 1;
    return FNGD_SUCCESS;
}

/* The CUDA runtime's current device is per host thread and belongs to the caller: a program
 * that steps a handle on device 1 while its thread works on device 0 finds device 0 current
 * afterwards. begin_call switches only when the device differs (the single-GPU case costs one
 * cudaGetDevice) and records what to restore; a nested call finds the device current and
 * records nothing. */
static fngd_status_t fngd_cuda_begin_call(fngd_backend_ctx_t* ctx, fngd_call_t* call)
{
    call->restore_device = -1;
    int current = -1;
    cudaError_t e = cudaGetDevice(&current);
    if (e == cudaSuccess && current != ctx->device) e = cudaSetDevice(ctx->device);
    if (e != cudaSuccess)
        return FNGD_FAIL(call->err, fngd_cuda_status(e),
                         "entering CUDA device %d failed: %s (%s)", ctx->device,
                         cudaGetErrorName(e), cudaGetErrorString(e));
    if (current != ctx->device) call->restore_device = current;
    return FNGD_SUCCESS;
}

/* A failed restore cannot be returned from here; it stays the thread's last CUDA error, where
 * the caller's next cudaGetLastError finds it. */
static void fngd_cuda_end_call(fngd_backend_ctx_t* ctx, fngd_call_t* call)
{
    if (call->restore_device >= 0) (void)cudaSetDevice(call->restore_device);
    call->restore_device = -1;
}

static void fngd_cuda_destroy(fngd_backend_ctx_t* ctx)
{
    if (!ctx) return;
    /* Best effort: if the device cannot be entered the frees below still run (device
     * pointers are freed by address, whichever device is current). */
    fngd_cuda_device_guard dev;
    (void)dev.enter(ctx->device, NULL);
    /* fngd_destroy has synchronised the stream of the handle's last call (the calls of one
     * handle are ordered on its streams); the id ring waits on its own slot events. No
     * device-wide synchronisation: other work on the device is not the handle's. */
    fngd_cuda_ids_destroy(ctx);
    fngd_cuda_dnn_destroy(ctx);
    fngd_cuda_summary_destroy(ctx);
    if (ctx->scratch_dev) cudaFree(ctx->scratch_dev);
    if (ctx->scratch_host) cudaFreeHost(ctx->scratch_host);
    if (ctx->batch_host) cudaFreeHost(ctx->batch_host);
    if (ctx->solver) cusolverDnDestroy(ctx->solver);
    if (ctx->blas) cublasDestroy(ctx->blas);
    if (ctx->blas_ws) cudaFree(ctx->blas_ws); /* after the handle that referenced it */
    free(ctx);
}

static fngd_status_t cuda_create_into(const fngd_config_t* cfg, fngd_backend_ctx_t* ctx,
                                      fngd_err_t* err)
{
    int count = 0;
    FNGD_CUDA_TRY(err, cudaGetDeviceCount(&count));
    FNGD_REQUIRE(err, cfg->device >= 0 && cfg->device < count, FNGD_ERROR_NOT_SUPPORTED,
                 "CUDA device %d requested but %d device(s) present", cfg->device, count);
    FNGD_REQUIRE(err, cfg->max_batch > 0, FNGD_ERROR_INVALID_ARGUMENT,
                 "max_batch must be positive (got %d)", cfg->max_batch);
    ctx->device = cfg->device;
    ctx->max_batch = cfg->max_batch;
    fngd_cuda_device_guard dev;
    FNGD_TRY(dev.enter(ctx->device, err));
    FNGD_CUDA_TRY(err, cudaDeviceGetAttribute(&ctx->sm_count, cudaDevAttrMultiProcessorCount,
                                              ctx->device));
    FNGD_CUBLAS_TRY(err, cublasCreate(&ctx->blas));
    FNGD_CUBLAS_TRY(err, cublasSetMathMode(ctx->blas, CUBLAS_DEFAULT_MATH));
    FNGD_CUSOLVER_TRY(err, cusolverDnCreate(&ctx->solver));
    FNGD_CUDA_TRY(err, cudaMalloc(&ctx->blas_ws, FNGD_CUDA_BLAS_WS_BYTES));
    FNGD_CUBLAS_TRY(err, cublasSetWorkspace(ctx->blas, ctx->blas_ws, FNGD_CUDA_BLAS_WS_BYTES));
    FNGD_CUDA_TRY(err, cudaMalloc((void**)&ctx->scratch_dev, sizeof(fngd_cuda_scratch)));
    FNGD_CUDA_TRY(err, cudaMallocHost((void**)&ctx->scratch_host, sizeof(fngd_cuda_scratch)));
    FNGD_TRY(fngd_cuda_dnn_create(ctx, cfg, err));
    return fngd_cuda_ids_create(ctx, err);
}

static fngd_status_t fngd_cuda_create(const fngd_config_t* cfg, fngd_backend_ctx_t** out,
                                      fngd_err_t* err)
{
    *out = NULL;
    fngd_backend_ctx_t* ctx = (fngd_backend_ctx_t*)calloc(1, sizeof(*ctx));
    FNGD_REQUIRE(err, ctx != NULL, FNGD_ERROR_OUT_OF_MEMORY, "out of host memory");
    const fngd_status_t s = cuda_create_into(cfg, ctx, err);
    if (s != FNGD_SUCCESS) {
        fngd_cuda_destroy(ctx);
        return s;
    }
    *out = ctx;
    return FNGD_SUCCESS;
}

static fngd_status_t fngd_cuda_alloc(fngd_backend_ctx_t* ctx, size_t bytes, void** ptr,
                                     const fngd_call_t* call)
{
    fngd_err_t* err = call->err;
    *ptr = NULL;
    if (bytes == 0) bytes = 1;
    void* p = NULL;
    FNGD_CUDA_TRY(err, cudaMalloc(&p, bytes)); /* 256-byte aligned by the runtime */
    cudaError_t e = cudaMemsetAsync(p, 0, bytes, cudaStreamPerThread);
    if (e == cudaSuccess) e = cudaStreamSynchronize(cudaStreamPerThread);
    if (e != cudaSuccess) {
        cudaFree(p);
        return FNGD_FAIL(err, fngd_cuda_status(e), "zero-filling %zu device bytes: %s (%s)",
                         bytes, cudaGetErrorName(e), cudaGetErrorString(e));
    }
    *ptr = p;
    return FNGD_SUCCESS;
}

/* May run outside a call (cleanup): enters the device itself, best effort as in destroy. */
static void fngd_cuda_free(fngd_backend_ctx_t* ctx, void* ptr)
{
    if (!ptr) return;
    fngd_cuda_device_guard dev;
    (void)dev.enter(ctx->device, NULL);
    cudaFree(ptr);
}

static fngd_status_t fngd_cuda_upload(fngd_backend_ctx_t* ctx, void* dst, const void* host_src,
                                      size_t bytes, const fngd_call_t* call)
{
    if (bytes == 0) return FNGD_SUCCESS;
    fngd_err_t* err = call->err;
    const cudaStream_t s = fngd_cuda_stream(call->stream);
    FNGD_CUDA_TRY(err, cudaMemcpyAsync(dst, host_src, bytes, cudaMemcpyHostToDevice, s));
    FNGD_CUDA_TRY(err, cudaStreamSynchronize(s));
    return FNGD_SUCCESS;
}

static fngd_status_t fngd_cuda_download(fngd_backend_ctx_t* ctx, void* host_dst,
                                        const void* src, size_t bytes, const fngd_call_t* call)
{
    if (bytes == 0) return FNGD_SUCCESS;
    fngd_err_t* err = call->err;
    const cudaStream_t s = fngd_cuda_stream(call->stream);
    FNGD_CUDA_TRY(err, cudaMemcpyAsync(host_dst, src, bytes, cudaMemcpyDeviceToHost, s));
    FNGD_CUDA_TRY(err, cudaStreamSynchronize(s));
    return FNGD_SUCCESS;
}

static fngd_status_t fngd_cuda_synchronize(fngd_backend_ctx_t* ctx, const fngd_call_t* call)
{
    FNGD_CUDA_TRY(call->err, cudaStreamSynchronize(fngd_cuda_stream(call->stream)));
    return FNGD_SUCCESS;
}

static fngd_status_t fngd_cuda_copy(fngd_backend_ctx_t* ctx, float* dst, const float* src,
                                    int64_t n, const fngd_call_t* call)
{
    if (n <= 0 || dst == src) return FNGD_SUCCESS;
    FNGD_CUDA_TRY(call->err, cudaMemcpyAsync(dst, src, (size_t)n * sizeof(float),
                                             cudaMemcpyDeviceToDevice,
                                             fngd_cuda_stream(call->stream)));
    return FNGD_SUCCESS;
}

static const fngd_backend_ops_t fngd_cuda_ops = FNGD_BACKEND_OPS_TABLE("cuda", fngd_cuda);

extern "C" const fngd_backend_ops_t* fngd_cuda_backend_ops(void) { return &fngd_cuda_ops; }

extern "C" int fngd_cuda_device_available(void)
{
    int count = 0;
    const cudaError_t pending = cudaPeekAtLastError();
    if (cudaGetDeviceCount(&count) != cudaSuccess) {
        /* Clear the "no device / no driver" status this query raised, never an error the
         * caller had pending before it. */
        if (pending == cudaSuccess) (void)cudaGetLastError();
        return 0;
    }
    return count > 0;
}
