/* Per-channel sums over positions, the per-sample gradients of a norm-affine layer:
 *   gamma_i[c] = scale * sum_t dy[i,c,t] * xhat[i,c,t],   beta_i[c] = scale * sum_t dy[i,c,t]
 * (arrays N x C x T, or N x T x C with channels_last). xhat == NULL forms only the beta sums,
 * which is also the per-sample bias gradient of a linear (channels_last) or conv layer.
 * Per-sample mode (weighted == 0): sample i writes out_w[i*ld + c] and out_b[i*ld + c].
 * Weighted mode: the alpha-weighted reduction over samples folded into the same pass,
 *   out_w[c] = scale * sum_i alpha_i gamma_i[c] (alpha NULL: weights 1), likewise out_b.
 * out_w / out_b may be NULL to skip that half. */
#ifndef FNGD_KERNELS_NORM_GRADS_CUH
#define FNGD_KERNELS_NORM_GRADS_CUH

#include <cuda_runtime.h>
#include <stdint.h>

struct fngd_norm_grads_params {
    const float* xhat;
    const float* dy;
    int n, C, T;
    int channels_last;
    const float* alpha;
    float scale;
    float* out_w;
    float* out_b;
    int64_t ld;
    int weighted;
};

cudaError_t fngd_launch_norm_grads(const fngd_norm_grads_params& P, cudaStream_t stream);

#endif
