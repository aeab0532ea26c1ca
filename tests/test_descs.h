// Layer descriptors with the whole convolution geometry in one call, shared by the API tests
// (through test_util.h) and the backend tests (through backend_test_util.h).
#ifndef FNGD_TEST_DESCS_H
#define FNGD_TEST_DESCS_H

#include "fngd.h"

namespace fngd_test {

// fngd_conv2d_desc with stride (sh, sw), padding (ph, pw) and dilation (dh, dw) set too.
inline fngd_layer_desc_t conv_desc(int cin, int cout, int h, int w, int kh, int kw, int sh, int sw,
                                   int ph, int pw, int dh, int dw, int bias) {
    fngd_layer_desc_t d = fngd_conv2d_desc(cin, cout, h, w, kh, kw, bias);
    d.stride_h = sh;
    d.stride_w = sw;
    d.pad_h = ph;
    d.pad_w = pw;
    d.dilation_h = dh;
    d.dilation_w = dw;
    return d;
}

}  // namespace fngd_test

#endif
