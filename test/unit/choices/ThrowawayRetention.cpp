//===- ThrowawayRetention.cpp - A retention defined by a test only --------===//
//
// What adding a retention with a non-element-wise mirror map takes: this one
// file. `norm_ball` keeps a dual A and reads W = A / (1 + ||A||) (the
// Frobenius norm of each weight: every entry of W depends on all of A), with
// the decay every mirror retention has. Nothing in the compiler names it.
//
//===----------------------------------------------------------------------===//
#include "ThrowawayRetention.h"

#include "miras/Dialect/Miras/Choices/StepContext.h"

using namespace mlir;
using namespace miras;
using namespace miras::choices;

namespace {

class NormBallRetention final : public RetentionChoice {
public:
  const char *name() const override { return "norm_ball"; }
  const char *summary() const override {
    return "Test only: `W = A / (1 + ||A||)`, a map onto the unit ball.";
  }
  const char *math() const override {
    return "`A_t = decay A_{t-1} - lr g_t`, `W = A / (1 + ||A||_F)`.";
  }
  std::vector<ArgSpec> args() const override {
    return {{"decay", kNumber | kScalarGate, "1", choices::Range::UnitInterval}};
  }
  bool isMirror() const override { return true; }
  Value buildMirrorMap(StepContext &ctx, Value dual) const override {
    MathBuilder &mb = ctx.math();
    Type f32 = mb.getBuilder().getF32Type();
    Value norm = mb.sqrt(mb.sum(mb.mul(dual, dual)));
    Value scale = mb.div(mb.constant(f32, 1.0), mb.add(mb.constant(f32, 1.0), norm));
    return mb.mul(mb.broadcast(scale, dual.getType()), dual);
  }

  class Step final : public RetentionStep {
  public:
    explicit Step(StepContext &ctx)
        : RetentionStep(ctx), decay(ctx.rate(ctx.retentionOp(), "decay")) {}
    Value retain(Value state, Value) override { return ctx.applyDecay(decay, state); }

  private:
    Value decay;
  };
  std::unique_ptr<RetentionStep> beginStep(StepContext &ctx) const override {
    return std::make_unique<Step>(ctx);
  }
};

} // namespace

bool miras::test::registerNormBallRetention() {
  return ChoiceRegistry::get().add(std::make_unique<NormBallRetention>());
}
