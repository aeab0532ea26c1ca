// Checkpoints (fngd_state_size / save_state / load_state / save_file / load_file): the format,
// exact resume at every point of a 3-epoch run, and that every bad image (other version,
// configuration or layer set, truncated, bit-flipped, forged) is refused with the documented
// status while the live state stays byte-for-byte what it was. These run on each backend of the
// binary (backend_param.h); the CRC and the file-level tests (one forks a writer, which a CUDA
// process must not do) are host-only and run in fngd_tests alone.
#include <gtest/gtest.h>

#include <fcntl.h>
#include <signal.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cmath>
#include <cstdio>
#include <cstring>
#include <fstream>
#include <iterator>
#include <memory>
#include <string>
#include <vector>

#include "crc32.h"
#include "state_format.h"
#include "state_io.h"
#include "state_model.h"

namespace {

constexpr int kEpochs = 3;

struct Model {
    sm_model_t m;
    explicit Model(uint64_t seed = 1) { EXPECT_EQ(0, sm_model_init(&m, seed)); }
    ~Model() { sm_model_free(&m); }
    Model(const Model&) = delete;
    Model& operator=(const Model&) = delete;
};

struct Handle {
    fngd_handle_t h = nullptr;
    Handle() = default;
    Handle(const Model& model, const fngd_config_t* cfg = nullptr) {
        fngd_status_t s = sm_make_handle(&model.m, cfg, &h);
        EXPECT_EQ(FNGD_SUCCESS, s) << fngd_get_last_error(nullptr);
    }
    ~Handle() { fngd_destroy(h); }
    Handle(const Handle&) = delete;
    Handle& operator=(const Handle&) = delete;
    operator fngd_handle_t() const { return h; }
};

std::vector<uint8_t> save(fngd_handle_t h) {
    size_t bytes = 0;
    EXPECT_EQ(FNGD_SUCCESS, fngd_state_size(h, &bytes)) << fngd_get_last_error(h);
    std::vector<uint8_t> img(bytes);
    size_t written = 0;
    EXPECT_EQ(FNGD_SUCCESS, fngd_save_state(h, img.data(), img.size(), &written))
        << fngd_get_last_error(h);
    EXPECT_EQ(bytes, written);
    return img;
}

std::string temp_dir() {
    char tmpl[] = "/tmp/fngd_state_XXXXXX";
    const char* d = mkdtemp(tmpl);
    EXPECT_NE(nullptr, d);
    return d ? d : "/tmp";
}

std::vector<uint8_t> read_bytes(const std::string& path) {
    std::ifstream f(path, std::ios::binary);
    return std::vector<uint8_t>(std::istreambuf_iterator<char>(f), {});
}

void write_bytes(const std::string& path, const std::vector<uint8_t>& b) {
    std::ofstream f(path, std::ios::binary | std::ios::trunc);
    f.write((const char*)b.data(), (std::streamsize)b.size());
}

// Fix the CRC trailer after a deliberate edit, so the loader gets past the checksum.
void reseal(std::vector<uint8_t>& img) {
    fngd_store_u32(img.data() + img.size() - 4, fngd_crc32(0, img.data(), img.size() - 4));
}

fngd_stats_t stats(fngd_handle_t h) {
    fngd_stats_t st;
    std::memset(&st, 0, sizeof st);
    st.struct_size = sizeof st;
    EXPECT_EQ(FNGD_SUCCESS, fngd_get_stats(h, &st)) << fngd_get_last_error(h);
    return st;
}

// A handle that has run `actions` of the schedule: its state is not trivial (stored
// coefficients, fallbacks, momentum, counters mid-epoch).
struct Trained {
    Model model;
    Handle handle{model};
    explicit Trained(int actions) {
        EXPECT_EQ(FNGD_SUCCESS, sm_run(handle, &model.m, 0, actions)) << fngd_get_last_error(handle);
    }
};

// Offsets of the fixed part of the image (state_format.h).
constexpr size_t kConfigAt = FNGD_STATE_PREAMBLE_BYTES;
constexpr size_t kLayersAt = kConfigAt + FNGD_STATE_CONFIG_BYTES;
constexpr size_t kSectionsAt = kLayersAt + SM_LAYERS * FNGD_STATE_LAYER_BYTES;

}  // namespace

// ---- CRC-32 ------------------------------------------------------------------------------------

