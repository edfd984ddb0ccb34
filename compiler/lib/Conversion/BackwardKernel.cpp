//===- BackwardKernel.cpp - The sequence-level reverse pass as a kernel ---===//
//
// `@<name>_backward_kernel` runs the reverse of the sequential forward over a
// whole sequence (docs/TRAINING.md). The reverse step needs the state before
// each token, walked from the last token to the first; storing all T states
// would cost T states per (batch, head) pair, so the kernel recomputes them:
//
//   (a) forward from the initial state, keeping the state before every
//       segment of S tokens (checkpoint c: before token c * S);
//   (b) from the last segment to the first: restore its checkpoint, recompute
//       its (at most S) states into the segment workspace, then apply
//       @step_backward token by token backwards. Its state results are the
//       running state adjoint, alternating between the dstate buffers (which
//       end as the adjoint of the initial state) and spare ones; dq, dk, dv
//       and the gate adjoints are written per token. The products of the
//       state update that @step_backward takes as arguments (miras.tape,
//       miras-tape-recomputed-products) are kept by the recompute, one slot
//       per token of the segment.
//
// With chunk C > 1 the call may start inside a chunk (chunk position p, the
// anchors given): segments are counted in the chunk-aligned time u = p + t,
// so that each chunk lies in one segment and its anchor is one of the
// segment's states (the head's, the anchors given, in slot 0). The final
// anchors' adjoints join the last chunk's anchor adjoints; what is left of
// them at the start is the adjoint of the anchors given.
//
// Saved memory per pair in flight: ceil((T + C - 1) / S) checkpoints plus S
// segment states, both indexed by the pair's place in the range; the
// work is two forward steps and one reverse step per token.
//
// Each step body is lowered by KernelLowering's op lowering (lowerOp) as in
// the forward kernel, one body at a time (beginBody).
//
//===----------------------------------------------------------------------===//
#include "KernelLowering.h"
#include "SimtForm.h"
#include "miras/Dialect/Miras/IR/StepSignature.h"

#include "miras/Compiler/Passes.h"
#include "miras/Compiler/Pipelines.h"

namespace miras {
#define GEN_PASS_DEF_MIRASLOWERBACKWARDKERNEL
#include "miras/Compiler/Passes.h.inc"
} // namespace miras

