//===- StepCost.h - Arithmetic work of a derived step -----------*- C++ -*-===//
#ifndef MIRAS_DIALECT_MIRAS_TRANSFORMS_STEPCOST_H
#define MIRAS_DIALECT_MIRAS_TRANSFORMS_STEPCOST_H

#include "mlir/Dialect/Func/IR/FuncOps.h"

namespace miras {

/// Floating-point operations of one token's update plus read in a derived
/// `@step`, the work measure behind a benchmark's GFLOP/s. Conventions: a
/// matrix-vector product over an m x n matrix is 2mn (multiply and add), an
/// outer product mn, a reduction one per input element, every element-wise
/// arith or math op (exp, pow, ... included) one per result element;
/// broadcasts, extracts and constants are free.
double countStepFlops(mlir::func::FuncOp step);

} // namespace miras

#endif
