//===- MathBuilder.cpp - Simplifying builder for step-level math ----------===//
#include "miras/Dialect/Miras/Transforms/MathBuilder.h"
#include "miras/Dialect/Miras/IR/LinearOps.h"
#include "miras/Dialect/Miras/IR/MirasOps.h"

#include "mlir/IR/BuiltinAttributes.h"
#include "mlir/Interfaces/SideEffectInterfaces.h"

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

//===----------------------------------------------------------------------===//
// Building without repeats
//===----------------------------------------------------------------------===//

/// Whether `a` and `b` are the same value, or two constants of one value.
static bool sameValue(Value a, Value b) {
  if (a == b)
    return true;
  auto ca = a.getDefiningOp<arith::ConstantOp>();
  auto cb = b.getDefiningOp<arith::ConstantOp>();
  return ca && cb && ca.getValue() == cb.getValue();
}

/// A side-effect-free op equal to `op` (same name, properties, attributes,
/// types, operands per sameValue) earlier in `op`'s block, or null. Only the
/// users of one non-constant operand can be equal, which keeps this cheap.
static Operation *findEarlierCopy(Operation *op) {
  if (op->getNumRegions() != 0 || !isMemoryEffectFree(op))
    return nullptr;
  auto anchor = llvm::find_if(op->getOperands(), [](Value v) {
    return !v.getDefiningOp<arith::ConstantOp>();
  });
  if (anchor == op->operand_end())
    return nullptr; // all constant: folded already, or left to CSE
  for (Operation *user : (*anchor).getUsers()) {
    if (user == op || user->getBlock() != op->getBlock() ||
        !user->isBeforeInBlock(op))
      continue;
    if (OperationEquivalence::isEquivalentTo(
            user, op,
            [](Value a, Value b) { return success(sameValue(a, b)); },
            /*markEquivalent=*/nullptr,
            OperationEquivalence::IgnoreLocations))
      return user;
  }
  return nullptr;
}

template <typename OpTy, typename... Args>
Value MathBuilder::make(Args &&...args) {
  auto op = OpTy::create(b, loc, std::forward<Args>(args)...);
  if (!simplify)
    return op->getResult(0);
  SmallVector<Value, 1> folded;
  if (succeeded(b.tryFold(op, folded)) && !folded.empty()) {
    op->erase();
    return folded.front();
  }
  // Not folded away (perhaps rewritten in place): `op` is the new op, and
  // the only one this may replace by an earlier copy.
  if (Operation *copy = findEarlierCopy(op)) {
    op->erase();
    return copy->getResult(0);
  }
  return op->getResult(0);
}

//===----------------------------------------------------------------------===//
// Constants and types
//===----------------------------------------------------------------------===//

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
  SmallVector<int64_t> dims;
  if (isa<RankedTensorType>(v.getType()))
    dims.push_back(axis);
  if (!simplify)
    return BroadcastOp::create(b, loc, type, v, b.getDenseI64ArrayAttr(dims));
  Value input[] = {v};
  bool negate = stripNegations(input);
  Value spread = make<BroadcastOp>(type, input[0], b.getDenseI64ArrayAttr(dims));
  return negate ? neg(spread) : spread;
}

std::pair<Value, Value> MathBuilder::unify(Value x, Value y) {
  if (x.getType() == y.getType())
    return {x, y};
  if (isa<RankedTensorType>(x.getType()))
    return {x, broadcast(y, x.getType())};
  return {broadcast(x, y.getType()), y};
}

//===----------------------------------------------------------------------===//
// Real-number algebra
//===----------------------------------------------------------------------===//

namespace {
/// A value read as `coefficient * rest`; `rest` is null for a constant.
struct Term {
  double coefficient;
  Value rest;
};
} // namespace

/// `v` as a constant factor times the rest: `x * c` (or `c * x`) is (c, x),
/// `-x` is (-1) times x's own split, a constant c is (c, null).
static Term split(Value v) {
  if (std::optional<double> c = MathBuilder::matchConstant(v))
    return {*c, Value()};
  if (auto negated = v.getDefiningOp<arith::NegFOp>()) {
    Term inner = split(negated.getOperand());
    return {-inner.coefficient, inner.rest};
  }
  if (auto product = v.getDefiningOp<arith::MulFOp>()) {
    if (std::optional<double> c = MathBuilder::matchConstant(product.getRhs()))
      return {*c, product.getLhs()};
    if (std::optional<double> c = MathBuilder::matchConstant(product.getLhs()))
      return {*c, product.getRhs()};
  }
  return {1.0, v};
}

/// Appends the leaves of the product tree `v` (through arith.mulf) to
/// `factors`; false once there are more than `limit`.
static bool collectFactors(Value v, SmallVectorImpl<Value> &factors,
                           size_t limit) {
  if (auto product = v.getDefiningOp<arith::MulFOp>())
    return collectFactors(product.getLhs(), factors, limit) &&
           collectFactors(product.getRhs(), factors, limit);
  factors.push_back(v);
  return factors.size() <= limit;
}

