#include "embedding.cuh"

#define THREADS 256
#define MAX_BLOCKS 4096

static int grid_for(int64_t total)
{
    const int64_t blocks = (total + THREADS - 1) / THREADS;
    return blocks < 1 ? 1 : blocks < MAX_BLOCKS ? (int)blocks : MAX_BLOCKS;
}

static __global__ void embedding_check_kernel(fngd_embedding_params P, int* bad)
{
    const int64_t total = (int64_t)P.n * P.T;
    for (int64_t k = blockIdx.x * (int64_t)blockDim.x + threadIdx.x; k < total;
         k += (int64_t)gridDim.x * blockDim.x)
        if (P.ids[k] >= P.V) *bad = 1;
}

/* Each thread takes token pairs (t, u) in turn; a match adds the D-term dot product in double
 * (D can be a few hundred), then the block reduces in double. */
static __global__ void embedding_gram_kernel(fngd_embedding_params P, float scale2, float* K,
                                             int accumulate)
{
    __shared__ double part[THREADS];
    const int i = blockIdx.y, j = blockIdx.x;
    if (j < i) return; /* the upper triangle's block writes both entries */
    const int64_t* ii = P.ids + (int64_t)i * P.T;
    const int64_t* jj = P.ids + (int64_t)j * P.T;
    double acc = 0.0;
    const int64_t pairs = (int64_t)P.T * P.T;
    for (int64_t k = threadIdx.x; k < pairs; k += blockDim.x) {
        const int t = (int)(k / P.T), u = (int)(k % P.T);
        const int64_t a = ii[t];
        if (a < 0 || a != jj[u]) continue;
        const float* e = P.grad_output + ((int64_t)i * P.T + t) * P.D;
        const float* f = P.grad_output + ((int64_t)j * P.T + u) * P.D;
        for (int c = 0; c < P.D; ++c) acc += (double)e[c] * f[c];
    }
    part[threadIdx.x] = acc;
    __syncthreads();
    for (int w = blockDim.x / 2; w > 0; w /= 2) {
        if (threadIdx.x < w) part[threadIdx.x] += part[threadIdx.x + w];
        __syncthreads();
    }
    if (threadIdx.x != 0) return;
    const float v = (float)(scale2 * part[0]);
    float* kij = K + (int64_t)i * P.n + j;
    float* kji = K + (int64_t)j * P.n + i;
    const float out = accumulate ? *kij + v : v;
    *kij = out;
    *kji = out;
}

static __global__ void embedding_scatter_kernel(fngd_embedding_params P, const float* alpha,
                                                float scale, float* out_w)
{
    const int64_t total = (int64_t)P.n * P.T * P.D;
    for (int64_t k = blockIdx.x * (int64_t)blockDim.x + threadIdx.x; k < total;
         k += (int64_t)gridDim.x * blockDim.x) {
        const int64_t tok = k / P.D; /* i * T + t */
        const int64_t id = P.ids[tok];
        if (id < 0) continue;
        const int i = (int)(tok / P.T), c = (int)(k % P.D);
        atomicAdd(out_w + id * P.D + c, scale * alpha[i] * P.grad_output[k]);
    }
}

cudaError_t fngd_launch_embedding_check(const fngd_embedding_params& P, int* bad,
                                        cudaStream_t stream)
{
    if (P.n <= 0 || P.T <= 0) return cudaSuccess;
    embedding_check_kernel<<<grid_for((int64_t)P.n * P.T), THREADS, 0, stream>>>(P, bad);
    return cudaGetLastError();
}

cudaError_t fngd_launch_embedding_gram(const fngd_embedding_params& P, float scale2, float* K,
                                       int accumulate, cudaStream_t stream)
{
    if (P.n <= 0) return cudaSuccess;
    if (P.n > 65535) return cudaErrorInvalidValue; /* gridDim.y */
    const dim3 grid((unsigned)P.n, (unsigned)P.n);
    embedding_gram_kernel<<<grid, THREADS, 0, stream>>>(P, scale2, K, accumulate);
    return cudaGetLastError();
}

cudaError_t fngd_launch_embedding_scatter(const fngd_embedding_params& P, const float* alpha,
                                          float scale, float* out_w, cudaStream_t stream)
{
    if (P.n <= 0 || P.T <= 0) return cudaSuccess;
    embedding_scatter_kernel<<<grid_for((int64_t)P.n * P.T * P.D), THREADS, 0, stream>>>(
        P, alpha, scale, out_w);
    return cudaGetLastError();
}
