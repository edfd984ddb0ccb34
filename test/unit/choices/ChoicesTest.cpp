//===- ChoicesTest.cpp - The choice registry, end to end ------------------===//
//
// A retention registered by a test file (ThrowawayRetention.cpp) is parsed,
// checked, derived, compiled to a library and run through the runtime, and
// its numbers match a reference written here from its definition. Also: the
// registry refuses a second kind of the same name, and the combination rules
// apply to the new kind like to the built-ins.
//
//===----------------------------------------------------------------------===//
#include "ThrowawayRetention.h"

#include "miras/Compiler/Compile.h"
#include "miras/Dialect/Miras/Choices/Choice.h"
#include "miras/runtime.h"

#include "llvm/Support/FileSystem.h"
#include "llvm/Support/Path.h"

#include <gtest/gtest.h>

#include <cmath>
#include <random>
#include <vector>

using namespace miras;

namespace {

constexpr int D = 4, T = 5;

const char *kModule = R"(
module norm_ball_test {
  memory    linear(dk = 4, dv = 4);
  bias      l2;
  retention norm_ball(decay = 0.9);
  optimizer gd(lr = 0.5);
  read      after_write;
  chunk     1;
}
)";

class Choices : public ::testing::Test {
protected:
  static void SetUpTestSuite() { test::registerNormBallRetention(); }
};

/// W = A / (1 + ||A||), as the definition says, in double.
std::vector<double> mapOf(const std::vector<double> &a) {
  double norm = 0;
  for (double x : a)
    norm += x * x;
  double scale = 1.0 / (1.0 + std::sqrt(norm));
  std::vector<double> w(a.size());
  for (size_t i = 0; i < a.size(); ++i)
    w[i] = scale * a[i];
  return w;
}

TEST_F(Choices, RegistryRefusesADuplicateKind) {
  EXPECT_FALSE(test::registerNormBallRetention());
  ASSERT_NE(choices::ChoiceRegistry::get().findRetention("norm_ball"), nullptr);
  EXPECT_NE(choices::ChoiceRegistry::get().namesOf(choices::Role::Retention).find(
                "'norm_ball'"),
            std::string::npos);
}

TEST_F(Choices, NewMirrorRetentionFollowsTheMirrorRules) {
  // A mirror retention combines with gd and ftrl only: the frontend says so
  // for the new kind as for lq (the rule asks isMirror(), not a name).
  std::string source = kModule;
  source.replace(source.find("gd(lr = 0.5)"), 12, "momentum(lr = 0.5, beta = 0.9)");
  CompileOptions options;
  options.stopAfter = Stage::MLIR;
  std::string diagnostics;
  llvm::raw_string_ostream os(diagnostics);
  auto result = compileModule(source, options, os);
  ASSERT_FALSE(static_cast<bool>(result));
  llvm::consumeError(result.takeError());
  EXPECT_NE(diagnostics.find("retention 'norm_ball' is a mirror map"), std::string::npos)
      << diagnostics;
}

TEST_F(Choices, NewRetentionCompilesAndRunsLikeItsDefinition) {
  llvm::SmallString<128> dir;
  ASSERT_FALSE(llvm::sys::fs::createUniqueDirectory("miras-choices", dir));
  std::string path = (dir + "/libnorm_ball_test.so").str();
  CompileOptions options;
  options.sourceName = "norm_ball_test.miras";
  options.outputPath = path;
  std::string diagnostics;
  llvm::raw_string_ostream os(diagnostics);
  auto compiled = compileModule(kModule, options, os);
  if (!compiled) {
    os.flush();
    ADD_FAILURE() << llvm::toString(compiled.takeError()) << diagnostics;
    return;
  }
  EXPECT_EQ(compiled->kernel.states.at(0).name, "A"); // a dual state

  miras_library *lib = nullptr;
  ASSERT_EQ(miras_library_open(path.c_str(), &lib), MIRAS_OK) << miras_last_error();

  std::mt19937 rng(7);
  std::normal_distribution<float> normal(0.0f, 0.5f);
  std::vector<float> q(T * D), k(T * D), v(T * D), a0(D * D), aOut(D * D), o(T * D);
  for (auto *x : {&q, &k, &v, &a0})
    for (float &e : *x)
      e = normal(rng);
  int64_t tokens[] = {1, T, 1, D}, state[] = {1, 1, D, D};
  miras_tensor inputs[] = {
      {"q", q.data(), MIRAS_DTYPE_F32, 4, {tokens[0], tokens[1], tokens[2], tokens[3]}},
      {"k", k.data(), MIRAS_DTYPE_F32, 4, {tokens[0], tokens[1], tokens[2], tokens[3]}},
      {"v", v.data(), MIRAS_DTYPE_F32, 4, {tokens[0], tokens[1], tokens[2], tokens[3]}},
      {"A", a0.data(), MIRAS_DTYPE_F32, 4, {state[0], state[1], state[2], state[3]}}};
  miras_tensor outputs[] = {
      {"o", o.data(), MIRAS_DTYPE_F32, 4, {tokens[0], tokens[1], tokens[2], tokens[3]}},
      {"A", aOut.data(), MIRAS_DTYPE_F32, 4, {state[0], state[1], state[2], state[3]}}};
  ASSERT_EQ(miras_library_forward(lib, inputs, 4, outputs, 2), MIRAS_OK)
      << miras_last_error();
  miras_library_close(lib);
  llvm::sys::fs::remove_directories(dir);

  // The reference: A' = 0.9 A - 0.5 (W k - v) k^T with W = map(A) (the l2
  // gradient at the mapped weights), o = map(A') q.
  std::vector<double> a(a0.begin(), a0.end());
  for (int t = 0; t < T; ++t) {
    std::vector<double> w = mapOf(a);
    for (int i = 0; i < D; ++i) {
      double e = -v[t * D + i];
      for (int j = 0; j < D; ++j)
        e += w[i * D + j] * k[t * D + j];
      for (int j = 0; j < D; ++j)
        a[i * D + j] = 0.9 * a[i * D + j] - 0.5 * e * k[t * D + j];
    }
    std::vector<double> wNew = mapOf(a);
    for (int i = 0; i < D; ++i) {
      double expected = 0;
      for (int j = 0; j < D; ++j)
        expected += wNew[i * D + j] * q[t * D + j];
      EXPECT_NEAR(o[t * D + i], expected, 1e-5 * (1 + std::fabs(expected)))
          << "o at t = " << t << ", i = " << i;
    }
  }
  for (int i = 0; i < D * D; ++i)
    EXPECT_NEAR(aOut[i], a[i], 1e-5 * (1 + std::fabs(a[i]))) << "A[" << i << "]";
}

} // namespace
