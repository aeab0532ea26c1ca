// The direction of a collect-phase fngd_step (FNGD_OUTPUT_WRITE_GRAD) against the dense
// double-precision reference (tests/reference), over layer kinds, shapes, batch sizes, both
// Gram methods, both coefficient modes, both damping kinds, custom right-hand sides and both
// gradient conventions. Also checks the reference itself on cases with known answers.
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <functional>

#include "layer.h"
#include "test_util.h"

using namespace fngd_test;

namespace {

fngd_layer_desc_t grouped(fngd_layer_desc_t d, int groups) {
    d.groups = groups;
    return d;
}
// Conv1d as the header documents it: CONV2D with in_h = kernel_h = 1 (N x C x 1 x L).
fngd_layer_desc_t conv1d(int cin, int cout, int L, int k, int stride, int pad, int dil, int groups,
                         int bias) {
    return grouped(conv_desc(cin, cout, 1, L, 1, k, 1, stride, 0, pad, 1, dil, bias), groups);
}

// ---- the reference checked against itself -----------------------------------------------------

// The Woodbury identity the library relies on, checked on the reference: the dense d x d solve
// and G (K + N lambda I)^-1 r are the same vector (both double; 1e-10 is far above double
// rounding for d ~ 50 and cond ~ 20, and far below any mistake).
TEST(Reference, DenseSolveEqualsGramSolve) {
    Rng rng(11);
    for (int N : {1, 5, 40}) {  // N < d, N ~ d and N > d
        const int64_t d = 23;
        std::vector<double> G((size_t)(N * d)), r((size_t)N);
        for (double& x : G) x = rng.normal(0.1, 1.0);
        for (double& x : r) x = rng.uniform(0.5, 2.0);
        for (const double* rp : {(const double*)nullptr, (const double*)r.data()})
            for (int filter : {0, 1}) {
                double lambda = fngd_ref_lambda(FNGD_DAMPING_TRACE_RELATIVE, 0.05, G.data(), N, d);
                std::vector<double> dense((size_t)d), alpha((size_t)N), viaK((size_t)d);
                ASSERT_EQ(0, fngd_ref_dense_direction(G.data(), N, d, lambda, rp, filter,
                                                      dense.data()));
                ASSERT_EQ(0, fngd_ref_coefficients(G.data(), N, d, lambda, rp, filter,
                                                   alpha.data()));
                fngd_ref_weighted_sum(G.data(), N, d, alpha.data(), viaK.data());
                EXPECT_LT(rel_err(viaK, dense), 1e-10) << "N=" << N << " filter=" << filter;
            }
    }
}

// A 1x1 convolution with stride 1 and no padding is a linear layer over the H*W positions
// with channels as features (the layouts differ: NCHW vs N x T x C); the reference's explicit
// convolution sum must agree with its linear sum exactly up to double rounding.
TEST(Reference, PointwiseConvEqualsLinearOverPositions) {
    Rng rng(12);
    const int N = 3, Ci = 4, Co = 5, H = 3, W = 7, T = H * W;
    fngd_layer_desc_t conv = fngd_conv2d_desc(Ci, Co, H, W, 1, 1, 1);
    fngd_layer_desc_t lin = fngd_linear_desc(Ci, Co, 1);
    lin.positions = T;
    std::vector<float> x((size_t)N * Ci * T), dy((size_t)N * Co * T);
    rng.fill(x, 0, 1);
    rng.fill(dy, 0, 1);
    std::vector<float> xt(x.size()), dyt(dy.size());  // N x T x C
    for (int n = 0; n < N; ++n)
        for (int t = 0; t < T; ++t) {
            for (int c = 0; c < Ci; ++c) xt[(size_t)(n * T + t) * Ci + c] = x[(size_t)(n * Ci + c) * T + t];
            for (int c = 0; c < Co; ++c) dyt[(size_t)(n * T + t) * Co + c] = dy[(size_t)(n * Co + c) * T + t];
        }
    const int64_t d = (int64_t)Ci * Co + Co;
    std::vector<double> Gc((size_t)(N * d)), Gl((size_t)(N * d));
    ASSERT_EQ(0, fngd_ref_per_sample_grads(&conv, N, x.data(), dy.data(), 2.0, Gc.data(), d, 0));
    ASSERT_EQ(0, fngd_ref_per_sample_grads(&lin, N, xt.data(), dyt.data(), 2.0, Gl.data(), d, 0));
    EXPECT_LT(rel_err(Gc, Gl), 1e-14);
}

// A hand-computed convolution gradient: 1 channel, 3x3 input 1..9, 2x2 kernel, stride 2,
// padding 1, dilation 1 -> 2x2 output. With dy = 1 at output (0,0) only, the patch of that
// output covers rows/cols -1..0, so g = [0 0; 0 x(0,0)] = [0, 0, 0, 1].
TEST(Reference, ConvHandComputed) {
    fngd_layer_desc_t d = fngd_conv2d_desc(1, 1, 3, 3, 2, 2, 1);
    d.stride_h = d.stride_w = 2;
    d.pad_h = d.pad_w = 1;
    fngd_ref_geom_t g;
    ASSERT_EQ(0, fngd_ref_geometry(&d, &g));
    ASSERT_EQ(2, g.out_h);
    ASSERT_EQ(2, g.out_w);
    std::vector<float> x = {1, 2, 3, 4, 5, 6, 7, 8, 9}, dy = {1, 0, 0, 0};
    std::vector<double> G(5);
    ASSERT_EQ(0, fngd_ref_per_sample_grads(&d, 1, x.data(), dy.data(), 1.0, G.data(), 5, 0));
    EXPECT_EQ((std::vector<double>{0, 0, 0, 1, 1}), G);
    dy = {0, 0, 0, 1};  // output (1,1): rows/cols 1..2 -> [5 6; 8 9]
    ASSERT_EQ(0, fngd_ref_per_sample_grads(&d, 1, x.data(), dy.data(), 1.0, G.data(), 5, 0));
    EXPECT_EQ((std::vector<double>{5, 6, 8, 9, 1}), G);
    d.dilation_h = d.dilation_w = 2;  // span 3 on a padded 5: output 2x2, taps 2 apart
    d.stride_h = d.stride_w = 1;
    d.pad_h = d.pad_w = 0;
    ASSERT_EQ(0, fngd_ref_geometry(&d, &g));
    ASSERT_EQ(1, g.out_h);
    dy = {1};
    ASSERT_EQ(0, fngd_ref_per_sample_grads(&d, 1, x.data(), dy.data(), 1.0, G.data(), 5, 0));
    EXPECT_EQ((std::vector<double>{1, 3, 7, 9, 1}), G);
}

// A depthwise convolution by hand: 2 channels, 2x2 input, 1x1 kernel, groups 2, so output
// channel o sees only input channel o: g = [sum dy0*x0, sum dy1*x1] (+ bias sums). Then
// groups 2 with 4 inputs, 2 outputs: output 1 sees input channels 2, 3 only.
TEST(Reference, GroupedConvHandComputed) {
    fngd_layer_desc_t d = grouped(fngd_conv2d_desc(2, 2, 2, 2, 1, 1, 1), 2);
    fngd_ref_geom_t g;
    ASSERT_EQ(0, fngd_ref_geometry(&d, &g));
    ASSERT_EQ(2, g.n_weight);
    std::vector<float> x = {1, 2, 3, 4, 5, 6, 7, 8}, dy = {1, 0, 0, 1, 0, 1, 1, 0};
    std::vector<double> G(4);
    ASSERT_EQ(0, fngd_ref_per_sample_grads(&d, 1, x.data(), dy.data(), 1.0, G.data(), 4, 0));
    EXPECT_EQ((std::vector<double>{1 + 4, 6 + 7, 2, 2}), G);
    d = grouped(fngd_conv2d_desc(4, 2, 1, 1, 1, 1, 0), 2);
    ASSERT_EQ(0, fngd_ref_geometry(&d, &g));
    ASSERT_EQ(4, g.n_weight);
    x = {1, 2, 3, 4};
    dy = {10, 100};
    ASSERT_EQ(0, fngd_ref_per_sample_grads(&d, 1, x.data(), dy.data(), 1.0, G.data(), 4, 0));
    EXPECT_EQ((std::vector<double>{10, 20, 300, 400}), G);
    d.groups = 3;  // 4 channels do not split into 3 groups
    EXPECT_EQ(-1, fngd_ref_geometry(&d, &g));
}

// Grouped descriptors the library must refuse at fngd_add_layer (INVALID_ARGUMENT), and the
// ungrouped values 0 and 1 it must take alike.
TEST(Reference, GroupedConvDescriptorChecks) {
    fngd_config_t cfg = base_config(4, 8);
    fngd_handle_t h = nullptr;
    ASSERT_EQ(FNGD_SUCCESS, fngd_create(&cfg, &h));
    fngd_layer_desc_t d = fngd_conv2d_desc(4, 6, 5, 5, 3, 3, 1);
    for (int bad : {-1, 3, 4, 5}) {  // negative, 4 % 3, 6 % 4, both
        d.groups = bad;
        EXPECT_EQ(FNGD_ERROR_INVALID_ARGUMENT, fngd_add_layer(h, &d, nullptr)) << bad;
    }
    for (int ok : {0, 1, 2}) {
        d.groups = ok;
        EXPECT_EQ(FNGD_SUCCESS, fngd_add_layer(h, &d, nullptr)) << ok;
    }
    fngd_destroy(h);
}

// An embedding id outside [-1 padding, num_embeddings) fails the step; descriptors without a
// table or with a bias are refused.
TEST(Reference, EmbeddingChecks) {
    fngd_config_t cfg = base_config(4, 8);
    fngd_handle_t h = nullptr;
    ASSERT_EQ(FNGD_SUCCESS, fngd_create(&cfg, &h));
    fngd_layer_desc_t d = fngd_embedding_desc(0, 3, 2);
    EXPECT_EQ(FNGD_ERROR_INVALID_ARGUMENT, fngd_add_layer(h, &d, nullptr));
    d = fngd_embedding_desc(4, 3, 2);
    d.has_bias = 1;
    EXPECT_EQ(FNGD_ERROR_INVALID_ARGUMENT, fngd_add_layer(h, &d, nullptr));
    fngd_destroy(h);
    Model m;
    m.add(fngd_embedding_desc(4, 3, 2));
    Rng rng(3);
    m.randomize(rng, 2);
    int64_t ids[4] = {0, 3, -1, 4};  // 4 is out of range
    std::memcpy(m[0].input.data(), ids, sizeof ids);
    Handle hh;
    ASSERT_TRUE(make_handle(cfg, m, hh));
    auto sids = iota_ids(2);
    fngd_layer_batch_t b = m[0].batch();
    EXPECT_EQ(FNGD_ERROR_INVALID_ARGUMENT, fngd_step(hh, 2, sids.data(), &b, nullptr, nullptr));
    EXPECT_NE(nullptr, std::strstr(fngd_get_last_error(hh), "num_embeddings"));
}

// A checkpoint records the groups and the embedding geometry: it loads into a handle with the
// same layers and is refused (VERSION_MISMATCH) by one whose groups or vocabulary differ.
TEST(Reference, StateRecordsGroupsAndEmbeddingGeometry) {
    auto state_of = [](const std::vector<fngd_layer_desc_t>& layers, std::vector<char>& buf) {
        Model m;
        for (auto& d : layers) m.add(d);
        Rng rng(9);
        m.randomize(rng, 3);
        fngd_config_t cfg = base_config(3, 6);
        Handle h;
        ASSERT_TRUE(make_handle(cfg, m, h));
        auto ids = iota_ids(3);
        ASSERT_TRUE(step_ok(h, m, 3, ids.data()));
        size_t n = 0;
        ASSERT_EQ(FNGD_SUCCESS, fngd_state_size(h, &n));
        buf.resize(n);
        ASSERT_EQ(FNGD_SUCCESS, fngd_save_state(h, buf.data(), n, nullptr));
    };
    auto load_into = [](const std::vector<fngd_layer_desc_t>& layers, const std::vector<char>& buf) {
        Model m;
        for (auto& d : layers) m.add(d);
        fngd_config_t cfg = base_config(3, 6);
        Handle h;
        EXPECT_TRUE(make_handle(cfg, m, h));
        return fngd_load_state(h, buf.data(), buf.size());
    };
    const fngd_layer_desc_t g2 = grouped(fngd_conv2d_desc(4, 4, 5, 5, 3, 3, 1), 2);
    const fngd_layer_desc_t emb = fngd_embedding_desc(6, 3, 2);
    std::vector<char> buf;
    state_of({g2, emb}, buf);
    ASSERT_FALSE(buf.empty());
    EXPECT_EQ(FNGD_SUCCESS, load_into({g2, emb}, buf));
    EXPECT_EQ(FNGD_ERROR_VERSION_MISMATCH, load_into({grouped(g2, 4), emb}, buf));
    EXPECT_EQ(FNGD_ERROR_VERSION_MISMATCH, load_into({g2, fngd_embedding_desc(7, 3, 2)}, buf));
}

// ---- library against reference ----------------------------------------------------------------

struct Case {
    std::string name;
    std::vector<fngd_layer_desc_t> layers;
    int N = 7;
    fngd_coef_mode_t mode = FNGD_COEF_PER_LAYER;
    fngd_damping_kind_t damping = FNGD_DAMPING_TRACE_RELATIVE;
    fngd_grad_convention_t convention = FNGD_GRAD_MEAN_LOSS;
    fngd_gram_method_t method = FNGD_GRAM_AUTO;  // forced on LINEAR and CONV2D layers
    bool custom_rhs = false;
    size_t max_workspace_bytes = 0;  // 0: the default; small values force chunked work
    fngd_coef_filter_t filter = FNGD_FILTER_RANGE;
};
// GoogleTest names parameters by this instead of dumping their raw bytes (padding included).
void PrintTo(const Case& c, std::ostream* os) { *os << c.name; }

fngd_layer_desc_t linear(int in, int out, int bias, int T) {
    fngd_layer_desc_t d = fngd_linear_desc(in, out, bias);
    d.positions = T;
    return d;
}
fngd_layer_desc_t norm(int C, int T, int shift, int channels_last) {
    fngd_layer_desc_t d = fngd_norm_affine_desc(C, T, shift);
    d.channels_last = channels_last;
    return d;
}

bool forceable(const fngd_layer_desc_t& d) {
    return d.kind == FNGD_LAYER_LINEAR || d.kind == FNGD_LAYER_CONV2D;
}

// One collect step of the library against the reference, block by block.
void check_direction(const Case& c, uint64_t seed) {
    SCOPED_TRACE(c.name);
    Rng rng(seed);
    Model m;
    for (fngd_layer_desc_t d : c.layers) {
        if (forceable(d)) d.gram_method = c.method;
        m.add(d);
    }
    m.randomize(rng, c.N);
    const int64_t num_samples = 3 * c.N + 5;
    fngd_config_t cfg = base_config(c.N + 2, num_samples);  // N < max_batch on purpose
    cfg.coef_mode = c.mode;
    cfg.damping_kind = c.damping;
    cfg.grad_convention = c.convention;
    cfg.coef_filter = c.filter;
    if (c.max_workspace_bytes) cfg.max_workspace_bytes = c.max_workspace_bytes;
    const double gamma = 0.05;
    cfg.damping = gamma;
    if (c.damping == FNGD_DAMPING_ABSOLUTE) {
        // lambda = 2 gamma * trace(K)/N of the blocks (their geometric mean): well conditioned
        // (kappa = 1 + trace/(N lambda) stays moderate) without making the direction trivial.
        double lo = INFINITY, hi = 0;
        double scale = c.convention == FNGD_GRAD_MEAN_LOSS ? c.N : 1.0;
        for (int b = 0; b < m.num_blocks(c.mode); ++b) {
            auto G = m.per_sample(c.mode, b, c.N, scale);
            double tr = 0;
            for (double x : G) tr += x * x;
            lo = std::min(lo, tr / c.N);
            hi = std::max(hi, tr / c.N);
        }
        cfg.damping = 2 * gamma * std::sqrt(lo * hi);
    }
    std::vector<float> rhs;
    if (c.custom_rhs) {
        cfg.rhs = FNGD_RHS_CUSTOM;
        rhs.resize((size_t)c.N);
        for (float& r : rhs) r = (float)rng.uniform(0.25, 2.0);  // e.g. iEF loss-gradient norms
    }
    Handle h;
    ASSERT_TRUE(make_handle(cfg, m, h));
    for (int l = 0; l < m.size(); ++l) {
        fngd_gram_method_t got = FNGD_GRAM_AUTO;
        ASSERT_EQ(FNGD_SUCCESS, fngd_get_layer_gram_method(h, l, &got));
        if (forceable(m[l].desc) && c.method != FNGD_GRAM_AUTO)
            EXPECT_EQ(c.method, got) << "layer " << l;
        else
            EXPECT_TRUE(got == FNGD_GRAM_MATERIALIZE || got == FNGD_GRAM_POSITION) << "layer " << l;
    }
    m.fill_grads(777.0f);  // must be overwritten
    std::vector<int64_t> ids = rng.distinct_ids(c.N, num_samples);
    ASSERT_TRUE(step_ok(h, m, c.N, ids.data(), c.custom_rhs ? rhs.data() : nullptr));

    double last_lambda = 0;
    for (int b = 0; b < m.num_blocks(c.mode); ++b) {
        SCOPED_TRACE("block " + std::to_string(b));
        RefBlock ref = reference_block(m, cfg, b, c.N, c.custom_rhs ? rhs.data() : nullptr);
        double tol = direction_tolerance(ref);
        ASSERT_LT(tol, kMaxMeaningfulTolerance)
            << "test problem too ill-conditioned: kappa " << ref.kappa << " c_sum " << ref.c_sum;
        double err = rel_err(m.written_direction(c.mode, b), ref.delta);
        EXPECT_LE(err, tol) << "d " << ref.d << " kappa " << ref.kappa << " c_sum " << ref.c_sum
                            << " L_K " << ref.len_gram << " L_S " << ref.len_sum;
        if (std::getenv("FNGD_TEST_VERBOSE"))
            std::printf("  %s block %d: rel err %.3g, tol %.3g (kappa %.3g, c_sum %.3g)\n",
                        c.name.c_str(), b, err, tol, ref.kappa, ref.c_sum);
        // The stored coefficients are this step's alpha.
        auto got = get_coefs(h, b, ids);
        std::vector<double> gotd(got.begin(), got.end());
        EXPECT_LE(rel_err(gotd, ref.alpha), coefficient_tolerance(ref));
        last_lambda = ref.lambda;
    }
    fngd_stats_t st = get_stats(h);
    EXPECT_EQ(m.num_blocks(c.mode), st.factorizations);
    EXPECT_EQ(0, st.damping_retries);
    EXPECT_EQ(1, st.steps_total);
    EXPECT_EQ(FNGD_PHASE_COLLECT, st.phase);
    // lambda of the last factorization (the last block): from the float trace of K, so a
    // relative error of about sqrt(L) u; 1e-4 leaves a wide margin.
    EXPECT_NEAR(last_lambda, st.last_damping, 1e-4 * last_lambda);
}

std::vector<Case> all_cases() {
    std::vector<Case> v;
    const fngd_gram_method_t methods[] = {FNGD_GRAM_AUTO, FNGD_GRAM_MATERIALIZE, FNGD_GRAM_POSITION};
    const char* mname[] = {"Auto", "Materialize", "Position"};
    for (int mi = 0; mi < 3; ++mi) {
        auto add = [&](std::string name, std::vector<fngd_layer_desc_t> layers, int N) {
            Case c;
            c.name = name + "_" + mname[mi];
            c.layers = std::move(layers);
            c.N = N;
            c.method = methods[mi];
            v.push_back(c);
        };
        add("LinearBiasT1_N7", {linear(9, 5, 1, 1)}, 7);
        add("LinearNoBiasT1_N13", {linear(11, 4, 0, 1)}, 13);
        add("LinearBiasT3_N13", {linear(6, 7, 1, 3)}, 13);
        add("LinearNoBiasT3_N7", {linear(5, 3, 0, 3)}, 7);
        add("LinearN1", {linear(6, 3, 1, 3)}, 1);
        add("LinearN128", {linear(10, 6, 1, 1)}, 128);
        add("ConvOdd_N7", {conv_desc(3, 4, 5, 7, 3, 3, 1, 1, 0, 0, 1, 1, 1)}, 7);
        add("ConvStride2Pad_N13", {conv_desc(2, 3, 9, 8, 3, 3, 2, 2, 1, 1, 1, 1, 1)}, 13);
        add("ConvDilation2_N7", {conv_desc(2, 5, 9, 7, 3, 2, 1, 1, 0, 1, 2, 2, 0)}, 7);
        add("ConvNonSquareMixed_N13", {conv_desc(3, 2, 6, 11, 2, 3, 2, 1, 1, 2, 1, 2, 1)}, 13);
        add("ConvN1", {conv_desc(2, 3, 6, 5, 3, 3, 2, 1, 1, 0, 1, 1, 1)}, 1);
        add("ConvN128", {conv_desc(2, 3, 5, 5, 3, 3, 2, 2, 1, 1, 1, 1, 1)}, 128);
        // Grouped and depthwise convolutions (groups appended to the descriptor).
        add("ConvGroups2Odd_N7", {grouped(conv_desc(4, 6, 5, 7, 3, 3, 1, 1, 0, 0, 1, 1, 1), 2)}, 7);
        add("ConvGroups3Stride2Pad_N13",
            {grouped(conv_desc(6, 3, 9, 8, 3, 2, 2, 1, 1, 1, 1, 1, 0), 3)}, 13);
        add("ConvDepthwise_N7", {grouped(conv_desc(5, 5, 6, 7, 3, 3, 1, 1, 1, 1, 1, 1, 1), 5)}, 7);
        add("ConvDepthwiseMult2Dil_N13",
            {grouped(conv_desc(3, 6, 8, 7, 3, 3, 2, 1, 1, 2, 2, 1, 1), 3)}, 13);
        add("ConvDepthwiseN1", {grouped(conv_desc(4, 4, 5, 5, 3, 3, 1, 1, 1, 1, 1, 1, 1), 4)}, 1);
        add("ConvGroupsN1", {grouped(conv_desc(4, 2, 5, 6, 2, 3, 1, 2, 0, 1, 1, 1, 1), 2)}, 1);
        add("ConvGroupsN128", {grouped(conv_desc(4, 4, 5, 5, 3, 3, 2, 2, 1, 1, 1, 1, 1), 2)}, 128);
        add("Conv1dDepthwise_N13", {conv1d(6, 6, 11, 3, 1, 1, 1, 6, 1)}, 13);
        add("Conv1dGroups2Stride2_N7", {conv1d(4, 6, 13, 5, 2, 2, 1, 2, 0)}, 7);
    }
    auto add = [&](std::string name, std::vector<fngd_layer_desc_t> layers, int N) {
        Case c;
        c.name = name;
        c.layers = std::move(layers);
        c.N = N;
        v.push_back(c);
        return &v.back();
    };
    add("NormNCT_Shift_N7", {norm(6, 10, 1, 0)}, 7);
    add("NormNTC_Shift_N13", {norm(5, 4, 1, 1)}, 13);
    add("NormNCT_NoShift_N13", {norm(4, 9, 0, 0)}, 13);
    add("NormNTC_NoShift_N1", {norm(3, 5, 0, 1)}, 1);
    add("NormN128", {norm(8, 3, 1, 0)}, 128);
    // Embeddings: small vocabularies so that ids repeat within and across samples; -1 ids are
    // padding (see Layer::randomize).
    add("Embedding_V5_D3_T4_N7", {fngd_embedding_desc(5, 3, 4)}, 7);
    add("Embedding_V11_D4_T6_N13", {fngd_embedding_desc(11, 4, 6)}, 13);
    add("Embedding_V3_D2_T1_N13", {fngd_embedding_desc(3, 2, 1)}, 13);
    add("Embedding_V40_D5_T3_N1", {fngd_embedding_desc(40, 5, 3)}, 1);
    add("Embedding_V7_D3_T5_N128", {fngd_embedding_desc(7, 3, 5)}, 128);
    for (int mode = 0; mode < 2; ++mode)
        for (int N : {1, 7, 13}) {
            Case* c = add(std::string("MixedEmbedding_") + (mode ? "Global" : "PerLayer") + "_N" +
                              std::to_string(N),
                          {fngd_embedding_desc(9, 4, 5), linear(4, 3, 1, 5), norm(3, 5, 1, 1),
                           grouped(conv_desc(2, 4, 1, 7, 1, 3, 1, 1, 0, 1, 1, 1, 1), 2)},
                          N);
            c->mode = mode ? FNGD_COEF_GLOBAL : FNGD_COEF_PER_LAYER;
            c->convention = N == 7 ? FNGD_GRAD_PER_SAMPLE : FNGD_GRAD_MEAN_LOSS;
        }
    add("Generic_N7", {fngd_generic_desc(31)}, 7);
    add("Generic_N1", {fngd_generic_desc(17)}, 1);
    add("Generic_N128", {fngd_generic_desc(40)}, 128);

    // A small mixed model in every mode / damping / convention / rhs combination.
    std::vector<fngd_layer_desc_t> mixed = {conv_desc(2, 3, 7, 6, 3, 2, 2, 1, 1, 0, 1, 1, 1),
                                            norm(3, 12, 1, 0), linear(8, 5, 1, 3),
                                            fngd_generic_desc(6), norm(5, 3, 0, 1)};
    for (int mode = 0; mode < 2; ++mode)
        for (int dk = 0; dk < 2; ++dk)
            for (int conv_k = 0; conv_k < 2; ++conv_k)
                for (int rhs = 0; rhs < 2; ++rhs)
                    for (int N : {1, 13, -13}) {  // -13: N = 13 with the paper's plain alpha
                        Case* c = add(std::string("Mixed_") + (mode ? "Global" : "PerLayer") +
                                          (dk ? "_Relative" : "_Absolute") +
                                          (conv_k ? "_PerSample" : "_MeanLoss") +
                                          (rhs ? "_CustomRhs" : "_Ones") + "_N" +
                                          std::to_string(std::abs(N)) +
                                          (N < 0 ? "_NoFilter" : ""),
                                      mixed, std::abs(N));
                        if (N < 0) c->filter = FNGD_FILTER_NONE;
                        c->mode = mode ? FNGD_COEF_GLOBAL : FNGD_COEF_PER_LAYER;
                        c->damping = dk ? FNGD_DAMPING_TRACE_RELATIVE : FNGD_DAMPING_ABSOLUTE;
                        c->convention = conv_k ? FNGD_GRAD_PER_SAMPLE : FNGD_GRAD_MEAN_LOSS;
                        c->custom_rhs = rhs != 0;
                    }
    // Grouped / depthwise conv (2-D and 1-D) beside the other kinds, per-layer and global.
    std::vector<fngd_layer_desc_t> mixed_grouped = {
        grouped(conv_desc(4, 4, 6, 5, 3, 3, 1, 1, 1, 1, 1, 1, 1), 4),
        grouped(conv_desc(4, 6, 6, 5, 3, 1, 2, 1, 1, 0, 1, 1, 0), 2), norm(3, 7, 1, 0),
        conv1d(6, 3, 9, 3, 1, 1, 2, 3, 1), linear(5, 4, 1, 3)};
    for (int mode = 0; mode < 2; ++mode)
        for (int mi = 0; mi < 3; ++mi)
            for (int N : {1, 7, 13}) {
                const char* mn[] = {"Auto", "Materialize", "Position"};
                Case* c = add(std::string("MixedGrouped_") + (mode ? "Global_" : "PerLayer_") +
                                  mn[mi] + "_N" + std::to_string(N),
                              mixed_grouped, N);
                c->mode = mode ? FNGD_COEF_GLOBAL : FNGD_COEF_PER_LAYER;
                c->method = (fngd_gram_method_t)mi;
            }
    Case* big = add("Mixed_Global_N128", mixed, 128);
    big->mode = FNGD_COEF_GLOBAL;
    Case* pos = add("Mixed_Global_Position_N7", mixed, 7);
    pos->mode = FNGD_COEF_GLOBAL;
    pos->method = FNGD_GRAM_POSITION;
    Case* mat = add("Mixed_PerLayer_Materialize_Absolute_N7", mixed, 7);
    mat->method = FNGD_GRAM_MATERIALIZE;
    mat->damping = FNGD_DAMPING_ABSOLUTE;
    // A tiny workspace cap: the backend must split the Gram and the reduction into chunks
    // (down to one sample or one output channel at a time) and still be exact.
    for (int mi = 1; mi < 3; ++mi)
        for (size_t cap : {(size_t)1, (size_t)64 << 10})
            for (int N : {13, 128}) {
                Case* c = add(std::string("Chunked") + (cap == 1 ? "Min" : "64K") + "_" +
                                  mname[mi] + "_N" + std::to_string(N),
                              {conv_desc(3, 4, 9, 8, 3, 3, 1, 1, 1, 1, 1, 1, 1),
                               linear(7, 5, 1, 3), norm(4, 6, 1, 1),
                               grouped(conv_desc(4, 6, 7, 6, 3, 3, 1, 1, 1, 1, 1, 1, 1), 2)},
                              N);
                c->method = methods[mi];
                c->max_workspace_bytes = cap;
                c->mode = N == 13 ? FNGD_COEF_PER_LAYER : FNGD_COEF_GLOBAL;
            }
    return v;
}

// A seed per case that does not depend on the standard library's std::hash.
uint64_t fnv1a(const std::string& s) {
    uint64_t h = 1469598103934665603ull;
    for (unsigned char ch : s) h = (h ^ ch) * 1099511628211ull;
    return h;
}

class Direction : public ::testing::TestWithParam<Case> {};

TEST_P(Direction, MatchesDenseReference) {
    check_direction(GetParam(), 1000 + fnv1a(GetParam().name) % 100000);
}

INSTANTIATE_TEST_SUITE_P(Reference, Direction, ::testing::ValuesIn(all_cases()),
                         [](const ::testing::TestParamInfo<Case>& i) { return i.param.name; });

// Mean-loss inputs that are the per-sample inputs divided by N give the same direction. With
// N a power of two the division is exact and both runs see the same per-sample gradients, so
// the directions agree to float rounding of identical work; with N prime the inputs differ by
// one rounding (u relative), amplified like the Gram error in direction_tolerance.
TEST(Direction, MeanLossEqualsPerSampleWithScaledInputs) {
    for (int N : {8, 7}) {
        SCOPED_TRACE("N=" + std::to_string(N));
        Rng rng(77 + N);
        Model per, mean;
        std::vector<fngd_layer_desc_t> layers = {linear(5, 4, 1, 2),
                                                 conv_desc(2, 2, 5, 5, 3, 3, 1, 1, 1, 1, 1, 1, 1),
                                                 norm(3, 4, 1, 0), fngd_generic_desc(9)};
        for (auto& d : layers) {
            per.add(d);
            mean.add(d);
        }
        per.randomize(rng, N);
        for (int l = 0; l < per.size(); ++l) {
            mean[l].input = per[l].input;
            mean[l].grad_output = per[l].grad_output;
            if (mean[l].desc.kind == FNGD_LAYER_GENERIC)
                for (float& x : mean[l].input) x /= (float)N;  // per-sample gradients given
            else
                for (float& x : mean[l].grad_output) x /= (float)N;
        }
        for (int mode = 0; mode < 2; ++mode) {
            fngd_config_t cp = base_config(N, N);
            cp.coef_mode = mode ? FNGD_COEF_GLOBAL : FNGD_COEF_PER_LAYER;
            cp.grad_convention = FNGD_GRAD_PER_SAMPLE;
            fngd_config_t cm = cp;
            cm.grad_convention = FNGD_GRAD_MEAN_LOSS;
            Handle hp, hm;
            ASSERT_TRUE(make_handle(cp, per, hp));
            ASSERT_TRUE(make_handle(cm, mean, hm));
            auto ids = iota_ids(N);
            ASSERT_TRUE(step_ok(hp, per, N, ids.data()));
            ASSERT_TRUE(step_ok(hm, mean, N, ids.data()));
            for (int b = 0; b < per.num_blocks(cp.coef_mode); ++b) {
                RefBlock ref = reference_block(per, cp, b, N, nullptr);
                double tol = direction_tolerance(ref);
                EXPECT_LE(rel_err(mean.written_direction(cm.coef_mode, b),
                                  per.written_direction(cp.coef_mode, b)),
                          tol)
                    << "mode " << mode << " block " << b;
                EXPECT_LE(rel_err(per.written_direction(cp.coef_mode, b), ref.delta), tol);
            }
        }
    }
}

// A larger damping pulls the direction towards mean gradient / lambda (METHOD.md section 1):
// with gamma = 1e4 the relative difference is O(1/gamma).
TEST(Direction, LargeDampingApproachesScaledMeanGradient) {
    Rng rng(5);
    Model m;
    m.add(linear(7, 3, 1, 2));
    const int N = 11;
    m.randomize(rng, N);
    fngd_config_t cfg = base_config(N, N);
    cfg.damping = 1e4;
    cfg.coef_filter = FNGD_FILTER_NONE;  // the paper's alpha (the range filter goes to zero)
    Handle h;
    ASSERT_TRUE(make_handle(cfg, m, h));
    auto ids = iota_ids(N);
    ASSERT_TRUE(step_ok(h, m, N, ids.data()));
    RefBlock ref = reference_block(m, cfg, 0, N, nullptr);
    std::vector<double> mean_over_lambda((size_t)ref.d, 0.0);
    for (int i = 0; i < N; ++i)
        for (int64_t k = 0; k < ref.d; ++k)
            mean_over_lambda[(size_t)k] += ref.G[(size_t)(i * ref.d + k)] / (N * ref.lambda);
    EXPECT_LT(rel_err(m.written_direction(cfg.coef_mode, 0), mean_over_lambda), 1e-3);
}

}  // namespace

