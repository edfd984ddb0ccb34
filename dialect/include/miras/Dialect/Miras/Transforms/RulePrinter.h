//===- RulePrinter.h - The derived update rule as math ----------*- C++ -*-===//
#ifndef MIRAS_DIALECT_MIRAS_TRANSFORMS_RULEPRINTER_H
#define MIRAS_DIALECT_MIRAS_TRANSFORMS_RULEPRINTER_H

#include "mlir/Dialect/Func/IR/FuncOps.h"
#include <string>

namespace miras {

/// Renders a derived `@step` function as one line of math per result, e.g.
///   W' = alpha * W - (eta * (alpha * W k - v)) k^T
///   o = W' q
/// Values are named by the `miras.name` argument/result attributes; shared
/// subexpressions are written out where used.
std::string printUpdateRule(mlir::func::FuncOp step);

/// Renders `@step_backward` the same way, one line per adjoint:
///   dW = dW_next + do q^T - ...
std::string printReverseRule(mlir::func::FuncOp backward);

} // namespace miras

#endif
