/* Checkpoints in memory: fngd_state_size, fngd_save_state and fngd_load_state, in the layout of
 * state_format.h. Loading decodes and checks the whole image into host temporaries, stages the
 * backend arrays in fresh allocations, and only when every step has succeeded swaps them in
 * and overwrites the counters, so any failure leaves the live state exactly as it was. */
#include <math.h>
#include <string.h>

#include "alloc.h"
#include "crc32.h"
#include "nvtx_range.h"
#include "epoch.h"
#include "call.h"
#include "prepare.h"
#include "state_io.h"

/* Sizes of one handle's image. */
typedef struct state_plan {
    int nsets;
    int has_momentum;
    uint32_t num_sections;
    uint64_t n_table;     /* floats */
    uint64_t n_seen;      /* bytes */
    uint64_t n_momentum;  /* floats, all layers */
    size_t total;         /* bytes of the image */
} state_plan_t;

static int add_size(size_t* acc, uint64_t count, size_t elem) {
    if (count > (SIZE_MAX - *acc) / elem) return 0;
    *acc += (size_t)count * elem;
    return 1;
}

static fngd_status_t make_plan(fngd_handle_t h, state_plan_t* p) {
    FNGD_REQUIRE(&h->err, h->num_layers > 0, FNGD_ERROR_INVALID_STATE,
                 "no layer registered: a state belongs to a handle with its layers");
    const fngd_config_t* c = &h->cfg;
    memset(p, 0, sizeof *p);
    p->nsets = h->prepared ? h->nsets : (c->coef_mode == FNGD_COEF_GLOBAL ? 1 : h->num_layers);
    p->has_momentum = c->output == FNGD_OUTPUT_APPLY_SGD && c->momentum > 0;
    p->num_sections = 4u + (uint32_t)p->has_momentum;
    p->n_seen = (uint64_t)c->num_samples;
    p->n_table = p->n_seen * (uint64_t)p->nsets;
    if (p->n_table / (uint64_t)p->nsets != p->n_seen) p->n_table = UINT64_MAX; /* add_size fails */
    for (int l = 0; p->has_momentum && l < h->num_layers; ++l)
        p->n_momentum += (uint64_t)h->layers[l].grad_len;
    size_t t = 0;
    int ok = add_size(&t, 1, FNGD_STATE_PREAMBLE_BYTES + FNGD_STATE_CONFIG_BYTES + FNGD_STATE_CRC_BYTES) &&
             add_size(&t, (uint64_t)h->num_layers, FNGD_STATE_LAYER_BYTES) &&
             add_size(&t, p->num_sections, FNGD_STATE_SECTION_HEADER_BYTES) &&
             add_size(&t, 1, FNGD_STATE_COUNTERS_BYTES) && add_size(&t, p->n_table, 4) &&
             add_size(&t, p->n_seen, 1) && add_size(&t, (uint64_t)p->nsets, 4) &&
             add_size(&t, p->n_momentum, 4);
    FNGD_REQUIRE(&h->err, ok, FNGD_ERROR_OUT_OF_MEMORY,
                 "the state of %lld samples x %d sets does not fit in memory",
                 (long long)c->num_samples, p->nsets);
    p->total = t;
    return FNGD_SUCCESS;
}

void fngd_state_layer_words(const fngd_layer_t* L, int64_t w[FNGD_STATE_LAYER_WORDS]) {
    const fngd_layer_desc_t* d = &L->desc;
    memset(w, 0, FNGD_STATE_LAYER_WORDS * sizeof *w);
    switch (L->kind) {
        case FNGD_LAYER_LINEAR:
            w[0] = d->in_features, w[1] = d->out_features, w[2] = d->positions;
            break;
        case FNGD_LAYER_CONV2D:
            w[0] = d->in_channels, w[1] = d->out_channels, w[2] = d->in_h, w[3] = d->in_w;
            w[4] = d->kernel_h, w[5] = d->kernel_w, w[6] = d->stride_h, w[7] = d->stride_w;
            w[8] = d->pad_h, w[9] = d->pad_w, w[10] = d->dilation_h, w[11] = d->dilation_w;
            w[12] = L->groups > 1 ? L->groups : 0; /* 0 = ungrouped, as states before groups */
            break;
        case FNGD_LAYER_NORM_AFFINE:
            w[0] = d->num_features, w[1] = d->norm_positions, w[2] = d->channels_last;
            break;
        case FNGD_LAYER_GENERIC:
            w[0] = d->num_params;
            break;
        case FNGD_LAYER_EMBEDDING:
            w[0] = d->num_embeddings, w[1] = d->embedding_dim, w[2] = d->positions;
            break;
    }
}

