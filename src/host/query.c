/* Queries of a handle's state: statistics (counters and a summary of the stored coefficients)
 * and the stored coefficients of given sample ids. Both block. */
#include <math.h>
#include <string.h>

#include "alloc.h"
#include "call.h"
#include "handle.h"
#include "nvtx_range.h"

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
        fngd_call_t call;
        fngd_status_t s = fngd_call_begin(h, h->last_stream, &call);
        if (s == FNGD_SUCCESS)
            s = h->ops->download(h->ctx, &out.fallback_ids, h->fallback_count, sizeof(int64_t),
                                 &call);
        if (s == FNGD_SUCCESS)
            s = h->ops->summarize_coefs(h->ctx, h->coef_table, h->coef_seen,
                                        h->cfg.num_samples, h->nsets, h->coef_summary, &call);
        fngd_call_end(h, &call);
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
    FNGD_REQUIRE(err, set == FNGD_ALL_SETS || (set >= 0 && set < h->nsets),
                 FNGD_ERROR_INVALID_ARGUMENT,
                 "set %d out of range (%d coefficient sets, or FNGD_ALL_SETS)", set, h->nsets);
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
    fngd_call_t call;
    if (s == FNGD_SUCCESS) s = fngd_call_begin(h, h->last_stream, &call);
    if (s == FNGD_SUCCESS) {
        s = h->ops->download(h->ctx, table, h->coef_table + lo * h->nsets,
                             rows * nsets * sizeof(float), &call);
        if (s == FNGD_SUCCESS)
            s = h->ops->download(h->ctx, seen, h->coef_seen + lo, rows, &call);
        fngd_call_end(h, &call);
    }
    for (int64_t i = 0; s == FNGD_SUCCESS && i < n; ++i) {
        const size_t r = (size_t)(ids[i] - lo);
        if (set == FNGD_ALL_SETS) {
            for (size_t k = 0; k < nsets; ++k)
                coefs[(size_t)i * nsets + k] = seen[r] ? table[r * nsets + k] : NAN;
        } else {
            coefs[i] = seen[r] ? table[r * nsets + (size_t)set] : NAN;
        }
    }
    fngd_host_free(table);
    fngd_host_free(seen);
    return s;
}
