//===- Pipelines.cpp - Named pass pipelines -------------------------------===//
#include "miras/Compiler/Pipelines.h"
#include "miras/Compiler/Passes.h"
#include "miras/Dialect/Miras/IR/MirasOps.h"
#include "miras/Dialect/Miras/Transforms/Passes.h"

#include "mlir/Conversion/Passes.h"
#include "mlir/Dialect/Linalg/Passes.h"
#include "mlir/Dialect/MemRef/Transforms/Passes.h"
#include "mlir/IR/DialectRegistry.h"
#include "mlir/InitAllDialects.h"
#include "mlir/InitAllExtensions.h"
#include "mlir/InitAllPasses.h"
#include "mlir/Pass/PassRegistry.h"
#include "mlir/Target/LLVMIR/Dialect/Builtin/BuiltinToLLVMIRTranslation.h"
#include "mlir/Target/LLVMIR/Dialect/GPU/GPUToLLVMIRTranslation.h"
#include "mlir/Target/LLVMIR/Dialect/LLVMIR/LLVMToLLVMIRTranslation.h"
#include "mlir/Target/LLVMIR/Dialect/NVVM/NVVMToLLVMIRTranslation.h"
#include "mlir/Target/LLVM/NVVM/Target.h"
#include "mlir/Transforms/Passes.h"
#include "mlir/Dialect/Arith/Transforms/Passes.h"
#include "mlir/Dialect/GPU/Transforms/Passes.h"
#include "mlir/Dialect/SCF/Transforms/Passes.h"
#include "llvm/Support/FileSystem.h"
#include "llvm/Support/Path.h"
#include "llvm/Support/Program.h"

#include <cstdlib>

using namespace mlir;

/// `pass`, then canonicalize and cse: the stages end with tidy IR to print.
static void addThenTidy(OpPassManager &pm, std::unique_ptr<Pass> pass) {
  pm.addPass(std::move(pass));
  pm.addPass(createCanonicalizerPass());
  pm.addPass(createCSEPass());
}

void miras::buildDerivePipeline(OpPassManager &pm) {
  addThenTidy(pm, createMirasDeriveUpdate());
}

void miras::buildBackwardPipeline(OpPassManager &pm) {
  addThenTidy(pm, createMirasDeriveBackward());
  addThenTidy(pm, createMirasTapeRecomputedProducts());
  addThenTidy(pm, createMirasDistributeProducts());
}

void miras::buildToLinalgPipeline(OpPassManager &pm,
                                  const ToLinalgOptions &options) {
  if (options.backwardSegment > 0) {
    MirasLowerBackwardKernelOptions backward;
    backward.segment = options.backwardSegment;
    backward.adjointsInPlace = options.backwardAdjointsInPlace;
    backward.fuseRows = options.backwardFuseRows;
    pm.addPass(createMirasLowerBackwardKernel(backward));
  }
  MirasLowerToLinalgOptions lowering;
  lowering.algorithm = options.algorithm;
  addThenTidy(pm, createMirasLowerToLinalg(lowering));
}

void miras::buildLinalgToLLVMPipeline(OpPassManager &pm,
                                      const LinalgToLLVMOptions &options) {
  // Vector tiles for the generics that qualify (miras-vectorize), loops for
  // the rest, then the standard CPU lowering (PIPELINES.md section 2); libm
  // for the math ops LLVM has no intrinsic for (tanh, cosh, sinh).
  if (options.vectorWidth != 0) {
    MirasVectorizeOptions vectorize;
    vectorize.vectorWidth = options.vectorWidth;
    vectorize.fuseRows = options.fuseRows;
    pm.addNestedPass<func::FuncOp>(createMirasVectorize(vectorize));
    pm.addPass(createCanonicalizerPass());
  }
  pm.addNestedPass<func::FuncOp>(createConvertLinalgToLoopsPass());
  pm.addPass(memref::createFoldMemRefAliasOpsPass());
  pm.addPass(createConvertVectorToSCFPass());
  pm.addPass(createLowerAffinePass());
  pm.addPass(createSCFToControlFlowPass());
  pm.addPass(memref::createExpandStridedMetadataPass());
  pm.addPass(createLowerAffinePass());
  // Math on vectors as polynomials (LLVM would call libm once per lane), then
  // math before vector: math-to-libm unrolls what is left on vectors into
  // vector.extract/insert around scalar calls.
  pm.addNestedPass<func::FuncOp>(createMirasApproximateVectorMath());
  pm.addPass(createConvertMathToLLVMPass());
  pm.addPass(createConvertMathToLibmPass());
  pm.addPass(createConvertVectorToLLVMPass());
  pm.addPass(createFinalizeMemRefToLLVMConversionPass());
  pm.addPass(createArithToLLVMConversionPass());
  pm.addPass(createConvertIndexToLLVMPass());
  pm.addPass(createConvertFuncToLLVMPass());
  pm.addPass(createConvertControlFlowToLLVMPass());
  pm.addPass(createUBToLLVMConversionPass());
  pm.addPass(createReconcileUnrealizedCastsPass());
}

void miras::buildLinalgToSimtPipeline(OpPassManager &pm,
                                      const SimtOptions &options) {
  pm.addNestedPass<func::FuncOp>(createMirasUnstageStates());
  pm.addNestedPass<func::FuncOp>(createConvertLinalgToParallelLoopsPass());
  pm.addPass(memref::createFoldMemRefAliasOpsPass());
  pm.addPass(createCanonicalizerPass());
  // Fewer threads regions, fewer barriers: fuses adjacent loops over the same
  // range when each iteration reads only what the same iteration wrote.
  pm.addNestedPass<func::FuncOp>(createParallelLoopFusionPass());
  MirasDistributeThreadsOptions distribute;
  distribute.threads = options.threads;
  distribute.sharedBudget = options.sharedBudget;
  distribute.reverseThreads = options.reverseThreads;
  pm.addNestedPass<func::FuncOp>(createMirasDistributeThreads(distribute));
  // The expanded copies load and store through subviews: fold them, so every
  // access names its buffer (the bf16 kernel widens loads of the inputs).
  addThenTidy(pm, memref::createFoldMemRefAliasOpsPass());
}

