//===- DistributeProducts.cpp - Products over rank-one terms --------------===//
//
// The reverse step reads matrices that reverse mode built as sums: the
// adjoint of a read joins the next state's, G = dW' + do q^T, and the
// recomputed state is W' = a W - u k^T. Every product with such a matrix
// costs, per element, the element's whole expression: (dW' + do q^T) k is two
// multiply-adds per element where dW' k + do (q . k) is one, plus work on
// vectors. This pass writes every product of the reverse step over the terms
// of its matrix operand:
//
//   matvec(c s M + x y^T, z) = c s (M z) + x (y . z)
//   vecmat(z, c s M + x y^T) = c s (z^T M) + (z . x) y
//   sum((M + x y^T) o B)     = sum(M o B) + (x^T B) . y   (when x^T B or B y
//                                                          is already computed)
//
// where c is a constant, s a product of scalar values and M any matrix that is
// not itself a sum, a scaled matrix or a rank-one product. Several such
// matrices stay in one product (one sweep), with the factors they all have
// taken out; a product of a sum of matrices with no rank-one term and no
// common factor is left alone. Scalars move out of the product, so that
// z^T (a W) and z^T W are one value, which is what lets the third rule reuse
// products the first two made: for Gated DeltaNet,
// d alpha = <G - s k^T, W> reads W^T do and W^T s, which dq and dk already
// compute. Row and column scalings (a vector broadcast across the matrix, as
// GLA's alpha[j] * W) move to the vectors the same way, (M o 1 c^T) z =
// M (c o z), and the column (row) sums of a Hadamard product take rank-one
// terms out like the full sum: 1^T ((x y^T) o B) = y o (x^T B), GLA's
// d alpha. A reduction of a Hadamard product takes a rank-one term out only
// when its product is computed earlier in the step; otherwise the term stays
// inside the element loop, which costs no more than a new sweep over the
// matrix would. A Hadamard product with a rank-one matrix, A o x y^T, is
// reduced through a product of A alone (x^T A y). Ops are rewritten in order,
// each after the ones before it, so a later op can reuse an earlier one's
// products.
//
// The rewrite is exact in real numbers; in float32 it rounds differently (the
// reverse step is checked against finite differences, not bit for bit).
//
//===----------------------------------------------------------------------===//
#include "miras/Dialect/Miras/IR/MirasOps.h"
#include "miras/Dialect/Miras/Transforms/MathBuilder.h"
#include "miras/Dialect/Miras/Transforms/Passes.h"

#include "mlir/Dialect/Func/IR/FuncOps.h"
#include "mlir/IR/SymbolTable.h"
#include "mlir/Transforms/RegionUtils.h"

#include <cmath>

namespace miras {
#define GEN_PASS_DEF_MIRASDISTRIBUTEPRODUCTS
#include "miras/Dialect/Miras/Transforms/Passes.h.inc"
} // namespace miras

using namespace mlir;
using namespace miras;

namespace {

/// One term of a matrix read as a sum: coefficient * scalars... * rows... *
/// columns... * (matrix, or lhs rhs^T when matrix is null), where a row factor
/// r scales row i by r_i (a vector broadcast along dimension 0) and a column
/// factor c column j by c_j (GLA's decay, alpha[j] * W).
struct MatrixTerm {
  double coefficient = 1.0;
  SmallVector<Value, 2> scalars, rows, columns;
  Value matrix;
  Value lhs, rhs;

