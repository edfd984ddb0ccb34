//===- TapeRecomputedProducts.cpp - The recompute's products, kept --------===//
//
// The backward kernel runs, per token, a recompute of the state update and
// then the reverse step; both start from the same state. The reverse step
// clones the step's forward values, so it computes again every product the
// update computed: Gated DeltaNet's (alpha W) k, an MLP memory's
// pre-activations W1 k and W2 h and the back-propagated error W2^T e. Each is
// a sweep over a state matrix, in the reverse step where the matrix is read
// from the segment, for a vector the recompute had in hand.
//
// This pass turns each such product of `@step_backward` into an argument the
// kernel fills from the recompute: a matrix-vector product (matvec, vecmat)
// whose operands reach only the step's own arguments (no adjoint), and which
// is the same expression as a product of `@step` that the new states depend
// on (so the recompute computes it). The reverse step gets one argument per
// such product after `do`, named p1, p2, ..., p<i+1> with `miras.tape = i`;
// the product in `@step` gets the attribute `miras.tape = i` too, which says
// where the kernel takes that argument from (StepSignature.h, tapedProduct).
//
// It runs before miras-distribute-products, while the reverse step's forward
// values are still the step's own ops (that pass moves scalars out of
// products: the reverse step's (alpha W) k would become alpha (W k), which
// the step does not compute).
//
//===----------------------------------------------------------------------===//
#include "miras/Dialect/Miras/IR/MirasOps.h"
#include "miras/Dialect/Miras/IR/StepSignature.h"
#include "miras/Dialect/Miras/Transforms/Passes.h"

#include "mlir/Dialect/Func/IR/FuncOps.h"
#include "mlir/IR/Builders.h"
#include "mlir/IR/SymbolTable.h"
#include "mlir/Transforms/RegionUtils.h"

namespace miras {
#define GEN_PASS_DEF_MIRASTAPERECOMPUTEDPRODUCTS
#include "miras/Dialect/Miras/Transforms/Passes.h.inc"
} // namespace miras

using namespace mlir;
using namespace miras;

namespace {

/// Structural equality of a reverse-step value and a step value: the same ops
/// with the same attributes over the same step arguments.
class Matcher {
public:
  Matcher(Block &backward, Block &step, unsigned numArgs)
      : backward(backward), step(step), numArgs(numArgs) {}

  bool same(Value b, Value s) {
    auto key = std::make_pair(b, s);
    if (auto it = memo.find(key); it != memo.end())
      return it->second;
    bool result = compare(b, s);
    memo[key] = result;
    return result;
  }

  /// Whether `v` depends on the step's arguments only (no adjoint).
  bool forwardOnly(Value v) {
    if (auto it = forward.find(v); it != forward.end())
      return it->second;
    bool result;
    if (auto arg = dyn_cast<BlockArgument>(v))
      result = arg.getOwner() == &backward && arg.getArgNumber() < numArgs;
    else
      result = llvm::all_of(v.getDefiningOp()->getOperands(),
                            [&](Value operand) { return forwardOnly(operand); });
    forward[v] = result;
    return result;
  }

private:
  bool compare(Value b, Value s) {
    if (b.getType() != s.getType())
      return false;
    auto bArg = dyn_cast<BlockArgument>(b);
    auto sArg = dyn_cast<BlockArgument>(s);
    if (bArg || sArg)
      return bArg && sArg && bArg.getOwner() == &backward &&
             sArg.getOwner() == &step && bArg.getArgNumber() < numArgs &&
             bArg.getArgNumber() == sArg.getArgNumber();
    Operation *bOp = b.getDefiningOp(), *sOp = s.getDefiningOp();
    if (bOp->getName() != sOp->getName() ||
        cast<OpResult>(b).getResultNumber() != cast<OpResult>(s).getResultNumber() ||
        bOp->getNumOperands() != sOp->getNumOperands() ||
        bOp->getNumRegions() || sOp->getNumRegions() ||
        bOp->getPropertiesAsAttribute() != sOp->getPropertiesAsAttribute() ||
        withoutTape(bOp) != withoutTape(sOp))
      return false;
    for (auto [x, y] : llvm::zip(bOp->getOperands(), sOp->getOperands()))
      if (!same(x, y))
        return false;
    return true;
  }

