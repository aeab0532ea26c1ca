#include "layer.h"

#include <stdio.h>
#include <string.h>

#define FITS_INT(x) ((x) > 0 && (x) <= 0x7fffffff)

static fngd_status_t bad(char* msg, size_t len, const char* what) {
    snprintf(msg, len, "invalid layer descriptor: %s", what);
    return FNGD_ERROR_INVALID_ARGUMENT;
}

static fngd_status_t init_linear(fngd_layer_t* l, const fngd_layer_desc_t* d, char* m, size_t n) {
    if (d->in_features <= 0 || d->out_features <= 0)
        return bad(m, n, "LINEAR needs in_features > 0 and out_features > 0");
    if (d->positions <= 0) return bad(m, n, "LINEAR needs positions >= 1");
    l->T = d->positions;
    l->p = d->in_features;
    l->groups = 1;
    l->cols = l->p;
    l->q = d->out_features;
    l->in_per_sample = (int64_t)l->T * l->p;
    l->out_per_sample = (int64_t)l->T * l->q;
    return FNGD_SUCCESS;
}

static fngd_status_t init_conv2d(fngd_layer_t* l, const fngd_layer_desc_t* d, char* m, size_t n) {
    if (d->in_channels <= 0 || d->out_channels <= 0 || d->in_h <= 0 || d->in_w <= 0)
        return bad(m, n, "CONV2D needs in_channels, out_channels, in_h, in_w > 0");
    if (d->kernel_h <= 0 || d->kernel_w <= 0 || d->stride_h <= 0 || d->stride_w <= 0 ||
        d->dilation_h <= 0 || d->dilation_w <= 0)
        return bad(m, n, "CONV2D needs kernel, stride and dilation > 0");
    if (d->pad_h < 0 || d->pad_w < 0) return bad(m, n, "CONV2D needs padding >= 0");
    if (d->groups < 0) return bad(m, n, "CONV2D needs groups >= 0 (0 or 1: ungrouped)");
    const int G = d->groups > 1 ? d->groups : 1;
    if (d->in_channels % G != 0 || d->out_channels % G != 0)
        return bad(m, n, "CONV2D needs in_channels and out_channels divisible by groups");
    int64_t eff_h = (int64_t)d->dilation_h * (d->kernel_h - 1) + 1;
    int64_t eff_w = (int64_t)d->dilation_w * (d->kernel_w - 1) + 1;
    int64_t span_h = (int64_t)d->in_h + 2 * (int64_t)d->pad_h - eff_h;
    int64_t span_w = (int64_t)d->in_w + 2 * (int64_t)d->pad_w - eff_w;
    if (span_h < 0 || span_w < 0)
        return bad(m, n, "CONV2D kernel (with dilation) is larger than the padded input");
    l->out_h = (int)(span_h / d->stride_h + 1);
    l->out_w = (int)(span_w / d->stride_w + 1);
    int64_t T = (int64_t)l->out_h * l->out_w;
    int64_t cols = (int64_t)d->in_channels * d->kernel_h * d->kernel_w;
    if (!FITS_INT(T) || !FITS_INT(cols)) return bad(m, n, "CONV2D sizes overflow");
    l->T = (int)T;
    l->groups = G;
    l->cols = (int)cols;
    l->p = (int)(cols / G);
    l->q = d->out_channels;
    l->in_per_sample = (int64_t)d->in_channels * d->in_h * d->in_w;
    l->out_per_sample = (int64_t)l->q * l->T;
    return FNGD_SUCCESS;
}

static fngd_status_t init_norm(fngd_layer_t* l, const fngd_layer_desc_t* d, char* m, size_t n) {
    if (d->num_features <= 0) return bad(m, n, "NORM_AFFINE needs num_features > 0");
    if (d->norm_positions <= 0) return bad(m, n, "NORM_AFFINE needs norm_positions >= 1");
    if (d->channels_last != 0 && d->channels_last != 1)
        return bad(m, n, "NORM_AFFINE channels_last must be 0 or 1");
    l->T = d->norm_positions;
    l->p = 1;
    l->groups = 1;
    l->cols = 1;
    l->q = d->num_features;
    l->in_per_sample = (int64_t)l->T * l->q;
    l->out_per_sample = l->in_per_sample;
    return FNGD_SUCCESS;
}

static fngd_status_t init_generic(fngd_layer_t* l, const fngd_layer_desc_t* d, char* m, size_t n) {
    if (d->num_params <= 0) return bad(m, n, "GENERIC needs num_params > 0");
    if (d->has_bias) return bad(m, n, "GENERIC has no bias (put every parameter in weight)");
    l->T = 1;
    l->p = 1;
    l->groups = 1;
    l->cols = 1;
    l->q = 1;
    l->in_per_sample = d->num_params;
    l->out_per_sample = 0;
    return FNGD_SUCCESS;
}

static fngd_status_t init_embedding(fngd_layer_t* l, const fngd_layer_desc_t* d, char* m,
                                    size_t n) {
    if (d->num_embeddings <= 0 || d->embedding_dim <= 0)
        return bad(m, n, "EMBEDDING needs num_embeddings > 0 and embedding_dim > 0");
    if (d->positions <= 0) return bad(m, n, "EMBEDDING needs positions (tokens) >= 1");
    if (d->has_bias) return bad(m, n, "EMBEDDING has no bias");
    if ((int64_t)d->num_embeddings * d->embedding_dim > 0x7fffffff)
        return bad(m, n, "EMBEDDING table exceeds 2^31 - 1 floats");
    l->T = d->positions;
    l->p = 1;
    l->groups = 1;
    l->cols = 1;
    l->q = d->embedding_dim;
    l->in_per_sample = 2 * (int64_t)l->T; /* int64 ids, counted in float-sized words */
    l->out_per_sample = (int64_t)l->T * l->q;
    return FNGD_SUCCESS;
}

