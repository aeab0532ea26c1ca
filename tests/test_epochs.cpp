// State over several steps and epochs: reuse steps use exactly the stored coefficients,
// recompute every R epochs, fallback for unseen ids, position keys, the damping retry path,
// global-mode loss weights, the library's SGD update and the stats counters. Every test runs on
// each backend of the binary (backend_param.h).
#include "alloc.h"
#include "epoch.h"
#include "state_format.h"
#include "test_util.h"

using namespace fngd_test;

namespace {

fngd_layer_desc_t small_conv() {
    fngd_layer_desc_t d = fngd_conv2d_desc(2, 3, 6, 5, 3, 3, 1);
    d.stride_h = d.stride_w = 2;
    d.pad_h = d.pad_w = 1;
    return d;
}
fngd_layer_desc_t seq_linear() {
    fngd_layer_desc_t d = fngd_linear_desc(8, 4, 1);
    d.positions = 2;
    return d;
}

// Four layers of every kind; their data are independent random batches.
void build_model(Model& m) {
    m.add(small_conv());
    m.add(fngd_norm_affine_desc(3, 9, 1));
    m.add(seq_linear());
    m.add(fngd_generic_desc(5));
}

double grad_scale(const fngd_config_t& cfg, int N) {
    return cfg.grad_convention == FNGD_GRAD_MEAN_LOSS ? (double)N : 1.0;
}

std::vector<double> to_double(const std::vector<float>& v) {
    return std::vector<double>(v.begin(), v.end());
}

// The direction of block b must be sum_i alpha_i g_i for the given alpha (a reuse step: the
// library only gathers and reduces, so the tolerance is the reduction's alone).
void expect_weighted_direction(const Model& m, const fngd_config_t& cfg, int b, int N,
                               const std::vector<double>& alpha) {
    std::vector<double> G = m.per_sample(cfg.coef_mode, b, N, grad_scale(cfg, N));
    int64_t d = m.block_len(cfg.coef_mode, b);
    std::vector<double> want((size_t)d);
    fngd_ref_weighted_sum(G.data(), N, d, alpha.data(), want.data());
    double tol = reduction_tolerance(cancellation_factor(G, N, d, alpha),
                                     reduction_length(m, cfg.coef_mode, b, N));
    ASSERT_LT(tol, kMaxMeaningfulTolerance);
    EXPECT_LE(rel_err(m.written_direction(cfg.coef_mode, b), want), tol) << "block " << b;
}

// The direction of a collect step and the stored coefficients against the dense reference.
void expect_collect_step(fngd_handle_t h, const Model& m, const fngd_config_t& cfg, int N,
                         const std::vector<int64_t>& keys) {
    for (int b = 0; b < m.num_blocks(cfg.coef_mode); ++b) {
        RefBlock ref = reference_block(m, cfg, b, N, nullptr);
        ASSERT_LT(direction_tolerance(ref), kMaxMeaningfulTolerance);
        EXPECT_LE(rel_err(m.written_direction(cfg.coef_mode, b), ref.delta),
                  direction_tolerance(ref))
            << "block " << b;
        EXPECT_LE(rel_err(to_double(get_coefs(h, b, keys)), ref.alpha), coefficient_tolerance(ref))
            << "block " << b;
    }
}

class EpochsByMode : public BackendTestWith<fngd_coef_mode_t> {};

std::string mode_name(fngd_coef_mode_t m) { return m == FNGD_COEF_GLOBAL ? "Global" : "PerLayer"; }

// Collect epoch, then two reuse epochs (R = 0: never recompute). Every reuse step's direction
// is sum_i alpha_i g_i with alpha read back by fngd_get_coefficients; nothing is factorised
// and the table is not modified.
TEST_P(EpochsByMode, ReuseUsesStoredCoefficients) {
    const int N = 13, steps = 3;
    const int64_t ns = N * steps;
    Rng rng(100 + param());
    Model m;
    build_model(m);
    fngd_config_t cfg = base_config(N, ns);
    cfg.coef_mode = param();
    const int nb = m.num_blocks(cfg.coef_mode);
    Handle h;
    ASSERT_TRUE(make_handle(cfg, m, h));
    std::vector<int64_t> all = iota_ids((int)ns);

    std::vector<int64_t> perm = rng.distinct_ids((int)ns, ns);
    for (int s = 0; s < steps; ++s) {
        std::vector<int64_t> ids(perm.begin() + s * N, perm.begin() + (s + 1) * N);
        m.randomize(rng, N);
        ASSERT_TRUE(step_ok(h, m, N, ids.data()));
        expect_collect_step(h, m, cfg, N, ids);
        EXPECT_EQ(nb * (s + 1), get_stats(h).factorizations);
    }
    ASSERT_EQ(FNGD_SUCCESS, fngd_end_epoch(h, nullptr)) << fngd_get_last_error(h);
    std::vector<std::vector<float>> table;
    for (int b = 0; b < nb; ++b) table.push_back(get_coefs(h, b, all));

    for (int epoch = 1; epoch <= 2; ++epoch) {
        fngd_stats_t st = get_stats(h);
        EXPECT_EQ(epoch, st.epoch);
        EXPECT_EQ(FNGD_PHASE_REUSE, st.phase);
        EXPECT_EQ(0, st.steps_in_epoch);
        perm = rng.distinct_ids((int)ns, ns);
        for (int s = 0; s < steps; ++s) {
            SCOPED_TRACE("epoch " + std::to_string(epoch) + " step " + std::to_string(s));
            std::vector<int64_t> ids(perm.begin() + s * N, perm.begin() + (s + 1) * N);
            m.randomize(rng, N);
            m.fill_grads(777.0f);
            ASSERT_TRUE(step_ok(h, m, N, ids.data()));
            for (int b = 0; b < nb; ++b)
                expect_weighted_direction(m, cfg, b, N, to_double(get_coefs(h, b, ids)));
        }
        st = get_stats(h);
        EXPECT_EQ(nb * steps, st.factorizations);
        EXPECT_EQ(steps, st.steps_in_epoch);
        EXPECT_EQ((epoch + 1) * steps, st.steps_total);
        EXPECT_EQ(0, st.fallback_ids);
        for (int b = 0; b < nb; ++b) {
            auto now = get_coefs(h, b, all);
            EXPECT_EQ(0, std::memcmp(now.data(), table[(size_t)b].data(), now.size() * sizeof(float)))
                << "reuse steps changed the coefficient table";
        }
        ASSERT_EQ(FNGD_SUCCESS, fngd_end_epoch(h, nullptr));
    }
}

// R = 2: epochs 0 and 2 collect (factorise, store new coefficients), 1 and 3 reuse.
TEST_P(EpochsByMode, RecomputeEveryTwoEpochs) {
    const int N = 7, steps = 2;
    const int64_t ns = N * steps;
    Rng rng(200 + param());
    Model m;
    build_model(m);
    fngd_config_t cfg = base_config(N, ns);
    cfg.coef_mode = param();
    cfg.recompute_every = 2;
    const int nb = m.num_blocks(cfg.coef_mode);
    Handle h;
    ASSERT_TRUE(make_handle(cfg, m, h));
    const fngd_phase_t phases[] = {FNGD_PHASE_COLLECT, FNGD_PHASE_REUSE, FNGD_PHASE_COLLECT,
                                   FNGD_PHASE_REUSE, FNGD_PHASE_COLLECT};
    const int64_t collects_before[] = {0, 1, 1, 2, 2};
    for (int epoch = 0; epoch < 4; ++epoch) {
        fngd_stats_t st = get_stats(h);
        ASSERT_EQ(epoch, st.epoch);
        ASSERT_EQ(phases[epoch], st.phase);
        EXPECT_EQ(collects_before[epoch] * steps * nb, st.factorizations);
        std::vector<int64_t> perm = rng.distinct_ids((int)ns, ns);
        for (int s = 0; s < steps; ++s) {
            SCOPED_TRACE("epoch " + std::to_string(epoch) + " step " + std::to_string(s));
            std::vector<int64_t> ids(perm.begin() + s * N, perm.begin() + (s + 1) * N);
            m.randomize(rng, N);
            if (phases[epoch] == FNGD_PHASE_COLLECT) {
                // Coefficients before the step: the step must replace them with this batch's.
                ASSERT_TRUE(step_ok(h, m, N, ids.data()));
                expect_collect_step(h, m, cfg, N, ids);
            } else {
                ASSERT_TRUE(step_ok(h, m, N, ids.data()));
                for (int b = 0; b < nb; ++b)
                    expect_weighted_direction(m, cfg, b, N, to_double(get_coefs(h, b, ids)));
            }
        }
        ASSERT_EQ(FNGD_SUCCESS, fngd_end_epoch(h, nullptr));
    }
    fngd_stats_t st = get_stats(h);
    EXPECT_EQ(4, st.epoch);
    EXPECT_EQ(FNGD_PHASE_COLLECT, st.phase);
    EXPECT_EQ(2 * steps * nb, st.factorizations);
}

FNGD_INSTANTIATE_BACKENDS_WITH(EpochsByMode,
                               ::testing::Values(FNGD_COEF_PER_LAYER, FNGD_COEF_GLOBAL), mode_name);

// Ids never seen in the collect epoch get the stored mean of their set or 1/N, and are
// counted in stats.fallback_ids.
struct FallbackCase {
    fngd_coef_mode_t mode;
    fngd_fallback_t fallback;
};
class Fallback : public BackendTestWith<FallbackCase> {};

TEST_P(Fallback, UnseenIdsUseFallbackAndAreCounted) {
    const int N = 7;
    const int64_t seen = 2 * N, ns = seen + 5;  // ids seen..ns-1 never visited in epoch 0
    Rng rng(300 + 2 * param().mode + param().fallback);
    Model m;
    build_model(m);
    fngd_config_t cfg = base_config(N, ns);
    cfg.coef_mode = param().mode;
    cfg.fallback = param().fallback;
    const int nb = m.num_blocks(cfg.coef_mode);
    Handle h;
    ASSERT_TRUE(make_handle(cfg, m, h));
    for (int s = 0; s < 2; ++s) {
        std::vector<int64_t> ids = iota_ids(N, s * N);
        m.randomize(rng, N);
        ASSERT_TRUE(step_ok(h, m, N, ids.data()));
    }
    ASSERT_EQ(FNGD_SUCCESS, fngd_end_epoch(h, nullptr));
    std::vector<double> mean((size_t)nb, 0.0);
    for (int b = 0; b < nb; ++b) {
        for (float a : get_coefs(h, b, iota_ids((int)seen))) mean[(size_t)b] += a / (double)seen;
        for (float a : get_coefs(h, b, iota_ids((int)(ns - seen), seen)))
            EXPECT_TRUE(std::isnan(a)) << "an unseen id has a stored coefficient";
    }

    const std::vector<std::vector<int64_t>> batches = {
        {seen, 3, seen + 3, 1, 12, seen + 1, 6},          // 3 unseen
        {seen + 4, 0, 2, seen + 2, 13, 9, 8}};            // 2 unseen
    int64_t unseen_total = 0;
    for (const auto& ids : batches) {
        m.randomize(rng, N);
        m.fill_grads(777.0f);
        ASSERT_TRUE(step_ok(h, m, N, ids.data()));
        for (int b = 0; b < nb; ++b) {
            std::vector<double> alpha = to_double(get_coefs(h, b, ids));
            for (size_t i = 0; i < ids.size(); ++i)
                if (ids[i] >= seen) {
                    alpha[i] = cfg.fallback == FNGD_FALLBACK_UNIFORM ? 1.0 / N : mean[(size_t)b];
                    if (b == 0) ++unseen_total;
                }
            // The library stores the mean as a float: one more rounding, far inside the
            // reduction tolerance (u relative on those alpha).
            expect_weighted_direction(m, cfg, b, N, alpha);
        }
        EXPECT_EQ(unseen_total, get_stats(h).fallback_ids);
    }
    EXPECT_EQ(5, unseen_total);
}

std::string fallback_name(const FallbackCase& c) {
    return mode_name(c.mode) + (c.fallback == FNGD_FALLBACK_UNIFORM ? "Uniform" : "StoredMean");
}
FNGD_INSTANTIATE_BACKENDS_WITH(
    Fallback,
    ::testing::Values(FallbackCase{FNGD_COEF_PER_LAYER, FNGD_FALLBACK_STORED_MEAN},
                      FallbackCase{FNGD_COEF_PER_LAYER, FNGD_FALLBACK_UNIFORM},
                      FallbackCase{FNGD_COEF_GLOBAL, FNGD_FALLBACK_STORED_MEAN},
                      FallbackCase{FNGD_COEF_GLOBAL, FNGD_FALLBACK_UNIFORM}),
    fallback_name);

// The single-configuration contract tests, on every backend of the binary.
class Epochs : public BackendTest {};
FNGD_INSTANTIATE_BACKENDS(Epochs);

// sample_ids == NULL keys by position: key = steps_in_epoch * max_batch + i. A short last
// batch leaves its tail keys unstored.
TEST_P(Epochs, PositionKeys) {
    const int M = 8;
    const int sizes[] = {M, M, 5};
    const int64_t ns = 3 * M;
    Rng rng(400);
    Model m;
    build_model(m);
    fngd_config_t cfg = base_config(M, ns);
    cfg.coef_mode = FNGD_COEF_PER_LAYER;
    const int nb = m.num_blocks(cfg.coef_mode);
    Handle h;
    ASSERT_TRUE(make_handle(cfg, m, h));
    for (int s = 0; s < 3; ++s) {
        m.randomize(rng, sizes[s]);
        ASSERT_TRUE(step_ok(h, m, sizes[s], nullptr));
        expect_collect_step(h, m, cfg, sizes[s], iota_ids(sizes[s], (int64_t)s * M));
    }
    for (int b = 0; b < nb; ++b)
        for (float a : get_coefs(h, b, iota_ids(M - 5, 2 * M + 5))) EXPECT_TRUE(std::isnan(a));
    EXPECT_EQ(2 * M + 5, get_stats(h).coefs_stored);
    ASSERT_EQ(FNGD_SUCCESS, fngd_end_epoch(h, nullptr));
    for (int s = 0; s < 3; ++s) {
        m.randomize(rng, sizes[s]);
        ASSERT_TRUE(step_ok(h, m, sizes[s], nullptr));
        auto keys = iota_ids(sizes[s], (int64_t)s * M);
        for (int b = 0; b < nb; ++b)
            expect_weighted_direction(m, cfg, b, sizes[s], to_double(get_coefs(h, b, keys)));
    }
    EXPECT_EQ(0, get_stats(h).fallback_ids);
}

// A singular Gram (all inputs zero, damping 0) fails Cholesky; the library raises the damping
// and retries, and the step succeeds with a zero direction. The plain alpha is then 1/shift
// (positive); the range filter keeps nothing of it, since all of it lies in K's null space.
TEST_P(Epochs, RetryOnSingularGram) {
    for (fngd_coef_mode_t mode : {FNGD_COEF_PER_LAYER, FNGD_COEF_GLOBAL}) {
        for (fngd_damping_kind_t dk : {FNGD_DAMPING_ABSOLUTE, FNGD_DAMPING_TRACE_RELATIVE})
        for (fngd_coef_filter_t filter : {FNGD_FILTER_NONE, FNGD_FILTER_RANGE}) {
            SCOPED_TRACE(std::to_string(mode) + "/" + std::to_string(dk) + "/" +
                         std::to_string(filter));
            const int N = 5;
            Model m;
            m.add(fngd_linear_desc(4, 3, 1));
            m.add(fngd_generic_desc(6));
            Rng rng(500);
            m.randomize(rng, N);
            for (int l = 0; l < m.size(); ++l) {  // every per-sample gradient is zero: K = 0
                std::fill(m[l].input.begin(), m[l].input.end(), 0.0f);
                std::fill(m[l].grad_output.begin(), m[l].grad_output.end(), 0.0f);
            }
            fngd_config_t cfg = base_config(N, N);
            cfg.coef_mode = mode;
            cfg.damping_kind = dk;
            cfg.damping = 0.0;
            cfg.coef_filter = filter;
            Handle h;
            ASSERT_TRUE(make_handle(cfg, m, h));
            m.fill_grads(777.0f);
            auto ids = iota_ids(N);
            ASSERT_TRUE(step_ok(h, m, N, ids.data()));
            fngd_stats_t st = get_stats(h);
            EXPECT_GT(st.damping_retries, 0);
            EXPECT_EQ(m.num_blocks(mode), st.factorizations);
            EXPECT_GT(st.last_damping, 0.0);
            EXPECT_TRUE(std::isfinite(st.last_damping));
            for (int b = 0; b < m.num_blocks(mode); ++b) {
                for (double x : m.written_direction(mode, b)) EXPECT_EQ(0.0, x);
                for (float a : get_coefs(h, b, ids))
                    EXPECT_TRUE(filter == FNGD_FILTER_NONE ? std::isfinite(a) && a > 0 : a == 0.0f);
            }
        }
    }
}

// Global mode: weights w_i = N alpha_i, and back-propagating the weighted mean loss
// (1/N) sum_i w_i l_i -- i.e. scaling each sample's mean-loss output gradient by w_i and
// forming the ordinary weight gradient -- reproduces the direction of a reuse step.
TEST_P(Epochs, GlobalLossWeightsReproduceDirection) {
    const int N = 7;
    const int64_t seen = 2 * N, ns = seen + 1;  // id `seen` is never visited
    Rng rng(600);
    Model m;
    build_model(m);
    fngd_config_t cfg = base_config(N, ns);
    cfg.coef_mode = FNGD_COEF_GLOBAL;
    Handle h;
    ASSERT_TRUE(make_handle(cfg, m, h));
    Buf w((size_t)N, -1.0f);  // backend memory
    auto ids0 = iota_ids(N);
    EXPECT_EQ(FNGD_ERROR_INVALID_STATE, fngd_get_loss_weights(h, N, ids0.data(), w.data(), nullptr));
    for (int s = 0; s < 2; ++s) {
        auto ids = iota_ids(N, s * N);
        m.randomize(rng, N);
        ASSERT_TRUE(step_ok(h, m, N, ids.data()));
    }
    ASSERT_EQ(FNGD_SUCCESS, fngd_end_epoch(h, nullptr));

    std::vector<int64_t> ids = {5, seen, 0, 11, 7, 2, 13};
    ASSERT_EQ(FNGD_SUCCESS, fngd_get_loss_weights(h, N, ids.data(), w.data(), nullptr))
        << fngd_get_last_error(h);
    test_sync();
    EXPECT_EQ(1, get_stats(h).fallback_ids);
    std::vector<float> alpha = get_coefs(h, 0, ids);
    double mean = 0;
    for (float a : get_coefs(h, 0, iota_ids((int)seen))) mean += a / (double)seen;
    for (int i = 0; i < N; ++i) {
        double a = ids[(size_t)i] == seen ? mean : alpha[(size_t)i];
        // N * alpha rounded to float, alpha possibly the float-stored mean: 2 roundings.
        EXPECT_NEAR(N * a, w[(size_t)i], 4 * kFloatEps * std::fabs(N * a)) << "sample " << i;
    }

    // The weighted mean-loss gradient in double: sum_i w_i * (caller's gradient of sample i).
    m.randomize(rng, N);
    std::vector<double> wd(w.begin(), w.end());
    std::vector<double> want;
    int64_t d = m.block_len(cfg.coef_mode, 0);
    std::vector<double> G = m.per_sample(cfg.coef_mode, 0, N, 1.0);  // caller's (mean-loss) units
    want.assign((size_t)d, 0.0);
    fngd_ref_weighted_sum(G.data(), N, d, wd.data(), want.data());
    ASSERT_TRUE(step_ok(h, m, N, ids.data()));
    EXPECT_EQ(2, get_stats(h).fallback_ids);
    double tol = reduction_tolerance(cancellation_factor(G, N, d, wd), reduction_length(m, cfg.coef_mode, 0, N));
    EXPECT_LE(rel_err(m.written_direction(cfg.coef_mode, 0), want), tol);
}

// FNGD_OUTPUT_APPLY_SGD: the parameters follow the SGD reference (momentum, weight decay,
// learning-rate change) applied to the direction a twin WRITE_GRAD handle produces on the same
// data, over a collect epoch and two reuse epochs. The APPLY_SGD layers have no grad buffers.
TEST_P(Epochs, ApplySgdFollowsReference) {
    struct Opt {
        float momentum, weight_decay;
    };
    for (Opt opt : {Opt{0.9f, 0.01f}, Opt{0.0f, 0.0f}, Opt{0.5f, 0.0f}}) {
        SCOPED_TRACE("momentum " + std::to_string(opt.momentum));
        const int N = 6, steps = 2;
        const int64_t ns = N * steps;
        Rng rng(700);
        Model a, b;
        build_model(a);
        build_model(b);
        for (int l = 0; l < a.size(); ++l) {
            rng.fill(a[l].weight, 0.0, 1.0);
            rng.fill(a[l].bias, 0.0, 1.0);
            a[l].desc.grad_weight = nullptr;
            a[l].desc.grad_bias = nullptr;
        }
        fngd_config_t cfg = base_config(N, ns);
        cfg.coef_mode = FNGD_COEF_PER_LAYER;
        cfg.learning_rate = 0.05f;
        cfg.momentum = opt.momentum;
        cfg.weight_decay = opt.weight_decay;
        fngd_config_t cfg_apply = cfg, cfg_write = cfg;
        cfg_apply.output = FNGD_OUTPUT_APPLY_SGD;
        cfg_write.output = FNGD_OUTPUT_WRITE_GRAD;
        Handle ha, hb;
        ASSERT_TRUE(make_handle(cfg_apply, a, ha));
        ASSERT_TRUE(make_handle(cfg_write, b, hb));

        std::vector<std::vector<double>> param, mom;
        for (int l = 0; l < a.size(); ++l) {
            param.push_back(a[l].params());
            mom.push_back(std::vector<double>(param.back().size(), 0.0));
        }
        double lr = cfg.learning_rate, budget = 0;
        for (int epoch = 0; epoch < 3; ++epoch) {
            for (int s = 0; s < steps; ++s) {
                if (epoch == 1 && s == 1) {  // a schedule: takes effect at the next step
                    ASSERT_EQ(FNGD_SUCCESS, fngd_set_learning_rate(ha, 0.02f));
                    lr = 0.02f;
                }
                auto ids = iota_ids(N, s * N);
                b.randomize(rng, N);
                a.copy_batch(b);
                ASSERT_TRUE(step_ok(ha, a, N, ids.data()));
                ASSERT_TRUE(step_ok(hb, b, N, ids.data()));
                for (int l = 0; l < a.size(); ++l) {
                    std::vector<double> dir = b[l].written_direction();
                    fngd_ref_sgd(param[(size_t)l].data(), dir.data(), mom[(size_t)l].data(),
                                 (int64_t)dir.size(), lr, opt.momentum, opt.weight_decay);
                    // Per step, float rounding of d = dir + wd p, mom = mu mom + d and
                    // p -= lr mom is a few u of |p| + lr |mom|; the momentum buffer carries
                    // its errors forward with weight sum mu^k <= 1/(1 - mu).
                    budget += norm2(param[(size_t)l]) +
                              lr * norm2(mom[(size_t)l]) / (1.0 - opt.momentum);
                }
            }
            ASSERT_EQ(FNGD_SUCCESS, fngd_end_epoch(ha, nullptr));
            ASSERT_EQ(FNGD_SUCCESS, fngd_end_epoch(hb, nullptr));
            std::vector<double> got, want;
            for (int l = 0; l < a.size(); ++l) {
                auto p = a[l].params();
                got.insert(got.end(), p.begin(), p.end());
                want.insert(want.end(), param[(size_t)l].begin(), param[(size_t)l].end());
            }
            EXPECT_LE(rel_err(got, want) * norm2(want), 8 * kFloatEps * budget)
                << "after epoch " << epoch;
        }
    }
}

// The state image of h and where its counters section's payload starts (one layer).
std::vector<uint8_t> state_image(fngd_handle_t h, size_t* counters) {
    size_t bytes = 0;
    EXPECT_EQ(FNGD_SUCCESS, fngd_state_size(h, &bytes));
    std::vector<uint8_t> img(bytes);
    EXPECT_EQ(FNGD_SUCCESS, fngd_save_state(h, img.data(), bytes, nullptr));
    *counters = FNGD_STATE_PREAMBLE_BYTES + FNGD_STATE_CONFIG_BYTES + FNGD_STATE_LAYER_BYTES +
                FNGD_STATE_SECTION_HEADER_BYTES;
    return img;
}

// One phase rule (fngd_epoch_phase) for a new handle, every fngd_end_epoch and a loaded state:
// collect in epoch 0 and every multiple of R > 0, reuse otherwise. The checkpoint still carries
// the have_collected word of format 1, now derived: 1 exactly when epoch > 0.
TEST_P(Epochs, PhaseFollowsOneRuleAcrossCreateEndEpochAndLoad) {
    const int N = 3;
    Rng rng(850);
    for (int R : {0, 1, 2, 3}) {
        SCOPED_TRACE("recompute_every " + std::to_string(R));
        fngd_config_t cfg = base_config(N, N);
        cfg.recompute_every = R;
        const fngd_phase_t want[] = {FNGD_PHASE_COLLECT,
                                     R == 1 ? FNGD_PHASE_COLLECT : FNGD_PHASE_REUSE,
                                     R == 1 || R == 2 ? FNGD_PHASE_COLLECT : FNGD_PHASE_REUSE,
                                     R == 1 || R == 3 ? FNGD_PHASE_COLLECT : FNGD_PHASE_REUSE,
                                     R == 1 || R == 2 ? FNGD_PHASE_COLLECT : FNGD_PHASE_REUSE};
        Model m;
        m.add(fngd_linear_desc(3, 2, 1));
        Handle h;
        ASSERT_TRUE(make_handle(cfg, m, h));
        size_t counters = 0;
        std::vector<uint8_t> img = state_image(h, &counters);  // fresh: nothing collected
        EXPECT_EQ(0u, fngd_load_u32(img.data() + counters));
        EXPECT_EQ((uint32_t)FNGD_PHASE_COLLECT, fngd_load_u32(img.data() + counters + 4));
        EXPECT_EQ(0u, fngd_load_u32(img.data() + counters + 48)) << "have_collected";
        const std::vector<int64_t> ids = iota_ids(N);
        for (int epoch = 0; epoch < 5; ++epoch) {
            ASSERT_EQ(want[epoch], fngd_epoch_phase(&cfg, epoch)) << "epoch " << epoch;
            ASSERT_EQ(want[epoch], get_stats(h).phase) << "epoch " << epoch;
            m.randomize(rng, N);
            ASSERT_TRUE(step_ok(h, m, N, ids.data()));
            ASSERT_EQ(FNGD_SUCCESS, fngd_end_epoch(h, nullptr));
            // The image of epoch + 1: its derived collected flag, and a fresh handle that loads
            // it sits in the same epoch and phase.
            img = state_image(h, &counters);
            EXPECT_EQ((uint32_t)(epoch + 1), fngd_load_u32(img.data() + counters));
            EXPECT_EQ(1u, fngd_load_u32(img.data() + counters + 48)) << "have_collected";
            Model m2;
            m2.add(fngd_linear_desc(3, 2, 1));
            Handle h2;
            ASSERT_TRUE(make_handle(cfg, m2, h2));
            ASSERT_EQ(FNGD_SUCCESS, fngd_load_state(h2, img.data(), img.size()))
                << fngd_get_last_error(h2);
            EXPECT_EQ(epoch + 1, get_stats(h2).epoch);
            EXPECT_EQ(fngd_epoch_phase(&cfg, epoch + 1), get_stats(h2).phase);
        }
    }
}

// The stats fields after collect and reuse steps, against what the test knows.
TEST_P(Epochs, StatsFields) {
    const int N = 5;
    const int64_t ns = 2 * N + 3;
    Rng rng(800);
    Model m;
    m.add(seq_linear());
    m.add(fngd_norm_affine_desc(4, 3, 1));
    fngd_config_t cfg = base_config(N, ns);
    Handle h;
    ASSERT_TRUE(make_handle(cfg, m, h));
    fngd_stats_t st = get_stats(h);
    EXPECT_EQ(sizeof(fngd_stats_t), st.struct_size);
    EXPECT_EQ(0, st.epoch);
    EXPECT_EQ(FNGD_PHASE_COLLECT, st.phase);
    EXPECT_EQ(0, st.steps_total);
    EXPECT_EQ(0, st.factorizations);
    EXPECT_EQ(0, st.coefs_stored);

    std::vector<int64_t> perm = rng.distinct_ids(2 * N, ns);
    double last_lambda = 0;
    for (int s = 0; s < 2; ++s) {
        std::vector<int64_t> ids(perm.begin() + s * N, perm.begin() + (s + 1) * N);
        m.randomize(rng, N);
        ASSERT_TRUE(step_ok(h, m, N, ids.data()));
        last_lambda = reference_block(m, cfg, m.size() - 1, N, nullptr).lambda;
        st = get_stats(h);
        EXPECT_EQ(0, st.epoch);
        EXPECT_EQ(s + 1, st.steps_total);
        EXPECT_EQ(s + 1, st.steps_in_epoch);
        EXPECT_EQ(2 * (s + 1), st.factorizations);
        EXPECT_EQ(N * (s + 1), st.coefs_stored);
        EXPECT_NEAR(last_lambda, st.last_damping, 1e-4 * last_lambda);
    }
    double lo = INFINITY, hi = -INFINITY, sum = 0;
    int64_t count = 0;
    for (int b = 0; b < 2; ++b)
        for (float a : get_coefs(h, b, perm)) {
            lo = std::min(lo, (double)a);
            hi = std::max(hi, (double)a);
            sum += a;
            ++count;
        }
    EXPECT_EQ(lo, st.coef_min);
    EXPECT_EQ(hi, st.coef_max);
    EXPECT_NEAR(sum / count, st.coef_mean, 1e-12 * count * std::max(std::fabs(lo), std::fabs(hi)));
    EXPECT_EQ(0, st.damping_retries);
    EXPECT_EQ(0, st.fallback_ids);
    EXPECT_EQ(0, st.rejected_steps);

    ASSERT_EQ(FNGD_SUCCESS, fngd_end_epoch(h, nullptr));
    st = get_stats(h);
    EXPECT_EQ(1, st.epoch);
    EXPECT_EQ(FNGD_PHASE_REUSE, st.phase);
    EXPECT_EQ(0, st.steps_in_epoch);
    EXPECT_EQ(2, st.steps_total);
    std::vector<int64_t> ids = {perm[0], perm[1], perm[2], -1};
    for (int64_t k = 0; k < ns; ++k)  // the last one: an id the collect epoch never saw
        if (std::find(perm.begin(), perm.end(), k) == perm.end()) {
            ids.back() = k;
            break;
        }
    m.randomize(rng, 4);
    ASSERT_TRUE(step_ok(h, m, 4, ids.data()));
    st = get_stats(h);
    EXPECT_EQ(1, st.steps_in_epoch);
    EXPECT_EQ(3, st.steps_total);
    EXPECT_EQ(4, st.factorizations);
    EXPECT_EQ(1, st.fallback_ids);
    EXPECT_EQ(2 * N, st.coefs_stored);
    EXPECT_EQ(lo, st.coef_min);
    EXPECT_EQ(hi, st.coef_max);
    EXPECT_EQ(FNGD_SUCCESS, fngd_end_epoch(h, nullptr));
    EXPECT_EQ(2, get_stats(h).epoch);
    EXPECT_EQ(FNGD_PHASE_REUSE, get_stats(h).phase);
}

}  // namespace