  static DictionaryAttr withoutTape(Operation *op) {
    NamedAttrList attrs(op->getDiscardableAttrDictionary());
    attrs.erase(kTapeAttrName);
    return attrs.getDictionary(op->getContext());
  }

  Block &backward, &step;
  unsigned numArgs;
  DenseMap<std::pair<Value, Value>, bool> memo;
  DenseMap<Value, bool> forward;
};

void tapeProducts(MemoryModuleOp module, func::FuncOp step, func::FuncOp backward) {
  if (backward.isExternal() || step.isExternal())
    return;
  // Taped already (the pass ran before): the kernel numbers the products
  // from 0, so a second numbering would be ambiguous.
  for (unsigned i = 0; i < backward.getNumArguments(); ++i)
    if (backward.getArgAttr(i, kTapeAttrName))
      return;
  StepSignature signature = StepSignature::of(module);
  Block &backBody = backward.getBody().front();
  Block &stepBody = step.getBody().front();
  Matcher matcher(backBody, stepBody, signature.numArgs());
  // What the backward kernel's recompute lowers.
  llvm::SetVector<Operation *> update = signature.stateUpdateOps(step);

  // Every match first, on the reverse step as derived: a taped product inside
  // another (an MLP's W1 k inside W2 silu(W1 k)) must not hide the outer one.
  SmallVector<std::pair<Value, Operation *>> matches;
  for (Operation &op : backBody.without_terminator()) {
    if (!isa<MatVecOp, VecMatOp>(op) || !matcher.forwardOnly(op.getResult(0)))
      continue;
    for (Operation *candidate : update)
      if (candidate->getName() == op.getName() &&
          matcher.same(op.getResult(0), candidate->getResult(0))) {
        matches.push_back({op.getResult(0), candidate});
        break;
      }
  }

  // One argument per product of the step, however many of the reverse
  // step's values it stands for.
  MLIRContext *ctx = module.getContext();
  unsigned first = backward.getNumArguments();
  llvm::MapVector<Operation *, BlockArgument> arguments;
  for (auto [value, product] : matches) {
    auto it = arguments.find(product);
    if (it == arguments.end()) {
      unsigned position = backward.getNumArguments();
      if (failed(backward.insertArgument(position, value.getType(),
                                         DictionaryAttr::get(ctx), value.getLoc())))
        llvm_unreachable("a func.func takes any argument");
      it = arguments.insert({product, backBody.getArgument(position)}).first;
    }
    value.replaceAllUsesWith(it->second);
  }
  IRRewriter rewriter(ctx);
  (void)runRegionDCE(rewriter, backward.getBody());

  // A product that only a taped product read is not needed any more.
  llvm::BitVector unused(backward.getNumArguments());
  SmallVector<Operation *> kept;
  for (auto [product, argument] : arguments) {
    if (argument.use_empty())
      unused.set(argument.getArgNumber());
    else
      kept.push_back(product);
  }
  if (failed(backward.eraseArguments(unused)))
    llvm_unreachable("a func.func drops any argument");
  for (auto [index, product] : llvm::enumerate(kept)) {
    auto mark = IntegerAttr::get(IntegerType::get(ctx, 64), index);
    product->setAttr(kTapeAttrName, mark);
    unsigned position = first + index;
    backward.setArgAttr(position, "miras.name",
                        StringAttr::get(ctx, "p" + std::to_string(index + 1)));
    backward.setArgAttr(position, kTapeAttrName, mark);
  }
}

struct TapeRecomputedProductsPass
    : public miras::impl::MirasTapeRecomputedProductsBase<TapeRecomputedProductsPass> {
  void runOnOperation() override {
    for (auto module : getOperation().getOps<MemoryModuleOp>()) {
      auto step = dyn_cast_or_null<func::FuncOp>(SymbolTable::lookupSymbolIn(module, "step"));
      auto backward = dyn_cast_or_null<func::FuncOp>(
          SymbolTable::lookupSymbolIn(module, "step_backward"));
      if (step && backward)
        tapeProducts(module, step, backward);
    }
  }
};

} // namespace
