//===- Compile.cpp - Compiling a .miras module, as a library --------------===//
//
// The stages of Compile.h in order, each a named pipeline (Pipelines.h)
// shared with miras-opt; stops after the one options.stopAfter names.
//
//===----------------------------------------------------------------------===//
#include "miras/Compiler/Compile.h"
#include "miras/Compiler/Pipelines.h"
#include "miras/Compiler/Target.h"
#include "miras/Dialect/Miras/Choices/Choice.h"
#include "miras/Dialect/Miras/IR/MirasOps.h"
#include "miras/Dialect/Miras/IR/StepSignature.h"
#include "miras/Dialect/Miras/Transforms/RulePrinter.h"
#include "miras/Dialect/Miras/Transforms/StepCost.h"
#include "miras/Frontend/Frontend.h"
#include "miras/Frontend/MLIRGen.h"

#include "mlir/IR/MLIRContext.h"
#include "mlir/Pass/PassManager.h"
#include "llvm/IR/LLVMContext.h"
#include "llvm/IR/Module.h"
#include "llvm/Support/MemoryBuffer.h"
#include "llvm/Support/SourceMgr.h"

#include <algorithm>
#include <sstream>

using namespace mlir;
using namespace miras;

llvm::Expected<Algorithm> miras::parseAlgorithm(llvm::StringRef name) {
  if (name == "auto")
    return Algorithm::Auto;
  if (name == "sequential")
    return Algorithm::Sequential;
  if (name == "chunked")
    return Algorithm::Chunked;
  return llvm::createStringError("--algorithm expects auto, sequential or "
                                 "chunked, got '" + name + "'");
}

llvm::StringRef miras::algorithmName(Algorithm algorithm) {
  switch (algorithm) {
  case Algorithm::Auto:
    return "auto";
  case Algorithm::Sequential:
    return "sequential";
  case Algorithm::Chunked:
    return "chunked";
  }
  return "auto";
}

llvm::Expected<TargetSet> miras::parseTargets(llvm::StringRef list) {
  TargetSet targets{false, false};
  for (llvm::StringRef target : llvm::split(list, ',')) {
    if (target == "cpu")
      targets.cpu = true;
    else if (target == "cuda")
      targets.cuda = true;
    else
      return llvm::createStringError("--target expects cpu, cuda or cpu,cuda, got '" +
                                     list + "'");
  }
  return targets;
}

llvm::Error CompileOptions::validate() const {
  if (chunk && (*chunk < 1 || *chunk > choices::kMaxChunk))
    return llvm::createStringError("--chunk expects a size between 1 and " +
                                   llvm::Twine(choices::kMaxChunk) + ", got " +
                                   llvm::Twine(*chunk));
  if (!targets.cpu && !targets.cuda)
    return llvm::createStringError("--target names no target");
  if (llvm::Error err = checkCudaArch(cudaArch))
    return err;
  if (gpuThreads < 0 || gpuThreads > 1024)
    return llvm::createStringError("--gpu-threads expects 0 (automatic) to 1024, got " +
                                   llvm::Twine(gpuThreads));
  if (backward && backwardSegment && *backwardSegment < 1)
    return llvm::createStringError("--backward-segment expects at least 1 token, got " +
                                   llvm::Twine(*backwardSegment));
  if (backward && targets.cuda && !targets.cpu)
    return llvm::createStringError("--backward with --target=cuda: the backward's "
                                   "entry points need the CPU glue too; use "
                                   "--target=cpu,cuda");
  if (!targets.cpu && (stopAfter == Stage::LLVM || stopAfter == Stage::Obj))
    return llvm::createStringError("--emit=llvm and --emit=obj show the CPU "
                                   "kernel; add cpu to --target");
  return llvm::Error::success();
}

/// The backward's segment S when --backward-segment is not given. The states
/// kept, ceil(T / S) checkpoints + S recomputed, are fewest near S = sqrt(T):
/// 64 at T = 4096. But the reverse sweep reads the S recomputed states back,
/// fast only while they stay in cache, so S is the most states (a multiple of
/// 8, at most 64) that take at most 6 MiB: Titans at D = 64 (W1, W2, S1, S2:
/// 256 KiB) 24, whose backward from checkpoints was 4-8% faster than at 32
/// and 16 with two threads (T = 4096), TTT-MLP (128 KiB) 48, as fast as at 32
/// with fewer states kept; Gated DeltaNet at D = 128 (64 KiB) 64
/// (docs/TRAINING.md). Where not even 16 states fit, shrinking the segment
/// only adds checkpoints: 32.
static int64_t defaultBackwardSegment(const StepSignature &signature) {
  constexpr int64_t kSegmentBytes = int64_t(6) << 20;
  constexpr int64_t kMaxSegment = 64, kMinCached = 16, kUncached = 32;
  int64_t stateBytes = 0;
  for (const StepSignature::Tensor &state : signature.getStates()) {
    auto shaped = dyn_cast<ShapedType>(state.type);
    stateBytes += (shaped ? shaped.getNumElements() : 1) * int64_t(sizeof(float));
  }
  int64_t fitting = kSegmentBytes / std::max<int64_t>(stateBytes, 1) / 8 * 8;
  if (fitting < kMinCached)
    return kUncached;
  return std::min(fitting, kMaxSegment);
}

