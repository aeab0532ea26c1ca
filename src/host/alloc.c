#include "alloc.h"

#include <stdatomic.h>
#include <stdlib.h>
#include <string.h>

/* Fault injection state; atomics so two handles on two threads stay well defined. */
static _Atomic long g_fail_after = -1;
static _Atomic long g_count = 0;
static _Atomic long g_live = 0;

void* fngd_host_alloc(size_t bytes, size_t align) {
    long fail = atomic_load(&g_fail_after);
    atomic_fetch_add(&g_count, 1);
    if (fail >= 0) {
        if (fail == 0) {
            atomic_store(&g_fail_after, -1);
            return NULL;
        }
        atomic_fetch_sub(&g_fail_after, 1);
    }
    if (bytes == 0) bytes = 1;
    if (align < sizeof(void*)) align = sizeof(void*);
    size_t rounded = (bytes + align - 1) / align * align;
    if (rounded < bytes) return NULL; /* overflow */
    void* p = aligned_alloc(align, rounded);
    if (!p) return NULL;
    memset(p, 0, rounded);
    atomic_fetch_add(&g_live, 1);
    return p;
}

void fngd_host_free(void* ptr) {
    if (!ptr) return;
    atomic_fetch_sub(&g_live, 1);
    free(ptr);
}

long fngd_test_fail_alloc_after(long n) {
    atomic_store(&g_fail_after, n < 0 ? -1 : n);
    return atomic_exchange(&g_count, 0);
}

long fngd_test_live_allocs(void) { return atomic_load(&g_live); }
