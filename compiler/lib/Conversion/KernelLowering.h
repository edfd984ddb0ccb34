//===- KernelLowering.h - Shared state of the kernel lowering ---*- C++ -*-===//
//
// Internal to miras-lower-to-linalg: the value kinds of the lowering, the
// KernelLowering class (sequential algorithm in MirasToLinalg.cpp, chunked
// parallel form in ChunkedForm.cpp) and the parallel form's matcher.
//
//===----------------------------------------------------------------------===//
#ifndef MIRAS_COMPILER_CONVERSION_KERNELLOWERING_H
#define MIRAS_COMPILER_CONVERSION_KERNELLOWERING_H

#include "miras/Dialect/Miras/IR/MirasOps.h"

#include "mlir/Dialect/Arith/IR/Arith.h"
#include "mlir/Dialect/Func/IR/FuncOps.h"
#include "mlir/Dialect/Linalg/IR/Linalg.h"
#include "mlir/Dialect/Math/IR/Math.h"
#include "mlir/Dialect/MemRef/IR/MemRef.h"
#include "mlir/Dialect/SCF/IR/SCF.h"
#include "mlir/Dialect/Utils/StructuredOpsUtils.h"
#include "mlir/IR/AffineMap.h"
#include "mlir/IR/Builders.h"
#include "llvm/ADT/DenseSet.h"
#include "llvm/ADT/MapVector.h"
#include "llvm/ADT/SmallPtrSet.h"

#include <string>

