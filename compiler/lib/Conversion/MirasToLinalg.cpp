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
#include "KernelLowering.h"
#include "SimtForm.h"
#include "miras/Dialect/Miras/IR/StepSignature.h"

#include "miras/Compiler/Passes.h"
#include "miras/Compiler/Pipelines.h"

#include <limits>

namespace miras {
#define GEN_PASS_DEF_MIRASLOWERTOLINALG
#include "miras/Compiler/Passes.h.inc"
} // namespace miras

namespace miras::lowering {

/// Scratch buffers start on a cache line: a vector of 16 floats that is not
/// on one spans two, and every load and store of it splits (malloc aligns
/// large blocks to 16 bytes; measured on Gated DeltaNet's backward, D = 64:
/// a fifth of its time).
static constexpr int64_t kScratchAlignment = 64;
/// The shortest call whose misaligned states are swept in an aligned copy.
static constexpr int64_t kMinStagedTokens = 8;

/// A scratch buffer on the heap (matrices can be large), freed at exit.
Value KernelLowering::heapScratch(RankedTensorType type) {
  auto memrefType = MemRefType::get(type.getShape(), type.getElementType());
  heapBuffers.push_back(memref::AllocOp::create(
      *entryBuilder, module.getLoc(), memrefType,
      entryBuilder->getI64IntegerAttr(kScratchAlignment)));
  return heapBuffers.back();
}

Value KernelLowering::stageState(OpBuilder &b, Location loc, Value slice,
                                 Value length, Value &copied) {
  // A caller's buffer is as aligned as its allocator makes it (malloc,
  // NumPy: 16 bytes; PyTorch: 64); the state is swept several times per
  // token, and a vector of it that spans two cache lines splits every load
  // and store (Gated DeltaNet's forward, D = 64: 56 against 44 ms).
  auto type = cast<MemRefType>(slice.getType());
  auto metadata = memref::ExtractStridedMetadataOp::create(b, loc, slice);
  Value base = memref::ExtractAlignedPointerAsIndexOp::create(b, loc, slice);
  Value bytes = arith::ConstantIndexOp::create(b, loc, 4);
  Value address = arith::AddIOp::create(
      b, loc, base, arith::MulIOp::create(b, loc, metadata.getOffset(), bytes));
  Value line = arith::ConstantIndexOp::create(b, loc, kScratchAlignment);
  Value c0 = arith::ConstantIndexOp::create(b, loc, 0);
  Value misaligned = arith::CmpIOp::create(
      b, loc, arith::CmpIPredicate::ne, arith::RemUIOp::create(b, loc, address, line), c0);
  // The copies in and out cost about two sweeps of the state: not worth it
  // for a short call (a decode step with anchors, D = 128: 0.19 against
  // 0.08 ms per token).
  Value enough = arith::CmpIOp::create(
      b, loc, arith::CmpIPredicate::uge, length,
      arith::ConstantIndexOp::create(b, loc, kMinStagedTokens));
  copied = arith::AndIOp::create(b, loc, misaligned, enough);
  Value copy = memref::CastOp::create(
      b, loc, type,
      heapScratch(RankedTensorType::get(type.getShape(), type.getElementType())));
  auto ifOp = scf::IfOp::create(b, loc, copied, /*withElseRegion=*/false);
  ifOp->setAttr(kStagedAttr, b.getUnitAttr());
  OpBuilder tb = ifOp.getThenBodyBuilder();
  memref::CopyOp::create(tb, loc, slice, copy);
  auto buffer = arith::SelectOp::create(b, loc, copied, copy, slice);
  buffer->setAttr(kStagedAttr, b.getUnitAttr());
  return buffer;
}

void KernelLowering::unstageState(OpBuilder &b, Location loc, Value buffer,
                                  Value slice, Value copied) {
  auto ifOp = scf::IfOp::create(b, loc, copied, /*withElseRegion=*/false);
  ifOp->setAttr(kStagedAttr, b.getUnitAttr());
  OpBuilder tb = ifOp.getThenBodyBuilder();
  memref::CopyOp::create(tb, loc, buffer, slice);
}

Value KernelLowering::scratch(RankedTensorType type) {
  // Small vectors live on the stack; wide ones (an MLP's hidden layer at a
  // large D) on the heap, so that no width can overflow a thread's stack.
  constexpr int64_t kStackElements = 1024;
  if (type.getNumElements() > kStackElements)
    return heapScratch(type);
  auto memrefType = MemRefType::get(type.getShape(), type.getElementType());
  return memref::AllocaOp::create(*entryBuilder, module.getLoc(), memrefType,
                                  entryBuilder->getI64IntegerAttr(kScratchAlignment));
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

bool isElementwise(Operation *op) {
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
    leaves.index.insert(
        {{l.value, map}, static_cast<unsigned>(leaves.index.size())});
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

SmallVector<utils::IteratorType> parallel(unsigned n) {
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
  if (state.old != state.next && state.inPlace)
    lowered[state.old] = {Lowered::Kind::Clobbered, Value()};
  return success();
}

LogicalResult KernelLowering::lowerProduct(OpBuilder &b, Value matrix,
                                           Value vector, bool transposed,
                                           Value result, Value dest) {
  Location loc = result.getLoc();
  if (failed(flushStates(b, matrix)) || failed(flushStates(b, vector)))
    return failure();
  // (s M) x = s (M x): a scalar factor of a lazy matrix (a decay applied
  // before the gradient) scales the m results, not the m * n entries.
  Value factor;
  while (lowered.lookup(matrix).kind == Lowered::Kind::Lazy) {
    auto mul = matrix.getDefiningOp<arith::MulFOp>();
    if (!mul)
      break;
    auto scalarKind = [&](Value v) {
      Lowered::Kind kind = lowered.lookup(v).kind;
      return kind == Lowered::Kind::Scalar || kind == Lowered::Kind::Splat;
    };
    Value scalar = scalarKind(mul.getLhs()) ? mul.getLhs()
                   : scalarKind(mul.getRhs()) ? mul.getRhs()
                                              : Value();
    if (!scalar)
      break;
    Value s = lowered.lookup(scalar).value;
    factor = factor ? Value(arith::MulFOp::create(b, loc, factor, s)) : s;
    matrix = scalar == mul.getLhs() ? mul.getRhs() : mul.getLhs();
  }
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
  if (factor) {
    AffineMap identity = AffineMap::getMultiDimIdentityMap(1, ctx);
    linalg::GenericOp::create(
        b, loc, ValueRange{}, ValueRange{dest}, ArrayRef<AffineMap>{identity},
        parallel(1), [&](OpBuilder &nb, Location nloc, ValueRange args) {
          linalg::YieldOp::create(
              nb, nloc, Value(arith::MulFOp::create(nb, nloc, args[0], factor)));
        });
  }
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
    auto dense = dyn_cast<DenseFPElementsAttr>(cst.getValue());
    constexpr int64_t kMaxConstantElements = 1024;
    if (!value && dense && tensorType && tensorType.getRank() == 1 &&
        dense.getNumElements() <= kMaxConstantElements) {
      // A small constant vector (a reverse step's one-hot selecting one step
      // of a multistep input): filled once at kernel entry.
      Value buffer = scratch(tensorType);
      for (auto [i, element] : llvm::enumerate(dense.getValues<APFloat>())) {
        Value index = arith::ConstantIndexOp::create(*entryBuilder, op.getLoc(), i);
        Value scalar = arith::ConstantOp::create(
            *entryBuilder, op.getLoc(),
            b.getFloatAttr(tensorType.getElementType(), element.convertToDouble()));
        memref::StoreOp::create(*entryBuilder, op.getLoc(), scalar, buffer,
                                ValueRange{index});
      }
      lowered[result] = {Lowered::Kind::Buffer, buffer};
      return success();
    }
    if (!value)
      return op.emitError("cannot lower this constant to a kernel (only f32 "
                          "scalars, splats and vectors of up to ")
             << kMaxConstantElements << " entries are supported)";
    Value scalar = arith::ConstantOp::create(
        b, op.getLoc(), b.getFloatAttr(getElementTypeOrSelf(result.getType()),
                                       *value));
    lowered[result] = {tensorType ? Lowered::Kind::Splat : Lowered::Kind::Scalar,
                       scalar};
    return success();
  }
  // Sums may be reassociated, like the matvec's dot products, so that they
  // vectorise (a norm, a layer-norm mean); only float32 rounding changes.
  auto reassoc = arith::FastMathFlagsAttr::get(
      ctx, arith::FastMathFlags::reassoc | arith::FastMathFlags::contract);
  auto add = [&](OpBuilder &nb, Location nloc, Value acc, Value x) -> Value {
    return arith::AddFOp::create(nb, nloc, acc, x, reassoc);
  };
  auto addSquare = [&](OpBuilder &nb, Location nloc, Value acc,
                       Value x) -> Value {
    return arith::AddFOp::create(
        nb, nloc, acc, arith::MulFOp::create(nb, nloc, x, x, reassoc), reassoc);
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

LogicalResult KernelLowering::storeResult(OpBuilder &b, Location loc,
                                          Value value, Value dest) {
  Lowered l = lowered.lookup(value);
  if (l.kind == Lowered::Kind::Buffer && l.value == dest)
    return success();
  if (l.kind == Lowered::Kind::Buffer) {
    memref::CopyOp::create(b, loc, l.value, dest);
    return success();
  }
  if (l.kind == Lowered::Kind::Scalar) {
    memref::StoreOp::create(b, loc, l.value, dest);
    return success();
  }
  return materialize(b, value, dest);
}

LogicalResult KernelLowering::lowerReturn(OpBuilder &b, func::ReturnOp ret) {
  // The extra outputs first: they may read the old value of a state that
  // the state writes below overwrite.
  for (auto [value, dest] : extraOutputs)
    if (failed(storeResult(b, ret.getLoc(), value, dest)))
      return failure();
  SmallVector<unsigned> order = stateWriteOrder;
  if (order.empty())
    llvm::append_range(order, llvm::seq<unsigned>(0, states.size()));
  for (unsigned index : order)
    if (!writing.contains(index) && failed(writeState(b, index)))
      return failure();
  if (!outputValue)
    return success(); // a step recomputing the states only
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
  int64_t dk = module.getDk(), dv = module.getDv();
  SmallVector<Value> prefix{bi, ti, hi};
  KernelLayout layout = KernelLayout::of(StepSignature::of(module));
  unsigned next = first;
  lowered[body.getArgument(next++)] = {
      Lowered::Kind::Buffer,
      slice(b, loc, entry->getArgument(KernelLayout::query), prefix, {dk})};
  lowered[body.getArgument(next++)] = {
      Lowered::Kind::Buffer,
      slice(b, loc, entry->getArgument(KernelLayout::key), prefix, perStep(dk))};
  lowered[body.getArgument(next++)] = {
      Lowered::Kind::Buffer,
      slice(b, loc, entry->getArgument(KernelLayout::value), prefix, perStep(dv))};
  for (auto [i, gate] : llvm::enumerate(gates)) {
    Value source = entry->getArgument(layout.gate(i));
    Value arg = body.getArgument(next++);
    SmallVector<int64_t> shape = gateShape(gate);
    if (!shape.empty())
      lowered[arg] = {Lowered::Kind::Buffer, slice(b, loc, source, prefix, shape)};
    else
      lowered[arg] = {Lowered::Kind::Scalar,
                      memref::LoadOp::create(b, loc, source, prefix)};
  }
}

void KernelLowering::prefetchToken(OpBuilder &b, Location loc, Block *entry,
                                   Value bi, Value ti, Value hi,
                                   int64_t ahead, ArrayRef<Value> reads,
                                   ArrayRef<Value> writes) {
  // The next token's rows lie H * D floats away, which the hardware
  // prefetcher misses: fetch them while this token's step runs (outside
  // the sequence a prefetch is harmless: it does not fault). Measured
  // (gated_deltanet, B*H=16, 1 thread): the q, k, v prefetch D=64 33 -> 25
  // ms, D=128 ~5 % (T=2048); every line of the rows instead of the first,
  // the output row for writing, and the backward's loops too (T=4096,
  // D=64): forward 47-51 -> 35-37 ms, backward 231-240 -> 168-178 ms.
  Value c0 = arith::ConstantIndexOp::create(*entryBuilder, loc, 0);
  Value next = arith::AddIOp::create(
      b, loc, ti, arith::ConstantIndexOp::create(*entryBuilder, loc, ahead));
  // Every cache line of the row: one prefetch brings one line, and a row
  // of D = 64 floats spans four.
  constexpr int64_t kCacheLineBits = 64 * 8;
  auto prefetch = [&](Value source, bool isWrite) {
    auto type = cast<MemRefType>(source.getType());
    SmallVector<Value> indices{bi, next, hi};
    indices.resize(type.getRank(), c0);
    // [B, T, H] (a scalar gate) has no row to walk; [B, T, H, ..., D] walks D.
    bool hasRow = type.getRank() > 3 && !type.isDynamicDim(type.getRank() - 1);
    int64_t row = hasRow ? type.getShape().back() : 1;
    int64_t perLine =
        std::max<int64_t>(1, kCacheLineBits / type.getElementTypeBitWidth());
    for (int64_t at = 0; at < row; at += perLine) {
      if (hasRow)
        indices.back() = arith::ConstantIndexOp::create(*entryBuilder, loc, at);
      memref::PrefetchOp::create(b, loc, source, indices, isWrite,
                                 /*localityHint=*/3, /*isDataCache=*/true);
    }
  };
  for (Value source : reads)
    prefetch(source, /*isWrite=*/false);
  for (Value source : writes)
    prefetch(source, /*isWrite=*/true);
}

/// The cost rule of algorithm=auto for the dual form: it pays off once a
/// state no longer fits in L1 next to the token's vectors. Measured
/// (bench/RESULTS.md, C = 64, 1 thread): at D = 64 (4096-entry states) the
/// sequential kernel was 1.2x faster for gated_deltanet and deltanet, at
/// D = 128 (16384) the dual form 1.2-1.3x. The scan form always pays off: it
/// computes the anchor's maps once per chunk.
static bool worthDualForm(func::FuncOp step, unsigned numStates) {
  constexpr int64_t kMinStateEntries = 128 * 128;
  Block &body = step.getBody().front();
  for (unsigned i = 0; i < numStates; ++i)
    if (cast<RankedTensorType>(body.getArgument(i).getType()).getNumElements() >=
        kMinStateEntries)
      return true;
  return false;
}

/// The kernel's form for `algorithm`: none (sequential), or the chunked
/// dual or scan form. With chunk > 1: the dual form where the step matches it
/// (under auto, when its states are large enough to gain), else the scan form
/// (ChunkedForm.cpp). Fails, with a located error, when `chunked` was asked
/// and neither applies.
FailureOr<std::optional<ParallelForm>>
planForm(MemoryModuleOp module, func::FuncOp step, StringRef algorithm) {
  StepSignature signature = StepSignature::of(module);
  unsigned numStates = signature.numStates(), numAnchors = signature.numAnchors();
  int64_t chunk = module.getChunk();
  // Its [C, C] buffers bound the chunk size (4 MiB each at the limit).
  constexpr int64_t kMaxChunkedSize = 1024;
  if (algorithm == "sequential")
    return std::optional<ParallelForm>();
  std::string why, whyNotScan;
  FailureOr<ParallelForm> matched =
      matchParallelForm(step, numStates, numAnchors, why);
  if (failed(matched))
    matched = matchScanForm(step, numStates, numAnchors, whyNotScan);
  if (chunk > kMaxChunkedSize) {
    matched = failure();
    whyNotScan = "chunk " + std::to_string(chunk) + " is above its limit of " +
                 std::to_string(kMaxChunkedSize);
  }
  if (succeeded(matched) && algorithm == "auto" && !matched->scan &&
      !worthDualForm(step, numStates))
    matched = failure();
  if (succeeded(matched))
    return std::optional<ParallelForm>(std::move(*matched));
  if (algorithm == "chunked")
    return module.emitError("the chunked algorithm does not apply: ")
           << whyNotScan << " (the sequential algorithm does)";
  return std::optional<ParallelForm>();
}

const char *formName(const std::optional<ParallelForm> &form) {
  return !form ? "sequential" : form->scan ? "chunked-scan" : "chunked";
}

void KernelLowering::closeKernel(OpBuilder &b, Location loc, Operation *pairLoop) {
  b.setInsertionPointAfter(pairLoop);
  for (Value buffer : heapBuffers)
    memref::DeallocOp::create(b, loc, buffer);
  func::ReturnOp::create(b, loc);
}

void KernelLowering::bindStates(ArrayRef<Value> slices) {
  Block &body = step.getBody().front();
  auto ret = cast<func::ReturnOp>(body.getTerminator());
  StepSignature signature = StepSignature::of(module);
  for (auto [i, slice] : llvm::enumerate(slices)) {
    Value old = body.getArgument(signature.stateArg(i));
    states.push_back({old, ret.getOperand(signature.stateResult(i)), slice});
    lowered[old] = {Lowered::Kind::Buffer, slice};
  }
}

Value KernelLowering::loadChunkPosition(OpBuilder &b, Location loc, Value slot) {
  Value c0 = arith::ConstantIndexOp::create(b, loc, 0);
  Value stored = memref::LoadOp::create(b, loc, slot, ValueRange{c0});
  Value count = arith::FPToUIOp::create(b, loc, b.getI64Type(), stored);
  Value index = arith::IndexCastOp::create(b, loc, b.getIndexType(), count);
  Value chunkSize = arith::ConstantIndexOp::create(b, loc, module.getChunk());
  return arith::RemUIOp::create(b, loc, index, chunkSize);
}

LogicalResult KernelLowering::buildTokens(OpBuilder &b, Location loc, Block *entry,
                                          Value bi, Value hi, Value from, Value to,
                                          Value position, ArrayRef<Value> anchors) {
  Block &body = step.getBody().front();
  auto ret = cast<func::ReturnOp>(body.getTerminator());
  StepSignature signature = StepSignature::of(module);
  OpBuilder::InsertionGuard guard(b);
  Value c0 = arith::ConstantIndexOp::create(b, loc, 0);
  Value c1 = arith::ConstantIndexOp::create(b, loc, 1);
  auto tLoop = scf::ForOp::create(b, loc, from, to, c1);
  b.setInsertionPointToStart(tLoop.getBody());
  Value ti = tLoop.getInductionVar();
  if (!anchors.empty()) {
    Value chunkSize = arith::ConstantIndexOp::create(b, loc, module.getChunk());
    Value offset = arith::RemUIOp::create(
        b, loc, arith::AddIOp::create(b, loc, position, ti), chunkSize);
    Value starts = arith::CmpIOp::create(b, loc, arith::CmpIPredicate::eq, offset, c0);
    auto ifOp = scf::IfOp::create(b, loc, starts, /*withElseRegion=*/false);
    OpBuilder tb = ifOp.getThenBodyBuilder();
    for (auto [i, anchor] : llvm::enumerate(anchors))
      memref::CopyOp::create(tb, loc, states[i].slice, anchor);
  }
  for (auto [i, anchor] : llvm::enumerate(anchors))
    lowered[body.getArgument(signature.anchorArg(i))] = {Lowered::Kind::Buffer, anchor};
  bindToken(b, loc, entry, bi, ti, hi, signature.queryArg());
  Value out = entry->getArgument(entry->getNumArguments() - 1);
  prefetchToken(b, loc, entry, bi, ti, hi, /*ahead=*/1, tokenInputs(entry), {out});
  outputSlice = slice(b, loc, out, {bi, ti, hi}, {static_cast<int64_t>(module.getDv())});
  outputValue = ret.getOperands().back();
  for (Operation &op : body)
    if (failed(lowerOp(b, op)))
      return failure();
  return success();
}

LogicalResult KernelLowering::run() {
  Location loc = module.getLoc();
  int64_t dk = module.getDk(), dv = module.getDv(), chunk = module.getChunk();
  SmallVector<GateOp> gates = module.getGates();
  Block &body = step.getBody().front();
  auto ret = cast<func::ReturnOp>(body.getTerminator());
  // The step's and the kernel's argument groups (StepSignature.h).
  StepSignature signature = StepSignature::of(module);
  KernelLayout layout = KernelLayout::of(signature);
  unsigned numStates = signature.numStates(), numAnchors = signature.numAnchors();
  auto shapeOf = [](Value v) {
    return cast<RankedTensorType>(v.getType()).getShape();
  };

  FailureOr<std::optional<ParallelForm>> planned = planForm(module, step, algorithm);
  if (failed(planned))
    return failure();
  std::optional<ParallelForm> form = std::move(*planned);

  // The kernel runs the flattened (batch, head) pairs [begin, end), so that
  // the host can split one forward over threads (miras_abi.h forward_range).
  Type indexType = IndexType::get(ctx);
  SmallVector<Type> argTypes{indexType, indexType};
  llvm::append_range(argTypes, tokenInputTypes());
  for (unsigned i = 0; i < numStates; ++i)
    argTypes.push_back(sequenceType(ctx, 2, shapeOf(body.getArgument(i))));
  for (unsigned i = 0; i < numAnchors; ++i)
    argTypes.push_back(sequenceType(ctx, 2, shapeOf(body.getArgument(i))));
  if (numAnchors)
    argTypes.push_back(sequenceType(ctx, 2, {1})); // the chunk position
  argTypes.push_back(sequenceType(ctx, 3, {dv}));
  assert(argTypes.size() == layout.size());

  OpBuilder b(module);
  auto kernel = func::FuncOp::create(
      b, loc, (module.getSymName() + "_kernel").str(),
      b.getFunctionType(argTypes, {}));
  kernel->setAttr("llvm.emit_c_interface", b.getUnitAttr());
  // Which form was built, for readers of --emit=linalg and the GPU passes
  // (the library's metadata asks plannedAlgorithm, the same decision).
  kernel->setAttr("miras.algorithm", b.getStringAttr(formName(form)));
  Block *entry = kernel.addEntryBlock();
  b.setInsertionPointToEnd(entry);

  Value rangeBegin = entry->getArgument(KernelLayout::pairBegin),
        rangeEnd = entry->getArgument(KernelLayout::pairEnd);
  Value q = entry->getArgument(KernelLayout::query);
  Value c0 = arith::ConstantIndexOp::create(b, loc, 0);
  Value c1 = arith::ConstantIndexOp::create(b, loc, 1);
  // Scratch buffers go first in the entry block, outside every loop.
  OpBuilder eb(ctx);
  eb.setInsertionPoint(c0.getDefiningOp());
  entryBuilder = &eb;
  Value length = memref::DimOp::create(b, loc, q, 1);
  Value heads = memref::DimOp::create(b, loc, q, 2);

  auto pairLoop = scf::ForOp::create(b, loc, rangeBegin, rangeEnd, c1);
  b.setInsertionPointToStart(pairLoop.getBody());
  Value pair = pairLoop.getInductionVar();
  Value bi = arith::DivUIOp::create(b, loc, pair, heads);
  Value hi = arith::RemUIOp::create(b, loc, pair, heads);
  // The token loops sweep the states (and anchors) in place, in buffers
  // that start on a cache line (stageState), written back at the end.
  SmallVector<Value> callerSlices, stateSlices, anchors, copied;
  for (unsigned i = 0; i < numStates + numAnchors; ++i) {
    unsigned argument = i < numStates ? layout.state(i) : layout.anchor(i - numStates);
    callerSlices.push_back(slice(b, loc, entry->getArgument(argument), {bi, hi},
                                 shapeOf(body.getArgument(i < numStates ? i : i - numStates))));
    Value buffer =
        stageState(b, loc, callerSlices.back(), length, copied.emplace_back());
    (i < numStates ? stateSlices : anchors).push_back(buffer);
  }
  auto unstage = [&](OpBuilder &ob) {
    for (unsigned i = 0; i < numStates + numAnchors; ++i)
      unstageState(ob, loc, i < numStates ? stateSlices[i] : anchors[i - numStates],
                   callerSlices[i], copied[i]);
  };

  // Without anchors (chunk 1) the chunked forms do not apply (planForm).
  if (!numAnchors) {
    beginBody(step);
    bindStates(stateSlices);
    if (failed(buildTokens(b, loc, entry, bi, hi, c0, length, Value(), {})))
      return failure();
    unstage(b);
    closeKernel(b, loc, pairLoop);
    return success();
  }

  // With chunk C > 1 the call may start inside a chunk (SPEC section 7,
  // miras_abi.h miras_state_role): the chunk position p says how many of its
  // tokens earlier calls consumed, and the anchors hold that chunk's anchor.
  // Token t then has chunk position (p + t) mod C; at 0 it starts a chunk and
  // the anchors become the states. The chunked form runs whole chunks only:
  // the head up to the first chunk start and a short tail go token by token,
  // so that a decode step (T = 1) costs one token, not a chunk.
  Value positionSlot =
      slice(b, loc, entry->getArgument(layout.chunkPosition()), {bi, hi}, {1});
  Value position = loadChunkPosition(b, loc, positionSlot);
  Value chunkSize = arith::ConstantIndexOp::create(b, loc, chunk);
  if (!form) {
    beginBody(step);
    bindStates(stateSlices);
    if (failed(buildTokens(b, loc, entry, bi, hi, c0, length, position, anchors)))
      return failure();
  } else {
    // head = min((C - p) mod C, T); then whole chunks; then the tail.
    Value head = arith::MinUIOp::create(
        b, loc,
        arith::RemUIOp::create(b, loc, arith::SubIOp::create(b, loc, chunkSize, position),
                               chunkSize),
        length);
    Value rest = arith::SubIOp::create(b, loc, length, head);
    Value tailStart = arith::AddIOp::create(
        b, loc, head,
        arith::MulIOp::create(b, loc, arith::DivUIOp::create(b, loc, rest, chunkSize),
                              chunkSize));
    beginBody(step);
    bindStates(stateSlices);
    if (failed(buildTokens(b, loc, entry, bi, hi, c0, head, position, anchors)))
      return failure();
    beginBody(step);
    bindStates(stateSlices);
    if (failed(buildChunked(b, loc, entry, *form, bi, hi, head, tailStart)))
      return failure();
    beginBody(step);
    bindStates(stateSlices);
    if (failed(buildTokens(b, loc, entry, bi, hi, tailStart, length, position, anchors)))
      return failure();
  }
  // The position after the call; at a chunk start the next token's anchor is
  // the final state (what miras_abi.h promises the anchors hold on output).
  Value final = arith::RemUIOp::create(
      b, loc, arith::AddIOp::create(b, loc, position, length), chunkSize);
  Value atStart = arith::CmpIOp::create(b, loc, arith::CmpIPredicate::eq, final, c0);
  auto ifOp = scf::IfOp::create(b, loc, atStart, /*withElseRegion=*/false);
  OpBuilder tb = ifOp.getThenBodyBuilder();
  for (unsigned i = 0; i < numAnchors; ++i)
    memref::CopyOp::create(tb, loc, stateSlices[i], anchors[i]);
  memref::StoreOp::create(
      b, loc,
      arith::UIToFPOp::create(b, loc, b.getF32Type(),
                              arith::IndexCastOp::create(b, loc, b.getI64Type(), final)),
      positionSlot, ValueRange{c0});
  unstage(b);
  closeKernel(b, loc, pairLoop);
  return success();
}

} // namespace miras::lowering

mlir::FailureOr<std::string> miras::plannedAlgorithm(MemoryModuleOp module,
                                                     llvm::StringRef algorithm) {
  using namespace mlir;
  auto step = dyn_cast_or_null<func::FuncOp>(SymbolTable::lookupSymbolIn(module, "step"));
  if (!step)
    return module.emitError("no derived step function: run miras-derive-update first");
  FailureOr<std::optional<miras::lowering::ParallelForm>> form = miras::lowering::planForm(module, step, algorithm);
  if (failed(form))
    return failure();
  return std::string(miras::lowering::formName(*form));
}


namespace {

using namespace mlir;
using namespace miras;
using miras::lowering::KernelLowering;

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

