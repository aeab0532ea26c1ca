/* The backend memory of a handle (prepare.c): fngd_prepare (public, fngd.h) allocates it and
 * freezes the layer set; fngd_release_backend_memory frees all of it and un-prepares. */
#ifndef FNGD_HOST_PREPARE_H
#define FNGD_HOST_PREPARE_H

#include "handle.h"

#ifdef __cplusplus
extern "C" {
#endif

void fngd_release_backend_memory(fngd_handle_t h);

#ifdef __cplusplus
}
#endif

#endif
