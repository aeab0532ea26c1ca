// A CPU context and a CUDA context on one configuration, each with a call open for the test's
// lifetime (the CUDA one on `gpu_stream`, NULL: the per-thread default stream), and the
// helpers the CUDA tests drive the operation tables with: an op's call with a workspace, and
// the one workspace query. Header-only.
#ifndef FNGD_TESTS_CUDA_TEST_BACKENDS_H
#define FNGD_TESTS_CUDA_TEST_BACKENDS_H

#include <gtest/gtest.h>

#include <cuda_runtime.h>

#include "backend.h"
#include "backend_test_util.h"
#include "fngd.h"

namespace fngd_test {

struct TwoBackends {
    const fngd_backend_ops_t* cpu = fngd_cpu_backend_ops();
    const fngd_backend_ops_t* gpu = fngd_cuda_backend_ops();
    fngd_backend_ctx_t* cc = nullptr;
    fngd_backend_ctx_t* gc = nullptr;
    fngd_err_t err{};
    fngd_call_t ccall{}, gcall{};

    // cfg.backend is set for each side.
    TwoBackends(fngd_config_t cfg, cudaStream_t gpu_stream) {
        cfg.backend = FNGD_BACKEND_CPU;
        EXPECT_EQ(cpu->create(&cfg, &cc, &err), FNGD_SUCCESS) << err.msg;
        cfg.backend = FNGD_BACKEND_CUDA;
        EXPECT_NE(gpu, nullptr);
        if (gpu) EXPECT_EQ(gpu->create(&cfg, &gc, &err), FNGD_SUCCESS) << err.msg;
        ccall = fngd_call_t{nullptr, nullptr, 0, &err, -1};
        gcall = fngd_call_t{(fngd_stream_t)gpu_stream, nullptr, 0, &err, -1};
        if (gc) EXPECT_EQ(gpu->begin_call(gc, &gcall), FNGD_SUCCESS) << err.msg;
    }
    ~TwoBackends() {
        if (cc) cpu->destroy(cc);
        if (gc) {
            gpu->end_call(gc, &gcall);
            gpu->destroy(gc);
        }
    }
    TwoBackends(const TwoBackends&) = delete;
    TwoBackends& operator=(const TwoBackends&) = delete;

    // Each side's call with the workspace (p, bytes), for the ops that take one.
    const fngd_call_t* cin(void* p, size_t bytes) { return held(with_ws(ccall, p, bytes)); }
    const fngd_call_t* gin(void* p, size_t bytes) { return held(with_ws(gcall, p, bytes)); }
    // The one workspace query: one layer (no solve), or `count` solves of order N.
    size_t cpu_ws(const fngd_layer_t& l, int N) { return query_ws(cpu, cc, ccall, &l, 1, N, 0); }
    size_t gpu_ws(const fngd_layer_t& l, int N) { return query_ws(gpu, gc, gcall, &l, 1, N, 0); }
    size_t cpu_solve_ws(int N, int count) {
        return query_ws(cpu, cc, ccall, nullptr, 0, N, count);
    }
    size_t gpu_solve_ws(int N, int count) {
        return query_ws(gpu, gc, gcall, nullptr, 0, N, count);
    }

  private:
    const fngd_call_t* held(const fngd_call_t& c) {
        wcall_ = c;
        return &wcall_;
    }
    fngd_call_t wcall_{};
};

// The configuration the CUDA tests share: max_batch, num_samples 4096, allow_tf32.
inline fngd_config_t test_config(int max_batch, int allow_tf32 = 0) {
    fngd_config_t cfg;
    fngd_config_init(&cfg);
    cfg.max_batch = max_batch;
    cfg.num_samples = 4096;
    cfg.allow_tf32 = allow_tf32;
    return cfg;
}

}  // namespace fngd_test

#endif
