//===- Vectorize.cpp - linalg.generic on memrefs -> vector dialect --------===//
//
// `miras-vectorize`: rewrites each `linalg.generic` of the kernel (buffer
// semantics, static loop ranges, one output) into scf.for loops over
// `vector<Lxf32>` tiles of its innermost loop dimension, which must index the
// contiguous (unit-stride) last dimension of every operand that uses it.
//
//   * innermost dimension parallel (elementwise ops, the rank-1 state update,
//     `y[j] += W[i, j] x[i]`): the outer dims become scalar loops, the
//     innermost one a loop over tiles; any reduction dims run innermost with
//     the output tile carried in registers (iter_args), so per output element
//     the reduction order is exactly the sequential one.
//   * innermost dimension a reduction (`y[i] += W[i, j] k[j]`, dot products):
//     one vector accumulator per output element is carried across the tiles
//     and reduced horizontally once (vector.reduction), then combined with the
//     output. Done only when the combiner is reassociable: addf/mulf carrying
//     `fastmath<reassoc>`, or maximumf/minimumf.
//
// A tile is `vector-width` lanes times an unroll factor (<= max-unroll, a
// power of two, chosen so a tile does not exceed the dimension): for D = 64
// and 16 lanes, one tile is a whole row, `vector<64xf32>`, which LLVM splits
// into four zmm registers -- four independent FMA chains per row. A remainder
// that is not a multiple of the tile is handled by one more, narrower tile
// (masked when it is not a multiple of the vector width).
//
// Anything else is left alone for convert-linalg-to-loops: generics whose
// innermost dimension is strided in some operand, dynamic shapes, bodies with
// ops that are not elementwise-mappable (or `linalg.index` of the innermost
// dimension), non-reassociable reductions along the innermost dimension, and
// dimensions shorter than 4 lanes.
//
//===----------------------------------------------------------------------===//
#include "BufferAlias.h"
#include "miras/Compiler/Passes.h"
#include "miras/Compiler/Pipelines.h"

#include "mlir/Dialect/Arith/IR/Arith.h"
#include "mlir/Dialect/Linalg/IR/Linalg.h"
#include "mlir/Dialect/MemRef/IR/MemRef.h"
#include "mlir/Dialect/SCF/IR/SCF.h"
#include "mlir/Dialect/Vector/IR/VectorOps.h"
#include "mlir/IR/IRMapping.h"
#include "mlir/IR/OpDefinition.h"
#include "mlir/Transforms/RegionUtils.h"

#include "llvm/ADT/StringMap.h"
#include "llvm/MC/MCSubtargetInfo.h"
#include "llvm/MC/TargetRegistry.h"
#include "llvm/Support/MathExtras.h"
#include "llvm/Support/TargetSelect.h"
#include "llvm/TargetParser/Host.h"
#include "llvm/TargetParser/Triple.h"

#include <cstdlib>
#include <memory>

namespace miras {
#define GEN_PASS_DEF_MIRASVECTORIZE
#include "miras/Compiler/Passes.h.inc"
} // namespace miras

using namespace mlir;

