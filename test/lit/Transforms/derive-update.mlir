// miras-derive-update: the four choices become an explicit step function.
// One RUN line per stage: the reverse-mode output of each VJP rule as built
// (AD, simplify=false), the pass as run by the compiler, which folds while it
// builds (RAW), and the named pipeline with canonicalisation and CSE (FINAL).
// RUN: miras-opt %s -split-input-file --miras-derive-update=simplify=false | FileCheck %s --check-prefix=AD
// RUN: miras-opt %s -split-input-file --miras-derive-update | FileCheck %s --check-prefix=RAW
// RUN: miras-opt %s -split-input-file --miras-derive | FileCheck %s --check-prefix=FINAL

// DeltaNet: l2 bias, no retention, gd. psi = W k - v comes out of reverse mode
// with the constants 0.5 and 2 folded away.
// Unsimplified: d/de of 0.5 * sum(e^2) is 1 * 0.5, broadcast, times 2 e^(2 - 1);
// the step then scales the outer product by eta.
// AD-LABEL: miras.module @deltanet
// AD: func.func private @step
// AD: %[[E:.*]] = arith.subf
// AD: %[[ONE:.*]] = arith.constant 1.000000e+00 : f32
// AD: %[[G:.*]] = arith.mulf %[[ONE]], %{{.*}} : f32
// AD: %[[GB:.*]] = miras.broadcast %[[G]] [] : f32 -> tensor<4xf32>
// AD: %[[PM1:.*]] = arith.subf %{{.*}}, %{{.*}} : tensor<4xf32>
// AD: %[[POW:.*]] = math.powf %[[E]], %[[PM1]]
// AD: %[[D:.*]] = arith.mulf %{{.*}}, %[[POW]]
// AD: %[[PSI:.*]] = arith.mulf %[[GB]], %[[D]]
// AD: %[[OUT:.*]] = miras.outer %[[PSI]], %{{.*}} : tensor<4xf32>, tensor<4xf32> -> tensor<4x4xf32>
// AD: %[[LR:.*]] = miras.broadcast %{{.*}} [] : f32 -> tensor<4x4xf32>
// AD: %[[STEP:.*]] = arith.mulf %[[LR]], %[[OUT]]
// AD: arith.subf %{{.*}}, %[[STEP]] : tensor<4x4xf32>
// RAW-LABEL: miras.module @deltanet
// RAW: func.func private @step(%[[W:.*]]: tensor<4x4xf32> {miras.name = "W"}, %[[Q:.*]]: tensor<4xf32> {miras.name = "q"}, %[[K:.*]]: tensor<4xf32> {miras.name = "k"}, %[[V:.*]]: tensor<4xf32> {miras.name = "v"}, %[[ETA:.*]]: f32 {miras.name = "eta"})
// RAW-NEXT: %[[Y:.*]] = miras.matvec %[[W]], %[[K]]
// RAW-NEXT: %[[E:.*]] = arith.subf %[[Y]], %[[V]] : tensor<4xf32>
// RAW-NEXT: %[[LR:.*]] = miras.broadcast %[[ETA]] [] : f32 -> tensor<4xf32>
// RAW-NEXT: %[[U:.*]] = arith.mulf %[[LR]], %[[E]] : tensor<4xf32>
// RAW-NEXT: %[[G:.*]] = miras.outer %[[U]], %[[K]]
// RAW-NEXT: %[[WN:.*]] = arith.subf %[[W]], %[[G]] : tensor<4x4xf32>
// RAW-NEXT: %[[O:.*]] = miras.matvec %[[WN]], %[[Q]]
// RAW-NEXT: return %[[WN]], %[[O]]
// FINAL-LABEL: miras.module @deltanet
// FINAL: func.func private @step
// FINAL-NOT: math.powf
// FINAL: miras.outer
// FINAL-NOT: math.powf
// FINAL: return
miras.module @deltanet attributes {chunk = 1 : i64, dk = 4 : i64, dv = 4 : i64, read_after_write = true} {
  miras.gate @eta : scalar
  miras.memory "linear" {dk = 4 : i64, dv = 4 : i64}
  miras.bias "l2" loss {
  ^bb0(%y: tensor<4xf32>, %v: tensor<4xf32>):
    %e = arith.subf %y, %v : tensor<4xf32>
    %two = arith.constant dense<2.0> : tensor<4xf32>
    %sq = math.powf %e, %two : tensor<4xf32>
    %s = miras.sum %sq : tensor<4xf32>
    %h = arith.constant 0.5 : f32
    %l = arith.mulf %h, %s : f32
    miras.yield %l : f32
  }
  miras.retention "none" {}
  miras.optimizer "gd" {lr = @eta}
}

