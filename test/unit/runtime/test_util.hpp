// test_util.hpp: shared helpers of the runtime unit tests: a scratch directory, random
// inputs for the fake module, and an independent reference of its recurrence.
#ifndef MIRAS_TEST_UNIT_RUNTIME_TEST_UTIL_HPP
#define MIRAS_TEST_UNIT_RUNTIME_TEST_UTIL_HPP

#include <algorithm>
#include <cstdlib>
#include <filesystem>
#include <random>
#include <string>

#include <gtest/gtest.h>

#include "miras/runtime.hpp"

namespace miras::test {

constexpr int64_t kDk = 3, kDv = 4; // fake_module.c

// A fresh directory under the test temp dir, removed with the object.
class ScratchDir {
public:
  ScratchDir() {
    std::string tmpl = ::testing::TempDir() + "miras_rt_XXXXXX";
    if (mkdtemp(tmpl.data()) == nullptr)
      throw std::runtime_error("mkdtemp failed");
    path_ = tmpl;
  }
  ~ScratchDir() {
    std::error_code ec;
    std::filesystem::remove_all(path_, ec);
  }
  std::string file(const std::string &name) const { return (path_ / name).string(); }
  const std::filesystem::path &path() const { return path_; }

private:
  std::filesystem::path path_;
};

/// A float32 C view of `t` named `name` (the tensor lists of the C API).
inline miras_tensor view(const char *name, Tensor &t) {
  miras_tensor v{};
  v.name = name;
  v.data = t.data();
  v.dtype = MIRAS_DTYPE_F32;
  v.rank = static_cast<int32_t>(t.shape().size());
  std::copy(t.shape().begin(), t.shape().end(), v.shape);
  return v;
}

/// A view of every tensor of `tensors`, named by its key.
inline std::vector<miras_tensor> views(miras::TensorMap &tensors) {
  std::vector<miras_tensor> out;
  for (auto &[name, t] : tensors)
    out.push_back(view(name.c_str(), t));
  return out;
}

inline Tensor randomTensor(std::vector<int64_t> shape, unsigned seed, float lo = -1,
                           float hi = 1) {
  Tensor t(std::move(shape));
  std::mt19937 gen(seed);
  std::uniform_real_distribution<float> dist(lo, hi);
  for (float &x : t.values())
    x = dist(gen);
  return t;
}

// Inputs of the fake module for B, T, H; with `withState`, a random initial W.
inline TensorMap fakeInputs(int64_t B, int64_t T, int64_t H, bool withState, unsigned seed = 1) {
  TensorMap in;
  in["q"] = randomTensor({B, T, H, kDk}, seed);
  in["k"] = randomTensor({B, T, H, kDk}, seed + 1);
  in["v"] = randomTensor({B, T, H, kDv}, seed + 2);
  in["alpha"] = randomTensor({B, T, H}, seed + 3, 0.5f, 1.0f);
  in["beta"] = randomTensor({B, T, H, kDv}, seed + 4, 0.0f, 1.0f);
  if (withState)
    in["W"] = randomTensor({B, H, kDv, kDk}, seed + 5);
  return in;
}

// W_t = alpha_t W_{t-1} + (beta_t * v_t) k_t^T, o_t = W_t q_t, written out with explicit
// multi-dimensional indices (the module uses flat offsets), accumulated in double.
inline TensorMap reference(const TensorMap &in) {
  const std::vector<int64_t> &s = in.at("q").shape();
  const int64_t B = s[0], T = s[1], H = s[2];
  auto at4 = [&](const Tensor &x, int64_t b, int64_t t, int64_t h, int64_t i) {
    const std::vector<int64_t> &d = x.shape();
    return double(x.values()[((b * d[1] + t) * d[2] + h) * d[3] + i]);
  };
  Tensor o({B, T, H, kDv}), W({B, H, kDv, kDk});
  for (int64_t b = 0; b < B; ++b) {
    for (int64_t h = 0; h < H; ++h) {
      double w[kDv][kDk] = {};
      if (in.count("W"))
        for (int64_t i = 0; i < kDv; ++i)
          for (int64_t j = 0; j < kDk; ++j)
            w[i][j] = in.at("W").values()[((b * H + h) * kDv + i) * kDk + j];
      for (int64_t t = 0; t < T; ++t) {
        double alpha = in.at("alpha").values()[(b * T + t) * H + h];
        for (int64_t i = 0; i < kDv; ++i)
          for (int64_t j = 0; j < kDk; ++j)
            w[i][j] = alpha * w[i][j] + at4(in.at("beta"), b, t, h, i) *
                                            at4(in.at("v"), b, t, h, i) *
                                            at4(in.at("k"), b, t, h, j);
        for (int64_t i = 0; i < kDv; ++i) {
          double acc = 0;
          for (int64_t j = 0; j < kDk; ++j)
            acc += w[i][j] * at4(in.at("q"), b, t, h, j);
          o.values()[((b * T + t) * H + h) * kDv + i] = float(acc);
        }
      }
      for (int64_t i = 0; i < kDv; ++i)
        for (int64_t j = 0; j < kDk; ++j)
          W.values()[((b * H + h) * kDv + i) * kDk + j] = float(w[i][j]);
    }
  }
  return {{"o", o}, {"W", W}};
}

inline void expectNear(const Tensor &got, const Tensor &want, float tol = 1e-5f) {
  ASSERT_EQ(got.shape(), want.shape());
  for (int64_t i = 0; i < got.numel(); ++i)
    ASSERT_NEAR(got.values()[i], want.values()[i], tol) << "at flat index " << i;
}

} // namespace miras::test

#endif // MIRAS_TEST_UNIT_RUNTIME_TEST_UTIL_HPP
