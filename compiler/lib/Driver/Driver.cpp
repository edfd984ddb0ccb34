//===- Driver.cpp - mirasc: the command line over compileModule ----------===//
//
// Parses mirasc's options into CompileOptions (Compile.h, where the stages
// and every option's check live), compiles, and writes a text stage to -o or
// stdout.
//
//===----------------------------------------------------------------------===//
#include "miras/Compiler/Driver.h"
#include "miras/Compiler/Compile.h"
#include "miras/Dialect/Miras/Choices/Choice.h"

#include "mlir/IR/AsmState.h"
#include "mlir/IR/MLIRContext.h"
#include "mlir/Pass/PassManager.h"
#include "mlir/Support/FileUtilities.h"
#include "llvm/Support/CommandLine.h"
#include "llvm/Support/InitLLVM.h"
#include "llvm/Support/MemoryBuffer.h"
#include "llvm/Support/ToolOutputFile.h"
#include "llvm/Support/raw_ostream.h"

using namespace mlir;
using namespace miras;
namespace cl = llvm::cl;

namespace {

cl::OptionCategory category("mirasc options");

cl::opt<std::string> inputFile(cl::Positional, cl::desc("<file.miras>"),
                               cl::cat(category));
cl::opt<bool> describeChoicesFlag(
    "describe-choices",
    cl::desc("Print every memory, bias, retention and optimizer with its "
             "arguments and math (docs/CHOICES.md), then exit"),
    cl::cat(category));
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
        clEnumValN(Stage::Backward, "backward",
                   "+ the reverse step (adjoints of every step input)"),
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
cl::opt<bool> backwardFlag(
    "backward",
    cl::desc("Also build the backward kernel and <name>_backward, the adjoints "
             "of a whole sequence (CPU); with --emit=rule: print the "
             "reverse step's rule (the adjoint of every step input)"),
    cl::cat(category));
cl::opt<int64_t> backwardSegment(
    "backward-segment",
    cl::desc("With --backward: tokens the backward kernel recomputes at a time "
             "(memory: ceil(T/S) + S states per batch and head; rounded up to a "
             "multiple of the chunk). Default: the most states, a multiple of 8 "
             "up to 64, that take at most 6 MiB (Titans at D = 64: 24, TTT-MLP: "
             "48), or 32 where not even 16 do"),
    cl::cat(category));
cl::opt<bool> backwardAdjointsInPlace(
    "backward-adjoints-in-place",
    cl::desc("With --backward: write each new state adjoint over the old one "
             "where that is safe (default); =false: into a second buffer, as "
             "for a module where it is not (tests and debugging)"),
    cl::init(true), cl::Hidden, cl::cat(category));
cl::opt<bool> backwardFuseRows(
    "backward-fuse-rows",
    cl::desc("With --backward: fuse the reverse sweep's ops over the rows of "
             "each matrix into one loop, the rows' block chosen per loop "
             "(default); =false: leave them unfused (for measuring it)"),
    cl::init(true), cl::Hidden, cl::cat(category));
cl::opt<bool> fuseRows(
    "fuse-rows",
    cl::desc("CPU kernels: one loop over the rows of a matrix for the ops that "
             "read or write it row by row (each row read once while in L1). "
             "Off by default: it pays for some modules' forward and costs "
             "others' (docs/TRAINING.md, Speed)"),
    cl::init(false), cl::cat(category));
cl::opt<bool> keepTemps("keep-temps",
                        cl::desc("Keep the generated glue and object files"),
                        cl::cat(category));

int fail(const llvm::Twine &message) {
  llvm::errs() << "mirasc: error: " << message << "\n";
  return 1;
}

/// Writes `text` to the -o file or stdout.
int writeText(llvm::StringRef text) {
  std::string error;
  auto out = openOutputFile(outputFile.empty() ? std::string("-") : outputFile.getValue(), &error);
  if (!out)
    return fail(error);
  out->os() << text;
  out->keep();
  return 0;
}

/// The command line as CompileOptions; an error names the bad option.
llvm::Expected<CompileOptions> readOptions() {
  CompileOptions options;
  options.sourceName = inputFile;
  options.stopAfter = emit;
  for (const std::string &d : defines) {
    size_t eq = d.find('=');
    if (eq == std::string::npos || eq == 0)
      return llvm::createStringError("-D expects NAME=VALUE, got '-D" + d + "'");
    options.params[d.substr(0, eq)] = d.substr(eq + 1);
  }
  if (chunkOverride.getNumOccurrences())
    options.chunk = chunkOverride.getValue();
  auto parsedAlgorithm = parseAlgorithm(algorithm);
  if (!parsedAlgorithm)
    return parsedAlgorithm.takeError();
  options.algorithm = *parsedAlgorithm;
  auto targets = parseTargets(targetList);
  if (!targets)
    return targets.takeError();
  options.targets = *targets;
  options.cudaArch = cudaArch;
  options.gpuThreads = gpuThreads;
  options.cpu = targetCpu;
  if (simtOnCpu && cudaOnCpu)
    return llvm::createStringError("--simt-on-cpu and --cuda-on-cpu are two "
                                   "different checks; pick one");
  options.gpuCheck = simtOnCpu   ? GpuCheck::SimtOnCpu
                     : cudaOnCpu ? GpuCheck::CudaOnCpu
                                 : GpuCheck::None;
  options.keepTemps = keepTemps;
  options.fuseRows = fuseRows;
  options.backwardAdjointsInPlace = backwardAdjointsInPlace;
  options.backwardFuseRows = backwardFuseRows;
  if (backwardFlag && emit < Stage::Rule)
    return llvm::createStringError("--backward goes with --emit=rule, linalg, llvm, "
                                   "obj or lib (--emit=backward prints the reverse "
                                   "step's IR)");
  if (backwardSegment.getNumOccurrences() && !backwardFlag)
    return llvm::createStringError("--backward-segment goes with --backward");
  if (backwardAdjointsInPlace.getNumOccurrences() && !backwardFlag)
    return llvm::createStringError("--backward-adjoints-in-place goes with --backward");
  if (backwardFuseRows.getNumOccurrences() && !backwardFlag)
    return llvm::createStringError("--backward-fuse-rows goes with --backward");
  options.backwardRule = backwardFlag && emit == Stage::Rule;
  options.backward = backwardFlag && emit != Stage::Rule;
  if (backwardSegment.getNumOccurrences())
    options.backwardSegment = backwardSegment;
  options.passManagerCommandLine = true;
  if (emit == Stage::Obj || emit == Stage::Lib)
    options.outputPath = outputFile;
  return options;
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
  if (describeChoicesFlag)
    return writeText(choices::describeChoices());
  if (inputFile.empty())
    return fail("no input file (usage: mirasc <file.miras> [options])");
  auto options = readOptions();
  if (!options)
    return fail(llvm::toString(options.takeError()));
  auto buffer = llvm::MemoryBuffer::getFileOrSTDIN(inputFile, /*IsText=*/true);
  if (!buffer)
    return fail("cannot read '" + inputFile + "': " + buffer.getError().message());
  auto result = compileModule((*buffer)->getBuffer(), *options, llvm::errs());
  if (!result) {
    std::string message = llvm::toString(result.takeError());
    return message.empty() ? 1 : fail(message);
  }
  return result->outputPath.empty() ? writeText(result->text) : 0;
}
