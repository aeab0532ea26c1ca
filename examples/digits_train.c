#include "digits_train.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "digits_data.h"
#include "digits_gradcheck.h"
#include "digits_model.h"
#include "digits_report.h"
#include "digits_sweep.h"
#include "ex_rng.h"
#include "ex_time.h"

#define QUICK_TRAIN 500 /* training samples in a --quick run (last batch partial) */
#define TEST_SAMPLES 297
#define VAL_DIVISOR 5   /* the sweep validates on the last 1/5 of the training ids */

/* 1 to run libfngd's CUDA backend: asked for, compiled in, and a device present. Otherwise
 * the example says why and falls back to the CPU backend (so scripts/run_main.sh --backend
 * cuda still trains on a machine without a GPU). */
static int choose_cuda(const train_options_t* o) {
    if (!o->want_cuda) return 0;
    int avail = 0;
    if (fngd_backend_available(FNGD_BACKEND_CUDA, &avail) != FNGD_SUCCESS) avail = 0;
    if (avail && digits_device_compiled()) return 1;
    printf("note: --backend cuda: %s; falling back to the CPU backend.\n",
           !digits_device_compiled()
               ? "this build has no CUDA backend (configure with -DFNGD_ENABLE_CUDA=ON)"
               : "no CUDA device is available");
    return 0;
}

static int gradient_check(const digits_t* d, const int* ids, uint64_t seed) {
    enum { N = 8 };
    float x[N * DIGITS_PIXELS];
    int y[N];
    for (int i = 0; i < N; ++i) {
        memcpy(x + (size_t)i * DIGITS_PIXELS, d->x + (size_t)ids[i] * DIGITS_PIXELS,
               DIGITS_PIXELS * sizeof(float));
        y[i] = d->y[ids[i]];
    }
    double err = net_gradient_check(x, y, N, seed);
    /* See net_gradient_check for the error measure; a wrong backward gives errors near 1. */
    printf("gradient check of the example's backward pass: max rel. error %.2e (%s)\n", err,
           err < 5e-2 ? "ok" : "FAILED");
    return err < 5e-2 ? 0 : 1;
}

/* The learning rates: given ones as they are, the others from the sweep on a validation split
 * of the training ids. Returns a TRAIN_EXIT_* status. */
static int choose_rates(const train_options_t* o, const digits_t* d, const int* train_ids,
                        int n_train, int use_cuda, float* sgd_lr, float* fngd_lr) {
    *sgd_lr = o->lr;
    *fngd_lr = o->fngd_lr;
    if (o->lr > 0.0f && o->fngd_lr > 0.0f) return TRAIN_EXIT_OK;
    int n_val = n_train / VAL_DIVISOR;
    sweep_split_t sp = {train_ids, n_train - n_val, train_ids + n_train - n_val, n_val};
    printf("\nlearning-rate sweep: %d epochs per rate on %d training samples, validation on the "
           "other %d (seed %llu)\n", o->epochs, sp.n_fit, sp.n_val, (unsigned long long)o->seed);
    int rc = TRAIN_EXIT_OK;
    if (!(o->lr > 0.0f))
        rc = digits_sweep("SGD", 0, o->sgd_lrs, o->n_sgd_lrs, o, d, &sp, d->n, use_cuda, sgd_lr);
    if (rc == TRAIN_EXIT_OK && !(o->fngd_lr > 0.0f))
        rc = digits_sweep("FNGD", 1, o->fngd_lrs, o->n_fngd_lrs, o, d, &sp, d->n, use_cuda,
                          fngd_lr);
    return rc;
}

static void report_divergence(const model_t* m) {
    char where[64] = " (epoch mean)";
    if (m->diverged_step >= 0) snprintf(where, sizeof(where), " in step %d", m->diverged_step + 1);
    fprintf(stderr, "error: %s diverged in epoch %d of the final run: training loss %.3g%s, "
                    "starting loss %.3g (diverged: not finite, or above %gx the starting loss "
                    "for an epoch's mean, %gx for one batch); lower its learning rate\n",
            m->name, m->diverged_epoch + 1, m->diverged_loss, where, m->start_loss,
            DIVERGE_FACTOR, DIVERGE_BATCH_FACTOR);
}

