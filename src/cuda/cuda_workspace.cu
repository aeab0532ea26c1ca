/* Workspace planning shared by layer_gram, weighted_grad and workspace_bytes. */
#include "cuda_cudnn.h"
#include "cuda_solve.h"
#include "cuda_plan.h"
#include "kernels/alpha_scale.cuh"

namespace {
bool is_matrix_layer(const fngd_layer_t* L)
{
    return L->kind == FNGD_LAYER_LINEAR || L->kind == FNGD_LAYER_CONV2D;
}

/* Largest k in [1, hi] with bytes_of(k) <= budget, or 1 when none fits (the caller checks).
 * bytes_of is nondecreasing in k, so a binary search finds it. */
template <class F>
int largest_fitting(int hi, size_t budget, F bytes_of)
{
    if (hi < 1) return 1;
    if (bytes_of(hi) <= budget) return hi;
    int lo = 1;
    if (bytes_of(lo) > budget) return 1;
    while (hi - lo > 1) {
        const int mid = lo + (hi - lo) / 2;
        if (bytes_of(mid) <= budget) lo = mid; else hi = mid;
    }
    return lo;
}
}  // namespace

fngd_gram_buffers fngd_cuda_gram_buffers(const fngd_layer_t* L, int N,
                                         const fngd_gram_plan& plan, void* ws, size_t* bytes)
{
    fngd_cuda_carve c{(char*)ws, 0};
    fngd_gram_buffers b = {};
    const int64_t T = L->T, p = L->p, q = L->q;
    if (L->kind == FNGD_LAYER_NORM_AFFINE) {
        b.P = (float*)c.take((size_t)N * L->grad_len * sizeof(float));
    } else if (is_matrix_layer(L) && L->method == FNGD_GRAM_POSITION) {
        if (L->kind == FNGD_LAYER_CONV2D) {
            b.cols = (float*)c.take((size_t)(N * T * p) * sizeof(float));
            b.E = (float*)c.take((size_t)(N * T * q) * sizeof(float));
        }
        const size_t s = (size_t)plan.nb * T * N * T * sizeof(float);
        b.SA = (float*)c.take(s);
        b.SE = (float*)c.take(s);
    } else if (is_matrix_layer(L)) {
        if (L->n_bias) b.Pb = (float*)c.take((size_t)(N * q) * sizeof(float));
        b.P = (float*)c.take((size_t)N * plan.qc * p * sizeof(float));
        if (L->kind == FNGD_LAYER_CONV2D)
            b.cols = (float*)c.take((size_t)plan.nc * T * p * sizeof(float));
    }
    *bytes = c.used;
    return b;
}

fngd_gram_plan fngd_cuda_plan_gram(const fngd_layer_t* L, int N, size_t budget)
{
    fngd_gram_plan plan = {1, 1, 1, 0};
    auto bytes_of = [&](const fngd_gram_plan& pl) {
        size_t b = 0;
        fngd_cuda_gram_buffers(L, N, pl, nullptr, &b);
        return b;
    };
    if (is_matrix_layer(L) && L->method == FNGD_GRAM_POSITION) {
        plan.nb = largest_fitting(N, budget, [&](int k) {
            fngd_gram_plan t = plan;
            t.nb = k;
            return bytes_of(t);
        });
    } else if (is_matrix_layer(L)) {
        /* Try the whole layer at once; else give each of the two buffers half the budget. */
        fngd_gram_plan full = plan;
        full.qc = L->q;
        full.nc = N;
        if (bytes_of(full) <= budget) {
            plan = full;
        } else {
            const size_t half = budget / 2;
            plan.nc = L->kind == FNGD_LAYER_CONV2D
                          ? largest_fitting(N, half, [&](int k) {
                                return fngd_cuda_align((size_t)k * L->T * L->p * sizeof(float));
                            })
                          : 1;
            plan.qc = largest_fitting(L->q, budget, [&](int k) {
                fngd_gram_plan t = plan;
                t.qc = k;
                return bytes_of(t);
            });
        }
    }
    plan.bytes = bytes_of(plan);
    return plan;
}

fngd_weighted_buffers fngd_cuda_weighted_buffers(const fngd_layer_t* L,
                                                 const fngd_weighted_plan& plan, void* ws,
                                                 size_t* bytes)
{
    fngd_cuda_carve c{(char*)ws, 0};
    fngd_weighted_buffers b = {};
    if (is_matrix_layer(L)) {
        const int64_t rows = (int64_t)plan.nc * L->T;
        if (L->kind == FNGD_LAYER_CONV2D) b.cols = (float*)c.take((size_t)(rows * L->p) * sizeof(float));
        b.DE = (float*)c.take((size_t)(rows * L->q) * sizeof(float));
    }
    *bytes = c.used;
    return b;
}

