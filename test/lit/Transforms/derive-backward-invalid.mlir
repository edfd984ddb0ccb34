// miras-derive-backward needs the derived step (miras-derive-update first).
// RUN: miras-opt %s --miras-derive-backward -verify-diagnostics

// expected-error @+1 {{no derived step function: run miras-derive-update first}}
miras.module @underived attributes {chunk = 1 : i64, dk = 4 : i64, dv = 4 : i64, read_after_write = true} {
  miras.memory "linear" {dk = 4 : i64, dv = 4 : i64}
  miras.bias "dot" loss {
  ^bb0(%y: tensor<4xf32>, %v: tensor<4xf32>):
    %p = arith.mulf %y, %v : tensor<4xf32>
    %s = miras.sum %p : tensor<4xf32>
    miras.yield %s : f32
  }
  miras.retention "none" {}
  miras.optimizer "gd" {lr = 0.5 : f64}
}
