//===- CudaBinary.cpp - PTX and cubin for the library's CUDA table ---------===//
//
// The GPU half of the target stage (strategy B of PIPELINES.md section 5):
// the PTX that gpu-module-to-binary produced is taken out of the IR, assembled
// to a cubin by ptxas when one is installed, and both are embedded in the
// library as data (CSource.cpp). The runtime loads them lazily.
//
//===----------------------------------------------------------------------===//
#include "miras/Compiler/Target.h"
#include "Tools.h"

#include "mlir/Dialect/GPU/IR/GPUDialect.h"
#include "mlir/IR/BuiltinOps.h"

#include "llvm/ADT/ScopeExit.h"
#include "llvm/ADT/StringExtras.h"
#include "llvm/MC/MCSubtargetInfo.h"
#include "llvm/MC/TargetRegistry.h"
#include "llvm/TargetParser/Triple.h"
#include "llvm/Support/FileSystem.h"
#include "llvm/Support/MemoryBuffer.h"
#include "llvm/Support/Path.h"
#include "llvm/Support/Program.h"

using namespace llvm;

namespace miras {

// The NVPTX backend's registration, from libLLVM (no header declares one
// target's entry points without the others').
extern "C" void LLVMInitializeNVPTXTargetInfo();
extern "C" void LLVMInitializeNVPTXTargetMC();

Error checkCudaArch(StringRef arch) {
  static const bool registered = [] {
    LLVMInitializeNVPTXTargetInfo();
    LLVMInitializeNVPTXTargetMC();
    return true;
  }();
  (void)registered;
  Triple triple("nvptx64-nvidia-cuda");
  std::string error;
  const Target *target = TargetRegistry::lookupTarget(triple, error);
  if (!target)
    return fail("this LLVM has no NVPTX backend: " + error);
  std::unique_ptr<MCSubtargetInfo> info(
      target->createMCSubtargetInfo(triple, arch, ""));
  if (!arch.starts_with("sm_") || !info || !info->isCPUStringValid(arch))
    return fail("--cuda-arch expects a CUDA architecture such as sm_80, sm_90 or "
                "sm_90a, got '" + arch + "'");
  return Error::success();
}

Expected<KernelInterface::CudaKernels>
describeCudaKernels(mlir::ModuleOp gpuDialectModule, StringRef arch, bool backward) {
  for (auto gpuModule : gpuDialectModule.getOps<mlir::gpu::GPUModuleOp>()) {
    if (gpuModule->hasAttr("miras.backward") != backward)
      continue;
    auto number = [&](StringRef name) -> int64_t {
      auto attr = gpuModule->getAttrOfType<mlir::IntegerAttr>(name);
      return attr ? attr.getInt() : -1;
    };
    KernelInterface::CudaKernels cuda;
    cuda.arch = arch.str();
    cuda.blockThreads = number("miras.block_threads");
    cuda.sharedBytes = number("miras.shared_bytes");
    cuda.workspaceBytes = number("miras.workspace_bytes");
    for (auto func : gpuModule.getOps<mlir::gpu::GPUFuncOp>()) {
      if (func.getName().ends_with("_f32"))
        cuda.kernelF32 = func.getName().str();
      else if (func.getName().ends_with("_bf16"))
        cuda.kernelBF16 = func.getName().str();
    }
    if (cuda.blockThreads < 1 || cuda.sharedBytes < 0 || cuda.workspaceBytes < 0 ||
        cuda.kernelF32.empty() || cuda.kernelBF16.empty() != backward)
      return fail("gpu.module '" + gpuModule.getName() +
                  "' was not built by miras-simt-to-gpu (launch attributes or "
                  "kernels missing)");
    return cuda;
  }
  return fail(backward ? "no backward gpu.module to describe" : "no gpu.module to describe");
}

/// The functions the PTX declares but does not define: the driver would
/// refuse to load it.
static SmallVector<StringRef> unresolvedFunctions(StringRef ptx) {
  SmallVector<StringRef> names;
  SmallVector<StringRef> lines;
  ptx.split(lines, '\n');
  for (StringRef line : lines) {
    line = line.trim();
    if (!line.consume_front(".extern .func"))
      continue;
    // ".extern .func  (.param .b32 func_retval0) __nv_expf" -> __nv_expf
    line = line.trim();
    if (line.starts_with("("))
      line = line.split(')').second;
    names.push_back(line.split('(').first.trim());
  }
  return names;
}

Expected<std::string> extractPTX(mlir::ModuleOp module, StringRef name) {
  for (auto binary : module.getOps<mlir::gpu::BinaryOp>()) {
    if (binary.getName() != name)
      continue;
    for (mlir::Attribute attr : binary.getObjects())
      if (auto object = dyn_cast<mlir::gpu::ObjectAttr>(attr))
        if (object.getFormat() == mlir::gpu::CompilationTarget::Assembly) {
          StringRef ptx = object.getObject().getValue();
          SmallVector<StringRef> missing = unresolvedFunctions(ptx);
          if (!missing.empty())
            return fail("the CUDA kernels call " + join(missing, ", ") +
                        ", which come from libdevice in the CUDA toolkit, and it "
                        "was not found: set CUDA_ROOT to the toolkit (the "
                        "directory holding nvvm/libdevice)");
          return ptx.str();
        }
  }
  return fail("no gpu.binary '" + name + "' holding PTX (format=isa) in the module");
}

std::string findPtxas(StringRef toolkit) {
  if (!toolkit.empty()) {
    SmallString<256> path(toolkit);
    sys::path::append(path, "bin", "ptxas");
    if (sys::fs::can_execute(path))
      return path.str().str();
  }
  if (auto onPath = sys::findProgramByName("ptxas"))
    return *onPath;
  return "";
}

Expected<std::string> assembleCubin(StringRef ptx, StringRef arch,
                                    StringRef ptxas) {
  SmallString<128> dir;
  if (std::error_code ec = sys::fs::createUniqueDirectory("miras-ptxas", dir))
    return fail("cannot create a temporary directory", ec);
  scope_exit cleanup([&] { sys::fs::remove_directories(dir); });
  SmallString<256> ptxPath(dir), cubinPath(dir);
  sys::path::append(ptxPath, "kernels.ptx");
  sys::path::append(cubinPath, "kernels.cubin");
  {
    std::error_code ec;
    raw_fd_ostream out(ptxPath, ec);
    if (ec)
      return fail("cannot write '" + ptxPath + "'", ec);
    out << ptx;
  }
  if (Error e = runTool("ptxas", ptxas,
                        {ptxas.str(), "-arch=" + arch.str(), "-O3",
                         ptxPath.str().str(), "-o", cubinPath.str().str()}))
    return std::move(e);
  auto cubin = MemoryBuffer::getFile(cubinPath, /*IsText=*/false);
  if (!cubin)
    return fail("ptxas wrote no cubin: " + cubin.getError().message());
  return (*cubin)->getBuffer().str();
}

} // namespace miras
