/*
 * libfngd: Fast Natural Gradient Descent (FNGD) optimizer kernels.
 *
 * The natural-gradient direction of a mini-batch is a weighted sum of per-sample gradients,
 *     delta = sum_i alpha_i g_i,   alpha = (K + N*lambda*I)^-1 * r,   K_ij = <g_i, g_j>,
 * with r = all ones (FNGD) or a caller-supplied vector. During the first epoch ("collect") the
 * library forms K, factors it (Cholesky) and stores alpha for every sample id; in later epochs
 * ("reuse") it gathers the stored alpha and forms the weighted sum, which costs what the plain
 * weight-gradient computation of SGD costs. See README.md and METHOD.md for the math.
 *
 * Conventions used throughout this header
 * - Every function returns an fngd_status_t. On failure, fngd_get_last_error(handle) returns a
 *   message with the file, line and the underlying BLAS/LAPACK/CUDA message, and the optimizer
 *   state (coefficients, momentum, counters, parameters, gradient buffers) is left unchanged.
 * - "Backend memory" means host memory for FNGD_BACKEND_CPU and device memory of the configured
 *   GPU for FNGD_BACKEND_CUDA. All float arrays are fp32, densely packed, row-major (C order),
 *   laid out exactly as PyTorch lays out the corresponding tensor.
 * - Streams: calls that enqueue work take an fngd_stream_t (a cudaStream_t cast to void*; NULL
 *   means the per-thread default stream for CUDA and is ignored by the CPU backend). The library
 *   never uses the legacy default stream.
 * - Ownership: the library allocates and frees everything it creates; caller buffers passed in
 *   are only borrowed for the duration of the call, except parameter and gradient buffers given
 *   in fngd_layer_desc_t, which are borrowed until fngd_destroy.
 * - Thread safety: one handle must not be used from two threads at once; distinct handles are
 *   independent and may be used concurrently.
 * - One handle, one stream at a time: a handle's workspace is shared by its calls, so calls on
 *   different streams must be ordered by the caller (synchronise, or make one stream wait for
 *   the other's event) before switching streams.
 */
#ifndef FNGD_H
#define FNGD_H

#include <stddef.h>
#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

#if defined(_WIN32)
#define FNGD_API __declspec(dllexport)
#else
#define FNGD_API __attribute__((visibility("default")))
#endif

#define FNGD_VERSION_MAJOR 0
#define FNGD_VERSION_MINOR 1
#define FNGD_VERSION_PATCH 0

/** Status codes. Never negative; FNGD_SUCCESS is 0. */
typedef enum fngd_status {
    FNGD_SUCCESS = 0,
    FNGD_ERROR_INVALID_ARGUMENT = 1,   /**< null pointer, wrong shape, bad id, bad option */
    FNGD_ERROR_INVALID_STATE = 2,      /**< call in the wrong order (e.g. add_layer after a step) */
    FNGD_ERROR_OUT_OF_MEMORY = 3,      /**< host or device allocation failed */
    FNGD_ERROR_NOT_POSITIVE_DEFINITE = 4, /**< damped Gram still singular after all retries */
    FNGD_ERROR_NONFINITE = 5,          /**< NaN or Inf in an input or gradient */
    FNGD_ERROR_BACKEND = 6,            /**< BLAS/LAPACK/CUDA/cuBLAS/cuSOLVER reported an error */
    FNGD_ERROR_NOT_SUPPORTED = 7,      /**< backend not compiled in, no device, unsupported combo */
    FNGD_ERROR_IO = 8,                 /**< file could not be read or written */
    FNGD_ERROR_CORRUPT_STATE = 9,      /**< saved state truncated, corrupted or inconsistent */
    FNGD_ERROR_VERSION_MISMATCH = 10,  /**< saved state of another format version or layer set */
    FNGD_ERROR_INTERNAL = 11           /**< a bug in libfngd; please report it */
} fngd_status_t;

