//===- ChunkedForm.cpp - The chunked algorithm (SPEC section 7) -----------===//
//
// With chunk C > 1 every gradient reads the state at the start of its chunk
// (the anchor), so within a chunk each state follows
//   W_t = g_t W_0 + sign * sum_{j <= t} R[t, j] u_j w_j^T
// with rank-1 terms known in advance: g_t = s_0 ... s_t and
// R[t, j] = s_{j+1} ... s_t are products of the scalar decays. A read W_t x_t
// is then the dual form of linear attention,
//   g_t W_0 x_t + sign * sum_j R[t, j] (w_j . x_t) u_j,
// which is matrix products over the chunk's tokens. Per chunk the kernel runs
// a sequence of token loops ("stages") separated by "barriers", products
// computed for all the chunk's tokens at once:
//   * what reads only the anchors (and constants) runs once per chunk;
//   * a product with such a fixed matrix (the gradient's forward and backward
//     pass through the anchor) is a barrier: X M^T or X M over the chunk;
//   * a read of a state is a barrier: the dual form above;
//   * the per-token ops in between (errors, u, w, decays, an MLP's
//     activation, a norm) run in the token loops, on rows of [C, ...]
//     buffers that carry values from one loop to the next;
//   * at the end outputs are copied out and every state moves to the chunk's
//     end, W = g_C W_0 + sign * U^T diag(r) Wk.
// Column decays (W Diag(a_t)) replace R by running products per (t, j);
// momentum (W' = a W + S', S' = m S + u w^T) by coefficients of two scalar
// recurrences. Steps outside that class (mirror maps, row gates) get the scan
// form: the same stages for what reads no state, then one token loop running
// the state-reading part of the step on the current state.
//
//===----------------------------------------------------------------------===//
#include "KernelLowering.h"
#include "miras/Dialect/Miras/IR/StepSignature.h"

#include "mlir/IR/Matchers.h"

#include <limits>
#include <tuple>

