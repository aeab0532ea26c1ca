/* Transpose-scale of output gradients into the (n*T) x q row-major "E" matrix of METHOD.md
 * section 4: dst[(i*T + t) * q + o] = scale * w_i * src_i[t, o], where src_i is T x q
 * (positions major: linear layers) or q x T (channels first: convolutions) and
 * w_i = alpha[i] (or 1 when alpha is NULL). Folding the per-sample weights in here makes the
 * weighted reduction one plain GEMM. */
#ifndef FNGD_KERNELS_STAGE_GRAD_CUH
#define FNGD_KERNELS_STAGE_GRAD_CUH

#include <cuda_runtime.h>

struct fngd_stage_grad_params {
    const float* src;
    float* dst;
    const float* alpha; /* n weights or NULL */
    float scale;
    int n, T, q;
    int channels_first;
};

cudaError_t fngd_launch_stage_grad(const fngd_stage_grad_params& P, cudaStream_t stream);

#endif
