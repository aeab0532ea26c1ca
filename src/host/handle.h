/* The optimizer handle: configuration, layers, epoch state and the backend memory it owns.
 * Plain C, backend-agnostic; the backend is reached only through `ops`. */
#ifndef FNGD_HOST_HANDLE_H
#define FNGD_HOST_HANDLE_H

#include <stdint.h>

#include "backend.h"
#include "error.h"
#include "layer.h"

#ifdef __cplusplus
extern "C" {
#endif

/* Host-side counters; everything a checkpoint must carry besides backend arrays. */
typedef struct fngd_counters {
    int epoch;
    fngd_phase_t phase;
    int64_t steps_total;
    int64_t steps_in_epoch;
    int64_t factorizations;
    int64_t damping_retries;
    int64_t rejected_steps;
    double last_damping;
} fngd_counters_t;

struct fngd_handle {
    fngd_config_t cfg;
    const fngd_backend_ops_t* ops;
    fngd_backend_ctx_t* ctx;
    fngd_err_t err;

    fngd_layer_t* layers;
    int num_layers;
    int layers_capacity;
    int prepared;             /* layer set frozen and backend memory allocated */

    fngd_counters_t counters;

    /* Backend memory, allocated by fngd_prepare. */
    int nsets;                /* coefficient sets: num_layers (per-layer) or 1 (global) */
    float* coef_table;        /* num_samples * nsets */
    uint8_t* coef_seen;       /* num_samples */
    float* coef_fallback;     /* nsets: stored mean per set */
    int64_t* fallback_count;  /* 1 counter */
    float* gram;              /* nsets * max_batch^2 (per-layer) or max_batch^2 (global) */
    float* alpha;             /* nsets * max_batch: this step's coefficients */
    void* workspace;
    size_t workspace_bytes;
    int workspace_owned;      /* 1 if the library allocated it */

    fngd_stream_t last_stream;/* stream of the last enqueuing call: queries read after it */
    int64_t* id_scratch;
    double* solve_scratch;    /* host, 3 * nsets: min_shift, shift, trace of the batched solve */
    int* solve_info;          /* host, nsets: Cholesky status of the batched solve */
    fngd_coef_summary_t* coef_summary; /* host, nsets: summarize_coefs' result */
    float* fallback_host;     /* host, nsets: the stored means on their way to coef_fallback */
    fngd_update_tensor_t* update_list; /* host, 2 * num_layers: the multi-tensor SGD update */
    fngd_array_ref_t* check_list;      /* host, 2 * num_layers + 1: arrays to check for NaN */

    /* exact_small_layers (per-layer mode): layers solved in every step of a reuse epoch. */
    int* small_layers;        /* host, nsmall layer indices */
    int nsmall;
    float* small_alpha;       /* backend, nsmall * max_batch: their coefficients this step */

    /* step_control: the plain mean gradient of one layer at a time and the dot products. */
    float* ones;              /* backend, max_batch floats of 1 */
    float* plain_grad;        /* backend, the largest layer's grad_len floats */
    float* dots;              /* backend, 6 * num_layers floats */
    float* dots_host;         /* host, 6 * num_layers floats */

    /* A diagnostic outside the checkpoint (fngd_stats_t). */
    double last_step_scale;
};

/* Every public entry point that takes a handle starts with this: a NULL handle has no error
 * record of its own, so the failure goes to the calling thread's (fngd_get_last_error(NULL)). */
#define FNGD_REQUIRE_HANDLE(h) \
    FNGD_REQUIRE(fngd_thread_err(), (h), FNGD_ERROR_INVALID_ARGUMENT, "handle is NULL")

#ifdef __cplusplus
}
#endif

#endif
