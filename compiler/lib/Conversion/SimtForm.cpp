//===- SimtForm.cpp - Parallel loops -> threads of one block ---------------===//
//
// `miras-distribute-threads` (see Passes.td): the GPU mapping, written on
// plain func/scf/memref code so the CPU can run it too. Kernel shape it
// expects (MirasToLinalg + convert-linalg-to-parallel-loops):
//
//   func.func @<name>_kernel(%begin, %end, %q, ..., %o) {
//     <allocas, dims, constants>
//     scf.for %pair = %begin to %end {          // one block per pair
//       %b = ..., %h = ...
//       <uniform code: token loops, scalar loads, scf.parallel per op>
//     }
//   }
//
// In order: CPU prefetch hints go and memref.copy becomes loops; state slices
// move to block buffers (promoteStates); reduction accumulators move to
// registers (promoteAccumulators); then the Distributor turns the pair body's
// parallel loops into threads regions (splitting short rows' sums first) and
// its other memory writes into thread-0 regions.
//
//===----------------------------------------------------------------------===//
#include "SimtForm.h"
#include "BufferAlias.h"

#include "miras/Compiler/Passes.h"

#include "mlir/Dialect/Arith/IR/Arith.h"
#include "mlir/Dialect/MemRef/IR/MemRef.h"
#include "mlir/Dialect/SCF/IR/SCF.h"
#include "mlir/IR/IRMapping.h"
#include "mlir/IR/PatternMatch.h"
#include "mlir/Interfaces/LoopLikeInterface.h"
#include "mlir/Interfaces/SideEffectInterfaces.h"

#include "llvm/ADT/bit.h"
#include "llvm/Support/MathExtras.h"

namespace miras {
#define GEN_PASS_DEF_MIRASDISTRIBUTETHREADS
#define GEN_PASS_DEF_MIRASUNSTAGESTATES
#include "miras/Compiler/Passes.h.inc"
} // namespace miras

using namespace mlir;
using namespace miras;

scf::ForOp miras::findPairLoop(func::FuncOp kernel) {
  if (kernel.getNumArguments() < 2)
    return {};
  for (auto loop : kernel.getBody().getOps<scf::ForOp>())
    if (loop.getLowerBound() == kernel.getArgument(0) &&
        loop.getUpperBound() == kernel.getArgument(1))
      return loop;
  return {};
}

bool miras::isThreadsRegion(Operation *op) {
  return isa<scf::ParallelOp>(op) && op->hasAttr(kThreadsAttr);
}

int64_t miras::staticBytes(MemRefType type) {
  if (!type.hasStaticShape())
    return -1;
  return type.getNumElements() *
         llvm::divideCeil(type.getElementTypeBitWidth(), 8);
}

namespace {

/// True when `op` writes memory (directly or in its regions).
bool writesMemory(Operation *op) {
  bool writes = false;
  op->walk([&](Operation *inner) {
    if (auto effects = dyn_cast<MemoryEffectOpInterface>(inner)) {
      if (effects.hasEffect<MemoryEffects::Write>() ||
          effects.hasEffect<MemoryEffects::Allocate>() ||
          effects.hasEffect<MemoryEffects::Free>())
        writes = true;
    } else if (!inner->hasTrait<OpTrait::HasRecursiveMemoryEffects>() &&
               !isPure(inner) && !isa<scf::YieldOp, scf::ReduceOp>(inner)) {
      writes = true; // unknown effects: assume the worst
    }
    return writes ? WalkResult::interrupt() : WalkResult::advance();
  });
  return writes;
}

bool containsParallel(Operation *op) {
  return op->walk([](scf::ParallelOp) { return WalkResult::interrupt(); })
      .wasInterrupted();
}

/// Trip count of one dimension of `loop` when it is static, else -1.
int64_t staticTrips(scf::ParallelOp loop, unsigned d) {
  auto lb = getConstantIntValue(loop.getLowerBound()[d]);
  auto ub = getConstantIntValue(loop.getUpperBound()[d]);
  auto step = getConstantIntValue(loop.getStep()[d]);
  if (!lb || !ub || !step || *step <= 0)
    return -1;
  return *ub > *lb ? llvm::divideCeil(*ub - *lb, *step) : 0;
}

class Distributor {
public:
  Distributor(func::FuncOp kernel, int64_t threads, bool reverse)
      : kernel(kernel), threads(threads), reverse(reverse) {}

