#include "sgd_update.cuh"

#define THREADS 256
#define PER_BLOCK (THREADS * 8)

struct sgd_launch {
    fngd_sgd_params p;
    int64_t block_start[FNGD_SGD_MAX_TENSORS + 1];
};

static __global__ void sgd_update_kernel(const __grid_constant__ sgd_launch L)
{
    const int64_t b = blockIdx.x;
    int k = 0;
    while (k + 1 < L.p.num_tensors && b >= L.block_start[k + 1]) ++k;
    const fngd_sgd_tensor& T = L.p.t[k];
    const int64_t begin = (b - L.block_start[k]) * PER_BLOCK;
    const int64_t end = begin + PER_BLOCK < T.n ? begin + PER_BLOCK : T.n;
    for (int64_t i = begin + threadIdx.x; i < end; i += THREADS) {
        const float w = T.param[i];
        const float d = T.dir[i] + L.p.weight_decay * w;
        float m = d;
        if (T.mom) {
            m = L.p.momentum * T.mom[i] + d;
            T.mom[i] = m;
        }
        T.param[i] = w - L.p.lr * m;
    }
}

cudaError_t fngd_launch_sgd_update(const fngd_sgd_params& P, cudaStream_t stream)
{
    if (P.num_tensors <= 0 || P.num_tensors > FNGD_SGD_MAX_TENSORS) return cudaErrorInvalidValue;
    sgd_launch L;
    L.p = P;
    int64_t blocks = 0;
    for (int k = 0; k < P.num_tensors; ++k) {
        L.block_start[k] = blocks;
        blocks += (P.t[k].n + PER_BLOCK - 1) / PER_BLOCK;
    }
    L.block_start[P.num_tensors] = blocks;
    if (blocks == 0) return cudaSuccess;
    if (blocks > 2147483647) return cudaErrorInvalidConfiguration;
    sgd_update_kernel<<<(unsigned)blocks, THREADS, 0, stream>>>(L);
    return cudaGetLastError();
}
