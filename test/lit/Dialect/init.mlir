// miras.init prints and parses back to the same IR.
// RUN: miras-opt %s | miras-opt | FileCheck %s

// CHECK: miras.init "W1" = "normal" {scale = 2.000000e-02 : f64, seed = 7 : i64}
// CHECK: miras.init "W2" = "identity" {scale = 5.000000e-01 : f64}
// CHECK: miras.init "S1" = "uniform"{{$}}
miras.module @mlp attributes {chunk = 1 : i64, dk = 4 : i64, dv = 4 : i64, read_after_write = true} {
  miras.gate @eta : scalar
  miras.gate @mu : scalar
  miras.memory "mlp" {act = "gelu", depth = 2.0 : f64, dk = 4 : i64, dv = 4 : i64, expansion = 2.0 : f64, layernorm = 0.0 : f64, residual = 0.0 : f64}
  miras.bias "dot" loss {
  ^bb0(%y: tensor<4xf32>, %v: tensor<4xf32>):
    %p = arith.mulf %y, %v : tensor<4xf32>
    %s = miras.sum %p : tensor<4xf32>
    miras.yield %s : f32
  }
  miras.retention "none" {}
  miras.optimizer "momentum" {beta = @mu, lr = @eta}
  miras.init "W1" = "normal" {scale = 0.02 : f64, seed = 7 : i64}
  miras.init "W2" = "identity" {scale = 0.5 : f64}
  miras.init "S1" = "uniform"
}