typedef enum fngd_backend_kind {
    FNGD_BACKEND_CPU = 0,   /**< reference backend: OpenBLAS + LAPACKE, host memory */
    FNGD_BACKEND_CUDA = 1   /**< cuBLAS + cuSOLVER + fused kernels, device memory */
} fngd_backend_kind_t;

/** Granularity of the coefficients (METHOD.md section 3). */
typedef enum fngd_coef_mode {
    FNGD_COEF_PER_LAYER = 0, /**< block-diagonal Fisher: one K_l and alpha_l per layer */
    FNGD_COEF_GLOBAL = 1     /**< one Fisher block for the model: K = sum_l K_l, one alpha */
} fngd_coef_mode_t;

typedef enum fngd_damping_kind {
    FNGD_DAMPING_ABSOLUTE = 0,       /**< lambda = config.damping */
    FNGD_DAMPING_TRACE_RELATIVE = 1  /**< lambda = config.damping * trace(K) / N (scale-invariant) */
} fngd_damping_kind_t;

/** What the caller's output gradients (and generic per-sample gradients) are gradients of. */
typedef enum fngd_grad_convention {
    FNGD_GRAD_MEAN_LOSS = 0,  /**< of L = (1/N) sum_i l_i, as frameworks back-propagate; the
                                   library multiplies them by N to get per-sample gradients */
    FNGD_GRAD_PER_SAMPLE = 1  /**< of the per-sample losses l_i themselves */
} fngd_grad_convention_t;

/** Right-hand side r of the solve (K + N lambda I) alpha = r. */
typedef enum fngd_rhs_kind {
    FNGD_RHS_ONES = 0,   /**< FNGD: r = 1 */
    FNGD_RHS_CUSTOM = 1  /**< r is passed to every collect-phase fngd_step (e.g. iEF) */
} fngd_rhs_kind_t;

/**
 * What the collect-phase solve keeps of alpha (README "Stable coefficient sharing"). Along an
 * eigenvector v of K with eigenvalue s the plain alpha has the component (v^T r)/(s + N lambda):
 * where s << N lambda (always for a layer with fewer parameters than the batch, whose K is
 * rank-deficient) that component barely moves the epoch-one direction G alpha, yet it
 * multiplies the new per-sample gradients of every reuse epoch.
 */
typedef enum fngd_coef_filter {
    FNGD_FILTER_NONE = 0,  /**< the paper: alpha = (K + N lambda I)^-1 r */
    FNGD_FILTER_RANGE = 1  /**< alpha = (K + N lambda I)^-1 K (K + N lambda I)^-1 r: each
                                eigen-component scaled by s / (s + N lambda), so the part in the
                                null space of K is exactly zero and the part used by the
                                epoch-one direction is kept; one extra triangular solve. Used for
                                the epoch-one direction too, so every epoch applies the same
                                preconditioner */
} fngd_coef_filter_t;

/**
 * Step-size control of the direction delta, applied after it is formed and before it is
 * written or applied (README "Step-size control"). Both need the plain mean gradient g of each
 * layer: one more weighted reduction per layer and step (uniform weights), and one blocking
 * read of the dot products per step on a GPU.
 */
typedef enum fngd_step_control {
    FNGD_STEP_NONE = 0,     /**< delta as computed */
    FNGD_STEP_KL_CLIP = 1,  /**< KFAC's trust region: delta *= min(1, sqrt(kl_clip /
                                 (lr^2 sum_l <delta_l, g_l>))) with lr = config.learning_rate */
    FNGD_STEP_GRAFT = 2     /**< per layer, delta_l *= ||g_l|| / ||delta_l||: the direction of
                                 FNGD with the step length of SGD, so SGD's learning rate applies */
} fngd_step_control_t;

/** Coefficient used in the reuse phase for an id that has no stored coefficient. */
typedef enum fngd_fallback {
    FNGD_FALLBACK_STORED_MEAN = 0, /**< the mean of the stored coefficients of that set */
    FNGD_FALLBACK_UNIFORM = 1      /**< 1/N, i.e. the plain SGD weight for this sample */
} fngd_fallback_t;

