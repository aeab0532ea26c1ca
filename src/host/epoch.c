/* The epoch state machine: the phase of an epoch and the transition at fngd_end_epoch. */
#include "call.h"
#include "epoch.h"
#include "nvtx_range.h"

fngd_phase_t fngd_epoch_phase(const fngd_config_t* cfg, int epoch) {
    const int R = cfg->recompute_every;
    return epoch == 0 || (R > 0 && epoch % R == 0) ? FNGD_PHASE_COLLECT : FNGD_PHASE_REUSE;
}

/* Refresh the per-set fallback means from the table (after a collect epoch, or an import):
 * one summary of every set (one synchronisation), one upload. */
fngd_status_t fngd_refresh_fallback(fngd_handle_t h, const fngd_call_t* call) {
    FNGD_TRY(h->ops->summarize_coefs(h->ctx, h->coef_table, h->coef_seen, h->cfg.num_samples,
                                     h->nsets, h->coef_summary, call));
    for (int set = 0; set < h->nsets; ++set) {
        const fngd_coef_summary_t* c = &h->coef_summary[set];
        h->fallback_host[set] = c->count > 0 ? (float)(c->sum / (double)c->count) : 0.0f;
    }
    return h->ops->upload(h->ctx, h->coef_fallback, h->fallback_host,
                          (size_t)h->nsets * sizeof(float), call);
}

fngd_status_t fngd_end_epoch(fngd_handle_t h, fngd_stream_t stream) {
    FNGD_REQUIRE_HANDLE(h);
    fngd_counters_t* k = &h->counters;
    FNGD_REQUIRE(&h->err, h->prepared && k->steps_in_epoch > 0, FNGD_ERROR_INVALID_STATE,
                 "fngd_end_epoch: no step was taken in epoch %d", k->epoch);
    h->last_stream = stream;
    fngd_nvtx_push("fngd_end_epoch");
    fngd_call_t call;
    fngd_status_t s = fngd_call_begin(h, stream, &call);
    if (s == FNGD_SUCCESS && k->phase == FNGD_PHASE_COLLECT) s = fngd_refresh_fallback(h, &call);
    if (s == FNGD_SUCCESS) s = h->ops->synchronize(h->ctx, &call);
    fngd_call_end(h, &call);
    if (s == FNGD_SUCCESS) {
        k->epoch++;
        k->steps_in_epoch = 0;
        k->phase = fngd_epoch_phase(&h->cfg, k->epoch);
    }
    fngd_nvtx_pop();
    return s;
}
