/* sgd_update: SGD with momentum and decoupled weight decay for a list of tensors. */
#include <string.h>

#include "cuda_common.h"
#include "kernels/sgd_update.cuh"

/* All tensors of a step in as few launches as the kernel's parameter table allows
 * (FNGD_SGD_MAX_TENSORS per launch, passed by value: no upload, capture-safe). */
fngd_status_t fngd_cuda_sgd_update(fngd_backend_ctx_t* ctx, const fngd_update_tensor_t* tensors,
                                   int count, float lr, float momentum, float weight_decay,
                                   const fngd_call_t* call)
{
    fngd_err_t* err = call->err;
    fngd_nvtx_range r("update");
    FNGD_REQUIRE(err, count >= 0 && (count == 0 || tensors), FNGD_ERROR_INVALID_ARGUMENT,
                 "cuda sgd_update: %d tensors, list %p", count, (const void*)tensors);
    for (int t = 0; t < count; ++t) {
        const fngd_update_tensor_t& x = tensors[t];
        FNGD_REQUIRE(err, x.n >= 0 && (x.n == 0 || (x.param && x.dir)),
                     FNGD_ERROR_INVALID_ARGUMENT, "cuda sgd_update: tensor %d: null buffer or n = %lld",
                     t, (long long)x.n);
        FNGD_REQUIRE(err, x.mom || momentum == 0.0f, FNGD_ERROR_INVALID_ARGUMENT,
                     "cuda sgd_update: tensor %d: momentum %g without a momentum buffer", t,
                     (double)momentum);
    }
    const cudaStream_t s = fngd_cuda_stream(call->stream);
    fngd_sgd_params P;
    memset(&P, 0, sizeof(P));
    P.lr = lr;
    P.momentum = momentum;
    P.weight_decay = weight_decay;
    for (int t = 0; t < count; ++t) {
        if (tensors[t].n == 0) continue;
        fngd_sgd_tensor& d = P.t[P.num_tensors++];
        d.param = tensors[t].param;
        d.dir = tensors[t].dir;
        d.mom = tensors[t].mom; /* NULL: no momentum buffer, the step uses d itself */
        d.n = tensors[t].n;
        if (P.num_tensors == FNGD_SGD_MAX_TENSORS) {
            FNGD_CUDA_TRY(err, fngd_launch_sgd_update(P, s));
            P.num_tensors = 0;
        }
    }
    if (P.num_tensors > 0) FNGD_CUDA_TRY(err, fngd_launch_sgd_update(P, s));
    return FNGD_SUCCESS;
}
