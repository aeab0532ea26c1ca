/* Freezing the layer set and allocating the backend memory a step needs. */
#include "alloc.h"
#include "call.h"
#include "handle.h"
#include "nvtx_range.h"
#include "prepare.h"

static size_t align256(size_t n) { return (n + 255) & ~(size_t)255; }

/* The one workspace query over every layer and the solve of all coefficient sets (a reuse
 * step's exact small layers solve fewer). */
static fngd_status_t workspace_need(fngd_handle_t h, size_t* need, const fngd_call_t* call) {
    int nsets = h->cfg.coef_mode == FNGD_COEF_GLOBAL ? 1 : h->num_layers;
    FNGD_TRY(h->ops->workspace_bytes(h->ctx, h->layers, h->num_layers, h->cfg.max_batch, nsets,
                                     need, call));
    *need = align256(*need);
    return FNGD_SUCCESS;
}

static fngd_status_t workspace_size_in_call(fngd_handle_t h, size_t* bytes) {
    fngd_call_t call;
    fngd_status_t s = fngd_call_begin(h, NULL, &call);
    if (s == FNGD_SUCCESS) s = workspace_need(h, bytes, &call);
    fngd_call_end(h, &call);
    return s;
}

fngd_status_t fngd_get_workspace_size(fngd_handle_t h, size_t* bytes) {
    FNGD_REQUIRE_HANDLE(h);
    FNGD_REQUIRE(&h->err, bytes, FNGD_ERROR_INVALID_ARGUMENT, "bytes is NULL");
    FNGD_REQUIRE(&h->err, h->num_layers > 0, FNGD_ERROR_INVALID_STATE, "no layer registered yet");
    return workspace_size_in_call(h, bytes);
}

fngd_status_t fngd_set_workspace(fngd_handle_t h, void* workspace, size_t bytes) {
    FNGD_REQUIRE_HANDLE(h);
    FNGD_REQUIRE(&h->err, !h->prepared, FNGD_ERROR_INVALID_STATE,
                 "the workspace must be set before fngd_prepare / the first fngd_step");
    FNGD_REQUIRE(&h->err, workspace, FNGD_ERROR_INVALID_ARGUMENT, "workspace is NULL");
    FNGD_REQUIRE(&h->err, ((uintptr_t)workspace & 255) == 0, FNGD_ERROR_INVALID_ARGUMENT,
                 "workspace must be 256-byte aligned");
    FNGD_REQUIRE(&h->err, h->num_layers > 0, FNGD_ERROR_INVALID_STATE,
                 "register the layers first (the size depends on them)");
    size_t need = 0;
    FNGD_TRY(workspace_size_in_call(h, &need));
    FNGD_REQUIRE(&h->err, bytes >= need, FNGD_ERROR_INVALID_ARGUMENT,
                 "workspace of %zu bytes is too small: %zu needed (fngd_get_workspace_size)",
                 bytes, need);
    h->workspace = workspace;
    h->workspace_bytes = bytes;
    h->workspace_owned = 0;
    return FNGD_SUCCESS;
}

static void release(fngd_handle_t h, void** p) {
    if (*p) h->ops->free(h->ctx, *p);
    *p = NULL;
}

void fngd_release_backend_memory(fngd_handle_t h) {
    if (!h->ctx) return;
    release(h, (void**)&h->coef_table);
    release(h, (void**)&h->coef_seen);
    release(h, (void**)&h->coef_fallback);
    release(h, (void**)&h->fallback_count);
    release(h, (void**)&h->gram);
    release(h, (void**)&h->alpha);
    release(h, (void**)&h->small_alpha);
    release(h, (void**)&h->ones);
    release(h, (void**)&h->plain_grad);
    release(h, (void**)&h->dots);
    for (int l = 0; l < h->num_layers; ++l) {
        release(h, (void**)&h->layers[l].momentum);
        release(h, (void**)&h->layers[l].direction);
    }
    if (h->workspace_owned) release(h, &h->workspace);
    h->workspace_owned = 0;
    fngd_host_free(h->id_scratch);
    fngd_host_free(h->solve_scratch);
    fngd_host_free(h->solve_info);
    fngd_host_free(h->coef_summary);
    fngd_host_free(h->fallback_host);
    fngd_host_free(h->update_list);
    fngd_host_free(h->check_list);
    fngd_host_free(h->small_layers);
    fngd_host_free(h->dots_host);
    h->small_layers = NULL;
    h->dots_host = NULL;
    h->nsmall = 0;
    h->update_list = NULL;
    h->check_list = NULL;
    h->id_scratch = NULL;
    h->solve_scratch = NULL;
    h->solve_info = NULL;
    h->coef_summary = NULL;
    h->fallback_host = NULL;
    h->prepared = 0;
}

