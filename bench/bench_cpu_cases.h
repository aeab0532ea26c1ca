/* Layer sets measured by the CPU step benchmark. */
#ifndef FNGD_BENCH_CPU_CASES_H
#define FNGD_BENCH_CPU_CASES_H

#include "fngd.h"

#define BENCH_MAX_LAYERS 8

typedef struct bench_case {
    const char* name;
    const char* description;
    int N; /* batch size */
    int repeat_factor; /* times the requested repeats (cheap cases get more, less noise) */
    int nlayers;
    const char* layer_names[BENCH_MAX_LAYERS];
    fngd_layer_desc_t descs[BENCH_MAX_LAYERS]; /* buffers left NULL: set by the runner */
} bench_case_t;

/* The digits example's network: conv 1->8 3x3 pad 1 on 8x8, Linear 512->64, Linear 64->10. */
void bench_case_demo(bench_case_t* c, int N);
/* One 3x3 convolution (pad 1, no bias, as before batch norm) per ResNet-18 CIFAR stage,
 * stem 3->64 32x32, 64->64 32x32, 128->128 16x16, 256->256 8x8, 512->512 4x4, then the
 * 512->100 classifier (CIFAR-100). */
void bench_case_resnet18(bench_case_t* c, int N);

/* "conv 64->64 3x3 on 32x32" or "linear 512->100" into buf. */
void bench_layer_shape(const fngd_layer_desc_t* d, char* buf, int len);

#endif
