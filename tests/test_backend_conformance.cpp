// Backend conformance: every operation of the backend table (src/host/backend.h), driven
// through the backend's own alloc / upload / download on a stream the test created, against
// the naive references of tests/reference. One suite, instantiated over the backends of the
// binary (backend_param.h): cpu in fngd_tests, cuda in fngd_cuda_tests (skips without a
// device; fails instead with FNGD_REQUIRE_GPU=1). On CUDA the stream is non-blocking and the
// test reads results only after synchronising that stream (download does), so an operation
// that enqueued its work on another stream is caught.
#include <gtest/gtest.h>

#include <algorithm>
#include <cfloat>
#include <cmath>
#include <cstring>
#include <numeric>
#include <random>
#include <string>
#include <vector>

#include "backend.h"
#include "backend_param.h"
#include "backend_test_util.h"
#include "fngd_reference.h"

using namespace fngd_test;

namespace {

class BackendOps : public ::testing::TestWithParam<fngd_backend_kind_t> {
  protected:
    static constexpr int kMaxBatch = 64;

    void SetUp() override {
        kind = GetParam();
        FNGD_TEST_REQUIRE_BACKEND(kind);
        ops = kind == FNGD_BACKEND_CUDA ? fngd_cuda_backend_ops() : fngd_cpu_backend_ops();
        ASSERT_NE(ops, nullptr);
        fngd_config_t cfg;
        fngd_config_init(&cfg);
        cfg.backend = kind;
        cfg.max_batch = kMaxBatch;
        cfg.num_samples = 4096;
        ASSERT_EQ(ops->create(&cfg, &ctx, &err), FNGD_SUCCESS) << err.msg;
        stream = make_test_stream(kind);
    }
    void TearDown() override {
        destroy_test_stream(kind, stream);
        for (void* p : owned) ops->free(ctx, p);
        if (ctx) ops->destroy(ctx);
    }

    // Backend memory of n zero-filled T, freed at TearDown.
    template <class T>
    T* zeros(size_t n) {
        void* p = nullptr;
        EXPECT_EQ(ops->alloc(ctx, n * sizeof(T), &p, &err), FNGD_SUCCESS) << err.msg;
        if (p) owned.push_back(p);
        return (T*)p;
    }
    // Backend memory holding v.
    template <class T>
    T* put(const std::vector<T>& v) {
        T* p = zeros<T>(v.size());
        if (p && !v.empty())
            EXPECT_EQ(ops->upload(ctx, p, v.data(), v.size() * sizeof(T), stream, &err),
                      FNGD_SUCCESS)
                << err.msg;
        return p;
    }
    template <class T>
    void set(T* p, const std::vector<T>& v) {
        EXPECT_EQ(ops->upload(ctx, p, v.data(), v.size() * sizeof(T), stream, &err),
                  FNGD_SUCCESS)
            << err.msg;
    }
    // n values read back after synchronising the test's stream only.
    template <class T>
    std::vector<T> get(const T* p, size_t n) {
        std::vector<T> v(n);
        if (n)
            EXPECT_EQ(ops->download(ctx, v.data(), p, n * sizeof(T), stream, &err), FNGD_SUCCESS)
                << err.msg;
        return v;
    }

    fngd_backend_kind_t kind = FNGD_BACKEND_CPU;
    const fngd_backend_ops_t* ops = nullptr;
    fngd_backend_ctx_t* ctx = nullptr;
    fngd_stream_t stream = nullptr;
    fngd_err_t err{};
    std::vector<void*> owned;
};

std::vector<int64_t> distinct_keys(std::mt19937& gen, int n, int64_t range) {
    std::vector<int64_t> ids((size_t)range);
    std::iota(ids.begin(), ids.end(), 0);
    std::shuffle(ids.begin(), ids.end(), gen);
    ids.resize((size_t)n);
    return ids;
}

}  // namespace

