#include "im2col.cuh"

#include <stdint.h>

/* One thread per output element, consecutive threads along the patch index k so that the
 * writes are coalesced; the reads follow the kernel row (contiguous for dilation 1). */
static __global__ void im2col_kernel(fngd_im2col_params P)
{
    const int T = P.out_h * P.out_w;
    const int khw = P.kh * P.kw;
    const int p = P.C * khw;
    const int64_t total = (int64_t)P.n * T * p;
    for (int64_t e = blockIdx.x * (int64_t)blockDim.x + threadIdx.x; e < total;
         e += (int64_t)gridDim.x * blockDim.x) {
        const int k = (int)(e % p);
        const int64_t row = e / p;
        const int t = (int)(row % T);
        const int64_t i = row / T;
        const int c = k / khw;
        const int r = k - c * khw;
        const int ki = r / P.kw, kj = r - (r / P.kw) * P.kw;
        const int oh = t / P.out_w, ow = t - (t / P.out_w) * P.out_w;
        const int h = oh * P.sh - P.ph + ki * P.dh;
        const int w = ow * P.sw - P.pw + kj * P.dw;
        float v = 0.0f;
        if (h >= 0 && h < P.H && w >= 0 && w < P.W)
            v = P.x[((i * P.C + c) * P.H + h) * (int64_t)P.W + w];
        P.cols[e] = v;
    }
}

cudaError_t fngd_launch_im2col(const fngd_im2col_params& P, cudaStream_t stream)
{
    const int64_t total = (int64_t)P.n * P.out_h * P.out_w * P.C * P.kh * P.kw;
    if (total == 0) return cudaSuccess;
    const int threads = 256;
    int64_t blocks = (total + threads - 1) / threads;
    if (blocks > 65536) blocks = 65536;
    im2col_kernel<<<(unsigned)blocks, threads, 0, stream>>>(P);
    return cudaGetLastError();
}
