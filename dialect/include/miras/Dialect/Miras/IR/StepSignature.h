//===- StepSignature.h - Argument groups of the step and the kernel -*- C++ -*-===//
//
// The one owner of the argument order that miras-derive-update gives the
// step function and the lowering gives the kernel; every pass asks it instead
// of rebuilding the order by index arithmetic.
//
//   step(states..., anchors..., q, k, v, gates...) -> (states'..., o)
//
//   states   the memory's weights (W, or W1, W2, ... for an MLP), or their
//            duals (A, A1, ...) when the retention is a mirror map; then each
//            group of extra states its optimizer declares (momentum: S, S1..)
//   anchors  when chunk > 1, the weights at the start of the chunk (SPEC
//            section 7), one per weight, named like it with `_anchor`
//   q, k, v  one token's query, key and value (multistep: one k, v row per
//            step); gates in declaration order
//
//   kernel(pair_begin, pair_end, q, k, v, gates..., states..., o)
//
// and the reverse step miras-derive-backward builds (its adjoint groups):
//
//   step_backward(step's arguments..., dstates'..., do)
//       -> (dstates..., danchors..., dq, dk, dv, dgates...)
//
//   the adjoints of the step's results (the next states, named d<state>_next,
//   and o, named do) in; the adjoint of every step argument (d<name>) out.
//
//===----------------------------------------------------------------------===//
#ifndef MIRAS_DIALECT_MIRAS_IR_STEPSIGNATURE_H
#define MIRAS_DIALECT_MIRAS_IR_STEPSIGNATURE_H

#include "mlir/Dialect/Func/IR/FuncOps.h"
#include "mlir/IR/Block.h"
#include "mlir/IR/BuiltinTypes.h"
#include "llvm/ADT/SetVector.h"

#include <string>

namespace miras {

class MemoryModuleOp;

/// The ops that compute `roots` in a step-level function, each after the
/// ops it reads (the function's arguments are not ops).
llvm::SetVector<mlir::Operation *> opsComputing(mlir::ValueRange roots);

/// A product of `@step` that the reverse step takes as an argument instead
/// of computing it (miras-tape-recomputed-products): both carry
/// `miras.tape = i`, argument `p<i+1>` of `@step_backward`.
inline constexpr llvm::StringLiteral kTapeAttrName = "miras.tape";
/// The op of `step` marked `miras.tape = index`, or null.
mlir::Operation *tapedProduct(mlir::func::FuncOp step, int64_t index);

class StepSignature {
public:
  struct Tensor {
    std::string name;
    mlir::Type type;
  };

  /// Planned from the module's choices: the memory's weights, the
  /// retention's stem (W or A) and the optimizer's extra states.
  static StepSignature of(MemoryModuleOp module);

  unsigned numWeights() const { return weights; }
  unsigned numStates() const { return states.size(); }
  unsigned numAnchors() const { return anchors.size(); }
  unsigned numGates() const { return gates.size(); }

  // Positions of the step function's arguments and results.
  unsigned stateArg(unsigned i) const { return i; }
  unsigned anchorArg(unsigned i) const { return numStates() + i; }
  unsigned queryArg() const { return numStates() + numAnchors(); }
  unsigned keyArg() const { return queryArg() + 1; }
  unsigned valueArg() const { return queryArg() + 2; }
  unsigned gateArg(unsigned i) const { return queryArg() + 3 + i; }
  unsigned numArgs() const { return gateArg(numGates()); }
  unsigned stateResult(unsigned i) const { return i; }
  unsigned outputResult() const { return numStates(); }

  const std::vector<Tensor> &getStates() const { return states; }
  const std::vector<Tensor> &getGates() const { return gates; }
  const std::vector<Tensor> &getAnchors() const { return anchors; }

  /// The step's function type, and its arguments and results named
  /// (`miras.name`) as the metadata names them.
  mlir::FunctionType functionType(mlir::MLIRContext *ctx) const;
  void nameArguments(mlir::func::FuncOp step) const;

  // The reverse step: the step's arguments, then one adjoint per step result.
  unsigned resultAdjointArg(unsigned result) const { return numArgs() + result; }
  /// Result `i` of the reverse step is the adjoint of step argument `i`.
  mlir::FunctionType backwardFunctionType(mlir::MLIRContext *ctx) const;
  void nameBackwardArguments(mlir::func::FuncOp backward) const;

  /// The ops of a step function that its new states depend on, each after
  /// the ops it reads: the state update without the read (what the backward
  /// kernel's recompute runs).
  llvm::SetVector<mlir::Operation *> stateUpdateOps(mlir::func::FuncOp step) const;

  // The groups as values of the step function's entry block.
  mlir::ValueRange weightValues(mlir::Block &entry) const {
    return entry.getArguments().slice(0, numWeights());
  }
  /// Extra state group `group` of the optimizer (one value per weight).
  mlir::ValueRange extraStateValues(mlir::Block &entry, unsigned group) const {
    return entry.getArguments().slice((group + 1) * numWeights(), numWeights());
  }
  mlir::ValueRange anchorValues(mlir::Block &entry) const {
    return entry.getArguments().slice(anchorArg(0), numAnchors());
  }
  mlir::ValueRange gateValues(mlir::Block &entry) const {
    return entry.getArguments().slice(gateArg(0), numGates());
  }

private:
  unsigned weights = 0;
  std::vector<Tensor> states, anchors, inputs, gates;
  mlir::Type output;
};

/// The kernel's arguments (the ABI of KernelInterface.h), for a module with
/// `numGates` gates, `numStates` carried states and, when chunk > 1,
/// `numAnchors` anchors: after the carried states, what continuing a sequence
/// needs (miras_abi.h miras_state_role), each [B, H, shape] and updated in
/// place like a state:
///
///   kernel(pair_begin, pair_end, q, k, v, gates..., states...,
///          anchors..., chunk_position, o)
///
/// anchors[i] is the anchor of state i (its shape); chunk_position [B, H, 1]
/// the tokens of the current chunk already consumed (a float holding an
/// integer in [0, C)). Without anchors there is neither.
struct KernelLayout {
  unsigned numGates = 0, numStates = 0, numAnchors = 0;

