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

class MemoryModuleOp;

/// `miras-derive`: spec level -> step level (derive-update, cse, canonicalize).
void buildDerivePipeline(mlir::OpPassManager &pm);

/// `miras-backward`: adds the reverse step `@step_backward` of every derived
/// module (miras-derive-backward), takes the products the backward's
/// recompute computes as arguments (miras-tape-recomputed-products), then
/// writes its matrix products over the terms of their matrices
/// (miras-distribute-products); each pass followed by canonicalize and cse.
void buildBackwardPipeline(mlir::OpPassManager &pm);

struct ToLinalgOptions : mlir::PassPipelineOptions<ToLinalgOptions> {
  Option<std::string> algorithm{
      *this, "algorithm",
      llvm::cl::desc("auto | sequential | chunked (see miras-lower-to-linalg)"),
      llvm::cl::init("auto")};
  Option<int64_t> backwardSegment{
      *this, "backward-segment",
      llvm::cl::desc("0: no backward kernel; S > 0: also build "
                     "@<name>_backward_kernel (miras-lower-backward-kernel) "
                     "recomputing S tokens at a time; needs @step_backward"),
      llvm::cl::init(0)};
  Option<bool> backwardAdjointsInPlace{
      *this, "backward-adjoints-in-place",
      llvm::cl::desc("miras-lower-backward-kernel adjoints-in-place"),
      llvm::cl::init(true)};
  Option<bool> backwardFuseRows{
      *this, "backward-fuse-rows",
      llvm::cl::desc("miras-lower-backward-kernel fuse-rows"),
      llvm::cl::init(true)};
};

/// The kernel form miras-to-linalg builds for `algorithm` (auto, sequential
/// or chunked) from a derived module: "sequential", "chunked" (the dual form)
/// or "chunked-scan". Fails with a located error where miras-to-linalg would.
mlir::FailureOr<std::string> plannedAlgorithm(MemoryModuleOp module,
                                              llvm::StringRef algorithm);

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
  Option<bool> fuseRows{
      *this, "fuse-rows",
      llvm::cl::desc("miras-vectorize fuse-rows: one loop over the rows of a "
                     "matrix for the ops that read or write it row by row "
                     "(mirasc --fuse-rows)"),
      llvm::cl::init(false)};
};

/// `miras-linalg-to-llvm`: kernel -> vector code (miras-vectorize) -> LLVM
/// dialect, ready for translation.
void buildLinalgToLLVMPipeline(mlir::OpPassManager &pm,
                               const LinalgToLLVMOptions &options = {});

struct SimtOptions : mlir::PassPipelineOptions<SimtOptions> {
  Option<int64_t> threads{
      *this, "threads",
      llvm::cl::desc("Threads per block (0: picked from the largest loop)"),
      llvm::cl::init(0)};
  Option<int64_t> sharedBudget{
      *this, "shared-budget",
      llvm::cl::desc("Bytes of shared memory per block (sm_90 allows 227 KiB)"),
      llvm::cl::init(231424)};
  Option<bool> reverseThreads{
      *this, "reverse-threads",
      llvm::cl::desc("Number each region's threads from the last (CPU checks)"),
      llvm::cl::init(false)};
};

/// `miras-linalg-to-simt`: kernel -> parallel loops (one per linalg op,
/// adjacent independent ones fused) -> SIMT form (miras-distribute-threads).
/// Still a func.func: the CPU pipeline can run it (mirasc --simt-on-cpu).
void buildLinalgToSimtPipeline(mlir::OpPassManager &pm,
                               const SimtOptions &options = {});

/// `miras-to-gpu`: SIMT form -> gpu.module with the f32 and bf16 kernels
/// (miras-simt-to-gpu).
void buildSimtToGPUPipeline(mlir::OpPassManager &pm,
                            const SimtOptions &options = {});

/// `miras-cuda-on-cpu`: linalg kernel -> the CUDA kernel's code (SIMT form,
/// then miras-simt-to-gpu) run on the CPU by miras-gpu-lockstep, threads in
/// turn between barriers. For mirasc --cuda-on-cpu: a CPU library that
/// checks the GPU lowering numerically.
void buildCudaOnCpuPipeline(mlir::OpPassManager &pm,
                            const SimtOptions &options = {});

struct GPUToPTXOptions : mlir::PassPipelineOptions<GPUToPTXOptions> {
  Option<std::string> chip{*this, "chip", llvm::cl::desc("CUDA architecture"),
                           llvm::cl::init("sm_90")};
  Option<std::string> features{
      *this, "features",
      llvm::cl::desc("PTX ISA version, e.g. +ptx86 (empty: the chip's minimum, "
                     "7.8 for sm_90)"),
      llvm::cl::init("")};
  Option<std::string> toolkit{
      *this, "toolkit",
      llvm::cl::desc("CUDA toolkit root, for libdevice (the math functions)"),
      llvm::cl::init("")};
};

/// `miras-gpu-to-ptx`: gpu.module -> NVVM -> `gpu.binary` holding PTX
/// (PIPELINES.md section 3, `format=isa`: no ptxas needed).
void buildGPUToPTXPipeline(mlir::OpPassManager &pm,
                           const GPUToPTXOptions &options = {});

/// The CUDA toolkit root: $CUDA_ROOT, $CUDA_HOME or $CUDA_PATH, else the
/// parent of the directory of `ptxas` on PATH, else /usr/local/cuda when it
/// exists; empty when none is found.
std::string findCudaToolkit();

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
