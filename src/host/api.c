/* Public entry points that do no numerical work: version, status strings, configuration,
 * layer descriptors, handle lifecycle and layer registration. */
#include <math.h>
#include <stddef.h>
#include <string.h>

#include "alloc.h"
#include "call.h"
#include "epoch.h"
#include "handle.h"
#include "nvtx_range.h"
#include "prepare.h"

/* Failures of calls that have no handle to record them in (fngd_create, NULL handles). */
static _Thread_local fngd_err_t g_thread_err;

fngd_err_t* fngd_thread_err(void) { return &g_thread_err; }

fngd_status_t fngd_get_version(int* major, int* minor, int* patch) {
    if (major) *major = FNGD_VERSION_MAJOR;
    if (minor) *minor = FNGD_VERSION_MINOR;
    if (patch) *patch = FNGD_VERSION_PATCH;
    return FNGD_SUCCESS;
}

const char* fngd_status_string(fngd_status_t status) {
    switch (status) {
        case FNGD_SUCCESS: return "success";
        case FNGD_ERROR_INVALID_ARGUMENT: return "invalid argument";
        case FNGD_ERROR_INVALID_STATE: return "invalid state (call out of order)";
        case FNGD_ERROR_OUT_OF_MEMORY: return "out of memory";
        case FNGD_ERROR_NOT_POSITIVE_DEFINITE: return "damped Gram matrix not positive definite";
        case FNGD_ERROR_NONFINITE: return "NaN or Inf in the input";
        case FNGD_ERROR_BACKEND: return "backend library error";
        case FNGD_ERROR_NOT_SUPPORTED: return "not supported by this build or device";
        case FNGD_ERROR_IO: return "file input/output error";
        case FNGD_ERROR_CORRUPT_STATE: return "saved state is corrupt";
        case FNGD_ERROR_VERSION_MISMATCH: return "saved state does not match this version or configuration";
        case FNGD_ERROR_INTERNAL: return "internal error";
    }
    return "unknown status";
}

const char* fngd_get_last_error(fngd_handle_t handle) {
    return handle ? handle->err.msg : g_thread_err.msg;
}

fngd_status_t fngd_config_init(fngd_config_t* config) {
    if (!config) return FNGD_FAIL(&g_thread_err, FNGD_ERROR_INVALID_ARGUMENT, "config is NULL");
    fngd_config_t defaults = FNGD_CONFIG_INIT;
    *config = defaults;
    return FNGD_SUCCESS;
}

fngd_status_t fngd_backend_available(fngd_backend_kind_t backend, int* available) {
    if (!available) return FNGD_FAIL(&g_thread_err, FNGD_ERROR_INVALID_ARGUMENT, "available is NULL");
    *available = backend == FNGD_BACKEND_CPU ? 1
               : backend == FNGD_BACKEND_CUDA ? (fngd_cuda_backend_ops() && fngd_cuda_device_available())
               : 0;
    return FNGD_SUCCESS;
}

/* ---- layer descriptors -------------------------------------------------------------------- */

static fngd_layer_desc_t desc_defaults(fngd_layer_kind_t kind) {
    fngd_layer_desc_t d;
    memset(&d, 0, sizeof d);
    d.struct_size = sizeof d;
    d.kind = kind;
    d.positions = 1;
    d.stride_h = d.stride_w = 1;
    d.dilation_h = d.dilation_w = 1;
    d.norm_positions = 1;
    d.gram_method = FNGD_GRAM_AUTO;
    return d;
}

fngd_layer_desc_t fngd_linear_desc(int in_features, int out_features, int has_bias) {
    fngd_layer_desc_t d = desc_defaults(FNGD_LAYER_LINEAR);
    d.in_features = in_features;
    d.out_features = out_features;
    d.has_bias = has_bias;
    return d;
}

fngd_layer_desc_t fngd_conv2d_desc(int in_channels, int out_channels, int in_h, int in_w,
                                   int kernel_h, int kernel_w, int has_bias) {
    fngd_layer_desc_t d = desc_defaults(FNGD_LAYER_CONV2D);
    d.in_channels = in_channels;
    d.out_channels = out_channels;
    d.in_h = in_h;
    d.in_w = in_w;
    d.kernel_h = kernel_h;
    d.kernel_w = kernel_w;
    d.has_bias = has_bias;
    return d;
}

