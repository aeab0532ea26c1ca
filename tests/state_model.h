/* A small fixed training problem for the checkpoint tests (tests/test_state.cpp,
 * test_fault_injection.cpp, test_threads.cpp), the state fuzzer and its corpus generator
 * (fuzz/): conv2d -> norm affine -> linear, trained with FNGD_OUTPUT_APPLY_SGD (momentum,
 * weight decay), recollecting every second epoch. Every batch is a pure function of the epoch
 * and step, so two runs of the same schedule are bit-identical. Plain C, header-only. */
#ifndef FNGD_TESTS_STATE_MODEL_H
#define FNGD_TESTS_STATE_MODEL_H

#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "fngd.h"

/* The model's buffers are backend memory of the backend the running test uses: in the C++
 * tests, backend_param.h decides (host memory, or CUDA managed memory in fngd_cuda_tests,
 * with a device synchronisation before the host touches a buffer the library may be using);
 * elsewhere (the fuzzer) host memory on the CPU backend. */
#ifdef __cplusplus
#include "backend_param.h"
#define SM_ALLOC(bytes) fngd_test::test_alloc(bytes)
#define SM_FREE(p) fngd_test::test_free(p)
#define SM_SYNC() fngd_test::test_sync()
#define SM_BACKEND fngd_test::current_backend()
#else
#define SM_ALLOC(bytes) malloc(bytes)
#define SM_FREE(p) free(p)
#define SM_SYNC() ((void)0)
#define SM_BACKEND FNGD_BACKEND_CPU
#endif

