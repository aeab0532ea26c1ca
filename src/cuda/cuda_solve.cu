/* factor_solve: damped Cholesky solves in double precision (docs/METHOD.md section 1) of
 * `count` equal-size Gram matrices at once (count 1: global mode; one per layer: per-layer
 * mode, epoch one): Kd = (double)K + shift I (shift from the device trace), potrf, potrs,
 * alpha = (float)x. Every widening, trace, shift, factorization, solve and guarded alpha store
 * of the batch is enqueued first and the host waits once, reading every matrix's status,
 * trace and shift in one copy; alpha is written on the device only for a factor that
 * succeeded. */
#include <string.h>

#include "cuda_solve.h"
#include "kernels/batch_pointers.cuh"
#include "kernels/damping.cuh"
#include "kernels/solution_store.cuh"

namespace {
/* Device statuses of the batch, one contiguous piece so one copy brings it back:
 * trace[count] and shift[count] (doubles), then potrf_info[count], potrs_info[count] and
 * nan[count] (ints). The batched potrs reports one info for the whole batch, in slot 0. */
struct status_view {
    double* trace;
    double* shift;
    int* potrf_info;
    int* potrs_info;
    int* nan;
};

size_t status_bytes(int count)
{
    return (size_t)count * (2 * sizeof(double) + 3 * sizeof(int));
}

status_view view_status(void* base, int count)
{
    status_view v;
    v.trace = (double*)base;
    v.shift = v.trace + count;
    v.potrf_info = (int*)(v.shift + count);
    v.potrs_info = v.potrf_info + count;
    v.nan = v.potrs_info + count;
    return v;
}

/* Workspace: Kd (count*N*N doubles) | x, y (count*N doubles each; y: the range filter's
 * second solve) | floors (count doubles, the uploaded min_shift) | statuses | batched: pointer
 * arrays (3*count: matrices, x, y) / looped: potrf work. */
struct solve_layout {
    double* Kd;
    double* x;
    double* y;
    double* floors;
    void* status;
    double** ptrs;  /* matrices, then the x right-hand sides, then the y ones */
    double* work;
    size_t bytes;
};

solve_layout carve(void* ws, int N, int count, fngd_cuda_chol_path path, int lwork)
{
    fngd_cuda_carve c{(char*)ws, 0};
    solve_layout L = {};
    L.Kd = (double*)c.take((size_t)count * N * N * sizeof(double));
    L.x = (double*)c.take((size_t)count * N * sizeof(double));
    L.y = (double*)c.take((size_t)count * N * sizeof(double));
    L.floors = (double*)c.take((size_t)count * sizeof(double));
    L.status = c.take(status_bytes(count));
    if (path == FNGD_CUDA_CHOL_BATCHED)
        L.ptrs = (double**)c.take(3 * (size_t)count * sizeof(double*));
    else
        L.work = (double*)c.take((size_t)(lwork > 0 ? lwork : 1) * sizeof(double));
    L.bytes = c.used;
    return L;
}

/* Pinned host staging of at least `bytes`, kept in the context for the next step. */
fngd_status_t reserve_staging(fngd_backend_ctx_t* ctx, size_t bytes, fngd_err_t* err)
{
    if (ctx->batch_host_bytes >= bytes) return FNGD_SUCCESS;
    void* old = ctx->batch_host;
    ctx->batch_host = NULL;
    ctx->batch_host_bytes = 0;
    if (old) FNGD_CUDA_TRY(err, cudaFreeHost(old));
    FNGD_CUDA_TRY(err, cudaMallocHost(&ctx->batch_host, bytes));
    ctx->batch_host_bytes = bytes;
    return FNGD_SUCCESS;
}

/* The range filter's second solve: y = (Kd)^-1 x for every matrix, on the factors in Kd. */
fngd_status_t solve_again(fngd_backend_ctx_t* ctx, fngd_cuda_chol_path path,
                          const solve_layout& L, const status_view& st, int N, int count,
                          cudaStream_t s, fngd_err_t* err)
{
    const size_t nn = (size_t)N * N;
    FNGD_CUDA_TRY(err, cudaMemcpyAsync(L.y, L.x, (size_t)count * N * sizeof(double),
                                       cudaMemcpyDeviceToDevice, s));
    if (path == FNGD_CUDA_CHOL_BATCHED) {
        double** A = L.ptrs;
        double** Y = L.ptrs + 2 * (size_t)count;
        FNGD_CUSOLVER_TRY(err, cusolverDnDpotrsBatched(ctx->solver, CUBLAS_FILL_MODE_LOWER, N, 1,
                                                       A, N, Y, N, st.potrs_info, count));
        return FNGD_SUCCESS;
    }
    for (int m = 0; m < count; ++m)
        FNGD_CUSOLVER_TRY(err, cusolverDnDpotrs(ctx->solver, CUBLAS_FILL_MODE_LOWER, N, 1,
                                                L.Kd + m * nn, N, L.y + (size_t)m * N, N,
                                                st.potrs_info + m));
    return FNGD_SUCCESS;
}

/* Factor and solve every damped matrix on the chosen path; statuses into st. */
fngd_status_t factor_and_solve(fngd_backend_ctx_t* ctx, fngd_cuda_chol_path path,
                               const solve_layout& L, const status_view& st, int N, int count,
                               int lwork, cudaStream_t s, fngd_err_t* err)
{
    const size_t nn = (size_t)N * N;
    if (path == FNGD_CUDA_CHOL_BATCHED) {
        double** A = L.ptrs;
        double** B = L.ptrs + count;
        FNGD_CUDA_TRY(err, fngd_launch_batch_pointers(A, L.Kd, (int64_t)nn, B, L.x, N, count, s));
        /* The y pointers: the same layout as x, count*N doubles further on. */
        FNGD_CUDA_TRY(err, fngd_launch_batch_pointers(B + count, L.y, N, nullptr, nullptr, N,
                                                      count, s));
        {
            fngd_nvtx_range r("factor");
            FNGD_CUSOLVER_TRY(err, cusolverDnDpotrfBatched(ctx->solver, CUBLAS_FILL_MODE_LOWER, N,
                                                           A, N, st.potrf_info, count));
        }
        fngd_nvtx_range r("solve");
        /* A failed factor leaves garbage in its x only; the store skips that matrix. */
        FNGD_CUSOLVER_TRY(err, cusolverDnDpotrsBatched(ctx->solver, CUBLAS_FILL_MODE_LOWER, N, 1,
                                                       A, N, B, N, st.potrs_info, count));
        return FNGD_SUCCESS;
    }
    {
        fngd_nvtx_range r("factor");
        /* One potrf work buffer serves every matrix: the calls run in stream order. */
        for (int m = 0; m < count; ++m)
            FNGD_CUSOLVER_TRY(err, cusolverDnDpotrf(ctx->solver, CUBLAS_FILL_MODE_LOWER, N,
                                                    L.Kd + m * nn, N, L.work, lwork,
                                                    st.potrf_info + m));
    }
    fngd_nvtx_range r("solve");
    for (int m = 0; m < count; ++m)
        FNGD_CUSOLVER_TRY(err, cusolverDnDpotrs(ctx->solver, CUBLAS_FILL_MODE_LOWER, N, 1,
                                                L.Kd + m * nn, N, L.x + (size_t)m * N, N,
                                                st.potrs_info + m));
    return FNGD_SUCCESS;
}
}  // namespace