/** What fngd_step produces. */
typedef enum fngd_output {
    FNGD_OUTPUT_WRITE_GRAD = 0, /**< overwrite each layer's grad buffers with the direction */
    FNGD_OUTPUT_APPLY_SGD = 1   /**< library applies SGD with momentum/weight decay in place */
} fngd_output_t;

/** How the per-sample Gram of a layer is formed (METHOD.md section 4). */
typedef enum fngd_gram_method {
    FNGD_GRAM_AUTO = 0,        /**< cost model picks per layer */
    FNGD_GRAM_MATERIALIZE = 1, /**< per-sample gradients, then K = P P^T */
    FNGD_GRAM_POSITION = 2     /**< K_ij = sum of the T x T block of (A A^T) o (E E^T) */
} fngd_gram_method_t;

typedef enum fngd_phase {
    FNGD_PHASE_COLLECT = 0, /**< this epoch forms K, factors and stores coefficients */
    FNGD_PHASE_REUSE = 1    /**< this epoch reuses stored coefficients */
} fngd_phase_t;

typedef enum fngd_layer_kind {
    FNGD_LAYER_LINEAR = 0,      /**< y = x W^T (+ b), W: out x in */
    FNGD_LAYER_CONV2D = 1,      /**< 2-D convolution, NCHW, W: C_out x C_in x kh x kw, groups 1 */
    FNGD_LAYER_NORM_AFFINE = 2, /**< y = gamma * xhat + beta, per channel (batch/layer norm) */
    FNGD_LAYER_GENERIC = 3      /**< caller supplies per-sample gradients directly */
} fngd_layer_kind_t;

/** Opaque optimizer handle. */
typedef struct fngd_handle* fngd_handle_t;
/** A cudaStream_t cast to void*; ignored by the CPU backend. */
typedef void* fngd_stream_t;

/**
 * Optimizer configuration. Always start from fngd_config_init() (or FNGD_CONFIG_INIT) so that
 * fields added in later versions get their defaults; struct_size records the caller's version.
 */
typedef struct fngd_config {
    size_t struct_size;              /**< sizeof(fngd_config_t) at the caller's compile time */
    fngd_backend_kind_t backend;     /**< default FNGD_BACKEND_CPU */
    int device;                      /**< CUDA device ordinal (CUDA backend); default 0 */
    int max_batch;                   /**< largest batch size N passed to fngd_step; required > 0 */
    int64_t num_samples;             /**< size of the id space: ids are in [0, num_samples);
                                          with position keys, at least steps/epoch * max_batch */
    fngd_coef_mode_t coef_mode;      /**< default FNGD_COEF_PER_LAYER */
    fngd_damping_kind_t damping_kind;/**< default FNGD_DAMPING_ABSOLUTE */
    double damping;                  /**< lambda (absolute) or gamma (relative); >= 0; default 0.1
                                          (README: "Choosing damping and the learning rate") */
    int max_damping_retries;         /**< retries when Cholesky fails; default 8, 0..64 */
    double damping_growth;           /**< damping multiplier per retry; default 10, > 1 */
    int recompute_every;             /**< R: recollect coefficients every R epochs; 0 = never */
    fngd_grad_convention_t grad_convention; /**< default FNGD_GRAD_MEAN_LOSS */
    fngd_rhs_kind_t rhs;             /**< default FNGD_RHS_ONES */
    fngd_fallback_t fallback;        /**< default FNGD_FALLBACK_STORED_MEAN */
    fngd_output_t output;            /**< default FNGD_OUTPUT_WRITE_GRAD */
    float learning_rate;             /**< FNGD_OUTPUT_APPLY_SGD, and FNGD_STEP_KL_CLIP (set it to
                                          the caller's optimizer's rate with
                                          fngd_set_learning_rate); default 0.1 */
    float momentum;                  /**< FNGD_OUTPUT_APPLY_SGD only; default 0.9, 0 disables */
    float weight_decay;              /**< FNGD_OUTPUT_APPLY_SGD only; default 0, not preconditioned */
    int check_finite;                /**< reject NaN/Inf inputs (one extra read of each input;
                                          on CUDA one stream synchronisation per step: set 0
                                          for a sync-free, graph-capturable reuse step);
                                          default 1 */
    size_t max_workspace_bytes;      /**< cap the cost model honours; default 1 GiB */
    fngd_coef_filter_t coef_filter;  /**< what the solve keeps of alpha; default
                                          FNGD_FILTER_RANGE */
    int exact_small_layers;          /**< per-layer mode: a layer with at most max_batch
                                          parameters (norm affine blocks, small heads) gets its
                                          Gram, factorization and solve in every step, reuse
                                          epochs included, instead of stored coefficients; its
                                          d <= N makes that cheap. 0 or 1; default 1 */
    fngd_step_control_t step_control;/**< default FNGD_STEP_KL_CLIP (then keep learning_rate
                                          equal to the optimizer's: fngd_set_learning_rate) */
    double kl_clip;                  /**< FNGD_STEP_KL_CLIP bound, > 0; default 1e-3 */
} fngd_config_t;

