#include "alpha_scale.cuh"

#include <stdint.h>

#define THREADS 256
#define CL_COLS 32
#define CL_ROWS 8

/* Block-wide sum; the result is valid in thread 0. blockDim.x * blockDim.y == THREADS. */
__device__ static inline float block_sum(float v)
{
    __shared__ float s[THREADS / 32];
    for (int d = 16; d > 0; d >>= 1) v += __shfl_down_sync(0xffffffffu, v, d);
    const int tid = threadIdx.y * blockDim.x + threadIdx.x;
    if ((tid & 31) == 0) s[tid >> 5] = v;
    __syncthreads();
    v = 0.0f;
    if (tid < 32) {
        v = tid < THREADS / 32 ? s[tid] : 0.0f;
        for (int d = 16; d > 0; d >>= 1) v += __shfl_down_sync(0xffffffffu, v, d);
    }
    return v;
}

/* Samples [i0, i1) of split y. */
__device__ static inline void split_range(int n, int nsplit, int y, int* i0, int* i1)
{
    const int per = (n + nsplit - 1) / nsplit;
    *i0 = y * per;
    *i1 = *i0 + per < n ? *i0 + per : n;
}

/* Channels first: block (o, y) streams the rows (i, o) of its samples, which are T contiguous
 * floats each; the (sample, position) index space of the block is flattened so that short
 * rows (T = 16 on a 4x4 map) still keep every thread busy. VEC = 4 uses float4 when T is a
 * multiple of 4 (every row then starts 16-byte aligned). */
template <int VEC>
static __global__ void alpha_scale_cf_kernel(fngd_alpha_scale_params P)
{
    const int o = blockIdx.x;
    int i0, i1;
    split_range(P.n, P.nsplit, blockIdx.y, &i0, &i1);
    /* Thread k starts at element k of the block's flattened (sample, position) space and
     * steps THREADS elements at a time: si samples and st positions, no division per step. */
    const int64_t Tv = P.T / VEC;
    const int64_t si = THREADS / Tv, st = THREADS % Tv;
    int64_t i = i0 + threadIdx.x / Tv, t = threadIdx.x % Tv;
    float acc = 0.0f;
    while (i < i1) {
        const float w = P.scale * (P.alpha ? P.alpha[i] : 1.0f);
        const int64_t off = (i * P.q + o) * P.T + t * VEC;
        if (VEC == 4) {
            float4 v = *reinterpret_cast<const float4*>(P.src + off);
            v.x *= w;
            v.y *= w;
            v.z *= w;
            v.w *= w;
            *reinterpret_cast<float4*>(P.dst + off) = v;
            acc += (v.x + v.y) + (v.z + v.w);
        } else {
            const float v = w * P.src[off];
            P.dst[off] = v;
            acc += v;
        }
        t += st;
        i += si;
        if (t >= Tv) {
            t -= Tv;
            ++i;
        }
    }
    if (!P.out_b) return; /* uniform over the block: no thread waits at a barrier below */
    acc = block_sum(acc);
    if (threadIdx.x == 0) {
        if (P.nsplit == 1) P.out_b[o] = acc;
        else P.partial[(int64_t)blockIdx.y * P.q + o] = acc;
    }
}

/* Channels last: block (x, y) owns CL_COLS consecutive channels (threadIdx.x: coalesced
 * reads and writes along q) of the rows of its samples, threadIdx.y striding the rows. */