/* Lwork (in doubles, as cuSOLVER reports it) of the lower-triangular Dpotrf of order N. The
 * query reads only the sizes; A is any valid device pointer (it is not dereferenced). */
static fngd_status_t potrf_lwork(fngd_backend_ctx_t* ctx, int N, double* A, int* lwork,
                                 fngd_err_t* err)
{
    *lwork = 0;
    FNGD_CUSOLVER_TRY(err, cusolverDnDpotrf_bufferSize(ctx->solver, CUBLAS_FILL_MODE_LOWER, N,
                                                       A, N, lwork));
    return FNGD_SUCCESS;
}

fngd_cuda_chol_path fngd_cuda_chol_resolve(int N, int count, fngd_cuda_chol_path path)
{
    if (path != FNGD_CUDA_CHOL_AUTO) return path;
    return count > 1 && N <= FNGD_CUDA_BATCHED_POTRF_MAX_N ? FNGD_CUDA_CHOL_BATCHED
                                                           : FNGD_CUDA_CHOL_LOOPED;
}

fngd_status_t fngd_cuda_solve_bytes(fngd_backend_ctx_t* ctx, int N, int count,
                                    fngd_cuda_chol_path path, size_t* bytes, fngd_err_t* err)
{
    *bytes = 0;
    if (N <= 0 || count <= 0) return FNGD_SUCCESS;
    path = fngd_cuda_chol_resolve(N, count, path);
    int lwork = 0;
    if (path == FNGD_CUDA_CHOL_LOOPED)
        FNGD_TRY(potrf_lwork(ctx, N, (double*)ctx->blas_ws /* any device pointer */, &lwork, err));
    *bytes = carve(nullptr, N, count, path, lwork).bytes;
    return FNGD_SUCCESS;
}

