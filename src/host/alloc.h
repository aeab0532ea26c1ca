/* Every host allocation of the library goes through here, so tests can inject failures at
 * each allocation site (fngd_test_fail_alloc_after) and check nothing leaks. */
#ifndef FNGD_HOST_ALLOC_H
#define FNGD_HOST_ALLOC_H

#include <stddef.h>

#ifdef __cplusplus
extern "C" {
#endif

/* Zero-filled, `align`-byte aligned (power of two, >= sizeof(void*)); NULL on failure. */
void* fngd_host_alloc(size_t bytes, size_t align);
void fngd_host_free(void* ptr);

/* Test hook: the n-th allocation from now (0 = the next) fails; -1 disables. Returns the number
 * of allocations made since the last call, so a test can count a code path's allocation sites. */
long fngd_test_fail_alloc_after(long n);
/* Test hook: live allocations (allocated and not yet freed). */
long fngd_test_live_allocs(void);

#ifdef __cplusplus
}
#endif

#endif
