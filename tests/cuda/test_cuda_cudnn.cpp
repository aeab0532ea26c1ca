// The cuDNN reuse path of Conv2d layers (src/cuda/cuda_cudnn.cu), the fused alpha-scale kernel
// (src/kernels/alpha_scale.cu) behind it and behind Linear layers, and the math mode
// (fngd_config_t.allow_tf32), against the CPU backend's weighted_grad on identical inputs.
//
// The first group runs everywhere (host logic: the configuration field, the workspace layout
// of the cuDNN path, the kernel's split rule). The GPU cases skip without a device and fail
// instead under FNGD_REQUIRE_GPU=1; they run on a non-blocking stream, so work the library
// enqueued on any other stream would not be ordered before the test's read-back.
//
// Tolerances. Every direction entry k is a sum of n = N*T terms scale*alpha_i*x*dy (T output
// positions per sample), plus the scaling multiplications; B_k = sum of |terms| is computed in
// double from |x|, |dy| and |alpha| with the independent reference (tests/reference).
// - FP32 (allow_tf32 = 0): |gpu - cpu| <= 1e-5 * B_k. Each backend's float sum is within
//   n * u * B_k of the exact value in the worst case (Higham's gamma_n, u = FLT_EPSILON / 2)
//   and within about sqrt(n) * u * B_k in practice (rounding errors of a long sum behave like
//   a random walk: Higham & Mary, SIAM J. Sci. Comput. 2019). The shapes below keep
//   n <= 13 * 64 = 832, so sqrt(n) * FLT_EPSILON <= 3.5e-6 and the difference of two such
//   errors stays below 1e-5 with margin, while a wrong index or a missing alpha is off by
//   O(B_k). (The FP32 mode excludes cuDNN's FFT and Winograd algorithms, whose errors are
//   not of this form; cuda_cudnn.cu.)
// - TF32 (allow_tf32 = 1): both factors of each product are rounded to TF32 (10 explicit
//   mantissa bits: relative error <= 2^-10 even when truncated), so each product is off by at
//   most (2 * 2^-10 + 2^-20) |term| <= 2^-9 |term| and their sum by 2^-9 * B_k; accumulation
//   stays FP32 (the term above). Bound: (2^-9 + 1e-5) * B_k.
#include <gtest/gtest.h>

#include <cuda_runtime.h>

#include <cfloat>
#include <cstdio>
#include <cmath>
#include <cstring>
#include <memory>
#include <string>
#include <vector>

#include "alloc.h"
#include "backend.h"
#include "backend_param.h"
#include "backend_test_util.h"
#include "cuda_test_backends.h"
#include "cuda_test_buffers.h"
#include "cuda/cuda_cudnn.h"
#include "fngd_reference.h"
#include "kernels/alpha_scale.cuh"
#include "layer.h"

using namespace fngd_test;

namespace {

const double kFp32Rel = 1e-5;
const double kTf32Rel = 1.0 / 512.0 + 1e-5;  // 2^-9 + the FP32 part

#define REQUIRE_DEVICE()                                                                  \
    do {                                                                                  \
        if (!fngd_cuda_device_available()) {                                              \
            if (gpu_required()) FAIL() << "no CUDA device (FNGD_REQUIRE_GPU=1)";          \
            GTEST_SKIP() << "no CUDA device";                                             \
        }                                                                                 \
    } while (0)

cudaStream_t nonblocking_stream() {
    cudaStream_t s = nullptr;
    EXPECT_EQ(cudaStreamCreateWithFlags(&s, cudaStreamNonBlocking), cudaSuccess);
    return s;
}

// A CPU context and a CUDA context (math mode tf32), the CUDA calls on a non-blocking stream.
struct Pair : TwoBackends {
    cudaStream_t s;
    Pair(int max_batch, int tf32) : Pair(max_batch, tf32, nonblocking_stream()) {}
    ~Pair() {
        if (s) cudaStreamSynchronize(s);
        // the contexts go in ~TwoBackends, after the stream: nothing of theirs is left on it
        if (s) cudaStreamDestroy(s);
    }
    bool ok() const { return cc && gc && s; }
    fngd_stream_t stream() const { return (fngd_stream_t)s; }

