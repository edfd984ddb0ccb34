//===- MirasDialect.td - The miras dialect -----------------*- tablegen -*-===//
#ifndef MIRAS_DIALECT_TD
#define MIRAS_DIALECT_TD

include "mlir/IR/OpBase.td"

def Miras_Dialect : Dialect {
  let name = "miras";
  let cppNamespace = "::miras";
  let summary = "Memory modules of sequence models as four MIRAS choices";
  let description = [{
    The `miras` dialect has two levels.

    The *spec* level mirrors a `.miras` file: a `miras.module` holding the
    declared params and gates and one op for each of the four choices (memory
    architecture, attentional bias, retention, optimizer). The attentional bias
    carries its loss (or its error signal) as a region over the prediction `y`
    and the target `v`.

    The *step* level is what `miras-derive-update` produces: a `func.func @step`
    inside the `miras.module` that maps the state and one token's inputs to the
    next state and the output, written with `arith`/`math` element-wise ops on
    tensors and the few structural ops of this dialect (`miras.matvec`,
    `miras.outer`, `miras.broadcast`, `miras.sum`, `miras.norm`).
  }];
  let dependentDialects = [
    "::mlir::arith::ArithDialect",
    "::mlir::math::MathDialect",
    "::mlir::func::FuncDialect",
    "::mlir::tensor::TensorDialect"
  ];
  let useDefaultAttributePrinterParser = 1;
  let extraClassDeclaration = [{
    /// The choice attributes (MirasAttrs.td), registered where they are defined.
    void registerAttributes();
  }];
  // Folders of the step-level ops return constants as attributes; they are
  // materialised as arith.constant (StepOps.cpp).
  let hasConstantMaterializer = 1;
}

class Miras_Op<string mnemonic, list<Trait> traits = []>
    : Op<Miras_Dialect, mnemonic, traits>;

#endif // MIRAS_DIALECT_TD