// -----

// Gated DeltaNet variant with a value-axis channel gate applied before the
// gradient: the decay scales rows (broadcast along dim 0) and the gradient is
// taken at the decayed state. Read before write uses the old state.
// RAW-LABEL: miras.module @rows_before
// RAW: %[[A:.*]] = miras.broadcast %{{.*}} [0] : tensor<4xf32> -> tensor<4x4xf32>
// RAW-NEXT: %[[WD:.*]] = arith.mulf %[[A]], %[[W:.*]] : tensor<4x4xf32>
// RAW-NEXT: %[[Y:.*]] = miras.matvec %[[WD]], %{{.*}}
// RAW: %[[WN:.*]] = arith.subf %[[WD]], %{{.*}} : tensor<4x4xf32>
// RAW-NEXT: %[[O:.*]] = miras.matvec %[[W]], %{{.*}}
// RAW-NEXT: return %[[WN]], %[[O]]
miras.module @rows_before attributes {chunk = 1 : i64, dk = 4 : i64, dv = 4 : i64, read_after_write = false} {
  miras.gate @alpha : channel along "dv" dim 4
  miras.memory "linear" {dk = 4 : i64, dv = 4 : i64}
  miras.bias "l2" loss {
  ^bb0(%y: tensor<4xf32>, %v: tensor<4xf32>):
    %e = arith.subf %y, %v : tensor<4xf32>
    %sq = arith.mulf %e, %e : tensor<4xf32>
    %s = miras.sum %sq : tensor<4xf32>
    %h = arith.constant 0.5 : f32
    %l = arith.mulf %h, %s : f32
    miras.yield %l : f32
  }
  miras.retention "l2" {decay = @alpha, order = "before_gradient"}
  miras.optimizer "gd" {lr = 1.0e-01 : f64}
}

// -----

// lp with p = 3 (exact): psi = 3 |e|^2 sign(e) by the abs and pow rules; the
// factor 3 and the learning rate 0.1 are collected into one constant.
// RAW-LABEL: miras.module @lp3
// RAW: func.func private @step
// RAW: %[[E:.*]] = arith.subf
// RAW-NEXT: %[[ABS:.*]] = math.absf %[[E]]
// RAW-NEXT: %[[SQ:.*]] = arith.mulf %[[ABS]], %[[ABS]]
// RAW-NEXT: %[[S:.*]] = miras.sign %[[E]]
// RAW-NEXT: %[[D:.*]] = arith.mulf %[[SQ]], %[[S]]
// RAW-NEXT: %[[C:.*]] = arith.constant dense<3.000000e-01>
// RAW-NEXT: %[[U:.*]] = arith.mulf %[[D]], %[[C]]
// RAW-NEXT: miras.outer %[[U]]
miras.module @lp3 attributes {chunk = 1 : i64, dk = 4 : i64, dv = 4 : i64, read_after_write = true} {
  miras.memory "linear" {dk = 4 : i64, dv = 4 : i64}
  miras.bias "lp" loss {
  ^bb0(%y: tensor<4xf32>, %v: tensor<4xf32>):
    %e = arith.subf %y, %v : tensor<4xf32>
    %a = math.absf %e : tensor<4xf32>
    %p = arith.constant dense<3.0> : tensor<4xf32>
    %ap = math.powf %a, %p : tensor<4xf32>
    %l = miras.sum %ap : tensor<4xf32>
    miras.yield %l : f32
  }
  miras.retention "none" {}
  miras.optimizer "gd" {lr = 1.0e-01 : f64}
}

// -----

// An error-signal bias is used as written (no differentiation).
// RAW-LABEL: miras.module @signal
// RAW: func.func private @step
// RAW: %[[Y:.*]] = miras.matvec
// RAW-NEXT: %[[E:.*]] = arith.subf %[[Y]]
// RAW-NEXT: %[[T:.*]] = math.tanh %[[E]]
// RAW-NEXT: %[[LR:.*]] = miras.broadcast
// RAW-NEXT: %[[U:.*]] = arith.mulf %[[LR]], %[[T]]
// RAW-NEXT: miras.outer %[[U]]
miras.module @signal attributes {chunk = 1 : i64, dk = 4 : i64, dv = 4 : i64, read_after_write = true} {
  miras.gate @eta : scalar
  miras.memory "linear" {dk = 4 : i64, dv = 4 : i64}
  miras.bias "expression" error_signal {
  ^bb0(%y: tensor<4xf32>, %v: tensor<4xf32>):
    %e = arith.subf %y, %v : tensor<4xf32>
    %t = math.tanh %e : tensor<4xf32>
    miras.yield %t : tensor<4xf32>
  }
  miras.retention "none" {}
  miras.optimizer "gd" {lr = @eta}
}

