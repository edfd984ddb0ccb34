// backward_test.cpp: miras_library_backward over named tensors, on the fake module built
// with its backward entry points (fake_module.c, FAKE_BACKWARD): the adjoints against
// central differences of the float64 reference forward, and the validation of the
// inputs, adjoints and outputs lists.
#include <cmath>

#include "test_util.hpp"

namespace {

using namespace miras::test;
using miras::Tensor;
using miras::TensorMap;

constexpr int64_t B = 2, T = 5, H = 3;

class Backward : public ::testing::Test {
protected:
  Backward()
      : lib_(miras::Library::open(MIRAS_FAKE_BACKWARD)), in_(fakeInputs(B, T, H, true)),
        adj_{{"o", randomTensor({B, T, H, kDv}, 11)}, {"W", randomTensor({B, H, kDv, kDk}, 12)}} {
    for (auto &[name, t] : in_) {
      out_.emplace(name, Tensor(t.shape()));
      inputs.push_back(view(name.c_str(), t));
    }
    for (auto &[name, t] : adj_)
      adjoints.push_back(view(name.c_str(), t));
    for (auto &[name, t] : out_)
      outputs.push_back(view(name.c_str(), t));
  }

  miras_status run() {
    return miras_library_backward(lib_.handle(), inputs.data(), int32_t(inputs.size()),
                                  adjoints.data(), int32_t(adjoints.size()), outputs.data(),
                                  int32_t(outputs.size()));
  }

  void expectError(miras_status status, std::initializer_list<const char *> fragments) {
    EXPECT_EQ(run(), status) << miras_last_error();
    std::string msg = miras_last_error();
    for (const char *f : fragments)
      EXPECT_NE(msg.find(f), std::string::npos) << "'" << f << "' not in: " << msg;
  }

  // L = sum(do * o) + sum(dW * W_T) of the float64 reference.
  double loss(const TensorMap &in) {
    TensorMap out = reference(in);
    double l = 0;
    for (const char *name : {"o", "W"})
      for (int64_t i = 0; i < out.at(name).numel(); ++i)
        l += double(out.at(name).values()[i]) * adj_.at(name).values()[i];
    return l;
  }

