#include "digits_report.h"

#include <math.h>
#include <stdio.h>
#include <string.h>

static const char* given(int has) { return has ? "given" : "default"; }

void report_fngd_config(const train_options_t* o, const fngd_config_t* c) {
    static const char* const filters[] = {"none", "range"};
    static const char* const controls[] = {"none", "kl_clip", "graft"};
    const fngd_overrides_t* v = &o->fngd;
    int f = (int)c->coef_filter, s = (int)c->step_control;
    printf("FNGD (libfngd defaults unless given): %s coefficients; damping %g %s (%s); filter "
           "%s (%s); exact small layers %d (%s); step control %s (%s)",
           c->coef_mode == FNGD_COEF_GLOBAL ? "global" : "per-layer", c->damping,
           c->damping_kind == FNGD_DAMPING_TRACE_RELATIVE ? "* trace(K)/N" : "absolute",
           given(v->has_damping || v->has_damping_kind), f >= 0 && f < 2 ? filters[f] : "?",
           given(v->has_filter), c->exact_small_layers, given(v->has_exact_small),
           s >= 0 && s < 3 ? controls[s] : "?", given(v->has_step_control));
    if (c->step_control == FNGD_STEP_KL_CLIP || v->has_kl_clip)
        printf("; kl_clip %g (%s)", c->kl_clip, given(v->has_kl_clip));
    printf("\n");
}

void report_epoch(const model_t* m, int e) {
    if (m->diverged_epoch >= 0 && e >= m->diverged_epoch) {
        if (e == m->diverged_epoch && m->diverged_step >= 0)
            printf("  %-5s DIVERGED: training loss %.3g in step %d (start %.3g)\n", m->name,
                   m->diverged_loss, m->diverged_step + 1, m->start_loss);
        else if (e == m->diverged_epoch)
            printf("  %-5s DIVERGED: mean training loss %.3g (start %.3g)\n", m->name,
                   m->diverged_loss, m->start_loss);
        else
            printf("  %-5s (stopped: diverged in epoch %d)\n", m->name, m->diverged_epoch + 1);
        return;
    }
    printf("  %-5s loss %.4f  test acc %5.1f%%  step %7.3f ms  (optimizer part %7.3f ms)\n",
           m->name, m->loss[e], 100.0 * m->acc[e],
           model_median(m, m->step_ms, NULL, -1, e, e + 1),
           model_median(m, m->opt_ms, NULL, -1, e, e + 1));
}

static void row(const char* label, const char* a, const char* b) {
    printf("  %-32s %-20s %s\n", label, a, b);
}

static void fmt_ms(char* buf, size_t n, double ms) {
    if (isnan(ms)) snprintf(buf, n, "n/a");
    else snprintf(buf, n, "%.3f ms", ms);
}

/* The summary cells of one model, in row order. */
enum { C_LR, C_EPOCHS, C_LOSS, C_FINAL, C_BEST, C_TTA_EP, C_TTA_S, C_TRAIN_S, C_STEP, C_STEP_C,
       C_STEP_R, C_OPT_C, C_OPT_R, C_N };

static void cells(const model_t* m, const model_t* fn, const char* lr_how, double target,
                  char out[C_N][32]) {
    int done = m->epochs_done, last = done - 1, best = -1, hit = -1;
    double secs = 0.0, secs_hit = 0.0;
    for (int e = 0; e < done; ++e) {
        secs += m->train_ms[e] / 1e3;
        if (best < 0 || m->acc[e] > m->acc[best]) best = e;
        if (hit < 0 && m->acc[e] >= target) {
            hit = e;
            secs_hit = secs;
        }
    }
    snprintf(out[C_LR], 32, "%g (%s)", m->lr, lr_how);
    if (m->diverged_epoch >= 0) snprintf(out[C_EPOCHS], 32, "%d, diverged in %d", done,
                                         m->diverged_epoch + 1);
    else snprintf(out[C_EPOCHS], 32, "%d", done);
    if (done > 0) {
        snprintf(out[C_LOSS], 32, "%.4f", m->loss[last]);
        snprintf(out[C_FINAL], 32, "%.1f%%", 100.0 * m->acc[last]);
        snprintf(out[C_BEST], 32, "%.1f%% (epoch %d)", 100.0 * m->acc[best], best + 1);
    } else {
        for (int c = C_LOSS; c <= C_BEST; ++c) snprintf(out[c], 32, "n/a");
    }
    if (hit >= 0) {
        snprintf(out[C_TTA_EP], 32, "%d", hit + 1);
        snprintf(out[C_TTA_S], 32, "%.3f s", secs_hit);
    } else {
        snprintf(out[C_TTA_EP], 32, "not reached");
        snprintf(out[C_TTA_S], 32, "not reached");
    }
    snprintf(out[C_TRAIN_S], 32, "%.3f s", secs);
    /* Collect / reuse epochs are FNGD's; SGD is measured over the same epochs. Only epochs
     * both models completed count, so the two columns compare like with like. */
    int e1 = done < fn->epochs_done ? done : fn->epochs_done;
    fmt_ms(out[C_STEP], 32, model_median(m, m->step_ms, NULL, -1, 0, done));
    fmt_ms(out[C_STEP_C], 32, model_median(m, m->step_ms, fn->collect, 1, 0, e1));
    fmt_ms(out[C_STEP_R], 32, model_median(m, m->step_ms, fn->collect, 0, 0, e1));
    fmt_ms(out[C_OPT_C], 32, model_median(m, m->opt_ms, fn->collect, 1, 0, e1));
    fmt_ms(out[C_OPT_R], 32, model_median(m, m->opt_ms, fn->collect, 0, 0, e1));
}

