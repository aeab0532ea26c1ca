#include "position_gram.cuh"

#include <stdint.h>

__device__ static inline void block_sum_store(const fngd_block_sum_params& P, int i, int j,
                                              float v)
{
    float* kij = P.K + (int64_t)i * P.ldk + j;
    float* kji = P.K + (int64_t)j * P.ldk + i;
    if (P.accumulate) {
        *kij += v;
        if (i != j) *kji += v;
    } else {
        *kij = v;
        if (i != j) *kji = v;
    }
}

/* One warp per (i, j) pair; lanes walk the T x T block along s (contiguous in memory). */
static __global__ void block_sum_warp_kernel(fngd_block_sum_params P)
{
    const int lane = threadIdx.x & 31;
    const int64_t warps = (int64_t)gridDim.x * (blockDim.x >> 5);
    const int64_t pairs = (int64_t)P.ni * P.nj;
    const int64_t ld = (int64_t)P.nj * P.T;
    const int64_t TT = (int64_t)P.T * P.T; /* T > 46340 overflows int */
    for (int64_t w = (blockIdx.x * (int64_t)blockDim.x + threadIdx.x) >> 5; w < pairs; w += warps) {
        const int ii = (int)(w / P.nj), jj = (int)(w % P.nj);
        const int i = P.i0 + ii, j = P.j0 + jj;
        if (j < i) continue; /* warp-uniform: the mirror pair writes it */
        float acc = 0.0f;
        /* (t, s) of the flat index e = t*T + s, advanced by 32 without a division. */
        int t = lane / P.T, s = lane - (lane / P.T) * P.T;
        for (int64_t e = lane; e < TT; e += 32) {
            const int64_t off = ((int64_t)ii * P.T + t) * ld + (int64_t)jj * P.T + s;
            acc += (P.SA[off] + P.bias) * P.SE[off];
            for (s += 32; s >= P.T; s -= P.T) ++t;
        }
        for (int d = 16; d > 0; d >>= 1) acc += __shfl_down_sync(0xffffffffu, acc, d);
        if (lane == 0) block_sum_store(P, i, j, P.scale2 * acc);
    }
}

/* Tiny blocks (T*T < 32, e.g. T = 1 linear layers): one thread per pair. */
static __global__ void block_sum_thread_kernel(fngd_block_sum_params P)
{
    const int64_t pairs = (int64_t)P.ni * P.nj;
    const int64_t ld = (int64_t)P.nj * P.T;
    for (int64_t w = blockIdx.x * (int64_t)blockDim.x + threadIdx.x; w < pairs;
         w += (int64_t)gridDim.x * blockDim.x) {
        const int ii = (int)(w / P.nj), jj = (int)(w % P.nj);
        const int i = P.i0 + ii, j = P.j0 + jj;
        if (j < i) continue;
        float acc = 0.0f;
        for (int t = 0; t < P.T; ++t)
            for (int s = 0; s < P.T; ++s) {
                const int64_t off = ((int64_t)ii * P.T + t) * ld + (int64_t)jj * P.T + s;
                acc += (P.SA[off] + P.bias) * P.SE[off];
            }
        block_sum_store(P, i, j, P.scale2 * acc);
    }
}

cudaError_t fngd_launch_block_sum(const fngd_block_sum_params& P, cudaStream_t stream)
{
    const int64_t pairs = (int64_t)P.ni * P.nj;
    if (pairs == 0) return cudaSuccess;
    const int threads = 256;
    if ((int64_t)P.T * P.T < 32) {
        int64_t blocks = (pairs + threads - 1) / threads;
        if (blocks > 65536) blocks = 65536;
        block_sum_thread_kernel<<<(unsigned)blocks, threads, 0, stream>>>(P);
    } else {
        int64_t blocks = (pairs + (threads / 32) - 1) / (threads / 32);
        if (blocks > 65536) blocks = 65536;
        block_sum_warp_kernel<<<(unsigned)blocks, threads, 0, stream>>>(P);
    }
    return cudaGetLastError();
}
