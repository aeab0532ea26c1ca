/* Internal pieces of the checkpoint code shared by state_io.c (images in memory),
 * state_file.c (files) and the tests. */
#ifndef FNGD_HOST_STATE_IO_H
#define FNGD_HOST_STATE_IO_H

#include <stddef.h>
#include <stdint.h>

#include "handle.h"
#include "state_format.h"

#ifdef __cplusplus
extern "C" {
#endif

/* The geometry words of a layer's record in the layer table: the descriptor fields that its
 * kind uses (LINEAR: in, out, positions; CONV2D: C_in, C_out, H, W, kh, kw, strides, pads,
 * dilations; NORM_AFFINE: C, T, channels_last; GENERIC: num_params), the rest zero. */
void fngd_state_layer_words(const fngd_layer_t* layer, int64_t words[FNGD_STATE_LAYER_WORDS]);

/* Test hook: called by fngd_save_file after the first half of the image has been written and
 * flushed to the temporary file and before the rest, with the temporary file's path. A test
 * can kill the writing process there to simulate a crash mid-save. NULL disables. */
typedef void (*fngd_state_write_hook_t)(const char* tmp_path, size_t written, size_t total);
void fngd_test_set_state_write_hook(fngd_state_write_hook_t hook);

#ifdef __cplusplus
}
#endif

#endif
