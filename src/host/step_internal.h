/* Pieces of a step shared by step.c, epoch.c and validate.c. */
#ifndef FNGD_HOST_STEP_INTERNAL_H
#define FNGD_HOST_STEP_INTERNAL_H

#include "handle.h"

fngd_status_t fngd_validate_ids(fngd_handle_t h, int N, const int64_t* ids);
/* Pointers, buffers and (config.check_finite) NaN/Inf in every input, output gradient and,
 * when not NULL, the N values of rhs. */
fngd_status_t fngd_validate_batches(fngd_handle_t h, int N, const fngd_layer_batch_t* batches,
                                    const float* rhs, fngd_stream_t stream);
fngd_status_t fngd_prepare(fngd_handle_t h);

/* Key offset of position keys for the current step (ids == NULL). */
static inline int64_t fngd_key_offset(fngd_handle_t h) {
    return h->counters.steps_in_epoch * (int64_t)h->cfg.max_batch;
}

#endif