fngd_layer_desc_t fngd_norm_affine_desc(int num_features, int positions, int has_shift) {
    fngd_layer_desc_t d = desc_defaults(FNGD_LAYER_NORM_AFFINE);
    d.num_features = num_features;
    d.norm_positions = positions;
    d.has_bias = has_shift;
    return d;
}

fngd_layer_desc_t fngd_embedding_desc(int num_embeddings, int embedding_dim, int tokens) {
    fngd_layer_desc_t d = desc_defaults(FNGD_LAYER_EMBEDDING);
    d.num_embeddings = num_embeddings;
    d.embedding_dim = embedding_dim;
    d.positions = tokens;
    return d;
}

fngd_layer_desc_t fngd_generic_desc(int64_t num_params) {
    fngd_layer_desc_t d = desc_defaults(FNGD_LAYER_GENERIC);
    d.num_params = num_params;
    return d;
}

/* ---- configuration ------------------------------------------------------------------------ */

static fngd_status_t validate_config(const fngd_config_t* c, fngd_err_t* err) {
#define CHECK(cond, ...) FNGD_REQUIRE(err, cond, FNGD_ERROR_INVALID_ARGUMENT, __VA_ARGS__)
    CHECK(c->backend == FNGD_BACKEND_CPU || c->backend == FNGD_BACKEND_CUDA, "unknown backend %d",
          (int)c->backend);
    CHECK(c->max_batch > 0 && c->max_batch <= (1 << 16), "max_batch must be in 1..65536, got %d",
          c->max_batch);
    CHECK(c->num_samples > 0, "num_samples must be > 0 (size of the id space), got %lld",
          (long long)c->num_samples);
    CHECK(c->coef_mode == FNGD_COEF_PER_LAYER || c->coef_mode == FNGD_COEF_GLOBAL,
          "unknown coef_mode %d", (int)c->coef_mode);
    CHECK(c->damping_kind == FNGD_DAMPING_ABSOLUTE || c->damping_kind == FNGD_DAMPING_TRACE_RELATIVE,
          "unknown damping_kind %d", (int)c->damping_kind);
    CHECK(isfinite(c->damping) && c->damping >= 0, "damping must be finite and >= 0, got %g",
          c->damping);
    CHECK(c->max_damping_retries >= 0 && c->max_damping_retries <= 64,
          "max_damping_retries must be in 0..64, got %d", c->max_damping_retries);
    CHECK(isfinite(c->damping_growth) && c->damping_growth > 1,
          "damping_growth must be > 1, got %g", c->damping_growth);
    CHECK(c->recompute_every >= 0, "recompute_every must be >= 0, got %d", c->recompute_every);
    CHECK(c->grad_convention == FNGD_GRAD_MEAN_LOSS || c->grad_convention == FNGD_GRAD_PER_SAMPLE,
          "unknown grad_convention %d", (int)c->grad_convention);
    CHECK(c->rhs == FNGD_RHS_ONES || c->rhs == FNGD_RHS_CUSTOM, "unknown rhs %d", (int)c->rhs);
    CHECK(c->fallback == FNGD_FALLBACK_STORED_MEAN || c->fallback == FNGD_FALLBACK_UNIFORM,
          "unknown fallback %d", (int)c->fallback);
    CHECK(c->output == FNGD_OUTPUT_WRITE_GRAD || c->output == FNGD_OUTPUT_APPLY_SGD,
          "unknown output %d", (int)c->output);
    CHECK(isfinite(c->learning_rate) && c->learning_rate >= 0, "learning_rate must be >= 0");
    CHECK(isfinite(c->momentum) && c->momentum >= 0 && c->momentum < 1,
          "momentum must be in [0, 1)");
    CHECK(isfinite(c->weight_decay) && c->weight_decay >= 0, "weight_decay must be >= 0");
    CHECK(c->check_finite == 0 || c->check_finite == 1, "check_finite must be 0 or 1");
    CHECK(c->max_workspace_bytes > 0, "max_workspace_bytes must be > 0");
    CHECK(c->coef_filter == FNGD_FILTER_NONE || c->coef_filter == FNGD_FILTER_RANGE,
          "unknown coef_filter %d", (int)c->coef_filter);
    CHECK(c->exact_small_layers == 0 || c->exact_small_layers == 1,
          "exact_small_layers must be 0 or 1");
    CHECK(c->step_control == FNGD_STEP_NONE || c->step_control == FNGD_STEP_KL_CLIP ||
              c->step_control == FNGD_STEP_GRAFT,
          "unknown step_control %d", (int)c->step_control);
    CHECK(isfinite(c->kl_clip) && c->kl_clip > 0, "kl_clip must be finite and > 0, got %g",
          c->kl_clip);
    CHECK(c->allow_tf32 == 0 || c->allow_tf32 == 1,
          "allow_tf32 must be 0 (FP32) or 1 (TF32 tensor cores in the CUDA weight-gradient "
          "reductions), got %d", c->allow_tf32);
#undef CHECK
    return FNGD_SUCCESS;
}

