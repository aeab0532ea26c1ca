/* factor_solve's two ways to factor `count` equal-size damped Gram matrices: one
 * cusolverDnDpotrfBatched + cusolverDnDpotrsBatched call pair over the whole batch, or a loop
 * of cusolverDnDpotrf + cusolverDnDpotrs per matrix (one matrix, the global mode's solve,
 * always loops: potrf's blocked algorithm). The backend op picks by N and count; the
 * benchmark (bench/bench_cuda_kernels.cu) and the tests force each path through the same
 * code. */
#ifndef FNGD_CUDA_SOLVE_H
#define FNGD_CUDA_SOLVE_H

#include "cuda_common.h"

/* Largest N for which the batched cuSOLVER routines are used. They are meant for many small
 * matrices (one call for the whole batch, no workspace, nrhs = 1 only), while potrf's blocked
 * algorithm targets larger orders; 256 follows that rule of thumb and has NOT been measured
 * on a GPU yet: bench_cuda_kernels' "cholesky_solve" section times both paths per N through
 * this same code and says which is faster, so set this constant from its output. */
#define FNGD_CUDA_BATCHED_POTRF_MAX_N 256

enum fngd_cuda_chol_path {
    FNGD_CUDA_CHOL_AUTO = 0,  /* batched when count > 1 and N <= FNGD_CUDA_BATCHED_POTRF_MAX_N */
    FNGD_CUDA_CHOL_BATCHED,   /* potrfBatched + potrsBatched */
    FNGD_CUDA_CHOL_LOOPED     /* potrf + potrs per matrix */
};

/* The path AUTO stands for at order N and batch count (other paths are returned unchanged). */
fngd_cuda_chol_path fngd_cuda_chol_resolve(int N, int count, fngd_cuda_chol_path path);

/* Exact workspace bytes of factor_solve on `path` (0 when N or count < 1); the looped path
 * asks cuSOLVER for potrf's work size, the one way this query can fail. */
fngd_status_t fngd_cuda_solve_bytes(fngd_backend_ctx_t* ctx, int N, int count,
                                    fngd_cuda_chol_path path, size_t* bytes, fngd_err_t* err);

/* factor_solve (src/host/backend.h) on `path`. */
fngd_status_t fngd_cuda_factor_solve_on(fngd_backend_ctx_t* ctx, fngd_cuda_chol_path path,
                                        const float* K, int count, int N,
                                        fngd_damping_kind_t damping_kind, double damping,
                                        const double* min_shift, const float* rhs,
                                        int range_filter, float* alpha, int ld_alpha, int* info,
                                        double* shift_used, double* trace_K,
                                        const fngd_call_t* call);

#endif
