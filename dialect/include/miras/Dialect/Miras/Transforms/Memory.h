//===- Memory.h - Memory architectures and retention maps -------*- C++ -*-===//
//
// What the derivation needs to know about each memory architecture (its
// weight tensors and its forward function f(W; z)) and each mirror retention
// (the map from the carried dual state A to the weights W), built as
// step-level ops so that reverse mode and the lowering see ordinary IR.
//
//===----------------------------------------------------------------------===//
#ifndef MIRAS_DIALECT_MIRAS_TRANSFORMS_MEMORY_H
#define MIRAS_DIALECT_MIRAS_TRANSFORMS_MEMORY_H

#include "miras/Dialect/Miras/IR/MirasOps.h"
#include "miras/Dialect/Miras/Transforms/MathBuilder.h"

namespace miras {

/// The weight tensors of the memory, in the order they are applied
/// (SPEC section 4): linear W [dv, dk]; mlp W1 [E*D, D], ..., Wk [D, E*D].
llvm::SmallVector<mlir::RankedTensorType> getWeightTypes(MemoryModuleOp module);

/// Builds f(W; z) for the module's memory.
mlir::Value buildMemoryForward(MathBuilder &mb, MemoryOp memory,
                               mlir::ValueRange weights, mlir::Value z);

/// Whether the retention keeps a dual state A with W = map(A) (SPEC section 5).
bool isMirrorRetention(RetentionOp retention);

/// W = map(A) for a mirror retention: lq gives A / ||A||_q^(q-2), kl a softmax
/// over each row, ftrl_elastic the soft threshold S_{eta/a}(A).
mlir::Value buildMirrorMap(MathBuilder &mb, RetentionOp retention,
                           mlir::Value dual);

} // namespace miras

#endif
