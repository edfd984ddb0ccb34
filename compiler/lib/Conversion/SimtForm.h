//===- SimtForm.h - Shared by the two halves of the CUDA lowering -*- C++ -*-===//
//
// miras-distribute-threads (SimtForm.cpp) writes the SIMT form; miras-simt-to-gpu
// (SimtToGPU.cpp) reads it. These are the markers and queries both rely on.
//
//===----------------------------------------------------------------------===//
#ifndef MIRAS_CONVERSION_SIMTFORM_H
#define MIRAS_CONVERSION_SIMTFORM_H

#include "mlir/Dialect/Func/IR/FuncOps.h"
#include "mlir/Dialect/SCF/IR/SCF.h"
#include "mlir/IR/BuiltinTypes.h"

namespace miras {

/// Unit attribute of a threads region: `scf.parallel (%tid) = (0) to (N)`
/// whose iterations are the block's threads (Passes.td, miras-distribute-threads).
inline constexpr llvm::StringLiteral kThreadsAttr = "miras.threads";
/// i64 attribute of a kernel in SIMT form: its threads per block.
inline constexpr llvm::StringLiteral kSimtThreadsAttr = "miras.simt_threads";
/// Unit attribute of the alloca holding a promoted state slice (placed in
/// shared memory first).
inline constexpr llvm::StringLiteral kPromotedStateAttr = "miras.promoted_state";
/// Unit attribute of the ops of a CPU kernel's aligned copy of a state slice
/// (KernelLowering::stageState: the arith.select of the buffer, the scf.if
/// copies in and out); miras-unstage-states removes them.
inline constexpr llvm::StringLiteral kStagedAttr = "miras.staged";
/// On a backward kernel (BackwardKernel.cpp): its segment length S. On the
/// gpu.module miras-simt-to-gpu builds from it: unit, the module is a
/// backward's (BackwardKernelLayout's parameters, f32 inputs only).
inline constexpr llvm::StringLiteral kBackwardSegmentAttr = "miras.backward_segment";
inline constexpr llvm::StringLiteral kBackwardModuleAttr = "miras.backward";
/// On a backward kernel: how many carried states and anchors it has and its
/// chunk C (BackwardKernelLayout, whose checkpoint count depends on C).
inline constexpr llvm::StringLiteral kBackwardStatesAttr = "miras.backward_states";
inline constexpr llvm::StringLiteral kBackwardAnchorsAttr = "miras.backward_anchors";
inline constexpr llvm::StringLiteral kBackwardChunkAttr = "miras.backward_chunk";

/// The `scf.for` over (batch, head) pairs from the kernel's first two
/// arguments, or null.
mlir::scf::ForOp findPairLoop(mlir::func::FuncOp kernel);

/// Removes a CPU kernel's aligned copies of state slices (kStagedAttr): a
/// device buffer starts on 256 bytes, and the states move to block buffers
/// (miras-unstage-states).
void unstageStates(mlir::func::FuncOp kernel);

/// True for a threads region.
bool isThreadsRegion(mlir::Operation *op);

/// Bytes of a statically shaped memref, or -1.
int64_t staticBytes(mlir::MemRefType type);

/// True for a state argument `[B, H, shape...]` (two leading dynamic dims, the
/// rest static); token tensors `[B, T, H, ...]` have three.
bool isStateType(mlir::MemRefType type);

} // namespace miras

#endif
