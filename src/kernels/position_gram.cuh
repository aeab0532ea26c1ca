/* Fused Hadamard block-sum of the position Gram (METHOD.md section 4):
 *   K[i][j] (+)= scale2 * sum_{t,s < T} (SA[it][js] + bias) * SE[it][js]
 * for samples i in [i0, i0+ni), j in [j0, j0+nj) with j >= i, where SA = A A^T and SE = E E^T
 * restricted to those rows/columns (row-major, ld = nj*T, row it = (i-i0)*T + t,
 * column js = (j-j0)*T + s). The Hadamard product is never written to memory. Each pair is
 * written to K[i][j] and K[j][i] (row-major N x N, ld ldk). bias = 1 adds the ones column of a
 * layer bias (A A^T + 1 1^T). */
#ifndef FNGD_KERNELS_POSITION_GRAM_CUH
#define FNGD_KERNELS_POSITION_GRAM_CUH

#include <cuda_runtime.h>

struct fngd_block_sum_params {
    const float* SA;
    const float* SE;
    float* K;
    int ldk;
    int i0, ni, j0, nj, T;
    float bias;
    float scale2;
    int accumulate;
};

cudaError_t fngd_launch_block_sum(const fngd_block_sum_params& P, cudaStream_t stream);

#endif