namespace {

/// What analyse() found out about one generic.
struct Plan {
  linalg::GenericOp op;
  unsigned vdim = 0;           // the vectorised (innermost) loop dimension
  SmallVector<int64_t> ranges; // static loop ranges
  bool innerReduction = false; // vdim is a reduction dimension
  int64_t lanes = 0;           // lanes of one vector register
  int64_t tile = 0;            // lanes per tile (lanes * unroll)
  // Reduction along vdim: the combining op of the body and its kind.
  Operation *combiner = nullptr;
  vector::CombiningKind kind = vector::CombiningKind::ADD;
  Type elementType;
};

bool isScalarType(Type t) { return t.isIntOrIndexOrFloat(); }

/// The neutral element of `kind` for float type `t`.
TypedAttr neutralElement(vector::CombiningKind kind, FloatType t) {
  const llvm::fltSemantics &sem = t.getFloatSemantics();
  switch (kind) {
  case vector::CombiningKind::ADD:
    return FloatAttr::get(t, llvm::APFloat::getZero(sem, /*Negative=*/true));
  case vector::CombiningKind::MUL:
    return FloatAttr::get(t, llvm::APFloat::getOne(sem));
  case vector::CombiningKind::MAXIMUMF:
    return FloatAttr::get(t, llvm::APFloat::getInf(sem, /*Negative=*/true));
  case vector::CombiningKind::MINIMUMF:
    return FloatAttr::get(t, llvm::APFloat::getInf(sem, /*Negative=*/false));
  default:
    return {};
  }
}

/// Recognises `yield C(out, x)` with `out` used only there, for a reassociable
/// float combiner C.
LogicalResult matchCombiner(linalg::GenericOp op, Plan &plan) {
  Block &body = op.getRegion().front();
  BlockArgument out = body.getArgument(op.getNumDpsInputs());
  auto yield = cast<linalg::YieldOp>(body.getTerminator());
  Operation *c = yield.getOperand(0).getDefiningOp();
  if (!c || c->getBlock() != &body || c->getNumOperands() != 2 ||
      c->getNumResults() != 1 || !out.hasOneUse() ||
      !c->getResult(0).hasOneUse() ||
      (c->getOperand(0) != out && c->getOperand(1) != out) ||
      c->getOperand(0) == c->getOperand(1))
    return failure();
  auto reassoc = [](Operation *o) {
    auto fm = dyn_cast<arith::ArithFastMathInterface>(o);
    return fm && arith::bitEnumContainsAll(fm.getFastMathFlagsAttr().getValue(),
                                           arith::FastMathFlags::reassoc);
  };
  if (isa<arith::AddFOp>(c) && reassoc(c))
    plan.kind = vector::CombiningKind::ADD;
  else if (isa<arith::MulFOp>(c) && reassoc(c))
    plan.kind = vector::CombiningKind::MUL;
  else if (isa<arith::MaximumFOp>(c))
    plan.kind = vector::CombiningKind::MAXIMUMF;
  else if (isa<arith::MinimumFOp>(c))
    plan.kind = vector::CombiningKind::MINIMUMF;
  else
    return failure();
  plan.combiner = c;
  return success();
}

/// Decides whether and how `op` is vectorised.
FailureOr<Plan> analyse(linalg::GenericOp op, int64_t width, int64_t maxUnroll) {
  Plan plan;
  plan.op = op;
  if (!op.hasPureBufferSemantics() || op.getNumDpsInits() != 1 ||
      op.getNumLoops() == 0 || width < 1)
    return failure();
  plan.ranges = op.getStaticLoopRanges();
  if (llvm::any_of(plan.ranges, ShapedType::isDynamic))
    return failure();
  plan.vdim = op.getNumLoops() - 1;
  SmallVector<utils::IteratorType> iters = op.getIteratorTypesArray();
  plan.innerReduction = iters[plan.vdim] == utils::IteratorType::reduction;

  OpOperand *init = op.getDpsInitOperand(0);
  auto outType = dyn_cast<MemRefType>(init->get().getType());
  if (!outType || !isa<FloatType>(outType.getElementType()))
    return failure();
  plan.elementType = outType.getElementType();
  AffineMap outMap = op.getMatchingIndexingMap(init);
  // The output is indexed by parallel dims only, and by vdim iff it is one.
  for (AffineExpr e : outMap.getResults())
    if (auto d = dyn_cast<AffineDimExpr>(e);
        !d || iters[d.getPosition()] != utils::IteratorType::parallel)
      return failure();
  if (outMap.isFunctionOfDim(plan.vdim) == plan.innerReduction)
    return failure();

  for (OpOperand &operand : op->getOpOperands()) {
    AffineMap map = op.getMatchingIndexingMap(&operand);
    Type type = operand.get().getType();
    if (!isa<MemRefType>(type)) {
      if (!isScalarType(type) || map.getNumResults() != 0)
        return failure();
      continue;
    }
    auto memref = cast<MemRefType>(type);
    if (!isScalarType(memref.getElementType()) || !map.isProjectedPermutation())
      return failure();
    // Only an input that reads the output exactly where it is written may
    // alias it: tiles are read before they are written.
    if (&operand != init && operand.get() == init->get() &&
        (map != outMap || plan.innerReduction))
      return failure();
    if (!map.isFunctionOfDim(plan.vdim))
      continue;
    // In memory an i1 is a byte, in an LLVM vector a bit: no vector access.
    if (memref.getElementTypeBitWidth() % 8 != 0)
      return failure();
    if (map.getResults().back() != getAffineDimExpr(plan.vdim, op.getContext()))
      return failure();
    SmallVector<int64_t> strides;
    int64_t offset;
    if (failed(memref.getStridesAndOffset(strides, offset)) ||
        strides.back() != 1)
      return failure();
  }

  Block &body = op.getRegion().front();
  for (Operation &bop : body.without_terminator()) {
    if (auto index = dyn_cast<linalg::IndexOp>(bop)) {
      if (index.getDim() == plan.vdim)
        return failure();
      continue;
    }
    if (bop.getNumRegions() != 0 ||
        !llvm::all_of(bop.getOperandTypes(), isScalarType) ||
        !llvm::all_of(bop.getResultTypes(), isScalarType))
      return failure();
    if (!OpTrait::hasElementwiseMappableTraits(&bop) &&
        !bop.hasTrait<OpTrait::ConstantLike>())
      return failure();
  }
  if (plan.innerReduction && failed(matchCombiner(op, plan)))
    return failure();

  // Lanes: the register width, halved for short dimensions down to 4; the
  // tile unrolls whole registers while it still fits the dimension.
  int64_t n = plan.ranges[plan.vdim];
  int64_t lanes = width;
  while (lanes > n && lanes > 4)
    lanes /= 2;
  if (lanes > n)
    return failure();
  int64_t unroll = 1;
  while (unroll * 2 <= maxUnroll && lanes * unroll * 2 <= n)
    unroll *= 2;
  plan.lanes = lanes;
  plan.tile = lanes * unroll;
  return plan;
}

/// Emits the vector code for one plan in place of its generic.
class Emitter {
public:
  Emitter(Plan &plan, OpBuilder &b, bool scalar = false)
      : p(plan), b(b), loc(plan.op.getLoc()),
        ivs(plan.op.getNumLoops(), Value()), scalar(scalar) {}

  /// Row fusion: reads hoisted before the fused row loop.
  void prepareRows() {
    if (!scalar)
      hoistInvariantReads();
  }

  /// Row fusion of an elementwise 1-D generic: its `rows` elements from
  /// `start` as one vector (a block of rows is contiguous in a [rows]
  /// buffer), so that its math stays vectorised (exp as a polynomial, not
  /// a libm call per row).
  void emitBlock(Value start, int64_t rows) {
    ivs[0] = start;
    if (!p.innerReduction)
      return emitParallelTile(rows, Value());
    // A sum over the rows: one horizontal reduction per block.
    OpOperand *init = p.op.getDpsInitOperand(0);
    SmallVector<Value> idx = indicesOf(p.op.getMatchingIndexingMap(init));
    Value total = memref::LoadOp::create(b, loc, init->get(), idx);
    total = vector::ReductionOp::create(b, loc, p.kind, term(rows, Value()),
                                        total, combinerFastMath());
    memref::StoreOp::create(b, loc, total, init->get(), idx);
  }

  /// Row fusion of a 2-D generic whose rows reduce (`dq[j] += W[i, j] u[i]`,
  /// `sum(W * G)` whose columns end in a partial tile; with whole tiles, the
  /// fused loop carries the sum: sumBlock): the rows from `start` with the
  /// accumulator in registers, one read and one write of the output per
  /// block (per row, each row's update would wait for the previous row's
  /// store).
  void emitReducingBlock(Value start, int64_t rows) {
    assert(!sumsWholeTiles() && "the fused loop carries this sum (sumBlock)");
    blockStart = start;
    blockRows = rows;
    if (!p.innerReduction) {
      reductionDims.assign({0});
      forEachTile([&](int64_t lanes, Value mask) { emitParallelTile(lanes, mask); });
    } else { // the tail tile is reduced per row
      auto loop = scf::ForOp::create(
          b, loc, start, arith::AddIOp::create(b, loc, start, index(rows)), index(1));
      OpBuilder::InsertionGuard guard(b);
      b.setInsertionPoint(loop.getBody()->getTerminator());
      ivs[0] = loop.getInductionVar();
      emitReduction({});
    }
    blockStart = Value();
    reductionDims.clear();
  }

