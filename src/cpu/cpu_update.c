/* sgd_update: SGD with momentum and (decoupled, not preconditioned) weight decay, in place. */
#include "cpu_internal.h"

fngd_status_t cpu_sgd_update(fngd_backend_ctx_t* ctx, float* param, const float* dir,
                             float* mom, int64_t n, float lr, float momentum,
                             float weight_decay, fngd_stream_t stream, fngd_err_t* err) {
    FNGD_REQUIRE(err, n >= 0 && (n == 0 || (param && dir)), FNGD_ERROR_INVALID_ARGUMENT,
                 "cpu sgd_update: null buffer or n = %lld < 0", (long long)n);
    FNGD_REQUIRE(err, mom || momentum == 0.0f, FNGD_ERROR_INVALID_ARGUMENT,
                 "cpu sgd_update: momentum %g without a momentum buffer", (double)momentum);
    for (int64_t k = 0; k < n; ++k) {
        const float d = dir[k] + weight_decay * param[k];
        float v = d;
        if (mom) {
            mom[k] = momentum * mom[k] + d;
            v = mom[k];
        }
        param[k] -= lr * v;
    }
    return FNGD_SUCCESS;
}
