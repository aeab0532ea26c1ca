/* fngd_step: the collect phase (Gram, damped Cholesky, solve, store) and the reuse phase
 * (gather stored coefficients), both ending in the weighted reduction per layer; and
 * fngd_get_loss_weights, the whole library part of a global-mode reuse step. Phase NVTX
 * ranges (gram, factor, solve, gather, scatter, reduce, update) are the backend's; the host
 * marks only the public entry points. */
#include <math.h>

#include "call.h"
#include "epoch.h"
#include "nvtx_range.h"
#include "prepare.h"
#include "validate.h"

/* A damped Gram whose Cholesky failed (info > 0 with diagonal `shift`): grow the shift
 * geometrically (from zero: start at a tiny fraction of the trace) until it factors, at most
 * max_damping_retries times. */
static fngd_status_t retry_solve(fngd_handle_t h, const float* K, int N, const float* rhs,
                                 float* alpha, int info, double shift, double trace,
                                 int64_t* retries, double* shift_used, const fngd_call_t* call) {
    const fngd_config_t* c = &h->cfg;
    for (int attempt = 0; info > 0; ++attempt) {
        FNGD_REQUIRE(&h->err, attempt < c->max_damping_retries, FNGD_ERROR_NOT_POSITIVE_DEFINITE,
                     "damped Gram (N = %d, diagonal shift %g, trace %g) is not positive definite "
                     "(Cholesky pivot %d) after %d retries; raise the damping",
                     N, shift, trace, info, attempt);
        double min_shift = shift > 0 ? shift * c->damping_growth : 1e-6 * (trace > 0 ? trace : 1.0);
        ++*retries;
        FNGD_TRY(h->ops->factor_solve(h->ctx, K, 1, N, c->damping_kind, c->damping, &min_shift,
                                      rhs, c->coef_filter == FNGD_FILTER_RANGE, alpha, N, &info,
                                      &shift, &trace, call));
    }
    *shift_used = shift;
    return FNGD_SUCCESS;
}

static float grad_scale(const fngd_config_t* c, int N) {
    return c->grad_convention == FNGD_GRAD_MEAN_LOSS ? (float)N : 1.0f;
}

/* Damp, factor and solve the `count` Gram matrices in h->gram (slot k at k * N * N) into
 * alpha + k * max_batch: one call (one blocking status read on a GPU), then retries for the
 * ones that failed. Writes nothing but alpha and the Gram slots. */
static fngd_status_t solve_grams(fngd_handle_t h, int N, int count, const float* rhs,
                                 float* alpha, int64_t* retries, double* shift_used,
                                 const fngd_call_t* call) {
    const fngd_config_t* c = &h->cfg;
    size_t nn = (size_t)N * N;
    double *min_shift = h->solve_scratch, *shift = min_shift + count, *trace = shift + count;
    for (int k = 0; k < count; ++k) min_shift[k] = 0.0; /* first attempt: damping alone */
    FNGD_TRY(h->ops->factor_solve(h->ctx, h->gram, count, N, c->damping_kind, c->damping,
                                  min_shift, rhs, c->coef_filter == FNGD_FILTER_RANGE, alpha,
                                  c->max_batch, h->solve_info, shift, trace, call));
    for (int k = 0; k < count; ++k)
        FNGD_TRY(retry_solve(h, h->gram + (size_t)k * nn, N, rhs,
                             alpha + (size_t)k * c->max_batch, h->solve_info[k], shift[k],
                             trace[k], retries, shift_used, call));
    return FNGD_SUCCESS;
}

/* Collect phase: alpha for every coefficient set into h->alpha (nsets x max_batch). Per-layer
 * mode forms every layer's Gram first and factors them all in one batched call; global mode
 * sums the layers' Grams into one. Writes nothing that outlives a failure. */
static fngd_status_t compute_coefficients(fngd_handle_t h, int N,
                                          const fngd_layer_batch_t* batches, const float* rhs,
                                          int64_t* retries, double* shift_used,
                                          const fngd_call_t* call) {
    const int global = h->cfg.coef_mode == FNGD_COEF_GLOBAL;
    size_t nn = (size_t)N * N;
    for (int l = 0; l < h->num_layers; ++l)
        FNGD_TRY(h->ops->layer_gram(h->ctx, &h->layers[l], &batches[l], N, grad_scale(&h->cfg, N),
                                    global ? h->gram : h->gram + (size_t)l * nn, global && l > 0,
                                    call));
    return solve_grams(h, N, h->nsets, rhs, h->alpha, retries, shift_used, call);
}

/* Reuse phase, exact_small_layers: the small layers' Grams (compacted into the first nsmall
 * Gram slots) are solved like a collect step, into h->small_alpha. */
