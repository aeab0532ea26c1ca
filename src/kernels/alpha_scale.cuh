/* The fused first half of the reuse-phase reduction of a LINEAR or CONV2D layer: every
 * sample's output gradient scaled by its weight, in the caller's layout, and, in the same
 * pass, the layer's bias direction (the sum of the scaled values per output channel):
 *   dst[i, ...] = scale * w_i * src[i, ...],   w_i = alpha[i] (1 when alpha is NULL)
 *   out_b[o]    = sum over samples i and positions t of dst[i, o, t]
 * src is n x q x T (channels first: convolutions, NCHW grad_output) or (n*T) x q (channels
 * last: linear layers, the T positions of a sample contiguous). The weight gradient is then
 * one unweighted call on dst: cuDNN's backward-filter convolution or one cuBLAS GEMM.
 *
 * The bias sum is deterministic: grid.y = nsplit blocks of samples each write one partial
 * sum per channel into `partial` (nsplit x q floats of workspace), and a second small kernel
 * adds the partials in a fixed order; with nsplit == 1 the first kernel writes out_b. */
#ifndef FNGD_KERNELS_ALPHA_SCALE_CUH
#define FNGD_KERNELS_ALPHA_SCALE_CUH

#include <cuda_runtime.h>

struct fngd_alpha_scale_params {
    const float* src;
    float* dst;          /* may not alias src */
    const float* alpha;  /* n weights (device) or NULL */
    float scale;
    int n, q, T;
    int channels_last;
    float* out_b;        /* q floats, or NULL: no bias */
    float* partial;      /* nsplit x q floats when out_b && nsplit > 1, else unused */
    int nsplit;          /* sample blocks, 1..n (fngd_alpha_scale_splits) */
};

/* Sample blocks for a layer of q channels and n samples on a GPU with sm_count
 * multiprocessors: enough blocks to fill the GPU a few times over, at most n. */
int fngd_alpha_scale_splits(int n, int q, int T, int channels_last, int sm_count);

cudaError_t fngd_launch_alpha_scale(const fngd_alpha_scale_params& P, cudaStream_t stream);

#endif