  /// A vector of the full tiles of vdim, every lane the combiner's neutral
  /// element.
  Value neutralAccumulator() {
    auto floatType = cast<FloatType>(p.elementType);
    auto accType = VectorType::get({p.tile}, floatType);
    return arith::ConstantOp::create(
        b, loc, accType,
        DenseElementsAttr::get(accType, neutralElement(p.kind, floatType)));
  }

  /// Row fusion of a sum over a whole matrix (`sum(dW * W)`, the columns
  /// whole tiles): its vector accumulator is carried by the fused loop from
  /// block to block (`sumBlock`) and reduced once after it (`storeSum`).
  /// One horizontal reduction per block of one row was a tenth of Mamba2's
  /// reverse step (dalpha).
  bool sumsWholeTiles() const {
    return p.innerReduction && p.ranges[p.vdim] % p.tile == 0;
  }

  Value sumBlock(Value start, int64_t rows, Value acc) {
    blockStart = start;
    blockRows = rows;
    Value next = accumulateTiles({0}, acc);
    blockStart = Value();
    return next;
  }

  void storeSum(Value acc) { emitReduction({}, acc); }

  /// Row fusion: the part of the generic for row `i` of loop dim 0, at the
  /// builder's insertion point (inside the fused row loop).
  void emitRow(Value i) {
    ivs[0] = i;
    if (scalar) {
      OpOperand *init = p.op.getDpsInitOperand(0);
      BlockArgument outArg = p.op.getMatchingBlockArgument(init);
      SmallVector<Value> idx = indicesOf(p.op.getMatchingIndexingMap(init));
      Value out;
      if (!outArg.use_empty())
        out = memref::LoadOp::create(b, loc, init->get(), idx);
      IRMapping map = body(1, Value(), out);
      memref::StoreOp::create(b, loc, yielded(map), init->get(), idx);
      return;
    }
    if (p.innerReduction)
      emitReduction({});
    else
      forEachTile([&](int64_t lanes, Value mask) { emitParallelTile(lanes, mask); });
  }

  void run() {
    linalg::GenericOp op = p.op;
    b.setInsertionPoint(op);
    hoistInvariantReads();
    SmallVector<unsigned> outer;
    if (p.innerReduction) {
      SmallVector<utils::IteratorType> iters = op.getIteratorTypesArray();
      SmallVector<unsigned> rows; // outer reduction dims: sum(A * B) over a matrix
      for (unsigned d = 0; d < op.getNumLoops(); ++d)
        if (d != p.vdim)
          (iters[d] == utils::IteratorType::reduction ? rows : outer).push_back(d);
      // One horizontal reduction per output element: when the outer dims
      // reduce too, one vector accumulator is carried across them (if vdim
      // is whole tiles). One horizontal reduction per row, with its result
      // chained into the next row's, took a tenth of Gated DeltaNet's
      // backward (dalpha = sum(dW * W)).
      bool carryAcross = !rows.empty() && p.ranges[p.vdim] % p.tile == 0;
      if (!carryAcross)
        llvm::append_range(outer, rows);
      // Rows of a matvec, one horizontal reduction each. Tried and measured
      // slower on znver4 (gated_deltanet D=64: 0.312 vs 0.288 ms, D=128
      // equal): rows in blocks of 16 with a transposing shuffle tree giving
      // 16 row sums in one vector.
      nest(outer, [&] { emitReduction(carryAcross ? rows : ArrayRef<unsigned>()); });
    } else {
      SmallVector<utils::IteratorType> iters = op.getIteratorTypesArray();
      for (unsigned d = 0; d < op.getNumLoops(); ++d)
        if (d != p.vdim && iters[d] == utils::IteratorType::parallel)
          outer.push_back(d);
      for (unsigned d = 0; d < op.getNumLoops(); ++d)
        if (iters[d] == utils::IteratorType::reduction)
          reductionDims.push_back(d);
      nest(outer, [&] {
        forEachTile([&](int64_t lanes, Value mask) { emitParallelTile(lanes, mask); });
      });
    }
    op.erase();
  }

private:
  Plan &p;
  OpBuilder &b;
  Location loc;
  SmallVector<Value> ivs; // current index per loop dim (tile start for vdim)
  SmallVector<unsigned> reductionDims;
  llvm::DenseMap<OpOperand *, Value> hoisted; // reads done before the loops
  bool scalar; // row fusion of a 1-D generic: one element per row, no vectors
  Value blockStart;      // row fusion: the first row of the block, or null
  int64_t blockRows = 0; // and its rows

  /// Reads inputs that are the same at every point of the loop nest once,
  /// before it: scalars indexed by no loop, and vectors indexed by vdim
  /// alone when vdim is a single tile (k in `W -= u k^T`, `y = W k`). LLVM
  /// cannot hoist them itself when the output is a function argument that
  /// might alias them; linalg's operands do not.
  void hoistInvariantReads() {
    int64_t n = p.ranges[p.vdim];
    Value out = p.op.getDpsInitOperand(0)->get();
    for (OpOperand *in : p.op.getDpsInputOperands()) {
      AffineMap map = p.op.getMatchingIndexingMap(in);
      if (!isa<MemRefType>(in->get().getType()) || in->get() == out)
        continue;
      bool usesVdim = map.isFunctionOfDim(p.vdim);
      if (map.getNumResults() != (usesVdim ? 1u : 0u) ||
          (usesVdim && n != p.tile))
        continue;
      ivs[p.vdim] = index(0);
      hoisted[in] = read(*in, p.tile, Value());
    }
  }

  Value index(int64_t v) { return arith::ConstantIndexOp::create(b, loc, v); }

  /// scf.for over the full range of each of `dims` in order, around `inner`.
  void nest(ArrayRef<unsigned> dims, llvm::function_ref<void()> inner) {
    if (dims.empty())
      return inner();
    unsigned d = dims.front();
    auto loop = scf::ForOp::create(b, loc, index(0), index(p.ranges[d]), index(1));
    OpBuilder::InsertionGuard guard(b);
    b.setInsertionPoint(loop.getBody()->getTerminator());
    ivs[d] = loop.getInductionVar();
    nest(dims.drop_front(), inner);
  }