fngd_status_t fngd_state_size(fngd_handle_t h, size_t* bytes) {
    FNGD_REQUIRE_HANDLE(h);
    FNGD_REQUIRE(&h->err, bytes, FNGD_ERROR_INVALID_ARGUMENT, "bytes is NULL");
    state_plan_t p;
    FNGD_TRY(make_plan(h, &p));
    *bytes = p.total;
    return FNGD_SUCCESS;
}

/* ---- save ----------------------------------------------------------------------------------- */

/* Rewrite n host floats (or int64s) in place as little-endian; a no-op on little-endian hosts
 * but the same code path everywhere. */
static void floats_to_le(uint8_t* b, uint64_t n) {
    for (uint64_t i = 0; i < n; ++i, b += 4) {
        uint32_t u;
        memcpy(&u, b, 4);
        fngd_store_u32(b, u);
    }
}

static void section_header(fngd_wcursor_t* w, fngd_state_section_t id, uint32_t elem,
                           uint64_t count) {
    fngd_w_u32(w, (uint32_t)id);
    fngd_w_u32(w, elem);
    fngd_w_u64(w, count);
}

/* A backend float array as a section payload: downloaded straight into the image, then made
 * little-endian. src NULL (handle not prepared yet) writes the zeros a prepare would give. */
static fngd_status_t put_backend_floats(fngd_handle_t h, fngd_wcursor_t* w, const float* src,
                                        uint64_t n, const fngd_call_t* call) {
    uint8_t* b = fngd_w_take(w, (size_t)n * 4);
    if (!b) return FNGD_SUCCESS; /* the caller reports the overrun */
    if (!src) {
        memset(b, 0, (size_t)n * 4);
        return FNGD_SUCCESS;
    }
    FNGD_TRY(h->ops->download(h->ctx, b, src, (size_t)n * 4, call));
    floats_to_le(b, n);
    return FNGD_SUCCESS;
}

static void put_config(fngd_handle_t h, fngd_wcursor_t* w, const state_plan_t* p) {
    const fngd_config_t* c = &h->cfg;
    fngd_w_i32(w, c->max_batch);
    fngd_w_i64(w, c->num_samples);
    fngd_w_u32(w, (uint32_t)c->coef_mode);
    fngd_w_u32(w, (uint32_t)c->damping_kind);
    fngd_w_f64(w, c->damping);
    fngd_w_i32(w, c->max_damping_retries);
    fngd_w_f64(w, c->damping_growth);
    fngd_w_i32(w, c->recompute_every);
    fngd_w_u32(w, (uint32_t)c->grad_convention);
    fngd_w_u32(w, (uint32_t)c->rhs);
    fngd_w_u32(w, (uint32_t)c->fallback);
    fngd_w_u32(w, (uint32_t)c->output);
    fngd_w_f32(w, c->momentum);
    fngd_w_f32(w, c->weight_decay);
    fngd_w_f32(w, c->learning_rate);
    fngd_w_u32(w, (uint32_t)c->backend);
    fngd_w_u32(w, (uint32_t)h->num_layers);
    fngd_w_u32(w, (uint32_t)p->nsets);
    fngd_w_u32(w, p->num_sections);
}

