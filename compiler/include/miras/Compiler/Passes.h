//===- Passes.h - miras lowering passes -------------------------*- C++ -*-===//
#ifndef MIRAS_COMPILER_PASSES_H
#define MIRAS_COMPILER_PASSES_H

#include "mlir/Dialect/Arith/IR/Arith.h"
#include "mlir/Dialect/Func/IR/FuncOps.h"
#include "mlir/Dialect/GPU/IR/GPUDialect.h"
#include "mlir/Dialect/Linalg/IR/Linalg.h"
#include "mlir/Dialect/Math/IR/Math.h"
#include "mlir/Dialect/MemRef/IR/MemRef.h"
#include "mlir/Dialect/SCF/IR/SCF.h"
#include "mlir/Pass/Pass.h"

namespace miras {

/// On an op (a function, a loop): miras-vectorize fuses the row-local ops over
/// the rows of each matrix inside it into one loop over blocks of this many
/// rows (0: chosen per loop), as its fuse-rows option does everywhere. The
/// backward kernel's reverse sweep carries it (miras-lower-backward-kernel
/// fuse-rows).
inline constexpr llvm::StringLiteral kRowBlockAttrName = "miras.row_block";

#define GEN_PASS_DECL
#include "miras/Compiler/Passes.h.inc"

#define GEN_PASS_REGISTRATION
#include "miras/Compiler/Passes.h.inc"

} // namespace miras

#endif
