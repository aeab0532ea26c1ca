/* alpha[i] = (float) x[i] only when the factorization succeeded (*info == 0) on a matrix
 * without NaN (*nan == 0), decided on the device so a failed solve leaves alpha untouched
 * without a host round trip in between. */
#ifndef FNGD_KERNELS_SOLUTION_STORE_CUH
#define FNGD_KERNELS_SOLUTION_STORE_CUH

#include <cuda_runtime.h>

cudaError_t fngd_launch_solution_store(const double* x, const int* info, const int* nan,
                                       float* alpha, int n, cudaStream_t stream);

#endif
