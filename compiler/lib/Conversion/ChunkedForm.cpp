//===- ChunkedForm.cpp - The chunked parallel algorithm (SPEC section 7) --===//
//
// With chunk C > 1 every gradient reads the state at the start of its chunk
// (the anchor), so within a chunk each state follows
//   W_t = g_t W_0 + sign * sum_{j <= t} R[t, j] u_j w_j^T
// with rank-1 terms known in advance: g_t = s_0 ... s_t and
// R[t, j] = s_{j+1} ... s_t are products of the scalar decays. A read W_t x_t
// is then the dual form of linear attention,
//   g_t W_0 x_t + sign * sum_j R[t, j] (w_j . x_t) u_j,
// which is matrix products over the chunk's tokens. Per chunk the kernel runs
//   phase 1  a token loop over everything that reads no state (errors at the
//            anchor, u, w, decays, queries), stored into [C, ...] buffers;
//   reads    each read of a state becomes contractions over the chunk; the
//            per-token ops between reads (an MLP's activation, a norm, the
//            residual) run in token loops of their own, "stages", on rows of
//            those buffers;
//   the end  outputs are copied out and every state moves to the chunk's end,
//            W = g_C W_0 + sign * U^T diag(r) Wk.
// Column decays (W Diag(a_t)) replace R by running products per (t, j).
//
//===----------------------------------------------------------------------===//
#include "KernelLowering.h"

#include "mlir/IR/Matchers.h"

#include <tuple>

