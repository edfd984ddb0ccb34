// miras-distribute-products on the reverse step of Gated DeltaNet's rule,
// W' = a W - eta (a W k - v) k^T, o = W' q. With G = dW' + do q^T, e = a W k - v,
// u = eta e and s = eta G k, reverse mode builds
//   dq = (a W - u k^T)^T do,  G k,  G^T u,  (a W)^T s,  da = sum((G - s k^T) o W),
// every product reading a sum of matrices. Distributed, each matrix product
// reads one plain matrix (W or dW'), the rank-one terms become vector work, and
// da reuses W^T do and W k, which the step computes already:
//   dq = a W^T do - (do . u) k,     G k = dW' k + do (q . k),
//   G^T u = dW'^T u + (do . u) q,   da = <dW', W> + (W^T do) . q - s . (W k).
// RUN: miras-opt %s --miras-derive --miras-derive-backward --miras-distribute-products --canonicalize --cse | FileCheck %s --check-prefixes=CHECK,GLA
// In the miras-backward pipeline, miras-tape-recomputed-products first takes
// a W k, the step's own product, as the argument p1: the rest is the same.
// RUN: miras-opt %s --miras-derive --miras-backward | FileCheck %s --check-prefixes=TAPED,GLA

// CHECK-LABEL: func.func private @step_backward(
// CHECK-SAME: %[[W:[^:]*]]: tensor<4x4xf32> {miras.name = "W"}, %[[Q:[^:]*]]: tensor<4xf32> {miras.name = "q"}, %[[K:[^:]*]]: tensor<4xf32> {miras.name = "k"}, %[[V:[^:]*]]: tensor<4xf32> {miras.name = "v"}, %[[ETA:[^:]*]]: f32 {miras.name = "eta"}, %[[A:[^:]*]]: f32 {miras.name = "alpha"}, %[[DWN:[^:]*]]: tensor<4x4xf32> {miras.name = "dW_next"}, %[[DO:[^:]*]]: tensor<4xf32> {miras.name = "do"})
// Every matrix product reads W or dW' itself, never a sum or a scaled matrix.
// CHECK-DAG: %[[WK:.*]] = miras.matvec %[[W]], %[[K]]
// CHECK-DAG: %[[WTDO:.*]] = miras.vecmat %[[DO]], %[[W]]
// CHECK-DAG: miras.matvec %[[DWN]], %[[K]]
// CHECK-DAG: miras.vecmat %{{.*}}, %[[DWN]]
// CHECK-DAG: miras.vecmat %{{.*}}, %[[W]]
// da: <dW', W> is the one sum over a matrix, W^T do and W k are reused.
// CHECK-DAG: %[[GW:.*]] = arith.mulf %[[DWN]], %[[W]] : tensor<4x4xf32>
// CHECK-DAG: miras.sum %[[GW]] : tensor<4x4xf32>
// CHECK-DAG: arith.mulf %[[WTDO]], %[[Q]] : tensor<4xf32>
// CHECK-DAG: arith.mulf %{{.*}}, %[[WK]] : tensor<4xf32>
// CHECK: return

// ... and those are all of them: two matvecs, three vecmats, one matrix sum
// (the DAG lines above match distinct ops); one matvec less in the pipeline.

