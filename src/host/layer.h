/* Layer geometry shared by the host logic and every backend: what a layer looks like as the
 * matrix product of METHOD.md section 4 (T positions, p inputs per position, q outputs). */
#ifndef FNGD_HOST_LAYER_H
#define FNGD_HOST_LAYER_H

#include "fngd.h"

#ifdef __cplusplus
extern "C" {
#endif

typedef struct fngd_layer {
    fngd_layer_desc_t desc;   /* the caller's descriptor (buffers included) */
    fngd_layer_kind_t kind;
    int T;                    /* positions per sample (1, tokens, H_out*W_out, norm positions) */
    int p;                    /* inputs per position without the bias column (C_in/groups*kh*kw) */
    int pa;                   /* p plus one when a bias column of ones is appended */
    int q;                    /* outputs per position */
    int out_h, out_w;         /* CONV2D output size */
    int groups;               /* CONV2D groups (>= 1; 1 for every other kind) */
    int cols;                 /* CONV2D im2col row length C_in*kh*kw = groups * p (else p) */
    int64_t in_per_sample;    /* floats of `input` per sample */
    int64_t out_per_sample;   /* floats of `grad_output` per sample (0 for GENERIC) */
    int64_t n_weight;         /* floats in weight / grad_weight */
    int64_t n_bias;           /* floats in bias / grad_bias (0 if none) */
    int64_t grad_len;         /* per-sample gradient length: n_weight + n_bias */
    fngd_gram_method_t method;/* resolved: MATERIALIZE or POSITION */
    /* Backend memory owned by the handle, allocated at prepare time. */
    float* momentum;          /* grad_len floats (APPLY_SGD with momentum), weight then bias */
    float* direction;         /* grad_len floats (APPLY_SGD): the direction before the update */
} fngd_layer_t;

/* Fill the geometry of `layer` from `desc`; returns INVALID_ARGUMENT with a message in `msg`
 * (at least 256 bytes) when the descriptor is inconsistent. */
fngd_status_t fngd_layer_init(fngd_layer_t* layer, const fngd_layer_desc_t* desc, char* msg,
                              size_t msg_len);

/* Flop and byte estimates of the two exact Gram methods for a batch of N (METHOD.md sec. 4). */
double fngd_gram_flops(const fngd_layer_t* layer, int N, fngd_gram_method_t method);
double fngd_gram_bytes(const fngd_layer_t* layer, int N, fngd_gram_method_t method);
/* The cost model: the cheaper exact method whose memory fits under max_bytes. NORM_AFFINE and
 * GENERIC layers always materialise (their per-sample gradients are given or trivial). */
fngd_gram_method_t fngd_choose_gram_method(const fngd_layer_t* layer, int N, size_t max_bytes);

#ifdef __cplusplus
}
#endif

#endif