  /// Rewrites the uniform code of `block`; fails on an op it cannot place.
  LogicalResult distribute(Block &block) {
    for (Operation &op : llvm::make_early_inc_range(block)) {
      if (op.hasTrait<OpTrait::IsTerminator>())
        continue;
      if (auto loop = dyn_cast<scf::ParallelOp>(op)) {
        if (scf::ParallelOp partials = splitReduction(loop))
          if (failed(distributeLoop(partials)))
            return failure();
        if (failed(distributeLoop(loop)))
          return failure();
        continue;
      }
      if (!writesMemory(&op))
        continue; // every thread runs it (pure, or reads only)
      if (containsParallel(&op) && isa<scf::ForOp, scf::IfOp>(op)) {
        for (Region &region : op.getRegions())
          for (Block &inner : region)
            if (failed(distribute(inner)))
              return failure();
        continue;
      }
      if (failed(runOnThreadZero(&op)))
        return failure();
    }
    return success();
  }

private:
  /// `scf.parallel (%tid) = (0) to (threads) {miras.threads}` at the insertion point;
  /// the builder is left inside its body.
  std::pair<scf::ParallelOp, Value> threadsRegion(OpBuilder &b, Location loc) {
    Value zero = arith::ConstantIndexOp::create(b, loc, 0);
    Value one = arith::ConstantIndexOp::create(b, loc, 1);
    Value count = arith::ConstantIndexOp::create(b, loc, threads);
    auto region = scf::ParallelOp::create(b, loc, ValueRange{zero},
                                          ValueRange{count}, ValueRange{one});
    region->setAttr(kThreadsAttr, b.getUnitAttr());
    b.setInsertionPointToStart(region.getBody());
    Value tid = region.getInductionVars()[0];
    if (reverse) // thread threads - 1 - i runs i-th
      tid = arith::SubIOp::create(
          b, loc, arith::ConstantIndexOp::create(b, loc, threads - 1), tid);
    return {region, tid};
  }

