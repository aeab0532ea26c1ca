/* Kernel parameters that depend only on a layer's geometry, shared by the Gram
 * (cuda_gram.cu) and the weighted reduction (cuda_weighted.cu) so both read the layer the
 * same way. The callers fill in the operation-specific fields (scale, outputs, weights). */
#ifndef FNGD_CUDA_LAYER_PARAMS_H
#define FNGD_CUDA_LAYER_PARAMS_H

#include "kernels/im2col.cuh"
#include "kernels/norm_grads.cuh"
#include "layer.h"

/* im2col of n CONV2D samples starting at x into cols. */
static inline fngd_im2col_params fngd_cuda_im2col_params(const fngd_layer_t* L, const float* x,
                                                         float* cols, int n)
{
    const fngd_layer_desc_t& d = L->desc;
    fngd_im2col_params P;
    P.x = x;
    P.cols = cols;
    P.n = n;
    P.C = d.in_channels;
    P.H = d.in_h;
    P.W = d.in_w;
    P.kh = d.kernel_h;
    P.kw = d.kernel_w;
    P.sh = d.stride_h;
    P.sw = d.stride_w;
    P.ph = d.pad_h;
    P.pw = d.pad_w;
    P.dh = d.dilation_h;
    P.dw = d.dilation_w;
    P.out_h = L->out_h;
    P.out_w = L->out_w;
    return P;
}

/* Per-channel sums over positions of N samples: q channels, T positions. dy is grad_output
 * (N x T x q for LINEAR, N x q x T for CONV2D, as desc.channels_last says for NORM_AFFINE);
 * xhat is the norm input, NULL for the bias sums alone. Every other field is zero. */
static inline fngd_norm_grads_params fngd_cuda_norm_params(const fngd_layer_t* L,
                                                           const float* xhat, const float* dy,
                                                           int N)
{
    fngd_norm_grads_params P = {};
    P.xhat = xhat;
    P.dy = dy;
    P.n = N;
    P.C = L->q;
    P.T = L->T;
    P.channels_last = L->kind == FNGD_LAYER_NORM_AFFINE ? L->desc.channels_last
                                                        : L->kind == FNGD_LAYER_LINEAR;
    return P;
}

#endif
