//===- DeriveBackward.cpp - Derive the reverse step -----------------------===//
//
// `func.func @step_backward` from `@step`: the step's forward ops are cloned
// (their values are what the adjoints need), then reverse mode
// (buildGradients, the DifferentiableOpInterface rules) runs over them once,
// seeded by the adjoint of every step result, and returns the adjoint of
// every step argument. Nothing is per model: the step already holds the
// inner gradient, so its derivative holds the second derivatives.
//
//===----------------------------------------------------------------------===//
#include "miras/Dialect/Miras/IR/MirasOps.h"
#include "miras/Dialect/Miras/IR/StepSignature.h"
#include "miras/Dialect/Miras/Transforms/Differentiate.h"
#include "miras/Dialect/Miras/Transforms/Passes.h"

#include "mlir/Dialect/Func/IR/FuncOps.h"
#include "mlir/IR/IRMapping.h"
#include "mlir/Transforms/RegionUtils.h"

namespace miras {
#define GEN_PASS_DEF_MIRASDERIVEBACKWARD
#include "miras/Dialect/Miras/Transforms/Passes.h.inc"
} // namespace miras

using namespace mlir;
using namespace miras;

namespace {

LogicalResult deriveBackward(MemoryModuleOp module) {
  auto step = dyn_cast_or_null<func::FuncOp>(SymbolTable::lookupSymbolIn(module, "step"));
  if (!step)
    return module.emitError("no derived step function: run miras-derive-update first");
  if (SymbolTable::lookupSymbolIn(module, "step_backward"))
    return module.emitError("module already has a reverse step");
  StepSignature sig = StepSignature::of(module);
  MLIRContext *ctx = module.getContext();
  if (step.getFunctionType() != sig.functionType(ctx))
    return step.emitError("the step function does not have the module's step "
                          "signature");

  OpBuilder b(ctx);
  b.setInsertionPointAfter(step);
  auto backward = func::FuncOp::create(b, step.getLoc(), "step_backward",
                                       sig.backwardFunctionType(ctx));
  backward.setPrivate();
  sig.nameBackwardArguments(backward);
  Block *entry = backward.addEntryBlock();
  b.setInsertionPointToStart(entry);

  // The forward values, recomputed.
  Block &body = step.getBody().front();
  IRMapping mapping;
  for (unsigned i = 0; i < sig.numArgs(); ++i)
    mapping.map(body.getArgument(i), entry->getArgument(i));
  for (Operation &op : body.without_terminator())
    b.clone(op, mapping);
  auto ret = cast<func::ReturnOp>(body.getTerminator());

  SmallVector<std::pair<Value, Value>> seeds;
  for (auto [i, result] : llvm::enumerate(ret.getOperands()))
    seeds.push_back({mapping.lookupOrDefault(result),
                     entry->getArgument(sig.resultAdjointArg(i))});
  FailureOr<SmallVector<Value>> adjoints = buildGradients(
      b, seeds, entry->getArguments().take_front(sig.numArgs()), /*simplify=*/true);
  if (failed(adjoints))
    return failure();
  func::ReturnOp::create(b, step.getLoc(), *adjoints);
  // Forward values no adjoint reads are dead.
  IRRewriter rewriter(ctx);
  (void)runRegionDCE(rewriter, backward.getBody());
  return success();
}

struct DeriveBackwardPass
    : public miras::impl::MirasDeriveBackwardBase<DeriveBackwardPass> {
  void runOnOperation() override {
    for (auto module : getOperation().getOps<MemoryModuleOp>())
      if (failed(deriveBackward(module)))
        return signalPassFailure();
  }
};

} // namespace
