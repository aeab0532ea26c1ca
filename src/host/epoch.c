/* Epoch transitions and the queries that read the coefficient table. */
#include <math.h>
#include <string.h>

#include "alloc.h"
#include "nvtx_range.h"
#include "step_internal.h"

/* Refresh the per-set fallback means from the table (after a collect epoch): one summary of
 * every set (one synchronisation), one upload. */
static fngd_status_t refresh_fallback(fngd_handle_t h, fngd_stream_t stream) {
    FNGD_TRY(h->ops->summarize_coefs(h->ctx, h->coef_table, h->coef_seen, h->cfg.num_samples,
                                     h->nsets, h->coef_summary, stream, &h->err));
    for (int set = 0; set < h->nsets; ++set) {
        const fngd_coef_summary_t* c = &h->coef_summary[set];
        h->fallback_host[set] = c->count > 0 ? (float)(c->sum / (double)c->count) : 0.0f;
    }
    return h->ops->upload(h->ctx, h->coef_fallback, h->fallback_host,
                          (size_t)h->nsets * sizeof(float), stream, &h->err);
}

fngd_status_t fngd_end_epoch(fngd_handle_t h, fngd_stream_t stream) {
    FNGD_REQUIRE_HANDLE(h);
    fngd_counters_t* k = &h->counters;
    FNGD_REQUIRE(&h->err, h->prepared && k->steps_in_epoch > 0, FNGD_ERROR_INVALID_STATE,
                 "fngd_end_epoch: no step was taken in epoch %d", k->epoch);
    h->last_stream = stream;
    fngd_nvtx_push("fngd_end_epoch");
    fngd_status_t s = FNGD_SUCCESS;
    if (k->phase == FNGD_PHASE_COLLECT) s = refresh_fallback(h, stream);
    if (s == FNGD_SUCCESS) s = h->ops->synchronize(h->ctx, stream, &h->err);
    if (s == FNGD_SUCCESS) {
        if (k->phase == FNGD_PHASE_COLLECT) k->have_collected = 1;
        k->epoch++;
        k->steps_in_epoch = 0;
        int R = h->cfg.recompute_every;
        k->phase = (R > 0 && k->epoch % R == 0) ? FNGD_PHASE_COLLECT : FNGD_PHASE_REUSE;
    }
    fngd_nvtx_pop();
    return s;
}

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
    fngd_status_t s = h->ops->gather_coefs(h->ctx, h->coef_table, h->coef_seen, 1, ids,
                                           fngd_key_offset(h), N, h->cfg.fallback,
                                           h->coef_fallback, (float)N, weights, N,
                                           h->fallback_count, stream, err);
    fngd_nvtx_pop();
    FNGD_TRY(s);
    /* This is the library's part of a reuse step in this mode. */
    h->counters.steps_total++;
    h->counters.steps_in_epoch++;
    return FNGD_SUCCESS;
}