  /// A loop over fewer rows than half the threads whose body reduces a row
  /// with a sum (the matvec `y[i] = sum_j W[i, j] k[j]` over Dv rows, one
  /// thread each, Dk dependent adds) leaves most threads idle and the rest on
  /// a long chain. With K = threads / rows (a power of two, at most 32), a
  /// new loop before it has K threads per row sum every K-th term into a
  /// buffer of partial sums, and the row's sum becomes the sum of its K
  /// partials. Only for `addf` sums carrying `reassoc` (the reduction order
  /// is free) whose terms depend on nothing computed in the row's body.
  /// Returns the new loop (not yet distributed), or null when it does not
  /// apply.
  scf::ParallelOp splitReduction(scf::ParallelOp loop) {
    if (loop.getNumLoops() != 1 || loop.getNumResults() != 0 ||
        getConstantIntValue(loop.getLowerBound()[0]) != 0 ||
        getConstantIntValue(loop.getStep()[0]) != 1)
      return {};
    int64_t rows = staticTrips(loop, 0);
    if (rows < 1 || rows * 2 > threads)
      return {};
    int64_t lanes = std::min<int64_t>(32, llvm::bit_floor(uint64_t(threads / rows)));
    // The sum: an scf.for in the row's body with one f32 iter_arg whose only
    // use is `acc + term`, yielded.
    scf::ForOp sum;
    arith::AddFOp add;
    for (auto candidate : loop.getBody()->getOps<scf::ForOp>()) {
      if (candidate.getNumRegionIterArgs() != 1 ||
          !candidate.getRegionIterArgs()[0].getType().isF32())
        continue;
      Value acc = candidate.getRegionIterArgs()[0];
      auto yielded = candidate.getBody()->getTerminator()->getOperand(0).getDefiningOp<arith::AddFOp>();
      if (!yielded || !acc.hasOneUse() ||
          !llvm::is_contained(yielded->getOperands(), acc) ||
          !bitEnumContainsAll(yielded.getFastmath(), arith::FastMathFlags::reassoc))
        continue;
      sum = candidate;
      add = yielded;
      break;
    }
    auto outside = [&](Value v) {
      return !loop->isAncestor(v.getParentBlock()->getParentOp());
    };
    if (!sum || writesMemory(sum) || !outside(sum.getLowerBound()) ||
        !outside(sum.getUpperBound()) || !outside(sum.getStep()))
      return {};
    // No more lanes than terms.
    if (std::optional<APInt> terms = sum.getStaticTripCount())
      lanes = std::min<int64_t>(lanes, llvm::bit_floor(terms->getZExtValue()));
    if (lanes < 2)
      return {};
    // Its terms may read the row index and values from outside the row loop.
    Value row = loop.getInductionVars()[0];
    bool free = !sum->walk([&](Operation *op) {
                      if (op == sum.getOperation())
                        return WalkResult::advance(); // bounds checked above
                      for (Value v : op->getOperands()) {
                        Operation *owner = v.getParentBlock()->getParentOp();
                        if (v != row && owner != sum && !sum->isAncestor(owner) &&
                            loop->isAncestor(owner))
                          return WalkResult::interrupt();
                      }
                      return WalkResult::advance();
                    }).wasInterrupted();
    // Nor memory the row's body writes: the partial sums run before the row
    // loop, so a term loading a buffer stored earlier in the same row (a
    // fused loop: compute a row's vector, then sum against it) would read it
    // stale.
    SmallVector<Value> written;
    bool unknownWrite = false;
    loop->walk([&](Operation *op) {
      auto effects = dyn_cast<MemoryEffectOpInterface>(op);
      if (!effects) {
        unknownWrite |= writesMemory(op) &&
                        !op->hasTrait<OpTrait::HasRecursiveMemoryEffects>();
        return;
      }
      SmallVector<MemoryEffects::EffectInstance> instances;
      effects.getEffects(instances);
      for (auto &instance : instances)
        if (isa<MemoryEffects::Write>(instance.getEffect())) {
          if (Value target = instance.getValue())
            written.push_back(target);
          else
            unknownWrite = true;
        }
    });
    bool readsWritten =
        unknownWrite || sum->walk([&](Operation *op) {
                          auto effects = dyn_cast<MemoryEffectOpInterface>(op);
                          if (!effects)
                            return WalkResult::advance();
                          SmallVector<MemoryEffects::EffectInstance> instances;
                          effects.getEffects(instances);
                          for (auto &instance : instances)
                            if (isa<MemoryEffects::Read>(instance.getEffect())) {
                              Value read = instance.getValue();
                              for (Value w : written)
                                if (!read || mayAlias(w, read))
                                  return WalkResult::interrupt();
                            }
                          return WalkResult::advance();
                        }).wasInterrupted();
    if (!free || readsWritten)
      return {};

    Location loc = loop.getLoc();
    OpBuilder entry = OpBuilder::atBlockBegin(&kernel.getBody().front());
    Value partials = memref::AllocaOp::create(
        entry, loc, MemRefType::get({rows * lanes}, entry.getF32Type()));
    OpBuilder b(loop);
    Value zero = arith::ConstantIndexOp::create(b, loc, 0);
    Value one = arith::ConstantIndexOp::create(b, loc, 1);
    Value laneCount = arith::ConstantIndexOp::create(b, loc, lanes);
    Value rowCount = arith::ConstantIndexOp::create(b, loc, rows);
    Value acc = sum.getRegionIterArgs()[0];
    Value term = add.getLhs() == acc ? add.getRhs() : add.getLhs();
    arith::FastMathFlags fastmath = add.getFastmath();
    auto partialLoop = scf::ParallelOp::create(
        b, loc, ValueRange{zero, zero}, ValueRange{rowCount, laneCount},
        ValueRange{one, one}, [&](OpBuilder &nb, Location l, ValueRange ivs) {
          Value stride = arith::MulIOp::create(nb, l, sum.getStep(), laneCount);
          Value first = arith::AddIOp::create(
              nb, l, sum.getLowerBound(),
              arith::MulIOp::create(nb, l, ivs[1], sum.getStep()));
          Value init = arith::ConstantFloatOp::create(nb, l, nb.getF32Type(),
                                                      APFloat(0.0f));
          auto part = scf::ForOp::create(
              nb, l, first, sum.getUpperBound(), stride, ValueRange{init},
              [&](OpBuilder &fb, Location fl, Value j, ValueRange iter) {
                IRMapping map;
                map.map(row, ivs[0]);
                map.map(sum.getInductionVar(), j);
                for (Operation &op : sum.getBody()->without_terminator())
                  if (&op != add.getOperation())
                    fb.clone(op, map);
                Value next = arith::AddFOp::create(fb, fl, iter[0],
                                                   map.lookupOrDefault(term), fastmath);
                scf::YieldOp::create(fb, fl, next);
              });
          Value slot = arith::AddIOp::create(
              nb, l, arith::MulIOp::create(nb, l, ivs[0], laneCount), ivs[1]);
          memref::StoreOp::create(nb, l, part.getResult(0), partials, slot);
        });
    // The row's sum now adds its partials, in lane order.
    b.setInsertionPoint(sum);
    Value base = arith::MulIOp::create(b, loc, row, laneCount);
    auto total = scf::ForOp::create(
        b, loc, zero, laneCount, one, ValueRange{sum.getInitArgs()[0]},
        [&](OpBuilder &fb, Location fl, Value lane, ValueRange iter) {
          Value x = memref::LoadOp::create(
              fb, fl, partials, ValueRange{arith::AddIOp::create(fb, fl, base, lane)});
          scf::YieldOp::create(fb, fl,
                               ValueRange{arith::AddFOp::create(fb, fl, iter[0], x, fastmath)});
        });
    sum.getResult(0).replaceAllUsesWith(total.getResult(0));
    sum.erase();
    return partialLoop;
  }

