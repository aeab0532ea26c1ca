/* Scoped switch to a backend context's device (C++ / nvcc only).
 *
 * The CUDA runtime's current device is per host thread and belongs to the caller: a multi-GPU
 * program that calls fngd_step for a handle on device 1 while its thread works on device 0 must
 * find device 0 current afterwards. Every backend entry point therefore enters the context's
 * device through this guard: it records the current device, calls cudaSetDevice only when that
 * differs (the common single-GPU case costs one cudaGetDevice), and switches back when the
 * guard leaves scope, on success and on every early error return alike. */
#ifndef FNGD_CUDA_DEVICE_GUARD_H
#define FNGD_CUDA_DEVICE_GUARD_H

#include <cuda_runtime.h>

#include "error.h"

class fngd_cuda_device_guard {
public:
    fngd_cuda_device_guard() = default;
    /* A failed restore cannot be returned from here; it stays the thread's last CUDA error,
     * where the caller's next cudaGetLastError finds it. */
    ~fngd_cuda_device_guard()
    {
        if (switched_) (void)cudaSetDevice(previous_);
    }
    fngd_cuda_device_guard(const fngd_cuda_device_guard&) = delete;
    fngd_cuda_device_guard& operator=(const fngd_cuda_device_guard&) = delete;

    /* Make `device` current for the guard's scope. On failure nothing was switched. */
    fngd_status_t enter(int device, fngd_err_t* err)
    {
        int current = -1;
        cudaError_t e = cudaGetDevice(&current);
        if (e != cudaSuccess) return fail(err, e, "cudaGetDevice", device);
        if (current == device) return FNGD_SUCCESS;
        e = cudaSetDevice(device);
        if (e != cudaSuccess) return fail(err, e, "cudaSetDevice", device);
        previous_ = current;
        switched_ = true;
        return FNGD_SUCCESS;
    }

private:
    static fngd_status_t fail(fngd_err_t* err, cudaError_t e, const char* what, int device)
    {
        const fngd_status_t s =
            e == cudaErrorMemoryAllocation ? FNGD_ERROR_OUT_OF_MEMORY : FNGD_ERROR_BACKEND;
        return FNGD_FAIL(err, s, "%s (entering device %d) failed: %s (%s)", what, device,
                         cudaGetErrorName(e), cudaGetErrorString(e));
    }

    int previous_ = 0;
    bool switched_ = false;
};

#endif