  /// Calls `emit(lanes, mask)` for the full tiles of vdim (in an scf.for,
  /// ivs[vdim] the tile start) and then for the remainder, if any.
  void forEachTile(llvm::function_ref<void(int64_t, Value)> emit) {
    int64_t n = p.ranges[p.vdim], full = n / p.tile * p.tile;
    if (full == p.tile) {
      ivs[p.vdim] = index(0);
      emit(p.tile, Value());
    } else if (full > 0) {
      auto loop = scf::ForOp::create(b, loc, index(0), index(full), index(p.tile));
      OpBuilder::InsertionGuard guard(b);
      b.setInsertionPoint(loop.getBody()->getTerminator());
      ivs[p.vdim] = loop.getInductionVar();
      emit(p.tile, Value());
    }
    if (int64_t rem = n - full) {
      ivs[p.vdim] = index(full);
      emit(llvm::alignTo(rem, p.lanes), tailMask(rem));
    }
  }

  /// vector<Nxi1> with the first `rem` lanes set, or null when that is all.
  Value tailMask(int64_t rem) {
    int64_t lanes = llvm::alignTo(rem, p.lanes);
    if (lanes == rem)
      return Value();
    auto type = VectorType::get({lanes}, b.getI1Type());
    return vector::ConstantMaskOp::create(b, loc, type, ArrayRef<int64_t>{rem});
  }

  SmallVector<Value> indicesOf(AffineMap map) {
    SmallVector<Value> idx;
    for (AffineExpr e : map.getResults())
      idx.push_back(ivs[cast<AffineDimExpr>(e).getPosition()]);
    return idx;
  }

  /// The value of `operand` at the current point: a vector tile when its map
  /// uses vdim, else a scalar.
  Value read(OpOperand &operand, int64_t lanes, Value mask) {
    Value src = operand.get();
    auto memref = dyn_cast<MemRefType>(src.getType());
    if (!memref)
      return src;
    AffineMap map = p.op.getMatchingIndexingMap(&operand);
    SmallVector<Value> idx = indicesOf(map);
    if (scalar || !map.isFunctionOfDim(p.vdim))
      return memref::LoadOp::create(b, loc, src, idx);
    Type elt = memref.getElementType();
    auto type = VectorType::get({lanes}, elt);
    auto perm = AffineMapAttr::get(
        AffineMap::getMinorIdentityMap(memref.getRank(), 1, b.getContext()));
    Value pad = arith::ConstantOp::create(b, loc, elt, b.getZeroAttr(elt));
    return vector::TransferReadOp::create(b, loc, type, src, idx, perm, pad,
                                          mask, b.getBoolArrayAttr({true}));
  }

  void write(Value value, Value mask) {
    OpOperand *init = p.op.getDpsInitOperand(0);
    AffineMap map = p.op.getMatchingIndexingMap(init);
    SmallVector<Value> idx = indicesOf(map);
    auto perm = AffineMapAttr::get(AffineMap::getMinorIdentityMap(
        cast<MemRefType>(init->get().getType()).getRank(), 1, b.getContext()));
    vector::TransferWriteOp::create(b, loc, value, init->get(), idx, perm, mask,
                                    b.getBoolArrayAttr({true}));
  }

  /// Re-creates `op` with vector operands (scalars broadcast) when any of its
  /// mapped operands is a vector, else clones it as a scalar op.
  Operation *vectorizeOp(Operation &op, IRMapping &map, int64_t lanes) {
    SmallVector<Value> operands;
    bool anyVector = false;
    for (Value v : op.getOperands()) {
      operands.push_back(map.lookupOrDefault(v));
      anyVector |= isa<VectorType>(operands.back().getType());
    }
    if (!anyVector)
      return b.clone(op, map);
    for (Value &v : operands)
      if (!isa<VectorType>(v.getType()))
        v = vector::BroadcastOp::create(
            b, loc, VectorType::get({lanes}, v.getType()), v);
    SmallVector<Type> types;
    for (Type t : op.getResultTypes())
      types.push_back(VectorType::get({lanes}, t));
    OperationState state(loc, op.getName(), operands, types, op.getAttrs());
    Operation *created = b.create(state);
    map.map(op.getResults(), created->getResults());
    return created;
  }

  /// Maps the inputs, runs the body (but the combiner, if any) and returns
  /// the mapping. `out` is what the output block argument stands for.
  IRMapping body(int64_t lanes, Value mask, Value out) {
    IRMapping map;
    Block &block = p.op.getRegion().front();
    for (OpOperand *in : p.op.getDpsInputOperands()) {
      Value v = hoisted.lookup(in);
      map.map(p.op.getMatchingBlockArgument(in), v ? v : read(*in, lanes, mask));
    }
    if (out)
      map.map(block.getArgument(p.op.getNumDpsInputs()), out);
    for (Operation &op : block.without_terminator()) {
      if (&op == p.combiner)
        continue;
      if (auto idx = dyn_cast<linalg::IndexOp>(op)) {
        map.map(idx.getResult(), ivs[idx.getDim()]);
        continue;
      }
      vectorizeOp(op, map, lanes);
    }
    return map;
  }

  Value yielded(IRMapping &map) {
    Block &block = p.op.getRegion().front();
    return map.lookupOrDefault(block.getTerminator()->getOperand(0));
  }

  Value broadcastIfScalar(Value v, int64_t lanes) {
    if (isa<VectorType>(v.getType()))
      return v;
    return vector::BroadcastOp::create(b, loc, VectorType::get({lanes}, v.getType()), v);
  }

  /// One output tile of a generic whose vdim is parallel; the reduction dims
  /// (if any) loop inside with the tile carried in registers.
  void emitParallelTile(int64_t lanes, Value mask) {
    OpOperand *init = p.op.getDpsInitOperand(0);
    BlockArgument outArg = p.op.getMatchingBlockArgument(init);
    Value acc;
    if (!outArg.use_empty() || !reductionDims.empty())
      acc = read(*init, lanes, mask);
    Value result = reduceOver(reductionDims, acc, lanes, mask);
    write(result, mask);
  }

