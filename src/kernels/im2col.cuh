/* im2col of a chunk of NCHW samples: cols[(i*T + t) * p + k] with t = oh*out_w + ow and
 * k = c*kh*kw + ki*kw + kj (the weight's flattening), zero outside the padded input. */
#ifndef FNGD_KERNELS_IM2COL_CUH
#define FNGD_KERNELS_IM2COL_CUH

#include <cuda_runtime.h>

struct fngd_im2col_params {
    const float* x;  /* n x C x H x W */
    float* cols;     /* (n*T) x p, row-major */
    int n, C, H, W;
    int kh, kw, sh, sw, ph, pw, dh, dw;
    int out_h, out_w;
};

cudaError_t fngd_launch_im2col(const fngd_im2col_params& P, cudaStream_t stream);

#endif
