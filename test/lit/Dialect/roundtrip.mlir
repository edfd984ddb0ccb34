// Spec- and step-level ops print and parse back to the same IR.
// RUN: miras-opt %s | miras-opt | FileCheck %s

// CHECK-LABEL: miras.module @gdn
// CHECK-SAME: chunk = 1 : i64, dk = 4 : i64, dv = 4 : i64, read_after_write = true
// CHECK: miras.param @D = 4 : i64
// CHECK: miras.param @gamma = 9.687500e-01 : f64
// CHECK: miras.gate @eta : scalar
// CHECK: miras.gate @alpha : channel along "dk" dim 4
// CHECK: miras.memory "linear" {dk = 4 : i64, dv = 4 : i64}
// CHECK: miras.bias "l2" loss {
// CHECK: ^bb0(%{{.*}}: tensor<4xf32>, %{{.*}}: tensor<4xf32>):
// CHECK: miras.sum
// CHECK: miras.yield %{{.*}} : f32
// CHECK: miras.retention "l2" {decay = @alpha, order = "before_gradient"}
// CHECK: miras.optimizer "gd" {lr = @eta}
miras.module @gdn attributes {chunk = 1 : i64, dk = 4 : i64, dv = 4 : i64, read_after_write = true} {
  miras.param @D = 4 : i64
  miras.param @gamma = 0.96875 : f64
  miras.gate @eta : scalar
  miras.gate @alpha : channel along "dk" dim 4
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
  miras.optimizer "gd" {lr = @eta}
}

// CHECK-LABEL: func.func @step_ops
// CHECK: miras.matvec %{{.*}}, %{{.*}} : tensor<4x8xf32>, tensor<8xf32> -> tensor<4xf32>
// CHECK: miras.outer %{{.*}}, %{{.*}} : tensor<4xf32>, tensor<8xf32> -> tensor<4x8xf32>
// CHECK: miras.broadcast %{{.*}} [] : f32 -> tensor<4xf32>
// CHECK: miras.broadcast %{{.*}} [1] : tensor<8xf32> -> tensor<4x8xf32>
// CHECK: miras.norm %{{.*}} : tensor<4xf32>
// CHECK: miras.sign %{{.*}} : tensor<4xf32>
func.func @step_ops(%W: tensor<4x8xf32>, %k: tensor<8xf32>, %s: f32) -> (tensor<4x8xf32>, tensor<4x8xf32>, f32, tensor<4xf32>) {
  %y = miras.matvec %W, %k : tensor<4x8xf32>, tensor<8xf32> -> tensor<4xf32>
  %g = miras.outer %y, %k : tensor<4xf32>, tensor<8xf32> -> tensor<4x8xf32>
  %b = miras.broadcast %s [] : f32 -> tensor<4xf32>
  %c = miras.broadcast %k [1] : tensor<8xf32> -> tensor<4x8xf32>
  %n = miras.norm %b : tensor<4xf32>
  %sg = miras.sign %y : tensor<4xf32>
  return %g, %c, %n, %sg : tensor<4x8xf32>, tensor<4x8xf32>, f32, tensor<4xf32>
}

// CHECK-LABEL: miras.module @product
// CHECK-SAME: steps = 2 : i64
// CHECK: miras.gate @beta : scalar per_step
// CHECK: miras.optimizer "multistep" {lr = @beta, n = 2.000000e+00 : f64}
miras.module @product attributes {chunk = 1 : i64, dk = 4 : i64, dv = 4 : i64, read_after_write = true, steps = 2 : i64} {
  miras.gate @beta : scalar per_step
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

// CHECK-LABEL: func.func @extract_ops
// CHECK: miras.extract %{{.*}}[1] : tensor<2x8xf32> -> tensor<8xf32>
// CHECK: miras.extract %{{.*}}[0] : tensor<2xf32> -> f32
func.func @extract_ops(%k: tensor<2x8xf32>, %b: tensor<2xf32>) -> (tensor<8xf32>, f32) {
  %k1 = miras.extract %k [1] : tensor<2x8xf32> -> tensor<8xf32>
  %b0 = miras.extract %b [0] : tensor<2xf32> -> f32
  return %k1, %b0 : tensor<8xf32>, f32
}

// CHECK-LABEL: miras.module @user_map
// CHECK: miras.retention "bregman" {decay = 1.000000e+00 : f64, map = "user"}
// CHECK: miras.mirror_map {
// CHECK: math.exp
miras.module @user_map attributes {chunk = 1 : i64, dk = 4 : i64, dv = 4 : i64, read_after_write = true} {
  miras.memory "linear" {dk = 4 : i64, dv = 4 : i64}
  miras.bias "l2" loss {
  ^bb0(%y: tensor<4xf32>, %v: tensor<4xf32>):
    %e = arith.subf %y, %v : tensor<4xf32>
    %sq = arith.mulf %e, %e : tensor<4xf32>
    %s = miras.sum %sq : tensor<4xf32>
    miras.yield %s : f32
  }
  miras.retention "bregman" {decay = 1.0 : f64, map = "user"}
  miras.mirror_map {
  ^bb0(%a: f32):
    %e = math.exp %a : f32
    miras.yield %e : f32
  }
  miras.optimizer "gd" {lr = 0.5 : f64}
}
