/* Error recording: every failure writes "file:line: message" into an fngd_err_t (one per
 * handle) and returns a status. Nothing in the library exits, aborts or throws. */
#ifndef FNGD_HOST_ERROR_H
#define FNGD_HOST_ERROR_H

#include <stddef.h>

#include "fngd.h"

#ifdef __cplusplus
extern "C" {
#endif

#define FNGD_ERR_MSG_LEN 1024

typedef struct fngd_err {
    fngd_status_t status;
    char msg[FNGD_ERR_MSG_LEN];
} fngd_err_t;

/* Record a failure and return `status` (so callers can `return fngd_errf(...)`). */
fngd_status_t fngd_errf(fngd_err_t* err, fngd_status_t status, const char* file, int line,
                        const char* fmt, ...)
#if defined(__GNUC__)
    __attribute__((format(printf, 5, 6)))
#endif
    ;
void fngd_err_clear(fngd_err_t* err);
/* The error record of the calling thread, for calls that have no handle. */
fngd_err_t* fngd_thread_err(void);

#define FNGD_FAIL(err, status, ...) fngd_errf((err), (status), __FILE__, __LINE__, __VA_ARGS__)

/* Return `status` with a message when `cond` is false. */
#define FNGD_REQUIRE(err, cond, status, ...)                  \
    do {                                                      \
        if (!(cond)) return FNGD_FAIL(err, status, __VA_ARGS__); \
    } while (0)

/* Propagate a failed status (the callee has already recorded the message). */
#define FNGD_TRY(expr)                             \
    do {                                           \
        fngd_status_t fngd_try_s_ = (expr);        \
        if (fngd_try_s_ != FNGD_SUCCESS) return fngd_try_s_; \
    } while (0)

/* Same, for functions that own resources: jump to `cleanup` with `status` set. */
#define FNGD_TRY_GOTO(status, expr)                \
    do {                                           \
        (status) = (expr);                         \
        if ((status) != FNGD_SUCCESS) goto cleanup; \
    } while (0)

#ifdef __cplusplus
}
#endif

#endif
