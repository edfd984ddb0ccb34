//===- Target.h - Emit lib<name>.so and <name>.h from a kernel --*- C++ -*-===//
//
// The last stage of mirasc: an MLIR module already lowered to the LLVM dialect
// (holding `<name>_kernel` and its `_mlir_ciface_` wrapper) becomes
//   - an optimised host object file (LLVM TargetMachine, O3 pipeline, PIC),
//   - a generated C glue file implementing the miras_abi.h entry points
//     (metadata tables, argument validation, memref descriptors),
//   - a shared library linked by the system C compiler, and
//   - the public header <name>.h (miras_abi.h embedded verbatim + prototypes).
//
// Every failure is returned as a value; nothing here aborts on user input.
// Files the user sees (library, header) are replaced atomically: on failure an
// existing file at the destination is left untouched.
//
//===----------------------------------------------------------------------===//
#ifndef MIRAS_COMPILER_TARGET_H
#define MIRAS_COMPILER_TARGET_H

#include "miras/Compiler/KernelInterface.h"

#include "llvm/ADT/StringRef.h"
#include "llvm/Support/Error.h"

#include <memory>
#include <string>
#include <vector>

namespace llvm {
class LLVMContext;
class Module;
} // namespace llvm

namespace mlir {
class ModuleOp;
} // namespace mlir

namespace miras {

/// How the shared library is linked.
struct LinkOptions {
  /// C compiler to use. Empty: $MIRAS_CC, else clang-22, /usr/lib/llvm-22/bin/clang,
  /// cc, gcc (first found on PATH).
  std::string compiler;
  /// Extra arguments appended to the link command (e.g. "-g", "-L/x", "-lfoo").
  std::vector<std::string> extraArgs;
};

/// How the kernel is compiled to machine code.
struct CodegenOptions {
  /// Target CPU. Empty: the host CPU and its features (fastest, not portable);
  /// "generic": baseline ISA of the host architecture (portable); anything
  /// else: that LLVM CPU name (e.g. "x86-64-v3", "sapphirerapids").
  std::string cpu;
  /// Target features ("+avx2,-avx512f"). Empty with an empty `cpu` means the
  /// host's features; otherwise they are added to what `cpu` implies.
  std::string features;
  /// LLVM optimisation level 0-3 for both the IR pipeline and codegen.
  unsigned optLevel = 3;
  /// Keep the temporary directory (kernel.o, glue.c) and report where it is
  /// on stderr, for debugging the generated code.
  bool keepTemps = false;
  LinkOptions link;
};

/// Checks what generateHeader/generateGlue rely on: moduleName is a C
/// identifier, dk/dv/dims/shapes are positive, state ranks fit
/// MIRAS_MAX_STATE_RANK, channel gate axes are "dk"/"dv" and match their dim.
llvm::Error validateInterface(const KernelInterface &iface);

/// Translates an LLVM-dialect module to LLVM IR and stamps it with the host
/// triple and data layout. MLIR diagnostics are collected into the error.
llvm::Expected<std::unique_ptr<llvm::Module>>
translateToLLVMIR(mlir::ModuleOp module, llvm::LLVMContext &llvmContext);

/// Runs the standard LLVM O<optLevel> pipeline on `module` (in place), then
/// writes a PIC object file for the host (or `options.cpu`) to `path`
/// (atomically).
llvm::Error emitObjectFile(llvm::Module &module, llvm::StringRef path,
                           const CodegenOptions &options);

/// Text of <name>.h: include guard, miras_abi.h verbatim, prototypes of
/// <name>_metadata, <name>_forward and <name>_forward_explicit with the tensor
/// shapes spelled out. Call validateInterface first.
std::string generateHeader(const KernelInterface &iface);

/// Self-contained C99 source (inlines generateHeader's text) defining the
/// metadata, <name>_forward (validation, state copy, memref descriptors, call
/// to _mlir_ciface_<name>_kernel), <name>_forward_explicit and the exported
/// `miras_module_v1` entry table. Call validateInterface first.
std::string generateGlue(const KernelInterface &iface);

/// The C compiler linkSharedLibrary would use (see LinkOptions::compiler).
llvm::Expected<std::string> findCCompiler(const LinkOptions &options);

/// Compiles `glueSourcePath` and links it with `objectPath` into a shared
/// library at `outputPath`. The compiler writes a temporary file next to the
/// output, which is renamed over `outputPath` only on success.
llvm::Error linkSharedLibrary(llvm::StringRef objectPath,
                              llvm::StringRef glueSourcePath,
                              llvm::StringRef outputPath,
                              const LinkOptions &options);

/// The launch description miras-simt-to-gpu left on the forward's gpu.module
/// of `gpuDialectModule` (threads, shared and workspace bytes, kernel names),
/// or with `backward` on the backward's (miras.backward: its float32 kernel
/// only), for CUDA architecture `arch`; ptx and cubin are left empty.
llvm::Expected<KernelInterface::CudaKernels>
describeCudaKernels(mlir::ModuleOp gpuDialectModule, llvm::StringRef arch,
                    bool backward = false);

/// Success when `arch` names a CUDA architecture LLVM's NVPTX backend knows
/// ("sm_90", "sm_90a", "sm_100", ...); otherwise an error listing the form.
llvm::Error checkCudaArch(llvm::StringRef arch);

/// The PTX text of the gpu.binary named `binary` that miras-gpu-to-ptx
/// produced: `<name>_cuda` (the forward's) or `<name>_backward_cuda`.
llvm::Expected<std::string> extractPTX(mlir::ModuleOp module, llvm::StringRef binary);

/// ptxas under `toolkit`/bin, else on PATH; empty when there is none.
std::string findPtxas(llvm::StringRef toolkit);

/// Runs `ptxas -arch=<arch> -O3` on `ptx` and returns the cubin's bytes; the
/// error carries ptxas' messages.
llvm::Expected<std::string> assembleCubin(llvm::StringRef ptx,
                                          llvm::StringRef arch,
                                          llvm::StringRef ptxas);

/// All of the above: validates `iface`, translates, optimises and emits the
/// kernel object (none for a cuda-only library, where `llvmDialectModule`
/// may be null; the CUDA kernels travel in `iface.cuda`), writes the glue, links `libraryPath` (e.g. out/libtoy.so)
/// and then writes `<moduleName>.h` in the same directory. Temporaries live
/// in a fresh directory under the system temp dir and are removed unless
/// `options.keepTemps`. Kernel symbols are given hidden visibility so only the
/// ABI entry points are exported.
llvm::Error writeLibrary(mlir::ModuleOp llvmDialectModule,
                         const KernelInterface &iface,
                         llvm::StringRef libraryPath,
                         const CodegenOptions &options);

} // namespace miras

#endif // MIRAS_COMPILER_TARGET_H
