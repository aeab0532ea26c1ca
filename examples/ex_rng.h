/* Small deterministic random numbers for the example (splitmix64): the same seed gives the
 * same initial weights, split and batch order on every machine. */
#ifndef FNGD_EX_RNG_H
#define FNGD_EX_RNG_H

#include <stdint.h>

typedef struct ex_rng {
    uint64_t state;
} ex_rng_t;

static inline uint64_t ex_rng_next(ex_rng_t* r) {
    uint64_t z = (r->state += 0x9E3779B97F4A7C15ull);
    z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ull;
    z = (z ^ (z >> 27)) * 0x94D049BB133111EBull;
    return z ^ (z >> 31);
}

/* Uniform in [0, 1) with 24 random bits (exact in float). */
static inline float ex_rng_uniform(ex_rng_t* r) {
    return (float)(ex_rng_next(r) >> 40) * (1.0f / 16777216.0f);
}

/* Fisher-Yates shuffle of v[0..n). The modulo bias is below 2^-40 for n < 2^24. */
static inline void ex_rng_shuffle(ex_rng_t* r, int* v, int n) {
    for (int i = n - 1; i > 0; --i) {
        int j = (int)(ex_rng_next(r) % (uint64_t)(i + 1));
        int t = v[i];
        v[i] = v[j];
        v[j] = t;
    }
}

#endif