#ifdef __cplusplus
extern "C" {
#endif

enum {
    SM_LAYERS = 3,
    SM_BATCH = 6,          /* N of every step */
    SM_SAMPLES = 26,       /* id space */
    SM_STEPS_PER_EPOCH = 4 /* 24 of the 26 ids per epoch: later epochs see fallbacks */
};

typedef struct sm_model {
    fngd_layer_desc_t desc[SM_LAYERS];
    int64_t n_weight[SM_LAYERS], n_bias[SM_LAYERS];
    int64_t in_per_sample[SM_LAYERS], out_per_sample[SM_LAYERS];
    float* weight[SM_LAYERS];
    float* bias[SM_LAYERS];
    float* input[SM_LAYERS];       /* the current batch */
    float* grad_output[SM_LAYERS];
} sm_model_t;

/* The configuration every user of this model shares (a state saved with it loads into any
 * other handle made by sm_make_handle). */
static inline fngd_config_t sm_config(void) {
    fngd_config_t c;
    fngd_config_init(&c);
    c.backend = SM_BACKEND;
    c.max_batch = SM_BATCH;
    c.num_samples = SM_SAMPLES;
    c.damping_kind = FNGD_DAMPING_TRACE_RELATIVE;
    c.damping = 0.05;
    c.recompute_every = 2;
    c.output = FNGD_OUTPUT_APPLY_SGD;
    c.learning_rate = 0.05f;
    c.momentum = 0.9f;
    c.weight_decay = 1e-3f;
    return c;
}

/* Deterministic values in [-1, 1) from a 64-bit key (splitmix64 finaliser). */
static inline float sm_hash_unit(uint64_t key) {
    uint64_t z = key + 0x9E3779B97F4A7C15ull;
    z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ull;
    z = (z ^ (z >> 27)) * 0x94D049BB133111EBull;
    z ^= z >> 31;
    return (float)((double)(z >> 40) / (double)(1ull << 23) - 1.0);
}

static inline uint64_t sm_key(uint64_t a, uint64_t b, uint64_t c, uint64_t d) {
    return ((a * 1000003ull + b) * 1000003ull + c) * 1000003ull + d;
}

static inline void sm_model_free(sm_model_t* m) {
    SM_SYNC();
    for (int l = 0; l < SM_LAYERS; ++l) {
        SM_FREE(m->weight[l]);
        SM_FREE(m->bias[l]);
        SM_FREE(m->input[l]);
        SM_FREE(m->grad_output[l]);
    }
    memset(m, 0, sizeof *m);
}

/* Layers and initial parameters (from `seed`); returns 0, or -1 when out of memory. */
static inline int sm_model_init(sm_model_t* m, uint64_t seed) {
    memset(m, 0, sizeof *m);
    /* conv 2 -> 3 channels on 5 x 5 with a 3 x 3 kernel, padding 1: 5 x 5 out, T = 25 */
    m->desc[0] = fngd_conv2d_desc(2, 3, 5, 5, 3, 3, 1);
    m->desc[0].pad_h = m->desc[0].pad_w = 1;
    m->n_weight[0] = 3 * 2 * 9, m->n_bias[0] = 3;
    m->in_per_sample[0] = 2 * 25, m->out_per_sample[0] = 3 * 25;
    /* norm affine over its 3 channels x 25 positions */
    m->desc[1] = fngd_norm_affine_desc(3, 25, 1);
    m->n_weight[1] = 3, m->n_bias[1] = 3;
    m->in_per_sample[1] = m->out_per_sample[1] = 3 * 25;
    /* linear 6 -> 4 */
    m->desc[2] = fngd_linear_desc(6, 4, 1);
    m->n_weight[2] = 24, m->n_bias[2] = 4;
    m->in_per_sample[2] = 6, m->out_per_sample[2] = 4;
    for (int l = 0; l < SM_LAYERS; ++l) {
        m->weight[l] = (float*)SM_ALLOC((size_t)m->n_weight[l] * sizeof(float));
        m->bias[l] = (float*)SM_ALLOC((size_t)m->n_bias[l] * sizeof(float));
        m->input[l] = (float*)SM_ALLOC((size_t)(SM_BATCH * m->in_per_sample[l]) * sizeof(float));
        m->grad_output[l] =
            (float*)SM_ALLOC((size_t)(SM_BATCH * m->out_per_sample[l]) * sizeof(float));
        if (!m->weight[l] || !m->bias[l] || !m->input[l] || !m->grad_output[l]) {
            sm_model_free(m);
            return -1;
        }
        for (int64_t k = 0; k < m->n_weight[l]; ++k)
            m->weight[l][k] = (l == 1 ? 1.0f : 0.0f) + 0.3f * sm_hash_unit(sm_key(seed, 1, l, k));
        for (int64_t k = 0; k < m->n_bias[l]; ++k)
            m->bias[l][k] = 0.1f * sm_hash_unit(sm_key(seed, 2, l, k));
        m->desc[l].weight = m->weight[l];
        m->desc[l].bias = m->bias[l];
    }
    return 0;
}

/* dst's parameters = src's (same model shape). */
static inline void sm_copy_params(sm_model_t* dst, const sm_model_t* src) {
    SM_SYNC();
    for (int l = 0; l < SM_LAYERS; ++l) {
        memcpy(dst->weight[l], src->weight[l], (size_t)src->n_weight[l] * sizeof(float));
        memcpy(dst->bias[l], src->bias[l], (size_t)src->n_bias[l] * sizeof(float));
    }
}

/* 1 when both models hold bit-identical parameters. */
static inline int sm_same_params(const sm_model_t* a, const sm_model_t* b) {
    SM_SYNC();
    for (int l = 0; l < SM_LAYERS; ++l)
        if (memcmp(a->weight[l], b->weight[l], (size_t)a->n_weight[l] * sizeof(float)) != 0 ||
            memcmp(a->bias[l], b->bias[l], (size_t)a->n_bias[l] * sizeof(float)) != 0)
            return 0;
    return 1;
}

/* Create a handle with sm_config() (or *cfg) and register the model's layers. */
static inline fngd_status_t sm_make_handle(const sm_model_t* m, const fngd_config_t* cfg,
                                           fngd_handle_t* h) {
    fngd_config_t c = cfg ? *cfg : sm_config();
    fngd_status_t s = fngd_create(&c, h);
    for (int l = 0; l < SM_LAYERS && s == FNGD_SUCCESS; ++l) s = fngd_add_layer(*h, &m->desc[l], NULL);
    if (s != FNGD_SUCCESS && *h) {
        fngd_destroy(*h);
        *h = NULL;
    }
    return s;
}

/* The ids of step `step` of epoch `epoch`: a fixed permutation of the id space rotated per
 * epoch, so each epoch visits a different 24 of the 26 ids in a different order. */
static inline void sm_step_ids(int epoch, int step, int64_t ids[SM_BATCH]) {
    for (int i = 0; i < SM_BATCH; ++i) {
        int k = step * SM_BATCH + i + 5 * epoch;
        ids[i] = (int64_t)((7 * k + 3) % SM_SAMPLES);
    }
}

/* The batch of those ids: each sample's data depends only on its id. */
static inline void sm_fill_batch(sm_model_t* m, const int64_t ids[SM_BATCH]) {
    for (int l = 0; l < SM_LAYERS; ++l)
        for (int i = 0; i < SM_BATCH; ++i) {
            uint64_t id = (uint64_t)ids[i];
            for (int64_t k = 0; k < m->in_per_sample[l]; ++k)
                m->input[l][i * m->in_per_sample[l] + k] =
                    0.3f + sm_hash_unit(sm_key(77, 3, (uint64_t)l * 64 + id, (uint64_t)k));
            for (int64_t k = 0; k < m->out_per_sample[l]; ++k)
                m->grad_output[l][i * m->out_per_sample[l] + k] =
                    0.2f + sm_hash_unit(sm_key(77, 4, (uint64_t)l * 64 + id, (uint64_t)k));
        }
}

/* The schedule is a list of actions: each epoch is SM_STEPS_PER_EPOCH steps then one
 * fngd_end_epoch. sm_run performs actions [begin, end). */
static inline int sm_actions(int epochs) { return epochs * (SM_STEPS_PER_EPOCH + 1); }

static inline fngd_status_t sm_run(fngd_handle_t h, sm_model_t* m, int begin, int end) {
    for (int a = begin; a < end; ++a) {
        int epoch = a / (SM_STEPS_PER_EPOCH + 1), step = a % (SM_STEPS_PER_EPOCH + 1);
        fngd_status_t s;
        if (step == SM_STEPS_PER_EPOCH) {
            s = fngd_end_epoch(h, NULL);
        } else {
            int64_t ids[SM_BATCH];
            sm_step_ids(epoch, step, ids);
            SM_SYNC(); /* the previous step may still read the batch buffers */
            sm_fill_batch(m, ids);
            fngd_layer_batch_t b[SM_LAYERS];
            for (int l = 0; l < SM_LAYERS; ++l) {
                b[l].input = m->input[l];
                b[l].grad_output = m->grad_output[l];
            }
            s = fngd_step(h, SM_BATCH, ids, b, NULL, NULL);
        }
        if (s != FNGD_SUCCESS) return s;
    }
    SM_SYNC(); /* the caller may read the parameters next */
    return FNGD_SUCCESS;
}

#ifdef __cplusplus
}
#endif

#endif
