//===- DifferentiableOpInterface.h - Reverse-mode rule of an op -*- C++ -*-===//
//
// The interface every op that reverse mode can differentiate implements (see
// DifferentiableOpInterface.td), the view of the reverse sweep its rules get,
// and the registration of the rules of upstream arith / math ops.
//
//===----------------------------------------------------------------------===//
#ifndef MIRAS_DIALECT_MIRAS_IR_DIFFERENTIABLEOPINTERFACE_H
#define MIRAS_DIALECT_MIRAS_IR_DIFFERENTIABLEOPINTERFACE_H

#include "mlir/IR/OpDefinition.h"
#include "mlir/IR/Value.h"
#include "llvm/ADT/STLFunctionalExtras.h"

namespace mlir {
class DialectRegistry;
} // namespace mlir

namespace miras {

class MathBuilder;

/// What a derivative rule sees of the reverse sweep that runs it: the builder
/// for adjoint expressions and the adjoint table the rule adds to. Keeping
/// the table behind this class lets rules live with their ops while the
/// sweep (Differentiate.cpp) owns the bookkeeping.
class AdjointAccumulator {
public:
  virtual ~AdjointAccumulator() = default;

  /// Builds adjoint expressions at the end of the sweep, located at the op
  /// being differentiated; folds as it builds unless the sweep is raw.
  virtual MathBuilder &math() = 0;

  /// Adds the value `contribution` returns to the adjoint of `v`. Only
  /// values that depend on what the sweep differentiates with respect to
  /// have adjoints: for any other `v` (a constant, a target) the callback is
  /// not run, so nothing is built for it.
  virtual void accumulate(mlir::Value v,
                          llvm::function_ref<mlir::Value()> contribution) = 0;
};

/// Attaches DifferentiableOpInterface to the upstream arith and math ops
/// that have a derivative rule (Derivatives.cpp). Called by every tool that
/// builds a registry for the derivation (registerMirasDialects).
void registerDifferentiableOpInterfaceExternalModels(
    mlir::DialectRegistry &registry);

} // namespace miras

#include "miras/Dialect/Miras/IR/DifferentiableOpInterface.h.inc"

#endif
