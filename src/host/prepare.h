/* The backend memory of a handle (prepare.c): fngd_prepare (public, fngd.h) allocates it and
 * freezes the layer set; fngd_release_backend_memory frees all of it and un-prepares. */
#ifndef FNGD_HOST_PREPARE_H
#define FNGD_HOST_PREPARE_H

#include "handle.h"

#ifdef __cplusplus
extern "C" {
#endif

void fngd_release_backend_memory(fngd_handle_t h);

/* fngd_prepare inside an open call (the first step, a state load): allocates what
 * fngd_prepare does, nothing when already prepared, and points the call at the workspace. */
fngd_status_t fngd_prepare_in_call(fngd_handle_t h, fngd_call_t* call);

#ifdef __cplusplus
}
#endif

#endif
