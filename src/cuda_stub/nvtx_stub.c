/* CPU-only builds: the NVTX entry points the host logic calls are no-ops. */
#include "nvtx_range.h"

void fngd_nvtx_push(const char* name) { (void)name; }
void fngd_nvtx_pop(void) {}
