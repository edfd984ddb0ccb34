// The verifier of miras.init and of the module's starts (hand-written IR; the
// DSL's errors are test/lit/Frontend/sema-init.miras and init-rejected.miras).
// RUN: miras-opt %s -split-input-file -verify-diagnostics

miras.module @unknown_kind attributes {chunk = 1 : i64, dk = 4 : i64, dv = 4 : i64, read_after_write = true} {
  miras.gate @eta : scalar
  miras.memory "linear" {dk = 4 : i64, dv = 4 : i64}
  miras.bias "dot" loss {
  ^bb0(%y: tensor<4xf32>, %v: tensor<4xf32>):
    %p = arith.mulf %y, %v : tensor<4xf32>
    %s = miras.sum %p : tensor<4xf32>
    miras.yield %s : f32
  }
  miras.retention "none" {}
  miras.optimizer "gd" {lr = @eta}
  // expected-error @+1 {{unknown init 'ones': expected "zeros", "identity", "uniform" or "normal"}}
  miras.init "W" = "ones"
}

// -----

miras.module @normal_without_seed attributes {chunk = 1 : i64, dk = 4 : i64, dv = 4 : i64, read_after_write = true} {
  miras.gate @eta : scalar
  miras.memory "linear" {dk = 4 : i64, dv = 4 : i64}
  miras.bias "dot" loss {
  ^bb0(%y: tensor<4xf32>, %v: tensor<4xf32>):
    %p = arith.mulf %y, %v : tensor<4xf32>
    %s = miras.sum %p : tensor<4xf32>
    miras.yield %s : f32
  }
  miras.retention "none" {}
  miras.optimizer "gd" {lr = @eta}
  // expected-error @+1 {{a normal init needs a scale and a seed}}
  miras.init "W" = "normal" {scale = 1.000000e-01 : f64}
}

// -----

miras.module @zero_scale attributes {chunk = 1 : i64, dk = 4 : i64, dv = 4 : i64, read_after_write = true} {
  miras.gate @eta : scalar
  miras.memory "linear" {dk = 4 : i64, dv = 4 : i64}
  miras.bias "dot" loss {
  ^bb0(%y: tensor<4xf32>, %v: tensor<4xf32>):
    %p = arith.mulf %y, %v : tensor<4xf32>
    %s = miras.sum %p : tensor<4xf32>
    miras.yield %s : f32
  }
  miras.retention "none" {}
  miras.optimizer "gd" {lr = @eta}
  // expected-error @+1 {{init scale must be finite and non-zero, got 0}}
  miras.init "W" = "uniform" {scale = 0.000000e+00 : f64}
}

// -----

miras.module @seed_on_uniform attributes {chunk = 1 : i64, dk = 4 : i64, dv = 4 : i64, read_after_write = true} {
  miras.gate @eta : scalar
  miras.memory "linear" {dk = 4 : i64, dv = 4 : i64}
  miras.bias "dot" loss {
  ^bb0(%y: tensor<4xf32>, %v: tensor<4xf32>):
    %p = arith.mulf %y, %v : tensor<4xf32>
    %s = miras.sum %p : tensor<4xf32>
    miras.yield %s : f32
  }
  miras.retention "none" {}
  miras.optimizer "gd" {lr = @eta}
  // expected-error @+1 {{only a normal init takes a seed}}
  miras.init "W" = "uniform" {seed = 3 : i64}
}

// -----

miras.module @twice attributes {chunk = 1 : i64, dk = 4 : i64, dv = 4 : i64, read_after_write = true} {
  miras.gate @eta : scalar
  miras.memory "linear" {dk = 4 : i64, dv = 4 : i64}
  miras.bias "dot" loss {
  ^bb0(%y: tensor<4xf32>, %v: tensor<4xf32>):
    %p = arith.mulf %y, %v : tensor<4xf32>
    %s = miras.sum %p : tensor<4xf32>
    miras.yield %s : f32
  }
  miras.retention "none" {}
  miras.optimizer "gd" {lr = @eta}
  // expected-note @+1 {{first init of 'W' is here}}
  miras.init "W" = "identity"
  // expected-error @+1 {{state 'W' is initialised twice}}
  miras.init "W" = "uniform"
}

// -----

miras.module @not_a_state attributes {chunk = 1 : i64, dk = 4 : i64, dv = 4 : i64, read_after_write = true} {
  miras.gate @eta : scalar
  miras.memory "linear" {dk = 4 : i64, dv = 4 : i64}
  miras.bias "dot" loss {
  ^bb0(%y: tensor<4xf32>, %v: tensor<4xf32>):
    %p = arith.mulf %y, %v : tensor<4xf32>
    %s = miras.sum %p : tensor<4xf32>
    miras.yield %s : f32
  }
  miras.retention "none" {}
  miras.optimizer "gd" {lr = @eta}
  // expected-error @+1 {{module 'not_a_state' has no state 'A' to initialise: its states are 'W'}}
  miras.init "A" = "uniform"
}

// -----

// expected-note @+1 {{state 'W' has no init declaration, so it starts from zeros}}
miras.module @fdiv_from_zeros attributes {chunk = 1 : i64, dk = 4 : i64, dv = 4 : i64, read_after_write = true} {
  miras.gate @eta : scalar
  miras.memory "linear" {dk = 4 : i64, dv = 4 : i64}
  miras.bias "dot" loss {
  ^bb0(%y: tensor<4xf32>, %v: tensor<4xf32>):
    %p = arith.mulf %y, %v : tensor<4xf32>
    %s = miras.sum %p : tensor<4xf32>
    miras.yield %s : f32
  }
  // expected-error @+1 {{retention 'f_div' divides each row of 'W' by its sum, but from zeros every row sums to 0}}
  miras.retention "f_div" {g = "exp"}
  miras.optimizer "gd" {lr = @eta}
}
