// The backends a test binary runs its backend-parameterised suites on, how a test gets a
// usable one, and the memory the tests hand the library as backend memory. fngd_tests (which
// needs no CUDA) instantiates the CPU backend; fngd_cuda_tests compiles the same suites with
// FNGD_TEST_CUDA defined and instantiates the CUDA backend. A CUDA instance skips without a
// device, and fails instead when the environment sets FNGD_REQUIRE_GPU=1, so a GPU runner
// cannot pass by skipping. Header-only.
#ifndef FNGD_BACKEND_PARAM_H
#define FNGD_BACKEND_PARAM_H

#include <gtest/gtest.h>

#ifdef FNGD_TEST_CUDA
#include <cuda_runtime.h>
#endif

#include <cstdlib>
#include <cstring>
#include <new>
#include <string>
#include <tuple>
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

// ---- the backend of a contract test ---------------------------------------------------------

// The backend the running test uses: set by BackendTest::SetUp, read by the tests' configs
// (test_util.h base_config, state_model.h sm_config).
inline fngd_backend_kind_t& current_backend() {
    static fngd_backend_kind_t k = test_backends()[0];
    return k;
}

// ---- memory the tests hand the library as backend memory -----------------------------------
// CPU binary: host memory. CUDA binary: CUDA managed memory, which host and device both
// address, so the contract tests fill and read their buffers as they do on the CPU; test_sync()
// must separate the library's device work from the host's next access (the helpers that read
// or refill buffers call it). Without a device the allocation falls back to host memory (the
// test skips before using it).
inline void* test_alloc(size_t bytes) {
#ifdef FNGD_TEST_CUDA
    void* p = nullptr;
    if (cudaMallocManaged(&p, bytes ? bytes : 1) == cudaSuccess) return p;
    (void)cudaGetLastError();
#endif
    return std::malloc(bytes ? bytes : 1);
}

inline void test_free(void* p) {
    if (!p) return;
#ifdef FNGD_TEST_CUDA
    cudaPointerAttributes a;
    if (cudaPointerGetAttributes(&a, p) == cudaSuccess && a.type == cudaMemoryTypeManaged) {
        (void)cudaFree(p);
        return;
    }
    (void)cudaGetLastError();
#endif
    std::free(p);
}

// Wait for all device work (every stream, every thread); a no-op on the CPU.
inline void test_sync() {
#ifdef FNGD_TEST_CUDA
    if (cudaDeviceSynchronize() != cudaSuccess) (void)cudaGetLastError();
#endif
}

template <class T>
struct TestAllocator {
    using value_type = T;
    TestAllocator() = default;
    template <class U>
    TestAllocator(const TestAllocator<U>&) {}
    T* allocate(size_t n) {
        void* p = test_alloc(n * sizeof(T));
        if (!p) throw std::bad_alloc();
        return static_cast<T*>(p);
    }
    void deallocate(T* p, size_t) { test_free(p); }
};
template <class T, class U>
bool operator==(const TestAllocator<T>&, const TestAllocator<U>&) { return true; }
template <class T, class U>
bool operator!=(const TestAllocator<T>&, const TestAllocator<U>&) { return false; }

// A float buffer the library may read and write as backend memory (layer buffers, rhs, loss
// weights): std::vector<float> itself in the CPU binary.
#ifdef FNGD_TEST_CUDA
using Buf = std::vector<float, TestAllocator<float>>;
#else
using Buf = std::vector<float>;
#endif

// Fixture of a contract test parameterised over the binary's backends (FNGD_INSTANTIATE_BACKENDS):
// skips or fails as FNGD_TEST_REQUIRE_BACKEND says, and makes the configs use the backend.
class BackendTest : public ::testing::TestWithParam<fngd_backend_kind_t> {
  protected:
    void SetUp() override;
};

// The same for suites with a second parameter P: the parameter is (backend, P).
template <class P>
class BackendTestWith : public ::testing::TestWithParam<std::tuple<fngd_backend_kind_t, P>> {
  protected:
    void SetUp() override;
    const P& param() const { return std::get<1>(this->GetParam()); }
};

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

inline void fngd_test::BackendTest::SetUp() {
    FNGD_TEST_REQUIRE_BACKEND(GetParam());
    current_backend() = GetParam();
}

template <class P>
void fngd_test::BackendTestWith<P>::SetUp() {
    const fngd_backend_kind_t k = std::get<0>(this->GetParam());
    FNGD_TEST_REQUIRE_BACKEND(k);
    current_backend() = k;
}

// Instantiates a TEST_P suite over this binary's backends.
#define FNGD_INSTANTIATE_BACKENDS(suite)                                               \
    INSTANTIATE_TEST_SUITE_P(Backends, suite, ::testing::ValuesIn(fngd_test::test_backends()), \
                             fngd_test::backend_param_name)

// Instantiates a BackendTestWith<P> suite over the binary's backends times `values` (a
// ::testing generator of P); name(P) names the second part: Suite/Test/cpu_Name.
#define FNGD_INSTANTIATE_BACKENDS_WITH(suite, values, name)                                \
    INSTANTIATE_TEST_SUITE_P(                                                             \
        Backends, suite,                                                                  \
        ::testing::Combine(::testing::ValuesIn(fngd_test::test_backends()), values),       \
        [](const auto& info) {                                                            \
            return std::string(fngd_test::backend_name(std::get<0>(info.param))) + "_" +  \
                   name(std::get<1>(info.param));                                         \
        })

#endif
