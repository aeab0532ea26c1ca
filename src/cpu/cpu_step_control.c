/* dot and scale: the two reductions the step-size control (fngd_step_control_t) needs. */
#include "cpu_internal.h"

fngd_status_t cpu_dot(fngd_backend_ctx_t* ctx, const float* x, const float* y, int64_t n,
                      float* out, const fngd_call_t* call) {
    fngd_err_t* err = call->err;
    FNGD_REQUIRE(err, out && n >= 0 && (n == 0 || (x && y)), FNGD_ERROR_INVALID_ARGUMENT,
                 "cpu dot: null buffer or n = %lld", (long long)n);
    double sum = 0.0;
    for (int64_t k = 0; k < n; ++k) sum += (double)x[k] * (double)y[k];
    *out = (float)sum;
    return FNGD_SUCCESS;
}

fngd_status_t cpu_scale(fngd_backend_ctx_t* ctx, float* x, int64_t n, float s,
                        const fngd_call_t* call) {
    fngd_err_t* err = call->err;
    FNGD_REQUIRE(err, n >= 0 && (n == 0 || x), FNGD_ERROR_INVALID_ARGUMENT,
                 "cpu scale: null buffer or n = %lld", (long long)n);
    for (int64_t k = 0; k < n; ++k) x[k] *= s;
    return FNGD_SUCCESS;
}
