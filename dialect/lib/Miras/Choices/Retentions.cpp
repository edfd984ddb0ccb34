//===- Retentions.cpp - How the old state is kept (SPEC section 5) --------===//
//
// One class per retention: its arguments, the optimizers and memories it
// combines with, and what it does inside a step (RetentionStep). Mirror
// retentions keep a dual state A, updated A' = decay A - lr g, and read the
// weights through their map W = map(A); the others update W itself.
//
//===----------------------------------------------------------------------===//
#include "miras/Dialect/Miras/Choices/Choice.h"
#include "miras/Dialect/Miras/Choices/StepContext.h"

#include "mlir/IR/IRMapping.h"

#include <cmath>

using namespace mlir;
using namespace miras;
using namespace miras::choices;

namespace {

ArgSpec unitDecay(const char *defaultValue) {
  return {"decay", kNumber | kScalarGate, defaultValue, choices::Range::UnitInterval};
}

/// "optimizer 'X' is declared here", after an error at the retention.
void noteOptimizer(const ModuleChoices &m, ChoiceReporter &r) {
  r.note(Role::Optimizer,
         std::string("optimizer '") + m.optimizer.name() + "' is declared here");
}

/// Rejects optimizers other than gd for a retention whose closed form is one
/// gd step; `why` completes "retention 'X' ...".
void requireGradientDescent(const ModuleChoices &m, ChoiceReporter &r,
                            const std::string &why) {
  if (m.optimizer.isGradientDescent())
    return;
  r.error(Role::Retention, "",
          "retention '" + std::string(m.retention.name()) + "' " + why +
              ", but the optimizer is '" + m.optimizer.name() + "'");
  noteOptimizer(m, r);
}

/// Rejects a memory whose state is a vector, for a retention that normalises
/// the rows of matrices.
void rejectVectorState(const ModuleChoices &m, ChoiceReporter &r) {
  if (!m.memory.hasVectorState())
    return;
  r.error(Role::Retention, "",
          std::string("retention '") + m.retention.name() +
              "' normalises each row of a matrix, but a " + m.memory.name() +
              " memory's state is a vector");
  r.note(Role::Memory,
         std::string("memory '") + m.memory.name() + "' is declared here");
}

class NoRetention final : public RetentionChoice {
public:
  const char *name() const override { return "none"; }
  const char *summary() const override { return "Nothing is forgotten."; }
  const char *math() const override {
    return "`W_t = W_{t-1} - lr g_t` (with gd): the state only accumulates.";
  }
  bool actsOnlyBeforeGradient(const ArgLookup &) const override { return true; }
};

/// l2: `W' = decay W - lr g(W)` (decoupled) or `W' = decay W - lr g(decay W)`
/// (before the gradient: the decay inside the delta step).
class L2Retention final : public RetentionChoice {
public:
  const char *name() const override { return "l2"; }
  const char *summary() const override {
    return "A decay of the state (weight decay; Mamba2, Gated DeltaNet, GLA).";
  }
  const char *math() const override {
    return "`decoupled`: `W_t = a_t W_{t-1} - lr_t g(W_{t-1})`; `before_gradient`:\n"
           "`W_t = a_t W_{t-1} - lr_t g(a_t W_{t-1})`, the gradient taken at the\n"
           "decayed state (Gated DeltaNet). `decay` is a number, a scalar gate, or\n"
           "a channel gate scaling the columns (`dk`) or the rows (`dv`) of W\n"
           "(GLA, RWKV-7). `before_gradient` needs a linear memory.";
  }
  std::vector<ArgSpec> args() const override {
    return {{"decay", kNumber | kScalarGate | kChannelGate, nullptr,
             choices::Range::UnitInterval},
            {"order", kKeyword, "decoupled", choices::Range::Any,
             {"decoupled", "before_gradient"}}};
  }
  void checkCombination(const ModuleChoices &m, ChoiceReporter &r) const override {
    if (!decaysFirst(m.retentionArgs) || m.memory.isLinear())
      return;
    r.error(Role::Retention, "order",
            "order = before_gradient needs a linear memory (the decay is applied "
            "inside the delta step), but this module has memory '" +
                std::string(m.memory.name()) + "'");
    r.note(Role::Memory,
           std::string("memory '") + m.memory.name() + "' is declared here");
  }
  bool actsOnlyBeforeGradient(const ArgLookup &args) const override {
    return decaysFirst(args);
  }
  static bool decaysFirst(const ArgLookup &args) {
    return args.keyword("order", "decoupled") == "before_gradient";
  }

