/* *flag = 1 if any of x[0..n) is NaN or Inf (flag must be zeroed beforehand; never cleared). */
#ifndef FNGD_KERNELS_NONFINITE_CUH
#define FNGD_KERNELS_NONFINITE_CUH

#include <cuda_runtime.h>
#include <stddef.h>

cudaError_t fngd_launch_nonfinite(const float* x, size_t n, int* flag, cudaStream_t stream);

#endif
