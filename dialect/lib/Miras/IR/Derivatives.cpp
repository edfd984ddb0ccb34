//===- Derivatives.cpp - Reverse-mode rules of upstream arith / math ops --===//
//
// DifferentiableOpInterface for ops miras does not own, attached as external
// models (the interface is implemented outside the op, registered with the
// DialectRegistry and attached when the op's dialect loads). Each op has one
// `vjp` rule below and one line in
// registerDifferentiableOpInterfaceExternalModels; docs/ADDING_A_PRIMITIVE.md
// walks through adding one.
//
// A rule gets the op, the sweep (`adjoints`) and `g`, the adjoint of the
// op's result; `r` below is the op's result.
//
//===----------------------------------------------------------------------===//
#include "miras/Dialect/Miras/IR/DifferentiableOpInterface.h"
#include "miras/Dialect/Miras/IR/MirasOps.h"
#include "miras/Dialect/Miras/Transforms/MathBuilder.h"

#include "mlir/Dialect/Arith/IR/Arith.h"
#include "mlir/Dialect/Math/IR/Math.h"
#include "mlir/IR/DialectRegistry.h"

using namespace mlir;
using namespace miras;

#include "miras/Dialect/Miras/IR/DifferentiableOpInterface.cpp.inc"

namespace {

/// The reverse-mode rule of `OpTy`; one specialisation per supported op.
template <typename OpTy>
LogicalResult vjp(OpTy op, AdjointAccumulator &adjoints, Value g);

/// Attaches vjp<OpTy> to OpTy as its DifferentiableOpInterface.
template <typename OpTy>
struct DifferentiableModel
    : DifferentiableOpInterface::ExternalModel<DifferentiableModel<OpTy>,
                                               OpTy> {
  LogicalResult accumulateAdjoints(Operation *op, AdjointAccumulator &adjoints,
                                   ValueRange resultAdjoints) const {
    return vjp(cast<OpTy>(op), adjoints, resultAdjoints.front());
  }
};

/// max / min: g goes to the operand that `predicate` picks (the left one on
/// ties), zero to the other.
LogicalResult routeByComparison(AdjointAccumulator &adjoints, Value g,
                                arith::CmpFPredicate predicate, Value lhs,
                                Value rhs) {
  MathBuilder &mb = adjoints.math();
  Value picksLhs = mb.compare(predicate, lhs, rhs);
  Value zero = mb.constant(g.getType(), 0.0);
  adjoints.accumulate(lhs, [&] { return mb.select(picksLhs, g, zero); });
  adjoints.accumulate(rhs, [&] { return mb.select(picksLhs, zero, g); });
  return success();
}

//===----------------------------------------------------------------------===//
// arith
//===----------------------------------------------------------------------===//

template <>
LogicalResult vjp(arith::AddFOp op, AdjointAccumulator &adjoints, Value g) {
  adjoints.accumulate(op.getLhs(), [&] { return g; });
  adjoints.accumulate(op.getRhs(), [&] { return g; });
  return success();
}

template <>
LogicalResult vjp(arith::SubFOp op, AdjointAccumulator &adjoints, Value g) {
  MathBuilder &mb = adjoints.math();
  adjoints.accumulate(op.getLhs(), [&] { return g; });
  adjoints.accumulate(op.getRhs(), [&] { return mb.neg(g); });
  return success();
}

template <>
LogicalResult vjp(arith::MulFOp op, AdjointAccumulator &adjoints, Value g) {
  MathBuilder &mb = adjoints.math();
  adjoints.accumulate(op.getLhs(), [&] { return mb.mul(g, op.getRhs()); });
  adjoints.accumulate(op.getRhs(), [&] { return mb.mul(g, op.getLhs()); });
  return success();
}

template <>
LogicalResult vjp(arith::DivFOp op, AdjointAccumulator &adjoints, Value g) {
  // d(a/b) = da / b - (a/b) db / b
  MathBuilder &mb = adjoints.math();
  Value a = op.getLhs(), b = op.getRhs(), r = op.getResult();
  adjoints.accumulate(a, [&] { return mb.div(g, b); });
  adjoints.accumulate(b, [&] { return mb.neg(mb.div(mb.mul(g, r), b)); });
  return success();
}

template <>
LogicalResult vjp(arith::NegFOp op, AdjointAccumulator &adjoints, Value g) {
  MathBuilder &mb = adjoints.math();
  adjoints.accumulate(op.getOperand(), [&] { return mb.neg(g); });
  return success();
}

template <>
LogicalResult vjp(arith::SelectOp op, AdjointAccumulator &adjoints, Value g) {
  MathBuilder &mb = adjoints.math();
  Value cond = op.getCondition();
  Value zero = mb.constant(g.getType(), 0.0);
  adjoints.accumulate(op.getTrueValue(),
                      [&] { return mb.select(cond, g, zero); });
  adjoints.accumulate(op.getFalseValue(),
                      [&] { return mb.select(cond, zero, g); });
  return success();
}

template <>
LogicalResult vjp(arith::CmpFOp, AdjointAccumulator &, Value) {
  return success(); // a boolean result carries no adjoint
}

template <>
LogicalResult vjp(arith::MaximumFOp op, AdjointAccumulator &adjoints,
                  Value g) {
  return routeByComparison(adjoints, g, arith::CmpFPredicate::OGE,
                           op.getLhs(), op.getRhs());
}

template <>
LogicalResult vjp(arith::MinimumFOp op, AdjointAccumulator &adjoints,
                  Value g) {
  return routeByComparison(adjoints, g, arith::CmpFPredicate::OLE,
                           op.getLhs(), op.getRhs());
}

//===----------------------------------------------------------------------===//
// math
//===----------------------------------------------------------------------===//

template <>
LogicalResult vjp(math::PowFOp op, AdjointAccumulator &adjoints, Value g) {
  MathBuilder &mb = adjoints.math();
  Value a = op.getLhs(), p = op.getRhs(), r = op.getResult();
  adjoints.accumulate(a, [&] {
    Value pMinusOne = mb.sub(p, mb.constant(p.getType(), 1.0));
    return mb.mul(g, mb.mul(p, mb.pow(a, pMinusOne)));
  });
  adjoints.accumulate(p, [&] {
    // d a^p / dp = a^p log a, taken as 0 where a <= 0 (no real log).
    Value zero = mb.constant(a.getType(), 0.0);
    Value slope = mb.mul(g, mb.mul(r, mb.log(a)));
    return mb.select(mb.compare(arith::CmpFPredicate::OGT, a, zero), slope, zero);
  });
  return success();
}

template <>
LogicalResult vjp(math::AbsFOp op, AdjointAccumulator &adjoints, Value g) {
  MathBuilder &mb = adjoints.math();
  Value x = op.getOperand();
  adjoints.accumulate(x, [&] { return mb.mul(g, mb.sign(x)); });
  return success();
}

template <>
LogicalResult vjp(math::ErfOp op, AdjointAccumulator &adjoints, Value g) {
  // d erf(x) = 2 / sqrt(pi) exp(-x^2)
  MathBuilder &mb = adjoints.math();
  Value x = op.getOperand();
  adjoints.accumulate(x, [&] {
    Value density = mb.exp(mb.neg(mb.mul(x, x)));
    return mb.mul(
        g, mb.mul(mb.constant(x.getType(), 1.1283791670955126), density));
  });
  return success();
}

template <>
LogicalResult vjp(math::TanhOp op, AdjointAccumulator &adjoints, Value g) {
  MathBuilder &mb = adjoints.math();
  Value r = op.getResult();
  adjoints.accumulate(op.getOperand(), [&] {
    Value squared = mb.mul(r, r);
    return mb.mul(g, mb.sub(mb.constant(r.getType(), 1.0), squared));
  });
  return success();
}

template <>
LogicalResult vjp(math::SqrtOp op, AdjointAccumulator &adjoints, Value g) {
  // 0.5 g / sqrt(x), with the zero subgradient at x = 0 (as for norm).
  MathBuilder &mb = adjoints.math();
  Value r = op.getResult();
  adjoints.accumulate(op.getOperand(), [&] {
    Value zero = mb.constant(r.getType(), 0.0);
    Value slope = mb.div(mb.mul(mb.constant(g.getType(), 0.5), g), r);
    return mb.select(mb.compare(arith::CmpFPredicate::OGT, r, zero), slope, zero);
  });
  return success();
}

template <>
LogicalResult vjp(math::ExpOp op, AdjointAccumulator &adjoints, Value g) {
  MathBuilder &mb = adjoints.math();
  adjoints.accumulate(op.getOperand(),
                      [&] { return mb.mul(g, op.getResult()); });
  return success();
}

template <>
LogicalResult vjp(math::LogOp op, AdjointAccumulator &adjoints, Value g) {
  MathBuilder &mb = adjoints.math();
  // log(cosh(x)) differentiates to tanh(x) directly: going through sinh /
  // cosh would overflow in float32 for |x| > 89 (kept even in the raw form,
  // since the other one is numerically wrong). The cosh then receives no
  // adjoint of its own.
  if (auto cosh = op.getOperand().getDefiningOp<math::CoshOp>()) {
    Value x = cosh.getOperand();
    adjoints.accumulate(x, [&] { return mb.mul(g, mb.tanh(x)); });
    return success();
  }
  adjoints.accumulate(op.getOperand(),
                      [&] { return mb.div(g, op.getOperand()); });
  return success();
}

template <>
LogicalResult vjp(math::CoshOp op, AdjointAccumulator &adjoints, Value g) {
  MathBuilder &mb = adjoints.math();
  Value x = op.getOperand();
  adjoints.accumulate(x, [&] { return mb.mul(g, mb.sinh(x)); });
  return success();
}

template <typename OpTy>
void attach(MLIRContext *context) {
  OpTy::template attachInterface<DifferentiableModel<OpTy>>(*context);
}

} // namespace

void miras::registerDifferentiableOpInterfaceExternalModels(
    DialectRegistry &registry) {
  registry.addExtension(+[](MLIRContext *context, arith::ArithDialect *) {
    attach<arith::AddFOp>(context);
    attach<arith::SubFOp>(context);
    attach<arith::MulFOp>(context);
    attach<arith::DivFOp>(context);
    attach<arith::NegFOp>(context);
    attach<arith::SelectOp>(context);
    attach<arith::CmpFOp>(context);
    attach<arith::MaximumFOp>(context);
    attach<arith::MinimumFOp>(context);
  });
  registry.addExtension(+[](MLIRContext *context, math::MathDialect *) {
    attach<math::PowFOp>(context);
    attach<math::AbsFOp>(context);
    attach<math::ErfOp>(context);
    attach<math::TanhOp>(context);
    attach<math::SqrtOp>(context);
    attach<math::ExpOp>(context);
    attach<math::LogOp>(context);
    attach<math::CoshOp>(context);
  });
}