static void put_layers(fngd_handle_t h, fngd_wcursor_t* w) {
    for (int l = 0; l < h->num_layers; ++l) {
        const fngd_layer_t* L = &h->layers[l];
        int64_t words[FNGD_STATE_LAYER_WORDS];
        fngd_state_layer_words(L, words);
        fngd_w_u32(w, (uint32_t)L->kind);
        fngd_w_u32(w, L->n_bias > 0);
        fngd_w_u32(w, (uint32_t)L->method);
        fngd_w_u32(w, 0);
        fngd_w_i64(w, L->grad_len);
        for (int i = 0; i < FNGD_STATE_LAYER_WORDS; ++i) fngd_w_i64(w, words[i]);
    }
}

static fngd_status_t put_sections(fngd_handle_t h, fngd_wcursor_t* w, const state_plan_t* p,
                                  const fngd_call_t* call) {
    const fngd_counters_t* k = &h->counters;
    int64_t fallback_ids = 0;
    if (h->prepared)
        FNGD_TRY(h->ops->download(h->ctx, &fallback_ids, h->fallback_count, sizeof fallback_ids,
                                  call));
    section_header(w, FNGD_STATE_SECTION_COUNTERS, 1, FNGD_STATE_COUNTERS_BYTES);
    fngd_w_i32(w, k->epoch);
    fngd_w_u32(w, (uint32_t)k->phase);
    fngd_w_i64(w, k->steps_total);
    fngd_w_i64(w, k->steps_in_epoch);
    fngd_w_i64(w, k->factorizations);
    fngd_w_i64(w, k->damping_retries);
    fngd_w_i64(w, k->rejected_steps);
    fngd_w_u32(w, (uint32_t)(k->epoch > 0)); /* have_collected, derived: epoch 0 collects */
    fngd_w_f64(w, k->last_damping);
    fngd_w_i64(w, fallback_ids);

    section_header(w, FNGD_STATE_SECTION_COEF_TABLE, 4, p->n_table);
    FNGD_TRY(put_backend_floats(h, w, h->prepared ? h->coef_table : NULL, p->n_table, call));

    section_header(w, FNGD_STATE_SECTION_COEF_SEEN, 1, p->n_seen);
    uint8_t* seen = fngd_w_take(w, (size_t)p->n_seen);
    if (seen && h->prepared)
        FNGD_TRY(h->ops->download(h->ctx, seen, h->coef_seen, (size_t)p->n_seen, call));
    else if (seen)
        memset(seen, 0, (size_t)p->n_seen);

    section_header(w, FNGD_STATE_SECTION_FALLBACK, 4, (uint64_t)p->nsets);
    FNGD_TRY(put_backend_floats(h, w, h->prepared ? h->coef_fallback : NULL, (uint64_t)p->nsets,
                                call));

    if (p->has_momentum) {
        section_header(w, FNGD_STATE_SECTION_MOMENTUM, 4, p->n_momentum);
        for (int l = 0; l < h->num_layers; ++l) {
            const fngd_layer_t* L = &h->layers[l];
            FNGD_TRY(put_backend_floats(h, w, h->prepared ? L->momentum : NULL,
                                        (uint64_t)L->grad_len, call));
        }
    }
    return FNGD_SUCCESS;
}

static fngd_status_t save_impl(fngd_handle_t h, void* buffer, size_t bytes, size_t* written,
                               const fngd_call_t* call) {
    state_plan_t p;
    FNGD_TRY(make_plan(h, &p));
    FNGD_REQUIRE(&h->err, bytes >= p.total, FNGD_ERROR_INVALID_ARGUMENT,
                 "state buffer of %zu bytes is too small: %zu needed (fngd_state_size)", bytes,
                 p.total);
    fngd_wcursor_t w = {(uint8_t*)buffer, p.total, 1};
    fngd_w_bytes(&w, FNGD_STATE_MAGIC, FNGD_STATE_MAGIC_BYTES);
    fngd_w_u32(&w, FNGD_STATE_FORMAT_VERSION);
    fngd_w_u32(&w, FNGD_STATE_BYTE_ORDER_MARK);
    fngd_w_u64(&w, (uint64_t)p.total);
    put_config(h, &w, &p);
    put_layers(h, &w);
    FNGD_TRY(put_sections(h, &w, &p, call));
    FNGD_REQUIRE(&h->err, w.ok && w.left == FNGD_STATE_CRC_BYTES, FNGD_ERROR_INTERNAL,
                 "state image layout does not add up (%zu bytes left of %zu)", w.left, p.total);
    fngd_w_u32(&w, fngd_crc32(0, buffer, p.total - FNGD_STATE_CRC_BYTES));
    if (written) *written = p.total;
    return FNGD_SUCCESS;
}

