#include "damping.cuh"

#include <stdint.h>

#define THREADS 256

static __global__ void widen_kernel(fngd_damping_params P)
{
    const int64_t total = (int64_t)P.N * P.N;
    for (int64_t e = blockIdx.x * (int64_t)blockDim.x + threadIdx.x; e < total;
         e += (int64_t)gridDim.x * blockDim.x) {
        const float v = P.K[e];
        P.Kd[e] = (double)v;
        if (isnan(v)) *P.nan = 1;
    }
}

/* One block: the trace is a length-N reduction, then every thread shifts its diagonal part. */
static __global__ void trace_shift_kernel(fngd_damping_params P)
{
    __shared__ double s[THREADS];
    __shared__ double shift_s;
    double acc = 0.0;
    for (int i = threadIdx.x; i < P.N; i += THREADS) acc += P.Kd[(int64_t)i * P.N + i];
    s[threadIdx.x] = acc;
    __syncthreads();
    for (int h = THREADS / 2; h > 0; h >>= 1) {
        if ((int)threadIdx.x < h) s[threadIdx.x] += s[threadIdx.x + h];
        __syncthreads();
    }
    if (threadIdx.x == 0) {
        const double tr = s[0];
        double sh = P.trace_relative ? P.damping * tr : (double)P.N * P.damping;
        if (sh < P.min_shift) sh = P.min_shift; /* as the CPU backend: NaN stays NaN */
        *P.trace = tr;
        *P.shift = sh;
        shift_s = sh;
    }
    __syncthreads();
    const double sh = shift_s;
    for (int i = threadIdx.x; i < P.N; i += THREADS) {
        const double d = P.Kd[(int64_t)i * P.N + i] + sh;
        P.Kd[(int64_t)i * P.N + i] = d;
        if (isnan(d)) *P.nan = 1; /* a NaN shift (e.g. 0 * Inf trace) */
        P.b[i] = P.rhs ? (double)P.rhs[i] : 1.0;
    }
}

cudaError_t fngd_launch_damping(const fngd_damping_params& P, cudaStream_t stream)
{
    if (P.N <= 0) return cudaErrorInvalidValue;
    const int64_t total = (int64_t)P.N * P.N;
    int64_t blocks = (total + THREADS - 1) / THREADS;
    if (blocks > 65536) blocks = 65536;
    widen_kernel<<<(unsigned)blocks, THREADS, 0, stream>>>(P);
    cudaError_t e = cudaGetLastError();
    if (e != cudaSuccess) return e;
    trace_shift_kernel<<<1, THREADS, 0, stream>>>(P);
    return cudaGetLastError();
}
