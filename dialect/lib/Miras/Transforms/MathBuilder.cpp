//===- MathBuilder.cpp - Simplifying builder for step-level math ----------===//
#include "miras/Dialect/Miras/Transforms/MathBuilder.h"
#include "miras/Dialect/Miras/IR/MirasOps.h"

#include "mlir/IR/BuiltinAttributes.h"

#include <cmath>

using namespace mlir;
using namespace miras;

std::optional<double> MathBuilder::matchConstant(Value v) {
  if (auto bcast = v.getDefiningOp<BroadcastOp>())
    return matchConstant(bcast.getInput());
  if (auto negated = v.getDefiningOp<arith::NegFOp>()) {
    std::optional<double> c = matchConstant(negated.getOperand());
    return c ? std::optional<double>(-*c) : std::nullopt;
  }
  auto cst = v.getDefiningOp<arith::ConstantOp>();
  if (!cst)
    return std::nullopt;
  if (auto f = dyn_cast<FloatAttr>(cst.getValue()))
    return f.getValueAsDouble();
  if (auto dense = dyn_cast<DenseFPElementsAttr>(cst.getValue()))
    if (dense.isSplat())
      return dense.getSplatValue<APFloat>().convertToDouble();
  return std::nullopt;
}

static bool isConstant(Value v, double x) {
  std::optional<double> c = MathBuilder::matchConstant(v);
  return c && *c == x;
}

Value MathBuilder::constant(Type type, double value) {
  Type f32 = b.getF32Type();
  if (auto tensor = dyn_cast<RankedTensorType>(type))
    return arith::ConstantOp::create(
        b, loc, DenseElementsAttr::get(tensor, b.getFloatAttr(f32, value)));
  return arith::ConstantOp::create(b, loc, b.getFloatAttr(f32, value));
}

Value MathBuilder::broadcast(Value v, Type type, int64_t axis) {
  if (v.getType() == type)
    return v;
  if (std::optional<double> c = simplify ? matchConstant(v) : std::nullopt)
    return constant(type, *c);
  SmallVector<int64_t> dims;
  if (isa<RankedTensorType>(v.getType()))
    dims.push_back(axis);
  return BroadcastOp::create(b, loc, type, v, b.getDenseI64ArrayAttr(dims));
}

std::pair<Value, Value> MathBuilder::unify(Value x, Value y) {
  if (x.getType() == y.getType())
    return {x, y};
  if (isa<RankedTensorType>(x.getType()))
    return {x, broadcast(y, x.getType())};
  return {broadcast(x, y.getType()), y};
}

Value MathBuilder::add(Value x, Value y) {
  std::tie(x, y) = unify(x, y);
  if (!simplify)
    return arith::AddFOp::create(b, loc, x, y);
  auto cx = matchConstant(x), cy = matchConstant(y);
  if (cx && cy)
    return constant(x.getType(), *cx + *cy);
  if (cx && *cx == 0.0)
    return y;
  if (cy && *cy == 0.0)
    return x;
  if (auto negated = y.getDefiningOp<arith::NegFOp>())
    return sub(x, negated.getOperand());
  if (auto negated = x.getDefiningOp<arith::NegFOp>())
    return sub(y, negated.getOperand());
  // Collect like terms, c1 z + c2 z = (c1 + c2) z: reverse mode produces them
  // whenever a value is used twice (e * e).
  auto split = [](Value v) -> std::pair<double, Value> {
    if (auto m = v.getDefiningOp<arith::MulFOp>())
      if (auto c = matchConstant(m.getLhs()))
        return {*c, m.getRhs()};
    return {1.0, v};
  };
  auto [c1, t1] = split(x);
  auto [c2, t2] = split(y);
  if (t1 == t2)
    return mul(constant(x.getType(), c1 + c2), t1);
  return arith::AddFOp::create(b, loc, x, y);
}

Value MathBuilder::sub(Value x, Value y) {
  std::tie(x, y) = unify(x, y);
  if (!simplify)
    return arith::SubFOp::create(b, loc, x, y);
  auto cx = matchConstant(x), cy = matchConstant(y);
  if (cx && cy)
    return constant(x.getType(), *cx - *cy);
  if (cy && *cy == 0.0)
    return x;
  if (cx && *cx == 0.0)
    return neg(y);
  if (auto negated = y.getDefiningOp<arith::NegFOp>())
    return add(x, negated.getOperand());
  return arith::SubFOp::create(b, loc, x, y);
}

Value MathBuilder::mul(Value x, Value y) {
  std::tie(x, y) = unify(x, y);
  if (!simplify)
    return arith::MulFOp::create(b, loc, x, y);
  auto cx = matchConstant(x), cy = matchConstant(y);
  if (cx && cy)
    return constant(x.getType(), *cx * *cy);
  // Pull negations out, (-a) b = -(a b), so that they can cancel.
  if (auto negated = x.getDefiningOp<arith::NegFOp>())
    return neg(mul(negated.getOperand(), y));
  if (auto negated = y.getDefiningOp<arith::NegFOp>())
    return neg(mul(x, negated.getOperand()));
  // Keep constants on the left, and merge them: c1 * (c2 * z) = (c1 c2) * z.
  if (cy) {
    std::swap(x, y);
    std::swap(cx, cy);
  }
  if (cx) {
    if (*cx == 1.0)
      return y;
    if (*cx == 0.0)
      return constant(y.getType(), 0.0);
    if (*cx == -1.0)
      return neg(y);
    if (auto inner = y.getDefiningOp<arith::MulFOp>())
      if (auto c2 = matchConstant(inner.getLhs()))
        return mul(constant(y.getType(), *cx * *c2), inner.getRhs());
  }
  return arith::MulFOp::create(b, loc, x, y);
}