fngd_status_t fngd_save_state(fngd_handle_t h, void* buffer, size_t bytes, size_t* written) {
    FNGD_REQUIRE_HANDLE(h);
    FNGD_REQUIRE(&h->err, buffer, FNGD_ERROR_INVALID_ARGUMENT, "buffer is NULL");
    fngd_nvtx_push("fngd_save_state");
    fngd_call_t call;
    fngd_status_t s = fngd_call_begin(h, h->last_stream, &call);
    if (s == FNGD_SUCCESS) s = save_impl(h, buffer, bytes, written, &call);
    fngd_call_end(h, &call);
    fngd_nvtx_pop();
    return s;
}

/* ---- load: decode and check --------------------------------------------------------------- */

/* Everything an image carries, decoded into host memory (arrays owned, fngd_host_alloc). */
typedef struct decoded_state {
    fngd_counters_t counters;
    float learning_rate;
    int64_t fallback_ids;
    float* table;
    uint8_t* seen;
    float* fallback;
    float* momentum; /* all layers, concatenated */
} decoded_state_t;

static void free_decoded(decoded_state_t* d) {
    fngd_host_free(d->table);
    fngd_host_free(d->seen);
    fngd_host_free(d->fallback);
    fngd_host_free(d->momentum);
}

#define MISMATCH(...) FNGD_FAIL(&h->err, FNGD_ERROR_VERSION_MISMATCH, __VA_ARGS__)
#define CORRUPT(...) FNGD_FAIL(&h->err, FNGD_ERROR_CORRUPT_STATE, __VA_ARGS__)

/* Preamble, length and checksum: is this an intact image at all? */
static fngd_status_t check_envelope(fngd_handle_t h, const uint8_t* b, size_t bytes) {
    if (bytes < FNGD_STATE_PREAMBLE_BYTES + FNGD_STATE_CRC_BYTES)
        return CORRUPT("state of %zu bytes is too short to be an fngd state", bytes);
    if (memcmp(b, FNGD_STATE_MAGIC, FNGD_STATE_MAGIC_BYTES) != 0)
        return CORRUPT("not an fngd state (bad magic bytes)");
    uint64_t total = fngd_load_u64(b + 16);
    if (total != (uint64_t)bytes)
        return CORRUPT("state is %zu bytes but its header says %llu: truncated or padded",
                       bytes, (unsigned long long)total);
    uint32_t stored = fngd_load_u32(b + bytes - FNGD_STATE_CRC_BYTES);
    uint32_t actual = fngd_crc32(0, b, bytes - FNGD_STATE_CRC_BYTES);
    if (stored != actual)
        return CORRUPT("state checksum mismatch (stored CRC-32 %08x, computed %08x): the data "
                       "is corrupted", (unsigned)stored, (unsigned)actual);
    uint32_t version = fngd_load_u32(b + FNGD_STATE_VERSION_OFFSET);
    if (version != FNGD_STATE_FORMAT_VERSION)
        return MISMATCH("state has format version %u; this library reads version %u",
                        (unsigned)version, (unsigned)FNGD_STATE_FORMAT_VERSION);
    if (fngd_load_u32(b + 12) != FNGD_STATE_BYTE_ORDER_MARK)
        return MISMATCH("state has byte-order mark %08x, expected %08x",
                        (unsigned)fngd_load_u32(b + 12), (unsigned)FNGD_STATE_BYTE_ORDER_MARK);
    return FNGD_SUCCESS;
}

