// CUDA backend benchmarks (never a test): CUDA events, warm-up, an L2 flush before every timed
// repeat, medians; results as JSON (--out PATH, or the first plain argument; default
// bench/results/cuda_kernels.json). --quick: fewer repeats (scripts/gpu_check.sh).
//  1. reuse-phase weighted reduction (the FNGD later-epoch step's work per layer) in FP32 and
//     TF32 vs the unweighted weight gradient an SGD step runs in the same math mode (cuDNN's
//     backward-filter convolution for Conv2d, which is what PyTorch calls; one cuBLAS GEMM for
//     Linear) and vs the plain im2col-layout cuBLAS GEMM, per ResNet-18 CIFAR layer shape,
//     N = 128, plus network totals over the layer counts;
//  2. the epoch-one step as fngd_step runs it in per-layer mode: every layer's Gram (the cost
//     model's method), ONE factor_solve_batched over all the layers' Gram matrices, every
//     layer's direction, vs the network's SGD weight gradients;
//  3. damped Cholesky + solve of 32 matrices for N = 16..1024: 32 single factor_solve calls, and
//     factor_solve_batched on each of its paths (potrfBatched, or potrf per matrix), Gflop/s and
//     which path is faster per N (what FNGD_CUDA_BATCHED_POTRF_MAX_N should be set from);
// plus large SGEMM / DGEMM / TF32 GEMM rates as the practical hardware limits.
#include <cublas_v2.h>
#include <cuda_runtime.h>

#include <algorithm>
#include <cstdarg>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <string>
#include <vector>

#include "backend.h"
#include "cuda/cuda_cudnn.h"
#include "cuda/cuda_solve.h"
#include "layer.h"

#ifndef FNGD_BENCH_RESULTS_DIR
#define FNGD_BENCH_RESULTS_DIR "."
#endif

