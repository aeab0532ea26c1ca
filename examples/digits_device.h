/* Device buffers for running the digits example's FNGD model on libfngd's CUDA backend.
 *
 * The network itself stays on the host (plain C forward/backward). libfngd's CUDA backend
 * wants device memory, so each step the example copies every layer's input and output
 * gradient to device buffers, fngd_step writes the direction into a device copy of the
 * gradient array, and that is copied back before the host momentum update. All copies run
 * on one stream the module creates, the stream passed to fngd_step and fngd_end_epoch.
 *
 * Built without CUDA (FNGD_EXAMPLE_WITH_CUDA undefined), digits_device_compiled() is 0 and
 * digits_device_create() reports that and fails; the train loop then never calls the rest.
 * Every function that can fail prints the CUDA error string and returns nonzero. */
#ifndef FNGD_EX_DIGITS_DEVICE_H
#define FNGD_EX_DIGITS_DEVICE_H

#include <stddef.h>
#include <stdint.h>

#include "fngd.h"

#define DIGITS_DEVICE_MAX_LAYERS 8

typedef struct digits_device digits_device_t;

/* Floats per sample of one layer's input and output gradient (the fngd_step batch). */
typedef struct digits_device_layer {
    size_t in_floats;
    size_t gout_floats;
} digits_device_layer_t;

/* 1 when the example was compiled with the CUDA runtime, else 0. */
int digits_device_compiled(void);

/* Select CUDA device `device`, create the stream and allocate, in device memory, the gradient
 * array (n_grad floats, same layout as the host one) and room for max_batch samples of each
 * layer's input and output gradient. Returns 0 and *out, or 1 (message printed). */
int digits_device_create(digits_device_t** out, int device, int max_batch, int64_t n_grad,
                         int n_layers, const digits_device_layer_t* layers);
/* Wait for the stream, free everything. NULL is a no-op. Call after fngd_destroy of the
 * handle the device gradient buffers were registered with (it borrows them until then). */
void digits_device_destroy(digits_device_t* dev);

/* Device base of the gradient array; a layer's grad buffer is this plus its host offset. */
float* digits_device_grads(digits_device_t* dev);
/* The cudaStream_t as libfngd takes it. */
fngd_stream_t digits_device_stream(const digits_device_t* dev);

/* Enqueue host->device copies of N samples of every layer's host[l].input and
 * host[l].grad_output, and set dev_batches[l] to the device copies (valid until the next
 * upload). Returns 0, or 1 (message printed). */
int digits_device_upload(digits_device_t* dev, int N, const fngd_layer_batch_t* host,
                         fngd_layer_batch_t* dev_batches);
/* Enqueue the device->host copy of the gradient array into host_grads (n_grad floats) and
 * wait for the stream, so host_grads holds the direction on return. Returns 0, or 1. */
int digits_device_download(digits_device_t* dev, float* host_grads);

#endif
