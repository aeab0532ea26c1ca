/* alpha_s[i] = (float) x_s[i] for the `count` solutions x_s = x + s*n, alpha_s = alpha +
 * s*ld_alpha, only where the factorization succeeded (info[s] == 0) and only when no matrix of
 * the call held a NaN (all nan[0..count) zero: a NaN fails the whole call, which then writes
 * no alpha at all). Decided on the device, so a failed solve leaves alpha untouched without a
 * host round trip in between. count = 1 is the single factor_solve.
 * Range filter (y != NULL): alpha_s = (float)(x_s - shift[s] * y_s), y_s = (K_s + shift I)^-1 x_s. */
#ifndef FNGD_KERNELS_SOLUTION_STORE_CUH
#define FNGD_KERNELS_SOLUTION_STORE_CUH

#include <cuda_runtime.h>

cudaError_t fngd_launch_solution_store(const double* x, const double* y, const double* shift,
                                       const int* info, const int* nan, float* alpha, int n,
                                       int count, int ld_alpha, cudaStream_t stream);

#endif
