#include "symmetrize.cuh"

#include <stdint.h>

/* Element (r, c) with r < c (upper, column-major at r + c*n) takes (c, r) at c + r*n. */
static __global__ void symmetrize_kernel(float* K, int n)
{
    const int64_t total = (int64_t)n * n;
    for (int64_t e = blockIdx.x * (int64_t)blockDim.x + threadIdx.x; e < total;
         e += (int64_t)gridDim.x * blockDim.x) {
        const int r = (int)(e % n), c = (int)(e / n);
        if (r < c) K[e] = K[(int64_t)r * n + c];
    }
}

cudaError_t fngd_launch_symmetrize_lower(float* K, int n, cudaStream_t stream)
{
    if (n <= 1) return cudaSuccess;
    const int64_t total = (int64_t)n * n;
    int64_t blocks = (total + 255) / 256;
    if (blocks > 65536) blocks = 65536;
    symmetrize_kernel<<<(unsigned)blocks, 256, 0, stream>>>(K, n);
    return cudaGetLastError();
}