namespace {

// Global mode with position keys: each fngd_get_loss_weights call stands for one reuse step
// (keys steps_in_epoch * max_batch + i), so consecutive calls walk the epoch's keys.
TEST_P(Epochs, LossWeightsWithPositionKeys) {
    const int M = 6;
    const int64_t ns = 2 * M;
    Rng rng(650);
    Model m;
    build_model(m);
    fngd_config_t cfg = base_config(M, ns);
    cfg.coef_mode = FNGD_COEF_GLOBAL;
    Handle h;
    ASSERT_TRUE(make_handle(cfg, m, h));
    for (int s = 0; s < 2; ++s) {
        m.randomize(rng, M);
        ASSERT_TRUE(step_ok(h, m, M, nullptr));
    }
    ASSERT_EQ(FNGD_SUCCESS, fngd_end_epoch(h, nullptr));
    for (int s = 0; s < 2; ++s) {
        Buf w((size_t)M, -1.0f);  // backend memory
        ASSERT_EQ(FNGD_SUCCESS, fngd_get_loss_weights(h, M, nullptr, w.data(), nullptr))
            << fngd_get_last_error(h);
        test_sync();
        std::vector<float> alpha = get_coefs(h, 0, iota_ids(M, (int64_t)s * M));
        for (int i = 0; i < M; ++i)
            EXPECT_NEAR(M * (double)alpha[(size_t)i], w[(size_t)i],
                        2 * kFloatEps * std::fabs(M * alpha[(size_t)i]))
                << "step " << s << " sample " << i;
    }
    EXPECT_EQ(0, get_stats(h).fallback_ids);
}

// With FNGD_RHS_CUSTOM the right-hand side is needed only where a solve happens: a reuse step
// takes rhs = NULL, and the stored coefficients are those of the custom solve.
TEST_P(Epochs, CustomRhsOnlyInCollectPhase) {
    const int N = 7;
    Rng rng(660);
    Model m;
    build_model(m);
    fngd_config_t cfg = base_config(N, N);
    cfg.rhs = FNGD_RHS_CUSTOM;
    cfg.coef_mode = FNGD_COEF_GLOBAL;
    Handle h;
    ASSERT_TRUE(make_handle(cfg, m, h));
    Buf rhs((size_t)N);  // backend memory
    for (float& r : rhs) r = (float)rng.uniform(0.2, 3.0);
    auto ids = iota_ids(N);
    m.randomize(rng, N);
    ASSERT_TRUE(step_ok(h, m, N, ids.data(), rhs.data()));
    RefBlock ref = reference_block(m, cfg, 0, N, rhs.data());
    EXPECT_LE(rel_err(to_double(get_coefs(h, 0, ids)), ref.alpha), coefficient_tolerance(ref));
    ASSERT_EQ(FNGD_SUCCESS, fngd_end_epoch(h, nullptr));
    m.randomize(rng, N);
    ASSERT_TRUE(step_ok(h, m, N, ids.data(), nullptr));
    expect_weighted_direction(m, cfg, 0, N, to_double(get_coefs(h, 0, ids)));
}

}  // namespace


