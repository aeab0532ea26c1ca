#include "error.h"

#include <stdarg.h>
#include <stdio.h>
#include <string.h>

fngd_status_t fngd_errf(fngd_err_t* err, fngd_status_t status, const char* file, int line,
                        const char* fmt, ...) {
    if (!err) return status;
    /* Keep only the file name: full build paths add nothing for the user. */
    const char* base = strrchr(file, '/');
    base = base ? base + 1 : file;
    int n = snprintf(err->msg, sizeof err->msg, "%s:%d: ", base, line);
    if (n < 0 || (size_t)n >= sizeof err->msg) n = 0;
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(err->msg + n, sizeof err->msg - (size_t)n, fmt, ap);
    va_end(ap);
    err->status = status;
    return status;
}

void fngd_err_clear(fngd_err_t* err) {
    if (!err) return;
    err->status = FNGD_SUCCESS;
    err->msg[0] = '\0';
}