  Value reduceOver(ArrayRef<unsigned> dims, Value acc, int64_t lanes, Value mask) {
    return carryOver(dims, acc, [&](Value inner) {
      IRMapping map = body(lanes, mask, inner);
      return broadcastIfScalar(yielded(map), lanes);
    });
  }

  /// `step(acc)` at every point of `dims` (nested scf.for loops, ivs set),
  /// the accumulator carried from one point to the next.
  Value carryOver(ArrayRef<unsigned> dims, Value acc,
                  llvm::function_ref<Value(Value)> step) {
    if (dims.empty())
      return step(acc);
    unsigned d = dims.front();
    Value lo = index(0), hi = index(p.ranges[d]);
    if (d == 0 && blockStart) { // row fusion: this block's rows only
      lo = blockStart;
      hi = arith::AddIOp::create(b, loc, lo, index(blockRows));
    }
    auto loop = scf::ForOp::create(b, loc, lo, hi, index(1), ValueRange{acc});
    OpBuilder::InsertionGuard guard(b);
    b.setInsertionPointToStart(loop.getBody());
    ivs[d] = loop.getInductionVar();
    scf::YieldOp::create(
        b, loc, carryOver(dims.drop_front(), loop.getRegionIterArgs()[0], step));
    return loop.getResult(0);
  }

  /// C(acc, x) or C(x, acc), keeping the operand order of the combiner.
  Value combine(Value acc, Value x) {
    Operation *c = p.combiner;
    Value out = p.op.getRegion().front().getArgument(p.op.getNumDpsInputs());
    SmallVector<Value> operands =
        c->getOperand(0) == out ? SmallVector<Value>{acc, x}
                                : SmallVector<Value>{x, acc};
    OperationState state(loc, c->getName(), operands, {acc.getType()},
                         c->getAttrs());
    return b.create(state)->getResult(0);
  }

  arith::FastMathFlags combinerFastMath() {
    if (auto fm = dyn_cast<arith::ArithFastMathInterface>(p.combiner))
      return fm.getFastMathFlagsAttr().getValue();
    return arith::FastMathFlags::none;
  }

  /// The x of `C(out, x)` for the tile at ivs, masked lanes set to neutral.
  Value term(int64_t lanes, Value mask) {
    IRMapping map = body(lanes, mask, Value());
    Value c = p.combiner->getOperand(0);
    Value out = p.op.getRegion().front().getArgument(p.op.getNumDpsInputs());
    Value x = broadcastIfScalar(
        map.lookupOrDefault(c == out ? p.combiner->getOperand(1) : c), lanes);
    if (mask) {
      auto type = cast<VectorType>(x.getType());
      Value neutral = arith::ConstantOp::create(
          b, loc, type,
          DenseElementsAttr::get(type, neutralElement(
                                           p.kind, cast<FloatType>(p.elementType))));
      x = arith::SelectOp::create(b, loc, mask, x, neutral);
    }
    return x;
  }

  /// `acc` combined with the terms of the full tiles of vdim at every point
  /// of the dims `rows` (nested loops; the current block's rows for dim 0
  /// under row fusion).
  Value accumulateTiles(ArrayRef<unsigned> rows, Value acc) {
    int64_t full = p.ranges[p.vdim] / p.tile * p.tile;
    return carryOver(rows, acc, [&](Value rowAcc) -> Value {
      if (full == p.tile) {
        ivs[p.vdim] = index(0);
        return combine(rowAcc, term(p.tile, Value()));
      }
      auto loop = scf::ForOp::create(b, loc, index(0), index(full),
                                     index(p.tile), ValueRange{rowAcc});
      OpBuilder::InsertionGuard guard(b);
      b.setInsertionPointToStart(loop.getBody());
      ivs[p.vdim] = loop.getInductionVar();
      Value next = combine(loop.getRegionIterArgs()[0], term(p.tile, Value()));
      scf::YieldOp::create(b, loc, next);
      return loop.getResult(0);
    });
  }