#ifndef FNGD_TEST_CUDA
TEST(StateCrc32, MatchesTheStandardCheckValueAndTheBitwiseDefinition) {
    EXPECT_EQ(0xCBF43926u, fngd_crc32(0, "123456789", 9));
    EXPECT_EQ(0u, fngd_crc32(0, "", 0));
    // Bit-by-bit definition over a pseudo-random buffer, also split at every point.
    std::vector<uint8_t> buf(300);
    for (size_t i = 0; i < buf.size(); ++i) buf[i] = (uint8_t)(i * 131 + 7);
    uint32_t c = 0xFFFFFFFFu;
    for (uint8_t byte : buf) {
        c ^= byte;
        for (int k = 0; k < 8; ++k) c = (c >> 1) ^ (0xEDB88320u & (0u - (c & 1u)));
    }
    uint32_t want = c ^ 0xFFFFFFFFu;
    EXPECT_EQ(want, fngd_crc32(0, buf.data(), buf.size()));
    for (size_t cut = 0; cut <= buf.size(); cut += 37)
        EXPECT_EQ(want, fngd_crc32(fngd_crc32(0, buf.data(), cut), buf.data() + cut,
                                   buf.size() - cut));
}
#endif

// ---- format ------------------------------------------------------------------------------------

class StateFormat : public fngd_test::BackendTest {};
FNGD_INSTANTIATE_BACKENDS(StateFormat);

TEST_P(StateFormat, HeaderIsLittleEndianAndSizedAsDocumented) {
    Trained t(3);
    std::vector<uint8_t> img = save(t.handle);
    ASSERT_GT(img.size(), kSectionsAt);
    EXPECT_EQ(0, std::memcmp(img.data(), FNGD_STATE_MAGIC, 8));
    EXPECT_EQ(FNGD_STATE_FORMAT_VERSION, fngd_load_u32(img.data() + 8));
    EXPECT_EQ(0x04, img[12]);  // byte-order mark 0x01020304, little-endian on disk
    EXPECT_EQ(0x01, img[15]);
    EXPECT_EQ((uint64_t)img.size(), fngd_load_u64(img.data() + 16));
    EXPECT_EQ((uint32_t)SM_BATCH, fngd_load_u32(img.data() + kConfigAt));
    EXPECT_EQ((uint64_t)SM_SAMPLES, fngd_load_u64(img.data() + kConfigAt + 4));
    // Expected size: fixed parts + counters + table + seen + fallback + momentum.
    int64_t grad_len = 0;
    for (int l = 0; l < SM_LAYERS; ++l) grad_len += t.model.m.n_weight[l] + t.model.m.n_bias[l];
    size_t want = FNGD_STATE_PREAMBLE_BYTES + FNGD_STATE_CONFIG_BYTES +
                  SM_LAYERS * FNGD_STATE_LAYER_BYTES + 5 * FNGD_STATE_SECTION_HEADER_BYTES +
                  FNGD_STATE_COUNTERS_BYTES + SM_SAMPLES * SM_LAYERS * 4 + SM_SAMPLES +
                  SM_LAYERS * 4 + (size_t)grad_len * 4 + FNGD_STATE_CRC_BYTES;
    EXPECT_EQ(want, img.size());
    EXPECT_EQ((uint32_t)FNGD_STATE_SECTION_COUNTERS, fngd_load_u32(img.data() + kSectionsAt));
    EXPECT_EQ(fngd_crc32(0, img.data(), img.size() - 4), fngd_load_u32(img.data() + img.size() - 4));
}

TEST_P(StateFormat, SaveIsDeterministicAndLeavesTheHandleAlone) {
    Trained t(2);
    std::vector<uint8_t> a = save(t.handle), b = save(t.handle);
    EXPECT_EQ(a, b);
}

