#include "digits_train.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "digits_data.h"
#include "digits_device.h"
#include "digits_gradcheck.h"
#include "digits_net.h"
#include "ex_rng.h"
#include "ex_time.h"
#include "fngd.h"

#define QUICK_TRAIN 500 /* training samples in a --quick run (last batch partial) */
#define TEST_SAMPLES 297

/* One model and its optimizer; fngd == NULL means plain SGD. */
typedef struct model {
    const char* name;
    net_t net;
    fngd_handle_t fngd;
    digits_device_t* dev; /* CUDA backend: device copies of the fngd_step buffers, else NULL */
    float lr, momentum;
    int steps_per_epoch;
    double* step_ms; /* [epoch * steps_per_epoch + step]: whole step (forward to update) */
    double* opt_ms;  /* optimizer part: weight gradients (SGD) or fngd_step (FNGD), + update */
    double* loss;    /* [epoch] mean training loss over the epoch's batches */
    double* acc;     /* [epoch] test accuracy after the epoch */
} model_t;

/* The batch: inputs, labels and data-set ids gathered from the shuffled order. */
typedef struct batch {
    float* x;
    int* y;
    int64_t* ids;
} batch_t;

static int check(fngd_status_t st, fngd_handle_t h, const char* what) {
    if (st == FNGD_SUCCESS) return 0;
    fprintf(stderr, "%s failed: %s: %s\n", what, fngd_status_string(st), fngd_get_last_error(h));
    return 1;
}

/* Where libfngd writes a layer's direction: the net's own gradient array (CPU backend) or the
 * same offset in its device copy (CUDA backend). */
static float* grad_buffer(model_t* m, float* host) {
    if (!m->dev) return host;
    return digits_device_grads(m->dev) + (host - m->net.grads);
}

/* The fngd_step stream: the device module's one (CUDA backend) or NULL (CPU backend). */
static fngd_stream_t model_stream(const model_t* m) {
    return m->dev ? digits_device_stream(m->dev) : NULL;
}

/* Register the three layers with libfngd; the direction is written into the net's grads
 * (CPU backend) or their device copy (CUDA backend, then copied back every step). */
static int create_fngd(model_t* m, const train_options_t* o, int64_t num_samples, int use_cuda) {
    if (use_cuda) {
        /* Per-sample floats of each layer's input and output gradient, registration order. */
        const digits_device_layer_t sizes[3] = {
            {DIGITS_PIXELS, NET_H1}, {NET_H1, NET_H2}, {NET_H2, NET_OUT}};
        if (digits_device_create(&m->dev, 0, o->batch, m->net.n_params, 3, sizes)) return 1;
    }
    fngd_config_t cfg;
    fngd_config_init(&cfg);
    cfg.backend = use_cuda ? FNGD_BACKEND_CUDA : FNGD_BACKEND_CPU;
    cfg.device = 0;
    cfg.max_batch = o->batch;
    cfg.num_samples = num_samples;
    cfg.coef_mode = o->global ? FNGD_COEF_GLOBAL : FNGD_COEF_PER_LAYER;
    cfg.damping_kind = FNGD_DAMPING_TRACE_RELATIVE;
    cfg.damping = o->damping;
    cfg.grad_convention = FNGD_GRAD_MEAN_LOSS; /* net_backward produces mean-loss gradients */
    cfg.output = FNGD_OUTPUT_WRITE_GRAD;       /* the example applies its own momentum SGD */
    if (check(fngd_create(&cfg, &m->fngd), NULL, "fngd_create")) return 1;

    fngd_layer_desc_t conv = fngd_conv2d_desc(1, NET_CONV_OUT, NET_HW, NET_HW, 3, 3, 1);
    conv.pad_h = conv.pad_w = 1;
    conv.grad_weight = grad_buffer(m, m->net.gw1);
    conv.grad_bias = grad_buffer(m, m->net.gb1);
    fngd_layer_desc_t fc1 = fngd_linear_desc(NET_H1, NET_H2, 1);
    fc1.grad_weight = grad_buffer(m, m->net.gw2);
    fc1.grad_bias = grad_buffer(m, m->net.gb2);
    fngd_layer_desc_t fc2 = fngd_linear_desc(NET_H2, NET_OUT, 1);
    fc2.grad_weight = grad_buffer(m, m->net.gw3);
    fc2.grad_bias = grad_buffer(m, m->net.gb3);
    const fngd_layer_desc_t* descs[3] = {&conv, &fc1, &fc2};
    for (int l = 0; l < 3; ++l)
        if (check(fngd_add_layer(m->fngd, descs[l], NULL), m->fngd, "fngd_add_layer")) return 1;
    return check(fngd_prepare(m->fngd), m->fngd, "fngd_prepare");
}