TEST_P(BackendOps, TableIsComplete) {
    EXPECT_STREQ(ops->name, backend_name(kind));
    EXPECT_TRUE(ops->create && ops->destroy && ops->alloc && ops->free && ops->upload &&
                ops->download && ops->synchronize && ops->workspace_bytes &&
                ops->solver_workspace_bytes && ops->check_finite && ops->layer_gram &&
                ops->factor_solve && ops->factor_solve_batched &&
                ops->solver_batched_workspace_bytes && ops->scatter_coefs && ops->gather_coefs &&
                ops->summarize_coefs && ops->weighted_grad && ops->sgd_update && ops->dot &&
                ops->scale && ops->copy);
}

// ---- coefficient table -----------------------------------------------------------------------

// scatter stores every set of a batch in one call and gather reads every set back, for host ids
// (more rounds than the CUDA staging ring has slots) and position keys, with a leading
// dimension larger than N whose gaps gather must leave alone; unseen keys take the fallback
// of their set (stored mean or 1/N) and are counted once per key, not once per set.
TEST_P(BackendOps, ScatterAndGatherServeEverySetInOneCall) {
    const int64_t keys = 101;
    const int ld = 40;
    for (int nsets : {1, 3, 7}) {
        SCOPED_TRACE("nsets " + std::to_string(nsets));
        std::mt19937 gen(11 + nsets);
        std::vector<float> table((size_t)(keys * nsets), -9.0f);
        std::vector<uint8_t> seen((size_t)keys, 0);
        float* dt = put(table);
        uint8_t* ds = put(seen);
        for (int round = 0; round < 9; ++round) {
            const int N = round % 2 ? 37 : 13;
            const bool positions = round == 4;
            const std::vector<int64_t> ids = distinct_keys(gen, N, keys);
            const int64_t* idp = positions ? nullptr : ids.data();
            const int64_t offset = positions ? 50 : 0;
            const Vec alpha = random_vec((size_t)nsets * ld, 300 + round);
            fngd_ref_scatter(table.data(), seen.data(), nsets, idp, offset, N, alpha.data(), ld);
            ASSERT_EQ(ops->scatter_coefs(ctx, dt, ds, nsets, idp, offset, N, put(alpha), ld,
                                         stream, &err),
                      FNGD_SUCCESS)
                << err.msg;
        }
        ASSERT_EQ(get(dt, table.size()), table);
        ASSERT_EQ(get(ds, seen.size()), seen);

        std::vector<float> fallback = random_vec((size_t)nsets, 77);
        const float* df = put(fallback);
        int64_t count = 5;
        int64_t* dcount = put(std::vector<int64_t>{count});
        for (int round = 0; round < 6; ++round) {
            const int N = round % 2 ? 37 : 1;
            const bool positions = round == 3;
            const std::vector<int64_t> ids = distinct_keys(gen, N, keys);
            const int64_t* idp = positions ? nullptr : ids.data();
            const int64_t offset = positions ? keys - N : 0;
            const int uniform = round % 3 == 0;
            const fngd_fallback_t fk = uniform ? FNGD_FALLBACK_UNIFORM : FNGD_FALLBACK_STORED_MEAN;
            std::vector<float> want((size_t)nsets * ld, 777.0f);
            count += fngd_ref_gather(table.data(), seen.data(), nsets, idp, offset, N, uniform,
                                     fallback.data(), 2.0f, want.data(), ld);
            float* dout = put(std::vector<float>((size_t)nsets * ld, 777.0f));
            ASSERT_EQ(ops->gather_coefs(ctx, dt, ds, nsets, idp, offset, N, fk,
                                        uniform ? nullptr : df, 2.0f, dout, ld, dcount, stream,
                                        &err),
                      FNGD_SUCCESS)
                << err.msg;
            ASSERT_EQ(get(dout, want.size()), want) << "round " << round;
            ASSERT_EQ(get(dcount, 1)[0], count) << "round " << round;
        }
    }
}

