#include "nonfinite.cuh"

#include <stdint.h>

/* Exponent all ones <=> NaN or Inf; integer test so fast-math cannot fold it away. */
__device__ static inline int bad(float v) { return (__float_as_uint(v) & 0x7f800000u) == 0x7f800000u; }

static __global__ void nonfinite_kernel(const float* x, size_t n, int* flag, int tag)
{
    int found = 0;
    const size_t stride = (size_t)gridDim.x * blockDim.x;
    const size_t tid = blockIdx.x * (size_t)blockDim.x + threadIdx.x;
    /* 16-byte loads when the pointer is aligned; the tail (and a misaligned array) scalar. */
    if (((uintptr_t)x & 15) == 0) {
        const size_t n4 = n / 4;
        const float4* x4 = (const float4*)x;
        for (size_t i = tid; i < n4; i += stride) {
            const float4 v = x4[i];
            found |= bad(v.x) | bad(v.y) | bad(v.z) | bad(v.w);
        }
        for (size_t i = n4 * 4 + tid; i < n; i += stride) found |= bad(x[i]);
    } else {
        for (size_t i = tid; i < n; i += stride) found |= bad(x[i]);
    }
    if (__syncthreads_or(found) && threadIdx.x == 0) *flag = tag;
}

cudaError_t fngd_launch_nonfinite(const float* x, size_t n, int* flag, int tag,
                                  cudaStream_t stream)
{
    if (n == 0) return cudaSuccess;
    size_t blocks = (n / 4 + 255) / 256 + 1;
    if (blocks > 2048) blocks = 2048;
    nonfinite_kernel<<<(unsigned)blocks, 256, 0, stream>>>(x, n, flag, tag);
    return cudaGetLastError();
}
