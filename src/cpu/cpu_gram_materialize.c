/* Materialising Gram of a LINEAR or CONV2D layer (METHOD.md section 4): per-sample gradients
 * P_i = E_i^T [A_i 1] (q x pa, bias column = sums of E_i), then K += P P^T with one SYRK.
 * Output channels are processed in chunks of plan->chunk, so the workspace holds
 * N x chunk x pa floats rather than all N x q x pa; the Gram is additive over channels. */
#include <cblas.h>

#include "cpu_internal.h"

fngd_status_t cpu_gram_materialize(const fngd_layer_t* layer, const fngd_layer_batch_t* batch,
                                   int N, float scale, float* K, int accumulate,
                                   const cpu_plan_t* plan, void* ws) {
    const int T = layer->T, p = layer->p, pa = layer->pa, q = layer->q;
    const int bias = pa > p;
    const int conv = layer->kind == FNGD_LAYER_CONV2D;
    const int qc = plan->chunk;
    cpu_ws_t w = {(char*)ws};
    float* cols = conv ? cpu_ws_take(&w, (size_t)T * p) : NULL;
    float* ones = bias ? cpu_ws_take(&w, (size_t)T) : NULL;
    float* P = cpu_ws_take(&w, (size_t)N * qc * pa);
    if (ones) cpu_fill(ones, (size_t)T, 1.0f);

    for (int o0 = 0; o0 < q; o0 += qc) {
        const int nc = q - o0 < qc ? q - o0 : qc;
        const int ld = nc * pa; /* one sample's chunk of gradient rows, contiguous */
        for (int i = 0; i < N; ++i) {
            float* Pi = P + (int64_t)i * ld;
            if (conv) {
                /* E_i is q x T (NCHW grad_output): rows o0.. of it times the patches. */
                const float* Ei = batch->grad_output + ((int64_t)i * q + o0) * T;
                cpu_im2col(layer, batch->input, i, 1, cols);
                cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasNoTrans, nc, p, T, 1.0f, Ei, T,
                            cols, p, 0.0f, Pi, pa);
                if (bias)
                    cblas_sgemv(CblasRowMajor, CblasNoTrans, nc, T, 1.0f, Ei, T, ones, 1, 0.0f,
                                Pi + p, pa);
            } else {
                /* E_i is T x q, A_i = input rows T x p. */
                const float* Ei = batch->grad_output + (int64_t)i * T * q + o0;
                const float* Ai = batch->input + (int64_t)i * T * p;
                cblas_sgemm(CblasRowMajor, CblasTrans, CblasNoTrans, nc, p, T, 1.0f, Ei, q, Ai,
                            p, 0.0f, Pi, pa);
                if (bias)
                    cblas_sgemv(CblasRowMajor, CblasTrans, T, nc, 1.0f, Ei, q, ones, 1, 0.0f,
                                Pi + p, pa);
            }
        }
        const float beta = (o0 == 0 && !accumulate) ? 0.0f : 1.0f;
        cblas_ssyrk(CblasRowMajor, CblasUpper, CblasNoTrans, N, ld, scale * scale, P, ld, beta,
                    K, N);
    }
    cpu_mirror_upper(K, N);
    return FNGD_SUCCESS;
}
