//===- DeriveUpdate.cpp - Derive the per-token update rule ----------------===//
//
// From the four choices of a miras.module to `func.func @step`, whose
// signature StepSignature owns:
//
//   W_g  = weights the gradient is taken at: the state (the anchor when
//          chunk > 1), through the mirror map of a mirror retention, after
//          what the retention does before the gradient (RetentionStep)
//   y    = f(W_g; k)                                       (the memory)
//   g    = dL/dW_g by reverse mode through the bias region and the memory,
//          or the VJP of f seeded with the error signal for error-signal biases
//   W'   = the optimizer's update (OptimizerChoice::buildUpdate), asking the
//          retention how the old state is kept
//   o    = f(W'; q) after write, f(W; q) before (through the map for A)
//
// The pass knows no kind by name: each step above asks the definition the
// component's attribute carries (Choices/). Every op is built at the location
// of the choice it comes from, so errors and `--emit=derived` point back into
// the .miras file.
//
//===----------------------------------------------------------------------===//
#include "miras/Dialect/Miras/Choices/StepContext.h"
#include "miras/Dialect/Miras/IR/MirasOps.h"
#include "miras/Dialect/Miras/IR/StepSignature.h"
#include "miras/Dialect/Miras/Transforms/Passes.h"

#include "mlir/Dialect/Func/IR/FuncOps.h"
#include "mlir/Transforms/RegionUtils.h"

namespace miras {
#define GEN_PASS_DEF_MIRASDERIVEUPDATE
#include "miras/Dialect/Miras/Transforms/Passes.h.inc"
} // namespace miras

using namespace mlir;
using namespace miras;

namespace {

/// The step's body: the optimizer's update, then the read.
LogicalResult buildStep(StepContext &ctx) {
  MemoryModuleOp module = ctx.getModule();
  FailureOr<SmallVector<Value>> states =
      ctx.optimizerOp().getDefinition().buildUpdate(ctx);
  if (failed(states))
    return failure();
  ctx.at(module);
  unsigned numWeights = ctx.signature().numWeights();
  SmallVector<Value> read = ctx.primal(
      module.getReadAfterWrite() ? ValueRange(*states).take_front(numWeights)
                                 : ctx.weights());
  SmallVector<Value> results(*states);
  results.push_back(ctx.forward(read, ctx.query()));
  func::ReturnOp::create(ctx.math().getBuilder(), module.getLoc(), results);
  return success();
}

struct DeriveUpdatePass
    : public miras::impl::MirasDeriveUpdateBase<DeriveUpdatePass> {
  using MirasDeriveUpdateBase::MirasDeriveUpdateBase;

  void runOnOperation() override {
    for (auto module : getOperation().getOps<MemoryModuleOp>())
      if (failed(derive(module)))
        return signalPassFailure();
  }

  LogicalResult derive(MemoryModuleOp module) {
    if (SymbolTable::lookupSymbolIn(module, "step"))
      return module.emitError("module already has a derived step function");
    MLIRContext *ctx = module.getContext();
    OpBuilder b(ctx);
    StepSignature sig = StepSignature::of(module);

    b.setInsertionPointToEnd(&module.getBody().front());
    auto step = func::FuncOp::create(b, module.getLoc(), "step",
                                     sig.functionType(ctx));
    step.setPrivate();
    sig.nameArguments(step);
    b.setInsertionPointToStart(step.addEntryBlock());

    StepContext context(module, sig, step, b, simplify);
    if (failed(buildStep(context)))
      return failure();
    // The bias's forward ops that only computed the loss value are dead now.
    IRRewriter rewriter(ctx);
    (void)runRegionDCE(rewriter, step.getBody());
    return success();
  }
};

} // namespace
