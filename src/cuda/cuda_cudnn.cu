/* The cuDNN reuse path of CONV2D layers and the reuse-phase math mode (cuda_cudnn.h).
 *
 * Why cuDNN: the weighted reduction of a convolution, sum_i alpha_i g_i, is the ordinary
 * weight gradient of the batch once each sample's output gradient is multiplied by its
 * alpha_i (METHOD.md section 4, last part). cuDNN's backward-filter convolution computes that
 * weight gradient without writing im2col to memory, on tensor cores when TF32 is allowed,
 * which is what the SGD step of a framework runs: the FNGD reuse step then costs the SGD
 * weight gradient plus one streaming pass over grad_output (kernels/alpha_scale.cu).
 *
 * The legacy cudnnConvolution* API is used (deprecated in cuDNN 9 but present in every 9.x):
 * it needs no graph building per step, runs inside CUDA graph capture with a caller-given
 * workspace, and its heuristics are host-only, so a plan needs no GPU time to make. */
#include <cstdio>
#include <cstdlib>
#include <cstring>

#include "cuda_cudnn.h"
#include "cuda_layer_params.h"
#include "cuda_plan.h"
#include "kernels/alpha_scale.cuh"

#ifdef FNGD_HAVE_CUDNN
#include <cudnn.h>
#endif

/* Plans kept per context; one per (conv geometry, batch size). A network has a few dozen
 * geometries and most runs two batch sizes (max_batch and a short last batch); when the
 * cache is full the oldest plan is replaced. */
#define FNGD_CUDA_DNN_CACHE 128

namespace {
#ifdef FNGD_HAVE_CUDNN
/* One chunk size's descriptors and algorithm. */
struct conv_set {
    int n;
    cudnnTensorDescriptor_t x, dy;
    cudnnConvolutionBwdFilterAlgo_t algo;
    cudnnMathType_t math;
    size_t ws;
};

struct conv_entry {
    int used;
    int key[14];
    cudnnConvolutionDescriptor_t conv;
    cudnnFilterDescriptor_t w;
    conv_set full, rem;
    fngd_cuda_conv_plan plan;
};
#endif
}  // namespace

struct fngd_cuda_dnn {
    int allow_tf32;
#ifdef FNGD_HAVE_CUDNN
    cudnnHandle_t handle;
    int handle_tried;
    cudnnStatus_t handle_status;
    int next_victim;
    conv_entry entries[FNGD_CUDA_DNN_CACHE];
#endif
};

fngd_status_t fngd_cuda_dnn_create(fngd_backend_ctx_t* ctx, const fngd_config_t* cfg,
                                   fngd_err_t* err)
{
    ctx->dnn = (fngd_cuda_dnn*)calloc(1, sizeof(fngd_cuda_dnn));
    FNGD_REQUIRE(err, ctx->dnn != NULL, FNGD_ERROR_OUT_OF_MEMORY, "out of host memory");
    ctx->dnn->allow_tf32 = cfg->allow_tf32 ? 1 : 0;
    return FNGD_SUCCESS;
}

int fngd_cuda_allow_tf32(const fngd_backend_ctx_t* ctx)
{
    return ctx && ctx->dnn ? ctx->dnn->allow_tf32 : 0;
}

int fngd_cuda_dnn_compiled(void)
{
#ifdef FNGD_HAVE_CUDNN
    return 1;
#else
    return 0;
#endif
}

fngd_cuda_conv_buffers fngd_cuda_conv_buffers_carve(const fngd_layer_t* L, int nc, int nsplit,
                                                    size_t algo_ws, void* ws, size_t* bytes)
{
    fngd_cuda_carve c{(char*)ws, 0};
    fngd_cuda_conv_buffers b = {};
    b.dyw = (float*)c.take((size_t)nc * (size_t)L->out_per_sample * sizeof(float));
    if (L->n_bias && nsplit > 1) b.partial = (float*)c.take((size_t)nsplit * L->q * sizeof(float));
    if (algo_ws) b.algo_ws = c.take(algo_ws);
    *bytes = c.used;
    return b;
}

