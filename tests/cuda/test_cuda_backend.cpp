// What is particular to the CUDA backend, against the CPU backend on identical inputs: device
// binding and a bad ordinal, chunked workspace plans, the batched Cholesky on each forced path
// and its exact workspace, then a whole multi-epoch run through the public API, the caller's
// current device, and CUDA-graph capture of a reuse-phase step. The operations themselves are
// tested against the naive references on every backend by tests/test_backend_conformance.cpp
// (compiled into this binary for its CUDA instance). Every case skips cleanly when no CUDA
// device is present.
//
// Tolerances. Both backends compute in float with different summation orders. For a sum of n
// float terms, |computed - exact| <= n * u * sum|terms| (Higham's gamma_n, u = FLT_EPSILON/2).
// Each backend is within that bound of the exact value, so their difference is within
// 2 * n * u * sum|terms| <= n * FLT_EPSILON * sum|terms|; we use 2 * n * FLT_EPSILON (a factor 2
// of margin). sum|terms| is computed here in double from |input| and |grad_output| with the
// independent reference (tests/reference), and n is the longest chain of float sums the op may
// perform (stated at each use).
#include <gtest/gtest.h>

#include <cuda_runtime.h>

#include <algorithm>
#include <cfloat>
#include <cmath>
#include <cstring>
#include <memory>
#include <random>
#include <string>
#include <vector>

#include "alloc.h"
#include "backend.h"
#include "backend_param.h"
#include "backend_test_util.h"
#include "cuda_test_backends.h"
#include "cuda_test_buffers.h"
#include "cuda/cuda_plan.h"
#include "cuda/cuda_solve.h"
#include "fngd_reference.h"
#include "layer.h"

using namespace fngd_test;

namespace {

const double kEps = FLT_EPSILON;

Vec abs_vec(const Vec& v) {
    Vec a(v.size());
    for (size_t i = 0; i < v.size(); ++i) a[i] = std::fabs(v[i]);
    return a;
}

// Both backends' contexts on one configuration, calls on the per-thread default stream.
struct Backends : TwoBackends {
    explicit Backends(int max_batch) : TwoBackends(test_config(max_batch), nullptr) {}
    bool ok() const { return cc && gc; }
};

// One layer's batch on both sides plus the absolute-value per-sample gradients (the bound
// sum|terms| of every gradient entry, in double).
struct Data {
    Vec x, go;
    DVec Gabs;  // N x grad_len
    std::unique_ptr<Dev> dx, dgo;
    fngd_layer_batch_t host_batch() const {
        return {x.data(), go.empty() ? nullptr : go.data()};
    }
    fngd_layer_batch_t dev_batch() const {
        return {dx->f(), go.empty() ? nullptr : dgo->f()};
    }
};

Data make_data(const fngd_layer_t& l, int N, unsigned seed) {
    Data d;
    d.x = random_vec((size_t)(N * l.in_per_sample), seed, -0.7f, 1.3f);
    if (l.kind != FNGD_LAYER_GENERIC)
        d.go = random_vec((size_t)(N * l.out_per_sample), seed + 1, -0.8f, 1.2f);
    d.dx.reset(new Dev(d.x));
    d.dgo.reset(new Dev(d.go));
    d.Gabs.assign((size_t)(N * l.grad_len), 0.0);
    Vec ax = abs_vec(d.x), ago = abs_vec(d.go);
    EXPECT_EQ(0, fngd_ref_per_sample_grads(&l.desc, N, ax.data(),
                                           ago.empty() ? nullptr : ago.data(), 1.0,
                                           d.Gabs.data(), l.grad_len, 0));
    return d;
}

// Longest float accumulation behind one Gram entry, over both methods: the grad_len-term dot
// product (materialise), or pa- and q-term dot products and a T*T block sum (position), plus
// the T-term sums forming a per-sample gradient entry.
double gram_chain(const fngd_layer_t& l) {
    return (double)l.grad_len + (double)l.T * l.T + l.T + l.pa + l.q;
}

void expect_gram_close(const fngd_layer_t& l, const Data& d, int N, float scale,
                       const Vec& Kcpu, const Vec& Kgpu, const Vec* K0, const std::string& what) {
    const double chain = gram_chain(l) + (K0 ? 1 : 0);
    for (int i = 0; i < N; ++i)
        for (int j = 0; j < N; ++j) {
            double abs_ij = 0;
            for (int64_t k = 0; k < l.grad_len; ++k)
                abs_ij += d.Gabs[(size_t)i * l.grad_len + k] * d.Gabs[(size_t)j * l.grad_len + k];
            abs_ij *= (double)scale * scale;
            if (K0) abs_ij += std::fabs((*K0)[(size_t)i * N + j]);
            const double tol = 2.0 * chain * kEps * abs_ij + FLT_MIN;
            const size_t e = (size_t)i * N + j;
            ASSERT_NEAR(Kgpu[e], Kcpu[e], tol) << what << " K[" << i << "][" << j << "]";
        }
}

}  // namespace

// ---- availability and lifecycle ---------------------------------------------------------------

