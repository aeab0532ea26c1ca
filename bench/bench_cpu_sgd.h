/* The SGD baseline of the CPU step benchmark: the plain weight gradient of one LINEAR or
 * CONV2D layer from its input and output gradient, computed as a framework's CPU backend does
 * (im2col, then one SGEMM over all N*T rows; bias as a column sum), then the momentum update.
 * It uses the CPU backend's own im2col and gradient-transpose helpers and the same BLAS, so the
 * ratios compare the FNGD step with an equally fast plain one (no weaker baseline). */
#ifndef FNGD_BENCH_CPU_SGD_H
#define FNGD_BENCH_CPU_SGD_H

#include <stdint.h>

#include "fngd.h"
#include "layer.h"

typedef struct bench_sgd {
    fngd_layer_desc_t desc;
    fngd_layer_t layer;         /* the library's geometry of the layer */
    int N, T, p, q, out_h, out_w;
    float *col, *erows, *ones;  /* workspace: patches (N*T x p), E as rows (N*T x q), ones */
    float *weight, *bias;       /* parameters (q x p, q) */
    float *grad_w, *grad_b;     /* plain gradients */
    float *mom_w, *mom_b;       /* momentum */
} bench_sgd_t;

/* Allocate for batches of N (LINEAR or CONV2D descs only). Returns 0 on success. */
int bench_sgd_init(bench_sgd_t* s, const fngd_layer_desc_t* desc, int N);
/* One step: gradients from input/grad_output (PyTorch layouts, as fngd_step takes them),
 * then mom = momentum*mom + grad; param -= lr*mom. */
void bench_sgd_step(bench_sgd_t* s, const float* input, const float* grad_output, float lr,
                    float momentum);
void bench_sgd_free(bench_sgd_t* s);

/* Floats per sample of the layer's input and output gradient. */
int64_t bench_layer_in_floats(const fngd_layer_desc_t* d);
int64_t bench_layer_out_floats(const fngd_layer_desc_t* d);

#endif