namespace miras::lowering {

/// Whether `value`'s element-wise tree (the ops a kernel may keep lazy and
/// evaluate at its consumer: element-wise, broadcasts, outer products) reads
/// `leaf`.
static bool lazyTreeReads(Value value, Value leaf) {
  if (value == leaf)
    return true;
  Operation *op = value.getDefiningOp();
  if (!op || !(isElementwise(op) || isa<BroadcastOp, OuterOp>(op)))
    return false;
  return llvm::any_of(op->getOperands(),
                      [&](Value operand) { return lazyTreeReads(operand, leaf); });
}

/// Whether every op that reads `leaf`, and every op reading those, up to
/// `root`, is element-wise: then `root` is the only way out of `leaf`, and
/// materialising it reads each element of `leaf` just before writing the
/// same element.
static bool onlyElementwiseWayTo(Value root, Value leaf) {
  SmallVector<Value> work{leaf};
  while (!work.empty()) {
    Value value = work.pop_back_val();
    if (value == root)
      continue;
    for (Operation *user : value.getUsers()) {
      if (!isElementwise(user) || user->getNumResults() != 1)
        return false;
      work.push_back(user->getResult(0));
    }
  }
  return true;
}

/// How the reverse step writes its state adjoints: which it can write over
/// the adjoint of the state after the token (its argument `dX'`) instead of
/// into a second buffer, and in which order the return writes them.
struct AdjointWrites {
  SmallVector<bool> inPlace;
  SmallVector<unsigned> order;
};

/// An adjoint is written in place
///  - when dX' is read only on an element-wise way to the new adjoint
///    (linear attention: dW = dW' + do q^T, read by dk and dv too): it is
///    written where first needed, each element of dX' read just before it
///    is overwritten, and nothing reads dX' after;
///  - when the new adjoint is only returned: it is written at the return,
///    after every other reader of dX' has been lowered, provided no state
///    adjoint the return writes after it reads dX' in an element-wise tree
///    still to be evaluated. The return therefore writes first the adjoints
///    whose dX' no adjoint still to be written reads (Titans: dS1 reads dW1',
///    so dS1 before dW1); when none is left, the first one left goes into a
///    second buffer, where its dX' stays readable.
/// One buffer instead of two keeps a D x D adjoint and the state it reads in
/// L1 (Gated DeltaNet, D = 64: 32 KiB instead of 48; linear attention's
/// backward from checkpoints, D = 64, one thread: 94-97 -> 87-90 ms).
static AdjointWrites planAdjointWrites(func::FuncOp backward,
                                      const StepSignature &signature,
                                      bool allowInPlace) {
  Block &body = backward.getBody().front();
  auto ret = cast<func::ReturnOp>(body.getTerminator());
  unsigned numStates = signature.numStates();
  auto next = [&](unsigned i) {
    return body.getArgument(signature.resultAdjointArg(signature.stateResult(i)));
  };
  auto result = [&](unsigned i) { return ret.getOperand(signature.stateArg(i)); };
  AdjointWrites writes;
  writes.inPlace.assign(numStates, false);
  SmallVector<unsigned> left = llvm::to_vector(llvm::seq<unsigned>(0, numStates));
  if (!allowInPlace) {
    writes.order = left;
    return writes;
  }
  for (unsigned i : left)
    writes.inPlace[i] = onlyElementwiseWayTo(result(i), next(i));
  auto readByOneLeft = [&](unsigned i) {
    return llvm::any_of(left, [&](unsigned j) {
      return j != i && lazyTreeReads(result(j), next(i));
    });
  };
  while (!left.empty()) {
    auto *pick = llvm::find_if(left, [&](unsigned i) {
      return writes.inPlace[i] || (result(i).hasOneUse() && !readByOneLeft(i));
    });
    bool spare = pick == left.end();
    if (spare)
      pick = left.begin();
    writes.inPlace[*pick] = !spare;
    writes.order.push_back(*pick);
    left.erase(pick);
  }
  return writes;
}

void KernelLowering::beginBody(func::FuncOp function) {
  step = function;
  lowered.clear();
  states.clear();
  stateWriteOrder.clear();
  writing.clear();
  expensive.clear();
  outputSlice = outputValue = Value();
  extraOutputs.clear();
}

LogicalResult KernelLowering::lowerStateStep(OpBuilder &b, Location loc,
                                             Block *entry, Value bi, Value ti,
                                             Value hi, ArrayRef<Value> from,
                                             ArrayRef<Value> to,
                                             ArrayRef<Value> anchors) {
  Block &body = step.getBody().front();
  auto ret = cast<func::ReturnOp>(body.getTerminator());
  StepSignature signature = StepSignature::of(module);
  bool productsOnly = to.empty();
  for (auto [i, source] : llvm::enumerate(from)) {
    Value old = body.getArgument(signature.stateArg(i));
    if (!productsOnly)
      states.push_back({old, ret.getOperand(signature.stateResult(i)), to[i],
                        /*inPlace=*/source == to[i]});
    lowered[old] = {Lowered::Kind::Buffer, source};
  }
  for (auto [i, anchor] : llvm::enumerate(anchors))
    lowered[body.getArgument(signature.anchorArg(i))] = {Lowered::Kind::Buffer,
                                                         anchor};
  bindToken(b, loc, entry, bi, ti, hi, signature.queryArg());
  // Only the ops the new states depend on (the sweep never reads o), or
  // those of the products, each landing in its extraOutputs slot.
  llvm::SetVector<Operation *> needed;
  if (productsOnly) {
    SmallVector<Value> products;
    for (auto [product, slot] : extraOutputs)
      products.push_back(product);
    needed = opsComputing(products);
  } else {
    needed = stateStepOps();
  }
  for (Operation &op : body)
    if ((needed.contains(&op) || (&op == ret && !productsOnly)) &&
        failed(lowerOp(b, op)))
      return failure();
  return success();
}

llvm::SetVector<Operation *> KernelLowering::stateStepOps() {
  return StepSignature::of(module).stateUpdateOps(step);
}

SmallVector<Value> KernelLowering::stateStepInputs(Block *entry) {
  Block &body = step.getBody().front();
  unsigned first = StepSignature::of(module).queryArg();
  llvm::SetVector<Operation *> needed = stateStepOps();
  SmallVector<Value> inputs;
  for (auto [i, input] : llvm::enumerate(tokenInputs(entry)))
    if (llvm::any_of(body.getArgument(first + i).getUsers(),
                     [&](Operation *user) { return needed.contains(user); }))
      inputs.push_back(input);
  return inputs;
}

LogicalResult KernelLowering::runBackward(func::FuncOp backward,
                                          int64_t segment,
                                          bool adjointsInPlace,
                                          bool fuseRows) {
  Location loc = module.getLoc();
  StepSignature signature = StepSignature::of(module);
  int64_t chunk = module.getChunk();
  // Segments start at chunk starts, so a chunk's anchor is one of its
  // segment's recomputed states.
  if (segment < 1 || segment % chunk != 0)
    return module.emitError("the backward segment must be a positive multiple "
                            "of the chunk (")
           << chunk << "), got " << segment;
  unsigned numAnchors = signature.numAnchors();
  BackwardKernelLayout layout = BackwardKernelLayout::of(signature);
  func::FuncOp forward = step;
  Block &forwardBody = forward.getBody().front();
  unsigned numStates = signature.numStates();
  int64_t dk = module.getDk(), dv = module.getDv();
  SmallVector<GateOp> gates = module.getGates();
  SmallVector<SmallVector<int64_t>> stateShapes;
  for (unsigned i = 0; i < numStates; ++i) {
    ArrayRef<int64_t> shape =
        cast<RankedTensorType>(forwardBody.getArgument(i).getType()).getShape();
    stateShapes.emplace_back(shape.begin(), shape.end());
  }

  // BackwardKernelLayout's order (StepSignature.h).
  Type indexType = IndexType::get(ctx);
  SmallVector<Type> argTypes{indexType, indexType};
  llvm::append_range(argTypes, tokenInputTypes());
  argTypes.push_back(sequenceType(ctx, 3, {dv}));
  // Every state's shape: the carried states', the anchors' (their weights'),
  // the chunk position's.
  SmallVector<SmallVector<int64_t>> allShapes(stateShapes);
  for (unsigned i = 0; i < numAnchors; ++i)
    allShapes.push_back(stateShapes[i]);
  if (numAnchors)
    allShapes.push_back({1});
  for (auto &shape : allShapes)
    argTypes.push_back(sequenceType(ctx, 2, shape));
  llvm::append_range(argTypes, tokenInputTypes()); // their adjoints
  for (auto &shape : allShapes) // checkpoints
    argTypes.push_back(sequenceType(ctx, 2, shape));
  for (auto &shape : stateShapes) { // segments: [P, S, slot shape]
    SmallVector<int64_t> slots{segment};
    llvm::append_range(slots, BackwardKernelLayout::segmentSlotShape(shape));
    argTypes.push_back(sequenceType(ctx, 1, slots));
  }
  argTypes.push_back(indexType); // checkpoints_given
  assert(argTypes.size() == layout.size());

  OpBuilder b(module);
  auto kernel = func::FuncOp::create(
      b, loc, (module.getSymName() + "_backward_kernel").str(),
      b.getFunctionType(argTypes, {}));
  kernel->setAttr("llvm.emit_c_interface", b.getUnitAttr());
  kernel->setAttr(kBackwardSegmentAttr, b.getI64IntegerAttr(segment));
  kernel->setAttr(kBackwardStatesAttr, b.getI64IntegerAttr(numStates));
  kernel->setAttr(kBackwardAnchorsAttr, b.getI64IntegerAttr(numAnchors));
  kernel->setAttr(kBackwardChunkAttr, b.getI64IntegerAttr(chunk));
  Block *entry = kernel.addEntryBlock();
  b.setInsertionPointToEnd(entry);
  auto arg = [&](unsigned i) { return entry->getArgument(i); };

  Value c0 = arith::ConstantIndexOp::create(b, loc, 0);
  Value c1 = arith::ConstantIndexOp::create(b, loc, 1);
  Value segmentSize = arith::ConstantIndexOp::create(b, loc, segment);
  Value chunkSize = arith::ConstantIndexOp::create(b, loc, chunk);
  auto stateType = [&](unsigned i) {
    return RankedTensorType::get(stateShapes[i], Float32Type::get(ctx));
  };
  // Whether token (or slot) `t` starts a chunk.
  auto startsChunk = [&](OpBuilder &ob, Value t) {
    Value offset = arith::RemUIOp::create(ob, loc, t, chunkSize);
    return arith::CmpIOp::create(ob, loc, arith::CmpIPredicate::eq, offset, c0);
  };
  OpBuilder eb(ctx);
  eb.setInsertionPoint(c0.getDefiningOp());
  entryBuilder = &eb;
  // The reverse step's arguments that the recompute fills
  // (miras-tape-recomputed-products): the step's product with the same
  // `miras.tape`, kept for every slot of the segment.
  struct Tape {
    BlockArgument arg;
    Value product;
    Value buffer; // [S, shape]
    ArrayRef<int64_t> shape;
  };
  SmallVector<Tape> tapes;
  {
    // Each mark once, on an op of the state update: a product the recompute
    // does not compute would leave its slots unwritten.
    llvm::SetVector<Operation *> update = stateStepOps();
    llvm::SmallDenseSet<int64_t> seen;
    bool misplaced = false;
    forward.walk([&](Operation *op) {
      if (auto mark = op->getAttrOfType<IntegerAttr>(kTapeAttrName))
        misplaced |= !seen.insert(mark.getInt()).second || !update.contains(op);
    });
    if (misplaced)
      return forward.emitError("a product marked ")
             << kTapeAttrName << " twice, or outside the state update";
    for (BlockArgument arg : backward.getArguments()) {
      auto index = backward.getArgAttrOfType<IntegerAttr>(arg.getArgNumber(), kTapeAttrName);
      if (!index)
        continue;
      Operation *product = tapedProduct(forward, index.getInt());
      auto type = dyn_cast<RankedTensorType>(arg.getType());
      if (!product || !type || product->getResult(0).getType() != type)
        return backward.emitError("reverse step argument ")
               << arg.getArgNumber() << " (" << kTapeAttrName << " = " << index.getInt()
               << ") has no product of @step of its type to take it from";
      SmallVector<int64_t> slots{segment};
      llvm::append_range(slots, type.getShape());
      tapes.push_back({arg, product->getResult(0),
                       heapScratch(RankedTensorType::get(slots, type.getElementType())),
                       type.getShape()});
    }
  }
  Value length = memref::DimOp::create(b, loc, arg(BackwardKernelLayout::query), 1);
  Value heads = memref::DimOp::create(b, loc, arg(BackwardKernelLayout::query), 2);

  auto pairLoop = scf::ForOp::create(b, loc, arg(BackwardKernelLayout::pairBegin),
                                     arg(BackwardKernelLayout::pairEnd), c1);
  b.setInsertionPointToStart(pairLoop.getBody());
  Value pair = pairLoop.getInductionVar();
  Value bi = arith::DivUIOp::create(b, loc, pair, heads);
  Value hi = arith::RemUIOp::create(b, loc, pair, heads);
  // The checkpoints are laid out per pair of the range, from its first.
  Value local = arith::SubIOp::create(
      b, loc, pair, arg(BackwardKernelLayout::pairBegin));
  auto checkpoint = [&](OpBuilder &ob, unsigned i, Value c) {
    return slice(ob, loc, arg(layout.checkpoint(i)), {local, c}, stateShapes[i]);
  };
  auto segmentState = [&](OpBuilder &ob, unsigned i, Value j) {
    return slice(ob, loc, arg(layout.segment(i)), {local, j}, stateShapes[i]);
  };
  auto copyStates = [&](OpBuilder &ob, function_ref<Value(unsigned)> from,
                        function_ref<Value(unsigned)> to) {
    for (unsigned i = 0; i < numStates; ++i) {
      // One builder call per statement: the IR must not depend on the host
      // compiler's argument order.
      Value source = from(i);
      Value dest = to(i);
      memref::CopyOp::create(ob, loc, source, dest);
    }
  };
  // The call may start inside a chunk (chunk position p; 0 without anchors):
  // the kernel walks the chunk-aligned time u = p + t, whose segment c holds
  // the tokens with c * S <= u < (c + 1) * S, so that every chunk lies in one
  // segment. The head's tokens (u < C when p > 0) read the anchors given.
  Value position = c0;
  SmallVector<Value> givenAnchors, anchorAdjoints;
  if (numAnchors) {
    Value given = slice(b, loc, arg(layout.checkpoint(layout.numAllStates() - 1)),
                        {local, c0}, {1});
    // Mod C: the checkpoints hold ceil((T + C - 1) / S).
    position = loadChunkPosition(b, loc, given);
    for (unsigned i = 0; i < numAnchors; ++i) {
      givenAnchors.push_back(
          slice(b, loc, arg(layout.checkpoint(numStates + i)), {local, c0}, stateShapes[i]));
      anchorAdjoints.push_back(
          slice(b, loc, arg(layout.stateAdjoint(numStates + i)), {bi, hi}, stateShapes[i]));
    }
  }
  Value total = arith::AddIOp::create(b, loc, position, length);
  Value segments = arith::CeilDivUIOp::create(b, loc, total, segmentSize);
  // t = u - p.
  auto tokenAt = [&](OpBuilder &ob, Value u) {
    return arith::SubIOp::create(ob, loc, u, position);
  };

  // (a) The state before every segment, from checkpoint 0 (the initial state)
  // on, run in segment slot 0 (with the anchors copied at each chunk start,
  // as the forward kernel does), unless a forward saved them.
  {
    Value given = arg(layout.checkpointsGiven());
    Value compute = arith::CmpIOp::create(b, loc, arith::CmpIPredicate::eq, given, c0);
    auto computeIf = scf::IfOp::create(b, loc, compute, /*withElseRegion=*/false);
    OpBuilder::InsertionGuard guard(b);
    b.setInsertionPoint(computeIf.thenBlock()->getTerminator());
    SmallVector<Value> forwardAnchors;
    for (unsigned i = 0; i < numAnchors; ++i) {
      forwardAnchors.push_back(heapScratch(stateType(i)));
      memref::CopyOp::create(b, loc, givenAnchors[i], forwardAnchors[i]);
    }
    SmallVector<Value> running;
    for (unsigned i = 0; i < numStates; ++i)
      running.push_back(segmentState(b, i, c0));
    copyStates(b, [&](unsigned i) { return checkpoint(b, i, c0); },
               [&](unsigned i) { return running[i]; });
    {
      auto cLoop = scf::ForOp::create(b, loc, c1, segments, c1);
      OpBuilder cb = OpBuilder::atBlockBegin(cLoop.getBody());
      Value c = cLoop.getInductionVar();
      Value end = arith::MulIOp::create(cb, loc, c, segmentSize);
      Value start = arith::MaxUIOp::create(
          cb, loc, arith::SubIOp::create(cb, loc, end, segmentSize), position);
      auto uLoop = scf::ForOp::create(cb, loc, start, end, c1);
      OpBuilder tb = OpBuilder::atBlockBegin(uLoop.getBody());
      Value u = uLoop.getInductionVar();
      if (numAnchors) {
        auto ifOp = scf::IfOp::create(tb, loc, startsChunk(tb, u), /*withElseRegion=*/false);
        OpBuilder ib = ifOp.getThenBodyBuilder();
        for (unsigned i = 0; i < numAnchors; ++i)
          memref::CopyOp::create(ib, loc, running[i], forwardAnchors[i]);
      }
      beginBody(forward);
      Value ti = tokenAt(tb, u);
      prefetchToken(tb, loc, entry, bi, ti, hi, /*ahead=*/1,
                    stateStepInputs(entry));
      if (failed(lowerStateStep(tb, loc, entry, bi, ti, hi, running, running,
                                forwardAnchors)))
        return failure();
      cb.setInsertionPointAfter(uLoop);
      copyStates(cb, [&](unsigned i) { return running[i]; },
                 [&](unsigned i) { return checkpoint(cb, i, c); });
    }
  }

  // (b) Segment by segment from the last.
  AdjointWrites adjointWrites = planAdjointWrites(backward, signature, adjointsInPlace);
  const SmallVector<bool> &inPlace = adjointWrites.inPlace;
  SmallVector<Value> callerAdjoints, adjoints, spares, copied;
  for (unsigned i = 0; i < numStates; ++i) {
    callerAdjoints.push_back(
        slice(b, loc, arg(layout.stateAdjoint(i)), {bi, hi}, stateShapes[i]));
    adjoints.push_back(
        stageState(b, loc, callerAdjoints[i], length, copied.emplace_back()));
    spares.push_back(inPlace[i] ? adjoints[i]
                                : memref::CastOp::create(b, loc, adjoints[i].getType(),
                                                         heapScratch(stateType(i))));
  }
  // The anchors' adjoints, summed over the tokens of the current chunk and
  // added to the running state adjoint at the chunk's start: the anchor is the
  // state before that token.
  Value zero = arith::ConstantOp::create(b, loc, b.getF32FloatAttr(0.0));
  SmallVector<Value> anchorSums, anchorStep;
  for (unsigned i = 0; i < numAnchors; ++i) {
    anchorSums.push_back(heapScratch(stateType(i)));
    anchorStep.push_back(heapScratch(stateType(i)));
  }
  // dest += src, element-wise.
  auto accumulate = [&](OpBuilder &ob, Value src, Value dest) {
    unsigned rank = cast<MemRefType>(dest.getType()).getRank();
    AffineMap identity = AffineMap::getMultiDimIdentityMap(rank, ctx);
    linalg::GenericOp::create(
        ob, loc, ValueRange{src}, ValueRange{dest},
        ArrayRef<AffineMap>{identity, identity}, parallel(rank),
        [&](OpBuilder &nb, Location nloc, ValueRange args) {
          linalg::YieldOp::create(
              nb, nloc, Value(arith::AddFOp::create(nb, nloc, args[1], args[0])));
        });
  };
  // The slot holding the anchor of slot `j`: its chunk's first.
  auto anchorSlot = [&](OpBuilder &ob, Value j) {
    return arith::SubIOp::create(ob, loc, j,
                                 arith::RemUIOp::create(ob, loc, j, chunkSize));
  };
  // The final anchor is the state before the last chunk's first token, or
  // at a chunk start the final state (miras_abi.h): its adjoint joins the
  // anchor adjoints summed over that chunk, or the final state's.
  if (numAnchors) {
    Value atStart = startsChunk(b, total);
    auto ifOp = scf::IfOp::create(b, loc, atStart, /*withElseRegion=*/true);
    OpBuilder tb = ifOp.getThenBodyBuilder();
    for (unsigned i = 0; i < numAnchors; ++i) {
      accumulate(tb, anchorAdjoints[i], adjoints[i]);
      linalg::FillOp::create(tb, loc, ValueRange{zero}, ValueRange{anchorSums[i]});
    }
    OpBuilder fb = ifOp.getElseBodyBuilder();
    for (unsigned i = 0; i < numAnchors; ++i)
      memref::CopyOp::create(fb, loc, anchorAdjoints[i], anchorSums[i]);
  }
  auto rLoop = scf::ForOp::create(b, loc, c0, segments, c1);
  OpBuilder rb = OpBuilder::atBlockBegin(rLoop.getBody());
  Value last = arith::SubIOp::create(rb, loc, segments, c1);
  Value c = arith::SubIOp::create(rb, loc, last, rLoop.getInductionVar());
  Value start = arith::MulIOp::create(rb, loc, c, segmentSize);
  // Slots [first, end) of the segment hold its tokens' states: slot j the
  // state before u = start + j. In the head's segment (first > 0) slot 0
  // holds the anchors given, the head's anchor slot.
  Value first = arith::SubIOp::create(
      rb, loc, arith::MaxUIOp::create(rb, loc, start, position), start);
  Value end = arith::SubIOp::create(
      rb, loc,
      arith::MinUIOp::create(rb, loc, arith::AddIOp::create(rb, loc, start, segmentSize),
                             total),
      start);
  copyStates(rb, [&](unsigned i) { return checkpoint(rb, i, c); },
             [&](unsigned i) { return segmentState(rb, i, first); });
  if (numAnchors) {
    Value inHead = arith::CmpIOp::create(rb, loc, arith::CmpIPredicate::ugt, first, c0);
    auto ifOp = scf::IfOp::create(rb, loc, inHead, /*withElseRegion=*/false);
    OpBuilder ib = ifOp.getThenBodyBuilder();
    for (unsigned i = 0; i < numAnchors; ++i)
      memref::CopyOp::create(ib, loc, givenAnchors[i], segmentState(ib, i, c0));
  }
  // Token u = start + slot from its state in `slot`: its step into `to`,
  // or, with `to` empty, its taped products only. Either way the products
  // land in the slot's row of each tape.
  auto recompute = [&](OpBuilder &ob, Value slot, ArrayRef<Value> to) {
    Value ti = tokenAt(ob, arith::AddIOp::create(ob, loc, start, slot));
    SmallVector<Value> from, anchors;
    for (unsigned i = 0; i < numStates; ++i)
      from.push_back(segmentState(ob, i, slot));
    Value chunkStart = anchorSlot(ob, slot);
    for (unsigned i = 0; i < numAnchors; ++i)
      anchors.push_back(segmentState(ob, i, chunkStart));
    beginBody(forward);
    for (Tape &tape : tapes)
      extraOutputs.push_back(
          {tape.product, slice(ob, loc, tape.buffer, {slot}, tape.shape)});
    if (!to.empty())
      prefetchToken(ob, loc, entry, bi, ti, hi, /*ahead=*/1, stateStepInputs(entry));
    return lowerStateStep(ob, loc, entry, bi, ti, hi, from, to, anchors);
  };
  {
    // Token u = start + j - 1 steps from slot j - 1 into slot j.
    auto jLoop = scf::ForOp::create(
        rb, loc, arith::AddIOp::create(rb, loc, first, c1), end, c1);
    OpBuilder jb = OpBuilder::atBlockBegin(jLoop.getBody());
    Value j = jLoop.getInductionVar();
    Value previous = arith::SubIOp::create(jb, loc, j, c1);
    SmallVector<Value> to;
    for (unsigned i = 0; i < numStates; ++i)
      to.push_back(segmentState(jb, i, j));
    if (failed(recompute(jb, previous, to)))
      return failure();
  }
  // The segment's last token has no state to step into, only products
  // (end > first: the glue refuses calls of no token).
  if (!tapes.empty() &&
      failed(recompute(rb, arith::SubIOp::create(rb, loc, end, c1), /*to=*/{})))
    return failure();
  auto backLoop = scf::ForOp::create(rb, loc, first, end, c1);
  // The reverse step sweeps dW' and W several times per token; fused over
  // their rows, each row is loaded once (miras-vectorize chooseRowBlock).
  // Only the reverse steps: the checkpointing pass and the recompute stay
  // lowered as the forward kernel is, so that they compute its states to the
  // bit (a backward over a split sequence is then the whole one's).
  if (fuseRows)
    backLoop->setAttr(kRowBlockAttrName, rb.getI64IntegerAttr(0));
  OpBuilder bb = OpBuilder::atBlockBegin(backLoop.getBody());
  // From the last slot: j = end - 1 - (iteration - first).
  Value j = arith::SubIOp::create(
      bb, loc, arith::AddIOp::create(bb, loc, first, arith::SubIOp::create(bb, loc, end, c1)),
      backLoop.getInductionVar());
  Value u = arith::AddIOp::create(bb, loc, start, j);
  Value ti = tokenAt(bb, u);
  beginBody(backward);
  Block &body = backward.getBody().front();
  auto ret = cast<func::ReturnOp>(body.getTerminator());
  for (Tape &tape : tapes)
    lowered[tape.arg] = {Lowered::Kind::Buffer,
                         slice(bb, loc, tape.buffer, {j}, tape.shape)};
  for (unsigned i = 0; i < numStates; ++i)
    lowered[body.getArgument(signature.stateArg(i))] = {
        Lowered::Kind::Buffer, segmentState(bb, i, j)};
  Value firstOfChunk = anchorSlot(bb, j);
  for (unsigned i = 0; i < numAnchors; ++i) {
    lowered[body.getArgument(signature.anchorArg(i))] = {
        Lowered::Kind::Buffer, segmentState(bb, i, firstOfChunk)};
    extraOutputs.push_back({ret.getOperand(signature.anchorArg(i)), anchorStep[i]});
  }
  bindToken(bb, loc, entry, bi, ti, hi, signature.queryArg());
  // The reverse steps walk the tokens backwards: the next is ti - 1.
  SmallVector<Value> reverseReads = tokenInputs(entry);
  reverseReads.push_back(arg(layout.outputAdjoint()));
  prefetchToken(bb, loc, entry, bi, ti, hi, /*ahead=*/-1, reverseReads,
                {arg(layout.queryAdjoint()), arg(layout.keyAdjoint()),
                 arg(layout.valueAdjoint())});
  // A running adjoint that cannot be written in place (planAdjointWrites)
  // alternates between the caller's buffer and a spare one, token by token
  // (a reverse step may read an old adjoint after computing a new one:
  // momentum's dS' after dS): the adjoint of the state after token t is in
  // the caller's buffer when T - 1 - t is even.
  Value parity = arith::AndIOp::create(
      bb, loc, arith::SubIOp::create(bb, loc, arith::SubIOp::create(bb, loc, length, c1), ti),
      c1);
  Value inSpare = arith::CmpIOp::create(bb, loc, arith::CmpIPredicate::eq, parity, c1);
  SmallVector<Value> written;
  for (unsigned i = 0; i < numStates; ++i) {
    Value next = body.getArgument(
        signature.resultAdjointArg(signature.stateResult(i)));
    Value read = arith::SelectOp::create(bb, loc, inSpare, spares[i], adjoints[i]);
    written.push_back(
        arith::SelectOp::create(bb, loc, inSpare, adjoints[i], spares[i]));
    // Result i of the reverse step is the adjoint of step argument i.
    states.push_back({next, ret.getOperand(signature.stateArg(i)), written[i],
                      inPlace[i]});
    lowered[next] = {Lowered::Kind::Buffer, read};
  }
  stateWriteOrder = adjointWrites.order;
  SmallVector<Value> prefix{bi, ti, hi};
  lowered[body.getArgument(signature.resultAdjointArg(signature.outputResult()))] =
      {Lowered::Kind::Buffer,
       slice(bb, loc, arg(layout.outputAdjoint()), prefix, {dv})};
  extraOutputs.push_back(
      {ret.getOperand(signature.queryArg()),
       slice(bb, loc, arg(layout.queryAdjoint()), prefix, {dk})});
  extraOutputs.push_back(
      {ret.getOperand(signature.keyArg()),
       slice(bb, loc, arg(layout.keyAdjoint()), prefix, perStep(dk))});
  extraOutputs.push_back(
      {ret.getOperand(signature.valueArg()),
       slice(bb, loc, arg(layout.valueAdjoint()), prefix, perStep(dv))});
  for (auto [i, gate] : llvm::enumerate(gates))
    extraOutputs.push_back(
        {ret.getOperand(signature.gateArg(i)),
         slice(bb, loc, arg(layout.gateAdjoint(i)), prefix, gateShape(gate))});
  for (Operation &op : body)
    if (failed(lowerOp(bb, op)))
      return failure();
  if (numAnchors) {
    for (unsigned i = 0; i < numAnchors; ++i)
      accumulate(bb, anchorStep[i], anchorSums[i]);
    auto ifOp = scf::IfOp::create(bb, loc, startsChunk(bb, u),
                                  /*withElseRegion=*/false);
    OpBuilder ib = ifOp.getThenBodyBuilder();
    for (unsigned i = 0; i < numAnchors; ++i) {
      accumulate(ib, anchorSums[i], written[i]);
      linalg::FillOp::create(ib, loc, ValueRange{zero}, ValueRange{anchorSums[i]});
    }
  }

  // The initial state's adjoint is in the spare buffer when T is odd.
  b.setInsertionPointAfter(rLoop);
  Value lengthOdd = arith::CmpIOp::create(
      b, loc, arith::CmpIPredicate::eq, arith::AndIOp::create(b, loc, length, c1), c1);
  auto oddIf = scf::IfOp::create(b, loc, lengthOdd, /*withElseRegion=*/false);
  OpBuilder ob = oddIf.getThenBodyBuilder();
  for (unsigned i = 0; i < numStates; ++i)
    if (!inPlace[i])
      memref::CopyOp::create(ob, loc, spares[i], adjoints[i]);
  for (unsigned i = 0; i < numStates; ++i)
    unstageState(b, loc, adjoints[i], callerAdjoints[i], copied[i]);
  // What is left of the anchor adjoints belongs to the anchors given (the
  // head's; zero when the call starts at a chunk start); the chunk position
  // has none.
  for (unsigned i = 0; i < numAnchors; ++i)
    memref::CopyOp::create(b, loc, anchorSums[i], anchorAdjoints[i]);
  if (numAnchors)
    linalg::FillOp::create(
        b, loc, ValueRange{zero},
        ValueRange{slice(b, loc, arg(layout.stateAdjoint(layout.numAllStates() - 1)),
                         {bi, hi}, {1})});

  closeKernel(b, loc, pairLoop);
  return success();
}

} // namespace miras::lowering

namespace {

using namespace mlir;
using namespace miras;

struct LowerBackwardKernelPass
    : public miras::impl::MirasLowerBackwardKernelBase<LowerBackwardKernelPass> {
  using MirasLowerBackwardKernelBase::MirasLowerBackwardKernelBase;
  void runOnOperation() override {
    for (auto module : getOperation().getOps<MemoryModuleOp>()) {
      auto step = dyn_cast_or_null<func::FuncOp>(
          SymbolTable::lookupSymbolIn(module, "step"));
      auto backward = dyn_cast_or_null<func::FuncOp>(
          SymbolTable::lookupSymbolIn(module, "step_backward"));
      if (!step || !backward) {
        module.emitError("no reverse step: run miras-derive-update and "
                         "miras-derive-backward first");
        return signalPassFailure();
      }
      if (failed(miras::lowering::KernelLowering(module, step, "sequential")
                     .runBackward(backward, segment, adjointsInPlace, fuseRows)))
        return signalPassFailure();
      // The forward lowering needs @step only.
      backward.erase();
    }
  }
};

} // namespace