TEST_P(StateFormat, ArgumentAndOrderErrors) {
    Model model;
    EXPECT_EQ(FNGD_ERROR_INVALID_ARGUMENT, fngd_state_size(nullptr, nullptr));
    fngd_config_t cfg = sm_config();
    Handle empty;
    ASSERT_EQ(FNGD_SUCCESS, fngd_create(&cfg, &empty.h));
    size_t bytes = 0;
    EXPECT_EQ(FNGD_ERROR_INVALID_STATE, fngd_state_size(empty, &bytes));  // no layers yet
    Handle h(model);
    EXPECT_EQ(FNGD_ERROR_INVALID_ARGUMENT, fngd_state_size(h, nullptr));
    ASSERT_EQ(FNGD_SUCCESS, fngd_state_size(h, &bytes));
    std::vector<uint8_t> img(bytes);
    EXPECT_EQ(FNGD_ERROR_INVALID_ARGUMENT, fngd_save_state(h, nullptr, bytes, nullptr));
    EXPECT_EQ(FNGD_ERROR_INVALID_ARGUMENT, fngd_save_state(h, img.data(), bytes - 1, nullptr));
    EXPECT_NE(std::string::npos, std::string(fngd_get_last_error(h)).find("too small"));
    EXPECT_EQ(FNGD_ERROR_INVALID_ARGUMENT, fngd_load_state(h, nullptr, bytes));
    EXPECT_EQ(FNGD_ERROR_INVALID_ARGUMENT, fngd_save_file(h, nullptr));
    EXPECT_EQ(FNGD_ERROR_INVALID_ARGUMENT, fngd_save_file(h, ""));
    EXPECT_EQ(FNGD_ERROR_INVALID_ARGUMENT, fngd_load_file(h, nullptr));
    EXPECT_EQ(FNGD_ERROR_INVALID_ARGUMENT, fngd_load_state(nullptr, img.data(), bytes));
}

// ---- round trip --------------------------------------------------------------------------------

class StateRoundTrip : public fngd_test::BackendTest {};
FNGD_INSTANTIATE_BACKENDS(StateRoundTrip);

// Every field: a handle restored from an image saves exactly that image again, and every
// public view of the state (stats, coefficients, learning rate, parameters after a step) agrees.
TEST_P(StateRoundTrip, EveryFieldSurvivesSaveAndLoad) {
    for (int actions : {1, 4, 5, 7, 10, 12}) {
        SCOPED_TRACE("after " + std::to_string(actions) + " actions");
        Trained t(actions);
        ASSERT_EQ(FNGD_SUCCESS, fngd_set_learning_rate(t.handle, 0.0123f));
        std::vector<uint8_t> img = save(t.handle);

        Model fresh_model;
        Handle fresh(fresh_model);
        ASSERT_EQ(FNGD_SUCCESS, fngd_load_state(fresh, img.data(), img.size()))
            << fngd_get_last_error(fresh);
        EXPECT_EQ(img, save(fresh));

        fngd_stats_t a = stats(t.handle), b = stats(fresh);
        EXPECT_EQ(a.epoch, b.epoch);
        EXPECT_EQ(a.phase, b.phase);
        EXPECT_EQ(a.steps_total, b.steps_total);
        EXPECT_EQ(a.steps_in_epoch, b.steps_in_epoch);
        EXPECT_EQ(a.factorizations, b.factorizations);
        EXPECT_EQ(a.damping_retries, b.damping_retries);
        EXPECT_EQ(a.fallback_ids, b.fallback_ids);
        EXPECT_EQ(a.rejected_steps, b.rejected_steps);
        EXPECT_EQ(a.coefs_stored, b.coefs_stored);
        EXPECT_EQ(a.last_damping, b.last_damping);
        if (a.coefs_stored > 0) {
            EXPECT_EQ(a.coef_min, b.coef_min);
            EXPECT_EQ(a.coef_max, b.coef_max);
            EXPECT_EQ(a.coef_mean, b.coef_mean);
        }
        std::vector<int64_t> ids(SM_SAMPLES);
        for (int i = 0; i < SM_SAMPLES; ++i) ids[(size_t)i] = i;
        for (int set = 0; set < SM_LAYERS; ++set) {
            std::vector<float> ca(SM_SAMPLES), cb(SM_SAMPLES);
            ASSERT_EQ(FNGD_SUCCESS, fngd_get_coefficients(t.handle, set, SM_SAMPLES, ids.data(), ca.data()));
            ASSERT_EQ(FNGD_SUCCESS, fngd_get_coefficients(fresh, set, SM_SAMPLES, ids.data(), cb.data()));
            EXPECT_EQ(0, std::memcmp(ca.data(), cb.data(), ca.size() * sizeof(float)));
        }
    }
}

