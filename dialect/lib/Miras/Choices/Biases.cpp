//===- Biases.cpp - Attentional biases (inner losses) ---------------------===//
//
// One class per built-in bias (SPEC section 3). Each is written in the DSL's
// own expression language over the prediction `y`, the target `v` and its
// argument names, parsed with the file's grammar by the frontend and
// differentiated by the compiler like any user-written bias; `e` of SPEC's
// table is `(y - v)`.
//
//===----------------------------------------------------------------------===//
#include "miras/Dialect/Miras/Choices/Choice.h"

using namespace miras;
using namespace miras::choices;

namespace {

/// A bias given by its loss alone.
class LossBias : public BiasChoice {
public:
  LossBias(const char *name, const char *summary, const char *math,
           const char *loss, std::vector<ArgSpec> args = {})
      : kindName(name), oneLine(summary), text(math), lossText(loss),
        argSpecs(std::move(args)) {}
  const char *name() const override { return kindName; }
  const char *summary() const override { return oneLine; }
  const char *math() const override { return text; }
  std::vector<ArgSpec> args() const override { return argSpecs; }
  const char *loss() const override { return lossText; }

private:
  const char *kindName, *oneLine, *text, *lossText;
  std::vector<ArgSpec> argSpecs;
};

class L2Bias final : public LossBias {
public:
  L2Bias()
      : LossBias("l2", "Squared error: `L = 0.5 ||y - v||^2`.",
                 "The delta rule's loss; its signal is the error `y - v`.",
                 "0.5 * sum((y - v)^2)") {}
  bool isHalfSquaredError() const override { return true; }
};

/// lp: |e|^p, or for p < 2 (and when asked) the smoothed signal
/// p tanh(kappa e) (e^2 + eps)^((p-1)/2), which is defined at e = 0.
class LpBias final : public BiasChoice {
public:
  const char *name() const override { return "lp"; }
  const char *summary() const override {
    return "The p-norm loss `L = sum |y - v|^p` (Moneta's attentional bias).";
  }
  const char *math() const override {
    return "For `p >= 2` without `smooth` the loss is differentiated as written.\n"
           "For `p < 2`, or with `smooth`, the error signal is the smoothed\n"
           "`psi = p tanh(kappa e) (e^2 + eps)^((p - 1) / 2)` (SPEC's smooth\n"
           "approximation of `p sign(e) |e|^(p-1)`), defined at `e = 0`.";
  }
  std::vector<ArgSpec> args() const override {
    return {{"p", kNumber, nullptr, choices::Range::Positive},
            {"smooth", kFlag, "0"},
            {"kappa", kNumber, "10", choices::Range::Positive},
            {"eps", kNumber, "1e-6", choices::Range::NonNegative}};
  }
  const char *loss() const override { return "sum(abs(y - v)^p)"; }
  const char *signal() const override {
    return "p * tanh(kappa * (y - v)) * ((y - v)^2 + eps)^((p - 1) / 2)";
  }
  bool usesSignal(const ArgLookup &a) const override {
    return a.flag("smooth") || a.number("p", 2) < 2;
  }
};

/// Yaad: l2's signal while the error is small, a smoothed delta * Sign(e)
/// (l1's) beyond delta.
class YaadMixBias final : public BiasChoice {
public:
  const char *name() const override { return "yaad_mix"; }
  const char *summary() const override {
    return "Yaad's switch: the l2 signal inside `||e|| <= delta`, a smoothed "
           "`delta sign(e)` outside.";
  }
  const char *math() const override {
    return "`psi = where(||y - v|| <= delta, y - v, delta tanh(kappa (y - v)))`:\n"
           "an error signal (no loss). At the switch the subgradient is the\n"
           "branch taken.";
  }
  std::vector<ArgSpec> args() const override {
    return {{"delta", kNumber | kScalarGate, nullptr, choices::Range::Positive},
            {"kappa", kNumber, "10", choices::Range::Positive}};
  }
  const char *loss() const override { return nullptr; }
  const char *signal() const override {
    return "where(norm(y - v) <= delta, y - v, delta * tanh(kappa * (y - v)))";
  }
};

ArgSpec positiveDelta() {
  return {"delta", kNumber | kScalarGate, nullptr, choices::Range::Positive};
}

} // namespace

void choices::registerBiases(ChoiceRegistry &registry) {
  registry.add(std::make_unique<LossBias>(
      "dot", "Dot-product similarity: `L = -2 <y, v>`.",
      "Linear attention's bias (Hebbian): the signal `-2 v` does not depend\n"
      "on the prediction.",
      "-2 * sum(y * v)"));
  registry.add(std::make_unique<L2Bias>());
  registry.add(std::make_unique<LpBias>());
  // The gradient of this loss is exactly clip(y - v, -delta, delta).
  registry.add(std::make_unique<LossBias>(
      "huber", "Element-wise Huber loss with threshold `delta`.",
      "Quadratic for `|e| <= delta`, linear beyond: its gradient is exactly\n"
      "`clip(y - v, -delta, delta)`.",
      "sum(min(max(y - v, -delta), delta) * "
      "((y - v) - min(max(y - v, -delta), delta) / 2))",
      std::vector<ArgSpec>{positiveDelta()}));
  registry.add(std::make_unique<LossBias>(
      "huber_norm", "Huber loss on the norm of the error.",
      "`L = m (||e|| - m / 2)` with `m = min(||e||, delta)`: the l2 step while\n"
      "`||e|| <= delta`, a step of length `delta` along `e` beyond.",
      "min(norm(y - v), delta) * (norm(y - v) - min(norm(y - v), delta) / 2)",
      std::vector<ArgSpec>{positiveDelta()}));
  registry.add(std::make_unique<LossBias>(
      "value_shift", "Squared error plus `delta ||y - v||`.",
      "`L = 0.5 ||e||^2 + delta ||e||`: the l2 signal plus a unit step of\n"
      "length `delta` along the error.",
      "0.5 * sum((y - v)^2) + delta * norm(y - v)",
      std::vector<ArgSpec>{positiveDelta()}));
  registry.add(std::make_unique<YaadMixBias>());
}
