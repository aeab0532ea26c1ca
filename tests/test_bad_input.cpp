// One test per kind of bad input: the status code, a non-empty fngd_get_last_error message, and
// that nothing changed -- parameters, grad buffers, stats (save rejected_steps, which counts the
// refusal), stored coefficients -- and that the hidden state (momentum, epoch bookkeeping)
// is intact: the next valid step gives bit-identical results to a twin handle that never saw
// the bad call. Every test runs on each backend of the binary (backend_param.h).
#include "test_util.h"

using namespace fngd_test;

namespace {

constexpr int kN = 5;
constexpr int64_t kSamples = 4 * kN;

// Everything observable about a handle and its model, compared bitwise (NaN-safe).
struct Snapshot {
    std::vector<std::vector<float>> buffers;
    std::vector<std::vector<float>> coefs;
    fngd_stats_t stats;
    int num_layers = 0;
};

template <class A, class B>
bool same_bits(const A& a, const B& b) {
    return a.size() == b.size() &&
           (a.empty() || std::memcmp(a.data(), b.data(), a.size() * sizeof(float)) == 0);
}

class BadInput : public BackendTest {
  protected:
    Model m, twin;
    fngd_config_t cfg{};
    Handle h, ht;
    Rng rng{900};
    std::vector<int64_t> ids;

    // Two identical handles (APPLY_SGD with momentum, grad buffers registered too, so both
    // parameters and grad buffers are written) after one valid collect step, optionally moved
    // into the reuse phase; then a fresh valid batch in m.
    void init(fngd_coef_mode_t mode = FNGD_COEF_PER_LAYER, bool reuse = false,
              void (*tweak)(fngd_config_t&) = nullptr) {
        for (Model* x : {&m, &twin}) {
            fngd_layer_desc_t lin = fngd_linear_desc(4, 3, 1);
            lin.positions = 2;
            x->add(lin);
            x->add(fngd_conv2d_desc(2, 2, 4, 5, 2, 3, 1));
            x->add(fngd_norm_affine_desc(3, 4, 1));
            x->add(fngd_generic_desc(7));
        }
        for (int l = 0; l < m.size(); ++l) {
            rng.fill(m[l].weight, 0, 1);
            rng.fill(m[l].bias, 0, 1);
            twin[l].weight = m[l].weight;
            twin[l].bias = m[l].bias;
        }
        cfg = base_config(kN, kSamples);
        cfg.coef_mode = mode;
        cfg.output = FNGD_OUTPUT_APPLY_SGD;
        cfg.momentum = 0.9f;
        cfg.weight_decay = 0.01f;
        if (tweak) tweak(cfg);
        ASSERT_TRUE(make_handle(cfg, m, h));
        ASSERT_TRUE(make_handle(cfg, twin, ht));
        ids = iota_ids(kN);
        Buf rhs((size_t)kN, 1.5f);  // backend memory
        const float* r = cfg.rhs == FNGD_RHS_CUSTOM ? rhs.data() : nullptr;
        new_batch();
        ASSERT_TRUE(step_ok(h, m, kN, ids.data(), r));
        ASSERT_TRUE(step_ok(ht, twin, kN, ids.data(), r));
        if (reuse) {
            ASSERT_EQ(FNGD_SUCCESS, fngd_end_epoch(h, nullptr));
            ASSERT_EQ(FNGD_SUCCESS, fngd_end_epoch(ht, nullptr));
        }
        ids = iota_ids(kN, kN);
        new_batch();
    }
    // Back to no handles and no layers, for tests that run init() more than once.
    void reset() {
        fngd_destroy(h.h);
        h.h = nullptr;
        fngd_destroy(ht.h);
        ht.h = nullptr;
        m.layers.clear();
        twin.layers.clear();
    }
    // The same random batch in both models.
    void new_batch() {
        m.randomize(rng, kN);
        twin.copy_batch(m);
    }

