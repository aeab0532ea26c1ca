// Shared helpers of the end-to-end tests of the public C API: deterministic random data, layers
// that own their buffers (backend memory of the binary's backend, backend_param.h), handle
// setup on the running test's backend, the dense double reference of a step and the derived
// tolerances. Header-only; every test file includes it.
#ifndef FNGD_TEST_UTIL_H
#define FNGD_TEST_UTIL_H

#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <cstring>
#include <memory>
#include <numeric>
#include <random>
#include <string>
#include <vector>

#include "backend_param.h"
#include "fngd.h"
#include "fngd_reference.h"
#include "test_descs.h"

namespace fngd_test {

// Unit roundoff of IEEE binary32 (round to nearest): 2^-24.
constexpr double kFloatEps = 5.9604644775390625e-08;

// ---- random data ------------------------------------------------------------------------------

class Rng {
  public:
    explicit Rng(uint64_t seed) : gen_(seed) {}
    double normal(double mean = 0.0, double sd = 1.0) {
        return std::normal_distribution<double>(mean, sd)(gen_);
    }
    double uniform(double lo, double hi) {
        return std::uniform_real_distribution<double>(lo, hi)(gen_);
    }
    template <class Floats>
    void fill(Floats& v, double mean, double sd) {
        for (float& x : v) x = (float)normal(mean, sd);
    }
    // The first n of a random permutation of [0, range).
    std::vector<int64_t> distinct_ids(int n, int64_t range) {
        std::vector<int64_t> all((size_t)range);
        std::iota(all.begin(), all.end(), 0);
        std::shuffle(all.begin(), all.end(), gen_);
        all.resize((size_t)n);
        return all;
    }
    std::mt19937_64& engine() { return gen_; }

  private:
    std::mt19937_64 gen_;
};

// ---- layers and models ------------------------------------------------------------------------

// One layer with its own parameter, gradient and per-step data buffers (Buf: backend memory of
// the binary's backend, host-addressable). Not copyable: the descriptor points into the
// buffers. The helpers that touch the buffers from the host first wait for the device.
struct Layer {
    fngd_layer_desc_t desc;
    fngd_ref_geom_t geom;
    Buf weight, bias, grad_weight, grad_bias;
    Buf input, grad_output;  // the current batch: N samples

    explicit Layer(const fngd_layer_desc_t& d) : desc(d) {
        if (fngd_ref_geometry(&desc, &geom) != 0) {
            ADD_FAILURE() << "test bug: inconsistent layer descriptor";
            std::memset(&geom, 0, sizeof geom);
        }
        weight.assign((size_t)geom.n_weight, 0.0f);
        bias.assign((size_t)geom.n_bias, 0.0f);
        grad_weight.assign((size_t)geom.n_weight, 0.0f);
        grad_bias.assign((size_t)geom.n_bias, 0.0f);
        bind();
    }
    Layer(const Layer&) = delete;
    Layer& operator=(const Layer&) = delete;

