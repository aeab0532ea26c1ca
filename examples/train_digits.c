/* libfngd's main example: train a small convolutional network on the 8x8 digits with SGD +
 * momentum and with FNGD, each at its own tuned learning rate, from the same initial weights,
 * and compare loss, test accuracy, time to a target accuracy and step time.
 *
 * The job (digits_train.c):
 * 1. learning-rate sweep (digits_sweep.c): per optimizer, one run per candidate rate (default
 *    0.03, 0.1, 0.3 for both) for the same number of epochs on 4/5 of the training data,
 *    validated on the other 1/5 (fixed by --seed); the rate with the best final validation
 *    accuracy wins (ties: lower validation loss), a diverged run never does. --lr / --fngd-lr
 *    skip the sweep of that optimizer;
 * 2. final runs: both optimizers on the whole training set at the chosen rates, per-epoch
 *    loss, test accuracy and step times, then a side-by-side summary (digits_report.c);
 * 3. exit status: 0; 1 for a bad option, unreadable data or a libfngd error (its message is
 *    printed); 3 when a final run diverged (training loss not finite, or above 10x the
 *    starting loss for an epoch's mean, 100x for one batch) or every rate of a sweep did.
 *
 * How the example uses libfngd (digits_model.c; per-layer or global coefficients, CPU or CUDA):
 * - the configuration is fngd_config_init()'s defaults plus only what the example must set
 *   (backend, max_batch, num_samples, coef_mode, mean-loss gradients, written direction) and
 *   what the user gives (--damping, --damping-kind, --filter, --exact-small, --step-control,
 *   --kl-clip); fngd_set_learning_rate gets the FNGD rate (KL clipping needs it);
 * - each preconditioned layer is registered once with its gradient buffers (the example's own
 *   gradient arrays) and FNGD_OUTPUT_WRITE_GRAD;
 * - every step, after the ordinary backward pass, the example passes each layer's input and
 *   output gradient (of the mean loss) and the data-set ids of the batch to fngd_step, which
 *   overwrites the gradient buffers with the FNGD direction; the example then applies the same
 *   momentum SGD update it uses for the SGD model;
 * - fngd_end_epoch after every epoch: epoch 1 collects coefficients, later epochs reuse them.
 * With --backend cuda (libfngd built with CUDA and a device present) the network still runs on
 * the host; each step copies the layer inputs and output gradients to device buffers on one
 * stream, fngd_step writes the direction into device gradient buffers, and it is copied back
 * for the same host update (digits_device.c). Without a device it falls back to the CPU backend.
 *
 * Usage: fngd_train_digits [--epochs N] [--lr X] [--fngd-lr X] [--sgd-lrs LIST]
 *        [--fngd-lrs LIST] [--momentum X] [--target X] [--damping X]
 *        [--damping-kind absolute|relative] [--filter none|range] [--exact-small 0|1]
 *        [--step-control none|kl_clip|graft] [--kl-clip X] [--mode layer|global]
 *        [--backend cpu|cuda] [--batch N] [--seed N] [--data PATH] [--quick]
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "digits_train.h"

#ifndef FNGD_DIGITS_CSV
#define FNGD_DIGITS_CSV "examples/data/digits.csv"
#endif

static void usage(FILE* f) {
    fprintf(f,
            "usage: fngd_train_digits [options]\n"
            "Sweeps the learning rate of SGD and of FNGD on a validation split of the training\n"
            "data (4/5 train, 1/5 validation, fixed by --seed; best final validation accuracy,\n"
            "never a diverged run), then trains both at their chosen rates from the same init.\n"
            "  --epochs N          epochs of every run, sweeps included (default 10; 3 with\n"
            "                      --quick)\n"
            "  --lr X              SGD learning rate: skips the SGD sweep\n"
            "  --fngd-lr X         learning rate applied to the FNGD direction: skips its sweep\n"
            "  --sgd-lrs LIST      SGD sweep rates, comma-separated (default 0.03,0.1,0.3)\n"
            "  --fngd-lrs LIST     FNGD sweep rates, comma-separated (default 0.03,0.1,0.3)\n"
            "  --momentum X        momentum of both optimizers (default 0.9)\n"
            "  --target X          test accuracy for the time-to-accuracy report (default 0.95)\n"
            "FNGD settings: the libfngd defaults (fngd_config_init) unless given here\n"
            "  --damping X         damping value; absolute lambda unless --damping-kind relative\n"
            "  --damping-kind K    absolute (lambda) or relative (lambda = X * trace(K)/N)\n"
            "  --filter F          coefficient filter: none (the paper) or range\n"
            "  --exact-small 0|1   solve layers with <= batch parameters exactly in every step\n"
            "  --step-control S    none, kl_clip (trust region; uses the FNGD rate) or graft\n"
            "  --kl-clip X         bound of kl_clip\n"
            "  --mode layer|global FNGD coefficients per layer or one set (default layer)\n"
            "  --backend cpu|cuda  libfngd backend (default cpu). cuda: the network stays on the\n"
            "                      host and each FNGD step copies layer inputs and output\n"
            "                      gradients to the GPU and the direction back (the step times\n"
            "                      include these copies); falls back to cpu, with a note, when\n"
            "                      libfngd has no CUDA backend or no CUDA device is available\n"
            "Data and runs\n"
            "  --batch N           batch size (default 64)\n"
            "  --seed N            seed of init, splits and batch order (default 1)\n"
            "  --data PATH         digits CSV (default %s)\n"
            "  --quick             3 epochs on 500 training samples, plus a gradient check (CI)\n"
            "Exit status: 0 ok; 1 bad option, unreadable data or libfngd error; 3 a final run\n"
            "diverged (training loss not finite, or above 10x its starting loss for an epoch's\n"
            "mean, 100x for one batch) or every rate of a sweep diverged.\n",
            FNGD_DIGITS_CSV);
}

/* Index of v in names[0..n), or -1. */
static int pick(const char* v, const char* const* names, int n) {
    for (int k = 0; k < n; ++k)
        if (!strcmp(v, names[k])) return k;
    return -1;
}

