// init_test.cpp: declared initial states (miras_library_initial_state, runtime.h) on the
// fake module with one state of each init kind (fake_module.c, FAKE_INITS): identity,
// uniform and zeros exactly, normal against an implementation of the documented generator
// written here from runtime.h's text, its mean and deviation, the errors, and that the
// named forward and backward start an absent state from its init.
#include <cmath>
#include <cstring>

#include "test_util.hpp"

namespace {

using namespace miras::test;
using miras::Tensor;
using miras::TensorMap;

// Indices of the fake's states and their per-(batch, head) sizes.
constexpr int32_t kW = 0, kI = 1, kN = 2, kZ = 3;
constexpr int64_t kIEntries = 2 * 3 * 4, kNEntries = 16 * 32, kZEntries = 5;
constexpr float kSentinel = -7.25f;

// runtime.h's generator, written from its description.
uint64_t mix(uint64_t x) {
  uint64_t z = x + 0x9E3779B97F4A7C15ull;
  z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ull;
  z = (z ^ (z >> 27)) * 0x94D049BB133111EBull;
  return z ^ (z >> 31);
}
float documentedNormal(uint64_t seed, double s, uint64_t h, uint64_t e) {
  uint64_t key = mix(mix(seed) + h);
  uint64_t r1 = mix(key + 2 * e), r2 = mix(key + 2 * e + 1);
  double u1 = std::ldexp(double((r1 >> 11) + 1), -53), u2 = std::ldexp(double(r2 >> 11), -53);
  return float(s * std::sqrt(-2.0 * std::log(u1)) * std::cos(2.0 * M_PI * u2));
}

class Init : public ::testing::Test {
protected:
  Init() : lib_(miras::Library::open(MIRAS_FAKE_INITS)) {}

  // State `index` for B x H into a buffer first filled with kSentinel.
  std::vector<float> initial(int32_t index, int64_t B, int64_t H, int64_t entries) {
    std::vector<float> out(size_t(B * H * entries), kSentinel);
    EXPECT_EQ(miras_library_initial_state(lib_.handle(), index, B, H, out.data()), MIRAS_OK)
        << miras_last_error();
    return out;
  }

