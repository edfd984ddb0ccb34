//===- Differentiate.cpp - Reverse-mode derivative of a bias --------------===//
//
// Reverse mode over a straight-line block: a forward sweep marks the ops that
// depend on a `wrt` value (the tape), then the tape is walked from last to
// first and each op that reaches a seed adds its vector-Jacobian product to
// the adjoints of its operands. The products themselves are the ops' own
// rules (DifferentiableOpInterface: StepOps.cpp for miras ops, external
// models in Derivatives.cpp for arith / math); this file only keeps the
// adjoint table. Rules build through MathBuilder, so constant factors fold
// away as they are built.
//
//===----------------------------------------------------------------------===//
#include "miras/Dialect/Miras/Transforms/Differentiate.h"
#include "miras/Dialect/Miras/IR/DifferentiableOpInterface.h"
#include "miras/Dialect/Miras/IR/MirasOps.h"
#include "miras/Dialect/Miras/Transforms/MathBuilder.h"

#include "llvm/ADT/DenseMap.h"
#include "llvm/ADT/DenseSet.h"

using namespace mlir;
using namespace miras;

namespace {

/// The adjoint table of one reverse sweep, as the derivative rules see it.
class ReverseSweep final : public AdjointAccumulator {
public:
  ReverseSweep(OpBuilder &builder, Location loc, bool simplify)
      : mb(builder, loc, simplify) {}

  MathBuilder &math() override { return mb; }

  void accumulate(Value v, function_ref<Value()> contribution) override {
    if (!active.contains(v))
      return;
    Value added = contribution();
    auto [it, first] = adjoint.try_emplace(v, added);
    if (!first)
      it->second = mb.add(it->second, added);
  }

  /// Marks every op of `ops` that uses an active value (and its results)
  /// active; returns those ops in order.
  SmallVector<Operation *> record(llvm::iterator_range<Block::iterator> ops) {
    SmallVector<Operation *> tape;
    for (Operation &op : ops) {
      if (llvm::none_of(op.getOperands(),
                        [&](Value v) { return active.contains(v); }))
        continue;
      for (Value r : op.getResults())
        active.insert(r);
      tape.push_back(&op);
    }
    return tape;
  }

  /// Runs the rule of `op` if one of its results has an adjoint.
  LogicalResult propagate(Operation *op) {
    SmallVector<Value> resultAdjoints;
    for (Value r : op->getResults())
      resultAdjoints.push_back(adjoint.lookup(r));
    if (llvm::all_of(resultAdjoints, [](Value g) { return !g; }))
      return success(); // does not reach a seed
    auto rule = dyn_cast<DifferentiableOpInterface>(op);
    if (!rule)
      return op->emitError("cannot differentiate '")
             << op->getName() << "': no derivative rule for this op";
    mb.setLoc(op->getLoc());
    return rule.accumulateAdjoints(*this, resultAdjoints);
  }

  MathBuilder mb;
  DenseSet<Value> active;
  DenseMap<Value, Value> adjoint;
};

} // namespace

FailureOr<SmallVector<Value>>
miras::buildGradients(OpBuilder &builder,
                      ArrayRef<std::pair<Value, Value>> seeds,
                      ValueRange wrts, bool simplify) {
  Block *block = builder.getInsertionBlock();
  ReverseSweep sweep(builder, wrts.front().getLoc(), simplify);

  for (Value wrt : wrts)
    sweep.active.insert(wrt);
  SmallVector<Operation *> tape =
      sweep.record(llvm::make_range(block->begin(), builder.getInsertionPoint()));

  for (auto [value, adjoint] : seeds)
    sweep.accumulate(value, [adjoint = adjoint] { return adjoint; });
  for (Operation *op : llvm::reverse(tape))
    if (failed(sweep.propagate(op)))
      return failure();

  SmallVector<Value> gradients;
  for (Value wrt : wrts) {
    Value g = sweep.adjoint.lookup(wrt);
    gradients.push_back(g ? g : sweep.mb.constant(wrt.getType(), 0.0));
  }
  return gradients;
}
