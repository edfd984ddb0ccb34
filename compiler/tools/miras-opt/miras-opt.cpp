//===- miras-opt.cpp - mlir-opt with the miras dialect and pipelines ------===//
#include "miras/Compiler/Pipelines.h"

#include "mlir/IR/DialectRegistry.h"
#include "mlir/Tools/mlir-opt/MlirOptMain.h"

int main(int argc, char **argv) {
  mlir::DialectRegistry registry;
  miras::registerMirasDialects(registry);
  miras::registerMirasPipelines();
  return mlir::asMainReturnCode(
      mlir::MlirOptMain(argc, argv, "miras optimizer driver\n", registry));
}