static int create_model(model_t* m, const char* name, float lr, const train_options_t* o,
                        int steps_per_epoch) {
    memset(m, 0, sizeof(*m));
    m->name = name;
    m->lr = lr;
    m->momentum = o->momentum;
    m->steps_per_epoch = steps_per_epoch;
    size_t n = (size_t)o->epochs * (size_t)steps_per_epoch;
    m->step_ms = calloc(n, sizeof(double));
    m->opt_ms = calloc(n, sizeof(double));
    m->loss = calloc((size_t)o->epochs, sizeof(double));
    m->acc = calloc((size_t)o->epochs, sizeof(double));
    if (!m->step_ms || !m->opt_ms || !m->loss || !m->acc || net_create(&m->net, o->batch)) {
        fprintf(stderr, "out of memory\n");
        return 1;
    }
    return 0;
}

static void destroy_model(model_t* m) {
    fngd_destroy(m->fngd);
    digits_device_destroy(m->dev); /* after fngd_destroy: the handle borrowed its buffers */
    net_destroy(&m->net);
    free(m->step_ms);
    free(m->opt_ms);
    free(m->loss);
    free(m->acc);
}

/* One training step on the gathered batch; records the times. Returns 0 on success. */
static int train_step(model_t* m, const batch_t* b, int N, double* loss_sum, double* step_ms,
                      double* opt_ms) {
    double t0 = ex_now_ms();
    *loss_sum += net_forward(&m->net, b->x, b->y, N, NULL);
    net_backward(&m->net, b->y, N);
    double t1 = ex_now_ms();
    if (m->fngd) {
        /* Layer order as registered: conv (input = image), fc1, fc2. */
        fngd_layer_batch_t lb[3] = {{b->x, m->net.dz1}, {m->net.a1, m->net.dz2},
                                    {m->net.a2, m->net.dlogits}};
        if (m->dev) {
            /* CUDA backend: same step on device copies; the direction comes back to the host
             * gradient array, so the update below is the same for both backends. */
            fngd_layer_batch_t dlb[3];
            if (digits_device_upload(m->dev, N, lb, dlb)) return 1;
            if (check(fngd_step(m->fngd, N, b->ids, dlb, NULL, model_stream(m)), m->fngd,
                      "fngd_step"))
                return 1;
            if (digits_device_download(m->dev, m->net.grads)) return 1;
        } else if (check(fngd_step(m->fngd, N, b->ids, lb, NULL, NULL), m->fngd, "fngd_step")) {
            return 1;
        }
    } else {
        net_weight_grads(&m->net, N);
    }
    net_sgd_update(&m->net, m->lr, m->momentum);
    double t2 = ex_now_ms();
    *step_ms = t2 - t0;
    *opt_ms = t2 - t1;
    return 0;
}

