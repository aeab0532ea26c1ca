/* factor_solve_batched: count damped Cholesky solves of equal order in one call. */
#include "cpu_internal.h"

/* The batched form is a loop here: LAPACK has no batched Cholesky, and the CPU pays no
 * per-call synchronisation that batching would save. */
size_t cpu_solver_batched_workspace_bytes(fngd_backend_ctx_t* ctx, int N, int count) {
    return count < 1 ? 0 : cpu_solver_workspace_bytes(ctx, N);
}

fngd_status_t cpu_factor_solve_batched(fngd_backend_ctx_t* ctx, const float* K, int count, int N,
                                       fngd_damping_kind_t damping_kind, double damping,
                                       const double* min_shift, const float* rhs,
                                       int range_filter, float* alpha, int ld_alpha, int* info, double* shift_used,
                                       double* trace_K, void* ws, size_t ws_bytes,
                                       fngd_stream_t stream, fngd_err_t* err) {
    FNGD_REQUIRE(err, K && alpha && info && shift_used && trace_K && min_shift && count >= 1 &&
                          N >= 1 && ld_alpha >= N,
                 FNGD_ERROR_INVALID_ARGUMENT,
                 "cpu factor_solve_batched: null argument, count = %d, N = %d or ld_alpha = %d",
                 count, N, ld_alpha);
    const size_t nn = (size_t)N * N;
    /* A NaN anywhere fails the whole call before any alpha is written (backend.h contract). */
    for (size_t k = 0; k < (size_t)count * nn; ++k)
        FNGD_REQUIRE(err, K[k] == K[k], FNGD_ERROR_BACKEND,
                     "cpu factor_solve_batched: Gram matrix %zu contains NaN", k / nn);
    for (int s = 0; s < count; ++s)
        FNGD_TRY(cpu_factor_solve(ctx, K + (size_t)s * nn, N, damping_kind, damping, min_shift[s],
                                  rhs, range_filter, alpha + (size_t)s * ld_alpha, &info[s], &shift_used[s],
                                  &trace_K[s], ws, ws_bytes, stream, err));
    return FNGD_SUCCESS;
}