  private:
    Pair(int max_batch, int tf32, cudaStream_t st)
        : TwoBackends(test_config(max_batch, tf32), st), s(st) {}
};

// Odd convolution geometries: strides, asymmetric padding, dilation, 1x1, channel counts that
// are not multiples of 8 or 32, maps with T % 4 != 0 (scalar kernel path) and == 0 (float4).
std::vector<Case> conv_cases() {
    return {
        {"3x3_s1_p1_bias", conv_desc(3, 5, 8, 8, 3, 3, 1, 1, 1, 1, 1, 1, 1)},      // T = 64
        {"3x3_s2_p1_d1_bias", conv_desc(4, 7, 9, 11, 3, 3, 2, 2, 1, 1, 1, 1, 1)},  // T = 30
        {"3x2_s12_p01_d21_nobias", conv_desc(3, 6, 10, 9, 3, 2, 1, 2, 0, 1, 2, 1, 0)},
        {"3x3_s2_p2_d2_bias", conv_desc(5, 9, 11, 10, 3, 3, 2, 2, 2, 2, 2, 2, 1)},
        {"1x1_s2_nobias", conv_desc(6, 11, 9, 9, 1, 1, 2, 2, 0, 0, 1, 1, 0)},      // T = 25
        {"5x5_p2_33ch_bias", conv_desc(2, 33, 7, 6, 5, 5, 1, 1, 2, 2, 1, 1, 1)},    // T = 42
    };
}

std::vector<Case> linear_cases() {
    fngd_layer_desc_t tok = fngd_linear_desc(19, 23, 1);
    tok.positions = 5;
    return {{"linear_37x33_bias", fngd_linear_desc(37, 33, 1)},
            {"linear_tokens5_bias", tok},
            {"linear_11x3_nobias", fngd_linear_desc(11, 3, 0)}};
}

struct Data {
    Vec x, go, alpha;
    DVec Gabs;  // N x grad_len, per-sample gradients of |x|, |go|
};

Data make_data(const fngd_layer_t& l, int N, unsigned seed) {
    Data d;
    d.x = random_vec((size_t)(N * l.in_per_sample), seed, -0.7f, 1.3f);
    d.go = random_vec((size_t)(N * l.out_per_sample), seed + 1, -0.8f, 1.2f);
    d.alpha = random_vec((size_t)N, seed + 2, -1.0f, 1.0f);
    Vec ax(d.x.size()), ago(d.go.size());
    for (size_t i = 0; i < ax.size(); ++i) ax[i] = std::fabs(d.x[i]);
    for (size_t i = 0; i < ago.size(); ++i) ago[i] = std::fabs(d.go[i]);
    d.Gabs.assign((size_t)N * l.grad_len, 0.0);
    EXPECT_EQ(0, fngd_ref_per_sample_grads(&l.desc, N, ax.data(), ago.data(), 1.0, d.Gabs.data(),
                                           l.grad_len, 0));
    return d;
}

// weighted_grad on both backends with the given GPU workspace size (0: what workspace_bytes
// reports); compares every entry against rel * B_k.
void compare_weighted(Pair& b, const fngd_layer_t& l, int N, const Data& d, float scale,
                      size_t gpu_ws, double rel, const std::string& what) {
    Vec cw(l.n_weight), cb(l.n_bias);
    HostWs cws(b.cpu_ws(l, N));
    const fngd_layer_batch_t hb = {d.x.data(), d.go.data()};
    ASSERT_EQ(b.cpu->weighted_grad(b.cc, &l, &hb, N, d.alpha.data(), scale, cw.data(),
                                   l.n_bias ? cb.data() : nullptr, b.cin(cws.p, cws.bytes)),
              FNGD_SUCCESS) << what << b.err.msg;
    Dev dx(d.x), dgo(d.go), da(d.alpha), ow(l.n_weight * sizeof(float)),
        ob(l.n_bias * sizeof(float)), gws(gpu_ws ? gpu_ws : b.gpu_ws(l, N));
    const fngd_layer_batch_t db = {dx.f(), dgo.f()};
    ASSERT_EQ(b.gpu->weighted_grad(b.gc, &l, &db, N, da.f(), scale, ow.f(),
                                   l.n_bias ? ob.f() : nullptr, b.gin(gws.p, gws.bytes)),
              FNGD_SUCCESS) << what << b.err.msg;
    ASSERT_EQ(cudaStreamSynchronize(b.s), cudaSuccess);
    const Vec gw = ow.get(l.n_weight), gb = ob.get(l.n_bias);
    for (int64_t k = 0; k < l.grad_len; ++k) {
        double B = 0;
        for (int i = 0; i < N; ++i)
            B += std::fabs(scale * d.alpha[i]) * d.Gabs[(size_t)i * l.grad_len + k];
        const float g = k < l.n_weight ? gw[k] : gb[k - l.n_weight];
        const float r = k < l.n_weight ? cw[k] : cb[k - l.n_weight];
        ASSERT_NEAR(g, r, rel * B + FLT_MIN) << what << " entry " << k << " of " << l.grad_len
                                             << (k < l.n_weight ? " (weight)" : " (bias)");
    }
}

// The plan must be usable wherever cuDNN is compiled in and a device is present.
void expect_cudnn_plan(Pair& b, const fngd_layer_t& l, int N, const std::string& what) {
    const fngd_cuda_conv_plan p = fngd_cuda_conv_plan_get(b.gc, &l, N);
    if (!fngd_cuda_dnn_compiled()) {
        EXPECT_EQ(p.usable, 0) << what;
        return;
    }
    EXPECT_EQ(p.usable, 1) << what << ": " << p.why;
    EXPECT_GE(b.gpu_ws(l, N), p.bytes) << what;
    std::printf("[ plan     ] %s: %s, %zu workspace bytes\n", what.c_str(), p.why, p.bytes);
}

}  // namespace

