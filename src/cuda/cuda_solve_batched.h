/* factor_solve_batched's two ways to factor `count` equal-size damped Gram matrices: one
 * cusolverDnDpotrfBatched + cusolverDnDpotrsBatched call pair over the whole batch, or a loop
 * of cusolverDnDpotrf + cusolverDnDpotrs per matrix. The backend op picks by N; the benchmark
 * (bench/bench_cuda_kernels.cu) and the tests force each path through the same code. */
#ifndef FNGD_CUDA_SOLVE_BATCHED_H
#define FNGD_CUDA_SOLVE_BATCHED_H

#include "cuda_common.h"

/* Largest N for which the batched cuSOLVER routines are used. They are meant for many small
 * matrices (one call for the whole batch, no workspace, nrhs = 1 only), while potrf's blocked
 * algorithm targets larger orders; 256 follows that rule of thumb and has NOT been measured
 * on a GPU yet: bench_cuda_kernels' "cholesky_solve" section times both paths per N through
 * this same code and says which is faster, so set this constant from its output. */
#define FNGD_CUDA_BATCHED_POTRF_MAX_N 256

enum fngd_cuda_chol_path {
    FNGD_CUDA_CHOL_AUTO = 0,  /* batched when N <= FNGD_CUDA_BATCHED_POTRF_MAX_N */
    FNGD_CUDA_CHOL_BATCHED,   /* potrfBatched + potrsBatched */
    FNGD_CUDA_CHOL_LOOPED     /* potrf + potrs per matrix */
};

/* The path AUTO stands for at order N (other paths are returned unchanged). */
fngd_cuda_chol_path fngd_cuda_chol_resolve(int N, fngd_cuda_chol_path path);

/* Exact workspace bytes of factor_solve_batched on `path` (0 when N or count < 1). */
size_t fngd_cuda_solve_batched_bytes(fngd_backend_ctx_t* ctx, int N, int count,
                                     fngd_cuda_chol_path path);

/* factor_solve_batched (src/host/backend.h) on `path`. */
fngd_status_t fngd_cuda_factor_solve_batched_on(fngd_backend_ctx_t* ctx, fngd_cuda_chol_path path,
                                                const float* K, int count, int N,
                                                fngd_damping_kind_t damping_kind, double damping,
                                                const double* min_shift, const float* rhs,
                                                int range_filter, float* alpha, int ld_alpha,
                                                int* info,
                                                double* shift_used, double* trace_K, void* ws,
                                                size_t ws_bytes, fngd_stream_t stream,
                                                fngd_err_t* err);

#endif
