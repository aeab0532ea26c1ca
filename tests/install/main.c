/* A program outside the project: finds an installed libfngd through find_package or
 * pkg-config, creates a handle, runs one collect step and prints the version. The installed
 * header's version (the generated fngd_version.h) must be the library's. */
#include <fngd.h>
#include <stdio.h>

int main(void) {
    int major, minor, patch;
    fngd_get_version(&major, &minor, &patch);
    if (major != FNGD_VERSION_MAJOR || minor != FNGD_VERSION_MINOR || patch != FNGD_VERSION_PATCH) {
        printf("installed header says %s, library %d.%d.%d\n", FNGD_VERSION_STRING, major, minor,
               patch);
        return 2;
    }
    fngd_config_t cfg;
    fngd_config_init(&cfg);
    cfg.max_batch = 2;
    cfg.num_samples = 4;
    fngd_handle_t h;
    fngd_status_t s = fngd_create(&cfg, &h);
    float gw[3] = {0}, x[2] = {1, 2}, g[2] = {3, -1};
    fngd_layer_desc_t d = fngd_generic_desc(1);
    d.grad_weight = gw;
    float G[2] = {x[0] * g[0], x[1] * g[1]};
    fngd_layer_batch_t b = {G, NULL};
    int64_t ids[2] = {0, 3};
    if (s == FNGD_SUCCESS) s = fngd_add_layer(h, &d, NULL);
    if (s == FNGD_SUCCESS) s = fngd_step(h, 2, ids, &b, NULL, NULL);
    printf("libfngd %d.%d.%d: %s, direction %g\n", major, minor, patch, fngd_status_string(s),
           gw[0]);
    fngd_destroy(h);
    return s == FNGD_SUCCESS ? 0 : 1;
}
