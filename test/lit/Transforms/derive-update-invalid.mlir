// A bias using an op without a derivative rule is rejected at that op.
// RUN: miras-opt %s --miras-derive-update -verify-diagnostics

miras.module @floor attributes {chunk = 1 : i64, dk = 4 : i64, dv = 4 : i64, read_after_write = true} {
  miras.memory "linear" {dk = 4 : i64, dv = 4 : i64}
  miras.bias "expression" loss {
  ^bb0(%y: tensor<4xf32>, %v: tensor<4xf32>):
    %e = arith.subf %y, %v : tensor<4xf32>
    // expected-error @+1 {{cannot differentiate 'math.floor': no derivative rule for this op}}
    %f = math.floor %e : tensor<4xf32>
    %l = miras.sum %f : tensor<4xf32>
    miras.yield %l : f32
  }
  miras.retention "none" {}
  miras.optimizer "gd" {lr = 1.0e-01 : f64}
}
