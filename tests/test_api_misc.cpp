// The small parts of the public API: version, status strings, configuration defaults, layer
// descriptor helpers, lifecycle corner cases, layer queries and caller-provided workspace.
#include <cstdlib>
#include <set>

#include "test_util.h"

using namespace fngd_test;

namespace {

// The header's version (generated from CMake's project(VERSION)) is the library's, and the
// string spells the same three numbers.
TEST(ApiMisc, Version) {
    int major = -1, minor = -1, patch = -1;
    ASSERT_EQ(FNGD_SUCCESS, fngd_get_version(&major, &minor, &patch));
    EXPECT_EQ(FNGD_VERSION_MAJOR, major);
    EXPECT_EQ(FNGD_VERSION_MINOR, minor);
    EXPECT_EQ(FNGD_VERSION_PATCH, patch);
    EXPECT_EQ(std::to_string(major) + "." + std::to_string(minor) + "." + std::to_string(patch),
              std::string(FNGD_VERSION_STRING));
    EXPECT_EQ(FNGD_SUCCESS, fngd_get_version(nullptr, nullptr, nullptr));
    EXPECT_EQ(FNGD_SUCCESS, fngd_get_version(nullptr, &minor, nullptr));
}

TEST(ApiMisc, StatusStringForEveryCode) {
    std::set<std::string> seen;
    for (int s = FNGD_SUCCESS; s <= FNGD_ERROR_INTERNAL; ++s) {
        const char* str = fngd_status_string((fngd_status_t)s);
        ASSERT_NE(nullptr, str) << s;
        EXPECT_STRNE("", str) << s;
        EXPECT_TRUE(seen.insert(str).second) << "status " << s << " shares its string: " << str;
    }
    for (int s : {-1, FNGD_ERROR_INTERNAL + 1, 1000}) {  // never NULL, even for unknown codes
        const char* str = fngd_status_string((fngd_status_t)s);
        ASSERT_NE(nullptr, str);
        EXPECT_STRNE("", str);
    }
}

TEST(ApiMisc, ConfigInitEqualsMacro) {
    fngd_config_t a;
    std::memset(&a, 0xAB, sizeof a);
    ASSERT_EQ(FNGD_SUCCESS, fngd_config_init(&a));
    fngd_config_t b = FNGD_CONFIG_INIT;
    EXPECT_EQ(sizeof(fngd_config_t), a.struct_size);
    EXPECT_EQ(b.struct_size, a.struct_size);
    EXPECT_EQ(b.backend, a.backend);
    EXPECT_EQ(b.device, a.device);
    EXPECT_EQ(b.max_batch, a.max_batch);
    EXPECT_EQ(b.num_samples, a.num_samples);
    EXPECT_EQ(b.coef_mode, a.coef_mode);
    EXPECT_EQ(b.damping_kind, a.damping_kind);
    EXPECT_EQ(b.damping, a.damping);
    EXPECT_EQ(b.max_damping_retries, a.max_damping_retries);
    EXPECT_EQ(b.damping_growth, a.damping_growth);
    EXPECT_EQ(b.recompute_every, a.recompute_every);
    EXPECT_EQ(b.grad_convention, a.grad_convention);
    EXPECT_EQ(b.rhs, a.rhs);
    EXPECT_EQ(b.fallback, a.fallback);
    EXPECT_EQ(b.output, a.output);
    EXPECT_EQ(b.learning_rate, a.learning_rate);
    EXPECT_EQ(b.momentum, a.momentum);
    EXPECT_EQ(b.weight_decay, a.weight_decay);
    EXPECT_EQ(b.check_finite, a.check_finite);
    EXPECT_EQ(b.max_workspace_bytes, a.max_workspace_bytes);
    EXPECT_EQ(b.coef_filter, a.coef_filter);
    EXPECT_EQ(b.exact_small_layers, a.exact_small_layers);
    EXPECT_EQ(b.step_control, a.step_control);
    EXPECT_EQ(b.kl_clip, a.kl_clip);
    EXPECT_EQ(b.allow_tf32, a.allow_tf32);
}

// Every field of FNGD_CONFIG_INIT holds its documented default (fngd.h), checked at compile
// time: a value written against the wrong field-name comment, or a field added without its
// value (aggregate initialisation would leave it 0), fails to compile. The training-quality
// defaults (coef_filter .. kl_clip) are the ones bench/time_to_accuracy.py chose.
constexpr fngd_config_t kMacro = FNGD_CONFIG_INIT;
static_assert(kMacro.struct_size == sizeof(fngd_config_t), "struct_size");
static_assert(kMacro.backend == FNGD_BACKEND_CPU, "backend");
static_assert(kMacro.device == 0, "device");
static_assert(kMacro.max_batch == 0 && kMacro.num_samples == 0, "max_batch, num_samples: required");
static_assert(kMacro.coef_mode == FNGD_COEF_PER_LAYER, "coef_mode");
static_assert(kMacro.damping_kind == FNGD_DAMPING_ABSOLUTE, "damping_kind");
static_assert(kMacro.damping == 0.1, "damping");
static_assert(kMacro.max_damping_retries == 8, "max_damping_retries");
static_assert(kMacro.damping_growth == 10.0, "damping_growth");
static_assert(kMacro.recompute_every == 0, "recompute_every");
static_assert(kMacro.grad_convention == FNGD_GRAD_MEAN_LOSS, "grad_convention");
static_assert(kMacro.rhs == FNGD_RHS_ONES, "rhs");
static_assert(kMacro.fallback == FNGD_FALLBACK_STORED_MEAN, "fallback");
static_assert(kMacro.output == FNGD_OUTPUT_WRITE_GRAD, "output");
static_assert(kMacro.learning_rate == 0.1f, "learning_rate");
static_assert(kMacro.momentum == 0.9f, "momentum");
static_assert(kMacro.weight_decay == 0.0f, "weight_decay");
static_assert(kMacro.check_finite == 1, "check_finite");
static_assert(kMacro.max_workspace_bytes == (size_t)1 << 30, "max_workspace_bytes");
static_assert(kMacro.coef_filter == FNGD_FILTER_RANGE, "coef_filter");
static_assert(kMacro.exact_small_layers == 1, "exact_small_layers");
static_assert(kMacro.step_control == FNGD_STEP_KL_CLIP, "step_control");
static_assert(kMacro.kl_clip == 1e-3, "kl_clip");
static_assert(kMacro.allow_tf32 == 0, "allow_tf32: FP32 unless the caller allows TF32");
// The last field: a field added after it needs its default in the macro and a line above.
// (Only tail padding may follow it; an int added into that padding would not show here.)
static_assert(sizeof(fngd_config_t) - (offsetof(fngd_config_t, allow_tf32) + sizeof(int)) <
                  alignof(fngd_config_t),
              "fngd_config_t has a field after allow_tf32: give it a default in FNGD_CONFIG_INIT "
              "and a static_assert here");

void expect_common_desc_defaults(const fngd_layer_desc_t& d) {
    EXPECT_EQ(sizeof(fngd_layer_desc_t), d.struct_size);
    EXPECT_EQ(FNGD_GRAM_AUTO, d.gram_method);
    EXPECT_EQ(nullptr, d.weight);
    EXPECT_EQ(nullptr, d.bias);
    EXPECT_EQ(nullptr, d.grad_weight);
    EXPECT_EQ(nullptr, d.grad_bias);
}

TEST(ApiMisc, DescriptorHelperDefaults) {
    fngd_layer_desc_t l = fngd_linear_desc(7, 3, 1);
    expect_common_desc_defaults(l);
    EXPECT_EQ(FNGD_LAYER_LINEAR, l.kind);
    EXPECT_EQ(7, l.in_features);
    EXPECT_EQ(3, l.out_features);
    EXPECT_EQ(1, l.has_bias);
    EXPECT_EQ(1, l.positions);

    fngd_layer_desc_t c = fngd_conv2d_desc(3, 8, 11, 13, 3, 5, 0);
    expect_common_desc_defaults(c);
    EXPECT_EQ(FNGD_LAYER_CONV2D, c.kind);
    EXPECT_EQ(3, c.in_channels);
    EXPECT_EQ(8, c.out_channels);
    EXPECT_EQ(11, c.in_h);
    EXPECT_EQ(13, c.in_w);
    EXPECT_EQ(3, c.kernel_h);
    EXPECT_EQ(5, c.kernel_w);
    EXPECT_EQ(0, c.has_bias);
    EXPECT_EQ(1, c.stride_h);
    EXPECT_EQ(1, c.stride_w);
    EXPECT_EQ(0, c.pad_h);
    EXPECT_EQ(0, c.pad_w);
    EXPECT_EQ(1, c.dilation_h);
    EXPECT_EQ(1, c.dilation_w);

    fngd_layer_desc_t n = fngd_norm_affine_desc(16, 49, 1);
    expect_common_desc_defaults(n);
    EXPECT_EQ(FNGD_LAYER_NORM_AFFINE, n.kind);
    EXPECT_EQ(16, n.num_features);
    EXPECT_EQ(49, n.norm_positions);
    EXPECT_EQ(1, n.has_bias);
    EXPECT_EQ(0, n.channels_last);

    fngd_layer_desc_t g = fngd_generic_desc((int64_t)3 << 33);
    expect_common_desc_defaults(g);
    EXPECT_EQ(FNGD_LAYER_GENERIC, g.kind);
    EXPECT_EQ((int64_t)3 << 33, g.num_params);
    EXPECT_EQ(0, g.has_bias);
}

TEST(ApiMisc, DestroyNullIsNoOp) { EXPECT_EQ(FNGD_SUCCESS, fngd_destroy(nullptr)); }

TEST(ApiMisc, BackendAvailable) {
    int avail = -1;
    ASSERT_EQ(FNGD_SUCCESS, fngd_backend_available(FNGD_BACKEND_CPU, &avail));
    EXPECT_EQ(1, avail);
    avail = -1;
    ASSERT_EQ(FNGD_SUCCESS, fngd_backend_available(FNGD_BACKEND_CUDA, &avail));
    EXPECT_TRUE(avail == 0 || avail == 1);
    EXPECT_EQ(FNGD_ERROR_INVALID_ARGUMENT, fngd_backend_available(FNGD_BACKEND_CPU, nullptr));
}

TEST(ApiMisc, LastErrorEmptyOnFreshHandle) {
    fngd_config_t c = base_config(4, 4);
    Handle h;
    ASSERT_EQ(FNGD_SUCCESS, fngd_create(&c, &h.h));
    ASSERT_NE(nullptr, fngd_get_last_error(h));
    EXPECT_STREQ("", fngd_get_last_error(h));
    EXPECT_EQ(FNGD_ERROR_INVALID_STATE, fngd_end_epoch(h, nullptr));
    std::string msg = fngd_get_last_error(h);
    EXPECT_NE(std::string::npos, msg.find(':')) << "expected file:line in " << msg;
}

TEST(ApiMisc, LayerQueries) {
    Model m;
    m.add(fngd_linear_desc(5, 4, 1));
    fngd_layer_desc_t conv = fngd_conv2d_desc(2, 3, 6, 6, 3, 3, 0);
    conv.gram_method = FNGD_GRAM_POSITION;
    m.add(conv);
    m.add(fngd_norm_affine_desc(3, 4, 1));
    fngd_config_t cfg = base_config(4, 8);
    Handle h;
    ASSERT_TRUE(make_handle(cfg, m, h));
    int n = 0;
    ASSERT_EQ(FNGD_SUCCESS, fngd_get_num_layers(h, &n));
    EXPECT_EQ(3, n);
    fngd_gram_method_t gm = FNGD_GRAM_AUTO;
    ASSERT_EQ(FNGD_SUCCESS, fngd_get_layer_gram_method(h, 1, &gm));
    EXPECT_EQ(FNGD_GRAM_POSITION, gm);
    ASSERT_EQ(FNGD_SUCCESS, fngd_get_layer_gram_method(h, 0, &gm));
    EXPECT_NE(FNGD_GRAM_AUTO, gm);
    ASSERT_EQ(FNGD_SUCCESS, fngd_get_layer_gram_method(h, 2, &gm));
    EXPECT_EQ(FNGD_GRAM_MATERIALIZE, gm);
    // prepare freezes the layer set; stored coefficients are all "never stored" (NaN).
    ASSERT_EQ(FNGD_SUCCESS, fngd_prepare(h)) << fngd_get_last_error(h);
    ASSERT_EQ(FNGD_SUCCESS, fngd_prepare(h));  // idempotent
    fngd_layer_desc_t more = fngd_linear_desc(2, 2, 0);
    EXPECT_EQ(FNGD_ERROR_INVALID_STATE, fngd_add_layer(h, &more, nullptr));
    for (float a : get_coefs(h, 0, iota_ids(8))) EXPECT_TRUE(std::isnan(a));
    EXPECT_EQ(FNGD_ERROR_INVALID_ARGUMENT, fngd_set_learning_rate(h, -1.0f));
    EXPECT_EQ(FNGD_ERROR_INVALID_ARGUMENT, fngd_set_learning_rate(h, NAN));
    EXPECT_EQ(FNGD_SUCCESS, fngd_set_learning_rate(h, 0.5f));
}

// fngd_set_layer_buffers redirects the direction; the old buffers are no longer written.
TEST(ApiMisc, SetLayerBuffersRedirectsOutput) {
    const int N = 4;
    Rng rng(31);
    Model m;
    m.add(fngd_linear_desc(5, 3, 1));
    m.randomize(rng, N);
    fngd_config_t cfg = base_config(N, N);
    Handle h;
    ASSERT_TRUE(make_handle(cfg, m, h));
    std::vector<float> gw(m[0].grad_weight.size(), 5.0f), gb(m[0].grad_bias.size(), 5.0f);
    ASSERT_EQ(FNGD_SUCCESS, fngd_set_layer_buffers(h, 0, m[0].weight.data(), m[0].bias.data(),
                                                   gw.data(), gb.data()));
    m.fill_grads(777.0f);
    auto ids = iota_ids(N);
    ASSERT_TRUE(step_ok(h, m, N, ids.data()));
    for (float x : m[0].written_direction()) EXPECT_EQ(777.0f, x);
    std::vector<double> got(gw.begin(), gw.end());
    got.insert(got.end(), gb.begin(), gb.end());
    RefBlock ref = reference_block(m, cfg, 0, N, nullptr);
    EXPECT_LE(rel_err(got, ref.delta), direction_tolerance(ref));
}

// A caller-provided workspace gives bit-identical results to the library's own allocation,
// over collect and reuse steps, and is only accepted before prepare, aligned and large enough.
TEST(ApiMisc, CallerWorkspaceMatchesLibraryWorkspace) {
    for (fngd_gram_method_t method : {FNGD_GRAM_MATERIALIZE, FNGD_GRAM_POSITION}) {
        SCOPED_TRACE(method);
        const int N = 6;
        Rng rng(41);
        Model a, b;
        for (Model* x : {&a, &b}) {
            fngd_layer_desc_t conv = fngd_conv2d_desc(2, 3, 7, 6, 3, 3, 1);
            conv.gram_method = method;
            x->add(conv);
            fngd_layer_desc_t lin = fngd_linear_desc(6, 4, 1);
            lin.positions = 3;
            lin.gram_method = method;
            x->add(lin);
        }
        fngd_config_t cfg = base_config(N, 2 * N);
        Handle ha, hb;
        ASSERT_TRUE(make_handle(cfg, a, ha));
        ASSERT_TRUE(make_handle(cfg, b, hb));
        size_t bytes = 0;
        ASSERT_EQ(FNGD_SUCCESS, fngd_get_workspace_size(hb, &bytes)) << fngd_get_last_error(hb);
        ASSERT_GT(bytes, 0u);
        size_t alloc = (bytes + 256 + 255) / 256 * 256;
        float* ws = static_cast<float*>(std::aligned_alloc(256, alloc));
        ASSERT_NE(nullptr, ws);
        std::unique_ptr<float, decltype(&std::free)> own(ws, &std::free);
        EXPECT_EQ(FNGD_ERROR_INVALID_ARGUMENT, fngd_set_workspace(hb, ws, bytes - 1));
        EXPECT_EQ(FNGD_ERROR_INVALID_ARGUMENT,
                  fngd_set_workspace(hb, reinterpret_cast<char*>(ws) + 4, bytes));
        EXPECT_EQ(FNGD_ERROR_INVALID_ARGUMENT, fngd_set_workspace(hb, nullptr, bytes));
        ASSERT_EQ(FNGD_SUCCESS, fngd_set_workspace(hb, ws, bytes)) << fngd_get_last_error(hb);
        for (int epoch = 0; epoch < 2; ++epoch) {
            for (int s = 0; s < 2; ++s) {
                auto ids = iota_ids(N, s * N);
                a.randomize(rng, N);
                b.copy_batch(a);
                ASSERT_TRUE(step_ok(ha, a, N, ids.data()));
                ASSERT_TRUE(step_ok(hb, b, N, ids.data()));
                for (int l = 0; l < a.size(); ++l)
                    EXPECT_EQ(a[l].written_direction(), b[l].written_direction())
                        << "epoch " << epoch << " step " << s << " layer " << l;
            }
            ASSERT_EQ(FNGD_SUCCESS, fngd_end_epoch(ha, nullptr));
            ASSERT_EQ(FNGD_SUCCESS, fngd_end_epoch(hb, nullptr));
        }
        EXPECT_EQ(FNGD_ERROR_INVALID_STATE, fngd_set_workspace(hb, ws, bytes));  // prepared
        EXPECT_EQ(FNGD_ERROR_INVALID_STATE, fngd_set_workspace(ha, ws, bytes));
    }
}

// The size is a function of the registered layers: a workspace set for a smaller layer set
// must not be used (overrun) after a larger layer is added. Bytes past the given size are
// a guard that must stay untouched.
TEST(ApiMisc, WorkspaceSetBeforeLargerLayerIsNotOverrun) {
    const int N = 8;
    Rng rng(51);
    Model m;
    m.add(fngd_linear_desc(2, 2, 0));
    fngd_config_t cfg = base_config(N, N);
    Handle h;
    ASSERT_EQ(FNGD_SUCCESS, fngd_create(&cfg, &h.h));
    ASSERT_EQ(FNGD_SUCCESS, fngd_add_layer(h, &m[0].desc, nullptr));
    size_t bytes = 0;
    ASSERT_EQ(FNGD_SUCCESS, fngd_get_workspace_size(h, &bytes));
    const size_t guard = 1 << 20;
    size_t alloc = (bytes + guard + 255) / 256 * 256;
    unsigned char* ws = static_cast<unsigned char*>(std::aligned_alloc(256, alloc));
    std::unique_ptr<unsigned char, decltype(&std::free)> own(ws, &std::free);
    std::memset(ws, 0x5A, alloc);
    ASSERT_EQ(FNGD_SUCCESS, fngd_set_workspace(h, ws, bytes));
    fngd_layer_desc_t big = fngd_conv2d_desc(4, 8, 16, 16, 3, 3, 1);
    big.gram_method = FNGD_GRAM_POSITION;
    m.add(big);
    ASSERT_EQ(FNGD_SUCCESS, fngd_add_layer(h, &m[1].desc, nullptr));
    size_t need = 0;
    ASSERT_EQ(FNGD_SUCCESS, fngd_get_workspace_size(h, &need));
    ASSERT_GT(need, bytes) << "test premise: the larger layer needs more workspace";
    m.randomize(rng, N);
    auto ids = iota_ids(N);
    auto b = m.batches();
    fngd_status_t s = fngd_step(h, N, ids.data(), b.data(), nullptr, nullptr);
    // Either refused as a caller error (the workspace is too small now: INVALID_ARGUMENT or
    // INVALID_STATE, not INTERNAL, which means a library bug) or done within the given bytes.
    if (s != FNGD_SUCCESS) {
        EXPECT_TRUE(s == FNGD_ERROR_INVALID_ARGUMENT || s == FNGD_ERROR_INVALID_STATE)
            << fngd_status_string(s) << ": " << fngd_get_last_error(h);
        EXPECT_STRNE("", fngd_get_last_error(h));
    }
    size_t touched = 0;
    for (size_t k = bytes; k < alloc; ++k) touched += ws[k] != 0x5A;
    EXPECT_EQ(0u, touched) << "the library wrote " << touched
                           << " bytes past the caller's workspace (status "
                           << fngd_status_string(s) << ")";
}

}  // namespace