static fngd_status_t check_config(fngd_handle_t h, fngd_rcursor_t* r, const state_plan_t* p,
                                  float* learning_rate) {
    const fngd_config_t* c = &h->cfg;
#define SAME_INT(expr, live, name)                                                             \
    do {                                                                                       \
        long long saved_ = (long long)(expr), live_ = (long long)(live);                       \
        if (r->ok && saved_ != live_)                                                          \
            return MISMATCH("state was saved with " name " = %lld, this handle has %lld",      \
                            saved_, live_);                                                    \
    } while (0)
#define SAME_REAL(expr, live, name)                                                            \
    do {                                                                                       \
        double saved_ = (double)(expr), live_ = (double)(live);                                \
        if (r->ok && !(saved_ == live_))                                                       \
            return MISMATCH("state was saved with " name " = %.17g, this handle has %.17g",    \
                            saved_, live_);                                                    \
    } while (0)
    SAME_INT(fngd_r_i32(r), c->max_batch, "max_batch");
    SAME_INT(fngd_r_i64(r), c->num_samples, "num_samples");
    SAME_INT(fngd_r_u32(r), c->coef_mode, "coef_mode");
    SAME_INT(fngd_r_u32(r), c->damping_kind, "damping_kind");
    SAME_REAL(fngd_r_f64(r), c->damping, "damping");
    SAME_INT(fngd_r_i32(r), c->max_damping_retries, "max_damping_retries");
    SAME_REAL(fngd_r_f64(r), c->damping_growth, "damping_growth");
    SAME_INT(fngd_r_i32(r), c->recompute_every, "recompute_every");
    SAME_INT(fngd_r_u32(r), c->grad_convention, "grad_convention");
    SAME_INT(fngd_r_u32(r), c->rhs, "rhs");
    SAME_INT(fngd_r_u32(r), c->fallback, "fallback");
    SAME_INT(fngd_r_u32(r), c->output, "output");
    SAME_REAL(fngd_r_f32(r), c->momentum, "momentum");
    SAME_REAL(fngd_r_f32(r), c->weight_decay, "weight_decay");
    *learning_rate = fngd_r_f32(r);
    (void)fngd_r_u32(r); /* backend: a state moves freely between backends */
    SAME_INT(fngd_r_u32(r), h->num_layers, "a layer count");
    SAME_INT(fngd_r_u32(r), p->nsets, "a coefficient set count");
    uint32_t sections = fngd_r_u32(r);
#undef SAME_INT
#undef SAME_REAL
    if (!r->ok) return CORRUPT("state ends inside its configuration block");
    if (!(isfinite(*learning_rate) && *learning_rate >= 0))
        return CORRUPT("state has an invalid learning rate %g", (double)*learning_rate);
    if (sections != p->num_sections)
        return CORRUPT("state has %u sections, expected %u for this configuration",
                       (unsigned)sections, (unsigned)p->num_sections);
    return FNGD_SUCCESS;
}

static const char* kind_name(uint32_t kind) {
    switch (kind) {
        case FNGD_LAYER_LINEAR: return "linear";
        case FNGD_LAYER_CONV2D: return "conv2d";
        case FNGD_LAYER_NORM_AFFINE: return "norm_affine";
        case FNGD_LAYER_GENERIC: return "generic";
        case FNGD_LAYER_EMBEDDING: return "embedding";
    }
    return "unknown";
}