    Snapshot snap() {
        Snapshot s;
        test_sync();  // the buffers are read after the library's device work
        for (int l = 0; l < m.size(); ++l)
            for (auto* v : {&m[l].weight, &m[l].bias, &m[l].grad_weight, &m[l].grad_bias})
                s.buffers.emplace_back(v->begin(), v->end());
        for (int b = 0; b < m.num_blocks(cfg.coef_mode); ++b)
            s.coefs.push_back(get_coefs(h, b, iota_ids((int)kSamples)));
        s.stats = get_stats(h);
        EXPECT_EQ(FNGD_SUCCESS, fngd_get_num_layers(h, &s.num_layers));
        return s;
    }

    // The call failed with `want`, said why, and changed nothing. `rejected_step`: it was an
    // fngd_step, which counts itself in stats.rejected_steps.
    void expect_rejected(fngd_status_t got, fngd_status_t want, const Snapshot& before,
                         bool rejected_step) {
        EXPECT_EQ(want, got) << fngd_status_string(got) << ": " << fngd_get_last_error(h);
        EXPECT_STRNE("", fngd_get_last_error(h));
        Snapshot after = snap();
        ASSERT_EQ(before.buffers.size(), after.buffers.size());
        for (size_t k = 0; k < before.buffers.size(); ++k)
            EXPECT_TRUE(same_bits(before.buffers[k], after.buffers[k]))
                << "buffer " << k % 4 << " of layer " << k / 4 << " changed";
        for (size_t b = 0; b < before.coefs.size(); ++b)
            EXPECT_TRUE(same_bits(before.coefs[b], after.coefs[b])) << "coefficients of set " << b;
        EXPECT_EQ(before.num_layers, after.num_layers);
        const fngd_stats_t &x = before.stats, &y = after.stats;
        EXPECT_EQ(x.epoch, y.epoch);
        EXPECT_EQ(x.phase, y.phase);
        EXPECT_EQ(x.steps_total, y.steps_total);
        EXPECT_EQ(x.steps_in_epoch, y.steps_in_epoch);
        EXPECT_EQ(x.factorizations, y.factorizations);
        EXPECT_EQ(x.damping_retries, y.damping_retries);
        EXPECT_EQ(x.fallback_ids, y.fallback_ids);
        EXPECT_EQ(x.coefs_stored, y.coefs_stored);
        EXPECT_EQ(0, std::memcmp(&x.coef_min, &y.coef_min, 3 * sizeof(double)));
        EXPECT_EQ(0, std::memcmp(&x.last_damping, &y.last_damping, sizeof(double)));
        EXPECT_EQ(x.rejected_steps + (rejected_step ? 1 : 0), y.rejected_steps);
    }

    // The next valid step of h equals the twin's bit for bit (momentum, phase and keys intact).
    void expect_same_future() {
        new_batch();
        Buf rhs((size_t)kN, 0.75f);  // backend memory
        const float* r = cfg.rhs == FNGD_RHS_CUSTOM ? rhs.data() : nullptr;
        ASSERT_TRUE(step_ok(h, m, kN, ids.data(), r));
        ASSERT_TRUE(step_ok(ht, twin, kN, ids.data(), r));
        for (int l = 0; l < m.size(); ++l) {
            EXPECT_TRUE(same_bits(m[l].weight, twin[l].weight)) << "layer " << l;
            EXPECT_TRUE(same_bits(m[l].bias, twin[l].bias)) << "layer " << l;
            EXPECT_TRUE(same_bits(m[l].grad_weight, twin[l].grad_weight)) << "layer " << l;
        }
        fngd_stats_t a = get_stats(h), b = get_stats(ht);
        EXPECT_EQ(a.steps_total, b.steps_total);
        EXPECT_EQ(a.factorizations, b.factorizations);
        EXPECT_EQ(a.epoch, b.epoch);
        EXPECT_EQ(a.phase, b.phase);
    }

