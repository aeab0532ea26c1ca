#include "damping.cuh"

#include <stdint.h>

#define THREADS 256

static __global__ void widen_kernel(fngd_damping_params P)
{
    const int64_t nn = (int64_t)P.N * P.N;
    const int64_t total = nn * P.count;
    for (int64_t e = blockIdx.x * (int64_t)blockDim.x + threadIdx.x; e < total;
         e += (int64_t)gridDim.x * blockDim.x) {
        const float v = P.K[e];
        P.Kd[e] = (double)v;
        if (isnan(v)) P.nan[e / nn] = 1;
    }
}

/* One block per matrix: the trace is a length-N reduction, then every thread shifts its
 * diagonal part. */
static __global__ void trace_shift_kernel(fngd_damping_params P)
{
    __shared__ double s[THREADS];
    __shared__ double shift_s;
    const int N = P.N;
    for (int m = blockIdx.x; m < P.count; m += gridDim.x) {
        double* Kd = P.Kd + (int64_t)m * N * N;
        double acc = 0.0;
        for (int i = threadIdx.x; i < N; i += THREADS) acc += Kd[(int64_t)i * N + i];
        s[threadIdx.x] = acc;
        __syncthreads();
        for (int h = THREADS / 2; h > 0; h >>= 1) {
            if ((int)threadIdx.x < h) s[threadIdx.x] += s[threadIdx.x + h];
            __syncthreads();
        }
        if (threadIdx.x == 0) {
            const double tr = s[0];
            const double floor_m = P.min_shifts ? P.min_shifts[m] : P.min_shift;
            double sh = P.trace_relative ? P.damping * tr : (double)N * P.damping;
            if (sh < floor_m) sh = floor_m; /* as the CPU backend: NaN stays NaN */
            P.trace[m] = tr;
            P.shift[m] = sh;
            shift_s = sh;
        }
        __syncthreads();
        const double sh = shift_s;
        double* b = P.b + (int64_t)m * N;
        for (int i = threadIdx.x; i < N; i += THREADS) {
            const double d = Kd[(int64_t)i * N + i] + sh;
            Kd[(int64_t)i * N + i] = d;
            if (isnan(d)) P.nan[m] = 1; /* a NaN shift (e.g. 0 * Inf trace) */
            b[i] = P.rhs ? (double)P.rhs[i] : 1.0;
        }
        __syncthreads(); /* s and shift_s are reused by the next matrix */
    }
}

cudaError_t fngd_launch_damping(const fngd_damping_params& P, cudaStream_t stream)
{
    if (P.N <= 0 || P.count <= 0) return cudaErrorInvalidValue;
    const int64_t total = (int64_t)P.N * P.N * P.count;
    int64_t blocks = (total + THREADS - 1) / THREADS;
    if (blocks > 65536) blocks = 65536;
    widen_kernel<<<(unsigned)blocks, THREADS, 0, stream>>>(P);
    cudaError_t e = cudaGetLastError();
    if (e != cudaSuccess) return e;
    const int mblocks = P.count < 65536 ? P.count : 65536;
    trace_shift_kernel<<<mblocks, THREADS, 0, stream>>>(P);
    return cudaGetLastError();
}
