//===- Differentiate.h - Reverse-mode derivative of a bias ------*- C++ -*-===//
#ifndef MIRAS_DIALECT_MIRAS_TRANSFORMS_DIFFERENTIATE_H
#define MIRAS_DIALECT_MIRAS_TRANSFORMS_DIFFERENTIATE_H

#include "mlir/IR/Builders.h"
#include "mlir/IR/Value.h"

namespace miras {

/// Builds, at the builder's insertion point, d(loss)/d(wrt) by reverse-mode
/// differentiation of the straight-line ops between `wrt` and `loss` (all in
/// the insertion block, before the insertion point). Each supported op has its
/// own vector-Jacobian rule; constants are folded as the adjoints are built so
/// the result is already simplified (`0.5 * sum((y - v)^2)` gives `y - v`).
/// Fails with a located error on an op that has no rule.
mlir::FailureOr<mlir::Value> buildGradient(mlir::OpBuilder &builder,
                                           mlir::Value loss, mlir::Value wrt);

} // namespace miras

#endif