// -----

// Longhorn's implicit step: lr / (1 + lr ||k||^2). Chunk 2 adds the anchor
// state, where the gradient is taken.
// RAW-LABEL: miras.module @longhorn
// RAW: func.func private @step(%[[W:.*]]: tensor<4x4xf32> {miras.name = "W"}, %[[WA:.*]]: tensor<4x4xf32> {miras.name = "W_anchor"}, %{{.*}}: tensor<4xf32> {miras.name = "q"}, %[[K:.*]]: tensor<4xf32> {miras.name = "k"}
// RAW-NEXT: %[[Y:.*]] = miras.matvec %[[WA]], %[[K]]
// RAW-NEXT: %[[E:.*]] = arith.subf %[[Y]]
// RAW: %[[KK:.*]] = arith.mulf %[[K]], %[[K]] : tensor<4xf32>
// RAW-NEXT: %[[S:.*]] = miras.sum %[[KK]]
// RAW-NEXT: %[[BS:.*]] = arith.mulf %[[B:.*]], %[[S]] : f32
// RAW-NEXT: %[[ONE:.*]] = arith.constant 1.000000e+00 : f32
// RAW-NEXT: %[[DEN:.*]] = arith.addf %[[BS]], %[[ONE]] : f32
// RAW-NEXT: %[[C:.*]] = arith.divf %[[B]], %[[DEN]] : f32
// RAW-NEXT: %[[CV:.*]] = miras.broadcast %[[C]]
// RAW-NEXT: arith.mulf %[[CV]], %[[E]]
miras.module @longhorn attributes {chunk = 2 : i64, dk = 4 : i64, dv = 4 : i64, read_after_write = true} {
  miras.gate @beta : scalar
  miras.memory "linear" {dk = 4 : i64, dv = 4 : i64}
  miras.bias "l2" loss {
  ^bb0(%y: tensor<4xf32>, %v: tensor<4xf32>):
    %e = arith.subf %y, %v : tensor<4xf32>
    %sq = arith.mulf %e, %e : tensor<4xf32>
    %s = miras.sum %sq : tensor<4xf32>
    %h = arith.constant 0.5 : f32
    %l = arith.mulf %h, %s : f32
    miras.yield %l : f32
  }
  miras.retention "none" {}
  miras.optimizer "implicit" {lr = @beta}
}

// -----

// log(cosh(e)) differentiates to tanh(e), never sinh(e) / cosh(e) (which
// overflows in float32 for |e| > 89).
// RAW-LABEL: miras.module @logcosh
// RAW: func.func private @step
// RAW: %[[E:.*]] = arith.subf
// RAW-NEXT: %[[T:.*]] = math.tanh %[[E]]
// RAW-NOT: math.sinh
// RAW: return
miras.module @logcosh attributes {chunk = 1 : i64, dk = 4 : i64, dv = 4 : i64, read_after_write = true} {
  miras.memory "linear" {dk = 4 : i64, dv = 4 : i64}
  miras.bias "expression" loss {
  ^bb0(%y: tensor<4xf32>, %v: tensor<4xf32>):
    %e = arith.subf %y, %v : tensor<4xf32>
    %c = math.cosh %e : tensor<4xf32>
    %l = math.log %c : tensor<4xf32>
    %s = miras.sum %l : tensor<4xf32>
    miras.yield %s : f32
  }
  miras.retention "none" {}
  miras.optimizer "gd" {lr = 1.0e-01 : f64}
}

// -----

// The norm's derivative e / ||e|| takes the zero subgradient at e = 0.
// RAW-LABEL: miras.module @norm_at_zero
// RAW: func.func private @step
// RAW: %[[N:.*]] = miras.norm %[[E:.*]] : tensor<4xf32>
// RAW-DAG: %[[POS:.*]] = arith.cmpf ogt, %[[N]], %{{.*}} : f32
// RAW-DAG: %[[Q:.*]] = arith.divf %{{.*}}, %[[N]] : f32
// RAW: arith.select %[[POS]], %[[Q]], %{{.*}} : f32
miras.module @norm_at_zero attributes {chunk = 1 : i64, dk = 4 : i64, dv = 4 : i64, read_after_write = true} {
  miras.memory "linear" {dk = 4 : i64, dv = 4 : i64}
  miras.bias "expression" loss {
  ^bb0(%y: tensor<4xf32>, %v: tensor<4xf32>):
    %e = arith.subf %y, %v : tensor<4xf32>
    %n = miras.norm %e : tensor<4xf32>
    miras.yield %n : f32
  }
  miras.retention "none" {}
  miras.optimizer "gd" {lr = 1.0e-01 : f64}
}
