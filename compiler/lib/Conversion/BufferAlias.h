//===- BufferAlias.h - Which kernel buffers may share memory ---------------===//
//
// The kernels' memrefs are views (subviews, casts, selects) of their
// arguments and of allocations made at their entry. Two of them may share
// memory when they are views of a common root. Distinct kernel arguments do
// not (miras_abi.h: the outputs do not overlap the inputs; the glue resolves
// the aliasing it allows before a kernel runs), nor distinct allocations.
//
//===----------------------------------------------------------------------===//
#ifndef MIRAS_CONVERSION_BUFFERALIAS_H
#define MIRAS_CONVERSION_BUFFERALIAS_H

#include "mlir/Dialect/Arith/IR/Arith.h"
#include "mlir/Dialect/MemRef/IR/MemRef.h"
#include "mlir/Interfaces/FunctionInterfaces.h"
#include "mlir/Interfaces/ViewLikeInterface.h"

namespace miras {

/// The kernel arguments and allocations `v` may be a view of; a null Value
/// stands for one that cannot be traced.
inline void bufferRoots(mlir::Value v, llvm::SmallVectorImpl<mlir::Value> &roots) {
  if (auto arg = mlir::dyn_cast<mlir::BlockArgument>(v)) {
    // The kernel's own arguments; a loop's or a branch's may be anything.
    mlir::Block *owner = arg.getOwner();
    bool entry = owner->isEntryBlock() &&
                 mlir::isa<mlir::FunctionOpInterface>(owner->getParentOp());
    roots.push_back(entry ? v : mlir::Value());
    return;
  }
  mlir::Operation *def = v.getDefiningOp();
  if (mlir::isa<mlir::memref::AllocaOp, mlir::memref::AllocOp>(def)) {
    roots.push_back(v);
    return;
  }
  if (auto view = mlir::dyn_cast<mlir::ViewLikeOpInterface>(def))
    return bufferRoots(view.getViewSource(), roots);
  if (auto cast = mlir::dyn_cast<mlir::memref::CastOp>(def))
    return bufferRoots(cast.getSource(), roots);
  if (auto select = mlir::dyn_cast<mlir::arith::SelectOp>(def)) {
    bufferRoots(select.getTrueValue(), roots);
    bufferRoots(select.getFalseValue(), roots);
    return;
  }
  roots.push_back(mlir::Value());
}

/// Whether two memrefs may share memory.
inline bool mayAlias(mlir::Value a, mlir::Value b) {
  llvm::SmallVector<mlir::Value> rootsA, rootsB;
  bufferRoots(a, rootsA);
  bufferRoots(b, rootsB);
  for (mlir::Value x : rootsA)
    for (mlir::Value y : rootsB)
      if (!x || !y || x == y)
        return true;
  return false;
}

} // namespace miras

#endif // MIRAS_CONVERSION_BUFFERALIAS_H
