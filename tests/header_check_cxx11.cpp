// Compiled (never run) as C++11 with -pedantic-errors: fngd.h and FNGD_CONFIG_INIT stay usable
// from a C++11 consumer, so the macro must not use C++20 designated initializers.
#include <fngd.h>

fngd_config_t fngd_header_check_config() {
    fngd_config_t c = FNGD_CONFIG_INIT;
    return c;
}
