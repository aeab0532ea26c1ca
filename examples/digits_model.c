#include "digits_model.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "ex_rng.h"
#include "ex_time.h"

int batch_alloc(batch_t* b, int batch) {
    b->x = malloc((size_t)batch * DIGITS_PIXELS * sizeof(float));
    b->y = malloc((size_t)batch * sizeof(int));
    b->ids = malloc((size_t)batch * sizeof(int64_t));
    return !b->x || !b->y || !b->ids;
}

void batch_free(batch_t* b) {
    free(b->x);
    free(b->y);
    free(b->ids);
    memset(b, 0, sizeof(*b));
}

int model_check(fngd_status_t st, fngd_handle_t h, const char* what) {
    if (st == FNGD_SUCCESS) return 0;
    fprintf(stderr, "error: %s failed: %s: %s\n", what, fngd_status_string(st),
            fngd_get_last_error(h));
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

void model_fngd_config(const train_options_t* o, int64_t num_samples, int use_cuda,
                       fngd_config_t* cfg) {
    fngd_config_init(cfg); /* the library's defaults for everything not set below */
    cfg->backend = use_cuda ? FNGD_BACKEND_CUDA : FNGD_BACKEND_CPU;
    cfg->max_batch = o->batch;
    cfg->num_samples = num_samples;
    cfg->coef_mode = o->global ? FNGD_COEF_GLOBAL : FNGD_COEF_PER_LAYER;
    cfg->grad_convention = FNGD_GRAD_MEAN_LOSS; /* net_backward produces mean-loss gradients */
    cfg->output = FNGD_OUTPUT_WRITE_GRAD;       /* the example applies its own momentum SGD */
    const fngd_overrides_t* v = &o->fngd;
    if (v->has_damping) {
        cfg->damping = v->damping;
        cfg->damping_kind = FNGD_DAMPING_ABSOLUTE; /* --damping X alone is an absolute lambda */
    }
    if (v->has_damping_kind) cfg->damping_kind = v->damping_kind;
    if (v->has_filter) cfg->coef_filter = v->filter;
    if (v->has_exact_small) cfg->exact_small_layers = v->exact_small;
    if (v->has_step_control) cfg->step_control = v->step_control;
    if (v->has_kl_clip) cfg->kl_clip = v->kl_clip;
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
    model_fngd_config(o, num_samples, use_cuda, &m->cfg);
    if (model_check(fngd_create(&m->cfg, &m->fngd), NULL, "fngd_create")) return 1;
    /* The rate the example applies to the direction; KL clipping needs it. */
    if (model_check(fngd_set_learning_rate(m->fngd, m->lr), m->fngd, "fngd_set_learning_rate"))
        return 1;

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
        if (model_check(fngd_add_layer(m->fngd, descs[l], NULL), m->fngd, "fngd_add_layer"))
            return 1;
    return model_check(fngd_prepare(m->fngd), m->fngd, "fngd_prepare");
}

int model_create(model_t* m, const char* name, int use_fngd, float lr, int epochs, int n_train,
                 const train_options_t* o, int64_t num_samples, int use_cuda) {
    memset(m, 0, sizeof(*m));
    m->name = name;
    m->lr = lr;
    m->momentum = o->momentum;
    m->epochs = epochs;
    m->steps_per_epoch = (n_train + o->batch - 1) / o->batch;
    m->start_loss = NAN;
    m->diverged_epoch = -1;
    size_t n = (size_t)epochs * (size_t)m->steps_per_epoch, E = (size_t)epochs;
    m->step_ms = calloc(n, sizeof(double));
    m->opt_ms = calloc(n, sizeof(double));
    m->loss = calloc(E, sizeof(double));
    m->acc = calloc(E, sizeof(double));
    m->train_ms = calloc(E, sizeof(double));
    m->collect = calloc(E, sizeof(int));
    if (!m->step_ms || !m->opt_ms || !m->loss || !m->acc || !m->train_ms || !m->collect ||
        net_create(&m->net, o->batch)) {
        fprintf(stderr, "error: out of memory\n");
        return 1;
    }
    net_init(&m->net, o->seed * 7919u + 17u); /* the same initial weights for every model */
    return use_fngd ? create_fngd(m, o, num_samples, use_cuda) : 0;
}

void model_destroy(model_t* m) {
    fngd_destroy(m->fngd);
    digits_device_destroy(m->dev); /* after fngd_destroy: the handle borrowed its buffers */
    net_destroy(&m->net);
    free(m->step_ms);
    free(m->opt_ms);
    free(m->loss);
    free(m->acc);
    free(m->train_ms);
    free(m->collect);
    memset(m, 0, sizeof(*m));
}

void model_epoch_order(uint64_t seed, int epoch, const int* ids, int n, int* order) {
    memcpy(order, ids, (size_t)n * sizeof(int));
    ex_rng_t er = {seed * 1000003u + (uint64_t)epoch};
    ex_rng_shuffle(&er, order, n);
}

/* The optimizer part of a step, after forward and backward: the FNGD direction (libfngd) or
 * the plain weight gradients, then the momentum update. Returns 0 on success, 2 when
 * fngd_step failed (step_status, step_error), 1 for another error (printed). */
static int optimizer_step(model_t* m, const batch_t* b, int N) {
    if (m->fngd) {
        /* Layer order as registered: conv (input = image), fc1, fc2. */
        fngd_layer_batch_t lb[3] = {{b->x, m->net.dz1}, {m->net.a1, m->net.dz2},
                                    {m->net.a2, m->net.dlogits}};
        if (m->dev) {
            /* CUDA backend: same step on device copies; the direction comes back to the host
             * gradient array, so the update below is the same for both backends. */
            fngd_layer_batch_t dlb[3];
            if (digits_device_upload(m->dev, N, lb, dlb)) return 1;
            m->step_status = fngd_step(m->fngd, N, b->ids, dlb, NULL, model_stream(m));
            if (m->step_status == FNGD_SUCCESS && digits_device_download(m->dev, m->net.grads))
                return 1;
        } else {
            m->step_status = fngd_step(m->fngd, N, b->ids, lb, NULL, NULL);
        }
        if (m->step_status != FNGD_SUCCESS) {
            snprintf(m->step_error, sizeof(m->step_error), "%s", fngd_get_last_error(m->fngd));
            return 2;
        }
    } else {
        net_weight_grads(&m->net, N);
    }
    net_sgd_update(&m->net, m->lr, m->momentum);
    return 0;
}

static void gather(const digits_t* d, const int* ids, int N, batch_t* b) {
    for (int i = 0; i < N; ++i) {
        memcpy(b->x + (size_t)i * DIGITS_PIXELS, d->x + (size_t)ids[i] * DIGITS_PIXELS,
               DIGITS_PIXELS * sizeof(float));
        b->y[i] = d->y[ids[i]];
        b->ids[i] = ids[i]; /* the data-set index: the key of the stored coefficient */
    }
}

static model_status_t diverged(model_t* m, int epoch, int step, double loss) {
    m->diverged_epoch = epoch;
    m->diverged_step = step;
    m->diverged_loss = loss;
    return MODEL_DIVERGED;
}

model_status_t model_train_epoch(model_t* m, const digits_t* d, const int* order, int n,
                                 int epoch, batch_t* b) {
    double t_epoch = ex_now_ms(), loss_sum = 0.0;
    int batch = m->net.max_batch;
    if (m->fngd) {
        fngd_stats_t st;
        memset(&st, 0, sizeof(st));
        st.struct_size = sizeof(st);
        if (model_check(fngd_get_stats(m->fngd, &st), m->fngd, "fngd_get_stats"))
            return MODEL_ERROR;
        m->collect[epoch] = st.phase == FNGD_PHASE_COLLECT;
    }
    int step = 0;
    for (int s = 0; s < n; s += batch, ++step) {
        int N = n - s < batch ? n - s : batch; /* last partial batch kept */
        gather(d, order + s, N, b);
        double t0 = ex_now_ms();
        double batch_loss = net_forward(&m->net, b->x, b->y, N, NULL);
        if (!isfinite(m->start_loss)) m->start_loss = batch_loss / N;
        /* Stop before the optimizer sees NaN/Inf or exploded gradients (libfngd would reject
         * the batch, or find its damped Gram matrix singular). */
        if (!isfinite(batch_loss) || batch_loss / N > DIVERGE_BATCH_FACTOR * m->start_loss)
            return diverged(m, epoch, step, batch_loss / N);
        loss_sum += batch_loss;
        net_backward(&m->net, b->y, N);
        double t1 = ex_now_ms();
        int os = optimizer_step(m, b, N);
        if (os) {
            m->failed_epoch = epoch;
            return os == 2 ? MODEL_STEP_FAILED : MODEL_ERROR;
        }
        double t2 = ex_now_ms();
        size_t k = (size_t)epoch * m->steps_per_epoch + step;
        m->step_ms[k] = t2 - t0;
        m->opt_ms[k] = t2 - t1;
    }
    m->loss[epoch] = loss_sum / n;
    if (m->fngd && model_check(fngd_end_epoch(m->fngd, model_stream(m)), m->fngd,
                               "fngd_end_epoch"))
        return MODEL_ERROR;
    m->train_ms[epoch] = ex_now_ms() - t_epoch;
    if (!isfinite(m->loss[epoch]) || m->loss[epoch] > DIVERGE_FACTOR * m->start_loss)
        return diverged(m, epoch, -1, m->loss[epoch]);
    m->epochs_done = epoch + 1;
    return MODEL_OK;
}

double model_evaluate(model_t* m, const digits_t* d, const int* ids, int n, batch_t* b,
                      double* mean_loss) {
    int right = 0, batch = m->net.max_batch;
    double loss = 0.0;
    for (int s = 0; s < n; s += batch) {
        int N = n - s < batch ? n - s : batch, c = 0;
        gather(d, ids + s, N, b);
        loss += net_forward(&m->net, b->x, b->y, N, &c);
        right += c;
    }
    if (mean_loss) *mean_loss = loss / n;
    return (double)right / n;
}

double model_median(const model_t* m, const double* v, const int* phases, int want_collect,
                    int e0, int e1) {
    int S = m->steps_per_epoch, n = 0;
    double* tmp = malloc((size_t)(e1 > e0 ? e1 - e0 : 1) * (size_t)S * sizeof(double));
    if (!tmp) return NAN;
    for (int e = e0; e < e1; ++e) {
        if (want_collect >= 0 && phases[e] != want_collect) continue;
        memcpy(tmp + n, v + (size_t)e * S, (size_t)S * sizeof(double));
        n += S;
    }
    double r = n ? ex_median(tmp, n) : NAN;
    free(tmp);
    return r;
}
