//===- MirasDialect.cpp - The miras dialect -------------------------------===//
#include "miras/Dialect/Miras/IR/MirasDialect.h"
#include "miras/Dialect/Miras/IR/MirasOps.h"

using namespace mlir;
using namespace miras;

#include "miras/Dialect/Miras/IR/MirasOpsDialect.cpp.inc"

void MirasDialect::initialize() {
  addOperations<
#define GET_OP_LIST
#include "miras/Dialect/Miras/IR/MirasOps.cpp.inc"
      >();
  registerAttributes();
}
