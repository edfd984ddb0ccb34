//===- StepSignature.cpp - Argument groups of the step and the kernel -----===//
#include "miras/Dialect/Miras/IR/StepSignature.h"
#include "miras/Dialect/Miras/IR/MirasOps.h"

#include "mlir/Analysis/SliceAnalysis.h"

using namespace mlir;
using namespace miras;

StepSignature StepSignature::of(MemoryModuleOp module) {
  StepSignature sig;
  MLIRContext *ctx = module.getContext();
  auto memory = module.getComponent<MemoryOp>();
  auto retention = module.getComponent<RetentionOp>();
  auto optimizer = module.getComponent<OptimizerOp>();
  SmallVector<RankedTensorType> weights = memory.getDefinition().weightTypes(
      ctx, module.getDk(), module.getDv(), argLookup(memory.getArgs(), module));
  sig.weights = weights.size();
  // SPEC section 6: W / W1.. for the weights, A / A1.. for a dual state,
  // S / S1.. next to them for momentum.
  auto nameOf = [&](const std::string &stem, size_t i) {
    return weights.size() == 1 ? stem : stem + std::to_string(i + 1);
  };
  std::string stem = retention.getDefinition().isMirror() ? "A" : "W";
  for (auto [i, type] : llvm::enumerate(weights))
    sig.states.push_back({nameOf(stem, i), type});
  for (const std::string &extra : optimizer.getDefinition().extraStates())
    for (auto [i, type] : llvm::enumerate(weights))
      sig.states.push_back({nameOf(extra, i), type});
  if (module.getChunk() > 1)
    for (auto [i, type] : llvm::enumerate(weights))
      sig.anchors.push_back({nameOf(stem, i) + "_anchor", type});
  Type f32 = Float32Type::get(ctx);
  auto vecK = RankedTensorType::get({static_cast<int64_t>(module.getDk())}, f32);
  auto vecV = RankedTensorType::get({static_cast<int64_t>(module.getDv())}, f32);
  // multistep(n): one (k, v) row per step.
  auto perStep = [&](RankedTensorType t) -> Type {
    if (module.getSteps() == 1)
      return t;
    return RankedTensorType::get(
        {static_cast<int64_t>(module.getSteps()), t.getDimSize(0)}, f32);
  };
  sig.inputs = {{"q", vecK}, {"k", perStep(vecK)}, {"v", perStep(vecV)}};
  for (GateOp gate : module.getGates())
    sig.gates.push_back({gate.getSymName().str(), gate.getValueType()});
  sig.output = vecV;
  return sig;
}

FunctionType StepSignature::functionType(MLIRContext *ctx) const {
  SmallVector<Type> args, results;
  for (const auto *group : {&states, &anchors, &inputs, &gates})
    for (const Tensor &t : *group)
      args.push_back(t.type);
  for (const Tensor &t : states)
    results.push_back(t.type);
  results.push_back(output);
  return FunctionType::get(ctx, args, results);
}

void StepSignature::nameArguments(func::FuncOp step) const {
  auto name = [&](const std::string &n) {
    return StringAttr::get(step.getContext(), n);
  };
  unsigned arg = 0;
  for (const auto *group : {&states, &anchors, &inputs, &gates})
    for (const Tensor &t : *group)
      step.setArgAttr(arg++, "miras.name", name(t.name));
  for (auto [i, t] : llvm::enumerate(states))
    step.setResultAttr(i, "miras.name", name(t.name));
  step.setResultAttr(outputResult(), "miras.name", name("o"));
}


FunctionType StepSignature::backwardFunctionType(MLIRContext *ctx) const {
  FunctionType forward = functionType(ctx);
  SmallVector<Type> args(forward.getInputs());
  args.append(forward.getResults().begin(), forward.getResults().end());
  return FunctionType::get(ctx, args, forward.getInputs());
}

void StepSignature::nameBackwardArguments(func::FuncOp backward) const {
  auto name = [&](const std::string &n) {
    return StringAttr::get(backward.getContext(), n);
  };
  unsigned arg = 0;
  for (const auto *group : {&states, &anchors, &inputs, &gates})
    for (const Tensor &t : *group) {
      backward.setArgAttr(arg, "miras.name", name(t.name));
      backward.setResultAttr(arg++, "miras.name", name("d" + t.name));
    }
  for (const Tensor &t : states)
    backward.setArgAttr(arg++, "miras.name", name("d" + t.name + "_next"));
  backward.setArgAttr(arg, "miras.name", name("do"));
}

llvm::SetVector<Operation *> miras::opsComputing(ValueRange roots) {
  BackwardSliceOptions options;
  options.inclusive = true;
  options.omitBlockArguments = true;
  llvm::SetVector<Operation *> ops;
  for (Value root : roots)
    if (Operation *def = root.getDefiningOp())
      (void)getBackwardSlice(def, &ops, options);
  return ops;
}

llvm::SetVector<Operation *> StepSignature::stateUpdateOps(func::FuncOp step) const {
  auto ret = cast<func::ReturnOp>(step.getBody().front().getTerminator());
  return opsComputing(ret.getOperands().take_front(numStates()));
}

Operation *miras::tapedProduct(func::FuncOp step, int64_t index) {
  Operation *found = nullptr;
  step.walk([&](Operation *op) {
    auto mark = op->getAttrOfType<IntegerAttr>(kTapeAttrName);
    if (mark && mark.getInt() == index) {
      found = op;
      return WalkResult::interrupt();
    }
    return WalkResult::advance();
  });
  return found;
}