TEST(CudaBackend, CreateBindsDeviceAndReportsBadOrdinal) {
    FNGD_TEST_REQUIRE_BACKEND(FNGD_BACKEND_CUDA);
    const fngd_backend_ops_t* gpu = fngd_cuda_backend_ops();
    ASSERT_NE(gpu, nullptr);
    fngd_config_t cfg;
    fngd_config_init(&cfg);
    cfg.backend = FNGD_BACKEND_CUDA;
    cfg.max_batch = 3;
    cfg.num_samples = 10;
    cfg.device = 1 << 20;
    fngd_backend_ctx_t* ctx = nullptr;
    fngd_err_t err;
    std::memset(&err, 0, sizeof err);
    EXPECT_NE(gpu->create(&cfg, &ctx, &err), FNGD_SUCCESS);
    EXPECT_EQ(ctx, nullptr);
    EXPECT_NE(std::string(err.msg), "");
    cfg.device = 0;
    ASSERT_EQ(gpu->create(&cfg, &ctx, &err), FNGD_SUCCESS) << err.msg;
    fngd_call_t call{nullptr, nullptr, 0, &err, -1};
    ASSERT_EQ(gpu->begin_call(ctx, &call), FNGD_SUCCESS) << err.msg;
    void* p = nullptr;
    ASSERT_EQ(gpu->alloc(ctx, 1000, &p, &call), FNGD_SUCCESS) << err.msg;
    EXPECT_EQ((uintptr_t)p % 256, 0u);
    std::vector<unsigned char> back(1000, 7);
    ASSERT_EQ(gpu->download(ctx, back.data(), p, 1000, &call), FNGD_SUCCESS);
    for (unsigned char b : back) ASSERT_EQ(b, 0);  // zero-filled
    Vec src = random_vec(250, 3);
    ASSERT_EQ(gpu->upload(ctx, p, src.data(), 1000, &call), FNGD_SUCCESS);
    Dev other(1000);
    ASSERT_EQ(gpu->copy(ctx, other.f(), (const float*)p, 250, &call), FNGD_SUCCESS);
    ASSERT_EQ(gpu->synchronize(ctx, &call), FNGD_SUCCESS);
    EXPECT_EQ(other.get<float>(250), src);
    gpu->end_call(ctx, &call);
    gpu->free(ctx, p);  // free may run outside a call
    gpu->destroy(ctx);
}

// An op binds cuBLAS and cuSOLVER to its call's stream, and only when that stream differs from
// the one they are bound to: a handle moved behind the context's back stays where it was put
// while the calls keep their stream, and follows the next call on another stream.
TEST(CudaBackend, BindsLibraryHandlesOnlyWhenTheStreamChanges) {
    FNGD_TEST_REQUIRE_BACKEND(FNGD_BACKEND_CUDA);
    Backends b(4);
    ASSERT_TRUE(b.ok()) << b.err.msg;
    cudaStream_t s1 = nullptr, s2 = nullptr, other = nullptr;
    ASSERT_EQ(cudaStreamCreateWithFlags(&s1, cudaStreamNonBlocking), cudaSuccess);
    ASSERT_EQ(cudaStreamCreateWithFlags(&s2, cudaStreamNonBlocking), cudaSuccess);
    ASSERT_EQ(cudaStreamCreateWithFlags(&other, cudaStreamNonBlocking), cudaSuccess);
    Dev x(random_vec(64, 9));
    auto scale_on = [&](cudaStream_t s) {
        fngd_call_t c = b.gcall;
        c.stream = (fngd_stream_t)s;
        EXPECT_EQ(b.gpu->scale(b.gc, x.f(), 64, 0.5f, &c), FNGD_SUCCESS) << b.err.msg;
        EXPECT_EQ(cudaStreamSynchronize(s), cudaSuccess);
    };
    auto blas_stream = [&] {
        cudaStream_t s = nullptr;
        EXPECT_EQ(cublasGetStream(b.gc->blas, &s), CUBLAS_STATUS_SUCCESS);
        return s;
    };
    scale_on(s1);
    EXPECT_EQ(blas_stream(), s1);
    ASSERT_EQ(cublasSetStream(b.gc->blas, other), CUBLAS_STATUS_SUCCESS);
    scale_on(s1);  // same stream as the last call: no rebind
    EXPECT_EQ(blas_stream(), other);
    scale_on(s2);  // another stream: both handles follow
    EXPECT_EQ(blas_stream(), s2);
    cudaStream_t solver_stream = nullptr;
    EXPECT_EQ(cusolverDnGetStream(b.gc->solver, &solver_stream), CUSOLVER_STATUS_SUCCESS);
    EXPECT_EQ(solver_stream, s2);
    scale_on(nullptr);  // the per-thread default stream: nothing left on the streams below
    for (cudaStream_t s : {s1, s2, other}) EXPECT_EQ(cudaStreamDestroy(s), cudaSuccess);
}

