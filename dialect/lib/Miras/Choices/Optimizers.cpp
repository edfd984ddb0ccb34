//===- Optimizers.cpp - How one step is taken from the gradient -----------===//
//
// One class per optimizer (the memory algorithm, SPEC section 5): its
// arguments, what it requires of the other choices, the states it carries
// besides the weights, and the update it builds. All but multistep take one
// gradient per token, at the anchor (SPEC section 7), through
// GradientOptimizer below.
//
//===----------------------------------------------------------------------===//
#include "miras/Dialect/Miras/Choices/Choice.h"
#include "miras/Dialect/Miras/Choices/StepContext.h"

using namespace mlir;
using namespace miras;
using namespace miras::choices;

namespace {

ArgSpec positiveRate(const char *name) {
  return {name, kNumber | kScalarGate, nullptr, choices::Range::Positive};
}

/// One gradient per token: the retention's part before the gradient, the
/// gradient at the (retained) anchor, then per weight the optimizer's update.
class GradientOptimizer : public OptimizerChoice {
public:
  FailureOr<SmallVector<Value>> buildUpdate(StepContext &ctx) const override {
    const RetentionChoice &retention = ctx.retentionOp().getDefinition();
    ctx.at(ctx.retentionOp());
    std::unique_ptr<RetentionStep> step = retention.beginStep(ctx);
    SmallVector<Value> weights(ctx.weights()), anchors(ctx.anchors());
    SmallVector<Value> kept(weights), gradAt = ctx.primal(anchors);
    for (auto [i, w] : llvm::enumerate(weights)) {
      Value k = step->beforeGradient(w);
      if (k == w)
        continue;
      kept[i] = k;
      gradAt[i] = anchors[i] == w ? k : step->beforeGradient(gradAt[i]);
    }
    FailureOr<SmallVector<Value>> grads = ctx.gradient(gradAt, ctx.key(), ctx.value());
    if (failed(grads))
      return failure();

    ctx.at(ctx.optimizerOp());
    Rates rates = buildRates(ctx);
    ctx.at(ctx.retentionOp());
    step->setRate(rates.lr);
    SmallVector<Value> newWeights, newExtra;
    for (auto [i, w] : llvm::enumerate(weights))
      newWeights.push_back(update(ctx, *step, rates, i, w, kept[i], (*grads)[i], newExtra));
    newWeights.append(newExtra);
    return newWeights;
  }

protected:
  struct Rates {
    Value lr, beta;
  };
  /// The rates of one step, built at the optimizer's location.
  virtual Rates buildRates(StepContext &ctx) const {
    return {ctx.rate(ctx.optimizerOp(), "lr"), Value()};
  }
  /// Weight `i`'s new value; extra states go to `newExtra`.
  virtual Value update(StepContext &, RetentionStep &step, const Rates &, unsigned,
                       Value w, Value kept, Value g, SmallVector<Value> &) const {
    return step.gdStep(w, kept, g);
  }
};

class GdOptimizer final : public GradientOptimizer {
public:
  const char *name() const override { return "gd"; }
  const char *summary() const override { return "One gradient step per token."; }
  const char *math() const override {
    return "`W_t = retain(W_{t-1}) - lr_t g_t` with `g_t` the gradient of the\n"
           "bias at the state (the chunk's anchor when chunk > 1); `lr` a number\n"
           "or a scalar gate.";
  }
  std::vector<ArgSpec> args() const override { return {positiveRate("lr")}; }
  bool isGradientDescent() const override { return true; }
};

/// Longhorn: the exact minimiser of the linearised l2 step.
class ImplicitOptimizer final : public GradientOptimizer {
public:
  const char *name() const override { return "implicit"; }
  const char *summary() const override {
    return "The implicit (proximal) step of Longhorn, closed form for l2.";
  }
  const char *math() const override {
    return "`W_t = W_{t-1} - c (W_{t-1} k - v) k^T` with `c = lr / (1 + lr ||k||^2)`:\n"
           "the gradient step taken at the new state, solved exactly. Needs a\n"
           "linear memory and the l2 bias.";
  }
  std::vector<ArgSpec> args() const override { return {positiveRate("lr")}; }
  void checkCombination(const ModuleChoices &m, ChoiceReporter &r) const override {
    if (m.memory.isLinear() && m.bias && m.bias->isHalfSquaredError())
      return;
    r.error(Role::Optimizer, "",
            "optimizer 'implicit' requires a linear memory and the 'l2' bias "
            "(its closed-form step solves the l2 problem exactly), but this "
            "module has memory '" +
                std::string(m.memory.name()) + "' and bias '" + m.biasName + "'");
  }

protected:
  Rates buildRates(StepContext &ctx) const override {
    MathBuilder &mb = ctx.math();
    Value lr = ctx.rate(ctx.optimizerOp(), "lr");
    Value kk = mb.sum(mb.mul(ctx.key(), ctx.key()));
    Value lrKk = mb.mul(lr, kk);
    Value denominator = mb.add(mb.constant(lr.getType(), 1.0), lrKk);
    return {mb.div(lr, denominator), Value()};
  }
};

/// FTRL: gd on the dual of a mirror retention, nothing forgotten.
class FtrlOptimizer final : public GradientOptimizer {
public:
  const char *name() const override { return "ftrl"; }
  const char *summary() const override {
    return "Follow the regularised leader: the dual accumulates every gradient.";
  }
  const char *math() const override {
    return "`A_t = A_{t-1} - lr_t g_t`, read through the retention's mirror map:\n"
           "the accumulator form of SPEC's mirror table. Needs a mirror retention\n"
           "with decay 1.";
  }
  std::vector<ArgSpec> args() const override { return {positiveRate("lr")}; }
  bool accumulatesDual() const override { return true; }
  void checkCombination(const ModuleChoices &m, ChoiceReporter &r) const override {
    if (!m.retention.isMirror()) {
      std::vector<std::string> mirrors;
      for (const Choice *c : ChoiceRegistry::get().all(Role::Retention))
        if (static_cast<const RetentionChoice *>(c)->isMirror())
          mirrors.push_back(c->name());
      std::string list;
      for (size_t i = 0; i < mirrors.size(); ++i)
        list += (i == 0 ? "" : i + 1 == mirrors.size() ? " or " : ", ") + mirrors[i];
      r.error(Role::Optimizer, "",
              "optimizer 'ftrl' accumulates gradients in the dual state of a "
              "mirror retention (" +
                  list + "), but the retention is '" + m.retention.name() + "'");
      return;
    }
    if (!m.retentionArgs.get("decay").isNumber(1.0))
      r.error(Role::Retention, "decay",
              "optimizer 'ftrl' keeps every past gradient: the retention's "
              "decay must be 1");
  }
};

/// Titans: S_t = beta S_{t-1} - lr g_t, W_t = retain(W_{t-1}) + S_t.
class MomentumOptimizer final : public GradientOptimizer {
public:
  const char *name() const override { return "momentum"; }
  const char *summary() const override {
    return "Gradient descent with momentum (Titans).";
  }
  const char *math() const override {
    return "`S_t = beta_t S_{t-1} - lr_t g_t`, `W_t = retain(W_{t-1}) + S_t`: the\n"
           "surprise `S` is a second state per weight (named `S`, `S1`, ...).";
  }
  std::vector<ArgSpec> args() const override {
    return {positiveRate("lr"),
            {"beta", kNumber | kScalarGate, nullptr, choices::Range::ClosedUnit}};
  }
  std::vector<std::string> extraStates() const override { return {"S"}; }

protected:
  Rates buildRates(StepContext &ctx) const override {
    return {ctx.rate(ctx.optimizerOp(), "lr"), ctx.rate(ctx.optimizerOp(), "beta")};
  }
  Value update(StepContext &ctx, RetentionStep &step, const Rates &rates, unsigned i,
               Value w, Value kept, Value g,
               SmallVector<Value> &newExtra) const override {
    MathBuilder &mb = ctx.math();
    Value retained = step.retain(w, kept);
    ctx.at(ctx.optimizerOp());
    Value lrG = mb.mul(mb.broadcast(rates.lr, w.getType()), g);
    Value s = mb.sub(mb.mul(mb.broadcast(rates.beta, w.getType()), ctx.extraStates(0)[i]), lrG);
    newExtra.push_back(s);
    return mb.add(retained, s);
  }
};

/// DeltaProduct: the retention once, then n gd steps on the token's n
/// (k, v, lr) rows, each at the current state.
class MultistepOptimizer final : public GradientOptimizer {
public:
  const char *name() const override { return "multistep"; }
  const char *summary() const override {
    return "n gd steps per token on n (k, v, lr) triples (DeltaProduct).";
  }
  const char *math() const override {
    return "`W_t^(0) = retain(W_{t-1})`, `W_t^(j) = W_t^(j-1) - lr_j g(W_t^(j-1);\n"
           "k_j, v_j)`, `W_t = W_t^(n)`: keys and values carry one row per step\n"
           "(`[B, T, H, n, D]`), a gate `lr` one value per step. The retention is\n"
           "applied once before the steps (none, or l2 before the gradient);\n"
           "chunk 1 only.";
  }
  std::vector<ArgSpec> args() const override {
    return {{"n", kPosInt}, positiveRate("lr")};
  }
  int64_t stepsPerToken(const ArgLookup &a) const override {
    return static_cast<int64_t>(a.number("n", 1));
  }
  const char *perStepArg() const override { return "lr"; }
  void checkCombination(const ModuleChoices &m, ChoiceReporter &r) const override {
    if (m.retention.actsOnlyBeforeGradient(m.retentionArgs))
      return;
    r.error(Role::Retention, "",
            "multistep applies the retention once, before its steps, so it "
            "combines with 'none' or 'l2(..., order = before_gradient)' only, "
            "not '" +
                std::string(m.retention.name()) + "'");
    r.note(Role::Optimizer, "optimizer 'multistep' is declared here");
  }
  FailureOr<SmallVector<Value>> buildUpdate(StepContext &ctx) const override {
    if (ctx.steps() == 1) // multistep(1) is gd
      return GradientOptimizer::buildUpdate(ctx);
    MathBuilder &mb = ctx.math();
    ctx.at(ctx.retentionOp());
    std::unique_ptr<RetentionStep> retention =
        ctx.retentionOp().getDefinition().beginStep(ctx);
    SmallVector<Value> current;
    for (Value w : ctx.weights())
      current.push_back(retention->beforeGradient(w));
    Value lr = ctx.rate(ctx.optimizerOp(), "lr");
    for (int64_t step = 0; step < ctx.steps(); ++step) {
      ctx.at(ctx.optimizerOp());
      Value kj = ctx.stepRow(ctx.key(), step), vj = ctx.stepRow(ctx.value(), step);
      Value lrj = isa<RankedTensorType>(lr.getType()) ? ctx.stepRow(lr, step) : lr;
      FailureOr<SmallVector<Value>> grads = ctx.gradient(current, kj, vj);
      if (failed(grads))
        return failure();
      ctx.at(ctx.optimizerOp());
      for (auto [w, g] : llvm::zip(current, *grads))
        w = mb.sub(w, ctx.scaled(lrj, g));
    }
    return current;
  }
};

} // namespace

void choices::registerOptimizers(ChoiceRegistry &registry) {
  registry.add(std::make_unique<GdOptimizer>());
  registry.add(std::make_unique<ImplicitOptimizer>());
  registry.add(std::make_unique<FtrlOptimizer>());
  registry.add(std::make_unique<MultistepOptimizer>());
  registry.add(std::make_unique<MomentumOptimizer>());
}
