//===- DifferentiableOpInterface.td - Reverse-mode rule of an op -*- tablegen -*-===//
#ifndef MIRAS_DIFFERENTIABLE_OP_INTERFACE_TD
#define MIRAS_DIFFERENTIABLE_OP_INTERFACE_TD

include "mlir/IR/OpBase.td"

def Miras_DifferentiableOpInterface : OpInterface<"DifferentiableOpInterface"> {
  let cppNamespace = "::miras";
  // (OpInterface has no `summary` field: the description's first line is it.)
  let description = [{
    An op with a reverse-mode (vector-Jacobian product) rule.

    Reverse-mode differentiation of a bias region (and of the memory's forward
    pass feeding it) walks the ops from last to first. For each op it hands
    the adjoints of the op's results to this interface, and the op adds the
    adjoints of its operands: for `y = f(x1, ..., xn)` with result adjoint
    `g`, the contribution `g^T df/dxi` to the adjoint of each active `xi`.

    The rule builds its expressions with the `MathBuilder` of the sweep, so
    the same rule gives the raw reverse-mode output (`simplify=false`) and
    the folded one. Rules of `miras` step-level ops are written with the op;
    those of upstream `arith` and `math` ops are attached as external models
    by `registerDifferentiableOpInterfaceExternalModels`. An op without the
    interface cannot be differentiated: the sweep reports a located error.

    Example: `miras.matvec` (`y = A x`) gives `dA = g x^T`, `dx = A^T g`:

    ```mlir
    // forward
    %y  = miras.matvec %W, %k : tensor<4x8xf32>, tensor<8xf32> -> tensor<4xf32>
    // what accumulateAdjoints adds, for the result adjoint %g of %y
    %dW = miras.outer %g, %k : tensor<4xf32>, tensor<8xf32> -> tensor<4x8xf32>
    %dk = miras.vecmat %g, %W : tensor<4xf32>, tensor<4x8xf32> -> tensor<8xf32>
    ```
  }];
  let methods = [
    InterfaceMethod<[{
        Adds the vector-Jacobian product of this op to `adjoints`: for every
        operand, `adjoints.accumulate(operand, [&] { return ...; })`; the
        contribution is built only for an operand that needs an adjoint.
        `resultAdjoints` holds one adjoint per result, a null value for a
        result that does not reach the differentiated output. Expressions are
        built through `adjoints.math()`, at the location of this op. Fails,
        after emitting an error at this op, for a case the rule rejects.
      }],
      "::mlir::LogicalResult", "accumulateAdjoints",
      (ins "::miras::AdjointAccumulator &":$adjoints,
           "::mlir::ValueRange":$resultAdjoints)>
  ];
}

#endif // MIRAS_DIFFERENTIABLE_OP_INTERFACE_TD
