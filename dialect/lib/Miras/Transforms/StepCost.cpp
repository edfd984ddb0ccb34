//===- StepCost.cpp - Arithmetic work of a derived step -------------------===//
#include "miras/Dialect/Miras/Transforms/StepCost.h"

#include "miras/Dialect/Miras/IR/MirasOps.h"
#include "miras/Dialect/Miras/IR/StepSignature.h"
#include "mlir/Dialect/Arith/IR/Arith.h"
#include "mlir/Dialect/Math/IR/Math.h"

#include <algorithm>

using namespace mlir;

namespace miras {

static double elementsOf(Type type) {
  if (auto shaped = dyn_cast<ShapedType>(type))
    return static_cast<double>(shaped.getNumElements());
  return 1.0;
}

/// The flops of `op` alone (0 for what is free).
static double opFlops(Operation *op) {
  if (op->getNumResults() != 1 || op->getNumOperands() == 0)
    return 0;
  double out = elementsOf(op->getResult(0).getType());
  if (isa<MatVecOp, VecMatOp>(op)) {
    // One multiply-add per matrix entry; the matrix is the larger operand.
    double matrix = 0;
    for (Value operand : op->getOperands())
      matrix = std::max(matrix, elementsOf(operand.getType()));
    return 2 * matrix;
  }
  if (isa<OuterOp>(op))
    return out;
  if (isa<SumOp, NormOp, RowSumOp, RowMaxOp>(op))
    return elementsOf(op->getOperand(0).getType());
  if (isa<arith::ArithDialect, math::MathDialect>(op->getDialect()) &&
      isa<FloatType>(getElementTypeOrSelf(op->getResult(0).getType())))
    return out;
  return 0;
}

double countStepFlops(func::FuncOp step) {
  double flops = 0;
  step.walk([&](Operation *op) { flops += opFlops(op); });
  return flops;
}

double countBackwardFlops(func::FuncOp step, func::FuncOp stepBackward) {
  double flops = countStepFlops(stepBackward);
  StepSignature signature = StepSignature::of(step->getParentOfType<MemoryModuleOp>());
  for (Operation *op : signature.stateUpdateOps(step)) // the recompute
    flops += opFlops(op);
  return flops;
}

} // namespace miras