TEST_P(StateRoundTrip, UnpreparedHandleSavesTheInitialStateAndLoadPreparesIt) {
    Model model;
    Handle a(model), b(model);
    std::vector<uint8_t> img = save(a);  // before any step: zeros and initial counters
    Trained ran(1);
    size_t ran_bytes = 0;
    ASSERT_EQ(FNGD_SUCCESS, fngd_state_size(ran.handle, &ran_bytes));
    EXPECT_EQ(ran_bytes, img.size());  // same layout prepared or not
    ASSERT_EQ(FNGD_SUCCESS, fngd_load_state(b, img.data(), img.size())) << fngd_get_last_error(b);
    EXPECT_EQ(img, save(b));
    int layer = -1;
    fngd_layer_desc_t extra = fngd_linear_desc(2, 2, 0);
    EXPECT_EQ(FNGD_ERROR_INVALID_STATE, fngd_add_layer(b, &extra, &layer));  // frozen by load
    // The initial state then trains exactly like a handle that never saw a checkpoint.
    Model m2;
    Handle c(m2);
    ASSERT_EQ(FNGD_SUCCESS, fngd_load_state(c, img.data(), img.size()));
    ASSERT_EQ(FNGD_SUCCESS, sm_run(a, &model.m, 0, 6));
    ASSERT_EQ(FNGD_SUCCESS, sm_run(c, &m2.m, 0, 6));
    EXPECT_TRUE(sm_same_params(&model.m, &m2.m));
}

// ---- exact resume ------------------------------------------------------------------------------

// The uninterrupted run's final parameters and state, then for every stopping point a (after
// each step and each end_epoch of 3 epochs: collect, reuse, collect again): save, restore into
// a fresh handle over copies of the parameters at that point, continue, compare bit for bit.
class StateResume : public fngd_test::BackendTestWith<bool> {};

TEST_P(StateResume, IsBitIdenticalFromEveryStoppingPoint) {
    const bool use_file = param();
    const int total = sm_actions(kEpochs);
    Model ref;
    Handle ref_h(ref);
    ASSERT_EQ(FNGD_SUCCESS, sm_run(ref_h, &ref.m, 0, total)) << fngd_get_last_error(ref_h);
    std::vector<uint8_t> ref_state = save(ref_h);
    fngd_stats_t ref_stats = stats(ref_h);
    ASSERT_EQ(kEpochs, ref_stats.epoch);
    ASSERT_GT(ref_stats.fallback_ids, 0);  // the reuse epoch met unseen ids

    std::string dir = temp_dir(), path = dir + "/ckpt.fngd";
    for (int stop = 1; stop < total; ++stop) {
        SCOPED_TRACE("stopped after action " + std::to_string(stop));
        Model first;
        Handle first_h(first);
        ASSERT_EQ(FNGD_SUCCESS, sm_run(first_h, &first.m, 0, stop));
        std::vector<uint8_t> img;
        if (use_file) {
            ASSERT_EQ(FNGD_SUCCESS, fngd_save_file(first_h, path.c_str())) << fngd_get_last_error(first_h);
        } else {
            img = save(first_h);
        }

        Model second(99);  // other initial values: everything must come from the copy + state
        sm_copy_params(&second.m, &first.m);
        Handle second_h(second);
        if (use_file) {
            ASSERT_EQ(FNGD_SUCCESS, fngd_load_file(second_h, path.c_str())) << fngd_get_last_error(second_h);
        } else {
            ASSERT_EQ(FNGD_SUCCESS, fngd_load_state(second_h, img.data(), img.size()))
                << fngd_get_last_error(second_h);
        }
        ASSERT_EQ(FNGD_SUCCESS, sm_run(second_h, &second.m, stop, total)) << fngd_get_last_error(second_h);

        EXPECT_TRUE(sm_same_params(&ref.m, &second.m));
        EXPECT_EQ(ref_state, save(second_h));
    }
    std::remove(path.c_str());
    rmdir(dir.c_str());
}

std::string medium_name(bool file) { return file ? "File" : "Buffer"; }
FNGD_INSTANTIATE_BACKENDS_WITH(StateResume, ::testing::Values(false, true), medium_name);

// ---- bad images: the documented status, the live state untouched --------------------------------

class StateRejects : public fngd_test::BackendTest {
  protected:
    std::unique_ptr<Trained> trained;  // made in SetUp, on the test's backend
    std::vector<uint8_t> before;
    std::vector<uint8_t> good;  // a valid image of another point of the same run
    void SetUp() override {
        fngd_test::BackendTest::SetUp();
        if (IsSkipped() || HasFatalFailure()) return;
        trained.reset(new Trained(7));  // epoch 1 (reuse), mid-epoch
        before = save(live().handle);
        Trained other(11);
        good = save(other.handle);
        ASSERT_NE(before, good);
    }
    Trained& live() { return *trained; }
    ::testing::AssertionResult rejects(const std::vector<uint8_t>& img, fngd_status_t want) {
        fngd_status_t s = fngd_load_state(live().handle, img.data(), img.size());
        if (s != want)
            return ::testing::AssertionFailure() << "status " << fngd_status_string(s) << " ("
                                                 << fngd_get_last_error(live().handle) << "), want "
                                                 << fngd_status_string(want);
        if (save(live().handle) != before)
            return ::testing::AssertionFailure() << "the live state changed";
        return ::testing::AssertionSuccess();
    }
};