#define FNGD_CONFIG_INIT                                                                     \
    {                                                                                        \
        sizeof(fngd_config_t), FNGD_BACKEND_CPU, 0, 0, 0, FNGD_COEF_PER_LAYER,               \
            FNGD_DAMPING_ABSOLUTE, 0.1, 8, 10.0, 0, FNGD_GRAD_MEAN_LOSS, FNGD_RHS_ONES,      \
            FNGD_FALLBACK_STORED_MEAN, FNGD_OUTPUT_WRITE_GRAD, 0.1f, 0.9f, 0.0f, 1,          \
            ((size_t)1 << 30), FNGD_FILTER_RANGE, 1, FNGD_STEP_KL_CLIP, 1e-3                  \
    }

/**
 * A layer to precondition. Fill it with one of the fngd_*_desc() helpers, then set the buffers.
 * Fields not used by the layer's kind are ignored. Buffers are backend memory, borrowed until
 * fngd_destroy, and must not overlap each other:
 * - weight, bias: the parameters. Needed only with FNGD_OUTPUT_APPLY_SGD (updated in place).
 * - grad_weight, grad_bias: receive the direction with FNGD_OUTPUT_WRITE_GRAD (overwritten).
 * Shapes (PyTorch layouts):
 *   LINEAR       weight out x in, bias out
 *   CONV2D       weight C_out x C_in x kh x kw, bias C_out
 *   NORM_AFFINE  weight (scale, gamma) C, bias (shift, beta) C
 *   GENERIC      weight num_params; bias unused
 */
typedef struct fngd_layer_desc {
    size_t struct_size;
    fngd_layer_kind_t kind;
    int has_bias;        /**< LINEAR/CONV2D: bias present; NORM_AFFINE: shift (beta) present */
    /* LINEAR: y[n,t,:] = W x[n,t,:] (+ b) over `positions` positions per sample (1, or tokens) */
    int in_features, out_features, positions;
    /* CONV2D */
    int in_channels, out_channels, in_h, in_w, kernel_h, kernel_w;
    int stride_h, stride_w, pad_h, pad_w, dilation_h, dilation_w;
    /* NORM_AFFINE: C channels, T positions per sample (H*W for batch norm, tokens for layer
       norm); channels_last = 0: arrays are N x C x T (NCHW); 1: N x T x C (layer norm). */
    int num_features, norm_positions, channels_last;
    /* GENERIC */
    int64_t num_params;
    fngd_gram_method_t gram_method; /**< default FNGD_GRAM_AUTO */
    float* weight;
    float* bias;
    float* grad_weight;
    float* grad_bias;
} fngd_layer_desc_t;

