//===- Passes.h - miras lowering passes -------------------------*- C++ -*-===//
#ifndef MIRAS_COMPILER_PASSES_H
#define MIRAS_COMPILER_PASSES_H

#include "mlir/Dialect/Arith/IR/Arith.h"
#include "mlir/Dialect/Func/IR/FuncOps.h"
#include "mlir/Dialect/GPU/IR/GPUDialect.h"
#include "mlir/Dialect/Linalg/IR/Linalg.h"
#include "mlir/Dialect/Math/IR/Math.h"
#include "mlir/Dialect/MemRef/IR/MemRef.h"
#include "mlir/Dialect/SCF/IR/SCF.h"
#include "mlir/Pass/Pass.h"

namespace miras {

#define GEN_PASS_DECL
#include "miras/Compiler/Passes.h.inc"

#define GEN_PASS_REGISTRATION
#include "miras/Compiler/Passes.h.inc"

} // namespace miras

#endif
