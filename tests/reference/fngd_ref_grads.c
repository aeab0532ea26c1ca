/* Reference per-sample gradients of each layer kind, each from its defining sum. */
#include <string.h>

#include "fngd_reference.h"

/* Output size of one convolution axis; -1 for invalid parameters, 0 for an empty output. */
static int64_t conv_axis(int in, int k, int stride, int pad, int dil) {
    if (in <= 0 || k <= 0 || stride <= 0 || pad < 0 || dil <= 0) return -1;
    int64_t span = (int64_t)dil * (k - 1) + 1;
    int64_t room = (int64_t)in + 2 * (int64_t)pad - span;
    if (room < 0) return 0;
    return room / stride + 1;
}

int fngd_ref_geometry(const fngd_layer_desc_t* d, fngd_ref_geom_t* g) {
    memset(g, 0, sizeof(*g));
    switch (d->kind) {
    case FNGD_LAYER_LINEAR:
        if (d->in_features <= 0 || d->out_features <= 0 || d->positions <= 0) return -1;
        g->T = d->positions;
        g->in_per_sample = (int64_t)g->T * d->in_features;
        g->out_per_sample = (int64_t)g->T * d->out_features;
        g->n_weight = (int64_t)d->out_features * d->in_features;
        g->n_bias = d->has_bias ? d->out_features : 0;
        break;
    case FNGD_LAYER_CONV2D: {
        if (d->in_channels <= 0 || d->out_channels <= 0 || d->groups < 0) return -1;
        int groups = d->groups > 1 ? d->groups : 1;
        if (d->in_channels % groups || d->out_channels % groups) return -1;
        int64_t oh = conv_axis(d->in_h, d->kernel_h, d->stride_h, d->pad_h, d->dilation_h);
        int64_t ow = conv_axis(d->in_w, d->kernel_w, d->stride_w, d->pad_w, d->dilation_w);
        if (oh <= 0 || ow <= 0) return -1;
        g->out_h = (int)oh;
        g->out_w = (int)ow;
        g->T = (int)(oh * ow);
        g->in_per_sample = (int64_t)d->in_channels * d->in_h * d->in_w;
        g->out_per_sample = (int64_t)d->out_channels * g->T;
        g->n_weight =
            (int64_t)d->out_channels * (d->in_channels / groups) * d->kernel_h * d->kernel_w;
        g->n_bias = d->has_bias ? d->out_channels : 0;
        break;
    }
    case FNGD_LAYER_NORM_AFFINE:
        if (d->num_features <= 0 || d->norm_positions <= 0) return -1;
        g->T = d->norm_positions;
        g->in_per_sample = (int64_t)d->num_features * g->T;
        g->out_per_sample = g->in_per_sample;
        g->n_weight = d->num_features;
        g->n_bias = d->has_bias ? d->num_features : 0;
        break;
    case FNGD_LAYER_EMBEDDING:
        if (d->num_embeddings <= 0 || d->embedding_dim <= 0 || d->positions <= 0) return -1;
        g->T = d->positions;
        g->in_per_sample = 2 * (int64_t)g->T; /* int64 ids in float-sized words */
        g->out_per_sample = (int64_t)g->T * d->embedding_dim;
        g->n_weight = (int64_t)d->num_embeddings * d->embedding_dim;
        g->n_bias = 0;
        break;
    case FNGD_LAYER_GENERIC:
        if (d->num_params <= 0) return -1;
        g->T = 1;
        g->in_per_sample = d->num_params;
        g->out_per_sample = 0;
        g->n_weight = d->num_params;
        g->n_bias = 0;
        break;
    default:
        return -1;
    }
    g->grad_len = g->n_weight + g->n_bias;
    return 0;
}

/* g[o*in + k] = sum_t e[t,o] x[t,k];  g[n_weight + o] = sum_t e[t,o]. */
static void linear_grad(const fngd_layer_desc_t* d, const fngd_ref_geom_t* geo, const float* x,
                        const float* e, double scale, double* g) {
    int in = d->in_features, out = d->out_features, T = geo->T;
    for (int o = 0; o < out; ++o) {
        for (int k = 0; k < in; ++k) {
            double s = 0.0;
            for (int t = 0; t < T; ++t) s += (double)e[(int64_t)t * out + o] * x[(int64_t)t * in + k];
            g[(int64_t)o * in + k] = scale * s;
        }
        if (d->has_bias) {
            double s = 0.0;
            for (int t = 0; t < T; ++t) s += e[(int64_t)t * out + o];
            g[geo->n_weight + o] = scale * s;
        }
    }
}

