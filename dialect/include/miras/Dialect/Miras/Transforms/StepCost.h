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

/// The work of a backward per token and head, by the same conventions: the
/// reverse step (`@step_backward`) plus one recompute of the state update
/// (the ops of `@step` its new states depend on, without the read). This is
/// a backward from saved checkpoints; one that recomputes them runs the
/// state update once more per token.
double countBackwardFlops(mlir::func::FuncOp step,
                          mlir::func::FuncOp stepBackward);

} // namespace miras

#endif
