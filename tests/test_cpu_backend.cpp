// Tests of what is particular to the CPU reference backend (src/cpu): its chunk plans and
// workspace limits, im2col, allocation failures and the workspace cap, against the naive
// double-precision sums of the reference (tests/reference, via backend_test_util.h). The
// operations themselves are tested on every backend by tests/test_backend_conformance.cpp.
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
// The matrix-Gram kinds (linear, conv2d) of the shared cases, the small ones (grad_len < 500):
// the chunk and workspace tests below run each at many budgets and batch sizes.
std::vector<Case> matmul_cases() {
    std::vector<Case> c;
    for (const Case& x : layer_cases()) {
        const bool matrix = x.desc.kind == FNGD_LAYER_LINEAR || x.desc.kind == FNGD_LAYER_CONV2D;
        if (matrix && make_layer(x.desc, FNGD_GRAM_MATERIALIZE).grad_len < 500) c.push_back(x);
    }
    return c;
}

const Case& matmul_case(const std::string& name) {
    static const std::vector<Case> cases = matmul_cases();
    for (const Case& c : cases)
        if (c.name == name) return c;
    ADD_FAILURE() << "no layer case " << name;
    return cases[0];
}

// The kinds without a matrix Gram (norm affine, generic), from the shared cases.
std::vector<Case> other_cases() {
    std::vector<Case> c;
    for (const Case& x : layer_cases())
        if (x.desc.kind == FNGD_LAYER_NORM_AFFINE || x.desc.kind == FNGD_LAYER_GENERIC)
            c.push_back(x);
    return c;
}

// Longest float summation chain of a Gram entry over both methods: per-sample sums over T,
// then the SYRK over grad_len (materialise), or S_A over p+1, S_E over q and the products
// (position); the T*T block sum is in double. Plus a few roundings of products and scalings.
double gram_growth(const fngd_layer_t& l) {
    return (double)l.T + (double)l.grad_len + (double)l.pa + (double)l.q + 8.0;
}

// A call on the CPU backend (no stream; begin_call and end_call do nothing here) with an
// optional workspace.
fngd_call_t cpu_call(fngd_err_t* err, void* ws = nullptr, size_t ws_bytes = 0) {
    return fngd_call_t{nullptr, ws, ws_bytes, err, -1};
}

