//===- SimtToGPU.cpp - SIMT-form kernel -> gpu.module with CUDA kernels ----===//
//
// `miras-simt-to-gpu` (see Passes.td). Everything that decides who computes
// what happened in miras-distribute-threads; this pass only changes where
// things live (block and thread ids, shared memory, flat device pointers)
// and adds the barriers the CPU did not need.
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

#include "llvm/ADT/DenseSet.h"
#include "llvm/Support/MathExtras.h"

namespace miras {
#define GEN_PASS_DEF_MIRASSIMTTOGPU
#include "miras/Compiler/Passes.h.inc"
} // namespace miras

using namespace mlir;
using namespace miras;

namespace {

/// The kernel's buffers: allocations in its entry block (scratch vectors on
/// the stack, the chunked form's matrices on the heap).
bool isBuffer(Operation *op) { return isa<memref::AllocaOp, memref::AllocOp>(op); }
MemRefType bufferType(Operation *op) {
  return cast<MemRefType>(op->getResult(0).getType());
}

/// The shape a buffer gets in shared memory: rows whose length is a multiple
/// of 32 words get one more, so that a warp walking a column (thread i reads
/// W[i][j], the matvec) hits 32 different banks instead of one.
SmallVector<int64_t> sharedShape(MemRefType type) {
  SmallVector<int64_t> shape(type.getShape());
  if (shape.size() >= 2 && type.getElementTypeBitWidth() == 32 &&
      shape.back() % 32 == 0)
    ++shape.back();
  return shape;
}

/// Where the kernel's buffers live; the same for every variant.
struct BufferPlan {
  struct Slot {
    bool shared;
    int64_t offset;
  };
  std::vector<Slot> slots; // in the order planBuffers saw the allocas
  int64_t sharedBytes = 0, workspaceBytes = 0;
};

/// Promoted states first (they are touched every token), then the others in
/// program order; each goes to shared memory while it fits, else to the
/// workspace. 16-byte aligned offsets. A buffer the kernel casts (the
/// backward's spare adjoint, selected in turn with the caller's global one)
/// must share the global address space: always the workspace.
static bool mustBeGlobal(Operation *alloca) {
  return llvm::any_of(alloca->getResult(0).getUsers(),
                      [](Operation *user) { return isa<memref::CastOp>(user); });
}

FailureOr<BufferPlan> planBuffers(ArrayRef<Operation *> allocas,
                                  int64_t budget) {
  BufferPlan plan;
  plan.slots.resize(allocas.size());
  for (bool promoted : {true, false})
    for (auto [i, alloca] : llvm::enumerate(allocas)) {
      if (alloca->hasAttr(kPromotedStateAttr) != promoted)
        continue;
      int64_t bytes = staticBytes(bufferType(alloca));
      if (bytes < 0)
        return alloca->emitOpError("needs a static shape on the GPU"), failure();
      MemRefType type = bufferType(alloca);
      int64_t padded = staticBytes(MemRefType::get(sharedShape(type),
                                                   type.getElementType()));
      int64_t offset = llvm::alignTo(plan.sharedBytes, 16);
      if (offset + padded <= budget && !mustBeGlobal(alloca)) {
        plan.slots[i] = {true, offset};
        plan.sharedBytes = offset + padded;
      } else {
        offset = llvm::alignTo(plan.workspaceBytes, 16);
        plan.slots[i] = {false, offset};
        plan.workspaceBytes = offset + bytes;
      }
    }
  plan.workspaceBytes = llvm::alignTo(plan.workspaceBytes, 16);
  return plan;
}

/// Places barriers around the threads regions of the block-uniform code and
/// inlines them as the code of thread `gpu.thread_id x`.
class BarrierPlacer {
public:
  explicit BarrierPlacer(gpu::GPUFuncOp kernel) {
    // Buffers the kernel writes: a block-uniform load from one of them may
    // race with a later threads region that overwrites it.
    kernel.walk([&](memref::StoreOp store) { written.insert(store.getMemRef()); });
  }