// Chunked plans (a workspace below the whole-layer size) give the same Gram and direction.
TEST(CudaBackend, ChunkedWorkspaceMatchesCpu) {
    FNGD_TEST_REQUIRE_BACKEND(FNGD_BACKEND_CUDA);
    Backends b(19);
    ASSERT_TRUE(b.ok()) << b.err.msg;
    const int N = 19;
    for (fngd_gram_method_t m : {FNGD_GRAM_MATERIALIZE, FNGD_GRAM_POSITION}) {
        for (const fngd_layer_desc_t& desc :
             {conv_desc(3, 33, 9, 7, 3, 3, 1, 1, 1, 1, 1, 1, 1), fngd_linear_desc(29, 31, 1)}) {
            const fngd_layer_t l = make_layer(desc, m);
            const Data d = make_data(l, N, 77);
            const size_t full = fngd_cuda_plan_gram(&l, N, (size_t)1 << 40).bytes;
            const fngd_gram_plan small = fngd_cuda_plan_gram(&l, N, full / 5);
            ASSERT_LT(small.bytes, full);
            Vec Kc((size_t)N * N);
            HostWs cws(b.cpu_ws(l, N));
            const fngd_layer_batch_t hb = d.host_batch(), db = d.dev_batch();
            ASSERT_EQ(b.cpu->layer_gram(b.cc, &l, &hb, N, 1.0f, Kc.data(), 0,
                                        b.cin(cws.p, cws.bytes)),
                      FNGD_SUCCESS) << b.err.msg;
            Dev K((size_t)N * N * sizeof(float)), gws(small.bytes);
            ASSERT_EQ(b.gpu->layer_gram(b.gc, &l, &db, N, 1.0f, K.f(), 0, b.gin(gws.p, gws.bytes)),
                      FNGD_SUCCESS) << b.err.msg;
            expect_gram_close(l, d, N, 1.0f, Kc, K.get<float>((size_t)N * N), nullptr,
                              "chunked");

            const size_t wfull = fngd_cuda_plan_weighted(&l, N, (size_t)1 << 40).bytes;
            const fngd_weighted_plan wsmall = fngd_cuda_plan_weighted(&l, N, wfull / 4);
            ASSERT_LT(wsmall.nc, N);
            const Vec alpha = random_vec(N, 5);
            Dev da(alpha), ow(l.n_weight * sizeof(float)), ob(l.n_bias * sizeof(float)),
                wws(wsmall.bytes);
            Vec cw(l.n_weight), cb(l.n_bias);
            ASSERT_EQ(b.cpu->weighted_grad(b.cc, &l, &hb, N, alpha.data(), 1.0f, cw.data(),
                                           cb.data(), b.cin(cws.p, cws.bytes)),
                      FNGD_SUCCESS) << b.err.msg;
            ASSERT_EQ(b.gpu->weighted_grad(b.gc, &l, &db, N, da.f(), 1.0f, ow.f(), ob.f(),
                                           b.gin(wws.p, wws.bytes)),
                      FNGD_SUCCESS)
                << b.err.msg;
            const Vec gw = ow.get<float>(l.n_weight);
            const double chain = (double)N * l.T + 2;
            for (int64_t k = 0; k < l.n_weight; ++k) {
                double bound = 0;
                for (int i = 0; i < N; ++i)
                    bound += std::fabs(alpha[i]) * d.Gabs[(size_t)i * l.grad_len + k];
                ASSERT_NEAR(gw[k], cw[k], 2 * chain * kEps * bound + FLT_MIN) << k;
            }
        }
    }
}

// ---- batched factor + solve ------------------------------------------------------------------------

namespace {

// count matrices of order N for one factor_solve call, one after another: random Gram matrices,
// except matrix `bad` (count / 2 when count > 1, else none), which no damping of the tests makes
// positive definite, and per-matrix floors (matrix 0's large enough to become its shift).
struct BatchedCase {
    int N = 0, count = 0, bad = -1;
    Vec K;
    DVec floors;
};

BatchedCase batched_case(int N, int count, const std::vector<Vec>& grams) {
    BatchedCase c;
    c.N = N;
    c.count = count;
    c.bad = count > 1 ? count / 2 : -1;
    for (int m = 0; m < count; ++m) {
        Vec K = grams[(size_t)m];
        if (m == c.bad) {
            // Identity with pivot N/2 at -4N^2 - 4: below the absolute shift 0.05 N, and the
            // negative trace clamps the trace-relative shift to the tiny floor, so Cholesky
            // fails at leading minor N/2 + 1 on both backends.
            std::fill(K.begin(), K.end(), 0.0f);
            for (int i = 0; i < N; ++i) K[(size_t)i * N + i] = 1.0f;
            K[(size_t)(N / 2) * N + N / 2] = -4.0f * N * N - 4.0f;
        }
        c.K.insert(c.K.end(), K.begin(), K.end());
        c.floors.push_back(m == 0 ? 10.0 : 1e-6 * (m + 1));
    }
    return c;
}

const fngd_cuda_chol_path kPaths[] = {FNGD_CUDA_CHOL_AUTO, FNGD_CUDA_CHOL_BATCHED,
                                      FNGD_CUDA_CHOL_LOOPED};
const char* path_name(fngd_cuda_chol_path p) {
    return p == FNGD_CUDA_CHOL_AUTO ? "auto" : p == FNGD_CUDA_CHOL_BATCHED ? "batched" : "looped";
}

// The exact bytes of one path (AUTO: the path it resolves to).
size_t batched_ws_bytes(Backends& b, int N, int count, fngd_cuda_chol_path path) {
    size_t bytes = 0;
    EXPECT_EQ(fngd_cuda_solve_bytes(b.gc, N, count, path, &bytes, &b.err), FNGD_SUCCESS)
        << b.err.msg;
    return bytes;
}

// AUTO goes through the operation table (what the host calls), the others force one path.
fngd_status_t run_batched(Backends& b, fngd_cuda_chol_path path, const float* K, int count, int N,
                          fngd_damping_kind_t kind, double damping, const double* floors,
                          const float* rhs, float* alpha, int ld, int* info, double* shift,
                          double* trace, const Dev& ws) {
    if (path == FNGD_CUDA_CHOL_AUTO)
        return b.gpu->factor_solve(b.gc, K, count, N, kind, damping, floors, rhs, 0, alpha, ld,
                                   info, shift, trace, b.gin(ws.p, ws.bytes));
    return fngd_cuda_factor_solve_on(b.gc, path, K, count, N, kind, damping, floors, rhs, 0,
                                     alpha, ld, info, shift, trace, b.gin(ws.p, ws.bytes));
}

}  // namespace

