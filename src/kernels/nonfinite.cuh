/* *flag = tag if any of x[0..n) is NaN or Inf (flag zeroed beforehand; never cleared, so
 * several launches can share one flag and report any one of their tags). */
#ifndef FNGD_KERNELS_NONFINITE_CUH
#define FNGD_KERNELS_NONFINITE_CUH

#include <cuda_runtime.h>
#include <stddef.h>

cudaError_t fngd_launch_nonfinite(const float* x, size_t n, int* flag, int tag,
                                  cudaStream_t stream);

#endif