namespace miras::lowering {

/// `v` = mul(broadcast(s) [], rest) with a scalar s, in either operand order:
/// returns the mul, s and rest.
struct ScalarTimes {
  arith::MulFOp mul;
  Value scalar, rest;
};
static std::optional<ScalarTimes> matchScalarTimes(Value v) {
  auto mul = v.getDefiningOp<arith::MulFOp>();
  if (!mul)
    return std::nullopt;
  for (auto [lhs, rhs] : {std::pair{mul.getLhs(), mul.getRhs()},
                          std::pair{mul.getRhs(), mul.getLhs()}})
    if (auto bcast = lhs.getDefiningOp<BroadcastOp>();
        bcast && bcast.getDims().empty())
      return ScalarTimes{mul, bcast.getInput(), rhs};
  return std::nullopt;
}

static std::string stateName(func::FuncOp step, unsigned index) {
  if (auto name = step.getResultAttrOfType<StringAttr>(index, "miras.name"))
    return name.str();
  return "state #" + std::to_string(index);
}

/// Every op that reads a carried state, directly or not.
static llvm::SmallPtrSet<Operation *, 16> stateReaders(Block &body,
                                                      unsigned numStates) {
  llvm::SmallPtrSet<Operation *, 16> dependent;
  llvm::SmallDenseSet<Value> tainted;
  for (unsigned i = 0; i < numStates; ++i)
    tainted.insert(body.getArgument(i));
  for (Operation &op : body.without_terminator())
    if (llvm::any_of(op.getOperands(),
                     [&](Value v) { return tainted.contains(v); })) {
      dependent.insert(&op);
      tainted.insert(op.getResults().begin(), op.getResults().end());
    }
  return dependent;
}

FailureOr<ParallelForm> matchScanForm(func::FuncOp step, unsigned numStates,
                                      unsigned numAnchors, std::string &why) {
  if (numAnchors == 0) {
    why = "it needs chunk > 1";
    return failure();
  }
  Block &body = step.getBody().front();
  ParallelForm form;
  form.scan = true;
  form.dependent = stateReaders(body, numStates);
  for (Operation *op : form.dependent)
    for (Value operand : op->getOperands())
      if (auto arg = dyn_cast<BlockArgument>(operand);
          arg && arg.getArgNumber() >= numStates &&
          arg.getArgNumber() < numStates + numAnchors) {
        why = "an anchor is read together with the current state";
        return failure();
      }
  return form;
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
  form.dependent = stateReaders(body, numStates);
  auto independent = [&](Value v) {
    Operation *def = v.getDefiningOp();
    if (!def)
      return cast<BlockArgument>(v).getArgNumber() >= numStates;
    return !form.dependent.contains(def);
  };

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
    if (auto scaled = matchScalarTimes(term); scaled && !outer &&
                                              independent(scaled->scalar) &&
                                              scaled->rest.getDefiningOp<OuterOp>()) {
      chunkUpdate.scale = scaled->scalar;
      outer = scaled->rest.getDefiningOp<OuterOp>();
      form.updateOps.insert(scaled->mul);
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
        !states.contains(read.getVector())) {
      // The chunk's rank-1 terms must all be known when the read runs.
      auto known = [&](Value v) {
        Operation *def = v ? v.getDefiningOp() : nullptr;
        return !def || def->isBeforeInBlock(op);
      };
      for (const ChunkUpdate &update : form.updates) {
        if (read.getMatrix() != body.getArgument(update.state) &&
            read.getMatrix() != ret.getOperand(update.state))
          continue;
        const ChunkUpdate &terms =
            update.momentum >= 0 ? form.updates[update.momentum] : update;
        for (Value v : {update.decay, terms.u, terms.w, terms.decay, terms.scale})
          if (!known(v)) {
            why = "the read of " + stateName(step, update.state) +
                  " comes before its update's terms are computed";
            return failure();
          }
      }
      continue;
    }
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
        ret(cast<func::ReturnOp>(body.getTerminator())),
        signature(StepSignature::of(kernel.module)),
        numStates(signature.numStates()), numAnchors(signature.numAnchors()) {}

  LogicalResult build(Value from, Value to);

private:
  using IteratorType = utils::IteratorType;

  /// Where each op of the step runs (stageOf): kConstant once per kernel,
  /// kPerChunk once per chunk (it reads only anchors and constants),
  /// kAbsorbed never (folded into a barrier), or s >= 0: the token loop
  /// between barriers s - 1 and s. Barriers are the products computed for
  /// the whole chunk at once.
  void assignStages();
  /// Values that cross from one loop to another, each into a [C, ...] buffer.
  void findCarried();
  /// The loop a value is available in: token inputs, constants and per-chunk
  /// values in every one (0 is where they are stored), others in their own.
  int valueStage(Value v);
  /// The [C, ...] buffer a barrier's per-token operand is read from.
  Value rowsOf(Value v);
  /// The update of the state whose old or new value `matrix` is, or null.
  const ChunkUpdate *updateOf(Value matrix) {
    for (const ChunkUpdate &u : form.updates)
      if (matrix == body.getArgument(u.state) || matrix == ret.getOperand(u.state))
        return &u;
    return nullptr;
  }
  static constexpr int kConstant = -2, kPerChunk = -3, kAbsorbed = -4,
                       kScan = -5;
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
  /// The dual form of a state read: Y = rows W_t x_t for the chunk's tokens.
  void emitRead(MatVecOp read, Value x, Value y);
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
  /// Y(t, i) += [scale(t)] * sum_c X(t, c) M(i, c) over (t, i, c): one dot
  /// product of contiguous rows per output, X's row held in registers across
  /// M's rows. (Measured: faster here than axpys over a transposed copy of
  /// M, 102 vs 130 ms for gated_deltanet D=128, C=64, B*H=16, T=2048.)
  void productWithRows(Value scale, Value x, Value m, Value y);
  /// body(t, limit) for every row t of a chunk; limit = 1 + the token whose
  /// state t reads (t after the write, t - 1 before it).
  void forEachReadRow(bool readsNew, function_ref<void(Value, Value)> body);
  /// body(j) for j = C - 1 down to 0.
  void forEachRowDownward(function_ref<void(Value)> body);
  /// dest[c] = lhs[c] * rhs[c]; dest may be lhs.
  void multiplyRows(Value lhs, Value rhs, Value dest);
  /// S = X Wk^T, a fresh [C, C] buffer: every query against every key.
  Value keyProducts(Value x, Value wk);
  /// Y += sign * (coefficients .* S) U: the rank-1 terms of the dual form.
  void addRankOneTerms(Value coefficients, Value S, Value U, Value y,
                       double sign);

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
  // The step's argument groups (states, anchors, q, k, v, gates).
  StepSignature signature;
  unsigned numStates, numAnchors;

  /// A product over the whole chunk between two token loops: a read of a
  /// state (the dual form), or a product with a matrix fixed through the
  /// chunk (the anchor or a function of it, as a gradient reads it), scaled
  /// per token when the step decays the anchor first.
  struct Barrier {
    Operation *op;       // miras.matvec or miras.vecmat
    Value vector;        // the per-token operand
    bool stateRead = false;
    Value fixed, scale;  // fixed-matrix products: the matrix, the scalar
    Value result;        // [C, n]
  };
  SmallVector<Barrier> barriers;
  DenseMap<Operation *, int> stageOf;
  DenseMap<Value, unsigned> barrierOf; // barrier results -> index
  int numStages = 0;
  llvm::MapVector<Value, Value> carried; // value -> [C, ...] buffer
  struct StateBuffers {
    Value U, Wk, decays;
  };
  SmallVector<StateBuffers> stateBuffers; // per update
  llvm::MapVector<Value, Value> decayBuffers; // decay value -> [C] / [C, cols]
  Value ones;                                 // decays of undecayed states
  Value start, size;
};

void ChunkedForm::assignStages() {
  // Values fixed through a chunk: anchors, constants, what reads only those.
  llvm::SmallDenseSet<Value> fixed;
  for (unsigned i = 0; i < numAnchors; ++i)
    fixed.insert(body.getArgument(signature.anchorArg(i)));
  for (Operation &op : body.without_terminator()) {
    if (form.updateOps.contains(&op))
      continue;
    if (op.getNumOperands() == 0) {
      stageOf[&op] = kConstant;
      fixed.insert(op.getResults().begin(), op.getResults().end());
      continue;
    }
    if (!form.dependent.contains(&op) &&
        llvm::all_of(op.getOperands(), [&](Value v) { return fixed.contains(v); })) {
      stageOf[&op] = kPerChunk;
      fixed.insert(op.getResults().begin(), op.getResults().end());
      continue;
    }
    if (form.scan && form.dependent.contains(&op)) {
      stageOf[&op] = kScan; // numbered once the barriers are known
      continue;
    }
    if (auto read = dyn_cast<MatVecOp>(op); read && updateOf(read.getMatrix())) {
      barriers.push_back({&op, cast<MatVecOp>(op).getVector(), true, {}, {}, {}});
      continue;
    }
    // A product with a fixed matrix, or with a per-token scalar times one.
    if (isa<MatVecOp, VecMatOp>(op)) {
      auto matvec = dyn_cast<MatVecOp>(op);
      auto vecmat = dyn_cast<VecMatOp>(op);
      Value matrix = matvec ? matvec.getMatrix() : vecmat.getMatrix();
      Value vector = matvec ? matvec.getVector() : vecmat.getVector();
      Value scale;
      Operation *scaling = nullptr;
      if (auto scaled = matchScalarTimes(matrix);
          !fixed.contains(matrix) && scaled && scaled->mul->hasOneUse() &&
          fixed.contains(scaled->rest) && !form.dependent.contains(scaled->mul)) {
        scale = scaled->scalar;
        matrix = scaled->rest;
        scaling = scaled->mul;
      }
      if (fixed.contains(matrix)) {
        if (scaling)
          stageOf[scaling] = kAbsorbed;
        barriers.push_back({&op, vector, false, matrix, scale, {}});
        continue;
      }
    }
    stageOf[&op] = barriers.size();
  }
  numStages = barriers.size() + 1;
  if (form.scan) {
    // The state-reading ops run last, token by token, after every barrier.
    for (auto &entry : stageOf)
      if (entry.second == kScan)
        entry.second = numStages;
    ++numStages;
  }
  // A per-token matrix (u w^T, a scaled anchor) is computed where it is used,
  // fused lazily into its consumer, never carried through [C, m, n] rows.
  for (Operation &op : llvm::reverse(body.without_terminator())) {
    auto it = stageOf.find(&op);
    auto shaped = op.getNumResults() == 1
                      ? dyn_cast<ShapedType>(op.getResult(0).getType())
                      : ShapedType();
    if (it == stageOf.end() || it->second < 0 || !shaped || shaped.getRank() < 2)
      continue;
    int first = std::numeric_limits<int>::max();
    for (Operation *user : op.getUsers())
      if (auto use = stageOf.find(user); use != stageOf.end() && use->second >= 0)
        first = std::min(first, use->second);
    if (first != std::numeric_limits<int>::max() && first > it->second)
      it->second = first;
  }
  for (auto [index, barrier] : llvm::enumerate(barriers)) {
    int64_t width =
        cast<RankedTensorType>(barrier.op->getResult(0).getType()).getShape()[0];
    barrier.result = buffer({chunk, width});
    barrierOf[barrier.op->getResult(0)] = index;
  }
}

int ChunkedForm::valueStage(Value v) {
  Operation *def = v.getDefiningOp();
  if (!def)
    return 0;
  if (auto it = barrierOf.find(v); it != barrierOf.end())
    return it->second + 1;
  int stage = stageOf.lookup(def);
  return stage < 0 ? 0 : stage;
}

Value ChunkedForm::rowsOf(Value v) {
  if (auto it = barrierOf.find(v); it != barrierOf.end())
    return barriers[it->second].result;
  return carried.lookup(v);
}

void ChunkedForm::findCarried() {
  auto needs = [&](Value v) {
    if (carried.contains(v) || barrierOf.contains(v))
      return;
    SmallVector<int64_t> shape{chunk};
    if (auto shaped = dyn_cast<ShapedType>(v.getType()))
      shape.append(shaped.getShape().begin(), shaped.getShape().end());
    carried.insert({v, buffer(shape)});
  };
  // Whether the lowered value of v is usable in any loop as it is.
  auto everywhere = [&](Value v) {
    Operation *def = v.getDefiningOp();
    if (!def)
      return true; // a token input: bound again in every loop
    auto it = stageOf.find(def);
    return it != stageOf.end() && (it->second == kConstant || it->second == kPerChunk);
  };
  for (const Barrier &barrier : barriers) {
    needs(barrier.vector);
    if (barrier.scale)
      needs(barrier.scale); // a [C] operand of the contraction
  }
  for (Operation &op : body.without_terminator()) {
    auto it = stageOf.find(&op);
    if (it == stageOf.end() || it->second < 0)
      continue;
    for (Value operand : op.getOperands())
      if (!everywhere(operand) && !barrierOf.contains(operand) &&
          valueStage(operand) != it->second)
        needs(operand);
  }
  if (!form.scan)
    needs(ret.getOperands().back()); // the scan writes o itself
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
  k.bindToken(b, loc, entry, bi, ti, hi, numStates + numAnchors);
  k.prefetchToken(b, loc, entry, bi, ti, hi, /*ahead=*/1, k.tokenInputs(entry));
  for (unsigned i = 0; i < numAnchors; ++i)
    k.lowered[body.getArgument(signature.anchorArg(i))] = {Lowered::Kind::Buffer,
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

void ChunkedForm::emitRead(MatVecOp read, Value x, Value y) {
  const ChunkUpdate *update = updateOf(read.getMatrix());
  bool readsNew = read.getMatrix() == ret.getOperand(update->state);
  if (update->channel)
    return emitChannelRead(*update, readsNew, x, y);
  if (update->momentum >= 0)
    return emitMomentumRead(*update, readsNew, x, y);
  const StateBuffers &buffers = stateBuffers[update->state];
  Value W0 = k.states[update->state].slice;
  // Token t reads the state after token t (read after write) or t - 1:
  // R[t, j] = s_{j+1} ... s_last(t), g[t] = s_0 ... s_last(t).
  Value R = buffer({chunk, chunk}), g = buffer({chunk});
  forEachReadRow(readsNew, [&](Value t, Value limit) {
    memref::StoreOp::create(b, loc, products(buffers.decays, limit, rowOf(R, t)), g,
                            ValueRange{t});
  });
  // Y = diag(g) X W0^T + sign (R .* X Wk^T) U.
  Value S = keyProducts(x, buffers.Wk);
  linalg::FillOp::create(b, loc, ValueRange{constantF32(0.0)}, ValueRange{y});
  productWithRows(g, x, W0, y);
  addRankOneTerms(R, S, buffers.U, y, update->sign);
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
  forEachReadRow(readsNew, [&](Value t, Value limit) {
    Value xRow = rowOf(x, t);
    linalg::FillOp::create(b, loc, ValueRange{one}, ValueRange{rho});
    forEachRowDownward([&](Value j) {
      Value inside = arith::CmpIOp::create(b, loc, arith::CmpIPredicate::ult, j, limit);
      auto ifOp = scf::IfOp::create(b, loc, inside, /*withElseRegion=*/true);
      b.setInsertionPointToStart(ifOp.thenBlock());
      linalg::FillOp::create(b, loc, ValueRange{zero}, ValueRange{dot});
      emitContraction(b, loc, {rowOf(buffers.Wk, j), xRow, rho},
                      {id1, id1, id1, AffineMap::get(1, 0, {}, ctx)}, dot,
                      {IteratorType::reduction}, 1.0);
      memref::StoreOp::create(b, loc, memref::LoadOp::create(b, loc, dot), S,
                              ValueRange{t, j});
      multiplyRows(rho, rowOf(buffers.decays, j), rho);
      b.setInsertionPointToStart(ifOp.elseBlock());
      memref::StoreOp::create(b, loc, zero, S, ValueRange{t, j});
    });
    multiplyRows(rho, xRow, rowOf(Xg, t));
  });
  AffineExpr d0, d1, d2;
  bindDims(ctx, d0, d1, d2);
  const IteratorType par = IteratorType::parallel, red = IteratorType::reduction;
  // Y = Xg W0^T + sign S U.
  linalg::FillOp::create(b, loc, ValueRange{zero}, ValueRange{y});
  productWithRows(Value(), Xg, W0, y);
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
    // One builder call per statement: the IR must not depend on the host
    // compiler's argument order.
    Value before = memref::LoadOp::create(b, loc, previous, ValueRange{j});
    Value scaled = arith::MulFOp::create(b, loc, a, before);
    Value ratio = memref::LoadOp::create(b, loc, ratios, ValueRange{j});
    Value kNext = arith::AddFOp::create(b, loc, scaled, ratio);
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
  Value K = buffer({chunk, chunk}), A = buffer({chunk}), c = buffer({chunk});
  momentumCoefficients(update, K, A, c, /*lagged=*/!readsNew);
  // Y = diag(A) X W0^T + diag(c) X S0^T + sign (K .* X Wk^T) U.
  Value S = keyProducts(x, inner.Wk);
  linalg::FillOp::create(b, loc, ValueRange{constantF32(0.0)}, ValueRange{y});
  productWithRows(A, x, W0, y);
  productWithRows(c, x, S0, y);
  addRankOneTerms(K, S, inner.U, y, form.updates[update.momentum].sign);
}

void ChunkedForm::forEachReadRow(bool readsNew,
                                 function_ref<void(Value, Value)> body) {
  auto rows = scf::ForOp::create(b, loc, constantIndex(0), constantIndex(chunk),
                                 constantIndex(1));
  OpBuilder::InsertionGuard guard(b);
  b.setInsertionPointToStart(rows.getBody());
  Value t = rows.getInductionVar();
  body(t, readsNew ? Value(arith::AddIOp::create(b, loc, t, constantIndex(1))) : t);
}

void ChunkedForm::forEachRowDownward(function_ref<void(Value)> body) {
  auto loop = scf::ForOp::create(b, loc, constantIndex(0), constantIndex(chunk),
                                 constantIndex(1));
  OpBuilder::InsertionGuard guard(b);
  b.setInsertionPointToStart(loop.getBody());
  body(arith::SubIOp::create(b, loc, constantIndex(chunk - 1),
                             loop.getInductionVar()));
}

void ChunkedForm::multiplyRows(Value lhs, Value rhs, Value dest) {
  AffineMap id1 = AffineMap::getMultiDimIdentityMap(1, ctx);
  linalg::GenericOp::create(
      b, loc, ValueRange{lhs, rhs}, ValueRange{dest},
      ArrayRef<AffineMap>{id1, id1, id1}, parallel(1),
      [&](OpBuilder &nb, Location nloc, ValueRange args) {
        linalg::YieldOp::create(
            nb, nloc, Value(arith::MulFOp::create(nb, nloc, args[0], args[1])));
      });
}

Value ChunkedForm::keyProducts(Value x, Value wk) {
  Value S = buffer({chunk, chunk});
  linalg::FillOp::create(b, loc, ValueRange{constantF32(0.0)}, ValueRange{S});
  productWithRows(Value(), x, wk, S);
  return S;
}

void ChunkedForm::addRankOneTerms(Value coefficients, Value S, Value U, Value y,
                                  double sign) {
  AffineExpr d0, d1, d2;
  bindDims(ctx, d0, d1, d2);
  emitContraction(b, loc, {coefficients, S, U},
                  {map3({d0, d1}), map3({d0, d1}), map3({d1, d2}), map3({d0, d2})},
                  y,
                  {IteratorType::parallel, IteratorType::reduction,
                   IteratorType::parallel},
                  sign);
}

void ChunkedForm::productWithRows(Value scale, Value x, Value m, Value y) {
  AffineExpr d0, d1, d2;
  bindDims(ctx, d0, d1, d2);
  SmallVector<Value> ins{x, m};
  SmallVector<AffineMap> maps{map3({d0, d2}), map3({d1, d2}), map3({d0, d1})};
  if (scale) {
    ins.insert(ins.begin(), scale);
    maps.insert(maps.begin(), map3({d0}));
  }
  emitContraction(b, loc, ins, maps, y,
                  {IteratorType::parallel, IteratorType::parallel,
                   IteratorType::reduction},
                  1.0);
}

void ChunkedForm::emitStateUpdates() {
  AffineExpr d0, d1, d2;
  bindDims(ctx, d0, d1, d2);
  const IteratorType par = IteratorType::parallel, red = IteratorType::reduction;
  AffineMap identity = AffineMap::getMultiDimIdentityMap(2, ctx);
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
    Value scaledWk = buffers.Wk;
    if (update.channel) {
      Value rho = buffer({cols});
      scaledWk = buffer({chunk, cols});
      linalg::FillOp::create(b, loc, ValueRange{constantF32(1.0)}, ValueRange{rho});
      forEachRowDownward([&](Value j) {
        Value keys = rowOf(buffers.Wk, j); // one builder call per statement
        multiplyRows(keys, rho, rowOf(scaledWk, j));
        multiplyRows(rho, rowOf(buffers.decays, j), rho);
      });
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

LogicalResult ChunkedForm::build(Value from, Value to) {
  assignStages();
  findCarried();
  // What each stage's token loop stores, and the rows it scales after.
  SmallVector<SmallVector<std::pair<Value, Value>>> stores(numStages);
  SmallVector<SmallVector<std::pair<Value, Value>>> rowScales(numStages);
  for (auto &[value, buf] : carried)
    stores[valueStage(value)].push_back({value, buf});
  for (const ChunkUpdate &update : form.updates) {
    auto shape = cast<MemRefType>(k.states[update.state].slice.getType()).getShape();
    StateBuffers buffers;
    if (update.momentum < 0) {
      buffers.U = buffer({chunk, shape[0]});
      buffers.Wk = buffer({chunk, shape[1]});
      stores[valueStage(update.u)].push_back({update.u, buffers.U});
      stores[valueStage(update.w)].push_back({update.w, buffers.Wk});
      if (update.scale) {
        // u's rows times a per-token scalar (momentum's learning rate), once
        // both are stored.
        Value scales = buffer({chunk});
        stores[valueStage(update.scale)].push_back({update.scale, scales});
        rowScales[std::max(valueStage(update.u), valueStage(update.scale))]
            .push_back({buffers.U, scales});
      }
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
      stores[valueStage(update.decay)].push_back({update.decay, buffers.decays});
    }
    stateBuffers.push_back(buffers);
  }

  // Constants once, outside every loop.
  for (Operation &op : body.without_terminator())
    if (stageOf.contains(&op) && stageOf.lookup(&op) == kConstant &&
        failed(k.lowerOp(b, op)))
      return failure();

  Value cC = constantIndex(chunk);
  auto chunkLoop = scf::ForOp::create(b, loc, from, to, cC);
  OpBuilder::InsertionGuard guard(b);
  b.setInsertionPointToStart(chunkLoop.getBody());
  start = chunkLoop.getInductionVar();
  size = arith::MinUIOp::create(b, loc, arith::SubIOp::create(b, loc, to, start), cC);
  // The kernel gives whole chunks only (a call's head and tail run token by
  // token); were one short, zero rows would add nothing, unit decays change
  // nothing.
  Value zero = constantF32(0.0), one = constantF32(1.0);
  for (const StateBuffers &buffers : stateBuffers)
    for (Value rows : {buffers.U, buffers.Wk})
      if (rows)
        linalg::FillOp::create(b, loc, ValueRange{zero}, ValueRange{rows});
  for (auto &[decay, buf] : decayBuffers)
    linalg::FillOp::create(b, loc, ValueRange{one}, ValueRange{buf});
  if (ones)
    linalg::FillOp::create(b, loc, ValueRange{one}, ValueRange{ones});

  // Once per chunk: what reads only the anchors (the states themselves until
  // the chunk ends), and the fixed matrices of the barriers as buffers.
  for (unsigned i = 0; i < numAnchors; ++i)
    k.lowered[body.getArgument(signature.anchorArg(i))] = {Lowered::Kind::Buffer,
                                                  k.states[i].slice};
  for (Operation &op : body.without_terminator())
    if (stageOf.contains(&op) && stageOf.lookup(&op) == kPerChunk &&
        failed(k.lowerOp(b, op)))
      return failure();
  DenseMap<Value, Value> fixedBuffers;
  for (const Barrier &barrier : barriers) {
    if (barrier.stateRead || fixedBuffers.contains(barrier.fixed))
      continue;
    Lowered l = k.lowered.lookup(barrier.fixed);
    Value buf = l.value;
    if (l.kind != Lowered::Kind::Buffer) {
      buf = k.heapScratch(cast<RankedTensorType>(barrier.fixed.getType()));
      if (failed(k.materialize(b, barrier.fixed, buf)))
        return failure();
    }
    fixedBuffers[barrier.fixed] = buf;
  }

  AffineExpr d0, d1, d2;
  bindDims(ctx, d0, d1, d2);
  const IteratorType par = IteratorType::parallel, red = IteratorType::reduction;
  for (int stage = 0; stage < numStages; ++stage) {
    if (stage > 0 && stage <= static_cast<int>(barriers.size())) {
      const Barrier &barrier = barriers[stage - 1];
      Value x = rowsOf(barrier.vector);
      if (barrier.stateRead) {
        emitRead(cast<MatVecOp>(barrier.op), x, barrier.result);
      } else {
        // Y = X M^T (matvec) or X M (vecmat, over (t, i, c) reducing i so
        // that the innermost loop runs along M's rows); rows scaled per token.
        Value fixedMatrix = fixedBuffers.lookup(barrier.fixed);
        Value scale = barrier.scale ? carried.lookup(barrier.scale) : Value();
        linalg::FillOp::create(b, loc, ValueRange{zero}, ValueRange{barrier.result});
        if (isa<MatVecOp>(barrier.op)) {
          productWithRows(scale, x, fixedMatrix, barrier.result);
        } else {
          SmallVector<Value> ins{x, fixedMatrix};
          SmallVector<AffineMap> maps{map3({d0, d1}), map3({d1, d2}),
                                      map3({d0, d2})};
          if (scale) {
            ins.insert(ins.begin(), scale);
            maps.insert(maps.begin(), map3({d0}));
          }
          emitContraction(b, loc, ins, maps, barrier.result, {par, red, par}, 1.0);
        }
      }
    }
    SmallVector<Operation *> ops;
    for (Operation &op : body.without_terminator())
      if (stageOf.contains(&op) && stageOf.lookup(&op) == stage)
        ops.push_back(&op);
    if (ops.empty() && stores[stage].empty())
      continue;
    if (failed(tokenLoop(size, [&](Value t) -> LogicalResult {
          for (auto &[value, buf] : carried)
            if (value.getDefiningOp() && valueStage(value) < stage)
              bindCarried(value, buf, t);
          for (const Barrier &barrier : barriers)
            if (static_cast<int>(barrierOf.lookup(barrier.op->getResult(0))) < stage)
              bindCarried(barrier.op->getResult(0), barrier.result, t);
          if (form.scan && stage == numStages - 1) {
            // The sequential step on the current state, o written out.
            Value ti = arith::AddIOp::create(b, loc, start, t);
            Value o = entry->getArgument(entry->getNumArguments() - 1);
            k.outputSlice = slice(b, loc, o, {bi, ti, hi},
                                  {static_cast<int64_t>(k.module.getDv())});
            k.outputValue = ret.getOperands().back();
            for (Operation *op : ops)
              if (failed(k.lowerOp(b, *op)))
                return failure();
            return k.lowerReturn(b, ret);
          }
          for (Operation *op : ops)
            if (failed(k.lowerOp(b, *op)))
              return failure();
          for (auto &[value, buf] : stores[stage])
            if (failed(storeCarried(value, buf, t)))
              return failure();
          return success();
        })))
      return failure();
    for (auto &[rows, scales] : rowScales[stage]) {
      linalg::GenericOp::create(
          b, loc, ValueRange{scales}, ValueRange{rows},
          ArrayRef<AffineMap>{AffineMap::get(2, 0, {getAffineDimExpr(0, ctx)}, ctx),
                              AffineMap::getMultiDimIdentityMap(2, ctx)},
          parallel(2), [&](OpBuilder &nb, Location nloc, ValueRange args) {
            linalg::YieldOp::create(
                nb, nloc, Value(arith::MulFOp::create(nb, nloc, args[1], args[0])));
          });
    }
  }

  if (form.scan)
    return success(); // the scan wrote the outputs and the states
  // Outputs of the chunk's tokens, then every state to the chunk's end.
  Value outputs = rowsOf(ret.getOperands().back());
  int64_t dv = k.module.getDv();
  auto copy = scf::ForOp::create(b, loc, constantIndex(0), size, constantIndex(1));
  {
    OpBuilder::InsertionGuard inner(b);
    b.setInsertionPointToStart(copy.getBody());
    Value t = copy.getInductionVar();
    Value ti = arith::AddIOp::create(b, loc, start, t);
    Value o = entry->getArgument(entry->getNumArguments() - 1);
    Value row = rowOf(outputs, t); // one builder call per statement (argument order)
    memref::CopyOp::create(b, loc, row, slice(b, loc, o, {bi, ti, hi}, {dv}));
  }
  emitStateUpdates();
  return success();
}

LogicalResult KernelLowering::buildChunked(OpBuilder &b, Location loc,
                                           Block *entry,
                                           const ParallelForm &form, Value bi,
                                           Value hi, Value from, Value to) {
  return ChunkedForm(*this, form, b, loc, entry, bi, hi).build(from, to);
}

} // namespace miras::lowering