TEST_P(StateRejects, AnotherFormatVersion) {
    for (uint32_t v : {0u, 2u, 0x01000000u}) {
        std::vector<uint8_t> img = good;
        fngd_store_u32(img.data() + FNGD_STATE_VERSION_OFFSET, v);
        reseal(img);
        EXPECT_TRUE(rejects(img, FNGD_ERROR_VERSION_MISMATCH)) << "version " << v;
        EXPECT_NE(std::string::npos, std::string(fngd_get_last_error(live().handle)).find("format version"));
    }
    std::vector<uint8_t> img = good;  // a byte-swapped writer
    fngd_store_u32(img.data() + 12, 0x04030201u);
    reseal(img);
    EXPECT_TRUE(rejects(img, FNGD_ERROR_VERSION_MISMATCH));
}

TEST_P(StateRejects, AnotherConfiguration) {
    using Edit = void (*)(fngd_config_t&);
    const std::vector<std::pair<const char*, Edit>> edits = {
        {"max_batch", [](fngd_config_t& c) { c.max_batch = SM_BATCH + 1; }},
        {"num_samples", [](fngd_config_t& c) { c.num_samples = SM_SAMPLES + 1; }},
        {"coef_mode", [](fngd_config_t& c) { c.coef_mode = FNGD_COEF_GLOBAL; }},
        {"damping_kind", [](fngd_config_t& c) { c.damping_kind = FNGD_DAMPING_ABSOLUTE; }},
        {"damping", [](fngd_config_t& c) { c.damping = 0.06; }},
        {"max_damping_retries", [](fngd_config_t& c) { c.max_damping_retries = 3; }},
        {"damping_growth", [](fngd_config_t& c) { c.damping_growth = 4.0; }},
        {"recompute_every", [](fngd_config_t& c) { c.recompute_every = 0; }},
        {"grad_convention", [](fngd_config_t& c) { c.grad_convention = FNGD_GRAD_PER_SAMPLE; }},
        {"rhs", [](fngd_config_t& c) { c.rhs = FNGD_RHS_CUSTOM; }},
        {"fallback", [](fngd_config_t& c) { c.fallback = FNGD_FALLBACK_UNIFORM; }},
        {"output", [](fngd_config_t& c) { c.output = FNGD_OUTPUT_WRITE_GRAD; }},
        {"momentum", [](fngd_config_t& c) { c.momentum = 0.5f; }},
        {"weight_decay", [](fngd_config_t& c) { c.weight_decay = 0.0f; }},
    };
    for (auto& e : edits) {
        SCOPED_TRACE(e.first);
        fngd_config_t cfg = sm_config();
        e.second(cfg);
        Model model;
        Handle other(model, &cfg);
        // The model passes no right-hand side and registers no gradient buffers.
        if (cfg.rhs == FNGD_RHS_ONES && cfg.output == FNGD_OUTPUT_APPLY_SGD) {
            ASSERT_EQ(FNGD_SUCCESS, sm_run(other, &model.m, 0, 2)) << fngd_get_last_error(other);
        }
        std::vector<uint8_t> other_before = save(other);
        // Their image into our handle, and ours into theirs: both refused, both untouched.
        EXPECT_TRUE(rejects(other_before, FNGD_ERROR_VERSION_MISMATCH));
        EXPECT_EQ(FNGD_ERROR_VERSION_MISMATCH, fngd_load_state(other, good.data(), good.size()));
        EXPECT_EQ(other_before, save(other));
    }
    // Settings that do not shape the state may differ: check_finite, workspace cap, and the
    // learning rate, which the state carries (schedules change it).
    fngd_config_t cfg = sm_config();
    cfg.check_finite = 0;
    cfg.learning_rate = 0.5f;
    Model model;
    Handle other(model, &cfg);
    EXPECT_EQ(FNGD_SUCCESS, fngd_load_state(other, good.data(), good.size())) << fngd_get_last_error(other);
    EXPECT_EQ(good, save(other));
}

