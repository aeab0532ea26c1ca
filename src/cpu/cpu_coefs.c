/* Coefficient table: scatter the coefficients of every set by sample key, gather them back
 * (with the fallback for keys never stored), and summarise the stored values of every set.
 * Table layout: table[key * nsets + set], seen[key] != 0 once the key was stored. One call
 * serves all nsets sets: a key's row of the table is contiguous. */
#include "cpu_internal.h"

static int64_t key_of(const int64_t* ids, int64_t key_offset, int i) {
    return ids ? ids[i] : key_offset + i;
}

fngd_status_t cpu_scatter_coefs(fngd_backend_ctx_t* ctx, float* table, uint8_t* seen,
                                int nsets, const int64_t* ids, int64_t key_offset, int N,
                                const float* alpha, int ld_alpha, const fngd_call_t* call) {
    fngd_err_t* err = call->err;
    FNGD_REQUIRE(err, table && seen && alpha && N >= 0 && nsets >= 1 && ld_alpha >= N,
                 FNGD_ERROR_INVALID_ARGUMENT,
                 "cpu scatter_coefs: bad argument (N %d, nsets %d, ld_alpha %d)", N, nsets,
                 ld_alpha);
    for (int i = 0; i < N; ++i) {
        const int64_t key = key_of(ids, key_offset, i);
        float* row = table + key * nsets;
        for (int s = 0; s < nsets; ++s) row[s] = alpha[(size_t)s * ld_alpha + i];
        seen[key] = 1;
    }
    return FNGD_SUCCESS;
}

fngd_status_t cpu_gather_coefs(fngd_backend_ctx_t* ctx, const float* table,
                               const uint8_t* seen, int nsets, const int64_t* ids,
                               int64_t key_offset, int N, fngd_fallback_t fallback_kind,
                               const float* fallback, float out_scale, float* out, int ld_out,
                               int64_t* fallback_count, const fngd_call_t* call) {
    fngd_err_t* err = call->err;
    FNGD_REQUIRE(err, table && seen && out && N >= 1 && nsets >= 1 && ld_out >= N,
                 FNGD_ERROR_INVALID_ARGUMENT,
                 "cpu gather_coefs: bad argument (N %d, nsets %d, ld_out %d)", N, nsets, ld_out);
    FNGD_REQUIRE(err, fallback_kind != FNGD_FALLBACK_STORED_MEAN || fallback,
                 FNGD_ERROR_INVALID_ARGUMENT, "cpu gather_coefs: stored-mean fallback is NULL");
    FNGD_REQUIRE(err, fallback_count, FNGD_ERROR_INVALID_ARGUMENT,
                 "cpu gather_coefs: fallback counter is NULL");
    const int uniform = fallback_kind != FNGD_FALLBACK_STORED_MEAN;
    int64_t unseen = 0;
    for (int i = 0; i < N; ++i) {
        const int64_t key = key_of(ids, key_offset, i);
        const int stored = seen[key] != 0;
        const float* row = table + key * nsets;
        for (int s = 0; s < nsets; ++s) {
            const float v = stored ? row[s] : uniform ? 1.0f / (float)N : fallback[s];
            out[(size_t)s * ld_out + i] = out_scale * v;
        }
        unseen += !stored;
    }
    *fallback_count += unseen;
    return FNGD_SUCCESS;
}

/* One sequential scan in key order per set: min and max start at the lowest seen key's value
 * and move only on a strict comparison (the rule the CUDA summary reproduces). */
fngd_status_t cpu_summarize_coefs(fngd_backend_ctx_t* ctx, const float* table,
                                  const uint8_t* seen, int64_t num_keys, int nsets,
                                  fngd_coef_summary_t* out, const fngd_call_t* call) {
    fngd_err_t* err = call->err;
    FNGD_REQUIRE(err, table && seen && out && num_keys >= 0 && nsets >= 1,
                 FNGD_ERROR_INVALID_ARGUMENT,
                 "cpu summarize_coefs: bad argument (num_keys %lld, nsets %d)",
                 (long long)num_keys, nsets);
    /* count 0 leaves min = max = sum = 0. */
    for (int s = 0; s < nsets; ++s) out[s] = (fngd_coef_summary_t){0, 0.0, 0.0, 0.0};
    for (int64_t key = 0; key < num_keys; ++key) {
        if (!seen[key]) continue;
        const float* row = table + key * nsets;
        for (int s = 0; s < nsets; ++s) {
            fngd_coef_summary_t* o = &out[s];
            const double v = row[s];
            if (o->count == 0 || v < o->min) o->min = v;
            if (o->count == 0 || v > o->max) o->max = v;
            o->sum += v;
            ++o->count;
        }
    }
    return FNGD_SUCCESS;
}