// factor_solve of `count` matrices equals `count` one-matrix CPU factor_solve calls (info,
// shift, trace, alpha)
// on both sides of FNGD_CUDA_BATCHED_POTRF_MAX_N and on each forced path, with per-matrix
// floors, a shared rhs, ld_alpha > N (the gaps stay untouched) and one matrix that is not
// positive definite (info > 0 and its alpha untouched while the others are solved).
TEST(CudaBackend, FactorSolveBatchedMatchesCpuSingleOnBothPaths) {
    FNGD_TEST_REQUIRE_BACKEND(FNGD_BACKEND_CUDA);
    static_assert(FNGD_CUDA_BATCHED_POTRF_MAX_N >= 64 && FNGD_CUDA_BATCHED_POTRF_MAX_N < 300,
                  "the sizes below should straddle the batched/looped threshold");
    Backends b(300);
    ASSERT_TRUE(b.ok()) << b.err.msg;
    const double damping = 0.05;
    for (int N : {1, 7, 64, 300}) {
        std::vector<Vec> grams;
        for (int m = 0; m < 17; ++m) grams.push_back(random_gram(N, 500 + 31 * m + N));
        const Vec rhs = random_vec(N, 9, 0.5f, 1.5f);
        const int ld = N + 3;
        for (int count : {1, 3, 17}) {
            const BatchedCase c = batched_case(N, count, grams);
            const Vec sentinel = random_vec((size_t)count * ld, 123, 40.0f, 50.0f);
            for (fngd_damping_kind_t kind : {FNGD_DAMPING_ABSOLUTE, FNGD_DAMPING_TRACE_RELATIVE})
                for (int custom_rhs : {0, 1}) {
                    Vec ac = sentinel;
                    std::vector<int> ic((size_t)count, -1);
                    DVec sc((size_t)count), tc((size_t)count);
                    HostWs cws(b.cpu_solve_ws(N, 1));
                    for (int m = 0; m < count; ++m)  // one matrix per call
                        ASSERT_EQ(b.cpu->factor_solve(b.cc, c.K.data() + (size_t)m * N * N, 1, N,
                                                      kind, damping, &c.floors[(size_t)m],
                                                      custom_rhs ? rhs.data() : nullptr, 0,
                                                      ac.data() + (size_t)m * ld, N,
                                                      &ic[(size_t)m], &sc[(size_t)m],
                                                      &tc[(size_t)m], b.cin(cws.p, cws.bytes)),
                                  FNGD_SUCCESS) << b.err.msg;
                    for (fngd_cuda_chol_path path : kPaths) {
                        const std::string what = std::string(path_name(path)) + " N " +
                                                 std::to_string(N) + " count " +
                                                 std::to_string(count) + " kind " +
                                                 std::to_string((int)kind) + " rhs " +
                                                 std::to_string(custom_rhs);
                        Dev dK(c.K), dr(rhs), da(sentinel), ws(batched_ws_bytes(b, N, count, path));
                        std::vector<int> ig((size_t)count, -5);
                        DVec sg((size_t)count, -1.0), tg((size_t)count, -1.0);
                        ASSERT_EQ(run_batched(b, path, dK.f(), count, N, kind, damping,
                                              c.floors.data(), custom_rhs ? dr.f() : nullptr,
                                              da.f(), ld, ig.data(), sg.data(), tg.data(), ws),
                                  FNGD_SUCCESS) << what << ": " << b.err.msg;
                        const Vec ag = da.get<float>(sentinel.size());
                        for (int m = 0; m < count; ++m) {
                            const size_t o = (size_t)m * ld;
                            const std::string wm = what + " matrix " + std::to_string(m);
                            ASSERT_EQ(ig[(size_t)m], ic[(size_t)m]) << wm;
                            if (m == c.bad) EXPECT_EQ(ig[(size_t)m], N / 2 + 1) << wm;
                            // trace and shift: N-term double sums of the same floats in another
                            // order, bounded by the sum of |diagonal| (the bad matrix mixes signs).
                            double tabs = 0;
                            for (int i = 0; i < N; ++i)
                                tabs += std::fabs(c.K[(size_t)m * N * N + (size_t)i * N + i]);
                            const double ttol = 2.0 * N * DBL_EPSILON * tabs + DBL_MIN;
                            EXPECT_NEAR(tg[(size_t)m], tc[(size_t)m], ttol) << wm;
                            EXPECT_NEAR(sg[(size_t)m], sc[(size_t)m], damping * ttol + DBL_MIN)
                                << wm;
                            for (int i = N; i < ld; ++i)  // between the solutions: untouched
                                ASSERT_EQ(ag[o + i], sentinel[o + i]) << wm << " gap " << i;
                            if (ic[(size_t)m] != 0) {
                                for (int i = 0; i < N; ++i)
                                    ASSERT_EQ(ag[o + i], sentinel[o + i]) << wm << " i " << i;
                                continue;
                            }
                            // As in FactorSolveMatchesCpu: cond <= (trace + shift) / shift, the
                            // double solves differ by about N^2 cond DBL_EPSILON, then each side
                            // rounds to float.
                            const double cond = (tc[(size_t)m] + sc[(size_t)m]) / sc[(size_t)m];
                            double amax = 0;
                            for (int i = 0; i < N; ++i)
                                amax = std::max(amax, (double)std::fabs(ac[o + i]));
                            const double tol = (kEps + 2.0 * N * N * cond * DBL_EPSILON) * amax;
                            for (int i = 0; i < N; ++i)
                                ASSERT_NEAR(ag[o + i], ac[o + i], tol) << wm << " i " << i;
                        }
                    }
                }
        }
    }
}