TEST_P(StateRejects, AnotherLayerSet) {
    Model base;
    std::vector<std::vector<fngd_layer_desc_t>> sets;
    std::vector<fngd_layer_desc_t> d(base.m.desc, base.m.desc + SM_LAYERS);
    sets.push_back({d[0], d[1]});              // a layer fewer
    sets.push_back({d[0], d[1], d[2], d[2]});  // a layer more
    sets.push_back({d[0], d[2], d[1]});        // another order
    auto changed = [&](int l, void (*edit)(fngd_layer_desc_t&)) {
        std::vector<fngd_layer_desc_t> v = d;
        edit(v[(size_t)l]);
        sets.push_back(v);
    };
    changed(2, [](fngd_layer_desc_t& x) { x.out_features = 5; });
    changed(2, [](fngd_layer_desc_t& x) { x.has_bias = 0; });
    changed(0, [](fngd_layer_desc_t& x) { x.stride_h = 2; });
    changed(0, [](fngd_layer_desc_t& x) { x.gram_method = FNGD_GRAM_MATERIALIZE; });
    changed(0, [](fngd_layer_desc_t& x) { x.gram_method = FNGD_GRAM_POSITION; });
    changed(1, [](fngd_layer_desc_t& x) { x.channels_last = 1; });
    changed(2, [](fngd_layer_desc_t& x) { *(&x) = fngd_generic_desc(28); x.weight = nullptr; });
    fngd_gram_method_t live_method;
    ASSERT_EQ(FNGD_SUCCESS, fngd_get_layer_gram_method(live().handle, 0, &live_method));
    int checked = 0;
    for (size_t k = 0; k < sets.size(); ++k) {
        SCOPED_TRACE("layer set " + std::to_string(k));
        fngd_config_t cfg = sm_config();
        Handle other;
        ASSERT_EQ(FNGD_SUCCESS, fngd_create(&cfg, &other.h));
        for (auto& desc : sets[k]) ASSERT_EQ(FNGD_SUCCESS, fngd_add_layer(other, &desc, nullptr));
        fngd_gram_method_t m0;
        ASSERT_EQ(FNGD_SUCCESS, fngd_get_layer_gram_method(other, 0, &m0));
        if (sets[k].size() == SM_LAYERS && sets[k][0].gram_method != FNGD_GRAM_AUTO && m0 == live_method)
            continue;  // forcing the method the cost model picked anyway changes nothing
        std::vector<uint8_t> other_state = save(other);  // unprepared: initial state
        EXPECT_EQ(FNGD_ERROR_VERSION_MISMATCH, fngd_load_state(other, good.data(), good.size()))
            << fngd_get_last_error(other);
        EXPECT_EQ(other_state, save(other));
        EXPECT_TRUE(rejects(other_state, FNGD_ERROR_VERSION_MISMATCH));
        // The failed load did not freeze the layer set.
        fngd_layer_desc_t extra = fngd_linear_desc(2, 2, 0);
        EXPECT_EQ(FNGD_SUCCESS, fngd_add_layer(other, &extra, nullptr));
        ++checked;
    }
    EXPECT_GE(checked, (int)sets.size() - 1);
}

TEST_P(StateRejects, TruncatedAtEveryLengthOrPadded) {
    for (size_t n = 0; n < good.size(); ++n) {
        std::vector<uint8_t> img(good.begin(), good.begin() + (long)n);
        img.reserve(1);  // a valid pointer even for n = 0
        ASSERT_TRUE(rejects(img, FNGD_ERROR_CORRUPT_STATE)) << "length " << n;
    }
    std::vector<uint8_t> img = good;
    img.push_back(0);
    EXPECT_TRUE(rejects(img, FNGD_ERROR_CORRUPT_STATE));
}

TEST_P(StateRejects, EverySingleBitFlip) {
    for (size_t bit = 0; bit < good.size() * 8; ++bit) {
        std::vector<uint8_t> img = good;
        img[bit / 8] ^= (uint8_t)(1u << (bit % 8));
        ASSERT_TRUE(rejects(img, FNGD_ERROR_CORRUPT_STATE)) << "bit " << bit;
    }
}