static void ratio(const char* what, const model_t* sgd, const model_t* fn, int opt) {
    int e1 = sgd->epochs_done < fn->epochs_done ? sgd->epochs_done : fn->epochs_done;
    const double* s = opt ? sgd->opt_ms : sgd->step_ms;
    const double* f = opt ? fn->opt_ms : fn->step_ms;
    double c = model_median(fn, f, fn->collect, 1, 0, e1) /
               model_median(sgd, s, fn->collect, 1, 0, e1);
    double r = model_median(fn, f, fn->collect, 0, 0, e1) /
               model_median(sgd, s, fn->collect, 0, 0, e1);
    printf("  FNGD/SGD %s: collect epochs ", what);
    if (isnan(c)) printf("n/a");
    else printf("%.2fx", c);
    printf(", reuse epochs ");
    if (isnan(r)) printf("n/a\n");
    else printf("%.2fx\n", r);
}

void report_summary(const model_t* sgd, const model_t* fn, const char* sgd_lr_how,
                    const char* fn_lr_how, double target) {
    static const char* const labels[C_N] = {
        "learning rate", "epochs completed", "final training loss", "final test accuracy",
        "best test accuracy", "epochs to target", "training seconds to target",
        "training seconds, all epochs", "median step", "median step, collect epochs",
        "median step, reuse epochs", "median optimizer part, collect",
        "median optimizer part, reuse"};
    char a[C_N][32], b[C_N][32];
    cells(sgd, fn, sgd_lr_how, target, a);
    cells(fn, fn, fn_lr_how, target, b);
    printf("\nsummary (target: %.1f%% test accuracy; training seconds exclude evaluation)\n",
           100.0 * target);
    row("", sgd->name, fn->name);
    for (int k = 0; k < C_N; ++k) row(labels[k], a[k], b[k]);
    ratio("median step time", sgd, fn, 0);
    ratio("median optimizer part", sgd, fn, 1);
    printf("  (optimizer part: SGD = the example's weight gradients, which reuse the forward "
           "pass's\n   im2col patches, + update; FNGD = fngd_step, which rebuilds them from the "
           "layer input\n   and checks inputs for NaN/Inf, + update. %s)\n",
           fn->dev ? "fngd_bench_cuda_kernels times the CUDA\n   kernels alone."
                   : "fngd_bench_cpu compares like with like.");
    if (fn->dev)
        printf("  (CUDA backend: the FNGD step and optimizer-part times include the host<->device "
               "copies\n   of every layer's input and output gradient and of the direction; the "
               "network itself\n   runs on the host.)\n");
}

int report_fngd_stats(const model_t* fn) {
    fngd_stats_t st;
    memset(&st, 0, sizeof(st));
    st.struct_size = sizeof(st);
    if (model_check(fngd_get_stats(fn->fngd, &st), fn->fngd, "fngd_get_stats")) return 1;
    printf("  libfngd: %lld steps, %lld factorizations, %lld damping retries, %lld ids stored, "
           "%lld unseen-id fallbacks; coefficients in [%.3g, %.3g], mean %.3g; last damping "
           "%.3g, last step scale %.3g\n",
           (long long)st.steps_total, (long long)st.factorizations,
           (long long)st.damping_retries, (long long)st.coefs_stored, (long long)st.fallback_ids,
           st.coef_min, st.coef_max, st.coef_mean, st.last_damping, st.last_step_scale);
    if (st.fallback_ids != 0) {
        fprintf(stderr, "unexpected: every training id is stored in epoch 1 (the partial last "
                        "batch included), so no fallback should happen, yet %lld did\n",
                (long long)st.fallback_ids);
        return 1;
    }
    return 0;
}