namespace miras::lowering {

using namespace mlir;

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
inline MemRefType sequenceType(MLIRContext *ctx, unsigned leading,
                               ArrayRef<int64_t> shape) {
  SmallVector<int64_t> dims(leading, ShapedType::kDynamic);
  dims.append(shape.begin(), shape.end());
  return MemRefType::get(dims, Float32Type::get(ctx));
}

/// The slice `source[prefix..., :, ...]` with the leading indices dropped.
inline Value slice(OpBuilder &b, Location loc, Value source, ValueRange prefix,
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

/// All-parallel iterator types of rank n.
SmallVector<utils::IteratorType> parallel(unsigned n);

/// Element-wise ops of the step level that lower by re-creating them on
/// scalars (with broadcasts and outer products, what a lazy value is made of).
bool isElementwise(Operation *op);

/// out (+)= sign * product(ins) over an iteration space given by `maps` (one
/// per input, then the output's) and `iterators`.
void emitContraction(OpBuilder &b, Location loc, ValueRange ins,
                     ArrayRef<AffineMap> maps, Value out,
                     ArrayRef<utils::IteratorType> iterators, double sign);

/// One state's update in the chunked parallel form (SPEC section 7):
///   W' = s W + sign * u w^T   or   W' = W Diag(a) + sign * u w^T
/// with the scalar decay s (absent: 1) or the column decay a, u and w read at
/// the chunk's anchor, so none of them depends on a carried state; or, for
/// momentum (Titans), W' = s W + S' with S' another state's new value, itself
/// updated as S' = m S + sign * u w^T (scalar decays only).
struct ChunkUpdate {
  unsigned state = 0;
  Value u, w;
  Value decay;          // f32 (or a splat constant), a [cols] vector, or null
  bool channel = false; // decay scales W's columns
  double sign = -1.0;
  int momentum = -1;    // W' = s W + S': the index of S's update, else -1
  Value scale;          // a scalar multiplying u w^T (a learning rate), or null
};

/// A step the chunked parallel form handles: every state updated as above,
/// and read only through matrix-vector products `W_i' x` or `W_i x` (x per
/// token, possibly computed from earlier reads: MLP layers).
///
/// Any other step with anchors gets the scan form (`scan`): everything that
/// reads no state is still computed for the whole chunk (products with the
/// anchor as matrix products), and what reads a state runs token by token.
struct ParallelForm {
  SmallVector<ChunkUpdate> updates;             // one per state, in order
  llvm::SmallPtrSet<Operation *, 8> updateOps;  // never lowered
  llvm::SmallPtrSet<Operation *, 16> dependent; // every op reading a state
  bool scan = false;
};

/// Matches `step` against ParallelForm; on failure `why` says what differs.
FailureOr<ParallelForm> matchParallelForm(func::FuncOp step,
                                          unsigned numStates,
                                          unsigned numAnchors,
                                          std::string &why);
/// The scan form, for steps with anchors whose state-reading part does not
/// read an anchor; on failure `why` says why.
FailureOr<ParallelForm> matchScanForm(func::FuncOp step, unsigned numStates,
                                      unsigned numAnchors, std::string &why);

/// The kernel's form for `algorithm`: none (sequential), or the chunked dual
/// or scan form; a located error when `chunked` was asked and does not apply.
FailureOr<std::optional<ParallelForm>>
planForm(MemoryModuleOp module, func::FuncOp step, StringRef algorithm);
/// "sequential", "chunked" or "chunked-scan".
const char *formName(const std::optional<ParallelForm> &form);

/// Builds the kernel of one derived miras.module: the sequential algorithm
/// (MirasToLinalg.cpp) or the chunked parallel form (ChunkedForm.cpp).
class KernelLowering {
  friend class ChunkedForm;

public:
  KernelLowering(MemoryModuleOp module, func::FuncOp step, StringRef algorithm)
      : module(module), step(step), ctx(module.getContext()),
        algorithm(algorithm) {}

  /// Builds `@<name>_kernel` before the miras.module.
  LogicalResult run();
  /// Builds `@<name>_backward_kernel` before the miras.module from the step
  /// and its reverse `backward` (BackwardKernel.cpp): the adjoints of a whole
  /// sequence, recomputing the states segment by segment of `segment` tokens;
  /// `adjointsInPlace` false writes every new state adjoint into a second
  /// buffer; `fuseRows` marks the reverse sweep for miras-vectorize to fuse
  /// its loops over the rows of its matrices (kRowBlockAttrName).
  LogicalResult runBackward(func::FuncOp backward, int64_t segment,
                            bool adjointsInPlace = true, bool fuseRows = true);

private:
  /// Binds q, k, v and the gates of token `ti` of pair (bi, hi) to the step's
  /// arguments from `first` on.
  void bindToken(OpBuilder &b, Location loc, Block *entry, Value bi, Value ti,
                 Value hi, unsigned first);
  /// After the pair loop: frees the heap scratch buffers and returns.
  void closeKernel(OpBuilder &b, Location loc, Operation *pairLoop);
  /// The kernel's q, k, v arguments ([B, T, H, ...]).
  static SmallVector<Value> tokenInputs(Block *entry) {
    return {entry->getArgument(2), entry->getArgument(3), entry->getArgument(4)};
  }
  /// Prefetches the rows of token ti + ahead (the token the loop goes to
  /// next) of `reads` and, for writing, of `writes` ([B, T, H, ...] kernel
  /// arguments).
  void prefetchToken(OpBuilder &b, Location loc, Block *entry, Value bi,
                     Value ti, Value hi, int64_t ahead, ArrayRef<Value> reads,
                     ArrayRef<Value> writes = {});
  /// The chunked parallel form for one (batch, head) pair (ChunkedForm.cpp):
  /// the whole chunks of tokens [from, to) (to - from a multiple of C), each
  /// starting with the states as its anchor.
  LogicalResult buildChunked(OpBuilder &b, Location loc, Block *entry,
                             const ParallelForm &form, Value bi, Value hi,
                             Value from, Value to);
  /// The sequential algorithm for tokens [from, to) of one pair: the step
  /// token by token, o written. With `anchors` (chunk > 1), a token whose
  /// chunk position (position + t) mod C is 0 first copies the states into
  /// them.
  LogicalResult buildTokens(OpBuilder &b, Location loc, Block *entry, Value bi,
                            Value hi, Value from, Value to, Value position,
                            ArrayRef<Value> anchors);
  /// Binds the step's state arguments to the pair's state slices (after
  /// beginBody: each token loop lowers the step afresh).
  void bindStates(ArrayRef<Value> slices);
  /// The chunk position held in `slot` (a [1] f32 slice) as an index, taken
  /// mod C: the glue and the runtime refuse one outside [0, C), but on the
  /// device nobody reads it back, so it is never an index out of bounds.
  Value loadChunkPosition(OpBuilder &b, Location loc, Value slot);
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
  /// Writes one result (any kind) of the function being lowered into `dest`.
  LogicalResult storeResult(OpBuilder &b, Location loc, Value value, Value dest);

  // The backward kernel (BackwardKernel.cpp) lowers several function bodies
  // into one kernel: each starts from a clean slate.
  void beginBody(func::FuncOp function);
  /// One forward step of token `ti` from the states held in `from` to `to`
  /// (the same buffers: in place), reading the chunk's anchors from
  /// `anchors`; o is not computed. With `to` empty, only the step's
  /// products registered in `extraOutputs` (the reverse step's taped
  /// arguments), and no state is written.
  LogicalResult lowerStateStep(OpBuilder &b, Location loc, Block *entry,
                               Value bi, Value ti, Value hi, ArrayRef<Value> from,
                               ArrayRef<Value> to, ArrayRef<Value> anchors);
  /// The ops of the step the new states depend on (what lowerStateStep
  /// lowers).
  llvm::SetVector<Operation *> stateStepOps();
  /// Those of q, k, v (tokenInputs) the state step reads: what its loops
  /// prefetch (the update of most modules never reads q).
  SmallVector<Value> stateStepInputs(Block *entry);

  /// Per-token shape of k or v ([width], one row per step of a multistep
  /// module: [steps, width]).
  SmallVector<int64_t> perStep(int64_t width) {
    int64_t steps = module.getSteps();
    return steps == 1 ? SmallVector<int64_t>{width}
                      : SmallVector<int64_t>{steps, width};
  }

  /// The token inputs q, k, v and the gates as [B, T, H, ...] memrefs: the
  /// forward and backward kernels' first tensor arguments, after the pair
  /// range (KernelLayout, BackwardKernelLayout); the backward's adjoints of
  /// them take the same types.
  SmallVector<Type> tokenInputTypes() {
    int64_t dk = module.getDk(), dv = module.getDv();
    SmallVector<Type> types{sequenceType(ctx, 3, {dk}),
                            sequenceType(ctx, 3, perStep(dk)),
                            sequenceType(ctx, 3, perStep(dv))};
    for (GateOp gate : module.getGates())
      types.push_back(sequenceType(ctx, 3, gateShape(gate)));
    return types;
  }

  /// Per-token shape of a gate: [], [dim] or [steps].
  SmallVector<int64_t> gateShape(GateOp gate) {
    if (gate.getPerStep())
      return {static_cast<int64_t>(module.getSteps())};
    if (gate.getChannel())
      return {static_cast<int64_t>(gate.getDim())};
    return {};
  }

  /// A scratch buffer for a vector result, allocated once at kernel entry.
  Value scratch(RankedTensorType type);
  Value heapScratch(RankedTensorType type);
  /// A buffer for the token loops to sweep in place of `slice`, a state's
  /// slice of a caller's buffer: `slice` itself when it starts on a cache
  /// line or the call is shorter than kMinStagedTokens (`length`), else an
  /// aligned scratch copy of it (`copied` then holds true; unstageState
  /// copies it back).
  Value stageState(OpBuilder &b, Location loc, Value slice, Value length,
                   Value &copied);
  void unstageState(OpBuilder &b, Location loc, Value buffer, Value slice,
                    Value copied);

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
    auto type = cast<RankedTensorType>(v.getType());
    for (auto [value, dest] : extraOutputs)
      if (value == v &&
          cast<MemRefType>(dest.getType()).getShape() == type.getShape())
        return dest;
    return scratch(type);
  }

  /// One state tensor: the step's argument, its new value and its slice of
  /// the kernel's state buffer for the current (batch, head).
  struct State {
    Value old, next, slice;
    /// Whether `slice` also holds `old`, which writing `next` overwrites
    /// (the forward's states); false when the old value stays readable in
    /// a buffer of its own.
    bool inPlace = true;
  };

  static Value emitScalarOp(OpBuilder &b, Operation *op, ValueRange operands);

  MemoryModuleOp module;
  func::FuncOp step;
  MLIRContext *ctx;
  DenseMap<Value, Lowered> lowered;
  OpBuilder *entryBuilder = nullptr;
  SmallVector<State> states;
  /// The order in which the return writes `states` that are still to be
  /// written (empty: index order).
  SmallVector<unsigned> stateWriteOrder;
  llvm::SmallDenseSet<unsigned> writing; // states being or already written
  SmallVector<Value> heapBuffers;        // anchors and scratch matrices
  DenseMap<Value, bool> expensive;       // isExpensive's memo
  Value outputSlice, outputValue;
  /// Further per-token results and their slices: the backward kernel's dq,
  /// dk, dv and gate adjoints, written at the return before the states; and
  /// the step's taped products, which their op writes into the slice
  /// (destinationFor).
  SmallVector<std::pair<Value, Value>> extraOutputs;
  StringRef algorithm; // the pass option: auto | sequential | chunked
};

} // namespace miras::lowering

#endif // MIRAS_COMPILER_CONVERSION_KERNELLOWERING_H
