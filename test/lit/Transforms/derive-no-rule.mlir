// Reverse mode asks each op on the path from the weights to the loss for its
// DifferentiableOpInterface rule. An op without one is a located error at
// that op, naming it, through the whole derive pipeline; an op without a rule
// off that path (it only sees the target) is fine.
// RUN: miras-opt %s -split-input-file --miras-derive -verify-diagnostics

// Rejected: math.sin has no derivative rule and lies between y and the loss.
miras.module @sine attributes {chunk = 1 : i64, dk = 4 : i64, dv = 4 : i64, read_after_write = true} {
  miras.memory "linear" {dk = 4 : i64, dv = 4 : i64}
  miras.bias "expression" loss {
  ^bb0(%y: tensor<4xf32>, %v: tensor<4xf32>):
    %e = arith.subf %y, %v : tensor<4xf32>
    // expected-error @+1 {{cannot differentiate 'math.sin': no derivative rule for this op}}
    %s = math.sin %e : tensor<4xf32>
    %l = miras.sum %s : tensor<4xf32>
    miras.yield %l : f32
  }
  miras.retention "none" {}
  miras.optimizer "gd" {lr = 1.0e-01 : f64}
}

// -----

// Rejected: also an op of another dialect the bias may hold (a tensor op).
miras.module @reshape attributes {chunk = 1 : i64, dk = 4 : i64, dv = 4 : i64, read_after_write = true} {
  miras.memory "linear" {dk = 4 : i64, dv = 4 : i64}
  miras.bias "expression" loss {
  ^bb0(%y: tensor<4xf32>, %v: tensor<4xf32>):
    %e = arith.subf %y, %v : tensor<4xf32>
    %shape = arith.constant dense<[2, 2]> : tensor<2xi64>
    // expected-error @+1 {{cannot differentiate 'tensor.reshape': no derivative rule for this op}}
    %r = tensor.reshape %e(%shape) : (tensor<4xf32>, tensor<2xi64>) -> tensor<2x2xf32>
    %l = miras.sum %r : tensor<2x2xf32>
    miras.yield %l : f32
  }
  miras.retention "none" {}
  miras.optimizer "gd" {lr = 1.0e-01 : f64}
}

// -----

// Accepted: math.floor only transforms the target, which is not
// differentiated, so it needs no rule.
miras.module @floor_of_target attributes {chunk = 1 : i64, dk = 4 : i64, dv = 4 : i64, read_after_write = true} {
  miras.memory "linear" {dk = 4 : i64, dv = 4 : i64}
  miras.bias "expression" loss {
  ^bb0(%y: tensor<4xf32>, %v: tensor<4xf32>):
    %f = math.floor %v : tensor<4xf32>
    %e = arith.subf %y, %f : tensor<4xf32>
    %sq = arith.mulf %e, %e : tensor<4xf32>
    %l = miras.sum %sq : tensor<4xf32>
    miras.yield %l : f32
  }
  miras.retention "none" {}
  miras.optimizer "gd" {lr = 1.0e-01 : f64}
}