  /// One output element of a generic whose vdim is a reduction: a vector
  /// accumulator across the full tiles of vdim, and across the outer dims
  /// `rows` that reduce too (only when vdim is whole tiles), one horizontal
  /// reduction at the end, then the masked tail. `carried`: that accumulator
  /// when the caller has it already (a fused loop carried it: sumBlock).
  void emitReduction(ArrayRef<unsigned> rows, Value carried = Value()) {
    int64_t n = p.ranges[p.vdim], full = n / p.tile * p.tile;
    assert((rows.empty() || full == n) && "rows reduce only over whole tiles");
    arith::FastMathFlags fm = combinerFastMath();
    // The output element is the reductions' accumulator operand: one
    // `llvm.vector.reduce.*` per output element, no separate scalar combine.
    OpOperand *init = p.op.getDpsInitOperand(0);
    SmallVector<Value> idx = indicesOf(p.op.getMatchingIndexingMap(init));
    Value total = memref::LoadOp::create(b, loc, init->get(), idx);
    if (full > 0)
      total = vector::ReductionOp::create(
          b, loc, p.kind,
          carried ? carried : accumulateTiles(rows, neutralAccumulator()), total, fm);
    if (int64_t rem = n - full) {
      ivs[p.vdim] = index(full);
      int64_t lanes = llvm::alignTo(rem, p.lanes);
      total = vector::ReductionOp::create(b, loc, p.kind,
                                          term(lanes, tailMask(rem)), total, fm);
    }
    memref::StoreOp::create(b, loc, total, init->get(), idx);
  }
};

/// One access of an op to a buffer: for a row-fused op, whether the first
/// index is the row (else the row does not index the buffer).
struct Access {
  Value buffer;
  bool rowIndexed;
  bool written;
};

/// An op of a fused row loop: a linalg.fill of a [rows] buffer, a 1-D
/// generic over [rows] (one vector per block of rows; if not vectorisable,
/// one scalar per row), or a 2-D generic whose dim 0 is the
/// row and dim 1 the vectorised one. The row may be a reduction dim when the
/// output is not indexed by it: `dq[j] += W[i, j] u[i]` (columns accumulated
/// over the rows) and `sum(A * B)`.
struct RowMember {
  Operation *op = nullptr;
  std::unique_ptr<Plan> plan; // generics
  bool matrix = false;   // 2-D
  bool rowsReduce = false; // the rows are a reduction dim
  bool perBlock = false; // 1-D, vectorised over each block
  bool scalar = false;   // 1-D, one scalar per row
  int64_t rows = 0;
  SmallVector<Access> accesses;
};

std::optional<RowMember> rowMember(Operation *op, int64_t width,
                                   int64_t maxUnroll) {
  RowMember m;
  m.op = op;
  if (auto fill = dyn_cast<linalg::FillOp>(op)) {
    auto type = dyn_cast<MemRefType>(fill.getOutputs()[0].getType());
    if (!type || type.getRank() != 1 || type.isDynamicDim(0) ||
        !fill.hasPureBufferSemantics())
      return std::nullopt;
    m.rows = type.getDimSize(0);
    m.accesses.push_back({fill.getOutputs()[0], true, true});
    return m;
  }
  auto generic = dyn_cast<linalg::GenericOp>(op);
  if (!generic || !generic.hasPureBufferSemantics() ||
      generic.getNumDpsInits() != 1 ||
      (generic.getNumLoops() != 1 && generic.getNumLoops() != 2))
    return std::nullopt;
  SmallVector<int64_t> ranges = generic.getStaticLoopRanges();
  if (llvm::any_of(ranges, ShapedType::isDynamic))
    return std::nullopt;
  m.rows = ranges[0];
  bool rowReduces =
      generic.getIteratorTypesArray()[0] == utils::IteratorType::reduction;
  OpOperand *init = generic.getDpsInitOperand(0);
  for (OpOperand &operand : generic->getOpOperands()) {
    if (!isa<MemRefType>(operand.get().getType()))
      continue;
    AffineMap map = generic.getMatchingIndexingMap(&operand);
    bool row = map.getNumResults() > 0 &&
               map.getResult(0) == getAffineDimExpr(0, op->getContext());
    if (!row && map.isFunctionOfDim(0))
      return std::nullopt; // the row indexes a later dimension
    if (&operand == init && row == rowReduces)
      return std::nullopt;
    m.accesses.push_back({operand.get(), row, &operand == init});
  }
  if (generic.getNumLoops() == 2) {
    FailureOr<Plan> plan = analyse(generic, width, maxUnroll);
    if (failed(plan) || plan->vdim != 1)
      return std::nullopt;
    m.plan = std::make_unique<Plan>(*plan);
    m.matrix = true;
    m.rowsReduce = rowReduces;
    return m;
  }
  if (FailureOr<Plan> plan = analyse(generic, width, maxUnroll);
      succeeded(plan)) {
    m.plan = std::make_unique<Plan>(*plan);
    m.perBlock = true;
    return m;
  }
  // 1-D: one scalar per row; any elementwise body.
  if (!isScalarType(cast<MemRefType>(init->get().getType()).getElementType()))
    return std::nullopt;
  for (OpOperand &operand : generic->getOpOperands())
    if (!isa<MemRefType>(operand.get().getType()) &&
        !isScalarType(operand.get().getType()))
      return std::nullopt;
  for (Operation &bop : generic.getRegion().front().without_terminator())
    if (!isa<linalg::IndexOp>(bop) &&
        (bop.getNumRegions() != 0 ||
         !llvm::all_of(bop.getOperandTypes(), isScalarType) ||
         !llvm::all_of(bop.getResultTypes(), isScalarType) ||
         (!OpTrait::hasElementwiseMappableTraits(&bop) &&
          !bop.hasTrait<OpTrait::ConstantLike>())))
      return std::nullopt;
  m.plan = std::make_unique<Plan>();
  m.plan->op = generic;
  m.plan->vdim = 0;
  m.plan->ranges = ranges;
  m.plan->lanes = m.plan->tile = 1;
  m.plan->elementType = cast<MemRefType>(init->get().getType()).getElementType();
  m.scalar = true;
  return m;
}

/// Row-local: running the group row by row (each op over a block of rows
/// before the next) gives what running the ops one after the other gives.
/// A buffer written by the row is accessed by its row only, and through no
/// other view of the same memory; a buffer written across the rows (columns
/// accumulated, a sum) is accessed by its writer alone.
bool rowLocal(ArrayRef<RowMember> group) {
  for (const RowMember &w : group)
    for (const Access &a : w.accesses) {
      if (!a.written)
        continue;
      for (const RowMember &m : group)
        for (const Access &b : m.accesses) {
          if (&b == &a)
            continue;
          if (!a.rowIndexed ? miras::mayAlias(b.buffer, a.buffer)
                            : b.buffer == a.buffer
                                  ? !b.rowIndexed
                                  : miras::mayAlias(b.buffer, a.buffer))
            return false;
        }
    }
  return true;
}

/// The buffers `op` reads and writes, or nothing when they are not all known
/// (an op with regions, or with effects on no particular buffer).
std::optional<SmallVector<Access>> bufferAccesses(Operation *op) {
  SmallVector<Access> accesses;
  if (auto linalgOp = dyn_cast<linalg::LinalgOp>(op)) {
    if (!linalgOp.hasPureBufferSemantics())
      return std::nullopt;
    for (OpOperand &operand : op->getOpOperands())
      if (isa<MemRefType>(operand.get().getType()))
        accesses.push_back({operand.get(), false, linalgOp.isDpsInit(&operand)});
    return accesses;
  }
  if (op->getNumRegions() != 0)
    return std::nullopt;
  auto effecting = dyn_cast<MemoryEffectOpInterface>(op);
  if (!effecting)
    return isMemoryEffectFree(op) ? std::optional(accesses) : std::nullopt;
  SmallVector<MemoryEffects::EffectInstance> effects;
  effecting.getEffects(effects);
  for (const MemoryEffects::EffectInstance &effect : effects) {
    Value buffer = effect.getValue();
    if (!buffer || !isa<MemRefType>(buffer.getType()))
      return std::nullopt;
    accesses.push_back({buffer, false,
                        !isa<MemoryEffects::Read>(effect.getEffect())});
  }
  return accesses;
}

/// An op the fused loop moves across (before or after it).
struct Moved {
  Operation *op;
  SmallVector<Access> accesses;
};

/// Whether `op` (with `accesses`) must keep its order relative to one of
/// `ops`: it uses one's result, or they touch the same memory and one of
/// them writes.
template <typename Range>
bool dependsOn(Operation *op, ArrayRef<Access> accesses, const Range &ops) {
  // Its operands and what its body captures (a generic's scalars).
  llvm::SetVector<Value> used(op->operand_begin(), op->operand_end());
  getUsedValuesDefinedAbove(op->getRegions(), used);
  for (const auto &other : ops) {
    for (Value value : used)
      if (value.getDefiningOp() == other.op)
        return true;
    for (const Access &a : accesses)
      for (const Access &b : other.accesses)
        if ((a.written || b.written) && miras::mayAlias(a.buffer, b.buffer))
          return true;
  }
  return false;
}

struct MirasVectorize
    : public miras::impl::MirasVectorizeBase<MirasVectorize> {
  using MirasVectorizeBase::MirasVectorizeBase;

  void runOnOperation() override {
    if (vectorWidth < 0 || maxUnroll < 1) {
      getOperation().emitError("miras-vectorize: vector-width must be >= 0 "
                               "and max-unroll >= 1");
      return signalPassFailure();
    }
    if (vectorWidth == 0)
      return; // vectorisation off
    OpBuilder b(&getContext());
    WalkResult valid = getOperation().walk([&](Operation *op) {
      auto requested = op->getAttrOfType<IntegerAttr>(miras::kRowBlockAttrName);
      if (requested && requested.getInt() < 0) {
        op->emitError("miras-vectorize: a row block must be >= 0 (0: chosen "
                      "per loop), got ")
            << requested.getInt();
        return WalkResult::interrupt();
      }
      return WalkResult::advance();
    });
    if (valid.wasInterrupted())
      return signalPassFailure();
    // The blocks inside an op that asks for it (miras.row_block: the backward
    // kernel's reverse sweep) have their rows fused whether or not the option
    // is given; with it, every block.
    SmallVector<Block *> blocks;
    getOperation().walk([&](Block *block) { blocks.push_back(block); });
    for (Block *block : blocks) {
      std::optional<int64_t> rows = requestedRowBlock(block);
      if (!rows && fuseRows)
        rows = rowBlock;
      if (!rows)
        continue;
      fuseRowsIn(*block, *rows, b);
    }
    getOperation().walk([](Operation *op) { op->removeAttr(kRowFusionTried); });
    SmallVector<linalg::GenericOp> generics;
    getOperation().walk([&](linalg::GenericOp op) { generics.push_back(op); });
    for (linalg::GenericOp op : generics) {
      FailureOr<Plan> plan = analyse(op, vectorWidth, maxUnroll);
      if (failed(plan))
        continue;
      Emitter(*plan, b).run();
    }
  }

  /// Fuses the ops over the same rows of one block into loops over the
  /// rows, one group at a time until none is left: each row of a matrix is
  /// read once while it is in L1 by every op that reads it (the matvecs of
  /// the state, its in-place update, the reverse step's column
  /// accumulations and sums). `givenBlock` rows per block of each loop, or
  /// for 0 the block chooseRowBlock picks for its group.
  void fuseRowsIn(Block &block, int64_t givenBlock, OpBuilder &b) {
    while (fuseOneGroup(block, givenBlock, b)) {
    }
  }

  /// Scans `block` from its first 2-D generic over rows that no group has
  /// started at yet, up to the next op whose memory effects are unknown (an op with
  /// regions: a fused loop, control flow), sorting each op into
  ///   * the group: it joins the loop over the rows (it must be row-local
  ///     with the group and independent of the ops deferred);
  ///   * before: independent of the group and of the ops deferred, it stays
  ///     where it is, before the loop (fills and 1-D generics prefer this:
  ///     they stay vectorised);
  ///   * after: it depends on the group across rows (it reads columns the
  ///     group accumulates, or a sum), so it moves after the loop, and so
  ///     does whatever depends on it.
  /// Returns whether a group was fused.
  bool fuseOneGroup(Block &block, int64_t givenBlock, OpBuilder &b) {
    std::vector<RowMember> group;
    std::vector<Moved> after;
    Operation *end = nullptr;
    auto canJoin = [&](RowMember &m) {
      if (m.rows != group.front().rows ||
          dependsOn(m.op, m.accesses, after))
        return false;
      group.push_back(std::move(m));
      if (rowLocal(group))
        return true;
      m = std::move(group.back());
      group.pop_back();
      return false;
    };
    for (Operation &opRef : block) {
      Operation *op = &opRef;
      std::optional<RowMember> m = rowMember(op, vectorWidth, maxUnroll);
      bool matrix = m && m->matrix;
      if (group.empty()) {
        if (matrix && !op->hasAttr(kRowFusionTried))
          group.push_back(std::move(*m));
        continue;
      }
      std::optional<SmallVector<Access>> accesses = bufferAccesses(op);
      if (!accesses || op->hasTrait<OpTrait::IsTerminator>()) {
        end = op;
        break;
      }
      if (matrix && canJoin(*m))
        continue;
      if (!dependsOn(op, *accesses, group) && !dependsOn(op, *accesses, after))
        continue; // stays before the loop
      if (m && !matrix && canJoin(*m))
        continue;
      after.push_back({op, std::move(*accesses)});
    }
    if (group.empty())
      return false;
    // Not worth a loop of its own: the first matrix op stays as it is, and
    // the scan starts again after it.
    int64_t rowsPerBlock = givenBlock > 0 ? givenBlock : chooseRowBlock(group);
    if (group.size() < 2 || !end || rowsPerBlock == 0) {
      group.front().op->setAttr(kRowFusionTried, b.getUnitAttr());
      return true;
    }
    // The loop goes after every op that stays before it (a later member may
    // depend on one: the fill of the sum it accumulates), then the deferred
    // ops in their order.
    emitFused(group, end, rowsPerBlock, b);
    for (Moved &moved : after)
      moved.op->moveBefore(end);
    return true;
  }

  /// The miras.row_block of the nearest op around `block` that has one.
  static std::optional<int64_t> requestedRowBlock(Block *block) {
    for (Operation *op = block->getParentOp(); op; op = op->getParentOp())
      if (auto requested = op->getAttrOfType<IntegerAttr>(miras::kRowBlockAttrName))
        return requested.getInt();
    return std::nullopt;
  }

  /// The block when none is given (0: leave the group unfused). One row at a
  /// time, every op of the group reads a row while it is still in registers
  /// (LLVM keeps one load of it), so the loop's loads fall to one per row and
  /// matrix: the reverse step's sweeps over dW' and W are load-bound (Gated
  /// DeltaNet, D = 64: four reads of dW' and three of W per token, one each
  /// fused). Sums over the whole matrix carry their accumulators across the
  /// rows (sumBlock); columns accumulated across the rows that do not fit in
  /// registers (Titans' W2 rows of 4 D) are read and written per row in L1,
  /// which measured faster than blocks of 4 rows (whose accumulators spill
  /// too). A group with more than 8 1-D ops (the MLP memories' activations and
  /// their derivatives over the rows of W1) is left as it is: fused, each
  /// would run on a few lanes per block where unfused it is whole vectors.
  /// Measured in docs/TRAINING.md ("Rows of the reverse sweep fused", "Sums
  /// carried").
  static int64_t chooseRowBlock(ArrayRef<RowMember> group) {
    constexpr int64_t kRowOps = 8;
    int64_t rowOps = llvm::count_if(group, [](const RowMember &m) { return !m.matrix; });
    return rowOps > kRowOps ? 0 : 1;
  }

  /// Marks a matrix op that a group cannot start at (the next scan skips it);
  /// removed when the pass is done.
  static constexpr llvm::StringLiteral kRowFusionTried = "miras.row_fusion_tried";

  /// One loop over blocks of rows before `at` in place of the group's ops.
  void emitFused(std::vector<RowMember> &group, Operation *at, int64_t block,
                 OpBuilder &b) {
    Location loc = group.front().op->getLoc();
    b.setInsertionPoint(at);
    std::vector<std::unique_ptr<Emitter>> emitters;
    for (RowMember &m : group) {
      emitters.emplace_back(m.plan ? new Emitter(*m.plan, b, m.scalar) : nullptr);
      // A 1-D op's inputs are indexed by the rows: nothing to hoist.
      if (m.matrix)
        emitters.back()->prepareRows();
    }
    // Blocks of `block` rows: each op runs over the block's rows before the
    // next one starts.
    int64_t rows = group.front().rows;
    while (block > 1 && rows % block != 0)
      block /= 2;
    auto idx = [&](int64_t v) { return arith::ConstantIndexOp::create(b, loc, v); };
    // The sums over the whole matrix carry their accumulators in the loop.
    SmallVector<Emitter *> summing;
    SmallVector<Value> sums;
    for (auto [m, e] : llvm::zip(group, emitters))
      if (m.matrix && m.rowsReduce && e->sumsWholeTiles()) {
        summing.push_back(e.get());
        sums.push_back(e->neutralAccumulator());
      }
    auto loop = scf::ForOp::create(b, loc, idx(0), idx(rows), idx(block), sums);
    {
      OpBuilder::InsertionGuard guard(b);
      // With iter_args the body has no terminator yet.
      if (sums.empty())
        b.setInsertionPoint(loop.getBody()->getTerminator());
      else
        b.setInsertionPointToEnd(loop.getBody());
      Value start = loop.getInductionVar();
      for (auto [m, e] : llvm::zip(group, emitters)) {
        if (m.perBlock) {
          e->emitBlock(start, block);
          continue;
        }
        if (size_t k = llvm::find(summing, e.get()) - summing.begin(); k < summing.size()) {
          sums[k] = e->sumBlock(start, block, loop.getRegionIterArgs()[k]);
          continue;
        }
        if (m.rowsReduce) {
          e->emitReducingBlock(start, block);
          continue;
        }
        auto inner = scf::ForOp::create(
            b, loc, start, arith::AddIOp::create(b, loc, start, idx(block)),
            idx(1));
        OpBuilder::InsertionGuard innerGuard(b);
        b.setInsertionPoint(inner.getBody()->getTerminator());
        Value i = inner.getInductionVar();
        if (auto fill = dyn_cast<linalg::FillOp>(m.op))
          memref::StoreOp::create(b, loc, fill.getInputs()[0],
                                  fill.getOutputs()[0], ValueRange{i});
        else
          e->emitRow(i);
      }
      if (!sums.empty())
        scf::YieldOp::create(b, loc, sums);
    }
    for (auto [e, sum] : llvm::zip(summing, loop.getResults()))
      e->storeSum(sum);
    for (RowMember &m : group)
      m.op->erase();
  }
};

} // namespace

