//===- MirasDialect.h - The miras dialect -----------------------*- C++ -*-===//
#ifndef MIRAS_DIALECT_MIRAS_IR_MIRASDIALECT_H
#define MIRAS_DIALECT_MIRAS_IR_MIRASDIALECT_H

#include "mlir/Dialect/Arith/IR/Arith.h"
#include "mlir/Dialect/Func/IR/FuncOps.h"
#include "mlir/Dialect/Math/IR/Math.h"
#include "mlir/Dialect/Tensor/IR/Tensor.h"
#include "mlir/IR/Dialect.h"

#include "miras/Dialect/Miras/IR/MirasOpsDialect.h.inc"

#endif