#ifndef FNGD_HAVE_CUDNN

void fngd_cuda_dnn_destroy(fngd_backend_ctx_t* ctx)
{
    if (!ctx || !ctx->dnn) return;
    free(ctx->dnn);
    ctx->dnn = NULL;
}

fngd_cuda_conv_plan fngd_cuda_conv_plan_get(fngd_backend_ctx_t*, const fngd_layer_t*, int)
{
    fngd_cuda_conv_plan p;
    memset(&p, 0, sizeof p);
    p.algo_rem = -1;
    snprintf(p.why, sizeof p.why, "libfngd was built without cuDNN (FNGD_WITH_CUDNN)");
    return p;
}

fngd_status_t fngd_cuda_conv_weighted_cudnn(fngd_backend_ctx_t*, const fngd_layer_t*,
                                            const fngd_layer_batch_t*, int, const float*, float,
                                            float*, float*, void*, size_t, cudaStream_t,
                                            int* ran, fngd_err_t*)
{
    *ran = 0;
    return FNGD_SUCCESS;
}

fngd_status_t fngd_cuda_conv_wgrad_plain(fngd_backend_ctx_t*, const fngd_layer_t*, int, int,
                                         const float*, const float*, float*, void*, size_t,
                                         size_t*, int*, cudaStream_t, fngd_err_t* err)
{
    return FNGD_FAIL(err, FNGD_ERROR_NOT_SUPPORTED, "libfngd was built without cuDNN");
}

#else /* FNGD_HAVE_CUDNN */