    // Loss weights asked for where there are none (per-layer mode, or before the reuse
    // phase): refused with INVALID_STATE, the output array untouched, nothing else changed.
    void expect_loss_weights_invalid_state() {
        Buf w((size_t)kN, 42.0f);  // backend memory
        Snapshot s = snap();
        expect_rejected(fngd_get_loss_weights(h, kN, ids.data(), w.data(), nullptr),
                        FNGD_ERROR_INVALID_STATE, s, false);
        for (float x : w) EXPECT_EQ(42.0f, x);
        expect_same_future();
    }

    fngd_status_t step_with(std::vector<fngd_layer_batch_t> b, int n, const int64_t* id,
                            const float* rhs = nullptr) {
        return fngd_step(h, n, id, b.data(), rhs, nullptr);
    }
};

TEST_P(BadInput, NullHandle) {
    init();
    auto b = m.batches();
    fngd_stats_t st;
    st.struct_size = sizeof st;
    int n = 0;
    size_t bytes = 0;
    float c = 0, w[kN];
    fngd_gram_method_t gm;
    fngd_layer_desc_t d = fngd_linear_desc(2, 2, 0);
    const fngd_status_t got[] = {
        fngd_step(nullptr, kN, ids.data(), b.data(), nullptr, nullptr),
        fngd_end_epoch(nullptr, nullptr),
        fngd_add_layer(nullptr, &d, &n),
        fngd_set_layer_buffers(nullptr, 0, nullptr, nullptr, nullptr, nullptr),
        fngd_get_num_layers(nullptr, &n),
        fngd_get_layer_gram_method(nullptr, 0, &gm),
        fngd_prepare(nullptr),
        fngd_get_workspace_size(nullptr, &bytes),
        fngd_set_workspace(nullptr, nullptr, 0),
        fngd_get_loss_weights(nullptr, kN, ids.data(), w, nullptr),
        fngd_set_learning_rate(nullptr, 0.1f),
        fngd_get_stats(nullptr, &st),
        fngd_get_coefficients(nullptr, 0, 1, ids.data(), &c),
    };
    for (size_t k = 0; k < sizeof got / sizeof got[0]; ++k) {
        EXPECT_EQ(FNGD_ERROR_INVALID_ARGUMENT, got[k]) << "call " << k;
    }
    EXPECT_STRNE("", fngd_get_last_error(nullptr));
    expect_same_future();
}

TEST_P(BadInput, NullConfigOrHandleOutput) {
    fngd_handle_t out = reinterpret_cast<fngd_handle_t>(0x1);
    EXPECT_EQ(FNGD_ERROR_INVALID_ARGUMENT, fngd_create(nullptr, &out));
    EXPECT_EQ(nullptr, out);
    EXPECT_STRNE("", fngd_get_last_error(nullptr));
    fngd_config_t c = base_config(4, 4);
    EXPECT_EQ(FNGD_ERROR_INVALID_ARGUMENT, fngd_create(&c, nullptr));
    EXPECT_STRNE("", fngd_get_last_error(nullptr));
    EXPECT_EQ(FNGD_ERROR_INVALID_ARGUMENT, fngd_config_init(nullptr));
}

TEST_P(BadInput, NullBatches) {
    init();
    Snapshot s = snap();
    expect_rejected(fngd_step(h, kN, ids.data(), nullptr, nullptr, nullptr),
                    FNGD_ERROR_INVALID_ARGUMENT, s, true);
    expect_same_future();
}

TEST_P(BadInput, NullInputPointers) {
    for (bool reuse : {false, true}) {
        SCOPED_TRACE(reuse ? "reuse" : "collect");
        reset();
        init(FNGD_COEF_PER_LAYER, reuse);
        for (int l = 0; l < m.size(); ++l) {
            Snapshot s = snap();
            auto b = m.batches();
            b[(size_t)l].input = nullptr;
            expect_rejected(step_with(b, kN, ids.data()), FNGD_ERROR_INVALID_ARGUMENT, s, true);
            if (m[l].desc.kind == FNGD_LAYER_GENERIC) continue;
            s = snap();
            b = m.batches();
            b[(size_t)l].grad_output = nullptr;
            expect_rejected(step_with(b, kN, ids.data()), FNGD_ERROR_INVALID_ARGUMENT, s, true);
        }
        expect_same_future();
    }
}

TEST_P(BadInput, NullOutputArguments) {
    init();
    Snapshot s = snap();
    EXPECT_EQ(FNGD_ERROR_INVALID_ARGUMENT, fngd_get_stats(h, nullptr));
    EXPECT_EQ(FNGD_ERROR_INVALID_ARGUMENT, fngd_get_num_layers(h, nullptr));
    EXPECT_EQ(FNGD_ERROR_INVALID_ARGUMENT, fngd_get_layer_gram_method(h, 0, nullptr));
    EXPECT_EQ(FNGD_ERROR_INVALID_ARGUMENT, fngd_get_workspace_size(h, nullptr));
    float c[kN];
    EXPECT_EQ(FNGD_ERROR_INVALID_ARGUMENT, fngd_get_coefficients(h, 0, kN, nullptr, c));
    EXPECT_EQ(FNGD_ERROR_INVALID_ARGUMENT, fngd_get_coefficients(h, 0, kN, ids.data(), nullptr));
    EXPECT_EQ(FNGD_ERROR_INVALID_ARGUMENT, fngd_get_coefficients(h, 99, kN, ids.data(), c));
    EXPECT_EQ(FNGD_ERROR_INVALID_ARGUMENT, fngd_get_coefficients(h, -2, kN, ids.data(), c));
    std::vector<int64_t> bad = {0, kSamples};
    EXPECT_EQ(FNGD_ERROR_INVALID_ARGUMENT, fngd_get_coefficients(h, 0, 2, bad.data(), c));
    fngd_gram_method_t gm;
    EXPECT_EQ(FNGD_ERROR_INVALID_ARGUMENT, fngd_get_layer_gram_method(h, 4, &gm));
    EXPECT_EQ(FNGD_ERROR_INVALID_ARGUMENT,
              fngd_set_layer_buffers(h, 4, nullptr, nullptr, nullptr, nullptr));
    fngd_stats_t st;
    std::memset(&st, 0, sizeof st);  // struct_size 0: not a caller of this version
    EXPECT_EQ(FNGD_ERROR_INVALID_ARGUMENT, fngd_get_stats(h, &st));
    expect_rejected(FNGD_ERROR_INVALID_ARGUMENT, FNGD_ERROR_INVALID_ARGUMENT, s, false);
    expect_same_future();
}

// Descriptors that describe no layer: add_layer refuses them and the layer count stays.
TEST_P(BadInput, WrongShapesInDescriptors) {
    fngd_config_t c = base_config(4, 8);
    Handle fresh;
    ASSERT_EQ(FNGD_SUCCESS, fngd_create(&c, &fresh.h));
    fngd_layer_desc_t ok = fngd_linear_desc(3, 2, 1);
    ASSERT_EQ(FNGD_SUCCESS, fngd_add_layer(fresh, &ok, nullptr));
    std::vector<std::pair<std::string, fngd_layer_desc_t>> bad;
    auto add = [&](const char* name, fngd_layer_desc_t d) { bad.emplace_back(name, d); };
    add("linear in 0", fngd_linear_desc(0, 2, 1));
    add("linear out -1", fngd_linear_desc(3, -1, 1));
    fngd_layer_desc_t d = fngd_linear_desc(3, 2, 1);
    d.positions = 0;
    add("linear positions 0", d);
    d.positions = -2;
    add("linear positions -2", d);
    d = fngd_linear_desc(3, 2, 2);
    add("has_bias 2", d);
    add("conv in_channels 0", fngd_conv2d_desc(0, 2, 5, 5, 3, 3, 1));
    add("conv out_channels -1", fngd_conv2d_desc(2, -1, 5, 5, 3, 3, 1));
    add("conv in_h 0", fngd_conv2d_desc(2, 2, 0, 5, 3, 3, 1));
    add("conv kernel 0", fngd_conv2d_desc(2, 2, 5, 5, 0, 3, 1));
    add("conv kernel larger than input", fngd_conv2d_desc(2, 2, 3, 3, 5, 3, 1));
    d = fngd_conv2d_desc(2, 2, 5, 5, 3, 3, 1);
    d.dilation_h = 3;  // span 7 > 5
    add("conv dilated kernel larger than input", d);
    d = fngd_conv2d_desc(2, 2, 5, 5, 3, 3, 1);
    d.stride_w = 0;
    add("conv stride 0", d);
    d = fngd_conv2d_desc(2, 2, 5, 5, 3, 3, 1);
    d.dilation_w = 0;
    add("conv dilation 0", d);
    d = fngd_conv2d_desc(2, 2, 5, 5, 3, 3, 1);
    d.pad_h = -1;
    add("conv padding -1", d);
    add("norm features 0", fngd_norm_affine_desc(0, 4, 1));
    add("norm positions 0", fngd_norm_affine_desc(3, 0, 1));
    d = fngd_norm_affine_desc(3, 4, 1);
    d.channels_last = 2;
    add("norm channels_last 2", d);
    add("generic 0 params", fngd_generic_desc(0));
    add("generic -5 params", fngd_generic_desc(-5));
    d = fngd_linear_desc(3, 2, 1);
    d.kind = (fngd_layer_kind_t)99;
    add("unknown kind", d);
    d = fngd_linear_desc(3, 2, 1);
    d.gram_method = (fngd_gram_method_t)7;
    add("unknown gram method", d);
    d = fngd_linear_desc(3, 2, 1);
    d.struct_size = 0;
    add("struct_size 0", d);
    for (auto& [name, desc] : bad) {
        int id = -7;
        EXPECT_EQ(FNGD_ERROR_INVALID_ARGUMENT, fngd_add_layer(fresh, &desc, &id)) << name;
        EXPECT_STRNE("", fngd_get_last_error(fresh)) << name;
        EXPECT_EQ(-7, id) << name;
        int n = 0;
        ASSERT_EQ(FNGD_SUCCESS, fngd_get_num_layers(fresh, &n));
        EXPECT_EQ(1, n) << name;
    }
    EXPECT_EQ(FNGD_ERROR_INVALID_ARGUMENT, fngd_add_layer(fresh, nullptr, nullptr));
    EXPECT_STRNE("", fngd_get_last_error(fresh));
}

TEST_P(BadInput, IdsOutOfRangeNegativeDuplicated) {
    for (bool reuse : {false, true}) {
        SCOPED_TRACE(reuse ? "reuse" : "collect");
        reset();
        init(FNGD_COEF_GLOBAL, reuse);
        const std::vector<std::vector<int64_t>> bad = {
            {5, 6, 7, 8, kSamples},  // == num_samples
            {5, 6, 7, 8, kSamples + 1000},
            {5, -1, 7, 8, 9},
            {5, 6, 7, 8, INT64_MIN},
            {5, 6, 5, 8, 9},  // duplicate
            {9, 6, 7, 8, 9}};
        for (const auto& b : bad) {
            Snapshot s = snap();
            expect_rejected(step_with(m.batches(), kN, b.data()), FNGD_ERROR_INVALID_ARGUMENT, s,
                            true);
            if (reuse) {  // the loss-weight query validates ids the same way
                Buf w((size_t)kN, 42.0f);  // backend memory
                s = snap();
                expect_rejected(fngd_get_loss_weights(h, kN, b.data(), w.data(), nullptr),
                                FNGD_ERROR_INVALID_ARGUMENT, s, false);
                for (float x : w) EXPECT_EQ(42.0f, x);
            }
        }
        expect_same_future();
    }
}

// Position keys past num_samples (steps_in_epoch * max_batch + N > num_samples).
TEST_P(BadInput, PositionKeysPastNumSamples) {
    init();  // one step with ids taken in this epoch: position keys now start at kN
    for (int s = 0; s < 3; ++s) {
        new_batch();
        auto b = m.batches();
        ASSERT_EQ(FNGD_SUCCESS, fngd_step(h, kN, nullptr, b.data(), nullptr, nullptr));
        b = twin.batches();
        ASSERT_EQ(FNGD_SUCCESS, fngd_step(ht, kN, nullptr, b.data(), nullptr, nullptr));
    }
    new_batch();
    Snapshot s = snap();  // steps_in_epoch = 4: keys 20..24 exceed kSamples = 20
    expect_rejected(step_with(m.batches(), kN, nullptr), FNGD_ERROR_INVALID_ARGUMENT, s, true);
    expect_same_future();
}

TEST_P(BadInput, NonFiniteInputs) {
    const float bad_values[] = {NAN, INFINITY, -INFINITY};
    for (bool reuse : {false, true}) {
        SCOPED_TRACE(reuse ? "reuse" : "collect");
        reset();
        init(FNGD_COEF_PER_LAYER, reuse);
        for (int l = 0; l < m.size(); ++l) {
            for (float v : bad_values) {
                for (int which = 0; which < 2; ++which) {
                    if (which == 1 && m[l].desc.kind == FNGD_LAYER_GENERIC) continue;
                    Buf& buf = which ? m[l].grad_output : m[l].input;
                    size_t at = buf.size() - 1 - (size_t)l;  // the last sample
                    float keep = buf[at];
                    buf[at] = v;
                    Snapshot s = snap();
                    expect_rejected(step_with(m.batches(), kN, ids.data()), FNGD_ERROR_NONFINITE,
                                    s, true);
                    // The message names the array: all arrays are checked in one call.
                    const std::string msg = fngd_get_last_error(h);
                    EXPECT_NE(msg.find("layer " + std::to_string(l) + ": " +
                                       (which ? "grad_output" : "input")),
                              std::string::npos)
                        << msg;
                    buf[at] = keep;
                }
            }
        }
        expect_same_future();
    }
}

TEST_P(BadInput, NonFiniteCustomRhs) {
    init(FNGD_COEF_PER_LAYER, false, [](fngd_config_t& c) { c.rhs = FNGD_RHS_CUSTOM; });
    Buf rhs((size_t)kN, 1.0f);  // backend memory
    rhs[3] = NAN;
    Snapshot s = snap();
    expect_rejected(step_with(m.batches(), kN, ids.data(), rhs.data()), FNGD_ERROR_NONFINITE, s,
                    true);
    EXPECT_NE(std::string(fngd_get_last_error(h)).find("rhs"), std::string::npos);
    expect_same_future();
}

TEST_P(BadInput, BatchSizeOutOfRange) {
    init();
    for (int n : {0, -1, kN + 1, 1 << 20}) {
        std::vector<int64_t> many = iota_ids(std::max(n, 1));
        Snapshot s = snap();
        expect_rejected(step_with(m.batches(), n, many.data()), FNGD_ERROR_INVALID_ARGUMENT, s,
                        true);
    }
    expect_same_future();
}

TEST_P(BadInput, AddLayerAfterFirstStep) {
    init();
    fngd_layer_desc_t d = fngd_linear_desc(2, 2, 0);
    Layer extra(d);
    Snapshot s = snap();
    int id = -7;
    expect_rejected(fngd_add_layer(h, &extra.desc, &id), FNGD_ERROR_INVALID_STATE, s, false);
    EXPECT_EQ(-7, id);
    expect_same_future();
}

TEST_P(BadInput, EndEpochWithoutStep) {
    fngd_config_t c = base_config(4, 8);
    Handle fresh;
    ASSERT_EQ(FNGD_SUCCESS, fngd_create(&c, &fresh.h));
    EXPECT_EQ(FNGD_ERROR_INVALID_STATE, fngd_end_epoch(fresh, nullptr));  // no layer either
    EXPECT_STRNE("", fngd_get_last_error(fresh));
    fngd_layer_desc_t d = fngd_linear_desc(2, 2, 0);
    ASSERT_EQ(FNGD_SUCCESS, fngd_add_layer(fresh, &d, nullptr));
    EXPECT_EQ(FNGD_ERROR_INVALID_STATE, fngd_end_epoch(fresh, nullptr));
    EXPECT_EQ(0, get_stats(fresh).epoch);

    init();  // one step, then end the epoch: the new epoch has no step
    ASSERT_EQ(FNGD_SUCCESS, fngd_end_epoch(h, nullptr));
    ASSERT_EQ(FNGD_SUCCESS, fngd_end_epoch(ht, nullptr));
    Snapshot s = snap();
    expect_rejected(fngd_end_epoch(h, nullptr), FNGD_ERROR_INVALID_STATE, s, false);
    expect_same_future();
}

TEST_P(BadInput, LossWeightsInPerLayerMode) {
    init(FNGD_COEF_PER_LAYER, /*reuse=*/true);
    expect_loss_weights_invalid_state();
}

TEST_P(BadInput, LossWeightsInCollectPhase) {
    init(FNGD_COEF_GLOBAL, /*reuse=*/false);
    expect_loss_weights_invalid_state();
}

TEST_P(BadInput, LossWeightsBadArguments) {
    init(FNGD_COEF_GLOBAL, /*reuse=*/true);
    Buf w((size_t)kN, 42.0f);  // backend memory
    Snapshot s = snap();
    expect_rejected(fngd_get_loss_weights(h, kN, ids.data(), nullptr, nullptr),
                    FNGD_ERROR_INVALID_ARGUMENT, s, false);
    expect_rejected(fngd_get_loss_weights(h, 0, ids.data(), w.data(), nullptr),
                    FNGD_ERROR_INVALID_ARGUMENT, s, false);
    expect_rejected(fngd_get_loss_weights(h, kN + 1, ids.data(), w.data(), nullptr),
                    FNGD_ERROR_INVALID_ARGUMENT, s, false);
    for (float x : w) EXPECT_EQ(42.0f, x);
    expect_same_future();
}

TEST_P(BadInput, CustomRhsMissing) {
    init(FNGD_COEF_GLOBAL, false, [](fngd_config_t& c) { c.rhs = FNGD_RHS_CUSTOM; });
    Snapshot s = snap();
    expect_rejected(step_with(m.batches(), kN, ids.data(), nullptr), FNGD_ERROR_INVALID_ARGUMENT,
                    s, true);
    expect_same_future();
}

// Damping 0 and no retries: a zero Gram cannot be factorised. With only the last layer's
// data zero (per-layer mode), the earlier layers' solves succeed first; still nothing may
// be stored or applied.
TEST_P(BadInput, NotPositiveDefiniteAfterRetries) {
    for (int mode = 0; mode < 2; ++mode) {
        for (bool only_last : {false, true}) {
            SCOPED_TRACE(std::to_string(mode) + (only_last ? " last layer zero" : " all zero"));
            reset();
            init(mode ? FNGD_COEF_GLOBAL : FNGD_COEF_PER_LAYER, false, [](fngd_config_t& c) {
                c.damping_kind = FNGD_DAMPING_ABSOLUTE;
                c.damping = 0.0;
                c.max_damping_retries = 0;
            });
            if (mode == 1 && only_last) continue;  // global K is the sum: not singular
            for (int l = only_last ? m.size() - 1 : 0; l < m.size(); ++l) {
                std::fill(m[l].input.begin(), m[l].input.end(), 0.0f);
                std::fill(m[l].grad_output.begin(), m[l].grad_output.end(), 0.0f);
            }
            Snapshot s = snap();
            expect_rejected(step_with(m.batches(), kN, ids.data()),
                            FNGD_ERROR_NOT_POSITIVE_DEFINITE, s, true);
            expect_same_future();
        }
    }
}

FNGD_INSTANTIATE_BACKENDS(BadInput);

// Configurations fngd_create must refuse, leaving *handle NULL and saying why.
class BadConfig : public BackendTest {};
FNGD_INSTANTIATE_BACKENDS(BadConfig);

TEST_P(BadConfig, InvalidValuesAreRejected) {
    struct Bad {
        const char* name;
        void (*apply)(fngd_config_t&);
    };
    const Bad bad[] = {
        {"damping < 0", [](fngd_config_t& c) { c.damping = -1e-3; }},
        {"damping NaN", [](fngd_config_t& c) { c.damping = NAN; }},
        {"damping Inf", [](fngd_config_t& c) { c.damping = INFINITY; }},
        {"growth 1", [](fngd_config_t& c) { c.damping_growth = 1.0; }},
        {"growth 0.5", [](fngd_config_t& c) { c.damping_growth = 0.5; }},
        {"growth -2", [](fngd_config_t& c) { c.damping_growth = -2.0; }},
        {"max_batch 0", [](fngd_config_t& c) { c.max_batch = 0; }},
        {"max_batch -3", [](fngd_config_t& c) { c.max_batch = -3; }},
        {"num_samples 0", [](fngd_config_t& c) { c.num_samples = 0; }},
        {"num_samples -1", [](fngd_config_t& c) { c.num_samples = -1; }},
        {"retries -1", [](fngd_config_t& c) { c.max_damping_retries = -1; }},
        {"retries 65", [](fngd_config_t& c) { c.max_damping_retries = 65; }},
        {"recompute_every -1", [](fngd_config_t& c) { c.recompute_every = -1; }},
        {"backend 42", [](fngd_config_t& c) { c.backend = (fngd_backend_kind_t)42; }},
        {"coef_mode 7", [](fngd_config_t& c) { c.coef_mode = (fngd_coef_mode_t)7; }},
        {"damping_kind 9", [](fngd_config_t& c) { c.damping_kind = (fngd_damping_kind_t)9; }},
        {"grad_convention -1",
         [](fngd_config_t& c) { c.grad_convention = (fngd_grad_convention_t)-1; }},
        {"rhs 3", [](fngd_config_t& c) { c.rhs = (fngd_rhs_kind_t)3; }},
        {"fallback 4", [](fngd_config_t& c) { c.fallback = (fngd_fallback_t)4; }},
        {"output 2", [](fngd_config_t& c) { c.output = (fngd_output_t)2; }},
        {"learning_rate < 0", [](fngd_config_t& c) { c.learning_rate = -0.1f; }},
        {"weight_decay < 0", [](fngd_config_t& c) { c.weight_decay = -0.1f; }},
        {"momentum < 0", [](fngd_config_t& c) { c.momentum = -0.5f; }},
        {"struct_size 0", [](fngd_config_t& c) { c.struct_size = 0; }},
        {"struct_size smaller", [](fngd_config_t& c) { c.struct_size = sizeof(fngd_config_t) - 8; }},
    };
    for (const Bad& b : bad) {
        fngd_config_t c = base_config(4, 16);
        b.apply(c);
        fngd_handle_t out = reinterpret_cast<fngd_handle_t>(0x1);
        EXPECT_EQ(FNGD_ERROR_INVALID_ARGUMENT, fngd_create(&c, &out)) << b.name;
        EXPECT_EQ(nullptr, out) << b.name;
        EXPECT_STRNE("", fngd_get_last_error(nullptr)) << b.name;
        fngd_destroy(out == reinterpret_cast<fngd_handle_t>(0x1) ? nullptr : out);
    }
    fngd_config_t ok = base_config(4, 16);  // the base itself is valid
    Handle h;
    EXPECT_EQ(FNGD_SUCCESS, fngd_create(&ok, &h.h));
}

}  // namespace