// A caller compiled against the 0.1.0 header passes the smaller struct it knew: the library
// reads only that prefix and gives the fields added since their defaults.
namespace {
struct config_0_1 {  // fngd_config_t as 0.1.0 declared it
    size_t struct_size;
    fngd_backend_kind_t backend;
    int device, max_batch;
    int64_t num_samples;
    fngd_coef_mode_t coef_mode;
    fngd_damping_kind_t damping_kind;
    double damping;
    int max_damping_retries;
    double damping_growth;
    int recompute_every;
    fngd_grad_convention_t grad_convention;
    fngd_rhs_kind_t rhs;
    fngd_fallback_t fallback;
    fngd_output_t output;
    float learning_rate, momentum, weight_decay;
    int check_finite;
    size_t max_workspace_bytes;
};
}  // namespace

TEST(ApiMisc, OlderConfigStructGetsDefaultsForNewFields) {
    static_assert(sizeof(config_0_1) == offsetof(fngd_config_t, coef_filter),
                  "the 0.1.0 prefix of fngd_config_t moved");
    fngd_config_t full;
    fngd_config_init(&full);
    // Bytes past the old struct are garbage the library must not read.
    std::vector<unsigned char> mem(sizeof(fngd_config_t), 0xAB);
    config_0_1 old;
    std::memcpy(&old, &full, sizeof old);
    old.struct_size = sizeof old;
    old.max_batch = 4;
    old.num_samples = 8;
    std::memcpy(mem.data(), &old, sizeof old);
    fngd_handle_t h = nullptr;
    ASSERT_EQ(FNGD_SUCCESS, fngd_create(reinterpret_cast<const fngd_config_t*>(mem.data()), &h))
        << fngd_get_last_error(nullptr);
    fngd_layer_desc_t d = fngd_generic_desc(3);
    std::vector<float> gw(3);
    d.grad_weight = gw.data();
    ASSERT_EQ(FNGD_SUCCESS, fngd_add_layer(h, &d, nullptr));
    std::vector<float> g(4 * 3, 0.5f);
    fngd_layer_batch_t b = {g.data(), nullptr};
    EXPECT_EQ(FNGD_SUCCESS, fngd_step(h, 4, nullptr, &b, nullptr, nullptr)) << fngd_get_last_error(h);
    fngd_destroy(h);
    // Any other size is refused with a message naming both accepted sizes.
    old.struct_size = sizeof old + 4;
    std::memcpy(mem.data(), &old, sizeof old);
    EXPECT_EQ(FNGD_ERROR_INVALID_ARGUMENT,
              fngd_create(reinterpret_cast<const fngd_config_t*>(mem.data()), &h));
    EXPECT_NE(std::string(fngd_get_last_error(nullptr)).find("0.1.0"), std::string::npos);
}