  bool rankOne() const { return !matrix; }
  bool hasFactors() const {
    return coefficient != 1.0 || !scalars.empty() || !rows.empty() ||
           !columns.empty();
  }
  bool plain() const { return !rankOne() && !hasFactors(); }
};

/// Beyond this many terms a matrix is left as it is: the expansion follows
/// shared subexpressions once per use.
constexpr size_t kMaxTerms = 8;

/// Appends the terms of `matrix` (times the factors of `scale`) to `terms`;
/// false when there are more than kMaxTerms.
static bool expand(Value matrix, const MatrixTerm &scale,
                   SmallVectorImpl<MatrixTerm> &terms) {
  auto negated = [&] {
    MatrixTerm flipped = scale;
    flipped.coefficient = -flipped.coefficient;
    return flipped;
  };
  if (auto add = matrix.getDefiningOp<arith::AddFOp>())
    return expand(add.getLhs(), scale, terms) && expand(add.getRhs(), scale, terms);
  if (auto sub = matrix.getDefiningOp<arith::SubFOp>())
    return expand(sub.getLhs(), scale, terms) &&
           expand(sub.getRhs(), negated(), terms);
  if (auto neg = matrix.getDefiningOp<arith::NegFOp>())
    return expand(neg.getOperand(), negated(), terms);
  if (auto mul = matrix.getDefiningOp<arith::MulFOp>()) {
    for (auto [factor, rest] : {std::pair{mul.getLhs(), mul.getRhs()},
                                std::pair{mul.getRhs(), mul.getLhs()}}) {
      MatrixTerm more = scale;
      if (std::optional<double> c = MathBuilder::matchConstant(factor)) {
        more.coefficient *= *c;
        return expand(rest, more, terms);
      }
      auto bcast = factor.getDefiningOp<BroadcastOp>();
      if (!bcast)
        continue;
      Value input = bcast.getInput();
      ArrayRef<int64_t> dims = bcast.getDims();
      if (dims.empty() && input.getType().isF32())
        more.scalars.push_back(input);
      else if (dims.size() == 1 && dims[0] == 0)
        more.rows.push_back(input);
      else if (dims.size() == 1 && dims[0] == 1)
        more.columns.push_back(input);
      else
        continue;
      return expand(rest, more, terms);
    }
  }
  MatrixTerm term = scale;
  if (auto outer = matrix.getDefiningOp<OuterOp>()) {
    term.lhs = outer.getLhs();
    term.rhs = outer.getRhs();
  } else {
    term.matrix = matrix;
  }
  terms.push_back(term);
  return terms.size() <= kMaxTerms;
}

/// The terms of `matrix`, or nothing when it is a plain matrix (one term,
/// no factor) or has too many.
static std::optional<SmallVector<MatrixTerm>> termsOf(Value matrix) {
  SmallVector<MatrixTerm> terms;
  if (!expand(matrix, MatrixTerm(), terms))
    return std::nullopt;
  if (terms.size() == 1 && terms[0].plain())
    return std::nullopt;
  return terms;
}

/// `v` = A o B of two matrices, neither of them a broadcast (a scaling, which
/// expand reads as a factor).
static arith::MulFOp hadamardOfMatrices(Value v) {
  auto mul = v.getDefiningOp<arith::MulFOp>();
  if (!mul || cast<RankedTensorType>(mul.getType()).getRank() != 2)
    return {};
  for (Value operand : mul->getOperands())
    if (operand.getDefiningOp<BroadcastOp>() || MathBuilder::matchConstant(operand))
      return {};
  return mul;
}

/// What a matrix product reduces: M z (the rows), z^T M (the columns) or the
/// sum of all elements.
enum class Reduction { Rows, Columns, All };

class Distributor {
public:
  Distributor(OpBuilder &b, Location loc) : b(b), mb(b, loc) {}

  /// Rewrites `op` if it is a product over a matrix with terms; returns the
  /// replacement value or null.
  Value rewrite(Operation *op) {
    mb.setLoc(op->getLoc());
    b.setInsertionPoint(op);
    if (auto matvec = dyn_cast<MatVecOp>(op))
      return product(Reduction::Rows, matvec.getMatrix(), matvec.getVector());
    if (auto vecmat = dyn_cast<VecMatOp>(op))
      return product(Reduction::Columns, vecmat.getMatrix(), vecmat.getVector());
    if (auto sum = dyn_cast<SumOp>(op))
      if (arith::MulFOp hadamard = hadamardOfMatrices(sum.getInput()))
        return hadamardProduct(Reduction::All, hadamard, {});
    return {};
  }

private:
  /// c s1 s2 ... * v.
  Value scaled(const MatrixTerm &term, Value v) {
    for (Value s : term.scalars)
      v = mb.mul(s, v);
    if (term.coefficient != 1.0)
      v = mb.mul(mb.constant(b.getF32Type(), term.coefficient), v);
    return v;
  }

