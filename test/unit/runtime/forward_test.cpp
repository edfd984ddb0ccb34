// forward_test.cpp: numeric results and validation of miras_library_forward(_args).
#include <cmath>
#include <cstdlib>

#include "test_util.hpp"

namespace {

using namespace miras::test;
using miras::Tensor;
using miras::TensorMap;

constexpr int64_t B = 2, T = 5, H = 3;

// Valid C views of every input and output; tests break one thing and call forward.
class Forward : public ::testing::Test {
protected:
  Forward()
      : lib_(miras::Library::open(MIRAS_FAKE_MODULE)), in_(fakeInputs(B, T, H, true)),
        out_{{"o", Tensor({B, T, H, kDv})}, {"W", Tensor({B, H, kDv, kDk})}} {
    for (auto &[name, t] : in_)
      inputs.push_back(view(name.c_str(), t));
    for (auto &[name, t] : out_)
      outputs.push_back(view(name.c_str(), t));
  }

  miras_status run() {
    return miras_library_forward(lib_.handle(), inputs.data(), int32_t(inputs.size()),
                                 outputs.data(), int32_t(outputs.size()));
  }

  miras_tensor &find(std::vector<miras_tensor> &list, const char *name) {
    for (miras_tensor &t : list)
      if (std::string(t.name) == name)
        return t;
    throw std::runtime_error(std::string("no tensor ") + name);
  }

  // Runs and expects `status` with every fragment in the message.
  void expectError(miras_status status, std::initializer_list<const char *> fragments) {
    EXPECT_EQ(run(), status) << miras_last_error();
    std::string msg = miras_last_error();
    for (const char *f : fragments)
      EXPECT_NE(msg.find(f), std::string::npos) << "'" << f << "' not in: " << msg;
  }