static int train_epoch(model_t* m, const digits_t* d, const int* order, int n_train, int batch,
                       int epoch, batch_t* b) {
    double loss_sum = 0.0;
    int step = 0;
    for (int s = 0; s < n_train; s += batch, ++step) {
        int N = n_train - s < batch ? n_train - s : batch; /* last partial batch kept */
        for (int i = 0; i < N; ++i) {
            int id = order[s + i];
            memcpy(b->x + (size_t)i * DIGITS_PIXELS, d->x + (size_t)id * DIGITS_PIXELS,
                   DIGITS_PIXELS * sizeof(float));
            b->y[i] = d->y[id];
            b->ids[i] = id; /* the data-set index: the key of the stored coefficient */
        }
        size_t k = (size_t)epoch * m->steps_per_epoch + step;
        if (train_step(m, b, N, &loss_sum, &m->step_ms[k], &m->opt_ms[k])) return 1;
    }
    m->loss[epoch] = loss_sum / n_train;
    if (!isfinite(m->loss[epoch])) {
        fprintf(stderr, "%s: training loss is not finite; lower the learning rate\n", m->name);
        return 1;
    }
    if (m->fngd)
        return check(fngd_end_epoch(m->fngd, model_stream(m)), m->fngd, "fngd_end_epoch");
    return 0;
}

/* Test accuracy in batches (forward only). */
static double evaluate(model_t* m, const digits_t* d, const int* ids, int n, batch_t* b,
                       int batch) {
    int right = 0;
    for (int s = 0; s < n; s += batch) {
        int N = n - s < batch ? n - s : batch, c = 0;
        for (int i = 0; i < N; ++i) {
            memcpy(b->x + (size_t)i * DIGITS_PIXELS, d->x + (size_t)ids[s + i] * DIGITS_PIXELS,
                   DIGITS_PIXELS * sizeof(float));
            b->y[i] = d->y[ids[s + i]];
        }
        net_forward(&m->net, b->x, b->y, N, &c);
        right += c;
    }
    return (double)right / n;
}

/* Median over epochs [e0, e1) of one timing array. */
static double median_over(const model_t* m, const double* v, int e0, int e1, int n_steps) {
    int n = (e1 - e0) * n_steps;
    double* tmp = malloc((size_t)(n > 0 ? n : 1) * sizeof(double));
    if (!tmp) return NAN;
    for (int e = e0; e < e1; ++e)
        memcpy(tmp + (size_t)(e - e0) * n_steps, v + (size_t)e * m->steps_per_epoch,
               (size_t)n_steps * sizeof(double));
    double r = ex_median(tmp, n);
    free(tmp);
    return r;
}

static void print_epoch(const model_t* m, int e, int n_steps) {
    printf("  %-5s loss %.4f  test acc %5.1f%%  step %7.3f ms  (optimizer part %7.3f ms)\n",
           m->name, m->loss[e], 100.0 * m->acc[e],
           median_over(m, m->step_ms, e, e + 1, n_steps), median_over(m, m->opt_ms, e, e + 1, n_steps));
}

