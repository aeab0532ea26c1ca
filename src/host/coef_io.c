/* Coefficient import by id (fngd_set_coefficients) and the number of coefficient sets: what a
 * data-parallel loop needs to replicate the coefficient table across ranks (README
 * "Data-parallel"). Export is fngd_get_coefficients (query.c).
 *
 * The import runs over the backend's own operations, so it is the same code for every
 * backend: the values are validated on the host first (nothing changes on a refused call),
 * then staged into a temporary backend buffer set-major (the alpha layout of scatter_coefs)
 * in pieces of up to kStageFloats floats, one blocking upload per piece, and scattered
 * max_batch ids per call (the CUDA backend stages at most max_batch host ids per call; the
 * scatters are enqueued without a synchronisation). A single-set import with several sets
 * first gathers the other sets' current values of those ids into the staging buffer (all of
 * them stored, checked), overwrites the one row, and scatters every set. Last, the fallback
 * means are refreshed from the table as fngd_end_epoch does after a collect epoch. */
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "alloc.h"
#include "epoch.h"
#include "call.h"
#include "handle.h"
#include "nvtx_range.h"

/* Staging piece: at most this many floats (all sets) per upload, 64 MiB. */
#define FNGD_COEF_STAGE_FLOATS ((size_t)16 << 20)

fngd_status_t fngd_get_num_coefficient_sets(fngd_handle_t h, int* nsets) {
    FNGD_REQUIRE_HANDLE(h);
    FNGD_REQUIRE(&h->err, nsets, FNGD_ERROR_INVALID_ARGUMENT, "nsets is NULL");
    *nsets = h->cfg.coef_mode == FNGD_COEF_GLOBAL ? 1 : h->num_layers;
    return FNGD_SUCCESS;
}

static int cmp_i64(const void* a, const void* b) {
    const int64_t x = *(const int64_t*)a, y = *(const int64_t*)b;
    return (x > y) - (x < y);
}

/* Validation of ids and values; on success *keep (host, n entries) lists the positions i
 * whose values are imported (not NaN), *nkeep their count. Nothing is written to the handle. */
static fngd_status_t validate_import(fngd_handle_t h, int set, int64_t n, const int64_t* ids,
                                     const float* coefs, int64_t* keep, int64_t* nkeep,
                                     int64_t* sorted) {
    fngd_err_t* err = &h->err;
    const int64_t ns = h->cfg.num_samples;
    const int64_t width = set == FNGD_ALL_SETS ? h->nsets : 1;
    int64_t m = 0;
    for (int64_t i = 0; i < n; ++i) {
        FNGD_REQUIRE(err, ids[i] >= 0 && ids[i] < ns, FNGD_ERROR_INVALID_ARGUMENT,
                     "fngd_set_coefficients: ids[%lld] = %lld is outside [0, %lld)",
                     (long long)i, (long long)ids[i], (long long)ns);
        const float* row = coefs + i * width;
        int64_t nan = 0;
        for (int64_t k = 0; k < width; ++k) {
            FNGD_REQUIRE(err, !isinf(row[k]), FNGD_ERROR_NONFINITE,
                         "fngd_set_coefficients: the value of ids[%lld] = %lld (set %lld) is "
                         "infinite", (long long)i, (long long)ids[i],
                         (long long)(set == FNGD_ALL_SETS ? k : set));
            nan += isnan(row[k]) != 0;
        }
        FNGD_REQUIRE(err, nan == 0 || nan == width, FNGD_ERROR_INVALID_ARGUMENT,
                     "fngd_set_coefficients: the row of ids[%lld] = %lld mixes NaN (nothing "
                     "to import) and finite values; an id's sets are imported together",
                     (long long)i, (long long)ids[i]);
        if (nan == 0) keep[m++] = i;
        sorted[i] = ids[i];
    }
    qsort(sorted, (size_t)n, sizeof *sorted, cmp_i64);
    for (int64_t i = 1; i < n; ++i)
        FNGD_REQUIRE(err, sorted[i] != sorted[i - 1], FNGD_ERROR_INVALID_ARGUMENT,
                     "fngd_set_coefficients: id %lld appears more than once",
                     (long long)sorted[i]);
    *nkeep = m;
    return FNGD_SUCCESS;
}

