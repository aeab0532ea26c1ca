/* Fused multi-tensor SGD step (weight decay not preconditioned), for each tensor k:
 *   d = dir + weight_decay * param;  m = momentum * mom + d (mom NULL: m = d);
 *   mom = m;  param -= lr * m.
 * Up to FNGD_SGD_MAX_TENSORS tensors per launch; blocks are assigned to tensors by the
 * prefix table block_start (computed by the launcher). */
#ifndef FNGD_KERNELS_SGD_UPDATE_CUH
#define FNGD_KERNELS_SGD_UPDATE_CUH

#include <cuda_runtime.h>
#include <stdint.h>

#define FNGD_SGD_MAX_TENSORS 24

struct fngd_sgd_tensor {
    float* param;
    const float* dir;
    float* mom;
    int64_t n;
};

struct fngd_sgd_params {
    fngd_sgd_tensor t[FNGD_SGD_MAX_TENSORS];
    int num_tensors;
    float lr, momentum, weight_decay;
};

cudaError_t fngd_launch_sgd_update(const fngd_sgd_params& P, cudaStream_t stream);

#endif
