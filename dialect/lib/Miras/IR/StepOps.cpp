//===- StepOps.cpp - Folding and derivatives of the step-level ops --------===//
//
// What the step-level ops of MirasOps.td know about their math: their folders
// (a constant operand computed away), their canonicalisation patterns (a
// negation moved out of a linear op), and their reverse-mode rules
// (DifferentiableOpInterface). The rules of upstream arith / math ops are in
// Derivatives.cpp.
//
//===----------------------------------------------------------------------===//
#include "miras/Dialect/Miras/IR/LinearOps.h"
#include "miras/Dialect/Miras/IR/MirasOps.h"
#include "miras/Dialect/Miras/Transforms/MathBuilder.h"

#include "mlir/IR/BuiltinAttributes.h"
#include "mlir/IR/Matchers.h"
#include "mlir/IR/PatternMatch.h"

#include <cmath>

using namespace mlir;
using namespace miras;

//===----------------------------------------------------------------------===//
// Constants
//===----------------------------------------------------------------------===//

Operation *MirasDialect::materializeConstant(OpBuilder &builder,
                                             Attribute value, Type type,
                                             Location loc) {
  if (!arith::ConstantOp::isBuildableWith(value, type))
    return nullptr;
  return arith::ConstantOp::create(builder, loc, type, cast<TypedAttr>(value));
}

/// The value of a float constant or of every element of a splat constant.
static std::optional<double> splatValue(Attribute attr) {
  if (auto number = dyn_cast_if_present<FloatAttr>(attr))
    return number.getValueAsDouble();
  if (auto dense = dyn_cast_if_present<DenseFPElementsAttr>(attr))
    if (dense.isSplat())
      return dense.getSplatValue<APFloat>().convertToDouble();
  return std::nullopt;
}

/// `value` as a constant of `type`: an f32 or a splat tensor.
static TypedAttr constantOf(Type type, double value) {
  auto f32 = Float32Type::get(type.getContext());
  auto number = FloatAttr::get(f32, value);
  if (auto tensor = dyn_cast<RankedTensorType>(type))
    return DenseElementsAttr::get(tensor, number);
  return number;
}

static bool isZero(std::optional<double> value) {
  return value && *value == 0.0;
}

//===----------------------------------------------------------------------===//
// Folders
//===----------------------------------------------------------------------===//

/// A bilinear product of splat constants `a` and `b` that sums `terms`
/// products per result element, or zero if either factor is zero.
static OpFoldResult foldBilinear(Type resultType, Attribute lhs, Attribute rhs,
                                 int64_t terms) {
  std::optional<double> a = splatValue(lhs), b = splatValue(rhs);
  if (isZero(a) || isZero(b))
    return constantOf(resultType, 0.0);
  if (a && b)
    return constantOf(resultType, *a * *b * static_cast<double>(terms));
  return {};
}

OpFoldResult MatVecOp::fold(FoldAdaptor adaptor) {
  return foldBilinear(getType(), adaptor.getMatrix(), adaptor.getVector(),
                      getVector().getType().getDimSize(0));
}

OpFoldResult VecMatOp::fold(FoldAdaptor adaptor) {
  return foldBilinear(getType(), adaptor.getVector(), adaptor.getMatrix(),
                      getVector().getType().getDimSize(0));
}

OpFoldResult OuterOp::fold(FoldAdaptor adaptor) {
  return foldBilinear(getType(), adaptor.getLhs(), adaptor.getRhs(), 1);
}

OpFoldResult BroadcastOp::fold(FoldAdaptor adaptor) {
  if (std::optional<double> c = splatValue(adaptor.getInput()))
    return constantOf(getType(), *c);
  return {};
}

OpFoldResult SumOp::fold(FoldAdaptor adaptor) {
  auto type = cast<RankedTensorType>(getInput().getType());
  if (std::optional<double> c = splatValue(adaptor.getInput()))
    return constantOf(getType(),
                      *c * static_cast<double>(type.getNumElements()));
  return {};
}

OpFoldResult NormOp::fold(FoldAdaptor adaptor) {
  auto type = cast<RankedTensorType>(getInput().getType());
  if (std::optional<double> c = splatValue(adaptor.getInput()))
    return constantOf(getType(), std::fabs(*c) *
                                     std::sqrt(static_cast<double>(
                                         type.getNumElements())));
  return {};
}

OpFoldResult RowSumOp::fold(FoldAdaptor adaptor) {
  auto type = cast<RankedTensorType>(getInput().getType());
  if (std::optional<double> c = splatValue(adaptor.getInput()))
    return constantOf(getType(), *c * static_cast<double>(type.getDimSize(1)));
  return {};
}

OpFoldResult RowMaxOp::fold(FoldAdaptor adaptor) {
  if (std::optional<double> c = splatValue(adaptor.getInput()))
    return constantOf(getType(), *c);
  return {};
}

