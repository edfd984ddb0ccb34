//===- MirasToLinalg.cpp - Step function to a fused sequential kernel -----===//
//
// Each step-level value is lowered to one of:
//   Scalar  an f32 SSA value in the time loop (gates, learning rates, sums);
//   Splat   a tensor whose elements all equal one f32 SSA value;
//   Buffer  a memref holding the tensor (inputs, the state, materialised
//           vectors);
//   Lazy    a matrix expression (decay * W - u k^T, ...) that is never
//           materialised but evaluated element by element inside the generic
//           that consumes it.
// Element-wise evaluation composes indexing maps: a vector reached as the
// left operand of an outer product runs along the row iterator, as the right
// operand (or as a matvec's vector) along the column iterator.
//
//===----------------------------------------------------------------------===//
#include "miras/Compiler/Passes.h"
#include "miras/Dialect/Miras/IR/MirasOps.h"

#include "mlir/Dialect/Utils/StructuredOpsUtils.h"
#include "mlir/IR/AffineMap.h"
#include "mlir/IR/Builders.h"
#include "mlir/IR/Matchers.h"
#include "llvm/ADT/DenseSet.h"
#include "llvm/ADT/MapVector.h"

#include <limits>

namespace miras {
#define GEN_PASS_DEF_MIRASLOWERTOLINALG
#include "miras/Compiler/Passes.h.inc"
} // namespace miras

using namespace mlir;
using namespace miras;

namespace {

struct Lowered {
  enum class Kind { Scalar, Splat, Buffer, Lazy, Clobbered };
  Kind kind = Kind::Clobbered;
  Value value; // Scalar / Splat: the f32 value; Buffer: the memref
};

/// The inputs of one linalg.generic being built: distinct (buffer, map) pairs.
struct Leaves {
  llvm::MapVector<std::pair<Value, AffineMap>, unsigned> index;
  SmallVector<Value> buffers() const {
    SmallVector<Value> result;
    for (auto &entry : index)
      result.push_back(entry.first.first);
    return result;
  }
  SmallVector<AffineMap> maps() const {
    SmallVector<AffineMap> result;
    for (auto &entry : index)
      result.push_back(entry.first.second);
    return result;
  }
};

/// memref<?x?x?xD0x..xf32>: three dynamic leading dims then the static shape.
static MemRefType sequenceType(MLIRContext *ctx, unsigned leading,
                               ArrayRef<int64_t> shape) {
  SmallVector<int64_t> dims(leading, ShapedType::kDynamic);
  dims.append(shape.begin(), shape.end());
  return MemRefType::get(dims, Float32Type::get(ctx));
}

/// The slice `source[prefix..., :, ...]` with the leading indices dropped.
static Value slice(OpBuilder &b, Location loc, Value source, ValueRange prefix,
                   ArrayRef<int64_t> shape) {
  auto sourceType = cast<MemRefType>(source.getType());
  SmallVector<OpFoldResult> offsets(prefix.begin(), prefix.end());
  SmallVector<OpFoldResult> sizes(prefix.size(), b.getIndexAttr(1));
  for (int64_t d : shape) {
    offsets.push_back(b.getIndexAttr(0));
    sizes.push_back(b.getIndexAttr(d));
  }
  SmallVector<OpFoldResult> strides(sourceType.getRank(), b.getIndexAttr(1));
  auto type = memref::SubViewOp::inferRankReducedResultType(
      shape, sourceType, offsets, sizes, strides);
  return memref::SubViewOp::create(b, loc, cast<MemRefType>(type), source,
                                   offsets, sizes, strides);
}

/// The step shape the chunked parallel form (SPEC section 7) handles: one
/// matrix state W, gradients at the chunk's anchor, and
///   W' = s W + sign * u w^T   or   W' = W Diag(a) + sign * u w^T,
///   o = W' q' (read after write) or W q' (read before write),
/// where the scalar decay s (absent: 1), the Dk channel decay a, u, w and q'
/// do not depend on W. Within a chunk the recurrence is then linear in W
/// with known rank-1 terms.
struct ParallelForm {
  Value decay; // f32 (or a splat constant), a [Dk] vector, or null
  bool channelDecay = false;
  Value u, w, query;
  double sign = -1.0;
  bool readsNew = true;
  llvm::SmallPtrSet<Operation *, 4> stateOps; // replaced by the chunk algebra
};

/// Matches `step` against ParallelForm; on failure `why` says what differs.
static FailureOr<ParallelForm> matchParallelForm(func::FuncOp step,
                                                 unsigned numStates,
                                                 unsigned numAnchors,
                                                 std::string &why) {
  if (numStates != 1 || numAnchors != 1) {
    why = numAnchors == 0 ? "it needs chunk > 1"
                          : "it needs exactly one state tensor (this module "
                            "carries " + std::to_string(numStates) + ")";
    return failure();
  }
  Block &body = step.getBody().front();
  auto ret = cast<func::ReturnOp>(body.getTerminator());
  Value old = body.getArgument(0);
  Value next = ret.getOperand(0), out = ret.getOperand(1);
  auto stateType = cast<RankedTensorType>(old.getType());
  if (stateType.getRank() != 2) {
    why = "its state is not a matrix";
    return failure();
  }
  // Everything that reads W, directly or not.
  llvm::SmallPtrSet<Operation *, 8> dependent;
  llvm::SmallDenseSet<Value> tainted{old};
  for (Operation &op : body.without_terminator())
    if (llvm::any_of(op.getOperands(), [&](Value v) { return tainted.contains(v); })) {
      dependent.insert(&op);
      tainted.insert(op.getResults().begin(), op.getResults().end());
    }
  auto independent = [&](Value v) { return !tainted.contains(v); };

  ParallelForm form;
  Operation *update = next.getDefiningOp();
  if (!update || !isa<arith::AddFOp, arith::SubFOp>(update)) {
    why = "its state update is not 'decay * W +/- u w^T'";
    return failure();
  }
  Value decayed = update->getOperand(0), term = update->getOperand(1);
  if (isa<arith::AddFOp>(update) && independent(decayed))
    std::swap(decayed, term);
  form.sign = isa<arith::SubFOp>(update) ? -1.0 : 1.0;
  auto outer = term.getDefiningOp<OuterOp>();
  if (!outer || !independent(outer.getLhs()) || !independent(outer.getRhs())) {
    why = "its state update is not 'decay * W +/- u w^T' with u, w read at "
          "the anchor";
    return failure();
  }
  form.u = outer.getLhs();
  form.w = outer.getRhs();
  form.stateOps.insert(update);
  form.stateOps.insert(outer);
  if (decayed != old) {
    auto mul = decayed.getDefiningOp<arith::MulFOp>();
    Value factor = !mul ? Value()
                   : mul.getRhs() == old ? mul.getLhs()
                   : mul.getLhs() == old ? mul.getRhs()
                                         : Value();
    // A scalar gate broadcast over W, or a compile-time constant (RetNet).
    auto bcast = factor ? factor.getDefiningOp<BroadcastOp>() : BroadcastOp();
    DenseFPElementsAttr constant;
    if (bcast && bcast.getDims().empty() && independent(bcast.getInput()))
      form.decay = bcast.getInput();
    else if (bcast && llvm::equal(bcast.getDims(), ArrayRef<int64_t>{1}) &&
             independent(bcast.getInput())) {
      form.decay = bcast.getInput(); // W Diag(a): column c scaled by a[c]
      form.channelDecay = true;
    } else if (factor && matchPattern(factor, m_Constant(&constant)) &&
             constant.isSplat())
      form.decay = factor; // lowered as a splat: one f32 value
    else {
      why = "its retention is neither a scalar decay of W nor a decay of its "
            "Dk columns (Dv-row gates stay sequential)";
      return failure();
    }
    form.stateOps.insert(mul);
  }
  auto read = out.getDefiningOp<MatVecOp>();
  if (!read || !independent(read.getVector()) ||
      (read.getMatrix() != next && read.getMatrix() != old)) {
    why = "its read is not 'o = W q'";
    return failure();
  }
  form.query = read.getVector();
  form.readsNew = read.getMatrix() == next;
  form.stateOps.insert(read);
  for (Operation *op : dependent)
    if (!form.stateOps.contains(op)) {
      why = "W is also read by '" + op->getName().getStringRef().str() + "'";
      return failure();
    }
  return form;
}

class KernelLowering {
public:
  KernelLowering(MemoryModuleOp module, func::FuncOp step, StringRef algorithm)
      : module(module), step(step), ctx(module.getContext()),
        algorithm(algorithm) {}

