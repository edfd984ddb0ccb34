//===- ApproximateVectorMath.cpp - Polynomial vector exp, erf, tanh, ... --===//
//
// LLVM lowers a math intrinsic on a vector it has no vector routine for into
// one scalar libm call per lane: a vectorised row softmax (Memora's mirror map,
// two [256, 64] matrices per token at D = 64) became tens of thousands of
// expf calls per token. This pass rewrites the math ops on vectors into
// MLIR's polynomial approximations (plain vector arithmetic), before
// convert-math-to-llvm; scalar ops keep libm.
//
//===----------------------------------------------------------------------===//
#include "miras/Compiler/Passes.h"

#include "mlir/Dialect/Arith/IR/Arith.h"
#include "mlir/Dialect/Math/IR/Math.h"
#include "mlir/Dialect/Math/Transforms/Passes.h"
#include "mlir/Dialect/Vector/IR/VectorOps.h"
#include "mlir/IR/PatternMatch.h"
#include "mlir/Transforms/GreedyPatternRewriteDriver.h"

namespace miras {
#define GEN_PASS_DEF_MIRASAPPROXIMATEVECTORMATH
#include "miras/Compiler/Passes.h.inc"
} // namespace miras

using namespace mlir;

namespace {

/// The functions rewritten: those the kernels use whose approximations keep the
/// numeric tests' tolerance (relative 1e-5 against float64 references).
bool approximated(StringRef name) {
  name.consume_front("math.");
  return name == "exp" || name == "expm1" || name == "log" || name == "log1p" ||
         name == "log2" || name == "tanh" || name == "erf";
}

struct MirasApproximateVectorMath
    : public miras::impl::MirasApproximateVectorMathBase<MirasApproximateVectorMath> {
  void runOnOperation() override {
    RewritePatternSet patterns(&getContext());
    populateMathPolynomialApproximationPatterns(patterns, approximated);
    FrozenRewritePatternSet frozen(std::move(patterns));
    // Only ops on vectors: a scalar call costs one call, as before.
    SmallVector<Operation *> ops;
    getOperation().walk([&](Operation *op) {
      if (isa_and_nonnull<math::MathDialect>(op->getDialect()) && op->getNumResults() == 1 &&
          isa<VectorType>(op->getResult(0).getType()))
        ops.push_back(op);
    });
    if (ops.empty())
      return;
    GreedyRewriteConfig config;
    config.setStrictness(GreedyRewriteStrictness::ExistingAndNewOps);
    if (failed(applyOpPatternsGreedily(ops, frozen, config)))
      return signalPassFailure();
  }
};

} // namespace