  LogicalResult distributeLoop(scf::ParallelOp loop) {
    if (loop.getNumResults() != 0)
      return loop.emitOpError("with reductions is not supported on the GPU");
    Location loc = loop.getLoc();
    OpBuilder b(loop);
    // Flattened trip count; dynamic bounds are computed on every thread.
    SmallVector<Value> trips;
    Value total = arith::ConstantIndexOp::create(b, loc, 1);
    for (unsigned d = 0; d < loop.getNumLoops(); ++d) {
      Value span = arith::SubIOp::create(b, loc, loop.getUpperBound()[d],
                                         loop.getLowerBound()[d]);
      Value n = arith::CeilDivSIOp::create(b, loc, span, loop.getStep()[d]);
      n = arith::MaxSIOp::create(b, loc, n,
                                 arith::ConstantIndexOp::create(b, loc, 0));
      trips.push_back(n);
      total = arith::MulIOp::create(b, loc, total, n);
    }
    auto [region, tid] = threadsRegion(b, loc);
    Value stride = arith::ConstantIndexOp::create(b, loc, threads);
    auto walk = scf::ForOp::create(b, loc, tid, total, stride);
    b.setInsertionPointToStart(walk.getBody());
    // Row-major delinearisation: the innermost dimension varies fastest
    // across consecutive threads (coalesced global and conflict-free shared
    // accesses for the elementwise ops).
    IRMapping map;
    Value rest = walk.getInductionVar();
    for (int d = loop.getNumLoops() - 1; d >= 0; --d) {
      Value index = rest;
      if (d > 0) {
        index = arith::RemUIOp::create(b, loc, rest, trips[d]);
        rest = arith::DivUIOp::create(b, loc, rest, trips[d]);
      }
      Value iv = arith::AddIOp::create(
          b, loc, loop.getLowerBound()[d],
          arith::MulIOp::create(b, loc, index, loop.getStep()[d]));
      map.map(loop.getInductionVars()[d], iv);
    }
    for (Operation &inner : loop.getBody()->without_terminator())
      b.clone(inner, map);
    loop.erase();
    return success();
  }