  /// v o f1 o f2 ... for the vectors `factors`.
  Value times(ArrayRef<Value> factors, Value v) {
    for (Value f : factors)
      v = mb.mul(v, f);
    return v;
  }

  Value dot(Value x, Value y) { return mb.sum(mb.mul(x, y)); }

  /// One term's product with `z` (Rows: T z, Columns: z^T T): a matrix's
  /// factors move to the vectors, (r o M o c) z = r o (M (c o z)); a rank-one
  /// term is work on vectors, (x y^T) z = x (y . z).
  Value termProduct(Reduction kind, const MatrixTerm &term, Value z) {
    bool rows = kind == Reduction::Rows;
    if (term.rankOne()) {
      Value x = times(term.rows, term.lhs), y = times(term.columns, term.rhs);
      return scaled(term, rows ? mb.mul(x, dot(y, z)) : mb.mul(dot(z, x), y));
    }
    if (rows)
      return scaled(term, times(term.rows,
                                mb.matvec(term.matrix, times(term.columns, z))));
    return scaled(term, times(term.columns,
                              mb.vecmat(times(term.rows, z), term.matrix)));
  }

  /// The sum of `terms`, element-wise (null for none).
  Value matrixOf(ArrayRef<MatrixTerm> terms) {
    Value total;
    for (const MatrixTerm &term : terms) {
      Value m = term.rankOne() ? mb.outer(term.lhs, term.rhs) : term.matrix;
      for (Value r : term.rows)
        m = mb.mul(m, mb.broadcast(r, m.getType(), 0));
      for (Value c : term.columns)
        m = mb.mul(m, mb.broadcast(c, m.getType(), 1));
      m = scaled(term, m);
      total = total ? mb.add(total, m) : m;
    }
    return total;
  }

  Value reduce(Reduction kind, Value matrix, Value z) {
    switch (kind) {
    case Reduction::Rows:
      return mb.matvec(matrix, z);
    case Reduction::Columns:
      return mb.vecmat(z, matrix);
    case Reduction::All:
      return mb.sum(matrix);
    }
    llvm_unreachable("unknown reduction");
  }

  Value product(Reduction kind, Value matrix, Value z) {
    if (arith::MulFOp hadamard = hadamardOfMatrices(matrix))
      return hadamardProduct(kind, hadamard, z);
    std::optional<SmallVector<MatrixTerm>> terms = termsOf(matrix);
    if (!terms)
      return {};
    SmallVector<MatrixTerm> rankOnes, matrices;
    for (const MatrixTerm &term : *terms)
      (term.rankOne() ? rankOnes : matrices).push_back(term);
    // Matrices stay together: M1 z + M2 z would sweep twice where (M1 + M2) z
    // sweeps once. Only the factors they all have move out; without a
    // rank-one term and without such a factor there is nothing to gain.
    std::optional<MatrixTerm> combined;
    if (matrices.size() == 1)
      combined = matrices.front();
    else if (!matrices.empty()) {
      MatrixTerm common = takeCommonFactors(matrices);
      if (rankOnes.empty() && !common.hasFactors())
        return {};
      common.matrix = matrixOf(matrices);
      combined = common;
    }
    Value total;
    auto accumulate = [&](Value v) { total = total ? mb.add(total, v) : v; };
    for (const MatrixTerm &term : rankOnes)
      accumulate(termProduct(kind, term, z));
    if (combined)
      accumulate(termProduct(kind, *combined, z));
    return total;
  }

  /// The sum of `terms` as one matrix term: the factors they all have
  /// outside, the rest added element-wise inside.
  MatrixTerm combine(SmallVector<MatrixTerm> terms) {
    MatrixTerm common = takeCommonFactors(terms);
    common.matrix = matrixOf(terms);
    return common;
  }