namespace {

/// A failure whose diagnostics are already written.
llvm::Error diagnosed() {
  return llvm::createStringError(std::errc::invalid_argument, "");
}

/// Runs one named pipeline; false once its errors have been reported.
bool runStage(MLIRContext &context, ModuleOp module,
              llvm::function_ref<void(OpPassManager &)> buildPipeline,
              bool commandLine) {
  PassManager pm(&context);
  buildPipeline(pm);
  return (!commandLine || succeeded(applyPassManagerCLOptions(pm))) &&
         succeeded(pm.run(module));
}

/// The ABI description of the module, read from the derived IR.
KernelInterface describe(MemoryModuleOp module, func::FuncOp step,
                         const std::string &sourcePath) {
  KernelInterface iface;
  iface.moduleName = module.getSymName().str();
  iface.sourcePath = sourcePath;
  iface.dk = module.getDk();
  iface.dv = module.getDv();
  iface.chunk = module.getChunk();
  iface.readAfterWrite = module.getReadAfterWrite();
  for (Operation &op : module.getBody().front()) {
    if (auto param = dyn_cast<ParamOp>(op)) {
      KernelInterface::Param p{param.getSymName().str(), 0.0, true};
      if (auto i = dyn_cast<IntegerAttr>(param.getValue()))
        p.value = static_cast<double>(i.getInt());
      else if (auto f = dyn_cast<FloatAttr>(param.getValue())) {
        p.value = f.getValueAsDouble();
        p.isInteger = false;
      }
      iface.params.push_back(p);
    }
  }
  iface.steps = module.getSteps();
  for (GateOp gate : module.getGates()) {
    iface.gates.push_back({gate.getSymName().str(), gate.getChannel(),
                           gate.getAxis() ? gate.getAxis()->str() : "",
                           static_cast<int64_t>(gate.getDim()),
                           gate.getPerStep(), std::nullopt});
    if (gate.getRangeLo() && gate.getRangeHi())
      iface.gates.back().range = KernelInterface::Gate::Range{
          gate.getRangeLo()->convertToDouble(), gate.getRangeHi()->convertToDouble(),
          gate.getRangeLoClosed(), gate.getRangeHiClosed()};
  }
  StepSignature signature = StepSignature::of(module);
  for (const StepSignature::Tensor &state : signature.getStates()) {
    auto type = cast<RankedTensorType>(state.type);
    KernelInterface::State &out = iface.states.emplace_back();
    out.name = state.name;
    out.shape.assign(type.getShape().begin(), type.getShape().end());
    // The declared start (miras.init; zeros without one), its defaults resolved
    // for this shape, so the runtime needs no rule of its own.
    choices::StateInit init = module.getStateInit(state.name);
    static_assert(int(choices::StateInit::Kind::Normal) ==
                  int(KernelInterface::State::Init::Normal));
    out.init = static_cast<KernelInterface::State::Init>(init.kind);
    out.initScale = init.scaleFor(type.getShape());
    out.initSeed = init.kind == choices::StateInit::Kind::Normal ? init.seed : 0;
  }
  // What continuing a chunked module needs (KernelLayout, miras_abi.h
  // miras_state_role): the anchor of each weight, then the chunk position.
  for (auto [i, anchor] : llvm::enumerate(signature.getAnchors())) {
    KernelInterface::State &out = iface.states.emplace_back();
    out.name = anchor.name;
    out.shape = iface.states[i].shape;
    out.role = KernelInterface::State::Role::Anchor;
    out.anchorOf = static_cast<int>(i);
  }
  if (signature.numAnchors()) {
    KernelInterface::State &out = iface.states.emplace_back();
    out.name = "chunk_position";
    out.shape = {1};
    out.role = KernelInterface::State::Role::ChunkPosition;
  }
  iface.rule = printUpdateRule(step);
  iface.flopsPerToken = countStepFlops(step);
  return iface;
}

} // namespace

