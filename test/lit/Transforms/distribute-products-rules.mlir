// miras-distribute-products, rule by rule, on hand-written reverse steps (the
// pass reads only @step_backward; Transforms/distribute-products.mlir runs it
// on derived ones, Gated DeltaNet's and GLA's).
// RUN: miras-opt %s --miras-distribute-products --canonicalize --cse | FileCheck %s

// A Hadamard product with a rank-one matrix is reduced through a product of
// the other factor alone: sum(C o x y^T) = (x^T C) . y, the column sums
// y o ((z o x)^T C), the row sums x o (C (y o z)), with C = A + B summed once.
// CHECK-LABEL: miras.module @hadamard_rank_one
// CHECK: func.func private @step_backward(%[[A:[^:]*]]: tensor<4x4xf32>, %[[B:[^:]*]]: tensor<4x4xf32>, %[[X:[^:]*]]: tensor<4xf32>, %[[Y:[^:]*]]: tensor<4xf32>, %[[Z:[^:]*]]: tensor<4xf32>)
// CHECK-NEXT: %[[C:.*]] = arith.addf %[[A]], %[[B]] : tensor<4x4xf32>
// CHECK-NEXT: %[[XC:.*]] = miras.vecmat %[[X]], %[[C]]
// CHECK-NEXT: %[[XCY:.*]] = arith.mulf %[[XC]], %[[Y]]
// CHECK-NEXT: %[[ALL:.*]] = miras.sum %[[XCY]] : tensor<4xf32>
// CHECK-NEXT: %[[ZX:.*]] = arith.mulf %[[Z]], %[[X]]
// CHECK-NEXT: %[[ZXC:.*]] = miras.vecmat %[[ZX]], %[[C]]
// CHECK-NEXT: %[[COLS:.*]] = arith.mulf %[[Y]], %[[ZXC]]
// CHECK-NEXT: %[[YZ:.*]] = arith.mulf %[[Y]], %[[Z]]
// CHECK-NEXT: %[[CYZ:.*]] = miras.matvec %[[C]], %[[YZ]]
// CHECK-NEXT: %[[ROWS:.*]] = arith.mulf %[[X]], %[[CYZ]]
// CHECK-NEXT: return %[[ALL]], %[[COLS]], %[[ROWS]]
miras.module @hadamard_rank_one attributes {chunk = 1 : i64, dk = 4 : i64, dv = 4 : i64, read_after_write = true} {
  miras.memory "linear" {dk = 4 : i64, dv = 4 : i64}
  miras.bias "dot" loss {
  ^bb0(%y: tensor<4xf32>, %v: tensor<4xf32>):
    %p = arith.mulf %y, %v : tensor<4xf32>
    %s = miras.sum %p : tensor<4xf32>
    %l = arith.negf %s : f32
    miras.yield %l : f32
  }
  miras.retention "none" {}
  miras.optimizer "gd" {lr = 1.0 : f64}
  func.func private @step_backward(%A: tensor<4x4xf32>, %B: tensor<4x4xf32>, %x: tensor<4xf32>, %y: tensor<4xf32>, %z: tensor<4xf32>) -> (f32, tensor<4xf32>, tensor<4xf32>) {
    %xy = miras.outer %x, %y : tensor<4xf32>, tensor<4xf32> -> tensor<4x4xf32>
    %c = arith.addf %A, %B : tensor<4x4xf32>
    %h = arith.mulf %c, %xy : tensor<4x4xf32>
    %all = miras.sum %h : tensor<4x4xf32>
    %cols = miras.vecmat %z, %h : tensor<4xf32>, tensor<4x4xf32> -> tensor<4xf32>
    %rows = miras.matvec %h, %z : tensor<4x4xf32>, tensor<4xf32> -> tensor<4xf32>
    return %all, %cols, %rows : f32, tensor<4xf32>, tensor<4xf32>
  }
}