    void bind() {
        desc.weight = weight.data();
        desc.bias = geom.n_bias ? bias.data() : nullptr;
        desc.grad_weight = grad_weight.data();
        desc.grad_bias = geom.n_bias ? grad_bias.data() : nullptr;
    }
    // New batch of N samples. The means keep the per-sample gradients correlated, so the
    // direction is not a sum with heavy cancellation (see direction_tolerance).
    void randomize(Rng& rng, int N) {
        test_sync();
        input.assign((size_t)(N * geom.in_per_sample), 0.0f);
        grad_output.assign((size_t)(N * geom.out_per_sample), 0.0f);
        rng.fill(input, 0.3, 1.0);
        rng.fill(grad_output, 0.2, 1.0);
        if (desc.kind == FNGD_LAYER_EMBEDDING) {  // int64 token ids in [-1, V): -1 = padding
            const int64_t V = desc.num_embeddings, nt = (int64_t)N * geom.T;
            for (int64_t k = 0; k < nt; ++k) {
                int64_t id = (int64_t)std::floor(rng.uniform(-0.15, 1.0) * (double)V);
                id = id < 0 ? -1 : (id >= V ? V - 1 : id);
                std::memcpy((char*)input.data() + k * 8, &id, sizeof id);
            }
        }
    }
    fngd_layer_batch_t batch() const {
        fngd_layer_batch_t b;
        b.input = input.data();
        b.grad_output = desc.kind == FNGD_LAYER_GENERIC ? nullptr : grad_output.data();
        return b;
    }
    // The direction the library wrote: grad_weight then grad_bias, in double.
    std::vector<double> written_direction() const {
        test_sync();
        std::vector<double> v(grad_weight.begin(), grad_weight.end());
        v.insert(v.end(), grad_bias.begin(), grad_bias.end());
        return v;
    }
    std::vector<double> params() const {
        test_sync();
        std::vector<double> v(weight.begin(), weight.end());
        v.insert(v.end(), bias.begin(), bias.end());
        return v;
    }
};

struct Model {
    std::vector<std::unique_ptr<Layer>> layers;

    Layer& add(const fngd_layer_desc_t& d) {
        layers.emplace_back(new Layer(d));
        return *layers.back();
    }
    int size() const { return (int)layers.size(); }
    Layer& operator[](int l) { return *layers[(size_t)l]; }
    const Layer& operator[](int l) const { return *layers[(size_t)l]; }