// Images with a valid checksum but impossible contents (what a buggy or hostile writer makes).
TEST_P(StateRejects, ForgedImagesWithValidChecksums) {
    auto forged = [&](size_t at, uint32_t value) {
        std::vector<uint8_t> img = good;
        fngd_store_u32(img.data() + at, value);
        reseal(img);
        return img;
    };
    const size_t counters = kSectionsAt + FNGD_STATE_SECTION_HEADER_BYTES;
    const size_t seen = counters + FNGD_STATE_COUNTERS_BYTES + FNGD_STATE_SECTION_HEADER_BYTES +
                        SM_SAMPLES * SM_LAYERS * 4 + FNGD_STATE_SECTION_HEADER_BYTES;
    EXPECT_TRUE(rejects(forged(kConfigAt + 84, 4), FNGD_ERROR_CORRUPT_STATE));   // section count
    EXPECT_TRUE(rejects(forged(kSectionsAt, 9), FNGD_ERROR_CORRUPT_STATE));      // section id
    EXPECT_TRUE(rejects(forged(kSectionsAt + 8, 60), FNGD_ERROR_CORRUPT_STATE)); // section length
    EXPECT_TRUE(rejects(forged(counters, (uint32_t)-1), FNGD_ERROR_CORRUPT_STATE));  // epoch < 0
    uint32_t phase = fngd_load_u32(good.data() + counters + 4);
    EXPECT_TRUE(rejects(forged(counters + 4, 1 - phase), FNGD_ERROR_CORRUPT_STATE));  // vs epoch
    EXPECT_TRUE(rejects(forged(counters + 4, 7), FNGD_ERROR_CORRUPT_STATE));     // no such phase
    EXPECT_TRUE(rejects(forged(counters + 48, 0), FNGD_ERROR_CORRUPT_STATE));    // collected flag
    EXPECT_TRUE(rejects(forged(counters + 8 + 4, 0x80000000u), FNGD_ERROR_CORRUPT_STATE));  // steps < 0
    std::vector<uint8_t> img = good;
    img[seen + 3] = 2;  // a seen flag must be 0 or 1
    reseal(img);
    EXPECT_TRUE(rejects(img, FNGD_ERROR_CORRUPT_STATE));
    img = good;  // a learning rate that is not a learning rate
    float nan = NAN;
    uint32_t u;
    std::memcpy(&u, &nan, 4);
    fngd_store_u32(img.data() + kConfigAt + 68, u);
    reseal(img);
    EXPECT_TRUE(rejects(img, FNGD_ERROR_CORRUPT_STATE));
    EXPECT_TRUE(rejects(std::vector<uint8_t>(good.size(), 0), FNGD_ERROR_CORRUPT_STATE));  // no magic
}

FNGD_INSTANTIATE_BACKENDS(StateRejects);

// ---- files -------------------------------------------------------------------------------------

#ifndef FNGD_TEST_CUDA

TEST(StateFile, IoErrorsNameTheCause) {
    Trained t(2);
    std::string dir = temp_dir();
    EXPECT_EQ(FNGD_ERROR_IO, fngd_save_file(t.handle, (dir + "/missing/x.fngd").c_str()));
    EXPECT_NE(std::string::npos, std::string(fngd_get_last_error(t.handle)).find("No such file"));
    EXPECT_EQ(FNGD_ERROR_IO, fngd_load_file(t.handle, (dir + "/absent.fngd").c_str()));
    EXPECT_NE(std::string::npos, std::string(fngd_get_last_error(t.handle)).find("No such file"));
    EXPECT_EQ(FNGD_ERROR_IO, fngd_load_file(t.handle, dir.c_str()));  // a directory
    // Saving onto a directory fails at the rename and leaves no temporary file behind.
    std::string sub = dir + "/sub";
    ASSERT_EQ(0, mkdir(sub.c_str(), 0700));
    EXPECT_EQ(FNGD_ERROR_IO, fngd_save_file(t.handle, sub.c_str()));
    EXPECT_NE(0, access((sub + ".tmp." + std::to_string(getpid())).c_str(), F_OK));
    rmdir(sub.c_str());
    // An empty or foreign file is a corrupt state, not an I/O error.
    std::string junk = dir + "/junk";
    write_bytes(junk, {});
    EXPECT_EQ(FNGD_ERROR_CORRUPT_STATE, fngd_load_file(t.handle, junk.c_str()));
    write_bytes(junk, std::vector<uint8_t>(5000, 0x5A));
    EXPECT_EQ(FNGD_ERROR_CORRUPT_STATE, fngd_load_file(t.handle, junk.c_str()));
    std::remove(junk.c_str());
    rmdir(dir.c_str());
}

