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
#include "mlir/Pass/PassOptions.h"

namespace mlir {
class DialectRegistry;
}

namespace miras {

/// `miras-derive`: spec level -> step level (derive-update, cse, canonicalize).
void buildDerivePipeline(mlir::OpPassManager &pm);

struct ToLinalgOptions : mlir::PassPipelineOptions<ToLinalgOptions> {
  Option<std::string> algorithm{
      *this, "algorithm",
      llvm::cl::desc("auto | sequential | chunked (see miras-lower-to-linalg)"),
      llvm::cl::init("auto")};
};

/// `miras-to-linalg`: step level -> fused linalg-on-memref kernel.
void buildToLinalgPipeline(mlir::OpPassManager &pm,
                           const ToLinalgOptions &options = {});

struct LinalgToLLVMOptions : mlir::PassPipelineOptions<LinalgToLLVMOptions> {
  Option<int64_t> vectorWidth{
      *this, "vector-width",
      llvm::cl::desc("f32 lanes for miras-vectorize: 16 AVX-512, 8 AVX2, 4 "
                     "portable; 0 leaves the loops to LLVM's auto-vectoriser "
                     "(mirasc: vectorWidthForCPU of --mcpu)"),
      llvm::cl::init(16)};
};

/// `miras-linalg-to-llvm`: kernel -> vector code (miras-vectorize) -> LLVM
/// dialect, ready for translation.
void buildLinalgToLLVMPipeline(mlir::OpPassManager &pm,
                               const LinalgToLLVMOptions &options = {});

/// The f32 lanes of the widest vector register of `cpu` (empty: the host,
/// with the features it actually has enabled): 16 with avx512f, 8 with
/// AVX/AVX2, else 4. For `buildLinalgToLLVMPipeline`. The environment
/// variable MIRAS_VECTOR_WIDTH overrides it (0: LLVM's auto-vectoriser only).
int64_t vectorWidthForCPU(llvm::StringRef cpu);

/// Registers the three pipelines above and every miras pass.
void registerMirasPipelines();

/// Every dialect any stage needs, plus the LLVM-translation interfaces.
void registerMirasDialects(mlir::DialectRegistry &registry);

} // namespace miras

#endif