  class Step final : public RetentionStep {
  public:
    Step(StepContext &ctx, bool first)
        : RetentionStep(ctx), first(first),
          decay(ctx.rate(ctx.retentionOp(), "decay")) {}
    Value beforeGradient(Value state) override {
      return first ? ctx.applyDecay(decay, state) : state;
    }
    Value retain(Value state, Value kept) override {
      return first ? kept : ctx.applyDecay(decay, state);
    }

  private:
    bool first;
    Value decay;
  };
  std::unique_ptr<RetentionStep> beginStep(StepContext &ctx) const override {
    return std::make_unique<Step>(ctx, decaysFirst(ctx.retentionArgs()));
  }
};

/// l2 coupled with the step: argmin <g, W> + |W - W'|^2 / (2 lr) + |W|^2 / (2 s).
class L2CoupledRetention final : public RetentionChoice {
public:
  const char *name() const override { return "l2_coupled"; }
  const char *summary() const override {
    return "l2 regularisation solved exactly with the gd step.";
  }
  const char *math() const override {
    return "`W_t = s / (s + lr) W_{t-1} - s lr / (s + lr) g_t`, the minimiser of\n"
           "`<g, W> + ||W - W_{t-1}||^2 / (2 lr) + ||W||^2 / (2 s)` with `s` the\n"
           "`strength`. One gd step, so no optimizer that carries extra states.";
  }
  std::vector<ArgSpec> args() const override {
    return {{"strength", kNumber | kScalarGate, nullptr, choices::Range::Positive}};
  }
  void checkCombination(const ModuleChoices &m, ChoiceReporter &r) const override {
    if (m.optimizer.extraStates().empty())
      return;
    r.error(Role::Retention, "",
            std::string("retention 'l2_coupled' is the exact minimiser of a "
                        "single gd step and does not combine with optimizer '") +
                m.optimizer.name() + "' (use 'l2(decay = ...)' for decoupled decay)");
    r.note(Role::Optimizer, std::string("optimizer '") + m.optimizer.name() +
                                "' is declared here");
  }

  class Step final : public RetentionStep {
  public:
    using RetentionStep::RetentionStep;
    void setRate(Value rate) override {
      MathBuilder &mb = ctx.math();
      Value s = ctx.rate(ctx.retentionOp(), "strength");
      Value denom = mb.add(s, rate);
      keep = mb.div(s, denom);
      lr = mb.div(mb.mul(s, rate), denom);
    }
    Value retain(Value state, Value) override {
      return ctx.math().mul(ctx.math().broadcast(keep, state.getType()), state);
    }

  private:
    Value keep;
  };
  std::unique_ptr<RetentionStep> beginStep(StepContext &ctx) const override {
    return std::make_unique<Step>(ctx);
  }
};

/// The shared part of the mirror retentions: a dual A, A' = decay A - lr g.
/// (Which optimizers a mirror map combines with is a rule of every mirror
/// retention, checkCombination in Registry.cpp.)
class MirrorRetention : public RetentionChoice {
public:
  bool isMirror() const override { return true; }

  class Step final : public RetentionStep {
  public:
    explicit Step(StepContext &ctx)
        : RetentionStep(ctx), decay(ctx.rate(ctx.retentionOp(), "decay")) {}
    Value retain(Value state, Value) override {
      return ctx.applyDecay(decay, state);
    }