// ---- host logic (runs without a GPU) ---------------------------------------------------------

TEST(CudnnHost, AllowTf32DefaultsToFp32AndIsValidated) {
    fngd_config_t c;
    ASSERT_EQ(fngd_config_init(&c), FNGD_SUCCESS);
    EXPECT_EQ(c.allow_tf32, 0);
    const fngd_config_t m = FNGD_CONFIG_INIT;
    EXPECT_EQ(m.allow_tf32, 0);
    c.max_batch = 4;
    c.num_samples = 8;
    for (int bad : {-1, 2, 7}) {
        c.allow_tf32 = bad;
        fngd_handle_t h = nullptr;
        EXPECT_EQ(fngd_create(&c, &h), FNGD_ERROR_INVALID_ARGUMENT) << bad;
        EXPECT_EQ(h, nullptr);
        EXPECT_NE(std::string(fngd_get_last_error(nullptr)).find("allow_tf32"), std::string::npos)
            << fngd_get_last_error(nullptr);
    }
    c.allow_tf32 = 1;  // accepted (and ignored) by the CPU backend
    fngd_handle_t h = nullptr;
    ASSERT_EQ(fngd_create(&c, &h), FNGD_SUCCESS) << fngd_get_last_error(nullptr);
    fngd_destroy(h);
}