static __global__ void alpha_scale_cl_kernel(fngd_alpha_scale_params P)
{
    __shared__ float red[CL_ROWS][CL_COLS + 1];
    const int o = blockIdx.x * CL_COLS + threadIdx.x;
    int i0, i1;
    split_range(P.n, P.nsplit, blockIdx.y, &i0, &i1);
    float acc = 0.0f;
    if (o < P.q) {
        /* Row (i, t) = i*T + t; rows advance CL_ROWS at a time without a division. */
        const int64_t si = CL_ROWS / P.T, st = CL_ROWS % P.T;
        int64_t i = i0 + threadIdx.y / P.T, t = threadIdx.y % P.T;
        while (i < i1) {
            const float w = P.scale * (P.alpha ? P.alpha[i] : 1.0f);
            const int64_t off = (i * P.T + t) * P.q + o;
            const float v = w * P.src[off];
            P.dst[off] = v;
            acc += v;
            t += st;
            i += si;
            if (t >= P.T) {
                t -= P.T;
                ++i;
            }
        }
    }
    if (!P.out_b) return;
    red[threadIdx.y][threadIdx.x] = acc;
    __syncthreads();
    if (threadIdx.y == 0 && o < P.q) {
        for (int y = 1; y < CL_ROWS; ++y) acc += red[y][threadIdx.x];
        if (P.nsplit == 1) P.out_b[o] = acc;
        else P.partial[(int64_t)blockIdx.y * P.q + o] = acc;
    }
}

/* out_b[o] = sum over splits y (in order) of partial[y, o]. */
static __global__ void alpha_scale_bias_kernel(const float* partial, int nsplit, int q,
                                               float* out_b)
{
    for (int o = blockIdx.x * blockDim.x + threadIdx.x; o < q; o += gridDim.x * blockDim.x) {
        float s = 0.0f;
        for (int y = 0; y < nsplit; ++y) s += partial[(int64_t)y * q + o];
        out_b[o] = s;
    }
}

int fngd_alpha_scale_splits(int n, int q, int T, int channels_last, int sm_count)
{
    if (n <= 1 || q <= 0) return 1;
    /* About 8 resident 256-thread blocks per multiprocessor, and at least ~2048 elements per
     * block so that the partial sums stay a small fraction of the traffic. */
    const int64_t target = (int64_t)(sm_count > 0 ? sm_count : 132) * 8;
    const int64_t col_blocks = channels_last ? (q + CL_COLS - 1) / CL_COLS : q;
    int64_t s = (target + col_blocks - 1) / col_blocks;
    const int64_t per_sample = (int64_t)T * (channels_last ? CL_COLS : 1);
    const int64_t min_samples = per_sample >= 2048 ? 1 : (2048 + per_sample - 1) / per_sample;
    const int64_t most = (n + min_samples - 1) / min_samples;
    if (s > most) s = most;
    if (s > n) s = n;
    if (s > 65535) s = 65535;
    return s < 1 ? 1 : (int)s;
}

cudaError_t fngd_launch_alpha_scale(const fngd_alpha_scale_params& P, cudaStream_t stream)
{
    if (P.q <= 0 || P.T <= 0 || P.n <= 0) return cudaSuccess;
    if (P.nsplit < 1 || P.nsplit > P.n || P.nsplit > 65535 || !P.src || !P.dst)
        return cudaErrorInvalidValue;
    if (P.out_b && P.nsplit > 1 && !P.partial) return cudaErrorInvalidValue;
    if (P.channels_last) {
        const dim3 grid((unsigned)((P.q + CL_COLS - 1) / CL_COLS), (unsigned)P.nsplit);
        alpha_scale_cl_kernel<<<grid, dim3(CL_COLS, CL_ROWS), 0, stream>>>(P);
    } else {
        if (P.q > 2147483647) return cudaErrorInvalidConfiguration;
        const dim3 grid((unsigned)P.q, (unsigned)P.nsplit);
        const bool vec = P.T % 4 == 0 && ((uintptr_t)P.src & 15) == 0 &&
                         ((uintptr_t)P.dst & 15) == 0;
        if (vec) alpha_scale_cf_kernel<4><<<grid, THREADS, 0, stream>>>(P);
        else alpha_scale_cf_kernel<1><<<grid, THREADS, 0, stream>>>(P);
    }
    cudaError_t e = cudaGetLastError();
    if (e != cudaSuccess || !P.out_b || P.nsplit == 1) return e;
    const int blocks = (P.q + THREADS - 1) / THREADS;
    alpha_scale_bias_kernel<<<blocks < 1024 ? blocks : 1024, THREADS, 0, stream>>>(
        P.partial, P.nsplit, P.q, P.out_b);
    return cudaGetLastError();
}
