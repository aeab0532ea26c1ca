/* EMBEDDING layers on the GPU (kernels/embedding.cuh): the ids are checked first (an id >=
 * num_embeddings fails the op before anything is written, as on the CPU), at the cost of one
 * blocking read-back per op. */
#include "cuda_common.h"
#include "kernels/embedding.cuh"

namespace {
fngd_embedding_params params_of(const fngd_layer_t* L, const fngd_layer_batch_t* batch, int N)
{
    fngd_embedding_params P;
    P.ids = (const int64_t*)(const void*)batch->input;
    P.grad_output = batch->grad_output;
    P.n = N;
    P.T = L->T;
    P.D = L->q;
    P.V = L->desc.num_embeddings;
    return P;
}

fngd_status_t check_ids(fngd_backend_ctx_t* ctx, const fngd_embedding_params& P,
                        cudaStream_t s, fngd_err_t* err)
{
    int* bad = &ctx->scratch_dev->bad_id;
    FNGD_CUDA_TRY(err, cudaMemsetAsync(bad, 0, sizeof(int), s));
    FNGD_CUDA_TRY(err, fngd_launch_embedding_check(P, bad, s));
    FNGD_CUDA_TRY(err, cudaMemcpyAsync(&ctx->scratch_host->bad_id, bad, sizeof(int),
                                       cudaMemcpyDeviceToHost, s));
    FNGD_CUDA_TRY(err, cudaStreamSynchronize(s));
    FNGD_REQUIRE(err, !ctx->scratch_host->bad_id, FNGD_ERROR_INVALID_ARGUMENT,
                 "embedding: a token id is >= num_embeddings = %lld", (long long)P.V);
    return FNGD_SUCCESS;
}
}  // namespace

fngd_status_t fngd_cuda_embedding_gram(fngd_backend_ctx_t* ctx, const fngd_layer_t* layer,
                                       const fngd_layer_batch_t* batch, int N, float scale2,
                                       float* K, int accumulate, cudaStream_t s, fngd_err_t* err)
{
    const fngd_embedding_params P = params_of(layer, batch, N);
    FNGD_REQUIRE(err, N <= 65535, FNGD_ERROR_NOT_SUPPORTED,
                 "embedding Gram: batch of %d exceeds 65535 on CUDA", N);
    FNGD_TRY(check_ids(ctx, P, s, err));
    FNGD_CUDA_TRY(err, fngd_launch_embedding_gram(P, scale2, K, accumulate, s));
    return FNGD_SUCCESS;
}

fngd_status_t fngd_cuda_embedding_reduce(fngd_backend_ctx_t* ctx, const fngd_layer_t* layer,
                                         const fngd_layer_batch_t* batch, int N,
                                         const float* alpha, float scale, float* out_w,
                                         cudaStream_t s, fngd_err_t* err)
{
    const fngd_embedding_params P = params_of(layer, batch, N);
    FNGD_TRY(check_ids(ctx, P, s, err));
    FNGD_CUDA_TRY(err, cudaMemsetAsync(out_w, 0, (size_t)layer->n_weight * sizeof(float), s));
    FNGD_CUDA_TRY(err, fngd_launch_embedding_scatter(P, alpha, scale, out_w, s));
    return FNGD_SUCCESS;
}