  miras::Library lib_;
  TensorMap in_, out_;
  std::vector<miras_tensor> inputs, outputs;
};

// The non-finite check: off by default (a NaN input runs), on it names the first
// non-finite input by tensor and index before the module runs, and an output that
// became non-finite from finite inputs after it ran.
TEST_F(Forward, NonFiniteCheckNamesTensorAndIndex) {
  EXPECT_EQ(miras_library_check_finite(lib_.handle()), 0);
  in_["k"].values()[(((1 * T + 2) * H + 1) * kDk) + 2] = std::nanf("");
  ASSERT_EQ(run(), MIRAS_OK) << miras_last_error();
  ASSERT_EQ(miras_library_set_check_finite(lib_.handle(), 1), MIRAS_OK);
  EXPECT_EQ(miras_library_check_finite(lib_.handle()), 1);
  expectError(MIRAS_ERR_NON_FINITE, {"input tensor 'k' holds nan at [1, 2, 1, 2]"});
  EXPECT_STREQ(miras_status_string(MIRAS_ERR_NON_FINITE), "non-finite value");

  in_["k"] = fakeInputs(B, T, H, true)["k"];
  inputs = {};
  for (auto &[name, t] : in_)
    inputs.push_back(view(name.c_str(), t));
  in_["alpha"].values()[4] = -INFINITY;
  expectError(MIRAS_ERR_NON_FINITE, {"input tensor 'alpha' holds -inf at [0, 1, 1]"});
  in_["alpha"].values()[4] = 0.5f;
  // Finite inputs whose products overflow float32.
  for (float &x : in_["v"].values())
    x = 3e38f;
  for (float &x : in_["k"].values())
    x = 3e38f;
  expectError(MIRAS_ERR_NON_FINITE, {"output tensor '", "after the forward"});
  EXPECT_EQ(miras_library_set_check_finite(nullptr, 1), MIRAS_ERR_NULL_POINTER);
  EXPECT_EQ(miras_library_check_finite(nullptr), 0);
}

// MIRAS_CHECK_FINITE turns it on at open ("0" or empty leaves it off).
TEST(ForwardEnvironment, CheckFiniteFromEnvironment) {
  for (auto [value, on] : {std::pair{"1", 1}, std::pair{"0", 0}, std::pair{"", 0}}) {
    setenv("MIRAS_CHECK_FINITE", value, 1);
    miras::Library lib = miras::Library::open(MIRAS_FAKE_MODULE);
    EXPECT_EQ(miras_library_check_finite(lib.handle()), on) << "'" << value << "'";
    EXPECT_EQ(lib.checkFinite(), on != 0);
  }
  unsetenv("MIRAS_CHECK_FINITE");
}

TEST_F(Forward, MatchesReference) {
  ASSERT_EQ(run(), MIRAS_OK) << miras_last_error();
  TensorMap want = reference(in_);
  expectNear(out_["o"], want["o"]);
  expectNear(out_["W"], want["W"]);
}

// The fake module was not built with --backward (backward_segment 0, NULL entries):
// the backward is refused before any tensor is looked at, saying how to get one.
TEST_F(Forward, BackwardWithoutBackwardPassIsUnsupported) {
  EXPECT_EQ(lib_.metadata().backward_segment, 0);
  std::vector<miras_tensor> adjoints{find(outputs, "o")};
  EXPECT_EQ(miras_library_backward(lib_.handle(), inputs.data(), int32_t(inputs.size()),
                                   adjoints.data(), 1, inputs.data(),
                                   int32_t(inputs.size())),
            MIRAS_ERR_UNSUPPORTED);
  EXPECT_NE(std::string(miras_last_error()).find("mirasc --backward"), std::string::npos)
      << miras_last_error();
  EXPECT_EQ(miras_library_backward(nullptr, nullptr, 0, nullptr, 0, nullptr, 0),
            MIRAS_ERR_NULL_POINTER);
  try {
    lib_.backward(in_, {{"o", out_.at("o")}});
    ADD_FAILURE() << "no error";
  } catch (const miras::Error &e) {
    EXPECT_EQ(e.status(), MIRAS_ERR_UNSUPPORTED);
  }
}

TEST_F(Forward, AbsentInitialStateIsZero) {
  inputs.erase(std::find_if(inputs.begin(), inputs.end(),
                            [](const miras_tensor &t) { return std::string(t.name) == "W"; }));
  std::fill(out_["W"].values().begin(), out_["W"].values().end(), 7.0f); // must be overwritten
  ASSERT_EQ(run(), MIRAS_OK) << miras_last_error();
  in_.erase("W");
  expectNear(out_["o"], reference(in_)["o"]);
  expectNear(out_["W"], reference(in_)["W"]);
}

// Splitting a sequence and feeding the final state back in place gives the same result.
TEST_F(Forward, InPlaceContinuation) {
  TensorMap whole = reference(in_);
  Tensor &W = out_["W"];
  W.values() = in_["W"].values();
  for (auto [t0, len] : {std::pair<int64_t, int64_t>{0, 2}, {2, 3}}) {
    TensorMap part;
    for (const char *name : {"q", "k", "v", "alpha", "beta"}) {
      const Tensor &full = in_[name];
      std::vector<int64_t> shape = full.shape();
      int64_t inner = full.numel() / (B * T);
      shape[1] = len;
      Tensor p(shape);
      for (int64_t b = 0; b < B; ++b)
        std::copy_n(full.data() + (b * T + t0) * inner, len * inner, p.data() + b * len * inner);
      part[name] = p;
    }
    Tensor o({B, len, H, kDv});
    std::vector<miras_tensor> pin, pout{view("o", o), view("W", W)};
    for (auto &[name, t] : part)
      pin.push_back(view(name.c_str(), t));
    pin.push_back(view("W", W)); // aliases the output W
    ASSERT_EQ(miras_library_forward(lib_.handle(), pin.data(), int32_t(pin.size()), pout.data(),
                                    int32_t(pout.size())),
              MIRAS_OK)
        << miras_last_error();
    for (int64_t b = 0; b < B; ++b)
      for (int64_t i = 0; i < len * H * kDv; ++i)
        ASSERT_NEAR(o.values()[b * len * H * kDv + i],
                    whole["o"].values()[(b * T + t0) * H * kDv + i], 1e-5);
  }
  expectNear(W, whole["W"]);
}

TEST_F(Forward, CppWrapperMatchesReference) {
  TensorMap got = lib_.forward(in_);
  ASSERT_EQ(got.size(), 2u);
  TensorMap want = reference(in_);
  expectNear(got["o"], want["o"]);
  expectNear(got["W"], want["W"]);
}

TEST_F(Forward, CppWrapperThrowsOnBadInput) {
  in_.erase("alpha");
  try {
    lib_.forward(in_);
    FAIL() << "expected an error";
  } catch (const miras::Error &e) {
    EXPECT_EQ(e.status(), MIRAS_ERR_INVALID_ARGUMENT);
    EXPECT_NE(std::string(e.what()).find("missing input tensor 'alpha'"), std::string::npos);
  }
  in_.erase("q");
  EXPECT_THROW(lib_.forward(in_), miras::Error);
}

// One wrong shape per tensor kind; the message names the tensor and both shapes.
struct ShapeCase {
  bool output;
  const char *name;
  std::vector<int64_t> shape;
  const char *expected;
};

// Readable CTest names, e.g. ".../IsRejected/in_k_2x5x3x4".
void PrintTo(const ShapeCase &c, std::ostream *os) {
  *os << (c.output ? "out_" : "in_") << c.name << "_";
  for (size_t i = 0; i < c.shape.size(); ++i)
    *os << (i ? "x" : "") << c.shape[i];
}

class ForwardShape : public Forward, public ::testing::WithParamInterface<ShapeCase> {};

TEST_P(ForwardShape, IsRejected) {
  const ShapeCase &c = GetParam();
  miras_tensor &t = find(c.output ? outputs : inputs, c.name);
  t.rank = int32_t(c.shape.size());
  std::copy(c.shape.begin(), c.shape.end(), t.shape);
  expectError(MIRAS_ERR_SHAPE, {c.name, c.expected, miras::formatShape(c.shape).c_str()});
}

INSTANTIATE_TEST_SUITE_P(
    EachKind, ForwardShape,
    ::testing::Values(
        ShapeCase{false, "k", {B, T, H, kDv}, "expected shape [2, 5, 3, 3]"},         // Dk
        ShapeCase{false, "v", {B, T, H, kDk}, "expected shape [2, 5, 3, 4]"},         // Dv
        ShapeCase{false, "k", {B + 1, T, H, kDk}, "expected shape [2, 5, 3, 3]"},     // B
        ShapeCase{false, "v", {B, T + 1, H, kDv}, "expected shape [2, 5, 3, 4]"},     // T
        ShapeCase{false, "alpha", {B, T, H, 1}, "expected shape [2, 5, 3]"},          // scalar gate
        ShapeCase{false, "beta", {B, T, H, kDk}, "expected shape [2, 5, 3, 4]"},     // channel
        ShapeCase{false, "W", {B, H, kDk, kDv}, "expected shape [2, 3, 4, 3]"},       // state in
        ShapeCase{true, "o", {B, T, H, kDk}, "expected shape [2, 5, 3, 4]"},          // output
        ShapeCase{true, "W", {B, H + 1, kDv, kDk}, "expected shape [2, 3, 4, 3]"},    // state out
        ShapeCase{false, "q", {B, T, H, kDv}, "expected shape [2, 5, 3, 3]"},         // q's Dk
        ShapeCase{false, "q", {B, T, H}, "[B, T, H, Dk]"},                            // q's rank
        ShapeCase{false, "q", {B, 0, H, kDk}, "an empty sequence is not a call"},
        ShapeCase{false, "q", {0, T, H, kDk}, "B, T, H > 0"}));                       // empty

TEST_F(Forward, RankAboveMaximum) {
  find(inputs, "v").rank = MIRAS_TENSOR_MAX_RANK + 1;
  expectError(MIRAS_ERR_SHAPE, {"'v'", "rank 9"});
}

TEST_F(Forward, MissingTensors) {
  inputs.erase(inputs.begin()); // the first in name order is "W", which is optional
  ASSERT_EQ(run(), MIRAS_OK) << miras_last_error();
  inputs.erase(std::find_if(inputs.begin(), inputs.end(),
                            [](const miras_tensor &t) { return std::string(t.name) == "k"; }));
  expectError(MIRAS_ERR_INVALID_ARGUMENT, {"missing input tensor 'k'"});
  inputs.push_back(view("k", in_["k"]));
  outputs.erase(outputs.begin()); // "W" (name order)
  expectError(MIRAS_ERR_INVALID_ARGUMENT, {"missing output tensor 'W'"});
}

TEST_F(Forward, UnknownAndDuplicateNames) {
  find(inputs, "alpha").name = "gamma";
  expectError(MIRAS_ERR_INVALID_ARGUMENT,
              {"unknown input tensor 'gamma'", "q, k, v, alpha, beta, W"});
  find(inputs, "gamma").name = "alpha";
  inputs.push_back(view("beta", in_["beta"]));
  expectError(MIRAS_ERR_INVALID_ARGUMENT, {"input tensor 'beta' is given twice"});
  inputs.pop_back();
  find(outputs, "o").name = "q";
  expectError(MIRAS_ERR_INVALID_ARGUMENT, {"unknown output tensor 'q'"});
}

TEST_F(Forward, WrongDtype) {
  find(inputs, "v").dtype = 5;
  expectError(MIRAS_ERR_DTYPE, {"'v'", "float32"});
}

TEST_F(Forward, NullPointers) {
  find(outputs, "o").data = nullptr;
  expectError(MIRAS_ERR_NULL_POINTER, {"output tensor 'o' has NULL data"});
  find(outputs, "o").data = out_["o"].data();
  find(inputs, "k").name = nullptr;
  expectError(MIRAS_ERR_NULL_POINTER, {"NULL name"});
  EXPECT_EQ(miras_library_forward(nullptr, inputs.data(), 1, outputs.data(), 1),
            MIRAS_ERR_NULL_POINTER);
  EXPECT_EQ(miras_library_forward(lib_.handle(), nullptr, 3, outputs.data(), 1),
            MIRAS_ERR_NULL_POINTER);
  EXPECT_EQ(miras_library_forward(lib_.handle(), inputs.data(), -1, outputs.data(), 1),
            MIRAS_ERR_INVALID_ARGUMENT);
}

TEST_F(Forward, ModuleFailureIsReported) {
  miras::Library failing = miras::Library::open(MIRAS_FAKE_FAILS);
  EXPECT_EQ(miras_library_forward(failing.handle(), inputs.data(), int32_t(inputs.size()),
                                  outputs.data(), int32_t(outputs.size())),
            MIRAS_ERR_DEVICE);
  EXPECT_NE(std::string(miras_last_error()).find("forward failed"), std::string::npos);
}

TEST_F(Forward, RawArgs) {
  const float *gates[] = {in_["alpha"].data(), in_["beta"].data()};
  const float *state_in[] = {in_["W"].data()};
  float *state_out[] = {out_["W"].data()};
  miras_forward_args a = {B, T, H, in_["q"].data(), in_["k"].data(), in_["v"].data(),
                          gates, state_in, state_out, out_["o"].data()};
  ASSERT_EQ(miras_library_forward_args(lib_.handle(), &a), MIRAS_OK) << miras_last_error();
  expectNear(out_["o"], reference(in_)["o"]);

  EXPECT_EQ(miras_library_forward_args(lib_.handle(), nullptr), MIRAS_ERR_NULL_POINTER);
  EXPECT_EQ(miras_library_forward_args(nullptr, &a), MIRAS_ERR_NULL_POINTER);
  miras_forward_args bad = a;
  bad.v = nullptr;
  EXPECT_EQ(miras_library_forward_args(lib_.handle(), &bad), MIRAS_ERR_NULL_POINTER);
  bad = a;
  const float *one_gate[] = {gates[0], nullptr};
  bad.gates = one_gate;
  EXPECT_EQ(miras_library_forward_args(lib_.handle(), &bad), MIRAS_ERR_NULL_POINTER);
  bad = a;
  bad.state_out = nullptr;
  EXPECT_EQ(miras_library_forward_args(lib_.handle(), &bad), MIRAS_ERR_NULL_POINTER);
  bad = a;
  bad.heads = 0;
  EXPECT_EQ(miras_library_forward_args(lib_.handle(), &bad), MIRAS_ERR_SHAPE);
  EXPECT_NE(std::string(miras_last_error()).find("positive"), std::string::npos);
}

} // namespace

