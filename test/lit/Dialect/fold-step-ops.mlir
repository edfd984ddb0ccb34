// Folders and canonicalisation patterns of the step-level ops (StepOps.cpp):
// a splat-constant operand is computed away, a negated operand of a linear
// op moves out to the result, and anything else is left as written.
// RUN: miras-opt %s -split-input-file --canonicalize | FileCheck %s

// Accepted: a broadcast constant is a splat constant; the sum, norm
// (2.5 sqrt 32), row sums, row maxima, sign and extracted entries of splats
// are constants.
// CHECK-LABEL: func.func @splat_reductions
// CHECK-DAG: %[[B:.*]] = arith.constant dense<2.500000e+00> : tensor<4x8xf32>
// CHECK-DAG: %[[S:.*]] = arith.constant 8.000000e+01 : f32
// CHECK-DAG: %[[N:.*]] = arith.constant 14.14213{{[0-9]*}} : f32
// CHECK-DAG: %[[RS:.*]] = arith.constant dense<2.000000e+01> : tensor<4xf32>
// CHECK-DAG: %[[RM:.*]] = arith.constant dense<2.500000e+00> : tensor<4xf32>
// CHECK-DAG: %[[SG:.*]] = arith.constant dense<-1.000000e+00> : tensor<8xf32>
// CHECK-DAG: %[[X:.*]] = arith.constant dense<2.500000e+00> : tensor<8xf32>
// CHECK-NOT: miras.
// CHECK: return %[[B]], %[[S]], %[[N]], %[[RS]], %[[RM]], %[[SG]], %[[X]]
func.func @splat_reductions() -> (tensor<4x8xf32>, f32, f32, tensor<4xf32>, tensor<4xf32>, tensor<8xf32>, tensor<8xf32>) {
  %c = arith.constant 2.5 : f32
  %b = miras.broadcast %c [] : f32 -> tensor<4x8xf32>
  %s = miras.sum %b : tensor<4x8xf32>
  %n = miras.norm %b : tensor<4x8xf32>
  %rs = miras.row_sum %b : tensor<4x8xf32> -> tensor<4xf32>
  %rm = miras.row_max %b : tensor<4x8xf32> -> tensor<4xf32>
  %m = arith.constant dense<-3.0> : tensor<8xf32>
  %sg = miras.sign %m : tensor<8xf32>
  %x = miras.extract %b [1] : tensor<4x8xf32> -> tensor<8xf32>
  return %b, %s, %n, %rs, %rm, %sg, %x : tensor<4x8xf32>, f32, f32, tensor<4xf32>, tensor<4xf32>, tensor<8xf32>, tensor<8xf32>
}

// -----

// Accepted: products with a zero factor are zero whatever the other factor;
// products of splats sum `cols` equal terms per entry.
// CHECK-LABEL: func.func @bilinear_constants
// CHECK-DAG: %[[Z4:.*]] = arith.constant dense<0.000000e+00> : tensor<4xf32>
// CHECK-DAG: %[[ZM:.*]] = arith.constant dense<0.000000e+00> : tensor<4x8xf32>
// CHECK-DAG: %[[MV:.*]] = arith.constant dense<4.800000e+01> : tensor<4xf32>
// CHECK-DAG: %[[VM:.*]] = arith.constant dense<2.400000e+01> : tensor<8xf32>
// CHECK-DAG: %[[OP:.*]] = arith.constant dense<6.000000e+00> : tensor<4x8xf32>
// CHECK-NOT: miras.
// CHECK: return %[[Z4]], %[[ZM]], %[[MV]], %[[VM]], %[[OP]]
func.func @bilinear_constants(%A: tensor<4x8xf32>, %x: tensor<8xf32>) -> (tensor<4xf32>, tensor<4x8xf32>, tensor<4xf32>, tensor<8xf32>, tensor<4x8xf32>) {
  %zero = arith.constant dense<0.0> : tensor<8xf32>
  %two = arith.constant dense<2.0> : tensor<4x8xf32>
  %three8 = arith.constant dense<3.0> : tensor<8xf32>
  %three4 = arith.constant dense<3.0> : tensor<4xf32>
  %mv0 = miras.matvec %A, %zero : tensor<4x8xf32>, tensor<8xf32> -> tensor<4xf32>
  %op0 = miras.outer %three4, %zero : tensor<4xf32>, tensor<8xf32> -> tensor<4x8xf32>
  %mv = miras.matvec %two, %three8 : tensor<4x8xf32>, tensor<8xf32> -> tensor<4xf32>
  %vm = miras.vecmat %three4, %two : tensor<4xf32>, tensor<4x8xf32> -> tensor<8xf32>
  %two8 = arith.constant dense<2.0> : tensor<8xf32>
  %op = miras.outer %three4, %two8 : tensor<4xf32>, tensor<8xf32> -> tensor<4x8xf32>
  return %mv0, %op0, %mv, %vm, %op : tensor<4xf32>, tensor<4x8xf32>, tensor<4xf32>, tensor<8xf32>, tensor<4x8xf32>
}

// -----

