/* Workspace plans of the Gram and weighted-gradient operations: how to chunk a layer so its
 * scratch fits a byte budget, and how many bytes that takes. workspace_bytes reports the plan
 * for FNGD_CUDA_WS_TARGET; an operation plans for the ws_bytes it was given (larger chunks
 * when the host reserved more) and falls back to the target plan. */
#ifndef FNGD_CUDA_PLAN_H
#define FNGD_CUDA_PLAN_H

#include "cuda_common.h"

/* Default scratch budget per layer operation; chunks shrink to fit it. */
#define FNGD_CUDA_WS_TARGET ((size_t)256 << 20)

struct fngd_gram_plan {
    /* MATERIALIZE: output-channel chunk qc, im2col sample chunk nc.
     * POSITION: sample row block nb. */
    int qc, nc, nb;
    size_t bytes;
};

struct fngd_weighted_plan {
    int nc; /* samples per staging chunk */
    size_t bytes;
};

fngd_gram_plan fngd_cuda_plan_gram(const fngd_layer_t* layer, int N, size_t budget);
fngd_weighted_plan fngd_cuda_plan_weighted(const fngd_layer_t* layer, int N, size_t budget);

/* Carve the plan's buffers out of ws (pointers are NULL when ws is NULL). */
struct fngd_gram_buffers {
    float* P;     /* MATERIALIZE: N x (qc*p) per-sample gradients of one channel chunk */
    float* Pb;    /* MATERIALIZE with bias: N x q per-sample bias gradients */
    float* cols;  /* CONV: im2col (nc*T x p for MATERIALIZE, N*T x p for POSITION) */
    float* E;     /* POSITION, CONV: staged output gradients N*T x q */
    float* SA;    /* POSITION: nb*T x N*T */
    float* SE;
};
fngd_gram_buffers fngd_cuda_gram_buffers(const fngd_layer_t* layer, int N,
                                         const fngd_gram_plan& plan, void* ws, size_t* bytes);

struct fngd_weighted_buffers {
    float* cols;  /* CONV: nc*T x p */
    float* DE;    /* LINEAR, CONV: nc*T x q */
};
fngd_weighted_buffers fngd_cuda_weighted_buffers(const fngd_layer_t* layer,
                                                 const fngd_weighted_plan& plan, void* ws,
                                                 size_t* bytes);

#endif