/* The final runs: both models from the same init on the same batches, epoch by epoch. */
static int final_runs(const train_options_t* o, const digits_t* d, const int* train_ids,
                      int n_train, const int* test_ids, int n_test, int use_cuda, float sgd_lr,
                      float fngd_lr) {
    model_t sgd, fn;
    memset(&sgd, 0, sizeof(sgd));
    memset(&fn, 0, sizeof(fn));
    batch_t b = {NULL, NULL, NULL};
    int rc = TRAIN_EXIT_ERROR;
    int* order = malloc((size_t)n_train * sizeof(int));
    if (!order || batch_alloc(&b, o->batch)) {
        fprintf(stderr, "error: out of memory\n");
        goto done;
    }
    if (model_create(&sgd, "SGD", 0, sgd_lr, o->epochs, n_train, o, d->n, use_cuda) ||
        model_create(&fn, "FNGD", 1, fngd_lr, o->epochs, n_train, o, d->n, use_cuda))
        goto done;
    printf("\nfinal runs: SGD lr %g, FNGD lr %g, momentum %g, %d train / %d test samples, %s\n",
           sgd_lr, fngd_lr, o->momentum, n_train, n_test,
           use_cuda ? "CUDA backend on device 0\n(network on the host; FNGD step times include "
                      "host<->device copies)"
                    : "CPU backend");
    double t_start = ex_now_ms();
    model_t* ms[2] = {&sgd, &fn};
    for (int e = 0; e < o->epochs; ++e) {
        model_epoch_order(o->seed, e, train_ids, n_train, order); /* same for both models */
        int live = 0;
        for (int k = 0; k < 2; ++k) {
            if (ms[k]->diverged_epoch >= 0) continue;
            model_status_t st = model_train_epoch(ms[k], d, order, n_train, e, &b);
            if (st == MODEL_STEP_FAILED)
                fprintf(stderr, "error: %s: fngd_step failed in epoch %d of the final run: %s: "
                                "%s\n", ms[k]->name, e + 1, fngd_status_string(ms[k]->step_status),
                        ms[k]->step_error);
            if (st == MODEL_ERROR || st == MODEL_STEP_FAILED) goto done;
            if (st == MODEL_OK) {
                ms[k]->acc[e] = model_evaluate(ms[k], d, test_ids, n_test, &b, NULL);
                ++live;
            }
        }
        if (fn.diverged_epoch < 0 || e <= fn.diverged_epoch)
            printf("epoch %d (%s)\n", e + 1, fn.collect[e] ? "collect" : "reuse");
        else
            printf("epoch %d\n", e + 1);
        report_epoch(&sgd, e);
        report_epoch(&fn, e);
        double el = (ex_now_ms() - t_start) / 1e3;
        printf("  [progress] %d/%d epochs, %.1f s elapsed, about %.1f s left\n", e + 1, o->epochs,
               el, el / (e + 1) * (o->epochs - e - 1));
        fflush(stdout);
        if (!live) break;
    }
    report_summary(&sgd, &fn, o->lr > 0.0f ? "given" : "sweep",
                   o->fngd_lr > 0.0f ? "given" : "sweep", o->target);
    if (report_fngd_stats(&fn)) goto done;
    rc = TRAIN_EXIT_OK;
    for (int k = 0; k < 2; ++k) {
        if (ms[k]->diverged_epoch < 0) continue;
        report_divergence(ms[k]);
        rc = TRAIN_EXIT_DIVERGED;
    }
done:
    model_destroy(&sgd);
    model_destroy(&fn);
    batch_free(&b);
    free(order);
    return rc;
}

int train_digits_run(const train_options_t* o) {
    double t_job = ex_now_ms();
    char msg[512];
    digits_t d;
    if (digits_load(o->data_path, &d, msg, sizeof(msg))) {
        fprintf(stderr, "error: %s\n", msg);
        return TRAIN_EXIT_ERROR;
    }
    int rc = TRAIN_EXIT_ERROR, n_test = TEST_SAMPLES;
    int n_train_full = d.n - n_test, n_train = o->quick ? QUICK_TRAIN : n_train_full;
    int* perm = malloc((size_t)d.n * sizeof(int));
    if (n_train_full < 2 * VAL_DIVISOR || n_train > n_train_full || !perm) {
        fprintf(stderr, "error: %s\n", perm ? "the data set has too few samples" : "out of memory");
        goto done;
    }
    /* Fixed split: shuffle all ids once; the first n_train train (the sweep carves its
     * validation set from their tail), the last n_test test. */
    ex_rng_t rng = {o->seed};
    for (int i = 0; i < d.n; ++i) perm[i] = i;
    ex_rng_shuffle(&rng, perm, d.n);
    const int* test_ids = perm + n_train_full;
    int use_cuda = choose_cuda(o);
    if (o->quick && gradient_check(&d, perm, o->seed)) goto done;

    int n_steps = (n_train + o->batch - 1) / o->batch;
    printf("digits: %d train / %d test samples, batch %d (%d steps/epoch, last batch %d), "
           "%d epochs\n", n_train, n_test, o->batch, n_steps,
           n_train - (n_steps - 1) * o->batch, o->epochs);
    fngd_config_t cfg;
    model_fngd_config(o, d.n, use_cuda, &cfg);
    report_fngd_config(o, &cfg);

    float sgd_lr = 0.0f, fngd_lr = 0.0f;
    rc = choose_rates(o, &d, perm, n_train, use_cuda, &sgd_lr, &fngd_lr);
    double t_sweep = ex_now_ms();
    if (rc == TRAIN_EXIT_OK)
        rc = final_runs(o, &d, perm, n_train, test_ids, n_test, use_cuda, sgd_lr, fngd_lr);
    double t_end = ex_now_ms();
    printf("job wall time %.2f s (setup and sweep %.2f s, final runs %.2f s)\n",
           (t_end - t_job) / 1e3, (t_sweep - t_job) / 1e3, (t_end - t_sweep) / 1e3);
done:
    free(perm);
    digits_free(&d);
    return rc;
}
