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

/* Recompute the per-set fallback means (stored mean of each set) from the coefficient table
 * and upload them: after a collect epoch (fngd_end_epoch) and after an import
 * (fngd_set_coefficients). One summary of every set (one synchronisation), one upload. */
fngd_status_t fngd_refresh_fallback(fngd_handle_t h, const fngd_call_t* call);

/* Key offset of position keys for the current step (ids == NULL): step * max_batch. */
static inline int64_t fngd_key_offset(fngd_handle_t h) {
    return h->counters.steps_in_epoch * (int64_t)h->cfg.max_batch;
}

#ifdef __cplusplus
}
#endif

#endif
