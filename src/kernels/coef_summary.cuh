/* Count, min, max and sum of table[key * nsets + set] over keys < num_keys with seen[key] != 0:
 * a fixed grid writes one partial per block, then a single block combines them (two passes,
 * deterministic, no workspace beyond the partial array). */
#ifndef FNGD_KERNELS_COEF_SUMMARY_CUH
#define FNGD_KERNELS_COEF_SUMMARY_CUH

#include <cuda_runtime.h>
#include <stdint.h>

struct fngd_coef_summary_item {
    long long count;
    double min, max, sum;
};

struct fngd_coef_summary_params {
    const float* table;
    const uint8_t* seen;
    int64_t num_keys;
    int nsets, set;
    fngd_coef_summary_item* partials; /* `blocks` entries */
    int blocks;
    fngd_coef_summary_item* result;
};

cudaError_t fngd_launch_coef_summary(const fngd_coef_summary_params& P, cudaStream_t stream);

#endif
