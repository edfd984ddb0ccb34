// Elastic-net retentions: FTRL keeps a dual state read through a soft
// threshold; the proximal form soft-thresholds the new state itself.
// RUN: miras-opt %s -split-input-file --miras-derive | FileCheck %s

// W = S_{eta/a}(A) = A - clip(A, -0.25, 0.25) with eta = 0.5, a = 2.
// CHECK-LABEL: miras.module @ftrl
// CHECK: func.func private @step(%[[A:.*]]: tensor<4x4xf32> {miras.name = "A"}
// CHECK-DAG: %[[HI:.*]] = arith.constant dense<2.500000e-01> : tensor<4x4xf32>
// CHECK-DAG: %[[LO:.*]] = arith.constant dense<-2.500000e-01> : tensor<4x4xf32>
// CHECK: %[[C1:.*]] = arith.maximumf %[[A]], %[[LO]]
// CHECK: %[[C2:.*]] = arith.minimumf %[[C1]], %[[HI]]
// CHECK: %[[W:.*]] = arith.subf %[[A]], %[[C2]]
// CHECK: miras.matvec %[[W]]
miras.module @ftrl attributes {chunk = 1 : i64, dk = 4 : i64, dv = 4 : i64, read_after_write = true} {
  miras.gate @eta : scalar
  miras.memory "linear" {dk = 4 : i64, dv = 4 : i64}
  miras.bias "l2" loss {
  ^bb0(%y: tensor<4xf32>, %v: tensor<4xf32>):
    %e = arith.subf %y, %v : tensor<4xf32>
    %sq = arith.mulf %e, %e : tensor<4xf32>
    %s = miras.sum %sq : tensor<4xf32>
    miras.yield %s : f32
  }
  miras.retention "ftrl_elastic" {eta = 0.5 : f64, a = 2.0 : f64, decay = 1.0 : f64}
  miras.optimizer "gd" {lr = @eta}
}

// -----

// lambda = b / (b + lr), zeta = lr lambda, gamma = lr b / (a (lr + b)).
// CHECK-LABEL: miras.module @prox
// CHECK: func.func private @step(%[[W:.*]]: tensor<4x4xf32> {miras.name = "W"}
// CHECK: %[[DEN:.*]] = arith.addf %[[LR:.*]], %{{.*}} : f32
// CHECK: %[[LAMBDA:.*]] = arith.divf %{{.*}}, %[[DEN]] : f32
// CHECK: arith.mulf %[[LR]], %[[LAMBDA]] : f32
// CHECK: %[[NEW:.*]] = arith.subf
// CHECK: arith.maximumf %[[NEW]]
// CHECK: arith.minimumf
// CHECK: %[[SHRUNK:.*]] = arith.subf %[[NEW]]
// CHECK: return %[[SHRUNK]]
miras.module @prox attributes {chunk = 1 : i64, dk = 4 : i64, dv = 4 : i64, read_after_write = true} {
  miras.gate @eta : scalar
  miras.memory "linear" {dk = 4 : i64, dv = 4 : i64}
  miras.bias "l2" loss {
  ^bb0(%y: tensor<4xf32>, %v: tensor<4xf32>):
    %e = arith.subf %y, %v : tensor<4xf32>
    %sq = arith.mulf %e, %e : tensor<4xf32>
    %s = miras.sum %sq : tensor<4xf32>
    miras.yield %s : f32
  }
  miras.retention "elastic_net" {a = 2.0 : f64, b = 4.0 : f64}
  miras.optimizer "gd" {lr = @eta}
}
