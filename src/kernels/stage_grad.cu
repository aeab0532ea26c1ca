#include "stage_grad.cuh"

#include <stdint.h>

#define TILE 32
#define ROWS 8

/* Channels-first source: shared-memory tiled transpose of each sample's q x T block, so both
 * the read (along t) and the write (along o) are coalesced. grid.z walks samples. */
static __global__ void stage_transpose_kernel(fngd_stage_grad_params P)
{
    __shared__ float tile[TILE][TILE + 1];
    const int t0 = blockIdx.x * TILE, o0 = blockIdx.y * TILE;
    for (int i = blockIdx.z; i < P.n; i += gridDim.z) {
        const float w = P.scale * (P.alpha ? P.alpha[i] : 1.0f);
        const float* src = P.src + (int64_t)i * P.q * P.T;
        float* dst = P.dst + (int64_t)i * P.T * P.q;
        for (int r = threadIdx.y; r < TILE; r += ROWS) {
            const int o = o0 + r, t = t0 + threadIdx.x;
            if (o < P.q && t < P.T) tile[r][threadIdx.x] = src[(int64_t)o * P.T + t];
        }
        __syncthreads();
        for (int r = threadIdx.y; r < TILE; r += ROWS) {
            const int t = t0 + r, o = o0 + threadIdx.x;
            if (t < P.T && o < P.q) dst[(int64_t)t * P.q + o] = w * tile[threadIdx.x][r];
        }
        __syncthreads();
    }
}

/* Positions-major source: already in the target layout, only the row scaling remains. */
static __global__ void stage_scale_kernel(fngd_stage_grad_params P)
{
    const int64_t per = (int64_t)P.T * P.q;
    const int64_t total = per * P.n;
    for (int64_t e = blockIdx.x * (int64_t)blockDim.x + threadIdx.x; e < total;
         e += (int64_t)gridDim.x * blockDim.x) {
        const int64_t i = e / per;
        P.dst[e] = P.scale * (P.alpha ? P.alpha[i] : 1.0f) * P.src[e];
    }
}

cudaError_t fngd_launch_stage_grad(const fngd_stage_grad_params& P, cudaStream_t stream)
{
    if (P.n == 0 || P.T == 0 || P.q == 0) return cudaSuccess;
    if (P.channels_first) {
        dim3 grid((P.T + TILE - 1) / TILE, (P.q + TILE - 1) / TILE, P.n < 65535 ? P.n : 65535);
        if (grid.y > 65535) return cudaErrorInvalidConfiguration;
        stage_transpose_kernel<<<grid, dim3(TILE, ROWS), 0, stream>>>(P);
    } else {
        const int64_t total = (int64_t)P.n * P.T * P.q;
        int64_t blocks = (total + 255) / 256;
        if (blocks > 65536) blocks = 65536;
        stage_scale_kernel<<<(unsigned)blocks, 256, 0, stream>>>(P);
    }
    return cudaGetLastError();
}
