/* The training driver of the digits example: a learning-rate sweep per optimizer on a
 * validation split, then SGD and FNGD from the same init at their chosen rates. */
#ifndef FNGD_EX_DIGITS_TRAIN_H
#define FNGD_EX_DIGITS_TRAIN_H

#include <stdint.h>

#include "fngd.h"

#define TRAIN_MAX_LRS 16

/* Exit statuses of the example (train_digits_run returns them). */
#define TRAIN_EXIT_OK 0
#define TRAIN_EXIT_ERROR 1    /* bad option, unreadable data, libfngd or CUDA error */
#define TRAIN_EXIT_DIVERGED 3 /* a final run diverged, or every rate of a sweep did */

/* The libfngd settings the user gave on the command line; everything else (and these, when
 * has_* is 0) comes from fngd_config_init(), so the example runs the library's defaults. */
typedef struct fngd_overrides {
    int has_damping;
    double damping;
    int has_damping_kind;
    fngd_damping_kind_t damping_kind;
    int has_filter;
    fngd_coef_filter_t filter;
    int has_exact_small;
    int exact_small;
    int has_step_control;
    fngd_step_control_t step_control;
    int has_kl_clip;
    double kl_clip;
} fngd_overrides_t;

typedef struct train_options {
    int epochs;
    int batch;
    float lr;       /* SGD learning rate; 0 = pick it with the sweep over sgd_lrs */
    float fngd_lr;  /* learning rate applied to the FNGD direction; 0 = sweep over fngd_lrs */
    float sgd_lrs[TRAIN_MAX_LRS];
    int n_sgd_lrs;
    float fngd_lrs[TRAIN_MAX_LRS];
    int n_fngd_lrs;
    float momentum; /* both optimizers */
    double target;  /* test accuracy whose first epoch (and training seconds) is reported */
    fngd_overrides_t fngd;
    uint64_t seed;
    const char* data_path;
    int global;    /* FNGD_COEF_GLOBAL instead of per layer */
    int want_cuda; /* --backend cuda was asked for */
    int quick;     /* CI smoke run: subset, few epochs, gradient check */
} train_options_t;

/* Run the whole example and print its report. Returns one of the TRAIN_EXIT_* statuses. */
int train_digits_run(const train_options_t* o);

#endif
