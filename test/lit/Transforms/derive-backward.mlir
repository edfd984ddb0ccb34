// miras-derive-backward: the reverse step of the derived step, its signature
// (StepSignature's adjoint groups) and the closed form for DeltaNet,
// W' = W - eta (W k - v) k^T, o = W' q. With G = dW' + do q^T:
//   dW = G - eta (G k) k^T,  dv = eta G k,  deta = -<G k, W k - v>,
//   dq = W'^T do,  dk = -G^T (eta e) - W^T (eta G k).
// The derivation alone (miras-derive-backward): the matrices as reverse mode
// builds them; miras-distribute-products (distribute-products.mlir) rewrites
// the products after it in the miras-backward pipeline.
// RUN: miras-opt %s --miras-derive --miras-derive-backward | FileCheck %s

// CHECK-LABEL: func.func private @step_backward(
// CHECK-SAME: %[[W:.*]]: tensor<4x4xf32> {miras.name = "W"}, %[[Q:.*]]: tensor<4xf32> {miras.name = "q"}, %[[K:.*]]: tensor<4xf32> {miras.name = "k"}, %[[V:.*]]: tensor<4xf32> {miras.name = "v"}, %[[ETA:.*]]: f32 {miras.name = "eta"}, %[[DWN:.*]]: tensor<4x4xf32> {miras.name = "dW_next"}, %[[DO:.*]]: tensor<4xf32> {miras.name = "do"})
// CHECK-SAME: -> (tensor<4x4xf32> {miras.name = "dW"}, tensor<4xf32> {miras.name = "dq"}, tensor<4xf32> {miras.name = "dk"}, tensor<4xf32> {miras.name = "dv"}, f32 {miras.name = "deta"})
// The read's adjoint joins the next state's: G = dW' + do q^T.
// CHECK-DAG: %[[DOQ:.*]] = miras.outer %[[DO]], %[[Q]]
// CHECK-DAG: %[[G:.*]] = arith.addf %[[DWN]], %[[DOQ]]
// CHECK-DAG: %[[GK:.*]] = miras.matvec %[[G]], %[[K]]
// CHECK: return
miras.module @deltanet attributes {chunk = 1 : i64, dk = 4 : i64, dv = 4 : i64, read_after_write = true} {
  miras.gate @eta : scalar
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
  miras.retention "none" {}
  miras.optimizer "gd" {lr = @eta}
}

