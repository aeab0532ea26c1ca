// Allocation-failure injection (src/host/alloc.h) through a whole life cycle: create, add
// layers, prepare, steps across an epoch end, save to a buffer and a file, load both into a
// trained handle and into a fresh one. Allocation n fails for n = 0, 1, 2, ... until the path
// needs no more: every failure must surface as FNGD_ERROR_OUT_OF_MEMORY, a failed load must
// leave the target's state byte-for-byte unchanged, no temporary file may remain, and after
// destroy the live allocation count must be back at its baseline.
#include <gtest/gtest.h>

#include <sys/stat.h>
#include <unistd.h>

#include <cstdio>
#include <cstring>
#include <iostream>
#include <string>
#include <vector>

#include "alloc.h"
#include "state_model.h"

namespace {

struct Model {
    sm_model_t m;
    Model() { EXPECT_EQ(0, sm_model_init(&m, 5)); }
    ~Model() { sm_model_free(&m); }
};

// Handles of one run of the path; destroyed at the end of the run, failure or not.
struct Handles {
    fngd_handle_t a = nullptr, b = nullptr, c = nullptr;
    ~Handles() {
        fngd_destroy(a);
        fngd_destroy(b);
        fngd_destroy(c);
    }
};

bool save(fngd_handle_t h, std::vector<uint8_t>& img) {
    size_t bytes = 0;
    if (fngd_state_size(h, &bytes) != FNGD_SUCCESS) return false;
    img.assign(bytes, 0);
    return fngd_save_state(h, img.data(), bytes, nullptr) == FNGD_SUCCESS;
}

struct Outcome {
    fngd_status_t status = FNGD_SUCCESS;
    std::string stage;        // where the path stopped
    std::string message;      // fngd_get_last_error there
    bool state_kept = true;   // a failed load left its target untouched
};

#define STAGE(name, handle, expr)                                                      \
    do {                                                                               \
        fngd_status_t s_ = (expr);                                                     \
        if (s_ != FNGD_SUCCESS) {                                                      \
            out.status = s_;                                                           \
            out.stage = name;                                                          \
            out.message = fngd_get_last_error(handle);                                 \
            return out;                                                                \
        }                                                                              \
    } while (0)

// Each load is checked for leaving its target as it was when it fails.
#define LOAD_STAGE(name, handle, expr)                                                 \
    do {                                                                               \
        std::vector<uint8_t> before_, after_;                                          \
        if (!save(handle, before_)) ADD_FAILURE() << "cannot save before " << name;    \
        fngd_status_t load_s_ = (expr);                                                \
        if (load_s_ != FNGD_SUCCESS) {                                                 \
            if (!save(handle, after_)) ADD_FAILURE() << "cannot save after " << name;  \
            out.state_kept = before_ == after_;                                        \
        }                                                                              \
        STAGE(name, handle, load_s_);                                                  \
    } while (0)

Outcome run_path(Model& ma, Model& mb, Model& mc, const std::string& path) {
    Outcome out;
    Handles hs;
    fngd_config_t cfg = sm_config();
    STAGE("create", nullptr, fngd_create(&cfg, &hs.a));
    for (int l = 0; l < SM_LAYERS; ++l) STAGE("add_layer", hs.a, fngd_add_layer(hs.a, &ma.m.desc[l], nullptr));
    STAGE("prepare", hs.a, fngd_prepare(hs.a));
    STAGE("steps", hs.a, sm_run(hs.a, &ma.m, 0, 7));  // collect epoch, end, two reuse steps
    std::vector<uint8_t> img;
    STAGE("save_state", hs.a, save(hs.a, img) ? FNGD_SUCCESS : FNGD_ERROR_INTERNAL);
    STAGE("save_file", hs.a, fngd_save_file(hs.a, path.c_str()));

    STAGE("create b", nullptr, fngd_create(&cfg, &hs.b));
    for (int l = 0; l < SM_LAYERS; ++l) STAGE("add_layer b", hs.b, fngd_add_layer(hs.b, &mb.m.desc[l], nullptr));
    STAGE("steps b", hs.b, sm_run(hs.b, &mb.m, 0, 2));
    LOAD_STAGE("load_state b", hs.b, fngd_load_state(hs.b, img.data(), img.size()));
    LOAD_STAGE("load_file b", hs.b, fngd_load_file(hs.b, path.c_str()));

    STAGE("create c", nullptr, fngd_create(&cfg, &hs.c));  // left unprepared: load prepares it
    for (int l = 0; l < SM_LAYERS; ++l) STAGE("add_layer c", hs.c, fngd_add_layer(hs.c, &mc.m.desc[l], nullptr));
    LOAD_STAGE("load_file c", hs.c, fngd_load_file(hs.c, path.c_str()));
    STAGE("steps c", hs.c, sm_run(hs.c, &mc.m, 7, 9));
    return out;
}

}  // namespace

TEST(FaultInjection, EveryAllocationFailureIsCleanOutOfMemory) {
    char tmpl[] = "/tmp/fngd_fault_XXXXXX";
    ASSERT_NE(nullptr, mkdtemp(tmpl));
    const std::string dir = tmpl, path = dir + "/f.fngd";
    const std::string tmp = path + ".tmp." + std::to_string(getpid());
    Model ma, mb, mc;

    // A clean run counts the allocation sites of the path.
    const long baseline = fngd_test_live_allocs();
    fngd_test_fail_alloc_after(-1);
    Outcome clean = run_path(ma, mb, mc, path);
    const long sites = fngd_test_fail_alloc_after(-1);
    ASSERT_EQ(FNGD_SUCCESS, clean.status) << clean.stage << ": " << clean.message;
    ASSERT_EQ(baseline, fngd_test_live_allocs());
    ASSERT_GT(sites, 20);

    long failures = 0;
    for (long n = 0;; ++n) {
        SCOPED_TRACE("allocation " + std::to_string(n) + " fails");
        Model a, b, c;
        std::remove(path.c_str());
        fngd_test_fail_alloc_after(n);
        Outcome o = run_path(a, b, c, path);
        fngd_test_fail_alloc_after(-1);
        EXPECT_EQ(baseline, fngd_test_live_allocs()) << "leak after failing in " << o.stage;
        EXPECT_NE(0, access(tmp.c_str(), F_OK)) << "temporary file left by " << o.stage;
        if (o.status == FNGD_SUCCESS) {
            EXPECT_EQ(sites, n) << "a failed allocation was swallowed";
            break;
        }
        ++failures;
        EXPECT_EQ(FNGD_ERROR_OUT_OF_MEMORY, o.status) << o.stage << ": " << o.message;
        EXPECT_FALSE(o.message.empty()) << o.stage;
        EXPECT_TRUE(o.state_kept) << o.stage << " changed the state it failed to load";
        ASSERT_LT(n, sites) << "the path still fails after all its allocations";
    }
    EXPECT_EQ(sites, failures);
    std::cout << "[fault-injection] " << failures
              << " allocation sites failed one at a time: all FNGD_ERROR_OUT_OF_MEMORY, "
                 "no leak, no partial load\n";
    RecordProperty("allocation_failures_injected", (int)failures);
    std::remove(path.c_str());
    rmdir(dir.c_str());
}
