//===- Pipelines.h - Named pass pipelines -----------------------*- C++ -*-===//
//
// The compiler's stages as pipeline builders, shared by `mirasc` (which runs
// them in order, stopping at --emit) and `miras-opt` (which registers each
// under its name for lit tests).
//
//===----------------------------------------------------------------------===//
#ifndef MIRAS_COMPILER_PIPELINES_H
#define MIRAS_COMPILER_PIPELINES_H

#include "mlir/Pass/PassManager.h"

namespace mlir {
class DialectRegistry;
}

namespace miras {

/// `miras-derive`: spec level -> step level (derive-update, cse, canonicalize).
void buildDerivePipeline(mlir::OpPassManager &pm);

/// `miras-to-linalg`: step level -> fused linalg-on-memref kernel.
void buildToLinalgPipeline(mlir::OpPassManager &pm);

/// `miras-linalg-to-llvm`: kernel -> LLVM dialect, ready for translation.
void buildLinalgToLLVMPipeline(mlir::OpPassManager &pm);

/// Registers the three pipelines above and every miras pass.
void registerMirasPipelines();

/// Every dialect any stage needs, plus the LLVM-translation interfaces.
void registerMirasDialects(mlir::DialectRegistry &registry);

} // namespace miras

#endif