// One summary per set from one call: count, min and max exactly as the key-order scan, the
// sum within the bound of a reordered double sum; num_keys limits the keys; sets with nothing
// seen report zeros. 300 sets: more sets than the CUDA summary's block budget.
TEST_P(BackendOps, SummaryOfEverySetInOneCall) {
    const int64_t keys = 1000;
    for (int nsets : {1, 3, 300}) {
        SCOPED_TRACE("nsets " + std::to_string(nsets));
        const Vec table = random_vec((size_t)(keys * nsets), 5 + nsets, -1.0f, 1.0f);
        std::vector<uint8_t> seen((size_t)keys);
        std::mt19937 gen(9);
        for (auto& s : seen) s = gen() % 3 != 0;
        const float* dt = put(table);
        const uint8_t* ds = put(seen);
        for (int64_t nk : {(int64_t)0, (int64_t)1, (int64_t)60, keys}) {
            std::vector<fngd_coef_summary_t> got((size_t)nsets);
            ASSERT_EQ(ops->summarize_coefs(ctx, dt, ds, nk, nsets, got.data(), stream, &err),
                      FNGD_SUCCESS)
                << err.msg;
            for (int s = 0; s < nsets; ++s) {
                int64_t count;
                double mn, mx, sum;
                fngd_ref_summary(table.data(), seen.data(), nk, nsets, s, &count, &mn, &mx, &sum);
                const fngd_coef_summary_t& g = got[(size_t)s];
                ASSERT_EQ(g.count, count) << "set " << s << " num_keys " << nk;
                ASSERT_EQ(g.min, mn) << "set " << s << " num_keys " << nk;
                ASSERT_EQ(g.max, mx) << "set " << s << " num_keys " << nk;
                // count doubles (exact floats, |v| <= 1) summed in another order: a count-term
                // double chain, |diff| <= 2 * count * DBL_EPSILON * count.
                ASSERT_NEAR(g.sum, sum, 2.0 * (double)count * DBL_EPSILON * count + DBL_MIN)
                    << "set " << s << " num_keys " << nk;
            }
        }
    }
}

// NaN among the stored values: min and max are NaN when the lowest seen key holds one, a NaN
// at a later key is skipped, the sum is NaN either way; the NaN set does not leak into the
// other set of the same call. Key counts up to several values per thread of the CUDA grid.
TEST_P(BackendOps, SummaryWithNanFollowsTheScanRule) {
    const int nsets = 2, nan_set = 1;
    for (int64_t keys : {(int64_t)1, (int64_t)5, (int64_t)1000, (int64_t)256 * 256 * 3 + 17}) {
        const Vec base = random_vec((size_t)(keys * nsets), (unsigned)keys, -2.0f, 2.0f);
        std::vector<uint8_t> seen((size_t)keys, 1);
        if (keys > 1) seen[0] = 0;  // the first seen key is 1
        if (keys > 4) seen[(size_t)keys / 2 + 1] = 0;
        const int64_t first = keys > 1 ? 1 : 0;
        // Keys holding a NaN: none, the first seen one, a middle one, the last, all, first+last.
        std::vector<std::vector<int64_t>> cases = {{}, {first}, {keys / 2}, {keys - 1}, {}};
        for (int64_t k = 0; k < keys; ++k) cases.back().push_back(k);
        if (keys > 2) cases.push_back({first, keys - 1});
        const uint8_t* ds = put(seen);
        float* dt = zeros<float>(base.size());
        for (size_t c = 0; c < cases.size(); ++c) {
            Vec table = base;
            for (int64_t k : cases[c]) table[(size_t)(k * nsets + nan_set)] = NAN;
            set(dt, table);
            std::vector<fngd_coef_summary_t> got((size_t)nsets);
            ASSERT_EQ(ops->summarize_coefs(ctx, dt, ds, keys, nsets, got.data(), stream, &err),
                      FNGD_SUCCESS)
                << err.msg;
            for (int s = 0; s < nsets; ++s) {
                const std::string what = "keys " + std::to_string(keys) + " case " +
                                         std::to_string(c) + " set " + std::to_string(s);
                int64_t count;
                double mn, mx, sum;
                fngd_ref_summary(table.data(), seen.data(), keys, nsets, s, &count, &mn, &mx, &sum);
                const fngd_coef_summary_t& g = got[(size_t)s];
                EXPECT_EQ(g.count, count) << what;
                EXPECT_EQ(std::isnan(g.min), std::isnan(mn)) << what;
                EXPECT_EQ(std::isnan(g.max), std::isnan(mx)) << what;
                if (!std::isnan(mn)) EXPECT_EQ(g.min, mn) << what;
                if (!std::isnan(mx)) EXPECT_EQ(g.max, mx) << what;
                EXPECT_EQ(std::isnan(g.sum), std::isnan(sum)) << what;
                // count doubles (exact floats, |v| <= 2) in another order: |diff| <= 2 * count *
                // DBL_EPSILON * 2 * count.
                if (!std::isnan(sum))
                    EXPECT_NEAR(g.sum, sum, 4.0 * (double)count * DBL_EPSILON * count + DBL_MIN)
                        << what;
            }
        }
    }
}