fngd_status_t fngd_cuda_factor_solve_on(fngd_backend_ctx_t* ctx, fngd_cuda_chol_path path,
                                        const float* K, int count, int N,
                                        fngd_damping_kind_t damping_kind, double damping,
                                        const double* min_shift, const float* rhs,
                                        int range_filter, float* alpha, int ld_alpha, int* info,
                                        double* shift_used, double* trace_K,
                                        const fngd_call_t* call)
{
    fngd_err_t* err = call->err;
    void* ws = call->ws;
    FNGD_REQUIRE(err, K && alpha && min_shift && info && shift_used && trace_K && count >= 1 &&
                          N >= 1 && ld_alpha >= N,
                 FNGD_ERROR_INVALID_ARGUMENT,
                 "factor_solve: null argument, count = %d, N = %d or ld_alpha = %d", count, N,
                 ld_alpha);
    FNGD_REQUIRE(err, ws != NULL, FNGD_ERROR_INTERNAL, "factor_solve: no workspace");
    path = fngd_cuda_chol_resolve(N, count, path);
    const cudaStream_t s = fngd_cuda_stream(call->stream);
    FNGD_TRY(fngd_cuda_bind(ctx, s, err));
    int lwork = 0;
    if (path == FNGD_CUDA_CHOL_LOOPED)
        FNGD_TRY(potrf_lwork(ctx, N, (double*)ws /* where Kd goes */, &lwork, err));
    const solve_layout L = carve(ws, N, count, path, lwork);
    FNGD_REQUIRE(err, call->ws_bytes >= L.bytes, FNGD_ERROR_INTERNAL,
                 "factor_solve: workspace of %zu bytes, %zu needed", call->ws_bytes, L.bytes);

    /* Staging: the floors go up from its front, the statuses come back behind them. */
    const size_t floors_bytes = (size_t)count * sizeof(double);
    const size_t st_bytes = status_bytes(count);
    FNGD_TRY(reserve_staging(ctx, floors_bytes + st_bytes, err));
    memcpy(ctx->batch_host, min_shift, floors_bytes);
    void* status_host = (char*)ctx->batch_host + floors_bytes;
    const status_view st = view_status(L.status, count);
    {
        fngd_nvtx_range r("damping");
        FNGD_CUDA_TRY(err, cudaMemsetAsync(L.status, 0, st_bytes, s));
        FNGD_CUDA_TRY(err, cudaMemcpyAsync(L.floors, ctx->batch_host, floors_bytes,
                                           cudaMemcpyHostToDevice, s));
        fngd_damping_params D;
        D.K = K;
        D.Kd = L.Kd;
        D.rhs = rhs;
        D.b = L.x;
        D.N = N;
        D.count = count;
        D.trace_relative = damping_kind == FNGD_DAMPING_TRACE_RELATIVE;
        D.damping = damping;
        D.min_shift = 0.0; /* unused: per-matrix floors */
        D.min_shifts = L.floors;
        D.trace = st.trace;
        D.shift = st.shift;
        D.nan = st.nan;
        FNGD_CUDA_TRY(err, fngd_launch_damping(D, s));
    }
    FNGD_TRY(factor_and_solve(ctx, path, L, st, N, count, lwork, s, err));
    if (range_filter) FNGD_TRY(solve_again(ctx, path, L, st, N, count, s, err));
    {
        fngd_nvtx_range r("store");
        FNGD_CUDA_TRY(err, fngd_launch_solution_store(L.x, range_filter ? L.y : nullptr, st.shift,
                                                      st.potrf_info, st.nan, alpha, N, count,
                                                      ld_alpha, s));
        FNGD_CUDA_TRY(err, cudaMemcpyAsync(status_host, L.status, st_bytes,
                                           cudaMemcpyDeviceToHost, s));
        FNGD_CUDA_TRY(err, cudaStreamSynchronize(s));
    }
    const status_view h = view_status(status_host, count);
    /* A NaN in any matrix fails the whole call (the store above wrote no alpha), as a NaN
     * makes LAPACKE_dpotrf fail in the CPU backend. */
    for (int m = 0; m < count; ++m)
        FNGD_REQUIRE(err, !h.nan[m], FNGD_ERROR_BACKEND,
                     "factor_solve: damped Gram matrix %d of %d contains NaN "
                     "(trace %g, shift %g)", m, count, h.trace[m], h.shift[m]);
    for (int m = 0; m < count; ++m)
        FNGD_REQUIRE(err, h.potrf_info[m] >= 0 && h.potrs_info[m] == 0, FNGD_ERROR_BACKEND,
                     "cuSOLVER reported an invalid argument for matrix %d of %d "
                     "(potrf info %d, potrs info %d)", m, count, h.potrf_info[m],
                     h.potrs_info[m]);
    for (int m = 0; m < count; ++m) {
        info[m] = h.potrf_info[m];
        shift_used[m] = h.shift[m];
        trace_K[m] = h.trace[m];
    }
    return FNGD_SUCCESS;
}

fngd_status_t fngd_cuda_factor_solve(fngd_backend_ctx_t* ctx, const float* K, int count, int N,
                                     fngd_damping_kind_t damping_kind, double damping,
                                     const double* min_shift, const float* rhs, int range_filter,
                                     float* alpha, int ld_alpha, int* info, double* shift_used,
                                     double* trace_K, const fngd_call_t* call)
{
    fngd_nvtx_range r("factor_solve");
    return fngd_cuda_factor_solve_on(ctx, FNGD_CUDA_CHOL_AUTO, K, count, N, damping_kind, damping,
                                     min_shift, rhs, range_filter, alpha, ld_alpha, info,
                                     shift_used, trace_K, call);
}
