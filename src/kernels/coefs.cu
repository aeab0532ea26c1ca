#include "coefs.cuh"

static __global__ void coef_scatter_kernel(fngd_coef_scatter_params P)
{
    for (int i = blockIdx.x * blockDim.x + threadIdx.x; i < P.n; i += gridDim.x * blockDim.x) {
        const int64_t key = P.ids ? P.ids[i] : P.key_offset + i;
        P.table[key * P.nsets + P.set] = P.alpha[i];
        P.seen[key] = 1;
    }
}

static __global__ void coef_gather_kernel(fngd_coef_gather_params P)
{
    /* Every thread of the block runs the same number of iterations so that the block-wide
     * count (__syncthreads_count) is reached by all of them. */
    const int stride = gridDim.x * blockDim.x;
    int unseen_block = 0;
    for (int base = blockIdx.x * blockDim.x; base < P.n; base += stride) {
        const int i = base + threadIdx.x;
        int unseen = 0;
        if (i < P.n) {
            const int64_t key = P.ids ? P.ids[i] : P.key_offset + i;
            float v;
            if (P.seen[key]) {
                v = P.table[key * P.nsets + P.set];
            } else {
                unseen = 1;
                v = P.uniform ? 1.0f / (float)P.n : P.fallback[P.set];
            }
            P.out[i] = P.out_scale * v;
        }
        unseen_block += __syncthreads_count(unseen);
    }
    if (P.fallback_count && threadIdx.x == 0 && unseen_block > 0)
        atomicAdd((unsigned long long*)P.fallback_count, (unsigned long long)unseen_block);
}

cudaError_t fngd_launch_coef_scatter(const fngd_coef_scatter_params& P, cudaStream_t stream)
{
    if (P.n <= 0) return cudaSuccess;
    const int threads = 256;
    const int blocks = (P.n + threads - 1) / threads < 4096 ? (P.n + threads - 1) / threads : 4096;
    coef_scatter_kernel<<<blocks, threads, 0, stream>>>(P);
    return cudaGetLastError();
}

cudaError_t fngd_launch_coef_gather(const fngd_coef_gather_params& P, cudaStream_t stream)
{
    if (P.n <= 0) return cudaSuccess;
    const int threads = 256;
    const int blocks = (P.n + threads - 1) / threads < 4096 ? (P.n + threads - 1) / threads : 4096;
    coef_gather_kernel<<<blocks, threads, 0, stream>>>(P);
    return cudaGetLastError();
}
