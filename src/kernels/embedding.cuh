/* EMBEDDING layers (docs/METHOD.md section 4, "Embedding"): a sample's gradient is sparse, row
 * v = the sum of its output gradients e_it over the tokens t with id v, so
 *   K_ij = sum over token pairs (t, u) with ids[i,t] = ids[j,u] >= 0 of <e_it, e_ju>,
 * formed without any V x D per-sample gradient. ids: device int64, N x T (ids < 0 are padding);
 * grad_output: N x T x D floats. */
#ifndef FNGD_KERNELS_EMBEDDING_CUH
#define FNGD_KERNELS_EMBEDDING_CUH

#include <cuda_runtime.h>
#include <stdint.h>

struct fngd_embedding_params {
    const int64_t* ids;
    const float* grad_output;
    int n;            /* samples */
    int T;            /* tokens per sample */
    int D;            /* embedding_dim */
    int64_t V;        /* num_embeddings */
};

/* *bad (device int, zeroed by the caller) = 1 when an id is >= V. */
cudaError_t fngd_launch_embedding_check(const fngd_embedding_params& P, int* bad,
                                        cudaStream_t stream);
/* K (n x n, row-major, both triangles) = scale2 * K_emb, or K += that with accumulate: one
 * block per pair i <= j (a grid of n x n, the lower half returning at once), each entry written
 * by that block alone. */
cudaError_t fngd_launch_embedding_gram(const fngd_embedding_params& P, float scale2, float* K,
                                       int accumulate, cudaStream_t stream);
/* out_w (V x D, zeroed by the caller) += scale * alpha_i * e_it at row ids[i,t], by atomic
 * adds (the order of the additions to one row is not fixed). */
cudaError_t fngd_launch_embedding_scatter(const fngd_embedding_params& P, const float* alpha,
                                          float scale, float* out_w, cudaStream_t stream);

#endif