// Scalar factors common to all the matrices of a product are taken out once:
// (s A + s B) z = s ((A + B) z); a rank-one term of the same sum is vector work.
// CHECK-LABEL: miras.module @common_scalar
// CHECK: func.func private @step_backward(%[[A:[^:]*]]: tensor<4x4xf32>, %[[B:[^:]*]]: tensor<4x4xf32>, %[[X:[^:]*]]: tensor<4xf32>, %[[Y:[^:]*]]: tensor<4xf32>, %[[Z:[^:]*]]: tensor<4xf32>, %[[S:[^:]*]]: f32)
// CHECK-NOT: miras.broadcast %[[S]] [] : f32 -> tensor<4x4xf32>
// CHECK: %[[AB:.*]] = arith.addf %[[A]], %[[B]] : tensor<4x4xf32>
// CHECK: %[[P:.*]] = miras.matvec %[[AB]], %[[Z]]
// CHECK-NEXT: %[[SV:.*]] = miras.broadcast %[[S]] [] : f32 -> tensor<4xf32>
// CHECK-NEXT: arith.mulf %[[SV]], %[[P]] : tensor<4xf32>
// CHECK-NOT: miras.matvec
// CHECK: return
miras.module @common_scalar attributes {chunk = 1 : i64, dk = 4 : i64, dv = 4 : i64, read_after_write = true} {
  miras.memory "linear" {dk = 4 : i64, dv = 4 : i64}
  miras.bias "dot" loss {
  ^bb0(%y: tensor<4xf32>, %v: tensor<4xf32>):
    %p = arith.mulf %y, %v : tensor<4xf32>
    %s = miras.sum %p : tensor<4xf32>
    %l = arith.negf %s : f32
    miras.yield %l : f32
  }
  miras.retention "none" {}
  miras.optimizer "gd" {lr = 1.0 : f64}
  func.func private @step_backward(%A: tensor<4x4xf32>, %B: tensor<4x4xf32>, %x: tensor<4xf32>, %y: tensor<4xf32>, %z: tensor<4xf32>, %s: f32) -> tensor<4xf32> {
    %sm = miras.broadcast %s [] : f32 -> tensor<4x4xf32>
    %sa = arith.mulf %sm, %A : tensor<4x4xf32>
    %sb = arith.mulf %sm, %B : tensor<4x4xf32>
    %sum = arith.addf %sa, %sb : tensor<4x4xf32>
    %xy = miras.outer %x, %y : tensor<4xf32>, tensor<4xf32> -> tensor<4x4xf32>
    %m = arith.addf %sum, %xy : tensor<4x4xf32>
    %p = miras.matvec %m, %z : tensor<4x4xf32>, tensor<4xf32> -> tensor<4xf32>
    return %p : tensor<4xf32>
  }
}

// Left alone: a product of a plain matrix, and a sum over A o (B + x y^T)
// whose x^T A is nowhere computed (taking the term out would add a sweep).
// CHECK-LABEL: miras.module @unchanged
// CHECK: %[[P:.*]] = miras.matvec %arg0, %arg4
// CHECK-NEXT: %[[XY:.*]] = miras.outer %arg2, %arg3
// CHECK-NEXT: %[[BXY:.*]] = arith.addf %arg1, %[[XY]]
// CHECK-NEXT: %[[H:.*]] = arith.mulf %arg0, %[[BXY]]
// CHECK-NEXT: %[[ALL:.*]] = miras.sum %[[H]] : tensor<4x4xf32>
// CHECK-NEXT: return %[[P]], %[[ALL]]
miras.module @unchanged attributes {chunk = 1 : i64, dk = 4 : i64, dv = 4 : i64, read_after_write = true} {
  miras.memory "linear" {dk = 4 : i64, dv = 4 : i64}
  miras.bias "dot" loss {
  ^bb0(%y: tensor<4xf32>, %v: tensor<4xf32>):
    %p = arith.mulf %y, %v : tensor<4xf32>
    %s = miras.sum %p : tensor<4xf32>
    %l = arith.negf %s : f32
    miras.yield %l : f32
  }
  miras.retention "none" {}
  miras.optimizer "gd" {lr = 1.0 : f64}
  func.func private @step_backward(%A: tensor<4x4xf32>, %B: tensor<4x4xf32>, %x: tensor<4xf32>, %y: tensor<4xf32>, %z: tensor<4xf32>) -> (tensor<4xf32>, f32) {
    %p = miras.matvec %A, %z : tensor<4x4xf32>, tensor<4xf32> -> tensor<4xf32>
    %xy = miras.outer %x, %y : tensor<4xf32>, tensor<4xf32> -> tensor<4x4xf32>
    %bxy = arith.addf %B, %xy : tensor<4x4xf32>
    %h = arith.mulf %A, %bxy : tensor<4x4xf32>
    %all = miras.sum %h : tensor<4x4xf32>
    return %p, %all : tensor<4xf32>, f32
  }
}

