//===- StepContext.h - What a choice sees while a step is built -*- C++ -*-===//
//
// miras-derive-update builds `func.func @step` through one StepContext: the
// step's arguments by group (StepSignature), a MathBuilder positioned in its
// body, and the helpers every choice needs (an argument as a value, the
// gradient of the bias through the memory, the read through a mirror map).
// The optimizer's buildUpdate() drives the update and asks the retention's
// RetentionStep; the memory builds f(W; z) wherever it is applied.
//
//===----------------------------------------------------------------------===//
#ifndef MIRAS_DIALECT_MIRAS_CHOICES_STEPCONTEXT_H
#define MIRAS_DIALECT_MIRAS_CHOICES_STEPCONTEXT_H

#include "miras/Dialect/Miras/Choices/Choice.h"
#include "miras/Dialect/Miras/IR/MirasOps.h"
#include "miras/Dialect/Miras/IR/StepSignature.h"
#include "miras/Dialect/Miras/Transforms/MathBuilder.h"

#include "llvm/ADT/StringMap.h"

namespace miras {

class StepContext {
public:
  StepContext(MemoryModuleOp module, const StepSignature &signature,
              mlir::func::FuncOp step, mlir::OpBuilder &builder, bool simplify);

  MathBuilder &math() { return mb; }
  MemoryModuleOp getModule() { return module; }
  const StepSignature &signature() const { return sig; }

  MemoryOp memoryOp() { return memory; }
  RetentionOp retentionOp() { return retention; }
  OptimizerOp optimizerOp() { return optimizer; }
  const choices::ArgLookup &memoryArgs() const { return memoryLookup; }
  const choices::ArgLookup &retentionArgs() const { return retentionLookup; }
  const choices::ArgLookup &optimizerArgs() const { return optimizerLookup; }

  /// Ops built from here on point at that component's declaration.
  void at(mlir::Operation *component) { mb.setLoc(component->getLoc()); }

  /// A component argument as a value: its number as a constant, or the
  /// current token's gate value; `fallback` when it is absent.
  mlir::Value rate(mlir::Operation *component, llvm::StringRef name,
                   double fallback = 1.0);

  /// `decay ⊙ matrix`: a scalar, or a channel gate scaling the columns (dk)
  /// or the rows (dv) of W.
  mlir::Value applyDecay(mlir::Value decay, mlir::Value matrix);
  /// `rate * gradient`, keeping the rank-1 structure of a linear memory's
  /// gradient: (rate psi) k^T rather than a scaled D x D matrix.
  mlir::Value scaled(mlir::Value rate, mlir::Value gradient);

  /// g_i = dL/dW_i of the bias at f(W; key) against `target`: reverse mode
  /// seeded by the loss, or by the error signal for error-signal biases.
  mlir::FailureOr<llvm::SmallVector<mlir::Value>>
  gradient(mlir::ValueRange point, mlir::Value key, mlir::Value target);
  /// f(W; z) of the module's memory.
  mlir::Value forward(mlir::ValueRange weights, mlir::Value z);
  /// The weights as the memory sees them: through the mirror map, if any.
  llvm::SmallVector<mlir::Value> primal(mlir::ValueRange states);

  // The step's arguments.
  mlir::ValueRange weights() { return sig.weightValues(entry); }
  mlir::ValueRange extraStates(unsigned group) {
    return sig.extraStateValues(entry, group);
  }
  /// Where gradients are taken: the anchors when chunk > 1, else the weights.
  mlir::ValueRange anchors() {
    return sig.numAnchors() ? sig.anchorValues(entry) : weights();
  }
  mlir::Value query() { return entry.getArgument(sig.queryArg()); }
  mlir::Value key() { return entry.getArgument(sig.keyArg()); }
  mlir::Value value() { return entry.getArgument(sig.valueArg()); }
  int64_t steps() { return module.getSteps(); }
  /// Row `index` of a per-step input (multistep), or element `index` of a
  /// per-step gate.
  mlir::Value stepRow(mlir::Value perStep, int64_t index);

private:
  /// The bias region inlined with prediction y and target `target`.
  mlir::Value inlineBias(BiasOp bias, mlir::Value y, mlir::Value target);
  GateOp lookupGate(mlir::Value gateArg);

  MemoryModuleOp module;
  const StepSignature &sig;
  mlir::Block &entry;
  MathBuilder mb;
  MemoryOp memory;
  RetentionOp retention;
  OptimizerOp optimizer;
  choices::ArgLookup memoryLookup, retentionLookup, optimizerLookup;
  llvm::StringMap<mlir::Value> gates;
};

} // namespace miras

#endif
