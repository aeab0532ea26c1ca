/* Position Gram of a LINEAR or CONV2D layer (METHOD.md section 4):
 *   K_ij = sum over the T x T block (i, j) of (A A^T + b) o (E E^T),
 * with b = 1 when the layer has a bias (the ones column of [A 1] adds 1 to every entry of
 * A A^T, so A is never augmented). Rows of samples are processed in chunks of plan->chunk
 * against the samples from the chunk start on (K is symmetric), so the workspace holds
 * 2 x chunk*T x N*T floats, never the full (N T)^2 matrix when it would not fit. A grouped
 * conv sums the groups' blocks: K_ij = sum_g sum (A_g A_g^T + b) o (E_g E_g^T). */
#include <cblas.h>

#include "cpu_internal.h"

fngd_status_t cpu_gram_position(const fngd_layer_t* layer, const fngd_layer_batch_t* batch,
                                int N, float scale, float* K, int accumulate,
                                const cpu_plan_t* plan, void* ws) {
    const int T = layer->T, p = layer->p, q = layer->q;
    const int G = layer->groups, qg = q / G, lda = layer->cols;
    const float b = layer->pa > layer->p ? 1.0f : 0.0f;
    const int nb = plan->chunk;
    cpu_ws_t w = {(char*)ws};
    const float* A = batch->input;       /* LINEAR: N*T x p already */
    const float* E = batch->grad_output; /* LINEAR: N*T x q already */
    if (layer->kind == FNGD_LAYER_CONV2D) {
        float* Abuf = cpu_ws_take(&w, (size_t)N * T * lda);
        float* Ebuf = cpu_ws_take(&w, (size_t)N * T * q);
        cpu_im2col(layer, batch->input, 0, N, Abuf);
        cpu_conv_rows(layer, batch->grad_output, 0, N, NULL, 1.0f, Ebuf);
        A = Abuf;
        E = Ebuf;
    }
    float* SA = cpu_ws_take(&w, (size_t)nb * T * N * T);
    float* SE = cpu_ws_take(&w, (size_t)nb * T * N * T);

    for (int i0 = 0; i0 < N; i0 += nb) {
        const int nbi = N - i0 < nb ? N - i0 : nb;
        const int rows = nbi * T, cols = (N - i0) * T;
        /* Group g: its patch columns g*p.. and its output channels g*qg.. (the bias term b
         * distributes over the groups since E E^T is the sum of the groups' E_g E_g^T). */
        for (int g = 0; g < G; ++g) {
            const float* Ai = A + (int64_t)i0 * T * lda + (int64_t)g * p;
            const float* Ei = E + (int64_t)i0 * T * q + (int64_t)g * qg;
            cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, rows, cols, p, 1.0f, Ai, lda,
                        Ai, lda, 0.0f, SA, cols);
            cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, rows, cols, qg, scale * scale,
                        Ei, q, Ei, q, 0.0f, SE, cols);
            const int add = accumulate || g > 0;
            for (int ii = 0; ii < nbi; ++ii) {
                const int i = i0 + ii;
                for (int j = i; j < N; ++j) {
                    double s = 0.0;
                    for (int t = 0; t < T; ++t) {
                        const int64_t off =
                            ((int64_t)ii * T + t) * cols + (int64_t)(j - i0) * T;
                        const float* sa = SA + off;
                        const float* se = SE + off;
                        for (int u = 0; u < T; ++u) s += (double)(sa[u] + b) * se[u];
                    }
                    float* kij = K + (int64_t)i * N + j;
                    float* kji = K + (int64_t)j * N + i;
                    *kij = (float)((add ? *kij : 0.0f) + s);
                    if (j != i) *kji = (float)((add ? *kji : 0.0f) + s);
                }
            }
        }
    }
    return FNGD_SUCCESS;
}
