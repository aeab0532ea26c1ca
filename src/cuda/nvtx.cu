/* NVTX3 ranges of the CUDA backend, in one domain "libfngd". Header-only NVTX3: the tool
 * library is loaded only when a profiler injects it, so an unprofiled run pays one branch. */
#include "nvtx_range.h"

#ifndef FNGD_NO_NVTX
#include <cstdlib>
#include <cstring>

#include <nvtx3/nvToolsExt.h>

namespace {
struct fngd_nvtx_state {
    bool enabled;
    nvtxDomainHandle_t domain;
    fngd_nvtx_state()
    {
        const char* v = std::getenv("FNGD_NVTX");
        enabled = !(v && std::strcmp(v, "0") == 0);
        domain = enabled ? nvtxDomainCreateA("libfngd") : nullptr;
    }
};
/* Function-local static: initialised once, thread-safely (C++11), at the first range. */
const fngd_nvtx_state& nvtx_state()
{
    static const fngd_nvtx_state s;
    return s;
}
}  // namespace

extern "C" void fngd_nvtx_push(const char* name)
{
    const fngd_nvtx_state& s = nvtx_state();
    if (!s.enabled) return;
    nvtxEventAttributes_t a;
    std::memset(&a, 0, sizeof(a));
    a.version = NVTX_VERSION;
    a.size = NVTX_EVENT_ATTRIB_STRUCT_SIZE;
    a.messageType = NVTX_MESSAGE_TYPE_ASCII;
    a.message.ascii = name;
    nvtxDomainRangePushEx(s.domain, &a);
}

extern "C" void fngd_nvtx_pop(void)
{
    const fngd_nvtx_state& s = nvtx_state();
    if (s.enabled) nvtxDomainRangePop(s.domain);
}

#else  /* FNGD_NO_NVTX: ranges compiled out */

extern "C" void fngd_nvtx_push(const char* name) { (void)name; }
extern "C" void fngd_nvtx_pop(void) {}

#endif
