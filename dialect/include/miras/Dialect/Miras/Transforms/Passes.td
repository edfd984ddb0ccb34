//===- Passes.td - miras dialect passes ---------------------*- tablegen -*-===//
#ifndef MIRAS_TRANSFORMS_PASSES_TD
#define MIRAS_TRANSFORMS_PASSES_TD

include "mlir/Pass/PassBase.td"

def MirasDeriveUpdate : Pass<"miras-derive-update", "::mlir::ModuleOp"> {
  let summary = "Derives the per-token update rule of every miras.module";
  let description = [{
    Turns the four choices of a `miras.module` into an explicit step function
    `func.func @step` inside it: the error signal `psi` by reverse-mode
    differentiation of the bias region (or taken as written for an
    `error_signal` bias), the gradient `psi k^T` of the linear memory,
    retention and optimizer folded into the state update, and the read.

    The pass names no kind: the optimizer's definition builds the update
    (asking the retention's RetentionStep how the old state is kept), the
    memory's the forward function, the retention's its mirror map; all reach
    the step through one StepContext (Choices/StepContext.h).

    Signature (StepSignature.h): states (the weights or their duals, then the
    optimizer's extra states), anchor states when chunk > 1, q, k, v, one
    argument per gate in declaration order; results: next states, then `o`.

    ```mlir
    // miras.optimizer "gd" {lr = @eta}, miras.retention "none", l2 bias:
    func.func private @step(%W: tensor<4x4xf32>, %q: tensor<4xf32>,
        %k: tensor<4xf32>, %v: tensor<4xf32>, %eta: f32)
        -> (tensor<4x4xf32>, tensor<4xf32>) {
      %y = miras.matvec %W, %k : tensor<4x4xf32>, tensor<4xf32> -> tensor<4xf32>
      %e = arith.subf %y, %v : tensor<4xf32>
      %lr = miras.broadcast %eta [] : f32 -> tensor<4xf32>
      %u = arith.mulf %lr, %e : tensor<4xf32>
      %g = miras.outer %u, %k : tensor<4xf32>, tensor<4xf32> -> tensor<4x4xf32>
      %Wn = arith.subf %W, %g : tensor<4x4xf32>
      %o = miras.matvec %Wn, %q : tensor<4x4xf32>, tensor<4xf32> -> tensor<4xf32>
      return %Wn, %o : tensor<4x4xf32>, tensor<4xf32>
    }
    ```
  }];
  let options = [
    Option<"simplify", "simplify", "bool", /*default=*/"true",
           "Fold constants and simplify while the rule is built; off, the "
           "raw reverse-mode output of every VJP rule is kept">
  ];
  let dependentDialects = ["::mlir::func::FuncDialect",
                           "::mlir::arith::ArithDialect",
                           "::mlir::math::MathDialect"];
}

def MirasDeriveBackward : Pass<"miras-derive-backward", "::mlir::ModuleOp"> {
  let summary = "Derives the reverse step of every derived miras.module";
  let description = [{
    Adds `func.func @step_backward` next to `@step`: the vector-Jacobian
    product of the whole step, by the same reverse mode that derives the
    update (DifferentiableOpInterface), applied once more to the derived step
    itself. What the step already contains is differentiated again: the
    inner gradient (so the adjoints hold Hessian-vector products of the bias
    through the memory), mirror maps, momentum states, the steps of
    multistep, and the anchors of SPEC section 7 (their adjoints are a
    result of their own). The body recomputes the step's forward values,
    then accumulates adjoints backwards.

    Signature (StepSignature.h): the step's arguments, then the adjoints of
    its results (the next states, then `o`); results: the adjoint of every
    step argument, in the step's argument order.

    ```mlir
    // step(%W, %q, %k, %v, %eta) -> (%W', %o):
    func.func private @step_backward(%W: tensor<4x4xf32>, %q: tensor<4xf32>,
        %k: tensor<4xf32>, %v: tensor<4xf32>, %eta: f32,
        %dW_next: tensor<4x4xf32>, %do: tensor<4xf32>)
        -> (tensor<4x4xf32>, tensor<4xf32>, tensor<4xf32>, tensor<4xf32>, f32)
    ```

    Points where the step is not differentiable take the subgradient of each
    op's rule: `sign` and comparisons have derivative 0, `abs` at 0 gives 0,
    a `select` (`where`, Yaad's switch) sends the adjoint to the branch taken,
    `max`/`min` to the operand selected.
  }];
  let dependentDialects = ["::mlir::func::FuncDialect",
                           "::mlir::arith::ArithDialect",
                           "::mlir::math::MathDialect"];
}

def MirasTapeRecomputedProducts : Pass<"miras-tape-recomputed-products", "::mlir::ModuleOp"> {
  let summary = "Takes the reverse step's forward products from the backward's recompute";
  let description = [{
    The backward kernel recomputes each token's state update, then runs the
    reverse step from the same state; the reverse step clones the step's
    forward values, so it would compute every product of the update again,
    each a sweep over a state matrix (Gated DeltaNet's (alpha W) k, an MLP
    memory's W1 k, W2 h and W2^T e). This pass replaces each matrix-vector
    product of `@step_backward` that reads no adjoint and is the same
    expression as a product of `@step` that the new states depend on by a new
    argument of the reverse step (after `do`, named p1, p2, ...). Argument
    p<i+1> and the step's product both carry `miras.tape = i`: the backward
    kernel keeps the product of every recomputed token of the segment and
    passes it to that token's reverse step. A product that only another
    taped product reads is not kept; a reverse step taped already is left
    as it is.

    ```mlir
    // @step: the error's prediction, which the update needs.
    %p = miras.matvec %aW, %k {miras.tape = 0 : i64}
        : tensor<4x4xf32>, tensor<4xf32> -> tensor<4xf32>
    // @step_backward: reads it instead of computing it again.
    func.func private @step_backward(%W: tensor<4x4xf32>, ...,
        %do: tensor<4xf32>, %p1: tensor<4xf32> {miras.tape = 0 : i64})
    ```

    Runs before miras-distribute-products, while the reverse step's forward
    values are still the step's own ops.
  }];
}

def MirasDistributeProducts : Pass<"miras-distribute-products", "::mlir::ModuleOp"> {
  let summary = "Writes the reverse step's matrix products over the terms of their matrices";
  let description = [{
    Reverse mode builds the matrices the reverse step multiplies as sums: the
    read's adjoint joins the next state's (G = dW' + do q^T), the recomputed
    state is W' = a W - u k^T. A product with such a matrix costs its whole
    expression per element. This pass rewrites every product in
    `@step_backward` over the terms of its matrix operand, so that each term
    costs what it needs: a rank-one term x y^T works on vectors, scalar
    factors move out, and matrices that are not sums stay in one product:

      matvec(c s M + x y^T, z) = c s (M z) + x (y . z)
      vecmat(z, c s M + x y^T) = c s (z^T M) + (z . x) y
      sum((M + x y^T) o B)     = sum(M o B) + (x^T B) . y

    The last only where x^T B (or B y) is already computed by the step, which
    the first two make likely: for Gated DeltaNet d alpha = <G - s k^T, W>
    reads W^T do and W^T s, which dq and dk compute.

    ```mlir
    // Before: G k with G = dW' + do q^T, two multiply-adds per element.
    %dq = miras.outer %do, %q : tensor<4xf32>, tensor<4xf32> -> tensor<4x4xf32>
    %G = arith.addf %dWn, %dq : tensor<4x4xf32>
    %Gk = miras.matvec %G, %k : tensor<4x4xf32>, tensor<4xf32> -> tensor<4xf32>
    // After: dW' k + do (q . k), one.
    %m = miras.matvec %dWn, %k : tensor<4x4xf32>, tensor<4xf32> -> tensor<4xf32>
    %qk = arith.mulf %q, %k : tensor<4xf32>
    %s = miras.sum %qk : tensor<4xf32>
    %sb = miras.broadcast %s [] : f32 -> tensor<4xf32>
    %t = arith.mulf %do, %sb : tensor<4xf32>
    %Gk = arith.addf %m, %t : tensor<4xf32>
    ```

    Exact in real numbers; in float32 the rounding differs from the
    undistributed form.
  }];
  let dependentDialects = ["::mlir::arith::ArithDialect"];
}

#endif