// The cuDNN path's workspace holds the scaled output gradient of a chunk, the bias partial
// sums and cuDNN's own workspace, disjoint, 256-byte aligned, inside the reported size.
TEST(CudnnHost, WorkspaceLayoutCoversEveryPiece) {
    for (const Case& c : conv_cases()) {
        const fngd_layer_t l = make_layer(c.desc, FNGD_GRAM_MATERIALIZE);
        for (int nc : {1, 7, 13})
            for (int nsplit : {1, 3})
                for (size_t algo_ws : {(size_t)0, (size_t)1000, (size_t)1 << 20}) {
                    size_t bytes = 0;
                    const fngd_cuda_conv_buffers none =
                        fngd_cuda_conv_buffers_carve(&l, nc, nsplit, algo_ws, nullptr, &bytes);
                    EXPECT_EQ(none.dyw, nullptr);
                    const size_t dyw = (size_t)nc * l.out_per_sample * sizeof(float);
                    const size_t part = l.n_bias && nsplit > 1 ? nsplit * l.q * sizeof(float) : 0;
                    ASSERT_GE(bytes, dyw + part + algo_ws) << c.name;
                    std::vector<char> mem(bytes + 256);
                    char* base = (char*)(((uintptr_t)mem.data() + 255) & ~(uintptr_t)255);
                    size_t again = 0;
                    const fngd_cuda_conv_buffers B =
                        fngd_cuda_conv_buffers_carve(&l, nc, nsplit, algo_ws, base, &again);
                    EXPECT_EQ(again, bytes);
                    struct Piece { const char* p; size_t n; };
                    std::vector<Piece> pieces = {{(const char*)B.dyw, dyw}};
                    if (part) pieces.push_back({(const char*)B.partial, part});
                    else EXPECT_EQ(B.partial, nullptr);
                    if (algo_ws) pieces.push_back({(const char*)B.algo_ws, algo_ws});
                    else EXPECT_EQ(B.algo_ws, nullptr);
                    for (size_t i = 0; i < pieces.size(); ++i) {
                        EXPECT_EQ(((uintptr_t)pieces[i].p) & 255, 0u) << c.name;
                        EXPECT_GE(pieces[i].p, base);
                        EXPECT_LE(pieces[i].p + pieces[i].n, base + bytes) << c.name;
                        for (size_t j = 0; j < i; ++j)
                            EXPECT_TRUE(pieces[j].p + pieces[j].n <= pieces[i].p) << c.name;
                    }
                }
    }
}

TEST(CudnnHost, AlphaScaleSplitsStayInRange) {
    for (int n : {1, 2, 7, 13, 128, 1024})
        for (int q : {1, 3, 64, 512})
            for (int T : {1, 16, 1024})
                for (int cl : {0, 1})
                    for (int sm : {0, 1, 132}) {
                        const int s = fngd_alpha_scale_splits(n, q, T, cl, sm);
                        EXPECT_GE(s, 1);
                        EXPECT_LE(s, n);
                    }
    // A ResNet-18 stage-1 layer at N = 128 on 132 multiprocessors is spread over many blocks.
    EXPECT_GT(fngd_alpha_scale_splits(128, 64, 1024, 0, 132) * 64, 132 * 4);
}

// ---- GPU cases ----------------------------------------------------------------------------------

TEST(CudnnWeighted, ConvMatchesCpuFp32) {
    REQUIRE_DEVICE();
    Pair b(13, 0);
    ASSERT_TRUE(b.ok()) << b.err.msg;
    unsigned seed = 100;
    for (const Case& c : conv_cases())
        for (int N : {1, 7, 13}) {
            const fngd_layer_t l = make_layer(c.desc, FNGD_GRAM_MATERIALIZE);
            const std::string what = c.name + " N " + std::to_string(N) + " fp32";
            expect_cudnn_plan(b, l, N, what);
            const Data d = make_data(l, N, seed += 7);
            compare_weighted(b, l, N, d, 3.0f, 0, kFp32Rel, what);
        }
}

