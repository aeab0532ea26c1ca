// Backend conformance: every operation of the backend table (src/host/backend.h), driven
// through the backend's own alloc / upload / download on a stream the test created, against
// the naive references of tests/reference. One suite, instantiated over the backends of the
// binary (backend_param.h): cpu in fngd_tests, cuda in fngd_cuda_tests (skips without a
// device; fails instead with FNGD_REQUIRE_GPU=1). On CUDA the stream is non-blocking and the
// test reads results only after synchronising that stream (download does), so an operation
// that enqueued its work on another stream is caught.
//
// Tolerances. A float sum of n terms in any order is within n * u * sum|terms| of the exact
// value (Higham's gamma_n, u = FLT_EPSILON / 2); the references are exact to double rounding,
// so each comparison uses eps = FLT_EPSILON (a factor 2 of margin) times the longest chain of
// float operations the op may perform (stated at each use) times sum|terms|, computed in double
// from the absolute values of the inputs.
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

// eps of the tolerances (see the top of the file).
const double kEps = FLT_EPSILON;

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
        // One call around the whole test, as a public entry point opens one around its ops.
        call = fngd_call_t{stream, nullptr, 0, &err, -1};
        ASSERT_EQ(ops->begin_call(ctx, &call), FNGD_SUCCESS) << err.msg;
    }
    void TearDown() override {
        destroy_test_stream(kind, stream);
        if (!ctx) return;
        for (void* p : owned) ops->free(ctx, p);
        ops->end_call(ctx, &call);
        ops->destroy(ctx);
    }

    // Backend memory of n zero-filled T, freed at TearDown.
    template <class T>
    T* zeros(size_t n) {
        void* p = nullptr;
        EXPECT_EQ(ops->alloc(ctx, n * sizeof(T), &p, &call), FNGD_SUCCESS) << err.msg;
        if (p) owned.push_back(p);
        return (T*)p;
    }
    // Backend memory holding v.
    template <class T>
    T* put(const std::vector<T>& v) {
        T* p = zeros<T>(v.size());
        if (p && !v.empty())
            EXPECT_EQ(ops->upload(ctx, p, v.data(), v.size() * sizeof(T), &call),
                      FNGD_SUCCESS)
                << err.msg;
        return p;
    }
    template <class T>
    void set(T* p, const std::vector<T>& v) {
        EXPECT_EQ(ops->upload(ctx, p, v.data(), v.size() * sizeof(T), &call),
                  FNGD_SUCCESS)
            << err.msg;
    }
    // Backend workspace of `bytes`, poisoned with NaN (an op reading what it never wrote shows)
    // and followed by a 256-byte canary that must survive (the op stayed inside its bytes).
    struct Ws {
        unsigned char* p = nullptr;
        size_t bytes = 0;
    };
    Ws workspace(size_t bytes) {
        std::vector<unsigned char> init(bytes + 256, 0xA5);
        const float nan = std::nanf("");
        for (size_t k = 0; k + sizeof(float) <= bytes; k += sizeof(float))
            std::memcpy(&init[k], &nan, sizeof nan);
        Ws w;
        w.p = put(init);
        w.bytes = bytes;
        return w;
    }
    // The test's call with workspace w, for the ops that use one.
    const fngd_call_t* in(const Ws& w) {
        ws_call = with_ws(call, w.p, w.bytes);
        return &ws_call;
    }
    // The one workspace query, for one layer (no solve) or for `count` solves of order N.
    size_t layer_ws(const fngd_layer_t& l, int N) { return query_ws(ops, ctx, call, &l, 1, N, 0); }
    size_t solve_ws(int N, int count) { return query_ws(ops, ctx, call, nullptr, 0, N, count); }
    // factor_solve of one matrix (count 1, ld_alpha N).
    fngd_status_t solve1(const float* K, int N, fngd_damping_kind_t kind, double damping,
                         double min_shift, const float* rhs, int filter, float* alpha, int* info,
                         double* shift, double* trace, const Ws& w) {
        return ops->factor_solve(ctx, K, 1, N, kind, damping, &min_shift, rhs, filter, alpha, N,
                                 info, shift, trace, in(w));
    }
    bool canary_ok(const Ws& w) {
        for (unsigned char c : get(w.p + w.bytes, 256))
            if (c != 0xA5) return false;
        return true;
    }

    // n values read back after synchronising the test's stream only.
    template <class T>
    std::vector<T> get(const T* p, size_t n) {
        std::vector<T> v(n);
        if (n)
            EXPECT_EQ(ops->download(ctx, v.data(), p, n * sizeof(T), &call), FNGD_SUCCESS)
                << err.msg;
        return v;
    }

    fngd_backend_kind_t kind = FNGD_BACKEND_CPU;
    const fngd_backend_ops_t* ops = nullptr;
    fngd_backend_ctx_t* ctx = nullptr;
    fngd_stream_t stream = nullptr;
    fngd_err_t err{};
    fngd_call_t call{}, ws_call{};
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
    EXPECT_TRUE(ops->create && ops->destroy && ops->begin_call && ops->end_call && ops->alloc &&
                ops->free && ops->upload && ops->download && ops->synchronize &&
                ops->workspace_bytes && ops->check_finite && ops->layer_gram &&
                ops->factor_solve && ops->scatter_coefs && ops->gather_coefs &&
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
            ASSERT_EQ(ops->scatter_coefs(ctx, dt, ds, nsets, idp, offset, N, put(alpha), ld, &call),
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
                                        uniform ? nullptr : df, 2.0f, dout, ld, dcount, &call),
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
            ASSERT_EQ(ops->summarize_coefs(ctx, dt, ds, nk, nsets, got.data(), &call),
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
            ASSERT_EQ(ops->summarize_coefs(ctx, dt, ds, keys, nsets, got.data(), &call),
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
    expect_bad(ops->scatter_coefs(ctx, dt, ds, nsets, ids, 0, N, alpha, N - 1, &call),
               "scatter ld < N");
    expect_bad(ops->scatter_coefs(ctx, dt, ds, 0, ids, 0, N, alpha, N, &call),
               "scatter nsets 0");
    expect_bad(ops->gather_coefs(ctx, dt, ds, nsets, ids, 0, N, FNGD_FALLBACK_UNIFORM, nullptr,
                                 1.0f, out, N - 1, count, &call),
               "gather ld < N");
    expect_bad(ops->gather_coefs(ctx, dt, ds, nsets, ids, 0, N, FNGD_FALLBACK_UNIFORM, nullptr,
                                 1.0f, out, N, nullptr, &call),
               "gather without a counter");
    expect_bad(ops->gather_coefs(ctx, dt, ds, nsets, ids, 0, N, FNGD_FALLBACK_STORED_MEAN,
                                 nullptr, 1.0f, out, N, count, &call),
               "gather stored mean without the means");
    fngd_coef_summary_t sum[nsets];
    expect_bad(ops->summarize_coefs(ctx, dt, ds, keys, 0, sum, &call), "summary nsets 0");
    expect_bad(ops->summarize_coefs(ctx, dt, ds, -1, nsets, sum, &call),
               "summary num_keys < 0");
    EXPECT_EQ(get(dt, table.size()), table);
    EXPECT_EQ(get(out, out0.size()), out0);
    EXPECT_EQ(get(count, 1)[0], 0);
}

// ---- memory --------------------------------------------------------------------------------

// alloc gives zero-filled, 256-byte aligned memory; upload, copy and download move bytes
// exactly; synchronize succeeds on the test's stream.
TEST_P(BackendOps, MemoryIsZeroedAlignedAndCopiesExactly) {
    for (size_t bytes : {(size_t)1, (size_t)1000, (size_t)4099 * 4}) {
        unsigned char* p = zeros<unsigned char>(bytes);
        ASSERT_NE(p, nullptr);
        EXPECT_EQ(reinterpret_cast<uintptr_t>(p) % 256, 0u);
        for (unsigned char c : get(p, bytes)) ASSERT_EQ(c, 0);
    }
    const Vec src = random_vec(250, 5);
    float* a = put(src);
    float* b = zeros<float>(250);
    ASSERT_EQ(ops->copy(ctx, b, a, 250, &call), FNGD_SUCCESS) << err.msg;
    ASSERT_EQ(ops->copy(ctx, b, b, 250, &call), FNGD_SUCCESS) << err.msg;  // dst == src
    ASSERT_EQ(ops->copy(ctx, b, a, 0, &call), FNGD_SUCCESS) << err.msg;
    ASSERT_EQ(ops->synchronize(ctx, &call), FNGD_SUCCESS) << err.msg;
    EXPECT_EQ(get(a, 250), src);
    EXPECT_EQ(get(b, 250), src);
}

// ---- check_finite --------------------------------------------------------------------------

// A list of arrays in one call: 0 when all are finite, else 1 + the index of an array holding
// a NaN or Inf (with one bad array: its index; with several: one of them, the CPU the first);
// an empty array and an empty list are finite; a NULL array with n > 0 is refused.
TEST_P(BackendOps, CheckFiniteOfAListReportsTheBadArray) {
    Vec a = random_vec(10, 1), b = random_vec(1033, 2), c = random_vec(5, 3);
    float* da = put(a);
    float* db = put(b);
    float* dc = put(c);
    fngd_array_ref_t list[4] = {{da, a.size()}, {nullptr, 0}, {db, b.size()}, {dc, c.size()}};
    int bad = -1;
    ASSERT_EQ(ops->check_finite(ctx, list, 4, &bad, &call), FNGD_SUCCESS) << err.msg;
    EXPECT_EQ(bad, 0);
    ASSERT_EQ(ops->check_finite(ctx, list, 0, &bad, &call), FNGD_SUCCESS) << err.msg;
    EXPECT_EQ(bad, 0);
    c[4] = INFINITY;
    set(dc, c);
    ASSERT_EQ(ops->check_finite(ctx, list, 4, &bad, &call), FNGD_SUCCESS);
    EXPECT_EQ(bad, 4);
    b[0] = std::nanf("");
    set(db, b);
    ASSERT_EQ(ops->check_finite(ctx, list, 4, &bad, &call), FNGD_SUCCESS);
    EXPECT_TRUE(bad == 3 || bad == 4) << bad;
    if (kind == FNGD_BACKEND_CPU) EXPECT_EQ(bad, 3);  // the CPU reports the first
    fngd_array_ref_t null_list[1] = {{nullptr, 3}};
    EXPECT_EQ(ops->check_finite(ctx, null_list, 1, &bad, &call),
              FNGD_ERROR_INVALID_ARGUMENT);
}

// The scan against std::isfinite: every length around vector, block and tail boundaries, from
// an aligned and a misaligned start, a non-finite value at every position (short arrays) or at
// each boundary position (long ones), every kind of NaN/Inf bit pattern, and the finite
// extremes that must not be flagged.
TEST_P(BackendOps, CheckFiniteAtEveryPositionAndPattern) {
    const uint32_t bad_bits[] = {0x7f800000u, 0xff800000u, 0x7fc00000u, 0xffc00000u,
                                 0x7f800001u, 0x7fffffffu, 0xffffffffu};
    const uint32_t good_bits[] = {0x7f7fffffu, 0xff7fffffu, 0x00000001u, 0x80000001u,
                                  0x00800000u, 0x80000000u, 0x00000000u, 0x7f000000u};
    auto from_bits = [](uint32_t b) {
        float f;
        std::memcpy(&f, &b, sizeof f);
        return f;
    };
    std::vector<size_t> lengths;
    for (size_t n = 0; n <= 40; ++n) lengths.push_back(n);
    for (size_t n : {1023, 1024, 1025, 4095, 4096, 4097, 4099, 16384, 16389, 100003})
        lengths.push_back(n);
    std::mt19937 gen(3);
    for (size_t n : lengths) {
        SCOPED_TRACE("n " + std::to_string(n));
        Vec x = random_vec(n + 1, (unsigned)n, -1e30f, 1e30f);
        float* dx = put(x);
        std::vector<size_t> pos;
        if (n <= 40) {
            for (size_t k = 0; k < n; ++k) pos.push_back(k);
        } else {
            const size_t m = n / 4;
            for (size_t k : {(size_t)0, (size_t)1, m - 1, m, 2 * m - 1, 2 * m, 3 * m - 1, 3 * m,
                             4 * m - 1, 4 * m, n - 1, (size_t)gen() % n})
                if (k < n) pos.push_back(k);
        }
        for (size_t offset : {(size_t)0, (size_t)1}) {  // aligned and misaligned start
            int bad = -1;
            ASSERT_EQ(check_one(ops, ctx, dx + offset, n, &bad, &call), FNGD_SUCCESS)
                << err.msg;
            EXPECT_EQ(bad, 0) << "offset " << offset;
            for (size_t k : pos) {
                float* at = dx + offset + k;
                for (uint32_t b : bad_bits) {
                    set(at, Vec{from_bits(b)});  // one element changed, the rest as uploaded
                    bad = -1;
                    ASSERT_EQ(check_one(ops, ctx, dx + offset, n, &bad, &call),
                              FNGD_SUCCESS);
                    EXPECT_EQ(bad, 1) << "pattern " << std::hex << b << std::dec << " at " << k
                                      << " offset " << offset;
                }
                set(at, Vec{x[offset + k]});
            }
        }
        if (n == 0) continue;
        for (uint32_t b : good_bits) {
            const float* dy = put(Vec(n, from_bits(b)));
            int bad = -1;
            ASSERT_EQ(check_one(ops, ctx, dy, n, &bad, &call), FNGD_SUCCESS);
            EXPECT_EQ(bad, 0) << "pattern " << std::hex << b;
        }
    }
}

// ---- layer_gram ------------------------------------------------------------------------------

namespace {

// Longest float chain behind one Gram entry, over both methods: the grad_len-term dot product
// (materialise), or pa- and q-term dot products and a T*T block sum (position), plus the T-term
// sums forming a per-sample gradient entry and a few roundings of products and scalings.
double gram_chain(const fngd_layer_t& l) {
    return (double)l.grad_len + (double)l.T * l.T + l.T + l.pa + l.q + 8.0;
}

}  // namespace

// K = scale^2 * Gram of the per-sample gradients for every layer kind and both methods,
// N = 1, 7, 33 (one warp and more), against the naive Gram; both triangles written and exactly symmetric;
// accumulate adds to K (one more rounding); accumulate == 0 never reads K (NaN-poisoned);
// the workspace is NaN-poisoned and its end guarded.
TEST_P(BackendOps, LayerGramMatchesNaive) {
    unsigned seed = 100;
    for (const Case& c : layer_cases())
        for (fngd_gram_method_t method : {FNGD_GRAM_MATERIALIZE, FNGD_GRAM_POSITION})
            for (int N : {1, 7, 33}) {
                const fngd_layer_t l = make_layer(c.desc, method);
                if (l.method != method) continue;  // kinds with one method run it once
                // The position method costs (N T)^2 (p + q): above N T = 512 (the 33-channel
                // conv at N 33) it is what the cost model never picks, and too slow for the
                // CPU under valgrind; N 33 still runs it for every other layer.
                if (method == FNGD_GRAM_POSITION && (int64_t)N * l.T > 512) continue;
                const std::string what =
                    c.name + " method " + std::to_string((int)method) + " N " + std::to_string(N);
                SCOPED_TRACE(what);
                const Vec x = layer_input(l, N, seed += 7);
                const Vec go = random_vec((size_t)N * l.out_per_sample, seed + 1, -0.8f, 1.2f);
                const float scale = (float)N;  // mean-loss convention
                const Naive nv = naive_grads(l, N, x, go, scale);
                const DVec Kref = gram_of(nv.G, N, nv.len), Kabs = gram_of(nv.Gabs, N, nv.len);
                const fngd_layer_batch_t b{put(x), l.kind == FNGD_LAYER_GENERIC ? nullptr : put(go)};
                const Ws ws = workspace(layer_ws(l, N));
                for (int accumulate : {0, 1}) {
                    Vec K0 = random_vec((size_t)N * N, seed + 3);
                    for (int i = 0; i < N; ++i)  // symmetric, as the contract requires
                        for (int j = 0; j < i; ++j) K0[(size_t)i * N + j] = K0[(size_t)j * N + i];
                    float* dK = put(accumulate ? K0 : Vec((size_t)N * N, std::nanf("")));
                    ASSERT_EQ(ops->layer_gram(ctx, &l, &b, N, scale, dK, accumulate, in(ws)),
                              FNGD_SUCCESS)
                        << err.msg;
                    EXPECT_TRUE(canary_ok(ws));
                    const Vec K = get(dK, (size_t)N * N);
                    for (int i = 0; i < N; ++i)
                        for (int j = 0; j < N; ++j) {
                            const size_t e = (size_t)i * N + j;
                            ASSERT_EQ(K[e], K[(size_t)j * N + i]) << "not symmetric at " << i
                                                                   << "," << j;
                            const double want = Kref[e] + (accumulate ? K0[e] : 0.0);
                            const double abs = Kabs[e] + (accumulate ? std::fabs(K0[e]) : 0.0);
                            const double tol = kEps * (gram_chain(l) + accumulate) * abs + FLT_MIN;
                            ASSERT_NEAR(K[e], want, tol) << "K[" << i << "][" << j << "] acc "
                                                         << accumulate;
                        }
                }
            }
}

// ---- weighted_grad ---------------------------------------------------------------------------

// out_w, out_b = scale * sum_i alpha_i g_i for every kind, N = 1, 7, 13, 33, against the naive
// sum; nothing is written past the bias part (guard); a layer without bias gets out_b NULL.
TEST_P(BackendOps, WeightedGradMatchesNaive) {
    unsigned seed = 900;
    for (const Case& c : layer_cases())
        for (int N : {1, 7, 13, 33}) {
            const fngd_layer_t l = make_layer(c.desc, FNGD_GRAM_MATERIALIZE);
            SCOPED_TRACE(c.name + " N " + std::to_string(N));
            const Vec x = layer_input(l, N, seed += 5);
            const Vec go = random_vec((size_t)N * l.out_per_sample, seed + 1, -0.8f, 1.2f);
            const Vec alpha = random_vec(N, seed + 2);
            const float scale = 3.0f;
            const Naive nv = naive_grads(l, N, x, go, scale);
            const fngd_layer_batch_t b{put(x), l.kind == FNGD_LAYER_GENERIC ? nullptr : put(go)};
            const Ws ws = workspace(layer_ws(l, N));
            Vec out0((size_t)l.grad_len + 1, std::nanf(""));
            out0.back() = 12345.0f;  // guard after the bias part
            float* dout = put(out0);
            ASSERT_EQ(ops->weighted_grad(ctx, &l, &b, N, put(alpha), scale, dout,
                                         l.n_bias ? dout + l.n_weight : nullptr, in(ws)),
                      FNGD_SUCCESS)
                << err.msg;
            EXPECT_TRUE(canary_ok(ws));
            const Vec out = get(dout, out0.size());
            EXPECT_EQ(out.back(), 12345.0f);
            for (int64_t k = 0; k < l.grad_len; ++k) {
                double ref = 0, abs = 0;
                for (int i = 0; i < N; ++i) {
                    ref += alpha[i] * nv.G[(size_t)i * nv.len + k];
                    abs += std::fabs(alpha[i]) * nv.Gabs[(size_t)i * nv.len + k];
                }
                // N*T float terms of the reduction, plus <= 4 roundings of the scalings.
                ASSERT_NEAR(out[k], ref, kEps * ((double)N * l.T + 4) * abs + FLT_MIN) << k;
            }
        }
}

// ---- factor_solve, factor_solve_batched --------------------------------------------------------

namespace {

// The documented solve in double from its definition: shift = max(TRACE_RELATIVE ? damping *
// trace : N * damping, min_shift); x = (K + shift I)^-1 r; with the range filter
// (K + shift I)^-1 K x. Returns false when K + shift I is not positive definite.
struct SolveRef {
    DVec alpha;
    double trace = 0, shift = 0;
};
bool solve_ref(const Vec& K, int N, fngd_damping_kind_t kind, double damping, double min_shift,
               const Vec* rhs, int filter, SolveRef* out) {
    for (int i = 0; i < N; ++i) out->trace += K[(size_t)i * N + i];
    out->shift = std::max(kind == FNGD_DAMPING_TRACE_RELATIVE ? damping * out->trace : N * damping,
                          min_shift);
    DVec A(K.begin(), K.end());
    for (int i = 0; i < N; ++i) A[(size_t)i * N + i] += out->shift;
    DVec A2 = A;
    out->alpha.assign((size_t)N, 1.0);
    if (rhs) out->alpha.assign(rhs->begin(), rhs->end());
    if (fngd_ref_cholesky_solve(A.data(), N, out->alpha.data()) != 0) return false;
    if (filter) {
        DVec y((size_t)N, 0.0);
        for (int i = 0; i < N; ++i)
            for (int j = 0; j < N; ++j) y[i] += (double)K[(size_t)i * N + j] * out->alpha[j];
        if (fngd_ref_cholesky_solve(A2.data(), N, y.data()) != 0) return false;
        out->alpha = y;
    }
    return true;
}

// Both solves are double: the difference is about N^2 * cond * DBL_EPSILON relative with
// cond <= (trace + shift) / shift (the filter applies the inverse twice: twice that), plus the
// rounding of alpha to float (u; 4 eps of margin for the filter's subtraction).
double solve_tolerance(const SolveRef& r, int N) {
    double amax = 0;
    for (double a : r.alpha) amax = std::max(amax, std::fabs(a));
    const double cond = (std::fabs(r.trace) + r.shift) / r.shift;
    return (4 * kEps + 4.0 * N * N * cond * DBL_EPSILON) * amax + FLT_MIN;
}

}  // namespace

TEST_P(BackendOps, FactorSolveMatchesNaiveCholesky) {
    struct Opt {
        fngd_damping_kind_t kind;
        double damping, min_shift;
        bool custom_rhs;
    };
    const Opt opts[] = {{FNGD_DAMPING_ABSOLUTE, 1e-2, 0.0, false},
                        {FNGD_DAMPING_TRACE_RELATIVE, 1e-3, 0.0, false},
                        {FNGD_DAMPING_ABSOLUTE, 0.0, 0.5, true},  // min_shift wins
                        {FNGD_DAMPING_TRACE_RELATIVE, 0.1, 1e-6, true}};
    for (int N : {1, 2, 7, 31, 64})
        for (const Opt& o : opts)
            for (int filter : {0, 1}) {
                SCOPED_TRACE("N " + std::to_string(N) + " kind " + std::to_string(o.kind) +
                             " filter " + std::to_string(filter));
                const Vec K = random_gram(N, 60 + N);
                const Vec rhs = random_vec(N, 70 + N, 0.5f, 2.0f);
                SolveRef ref;
                ASSERT_TRUE(solve_ref(K, N, o.kind, o.damping, o.min_shift,
                                      o.custom_rhs ? &rhs : nullptr, filter, &ref));
                const Ws ws = workspace(solve_ws(N, 1));
                float* da = put(Vec(N, std::nanf("")));
                int info = -1;
                double shift = 0, trace = 0;
                ASSERT_EQ(solve1(put(K), N, o.kind, o.damping, o.min_shift,
                                            o.custom_rhs ? put(rhs) : nullptr, filter, da, &info,
                                            &shift, &trace, ws),
                          FNGD_SUCCESS)
                    << err.msg;
                EXPECT_TRUE(canary_ok(ws));
                EXPECT_EQ(info, 0);
                // trace and shift: N-term double sums of the same floats.
                EXPECT_NEAR(trace, ref.trace, 2.0 * N * DBL_EPSILON * ref.trace + DBL_MIN);
                EXPECT_NEAR(shift, ref.shift, 2.0 * N * DBL_EPSILON * ref.shift + DBL_MIN);
                const Vec alpha = get(da, (size_t)N);
                const double tol = solve_tolerance(ref, N);
                for (int i = 0; i < N; ++i) EXPECT_NEAR(alpha[i], ref.alpha[i], tol) << i;
            }
}

// diag(1, 1, -1, 1, 1): the leading minor of order 3 is the first that is not positive
// definite. The call succeeds with info 3 and leaves alpha untouched; a larger shift solves.
TEST_P(BackendOps, FactorSolveReportsNotPositiveDefiniteAndLeavesAlpha) {
    const int N = 5;
    Vec K((size_t)N * N, 0.0f);
    for (int i = 0; i < N; ++i) K[(size_t)i * N + i] = i == 2 ? -1.0f : 1.0f;
    const float* dK = put(K);
    const Ws ws = workspace(solve_ws(N, 1));
    const Vec sentinel(N, 42.0f);
    float* da = put(sentinel);
    int info = 0;
    double shift = -1, trace = 0;
    ASSERT_EQ(solve1(dK, N, FNGD_DAMPING_ABSOLUTE, 0.1, 0.0, nullptr, 0, da, &info,
                                &shift, &trace, ws),
              FNGD_SUCCESS)
        << err.msg;
    EXPECT_EQ(info, 3);
    EXPECT_DOUBLE_EQ(shift, 0.5);  // N * damping, still below 1
    EXPECT_DOUBLE_EQ(trace, 3.0);
    EXPECT_EQ(get(da, (size_t)N), sentinel);
    ASSERT_EQ(solve1(dK, N, FNGD_DAMPING_ABSOLUTE, 0.0, 2.0, nullptr, 0, da, &info,
                                &shift, &trace, ws),
              FNGD_SUCCESS)
        << err.msg;
    EXPECT_EQ(info, 0);
    EXPECT_EQ(shift, 2.0);  // min_shift raises the shift past the negative pivot
    const Vec a = get(da, (size_t)N);
    EXPECT_NEAR(a[0], 1.0 / 3.0, 4 * kEps);
    EXPECT_NEAR(a[2], 1.0, 4 * kEps);
}

// A workspace one byte short is an internal error; a NaN in K (on the diagonal or off it, K
// kept symmetric) is an error (BACKEND) or, on a LAPACK without the NaN check, a failed
// factorization (info > 0); either way alpha keeps what it held.
TEST_P(BackendOps, FactorSolveErrorsLeaveAlpha) {
    const int N = 7;
    const Vec sentinel = random_vec(N, 77);
    float* da = put(sentinel);
    int info = 0;
    double s = 0, t = 0;
    const size_t need = solve_ws(N, 1);
    const Ws small = workspace(need - 1);
    EXPECT_EQ(solve1(put(random_gram(N, 3)), N, FNGD_DAMPING_ABSOLUTE, 1e-3, 0.0,
                                nullptr, 0, da, &info, &s, &t, small),
              FNGD_ERROR_INTERNAL);
    const Ws ws = workspace(need);
    for (int pos : {0, 3 * N + 3, 1 * N + 5}) {
        Vec K((size_t)N * N, 0.0f);
        for (int i = 0; i < N; ++i) K[(size_t)i * N + i] = 2.0f;
        const int i = pos / N, j = pos % N;
        K[(size_t)i * N + j] = K[(size_t)j * N + i] = NAN;
        info = -12345;
        const fngd_status_t st = solve1(put(K), N, FNGD_DAMPING_ABSOLUTE, 0.1, 0.0,
                                                   nullptr, 0, da, &info, &s, &t, ws);
        EXPECT_TRUE(st == FNGD_ERROR_BACKEND || (st == FNGD_SUCCESS && info > 0))
            << "NaN at " << i << "," << j << ": status " << st << " info " << info;
        if (st != FNGD_SUCCESS) EXPECT_NE(std::string(err.msg), "");
        EXPECT_EQ(get(da, (size_t)N), sentinel) << "NaN at " << i << "," << j;
    }
}

// count matrices in one call, with per-matrix floors, a shared rhs, ld_alpha > N (the gaps stay
// untouched) and one matrix no damping makes positive definite (info > 0, its alpha untouched,
// the others solved): each against the naive solve of that matrix.
TEST_P(BackendOps, FactorSolveBatchedMatchesNaivePerMatrix) {
    const double damping = 0.05;
    for (int N : {1, 7, 64})
        for (int count : {1, 3, 17}) {
            const int ld = N + 3, bad = count > 1 ? count / 2 : -1;
            Vec K;
            DVec floors;
            for (int m = 0; m < count; ++m) {
                Vec Km = random_gram(N, 500 + 31 * m + N);
                if (m == bad) {
                    // Identity with pivot N/2 at -4N^2 - 4: below the absolute shift, and the
                    // negative trace clamps the trace-relative shift to the floor.
                    std::fill(Km.begin(), Km.end(), 0.0f);
                    for (int i = 0; i < N; ++i) Km[(size_t)i * N + i] = 1.0f;
                    Km[(size_t)(N / 2) * N + N / 2] = -4.0f * N * N - 4.0f;
                }
                K.insert(K.end(), Km.begin(), Km.end());
                floors.push_back(m == 0 ? 10.0 : 1e-6 * (m + 1));
            }
            const Vec rhs = random_vec(N, 9, 0.5f, 1.5f);
            const Vec sentinel = random_vec((size_t)count * ld, 123, 40.0f, 50.0f);
            const float* dK = put(K);
            const Ws ws = workspace(solve_ws(N, count));
            for (fngd_damping_kind_t kind : {FNGD_DAMPING_ABSOLUTE, FNGD_DAMPING_TRACE_RELATIVE})
                for (int custom_rhs : {0, 1})
                    for (int filter : {0, 1}) {
                        const std::string what = "N " + std::to_string(N) + " count " +
                                                 std::to_string(count) + " kind " +
                                                 std::to_string((int)kind) + " rhs " +
                                                 std::to_string(custom_rhs) + " filter " +
                                                 std::to_string(filter);
                        float* da = put(sentinel);
                        std::vector<int> info((size_t)count, -5);
                        DVec shift((size_t)count, -1.0), trace((size_t)count, -1.0);
                        ASSERT_EQ(ops->factor_solve(
                                      ctx, dK, count, N, kind, damping, floors.data(),
                                      custom_rhs ? put(rhs) : nullptr, filter, da, ld, info.data(),
                                      shift.data(), trace.data(), in(ws)),
                                  FNGD_SUCCESS)
                            << what << ": " << err.msg;
                        EXPECT_TRUE(canary_ok(ws)) << what;
                        const Vec got = get(da, sentinel.size());
                        for (int m = 0; m < count; ++m) {
                            const std::string wm = what + " matrix " + std::to_string(m);
                            const size_t o = (size_t)m * ld;
                            const Vec Km(K.begin() + (long)m * N * N, K.begin() + (long)(m + 1) * N * N);
                            SolveRef ref;
                            const bool pd = solve_ref(Km, N, kind, damping, floors[(size_t)m],
                                                      custom_rhs ? &rhs : nullptr, filter, &ref);
                            ASSERT_EQ(pd, m != bad) << wm;
                            // trace and shift: N-term double sums (the bad matrix mixes signs:
                            // bounded by the sum of |diagonal|).
                            double tabs = 0;
                            for (int i = 0; i < N; ++i) tabs += std::fabs(Km[(size_t)i * N + i]);
                            const double ttol = 2.0 * N * DBL_EPSILON * tabs + DBL_MIN;
                            EXPECT_NEAR(trace[(size_t)m], ref.trace, ttol) << wm;
                            EXPECT_NEAR(shift[(size_t)m], ref.shift, ttol + DBL_MIN) << wm;
                            for (int i = N; i < ld; ++i)
                                ASSERT_EQ(got[o + i], sentinel[o + i]) << wm << " gap " << i;
                            if (!pd) {
                                EXPECT_EQ(info[(size_t)m], N / 2 + 1) << wm;
                                for (int i = 0; i < N; ++i)
                                    ASSERT_EQ(got[o + i], sentinel[o + i]) << wm << " i " << i;
                                continue;
                            }
                            EXPECT_EQ(info[(size_t)m], 0) << wm;
                            const double tol = solve_tolerance(ref, N);
                            for (int i = 0; i < N; ++i)
                                ASSERT_NEAR(got[o + i], ref.alpha[i], tol) << wm << " i " << i;
                        }
                    }
        }
}

// A NaN in any one matrix fails the whole call with FNGD_ERROR_BACKEND: no alpha written (not
// even for the valid matrices), host outputs untouched.
TEST_P(BackendOps, FactorSolveBatchedRejectsNanAndWritesNothing) {
    const int count = 3;
    for (int N : {4, 64})
        for (int nan_matrix : {0, 2}) {
            SCOPED_TRACE("N " + std::to_string(N) + " NaN in " + std::to_string(nan_matrix));
            Vec K((size_t)count * N * N, 0.0f);
            for (int m = 0; m < count; ++m)
                for (int i = 0; i < N; ++i) K[(size_t)m * N * N + (size_t)i * N + i] = 2.0f;
            float* bad = K.data() + (size_t)nan_matrix * N * N;
            bad[(size_t)1 * N + N - 1] = bad[(size_t)(N - 1) * N + 1] = NAN;  // symmetric
            const Vec sentinel = random_vec((size_t)count * N, 78);
            float* da = put(sentinel);
            const DVec floors(count, 0.0);
            const Ws ws = workspace(solve_ws(N, count));
            std::vector<int> info((size_t)count, -12345);
            DVec shift((size_t)count, -1.0), trace((size_t)count, -1.0);
            err.msg[0] = '\0';
            EXPECT_EQ(ops->factor_solve(ctx, put(K), count, N, FNGD_DAMPING_ABSOLUTE, 0.1,
                                                floors.data(), nullptr, 0, da, N, info.data(),
                                                shift.data(), trace.data(), in(ws)),
                      FNGD_ERROR_BACKEND);
            EXPECT_NE(std::string(err.msg), "");
            for (int m = 0; m < count; ++m) {
                EXPECT_EQ(info[(size_t)m], -12345);
                EXPECT_EQ(shift[(size_t)m], -1.0);
            }
            EXPECT_EQ(get(da, sentinel.size()), sentinel);
        }
}

// ---- sgd_update ------------------------------------------------------------------------------

// d = dir + wd * param; mom = momentum * mom + d (no buffer: d); param -= lr * mom, against the
// reference update, for lengths around vector widths; several tensors in one call equal one call
// each; a bad tensor anywhere in the list updates nothing.
TEST_P(BackendOps, SgdUpdateMatchesReference) {
    for (int64_t n : {(int64_t)1, (int64_t)37, (int64_t)4099, (int64_t)70001})
        for (float momentum : {0.0f, 0.9f})
            for (bool with_mom : {true, false}) {
                if (!with_mom && momentum != 0.0f) continue;
                SCOPED_TRACE("n " + std::to_string(n) + " momentum " + std::to_string(momentum) +
                             " buffer " + std::to_string(with_mom));
                const Vec p0 = random_vec(n, 90), dir = random_vec(n, 91), m0 = random_vec(n, 92);
                float* dp = put(p0);
                float* dm = put(m0);
                const fngd_update_tensor_t t = {dp, put(dir), with_mom ? dm : nullptr, n};
                ASSERT_EQ(ops->sgd_update(ctx, &t, 1, 0.1f, momentum, 0.01f, &call),
                          FNGD_SUCCESS)
                    << err.msg;
                DVec p(p0.begin(), p0.end()), d(dir.begin(), dir.end()), m(m0.begin(), m0.end());
                if (!with_mom) std::fill(m.begin(), m.end(), 0.0);  // momentum 0: mom = d
                fngd_ref_sgd(p.data(), d.data(), m.data(), n, 0.1, momentum, 0.01);
                const Vec gp = get(dp, (size_t)n), gm = get(dm, (size_t)n);
                for (int64_t k = 0; k < n; ++k) {
                    // 3 roundings to mom, 5 to param (each possibly fused: FMA is tighter).
                    if (with_mom)
                        ASSERT_NEAR(gm[k], m[k], 4 * kEps * (std::fabs(m[k]) + 1)) << k;
                    else
                        ASSERT_EQ(gm[k], m0[k]) << k;  // no buffer given: untouched
                    ASSERT_NEAR(gp[k], p[k], 6 * kEps * (std::fabs(p0[k]) + 1)) << k;
                }
            }
    // Many tensors (more than a CUDA launch's parameter table, an empty one in between) in one
    // call equal one call each, bit for bit.
    const int count = 70;
    std::vector<fngd_update_tensor_t> all, one;
    for (int t = 0; t < count; ++t) {
        const int64_t n = t == 5 ? 0 : 1 + 37 * t;
        const Vec p0 = random_vec((size_t)std::max<int64_t>(n, 1), 100 + t);
        const Vec d = random_vec((size_t)std::max<int64_t>(n, 1), 200 + t);
        const Vec m0 = random_vec((size_t)std::max<int64_t>(n, 1), 300 + t);
        const float* dd = put(d);
        all.push_back({put(p0), dd, put(m0), n});
        one.push_back({put(p0), dd, put(m0), n});
    }
    ASSERT_EQ(ops->sgd_update(ctx, all.data(), count, 0.05f, 0.9f, 1e-3f, &call),
              FNGD_SUCCESS)
        << err.msg;
    for (int t = 0; t < count; ++t)
        ASSERT_EQ(ops->sgd_update(ctx, &one[(size_t)t], 1, 0.05f, 0.9f, 1e-3f, &call),
                  FNGD_SUCCESS);
    for (int t = 0; t < count; ++t) {
        const size_t n = (size_t)all[(size_t)t].n;
        EXPECT_EQ(get(all[(size_t)t].param, n), get(one[(size_t)t].param, n)) << "tensor " << t;
        EXPECT_EQ(get(all[(size_t)t].mom, n), get(one[(size_t)t].mom, n)) << "tensor " << t;
    }
    // A tensor with momentum but no momentum buffer: refused before any tensor is updated.
    const Vec keep = get(all[0].param, (size_t)all[0].n);
    const fngd_update_tensor_t bad[2] = {all[0], {one[1].param, one[1].dir, nullptr, one[1].n}};
    EXPECT_EQ(ops->sgd_update(ctx, bad, 2, 0.1f, 0.9f, 0.0f, &call),
              FNGD_ERROR_INVALID_ARGUMENT);
    EXPECT_EQ(get(all[0].param, (size_t)all[0].n), keep);
}

// ---- dot, scale ------------------------------------------------------------------------------

// dot: one float in backend memory, enqueued (read back with download); n = 0 gives 0 (and takes
// NULL arrays). scale: x *= s, one float multiplication per entry, exactly.
TEST_P(BackendOps, DotAndScaleMatchReference) {
    for (int64_t n : {(int64_t)0, (int64_t)1, (int64_t)33, (int64_t)4099, (int64_t)100003}) {
        SCOPED_TRACE("n " + std::to_string(n));
        const Vec x = random_vec((size_t)n, 10 + (unsigned)n), y = random_vec((size_t)n, 20);
        const float* dx = n ? put(x) : nullptr;
        const float* dy = n ? put(y) : nullptr;
        float* out = put(Vec{-7.0f});
        ASSERT_EQ(ops->dot(ctx, dx, dy, n, out, &call), FNGD_SUCCESS) << err.msg;
        double ref = 0, abs = 0;
        for (int64_t k = 0; k < n; ++k) {
            ref += (double)x[k] * y[k];
            abs += std::fabs((double)x[k] * y[k]);
        }
        // A float accumulation of n products (a double one is tighter), then float rounding.
        EXPECT_NEAR(get(out, 1)[0], ref, kEps * ((double)n + 2) * abs + FLT_MIN);
        if (n == 0) {
            EXPECT_EQ(ops->scale(ctx, nullptr, 0, 2.0f, &call), FNGD_SUCCESS);
            continue;
        }
        float* dz = put(x);
        ASSERT_EQ(ops->scale(ctx, dz, n, -0.37f, &call), FNGD_SUCCESS) << err.msg;
        const Vec z = get(dz, (size_t)n);
        for (int64_t k = 0; k < n; ++k) ASSERT_EQ(z[k], x[k] * -0.37f) << k;
    }
    EXPECT_EQ(ops->dot(ctx, nullptr, nullptr, 3, put(Vec{0.0f}), &call),
              FNGD_ERROR_INVALID_ARGUMENT);
    EXPECT_EQ(ops->scale(ctx, nullptr, 3, 2.0f, &call), FNGD_ERROR_INVALID_ARGUMENT);
}

FNGD_INSTANTIATE_BACKENDS(BackendOps);
