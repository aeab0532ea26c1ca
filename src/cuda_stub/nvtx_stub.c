/* CPU-only builds: no NVTX. */
#include "nvtx_range.h"

void fngd_nvtx_push(const char* name) { (void)name; }
void fngd_nvtx_pop(void) {}
