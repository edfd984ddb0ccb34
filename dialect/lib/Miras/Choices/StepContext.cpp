//===- StepContext.cpp - What a choice sees while a step is built ---------===//
#include "miras/Dialect/Miras/Choices/StepContext.h"
#include "miras/Dialect/Miras/Transforms/Differentiate.h"

#include "mlir/IR/IRMapping.h"

using namespace mlir;
using namespace miras;

StepContext::StepContext(MemoryModuleOp module, const StepSignature &signature,
                         func::FuncOp step, OpBuilder &builder, bool simplify)
    : module(module), sig(signature), entry(step.getBody().front()),
      mb(builder, module.getLoc(), simplify),
      memory(module.getComponent<MemoryOp>()),
      retention(module.getComponent<RetentionOp>()),
      optimizer(module.getComponent<OptimizerOp>()),
      memoryLookup(argLookup(memory.getArgs(), module)),
      retentionLookup(argLookup(retention.getArgs(), module)),
      optimizerLookup(argLookup(optimizer.getArgs(), module)) {
  for (auto [gate, value] : llvm::zip(module.getGates(), sig.gateValues(entry)))
    gates[gate.getSymName()] = value;
}

Value StepContext::rate(Operation *component, StringRef name, double fallback) {
  Attribute attr =
      cast<ChoiceAttrInterface>(component->getAttr("choice")).getChoiceArgs().get(name);
  if (auto ref = dyn_cast_or_null<FlatSymbolRefAttr>(attr))
    return gates.lookup(ref.getValue());
  double value = attr ? cast<FloatAttr>(attr).getValueAsDouble() : fallback;
  return mb.constant(mb.getBuilder().getF32Type(), value);
}

Value StepContext::applyDecay(Value decay, Value matrix) {
  int64_t axis = -1;
  if (isa<RankedTensorType>(decay.getType()))
    axis = lookupGate(decay).getAxis() == "dv" ? 0 : 1;
  return mb.mul(mb.broadcast(decay, matrix.getType(), axis), matrix);
}

GateOp StepContext::lookupGate(Value gateArg) {
  for (auto &entry : gates)
    if (entry.getValue() == gateArg)
      return cast<GateOp>(SymbolTable::lookupSymbolIn(
          module, StringAttr::get(module.getContext(), entry.getKey())));
  return nullptr;
}

Value StepContext::scaled(Value rate, Value gradient) {
  if (auto outer = mb.simplifies() ? gradient.getDefiningOp<OuterOp>() : nullptr)
    return mb.outer(mb.mul(rate, outer.getLhs()), outer.getRhs());
  return mb.mul(mb.broadcast(rate, gradient.getType()), gradient);
}

Value StepContext::inlineBias(BiasOp bias, Value y, Value target) {
  OpBuilder &b = mb.getBuilder();
  Block &body = bias.getBody().front();
  IRMapping mapping;
  mapping.map(body.getArgument(0), y);
  mapping.map(body.getArgument(1), target);
  for (Operation &op : body.without_terminator()) {
    if (auto gv = dyn_cast<GateValueOp>(op)) {
      mapping.map(gv.getResult(), gates.lookup(gv.getGate()));
      continue;
    }
    b.clone(op, mapping);
  }
  return mapping.lookup(cast<YieldOp>(body.getTerminator()).getValue());
}

Value StepContext::forward(ValueRange weights, Value z) {
  return memory.getDefinition().buildForward(mb, memoryLookup, weights, z);
}

FailureOr<SmallVector<Value>> StepContext::gradient(ValueRange point, Value key,
                                                    Value target) {
  auto bias = module.getComponent<BiasOp>();
  at(memory);
  Value y = forward(point, key);
  at(bias);
  Value biasValue = inlineBias(bias, y, target);
  std::pair<Value, Value> seed =
      bias.getErrorSignal()
          ? std::make_pair(y, biasValue)
          : std::make_pair(biasValue, mb.constant(biasValue.getType(), 1.0));
  return buildGradients(mb.getBuilder(), {seed}, point, mb.simplifies());
}

SmallVector<Value> StepContext::primal(ValueRange states) {
  const choices::RetentionChoice &definition = retention.getDefinition();
  if (!definition.isMirror())
    return SmallVector<Value>(states);
  SmallVector<Value> mapped;
  for (Value state : states)
    mapped.push_back(definition.buildMirrorMap(*this, state));
  return mapped;
}

Value StepContext::stepRow(Value perStep, int64_t index) {
  OpBuilder &b = mb.getBuilder();
  auto type = cast<RankedTensorType>(perStep.getType());
  Type result = type.getRank() == 1
                    ? Type(type.getElementType())
                    : RankedTensorType::get({type.getDimSize(1)},
                                            type.getElementType());
  return ExtractOp::create(b, mb.getLoc(), result, perStep,
                           b.getI64IntegerAttr(index));
}
