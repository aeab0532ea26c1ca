/* The binary layout of a saved optimizer state (fngd_save_state / fngd_save_file), format
 * version 1. Every integer and float is little-endian whatever the host, written field by field
 * (never a memcpy of a C struct), so a state moves between machines and compilers.
 *
 *   offset  size  field
 *   ------  ----  -------------------------------------------------------------------------
 *   preamble (fixed in every format version, so any reader can classify any image)
 *        0     8  magic "FNGDSTAT"
 *        8     4  u32 format version (FNGD_STATE_FORMAT_VERSION)
 *       12     4  u32 byte-order mark 0x01020304 (bytes 04 03 02 01 on disk)
 *       16     8  u64 total bytes of the image, CRC included
 *   configuration (FNGD_STATE_CONFIG_BYTES)
 *              4  i32 max_batch             must match the loading handle
 *              8  i64 num_samples           must match
 *              4  u32 coef_mode             must match
 *              4  u32 damping_kind          must match
 *              8  f64 damping               must match
 *              4  i32 max_damping_retries   must match
 *              8  f64 damping_growth        must match
 *              4  i32 recompute_every       must match
 *              4  u32 grad_convention       must match
 *              4  u32 rhs                   must match
 *              4  u32 fallback              must match
 *              4  u32 output                must match
 *              4  f32 momentum              must match
 *              4  f32 weight_decay          must match
 *              4  f32 learning_rate         restored (fngd_set_learning_rate schedules it)
 *              4  u32 backend               informational (states move between backends)
 *              4  u32 num_layers            must match
 *              4  u32 nsets                 must match (num_layers, or 1 in global mode)
 *              4  u32 num_sections
 *   layer table: num_layers records of FNGD_STATE_LAYER_BYTES, in registration order
 *              4  u32 kind                  \
 *              4  u32 has_bias               | all must match the loading handle's layer
 *              4  u32 gram method (resolved) |
 *              4  u32 reserved (0)           |
 *              8  i64 grad_len               |
 *       16 x   8  i64 geometry words        /  (fngd_state_layer_words: per kind, rest 0)
 *   sections, in this order, each: u32 id, u32 element bytes, u64 element count, payload
 *     COUNTERS  element 1 byte,  FNGD_STATE_COUNTERS_BYTES: i32 epoch, u32 phase,
 *               i64 steps_total, i64 steps_in_epoch, i64 factorizations, i64 damping_retries,
 *               i64 rejected_steps, u32 have_collected (= epoch > 0: written derived, a
 *               load checks it), f64 last_damping, i64 fallback_ids
 *     COEF_TABLE   f32 x num_samples * nsets   (key-major: table[key * nsets + set])
 *     COEF_SEEN    u8  x num_samples           (0 or 1)
 *     FALLBACK     f32 x nsets                 (stored mean per coefficient set)
 *     MOMENTUM     f32 x sum of grad_len       (only with FNGD_OUTPUT_APPLY_SGD and
 *                                               momentum > 0; layer order, weight then bias)
 *   trailer
 *              4  u32 CRC-32 (crc32.h) of every preceding byte
 *
 * Load order of checks, all before anything is written: size and magic, total bytes (a
 * truncated image), CRC (any flipped bit) -> FNGD_ERROR_CORRUPT_STATE; format version, byte
 * order, configuration, layer table -> FNGD_ERROR_VERSION_MISMATCH; section structure and
 * values (seen flags, counters) -> FNGD_ERROR_CORRUPT_STATE. */
#ifndef FNGD_HOST_STATE_FORMAT_H
#define FNGD_HOST_STATE_FORMAT_H

#include <stddef.h>
#include <stdint.h>
#include <string.h>

