//===- GPULockstep.cpp - A CUDA kernel's code run on the CPU ---------------===//
//
// `miras-gpu-lockstep` (see Passes.td): the check of everything
// miras-simt-to-gpu decides (barriers, block and thread ids, shared-memory
// views and padding, workspace offsets) that --simt-on-cpu cannot see,
// because it runs the code before those decisions.
//
//===----------------------------------------------------------------------===//
#include "SimtForm.h"
#include "miras/Dialect/Miras/IR/StepSignature.h"

#include "miras/Compiler/Passes.h"

#include "mlir/Dialect/Arith/IR/Arith.h"
#include "mlir/Dialect/GPU/IR/GPUDialect.h"
#include "mlir/Dialect/MemRef/IR/MemRef.h"
#include "mlir/Dialect/SCF/IR/SCF.h"
#include "mlir/IR/IRMapping.h"
#include "mlir/Interfaces/SideEffectInterfaces.h"

#include "llvm/ADT/DenseSet.h"

namespace miras {
#define GEN_PASS_DEF_MIRASGPULOCKSTEP
#include "miras/Compiler/Passes.h.inc"
} // namespace miras

using namespace mlir;
using namespace miras;

namespace {

bool containsBarrier(Operation *op) {
  return op->walk([](gpu::BarrierOp) { return WalkResult::interrupt(); })
      .wasInterrupted();
}

/// Splits uniform code into segments between barriers and runs each segment
/// for every thread in turn (last thread first).
class Lockstep {
public:
  Lockstep(func::FuncOp host, Value tid, int64_t threads)
      : host(host), tid(tid), threads(threads) {}

  /// A value computed from the thread id without touching memory (`tid == 0`,
  /// CSE'd between several thread-0 regions) differs per thread, so it cannot
  /// cross a barrier through a slot: each user gets its own copy, in its own
  /// segment. Chains are copied from their last link back.
  void copyThreadValuesPerUser(Operation *root) {
    llvm::DenseSet<Value> perThread{tid};
    SmallVector<Operation *> chain;
    root->walk<WalkOrder::PreOrder>([&](Operation *op) {
      if (op->getNumRegions() == 0 && isMemoryEffectFree(op) &&
          llvm::any_of(op->getOperands(), [&](Value v) { return perThread.contains(v); })) {
        chain.push_back(op);
        for (Value r : op->getResults())
          perThread.insert(r);
      }
    });
    for (Operation *op : llvm::reverse(chain)) {
      for (OpOperand &use : llvm::make_early_inc_range(op->getUses())) {
        Operation *user = op->getBlock()->findAncestorOpInBlock(*use.getOwner());
        OpBuilder b(user);
        Operation *copy = b.clone(*op);
        use.set(copy->getResult(cast<OpResult>(use.get()).getResultNumber()));
      }
      op->erase();
    }
  }

  LogicalResult run(Block &block) {
    SmallVector<Operation *> segment;
    for (Operation &op : llvm::make_early_inc_range(block)) {
      if (op.hasTrait<OpTrait::IsTerminator>() || isa<gpu::BarrierOp>(op)) {
        if (failed(flush(segment, &op)))
          return failure();
        if (isa<gpu::BarrierOp>(op))
          op.erase();
        continue;
      }
      if (tid.getDefiningOp() == &op)
        continue;
      if (containsBarrier(&op)) { // uniform control flow around barriers
        if (failed(flush(segment, &op)))
          return failure();
        for (Region &region : op.getRegions())
          for (Block &inner : region)
            if (failed(run(inner)))
              return failure();
        continue;
      }
      if (hoistable(&op))
        continue; // runs once, where it is
      segment.push_back(&op);
      for (Value result : op.getResults())
        pending.insert(result);
    }
    return success();
  }

private:
  /// Touches no memory and reads neither the thread id nor a value of the
  /// segment being collected: the same on every thread, so it runs once.
  bool hoistable(Operation *op) {
    if (!isMemoryEffectFree(op))
      return false;
    return !op->walk([&](Operation *inner) {
                for (Value v : inner->getOperands())
                  if (v == tid || pending.contains(v))
                    return WalkResult::interrupt();
                return WalkResult::advance();
              }).wasInterrupted();
  }