// Bad arguments fail with INVALID_ARGUMENT and a message, and write nothing.
TEST_P(BackendOps, CoefOpsRejectBadArgumentsAndWriteNothing) {
    const int nsets = 2, N = 5, keys = 16;
    const std::vector<float> table((size_t)(keys * nsets), 3.0f);
    float* dt = put(table);
    uint8_t* ds = put(std::vector<uint8_t>((size_t)keys, 1));
    const float* alpha = put(random_vec((size_t)(nsets * N), 1));
    int64_t* count = put(std::vector<int64_t>{0});
    const std::vector<float> out0((size_t)(nsets * N), 42.0f);
    float* out = put(out0);
    const int64_t ids[N] = {0, 3, 7, 8, 15};
    auto expect_bad = [&](fngd_status_t s, const char* what) {
        EXPECT_EQ(s, FNGD_ERROR_INVALID_ARGUMENT) << what;
        EXPECT_GT(std::strlen(err.msg), 0u) << what;
        err.msg[0] = '\0';
    };
    expect_bad(ops->scatter_coefs(ctx, dt, ds, nsets, ids, 0, N, alpha, N - 1, stream, &err),
               "scatter ld < N");
    expect_bad(ops->scatter_coefs(ctx, dt, ds, 0, ids, 0, N, alpha, N, stream, &err),
               "scatter nsets 0");
    expect_bad(ops->gather_coefs(ctx, dt, ds, nsets, ids, 0, N, FNGD_FALLBACK_UNIFORM, nullptr,
                                 1.0f, out, N - 1, count, stream, &err),
               "gather ld < N");
    expect_bad(ops->gather_coefs(ctx, dt, ds, nsets, ids, 0, N, FNGD_FALLBACK_UNIFORM, nullptr,
                                 1.0f, out, N, nullptr, stream, &err),
               "gather without a counter");
    expect_bad(ops->gather_coefs(ctx, dt, ds, nsets, ids, 0, N, FNGD_FALLBACK_STORED_MEAN,
                                 nullptr, 1.0f, out, N, count, stream, &err),
               "gather stored mean without the means");
    fngd_coef_summary_t sum[nsets];
    expect_bad(ops->summarize_coefs(ctx, dt, ds, keys, 0, sum, stream, &err), "summary nsets 0");
    expect_bad(ops->summarize_coefs(ctx, dt, ds, -1, nsets, sum, stream, &err),
               "summary num_keys < 0");
    EXPECT_EQ(get(dt, table.size()), table);
    EXPECT_EQ(get(out, out0.size()), out0);
    EXPECT_EQ(get(count, 1)[0], 0);
}

FNGD_INSTANTIATE_BACKENDS(BackendOps);