static const fngd_backend_ops_t* backend_ops(fngd_backend_kind_t kind) {
    return kind == FNGD_BACKEND_CUDA ? fngd_cuda_backend_ops() : fngd_cpu_backend_ops();
}

/* Size of fngd_config_t in 0.1.0, before coef_filter: a caller compiled against that header. */
#define FNGD_CONFIG_SIZE_0_1 offsetof(fngd_config_t, coef_filter)

/* The caller's config as this version's struct: a smaller struct_size of an older release
 * keeps the fields that release had and gets the defaults for the ones it lacks (as NCCL's
 * versioned config does). Any other size is refused. */
static fngd_status_t complete_config(const fngd_config_t* in, fngd_config_t* out,
                                     fngd_err_t* err) {
    size_t size = in->struct_size;
    FNGD_REQUIRE(err, size == sizeof(fngd_config_t) || size == FNGD_CONFIG_SIZE_0_1,
                 FNGD_ERROR_INVALID_ARGUMENT,
                 "config.struct_size is %zu; this library takes %zu (this version) or %zu "
                 "(0.1.0): start from fngd_config_init()",
                 size, sizeof(fngd_config_t), (size_t)FNGD_CONFIG_SIZE_0_1);
    fngd_config_init(out);
    memcpy(out, in, size);
    out->struct_size = sizeof(fngd_config_t);
    return FNGD_SUCCESS;
}

/* ---- lifecycle ---------------------------------------------------------------------------- */

fngd_status_t fngd_create(const fngd_config_t* config, fngd_handle_t* handle) {
    fngd_err_t* err = &g_thread_err;
    fngd_err_clear(err);
    FNGD_REQUIRE(err, handle, FNGD_ERROR_INVALID_ARGUMENT, "handle (output) is NULL");
    *handle = NULL;
    FNGD_REQUIRE(err, config, FNGD_ERROR_INVALID_ARGUMENT, "config is NULL");
    fngd_config_t full;
    FNGD_TRY(complete_config(config, &full, err));
    FNGD_TRY(validate_config(&full, err));
    const fngd_backend_ops_t* ops = backend_ops(full.backend);
    FNGD_REQUIRE(err, ops, FNGD_ERROR_NOT_SUPPORTED,
                 "the CUDA backend is not compiled into this build of libfngd");
    fngd_nvtx_push("fngd_create");
    fngd_status_t s = FNGD_SUCCESS;
    struct fngd_handle* h = fngd_host_alloc(sizeof *h, 64);
    if (!h) {
        s = FNGD_FAIL(err, FNGD_ERROR_OUT_OF_MEMORY, "cannot allocate the handle");
        goto cleanup;
    }
    h->cfg = full;
    h->ops = ops;
    h->last_step_scale = 1.0;
    h->counters.phase = fngd_epoch_phase(&h->cfg, 0);
    FNGD_TRY_GOTO(s, ops->create(&h->cfg, &h->ctx, err));
    *handle = h;
    h = NULL;
cleanup:
    fngd_host_free(h);
    fngd_nvtx_pop();
    return s;
}

fngd_status_t fngd_destroy(fngd_handle_t handle) {
    if (!handle) return FNGD_SUCCESS;
    fngd_nvtx_push("fngd_destroy");
    /* The handle's work is ordered on the stream of its last enqueuing call: wait for that
     * stream only (a failure here, e.g. a stream the caller already destroyed, is ignored:
     * destroy cannot fail). */
    if (handle->prepared) {
        fngd_call_t call;
        if (fngd_call_begin(handle, handle->last_stream, &call) == FNGD_SUCCESS)
            (void)handle->ops->synchronize(handle->ctx, &call);
        fngd_call_end(handle, &call);
    }
    fngd_release_backend_memory(handle);
    if (handle->ctx) handle->ops->destroy(handle->ctx);
    fngd_host_free(handle->layers);
    fngd_host_free(handle);
    fngd_nvtx_pop();
    return FNGD_SUCCESS;
}

