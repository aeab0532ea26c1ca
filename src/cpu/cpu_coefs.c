/* Coefficient table: scatter alpha by sample key, gather it back (with the fallback for keys
 * never stored), and summarise the stored values of one set. Table layout:
 * table[key * nsets + set], seen[key] != 0 once any set of that key was stored. */
#include "cpu_internal.h"

static int64_t key_of(const int64_t* ids, int64_t key_offset, int i) {
    return ids ? ids[i] : key_offset + i;
}

fngd_status_t cpu_scatter_coefs(fngd_backend_ctx_t* ctx, float* table, uint8_t* seen,
                                int nsets, int set, const int64_t* ids, int64_t key_offset,
                                int N, const float* alpha, fngd_stream_t stream,
                                fngd_err_t* err) {
    FNGD_REQUIRE(err, table && seen && alpha && N >= 0 && nsets >= 1 && set >= 0 && set < nsets,
                 FNGD_ERROR_INVALID_ARGUMENT, "cpu scatter_coefs: bad argument (N %d, set %d/%d)",
                 N, set, nsets);
    for (int i = 0; i < N; ++i) {
        const int64_t key = key_of(ids, key_offset, i);
        table[key * nsets + set] = alpha[i];
        seen[key] = 1;
    }
    return FNGD_SUCCESS;
}

fngd_status_t cpu_gather_coefs(fngd_backend_ctx_t* ctx, const float* table,
                               const uint8_t* seen, int nsets, int set, const int64_t* ids,
                               int64_t key_offset, int N, fngd_fallback_t fallback_kind,
                               const float* fallback, float out_scale, float* out,
                               int64_t* fallback_count, int count, fngd_stream_t stream,
                               fngd_err_t* err) {
    FNGD_REQUIRE(err, table && seen && out && N >= 1 && nsets >= 1 && set >= 0 && set < nsets,
                 FNGD_ERROR_INVALID_ARGUMENT, "cpu gather_coefs: bad argument (N %d, set %d/%d)",
                 N, set, nsets);
    FNGD_REQUIRE(err, fallback_kind != FNGD_FALLBACK_STORED_MEAN || fallback,
                 FNGD_ERROR_INVALID_ARGUMENT, "cpu gather_coefs: stored-mean fallback is NULL");
    FNGD_REQUIRE(err, !count || fallback_count, FNGD_ERROR_INVALID_ARGUMENT,
                 "cpu gather_coefs: fallback counter is NULL");
    const float fb =
        fallback_kind == FNGD_FALLBACK_STORED_MEAN ? fallback[set] : 1.0f / (float)N;
    int64_t unseen = 0;
    for (int i = 0; i < N; ++i) {
        const int64_t key = key_of(ids, key_offset, i);
        float v;
        if (seen[key]) {
            v = table[key * nsets + set];
        } else {
            v = fb;
            ++unseen;
        }
        out[i] = out_scale * v;
    }
    if (count) *fallback_count += unseen;
    return FNGD_SUCCESS;
}

fngd_status_t cpu_summarize_coefs(fngd_backend_ctx_t* ctx, const float* table,
                                  const uint8_t* seen, int64_t num_keys, int nsets, int set,
                                  fngd_coef_summary_t* out, fngd_stream_t stream,
                                  fngd_err_t* err) {
    FNGD_REQUIRE(err, table && seen && out && num_keys >= 0 && nsets >= 1 && set >= 0 &&
                          set < nsets,
                 FNGD_ERROR_INVALID_ARGUMENT, "cpu summarize_coefs: bad argument (set %d/%d)",
                 set, nsets);
    /* count 0 leaves min = max = sum = 0. */
    fngd_coef_summary_t s = {0, 0.0, 0.0, 0.0};
    for (int64_t key = 0; key < num_keys; ++key) {
        if (!seen[key]) continue;
        const double v = table[key * nsets + set];
        if (s.count == 0 || v < s.min) s.min = v;
        if (s.count == 0 || v > s.max) s.max = v;
        s.sum += v;
        ++s.count;
    }
    *out = s;
    return FNGD_SUCCESS;
}
