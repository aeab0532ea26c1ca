/* libfngd's main example: train a small convolutional network on the 8x8 digits twice from
 * the same initial weights, once with SGD + momentum and once with FNGD, and compare loss,
 * test accuracy and step time per epoch.
 *
 * How the example uses libfngd (per-layer or global coefficients, CPU or CUDA backend):
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
 * Usage: fngd_train_digits [--epochs N] [--lr X] [--fngd-lr X] [--momentum X] [--damping X]
 *        [--mode layer|global] [--backend cpu|cuda] [--batch N] [--seed N] [--data PATH] [--quick]
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
            "  --epochs N          epochs (default 10; 3 with --quick)\n"
            "  --lr X              SGD learning rate (default 0.1)\n"
            "  --fngd-lr X         learning rate for the FNGD direction (default 0.02)\n"
            "  --momentum X        momentum of both optimizers (default 0.9)\n"
            "  --damping X         FNGD damping gamma, relative to trace(K)/N (default 0.03)\n"
            "  --mode layer|global FNGD coefficients per layer or one set (default layer)\n"
            "  --backend cpu|cuda  libfngd backend (default cpu). cuda: the network stays on the\n"
            "                      host and each FNGD step copies layer inputs and output\n"
            "                      gradients to the GPU and the direction back (the step times\n"
            "                      include these copies); falls back to cpu, with a note, when\n"
            "                      libfngd has no CUDA backend or no CUDA device is available\n"
            "  --batch N           batch size (default 64)\n"
            "  --seed N            seed of init, split and batch order (default 1)\n"
            "  --data PATH         digits CSV (default %s)\n"
            "  --quick             3 epochs on 500 training samples, plus a gradient check (CI)\n",
            FNGD_DIGITS_CSV);
}

/* Parse argv into *o. Returns 0 on success, 1 on a bad option, 2 for --help. */
static int parse_args(int argc, char** argv, train_options_t* o) {
    int epochs_given = 0;
    for (int i = 1; i < argc; ++i) {
        const char* a = argv[i];
        const char* v = i + 1 < argc ? argv[i + 1] : NULL;
        if (!strcmp(a, "--help") || !strcmp(a, "-h")) return 2;
        if (!strcmp(a, "--quick")) {
            o->quick = 1;
            continue;
        }
        static const char* const valued[] = {"--epochs", "--lr", "--fngd-lr", "--momentum",
                                             "--damping", "--batch", "--seed", "--data",
                                             "--mode", "--backend"};
        int known = 0;
        for (size_t k = 0; k < sizeof(valued) / sizeof(valued[0]); ++k) known |= !strcmp(a, valued[k]);
        if (!known) {
            fprintf(stderr, "unknown option %s\n", a);
            return 1;
        }
        if (!v) {
            fprintf(stderr, "option %s needs a value\n", a);
            return 1;
        }
        char* end = NULL;
        if (!strcmp(a, "--epochs")) {
            o->epochs = (int)strtol(v, &end, 10);
            epochs_given = 1;
        } else if (!strcmp(a, "--lr")) {
            o->lr = strtof(v, &end);
        } else if (!strcmp(a, "--fngd-lr")) {
            o->fngd_lr = strtof(v, &end);
        } else if (!strcmp(a, "--momentum")) {
            o->momentum = strtof(v, &end);
        } else if (!strcmp(a, "--damping")) {
            o->damping = strtod(v, &end);
        } else if (!strcmp(a, "--batch")) {
            o->batch = (int)strtol(v, &end, 10);
        } else if (!strcmp(a, "--seed")) {
            o->seed = strtoull(v, &end, 10);
        } else if (!strcmp(a, "--data")) {
            o->data_path = v;
            end = (char*)v + strlen(v);
        } else if (!strcmp(a, "--mode")) {
            if (strcmp(v, "layer") && strcmp(v, "global")) end = (char*)v;
            else end = (char*)v + strlen(v);
            o->global = !strcmp(v, "global");
        } else if (!strcmp(a, "--backend")) {
            if (strcmp(v, "cpu") && strcmp(v, "cuda")) end = (char*)v;
            else end = (char*)v + strlen(v);
            o->want_cuda = !strcmp(v, "cuda");
        }
        if (!end || *end != '\0' || end == v) {
            fprintf(stderr, "bad value for %s: %s\n", a, v);
            return 1;
        }
        ++i;
    }
    if (o->quick && !epochs_given) o->epochs = 3;
    if (o->epochs < 1 || o->batch < 1 || !(o->lr > 0.0f) || !(o->fngd_lr > 0.0f) ||
        !(o->momentum >= 0.0f && o->momentum < 1.0f) || !(o->damping > 0.0)) {
        fprintf(stderr, "need epochs >= 1, batch >= 1, lr > 0, 0 <= momentum < 1, damping > 0\n");
        return 1;
    }
    return 0;
}

int main(int argc, char** argv) {
    train_options_t o = {
        .epochs = 10, .batch = 64, .lr = 0.1f, .fngd_lr = 0.02f, .momentum = 0.9f,
        .damping = 0.03, .seed = 1, .data_path = FNGD_DIGITS_CSV, .global = 0,
        .want_cuda = 0, .quick = 0};
    int pa = parse_args(argc, argv, &o);
    if (pa) {
        usage(pa == 2 ? stdout : stderr);
        return pa == 2 ? 0 : 1;
    }
    return train_digits_run(&o) == 0 ? 0 : 1;
}
