/* One model of the digits example and its optimizer (SGD + momentum, or FNGD through libfngd
 * followed by the same momentum update): creation, one training epoch with per-step timings
 * and divergence detection, evaluation. */
#ifndef FNGD_EX_DIGITS_MODEL_H
#define FNGD_EX_DIGITS_MODEL_H

#include <stdint.h>

#include "digits_data.h"
#include "digits_device.h"
#include "digits_net.h"
#include "digits_train.h"
#include "fngd.h"

/* A run has diverged when its training loss is not finite or exceeds DIVERGE_FACTOR times the
 * starting loss (the mean loss of the first batch, before any update: about ln 10 = 2.3 for
 * this net), checked on each epoch's mean loss, and on every batch's mean loss against
 * DIVERGE_BATCH_FACTOR (looser, since one batch is noisy; it stops an exploding run before its
 * gradients reach the optimizer). */
#define DIVERGE_FACTOR 10.0
#define DIVERGE_BATCH_FACTOR 100.0

typedef enum model_status {
    MODEL_OK = 0,
    MODEL_ERROR = 1,    /* message printed */
    MODEL_DIVERGED = 2, /* diverged_* set */
    MODEL_STEP_FAILED = 3 /* fngd_step refused the batch: step_status, step_error set, nothing
                             printed (a sweep counts a numerical failure as a failed rate, a
                             final run any failure as an error) */
} model_status_t;

/* A batch buffer: inputs, labels and data-set ids gathered from a list of ids. */
typedef struct batch {
    float* x;
    int* y;
    int64_t* ids;
} batch_t;

/* One model and its optimizer; fngd == NULL means plain SGD. Per-epoch arrays have `epochs`
 * entries; the step arrays [epoch * steps_per_epoch + step]. */
typedef struct model {
    const char* name;
    net_t net;
    fngd_handle_t fngd;
    fngd_config_t cfg;    /* FNGD: the configuration the handle was created with */
    digits_device_t* dev; /* CUDA backend: device copies of the fngd_step buffers, else NULL */
    float lr, momentum;
    int epochs, steps_per_epoch;
    double* step_ms;  /* whole step (forward to update) */
    double* opt_ms;   /* optimizer part: weight gradients (SGD) or fngd_step (FNGD), + update */
    double* loss;     /* [epoch] mean training loss over the epoch's batches */
    double* acc;      /* [epoch] accuracy on the evaluation set after the epoch */
    double* train_ms; /* [epoch] wall time of the training epoch (no evaluation) */
    int* collect;     /* [epoch] FNGD: 1 if the epoch was a collect epoch, else 0 */
    int epochs_done;  /* completed (not diverged) epochs */
    double start_loss;    /* mean loss of the very first batch; NAN before it */
    int diverged_epoch;   /* 0-based epoch of the divergence, -1 if none */
    int diverged_step;    /* its step when a batch loss diverged, -1 for the epoch's mean */
    double diverged_loss; /* the loss that diverged */
    int failed_epoch;         /* MODEL_STEP_FAILED: its epoch (0-based) */
    fngd_status_t step_status; /* MODEL_STEP_FAILED: what fngd_step returned */
    char step_error[512];      /* MODEL_STEP_FAILED: fngd_get_last_error */
} model_t;

int batch_alloc(batch_t* b, int batch);
void batch_free(batch_t* b);

/* Plain report of a failed libfngd call; returns 1 if st is an error, else 0. */
int model_check(fngd_status_t st, fngd_handle_t h, const char* what);

/* Allocate a model for `epochs` epochs over n_train samples in batches of o->batch, with
 * learning rate lr; weights from net_init(seed-derived) so every model starts the same.
 * FNGD models (use_fngd) also get their libfngd handle (num_samples = size of the id space).
 * Returns 0, or 1 with a message printed (the model is then safe to destroy). */
int model_create(model_t* m, const char* name, int use_fngd, float lr, int epochs, int n_train,
                 const train_options_t* o, int64_t num_samples, int use_cuda);
void model_destroy(model_t* m);

/* The libfngd configuration: fngd_config_init() defaults, plus what the example must set
 * (backend, max_batch, num_samples, coef_mode, mean-loss gradients, written direction) and
 * the user's overrides. */
void model_fngd_config(const train_options_t* o, int64_t num_samples, int use_cuda,
                       fngd_config_t* cfg);

/* Batch order of an epoch: ids[0..n) shuffled with a seed of (seed, epoch), the same for
 * every model so that SGD and FNGD see the same batches. */
void model_epoch_order(uint64_t seed, int epoch, const int* ids, int n, int* order);

/* Train one epoch on order[0..n) and record its times and loss. Returns MODEL_OK, or
 * MODEL_DIVERGED, MODEL_STEP_FAILED or MODEL_ERROR, after which this model must stop. */
model_status_t model_train_epoch(model_t* m, const digits_t* d, const int* order, int n,
                                 int epoch, batch_t* b);

/* Accuracy on ids[0..n) (forward only); *mean_loss (may be NULL) gets the mean loss. */
double model_evaluate(model_t* m, const digits_t* d, const int* ids, int n, batch_t* b,
                      double* mean_loss);

/* Median over epochs e with e0 <= e < e1 and (want_collect < 0 or collect[e] == want_collect)
 * of one timing array (step_ms or opt_ms); phases come from `phases` (the FNGD model's
 * collect array, so that SGD is measured over the same epochs). NAN when no step qualifies. */
double model_median(const model_t* m, const double* v, const int* phases, int want_collect,
                    int e0, int e1);

#endif