namespace {

// A reuse step allocates nothing (it must be capturable in a CUDA graph and cost what an SGD
// step costs); the host allocator's counter sees every library allocation.
TEST_P(Epochs, ReuseStepAllocatesNothing) {
    for (fngd_output_t out : {FNGD_OUTPUT_WRITE_GRAD, FNGD_OUTPUT_APPLY_SGD}) {
        const int N = 7;
        Rng rng(670);
        Model m;
        build_model(m);
        fngd_config_t cfg = base_config(N, 2 * N);
        cfg.output = out;
        Handle h;
        ASSERT_TRUE(make_handle(cfg, m, h));
        for (int s = 0; s < 2; ++s) {
            m.randomize(rng, N);
            auto ids = iota_ids(N, s * N);
            ASSERT_TRUE(step_ok(h, m, N, ids.data()));
        }
        ASSERT_EQ(FNGD_SUCCESS, fngd_end_epoch(h, nullptr));
        m.randomize(rng, N);
        auto ids = iota_ids(N, 3);
        fngd_test_fail_alloc_after(-1);  // reset the counter
        ASSERT_TRUE(step_ok(h, m, N, ids.data()));
        EXPECT_EQ(0, fngd_test_fail_alloc_after(-1)) << "allocations in a reuse step";
    }
}

}  // namespace