/* Single-set import with nsets > 1: every imported id must already be stored. One download
 * of the seen flags of the key range the ids span. */
static fngd_status_t require_stored(fngd_handle_t h, int64_t m, const int64_t* kept_ids,
                                    const fngd_call_t* call) {
    fngd_err_t* err = &h->err;
    int64_t lo = kept_ids[0], hi = kept_ids[0];
    for (int64_t i = 1; i < m; ++i) {
        if (kept_ids[i] < lo) lo = kept_ids[i];
        if (kept_ids[i] > hi) hi = kept_ids[i];
    }
    const size_t rows = (size_t)(hi - lo + 1);
    uint8_t* seen = fngd_host_alloc(rows, 64);
    FNGD_REQUIRE(err, seen, FNGD_ERROR_OUT_OF_MEMORY,
                 "cannot allocate %zu seen flags to check the import", rows);
    fngd_status_t s = h->ops->download(h->ctx, seen, h->coef_seen + lo, rows, call);
    for (int64_t i = 0; s == FNGD_SUCCESS && i < m; ++i)
        if (!seen[kept_ids[i] - lo])
            s = FNGD_FAIL(err, FNGD_ERROR_INVALID_ARGUMENT,
                          "fngd_set_coefficients: id %lld has no stored coefficients yet; with "
                          "%d coefficient sets a new id must be imported with every set "
                          "(set = FNGD_ALL_SETS)", (long long)kept_ids[i], h->nsets);
    fngd_host_free(seen);
    return s;
}

/* Stage and scatter the m imported ids. */
static fngd_status_t import_values(fngd_handle_t h, int set, int64_t m, const int64_t* keep,
                                   const int64_t* kept_ids, const float* coefs,
                                   const fngd_call_t* call) {
    fngd_err_t* err = &h->err;
    const int64_t nsets = h->nsets, C = h->cfg.max_batch;
    const int64_t width = set == FNGD_ALL_SETS ? nsets : 1;
    /* Piece of P ids: a multiple of max_batch, at most FNGD_COEF_STAGE_FLOATS floats of all
     * sets, no more than the import needs. */
    int64_t P = (int64_t)(FNGD_COEF_STAGE_FLOATS / (size_t)nsets) / C * C;
    if (P < C) P = C;
    const int64_t need = (m + C - 1) / C * C;
    if (P > need) P = need;
    const size_t stage_floats = (size_t)(nsets * P);
    float* stage = NULL;
    int64_t* count = NULL; /* gather's fallback counter: never incremented (all ids stored) */
    float* host = fngd_host_alloc(stage_floats * sizeof(float), 64);
    fngd_status_t s = FNGD_SUCCESS;
    if (!host)
        return FNGD_FAIL(err, FNGD_ERROR_OUT_OF_MEMORY,
                         "cannot allocate %zu floats to stage the import", stage_floats);
    const size_t stage_bytes = (stage_floats * sizeof(float) + 255) / 256 * 256;
    FNGD_TRY_GOTO(s, h->ops->alloc(h->ctx, stage_bytes + 256, (void**)&stage, call));
    count = (int64_t*)(void*)((char*)stage + stage_bytes);
    for (int64_t p0 = 0; p0 < m; p0 += P) {
        const int64_t len = m - p0 < P ? m - p0 : P;
        if (set == FNGD_ALL_SETS) {
            for (int64_t j = 0; j < len; ++j) {
                const float* row = coefs + keep[p0 + j] * width;
                for (int64_t k = 0; k < nsets; ++k) host[k * P + j] = row[k];
            }
            FNGD_TRY_GOTO(s, h->ops->upload(h->ctx, stage, host, stage_floats * sizeof(float),
                                            call));
        } else {
            if (nsets > 1) /* the other sets' stored values, then this set's row */
                for (int64_t c0 = 0; c0 < len; c0 += C) {
                    const int cn = (int)(len - c0 < C ? len - c0 : C);
                    FNGD_TRY_GOTO(s, h->ops->gather_coefs(
                                         h->ctx, h->coef_table, h->coef_seen, h->nsets,
                                         kept_ids + p0 + c0, 0, cn, h->cfg.fallback,
                                         h->coef_fallback, 1.0f, stage + c0, (int)P, count,
                                         call));
                }
            for (int64_t j = 0; j < len; ++j) host[j] = coefs[keep[p0 + j]];
            FNGD_TRY_GOTO(s, h->ops->upload(h->ctx, stage + (size_t)set * (size_t)P, host,
                                            (size_t)len * sizeof(float), call));
        }
        for (int64_t c0 = 0; c0 < len; c0 += C) {
            const int cn = (int)(len - c0 < C ? len - c0 : C);
            FNGD_TRY_GOTO(s, h->ops->scatter_coefs(h->ctx, h->coef_table, h->coef_seen,
                                                   h->nsets, kept_ids + p0 + c0, 0, cn,
                                                   stage + c0, (int)P, call));
        }
        /* The next piece's upload is ordered after these scatters on the same stream. */
    }
    FNGD_TRY_GOTO(s, h->ops->synchronize(h->ctx, call));
cleanup:
    if (stage) { /* on failure, pending scatters may still read it: wait, keep the message */
        fngd_err_t scratch;
        fngd_call_t quiet = *call;
        quiet.err = &scratch;
        if (s != FNGD_SUCCESS) (void)h->ops->synchronize(h->ctx, &quiet);
        h->ops->free(h->ctx, stage);
    }
    fngd_host_free(host);
    return s;
}

