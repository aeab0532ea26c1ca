/* Damping on the device, before the double-precision Cholesky, for `count` matrices of order
 * N stored one after another (count = 1 is the single factor_solve). For matrix s:
 *   Kd_s = (double) K_s;  trace[s] = sum_i Kd_s[i][i];
 *   shift[s] = trace_relative ? damping * trace[s] : N * damping;
 *   shift[s] = max(shift[s], min_shifts ? min_shifts[s] : min_shift);
 *   Kd_s[i][i] += shift[s];  b_s[i] = rhs ? rhs[i] : 1   (one rhs shared by all matrices).
 * trace and shift are written to device doubles so the host reads them with the
 * factorization status in one copy. nan[s] is set to 1 when damped matrix s holds a NaN: the
 * CPU backend's LAPACKE_dpotrf rejects such a matrix (an error, not "not positive definite"),
 * while cuSOLVER's potrf gives no such guarantee (a NaN may pass as info 0, or look like a bad
 * pivot and send the host into damping retries), so the solve refuses it itself. */
#ifndef FNGD_KERNELS_DAMPING_CUH
#define FNGD_KERNELS_DAMPING_CUH

#include <cuda_runtime.h>

struct fngd_damping_params {
    const float* K;     /* count x N x N */
    double* Kd;         /* count x N x N */
    const float* rhs;   /* N, or NULL for all ones */
    double* b;          /* count x N */
    int N;
    int count;
    int trace_relative;
    double damping;
    double min_shift;          /* the floor of every shift when min_shifts is NULL */
    const double* min_shifts;  /* device, count floors, or NULL */
    double* trace;      /* device, count out */
    double* shift;      /* device, count out */
    int* nan;           /* device, count flags out, zeroed by the caller */
};

cudaError_t fngd_launch_damping(const fngd_damping_params& P, cudaStream_t stream);

#endif
