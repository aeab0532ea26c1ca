/* NVTX ranges in the "libfngd" domain. Both functions are no-ops when the library is built
 * with FNGD_NO_NVTX, without CUDA (src/cuda_stub/nvtx_stub.c), or when the environment
 * variable FNGD_NVTX is "0" (read once, at the first call). */
#ifndef FNGD_CUDA_NVTX_H
#define FNGD_CUDA_NVTX_H

#ifdef __cplusplus
extern "C" {
#endif

void fngd_nvtx_push(const char* name);
void fngd_nvtx_pop(void);

#ifdef __cplusplus
}
#endif

#endif