  /// Removes the factors every term of `terms` has (scalars, rows, columns,
  /// the magnitude of the constant) and returns them as a term: s A + s B is
  /// summed as s (A + B), one multiply per element fewer.
  static MatrixTerm takeCommonFactors(MutableArrayRef<MatrixTerm> terms) {
    MatrixTerm common;
    auto takeCommon = [&](auto member, SmallVector<Value, 2> &out) {
      for (Value f : SmallVector<Value, 2>(terms.front().*member)) {
        bool everywhere =
            llvm::all_of(terms.drop_front(), [&](const MatrixTerm &t) {
              return llvm::is_contained(t.*member, f);
            });
        if (!everywhere)
          continue;
        out.push_back(f);
        for (MatrixTerm &t : terms)
          (t.*member).erase(llvm::find(t.*member, f));
      }
    };
    takeCommon(&MatrixTerm::scalars, common.scalars);
    takeCommon(&MatrixTerm::rows, common.rows);
    takeCommon(&MatrixTerm::columns, common.columns);
    double magnitude = std::abs(terms.front().coefficient);
    if (magnitude != 0.0 && llvm::all_of(terms, [&](const MatrixTerm &t) {
          return std::abs(t.coefficient) == magnitude;
        })) {
      common.coefficient = magnitude;
      for (MatrixTerm &t : terms)
        t.coefficient = t.coefficient < 0 ? -1.0 : 1.0;
    }
    return common;
  }

  /// A product before the insertion point: x^T M (for a given x) or M y (for a
  /// given y), or null.
  Value existing(Value x, Value matrix, Value y) {
    Block *block = b.getInsertionBlock();
    for (Operation &op : llvm::make_range(block->begin(), b.getInsertionPoint())) {
      if (auto vecmat = dyn_cast<VecMatOp>(op);
          x && vecmat && vecmat.getVector() == x && vecmat.getMatrix() == matrix)
        return vecmat.getResult();
      if (auto matvec = dyn_cast<MatVecOp>(op);
          y && matvec && matvec.getMatrix() == matrix && matvec.getVector() == y)
        return matvec.getResult();
    }
    return {};
  }

  /// The reduction of ((x y^T) o M) over `kind` from a product of M that the
  /// step computes already, or null: for All x^T M y (from x^T M or M y),
  /// for Columns with z = 1 y o (x^T M), for Rows with z = 1 x o (M y).
  Value rankOneHadamard(Reduction kind, Value x, Value y, Value matrix, Value z) {
    if (kind == Reduction::All) {
      if (Value xm = existing(x, matrix, {}))
        return dot(xm, y);
      if (Value my = existing({}, matrix, y))
        return dot(x, my);
      return {};
    }
    std::optional<double> ones = MathBuilder::matchConstant(z);
    if (!ones || *ones != 1.0)
      return {};
    if (kind == Reduction::Columns) {
      Value xm = existing(x, matrix, {});
      return xm ? mb.mul(y, xm) : Value();
    }
    Value my = existing({}, matrix, y);
    return my ? mb.mul(x, my) : Value();
  }

  /// A product with `z` (Rows, Columns) over the terms of `matrix`.
  Value apply(Reduction kind, Value matrix, Value z) {
    if (Value v = product(kind, matrix, z))
      return v;
    return reduce(kind, matrix, z);
  }