static fngd_status_t check_layers(fngd_handle_t h, fngd_rcursor_t* r) {
    for (int l = 0; l < h->num_layers; ++l) {
        const fngd_layer_t* L = &h->layers[l];
        int64_t live[FNGD_STATE_LAYER_WORDS];
        fngd_state_layer_words(L, live);
        uint32_t kind = fngd_r_u32(r), has_bias = fngd_r_u32(r), method = fngd_r_u32(r);
        (void)fngd_r_u32(r);
        int64_t grad_len = fngd_r_i64(r);
        int same_words = 1;
        for (int i = 0; i < FNGD_STATE_LAYER_WORDS; ++i) same_words &= fngd_r_i64(r) == live[i];
        if (!r->ok) return CORRUPT("state ends inside its layer table");
        if (kind != (uint32_t)L->kind)
            return MISMATCH("layer %d: state has a %s layer, this handle a %s layer", l,
                            kind_name(kind), kind_name((uint32_t)L->kind));
        if (has_bias != (uint32_t)(L->n_bias > 0))
            return MISMATCH("layer %d: state %s a bias, this handle's layer %s", l,
                            has_bias ? "has" : "has no", L->n_bias > 0 ? "has one" : "has none");
        if (!same_words || grad_len != L->grad_len)
            return MISMATCH("layer %d (%s): shape differs from the saved layer", l,
                            kind_name(kind));
        if (method != (uint32_t)L->method)
            return MISMATCH("layer %d: state used Gram method %u, this handle method %u", l,
                            (unsigned)method, (unsigned)L->method);
    }
    return FNGD_SUCCESS;
}

/* One section's header, which must be exactly the expected one; returns its payload. */
static const uint8_t* take_section(fngd_rcursor_t* r, fngd_state_section_t id, uint32_t elem,
                                   uint64_t count, int* bad) {
    uint32_t got_id = fngd_r_u32(r), got_elem = fngd_r_u32(r);
    uint64_t got_count = fngd_r_u64(r);
    if (!r->ok || got_id != (uint32_t)id || got_elem != elem || got_count != count) {
        *bad = 1;
        return NULL;
    }
    const uint8_t* payload = fngd_r_take(r, (size_t)count * elem);
    if (!payload) *bad = 1;
    return payload;
}

static fngd_status_t decode_floats(fngd_handle_t h, const uint8_t* b, uint64_t n, float** out) {
    *out = fngd_host_alloc((size_t)n * sizeof(float), 64);
    FNGD_REQUIRE(&h->err, *out, FNGD_ERROR_OUT_OF_MEMORY,
                 "cannot allocate %llu floats to decode the state", (unsigned long long)n);
    for (uint64_t i = 0; i < n; ++i) {
        uint32_t u = fngd_load_u32(b + 4 * i);
        memcpy(*out + i, &u, 4);
    }
    return FNGD_SUCCESS;
}

static fngd_status_t decode_counters(fngd_handle_t h, const uint8_t* b, decoded_state_t* d) {
    fngd_rcursor_t r = {b, FNGD_STATE_COUNTERS_BYTES, 1};
    fngd_counters_t* k = &d->counters;
    memset(k, 0, sizeof *k);
    k->epoch = fngd_r_i32(&r);
    uint32_t phase = fngd_r_u32(&r);
    k->steps_total = fngd_r_i64(&r);
    k->steps_in_epoch = fngd_r_i64(&r);
    k->factorizations = fngd_r_i64(&r);
    k->damping_retries = fngd_r_i64(&r);
    k->rejected_steps = fngd_r_i64(&r);
    uint32_t have_collected = fngd_r_u32(&r);
    k->last_damping = fngd_r_f64(&r);
    d->fallback_ids = fngd_r_i64(&r);
    if (!r.ok || r.left != 0) return CORRUPT("state counters section has the wrong size");
    /* The epoch fixes the phase and whether a collect epoch has finished (fngd_end_epoch). */
    if (k->epoch < 0 || phase != (uint32_t)fngd_epoch_phase(&h->cfg, k->epoch) ||
        have_collected != (uint32_t)(k->epoch > 0))
        return CORRUPT("state counters are inconsistent (epoch %d, phase %u, collected %u)",
                       k->epoch, (unsigned)phase, (unsigned)have_collected);
    if (k->steps_total < 0 || k->steps_in_epoch < 0 || k->steps_in_epoch > k->steps_total ||
        k->factorizations < 0 || k->damping_retries < 0 || k->rejected_steps < 0 ||
        d->fallback_ids < 0 || !isfinite(k->last_damping) || k->last_damping < 0)
        return CORRUPT("state counters are out of range");
    k->phase = (fngd_phase_t)phase;
    return FNGD_SUCCESS;
}

