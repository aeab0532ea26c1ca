// Helpers shared by the backend-level tests (tests/test_backend_conformance.cpp and the
// backend-specific tests/test_cpu_backend.cpp, tests/cuda/test_cuda_backend.cpp), which drive
// the operation tables of src/host/backend.h directly: seeded random vectors, named layer
// cases, internal layers with a forced Gram method, and the naive per-sample gradients and Gram
// of a layer from the reference (tests/reference). Header-only.
#ifndef FNGD_BACKEND_TEST_UTIL_H
#define FNGD_BACKEND_TEST_UTIL_H

#include <gtest/gtest.h>

#include <cmath>
#include <cstring>
#include <random>
#include <string>
#include <vector>

#include "backend.h"
#include "fngd_reference.h"
#include "layer.h"
#include "test_descs.h"

namespace fngd_test {

using Vec = std::vector<float>;
using DVec = std::vector<double>;

// n values uniform in [lo, hi), the same for the same seed.
inline Vec random_vec(size_t n, unsigned seed, float lo = -1.0f, float hi = 1.0f) {
    std::mt19937 gen(seed);
    std::uniform_real_distribution<float> dist(lo, hi);
    Vec v(n);
    for (auto& x : v) x = dist(gen);
    return v;
}

// check_finite on a single array: *bad = 1 if it holds a NaN or Inf, else 0.
inline fngd_status_t check_one(const fngd_backend_ops_t* ops, fngd_backend_ctx_t* ctx,
                               const float* x, size_t n, int* bad, const fngd_call_t* call) {
    const fngd_array_ref_t a = {x, n};
    return ops->check_finite(ctx, &a, 1, bad, call);
}

// `call` with the workspace (p, bytes), for the ops that take one.
inline fngd_call_t with_ws(fngd_call_t call, void* p, size_t bytes) {
    call.ws = p;
    call.ws_bytes = bytes;
    return call;
}

// The one workspace query (backend.h) for layers[0..num_layers) and `count` solves of order
// N; a failed query is a test failure (and 0 bytes).
inline size_t query_ws(const fngd_backend_ops_t* ops, fngd_backend_ctx_t* ctx,
                       const fngd_call_t& call, const fngd_layer_t* layers, int num_layers,
                       int N, int count) {
    size_t bytes = 0;
    EXPECT_EQ(ops->workspace_bytes(ctx, layers, num_layers, N, count, &bytes, &call),
              FNGD_SUCCESS)
        << call.err->msg;
    return bytes;
}

// A layer descriptor with the name its failures are reported under.
struct Case {
    std::string name;
    fngd_layer_desc_t desc;
};

// The internal layer of d; LINEAR and CONV2D get `method`, the other kinds the only method
// they have (materialise).
inline fngd_layer_t make_layer(const fngd_layer_desc_t& d, fngd_gram_method_t method) {
    fngd_layer_t l;
    std::memset(&l, 0, sizeof l);
    char msg[256] = {0};
    EXPECT_EQ(fngd_layer_init(&l, &d, msg, sizeof msg), FNGD_SUCCESS) << msg;
    const bool matrix = l.kind == FNGD_LAYER_LINEAR || l.kind == FNGD_LAYER_CONV2D;
    l.method = matrix ? method : FNGD_GRAM_MATERIALIZE;
    return l;
}

// Every layer kind; odd sizes, primes and non-multiples of 32 on purpose.
inline std::vector<Case> layer_cases() {
    std::vector<Case> c;
    c.push_back({"linear_5x3_nobias", fngd_linear_desc(5, 3, 0)});
    c.push_back({"linear_37x33_bias", fngd_linear_desc(37, 33, 1)});
    fngd_layer_desc_t d = fngd_linear_desc(4, 7, 1);
    d.positions = 3;
    c.push_back({"linear_tokens3_bias", d});
    d = fngd_linear_desc(17, 5, 0);
    d.positions = 11;
    c.push_back({"linear_tokens11_nobias", d});
    c.push_back({"conv_s2_p1_d2_bias", conv_desc(2, 5, 7, 6, 3, 2, 2, 1, 1, 2, 2, 1, 1)});
    c.push_back({"conv_s12_p01_d12_nobias", conv_desc(3, 4, 5, 8, 2, 3, 1, 2, 0, 1, 1, 2, 0)});
    c.push_back({"conv_1x1_bias", conv_desc(1, 3, 4, 4, 1, 1, 1, 1, 0, 0, 1, 1, 1)});
    c.push_back({"conv_3x3_p1_33ch_bias", conv_desc(3, 33, 9, 7, 3, 3, 1, 1, 1, 1, 1, 1, 1)});
    c.push_back({"norm_nchw_shift", fngd_norm_affine_desc(5, 6, 1)});
    c.push_back({"norm_nchw_noshift_37", fngd_norm_affine_desc(37, 41, 0)});
    d = fngd_norm_affine_desc(35, 7, 1);
    d.channels_last = 1;
    c.push_back({"norm_channels_last_shift", d});
    d = fngd_norm_affine_desc(3, 7, 0);
    d.channels_last = 1;
    c.push_back({"norm_channels_last_noshift", d});
    d = conv_desc(6, 9, 5, 4, 3, 3, 1, 1, 1, 1, 1, 1, 1);
    d.groups = 3;
    c.push_back({"conv_groups3_p1_bias", d});
    d = conv_desc(4, 4, 7, 6, 3, 3, 2, 2, 1, 1, 1, 1, 0);
    d.groups = 4;
    c.push_back({"conv_depthwise4_s2_nobias", d});
    d = conv_desc(5, 10, 1, 9, 1, 3, 1, 1, 0, 1, 1, 1, 1);
    d.groups = 5;
    c.push_back({"conv1d_depthwise5_x2_bias", d});
    c.push_back({"embedding_V7_D3_T5", fngd_embedding_desc(7, 3, 5)});
    c.push_back({"embedding_V40_D33_T2", fngd_embedding_desc(40, 33, 2)});
    c.push_back({"generic_11", fngd_generic_desc(11)});
    c.push_back({"generic_1031", fngd_generic_desc(1031)});
    return c;
}

// A batch's `input` for layer l: random values in [lo, hi), or for an EMBEDDING layer int64
// token ids in [-1, V) (-1: padding; a small V makes samples share ids) packed into the floats.
inline Vec layer_input(const fngd_layer_t& l, int N, unsigned seed, float lo = -0.7f,
                       float hi = 1.3f) {
    if (l.kind != FNGD_LAYER_EMBEDDING)
        return random_vec((size_t)N * l.in_per_sample, seed, lo, hi);
    std::mt19937 gen(seed);
    std::uniform_int_distribution<int64_t> id(-1, l.desc.num_embeddings - 1);
    std::vector<int64_t> ids((size_t)N * l.T);
    for (auto& v : ids) v = id(gen);
    Vec x((size_t)N * l.in_per_sample);
    std::memcpy(x.data(), ids.data(), ids.size() * sizeof(int64_t));
    return x;
}

// The naive per-sample gradients of a layer's batch (reference: their defining sums, in
// double): G is N x len with row i = scale * g_i, Gabs the same sums over |terms| (the inputs'
// absolute values), the sum|terms| that bounds every float evaluation of an entry.
struct Naive {
    DVec G, Gabs;
    int64_t len = 0;
};

inline Naive naive_grads(const fngd_layer_t& l, int N, const Vec& x, const Vec& go,
                         double scale) {
    Naive r;
    r.len = l.grad_len;
    r.G.assign((size_t)N * r.len, 0.0);
    r.Gabs.assign((size_t)N * r.len, 0.0);
    Vec ax(x.size()), ago(go.size());
    const bool ids = l.kind == FNGD_LAYER_EMBEDDING;  // token ids, not values: kept as they are
    for (size_t k = 0; k < x.size(); ++k) ax[k] = ids ? x[k] : std::fabs(x[k]);
    for (size_t k = 0; k < go.size(); ++k) ago[k] = std::fabs(go[k]);
    const bool generic = l.kind == FNGD_LAYER_GENERIC;
    EXPECT_EQ(0, fngd_ref_per_sample_grads(&l.desc, N, x.data(), generic ? nullptr : go.data(),
                                           scale, r.G.data(), r.len, 0));
    EXPECT_EQ(0, fngd_ref_per_sample_grads(&l.desc, N, ax.data(), generic ? nullptr : ago.data(),
                                           std::fabs(scale), r.Gabs.data(), r.len, 0));
    return r;
}

// K = G G^T (N x N) of N rows of len doubles.
inline DVec gram_of(const DVec& G, int N, int64_t len) {
    DVec K((size_t)N * N, 0.0);
    fngd_ref_gram(G.data(), N, len, K.data());
    return K;
}

// K = G G^T (float) of a random N x 2N G: symmetric, PSD of rank N, well conditioned once
// damped.
inline Vec random_gram(int N, unsigned seed) {
    const Vec G = random_vec((size_t)N * 2 * N, seed);
    Vec K((size_t)N * N);
    for (int i = 0; i < N; ++i)
        for (int j = 0; j <= i; ++j) {
            double s = 0;
            for (int k = 0; k < 2 * N; ++k)
                s += (double)G[(size_t)i * 2 * N + k] * G[(size_t)j * 2 * N + k];
            K[(size_t)i * N + j] = K[(size_t)j * N + i] = (float)s;
        }
    return K;
}

}  // namespace fngd_test

#endif