  /// Thread 0 runs `op`; values it yields (a scan's last product) reach the
  /// other threads through a buffer of their own, read after the region.
  LogicalResult runOnThreadZero(Operation *op) {
    Location loc = op->getLoc();
    SmallVector<Value> buffers;
    for (Type type : op->getResultTypes()) {
      if (!type.isIntOrIndexOrFloat())
        return op->emitOpError("yields a ") << type << " outside any parallel "
               "loop; only scalars can be passed between threads";
      OpBuilder entry = OpBuilder::atBlockBegin(&kernel.getBody().front());
      buffers.push_back(memref::AllocaOp::create(entry, loc, MemRefType::get({}, type)));
    }
    OpBuilder b(op);
    auto [region, tid] = threadsRegion(b, loc);
    Value first = arith::CmpIOp::create(b, loc, arith::CmpIPredicate::eq, tid,
                                        arith::ConstantIndexOp::create(b, loc, 0));
    auto guard = scf::IfOp::create(b, loc, first, /*withElseRegion=*/false);
    op->moveBefore(guard.thenBlock()->getTerminator());
    b.setInsertionPoint(guard.thenBlock()->getTerminator());
    for (auto [result, buffer] : llvm::zip(op->getResults(), buffers))
      memref::StoreOp::create(b, loc, result, buffer);
    b.setInsertionPointAfter(region);
    for (auto [result, buffer] : llvm::zip(op->getResults(), buffers)) {
      Value shared = memref::LoadOp::create(b, loc, buffer);
      result.replaceUsesWithIf(shared, [&](OpOperand &use) {
        return !guard->isAncestor(use.getOwner());
      });
    }
    return success();
  }