OpFoldResult ExtractOp::fold(FoldAdaptor adaptor) {
  if (std::optional<double> c = splatValue(adaptor.getInput()))
    return constantOf(getType(), *c);
  return {};
}

OpFoldResult SignOp::fold(FoldAdaptor adaptor) {
  if (std::optional<double> c = splatValue(adaptor.getInput()))
    return constantOf(getType(), (*c > 0) - (*c < 0));
  if (getInput().getDefiningOp<SignOp>())
    return getInput(); // sign(sign(x)) = sign(x)
  return {};
}

//===----------------------------------------------------------------------===//
// Canonicalisation
//===----------------------------------------------------------------------===//

bool miras::stripNegations(MutableArrayRef<Value> operands, bool *changed) {
  bool negate = false;
  for (Value &operand : operands) {
    if (auto negated = operand.getDefiningOp<arith::NegFOp>()) {
      operand = negated.getOperand();
      negate = !negate;
      if (changed)
        *changed = true;
    }
  }
  return negate;
}

namespace {

/// op(-a, b) -> -op(a, b) for an op linear in each operand: the negation
/// moves out, where a surrounding `x - (-y)` or `-(-y)` can cancel it.
template <typename OpTy>
struct HoistNegation : OpRewritePattern<OpTy> {
  using OpRewritePattern<OpTy>::OpRewritePattern;

  LogicalResult matchAndRewrite(OpTy op,
                                PatternRewriter &rewriter) const override {
    SmallVector<Value> operands(op->getOperands());
    bool changed = false;
    bool negate = stripNegations(operands, &changed);
    if (!changed)
      return failure();
    rewriter.modifyOpInPlace(op, [&] { op->setOperands(operands); });
    if (negate) {
      rewriter.setInsertionPointAfter(op);
      Value result = op->getResult(0);
      auto negated = arith::NegFOp::create(rewriter, op.getLoc(), result);
      rewriter.replaceAllUsesExcept(result, negated, negated);
    }
    return success();
  }
};

/// A broadcast of a broadcast scalar is one broadcast of the scalar.
struct ComposeBroadcasts : OpRewritePattern<BroadcastOp> {
  using OpRewritePattern::OpRewritePattern;

  LogicalResult matchAndRewrite(BroadcastOp op,
                                PatternRewriter &rewriter) const override {
    auto inner = op.getInput().getDefiningOp<BroadcastOp>();
    if (!inner || !inner.getDims().empty())
      return failure();
    rewriter.replaceOpWithNewOp<BroadcastOp>(
        op, op.getType(), inner.getInput(), rewriter.getDenseI64ArrayAttr({}));
    return success();
  }
};

} // namespace

void MatVecOp::getCanonicalizationPatterns(RewritePatternSet &patterns,
                                           MLIRContext *context) {
  patterns.add<HoistNegation<MatVecOp>>(context);
}

void VecMatOp::getCanonicalizationPatterns(RewritePatternSet &patterns,
                                           MLIRContext *context) {
  patterns.add<HoistNegation<VecMatOp>>(context);
}

void OuterOp::getCanonicalizationPatterns(RewritePatternSet &patterns,
                                          MLIRContext *context) {
  patterns.add<HoistNegation<OuterOp>>(context);
}

void BroadcastOp::getCanonicalizationPatterns(RewritePatternSet &patterns,
                                              MLIRContext *context) {
  patterns.add<HoistNegation<BroadcastOp>, ComposeBroadcasts>(context);
}

void SumOp::getCanonicalizationPatterns(RewritePatternSet &patterns,
                                        MLIRContext *context) {
  patterns.add<HoistNegation<SumOp>>(context);
}

//===----------------------------------------------------------------------===//
// Reverse-mode rules (g: the adjoint of the result)
//===----------------------------------------------------------------------===//

LogicalResult MatVecOp::accumulateAdjoints(AdjointAccumulator &adjoints,
                                           ValueRange resultAdjoints) {
  // y = A x:  dA = g x^T,  dx = A^T g
  MathBuilder &mb = adjoints.math();
  Value g = resultAdjoints.front();
  adjoints.accumulate(getMatrix(), [&] { return mb.outer(g, getVector()); });
  adjoints.accumulate(getVector(), [&] { return mb.vecmat(g, getMatrix()); });
  return success();
}

LogicalResult VecMatOp::accumulateAdjoints(AdjointAccumulator &adjoints,
                                           ValueRange resultAdjoints) {
  // r = x^T A:  dx = A g,  dA = x g^T
  MathBuilder &mb = adjoints.math();
  Value g = resultAdjoints.front();
  adjoints.accumulate(getVector(), [&] { return mb.matvec(getMatrix(), g); });
  adjoints.accumulate(getMatrix(), [&] { return mb.outer(getVector(), g); });
  return success();
}

