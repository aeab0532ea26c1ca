#include "digits_gradcheck.h"

#include <math.h>
#include <stddef.h>
#include <stdlib.h>

#include "ex_rng.h"

static double mean_loss(net_t* net, const float* x, const int* y, int N) {
    return net_forward(net, x, y, N, NULL) / N;
}

/* Directional derivative of the mean loss along v (unit length over [begin, end)) by central
 * differences, compared with <grad, v>. Returns |analytic - numeric| / (1e-3 + |numeric|). */
static double check_direction(net_t* net, const float* x, const int* y, int N, const float* g,
                              const float* v, int64_t begin, int64_t end, float* saved) {
    /* h = 1e-3 along a unit vector: the truncation error (~h^2) is negligible, few ReLUs
     * flip, and the fp32 rounding of the loss (~1e-7 relative on a loss near 2) costs about
     * 1e-4 of the difference quotient, under the 1e-3 floor of the error measure. */
    const double h = 1e-3;
    double analytic = 0.0;
    for (int64_t k = begin; k < end; ++k) {
        saved[k - begin] = net->params[k];
        analytic += (double)g[k] * v[k - begin];
    }
    for (int64_t k = begin; k < end; ++k) net->params[k] = (float)(saved[k - begin] + h * v[k - begin]);
    double lp = mean_loss(net, x, y, N);
    for (int64_t k = begin; k < end; ++k) net->params[k] = (float)(saved[k - begin] - h * v[k - begin]);
    double lm = mean_loss(net, x, y, N);
    for (int64_t k = begin; k < end; ++k) net->params[k] = saved[k - begin];
    double numeric = (lp - lm) / (2.0 * h);
    return fabs(analytic - numeric) / (1e-3 + fabs(numeric));
}

double net_gradient_check(const float* x, const int* y, int N, uint64_t seed) {
    net_t own, *net = &own;
    if (net_create(net, N)) return INFINITY;
    net_init(net, seed);
    /* net_init zeroes the biases, and the digits have many zero pixels, so many conv
     * pre-activations would sit exactly on the ReLU kink, where the one-sided analytic
     * derivative and a central difference legitimately disagree. Random biases avoid that. */
    ex_rng_t br = {seed ^ 0x5bd1e995u};
    float* biases[3] = {net->b1, net->b2, net->b3};
    int nb[3] = {NET_CONV_OUT, NET_H2, NET_OUT};
    for (int l = 0; l < 3; ++l)
        for (int k = 0; k < nb[l]; ++k) biases[l][k] = 0.2f * (ex_rng_uniform(&br) - 0.5f);
    net_forward(net, x, y, N, NULL);
    net_backward(net, y, N);
    net_weight_grads(net, N);
    const float* blocks[7] = {net->w1, net->b1, net->w2, net->b2, net->w3, net->b3,
                              net->params + net->n_params};
    float* g = malloc((size_t)net->n_params * sizeof(float));
    float* v = malloc((size_t)net->n_params * sizeof(float));
    float* saved = malloc((size_t)net->n_params * sizeof(float));
    double worst = INFINITY;
    if (!g || !v || !saved) goto done;
    worst = 0.0;
    for (int64_t k = 0; k < net->n_params; ++k) g[k] = net->grads[k];
    ex_rng_t rng = {seed + 1};
    /* Per parameter block, two unit directions: the block's own gradient (catches a wrong
     * scale) and a random one (catches a wrong pattern, e.g. transposed indices). */
    for (int b = 0; b < 6; ++b) {
        int64_t begin = blocks[b] - net->params, end = blocks[b + 1] - net->params;
        for (int dir = 0; dir < 2; ++dir) {
            double norm = 0.0;
            for (int64_t k = begin; k < end; ++k) {
                v[k - begin] = dir == 0 ? g[k] : ex_rng_uniform(&rng) - 0.5f;
                norm += (double)v[k - begin] * v[k - begin];
            }
            if (norm == 0.0) continue;
            for (int64_t k = begin; k < end; ++k) v[k - begin] = (float)(v[k - begin] / sqrt(norm));
            double err = check_direction(net, x, y, N, g, v, begin, end, saved);
            if (err > worst) worst = err;
        }
    }
done:
    free(g);
    free(v);
    free(saved);
    net_destroy(net);
    return worst;
}