static fngd_status_t solve_small_layers(fngd_handle_t h, int N, const fngd_layer_batch_t* batches,
                                        const float* rhs, int64_t* retries, double* shift_used,
                                        const fngd_call_t* call) {
    const fngd_config_t* c = &h->cfg;
    size_t nn = (size_t)N * N;
    for (int j = 0; j < h->nsmall; ++j) {
        int l = h->small_layers[j];
        FNGD_TRY(h->ops->layer_gram(h->ctx, &h->layers[l], &batches[l], N, grad_scale(c, N),
                                    h->gram + (size_t)j * nn, 0, call));
    }
    return solve_grams(h, N, h->nsmall, rhs, h->small_alpha, retries, shift_used, call);
}

/* After the gather: the small layers' rows of h->alpha become this step's exact solve. */
static fngd_status_t solve_small_layers_store(fngd_handle_t h, int N, const fngd_call_t* call) {
    const int ld = h->cfg.max_batch;
    for (int j = 0; j < h->nsmall; ++j)
        FNGD_TRY(h->ops->copy(h->ctx, h->alpha + (size_t)h->small_layers[j] * ld,
                              h->small_alpha + (size_t)j * ld, N, call));
    return FNGD_SUCCESS;
}

/* Reuse phase: the stored coefficients of every set into h->alpha, in one backend call. */
static fngd_status_t gather_coefficients(fngd_handle_t h, int N, const int64_t* ids,
                                         const fngd_call_t* call) {
    return h->ops->gather_coefs(h->ctx, h->coef_table, h->coef_seen, h->nsets, ids,
                                fngd_key_offset(h), N, h->cfg.fallback, h->coef_fallback, 1.0f,
                                h->alpha, h->cfg.max_batch, h->fallback_count, call);
}

/* Collect phase: this step's coefficients of every set into the table, in one backend call. */
static fngd_status_t store_coefficients(fngd_handle_t h, int N, const int64_t* ids,
                                        const fngd_call_t* call) {
    return h->ops->scatter_coefs(h->ctx, h->coef_table, h->coef_seen, h->nsets, ids,
                                 fngd_key_offset(h), N, h->alpha, h->cfg.max_batch, call);
}

/* Where layer l's direction goes: its grad buffers (WRITE_GRAD) or its direction scratch
 * (APPLY_SGD, applied afterwards by apply_sgd). */
static void direction_buffers(fngd_handle_t h, int l, float** out_w, float** out_b) {
    fngd_layer_t* L = &h->layers[l];
    int apply = h->cfg.output == FNGD_OUTPUT_APPLY_SGD;
    *out_w = apply ? L->direction : L->desc.grad_weight;
    *out_b = apply ? (L->n_bias ? L->direction + L->n_weight : NULL) : L->desc.grad_bias;
}

/* The weighted reduction of one layer into its direction buffers. */
static fngd_status_t produce_direction(fngd_handle_t h, int l, const fngd_layer_batch_t* batch,
                                       int N, const fngd_call_t* call) {
    const fngd_config_t* c = &h->cfg;
    const float* alpha = h->alpha + (c->coef_mode == FNGD_COEF_GLOBAL ? 0 : (size_t)l * c->max_batch);
    float *out_w, *out_b;
    direction_buffers(h, l, &out_w, &out_b);
    return h->ops->weighted_grad(h->ctx, &h->layers[l], batch, N, alpha, grad_scale(c, N), out_w,
                                 out_b, call);
}

/* step_control: per layer, the plain mean gradient g_l (the weighted reduction with weights
 * 1/N) and the dot products <delta,g>, <delta,delta>, <g,g> (weight and bias parts apart), all
 * enqueued, then one blocking read; the direction is then scaled in place. */
