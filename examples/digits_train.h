/* The training driver of the digits example: two models, SGD and FNGD, same init. */
#ifndef FNGD_EX_DIGITS_TRAIN_H
#define FNGD_EX_DIGITS_TRAIN_H

#include <stdint.h>

typedef struct train_options {
    int epochs;
    int batch;
    float lr;        /* SGD learning rate */
    float fngd_lr;   /* learning rate applied to the FNGD direction */
    float momentum;  /* both optimizers */
    double damping;  /* FNGD gamma: lambda = gamma * trace(K) / N */
    uint64_t seed;
    const char* data_path;
    int global;      /* FNGD_COEF_GLOBAL instead of per layer */
    int want_cuda;   /* --backend cuda was asked for */
    int quick;       /* CI smoke run: subset, few epochs, gradient check */
} train_options_t;

/* Run the whole example and print its report. Returns 0 on success. */
int train_digits_run(const train_options_t* o);

#endif
