//===- Passes.td - miras lowering passes --------------------*- tablegen -*-===//
#ifndef MIRAS_COMPILER_PASSES_TD
#define MIRAS_COMPILER_PASSES_TD

include "mlir/Pass/PassBase.td"

def MirasLowerToLinalg : Pass<"miras-lower-to-linalg", "::mlir::ModuleOp"> {
  let summary = "Lowers each derived miras.module to a fused sequential kernel";
  let description = [{
    Replaces every `miras.module` (after `miras-derive-update`) by
    `func.func @<name>_kernel`, which runs the step function over a whole
    `[B, T, H, D]` sequence: `scf.for` over batch and head, then over time,
    with the state slice of that (batch, head) updated in place.

    The step body becomes `linalg.generic` ops on memrefs. Vectors are
    materialised into small buffers allocated once at kernel entry; matrix
    values (the decayed state, the rank-1 gradient `psi k^T`, their sum) are
    never materialised: they are fused element by element into the single
    generic that writes the new state in place, or into the matvec that reads
    them. One pass over time keeps the state hot in cache.

    ```mlir
    func.func @deltanet_kernel(%q: memref<?x?x?x16xf32>, %k: memref<?x?x?x16xf32>,
        %v: memref<?x?x?x16xf32>, %eta: memref<?x?x?xf32>,
        %W: memref<?x?x16x16xf32>, %o: memref<?x?x?x16xf32>)
        attributes {llvm.emit_c_interface} {
      scf.for %b = %c0 to %B step %c1 {
        scf.for %h = %c0 to %H step %c1 {
          %Wbh = memref.subview %W[%b, %h, 0, 0] [1, 1, 16, 16] [1, 1, 1, 1] : ...
          scf.for %t = %c0 to %T step %c1 {
            linalg.generic ... // y = W k, fused with the residual where possible
            linalg.generic ... ins(%Wbh, %u, %kt) outs(%Wbh)  // W -= u k^T
            linalg.generic ... // o = W q
          }
        }
      }
      return
    }
    ```
  }];
  let dependentDialects = ["::mlir::linalg::LinalgDialect",
                           "::mlir::memref::MemRefDialect",
                           "::mlir::scf::SCFDialect",
                           "::mlir::arith::ArithDialect",
                           "::mlir::math::MathDialect",
                           "::mlir::func::FuncDialect"];
}

#endif