LogicalResult OuterOp::accumulateAdjoints(AdjointAccumulator &adjoints,
                                          ValueRange resultAdjoints) {
  // M = a b^T:  da = G b,  db = G^T a
  MathBuilder &mb = adjoints.math();
  Value g = resultAdjoints.front();
  adjoints.accumulate(getLhs(), [&] { return mb.matvec(g, getRhs()); });
  adjoints.accumulate(getRhs(), [&] { return mb.vecmat(getLhs(), g); });
  return success();
}

LogicalResult BroadcastOp::accumulateAdjoints(AdjointAccumulator &adjoints,
                                              ValueRange resultAdjoints) {
  // Each input element is copied along the other dimensions: its adjoint is
  // the sum of the copies' adjoints.
  MathBuilder &mb = adjoints.math();
  Value g = resultAdjoints.front();
  adjoints.accumulate(getInput(), [&]() -> Value {
    if (getDims().empty())
      return mb.sum(g);
    if (getDims().front() == 0) // v[i] along rows: sum over j
      return mb.rowSum(g);
    // v[j] along columns: sum over i, as 1^T G.
    auto matrix = cast<RankedTensorType>(getType());
    Value ones = mb.constant(
        RankedTensorType::get({matrix.getDimSize(0)}, matrix.getElementType()),
        1.0);
    return mb.vecmat(ones, g);
  });
  return success();
}

LogicalResult SumOp::accumulateAdjoints(AdjointAccumulator &adjoints,
                                        ValueRange resultAdjoints) {
  MathBuilder &mb = adjoints.math();
  Value g = resultAdjoints.front();
  adjoints.accumulate(getInput(),
                      [&] { return mb.broadcast(g, getInput().getType()); });
  return success();
}

LogicalResult NormOp::accumulateAdjoints(AdjointAccumulator &adjoints,
                                         ValueRange resultAdjoints) {
  // d||x|| = x / ||x||, and the zero subgradient at x = 0 (a zero residual
  // must not turn the state into NaN).
  MathBuilder &mb = adjoints.math();
  Value g = resultAdjoints.front(), norm = getResult();
  adjoints.accumulate(getInput(), [&] {
    Value zero = mb.constant(norm.getType(), 0.0);
    // One builder call per statement where two operands create ops (C++ leaves the
    // order unspecified; the IR must not depend on the host compiler).
    Value slope = mb.div(g, norm);
    Value scale = mb.select(mb.compare(arith::CmpFPredicate::OGT, norm, zero), slope, zero);
    return mb.mul(mb.broadcast(scale, getInput().getType()), getInput());
  });
  return success();
}

LogicalResult RowSumOp::accumulateAdjoints(AdjointAccumulator &adjoints,
                                           ValueRange resultAdjoints) {
  MathBuilder &mb = adjoints.math();
  Value g = resultAdjoints.front();
  adjoints.accumulate(getInput(), [&] {
    return mb.broadcast(g, getInput().getType(), /*axis=*/0);
  });
  return success();
}

LogicalResult RowMaxOp::accumulateAdjoints(AdjointAccumulator &adjoints,
                                           ValueRange resultAdjoints) {
  // A row's adjoint goes to the entries equal to its maximum, split evenly
  // between ties (a subgradient, and what a softmax shift needs: any split
  // cancels there).
  MathBuilder &mb = adjoints.math();
  Value g = resultAdjoints.front();
  adjoints.accumulate(getInput(), [&] {
    Type matrix = getInput().getType();
    Value atMax =
        mb.compare(arith::CmpFPredicate::OEQ, getInput(),
                   mb.broadcast(getResult(), matrix, /*axis=*/0));
    Value zero = mb.constant(matrix, 0.0);
    Value indicator = mb.select(atMax, mb.constant(matrix, 1.0), zero);
    Value share = mb.div(g, mb.rowSum(indicator));
    return mb.mul(indicator, mb.broadcast(share, matrix, /*axis=*/0));
  });
  return success();
}

LogicalResult ExtractOp::accumulateAdjoints(AdjointAccumulator &adjoints,
                                            ValueRange resultAdjoints) {
  // The adjoint lands in row (element) `index`; e is that unit vector.
  MathBuilder &mb = adjoints.math();
  Value g = resultAdjoints.front();
  adjoints.accumulate(getInput(), [&] {
    auto input = cast<RankedTensorType>(getInput().getType());
    auto unitType =
        RankedTensorType::get({input.getDimSize(0)}, input.getElementType());
    SmallVector<float> unit(input.getDimSize(0), 0.0f);
    unit[getIndex()] = 1.0f;
    Value e = arith::ConstantOp::create(
        mb.getBuilder(), mb.getLoc(),
        DenseElementsAttr::get(unitType, llvm::ArrayRef<float>(unit)));
    if (input.getRank() == 1) // element: g e
      return mb.mul(mb.broadcast(g, unitType), e);
    return mb.outer(e, g); // row: e g^T
  });
  return success();
}

LogicalResult SignOp::accumulateAdjoints(AdjointAccumulator &,
                                         ValueRange) {
  return success(); // zero almost everywhere
}
