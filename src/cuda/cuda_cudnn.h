/* Reuse-phase state of the CUDA backend (cuda_cudnn.cu): the math mode of the weighted
 * reductions (fngd_config_t.allow_tf32) and, in builds with cuDNN (FNGD_HAVE_CUDNN), one
 * cuDNN handle per backend context plus a cache of backward-filter plans, one per CONV2D
 * geometry and batch size: descriptors, the algorithm cuDNN's heuristics chose
 * (cudnnGetConvolutionBackwardFilterAlgorithm_v7; cudnnFind* would run every algorithm on the
 * GPU) and its workspace. A plan is made the first time workspace_bytes or weighted_grad sees
 * a (geometry, N), which for N = max_batch is fngd_prepare / fngd_get_workspace_size, and is
 * reused by every later step; the handle's workspace covers it (workspace_bytes reports
 * fngd_cuda_conv_plan::bytes). This header does not include cudnn.h. */
#ifndef FNGD_CUDA_CUDNN_H
#define FNGD_CUDA_CUDNN_H

#include "cuda_common.h"

struct fngd_cuda_dnn; /* opaque; ctx->dnn */

/* Lifecycle, called by cuda_backend.cu: create records cfg->allow_tf32 (the cuDNN handle is
 * made with the first plan, so a network without convolutions never loads cuDNN); destroy
 * releases the handle and every cached descriptor (ctx->dnn may be NULL). */
fngd_status_t fngd_cuda_dnn_create(fngd_backend_ctx_t* ctx, const fngd_config_t* cfg,
                                   fngd_err_t* err);
void fngd_cuda_dnn_destroy(fngd_backend_ctx_t* ctx);

/* 1 when the weighted reductions may use TF32 tensor cores (cfg.allow_tf32). */
int fngd_cuda_allow_tf32(const fngd_backend_ctx_t* ctx);
/* 1 when this build has the cuDNN path (FNGD_HAVE_CUDNN). */
int fngd_cuda_dnn_compiled(void);

/* The cuDNN weighted-gradient plan of a CONV2D layer at batch N. usable == 0 means the
 * im2col path runs instead; `why` says why (no cuDNN in this build, no handle, no algorithm
 * within the workspace budget, a descriptor cuDNN refused, ...). */
struct fngd_cuda_conv_plan {
    int usable;
    int nc;            /* samples per chunk (N unless the scaled output gradient is too big) */
    int nsplit;        /* fngd_alpha_scale_splits of a chunk of nc */
    int algo;          /* cudnnConvolutionBwdFilterAlgo_t of a chunk of nc samples */
    int algo_rem;      /* ... of the last chunk of N % nc samples (-1: none) */
    int math;          /* cudnnMathType_t the convolution runs with */
    int deterministic; /* cuDNN's determinism flag of `algo` */
    size_t algo_ws;    /* cuDNN workspace bytes (max over the two chunk sizes) */
    size_t bytes;      /* everything the path takes from the handle's workspace */
    char why[192];
};

/* The cached plan of (layer geometry, N), made now if there is none. Host work only, except
 * that the first plan of a context creates its cuDNN handle; never fails (usable = 0). */
fngd_cuda_conv_plan fngd_cuda_conv_plan_get(fngd_backend_ctx_t* ctx, const fngd_layer_t* layer,
                                            int N);

/* Workspace layout of the cuDNN path, pure host arithmetic (no CUDA call; tested without a
 * GPU): the scaled output gradient of a chunk (nc x C_out x H_out x W_out floats), the bias
 * partial sums (nsplit x C_out floats when the layer has a bias) and cuDNN's workspace, each
 * 256-byte aligned. ws NULL: pointers NULL, *bytes the total. */
struct fngd_cuda_conv_buffers {
    float* dyw;
    float* partial;
    void* algo_ws;
};
fngd_cuda_conv_buffers fngd_cuda_conv_buffers_carve(const fngd_layer_t* layer, int nc, int nsplit,
                                                    size_t algo_ws, void* ws, size_t* bytes);

/* weighted_grad (backend.h) of a CONV2D layer through cuDNN: one alpha_scale launch (the
 * scaled output gradient and the bias) and one cudnnConvolutionBackwardFilter per chunk into
 * out_w; *ran = 1. Enqueues nothing and sets *ran = 0 (success) when the im2col path must run
 * instead: no usable plan, a plan larger than ws_bytes, no cuDNN in this build, or the
 * context's first plan asked for during stream capture (creating the cuDNN handle there would
 * break the capture). The caller entered the device. */
fngd_status_t fngd_cuda_conv_weighted_cudnn(fngd_backend_ctx_t* ctx, const fngd_layer_t* layer,
                                            const fngd_layer_batch_t* batch, int N,
                                            const float* alpha, float scale, float* out_w,
                                            float* out_b, void* ws, size_t ws_bytes,
                                            cudaStream_t stream, int* ran, fngd_err_t* err);

/* Bench and test access: the plain (unweighted, beta = 0) cudnnConvolutionBackwardFilter of
 * a layer at batch N as an SGD step runs it (dw = conv_wgrad(x, dy)), with the algorithm
 * cuDNN's heuristics choose for `allow_tf32` and a workspace of the caller; *ws_need gets the
 * bytes it needs (call with ws NULL to ask). NOT_SUPPORTED without cuDNN. */
fngd_status_t fngd_cuda_conv_wgrad_plain(fngd_backend_ctx_t* ctx, const fngd_layer_t* layer,
                                         int N, int allow_tf32, const float* x, const float* dy,
                                         float* dw, void* ws, size_t ws_bytes, size_t* ws_need,
                                         int* algo, cudaStream_t stream, fngd_err_t* err);

#endif
