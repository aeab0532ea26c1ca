/* Reference damping, dense Fisher solve, Gram-side coefficients and the SGD update, in double. */
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "fngd_reference.h"

int fngd_ref_cholesky_solve(double* A, int64_t n, double* b) {
    /* Lower factor L (A = L L^T) in place, column by column (Cholesky-Banachiewicz). */
    for (int64_t j = 0; j < n; ++j) {
        double s = A[j * n + j];
        for (int64_t k = 0; k < j; ++k) s -= A[j * n + k] * A[j * n + k];
        if (!(s > 0.0)) return -1; /* also catches NaN */
        double ljj = sqrt(s);
        A[j * n + j] = ljj;
        for (int64_t i = j + 1; i < n; ++i) {
            double t = A[i * n + j];
            for (int64_t k = 0; k < j; ++k) t -= A[i * n + k] * A[j * n + k];
            A[i * n + j] = t / ljj;
        }
    }
    for (int64_t i = 0; i < n; ++i) { /* L y = b */
        double t = b[i];
        for (int64_t k = 0; k < i; ++k) t -= A[i * n + k] * b[k];
        b[i] = t / A[i * n + i];
    }
    for (int64_t i = n - 1; i >= 0; --i) { /* L^T x = y */
        double t = b[i];
        for (int64_t k = i + 1; k < n; ++k) t -= A[k * n + i] * b[k];
        b[i] = t / A[i * n + i];
    }
    return 0;
}

void fngd_ref_gram(const double* G, int N, int64_t d, double* K) {
    for (int i = 0; i < N; ++i)
        for (int j = 0; j <= i; ++j) {
            double s = 0.0;
            for (int64_t k = 0; k < d; ++k) s += G[(int64_t)i * d + k] * G[(int64_t)j * d + k];
            K[(int64_t)i * N + j] = s;
            K[(int64_t)j * N + i] = s;
        }
}

double fngd_ref_lambda(fngd_damping_kind_t kind, double damping, const double* G, int N,
                       int64_t d) {
    if (kind == FNGD_DAMPING_ABSOLUTE) return damping;
    double trace = 0.0; /* trace(K) = sum_i ||g_i||^2 */
    for (int64_t k = 0; k < (int64_t)N * d; ++k) trace += G[k] * G[k];
    return damping * trace / N;
}

/* F (d x d, both triangles) = (1/N) sum_i g_i g_i^T + shift I. */
static void dense_fisher(const double* G, int N, int64_t d, double shift, double* F) {
    for (int i = 0; i < N; ++i) {
        const double* g = G + (int64_t)i * d;
        for (int64_t a = 0; a < d; ++a)
            for (int64_t c = 0; c <= a; ++c) F[a * d + c] += g[a] * g[c] / N;
    }
    for (int64_t a = 0; a < d; ++a) {
        F[a * d + a] += shift;
        for (int64_t c = 0; c < a; ++c) F[c * d + a] = F[a * d + c];
    }
}

int fngd_ref_dense_direction(const double* G, int N, int64_t d, double lambda, const double* r,
                             int range_filter, double* delta) {
    double* F = (double*)calloc((size_t)(d * d), sizeof(double));
    double* b = (double*)calloc((size_t)d, sizeof(double));
    double* v = (double*)calloc((size_t)d, sizeof(double));
    int rc = -1;
    if (!F || !b || !v) goto done;
    /* b = (1/N) sum_i r_i g_i;  solve (F + lambda I) x = b. */
    for (int i = 0; i < N; ++i)
        for (int64_t a = 0; a < d; ++a) b[a] += (r ? r[i] : 1.0) * G[(int64_t)i * d + a] / N;
    dense_fisher(G, N, d, lambda, F);
    if (fngd_ref_cholesky_solve(F, d, b) != 0) goto done;
    if (range_filter) { /* v = F x, then solve (F + lambda I) delta = v with a fresh factor */
        memset(F, 0, (size_t)(d * d) * sizeof(double));
        dense_fisher(G, N, d, 0.0, F);
        for (int64_t a = 0; a < d; ++a)
            for (int64_t c = 0; c < d; ++c) v[a] += F[a * d + c] * b[c];
        memset(F, 0, (size_t)(d * d) * sizeof(double));
        dense_fisher(G, N, d, lambda, F);
        if (fngd_ref_cholesky_solve(F, d, v) != 0) goto done;
        memcpy(b, v, (size_t)d * sizeof(double));
    }
    for (int64_t a = 0; a < d; ++a) delta[a] = b[a];
    rc = 0;
done:
    free(F);
    free(b);
    free(v);
    return rc;
}

/* x = (K + N lambda I)^-1 x in place, with a fresh copy of K. */
static int solve_damped_gram(const double* G, int N, int64_t d, double lambda, double* K,
                             double* x) {
    fngd_ref_gram(G, N, d, K);
    for (int i = 0; i < N; ++i) K[(int64_t)i * N + i] += N * lambda;
    return fngd_ref_cholesky_solve(K, N, x);
}

int fngd_ref_coefficients(const double* G, int N, int64_t d, double lambda, const double* r,
                          int range_filter, double* alpha) {
    double* K = (double*)malloc((size_t)N * N * sizeof(double));
    double* x = (double*)malloc((size_t)N * sizeof(double));
    double* y = (double*)calloc((size_t)N, sizeof(double));
    int rc = -1;
    if (!K || !x || !y) goto done;
    for (int i = 0; i < N; ++i) x[i] = r ? r[i] : 1.0;
    if (solve_damped_gram(G, N, d, lambda, K, x) != 0) goto done;
    if (range_filter) { /* y = K x, then x = (K + N lambda I)^-1 y */
        fngd_ref_gram(G, N, d, K);
        for (int i = 0; i < N; ++i)
            for (int j = 0; j < N; ++j) y[i] += K[(int64_t)i * N + j] * x[j];
        memcpy(x, y, (size_t)N * sizeof(double));
        if (solve_damped_gram(G, N, d, lambda, K, x) != 0) goto done;
    }
    for (int i = 0; i < N; ++i) alpha[i] = x[i];
    rc = 0;
done:
    free(K);
    free(x);
    free(y);
    return rc;
}

void fngd_ref_weighted_sum(const double* G, int N, int64_t d, const double* alpha,
                           double* delta) {
    for (int64_t a = 0; a < d; ++a) delta[a] = 0.0;
    for (int i = 0; i < N; ++i)
        for (int64_t a = 0; a < d; ++a) delta[a] += alpha[i] * G[(int64_t)i * d + a];
}

void fngd_ref_sgd(double* param, const double* dir, double* mom, int64_t n, double lr,
                  double momentum, double weight_decay) {
    for (int64_t k = 0; k < n; ++k) {
        double g = dir[k] + weight_decay * param[k];
        mom[k] = momentum * mom[k] + g;
        param[k] -= lr * mom[k];
    }
}