namespace {

#define CK(call)                                                                              \
    do {                                                                                      \
        cudaError_t e_ = (call);                                                              \
        if (e_ != cudaSuccess) {                                                              \
            std::fprintf(stderr, "%s:%d: %s: %s\n", __FILE__, __LINE__, #call,                 \
                         cudaGetErrorString(e_));                                             \
            return false;                                                                     \
        }                                                                                     \
    } while (0)
#define CB(call)                                                                              \
    do {                                                                                      \
        cublasStatus_t s_ = (call);                                                           \
        if (s_ != CUBLAS_STATUS_SUCCESS) {                                                    \
            std::fprintf(stderr, "%s:%d: %s: %s\n", __FILE__, __LINE__, #call,                 \
                         cublasGetStatusString(s_));                                          \
            return false;                                                                     \
        }                                                                                     \
    } while (0)
#define CF(call)                                                                              \
    do {                                                                                      \
        fngd_status_t f_ = (call);                                                            \
        if (f_ != FNGD_SUCCESS) {                                                             \
            std::fprintf(stderr, "%s:%d: %s: %s\n", __FILE__, __LINE__, #call, g_err.msg);     \
            return false;                                                                     \
        }                                                                                     \
    } while (0)

fngd_err_t g_err;
int kWarmup = 3, kRepeats = 15;

// Device memory owned by the benchmark, filled with small random-looking values.
struct Buf {
    void* p = nullptr;
    size_t bytes = 0;
    ~Buf() { cudaFree(p); }
    bool alloc(size_t b) {
        bytes = b ? b : 1;
        if (cudaMalloc(&p, bytes) != cudaSuccess) return false;
        std::vector<float> h(bytes / sizeof(float));
        for (size_t i = 0; i < h.size(); ++i) h[i] = (float)((i * 2654435761u) % 1000) / 1000.0f - 0.4f;
        return cudaMemcpy(p, h.data(), h.size() * sizeof(float), cudaMemcpyHostToDevice) ==
               cudaSuccess;
    }
    float* f() const { return (float*)p; }
};

// Times `op` (enqueues on `s`) with events: warm-up, then per repeat an L2 flush (a memset of a
// buffer twice the L2 size, outside the timed region) and the op; returns the median in ms.
struct Timer {
    cudaStream_t s;
    Buf flush;
    cudaEvent_t a, b;
    bool init(cudaStream_t stream) {
        s = stream;
        int l2 = 0;
        CK(cudaDeviceGetAttribute(&l2, cudaDevAttrL2CacheSize, 0));
        if (!flush.alloc((size_t)std::max(l2, 1 << 20) * 2)) return false;
        CK(cudaEventCreate(&a));
        CK(cudaEventCreate(&b));
        return true;
    }
    template <class F>
    bool median_ms(F op, double* ms) {
        std::vector<double> t;
        for (int r = 0; r < kWarmup + kRepeats; ++r) {
            CK(cudaMemsetAsync(flush.p, r & 0xff, flush.bytes, s));
            CK(cudaEventRecord(a, s));
            if (!op()) return false;
            CK(cudaEventRecord(b, s));
            CK(cudaEventSynchronize(b));
            float e = 0;
            CK(cudaEventElapsedTime(&e, a, b));
            if (r >= kWarmup) t.push_back(e);
        }
        std::sort(t.begin(), t.end());
        *ms = t[t.size() / 2];
        return true;
    }
};

struct Shape {
    const char* name;
    fngd_layer_desc_t desc;
    int count;  // how many layers of this shape ResNet-18 (CIFAR) has
};

fngd_layer_desc_t conv(int cin, int cout, int hw, int k, int stride) {
    fngd_layer_desc_t d = fngd_conv2d_desc(cin, cout, hw, hw, k, k, 0);
    d.stride_h = d.stride_w = stride;
    d.pad_h = d.pad_w = k / 2;
    return d;
}

// ResNet-18 for 32x32 inputs (3x3 stem, no max-pool), CIFAR-100 classifier.
std::vector<Shape> resnet18() {
    return {
        {"stem 3->64 3x3 32x32", conv(3, 64, 32, 3, 1), 1},
        {"s1 64->64 3x3 32x32", conv(64, 64, 32, 3, 1), 4},
        {"s2 64->128 3x3 s2 32x32", conv(64, 128, 32, 3, 2), 1},
        {"s2 128->128 3x3 16x16", conv(128, 128, 16, 3, 1), 3},
        {"s2 down 64->128 1x1 s2", conv(64, 128, 32, 1, 2), 1},
        {"s3 128->256 3x3 s2 16x16", conv(128, 256, 16, 3, 2), 1},
        {"s3 256->256 3x3 8x8", conv(256, 256, 8, 3, 1), 3},
        {"s3 down 128->256 1x1 s2", conv(128, 256, 16, 1, 2), 1},
        {"s4 256->512 3x3 s2 8x8", conv(256, 512, 8, 3, 2), 1},
        {"s4 512->512 3x3 4x4", conv(512, 512, 4, 3, 1), 3},
        {"s4 down 256->512 1x1 s2", conv(256, 512, 8, 1, 2), 1},
        {"fc 512->100", fngd_linear_desc(512, 100, 1), 1},
    };
}

struct Env {
    const fngd_backend_ops_t* ops;
    fngd_backend_ctx_t* ctx;       // allow_tf32 = 0
    fngd_backend_ctx_t* ctx_tf32;  // allow_tf32 = 1
    cublasHandle_t blas;           // FP32 (default math)
    cublasHandle_t blas_tf32;      // CUBLAS_TF32_TENSOR_OP_MATH
    cudaStream_t s;
    fngd_call_t call, call_tf32;  // one open call per context, on stream s, for the whole run
    fngd_call_t wcall;            // a copy of one of them with a workspace (in())
    Timer timer;
    std::string json;
};

// The call of ctx (E.ctx or E.ctx_tf32) with workspace ws, for the ops that take one.
const fngd_call_t* in(Env& E, fngd_backend_ctx_t* ctx, const Buf& ws) {
    E.wcall = ctx == E.ctx_tf32 ? E.call_tf32 : E.call;
    E.wcall.ws = ws.p;
    E.wcall.ws_bytes = ws.bytes;
    return &E.wcall;
}

// The one workspace query of ctx: one layer (no solve), or `count` solves of order N.
size_t query_ws(Env& E, fngd_backend_ctx_t* ctx, const fngd_layer_t* l, int N, int count) {
    size_t bytes = 0;
    const fngd_call_t* c = ctx == E.ctx_tf32 ? &E.call_tf32 : &E.call;
    if (E.ops->workspace_bytes(ctx, l, l ? 1 : 0, N, count, &bytes, c) != FNGD_SUCCESS) {
        std::fprintf(stderr, "workspace query: %s\n", g_err.msg);
        return 0;
    }
    return bytes;
}

void jadd(Env& E, const char* fmt, ...) __attribute__((format(printf, 2, 3)));
void jadd(Env& E, const char* fmt, ...) {
    char buf[1024];
    va_list ap;
    va_start(ap, fmt);
    std::vsnprintf(buf, sizeof buf, fmt, ap);
    va_end(ap);
    E.json += buf;
}

bool make_layer(const fngd_layer_desc_t& d, int N, fngd_layer_t* l) {
    char msg[256];
    if (fngd_layer_init(l, &d, msg, sizeof msg) != FNGD_SUCCESS) {
        std::fprintf(stderr, "layer: %s\n", msg);
        return false;
    }
    l->method = fngd_choose_gram_method(l, N, (size_t)1 << 30);
    return true;
}

// Plain (unweighted) weight-gradient GEMM of the layer: grad_W^T (p x q) = A^T (p x NT) E (NT x q),
// on operands already laid out as the GEMM wants them (what an SGD step's GEMM costs).
bool wgrad_gemm(cublasHandle_t h, const fngd_layer_t& l, int N, const Buf& A, const Buf& Eb,
                Buf& out) {
    const float one = 1.0f, zero = 0.0f;
    CB(cublasSgemm(h, CUBLAS_OP_N, CUBLAS_OP_T, l.p, l.q, N * l.T, &one, A.f(), l.p, Eb.f(),
                   l.q, &zero, out.f(), l.p));
    return true;
}

// Whether the SGD baseline of a Conv2d layer can be cuDNN's backward filter in this math mode
// (cuDNN compiled in and a plan made); *need: its workspace, *algo: the algorithm (-1: no).
bool cudnn_plain(Env& E, const fngd_layer_t& l, int N, bool tf32, size_t* need, int* algo) {
    *need = 0;
    *algo = -1;
    if (l.kind != FNGD_LAYER_CONV2D || !fngd_cuda_dnn_compiled()) return false;
    fngd_err_t e;
    std::memset(&e, 0, sizeof e);
    if (fngd_cuda_conv_wgrad_plain(tf32 ? E.ctx_tf32 : E.ctx, &l, N, tf32 ? 1 : 0, nullptr,
                                   nullptr, nullptr, nullptr, 0, need, algo, E.s, &e) ==
        FNGD_SUCCESS)
        return true;
    std::fprintf(stderr, "no cuDNN baseline (cuBLAS GEMM instead): %s\n", e.msg);
    *algo = -1;
    return false;
}

// The unweighted weight gradient an SGD step runs for the layer, in the math mode of `tf32`:
// cuDNN's backward-filter convolution for Conv2d (what PyTorch calls; the algorithm cuDNN's
// heuristics choose, as PyTorch does without cudnn.benchmark), one cuBLAS GEMM for Linear
// (grad_output^T x input, as PyTorch's addmm backward) or where cuDNN cannot run.
// A, Eb: the GEMM's operands (im2col layout for Conv2d; for Linear the input and grad_output).
bool sgd_wgrad(Env& E, const fngd_layer_t& l, int N, bool tf32, bool cudnn, const Buf& x,
               const Buf& go, const Buf& A, const Buf& Eb, Buf& dw, Buf& ws) {
    if (cudnn) {
        CF(fngd_cuda_conv_wgrad_plain(tf32 ? E.ctx_tf32 : E.ctx, &l, N, tf32 ? 1 : 0, x.f(),
                                      go.f(), dw.f(), ws.p, ws.bytes, nullptr, nullptr, E.s,
                                      &g_err));
        return true;
    }
    return wgrad_gemm(tf32 ? E.blas_tf32 : E.blas, l, N, A, Eb, dw);
}

const char* path_name(Env& E, fngd_backend_ctx_t* ctx, const fngd_layer_t& l, int N) {
    if (l.kind != FNGD_LAYER_CONV2D) return "alpha_scale + cuBLAS GEMM";
    const fngd_cuda_conv_plan p = fngd_cuda_conv_plan_get(ctx, &l, N);
    (void)E;
    return p.usable ? "alpha_scale + cuDNN backward filter" : "im2col + stage + cuBLAS GEMM";
}

bool bench_weighted(Env& E, int N) {
    jadd(E, "  \"weighted_reduction\": {\"N\": %d, \"cudnn\": %s, \"layers\": [\n", N,
         fngd_cuda_dnn_compiled() ? "true" : "false");
    bool first = true;
    double tot[2] = {0, 0}, tot_sgd[2] = {0, 0};
    for (const Shape& sh : resnet18()) {
        fngd_layer_t l;
        if (!make_layer(sh.desc, N, &l)) return false;
        Buf x, go, alpha, ow, ob, ws, A, Eb, sws;
        const size_t wsb =
            std::max(query_ws(E, E.ctx, &l, N, 0), query_ws(E, E.ctx_tf32, &l, N, 0));
        size_t sgd_ws[2] = {0, 0};
        int algo[2] = {-1, -1};
        bool dnn[2];
        for (int m = 0; m < 2; ++m) dnn[m] = cudnn_plain(E, l, N, m == 1, &sgd_ws[m], &algo[m]);
        if (!x.alloc(N * l.in_per_sample * 4) || !go.alloc(N * l.out_per_sample * 4) ||
            !alpha.alloc(N * 4) || !ow.alloc(l.n_weight * 4) || !ob.alloc(l.q * 4) ||
            !ws.alloc(wsb) || !A.alloc((size_t)N * l.T * l.p * 4) ||
            !Eb.alloc((size_t)N * l.T * l.q * 4) || !sws.alloc(std::max(sgd_ws[0], sgd_ws[1])))
            return false;
        const fngd_layer_batch_t b = {x.f(), go.f()};
        double t_fngd[2] = {0, 0}, t_sgd[2] = {0, 0}, t_gemm = 0;
        for (int m = 0; m < 2; ++m) {
            fngd_backend_ctx_t* ctx = m ? E.ctx_tf32 : E.ctx;
            if (!E.timer.median_ms([&] {
                    CF(E.ops->weighted_grad(ctx, &l, &b, N, alpha.f(), (float)N, ow.f(),
                                            l.n_bias ? ob.f() : nullptr, in(E, ctx, ws)));
                    return true;
                }, &t_fngd[m]))
                return false;
            if (!E.timer.median_ms([&] { return sgd_wgrad(E, l, N, m == 1, dnn[m], x, go, A, Eb, ow, sws); },
                                   &t_sgd[m]))
                return false;
            tot[m] += sh.count * t_fngd[m];
            tot_sgd[m] += sh.count * t_sgd[m];
        }
        if (!E.timer.median_ms([&] { return wgrad_gemm(E.blas, l, N, A, Eb, ow); }, &t_gemm))
            return false;
        const double flops = 2.0 * N * l.T * (double)l.p * l.q;
        jadd(E, "%s    {\"layer\": \"%s\", \"count\": %d, \"T\": %d, \"p\": %d, \"q\": %d, "
                "\"path\": \"%s\", \"fngd_fp32_ms\": %.4f, \"fngd_tf32_ms\": %.4f, "
                "\"sgd_wgrad_fp32_ms\": %.4f, \"sgd_wgrad_tf32_ms\": %.4f, "
                "\"cudnn_algo_fp32\": %d, \"cudnn_algo_tf32\": %d, \"cublas_gemm_fp32_ms\": %.4f, "
                "\"ratio_fp32\": %.3f, \"ratio_tf32\": %.3f, \"fngd_fp32_gflops\": %.1f, "
                "\"fngd_tf32_gflops\": %.1f}",
             first ? "" : ",\n", sh.name, sh.count, l.T, l.p, l.q, path_name(E, E.ctx, l, N),
             t_fngd[0], t_fngd[1], t_sgd[0], t_sgd[1], algo[0], algo[1], t_gemm,
             t_fngd[0] / t_sgd[0], t_fngd[1] / t_sgd[1], flops / t_fngd[0] * 1e-6,
             flops / t_fngd[1] * 1e-6);
        first = false;
        std::printf("weighted %-26s FP32 %7.3f ms vs SGD %7.3f (%.2fx)  TF32 %7.3f ms vs SGD "
                    "%7.3f (%.2fx)  im2col GEMM %7.3f ms\n", sh.name, t_fngd[0], t_sgd[0],
                    t_fngd[0] / t_sgd[0], t_fngd[1], t_sgd[1], t_fngd[1] / t_sgd[1], t_gemm);
    }
    jadd(E, "\n  ], \"network_fngd_fp32_ms\": %.3f, \"network_sgd_wgrad_fp32_ms\": %.3f, "
            "\"network_ratio_fp32\": %.3f, \"network_fngd_tf32_ms\": %.3f, "
            "\"network_sgd_wgrad_tf32_ms\": %.3f, \"network_ratio_tf32\": %.3f, "
            "\"target_ratio\": 1.05},\n",
         tot[0], tot_sgd[0], tot[0] / tot_sgd[0], tot[1], tot_sgd[1], tot[1] / tot_sgd[1]);
    std::printf("weighted network: FP32 %.3f ms vs SGD %.3f ms (%.3fx), TF32 %.3f ms vs SGD "
                "%.3f ms (%.3fx); target <= 1.05x\n", tot[0], tot_sgd[0], tot[0] / tot_sgd[0],
                tot[1], tot_sgd[1], tot[1] / tot_sgd[1]);
    return true;
}

// The epoch-one step of fngd_step in per-layer mode, by phase, through the backend's own
// operations: every layer's Gram into its block of one K array (layer_gram), ONE
// factor_solve over all the blocks (one status read for the network), every layer's
// direction (weighted_grad); against the network's SGD weight gradients in the same math mode
// (FP32 here: the Gram path is FP32 whatever allow_tf32 says).
bool bench_epoch_one(Env& E, int N) {
    std::vector<fngd_layer_t> layers;  // one per layer instance (counts expanded)
    std::vector<int> shape_of;
    size_t in_max = 0, out_max = 0, ws_max = 0, w_max = 0, sws_max = 0, a_max = 0, e_max = 0;
    for (size_t k = 0; k < resnet18().size(); ++k) {
        const Shape& sh = resnet18()[k];
        fngd_layer_t l;
        if (!make_layer(sh.desc, N, &l)) return false;
        for (int c = 0; c < sh.count; ++c) {
            layers.push_back(l);
            shape_of.push_back((int)k);
        }
        in_max = std::max(in_max, (size_t)(N * l.in_per_sample));
        out_max = std::max(out_max, (size_t)(N * l.out_per_sample));
        ws_max = std::max(ws_max, query_ws(E, E.ctx, &l, N, 0));
        w_max = std::max(w_max, (size_t)l.grad_len);
        a_max = std::max(a_max, (size_t)N * l.T * l.p);
        e_max = std::max(e_max, (size_t)N * l.T * l.q);
        size_t need = 0;
        int algo = -1;
        if (cudnn_plain(E, l, N, false, &need, &algo)) sws_max = std::max(sws_max, need);
    }
    const int count = (int)layers.size();
    ws_max = std::max(ws_max, query_ws(E, E.ctx, nullptr, N, count));
    Buf x, go, K, alpha, ws, ow, sws, A, Eb;
    if (!x.alloc(in_max * 4) || !go.alloc(out_max * 4) || !K.alloc((size_t)count * N * N * 4) ||
        !alpha.alloc((size_t)count * N * 4) || !ws.alloc(ws_max) || !ow.alloc(w_max * 4) ||
        !sws.alloc(sws_max) || !A.alloc(a_max * 4) || !Eb.alloc(e_max * 4))
        return false;
    const fngd_layer_batch_t b = {x.f(), go.f()};
    const std::vector<double> floors(count, 0.0);
    std::vector<int> info(count);
    std::vector<double> shift(count), trace(count);
    // Per shape: Gram, direction, SGD weight gradient (each timed once per shape).
    jadd(E, "  \"epoch_one\": {\"N\": %d, \"layers\": %d, \"shapes\": [\n", N, count);
    double gram_total = 0, reduce_total = 0, sgd_total = 0;
    for (size_t k = 0; k < resnet18().size(); ++k) {
        fngd_layer_t l;
        if (!make_layer(resnet18()[k].desc, N, &l)) return false;
        double t_gram = 0, t_red = 0, t_sgd = 0;
        size_t need = 0;
        int algo = -1;
        const bool dnn = cudnn_plain(E, l, N, false, &need, &algo);
        if (!E.timer.median_ms([&] {
                CF(E.ops->layer_gram(E.ctx, &l, &b, N, (float)N, K.f(), 0, in(E, E.ctx, ws)));
                return true;
            }, &t_gram) ||
            !E.timer.median_ms([&] {
                CF(E.ops->weighted_grad(E.ctx, &l, &b, N, alpha.f(), (float)N, ow.f(),
                                        l.n_bias ? ow.f() + l.n_weight : nullptr,
                                        in(E, E.ctx, ws)));
                return true;
            }, &t_red) ||
            !E.timer.median_ms([&] { return sgd_wgrad(E, l, N, false, dnn, x, go, A, Eb, ow, sws); },
                               &t_sgd))
            return false;
        const int c = resnet18()[k].count;
        gram_total += c * t_gram;
        reduce_total += c * t_red;
        sgd_total += c * t_sgd;
        const char* method = l.method == FNGD_GRAM_POSITION ? "position" : "materialize";
        jadd(E, "%s    {\"layer\": \"%s\", \"count\": %d, \"method\": \"%s\", \"gram_ms\": %.4f, "
                "\"direction_ms\": %.4f, \"sgd_wgrad_fp32_ms\": %.4f}",
             k ? ",\n" : "", resnet18()[k].name, c, method, t_gram, t_red, t_sgd);
        std::printf("epoch one %-26s %-11s gram %8.3f ms  direction %7.3f ms  SGD wgrad %7.3f ms\n",
                    resnet18()[k].name, method, t_gram, t_red, t_sgd);
    }
    // The batched solve as the step runs it: Grams of the real layers (trace-relative damping 1
    // keeps every block well conditioned; timing does not depend on the values).
    for (int i = 0; i < count; ++i)
        CF(E.ops->layer_gram(E.ctx, &layers[i], &b, N, (float)N, K.f() + (size_t)i * N * N, 0,
                             in(E, E.ctx, ws)));
    double t_solve = 0;
    if (!E.timer.median_ms([&] {
            CF(E.ops->factor_solve(E.ctx, K.f(), count, N, FNGD_DAMPING_TRACE_RELATIVE, 1.0,
                                   floors.data(), nullptr, 1, alpha.f(), N, info.data(),
                                   shift.data(), trace.data(), in(E, E.ctx, ws)));
            return true;
        }, &t_solve))
        return false;
    const double step = gram_total + t_solve + reduce_total;
    jadd(E, "\n  ], \"network_gram_ms\": %.3f, \"batched_factor_solve_ms\": %.4f, "
            "\"batched_solve_path\": \"%s\", \"network_direction_ms\": %.3f, "
            "\"network_step_ms\": %.3f, \"network_sgd_wgrad_fp32_ms\": %.3f, "
            "\"ratio_to_sgd_wgrad\": %.3f},\n",
         gram_total, t_solve,
         fngd_cuda_chol_resolve(N, count, FNGD_CUDA_CHOL_AUTO) == FNGD_CUDA_CHOL_BATCHED
             ? "batched"
             : "looped",
         reduce_total, step, sgd_total, step / sgd_total);
    std::printf("epoch one network (%d layers): gram %.3f + batched factor/solve %.3f + "
                "directions %.3f = %.3f ms vs SGD wgrad %.3f ms (%.2fx of the weight gradients "
                "alone; the <= 2x target is per whole training step: bench/resnet18_cifar.py)\n", count, gram_total, t_solve, reduce_total, step, sgd_total,
                step / sgd_total);
    return true;
}

// Damped Cholesky + solve of a batch of equal-size Gram matrices (per-layer mode, epoch one),
// three ways, all through the backend's own code: `count` blocking one-matrix factor_solve
// calls (one status read each), and one factor_solve of all of them forced onto each of its two
// paths (potrfBatched + potrsBatched, or potrf + potrs per matrix; one status read). "faster"
// says which of the two paths wins at this N: set FNGD_CUDA_BATCHED_POTRF_MAX_N
// (src/cuda/cuda_solve.h) to the largest N where "batched" wins.
bool bench_cholesky(Env& E) {
    const int count = 32;
    jadd(E, "  \"cholesky_solve\": {\"count\": %d, \"batched_potrf_max_n\": %d, \"sizes\": [\n",
         count, FNGD_CUDA_BATCHED_POTRF_MAX_N);
    int largest_batched_win = 0;
    for (int N = 16; N <= 1024; N *= 2) {
        // SPD test matrix (diagonally dominant), the same for every matrix of the batch.
        std::vector<float> hk((size_t)N * N);
        for (int i = 0; i < N; ++i)
            for (int j = 0; j < N; ++j)
                hk[(size_t)i * N + j] = i == j ? (float)N : 1.0f / (1.0f + (float)std::abs(i - j));
        size_t path_bytes[2] = {0, 0};
        CF(fngd_cuda_solve_bytes(E.ctx, N, count, FNGD_CUDA_CHOL_BATCHED, &path_bytes[0], &g_err));
        CF(fngd_cuda_solve_bytes(E.ctx, N, count, FNGD_CUDA_CHOL_LOOPED, &path_bytes[1], &g_err));
        const size_t ws_bytes =
            std::max({query_ws(E, E.ctx, nullptr, N, 1), path_bytes[0], path_bytes[1]});
        Buf K, alpha, ws;
        if (!K.alloc((size_t)count * N * N * 4) || !alpha.alloc((size_t)count * N * 4) ||
            !ws.alloc(ws_bytes))
            return false;
        for (int m = 0; m < count; ++m)
            CK(cudaMemcpy(K.f() + (size_t)m * N * N, hk.data(), hk.size() * 4,
                          cudaMemcpyHostToDevice));
        const std::vector<double> floors(count, 0.0);
        std::vector<int> info(count);
        std::vector<double> shift(count), trace(count);
        double t_single = 0, t_path[2] = {0, 0};
        if (!E.timer.median_ms([&] {
                for (int m = 0; m < count; ++m)
                    CF(E.ops->factor_solve(E.ctx, K.f() + (size_t)m * N * N, 1, N,
                                           FNGD_DAMPING_ABSOLUTE, 1e-3, &floors[m], nullptr, 0,
                                           alpha.f() + (size_t)m * N, N, &info[m], &shift[m],
                                           &trace[m], in(E, E.ctx, ws)));
                return true;
            }, &t_single))
            return false;
        const fngd_cuda_chol_path paths[2] = {FNGD_CUDA_CHOL_BATCHED, FNGD_CUDA_CHOL_LOOPED};
        for (int k = 0; k < 2; ++k)
            if (!E.timer.median_ms([&] {
                    CF(fngd_cuda_factor_solve_on(E.ctx, paths[k], K.f(), count, N,
                                                 FNGD_DAMPING_ABSOLUTE, 1e-3, floors.data(),
                                                 nullptr, 0, alpha.f(), N, info.data(),
                                                 shift.data(), trace.data(), in(E, E.ctx, ws)));
                    return true;
                }, &t_path[k]))
                return false;
        const bool batched_wins = t_path[0] < t_path[1];
        if (batched_wins) largest_batched_win = N;
        const char* autop =
            fngd_cuda_chol_resolve(N, count, FNGD_CUDA_CHOL_AUTO) == FNGD_CUDA_CHOL_BATCHED
                ? "batched"
                : "looped";
        const double flops = count * ((double)N * N * N / 3.0 + 2.0 * N * N);
        jadd(E, "%s    {\"N\": %d, \"single_calls_ms\": %.4f, \"batched_potrf_ms\": %.4f, "
                "\"looped_potrf_ms\": %.4f, \"single_calls_gflops\": %.2f, "
                "\"batched_potrf_gflops\": %.2f, \"looped_potrf_gflops\": %.2f, "
                "\"faster\": \"%s\", \"auto_path\": \"%s\"}",
             N == 16 ? "" : ",\n", N, t_single, t_path[0], t_path[1], flops / t_single * 1e-6,
             flops / t_path[0] * 1e-6, flops / t_path[1] * 1e-6,
             batched_wins ? "batched" : "looped", autop);
        std::printf("cholesky x%d N %4d: %d single calls %8.3f ms  batched potrf %8.3f ms  "
                    "looped potrf %8.3f ms  faster: %s (auto: %s)\n", count, N, count, t_single,
                    t_path[0], t_path[1], batched_wins ? "batched" : "looped", autop);
    }
    jadd(E, "\n  ], \"largest_n_batched_faster\": %d},\n", largest_batched_win);
    std::printf("cholesky: largest N where the batched path won: %d (FNGD_CUDA_BATCHED_POTRF_MAX_N "
                "= %d)\n", largest_batched_win, FNGD_CUDA_BATCHED_POTRF_MAX_N);
    return true;
}

// Large GEMMs: the practical FP32 / FP64 limits of this GPU, to read the numbers above against.
bool bench_limits(Env& E) {
    const int ns = 8192, nd = 4096;
    Buf a, b, c;
    if (!a.alloc((size_t)ns * ns * 4) || !b.alloc((size_t)ns * ns * 4) || !c.alloc((size_t)ns * ns * 4))
        return false;
    double ts = 0, tt = 0, td = 0;
    const float one = 1.0f, zero = 0.0f;
    const double oned = 1.0, zerod = 0.0;
    for (int m = 0; m < 2; ++m)
        if (!E.timer.median_ms([&] {
                CB(cublasSgemm(m ? E.blas_tf32 : E.blas, CUBLAS_OP_N, CUBLAS_OP_N, ns, ns, ns,
                               &one, a.f(), ns, b.f(), ns, &zero, c.f(), ns));
                return true;
            }, m ? &tt : &ts))
            return false;
    if (!E.timer.median_ms([&] {
            CB(cublasDgemm(E.blas, CUBLAS_OP_N, CUBLAS_OP_N, nd, nd, nd, &oned, (double*)a.p, nd,
                           (double*)b.p, nd, &zerod, (double*)c.p, nd));
            return true;
        }, &td))
        return false;
    const double f = 2.0 * ns * ns * (double)ns;
    const double gs = f / ts * 1e-6, gt = f / tt * 1e-6, gd = 2.0 * nd * nd * (double)nd / td * 1e-6;
    jadd(E, "  \"limits\": {\"sgemm_8192_gflops\": %.0f, \"tf32_gemm_8192_gflops\": %.0f, "
            "\"dgemm_4096_gflops\": %.0f}\n", gs, gt, gd);
    std::printf("limits: SGEMM %.0f Gflop/s, TF32 GEMM %.0f Gflop/s, DGEMM %.0f Gflop/s\n", gs, gt,
                gd);
    return true;
}

bool run(const char* path) {
    if (!fngd_cuda_device_available()) {
        std::fprintf(stderr, "no CUDA device\n");
        return false;
    }
    Env E;
    E.ops = fngd_cuda_backend_ops();
    fngd_config_t cfg;
    fngd_config_init(&cfg);
    cfg.backend = FNGD_BACKEND_CUDA;
    cfg.max_batch = 1024;
    cfg.num_samples = 1024;
    CF(E.ops->create(&cfg, &E.ctx, &g_err));
    cfg.allow_tf32 = 1;
    CF(E.ops->create(&cfg, &E.ctx_tf32, &g_err));
    CK(cudaStreamCreateWithFlags(&E.s, cudaStreamNonBlocking));
    E.call = fngd_call_t{(fngd_stream_t)E.s, nullptr, 0, &g_err, -1};
    E.call_tf32 = E.call;
    CF(E.ops->begin_call(E.ctx, &E.call));
    CF(E.ops->begin_call(E.ctx_tf32, &E.call_tf32));
    CB(cublasCreate(&E.blas));
    CB(cublasSetMathMode(E.blas, CUBLAS_DEFAULT_MATH));  // FP32 baseline, no TF32
    CB(cublasSetStream(E.blas, E.s));
    CB(cublasCreate(&E.blas_tf32));
    CB(cublasSetMathMode(E.blas_tf32, CUBLAS_TF32_TENSOR_OP_MATH));
    CB(cublasSetStream(E.blas_tf32, E.s));
    if (!E.timer.init(E.s)) return false;
    cudaDeviceProp prop;
    CK(cudaGetDeviceProperties(&prop, 0));
    int rt = 0, drv = 0;
    CK(cudaRuntimeGetVersion(&rt));
    CK(cudaDriverGetVersion(&drv));
    E.json = "{\n";
    jadd(E, "  \"device\": \"%s\", \"compute_capability\": \"%d.%d\", \"sm_count\": %d, "
            "\"l2_bytes\": %d, \"cuda_runtime\": %d, \"cuda_driver\": %d, \"repeats\": %d, "
            "\"warmup\": %d, \"statistic\": \"median\",\n",
         prop.name, prop.major, prop.minor, prop.multiProcessorCount, prop.l2CacheSize, rt, drv,
         kRepeats, kWarmup);
    std::printf("device %s (sm_%d%d), cuDNN path %s\n", prop.name, prop.major, prop.minor,
                fngd_cuda_dnn_compiled() ? "compiled" : "absent");
    const int N = 128;
    bool ok = bench_weighted(E, N) && bench_epoch_one(E, N) && bench_cholesky(E) &&
              bench_limits(E);
    E.json += "}\n";
    E.ops->end_call(E.ctx_tf32, &E.call_tf32);
    E.ops->end_call(E.ctx, &E.call);
    E.ops->destroy(E.ctx);
    E.ops->destroy(E.ctx_tf32);
    cublasDestroy(E.blas);
    cublasDestroy(E.blas_tf32);
    cudaStreamDestroy(E.s);
    if (!ok) return false;
    FILE* f = std::fopen(path, "w");
    if (!f) {
        std::fprintf(stderr, "cannot write %s\n", path);
        return false;
    }
    std::fputs(E.json.c_str(), f);
    std::fclose(f);
    std::printf("wrote %s\n", path);
    return true;
}

}  // namespace

int main(int argc, char** argv) {
    std::string out = std::string(FNGD_BENCH_RESULTS_DIR) + "/cuda_kernels.json";
    for (int a = 1; a < argc; ++a) {
        const std::string arg = argv[a];
        if (arg == "--out" && a + 1 < argc) {
            out = argv[++a];
        } else if (arg.rfind("--out=", 0) == 0) {
            out = arg.substr(6);
        } else if (arg == "--quick") {
            kWarmup = 2;
            kRepeats = 5;
        } else if (arg == "-h" || arg == "--help") {
            std::printf("usage: %s [--out PATH | PATH] [--quick]\n"
                        "  writes the JSON results to PATH (default %s)\n"
                        "  --quick: 2 warm-ups and 5 timed repeats instead of 3 and 15\n",
                        argv[0], out.c_str());
            return 0;
        } else if (!arg.empty() && arg[0] != '-') {
            out = arg;
        } else {
            std::fprintf(stderr, "unknown argument %s (--help)\n", arg.c_str());
            return 2;
        }
    }
    return run(out.c_str()) ? 0 : 1;
}
