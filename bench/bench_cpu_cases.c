#include "bench_cpu_cases.h"

#include <stdio.h>
#include <string.h>

static void add(bench_case_t* c, const char* name, fngd_layer_desc_t d) {
    c->layer_names[c->nlayers] = name;
    c->descs[c->nlayers++] = d;
}

static fngd_layer_desc_t conv3x3(int cin, int cout, int hw, int bias) {
    fngd_layer_desc_t d = fngd_conv2d_desc(cin, cout, hw, hw, 3, 3, bias);
    d.pad_h = d.pad_w = 1;
    return d;
}

void bench_case_demo(bench_case_t* c, int N) {
    memset(c, 0, sizeof(*c));
    c->name = "demo";
    c->description = "digits example network (conv 1->8 3x3 on 8x8, linear 512->64, 64->10)";
    c->N = N;
    c->repeat_factor = 5; /* well under a millisecond per step */
    add(c, "conv1", conv3x3(1, 8, 8, 1));
    add(c, "fc1", fngd_linear_desc(512, 64, 1));
    add(c, "fc2", fngd_linear_desc(64, 10, 1));
}

void bench_case_resnet18(bench_case_t* c, int N) {
    memset(c, 0, sizeof(*c));
    c->name = "resnet18_cifar";
    c->description = "ResNet-18 CIFAR-100 layer shapes, one 3x3 conv per stage + classifier";
    c->N = N;
    c->repeat_factor = 1;
    add(c, "stem", conv3x3(3, 64, 32, 0));
    add(c, "stage1", conv3x3(64, 64, 32, 0));
    add(c, "stage2", conv3x3(128, 128, 16, 0));
    add(c, "stage3", conv3x3(256, 256, 8, 0));
    add(c, "stage4", conv3x3(512, 512, 4, 0));
    add(c, "fc", fngd_linear_desc(512, 100, 1));
}

void bench_layer_shape(const fngd_layer_desc_t* d, char* buf, int len) {
    if (d->kind == FNGD_LAYER_CONV2D)
        snprintf(buf, (size_t)len, "conv %d->%d %dx%d on %dx%d", d->in_channels, d->out_channels,
                 d->kernel_h, d->kernel_w, d->in_h, d->in_w);
    else
        snprintf(buf, (size_t)len, "linear %d->%d", d->in_features, d->out_features);
}