  private:
    Value decay;
  };
  std::unique_ptr<RetentionStep> beginStep(StepContext &ctx) const override {
    return std::make_unique<Step>(ctx);
  }
};

/// Moneta: W = A / ||A||_q^(q-2).
class LqRetention final : public MirrorRetention {
public:
  const char *name() const override { return "lq"; }
  const char *summary() const override {
    return "The lq mirror map (Moneta): `W = A / ||A||_q^(q-2)`.";
  }
  const char *math() const override {
    return "The dual `A_t = decay_t A_{t-1} - lr_t g_t` is carried; the weights\n"
           "are `W = A / ||A||_q^(q-2)` over all entries of each weight (`q = 2`\n"
           "is the identity). For `q > 2` the map has no limit at `A = 0`; it is\n"
           "defined as `0` there.";
  }
  std::vector<ArgSpec> args() const override {
    return {{"q", kNumber, nullptr, choices::Range::GreaterThanOne}, unitDecay("1")};
  }
  Value buildMirrorMap(StepContext &ctx, Value dual) const override {
    MathBuilder &mb = ctx.math();
    Type f32 = mb.getBuilder().getF32Type();
    // W = A / ||A||_q^(q-2) = A * (sum |A|^q)^(-(q-2)/q)
    double q = ctx.retentionArgs().number("q", 2);
    if (q == 2)
      return dual;
    // |A|^q: the absolute value is redundant for even integer q.
    bool evenInteger = q == std::floor(q) && static_cast<int64_t>(q) % 2 == 0;
    Value magnitude = evenInteger ? dual : mb.abs(dual);
    Value total = mb.sum(mb.pow(magnitude, mb.constant(dual.getType(), q)));
    // For q > 2 the map has no limit at A = 0 (|W| grows like |A|^(3-q));
    // we define map(0) = 0 rather than let 0 * inf poison the state.
    Value zero = mb.constant(f32, 0.0);
    Value power = mb.pow(total, mb.constant(f32, -(q - 2) / q));
    Value scale = mb.select(mb.compare(arith::CmpFPredicate::OGT, total, zero), power, zero);
    return mb.mul(mb.broadcast(scale, dual.getType()), dual);
  }
};

/// Memora: a softmax over each row.
class KlRetention final : public MirrorRetention {
public:
  const char *name() const override { return "kl"; }
  const char *summary() const override {
    return "The KL mirror map (Memora): each row of W a softmax of A's row.";
  }
  const char *math() const override {
    return "The dual `A_t = decay_t A_{t-1} - lr_t g_t` is carried; each row of\n"
           "each weight is `W_i = softmax(A_i)` (shifted by the row maximum), a\n"
           "point of the simplex. Needs matrix weights.";
  }
  std::vector<ArgSpec> args() const override { return {unitDecay("1")}; }
  void checkCombination(const ModuleChoices &m, ChoiceReporter &r) const override {
    rejectVectorState(m, r);
  }
  Value buildMirrorMap(StepContext &ctx, Value dual) const override {
    MathBuilder &mb = ctx.math();
    Value shift = mb.broadcast(mb.rowMax(dual), dual.getType(), /*axis=*/0);
    Value weights = mb.exp(mb.sub(dual, shift));
    Value norm = mb.broadcast(mb.rowSum(weights), dual.getType(), /*axis=*/0);
    return mb.div(weights, norm);
  }
};

/// FTRL with an elastic net (dual averaging): W = S_{eta/a}(A).
class FtrlElasticRetention final : public MirrorRetention {
public:
  const char *name() const override { return "ftrl_elastic"; }
  const char *summary() const override {
    return "Dual averaging with an elastic net: `W = S_{eta/a}(A)`.";
  }
  const char *math() const override {
    return "The dual `A_t = decay_t A_{t-1} - lr_t g_t` is carried and read as\n"
           "the soft threshold `W = S_{eta/a}(A) = sign(A) max(0, |A| - eta/a)`.\n"
           "`eta` and `a` are numbers (the threshold is a constant of the map).";
  }
  std::vector<ArgSpec> args() const override {
    return {{"eta", kNumber, nullptr, choices::Range::Positive},
            {"a", kNumber, nullptr, choices::Range::Positive},
            unitDecay("1")};
  }
  Value buildMirrorMap(StepContext &ctx, Value dual) const override {
    double threshold =
        ctx.retentionArgs().number("eta", 0) / ctx.retentionArgs().number("a", 1);
    return ctx.math().softThreshold(dual,
                                    ctx.math().constant(dual.getType(), threshold));
  }
};

/// A separable Bregman divergence: W = (phi')^{-1}(A), element-wise.
class BregmanRetention final : public MirrorRetention {
public:
  const char *name() const override { return "bregman"; }
  const char *summary() const override {
    return "A separable Bregman divergence: `W = (phi')^{-1}(A)` element-wise.";
  }
  const char *math() const override {
    return "The dual `A_t = decay_t A_{t-1} - lr_t g_t` is carried and read through\n"
           "an element-wise inverse map: `sigmoid` (phi the negative binary\n"
           "entropy), `exp` (negative entropy), `tanh`, or a user map written\n"
           "`map(A) = <element-wise expression of A>`. A user map must be finite at\n"
           "the values the declared start takes (zeros: 0; identity: 0 and its\n"
           "scale; uniform: its value; normal: 0 and one deviation either side):\n"
           "`map(A) = log(A)` needs, e.g., `init A = uniform(1);`.";
  }
  std::vector<ArgSpec> args() const override {
    return {{"map", kKeyword | kFunction, nullptr, choices::Range::Any,
             {"sigmoid", "exp", "tanh"}},
            unitDecay("1")};
  }
  Value buildMirrorMap(StepContext &ctx, Value dual) const override {
    MathBuilder &mb = ctx.math();
    std::string map = ctx.retentionArgs().keyword("map", "");
    if (map == "user")
      return applyUserMap(ctx, dual);
    if (map == "exp")
      return mb.exp(dual);
    if (map == "tanh")
      return mb.tanh(dual);
    Type t = dual.getType(); // sigmoid (the argument table admits nothing else)
    Value expNeg = mb.exp(mb.neg(dual));
    Value denominator = mb.add(mb.constant(t, 1.0), expNeg);
    return mb.div(mb.constant(t, 1.0), denominator);
  }

private:
  /// The module's miras.mirror_map applied element-wise to `dual`: each scalar
  /// op of the region is rebuilt on the tensor, scalar constants broadcast.
  static Value applyUserMap(StepContext &ctx, Value dual) {
    MathBuilder &mb = ctx.math();
    Block &body = ctx.getModule().getComponent<MirrorMapOp>().getBody().front();
    OpBuilder &b = mb.getBuilder();
    Type tensor = dual.getType();
    IRMapping mapping;
    mapping.map(body.getArgument(0), dual);
    for (Operation &op : body.without_terminator()) {
      if (isa<arith::ConstantOp>(op)) {
        b.clone(op, mapping);
        continue;
      }
      SmallVector<Value> operands;
      for (Value operand : op.getOperands())
        operands.push_back(mb.broadcast(mapping.lookup(operand), tensor));
      OperationState state(op.getLoc(), op.getName());
      state.addOperands(operands);
      state.addAttributes(op.getAttrs());
      state.addTypes(tensor);
      mapping.map(op.getResult(0), b.create(state)->getResult(0));
    }
    return mb.broadcast(
        mapping.lookup(cast<YieldOp>(body.getTerminator()).getValue()), tensor);
  }
};

/// f-divergence on the simplex with g = exp: the exponentiated gradient.
class FDivRetention final : public RetentionChoice {
public:
  const char *name() const override { return "f_div"; }
  const char *summary() const override {
    return "An f-divergence on the simplex; `g = exp` is the exponentiated "
           "gradient.";
  }
  const char *math() const override {
    return "`W_t = W_{t-1} * g(-zeta - lr g_t)` element-wise, with `zeta`\n"
           "normalising each row to sum 1. Only `g = exp` has a closed-form\n"
           "`zeta` (`W_t` row `i` proportional to `W_{t-1,i} exp(-lr g_i)`);\n"
           "`chi2` and `hellinger` need a root search and are rejected. One gd\n"
           "step; needs matrix weights. The start must have entries >= 0 and no\n"
           "zero row (from zeros every row is 0/0): declare `init W = uniform;`\n"
           "(each entry 1/dk, every row on the simplex); a module that starts\n"
           "elsewhere is rejected, even when the host passes its own W.";
  }
  std::vector<ArgSpec> args() const override {
    return {{"g", kKeyword, "exp", choices::Range::Any, {"exp", "chi2", "hellinger"}}};
  }
  void checkCombination(const ModuleChoices &m, ChoiceReporter &r) const override {
    std::string g = m.retentionArgs.keyword("g", "exp");
    if (g != "exp")
      r.error(Role::Retention, "g",
              "f_div(g = " + g +
                  ") has no closed-form step: the row normaliser zeta solving "
                  "sum_j W_ij g(-zeta_i - lr g_ij) = 1 needs a root search; only "
                  "g = exp (the exponentiated gradient) has one");
    requireGradientDescent(m, r, "renormalises one gd step");
    rejectVectorState(m, r);
  }