static fngd_status_t alloc_backend(fngd_handle_t h, void** p, size_t bytes,
                                   const fngd_call_t* call) {
    return h->ops->alloc(h->ctx, bytes, p, call);
}

/* A layer whose per-sample gradients have at most max_batch entries has a rank-deficient Gram
 * at full batches, and its exact solve is cheap: exact_small_layers solves it every step. */
static int is_small_layer(fngd_handle_t h, int l) {
    return h->cfg.coef_mode == FNGD_COEF_PER_LAYER && h->cfg.exact_small_layers &&
           h->layers[l].grad_len <= h->cfg.max_batch;
}

/* The list of small layers and the buffers of the step-size control. */
static fngd_status_t prepare_extras(fngd_handle_t h, const fngd_call_t* call) {
    const fngd_config_t* c = &h->cfg;
    size_t N = (size_t)c->max_batch, L = (size_t)h->num_layers;
    h->small_layers = fngd_host_alloc(L * sizeof(int), 64);
    FNGD_REQUIRE(&h->err, h->small_layers, FNGD_ERROR_OUT_OF_MEMORY, "cannot allocate host scratch");
    h->nsmall = 0;
    for (int l = 0; l < h->num_layers; ++l)
        if (is_small_layer(h, l)) h->small_layers[h->nsmall++] = l;
    if (h->nsmall > 0)
        FNGD_TRY(alloc_backend(h, (void**)&h->small_alpha, (size_t)h->nsmall * N * sizeof(float),
                               call));
    if (c->step_control == FNGD_STEP_NONE) return FNGD_SUCCESS;
    int64_t longest = 0;
    for (int l = 0; l < h->num_layers; ++l)
        if (h->layers[l].grad_len > longest) longest = h->layers[l].grad_len;
    FNGD_TRY(alloc_backend(h, (void**)&h->plain_grad, (size_t)longest * sizeof(float), call));
    FNGD_TRY(alloc_backend(h, (void**)&h->dots, 6 * L * sizeof(float), call));
    FNGD_TRY(alloc_backend(h, (void**)&h->ones, N * sizeof(float), call));
    h->dots_host = fngd_host_alloc(6 * L * sizeof(float), 64);
    float* ones = fngd_host_alloc(N * sizeof(float), 64);
    fngd_status_t s = FNGD_SUCCESS;
    if (!h->dots_host || !ones)
        s = FNGD_FAIL(&h->err, FNGD_ERROR_OUT_OF_MEMORY, "cannot allocate host scratch");
    for (size_t i = 0; s == FNGD_SUCCESS && i < N; ++i) ones[i] = 1.0f;
    if (s == FNGD_SUCCESS) s = h->ops->upload(h->ctx, h->ones, ones, N * sizeof(float), call);
    fngd_host_free(ones);
    return s;
}

