//===- Codegen.cpp - LLVM IR, object file, shared library -----------------===//
//
// Host code generation for compiled miras modules. See Target.h.
//
//===----------------------------------------------------------------------===//

#include "miras/Compiler/Target.h"
#include "Tools.h"

#include "mlir/IR/BuiltinOps.h"
#include "mlir/IR/Diagnostics.h"
#include "mlir/IR/MLIRContext.h"
#include "mlir/Target/LLVMIR/Dialect/Builtin/BuiltinToLLVMIRTranslation.h"
#include "mlir/Target/LLVMIR/Dialect/LLVMIR/LLVMToLLVMIRTranslation.h"
#include "mlir/Target/LLVMIR/Export.h"

#include "llvm/ADT/ScopeExit.h"
#include "llvm/Analysis/TargetLibraryInfo.h"
#include "llvm/IR/LLVMContext.h"
#include "llvm/IR/LegacyPassManager.h"
#include "llvm/IR/Module.h"
#include "llvm/IR/Verifier.h"
#include "llvm/MC/MCSubtargetInfo.h"
#include "llvm/MC/TargetRegistry.h"
#include "llvm/Passes/PassBuilder.h"
#include "llvm/Support/FileSystem.h"
#include "llvm/Support/MemoryBuffer.h"
#include "llvm/Support/Path.h"
#include "llvm/Support/Process.h"
#include "llvm/Support/Program.h"
#include "llvm/Support/TargetSelect.h"
#include "llvm/Support/raw_ostream.h"
#include "llvm/Target/TargetMachine.h"
#include "llvm/Target/TargetOptions.h"
#include "llvm/TargetParser/Host.h"
#include "llvm/TargetParser/SubtargetFeature.h"

using namespace llvm;