// A NaN in any one matrix fails the whole call with FNGD_ERROR_BACKEND, as the single solve
// does: no alpha written (not even for the valid matrices), host outputs untouched.
TEST(CudaBackend, FactorSolveBatchedRejectsNanAndWritesNoAlpha) {
    FNGD_TEST_REQUIRE_BACKEND(FNGD_BACKEND_CUDA);
    Backends b(300);
    ASSERT_TRUE(b.ok()) << b.err.msg;
    const int count = 3;
    for (int N : {7, 300})
        for (fngd_cuda_chol_path path : kPaths)
            for (int nan_matrix : {0, 2}) {
                const std::string what = std::string(path_name(path)) + " N " +
                                         std::to_string(N) + " NaN in " +
                                         std::to_string(nan_matrix);
                Vec K((size_t)count * N * N, 0.0f);
                for (int m = 0; m < count; ++m)
                    for (int i = 0; i < N; ++i) K[(size_t)m * N * N + (size_t)i * N + i] = 2.0f;
                float* bad = K.data() + (size_t)nan_matrix * N * N;
                bad[(size_t)1 * N + N - 1] = bad[(size_t)(N - 1) * N + 1] = NAN;  // symmetric
                const int ld = N;
                const Vec sentinel = random_vec((size_t)count * ld, 78);
                const DVec floors(count, 0.0);
                Dev dK(K), da(sentinel), ws(batched_ws_bytes(b, N, count, path));
                std::vector<int> info((size_t)count, -12345);
                DVec shift((size_t)count, -1.0), trace((size_t)count, -1.0);
                std::memset(&b.err, 0, sizeof b.err);
                EXPECT_EQ(run_batched(b, path, dK.f(), count, N, FNGD_DAMPING_ABSOLUTE, 0.1,
                                      floors.data(), nullptr, da.f(), ld, info.data(),
                                      shift.data(), trace.data(), ws),
                          FNGD_ERROR_BACKEND) << what;
                EXPECT_NE(std::string(b.err.msg), "") << what;
                for (int m = 0; m < count; ++m) {
                    EXPECT_EQ(info[(size_t)m], -12345) << what;
                    EXPECT_EQ(shift[(size_t)m], -1.0) << what;
                }
                EXPECT_EQ(da.get<float>(sentinel.size()), sentinel) << what;
            }
}

// Each path's workspace size is exact: the call succeeds with that many bytes (the tests
// above) and refuses one byte less; it holds at least the double copies of every matrix. The
// op table's query covers every path at that count and the one-matrix retry.
TEST(CudaBackend, FactorSolveBatchedWorkspaceIsExact) {
    FNGD_TEST_REQUIRE_BACKEND(FNGD_BACKEND_CUDA);
    Backends b(300);
    ASSERT_TRUE(b.ok()) << b.err.msg;
    EXPECT_EQ(b.gpu_solve_ws(7, 0), 0u);  // no solve, no layer: nothing
    for (int N : {7, 300})
        for (fngd_cuda_chol_path path : kPaths) {
            EXPECT_GE(b.gpu_solve_ws(N, 3), batched_ws_bytes(b, N, 3, path)) << N;
            EXPECT_GE(b.gpu_solve_ws(N, 3), batched_ws_bytes(b, N, 1, path)) << N;
        }
    size_t n0 = 1;
    EXPECT_EQ(b.gpu->workspace_bytes(b.gc, nullptr, 0, 0, 3, &n0, &b.gcall),
              FNGD_ERROR_INVALID_ARGUMENT);
    const int count = 3;
    for (int N : {7, 300})
        for (fngd_cuda_chol_path path : kPaths) {
            const size_t bytes = batched_ws_bytes(b, N, count, path);
            EXPECT_GE(bytes, (size_t)count * N * N * sizeof(double)) << path_name(path);
            Vec K((size_t)count * N * N, 0.0f);
            for (int m = 0; m < count; ++m)
                for (int i = 0; i < N; ++i) K[(size_t)m * N * N + (size_t)i * N + i] = 1.0f;
            const DVec floors(count, 0.0);
            Dev dK(K), da((size_t)count * N * sizeof(float)), ws(bytes - 1);
            std::vector<int> info((size_t)count);
            DVec shift((size_t)count), trace((size_t)count);
            EXPECT_EQ(run_batched(b, path, dK.f(), count, N, FNGD_DAMPING_ABSOLUTE, 0.1,
                                  floors.data(), nullptr, da.f(), N, info.data(), shift.data(),
                                  trace.data(), ws),
                      FNGD_ERROR_INTERNAL) << path_name(path) << " N " << N;
        }
}

// ---- whole runs through the public API -------------------------------------------------------------

