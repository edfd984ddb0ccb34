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
#include "mlir/Target/LLVMIR/Dialect/LLVMIR/LLVMToLLVMIRTranslation.h"
#include "mlir/Transforms/Passes.h"

using namespace mlir;

void miras::buildDerivePipeline(OpPassManager &pm) {
  pm.addPass(createMirasDeriveUpdate());
  pm.addPass(createCanonicalizerPass());
  pm.addPass(createCSEPass());
}

void miras::buildToLinalgPipeline(OpPassManager &pm,
                                  const ToLinalgOptions &options) {
  MirasLowerToLinalgOptions lowering;
  lowering.algorithm = options.algorithm;
  pm.addPass(createMirasLowerToLinalg(lowering));
  pm.addPass(createCanonicalizerPass());
  pm.addPass(createCSEPass());
}

void miras::buildLinalgToLLVMPipeline(OpPassManager &pm,
                                      const LinalgToLLVMOptions &options) {
  // Vector tiles for the generics that qualify (miras-vectorize), loops for
  // the rest, then the standard CPU lowering (PIPELINES.md section 2); libm
  // for the math ops LLVM has no intrinsic for (tanh, cosh, sinh).
  if (options.vectorWidth != 0) {
    MirasVectorizeOptions vectorize;
    vectorize.vectorWidth = options.vectorWidth;
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
  // Math before vector: math-to-libm unrolls vector ops it has no intrinsic
  // for (tanh, erf) into vector.extract/insert around scalar calls.
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

void miras::registerMirasPipelines() {
  mlir::registerAllPasses();
  registerMirasPasses();
  registerMirasCompilerPasses();
  PassPipelineRegistration<>("miras-derive",
                             "Spec level to the derived step function",
                             buildDerivePipeline);
  PassPipelineRegistration<ToLinalgOptions>(
      "miras-to-linalg", "Derived step function to a fused linalg kernel",
      buildToLinalgPipeline);
  PassPipelineRegistration<LinalgToLLVMOptions>(
      "miras-linalg-to-llvm",
      "Linalg kernel to vector code (miras-vectorize) and the LLVM dialect",
      buildLinalgToLLVMPipeline);
}

void miras::registerMirasDialects(DialectRegistry &registry) {
  registry.insert<MirasDialect>();
  mlir::registerAllDialects(registry);
  mlir::registerAllExtensions(registry);
  registerBuiltinDialectTranslation(registry);
  registerLLVMDialectTranslation(registry);
}