fngd_weighted_plan fngd_cuda_plan_weighted(const fngd_layer_t* L, int N, size_t budget)
{
    fngd_weighted_plan plan = {1, 0};
    auto bytes_of = [&](int k) {
        fngd_weighted_plan t = {k, 0};
        size_t b = 0;
        fngd_cuda_weighted_buffers(L, t, nullptr, &b);
        return b;
    };
    if (is_matrix_layer(L)) plan.nc = largest_fitting(N, budget, bytes_of);
    plan.bytes = bytes_of(plan.nc);
    return plan;
}

/* The most any operation of the layer takes at batch N (EMBEDDING: nothing; grouped CONV2D:
 * one group's staging and its ungrouped op): the Gram's plan, and the weighted reduction's:
 * for a CONV2D layer with a usable cuDNN plan (made here, once per geometry and N, so
 * fngd_prepare / fngd_get_workspace_size choose the algorithm) the scaled output
 * gradient, bias partials and cuDNN's own workspace; else the im2col / staging plan, plus the
 * bias partial sums of a single-chunk LINEAR layer (cuda_weighted.cu). */
static size_t layer_bytes(fngd_backend_ctx_t* ctx, const fngd_layer_t* layer, int N)
{
    if (layer->kind == FNGD_LAYER_CONV2D && layer->groups > 1) {
        /* The staging of one group, then what its ungrouped op takes (cuda_grouped.cu). */
        fngd_layer_t g;
        fngd_err_t scratch;
        if (fngd_cuda_group_layer(layer, &g, &scratch) != FNGD_SUCCESS) return 0;
        return fngd_cuda_grouped_staging_bytes(&g, N) + layer_bytes(ctx, &g, N);
    }
    const size_t g = fngd_cuda_plan_gram(layer, N, FNGD_CUDA_WS_TARGET).bytes;
    const fngd_weighted_plan wp = fngd_cuda_plan_weighted(layer, N, FNGD_CUDA_WS_TARGET);
    size_t w = wp.bytes;
    if (layer->kind == FNGD_LAYER_LINEAR && layer->n_bias && wp.nc >= N) {
        const int nsplit = fngd_alpha_scale_splits(N, layer->q, layer->T, 1,
                                                   ctx ? ctx->sm_count : 0);
        if (nsplit > 1) w += fngd_cuda_align((size_t)nsplit * layer->q * sizeof(float));
    }
    if (layer->kind == FNGD_LAYER_CONV2D && ctx) {
        const fngd_cuda_conv_plan cp = fngd_cuda_conv_plan_get(ctx, layer, N);
        if (cp.usable) w = cp.bytes;
    }
    return g > w ? g : w;
}

/* The op table's one workspace query: the largest layer op and the solve of solve_count
 * matrices (cuda_solve.cu) on either path, and of one matrix (the host's retry of a matrix
 * that failed to factor), so that any batch up to N is covered whichever path it resolves to. */
fngd_status_t fngd_cuda_workspace_bytes(fngd_backend_ctx_t* ctx, const fngd_layer_t* layers,
                                        int num_layers, int N, int solve_count, size_t* bytes,
                                        const fngd_call_t* call)
{
    FNGD_REQUIRE(call->err, ctx && bytes && num_layers >= 0 && (num_layers == 0 || layers) &&
                                N >= 1 && solve_count >= 0,
                 FNGD_ERROR_INVALID_ARGUMENT,
                 "cuda workspace_bytes: null argument, %d layers, N = %d or solve_count = %d",
                 num_layers, N, solve_count);
    size_t need = 0;
    if (solve_count > 0) {
        const fngd_cuda_chol_path paths[2] = {FNGD_CUDA_CHOL_BATCHED, FNGD_CUDA_CHOL_LOOPED};
        for (int count : {solve_count, 1})
            for (fngd_cuda_chol_path path : paths) {
                size_t b = 0;
                FNGD_TRY(fngd_cuda_solve_bytes(ctx, N, count, path, &b, call->err));
                if (b > need) need = b;
            }
    }
    for (int l = 0; l < num_layers; ++l) {
        const size_t w = layer_bytes(ctx, &layers[l], N);
        if (w > need) need = w;
    }
    *bytes = need;
    return FNGD_SUCCESS;
}
