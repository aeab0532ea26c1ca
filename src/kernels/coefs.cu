#include "coefs.cuh"

#define THREADS 256
#define MAX_BLOCKS 4096

static __global__ void coef_scatter_kernel(fngd_coef_scatter_params P)
{
    const int64_t total = (int64_t)P.n * P.nsets;
    for (int64_t j = blockIdx.x * (int64_t)blockDim.x + threadIdx.x; j < total;
         j += (int64_t)gridDim.x * blockDim.x) {
        const int i = (int)(j / P.nsets), s = (int)(j % P.nsets);
        const int64_t key = P.ids ? P.ids[i] : P.key_offset + i;
        P.table[key * P.nsets + s] = P.alpha[(int64_t)s * P.ld_alpha + i];
        if (s == 0) P.seen[key] = 1;
    }
}

static __global__ void coef_gather_kernel(fngd_coef_gather_params P)
{
    /* Every thread of the block runs the same number of iterations so that the block-wide
     * count (__syncthreads_count) is reached by all of them; a key counts at its set 0. */
    const int64_t total = (int64_t)P.n * P.nsets;
    const int64_t stride = (int64_t)gridDim.x * blockDim.x;
    int unseen_block = 0;
    for (int64_t base = blockIdx.x * (int64_t)blockDim.x; base < total; base += stride) {
        const int64_t j = base + threadIdx.x;
        int unseen = 0;
        if (j < total) {
            const int i = (int)(j / P.nsets), s = (int)(j % P.nsets);
            const int64_t key = P.ids ? P.ids[i] : P.key_offset + i;
            float v;
            if (P.seen[key]) {
                v = P.table[key * P.nsets + s];
            } else {
                unseen = s == 0;
                v = P.uniform ? 1.0f / (float)P.n : P.fallback[s];
            }
            P.out[(int64_t)s * P.ld_out + i] = P.out_scale * v;
        }
        unseen_block += __syncthreads_count(unseen);
    }
    if (threadIdx.x == 0 && unseen_block > 0)
        atomicAdd((unsigned long long*)P.fallback_count, (unsigned long long)unseen_block);
}

static int grid_for(int64_t total)
{
    const int64_t blocks = (total + THREADS - 1) / THREADS;
    return blocks < MAX_BLOCKS ? (int)blocks : MAX_BLOCKS;
}

cudaError_t fngd_launch_coef_scatter(const fngd_coef_scatter_params& P, cudaStream_t stream)
{
    if (P.n <= 0 || P.nsets <= 0) return cudaSuccess;
    coef_scatter_kernel<<<grid_for((int64_t)P.n * P.nsets), THREADS, 0, stream>>>(P);
    return cudaGetLastError();
}

cudaError_t fngd_launch_coef_gather(const fngd_coef_gather_params& P, cudaStream_t stream)
{
    if (P.n <= 0 || P.nsets <= 0) return cudaSuccess;
    coef_gather_kernel<<<grid_for((int64_t)P.n * P.nsets), THREADS, 0, stream>>>(P);
    return cudaGetLastError();
}