  static constexpr unsigned pairBegin = 0, pairEnd = 1, query = 2, key = 3,
                            value = 4;
  unsigned gate(unsigned i) const { return 5 + i; }
  unsigned state(unsigned i) const { return 5 + numGates + i; }
  unsigned anchor(unsigned i) const { return state(numStates) + i; }
  /// Only with anchors.
  unsigned chunkPosition() const { return anchor(numAnchors); }
  /// Every [B, H, ...] argument: carried states, anchors, chunk position.
  unsigned numAllStates() const {
    return numStates + numAnchors + (numAnchors ? 1 : 0);
  }
  unsigned output() const { return 5 + numGates + numAllStates(); }
  unsigned size() const { return output() + 1; }

  static KernelLayout of(const StepSignature &signature) {
    return {signature.numGates(), signature.numStates(), signature.numAnchors()};
  }
};

/// The backward kernel's arguments (KernelInterface.h), for a module with
/// `numGates` gates, `numStates` carried states and `numAnchors` anchors (the
/// forward's KernelLayout; "every state" below is all of its [B, H, ...]
/// arguments, carried states, anchors and chunk position, in that order):
///
///   backward_kernel(pair_begin, pair_end, q, k, v, gates...,   as the kernel
///                   do,                  [B, T, H, Dv]
///                   dstates...,          every state, [B, H, shape]: in, the
///                                        adjoint of the final state; out, of
///                                        the initial (the chunk position's:
///                                        zeros)
///                   dq, dk, dv, dgates...  per token, shaped like q, k, ...
///                   checkpoints...,      every state, [P, N, shape]: slot 0
///                                        holds its initial value; a carried
///                                        state has N = ceil((T + C - 1) / S)
///                                        slots, the rest workspace; an anchor
///                                        or the chunk position N = 1
///                   segment...,          carried states only, [P, S, slot
///                                        shape]: workspace per pair
///                                        (segmentSlotShape)
///                   checkpoints_given)   index: 1 when a forward saved the
///                                        carried states' checkpoints (slots
///                                        0 .. ceil((p + T) / S) - 1), which
///                                        the kernel then reads instead of
///                                        computing them in its first pass
///
/// A pair's checkpoints and segment are at index pair - pair_begin: the CPU
/// glue runs one pair per call (P = 1); a GPU launch has every pair at once.
/// The checkpoints count segments of the chunk-aligned time: with the chunk
/// position p, segment c holds the tokens t with c * S <= p + t < (c + 1) * S.
struct BackwardKernelLayout {
  unsigned numGates = 0, numStates = 0, numAnchors = 0;

  static constexpr unsigned pairBegin = 0, pairEnd = 1, query = 2, key = 3,
                            value = 4;
  unsigned numAllStates() const {
    return numStates + numAnchors + (numAnchors ? 1 : 0);
  }
  unsigned gate(unsigned i) const { return 5 + i; }
  unsigned outputAdjoint() const { return 5 + numGates; }
  /// Of every state (i < numAllStates()).
  unsigned stateAdjoint(unsigned i) const { return 6 + numGates + i; }
  unsigned queryAdjoint() const { return 6 + numGates + numAllStates(); }
  unsigned keyAdjoint() const { return queryAdjoint() + 1; }
  unsigned valueAdjoint() const { return queryAdjoint() + 2; }
  unsigned gateAdjoint(unsigned i) const { return queryAdjoint() + 3 + i; }
  /// Of every state (i < numAllStates()).
  unsigned checkpoint(unsigned i) const { return gateAdjoint(numGates) + i; }
  /// Of the carried states (i < numStates).
  unsigned segment(unsigned i) const { return checkpoint(numAllStates()) + i; }
  unsigned checkpointsGiven() const { return segment(numStates); }
  unsigned size() const { return checkpointsGiven() + 1; }

  /// Checkpoints of a carried state for a sequence of `length` tokens with
  /// chunk `chunk` and segment `segment`: the chunk position shifts the
  /// segments by up to chunk - 1 tokens.
  static int64_t numCheckpoints(int64_t length, int64_t chunk, int64_t segment) {
    return (length + chunk - 1 + segment - 1) / segment;
  }

  /// A segment slot holds a state of `shape` and spare rows along its first
  /// dimension, at least 16 floats (64 bytes, so a slot keeps the vector
  /// alignment of the one before): consecutive slots are then not a multiple
  /// of 4 KiB apart (a 64 x 64 state is 16 KiB), where x86 stalls the
  /// recompute's loads from one slot behind its stores to the next ("4K
  /// aliasing": the loop that steps slot j - 1 into slot j took a sixth of
  /// the backward's time).
  static llvm::SmallVector<int64_t> segmentSlotShape(llvm::ArrayRef<int64_t> shape) {
    llvm::SmallVector<int64_t> slot(shape.begin(), shape.end());
    if (slot.empty())
      return slot;
    int64_t row = 1;
    for (int64_t d : shape.drop_front())
      row *= d;
    slot.front() += (16 + row - 1) / row;
    return slot;
  }

  static BackwardKernelLayout of(const StepSignature &signature) {
    return {signature.numGates(), signature.numStates(), signature.numAnchors()};
  }
};

} // namespace miras

#endif
