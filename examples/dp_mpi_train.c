/* Data-parallel FNGD over MPI on the CPU backend: the semantics of README "Data-parallel"
 * (docs/METHOD.md section 8) in a plain C training loop.
 *
 * Each of W ranks trains the same two-layer MLP (Linear 16 -> 32, ReLU, Linear 32 -> 4,
 * softmax cross-entropy, forward and backward by hand) on its own n samples of each global
 * batch of a synthetic data set (a fresh permutation every epoch, the same on every rank, so
 * samples move between ranks from epoch to epoch):
 *   - fngd_step on the local batch writes the local direction into one contiguous gradient
 *     buffer (all layers' grad_weight / grad_bias back to back);
 *   - one MPI_Allreduce of that buffer (d floats, what DDP with SGD sends) averages the
 *     directions; every rank applies the same SGD-with-momentum update;
 *   - at the end of the collect epoch, every rank exports the (id, alpha of every set) pairs
 *     it stored (fngd_get_coefficients with FNGD_ALL_SETS), the ranks all-gather them
 *     (MPI_Allgatherv of ids and values) and every rank imports all of them
 *     (fngd_set_coefficients), so any rank can reuse any sample's coefficients later.
 * At the end it checks that the parameters and the coefficient tables are bit-identical on
 * every rank and that the loss went down, prints the bytes communicated, and exits 0 (1 on a
 * libfngd or MPI error, 2 when a check fails).
 *
 *   mpirun -np 2 build/examples/fngd_dp_mpi_train [epochs]
 *
 * Compiled with FNGD_DP_NCCL (target fngd_dp_nccl_train, CUDA builds with NCCL and MPI): the
 * CUDA backend on device i = rank % devices; the layer data are copied to device buffers, the
 * direction is averaged with ncclAllReduce on the step's stream (the NCCL id travels by
 * MPI_Bcast), the (id, alpha) exchange stays on the host over MPI (fngd_get_coefficients and
 * fngd_set_coefficients take host arrays). Without a GPU it exits 77 (ctest: skipped).
 */
#include <math.h>
#include <mpi.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "fngd.h"