  func::FuncOp kernel;
  int64_t threads;
  bool reverse;
};

/// Keeps reduction accumulators in registers: in a loop that loads M[I] and
/// later stores M[I] (I defined outside the loop) and touches M nowhere
/// else, M[I] becomes an iter_arg, loaded before and stored after the loop.
/// convert-linalg-to-parallel-loops leaves `y[i] += W[i, j] k[j]` as a
/// load and a store per j; on the GPU y is in shared memory, and LLVM cannot
/// prove it apart from W (same base, other offset) to do this itself.
void promoteAccumulators(func::FuncOp kernel) {
  SmallVector<scf::ForOp> loops;
  kernel.walk([&](scf::ForOp loop) { loops.push_back(loop); });
  IRRewriter rewriter(kernel.getContext());
  for (scf::ForOp loop : loops) {
    SmallVector<std::pair<memref::LoadOp, memref::StoreOp>> accumulators;
    for (auto load : loop.getBody()->getOps<memref::LoadOp>()) {
      Value buffer = load.getMemRef();
      auto definedOutside = [&](Value v) {
        return !loop->isAncestor(v.getParentBlock()->getParentOp());
      };
      if (!definedOutside(buffer) || !llvm::all_of(load.getIndices(), definedOutside))
        continue;
      memref::StoreOp store;
      bool other = false;
      loop.walk([&](Operation *op) {
        if (op == load.getOperation() ||
            !llvm::is_contained(op->getOperands(), buffer))
          return;
        auto candidate = dyn_cast<memref::StoreOp>(op);
        if (candidate && !store && candidate->getBlock() == loop.getBody() &&
            candidate.getMemRef() == buffer &&
            candidate.getIndices() == load.getIndices() &&
            load->isBeforeInBlock(candidate))
          store = candidate;
        else
          other = true;
      });
      if (store && !other)
        accumulators.push_back({load, store});
    }
    for (auto [load, store] : accumulators) {
      rewriter.setInsertionPoint(loop);
      Value init = memref::LoadOp::create(rewriter, load.getLoc(), load.getMemRef(),
                                          load.getIndices());
      Value stored = store.getValueToStore();
      auto grown = cast<scf::ForOp>(
          *cast<LoopLikeOpInterface>(loop.getOperation())
               .replaceWithAdditionalYields(
                   rewriter, init, /*replaceInitOperandUsesInLoop=*/false,
                   [&](OpBuilder &, Location, ArrayRef<BlockArgument>) {
                     return SmallVector<Value>{stored};
                   }));
      load.replaceAllUsesWith(grown.getRegionIterArgs().back());
      rewriter.setInsertionPointAfter(grown);
      memref::StoreOp::create(rewriter, store.getLoc(), grown.getResults().back(),
                              store.getMemRef(), store.getIndices());
      load.erase();
      store.erase();
      loop = grown;
    }
  }
}

/// Calls `body` with the indices of every element of an index space of
/// `extents`: once, inside one scf.parallel (which the Distributor spreads
/// over the threads); for rank 0, once in place (a thread-0 store then).
void forEachElement(OpBuilder &b, Location loc, ValueRange extents,
                    function_ref<void(OpBuilder &, Location, ValueRange)> body) {
  if (extents.empty()) {
    body(b, loc, ValueRange{});
    return;
  }
  Value zero = arith::ConstantIndexOp::create(b, loc, 0);
  Value one = arith::ConstantIndexOp::create(b, loc, 1);
  SmallVector<Value> lbs(extents.size(), zero), steps(extents.size(), one);
  scf::ParallelOp::create(b, loc, lbs, extents, steps, body);
}

/// memref.copy becomes a parallel loop of loads and stores: on the GPU there
/// is no memrefCopy to call, and at block level the copy is one more loop
/// to spread over the threads.
void expandCopies(func::FuncOp kernel) {
  kernel.walk([](memref::CopyOp copy) {
    OpBuilder b(copy);
    Location loc = copy.getLoc();
    SmallVector<Value> extents;
    for (int64_t d = 0; d < cast<MemRefType>(copy.getSource().getType()).getRank(); ++d)
      extents.push_back(memref::DimOp::create(b, loc, copy.getSource(), d));
    forEachElement(b, loc, extents, [&](OpBuilder &nb, Location l, ValueRange ivs) {
      Value x = memref::LoadOp::create(nb, l, copy.getSource(), ivs);
      memref::StoreOp::create(nb, l, x, copy.getTarget(), ivs);
    });
    copy.erase();
  });
}

/// Threads for `kernel`: about 16 iterations of its largest parallel loop
/// per thread, a multiple of 32 (a warp) in [32, 512].
int64_t pickThreads(Block &pairBody) {
  int64_t largest = 1;
  pairBody.walk([&](scf::ParallelOp loop) {
    int64_t n = 1;
    for (unsigned d = 0; d < loop.getNumLoops(); ++d) {
      int64_t t = staticTrips(loop, d);
      n = t < 0 ? 1 << 14 : n * t;
    }
    largest = std::max(largest, n);
  });
  int64_t threads = llvm::alignTo(llvm::divideCeil(largest, 16), 32);
  return std::clamp<int64_t>(threads, 32, 512);
}

/// Copies each state's slice of the pair into a buffer of its own (on the
/// GPU: shared memory) when every use indexes it at the pair's (b, h) and it
/// fits in `budget` bytes next to the kernel's buffers and the states before it.
void promoteStates(func::FuncOp kernel, scf::ForOp pairLoop, int64_t budget) {
  int64_t used = 0;
  kernel.walk([&](Operation *op) {
    if (!isa<memref::AllocaOp, memref::AllocOp>(op))
      return;
    int64_t bytes = staticBytes(cast<MemRefType>(op->getResult(0).getType()));
    used += bytes < 0 ? budget + 1 : bytes;
  });
  struct Candidate {
    BlockArgument arg;
    Value b, h;
    MemRefType sliceType;
  };
  SmallVector<Candidate> candidates;
  for (BlockArgument arg : kernel.getArguments()) {
    auto type = dyn_cast<MemRefType>(arg.getType());
    if (!type || !isStateType(type))
      continue;
    Value bIndex, hIndex;
    bool ok = !arg.use_empty();
    for (Operation *user : arg.getUsers()) {
      ValueRange indices;
      if (auto load = dyn_cast<memref::LoadOp>(user))
        indices = load.getIndices();
      else if (auto store = dyn_cast<memref::StoreOp>(user);
               store && store.getMemRef() == arg)
        indices = store.getIndices();
      else {
        ok = false;
        break;
      }
      if (!bIndex) {
        bIndex = indices[0];
        hIndex = indices[1];
      }
      ok &= indices[0] == bIndex && indices[1] == hIndex &&
            pairLoop->isAncestor(user);
    }
    // b and h must be computed at the top of the pair body, before any use.
    ok = ok && bIndex.getParentBlock() == pairLoop.getBody() &&
         hIndex.getParentBlock() == pairLoop.getBody();
    if (!ok)
      continue;
    auto slice = MemRefType::get(type.getShape().drop_front(2),
                                 type.getElementType());
    // In argument order while they fit: a state left out stays in global
    // memory (cached), the others still gain.
    if (used + staticBytes(slice) > budget)
      continue;
    used += staticBytes(slice);
    candidates.push_back({arg, bIndex, hIndex, slice});
  }

  Location loc = pairLoop.getLoc();
  for (Candidate &c : candidates) {
    OpBuilder entry(pairLoop);
    auto buffer = memref::AllocaOp::create(entry, loc, c.sliceType);
    buffer->setAttr(kPromotedStateAttr, entry.getUnitAttr());
    // Copy in after b and h exist; copy out before the pair ends.
    Operation *lastDef = c.b.getDefiningOp()->isBeforeInBlock(c.h.getDefiningOp())
                             ? c.h.getDefiningOp()
                             : c.b.getDefiningOp();
    auto copy = [&](OpBuilder &b, bool in) {
      SmallVector<Value> extents;
      for (int64_t extent : c.sliceType.getShape())
        extents.push_back(arith::ConstantIndexOp::create(b, loc, extent));
      forEachElement(b, loc, extents, [&](OpBuilder &nb, Location l, ValueRange ivs) {
        SmallVector<Value> full{c.b, c.h};
        full.append(ivs.begin(), ivs.end());
        if (in)
          memref::StoreOp::create(nb, l, memref::LoadOp::create(nb, l, c.arg, full),
                                  buffer, ivs);
        else
          memref::StoreOp::create(nb, l, memref::LoadOp::create(nb, l, buffer, ivs),
                                  c.arg, full);
      });
    };
    // Rewrite the existing uses first, so the copies keep the argument.
    for (Operation *user : llvm::make_early_inc_range(c.arg.getUsers())) {
      OpBuilder b(user);
      if (auto load = dyn_cast<memref::LoadOp>(user)) {
        auto rest = load.getIndices().drop_front(2);
        load.replaceAllUsesWith(
            memref::LoadOp::create(b, load.getLoc(), buffer, rest).getResult());
        load.erase();
      } else {
        auto store = cast<memref::StoreOp>(user);
        auto rest = store.getIndices().drop_front(2);
        memref::StoreOp::create(b, store.getLoc(), store.getValueToStore(),
                                buffer, rest);
        store.erase();
      }
    }
    OpBuilder in(pairLoop.getContext());
    in.setInsertionPointAfter(lastDef);
    copy(in, /*in=*/true);
    OpBuilder out(pairLoop.getBody()->getTerminator());
    copy(out, /*in=*/false);
  }
}

struct UnstageStatesPass
    : public miras::impl::MirasUnstageStatesBase<UnstageStatesPass> {
  void runOnOperation() override { unstageStates(getOperation()); }
};

struct DistributeThreadsPass
    : public miras::impl::MirasDistributeThreadsBase<DistributeThreadsPass> {
  using MirasDistributeThreadsBase::MirasDistributeThreadsBase;

  void runOnOperation() override {
    func::FuncOp kernel = getOperation();
    if (!kernel->hasAttr("miras.algorithm") &&
        !kernel->hasAttr(miras::kBackwardSegmentAttr))
      return; // not a miras kernel (forward or backward)
    scf::ForOp pairLoop = miras::findPairLoop(kernel);
    if (!pairLoop) {
      kernel.emitOpError("has no loop over (batch, head) pairs from its first "
                         "two arguments");
      return signalPassFailure();
    }
    int64_t count = threads > 0 ? threads.getValue() : pickThreads(*pairLoop.getBody());
    if (count > 1024) {
      kernel.emitOpError("threads=") << count << " exceeds a CUDA block (1024)";
      return signalPassFailure();
    }
    // CPU cache hints; on the GPU the next token's loads are in flight anyway.
    kernel.walk([](memref::PrefetchOp prefetch) { prefetch.erase(); });
    expandCopies(kernel);
    promoteStates(kernel, pairLoop, sharedBudget);
    promoteAccumulators(kernel);
    Distributor distributor(kernel, count, reverseThreads);
    if (failed(distributor.distribute(*pairLoop.getBody())))
      return signalPassFailure();
    kernel->setAttr(miras::kSimtThreadsAttr,
                    OpBuilder(kernel).getI64IntegerAttr(count));
  }
};

} // namespace

