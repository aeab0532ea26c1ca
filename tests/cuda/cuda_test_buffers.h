// Device and host buffers of the CUDA tests (RAII; failures are test failures, not crashes).
#ifndef FNGD_TESTS_CUDA_TEST_BUFFERS_H
#define FNGD_TESTS_CUDA_TEST_BUFFERS_H

#include <gtest/gtest.h>

#include <cuda_runtime.h>

#include <vector>

#include "alloc.h"

namespace fngd_test {

// Zero-filled device memory of b bytes, or a copy of a host vector.
struct Dev {
    void* p = nullptr;
    size_t bytes = 0;
    explicit Dev(size_t b) : bytes(b) {
        EXPECT_EQ(cudaMalloc(&p, b ? b : 1), cudaSuccess);
        EXPECT_EQ(cudaMemset(p, 0, b ? b : 1), cudaSuccess);
    }
    template <class T>
    explicit Dev(const std::vector<T>& v) : Dev(v.size() * sizeof(T)) {
        if (!v.empty()) EXPECT_EQ(cudaMemcpy(p, v.data(), bytes, cudaMemcpyHostToDevice), cudaSuccess);
    }
    ~Dev() { cudaFree(p); }
    Dev(const Dev&) = delete;
    Dev& operator=(const Dev&) = delete;
    float* f() const { return (float*)p; }
    template <class T = float>
    std::vector<T> get(size_t n) const {
        std::vector<T> v(n);
        if (n) EXPECT_EQ(cudaMemcpy(v.data(), p, n * sizeof(T), cudaMemcpyDeviceToHost), cudaSuccess);
        return v;
    }
};

// Host workspace for the CPU backend (256-byte aligned, as the host reserves it).
struct HostWs {
    void* p = nullptr;
    size_t bytes = 0;
    explicit HostWs(size_t b) : bytes(b) { p = b ? fngd_host_alloc(b, 256) : nullptr; }
    ~HostWs() { fngd_host_free(p); }
};

}  // namespace fngd_test

#endif