namespace {

// Random models (kinds, shapes, strides, paddings, dilations, batch sizes, modes, damping,
// conventions, Gram methods, workspace caps) against the reference: 40 fixed seeds.
Case random_case(Rng& rng, int k) {
    auto pick = [&](int lo, int hi) { return (int)std::floor(rng.uniform(lo, hi + 1 - 1e-9)); };
    Case c;
    c.name = "Random" + std::to_string(k);
    int nl = pick(1, 3);
    for (int l = 0; l < nl; ++l) {
        switch (pick(0, k >= 60 ? 4 : 3)) {  // seeds 60..69 also draw embeddings
        case 4:
            c.layers.push_back(fngd_embedding_desc(pick(2, 12), pick(1, 5), pick(3, 6)));
            break;
        case 0: c.layers.push_back(linear(pick(1, 9), pick(1, 6), pick(0, 1), pick(1, 4))); break;
        case 1: {
            int kh = pick(1, 3), kw = pick(1, 3), dh = pick(1, 2), dw = pick(1, 2);
            int ph = pick(0, 1), pw = pick(0, 1);
            int h = (kh - 1) * dh + 1 - 2 * ph + pick(0, 5), w = (kw - 1) * dw + 1 - 2 * pw + pick(0, 5);
            // Always a bias: a stride can make every tap land in the padding, and a block whose
            // gradients are all zero has no well-defined trace-relative damping.
            c.layers.push_back(conv_desc(pick(1, 3), pick(1, 4), std::max(h, 1), std::max(w, 1),
                                         kh, kw, pick(1, 3), pick(1, 3), ph, pw, dh, dw, 1));
            if (k >= 40) {  // seeds past the original 40: grouped (1..3 groups, some depthwise)
                int gr = pick(1, 3);
                c.layers.back().in_channels = gr * pick(1, 2);
                c.layers.back().out_channels = gr * pick(1, 2);
                c.layers.back().groups = gr;
            }
            fngd_ref_geom_t g;
            if (fngd_ref_geometry(&c.layers.back(), &g) != 0) c.layers.back() = linear(3, 2, 1, 1);
            break;
        }
        case 2: c.layers.push_back(norm(pick(1, 6), pick(1, 8), pick(0, 1), pick(0, 1))); break;
        default: c.layers.push_back(fngd_generic_desc(pick(1, 20))); break;
        }
    }
    const int Ns[] = {1, 2, 3, 7, 13, 31, 64};
    c.N = Ns[pick(0, 6)];
    c.mode = pick(0, 1) ? FNGD_COEF_GLOBAL : FNGD_COEF_PER_LAYER;
    c.damping = pick(0, 1) ? FNGD_DAMPING_TRACE_RELATIVE : FNGD_DAMPING_ABSOLUTE;
    // An embedding's block trace can be far from the others' (few distinct ids), and one
    // absolute lambda for all blocks (check_direction) would then leave some ill-conditioned.
    for (auto& d : c.layers)
        if (d.kind == FNGD_LAYER_EMBEDDING) c.damping = FNGD_DAMPING_TRACE_RELATIVE;
    c.convention = pick(0, 1) ? FNGD_GRAD_PER_SAMPLE : FNGD_GRAD_MEAN_LOSS;
    c.method = (fngd_gram_method_t)pick(0, 2);
    c.custom_rhs = pick(0, 3) == 0;
    c.max_workspace_bytes = pick(0, 2) == 0 ? (size_t)pick(1, 4096) : 0;
    return c;
}

TEST(Direction, RandomSweep) {
    Rng rng(2024);
    for (int k = 0; k < 70; ++k) {  // 40..69 also draw grouped convolutions, 60..69 embeddings
        Case c = random_case(rng, k);
        if (std::getenv("FNGD_TEST_VERBOSE"))
            for (auto& d : c.layers)
                std::printf("%s kind %d lin %d %d T%d conv %d %d %dx%d k%dx%d s%d,%d p%d,%d d%d,%d norm %d %d gen %lld\n",
                            c.name.c_str(), d.kind, d.in_features, d.out_features, d.positions,
                            d.in_channels, d.out_channels, d.in_h, d.in_w, d.kernel_h, d.kernel_w,
                            d.stride_h, d.stride_w, d.pad_h, d.pad_w, d.dilation_h, d.dilation_w,
                            d.num_features, d.norm_positions, (long long)d.num_params);
        check_direction(c, 5000 + k);
        if (::testing::Test::HasFatalFailure()) return;
    }
}

}  // namespace
