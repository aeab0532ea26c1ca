/* Count, min, max and sum of table[key * nsets + set] over keys < num_keys with seen[key] != 0,
 * for every set at once: a grid of blocks_per_set x nsets blocks writes one partial per block
 * (blockIdx.y is the set), then one block per set combines that set's partials (two passes,
 * deterministic, no workspace beyond the partial array).
 *
 * NaN follows the CPU backend's sequential loop (src/cpu/cpu_coefs.c), which starts min and max
 * at the lowest seen key's value and then replaces them only on a strict `<` / `>`: a NaN there
 * makes min and max NaN for good, a NaN at any later key is skipped (its comparisons are false).
 * So each item keeps its lowest seen key and that key's value besides a NaN-skipping min/max;
 * the final pass sets min = max = NaN when the overall lowest key's value is NaN. The sum takes
 * every value, NaN included, in both backends. */
#ifndef FNGD_KERNELS_COEF_SUMMARY_CUH
#define FNGD_KERNELS_COEF_SUMMARY_CUH

#include <cuda_runtime.h>
#include <stdint.h>

struct fngd_coef_summary_item {
    long long count;
    double min, max, sum; /* min/max skip NaN until the final pass (see above) */
    long long first_key;  /* lowest seen key, LLONG_MAX when none */
    double first;         /* its value */
};

struct fngd_coef_summary_params {
    const float* table;
    const uint8_t* seen;
    int64_t num_keys;
    int nsets;
    fngd_coef_summary_item* partials; /* nsets * blocks_per_set entries, set-major */
    int blocks_per_set;
    fngd_coef_summary_item* result;   /* nsets entries */
};

cudaError_t fngd_launch_coef_summary(const fngd_coef_summary_params& P, cudaStream_t stream);

#endif