  /// Decides, for each threads region under `block`, whether it needs a
  /// barrier before it; returns whether a hazardous load is pending at the
  /// end of the block.
  bool plan(Block &block, bool pending) {
    for (Operation &op : block) {
      if (isThreadsRegion(&op)) {
        barrierBefore[&op] = pending;
        pending = false;
      } else if (auto loop = dyn_cast<scf::ForOp>(op)) {
        // The body's end flows into its start on the next iteration.
        bool carried = plan(*loop.getBody(), false);
        pending = plan(*loop.getBody(), pending || carried) || pending;
      } else if (auto branch = dyn_cast<scf::IfOp>(op)) {
        bool thenPending = plan(*branch.thenBlock(), pending);
        bool elsePending =
            branch.elseBlock() ? plan(*branch.elseBlock(), pending) : pending;
        pending = thenPending || elsePending;
      } else {
        op.walk([&](memref::LoadOp load) {
          pending |= written.contains(load.getMemRef());
        });
      }
    }
    return pending;
  }

  void apply(Value tid) {
    for (auto [op, before] : barrierBefore) {
      OpBuilder b(op);
      if (before)
        gpu::BarrierOp::create(b, op->getLoc());
      auto region = cast<scf::ParallelOp>(op);
      region.getInductionVars()[0].replaceAllUsesWith(tid);
      Block *body = region.getBody();
      body->getTerminator()->erase();
      region->getBlock()->getOperations().splice(Block::iterator(region),
                                                 body->getOperations());
      gpu::BarrierOp::create(b, region.getLoc());
      region.erase();
    }
  }

private:
  llvm::DenseSet<Value> written;
  llvm::MapVector<Operation *, bool> barrierBefore;
};

struct SimtToGPUPass : public miras::impl::MirasSimtToGPUBase<SimtToGPUPass> {
  using MirasSimtToGPUBase::MirasSimtToGPUBase;

  void runOnOperation() override {
    ModuleOp module = getOperation();
    SmallVector<func::FuncOp> kernels;
    module.walk([&](func::FuncOp f) {
      if (f->hasAttr(kSimtThreadsAttr))
        kernels.push_back(f);
    });
    for (func::FuncOp kernel : kernels)
      if (failed(convert(module, kernel)))
        return signalPassFailure();
  }

  LogicalResult convert(ModuleOp module, func::FuncOp kernel) {
    MLIRContext *ctx = module.getContext();
    int64_t threads = kernel->getAttrOfType<IntegerAttr>(kSimtThreadsAttr).getInt();
    StringRef name = kernel.getSymName();
    name.consume_back("_kernel");
    scf::ForOp pairLoop = findPairLoop(kernel);
    if (!pairLoop)
      return kernel.emitOpError("in SIMT form has no pair loop");

    SmallVector<Operation *> allocas;
    for (Operation &op : kernel.getBody().front())
      if (isBuffer(&op))
        allocas.push_back(&op);
    if (kernel->walk([&](Operation *op) {
          return isBuffer(op) && op->getParentOp() != kernel
                     ? WalkResult::interrupt()
                     : WalkResult::advance();
        }).wasInterrupted())
      return kernel.emitOpError("allocates inside its loops; the GPU lowering "
                                "needs every buffer at kernel entry");
    FailureOr<BufferPlan> plan = planBuffers(allocas, sharedBudget);
    if (failed(plan))
      return failure();

    module->setAttr(gpu::GPUDialect::getContainerModuleAttrName(),
                    UnitAttr::get(ctx));
    OpBuilder b(kernel);
    auto gpuModule = gpu::GPUModuleOp::create(b, kernel.getLoc(),
                                              (name + "_cuda").str());
    gpuModule->setAttr("miras.block_threads", b.getI64IntegerAttr(threads));
    gpuModule->setAttr("miras.shared_bytes", b.getI64IntegerAttr(plan->sharedBytes));
    gpuModule->setAttr("miras.workspace_bytes",
                       b.getI64IntegerAttr(plan->workspaceBytes));
    const bool backward = kernel->hasAttr(kBackwardSegmentAttr);
    if (backward)
      gpuModule->setAttr(kBackwardModuleAttr, b.getUnitAttr());
    SmallVector<Type> inputTypes{b.getF32Type()};
    if (!backward) // bf16 inputs: the forward only, for now
      inputTypes.push_back(b.getBF16Type());
    for (Type inputType : inputTypes) {
      std::string variant = (name + (inputType.isF32() ? "_f32" : "_bf16")).str();
      if (failed(buildVariant(gpuModule, kernel, variant, inputType, threads,
                              allocas, *plan)))
        return failure();
    }
    if (!keepKernel)
      kernel.erase();
    return success();
  }