Value MathBuilder::div(Value x, Value y) {
  std::tie(x, y) = unify(x, y);
  if (!simplify)
    return arith::DivFOp::create(b, loc, x, y);
  if (auto negated = x.getDefiningOp<arith::NegFOp>())
    return neg(div(negated.getOperand(), y));
  auto cx = matchConstant(x), cy = matchConstant(y);
  if (cx && cy && *cy != 0.0)
    return constant(x.getType(), *cx / *cy);
  if (cy && *cy == 1.0)
    return x;
  if (cx && *cx == 0.0)
    return x;
  return arith::DivFOp::create(b, loc, x, y);
}

Value MathBuilder::neg(Value x) {
  if (!simplify)
    return arith::NegFOp::create(b, loc, x);
  if (auto c = matchConstant(x))
    return constant(x.getType(), -*c);
  if (auto inner = x.getDefiningOp<arith::NegFOp>())
    return inner.getOperand();
  return arith::NegFOp::create(b, loc, x);
}

Value MathBuilder::pow(Value x, Value p) {
  std::tie(x, p) = unify(x, p);
  if (!simplify)
    return math::PowFOp::create(b, loc, x, p);
  auto cp = matchConstant(p);
  if (cp && *cp == 1.0)
    return x;
  if (cp && *cp == 0.0)
    return constant(x.getType(), 1.0);
  // Small integer powers by multiplication: cheaper than powf and exact for
  // negative bases.
  if (cp && *cp == 2.0)
    return mul(x, x);
  if (cp && *cp == 3.0)
    return mul(x, mul(x, x));
  if (cp && *cp == 4.0) {
    Value square = mul(x, x);
    return mul(square, square);
  }
  if (auto cx = matchConstant(x); cx && cp)
    return constant(x.getType(), std::pow(*cx, *cp));
  return math::PowFOp::create(b, loc, x, p);
}

Value MathBuilder::sign(Value x) {
  if (!simplify)
    return SignOp::create(b, loc, x);
  if (auto c = matchConstant(x))
    return constant(x.getType(), (*c > 0) - (*c < 0));
  return SignOp::create(b, loc, x);
}

Value MathBuilder::log(Value x) { return math::LogOp::create(b, loc, x); }
Value MathBuilder::sinh(Value x) { return math::SinhOp::create(b, loc, x); }
Value MathBuilder::exp(Value x) { return math::ExpOp::create(b, loc, x); }
Value MathBuilder::tanh(Value x) { return math::TanhOp::create(b, loc, x); }
Value MathBuilder::erf(Value x) { return math::ErfOp::create(b, loc, x); }
Value MathBuilder::sqrt(Value x) { return math::SqrtOp::create(b, loc, x); }
Value MathBuilder::abs(Value x) { return math::AbsFOp::create(b, loc, x); }

Value MathBuilder::max(Value x, Value y) {
  std::tie(x, y) = unify(x, y);
  return arith::MaximumFOp::create(b, loc, x, y);
}

Value MathBuilder::min(Value x, Value y) {
  std::tie(x, y) = unify(x, y);
  return arith::MinimumFOp::create(b, loc, x, y);
}

Value MathBuilder::softThreshold(Value z, Value g) {
  return sub(z, min(max(z, neg(g)), g));
}

Value MathBuilder::compare(arith::CmpFPredicate predicate, Value x, Value y) {
  std::tie(x, y) = unify(x, y);
  return arith::CmpFOp::create(b, loc, predicate, x, y);
}

Value MathBuilder::select(Value cond, Value x, Value y) {
  std::tie(x, y) = unify(x, y);
  return arith::SelectOp::create(b, loc, cond, x, y);
}

Value MathBuilder::sum(Value vector) {
  if (!simplify)
    return SumOp::create(b, loc, vector);
  if (auto c = matchConstant(vector))
    return constant(b.getF32Type(),
                    *c * cast<RankedTensorType>(vector.getType()).getNumElements());
  return SumOp::create(b, loc, vector);
}

Value MathBuilder::matvec(Value matrix, Value vector) {
  int64_t rows = cast<RankedTensorType>(matrix.getType()).getDimSize(0);
  auto type = RankedTensorType::get({rows}, b.getF32Type());
  return MatVecOp::create(b, loc, type, matrix, vector);
}

Value MathBuilder::vecmat(Value vector, Value matrix) {
  int64_t cols = cast<RankedTensorType>(matrix.getType()).getDimSize(1);
  auto type = RankedTensorType::get({cols}, b.getF32Type());
  return VecMatOp::create(b, loc, type, vector, matrix);
}

static RankedTensorType rowsOf(Value matrix) {
  auto type = cast<RankedTensorType>(matrix.getType());
  return RankedTensorType::get({type.getDimSize(0)}, type.getElementType());
}

Value MathBuilder::rowSum(Value matrix) {
  return RowSumOp::create(b, loc, rowsOf(matrix), matrix);
}

Value MathBuilder::rowMax(Value matrix) {
  return RowMaxOp::create(b, loc, rowsOf(matrix), matrix);
}

Value MathBuilder::outer(Value lhs, Value rhs) {
  // (-a) b^T = -(a b^T), so that W - (-a) b^T reads W + a b^T.
  if (auto negated = simplify ? lhs.getDefiningOp<arith::NegFOp>() : nullptr)
    return neg(outer(negated.getOperand(), rhs));
  auto type = RankedTensorType::get(
      {cast<RankedTensorType>(lhs.getType()).getDimSize(0),
       cast<RankedTensorType>(rhs.getType()).getDimSize(0)},
      b.getF32Type());
  return OuterOp::create(b, loc, type, lhs, rhs);
}
