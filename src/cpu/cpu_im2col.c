/* Layout helpers: convolution patches (im2col), grad_output rows, fills, symmetric mirror.
 * A patch row holds the taps of all C_in channels (layer->cols floats); group g of a grouped
 * conv is its column range [g*p, (g+1)*p), read with leading dimension cols.
 * Plain loops; all the arithmetic of the backend happens in BLAS on what these produce. */
#include <string.h>

#include "cpu_internal.h"

#if defined(__GNUC__) || defined(__clang__)
#define CPU_ALWAYS_INLINE static inline __attribute__((always_inline))
#else
#define CPU_ALWAYS_INLINE static inline
#endif

/* Any stride and dilation: a bounds test per tap. */
static void im2col_general(const fngd_layer_t* layer, const float* input, int i0, int nb,
                           float* out) {
    const fngd_layer_desc_t* d = &layer->desc;
    const int C = d->in_channels, H = d->in_h, W = d->in_w;
    const int kh = d->kernel_h, kw = d->kernel_w;
    const int oh_n = layer->out_h, ow_n = layer->out_w;
    const int64_t p = layer->cols, T = layer->T; /* row: all C_in channels' taps */
    for (int i = 0; i < nb; ++i) {
        const float* x = input + (int64_t)(i0 + i) * C * H * W;
        for (int oh = 0; oh < oh_n; ++oh) {
            for (int ow = 0; ow < ow_n; ++ow) {
                float* row = out + ((int64_t)i * T + (int64_t)oh * ow_n + ow) * p;
                const int h0 = oh * d->stride_h - d->pad_h;
                const int w0 = ow * d->stride_w - d->pad_w;
                for (int c = 0; c < C; ++c) {
                    const float* xc = x + (int64_t)c * H * W;
                    for (int ki = 0; ki < kh; ++ki) {
                        const int h = h0 + ki * d->dilation_h;
                        float* dst = row + ((int64_t)c * kh + ki) * kw;
                        if (h < 0 || h >= H) {
                            memset(dst, 0, (size_t)kw * sizeof(float));
                            continue;
                        }
                        for (int kj = 0; kj < kw; ++kj) {
                            const int w = w0 + kj * d->dilation_w;
                            dst[kj] = (w >= 0 && w < W) ? xc[(int64_t)h * W + w] : 0.0f;
                        }
                    }
                }
            }
        }
    }
}

/* Stride 1, dilation 1: the kw taps of a window row are kw consecutive input floats. Per
 * output row oh the window rows inside the image are ki in [ki_lo, ki_hi), the others are
 * zeros; per output column, a window clear of the left/right padding copies each row as one
 * run, and only the few columns that overlap the padding clip tap by tap. The output is
 * written sequentially. Inlined with kw as a constant for the common kernel widths. */
CPU_ALWAYS_INLINE void im2col_unit_kw(const fngd_layer_t* layer, const float* input, int i0,
                                      int nb, float* out, const int kw) {
    const fngd_layer_desc_t* d = &layer->desc;
    const int C = d->in_channels, H = d->in_h, W = d->in_w, kh = d->kernel_h;
    const int oh_n = layer->out_h, ow_n = layer->out_w;
    const int64_t HW = (int64_t)H * W;
    float* dst = out;
    for (int i = 0; i < nb; ++i) {
        const float* x = input + (int64_t)(i0 + i) * C * HW;
        for (int oh = 0; oh < oh_n; ++oh) {
            const int h0 = oh - d->pad_h;
            int ki_lo = h0 < 0 ? -h0 : 0, ki_hi = H - h0 < kh ? H - h0 : kh;
            if (ki_lo > kh) ki_lo = kh;
            if (ki_hi < ki_lo) ki_hi = ki_lo;
            for (int ow = 0; ow < ow_n; ++ow) {
                const int w0 = ow - d->pad_w;
                const int inside = w0 >= 0 && w0 + kw <= W;
                for (int c = 0; c < C; ++c) {
                    const float* xc = x + c * HW;
                    for (int ki = 0; ki < kh; ++ki, dst += kw) {
                        /* kw stores, not memset: a libc call per 3 floats costs more */
                        if (ki < ki_lo || ki >= ki_hi) {
                            for (int kj = 0; kj < kw; ++kj) dst[kj] = 0.0f;
                            continue;
                        }
                        const float* src = xc + (int64_t)(h0 + ki) * W;
                        if (inside) {
                            for (int kj = 0; kj < kw; ++kj) dst[kj] = src[w0 + kj];
                        } else {
                            for (int kj = 0; kj < kw; ++kj) {
                                const int w = w0 + kj;
                                dst[kj] = (w >= 0 && w < W) ? src[w] : 0.0f;
                            }
                        }
                    }
                }
            }
        }
    }
}

static void im2col_unit(const fngd_layer_t* layer, const float* input, int i0, int nb,
                        float* out) {
    switch (layer->desc.kernel_w) {
    case 1: im2col_unit_kw(layer, input, i0, nb, out, 1); break;
    case 3: im2col_unit_kw(layer, input, i0, nb, out, 3); break;
    case 5: im2col_unit_kw(layer, input, i0, nb, out, 5); break;
    default: im2col_unit_kw(layer, input, i0, nb, out, layer->desc.kernel_w); break;
    }
}

void cpu_im2col(const fngd_layer_t* layer, const float* input, int i0, int nb, float* out) {
    const fngd_layer_desc_t* d = &layer->desc;
    if (d->stride_h == 1 && d->stride_w == 1 && d->dilation_h == 1 && d->dilation_w == 1)
        im2col_unit(layer, input, i0, nb, out);
    else
        im2col_general(layer, input, i0, nb, out);
}

void cpu_conv_rows(const fngd_layer_t* layer, const float* grad_output, int i0, int nb,
                   const float* row_scale, float mult, float* out) {
    const int64_t T = layer->T, q = layer->q;
    for (int i = 0; i < nb; ++i) {
        const float s = row_scale ? mult * row_scale[i] : mult;
        const float* e = grad_output + (int64_t)(i0 + i) * q * T;
        float* dst = out + (int64_t)i * T * q;
        for (int64_t o = 0; o < q; ++o)
            for (int64_t t = 0; t < T; ++t) dst[t * q + o] = s * e[o * T + t];
    }
}

void cpu_fill(float* x, size_t n, float value) {
    for (size_t k = 0; k < n; ++k) x[k] = value;
}

void cpu_mirror_upper(float* K, int n) {
    for (int i = 0; i < n; ++i)
        for (int j = i + 1; j < n; ++j) K[(int64_t)j * n + i] = K[(int64_t)i * n + j];
}
