/* workspace_bytes and the workspace plans: chunk sizes and the exact bytes each layer op
 * carves from its workspace. workspace_bytes and the ops call the same functions, so they can
 * never disagree.
 *
 * The chunk is the largest whose workspace stays under the context's budget (one chunk
 * minimum) and, for an op, under the workspace it was actually given. The second limit
 * matters because the host sizes the workspace for max_batch and then runs smaller batches:
 * a smaller N may afford a larger chunk under the budget than max_batch did, and must then
 * take the chunk that fits what it was given instead. Every piece grows with N at a fixed
 * chunk, so the workspace sized for max_batch always fits chunk 1 of any smaller N. */
#include <limits.h>
#include <stdint.h>

#include "cpu_internal.h"

typedef enum { OP_MATERIALIZE, OP_POSITION, OP_REDUCE } cpu_op_t;

/* Workspace bytes of `op` with chunk c (pieces as the op carves them). */
static size_t op_bytes(const fngd_layer_t* l, int N, cpu_op_t op, size_t c) {
    const size_t T = (size_t)l->T, p = (size_t)l->cols, pa = (size_t)l->pa, q = (size_t)l->q;
    /* p here is the patch row length (all C_in channels' taps); pa stays one group's */
    const size_t n = (size_t)N;
    const int bias = l->pa > l->p;
    const int conv = l->kind == FNGD_LAYER_CONV2D;
    switch (op) {
    case OP_MATERIALIZE: /* one sample's patches, a ones vector, P: N x (c*pa) */
        return (conv ? cpu_ws_piece(T * p) : 0) + (bias ? cpu_ws_piece(T) : 0) +
               cpu_ws_piece(n * c * pa);
    case OP_POSITION: /* all rows of A and E (conv), S_A and S_E: c*T x N*T each */
        return (conv ? cpu_ws_piece(n * T * p) + cpu_ws_piece(n * T * q) : 0) +
               2 * cpu_ws_piece(c * T * n * T);
    case OP_REDUCE: /* scaled rows of E, patches (conv), ones (bias) of c samples */
        return cpu_ws_piece(c * T * q) + (conv ? cpu_ws_piece(c * T * p) : 0) +
               (bias ? cpu_ws_piece(c * T) : 0);
    }
    return 0;
}

/* Largest c in [1, max_chunk] with op_bytes(c) <= limit, or 0 if even c = 1 does not fit
 * (op_bytes is nondecreasing in c). */
static int largest_fitting(const fngd_layer_t* l, int N, cpu_op_t op, int max_chunk,
                           size_t limit) {
    if (op_bytes(l, N, op, 1) > limit) return 0;
    int lo = 1, hi = max_chunk;
    while (lo < hi) {
        int mid = lo + (hi - lo + 1) / 2;
        if (op_bytes(l, N, op, (size_t)mid) <= limit)
            lo = mid;
        else
            hi = mid - 1;
    }
    return lo;
}

static fngd_status_t plan_op(const fngd_backend_ctx_t* ctx, const fngd_layer_t* l, int N,
                             cpu_op_t op, size_t ws_limit, cpu_plan_t* plan, fngd_err_t* err) {
    const int max_chunk = op == OP_MATERIALIZE ? l->q / l->groups : N; /* within a group */
    int c = largest_fitting(l, N, op, max_chunk, ctx->chunk_budget);
    if (c == 0) c = 1; /* the budget is soft: one chunk minimum */
    const int fit = largest_fitting(l, N, op, c, ws_limit);
    if (fit == 0)
        return FNGD_FAIL(err, FNGD_ERROR_INTERNAL,
                         "cpu backend: workspace of %zu bytes, at least %zu needed (layer kind "
                         "%d, N %d)",
                         ws_limit, op_bytes(l, N, op, 1), (int)l->kind, N);
    plan->chunk = fit;
    plan->bytes = op_bytes(l, N, op, (size_t)fit);
    return FNGD_SUCCESS;
}

static int fits_int(int64_t v) { return v >= 0 && v <= INT_MAX; }

/* GENERIC layers need no workspace (BLAS runs on the caller's per-sample gradients), only a
 * parameter count BLAS can index; any other kind is not one this build knows. */
static fngd_status_t plan_generic_or_unknown(const fngd_layer_t* layer, const char* op,
                                             fngd_err_t* err) {
    if (layer->kind != FNGD_LAYER_GENERIC)
        return FNGD_FAIL(err, FNGD_ERROR_INTERNAL, "cpu %s: unknown layer kind %d", op,
                         (int)layer->kind);
    if (!fits_int(layer->grad_len))
        return FNGD_FAIL(err, FNGD_ERROR_NOT_SUPPORTED,
                         "cpu %s: %lld generic parameters exceed BLAS int", op,
                         (long long)layer->grad_len);
    return FNGD_SUCCESS;
}