  miras::Library lib_;
  TensorMap in_, adj_, out_;
  std::vector<miras_tensor> inputs, adjoints, outputs;
};

// With the check on, a non-finite adjoint is named before the backward runs.
TEST_F(Backward, NonFiniteAdjointIsNamed) {
  lib_.setCheckFinite(true);
  adj_["W"].values()[5] = INFINITY;
  expectError(MIRAS_ERR_NON_FINITE, {"adjoint tensor 'W' holds inf at [0, 0, 1, 2]"});
  adj_["W"].values()[5] = 0;
  EXPECT_EQ(run(), MIRAS_OK) << miras_last_error();
}

TEST_F(Backward, MetadataAndEntryTableSayThereIsOne) {
  EXPECT_EQ(lib_.metadata().backward_segment, 4);
  EXPECT_EQ(lib_.metadata().backward_flops_per_token, 120.0);
}

// Every input's adjoint at a few coordinates against central differences of the loss (it
// is linear in each coordinate of q, k, v, beta and W, a polynomial in alpha).
TEST_F(Backward, MatchesFiniteDifferences) {
  ASSERT_EQ(run(), MIRAS_OK) << miras_last_error();
  for (auto &[name, x] : in_) {
    for (int64_t i : {int64_t(0), x.numel() / 2, x.numel() - 1}) {
      const float h = 1e-2f, saved = x.values()[i];
      x.values()[i] = saved + h;
      double plus = loss(in_);
      x.values()[i] = saved - h;
      double minus = loss(in_);
      x.values()[i] = saved;
      double fd = (plus - minus) / (2 * h), an = out_.at(name).values()[i];
      EXPECT_NEAR(an, fd, 1e-3 * std::max(1.0, std::abs(fd))) << name << "[" << i << "]";
    }
  }
}

TEST_F(Backward, AbsentStateAdjointIsZeroAndThreadsChangeNothing) {
  ASSERT_EQ(run(), MIRAS_OK) << miras_last_error();
  TensorMap first = out_;
  lib_.setNumThreads(4);
  TensorMap threaded = lib_.backward(in_, adj_);
  for (auto &[name, t] : first)
    expectNear(threaded.at(name), t, 0.0f);
  std::fill(adj_.at("W").values().begin(), adj_.at("W").values().end(), 0.0f);
  TensorMap zero = lib_.backward(in_, adj_);
  TensorMap absent = lib_.backward(in_, {{"o", adj_.at("o")}});
  for (auto &[name, t] : zero)
    expectNear(absent.at(name), t, 0.0f);
}

TEST_F(Backward, AdjointOfOIsRequired) {
  adjoints.pop_back(); // "o" (the map is ordered: W, o)
  expectError(MIRAS_ERR_INVALID_ARGUMENT, {"missing adjoint tensor 'o'"});
}

TEST_F(Backward, UnknownAdjointIsNamed) {
  adjoints[0].name = "q";
  expectError(MIRAS_ERR_INVALID_ARGUMENT, {"unknown adjoint tensor 'q'", "o, W"});
}

TEST_F(Backward, WronglyShapedAdjointIsNamed) {
  adjoints[1].shape[1] = T + 1;
  expectError(MIRAS_ERR_SHAPE, {"adjoint tensor 'o': expected shape [2, 5, 3, 4]"});
}

TEST_F(Backward, EveryOutputIsRequired) {
  outputs.pop_back(); // "v" (ordered: W, alpha, beta, k, q, v)
  expectError(MIRAS_ERR_INVALID_ARGUMENT, {"missing output tensor 'v'"});
  outputs.push_back(view("v", out_.at("v")));
  outputs.erase(outputs.begin()); // "W": the initial state's adjoint is an output too
  expectError(MIRAS_ERR_INVALID_ARGUMENT, {"missing output tensor 'W'"});
}

TEST_F(Backward, WronglyShapedOutputIsNamed) {
  outputs[1].rank = 2; // alpha
  expectError(MIRAS_ERR_SHAPE, {"output tensor 'alpha': expected shape [2, 5, 3]"});
}

TEST_F(Backward, NullDataIsRefused) {
  outputs[3].data = nullptr;
  expectError(MIRAS_ERR_NULL_POINTER, {"output tensor 'k' has NULL data"});
}

// Checkpoints a forward saved ("W.checkpoints", runtime.h): [B, H, N, shape] with
// N = ceil((T + chunk - 1) / S) = ceil(5 / 4); accepted as an input of the backward,
// checked like any tensor; an output of the forward only with a backward to read them.
TEST_F(Backward, CheckpointsAreNamedAndShapeChecked) {
  int32_t rank = 0;
  int64_t shape[MIRAS_TENSOR_MAX_RANK];
  ASSERT_EQ(miras_library_tensor_shape(lib_.handle(), "W.checkpoints", B, T, H, &rank, shape),
            MIRAS_OK)
      << miras_last_error();
  EXPECT_EQ(std::vector<int64_t>(shape, shape + rank),
            (std::vector<int64_t>{B, H, 2, kDv, kDk}));
  Tensor checkpoints({B, H, 2, kDv, kDk});
  inputs.push_back(view("W.checkpoints", checkpoints));
  EXPECT_EQ(run(), MIRAS_OK) << miras_last_error();
  inputs.back().shape[2] = 3;
  expectError(MIRAS_ERR_SHAPE, {"input tensor 'W.checkpoints': expected shape [2, 3, 2, 4, 3]"});
  inputs.back().shape[2] = 2;
  inputs.push_back(view("W.checkpoints", checkpoints));
  expectError(MIRAS_ERR_INVALID_ARGUMENT, {"input tensor 'W.checkpoints' is given twice"});
  inputs.pop_back();
  inputs.back().name = "V.checkpoints"; // no state V
  expectError(MIRAS_ERR_INVALID_ARGUMENT, {"unknown input tensor 'V.checkpoints'"});
  inputs.back().name = "W.checkpoints";
  adjoints.push_back(view("W.checkpoints", checkpoints)); // not an adjoint
  expectError(MIRAS_ERR_INVALID_ARGUMENT, {"unknown adjoint tensor 'W.checkpoints'"});
}

// miras_library_forward over `inputs` and `outputs` must fail with `status`, its message
// holding `fragment`.
void expectForwardFails(miras::Library &lib, TensorMap &inputs,
                        std::vector<miras_tensor> outputs, miras_status status,
                        const std::string &fragment) {
  std::vector<miras_tensor> in = views(inputs);
  EXPECT_EQ(miras_library_forward(lib.handle(), in.data(), int32_t(in.size()), outputs.data(),
                                  int32_t(outputs.size())),
            status);
  EXPECT_NE(std::string(miras_last_error()).find(fragment), std::string::npos)
      << miras_last_error();
}

// A library without a backward has no checkpoints to save.
TEST(Checkpoints, ForwardWithoutBackwardRefusesThem) {
  miras::Library lib = miras::Library::open(MIRAS_FAKE_MODULE);
  TensorMap in = fakeInputs(B, T, H, true);
  Tensor o({B, T, H, kDv}), w({B, H, kDv, kDk}), checkpoints({B, H, 2, kDv, kDk});
  expectForwardFails(lib, in, {view("o", o), view("W", w), view("W.checkpoints", checkpoints)},
                     MIRAS_ERR_UNSUPPORTED, "no backward pass to save checkpoints");
}

// Every carried state's checkpoints or none: a partial set is named.
TEST(Checkpoints, PartialSetIsRefused) {
  miras::Library lib = miras::Library::open(MIRAS_FAKE_INITS);
  TensorMap in = fakeInputs(B, T, H, false);
  const miras_module_metadata &m = lib.metadata();
  TensorMap states;
  for (int32_t s = 0; s < m.num_states; ++s) {
    std::vector<int64_t> shape{B, H};
    shape.insert(shape.end(), m.states[s].shape, m.states[s].shape + m.states[s].rank);
    states.emplace(m.states[s].name, Tensor(shape));
  }
  Tensor o({B, T, H, kDv}), checkpoints({B, H, 2, kDv, kDk});
  std::vector<miras_tensor> outputs = views(states);
  outputs.push_back(view("o", o));
  outputs.push_back(view("W.checkpoints", checkpoints));
  expectForwardFails(lib, in, outputs, MIRAS_ERR_INVALID_ARGUMENT,
                     "output tensor 'I.checkpoints' is missing");
}

} // namespace
