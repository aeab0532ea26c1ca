/* Checks of a step's arguments (validate.c), all done before anything is written, so a
 * rejected step changes no state. */
#ifndef FNGD_HOST_VALIDATE_H
#define FNGD_HOST_VALIDATE_H

#include "handle.h"

#ifdef __cplusplus
extern "C" {
#endif

/* ids (host, N values) in [0, num_samples) and distinct; without ids the position keys of the
 * current step must fit in num_samples. */
fngd_status_t fngd_validate_ids(fngd_handle_t h, int N, const int64_t* ids);
/* Pointers, buffers and (config.check_finite) NaN/Inf in every input, output gradient and,
 * when not NULL, the N values of rhs. */
fngd_status_t fngd_validate_batches(fngd_handle_t h, int N, const fngd_layer_batch_t* batches,
                                    const float* rhs, const fngd_call_t* call);

#ifdef __cplusplus
}
#endif

#endif
