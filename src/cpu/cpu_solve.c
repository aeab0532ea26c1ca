/* factor_solve: damped Cholesky solve of (K + shift I) alpha = r in double precision.
 * K is symmetric, so its row-major buffer is also its column-major one: LAPACKE runs in
 * column-major order, which works in place (the row-major path would allocate a transposed
 * copy outside fngd_host_alloc). */
#include <lapacke.h>

#include "cpu_internal.h"

size_t cpu_solver_workspace_bytes(fngd_backend_ctx_t* ctx, int N) {
    if (N < 1) return 0;
    return ((size_t)N * N + 2 * (size_t)N) * sizeof(double);
}

fngd_status_t cpu_factor_solve(fngd_backend_ctx_t* ctx, const float* K, int N,
                               fngd_damping_kind_t damping_kind, double damping,
                               double min_shift, const float* rhs, int range_filter,
                               float* alpha, int* info, double* shift_used, double* trace_K,
                               void* ws, size_t ws_bytes, fngd_stream_t stream, fngd_err_t* err) {
    FNGD_REQUIRE(err, K && alpha && info && shift_used && trace_K && N >= 1,
                 FNGD_ERROR_INVALID_ARGUMENT, "cpu factor_solve: null argument or N = %d < 1", N);
    const size_t need = cpu_solver_workspace_bytes(ctx, N);
    FNGD_REQUIRE(err, ws && ws_bytes >= need, FNGD_ERROR_INTERNAL,
                 "cpu factor_solve: workspace of %zu bytes, %zu needed", ws_bytes, need);
    double* a = (double*)ws;
    double* r = a + (size_t)N * N;
    double* y = r + N;

    double trace = 0.0;
    for (size_t k = 0; k < (size_t)N * N; ++k) a[k] = K[k];
    for (int i = 0; i < N; ++i) trace += a[(size_t)i * N + i];
    double shift = damping_kind == FNGD_DAMPING_TRACE_RELATIVE ? damping * trace : N * damping;
    if (shift < min_shift) shift = min_shift;
    for (int i = 0; i < N; ++i) a[(size_t)i * N + i] += shift;
    *trace_K = trace;
    *shift_used = shift;

    lapack_int st = LAPACKE_dpotrf(LAPACK_COL_MAJOR, 'L', N, a, N);
    if (st > 0) {
        *info = (int)st; /* leading minor st is not positive definite */
        return FNGD_SUCCESS;
    }
    if (st < 0)
        return FNGD_FAIL(err, FNGD_ERROR_BACKEND,
                         "cpu factor_solve: LAPACKE_dpotrf argument %d invalid (NaN in K?)",
                         (int)-st);
    for (int i = 0; i < N; ++i) r[i] = rhs ? (double)rhs[i] : 1.0;
    st = LAPACKE_dpotrs(LAPACK_COL_MAJOR, 'L', N, 1, a, N, r, N);
    if (st != 0)
        return FNGD_FAIL(err, FNGD_ERROR_BACKEND, "cpu factor_solve: LAPACKE_dpotrs returned %d",
                         (int)st);
    if (range_filter) { /* alpha = x - shift (K + shift I)^-1 x, on the same factor */
        for (int i = 0; i < N; ++i) y[i] = r[i];
        st = LAPACKE_dpotrs(LAPACK_COL_MAJOR, 'L', N, 1, a, N, y, N);
        if (st != 0)
            return FNGD_FAIL(err, FNGD_ERROR_BACKEND,
                             "cpu factor_solve: LAPACKE_dpotrs (range filter) returned %d", (int)st);
        for (int i = 0; i < N; ++i) r[i] -= shift * y[i];
    }
    for (int i = 0; i < N; ++i) alpha[i] = (float)r[i];
    *info = 0;
    return FNGD_SUCCESS;
}