// The one workspace query for one layer (no solve).
size_t layer_ws(const fngd_backend_ops_t* ops, fngd_backend_ctx_t* ctx, const fngd_layer_t& l,
                int N) {
    fngd_err_t err{};
    return query_ws(ops, ctx, cpu_call(&err), &l, 1, N, 0);
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

    // The call with workspace w (or any pointer and size, for the refusals).
    const fngd_call_t* in(Ws& w) { return in_raw(w.ptr(), w.bytes); }
    const fngd_call_t* in_raw(void* p, size_t bytes) {
        call = cpu_call(&err, p, bytes);
        return &call;
    }

    const fngd_backend_ops_t* ops = nullptr;
    fngd_backend_ctx_t* ctx = nullptr;
    fngd_err_t err{};
    fngd_call_t call{};
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

// A zero chunk budget (one output channel / one sample per chunk, the least an op can run
// with) for every layer kind and both methods, N = 1, 7, 13: the Gram (with and without
// accumulation) and the weighted reduction still match the naive sums. The default budget is
// the conformance suite's (tests/test_backend_conformance.cpp).
TEST_F(CpuBackend, ZeroChunkBudgetMatchesNaive) {
    std::vector<Case> cases = matmul_cases();
    for (const Case& c : other_cases()) cases.push_back(c);
    fngd_cpu_set_chunk_budget(ctx, 0);
    for (const Case& c : cases) {
        for (fngd_gram_method_t method : {FNGD_GRAM_MATERIALIZE, FNGD_GRAM_POSITION}) {
            fngd_layer_t l = make_layer(c.desc, method);
            if (l.method != method) continue;
            for (int N : {1, 7, 13}) {
                const std::string what =
                    c.name + " method " + std::to_string(method) + " N " + std::to_string(N);
                SCOPED_TRACE(what);
                Vec x = random_vec((size_t)N * l.in_per_sample, 1 + N);
                Vec go = random_vec((size_t)N * l.out_per_sample, 100 + N);
                const float scale = (float)N;  // mean-loss convention
                Naive nv = naive_grads(l, N, x, go, scale);
                DVec Kref = gram_of(nv.G, N, nv.len), Kabs = gram_of(nv.Gabs, N, nv.len);
                fngd_layer_batch_t b{x.data(),
                                     l.kind == FNGD_LAYER_GENERIC ? nullptr : go.data()};
                Ws ws = make_ws(layer_ws(ops, ctx, l, N));
                Vec K((size_t)N * N, std::nanf(""));  // beta = 0 must not read K
                ASSERT_EQ(ops->layer_gram(ctx, &l, &b, N, scale, K.data(), 0, in(ws)),
                          FNGD_SUCCESS)
                    << err.msg;
                EXPECT_TRUE(ws.canary_ok());
                expect_gram_close(K, Kref, Kabs, N, gram_growth(l), what);
                // accumulate: K0 + Gram, with a symmetric K0 of the Gram's magnitude; one more
                // rounding of the sum (growth + 1, on |K0| + sum|terms|).
                Vec K0 = random_vec((size_t)N * N, 7);
                for (int i = 0; i < N; ++i)
                    for (int j = 0; j < i; ++j) K0[(size_t)i * N + j] = K0[(size_t)j * N + i];
                Vec K2 = K0;
                ASSERT_EQ(ops->layer_gram(ctx, &l, &b, N, scale, K2.data(), 1, in(ws)),
                          FNGD_SUCCESS)
                    << err.msg;
                for (size_t k = 0; k < Kref.size(); ++k) {
                    Kref[k] += K0[k];
                    Kabs[k] += std::fabs(K0[k]);
                }
                expect_gram_close(K2, Kref, Kabs, N, gram_growth(l) + 1, what + " acc");
                Vec alpha = random_vec(N, 51 + N), out(l.grad_len, std::nanf(""));
                Naive nv1 = naive_grads(l, N, x, go, 1.0);
                ASSERT_EQ(ops->weighted_grad(ctx, &l, &b, N, alpha.data(), 1.0f, out.data(),
                                             l.n_bias ? out.data() + l.n_weight : nullptr,
                                             in(ws)),
                          FNGD_SUCCESS)
                    << err.msg;
                expect_wgrad_close(out, nv1, alpha, N, l.T);
            }
        }
    }
}

// Chunk sizes strictly between 1 and the full size, with a remainder chunk: the plans pick
// exactly the chunk the budget allows, and results still match the naive Gram / reduction.
TEST_F(CpuBackend, ChunkedPathsWithRemainders) {
    const int N = 7;
    fngd_layer_t conv =
        make_layer(conv_desc(2, 5, 7, 6, 3, 2, 2, 1, 1, 2, 2, 1, 1), FNGD_GRAM_MATERIALIZE);
    fngd_layer_t lin = make_layer(matmul_case("linear_tokens3_bias").desc,
                                   FNGD_GRAM_MATERIALIZE);  // T 3, q 7, bias
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
        Ws ws = make_ws(layer_ws(ops, ctx, l, N));
        Vec K((size_t)N * N);
        ASSERT_EQ(
            ops->layer_gram(ctx, &l, &b, N, 2.0f, K.data(), 0, in(ws)),
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
        ws = make_ws(layer_ws(ops, ctx, l, N));
        ASSERT_EQ(
            ops->layer_gram(ctx, &l, &b, N, 2.0f, K.data(), 0, in(ws)),
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
        ws = make_ws(layer_ws(ops, ctx, l, N));
        Vec alpha = random_vec(N, 23);
        Vec out(l.grad_len, std::nanf(""));
        ASSERT_EQ(ops->weighted_grad(ctx, &l, &b, N, alpha.data(), 2.0f, out.data(),
                                     bias ? out.data() + l.n_weight : nullptr, in(ws)),
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
            EXPECT_EQ(layer_ws(ops, ctx, l, N), std::max(gp.bytes, rp.bytes));
            fngd_cpu_set_chunk_budget(ctx, 0);  // chunk 1: the least an op can run with
            ASSERT_EQ(cpu_plan_gram(ctx, &l, N, method, SIZE_MAX, &gmin, &err), FNGD_SUCCESS);
            ASSERT_EQ(cpu_plan_reduce(ctx, &l, N, SIZE_MAX, &rmin, &err), FNGD_SUCCESS);
            EXPECT_EQ(gmin.chunk, 1);
            EXPECT_EQ(rmin.chunk, 1);
            fngd_cpu_set_chunk_budget(ctx, FNGD_CPU_DEFAULT_CHUNK_BUDGET);

            Ws ws = make_ws(gmin.bytes - 1);
            Vec K((size_t)N * N, 5.0f);
            EXPECT_EQ(ops->layer_gram(ctx, &l, &b, N, 1.0f, K.data(), 0, in(ws)),
                      FNGD_ERROR_INTERNAL);
            EXPECT_NE(std::string(err.msg).find("workspace"), std::string::npos) << err.msg;
            for (float v : K) ASSERT_EQ(v, 5.0f);  // outputs untouched on error
            EXPECT_EQ(ops->layer_gram(ctx, &l, &b, N, 1.0f, K.data(), 0, in_raw(nullptr, gp.bytes)),
                      FNGD_ERROR_INTERNAL);  // no workspace pointer counts as none
            Vec alpha = random_vec(N, 3), out(l.grad_len, 5.0f);
            float* out_b = l.n_bias ? out.data() + l.n_weight : nullptr;
            Ws wr = make_ws(rmin.bytes - 1);
            EXPECT_EQ(ops->weighted_grad(ctx, &l, &b, N, alpha.data(), 1.0f, out.data(), out_b,
                                         in(wr)),
                      FNGD_ERROR_INTERNAL);
            for (float v : out) ASSERT_EQ(v, 5.0f);

            for (size_t bytes : {gmin.bytes, gp.bytes - 1}) {
                if (bytes < gmin.bytes) continue;
                Ws w2 = make_ws(bytes);
                ASSERT_EQ(ops->layer_gram(ctx, &l, &b, N, 1.0f, K.data(), 0, in(w2)),
                          FNGD_SUCCESS)
                    << err.msg;
                EXPECT_TRUE(w2.canary_ok());
                expect_gram_close(K, Kref, Kabs, N, gram_growth(l), "limited workspace");
            }
            for (size_t bytes : {rmin.bytes, rp.bytes - 1}) {
                if (bytes < rmin.bytes) continue;
                Ws w2 = make_ws(bytes);
                ASSERT_EQ(ops->weighted_grad(ctx, &l, &b, N, alpha.data(), 1.0f, out.data(), out_b,
                                             in(w2)),
                          FNGD_SUCCESS)
                    << err.msg;
                EXPECT_TRUE(w2.canary_ok());
                expect_wgrad_close(out, nv, alpha, N, l.T);
            }
        }
    }
    // AUTO (unresolved) asks for enough for either method; the Gram op refuses it.
    fngd_layer_t l = make_layer(matmul_case("conv_s2_p1_d2_bias").desc, FNGD_GRAM_AUTO);
    cpu_plan_t pm, pp;
    ASSERT_EQ(cpu_plan_gram(ctx, &l, N, FNGD_GRAM_MATERIALIZE, SIZE_MAX, &pm, &err), FNGD_SUCCESS);
    ASSERT_EQ(cpu_plan_gram(ctx, &l, N, FNGD_GRAM_POSITION, SIZE_MAX, &pp, &err), FNGD_SUCCESS);
    EXPECT_GE(layer_ws(ops, ctx, l, N), std::max(pm.bytes, pp.bytes));
    Vec x = random_vec((size_t)N * l.in_per_sample, 1),
        go = random_vec((size_t)N * l.out_per_sample, 2);
    fngd_layer_batch_t b{x.data(), go.data()};
    Ws ws = make_ws(layer_ws(ops, ctx, l, N));
    Vec K((size_t)N * N);
    EXPECT_EQ(ops->layer_gram(ctx, &l, &b, N, 1.0f, K.data(), 0, in(ws)),
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
                Ws ws = make_ws(layer_ws(ops, ctx, l, max_batch));
                for (int N = 1; N <= max_batch; ++N) {
                    SCOPED_TRACE(c.name + " method " + std::to_string(method) + " budget " +
                                 std::to_string(budget) + " N " + std::to_string(N));
                    saw_larger_request |= layer_ws(ops, ctx, l, N) > ws.bytes;
                    Vec x = random_vec((size_t)N * l.in_per_sample, 4 + N);
                    Vec go = random_vec((size_t)N * l.out_per_sample, 5 + N);
                    fngd_layer_batch_t b{x.data(), go.data()};
                    Naive nv = naive_grads(l, N, x, go, 1.0);
                    DVec Kref = gram_of(nv.G, N, nv.len), Kabs = gram_of(nv.Gabs, N, nv.len);
                    Vec K((size_t)N * N);
                    ASSERT_EQ(ops->layer_gram(ctx, &l, &b, N, 1.0f, K.data(), 0, in(ws)),
                              FNGD_SUCCESS)
                        << err.msg;
                    expect_gram_close(K, Kref, Kabs, N, gram_growth(l), "max-batch workspace");
                    Vec alpha = random_vec(N, 6 + N), out(l.grad_len);
                    ASSERT_EQ(ops->weighted_grad(ctx, &l, &b, N, alpha.data(), 1.0f, out.data(),
                                                 l.n_bias ? out.data() + l.n_weight : nullptr,
                                                 in(ws)),
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
    const fngd_call_t call = cpu_call(&err);
    EXPECT_EQ(ops->alloc(ctx, 64, &p, &call), FNGD_ERROR_OUT_OF_MEMORY);
    EXPECT_EQ(p, nullptr);
    fngd_test_fail_alloc_after(-1);
    // The layer ops never allocate: a pending failure is not consumed by them.
    fngd_layer_t l = make_layer(fngd_linear_desc(3, 2, 1), FNGD_GRAM_POSITION);
    Vec x = random_vec(6, 1), go = random_vec(4, 2), K(4),
        ws(layer_ws(ops, ctx, l, 2) / 4 + 1);
    fngd_layer_batch_t b{x.data(), go.data()};
    fngd_test_fail_alloc_after(0);
    const fngd_call_t ws_call = cpu_call(&err, ws.data(), ws.size() * 4);
    EXPECT_EQ(ops->layer_gram(ctx, &l, &b, 2, 1.0f, K.data(), 0, &ws_call), FNGD_SUCCESS);
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
    EXPECT_LE(layer_ws(ops, ctx, l, 13), 4096u);
    ops->destroy(ctx);
    cfg.max_workspace_bytes = (size_t)1 << 40;
    ASSERT_EQ(ops->create(&cfg, &ctx, &err), FNGD_SUCCESS);
    EXPECT_EQ(ctx->chunk_budget, FNGD_CPU_DEFAULT_CHUNK_BUDGET);
    ops->destroy(ctx);
}

}  // namespace
