/* Independent dense reference of the FNGD step, in double precision, straight from the
 * definitions (METHOD.md sections 1, 4, 6). No BLAS, no im2col, no Gram tricks in the primary
 * path: per-sample gradients are formed by their defining sums and the direction is the solve of
 * the dense d x d damped empirical Fisher. The library (float, Woodbury, Gram methods) is tested
 * against it; it shares no code with the library.
 *
 * Storage: a per-sample gradient matrix is N rows of d doubles, row-major (row i = g_i), i.e. the
 * transpose of METHOD.md's G (d x N). A layer's g_i is its weight part (PyTorch layout flattened)
 * followed by its bias part; a global block concatenates the layers in registration order.
 */
#ifndef FNGD_REFERENCE_H
#define FNGD_REFERENCE_H

#include <stdint.h>

#include "fngd.h"

#ifdef __cplusplus
extern "C" {
#endif

/* Geometry of a layer as the public header defines it. */
typedef struct fngd_ref_geom {
    int T;                  /* positions per sample */
    int out_h, out_w;       /* CONV2D output size */
    int64_t in_per_sample;  /* floats of `input` per sample */
    int64_t out_per_sample; /* floats of `grad_output` per sample (0 for GENERIC) */
    int64_t n_weight, n_bias, grad_len;
} fngd_ref_geom_t;

/* 0 on success; -1 when the descriptor is inconsistent (non-positive sizes, empty output). */
int fngd_ref_geometry(const fngd_layer_desc_t* desc, fngd_ref_geom_t* geom);

/* Writes scale * g_i into G[i * ld + col0 + k], k < grad_len, for i < N. scale converts the
 * caller's gradients to per-sample ones (N for the mean-loss convention, else 1).
 * Returns 0, or -1 for an inconsistent descriptor. */
int fngd_ref_per_sample_grads(const fngd_layer_desc_t* desc, int N, const float* input,
                              const float* grad_output, double scale, double* G, int64_t ld,
                              int64_t col0);

/* K = G G^T as METHOD.md writes it (N x N, K_ij = <g_i, g_j>); G here is N x d row-major. */
void fngd_ref_gram(const double* G, int N, int64_t d, double* K);

/* lambda of a block: `damping` (ABSOLUTE) or damping * trace(K) / N (TRACE_RELATIVE). */
double fngd_ref_lambda(fngd_damping_kind_t kind, double damping, const double* G, int N,
                       int64_t d);

/* The primary reference: solves (F + lambda I) delta = (1/N) sum_i r_i g_i with the dense
 * F = (1/N) sum_i g_i g_i^T (d x d) by Cholesky. r == NULL means all ones (delta is then the
 * damped natural gradient of the mean gradient). For general r this is the same vector as
 * G (K + N lambda I)^-1 r, because (F + lambda I) G^T a = (1/N) G^T (K + N lambda I) a.
 * With range_filter (FNGD_FILTER_RANGE) it is (F + lambda I)^-1 F (F + lambda I)^-1 b, which
 * equals G (K + N lambda I)^-1 K (K + N lambda I)^-1 r by the same identity applied twice.
 * Returns 0, or -1 if F + lambda I is not positive definite (delta untouched). */
int fngd_ref_dense_direction(const double* G, int N, int64_t d, double lambda, const double* r,
                             int range_filter, double* delta);

/* alpha = (K + N lambda I)^-1 r (r == NULL: ones) by Cholesky of the N x N matrix; with
 * range_filter, alpha = (K + N lambda I)^-1 K (K + N lambda I)^-1 r (two separate solves).
 * Returns 0, or -1 if not positive definite. */
int fngd_ref_coefficients(const double* G, int N, int64_t d, double lambda, const double* r,
                          int range_filter, double* alpha);

/* delta = sum_i alpha_i g_i (d values). */
void fngd_ref_weighted_sum(const double* G, int N, int64_t d, const double* alpha,
                           double* delta);

/* In-place Cholesky solve of the symmetric n x n row-major A x = b (A overwritten by its
 * factor, b by x). Returns 0, or -1 when a pivot is not positive (A, b then partly written). */
int fngd_ref_cholesky_solve(double* A, int64_t n, double* b);

/* One SGD step as the header documents it, for n values:
 *   d = dir + weight_decay * param; mom = momentum * mom + d; param -= lr * mom
 * (with momentum == 0 the momentum buffer is still written and equals d). */
void fngd_ref_sgd(double* param, const double* dir, double* mom, int64_t n, double lr,
                  double momentum, double weight_decay);

/* The coefficient table from its definition (src/host/backend.h), one key and one set at a
 * time. Keys: key_i = ids ? ids[i] : key_offset + i; table[key * nsets + set].
 * scatter: table[key_i * nsets + s] = alpha[s * ld + i] for every set s; seen[key_i] = 1.
 * gather: out[s * ld + i] = out_scale * (seen[key_i] ? table[...] : uniform ? 1/N :
 * fallback[s]); returns the number of unseen keys (once per key).
 * summary of set s over seen keys < num_keys: count, and min/max/sum of the values in double
 * as a scan in key order (min/max start at the first seen value and move on a strict
 * comparison); a set with no seen key gives zeros. */
void fngd_ref_scatter(float* table, uint8_t* seen, int nsets, const int64_t* ids,
                      int64_t key_offset, int N, const float* alpha, int ld);
int64_t fngd_ref_gather(const float* table, const uint8_t* seen, int nsets, const int64_t* ids,
                        int64_t key_offset, int N, int uniform, const float* fallback,
                        float out_scale, float* out, int ld);
void fngd_ref_summary(const float* table, const uint8_t* seen, int64_t num_keys, int nsets,
                      int set, int64_t* count, double* min, double* max, double* sum);

#ifdef __cplusplus
}
#endif

#endif