namespace {

// A small network's worth of layers with per-(epoch, step) random data, run on one backend.
struct BackendRun {
    fngd_backend_kind_t backend;
    std::vector<fngd_layer_desc_t> descs;
    std::vector<fngd_ref_geom_t> geoms;
    std::vector<std::vector<Vec>> directions;  // [step][layer] weight then bias
    fngd_stats_t stats;
};

std::vector<fngd_layer_desc_t> run_layers() {
    std::vector<fngd_layer_desc_t> d;
    d.push_back(conv_desc(3, 5, 7, 6, 3, 3, 1, 1, 1, 1, 1, 1, 1));
    d.push_back(conv_desc(5, 4, 7, 6, 3, 3, 2, 2, 1, 1, 1, 1, 0));
    d.push_back(fngd_norm_affine_desc(4, 12, 1));
    d.push_back(fngd_linear_desc(48, 10, 1));
    d.push_back(fngd_generic_desc(13));
    return d;
}

void do_run(BackendRun& r, fngd_coef_mode_t mode, int epochs) {
    const int max_batch = 7;
    const int64_t num_samples = 20;  // 7 + 7 + 6: an odd last batch
    fngd_config_t cfg;
    fngd_config_init(&cfg);
    cfg.backend = r.backend;
    cfg.max_batch = max_batch;
    cfg.num_samples = num_samples;
    cfg.coef_mode = mode;
    cfg.damping_kind = FNGD_DAMPING_TRACE_RELATIVE;
    cfg.damping = 0.1;
    cfg.output = FNGD_OUTPUT_WRITE_GRAD;
    fngd_handle_t h = nullptr;
    ASSERT_EQ(fngd_create(&cfg, &h), FNGD_SUCCESS) << fngd_get_last_error(nullptr);
    r.descs = run_layers();
    const bool gpu = r.backend == FNGD_BACKEND_CUDA;
    std::vector<std::unique_ptr<Dev>> dbufs;
    std::vector<Vec> hgw, hgb;
    for (fngd_layer_desc_t d : r.descs) {
        fngd_ref_geom_t g;
        ASSERT_EQ(fngd_ref_geometry(&d, &g), 0);
        r.geoms.push_back(g);
        hgw.emplace_back(g.n_weight);
        hgb.emplace_back(g.n_bias);
        if (gpu) {
            dbufs.emplace_back(new Dev(g.n_weight * sizeof(float)));
            d.grad_weight = dbufs.back()->f();
            dbufs.emplace_back(new Dev(g.n_bias * sizeof(float)));
            d.grad_bias = g.n_bias ? dbufs.back()->f() : nullptr;
        } else {
            d.grad_weight = hgw.back().data();
            d.grad_bias = g.n_bias ? hgb.back().data() : nullptr;
        }
        ASSERT_EQ(fngd_add_layer(h, &d, nullptr), FNGD_SUCCESS) << fngd_get_last_error(h);
    }
    std::mt19937 order(5);
    std::vector<int64_t> perm((size_t)num_samples);
    for (int64_t i = 0; i < num_samples; ++i) perm[(size_t)i] = i;
    unsigned seed = 1000;
    for (int e = 0; e < epochs; ++e) {
        std::shuffle(perm.begin(), perm.end(), order);
        for (int64_t s0 = 0; s0 < num_samples; s0 += max_batch) {
            const int N = (int)std::min<int64_t>(max_batch, num_samples - s0);
            std::vector<fngd_layer_batch_t> batches;
            std::vector<std::unique_ptr<Dev>> data;
            std::vector<Vec> hx, hgo;
            for (size_t l = 0; l < r.descs.size(); ++l) {
                hx.push_back(random_vec((size_t)(N * r.geoms[l].in_per_sample), seed++, -0.5f, 1.5f));
                hgo.push_back(random_vec((size_t)(N * r.geoms[l].out_per_sample), seed++, -0.4f, 1.0f));
            }
            for (size_t l = 0; l < r.descs.size(); ++l) {
                fngd_layer_batch_t bt;
                if (gpu) {
                    data.emplace_back(new Dev(hx[l]));
                    bt.input = data.back()->f();
                    data.emplace_back(new Dev(hgo[l]));
                    bt.grad_output = hgo[l].empty() ? nullptr : data.back()->f();
                } else {
                    bt.input = hx[l].data();
                    bt.grad_output = hgo[l].empty() ? nullptr : hgo[l].data();
                }
                batches.push_back(bt);
            }
            ASSERT_EQ(fngd_step(h, N, perm.data() + s0, batches.data(), nullptr, nullptr),
                      FNGD_SUCCESS) << fngd_get_last_error(h);
            std::vector<Vec> dir;
            for (size_t l = 0; l < r.descs.size(); ++l) {
                Vec v;
                if (gpu) {
                    v = dbufs[2 * l]->get<float>(r.geoms[l].n_weight);
                    const Vec bb = dbufs[2 * l + 1]->get<float>(r.geoms[l].n_bias);
                    v.insert(v.end(), bb.begin(), bb.end());
                } else {
                    v = hgw[l];
                    v.insert(v.end(), hgb[l].begin(), hgb[l].end());
                }
                dir.push_back(v);
            }
            r.directions.push_back(dir);
        }
        ASSERT_EQ(fngd_end_epoch(h, nullptr), FNGD_SUCCESS) << fngd_get_last_error(h);
    }
    std::memset(&r.stats, 0, sizeof r.stats);
    r.stats.struct_size = sizeof r.stats;
    ASSERT_EQ(fngd_get_stats(h, &r.stats), FNGD_SUCCESS);
    ASSERT_EQ(fngd_destroy(h), FNGD_SUCCESS);
}

}  // namespace

