//===- MathBuilder.h - Simplifying builder for step-level math --*- C++ -*-===//
//
// Builds the element-wise arith/math ops and the miras step-level ops on f32
// scalars and f32 tensors; scalars are broadcast to the tensor operand's type.
// Both the derivation (retention and optimizer algebra) and the derivative
// rules build through it, so what `--emit=derived` prints is already close to
// the closed form a researcher would write.
//
// Simplifying (the default), every op is folded as it is created (what
// createOrFold does, OpBuilder::tryFold), so the ops' own folders run:
// upstream arith / math constant folding and identities (x * 1, -(-x), ...),
// and the miras ops' folders (a broadcast constant is a splat, the sum of a
// splat is a number, ...). An op equal to one already
// built earlier in the block is not built twice: reverse mode computes the
// same product on several paths, and only one value lets the terms below
// combine. On top of the folders it applies the algebra of real numbers that
// IEEE-exact upstream folding leaves alone or that needs new ops: constant
// factors are collected (c1 x * c2 y = (c1 c2) x y), like terms are added up
// (x + x = 2 x, also down a chain of sums), `x + 0` and `0 * x` vanish,
// negations move outwards so that `a - (-b)` cancels (through the linear
// miras ops too, LinearOps.h), and small integer powers become products.
//
//===----------------------------------------------------------------------===//
#ifndef MIRAS_DIALECT_MIRAS_TRANSFORMS_MATHBUILDER_H
#define MIRAS_DIALECT_MIRAS_TRANSFORMS_MATHBUILDER_H

#include "mlir/Dialect/Arith/IR/Arith.h"
#include "mlir/IR/Builders.h"
#include <optional>

namespace miras {

class MathBuilder {
public:
  /// With `simplify` off every call builds exactly the op it names (scalars
  /// are still broadcast to the tensor operand's type): the raw form.
  MathBuilder(mlir::OpBuilder &builder, mlir::Location loc, bool simplify = true)
      : b(builder), loc(loc), simplify(simplify) {}

  bool simplifies() const { return simplify; }

  mlir::Location getLoc() const { return loc; }
  void setLoc(mlir::Location newLoc) { loc = newLoc; }
  mlir::OpBuilder &getBuilder() { return b; }

  /// The constant value of `v` if it is a scalar constant, a splat constant or
  /// a broadcast of a constant.
  static std::optional<double> matchConstant(mlir::Value v);

  mlir::Value constant(mlir::Type type, double value);
  /// `v` broadcast to `type` (f32 -> any tensor; a vector -> a matrix along
  /// result dimension `axis`). Returns `v` itself when it already has `type`.
  mlir::Value broadcast(mlir::Value v, mlir::Type type, int64_t axis = -1);

  mlir::Value add(mlir::Value a, mlir::Value b);
  mlir::Value sub(mlir::Value a, mlir::Value b);
  mlir::Value mul(mlir::Value a, mlir::Value b);
  mlir::Value div(mlir::Value a, mlir::Value b);
  mlir::Value neg(mlir::Value a);
  mlir::Value pow(mlir::Value a, mlir::Value p);
  mlir::Value sign(mlir::Value a);
  mlir::Value log(mlir::Value a);
  mlir::Value sinh(mlir::Value a);
  mlir::Value exp(mlir::Value a);
  mlir::Value tanh(mlir::Value a);
  mlir::Value erf(mlir::Value a);
  mlir::Value sqrt(mlir::Value a);
  mlir::Value abs(mlir::Value a);
  mlir::Value max(mlir::Value a, mlir::Value b);
  mlir::Value min(mlir::Value a, mlir::Value b);
  /// S_g(z) = sign(z) max(0, |z| - g), written z - clip(z, -g, g).
  mlir::Value softThreshold(mlir::Value z, mlir::Value g);
  /// `a cmp b` element-wise (an i1 scalar or tensor).
  mlir::Value compare(mlir::arith::CmpFPredicate predicate, mlir::Value a,
                      mlir::Value b);
  /// `cond ? a : b` element-wise, `cond` from an ordered float comparison.
  mlir::Value select(mlir::Value cond, mlir::Value a, mlir::Value b);
  mlir::Value sum(mlir::Value vector);
  mlir::Value matvec(mlir::Value matrix, mlir::Value vector);
  mlir::Value outer(mlir::Value lhs, mlir::Value rhs);
  /// x^T A.
  mlir::Value vecmat(mlir::Value vector, mlir::Value matrix);
  mlir::Value rowSum(mlir::Value matrix);
  mlir::Value rowMax(mlir::Value matrix);

  /// Brings a scalar operand to the other operand's tensor type.
  std::pair<mlir::Value, mlir::Value> unify(mlir::Value a, mlir::Value b);

private:
  /// Builds `OpTy(args...)`; simplifying, folds it and reuses an equal op
  /// built before it in the block.
  template <typename OpTy, typename... Args>
  mlir::Value make(Args &&...args);

  /// `coefficient * rest` of `type`: `rest` itself for 1, its negation for
  /// -1, a constant when `rest` is null or for 0.
  mlir::Value scale(mlir::Type type, double coefficient, mlir::Value rest);

  mlir::OpBuilder &b;
  mlir::Location loc;
  bool simplify;
};

} // namespace miras

#endif