  /// `for t in threads-1 .. 0 { segment }` before `at`; values the segment
  /// passes on go through slots.
  LogicalResult flush(SmallVector<Operation *> &segment, Operation *at) {
    if (segment.empty())
      return success();
    Location loc = at->getLoc();
    OpBuilder b(at);
    Value zero = arith::ConstantIndexOp::create(b, loc, 0);
    Value one = arith::ConstantIndexOp::create(b, loc, 1);
    Value count = arith::ConstantIndexOp::create(b, loc, threads);
    auto loop = scf::ForOp::create(b, loc, zero, count, one);
    OpBuilder inner = OpBuilder::atBlockBegin(loop.getBody());
    Value thread = arith::SubIOp::create(
        inner, loc, arith::ConstantIndexOp::create(inner, loc, threads - 1),
        loop.getInductionVar());
    for (Operation *op : segment)
      op->moveBefore(loop.getBody()->getTerminator());
    tid.replaceUsesWithIf(thread, [&](OpOperand &use) {
      return loop->isProperAncestor(use.getOwner());
    });
    b.setInsertionPointAfter(loop);
    for (Operation *op : segment)
      for (Value result : op->getResults()) {
        auto outside = [&](OpOperand &use) {
          return !loop->isProperAncestor(use.getOwner());
        };
        if (llvm::none_of(result.getUses(), outside))
          continue;
        if (!result.getType().isIntOrIndexOrFloat())
          return op->emitOpError("passes a ")
                 << result.getType() << " across a barrier; only scalars can be";
        OpBuilder entry = OpBuilder::atBlockBegin(&host.getBody().front());
        Value slot = memref::AllocaOp::create(entry, loc,
                                              MemRefType::get({}, result.getType()));
        OpBuilder store(op->getContext());
        store.setInsertionPointAfter(op);
        memref::StoreOp::create(store, loc, result, slot);
        Value shared = memref::LoadOp::create(b, loc, slot);
        result.replaceUsesWithIf(shared, outside);
      }
    segment.clear();
    pending.clear();
    return success();
  }