fngd_status_t fngd_set_coefficients(fngd_handle_t h, int set, int64_t n, const int64_t* ids,
                                    const float* coefs) {
    FNGD_REQUIRE_HANDLE(h);
    fngd_err_t* err = &h->err;
    FNGD_REQUIRE(err, h->prepared, FNGD_ERROR_INVALID_STATE,
                 "fngd_set_coefficients: the layer set is not frozen yet (call fngd_prepare or "
                 "take a step first)");
    FNGD_REQUIRE(err, set == FNGD_ALL_SETS || (set >= 0 && set < h->nsets),
                 FNGD_ERROR_INVALID_ARGUMENT,
                 "fngd_set_coefficients: set %d out of range (%d coefficient sets, or "
                 "FNGD_ALL_SETS)", set, h->nsets);
    FNGD_REQUIRE(err, n >= 0, FNGD_ERROR_INVALID_ARGUMENT, "fngd_set_coefficients: n < 0");
    if (n == 0) return FNGD_SUCCESS;
    FNGD_REQUIRE(err, ids && coefs, FNGD_ERROR_INVALID_ARGUMENT,
                 "fngd_set_coefficients: ids or coefs is NULL");
    int64_t* keep = fngd_host_alloc((size_t)n * sizeof(int64_t), 64);
    int64_t* kept_ids = fngd_host_alloc((size_t)n * sizeof(int64_t), 64);
    fngd_status_t s = FNGD_SUCCESS;
    if (!keep || !kept_ids) {
        s = FNGD_FAIL(err, FNGD_ERROR_OUT_OF_MEMORY,
                      "cannot allocate %lld ids to validate the import", (long long)n);
        goto done;
    }
    int64_t m = 0;
    /* kept_ids doubles as the sorted copy for the duplicate check, then holds the ids kept. */
    s = validate_import(h, set, n, ids, coefs, keep, &m, kept_ids);
    if (s != FNGD_SUCCESS || m == 0) goto done;
    for (int64_t j = 0; j < m; ++j) kept_ids[j] = ids[keep[j]];
    fngd_nvtx_push("fngd_set_coefficients");
    fngd_call_t call;
    s = fngd_call_begin(h, h->last_stream, &call);
    if (s == FNGD_SUCCESS && set != FNGD_ALL_SETS && h->nsets > 1)
        s = require_stored(h, m, kept_ids, &call);
    if (s == FNGD_SUCCESS) s = import_values(h, set, m, keep, kept_ids, coefs, &call);
    if (s == FNGD_SUCCESS) s = fngd_refresh_fallback(h, &call);
    if (s == FNGD_SUCCESS) s = h->ops->synchronize(h->ctx, &call);
    fngd_call_end(h, &call);
    fngd_nvtx_pop();
done:
    fngd_host_free(keep);
    fngd_host_free(kept_ids);
    return s;
}
