#include "digits_device.h"

#include <stdio.h>

#ifdef FNGD_EXAMPLE_WITH_CUDA

#include <stdlib.h>

#include <cuda_runtime.h>

struct digits_device {
    cudaStream_t stream;
    int n_layers;
    int max_batch;
    int64_t n_grad;
    float* grads; /* n_grad floats */
    digits_device_layer_t sizes[DIGITS_DEVICE_MAX_LAYERS];
    float* in[DIGITS_DEVICE_MAX_LAYERS];   /* max_batch * sizes[l].in_floats */
    float* gout[DIGITS_DEVICE_MAX_LAYERS]; /* max_batch * sizes[l].gout_floats */
};

/* Print a failed CUDA call with its error string; returns 1 so callers can `return` it. */
static int cuda_failed(cudaError_t e, const char* call, int line) {
    fprintf(stderr, "CUDA error at %s:%d in %s: %s (%s)\n", __FILE__, line, call,
            cudaGetErrorString(e), cudaGetErrorName(e));
    return 1;
}

#define EX_CUDA(call)                                                    \
    do {                                                                 \
        cudaError_t ex_cuda_e_ = (call);                                 \
        if (ex_cuda_e_ != cudaSuccess)                                   \
            return cuda_failed(ex_cuda_e_, #call, __LINE__);             \
    } while (0)

int digits_device_compiled(void) { return 1; }

static int alloc_floats(float** p, size_t n) {
    EX_CUDA(cudaMalloc((void**)p, (n > 0 ? n : 1) * sizeof(float)));
    return 0;
}

/* Allocation and setup; on failure the caller destroys the partly built struct. */
static int device_setup(digits_device_t* d, int device, const digits_device_layer_t* layers) {
    EX_CUDA(cudaSetDevice(device));
    EX_CUDA(cudaStreamCreateWithFlags(&d->stream, cudaStreamNonBlocking));
    if (alloc_floats(&d->grads, (size_t)d->n_grad)) return 1;
    for (int l = 0; l < d->n_layers; ++l) {
        d->sizes[l] = layers[l];
        if (alloc_floats(&d->in[l], (size_t)d->max_batch * layers[l].in_floats) ||
            alloc_floats(&d->gout[l], (size_t)d->max_batch * layers[l].gout_floats))
            return 1;
    }
    /* Defined contents before the first step (libfngd overwrites them each step anyway). */
    EX_CUDA(cudaMemsetAsync(d->grads, 0, (size_t)d->n_grad * sizeof(float), d->stream));
    EX_CUDA(cudaStreamSynchronize(d->stream));
    return 0;
}

int digits_device_create(digits_device_t** out, int device, int max_batch, int64_t n_grad,
                         int n_layers, const digits_device_layer_t* layers) {
    *out = NULL;
    if (n_layers < 1 || n_layers > DIGITS_DEVICE_MAX_LAYERS || max_batch < 1 || n_grad < 1) {
        fprintf(stderr, "digits_device_create: bad sizes\n");
        return 1;
    }
    digits_device_t* d = calloc(1, sizeof(*d));
    if (!d) {
        fprintf(stderr, "out of memory\n");
        return 1;
    }
    d->n_layers = n_layers;
    d->max_batch = max_batch;
    d->n_grad = n_grad;
    if (device_setup(d, device, layers)) {
        digits_device_destroy(d);
        return 1;
    }
    *out = d;
    return 0;
}

void digits_device_destroy(digits_device_t* d) {
    if (!d) return;
    /* Teardown: report failures but keep freeing the rest. */
    cudaError_t e;
    if (d->stream && (e = cudaStreamSynchronize(d->stream)) != cudaSuccess)
        cuda_failed(e, "cudaStreamSynchronize", __LINE__);
    for (int l = 0; l < d->n_layers; ++l) {
        if (d->in[l] && (e = cudaFree(d->in[l])) != cudaSuccess) cuda_failed(e, "cudaFree", __LINE__);
        if (d->gout[l] && (e = cudaFree(d->gout[l])) != cudaSuccess)
            cuda_failed(e, "cudaFree", __LINE__);
    }
    if (d->grads && (e = cudaFree(d->grads)) != cudaSuccess) cuda_failed(e, "cudaFree", __LINE__);
    if (d->stream && (e = cudaStreamDestroy(d->stream)) != cudaSuccess)
        cuda_failed(e, "cudaStreamDestroy", __LINE__);
    free(d);
}

float* digits_device_grads(digits_device_t* d) { return d->grads; }

fngd_stream_t digits_device_stream(const digits_device_t* d) { return (fngd_stream_t)d->stream; }

int digits_device_upload(digits_device_t* d, int N, const fngd_layer_batch_t* host,
                         fngd_layer_batch_t* dev_batches) {
    if (N < 1 || N > d->max_batch) {
        fprintf(stderr, "digits_device_upload: batch %d outside [1, %d]\n", N, d->max_batch);
        return 1;
    }
    /* The host arrays are pageable (malloc'd by the net), so these copies are staged by the
     * driver and the host waits for them; pinned memory would let them overlap. */
    for (int l = 0; l < d->n_layers; ++l) {
        EX_CUDA(cudaMemcpyAsync(d->in[l], host[l].input,
                                (size_t)N * d->sizes[l].in_floats * sizeof(float),
                                cudaMemcpyHostToDevice, d->stream));
        EX_CUDA(cudaMemcpyAsync(d->gout[l], host[l].grad_output,
                                (size_t)N * d->sizes[l].gout_floats * sizeof(float),
                                cudaMemcpyHostToDevice, d->stream));
        dev_batches[l].input = d->in[l];
        dev_batches[l].grad_output = d->gout[l];
    }
    return 0;
}

int digits_device_download(digits_device_t* d, float* host_grads) {
    EX_CUDA(cudaMemcpyAsync(host_grads, d->grads, (size_t)d->n_grad * sizeof(float),
                            cudaMemcpyDeviceToHost, d->stream));
    EX_CUDA(cudaStreamSynchronize(d->stream));
    return 0;
}

#else /* built without CUDA: the example only runs on the CPU backend */

int digits_device_compiled(void) { return 0; }

int digits_device_create(digits_device_t** out, int device, int max_batch, int64_t n_grad,
                         int n_layers, const digits_device_layer_t* layers) {
    (void)device, (void)max_batch, (void)n_grad, (void)n_layers, (void)layers;
    *out = NULL;
    fprintf(stderr, "this example was built without CUDA (configure with "
                    "-DFNGD_ENABLE_CUDA=ON to get the device path)\n");
    return 1;
}

void digits_device_destroy(digits_device_t* dev) { (void)dev; }

float* digits_device_grads(digits_device_t* dev) {
    (void)dev;
    return NULL;
}

fngd_stream_t digits_device_stream(const digits_device_t* dev) {
    (void)dev;
    return NULL;
}

int digits_device_upload(digits_device_t* dev, int N, const fngd_layer_batch_t* host,
                         fngd_layer_batch_t* dev_batches) {
    (void)dev, (void)N, (void)host, (void)dev_batches;
    fprintf(stderr, "digits_device_upload: built without CUDA\n");
    return 1;
}

int digits_device_download(digits_device_t* dev, float* host_grads) {
    (void)dev, (void)host_grads;
    fprintf(stderr, "digits_device_download: built without CUDA\n");
    return 1;
}

#endif
