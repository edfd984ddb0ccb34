//===- StepCost.cpp - Arithmetic work of a derived step -------------------===//
#include "miras/Dialect/Miras/Transforms/StepCost.h"

#include "miras/Dialect/Miras/IR/MirasOps.h"
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

double countStepFlops(func::FuncOp step) {
  double flops = 0;
  step.walk([&](Operation *op) {
    if (op->getNumResults() != 1 || op->getNumOperands() == 0)
      return;
    double out = elementsOf(op->getResult(0).getType());
    if (isa<MatVecOp, VecMatOp>(op)) {
      // One multiply-add per matrix entry; the matrix is the larger operand.
      double matrix = 0;
      for (Value operand : op->getOperands())
        matrix = std::max(matrix, elementsOf(operand.getType()));
      flops += 2 * matrix;
    } else if (isa<OuterOp>(op))
      flops += out;
    else if (isa<SumOp, NormOp, RowSumOp, RowMaxOp>(op))
      flops += elementsOf(op->getOperand(0).getType());
    else if (isa<arith::ArithDialect, math::MathDialect>(op->getDialect()) &&
             isa<FloatType>(getElementTypeOrSelf(op->getResult(0).getType())))
      flops += out;
  });
  return flops;
}

} // namespace miras
