//===- MirasOps.h - miras dialect operations --------------------*- C++ -*-===//
#ifndef MIRAS_DIALECT_MIRAS_IR_MIRASOPS_H
#define MIRAS_DIALECT_MIRAS_IR_MIRASOPS_H

#include "miras/Dialect/Miras/IR/MirasAttrs.h"
#include "miras/Dialect/Miras/IR/MirasDialect.h"
#include "miras/Dialect/Miras/IR/DifferentiableOpInterface.h"
#include "mlir/IR/BuiltinTypes.h"
#include "mlir/IR/OpDefinition.h"
#include "mlir/IR/OpImplementation.h"
#include "mlir/IR/RegionKindInterface.h"
#include "mlir/IR/SymbolTable.h"
#include "mlir/Interfaces/SideEffectInterfaces.h"

namespace miras {
class GateOp;
} // namespace miras

#define GET_OP_CLASSES
#include "miras/Dialect/Miras/IR/MirasOps.h.inc"

#endif