fngd_status_t cpu_plan_gram(const fngd_backend_ctx_t* ctx, const fngd_layer_t* layer, int N,
                            fngd_gram_method_t method, size_t ws_limit, cpu_plan_t* plan,
                            fngd_err_t* err) {
    plan->bytes = 0;
    plan->chunk = 1;
    switch (layer->kind) {
    case FNGD_LAYER_LINEAR:
    case FNGD_LAYER_CONV2D:
        if (!fits_int((int64_t)N * layer->T) || !fits_int((int64_t)layer->q * layer->pa))
            return FNGD_FAIL(err, FNGD_ERROR_NOT_SUPPORTED,
                             "cpu gram: N*T = %lld or q*pa = %lld exceeds BLAS int",
                             (long long)N * layer->T, (long long)layer->q * layer->pa);
        if (method == FNGD_GRAM_MATERIALIZE)
            return plan_op(ctx, layer, N, OP_MATERIALIZE, ws_limit, plan, err);
        if (method == FNGD_GRAM_POSITION)
            return plan_op(ctx, layer, N, OP_POSITION, ws_limit, plan, err);
        return FNGD_FAIL(err, FNGD_ERROR_INTERNAL, "cpu gram: unresolved Gram method %d",
                         (int)method);
    case FNGD_LAYER_EMBEDDING: /* id records, summed rows, their samples: all N*T tokens */
        plan->bytes = cpu_embedding_gram_bytes(layer, N);
        if (plan->bytes > ws_limit)
            return FNGD_FAIL(err, FNGD_ERROR_INTERNAL,
                             "cpu gram: workspace of %zu bytes, %zu needed (embedding)",
                             ws_limit, plan->bytes);
        return FNGD_SUCCESS;
    case FNGD_LAYER_NORM_AFFINE: /* per-sample gradients N x grad_len, then SYRK */
        plan->bytes = cpu_ws_piece((size_t)N * (size_t)layer->grad_len);
        if (plan->bytes > ws_limit)
            return FNGD_FAIL(err, FNGD_ERROR_INTERNAL,
                             "cpu gram: workspace of %zu bytes, %zu needed (norm affine)",
                             ws_limit, plan->bytes);
        return FNGD_SUCCESS;
    default:
        return plan_generic_or_unknown(layer, "gram", err); /* SYRK on the caller's rows */
    }
}

fngd_status_t cpu_plan_reduce(const fngd_backend_ctx_t* ctx, const fngd_layer_t* layer, int N,
                              size_t ws_limit, cpu_plan_t* plan, fngd_err_t* err) {
    plan->bytes = 0;
    plan->chunk = 1;
    switch (layer->kind) {
    case FNGD_LAYER_LINEAR:
    case FNGD_LAYER_CONV2D:
        if (!fits_int((int64_t)N * layer->T))
            return FNGD_FAIL(err, FNGD_ERROR_NOT_SUPPORTED,
                             "cpu weighted_grad: N*T = %lld exceeds BLAS int",
                             (long long)N * layer->T);
        return plan_op(ctx, layer, N, OP_REDUCE, ws_limit, plan, err);
    case FNGD_LAYER_NORM_AFFINE:
    case FNGD_LAYER_EMBEDDING:
        return FNGD_SUCCESS; /* direct loops */
    default:
        return plan_generic_or_unknown(layer, "weighted_grad", err); /* one GEMV */
    }
}

/* Bytes of a plan, 0 when a dimension is unsupported (the op itself then reports why). */
static size_t gram_plan_bytes(fngd_backend_ctx_t* ctx, const fngd_layer_t* layer, int N,
                              fngd_gram_method_t method) {
    fngd_err_t err;
    cpu_plan_t plan;
    return cpu_plan_gram(ctx, layer, N, method, SIZE_MAX, &plan, &err) == FNGD_SUCCESS
               ? plan.bytes
               : 0;
}

/* Max of the Gram plan (with the layer's method; both while it is still AUTO) and the
 * reduction plan of one layer. */
static size_t layer_bytes(fngd_backend_ctx_t* ctx, const fngd_layer_t* layer, int N) {
    size_t need;
    if (layer->method == FNGD_GRAM_AUTO &&
        (layer->kind == FNGD_LAYER_LINEAR || layer->kind == FNGD_LAYER_CONV2D)) {
        size_t m = gram_plan_bytes(ctx, layer, N, FNGD_GRAM_MATERIALIZE);
        size_t p = gram_plan_bytes(ctx, layer, N, FNGD_GRAM_POSITION);
        need = m > p ? m : p;
    } else {
        need = gram_plan_bytes(ctx, layer, N, layer->method);
    }
    fngd_err_t err;
    cpu_plan_t plan;
    if (cpu_plan_reduce(ctx, layer, N, SIZE_MAX, &plan, &err) == FNGD_SUCCESS &&
        plan.bytes > need)
        need = plan.bytes;
    return need;
}

/* The op table's workspace query: the largest layer op and the solve (the solves of a batch
 * run one after the other here, so they share one solve's workspace). */
fngd_status_t cpu_workspace_bytes(fngd_backend_ctx_t* ctx, const fngd_layer_t* layers,
                                  int num_layers, int N, int solve_count, size_t* bytes,
                                  const fngd_call_t* call) {
    FNGD_REQUIRE(call->err, ctx && bytes && num_layers >= 0 && (num_layers == 0 || layers) &&
                                N >= 1 && solve_count >= 0,
                 FNGD_ERROR_INVALID_ARGUMENT,
                 "cpu workspace_bytes: null argument, %d layers, N = %d or solve_count = %d",
                 num_layers, N, solve_count);
    size_t need = solve_count > 0 ? cpu_solve_workspace_bytes(N) : 0;
    for (int l = 0; l < num_layers; ++l) {
        size_t w = layer_bytes(ctx, &layers[l], N);
        if (w > need) need = w;
    }
    *bytes = need;
    return FNGD_SUCCESS;
}
