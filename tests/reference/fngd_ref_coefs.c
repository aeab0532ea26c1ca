/* Reference coefficient table operations, one key and one set at a time. */
#include "fngd_reference.h"

static int64_t ref_key(const int64_t* ids, int64_t key_offset, int i) {
    return ids ? ids[i] : key_offset + i;
}

void fngd_ref_scatter(float* table, uint8_t* seen, int nsets, const int64_t* ids,
                      int64_t key_offset, int N, const float* alpha, int ld) {
    for (int s = 0; s < nsets; ++s)
        for (int i = 0; i < N; ++i) {
            int64_t key = ref_key(ids, key_offset, i);
            table[key * nsets + s] = alpha[(int64_t)s * ld + i];
            seen[key] = 1;
        }
}

int64_t fngd_ref_gather(const float* table, const uint8_t* seen, int nsets, const int64_t* ids,
                        int64_t key_offset, int N, int uniform, const float* fallback,
                        float out_scale, float* out, int ld) {
    int64_t unseen = 0;
    for (int i = 0; i < N; ++i) {
        int64_t key = ref_key(ids, key_offset, i);
        if (!seen[key]) ++unseen;
        for (int s = 0; s < nsets; ++s) {
            float v = seen[key] ? table[key * nsets + s] : uniform ? 1.0f / (float)N : fallback[s];
            out[(int64_t)s * ld + i] = out_scale * v;
        }
    }
    return unseen;
}

void fngd_ref_summary(const float* table, const uint8_t* seen, int64_t num_keys, int nsets,
                      int set, int64_t* count, double* min, double* max, double* sum) {
    *count = 0;
    *min = *max = *sum = 0.0;
    for (int64_t key = 0; key < num_keys; ++key) {
        if (!seen[key]) continue;
        double v = table[key * nsets + set];
        if (*count == 0) {
            *min = *max = v;
        } else {
            if (v < *min) *min = v;
            if (v > *max) *max = v;
        }
        *sum += v;
        ++*count;
    }
}