/**
 * One layer's data for one step; backend memory, read only, borrowed during the call.
 *   LINEAR       input N x T x in, grad_output N x T x out (T = positions)
 *   CONV2D       input N x C_in x H x W, grad_output N x C_out x H_out x W_out
 *   NORM_AFFINE  input = normalized input xhat, grad_output = dL/dy, both N x C x T
 *                (or N x T x C with channels_last)
 *   GENERIC      input = per-sample gradients N x num_params; grad_output unused (NULL)
 * Output gradients follow config.grad_convention.
 */
typedef struct fngd_layer_batch {
    const float* input;
    const float* grad_output;
} fngd_layer_batch_t;

/** Counters and coefficient statistics; see fngd_get_stats. */
typedef struct fngd_stats {
    size_t struct_size;
    int epoch;                   /**< 0-based epoch number */
    fngd_phase_t phase;          /**< phase of the current epoch */
    int64_t steps_total;         /**< successful fngd_step calls */
    int64_t steps_in_epoch;
    int64_t factorizations;      /**< successful Cholesky factorizations */
    int64_t damping_retries;     /**< Cholesky attempts that failed and were retried */
    int64_t fallback_ids;        /**< reuse-phase samples without a stored coefficient */
    int64_t rejected_steps;      /**< fngd_step calls refused for bad input */
    int64_t coefs_stored;        /**< ids with a stored coefficient */
    double coef_min, coef_max, coef_mean; /**< over all stored coefficients of all sets */
    double last_damping;         /**< lambda actually used by the last factorization (per-layer
                                      mode: that of the last layer of the last collect step) */
    double last_step_scale;      /**< step_control: the factor applied to the last step's
                                      direction (graft: the mean over layers); 1 with
                                      FNGD_STEP_NONE or before any step; a diagnostic that
                                      checkpoints do not carry */
} fngd_stats_t;

/* ---------------------------------------------------------------------------------------- */
/* Version, status strings, configuration                                                    */

/** Library version; any argument may be NULL. */
FNGD_API fngd_status_t fngd_get_version(int* major, int* minor, int* patch);
/** Static string for a status code; never NULL. */
FNGD_API const char* fngd_status_string(fngd_status_t status);
/**
 * Message of the last failed call on `handle` (file:line and cause), or "" if none. With
 * handle == NULL: the last failure of a call on this thread that had no handle to record it in
 * (fngd_create with invalid arguments, say). The string stays valid until the next call on
 * the same handle (or thread).
 */
FNGD_API const char* fngd_get_last_error(fngd_handle_t handle);
/** Fill *config with the defaults (same as FNGD_CONFIG_INIT). */
FNGD_API fngd_status_t fngd_config_init(fngd_config_t* config);
/** Is this backend compiled in and usable (for CUDA: a device is present)? Sets *available. */
FNGD_API fngd_status_t fngd_backend_available(fngd_backend_kind_t backend, int* available);

/* Layer descriptors with defaults (stride 1, no padding, dilation 1, AUTO Gram method). */
FNGD_API fngd_layer_desc_t fngd_linear_desc(int in_features, int out_features, int has_bias);
FNGD_API fngd_layer_desc_t fngd_conv2d_desc(int in_channels, int out_channels, int in_h, int in_w,
                                            int kernel_h, int kernel_w, int has_bias);
FNGD_API fngd_layer_desc_t fngd_norm_affine_desc(int num_features, int positions, int has_shift);
FNGD_API fngd_layer_desc_t fngd_generic_desc(int64_t num_params);

/* ---------------------------------------------------------------------------------------- */
/* Lifecycle                                                                                 */

/**
 * Create a handle. Copies *config (validated). Allocates host bookkeeping; backend memory for
 * coefficients, momentum and workspace is allocated by the first fngd_step (or by
 * fngd_prepare). On failure *handle is NULL and fngd_get_last_error(NULL) explains why.
 */