namespace miras {
namespace {

bool initNativeTarget() {
  // Registration is global and idempotent, but not free; do it once.
  static const bool ok = !InitializeNativeTarget() &&
                         !InitializeNativeTargetAsmPrinter();
  return ok;
}

Expected<std::unique_ptr<TargetMachine>>
createTargetMachine(const Triple &triple, const CodegenOptions &options) {
  if (!initNativeTarget())
    return fail("the LLVM native target is not available in this build");
  std::string err;
  const Target *target = TargetRegistry::lookupTarget(triple, err);
  if (!target)
    return fail("no LLVM target for '" + triple.str() + "': " + err);

  std::string cpu = options.cpu, features = options.features;
  if (cpu.empty()) {
    cpu = sys::getHostCPUName().str();
    // The CPU name alone may claim features the OS has disabled (e.g. AVX-512
    // state not enabled), so take the host's actual feature list too.
    if (features.empty()) {
      SubtargetFeatures f;
      for (const auto &kv : sys::getHostCPUFeatures())
        f.AddFeature(kv.first(), kv.second);
      features = f.getString();
    }
  } else {
    // Without this check LLVM merely warns on stderr and uses a default CPU.
    std::unique_ptr<MCSubtargetInfo> sti(
        target->createMCSubtargetInfo(triple, "", ""));
    if (sti && !sti->isCPUStringValid(cpu))
      return fail("unknown CPU '" + cpu + "' for target '" + triple.str() + "'");
  }

  CodeGenOptLevel level = options.optLevel == 0   ? CodeGenOptLevel::None
                          : options.optLevel == 1 ? CodeGenOptLevel::Less
                          : options.optLevel == 2 ? CodeGenOptLevel::Default
                                                  : CodeGenOptLevel::Aggressive;
  TargetOptions targetOptions;
  // a * b + c as one FMA wherever the instruction selector finds one, as CUDA
  // compilers do by default: the kernels' element-wise bodies recompute outer
  // products lazily (dW' + do q^T, ...), a multiply feeding an add per element.
  // Measured (B*H = 16, one thread, interleaved rounds): the backward 4-7%
  // faster (Gated DeltaNet D = 64, GLA, TTT-MLP), the forward unchanged.
  targetOptions.AllowFPOpFusion = FPOpFusion::Fast;
  std::unique_ptr<TargetMachine> tm(target->createTargetMachine(
      triple, cpu, features, targetOptions, Reloc::PIC_, std::nullopt, level));
  if (!tm)
    return fail("cannot create a target machine for '" + triple.str() + "'");
  return std::move(tm);
}

} // namespace

Error runTool(StringRef what, StringRef program, ArrayRef<std::string> args) {
  SmallString<128> logPath;
  if (std::error_code ec =
          sys::fs::createTemporaryFile("miras-cc", "log", logPath))
    return fail("cannot create a temporary file", ec);
  scope_exit removeLog([&] { sys::fs::remove(logPath); });

  SmallVector<StringRef> argv;
  std::string commandLine;
  for (const std::string &a : args) {
    argv.push_back(a);
    commandLine += (commandLine.empty() ? "" : " ") + a;
  }
  std::optional<StringRef> redirects[] = {StringRef(""), StringRef(logPath),
                                          StringRef(logPath)};
  std::string errMsg;
  bool execFailed = false;
  int rc = sys::ExecuteAndWait(program, argv, std::nullopt, redirects,
                               /*SecondsToWait=*/0, /*MemoryLimit=*/0, &errMsg,
                               &execFailed);
  if (rc == 0)
    return Error::success();
  std::string output;
  if (auto buf = MemoryBuffer::getFile(logPath))
    output = (*buf)->getBuffer().rtrim().str();
  std::string why = execFailed ? "could not be run: " + errMsg
                    : rc < 0   ? "crashed: " + errMsg
                               : "failed with exit status " + std::to_string(rc);
  return fail(what + " " + why + "\n  command: " + commandLine +
              (output.empty() ? "" : "\n" + output));
}

Expected<std::unique_ptr<Module>> translateToLLVMIR(mlir::ModuleOp module,
                                                    LLVMContext &llvmContext) {
  mlir::MLIRContext *ctx = module->getContext();
  mlir::DialectRegistry registry;
  mlir::registerBuiltinDialectTranslation(registry);
  mlir::registerLLVMDialectTranslation(registry);
  ctx->appendDialectRegistry(registry);

  // Turn translation errors into the returned error; let warnings and
  // remarks reach the caller's handler.
  std::string diagnostics;
  std::unique_ptr<Module> llvmModule;
  {
    mlir::ScopedDiagnosticHandler handler(ctx, [&](mlir::Diagnostic &d) {
      if (d.getSeverity() != mlir::DiagnosticSeverity::Error)
        return mlir::failure();
      raw_string_ostream os(diagnostics);
      os << "\n  " << d.getLocation() << ": " << d;
      for (const mlir::Diagnostic &note : d.getNotes())
        os << "\n  " << note.getLocation() << ": note: " << note;
      return mlir::success();
    });
    StringRef name = module.getName() ? *module.getName() : "miras";
    llvmModule = mlir::translateModuleToLLVMIR(module, llvmContext, name);
  }
  if (!llvmModule)
    return fail("cannot translate the module to LLVM IR" +
                (diagnostics.empty() ? std::string(" (no LLVM dialect?)")
                                     : ":" + diagnostics));

  // The data layout depends on the triple only, so a generic machine does.
  Triple triple(sys::getProcessTriple());
  CodegenOptions generic;
  generic.cpu = "generic";
  auto tm = createTargetMachine(triple, generic);
  if (!tm)
    return tm.takeError();
  llvmModule->setTargetTriple(triple);
  llvmModule->setDataLayout((*tm)->createDataLayout());
  return std::move(llvmModule);
}

Error emitObjectFile(Module &module, StringRef path,
                     const CodegenOptions &options) {
  if (options.optLevel > 3)
    return fail("optimisation level must be 0-3, got " + Twine(options.optLevel));
  if (module.getTargetTriple().str().empty())
    module.setTargetTriple(Triple(sys::getProcessTriple()));
  auto tmOr = createTargetMachine(module.getTargetTriple(), options);
  if (!tmOr)
    return tmOr.takeError();
  TargetMachine &tm = **tmOr;
  module.setDataLayout(tm.createDataLayout());

  // Codegen on invalid IR crashes rather than failing, so check first.
  std::string verifyMessage;
  raw_string_ostream verifyOs(verifyMessage);
  if (verifyModule(module, &verifyOs))
    return fail("invalid LLVM IR for module '" + module.getName() +
                "':\n" + verifyMessage);

  // The same new-pass-manager pipeline clang uses at -O<n>, with the target's
  // cost model so vectorisation uses the chosen CPU's vector width.
  {
    PipelineTuningOptions tuning;
    tuning.LoopVectorization = options.optLevel >= 2;
    tuning.SLPVectorization = options.optLevel >= 2;
    LoopAnalysisManager lam;
    FunctionAnalysisManager fam;
    CGSCCAnalysisManager cgam;
    ModuleAnalysisManager mam;
    PassBuilder pb(&tm, tuning);
    TargetLibraryInfoImpl tlii(module.getTargetTriple());
    fam.registerPass([&] { return TargetLibraryAnalysis(tlii); });
    pb.registerModuleAnalyses(mam);
    pb.registerCGSCCAnalyses(cgam);
    pb.registerFunctionAnalyses(fam);
    pb.registerLoopAnalyses(lam);
    pb.crossRegisterProxies(lam, fam, cgam, mam);
    OptimizationLevel level = options.optLevel == 0   ? OptimizationLevel::O0
                              : options.optLevel == 1 ? OptimizationLevel::O1
                              : options.optLevel == 2 ? OptimizationLevel::O2
                                                      : OptimizationLevel::O3;
    ModulePassManager mpm = level == OptimizationLevel::O0
                                ? pb.buildO0DefaultPipeline(level)
                                : pb.buildPerModuleDefaultPipeline(level);
    mpm.run(module, mam);
  }

  // Emit into memory, then replace `path` atomically.
  SmallVector<char, 0> object;
  {
    raw_svector_ostream os(object);
    legacy::PassManager codegen;
    codegen.add(new TargetLibraryInfoWrapperPass(
        TargetLibraryInfoImpl(module.getTargetTriple())));
    if (tm.addPassesToEmitFile(codegen, os, nullptr, CodeGenFileType::ObjectFile))
      return fail("target '" + module.getTargetTriple().str() +
                  "' cannot emit object files");
    codegen.run(module);
  }
  if (Error e = writeToOutput(path, [&](raw_ostream &out) {
        out.write(object.data(), object.size());
        return Error::success();
      }))
    return joinErrors(fail("cannot write object file '" + path + "'"),
                      std::move(e));
  return Error::success();
}

Expected<std::string> findCCompiler(const LinkOptions &options) {
  // An explicit choice must not silently fall back to another compiler.
  std::vector<std::string> candidates;
  if (!options.compiler.empty())
    candidates = {options.compiler};
  else if (std::optional<std::string> env = sys::Process::GetEnv("MIRAS_CC");
           env && !env->empty())
    candidates = {*env};
  else
    candidates = {"clang-22", "/usr/lib/llvm-22/bin/clang", "cc", "gcc"};

  for (const std::string &c : candidates) {
    if (StringRef(c).contains('/')) {
      if (sys::fs::can_execute(c))
        return c;
    } else if (ErrorOr<std::string> found = sys::findProgramByName(c)) {
      return *found;
    }
  }
  return fail("no C compiler found (tried " + join(candidates, ", ") +
              "); set MIRAS_CC");
}

Error linkSharedLibrary(StringRef objectPath, StringRef glueSourcePath,
                        StringRef outputPath, const LinkOptions &options) {
  Expected<std::string> cc = findCCompiler(options);
  if (!cc)
    return cc.takeError();

  // Link into a sibling of the output (same file system, so the final rename
  // is atomic): a failed or interrupted link never clobbers an existing
  // library, and a process that has it dlopen'ed keeps its old inode.
  SmallString<256> tmpPath;
  sys::fs::createUniquePath(outputPath + ".tmp-%%%%%%", tmpPath,
                            /*MakeAbsolute=*/false);
  scope_exit removeTmp([&] { sys::fs::remove(tmpPath); });

  std::vector<std::string> args = {*cc,   "-O2", "-fPIC", "-shared", "-o",
                                   tmpPath.str().str(), glueSourcePath.str()};
  if (!objectPath.empty())
    args.push_back(objectPath.str());
  args.insert(args.end(), options.extraArgs.begin(), options.extraArgs.end());
  args.push_back("-lm");
#ifdef __linux__
  // Report unresolved symbols (e.g. MLIR runtime helpers the kernel should
  // not need) now, not at dlopen time on the user's machine.
  args.push_back("-Wl,-z,defs");
  // The SONAME is the library's file name, so a host program linked against
  // it (the generated header's entry points) finds it again by that name.
  args.push_back(("-Wl,-soname," + sys::path::filename(outputPath)).str());
#endif
  if (Error e = runTool("C compiler", *cc, args))
    return joinErrors(fail("cannot link '" + outputPath + "'"), std::move(e));
  if (!sys::fs::exists(tmpPath))
    return fail("C compiler reported success but wrote no '" + tmpPath + "'");
  if (std::error_code ec = sys::fs::rename(tmpPath, outputPath))
    return fail("cannot move the library to '" + outputPath + "'", ec);
  return Error::success();
}

Error writeLibrary(mlir::ModuleOp llvmDialectModule, const KernelInterface &iface,
                   StringRef libraryPath, const CodegenOptions &options) {
  if (Error e = validateInterface(iface))
    return e;
  std::string entry = "_mlir_ciface_" + iface.kernelName();
  if (iface.hasTarget("cpu") &&
      (!llvmDialectModule || !llvmDialectModule.lookupSymbol(entry)))
    return fail("module has no '" + entry + "' (is `" + iface.kernelName() +
                "` marked llvm.emit_c_interface and lowered to LLVM?)");

  StringRef outDir = sys::path::parent_path(libraryPath);
  if (!outDir.empty())
    if (std::error_code ec = sys::fs::create_directories(outDir))
      return fail("cannot create directory '" + outDir + "'", ec);

  SmallString<128> tmpDir;
  if (std::error_code ec =
          sys::fs::createUniqueDirectory("miras-" + iface.moduleName, tmpDir))
    return fail("cannot create a temporary directory", ec);
  scope_exit cleanup([&] {
    if (options.keepTemps)
      errs() << "mirasc: kept temporary files in " << tmpDir << "\n";
    else
      sys::fs::remove_directories(tmpDir);
  });
  auto tmpFile = [&](StringRef name) {
    SmallString<256> p(tmpDir);
    sys::path::append(p, name);
    return p;
  };

  // A cuda-only library has no host kernel: the glue holds its GPU binary.
  SmallString<256> objectPath;
  if (iface.hasTarget("cpu")) {
    LLVMContext llvmContext;
    auto llvmModule = translateToLLVMIR(llvmDialectModule, llvmContext);
    if (!llvmModule)
      return llvmModule.takeError();
    // Only the ABI entry points (defined in the glue) are exported; the kernel
    // and its helpers stay internal to the library, so two modules loaded into
    // one process cannot interpose each other's symbols.
    for (GlobalValue &gv : (*llvmModule)->global_values())
      if (!gv.isDeclaration() && gv.hasExternalLinkage())
        gv.setVisibility(GlobalValue::HiddenVisibility);

    objectPath = tmpFile("kernel.o");
    if (Error e = emitObjectFile(**llvmModule, objectPath, options))
      return e;
  }

  SmallString<256> gluePath = tmpFile(iface.moduleName + "_glue.c");
  {
    std::error_code ec;
    raw_fd_ostream glue(gluePath, ec, sys::fs::OF_Text);
    if (ec)
      return fail("cannot write '" + gluePath + "'", ec);
    glue << generateGlue(iface);
    glue.close();
    if (glue.has_error())
      return fail("cannot write '" + gluePath + "'", glue.error());
  }

  if (Error e = linkSharedLibrary(objectPath, gluePath, libraryPath, options.link))
    return e;

  // The header goes last so a failed build never leaves a header describing a
  // library that does not exist.
  SmallString<256> headerPath(outDir);
  sys::path::append(headerPath, iface.moduleName + ".h");
  std::string header = generateHeader(iface);
  if (Error e = writeToOutput(headerPath, [&](raw_ostream &os) {
        os << header;
        return Error::success();
      }))
    return joinErrors(fail("cannot write header '" + headerPath + "'"),
                      std::move(e));
  return Error::success();
}

} // namespace miras