/* "0.03,0.1,0.3" into lrs; returns the count, or 0 for a malformed or non-positive entry. */
static int parse_lrs(const char* v, float* lrs) {
    int n = 0;
    const char* p = v;
    for (;;) {
        char* end = NULL;
        float x = strtof(p, &end);
        if (end == p || !(x > 0.0f) || n == TRAIN_MAX_LRS) return 0;
        lrs[n++] = x;
        if (*end == '\0') return n;
        if (*end != ',') return 0;
        p = end + 1;
    }
}

/* One valued option; returns 0 if a and v were understood, 1 for a bad value, -1 for an
 * unknown option. */
static int parse_one(const char* a, const char* v, train_options_t* o, int* epochs_given) {
    static const char* const kinds[] = {"absolute", "relative"};
    static const char* const filters[] = {"none", "range"};
    static const char* const controls[] = {"none", "kl_clip", "graft"};
    static const char* const modes[] = {"layer", "global"};
    static const char* const backends[] = {"cpu", "cuda"};
    fngd_overrides_t* f = &o->fngd;
    char* end = NULL;
    int k = 0;
    if (!strcmp(a, "--epochs")) {
        o->epochs = (int)strtol(v, &end, 10);
        *epochs_given = 1;
    } else if (!strcmp(a, "--lr")) {
        o->lr = strtof(v, &end);
        if (!(o->lr > 0.0f)) return 1;
    } else if (!strcmp(a, "--fngd-lr")) {
        o->fngd_lr = strtof(v, &end);
        if (!(o->fngd_lr > 0.0f)) return 1;
    } else if (!strcmp(a, "--sgd-lrs")) {
        return !(o->n_sgd_lrs = parse_lrs(v, o->sgd_lrs));
    } else if (!strcmp(a, "--fngd-lrs")) {
        return !(o->n_fngd_lrs = parse_lrs(v, o->fngd_lrs));
    } else if (!strcmp(a, "--momentum")) {
        o->momentum = strtof(v, &end);
    } else if (!strcmp(a, "--target")) {
        o->target = strtod(v, &end);
    } else if (!strcmp(a, "--damping")) {
        f->damping = strtod(v, &end);
        f->has_damping = 1;
        if (!(f->damping >= 0.0)) return 1;
    } else if (!strcmp(a, "--kl-clip")) {
        f->kl_clip = strtod(v, &end);
        f->has_kl_clip = 1;
        if (!(f->kl_clip > 0.0)) return 1;
    } else if (!strcmp(a, "--batch")) {
        o->batch = (int)strtol(v, &end, 10);
    } else if (!strcmp(a, "--seed")) {
        o->seed = strtoull(v, &end, 10);
    } else if (!strcmp(a, "--data")) {
        o->data_path = v;
        return 0;
    } else if (!strcmp(a, "--damping-kind")) {
        if ((k = pick(v, kinds, 2)) < 0) return 1;
        f->damping_kind = k ? FNGD_DAMPING_TRACE_RELATIVE : FNGD_DAMPING_ABSOLUTE;
        f->has_damping_kind = 1;
        return 0;
    } else if (!strcmp(a, "--filter")) {
        if ((k = pick(v, filters, 2)) < 0) return 1;
        f->filter = k ? FNGD_FILTER_RANGE : FNGD_FILTER_NONE;
        f->has_filter = 1;
        return 0;
    } else if (!strcmp(a, "--exact-small")) {
        if (strcmp(v, "0") && strcmp(v, "1")) return 1;
        f->exact_small = v[0] == '1';
        f->has_exact_small = 1;
        return 0;
    } else if (!strcmp(a, "--step-control")) {
        if ((k = pick(v, controls, 3)) < 0) return 1;
        f->step_control = k == 2 ? FNGD_STEP_GRAFT : k ? FNGD_STEP_KL_CLIP : FNGD_STEP_NONE;
        f->has_step_control = 1;
        return 0;
    } else if (!strcmp(a, "--mode")) {
        if ((k = pick(v, modes, 2)) < 0) return 1;
        o->global = k;
        return 0;
    } else if (!strcmp(a, "--backend")) {
        if ((k = pick(v, backends, 2)) < 0) return 1;
        o->want_cuda = k;
        return 0;
    } else {
        return -1;
    }
    return !end || *end != '\0' || end == v;
}

