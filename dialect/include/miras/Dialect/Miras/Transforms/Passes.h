//===- Passes.h - miras dialect passes --------------------------*- C++ -*-===//
#ifndef MIRAS_DIALECT_MIRAS_TRANSFORMS_PASSES_H
#define MIRAS_DIALECT_MIRAS_TRANSFORMS_PASSES_H

#include "miras/Dialect/Miras/IR/MirasOps.h"
#include "mlir/Pass/Pass.h"

namespace miras {

#define GEN_PASS_DECL
#include "miras/Dialect/Miras/Transforms/Passes.h.inc"

#define GEN_PASS_REGISTRATION
#include "miras/Dialect/Miras/Transforms/Passes.h.inc"

} // namespace miras

#endif
