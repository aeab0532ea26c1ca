/* Built instead of src/cuda when the library is configured without CUDA. */
#include "backend.h"

const fngd_backend_ops_t* fngd_cuda_backend_ops(void) { return NULL; }
int fngd_cuda_device_available(void) { return 0; }
