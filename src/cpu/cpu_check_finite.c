/* check_finite: one pass over every array of the list for NaN or +-Inf. */
#include <stdint.h>
#include <string.h>

#include "cpu_internal.h"

/* 1 if the float at p is NaN or +-Inf: its 8 exponent bits are all ones (an integer test, so
 * no floating-point compare and no dependence on the compiler's NaN handling). */
static inline uint32_t nonfinite_bit(const float* p) {
    uint32_t bits;
    memcpy(&bits, p, sizeof bits);
    return (uint32_t)((bits & 0x7f800000u) == 0x7f800000u);
}

/* Elements of each segment between early-exit tests (4 segments: 4096 elements a test). */
#define CPU_FINITE_STEP ((size_t)1024)

/* 1 if x[0..n) holds a NaN or +-Inf. The array is scanned as four equal segments in lockstep:
 * four independent load streams keep more cache misses in flight than one, and the
 * branch-free OR of the bit tests vectorises (measured on the 2-vCPU EPYC VM, 128 KiB: 7.2
 * instead of 8.8 us from DRAM, 1.7 instead of 4.0 us from cache). The OR of a step decides
 * the early exit; the n % 4 tail is scanned last. */
static int any_nonfinite(const float* x, size_t n) {
    const size_t m = n / 4;
    const float *a = x, *b = x + m, *c = x + 2 * m, *d = x + 3 * m;
    for (size_t k0 = 0; k0 < m; k0 += CPU_FINITE_STEP) {
        const size_t end = m - k0 < CPU_FINITE_STEP ? m : k0 + CPU_FINITE_STEP;
        uint32_t acc = 0;
        for (size_t k = k0; k < end; ++k)
            acc |= nonfinite_bit(a + k) | nonfinite_bit(b + k) | nonfinite_bit(c + k) |
                   nonfinite_bit(d + k);
        if (acc) return 1;
    }
    uint32_t acc = 0;
    for (size_t k = 4 * m; k < n; ++k) acc |= nonfinite_bit(x + k);
    return acc != 0;
}

fngd_status_t cpu_check_finite(fngd_backend_ctx_t* ctx, const fngd_array_ref_t* arrays,
                                      int count, int* nonfinite, const fngd_call_t* call) {
    fngd_err_t* err = call->err;
    FNGD_REQUIRE(err, nonfinite && count >= 0 && (count == 0 || arrays),
                 FNGD_ERROR_INVALID_ARGUMENT, "cpu check_finite: null argument");
    for (int a = 0; a < count; ++a)
        FNGD_REQUIRE(err, arrays[a].n == 0 || arrays[a].x, FNGD_ERROR_INVALID_ARGUMENT,
                     "cpu check_finite: array %d is NULL", a);
    *nonfinite = 0;
    for (int a = 0; a < count && !*nonfinite; ++a)
        if (any_nonfinite(arrays[a].x, arrays[a].n)) *nonfinite = a + 1;
    return FNGD_SUCCESS;
}