static fngd_status_t control_step(fngd_handle_t h, const fngd_layer_batch_t* batches, int N,
                                  const fngd_call_t* call) {
    const fngd_config_t* c = &h->cfg;
    if (c->step_control == FNGD_STEP_NONE) {
        h->last_step_scale = 1.0;
        return FNGD_SUCCESS;
    }
    for (int l = 0; l < h->num_layers; ++l) {
        const fngd_layer_t* L = &h->layers[l];
        float *dw, *db, *gw = h->plain_grad, *gb = L->n_bias ? h->plain_grad + L->n_weight : NULL;
        direction_buffers(h, l, &dw, &db);
        FNGD_TRY(h->ops->weighted_grad(h->ctx, L, &batches[l], N, h->ones,
                                       grad_scale(c, N) / (float)N, gw, gb, call));
        /* Slots 0-1: <delta, g> (the KL clip); 2-5: <delta, delta>, <g, g> (graft). Only the
         * ones the control reads are computed: each is a full pass over the layer. */
        const float* x[6] = {dw, db, dw, db, gw, gb};
        const float* y[6] = {gw, gb, dw, db, gw, gb};
        const int kl_clip = c->step_control == FNGD_STEP_KL_CLIP;
        for (int k = kl_clip ? 0 : 2; k < (kl_clip ? 2 : 6); ++k) {
            int64_t n = (k & 1) ? L->n_bias : L->n_weight;
            FNGD_TRY(h->ops->dot(h->ctx, n ? x[k] : NULL, n ? y[k] : NULL, n,
                                 h->dots + 6 * (size_t)l + k, call));
        }
    }
    size_t bytes = 6 * (size_t)h->num_layers * sizeof(float);
    FNGD_TRY(h->ops->download(h->ctx, h->dots_host, h->dots, bytes, call));
    double vg = 0.0, sum_scales = 0.0;
    for (int l = 0; l < h->num_layers; ++l)
        vg += (double)h->dots_host[6 * l] + (double)h->dots_host[6 * l + 1];
    double lr = c->learning_rate;
    double kl = (c->step_control == FNGD_STEP_KL_CLIP && vg != 0.0)
                    ? fmin(1.0, sqrt(c->kl_clip / fabs(lr * lr * vg))) : 1.0;
    for (int l = 0; l < h->num_layers; ++l) {
        const fngd_layer_t* L = &h->layers[l];
        const float* d = h->dots_host + 6 * l;
        double dd = (double)d[2] + d[3], gg = (double)d[4] + d[5];
        double nu = c->step_control == FNGD_STEP_GRAFT ? (dd > 0 ? sqrt(gg / dd) : 1.0) : kl;
        if (!isfinite(nu)) nu = 1.0; /* overflowed norms: leave the direction as it is */
        sum_scales += nu;
        if (nu == 1.0) continue;
        float *dw, *db;
        direction_buffers(h, l, &dw, &db);
        FNGD_TRY(h->ops->scale(h->ctx, dw, L->n_weight, (float)nu, call));
        if (L->n_bias) FNGD_TRY(h->ops->scale(h->ctx, db, L->n_bias, (float)nu, call));
    }
    h->last_step_scale = sum_scales / h->num_layers;
    return FNGD_SUCCESS;
}

/* APPLY_SGD: one multi-tensor update of every parameter from its direction; callers that also
 * registered grad buffers get the direction there too. */
static fngd_status_t apply_sgd(fngd_handle_t h, const fngd_call_t* call) {
    const fngd_config_t* c = &h->cfg;
    fngd_update_tensor_t* list = h->update_list;
    int count = 0;
    for (int l = 0; l < h->num_layers; ++l) {
        const fngd_layer_t* L = &h->layers[l];
        list[count++] = (fngd_update_tensor_t){L->desc.weight, L->direction, L->momentum,
                                               L->n_weight};
        if (L->n_bias)
            list[count++] = (fngd_update_tensor_t){L->desc.bias, L->direction + L->n_weight,
                                                   L->momentum ? L->momentum + L->n_weight : NULL,
                                                   L->n_bias};
    }
    FNGD_TRY(h->ops->sgd_update(h->ctx, list, count, c->learning_rate, c->momentum,
                                c->weight_decay, call));
    for (int l = 0; l < h->num_layers; ++l) {
        const fngd_layer_t* L = &h->layers[l];
        if (L->desc.grad_weight)
            FNGD_TRY(h->ops->copy(h->ctx, L->desc.grad_weight, L->direction, L->n_weight, call));
        if (L->n_bias && L->desc.grad_bias)
            FNGD_TRY(h->ops->copy(h->ctx, L->desc.grad_bias, L->direction + L->n_weight,
                                  L->n_bias, call));
    }
    return FNGD_SUCCESS;
}