TEST(CudnnWeighted, ConvMatchesCpuTf32) {
    REQUIRE_DEVICE();
    Pair b(13, 1);
    ASSERT_TRUE(b.ok()) << b.err.msg;
    unsigned seed = 300;
    for (const Case& c : conv_cases())
        for (int N : {1, 7, 13}) {
            const fngd_layer_t l = make_layer(c.desc, FNGD_GRAM_MATERIALIZE);
            const std::string what = c.name + " N " + std::to_string(N) + " tf32";
            expect_cudnn_plan(b, l, N, what);
            const Data d = make_data(l, N, seed += 7);
            compare_weighted(b, l, N, d, 0.5f, 0, kTf32Rel, what);
        }
}

TEST(CudnnWeighted, LinearMatchesCpuInBothMathModes) {
    REQUIRE_DEVICE();
    for (int tf32 : {0, 1}) {
        Pair b(13, tf32);
        ASSERT_TRUE(b.ok()) << b.err.msg;
        unsigned seed = 500;
        for (const Case& c : linear_cases())
            for (int N : {1, 7, 13}) {
                const fngd_layer_t l = make_layer(c.desc, FNGD_GRAM_MATERIALIZE);
                const Data d = make_data(l, N, seed += 7);
                compare_weighted(b, l, N, d, 2.0f, 0, tf32 ? kTf32Rel : kFp32Rel,
                                 c.name + " N " + std::to_string(N) + (tf32 ? " tf32" : " fp32"));
            }
    }
}

// A workspace below twice the scaled output gradient makes the plan chunk the batch (odd N:
// a remainder chunk with its own descriptors and algorithm); the bias then comes from a
// separate pass. Same result.
TEST(CudnnWeighted, ChunkedPlanMatchesCpu) {
    REQUIRE_DEVICE();
    if (!fngd_cuda_dnn_compiled()) {
        if (gpu_required()) FAIL() << "built without cuDNN (FNGD_REQUIRE_GPU=1)";
        GTEST_SKIP() << "built without cuDNN";
    }
    Pair b(13, 0);
    ASSERT_TRUE(b.ok()) << b.err.msg;
    const int N = 13;
    const fngd_layer_t l = make_layer(conv_desc(3, 16, 24, 24, 3, 3, 1, 1, 1, 1, 1, 1, 1),
                                      FNGD_GRAM_MATERIALIZE);
    const size_t dyw = (size_t)N * l.out_per_sample * sizeof(float);
    const size_t ws = 2 * dyw - 4096;  // the first plan of this (geometry, N) is made with it
    const Data d = make_data(l, N, 77);
    // T = 576 > 64: the probabilistic FP32 argument needs sqrt(13 * 576) * eps = 1.0e-5; use
    // twice the FP32 relative bound here.
    compare_weighted(b, l, N, d, 1.0f, ws, 2 * kFp32Rel, "chunked");
    const fngd_cuda_conv_plan p = fngd_cuda_conv_plan_get(b.gc, &l, N);
    ASSERT_EQ(p.usable, 1) << p.why;
    EXPECT_LT(p.nc, N);
    EXPECT_NE(p.algo_rem, -1);
    EXPECT_LE(p.bytes, ws);
}