namespace miras::lowering {

static std::string stateName(func::FuncOp step, unsigned index) {
  if (auto name = step.getResultAttrOfType<StringAttr>(index, "miras.name"))
    return name.str();
  return "state #" + std::to_string(index);
}

FailureOr<ParallelForm> matchParallelForm(func::FuncOp step,
                                          unsigned numStates,
                                          unsigned numAnchors,
                                          std::string &why) {
  if (numAnchors == 0) {
    why = "it needs chunk > 1";
    return failure();
  }
  Block &body = step.getBody().front();
  auto ret = cast<func::ReturnOp>(body.getTerminator());
  ParallelForm form;
  // Everything that reads a carried state, directly or not.
  llvm::SmallDenseSet<Value> tainted;
  for (unsigned i = 0; i < numStates; ++i)
    tainted.insert(body.getArgument(i));
  for (Operation &op : body.without_terminator())
    if (llvm::any_of(op.getOperands(),
                     [&](Value v) { return tainted.contains(v); })) {
      form.dependent.insert(&op);
      tainted.insert(op.getResults().begin(), op.getResults().end());
    }
  auto independent = [&](Value v) { return !tainted.contains(v); };

  llvm::SmallDenseSet<Value> states; // old and new values of every state
  DenseMap<Value, std::string> matrixOf; // ... and their decayed values
  for (unsigned i = 0; i < numStates; ++i) {
    Value old = body.getArgument(i), next = ret.getOperand(i);
    std::string name = stateName(step, i);
    if (cast<RankedTensorType>(old.getType()).getRank() != 2) {
      why = "state " + name + " is not a matrix";
      return failure();
    }
    std::string shape = name + "' = decay * " + name + " +/- u w^T";
    Operation *update = next.getDefiningOp();
    if (!update || !isa<arith::AddFOp, arith::SubFOp>(update)) {
      why = "the update of " + name + " is not " + shape;
      return failure();
    }
    ChunkUpdate chunkUpdate;
    chunkUpdate.state = i;
    Value decayed = update->getOperand(0), term = update->getOperand(1);
    // The other state whose new value `v` is, if any (momentum).
    auto otherState = [&](Value v) -> int {
      for (unsigned k = 0; k < numStates; ++k)
        if (k != i && v == ret.getOperand(k))
          return k;
      return -1;
    };
    if (isa<arith::AddFOp>(update) &&
        (independent(decayed) || otherState(decayed) >= 0))
      std::swap(decayed, term);
    chunkUpdate.sign = isa<arith::SubFOp>(update) ? -1.0 : 1.0;
    auto outer = term.getDefiningOp<OuterOp>();
    // A scalar times u w^T (momentum's learning rate): u is scaled per token.
    if (auto scaled = term.getDefiningOp<arith::MulFOp>(); scaled && !outer) {
      for (auto [lhs, rhs] : {std::pair{scaled.getLhs(), scaled.getRhs()},
                              std::pair{scaled.getRhs(), scaled.getLhs()}}) {
        auto bcast = lhs.getDefiningOp<BroadcastOp>();
        if (bcast && bcast.getDims().empty() && independent(bcast.getInput()) &&
            rhs.getDefiningOp<OuterOp>()) {
          chunkUpdate.scale = bcast.getInput();
          outer = rhs.getDefiningOp<OuterOp>();
          form.updateOps.insert(scaled);
        }
      }
    }
    if (isa<arith::AddFOp>(update) && otherState(term) >= 0) {
      chunkUpdate.momentum = otherState(term);
    } else if (!outer || !independent(outer.getLhs()) ||
               !independent(outer.getRhs())) {
      why = "the update of " + name + " is not " + shape +
            " with u, w read at the anchor";
      return failure();
    } else {
      chunkUpdate.u = outer.getLhs();
      chunkUpdate.w = outer.getRhs();
      form.updateOps.insert(outer);
    }
    form.updateOps.insert(update);
    if (decayed != old) {
      auto mul = decayed.getDefiningOp<arith::MulFOp>();
      Value factor = !mul ? Value()
                     : mul.getRhs() == old ? mul.getLhs()
                     : mul.getLhs() == old ? mul.getRhs()
                                           : Value();
      // A scalar gate broadcast over W, a compile-time constant (RetNet), or
      // a gate along W's columns (Dk).
      auto bcast = factor ? factor.getDefiningOp<BroadcastOp>() : BroadcastOp();
      DenseFPElementsAttr constant;
      if (bcast && independent(bcast.getInput()) && bcast.getDims().empty()) {
        chunkUpdate.decay = bcast.getInput();
      } else if (bcast && independent(bcast.getInput()) &&
                 llvm::equal(bcast.getDims(), ArrayRef<int64_t>{1})) {
        chunkUpdate.decay = bcast.getInput();
        chunkUpdate.channel = true;
      } else if (factor && matchPattern(factor, m_Constant(&constant)) &&
                 constant.isSplat()) {
        chunkUpdate.decay = factor; // lowered as a splat: one f32 value
      } else {
        why = "the retention of " + name + " is neither a scalar decay nor a "
              "decay of its columns (row gates stay sequential)";
        return failure();
      }
      form.updateOps.insert(mul);
      matrixOf[decayed] = name;
    }
    states.insert(old);
    states.insert(next);
    matrixOf[old] = matrixOf[next] = name;
    form.updates.push_back(chunkUpdate);
  }
  // Momentum: S' itself a rank-1 update, and only scalar decays (the in-chunk
  // coefficients are then products of two scalar sequences).
  for (const ChunkUpdate &update : form.updates) {
    if (update.momentum < 0)
      continue;
    const ChunkUpdate &inner = form.updates[update.momentum];
    std::string name = stateName(step, update.state);
    if (inner.momentum >= 0 || !inner.u || update.channel || inner.channel) {
      why = "the momentum of " + name + " is not S' = decay * S +/- u w^T with "
            "scalar decays";
      return failure();
    }
  }
  // In program order, so that the first offending op is named.
  for (Operation &bodyOp : body.without_terminator()) {
    Operation *op = &bodyOp;
    if (!form.dependent.contains(op) || form.updateOps.contains(op))
      continue;
    auto read = dyn_cast<MatVecOp>(op);
    if (read && states.contains(read.getMatrix()) &&
        !states.contains(read.getVector()))
      continue;
    for (Value operand : op->getOperands()) {
      auto shaped = dyn_cast<ShapedType>(operand.getType());
      if (!matrixOf.contains(operand) && (!shaped || shaped.getRank() < 2))
        continue;
      std::string name = matrixOf.lookup(operand);
      why = (name.empty() ? std::string("a matrix computed from the states")
                          : name) +
            " is read by '" +
            op->getName().getStringRef().str() +
            "', not only by matrix-vector products (mirror maps stay "
            "sequential)";
      return failure();
    }
    if (auto shaped = dyn_cast<ShapedType>(op->getResult(0).getType());
        shaped && shaped.getRank() > 1) {
      why = "the read builds a matrix ('" +
            op->getName().getStringRef().str() + "')";
      return failure();
    }
  }
  return form;
}

void emitContraction(OpBuilder &b, Location loc, ValueRange ins,
                     ArrayRef<AffineMap> maps, Value out,
                     ArrayRef<utils::IteratorType> iterators, double sign) {
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

/// Builds the chunk loop of one (batch, head) pair; see the file comment.
class ChunkedForm {
public:
  ChunkedForm(KernelLowering &kernel, const ParallelForm &form, OpBuilder &b,
              Location loc, Block *entry, Value bi, Value hi)
      : k(kernel), form(form), b(b), loc(loc), entry(entry), bi(bi), hi(hi),
        ctx(b.getContext()), chunk(kernel.module.getChunk()),
        body(kernel.step.getBody().front()),
        ret(cast<func::ReturnOp>(body.getTerminator())) {}

  LogicalResult build(Value length);

private:
  using IteratorType = utils::IteratorType;

  /// Where each op of the step runs: -2 hoisted constants, -1 phase 1, k the
  /// token loop after the k-th read; reads are numbered separately.
  void assignStages();
  /// Values that cross from one loop to another, each into a [C, ...] buffer.
  void findCarried();
  Value buffer(ArrayRef<int64_t> shape) {
    return k.heapScratch(RankedTensorType::get(shape, b.getF32Type()));
  }
  Value rowOf(Value buf, Value t) {
    auto shape = cast<MemRefType>(buf.getType()).getShape();
    return slice(b, loc, buf, {t}, shape.drop_front());
  }
  /// Binds a carried value (or a read's result) to its row for token t.
  void bindCarried(Value v, Value buf, Value t);
  LogicalResult storeCarried(Value v, Value buf, Value t);
  /// A token loop over [0, size) running `fill(t)`.
  LogicalResult tokenLoop(Value size, function_ref<LogicalResult(Value)> fill);
  /// ratios[j] = s_{j+1} ... s_{limit-1} for j < limit, else 0; returns
  /// s_0 ... s_{limit-1}.
  Value products(Value decays, Value limit, Value ratios);
  /// The dual form of read `index`: Y = rows W_t x_t for the chunk's tokens.
  void emitRead(unsigned index, Value x, Value y);
  void emitChannelRead(const ChunkUpdate &update, bool readsNew, Value x,
                       Value y);
  /// In-chunk coefficients of a momentum state W' = a W + S' with
  /// S' = m S + sign u w^T:
  ///   W_t = A_t W_0 + c_t S_0 + sign * sum_j K[t, j] u_j w_j^T,
  ///   A_t = a_0 ... a_t, c_t = a_t c_{t-1} + m_0 ... m_t,
  ///   K[t, j] = a_t K[t-1, j] + m_{j+1} ... m_t  (j <= t).
  /// Row r of K, A, c holds token r's values, or token r - 1's when
  /// `lagged` (reads before the write; row 0 is then (0, 1, 0)).
  void momentumCoefficients(const ChunkUpdate &update, Value K, Value A,
                            Value c, bool lagged);
  void emitMomentumRead(const ChunkUpdate &update, bool readsNew, Value x,
                        Value y);
  /// Moves every state to the chunk's end.
  void emitStateUpdates();

  Value constantIndex(int64_t v) { return arith::ConstantIndexOp::create(b, loc, v); }
  Value constantF32(double v) {
    return arith::ConstantOp::create(b, loc, b.getF32FloatAttr(v));
  }
  AffineMap map3(ArrayRef<AffineExpr> exprs) {
    return AffineMap::get(3, 0, exprs, ctx);
  }

  KernelLowering &k;
  const ParallelForm &form;
  OpBuilder &b;
  Location loc;
  Block *entry;
  Value bi, hi;
  MLIRContext *ctx;
  int64_t chunk;
  Block &body;
  func::ReturnOp ret;

  SmallVector<MatVecOp> reads;
  DenseMap<Operation *, int> stageOf;
  int numStages = 0;
  llvm::MapVector<Value, Value> carried; // value -> [C, ...] buffer
  SmallVector<Value> readResults;        // read index -> [C, rows]
  struct StateBuffers {
    Value U, Wk, decays;
  };
  SmallVector<StateBuffers> stateBuffers; // per update
  llvm::MapVector<Value, Value> decayBuffers; // decay value -> [C] / [C, cols]
  Value ones;                                 // decays of undecayed states
  Value start, size;
};

void ChunkedForm::assignStages() {
  int stage = 0;
  for (Operation &op : body.without_terminator()) {
    if (form.updateOps.contains(&op))
      continue;
    if (!form.dependent.contains(&op)) {
      stageOf[&op] = op.getNumOperands() == 0 ? -2 : -1;
      continue;
    }
    if (auto read = dyn_cast<MatVecOp>(op);
        read && llvm::any_of(form.updates, [&](const ChunkUpdate &u) {
          return read.getMatrix() == body.getArgument(u.state) ||
                 read.getMatrix() == ret.getOperand(u.state);
        })) {
      reads.push_back(read);
      stage = reads.size();
      continue;
    }
    stageOf[&op] = stage;
  }
  numStages = reads.size() + 1;
}

void ChunkedForm::findCarried() {
  auto needs = [&](Value v) {
    if (carried.contains(v))
      return;
    Type type = v.getType();
    SmallVector<int64_t> shape{chunk};
    if (auto shaped = dyn_cast<ShapedType>(type))
      shape.append(shaped.getShape().begin(), shaped.getShape().end());
    carried.insert({v, buffer(shape)});
  };
  auto stageOfValue = [&](Value v) -> std::optional<int> {
    Operation *def = v.getDefiningOp();
    if (!def)
      return std::nullopt; // a token input: bound again in every loop
    if (auto it = stageOf.find(def); it != stageOf.end())
      return it->second;
    return std::nullopt; // a read's result lives in its own buffer
  };
  for (Operation &op : body.without_terminator()) {
    if (form.updateOps.contains(&op))
      continue;
    bool isRead = !stageOf.contains(&op);
    for (Value operand : op.getOperands()) {
      std::optional<int> from = stageOfValue(operand);
      if (isRead) {
        // The vector of a read, unless it is already a read's result.
        if (operand == cast<MatVecOp>(op).getVector() &&
            (from || !operand.getDefiningOp()))
          needs(operand);
        continue;
      }
      if (from && *from != -2 && *from != stageOf[&op])
        needs(operand);
    }
  }
  Value out = ret.getOperands().back();
  if (stageOfValue(out) || !out.getDefiningOp())
    needs(out);
}

void ChunkedForm::bindCarried(Value v, Value buf, Value t) {
  if (cast<MemRefType>(buf.getType()).getRank() > 1)
    k.lowered[v] = {Lowered::Kind::Buffer, rowOf(buf, t)};
  else
    k.lowered[v] = {Lowered::Kind::Scalar,
                    memref::LoadOp::create(b, loc, buf, ValueRange{t})};
}

LogicalResult ChunkedForm::storeCarried(Value v, Value buf, Value t) {
  // [C] buffers hold scalars and splat constants (one f32 per token).
  if (cast<MemRefType>(buf.getType()).getRank() > 1)
    return k.storeRow(b, loc, v, rowOf(buf, t));
  memref::StoreOp::create(b, loc, k.lowered.lookup(v).value, buf, ValueRange{t});
  return success();
}

LogicalResult ChunkedForm::tokenLoop(Value upTo,
                                     function_ref<LogicalResult(Value)> fill) {
  auto loop = scf::ForOp::create(b, loc, constantIndex(0), upTo, constantIndex(1));
  OpBuilder::InsertionGuard guard(b);
  b.setInsertionPointToStart(loop.getBody());
  Value t = loop.getInductionVar();
  Value ti = arith::AddIOp::create(b, loc, start, t);
  // Token inputs, and the anchors of the first states: the states themselves
  // until the chunk ends.
  unsigned numStates = form.updates.size();
  unsigned numAnchors = body.getNumArguments() - numStates - 3 -
                        k.module.getGates().size();
  k.bindToken(b, loc, entry, bi, ti, hi, numStates + numAnchors);
  for (unsigned i = 0; i < numAnchors; ++i)
    k.lowered[body.getArgument(numStates + i)] = {Lowered::Kind::Buffer,
                                                  k.states[i].slice};
  return fill(t);
}

Value ChunkedForm::products(Value decays, Value limit, Value ratios) {
  Value one = constantF32(1.0), zero = constantF32(0.0);
  auto loop = scf::ForOp::create(b, loc, constantIndex(0), constantIndex(chunk),
                                 constantIndex(1), ValueRange{one});
  OpBuilder::InsertionGuard guard(b);
  b.setInsertionPointToStart(loop.getBody());
  Value acc = loop.getRegionIterArgs()[0];
  Value j = arith::SubIOp::create(b, loc, constantIndex(chunk - 1),
                                  loop.getInductionVar());
  Value inside = arith::CmpIOp::create(b, loc, arith::CmpIPredicate::ult, j, limit);
  memref::StoreOp::create(b, loc, arith::SelectOp::create(b, loc, inside, acc, zero),
                          ratios, ValueRange{j});
  Value scaled = arith::MulFOp::create(
      b, loc, acc, memref::LoadOp::create(b, loc, decays, ValueRange{j}));
  scf::YieldOp::create(
      b, loc, ValueRange{arith::SelectOp::create(b, loc, inside, scaled, acc)});
  return loop.getResult(0);
}

void ChunkedForm::emitRead(unsigned index, Value x, Value y) {
  MatVecOp read = reads[index];
  const ChunkUpdate *update = nullptr;
  for (const ChunkUpdate &u : form.updates)
    if (read.getMatrix() == body.getArgument(u.state) ||
        read.getMatrix() == ret.getOperand(u.state))
      update = &u;
  bool readsNew = read.getMatrix() == ret.getOperand(update->state);
  if (update->channel)
    return emitChannelRead(*update, readsNew, x, y);
  if (update->momentum >= 0)
    return emitMomentumRead(*update, readsNew, x, y);
  const StateBuffers &buffers = stateBuffers[update->state];
  Value W0 = k.states[update->state].slice;
  // Token t reads the state after token t (read after write) or t - 1:
  // R[t, j] = s_{j+1} ... s_last(t), g[t] = s_0 ... s_last(t).
  Value R = buffer({chunk, chunk}), g = buffer({chunk}), S = buffer({chunk, chunk});
  auto rows = scf::ForOp::create(b, loc, constantIndex(0), constantIndex(chunk),
                                 constantIndex(1));
  {
    OpBuilder::InsertionGuard guard(b);
    b.setInsertionPointToStart(rows.getBody());
    Value t = rows.getInductionVar();
    Value limit = readsNew ? Value(arith::AddIOp::create(b, loc, t, constantIndex(1))) : t;
    memref::StoreOp::create(b, loc, products(buffers.decays, limit, rowOf(R, t)), g,
                            ValueRange{t});
  }
  AffineExpr d0, d1, d2;
  bindDims(ctx, d0, d1, d2);
  const IteratorType par = IteratorType::parallel, red = IteratorType::reduction;
  Value zero = constantF32(0.0);
  // S = X Wk^T over (t, j, c); Y = diag(g) X W0^T + sign (R .* S) U.
  linalg::FillOp::create(b, loc, ValueRange{zero}, ValueRange{S});
  emitContraction(b, loc, {x, buffers.Wk},
                  {map3({d0, d2}), map3({d1, d2}), map3({d0, d1})}, S,
                  {par, par, red}, 1.0);
  linalg::FillOp::create(b, loc, ValueRange{zero}, ValueRange{y});
  emitContraction(b, loc, {g, x, W0},
                  {map3({d0}), map3({d0, d2}), map3({d1, d2}), map3({d0, d1})},
                  y, {par, par, red}, 1.0);
  emitContraction(b, loc, {R, S, buffers.U},
                  {map3({d0, d1}), map3({d0, d1}), map3({d1, d2}), map3({d0, d2})},
                  y, {par, red, par}, update->sign);
}

void ChunkedForm::emitChannelRead(const ChunkUpdate &update, bool readsNew,
                                  Value x, Value y) {
  const StateBuffers &buffers = stateBuffers[update.state];
  Value W0 = k.states[update.state].slice;
  int64_t cols = cast<MemRefType>(W0.getType()).getShape()[1];
  // rho: running products of column decays; S[t, j] = sum_c w_j x_t rho;
  // Xg[t] = (a_0 ... a_last(t)) .* x_t.
  Value rho = buffer({cols}), dot = buffer({}), Xg = buffer({chunk, cols}),
        S = buffer({chunk, chunk});
  AffineMap id1 = AffineMap::getMultiDimIdentityMap(1, ctx);
  Value zero = constantF32(0.0), one = constantF32(1.0);
  auto multiply = [&](Value lhs, Value rhs, Value dest) {
    linalg::GenericOp::create(
        b, loc, ValueRange{lhs, rhs}, ValueRange{dest},
        ArrayRef<AffineMap>{id1, id1, id1}, parallel(1),
        [&](OpBuilder &nb, Location nloc, ValueRange args) {
          linalg::YieldOp::create(
              nb, nloc, Value(arith::MulFOp::create(nb, nloc, args[0], args[1])));
        });
  };
  auto rows = scf::ForOp::create(b, loc, constantIndex(0), constantIndex(chunk),
                                 constantIndex(1));
  {
    OpBuilder::InsertionGuard guard(b);
    b.setInsertionPointToStart(rows.getBody());
    Value t = rows.getInductionVar();
    Value limit = readsNew ? Value(arith::AddIOp::create(b, loc, t, constantIndex(1))) : t;
    Value xRow = rowOf(x, t);
    linalg::FillOp::create(b, loc, ValueRange{one}, ValueRange{rho});
    auto columns = scf::ForOp::create(b, loc, constantIndex(0), constantIndex(chunk),
                                      constantIndex(1));
    {
      OpBuilder::InsertionGuard inner(b);
      b.setInsertionPointToStart(columns.getBody());
      Value j = arith::SubIOp::create(b, loc, constantIndex(chunk - 1),
                                      columns.getInductionVar());
      Value inside = arith::CmpIOp::create(b, loc, arith::CmpIPredicate::ult, j, limit);
      auto ifOp = scf::IfOp::create(b, loc, inside, /*withElseRegion=*/true);
      b.setInsertionPointToStart(ifOp.thenBlock());
      linalg::FillOp::create(b, loc, ValueRange{zero}, ValueRange{dot});
      emitContraction(b, loc, {rowOf(buffers.Wk, j), xRow, rho},
                      {id1, id1, id1, AffineMap::get(1, 0, {}, ctx)}, dot,
                      {IteratorType::reduction}, 1.0);
      memref::StoreOp::create(b, loc, memref::LoadOp::create(b, loc, dot), S,
                              ValueRange{t, j});
      multiply(rho, rowOf(buffers.decays, j), rho);
      b.setInsertionPointToStart(ifOp.elseBlock());
      memref::StoreOp::create(b, loc, zero, S, ValueRange{t, j});
    }
    multiply(rho, xRow, rowOf(Xg, t));
  }
  AffineExpr d0, d1, d2;
  bindDims(ctx, d0, d1, d2);
  const IteratorType par = IteratorType::parallel, red = IteratorType::reduction;
  // Y = Xg W0^T + sign S U.
  linalg::FillOp::create(b, loc, ValueRange{zero}, ValueRange{y});
  emitContraction(b, loc, {Xg, W0}, {map3({d0, d2}), map3({d1, d2}), map3({d0, d1})},
                  y, {par, par, red}, 1.0);
  emitContraction(b, loc, {S, buffers.U},
                  {map3({d0, d1}), map3({d1, d2}), map3({d0, d2})}, y,
                  {par, red, par}, update.sign);
}

void ChunkedForm::momentumCoefficients(const ChunkUpdate &update, Value K,
                                       Value A, Value c, bool lagged) {
  Value alphas = stateBuffers[update.state].decays;
  Value mus = stateBuffers[update.momentum].decays;
  Value zero = constantF32(0.0), one = constantF32(1.0);
  Value previous = buffer({chunk}), ratios = buffer({chunk});
  linalg::FillOp::create(b, loc, ValueRange{zero}, ValueRange{previous});
  Value c0 = constantIndex(0), c1 = constantIndex(1), cC = constantIndex(chunk);
  if (lagged) {
    linalg::FillOp::create(b, loc, ValueRange{zero}, ValueRange{rowOf(K, c0)});
    memref::StoreOp::create(b, loc, one, A, ValueRange{c0});
    memref::StoreOp::create(b, loc, zero, c, ValueRange{c0});
  }
  auto loop = scf::ForOp::create(b, loc, c0, cC, c1, ValueRange{one, zero, one});
  OpBuilder::InsertionGuard guard(b);
  b.setInsertionPointToStart(loop.getBody());
  Value t = loop.getInductionVar();
  ValueRange carriedValues = loop.getRegionIterArgs();
  Value a = memref::LoadOp::create(b, loc, alphas, ValueRange{t});
  Value m = memref::LoadOp::create(b, loc, mus, ValueRange{t});
  Value mProduct = arith::MulFOp::create(b, loc, carriedValues[2], m);
  Value aProduct = arith::MulFOp::create(b, loc, carriedValues[0], a);
  Value cNext = arith::AddFOp::create(
      b, loc, arith::MulFOp::create(b, loc, a, carriedValues[1]), mProduct);
  products(mus, arith::AddIOp::create(b, loc, t, c1), ratios);
  Value row = lagged ? Value(arith::AddIOp::create(b, loc, t, c1)) : t;
  Value valid = arith::CmpIOp::create(b, loc, arith::CmpIPredicate::ult, row, cC);
  auto columns = scf::ForOp::create(b, loc, c0, cC, c1);
  {
    OpBuilder::InsertionGuard inner(b);
    b.setInsertionPointToStart(columns.getBody());
    Value j = columns.getInductionVar();
    Value kNext = arith::AddFOp::create(
        b, loc,
        arith::MulFOp::create(b, loc, a,
                              memref::LoadOp::create(b, loc, previous, ValueRange{j})),
        memref::LoadOp::create(b, loc, ratios, ValueRange{j}));
    memref::StoreOp::create(b, loc, kNext, previous, ValueRange{j});
    auto store = scf::IfOp::create(b, loc, valid, /*withElseRegion=*/false);
    b.setInsertionPointToStart(store.thenBlock());
    memref::StoreOp::create(b, loc, kNext, K, ValueRange{row, j});
  }
  auto store = scf::IfOp::create(b, loc, valid, /*withElseRegion=*/false);
  {
    OpBuilder::InsertionGuard inner(b);
    b.setInsertionPointToStart(store.thenBlock());
    memref::StoreOp::create(b, loc, aProduct, A, ValueRange{row});
    memref::StoreOp::create(b, loc, cNext, c, ValueRange{row});
  }
  scf::YieldOp::create(b, loc, ValueRange{aProduct, cNext, mProduct});
}

void ChunkedForm::emitMomentumRead(const ChunkUpdate &update, bool readsNew,
                                   Value x, Value y) {
  const StateBuffers &inner = stateBuffers[update.momentum];
  Value W0 = k.states[update.state].slice;
  Value S0 = k.states[form.updates[update.momentum].state].slice;
  Value K = buffer({chunk, chunk}), A = buffer({chunk}), c = buffer({chunk}),
        S = buffer({chunk, chunk});
  momentumCoefficients(update, K, A, c, /*lagged=*/!readsNew);
  AffineExpr d0, d1, d2;
  bindDims(ctx, d0, d1, d2);
  const IteratorType par = IteratorType::parallel, red = IteratorType::reduction;
  Value zero = constantF32(0.0);
  // Y = diag(A) X W0^T + diag(c) X S0^T + sign (K .* X Wk^T) U.
  linalg::FillOp::create(b, loc, ValueRange{zero}, ValueRange{S});
  emitContraction(b, loc, {x, inner.Wk},
                  {map3({d0, d2}), map3({d1, d2}), map3({d0, d1})}, S,
                  {par, par, red}, 1.0);
  linalg::FillOp::create(b, loc, ValueRange{zero}, ValueRange{y});
  for (auto [scale, base] : {std::pair{A, W0}, std::pair{c, S0}})
    emitContraction(b, loc, {scale, x, base},
                    {map3({d0}), map3({d0, d2}), map3({d1, d2}), map3({d0, d1})},
                    y, {par, par, red}, 1.0);
  emitContraction(b, loc, {K, S, inner.U},
                  {map3({d0, d1}), map3({d0, d1}), map3({d1, d2}), map3({d0, d2})},
                  y, {par, red, par}, form.updates[update.momentum].sign);
}

void ChunkedForm::emitStateUpdates() {
  AffineExpr d0, d1, d2;
  bindDims(ctx, d0, d1, d2);
  const IteratorType par = IteratorType::parallel, red = IteratorType::reduction;
  AffineMap identity = AffineMap::getMultiDimIdentityMap(2, ctx);
  AffineMap id1 = AffineMap::getMultiDimIdentityMap(1, ctx);
  // Momentum states first: their end reads the other state at the start.
  for (const ChunkUpdate &update : form.updates) {
    if (update.momentum < 0)
      continue;
    const ChunkUpdate &innerUpdate = form.updates[update.momentum];
    const StateBuffers &inner = stateBuffers[update.momentum];
    Value W = k.states[update.state].slice;
    Value S0 = k.states[innerUpdate.state].slice;
    Value K = buffer({chunk, chunk}), A = buffer({chunk}), c = buffer({chunk});
    momentumCoefficients(update, K, A, c, /*lagged=*/false);
    // The chunk's last real token: padded tokens would add S once more each.
    Value last = arith::SubIOp::create(b, loc, size, constantIndex(1));
    Value aEnd = memref::LoadOp::create(b, loc, A, ValueRange{last});
    Value cEnd = memref::LoadOp::create(b, loc, c, ValueRange{last});
    linalg::GenericOp::create(
        b, loc, ValueRange{S0}, ValueRange{W}, ArrayRef<AffineMap>{identity, identity},
        parallel(2), [&](OpBuilder &nb, Location nloc, ValueRange args) {
          Value scaled = arith::MulFOp::create(nb, nloc, args[1], aEnd);
          Value fromS = arith::MulFOp::create(nb, nloc, args[0], cEnd);
          linalg::YieldOp::create(
              nb, nloc, Value(arith::AddFOp::create(nb, nloc, scaled, fromS)));
        });
    emitContraction(b, loc, {rowOf(K, last), inner.U, inner.Wk},
                    {map3({d1}), map3({d1, d0}), map3({d1, d2}), map3({d0, d2})},
                    W, {par, red, par}, innerUpdate.sign);
  }
  for (const ChunkUpdate &update : form.updates) {
    if (update.momentum >= 0)
      continue;
    const StateBuffers &buffers = stateBuffers[update.state];
    Value W = k.states[update.state].slice;
    int64_t cols = cast<MemRefType>(W.getType()).getShape()[1];
    // W = W0 * decay(0..C-1) + sign U^T diag(r) Wk, r[j] = decays after j.
    Value scaledWk = buffers.Wk, columnScale;
    if (update.channel) {
      Value rho = buffer({cols});
      scaledWk = buffer({chunk, cols});
      linalg::FillOp::create(b, loc, ValueRange{constantF32(1.0)}, ValueRange{rho});
      auto loop = scf::ForOp::create(b, loc, constantIndex(0), constantIndex(chunk),
                                     constantIndex(1));
      {
        OpBuilder::InsertionGuard guard(b);
        b.setInsertionPointToStart(loop.getBody());
        Value j = arith::SubIOp::create(b, loc, constantIndex(chunk - 1),
                                        loop.getInductionVar());
        for (auto [lhs, rhs, dest] :
             {std::tuple{rowOf(buffers.Wk, j), rho, rowOf(scaledWk, j)},
              std::tuple{rho, rowOf(buffers.decays, j), rho}})
          linalg::GenericOp::create(
              b, loc, ValueRange{lhs, rhs}, ValueRange{dest},
              ArrayRef<AffineMap>{id1, id1, id1}, parallel(1),
              [&](OpBuilder &nb, Location nloc, ValueRange args) {
                linalg::YieldOp::create(
                    nb, nloc, Value(arith::MulFOp::create(nb, nloc, args[0], args[1])));
              });
      }
      linalg::GenericOp::create(
          b, loc, ValueRange{rho}, ValueRange{W},
          ArrayRef<AffineMap>{AffineMap::get(2, 0, {getAffineDimExpr(1, ctx)}, ctx),
                              identity},
          parallel(2), [&](OpBuilder &nb, Location nloc, ValueRange args) {
            linalg::YieldOp::create(
                nb, nloc, Value(arith::MulFOp::create(nb, nloc, args[1], args[0])));
          });
      emitContraction(b, loc, {buffers.U, scaledWk},
                      {map3({d1, d0}), map3({d1, d2}), map3({d0, d2})}, W,
                      {par, red, par}, update.sign);
      continue;
    }
    Value ratios = buffer({chunk});
    Value total = products(buffers.decays, constantIndex(chunk), ratios);
    linalg::GenericOp::create(
        b, loc, ValueRange{}, ValueRange{W}, ArrayRef<AffineMap>{identity},
        parallel(2), [&](OpBuilder &nb, Location nloc, ValueRange args) {
          linalg::YieldOp::create(
              nb, nloc, Value(arith::MulFOp::create(nb, nloc, args[0], total)));
        });
    emitContraction(b, loc, {ratios, buffers.U, buffers.Wk},
                    {map3({d1}), map3({d1, d0}), map3({d1, d2}), map3({d0, d2})},
                    W, {par, red, par}, update.sign);
  }
}

LogicalResult ChunkedForm::build(Value length) {
  assignStages();
  findCarried();
  for (const ChunkUpdate &update : form.updates) {
    auto shape = cast<MemRefType>(k.states[update.state].slice.getType()).getShape();
    StateBuffers buffers;
    if (update.momentum < 0) {
      buffers.U = buffer({chunk, shape[0]});
      buffers.Wk = buffer({chunk, shape[1]});
    }
    if (!update.decay) {
      if (!ones)
        ones = buffer({chunk});
      buffers.decays = ones;
    } else if (Value known = decayBuffers.lookup(update.decay)) {
      buffers.decays = known;
    } else {
      buffers.decays = update.channel ? buffer({chunk, shape[1]}) : buffer({chunk});
      decayBuffers.insert({update.decay, buffers.decays});
    }
    stateBuffers.push_back(buffers);
  }
  for (MatVecOp read : reads)
    readResults.push_back(
        buffer({chunk, cast<RankedTensorType>(read.getType()).getShape()[0]}));

  // Constants once, outside every loop.
  for (Operation &op : body.without_terminator())
    if (stageOf.lookup(&op) == -2 && stageOf.contains(&op) &&
        failed(k.lowerOp(b, op)))
      return failure();

  Value cC = constantIndex(chunk);
  auto chunkLoop = scf::ForOp::create(b, loc, constantIndex(0), length, cC);
  OpBuilder::InsertionGuard guard(b);
  b.setInsertionPointToStart(chunkLoop.getBody());
  start = chunkLoop.getInductionVar();
  size = arith::MinUIOp::create(b, loc, arith::SubIOp::create(b, loc, length, start), cC);
  // A short last chunk: zero rows add nothing, unit decays change nothing.
  Value zero = constantF32(0.0), one = constantF32(1.0);
  for (const StateBuffers &buffers : stateBuffers)
    for (Value rows : {buffers.U, buffers.Wk})
      if (rows)
        linalg::FillOp::create(b, loc, ValueRange{zero}, ValueRange{rows});
  for (auto &[decay, buf] : decayBuffers)
    linalg::FillOp::create(b, loc, ValueRange{one}, ValueRange{buf});
  if (ones)
    linalg::FillOp::create(b, loc, ValueRange{one}, ValueRange{ones});

  // Phase 1: everything that reads no state, token by token.
  if (failed(tokenLoop(size, [&](Value t) -> LogicalResult {
        for (Operation &op : body.without_terminator())
          if (stageOf.lookup(&op) == -1 && stageOf.contains(&op) &&
              failed(k.lowerOp(b, op)))
            return failure();
        for (auto [update, buffers] : llvm::zip(form.updates, stateBuffers)) {
          if (update.momentum >= 0)
            continue;
          Value uRow = rowOf(buffers.U, t);
          if (failed(k.storeRow(b, loc, update.u, uRow)) ||
              failed(k.storeRow(b, loc, update.w, rowOf(buffers.Wk, t))))
            return failure();
          if (update.scale) {
            Value factor = k.lowered.lookup(update.scale).value;
            AffineMap id1 = AffineMap::getMultiDimIdentityMap(1, ctx);
            linalg::GenericOp::create(
                b, loc, ValueRange{}, ValueRange{uRow}, ArrayRef<AffineMap>{id1},
                parallel(1), [&](OpBuilder &nb, Location nloc, ValueRange args) {
                  linalg::YieldOp::create(
                      nb, nloc,
                      Value(arith::MulFOp::create(nb, nloc, args[0], factor)));
                });
          }
        }
        for (auto &[decay, buf] : decayBuffers)
          if (failed(storeCarried(decay, buf, t)))
            return failure();
        for (auto &[value, buf] : carried) {
          Operation *def = value.getDefiningOp();
          if ((!def || stageOf.lookup(def) == -1) && failed(storeCarried(value, buf, t)))
            return failure();
        }
        return success();
      })))
    return failure();

  // Stages between the reads, each read as chunk-level contractions.
  for (int stage = 0; stage < numStages; ++stage) {
    if (stage > 0) {
      MatVecOp read = reads[stage - 1];
      Value vector = read.getVector();
      Value x = carried.lookup(vector);
      if (!x)
        for (auto [index, other] : llvm::enumerate(reads))
          if (other.getResult() == vector)
            x = readResults[index];
      emitRead(stage - 1, x, readResults[stage - 1]);
    }
    SmallVector<Operation *> ops;
    for (Operation &op : body.without_terminator())
      if (stageOf.contains(&op) && stageOf.lookup(&op) == stage)
        ops.push_back(&op);
    if (ops.empty())
      continue;
    if (failed(tokenLoop(size, [&](Value t) -> LogicalResult {
          for (auto &[value, buf] : carried) {
            Operation *def = value.getDefiningOp();
            if (def && stageOf.contains(def) && stageOf.lookup(def) < stage &&
                stageOf.lookup(def) != -2)
              bindCarried(value, buf, t);
          }
          for (auto [index, read] : llvm::enumerate(reads))
            if (static_cast<int>(index) < stage)
              bindCarried(read.getResult(), readResults[index], t);
          for (Operation *op : ops)
            if (failed(k.lowerOp(b, *op)))
              return failure();
          for (auto &[value, buf] : carried) {
            Operation *def = value.getDefiningOp();
            if (def && stageOf.contains(def) && stageOf.lookup(def) == stage &&
                failed(storeCarried(value, buf, t)))
              return failure();
          }
          return success();
        })))
      return failure();
  }

  // Outputs of the chunk's tokens, then every state to the chunk's end.
  Value out = ret.getOperands().back();
  Value outputs = carried.lookup(out);
  for (auto [index, read] : llvm::enumerate(reads))
    if (read.getResult() == out)
      outputs = readResults[index];
  int64_t dv = k.module.getDv();
  auto copy = scf::ForOp::create(b, loc, constantIndex(0), size, constantIndex(1));
  {
    OpBuilder::InsertionGuard inner(b);
    b.setInsertionPointToStart(copy.getBody());
    Value t = copy.getInductionVar();
    Value ti = arith::AddIOp::create(b, loc, start, t);
    Value o = entry->getArgument(entry->getNumArguments() - 1);
    memref::CopyOp::create(b, loc, rowOf(outputs, t),
                           slice(b, loc, o, {bi, ti, hi}, {dv}));
  }
  emitStateUpdates();
  return success();
}

LogicalResult KernelLowering::buildChunked(OpBuilder &b, Location loc,
                                           Block *entry,
                                           const ParallelForm &form, Value bi,
                                           Value hi, Value length) {
  return ChunkedForm(*this, form, b, loc, entry, bi, hi).build(length);
}

} // namespace miras::lowering
