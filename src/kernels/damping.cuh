/* Damping on the device, before the double-precision Cholesky:
 *   Kd = (double) K;  trace = sum_i Kd[i][i];
 *   shift = trace_relative ? damping * trace : N * damping;  shift = max(shift, min_shift);
 *   Kd[i][i] += shift;  b[i] = rhs ? rhs[i] : 1.
 * trace and shift are written to the device doubles so the host reads them with the
 * factorization status in one copy. */
#ifndef FNGD_KERNELS_DAMPING_CUH
#define FNGD_KERNELS_DAMPING_CUH

#include <cuda_runtime.h>

struct fngd_damping_params {
    const float* K;     /* N x N */
    double* Kd;         /* N x N */
    const float* rhs;   /* N, or NULL for all ones */
    double* b;          /* N */
    int N;
    int trace_relative;
    double damping;
    double min_shift;
    double* trace;      /* device scalar out */
    double* shift;      /* device scalar out */
};

cudaError_t fngd_launch_damping(const fngd_damping_params& P, cudaStream_t stream);

#endif
