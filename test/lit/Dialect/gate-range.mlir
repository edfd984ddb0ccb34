// A gate's declared range prints in interval notation and parses back (open and closed
// ends, infinite ends, a per-step gate); the generic form shows the attributes it is.
// RUN: miras-opt %s | miras-opt | FileCheck %s
// RUN: miras-opt %s --mlir-print-op-generic | FileCheck %s --check-prefix=GENERIC

// CHECK-LABEL: miras.module @ranges
// CHECK: miras.gate @eta : scalar in [5.000000e-02, 5.000000e-01]{{$}}
// CHECK: miras.gate @alpha : channel along "dk" dim 4 in (0.000000e+00, 1.000000e+00]{{$}}
// CHECK: miras.gate @delta : scalar in (0.000000e+00, inf){{$}}
// CHECK: miras.gate @free : scalar in (-inf, inf){{$}}
// CHECK: miras.gate @plain : scalar{{$}}
// GENERIC: "miras.gate"() <{dim = 1 : i64, range_hi = 5.000000e-01 : f64, range_hi_closed, range_lo = 5.000000e-02 : f64, range_lo_closed, sym_name = "eta"}>
// GENERIC: "miras.gate"() <{axis = "dk", channel, dim = 4 : i64, range_hi = 1.000000e+00 : f64, range_hi_closed, range_lo = 0.000000e+00 : f64, sym_name = "alpha"}>
// GENERIC: "miras.gate"() <{dim = 1 : i64, range_hi = 0x7FF0000000000000 : f64, range_lo = 0.000000e+00 : f64, sym_name = "delta"}>
// GENERIC: "miras.gate"() <{dim = 1 : i64, range_hi = 0x7FF0000000000000 : f64, range_lo = 0xFFF0000000000000 : f64, sym_name = "free"}>
// GENERIC: "miras.gate"() <{dim = 1 : i64, sym_name = "plain"}>
miras.module @ranges attributes {chunk = 1 : i64, dk = 4 : i64, dv = 4 : i64, read_after_write = true} {
  miras.gate @eta : scalar in [0.05, 0.5]
  miras.gate @alpha : channel along "dk" dim 4 in (0.0, 1.0]
  miras.gate @delta : scalar in (0.0, inf)
  miras.gate @free : scalar in (-inf, inf)
  miras.gate @plain : scalar
  miras.memory "linear" {dk = 4 : i64, dv = 4 : i64}
  miras.bias "huber" loss {
  ^bb0(%y: tensor<4xf32>, %v: tensor<4xf32>):
    %e = arith.subf %y, %v : tensor<4xf32>
    %s = miras.sum %e : tensor<4xf32>
    %d = miras.gate_value @delta : f32
    %f = miras.gate_value @free : f32
    %p = miras.gate_value @plain : f32
    %a = arith.mulf %s, %d : f32
    %b = arith.mulf %a, %f : f32
    %l = arith.mulf %b, %p : f32
    miras.yield %l : f32
  }
  miras.retention "l2" {decay = @alpha, order = "decoupled"}
  miras.optimizer "gd" {lr = @eta}
}

// CHECK-LABEL: miras.module @product
// CHECK: miras.gate @beta : scalar per_step in [1.000000e-01, 9.000000e-01]{{$}}
miras.module @product attributes {chunk = 1 : i64, dk = 4 : i64, dv = 4 : i64, read_after_write = true, steps = 2 : i64} {
  miras.gate @beta : scalar per_step in [0.1, 0.9]
  miras.memory "linear" {dk = 4 : i64, dv = 4 : i64}
  miras.bias "l2" loss {
  ^bb0(%y: tensor<4xf32>, %v: tensor<4xf32>):
    %e = arith.subf %y, %v : tensor<4xf32>
    %sq = arith.mulf %e, %e : tensor<4xf32>
    %s = miras.sum %sq : tensor<4xf32>
    miras.yield %s : f32
  }
  miras.retention "none" {}
  miras.optimizer "multistep" {lr = @beta, n = 2.0 : f64}
}