static fngd_status_t decode_sections(fngd_handle_t h, fngd_rcursor_t* r, const state_plan_t* p,
                                     decoded_state_t* d) {
    int bad = 0;
    const uint8_t* counters =
        take_section(r, FNGD_STATE_SECTION_COUNTERS, 1, FNGD_STATE_COUNTERS_BYTES, &bad);
    const uint8_t* table = take_section(r, FNGD_STATE_SECTION_COEF_TABLE, 4, p->n_table, &bad);
    const uint8_t* seen = take_section(r, FNGD_STATE_SECTION_COEF_SEEN, 1, p->n_seen, &bad);
    const uint8_t* fallback =
        take_section(r, FNGD_STATE_SECTION_FALLBACK, 4, (uint64_t)p->nsets, &bad);
    const uint8_t* momentum =
        p->has_momentum ? take_section(r, FNGD_STATE_SECTION_MOMENTUM, 4, p->n_momentum, &bad)
                        : NULL;
    if (bad || r->left != FNGD_STATE_CRC_BYTES)
        return CORRUPT("state sections do not match this configuration (id, element size or "
                       "count differs, or bytes are left over)");
    FNGD_TRY(decode_counters(h, counters, d));
    for (uint64_t i = 0; i < p->n_seen; ++i)
        if (seen[i] > 1)
            return CORRUPT("state seen flag of sample %llu is %u (must be 0 or 1)",
                           (unsigned long long)i, (unsigned)seen[i]);
    FNGD_TRY(decode_floats(h, table, p->n_table, &d->table));
    d->seen = fngd_host_alloc((size_t)p->n_seen, 64);
    FNGD_REQUIRE(&h->err, d->seen, FNGD_ERROR_OUT_OF_MEMORY, "cannot allocate the seen flags");
    memcpy(d->seen, seen, (size_t)p->n_seen);
    FNGD_TRY(decode_floats(h, fallback, (uint64_t)p->nsets, &d->fallback));
    if (p->has_momentum) FNGD_TRY(decode_floats(h, momentum, p->n_momentum, &d->momentum));
    return FNGD_SUCCESS;
}

static fngd_status_t decode_image(fngd_handle_t h, const uint8_t* b, size_t bytes,
                                  const state_plan_t* p, decoded_state_t* d) {
    FNGD_TRY(check_envelope(h, b, bytes));
    fngd_rcursor_t r = {b + FNGD_STATE_PREAMBLE_BYTES, bytes - FNGD_STATE_PREAMBLE_BYTES, 1};
    FNGD_TRY(check_config(h, &r, p, &d->learning_rate));
    FNGD_TRY(check_layers(h, &r));
    return decode_sections(h, &r, p, d);
}

/* ---- load: stage and commit --------------------------------------------------------------- */

/* Backend arrays of the new state; after the swap they hold the old arrays to free. */
typedef struct staged_state {
    float* table;
    uint8_t* seen;
    float* fallback;
    int64_t* fallback_count;
    float** momentum; /* host array of num_layers pointers, or NULL without momentum */
} staged_state_t;

static void free_staged(fngd_handle_t h, staged_state_t* s) {
    if (s->table) h->ops->free(h->ctx, s->table);
    if (s->seen) h->ops->free(h->ctx, s->seen);
    if (s->fallback) h->ops->free(h->ctx, s->fallback);
    if (s->fallback_count) h->ops->free(h->ctx, s->fallback_count);
    if (s->momentum) {
        for (int l = 0; l < h->num_layers; ++l)
            if (s->momentum[l]) h->ops->free(h->ctx, s->momentum[l]);
        fngd_host_free(s->momentum);
    }
}

static fngd_status_t stage_array(fngd_handle_t h, void** dst, const void* src, size_t bytes,
                                 const fngd_call_t* call) {
    FNGD_TRY(h->ops->alloc(h->ctx, bytes, dst, call));
    return h->ops->upload(h->ctx, *dst, src, bytes, call);
}

