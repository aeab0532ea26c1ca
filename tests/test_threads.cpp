// The header's thread-safety contract: distinct handles are independent and may be used
// concurrently. Handles stepping (and checkpointing) on their own std::threads must give
// bit-identical parameters and states to the same work done one after another, and the
// per-thread last-error message of handle-less calls must not leak between threads. On each
// backend of the binary (backend_param.h).
#include <gtest/gtest.h>

#include <unistd.h>

#include <atomic>
#include <cstdio>
#include <cstring>
#include <string>
#include <thread>
#include <vector>

#include "state_model.h"

namespace {

constexpr int kEpochs = 3;

// The result of one job: final parameters (all layers, concatenated) and final state image.
struct Result {
    fngd_status_t status = FNGD_SUCCESS;
    std::string error;
    std::vector<float> params;
    std::vector<uint8_t> state;
    bool operator==(const Result& o) const {
        return status == o.status && params == o.params && state == o.state;
    }
};

fngd_config_t job_config(int job) {
    fngd_config_t c = sm_config();
    if (job % 2) c.coef_mode = FNGD_COEF_GLOBAL;  // two kinds of work in flight at once
    return c;
}

// One training job: the whole schedule on its own handle and model. With a non-empty
// `ckpt`, the job also stops half-way, saves to that file and resumes in a fresh handle.
Result run_job(int job, const std::string& ckpt) {
    Result r;
    sm_model_t m;
    if (sm_model_init(&m, 1000 + (uint64_t)job) != 0) {
        r.status = FNGD_ERROR_OUT_OF_MEMORY;
        return r;
    }
    fngd_config_t cfg = job_config(job);
    fngd_handle_t h = nullptr;
    const int total = sm_actions(kEpochs), half = total / 2 + 1;
    r.status = sm_make_handle(&m, &cfg, &h);
    if (r.status == FNGD_SUCCESS) r.status = sm_run(h, &m, 0, ckpt.empty() ? total : half);
    if (r.status == FNGD_SUCCESS && !ckpt.empty()) {
        r.status = fngd_save_file(h, ckpt.c_str());
        fngd_destroy(h);
        h = nullptr;
        if (r.status == FNGD_SUCCESS) r.status = sm_make_handle(&m, &cfg, &h);
        if (r.status == FNGD_SUCCESS) r.status = fngd_load_file(h, ckpt.c_str());
        if (r.status == FNGD_SUCCESS) r.status = sm_run(h, &m, half, total);
    }
    size_t bytes = 0;
    if (r.status == FNGD_SUCCESS) r.status = fngd_state_size(h, &bytes);
    if (r.status == FNGD_SUCCESS) {
        r.state.resize(bytes);
        r.status = fngd_save_state(h, r.state.data(), bytes, nullptr);
    }
    if (r.status != FNGD_SUCCESS) r.error = fngd_get_last_error(h);
    for (int l = 0; l < SM_LAYERS; ++l) {
        r.params.insert(r.params.end(), m.weight[l], m.weight[l] + m.n_weight[l]);
        r.params.insert(r.params.end(), m.bias[l], m.bias[l] + m.n_bias[l]);
    }
    fngd_destroy(h);
    sm_model_free(&m);
    return r;
}

std::vector<Result> run_concurrently(int jobs, const std::vector<std::string>& ckpts) {
    std::vector<Result> results((size_t)jobs);
    std::vector<std::thread> threads;
    std::atomic<int> ready{0};
    for (int j = 0; j < jobs; ++j)
        threads.emplace_back([&, j] {
            // Start together so the steps really overlap.
            ready.fetch_add(1);
            while (ready.load() < jobs) std::this_thread::yield();
            results[(size_t)j] = run_job(j, ckpts[(size_t)j]);
        });
    for (auto& t : threads) t.join();
    return results;
}

class Threads : public fngd_test::BackendTest {};
FNGD_INSTANTIATE_BACKENDS(Threads);

}  // namespace

TEST_P(Threads, TwoHandlesOnTwoThreadsMatchSequentialRuns) {
    const int jobs = 2;
    std::vector<std::string> no_ckpt((size_t)jobs);
    std::vector<Result> sequential;
    for (int j = 0; j < jobs; ++j) {
        sequential.push_back(run_job(j, ""));
        ASSERT_EQ(FNGD_SUCCESS, sequential.back().status) << sequential.back().error;
    }
    ASSERT_NE(sequential[0].params, sequential[1].params);
    for (int round = 0; round < 20; ++round) {
        SCOPED_TRACE("round " + std::to_string(round));
        std::vector<Result> concurrent = run_concurrently(jobs, no_ckpt);
        for (int j = 0; j < jobs; ++j) {
            ASSERT_EQ(FNGD_SUCCESS, concurrent[(size_t)j].status) << concurrent[(size_t)j].error;
            EXPECT_TRUE(concurrent[(size_t)j] == sequential[(size_t)j]) << "job " << j;
        }
    }
}

TEST_P(Threads, FourHandlesCheckpointingConcurrentlyMatchSequentialRuns) {
    const int jobs = 4;
    char tmpl[] = "/tmp/fngd_threads_XXXXXX";
    ASSERT_NE(nullptr, mkdtemp(tmpl));
    std::vector<std::string> ckpts;
    for (int j = 0; j < jobs; ++j) ckpts.push_back(std::string(tmpl) + "/job" + std::to_string(j));
    std::vector<Result> sequential;
    for (int j = 0; j < jobs; ++j) {
        sequential.push_back(run_job(j, ""));  // uninterrupted: resuming must not change a bit
        ASSERT_EQ(FNGD_SUCCESS, sequential.back().status) << sequential.back().error;
    }
    for (int round = 0; round < 5; ++round) {
        SCOPED_TRACE("round " + std::to_string(round));
        std::vector<Result> concurrent = run_concurrently(jobs, ckpts);
        for (int j = 0; j < jobs; ++j) {
            ASSERT_EQ(FNGD_SUCCESS, concurrent[(size_t)j].status) << concurrent[(size_t)j].error;
            EXPECT_TRUE(concurrent[(size_t)j] == sequential[(size_t)j]) << "job " << j;
        }
    }
    for (auto& p : ckpts) std::remove(p.c_str());
    rmdir(tmpl);
}

TEST_P(Threads, HandlelessErrorsStayOnTheirThread) {
    std::string seen[2];
    std::atomic<int> phase{0};
    auto worker = [&](int t) {
        fngd_handle_t h = nullptr;
        fngd_config_t cfg = sm_config();
        cfg.max_batch = t == 0 ? -1 : SM_BATCH;
        cfg.num_samples = t == 0 ? SM_SAMPLES : -5;
        EXPECT_EQ(FNGD_ERROR_INVALID_ARGUMENT, fngd_create(&cfg, &h));
        phase.fetch_add(1);
        while (phase.load() < 2) std::this_thread::yield();  // both have failed now
        seen[t] = fngd_get_last_error(nullptr);
    };
    std::thread a(worker, 0), b(worker, 1);
    a.join();
    b.join();
    EXPECT_NE(std::string::npos, seen[0].find("max_batch")) << seen[0];
    EXPECT_NE(std::string::npos, seen[1].find("num_samples")) << seen[1];
}