static void print_summary(const model_t* sgd, const model_t* fn, int epochs, int n_steps) {
    int cuda = fn->dev != NULL;
    int last = epochs - 1, e0 = epochs > 1 ? 1 : 0;
    printf("\nsummary (median per-step times; later = epochs 2..%d)\n", epochs);
    printf("  %-5s %10s %9s %12s %12s %12s %12s\n", "", "final loss", "test acc", "step ep1",
           "step later", "opt ep1", "opt later");
    const model_t* ms[2] = {sgd, fn};
    for (int k = 0; k < 2; ++k)
        printf("  %-5s %10.4f %8.1f%% %9.3f ms %9.3f ms %9.3f ms %9.3f ms\n", ms[k]->name,
               ms[k]->loss[last], 100.0 * ms[k]->acc[last],
               median_over(ms[k], ms[k]->step_ms, 0, 1, n_steps),
               median_over(ms[k], ms[k]->step_ms, e0, epochs, n_steps),
               median_over(ms[k], ms[k]->opt_ms, 0, 1, n_steps),
               median_over(ms[k], ms[k]->opt_ms, e0, epochs, n_steps));
    double rs1 = median_over(fn, fn->step_ms, 0, 1, n_steps) /
                 median_over(sgd, sgd->step_ms, 0, 1, n_steps);
    double rsl = median_over(fn, fn->step_ms, e0, epochs, n_steps) /
                 median_over(sgd, sgd->step_ms, e0, epochs, n_steps);
    double ro1 = median_over(fn, fn->opt_ms, 0, 1, n_steps) /
                 median_over(sgd, sgd->opt_ms, 0, 1, n_steps);
    double rol = median_over(fn, fn->opt_ms, e0, epochs, n_steps) /
                 median_over(sgd, sgd->opt_ms, e0, epochs, n_steps);
    printf("  FNGD/SGD step time: epoch 1 (collect) %.2fx, later epochs (reuse) %.2fx\n", rs1, rsl);
    printf("  FNGD/SGD optimizer part: epoch 1 (collect) %.2fx, later epochs (reuse) %.2fx\n", ro1,
           rol);
    printf("  (optimizer part: SGD = the example's weight gradients, which reuse the forward "
           "pass's\n   im2col patches, + update; FNGD = fngd_step, which rebuilds them from the "
           "layer input\n   and checks inputs for NaN/Inf, + update. %s)\n",
           cuda ? "fngd_bench_cuda_kernels times the CUDA\n   kernels alone."
                : "fngd_bench_cpu compares like with like.");
    if (cuda)
        printf("  (CUDA backend: the FNGD step and optimizer-part times include the host<->device "
               "copies\n   of every layer's input and output gradient and of the direction; the "
               "network itself\n   runs on the host.)\n");
}

/* Stats that show the reuse phase saw only known ids. Returns 0 if consistent. */
static int print_fngd_stats(const model_t* fn) {
    fngd_stats_t st;
    memset(&st, 0, sizeof(st));
    st.struct_size = sizeof(st);
    if (check(fngd_get_stats(fn->fngd, &st), fn->fngd, "fngd_get_stats")) return 1;
    printf("  libfngd: %lld steps, %lld factorizations, %lld damping retries, %lld ids stored, "
           "%lld unseen-id fallbacks; coefficients in [%.3g, %.3g], mean %.3g\n",
           (long long)st.steps_total, (long long)st.factorizations,
           (long long)st.damping_retries, (long long)st.coefs_stored, (long long)st.fallback_ids,
           st.coef_min, st.coef_max, st.coef_mean);
    if (st.fallback_ids != 0) {
        fprintf(stderr, "unexpected: every training id is stored in epoch 1 (the partial last "
                        "batch included), so no fallback should happen, yet %lld did\n",
                (long long)st.fallback_ids);
        return 1;
    }
    return 0;
}

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

static int gradient_check(const digits_t* d, const int* ids, batch_t* b, uint64_t seed) {
    int N = 8;
    for (int i = 0; i < N; ++i) {
        memcpy(b->x + (size_t)i * DIGITS_PIXELS, d->x + (size_t)ids[i] * DIGITS_PIXELS,
               DIGITS_PIXELS * sizeof(float));
        b->y[i] = d->y[ids[i]];
    }
    double err = net_gradient_check(b->x, b->y, N, seed);
    /* See net_gradient_check for the error measure; a wrong backward gives errors near 1. */
    printf("gradient check of the example's backward pass: max rel. error %.2e (%s)\n", err,
           err < 5e-2 ? "ok" : "FAILED");
    return err < 5e-2 ? 0 : 1;
}