// Factors every matrix of a sum has move out of the product once, row and
// column scalings and a constant's magnitude too: (r o (A + B)) z = r o ((A + B) z)
// and w^T (3 A - 3 B) = 3 (w^T (A - B)), never one multiply per term.
// CHECK-LABEL: miras.module @common_factors
// CHECK: func.func private @step_backward(%[[A:[^:]*]]: tensor<6x4xf32>, %[[B:[^:]*]]: tensor<6x4xf32>, %[[R:[^:]*]]: tensor<6xf32>, %[[Z:[^:]*]]: tensor<4xf32>, %[[W:[^:]*]]: tensor<6xf32>)
// CHECK-NEXT: %[[THREE:.*]] = arith.constant dense<3.000000e+00> : tensor<4xf32>
// CHECK-NEXT: %[[AB:.*]] = arith.addf %[[A]], %[[B]] : tensor<6x4xf32>
// CHECK-NEXT: %[[P:.*]] = miras.matvec %[[AB]], %[[Z]]
// CHECK-NEXT: %[[RP:.*]] = arith.mulf %[[P]], %[[R]] : tensor<6xf32>
// CHECK-NEXT: %[[AMB:.*]] = arith.subf %[[A]], %[[B]] : tensor<6x4xf32>
// CHECK-NEXT: %[[Q:.*]] = miras.vecmat %[[W]], %[[AMB]]
// CHECK-NEXT: %[[Q3:.*]] = arith.mulf %[[Q]], %[[THREE]] : tensor<4xf32>
// CHECK-NEXT: return %[[RP]], %[[Q3]]
miras.module @common_factors attributes {chunk = 1 : i64, dk = 4 : i64, dv = 4 : i64, read_after_write = true} {
  miras.memory "linear" {dk = 4 : i64, dv = 4 : i64}
  miras.bias "dot" loss {
  ^bb0(%y: tensor<4xf32>, %v: tensor<4xf32>):
    %p = arith.mulf %y, %v : tensor<4xf32>
    %s = miras.sum %p : tensor<4xf32>
    %l = arith.negf %s : f32
    miras.yield %l : f32
  }
  miras.retention "none" {}
  miras.optimizer "gd" {lr = 1.0 : f64}
  func.func private @step_backward(%A: tensor<6x4xf32>, %B: tensor<6x4xf32>, %r: tensor<6xf32>, %z: tensor<4xf32>, %w: tensor<6xf32>) -> (tensor<6xf32>, tensor<4xf32>) {
    %rb = miras.broadcast %r [0] : tensor<6xf32> -> tensor<6x4xf32>
    %ab = arith.addf %A, %B : tensor<6x4xf32>
    %rab = arith.mulf %rb, %ab : tensor<6x4xf32>
    %p = miras.matvec %rab, %z : tensor<6x4xf32>, tensor<4xf32> -> tensor<6xf32>
    %three = arith.constant dense<3.0> : tensor<6x4xf32>
    %amb = arith.subf %A, %B : tensor<6x4xf32>
    %s = arith.mulf %three, %amb : tensor<6x4xf32>
    %q = miras.vecmat %w, %s : tensor<6xf32>, tensor<6x4xf32> -> tensor<4xf32>
    return %p, %q : tensor<6xf32>, tensor<4xf32>
  }
}

// A sum of matrices with no rank-one term and no common factor is left as
// it is (rewriting it would only reassociate the sum), and a reverse step that
// is only declared is skipped.
// CHECK-LABEL: miras.module @no_gain
// CHECK: %[[BC:.*]] = arith.addf %arg1, %arg2 : tensor<6x4xf32>
// CHECK-NEXT: %[[ABC:.*]] = arith.addf %arg0, %[[BC]] : tensor<6x4xf32>
// CHECK-NEXT: miras.matvec %[[ABC]], %arg3
miras.module @no_gain attributes {chunk = 1 : i64, dk = 4 : i64, dv = 4 : i64, read_after_write = true} {
  miras.memory "linear" {dk = 4 : i64, dv = 4 : i64}
  miras.bias "dot" loss {
  ^bb0(%y: tensor<4xf32>, %v: tensor<4xf32>):
    %p = arith.mulf %y, %v : tensor<4xf32>
    %s = miras.sum %p : tensor<4xf32>
    %l = arith.negf %s : f32
    miras.yield %l : f32
  }
  miras.retention "none" {}
  miras.optimizer "gd" {lr = 1.0 : f64}
  func.func private @step_backward(%A: tensor<6x4xf32>, %B: tensor<6x4xf32>, %C: tensor<6x4xf32>, %z: tensor<4xf32>) -> tensor<6xf32> {
    %bc = arith.addf %B, %C : tensor<6x4xf32>
    %abc = arith.addf %A, %bc : tensor<6x4xf32>
    %p = miras.matvec %abc, %z : tensor<6x4xf32>, tensor<4xf32> -> tensor<6xf32>
    return %p : tensor<6xf32>
  }
}

// CHECK-LABEL: miras.module @declared
// CHECK: func.func private @step_backward(tensor<4x4xf32>) -> tensor<4xf32>
miras.module @declared attributes {chunk = 1 : i64, dk = 4 : i64, dv = 4 : i64, read_after_write = true} {
  miras.memory "linear" {dk = 4 : i64, dv = 4 : i64}
  miras.bias "dot" loss {
  ^bb0(%y: tensor<4xf32>, %v: tensor<4xf32>):
    %p = arith.mulf %y, %v : tensor<4xf32>
    %s = miras.sum %p : tensor<4xf32>
    %l = arith.negf %s : f32
    miras.yield %l : f32
  }
  miras.retention "none" {}
  miras.optimizer "gd" {lr = 1.0 : f64}
  func.func private @step_backward(tensor<4x4xf32>) -> tensor<4xf32>
}
