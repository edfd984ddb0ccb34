// The verifier rejects malformed gate ranges (miras.gate range_lo / range_hi).
// RUN: miras-opt %s -split-input-file -verify-diagnostics

miras.module @lo_above_hi attributes {chunk = 1 : i64, dk = 4 : i64, dv = 4 : i64, read_after_write = true} {
  // expected-error @+1 {{range lower end 1.000000e+00 is above its upper end 0.000000e+00}}
  miras.gate @alpha : scalar in (1.0, 0.0]
  miras.memory "linear" {dk = 4 : i64, dv = 4 : i64}
  miras.bias "dot" loss {
  ^bb0(%y: tensor<4xf32>, %v: tensor<4xf32>):
    %p = arith.mulf %y, %v : tensor<4xf32>
    %s = miras.sum %p : tensor<4xf32>
    miras.yield %s : f32
  }
  miras.retention "l2" {decay = @alpha, order = "decoupled"}
  miras.optimizer "gd" {lr = 0.5 : f64}
}

// -----

miras.module @closed_inf attributes {chunk = 1 : i64, dk = 4 : i64, dv = 4 : i64, read_after_write = true} {
  // expected-error @+1 {{an infinite range end must be open}}
  miras.gate @alpha : scalar in [0.0, inf]
  miras.memory "linear" {dk = 4 : i64, dv = 4 : i64}
  miras.bias "dot" loss {
  ^bb0(%y: tensor<4xf32>, %v: tensor<4xf32>):
    %p = arith.mulf %y, %v : tensor<4xf32>
    %s = miras.sum %p : tensor<4xf32>
    miras.yield %s : f32
  }
  miras.retention "l2" {decay = @alpha, order = "decoupled"}
  miras.optimizer "gd" {lr = 0.5 : f64}
}

// -----

miras.module @empty attributes {chunk = 1 : i64, dk = 4 : i64, dv = 4 : i64, read_after_write = true} {
  // expected-error @+1 {{range with equal ends 1.000000e+00 must be closed at both, or it is empty}}
  miras.gate @alpha : scalar in [1.0, 1.0)
  miras.memory "linear" {dk = 4 : i64, dv = 4 : i64}
  miras.bias "dot" loss {
  ^bb0(%y: tensor<4xf32>, %v: tensor<4xf32>):
    %p = arith.mulf %y, %v : tensor<4xf32>
    %s = miras.sum %p : tensor<4xf32>
    miras.yield %s : f32
  }
  miras.retention "l2" {decay = @alpha, order = "decoupled"}
  miras.optimizer "gd" {lr = 0.5 : f64}
}

// -----

miras.module @half attributes {chunk = 1 : i64, dk = 4 : i64, dv = 4 : i64, read_after_write = true} {
  // expected-error @+1 {{a range needs both range_lo and range_hi}}
  miras.gate @alpha : scalar {range_lo = 0.0 : f64}
  miras.memory "linear" {dk = 4 : i64, dv = 4 : i64}
  miras.bias "dot" loss {
  ^bb0(%y: tensor<4xf32>, %v: tensor<4xf32>):
    %p = arith.mulf %y, %v : tensor<4xf32>
    %s = miras.sum %p : tensor<4xf32>
    miras.yield %s : f32
  }
  miras.retention "l2" {decay = @alpha, order = "decoupled"}
  miras.optimizer "gd" {lr = 0.5 : f64}
}

// -----

miras.module @flags attributes {chunk = 1 : i64, dk = 4 : i64, dv = 4 : i64, read_after_write = true} {
  // expected-error @+1 {{range_lo_closed / range_hi_closed without a range}}
  miras.gate @alpha : scalar {range_lo_closed}
  miras.memory "linear" {dk = 4 : i64, dv = 4 : i64}
  miras.bias "dot" loss {
  ^bb0(%y: tensor<4xf32>, %v: tensor<4xf32>):
    %p = arith.mulf %y, %v : tensor<4xf32>
    %s = miras.sum %p : tensor<4xf32>
    miras.yield %s : f32
  }
  miras.retention "l2" {decay = @alpha, order = "decoupled"}
  miras.optimizer "gd" {lr = 0.5 : f64}
}

// -----

miras.module @nan attributes {chunk = 1 : i64, dk = 4 : i64, dv = 4 : i64, read_after_write = true} {
  // expected-error @+1 {{range ends must be numbers, not NaN}}
  miras.gate @alpha : scalar {range_lo = 0x7FF8000000000000 : f64, range_hi = 1.0 : f64}
  miras.memory "linear" {dk = 4 : i64, dv = 4 : i64}
  miras.bias "dot" loss {
  ^bb0(%y: tensor<4xf32>, %v: tensor<4xf32>):
    %p = arith.mulf %y, %v : tensor<4xf32>
    %s = miras.sum %p : tensor<4xf32>
    miras.yield %s : f32
  }
  miras.retention "l2" {decay = @alpha, order = "decoupled"}
  miras.optimizer "gd" {lr = 0.5 : f64}
}

// -----

// A parse error: a range needs both brackets.
miras.module @syntax attributes {chunk = 1 : i64, dk = 4 : i64, dv = 4 : i64, read_after_write = true} {
  // expected-error @+1 {{expected ')'}}
  miras.gate @alpha : scalar in (0.0, 1.0
  miras.memory "linear" {dk = 4 : i64, dv = 4 : i64}
  miras.bias "dot" loss {
  ^bb0(%y: tensor<4xf32>, %v: tensor<4xf32>):
    %p = arith.mulf %y, %v : tensor<4xf32>
    %s = miras.sum %p : tensor<4xf32>
    miras.yield %s : f32
  }
  miras.retention "l2" {decay = @alpha, order = "decoupled"}
  miras.optimizer "gd" {lr = 0.5 : f64}
}
