/* Damped Cholesky solve in double precision (METHOD.md section 1):
 *   Kd = (double)K + shift I (shift from the device trace), potrf, potrs, alpha = (float)x.
 * Everything stays on the stream; the single host synchronisation at the end reads the
 * factorization status, trace and shift together. alpha is written on the device only when
 * potrf succeeded. */
#include "cuda_common.h"
#include "kernels/damping.cuh"
#include "kernels/solution_store.cuh"

namespace {
/* Workspace layout: Kd (N*N doubles) | x, y (N doubles each) | potrf work (lwork doubles) |
 * status. y is the range filter's second solve. */
struct solve_layout {
    double* Kd;
    double* x;
    double* y;
    double* work;
    fngd_cuda_solve_status* status;
    size_t bytes;
};

solve_layout carve(void* ws, int N, int lwork)
{
    fngd_cuda_carve c{(char*)ws, 0};
    solve_layout L;
    L.Kd = (double*)c.take((size_t)N * N * sizeof(double));
    L.x = (double*)c.take((size_t)N * sizeof(double));
    L.y = (double*)c.take((size_t)N * sizeof(double));
    L.work = (double*)c.take((size_t)(lwork > 0 ? lwork : 1) * sizeof(double));
    L.status = (fngd_cuda_solve_status*)c.take(sizeof(fngd_cuda_solve_status));
    L.bytes = c.used;
    return L;
}
}  // namespace

fngd_status_t fngd_cuda_potrf_lwork(fngd_backend_ctx_t* ctx, int N, double* A, int* lwork,
                                    fngd_err_t* err)
{
    *lwork = 0;
    FNGD_CUSOLVER_TRY(err, cusolverDnDpotrf_bufferSize(ctx->solver, CUBLAS_FILL_MODE_LOWER, N,
                                                       A, N, lwork));
    return FNGD_SUCCESS;
}

size_t fngd_cuda_solver_workspace_bytes(fngd_backend_ctx_t* ctx, int N)
{
    if (N <= 0) return 0;
    int lwork = 0;
    fngd_err_t scratch_err;
    /* An error the caller has pending stays theirs: only one this query raised is cleared. */
    const cudaError_t pending = cudaPeekAtLastError();
    fngd_cuda_device_guard dev;
    if (dev.enter(ctx->device, &scratch_err) != FNGD_SUCCESS ||
        fngd_cuda_potrf_lwork(ctx, N, (double*)ctx->blas_ws, &lwork, &scratch_err) != FNGD_SUCCESS) {
        /* Cannot fail by signature: fall back to a generous bound (N*N doubles more); the
         * solve itself re-queries and reports any real problem. */
        if (pending == cudaSuccess) (void)cudaGetLastError();
        lwork = N * N;
    }
    return carve(nullptr, N, lwork).bytes;
}

fngd_status_t fngd_cuda_factor_solve(fngd_backend_ctx_t* ctx, const float* K, int N,
                                     fngd_damping_kind_t damping_kind, double damping,
                                     double min_shift, const float* rhs, int range_filter,
                                     float* alpha, int* info, double* shift_used,
                                     double* trace_K, void* ws, size_t ws_bytes,
                                     fngd_stream_t stream, fngd_err_t* err)
{
    FNGD_REQUIRE(err, N > 0, FNGD_ERROR_INVALID_ARGUMENT, "factor_solve: N = %d", N);
    const cudaStream_t s = fngd_cuda_stream(stream);
    fngd_cuda_device_guard dev;
    FNGD_TRY(dev.enter(ctx->device, err));
    FNGD_TRY(fngd_cuda_bind(ctx, s, err));
    int lwork = 0;
    FNGD_REQUIRE(err, ws != NULL, FNGD_ERROR_INTERNAL, "factor_solve: no workspace");
    FNGD_TRY(fngd_cuda_potrf_lwork(ctx, N, (double*)ws /* where Kd goes */, &lwork, err));
    const solve_layout L = carve(ws, N, lwork);
    FNGD_REQUIRE(err, ws_bytes >= L.bytes, FNGD_ERROR_INTERNAL,
                 "factor_solve: workspace of %zu bytes, %zu needed", ws_bytes, L.bytes);
    {
        fngd_nvtx_range r("factor");
        fngd_damping_params D;
        D.K = K;
        D.Kd = L.Kd;
        D.rhs = rhs;
        D.b = L.x;
        D.N = N;
        D.count = 1;
        D.trace_relative = damping_kind == FNGD_DAMPING_TRACE_RELATIVE;
        D.damping = damping;
        D.min_shift = min_shift;
        D.min_shifts = nullptr;
        D.trace = &L.status->trace;
        D.shift = &L.status->shift;
        D.nan = &L.status->nan;
        FNGD_CUDA_TRY(err, cudaMemsetAsync(L.status, 0, sizeof(fngd_cuda_solve_status), s));
        FNGD_CUDA_TRY(err, fngd_launch_damping(D, s));
        FNGD_CUSOLVER_TRY(err, cusolverDnDpotrf(ctx->solver, CUBLAS_FILL_MODE_LOWER, N, L.Kd, N,
                                                L.work, lwork, &L.status->potrf_info));
    }
    {
        fngd_nvtx_range r("solve");
        /* potrs on a failed factor computes garbage into x only; the store below skips it. */
        FNGD_CUSOLVER_TRY(err, cusolverDnDpotrs(ctx->solver, CUBLAS_FILL_MODE_LOWER, N, 1, L.Kd,
                                                N, L.x, N, &L.status->potrs_info));
        if (range_filter) { /* y = (Kd)^-1 x on the same factor; alpha = x - shift y */
            FNGD_CUDA_TRY(err, cudaMemcpyAsync(L.y, L.x, (size_t)N * sizeof(double),
                                               cudaMemcpyDeviceToDevice, s));
            FNGD_CUSOLVER_TRY(err, cusolverDnDpotrs(ctx->solver, CUBLAS_FILL_MODE_LOWER, N, 1,
                                                    L.Kd, N, L.y, N, &L.status->potrs_info));
        }
        FNGD_CUDA_TRY(err, fngd_launch_solution_store(L.x, range_filter ? L.y : nullptr,
                                                      &L.status->shift, &L.status->potrf_info,
                                                      &L.status->nan, alpha, N, 1, N, s));
        FNGD_CUDA_TRY(err, cudaMemcpyAsync(ctx->solve_host, L.status,
                                           sizeof(fngd_cuda_solve_status),
                                           cudaMemcpyDeviceToHost, s));
        FNGD_CUDA_TRY(err, cudaStreamSynchronize(s));
    }
    const fngd_cuda_solve_status st = *ctx->solve_host;
    /* A NaN matrix is an error, as LAPACKE_dpotrf makes it in the CPU backend. */
    FNGD_REQUIRE(err, !st.nan, FNGD_ERROR_BACKEND,
                 "factor_solve: the damped Gram matrix contains NaN (trace %g, shift %g)",
                 st.trace, st.shift);
    FNGD_REQUIRE(err, st.potrf_info >= 0 && st.potrs_info == 0, FNGD_ERROR_BACKEND,
                 "cuSOLVER reported an invalid argument (potrf info %d, potrs info %d)",
                 st.potrf_info, st.potrs_info);
    *info = st.potrf_info;
    *shift_used = st.shift;
    *trace_K = st.trace;
    return FNGD_SUCCESS;
}
