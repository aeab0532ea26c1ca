#include "solution_store.cuh"

static __global__ void solution_store_kernel(const double* x, const int* info, const int* nan,
                                             float* alpha, int n)
{
    if (*info != 0 || *nan != 0) return;
    for (int i = blockIdx.x * blockDim.x + threadIdx.x; i < n; i += gridDim.x * blockDim.x)
        alpha[i] = (float)x[i];
}

cudaError_t fngd_launch_solution_store(const double* x, const int* info, const int* nan,
                                       float* alpha, int n, cudaStream_t stream)
{
    if (n <= 0) return cudaSuccess;
    const int blocks = (n + 255) / 256 < 1024 ? (n + 255) / 256 : 1024;
    solution_store_kernel<<<blocks, 256, 0, stream>>>(x, info, nan, alpha, n);
    return cudaGetLastError();
}