llvm::Expected<CompileResult> miras::compileModule(llvm::StringRef sourceText,
                                                   const CompileOptions &options,
                                                   llvm::raw_ostream &diagnostics) {
  if (llvm::Error err = options.validate())
    return std::move(err);
  const std::string source = sourceText.str();
  CompileResult result;
  const bool cl = options.passManagerCommandLine;
  auto text = [&](llvm::function_ref<void(llvm::raw_ostream &)> print) {
    llvm::raw_string_ostream os(result.text);
    print(os);
    return std::move(result);
  };

  frontend::LoadResult loaded =
      frontend::loadModule(options.sourceName, source, options.params, options.chunk);
  std::ostringstream frontendDiagnostics;
  frontend::printDiagnostics(frontendDiagnostics, loaded.diagnostics, source);
  diagnostics << frontendDiagnostics.str();
  if (!loaded.ok())
    return diagnosed();
  if (options.stopAfter == Stage::AST)
    return text([&](llvm::raw_ostream &os) { os << frontend::dumpAST(*loaded.syntax); });

  DialectRegistry registry;
  registerMirasDialects(registry);
  MLIRContext context(registry);
  // A located error is the message for a user; the op dump is for miras-opt.
  context.printOpOnDiagnostic(false);
  llvm::SourceMgr sourceMgr;
  sourceMgr.AddNewSourceBuffer(
      llvm::MemoryBuffer::getMemBufferCopy(source, options.sourceName), llvm::SMLoc());
  SourceMgrDiagnosticHandler handler(sourceMgr, &context, diagnostics);

  OwningOpRef<ModuleOp> module = mlirGen(context, *loaded.resolved);
  if (!module)
    return diagnosed();
  auto print = [&](llvm::raw_ostream &os) { module->print(os); };
  if (options.stopAfter == Stage::MLIR)
    return text(print);

  if (!runStage(context, *module, buildDerivePipeline, cl))
    return diagnosed();
  if (options.stopAfter == Stage::Derived)
    return text(print);
  if (options.stopAfter == Stage::Backward) {
    if (!runStage(context, *module, buildBackwardPipeline, cl))
      return diagnosed();
    return text(print);
  }
  auto memoryModule = *module->getOps<MemoryModuleOp>().begin();
  auto step = cast<func::FuncOp>(SymbolTable::lookupSymbolIn(memoryModule, "step"));
  KernelInterface &iface = result.kernel;
  iface = describe(memoryModule, step, options.sourceName);
  if (options.stopAfter == Stage::Rule && options.backwardRule) {
    if (!runStage(context, *module, buildBackwardPipeline, cl))
      return diagnosed();
    auto backward = cast<func::FuncOp>(
        SymbolTable::lookupSymbolIn(memoryModule, "step_backward"));
    return text([&](llvm::raw_ostream &os) {
      os << iface.rule << "\nreverse step:\n" << printReverseRule(backward);
    });
  }
  if (options.stopAfter == Stage::Rule)
    return text([&](llvm::raw_ostream &os) { os << iface.rule; });

  iface.targets.clear();
  if (options.targets.cpu)
    iface.targets.push_back("cpu");
  if (options.targets.cuda)
    iface.targets.push_back("cuda");
  ToLinalgOptions toLinalg;
  toLinalg.algorithm = algorithmName(options.algorithm).str();
  if (options.backward) {
    if (!runStage(context, *module, buildBackwardPipeline, cl))
      return diagnosed();
    // Segments start at chunk starts: S rounded up to a multiple of the chunk.
    int64_t chunk = memoryModule.getChunk();
    int64_t segment = options.backwardSegment.value_or(
        defaultBackwardSegment(StepSignature::of(memoryModule)));
    iface.backwardSegment = (segment + chunk - 1) / chunk * chunk;
    iface.backwardFlopsPerToken = countBackwardFlops(
        step, cast<func::FuncOp>(SymbolTable::lookupSymbolIn(memoryModule, "step_backward")));
    iface.forwardTakesViews = options.gpuCheck != GpuCheck::CudaOnCpu;
    toLinalg.backwardSegment = iface.backwardSegment;
    toLinalg.backwardAdjointsInPlace = options.backwardAdjointsInPlace;
    toLinalg.backwardFuseRows = options.backwardFuseRows;
  }
  FailureOr<std::string> built = plannedAlgorithm(memoryModule, toLinalg.algorithm);
  if (failed(built))
    return diagnosed();
  iface.algorithm = *built;
  if (!runStage(context, *module, [&](OpPassManager &pm) {
        buildToLinalgPipeline(pm, toLinalg);
      }, cl))
    return diagnosed();
  if (options.stopAfter == Stage::Linalg)
    return text(print);

  SimtOptions simt;
  simt.threads = options.gpuThreads;
  const bool gpuStage =
      options.stopAfter == Stage::GPU || options.stopAfter == Stage::PTX;
  if (gpuStage || options.targets.cuda) {
    OwningOpRef<ModuleOp> gpu = module->clone();
    if (!runStage(context, *gpu, [&](OpPassManager &pm) {
          buildLinalgToSimtPipeline(pm, simt);
          buildSimtToGPUPipeline(pm, simt);
        }, cl))
      return diagnosed();
    if (options.stopAfter == Stage::GPU)
      return text([&](llvm::raw_ostream &os) { gpu->print(os); });
    auto cuda = describeCudaKernels(*gpu, options.cudaArch);
    if (!cuda)
      return cuda.takeError();
    std::optional<KernelInterface::CudaKernels> backwardCuda;
    if (options.backward) {
      auto described = describeCudaKernels(*gpu, options.cudaArch, /*backward=*/true);
      if (!described)
        return described.takeError();
      backwardCuda = std::move(*described);
    }
    GPUToPTXOptions toPTX;
    toPTX.chip = options.cudaArch;
    toPTX.toolkit = findCudaToolkit();
    if (!runStage(context, *gpu, [&](OpPassManager &pm) {
          buildGPUToPTXPipeline(pm, toPTX);
        }, cl))
      return diagnosed();
    // The PTX of a gpu.module (the forward's `_cuda`, the backward's
    // `_backward_cuda`), and its cubin: without ptxas the library carries PTX
    // only, and the driver JIT-compiles it.
    std::string ptxas = findPtxas(toPTX.toolkit);
    auto assemble = [&](KernelInterface::CudaKernels &kernels,
                        StringRef suffix) -> llvm::Error {
      auto ptx = extractPTX(*gpu, iface.moduleName + suffix.str());
      if (!ptx)
        return ptx.takeError();
      kernels.ptx = std::move(*ptx);
      if (ptxas.empty())
        return llvm::Error::success();
      auto cubin = assembleCubin(kernels.ptx, options.cudaArch, ptxas);
      if (!cubin)
        return cubin.takeError();
      kernels.cubin = std::move(*cubin);
      return llvm::Error::success();
    };
    // --emit=ptx --backward: the backward kernel's PTX.
    if (options.stopAfter == Stage::PTX) {
      auto ptx = extractPTX(*gpu, iface.moduleName +
                                      (options.backward ? "_backward_cuda" : "_cuda"));
      if (!ptx)
        return ptx.takeError();
      return text([&](llvm::raw_ostream &os) { os << *ptx; });
    }
    if (llvm::Error err = assemble(*cuda, "_cuda"))
      return std::move(err);
    iface.cuda = std::move(*cuda);
    if (backwardCuda) {
      if (llvm::Error err = assemble(*backwardCuda, "_backward_cuda"))
        return std::move(err);
      iface.cudaBackward = std::move(*backwardCuda);
    }
  }

  CodegenOptions codegen;
  codegen.cpu = options.cpu;
  codegen.keepTemps = options.keepTemps;
  result.outputPath = !options.outputPath.empty() ? options.outputPath
                      : options.stopAfter == Stage::Obj
                          ? iface.moduleName + ".o"
                          : "lib" + iface.moduleName + ".so";
  if (!options.targets.cpu) {
    if (llvm::Error err = writeLibrary(nullptr, iface, result.outputPath, codegen))
      return std::move(err);
    return std::move(result);
  }
  // On the CPU the threads of a region run one after another; backwards, so
  // that a region whose result depends on that order gives other numbers
  // (miras-gpu-lockstep reverses them itself, after the GPU lowering).
  if (options.gpuCheck == GpuCheck::SimtOnCpu) {
    simt.reverseThreads = true;
    if (!runStage(context, *module, [&](OpPassManager &pm) {
          buildLinalgToSimtPipeline(pm, simt);
        }, cl))
      return diagnosed();
  }
  if (options.gpuCheck == GpuCheck::CudaOnCpu &&
      !runStage(context, *module, [&](OpPassManager &pm) {
        buildCudaOnCpuPipeline(pm, simt);
      }, cl))
    return diagnosed();

  LinalgToLLVMOptions toLLVM;
  toLLVM.vectorWidth = vectorWidthForCPU(options.cpu);
  toLLVM.fuseRows = options.fuseRows;
  if (!runStage(context, *module, [&](OpPassManager &pm) {
        buildLinalgToLLVMPipeline(pm, toLLVM);
      }, cl))
    return diagnosed();

  if (options.stopAfter == Stage::LLVM || options.stopAfter == Stage::Obj) {
    llvm::LLVMContext llvmContext;
    auto llvmModule = translateToLLVMIR(*module, llvmContext);
    if (!llvmModule)
      return llvmModule.takeError();
    if (options.stopAfter == Stage::LLVM) {
      result.outputPath.clear();
      return text([&](llvm::raw_ostream &os) { (*llvmModule)->print(os, nullptr); });
    }
    if (llvm::Error err = emitObjectFile(**llvmModule, result.outputPath, codegen))
      return std::move(err);
    return std::move(result);
  }

  if (llvm::Error err = writeLibrary(*module, iface, result.outputPath, codegen))
    return std::move(err);
  return std::move(result);
}