  /// A reduction of A o (x y^T), one factor a rank-one matrix: a product of
  /// A alone, x^T A y (All), y o ((z o x)^T A) (Columns), x o (A (y o z))
  /// (Rows); per element one multiply-add on A where the Hadamard form also
  /// rebuilt x y^T.
  Value hadamardWithRankOne(Reduction kind, arith::MulFOp hadamard, Value z) {
    for (auto [a, other] : {std::pair{hadamard.getLhs(), hadamard.getRhs()},
                            std::pair{hadamard.getRhs(), hadamard.getLhs()}}) {
      SmallVector<MatrixTerm> terms;
      if (!expand(other, MatrixTerm(), terms) || terms.size() != 1 ||
          !terms[0].rankOne())
        continue;
      const MatrixTerm &term = terms.front();
      Value x = times(term.rows, term.lhs), y = times(term.columns, term.rhs);
      switch (kind) {
      case Reduction::All:
        return scaled(term, dot(apply(Reduction::Columns, a, x), y));
      case Reduction::Columns:
        return scaled(term, mb.mul(y, apply(Reduction::Columns, a, mb.mul(z, x))));
      case Reduction::Rows:
        return scaled(term, mb.mul(x, apply(Reduction::Rows, a, mb.mul(y, z))));
      }
    }
    return {};
  }

  /// A reduction of A o B: the rank-one terms of A whose reduction reads a
  /// product of B the step computes already leave the element loop.
  Value hadamardProduct(Reduction kind, arith::MulFOp hadamard, Value z) {
    if (Value v = hadamardWithRankOne(kind, hadamard, z))
      return v;
    for (auto [a, other] : {std::pair{hadamard.getLhs(), hadamard.getRhs()},
                            std::pair{hadamard.getRhs(), hadamard.getLhs()}}) {
      std::optional<SmallVector<MatrixTerm>> terms = termsOf(a);
      if (!terms)
        continue;
      // B with its scalar factors out: (a W) reads as a * W.
      SmallVector<MatrixTerm> bTerms;
      MatrixTerm bTerm;
      bTerm.matrix = other;
      if (expand(other, MatrixTerm(), bTerms) && bTerms.size() == 1 &&
          !bTerms[0].rankOne() && bTerms[0].rows.empty() &&
          bTerms[0].columns.empty())
        bTerm = bTerms[0];
      SmallVector<MatrixTerm> kept;
      Value taken;
      for (const MatrixTerm &term : *terms) {
        Value value;
        if (term.rankOne() && term.rows.empty() && term.columns.empty())
          value = rankOneHadamard(kind, term.lhs, term.rhs, bTerm.matrix, z);
        if (!value) {
          kept.push_back(term);
          continue;
        }
        value = scaled(term, value);
        taken = taken ? mb.add(taken, value) : value;
      }
      if (!taken)
        continue;
      taken = scaled(bTerm, taken);
      if (kept.empty())
        return taken;
      // What stays in the element loop: the kept terms' common scalars and
      // constant scale the reduction, their common rows and columns the
      // matrix once.
      MatrixTerm inner = combine(kept);
      MatrixTerm outside;
      std::swap(outside.scalars, inner.scalars);
      std::swap(outside.coefficient, inner.coefficient);
      Value keptMatrix = matrixOf(inner);
      return mb.add(scaled(outside, reduce(kind, mb.mul(keptMatrix, other), z)),
                    taken);
    }
    return {};
  }

  OpBuilder &b;
  MathBuilder mb;
};

void distributeProducts(func::FuncOp func) {
  OpBuilder b(func.getContext());
  Distributor distributor(b, func.getLoc());
  if (func.isExternal())
    return;
  Block &body = func.getBody().front();
  for (Operation &op : llvm::make_early_inc_range(body.without_terminator())) {
    Value replacement = distributor.rewrite(&op);
    if (!replacement)
      continue;
    op.getResult(0).replaceAllUsesWith(replacement);
    op.erase();
  }
  IRRewriter rewriter(func.getContext());
  (void)runRegionDCE(rewriter, func.getBody());
}

struct DistributeProductsPass
    : public miras::impl::MirasDistributeProductsBase<DistributeProductsPass> {
  void runOnOperation() override {
    for (auto module : getOperation().getOps<MemoryModuleOp>())
      if (auto backward = dyn_cast_or_null<func::FuncOp>(
              SymbolTable::lookupSymbolIn(module, "step_backward")))
        distributeProducts(backward);
  }
};

} // namespace
