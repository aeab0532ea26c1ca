// Coefficient import (fngd_set_coefficients) and export of every set (fngd_get_coefficients
// with FNGD_ALL_SETS): round trips through get, the data-parallel replication (two "ranks"
// that import each other's coefficients behave bit for bit like one handle that collected
// every batch: stored values, stats, fallback means, reuse directions), single-set imports,
// every refused input with nothing changed, checkpoints after an import, and imports larger
// than one staging chunk. Runs on each backend of the binary (backend_param.h).
#include "test_util.h"

using namespace fngd_test;

namespace {

constexpr int kN = 6;           // batch size
constexpr int64_t kSamples = 40;

void build_model(Model& m) {
    fngd_layer_desc_t conv = fngd_conv2d_desc(2, 3, 5, 5, 3, 3, 1);
    conv.pad_h = conv.pad_w = 1;
    m.add(conv);
    m.add(fngd_norm_affine_desc(3, 4, 1));
    m.add(fngd_linear_desc(7, 4, 1));
}

fngd_config_t config(fngd_coef_mode_t mode, int max_batch = kN, int64_t samples = kSamples) {
    fngd_config_t c = base_config(max_batch, samples);
    c.coef_mode = mode;
    return c;
}

int nsets_of(fngd_handle_t h) {
    int n = -1;
    EXPECT_EQ(FNGD_SUCCESS, fngd_get_num_coefficient_sets(h, &n)) << fngd_get_last_error(h);
    return n;
}

std::vector<int64_t> all_ids(int64_t n) {
    std::vector<int64_t> v((size_t)n);
    std::iota(v.begin(), v.end(), 0);
    return v;
}

// Every set of every id (NaN where none is stored), id-major.
std::vector<float> table(fngd_handle_t h, int64_t samples = kSamples) {
    std::vector<int64_t> ids = all_ids(samples);
    std::vector<float> t((size_t)(samples * nsets_of(h)), -1.0f);
    EXPECT_EQ(FNGD_SUCCESS,
              fngd_get_coefficients(h, FNGD_ALL_SETS, samples, ids.data(), t.data()))
        << fngd_get_last_error(h);
    return t;
}

// Bitwise equality with NaN == NaN.
::testing::AssertionResult same_bits(const std::vector<float>& a, const std::vector<float>& b) {
    if (a.size() != b.size()) return ::testing::AssertionFailure() << "sizes differ";
    for (size_t k = 0; k < a.size(); ++k) {
        const bool na = std::isnan(a[k]), nb = std::isnan(b[k]);
        if (na != nb || (!na && std::memcmp(&a[k], &b[k], sizeof(float)) != 0))
            return ::testing::AssertionFailure() << "entry " << k << ": " << a[k] << " vs " << b[k];
    }
    return ::testing::AssertionSuccess();
}

void expect_same_stats(fngd_handle_t a, fngd_handle_t b) {
    fngd_stats_t x = get_stats(a), y = get_stats(b);
    EXPECT_EQ(x.coefs_stored, y.coefs_stored);
    EXPECT_EQ(x.fallback_ids, y.fallback_ids);
    EXPECT_DOUBLE_EQ(x.coef_min, y.coef_min);
    EXPECT_DOUBLE_EQ(x.coef_max, y.coef_max);
    EXPECT_NEAR(x.coef_mean, y.coef_mean, 1e-12 * std::fabs(x.coef_mean) + 1e-30);
}

// The batches of one epoch: `steps` batches of kN distinct ids, data from `seed`.
struct Epoch {
    std::vector<std::vector<int64_t>> ids;
    std::vector<uint64_t> seeds;
};

Epoch make_epoch(int steps, uint64_t seed) {
    Rng rng(seed);
    std::vector<int64_t> perm = rng.distinct_ids((int)kSamples, kSamples);
    Epoch e;
    for (int s = 0; s < steps; ++s) {
        e.ids.emplace_back(perm.begin() + s * kN, perm.begin() + (s + 1) * kN);
        e.seeds.push_back(seed * 1000 + (uint64_t)s);
    }
    return e;
}

void run_step(fngd_handle_t h, Model& m, const std::vector<int64_t>& ids, uint64_t seed) {
    Rng rng(seed);
    m.randomize(rng, kN);
    ASSERT_TRUE(step_ok(h, m, kN, ids.data()));
}

// Export every stored (id, all sets) pair of handle `from` for the ids it saw.
void copy_pairs(fngd_handle_t from, fngd_handle_t to, const std::vector<int64_t>& ids) {
    const int ns = nsets_of(from);
    std::vector<float> c(ids.size() * (size_t)ns);
    ASSERT_EQ(FNGD_SUCCESS, fngd_get_coefficients(from, FNGD_ALL_SETS, (int64_t)ids.size(),
                                                  ids.data(), c.data()))
        << fngd_get_last_error(from);
    ASSERT_EQ(FNGD_SUCCESS,
              fngd_set_coefficients(to, FNGD_ALL_SETS, (int64_t)ids.size(), ids.data(), c.data()))
        << fngd_get_last_error(to);
}

class CoefIo : public BackendTestWith<fngd_coef_mode_t> {};

TEST_P(CoefIo, NumberOfSets) {
    Model m;
    build_model(m);
    Handle h;
    ASSERT_TRUE(make_handle(config(param()), m, h));
    EXPECT_EQ(param() == FNGD_COEF_GLOBAL ? 1 : 3, nsets_of(h));
    EXPECT_EQ(FNGD_ERROR_INVALID_ARGUMENT, fngd_get_num_coefficient_sets(h, nullptr));
    int n = 0;
    EXPECT_EQ(FNGD_ERROR_INVALID_ARGUMENT, fngd_get_num_coefficient_sets(nullptr, &n));
}

// get(all sets) -> set(all sets) on a second handle reproduces the table bit for bit, and
// importing the same export again is a no-op (NaN rows of never-stored ids are skipped).
TEST_P(CoefIo, RoundTripThroughGet) {
    const fngd_config_t cfg = config(param());
    Model m;
    build_model(m);
    Handle a, b;
    ASSERT_TRUE(make_handle(cfg, m, a));
    ASSERT_TRUE(make_handle(cfg, m, b));
    Epoch e = make_epoch(3, 7);  // 18 of 40 ids stored
    for (int s = 0; s < 3; ++s) run_step(a, m, e.ids[(size_t)s], e.seeds[(size_t)s]);
    ASSERT_EQ(FNGD_SUCCESS, fngd_prepare(b)) << fngd_get_last_error(b);
    std::vector<int64_t> ids = all_ids(kSamples);
    std::vector<float> exported = table(a);
    ASSERT_EQ(FNGD_SUCCESS, fngd_set_coefficients(b, FNGD_ALL_SETS, kSamples, ids.data(),
                                                  exported.data()))
        << fngd_get_last_error(b);
    EXPECT_TRUE(same_bits(table(b), exported));
    EXPECT_EQ(get_stats(b).coefs_stored, 18);
    expect_same_stats(a, b);
    // Per-set export agrees with the all-sets layout.
    for (int s = 0; s < nsets_of(a); ++s) {
        std::vector<float> one = get_coefs(a, s, ids), want;
        for (int64_t i = 0; i < kSamples; ++i) want.push_back(exported[(size_t)(i * nsets_of(a) + s)]);
        EXPECT_TRUE(same_bits(one, want)) << "set " << s;
    }
    // Importing it again changes nothing.
    ASSERT_EQ(FNGD_SUCCESS, fngd_set_coefficients(a, FNGD_ALL_SETS, kSamples, ids.data(),
                                                  exported.data()));
    EXPECT_TRUE(same_bits(table(a), exported));
    // n = 0 is a no-op even with NULL pointers.
    EXPECT_EQ(FNGD_SUCCESS, fngd_set_coefficients(a, FNGD_ALL_SETS, 0, nullptr, nullptr));
}

// Data-parallel replication: two handles ("ranks") each collect half of every step's data;
// after each imports the other's pairs, both hold exactly the table of a third handle that
// took every one of those batches, and at the end of the epoch their fallback means, stats
// and reuse directions (with unseen ids, so the fallback is used) are bit-identical to it.
TEST_P(CoefIo, ReplicatedRanksMatchOneHandleThatSawEverything) {
    const fngd_config_t cfg = config(param());
    Model m0, m1, m2;
    build_model(m0);
    build_model(m1);
    build_model(m2);
    Handle all, r0, r1;
    ASSERT_TRUE(make_handle(cfg, m0, all));
    ASSERT_TRUE(make_handle(cfg, m1, r0));
    ASSERT_TRUE(make_handle(cfg, m2, r1));
    Epoch e = make_epoch(6, 11);  // 36 of 40 ids: 4 stay unseen
    std::vector<int64_t> seen0, seen1;
    for (int s = 0; s < 6; ++s) {
        const auto& ids = e.ids[(size_t)s];
        run_step(all, m0, ids, e.seeds[(size_t)s]);
        Handle& rank = s % 2 == 0 ? r0 : r1;
        run_step(rank, s % 2 == 0 ? m1 : m2, ids, e.seeds[(size_t)s]);
        auto& seen = s % 2 == 0 ? seen0 : seen1;
        seen.insert(seen.end(), ids.begin(), ids.end());
    }
    // r0 imports before the end of the collect epoch, r1 after it (in the reuse phase, where
    // only the import itself refreshes the fallback means).
    ASSERT_EQ(FNGD_SUCCESS, fngd_end_epoch(all, nullptr));
    ASSERT_EQ(FNGD_SUCCESS, fngd_end_epoch(r1, nullptr));
    copy_pairs(r0, r1, seen0);
    copy_pairs(r1, r0, seen1);
    ASSERT_EQ(FNGD_SUCCESS, fngd_end_epoch(r0, nullptr));
    const std::vector<float> want = table(all);
    EXPECT_TRUE(same_bits(table(r0), want));
    EXPECT_TRUE(same_bits(table(r1), want));
    expect_same_stats(all, r0);
    expect_same_stats(all, r1);
    // A reuse step whose batch has two unseen ids: same direction everywhere, bit for bit.
    std::vector<int64_t> unseen;
    for (int64_t id = 0; id < kSamples; ++id)
        if (std::isnan(want[(size_t)(id * nsets_of(all))])) unseen.push_back(id);
    ASSERT_EQ(unseen.size(), 4u);
    std::vector<int64_t> ids = {unseen[0], e.ids[0][0], e.ids[1][1], unseen[1], e.ids[5][2],
                                e.ids[2][3]};
    run_step(all, m0, ids, 99);
    run_step(r0, m1, ids, 99);
    run_step(r1, m2, ids, 99);
    for (int l = 0; l < m0.size(); ++l) {
        EXPECT_EQ(m0[l].written_direction(), m1[l].written_direction()) << "layer " << l;
        EXPECT_EQ(m0[l].written_direction(), m2[l].written_direction()) << "layer " << l;
    }
    EXPECT_EQ(get_stats(all).fallback_ids, 2);
    expect_same_stats(all, r0);
    expect_same_stats(all, r1);
}

// A checkpoint taken after an import restores the imported table, fallback means included.
TEST_P(CoefIo, CheckpointAfterImport) {
    const fngd_config_t cfg = config(param());
    Model m, m2;
    build_model(m);
    build_model(m2);
    Handle a, b;
    ASSERT_TRUE(make_handle(cfg, m, a));
    ASSERT_TRUE(make_handle(cfg, m2, b));
    Epoch e = make_epoch(2, 5);
    run_step(a, m, e.ids[0], e.seeds[0]);
    // Import a few foreign pairs into a (ids of e.ids[1], values made up).
    const int ns = nsets_of(a);
    std::vector<float> vals(e.ids[1].size() * (size_t)ns);
    for (size_t k = 0; k < vals.size(); ++k) vals[k] = 0.01f * (float)(k + 1);
    ASSERT_EQ(FNGD_SUCCESS, fngd_set_coefficients(a, FNGD_ALL_SETS, (int64_t)e.ids[1].size(),
                                                  e.ids[1].data(), vals.data()))
        << fngd_get_last_error(a);
    ASSERT_EQ(FNGD_SUCCESS, fngd_end_epoch(a, nullptr));
    size_t bytes = 0;
    ASSERT_EQ(FNGD_SUCCESS, fngd_state_size(a, &bytes));
    std::vector<uint8_t> img(bytes);
    ASSERT_EQ(FNGD_SUCCESS, fngd_save_state(a, img.data(), img.size(), nullptr));
    ASSERT_EQ(FNGD_SUCCESS, fngd_load_state(b, img.data(), img.size())) << fngd_get_last_error(b);
    EXPECT_TRUE(same_bits(table(b), table(a)));
    expect_same_stats(a, b);
    EXPECT_EQ(get_stats(b).coefs_stored, 2 * kN);
    // Reuse steps with an unseen id agree bit for bit (same fallback means).
    std::vector<int64_t> unseen;
    const std::vector<float> t = table(a);
    for (int64_t id = 0; id < kSamples; ++id)
        if (std::isnan(t[(size_t)(id * ns)])) unseen.push_back(id);
    std::vector<int64_t> ids = {e.ids[1][0], e.ids[0][1], unseen[0], e.ids[1][3], e.ids[0][4],
                                unseen[1]};
    run_step(a, m, ids, 3);
    run_step(b, m2, ids, 3);
    for (int l = 0; l < m.size(); ++l)
        EXPECT_EQ(m[l].written_direction(), m2[l].written_direction()) << "layer " << l;
}

// A single-set import overwrites that set of stored ids only; with several sets a new id
// needs every set; NaN skips the id.
TEST_P(CoefIo, SingleSetImport) {
    const fngd_config_t cfg = config(param());
    Model m;
    build_model(m);
    Handle h;
    ASSERT_TRUE(make_handle(cfg, m, h));
    Epoch e = make_epoch(1, 3);
    run_step(h, m, e.ids[0], e.seeds[0]);
    const int ns = nsets_of(h);
    const int set = ns - 1;
    std::vector<float> before = table(h);
    std::vector<int64_t> ids = {e.ids[0][2], e.ids[0][0], e.ids[0][5]};
    std::vector<float> vals = {0.5f, NAN, -0.25f};
    ASSERT_EQ(FNGD_SUCCESS, fngd_set_coefficients(h, set, 3, ids.data(), vals.data()))
        << fngd_get_last_error(h);
    std::vector<float> want = before;
    want[(size_t)(ids[0] * ns + set)] = 0.5f;
    want[(size_t)(ids[2] * ns + set)] = -0.25f;
    EXPECT_TRUE(same_bits(table(h), want));
    // A new id (not stored): allowed in global mode (one set), refused with several sets.
    int64_t fresh = -1;
    for (int64_t id = 0; id < kSamples && fresh < 0; ++id)
        if (std::find(e.ids[0].begin(), e.ids[0].end(), id) == e.ids[0].end()) fresh = id;
    float v = 0.125f;
    fngd_status_t s = fngd_set_coefficients(h, 0, 1, &fresh, &v);
    if (ns == 1) {
        EXPECT_EQ(FNGD_SUCCESS, s) << fngd_get_last_error(h);
        want[(size_t)fresh] = 0.125f;
        EXPECT_EQ(get_stats(h).coefs_stored, kN + 1);
    } else {
        EXPECT_EQ(FNGD_ERROR_INVALID_ARGUMENT, s);
        EXPECT_NE(std::string(fngd_get_last_error(h)).find("FNGD_ALL_SETS"), std::string::npos);
    }
    EXPECT_TRUE(same_bits(table(h), want));
}

// Every refused import leaves table, stats and fallback means as they were.
TEST_P(CoefIo, BadInputChangesNothing) {
    const fngd_config_t cfg = config(param());
    Model m;
    build_model(m);
    Handle h;
    ASSERT_TRUE(make_handle(cfg, m, h));
    std::vector<int64_t> one = {1};
    std::vector<float> vals(3 * 4, 0.1f);
    EXPECT_EQ(FNGD_ERROR_INVALID_STATE,
              fngd_set_coefficients(h, FNGD_ALL_SETS, 1, one.data(), vals.data()));
    EXPECT_EQ(FNGD_ERROR_INVALID_ARGUMENT,
              fngd_set_coefficients(nullptr, FNGD_ALL_SETS, 1, one.data(), vals.data()));
    Epoch e = make_epoch(1, 4);
    run_step(h, m, e.ids[0], e.seeds[0]);
    ASSERT_EQ(FNGD_SUCCESS, fngd_end_epoch(h, nullptr));
    const int ns = nsets_of(h);
    const std::vector<float> before = table(h);
    const fngd_stats_t st = get_stats(h);
    auto check = [&](fngd_status_t want, int set, std::vector<int64_t> ids, std::vector<float> c,
                     const char* what) {
        EXPECT_EQ(want, fngd_set_coefficients(h, set, (int64_t)ids.size(), ids.data(), c.data()))
            << what;
        EXPECT_STRNE("", fngd_get_last_error(h)) << what;
        EXPECT_TRUE(same_bits(table(h), before)) << what;
    };
    const std::vector<float> row(ns, 0.2f);
    auto rows = [&](size_t n) {
        std::vector<float> v;
        for (size_t i = 0; i < n; ++i) v.insert(v.end(), row.begin(), row.end());
        return v;
    };
    check(FNGD_ERROR_INVALID_ARGUMENT, ns, {1}, rows(1), "set == nsets");
    check(FNGD_ERROR_INVALID_ARGUMENT, -2, {1}, rows(1), "set -2");
    check(FNGD_ERROR_INVALID_ARGUMENT, FNGD_ALL_SETS, {1, kSamples}, rows(2), "id == num_samples");
    check(FNGD_ERROR_INVALID_ARGUMENT, FNGD_ALL_SETS, {-1}, rows(1), "negative id");
    check(FNGD_ERROR_INVALID_ARGUMENT, FNGD_ALL_SETS, {3, 5, 3}, rows(3), "duplicate id");
    {
        std::vector<float> v = rows(2);
        v[(size_t)ns + (size_t)ns - 1] = INFINITY;
        check(FNGD_ERROR_NONFINITE, FNGD_ALL_SETS, {2, 4}, v, "Inf");
        v[(size_t)ns + (size_t)ns - 1] = -INFINITY;
        check(FNGD_ERROR_NONFINITE, FNGD_ALL_SETS, {2, 4}, v, "-Inf");
    }
    if (ns > 1) {
        std::vector<float> v = rows(2);
        v[0] = NAN;
        check(FNGD_ERROR_INVALID_ARGUMENT, FNGD_ALL_SETS, {2, 4}, v, "row mixes NaN");
    }
    {
        std::vector<float> v = {0.3f, INFINITY};
        check(FNGD_ERROR_NONFINITE, 0, {e.ids[0][0], e.ids[0][1]}, v, "single-set Inf");
    }
    // The duplicate is refused even when one of its values is NaN (skipped).
    {
        std::vector<float> v = rows(2);
        for (int k = 0; k < ns; ++k) v[(size_t)k] = NAN;
        check(FNGD_ERROR_INVALID_ARGUMENT, FNGD_ALL_SETS, {6, 6}, v, "duplicate with NaN");
    }
    EXPECT_EQ(FNGD_ERROR_INVALID_ARGUMENT,
              fngd_set_coefficients(h, FNGD_ALL_SETS, -1, one.data(), vals.data()));
    EXPECT_EQ(FNGD_ERROR_INVALID_ARGUMENT,
              fngd_set_coefficients(h, FNGD_ALL_SETS, 1, nullptr, vals.data()));
    EXPECT_EQ(FNGD_ERROR_INVALID_ARGUMENT,
              fngd_set_coefficients(h, FNGD_ALL_SETS, 1, one.data(), nullptr));
    EXPECT_TRUE(same_bits(table(h), before));
    const fngd_stats_t after = get_stats(h);
    EXPECT_EQ(st.coefs_stored, after.coefs_stored);
    EXPECT_EQ(st.epoch, after.epoch);
    EXPECT_EQ(st.steps_total, after.steps_total);
    EXPECT_EQ(st.rejected_steps, after.rejected_steps);
    // The all-sets export refuses set out of range the same way.
    std::vector<float> out((size_t)ns);
    EXPECT_EQ(FNGD_ERROR_INVALID_ARGUMENT, fngd_get_coefficients(h, -2, 1, one.data(), out.data()));
}

// Imports larger than a staging chunk (max_batch ids per scatter) and id orders that are not
// sorted round-trip exactly; imported ids are no fallback ids in a reuse step.
TEST_P(CoefIo, LargeImportInChunks) {
    const int64_t samples = 1000;
    const fngd_config_t cfg = config(param(), kN, samples);
    Model m;
    build_model(m);
    Handle h;
    ASSERT_TRUE(make_handle(cfg, m, h));
    ASSERT_EQ(FNGD_SUCCESS, fngd_prepare(h));
    const int ns = nsets_of(h);
    Rng rng(21);
    std::vector<int64_t> ids = rng.distinct_ids(997, samples);  // 3 ids stay unstored
    std::vector<float> vals(ids.size() * (size_t)ns);
    for (float& v : vals) v = (float)rng.normal(0.0, 0.01);
    ASSERT_EQ(FNGD_SUCCESS, fngd_set_coefficients(h, FNGD_ALL_SETS, (int64_t)ids.size(),
                                                  ids.data(), vals.data()))
        << fngd_get_last_error(h);
    std::vector<float> back(vals.size());
    ASSERT_EQ(FNGD_SUCCESS, fngd_get_coefficients(h, FNGD_ALL_SETS, (int64_t)ids.size(),
                                                  ids.data(), back.data()));
    EXPECT_TRUE(same_bits(back, vals));
    EXPECT_EQ(get_stats(h).coefs_stored, 997);
    // Overwrite one set of 500 of them (stored: allowed with any number of sets).
    std::vector<int64_t> half(ids.begin(), ids.begin() + 500);
    std::vector<float> hv(500);
    for (float& v : hv) v = (float)rng.normal(0.0, 0.01);
    ASSERT_EQ(FNGD_SUCCESS, fngd_set_coefficients(h, 0, 500, half.data(), hv.data()))
        << fngd_get_last_error(h);
    for (size_t i = 0; i < 500; ++i) vals[i * (size_t)ns] = hv[i];
    ASSERT_EQ(FNGD_SUCCESS, fngd_get_coefficients(h, FNGD_ALL_SETS, (int64_t)ids.size(),
                                                  ids.data(), back.data()));
    EXPECT_TRUE(same_bits(back, vals));
    // Collect one batch (epoch 0), end it; a reuse step on imported ids uses no fallback.
    std::vector<int64_t> b(ids.begin(), ids.begin() + kN);
    Rng data(5);
    m.randomize(data, kN);
    ASSERT_TRUE(step_ok(h, m, kN, b.data()));
    ASSERT_EQ(FNGD_SUCCESS, fngd_end_epoch(h, nullptr));
    std::vector<int64_t> c(ids.begin() + 100, ids.begin() + 100 + kN);
    m.randomize(data, kN);
    ASSERT_TRUE(step_ok(h, m, kN, c.data()));
    EXPECT_EQ(get_stats(h).fallback_ids, 0);
}

FNGD_INSTANTIATE_BACKENDS_WITH(CoefIo, ::testing::Values(FNGD_COEF_PER_LAYER, FNGD_COEF_GLOBAL),
                               [](fngd_coef_mode_t m) {
                                   return std::string(m == FNGD_COEF_GLOBAL ? "Global" : "PerLayer");
                               });

}  // namespace