/// Whether `a` and `b` are one product up to the order and grouping of its
/// factors: reverse mode reaches x (x x) both as (g x) x and as g (x x).
static bool sameProduct(Value a, Value b) {
  if (!a || !b)
    return false;
  if (a == b)
    return true;
  if (!a.getDefiningOp<arith::MulFOp>() || !b.getDefiningOp<arith::MulFOp>())
    return false;
  constexpr size_t kMaxFactors = 16; // beyond that, not worth comparing
  SmallVector<Value> fa, fb;
  if (!collectFactors(a, fa, kMaxFactors) || !collectFactors(b, fb, kMaxFactors) ||
      fa.size() != fb.size())
    return false;
  auto byAddress = [](Value x, Value y) {
    return x.getAsOpaquePointer() < y.getAsOpaquePointer();
  };
  llvm::sort(fa, byAddress);
  llvm::sort(fb, byAddress);
  return fa == fb;
}

Value MathBuilder::scale(Type type, double coefficient, Value rest) {
  if (!rest || coefficient == 0.0)
    return constant(type, rest ? 0.0 : coefficient);
  if (coefficient == 1.0)
    return rest;
  if (coefficient == -1.0)
    return make<arith::NegFOp>(rest);
  // A rank-1 matrix is scaled on its left vector, (c a) b^T, so it stays an
  // outer product (and a negative c can still cancel against a subtraction).
  if (auto rank1 = rest.getDefiningOp<OuterOp>())
    return outer(scale(rank1.getLhs().getType(), coefficient, rank1.getLhs()),
                 rank1.getRhs());
  // The constant on the right: the operand order upstream canonicalises to.
  return make<arith::MulFOp>(rest, constant(type, coefficient));
}

Value MathBuilder::add(Value x, Value y) {
  std::tie(x, y) = unify(x, y);
  if (!simplify)
    return arith::AddFOp::create(b, loc, x, y);
  Type type = x.getType();
  Term tx = split(x), ty = split(y);
  if (!tx.rest && !ty.rest)
    return constant(type, tx.coefficient + ty.coefficient);
  if (!tx.rest && tx.coefficient == 0.0)
    return y;
  if (!ty.rest && ty.coefficient == 0.0)
    return x;
  // Like terms, c1 z + c2 z = (c1 + c2) z: reverse mode produces them
  // whenever a value is used twice (e * e).
  if (sameProduct(tx.rest, ty.rest))
    return scale(type, tx.coefficient + ty.coefficient, tx.rest);
  // ... also when one of them meets its like term further down a sum:
  // adjoints accumulate as (u + z) + z.
  for (auto [sum, term] : {std::pair(x, ty), std::pair(y, tx)}) {
    auto chain = sum.getDefiningOp<arith::AddFOp>();
    if (!chain)
      continue;
    Value other = sum == x ? y : x;
    for (auto [inner, rest] : {std::pair(chain.getLhs(), chain.getRhs()),
                               std::pair(chain.getRhs(), chain.getLhs())})
      if (sameProduct(split(inner).rest, term.rest))
        return add(rest, add(inner, other));
  }
  // A negative term is subtracted: x + (-z) = x - z.
  if (ty.rest && ty.coefficient < 0)
    return sub(x, scale(type, -ty.coefficient, ty.rest));
  if (tx.rest && tx.coefficient < 0)
    return sub(y, scale(type, -tx.coefficient, tx.rest));
  return make<arith::AddFOp>(x, y);
}

Value MathBuilder::sub(Value x, Value y) {
  std::tie(x, y) = unify(x, y);
  if (!simplify)
    return arith::SubFOp::create(b, loc, x, y);
  Type type = x.getType();
  Term tx = split(x), ty = split(y);
  if (!tx.rest && !ty.rest)
    return constant(type, tx.coefficient - ty.coefficient);
  if (!ty.rest && ty.coefficient == 0.0)
    return x;
  if (!tx.rest && tx.coefficient == 0.0)
    return neg(y);
  if (sameProduct(tx.rest, ty.rest))
    return scale(type, tx.coefficient - ty.coefficient, tx.rest);
  // x - (-z) = x + z.
  if (ty.rest && ty.coefficient < 0)
    return add(x, scale(type, -ty.coefficient, ty.rest));
  return make<arith::SubFOp>(x, y);
}

Value MathBuilder::mul(Value x, Value y) {
  std::tie(x, y) = unify(x, y);
  if (!simplify)
    return arith::MulFOp::create(b, loc, x, y);
  // Constant factors and signs are collected in front of one product:
  // (c1 x) (c2 y) = (c1 c2) (x y), so that they can merge further out.
  Term tx = split(x), ty = split(y);
  Value rest = !tx.rest   ? ty.rest
               : !ty.rest ? tx.rest
                          : make<arith::MulFOp>(tx.rest, ty.rest);
  return scale(x.getType(), tx.coefficient * ty.coefficient, rest);
}