// Three epochs (collect, reuse, reuse) through fngd_step on both backends, same data, same
// ids: directions agree step by step and the counters are identical.
//
// Tolerance: trace-relative damping gamma = 0.1 bounds cond(K + gamma trace(K) I) by
// (1 + gamma) / gamma = 11, so the float error of K (chain `gram_chain`, at most 2 * chain * eps
// relative to the abs Gram) reaches alpha amplified by at most 11; the direction adds its own
// N*T-term reduction. The direction is a sum of correlated per-sample gradients (data with
// nonzero means), so we compare against its max-norm with a headroom of 16 for cancellation.
TEST(CudaBackend, MultiEpochRunMatchesCpuBackend) {
    FNGD_TEST_REQUIRE_BACKEND(FNGD_BACKEND_CUDA);
    for (fngd_coef_mode_t mode : {FNGD_COEF_PER_LAYER, FNGD_COEF_GLOBAL}) {
        BackendRun cpu, gpu;
        cpu.backend = FNGD_BACKEND_CPU;
        gpu.backend = FNGD_BACKEND_CUDA;
        do_run(cpu, mode, 3);
        do_run(gpu, mode, 3);
        if (HasFatalFailure()) return;
        ASSERT_EQ(cpu.directions.size(), gpu.directions.size());
        double chain = 0;
        for (size_t l = 0; l < cpu.descs.size(); ++l) {
            fngd_layer_t L = make_layer(cpu.descs[l], FNGD_GRAM_MATERIALIZE);
            chain = std::max(chain, gram_chain(L) + 7.0 * L.T);
        }
        const double rel = 16.0 * 2.0 * (11.0 * chain) * kEps;
        for (size_t s = 0; s < cpu.directions.size(); ++s)
            for (size_t l = 0; l < cpu.descs.size(); ++l) {
                const Vec& a = cpu.directions[s][l];
                const Vec& g = gpu.directions[s][l];
                ASSERT_EQ(a.size(), g.size());
                double amax = 0;
                for (float v : a) amax = std::max(amax, (double)std::fabs(v));
                for (size_t k = 0; k < a.size(); ++k)
                    ASSERT_NEAR(g[k], a[k], rel * amax + FLT_MIN)
                        << "mode " << mode << " step " << s << " layer " << l << " entry " << k;
            }
        EXPECT_EQ(gpu.stats.steps_total, cpu.stats.steps_total);
        EXPECT_EQ(gpu.stats.factorizations, cpu.stats.factorizations);
        EXPECT_EQ(gpu.stats.fallback_ids, cpu.stats.fallback_ids);
        EXPECT_EQ(gpu.stats.coefs_stored, cpu.stats.coefs_stored);
        EXPECT_NEAR(gpu.stats.coef_mean, cpu.stats.coef_mean,
                    rel * std::max(std::fabs(cpu.stats.coef_max), std::fabs(cpu.stats.coef_min)));
    }
}

// Every call leaves the caller's current device as it found it. The handle lives on device 0
// while the caller's thread works on the last device: with two or more GPUs the backend must
// switch for each call and switch back; with one GPU this checks that nothing moves it.
TEST(CudaBackend, CallsKeepTheCallersCurrentDevice) {
    FNGD_TEST_REQUIRE_BACKEND(FNGD_BACKEND_CUDA);
    int count = 0;
    ASSERT_EQ(cudaGetDeviceCount(&count), cudaSuccess);
    const int other = count - 1;
    auto current = [] {
        int d = -1;
        EXPECT_EQ(cudaGetDevice(&d), cudaSuccess);
        return d;
    };
    const int N = 5;
    ASSERT_EQ(cudaSetDevice(0), cudaSuccess);  // the handle's buffers live on device 0
    fngd_layer_desc_t d = fngd_linear_desc(6, 4, 1);
    fngd_ref_geom_t g;
    ASSERT_EQ(fngd_ref_geometry(&d, &g), 0);
    Dev gw(g.n_weight * sizeof(float)), gb(g.n_bias * sizeof(float));
    Dev x(random_vec((size_t)(N * g.in_per_sample), 61)),
        go(random_vec((size_t)(N * g.out_per_sample), 62));
    d.grad_weight = gw.f();
    d.grad_bias = gb.f();
    const fngd_layer_batch_t batch = {x.f(), go.f()};

    ASSERT_EQ(cudaSetDevice(other), cudaSuccess);
    fngd_config_t cfg;
    fngd_config_init(&cfg);
    cfg.backend = FNGD_BACKEND_CUDA;
    cfg.device = 0;
    cfg.max_batch = N;
    cfg.num_samples = N;
    cfg.output = FNGD_OUTPUT_WRITE_GRAD;
    fngd_handle_t h = nullptr;
    ASSERT_EQ(fngd_create(&cfg, &h), FNGD_SUCCESS) << fngd_get_last_error(nullptr);
    EXPECT_EQ(current(), other) << "after fngd_create";
    ASSERT_EQ(fngd_add_layer(h, &d, nullptr), FNGD_SUCCESS) << fngd_get_last_error(h);
    ASSERT_EQ(fngd_prepare(h), FNGD_SUCCESS) << fngd_get_last_error(h);
    EXPECT_EQ(current(), other) << "after fngd_prepare";
    const std::vector<int64_t> ids = {4, 0, 3, 1, 2};
    for (int epoch = 0; epoch < 2; ++epoch) {  // collect, then reuse
        ASSERT_EQ(fngd_step(h, N, ids.data(), &batch, nullptr, nullptr), FNGD_SUCCESS)
            << fngd_get_last_error(h);
        EXPECT_EQ(current(), other) << "after fngd_step, epoch " << epoch;
        ASSERT_EQ(fngd_end_epoch(h, nullptr), FNGD_SUCCESS) << fngd_get_last_error(h);
        EXPECT_EQ(current(), other) << "after fngd_end_epoch, epoch " << epoch;
    }
    fngd_stats_t st;
    std::memset(&st, 0, sizeof st);
    st.struct_size = sizeof st;
    ASSERT_EQ(fngd_get_stats(h, &st), FNGD_SUCCESS);
    EXPECT_EQ(st.steps_total, 2);
    ASSERT_EQ(fngd_destroy(h), FNGD_SUCCESS);
    EXPECT_EQ(current(), other) << "after fngd_destroy";
    ASSERT_EQ(cudaSetDevice(0), cudaSuccess);
    for (float v : gw.get<float>(g.n_weight)) EXPECT_TRUE(std::isfinite(v));
}

