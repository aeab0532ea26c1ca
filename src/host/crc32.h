/* CRC-32 (IEEE 802.3 / zlib / PNG: reflected polynomial 0xEDB88320, initial value and final
 * xor 0xFFFFFFFF) guarding saved optimizer state against truncation and bit rot. */
#ifndef FNGD_HOST_CRC32_H
#define FNGD_HOST_CRC32_H

#include <stddef.h>
#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

/* CRC of data[0..n) continuing from `crc` (0 to start): crc32(a ++ b) ==
 * fngd_crc32(fngd_crc32(0, a, |a|), b, |b|). fngd_crc32(0, "123456789", 9) == 0xCBF43926. */
uint32_t fngd_crc32(uint32_t crc, const void* data, size_t n);

#ifdef __cplusplus
}
#endif

#endif