// Accepted: a negated operand of a linear op moves out to the result (two
// cancel), and a broadcast of a broadcast scalar is one broadcast.
// CHECK-LABEL: func.func @hoist_negations
// CHECK-SAME: (%[[A:.*]]: tensor<4x8xf32>, %[[X:.*]]: tensor<8xf32>, %[[Y:.*]]: tensor<4xf32>, %[[S:.*]]: f32)
// CHECK-DAG: %[[MV:.*]] = miras.matvec %[[A]], %[[X]] : tensor<4x8xf32>, tensor<8xf32> -> tensor<4xf32>
// CHECK-DAG: %[[NMV:.*]] = arith.negf %[[MV]] : tensor<4xf32>
// CHECK-DAG: %[[VM:.*]] = miras.vecmat %[[Y]], %[[A]]
// CHECK-DAG: %[[OP:.*]] = miras.outer %[[Y]], %[[X]]
// CHECK-DAG: %[[NOP:.*]] = arith.negf %[[OP]] : tensor<4x8xf32>
// CHECK-DAG: %[[SUM:.*]] = miras.sum %[[X]] : tensor<8xf32>
// CHECK-DAG: %[[NSUM:.*]] = arith.negf %[[SUM]] : f32
// CHECK-DAG: %[[B:.*]] = miras.broadcast %[[S]] [] : f32 -> tensor<4x8xf32>
// CHECK-DAG: %[[NB:.*]] = arith.negf %[[B]] : tensor<4x8xf32>
// CHECK: return %[[NMV]], %[[VM]], %[[NOP]], %[[NSUM]], %[[NB]]
func.func @hoist_negations(%A: tensor<4x8xf32>, %x: tensor<8xf32>, %y: tensor<4xf32>, %s: f32) -> (tensor<4xf32>, tensor<8xf32>, tensor<4x8xf32>, f32, tensor<4x8xf32>) {
  %nx = arith.negf %x : tensor<8xf32>
  %ny = arith.negf %y : tensor<4xf32>
  %nA = arith.negf %A : tensor<4x8xf32>
  %ns = arith.negf %s : f32
  %mv = miras.matvec %A, %nx : tensor<4x8xf32>, tensor<8xf32> -> tensor<4xf32>
  %vm = miras.vecmat %ny, %nA : tensor<4xf32>, tensor<4x8xf32> -> tensor<8xf32>
  %op = miras.outer %ny, %x : tensor<4xf32>, tensor<8xf32> -> tensor<4x8xf32>
  %sum = miras.sum %nx : tensor<8xf32>
  %row = miras.broadcast %ns [] : f32 -> tensor<8xf32>
  %b = miras.broadcast %row [1] : tensor<8xf32> -> tensor<4x8xf32>
  return %mv, %vm, %op, %sum, %b : tensor<4xf32>, tensor<8xf32>, tensor<4x8xf32>, f32, tensor<4x8xf32>
}

// -----

// Rejected: none of these folds. A constant that is not a splat (its rows
// differ) stays an operand, a non-zero splat times an unknown matrix is not a
// constant, and a broadcast of a vector over columns is not a scalar
// broadcast to compose.
// CHECK-LABEL: func.func @must_not_fold
// CHECK-SAME: (%[[A:.*]]: tensor<4x8xf32>, %[[Y:.*]]: tensor<4xf32>)
// CHECK-DAG: %[[STEP:.*]] = arith.constant dense<[1.000000e+00, 2.000000e+00, 3.000000e+00, 4.000000e+00]> : tensor<4xf32>
// CHECK-DAG: %[[ONES:.*]] = arith.constant dense<1.000000e+00> : tensor<8xf32>
// CHECK-DAG: %[[B:.*]] = miras.broadcast %[[STEP]] [0] : tensor<4xf32> -> tensor<4x8xf32>
// CHECK-DAG: %[[S:.*]] = miras.sum %[[STEP]] : tensor<4xf32>
// CHECK-DAG: %[[MV:.*]] = miras.matvec %[[A]], %[[ONES]]
// CHECK-DAG: %[[OP:.*]] = miras.outer %[[Y]], %[[ONES]]
// CHECK-DAG: %[[V:.*]] = miras.broadcast %[[Y]] [0] : tensor<4xf32> -> tensor<4x8xf32>
// CHECK: return %[[B]], %[[S]], %[[MV]], %[[OP]], %[[V]]
func.func @must_not_fold(%A: tensor<4x8xf32>, %y: tensor<4xf32>) -> (tensor<4x8xf32>, f32, tensor<4xf32>, tensor<4x8xf32>, tensor<4x8xf32>) {
  %step = arith.constant dense<[1.0, 2.0, 3.0, 4.0]> : tensor<4xf32>
  %ones = arith.constant dense<1.0> : tensor<8xf32>
  %b = miras.broadcast %step [0] : tensor<4xf32> -> tensor<4x8xf32>
  %s = miras.sum %step : tensor<4xf32>
  %mv = miras.matvec %A, %ones : tensor<4x8xf32>, tensor<8xf32> -> tensor<4xf32>
  %op = miras.outer %y, %ones : tensor<4xf32>, tensor<8xf32> -> tensor<4x8xf32>
  %v = miras.broadcast %y [0] : tensor<4xf32> -> tensor<4x8xf32>
  return %b, %s, %mv, %op, %v : tensor<4x8xf32>, f32, tensor<4xf32>, tensor<4x8xf32>, tensor<4x8xf32>
}
