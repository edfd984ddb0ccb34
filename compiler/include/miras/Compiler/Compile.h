//===- Compile.h - Compiling a .miras module, as a library ------*- C++ -*-===//
//
// The compiler as one call: `compileModule(source, options)` runs the stages
// in order (Toy chapter 7 style: the Stage order is the pipeline order) and
// stops after `options.stopAfter`:
//
//   ast      syntax tree of the .miras file
//   mlir     spec-level miras dialect (MLIRGen)
//   derived  + the derived step function (miras-derive)
//   backward + its reverse step @step_backward (miras-backward); with
//            CompileOptions::backward the later stages also build the
//            sequence-level backward kernel from it
//   rule     the derived update rule as math
//   linalg   fused kernel on memrefs (miras-to-linalg)
//   gpu      CUDA kernels in the gpu dialect (miras-linalg-to-simt, miras-to-gpu)
//   ptx      their PTX (miras-gpu-to-ptx)
//   llvm     LLVM IR (miras-linalg-to-llvm, then translation)
//   obj      host object file
//   lib      lib<name>.so + <name>.h
//
// `mirasc` is a thin shell over it; the Python binding calls it too. Every
// option is validated once, by CompileOptions::validate().
//
//===----------------------------------------------------------------------===//
#ifndef MIRAS_COMPILER_COMPILE_H
#define MIRAS_COMPILER_COMPILE_H

#include "miras/Compiler/KernelInterface.h"

#include "llvm/ADT/StringRef.h"
#include "llvm/Support/Error.h"
#include "llvm/Support/raw_ostream.h"

#include <cstdint>
#include <map>
#include <optional>
#include <string>

namespace miras {

enum class Stage {
  AST, MLIR, Derived, Backward, Rule, Linalg, GPU, PTX, LLVM, Obj, Lib
};

/// How the kernel walks a sequence when chunk > 1 (all give the same numbers).
enum class Algorithm {
  Auto,       // the chunked form where it applies and pays off, else sequential
  Sequential, // token by token, gradients at the chunk's anchor
  Chunked,    // per chunk: matrix products over its tokens
};
llvm::Expected<Algorithm> parseAlgorithm(llvm::StringRef name);
llvm::StringRef algorithmName(Algorithm algorithm);

/// What the library runs on.
struct TargetSet {
  bool cpu = true;
  bool cuda = false;
};
/// "cpu", "cuda" or "cpu,cuda".
llvm::Expected<TargetSet> parseTargets(llvm::StringRef list);

/// A check of the CUDA lowering on the CPU (the library's CPU kernel is built
/// from the GPU form instead of the CPU pipeline).
enum class GpuCheck {
  None,
  SimtOnCpu, // the thread-distributed form, each region's threads in turn
  CudaOnCpu, // the CUDA kernel's own code, threads in turn between barriers
};

struct CompileOptions {
  /// The file name diagnostics and the metadata name.
  std::string sourceName = "<input>";
  Stage stopAfter = Stage::Lib;
  /// -DNAME=VALUE overrides of the module's params (VALUE as written).
  std::map<std::string, std::string> params;
  /// Replaces the module's chunk size (SPEC section 7).
  std::optional<int64_t> chunk;
  Algorithm algorithm = Algorithm::Auto;
  TargetSet targets;
  std::string cudaArch = "sm_90";
  /// Threads per CUDA block; 0 picks from the kernel's largest loop.
  int64_t gpuThreads = 0;
  /// CPU to generate code for; empty: this machine, "generic": portable.
  std::string cpu;
  GpuCheck gpuCheck = GpuCheck::None;
  /// With stopAfter = Rule: also the reverse step's rule (the adjoints).
  bool backwardRule = false;
  /// From linalg on: also build the backward kernel (miras-lower-backward-
  /// kernel) and, in the library, <name>_backward (CPU target only).
  bool backward = false;
  /// Tokens per recomputed segment of the backward kernel (S >= 1); unset:
  /// defaultBackwardSegment (64, or 32 for a module with large states).
  std::optional<int64_t> backwardSegment;
  /// false: the backward kernel writes every new state adjoint into a second
  /// buffer (the path of a module whose adjoints cannot be written in place).
  bool backwardAdjointsInPlace = true;
  /// false: the loops of the backward kernel's reverse sweep are not fused
  /// over the rows of its matrices (miras-lower-backward-kernel fuse-rows;
  /// for measuring it).
  bool backwardFuseRows = true;
  /// Fuse the CPU kernel's ops over the rows of a matrix into one loop
  /// (miras-vectorize fuse-rows; docs/TRAINING.md has what it measured).
  bool fuseRows = false;
  bool keepTemps = false;
  /// Where obj / lib go (default: <name>.o, lib<name>.so).
  std::string outputPath;
  /// Apply MLIR's pass-manager command-line options (--mlir-print-ir-after-all,
  /// ...) to every stage; only a tool that registered them (mirasc) sets it.
  bool passManagerCommandLine = false;

  /// The one check of every option; the message names the option as the
  /// command line spells it.
  llvm::Error validate() const;
};

struct CompileResult {
  /// What a text stage printed (ast ... ptx, llvm); empty for obj and lib.
  std::string text;
  /// The file written by obj or lib.
  std::string outputPath;
  /// The library's interface, from the rule stage on.
  KernelInterface kernel;
};

/// Compiles `source`. Located diagnostics (file:line:col with a caret) go to
/// `diagnostics`; a failure after them is an error with an empty message,
/// any other failure an error that says what went wrong.
llvm::Expected<CompileResult> compileModule(llvm::StringRef source,
                                            const CompileOptions &options,
                                            llvm::raw_ostream &diagnostics);

} // namespace miras

#endif
