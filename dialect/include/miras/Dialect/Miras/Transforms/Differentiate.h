//===- Differentiate.h - Reverse-mode derivative of a bias ------*- C++ -*-===//
#ifndef MIRAS_DIALECT_MIRAS_TRANSFORMS_DIFFERENTIATE_H
#define MIRAS_DIALECT_MIRAS_TRANSFORMS_DIFFERENTIATE_H

#include "mlir/IR/Builders.h"
#include "mlir/IR/Value.h"
#include "llvm/ADT/SmallVector.h"

namespace miras {

/// Builds, at the builder's insertion point, the vector-Jacobian product of the
/// straight-line ops before it (in the insertion block): every `seeds` pair
/// gives a value and its adjoint (a loss and 1, or a prediction and an error
/// signal), and the result holds the adjoint of each `wrts` value (zero when
/// it does not reach a seed). Each op's vector-Jacobian product is its
/// DifferentiableOpInterface rule; with `simplify`, constants fold as
/// adjoints are built, so `0.5 * sum((W k - v)^2)` gives `(W k - v) k^T`
/// directly. Fails with a located error at an op that reaches a seed and has
/// no rule (or whose rule rejects it).
mlir::FailureOr<llvm::SmallVector<mlir::Value>>
buildGradients(mlir::OpBuilder &builder,
               llvm::ArrayRef<std::pair<mlir::Value, mlir::Value>> seeds,
               mlir::ValueRange wrts, bool simplify = true);

} // namespace miras

#endif