namespace {

// Every thread count, including more threads than (batch, head) pairs, gives the
// single-threaded numbers bit for bit: each pair runs the same code on one thread.
TEST_F(Forward, ThreadCountDoesNotChangeResults) {
  EXPECT_EQ(lib_.numThreads(), 1);
  TensorMap single = lib_.forward(in_);
  for (int32_t threads : {2, 3, 4, 7, 0}) {
    lib_.setNumThreads(threads);
    EXPECT_GE(lib_.numThreads(), 1);
    for (int repeat = 0; repeat < 3; ++repeat) { // the pool is reused across calls
      TensorMap got = lib_.forward(in_);
      EXPECT_EQ(got["o"].values(), single["o"].values()) << threads << " threads";
      EXPECT_EQ(got["W"].values(), single["W"].values()) << threads << " threads";
    }
  }
}

TEST_F(Forward, ThreadCountIsValidated) {
  EXPECT_EQ(miras_library_set_num_threads(lib_.handle(), -1), MIRAS_ERR_INVALID_ARGUMENT);
  EXPECT_NE(std::string(miras_last_error()).find("thread count"), std::string::npos);
  EXPECT_EQ(miras_library_set_num_threads(nullptr, 2), MIRAS_ERR_NULL_POINTER);
  EXPECT_EQ(miras_library_num_threads(nullptr), 0);
  EXPECT_THROW(lib_.setNumThreads(-3), miras::Error);
}

// A failing range is reported once, with the module's status.
TEST(ForwardThreads, FailingModuleFailsOnEveryThreadCount) {
  miras::Library failing = miras::Library::open(MIRAS_FAKE_FAILS);
  failing.setNumThreads(3);
  EXPECT_THROW(failing.forward(fakeInputs(B, T, H, true)), miras::Error);
}

} // namespace
