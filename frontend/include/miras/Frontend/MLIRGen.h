//===- MLIRGen.h - Resolved AST to the miras dialect ------------*- C++ -*-===//
#ifndef MIRAS_FRONTEND_MLIRGEN_H
#define MIRAS_FRONTEND_MLIRGEN_H

#include "miras/Frontend/AST.h"
#include "mlir/IR/BuiltinOps.h"
#include "mlir/IR/OwningOpRef.h"

namespace miras {

/// Builds a builtin module holding one spec-level `miras.module` for `module`,
/// with the file location of its source construct on every op. Returns null
/// after emitting a located error when something cannot be represented.
mlir::OwningOpRef<mlir::ModuleOp> mlirGen(mlir::MLIRContext &context,
                                          const ast::ResolvedModule &module);

} // namespace miras

#endif