/* ---- layers ------------------------------------------------------------------------------- */

fngd_status_t fngd_add_layer(fngd_handle_t h, const fngd_layer_desc_t* desc, int* layer_id) {
    FNGD_REQUIRE_HANDLE(h);
    fngd_err_t* err = &h->err;
    FNGD_REQUIRE(err, desc, FNGD_ERROR_INVALID_ARGUMENT, "desc is NULL");
    FNGD_REQUIRE(err, desc->struct_size == sizeof(fngd_layer_desc_t), FNGD_ERROR_INVALID_ARGUMENT,
                 "desc.struct_size is %zu, expected %zu: start from an fngd_*_desc() helper",
                 desc->struct_size, sizeof(fngd_layer_desc_t));
    FNGD_REQUIRE(err, !h->prepared, FNGD_ERROR_INVALID_STATE,
                 "layers must be added before the first fngd_step / fngd_prepare");
    fngd_layer_t layer;
    char msg[256];
    fngd_status_t s = fngd_layer_init(&layer, desc, msg, sizeof msg);
    FNGD_REQUIRE(err, s == FNGD_SUCCESS, s, "layer %d: %s", h->num_layers, msg);
    if (h->num_layers == h->layers_capacity) {
        int cap = h->layers_capacity ? 2 * h->layers_capacity : 8;
        fngd_layer_t* grown = fngd_host_alloc((size_t)cap * sizeof *grown, 64);
        FNGD_REQUIRE(err, grown, FNGD_ERROR_OUT_OF_MEMORY, "cannot grow the layer table");
        if (h->num_layers) memcpy(grown, h->layers, (size_t)h->num_layers * sizeof *grown);
        fngd_host_free(h->layers);
        h->layers = grown;
        h->layers_capacity = cap;
    }
    layer.method = fngd_choose_gram_method(&layer, h->cfg.max_batch, h->cfg.max_workspace_bytes);
    h->layers[h->num_layers] = layer;
    if (layer_id) *layer_id = h->num_layers;
    h->num_layers++;
    return FNGD_SUCCESS;
}

fngd_status_t fngd_set_layer_buffers(fngd_handle_t h, int layer_id, float* weight, float* bias,
                                     float* grad_weight, float* grad_bias) {
    FNGD_REQUIRE_HANDLE(h);
    FNGD_REQUIRE(&h->err, layer_id >= 0 && layer_id < h->num_layers, FNGD_ERROR_INVALID_ARGUMENT,
                 "layer_id %d out of range (%d layers)", layer_id, h->num_layers);
    fngd_layer_desc_t* d = &h->layers[layer_id].desc;
    d->weight = weight;
    d->bias = bias;
    d->grad_weight = grad_weight;
    d->grad_bias = grad_bias;
    return FNGD_SUCCESS;
}

fngd_status_t fngd_get_num_layers(fngd_handle_t h, int* num_layers) {
    FNGD_REQUIRE_HANDLE(h);
    FNGD_REQUIRE(&h->err, num_layers, FNGD_ERROR_INVALID_ARGUMENT, "num_layers is NULL");
    *num_layers = h->num_layers;
    return FNGD_SUCCESS;
}

fngd_status_t fngd_get_layer_gram_method(fngd_handle_t h, int layer_id, fngd_gram_method_t* method) {
    FNGD_REQUIRE_HANDLE(h);
    FNGD_REQUIRE(&h->err, method, FNGD_ERROR_INVALID_ARGUMENT, "method is NULL");
    FNGD_REQUIRE(&h->err, layer_id >= 0 && layer_id < h->num_layers, FNGD_ERROR_INVALID_ARGUMENT,
                 "layer_id %d out of range (%d layers)", layer_id, h->num_layers);
    *method = h->layers[layer_id].method;
    return FNGD_SUCCESS;
}

fngd_status_t fngd_set_learning_rate(fngd_handle_t h, float learning_rate) {
    FNGD_REQUIRE_HANDLE(h);
    FNGD_REQUIRE(&h->err, isfinite(learning_rate) && learning_rate >= 0,
                 FNGD_ERROR_INVALID_ARGUMENT, "learning_rate must be finite and >= 0");
    h->cfg.learning_rate = learning_rate;
    return FNGD_SUCCESS;
}