/* Parse argv into *o. Returns 0 on success, 1 on a bad option, 2 for --help. */
static int parse_args(int argc, char** argv, train_options_t* o) {
    int epochs_given = 0;
    for (int i = 1; i < argc; ++i) {
        const char* a = argv[i];
        if (!strcmp(a, "--help") || !strcmp(a, "-h")) return 2;
        if (!strcmp(a, "--quick")) {
            o->quick = 1;
            continue;
        }
        if (strncmp(a, "--", 2) || i + 1 >= argc) {
            fprintf(stderr, "%s %s\n", a,
                    strncmp(a, "--", 2) ? "is not an option" : "needs a value");
            return 1;
        }
        int r = parse_one(a, argv[++i], o, &epochs_given);
        if (r) {
            fprintf(stderr, r < 0 ? "unknown option %s\n" : "bad value for %s: %s\n", a, argv[i]);
            return 1;
        }
    }
    if (o->quick && !epochs_given) o->epochs = 3;
    if (o->epochs < 1 || o->batch < 1 || !(o->momentum >= 0.0f && o->momentum < 1.0f) ||
        !(o->target > 0.0 && o->target <= 1.0)) {
        fprintf(stderr, "need epochs >= 1, batch >= 1, 0 <= momentum < 1, 0 < target <= 1\n");
        return 1;
    }
    return 0;
}

int main(int argc, char** argv) {
    train_options_t o = {.epochs = 10, .batch = 64, .lr = 0.0f, .fngd_lr = 0.0f,
                         .sgd_lrs = {0.03f, 0.1f, 0.3f}, .n_sgd_lrs = 3,
                         .fngd_lrs = {0.03f, 0.1f, 0.3f}, .n_fngd_lrs = 3, .momentum = 0.9f,
                         .target = 0.95, .seed = 1, .data_path = FNGD_DIGITS_CSV};
    int pa = parse_args(argc, argv, &o);
    if (pa) {
        usage(pa == 2 ? stdout : stderr);
        return pa == 2 ? 0 : TRAIN_EXIT_ERROR;
    }
    return train_digits_run(&o);
}