void miras::unstageStates(func::FuncOp kernel) {
  SmallVector<Operation *> staged;
  kernel.walk([&](Operation *op) {
    if (op->hasAttr(kStagedAttr))
      staged.push_back(op);
  });
  SmallVector<Value> copies, conditions;
  for (Operation *op : staged) {
    if (auto select = dyn_cast<arith::SelectOp>(op)) {
      copies.push_back(select.getTrueValue());
      conditions.push_back(select.getCondition());
      select.replaceAllUsesWith(select.getFalseValue());
    }
    op->erase();
  }
  // The alignment test, down to the slice's metadata, is dead now: it must
  // go too, or the slice would have users promoteStates does not expect.
  SmallVector<Operation *> dead;
  for (Value condition : conditions)
    if (Operation *def = condition.getDefiningOp())
      dead.push_back(def);
  llvm::SmallPtrSet<Operation *, 16> erased;
  while (!dead.empty()) {
    Operation *op = dead.pop_back_val();
    if (erased.contains(op) || !op->use_empty() || !isPure(op))
      continue;
    erased.insert(op);
    for (Value operand : op->getOperands())
      if (Operation *def = operand.getDefiningOp())
        dead.push_back(def);
    op->erase();
  }
  // The copies: a memref.cast of an alloc, freed at the kernel's end.
  for (Value copy : copies) {
    auto cast = copy.getDefiningOp<memref::CastOp>();
    if (!cast || !cast->use_empty())
      continue;
    Value alloc = cast.getSource();
    cast.erase();
    if (auto allocOp = alloc.getDefiningOp<memref::AllocOp>()) {
      for (Operation *user : llvm::make_early_inc_range(allocOp->getUsers()))
        if (isa<memref::DeallocOp>(user))
          user->erase();
      if (allocOp->use_empty())
        allocOp.erase();
    }
  }
}

bool miras::isStateType(MemRefType type) {
  // [B, H, shape...]: exactly two leading dynamic dims, the rest static
  // (token tensors have three: [B, T, H, ...]).
  ArrayRef<int64_t> shape = type.getShape();
  return shape.size() >= 2 && ShapedType::isDynamic(shape[0]) &&
         ShapedType::isDynamic(shape[1]) &&
         llvm::none_of(shape.drop_front(2), ShapedType::isDynamic);
}