/* g[((o*Cg + c)*kh + ki)*kw + kj] = sum over output positions (oh, ow) of
 *   dy[o, oh, ow] * x[grp(o)*Cg + c, oh*stride_h - pad_h + ki*dil_h, ow*stride_w - pad_w + kj*dil_w]
 * with x = 0 outside the image (zero padding), Cg = C_in / groups input channels per group and
 * grp(o) = o / (C_out / groups) the group of output channel o (PyTorch's grouped convolution:
 * y[o] = sum over the Cg channels of its group only). Bias: sum of dy[o, :, :]. */
static void conv_grad(const fngd_layer_desc_t* d, const fngd_ref_geom_t* geo, const float* x,
                      const float* dy, double scale, double* g) {
    int groups = d->groups > 1 ? d->groups : 1;
    int Ci = d->in_channels, Co = d->out_channels, H = d->in_h, W = d->in_w;
    int Cg = Ci / groups, Cog = Co / groups;
    int kh = d->kernel_h, kw = d->kernel_w, OH = geo->out_h, OW = geo->out_w;
    for (int o = 0; o < Co; ++o) {
        const float* dyo = dy + (int64_t)o * OH * OW;
        int grp = o / Cog;
        for (int c = 0; c < Cg; ++c) {
            const float* xc = x + (int64_t)(grp * Cg + c) * H * W;
            for (int ki = 0; ki < kh; ++ki) {
                for (int kj = 0; kj < kw; ++kj) {
                    double s = 0.0;
                    for (int oh = 0; oh < OH; ++oh) {
                        int h = oh * d->stride_h - d->pad_h + ki * d->dilation_h;
                        if (h < 0 || h >= H) continue;
                        for (int ow = 0; ow < OW; ++ow) {
                            int w = ow * d->stride_w - d->pad_w + kj * d->dilation_w;
                            if (w < 0 || w >= W) continue;
                            s += (double)dyo[oh * OW + ow] * xc[(int64_t)h * W + w];
                        }
                    }
                    g[(((int64_t)o * Cg + c) * kh + ki) * kw + kj] = scale * s;
                }
            }
        }
        if (d->has_bias) {
            double s = 0.0;
            for (int t = 0; t < OH * OW; ++t) s += dyo[t];
            g[geo->n_weight + o] = scale * s;
        }
    }
}

/* gamma_c: sum_t dy[c,t] * xhat[c,t];  beta_c: sum_t dy[c,t] (NCT or NTC layout). */
static void norm_grad(const fngd_layer_desc_t* d, const fngd_ref_geom_t* geo, const float* xh,
                      const float* dy, double scale, double* g) {
    int C = d->num_features, T = geo->T;
    for (int c = 0; c < C; ++c) {
        double sg = 0.0, sb = 0.0;
        for (int t = 0; t < T; ++t) {
            int64_t at = d->channels_last ? (int64_t)t * C + c : (int64_t)c * T + t;
            sg += (double)dy[at] * xh[at];
            sb += dy[at];
        }
        g[c] = scale * sg;
        if (d->has_bias) g[C + c] = scale * sb;
    }
}

int fngd_ref_per_sample_grads(const fngd_layer_desc_t* desc, int N, const float* input,
                              const float* grad_output, double scale, double* G, int64_t ld,
                              int64_t col0) {
    fngd_ref_geom_t geo;
    if (fngd_ref_geometry(desc, &geo) != 0) return -1;
    for (int i = 0; i < N; ++i) {
        const float* x = input + (int64_t)i * geo.in_per_sample;
        const float* e = grad_output ? grad_output + (int64_t)i * geo.out_per_sample : NULL;
        double* g = G + (int64_t)i * ld + col0;
        switch (desc->kind) {
        case FNGD_LAYER_LINEAR: linear_grad(desc, &geo, x, e, scale, g); break;
        case FNGD_LAYER_CONV2D: conv_grad(desc, &geo, x, e, scale, g); break;
        case FNGD_LAYER_NORM_AFFINE: norm_grad(desc, &geo, x, e, scale, g); break;
        case FNGD_LAYER_GENERIC:
            for (int64_t k = 0; k < geo.n_weight; ++k) g[k] = scale * x[k];
            break;
        case FNGD_LAYER_EMBEDDING: {
            /* the dense V x D gradient: row v = sum of e_t over the tokens t with id v (ids < 0
             * are padding and contribute nothing) */
            const int64_t* ids = (const int64_t*)(const void*)x;
            const int D = desc->embedding_dim;
            for (int64_t k = 0; k < geo.n_weight; ++k) g[k] = 0.0;
            for (int t = 0; t < geo.T; ++t) {
                if (ids[t] < 0) continue;
                for (int c = 0; c < D; ++c) g[ids[t] * D + c] += scale * e[(int64_t)t * D + c];
            }
            break;
        }
        }
    }
    return 0;
}