int train_digits_run(const train_options_t* o) {
    char msg[512];
    digits_t d;
    if (digits_load(o->data_path, &d, msg, sizeof(msg))) {
        fprintf(stderr, "%s\n", msg);
        return 1;
    }
    int rc = 1, n_test = TEST_SAMPLES;
    int n_train_full = d.n - n_test, n_train = o->quick ? QUICK_TRAIN : n_train_full;
    if (n_train_full < 1 || n_train > n_train_full) {
        fprintf(stderr, "the data set has too few samples (%d)\n", d.n);
        digits_free(&d);
        return 1;
    }
    int n_steps = (n_train + o->batch - 1) / o->batch;
    model_t sgd, fn;
    memset(&sgd, 0, sizeof(sgd));
    memset(&fn, 0, sizeof(fn));
    batch_t b = {malloc((size_t)o->batch * DIGITS_PIXELS * sizeof(float)),
                 malloc((size_t)o->batch * sizeof(int)), malloc((size_t)o->batch * sizeof(int64_t))};
    int* perm = malloc((size_t)d.n * sizeof(int));
    int* order = malloc((size_t)n_train * sizeof(int));
    if (!b.x || !b.y || !b.ids || !perm || !order) {
        fprintf(stderr, "out of memory\n");
        goto done;
    }
    /* Fixed split: shuffle all ids once, the first n_train_full train, the last n_test test. */
    ex_rng_t rng = {o->seed};
    for (int i = 0; i < d.n; ++i) perm[i] = i;
    ex_rng_shuffle(&rng, perm, d.n);
    const int* test_ids = perm + n_train_full;

    if (create_model(&sgd, "SGD", o->lr, o, n_steps) ||
        create_model(&fn, "FNGD", o->fngd_lr, o, n_steps))
        goto done;
    net_init(&sgd.net, o->seed * 7919u + 17u);
    net_copy(&fn.net, &sgd.net); /* same initial weights for both */
    int use_cuda = choose_cuda(o);
    if (create_fngd(&fn, o, d.n, use_cuda)) goto done;
    if (o->quick && gradient_check(&d, perm, &b, o->seed)) goto done;

    printf("digits: %d train / %d test samples, batch %d (%d steps/epoch, last batch %d), "
           "%d epochs\n", n_train, n_test, o->batch, n_steps,
           n_train - (n_steps - 1) * o->batch, o->epochs);
    printf("SGD lr %g, FNGD lr %g, momentum %g; FNGD %s coefficients, damping %g * trace(K)/N, "
           "%s\n", o->lr, o->fngd_lr, o->momentum, o->global ? "global" : "per-layer",
           o->damping,
           use_cuda ? "CUDA backend on device 0\n(network on the host; FNGD step times include "
                      "host<->device copies)"
                    : "CPU backend");
    double t_start = ex_now_ms();
    for (int e = 0; e < o->epochs; ++e) {
        /* Same batch order for both models; the ids travel with the samples. */
        memcpy(order, perm, (size_t)n_train * sizeof(int));
        ex_rng_t er = {o->seed * 1000003u + (uint64_t)e};
        ex_rng_shuffle(&er, order, n_train);
        fngd_stats_t st;
        memset(&st, 0, sizeof(st));
        st.struct_size = sizeof(st);
        if (check(fngd_get_stats(fn.fngd, &st), fn.fngd, "fngd_get_stats")) goto done;
        if (train_epoch(&sgd, &d, order, n_train, o->batch, e, &b) ||
            train_epoch(&fn, &d, order, n_train, o->batch, e, &b))
            goto done;
        sgd.acc[e] = evaluate(&sgd, &d, test_ids, n_test, &b, o->batch);
        fn.acc[e] = evaluate(&fn, &d, test_ids, n_test, &b, o->batch);
        printf("epoch %d (%s)\n", e + 1, st.phase == FNGD_PHASE_COLLECT ? "collect" : "reuse");
        print_epoch(&sgd, e, n_steps);
        print_epoch(&fn, e, n_steps);
        double el = (ex_now_ms() - t_start) / 1e3;
        printf("  [progress] %d/%d epochs, %.1f s elapsed, about %.1f s left\n", e + 1, o->epochs,
               el, el / (e + 1) * (o->epochs - e - 1));
        fflush(stdout);
    }
    print_summary(&sgd, &fn, o->epochs, n_steps);
    if (print_fngd_stats(&fn)) goto done;
    rc = 0;
done:
    destroy_model(&sgd);
    destroy_model(&fn);
    free(b.x);
    free(b.y);
    free(b.ids);
    free(perm);
    free(order);
    digits_free(&d);
    return rc;
}
