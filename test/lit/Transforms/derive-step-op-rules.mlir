// The reverse-mode rules of the miras step-level ops (StepOps.cpp), checked
// numerically: the gradient each derived step applies matches central finite
// differences of its bias (Inputs/vjp_check.py evaluates the IR with numpy).
// Raw (no folding), simplified (the pass as the compiler runs it) and after the
// derive pipeline's canonicalisation must all agree with the numbers.
// RUN: miras-opt %s --miras-derive-update=simplify=false --mlir-print-op-generic | %python %S/Inputs/vjp_check.py | FileCheck %s
// RUN: miras-opt %s --miras-derive-update --mlir-print-op-generic | %python %S/Inputs/vjp_check.py | FileCheck %s
// RUN: miras-opt %s --miras-derive --mlir-print-op-generic | %python %S/Inputs/vjp_check.py | FileCheck %s
// The rules' own shapes, raw: row_max routes a row's adjoint to its maxima
// (cmpf oeq), extracting row 2 gives back e_2 g^T, a broadcast along columns
// sums the adjoints back with 1^T G.
// RUN: miras-opt %s --miras-derive-update=simplify=false | FileCheck %s --check-prefix=AD

// outer, row_max, broadcast along rows, row_sum (a log-sum-exp), log, norm.
// CHECK: rows: max_rel_err={{.*}} OK
// AD-LABEL: miras.module @rows
// AD: func.func private @step
// AD: %[[M:.*]] = miras.outer
// AD: %[[R:.*]] = miras.row_max %[[M]]
// AD: %[[RB:.*]] = miras.broadcast %[[R]] [0] : tensor<4xf32> -> tensor<4x4xf32>
// AD: %[[AT:.*]] = arith.cmpf oeq, %[[M]], %{{.*}} : tensor<4x4xf32>
// AD: %[[IND:.*]] = arith.select %[[AT]]
// AD: miras.row_sum %[[IND]]
miras.module @rows attributes {chunk = 1 : i64, dk = 4 : i64, dv = 4 : i64, read_after_write = true} {
  miras.memory "linear" {dk = 4 : i64, dv = 4 : i64}
  miras.bias "expression" loss {
  ^bb0(%y: tensor<4xf32>, %v: tensor<4xf32>):
    %m = miras.outer %y, %v : tensor<4xf32>, tensor<4xf32> -> tensor<4x4xf32>
    %r = miras.row_max %m : tensor<4x4xf32> -> tensor<4xf32>
    %rb = miras.broadcast %r [0] : tensor<4xf32> -> tensor<4x4xf32>
    %d = arith.subf %m, %rb : tensor<4x4xf32>
    %e = math.exp %d : tensor<4x4xf32>
    %z = miras.row_sum %e : tensor<4x4xf32> -> tensor<4xf32>
    %lz = math.log %z : tensor<4xf32>
    %r2 = arith.mulf %r, %r : tensor<4xf32>
    %t = arith.addf %lz, %r2 : tensor<4xf32>
    %n = miras.norm %t : tensor<4xf32>
    miras.yield %n : f32
  }
  miras.retention "none" {}
  miras.optimizer "gd" {lr = 1.0e-01 : f64}
}

// vecmat, broadcast along columns, matvec, extract of a row and of an element.
// CHECK: cols: max_rel_err={{.*}} OK
// AD-LABEL: miras.module @cols
// AD: func.func private @step
// AD: %[[UNIT:.*]] = arith.constant dense<[0.000000e+00, 0.000000e+00, 1.000000e+00, 0.000000e+00]> : tensor<4xf32>
// AD-NEXT: miras.outer %[[UNIT]], %{{.*}} : tensor<4xf32>, tensor<4xf32> -> tensor<4x4xf32>
// AD: %[[ONES:.*]] = arith.constant dense<1.000000e+00> : tensor<4xf32>
// AD-NEXT: miras.vecmat %[[ONES]], %{{.*}} : tensor<4xf32>, tensor<4x4xf32> -> tensor<4xf32>
miras.module @cols attributes {chunk = 1 : i64, dk = 4 : i64, dv = 4 : i64, read_after_write = true} {
  miras.memory "linear" {dk = 4 : i64, dv = 4 : i64}
  miras.bias "expression" loss {
  ^bb0(%y: tensor<4xf32>, %v: tensor<4xf32>):
    %yy = miras.outer %y, %y : tensor<4xf32>, tensor<4xf32> -> tensor<4x4xf32>
    %c = miras.broadcast %v [1] : tensor<4xf32> -> tensor<4x4xf32>
    %cy = miras.broadcast %y [1] : tensor<4xf32> -> tensor<4x4xf32>
    %a = arith.mulf %c, %yy : tensor<4x4xf32>
    %a2 = arith.mulf %a, %cy : tensor<4x4xf32>
    %x = miras.vecmat %y, %a2 : tensor<4xf32>, tensor<4x4xf32> -> tensor<4xf32>
    %w = miras.matvec %a, %y : tensor<4x4xf32>, tensor<4xf32> -> tensor<4xf32>
    %row = miras.extract %a [2] : tensor<4x4xf32> -> tensor<4xf32>
    %el = miras.extract %y [1] : tensor<4xf32> -> f32
    %p = arith.mulf %x, %w : tensor<4xf32>
    %q = arith.mulf %p, %row : tensor<4xf32>
    %s = miras.sum %q : tensor<4xf32>
    %l = arith.mulf %s, %el : f32
    miras.yield %l : f32
  }
  miras.retention "none" {}
  miras.optimizer "gd" {lr = 1.0e-01 : f64}
}
