/* The learning-rate sweep of the digits example: per optimizer, one run per candidate rate
 * on a validation split of the training data, and the rate with the best final validation
 * accuracy (ties: lower validation loss; a diverged run is never picked). */
#ifndef FNGD_EX_DIGITS_SWEEP_H
#define FNGD_EX_DIGITS_SWEEP_H

#include "digits_data.h"
#include "digits_train.h"

/* The split: training ids fit_ids[0..n_fit) and validation ids val_ids[0..n_val). */
typedef struct sweep_split {
    const int* fit_ids;
    int n_fit;
    const int* val_ids;
    int n_val;
} sweep_split_t;

/* Train a fresh model (the same initial weights as the final runs) for o->epochs epochs at
 * each of lrs[0..n_lrs), print one line per rate, and set *chosen. Returns TRAIN_EXIT_OK,
 * TRAIN_EXIT_DIVERGED when every rate diverged (message printed), or TRAIN_EXIT_ERROR. */
int digits_sweep(const char* name, int use_fngd, const float* lrs, int n_lrs,
                 const train_options_t* o, const digits_t* d, const sweep_split_t* split,
                 int64_t num_samples, int use_cuda, float* chosen);

#endif
