/* The device arrays of device pointers that cuSOLVER's batched routines take:
 *   a[s] = a_base + s * a_stride,  b[s] = b_base + s * b_stride,  s < count.
 * Filled on the device so a batched factorization needs no host-to-device copy. b may be NULL
 * (one array only). */
#ifndef FNGD_KERNELS_BATCH_POINTERS_CUH
#define FNGD_KERNELS_BATCH_POINTERS_CUH

#include <cuda_runtime.h>
#include <stdint.h>

cudaError_t fngd_launch_batch_pointers(double** a, double* a_base, int64_t a_stride, double** b,
                                       double* b_base, int64_t b_stride, int count,
                                       cudaStream_t stream);

#endif