// The handle's workspace query covers cuDNN's workspace: fngd_get_workspace_size is at least
// every conv layer's plan, and a caller-provided workspace of exactly that size runs steps in
// both phases.
TEST(CudnnWeighted, WorkspaceQueryCoversCudnnPlans) {
    REQUIRE_DEVICE();
    const int N = 13;
    fngd_config_t cfg;
    fngd_config_init(&cfg);
    cfg.backend = FNGD_BACKEND_CUDA;
    cfg.max_batch = N;
    cfg.num_samples = 64;
    fngd_handle_t h = nullptr;
    ASSERT_EQ(fngd_create(&cfg, &h), FNGD_SUCCESS) << fngd_get_last_error(nullptr);
    Pair b(N, 0);  // same configuration: the same heuristics give the same plans
    ASSERT_TRUE(b.ok()) << b.err.msg;
    std::vector<std::unique_ptr<Dev>> bufs;
    std::vector<fngd_layer_t> layers;
    size_t most = 0;
    for (const Case& c : conv_cases()) {
        fngd_layer_desc_t desc = c.desc;
        const fngd_layer_t l = make_layer(desc, FNGD_GRAM_MATERIALIZE);
        bufs.emplace_back(new Dev(l.n_weight * sizeof(float)));
        desc.grad_weight = bufs.back()->f();
        bufs.emplace_back(new Dev((l.n_bias ? l.n_bias : 1) * sizeof(float)));
        desc.grad_bias = l.n_bias ? bufs.back()->f() : nullptr;
        ASSERT_EQ(fngd_add_layer(h, &desc, nullptr), FNGD_SUCCESS) << fngd_get_last_error(h);
        layers.push_back(l);
        const fngd_cuda_conv_plan p = fngd_cuda_conv_plan_get(b.gc, &l, N);
        if (p.usable && p.bytes > most) most = p.bytes;
    }
    size_t need = 0;
    ASSERT_EQ(fngd_get_workspace_size(h, &need), FNGD_SUCCESS) << fngd_get_last_error(h);
    EXPECT_GE(need, most);
    Dev ws(need);
    ASSERT_EQ(fngd_set_workspace(h, ws.p, need), FNGD_SUCCESS) << fngd_get_last_error(h);
    std::vector<std::unique_ptr<Dev>> data;
    std::vector<fngd_layer_batch_t> batches;
    unsigned seed = 900;
    for (const fngd_layer_t& l : layers) {
        data.emplace_back(new Dev(random_vec((size_t)(N * l.in_per_sample), seed++)));
        data.emplace_back(new Dev(random_vec((size_t)(N * l.out_per_sample), seed++)));
        batches.push_back({data[data.size() - 2]->f(), data.back()->f()});
    }
    std::vector<int64_t> ids(N);
    for (int i = 0; i < N; ++i) ids[i] = i;
    for (int epoch = 0; epoch < 2; ++epoch) {
        ASSERT_EQ(fngd_step(h, N, ids.data(), batches.data(), nullptr, b.stream()), FNGD_SUCCESS)
            << "epoch " << epoch << ": " << fngd_get_last_error(h);
        ASSERT_EQ(fngd_end_epoch(h, b.stream()), FNGD_SUCCESS) << fngd_get_last_error(h);
    }
    ASSERT_EQ(cudaStreamSynchronize(b.s), cudaSuccess);
    fngd_destroy(h);
}

// The CPU backend refuses a bias layer without a bias output; so does CUDA now.
TEST(CudnnWeighted, BiasLayerWithoutBiasOutputIsRefused) {
    REQUIRE_DEVICE();
    Pair b(7, 0);
    ASSERT_TRUE(b.ok()) << b.err.msg;
    for (const fngd_layer_desc_t& desc :
         {conv_desc(3, 5, 8, 8, 3, 3, 1, 1, 1, 1, 1, 1, 1), fngd_linear_desc(5, 4, 1)}) {
        const fngd_layer_t l = make_layer(desc, FNGD_GRAM_MATERIALIZE);
        const Data d = make_data(l, 7, 11);
        Dev dx(d.x), dgo(d.go), da(d.alpha), ow(l.n_weight * sizeof(float)),
            gws(b.gpu_ws(l, 7));
        const fngd_layer_batch_t db = {dx.f(), dgo.f()};
        EXPECT_EQ(b.gpu->weighted_grad(b.gc, &l, &db, 7, da.f(), 1.0f, ow.f(), nullptr,
                                       b.gin(gws.p, gws.bytes)),
                  FNGD_ERROR_INVALID_ARGUMENT);
        EXPECT_NE(std::string(b.err.msg).find("out_b"), std::string::npos) << b.err.msg;
    }
}

