//===- KernelInterface.h - What a compiled module exposes -------*- C++ -*-===//
//
// Everything the library emitter needs to wrap the MLIR kernel into
// lib<name>.so + <name>.h: the metadata of miras_abi.h and the kernel's
// calling convention. Built by the driver from the derived module.
//
// Kernel calling convention (the MLIR function `<name>_kernel`, compiled with
// `llvm.emit_c_interface`, so C calls `_mlir_ciface_<name>_kernel`): one
// range [begin, end) of flattened (batch, head) pairs b * H + h as two
// int64_t, then one pointer to a strided memref descriptor per argument, in
// this order, all f32,
// identity (C-contiguous) layout, B/T/H dynamic, widths static:
//   q [B,T,H,Dk], k [B,T,H,Dk], v [B,T,H,Dv] (k, v [B,T,H,steps,D] when
//   steps > 1), each gate in `gates` order: scalar [B,T,H], channel
//   [B,T,H,dim], per-step [B,T,H,steps],
//   each state in `states` order: [B,H,shape...] (read and updated in place),
//   o [B,T,H,Dv].
// The kernel returns nothing; the state buffers hold the final state on return.
//
//===----------------------------------------------------------------------===//
#ifndef MIRAS_COMPILER_KERNELINTERFACE_H
#define MIRAS_COMPILER_KERNELINTERFACE_H

#include <algorithm>
#include <cstdint>
#include <optional>
#include <string>
#include <vector>

namespace miras {

struct KernelInterface {
  struct Param {
    std::string name;
    double value = 0.0;
    bool isInteger = true;
  };
  struct Gate {
    std::string name;
    bool channel = false;
    std::string axis; // "dk" | "dv" for channel gates
    int64_t dim = 1;
    bool perStep = false; // one value per step of a multistep module
    /// The declared range (miras_gate_info's range fields); none: any value.
    struct Range {
      double lo = 0, hi = 0; // +-infinity for unbounded ends
      bool loClosed = false, hiClosed = false;
    };
    std::optional<Range> range;
  };
  struct State {
    /// miras_state_role: what the rule carries, or what a chunked module's
    /// continuation needs (an anchor of a weight, the position in the chunk).
    enum class Role { Carried, Anchor, ChunkPosition };
    /// miras_state_init: the declared start when no initial state is given.
    enum class Init { Zeros, Identity, Uniform, Normal };
    std::string name;            // "W"
    std::vector<int64_t> shape;  // per (batch, head), e.g. {dv, dk}
    Role role = Role::Carried;
    int anchorOf = -1;           // Role::Anchor: the index of its weight
    Init init = Init::Zeros;
    double initScale = 0.0;
    uint64_t initSeed = 0;
  };

  std::string moduleName;  // C identifier; prefixes every exported symbol
  std::string sourcePath;  // .miras file it came from
  int64_t dk = 0, dv = 0;
  int64_t chunk = 1;
  int64_t steps = 1; // (k, v) pairs per token (multistep(n))
  bool readAfterWrite = true;
  std::vector<Param> params;
  std::vector<Gate> gates;
  std::vector<State> states;
  std::string rule; // derived update rule, one line per state tensor
  double flopsPerToken = 0; // countStepFlops of the derived step, per head
  std::string algorithm = "sequential"; // or "chunked" (SPEC section 7)
  std::vector<std::string> targets{"cpu"};
  /// 0: no backward kernel; else its segment S (`<name>_backward_kernel`,
  /// BackwardKernelLayout of StepSignature.h; the glue allocates its
  /// checkpoints and segment workspace).
  int64_t backwardSegment = 0;
  /// countBackwardFlops: the reverse step plus one recompute of the state
  /// update, per token and head (0 without a backward).
  double backwardFlopsPerToken = 0;
  /// Whether the CPU forward kernel reads a pair's tokens through strided
  /// views (B = H = 1 over the caller's buffers), which the glue's forward
  /// needs to save checkpoints (miras_forward_args.checkpoints) as calls that
  /// end at segment ends. Not the CUDA kernel run on the CPU (--cuda-on-cpu):
  /// it reads flat, contiguous buffers, so such a library refuses to save.
  bool forwardTakesViews = true;

  /// The CUDA kernels (miras_cuda_binary of miras_abi.h), when targets
  /// names "cuda".
  struct CudaKernels {
    std::string arch;  // "sm_90"
    std::string ptx;
    std::string cubin; // bytes; empty when mirasc ran without ptxas
    std::string kernelF32, kernelBF16;
    int64_t blockThreads = 0, sharedBytes = 0, workspaceBytes = 0;
  };
  std::optional<CudaKernels> cuda;
  /// The backward's CUDA kernel (metadata cuda_backward, ABI 7): with a
  /// backward and a cuda target; kernelF32 only (float32 inputs).
  std::optional<CudaKernels> cudaBackward;

  std::string kernelName() const { return moduleName + "_kernel"; }
  bool hasTarget(const std::string &target) const {
    return std::find(targets.begin(), targets.end(), target) != targets.end();
  }
};

} // namespace miras

#endif // MIRAS_COMPILER_KERNELINTERFACE_H