    void randomize(Rng& rng, int N) {
        for (auto& l : layers) l->randomize(rng, N);
    }
    // The batch of `from` (a twin model: the same layers), copied into this model.
    void copy_batch(const Model& from) {
        test_sync();
        for (int l = 0; l < size(); ++l) {
            (*this)[l].input = from[l].input;
            (*this)[l].grad_output = from[l].grad_output;
        }
    }
    std::vector<fngd_layer_batch_t> batches() const {
        std::vector<fngd_layer_batch_t> b;
        for (auto& l : layers) b.push_back(l->batch());
        return b;
    }
    // Layers of coefficient block `block` (per-layer mode: that layer; global: all, block 0).
    std::vector<int> block_layers(fngd_coef_mode_t mode, int block) const {
        std::vector<int> v;
        if (mode == FNGD_COEF_GLOBAL) {
            for (int l = 0; l < size(); ++l) v.push_back(l);
        } else {
            v.push_back(block);
        }
        return v;
    }
    int num_blocks(fngd_coef_mode_t mode) const { return mode == FNGD_COEF_GLOBAL ? 1 : size(); }
    int64_t block_len(fngd_coef_mode_t mode, int block) const {
        int64_t d = 0;
        for (int l : block_layers(mode, block)) d += (*this)[l].geom.grad_len;
        return d;
    }
    // Per-sample gradients of a block (N x d, row i = g_i) from the current batch.
    std::vector<double> per_sample(fngd_coef_mode_t mode, int block, int N, double scale) const {
        int64_t d = block_len(mode, block), col = 0;
        std::vector<double> G((size_t)(N * d), 0.0);
        for (int l : block_layers(mode, block)) {
            const Layer& L = (*this)[l];
            EXPECT_EQ(0, fngd_ref_per_sample_grads(&L.desc, N, L.input.data(),
                                                   L.grad_output.data(), scale, G.data(), d,
                                                   col));
            col += L.geom.grad_len;
        }
        return G;
    }
    std::vector<double> written_direction(fngd_coef_mode_t mode, int block) const {
        std::vector<double> v;
        for (int l : block_layers(mode, block)) {
            auto w = (*this)[l].written_direction();
            v.insert(v.end(), w.begin(), w.end());
        }
        return v;
    }
    void fill_grads(float value) {
        test_sync();
        for (auto& l : layers) {
            std::fill(l->grad_weight.begin(), l->grad_weight.end(), value);
            std::fill(l->grad_bias.begin(), l->grad_bias.end(), value);
        }
    }
};

// p (with the bias column) and q of a layer as METHOD.md section 4 writes it.
inline void layer_pq(const fngd_layer_desc_t& d, double* pa, double* q) {
    switch (d.kind) {
    case FNGD_LAYER_LINEAR: *pa = d.in_features + d.has_bias; *q = d.out_features; break;
    case FNGD_LAYER_CONV2D:
        *pa = (double)d.in_channels * d.kernel_h * d.kernel_w + d.has_bias;
        *q = d.out_channels;
        break;
    case FNGD_LAYER_NORM_AFFINE: *pa = 1 + d.has_bias; *q = d.num_features; break;
    default: *pa = (double)d.num_params; *q = 1; break;
    }
}

// The longest single-precision accumulation the library may do for one entry of a block's
// Gram (an upper bound over both methods): a dot product over the block's d entries
// (materialise, including the sum of the layers' Grams in global mode), or dot products over
// pa and q entries followed by a T x T block sum (position Gram), plus the T-term sums that
// form a per-sample gradient entry.
inline double gram_accumulation_length(const Model& m, fngd_coef_mode_t mode, int block) {
    double len = (double)m.block_len(mode, block);
    for (int l : m.block_layers(mode, block)) {
        double T = m[l].geom.T, pa = 0, q = 0;
        layer_pq(m[l].desc, &pa, &q);
        len = std::max(len, T * T + T + pa + q);
    }
    return len + m.size();
}
// The weighted reduction sums N*T rows per output entry.
inline double reduction_length(const Model& m, fngd_coef_mode_t mode, int block, int N) {
    double len = 1.0;
    for (int l : m.block_layers(mode, block)) len = std::max(len, (double)N * m[l].geom.T);
    return len;
}

inline double norm2(const std::vector<double>& v) {
    double s = 0.0;
    for (double x : v) s += x * x;
    return std::sqrt(s);
}
inline double rel_err(const std::vector<double>& got, const std::vector<double>& want) {
    if (got.size() != want.size()) return INFINITY;
    double num = 0.0;
    for (size_t k = 0; k < got.size(); ++k) num += (got[k] - want[k]) * (got[k] - want[k]);
    double den = norm2(want);
    return den > 0 ? std::sqrt(num) / den : std::sqrt(num);
}

// ---- reference of one collect step ------------------------------------------------------------

struct RefBlock {
    int N = 0;
    int64_t d = 0;
    std::vector<double> G;      // N x d per-sample gradients
    double lambda = 0.0;        // damping of this block
    double trace = 0.0;         // trace(K) = sum_i ||g_i||^2
    std::vector<double> delta;  // dense (F + lambda I) solve: the reference direction
    std::vector<double> alpha;  // (K + N lambda I)^-1 r: the reference coefficients
    double kappa = 0.0;         // 1 + trace(K) / (N lambda), see direction_tolerance
    double c_sum = 0.0;         // sum_i |alpha_i| ||g_i|| / ||delta||
    double len_gram = 0.0, len_sum = 0.0;
};

inline double cancellation_factor(const std::vector<double>& G, int N, int64_t d,
                                  const std::vector<double>& alpha) {
    std::vector<double> delta((size_t)d);
    fngd_ref_weighted_sum(G.data(), N, d, alpha.data(), delta.data());
    double s = 0.0;
    for (int i = 0; i < N; ++i) {
        double gi = 0.0;
        for (int64_t k = 0; k < d; ++k) gi += G[(size_t)(i * d + k)] * G[(size_t)(i * d + k)];
        s += std::fabs(alpha[(size_t)i]) * std::sqrt(gi);
    }
    double dn = norm2(delta);
    return dn > 0 ? std::max(1.0, s / dn) : INFINITY;
}

inline RefBlock reference_block(const Model& m, const fngd_config_t& cfg, int block, int N,
                                const float* rhs) {
    RefBlock b;
    b.N = N;
    b.d = m.block_len(cfg.coef_mode, block);
    double scale = cfg.grad_convention == FNGD_GRAD_MEAN_LOSS ? (double)N : 1.0;
    b.G = m.per_sample(cfg.coef_mode, block, N, scale);
    for (double x : b.G) b.trace += x * x;
    b.lambda = fngd_ref_lambda(cfg.damping_kind, cfg.damping, b.G.data(), N, b.d);
    std::vector<double> r;
    if (rhs) r.assign(rhs, rhs + N);
    b.delta.assign((size_t)b.d, 0.0);
    b.alpha.assign((size_t)N, 0.0);
    const int filter = cfg.coef_filter == FNGD_FILTER_RANGE;
    EXPECT_EQ(0, fngd_ref_dense_direction(b.G.data(), N, b.d, b.lambda, rhs ? r.data() : nullptr,
                                          filter, b.delta.data()));
    EXPECT_EQ(0, fngd_ref_coefficients(b.G.data(), N, b.d, b.lambda, rhs ? r.data() : nullptr,
                                       filter, b.alpha.data()));
    // The range filter applies the (float-perturbed) damped inverse twice: its error bound
    // (step 2 below) doubles.
    b.kappa = (1.0 + filter) * (1.0 + b.trace / (N * b.lambda));
    b.c_sum = cancellation_factor(b.G, N, b.d, b.alpha);
    b.len_gram = gram_accumulation_length(m, cfg.coef_mode, block);
    b.len_sum = reduction_length(m, cfg.coef_mode, block, N);
    return b;
}

// ---- derived tolerances -----------------------------------------------------------------------
//
// Relative error ||lib - ref|| / ||ref|| of the direction of one block. The reference is exact
// to ~1e-14 (double, d <= a few hundred), so the error is the library's float arithmetic:
//  1. Gram: each entry K_ij is a float accumulation of length L_K (gram_accumulation_length).
//     With the probabilistic rounding-error model (Higham & Mary 2019: the error of an
//     n-term sum is <= c*sqrt(n)*u*sum|terms| with high probability for moderate c), and
//     sum|terms| <= ||g_i|| ||g_j|| by Cauchy-Schwarz, ||dK|| <= sqrt(L_K) u trace(K).
//  2. Solve (double, on the float K): ||d alpha|| / ||alpha|| <= cond * ||dK|| / ||K + N lam I||
//     and cond * 1/||K + N lam I|| = 1/lambda_min(K + N lam I) <= 1/(N lam), so
//     ||d alpha|| / ||alpha|| <= sqrt(L_K) u trace(K)/(N lam) <= sqrt(L_K) u kappa,
//     kappa = 1 + trace(K)/(N lam) (= 1 + 1/gamma for trace-relative damping). alpha is then
//     rounded to float: + u.
//  3. Reduction delta = sum_i alpha_i g_i over L_S = N*T rows in float: error
//     <= sqrt(L_S) u sum_i |alpha_i| ||g_i||; relative to ||delta|| that is sqrt(L_S) u c_sum.
//     The alpha error of step 2 enters the same way: c_sum * ||d alpha|| / ||alpha||.
//  Total: u * c_sum * (kappa sqrt(L_K) + sqrt(L_S) + 2). The constant c of the probabilistic
//  bound and the float rounding of inputs scaled by N (mean-loss convention) are covered by a
//  safety factor of 8. A test problem whose tolerance comes out above 1e-2 is too
//  ill-conditioned to tell a bug from rounding; tests assert that never happens.
inline double direction_tolerance(const RefBlock& b) {
    return 8.0 * kFloatEps * b.c_sum * (b.kappa * std::sqrt(b.len_gram) + std::sqrt(b.len_sum) + 2.0);
}
// Coefficients alone: step 2 above (relative to ||alpha||), same safety factor.
inline double coefficient_tolerance(const RefBlock& b) {
    return 8.0 * kFloatEps * (b.kappa * std::sqrt(b.len_gram) + 2.0);
}
// A reuse step: the library gathers the stored float alpha exactly and does only step 3.
inline double reduction_tolerance(double c_sum, double len_sum) {
    return 8.0 * kFloatEps * c_sum * (std::sqrt(len_sum) + 2.0);
}
constexpr double kMaxMeaningfulTolerance = 1e-2;

// ---- handles ----------------------------------------------------------------------------------

struct Handle {
    fngd_handle_t h = nullptr;
    Handle() = default;
    Handle(const Handle&) = delete;
    Handle& operator=(const Handle&) = delete;
    ~Handle() { fngd_destroy(h); }
    operator fngd_handle_t() const { return h; }
};

// The running test's backend (BackendTest; the CPU outside parameterised suites).
inline fngd_config_t base_config(int max_batch, int64_t num_samples) {
    fngd_config_t c;
    fngd_config_init(&c);
    c.backend = current_backend();
    c.max_batch = max_batch;
    c.num_samples = num_samples;
    c.damping_kind = FNGD_DAMPING_TRACE_RELATIVE;
    c.damping = 0.05;
    // Every layer's coefficients stored and reused (the tests of small-layer exact solves set
    // it themselves).
    c.exact_small_layers = 0;
    // The unscaled direction, which the references compute (test_stable_steps.cpp tests the
    // step-size control against it).
    c.step_control = FNGD_STEP_NONE;
    return c;
}

// Create the handle and register every layer of the model, in order.
inline ::testing::AssertionResult make_handle(const fngd_config_t& cfg, Model& m, Handle& out) {
    fngd_status_t s = fngd_create(&cfg, &out.h);
    if (s != FNGD_SUCCESS)
        return ::testing::AssertionFailure()
               << "fngd_create: " << fngd_status_string(s) << ": " << fngd_get_last_error(nullptr);
    for (int l = 0; l < m.size(); ++l) {
        int id = -1;
        s = fngd_add_layer(out.h, &m[l].desc, &id);
        if (s != FNGD_SUCCESS)
            return ::testing::AssertionFailure() << "fngd_add_layer " << l << ": "
                                                 << fngd_status_string(s) << ": "
                                                 << fngd_get_last_error(out.h);
        if (id != l) return ::testing::AssertionFailure() << "layer id " << id << " != " << l;
    }
    return ::testing::AssertionSuccess();
}

inline ::testing::AssertionResult step_ok(fngd_handle_t h, const Model& m, int N,
                                          const int64_t* ids, const float* rhs = nullptr) {
    auto b = m.batches();
    fngd_status_t s = fngd_step(h, N, ids, b.data(), rhs, nullptr);
    test_sync();  // the step's device work is done before the test reads its outputs
    if (s != FNGD_SUCCESS)
        return ::testing::AssertionFailure()
               << "fngd_step: " << fngd_status_string(s) << ": " << fngd_get_last_error(h);
    return ::testing::AssertionSuccess();
}

inline fngd_stats_t get_stats(fngd_handle_t h) {
    fngd_stats_t st;
    std::memset(&st, 0, sizeof st);
    st.struct_size = sizeof st;
    EXPECT_EQ(FNGD_SUCCESS, fngd_get_stats(h, &st)) << fngd_get_last_error(h);
    return st;
}

inline std::vector<float> get_coefs(fngd_handle_t h, int set, const std::vector<int64_t>& ids) {
    std::vector<float> c(ids.size(), -12345.0f);
    EXPECT_EQ(FNGD_SUCCESS, fngd_get_coefficients(h, set, (int64_t)ids.size(), ids.data(), c.data()))
        << fngd_get_last_error(h);
    return c;
}

inline std::vector<int64_t> iota_ids(int n, int64_t start = 0) {
    std::vector<int64_t> v((size_t)n);
    std::iota(v.begin(), v.end(), start);
    return v;
}

}  // namespace fngd_test

#endif
