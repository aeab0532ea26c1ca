/* The epoch state machine (epoch.c): which phase an epoch is in, and the position keys of the
 * current step. Every place that needs the phase of an epoch asks fngd_epoch_phase. */
#ifndef FNGD_HOST_EPOCH_H
#define FNGD_HOST_EPOCH_H

#include "handle.h"

#ifdef __cplusplus
extern "C" {
#endif

/* Collect in epoch 0 and, with recompute_every = R > 0, in every epoch that is a multiple of
 * R; reuse otherwise. */
fngd_phase_t fngd_epoch_phase(const fngd_config_t* cfg, int epoch);

/* Key offset of position keys for the current step (ids == NULL): step * max_batch. */
static inline int64_t fngd_key_offset(fngd_handle_t h) {
    return h->counters.steps_in_epoch * (int64_t)h->cfg.max_batch;
}

#ifdef __cplusplus
}
#endif

#endif
