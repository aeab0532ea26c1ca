/* The backend call of one public entry point (fngd_call_t, src/host/backend.h): every public
 * function that reaches the backend opens one call, passes it to every operation it runs and
 * closes it on every return path (also after a failed begin, which leaves nothing to
 * restore), so the device is entered once per public call. */
#ifndef FNGD_HOST_CALL_H
#define FNGD_HOST_CALL_H

#include "handle.h"

static inline fngd_status_t fngd_call_begin(fngd_handle_t h, fngd_stream_t stream,
                                            fngd_call_t* call) {
    call->stream = stream;
    call->ws = h->workspace;
    call->ws_bytes = h->workspace_bytes;
    call->err = &h->err;
    call->restore_device = -1;
    return h->ops->begin_call(h->ctx, call);
}

static inline void fngd_call_end(fngd_handle_t h, fngd_call_t* call) {
    h->ops->end_call(h->ctx, call);
}

#endif