FNGD_API fngd_status_t fngd_create(const fngd_config_t* config, fngd_handle_t* handle);
/** Free everything the handle owns. Blocks until its pending GPU work is done. NULL is a no-op. */
FNGD_API fngd_status_t fngd_destroy(fngd_handle_t handle);

/**
 * Register a layer; *layer_id (may be NULL) receives its index (0, 1, ... in call order). Only
 * before the first fngd_step / fngd_prepare. The desc is copied; its buffers are borrowed.
 */
FNGD_API fngd_status_t fngd_add_layer(fngd_handle_t handle, const fngd_layer_desc_t* desc,
                                      int* layer_id);
/** Replace a layer's parameter/gradient buffers (e.g. after the caller reallocated them). */
FNGD_API fngd_status_t fngd_set_layer_buffers(fngd_handle_t handle, int layer_id, float* weight,
                                              float* bias, float* grad_weight, float* grad_bias);
/** Number of registered layers. */
FNGD_API fngd_status_t fngd_get_num_layers(fngd_handle_t handle, int* num_layers);
/** The Gram method the cost model chose (or the one forced in the desc) for a layer. NORM_AFFINE
 *  and GENERIC layers always report FNGD_GRAM_MATERIALIZE: their per-sample gradients are given
 *  or trivial, so a forced POSITION is ignored for them. */
FNGD_API fngd_status_t fngd_get_layer_gram_method(fngd_handle_t handle, int layer_id,
                                                  fngd_gram_method_t* method);

/**
 * Freeze the layer set and allocate all backend memory (coefficient table, momentum,
 * workspace unless the caller provided one). Optional: the first fngd_step does it. Blocking.
 */
FNGD_API fngd_status_t fngd_prepare(fngd_handle_t handle);
/** Workspace bytes a step needs with the registered layers (freezes nothing). */
FNGD_API fngd_status_t fngd_get_workspace_size(fngd_handle_t handle, size_t* bytes);
/**
 * Give the library a caller-owned workspace of `bytes` (>= fngd_get_workspace_size) in backend
 * memory, 256-byte aligned; borrowed until replaced or fngd_destroy. Before fngd_prepare only.
 */
FNGD_API fngd_status_t fngd_set_workspace(fngd_handle_t handle, void* workspace, size_t bytes);

/* ---------------------------------------------------------------------------------------- */
/* Training                                                                                  */

/**
 * One optimizer step on a batch of `batch_size` samples (1 <= N <= config.max_batch).
 *
 * sample_ids: host memory, N distinct ids in [0, num_samples), the data-set index of each
 *   sample; or NULL to key by batch position (key = steps_in_epoch * max_batch + i), which is
 *   right only when every epoch visits the data in the same order. (A CUDA graph captured
 *   from a step freezes that key offset, and the ids staged at capture time.)
 * batches: array of fngd_get_num_layers entries, one per layer in registration order.
 * rhs: N floats in backend memory with FNGD_RHS_CUSTOM during collect phase; else NULL.
 *
 * Collect phase: forms each layer's per-sample Gram, damps, factors, solves for alpha, stores
 * alpha by id and produces the direction. Reuse phase: gathers stored alpha (fallback for
 * unseen ids, counted) and produces the direction as one weighted reduction per layer.
 * The direction goes to the grad buffers or is applied as SGD (config.output).
 *
 * Blocking: the CPU backend returns when done. In the collect phase the CUDA backend
 * synchronises `stream` once per step to read the Cholesky status of all layers (per-layer mode
 * factors every layer's Gram in one batched call), plus once per damping retry. In the reuse
 * phase it does not synchronise, except for the input check when config.check_finite is 1.
 * On any error nothing is changed (no coefficient, buffer, momentum or counter is written),
 * except the diagnostic counter stats.rejected_steps, which counts refused calls.
 */
FNGD_API fngd_status_t fngd_step(fngd_handle_t handle, int batch_size, const int64_t* sample_ids,
                                 const fngd_layer_batch_t* batches, const float* rhs,
                                 fngd_stream_t stream);

