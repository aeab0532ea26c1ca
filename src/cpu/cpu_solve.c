/* factor_solve: `count` damped Cholesky solves of (K_s + shift_s I) alpha_s = r in double
 * precision, one after the other: LAPACK has no batched Cholesky, and the CPU pays no
 * per-call synchronisation that batching would save. K is symmetric, so its row-major buffer
 * is also its column-major one: LAPACKE runs in column-major order, which works in place (the
 * row-major path would allocate a transposed copy outside fngd_host_alloc). */
#include <lapacke.h>

#include "cpu_internal.h"

size_t cpu_solve_workspace_bytes(int N) {
    if (N < 1) return 0;
    return ((size_t)N * N + 2 * (size_t)N) * sizeof(double);
}

/* One solve; ws holds cpu_solve_workspace_bytes(N). */
static fngd_status_t solve_one(const float* K, int N, fngd_damping_kind_t damping_kind,
                               double damping, double min_shift, const float* rhs,
                               int range_filter, float* alpha, int* info, double* shift_used,
                               double* trace_K, void* ws, fngd_err_t* err) {
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

fngd_status_t cpu_factor_solve(fngd_backend_ctx_t* ctx, const float* K, int count, int N,
                               fngd_damping_kind_t damping_kind, double damping,
                               const double* min_shift, const float* rhs, int range_filter,
                               float* alpha, int ld_alpha, int* info, double* shift_used,
                               double* trace_K, const fngd_call_t* call) {
    fngd_err_t* err = call->err;
    FNGD_REQUIRE(err, K && alpha && info && shift_used && trace_K && min_shift && count >= 1 &&
                          N >= 1 && ld_alpha >= N,
                 FNGD_ERROR_INVALID_ARGUMENT,
                 "cpu factor_solve: null argument, count = %d, N = %d or ld_alpha = %d", count,
                 N, ld_alpha);
    const size_t need = cpu_solve_workspace_bytes(N);
    FNGD_REQUIRE(err, call->ws && call->ws_bytes >= need, FNGD_ERROR_INTERNAL,
                 "cpu factor_solve: workspace of %zu bytes, %zu needed", call->ws_bytes, need);
    const size_t nn = (size_t)N * N;
    /* A NaN anywhere fails the whole call before any alpha is written (backend.h contract). */
    for (size_t k = 0; k < (size_t)count * nn; ++k)
        FNGD_REQUIRE(err, K[k] == K[k], FNGD_ERROR_BACKEND,
                     "cpu factor_solve: Gram matrix %zu contains NaN", k / nn);
    for (int s = 0; s < count; ++s)
        FNGD_TRY(solve_one(K + (size_t)s * nn, N, damping_kind, damping, min_shift[s], rhs,
                           range_filter, alpha + (size_t)s * ld_alpha, &info[s], &shift_used[s],
                           &trace_K[s], call->ws, err));
    return FNGD_SUCCESS;
}
