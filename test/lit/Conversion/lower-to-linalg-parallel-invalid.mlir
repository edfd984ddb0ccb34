// algorithm=chunked is an error without chunk > 1 (auto then stays
// sequential); a step outside the dual form's class gets the scan form.
// RUN: not miras-opt %s --split-input-file --pass-pipeline='builtin.module(miras-derive,miras-to-linalg{algorithm=chunked})' 2>&1 | FileCheck %s
// RUN: miras-opt %s --split-input-file --pass-pipeline='builtin.module(miras-derive,miras-to-linalg)' | FileCheck %s --check-prefix=AUTO
// RUN: not miras-opt %s --split-input-file --pass-pipeline='builtin.module(miras-derive,miras-to-linalg{algorithm=fastest})' 2>&1 | FileCheck %s --check-prefix=UNKNOWN

// CHECK: error: the chunked algorithm does not apply: it needs chunk > 1 (the sequential algorithm does)
// AUTO: func.func @exact_kernel{{.*}}miras.algorithm = "sequential"
// UNKNOWN: error: unknown algorithm 'fastest': expected auto, sequential or chunked
miras.module @exact attributes {chunk = 1 : i64, dk = 4 : i64, dv = 4 : i64, read_after_write = true} {
  miras.memory "linear" {dk = 4 : i64, dv = 4 : i64}
  miras.bias "dot" loss {
  ^bb0(%y: tensor<4xf32>, %v: tensor<4xf32>):
    %p = arith.mulf %y, %v : tensor<4xf32>
    %s = miras.sum %p : tensor<4xf32>
    %n = arith.negf %s : f32
    miras.yield %n : f32
  }
  miras.retention "none" {}
  miras.optimizer "gd" {lr = 1.0 : f64}
}

// -----

// A channel gate on Dv decays W row by row: no dual form, so the scan form
// (gradients for the whole chunk, the state update token by token).
// CHECK: func.func @channel_kernel{{.*}}miras.algorithm = "chunked-scan"
// AUTO: func.func @channel_kernel{{.*}}miras.algorithm = "chunked-scan"
miras.module @channel attributes {chunk = 4 : i64, dk = 4 : i64, dv = 4 : i64, read_after_write = true} {
  miras.gate @alpha : channel along "dv" dim 4
  miras.memory "linear" {dk = 4 : i64, dv = 4 : i64}
  miras.bias "dot" loss {
  ^bb0(%y: tensor<4xf32>, %v: tensor<4xf32>):
    %p = arith.mulf %y, %v : tensor<4xf32>
    %s = miras.sum %p : tensor<4xf32>
    %n = arith.negf %s : f32
    miras.yield %n : f32
  }
  miras.retention "l2" {decay = @alpha, order = "decoupled"}
  miras.optimizer "gd" {lr = 1.0 : f64}
}
