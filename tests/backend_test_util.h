// Helpers shared by the backend-level tests (tests/test_cpu_backend.cpp and
// tests/cuda/test_cuda_backend.cpp), which drive the operation tables of src/host/backend.h
// directly: seeded random vectors, named layer cases and internal layers with a forced Gram
// method. Header-only.
#ifndef FNGD_BACKEND_TEST_UTIL_H
#define FNGD_BACKEND_TEST_UTIL_H

#include <gtest/gtest.h>

#include <cstring>
#include <random>
#include <string>
#include <vector>

#include "backend.h"
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
                               const float* x, size_t n, int* bad, fngd_stream_t stream,
                               fngd_err_t* err) {
    const fngd_array_ref_t a = {x, n};
    return ops->check_finite(ctx, &a, 1, bad, stream, err);
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

}  // namespace fngd_test

#endif
