/* Copy the lower triangle of a column-major n x n matrix (what cublasSsyrk writes with
 * CUBLAS_FILL_MODE_LOWER) onto its upper triangle, so K holds both triangles. */
#ifndef FNGD_KERNELS_SYMMETRIZE_CUH
#define FNGD_KERNELS_SYMMETRIZE_CUH

#include <cuda_runtime.h>

cudaError_t fngd_launch_symmetrize_lower(float* K, int n, cudaStream_t stream);

#endif