  class Step final : public RetentionStep {
  public:
    using RetentionStep::RetentionStep;
    Value gdStep(Value state, Value, Value gradient) override {
      // Each row is renormalised; the row maximum of the exponent keeps exp
      // in range.
      MathBuilder &mb = ctx.math();
      Type type = state.getType();
      Value x = mb.neg(mb.mul(mb.broadcast(lr, type), gradient));
      Value shift = mb.broadcast(mb.rowMax(x), type, /*axis=*/0);
      Value scaled = mb.mul(state, mb.exp(mb.sub(x, shift)));
      return mb.div(scaled, mb.broadcast(mb.rowSum(scaled), type, /*axis=*/0));
    }
  };
  std::unique_ptr<RetentionStep> beginStep(StepContext &ctx) const override {
    return std::make_unique<Step>(ctx);
  }

  /// Each row is divided by its sum: the start needs entries >= 0 (on the
  /// simplex up to scale) and no zero row.
  std::string initProblem(const InitialWeight &weight) const override {
    const StateInit &init = weight.init;
    double s = init.scaleFor(weight.shape);
    std::string why;
    if (init.kind == StateInit::Kind::Zeros)
      why = "from zeros every row sums to 0 and its step is 0/0";
    else if (init.kind == StateInit::Kind::Normal)
      why = "a normal start has negative entries, so a row can sum to 0 or "
            "leave the simplex";
    else if (s <= 0)
      why = "a start of " + init.str() + " has entries <= 0, off the simplex";
    else if (init.kind == StateInit::Kind::Identity && weight.shape.size() == 2 &&
             weight.shape[0] > weight.shape[1])
      why = "an identity start of a " + std::to_string(weight.shape[0]) + " x " +
            std::to_string(weight.shape[1]) + " state leaves rows " +
            std::to_string(weight.shape[1]) + " to " +
            std::to_string(weight.shape[0] - 1) + " zero (0/0)";
    if (why.empty())
      return "";
    return "retention 'f_div' divides each row of '" + weight.name +
           "' by its sum, but " + why + ": declare 'init " + weight.name +
           " = uniform;' (every row 1/n, on the simplex)";
  }
};

/// Proximal elastic net: W' = S_gamma(lambda W - zeta g).
class ElasticNetRetention final : public RetentionChoice {
public:
  const char *name() const override { return "elastic_net"; }
  const char *summary() const override {
    return "A proximal elastic net: shrink, then soft-threshold.";
  }
  const char *math() const override {
    return "`W_t = S_gamma(lambda W_{t-1} - zeta g_t)` with\n"
           "`gamma = lr b / (a (lr + b))`, `lambda = b / (b + lr)`,\n"
           "`zeta = lr lambda` and `S` the soft threshold: the closed-form\n"
           "proximal step of `||W||_1 / a + ||W||^2 / (2 b)` after one gd step.";
  }
  std::vector<ArgSpec> args() const override {
    return {{"a", kNumber | kScalarGate, nullptr, choices::Range::Positive},
            {"b", kNumber | kScalarGate, nullptr, choices::Range::Positive}};
  }
  void checkCombination(const ModuleChoices &m, ChoiceReporter &r) const override {
    requireGradientDescent(m, r,
                           "is a proximal step whose closed form assumes one gd step");
  }