#ifdef __cplusplus
extern "C" {
#endif

#define FNGD_STATE_MAGIC "FNGDSTAT"
#define FNGD_STATE_MAGIC_BYTES 8
#define FNGD_STATE_FORMAT_VERSION 1u
#define FNGD_STATE_BYTE_ORDER_MARK 0x01020304u

#define FNGD_STATE_PREAMBLE_BYTES 24
#define FNGD_STATE_CONFIG_BYTES 88
#define FNGD_STATE_LAYER_WORDS 16
#define FNGD_STATE_LAYER_BYTES (24 + 8 * FNGD_STATE_LAYER_WORDS)
#define FNGD_STATE_SECTION_HEADER_BYTES 16
#define FNGD_STATE_COUNTERS_BYTES 68
#define FNGD_STATE_CRC_BYTES 4

/* Offset of the version field, for tests that forge images of another version. */
#define FNGD_STATE_VERSION_OFFSET 8

typedef enum fngd_state_section {
    FNGD_STATE_SECTION_COUNTERS = 1,
    FNGD_STATE_SECTION_COEF_TABLE = 2,
    FNGD_STATE_SECTION_COEF_SEEN = 3,
    FNGD_STATE_SECTION_FALLBACK = 4,
    FNGD_STATE_SECTION_MOMENTUM = 5
} fngd_state_section_t;

/* ---- little-endian cursors ------------------------------------------------------------------
 * A writer or reader over a byte range that never steps outside it: an access past the end
 * clears `ok` and does nothing, so a parser checks `ok` once after a group of reads. */

typedef struct fngd_wcursor {
    uint8_t* p;
    size_t left;
    int ok;
} fngd_wcursor_t;

typedef struct fngd_rcursor {
    const uint8_t* p;
    size_t left;
    int ok;
} fngd_rcursor_t;

static inline uint8_t* fngd_w_take(fngd_wcursor_t* w, size_t n) {
    if (!w->ok || w->left < n) {
        w->ok = 0;
        return NULL;
    }
    uint8_t* at = w->p;
    w->p += n;
    w->left -= n;
    return at;
}

static inline const uint8_t* fngd_r_take(fngd_rcursor_t* r, size_t n) {
    if (!r->ok || r->left < n) {
        r->ok = 0;
        return NULL;
    }
    const uint8_t* at = r->p;
    r->p += n;
    r->left -= n;
    return at;
}

static inline void fngd_store_u32(uint8_t* b, uint32_t v) {
    for (int i = 0; i < 4; ++i) b[i] = (uint8_t)(v >> (8 * i));
}
static inline void fngd_store_u64(uint8_t* b, uint64_t v) {
    for (int i = 0; i < 8; ++i) b[i] = (uint8_t)(v >> (8 * i));
}
static inline uint32_t fngd_load_u32(const uint8_t* b) {
    uint32_t v = 0;
    for (int i = 0; i < 4; ++i) v |= (uint32_t)b[i] << (8 * i);
    return v;
}
static inline uint64_t fngd_load_u64(const uint8_t* b) {
    uint64_t v = 0;
    for (int i = 0; i < 8; ++i) v |= (uint64_t)b[i] << (8 * i);
    return v;
}

static inline void fngd_w_bytes(fngd_wcursor_t* w, const void* src, size_t n) {
    uint8_t* b = fngd_w_take(w, n);
    if (b && n) memcpy(b, src, n);
}
static inline void fngd_w_u32(fngd_wcursor_t* w, uint32_t v) {
    uint8_t* b = fngd_w_take(w, 4);
    if (b) fngd_store_u32(b, v);
}
static inline void fngd_w_u64(fngd_wcursor_t* w, uint64_t v) {
    uint8_t* b = fngd_w_take(w, 8);
    if (b) fngd_store_u64(b, v);
}
static inline void fngd_w_i32(fngd_wcursor_t* w, int32_t v) { fngd_w_u32(w, (uint32_t)v); }
static inline void fngd_w_i64(fngd_wcursor_t* w, int64_t v) { fngd_w_u64(w, (uint64_t)v); }
static inline void fngd_w_f32(fngd_wcursor_t* w, float v) {
    uint32_t u;
    memcpy(&u, &v, 4);
    fngd_w_u32(w, u);
}
static inline void fngd_w_f64(fngd_wcursor_t* w, double v) {
    uint64_t u;
    memcpy(&u, &v, 8);
    fngd_w_u64(w, u);
}

static inline uint32_t fngd_r_u32(fngd_rcursor_t* r) {
    const uint8_t* b = fngd_r_take(r, 4);
    return b ? fngd_load_u32(b) : 0;
}
static inline uint64_t fngd_r_u64(fngd_rcursor_t* r) {
    const uint8_t* b = fngd_r_take(r, 8);
    return b ? fngd_load_u64(b) : 0;
}
static inline int32_t fngd_r_i32(fngd_rcursor_t* r) { return (int32_t)fngd_r_u32(r); }
static inline int64_t fngd_r_i64(fngd_rcursor_t* r) { return (int64_t)fngd_r_u64(r); }
static inline float fngd_r_f32(fngd_rcursor_t* r) {
    uint32_t u = fngd_r_u32(r);
    float v;
    memcpy(&v, &u, 4);
    return v;
}
static inline double fngd_r_f64(fngd_rcursor_t* r) {
    uint64_t u = fngd_r_u64(r);
    double v;
    memcpy(&v, &u, 8);
    return v;
}

#ifdef __cplusplus
}
#endif

#endif