// TAPED: miras.matvec %{{.*}}, %{{.*}} {miras.tape = 0 : i64}
// TAPED-LABEL: func.func private @step_backward(
// TAPED-SAME: %[[W:[^:]*]]: tensor<4x4xf32> {miras.name = "W"}, %[[Q:[^:]*]]: tensor<4xf32> {miras.name = "q"}, %[[K:[^:]*]]: tensor<4xf32> {miras.name = "k"}, %[[V:[^:]*]]: tensor<4xf32> {miras.name = "v"}, %[[ETA:[^:]*]]: f32 {miras.name = "eta"}, %[[A:[^:]*]]: f32 {miras.name = "alpha"}, %[[DWN:[^:]*]]: tensor<4x4xf32> {miras.name = "dW_next"}, %[[DO:[^:]*]]: tensor<4xf32> {miras.name = "do"}, %[[P:[^:]*]]: tensor<4xf32> {miras.name = "p1", miras.tape = 0 : i64})
// TAPED-DAG: arith.subf %[[P]], %[[V]] : tensor<4xf32>
// TAPED-DAG: %[[WTDO:.*]] = miras.vecmat %[[DO]], %[[W]]
// TAPED-DAG: miras.matvec %[[DWN]], %[[K]]
// TAPED-DAG: miras.vecmat %{{.*}}, %[[DWN]]
// TAPED-DAG: miras.vecmat %{{.*}}, %[[W]]
// TAPED-DAG: %[[GW:.*]] = arith.mulf %[[DWN]], %[[W]] : tensor<4x4xf32>
// TAPED-DAG: miras.sum %[[GW]] : tensor<4x4xf32>
// TAPED-DAG: arith.mulf %[[WTDO]], %[[Q]] : tensor<4xf32>
// TAPED: return
// RUN: miras-opt %s --miras-derive --miras-backward | FileCheck %s --check-prefix=COUNT
// COUNT-LABEL: func.func private @step_backward(
// COUNT-COUNT-1: miras.matvec
// COUNT-NOT: miras.matvec
// COUNT-LABEL: miras.module @gla
// RUN: miras-opt %s --miras-derive --miras-backward | FileCheck %s --check-prefix=VECMAT
// VECMAT-LABEL: func.func private @step_backward(
// VECMAT-COUNT-3: miras.vecmat
// VECMAT-NOT: miras.vecmat
// VECMAT-LABEL: miras.module @gla
// RUN: miras-opt %s --miras-derive --miras-backward | FileCheck %s --check-prefix=SUM
// SUM-LABEL: func.func private @step_backward(
// SUM-COUNT-1: miras.sum %{{.*}} : tensor<4x4xf32>
// SUM-NOT: miras.sum %{{.*}} : tensor<4x4xf32>
// SUM-LABEL: miras.module @gla
miras.module @gated_deltanet attributes {chunk = 1 : i64, dk = 4 : i64, dv = 4 : i64, read_after_write = true} {
  miras.gate @eta : scalar
  miras.gate @alpha : scalar
  miras.memory "linear" {dk = 4 : i64, dv = 4 : i64}
  miras.bias "l2" loss {
  ^bb0(%y: tensor<4xf32>, %v: tensor<4xf32>):
    %e = arith.subf %y, %v : tensor<4xf32>
    %sq = arith.mulf %e, %e : tensor<4xf32>
    %s = miras.sum %sq : tensor<4xf32>
    %half = arith.constant 5.000000e-01 : f32
    %l = arith.mulf %half, %s : f32
    miras.yield %l : f32
  }
  miras.retention "l2" {decay = @alpha, order = "before_gradient"}
  miras.optimizer "gd" {lr = @eta}
}

// GLA's rule, W' = W o 1 alpha^T + v k^T: the column decay moves to the vector,
// dq = (W o 1 alpha^T)^T do = alpha o (W^T do), and the decay's adjoint, the
// column sums of (dW' + do q^T) o W, takes its rank-one term from that same
// W^T do: 1^T (dW' o W) + q o (W^T do).
// GLA-LABEL: miras.module @gla
// GLA-LABEL: func.func private @step_backward(
// GLA-SAME: %[[W:[^:]*]]: tensor<4x4xf32> {miras.name = "W"}, %[[Q:[^:]*]]: tensor<4xf32> {miras.name = "q"}, %[[K:[^:]*]]: tensor<4xf32> {miras.name = "k"}, %[[V:[^:]*]]: tensor<4xf32> {miras.name = "v"}, %[[A:[^:]*]]: tensor<4xf32> {miras.name = "alpha"}, %[[DWN:[^:]*]]: tensor<4x4xf32> {miras.name = "dW_next"}, %[[DO:[^:]*]]: tensor<4xf32> {miras.name = "do"})
// GLA-DAG: %[[WTDO:.*]] = miras.vecmat %[[DO]], %[[W]]
// GLA-DAG: arith.mulf %[[WTDO]], %[[A]] : tensor<4xf32>
// GLA-DAG: %[[GW:.*]] = arith.mulf %[[DWN]], %[[W]] : tensor<4x4xf32>
// GLA-DAG: miras.vecmat %{{.*}}, %[[GW]]
// GLA-DAG: arith.mulf %[[Q]], %[[WTDO]] : tensor<4xf32>
// GLA-DAG: miras.vecmat %[[V]], %[[DWN]]
// GLA-DAG: miras.matvec %[[DWN]], %[[K]]
// GLA: return
// RUN: miras-opt %s --miras-derive --miras-backward | FileCheck %s --check-prefix=GLAMATVEC
// GLAMATVEC-LABEL: miras.module @gla
// GLAMATVEC-LABEL: func.func private @step_backward(
// GLAMATVEC-COUNT-1: miras.matvec
// GLAMATVEC-NOT: miras.matvec
// RUN: miras-opt %s --miras-derive --miras-backward | FileCheck %s --check-prefix=GLAVECMAT
// GLAVECMAT-LABEL: miras.module @gla
// GLAVECMAT-LABEL: func.func private @step_backward(
// GLAVECMAT-COUNT-3: miras.vecmat
// GLAVECMAT-NOT: miras.vecmat
miras.module @gla attributes {chunk = 1 : i64, dk = 4 : i64, dv = 4 : i64, read_after_write = true} {
  miras.gate @alpha : channel along "dk" dim 4
  miras.memory "linear" {dk = 4 : i64, dv = 4 : i64}
  miras.bias "dot" loss {
  ^bb0(%y: tensor<4xf32>, %v: tensor<4xf32>):
    %p = arith.mulf %y, %v : tensor<4xf32>
    %s = miras.sum %p : tensor<4xf32>
    %l = arith.negf %s : f32
    miras.yield %l : f32
  }
  miras.retention "l2" {decay = @alpha}
  miras.optimizer "gd" {lr = 1.0 : f64}
}
