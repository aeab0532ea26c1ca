/* libFuzzer target: arbitrary bytes into fngd_load_state on a prepared handle of the
 * tests/state_model.h problem (the configuration and layers of the seed corpus).
 *
 * Invariants checked on every input (a broken one aborts, which the fuzzer reports):
 * - the load succeeds, or fails with FNGD_ERROR_CORRUPT_STATE / FNGD_ERROR_VERSION_MISMATCH
 *   and leaves the state byte-for-byte as it was (a save before and after compare equal);
 * - a successful load re-saves to exactly the input (up to the fields the loader ignores:
 *   the informational backend and reserved words), and loads again;
 * - after fngd_destroy no library allocation is live (no leak), besides what ASan checks.
 * Random bytes rarely carry a valid CRC-32, so each input is tried twice: as given, and with
 * its length field and checksum patched, which lets the fuzzer explore the parser behind it. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "alloc.h"
#include "crc32.h"
#include "state_format.h"
#include "state_model.h"

static sm_model_t g_model;

static void require(int cond, const char* what) {
    if (!cond) {
        fprintf(stderr, "fuzz_state_loader: invariant broken: %s\n", what);
        abort();
    }
}

int LLVMFuzzerInitialize(int* argc, char*** argv) {
    (void)argc;
    (void)argv;
    require(sm_model_init(&g_model, 1) == 0, "model allocation");
    return 0;
}

static uint8_t* save(fngd_handle_t h, size_t* bytes) {
    require(fngd_state_size(h, bytes) == FNGD_SUCCESS, "state size");
    uint8_t* img = malloc(*bytes);
    require(img != NULL, "malloc");
    require(fngd_save_state(h, img, *bytes, NULL) == FNGD_SUCCESS, "save");
    return img;
}

/* The input as the loader would save it back: ignored fields normalised, checksum redone. */
static void normalise(uint8_t* img, size_t bytes) {
    const size_t backend_at = FNGD_STATE_PREAMBLE_BYTES + 72;
    fngd_store_u32(img + backend_at, (uint32_t)FNGD_BACKEND_CPU);
    for (int l = 0; l < SM_LAYERS; ++l)
        fngd_store_u32(img + FNGD_STATE_PREAMBLE_BYTES + FNGD_STATE_CONFIG_BYTES +
                           (size_t)l * FNGD_STATE_LAYER_BYTES + 12, 0);
    fngd_store_u32(img + bytes - 4, fngd_crc32(0, img, bytes - 4));
}

static void load_one(const uint8_t* data, size_t size) {
    long baseline = fngd_test_live_allocs();
    fngd_handle_t h = NULL;
    require(sm_make_handle(&g_model, NULL, &h) == FNGD_SUCCESS, "create handle");
    require(fngd_prepare(h) == FNGD_SUCCESS, "prepare");
    size_t n_before = 0, n_after = 0;
    uint8_t* before = save(h, &n_before);
    fngd_status_t s = fngd_load_state(h, data, size);
    uint8_t* after = save(h, &n_after);
    require(n_before == n_after, "state size changed");
    if (s != FNGD_SUCCESS) {
        require(s == FNGD_ERROR_CORRUPT_STATE || s == FNGD_ERROR_VERSION_MISMATCH,
                "unexpected status for a bad image");
        require(memcmp(before, after, n_before) == 0, "a failed load changed the state");
    } else {
        require(size == n_after, "loaded an image of the wrong size");
        uint8_t* want = malloc(size);
        require(want != NULL, "malloc");
        memcpy(want, data, size);
        normalise(want, size);
        require(memcmp(want, after, size) == 0, "a loaded image does not save back the same");
        require(fngd_load_state(h, after, n_after) == FNGD_SUCCESS, "a saved image reloads");
        free(want);
    }
    free(before);
    free(after);
    fngd_destroy(h);
    require(fngd_test_live_allocs() == baseline, "library allocations leaked");
}

int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
    load_one(size ? data : (const uint8_t*)"", size);
    if (size >= FNGD_STATE_PREAMBLE_BYTES + FNGD_STATE_CRC_BYTES) {
        uint8_t* sealed = malloc(size);
        require(sealed != NULL, "malloc");
        memcpy(sealed, data, size);
        fngd_store_u64(sealed + 16, (uint64_t)size);
        fngd_store_u32(sealed + size - 4, fngd_crc32(0, sealed, size - 4));
        load_one(sealed, size);
        free(sealed);
    }
    return 0;
}
