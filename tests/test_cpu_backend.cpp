// Tests of the CPU reference backend (src/cpu) operation by operation, against naive double
// precision loops written here from the definitions (convolution as its explicit sum, no
// im2col, no Gram tricks).
//
// Tolerances. Every float result is a sum of products; for a sum of n terms computed in float
// in any order, |computed - exact| <= n * u * sum|terms| with u = FLT_EPSILON / 2 (Higham,
// gamma_n). We use eps = FLT_EPSILON (a factor 2 of margin) and compare against the same sum
// of absolute values, computed here in double, times eps * (length of the longest chain of
// float sums the op performs). The growth factor is stated next to each use.
#include <gtest/gtest.h>

#include <cfloat>
#include <cmath>
#include <cstring>
#include <random>
#include <string>
#include <vector>

#include "alloc.h"
#include "backend.h"
#include "backend_test_util.h"
#include "cpu/cpu_internal.h"
#include "layer.h"

using namespace fngd_test;

namespace {

const float kEps = FLT_EPSILON;

// ---- layer descriptors used throughout -------------------------------------------------------
std::vector<Case> matmul_cases() {
    std::vector<Case> c;
    fngd_layer_desc_t d = fngd_linear_desc(5, 3, 0);
    c.push_back({"linear_5x3_nobias", d});
    d = fngd_linear_desc(5, 3, 1);
    c.push_back({"linear_5x3_bias", d});
    d = fngd_linear_desc(4, 7, 1);
    d.positions = 3;
    c.push_back({"linear_tokens3_4x7_bias", d});
    d = fngd_linear_desc(6, 5, 0);
    d.positions = 2;
    c.push_back({"linear_tokens2_6x5_nobias", d});
    // stride 2, padding, dilation 2, non-square input and kernel
    c.push_back({"conv_s2_p1_d2_bias", conv_desc(2, 5, 7, 6, 3, 2, 2, 1, 1, 2, 2, 1, 1)});
    c.push_back({"conv_s12_p01_d12_nobias", conv_desc(3, 4, 5, 8, 2, 3, 1, 2, 0, 1, 1, 2, 0)});
    c.push_back({"conv_1x1_bias", conv_desc(1, 3, 4, 4, 1, 1, 1, 1, 0, 0, 1, 1, 1)});
    return c;
}

std::vector<Case> other_cases() {
    std::vector<Case> c;
    c.push_back({"norm_nchw_shift", fngd_norm_affine_desc(5, 6, 1)});
    c.push_back({"norm_nchw_noshift", fngd_norm_affine_desc(4, 3, 0)});
    fngd_layer_desc_t d = fngd_norm_affine_desc(5, 6, 1);
    d.channels_last = 1;
    c.push_back({"norm_channels_last_shift", d});
    d = fngd_norm_affine_desc(3, 7, 0);
    d.channels_last = 1;
    c.push_back({"norm_channels_last_noshift", d});
    c.push_back({"generic_11", fngd_generic_desc(11)});
    return c;
}

// ---- naive per-sample gradients from the definitions ------------------------------------------
// G: N x grad_len (scale * g_i); Gabs: the same sums over |terms| (for error bounds).
struct Naive {
    DVec G, Gabs;
    int64_t len;
};

Naive naive_grads(const fngd_layer_t& l, int N, const Vec& x, const Vec& go, double scale) {
    const fngd_layer_desc_t& d = l.desc;
    Naive r;
    r.len = l.grad_len;
    r.G.assign((size_t)N * r.len, 0.0);
    r.Gabs.assign((size_t)N * r.len, 0.0);
    auto add = [&](int i, int64_t k, double v) {
        r.G[(size_t)i * r.len + k] += scale * v;
        r.Gabs[(size_t)i * r.len + k] += std::fabs(scale * v);
    };
    for (int i = 0; i < N; ++i) {
        switch (l.kind) {
            case FNGD_LAYER_LINEAR: {
                const int T = d.positions, p = d.in_features, q = d.out_features;
                for (int t = 0; t < T; ++t)
                    for (int o = 0; o < q; ++o) {
                        const double e = go[((size_t)i * T + t) * q + o];
                        for (int k = 0; k < p; ++k)
                            add(i, (int64_t)o * p + k, e * x[((size_t)i * T + t) * p + k]);
                        if (d.has_bias) add(i, (int64_t)q * p + o, e);
                    }
                break;
            }
            case FNGD_LAYER_CONV2D: {
                const int C = d.in_channels, H = d.in_h, W = d.in_w, Co = d.out_channels;
                const int kh = d.kernel_h, kw = d.kernel_w;
                const int Ho = (H + 2 * d.pad_h - d.dilation_h * (kh - 1) - 1) / d.stride_h + 1;
                const int Wo = (W + 2 * d.pad_w - d.dilation_w * (kw - 1) - 1) / d.stride_w + 1;
                EXPECT_EQ(Ho, l.out_h);
                EXPECT_EQ(Wo, l.out_w);
                for (int o = 0; o < Co; ++o)
                    for (int oh = 0; oh < Ho; ++oh)
                        for (int ow = 0; ow < Wo; ++ow) {
                            const double e = go[(((size_t)i * Co + o) * Ho + oh) * Wo + ow];
                            for (int c = 0; c < C; ++c)
                                for (int ki = 0; ki < kh; ++ki)
                                    for (int kj = 0; kj < kw; ++kj) {
                                        const int ih =
                                            oh * d.stride_h - d.pad_h + ki * d.dilation_h;
                                        const int iw =
                                            ow * d.stride_w - d.pad_w + kj * d.dilation_w;
                                        if (ih < 0 || ih >= H || iw < 0 || iw >= W) continue;
                                        const double xv =
                                            x[(((size_t)i * C + c) * H + ih) * W + iw];
                                        add(i, (((int64_t)o * C + c) * kh + ki) * kw + kj, e * xv);
                                    }
                            if (d.has_bias) add(i, (int64_t)Co * C * kh * kw + o, e);
                        }
                break;
            }
            case FNGD_LAYER_NORM_AFFINE: {
                const int C = d.num_features, T = d.norm_positions;
                for (int c = 0; c < C; ++c)
                    for (int t = 0; t < T; ++t) {
                        const size_t k = (size_t)i * C * T +
                                         (d.channels_last ? (size_t)t * C + c : (size_t)c * T + t);
                        add(i, c, (double)go[k] * x[k]);
                        if (d.has_bias) add(i, C + c, go[k]);
                    }
                break;
            }
            case FNGD_LAYER_GENERIC:
                for (int64_t k = 0; k < r.len; ++k) add(i, k, x[(size_t)i * r.len + k]);
                break;
        }
    }
    return r;
}

DVec gram_of(const DVec& G, int N, int64_t len) {
    DVec K((size_t)N * N, 0.0);
    for (int i = 0; i < N; ++i)
        for (int j = 0; j < N; ++j) {
            double s = 0.0;
            for (int64_t k = 0; k < len; ++k) s += G[(size_t)i * len + k] * G[(size_t)j * len + k];
            K[(size_t)i * N + j] = s;
        }
    return K;
}

// Longest float summation chain of a Gram entry over both methods: per-sample sums over T,
// then the SYRK over grad_len (materialise), or S_A over p+1, S_E over q and the products
// (position); the T*T block sum is in double. Plus a few roundings of products and scalings.
double gram_growth(const fngd_layer_t& l) {
    return (double)l.T + (double)l.grad_len + (double)l.pa + (double)l.q + 8.0;
}

// ---- the backend fixture ------------------------------------------------------------------------
class CpuBackend : public ::testing::Test {
  protected:
    void SetUp() override {
        ops = fngd_cpu_backend_ops();
        ASSERT_NE(ops, nullptr);
        fngd_config_t cfg = FNGD_CONFIG_INIT;
        cfg.max_batch = 16;
        cfg.num_samples = 100;
        ASSERT_EQ(ops->create(&cfg, &ctx, &err), FNGD_SUCCESS) << err.msg;
    }
    void TearDown() override { ops->destroy(ctx); }