#ifdef FNGD_DP_NCCL
#include <cuda_runtime.h>
#include <nccl.h>
#define CUDA_OK(call)                                                                        \
    do {                                                                                     \
        cudaError_t e_ = (call);                                                             \
        if (e_ != cudaSuccess) {                                                             \
            fprintf(stderr, "rank %d: %s: %s\n", g_rank, #call, cudaGetErrorString(e_));      \
            MPI_Abort(MPI_COMM_WORLD, 1);                                                    \
        }                                                                                    \
    } while (0)
#define NCCL_OK(call)                                                                        \
    do {                                                                                     \
        ncclResult_t r_ = (call);                                                            \
        if (r_ != ncclSuccess) {                                                             \
            fprintf(stderr, "rank %d: %s: %s\n", g_rank, #call, ncclGetErrorString(r_));      \
            MPI_Abort(MPI_COMM_WORLD, 1);                                                    \
        }                                                                                    \
    } while (0)
#endif

enum { IN = 16, HID = 32, OUT = 4, LOCAL_N = 16, SAMPLES = 512 };

static int g_rank = 0;

#define CHECK(call)                                                                          \
    do {                                                                                     \
        fngd_status_t s_ = (call);                                                           \
        if (s_ != FNGD_SUCCESS) {                                                            \
            fprintf(stderr, "rank %d: %s failed: %s (%s)\n", g_rank, #call,                  \
                    fngd_status_string(s_), fngd_get_last_error(h));                         \
            MPI_Abort(MPI_COMM_WORLD, 1);                                                    \
        }                                                                                    \
    } while (0)

/* Deterministic random numbers (the same stream on every rank). */
static uint64_t rng_state = 0x9E3779B97F4A7C15ull;
static uint64_t rng_next(void) {
    rng_state ^= rng_state << 13;
    rng_state ^= rng_state >> 7;
    rng_state ^= rng_state << 17;
    return rng_state;
}
static float rng_normal(void) {
    double u = ((double)(rng_next() >> 11) + 0.5) / 9007199254740992.0;
    double v = ((double)(rng_next() >> 11) + 0.5) / 9007199254740992.0;
    return (float)(sqrt(-2.0 * log(u)) * cos(6.283185307179586 * v));
}

int main(int argc, char** argv) {
    MPI_Init(&argc, &argv);
    int world = 1;
    MPI_Comm_rank(MPI_COMM_WORLD, &g_rank);
    MPI_Comm_size(MPI_COMM_WORLD, &world);
    const int epochs = argc > 1 ? atoi(argv[1]) : 4;
    const int steps = SAMPLES / (LOCAL_N * world);
    fngd_handle_t h = NULL;
    if (steps < 1 || epochs < 2) {
        if (g_rank == 0) fprintf(stderr, "need epochs >= 2 and at most %d ranks\n", SAMPLES / LOCAL_N);
        MPI_Finalize();
        return 1;
    }

    /* Data: x ~ N(0, 1), label = argmax of a fixed random teacher. Same on every rank. */
    static float X[SAMPLES][IN];
    static int Y[SAMPLES];
    float teacher[OUT][IN];
    for (int o = 0; o < OUT; ++o)
        for (int k = 0; k < IN; ++k) teacher[o][k] = rng_normal();
    for (int i = 0; i < SAMPLES; ++i) {
        float best = -INFINITY;
        for (int k = 0; k < IN; ++k) X[i][k] = rng_normal();
        for (int o = 0; o < OUT; ++o) {
            float z = 0;
            for (int k = 0; k < IN; ++k) z += teacher[o][k] * X[i][k];
            if (z > best) best = z, Y[i] = o;
        }
    }

    /* Parameters, momentum and the one gradient buffer the all-reduce sends. */
    const int nW1 = HID * IN, nb1 = HID, nW2 = OUT * HID, nb2 = OUT;
    const int d = nW1 + nb1 + nW2 + nb2;
    float* param = calloc((size_t)d, sizeof(float));
    float* grad = calloc((size_t)d, sizeof(float));
    float* mom = calloc((size_t)d, sizeof(float));
    float *W1 = param, *b1 = W1 + nW1, *W2 = b1 + nb1, *b2 = W2 + nW2;
    for (int k = 0; k < nW1; ++k) W1[k] = rng_normal() / sqrtf((float)IN);
    for (int k = 0; k < nW2; ++k) W2[k] = rng_normal() / sqrtf((float)HID);

    fngd_config_t cfg;
    fngd_config_init(&cfg);
#ifdef FNGD_DP_NCCL
    int have_gpu = 0, ndev = 0;
    fngd_backend_available(FNGD_BACKEND_CUDA, &have_gpu);
    int all_gpu = 0;
    MPI_Allreduce(&have_gpu, &all_gpu, 1, MPI_INT, MPI_MIN, MPI_COMM_WORLD);
    if (!all_gpu) {
        if (g_rank == 0) printf("skipped: no usable CUDA device on every rank\n");
        MPI_Finalize();
        return 77;
    }
    CUDA_OK(cudaGetDeviceCount(&ndev));
    cfg.backend = FNGD_BACKEND_CUDA;
    cfg.device = g_rank % ndev;
    CUDA_OK(cudaSetDevice(cfg.device));
    ncclUniqueId nccl_id;
    if (g_rank == 0) NCCL_OK(ncclGetUniqueId(&nccl_id));
    MPI_Bcast(&nccl_id, sizeof nccl_id, MPI_BYTE, 0, MPI_COMM_WORLD);
    ncclComm_t nccl;
    NCCL_OK(ncclCommInitRank(&nccl, world, nccl_id, g_rank));
    cudaStream_t stream;
    CUDA_OK(cudaStreamCreateWithFlags(&stream, cudaStreamNonBlocking));
    float *grad_dev = NULL, *in_dev = NULL;  /* grad: d floats; in: x, dpre, act, dlog */
    const size_t in_floats = (size_t)LOCAL_N * (IN + HID + HID + OUT);
    CUDA_OK(cudaMalloc((void**)&grad_dev, sizeof(float) * (size_t)d));
    CUDA_OK(cudaMalloc((void**)&in_dev, sizeof(float) * in_floats));
    float* const gbuf = grad_dev;  /* the library writes the direction on the device */
#else
    float* const gbuf = grad;
#endif
    cfg.max_batch = LOCAL_N;
    cfg.num_samples = SAMPLES;
    cfg.learning_rate = 0.1f;
    CHECK(fngd_create(&cfg, &h));
    fngd_layer_desc_t l1 = fngd_linear_desc(IN, HID, 1), l2 = fngd_linear_desc(HID, OUT, 1);
    l1.grad_weight = gbuf;
    l1.grad_bias = gbuf + nW1;
    l2.grad_weight = gbuf + nW1 + nb1;
    l2.grad_bias = gbuf + nW1 + nb1 + nW2;
    CHECK(fngd_add_layer(h, &l1, NULL));
    CHECK(fngd_add_layer(h, &l2, NULL));
    CHECK(fngd_prepare(h));
    int nsets = 0;
    CHECK(fngd_get_num_coefficient_sets(h, &nsets));

    float xin[LOCAL_N][IN], pre[LOCAL_N][HID], act[LOCAL_N][HID], dpre[LOCAL_N][HID];
    float dlog[LOCAL_N][OUT];
    int64_t ids[LOCAL_N];
    int64_t* seen_ids = malloc(sizeof(int64_t) * SAMPLES);  /* this rank's ids, collect epoch */
    int* perm = malloc(sizeof(int) * SAMPLES);
    double first_loss = 0, last_loss = 0;
    uint64_t bytes_step = 0, bytes_gather = 0, steps_total = 0;

    for (int epoch = 0; epoch < epochs; ++epoch) {
        fngd_stats_t st;
        memset(&st, 0, sizeof st);
        st.struct_size = sizeof st;
        CHECK(fngd_get_stats(h, &st));
        const int collect = st.phase == FNGD_PHASE_COLLECT;
        int nseen = 0;
        for (int i = 0; i < SAMPLES; ++i) perm[i] = i;
        for (int i = SAMPLES - 1; i > 0; --i) {  /* the same shuffle on every rank */
            int j = (int)(rng_next() % (uint64_t)(i + 1)), t = perm[i];
            perm[i] = perm[j];
            perm[j] = t;
        }
        double loss_sum = 0;
        for (int s = 0; s < steps; ++s) {
            const int* mine = perm + (size_t)(s * world + g_rank) * LOCAL_N;
            double loss = 0;
            for (int i = 0; i < LOCAL_N; ++i) {
                ids[i] = mine[i];
                memcpy(xin[i], X[mine[i]], sizeof xin[i]);
                for (int o = 0; o < HID; ++o) {
                    float z = b1[o];
                    for (int k = 0; k < IN; ++k) z += W1[o * IN + k] * xin[i][k];
                    pre[i][o] = z;
                    act[i][o] = z > 0 ? z : 0;
                }
                float z[OUT], mx = -INFINITY, sum = 0;
                for (int o = 0; o < OUT; ++o) {
                    z[o] = b2[o];
                    for (int k = 0; k < HID; ++k) z[o] += W2[o * HID + k] * act[i][k];
                    if (z[o] > mx) mx = z[o];
                }
                for (int o = 0; o < OUT; ++o) sum += expf(z[o] - mx);
                loss += log(sum) + mx - z[Y[mine[i]]];
                for (int o = 0; o < OUT; ++o)  /* d(mean loss)/d logits */
                    dlog[i][o] = (expf(z[o] - mx) / sum - (o == Y[mine[i]])) / LOCAL_N;
                for (int k = 0; k < HID; ++k) {
                    float g = 0;
                    for (int o = 0; o < OUT; ++o) g += dlog[i][o] * W2[o * HID + k];
                    dpre[i][k] = pre[i][k] > 0 ? g : 0;
                }
            }
            loss_sum += loss / LOCAL_N;
#ifdef FNGD_DP_NCCL
            float* dx = in_dev;
            float* ddpre = dx + LOCAL_N * IN;
            float* dact = ddpre + LOCAL_N * HID;
            float* ddlog = dact + LOCAL_N * HID;
            CUDA_OK(cudaMemcpyAsync(dx, xin, sizeof xin, cudaMemcpyHostToDevice, stream));
            CUDA_OK(cudaMemcpyAsync(ddpre, dpre, sizeof dpre, cudaMemcpyHostToDevice, stream));
            CUDA_OK(cudaMemcpyAsync(dact, act, sizeof act, cudaMemcpyHostToDevice, stream));
            CUDA_OK(cudaMemcpyAsync(ddlog, dlog, sizeof dlog, cudaMemcpyHostToDevice, stream));
            fngd_layer_batch_t b[2] = {{dx, ddpre}, {dact, ddlog}};
            CHECK(fngd_step(h, LOCAL_N, ids, b, NULL, (fngd_stream_t)stream));
#else
            fngd_layer_batch_t b[2] = {{&xin[0][0], &dpre[0][0]}, {&act[0][0], &dlog[0][0]}};
            CHECK(fngd_step(h, LOCAL_N, ids, b, NULL, NULL));
#endif
            if (collect) {
                memcpy(seen_ids + nseen, ids, sizeof ids);
                nseen += LOCAL_N;
            }
            /* Average the local directions: one all-reduce of d floats. */
#ifdef FNGD_DP_NCCL
            NCCL_OK(ncclAllReduce(grad_dev, grad_dev, (size_t)d, ncclFloat, ncclSum, nccl,
                                  stream));
            CUDA_OK(cudaMemcpyAsync(grad, grad_dev, sizeof(float) * (size_t)d,
                                    cudaMemcpyDeviceToHost, stream));
            CUDA_OK(cudaStreamSynchronize(stream));
#else
            MPI_Allreduce(MPI_IN_PLACE, grad, d, MPI_FLOAT, MPI_SUM, MPI_COMM_WORLD);
#endif
            bytes_step += (uint64_t)d * sizeof(float);
            ++steps_total;
            for (int k = 0; k < d; ++k) {
                mom[k] = 0.9f * mom[k] + grad[k] / (float)world;
                param[k] -= 0.1f * mom[k];
            }
        }
        if (collect) {  /* replicate the coefficients: all-gather (id, alpha of every set) */
            float* vals = malloc(sizeof(float) * (size_t)nseen * (size_t)nsets);
            CHECK(fngd_get_coefficients(h, FNGD_ALL_SETS, nseen, seen_ids, vals));
            int* counts = malloc(sizeof(int) * (size_t)world);
            int* displs = malloc(sizeof(int) * (size_t)world);
            int* vcounts = malloc(sizeof(int) * (size_t)world);
            int* vdispls = malloc(sizeof(int) * (size_t)world);
            MPI_Allgather(&nseen, 1, MPI_INT, counts, 1, MPI_INT, MPI_COMM_WORLD);
            int total = 0;
            for (int r = 0; r < world; ++r) {
                displs[r] = total;
                vcounts[r] = counts[r] * nsets;
                vdispls[r] = total * nsets;
                total += counts[r];
            }
            int64_t* all_ids = malloc(sizeof(int64_t) * (size_t)total);
            float* all_vals = malloc(sizeof(float) * (size_t)total * (size_t)nsets);
            MPI_Allgatherv(seen_ids, nseen, MPI_INT64_T, all_ids, counts, displs, MPI_INT64_T,
                           MPI_COMM_WORLD);
            MPI_Allgatherv(vals, nseen * nsets, MPI_FLOAT, all_vals, vcounts, vdispls,
                           MPI_FLOAT, MPI_COMM_WORLD);
            bytes_gather += (uint64_t)total * (sizeof(int64_t) + sizeof(float) * (size_t)nsets);
            /* The sampler partitions the data, so no id comes twice; a padding sampler would
             * need the lowest rank's pair kept (fngd_set_coefficients refuses repeats). */
            CHECK(fngd_set_coefficients(h, FNGD_ALL_SETS, total, all_ids, all_vals));
            free(vals); free(counts); free(displs); free(vcounts); free(vdispls);
            free(all_ids); free(all_vals);
        }
#ifdef FNGD_DP_NCCL
        CHECK(fngd_end_epoch(h, (fngd_stream_t)stream));
#else
        CHECK(fngd_end_epoch(h, NULL));
#endif
        double mean_loss = 0, local = loss_sum / steps;
        MPI_Allreduce(&local, &mean_loss, 1, MPI_DOUBLE, MPI_SUM, MPI_COMM_WORLD);
        mean_loss /= world;
        if (epoch == 0) first_loss = mean_loss;
        last_loss = mean_loss;
        if (g_rank == 0)
            printf("epoch %d (%s): mean loss %.4f\n", epoch, collect ? "collect" : "reuse",
                   mean_loss);
    }

    /* Checks: parameters and coefficient tables bit-identical on every rank. */
    float* ref = malloc(sizeof(float) * (size_t)d);
    memcpy(ref, param, sizeof(float) * (size_t)d);
    MPI_Bcast(ref, d, MPI_FLOAT, 0, MPI_COMM_WORLD);
    int same_params = memcmp(ref, param, sizeof(float) * (size_t)d) == 0;
    int64_t* all = malloc(sizeof(int64_t) * SAMPLES);
    for (int i = 0; i < SAMPLES; ++i) all[i] = i;
    float* table = malloc(sizeof(float) * SAMPLES * (size_t)nsets);
    float* table0 = malloc(sizeof(float) * SAMPLES * (size_t)nsets);
    CHECK(fngd_get_coefficients(h, FNGD_ALL_SETS, SAMPLES, all, table));
    memcpy(table0, table, sizeof(float) * SAMPLES * (size_t)nsets);
    MPI_Bcast(table0, SAMPLES * nsets, MPI_FLOAT, 0, MPI_COMM_WORLD);
    int same_table = memcmp(table0, table, sizeof(float) * SAMPLES * (size_t)nsets) == 0;
    fngd_stats_t st;
    memset(&st, 0, sizeof st);
    st.struct_size = sizeof st;
    CHECK(fngd_get_stats(h, &st));
    int ok = same_params && same_table && last_loss < first_loss;
    int all_ok = 0;
    MPI_Allreduce(&ok, &all_ok, 1, MPI_INT, MPI_MIN, MPI_COMM_WORLD);
    if (g_rank == 0) {
        printf("ranks %d, local batch %d, d %d floats, %d coefficient sets\n", world, LOCAL_N, d,
               nsets);
        printf("parameters identical on every rank: %s\n", same_params ? "yes" : "NO");
        printf("coefficient tables identical on every rank: %s (%lld of %d ids stored, %lld "
               "fallback ids)\n", same_table ? "yes" : "NO", (long long)st.coefs_stored,
               SAMPLES, (long long)st.fallback_ids);
        printf("bytes per step and rank: all-reduce of %llu (DDP-SGD: %llu); coefficient "
               "all-gather after the collect epoch: %llu received per rank\n",
               (unsigned long long)(bytes_step / steps_total),
               (unsigned long long)((uint64_t)d * sizeof(float)),
               (unsigned long long)bytes_gather);
        printf("loss %.4f -> %.4f: %s\n", first_loss, last_loss, all_ok ? "ok" : "FAILED");
    }
    free(ref); free(all); free(table); free(table0); free(param); free(grad); free(mom);
    free(seen_ids); free(perm);
    fngd_destroy(h);
#ifdef FNGD_DP_NCCL
    ncclCommDestroy(nccl);
    cudaFree(grad_dev);
    cudaFree(in_dev);
    cudaStreamDestroy(stream);
#endif
    MPI_Finalize();
    return all_ok ? 0 : 2;
}
