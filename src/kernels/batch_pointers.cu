#include "batch_pointers.cuh"

#define THREADS 256

static __global__ void batch_pointers_kernel(double** a, double* a_base, int64_t a_stride,
                                             double** b, double* b_base, int64_t b_stride,
                                             int count)
{
    for (int s = blockIdx.x * blockDim.x + threadIdx.x; s < count; s += gridDim.x * blockDim.x) {
        a[s] = a_base + (int64_t)s * a_stride;
        if (b) b[s] = b_base + (int64_t)s * b_stride;
    }
}

cudaError_t fngd_launch_batch_pointers(double** a, double* a_base, int64_t a_stride, double** b,
                                       double* b_base, int64_t b_stride, int count,
                                       cudaStream_t stream)
{
    if (count <= 0) return cudaSuccess;
    const int blocks = (count + THREADS - 1) / THREADS < 1024 ? (count + THREADS - 1) / THREADS
                                                              : 1024;
    batch_pointers_kernel<<<blocks, THREADS, 0, stream>>>(a, a_base, a_stride, b, b_base,
                                                          b_stride, count);
    return cudaGetLastError();
}
