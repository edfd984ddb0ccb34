//===- Driver.cpp - The mirasc driver -------------------------------------===//
//
// Runs the stages in order and stops after the one named by --emit (Toy
// chapter 7 style: the enum order is the pipeline order):
//
//   ast      syntax tree of the .miras file
//   mlir     spec-level miras dialect (MLIRGen)
//   derived  + the derived step function (miras-derive)
//   rule     the derived update rule as math
//   linalg   fused sequential kernel on memrefs (miras-to-linalg)
//   gpu      CUDA kernels in the gpu dialect (miras-linalg-to-simt, miras-to-gpu)
//   ptx      their PTX (miras-gpu-to-ptx)
//   llvm     LLVM IR (miras-linalg-to-llvm, then translation)
//   obj      host object file
//   lib      lib<name>.so + <name>.h (default)
//
//===----------------------------------------------------------------------===//
#include "miras/Compiler/Driver.h"
#include "miras/Compiler/KernelInterface.h"
#include "miras/Compiler/Pipelines.h"
#include "miras/Compiler/Target.h"
#include "miras/Dialect/Miras/IR/MirasOps.h"
#include "miras/Dialect/Miras/Transforms/RulePrinter.h"
#include "miras/Dialect/Miras/Transforms/StepCost.h"
#include "miras/Frontend/Frontend.h"
#include "miras/Frontend/MLIRGen.h"

#include "mlir/IR/AsmState.h"
#include "mlir/IR/MLIRContext.h"
#include "mlir/Pass/PassManager.h"
#include "mlir/Support/FileUtilities.h"
#include "llvm/IR/LLVMContext.h"
#include "llvm/IR/Module.h"
#include "llvm/Support/CommandLine.h"
#include "llvm/Support/InitLLVM.h"
#include "llvm/Support/MemoryBuffer.h"
#include "llvm/Support/Path.h"
#include "llvm/Support/SourceMgr.h"
#include "llvm/Support/ToolOutputFile.h"
#include "llvm/Support/raw_ostream.h"

#include <iostream>

using namespace mlir;
using namespace miras;
namespace cl = llvm::cl;

