/* Materialising Gram of a LINEAR or CONV2D layer (METHOD.md section 4): per-sample gradients
 * P_i = E_i^T [A_i 1] (q x pa, bias column = sums of E_i), then K += P P^T with one SYRK.
 * Output channels are processed in chunks of plan->chunk, so the workspace holds
 * N x chunk x pa floats rather than all N x q x pa; the Gram is additive over channels.
 * A grouped conv runs its groups one after the other (chunks stay inside a group): output
 * channel o of group g multiplies E_i's row o with group g's columns of the patches. */
#include <cblas.h>

#include "cpu_internal.h"

fngd_status_t cpu_gram_materialize(const fngd_layer_t* layer, const fngd_layer_batch_t* batch,
                                   int N, float scale, float* K, int accumulate,
                                   const cpu_plan_t* plan, void* ws) {
    const int T = layer->T, p = layer->p, pa = layer->pa, q = layer->q;
    const int G = layer->groups, qg = q / G, ldc = layer->cols;
    const int bias = pa > p;
    const int conv = layer->kind == FNGD_LAYER_CONV2D;
    const int qc = plan->chunk; /* at most qg: a chunk never spans two groups */
    cpu_ws_t w = {(char*)ws};
    float* cols = conv ? cpu_ws_take(&w, (size_t)T * ldc) : NULL;
    float* ones = bias ? cpu_ws_take(&w, (size_t)T) : NULL;
    float* P = cpu_ws_take(&w, (size_t)N * qc * pa);
    if (ones) cpu_fill(ones, (size_t)T, 1.0f);

    int first = 1;
    for (int g = 0; g < G; ++g) {
        for (int o0 = g * qg; o0 < (g + 1) * qg; o0 += qc) {
            const int nc = (g + 1) * qg - o0 < qc ? (g + 1) * qg - o0 : qc;
            const int ld = nc * pa; /* one sample's chunk of gradient rows, contiguous */
            for (int i = 0; i < N; ++i) {
                float* Pi = P + (int64_t)i * ld;
                if (conv) {
                    /* E_i is q x T (NCHW grad_output): rows o0.. of it times the patches of
                     * group g (columns g*p.. of the im2col rows). */
                    const float* Ei = batch->grad_output + ((int64_t)i * q + o0) * T;
                    cpu_im2col(layer, batch->input, i, 1, cols);
                    cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasNoTrans, nc, p, T, 1.0f, Ei, T,
                                cols + (int64_t)g * p, ldc, 0.0f, Pi, pa);
                    if (bias)
                        cblas_sgemv(CblasRowMajor, CblasNoTrans, nc, T, 1.0f, Ei, T, ones, 1,
                                    0.0f, Pi + p, pa);
                } else {
                    /* E_i is T x q, A_i = input rows T x p. */
                    const float* Ei = batch->grad_output + (int64_t)i * T * q + o0;
                    const float* Ai = batch->input + (int64_t)i * T * p;
                    cblas_sgemm(CblasRowMajor, CblasTrans, CblasNoTrans, nc, p, T, 1.0f, Ei, q,
                                Ai, p, 0.0f, Pi, pa);
                    if (bias)
                        cblas_sgemv(CblasRowMajor, CblasTrans, T, nc, 1.0f, Ei, q, ones, 1, 0.0f,
                                    Pi + p, pa);
                }
            }
            const float beta = (first && !accumulate) ? 0.0f : 1.0f;
            first = 0;
            cblas_ssyrk(CblasRowMajor, CblasUpper, CblasNoTrans, N, ld, scale * scale, P, ld,
                        beta, K, N);
        }
    }
    cpu_mirror_upper(K, N);
    return FNGD_SUCCESS;
}