  class Step final : public RetentionStep {
  public:
    using RetentionStep::RetentionStep;
    void setRate(Value rate) override {
      MathBuilder &mb = ctx.math();
      Value a = ctx.rate(ctx.retentionOp(), "a"),
            b = ctx.rate(ctx.retentionOp(), "b");
      Value denom = mb.add(rate, b);
      keep = mb.div(b, denom);
      lr = mb.mul(rate, keep);
      shrink = mb.div(mb.mul(rate, b), mb.mul(a, denom));
    }
    Value retain(Value state, Value) override {
      return ctx.math().mul(ctx.math().broadcast(keep, state.getType()), state);
    }
    Value gdStep(Value state, Value kept, Value gradient) override {
      Value updated = RetentionStep::gdStep(state, kept, gradient);
      return ctx.math().softThreshold(
          updated, ctx.math().broadcast(shrink, state.getType()));
    }

  private:
    Value keep, shrink;
  };
  std::unique_ptr<RetentionStep> beginStep(StepContext &ctx) const override {
    return std::make_unique<Step>(ctx);
  }
};

} // namespace

void choices::registerRetentions(ChoiceRegistry &registry) {
  registry.add(std::make_unique<NoRetention>());
  registry.add(std::make_unique<L2Retention>());
  registry.add(std::make_unique<L2CoupledRetention>());
  registry.add(std::make_unique<LqRetention>());
  registry.add(std::make_unique<KlRetention>());
  registry.add(std::make_unique<FtrlElasticRetention>());
  registry.add(std::make_unique<BregmanRetention>());
  registry.add(std::make_unique<FDivRetention>());
  registry.add(std::make_unique<ElasticNetRetention>());
}
