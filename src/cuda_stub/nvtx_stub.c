/* CPU-only builds: the NVTX entry points the host logic calls are no-ops. */
#include "../cuda/nvtx.h"

void fngd_nvtx_push(const char* name) { (void)name; }
void fngd_nvtx_pop(void) {}
