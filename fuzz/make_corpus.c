/* Writes the seed corpus of fuzz_state_loader into a directory: valid state images of the
 * tests/state_model.h run at several points (fresh, mid collect epoch, epoch ends, reuse and
 * recollect epochs), images of other configurations (global coefficients, no momentum), and
 * truncated and bit-flipped copies. Usage: fngd_make_corpus DIR */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "state_model.h"

static int write_file(const char* dir, const char* name, const uint8_t* b, size_t n) {
    char path[4096];
    snprintf(path, sizeof path, "%s/%s", dir, name);
    FILE* f = fopen(path, "wb");
    if (!f) return -1;
    int ok = fwrite(b, 1, n, f) == n;
    return fclose(f) == 0 && ok ? 0 : -1;
}

/* Image of the model's handle (configuration cfg) after `actions` schedule actions. */
static uint8_t* image_after(const fngd_config_t* cfg, int actions, size_t* bytes) {
    sm_model_t m;
    fngd_handle_t h = NULL;
    uint8_t* img = NULL;
    if (sm_model_init(&m, 1) != 0) return NULL;
    if (sm_make_handle(&m, cfg, &h) == FNGD_SUCCESS && sm_run(h, &m, 0, actions) == FNGD_SUCCESS &&
        fngd_state_size(h, bytes) == FNGD_SUCCESS && (img = malloc(*bytes)) != NULL &&
        fngd_save_state(h, img, *bytes, NULL) != FNGD_SUCCESS) {
        free(img);
        img = NULL;
    }
    if (!img) fprintf(stderr, "make_corpus: %s\n", fngd_get_last_error(h));
    fngd_destroy(h);
    sm_model_free(&m);
    return img;
}

int main(int argc, char** argv) {
    if (argc != 2) {
        fprintf(stderr, "usage: %s DIR\n", argv[0]);
        return 2;
    }
    const char* dir = argv[1];
    fngd_config_t cfg = sm_config();
    const int points[] = {0, 3, 4, 5, 7, 10, 12, 15};
    char name[64];
    int failed = 0;
    size_t n = 0;
    for (size_t k = 0; k < sizeof points / sizeof points[0]; ++k) {
        uint8_t* img = image_after(&cfg, points[k], &n);
        snprintf(name, sizeof name, "valid_after_%02d", points[k]);
        failed |= !img || write_file(dir, name, img, n);
        if (img && points[k] == 7) { /* truncations and a bit flip of a mid-run image */
            const size_t cuts[] = {0, 8, 24, 28, 112, n / 2, n - 5, n - 1};
            for (size_t c = 0; c < sizeof cuts / sizeof cuts[0]; ++c) {
                snprintf(name, sizeof name, "truncated_%04zu", cuts[c]);
                failed |= write_file(dir, name, img, cuts[c]);
            }
            img[n / 3] ^= 0x10;
            failed |= write_file(dir, "bitflip", img, n);
        }
        free(img);
    }
    fngd_config_t global = cfg, plain = cfg;
    global.coef_mode = FNGD_COEF_GLOBAL;
    plain.momentum = 0.0f;
    uint8_t* img = image_after(&global, 7, &n);
    failed |= !img || write_file(dir, "other_config_global", img, n);
    free(img);
    img = image_after(&plain, 7, &n);
    failed |= !img || write_file(dir, "other_config_no_momentum", img, n);
    free(img);
    if (failed) fprintf(stderr, "make_corpus: could not write every file into %s\n", dir);
    return failed ? 1 : 0;
}