  /// Builds `@<name>_kernel` before the miras.module.
  LogicalResult run();

private:
  /// Binds q, k, v and the gates of token `ti` of pair (bi, hi) to the step's
  /// arguments from `first` on.
  void bindToken(OpBuilder &b, Location loc, Block *entry, Value bi, Value ti,
                 Value hi, unsigned first);
  /// The chunked parallel form's body for one (batch, head) pair.
  LogicalResult buildChunked(OpBuilder &b, Location loc, Block *entry,
                             const ParallelForm &form, Value bi, Value hi,
                             Value length, Value stateSlice);
  /// Phase 2 of the chunked form for a Dk channel decay (W Diag(a_t)); the
  /// buffers are U, Wk, Q, decays [C, Dk], S [C, C] and O.
  LogicalResult buildChannelChunk(OpBuilder &b, Location loc, Block *entry,
                                  const ParallelForm &form, Value bi, Value hi,
                                  Value start, Value size, Value stateSlice,
                                  ArrayRef<Value> buffers);
  /// Copies rows [0, size) of the chunk's outputs O into o at token start.
  void writeOutputs(OpBuilder &b, Location loc, Block *entry, Value O, Value bi,
                    Value hi, Value start, Value size);
  /// Stores a lowered vector (any kind) into `row`.
  LogicalResult storeRow(OpBuilder &b, Location loc, Value tensor, Value row);

  // Element-wise evaluation of a tensor value under `map` (iteration space ->
  // the value's dimensions). With `leaves` set, only records the buffers read;
  // with `args` set, emits scalar ops reading the generic's block arguments.
  LogicalResult visitElement(Value tensor, AffineMap map, Leaves &leaves);
  FailureOr<Value> emitElement(OpBuilder &b, Value tensor, AffineMap map,
                               const Leaves &leaves, ValueRange args);

  /// Writes `tensor` (any rank) into `dest` with one linalg.generic.
  LogicalResult materialize(OpBuilder &b, Value tensor, Value dest);
  /// `dest = A x` (or `x^T A` when `transposed`) with one reduction generic.
  LogicalResult lowerProduct(OpBuilder &b, Value matrix, Value vector,
                             bool transposed, Value result, Value dest);
  /// Reduces `input` (a vector or matrix) into `dest` (0-d for a full
  /// reduction, a vector for a row reduction), starting from `init`.
  LogicalResult lowerReduction(OpBuilder &b, Location loc, Value input,
                               Value dest, double init,
                               function_ref<Value(OpBuilder &, Location, Value,
                                                  Value)>
                                   combine);
  /// Writes every new state that `tensor` reads (through lazy matrices) into
  /// its slice first: it is read from its buffer afterwards, and the old
  /// state it replaces must not be read again.
  LogicalResult flushStates(OpBuilder &b, Value tensor);
  LogicalResult writeState(OpBuilder &b, unsigned index);

  LogicalResult lowerOp(OpBuilder &b, Operation &op);
  LogicalResult lowerReturn(OpBuilder &b, func::ReturnOp ret);

  /// Per-token shape of a gate: [], [dim] or [steps].
  SmallVector<int64_t> gateShape(GateOp gate) {
    if (gate.getPerStep())
      return {module.getSteps()};
    if (gate.getChannel())
      return {static_cast<int64_t>(gate.getDim())};
    return {};
  }

  /// A scratch buffer for a vector result, allocated once at kernel entry.
  Value scratch(RankedTensorType type);
  Value heapScratch(RankedTensorType type);

  /// Whether evaluating the lazy value `v` involves transcendental math or a
  /// division (anything worth computing once rather than per consumer).
  /// Memoised: lazy trees share subexpressions, and an unmemoised walk would
  /// revisit them once per path.
  bool isExpensive(Value v) {
    if (lowered.lookup(v).kind != Lowered::Kind::Lazy)
      return false;
    if (auto it = expensive.find(v); it != expensive.end())
      return it->second;
    Operation *op = v.getDefiningOp();
    bool result =
        isa<math::MathDialect>(op->getDialect()) || isa<arith::DivFOp>(op) ||
        llvm::any_of(op->getOperands(),
                     [&](Value operand) { return isExpensive(operand); });
    expensive[v] = result;
    return result;
  }
  /// Where `v` should be materialised: the output slice for `o`, else scratch.
  Value destinationFor(Value v) {
    if (v == outputValue)
      return outputSlice;
    return scratch(cast<RankedTensorType>(v.getType()));
  }

  /// One state tensor: the step's argument, its new value and its slice of
  /// the kernel's state buffer for the current (batch, head).
  struct State {
    Value old, next, slice;
  };

  static Value emitScalarOp(OpBuilder &b, Operation *op, ValueRange operands);