static fngd_status_t stage(fngd_handle_t h, const state_plan_t* p, const decoded_state_t* d,
                           staged_state_t* s, const fngd_call_t* call) {
    FNGD_TRY(stage_array(h, (void**)&s->table, d->table, (size_t)p->n_table * sizeof(float),
                         call));
    FNGD_TRY(stage_array(h, (void**)&s->seen, d->seen, (size_t)p->n_seen, call));
    FNGD_TRY(stage_array(h, (void**)&s->fallback, d->fallback, (size_t)p->nsets * sizeof(float),
                         call));
    FNGD_TRY(stage_array(h, (void**)&s->fallback_count, &d->fallback_ids, sizeof(int64_t),
                         call));
    if (!p->has_momentum) return FNGD_SUCCESS;
    s->momentum = fngd_host_alloc((size_t)h->num_layers * sizeof(float*), 64);
    FNGD_REQUIRE(&h->err, s->momentum, FNGD_ERROR_OUT_OF_MEMORY,
                 "cannot allocate the momentum staging table");
    const float* src = d->momentum;
    for (int l = 0; l < h->num_layers; ++l) {
        size_t n = (size_t)h->layers[l].grad_len;
        FNGD_TRY(stage_array(h, (void**)&s->momentum[l], src, n * sizeof(float), call));
        src += n;
    }
    return FNGD_SUCCESS; /* upload is blocking (backend.h): the temporaries may go now */
}

#define SWAP(type, a, b)  \
    do {                  \
        type t_ = (a);    \
        (a) = (b);        \
        (b) = t_;         \
    } while (0)

/* Nothing below can fail: the new state becomes live, the old arrays go to `s` to be freed. */
static void commit(fngd_handle_t h, const decoded_state_t* d, staged_state_t* s) {
    SWAP(float*, h->coef_table, s->table);
    SWAP(uint8_t*, h->coef_seen, s->seen);
    SWAP(float*, h->coef_fallback, s->fallback);
    SWAP(int64_t*, h->fallback_count, s->fallback_count);
    for (int l = 0; s->momentum && l < h->num_layers; ++l)
        SWAP(float*, h->layers[l].momentum, s->momentum[l]);
    h->counters = d->counters;
    h->cfg.learning_rate = d->learning_rate;
}

static fngd_status_t load_impl(fngd_handle_t h, const void* buffer, size_t bytes,
                               fngd_call_t* call) {
    state_plan_t p;
    FNGD_TRY(make_plan(h, &p));
    decoded_state_t d;
    staged_state_t s;
    memset(&d, 0, sizeof d);
    memset(&s, 0, sizeof s);
    fngd_status_t st = FNGD_SUCCESS;
    FNGD_TRY_GOTO(st, decode_image(h, (const uint8_t*)buffer, bytes, &p, &d));
    /* Loading freezes the layer set, as a first step would; a fresh prepare holds only zeros,
     * so even a failure after it leaves an equivalent state. */
    FNGD_TRY_GOTO(st, fngd_prepare_in_call(h, call));
    FNGD_TRY_GOTO(st, stage(h, &p, &d, &s, call));
    commit(h, &d, &s);
cleanup:
    free_staged(h, &s);
    free_decoded(&d);
    return st;
}

fngd_status_t fngd_load_state(fngd_handle_t h, const void* buffer, size_t bytes) {
    FNGD_REQUIRE_HANDLE(h);
    FNGD_REQUIRE(&h->err, buffer, FNGD_ERROR_INVALID_ARGUMENT, "buffer is NULL");
    fngd_nvtx_push("fngd_load_state");
    fngd_call_t call;
    fngd_status_t s = fngd_call_begin(h, h->last_stream, &call);
    if (s == FNGD_SUCCESS) s = load_impl(h, buffer, bytes, &call);
    fngd_call_end(h, &call);
    fngd_nvtx_pop();
    return s;
}