/// miras-simt-to-gpu with `options`; `keepKernel` for miras-gpu-lockstep.
static void addSimtToGPU(OpPassManager &pm, const miras::SimtOptions &options,
                         bool keepKernel) {
  miras::MirasSimtToGPUOptions toGPU;
  toGPU.sharedBudget = options.sharedBudget;
  toGPU.keepKernel = keepKernel;
  addThenTidy(pm, miras::createMirasSimtToGPU(toGPU));
}

void miras::buildSimtToGPUPipeline(OpPassManager &pm,
                                   const SimtOptions &options) {
  addSimtToGPU(pm, options, /*keepKernel=*/false);
}

void miras::buildCudaOnCpuPipeline(OpPassManager &pm,
                                   const SimtOptions &options) {
  buildLinalgToSimtPipeline(pm, options);
  addSimtToGPU(pm, options, /*keepKernel=*/true);
  addThenTidy(pm, createMirasGPULockstep());
}

void miras::buildGPUToPTXPipeline(OpPassManager &pm,
                                  const GPUToPTXOptions &options) {
  // PIPELINES.md section 3 (2): strided metadata and affine maps are expanded
  // before convert-gpu-to-nvvm, or they reach the serialiser unconverted.
  pm.addPass(createSCFToControlFlowPass());
  pm.addPass(arith::createArithExpandOpsPass());
  pm.addPass(memref::createExpandStridedMetadataPass());
  pm.addPass(createLowerAffinePass());
  GpuNVVMAttachTargetOptions target;
  target.chip = options.chip;
  target.features = options.features;
  target.optLevel = 3;
  pm.addPass(createGpuNVVMAttachTarget(target));
  ConvertGpuOpsToNVVMOpsOptions toNVVM;
  // Kernel parameters are plain device pointers (miras_abi.h launch contract).
  toNVVM.useBarePtrCallConv = true;
  OpPassManager &gpuModule = pm.nest<gpu::GPUModuleOp>();
  gpuModule.addPass(createConvertGpuOpsToNVVMOps(toNVVM));
  gpuModule.addPass(createCanonicalizerPass());
  gpuModule.addPass(createCSEPass());
  gpuModule.addPass(createReconcileUnrealizedCastsPass());
  GpuModuleToBinaryPassOptions binary;
  binary.compilationTarget = "isa";
  binary.toolkitPath = options.toolkit;
  pm.addPass(createGpuModuleToBinaryPass(binary));
}

std::string miras::findCudaToolkit() {
  for (const char *var : {"CUDA_ROOT", "CUDA_HOME", "CUDA_PATH"})
    if (const char *value = std::getenv(var); value && *value)
      return value;
  if (auto ptxas = llvm::sys::findProgramByName("ptxas"))
    return llvm::sys::path::parent_path(llvm::sys::path::parent_path(*ptxas)).str();
  if (llvm::sys::fs::is_directory("/usr/local/cuda"))
    return "/usr/local/cuda";
  return "";
}

void miras::registerMirasPipelines() {
  mlir::registerAllPasses();
  registerMirasPasses();
  registerMirasCompilerPasses();
  PassPipelineRegistration<>("miras-derive",
                             "Spec level to the derived step function",
                             buildDerivePipeline);
  PassPipelineRegistration<>("miras-backward",
                             "Derived step function to its reverse step",
                             buildBackwardPipeline);
  PassPipelineRegistration<ToLinalgOptions>(
      "miras-to-linalg", "Derived step function to a fused linalg kernel",
      buildToLinalgPipeline);
  PassPipelineRegistration<LinalgToLLVMOptions>(
      "miras-linalg-to-llvm",
      "Linalg kernel to vector code (miras-vectorize) and the LLVM dialect",
      buildLinalgToLLVMPipeline);
  PassPipelineRegistration<SimtOptions>(
      "miras-linalg-to-simt",
      "Linalg kernel to its SIMT form (parallel loops over a block's threads)",
      buildLinalgToSimtPipeline);
  PassPipelineRegistration<SimtOptions>(
      "miras-to-gpu", "SIMT-form kernel to a gpu.module of CUDA kernels",
      buildSimtToGPUPipeline);
  PassPipelineRegistration<SimtOptions>(
      "miras-cuda-on-cpu",
      "Linalg kernel to the CUDA kernel's code, run on the CPU in lockstep",
      buildCudaOnCpuPipeline);
  PassPipelineRegistration<GPUToPTXOptions>(
      "miras-gpu-to-ptx", "gpu.module to NVVM and a gpu.binary holding PTX",
      buildGPUToPTXPipeline);
}

void miras::registerMirasDialects(DialectRegistry &registry) {
  registry.insert<MirasDialect>();
  // Reverse-mode rules of the upstream arith / math ops the derivation uses.
  registerDifferentiableOpInterfaceExternalModels(registry);
  mlir::registerAllDialects(registry);
  mlir::registerAllExtensions(registry);
  registerBuiltinDialectTranslation(registry);
  registerLLVMDialectTranslation(registry);
  // gpu-module-to-binary: NVVM to LLVM IR, and the #nvvm.target serialiser.
  registerGPUDialectTranslation(registry);
  registerNVVMDialectTranslation(registry);
  NVVM::registerNVVMTargetInterfaceExternalModels(registry);
}