    // A workspace of exactly `bytes`, poisoned with NaN so reading what was never written shows,
    // followed by a canary that must survive (the op stayed inside what it asked for).
    struct Ws {
        std::vector<unsigned char> buf;
        size_t bytes;
        void* ptr() { return bytes ? buf.data() : nullptr; }
        bool canary_ok() const {
            for (size_t k = bytes; k < buf.size(); ++k)
                if (buf[k] != 0xA5) return false;
            return true;
        }
    };
    static Ws make_ws(size_t bytes) {
        Ws w;
        w.bytes = bytes;
        w.buf.resize(bytes + 256, 0xA5);
        const float nan = std::nanf("");
        for (size_t k = 0; k + sizeof(float) <= bytes; k += sizeof(float))
            std::memcpy(&w.buf[k], &nan, sizeof nan);
        return w;
    }

    const fngd_backend_ops_t* ops = nullptr;
    fngd_backend_ctx_t* ctx = nullptr;
    fngd_err_t err{};
};

// Runs layer_gram on a fresh poisoned workspace of workspace_bytes.
struct GramRun {
    fngd_status_t st;
    Vec K;
};

void expect_gram_close(const Vec& K, const DVec& Kref, const DVec& Kabs, int N, double growth,
                       const std::string& what) {
    for (int i = 0; i < N; ++i)
        for (int j = 0; j < N; ++j) {
            const size_t k = (size_t)i * N + j;
            // eps * growth * sum|terms|; the +FLT_MIN keeps an exactly-zero bound meaningful.
            const double tol = kEps * growth * Kabs[k] + FLT_MIN;
            ASSERT_NEAR(K[k], Kref[k], tol) << what << " K[" << i << "," << j << "]";
            ASSERT_EQ(K[k], K[(size_t)j * N + i])
                << what << " K not symmetric at " << i << "," << j;
        }
}

// Both Gram methods (LINEAR/CONV2D) and the materialising Gram (NORM_AFFINE/GENERIC) against the
// naive Gram, for N = 1, 7, 13, with the default budget (one chunk) and a zero budget (one output
// channel / one sample per chunk), with and without accumulation, scale N and 1.
TEST_F(CpuBackend, LayerGramMatchesNaive) {
    std::vector<Case> cases = matmul_cases();
    for (const Case& c : other_cases()) cases.push_back(c);
    for (const Case& c : cases) {
        for (fngd_gram_method_t method : {FNGD_GRAM_MATERIALIZE, FNGD_GRAM_POSITION}) {
            fngd_layer_t l = make_layer(c.desc, method);
            if (l.kind != FNGD_LAYER_LINEAR && l.kind != FNGD_LAYER_CONV2D &&
                method == FNGD_GRAM_POSITION)
                continue;
            for (int N : {1, 7, 13}) {
                for (size_t budget : {FNGD_CPU_DEFAULT_CHUNK_BUDGET, (size_t)0}) {
                    fngd_cpu_set_chunk_budget(ctx, budget);
                    const std::string what = c.name + " method " + std::to_string(method) + " N " +
                                             std::to_string(N) + " budget " +
                                             std::to_string(budget);
                    SCOPED_TRACE(what);
                    Vec x = random_vec((size_t)N * l.in_per_sample, 1 + N);
                    Vec go = random_vec((size_t)N * l.out_per_sample, 100 + N);
                    const float scale = (float)N;  // mean-loss convention
                    Naive nv = naive_grads(l, N, x, go, scale);
                    DVec Kref = gram_of(nv.G, N, nv.len), Kabs = gram_of(nv.Gabs, N, nv.len);
                    fngd_layer_batch_t b{x.data(),
                                         l.kind == FNGD_LAYER_GENERIC ? nullptr : go.data()};

                    Ws ws = make_ws(ops->workspace_bytes(ctx, &l, N));
                    Vec K((size_t)N * N, std::nanf(""));  // beta = 0 must not read K
                    ASSERT_EQ(ops->layer_gram(ctx, &l, &b, N, scale, K.data(), 0, ws.ptr(),
                                              ws.bytes, nullptr, &err),
                              FNGD_SUCCESS)
                        << err.msg;
                    EXPECT_TRUE(ws.canary_ok());
                    expect_gram_close(K, Kref, Kabs, N, gram_growth(l), what);

                    // accumulate: K0 + Gram, with a symmetric K0 of the Gram's magnitude; one
                    // more rounding of the sum (growth + 1, on |K0| + sum|terms|).
                    Vec K0 = random_vec((size_t)N * N, 7);
                    for (int i = 0; i < N; ++i)
                        for (int j = 0; j < i; ++j) K0[(size_t)i * N + j] = K0[(size_t)j * N + i];
                    Vec K2 = K0;
                    ASSERT_EQ(ops->layer_gram(ctx, &l, &b, N, scale, K2.data(), 1, ws.ptr(),
                                              ws.bytes, nullptr, &err),
                              FNGD_SUCCESS)
                        << err.msg;
                    DVec Kref2 = Kref, Kabs2 = Kabs;
                    for (size_t k = 0; k < Kref2.size(); ++k) {
                        Kref2[k] += K0[k];
                        Kabs2[k] += std::fabs(K0[k]);
                    }
                    expect_gram_close(K2, Kref2, Kabs2, N, gram_growth(l) + 1, what + " acc");
                }
            }
        }
    }
}

// The two exact methods agree with each other (each within its bound of the exact Gram, so
// within the sum of both bounds of each other), scale 1.
TEST_F(CpuBackend, GramMethodsAgree) {
    for (const Case& c : matmul_cases()) {
        for (int N : {1, 7, 13}) {
            SCOPED_TRACE(c.name + " N " + std::to_string(N));
            fngd_layer_t lm = make_layer(c.desc, FNGD_GRAM_MATERIALIZE);
            fngd_layer_t lp = make_layer(c.desc, FNGD_GRAM_POSITION);
            Vec x = random_vec((size_t)N * lm.in_per_sample, 11);
            Vec go = random_vec((size_t)N * lm.out_per_sample, 12);
            fngd_layer_batch_t b{x.data(), go.data()};
            Naive nv = naive_grads(lm, N, x, go, 1.0);
            DVec Kabs = gram_of(nv.Gabs, N, nv.len);
            Vec Km((size_t)N * N), Kp((size_t)N * N);
            Ws wm = make_ws(ops->workspace_bytes(ctx, &lm, N));
            Ws wp = make_ws(ops->workspace_bytes(ctx, &lp, N));
            ASSERT_EQ(ops->layer_gram(ctx, &lm, &b, N, 1.0f, Km.data(), 0, wm.ptr(), wm.bytes,
                                      nullptr, &err),
                      FNGD_SUCCESS)
                << err.msg;
            ASSERT_EQ(ops->layer_gram(ctx, &lp, &b, N, 1.0f, Kp.data(), 0, wp.ptr(), wp.bytes,
                                      nullptr, &err),
                      FNGD_SUCCESS)
                << err.msg;
            for (size_t k = 0; k < Km.size(); ++k)
                ASSERT_NEAR(Km[k], Kp[k], 2 * kEps * gram_growth(lm) * Kabs[k] + FLT_MIN) << k;
        }
    }
}

// Chunk sizes strictly between 1 and the full size, with a remainder chunk: the plans pick
// exactly the chunk the budget allows, and results still match the naive Gram / reduction.
TEST_F(CpuBackend, ChunkedPathsWithRemainders) {
    const int N = 7;
    fngd_layer_t conv =
        make_layer(conv_desc(2, 5, 7, 6, 3, 2, 2, 1, 1, 2, 2, 1, 1), FNGD_GRAM_MATERIALIZE);
    fngd_layer_t lin = make_layer(matmul_cases()[2].desc, FNGD_GRAM_MATERIALIZE);  // T 3, q 7, bias
    for (fngd_layer_t l : {conv, lin}) {
        const size_t T = l.T, p = l.p, pa = l.pa, q = l.q;
        const bool is_conv = l.kind == FNGD_LAYER_CONV2D, bias = pa > p;
        Vec x = random_vec((size_t)N * l.in_per_sample, 21);
        Vec go = random_vec((size_t)N * l.out_per_sample, 22);
        fngd_layer_batch_t b{x.data(), go.data()};
        Naive nv = naive_grads(l, N, x, go, 2.0);
        DVec Kref = gram_of(nv.G, N, nv.len), Kabs = gram_of(nv.Gabs, N, nv.len);
        cpu_plan_t plan;

        // materialise: fixed pieces + N x (chunk * pa) floats; chunk 2 of q = 5 or 7 leaves 1.
        // (Pieces are rounded to 64 bytes as the plan carves them.)
        size_t fixed = (is_conv ? cpu_ws_piece(T * p) : 0) + (bias ? cpu_ws_piece(T) : 0);
        fngd_cpu_set_chunk_budget(ctx, fixed + cpu_ws_piece(2 * N * pa));
        ASSERT_EQ(cpu_plan_gram(ctx, &l, N, FNGD_GRAM_MATERIALIZE, SIZE_MAX, &plan, &err),
                  FNGD_SUCCESS);
        EXPECT_EQ(plan.chunk, 2);
        l.method = FNGD_GRAM_MATERIALIZE;
        Ws ws = make_ws(ops->workspace_bytes(ctx, &l, N));
        Vec K((size_t)N * N);
        ASSERT_EQ(
            ops->layer_gram(ctx, &l, &b, N, 2.0f, K.data(), 0, ws.ptr(), ws.bytes, nullptr, &err),
            FNGD_SUCCESS)
            << err.msg;
        EXPECT_TRUE(ws.canary_ok());
        expect_gram_close(K, Kref, Kabs, N, gram_growth(l), "materialise chunk 2");

        // position: fixed pieces + 2 x (chunk*T x N*T) floats; 3 samples of 7 leaves 1.
        fixed = is_conv ? cpu_ws_piece(N * T * p) + cpu_ws_piece(N * T * q) : 0;
        fngd_cpu_set_chunk_budget(ctx, fixed + 2 * cpu_ws_piece(3 * T * N * T));
        ASSERT_EQ(cpu_plan_gram(ctx, &l, N, FNGD_GRAM_POSITION, SIZE_MAX, &plan, &err),
                  FNGD_SUCCESS);
        EXPECT_EQ(plan.chunk, 3);
        l.method = FNGD_GRAM_POSITION;
        ws = make_ws(ops->workspace_bytes(ctx, &l, N));
        ASSERT_EQ(
            ops->layer_gram(ctx, &l, &b, N, 2.0f, K.data(), 0, ws.ptr(), ws.bytes, nullptr, &err),
            FNGD_SUCCESS)
            << err.msg;
        EXPECT_TRUE(ws.canary_ok());
        expect_gram_close(K, Kref, Kabs, N, gram_growth(l), "position chunk 3");

        // reduction: chunk*T x (q, p if conv, 1 if bias) floats; 3 samples of 7 leaves 1.
        fngd_cpu_set_chunk_budget(ctx, cpu_ws_piece(3 * T * q) +
                                           (is_conv ? cpu_ws_piece(3 * T * p) : 0) +
                                           (bias ? cpu_ws_piece(3 * T) : 0));
        ASSERT_EQ(cpu_plan_reduce(ctx, &l, N, SIZE_MAX, &plan, &err), FNGD_SUCCESS);
        EXPECT_EQ(plan.chunk, 3);
        ws = make_ws(ops->workspace_bytes(ctx, &l, N));
        Vec alpha = random_vec(N, 23);
        Vec out(l.grad_len, std::nanf(""));
        ASSERT_EQ(ops->weighted_grad(ctx, &l, &b, N, alpha.data(), 2.0f, out.data(),
                                     bias ? out.data() + l.n_weight : nullptr, ws.ptr(), ws.bytes,
                                     nullptr, &err),
                  FNGD_SUCCESS)
            << err.msg;
        EXPECT_TRUE(ws.canary_ok());
        for (int64_t k = 0; k < l.grad_len; ++k) {
            double ref = 0, abs = 0;
            for (int i = 0; i < N; ++i) {
                ref += alpha[i] * nv.G[(size_t)i * nv.len + k];
                abs += std::fabs(alpha[i]) * nv.Gabs[(size_t)i * nv.len + k];
            }
            // N*T products summed in float, plus the alpha*scale and the row scaling roundings.
            ASSERT_NEAR(out[k], ref, kEps * (N * T + 4) * abs + FLT_MIN) << k;
        }
    }
}

// weighted_grad = scale * sum_i alpha_i g_i for every kind, N = 1, 7, 13, default and zero budget.
TEST_F(CpuBackend, WeightedGradMatchesNaive) {
    std::vector<Case> cases = matmul_cases();
    for (const Case& c : other_cases()) cases.push_back(c);
    for (const Case& c : cases) {
        fngd_layer_t l = make_layer(c.desc, FNGD_GRAM_MATERIALIZE);
        for (int N : {1, 7, 13}) {
            for (size_t budget : {FNGD_CPU_DEFAULT_CHUNK_BUDGET, (size_t)0}) {
                fngd_cpu_set_chunk_budget(ctx, budget);
                SCOPED_TRACE(c.name + " N " + std::to_string(N) + " budget " +
                             std::to_string(budget));
                Vec x = random_vec((size_t)N * l.in_per_sample, 31 + N);
                Vec go = random_vec((size_t)N * l.out_per_sample, 41 + N);
                Vec alpha = random_vec(N, 51 + N);
                const float scale = 3.0f;
                fngd_layer_batch_t b{x.data(), l.kind == FNGD_LAYER_GENERIC ? nullptr : go.data()};
                Naive nv = naive_grads(l, N, x, go, scale);
                Ws ws = make_ws(ops->workspace_bytes(ctx, &l, N));
                Vec out(l.grad_len + 1, std::nanf(""));
                out[l.grad_len] = 12345.0f;  // guard after the bias part
                ASSERT_EQ(ops->weighted_grad(ctx, &l, &b, N, alpha.data(), scale, out.data(),
                                             l.n_bias ? out.data() + l.n_weight : nullptr, ws.ptr(),
                                             ws.bytes, nullptr, &err),
                          FNGD_SUCCESS)
                    << err.msg;
                EXPECT_TRUE(ws.canary_ok());
                EXPECT_EQ(out[l.grad_len], 12345.0f);
                for (int64_t k = 0; k < l.grad_len; ++k) {
                    double ref = 0, abs = 0;
                    for (int i = 0; i < N; ++i) {
                        ref += alpha[i] * nv.G[(size_t)i * nv.len + k];
                        abs += std::fabs(alpha[i]) * nv.Gabs[(size_t)i * nv.len + k];
                    }
                    // N*T terms summed in float (norm: in double), plus <= 4 roundings of
                    // the scalings alpha_i * scale * e.
                    ASSERT_NEAR(out[k], ref, kEps * ((double)N * l.T + 4) * abs + FLT_MIN) << k;
                }
            }
        }
    }
}

void expect_wgrad_close(const Vec& out, const Naive& nv, const Vec& alpha, int N, int T) {
    for (int64_t k = 0; k < nv.len; ++k) {
        double ref = 0, abs = 0;
        for (int i = 0; i < N; ++i) {
            ref += alpha[i] * nv.G[(size_t)i * nv.len + k];
            abs += std::fabs(alpha[i]) * nv.Gabs[(size_t)i * nv.len + k];
        }
        // as in WeightedGradMatchesNaive: N*T float terms plus <= 4 scaling roundings
        ASSERT_NEAR(out[k], ref, kEps * ((double)N * T + 4) * abs + FLT_MIN) << k;
    }
}

// workspace_bytes is exactly the larger of the two plans; an op given less than one chunk
// needs fails with INTERNAL and writes no output; given less than its plan but at least one
// chunk, it takes the largest chunk that fits and is still right.
TEST_F(CpuBackend, WorkspaceLimits) {
    const int N = 7;
    for (const Case& c : matmul_cases()) {
        for (fngd_gram_method_t method : {FNGD_GRAM_MATERIALIZE, FNGD_GRAM_POSITION}) {
            SCOPED_TRACE(c.name + " method " + std::to_string(method));
            fngd_layer_t l = make_layer(c.desc, method);
            Vec x = random_vec((size_t)N * l.in_per_sample, 1);
            Vec go = random_vec((size_t)N * l.out_per_sample, 2);
            fngd_layer_batch_t b{x.data(), go.data()};
            Naive nv = naive_grads(l, N, x, go, 1.0);
            DVec Kref = gram_of(nv.G, N, nv.len), Kabs = gram_of(nv.Gabs, N, nv.len);
            cpu_plan_t gp, rp, gmin, rmin;
            ASSERT_EQ(cpu_plan_gram(ctx, &l, N, method, SIZE_MAX, &gp, &err), FNGD_SUCCESS);
            ASSERT_EQ(cpu_plan_reduce(ctx, &l, N, SIZE_MAX, &rp, &err), FNGD_SUCCESS);
            EXPECT_EQ(ops->workspace_bytes(ctx, &l, N), std::max(gp.bytes, rp.bytes));
            fngd_cpu_set_chunk_budget(ctx, 0);  // chunk 1: the least an op can run with
            ASSERT_EQ(cpu_plan_gram(ctx, &l, N, method, SIZE_MAX, &gmin, &err), FNGD_SUCCESS);
            ASSERT_EQ(cpu_plan_reduce(ctx, &l, N, SIZE_MAX, &rmin, &err), FNGD_SUCCESS);
            EXPECT_EQ(gmin.chunk, 1);
            EXPECT_EQ(rmin.chunk, 1);
            fngd_cpu_set_chunk_budget(ctx, FNGD_CPU_DEFAULT_CHUNK_BUDGET);

            Ws ws = make_ws(gmin.bytes - 1);
            Vec K((size_t)N * N, 5.0f);
            EXPECT_EQ(ops->layer_gram(ctx, &l, &b, N, 1.0f, K.data(), 0, ws.ptr(), ws.bytes,
                                      nullptr, &err),
                      FNGD_ERROR_INTERNAL);
            EXPECT_NE(std::string(err.msg).find("workspace"), std::string::npos) << err.msg;
            for (float v : K) ASSERT_EQ(v, 5.0f);  // outputs untouched on error
            EXPECT_EQ(ops->layer_gram(ctx, &l, &b, N, 1.0f, K.data(), 0, nullptr, gp.bytes, nullptr,
                                      &err),
                      FNGD_ERROR_INTERNAL);  // no workspace pointer counts as none
            Vec alpha = random_vec(N, 3), out(l.grad_len, 5.0f);
            float* out_b = l.n_bias ? out.data() + l.n_weight : nullptr;
            Ws wr = make_ws(rmin.bytes - 1);
            EXPECT_EQ(ops->weighted_grad(ctx, &l, &b, N, alpha.data(), 1.0f, out.data(), out_b,
                                         wr.ptr(), wr.bytes, nullptr, &err),
                      FNGD_ERROR_INTERNAL);
            for (float v : out) ASSERT_EQ(v, 5.0f);

            for (size_t bytes : {gmin.bytes, gp.bytes - 1}) {
                if (bytes < gmin.bytes) continue;
                Ws w2 = make_ws(bytes);
                ASSERT_EQ(ops->layer_gram(ctx, &l, &b, N, 1.0f, K.data(), 0, w2.ptr(), w2.bytes,
                                          nullptr, &err),
                          FNGD_SUCCESS)
                    << err.msg;
                EXPECT_TRUE(w2.canary_ok());
                expect_gram_close(K, Kref, Kabs, N, gram_growth(l), "limited workspace");
            }
            for (size_t bytes : {rmin.bytes, rp.bytes - 1}) {
                if (bytes < rmin.bytes) continue;
                Ws w2 = make_ws(bytes);
                ASSERT_EQ(ops->weighted_grad(ctx, &l, &b, N, alpha.data(), 1.0f, out.data(), out_b,
                                             w2.ptr(), w2.bytes, nullptr, &err),
                          FNGD_SUCCESS)
                    << err.msg;
                EXPECT_TRUE(w2.canary_ok());
                expect_wgrad_close(out, nv, alpha, N, l.T);
            }
        }
    }
    // AUTO (unresolved) asks for enough for either method; the Gram op refuses it.
    fngd_layer_t l = make_layer(matmul_cases()[4].desc, FNGD_GRAM_AUTO);
    cpu_plan_t pm, pp;
    ASSERT_EQ(cpu_plan_gram(ctx, &l, N, FNGD_GRAM_MATERIALIZE, SIZE_MAX, &pm, &err), FNGD_SUCCESS);
    ASSERT_EQ(cpu_plan_gram(ctx, &l, N, FNGD_GRAM_POSITION, SIZE_MAX, &pp, &err), FNGD_SUCCESS);
    EXPECT_GE(ops->workspace_bytes(ctx, &l, N), std::max(pm.bytes, pp.bytes));
    Vec x = random_vec((size_t)N * l.in_per_sample, 1),
        go = random_vec((size_t)N * l.out_per_sample, 2);
    fngd_layer_batch_t b{x.data(), go.data()};
    Ws ws = make_ws(ops->workspace_bytes(ctx, &l, N));
    Vec K((size_t)N * N);
    EXPECT_EQ(ops->layer_gram(ctx, &l, &b, N, 1.0f, K.data(), 0, ws.ptr(), ws.bytes, nullptr, &err),
              FNGD_ERROR_INTERNAL);
}

// The host sizes the workspace for max_batch and runs smaller batches with it. Under a budget a
// smaller N can plan a larger chunk than max_batch did (and so ask for more bytes); the ops
// must then fit what they were given. Every N in 1..13 with the workspace of 13.
TEST_F(CpuBackend, WorkspaceOfMaxBatchServesSmallerBatches) {
    const int max_batch = 13;
    bool saw_larger_request = false;
    for (const Case& c : matmul_cases()) {
        for (fngd_gram_method_t method : {FNGD_GRAM_MATERIALIZE, FNGD_GRAM_POSITION}) {
            fngd_layer_t l = make_layer(c.desc, method);
            for (size_t budget :
                 {(size_t)0, (size_t)700, (size_t)2000, (size_t)5000, (size_t)20000}) {
                fngd_cpu_set_chunk_budget(ctx, budget);
                Ws ws = make_ws(ops->workspace_bytes(ctx, &l, max_batch));
                for (int N = 1; N <= max_batch; ++N) {
                    SCOPED_TRACE(c.name + " method " + std::to_string(method) + " budget " +
                                 std::to_string(budget) + " N " + std::to_string(N));
                    saw_larger_request |= ops->workspace_bytes(ctx, &l, N) > ws.bytes;
                    Vec x = random_vec((size_t)N * l.in_per_sample, 4 + N);
                    Vec go = random_vec((size_t)N * l.out_per_sample, 5 + N);
                    fngd_layer_batch_t b{x.data(), go.data()};
                    Naive nv = naive_grads(l, N, x, go, 1.0);
                    DVec Kref = gram_of(nv.G, N, nv.len), Kabs = gram_of(nv.Gabs, N, nv.len);
                    Vec K((size_t)N * N);
                    ASSERT_EQ(ops->layer_gram(ctx, &l, &b, N, 1.0f, K.data(), 0, ws.ptr(), ws.bytes,
                                              nullptr, &err),
                              FNGD_SUCCESS)
                        << err.msg;
                    expect_gram_close(K, Kref, Kabs, N, gram_growth(l), "max-batch workspace");
                    Vec alpha = random_vec(N, 6 + N), out(l.grad_len);
                    ASSERT_EQ(ops->weighted_grad(ctx, &l, &b, N, alpha.data(), 1.0f, out.data(),
                                                 l.n_bias ? out.data() + l.n_weight : nullptr,
                                                 ws.ptr(), ws.bytes, nullptr, &err),
                              FNGD_SUCCESS)
                        << err.msg;
                    expect_wgrad_close(out, nv, alpha, N, l.T);
                    EXPECT_TRUE(ws.canary_ok());
                }
            }
        }
    }
    EXPECT_TRUE(saw_larger_request);  // the situation this test is about did occur
}

// ---- factor_solve -------------------------------------------------------------------------------
// Naive double Cholesky solve of A x = b (A row-major, SPD); returns false when not PD.
bool naive_chol_solve(DVec A, int n, DVec& b) {
    for (int j = 0; j < n; ++j) {
        double d = A[(size_t)j * n + j];
        for (int k = 0; k < j; ++k) d -= A[(size_t)j * n + k] * A[(size_t)j * n + k];
        if (!(d > 0)) return false;
        d = std::sqrt(d);
        A[(size_t)j * n + j] = d;
        for (int i = j + 1; i < n; ++i) {
            double s = A[(size_t)i * n + j];
            for (int k = 0; k < j; ++k) s -= A[(size_t)i * n + k] * A[(size_t)j * n + k];
            A[(size_t)i * n + j] = s / d;
        }
    }
    for (int i = 0; i < n; ++i) {
        double s = b[i];
        for (int k = 0; k < i; ++k) s -= A[(size_t)i * n + k] * b[k];
        b[i] = s / A[(size_t)i * n + i];
    }
    for (int i = n - 1; i >= 0; --i) {
        double s = b[i];
        for (int k = i + 1; k < n; ++k) s -= A[(size_t)k * n + i] * b[k];
        b[i] = s / A[(size_t)i * n + i];
    }
    return true;
}

// K = G G^T (float) of a random N x 2N G: PSD and rank N, well conditioned once damped.
Vec random_gram(int N, unsigned seed) {
    Vec G = random_vec((size_t)N * 2 * N, seed);
    Vec K((size_t)N * N);
    for (int i = 0; i < N; ++i)
        for (int j = 0; j < N; ++j) {
            double s = 0;
            for (int k = 0; k < 2 * N; ++k)
                s += (double)G[(size_t)i * 2 * N + k] * G[(size_t)j * 2 * N + k];
            K[(size_t)i * N + j] = (float)s;
        }
    return K;
}

TEST_F(CpuBackend, FactorSolveMatchesNaiveCholesky) {
    struct Opt {
        fngd_damping_kind_t kind;
        double damping, min_shift;
        bool custom_rhs;
    };
    const Opt opts[] = {{FNGD_DAMPING_ABSOLUTE, 1e-2, 0.0, false},
                        {FNGD_DAMPING_TRACE_RELATIVE, 1e-3, 0.0, false},
                        {FNGD_DAMPING_ABSOLUTE, 0.0, 0.5, true},  // min_shift wins
                        {FNGD_DAMPING_TRACE_RELATIVE, 0.1, 1e-6, true}};
    for (int N : {1, 7, 13}) {
        for (const Opt& o : opts) for (int filter : {0, 1}) {
            SCOPED_TRACE("N " + std::to_string(N) + " kind " + std::to_string(o.kind) +
                         " filter " + std::to_string(filter));
            Vec K = random_gram(N, 60 + N);
            Vec rhs = random_vec(N, 70 + N, 0.5f, 2.0f);
            double trace = 0;
            for (int i = 0; i < N; ++i) trace += K[(size_t)i * N + i];
            double shift =
                o.kind == FNGD_DAMPING_TRACE_RELATIVE ? o.damping * trace : N * o.damping;
            shift = std::max(shift, o.min_shift);
            DVec A(K.begin(), K.end()), r(N, 1.0);
            for (int i = 0; i < N; ++i) A[(size_t)i * N + i] += shift;
            DVec A2 = A;
            if (o.custom_rhs)
                for (int i = 0; i < N; ++i) r[i] = rhs[i];
            ASSERT_TRUE(naive_chol_solve(A, N, r));
            if (filter) {  // range filter: r = (K + shift I)^-1 K r, a second independent solve
                DVec y(N, 0.0);
                for (int i = 0; i < N; ++i)
                    for (int j = 0; j < N; ++j) y[i] += (double)K[(size_t)i * N + j] * r[j];
                ASSERT_TRUE(naive_chol_solve(A2, N, y));
                r = y;
            }

            Ws ws = make_ws(ops->solver_workspace_bytes(ctx, N));
            EXPECT_EQ(ws.bytes, ((size_t)N * N + 2 * N) * sizeof(double));
            Vec alpha(N, std::nanf(""));
            int info = -1;
            double shift_used = 0, trace_K = 0;
            ASSERT_EQ(ops->factor_solve(ctx, K.data(), N, o.kind, o.damping, o.min_shift,
                                        o.custom_rhs ? rhs.data() : nullptr, filter, alpha.data(),
                                        &info, &shift_used, &trace_K, ws.ptr(), ws.bytes, nullptr,
                                        &err),
                      FNGD_SUCCESS)
                << err.msg;
            EXPECT_TRUE(ws.canary_ok());
            EXPECT_EQ(info, 0);
            // trace and shift are sums of N floats in double: exact to ~N * 1e-16 relative.
            EXPECT_NEAR(trace_K, trace, 1e-12 * trace);
            EXPECT_NEAR(shift_used, shift, 1e-12 * shift);
            // Both solves are double (errors ~ cond * 1e-16, cond <= trace/shift < 1e4 here);
            // what remains is the rounding of alpha to float: 1 eps relative, 4 eps of margin
            // (the filter's subtraction x - shift y is double too).
            double amax = 0;
            for (int i = 0; i < N; ++i) amax = std::max(amax, std::fabs(r[i]));
            for (int i = 0; i < N; ++i) EXPECT_NEAR(alpha[i], r[i], 4 * kEps * amax) << i;
        }
    }
}

TEST_F(CpuBackend, FactorSolveNotPositiveDefinite) {
    // diag(1, 1, -1, 1, 1): the leading minor of order 3 is the first that is not PD.
    const int N = 5;
    Vec K((size_t)N * N, 0.0f);
    for (int i = 0; i < N; ++i) K[(size_t)i * N + i] = i == 2 ? -1.0f : 1.0f;
    Ws ws = make_ws(ops->solver_workspace_bytes(ctx, N));
    Vec alpha(N, 42.0f);
    int info = 0;
    double shift_used = -1, trace_K = 0;
    ASSERT_EQ(
        ops->factor_solve(ctx, K.data(), N, FNGD_DAMPING_ABSOLUTE, 0.1, 0.0, nullptr, 0, alpha.data(),
                          &info, &shift_used, &trace_K, ws.ptr(), ws.bytes, nullptr, &err),
        FNGD_SUCCESS)
        << err.msg;
    EXPECT_EQ(info, 3);
    EXPECT_DOUBLE_EQ(shift_used, 0.5);  // N * damping, still below 1
    EXPECT_DOUBLE_EQ(trace_K, 3.0);
    for (float a : alpha) EXPECT_EQ(a, 42.0f);  // untouched
    // A shift above 1 makes it PD.
    ASSERT_EQ(
        ops->factor_solve(ctx, K.data(), N, FNGD_DAMPING_ABSOLUTE, 0.3, 0.0, nullptr, 0, alpha.data(),
                          &info, &shift_used, &trace_K, ws.ptr(), ws.bytes, nullptr, &err),
        FNGD_SUCCESS);
    EXPECT_EQ(info, 0);
    EXPECT_NEAR(alpha[2], 1.0 / 0.5, 4 * kEps * 2);
    EXPECT_NEAR(alpha[0], 1.0 / 2.5, 4 * kEps);
}

TEST_F(CpuBackend, FactorSolveErrors) {
    const int N = 4;
    Vec K = random_gram(N, 3);
    Vec alpha(N, 7.0f);
    int info = 0;
    double s = 0, t = 0;
    Ws small = make_ws(ops->solver_workspace_bytes(ctx, N) - 1);
    EXPECT_EQ(
        ops->factor_solve(ctx, K.data(), N, FNGD_DAMPING_ABSOLUTE, 1e-3, 0.0, nullptr, 0, alpha.data(),
                          &info, &s, &t, small.ptr(), small.bytes, nullptr, &err),
        FNGD_ERROR_INTERNAL);
    K[5] = std::nanf("");
    Ws ws = make_ws(ops->solver_workspace_bytes(ctx, N));
    fngd_status_t st =
        ops->factor_solve(ctx, K.data(), N, FNGD_DAMPING_ABSOLUTE, 1e-3, 0.0, nullptr, 0, alpha.data(),
                          &info, &s, &t, ws.ptr(), ws.bytes, nullptr, &err);
    // LAPACKE's NaN check reports an invalid argument (BACKEND); a build without it makes
    // the factorisation fail (info > 0). Either way alpha stays untouched.
    EXPECT_TRUE(st == FNGD_ERROR_BACKEND || (st == FNGD_SUCCESS && info > 0)) << st;
    for (float a : alpha) EXPECT_EQ(a, 7.0f);
}

TEST_F(CpuBackend, FactorSolveBatchedEqualsSingleCalls) {
    // count matrices at once, one of them not positive definite: each result must equal the
    // single op on that matrix bit for bit (same code path), the failing one left untouched.
    for (int N : {1, 7, 13}) {
        const int count = 3, ld = N + 2;  // ld > N: results must land at s * ld_alpha
        SCOPED_TRACE("N " + std::to_string(N));
        Vec K((size_t)count * N * N);
        for (int s = 0; s < count; ++s) {
            Vec Ks = random_gram(N, 90 + 10 * s + N);
            std::copy(Ks.begin(), Ks.end(), K.begin() + (size_t)s * N * N);
        }
        for (int i = 0; i < N; ++i) K[(size_t)1 * N * N + (size_t)i * N + i] = -1.0f;  // s = 1
        const double min_shift[count] = {0.0, 0.0, 0.25};
        Ws ws = make_ws(ops->solver_batched_workspace_bytes(ctx, N, count));
        Vec alpha((size_t)count * ld, 5.0f);
        int info[count] = {-1, -1, -1};
        double shift[count], trace[count];
        ASSERT_EQ(ops->factor_solve_batched(ctx, K.data(), count, N, FNGD_DAMPING_ABSOLUTE, 1e-2,
                                            min_shift, nullptr, 0, alpha.data(), ld, info, shift,
                                            trace, ws.ptr(), ws.bytes, nullptr, &err),
                  FNGD_SUCCESS)
            << err.msg;
        EXPECT_TRUE(ws.canary_ok());
        EXPECT_EQ(info[0], 0);
        EXPECT_GT(info[1], 0);
        EXPECT_EQ(info[2], 0);
        for (int i = 0; i < N; ++i) EXPECT_EQ(alpha[(size_t)ld + i], 5.0f);  // untouched
        for (int s : {0, 2}) {
            Vec single(N);
            int info1 = -1;
            double shift1 = 0, trace1 = 0;
            ASSERT_EQ(ops->factor_solve(ctx, K.data() + (size_t)s * N * N, N,
                                        FNGD_DAMPING_ABSOLUTE, 1e-2, min_shift[s], nullptr, 0,
                                        single.data(), &info1, &shift1, &trace1, ws.ptr(),
                                        ws.bytes, nullptr, &err),
                      FNGD_SUCCESS);
            EXPECT_EQ(shift[s], shift1);
            EXPECT_EQ(trace[s], trace1);
            for (int i = 0; i < N; ++i) EXPECT_EQ(alpha[(size_t)s * ld + i], single[i]) << s;
            for (int i = N; i < ld; ++i) EXPECT_EQ(alpha[(size_t)s * ld + i], 5.0f);
        }
    }
}

TEST_F(CpuBackend, FactorSolveBatchedNanWritesNoAlpha) {
    const int N = 4, count = 2;
    Vec K((size_t)count * N * N);
    for (int s = 0; s < count; ++s) {
        Vec Ks = random_gram(N, 7 + s);
        std::copy(Ks.begin(), Ks.end(), K.begin() + (size_t)s * N * N);
    }
    K[(size_t)N * N + 5] = std::nanf("");  // in the second matrix: the first must not be written
    const double min_shift[count] = {0.0, 0.0};
    Ws ws = make_ws(ops->solver_batched_workspace_bytes(ctx, N, count));
    Vec alpha((size_t)count * N, 3.0f);
    int info[count];
    double shift[count], trace[count];
    EXPECT_EQ(ops->factor_solve_batched(ctx, K.data(), count, N, FNGD_DAMPING_ABSOLUTE, 1e-3,
                                        min_shift, nullptr, 0, alpha.data(), N, info, shift, trace,
                                        ws.ptr(), ws.bytes, nullptr, &err),
              FNGD_ERROR_BACKEND);
    EXPECT_NE(std::string(err.msg).find("NaN"), std::string::npos) << err.msg;
    for (float a : alpha) EXPECT_EQ(a, 3.0f);
}

// ---- update, memory, copies
// ----------------------------------------------------------------------
TEST_F(CpuBackend, SgdUpdateMatchesDefinition) {
    const int64_t n = 37;
    for (float momentum : {0.0f, 0.9f}) {
        for (bool with_mom : {true, false}) {
            if (!with_mom && momentum != 0.0f) continue;
            Vec param = random_vec(n, 90), dir = random_vec(n, 91), mom = random_vec(n, 92);
            Vec p0 = param, m0 = mom;
            const fngd_update_tensor_t t = {param.data(), dir.data(),
                                            with_mom ? mom.data() : nullptr, n};
            ASSERT_EQ(ops->sgd_update(ctx, &t, 1, 0.1f, momentum, 0.01f, nullptr, &err),
                      FNGD_SUCCESS);
            for (int64_t k = 0; k < n; ++k) {
                double d = (double)dir[k] + 0.01 * p0[k];
                double v = with_mom ? momentum * (double)m0[k] + d : d;
                if (with_mom) EXPECT_NEAR(mom[k], v, 4 * kEps * (std::fabs(v) + 1));  // 3 roundings
                EXPECT_NEAR(param[k], p0[k] - 0.1 * v,
                            6 * kEps * (std::fabs(p0[k]) + 1));  // 5 roundings
            }
        }
    }
    // Several tensors in one call equal one call each; a bad tensor anywhere updates nothing.
    Vec p1 = random_vec(5, 93), p2 = random_vec(11, 94), d1 = random_vec(5, 95),
        d2 = random_vec(11, 96), m1(5, 0.5f), m2(11, -0.5f);
    Vec q1 = p1, q2 = p2, n1 = m1, n2 = m2;
    const fngd_update_tensor_t both[2] = {{p1.data(), d1.data(), m1.data(), 5},
                                          {p2.data(), d2.data(), m2.data(), 11}};
    ASSERT_EQ(ops->sgd_update(ctx, both, 2, 0.1f, 0.9f, 0.01f, nullptr, &err), FNGD_SUCCESS);
    const fngd_update_tensor_t one1 = {q1.data(), d1.data(), n1.data(), 5},
                               one2 = {q2.data(), d2.data(), n2.data(), 11};
    ASSERT_EQ(ops->sgd_update(ctx, &one1, 1, 0.1f, 0.9f, 0.01f, nullptr, &err), FNGD_SUCCESS);
    ASSERT_EQ(ops->sgd_update(ctx, &one2, 1, 0.1f, 0.9f, 0.01f, nullptr, &err), FNGD_SUCCESS);
    EXPECT_EQ(p1, q1);
    EXPECT_EQ(p2, q2);
    EXPECT_EQ(m1, n1);
    EXPECT_EQ(m2, n2);
    Vec param(3, 1.0f), dir(3, 1.0f), keep = p1;
    const fngd_update_tensor_t bad[2] = {{p1.data(), d1.data(), m1.data(), 5},
                                         {param.data(), dir.data(), nullptr, 3}};  // no momentum
    EXPECT_EQ(ops->sgd_update(ctx, bad, 2, 0.1f, 0.9f, 0.0f, nullptr, &err),
              FNGD_ERROR_INVALID_ARGUMENT);
    EXPECT_EQ(p1, keep);  // the valid first tensor was not updated either
}

TEST_F(CpuBackend, MemoryCopiesAndFiniteCheck) {
    void* p = nullptr;
    ASSERT_EQ(ops->alloc(ctx, 1000, &p, &err), FNGD_SUCCESS);
    ASSERT_NE(p, nullptr);
    EXPECT_EQ(reinterpret_cast<uintptr_t>(p) % 256, 0u);
    for (int k = 0; k < 1000; ++k) ASSERT_EQ(static_cast<unsigned char*>(p)[k], 0);
    Vec src = random_vec(250, 5), back(250);
    ASSERT_EQ(ops->upload(ctx, p, src.data(), 1000, nullptr, &err), FNGD_SUCCESS);
    ASSERT_EQ(ops->synchronize(ctx, nullptr, &err), FNGD_SUCCESS);
    ASSERT_EQ(ops->download(ctx, back.data(), p, 1000, nullptr, &err), FNGD_SUCCESS);
    EXPECT_EQ(src, back);
    Vec dst(250);
    ASSERT_EQ(ops->copy(ctx, dst.data(), static_cast<float*>(p), 250, nullptr, &err), FNGD_SUCCESS);
    EXPECT_EQ(src, dst);
    ops->free(ctx, p);

    int bad = -1;
    ASSERT_EQ(check_one(ops, ctx, src.data(), src.size(), &bad, nullptr, &err), FNGD_SUCCESS);
    EXPECT_EQ(bad, 0);
    for (float v : {std::nanf(""), INFINITY, -INFINITY}) {
        Vec x = src;
        x[249] = v;
        ASSERT_EQ(check_one(ops, ctx, x.data(), x.size(), &bad, nullptr, &err), FNGD_SUCCESS);
        EXPECT_EQ(bad, 1);
    }
    ASSERT_EQ(check_one(ops, ctx, nullptr, 0, &bad, nullptr, &err), FNGD_SUCCESS);
    EXPECT_EQ(bad, 0);
}

// A list of arrays is checked in one call: 0 when all are finite, else 1 + the index of the
// first array holding a NaN or Inf; an empty array and an empty list are finite.
TEST_F(CpuBackend, FiniteCheckOfAList) {
    Vec a = random_vec(10, 1), b = random_vec(33, 2), c = random_vec(5, 3);
    fngd_array_ref_t list[4] = {{a.data(), a.size()}, {nullptr, 0}, {b.data(), b.size()},
                                {c.data(), c.size()}};
    int bad = -1;
    ASSERT_EQ(ops->check_finite(ctx, list, 4, &bad, nullptr, &err), FNGD_SUCCESS);
    EXPECT_EQ(bad, 0);
    ASSERT_EQ(ops->check_finite(ctx, list, 0, &bad, nullptr, &err), FNGD_SUCCESS);
    EXPECT_EQ(bad, 0);
    c[4] = INFINITY;
    ASSERT_EQ(ops->check_finite(ctx, list, 4, &bad, nullptr, &err), FNGD_SUCCESS);
    EXPECT_EQ(bad, 4);
    b[0] = std::nanf("");
    ASSERT_EQ(ops->check_finite(ctx, list, 4, &bad, nullptr, &err), FNGD_SUCCESS);
    EXPECT_EQ(bad, 3);  // the first bad array
    fngd_array_ref_t null_list[1] = {{nullptr, 3}};
    EXPECT_EQ(ops->check_finite(ctx, null_list, 1, &bad, nullptr, &err),
              FNGD_ERROR_INVALID_ARGUMENT);
}

// The finiteness scan (four segments in lockstep, exit test per block, n % 4 tail) against
// std::isfinite: every length around the segment, block and tail boundaries, a non-finite value
// at every position (short arrays) or at each boundary position (long ones), every kind of
// NaN/Inf bit pattern, and the finite extremes that must not be flagged.
TEST_F(CpuBackend, FiniteCheckAllPositionsAndPatterns) {
    const uint32_t bad_bits[] = {0x7f800000u, 0xff800000u, 0x7fc00000u, 0xffc00000u,
                                 0x7f800001u, 0x7fffffffu, 0xffffffffu};
    const uint32_t good_bits[] = {0x7f7fffffu, 0xff7fffffu, 0x00000001u, 0x80000001u,
                                  0x00800000u, 0x80000000u, 0x00000000u, 0x7f000000u};
    auto from_bits = [](uint32_t b) {
        float f;
        std::memcpy(&f, &b, sizeof f);
        return f;
    };
    std::vector<size_t> lengths;
    for (size_t n = 0; n <= 40; ++n) lengths.push_back(n);
    for (size_t n : {1023, 1024, 1025, 4095, 4096, 4097, 4099, 16384, 16389, 100003})
        lengths.push_back(n);
    std::mt19937 gen(3);
    for (size_t n : lengths) {
        SCOPED_TRACE("n " + std::to_string(n));
        Vec x = random_vec(n, (unsigned)n, -1e30f, 1e30f);
        int bad = -1;
        ASSERT_EQ(check_one(ops, ctx, x.data(), n, &bad, nullptr, &err), FNGD_SUCCESS);
        EXPECT_EQ(bad, 0);
        std::vector<size_t> pos;
        if (n <= 40) {
            for (size_t k = 0; k < n; ++k) pos.push_back(k);
        } else {
            const size_t m = n / 4;
            for (size_t k : {(size_t)0, (size_t)1, m - 1, m, 2 * m - 1, 2 * m, 3 * m - 1, 3 * m,
                             4 * m - 1, 4 * m, n - 1, (size_t)gen() % n})
                if (k < n) pos.push_back(k);
        }
        for (size_t k : pos) {
            for (uint32_t b : bad_bits) {
                const float keep = x[k];
                x[k] = from_bits(b);
                bad = -1;
                ASSERT_EQ(check_one(ops, ctx, x.data(), n, &bad, nullptr, &err),
                          FNGD_SUCCESS);
                EXPECT_EQ(bad, 1) << "pattern " << std::hex << b << std::dec << " at " << k;
                x[k] = keep;
            }
        }
        if (n == 0) continue;
        for (uint32_t b : good_bits) {
            Vec y(n, from_bits(b));
            ASSERT_TRUE(std::isfinite(y[0]));
            ASSERT_EQ(check_one(ops, ctx, y.data(), n, &bad, nullptr, &err), FNGD_SUCCESS);
            EXPECT_EQ(bad, 0) << "pattern " << std::hex << b;
        }
    }
}

// im2col of samples [1, 3) of a 3-sample input against the definition, exactly (it only
// copies). The output is NaN-poisoned before and guarded after, so a position left unwritten or
// a write past the end shows. Returns false if the shape has no valid output (skipped).
bool im2col_matches_definition(const fngd_layer_desc_t& d, unsigned seed) {
    fngd_layer_t l;
    char msg[256] = {0};
    if (fngd_layer_init(&l, &d, msg, sizeof msg) != FNGD_SUCCESS) return false;
    const int N = 3, i0 = 1, nb = 2;
    const int C = d.in_channels, H = d.in_h, W = d.in_w, kh = d.kernel_h, kw = d.kernel_w;
    Vec x = random_vec((size_t)N * l.in_per_sample, seed);
    const size_t n_out = (size_t)nb * l.T * l.p;
    Vec out(n_out + 16, std::nanf(""));
    cpu_im2col(&l, x.data(), i0, nb, out.data());
    for (size_t k = n_out; k < out.size(); ++k) EXPECT_TRUE(std::isnan(out[k])) << "overrun";
    size_t wrong = 0;
    for (int i = 0; i < nb; ++i)
        for (int t = 0; t < l.T; ++t)
            for (int c = 0; c < C; ++c)
                for (int ki = 0; ki < kh; ++ki)
                    for (int kj = 0; kj < kw; ++kj) {
                        const int h = (t / l.out_w) * d.stride_h - d.pad_h + ki * d.dilation_h;
                        const int w = (t % l.out_w) * d.stride_w - d.pad_w + kj * d.dilation_w;
                        const bool in = h >= 0 && h < H && w >= 0 && w < W;
                        const float want =
                            in ? x[(((size_t)(i0 + i) * C + c) * H + h) * W + w] : 0.0f;
                        const size_t at =
                            ((size_t)i * l.T + t) * l.p + ((size_t)c * kh + ki) * kw + kj;
                        wrong += !(out[at] == want);  // NaN (unwritten) counts as wrong
                    }
    EXPECT_EQ(wrong, 0u) << "stride " << d.stride_h << "," << d.stride_w << " dilation "
                         << d.dilation_h << "," << d.dilation_w << " kernel " << kh << "x" << kw
                         << " pad " << d.pad_h << "," << d.pad_w << " input " << C << "x" << H
                         << "x" << W;
    return true;
}

// Both im2col paths (stride 1 / dilation 1 fast path, general path) for kernel widths with and
// without a specialisation, padding wider than the kernel and than the input, 1-pixel inputs.
TEST(CpuIm2col, MatchesDefinitionOnEveryPath) {
    const int Hs[] = {1, 5, 7}, Ws[] = {1, 6, 3}, phs[] = {0, 1, 4}, pws[] = {0, 2, 5};
    int shapes = 0;
    for (int s : {1, 2, 3})        // stride: 1 (fast path), 2 in h, 3 in w
        for (int dil : {1, 2, 3})  // dilation: 1, 2 in h, 2 in w
            for (int kh : {1, 2, 3})
                for (int kw : {1, 2, 3, 4, 5, 7})
                    for (int pad : {0, 1, 2})  // (0,0), (1,2), (4,5)
                        for (int in : {0, 1, 2}) {  // 1x1, 5x6, 7x3 inputs
                            const int H = Hs[in], W = Ws[in], ph = phs[pad], pw = pws[pad];
                            const int sh = s == 2 ? 2 : 1, sw = s == 3 ? 3 : 1;
                            const int dh = dil == 2 ? 2 : 1, dw = dil == 3 ? 2 : 1;
                            const int C = 1 + (kh + kw + in) % 3;
                            fngd_layer_desc_t d =
                                conv_desc(C, 2, H, W, kh, kw, sh, sw, ph, pw, dh, dw, 0);
                            if (im2col_matches_definition(d, (unsigned)shapes + 1)) ++shapes;
                        }
    EXPECT_GT(shapes, 1000);
}

TEST(CpuBackendAlloc, FailuresAreReportedAndNothingLeaks) {
    const fngd_backend_ops_t* ops = fngd_cpu_backend_ops();
    fngd_err_t err{};
    fngd_config_t cfg = FNGD_CONFIG_INIT;
    const long live = fngd_test_live_allocs();
    fngd_backend_ctx_t* ctx = reinterpret_cast<fngd_backend_ctx_t*>(0x1);
    fngd_test_fail_alloc_after(0);
    EXPECT_EQ(ops->create(&cfg, &ctx, &err), FNGD_ERROR_OUT_OF_MEMORY);
    EXPECT_EQ(ctx, nullptr);
    EXPECT_NE(std::string(err.msg).find("out of host memory"), std::string::npos);
    ASSERT_EQ(ops->create(&cfg, &ctx, &err), FNGD_SUCCESS);
    void* p = reinterpret_cast<void*>(0x1);
    fngd_test_fail_alloc_after(0);
    EXPECT_EQ(ops->alloc(ctx, 64, &p, &err), FNGD_ERROR_OUT_OF_MEMORY);
    EXPECT_EQ(p, nullptr);
    fngd_test_fail_alloc_after(-1);
    // The layer ops never allocate: a pending failure is not consumed by them.
    fngd_layer_t l = make_layer(fngd_linear_desc(3, 2, 1), FNGD_GRAM_POSITION);
    Vec x = random_vec(6, 1), go = random_vec(4, 2), K(4),
        ws(ops->workspace_bytes(ctx, &l, 2) / 4 + 1);
    fngd_layer_batch_t b{x.data(), go.data()};
    fngd_test_fail_alloc_after(0);
    EXPECT_EQ(
        ops->layer_gram(ctx, &l, &b, 2, 1.0f, K.data(), 0, ws.data(), ws.size() * 4, nullptr, &err),
        FNGD_SUCCESS);
    EXPECT_EQ(fngd_test_fail_alloc_after(-1), 0);  // no allocation was made
    ops->destroy(ctx);
    EXPECT_EQ(fngd_test_live_allocs(), live);
}

// The configured workspace cap lowers the chunk budget (never raises it past the default).
TEST(CpuBackendConfig, WorkspaceCapBoundsChunks) {
    const fngd_backend_ops_t* ops = fngd_cpu_backend_ops();
    fngd_err_t err{};
    fngd_config_t cfg = FNGD_CONFIG_INIT;
    cfg.max_workspace_bytes = 4096;
    fngd_backend_ctx_t* ctx = nullptr;
    ASSERT_EQ(ops->create(&cfg, &ctx, &err), FNGD_SUCCESS);
    EXPECT_EQ(ctx->chunk_budget, 4096u);
    // linear 64 -> 64, T 1, N 13, bias: full P would be 13*65*64*4 = 216 KB; chunks keep it <= 4
    // KB.
    fngd_layer_t l = make_layer(fngd_linear_desc(64, 64, 1), FNGD_GRAM_MATERIALIZE);
    EXPECT_LE(ops->workspace_bytes(ctx, &l, 13), 4096u);
    ops->destroy(ctx);
    cfg.max_workspace_bytes = (size_t)1 << 40;
    ASSERT_EQ(ops->create(&cfg, &ctx, &err), FNGD_SUCCESS);
    EXPECT_EQ(ctx->chunk_budget, FNGD_CPU_DEFAULT_CHUNK_BUDGET);
    ops->destroy(ctx);
}

}  // namespace
