/* Checks of a step's arguments, all done before anything is written, so a rejected step
 * changes no state. */
#include <stdlib.h>

#include "epoch.h"
#include "validate.h"

static int cmp_i64(const void* a, const void* b) {
    int64_t x = *(const int64_t*)a, y = *(const int64_t*)b;
    return (x > y) - (x < y);
}

fngd_status_t fngd_validate_ids(fngd_handle_t h, int N, const int64_t* ids) {
    fngd_err_t* err = &h->err;
    int64_t ns = h->cfg.num_samples;
    if (!ids) {
        int64_t end = fngd_key_offset(h) + N;
        FNGD_REQUIRE(err, end <= ns, FNGD_ERROR_INVALID_ARGUMENT,
                     "position keys of step %lld (up to %lld) exceed num_samples = %lld: pass "
                     "sample ids, or raise num_samples to steps per epoch * max_batch",
                     (long long)h->counters.steps_in_epoch, (long long)end, (long long)ns);
        return FNGD_SUCCESS;
    }
    for (int i = 0; i < N; ++i)
        FNGD_REQUIRE(err, ids[i] >= 0 && ids[i] < ns, FNGD_ERROR_INVALID_ARGUMENT,
                     "sample_ids[%d] = %lld is outside [0, num_samples = %lld)", i,
                     (long long)ids[i], (long long)ns);
    int64_t* sorted = h->id_scratch;
    for (int i = 0; i < N; ++i) sorted[i] = ids[i];
    qsort(sorted, (size_t)N, sizeof *sorted, cmp_i64);
    for (int i = 1; i < N; ++i)
        FNGD_REQUIRE(err, sorted[i] != sorted[i - 1], FNGD_ERROR_INVALID_ARGUMENT,
                     "sample id %lld appears twice in the batch", (long long)sorted[i]);
    return FNGD_SUCCESS;
}

/* Every input, output gradient (and rhs) of the step in one check_finite call: one
 * synchronisation per step on a GPU instead of one per array. */
static fngd_status_t check_all_finite(fngd_handle_t h, int N, const fngd_layer_batch_t* batches,
                                      const float* rhs, const fngd_call_t* call) {
    fngd_array_ref_t* list = h->check_list;
    int count = 0;
    for (int l = 0; l < h->num_layers; ++l) {
        const fngd_layer_t* L = &h->layers[l];
        if (L->kind != FNGD_LAYER_EMBEDDING) /* its input is int64 token ids */
            list[count++] =
                (fngd_array_ref_t){batches[l].input, (size_t)(N * L->in_per_sample)};
        if (L->kind != FNGD_LAYER_GENERIC)
            list[count++] =
                (fngd_array_ref_t){batches[l].grad_output, (size_t)(N * L->out_per_sample)};
    }
    if (rhs) list[count++] = (fngd_array_ref_t){rhs, (size_t)N};
    int bad = 0;
    FNGD_TRY(h->ops->check_finite(h->ctx, list, count, &bad, call));
    if (!bad) return FNGD_SUCCESS;
    /* Map the array back to its layer for the message. */
    const float* x = list[bad - 1].x;
    FNGD_REQUIRE(&h->err, x != rhs, FNGD_ERROR_NONFINITE, "rhs contains NaN or Inf");
    for (int l = 0; l < h->num_layers; ++l) {
        int generic = h->layers[l].kind == FNGD_LAYER_GENERIC;
        FNGD_REQUIRE(&h->err, x != batches[l].input, FNGD_ERROR_NONFINITE,
                     "layer %d: %s contains NaN or Inf", l,
                     generic ? "input (per-sample gradients)" : "input");
        FNGD_REQUIRE(&h->err, generic || x != batches[l].grad_output, FNGD_ERROR_NONFINITE,
                     "layer %d: grad_output contains NaN or Inf", l);
    }
    return FNGD_FAIL(&h->err, FNGD_ERROR_NONFINITE, "an input contains NaN or Inf");
}

fngd_status_t fngd_validate_batches(fngd_handle_t h, int N, const fngd_layer_batch_t* batches,
                                    const float* rhs, const fngd_call_t* call) {
    fngd_err_t* err = &h->err;
    FNGD_REQUIRE(err, batches, FNGD_ERROR_INVALID_ARGUMENT, "batches is NULL");
    for (int l = 0; l < h->num_layers; ++l) {
        const fngd_layer_t* L = &h->layers[l];
        const fngd_layer_batch_t* b = &batches[l];
        FNGD_REQUIRE(err, b->input, FNGD_ERROR_INVALID_ARGUMENT, "batches[%d].input is NULL", l);
        int generic = L->kind == FNGD_LAYER_GENERIC;
        FNGD_REQUIRE(err, generic || b->grad_output, FNGD_ERROR_INVALID_ARGUMENT,
                     "batches[%d].grad_output is NULL", l);
        const fngd_layer_desc_t* d = &L->desc;
        if (h->cfg.output == FNGD_OUTPUT_WRITE_GRAD) {
            FNGD_REQUIRE(err, d->grad_weight, FNGD_ERROR_INVALID_ARGUMENT,
                         "layer %d has no grad_weight buffer to write the direction to", l);
            FNGD_REQUIRE(err, !L->n_bias || d->grad_bias, FNGD_ERROR_INVALID_ARGUMENT,
                         "layer %d has a bias but no grad_bias buffer", l);
        } else {
            FNGD_REQUIRE(err, d->weight, FNGD_ERROR_INVALID_ARGUMENT,
                         "layer %d has no weight buffer to update (FNGD_OUTPUT_APPLY_SGD)", l);
            FNGD_REQUIRE(err, !L->n_bias || d->bias, FNGD_ERROR_INVALID_ARGUMENT,
                         "layer %d has a bias but no bias buffer to update", l);
        }
    }
    return h->cfg.check_finite ? check_all_finite(h, N, batches, rhs, call) : FNGD_SUCCESS;
}
