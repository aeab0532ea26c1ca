#include "solution_store.cuh"

#include <stdint.h>

#define THREADS 256

/* blockIdx.y walks the matrices, blockIdx.x the entries of one solution. */
static __global__ void solution_store_kernel(const double* x, const double* y,
                                             const double* shift, const int* info,
                                             const int* nan, float* alpha, int n, int count,
                                             int ld_alpha)
{
    int bad = 0;
    for (int k = threadIdx.x; k < count; k += blockDim.x) bad |= nan[k];
    if (__syncthreads_or(bad)) return;
    for (int s = blockIdx.y; s < count; s += gridDim.y) {
        if (info[s] != 0) continue;
        const double* xs = x + (int64_t)s * n;
        const double* ys = y ? y + (int64_t)s * n : nullptr;
        const double sh = y ? shift[s] : 0.0;
        float* as = alpha + (int64_t)s * ld_alpha;
        for (int i = blockIdx.x * blockDim.x + threadIdx.x; i < n; i += gridDim.x * blockDim.x)
            as[i] = (float)(ys ? xs[i] - sh * ys[i] : xs[i]);
    }
}

cudaError_t fngd_launch_solution_store(const double* x, const double* y, const double* shift,
                                       const int* info, const int* nan, float* alpha, int n,
                                       int count, int ld_alpha, cudaStream_t stream)
{
    if (n <= 0 || count <= 0) return cudaSuccess;
    const int bx = (n + THREADS - 1) / THREADS < 1024 ? (n + THREADS - 1) / THREADS : 1024;
    const int by = count < 65535 ? count : 65535;
    solution_store_kernel<<<dim3(bx, by), THREADS, 0, stream>>>(x, y, shift, info, nan, alpha,
                                                                n, count, ld_alpha);
    return cudaGetLastError();
}