TEST(StateFile, FileHoldsExactlyTheBufferImageAndNoTemporaryRemains) {
    Trained t(6);
    std::string dir = temp_dir(), path = dir + "/a.fngd";
    ASSERT_EQ(FNGD_SUCCESS, fngd_save_file(t.handle, path.c_str())) << fngd_get_last_error(t.handle);
    EXPECT_EQ(save(t.handle), read_bytes(path));
    EXPECT_NE(0, access((path + ".tmp." + std::to_string(getpid())).c_str(), F_OK));
    // Relative paths (no directory part) work too.
    char cwd[4096];
    ASSERT_NE(nullptr, getcwd(cwd, sizeof cwd));
    ASSERT_EQ(0, chdir(dir.c_str()));
    EXPECT_EQ(FNGD_SUCCESS, fngd_save_file(t.handle, "rel.fngd")) << fngd_get_last_error(t.handle);
    EXPECT_EQ(FNGD_SUCCESS, fngd_load_file(t.handle, "rel.fngd")) << fngd_get_last_error(t.handle);
    std::remove("rel.fngd");
    ASSERT_EQ(0, chdir(cwd));
    std::remove(path.c_str());
    rmdir(dir.c_str());
}

// A writer that died mid-save leaves its partial temporary file; the checkpoint at the path is
// still the previous complete one.
TEST(StateFile, LeftoverPartialTemporaryDoesNotAffectThePreviousCheckpoint) {
    Trained t(6);
    std::string dir = temp_dir(), path = dir + "/c.fngd";
    ASSERT_EQ(FNGD_SUCCESS, fngd_save_file(t.handle, path.c_str()));
    std::vector<uint8_t> saved = read_bytes(path);
    ASSERT_EQ(FNGD_SUCCESS, sm_run(t.handle, &t.model.m, 6, 8));
    std::vector<uint8_t> newer = save(t.handle);
    std::string stale = path + ".tmp.424242";
    write_bytes(stale, std::vector<uint8_t>(newer.begin(), newer.begin() + (long)newer.size() / 3));
    Model m2;
    Handle h2(m2);
    ASSERT_EQ(FNGD_SUCCESS, fngd_load_file(h2, path.c_str())) << fngd_get_last_error(h2);
    EXPECT_EQ(saved, save(h2));
    EXPECT_EQ(FNGD_ERROR_CORRUPT_STATE, fngd_load_file(h2, stale.c_str()));
    EXPECT_EQ(saved, save(h2));
    std::remove(stale.c_str());
    std::remove(path.c_str());
    rmdir(dir.c_str());
}

namespace {
void kill_self_mid_write(const char*, size_t, size_t) { raise(SIGKILL); }
}  // namespace

// A child process is killed (SIGKILL) half-way through fngd_save_file, via the write hook.
TEST(StateFile, WriterKilledMidSaveLeavesThePreviousCheckpointLoadable) {
    Trained t(6);
    std::string dir = temp_dir(), path = dir + "/k.fngd";
    ASSERT_EQ(FNGD_SUCCESS, fngd_save_file(t.handle, path.c_str()));
    std::vector<uint8_t> previous = read_bytes(path);
    ASSERT_EQ(FNGD_SUCCESS, sm_run(t.handle, &t.model.m, 6, 9));
    std::vector<uint8_t> newer = save(t.handle);
    ASSERT_NE(previous, newer);

    fflush(nullptr);
    pid_t child = fork();
    ASSERT_GE(child, 0);
    if (child == 0) {
        fngd_test_set_state_write_hook(kill_self_mid_write);
        fngd_save_file(t.handle, path.c_str());
        _exit(3);  // not reached when the hook fires
    }
    int status = 0;
    ASSERT_EQ(child, waitpid(child, &status, 0));
    ASSERT_TRUE(WIFSIGNALED(status) && WTERMSIG(status) == SIGKILL) << "child status " << status;
    std::string tmp = path + ".tmp." + std::to_string(child);
    std::vector<uint8_t> partial = read_bytes(tmp);
    EXPECT_EQ(newer.size() / 2, partial.size());  // the hook fired half-way
    EXPECT_EQ(previous, read_bytes(path));

    Model m2;
    Handle h2(m2);
    ASSERT_EQ(FNGD_SUCCESS, fngd_load_file(h2, path.c_str())) << fngd_get_last_error(h2);
    EXPECT_EQ(previous, save(h2));
    // A later save by this process replaces the checkpoint whole.
    ASSERT_EQ(FNGD_SUCCESS, fngd_save_file(t.handle, path.c_str()));
    EXPECT_EQ(newer, read_bytes(path));
    std::remove(tmp.c_str());
    std::remove(path.c_str());
    rmdir(dir.c_str());
}
#endif  // !FNGD_TEST_CUDA