// A reuse-phase fngd_step captured into a CUDA graph on a non-default stream replays to the
// same direction as the eagerly executed step.
TEST(CudaBackend, ReuseStepCapturesIntoCudaGraph) {
    FNGD_TEST_REQUIRE_BACKEND(FNGD_BACKEND_CUDA);
    const int N = 6;
    fngd_config_t cfg;
    fngd_config_init(&cfg);
    cfg.backend = FNGD_BACKEND_CUDA;
    cfg.max_batch = N;
    cfg.num_samples = 12;
    cfg.check_finite = 0;  // a blocking check cannot run inside a capture
    cfg.step_control = FNGD_STEP_NONE;  // nor the step controls' read-back of dot products
    cfg.output = FNGD_OUTPUT_WRITE_GRAD;
    fngd_handle_t h = nullptr;
    ASSERT_EQ(fngd_create(&cfg, &h), FNGD_SUCCESS) << fngd_get_last_error(nullptr);
    std::vector<fngd_layer_desc_t> descs = {conv_desc(2, 3, 5, 5, 3, 3, 1, 1, 1, 1, 1, 1, 1),
                                            fngd_linear_desc(9, 4, 1)};
    std::vector<std::unique_ptr<Dev>> grads, data;
    std::vector<fngd_layer_batch_t> batches;
    std::vector<fngd_ref_geom_t> geoms;
    for (fngd_layer_desc_t d : descs) {
        fngd_ref_geom_t g;
        ASSERT_EQ(fngd_ref_geometry(&d, &g), 0);
        geoms.push_back(g);
        grads.emplace_back(new Dev(g.n_weight * sizeof(float)));
        d.grad_weight = grads.back()->f();
        grads.emplace_back(new Dev(g.n_bias * sizeof(float)));
        d.grad_bias = grads.back()->f();
        ASSERT_EQ(fngd_add_layer(h, &d, nullptr), FNGD_SUCCESS) << fngd_get_last_error(h);
        data.emplace_back(new Dev(random_vec((size_t)(N * g.in_per_sample), 21)));
        data.emplace_back(new Dev(random_vec((size_t)(N * g.out_per_sample), 22)));
        batches.push_back({data[data.size() - 2]->f(), data.back()->f()});
    }
    cudaStream_t s;
    ASSERT_EQ(cudaStreamCreateWithFlags(&s, cudaStreamNonBlocking), cudaSuccess);
    std::vector<int64_t> first = {0, 1, 2, 3, 4, 5}, second = {6, 7, 8, 9, 10, 11};
    ASSERT_EQ(fngd_step(h, N, first.data(), batches.data(), nullptr, s), FNGD_SUCCESS)
        << fngd_get_last_error(h);
    ASSERT_EQ(fngd_step(h, N, second.data(), batches.data(), nullptr, s), FNGD_SUCCESS);
    ASSERT_EQ(fngd_end_epoch(h, s), FNGD_SUCCESS) << fngd_get_last_error(h);

    const std::vector<int64_t> ids = {7, 2, 11, 0, 5, 9};
    ASSERT_EQ(fngd_step(h, N, ids.data(), batches.data(), nullptr, s), FNGD_SUCCESS)
        << fngd_get_last_error(h);
    ASSERT_EQ(cudaStreamSynchronize(s), cudaSuccess);
    std::vector<Vec> eager;
    for (size_t k = 0; k < grads.size(); ++k) {
        const int64_t n = k % 2 ? geoms[k / 2].n_bias : geoms[k / 2].n_weight;
        eager.push_back(grads[k]->get<float>(n));
        ASSERT_EQ(cudaMemset(grads[k]->p, 0, grads[k]->bytes), cudaSuccess);
    }

    cudaGraph_t graph = nullptr;
    cudaGraphExec_t exec = nullptr;
    ASSERT_EQ(cudaStreamBeginCapture(s, cudaStreamCaptureModeGlobal), cudaSuccess);
    const fngd_status_t st = fngd_step(h, N, ids.data(), batches.data(), nullptr, s);
    ASSERT_EQ(cudaStreamEndCapture(s, &graph), cudaSuccess);
    ASSERT_EQ(st, FNGD_SUCCESS) << fngd_get_last_error(h);
    ASSERT_EQ(cudaGraphInstantiate(&exec, graph, 0), cudaSuccess);
    ASSERT_EQ(cudaStreamSynchronize(s), cudaSuccess);
    for (int replay = 0; replay < 2; ++replay) {
        ASSERT_EQ(cudaGraphLaunch(exec, s), cudaSuccess);
        ASSERT_EQ(cudaStreamSynchronize(s), cudaSuccess);
        for (size_t k = 0; k < grads.size(); ++k) {
            const int64_t n = k % 2 ? geoms[k / 2].n_bias : geoms[k / 2].n_weight;
            const Vec got = grads[k]->get<float>(n);
            // Same kernels and cuBLAS calls on the same data; cuBLAS may pick another GEMM
            // algorithm under capture, so allow the reduction's rounding: 2 * (N*T) * eps.
            double amax = 0;
            for (float v : eager[k]) amax = std::max(amax, (double)std::fabs(v));
            const double tol = 2.0 * N * geoms[k / 2].T * kEps * amax + FLT_MIN;
            for (size_t e = 0; e < got.size(); ++e)
                ASSERT_NEAR(got[e], eager[k][e], tol) << "buffer " << k << " replay " << replay;
        }
    }
    cudaGraphExecDestroy(exec);
    cudaGraphDestroy(graph);
    ASSERT_EQ(fngd_destroy(h), FNGD_SUCCESS);
    cudaStreamDestroy(s);
}
