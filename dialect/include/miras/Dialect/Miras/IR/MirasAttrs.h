//===- MirasAttrs.h - The four choices as typed attributes ------*- C++ -*-===//
#ifndef MIRAS_DIALECT_MIRAS_IR_MIRASATTRS_H
#define MIRAS_DIALECT_MIRAS_IR_MIRASATTRS_H

#include "miras/Dialect/Miras/Choices/Choice.h"
#include "mlir/IR/Attributes.h"
#include "mlir/IR/BuiltinAttributes.h"
#include "mlir/IR/DialectImplementation.h"

#include "miras/Dialect/Miras/IR/MirasAttrInterfaces.h.inc"

#define GET_ATTRDEF_CLASSES
#include "miras/Dialect/Miras/IR/MirasAttrs.h.inc"

namespace miras {
class MemoryModuleOp;

/// The arguments of a component as the choice definitions read them: numbers
/// (f64 or i64), gate symbols (scalar or channel, looked up in `module`) and
/// keywords.
choices::ArgLookup argLookup(mlir::DictionaryAttr args, MemoryModuleOp module);
} // namespace miras

#endif