Value MathBuilder::div(Value x, Value y) {
  std::tie(x, y) = unify(x, y);
  if (!simplify)
    return arith::DivFOp::create(b, loc, x, y);
  Term tx = split(x);
  if (!tx.rest && tx.coefficient == 0.0)
    return x;
  // (c z) / y = c (z / y): the factor joins the others outside.
  if (tx.rest && tx.coefficient != 1.0)
    return scale(x.getType(), tx.coefficient, div(tx.rest, y));
  return make<arith::DivFOp>(x, y);
}

Value MathBuilder::neg(Value x) {
  if (!simplify)
    return arith::NegFOp::create(b, loc, x);
  Term tx = split(x);
  return scale(x.getType(), -tx.coefficient, tx.rest);
}

Value MathBuilder::pow(Value x, Value p) {
  std::tie(x, p) = unify(x, p);
  if (!simplify)
    return math::PowFOp::create(b, loc, x, p);
  std::optional<double> cp = matchConstant(p);
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
  return make<math::PowFOp>(x, p);
}

//===----------------------------------------------------------------------===//
// Element-wise functions and comparisons: folded, no algebra of their own
//===----------------------------------------------------------------------===//

Value MathBuilder::sign(Value x) { return make<SignOp>(x); }
Value MathBuilder::log(Value x) { return make<math::LogOp>(x); }
Value MathBuilder::sinh(Value x) { return make<math::SinhOp>(x); }
Value MathBuilder::exp(Value x) { return make<math::ExpOp>(x); }
Value MathBuilder::tanh(Value x) { return make<math::TanhOp>(x); }
Value MathBuilder::erf(Value x) { return make<math::ErfOp>(x); }
Value MathBuilder::sqrt(Value x) { return make<math::SqrtOp>(x); }
Value MathBuilder::abs(Value x) { return make<math::AbsFOp>(x); }

Value MathBuilder::max(Value x, Value y) {
  std::tie(x, y) = unify(x, y);
  return make<arith::MaximumFOp>(x, y);
}

Value MathBuilder::min(Value x, Value y) {
  std::tie(x, y) = unify(x, y);
  return make<arith::MinimumFOp>(x, y);
}

Value MathBuilder::softThreshold(Value z, Value g) {
  return sub(z, min(max(z, neg(g)), g));
}

Value MathBuilder::compare(arith::CmpFPredicate predicate, Value x, Value y) {
  std::tie(x, y) = unify(x, y);
  return make<arith::CmpFOp>(predicate, x, y);
}

Value MathBuilder::select(Value cond, Value x, Value y) {
  std::tie(x, y) = unify(x, y);
  return make<arith::SelectOp>(cond, x, y);
}

//===----------------------------------------------------------------------===//
// Linear step-level ops: negations move out (LinearOps.h)
//===----------------------------------------------------------------------===//

Value MathBuilder::sum(Value vector) {
  if (!simplify)
    return SumOp::create(b, loc, vector);
  Value input[] = {vector};
  bool negate = stripNegations(input);
  Value total = make<SumOp>(input[0]);
  return negate ? neg(total) : total;
}

Value MathBuilder::matvec(Value matrix, Value vector) {
  int64_t rows = cast<RankedTensorType>(matrix.getType()).getDimSize(0);
  auto type = RankedTensorType::get({rows}, b.getF32Type());
  if (!simplify)
    return MatVecOp::create(b, loc, type, matrix, vector);
  Value operands[] = {matrix, vector};
  bool negate = stripNegations(operands);
  Value product = make<MatVecOp>(type, operands[0], operands[1]);
  return negate ? neg(product) : product;
}

Value MathBuilder::vecmat(Value vector, Value matrix) {
  int64_t cols = cast<RankedTensorType>(matrix.getType()).getDimSize(1);
  auto type = RankedTensorType::get({cols}, b.getF32Type());
  if (!simplify)
    return VecMatOp::create(b, loc, type, vector, matrix);
  Value operands[] = {vector, matrix};
  bool negate = stripNegations(operands);
  Value product = make<VecMatOp>(type, operands[0], operands[1]);
  return negate ? neg(product) : product;
}

Value MathBuilder::outer(Value lhs, Value rhs) {
  auto type = RankedTensorType::get(
      {cast<RankedTensorType>(lhs.getType()).getDimSize(0),
       cast<RankedTensorType>(rhs.getType()).getDimSize(0)},
      b.getF32Type());
  // (-a) b^T = -(a b^T), so that W - (-a) b^T reads W + a b^T.
  if (!simplify)
    return OuterOp::create(b, loc, type, lhs, rhs);
  Value operands[] = {lhs, rhs};
  bool negate = stripNegations(operands);
  Value product = make<OuterOp>(type, operands[0], operands[1]);
  return negate ? neg(product) : product;
}

static RankedTensorType rowsOf(Value matrix) {
  auto type = cast<RankedTensorType>(matrix.getType());
  return RankedTensorType::get({type.getDimSize(0)}, type.getElementType());
}

Value MathBuilder::rowSum(Value matrix) {
  return make<RowSumOp>(rowsOf(matrix), matrix);
}

Value MathBuilder::rowMax(Value matrix) {
  return make<RowMaxOp>(rowsOf(matrix), matrix);
}
