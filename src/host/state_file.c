/* Checkpoint files. Saving is atomic: the image goes to "<path>.tmp.<pid>" in the same
 * directory, is flushed to the disk (fflush + fsync), renamed over <path>, and the directory is
 * synced so the rename itself survives a power cut. A writer killed at any point leaves either
 * the previous file or the new one at <path>, never a mix. */
#define _POSIX_C_SOURCE 200809L

#include <errno.h>
#include <fcntl.h>
#include <stdatomic.h>
#include <stdio.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "alloc.h"
#include "nvtx_range.h"
#include "state_io.h"

static _Atomic(fngd_state_write_hook_t) g_write_hook; /* zero: no hook */

void fngd_test_set_state_write_hook(fngd_state_write_hook_t hook) {
    atomic_store(&g_write_hook, hook);
}

static fngd_status_t io_error(fngd_handle_t h, int code, const char* what, const char* path) {
    return FNGD_FAIL(&h->err, FNGD_ERROR_IO, "%s '%s': %s", what, path, strerror(code));
}

/* fsync the directory holding `path`, so the rename is durable. */
static fngd_status_t sync_parent_dir(fngd_handle_t h, const char* path) {
    const char* slash = strrchr(path, '/');
    size_t len = slash ? (size_t)(slash - path) : 1;
    if (slash && len == 0) len = 1; /* "/file": the root directory */
    char* dir = fngd_host_alloc(len + 1, 8);
    FNGD_REQUIRE(&h->err, dir, FNGD_ERROR_OUT_OF_MEMORY, "cannot allocate a directory name");
    memcpy(dir, slash ? path : ".", len);
    dir[len] = '\0';
    fngd_status_t s = FNGD_SUCCESS;
    int fd = open(dir, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
    if (fd < 0) {
        s = io_error(h, errno, "cannot open the directory", dir);
    } else {
        if (fsync(fd) != 0 && errno != EINVAL) /* some file systems cannot sync directories */
            s = io_error(h, errno, "cannot sync the directory", dir);
        close(fd);
    }
    fngd_host_free(dir);
    return s;
}

static int write_all(FILE* f, const uint8_t* b, size_t n) { return fwrite(b, 1, n, f) == n; }

/* Write `image` to tmp, flushed and synced; on failure tmp is removed. */
static fngd_status_t write_tmp(fngd_handle_t h, const char* tmp, const uint8_t* image,
                               size_t bytes) {
    FILE* f = fopen(tmp, "wb");
    if (!f) return io_error(h, errno, "cannot create", tmp);
    size_t half = bytes / 2;
    int ok = write_all(f, image, half) && fflush(f) == 0;
    fngd_state_write_hook_t hook = atomic_load(&g_write_hook);
    if (ok && hook) hook(tmp, half, bytes);
    ok = ok && write_all(f, image + half, bytes - half) && fflush(f) == 0 && fsync(fileno(f)) == 0;
    int code = errno;
    if (fclose(f) != 0 && ok) {
        ok = 0;
        code = errno;
    }
    if (ok) return FNGD_SUCCESS;
    unlink(tmp);
    return io_error(h, code, "cannot write", tmp);
}

static fngd_status_t save_file_impl(fngd_handle_t h, const char* path) {
    size_t bytes = 0;
    FNGD_TRY(fngd_state_size(h, &bytes));
    size_t tmp_len = strlen(path) + 32;
    char* tmp = fngd_host_alloc(tmp_len, 8);
    uint8_t* image = fngd_host_alloc(bytes, 64);
    fngd_status_t s = FNGD_SUCCESS;
    if (!tmp || !image) {
        s = FNGD_FAIL(&h->err, FNGD_ERROR_OUT_OF_MEMORY, "cannot allocate %zu bytes for the state",
                      bytes);
        goto cleanup;
    }
    snprintf(tmp, tmp_len, "%s.tmp.%ld", path, (long)getpid());
    FNGD_TRY_GOTO(s, fngd_save_state(h, image, bytes, NULL));
    FNGD_TRY_GOTO(s, write_tmp(h, tmp, image, bytes));
    if (rename(tmp, path) != 0) {
        s = io_error(h, errno, "cannot rename the temporary file onto", path);
        unlink(tmp);
        goto cleanup;
    }
    s = sync_parent_dir(h, path);
cleanup:
    fngd_host_free(image);
    fngd_host_free(tmp);
    return s;
}

fngd_status_t fngd_save_file(fngd_handle_t h, const char* path) {
    FNGD_REQUIRE_HANDLE(h);
    FNGD_REQUIRE(&h->err, path && path[0], FNGD_ERROR_INVALID_ARGUMENT, "path is NULL or empty");
    fngd_nvtx_push("fngd_save_file");
    fngd_status_t s = save_file_impl(h, path);
    fngd_nvtx_pop();
    return s;
}

/* Read the whole file into a fresh host buffer. */
static fngd_status_t read_file(fngd_handle_t h, const char* path, uint8_t** out, size_t* bytes) {
    FILE* f = fopen(path, "rb");
    if (!f) return io_error(h, errno, "cannot open", path);
    fngd_status_t s = FNGD_SUCCESS;
    struct stat st;
    if (fstat(fileno(f), &st) != 0) {
        s = io_error(h, errno, "cannot stat", path);
    } else if (!S_ISREG(st.st_mode)) {
        s = FNGD_FAIL(&h->err, FNGD_ERROR_IO, "cannot read '%s': not a regular file", path);
    } else if ((uintmax_t)st.st_size > SIZE_MAX) {
        s = FNGD_FAIL(&h->err, FNGD_ERROR_IO, "cannot read '%s': too large", path);
    } else {
        *bytes = (size_t)st.st_size;
        *out = fngd_host_alloc(*bytes, 64);
        if (!*out) {
            s = FNGD_FAIL(&h->err, FNGD_ERROR_OUT_OF_MEMORY, "cannot allocate %zu bytes to read '%s'",
                          *bytes, path);
        } else if (fread(*out, 1, *bytes, f) != *bytes || ferror(f)) {
            s = ferror(f) ? io_error(h, errno, "cannot read", path)
                          : FNGD_FAIL(&h->err, FNGD_ERROR_IO, "'%s' changed size while reading",
                                      path);
            fngd_host_free(*out);
            *out = NULL;
        }
    }
    fclose(f);
    return s;
}

fngd_status_t fngd_load_file(fngd_handle_t h, const char* path) {
    FNGD_REQUIRE_HANDLE(h);
    FNGD_REQUIRE(&h->err, path && path[0], FNGD_ERROR_INVALID_ARGUMENT, "path is NULL or empty");
    fngd_nvtx_push("fngd_load_file");
    uint8_t* image = NULL;
    size_t bytes = 0;
    fngd_status_t s = read_file(h, path, &image, &bytes);
    if (s == FNGD_SUCCESS) s = fngd_load_state(h, image, bytes);
    fngd_host_free(image);
    fngd_nvtx_pop();
    return s;
}
