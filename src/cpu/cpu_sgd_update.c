/* sgd_update: SGD with momentum and (decoupled, not preconditioned) weight decay, in place,
 * for a list of tensors. */
#include "cpu_internal.h"

fngd_status_t cpu_sgd_update(fngd_backend_ctx_t* ctx, const fngd_update_tensor_t* tensors,
                             int count, float lr, float momentum, float weight_decay,
                             const fngd_call_t* call) {
    fngd_err_t* err = call->err;
    FNGD_REQUIRE(err, count >= 0 && (count == 0 || tensors), FNGD_ERROR_INVALID_ARGUMENT,
                 "cpu sgd_update: %d tensors, list %p", count, (const void*)tensors);
    for (int t = 0; t < count; ++t) {
        const fngd_update_tensor_t* x = &tensors[t];
        FNGD_REQUIRE(err, x->n >= 0 && (x->n == 0 || (x->param && x->dir)),
                     FNGD_ERROR_INVALID_ARGUMENT, "cpu sgd_update: tensor %d: null buffer or n = %lld",
                     t, (long long)x->n);
        FNGD_REQUIRE(err, x->mom || momentum == 0.0f, FNGD_ERROR_INVALID_ARGUMENT,
                     "cpu sgd_update: tensor %d: momentum %g without a momentum buffer", t,
                     (double)momentum);
    }
    for (int t = 0; t < count; ++t) {
        float *param = tensors[t].param, *mom = tensors[t].mom;
        const float* dir = tensors[t].dir;
        for (int64_t k = 0; k < tensors[t].n; ++k) {
            const float d = dir[k] + weight_decay * param[k];
            float v = d;
            if (mom) {
                mom[k] = momentum * mom[k] + d;
                v = mom[k];
            }
            param[k] -= lr * v;
        }
    }
    return FNGD_SUCCESS;
}
