/* Coefficient table scatter (collect phase) and gather (reuse phase) of every coefficient set
 * in one launch. Keys: ids[i] when ids is a device array, else key_offset + i. Table layout
 * key-major: table[key * nsets + set]; one thread per (sample, set) pair, set fastest, so the
 * threads of a warp touch consecutive table entries. alpha / out: set s at s * ld + i.
 * Gather counts unseen keys (once per key) into *fallback_count (device int64) with one
 * atomicAdd per block. */
#ifndef FNGD_KERNELS_COEFS_CUH
#define FNGD_KERNELS_COEFS_CUH

#include <cuda_runtime.h>
#include <stdint.h>

struct fngd_coef_scatter_params {
    float* table;
    uint8_t* seen;
    int nsets;
    const int64_t* ids; /* device, or NULL */
    int64_t key_offset;
    int n;
    const float* alpha;
    int ld_alpha;
};

struct fngd_coef_gather_params {
    const float* table;
    const uint8_t* seen;
    int nsets;
    const int64_t* ids; /* device, or NULL */
    int64_t key_offset;
    int n;
    int uniform;          /* fallback 1/n instead of fallback[set] */
    const float* fallback;/* device, nsets floats (stored means) */
    float out_scale;
    float* out;
    int ld_out;
    int64_t* fallback_count; /* device */
};

cudaError_t fngd_launch_coef_scatter(const fngd_coef_scatter_params& P, cudaStream_t stream);
cudaError_t fngd_launch_coef_gather(const fngd_coef_gather_params& P, cudaStream_t stream);

#endif