fngd_status_t fngd_get_stats(fngd_handle_t h, fngd_stats_t* stats) {
    FNGD_REQUIRE_HANDLE(h);
    FNGD_REQUIRE(&h->err, stats, FNGD_ERROR_INVALID_ARGUMENT, "stats is NULL");
    FNGD_REQUIRE(&h->err, stats->struct_size == sizeof(fngd_stats_t), FNGD_ERROR_INVALID_ARGUMENT,
                 "stats.struct_size must be sizeof(fngd_stats_t) = %zu", sizeof(fngd_stats_t));
    fngd_stats_t out;
    memset(&out, 0, sizeof out);
    out.struct_size = sizeof out;
    const fngd_counters_t* k = &h->counters;
    out.epoch = k->epoch;
    out.phase = k->phase;
    out.steps_total = k->steps_total;
    out.steps_in_epoch = k->steps_in_epoch;
    out.factorizations = k->factorizations;
    out.damping_retries = k->damping_retries;
    out.rejected_steps = k->rejected_steps;
    out.last_damping = k->last_damping;
    out.last_step_scale = h->last_step_scale;
    out.coef_min = out.coef_max = out.coef_mean = NAN;
    if (h->prepared) {
        fngd_nvtx_push("fngd_get_stats");
        fngd_status_t s = h->ops->download(h->ctx, &out.fallback_ids, h->fallback_count,
                                           sizeof(int64_t), h->last_stream, &h->err);
        if (s == FNGD_SUCCESS)
            s = h->ops->summarize_coefs(h->ctx, h->coef_table, h->coef_seen,
                                        h->cfg.num_samples, h->nsets, h->coef_summary,
                                        h->last_stream, &h->err);
        double sum = 0;
        int64_t count = 0;
        for (int set = 0; set < h->nsets && s == FNGD_SUCCESS; ++set) {
            const fngd_coef_summary_t* c = &h->coef_summary[set];
            if (c->count == 0) continue;
            if (set == 0) out.coefs_stored = c->count;
            out.coef_min = count == 0 || c->min < out.coef_min ? c->min : out.coef_min;
            out.coef_max = count == 0 || c->max > out.coef_max ? c->max : out.coef_max;
            sum += c->sum;
            count += c->count;
        }
        fngd_nvtx_pop();
        FNGD_TRY(s);
        if (count > 0) out.coef_mean = sum / (double)count;
    }
    *stats = out;
    return FNGD_SUCCESS;
}

fngd_status_t fngd_get_coefficients(fngd_handle_t h, int set, int64_t n, const int64_t* ids,
                                    float* coefs) {
    FNGD_REQUIRE_HANDLE(h);
    fngd_err_t* err = &h->err;
    FNGD_REQUIRE(err, h->prepared, FNGD_ERROR_INVALID_STATE, "no step has been taken yet");
    FNGD_REQUIRE(err, set >= 0 && set < h->nsets, FNGD_ERROR_INVALID_ARGUMENT,
                 "set %d out of range (%d coefficient sets)", set, h->nsets);
    FNGD_REQUIRE(err, n >= 0, FNGD_ERROR_INVALID_ARGUMENT, "n must be >= 0");
    if (n == 0) return FNGD_SUCCESS;
    FNGD_REQUIRE(err, ids && coefs, FNGD_ERROR_INVALID_ARGUMENT, "ids or coefs is NULL");
    for (int64_t i = 0; i < n; ++i)
        FNGD_REQUIRE(err, ids[i] >= 0 && ids[i] < h->cfg.num_samples, FNGD_ERROR_INVALID_ARGUMENT,
                     "ids[%lld] = %lld is outside [0, %lld)", (long long)i, (long long)ids[i],
                     (long long)h->cfg.num_samples);
    /* One bulk download of the table rows and seen flags of the keys lo..hi the ids span
     * (one copy each, not two per id); only then is coefs written. */
    int64_t lo = ids[0], hi = ids[0];
    for (int64_t i = 1; i < n; ++i) {
        if (ids[i] < lo) lo = ids[i];
        if (ids[i] > hi) hi = ids[i];
    }
    const size_t rows = (size_t)(hi - lo + 1), nsets = (size_t)h->nsets;
    float* table = fngd_host_alloc(rows * nsets * sizeof(float), 64);
    uint8_t* seen = fngd_host_alloc(rows, 64);
    fngd_status_t s = FNGD_SUCCESS;
    if (!table || !seen)
        s = FNGD_FAIL(err, FNGD_ERROR_OUT_OF_MEMORY,
                      "cannot allocate %zu table rows to read the coefficients", rows);
    if (s == FNGD_SUCCESS)
        s = h->ops->download(h->ctx, table, h->coef_table + lo * h->nsets,
                             rows * nsets * sizeof(float), h->last_stream, err);
    if (s == FNGD_SUCCESS)
        s = h->ops->download(h->ctx, seen, h->coef_seen + lo, rows, h->last_stream, err);
    for (int64_t i = 0; s == FNGD_SUCCESS && i < n; ++i) {
        const size_t r = (size_t)(ids[i] - lo);
        coefs[i] = seen[r] ? table[r * nsets + (size_t)set] : NAN;
    }
    fngd_host_free(table);
    fngd_host_free(seen);
    return s;
}