  func::FuncOp host;
  Value tid;
  int64_t threads;
  llvm::DenseSet<Value> pending; // results of the segment being collected
};

struct GPULockstepPass
    : public miras::impl::MirasGPULockstepBase<GPULockstepPass> {
  void runOnOperation() override {
    ModuleOp module = getOperation();
    for (auto gpuModule : llvm::make_early_inc_range(module.getOps<gpu::GPUModuleOp>())) {
      if (failed(replaceKernel(module, gpuModule)))
        return signalPassFailure();
      gpuModule.erase();
    }
    module->removeAttr(gpu::GPUDialect::getContainerModuleAttrName());
  }

  LogicalResult replaceKernel(ModuleOp module, gpu::GPUModuleOp gpuModule) {
    StringRef name = gpuModule.getName();
    if (!name.consume_back("_cuda"))
      return gpuModule.emitOpError("was not built by miras-simt-to-gpu");
    auto host = module.lookupSymbol<func::FuncOp>((name + "_kernel").str());
    auto kernel = gpuModule.lookupSymbol<gpu::GPUFuncOp>((name + "_f32").str());
    auto number = [&](StringRef attr) {
      auto value = gpuModule->getAttrOfType<IntegerAttr>(attr);
      return value ? value.getInt() : -1;
    };
    int64_t threads = number("miras.block_threads");
    int64_t sharedBytes = number("miras.shared_bytes");
    int64_t workspaceBytes = number("miras.workspace_bytes");
    if (!host || !kernel || threads < 1 || sharedBytes < 0 || workspaceBytes < 0)
      return gpuModule.emitOpError("needs its kernel kept (miras-simt-to-gpu "
                                   "keep-kernel) and its launch attributes");

    // The host kernel's old body goes; its arguments stay.
    Block &body = host.getBody().front();
    for (Operation &op : llvm::make_early_inc_range(llvm::reverse(body))) {
      op.dropAllUses();
      op.erase();
    }
    Location loc = host.getLoc();
    OpBuilder b = OpBuilder::atBlockEnd(&body);
    Value q = host.getArgument(KernelLayout::query);
    auto dim = [&](int64_t d) {
      return memref::DimOp::create(b, loc, q, d).getResult();
    };
    Value B = dim(0), T = dim(1), H = dim(2);
    IRMapping map;
    Block &entry = kernel.getBody().front();
    auto toI64 = [&](Value v) {
      return arith::IndexCastOp::create(b, loc, b.getI64Type(), v).getResult();
    };
    map.map(entry.getArgument(0), toI64(B));
    map.map(entry.getArgument(1), toI64(T));
    map.map(entry.getArgument(2), toI64(H));
    // A backward kernel's first_pair: the host's range starts its blocks'
    // checkpoints and segments.
    const bool backward = gpuModule->hasAttr(kBackwardModuleAttr);
    if (backward)
      map.map(entry.getArgument(3), toI64(host.getArgument(KernelLayout::pairBegin)));
    const unsigned firstTensor = backward ? 4 : 3;
    // Flat pointers: the kernel reinterprets them with their shapes again. A
    // backward's checkpoints_given is not one: the CUDA kernel computes its
    // checkpoints whatever the host says (SimtToGPU).
    const unsigned numTensors = host.getNumArguments() - (backward ? 1 : 0);
    for (unsigned i = KernelLayout::query; i < numTensors; ++i) {
      BlockArgument param = entry.getArgument(firstTensor + i - KernelLayout::query);
      Value flat = memref::ReinterpretCastOp::create(
          b, loc, cast<MemRefType>(param.getType()), host.getArgument(i),
          b.getIndexAttr(0), ArrayRef<OpFoldResult>{b.getIndexAttr(1)},
          ArrayRef<OpFoldResult>{b.getIndexAttr(1)});
      map.map(param, flat);
    }
    Value workspace;
    if (workspaceBytes > 0) {
      Value bytes = arith::MulIOp::create(
          b, loc, arith::MulIOp::create(b, loc, B, H),
          arith::ConstantIndexOp::create(b, loc, workspaceBytes));
      workspace = memref::AllocOp::create(
          b, loc, MemRefType::get({ShapedType::kDynamic}, b.getI8Type()), bytes);
      map.map(entry.getArguments().back(),
              memref::ReinterpretCastOp::create(
                  b, loc, MemRefType::get({1}, b.getI8Type()), workspace,
                  b.getIndexAttr(0), ArrayRef<OpFoldResult>{b.getIndexAttr(1)},
                  ArrayRef<OpFoldResult>{b.getIndexAttr(1)}));
    } else {
      map.map(entry.getArguments().back(),
              memref::AllocaOp::create(b, loc, MemRefType::get({1}, b.getI8Type())));
    }
    // Shared memory: one stack buffer, reused by every block in turn.
    Value shared = memref::CastOp::create(
        b, loc, MemRefType::get({ShapedType::kDynamic}, b.getI8Type()),
        memref::AllocaOp::create(
            b, loc, MemRefType::get({std::max<int64_t>(sharedBytes, 1)}, b.getI8Type())));

    Value one = arith::ConstantIndexOp::create(b, loc, 1);
    auto pairs = scf::ForOp::create(b, loc, host.getArgument(KernelLayout::pairBegin),
                                    host.getArgument(KernelLayout::pairEnd), one);
    OpBuilder inner = OpBuilder::atBlockBegin(pairs.getBody());
    // The thread id, until each segment gives it its value.
    Value tid = arith::ConstantIndexOp::create(inner, loc, -1);
    for (Operation &op : entry.without_terminator()) {
      if (auto id = dyn_cast<gpu::BlockIdOp>(op))
        // The block of pair p: p, or for a backward p - first_pair.
        map.map(id.getResult(),
                backward ? Value(arith::SubIOp::create(
                               inner, loc, pairs.getInductionVar(),
                               host.getArgument(KernelLayout::pairBegin)))
                         : pairs.getInductionVar());
      else if (auto id = dyn_cast<gpu::ThreadIdOp>(op))
        map.map(id.getResult(), tid);
      else if (auto memory = dyn_cast<gpu::DynamicSharedMemoryOp>(op))
        map.map(memory.getResult(), shared);
      else
        inner.clone(op, map);
    }
    b.setInsertionPointAfter(pairs);
    if (workspace)
      memref::DeallocOp::create(b, loc, workspace);
    func::ReturnOp::create(b, loc);

    // On the CPU there is one address space.
    pairs.walk([](Operation *op) {
      for (Value result : op->getResults())
        if (auto type = dyn_cast<MemRefType>(result.getType());
            type && type.getMemorySpace())
          result.setType(MemRefType::get(type.getShape(), type.getElementType(),
                                         type.getLayout()));
    });
    Lockstep lockstep(host, tid, threads);
    lockstep.copyThreadValuesPerUser(pairs);
    if (failed(lockstep.run(*pairs.getBody())))
      return failure();
    if (!tid.use_empty())
      return kernel.emitOpError("reads the thread id outside the code between "
                                "barriers"), failure();
    tid.getDefiningOp()->erase();
    return success();
  }
};

} // namespace