fngd_status_t fngd_layer_init(fngd_layer_t* layer, const fngd_layer_desc_t* desc, char* msg,
                              size_t msg_len) {
    memset(layer, 0, sizeof *layer);
    if (desc->has_bias != 0 && desc->has_bias != 1) return bad(msg, msg_len, "has_bias must be 0 or 1");
    if (desc->gram_method < FNGD_GRAM_AUTO || desc->gram_method > FNGD_GRAM_POSITION)
        return bad(msg, msg_len, "unknown gram_method");
    fngd_status_t s;
    switch (desc->kind) {
        case FNGD_LAYER_LINEAR: s = init_linear(layer, desc, msg, msg_len); break;
        case FNGD_LAYER_CONV2D: s = init_conv2d(layer, desc, msg, msg_len); break;
        case FNGD_LAYER_NORM_AFFINE: s = init_norm(layer, desc, msg, msg_len); break;
        case FNGD_LAYER_GENERIC: s = init_generic(layer, desc, msg, msg_len); break;
        case FNGD_LAYER_EMBEDDING: s = init_embedding(layer, desc, msg, msg_len); break;
        default: return bad(msg, msg_len, "unknown layer kind");
    }
    if (s != FNGD_SUCCESS) return s;
    layer->desc = *desc;
    layer->kind = desc->kind;
    layer->pa = layer->p + (desc->has_bias ? 1 : 0);
    if (desc->kind == FNGD_LAYER_GENERIC) {
        layer->n_weight = desc->num_params;
        layer->n_bias = 0;
    } else if (desc->kind == FNGD_LAYER_EMBEDDING) {
        layer->n_weight = (int64_t)desc->num_embeddings * desc->embedding_dim;
        layer->n_bias = 0;
    } else if (desc->kind == FNGD_LAYER_NORM_AFFINE) {
        layer->n_weight = layer->q;
        layer->n_bias = desc->has_bias ? layer->q : 0;
    } else {
        layer->n_weight = (int64_t)layer->q * layer->p;
        layer->n_bias = desc->has_bias ? layer->q : 0;
    }
    layer->grad_len = layer->n_weight + layer->n_bias;
    layer->method = desc->gram_method;
    return FNGD_SUCCESS;
}

/* METHOD.md section 4. Materialise: per-sample gradients with a batched GEMM (2*N*T*pa*q)
 * then K = P P^T (N^2*pa*q). Position: A A^T and E E^T over N*T rows ((N*T)^2*(pa+q));
 * a grouped conv forms them per group ((N*T)^2*(G*pa + q), G Hadamard reductions). */
double fngd_gram_flops(const fngd_layer_t* l, int N, fngd_gram_method_t method) {
    double n = N, t = l->T, pa = l->pa, q = l->q, g = l->groups;
    if (l->kind == FNGD_LAYER_EMBEDDING) /* sort the N*T ids; pairs of equal ids (<= (NT)^2) */
        return n * t * 20.0 + n * t * q * (1.0 + n * t / (double)l->desc.num_embeddings);
    if (l->kind == FNGD_LAYER_GENERIC || l->kind == FNGD_LAYER_NORM_AFFINE)
        return 2.0 * n * t * (double)l->grad_len + n * n * (double)l->grad_len;
    if (method == FNGD_GRAM_POSITION) return (n * t) * (n * t) * (g * pa + q);
    return 2.0 * n * t * pa * q + n * n * pa * q;
}

/* Memory the method needs at full size (backends may chunk to stay below a cap). */
double fngd_gram_bytes(const fngd_layer_t* l, int N, fngd_gram_method_t method) {
    double n = N, t = l->T;
    if (l->kind == FNGD_LAYER_EMBEDDING) return 4.0 * n * t * (l->q + 4.0);
    if (method == FNGD_GRAM_POSITION && l->kind != FNGD_LAYER_GENERIC &&
        l->kind != FNGD_LAYER_NORM_AFFINE)
        return 4.0 * (2.0 * (n * t) * (n * t) + n * t * (l->cols + (l->pa - l->p) + l->q));
    return 4.0 * n * (double)l->grad_len;
}

fngd_gram_method_t fngd_choose_gram_method(const fngd_layer_t* l, int N, size_t max_bytes) {
    if (l->kind == FNGD_LAYER_GENERIC || l->kind == FNGD_LAYER_NORM_AFFINE ||
        l->kind == FNGD_LAYER_EMBEDDING)
        return FNGD_GRAM_MATERIALIZE;
    if (l->desc.gram_method != FNGD_GRAM_AUTO) return l->desc.gram_method;
    double fm = fngd_gram_flops(l, N, FNGD_GRAM_MATERIALIZE);
    double fp = fngd_gram_flops(l, N, FNGD_GRAM_POSITION);
    int pos_fits = fngd_gram_bytes(l, N, FNGD_GRAM_POSITION) <= (double)max_bytes;
    int mat_fits = fngd_gram_bytes(l, N, FNGD_GRAM_MATERIALIZE) <= (double)max_bytes;
    /* Both backends chunk when a method does not fit, so memory only breaks ties of cost:
     * prefer the cheaper method among those that fit, else the cheaper one outright. */
    if (pos_fits != mat_fits) return pos_fits ? FNGD_GRAM_POSITION : FNGD_GRAM_MATERIALIZE;
    return fp < fm ? FNGD_GRAM_POSITION : FNGD_GRAM_MATERIALIZE;
}