  MemoryModuleOp module;
  func::FuncOp step;
  MLIRContext *ctx;
  DenseMap<Value, Lowered> lowered;
  OpBuilder *entryBuilder = nullptr;
  SmallVector<State> states;
  llvm::SmallDenseSet<unsigned> writing; // states being or already written
  SmallVector<Value> heapBuffers;        // anchors and scratch matrices
  DenseMap<Value, bool> expensive;       // isExpensive's memo
  Value outputSlice, outputValue;
  StringRef algorithm; // the pass option: auto | sequential | chunked
};

/// A scratch buffer on the heap (matrices can be large), freed at exit.
Value KernelLowering::heapScratch(RankedTensorType type) {
  auto memrefType = MemRefType::get(type.getShape(), type.getElementType());
  heapBuffers.push_back(
      memref::AllocOp::create(*entryBuilder, module.getLoc(), memrefType));
  return heapBuffers.back();
}

Value KernelLowering::scratch(RankedTensorType type) {
  // Small vectors live on the stack; wide ones (an MLP's hidden layer at a
  // large D) on the heap, so that no width can overflow a thread's stack.
  constexpr int64_t kStackElements = 1024;
  if (type.getNumElements() > kStackElements)
    return heapScratch(type);
  auto memrefType = MemRefType::get(type.getShape(), type.getElementType());
  return memref::AllocaOp::create(*entryBuilder, module.getLoc(), memrefType);
}

Value KernelLowering::emitScalarOp(OpBuilder &b, Operation *op,
                                   ValueRange operands) {
  Location loc = op->getLoc();
  if (isa<SignOp>(op)) {
    // sign(x) = (x > 0) - (x < 0), with sign(0) = 0.
    Value x = operands[0];
    Type t = x.getType();
    Value zero = arith::ConstantOp::create(b, loc, b.getFloatAttr(t, 0.0));
    Value one = arith::ConstantOp::create(b, loc, b.getFloatAttr(t, 1.0));
    Value minusOne = arith::ConstantOp::create(b, loc, b.getFloatAttr(t, -1.0));
    Value pos = arith::CmpFOp::create(b, loc, arith::CmpFPredicate::OGT, x, zero);
    Value negative =
        arith::CmpFOp::create(b, loc, arith::CmpFPredicate::OLT, x, zero);
    Value negOrZero = arith::SelectOp::create(b, loc, negative, minusOne, zero);
    return arith::SelectOp::create(b, loc, pos, one, negOrZero);
  }
  OperationState state(loc, op->getName());
  state.addOperands(operands);
  state.addAttributes(op->getAttrs());
  state.addTypes(getElementTypeOrSelf(op->getResult(0).getType()));
  return b.create(state)->getResult(0);
}

/// Element-wise ops of the step level that lower by re-creating them on scalars.
static bool isElementwise(Operation *op) {
  return isa<SignOp>(op) ||
         (op->getNumResults() == 1 && op->getNumRegions() == 0 &&
          OpTrait::hasElementwiseMappableTraits(op) &&
          isa<arith::ArithDialect, math::MathDialect>(op->getDialect()));
}

LogicalResult KernelLowering::visitElement(Value tensor, AffineMap map,
                                           Leaves &leaves) {
  Lowered l = lowered.lookup(tensor);
  switch (l.kind) {
  case Lowered::Kind::Scalar:
  case Lowered::Kind::Splat:
    return success();
  case Lowered::Kind::Buffer:
    leaves.index.insert({{l.value, map}, leaves.index.size()});
    return success();
  case Lowered::Kind::Clobbered:
    return emitError(tensor.getLoc())
           << "internal error: value read after the state was overwritten";
  case Lowered::Kind::Lazy:
    break;
  }
  Operation *op = tensor.getDefiningOp();
  if (auto bcast = dyn_cast<BroadcastOp>(op)) {
    SmallVector<AffineExpr> exprs;
    for (int64_t d : bcast.getDims())
      exprs.push_back(map.getResult(d));
    return visitElement(bcast.getInput(),
                        AffineMap::get(map.getNumDims(), 0, exprs, ctx), leaves);
  }
  if (auto outer = dyn_cast<OuterOp>(op)) {
    if (failed(visitElement(outer.getLhs(), map.getSubMap({0}), leaves)))
      return failure();
    return visitElement(outer.getRhs(), map.getSubMap({1}), leaves);
  }
  for (Value operand : op->getOperands())
    if (failed(visitElement(operand, map, leaves)))
      return failure();
  return success();
}

FailureOr<Value> KernelLowering::emitElement(OpBuilder &b, Value tensor,
                                             AffineMap map,
                                             const Leaves &leaves,
                                             ValueRange args) {
  Lowered l = lowered.lookup(tensor);
  if (l.kind == Lowered::Kind::Scalar || l.kind == Lowered::Kind::Splat)
    return l.value;
  if (l.kind == Lowered::Kind::Buffer)
    return Value(args[leaves.index.lookup({l.value, map})]);
  Operation *op = tensor.getDefiningOp();
  if (auto bcast = dyn_cast<BroadcastOp>(op)) {
    SmallVector<AffineExpr> exprs;
    for (int64_t d : bcast.getDims())
      exprs.push_back(map.getResult(d));
    return emitElement(b, bcast.getInput(),
                       AffineMap::get(map.getNumDims(), 0, exprs, ctx), leaves,
                       args);
  }
  if (auto outer = dyn_cast<OuterOp>(op)) {
    FailureOr<Value> lhs =
        emitElement(b, outer.getLhs(), map.getSubMap({0}), leaves, args);
    FailureOr<Value> rhs =
        emitElement(b, outer.getRhs(), map.getSubMap({1}), leaves, args);
    if (failed(lhs) || failed(rhs))
      return failure();
    return Value(arith::MulFOp::create(b, op->getLoc(), *lhs, *rhs));
  }
  SmallVector<Value> operands;
  for (Value operand : op->getOperands()) {
    FailureOr<Value> element = emitElement(b, operand, map, leaves, args);
    if (failed(element))
      return failure();
    operands.push_back(*element);
  }
  return emitScalarOp(b, op, operands);
}

static SmallVector<utils::IteratorType> parallel(unsigned n) {
  return SmallVector<utils::IteratorType>(n, utils::IteratorType::parallel);
}

LogicalResult KernelLowering::materialize(OpBuilder &b, Value tensor,
                                          Value dest) {
  Location loc = tensor.getLoc();
  unsigned rank = cast<RankedTensorType>(tensor.getType()).getRank();
  AffineMap identity = AffineMap::getMultiDimIdentityMap(rank, ctx);
  if (failed(flushStates(b, tensor)))
    return failure();
  Leaves leaves;
  if (failed(visitElement(tensor, identity, leaves)))
    return failure();
  SmallVector<AffineMap> maps = leaves.maps();
  maps.push_back(identity);
  bool ok = true;
  linalg::GenericOp::create(
      b, loc, leaves.buffers(), ValueRange{dest}, maps, parallel(rank),
      [&](OpBuilder &nb, Location nloc, ValueRange args) {
        FailureOr<Value> element = emitElement(nb, tensor, identity, leaves, args);
        ok = succeeded(element);
        linalg::YieldOp::create(nb, nloc, ok ? *element : args.back());
      });
  return success(ok);
}

LogicalResult KernelLowering::flushStates(OpBuilder &b, Value tensor) {
  Lowered l = lowered.lookup(tensor);
  if (l.kind != Lowered::Kind::Lazy)
    return success();
  for (auto [index, state] : llvm::enumerate(states))
    if (state.next == tensor && !writing.contains(index))
      return writeState(b, index);
  for (Value operand : tensor.getDefiningOp()->getOperands())
    if (failed(flushStates(b, operand)))
      return failure();
  return success();
}

LogicalResult KernelLowering::writeState(OpBuilder &b, unsigned index) {
  State &state = states[index];
  writing.insert(index);
  Lowered l = lowered.lookup(state.next);
  if (l.kind == Lowered::Kind::Buffer && l.value == state.slice)
    return success(); // unchanged, or already written
  if (l.kind == Lowered::Kind::Buffer)
    memref::CopyOp::create(b, state.next.getLoc(), l.value, state.slice);
  else if (failed(materialize(b, state.next, state.slice)))
    return failure();
  lowered[state.next] = {Lowered::Kind::Buffer, state.slice};
  if (state.old != state.next)
    lowered[state.old] = {Lowered::Kind::Clobbered, Value()};
  return success();
}

LogicalResult KernelLowering::lowerProduct(OpBuilder &b, Value matrix,
                                           Value vector, bool transposed,
                                           Value result, Value dest) {
  Location loc = result.getLoc();
  if (failed(flushStates(b, matrix)) || failed(flushStates(b, vector)))
    return failure();
  // Iterate (i, j) over the matrix; A x reduces j, x^T A reduces i.
  AffineExpr i, j;
  bindDims(ctx, i, j);
  auto matrixMap = AffineMap::get(2, 0, {i, j}, ctx);
  auto vectorMap = AffineMap::get(2, 0, {transposed ? i : j}, ctx);
  auto outMap = AffineMap::get(2, 0, {transposed ? j : i}, ctx);
  Leaves leaves;
  if (failed(visitElement(matrix, matrixMap, leaves)) ||
      failed(visitElement(vector, vectorMap, leaves)))
    return failure();
  SmallVector<AffineMap> maps = leaves.maps();
  maps.push_back(outMap);
  Value zero = arith::ConstantOp::create(b, loc, b.getF32FloatAttr(0.0));
  linalg::FillOp::create(b, loc, ValueRange{zero}, ValueRange{dest});
  SmallVector<utils::IteratorType> iterators{utils::IteratorType::parallel,
                                             utils::IteratorType::reduction};
  if (transposed)
    std::swap(iterators[0], iterators[1]);
  bool ok = true;
  linalg::GenericOp::create(
      b, loc, leaves.buffers(), ValueRange{dest}, maps, iterators,
      [&](OpBuilder &nb, Location nloc, ValueRange args) {
        FailureOr<Value> a = emitElement(nb, matrix, matrixMap, leaves, args);
        FailureOr<Value> x = emitElement(nb, vector, vectorMap, leaves, args);
        ok = succeeded(a) && succeeded(x);
        if (!ok) {
          linalg::YieldOp::create(nb, nloc, args.back());
          return;
        }
        // Reassociation lets LLVM vectorise the dot product (and contract it
        // into FMAs); the sum order then differs from the sequential one only
        // by float32 rounding.
        auto flags = arith::FastMathFlagsAttr::get(
            ctx, arith::FastMathFlags::reassoc | arith::FastMathFlags::contract);
        Value prod = arith::MulFOp::create(nb, nloc, *a, *x, flags);
        linalg::YieldOp::create(
            nb, nloc,
            Value(arith::AddFOp::create(nb, nloc, args.back(), prod, flags)));
      });
  lowered[result] = {Lowered::Kind::Buffer, dest};
  return success(ok);
}

LogicalResult KernelLowering::lowerReduction(
    OpBuilder &b, Location loc, Value input, Value dest, double init,
    function_ref<Value(OpBuilder &, Location, Value, Value)> combine) {
  if (failed(flushStates(b, input)))
    return failure();
  unsigned rank = cast<RankedTensorType>(input.getType()).getRank();
  unsigned outRank = cast<MemRefType>(dest.getType()).getRank();
  AffineMap inMap = AffineMap::getMultiDimIdentityMap(rank, ctx);
  // Full reduction to a 0-d buffer, or a row reduction (keep dim 0).
  AffineMap outMap = outRank == 0 ? AffineMap::get(rank, 0, {}, ctx)
                                  : inMap.getSubMap({0});
  SmallVector<utils::IteratorType> iterators(rank,
                                             utils::IteratorType::reduction);
  if (outRank == 1)
    iterators[0] = utils::IteratorType::parallel;
  Leaves leaves;
  if (failed(visitElement(input, inMap, leaves)))
    return failure();
  SmallVector<AffineMap> maps = leaves.maps();
  maps.push_back(outMap);
  Value start = arith::ConstantOp::create(b, loc, b.getF32FloatAttr(init));
  linalg::FillOp::create(b, loc, ValueRange{start}, ValueRange{dest});
  bool ok = true;
  linalg::GenericOp::create(
      b, loc, leaves.buffers(), ValueRange{dest}, maps, iterators,
      [&](OpBuilder &nb, Location nloc, ValueRange args) {
        FailureOr<Value> x = emitElement(nb, input, inMap, leaves, args);
        ok = succeeded(x);
        linalg::YieldOp::create(
            nb, nloc, ok ? combine(nb, nloc, args.back(), *x) : args.back());
      });
  return success(ok);
}

LogicalResult KernelLowering::lowerOp(OpBuilder &b, Operation &op) {
  if (auto ret = dyn_cast<func::ReturnOp>(op))
    return lowerReturn(b, ret);
  if (op.getNumResults() != 1)
    return op.emitError("cannot lower '")
           << op.getName() << "' to a kernel: expected a single result";
  Value result = op.getResult(0);
  auto tensorType = dyn_cast<RankedTensorType>(result.getType());

  if (auto cst = dyn_cast<arith::ConstantOp>(op)) {
    std::optional<double> value;
    if (auto f = dyn_cast<FloatAttr>(cst.getValue()))
      value = f.getValueAsDouble();
    else if (auto dense = dyn_cast<DenseFPElementsAttr>(cst.getValue());
             dense && dense.isSplat())
      value = dense.getSplatValue<APFloat>().convertToDouble();
    if (!value)
      return op.emitError("cannot lower this constant to a kernel (only f32 "
                          "scalars and splats are supported)");
    Value scalar = arith::ConstantOp::create(
        b, op.getLoc(), b.getFloatAttr(getElementTypeOrSelf(result.getType()),
                                       *value));
    lowered[result] = {tensorType ? Lowered::Kind::Splat : Lowered::Kind::Scalar,
                       scalar};
    return success();
  }
  auto add = [](OpBuilder &nb, Location nloc, Value acc, Value x) -> Value {
    return arith::AddFOp::create(nb, nloc, acc, x);
  };
  auto addSquare = [](OpBuilder &nb, Location nloc, Value acc,
                      Value x) -> Value {
    return arith::AddFOp::create(nb, nloc, acc,
                                 arith::MulFOp::create(nb, nloc, x, x));
  };
  auto max = [](OpBuilder &nb, Location nloc, Value acc, Value x) -> Value {
    return arith::MaximumFOp::create(nb, nloc, acc, x);
  };
  if (isa<SumOp, NormOp>(op)) {
    Value acc = memref::AllocaOp::create(*entryBuilder, op.getLoc(),
                                         MemRefType::get({}, b.getF32Type()));
    bool norm = isa<NormOp>(op);
    if (failed(lowerReduction(b, op.getLoc(), op.getOperand(0), acc, 0.0,
                              norm ? function_ref<Value(OpBuilder &, Location,
                                                        Value, Value)>(addSquare)
                                   : add)))
      return failure();
    Value total = memref::LoadOp::create(b, op.getLoc(), acc);
    if (norm)
      total = math::SqrtOp::create(b, op.getLoc(), total);
    lowered[result] = {Lowered::Kind::Scalar, total};
    return success();
  }
  if (isa<RowSumOp, RowMaxOp>(op)) {
    Value dest = destinationFor(result);
    bool isMax = isa<RowMaxOp>(op);
    if (failed(lowerReduction(
            b, op.getLoc(), op.getOperand(0), dest,
            isMax ? -std::numeric_limits<double>::infinity() : 0.0,
            isMax ? function_ref<Value(OpBuilder &, Location, Value, Value)>(max)
                  : add)))
      return failure();
    lowered[result] = {Lowered::Kind::Buffer, dest};
    return success();
  }
  if (auto extract = dyn_cast<ExtractOp>(op)) {
    // One step's row (or value) of a per-step input: a view, not a copy.
    Lowered in = lowered.lookup(extract.getInput());
    if (in.kind != Lowered::Kind::Buffer)
      return op.emitError("can only extract from a kernel input");
    Value index = arith::ConstantIndexOp::create(b, op.getLoc(), extract.getIndex());
    if (!tensorType) {
      lowered[result] = {Lowered::Kind::Scalar,
                         memref::LoadOp::create(b, op.getLoc(), in.value, index)};
      return success();
    }
    lowered[result] = {Lowered::Kind::Buffer,
                       slice(b, op.getLoc(), in.value, {index}, tensorType.getShape())};
    return success();
  }
  if (auto matvec = dyn_cast<MatVecOp>(op))
    return lowerProduct(b, matvec.getMatrix(), matvec.getVector(),
                        /*transposed=*/false, result, destinationFor(result));
  if (auto vecmat = dyn_cast<VecMatOp>(op))
    return lowerProduct(b, vecmat.getMatrix(), vecmat.getVector(),
                        /*transposed=*/true, result, destinationFor(result));

  // A broadcast of a scalar, or an element-wise op on scalars and splats only,
  // stays a single scalar value.
  auto scalarLike = [&](Value v) {
    Lowered::Kind k = lowered.lookup(v).kind;
    return k == Lowered::Kind::Scalar || k == Lowered::Kind::Splat;
  };
  if (llvm::all_of(op.getOperands(), scalarLike) &&
      (isa<BroadcastOp>(op) || isElementwise(&op))) {
    SmallVector<Value> operands;
    for (Value operand : op.getOperands())
      operands.push_back(lowered.lookup(operand).value);
    Value scalar = isa<BroadcastOp>(op) ? operands[0]
                                        : emitScalarOp(b, &op, operands);
    lowered[result] = {tensorType ? Lowered::Kind::Splat : Lowered::Kind::Scalar,
                       scalar};
    return success();
  }
  if (!isElementwise(&op) && !isa<BroadcastOp, OuterOp>(op))
    return op.emitError("cannot lower '") << op.getName() << "' to a kernel";
  if (!tensorType)
    return op.emitError("unexpected scalar op with tensor operands");
  lowered[result] = {Lowered::Kind::Lazy, Value()};
  // Matrices stay lazy (fused into their consumers) unless re-evaluating them
  // per consumer would repeat transcendental work: a mirror map W = map(A)
  // read by both the forward and the backward pass is computed once.
  // New states of any rank stay lazy too: they are written into their slice
  // by the first consumer's flush or at the return, never before the old
  // value's last reader.
  bool isState = llvm::any_of(states, [&](const State &s) { return s.next == result; });
  if (isState || (tensorType.getRank() == 2 &&
                  (result.hasOneUse() || !isExpensive(result))))
    return success();
  Value dest = tensorType.getRank() == 2 ? heapScratch(tensorType)
                                         : destinationFor(result);
  if (failed(materialize(b, result, dest)))
    return failure();
  lowered[result] = {Lowered::Kind::Buffer, dest};
  return success();
}

LogicalResult KernelLowering::lowerReturn(OpBuilder &b, func::ReturnOp ret) {
  for (unsigned index = 0; index < states.size(); ++index)
    if (!writing.contains(index) && failed(writeState(b, index)))
      return failure();
  Lowered o = lowered.lookup(outputValue);
  if (o.kind == Lowered::Kind::Buffer && o.value == outputSlice)
    return success();
  if (o.kind == Lowered::Kind::Buffer) {
    memref::CopyOp::create(b, ret.getLoc(), o.value, outputSlice);
    return success();
  }
  return materialize(b, outputValue, outputSlice);
}

void KernelLowering::bindToken(OpBuilder &b, Location loc, Block *entry,
                               Value bi, Value ti, Value hi, unsigned first) {
  Block &body = step.getBody().front();
  SmallVector<GateOp> gates = module.getGates();
  int64_t dk = module.getDk(), dv = module.getDv(), steps = module.getSteps();
  auto perStep = [&](int64_t width) {
    return steps == 1 ? SmallVector<int64_t>{width}
                      : SmallVector<int64_t>{steps, width};
  };
  SmallVector<Value> prefix{bi, ti, hi};
  unsigned next = first;
  lowered[body.getArgument(next++)] = {
      Lowered::Kind::Buffer, slice(b, loc, entry->getArgument(2), prefix, {dk})};
  lowered[body.getArgument(next++)] = {
      Lowered::Kind::Buffer,
      slice(b, loc, entry->getArgument(3), prefix, perStep(dk))};
  lowered[body.getArgument(next++)] = {
      Lowered::Kind::Buffer,
      slice(b, loc, entry->getArgument(4), prefix, perStep(dv))};
  for (auto [i, gate] : llvm::enumerate(gates)) {
    Value source = entry->getArgument(5 + i);
    Value arg = body.getArgument(next++);
    SmallVector<int64_t> shape = gateShape(gate);
    if (!shape.empty())
      lowered[arg] = {Lowered::Kind::Buffer, slice(b, loc, source, prefix, shape)};
    else
      lowered[arg] = {Lowered::Kind::Scalar,
                      memref::LoadOp::create(b, loc, source, prefix)};
  }
}

LogicalResult KernelLowering::storeRow(OpBuilder &b, Location loc, Value tensor,
                                       Value row) {
  Lowered l = lowered.lookup(tensor);
  switch (l.kind) {
  case Lowered::Kind::Buffer:
    memref::CopyOp::create(b, loc, l.value, row);
    return success();
  case Lowered::Kind::Splat:
    linalg::FillOp::create(b, loc, ValueRange{l.value}, ValueRange{row});
    return success();
  case Lowered::Kind::Lazy:
    return materialize(b, tensor, row);
  default:
    return emitError(loc) << "internal error: chunk row is not a lowered vector";
  }
}

/// out (+)= sign * product(ins) over an iteration space given by `maps`
/// (one per input, then the output's) and `iterators`.
static void emitContraction(OpBuilder &b, Location loc, ValueRange ins,
                            ArrayRef<AffineMap> maps, Value out,
                            ArrayRef<utils::IteratorType> iterators,
                            double sign) {
  MLIRContext *ctx = b.getContext();
  auto flags = arith::FastMathFlagsAttr::get(
      ctx, arith::FastMathFlags::reassoc | arith::FastMathFlags::contract);
  linalg::GenericOp::create(
      b, loc, ins, ValueRange{out}, maps, iterators,
      [&](OpBuilder &nb, Location nloc, ValueRange args) {
        Value product = args[0];
        for (Value factor : args.drop_front().drop_back())
          product = arith::MulFOp::create(nb, nloc, product, factor, flags);
        Value acc = args.back();
        Value result =
            sign < 0 ? Value(arith::SubFOp::create(nb, nloc, acc, product, flags))
                     : Value(arith::AddFOp::create(nb, nloc, acc, product, flags));
        linalg::YieldOp::create(nb, nloc, result);
      });
}

void KernelLowering::writeOutputs(OpBuilder &b, Location loc, Block *entry,
                                  Value O, Value bi, Value hi, Value start,
                                  Value size) {
  int64_t dv = module.getDv();
  Value c0 = arith::ConstantIndexOp::create(b, loc, 0);
  Value c1 = arith::ConstantIndexOp::create(b, loc, 1);
  auto loop = scf::ForOp::create(b, loc, c0, size, c1);
  OpBuilder::InsertionGuard guard(b);
  b.setInsertionPointToStart(loop.getBody());
  Value t = loop.getInductionVar();
  Value ti = arith::AddIOp::create(b, loc, start, t);
  Value out = entry->getArgument(entry->getNumArguments() - 1);
  memref::CopyOp::create(b, loc, slice(b, loc, O, {t}, {dv}),
                         slice(b, loc, out, {bi, ti, hi}, {dv}));
}

LogicalResult KernelLowering::buildChannelChunk(
    OpBuilder &b, Location loc, Block *entry, const ParallelForm &form,
    Value bi, Value hi, Value start, Value size, Value stateSlice,
    ArrayRef<Value> buffers) {
  int64_t dk = module.getDk(), chunk = module.getChunk();
  Value U = buffers[0], Wk = buffers[1], Q = buffers[2], decays = buffers[3],
        S = buffers[4], O = buffers[5];
  Type f32 = b.getF32Type();
  // rho: the running product of column decays; Qg[t] = Gamma_t .* q_t and
  // WkEnd[j] = w_j .* (a_{j+1} ... a_{C-1}), for the outputs and the state.
  Value rho = heapScratch(RankedTensorType::get({dk}, f32));
  Value dot = heapScratch(RankedTensorType::get({}, f32));
  Value Qg = heapScratch(RankedTensorType::get({chunk, dk}, f32));
  Value WkEnd = heapScratch(RankedTensorType::get({chunk, dk}, f32));
  Value c0 = arith::ConstantIndexOp::create(b, loc, 0);
  Value c1 = arith::ConstantIndexOp::create(b, loc, 1);
  Value cC = arith::ConstantIndexOp::create(b, loc, chunk);
  Value last = arith::ConstantIndexOp::create(b, loc, chunk - 1);
  Value zero = arith::ConstantOp::create(b, loc, b.getF32FloatAttr(0.0));
  Value one = arith::ConstantOp::create(b, loc, b.getF32FloatAttr(1.0));
  AffineMap id1 = AffineMap::getMultiDimIdentityMap(1, ctx);
  // dest[c] = x[c] * y[c] (dest may be x: in place).
  auto multiply = [&](Value x, Value y, Value dest) {
    linalg::GenericOp::create(
        b, loc, ValueRange{x, y}, ValueRange{dest},
        ArrayRef<AffineMap>{id1, id1, id1}, parallel(1),
        [&](OpBuilder &nb, Location nloc, ValueRange args) {
          linalg::YieldOp::create(
              nb, nloc, Value(arith::MulFOp::create(nb, nloc, args[0], args[1])));
        });
  };
  // Iterates j = C-1 down to 0 with the body given j.
  auto downward = [&](function_ref<void(Value)> body) {
    auto loop = scf::ForOp::create(b, loc, c0, cC, c1);
    OpBuilder::InsertionGuard guard(b);
    b.setInsertionPointToStart(loop.getBody());
    body(arith::SubIOp::create(b, loc, last, loop.getInductionVar()));
  };

  // S[t][j] = sum_c w_j[c] q_t[c] (a_{j+1} ... a_{last(t)})[c] for j <= last(t)
  // (last(t) = t after write, t - 1 before), else 0.
  auto rowLoop = scf::ForOp::create(b, loc, c0, cC, c1);
  {
    OpBuilder::InsertionGuard guard(b);
    b.setInsertionPointToStart(rowLoop.getBody());
    Value t = rowLoop.getInductionVar();
    Value limit = form.readsNew ? Value(arith::AddIOp::create(b, loc, t, c1)) : t;
    Value qRow = slice(b, loc, Q, {t}, {dk});
    linalg::FillOp::create(b, loc, ValueRange{one}, ValueRange{rho});
    downward([&](Value j) {
      Value inside =
          arith::CmpIOp::create(b, loc, arith::CmpIPredicate::ult, j, limit);
      auto ifOp = scf::IfOp::create(b, loc, inside, /*withElseRegion=*/true);
      {
        OpBuilder::InsertionGuard inner(b);
        b.setInsertionPointToStart(ifOp.thenBlock());
        linalg::FillOp::create(b, loc, ValueRange{zero}, ValueRange{dot});
        emitContraction(b, loc, {slice(b, loc, Wk, {j}, {dk}), qRow, rho},
                        {id1, id1, id1, AffineMap::get(1, 0, {}, ctx)}, dot,
                        {utils::IteratorType::reduction}, 1.0);
        memref::StoreOp::create(b, loc, memref::LoadOp::create(b, loc, dot), S,
                                ValueRange{t, j});
        multiply(rho, slice(b, loc, decays, {j}, {dk}), rho);
        b.setInsertionPointToStart(ifOp.elseBlock());
        memref::StoreOp::create(b, loc, zero, S, ValueRange{t, j});
      }
    });
    multiply(rho, qRow, slice(b, loc, Qg, {t}, {dk}));
  }
  linalg::FillOp::create(b, loc, ValueRange{one}, ValueRange{rho});
  downward([&](Value j) {
    multiply(slice(b, loc, Wk, {j}, {dk}), rho, slice(b, loc, WkEnd, {j}, {dk}));
    multiply(rho, slice(b, loc, decays, {j}, {dk}), rho);
  });

  AffineExpr d0, d1, d2;
  bindDims(ctx, d0, d1, d2);
  auto map = [&](ArrayRef<AffineExpr> exprs) {
    return AffineMap::get(3, 0, exprs, ctx);
  };
  using utils::IteratorType;
  const IteratorType par = IteratorType::parallel, red = IteratorType::reduction;
  // O = Qg W0^T + sign S U, then the state: W = W0 Diag(Gamma) + sign U^T WkEnd.
  linalg::FillOp::create(b, loc, ValueRange{zero}, ValueRange{O});
  emitContraction(b, loc, {Qg, stateSlice},
                  {map({d0, d2}), map({d1, d2}), map({d0, d1})}, O,
                  {par, par, red}, 1.0);
  emitContraction(b, loc, {S, U}, {map({d0, d1}), map({d1, d2}), map({d0, d2})},
                  O, {par, red, par}, form.sign);
  writeOutputs(b, loc, entry, O, bi, hi, start, size);
  AffineMap identity = AffineMap::getMultiDimIdentityMap(2, ctx);
  linalg::GenericOp::create(
      b, loc, ValueRange{rho}, ValueRange{stateSlice},
      ArrayRef<AffineMap>{AffineMap::get(2, 0, {getAffineDimExpr(1, ctx)}, ctx),
                          identity},
      parallel(2), [&](OpBuilder &nb, Location nloc, ValueRange args) {
        linalg::YieldOp::create(
            nb, nloc, Value(arith::MulFOp::create(nb, nloc, args[1], args[0])));
      });
  emitContraction(b, loc, {U, WkEnd},
                  {map({d1, d0}), map({d1, d2}), map({d0, d2})}, stateSlice,
                  {par, red, par}, form.sign);
  b.setInsertionPointAfter(b.getInsertionBlock()->getParentOp());
  return success();
}

LogicalResult KernelLowering::buildChunked(OpBuilder &b, Location loc,
                                           Block *entry,
                                           const ParallelForm &form, Value bi,
                                           Value hi, Value length,
                                           Value stateSlice) {
  int64_t dk = module.getDk(), dv = module.getDv(), chunk = module.getChunk();
  Block &body = step.getBody().front();
  Type f32 = b.getF32Type();
  auto buffer = [&](ArrayRef<int64_t> shape) {
    return heapScratch(RankedTensorType::get(shape, f32));
  };
  // Per chunk: the rank-1 factors and queries of its tokens, their decays,
  // the decay products R (reads) and r (the chunk's end), Q Wk^T, outputs.
  bool channel = form.channelDecay;
  Value U = buffer({chunk, dv}), Wk = buffer({chunk, dk}),
        Q = buffer({chunk, dk}),
        decays = channel ? buffer({chunk, dk}) : buffer({chunk}),
        R = buffer({chunk, chunk}), g = buffer({chunk}), rEnd = buffer({chunk}),
        S = buffer({chunk, chunk}), O = buffer({chunk, dv});
  Value c0 = arith::ConstantIndexOp::create(b, loc, 0);
  Value c1 = arith::ConstantIndexOp::create(b, loc, 1);
  Value cC = arith::ConstantIndexOp::create(b, loc, chunk);
  Value zero = arith::ConstantOp::create(b, loc, b.getF32FloatAttr(0.0));
  Value one = arith::ConstantOp::create(b, loc, b.getF32FloatAttr(1.0));

  auto chunkLoop = scf::ForOp::create(b, loc, c0, length, cC);
  b.setInsertionPointToStart(chunkLoop.getBody());
  Value start = chunkLoop.getInductionVar();
  Value remaining = arith::SubIOp::create(b, loc, length, start);
  Value size = arith::MinUIOp::create(b, loc, remaining, cC);
  // A short last chunk: zero rows add nothing, unit decays change nothing.
  for (Value rows : {U, Wk, Q})
    linalg::FillOp::create(b, loc, ValueRange{zero}, ValueRange{rows});
  linalg::FillOp::create(b, loc, ValueRange{one}, ValueRange{decays});

  // Phase 1, token by token: everything of the step that does not read W.
  // Gradients read the anchor, which is W itself until the chunk ends.
  auto tokenLoop = scf::ForOp::create(b, loc, c0, size, c1);
  {
    OpBuilder::InsertionGuard guard(b);
    b.setInsertionPointToStart(tokenLoop.getBody());
    Value t = tokenLoop.getInductionVar();
    Value ti = arith::AddIOp::create(b, loc, start, t);
    lowered[body.getArgument(1)] = {Lowered::Kind::Buffer, stateSlice};
    bindToken(b, loc, entry, bi, ti, hi, /*first=*/2);
    for (Operation &op : body.without_terminator())
      if (!form.stateOps.contains(&op) && failed(lowerOp(b, op)))
        return failure();
    if (failed(storeRow(b, loc, form.u, slice(b, loc, U, {t}, {dv}))) ||
        failed(storeRow(b, loc, form.w, slice(b, loc, Wk, {t}, {dk}))) ||
        failed(storeRow(b, loc, form.query, slice(b, loc, Q, {t}, {dk}))))
      return failure();
    if (form.decay && channel &&
        failed(storeRow(b, loc, form.decay, slice(b, loc, decays, {t}, {dk}))))
      return failure();
    if (form.decay && !channel)
      memref::StoreOp::create(b, loc, lowered.lookup(form.decay).value, decays,
                              ValueRange{t});
  }
  if (channel)
    return buildChannelChunk(b, loc, entry, form, bi, hi, start, size,
                             stateSlice, {U, Wk, Q, decays, S, O});

  // Decay products: ratios[j] = s_{j+1} ... s_{last} for j <= last, else 0;
  // returns s_0 ... s_last (1 for last = -1). `limit` = last + 1.
  auto products = [&](Value limit, Value ratios) -> Value {
    auto loop = scf::ForOp::create(b, loc, c0, cC, c1, ValueRange{one});
    OpBuilder::InsertionGuard guard(b);
    b.setInsertionPointToStart(loop.getBody());
    Value jj = loop.getInductionVar(), acc = loop.getRegionIterArgs()[0];
    Value j = arith::SubIOp::create(
        b, loc, arith::ConstantIndexOp::create(b, loc, chunk - 1), jj);
    Value inside =
        arith::CmpIOp::create(b, loc, arith::CmpIPredicate::ult, j, limit);
    memref::StoreOp::create(
        b, loc, arith::SelectOp::create(b, loc, inside, acc, zero), ratios,
        ValueRange{j});
    Value scaled = arith::MulFOp::create(
        b, loc, acc, memref::LoadOp::create(b, loc, decays, ValueRange{j}));
    scf::YieldOp::create(b, loc,
                         ValueRange{arith::SelectOp::create(b, loc, inside,
                                                            scaled, acc)});
    return loop.getResult(0);
  };
  // Token t reads the state after token t (read after write) or t - 1.
  auto rowLoop = scf::ForOp::create(b, loc, c0, cC, c1);
  {
    OpBuilder::InsertionGuard guard(b);
    b.setInsertionPointToStart(rowLoop.getBody());
    Value t = rowLoop.getInductionVar();
    Value limit = form.readsNew ? Value(arith::AddIOp::create(b, loc, t, c1)) : t;
    Value total = products(limit, slice(b, loc, R, {t}, {chunk}));
    memref::StoreOp::create(b, loc, total, g, ValueRange{t});
  }
  Value gEnd = products(cC, rEnd);

  AffineExpr d0, d1, d2;
  bindDims(ctx, d0, d1, d2);
  auto map = [&](ArrayRef<AffineExpr> exprs) {
    return AffineMap::get(3, 0, exprs, ctx);
  };
  using utils::IteratorType;
  const IteratorType par = IteratorType::parallel, red = IteratorType::reduction;
  // S = Q Wk^T over (t, j, c).
  linalg::FillOp::create(b, loc, ValueRange{zero}, ValueRange{S});
  emitContraction(b, loc, {Q, Wk},
                  {map({d0, d2}), map({d1, d2}), map({d0, d1})}, S,
                  {par, par, red}, 1.0);
  // O = diag(g) Q W0^T over (t, i, c), then O += sign (R .* S) U over (t, j, i).
  linalg::FillOp::create(b, loc, ValueRange{zero}, ValueRange{O});
  emitContraction(b, loc, {g, Q, stateSlice},
                  {map({d0}), map({d0, d2}), map({d1, d2}), map({d0, d1})}, O,
                  {par, par, red}, 1.0);
  emitContraction(b, loc, {R, S, U},
                  {map({d0, d1}), map({d0, d1}), map({d1, d2}), map({d0, d2})},
                  O, {par, red, par}, form.sign);
  writeOutputs(b, loc, entry, O, bi, hi, start, size);
  // The state at the chunk's end: W = g W0 + sign U^T diag(r) Wk over (i, j, c).
  AffineMap identity = AffineMap::getMultiDimIdentityMap(2, ctx);
  linalg::GenericOp::create(
      b, loc, ValueRange{}, ValueRange{stateSlice}, ArrayRef<AffineMap>{identity},
      parallel(2), [&](OpBuilder &nb, Location nloc, ValueRange args) {
        linalg::YieldOp::create(
            nb, nloc, Value(arith::MulFOp::create(nb, nloc, args[0], gEnd)));
      });
  emitContraction(b, loc, {rEnd, U, Wk},
                  {map({d1}), map({d1, d0}), map({d1, d2}), map({d0, d2})},
                  stateSlice, {par, red, par}, form.sign);
  b.setInsertionPointAfter(chunkLoop);
  return success();
}

LogicalResult KernelLowering::run() {
  Location loc = module.getLoc();
  int64_t dk = module.getDk(), dv = module.getDv(), chunk = module.getChunk();
  SmallVector<GateOp> gates = module.getGates();
  Block &body = step.getBody().front();
  auto ret = cast<func::ReturnOp>(body.getTerminator());
  // Step signature (miras-derive-update): states, anchors of the first
  // states when chunk > 1, q, k, v, gates -> new states, o.
  unsigned numStates = ret.getNumOperands() - 1;
  unsigned numAnchors = body.getNumArguments() - numStates - 3 - gates.size();
  auto shapeOf = [](Value v) {
    return cast<RankedTensorType>(v.getType()).getShape();
  };

  std::optional<ParallelForm> form;
  if (algorithm != "sequential") {
    std::string why;
    FailureOr<ParallelForm> matched =
        matchParallelForm(step, numStates, numAnchors, why);
    if (succeeded(matched))
      form = std::move(*matched);
    else if (algorithm == "chunked")
      return module.emitError("the chunked parallel form does not apply: ")
             << why << " (the sequential algorithm does)";
  }

  // Per token: q [Dk]; k, v [Dk] / [Dv], or one row per step of multistep.
  int64_t steps = module.getSteps();
  auto perStep = [&](int64_t width) {
    return steps == 1 ? SmallVector<int64_t>{width}
                      : SmallVector<int64_t>{steps, width};
  };
  // The kernel runs the flattened (batch, head) pairs [begin, end), so that
  // the host can split one forward over threads (miras_abi.h forward_range).
  Type indexType = IndexType::get(ctx);
  SmallVector<Type> argTypes{indexType, indexType, sequenceType(ctx, 3, {dk}),
                             sequenceType(ctx, 3, perStep(dk)),
                             sequenceType(ctx, 3, perStep(dv))};
  for (GateOp gate : gates)
    argTypes.push_back(sequenceType(ctx, 3, gateShape(gate)));
  for (unsigned i = 0; i < numStates; ++i)
    argTypes.push_back(sequenceType(ctx, 2, shapeOf(body.getArgument(i))));
  argTypes.push_back(sequenceType(ctx, 3, {dv}));

  OpBuilder b(module);
  auto kernel = func::FuncOp::create(
      b, loc, (module.getSymName() + "_kernel").str(),
      b.getFunctionType(argTypes, {}));
  kernel->setAttr("llvm.emit_c_interface", b.getUnitAttr());
  // Which algorithm was built, for the library's metadata.
  kernel->setAttr("miras.algorithm",
                  b.getStringAttr(form ? "chunked" : "sequential"));
  Block *entry = kernel.addEntryBlock();
  b.setInsertionPointToEnd(entry);

  Value rangeBegin = entry->getArgument(0), rangeEnd = entry->getArgument(1);
  Value q = entry->getArgument(2);
  Value out = entry->getArgument(entry->getNumArguments() - 1);
  Value c0 = arith::ConstantIndexOp::create(b, loc, 0);
  Value c1 = arith::ConstantIndexOp::create(b, loc, 1);
  // Scratch buffers go first in the entry block, outside every loop.
  OpBuilder eb(ctx);
  eb.setInsertionPoint(c0.getDefiningOp());
  entryBuilder = &eb;
  Value length = memref::DimOp::create(b, loc, q, 1);
  Value heads = memref::DimOp::create(b, loc, q, 2);
  // Anchors (SPEC section 7) can be large: heap, not stack. The chunked form
  // reads the state itself, unchanged until its chunk ends.
  SmallVector<Value> anchors;
  if (!form)
    for (unsigned i = 0; i < numAnchors; ++i)
      anchors.push_back(heapScratch(cast<RankedTensorType>(body.getArgument(i).getType())));

  auto pairLoop = scf::ForOp::create(b, loc, rangeBegin, rangeEnd, c1);
  b.setInsertionPointToStart(pairLoop.getBody());
  Value pair = pairLoop.getInductionVar();
  Value bi = arith::DivUIOp::create(b, loc, pair, heads);
  Value hi = arith::RemUIOp::create(b, loc, pair, heads);
  for (unsigned i = 0; i < numStates; ++i) {
    Value buffer = entry->getArgument(5 + gates.size() + i);
    Value old = body.getArgument(i);
    states.push_back(
        {old, ret.getOperand(i), slice(b, loc, buffer, {bi, hi}, shapeOf(old))});
    lowered[old] = {Lowered::Kind::Buffer, states.back().slice};
  }

  if (form) {
    Value stateSlice = states.front().slice;
    states.clear(); // the chunk algebra writes the state, not lowerReturn
    if (failed(buildChunked(b, loc, entry, *form, bi, hi, length, stateSlice)))
      return failure();
  } else {
    auto tLoop = scf::ForOp::create(b, loc, c0, length, c1);
    b.setInsertionPointToStart(tLoop.getBody());
    Value ti = tLoop.getInductionVar();

    if (!anchors.empty()) {
      Value chunkSize = arith::ConstantIndexOp::create(b, loc, chunk);
      Value offset = arith::RemUIOp::create(b, loc, ti, chunkSize);
      Value starts =
          arith::CmpIOp::create(b, loc, arith::CmpIPredicate::eq, offset, c0);
      auto ifOp = scf::IfOp::create(b, loc, starts, /*withElseRegion=*/false);
      OpBuilder tb = ifOp.getThenBodyBuilder();
      for (auto [i, anchor] : llvm::enumerate(anchors))
        memref::CopyOp::create(tb, loc, states[i].slice, anchor);
    }
    for (auto [i, anchor] : llvm::enumerate(anchors))
      lowered[body.getArgument(numStates + i)] = {Lowered::Kind::Buffer, anchor};
    bindToken(b, loc, entry, bi, ti, hi, numStates + numAnchors);
    outputSlice = slice(b, loc, out, {bi, ti, hi}, {dv});
    outputValue = ret.getOperands().back();

    for (Operation &op : body)
      if (failed(lowerOp(b, op)))
        return failure();
  }

  b.setInsertionPointAfter(pairLoop);
  for (Value buffer : heapBuffers)
    memref::DeallocOp::create(b, loc, buffer);
  func::ReturnOp::create(b, loc);
  return success();
}

struct LowerToLinalgPass
    : public miras::impl::MirasLowerToLinalgBase<LowerToLinalgPass> {
  using MirasLowerToLinalgBase::MirasLowerToLinalgBase;
  void runOnOperation() override {
    if (algorithm != "auto" && algorithm != "sequential" &&
        algorithm != "chunked") {
      getOperation().emitError("unknown algorithm '")
          << algorithm << "': expected auto, sequential or chunked";
      return signalPassFailure();
    }
    for (auto module :
         llvm::make_early_inc_range(getOperation().getOps<MemoryModuleOp>())) {
      auto step = dyn_cast_or_null<func::FuncOp>(
          SymbolTable::lookupSymbolIn(module, "step"));
      if (!step) {
        module.emitError("no derived step function: run miras-derive-update "
                         "first");
        return signalPassFailure();
      }
      if (failed(KernelLowering(module, step, algorithm).run()))
        return signalPassFailure();
      module.erase();
    }
  }
};

} // namespace