int64_t miras::vectorWidthForCPU(llvm::StringRef cpu) {
  // For A/B timing against LLVM's own auto-vectorisation (0 = off).
  if (const char *env = std::getenv("MIRAS_VECTOR_WIDTH")) {
    int64_t width;
    if (!llvm::StringRef(env).getAsInteger(10, width) && width >= 0)
      return width;
  }
  llvm::Triple triple(llvm::sys::getProcessTriple());
  if (!triple.isX86())
    return 4; // NEON / portable 128-bit
  llvm::StringMap<bool> features;
  if (cpu.empty()) {
    features = llvm::sys::getHostCPUFeatures();
  } else {
    llvm::InitializeNativeTarget();
    std::string error;
    const llvm::Target *target = llvm::TargetRegistry::lookupTarget(triple, error);
    if (!target)
      return 4;
    std::unique_ptr<llvm::MCSubtargetInfo> sti(
        target->createMCSubtargetInfo(triple, cpu, ""));
    if (!sti || !sti->isCPUStringValid(cpu))
      return 4;
    for (llvm::StringRef f : {"avx512f", "avx2", "avx"})
      features[f] = sti->checkFeatures(("+" + f).str());
  }
  if (features.lookup("avx512f"))
    return 16;
  if (features.lookup("avx2") || features.lookup("avx"))
    return 8;
  return 4;
}
