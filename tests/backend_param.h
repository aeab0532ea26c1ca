// The backends a test binary runs its backend-parameterised suites on, and how a test gets a
// usable one. fngd_tests (which needs no CUDA) instantiates the CPU backend; fngd_cuda_tests
// compiles the same suites with FNGD_TEST_CUDA defined and instantiates the CUDA backend. A
// CUDA instance skips without a device, and fails instead when the environment sets
// FNGD_REQUIRE_GPU=1, so a GPU runner cannot pass by skipping. Header-only.
#ifndef FNGD_BACKEND_PARAM_H
#define FNGD_BACKEND_PARAM_H

#include <gtest/gtest.h>

#ifdef FNGD_TEST_CUDA
#include <cuda_runtime.h>
#endif

#include <cstdlib>
#include <cstring>
#include <string>
#include <vector>

#include "fngd.h"

namespace fngd_test {

// The backends this binary instantiates its parameterised suites on.
inline std::vector<fngd_backend_kind_t> test_backends() {
#ifdef FNGD_TEST_CUDA
    return {FNGD_BACKEND_CUDA};
#else
    return {FNGD_BACKEND_CPU};
#endif
}

inline const char* backend_name(fngd_backend_kind_t k) {
    return k == FNGD_BACKEND_CUDA ? "cuda" : "cpu";
}

// Instance names: Suite/Test/cpu, Suite/Test/cuda.
inline std::string backend_param_name(const ::testing::TestParamInfo<fngd_backend_kind_t>& info) {
    return backend_name(info.param);
}

inline bool gpu_required() {
    const char* v = std::getenv("FNGD_REQUIRE_GPU");
    return v && std::strcmp(v, "1") == 0;
}

// Empty when backend k can run in this process; else why not.
inline std::string backend_unavailable(fngd_backend_kind_t k) {
    int available = 0;
    if (fngd_backend_available(k, &available) == FNGD_SUCCESS && available) return "";
    return std::string(backend_name(k)) +
           " backend not available (not compiled in, or no usable device)";
}

// A stream for backend k created by the test: for CUDA a non-blocking stream, so work the
// library enqueued on any other stream (the legacy default stream included) is not ordered
// before what the test reads after synchronising this one; NULL for the CPU.
inline fngd_stream_t make_test_stream(fngd_backend_kind_t k) {
#ifdef FNGD_TEST_CUDA
    if (k == FNGD_BACKEND_CUDA) {
        cudaStream_t s = nullptr;
        EXPECT_EQ(cudaStreamCreateWithFlags(&s, cudaStreamNonBlocking), cudaSuccess);
        return (fngd_stream_t)s;
    }
#endif
    (void)k;
    return nullptr;
}

inline void destroy_test_stream(fngd_backend_kind_t k, fngd_stream_t s) {
#ifdef FNGD_TEST_CUDA
    if (k == FNGD_BACKEND_CUDA && s) {
        EXPECT_EQ(cudaStreamSynchronize((cudaStream_t)s), cudaSuccess);
        EXPECT_EQ(cudaStreamDestroy((cudaStream_t)s), cudaSuccess);
    }
#endif
    (void)k;
    (void)s;
}

}  // namespace fngd_test

// First statement of a parameterised test's SetUp (or body): skips the test when its backend
// cannot run here, or fails it when FNGD_REQUIRE_GPU=1 asks for every GPU case to run.
#define FNGD_TEST_REQUIRE_BACKEND(kind)                                               \
    do {                                                                              \
        const std::string fngd_why_ = fngd_test::backend_unavailable(kind);           \
        if (!fngd_why_.empty()) {                                                     \
            if (fngd_test::gpu_required()) FAIL() << fngd_why_ << " (FNGD_REQUIRE_GPU=1)"; \
            GTEST_SKIP() << fngd_why_;                                                \
        }                                                                             \
    } while (0)

// Instantiates a TEST_P suite over this binary's backends.
#define FNGD_INSTANTIATE_BACKENDS(suite)                                               \
    INSTANTIATE_TEST_SUITE_P(Backends, suite, ::testing::ValuesIn(fngd_test::test_backends()), \
                             fngd_test::backend_param_name)

#endif
