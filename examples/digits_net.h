/* The example's network, forward and backward written out in C (BLAS for the dense products):
 *   conv 1->8, 3x3, pad 1 on 8x8 (+ReLU) -> flatten 512 -> Linear 512->64 (+ReLU)
 *   -> Linear 64->10 -> softmax cross-entropy, mean over the batch.
 * Back-propagation is split in two so that an optimizer can replace the weight gradients:
 * net_backward() produces the output gradient of every layer (what libfngd needs), and
 * net_weight_grads() turns them into the plain (SGD) weight gradients. */
#ifndef FNGD_EX_DIGITS_NET_H
#define FNGD_EX_DIGITS_NET_H

#include <stdint.h>

#define NET_HW 8                        /* image height = width */
#define NET_POS (NET_HW * NET_HW)       /* 64 positions */
#define NET_CONV_OUT 8                  /* conv output channels */
#define NET_KK 9                        /* 3x3 kernel, one input channel */
#define NET_H1 (NET_CONV_OUT * NET_POS) /* 512 flattened conv features */
#define NET_H2 64
#define NET_OUT 10

typedef struct net {
    int max_batch;
    int64_t n_params;
    float* params; /* all parameters, in the order w1 b1 w2 b2 w3 b3 */
    float* grads;  /* same layout: the step direction */
    float* mom;    /* same layout: momentum buffer */
    float *w1, *b1, *w2, *b2, *w3, *b3;       /* views into params */
    float *gw1, *gb1, *gw2, *gb2, *gw3, *gb3; /* views into grads */
    /* Activations and output gradients for up to max_batch samples (row-major, NCHW). */
    const float* x; /* the batch input of the last forward (borrowed), N x 1 x 8 x 8 */
    float* col;     /* N x 9 x 64 im2col patches of x */
    float *z1, *a1; /* N x 8 x 8 x 8 conv pre/post ReLU */
    float *z2, *a2; /* N x 64 */
    float* logits;  /* N x 10, softmax probabilities after net_forward */
    float *dz1, *dz2, *dlogits; /* output gradients of conv, fc1, fc2 (mean-loss convention) */
} net_t;

/* Allocate a network for batches of up to max_batch. Returns 0 on success. */
int net_create(net_t* net, int max_batch);
void net_destroy(net_t* net);
/* He-uniform weights, zero biases and momentum, from `seed`. */
void net_init(net_t* net, uint64_t seed);
/* Copy parameters and momentum (same init for two optimizers). */
void net_copy(net_t* dst, const net_t* src);

/* Forward pass on N <= max_batch samples (x: N x 64). Returns the summed cross-entropy
 * loss (not divided by N); *correct (may be NULL) receives the number of right predictions. */
double net_forward(net_t* net, const float* x, const int* y, int N, int* correct);
/* Output gradients of the mean loss (1/N) sum_i l_i for the last forward: dlogits, dz2, dz1. */
void net_backward(net_t* net, const int* y, int N);
/* Plain weight gradients (mean loss) from the stored activations and output gradients. */
void net_weight_grads(net_t* net, int N);
/* SGD with momentum on all parameters: mom = momentum*mom + grad; param -= lr*mom. */
void net_sgd_update(net_t* net, float lr, float momentum);

#endif