/**
 * End the current epoch: the next epoch is a collect epoch if R > 0 and its number is a
 * multiple of R, else a reuse epoch. After a collect epoch, refreshes the fallback means.
 * Blocking (synchronises `stream`). Fails with INVALID_STATE if no step was taken this epoch.
 */
FNGD_API fngd_status_t fngd_end_epoch(fngd_handle_t handle, fngd_stream_t stream);

/**
 * Global mode, reuse phase: loss weights w_i = N * alpha_i (written to `weights`, N floats in
 * backend memory) such that back-propagating the mean-loss (1/N) sum_i w_i l_i gives exactly
 * the FNGD direction; later epochs then need one ordinary backward pass and no fngd_step.
 * Unseen ids get the fallback and are counted. INVALID_STATE in per-layer mode or collect phase.
 * It counts as this epoch's step (steps_total and steps_in_epoch grow by one, so position keys
 * advance), since in this mode it replaces fngd_step.
 */
FNGD_API fngd_status_t fngd_get_loss_weights(fngd_handle_t handle, int batch_size,
                                             const int64_t* sample_ids, float* weights,
                                             fngd_stream_t stream);

/** Change the SGD learning rate (schedules). Takes effect at the next step. */
FNGD_API fngd_status_t fngd_set_learning_rate(fngd_handle_t handle, float learning_rate);
/**
 * Current epoch, phase, counters and coefficient statistics. Blocking: reads after the work
 * enqueued on the stream of the last fngd_step / fngd_end_epoch / fngd_get_loss_weights.
 */
FNGD_API fngd_status_t fngd_get_stats(fngd_handle_t handle, fngd_stats_t* stats);
/**
 * Copy stored coefficients for host ids[0..n) of coefficient set `set` (layer index in
 * per-layer mode, 0 in global mode) into host `coefs`; ids never stored give NaN. Blocking,
 * ordered after the last enqueuing call's stream like fngd_get_stats.
 */
FNGD_API fngd_status_t fngd_get_coefficients(fngd_handle_t handle, int set, int64_t n,
                                             const int64_t* ids, float* coefs);

/* ---------------------------------------------------------------------------------------- */
/* Checkpoints: the complete optimizer state (configuration, epoch and phase, coefficient     */
/* table, fallback means, momentum buffers, counters). Parameters themselves are the caller's. */
/* Format: versioned little-endian binary with a CRC-32 checksum, documented in README.md.     */
/* Loading validates the whole image before touching anything: a file of another format      */
/* version, another configuration or layer set, or a truncated or corrupted one returns a      */
/* clear status and leaves the live state unchanged. All of these calls block, ordered after   */
/* the stream of the last enqueuing call (as fngd_get_stats).                                   */

/** Bytes fngd_save_state needs for this handle's current state. */
FNGD_API fngd_status_t fngd_state_size(fngd_handle_t handle, size_t* bytes);
/** Serialise the state into caller memory (host) of `bytes`; *written (may be NULL) = size. */
FNGD_API fngd_status_t fngd_save_state(fngd_handle_t handle, void* buffer, size_t bytes,
                                       size_t* written);
/**
 * Restore a state produced by fngd_save_state into a handle created with the same
 * configuration and the same layers (registered in the same order); buffer is host memory.
 */
FNGD_API fngd_status_t fngd_load_state(fngd_handle_t handle, const void* buffer, size_t bytes);
/** Save to a file atomically: written to "<path>.tmp.<pid>", flushed (fsync), then renamed. */
FNGD_API fngd_status_t fngd_save_file(fngd_handle_t handle, const char* path);
/** Load a file written by fngd_save_file (same rules as fngd_load_state). */
FNGD_API fngd_status_t fngd_load_file(fngd_handle_t handle, const char* path);

#ifdef __cplusplus
}
#endif

#endif /* FNGD_H */