// The cuDNN reduction inside a CUDA graph: captured once its plan exists, replayed, equal to
// a direct call (up to the summation order of a non-deterministic algorithm).
TEST(CudnnWeighted, CapturedReductionReplaysLikeDirectCall) {
    REQUIRE_DEVICE();
    Pair b(13, 0);
    ASSERT_TRUE(b.ok()) << b.err.msg;
    const int N = 13;
    const fngd_layer_t l = make_layer(conv_desc(4, 7, 9, 11, 3, 3, 2, 2, 1, 1, 1, 1, 1),
                                      FNGD_GRAM_MATERIALIZE);
    const Data d = make_data(l, N, 5);
    Dev dx(d.x), dgo(d.go), da(d.alpha), ow(l.grad_len * sizeof(float)),
        gws(b.gpu_ws(l, N));  // makes the plan, outside the capture
    const fngd_layer_batch_t db = {dx.f(), dgo.f()};
    float* ob = ow.f() + l.n_weight;
    ASSERT_EQ(b.gpu->weighted_grad(b.gc, &l, &db, N, da.f(), 2.0f, ow.f(), ob,
                                   b.gin(gws.p, gws.bytes)),
              FNGD_SUCCESS) << b.err.msg;
    ASSERT_EQ(cudaStreamSynchronize(b.s), cudaSuccess);
    const Vec direct = ow.get(l.grad_len);
    ASSERT_EQ(cudaMemset(ow.p, 0, ow.bytes), cudaSuccess);
    cudaGraph_t g = nullptr;
    ASSERT_EQ(cudaStreamBeginCapture(b.s, cudaStreamCaptureModeThreadLocal), cudaSuccess);
    const fngd_status_t st = b.gpu->weighted_grad(b.gc, &l, &db, N, da.f(), 2.0f, ow.f(), ob,
                                                  b.gin(gws.p, gws.bytes));
    ASSERT_EQ(cudaStreamEndCapture(b.s, &g), cudaSuccess);
    ASSERT_EQ(st, FNGD_SUCCESS) << b.err.msg;
    cudaGraphExec_t ge = nullptr;
    ASSERT_EQ(cudaGraphInstantiate(&ge, g, 0), cudaSuccess);
    ASSERT_EQ(cudaGraphLaunch(ge, b.s), cudaSuccess);
    ASSERT_EQ(cudaStreamSynchronize(b.s), cudaSuccess);
    const Vec replay = ow.get(l.grad_len);
    for (int64_t k = 0; k < l.grad_len; ++k) {
        double B = 0;
        for (int i = 0; i < N; ++i)
            B += std::fabs(2.0 * d.alpha[i]) * d.Gabs[(size_t)i * l.grad_len + k];
        ASSERT_NEAR(replay[k], direct[k], kFp32Rel * B + FLT_MIN) << k;
    }
    cudaGraphExecDestroy(ge);
    cudaGraphDestroy(g);
}

// A context whose device cannot be entered: begin_call fails with a status and a message and
// leaves the caller's current device as it was; end_call after the failed begin does nothing.
TEST(CudaErrors, BeginCallOnMissingDeviceFailsCleanly) {
    REQUIRE_DEVICE();
    Pair b(8, 0);
    ASSERT_TRUE(b.ok()) << b.err.msg;
    int count = 0, before = -1, after = -2;
    ASSERT_EQ(cudaGetDeviceCount(&count), cudaSuccess);
    fngd_backend_ctx_t fake = *b.gc;  // same handles, a device that does not exist
    fake.device = count + 7;
    ASSERT_EQ(cudaGetDevice(&before), cudaSuccess);
    fngd_err_t err{};
    fngd_call_t call{nullptr, nullptr, 0, &err, -1};
    EXPECT_EQ(b.gpu->begin_call(&fake, &call), FNGD_ERROR_BACKEND);
    EXPECT_NE(std::string(err.msg).find("entering CUDA device"), std::string::npos) << err.msg;
    EXPECT_EQ(call.restore_device, -1);
    b.gpu->end_call(&fake, &call);
    ASSERT_EQ(cudaGetDevice(&after), cudaSuccess);
    EXPECT_EQ(after, before);
    (void)cudaGetLastError();  // the failed cudaSetDevice's own error
}