namespace {

enum class Stage { AST, MLIR, Derived, Rule, Linalg, GPU, PTX, LLVM, Obj, Lib };

cl::OptionCategory category("mirasc options");

cl::opt<std::string> inputFile(cl::Positional, cl::desc("<file.miras>"),
                               cl::Required, cl::cat(category));
cl::opt<std::string>
    outputFile("o", cl::desc("Output file (default: lib<name>.so for the "
                             "library, <name>.o for --emit=obj, stdout for "
                             "text stages)"),
               cl::value_desc("path"), cl::cat(category));
cl::opt<Stage> emit(
    "emit", cl::desc("Stop after this stage and write its output"),
    cl::init(Stage::Lib),
    cl::values(
        clEnumValN(Stage::AST, "ast", "syntax tree of the .miras file"),
        clEnumValN(Stage::MLIR, "mlir", "spec-level miras dialect"),
        clEnumValN(Stage::Derived, "derived", "after deriving the update rule"),
        clEnumValN(Stage::Rule, "rule", "the derived update rule as math"),
        clEnumValN(Stage::Linalg, "linalg", "fused kernel in linalg on memrefs"),
        clEnumValN(Stage::GPU, "gpu", "CUDA kernels in the gpu dialect"),
        clEnumValN(Stage::PTX, "ptx", "PTX of the CUDA kernels"),
        clEnumValN(Stage::LLVM, "llvm", "LLVM IR"),
        clEnumValN(Stage::Obj, "obj", "host object file"),
        clEnumValN(Stage::Lib, "lib", "shared library and C header")),
    cl::cat(category));
cl::list<std::string> defines("D", cl::Prefix,
                              cl::desc("Override a param: -DNAME=VALUE"),
                              cl::value_desc("NAME=VALUE"), cl::cat(category));
cl::opt<int64_t> chunkOverride(
    "chunk",
    cl::desc("Override the module's chunk size C (SPEC section 7: gradients at "
             "the state that starts each chunk of C tokens; 1 is exact)"),
    cl::value_desc("C"), cl::init(0), cl::cat(category));
cl::opt<std::string> algorithm(
    "algorithm",
    cl::desc("Kernel algorithm when chunk > 1: auto (chunked where it applies "
             "and, for its dual form, a state has at least 128 x 128 entries; "
             "else sequential), sequential or chunked"),
    cl::init("auto"), cl::cat(category));
cl::opt<std::string> targetCpu(
    "mcpu",
    cl::desc("CPU to generate code for (default: this machine; 'generic' for "
             "a portable library)"),
    cl::cat(category));
cl::opt<std::string> targetList(
    "target",
    cl::desc("What the library runs on: cpu (default), cuda, or cpu,cuda"),
    cl::init("cpu"), cl::cat(category));
cl::opt<std::string> cudaArch(
    "cuda-arch", cl::desc("CUDA architecture of the PTX and cubin"),
    cl::init("sm_90"), cl::cat(category));
cl::opt<int64_t> gpuThreads(
    "gpu-threads",
    cl::desc("Threads per CUDA block (0: picked from the kernel's largest loop)"),
    cl::init(0), cl::cat(category));
cl::opt<bool> simtOnCpu(
    "simt-on-cpu",
    cl::desc("Build the CPU kernel from the CUDA kernel's thread-distributed "
             "form, each block's threads run in turn (last first): checks the "
             "GPU mapping on machines without a GPU"),
    cl::cat(category));
cl::opt<bool> cudaOnCpu(
    "cuda-on-cpu",
    cl::desc("Build the CPU kernel from the CUDA kernel's code itself (after "
             "barriers, shared memory and the workspace are placed), each "
             "block's threads run in turn between barriers: a missing barrier "
             "changes the numbers"),
    cl::cat(category));
cl::opt<bool> keepTemps("keep-temps",
                        cl::desc("Keep the generated glue and object files"),
                        cl::cat(category));

int fail(const llvm::Twine &message) {
  llvm::errs() << "mirasc: error: " << message << "\n";
  return 1;
}

/// Writes `text` to the -o file or stdout.
int writeText(llvm::function_ref<void(llvm::raw_ostream &)> print) {
  std::string error;
  auto out = openOutputFile(outputFile.empty() ? std::string("-") : outputFile.getValue(), &error);
  if (!out)
    return fail(error);
  print(out->os());
  out->keep();
  return 0;
}

/// Runs one named pipeline; false once its errors have been reported.
bool runStage(MLIRContext &context, ModuleOp module,
              llvm::function_ref<void(OpPassManager &)> buildPipeline) {
  PassManager pm(&context);
  buildPipeline(pm);
  return succeeded(applyPassManagerCLOptions(pm)) && succeeded(pm.run(module));
}

/// The ABI description of the module, read from the derived IR.
KernelInterface describe(MemoryModuleOp module, func::FuncOp step) {
  KernelInterface iface;
  iface.moduleName = module.getSymName().str();
  iface.sourcePath = inputFile.getValue();
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
  // Every result of the step but the output is a carried state.
  for (unsigned i = 0; i + 1 < step.getNumResults(); ++i) {
    auto name = step.getResultAttrOfType<StringAttr>(i, "miras.name");
    auto type = cast<RankedTensorType>(step.getResultTypes()[i]);
    iface.states.push_back(
        {name.str(), std::vector<int64_t>(type.getShape().begin(), type.getShape().end())});
  }
  iface.rule = printUpdateRule(step);
  iface.flopsPerToken = countStepFlops(step);
  return iface;
}

int compile(const std::string &source) {
  std::map<std::string, std::string> defineMap;
  for (const std::string &d : defines) {
    size_t eq = d.find('=');
    if (eq == std::string::npos || eq == 0)
      return fail("-D expects NAME=VALUE, got '-D" + d + "'");
    defineMap[d.substr(0, eq)] = d.substr(eq + 1);
  }

  frontend::LoadResult loaded = frontend::loadModule(inputFile, source, defineMap);
  frontend::printDiagnostics(std::cerr, loaded.diagnostics, source);
  if (!loaded.ok())
    return 1;
  if (chunkOverride.getNumOccurrences()) {
    if (chunkOverride < 1 || chunkOverride > 65536)
      return fail("--chunk expects a size between 1 and 65536, got " +
                  llvm::Twine(chunkOverride.getValue()));
    if (loaded.resolved->steps > 1 && chunkOverride != 1)
      return fail("--chunk=" + llvm::Twine(chunkOverride.getValue()) +
                  ": multistep modules need chunk 1 (each token takes its "
                  "steps at the current state)");
    loaded.resolved->chunk = chunkOverride;
  }
  if (emit == Stage::AST)
    return writeText([&](llvm::raw_ostream &os) {
      os << frontend::dumpAST(*loaded.syntax);
    });

  DialectRegistry registry;
  registerMirasDialects(registry);
  MLIRContext context(registry);
  // A located error is the message for a user; the op dump is for miras-opt.
  context.printOpOnDiagnostic(false);
  llvm::SourceMgr sourceMgr;
  sourceMgr.AddNewSourceBuffer(
      llvm::MemoryBuffer::getMemBufferCopy(source, inputFile), llvm::SMLoc());
  SourceMgrDiagnosticHandler diagnostics(sourceMgr, &context);

  OwningOpRef<ModuleOp> module = mlirGen(context, *loaded.resolved);
  if (!module)
    return 1;
  auto print = [&](llvm::raw_ostream &os) { module->print(os); };
  if (emit == Stage::MLIR)
    return writeText(print);

  if (!runStage(context, *module, buildDerivePipeline))
    return 1;
  if (emit == Stage::Derived)
    return writeText(print);
  auto memoryModule = *module->getOps<MemoryModuleOp>().begin();
  auto step = cast<func::FuncOp>(SymbolTable::lookupSymbolIn(memoryModule, "step"));
  KernelInterface iface = describe(memoryModule, step);
  if (emit == Stage::Rule)
    return writeText([&](llvm::raw_ostream &os) { os << iface.rule; });

  if (algorithm != "auto" && algorithm != "sequential" && algorithm != "chunked")
    return fail("--algorithm expects auto, sequential or chunked, got '" +
                algorithm + "'");
  iface.targets.clear();
  for (llvm::StringRef target : llvm::split(targetList.getValue(), ',')) {
    if (target != "cpu" && target != "cuda")
      return fail("--target expects cpu, cuda or cpu,cuda, got '" + targetList + "'");
    if (!iface.hasTarget(target.str()))
      iface.targets.push_back(target.str());
  }
  if (llvm::Error err = checkCudaArch(cudaArch))
    return fail(llvm::toString(std::move(err)));
  if (gpuThreads < 0 || gpuThreads > 1024)
    return fail("--gpu-threads expects 0 (automatic) to 1024, got " +
                llvm::Twine(gpuThreads.getValue()));
  ToLinalgOptions toLinalg;
  toLinalg.algorithm = algorithm.getValue();
  if (!runStage(context, *module, [&](OpPassManager &pm) {
        buildToLinalgPipeline(pm, toLinalg);
      }))
    return 1;
  if (auto kernel = module->lookupSymbol<func::FuncOp>(iface.kernelName()))
    if (auto built = kernel->getAttrOfType<StringAttr>("miras.algorithm"))
      iface.algorithm = built.str();
  if (emit == Stage::Linalg)
    return writeText(print);

  SimtOptions simt;
  simt.threads = gpuThreads.getValue();
  const bool gpuStage = emit == Stage::GPU || emit == Stage::PTX;
  if (gpuStage || iface.hasTarget("cuda")) {
    OwningOpRef<ModuleOp> gpu = module->clone();
    if (!runStage(context, *gpu, [&](OpPassManager &pm) {
          buildLinalgToSimtPipeline(pm, simt);
          buildSimtToGPUPipeline(pm, simt);
        }))
      return 1;
    if (emit == Stage::GPU)
      return writeText([&](llvm::raw_ostream &os) { gpu->print(os); });
    auto cuda = describeCudaKernels(*gpu, cudaArch);
    if (!cuda)
      return fail(llvm::toString(cuda.takeError()));
    GPUToPTXOptions toPTX;
    toPTX.chip = cudaArch.getValue();
    toPTX.toolkit = findCudaToolkit();
    if (!runStage(context, *gpu, [&](OpPassManager &pm) {
          buildGPUToPTXPipeline(pm, toPTX);
        }))
      return 1;
    auto ptx = extractPTX(*gpu);
    if (!ptx)
      return fail(llvm::toString(ptx.takeError()));
    if (emit == Stage::PTX)
      return writeText([&](llvm::raw_ostream &os) { os << *ptx; });
    cuda->ptx = std::move(*ptx);
    // Without ptxas the library carries PTX only; the driver JIT-compiles it.
    if (std::string ptxas = findPtxas(toPTX.toolkit); !ptxas.empty()) {
      auto cubin = assembleCubin(cuda->ptx, cudaArch, ptxas);
      if (!cubin)
        return fail(llvm::toString(cubin.takeError()));
      cuda->cubin = std::move(*cubin);
    }
    iface.cuda = std::move(*cuda);
  }

  CodegenOptions codegen;
  codegen.cpu = targetCpu;
  codegen.keepTemps = keepTemps;
  if (!iface.hasTarget("cpu")) {
    if (emit == Stage::LLVM || emit == Stage::Obj)
      return fail("--emit=llvm and --emit=obj show the CPU kernel; add cpu to "
                  "--target");
    std::string path =
        outputFile.empty() ? "lib" + iface.moduleName + ".so" : outputFile;
    if (llvm::Error err = writeLibrary(nullptr, iface, path, codegen))
      return fail(llvm::toString(std::move(err)));
    return 0;
  }
  if (simtOnCpu && cudaOnCpu)
    return fail("--simt-on-cpu and --cuda-on-cpu are two different checks; "
                "pick one");
  // On the CPU the threads of a region run one after another; backwards, so
  // that a region whose result depends on that order gives other numbers
  // (miras-gpu-lockstep reverses them itself, after the GPU lowering).
  if (simtOnCpu) {
    simt.reverseThreads = true;
    if (!runStage(context, *module, [&](OpPassManager &pm) {
          buildLinalgToSimtPipeline(pm, simt);
        }))
      return 1;
  }
  if (cudaOnCpu && !runStage(context, *module, [&](OpPassManager &pm) {
        buildCudaOnCpuPipeline(pm, simt);
      }))
    return 1;

  LinalgToLLVMOptions toLLVM;
  toLLVM.vectorWidth = vectorWidthForCPU(targetCpu);
  if (!runStage(context, *module, [&](OpPassManager &pm) {
        buildLinalgToLLVMPipeline(pm, toLLVM);
      }))
    return 1;

  if (emit == Stage::LLVM || emit == Stage::Obj) {
    llvm::LLVMContext llvmContext;
    auto llvmModule = translateToLLVMIR(*module, llvmContext);
    if (!llvmModule)
      return fail(llvm::toString(llvmModule.takeError()));
    if (emit == Stage::LLVM)
      return writeText([&](llvm::raw_ostream &os) { (*llvmModule)->print(os, nullptr); });
    std::string path = outputFile.empty() ? iface.moduleName + ".o" : outputFile;
    if (llvm::Error err = emitObjectFile(**llvmModule, path, codegen))
      return fail(llvm::toString(std::move(err)));
    return 0;
  }

  std::string path =
      outputFile.empty() ? "lib" + iface.moduleName + ".so" : outputFile;
  if (llvm::Error err = writeLibrary(*module, iface, path, codegen))
    return fail(llvm::toString(std::move(err)));
  return 0;
}

} // namespace

int miras::runMirasc(int argc, char **argv) {
  llvm::InitLLVM init(argc, argv);
  // --mlir-print-debuginfo, --mlir-print-ir-after-all, ... for looking inside.
  registerAsmPrinterCLOptions();
  registerMLIRContextCLOptions();
  registerPassManagerCLOptions();
  // --help lists mirasc's own options; LLVM's and MLIR's (hundreds) stay
  // usable and are listed by --help-hidden.
  cl::HideUnrelatedOptions(category);
  cl::ParseCommandLineOptions(
      argc, argv,
      "mirasc: compiles a .miras memory module to a shared library\n\n"
      "  mirasc deltanet.miras -o libdeltanet.so     library + deltanet.h\n"
      "  mirasc deltanet.miras --emit=derived -DD=16  inspect a stage\n");
  auto buffer = llvm::MemoryBuffer::getFileOrSTDIN(inputFile, /*IsText=*/true);
  if (!buffer)
    return fail("cannot read '" + inputFile + "': " + buffer.getError().message());
  return compile((*buffer)->getBuffer().str());
}
