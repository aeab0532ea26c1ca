/* CONV2D with groups > 1 (depthwise included) on the GPU, composed from the ungrouped path: a
 * sample's gradient is the concatenation of its groups' gradients (group g owns output
 * channels [g C_out/G, (g+1) C_out/G) and sees input channels [g C_in/G, (g+1) C_in/G)), so
 *   K = sum_g K_g  and  direction = the groups' directions side by side in the weight and bias.
 * Group g's input and output-gradient channels are staged, for all N samples, by one strided
 * copy each into the front of the workspace; the ungrouped op then runs on the rest of it. The
 * cost is G staged copies and G ungrouped ops per layer: correct for any G, not tuned for
 * depthwise layers with many groups. */
#include "cuda_common.h"

namespace {
struct staging {
    float* x;   /* N x (C_in/G) x H x W */
    float* go;  /* N x (C_out/G) x T */
    size_t bytes;
};

staging carve(const fngd_layer_t& g, int N, void* ws)
{
    fngd_cuda_carve c{(char*)ws, 0};
    staging st;
    st.x = (float*)c.take((size_t)N * g.in_per_sample * sizeof(float));
    st.go = (float*)c.take((size_t)N * g.out_per_sample * sizeof(float));
    st.bytes = c.used;
    return st;
}

/* Group k's channels of every sample: N rows of `row` floats at pitch `pitch` floats. */
fngd_status_t stage(float* dst, const float* src, int64_t row, int64_t pitch, int N,
                    cudaStream_t s, fngd_err_t* err)
{
    FNGD_CUDA_TRY(err, cudaMemcpy2DAsync(dst, (size_t)row * sizeof(float), src,
                                         (size_t)pitch * sizeof(float),
                                         (size_t)row * sizeof(float), (size_t)N,
                                         cudaMemcpyDeviceToDevice, s));
    return FNGD_SUCCESS;
}

/* Stage group k and describe it: its batch in the staging buffers, and the call that gives
 * the ungrouped op the workspace behind them. */
fngd_status_t stage_group(const fngd_layer_t* L, const fngd_layer_t& g, const staging& st,
                          const fngd_layer_batch_t* batch, int N, int k, const fngd_call_t* call,
                          fngd_layer_batch_t* gb, fngd_call_t* gcall)
{
    const cudaStream_t s = fngd_cuda_stream(call->stream);
    FNGD_TRY(stage(st.x, batch->input + k * g.in_per_sample, g.in_per_sample, L->in_per_sample,
                   N, s, call->err));
    FNGD_TRY(stage(st.go, batch->grad_output + k * g.out_per_sample, g.out_per_sample,
                   L->out_per_sample, N, s, call->err));
    gb->input = st.x;
    gb->grad_output = st.go;
    *gcall = *call;
    gcall->ws = (char*)call->ws + st.bytes;
    gcall->ws_bytes = call->ws_bytes - st.bytes;
    return FNGD_SUCCESS;
}

/* Run op(k, group layer, group batch, group call) for every group k in order, each after
 * staging its channels (the staging buffers are reused: stream order keeps group k's op ahead
 * of group k + 1's copies). */
template <class Op>
fngd_status_t for_each_group(const fngd_layer_t* L, const fngd_layer_batch_t* batch, int N,
                             const fngd_call_t* call, Op op)
{
    fngd_layer_t g;
    FNGD_TRY(fngd_cuda_group_layer(L, &g, call->err));
    const staging st = carve(g, N, call->ws);
    FNGD_REQUIRE(call->err, call->ws && call->ws_bytes >= st.bytes, FNGD_ERROR_INTERNAL,
                 "grouped conv: workspace of %zu bytes, %zu needed for the staging alone",
                 call->ws_bytes, st.bytes);
    for (int k = 0; k < L->groups; ++k) {
        fngd_layer_batch_t gb;
        fngd_call_t gcall;
        FNGD_TRY(stage_group(L, g, st, batch, N, k, call, &gb, &gcall));
        FNGD_TRY(op(k, g, gb, gcall));
    }
    return FNGD_SUCCESS;
}
}  // namespace

fngd_status_t fngd_cuda_group_layer(const fngd_layer_t* L, fngd_layer_t* g, fngd_err_t* err)
{
    fngd_layer_desc_t d = L->desc;
    d.in_channels /= L->groups;
    d.out_channels /= L->groups;
    d.groups = 1;
    d.weight = d.bias = d.grad_weight = d.grad_bias = nullptr; /* geometry only */
    char msg[256];
    FNGD_REQUIRE(err, fngd_layer_init(g, &d, msg, sizeof msg) == FNGD_SUCCESS,
                 FNGD_ERROR_INTERNAL, "grouped conv: group layer: %s", msg);
    g->method = L->method;
    return FNGD_SUCCESS;
}

size_t fngd_cuda_grouped_staging_bytes(const fngd_layer_t* group, int N)
{
    return carve(*group, N, nullptr).bytes;
}

fngd_status_t fngd_cuda_grouped_gram(fngd_backend_ctx_t* ctx, const fngd_layer_t* L,
                                     const fngd_layer_batch_t* batch, int N, float scale, float* K,
                                     int accumulate, const fngd_call_t* call)
{
    return for_each_group(L, batch, N, call,
                          [&](int k, const fngd_layer_t& g, const fngd_layer_batch_t& gb,
                              const fngd_call_t& gcall) {
                              return fngd_cuda_layer_gram(ctx, &g, &gb, N, scale, K,
                                                          k > 0 || accumulate, &gcall);
                          });
}

fngd_status_t fngd_cuda_grouped_weighted(fngd_backend_ctx_t* ctx, const fngd_layer_t* L,
                                         const fngd_layer_batch_t* batch, int N,
                                         const float* alpha, float scale, float* out_w,
                                         float* out_b, const fngd_call_t* call)
{
    return for_each_group(L, batch, N, call,
                          [&](int k, const fngd_layer_t& g, const fngd_layer_batch_t& gb,
                              const fngd_call_t& gcall) {
                              return fngd_cuda_weighted_grad(ctx, &g, &gb, N, alpha, scale,
                                                             out_w + k * g.n_weight,
                                                             out_b ? out_b + k * g.q : nullptr,
                                                             &gcall);
                          });
}
