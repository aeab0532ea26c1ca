/* Damping on the device, before the double-precision Cholesky:
 *   Kd = (double) K;  trace = sum_i Kd[i][i];
 *   shift = trace_relative ? damping * trace : N * damping;  shift = max(shift, min_shift);
 *   Kd[i][i] += shift;  b[i] = rhs ? rhs[i] : 1.
 * trace and shift are written to the device doubles so the host reads them with the
 * factorization status in one copy. *nan is set to 1 when the damped matrix holds a NaN: the
 * CPU backend's LAPACKE_dpotrf rejects such a matrix (an error, not "not positive definite"),
 * while cuSOLVER's potrf gives no such guarantee (a NaN may pass as info 0, or look like a bad
 * pivot and send the host into damping retries), so the solve refuses it itself. */
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
    int* nan;           /* device flag out, zeroed by the caller */
};

cudaError_t fngd_launch_damping(const fngd_damping_params& P, cudaStream_t stream);

#endif
