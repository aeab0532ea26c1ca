#include "digits_sweep.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>

#include "digits_model.h"
#include "ex_time.h"

/* One candidate: train, then validation accuracy and loss after the last epoch. Returns
 * MODEL_OK, MODEL_DIVERGED, MODEL_STEP_FAILED (a numerical failure of libfngd at this rate,
 * reported; the rate is out) or MODEL_ERROR (anything else: the job stops). */
static model_status_t sweep_one(const char* name, int use_fngd, float lr,
                                const train_options_t* o, const digits_t* d,
                                const sweep_split_t* sp, int64_t num_samples, int use_cuda,
                                batch_t* b, int* order, double* val_acc, double* val_loss) {
    model_t m;
    model_status_t st = MODEL_ERROR;
    double t0 = ex_now_ms();
    if (model_create(&m, name, use_fngd, lr, o->epochs, sp->n_fit, o, num_samples, use_cuda))
        goto done;
    for (int e = 0; e < o->epochs; ++e) {
        model_epoch_order(o->seed, e, sp->fit_ids, sp->n_fit, order);
        st = model_train_epoch(&m, d, order, sp->n_fit, e, b);
        if (st != MODEL_OK) break;
    }
    if (st == MODEL_OK) {
        *val_acc = model_evaluate(&m, d, sp->val_ids, sp->n_val, b, val_loss);
        printf("  %-5s lr %-8g val acc %5.1f%%  val loss %.4f  train loss %.4f  (%.2f s)\n", name,
               lr, 100.0 * *val_acc, *val_loss, m.loss[o->epochs - 1],
               (ex_now_ms() - t0) / 1e3);
    } else if (st == MODEL_DIVERGED) {
        printf("  %-5s lr %-8g diverged in epoch %d (training loss %.3g)  (%.2f s)\n", name, lr,
               m.diverged_epoch + 1, m.diverged_loss, (ex_now_ms() - t0) / 1e3);
    } else if (st == MODEL_STEP_FAILED) {
        int numeric = m.step_status == FNGD_ERROR_NOT_POSITIVE_DEFINITE ||
                      m.step_status == FNGD_ERROR_NONFINITE;
        printf("  %-5s lr %-8g %s in epoch %d: fngd_step: %s: %s\n", name, lr,
               numeric ? "failed" : "error", m.failed_epoch + 1,
               fngd_status_string(m.step_status), m.step_error);
        if (!numeric) st = MODEL_ERROR;
    }
done:
    model_destroy(&m);
    return st;
}

int digits_sweep(const char* name, int use_fngd, const float* lrs, int n_lrs,
                 const train_options_t* o, const digits_t* d, const sweep_split_t* split,
                 int64_t num_samples, int use_cuda, float* chosen) {
    batch_t b;
    int* order = malloc((size_t)split->n_fit * sizeof(int));
    int rc = TRAIN_EXIT_ERROR, best = -1;
    double best_acc = -1.0, best_loss = INFINITY;
    if (batch_alloc(&b, o->batch) || !order) {
        fprintf(stderr, "error: out of memory\n");
        goto done;
    }
    for (int k = 0; k < n_lrs; ++k) {
        double acc = 0.0, loss = 0.0;
        model_status_t st = sweep_one(name, use_fngd, lrs[k], o, d, split, num_samples,
                                      use_cuda, &b, order, &acc, &loss);
        if (st == MODEL_ERROR) goto done;
        if (st != MODEL_OK) continue;
        if (acc > best_acc || (acc == best_acc && loss < best_loss)) {
            best = k;
            best_acc = acc;
            best_loss = loss;
        }
    }
    if (best < 0) {
        fprintf(stderr, "error: %s diverged at every learning rate of the sweep; give lower "
                        "ones (--%s)\n", name, use_fngd ? "fngd-lrs" : "sgd-lrs");
        rc = TRAIN_EXIT_DIVERGED;
        goto done;
    }
    *chosen = lrs[best];
    printf("  -> %s lr %g (best final validation accuracy, %.1f%%)\n", name, lrs[best],
           100.0 * best_acc);
    rc = TRAIN_EXIT_OK;
done:
    batch_free(&b);
    free(order);
    return rc;
}