#define FNGD_CUDNN_TRY(err, call)                                                             \
    do {                                                                                      \
        cudnnStatus_t fngd_d_ = (call);                                                       \
        if (fngd_d_ != CUDNN_STATUS_SUCCESS)                                                  \
            return FNGD_FAIL(err,                                                             \
                             fngd_d_ == CUDNN_STATUS_ALLOC_FAILED ? FNGD_ERROR_OUT_OF_MEMORY  \
                                                                  : FNGD_ERROR_BACKEND,       \
                             "%s failed: %s", #call, cudnnGetErrorString(fngd_d_));           \
    } while (0)

namespace {

void destroy_set(conv_set* s)
{
    if (s->x) cudnnDestroyTensorDescriptor(s->x);
    if (s->dy) cudnnDestroyTensorDescriptor(s->dy);
    memset(s, 0, sizeof *s);
}

void destroy_entry(conv_entry* e)
{
    destroy_set(&e->full);
    destroy_set(&e->rem);
    if (e->conv) cudnnDestroyConvolutionDescriptor(e->conv);
    if (e->w) cudnnDestroyFilterDescriptor(e->w);
    memset(e, 0, sizeof *e);
}

void make_key(const fngd_layer_t* L, int N, int tf32, int key[14])
{
    const fngd_layer_desc_t& d = L->desc;
    const int k[14] = {d.in_channels, d.out_channels, d.in_h,     d.in_w,       d.kernel_h,
                       d.kernel_w,    d.stride_h,     d.stride_w, d.pad_h,      d.pad_w,
                       d.dilation_h,  d.dilation_w,   N,          tf32};
    memcpy(key, k, sizeof k);
}

/* Floats of the scaled output gradient of one sample. */
size_t dyw_bytes(const fngd_layer_t* L, int n)
{
    return fngd_cuda_align((size_t)n * (size_t)L->out_per_sample * sizeof(float));
}

/* The descriptors of a chunk of n samples and the first algorithm of cuDNN's heuristic
 * ranking that runs in this math mode within `cap` workspace bytes. */
fngd_status_t make_set(cudnnHandle_t h, const fngd_layer_t* L, int n, int tf32,
                       cudnnConvolutionDescriptor_t conv, cudnnFilterDescriptor_t w, size_t cap,
                       conv_set* s, int* deterministic, fngd_err_t* err)
{
    const fngd_layer_desc_t& d = L->desc;
    s->n = n;
    FNGD_CUDNN_TRY(err, cudnnCreateTensorDescriptor(&s->x));
    FNGD_CUDNN_TRY(err, cudnnCreateTensorDescriptor(&s->dy));
    FNGD_CUDNN_TRY(err, cudnnSetTensor4dDescriptor(s->x, CUDNN_TENSOR_NCHW, CUDNN_DATA_FLOAT, n,
                                                   d.in_channels, d.in_h, d.in_w));
    int on = 0, oc = 0, oh = 0, ow = 0;
    FNGD_CUDNN_TRY(err, cudnnGetConvolution2dForwardOutputDim(conv, s->x, w, &on, &oc, &oh, &ow));
    FNGD_REQUIRE(err, on == n && oc == L->q && oh == L->out_h && ow == L->out_w,
                 FNGD_ERROR_INTERNAL,
                 "cuDNN's output shape %d x %d x %d x %d differs from the layer's %d x %d x %d x %d",
                 on, oc, oh, ow, n, L->q, L->out_h, L->out_w);
    FNGD_CUDNN_TRY(err, cudnnSetTensor4dDescriptor(s->dy, CUDNN_TENSOR_NCHW, CUDNN_DATA_FLOAT, n,
                                                   L->q, L->out_h, L->out_w));
    /* FP32: FMA kernels only (no TF32 even on Ampere+); TF32: cuDNN's default, which permits
     * TF32 tensor cores for float data (what PyTorch runs with cudnn.allow_tf32). */
    const cudnnMathType_t want = tf32 ? CUDNN_DEFAULT_MATH : CUDNN_FMA_MATH;
    FNGD_CUDNN_TRY(err, cudnnSetConvolutionMathType(conv, want));
    int maxc = 0;
    FNGD_CUDNN_TRY(err, cudnnGetConvolutionBackwardFilterAlgorithmMaxCount(h, &maxc));
    cudnnConvolutionBwdFilterAlgoPerf_t perf[16];
    if (maxc > 16) maxc = 16;
    if (maxc < 1) maxc = 1;
    int got = 0;
    FNGD_CUDNN_TRY(err, cudnnGetConvolutionBackwardFilterAlgorithm_v7(h, s->x, s->dy, conv, w,
                                                                      maxc, &got, perf));
    for (int k = 0; k < got; ++k) {
        if (perf[k].status != CUDNN_STATUS_SUCCESS) continue;
        if (!tf32 && perf[k].mathType != CUDNN_FMA_MATH && perf[k].mathType != CUDNN_DEFAULT_MATH)
            continue; /* a tensor-op kernel: not FP32 */
        /* FP32 is the accurate mode: only the direct and GEMM-like algorithms, whose error is
         * the float summation error of the CPU reference (the tests bound it per entry); the
         * transform-based ones (FFT, Winograd) round in the transformed domain. */
        if (!tf32 && (perf[k].algo == CUDNN_CONVOLUTION_BWD_FILTER_ALGO_FFT ||
                      perf[k].algo == CUDNN_CONVOLUTION_BWD_FILTER_ALGO_FFT_TILING ||
                      perf[k].algo == CUDNN_CONVOLUTION_BWD_FILTER_ALGO_WINOGRAD_NONFUSED))
            continue;
        const cudnnMathType_t math = tf32 ? perf[k].mathType : CUDNN_FMA_MATH;
        if (cudnnSetConvolutionMathType(conv, math) != CUDNN_STATUS_SUCCESS) continue;
        size_t ws = 0;
        if (cudnnGetConvolutionBackwardFilterWorkspaceSize(h, s->x, s->dy, conv, w, perf[k].algo,
                                                           &ws) != CUDNN_STATUS_SUCCESS)
            continue;
        if (ws > cap) continue;
        s->algo = perf[k].algo;
        s->math = math;
        s->ws = ws;
        *deterministic = perf[k].determinism == CUDNN_DETERMINISTIC;
        return FNGD_SUCCESS;
    }
    return FNGD_FAIL(err, FNGD_ERROR_NOT_SUPPORTED,
                     "no cuDNN backward-filter algorithm of %d ranked runs in %s within %zu "
                     "workspace bytes", got, tf32 ? "TF32" : "FP32", cap);
}

fngd_status_t make_entry(fngd_cuda_dnn* D, const fngd_layer_t* L, int N, int tf32, int sm_count,
                         size_t budget, conv_entry* e, fngd_err_t* err)
{
    const fngd_layer_desc_t& d = L->desc;
    FNGD_CUDNN_TRY(err, cudnnCreateConvolutionDescriptor(&e->conv));
    FNGD_CUDNN_TRY(err, cudnnCreateFilterDescriptor(&e->w));
    FNGD_CUDNN_TRY(err, cudnnSetConvolution2dDescriptor(e->conv, d.pad_h, d.pad_w, d.stride_h,
                                                        d.stride_w, d.dilation_h, d.dilation_w,
                                                        CUDNN_CROSS_CORRELATION,
                                                        CUDNN_DATA_FLOAT));
    FNGD_CUDNN_TRY(err, cudnnSetFilter4dDescriptor(e->w, CUDNN_DATA_FLOAT, CUDNN_TENSOR_NCHW,
                                                   L->q, d.in_channels, d.kernel_h, d.kernel_w));
    /* Half the budget at most for the scaled output gradient; chunks when it needs more. */
    int nc = N;
    while (nc > 1 && dyw_bytes(L, nc) > budget / 2) nc = (nc + 1) / 2;
    fngd_cuda_conv_plan& p = e->plan;
    p.nc = nc;
    p.nsplit = fngd_alpha_scale_splits(nc, L->q, L->T, 0, sm_count);
    size_t fixed = 0;
    fngd_cuda_conv_buffers_carve(L, nc, p.nsplit, 0, nullptr, &fixed);
    FNGD_REQUIRE(err, fixed < budget, FNGD_ERROR_NOT_SUPPORTED,
                 "one sample's output gradient exceeds the workspace budget");
    const size_t cap = budget - fixed;
    int det = 0, det_rem = 1;
    FNGD_TRY(make_set(D->handle, L, nc, tf32, e->conv, e->w, cap, &e->full, &det, err));
    p.algo = (int)e->full.algo;
    p.math = (int)e->full.math;
    p.algo_rem = -1;
    size_t ws = e->full.ws;
    if (N % nc) {
        FNGD_TRY(make_set(D->handle, L, N % nc, tf32, e->conv, e->w, cap, &e->rem, &det_rem, err));
        p.algo_rem = (int)e->rem.algo;
        if (e->rem.ws > ws) ws = e->rem.ws;
    }
    p.deterministic = det && det_rem;
    p.algo_ws = ws;
    fngd_cuda_conv_buffers_carve(L, nc, p.nsplit, ws, nullptr, &p.bytes);
    p.usable = 1;
    snprintf(p.why, sizeof p.why, "cuDNN backward filter, algorithm %d%s, %s", p.algo,
             p.deterministic ? "" : " (non-deterministic)", tf32 ? "TF32 allowed" : "FP32");
    return FNGD_SUCCESS;
}

/* The cached entry of (geometry, N, math mode), made now if there is none; NULL when there
 * is none and making it would create the cuDNN handle but may_create_handle is 0. */
conv_entry* get_entry(fngd_backend_ctx_t* ctx, const fngd_layer_t* L, int N, int tf32,
                      int may_create_handle = 1, size_t budget = FNGD_CUDA_WS_TARGET)
{
    fngd_cuda_dnn* D = ctx ? ctx->dnn : nullptr;
    if (!D || L->kind != FNGD_LAYER_CONV2D || N < 1) return nullptr;
    int key[14];
    make_key(L, N, tf32, key);
    for (int k = 0; k < FNGD_CUDA_DNN_CACHE; ++k)
        if (D->entries[k].used && memcmp(D->entries[k].key, key, sizeof key) == 0)
            return &D->entries[k];
    if (!D->handle_tried && !may_create_handle) return nullptr;
    conv_entry* e = nullptr;
    for (int k = 0; k < FNGD_CUDA_DNN_CACHE && !e; ++k)
        if (!D->entries[k].used) e = &D->entries[k];
    if (!e) {
        e = &D->entries[D->next_victim];
        D->next_victim = (D->next_victim + 1) % FNGD_CUDA_DNN_CACHE;
        destroy_entry(e);
    }
    e->used = 1;
    memcpy(e->key, key, sizeof key);
    e->plan.algo_rem = -1;
    fngd_err_t why;
    memset(&why, 0, sizeof why);
    fngd_cuda_device_guard dev;
    fngd_status_t s = dev.enter(ctx->device, &why);
    if (s == FNGD_SUCCESS && !D->handle_tried) {
        D->handle_tried = 1;
        D->handle_status = cudnnCreate(&D->handle);
        if (D->handle_status != CUDNN_STATUS_SUCCESS) D->handle = nullptr;
    }
    if (s == FNGD_SUCCESS && !D->handle)
        s = FNGD_FAIL(&why, FNGD_ERROR_NOT_SUPPORTED, "cudnnCreate failed: %s",
                      cudnnGetErrorString(D->handle_status));
    if (s == FNGD_SUCCESS) s = make_entry(D, L, N, tf32, ctx->sm_count, budget, e, &why);
    if (s != FNGD_SUCCESS) {
        /* Keep the entry as a cached refusal (the im2col path runs); descriptors go now. */
        destroy_set(&e->full);
        destroy_set(&e->rem);
        e->plan.usable = 0;
        snprintf(e->plan.why, sizeof e->plan.why, "%s", why.msg);
    }
    return e;
}

}  // namespace

void fngd_cuda_dnn_destroy(fngd_backend_ctx_t* ctx)
{
    if (!ctx || !ctx->dnn) return;
    fngd_cuda_dnn* D = ctx->dnn;
    for (int k = 0; k < FNGD_CUDA_DNN_CACHE; ++k)
        if (D->entries[k].used) destroy_entry(&D->entries[k]);
    if (D->handle) cudnnDestroy(D->handle);
    free(D);
    ctx->dnn = NULL;
}

fngd_cuda_conv_plan fngd_cuda_conv_plan_get(fngd_backend_ctx_t* ctx, const fngd_layer_t* L, int N)
{
    const conv_entry* e = get_entry(ctx, L, N, fngd_cuda_allow_tf32(ctx));
    if (e) return e->plan;
    fngd_cuda_conv_plan p;
    memset(&p, 0, sizeof p);
    p.algo_rem = -1;
    snprintf(p.why, sizeof p.why, "not a CONV2D layer, N < 1 or no backend state");
    return p;
}

fngd_status_t fngd_cuda_conv_weighted_cudnn(fngd_backend_ctx_t* ctx, const fngd_layer_t* L,
                                            const fngd_layer_batch_t* batch, int N,
                                            const float* alpha, float scale, float* out_w,
                                            float* out_b, void* ws, size_t ws_bytes,
                                            cudaStream_t s, int* ran, fngd_err_t* err)
{
    *ran = 0;
    /* cudnnCreate during stream capture would break the capture: a context whose first
     * convolution plan is asked for inside a capture takes the im2col path for it. */
    cudaStreamCaptureStatus cap = cudaStreamCaptureStatusNone;
    FNGD_CUDA_TRY(err, cudaStreamIsCapturing(s, &cap));
    /* A plan first made here (a batch size workspace_bytes never saw) fits what the host
     * reserved, which is sized for max_batch. */
    conv_entry* e = get_entry(ctx, L, N, fngd_cuda_allow_tf32(ctx),
                              cap == cudaStreamCaptureStatusNone,
                              ws_bytes < FNGD_CUDA_WS_TARGET ? ws_bytes : FNGD_CUDA_WS_TARGET);
    if (!e || !e->plan.usable || !ws || ws_bytes < e->plan.bytes) return FNGD_SUCCESS;
    *ran = 1;
    const fngd_cuda_conv_plan& p = e->plan;
    size_t used = 0;
    const fngd_cuda_conv_buffers B =
        fngd_cuda_conv_buffers_carve(L, p.nc, p.nsplit, p.algo_ws, ws, &used);
    cudnnHandle_t h = ctx->dnn->handle;
    FNGD_CUDNN_TRY(err, cudnnSetStream(h, s));
    const bool one_chunk = p.nc >= N;
    const float one = 1.0f;
    for (int i0 = 0; i0 < N; i0 += p.nc) {
        const int ni = N - i0 < p.nc ? N - i0 : p.nc;
        const conv_set& set = ni == p.nc ? e->full : e->rem;
        fngd_alpha_scale_params A = {};
        A.src = batch->grad_output + (int64_t)i0 * L->out_per_sample;
        A.dst = B.dyw;
        A.alpha = alpha + i0;
        A.scale = scale;
        A.n = ni;
        A.q = L->q;
        A.T = L->T;
        A.channels_last = 0;
        A.out_b = one_chunk && L->n_bias ? out_b : nullptr;
        A.partial = B.partial;
        A.nsplit = one_chunk ? p.nsplit : 1;
        FNGD_CUDA_TRY(err, fngd_launch_alpha_scale(A, s));
        const float beta = i0 == 0 ? 0.0f : 1.0f;
        FNGD_CUDNN_TRY(err, cudnnSetConvolutionMathType(e->conv, set.math));
        FNGD_CUDNN_TRY(err, cudnnConvolutionBackwardFilter(
                                h, &one, set.x, batch->input + (int64_t)i0 * L->in_per_sample,
                                set.dy, B.dyw, e->conv, set.algo, B.algo_ws, set.ws, &beta, e->w,
                                out_w));
    }
    if (!one_chunk && L->n_bias) {
        /* Chunked: the bias straight from grad_output, one weighted pass. */
        fngd_norm_grads_params Bp = fngd_cuda_norm_params(L, nullptr, batch->grad_output, N);
        Bp.alpha = alpha;
        Bp.scale = scale;
        Bp.out_b = out_b;
        Bp.weighted = 1;
        FNGD_CUDA_TRY(err, fngd_launch_norm_grads(Bp, s));
    }
    return FNGD_SUCCESS;
}

fngd_status_t fngd_cuda_conv_wgrad_plain(fngd_backend_ctx_t* ctx, const fngd_layer_t* L, int N,
                                         int allow_tf32, const float* x, const float* dy,
                                         float* dw, void* ws, size_t ws_bytes, size_t* ws_need,
                                         int* algo, cudaStream_t s, fngd_err_t* err)
{
    conv_entry* e = get_entry(ctx, L, N, allow_tf32 ? 1 : 0);
    FNGD_REQUIRE(err, e && e->plan.usable && e->plan.nc == N, FNGD_ERROR_NOT_SUPPORTED,
                 "no single-chunk cuDNN plan for this layer at N = %d: %s", N,
                 e ? e->plan.why : "none");
    if (ws_need) *ws_need = e->full.ws;
    if (algo) *algo = (int)e->full.algo;
    if (!x) return FNGD_SUCCESS; /* a size query */
    FNGD_REQUIRE(err, ws_bytes >= e->full.ws && (e->full.ws == 0 || ws), FNGD_ERROR_INVALID_ARGUMENT,
                 "wgrad_plain: workspace of %zu bytes, %zu needed", ws_bytes, e->full.ws);
    fngd_cuda_device_guard dev;
    FNGD_TRY(dev.enter(ctx->device, err));
    const float one = 1.0f, zero = 0.0f;
    FNGD_CUDNN_TRY(err, cudnnSetStream(ctx->dnn->handle, s));
    FNGD_CUDNN_TRY(err, cudnnSetConvolutionMathType(e->conv, e->full.math));
    FNGD_CUDNN_TRY(err, cudnnConvolutionBackwardFilter(ctx->dnn->handle, &one, e->full.x, x,
                                                       e->full.dy, dy, e->conv, e->full.algo, ws,
                                                       e->full.ws, &zero, e->w, dw));
    return FNGD_SUCCESS;
}

#endif /* FNGD_HAVE_CUDNN */
