// The component ops carry their choice as a typed attribute: the generic form
// spells it #miras.<role><"kind", {args}>, the custom form `miras.<role> "kind"
// {args}`, and both parse to the same definition in the registry.
// RUN: miras-opt %s | FileCheck %s
// RUN: miras-opt %s --mlir-print-op-generic | FileCheck %s --check-prefix=GENERIC
// RUN: miras-opt %s --mlir-print-op-generic | miras-opt | FileCheck %s
// RUN: not miras-opt %S/Inputs/unknown-choice.mlir 2>&1 | FileCheck %s --check-prefix=UNKNOWN

// CHECK: miras.memory "linear" {dk = 4 : i64, dv = 4 : i64}
// CHECK: miras.retention "lq" {decay = @alpha, q = 4.000000e+00 : f64}
// CHECK: miras.optimizer "gd" {lr = 5.000000e-01 : f64}
// GENERIC: "miras.memory"() <{choice = #miras.memory<"linear", {dk = 4 : i64, dv = 4 : i64}>}>
// GENERIC: "miras.retention"() <{choice = #miras.retention<"lq", {decay = @alpha, q = 4.000000e+00 : f64}>}>
// GENERIC: "miras.optimizer"() <{choice = #miras.optimizer<"gd", {lr = 5.000000e-01 : f64}>}>
// UNKNOWN: unknown-choice.mlir:4:{{[0-9]+}}: error: unknown retention 'forget' (supported: 'none', 'l2', 'l2_coupled', 'lq', 'kl', 'ftrl_elastic', 'bregman', 'f_div' or 'elastic_net')
miras.module @m attributes {chunk = 1 : i64, dk = 4 : i64, dv = 4 : i64, read_after_write = true} {
  miras.gate @alpha : scalar
  miras.memory "linear" {dk = 4 : i64, dv = 4 : i64}
  miras.bias "dot" loss {
  ^bb0(%y: tensor<4xf32>, %v: tensor<4xf32>):
    %p = arith.mulf %y, %v : tensor<4xf32>
    %s = miras.sum %p : tensor<4xf32>
    miras.yield %s : f32
  }
  miras.retention "lq" {decay = @alpha, q = 4.0 : f64}
  miras.optimizer "gd" {lr = 0.5 : f64}
}
