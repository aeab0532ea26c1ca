#include "coef_summary.cuh"

#include <limits.h>
#include <math.h>

#define THREADS 256

/* fmin/fmax return the other operand for a NaN one: the NaN-skipping part of the CPU rule. */
__device__ static inline void combine(fngd_coef_summary_item& a, const fngd_coef_summary_item& b)
{
    a.count += b.count;
    a.min = fmin(a.min, b.min);
    a.max = fmax(a.max, b.max);
    a.sum += b.sum;
    if (b.first_key < a.first_key) {
        a.first_key = b.first_key;
        a.first = b.first;
    }
}

/* Tree reduction in shared memory; thread 0 ends with the block's total. */
__device__ static inline fngd_coef_summary_item block_combine(fngd_coef_summary_item v)
{
    __shared__ fngd_coef_summary_item s[THREADS];
    s[threadIdx.x] = v;
    __syncthreads();
    for (int h = THREADS / 2; h > 0; h >>= 1) {
        if ((int)threadIdx.x < h) combine(s[threadIdx.x], s[threadIdx.x + h]);
        __syncthreads();
    }
    return s[0];
}

__device__ static inline fngd_coef_summary_item empty_item()
{
    fngd_coef_summary_item e;
    e.count = 0;
    e.min = INFINITY;
    e.max = -INFINITY;
    e.sum = 0.0;
    e.first_key = LLONG_MAX;
    e.first = 0.0;
    return e;
}

static __global__ void summary_partial_kernel(fngd_coef_summary_params P)
{
    /* gridDim.y is capped at 65535: a block row serves every gridDim.y-th set. The loop
     * bound is the same for the whole block, so block_combine's barriers are uniform. */
    for (int set = blockIdx.y; set < P.nsets; set += gridDim.y) {
        fngd_coef_summary_item v = empty_item();
        for (int64_t k = blockIdx.x * (int64_t)THREADS + threadIdx.x; k < P.num_keys;
             k += (int64_t)gridDim.x * THREADS) {
            if (P.seen[k]) {
                const double x = P.table[k * P.nsets + set];
                if (v.count == 0) { /* keys rise along a thread's stride: this is its lowest */
                    v.first_key = k;
                    v.first = x;
                }
                v.count += 1;
                v.min = fmin(v.min, x);
                v.max = fmax(v.max, x);
                v.sum += x;
            }
        }
        const fngd_coef_summary_item b = block_combine(v);
        if (threadIdx.x == 0) P.partials[(int64_t)set * P.blocks_per_set + blockIdx.x] = b;
        __syncthreads(); /* the shared array is reused by the next set */
    }
}

static __global__ void summary_final_kernel(fngd_coef_summary_params P)
{
    const int set = blockIdx.x;
    const fngd_coef_summary_item* part = P.partials + (int64_t)set * P.blocks_per_set;
    fngd_coef_summary_item v = empty_item();
    for (int b = threadIdx.x; b < P.blocks_per_set; b += THREADS) combine(v, part[b]);
    fngd_coef_summary_item t = block_combine(v);
    if (threadIdx.x == 0) {
        /* The CPU loop's min and max start at the lowest key's value and a NaN there sticks. */
        if (t.count > 0 && isnan(t.first)) t.min = t.max = t.first;
        P.result[set] = t;
    }
}

cudaError_t fngd_launch_coef_summary(const fngd_coef_summary_params& P, cudaStream_t stream)
{
    if (P.blocks_per_set <= 0 || P.nsets <= 0) return cudaErrorInvalidValue;
    const unsigned rows = P.nsets < 65535 ? (unsigned)P.nsets : 65535u;
    summary_partial_kernel<<<dim3((unsigned)P.blocks_per_set, rows), THREADS, 0, stream>>>(P);
    cudaError_t e = cudaGetLastError();
    if (e != cudaSuccess) return e;
    summary_final_kernel<<<P.nsets, THREADS, 0, stream>>>(P);
    return cudaGetLastError();
}
