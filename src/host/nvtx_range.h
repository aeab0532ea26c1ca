/* NVTX ranges around public entry points. Implemented by the CUDA backend (src/cuda) and as
 * no-ops in CPU-only builds (src/cuda_stub); switch off at run time with FNGD_NVTX=0. */
#ifndef FNGD_HOST_NVTX_RANGE_H
#define FNGD_HOST_NVTX_RANGE_H

#ifdef __cplusplus
extern "C" {
#endif

void fngd_nvtx_push(const char* name);
void fngd_nvtx_pop(void);

#ifdef __cplusplus
}
#endif

#endif