  /// One gpu.func: `kernel`'s body with flat device pointers, blocks, threads.
  LogicalResult buildVariant(gpu::GPUModuleOp gpuModule, func::FuncOp kernel,
                             StringRef variant, Type inputType, int64_t threads,
                             ArrayRef<Operation *> allocas,
                             const BufferPlan &plan) {
    Location loc = kernel.getLoc();
    OpBuilder b = OpBuilder::atBlockEnd(gpuModule.getBody());
    Type i64 = b.getI64Type();
    // q, k, v and gates come before the states and o (KernelLayout); a
    // backward kernel ends with checkpoints_given, which is not a tensor.
    bool isBackward = kernel->hasAttr(kBackwardSegmentAttr);
    auto tensorArgs = kernel.getArguments()
                          .drop_front(KernelLayout::query)
                          .drop_back(isBackward ? 1 : 0);
    unsigned numStates = llvm::count_if(tensorArgs, [](BlockArgument a) {
      return isStateType(cast<MemRefType>(a.getType()));
    });
    unsigned numInputs = tensorArgs.size() - numStates - 1;
    // A backward kernel (BackwardKernelLayout) takes one more parameter, the
    // pair of its first block: its checkpoints and segments are indexed by
    // pair - first_pair (0 for a launch over all pairs).
    std::optional<BackwardKernelLayout> backward;
    int64_t segment = 0, chunk = 1;
    if (auto attr = kernel->getAttrOfType<IntegerAttr>(kBackwardSegmentAttr)) {
      segment = attr.getInt();
      auto states = kernel->getAttrOfType<IntegerAttr>(kBackwardStatesAttr);
      auto anchors = kernel->getAttrOfType<IntegerAttr>(kBackwardAnchorsAttr);
      auto chunkAttr = kernel->getAttrOfType<IntegerAttr>(kBackwardChunkAttr);
      if (!states || !anchors || !chunkAttr)
        return kernel.emitOpError("a backward kernel needs ")
               << kBackwardStatesAttr << ", " << kBackwardAnchorsAttr << " and "
               << kBackwardChunkAttr;
      chunk = chunkAttr.getInt();
      BackwardKernelLayout layout;
      layout.numStates = states.getInt();
      layout.numAnchors = anchors.getInt();
      layout.numGates =
          (kernel.getNumArguments() -
           BackwardKernelLayout{0, layout.numStates, layout.numAnchors}.size()) / 2;
      if (layout.size() != kernel.getNumArguments())
        return kernel.emitOpError("does not have BackwardKernelLayout's arguments");
      backward = layout;
      numInputs = tensorArgs.size();
    }
    const unsigned firstTensor = backward ? 4 : 3;

    // Each tensor is one device pointer: convert-gpu-to-nvvm passes bare
    // pointers only for static shapes, so the parameter is typed memref<1xT>
    // and reinterpreted below with the tensor's real shape.
    SmallVector<Type> argTypes{i64, i64, i64};
    if (backward)
      argTypes.push_back(i64); // first_pair
    for (auto [i, arg] : llvm::enumerate(tensorArgs)) {
      Type element = i < numInputs ? inputType
                                   : cast<MemRefType>(arg.getType()).getElementType();
      argTypes.push_back(MemRefType::get({1}, element));
    }
    argTypes.push_back(MemRefType::get({1}, b.getI8Type()));
    auto func = gpu::GPUFuncOp::create(b, loc, variant,
                                       b.getFunctionType(argTypes, {}));
    func->setAttr(gpu::GPUDialect::getKernelFuncAttrName(), b.getUnitAttr());
    func.setKnownBlockSizeAttr(b.getDenseI32ArrayAttr(
        {static_cast<int32_t>(threads), 1, 1}));
    Block &entry = func.getBody().front();
    b.setInsertionPointToStart(&entry);

    // Shapes: [B, T, H, ...] or [B, H, ...] over the flat pointers.
    auto toIndex = [&](Value v) {
      return arith::IndexCastOp::create(b, loc, b.getIndexType(), v).getResult();
    };
    Value B = toIndex(entry.getArgument(0)), T = toIndex(entry.getArgument(1)),
          H = toIndex(entry.getArgument(2));
    // Block b runs pair b, or for a backward pair first_pair + b (a launch
    // over the pairs [first_pair, first_pair + grid) of a range).
    Value pair = gpu::BlockIdOp::create(b, loc, gpu::Dimension::x);
    if (backward)
      pair = arith::AddIOp::create(b, loc, pair, toIndex(entry.getArgument(3)));
    Value tid = gpu::ThreadIdOp::create(b, loc, gpu::Dimension::x);
    IRMapping map;
    Value zero = arith::ConstantIndexOp::create(b, loc, 0);
    map.map(kernel.getArgument(KernelLayout::pairBegin),
            backward ? toIndex(entry.getArgument(3)) : zero);
    map.map(kernel.getArgument(KernelLayout::pairEnd), zero);
    // The CUDA backward computes its checkpoints itself (the CUDA forward
    // does not save them).
    if (backward)
      map.map(kernel.getArgument(backward->checkpointsGiven()), zero);
    // The dynamic sizes of each tensor: [B, T, H, ...] or [B, H, ...]; a
    // backward's checkpoints [B * H, N, ...] (N: numCheckpoints for a carried
    // state, 1 for an anchor or the chunk position) and segments
    // [B * H, S, ...].
    auto dynamicSizes = [&](unsigned argIndex, MemRefType type) -> SmallVector<Value> {
      if (backward) {
        Value pairs = arith::MulIOp::create(b, loc, B, H);
        if (argIndex >= backward->checkpoint(backward->numStates) &&
            argIndex < backward->segment(0))
          return {pairs, arith::ConstantIndexOp::create(b, loc, 1)};
        if (argIndex >= backward->checkpoint(0) && argIndex < backward->segment(0)) {
          // One builder call per statement: the IR must not depend on the host
          // compiler's argument order.
          Value spare = arith::ConstantIndexOp::create(b, loc, chunk - 1);
          Value shifted = arith::AddIOp::create(b, loc, T, spare);
          Value size = arith::ConstantIndexOp::create(b, loc, segment);
          return {pairs, arith::CeilDivUIOp::create(b, loc, shifted, size)};
        }
        if (argIndex >= backward->segment(0))
          return {pairs};
        if (argIndex >= backward->stateAdjoint(0) && argIndex < backward->queryAdjoint())
          return {B, H};
        return {B, T, H};
      }
      return isStateType(type) ? SmallVector<Value>{B, H} : SmallVector<Value>{B, T, H};
    };
    SmallVector<Value> widened; // inputs read as bf16
    for (auto [i, arg] : llvm::enumerate(tensorArgs)) {
      auto type = cast<MemRefType>(arg.getType());
      SmallVector<Value> dynamic = dynamicSizes(arg.getArgNumber(), type);
      SmallVector<OpFoldResult> sizes, strides(type.getRank());
      unsigned next = 0;
      for (int64_t extent : type.getShape())
        sizes.push_back(ShapedType::isDynamic(extent) ? OpFoldResult(dynamic[next++])
                                                      : OpFoldResult(b.getIndexAttr(extent)));
      Value running;
      int64_t staticRunning = 1;
      for (int d = type.getRank() - 1; d >= 0; --d) {
        strides[d] = running ? OpFoldResult(running) : b.getIndexAttr(staticRunning);
        if (!running && !ShapedType::isDynamic(type.getShape()[d]))
          staticRunning *= type.getShape()[d];
        else {
          if (!running)
            running = arith::ConstantIndexOp::create(b, loc, staticRunning);
          Value extent = isa<Value>(sizes[d])
                             ? cast<Value>(sizes[d])
                             : arith::ConstantIndexOp::create(b, loc, type.getShape()[d]).getResult();
          running = arith::MulIOp::create(b, loc, running, extent);
        }
      }
      Type element = cast<MemRefType>(argTypes[firstTensor + i]).getElementType();
      auto view = memref::ReinterpretCastOp::create(
          b, loc, MemRefType::get(type.getShape(), element),
          entry.getArgument(firstTensor + i), b.getIndexAttr(0), sizes, strides);
      map.map(arg, view.getResult());
      if (element != type.getElementType())
        widened.push_back(view);
    }

    // Buffers: views of dynamic shared memory or of the pair's workspace.
    auto workgroup = gpu::AddressSpaceAttr::get(b.getContext(),
                                                gpu::AddressSpace::Workgroup);
    Value shared, workspaceBase;
    if (plan.sharedBytes > 0)
      shared = gpu::DynamicSharedMemoryOp::create(
          b, loc, MemRefType::get({ShapedType::kDynamic}, b.getI8Type(), nullptr,
                                  workgroup));
    Value workspace;
    if (plan.workspaceBytes > 0) {
      workspaceBase = arith::MulIOp::create(
          b, loc, pair, arith::ConstantIndexOp::create(b, loc, plan.workspaceBytes));
      // memref.view needs a dynamic 1-D i8 source: B * H * workspace bytes.
      Value bytes = arith::MulIOp::create(
          b, loc, arith::MulIOp::create(b, loc, B, H),
          arith::ConstantIndexOp::create(b, loc, plan.workspaceBytes));
      workspace = memref::ReinterpretCastOp::create(
          b, loc, MemRefType::get({ShapedType::kDynamic}, b.getI8Type()),
          entry.getArgument(entry.getNumArguments() - 1), b.getIndexAttr(0),
          ArrayRef<OpFoldResult>{bytes}, ArrayRef<OpFoldResult>{b.getIndexAttr(1)});
    }
    for (auto [alloca, slot] : llvm::zip(allocas, plan.slots)) {
      MemRefType type = bufferType(alloca);
      Value offset = arith::ConstantIndexOp::create(b, loc, slot.offset);
      Value view;
      if (slot.shared) {
        SmallVector<int64_t> padded = sharedShape(type);
        view = memref::ViewOp::create(
            b, loc, MemRefType::get(padded, type.getElementType(), nullptr, workgroup),
            shared, offset, ValueRange{});
        if (padded != type.getShape()) {
          SmallVector<OpFoldResult> zeros(type.getRank(), b.getIndexAttr(0)),
              ones(type.getRank(), b.getIndexAttr(1)), sizes;
          for (int64_t extent : type.getShape())
            sizes.push_back(b.getIndexAttr(extent));
          view = memref::SubViewOp::create(b, loc, view, zeros, sizes, ones);
        }
      } else
        view = memref::ViewOp::create(
            b, loc, MemRefType::get(type.getShape(), type.getElementType()),
            workspace, arith::AddIOp::create(b, loc, workspaceBase, offset),
            ValueRange{});
      map.map(alloca->getResult(0), view);
    }

    // The body, with the pair loop opened up: this block is pair `pair`.
    scf::ForOp pairLoop = findPairLoop(kernel);
    for (Operation &op : kernel.getBody().front().without_terminator()) {
      if (isBuffer(&op) || isa<memref::DeallocOp>(op))
        continue;
      if (&op == pairLoop.getOperation()) {
        map.map(pairLoop.getInductionVar(), pair);
        for (Operation &inner : pairLoop.getBody()->without_terminator())
          b.clone(inner, map);
        continue;
      }
      b.clone(op, map);
    }
    gpu::ReturnOp::create(b, loc);

    for (Value view : widened)
      for (Operation *user : llvm::make_early_inc_range(view.getUsers())) {
        if (isa<memref::DimOp>(user))
          continue;
        auto load = dyn_cast<memref::LoadOp>(user);
        if (!load)
          return user->emitOpError("reads a bf16 input other than by a load");
        OpBuilder lb(load);
        Value narrow = memref::LoadOp::create(lb, load.getLoc(), view,
                                              load.getIndices());
        load.replaceAllUsesWith(arith::ExtFOp::create(
            lb, load.getLoc(), load.getType(), narrow).getResult());
        load.erase();
      }

    BarrierPlacer barriers(func);
    barriers.plan(entry, false);
    barriers.apply(tid);
    return success();
  }
};

} // namespace
