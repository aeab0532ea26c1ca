// Stable coefficient sharing (coef_filter, exact_small_layers) and step-size control
// (step_control): what fngd.h promises for each, against direct double computations.
#include "test_util.h"

using namespace fngd_test;

namespace {

std::vector<double> to_double(const std::vector<float>& v) {
    return std::vector<double>(v.begin(), v.end());
}

double dot(const std::vector<double>& a, const std::vector<double>& b) {
    double s = 0;
    for (size_t k = 0; k < a.size(); ++k) s += a[k] * b[k];
    return s;
}

// Mean over samples of the per-sample gradients of block b (the plain SGD gradient).
std::vector<double> mean_grad(const Model& m, const fngd_config_t& cfg, int b, int N) {
    double scale = cfg.grad_convention == FNGD_GRAD_MEAN_LOSS ? (double)N : 1.0;
    std::vector<double> G = m.per_sample(cfg.coef_mode, b, N, scale);
    int64_t d = m.block_len(cfg.coef_mode, b);
    std::vector<double> g((size_t)d, 0.0);
    for (int i = 0; i < N; ++i)
        for (int64_t k = 0; k < d; ++k) g[(size_t)k] += G[(size_t)(i * d + k)] / N;
    return g;
}

// Residual of alpha after its least-squares projection onto the span of the d columns of
// G^T (N x d): zero exactly when alpha is in the range of K = G G^T. Normal equations in
// double; d is tiny here.
double range_residual(const std::vector<double>& G, int N, int d, const std::vector<double>& a) {
    std::vector<double> A((size_t)d * d, 0.0), z((size_t)d, 0.0);
    for (int p = 0; p < d; ++p)
        for (int q = 0; q < d; ++q)
            for (int i = 0; i < N; ++i) A[(size_t)p * d + q] += G[(size_t)i * d + p] * G[(size_t)i * d + q];
    for (int p = 0; p < d; ++p)
        for (int i = 0; i < N; ++i) z[(size_t)p] += G[(size_t)i * d + p] * a[(size_t)i];
    EXPECT_EQ(0, fngd_ref_cholesky_solve(A.data(), d, z.data()));
    std::vector<double> r(a);
    for (int i = 0; i < N; ++i)
        for (int p = 0; p < d; ++p) r[(size_t)i] -= G[(size_t)i * d + p] * z[(size_t)p];
    return norm2(r) / norm2(a);
}

// A layer with fewer parameters than the batch (d = 3, N = 32): K is rank-deficient. With the
// paper's alpha the stored coefficients are dominated by K's null space (size ~1/(N lambda)),
// which does nothing to the epoch-one direction but multiplies the new gradients of the next
// epoch; the range filter stores only what the epoch-one direction used, and the first reuse
// direction then stays the size of the epoch-one one.
TEST(StableSharing, RangeFilterKeepsReuseDirectionsBounded) {
    const int N = 32, d = 3;
    double ratio[2] = {0, 0}, residual[2] = {0, 0};
    for (fngd_coef_filter_t filter : {FNGD_FILTER_NONE, FNGD_FILTER_RANGE}) {
        Rng rng(900);
        Model m;
        m.add(fngd_generic_desc(d));
        fngd_config_t cfg = base_config(N, N);
        cfg.grad_convention = FNGD_GRAD_PER_SAMPLE;
        cfg.damping_kind = FNGD_DAMPING_ABSOLUTE;
        cfg.damping = 0.1;
        cfg.coef_filter = filter;
        Handle h;
        ASSERT_TRUE(make_handle(cfg, m, h));
        auto ids = iota_ids(N);
        m.randomize(rng, N);
        ASSERT_TRUE(step_ok(h, m, N, ids.data()));
        double collect = norm2(m.written_direction(cfg.coef_mode, 0));
        std::vector<double> alpha = to_double(get_coefs(h, 0, ids));
        residual[filter] = range_residual(m.per_sample(cfg.coef_mode, 0, N, 1.0), N, d, alpha);
        ASSERT_EQ(FNGD_SUCCESS, fngd_end_epoch(h, nullptr));
        m.randomize(rng, N);  // next epoch: new per-sample gradients of the same samples
        ASSERT_TRUE(step_ok(h, m, N, ids.data()));
        ratio[filter] = norm2(m.written_direction(cfg.coef_mode, 0)) / collect;
    }
    // Float coefficients: the residual of a vector in the range is rounding, ~1e-7.
    EXPECT_LT(residual[FNGD_FILTER_RANGE], 1e-4);
    EXPECT_GT(residual[FNGD_FILTER_NONE], 0.5);  // mostly null space
    EXPECT_LT(ratio[FNGD_FILTER_RANGE], 2.0) << "plain alpha: " << ratio[FNGD_FILTER_NONE];
    EXPECT_GT(ratio[FNGD_FILTER_NONE], 2.0 * ratio[FNGD_FILTER_RANGE]);
}

// exact_small_layers: in a reuse epoch the norm layer (6 parameters <= max_batch) gets the
// exact solve of the new batch, the linear layer (45 parameters) its stored coefficients.
TEST(StableSharing, ExactSmallLayersSolveEveryReuseStep) {
    const int N = 16;
    Rng rng(901);
    Model m;
    m.add(fngd_linear_desc(8, 5, 1));
    m.add(fngd_norm_affine_desc(3, 9, 1));
    fngd_config_t cfg = base_config(N, 2 * N);
    cfg.exact_small_layers = 1;
    Handle h;
    ASSERT_TRUE(make_handle(cfg, m, h));
    for (int s = 0; s < 2; ++s) {
        auto ids = iota_ids(N, s * N);
        m.randomize(rng, N);
        ASSERT_TRUE(step_ok(h, m, N, ids.data()));
    }
    ASSERT_EQ(FNGD_SUCCESS, fngd_end_epoch(h, nullptr));
    const int64_t factorizations = get_stats(h).factorizations;
    auto ids = iota_ids(N, N);
    m.randomize(rng, N);
    m.fill_grads(777.0f);
    ASSERT_TRUE(step_ok(h, m, N, ids.data()));
    // Linear layer: the stored alpha of these ids.
    double scale = (double)N;  // mean-loss convention
    std::vector<double> G = m.per_sample(cfg.coef_mode, 0, N, scale), want(45);
    std::vector<double> alpha = to_double(get_coefs(h, 0, ids));
    fngd_ref_weighted_sum(G.data(), N, 45, alpha.data(), want.data());
    double tol0 = reduction_tolerance(cancellation_factor(G, N, 45, alpha),
                                      reduction_length(m, cfg.coef_mode, 0, N));
    EXPECT_LE(rel_err(m.written_direction(cfg.coef_mode, 0), want), tol0);
    // Norm layer: the dense reference of this batch, as in a collect step.
    RefBlock ref = reference_block(m, cfg, 1, N, nullptr);
    EXPECT_LE(rel_err(m.written_direction(cfg.coef_mode, 1), ref.delta), direction_tolerance(ref));
    EXPECT_EQ(factorizations, get_stats(h).factorizations);  // collect-phase count unchanged
}

struct ControlCase {
    fngd_step_control_t control;
    fngd_output_t output;
    double kl_clip;
};

// One collect step and one reuse step with the control on, against a twin handle without it
// on the same data: the controlled direction is nu * the plain one, with nu as fngd.h defines
// it from the plain mean gradients g_l; with APPLY_SGD (no momentum) the parameters move by
// -lr * that direction.
void check_control(const ControlCase& c) {
    const int N = 9;
    const float lr = 0.5f;
    Rng rng(902);
    Model m, twin;
    for (Model* x : {&m, &twin}) {
        x->add(fngd_linear_desc(6, 4, 1));
        x->add(fngd_generic_desc(5));
    }
    fngd_config_t cfg = base_config(N, N);
    cfg.output = c.output;
    cfg.momentum = 0.0f;
    cfg.learning_rate = lr;
    fngd_config_t plain_cfg = cfg;
    plain_cfg.output = FNGD_OUTPUT_WRITE_GRAD;
    cfg.step_control = c.control;
    cfg.kl_clip = c.kl_clip;
    Handle h, plain;
    ASSERT_TRUE(make_handle(cfg, m, h));
    ASSERT_TRUE(make_handle(plain_cfg, twin, plain));
    auto ids = iota_ids(N);
    for (int phase = 0; phase < 2; ++phase) {
        SCOPED_TRACE(phase ? "reuse" : "collect");
        m.randomize(rng, N);
        twin.copy_batch(m);
        std::vector<std::vector<double>> before;
        for (int l = 0; l < m.size(); ++l) before.push_back(m[l].params());
        ASSERT_TRUE(step_ok(h, m, N, ids.data()));
        ASSERT_TRUE(step_ok(plain, twin, N, ids.data()));
        double vg = 0;
        std::vector<double> nu_graft;
        for (int l = 0; l < m.size(); ++l) {
            std::vector<double> d = twin.written_direction(cfg.coef_mode, l);
            std::vector<double> g = mean_grad(twin, cfg, l, N);
            vg += dot(d, g);
            nu_graft.push_back(norm2(g) / norm2(d));
        }
        double nu_kl = std::min(1.0, std::sqrt(c.kl_clip / std::fabs((double)lr * lr * vg)));
        for (int l = 0; l < m.size(); ++l) {
            double nu = c.control == FNGD_STEP_GRAFT ? nu_graft[(size_t)l] : nu_kl;
            std::vector<double> want = twin.written_direction(cfg.coef_mode, l);
            for (double& x : want) x *= nu;
            std::vector<double> got;
            if (c.output == FNGD_OUTPUT_APPLY_SGD) {  // got = (before - after) / lr
                std::vector<double> after = m[l].params();
                for (size_t k = 0; k < after.size(); ++k)
                    got.push_back((before[(size_t)l][k] - after[k]) / lr);
            } else {
                got = m.written_direction(cfg.coef_mode, l);
            }
            // Two float reductions and a float scale on both sides; parameters near 1 lose a
            // few more bits in (before - after) / lr: 1e-4 is ~100 float eps of margin.
            EXPECT_LE(rel_err(got, want), 1e-4) << "layer " << l << " nu " << nu;
        }
        fngd_stats_t st = get_stats(h);
        double mean_graft = 0;
        for (double x : nu_graft) mean_graft += x / nu_graft.size();
        double want_scale = c.control == FNGD_STEP_GRAFT ? mean_graft : nu_kl;
        EXPECT_NEAR(st.last_step_scale, want_scale, 1e-4 * want_scale);
        // The KL of the clipped step, quadratic in its size: (lr nu)^2 <delta, g> = kl_clip.
        if (c.control == FNGD_STEP_KL_CLIP && nu_kl < 1)
            EXPECT_NEAR((double)lr * lr * nu_kl * nu_kl * vg, c.kl_clip, 1e-3 * c.kl_clip);
        if (phase == 0) {
            ASSERT_EQ(FNGD_SUCCESS, fngd_end_epoch(h, nullptr));
            ASSERT_EQ(FNGD_SUCCESS, fngd_end_epoch(plain, nullptr));
        }
    }
}

TEST(StepControl, KlClipScalesTheWholeUpdate) {
    check_control({FNGD_STEP_KL_CLIP, FNGD_OUTPUT_WRITE_GRAD, 1e-6});  // clips
    check_control({FNGD_STEP_KL_CLIP, FNGD_OUTPUT_APPLY_SGD, 1e-6});
    check_control({FNGD_STEP_KL_CLIP, FNGD_OUTPUT_WRITE_GRAD, 1e12});  // never clips: nu = 1
}

TEST(StepControl, GraftGivesEachLayerTheSgdStepLength) {
    check_control({FNGD_STEP_GRAFT, FNGD_OUTPUT_WRITE_GRAD, 1e-3});
    check_control({FNGD_STEP_GRAFT, FNGD_OUTPUT_APPLY_SGD, 1e-3});
}

TEST(StepControl, NoneLeavesScaleOne) {
    Model m;
    m.add(fngd_generic_desc(4));
    Rng rng(903);
    m.randomize(rng, 5);
    Handle h;
    ASSERT_TRUE(make_handle(base_config(5, 5), m, h));
    auto ids = iota_ids(5);
    ASSERT_TRUE(step_ok(h, m, 5, ids.data()));
    EXPECT_EQ(1.0, get_stats(h).last_step_scale);
}

}  // namespace