static fngd_status_t step_impl(fngd_handle_t h, int N, const int64_t* ids,
                               const fngd_layer_batch_t* batches, const float* rhs,
                               fngd_call_t* call) {
    const fngd_config_t* c = &h->cfg;
    fngd_err_t* err = &h->err;
    FNGD_REQUIRE(err, h->num_layers > 0, FNGD_ERROR_INVALID_STATE,
                 "no layer registered: call fngd_add_layer before fngd_step");
    FNGD_REQUIRE(err, N >= 1 && N <= c->max_batch, FNGD_ERROR_INVALID_ARGUMENT,
                 "batch_size %d is outside 1..max_batch (%d)", N, c->max_batch);
    FNGD_TRY(fngd_prepare_in_call(h, call));
    int collect = h->counters.phase == FNGD_PHASE_COLLECT;
    if (collect && c->rhs == FNGD_RHS_CUSTOM)
        FNGD_REQUIRE(err, rhs, FNGD_ERROR_INVALID_ARGUMENT,
                     "config.rhs is FNGD_RHS_CUSTOM: pass N right-hand-side values in rhs");
    FNGD_TRY(fngd_validate_ids(h, N, ids));
    /* Reuse epochs read a custom rhs only for the exact small layers (ones when NULL). */
    const float* custom_rhs =
        c->rhs == FNGD_RHS_CUSTOM && (collect || h->nsmall > 0) ? rhs : NULL;
    FNGD_TRY(fngd_validate_batches(h, N, batches, custom_rhs, call));

    int64_t retries = 0;
    double shift = 0.0;
    if (collect) {
        FNGD_TRY(compute_coefficients(h, N, batches, custom_rhs, &retries, &shift, call));
        /* Everything below writes state; the inputs were all validated above. */
        FNGD_TRY(store_coefficients(h, N, ids, call));
    } else {
        if (h->nsmall > 0)
            FNGD_TRY(solve_small_layers(h, N, batches, custom_rhs, &retries, &shift, call));
        FNGD_TRY(gather_coefficients(h, N, ids, call));
        if (h->nsmall > 0) FNGD_TRY(solve_small_layers_store(h, N, call));
    }
    for (int l = 0; l < h->num_layers; ++l) FNGD_TRY(produce_direction(h, l, &batches[l], N, call));
    FNGD_TRY(control_step(h, batches, N, call));
    if (c->output == FNGD_OUTPUT_APPLY_SGD) FNGD_TRY(apply_sgd(h, call));

    fngd_counters_t* k = &h->counters;
    if (collect) {
        k->factorizations += h->nsets;
        k->damping_retries += retries;
        k->last_damping = shift / N; /* report lambda: the shift is N * lambda */
    } else {
        k->damping_retries += retries; /* exact_small_layers' retries */
    }
    k->steps_total++;
    k->steps_in_epoch++;
    return FNGD_SUCCESS;
}

fngd_status_t fngd_step(fngd_handle_t h, int batch_size, const int64_t* sample_ids,
                        const fngd_layer_batch_t* batches, const float* rhs,
                        fngd_stream_t stream) {
    FNGD_REQUIRE_HANDLE(h);
    fngd_nvtx_push(h->counters.phase == FNGD_PHASE_COLLECT ? "fngd_step(collect)" : "fngd_step(reuse)");
    h->last_stream = stream;
    fngd_call_t call;
    fngd_status_t s = fngd_call_begin(h, stream, &call);
    if (s == FNGD_SUCCESS) s = step_impl(h, batch_size, sample_ids, batches, rhs, &call);
    fngd_call_end(h, &call);
    if (s != FNGD_SUCCESS) h->counters.rejected_steps++;
    fngd_nvtx_pop();
    return s;
}

/* Global mode, reuse epochs: the library's whole part of a step is the gather of N * alpha; the
 * caller back-propagates the weighted loss. */
fngd_status_t fngd_get_loss_weights(fngd_handle_t h, int N, const int64_t* ids, float* weights,
                                    fngd_stream_t stream) {
    FNGD_REQUIRE_HANDLE(h);
    fngd_err_t* err = &h->err;
    FNGD_REQUIRE(err, h->cfg.coef_mode == FNGD_COEF_GLOBAL, FNGD_ERROR_INVALID_STATE,
                 "loss weights exist only in global coefficient mode");
    FNGD_REQUIRE(err, h->prepared && h->counters.phase == FNGD_PHASE_REUSE,
                 FNGD_ERROR_INVALID_STATE,
                 "loss weights exist only in a reuse epoch (after a collect epoch ended)");
    FNGD_REQUIRE(err, weights, FNGD_ERROR_INVALID_ARGUMENT, "weights is NULL");
    FNGD_REQUIRE(err, N >= 1 && N <= h->cfg.max_batch, FNGD_ERROR_INVALID_ARGUMENT,
                 "batch_size %d is outside 1..max_batch (%d)", N, h->cfg.max_batch);
    FNGD_TRY(fngd_validate_ids(h, N, ids));
    h->last_stream = stream;
    fngd_nvtx_push("fngd_get_loss_weights");
    fngd_call_t call;
    fngd_status_t s = fngd_call_begin(h, stream, &call);
    if (s == FNGD_SUCCESS)
        s = h->ops->gather_coefs(h->ctx, h->coef_table, h->coef_seen, 1, ids, fngd_key_offset(h),
                                 N, h->cfg.fallback, h->coef_fallback, (float)N, weights, N,
                                 h->fallback_count, &call);
    fngd_call_end(h, &call);
    fngd_nvtx_pop();
    FNGD_TRY(s);
    /* This is the library's part of a reuse step in this mode. */
    h->counters.steps_total++;
    h->counters.steps_in_epoch++;
    return FNGD_SUCCESS;
}
