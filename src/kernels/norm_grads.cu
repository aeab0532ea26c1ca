#include "norm_grads.cuh"

/* Block-wide sum of two values; every thread gets the result. blockDim.x * blockDim.y <= 1024. */
__device__ static inline void block_sum2(float& a, float& b)
{
    __shared__ float sa[32], sb[32];
    for (int d = 16; d > 0; d >>= 1) {
        a += __shfl_down_sync(0xffffffffu, a, d);
        b += __shfl_down_sync(0xffffffffu, b, d);
    }
    const int tid = threadIdx.y * blockDim.x + threadIdx.x;
    const int nwarps = (blockDim.x * blockDim.y + 31) >> 5;
    if ((tid & 31) == 0) {
        sa[tid >> 5] = a;
        sb[tid >> 5] = b;
    }
    __syncthreads();
    if (tid < 32) {
        a = tid < nwarps ? sa[tid] : 0.0f;
        b = tid < nwarps ? sb[tid] : 0.0f;
        for (int d = 16; d > 0; d >>= 1) {
            a += __shfl_down_sync(0xffffffffu, a, d);
            b += __shfl_down_sync(0xffffffffu, b, d);
        }
    }
}

/* Channels first: one block per channel (and per sample unless weighted); the positions of a
 * (sample, channel) row are contiguous, so the block reads coalesced. */
static __global__ void norm_grads_cf_kernel(fngd_norm_grads_params P)
{
    const int c = blockIdx.x;
    const int64_t rows = P.weighted ? P.n : 1;
    for (int i_out = blockIdx.y; i_out < (P.weighted ? 1 : P.n); i_out += gridDim.y) {
        float sw = 0.0f, sb = 0.0f;
        for (int64_t r = 0; r < rows; ++r) {
            const int i = P.weighted ? (int)r : i_out;
            const float a = (P.weighted && P.alpha) ? P.alpha[i] : 1.0f;
            const int64_t base = ((int64_t)i * P.C + c) * P.T;
            float pw = 0.0f, pb = 0.0f;
            for (int t = threadIdx.x; t < P.T; t += blockDim.x) {
                const float g = P.dy[base + t];
                pb += g;
                if (P.xhat) pw += g * P.xhat[base + t];
            }
            sw += a * pw;
            sb += a * pb;
        }
        block_sum2(sw, sb);
        if (threadIdx.x == 0) {
            const int64_t o = P.weighted ? c : (int64_t)i_out * P.ld + c;
            if (P.out_w && P.xhat) P.out_w[o] = P.scale * sw;
            if (P.out_b) P.out_b[o] = P.scale * sb;
        }
        __syncthreads();
    }
}

/* Channels last: a block owns 32 consecutive channels (threadIdx.x, coalesced) and its
 * threadIdx.y rows stride over positions (and samples when weighted). */
static __global__ void norm_grads_cl_kernel(fngd_norm_grads_params P)
{
    __shared__ float rw[8][33], rb[8][33];
    const int c = blockIdx.x * 32 + threadIdx.x;
    for (int i_out = blockIdx.y; i_out < (P.weighted ? 1 : P.n); i_out += gridDim.y) {
        float sw = 0.0f, sb = 0.0f;
        if (c < P.C) {
            const int64_t rows = P.weighted ? (int64_t)P.n * P.T : P.T;
            const int64_t first = P.weighted ? 0 : (int64_t)i_out * P.T;
            for (int64_t r = threadIdx.y; r < rows; r += blockDim.y) {
                const int64_t row = first + r;
                const float a = (P.weighted && P.alpha) ? P.alpha[row / P.T] : 1.0f;
                const int64_t off = row * P.C + c;
                const float g = P.dy[off];
                sb += a * g;
                if (P.xhat) sw += a * g * P.xhat[off];
            }
        }
        rw[threadIdx.y][threadIdx.x] = sw;
        rb[threadIdx.y][threadIdx.x] = sb;
        __syncthreads();
        if (threadIdx.y == 0 && c < P.C) {
            for (int y = 1; y < (int)blockDim.y; ++y) {
                sw += rw[y][threadIdx.x];
                sb += rb[y][threadIdx.x];
            }
            const int64_t o = P.weighted ? c : (int64_t)i_out * P.ld + c;
            if (P.out_w && P.xhat) P.out_w[o] = P.scale * sw;
            if (P.out_b) P.out_b[o] = P.scale * sb;
        }
        __syncthreads();
    }
}

cudaError_t fngd_launch_norm_grads(const fngd_norm_grads_params& P, cudaStream_t stream)
{
    if (P.n == 0 || P.C == 0) return cudaSuccess;
    const unsigned ys = P.weighted ? 1u : (unsigned)(P.n < 65535 ? P.n : 65535);
    if (P.channels_last) {
        dim3 grid((P.C + 31) / 32, ys);
        norm_grads_cl_kernel<<<grid, dim3(32, 8), 0, stream>>>(P);
    } else {
        if (P.C > 2147483647) return cudaErrorInvalidConfiguration;
        dim3 grid(P.C, ys);
        norm_grads_cf_kernel<<<grid, 256, 0, stream>>>(P);
    }
    return cudaGetLastError();
}