static fngd_status_t allocate(fngd_handle_t h, const fngd_call_t* call) {
    fngd_status_t s = FNGD_SUCCESS;
    const fngd_config_t* c = &h->cfg;
    size_t N = (size_t)c->max_batch;
    h->nsets = c->coef_mode == FNGD_COEF_GLOBAL ? 1 : h->num_layers;
    size_t nsets = (size_t)h->nsets, ns = (size_t)c->num_samples;
    if (ns > SIZE_MAX / sizeof(float) / nsets) {
        s = FNGD_FAIL(&h->err, FNGD_ERROR_OUT_OF_MEMORY, "coefficient table size overflows");
        goto cleanup;
    }
    FNGD_TRY_GOTO(s, alloc_backend(h, (void**)&h->coef_table, ns * nsets * sizeof(float), call));
    FNGD_TRY_GOTO(s, alloc_backend(h, (void**)&h->coef_seen, ns, call));
    FNGD_TRY_GOTO(s, alloc_backend(h, (void**)&h->coef_fallback, nsets * sizeof(float), call));
    FNGD_TRY_GOTO(s, alloc_backend(h, (void**)&h->fallback_count, sizeof(int64_t), call));
    FNGD_TRY_GOTO(s, alloc_backend(h, (void**)&h->gram, nsets * N * N * sizeof(float), call));
    FNGD_TRY_GOTO(s, alloc_backend(h, (void**)&h->alpha, nsets * N * sizeof(float), call));
    if (c->output == FNGD_OUTPUT_APPLY_SGD) {
        for (int l = 0; l < h->num_layers; ++l) {
            fngd_layer_t* L = &h->layers[l];
            size_t bytes = (size_t)L->grad_len * sizeof(float);
            FNGD_TRY_GOTO(s, alloc_backend(h, (void**)&L->direction, bytes, call));
            if (c->momentum > 0)
                FNGD_TRY_GOTO(s, alloc_backend(h, (void**)&L->momentum, bytes, call));
        }
    }
    if (h->workspace && !h->workspace_owned) {
        /* Layers added after fngd_set_workspace may need more than the caller gave. */
        size_t need = 0;
        FNGD_TRY_GOTO(s, workspace_need(h, &need, call));
        if (h->workspace_bytes < need) {
            s = FNGD_FAIL(&h->err, FNGD_ERROR_INVALID_STATE,
                          "the caller's workspace of %zu bytes is too small for the layers now "
                          "registered: %zu needed (fngd_get_workspace_size)",
                          h->workspace_bytes, need);
            goto cleanup;
        }
    }
    if (!h->workspace) {
        FNGD_TRY_GOTO(s, workspace_need(h, &h->workspace_bytes, call));
        FNGD_TRY_GOTO(s, alloc_backend(h, &h->workspace, h->workspace_bytes, call));
        h->workspace_owned = 1;
    }
    h->id_scratch = fngd_host_alloc(N * sizeof(int64_t), 64);
    h->solve_scratch = h->id_scratch ? fngd_host_alloc(3 * nsets * sizeof(double), 64) : NULL;
    h->solve_info = h->solve_scratch ? fngd_host_alloc(nsets * sizeof(int), 64) : NULL;
    h->update_list = h->solve_info ? fngd_host_alloc(2 * (size_t)h->num_layers *
                                                         sizeof(fngd_update_tensor_t), 64)
                                   : NULL;
    h->check_list = h->update_list ? fngd_host_alloc((2 * (size_t)h->num_layers + 1) *
                                                         sizeof(fngd_array_ref_t), 64)
                                   : NULL;
    h->coef_summary = fngd_host_alloc(nsets * sizeof(fngd_coef_summary_t), 64);
    h->fallback_host = fngd_host_alloc(nsets * sizeof(float), 64);
    if (!h->id_scratch || !h->solve_scratch || !h->solve_info || !h->update_list ||
        !h->check_list || !h->coef_summary || !h->fallback_host) {
        s = FNGD_FAIL(&h->err, FNGD_ERROR_OUT_OF_MEMORY, "cannot allocate host scratch");
        goto cleanup;
    }
    FNGD_TRY_GOTO(s, prepare_extras(h, call));
    h->prepared = 1;
cleanup:
    if (s != FNGD_SUCCESS) fngd_release_backend_memory(h);
    return s;
}

fngd_status_t fngd_prepare_in_call(fngd_handle_t h, fngd_call_t* call) {
    if (h->prepared) return FNGD_SUCCESS;
    FNGD_REQUIRE(&h->err, h->num_layers > 0, FNGD_ERROR_INVALID_STATE,
                 "no layer registered: call fngd_add_layer first");
    fngd_nvtx_push("fngd_prepare");
    fngd_status_t s = allocate(h, call);
    fngd_nvtx_pop();
    call->ws = h->workspace; /* NULL again after a failure (the memory was released) */
    call->ws_bytes = h->workspace_bytes;
    return s;
}

fngd_status_t fngd_prepare(fngd_handle_t h) {
    FNGD_REQUIRE_HANDLE(h);
    if (h->prepared) return FNGD_SUCCESS;
    fngd_call_t call;
    fngd_status_t s = fngd_call_begin(h, NULL, &call);
    if (s == FNGD_SUCCESS) s = fngd_prepare_in_call(h, &call);
    fngd_call_end(h, &call);
    return s;
}
