/* What the digits example prints about its final runs: the FNGD configuration, one line per
 * model and epoch, the side-by-side summary and libfngd's counters. */
#ifndef FNGD_EX_DIGITS_REPORT_H
#define FNGD_EX_DIGITS_REPORT_H

#include "digits_model.h"
#include "digits_train.h"

/* The libfngd settings in effect, each marked "default" or "given". */
void report_fngd_config(const train_options_t* o, const fngd_config_t* cfg);

/* One model's line of an epoch: loss, test accuracy, median step and optimizer-part time. */
void report_epoch(const model_t* m, int e);

/* Side by side: learning rate (lr_how: "sweep" or "given"), losses, final and best test
 * accuracy, epochs and training seconds to `target`, median step times and FNGD's collect and
 * reuse step time ratios to SGD. */
void report_summary(const model_t* sgd, const model_t* fn, const char* sgd_lr_how,
                    const char* fn_lr_how, double target);

/* libfngd's counters; returns 1 if the stats are inconsistent (an unexpected fallback). */
int report_fngd_stats(const model_t* fn);

#endif
