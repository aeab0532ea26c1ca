/* Finite-difference check of the example's hand-written backward pass, so that the gradients
 * handed to libfngd (layer output gradients) and to SGD are known to be right. */
#ifndef FNGD_EX_DIGITS_GRADCHECK_H
#define FNGD_EX_DIGITS_GRADCHECK_H

#include <stdint.h>

#include "digits_net.h"

/* On a network of its own (seeded init, small random biases), compares net_weight_grads() on
 * N samples (x: N x 64, labels y) with central differences of the mean loss along two
 * directions per parameter block. Returns the largest error |<grad, v> - numeric| / (1e-3 + |numeric|). */
double net_gradient_check(const float* x, const int* y, int N, uint64_t seed);

#endif
