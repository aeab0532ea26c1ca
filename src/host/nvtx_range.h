/* NVTX ranges around public entry points and backend operations, in the "libfngd" domain.
 * Implemented by the CUDA backend (src/cuda/nvtx.cu) and as no-ops in CPU-only builds
 * (src/cuda_stub/nvtx_stub.c) or with FNGD_NO_NVTX; switch off at run time with FNGD_NVTX=0
 * (read once, at the first call). */
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