  miras::Library lib_;
};

TEST_F(Init, MetadataCarriesEachKind) {
  const miras_module_metadata &m = lib_.metadata();
  ASSERT_EQ(m.num_states, 4);
  EXPECT_EQ(m.states[kW].init, MIRAS_INIT_UNIFORM);
  EXPECT_EQ(m.states[kI].init, MIRAS_INIT_IDENTITY);
  EXPECT_EQ(m.states[kN].init, MIRAS_INIT_NORMAL);
  EXPECT_EQ(m.states[kN].init_seed, 42u);
  EXPECT_EQ(m.states[kZ].init, MIRAS_INIT_ZEROS);
}

TEST_F(Init, UniformIdentityAndZerosAreExact) {
  const int64_t B = 2, H = 3;
  for (float x : initial(kW, B, H, kDv * kDk))
    EXPECT_EQ(x, 0.25f);
  for (float x : initial(kZ, B, H, kZEntries))
    EXPECT_EQ(x, 0.0f);
  // I is [B, H, 2, 3, 4]: 1.5 where the last two indices agree, in every leading slice.
  std::vector<float> id = initial(kI, B, H, kIEntries);
  for (int64_t p = 0; p < B * H; ++p)
    for (int64_t a = 0; a < 2; ++a)
      for (int64_t i = 0; i < 3; ++i)
        for (int64_t j = 0; j < 4; ++j)
          EXPECT_EQ(id[size_t(((p * 2 + a) * 3 + i) * 4 + j)], i == j ? 1.5f : 0.0f)
              << "pair " << p << " at [" << a << ", " << i << ", " << j << "]";
}

TEST_F(Init, NormalIsTheDocumentedGeneratorPerHeadNotPerBatch) {
  const int64_t B = 3, H = 4;
  std::vector<float> n = initial(kN, B, H, kNEntries);
  int64_t mismatches = 0;
  for (int64_t b = 0; b < B; ++b)
    for (int64_t h = 0; h < H; ++h)
      for (int64_t e = 0; e < kNEntries; ++e) {
        float want = documentedNormal(42, 0.5, uint64_t(h), uint64_t(e));
        float got = n[size_t((b * H + h) * kNEntries + e)];
        // libm may round log/cos differently in the last double bit: one float ulp.
        if (std::fabs(got - want) > std::fabs(want) * 1.2e-7f + 1e-30f)
          ++mismatches;
      }
  EXPECT_EQ(mismatches, 0);
  // Heads differ from each other.
  EXPECT_NE(std::memcmp(n.data(), n.data() + kNEntries, kNEntries * sizeof(float)), 0);
}

TEST_F(Init, NormalHasTheDeclaredMeanAndDeviation) {
  const int64_t H = 16; // 16 * 512 = 8192 draws
  std::vector<float> n = initial(kN, 1, H, kNEntries);
  double sum = 0, squares = 0;
  for (float x : n) {
    ASSERT_TRUE(std::isfinite(x));
    sum += x;
    squares += double(x) * x;
  }
  double mean = sum / double(n.size());
  double deviation = std::sqrt(squares / double(n.size()) - mean * mean);
  EXPECT_NEAR(mean, 0.0, 0.02);        // 4 standard errors of 0.5 / sqrt(8192)
  EXPECT_NEAR(deviation, 0.5, 0.02);
}

TEST_F(Init, ErrorsAreReportedAndNothingIsWritten) {
  std::vector<float> out(size_t(2 * kDv * kDk), kSentinel);
  auto expectError = [&](miras_status status, miras_status got, const char *fragment) {
    EXPECT_EQ(got, status) << miras_last_error();
    EXPECT_NE(std::string(miras_last_error()).find(fragment), std::string::npos)
        << miras_last_error();
  };
  expectError(MIRAS_ERR_NULL_POINTER, miras_library_initial_state(nullptr, kW, 1, 1, out.data()),
              "library is NULL");
  expectError(MIRAS_ERR_NULL_POINTER, miras_library_initial_state(lib_.handle(), kW, 1, 1, nullptr),
              "out is NULL");
  expectError(MIRAS_ERR_INVALID_ARGUMENT,
              miras_library_initial_state(lib_.handle(), 4, 1, 1, out.data()), "no state 4");
  expectError(MIRAS_ERR_INVALID_ARGUMENT,
              miras_library_initial_state(lib_.handle(), -1, 1, 1, out.data()), "no state -1");
  expectError(MIRAS_ERR_SHAPE, miras_library_initial_state(lib_.handle(), kW, 0, 1, out.data()),
              "B and H must be positive");
  expectError(MIRAS_ERR_SHAPE, miras_library_initial_state(lib_.handle(), kW, 1, -2, out.data()),
              "B and H must be positive");
  expectError(MIRAS_ERR_SHAPE,
              miras_library_initial_state(lib_.handle(), kW, int64_t(1) << 40, int64_t(1) << 40,
                                          out.data()),
              "more elements");
  for (float x : out)
    EXPECT_EQ(x, kSentinel);
}

TEST_F(Init, CxxWrapperMatchesTheCApi) {
  Tensor n = lib_.initialState("N", 2, 3);
  EXPECT_EQ(n.shape(), (std::vector<int64_t>{2, 3, 16, 32}));
  std::vector<float> c = initial(kN, 2, 3, kNEntries);
  EXPECT_EQ(n.values(), c);
  EXPECT_THROW(lib_.initialState("nope", 2, 3), miras::Error);
  EXPECT_THROW(lib_.initialState("W", 0, 3), miras::Error);
}

// The named forward fills an absent W with its init (uniform 0.25), not zeros: the same
// outputs as W = 0.25 given, other outputs than W = 0 given.
TEST_F(Init, ForwardAndBackwardStartAnAbsentStateFromItsInit) {
  const int64_t B = 2, T = 4, H = 3;
  TensorMap in = fakeInputs(B, T, H, false);
  auto forward = [&](const Tensor *w) {
    TensorMap inputs = in;
    if (w)
      inputs["W"] = *w;
    return lib_.forward(inputs);
  };
  Tensor quarter = lib_.initialState("W", B, H), zeros = lib_.zeroState("W", B, H);
  TensorMap absent = forward(nullptr), given = forward(&quarter), zero = forward(&zeros);
  EXPECT_EQ(absent.at("o").values(), given.at("o").values());
  EXPECT_EQ(absent.at("W").values(), given.at("W").values());
  EXPECT_NE(absent.at("o").values(), zero.at("o").values());

  TensorMap adjoints{{"o", randomTensor({B, T, H, kDv}, 21)}};
  auto backward = [&](const Tensor *w) {
    TensorMap inputs = in;
    if (w)
      inputs["W"] = *w;
    return lib_.backward(inputs, adjoints);
  };
  TensorMap dAbsent = backward(nullptr), dGiven = backward(&quarter), dZero = backward(&zeros);
  EXPECT_EQ(dAbsent.at("q").values(), dGiven.at("q").values());
  EXPECT_NE(dAbsent.at("q").values(), dZero.at("q").values());
}

} // namespace
